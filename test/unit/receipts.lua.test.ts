import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScriptRegistry, ScriptRunner } from '../../src/infra/scripts.js';
import { markReadKeys, receiptKeys } from '../../src/receipts/receipts.keys.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The receipts domain's Lua scripts, called directly: markRead's status codes, its forward-only
 * watermarks (public and own), races between concurrent calls, and unreadCount's seq arithmetic
 * with the deleted index.
 */

const prefix = uniquePrefix('receipts-lua');
const EPOCH = 'E1';
let redis: Redis;
const extra: Redis[] = [];
let markRead: ScriptRunner;
let unreadCount: ScriptRunner;

beforeAll(async () => {
  let scripts: ScriptRegistry;
  ({ redis, scripts } = await luaConnection(prefix));
  markRead = scripts.get('markRead');
  unreadCount = scripts.get('unreadCount');
});

afterAll(async () => {
  await deletePrefixed(prefix);
  for (const r of extra) r.disconnect();
  redis?.disconnect();
});

/** [status, ownChanged, publicChanged, ownSeq] */
type MarkReply = [number, number, number, number];
/** [unread, ownSeq] */
type UnreadReply = [number, number];

const newRoomId = () => randomBytes(6).toString('hex');

/** A room whose latest seq is `lastSeq`, with the given members. */
async function seedRoom(lastSeq: number, members: string[]) {
  const roomId = newRoomId();
  await redis
    .multi()
    .hset(roomKeys.room(roomId), { id: roomId, name: 'r', visibility: 'PRIVATE', ownerId: members[0] ?? 'o', seq: lastSeq, epoch: EPOCH })
    .zadd(roomKeys.members(roomId), ...members.flatMap((m) => [0, m]))
    .exec();
  return roomId;
}

const markKeys = markReadKeys;

/**
 * Calls markRead as the receipts service does, without a receipt window (ARGV[5] = 0), and returns
 * the first four replies; the window is tested on its own below.
 */
const mark = (roomId: string, userId: string, seq: number, isPrivate = false, epoch = EPOCH, runner = markRead) =>
  (runner(markKeys(roomId, userId), [userId, seq, isPrivate ? 1 : 0, epoch, 0]) as Promise<number[]>).then(
    (r) => r.slice(0, 4) as MarkReply,
  );

const unread = (roomId: string, userId: string) =>
  unreadCount(
    [roomKeys.room(roomId), receiptKeys.ownMarks(roomId), receiptKeys.deleted(roomId), roomKeys.members(roomId)],
    [userId],
  ) as Promise<UnreadReply>;

const publicMark = async (roomId: string, userId: string) => {
  const s = await redis.zscore(receiptKeys.publicMarks(roomId), userId);
  return s === null ? null : Number(s);
};
const ownMark = async (roomId: string, userId: string) => {
  const s = await redis.hget(receiptKeys.ownMarks(roomId), userId);
  return s === null ? null : Number(s);
};

const markDeleted = (roomId: string, ...seqs: number[]) =>
  redis.zadd(receiptKeys.deleted(roomId), ...seqs.flatMap((s) => [s, String(s)]));

