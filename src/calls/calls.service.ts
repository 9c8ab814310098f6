import { randomBytes } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';
import type { WebhookEvent } from 'livekit-server-sdk';
import type { CallsConfig } from '../config.js';
import { forbidden, SCRIPT_STATUS, unavailable } from '../errors.js';
import type { Clock } from '../infra/clock.js';
import type { Logger } from '../infra/logger.js';
import { execPipeline } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId } from '../infra/text.js';
import type { RoomsService } from '../rooms/rooms.service.js';
import type { AppPubSub } from '../topics.js';
import type { Viewer } from '../users/users.models.js';
import type { SharedCache } from './calls.cache.js';
import { repeatUnlessBusy } from '../infra/repeat.js';
import { applyCallKeys, callKeys as keys } from './calls.keys.js';
import { requireLiveKit, STANDARD_PARTICIPANT, toMs, type LiveKit, type LiveKitParticipant } from './calls.livekit.js';
import { CALL_CHANGE, CALL_STATUS, callScriptError, type CallJoinModel, type CallModel } from './calls.models.js';

/** Dependencies of {@link createCallsService}. */
export interface CallsServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  rooms: RoomsService;
  clock: Clock;
  logger: Logger;
  /** Null when LiveKit is not configured: voice operations answer `NOT_CONFIGURED`. */
  livekit: LiveKit | null;
  /** Holds LiveKit participant lists briefly, loaded once cluster-wide (calls.cache.ts). */
  cache: SharedCache;
  settings: CallsConfig;
  /** How often due timers (rotations, departure timeouts) are looked for, as a backstop. */
  tickMs: number;
}

/** Calls: lifecycle, participants, LiveKit tokens, webhooks and reconciliation. */
export type CallsService = ReturnType<typeof createCallsService>;

/** What applyCall-10 answered. */
interface Applied {
  status: number;
  change: number;
  nextDue: number;
  call: CallModel | null;
  evict: string[];
}

/** A stored call and when it was last synced with LiveKit. */
interface StoredCall {
  call: CallModel;
  syncedAt: number;
}

/** The LiveKit participant list as cached (shared by every instance for a moment). */
interface ParticipantList {
  fetchedAt: number;
  participants: LiveKitParticipant[];
}

/** What a webhook did, for the endpoint's log and tests. */
export type WebhookOutcome = 'applied' | 'unchanged' | 'duplicate' | 'ignored';

const WEBHOOK_EVENTS = new Set([
  'participant_joined',
  'participant_left',
  'participant_connection_aborted',
  'room_started',
  'room_finished',
]);
const SWEEP_BATCH = 100;

/** A fresh call id: 16 url-safe characters. */
const newCallId = () => randomBytes(12).toString('base64url');

/** Parses a call as applyCall-10 encodes it. */
function parseCall(roomId: string, json: string): CallModel {
  const c = JSON.parse(json) as { id: string; startedAt: number; epoch: number; endedAt?: number; participants: unknown };
  // cjson encodes an empty list as an object.
  const list = Array.isArray(c.participants) ? (c.participants as [string, number][]) : [];
  return {
    id: c.id,
    roomId,
    startedAt: c.startedAt,
    epoch: c.epoch,
    endedAt: c.endedAt ?? null,
    participants: list.map(([userId, joinedAt]) => ({ userId, joinedAt })),
  };
}

