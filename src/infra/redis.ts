import { Redis, type ChainableCommander, type RedisOptions } from 'ioredis';
import type { Logger } from './logger.js';

/** The two Redis connections every instance holds. */
export interface RedisClients {
  /** Commands and scripts; fails fast while Redis is unreachable (no offline queue). */
  command: Redis;
  /** Pub/sub only (a subscribed connection cannot run other commands). */
  subscriber: Redis;
  /** Closes both connections. */
  close(): Promise<void>;
}

/** Options for {@link createRedisClients}. */
export interface RedisClientOptions {
  url: string;
  keyPrefix: string;
  commandTimeoutMs: number;
  logger: Logger;
}

const retryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1000);

/**
 * Opens the command and subscriber connections. Commands never queue while Redis is away, so a
 * caller gets an error at once (mapped to `UNAVAILABLE`) instead of hanging; a command sent to a
 * Redis that stopped answering times out after `commandTimeoutMs`.
 */
export function createRedisClients(opts: RedisClientOptions): RedisClients {
  const base: RedisOptions = {
    lazyConnect: false,
    connectTimeout: Math.max(opts.commandTimeoutMs, 1000),
    retryStrategy,
    maxRetriesPerRequest: 1,
  };
  const command = new Redis(opts.url, {
    ...base,
    keyPrefix: opts.keyPrefix,
    enableOfflineQueue: false,
    commandTimeout: opts.commandTimeoutMs,
    connectionName: 'switchboard:cmd',
  });
  // ioredis #2037: a SUBSCRIBE sent during the ready check is silently lost, so no ready check.
  // Channels are not keys: keyPrefix does not apply to them, pubsub.ts prefixes them itself.
  const subscriber = new Redis(opts.url, {
    ...base,
    enableReadyCheck: false,
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
    autoResubscribe: true,
    connectionName: 'switchboard:sub',
  });
  let lastLogged = 0;
  const onError = (which: string) => (err: Error) => {
    // A reconnect loop would log the same error every 50 ms: once a second is enough.
    if (Date.now() - lastLogged > 1000) {
      lastLogged = Date.now();
      opts.logger.warn({ err: err.message, connection: which }, 'redis connection error');
    }
  };
  command.on('error', onError('command'));
  subscriber.on('error', onError('subscriber'));
  return {
    command,
    subscriber,
    async close() {
      await Promise.allSettled([command.quit(), subscriber.quit()]);
      command.disconnect();
      subscriber.disconnect();
    },
  };
}

/** Resolves when the client is ready, or rejects after `timeoutMs`. */
export function waitReady(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new Error(`Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}

/** Runs a pipeline or MULTI and returns its replies, throwing the first command error. */
export async function execPipeline(pipeline: ChainableCommander): Promise<unknown[]> {
  const results = await pipeline.exec();
  if (!results) throw new Error('Redis transaction aborted');
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
