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
  logErrors(command, 'command', opts.logger);
  logErrors(subscriber, 'subscriber', opts.logger);
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

/** Logs a connection's errors, at most once a second (a reconnect loop repeats one every 50 ms). */
function logErrors(client: Redis, which: string, logger: Logger): void {
  let lastLogged = 0;
  client.on('error', (err: Error) => {
    if (Date.now() - lastLogged > 1000) {
      lastLogged = Date.now();
      logger.warn({ err: err.message, connection: which }, 'redis connection error');
    }
  });
}

/**
 * A connection whose commands wait through an outage instead of failing (offline queue on, no
 * retry limit, no command timeout): for blocking reads, and for bullmq, whose workers need
 * `maxRetriesPerRequest: null`. Never for a request path: callers bound their own waits.
 */
export function createWaitingConnection(opts: { url: string; name: string; logger: Logger; keyPrefix?: string }): Redis {
  const client = new Redis(opts.url, {
    retryStrategy,
    maxRetriesPerRequest: null,
    enableOfflineQueue: true,
    connectionName: `switchboard:${opts.name}`,
    ...(opts.keyPrefix ? { keyPrefix: opts.keyPrefix } : {}),
  });
  logErrors(client, opts.name, opts.logger);
  return client;
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
