import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadScripts, type ScriptRegistry, type ScriptRunner } from '../../src/infra/scripts.js';
import { rateLimitKeys } from '../../src/ratelimit/ratelimit.keys.js';
import { createRateLimitService } from '../../src/ratelimit/ratelimit.service.js';
import { LUA_DIRS } from '../../src/services.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The sliding-window-log script, called directly: what it admits and records, how long a refused
 * caller must wait, its key's TTL, all-or-nothing multi-hit requests, and races between concurrent
 * calls (which any number of instances produce).
 */

const T0 = 1_767_225_600_000;
const prefix = uniquePrefix('ratelimit-lua');
let redis: Redis;
let scripts: ScriptRegistry;
let rateLimit: ScriptRunner;

/** [admitted, remaining, retryAfterMs, resetMs] */
type Reply = [number, number, number, number];

beforeAll(async () => {
  ({ redis, scripts } = await luaConnection(prefix));
  rateLimit = scripts.get('rateLimit');
});

afterAll(async () => {
  await deletePrefixed(prefix);
  redis?.disconnect();
});

const newKey = () => rateLimitKeys.hits(`u:${randomBytes(4).toString('hex')}`, 'sendMessage');
const requestId = () => randomBytes(6).toString('hex');

/** One check as the service makes it. */
const check = (key: string, now: number, windowMs: number, max: number, hits = 1, id = requestId()) =>
  rateLimit([key], [now, windowMs, max, hits, id]) as Promise<Reply>;

describe('rateLimit', () => {
  describe('when the window has room', () => {
    it('should admit, record one entry per hit at `now`, and count down remaining', async () => {
      const key = newKey();
      expect(await check(key, T0, 10_000, 3)).toEqual([1, 2, 0, 10_000]);
      expect(await check(key, T0 + 100, 10_000, 3, 2)).toEqual([1, 0, 0, 9_900]);
      const entries = await redis.zrange(key, 0, -1, 'WITHSCORES');
      expect(entries.filter((_, i) => i % 2 === 1)).toEqual([String(T0), String(T0 + 100), String(T0 + 100)]);
    });
  });

  describe('when the window is full', () => {
    it('should refuse, record nothing, and give retryAfter until the oldest entry leaves', async () => {
      const key = newKey();
      await check(key, T0, 10_000, 3);
      await check(key, T0 + 1000, 10_000, 3);
      await check(key, T0 + 2000, 10_000, 3);
      expect(await check(key, T0 + 4000, 10_000, 3)).toEqual([0, 0, 6000, 6000]);
      expect(await redis.zcard(key)).toBe(3);
    });

    it('should compute retryAfter from the oldest entry a multi-hit request needs gone', async () => {
      const key = newKey();
      await check(key, T0, 10_000, 3);
      await check(key, T0 + 1000, 10_000, 3);
      await check(key, T0 + 2000, 10_000, 3);
      // 2 hits need the two oldest gone: the second oldest (T0 + 1000) leaves at T0 + 11000.
      expect(await check(key, T0 + 4000, 10_000, 3, 2)).toEqual([0, 0, 7000, 6000]);
      // 3 hits need all three gone: the newest (T0 + 2000) leaves at T0 + 12000.
      expect(await check(key, T0 + 4000, 10_000, 3, 3)).toEqual([0, 0, 8000, 6000]);
    });

    it('should admit exactly when the retryAfter it gave has passed, and not a millisecond before', async () => {
      const key = newKey();
      await check(key, T0, 2000, 2);
      await check(key, T0 + 500, 2000, 2);
      const [admitted, , retryAfterMs] = await check(key, T0 + 800, 2000, 2);
      expect([admitted, retryAfterMs]).toEqual([0, 1200]);
      expect((await check(key, T0 + 800 + retryAfterMs - 1, 2000, 2))[0]).toBe(0);
      expect((await check(key, T0 + 800 + retryAfterMs, 2000, 2))[0]).toBe(1);
    });
  });

  describe('when the window slides', () => {
    it('should admit as many new hits as old ones aged out, not reset at a fixed boundary', async () => {
      const key = newKey();
      const W = 2000;
      // 2 hits at T0, 3 at T0 + 1000: full (5/2s).
      expect((await check(key, T0, W, 5, 2))[0]).toBe(1);
      expect((await check(key, T0 + 1000, W, 5, 3))[0]).toBe(1);
      expect((await check(key, T0 + 1500, W, 5))[0]).toBe(0);
      // At T0 + 2000 the first 2 have aged out: exactly 2 are admitted.
      expect(await check(key, T0 + W, W, 5)).toEqual([1, 1, 0, 1000]);
      expect(await check(key, T0 + W, W, 5)).toEqual([1, 0, 0, 1000]);
      expect((await check(key, T0 + W + 10, W, 5))[0]).toBe(0);
      // At T0 + 3000 the other 3 have aged out: exactly 3 more.
      for (let i = 0; i < 3; i++) expect((await check(key, T0 + 1000 + W, W, 5))[0]).toBe(1);
      expect((await check(key, T0 + 1000 + W, W, 5))[0]).toBe(0);
      expect(await redis.zcard(key)).toBe(5);
    });
  });

  describe('when a request asks for more hits than the limit', () => {
    it('should refuse with retryAfter = the whole window and record nothing', async () => {
      const key = newKey();
      expect(await check(key, T0, 5000, 5, 6)).toEqual([0, 5, 5000, 5000]);
      expect(await redis.exists(key)).toBe(0);
      await check(key, T0, 5000, 5, 2);
      expect(await check(key, T0 + 1000, 5000, 5, 10)).toEqual([0, 3, 5000, 4000]);
      expect(await redis.zcard(key)).toBe(2);
    });
  });

  describe('when a multi-hit request does not fit whole', () => {
    it('should record none of its hits (all or nothing)', async () => {
      const key = newKey();
      expect((await check(key, T0, 60_000, 5, 3))[0]).toBe(1);
      expect(await check(key, T0 + 1, 60_000, 5, 3)).toEqual([0, 2, 60_000 - 1, 60_000 - 1]);
      expect(await redis.zcard(key)).toBe(3);
      expect(await check(key, T0 + 2, 60_000, 5, 2)).toEqual([1, 0, 0, 60_000 - 2]);
      expect(await redis.zcard(key)).toBe(5);
    });

    it('should keep the hits of two requests apart even when they share `now`', async () => {
      const key = newKey();
      await check(key, T0, 60_000, 10, 3, 'same-id-a');
      await check(key, T0, 60_000, 10, 3, 'same-id-b');
      expect(await redis.zcard(key)).toBe(6);
    });
  });

  describe('when the key is written', () => {
    it('should expire with the window', async () => {
      const key = newKey();
      await check(key, Date.now(), 60_000, 5);
      const ttl = await redis.pttl(key);
      expect(ttl).toBeGreaterThan(59_000);
      expect(ttl).toBeLessThanOrEqual(60_000);
    });

    it('should push the expiry forward with each admitted hit and leave it alone on refusals', async () => {
      const key = newKey();
      await check(key, T0, 30_000, 1);
      await redis.pexpire(key, 5000);
      await check(key, T0 + 1, 30_000, 1);
      expect(await redis.pttl(key)).toBeLessThanOrEqual(5000);
      const other = newKey();
      await check(other, T0, 30_000, 5);
      await redis.pexpire(other, 5000);
      await check(other, T0 + 1, 30_000, 5);
      expect(await redis.pttl(other)).toBeGreaterThan(29_000);
    });
  });

  describe('when 100 checks race for a limit of 10', () => {
    it('should admit exactly 10', async () => {
      const key = newKey();
      const replies = await Promise.all(Array.from({ length: 100 }, () => check(key, T0, 10_000, 10)));
      expect(replies.filter(([admitted]) => admitted === 1)).toHaveLength(10);
      expect(replies.filter(([admitted]) => admitted === 0).every(([, remaining, retry]) => remaining === 0 && retry === 10_000)).toBe(true);
      expect(await redis.zcard(key)).toBe(10);
    });

    it('should admit exactly 10 across separate connections (instances)', async () => {
      const key = newKey();
      const conns = await Promise.all(Array.from({ length: 4 }, () => luaConnection(prefix)));
      try {
        const runners = conns.map((c) => c.scripts.get('rateLimit'));
        const replies = (await Promise.all(
          Array.from({ length: 100 }, (_, i) => runners[i % runners.length]!([key], [T0 + (i % 7), 10_000, 10, 1, requestId()])),
        )) as Reply[];
        expect(replies.filter(([admitted]) => admitted === 1)).toHaveLength(10);
        expect(await redis.zcard(key)).toBe(10);
      } finally {
        conns.forEach((c) => c.redis.disconnect());
      }
    });

    it('should admit whole multi-hit requests only, never more hits than the limit', async () => {
      const key = newKey();
      const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => check(key, T0, 10_000, 10, 1 + (i % 3))));
      const admittedHits = replies.reduce((sum, [admitted], i) => sum + (admitted === 1 ? 1 + (i % 3) : 0), 0);
      expect(admittedHits).toBeLessThanOrEqual(10);
      expect(await redis.zcard(key)).toBe(admittedHits);
    });
  });
});

