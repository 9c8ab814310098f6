import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { badInput, type AppError } from '../errors.js';
import type { Clock } from '../infra/clock.js';
import type { Logger } from '../infra/logger.js';
import { runRead, type PipelineRead } from '../infra/redis.js';
import { releasable } from '../infra/releasable.js';
import { repeatUnlessBusy } from '../infra/repeat.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import type { RoomsService } from '../rooms/rooms.service.js';
import type { AppPubSub } from '../topics.js';
import { userKeys } from '../users/users.keys.js';
import type { Viewer } from '../users/users.models.js';
import { presenceKeys as keys } from './presence.keys.js';
import type { PresenceEventModel, PresenceModel } from './presence.models.js';

/** Dependencies of {@link createPresenceService}. */
export interface PresenceServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  rooms: RoomsService;
  clock: Clock;
  logger: Logger;
  instanceId: string;
  /** A dead instance's connections count as gone after this long without a heartbeat. */
  timeoutSeconds: number;
  /** How long after a user's last connection closes before they are announced OFFLINE. */
  graceMs: number;
  /** How often grace periods are settled (and the work of the tick is done). */
  tickMs: number;
}

/** Presence: connections, per-user status, room presence. */
export type PresenceService = ReturnType<typeof createPresenceService>;

const roomUserKey = (roomId: string, userId: string) => `${roomId}\n${userId}`;

/** Turns the stored fields into what the API shows. */
function toPresence(state: string | null, away: string | null, lastSeenAt: string | null, connections: number): PresenceModel {
  if (state === 'ONLINE') return { status: away === '1' ? 'AWAY' : 'ONLINE', lastSeenAt: null, connections };
  return { status: 'OFFLINE', lastSeenAt: lastSeenAt ? Number(lastSeenAt) : null, connections };
}

/** Reads users' presence. */
const readPresence =
  (userIds: readonly string[]): PipelineRead<PresenceModel[]> =>
  (pipeline) => {
    for (const id of userIds) {
      pipeline.hmget(keys.presence(id), 'state', 'away', 'lastSeenAt').scard(keys.connections(id));
    }
    return (replies) =>
      userIds.map((_, i) => {
        const [state, away, lastSeenAt] = replies[2 * i] as (string | null)[];
        return toPresence(state ?? null, away ?? null, lastSeenAt ?? null, Number(replies[2 * i + 1] ?? 0));
      });
  };

/** Reads how many members are present in rooms (one O(1) command each). */
const readOnlineCounts =
  (roomIds: readonly string[]): PipelineRead<number[]> =>
  (pipeline) => {
    for (const id of roomIds) pipeline.hlen(keys.roomPresent(id));
    return (counts) => counts.map(Number);
  };

/**
 * Creates the presence service. Transitions are decided in Lua, so with any number of instances
 * each real transition is announced once: a second tab announces nothing, closing the last one
 * starts a grace period, and only its end (with no connection back) announces OFFLINE. Each
 * instance heartbeats with one command per interval whatever its connection count; an instance
 * that stops is reaped by whichever live instance claims it first.
 */
