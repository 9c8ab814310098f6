import { afterEach } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { StreamItem } from '../../src/events/events.service.js';
import type { EventSink, SinkSource } from '../../src/infra/shared-execution.js';
import { systemClock } from '../../src/infra/clock.js';
import { createLogger } from '../../src/infra/logger.js';
import { waitReady } from '../../src/infra/redis.js';
import { wireServices, type Wiring } from '../../src/services.js';
import type { Viewer } from '../../src/users/users.models.js';
import { deferred, withTimeout } from './clients.js';
import { deletePrefixed } from './lua.js';
import { sharedRedisUrl, testEnv, uniquePrefix } from './server.js';

/** Services wired on the shared test Redis as an instance wires them, under their own key prefix. */
export interface TestWiring extends Wiring {
  prefix: string;
  close(): Promise<void>;
}

const wirings: TestWiring[] = [];
afterEach(async () => {
  await Promise.all(wirings.splice(0).map((w) => w.close()));
});

/**
 * Wires services for a service test (closed after each test, keys removed). The periodic position
 * check is off unless asked for, so it cannot hide a bug in the other paths.
 */
export async function wire(
  opts: {
    bufferSize?: number;
    positionCheckMs?: number;
    retention?: number;
    env?: Record<string, string>;
    /** Give two wirings one prefix to make them two instances of one deployment. */
    prefix?: string;
  } = {},
): Promise<TestWiring> {
  const prefix = opts.prefix ?? uniquePrefix('svc');
  const config = loadConfig(
    testEnv({
      REDIS_KEY_PREFIX: prefix,
      SUBSCRIPTION_BUFFER_SIZE: String(opts.bufferSize ?? 1000),
      POSITION_CHECK_INTERVAL_MS: String(opts.positionCheckMs ?? 0),
      HISTORY_RETENTION_MESSAGES: String(opts.retention ?? 0),
      ...opts.env,
    }),
  );
  const logger = createLogger('silent', config.instanceId);
  const wiring = wireServices(config, { redisUrl: sharedRedisUrl(), logger, clock: systemClock });
  await waitReady(wiring.redis.command, 5000);
  const w: TestWiring = {
    ...wiring,
    prefix,
    async close() {
      wiring.services.events.closeAll();
      await wiring.services.push.stop();
      await wiring.redis.close();
      await deletePrefixed(prefix);
    },
  };
  wirings.push(w);
  return w;
}

/** A viewer as a token would make it. */
export const viewer = (id: string): Viewer => ({ id, name: id, roles: [] });

/** A room stream as services return it. */
export type Stream = AsyncGenerator<StreamItem>;

/** The next item within `ms`, skipping room presence and typing (ephemeral state these tests do not follow). */
export async function nextOf(stream: Stream, ms = 3000, what = 'the next stream item'): Promise<IteratorResult<StreamItem>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await withTimeout(stream.next(), Math.max(1, deadline - Date.now()), what);
    if (!r.done && (r.value.type === 'PresenceChanged' || r.value.type === 'TypingChanged')) continue;
    return r;
  }
}

/** Reads `n` items from a stream, each within a bounded time. */
export async function take(stream: Stream, n: number, ms = 5000): Promise<StreamItem[]> {
  const items: StreamItem[] = [];
  while (items.length < n) {
    const r = await nextOf(stream, ms, `item ${items.length + 1} of ${n}`);
    if (r.done) throw new Error(`stream ended after ${items.length} of ${n} items`);
    items.push(r.value);
  }
  return items;
}

/** Reads a stream to its end (bounded), returning everything it yielded. */
export async function drain(stream: Stream, max = 200, ms = 3000): Promise<StreamItem[]> {
  const items: StreamItem[] = [];
  for (;;) {
    const r = await nextOf(stream, ms, `the end of the stream (after ${items.length} items)`);
    if (r.done) return items;
    items.push(r.value);
    if (items.length > max) throw new Error(`the stream yielded more than ${max} items without ending`);
  }
}

/** The seqs of MessageAdded items (any other item fails the test). */
export const seqsOf = (items: StreamItem[]) =>
  items.map((i) => {
    if (i.type !== 'MessageAdded') throw new Error(`expected MessageAdded, got ${i.type}`);
    return i.message.seq;
  });

