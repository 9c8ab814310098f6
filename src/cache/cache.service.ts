import { randomBytes } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { ChainableCommander, Redis } from 'ioredis';
import type { Clock } from '../infra/clock.js';
import type { Logger } from '../infra/logger.js';
import { redisTrace } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { cacheKeys as keys } from './cache.keys.js';
import { pipelineOf } from '../infra/direct-pipeline.js';
import type { DeferredCommands } from '../infra/deferred-commands.js';

/** Dependencies of {@link createCacheService}. */
export interface CacheServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  clock: Clock;
  logger: Logger;
  /** Encoded values above this many bytes are not stored (the loader's value is still returned). */
  maxValueBytes: number;
}

/** What an entry depends on, and how it behaves when missing or stale. */
export interface CacheOptions {
  /** Namespaces whose version is part of the entry's identity: `bump(ns)` invalidates it. */
  namespaces?: readonly string[];
  /**
   * A Redis set whose members, each prefixed with `prefix`, are namespaces too (a viewer's rooms:
   * `{ key: userKeys.rooms(id), prefix: 'search:' }`). A change of the set is a different entry.
   */
  namespaceSet?: { key: string; prefix: string };
  /** How long a null/undefined from the loader is remembered (default: the TTL, at most 10 s). */
  negativeTtlSeconds?: number;
  /** After its TTL, how long an entry may still be served while one caller refreshes it (default 0). */
  staleSeconds?: number;
  /** How long a loader may hold the entry's lock before others load too (default 3 s). */
  lockMs?: number;
}

/** What the loader learns from the read: the members of `namespaceSet`, sorted. */
export interface LoadInfo {
  members: string[];
}

/** Counters since start-up, per instance. */
export interface CacheStats {
  hits: number;
  staleHits: number;
  misses: number;
  loads: number;
  negativeHits: number;
  /** Values too large to store. */
  oversize: number;
  /** Misses that waited for another instance's load. */
  waits: number;
  errors: number;
}

/** The read-through cache (see {@link createCacheService}). */
export type CacheService = ReturnType<typeof createCacheService>;

const FRESH_DIGITS = 13;
/** Codec bytes: JSON as is, JSON deflated, and a remembered null. */
const CODEC = { json: 0x6a, deflate: 0x7a, none: 0x6e } as const;
/** JSON above this size is deflated (when that makes it smaller). */
const DEFLATE_ABOVE_BYTES = 512;
const WAIT_POLL_MS = 20;

const enum State {
  Missing = 0,
  Fresh = 1,
  StaleLocked = 2,
  StaleElsewhere = 3,
  MissingElsewhere = 4,
}

/** Encodes an entry: freshUntil, codec byte, payload. */
export function encodeEntry(value: unknown, freshUntil: number): Buffer {
  const head = Buffer.from(String(Math.floor(freshUntil)).padStart(FRESH_DIGITS, '0'));
  if (value === null || value === undefined) return Buffer.concat([head, Buffer.from([CODEC.none])]);
  const json = Buffer.from(JSON.stringify(value));
  if (json.length > DEFLATE_ABOVE_BYTES) {
    const deflated = deflateRawSync(json);
    if (deflated.length < json.length) return Buffer.concat([head, Buffer.from([CODEC.deflate]), deflated]);
  }
  return Buffer.concat([head, Buffer.from([CODEC.json]), json]);
}

/** Decodes an entry; null for a remembered null; throws on a malformed one. */
export function decodeEntry<T>(entry: Buffer): T | null {
  const codec = entry[FRESH_DIGITS];
  const payload = entry.subarray(FRESH_DIGITS + 1);
  if (codec === CODEC.none) return null;
  if (codec === CODEC.json) return JSON.parse(payload.toString('utf8')) as T;
  if (codec === CODEC.deflate) return JSON.parse(inflateRawSync(payload).toString('utf8')) as T;
  throw new Error(`unknown cache codec ${codec}`);
}

/**
 * Creates the read-through cache. `getOrLoad` reads an entry in one round trip (one script: the
 * namespaces' versions, the entry, and the load lock when it is missing or stale). Concurrent
 * misses of one key on one instance share one load; across instances the first miss takes a short
 * Redis lock and the others wait for its value (or serve the stale one while it refreshes).
 * Entries are named by their namespaces' versions, so `bump(namespace)` invalidates every entry of
 * that namespace in O(1), with no scan and no race: a load that read old data stores it under the
 * old versions, where nobody looks any more. Values are JSON, deflated above 512 bytes, and not
 * stored above `maxValueBytes`.
 *
 * To cache something new (LiveKit participants, say): pick a key and the namespaces whose change
 * must invalidate it, call `getOrLoad(key, ttl, load, { namespaces: ['call:' + roomId] })`, and
 * `bumpInPipeline(pipeline, 'call:' + roomId)` wherever the data changes.
 */
