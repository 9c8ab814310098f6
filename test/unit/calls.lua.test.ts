import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyCallKeys, callKeys, publishCallKeyKeys } from '../../src/calls/calls.keys.js';
import type { ScriptRunner } from '../../src/infra/scripts.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The calls domain's Lua scripts, called directly: joins and leaves, webhook dedupe and the
 * out-of-order cases (a leave before its join, a join after the room finished, a late leave of an
 * old session), rotation batching and its races, the departure timeout, sync replacing what
 * webhooks built, and publishCallKey's checks.
 */

const prefix = uniquePrefix('calls-lua');
const DEPARTURE_MS = 5000;
const REKEY_MS = 1000;
const GRACE_MS = 30_000;
const T0 = 1_700_000_000_000;
let redis: Redis;
let applyCall: ScriptRunner;
let publishCallKey: ScriptRunner;

beforeAll(async () => {
  const conn = await luaConnection(prefix);
  redis = conn.redis;
  applyCall = conn.scripts.get('applyCall');
  publishCallKey = conn.scripts.get('publishCallKey');
});

afterAll(async () => {
  await deletePrefixed(prefix);
  redis?.disconnect();
});

/** [status, change, nextDue, call JSON, evict...] */
type Reply = [number, number?, number?, string?, ...string[]];
interface CallJson {
  id: string;
  epoch: number;
  endedAt?: number;
  participants: [string, number][] | Record<string, never>;
}

const CHANGE = { NONE: 0, CHANGED: 1, REKEYED: 2, ENDED: 3 };

/** A room owned by the first member, with the given members. */
async function seedRoom(members: string[]) {
  const roomId = randomBytes(6).toString('hex');
  await redis
    .multi()
    .hset(roomKeys.room(roomId), { id: roomId, name: 'r', visibility: 'PRIVATE', ownerId: members[0] ?? 'o', seq: 0 })
    .zadd(roomKeys.members(roomId), ...members.flatMap((m) => [0, m]))
    .exec();
  return roomId;
}

const run = (roomId: string, op: string, now: number, rest: (string | number)[] = [], eventId = '') =>
  applyCall(applyCallKeys(roomId, eventId), [op, roomId, now, DEPARTURE_MS, REKEY_MS, ...rest]) as Promise<Reply>;

const join = (roomId: string, userId: string, now = T0) => run(roomId, 'join', now, [userId, `call-${roomId}`]);
const leave = (roomId: string, userId: string, now = T0) => run(roomId, 'leave', now, [userId]);
const settle = (roomId: string, now: number) => run(roomId, 'settle', now);

let events = 0;
/** A webhook event; `createdAt` in ms (LiveKit stamps seconds: it is truncated). */
function webhook(
  roomId: string,
  event: string,
  opts: { roomSid?: string; sid?: string; identity?: string; now?: number; createdAt?: number; id?: string; standard?: boolean },
) {
  const now = opts.now ?? T0;
  const createdAt = Math.floor((opts.createdAt ?? now) / 1000) * 1000;
  return run(
    roomId,
    'webhook',
    now,
    [event, opts.roomSid ?? 'RM_1', opts.sid ?? '', opts.identity ?? '', 0, createdAt, `call-${roomId}-${events}`, opts.standard === false ? 0 : 1],
    opts.id ?? `EV_${events++}`,
  );
}

const sync = (roomId: string, now: number, fetchedAt: number, list: [string, string, number][]) =>
  run(roomId, 'sync', now, [fetchedAt, GRACE_MS, ...list.flat()]);

const callOf = (reply: Reply) => JSON.parse(reply[3] as string) as CallJson;
const idsOf = (call: CallJson) => (Array.isArray(call.participants) ? call.participants.map(([id]) => id) : []);
const stored = async (roomId: string) => {
  const [call, parts] = await Promise.all([redis.hgetall(callKeys.call(roomId)), redis.hgetall(callKeys.participants(roomId))]);
  return { call, ids: Object.keys(parts).sort() };
};

