import { randomBytes } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';
import { badInput, forbidden, notFound, SCRIPT_STATUS, scriptError, type AppError } from '../errors.js';
import type { Clock } from '../infra/clock.js';
import { settleAll, type HookList, type Settle } from '../infra/hooks.js';
import {
  decodeCursor,
  encodeCursor,
  pageSize,
  toConnection,
  type Connection,
} from '../infra/pagination.js';
import { execPipeline, runRead, type PipelineRead } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId, checkedText } from '../infra/text.js';
import type { CacheService } from '../cache/cache.service.js';
import type { AppPubSub } from '../topics.js';
import { userKeys } from '../users/users.keys.js';
import type { Viewer } from '../users/users.models.js';
import type { UsersService } from '../users/users.service.js';
import { roomKeys } from './rooms.keys.js';
import type { RoomModel, Visibility } from './rooms.models.js';
import { pipelineOf } from '../infra/direct-pipeline.js';

/** A membership change, handed to features (typing, presence, calls…) inside the core's pipeline. */
export interface MembershipChange {
  roomId: string;
  userId: string;
  joined: boolean;
}

/** Dependencies of {@link createRoomsService}. */
export interface RoomsServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  users: UsersService;
  clock: Clock;
  membershipHooks: HookList<MembershipChange>;
  /** Caches pages of the public directory (invalidated when a public room is created). */
  cache: CacheService;
}

/** Rooms and their members. */
export type RoomsService = ReturnType<typeof createRoomsService>;

/** Input of {@link RoomsService.create}. */
export interface CreateRoomInput {
  name: string;
  visibility?: Visibility | null;
  memberIds?: readonly string[] | null;
}

const MAX_MEMBERS_PER_CALL = 100;
/** The cache namespace of the public directory: bumped when a public room is created. */
const PUBLIC_DIRECTORY_NAMESPACE = 'publicRooms';
/** How long a page of the directory is cached (it is invalidated on change anyway). */
const PUBLIC_DIRECTORY_TTL_SECONDS = 60;
const IS_OWNER = 8;

/** A fresh room id: 16 url-safe characters. */
const newRoomId = () => randomBytes(12).toString('base64url');
/** A fresh history epoch: 8 url-safe characters. */
const newEpoch = () => randomBytes(6).toString('base64url');

/** Parses a room hash (HGETALL); null when the room does not exist. */
export function parseRoom(hash: Record<string, string> | null | undefined): RoomModel | null {
  if (!hash || hash.id === undefined) return null;
  return {
    id: hash.id,
    name: hash.name ?? '',
    visibility: hash.visibility === 'PUBLIC' ? 'PUBLIC' : 'PRIVATE',
    ownerId: hash.ownerId ?? '',
    createdAt: Number(hash.createdAt ?? 0),
    lastActivityAt: Number(hash.lastActivityAt ?? hash.createdAt ?? 0),
    lastSeq: Number(hash.seq ?? 0),
    firstSeq: Number(hash.firstSeq ?? 1),
    epoch: hash.epoch ?? '',
  };
}

const directoryEntry = (name: string, roomId: string) => `${normalizeName(name)}\u0000${roomId}`;
const normalizeName = (name: string) => name.normalize('NFKC').toLowerCase();

/** Reads rooms (HGETALL each); null where absent. */
const readRooms =
  (ids: readonly string[]): PipelineRead<(RoomModel | null)[]> =>
  (pipeline) => {
    for (const id of ids) pipeline.hgetall(roomKeys.room(id));
    return (hashes) => hashes.map((h) => parseRoom(h as Record<string, string>));
  };

/** Reads the membership of (room, user) pairs. */
const readAreMembers =
  (pairs: readonly { roomId: string; userId: string }[]): PipelineRead<boolean[]> =>
  (pipeline) => {
    for (const p of pairs) pipeline.zscore(roomKeys.members(p.roomId), p.userId);
    return (scores) => scores.map((s) => s !== null);
  };

/**
 * Reads something of each room for a viewer, with their membership in the same pipeline: the
 * room's value, or `FORBIDDEN` (with `message`) where they are not a member.
 */