export function createCacheService(deps: CacheServiceDeps) {
  const { redis, scripts, clock, logger, maxValueBytes } = deps;
  const readScript = scripts.getBuffer('cacheRead');
  const writeScript = scripts.get('cacheWrite');
  const stats: CacheStats = { hits: 0, staleHits: 0, misses: 0, loads: 0, negativeHits: 0, oversize: 0, waits: 0, errors: 0 };
  /** In-flight reads and loads on this instance, by key and namespaces. */
  const inflight = new Map<string, Promise<unknown>>();

  /** Counts a hit or miss for this instance and, when traced, for the operation. */
  function count(hit: boolean): void {
    if (hit) stats.hits++;
    else stats.misses++;
    const trace = redisTrace.getStore();
    if (trace) trace.cache[hit ? 'hits' : 'misses']++;
  }

  async function store(digest: string, token: string, value: unknown, ttlSeconds: number, opts: CacheOptions): Promise<void> {
    const isNull = value === null || value === undefined;
    const freshMs = 1000 * (isNull ? (opts.negativeTtlSeconds ?? Math.min(ttlSeconds, 10)) : ttlSeconds);
    let entry: Buffer | string = encodeEntry(value, clock.now() + freshMs);
    if (entry.length > maxValueBytes) {
      stats.oversize++;
      entry = '';
    }
    const keepMs = Math.ceil(freshMs + 1000 * (opts.staleSeconds ?? 0));
    await writeScript([keys.entry(digest), keys.lock(digest)], [entry, keepMs, token]).catch((err: Error) => {
      stats.errors++;
      logger.warn({ err: err.message }, 'cache write failed');
    });
  }

  async function load<T>(
    digest: string,
    token: string,
    ttlSeconds: number,
    loader: (info: LoadInfo) => Promise<T | null | undefined>,
    info: LoadInfo,
    opts: CacheOptions,
  ): Promise<T | null> {
    stats.loads++;
    let value: T | null;
    try {
      value = (await loader(info)) ?? null;
    } catch (err) {
      // Nothing to store: let the next caller load at once instead of waiting out the lock.
      await writeScript([keys.entry(digest), keys.lock(digest)], ['', 0, token]).catch(() => undefined);
      throw err;
    }
    await store(digest, token, value, ttlSeconds, opts);
    return value;
  }

  /** Waits for another instance's load of a missing entry; null when it never came. */
  async function waitFor<T>(digest: string, lockMs: number): Promise<{ value: T | null } | null> {
    stats.waits++;
    for (let polls = Math.ceil(lockMs / WAIT_POLL_MS); polls > 0; polls--) {
      await new Promise((resolve) => setTimeout(resolve, WAIT_POLL_MS));
      const [entry, lock] = (await pipelineOf(redis).getBuffer(keys.entry(digest)).exists(keys.lock(digest)).exec()) ?? [];
      if (entry?.[1]) return { value: decodeEntry<T>(entry[1] as Buffer) };
      if (lock?.[1] === 0) return null; // the loader gave up (failed, or its value was too large)
    }
    return null;
  }

  async function readThrough<T>(
    key: string,
    ttlSeconds: number,
    loader: (info: LoadInfo) => Promise<T | null | undefined>,
    opts: CacheOptions,
  ): Promise<T | null> {
    const lockMs = opts.lockMs ?? 3000;
    const token = randomBytes(8).toString('hex');
    const set = opts.namespaceSet;
    const reply = (await readScript(
      [keys.versions(), keys.entryPrefix(), set?.key ?? keys.noSet()],
      [key, set?.prefix ?? '', lockMs, clock.now(), token, ...(opts.namespaces ?? [])],
    )) as [number, Buffer, Buffer, ...Buffer[]];
    const [state, digestBuf, entry] = reply;
    const digest = digestBuf.toString();
    const info: LoadInfo = { members: reply.slice(3).map((m) => m.toString()) };
    if (state === State.Fresh || state === State.StaleElsewhere || state === State.StaleLocked) {
      let value: T | null;
      try {
        value = decodeEntry<T>(entry);
      } catch (err) {
        // A malformed entry is a miss; ours to reload only if we hold the lock.
        stats.errors++;
        logger.warn({ err: (err as Error).message }, 'cache entry unreadable');
        count(false);
        return state === State.StaleLocked ? load(digest, token, ttlSeconds, loader, info, opts) : ((await loader(info)) ?? null);
      }
      count(true);
      if (state !== State.Fresh) stats.staleHits++;
      if (value === null) stats.negativeHits++;
      if (state === State.StaleLocked) {
        // Stale while revalidate: this caller refreshes it, nobody waits.
        load(digest, token, ttlSeconds, loader, info, opts).catch((err: Error) => {
          stats.errors++;
          logger.warn({ err: err.message }, 'cache refresh failed');
        });
      }
      return value;
    }
    count(false);
    if (state === State.MissingElsewhere) {
      const waited = await waitFor<T>(digest, lockMs);
      if (waited) return waited.value;
    }
    return load(digest, token, ttlSeconds, loader, info, opts);
  }

  return {
    /**
     * The value of `key`: from the cache while fresh, else from `loader` (stored for `ttlSeconds`;
     * a null or undefined is remembered as null for the negative TTL). The loader gets the members
     * of `opts.namespaceSet` as read with the versions, so it need not read them again.
     */
    getOrLoad<T>(
      key: string,
      ttlSeconds: number,
      loader: (info: LoadInfo) => Promise<T | null | undefined>,
      opts: CacheOptions = {},
    ): Promise<T | null> {
      const flightKey = JSON.stringify([key, opts.namespaces ?? [], opts.namespaceSet ?? null]);
      const running = inflight.get(flightKey);
      if (running) {
        count(true);
        return running as Promise<T | null>;
      }
      const promise = readThrough(key, ttlSeconds, loader, opts).finally(() => inflight.delete(flightKey));
      inflight.set(flightKey, promise);
      return promise;
    },

    /** Invalidates every entry that depends on `namespace`, in O(1). */
    async bump(namespace: string): Promise<void> {
      await redis.hincrby(keys.versions(), namespace, 1);
    },

    /** {@link bump} inside a write's pipeline (no round trip of its own). */
    bumpInPipeline(pipeline: ChainableCommander | DeferredCommands, namespace: string): void {
      pipeline.hincrby(keys.versions(), namespace, 1);
    },

    /** Hit, miss and load counters of this instance since start-up. */
    stats: (): CacheStats => ({ ...stats }),
  };
}
