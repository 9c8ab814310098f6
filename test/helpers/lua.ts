import { Redis } from 'ioredis';
import { loadScripts, type ScriptRegistry } from '../../src/infra/scripts.js';
import { LUA_DIRS } from '../../src/services.js';
import { sharedRedisUrl } from './server.js';

/** A connection to the shared test Redis whose keys all carry one prefix, with every domain's Lua scripts on it. */
export interface LuaConnection {
  redis: Redis;
  scripts: ScriptRegistry;
}

/**
 * Connects to the shared test Redis with `keyPrefix: prefix` and loads every script of LUA_DIRS
 * (src/services.ts) on it. Scripts are defined per client: each connection gets its own registry.
 */
export async function luaConnection(prefix: string): Promise<LuaConnection> {
  const redis = new Redis(sharedRedisUrl(), { keyPrefix: prefix, lazyConnect: true });
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  return { redis, scripts: loadScripts(redis, LUA_DIRS) };
}

/** Removes every key under `prefix` from the shared test Redis (its own unprefixed connection). */
export async function deletePrefixed(prefix: string): Promise<void> {
  // SCAN patterns are not prefixed by ioredis, and the keys it returns carry the prefix.
  const admin = new Redis(sharedRedisUrl());
  try {
    for await (const keys of admin.scanStream({ match: `${prefix}*`, count: 500 })) {
      if ((keys as string[]).length > 0) await admin.unlink(...(keys as string[]));
    }
  } finally {
    admin.disconnect();
  }
}