const readAsMember =
  <T>(viewerId: string, roomIds: readonly string[], read: PipelineRead<T[]>, message: string): PipelineRead<(T | AppError)[]> =>
  (pipeline) => {
    const membership = readAreMembers(roomIds.map((roomId) => ({ roomId, userId: viewerId })))(pipeline);
    const values = read(pipeline);
    return (replies) => {
      const isMember = membership(replies.slice(0, roomIds.length));
      const value = values(replies.slice(roomIds.length));
      return roomIds.map((_, i) => (isMember[i] ? (value[i] as T) : forbidden(message)));
    };
  };

/** Reads rooms a viewer must be a member of: each the room, or `NOT_FOUND` / `FORBIDDEN`. */
const readMemberRooms =
  (viewerId: string, roomIds: readonly string[]): PipelineRead<(RoomModel | AppError)[]> =>
  (pipeline) => {
    for (const id of roomIds) pipeline.hgetall(roomKeys.room(id)).zscore(roomKeys.members(id), viewerId);
    return (replies) =>
      roomIds.map((_, i) => {
        const room = parseRoom(replies[2 * i] as Record<string, string>);
        if (!room) return notFound('Room');
        return replies[2 * i + 1] === null ? forbidden('You are not a member of this room') : room;
      });
  };

/** Reads member counts of rooms. */
const readMemberCounts =
  (roomIds: readonly string[]): PipelineRead<number[]> =>
  (pipeline) => {
    for (const id of roomIds) pipeline.zcard(roomKeys.members(id));
    return (counts) => counts.map(Number);
  };