describe('applyCall', () => {
  describe('when members join', () => {
    it('should start a call at epoch 0 with the first and add the next to the same call', async () => {
      const roomId = await seedRoom(['a', 'b']);
      const first = await join(roomId, 'a');
      expect(first.slice(0, 2)).toEqual([0, CHANGE.CHANGED]);
      expect(callOf(first)).toMatchObject({ id: `call-${roomId}`, epoch: 0, participants: [['a', T0]] });
      const second = await join(roomId, 'b', T0 + 10);
      expect(idsOf(callOf(second))).toEqual(['a', 'b']);
      expect((await join(roomId, 'b', T0 + 20)).slice(0, 2)).toEqual([0, CHANGE.NONE]);
    });

    it('should refuse a non-member and a missing room', async () => {
      const roomId = await seedRoom(['a']);
      expect(await join(roomId, 'stranger')).toEqual([2]);
      expect(await join('no-such-room', 'a')).toEqual([1]);
      expect(await redis.exists(callKeys.call(roomId))).toBe(0);
    });
  });

  describe('when a webhook event comes twice', () => {
    it('should apply it once', async () => {
      const roomId = await seedRoom(['a']);
      const first = await webhook(roomId, 'participant_joined', { identity: 'a', sid: 'PA_a', id: 'EV_dup' });
      expect(first.slice(0, 2)).toEqual([0, CHANGE.CHANGED]);
      await leave(roomId, 'a', T0 + 1);
      expect(await webhook(roomId, 'participant_joined', { identity: 'a', sid: 'PA_a', id: 'EV_dup' })).toEqual([23]);
      expect((await stored(roomId)).ids).toEqual([]);
    });
  });

  describe('when a participant_left comes before its participant_joined', () => {
    it('should ignore the late join of that participant sid', async () => {
      const roomId = await seedRoom(['a', 'b']);
      await join(roomId, 'b');
      expect((await webhook(roomId, 'participant_left', { identity: 'a', sid: 'PA_a' })).slice(0, 2)).toEqual([0, CHANGE.NONE]);
      expect((await webhook(roomId, 'participant_joined', { identity: 'a', sid: 'PA_a' })).slice(0, 2)).toEqual([0, CHANGE.NONE]);
      expect((await stored(roomId)).ids).toEqual(['b']);
    });
  });

  describe('when a participant_joined comes after the room finished', () => {
    it('should not start the call again for that LiveKit session', async () => {
      const roomId = await seedRoom(['a', 'b']);
      await webhook(roomId, 'participant_joined', { identity: 'a', sid: 'PA_a', roomSid: 'RM_old' });
      const finished = await webhook(roomId, 'room_finished', { roomSid: 'RM_old', now: T0 + 5000 });
      expect(finished[1]).toBe(CHANGE.ENDED);
      expect(callOf(finished).endedAt).toBe(T0 + 5000);
      const late = await webhook(roomId, 'participant_joined', { identity: 'b', sid: 'PA_b', roomSid: 'RM_old', now: T0 + 6000 });
      expect(late.slice(0, 2)).toEqual([0, CHANGE.NONE]);
      expect(await redis.exists(callKeys.call(roomId))).toBe(0);
    });

    it('should ignore a join stamped before an endCall, and start a new call for one after it', async () => {
      const roomId = await seedRoom(['a', 'b']);
      await join(roomId, 'a', T0);
      expect((await run(roomId, 'end', T0 + 10_000, ['a']))[1]).toBe(CHANGE.ENDED);
      const before = await webhook(roomId, 'participant_joined', { identity: 'b', sid: 'PA_b1', roomSid: 'RM_x', now: T0 + 11_000, createdAt: T0 + 8000 });
      expect(before.slice(0, 2)).toEqual([0, CHANGE.NONE]);
      const after = await webhook(roomId, 'participant_joined', { identity: 'b', sid: 'PA_b2', roomSid: 'RM_y', now: T0 + 13_000, createdAt: T0 + 12_000 });
      expect(after[1]).toBe(CHANGE.CHANGED);
      expect(callOf(after)).toMatchObject({ epoch: 0, participants: [['b', expect.any(Number)]] });
    });

    it('should ignore the room_finished of an older session', async () => {
      const roomId = await seedRoom(['a']);
      await webhook(roomId, 'participant_joined', { identity: 'a', sid: 'PA_a', roomSid: 'RM_new' });
      expect((await webhook(roomId, 'room_finished', { roomSid: 'RM_old' })).slice(0, 2)).toEqual([0, CHANGE.NONE]);
      expect((await stored(roomId)).ids).toEqual(['a']);
    });
  });

  describe('when a participant reconnects and the old session’s participant_left comes late', () => {
    it('should keep them in the call', async () => {
      const roomId = await seedRoom(['a', 'b']);
      await join(roomId, 'b');
      await webhook(roomId, 'participant_joined', { identity: 'a', sid: 'PA_1' });
      await webhook(roomId, 'participant_joined', { identity: 'a', sid: 'PA_2' });
      expect((await webhook(roomId, 'participant_left', { identity: 'a', sid: 'PA_1' })).slice(0, 2)).toEqual([0, CHANGE.NONE]);
      expect((await stored(roomId)).ids).toEqual(['a', 'b']);
      expect((await webhook(roomId, 'participant_left', { identity: 'a', sid: 'PA_2' }))[1]).toBe(CHANGE.CHANGED);
      expect((await stored(roomId)).ids).toEqual(['b']);
    });
  });

  describe('when participants leave within the rekey window', () => {
    it('should rotate the epoch once, at the end of the window', async () => {
      const roomId = await seedRoom(['a', 'b', 'c', 'd']);
      for (const u of ['a', 'b', 'c', 'd']) await join(roomId, u);
      const first = await leave(roomId, 'a', T0 + 100);
      expect(first.slice(0, 3)).toEqual([0, CHANGE.CHANGED, T0 + 100 + REKEY_MS]);
      expect(callOf(first).epoch).toBe(0);
      await leave(roomId, 'b', T0 + 500);
      await leave(roomId, 'c', T0 + 1000);
      expect(await settle(roomId, T0 + 1099)).toEqual([0, CHANGE.NONE, T0 + 1100]);
      const rotated = await settle(roomId, T0 + 1100);
      expect(rotated[1]).toBe(CHANGE.REKEYED);
      expect(callOf(rotated)).toMatchObject({ epoch: 1, participants: [['d', T0]] });
      expect((await settle(roomId, T0 + 5000)).slice(0, 2)).toEqual([0, CHANGE.NONE]);
      expect((await stored(roomId)).call.epoch).toBe('1');
    });

    it('should let exactly one of concurrent settles rotate', async () => {
      const roomId = await seedRoom(['a', 'b']);
      await join(roomId, 'a');
      await join(roomId, 'b');
      await leave(roomId, 'a', T0);
      const replies = await Promise.all(Array.from({ length: 8 }, () => settle(roomId, T0 + REKEY_MS)));
      expect(replies.filter((r) => r[1] === CHANGE.REKEYED)).toHaveLength(1);
      expect((await stored(roomId)).call.epoch).toBe('1');
    });

    it('should stop serving the leaver’s key at once and every older key at the rotation', async () => {
      const roomId = await seedRoom(['a', 'b']);
      await join(roomId, 'a');
      await join(roomId, 'b');
      await redis.hset(callKeys.mediaKeys(roomId), 'a', '{"expiresAt":9e15}', 'b', '{"expiresAt":9e15}');
      await leave(roomId, 'a', T0);
      expect(await redis.hkeys(callKeys.mediaKeys(roomId))).toEqual(['b']);
      await settle(roomId, T0 + REKEY_MS);
      expect(await redis.exists(callKeys.mediaKeys(roomId))).toBe(0);
    });
  });

  describe('when the last participant leaves', () => {
    it('should end the call after the departure timeout, unless someone joins first', async () => {
      const roomId = await seedRoom(['a', 'b']);
      await join(roomId, 'a');
      await leave(roomId, 'a', T0);
      expect(await settle(roomId, T0 + DEPARTURE_MS - 1)).toEqual([0, CHANGE.REKEYED, T0 + DEPARTURE_MS, expect.any(String)]);
      await join(roomId, 'b', T0 + DEPARTURE_MS - 1);
      expect((await settle(roomId, T0 + DEPARTURE_MS)).slice(0, 2)).toEqual([0, CHANGE.NONE]);
      await leave(roomId, 'b', T0 + 6000);
      const ended = await settle(roomId, T0 + 6000 + DEPARTURE_MS);
      expect(ended[1]).toBe(CHANGE.ENDED);
      expect(callOf(ended).participants).toEqual({});
      expect(await redis.exists(callKeys.call(roomId), callKeys.participants(roomId), callKeys.mediaKeys(roomId))).toBe(0);
      expect(await redis.zscore(callKeys.timers(), roomId)).toBeNull();
      expect(await redis.zscore(callKeys.active(), roomId)).toBeNull();
    });
  });

  describe('when LiveKit’s participant list is synced', () => {
    it('should replace what webhooks built, keeping joiners within the grace and those recorded after the fetch', async () => {
      const roomId = await seedRoom(['hooked', 'pending', 'listed', 'late']);
      await webhook(roomId, 'participant_joined', { identity: 'hooked', sid: 'PA_h' });
      await join(roomId, 'pending', T0);
      await webhook(roomId, 'participant_joined', { identity: 'late', sid: 'PA_l', now: T0 + 20 });
      const reply = await sync(roomId, T0 + 30, T0 + 10, [
        ['listed', 'PA_x', T0 + 5],
        ['outsider', 'PA_o', T0 + 6],
      ]);
      expect(reply[1]).toBe(CHANGE.CHANGED);
      expect(reply.slice(4)).toEqual(['outsider']);
      expect((await stored(roomId)).ids).toEqual(['late', 'listed', 'pending']);
      expect((await stored(roomId)).call.syncedAt).toBe(String(T0 + 10));
      // Past the grace, a joiner LiveKit never listed is gone too.
      await sync(roomId, T0 + GRACE_MS + 1, T0 + GRACE_MS, [['listed', 'PA_x', T0 + 5], ['late', 'PA_l', T0]]);
      expect((await stored(roomId)).ids).toEqual(['late', 'listed']);
    });

    it('should not bring back a participant sid that left', async () => {
      const roomId = await seedRoom(['a', 'b']);
      await join(roomId, 'b');
      await webhook(roomId, 'participant_joined', { identity: 'a', sid: 'PA_a' });
      await webhook(roomId, 'participant_left', { identity: 'a', sid: 'PA_a', now: T0 + 50 });
      await sync(roomId, T0 + 60, T0 + 40, [['a', 'PA_a', T0], ['b', 'PA_b', T0]]);
      expect((await stored(roomId)).ids).toEqual(['b']);
    });

    it('should answer NO_CALL when no call is on', async () => {
      const roomId = await seedRoom(['a']);
      expect(await sync(roomId, T0, T0, [['a', 'PA_a', T0]])).toEqual([20]);
    });
  });

  describe('when a non-owner ends the call', () => {
    it('should refuse', async () => {
      const roomId = await seedRoom(['owner', 'b']);
      await join(roomId, 'b');
      expect(await run(roomId, 'end', T0, ['b'])).toEqual([6]);
      expect((await stored(roomId)).ids).toEqual(['b']);
    });
  });
});

