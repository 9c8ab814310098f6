import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScriptRunner } from '../../src/infra/scripts.js';
import { messageKeys } from '../../src/messages/messages.keys.js';
import { presenceKeys } from '../../src/presence/presence.keys.js';
import { claimPushKeys, pushKeys, pushSummaryKeys } from '../../src/push/push.keys.js';
import { receiptKeys } from '../../src/receipts/receipts.keys.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The push domain's Lua scripts, called directly: claimPush's statuses and watermark (bursts make
 * one claim whatever order their jobs run in, concurrent jobs included; a job re-running its claim
 * gets the same range; a reset history starts over) and pushSummary's count and latest message.
 */

const prefix = uniquePrefix('push-lua');
const EPOCH = 'E1';
let redis: Redis;
const extra: Redis[] = [];
let claimPush: ScriptRunner;
let pushSummary: ScriptRunner;

beforeAll(async () => {
  const c = await luaConnection(prefix);
  redis = c.redis;
  claimPush = c.scripts.get('claimPush');
  pushSummary = c.scripts.get('pushSummary');
});

afterAll(async () => {
  await deletePrefixed(prefix);
  for (const r of extra) r.disconnect();
  redis?.disconnect();
});

const fresh = (label: string) => `${label}-${randomBytes(4).toString('hex')}`;

/** [status, from, to]: 0 CLAIMED, 1 ONLINE, 2 COVERED, 3 READ */
type ClaimReply = [number, number, number];

/** claimPush for recipient `userId` in `roomId`, as a job with id `jobId` for the message at `seq`. */
const claim = (
  userId: string,
  roomId: string,
  jobId: string,
  seq: number,
  { lastSeq = seq, read = 0, epoch = EPOCH, runner = claimPush } = {},
) => runner(claimPushKeys(userId), [roomId, jobId, seq, epoch, lastSeq, read]) as Promise<ClaimReply>;

describe('claimPush', () => {
  it('should answer ONLINE while the recipient has a live connection, and claim nothing', async () => {
    const [bob, room] = [fresh('bob'), fresh('room')];
    await redis.sadd(presenceKeys.connections(bob), 'conn-1');
    expect(await claim(bob, room, 'j1', 1)).toEqual([1, 0, 0]);
    expect(await redis.hget(pushKeys.state(bob), room)).toBeNull();
  });

  it('should claim from the read watermark to the room’s latest, then cover every message of that range', async () => {
    const [bob, room] = [fresh('bob'), fresh('room')];
    // Messages 4..6 arrived; bob had read up to 2, and message 3 was sent while he was online.
    expect(await claim(bob, room, 'j4', 4, { lastSeq: 6, read: 2 })).toEqual([0, 2, 6]);
    expect(await claim(bob, room, 'j5', 5, { lastSeq: 6, read: 2 })).toEqual([2, 0, 0]);
    expect(await claim(bob, room, 'j6', 6, { lastSeq: 6, read: 2 })).toEqual([2, 0, 0]);
    // The next message starts after the push watermark, not after the (older) read watermark.
    expect(await claim(bob, room, 'j7', 7, { lastSeq: 7, read: 2 })).toEqual([0, 6, 7]);
  });

  it('should cover earlier messages whose jobs run late (out of order)', async () => {
    const [bob, room] = [fresh('bob'), fresh('room')];
    expect(await claim(bob, room, 'j3', 3, { lastSeq: 3 })).toEqual([0, 0, 3]);
    expect(await claim(bob, room, 'j1', 1, { lastSeq: 3 })).toEqual([2, 0, 0]);
    expect(await claim(bob, room, 'j2', 2, { lastSeq: 3 })).toEqual([2, 0, 0]);
  });

  it('should answer READ when the recipient read past the message', async () => {
    const [bob, room] = [fresh('bob'), fresh('room')];
    expect(await claim(bob, room, 'j2', 2, { lastSeq: 3, read: 2 })).toEqual([3, 0, 0]);
    expect(await claim(bob, room, 'j3', 3, { lastSeq: 3, read: 2 })).toEqual([0, 2, 3]);
  });

  it('should give a job that claims again (it died before saving its claim) the same range', async () => {
    const [bob, room] = [fresh('bob'), fresh('room')];
    expect(await claim(bob, room, 'j1', 1, { lastSeq: 2 })).toEqual([0, 0, 2]);
    expect(await claim(bob, room, 'j1', 1, { lastSeq: 5 })).toEqual([0, 0, 2]);
  });

  it('should start over in another history epoch (a reset room)', async () => {
    const [bob, room] = [fresh('bob'), fresh('room')];
    expect(await claim(bob, room, 'j9', 9, { lastSeq: 9 })).toEqual([0, 0, 9]);
    expect(await claim(bob, room, 'k1', 1, { lastSeq: 1, epoch: 'E2' })).toEqual([0, 0, 1]);
  });

  it('should let exactly one of many concurrent jobs of a burst claim it', async () => {
    const [bob, room] = [fresh('bob'), fresh('room')];
    const runners = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const c = await luaConnection(prefix);
        extra.push(c.redis);
        return c.scripts.get('claimPush');
      }),
    );
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, i) => claim(bob, room, `j${i + 1}`, i + 1, { lastSeq: 20, runner: runners[i % 4] })),
    );
    const claimed = replies.filter(([status]) => status === 0);
    expect(claimed).toEqual([[0, 0, 20]]);
    expect(replies.filter(([status]) => status === 2)).toHaveLength(19);
  });
});