/** Creates the rooms service: every method that takes `viewer` authorizes first. */
export function createRoomsService(deps: RoomsServiceDeps) {
  const { redis, scripts, pubsub, users, clock, membershipHooks, cache } = deps;
  const joinScript = scripts.get('joinRoom');
  const addScript = scripts.get('addMembers');
  const removeScript = scripts.get('removeMember');
  const leaveScript = scripts.get('leaveRoom');

  /**
   * Adds the derived indexes and the features' hooks of membership changes to a pipeline; call the
   * result with the pipeline's replies.
   */
  function applyMembership(pipeline: ChainableCommander, changes: MembershipChange[]): Settle {
    const settles: Settle[] = [];
    for (const change of changes) {
      if (change.joined) pipeline.sadd(userKeys.rooms(change.userId), change.roomId);
      else pipeline.srem(userKeys.rooms(change.userId), change.roomId);
      settles.push(membershipHooks.apply(pipeline, change));
    }
    return settleAll(settles);
  }

  const getMany = (ids: readonly string[]) => runRead(redis, readRooms(ids));

  /** Membership of (room, user) pairs, in one round trip. */
  const areMembers = (pairs: readonly { roomId: string; userId: string }[]) => runRead(redis, readAreMembers(pairs));

  async function requireRoom(roomId: string): Promise<RoomModel> {
    const [room] = await getMany([roomId]);
    if (!room) throw notFound('Room');
    return room;
  }

  /** Reads a room and whether the viewer is a member, in one round trip. */
  async function roomWithMembership(viewer: Viewer, roomId: string) {
    const [hash, score] = await execPipeline(
      pipelineOf(redis)
        .hgetall(roomKeys.room(roomId))
        .zscore(roomKeys.members(roomId), viewer.id),
    );
    return { room: parseRoom(hash as Record<string, string>), isMember: score !== null };
  }

  /** Reads pages of member ids; `FORBIDDEN` for a private room the viewer is not in. */
  const readMemberPages =
    (viewerId: string, plans: readonly { room: RoomModel; first: number; min: string }[]): PipelineRead<(Connection<string> | AppError)[]> =>
    (pipeline) => {
      for (const { room, first, min } of plans) {
        pipeline.zscore(roomKeys.members(room.id), viewerId).zrangebylex(roomKeys.members(room.id), min, '+', 'LIMIT', 0, first + 1);
      }
      return (replies) =>
        plans.map(({ room, first, min }, i) => {
          if (room.visibility === 'PRIVATE' && replies[2 * i] === null) return forbidden('This room is private');
          const ids = first === 0 ? [] : (replies[2 * i + 1] as string[]);
          return toConnection(ids.slice(0, first), (id) => encodeCursor([id]), min !== '-', ids.length > first);
        });
    };

  async function memberPages(
    viewerId: string,
    queries: readonly { room: RoomModel; args: { first?: number | null; after?: string | null } }[],
    run: <T>(read: PipelineRead<T>) => Promise<T>,
  ): Promise<(Connection<string> | Error)[]> {
    const plans = queries.map(({ room, args }) => {
      try {
        const first = pageSize('first', args.first, 20);
        if (!args.after) return { room, first, min: '-' };
        const [id] = decodeCursor('after', args.after);
        if (typeof id !== 'string') throw badInput('after', 'after is not a valid cursor');
        return { room, first, min: `(${id}` };
      } catch (err) {
        return err as Error;
      }
    });
    const valid = plans.filter((p): p is Exclude<(typeof plans)[number], Error> => !(p instanceof Error));
    const pages = valid.length > 0 ? await run(readMemberPages(viewerId, valid)) : [];
    let k = 0;
    return plans.map((p) => (p instanceof Error ? p : (pages[k++] as Connection<string> | Error)));
  }

  return {
    getMany,
    /** Reads for a shared pipeline (the operation's loaders): rooms, memberships, member counts. */
    readRooms,
    readAreMembers,
    readMemberCounts,
    readAsMember,

    /** A room the viewer may see: null if absent, `FORBIDDEN` for a private room they are not in. */
    async get(viewer: Viewer, roomId: string): Promise<RoomModel | null> {
      const { room, isMember } = await roomWithMembership(viewer, roomId);
      if (!room) return null;
      if (room.visibility === 'PRIVATE' && !isMember) throw forbidden('This room is private');
      return room;
    },

    /** The room, if the viewer is a member: `NOT_FOUND` or `FORBIDDEN` otherwise. */
    async requireMember(viewer: Viewer, roomId: string): Promise<RoomModel> {
      const [room] = await runRead(redis, readMemberRooms(viewer.id, [roomId]));
      if (!room || room instanceof Error) throw room ?? notFound('Room');
      return room;
    },

    /** {@link requireMember} of many rooms, for a shared pipeline. */
    readMemberRooms,

    areMembers,

    /**
     * Each room's latest seq, history epoch and members version (bumped by every removal and
     * departure), null when the room is gone, in one round trip.
     */
    async positions(roomIds: readonly string[]): Promise<({ lastSeq: number; epoch: string; membersVersion: number } | null)[]> {
      if (roomIds.length === 0) return [];
      const pipeline = pipelineOf(redis);
      for (const id of roomIds) pipeline.hmget(roomKeys.room(id), 'id', 'seq', 'epoch', 'membersVersion');
      return (await execPipeline(pipeline)).map((reply) => {
        const [id, seq, epoch, membersVersion] = reply as (string | null)[];
        return id == null ? null : { lastSeq: Number(seq ?? 0), epoch: epoch ?? '', membersVersion: Number(membersVersion ?? 0) };
      });
    },

    /** Member counts of rooms, in one round trip. */
    memberCounts: (roomIds: readonly string[]) => runRead(redis, readMemberCounts(roomIds)),

    /** Creates a room owned by the viewer, with the given members. */
    async create(viewer: Viewer, input: CreateRoomInput): Promise<RoomModel> {
      const name = checkedText('name', input.name, 1, 100);
      const visibility: Visibility = input.visibility ?? 'PRIVATE';
      const memberIds = [...new Set((input.memberIds ?? []).map((id) => checkedId('memberIds', id)))];
      if (memberIds.length > MAX_MEMBERS_PER_CALL) {
        throw badInput('memberIds', `at most ${MAX_MEMBERS_PER_CALL} members at creation`);
      }
      const all = [viewer.id, ...memberIds.filter((id) => id !== viewer.id)];
      const id = newRoomId();
      const now = clock.now();
      const room: RoomModel = {
        id,
        name,
        visibility,
        ownerId: viewer.id,
        createdAt: now,
        lastActivityAt: now,
        lastSeq: 0,
        firstSeq: 1,
        epoch: newEpoch(),
      };
      await users.ensureExist(all.slice(1));
      const tx = redis.multi();
      tx.hset(roomKeys.room(id), {
        id,
        name,
        visibility,
        ownerId: viewer.id,
        createdAt: now,
        lastActivityAt: now,
        seq: 0,
        firstSeq: 1,
        epoch: room.epoch,
      });
      tx.zadd(roomKeys.members(id), ...all.flatMap((u) => [0, u]));
      if (visibility === 'PUBLIC') {
        tx.zadd(roomKeys.publicDirectory(), 0, directoryEntry(name, id));
        cache.bumpInPipeline(tx, PUBLIC_DIRECTORY_NAMESPACE);
      }
      const settle = applyMembership(
        tx,
        all.map((userId) => ({ roomId: id, userId, joined: true })),
      );
      settle(await execPipeline(tx));
      return room;
    },

    /** Joins a public room; idempotent. */
    async join(viewer: Viewer, roomId: string): Promise<RoomModel> {
      const [status, added] = (await joinScript(
        [roomKeys.room(roomId), roomKeys.members(roomId)],
        [viewer.id],
      )) as [number, number];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      if (added === 1) {
        const pipeline = pipelineOf(redis);
        const settle = applyMembership(pipeline, [{ roomId, userId: viewer.id, joined: true }]);
        settle(await execPipeline(pipeline));
        pubsub.publish('room', roomId, { type: 'MemberJoined', roomId, userId: viewer.id });
      }
      return requireRoom(roomId);
    },

    /** Adds users to a room the viewer is a member of. */
    async addMembers(viewer: Viewer, roomId: string, userIds: readonly string[]): Promise<RoomModel> {
      const ids = [...new Set(userIds.map((id) => checkedId('userIds', id)))];
      if (ids.length === 0 || ids.length > MAX_MEMBERS_PER_CALL) {
        throw badInput('userIds', `userIds must hold 1..${MAX_MEMBERS_PER_CALL} ids`);
      }
      const [status, ...added] = (await addScript(
        [roomKeys.room(roomId), roomKeys.members(roomId)],
        [viewer.id, ...ids],
      )) as [number, ...string[]];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      if (added.length > 0) {
        await users.ensureExist(added);
        const pipeline = pipelineOf(redis);
        const settle = applyMembership(
          pipeline,
          added.map((userId) => ({ roomId, userId, joined: true })),
        );
        settle(await execPipeline(pipeline));
        for (const userId of added) {
          pubsub.publish('room', roomId, { type: 'MemberJoined', roomId, userId, byUserId: viewer.id });
        }
      }
      return requireRoom(roomId);
    },

    /** The owner removes a member; their subscriptions to the room end. */
    async removeMember(viewer: Viewer, roomId: string, userId: string): Promise<RoomModel> {
      checkedId('userId', userId);
      const [status, removed] = (await removeScript(
        [roomKeys.room(roomId), roomKeys.members(roomId)],
        [viewer.id, userId],
      )) as [number, number];
      if (status === IS_OWNER) {
        throw badInput('userId', 'The owner cannot remove themselves: leave the room instead');
      }
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      if (removed === 1) {
        const pipeline = pipelineOf(redis);
        const settle = applyMembership(pipeline, [{ roomId, userId, joined: false }]);
        settle(await execPipeline(pipeline));
        pubsub.publish('room', roomId, { type: 'MemberLeft', roomId, userId, byUserId: viewer.id });
      }
      return requireRoom(roomId);
    },

    /** The viewer leaves a room; idempotent. */
    async leave(viewer: Viewer, roomId: string): Promise<boolean> {
      const [status, removed] = (await leaveScript(
        [roomKeys.room(roomId), roomKeys.members(roomId)],
        [viewer.id],
      )) as [number, number, string];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      if (removed === 1) {
        const pipeline = pipelineOf(redis);
        const settle = applyMembership(pipeline, [{ roomId, userId: viewer.id, joined: false }]);
        settle(await execPipeline(pipeline));
        pubsub.publish('room', roomId, { type: 'MemberLeft', roomId, userId: viewer.id });
      }
      return true;
    },

    /** The viewer's rooms, latest activity first (ties by id). */
    async listForViewer(
      viewer: Viewer,
      args: { first?: number | null; after?: string | null },
    ): Promise<Connection<RoomModel>> {
      const first = pageSize('first', args.first, 20);
      let after: [number, string] | null = null;
      if (args.after) {
        const [activity, id] = decodeCursor('after', args.after);
        if (typeof activity !== 'number' || typeof id !== 'string') {
          throw badInput('after', 'after is not a valid cursor');
        }
        after = [activity, id];
      }
      const roomIds = await redis.smembers(userKeys.rooms(viewer.id));
      if (roomIds.length === 0) return toConnection([], () => '', false, false);
      const pipeline = pipelineOf(redis);
      for (const id of roomIds) {
        pipeline.hgetall(roomKeys.room(id)).zscore(roomKeys.members(id), viewer.id);
      }
      const replies = await execPipeline(pipeline);
      const rooms: RoomModel[] = [];
      const stale: string[] = [];
      roomIds.forEach((id, i) => {
        const room = parseRoom(replies[2 * i] as Record<string, string>);
        // The index is derived: the member set decides.
        if (room && replies[2 * i + 1] !== null) rooms.push(room);
        else stale.push(id);
      });
      if (stale.length > 0) {
        redis.srem(userKeys.rooms(viewer.id), ...stale).catch(() => undefined);
      }
      rooms.sort((a, b) => b.lastActivityAt - a.lastActivityAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      let start = 0;
      if (after) {
        const [activity, id] = after;
        start = rooms.findIndex((r) => r.lastActivityAt < activity || (r.lastActivityAt === activity && r.id > id));
        if (start === -1) start = rooms.length;
      }
      const page = rooms.slice(start, start + first);
      return toConnection(
        page,
        (r) => encodeCursor([r.lastActivityAt, r.id]),
        start > 0,
        start + first < rooms.length,
      );
    },

    /** Public rooms by name, optionally those whose name starts with `query`. */
    async listPublic(
      _viewer: Viewer,
      args: { first?: number | null; after?: string | null; query?: string | null },
    ): Promise<Connection<RoomModel>> {
      const first = pageSize('first', args.first, 20);
      const prefix = normalizeName((args.query ?? '').trim());
      if (prefix.length > 100) throw badInput('query', 'query must be at most 100 characters');
      let min: string | Buffer = prefix ? `[${prefix}` : '-';
      if (args.after) {
        const [entry] = decodeCursor('after', args.after);
        if (typeof entry !== 'string') throw badInput('after', 'after is not a valid cursor');
        min = `(${entry}`;
      }
      const max: string | Buffer = prefix
        ? Buffer.concat([Buffer.from(`[${prefix}`), Buffer.from([0xff])])
        : '+';
      // The page of directory entries is cached; the rooms themselves are read fresh.
      const entries =
        first === 0
          ? []
          : ((await cache.getOrLoad(
              JSON.stringify(['publicRooms', min, prefix, first]),
              PUBLIC_DIRECTORY_TTL_SECONDS,
              () => redis.zrangebylex(roomKeys.publicDirectory(), min, max, 'LIMIT', 0, first + 1),
              { namespaces: [PUBLIC_DIRECTORY_NAMESPACE] },
            )) ?? []);
      const page = entries.slice(0, first);
      const rooms = await getMany(page.map((e) => e.slice(e.lastIndexOf('\u0000') + 1)));
      const found = page.flatMap((entry, i) => {
        const room = rooms[i];
        return room ? [{ entry, room }] : [];
      });
      const connection = toConnection(
        found,
        (f) => encodeCursor([f.entry]),
        Boolean(args.after),
        entries.length > first,
      );
      return {
        edges: connection.edges.map((e) => ({ cursor: e.cursor, node: e.node.room })),
        pageInfo: connection.pageInfo,
      };
    },

    /** A page of member ids, ordered by id: members of the room, or anyone for a public room. */
    async memberIds(
      viewer: Viewer,
      room: RoomModel,
      args: { first?: number | null; after?: string | null },
    ): Promise<Connection<string>> {
      const [page] = await memberPages(viewer.id, [{ room, args }], (read) => runRead(redis, read));
      if (!page || page instanceof Error) throw page ?? new Error('members not read');
      return page;
    },

    /** {@link memberIds} of many rooms for one viewer, in one round trip through `run` (a pipeline batch). */
    memberPages,
  };
}