describe('markRead', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND) and store nothing', async () => {
      const roomId = newRoomId();
      expect(await mark(roomId, 'alice', 1)).toEqual([1, 0, 0, 0]);
      expect(await redis.exists(receiptKeys.publicMarks(roomId), receiptKeys.ownMarks(roomId))).toBe(0);
    });
  });

  describe('when the user is not a member', () => {
    it('should answer status 2 (NOT_MEMBER) and store no watermark', async () => {
      const roomId = await seedRoom(3, ['owner']);
      expect(await mark(roomId, 'mallory', 2)).toEqual([2, 0, 0, 0]);
      expect(await publicMark(roomId, 'mallory')).toBeNull();
      expect(await ownMark(roomId, 'mallory')).toBeNull();
    });
  });

  describe('when the message id is from another history epoch', () => {
    it('should answer status 4 (MESSAGE_NOT_FOUND) and store nothing', async () => {
      const roomId = await seedRoom(3, ['owner', 'bob']);
      expect(await mark(roomId, 'bob', 2, false, 'E0')).toEqual([4, 0, 0, 0]);
      expect(await ownMark(roomId, 'bob')).toBeNull();
    });
  });

  describe('when the epoch is empty', () => {
    it('should skip the epoch check', async () => {
      const roomId = await seedRoom(3, ['owner', 'bob']);
      expect(await mark(roomId, 'bob', 2, false, '')).toEqual([0, 1, 1, 2]);
    });
  });

  describe('when the seq is beyond the room latest', () => {
    it('should answer status 4 (MESSAGE_NOT_FOUND) and store nothing', async () => {
      const roomId = await seedRoom(3, ['owner', 'bob']);
      expect(await mark(roomId, 'bob', 4)).toEqual([4, 0, 0, 0]);
      expect(await publicMark(roomId, 'bob')).toBeNull();
      expect(await ownMark(roomId, 'bob')).toBeNull();
    });
  });

  describe('when a member marks publicly', () => {
    it('should move both watermarks forward and never back', async () => {
      const roomId = await seedRoom(10, ['owner', 'bob']);
      expect(await mark(roomId, 'bob', 5)).toEqual([0, 1, 1, 5]);
      expect(await mark(roomId, 'bob', 3)).toEqual([0, 0, 0, 5]);
      expect(await mark(roomId, 'bob', 5)).toEqual([0, 0, 0, 5]);
      expect([await publicMark(roomId, 'bob'), await ownMark(roomId, 'bob')]).toEqual([5, 5]);
      expect(await mark(roomId, 'bob', 10)).toEqual([0, 1, 1, 10]);
      expect([await publicMark(roomId, 'bob'), await ownMark(roomId, 'bob')]).toEqual([10, 10]);
    });
  });

  describe('when a member marks privately', () => {
    it('should move only the own watermark, and a later public mark only the public one', async () => {
      const roomId = await seedRoom(10, ['owner', 'bob']);
      expect(await mark(roomId, 'bob', 7, true)).toEqual([0, 1, 0, 7]);
      expect(await publicMark(roomId, 'bob')).toBeNull();
      expect(await ownMark(roomId, 'bob')).toBe(7);
      // A public mark behind the private one: public moves, own stays (and is what is answered).
      expect(await mark(roomId, 'bob', 4)).toEqual([0, 0, 1, 7]);
      expect([await publicMark(roomId, 'bob'), await ownMark(roomId, 'bob')]).toEqual([4, 7]);
      // A private mark never moves the public watermark, even forward.
      expect(await mark(roomId, 'bob', 9, true)).toEqual([0, 1, 0, 9]);
      expect(await publicMark(roomId, 'bob')).toBe(4);
      expect(await mark(roomId, 'bob', 9)).toEqual([0, 0, 1, 9]);
      expect([await publicMark(roomId, 'bob'), await ownMark(roomId, 'bob')]).toEqual([9, 9]);
    });
  });

  describe('when many marks of one member race on one connection', () => {
    it('should end at the max, with exactly the forward moves reporting changed', async () => {
      const roomId = await seedRoom(50, ['owner', 'bob']);
      const seqs = [5, 2, 9, 1, 9, 7, 12, 3, 12, 40, 11, 39, 41, 8, 41, 20];
      const replies = await Promise.all(seqs.map((s) => mark(roomId, 'bob', s)));
      // One connection: Redis runs them in the order sent, so the forward moves are known exactly.
      let max = 0;
      const expected = seqs.map((s) => {
        const forward = s > max;
        max = Math.max(max, s);
        return [0, forward ? 1 : 0, forward ? 1 : 0, max];
      });
      expect(replies).toEqual(expected);
      expect([await publicMark(roomId, 'bob'), await ownMark(roomId, 'bob')]).toEqual([41, 41]);
    });
  });

  describe('when many marks of one member race on several connections', () => {
    it('should end at the max, and the watermarks answered should be exactly the seqs that moved it', async () => {
      const roomId = await seedRoom(100, ['owner', 'bob']);
      const runners = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const c = await luaConnection(prefix);
          extra.push(c.redis);
          return c.scripts.get('markRead');
        }),
      );
      const seqs = Array.from({ length: 60 }, (_, i) => ((i * 37) % 97) + 1);
      const replies = await Promise.all(
        seqs.map((s, i) => mark(roomId, 'bob', s, false, EPOCH, runners[i % runners.length] as ScriptRunner)),
      );
      const maxSeq = Math.max(...seqs);
      expect([await publicMark(roomId, 'bob'), await ownMark(roomId, 'bob')]).toEqual([maxSeq, maxSeq]);
      const changed = replies.filter((r) => r[1] === 1);
      replies.forEach((r, i) => {
        expect(r[0]).toBe(0);
        // own and public move together for public marks; a changed call answers its own seq,
        // an unchanged one a watermark at or past it.
        expect(r[2]).toBe(r[1]);
        if (r[1] === 1) expect(r[3]).toBe(seqs[i]);
        else expect(r[3]).toBeGreaterThanOrEqual(seqs[i] as number);
      });
      // Every watermark anyone saw was set by exactly one forward move, and no seq moved it twice.
      const seen = new Set(replies.map((r) => r[3]));
      expect(new Set(changed.map((r) => r[3]))).toEqual(seen);
      expect(changed.length).toBe(seen.size);
      expect(seen.has(maxSeq)).toBe(true);
    });
  });

  describe('when two members mark the same room', () => {
    it('should keep one watermark per member', async () => {
      const roomId = await seedRoom(10, ['owner', 'bob', 'carol']);
      await Promise.all([mark(roomId, 'bob', 6), mark(roomId, 'carol', 2), mark(roomId, 'carol', 8, true)]);
      expect(await redis.zrange(receiptKeys.publicMarks(roomId), 0, -1, 'WITHSCORES')).toEqual(['carol', '2', 'bob', '6']);
      expect(await redis.hgetall(receiptKeys.ownMarks(roomId))).toEqual({ bob: '6', carol: '8' });
    });
  });
});