describe('the rate limit service', () => {
  it('should check every scope of a request in one call and answer each', async () => {
    let now = T0;
    const service = createRateLimitService({ redis, scripts, clock: { now: () => now } });
    const identity = `u:${randomBytes(4).toString('hex')}`;
    const checks = [
      { scope: 'sendMessage', limit: { max: 3, windowMs: 10_000 }, hits: 2 },
      { scope: '*', limit: { max: 100, windowMs: 60_000 }, hits: 1 },
    ];
    expect(await service.check(identity, checks)).toEqual([
      { scope: 'sendMessage', limit: checks[0]!.limit, admitted: true, remaining: 1, retryAfterMs: 0, resetMs: 10_000 },
      { scope: '*', limit: checks[1]!.limit, admitted: true, remaining: 99, retryAfterMs: 0, resetMs: 60_000 },
    ]);
    now += 1000;
    const [send, star] = await service.check(identity, checks);
    expect(send).toMatchObject({ admitted: false, remaining: 1, retryAfterMs: 9000, resetMs: 9000 });
    expect(star).toMatchObject({ admitted: true, remaining: 98 });
    expect(await redis.zcard(rateLimitKeys.hits(identity, 'sendMessage'))).toBe(2);
    expect(await service.check(identity, [])).toEqual([]);
  });

  it('should reject (never admit) when Redis cannot answer', async () => {
    const dead = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      const service = createRateLimitService({ redis: dead, scripts: loadScripts(dead, LUA_DIRS), clock: { now: () => T0 } });
      await expect(service.check('u:x', [{ scope: 's', limit: { max: 1, windowMs: 1000 }, hits: 1 }])).rejects.toThrow();
    } finally {
      dead.disconnect();
    }
  });
});
