import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { ScriptRegistry } from '../infra/scripts.js';

/**
 * A brief cache in Redis with single-flight across instances: while one caller loads a key, every
 * other caller, on any instance, waits for its result instead of loading too.
 *
 * Stand-in for the general cache service being built on another branch: the same `getOrLoad(key,
 * ttl, loader)` shape, so the calls service switches to it by handing that service in instead.
 */
export interface SharedCache {
  /** The cached value of `key`, or the loader's (cached for `ttlMs`), loaded once at a time cluster-wide. */
  getOrLoad<T>(key: string, ttlMs: number, loader: () => Promise<T>): Promise<T>;
}

/** Dependencies of {@link createSharedCache}. */
export interface SharedCacheDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  /** How long a loader may hold a key's lock (then another caller may load). */
  lockMs: number;
  /** How long a caller waits for another's load before giving up. */
  waitMs: number;
}

const POLL_MS = 20;

/** Creates the cache: values are JSON under `key`, the fill lock is `<key>:lock` (SET NX PX). */
export function createSharedCache({ redis, scripts, lockMs, waitMs }: SharedCacheDeps): SharedCache {
  const release = scripts.get('releaseCacheLock');
  // One load per key per instance; the lock makes it one per cluster.
  const inFlight = new Map<string, Promise<unknown>>();

  async function load<T>(key: string, ttlMs: number, loader: () => Promise<T>): Promise<T> {
    const lockKey = `${key}:lock`;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const cached = await redis.get(key);
      if (cached !== null) return JSON.parse(cached) as T;
      const token = randomBytes(8).toString('hex');
      if (await redis.set(lockKey, token, 'PX', lockMs, 'NX')) {
        try {
          const value = await loader();
          await redis.set(key, JSON.stringify(value), 'PX', ttlMs);
          return value;
        } finally {
          // A failed load frees the key at once: a waiting caller loads instead.
          await release([lockKey], [token]).catch(() => undefined);
        }
      }
      if (Date.now() >= deadline) throw new Error(`timed out waiting for another instance to load ${key}`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  return {
    getOrLoad<T>(key: string, ttlMs: number, loader: () => Promise<T>): Promise<T> {
      const running = inFlight.get(key);
      if (running) return running as Promise<T>;
      const promise = load(key, ttlMs, loader).finally(() => inFlight.delete(key));
      inFlight.set(key, promise);
      return promise;
    },
  };
}
