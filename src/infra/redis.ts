import { AsyncLocalStorage } from 'node:async_hooks';
import type { Socket } from 'node:net';
import { Redis, type ChainableCommander, type RedisOptions } from 'ioredis';
import { pipelineOf, sendingBatch } from './direct-pipeline.js';
import type { Logger } from './logger.js';

/** The two Redis connections every instance holds. */
export interface RedisClients {
  /** Commands and scripts; fails fast while Redis is unreachable (no offline queue). */
  command: Redis;
  /** Pub/sub only (a subscribed connection cannot run other commands). */
  subscriber: Redis;
  /** Sends the command connection's writes of this turn now (see {@link coalesceWrites}). */
  flushCommands(): void;
  /** Closes both connections. */
  close(): Promise<void>;
}

/** Options for {@link createRedisClients}. */
export interface RedisClientOptions {
  url: string;
  keyPrefix: string;
  commandTimeoutMs: number;
  logger: Logger;
  /** Count the commands of traced operations (see {@link redisTrace}); off in production. */
  traceRoundTrips?: boolean;
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
  if (opts.traceRoundTrips) traceRoundTrips(command);
  const flushCommands = coalesceWrites(command);
  logErrors(command, 'command', opts.logger);
  logErrors(subscriber, 'subscriber', opts.logger);
  return {
    command,
    subscriber,
    flushCommands,
    async close() {
      await Promise.all([closeConnection(command), closeConnection(subscriber)]);
    },
  };
}

/**
 * Closes a connection: QUIT (its replies in flight arrive first) when it is up, bounded by
 * `graceMs`, then disconnect. A connection that is not up disconnects at once: QUIT would queue
 * on a connection with an offline queue (the subscriber, bullmq's) and wait for Redis to come
 * back, so a shutdown during an outage would never end.
 */
export async function closeConnection(client: Redis, graceMs = 1000): Promise<void> {
  if (client.status === 'ready') await settlesWithin(client.quit(), graceMs);
  client.disconnect();
}

/**
 * Waits for `p` to settle (fulfilled or rejected), but `ms` at most: true when it settled in time.
 * Wherever a promise is waited for only so long: shutdown steps that may wait on Redis forever
 * (offline queues) move on after a bound; requests that wait on it answer `UNAVAILABLE` after one.
 */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = p.then(
    () => true,
    () => true,
  );
  try {
    return await Promise.race([settled, new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const COALESCING = Symbol('switchboard.coalescing');

/**
 * Sends everything a connection writes in one turn of the event loop in one write: the socket is
 * corked at its first write and uncorked at the end of the turn (setImmediate). Commands keep their
 * order and their replies; what changes is the number of syscalls: on loopback each write cost
 * about 25 µs of CPU, and a request issued several (the user's touch, its script, its hooks'
 * pipeline, its PUBLISH), as did concurrent requests. Applied again to each new socket (reconnects).
 * Returns `flush()`, which sends what is corked at once: the server calls it before it answers a
 * request, so a write the request did not wait for (the user's touch, a PUBLISH) still reaches
 * Redis before the client can act on the answer.
 */
export function coalesceWrites(client: Redis): () => void {
  let flushNow = () => undefined as void;
  const patch = () => {
    const stream = (client as unknown as { stream?: Socket & { [COALESCING]?: true } }).stream;
    if (!stream || stream[COALESCING]) return;
    stream[COALESCING] = true;
    let corked = false;
    const uncork = () => {
      if (!corked) return;
      corked = false;
      stream.uncork();
    };
    const write = stream.write;
    stream.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
      if (!corked && !stream.destroyed) {
        corked = true;
        stream.cork();
        setImmediate(uncork);
      }
      return write.apply(this, args);
    } as Socket['write'];
    flushNow = uncork;
  };
  client.on('connect', patch);
  patch();
  return () => flushNow();
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

/** What one traced operation sent to Redis: a pipeline (or MULTI) is one round trip. */
export interface RedisTrace {
  roundTrips: number;
  commands: number;
  /** Cache reads of the operation answered from the cache, and those that had to load. */
  cache: { hits: number; misses: number };
  /** What the operation sent without waiting for it (see {@link unawaited}), counted apart. */
  unawaited: { roundTrips: number; commands: number; pipelines: WeakSet<object> };
  /** The pipelines already counted (ioredis hands each of their commands the same stream object). */
  pipelines: WeakSet<object>;
}

/**
 * The operation a Redis command is sent for. Only debugged operations run inside it
 * (`X-Debug-Redis: 1`, never in production), so everything else pays one `getStore()` per command.
 */
export const redisTrace = new AsyncLocalStorage<RedisTrace>();

/** A fresh, empty trace. */
export const newTrace = (): RedisTrace => ({
  roundTrips: 0,
  commands: 0,
  cache: { hits: 0, misses: 0 },
  unawaited: { roundTrips: 0, commands: 0, pipelines: new WeakSet() },
  pipelines: new WeakSet(),
});

/**
 * Runs one operation inside a fresh trace. While no traced operation is in flight, the
 * AsyncLocalStorages are disabled again, so the async hooks they need cost nothing afterwards.
 */
let tracedInFlight = 0;
export async function traced<T>(fn: () => T | Promise<T>): Promise<T> {
  tracedInFlight++;
  try {
    return await redisTrace.run(newTrace(), fn);
  } finally {
    if (--tracedInFlight === 0) {
      redisTrace.disable();
      unawaitedWork.disable();
    }
  }
}

/** Marks the traced work that runs inside `fn` as not awaited by the operation. */
const unawaitedWork = new AsyncLocalStorage<true>();

/**
 * Runs work the operation sends but does not wait for (the write of the viewer's user): in a
 * trace, its commands count under `unawaited`, apart from the operation's round trips.
 */
export const unawaited = <T>(fn: () => T): T => (redisTrace.getStore() ? unawaitedWork.run(true, fn) : fn());

/**
 * Wraps the connection's `sendCommand` once, attributing each command to the trace of the async
 * context that sent it. A pipeline's commands share one stream object, a direct pipeline's are sent
 * while it is `sendingBatch()`: its first command counts the round trip. A script retried after
 * NOSCRIPT counts twice, as it costs.
 */
export function traceRoundTrips(client: Redis): void {
  const send = client.sendCommand.bind(client);
  client.sendCommand = (command, stream) => {
    const store = redisTrace.getStore();
    if (store) {
      const trace = unawaitedWork.getStore() ? store.unawaited : store;
      trace.commands++;
      const pipeline = (stream as { isPipeline?: boolean } | undefined)?.isPipeline ? (stream as object) : sendingBatch();
      if (!pipeline) trace.roundTrips++;
      else if (!trace.pipelines.has(pipeline)) {
        trace.pipelines.add(pipeline);
        trace.roundTrips++;
      }
    }
    return send(command, stream);
  };
}

/**
 * Commands added to a pipeline, and how to read their replies: services offer their batch reads in
 * this shape so that one operation's loaders can share one pipeline per tick (see `PipelineBatch`).
 */
export type PipelineRead<T> = (pipeline: ChainableCommander) => (replies: unknown[]) => T;

/** Runs a read on a pipeline of its own: one round trip. */
export async function runRead<T>(redis: Redis, read: PipelineRead<T>): Promise<T> {
  const pipeline = pipelineOf(redis);
  const parse = read(pipeline);
  return parse(pipeline.length > 0 ? await execPipeline(pipeline) : []);
}
