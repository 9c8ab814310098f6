import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { badInput, forbidden, notFound, SCRIPT_STATUS, scriptError } from '../errors.js';
import type { EventsService, StreamItem } from '../events/events.service.js';
import type { Clock } from '../infra/clock.js';
import { createCoalescingWindows } from '../infra/coalescing.js';
import type { Logger } from '../infra/logger.js';
import type { EventSink } from '../infra/shared-execution.js';
import { createTicker } from '../infra/ticker.js';
import { decodeCursor, encodeCursor, pageSize, toConnection, type Connection } from '../infra/pagination.js';
import { execPipeline } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId, checkedText } from '../infra/text.js';
import { roomKeys } from '../rooms/rooms.keys.js';
import type { RoomsService } from '../rooms/rooms.service.js';
import type { AppPubSub } from '../topics.js';
import type { Viewer } from '../users/users.models.js';
import { decodeOptionId, decodePollId, encodePollId } from './poll-id.js';
import { closePollKeys, createPollKeys, pollKeys as keys, voteKeys, type PollRef } from './polls.keys.js';
import type { PollModel } from './polls.models.js';
import { pipelineOf } from '../infra/direct-pipeline.js';

/** Dependencies of {@link createPollsService}. */
export interface PollsServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  rooms: RoomsService;
  events: EventsService;
  clock: Clock;
  logger: Logger;
  /** At most one PollUpdated per poll per this window from votes, the last one always sent. */
  coalesceMs: number;
  /** How often due polls are looked for (a poll closes within this long after its closesAt). */
  tickMs: number;
}

/** Polls: creation, votes, closing (by hand and on schedule), live results. */
export type PollsService = ReturnType<typeof createPollsService>;

/** Input of {@link PollsService.create}, as in the contract. */
export interface CreatePollInput {
  roomId: string;
  question: string;
  options: readonly string[];
  multipleChoice?: boolean | null;
  anonymous?: boolean | null;
  /** ISO-8601 (the DateTime scalar's input). */
  closesAt?: string | null;
}

/** Contract limits. */
const QUESTION_MAX_CHARS = 300;
const OPTION_MAX_CHARS = 100;
const MIN_OPTIONS = 2;
const MAX_OPTIONS = 10;
/** Due polls closed per sweep; the rest wait for the next tick. */
const SWEEP_BATCH = 100;

/**
 * A fresh poll id within its room: the creation time in base 36 (fixed width, so ids sort by time
 * as strings) and 8 random hex digits.
 */
const newLocalId = (now: number) => `${now.toString(36).padStart(9, '0')}${randomBytes(4).toString('hex')}`;

/** Options compare as users read them: trimmed, Unicode-normalised, ignoring case. */
const sameOption = (text: string) => text.normalize('NFKC').toLowerCase();

/** Parses a poll hash (HGETALL, as an object or as a flat field/value list); null when absent. */
export function parsePoll(hash: Record<string, string> | string[] | null | undefined, now: number): PollModel | null {
  const h = Array.isArray(hash) ? pairs(hash) : hash;
  if (!h || h.id === undefined) return null;
  const options = JSON.parse(h.options ?? '[]') as string[];
  const closesAt = h.closesAt ? Number(h.closesAt) : null;
  return {
    id: h.id,
    roomId: h.roomId ?? '',
    creatorId: h.creatorId ?? '',
    question: h.question ?? '',
    options,
    votes: options.map((_, i) => Number(h[`v:${i}`] ?? 0)),
    totalVoters: Number(h.voters ?? 0),
    multipleChoice: h.multiple === '1',
    anonymous: h.anonymous === '1',
    closed: h.closed === '1' || (closesAt !== null && closesAt <= now),
    closesAt,
    closedAt: h.closedAt ? Number(h.closedAt) : null,
    createdAt: Number(h.createdAt ?? 0),
    version: Number(h.version ?? 0),
  };
}

/** A flat HGETALL reply as an object. */
function pairs(flat: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i] as string] = flat[i + 1] as string;
  return out;
}

/** The option indexes of a stored vote ('0,2'). */
const parseVote = (stored: string | null | undefined) => (stored ? stored.split(',').map(Number) : []);

