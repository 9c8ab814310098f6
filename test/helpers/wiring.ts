import { afterEach } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { StreamItem } from '../../src/events/events.service.js';
import { systemClock } from '../../src/infra/clock.js';
import { createLogger } from '../../src/infra/logger.js';
import { waitReady } from '../../src/infra/redis.js';
import { wireServices, type Wiring } from '../../src/services.js';
import type { Viewer } from '../../src/users/users.models.js';
import { withTimeout } from './clients.js';
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