/** [status, count, latestJson, roomName]: 0 OK, 1 GONE, 2 NOT_MEMBER */
type SummaryReply = [number, number, string, string];

describe('pushSummary', () => {
  /** A room named `name` with messages 1..lastSeq from alice; bob a member. */
  async function seed(lastSeq: number) {
    const roomId = fresh('room');
    const multi = redis
      .multi()
      .hset(roomKeys.room(roomId), { id: roomId, name: 'general', seq: lastSeq, epoch: EPOCH })
      .zadd(roomKeys.members(roomId), 0, 'alice', 0, 'bob');
    for (let seq = 1; seq <= lastSeq; seq++) {
      multi.hset(messageKeys.messages(roomId), seq, JSON.stringify({ roomId, epoch: EPOCH, seq, senderId: 'alice', text: `m${seq}` }));
    }
    await multi.exec();
    return roomId;
  }
  const summary = (roomId: string, from: number, to: number, userId = 'bob', epoch = EPOCH) =>
    pushSummary(pushSummaryKeys(roomId), [userId, from, to, epoch]) as Promise<SummaryReply>;
  const deleted = (roomId: string, ...seqs: number[]) =>
    redis.zadd(receiptKeys.deleted(roomId), ...seqs.flatMap((s) => [s, String(s)]));
  const textOf = (json: string) => (json ? (JSON.parse(json) as { text: string }).text : null);

  it('should count the claimed messages and return the latest', async () => {
    const roomId = await seed(5);
    const [status, count, latest, name] = await summary(roomId, 2, 5);
    expect([status, count, textOf(latest), name]).toEqual([0, 3, 'm5', 'general']);
  });

  it('should leave out deleted messages and what the recipient has read since the claim', async () => {
    const roomId = await seed(6);
    await deleted(roomId, 6, 4);
    await redis.hset(receiptKeys.ownMarks(roomId), 'bob', 2);
    const [status, count, latest] = await summary(roomId, 0, 6);
    // 3 and 5 are left: 1..2 read, 4 and 6 deleted.
    expect([status, count, textOf(latest)]).toEqual([0, 2, 'm5']);
  });

  it('should return no latest message when everything claimed is read or deleted', async () => {
    const roomId = await seed(3);
    await deleted(roomId, 3);
    await redis.hset(receiptKeys.ownMarks(roomId), 'bob', 2);
    expect(await summary(roomId, 0, 3)).toEqual([0, 0, '', 'general']);
  });

  it('should answer NOT_MEMBER for a recipient who left, and GONE for another history or no room', async () => {
    const roomId = await seed(2);
    expect((await summary(roomId, 0, 2, 'carol'))[0]).toBe(2);
    expect((await summary(roomId, 0, 2, 'bob', 'E0'))[0]).toBe(1);
    expect((await summary(fresh('nowhere'), 0, 2))[0]).toBe(1);
  });
});