describe('publishCallKey', () => {
  const publish = (roomId: string, userId: string, callId: string, epoch: number, ttlMs = 60_000, now = T0) =>
    publishCallKey(publishCallKeyKeys(roomId), [userId, callId, epoch, JSON.stringify({ userId, epoch, expiresAt: now + ttlMs }), now, ttlMs]);

  it('should store a participant’s key for the current epoch with a TTL', async () => {
    const roomId = await seedRoom(['a', 'b']);
    await join(roomId, 'a');
    expect(await publish(roomId, 'a', `call-${roomId}`, 0)).toBe(0);
    expect(await redis.hkeys(callKeys.mediaKeys(roomId))).toEqual(['a']);
    const ttl = await redis.pttl(callKeys.mediaKeys(roomId));
    expect(ttl).toBeGreaterThan(50_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it('should refuse a non-member, a non-participant, no call, and a stale call or epoch', async () => {
    const roomId = await seedRoom(['a', 'b']);
    expect(await publish(roomId, 'a', 'x', 0)).toBe(20);
    await join(roomId, 'a');
    expect(await publish(roomId, 'stranger', `call-${roomId}`, 0)).toBe(2);
    expect(await publish(roomId, 'b', `call-${roomId}`, 0)).toBe(21);
    expect(await publish(roomId, 'a', `call-${roomId}`, 1)).toBe(22);
    expect(await publish(roomId, 'a', 'another-call', 0)).toBe(22);
    expect(await redis.exists(callKeys.mediaKeys(roomId))).toBe(0);
  });

  it('should drop expired keys of others as it stores', async () => {
    const roomId = await seedRoom(['a', 'b']);
    await join(roomId, 'a');
    await join(roomId, 'b');
    expect(await publish(roomId, 'a', `call-${roomId}`, 0, 1000, T0)).toBe(0);
    expect(await publish(roomId, 'b', `call-${roomId}`, 0, 60_000, T0 + 1000)).toBe(0);
    expect(await redis.hkeys(callKeys.mediaKeys(roomId))).toEqual(['b']);
  });
});