/** Parses the call and participant hashes; null when no call is on. */
function parseStored(roomId: string, hash: Record<string, string>, participants: Record<string, string>): StoredCall | null {
  if (!hash.id) return null;
  const list = Object.entries(participants)
    .map(([userId, entry]) => ({ userId, joinedAt: Number(entry.split('|')[0]) }))
    .sort((a, b) => a.joinedAt - b.joinedAt || (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
  return {
    call: { id: hash.id, roomId, startedAt: Number(hash.startedAt), epoch: Number(hash.epoch), endedAt: null, participants: list },
    syncedAt: Number(hash.syncedAt ?? 0),
  };
}

/** Creates the calls service. Every method that takes `viewer` authorizes first. */
export function createCallsService(deps: CallsServiceDeps) {
  const { redis, scripts, pubsub, rooms, clock, logger, livekit, cache, settings, tickMs } = deps;
  const applyScript = scripts.get('applyCall');

  /** ARGV of applyCall-10: the operation, then what every operation takes, then its own. */
  const argv = (op: string, roomId: string, ...rest: (string | number)[]) => [
    op,
    roomId,
    clock.now(),
    settings.departureTimeoutMs,
    settings.rekeyWindowMs,
    ...rest,
  ];

  function parseApplied(roomId: string, reply: unknown): Applied {
    const [status, change = 0, nextDue = 0, json, ...evict] = reply as [number, number?, number?, string?, ...string[]];
    return { status, change, nextDue, call: json ? parseCall(roomId, json) : null, evict };
  }

  /** Announces what changed, follows the call's next timer, and disconnects evicted identities. */
  function settle(roomId: string, applied: Applied): Applied {
    if (applied.change !== CALL_CHANGE.NONE && applied.call) {
      pubsub.publish('room', roomId, {
        type: 'CallUpdated',
        roomId,
        call: applied.call,
        rekey: applied.change === CALL_CHANGE.REKEYED,
      });
    }
    if (applied.nextDue > 0) scheduleSettle(roomId, applied.nextDue);
    for (const identity of applied.evict) disconnect(roomId, identity);
    return applied;
  }

  /** Runs one applyCall-10 operation and settles its outcome; `eventId` dedupes a webhook. */
  async function apply(roomId: string, op: string, rest: (string | number)[] = [], eventId = ''): Promise<Applied> {
    return settle(roomId, parseApplied(roomId, await applyScript(applyCallKeys(roomId, eventId), argv(op, roomId, ...rest))));
  }

  /** Asks LiveKit to disconnect someone (left, removed, no longer a member); best effort. */
  function disconnect(roomId: string, identity: string): void {
    livekit?.removeParticipant(roomId, identity).catch((err: Error) => {
      logger.warn({ err: err.message, roomId, identity }, 'LiveKit did not remove a participant');
    });
  }

  // Timers: the instance that changed a call settles its next due time itself (rotation at the end
  // of the rekey window, departure timeout); the sweep of calls:timers is the backstop for calls
  // whose instance went away. Settling is one script, so exactly one caller sees each change.
  const timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  function scheduleSettle(roomId: string, at: number): void {
    const existing = timers.get(roomId);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      timers.delete(roomId);
      apply(roomId, 'settle').catch((err: Error) => logger.debug({ err: err.message, roomId }, 'call settle failed'));
    }, Math.max(0, at - clock.now()) + 5);
    timer.unref();
    timers.set(roomId, { at, timer });
  }

  async function sweepDue(): Promise<void> {
    const due = await redis.zrangebyscore(keys.timers(), '-inf', clock.now(), 'LIMIT', 0, SWEEP_BATCH);
    for (const roomId of due) await apply(roomId, 'settle');
  }

  async function readMany(roomIds: readonly string[]): Promise<(StoredCall | null)[]> {
    if (roomIds.length === 0) return [];
    const tx = redis.multi();
    for (const id of roomIds) tx.hgetall(keys.call(id)).hgetall(keys.participants(id));
    const replies = await execPipeline(tx);
    return roomIds.map((id, i) =>
      parseStored(id, replies[2 * i] as Record<string, string>, replies[2 * i + 1] as Record<string, string>),
    );
  }

  // Reconciliation: LiveKit's participant list replaces what webhooks built (they may come late,
  // twice or never). One sync per room at a time on this instance; the shared cache makes it one
  // LiveKit request per room per moment across instances.
  const syncing = new Map<string, Promise<Applied>>();
  function sync(roomId: string): Promise<Applied> {
    const lk = requireLiveKit(livekit);
    let running = syncing.get(roomId);
    if (!running) {
      running = (async () => {
        const list = await cache.getOrLoad<ParticipantList>(keys.participantList(roomId), settings.participantsCacheMs, async () => ({
          fetchedAt: clock.now(),
          participants: await lk.listParticipants(roomId),
        }));
        const flat = list.participants.flatMap((p) => [p.identity, p.sid, p.joinedAt]);
        return apply(roomId, 'sync', [list.fetchedAt, settings.joinGraceMs, ...flat]);
      })().finally(() => syncing.delete(roomId));
      syncing.set(roomId, running);
    }
    return running;
  }

  /** Syncs calls last synced before `before`; a failure keeps what Redis has (logged). */
  async function syncStale(stored: (StoredCall | null)[], before: number): Promise<void> {
    const stale = stored.filter((s): s is StoredCall => s !== null && s.syncedAt < before);
    await Promise.all(
      stale.map((s) =>
        sync(s.call.roomId).catch((err: Error) => {
          logger.warn({ err: err.message, roomId: s.call.roomId }, 'call sync with LiveKit failed');
        }),
      ),
    );
  }

  async function syncActive(): Promise<void> {
    const before = clock.now() - settings.syncIntervalMs;
    const roomIds = await redis.zrangebyscore(keys.active(), '-inf', before, 'LIMIT', 0, SWEEP_BATCH);
    await syncStale(await readMany(roomIds), before);
  }

  const intervals: NodeJS.Timeout[] = [];
  function every(ms: number, what: string, run: () => Promise<void>): void {
    intervals.push(repeatUnlessBusy(ms, run, (err) => logger.debug({ err: err.message }, `${what} failed`)));
  }

  return {
    /** Whether LiveKit is configured (voice operations answer `NOT_CONFIGURED` otherwise). */
    configured: livekit !== null,

    /** Starts the due-timer sweep and the periodic sync of active calls. */
    start(): void {
      if (!livekit) return;
      every(tickMs, 'call timer sweep', sweepDue);
      if (settings.syncIntervalMs > 0) every(settings.syncIntervalMs, 'call sync', syncActive);
    },

    /** Stops every timer (shutdown). */
    stop(): void {
      for (const t of intervals.splice(0)) clearInterval(t);
      for (const { timer } of timers.values()) clearTimeout(timer);
      timers.clear();
    },

    /** Runs the due-timer sweep now (tests; the interval runs it every tick). */
    sweepDue,
    /** Syncs a room's call with LiveKit now. */
    sync,

    /**
     * The current call of each room (null: none), for a viewer who must be a member of each (a
     * `FORBIDDEN` error in place otherwise). Calls last synced too long ago are synced first.
     */
    async currentMany(viewer: Viewer, roomIds: readonly string[]): Promise<(CallModel | null | Error)[]> {
      if (!livekit) return roomIds.map(() => null);
      const [memberships, stored] = await Promise.all([
        rooms.areMembers(roomIds.map((roomId) => ({ roomId, userId: viewer.id }))),
        readMany(roomIds),
      ]);
      const before = clock.now() - settings.syncStaleMs;
      if (stored.some((s, i) => memberships[i] && s && s.syncedAt < before)) {
        await syncStale(
          stored.filter((_, i) => memberships[i]),
          before,
        );
        const fresh = await readMany(roomIds);
        fresh.forEach((s, i) => (stored[i] = s));
      }
      return roomIds.map((_, i) => (memberships[i] ? (stored[i]?.call ?? null) : forbidden('You are not a member of this room')));
    },

    /** `joinCall`: members only; starts the room's call if none is on, and hands out a LiveKit token. */
    async join(viewer: Viewer, roomIdArg: string): Promise<CallJoinModel> {
      const lk = requireLiveKit(livekit);
      const roomId = checkedId('roomId', roomIdArg);
      const applied = await apply(roomId, 'join', [viewer.id, newCallId()]);
      if (applied.status !== SCRIPT_STATUS.OK) throw callScriptError(applied.status);
      const call = applied.call ?? (await readMany([roomId]))[0]?.call;
      if (!call) throw unavailable('The call ended while joining: try again');
      const token = await lk.token({ identity: viewer.id, name: viewer.name, room: roomId, ttlSeconds: settings.tokenTtlSeconds });
      return { token, url: lk.url, call };
    },

    /** `leaveCall`: the viewer leaves the room's call (LiveKit disconnects them too). Idempotent. */
    async leave(viewer: Viewer, roomIdArg: string): Promise<boolean> {
      const lk = requireLiveKit(livekit);
      const roomId = checkedId('roomId', roomIdArg);
      // LiveKit first: a sync meanwhile would otherwise find them connected and add them back.
      await lk.removeParticipant(roomId, viewer.id).catch((err: Error) => {
        logger.warn({ err: err.message, roomId }, 'LiveKit did not remove a leaving participant');
      });
      await apply(roomId, 'leave', [viewer.id]);
      return true;
    },

    /** `endCall`: the room owner ends the call for everyone (the LiveKit room is deleted). False if none was on. */
    async end(viewer: Viewer, roomIdArg: string): Promise<boolean> {
      const lk = requireLiveKit(livekit);
      const roomId = checkedId('roomId', roomIdArg);
      const room = await rooms.requireMember(viewer, roomId);
      if (room.ownerId !== viewer.id) throw forbidden('Only the room owner may end the call');
      if (!(await readMany([roomId]))[0]) return false;
      // LiveKit first: if it cannot be reached, the call goes on everywhere rather than only in media.
      await lk.deleteRoom(roomId).catch((err: Error) => {
        logger.warn({ err: err.message, roomId }, 'LiveKit did not delete a room');
        throw unavailable('LiveKit is unreachable: the call was not ended, try again');
      });
      const applied = await apply(roomId, 'end', [viewer.id]);
      // NO_CALL: LiveKit's room_finished ended it first.
      if (applied.status !== SCRIPT_STATUS.OK && applied.status !== CALL_STATUS.NO_CALL) throw callScriptError(applied.status);
      return true;
    },

    /** Verifies a webhook against its raw body (WebhookReceiver) and parses it; throws when it does not verify. */
    verifyWebhook: (rawBody: string, authorization: string | undefined): Promise<WebhookEvent> =>
      requireLiveKit(livekit).receiveWebhook(rawBody, authorization),

    /**
     * Applies a verified LiveKit webhook: participants and lifecycle change atomically with the
     * event id's dedupe; out-of-order and missing events are tolerated (see applyCall-10).
     */
    async applyWebhook(event: WebhookEvent, eventId: string): Promise<WebhookOutcome> {
      const roomId = event.room?.name ?? '';
      if (!livekit || !WEBHOOK_EVENTS.has(event.event) || roomId.length < 1 || roomId.length > 128) return 'ignored';
      const p = event.participant;
      const joinedAt = p ? (p.joinedAtMs ? toMs(p.joinedAtMs) : toMs(p.joinedAt, 1000)) : 0;
      const applied = await apply(
        roomId,
        'webhook',
        [
          event.event,
          event.room?.sid ?? '',
          p?.sid ?? '',
          p?.identity ?? '',
          joinedAt,
          toMs(event.createdAt, 1000),
          newCallId(),
          p && (p.kind as number) === STANDARD_PARTICIPANT ? 1 : 0,
        ],
        eventId,
      );
      if (applied.status === CALL_STATUS.DUPLICATE) return 'duplicate';
      // Someone connected to LiveKit who is no longer a member of the room (their token outlived it).
      if (applied.status === SCRIPT_STATUS.NOT_MEMBER && p) disconnect(roomId, p.identity);
      if (applied.status !== SCRIPT_STATUS.OK) return 'ignored';
      return applied.change === CALL_CHANGE.NONE ? 'unchanged' : 'applied';
    },

    /** Hook: a user who stops being a member of a room leaves its call (in the core's pipeline). */
    leftInPipeline(pipeline: ChainableCommander, roomId: string, userId: string) {
      scripts.queue(pipeline, 'applyCall', applyCallKeys(roomId), argv('leave', roomId, userId));
      return (replies: unknown[]) => {
        // A call is on: LiveKit disconnects them even if it never told us they had connected.
        if (settle(roomId, parseApplied(roomId, replies[0])).status === SCRIPT_STATUS.OK) disconnect(roomId, userId);
      };
    },
  };
}