/** from..to inclusive. */
export const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * How a test opens room streams: as async generators; with a WebSocket-like sink that runs the
 * stream and gets its end (`startThroughSink`, as shared-execution.ts does); or with that sink but
 * the stream's own `next()` read for the end (as a wrapper of the stream would).
 */
export type StreamMode = 'generator' | 'sink' | 'sink-iterated';

/** Every mode, for tests that run once per mode. */
export const STREAM_MODES: readonly StreamMode[] = ['generator', 'sink', 'sink-iterated'];

/**
 * Opens a room stream in `mode`. With `sink`, the stream gets a sink that behaves like a socket
 * whose reader is the test: it is `ready` only while the test waits for an item, and `send`
 * resolves once the test has taken the item (back-pressure, as a socket that is not read). What
 * the sink receives, then the stream's own end (its error, if any), reads as the same iterator.
 */
export async function openStream(
  mode: StreamMode,
  events: TestWiring['services']['events'],
  who: Viewer,
  roomId: string,
  opts: Omit<Parameters<TestWiring['services']['events']['openRoomStream']>[2], 'sink'>,
): Promise<Stream> {
  if (mode === 'generator') return events.openRoomStream(who, roomId, opts);
  const sink = new TestSink();
  const stream = await events.openRoomStream(who, roomId, { ...opts, sink });
  return sink.iterator(stream, mode === 'sink');
}

class TestSink implements EventSink {
  /** Items sent and not yet taken, each with what resolves its `send`. */
  #buffer: { item: StreamItem; taken: () => void }[] = [];
  #readers: ((r: IteratorResult<StreamItem>) => void)[] = [];
  /** The stream's end: its error item (if any), then done. */
  #end: StreamItem[] | null = null;
  get ready(): boolean {
    return this.#readers.length > 0 && this.#buffer.length === 0;
  }
  push(event: object): void {
    this.#offer(event as StreamItem, () => undefined);
  }
  send(event: object): Promise<void> {
    return new Promise((resolve) => this.#offer(event as StreamItem, resolve));
  }
  end(event: object | null): void {
    this.#end = event ? [event as StreamItem] : [];
    this.#ended();
  }
  #offer(item: StreamItem, taken: () => void): void {
    const reader = this.#readers.shift();
    if (reader) {
      reader({ done: false, value: item });
      taken();
    } else {
      this.#buffer.push({ item, taken });
    }
  }
  #ended(): void {
    for (;;) {
      if (this.#buffer.length > 0 || this.#readers.length === 0 || !this.#end) return;
      const reader = this.#readers.shift() as (r: IteratorResult<StreamItem>) => void;
      const item = this.#end.shift();
      reader(item ? { done: false, value: item } : { done: true, value: undefined });
    }
  }
  iterator(stream: Stream, throughSink: boolean): Stream {
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      if (throughSink) return (stream as unknown as SinkSource).startThroughSink();
      // The stream answers next() once, when it ends (sink mode).
      void stream.next().then(
        (r) => {
          this.#end = r.done ? [] : [r.value];
          this.#ended();
        },
        (err: unknown) => {
          this.#end = [];
          for (const reader of this.#readers.splice(0)) reader(Promise.reject(err) as never);
        },
      );
    };
    const it = {
      next: () => {
        start();
        const first = this.#buffer.shift();
        if (first) {
          first.taken();
          return Promise.resolve({ done: false, value: first.item });
        }
        const p = new Promise<IteratorResult<StreamItem>>((resolve) => this.#readers.push(resolve));
        this.#ended();
        return p;
      },
      return: async () => {
        if (throughSink) (stream as unknown as SinkSource).stop();
        else await stream.return(undefined);
        return { done: true, value: undefined };
      },
      throw: async (err: unknown) => {
        await stream.return(undefined);
        throw err;
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it as Stream;
  }
}

/**
 * Runs `send`, then waits, without sleeping, until `n` MessageAdded events of the room have reached
 * this instance through pub/sub (so every stream of the room here has had them offered).
 */
export async function sendAndAwaitEvents(pubsub: TestWiring['pubsub'], roomId: string, n: number, send: () => Promise<unknown>): Promise<void> {
  const delivered = deferred<void>();
  let count = 0;
  const counter = pubsub.listen('room', roomId, (ev) => {
    if (ev.type === 'MessageAdded' && ++count === n) delivered.resolve();
  });
  try {
    await counter.ready;
    await send();
    await withTimeout(delivered.promise, 5000, `${n} published events`);
  } finally {
    counter.remove();
  }
}
