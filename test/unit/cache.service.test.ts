import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheKeys } from '../../src/cache/cache.keys.js';
import { createCacheService, decodeEntry, encodeEntry, type CacheService } from '../../src/cache/cache.service.js';
import { createLogger } from '../../src/infra/logger.js';
import { newTrace, redisTrace, traceRoundTrips } from '../../src/infra/redis.js';
import type { ScriptRegistry } from '../../src/infra/scripts.js';
import { deferred } from '../helpers/clients.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uid, uniquePrefix } from '../helpers/server.js';

/**
 * The cache service on real Redis: read-through with TTL, negative caching, stampede protection on
 * one instance (one load per key) and across instances (the lock: one load in all), versioned
 * invalidation, namespaces from a Redis set, the size cap and compression, stale-while-revalidate,
 * a failed load, and the counters. Two services on two connections with one prefix are two
 * instances; their clocks are fake so freshness is decided without waiting.
 */

const prefix = uniquePrefix('cache-svc');
const logger = createLogger('silent', 'cache-test');
const connections: Redis[] = [];
let redis: Redis;
let scripts: ScriptRegistry;

/** A clock the test moves. */
const clock = { t: 1_800_000_000_000, now() { return this.t; } };

/** A cache instance on its own connection (another instance of the deployment), its round trips traced. */
async function instance(maxValueBytes = 256 * 1024): Promise<CacheService> {
  const c = await luaConnection(prefix);
  connections.push(c.redis);
  traceRoundTrips(c.redis);
  return createCacheService({ redis: c.redis, scripts: c.scripts, clock, logger, maxValueBytes });
}

beforeAll(async () => {
  ({ redis, scripts } = await luaConnection(prefix));
  connections.push(redis);
});
afterAll(async () => {
  await deletePrefixed(prefix);
  for (const c of connections) c.disconnect();
});

/** A loader that counts its calls and resolves when told (or at once). */
function countingLoader<T>(value: T, gate?: Promise<void>) {
  const loader = async () => {
    loader.calls++;
    if (gate) await gate;
    return value;
  };
  loader.calls = 0;
  return loader;
}

describe('when a key is read twice', () => {
  it('should load once and answer the second read from the cache', async () => {
    const cache = await instance();
    const key = uid('plain');
    const load = countingLoader({ rooms: ['a', 'b'] });
    expect(await cache.getOrLoad(key, 30, load)).toEqual({ rooms: ['a', 'b'] });
    expect(await cache.getOrLoad(key, 30, load)).toEqual({ rooms: ['a', 'b'] });
    expect(load.calls).toBe(1);
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 1, loads: 1 });
  });

  it('should load again once the TTL passed', async () => {
    const cache = await instance();
    const key = uid('ttl');
    const load = countingLoader('v');
    await cache.getOrLoad(key, 5, load);
    clock.t += 4_000;
    await cache.getOrLoad(key, 5, load);
    expect(load.calls).toBe(1);
    clock.t += 2_000;
    await cache.getOrLoad(key, 5, load);
    expect(load.calls).toBe(2);
  });
});

describe('when the loader finds nothing', () => {
  it('should remember the null for the negative TTL, then ask again', async () => {
    const cache = await instance();
    const key = uid('negative');
    const load = countingLoader(null);
    expect(await cache.getOrLoad(key, 60, load, { negativeTtlSeconds: 2 })).toBeNull();
    expect(await cache.getOrLoad(key, 60, load, { negativeTtlSeconds: 2 })).toBeNull();
    expect(load.calls).toBe(1);
    expect(cache.stats().negativeHits).toBe(1);
    clock.t += 2_001;
    await cache.getOrLoad(key, 60, load, { negativeTtlSeconds: 2 });
    expect(load.calls).toBe(2);
  });
});

