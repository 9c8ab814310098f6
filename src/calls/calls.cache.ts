import type { CacheService } from '../cache/cache.service.js';

/** What the calls domain needs of a cache: a value loaded once cluster-wide, kept `ttlMs`. */
export interface SharedCache {
  getOrLoad<T>(key: string, ttlMs: number, loader: () => Promise<T>): Promise<T>;
}

/**
 * The general cache service in the calls domain's terms: brief (milliseconds), never null, and
 * single-flight across instances (one LiveKit request per room per moment, see cache.service.ts).
 */
export function participantsCache(cache: CacheService, lockMs: number): SharedCache {
  return {
    async getOrLoad<T>(key: string, ttlMs: number, loader: () => Promise<T>): Promise<T> {
      const value = await cache.getOrLoad<T>(key, ttlMs / 1000, loader, { lockMs });
      if (value === null) throw new Error(`the cached value of ${key} is missing`);
      return value;
    },
  };
}