export function createPresenceService(deps: PresenceServiceDeps) {
  const { redis, scripts, pubsub, rooms, clock, logger, instanceId, timeoutSeconds, graceMs, tickMs } = deps;
  const connectScript = scripts.get('registerConnection');
  const connectUserScript = scripts.get('connectUser');
  const disconnectScript = scripts.get('unregisterConnection');
  const settleScript = scripts.get('settleOffline');
  const reapScript = scripts.get('reapInstance');
  const roomScript = scripts.get('roomPresence');
  const awayScript = scripts.get('setAway');
  const timeoutMs = timeoutSeconds * 1000;
  // Heartbeat and sweep every quarter of the timeout, and reap an instance silent for three
  // quarters: a dead one is gone within the timeout, a live one must miss three beats in a row.
  const heartbeatMs = Math.max(100, Math.floor(timeoutMs / 4));
  const reapAfterMs = timeoutMs - heartbeatMs;
  /** This instance's live connections, to remove them at shutdown (or register again). */
  const local = new Map<string, string>();
  /** Subscriptions this instance holds per `<roomId>\n<userId>`, to register again if reaped. */
  const holds = new Map<string, number>();
  let nextId = 0;
  const connectionPrefix = `${instanceId}:${randomBytes(3).toString('hex')}:`;

  async function announce(userId: string): Promise<void> {
    const [presence] = await getMany([userId]);
    if (presence) pubsub.publish('user', userId, { userId, presence });
  }

  const getMany = (userIds: readonly string[]) => runRead(redis, readPresence(userIds));

  /** Reads the members present in rooms, ordered by id; `FORBIDDEN` for a room the viewer is not in. */
  const readOnlineMemberIds =
    (viewerId: string, roomIds: readonly string[]): PipelineRead<(string[] | AppError)[]> =>
    rooms.readAsMember(
      viewerId,
      roomIds,
      (pipeline) => {
        for (const id of roomIds) pipeline.hkeys(keys.roomPresent(id));
        return (replies) => replies.map((ids) => (ids as string[]).sort());
      },
      'Room presence is for members only',
    );

  async function disconnectOne(connectionId: string, userId: string, grace: number): Promise<void> {
    const [transition] = (await disconnectScript(
      [keys.connections(userId), keys.presence(userId), keys.instanceConnections(instanceId), keys.grace()],
      [connectionId, userId, clock.now(), grace],
    )) as [number, number];
    if (transition === 1) await announce(userId);
  }

  async function changeRoomPresence(
    roomId: string,
    userId: string,
    delta: number,
    iid = instanceId,
    track = iid === instanceId,
  ): Promise<void> {
    if (track) {
      const field = roomUserKey(roomId, userId);
      const n = (holds.get(field) ?? 0) + delta;
      if (n > 0) holds.set(field, n);
      else holds.delete(field);
    }
    const transition = (await roomScript(
      [keys.roomPresent(roomId), keys.instanceRooms(iid)],
      [userId, roomUserKey(roomId, userId), delta],
    )) as number;
    if (transition !== 0) {
      pubsub.publish('room', roomId, { type: 'PresenceChanged', roomId, userId, present: transition === 1 });
    }
  }

  /** One command: this instance is alive. */
  async function heartbeat(): Promise<void> {
    const added = await redis.zadd(keys.instances(), clock.now(), instanceId);
    // Added anew while holding connections: another instance took this one for dead (a long pause,
    // a partition) and reaped it. Register everything again so presence matches the sockets.
    if (added === 1 && (local.size > 0 || holds.size > 0)) await reRegister();
  }

  async function reRegister(): Promise<void> {
    logger.warn({ connections: local.size }, 'this instance was reaped while alive: registering its connections again');
    for (const [connectionId, userId] of local) {
      const [transition] = (await connectScript(
        [keys.connections(userId), keys.presence(userId), keys.instanceConnections(instanceId), keys.grace()],
        [connectionId, userId],
      )) as [number];
      if (transition === 1) await announce(userId);
    }
    for (const [field, count] of holds) {
      const [roomId, userId] = field.split('\n') as [string, string];
      await changeRoomPresence(roomId, userId, count, instanceId, false);
    }
  }

  /** Ends due grace periods: OFFLINE for users still without a connection. */
  async function settleGrace(): Promise<number> {
    const now = clock.now();
    const due = await redis.zrangebyscore(keys.grace(), '-inf', now, 'LIMIT', 0, 500);
    let settled = 0;
    for (const userId of due) {
      const [transition] = (await settleScript(
        [keys.connections(userId), keys.presence(userId), keys.grace()],
        [userId, now],
      )) as [number, string];
      if (transition === 1) {
        settled++;
        await announce(userId);
      }
    }
    return settled;
  }

  /** Cleans up after instances whose heartbeat stopped; each is claimed by exactly one caller. */
  async function reapDead(): Promise<number> {
    const deadline = clock.now() - reapAfterMs;
    const dead = await redis.zrangebyscore(keys.instances(), '-inf', deadline);
    let reaped = 0;
    for (const iid of dead) {
      if (iid === instanceId) continue;
      const reply = (await reapScript(
        [keys.instances(), keys.instanceConnections(iid), keys.instanceRooms(iid)],
        [iid, deadline],
      )) as [number, number?, ...string[]];
      if (reply[0] !== 1) continue;
      reaped++;
      const count = Number(reply[1] ?? 0);
      const flat = reply.slice(2) as string[];
      logger.warn({ instance: iid, connections: count }, 'reaping a dead instance');
      // Its users are gone since at least the timeout: no further grace.
      for (let i = 0; i < count * 2; i += 2) {
        await disconnectOne(flat[i] as string, flat[i + 1] as string, 0).catch(() => undefined);
      }
      for (let i = count * 2; i < flat.length; i += 2) {
        const [roomId, userId] = (flat[i] as string).split('\n') as [string, string];
        await changeRoomPresence(roomId, userId, -Number(flat[i + 1]), iid).catch(() => undefined);
      }
    }
    return reaped;
  }

  let timers: NodeJS.Timeout[] = [];
  const onTickError = (err: Error) => logger.debug({ err: err.message }, 'presence tick failed');

  return {
    getMany,
    heartbeat,
    settleGrace,
    reapDead,
    /** This instance's id in the presence registry. */
    instanceId,

    /** Starts the heartbeat and the sweeper (any live instance may reap; one wins each claim). */
    async start(): Promise<void> {
      await heartbeat().catch(() => undefined);
      timers = [
        // Each on its own guard: a slow reap or sweep never delays this instance's heartbeat.
        repeatUnlessBusy(heartbeatMs, heartbeat, onTickError),
        repeatUnlessBusy(heartbeatMs, reapDead, onTickError),
        repeatUnlessBusy(tickMs, settleGrace, onTickError),
      ];
    },

    /** Graceful shutdown: this instance's connections are removed at once (users get their grace). */
    async stop(): Promise<void> {
      for (const t of timers) clearInterval(t);
      timers = [];
      const conns = [...local];
      local.clear();
      await Promise.allSettled(conns.map(([id, userId]) => disconnectOne(id, userId, graceMs)));
      const rest = await redis.hgetall(keys.instanceRooms(instanceId)).catch(() => ({}) as Record<string, string>);
      await Promise.allSettled(
        Object.entries(rest).map(([field, n]) => {
          const [roomId, userId] = field.split('\n') as [string, string];
          return changeRoomPresence(roomId, userId, -Number(n));
        }),
      );
      await redis.zrem(keys.instances(), instanceId).catch(() => undefined);
    },

    /**
     * Registers a WebSocket or SSE connection; resolves with its id and the user's connection count
     * (all instances). Also writes the user from their token, as `users.touch` does, in the same
     * command: a connection's set-up sends one script, not two.
     */
    async connect(viewer: Viewer): Promise<{ id: string; connections: number }> {
      const connectionId = `${connectionPrefix}${++nextId}`;
      local.set(connectionId, viewer.id);
      const [transition, , connections] = (await connectUserScript(
        [
          keys.connections(viewer.id),
          keys.presence(viewer.id),
          keys.instanceConnections(instanceId),
          keys.grace(),
          userKeys.user(viewer.id),
        ],
        [connectionId, viewer.id, viewer.name, clock.now()],
      )) as [number, number, number];
      if (transition === 1) await announce(viewer.id);
      return { id: connectionId, connections };
    },

    /** Removes a connection; the user's last one starts the grace period. */
    async disconnect(connectionId: string): Promise<void> {
      const userId = local.get(connectionId);
      if (userId === undefined) return;
      local.delete(connectionId);
      await disconnectOne(connectionId, userId, graceMs);
    },

    /** A subscription of `userId` now holds the room. */
    enterRoom: (roomId: string, userId: string) => changeRoomPresence(roomId, userId, 1),
    /** A subscription of `userId` released the room. */
    leaveRoom: (roomId: string, userId: string) => changeRoomPresence(roomId, userId, -1),

    /** `setPresence`: AWAY or ONLINE while connected; OFFLINE is derived, never set. */
    async setStatus(viewer: Viewer, status: 'ONLINE' | 'AWAY' | 'OFFLINE'): Promise<PresenceModel> {
      if (status === 'OFFLINE') {
        throw badInput('status', 'OFFLINE is not set: it is what a user is once no connection is left');
      }
      const [changed] = (await awayScript([keys.connections(viewer.id), keys.presence(viewer.id)], [
        status === 'AWAY' ? '1' : '',
      ])) as [number, number];
      const [presence] = await getMany([viewer.id]);
      if (changed === 1 && presence) pubsub.publish('user', viewer.id, { userId: viewer.id, presence });
      return presence as PresenceModel;
    },

    /** Members present in a room (members only), in one round trip. */
    async onlineMemberIds(viewer: Viewer, roomId: string): Promise<string[]> {
      const [ids] = await runRead(redis, readOnlineMemberIds(viewer.id, [roomId]));
      if (!Array.isArray(ids)) throw ids;
      return ids;
    },

    /** How many members are present, in one O(1) command per room (batched). */
    onlineCounts: (roomIds: readonly string[]) => runRead(redis, readOnlineCounts(roomIds)),

    /** Reads for a shared pipeline (the operation's loaders). */
    readPresence,
    readOnlineCounts,
    readOnlineMemberIds,
  };
}

/**
 * A stream of presence transitions of up to 100 users. Presence is state, so it coalesces: while
 * the client is not reading, only each user's latest presence is kept (memory bounded by the ids).
 */
export function openPresenceStream(
  pubsub: AppPubSub,
  userIds: readonly string[],
): AsyncGenerator<PresenceEventModel> {
  const pending = new Map<string, PresenceEventModel>();
  let wake: (() => void) | null = null;
  let ended = false;
  const listeners = [...new Set(userIds)].map((id) =>
    pubsub.listen('user', id, (ev) => {
      pending.delete(ev.userId);
      pending.set(ev.userId, ev);
      wake?.();
    }),
  );
  const release = () => {
    ended = true;
    for (const l of listeners) l.remove();
    wake?.();
  };
  async function* run(): AsyncGenerator<PresenceEventModel> {
    try {
      while (!ended) {
        const first = pending.entries().next();
        if (!first.done) {
          const [userId, ev] = first.value;
          pending.delete(userId);
          yield ev;
          continue;
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      release();
    }
  }
  return releasable(run(), release);
}