describe('unreadCount', () => {
  describe('when the user is not a member', () => {
    it('should answer 0 unread and no watermark', async () => {
      const roomId = await seedRoom(10, ['owner']);
      expect(await unread(roomId, 'mallory')).toEqual([0, 0]);
    });
  });

  describe('when the room does not exist', () => {
    it('should answer 0 unread', async () => {
      expect(await unread(newRoomId(), 'bob')).toEqual([0, 0]);
    });
  });

  describe('when a member has read nothing', () => {
    it('should count every message that is not deleted', async () => {
      const roomId = await seedRoom(10, ['owner', 'bob']);
      expect(await unread(roomId, 'bob')).toEqual([10, 0]);
      await markDeleted(roomId, 1, 5, 10);
      expect(await unread(roomId, 'bob')).toEqual([7, 0]);
    });
  });

  describe('when a member has a watermark and some messages are deleted', () => {
    it('should count only the messages after it that are not deleted', async () => {
      const roomId = await seedRoom(10, ['owner', 'bob']);
      await mark(roomId, 'bob', 3);
      expect(await unread(roomId, 'bob')).toEqual([7, 3]);
      // Deleted at or before the watermark: no change. After it (10 included): one less each.
      await markDeleted(roomId, 2, 3, 4, 7, 10);
      expect(await unread(roomId, 'bob')).toEqual([4, 3]);
    });
  });

  describe('when the watermark is private', () => {
    it('should count from the own watermark', async () => {
      const roomId = await seedRoom(10, ['owner', 'bob']);
      await mark(roomId, 'bob', 2);
      await mark(roomId, 'bob', 8, true);
      expect(await unread(roomId, 'bob')).toEqual([2, 8]);
    });
  });

  describe('when a member has read everything', () => {
    it('should answer 0 even with deletions after older watermarks', async () => {
      const roomId = await seedRoom(6, ['owner', 'bob']);
      await markDeleted(roomId, 5, 6);
      await mark(roomId, 'bob', 6);
      expect(await unread(roomId, 'bob')).toEqual([0, 6]);
      // The room grows: only the new message counts.
      await redis.hset(roomKeys.room(roomId), 'seq', 7);
      expect(await unread(roomId, 'bob')).toEqual([1, 6]);
    });
  });

  describe('when every message after the watermark is deleted', () => {
    it('should answer 0', async () => {
      const roomId = await seedRoom(5, ['owner', 'bob']);
      await mark(roomId, 'bob', 2);
      await markDeleted(roomId, 3, 4, 5);
      expect(await unread(roomId, 'bob')).toEqual([0, 2]);
    });
  });
});

describe('markRead receipt windows (ARGV[5])', () => {
  it('should let exactly one of many concurrent forward moves open the window', async () => {
    const roomId = await seedRoom(60, ['owner', 'bob']);
    const replies = (await Promise.all(
      Array.from({ length: 30 }, (_, i) => markRead(markKeys(roomId, 'bob'), ['bob', i + 1, 0, EPOCH, 2000])),
    )) as number[][];
    const opened = replies.filter((r) => r[4] === 1);
    expect(opened).toHaveLength(1);
    const ttl = await redis.pttl(receiptKeys.window(roomId, 'bob', false));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(2000);
  });

  it('should open no window when nothing moved, or when asked for none (0)', async () => {
    const roomId = await seedRoom(10, ['owner', 'bob']);
    expect(((await markRead(markKeys(roomId, 'bob'), ['bob', 5, 0, EPOCH, 0])) as number[])[4]).toBe(0);
    expect(await redis.exists(receiptKeys.window(roomId, 'bob', false))).toBe(0);
    expect(((await markRead(markKeys(roomId, 'bob'), ['bob', 3, 0, EPOCH, 1000])) as number[])[4]).toBe(0);
  });
});