describe('when many callers miss one key at once', () => {
  it('should load once per instance for concurrent calls on one instance', async () => {
    const cache = await instance();
    const key = uid('stampede');
    const gate = deferred<void>();
    const load = countingLoader('fresh', gate.promise);
    const calls = Array.from({ length: 20 }, () => cache.getOrLoad(key, 30, load));
    gate.resolve();
    expect(await Promise.all(calls)).toEqual(Array(20).fill('fresh'));
    expect(load.calls).toBe(1);
  });

  it('should load once in all across two instances (the second waits for the first one\'s value)', async () => {
    const [one, two] = [await instance(), await instance()];
    const key = uid('stampede-2');
    const gate = deferred<void>();
    const loadOne = countingLoader('from one', gate.promise);
    const loadTwo = countingLoader('from two', gate.promise);
    const first = one.getOrLoad(key, 30, loadOne);
    // The first instance holds the lock before the second reads.
    await new Promise((r) => setTimeout(r, 20));
    const others = Array.from({ length: 10 }, () => two.getOrLoad(key, 30, loadTwo));
    await new Promise((r) => setTimeout(r, 50));
    gate.resolve();
    const results = await Promise.all([first, ...others]);
    expect(loadOne.calls + loadTwo.calls).toBe(1);
    expect(new Set(results)).toEqual(new Set(['from one']));
    expect(two.stats().waits).toBe(1);
  });

  it('should let the others load at once when the lock holder fails', async () => {
    const [one, two] = [await instance(), await instance()];
    const key = uid('failed');
    const gate = deferred<void>();
    const failing = async () => {
      await gate.promise;
      throw new Error('storage hiccup');
    };
    const first = one.getOrLoad(key, 30, failing);
    await new Promise((r) => setTimeout(r, 20));
    const second = two.getOrLoad(key, 30, countingLoader('second'));
    gate.resolve();
    await expect(first).rejects.toThrow('storage hiccup');
    const started = Date.now();
    expect(await second).toBe('second');
    // Released at once, not after the lock's 3 s.
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('when a namespace is bumped', () => {
  it('should invalidate every entry of that namespace in one command, and no other', async () => {
    const cache = await instance();
    const [ns, other] = [uid('ns'), uid('ns-other')];
    const loadA = countingLoader('a');
    const loadB = countingLoader('b');
    const loadC = countingLoader('c');
    const read = () =>
      Promise.all([
        cache.getOrLoad('a', 60, loadA, { namespaces: [ns] }),
        cache.getOrLoad('b', 60, loadB, { namespaces: [ns, other] }),
        cache.getOrLoad('c', 60, loadC, { namespaces: [other] }),
      ]);
    await read();
    await read();
    expect([loadA.calls, loadB.calls, loadC.calls]).toEqual([1, 1, 1]);
    await cache.bump(ns);
    await read();
    expect([loadA.calls, loadB.calls, loadC.calls]).toEqual([2, 2, 1]);
    expect(await redis.hget(cacheKeys.versions(), ns)).toBe('1');
  });

  it('should take the namespaces of a set, and see a change of the set', async () => {
    const cache = await instance();
    const setKey = `rooms-of:${uid('viewer')}`;
    await redis.sadd(setKey, 'r2', 'r1');
    const seen: string[][] = [];
    const load = async ({ members }: { members: string[] }) => {
      seen.push(members);
      return members.length;
    };
    const opts = { namespaceSet: { key: setKey, prefix: 'p:' } };
    expect(await cache.getOrLoad('k', 60, load, opts)).toBe(2);
    expect(await cache.getOrLoad('k', 60, load, opts)).toBe(2);
    expect(seen).toEqual([['r1', 'r2']]);
    await cache.bump('p:r2');
    await cache.getOrLoad('k', 60, load, opts);
    await redis.sadd(setKey, 'r3');
    expect(await cache.getOrLoad('k', 60, load, opts)).toBe(3);
    expect(seen).toEqual([['r1', 'r2'], ['r1', 'r2'], ['r1', 'r2', 'r3']]);
  });
});

describe('when a value is large', () => {
  it('should store it deflated, and not at all above the cap (still returning it)', async () => {
    const cache = await instance(4096);
    const big = { text: 'repetitive '.repeat(300) };
    const load = countingLoader(big);
    const key = uid('big');
    expect(await cache.getOrLoad(key, 60, load)).toEqual(big);
    expect(await cache.getOrLoad(key, 60, load)).toEqual(big);
    expect(load.calls).toBe(1);

    // Random text barely deflates: about 6 KB stays above the 4 KB cap.
    const random = { text: randomBytes(6000).toString('base64') };
    const huge = countingLoader(random);
    const hugeKey = uid('huge');
    expect(await cache.getOrLoad(hugeKey, 60, huge)).toEqual(random);
    await cache.getOrLoad(hugeKey, 60, huge);
    expect(huge.calls).toBe(2);
    expect(cache.stats().oversize).toBe(2);
  });

  it('should round-trip values through the entry codec, deflating only when it pays', () => {
    const value = { text: 'abc '.repeat(1000), n: 1 };
    const entry = encodeEntry(value, 1_800_000_000_123);
    expect(entry.length).toBeLessThan(JSON.stringify(value).length / 10);
    expect(entry.subarray(0, 13).toString()).toBe('1800000000123');
    expect(decodeEntry(entry)).toEqual(value);
    expect(decodeEntry(encodeEntry({ a: 1 }, 0))).toEqual({ a: 1 });
    expect(decodeEntry(encodeEntry(null, 0))).toBeNull();
  });
});

describe('when an entry is stale within its stale window', () => {
  it('should serve it at once and refresh it once, in the background', async () => {
    const [one, two] = [await instance(), await instance()];
    const key = uid('swr');
    const opts = { staleSeconds: 60 };
    await one.getOrLoad(key, 1, countingLoader('old'), opts);
    clock.t += 1_500;
    const gate = deferred<void>();
    const refresh = countingLoader('new', gate.promise);
    const other = countingLoader('other');
    expect(await one.getOrLoad(key, 1, refresh, opts)).toBe('old');
    // Another instance meanwhile gets the stale value too, and loads nothing.
    expect(await two.getOrLoad(key, 1, other, opts)).toBe('old');
    gate.resolve();
    await new Promise((r) => setTimeout(r, 50));
    expect(await two.getOrLoad(key, 1, other, opts)).toBe('new');
    expect([refresh.calls, other.calls]).toEqual([1, 0]);
    expect(one.stats().staleHits).toBe(1);
  });
});

describe('when an operation is traced', () => {
  it('should count its hits and misses, and one round trip per read', async () => {
    const cache = await instance();
    const key = uid('traced');
    const trace = newTrace();
    await redisTrace.run(trace, async () => {
      await cache.getOrLoad(key, 60, countingLoader(1));
      await cache.getOrLoad(key, 60, countingLoader(1));
    });
    expect(trace.cache).toEqual({ hits: 1, misses: 1 });
    // Miss: read + write; hit: read.
    expect(trace.roundTrips).toBe(3);
  });
});

describe('when Redis holds an unreadable entry', () => {
  it('should treat it as a miss', async () => {
    const cache = await instance();
    const key = uid('corrupt');
    await cache.getOrLoad(key, 60, countingLoader('good'));
    const digests = await scripts.get('cacheRead')(
      [cacheKeys.versions(), cacheKeys.entryPrefix(), cacheKeys.noSet()],
      [key, '', 1000, clock.now(), 't'],
    );
    const digest = (digests as string[])[1] as string;
    await redis.set(cacheKeys.entry(digest), '9999999999999?garbage');
    const load = countingLoader('reloaded');
    expect(await cache.getOrLoad(key, 60, load)).toBe('reloaded');
    expect(cache.stats().errors).toBe(1);
  });
});