/** Creates the polls service: every method that takes `viewer` authorizes first. */
export function createPollsService(deps: PollsServiceDeps) {
  const { redis, scripts, pubsub, rooms, events, clock, logger, coalesceMs, tickMs } = deps;
  const createScript = scripts.get('createPoll');
  const voteScript = scripts.get('vote');
  const closeScript = scripts.get('closePoll');

  const announce = (poll: PollModel) => pubsub.publish('room', poll.roomId, { type: 'PollUpdated', roomId: poll.roomId, poll });

  // Votes are coalesced cluster-wide (see coalescing.ts). The end of a window announces the poll
  // only while it is open: closing announces the final results itself, at once.
  const windows = createCoalescingWindows(coalesceMs);
  const announceWhenWindowCloses = (ref: PollRef, sent: PollModel) =>
    windows.whenClosed(async () => {
      const [latest] = await read([ref]);
      return latest && !latest.closed && latest.version > sent.version ? latest : null;
    }, announce);

  /** Polls by ref, in one round trip; null where absent. */
  async function read(refs: readonly PollRef[]): Promise<(PollModel | null)[]> {
    if (refs.length === 0) return [];
    const pipeline = pipelineOf(redis);
    for (const r of refs) pipeline.hgetall(keys.poll(r.roomId, r.localId));
    const now = clock.now();
    return (await execPipeline(pipeline)).map((h) => parsePoll(h as Record<string, string>, now));
  }

  /** A poll the viewer may see: null if absent, `FORBIDDEN` unless they are a member of its room. */
  async function get(viewer: Viewer, pollId: string, field = 'id'): Promise<PollModel | null> {
    const ref = decodePollId(field, pollId);
    const [hash, score] = await execPipeline(
      pipelineOf(redis).hgetall(keys.poll(ref.roomId, ref.localId)).zscore(roomKeys.members(ref.roomId), viewer.id),
    );
    const poll = parsePoll(hash as Record<string, string>, clock.now());
    if (!poll) return null;
    if (score === null) throw forbidden('Polls are for members of their room only');
    return poll;
  }

  /** Closes due polls; each is closed (and announced) by exactly one caller, on any instance. */
  async function sweep(now = clock.now()): Promise<number> {
    const due = await redis.zrangebyscore(keys.closing(), '-inf', now, 'LIMIT', 0, SWEEP_BATCH);
    let closed = 0;
    for (const pollId of due) {
      let ref: PollRef;
      try {
        ref = decodePollId('pollId', pollId);
      } catch {
        await redis.zrem(keys.closing(), pollId);
        continue;
      }
      const [status, changed, ...hash] = (await closeScript(closePollKeys(ref), ['', pollId, now])) as [number, number, ...string[]];
      const poll = parsePoll(hash, now);
      if (status === SCRIPT_STATUS.OK && changed === 1 && poll) {
        closed++;
        announce(poll);
      }
    }
    return closed;
  }

  const ticker = createTicker(sweep, { tickMs, logger, what: 'poll close sweep' });

  return {
    sweep,
    get,

    /** Starts closing polls whose closesAt has passed (any instance may close one; one does). */
    start: ticker.start,

    /** Stops the sweep and the coalescing timers (shutdown). */
    stop() {
      ticker.stop();
      windows.stop();
    },

    /** `createPoll`: members only; announced to the room at once. */
    async create(viewer: Viewer, input: CreatePollInput): Promise<PollModel> {
      const roomId = checkedId('roomId', input.roomId);
      const question = checkedText('question', input.question, 1, QUESTION_MAX_CHARS);
      if (input.options.length < MIN_OPTIONS || input.options.length > MAX_OPTIONS) {
        throw badInput('options', `options must hold ${MIN_OPTIONS}..${MAX_OPTIONS} options`);
      }
      const options = input.options.map((o) => checkedText('options', o, 1, OPTION_MAX_CHARS));
      if (new Set(options.map(sameOption)).size !== options.length) throw badInput('options', 'options must be distinct');
      const now = clock.now();
      let closesAt: number | null = null;
      if (input.closesAt != null) {
        closesAt = Date.parse(input.closesAt);
        if (Number.isNaN(closesAt)) throw badInput('closesAt', 'closesAt is not a date-time');
        if (closesAt <= now) throw badInput('closesAt', 'closesAt must be in the future');
      }
      const ref = { roomId, localId: newLocalId(now) };
      const [status, ...hash] = (await createScript(createPollKeys(ref), [
        viewer.id,
        encodePollId(ref),
        ref.localId,
        roomId,
        question,
        JSON.stringify(options),
        options.length,
        input.multipleChoice ? 1 : 0,
        input.anonymous ? 1 : 0,
        closesAt ?? '',
        now,
      ])) as [number, ...string[]];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const poll = parsePoll(hash, now) as PollModel;
      announce(poll);
      return poll;
    },

    /**
     * `vote`: replaces the viewer's vote in one script (`[]` retracts). Answers the poll and the
     * viewer's vote (option indexes).
     */
    async vote(viewer: Viewer, pollId: string, optionIds: readonly string[]): Promise<{ poll: PollModel; viewerVote: number[] }> {
      const ref = decodePollId('pollId', pollId);
      const indexes = optionIds.map((id) => {
        const option = decodeOptionId('optionIds', id);
        if (option.roomId !== ref.roomId || option.localId !== ref.localId) {
          throw badInput('optionIds', 'optionIds holds an option of another poll');
        }
        return option.index;
      });
      if (new Set(indexes).size !== indexes.length) throw badInput('optionIds', 'optionIds must be distinct');
      const now = clock.now();
      const [status, , opened, ...hash] = (await voteScript(voteKeys(ref), [viewer.id, now, coalesceMs, ...indexes])) as [
        number,
        number,
        number,
        ...string[],
      ];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const poll = parsePoll(hash, now) as PollModel;
      if (opened === 1) {
        announce(poll);
        announceWhenWindowCloses(ref, poll);
      }
      return { poll, viewerVote: [...indexes].sort((x, y) => x - y) };
    },

    /** `closePoll`: its creator or the room owner; idempotent. Closing announces the final results. */
    async close(viewer: Viewer, pollId: string): Promise<PollModel> {
      const ref = decodePollId('pollId', pollId);
      const now = clock.now();
      const [status, changed, ...hash] = (await closeScript(closePollKeys(ref), [viewer.id, pollId, now])) as [
        number,
        number,
        ...string[],
      ];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const poll = parsePoll(hash, now) as PollModel;
      if (changed === 1) announce(poll);
      return poll;
    },

    /** A room's polls, newest first (members only). */
    async list(viewer: Viewer, roomId: string, args: { first?: number | null; after?: string | null }): Promise<Connection<PollModel>> {
      const first = pageSize('first', args.first, 20);
      let max = '+';
      if (args.after) {
        const [localId] = decodeCursor('after', args.after);
        if (typeof localId !== 'string') throw badInput('after', 'after is not a valid cursor');
        max = `(${localId}`;
      }
      await rooms.requireMember(viewer, roomId);
      const ids = first === 0 ? [] : await redis.zrevrangebylex(keys.roomPolls(roomId), max, '-', 'LIMIT', 0, first + 1);
      const polls = await read(ids.slice(0, first).map((localId) => ({ roomId, localId })));
      const found = polls.flatMap((poll, i) => (poll ? [{ localId: ids[i] as string, poll }] : []));
      const connection = toConnection(found, (f) => encodeCursor([f.localId]), Boolean(args.after), ids.length > first);
      return { edges: connection.edges.map((e) => ({ cursor: e.cursor, node: e.node.poll })), pageInfo: connection.pageInfo };
    },

    /** Each poll's vote of one viewer (option indexes), in one round trip. */
    async votesOf(viewerId: string, polls: readonly PollModel[]): Promise<number[][]> {
      if (polls.length === 0) return [];
      const pipeline = pipelineOf(redis);
      for (const p of polls) {
        const ref = decodePollId('pollId', p.id);
        pipeline.hget(keys.votes(ref.roomId, ref.localId), viewerId);
      }
      return (await execPipeline(pipeline)).map((v) => parseVote(v as string | null));
    },

    /** Who chose each option (at most `first` each, by id), in one round trip; nobody for anonymous polls. */
    async voters(options: readonly { poll: PollModel; index: number; first: number }[]): Promise<string[][]> {
      const shown = options.filter((o) => !o.poll.anonymous && o.first > 0);
      const pipeline = pipelineOf(redis);
      for (const { poll, index, first } of shown) {
        const ref = decodePollId('pollId', poll.id);
        pipeline.zrangebyscore(keys.voters(ref.roomId, ref.localId), index, index, 'LIMIT', 0, first);
      }
      const replies = shown.length > 0 ? await execPipeline(pipeline) : [];
      const byOption = new Map(shown.map((o, i) => [o, replies[i] as string[]]));
      return options.map((o) => (byOption.get(o) ?? []).map((member) => member.slice(member.indexOf(':') + 1)));
    },

    /**
     * `pollUpdated`: the room's stream narrowed to one poll (members only; ends when the viewer
     * stops being a member). An update older than one already sent (two instances announcing
     * close together) is skipped.
     */
    async openPollStream(viewer: Viewer, pollId: string, sink?: EventSink): Promise<AsyncGenerator<StreamItem>> {
      const poll = await get(viewer, pollId, 'pollId');
      if (!poll) throw notFound('Poll');
      let version = 0;
      return events.openRoomStream(viewer, poll.roomId, {
        kind: 'polls',
        sink,
        match: (ev) => {
          if (ev.type !== 'PollUpdated' || ev.poll.id !== poll.id || ev.poll.version <= version) return false;
          version = ev.poll.version;
          return true;
        },
      });
    },
  };
}
