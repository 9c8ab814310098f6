import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { GraphQLFormattedError } from 'graphql';
import type { Client as WsClient } from 'graphql-ws';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { buildApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { freePort, startRedisServer, type EmbeddedRedis } from '../../src/infra/embedded-redis.js';
import {
  CreateRoomDocument,
  MessagesDocument,
  OnMessageAddedDocument,
  SendMessageDocument,
  type OnMessageAddedSubscription,
} from '../generated/graphql.js';
import {
  codes,
  deferred,
  gql,
  gqlOk,
  range,
  subscribe,
  type Subscription,
  waitFor,
  withTimeout,
  wsClient,
} from '../helpers/clients.js';
import { pushEnv } from '../helpers/push.js';
import { startServer, type ChildServer } from '../helpers/process.js';
import { sharedRedisUrl, testEnv, TEST_JWT_SECRET, tokenFor, uniquePrefix } from '../helpers/server.js';

/** These tests are about delivery, not limits: whatever defaults rate limiting gets, lift them. */
const UNLIMITED = { RATE_LIMITS: 'off' };

const tokens: Record<string, string> = {};
const clients: WsClient[] = [];

beforeAll(async () => {
  for (const user of ['alice', 'bob', 'carol']) tokens[user] = await tokenFor(user);
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.dispose()));
});

const seqsOf = (sub: Subscription<OnMessageAddedSubscription>) => sub.results.map((r) => r.data?.messageAdded.seq);

/** Creates a room owned by `owner` with `memberIds`. */
async function createRoom(url: string, owner: string, memberIds: string[]): Promise<string> {
  const { createRoom } = await gqlOk(url, CreateRoomDocument, { input: { name: 'resilience', memberIds } }, tokens[owner]!);
  return createRoom.id;
}

/** Sends `n` messages with at most `parallel` in flight; `text(i)` makes the i-th (0-based). */
async function sendMany(url: string, user: string, roomId: string, n: number, text: (i: number) => string, parallel = 32) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await gqlOk(url, SendMessageDocument, { input: { roomId, text: text(i) } }, tokens[user]!);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

/**
 * Sends `n` messages, `perRequest` of them per HTTP request (aliased `sendMessage` fields run one
 * after the other), at most `parallel` requests in flight: the server's time goes to messages, not
 * to HTTP round trips.
 */
async function sendBatched(
  url: string,
  user: string,
  roomId: string,
  n: number,
  text: (i: number) => string,
  { perRequest = 10, parallel = 8 } = {},
) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const from = next;
      const count = Math.min(perRequest, n - from);
      next += count;
      const ids = range(0, count - 1);
      const doc = `mutation SendBatch($roomId: ID!, ${ids.map((i) => `$t${i}: String!`).join(', ')}) { ${ids
        .map((i) => `m${i}: sendMessage(input: { roomId: $roomId, text: $t${i} }) { seq }`)
        .join(' ')} }`;
      const variables: Record<string, string> = { roomId };
      for (const i of ids) variables[`t${i}`] = text(from + i);
      await gqlOk(url, doc, variables, tokens[user]!);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

/** Reads a `kB` field of /proc/<pid>/status, in bytes. */
function procStatusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** The most bytes the kernel may hold for one loopback TCP connection (receive + send buffers). */
function maxKernelSocketBuffer(): number {
  const max = (file: string) => Number(readFileSync(file, 'utf8').trim().split(/\s+/)[2]);
  return max('/proc/sys/net/ipv4/tcp_rmem') + max('/proc/sys/net/ipv4/tcp_wmem');
}

/**
 * A raw `ws` client speaking graphql-transport-ws with one subscription (id "1"), so the test can
 * pause its TCP socket: the server then sees a client that stops reading.
 */
async function rawSubscriber(url: string, token: string, query: string, variables: Record<string, unknown>) {
  const ws = new WebSocket(url, 'graphql-transport-ws');
  const nexts: { data?: { messageAdded?: { seq: number; text: string } }; errors?: GraphQLFormattedError[] }[] = [];
  const waiters = new Set<() => void>();
  const ended = deferred<{ type: 'complete' | 'error' | 'close'; errors?: GraphQLFormattedError[]; code?: number }>();
  const acked = deferred<void>();
  ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })));
  ws.on('message', (raw) => {
    const msg = JSON.parse(String(raw)) as { type: string; id?: string; payload?: unknown };
    if (msg.type === 'connection_ack') acked.resolve();
    else if (msg.type === 'ping') ws.send(JSON.stringify({ type: 'pong' }));
    else if (msg.type === 'next' && msg.id === '1') nexts.push(msg.payload as (typeof nexts)[number]);
    else if (msg.type === 'error' && msg.id === '1') ended.resolve({ type: 'error', errors: msg.payload as GraphQLFormattedError[] });
    else if (msg.type === 'complete' && msg.id === '1') ended.resolve({ type: 'complete' });
    waiters.forEach((w) => w());
  });
  ws.on('close', (code) => {
    ended.resolve({ type: 'close', code });
    acked.reject(new Error(`closed with ${code} before connection_ack`));
    waiters.forEach((w) => w());
  });
  ws.on('error', () => undefined);
  await withTimeout(acked.promise, 5000, 'connection_ack');
  ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables } }));
  const socket = (ws as unknown as { _socket: Socket })._socket;
  return {
    nexts,
    ended: ended.promise,
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    bytesRead: () => socket.bytesRead,
    /** Resolves once `n` results arrived, or the subscription ended (whichever first), within `ms`. */
    untilCountOrEnd(n: number, ms: number) {
      return withTimeout(
        new Promise<void>((resolve) => {
          let over = false;
          void ended.promise.then(() => (over = true));
          const check = () => {
            if (nexts.length >= n || over) {
              waiters.delete(check);
              resolve();
            }
          };
          waiters.add(check);
          void ended.promise.then(check);
          check();
        }),
        ms,
        `${n} results on the raw subscriber (got ${nexts.length})`,
      );
    },
    close: () => ws.terminate(),
  };
}

describe('when one subscriber stops reading while thousands of messages are sent', () => {
  const N = 3000;
  const TEXT_CHARS = 4000;
  // The stalled subscription selects the text 15 times: ~60 kB per event, ~180 MB for all of them.
  const COPIES = 15;
  const STALLED = `subscription Stalled($roomId: ID!) { messageAdded(roomId: $roomId) { seq text ${range(2, COPIES)
    .map((i) => `t${i}: text`)
    .join(' ')} } }`;
  let server: ChildServer;

  beforeAll(async () => {
    // Its own process: its RSS is the server's alone, and "the process stays alive" means something.
    server = await startServer({
      ...UNLIMITED,
      REDIS_URL: sharedRedisUrl(),
      REDIS_KEY_PREFIX: uniquePrefix('stall'),
      JWT_SECRET: TEST_JWT_SECRET,
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('should keep the others in order, stay alive with bounded memory, and let the stalled one catch up', async () => {
    expect(N * COPIES * TEXT_CHARS).toBeGreaterThan(4 * maxKernelSocketBuffer());
    const roomId = await createRoom(server.url, 'alice', ['bob', 'carol']);
    const others = ['alice', 'bob'].map((user) => {
      const c = wsClient(server.wsUrl, tokens[user]!);
      clients.push(c);
      return subscribe(c, OnMessageAddedDocument, { roomId });
    });
    const stalled = await rawSubscriber(server.wsUrl, tokens.carol!, STALLED, { roomId });
    const textOf = (i: number) => `${i} `.padEnd(TEXT_CHARS, 'x');

    // Warm-up until every subscription has a message: then all three are live on the server (each
    // from the first warm-up message sent after it went live, which need not be seq 1).
    let warm = 0;
    await waitFor(
      async () => {
        const live = stalled.nexts.length > 0 && others.every((s) => s.results.length > 0);
        if (!live) await sendMany(server.url, 'alice', roomId, 1, () => `warm-up ${++warm}`, 1);
        return live;
      },
      5000,
      'all subscriptions to be live',
    );
    await waitFor(() => stalled.nexts.length + (stalled.nexts[0]?.data?.messageAdded?.seq ?? 1) - 1 >= warm, 5000, 'the warm-up to reach the stalled one');
    const stalledFirst = stalled.nexts[0]?.data?.messageAdded?.seq as number;
    stalled.pause();
    const rssBefore = procStatusBytes(server.pid, 'VmRSS');

    const startedAt = Date.now();
    await sendBatched(server.url, 'bob', roomId, N, textOf);
    const total = warm + N;
    for (const sub of others) {
      // Each was live before the flood (it got a warm-up message), possibly not before the first one.
      const first = seqsOf(sub)[0] as number;
      expect(first).toBeLessThanOrEqual(warm);
      await sub.take(total - first + 1, 20_000);
      expect(seqsOf(sub)).toEqual(range(first, total));
      expect(sub.results.every((r) => !r.errors)).toBe(true);
    }
    const stallPhaseMs = Date.now() - startedAt;

    // Alive and serving: the health endpoint answers, and the process has not exited.
    const health = await fetch(`${server.base}/health`, { signal: AbortSignal.timeout(2000) });
    expect(health.status).toBe(200);
    expect(server.hasExited()).toBe(false);
    const growth = procStatusBytes(server.pid, 'VmHWM') - rssBefore;
    expect(growth, `peak RSS grew ${Math.round(growth / 2 ** 20)} MB`).toBeLessThan(150 * 2 ** 20);
    // The server pings every 12 s and drops a socket whose pong is 12 s late: a much longer stall
    // would test keep-alive instead of back-pressure.
    expect(stallPhaseMs).toBeLessThan(20_000);

    stalled.resume();
    await stalled.untilCountOrEnd(total - stalledFirst + 1, 20_000);
    const outcome = await Promise.race([stalled.ended, Promise.resolve(null)]);
    // Either catch-up from storage (every message, in order) or an end with CURSOR_EXPIRED would
    // honour the contract; this server implements catch-up for messageAdded, so that is asserted.
    expect(outcome, 'the stalled subscription ended instead of catching up').toBeNull();
    expect(stalled.nexts.map((r) => r.data?.messageAdded?.seq)).toEqual(range(stalledFirst, total));
    expect(stalled.nexts.every((r) => !r.errors)).toBe(true);
    const texts = new Set(stalled.nexts.map((r) => r.data?.messageAdded?.text));
    expect(texts.size).toBe(total - stalledFirst + 1);
    expect(texts.has(textOf(N - 1))).toBe(true);

    // And it is live again, not only caught up.
    await sendMany(server.url, 'alice', roomId, 1, () => 'after the stall', 1);
    const owed = total - stalledFirst + 1;
    await stalled.untilCountOrEnd(owed + 1, 5000);
    expect(stalled.nexts[owed]?.data?.messageAdded).toMatchObject({ seq: total + 1, text: 'after the stall' });
    stalled.close();
  });
});

/** A pino logger whose JSON lines the test can read. */
function captureLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

describe('when Redis becomes unreachable', () => {
  let redis: EmbeddedRedis | undefined;
  let port: number;
  let dir: string;
  let app: App;
  let base: string;
  let url: string;
  let wsUrl: string;
  let logs: ReturnType<typeof captureLogger>;
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);

  const startOwnRedis = async () => {
    redis = await startRedisServer({ dir, port, appendOnly: true });
  };

  beforeAll(async () => {
    process.on('unhandledRejection', onRejection);
    port = await freePort();
    dir = mkdtempSync(join(tmpdir(), 'switchboard-outage-'));
    await startOwnRedis();
    logs = captureLogger();
    app = await buildApp(
      loadConfig(testEnv({ ...UNLIMITED, REDIS_URL: redis!.url, REDIS_COMMAND_TIMEOUT_MS: '1000', REDIS_KEY_PREFIX: uniquePrefix('outage') })),
      { logger: logs.logger },
    );
    const started = await app.start();
    base = `http://127.0.0.1:${started.port}`;
    url = `${base}/graphql`;
    wsUrl = `ws://127.0.0.1:${started.port}/graphql`;
  });

  afterEach(() => {
    if (redis) {
      try {
        process.kill(redis.pid, 'SIGCONT');
      } catch {
        // already gone
      }
    }
    expect(rejections, 'unhandled rejections').toEqual([]);
  });

  afterAll(async () => {
    process.off('unhandledRejection', onRejection);
    await app?.stop();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const status = async (path: string) => (await fetch(`${base}${path}`, { signal: AbortSignal.timeout(5000) })).status;

  /** Runs an operation and returns its error codes and how long the answer took. */
  async function timed(doc: unknown, variables: Record<string, unknown>, user: string) {
    const t0 = Date.now();
    const r = await gql(url, doc as string, variables, { token: tokens[user]! });
    return { ms: Date.now() - t0, codes: codes(r.errors), status: r.status };
  }

  it('should answer UNAVAILABLE without hanging while Redis is frozen, and fail a PUBLISH without crashing', async () => {
    const roomId = await createRoom(url, 'alice', ['bob']);
    await sendMany(url, 'alice', roomId, 3, (i) => `before ${i}`, 1);
    const c = wsClient(wsUrl, tokens.bob!);
    clients.push(c);
    const live = subscribe(c, OnMessageAddedDocument, { roomId });
    await waitFor(() => app.services.events.openCount() >= 1, 5000, 'the subscription to be live');

    // Freeze Redis right after the message is stored, as the send's second round trip (the
    // features' commands and the event's PUBLISH, one pipeline) is about to go out.
    let frozen = false;
    app.services.hooks.messageStored.add((_pipeline, { message }) => {
      if (message.roomId !== roomId || message.text !== 'freeze' || frozen) return;
      frozen = true;
      process.kill(redis!.pid, 'SIGSTOP');
    });
    const freeze = await timed('mutation FreezeSend($input: SendMessageInput!) { sendMessage(input: $input) { seq } }', { input: { roomId, text: 'freeze' } }, 'alice');
    expect(frozen).toBe(true);
    expect(freeze.codes).toEqual(['UNAVAILABLE']);
    expect(freeze.ms).toBeLessThan(3000);

    const query = await timed(MessagesDocument, { roomId, last: 5 }, 'alice');
    expect(query.codes).toEqual(['UNAVAILABLE']);
    expect(query.ms).toBeLessThan(3000);
    const mutation = await timed(SendMessageDocument, { input: { roomId, text: 'while frozen' } }, 'bob');
    expect(mutation.codes).toEqual(['UNAVAILABLE']);
    expect(mutation.ms).toBeLessThan(3000);

    const t0 = Date.now();
    expect(await status('/ready')).toBe(503);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(await status('/health')).toBe(200);

    // A fire-and-forget PUBLISH (typing, presence, receipts…) to the frozen Redis: logged, not thrown.
    app.services.pubsub.publish('room', roomId, { type: 'TypingChanged', roomId, userIds: [] });
    await waitFor(() => logs.lines.some((l) => l.msg === 'publish failed'), 5000, 'the failed PUBLISH to be logged');
    expect(rejections).toEqual([]);

    process.kill(redis!.pid, 'SIGCONT');
    await waitFor(async () => (await status('/ready')) === 200, 10_000, '/ready to answer 200 again');
    const thawed = await gqlOk(url, SendMessageDocument, { input: { roomId, text: 'thawed' } }, tokens.alice!);
    // The subscriber misses nothing: the frozen PUBLISH is delivered late or filled in from storage.
    // ('freeze' was stored before the freeze, though its send answered UNAVAILABLE; the send that
    // answered UNAVAILABLE while frozen may still have been applied once Redis resumed: its script
    // was already sent. Either way the stream has no gap.)
    const last = thawed.sendMessage.seq;
    const results = await live.take(last - 3, 10_000);
    expect(results.map((r) => r.data?.messageAdded.seq)).toEqual(range(4, last));
    expect(results[0]?.data?.messageAdded.text).toBe('freeze');
    expect(results[last - 4]?.data?.messageAdded.text).toBe('thawed');
  });

  it('should answer UNAVAILABLE fast while Redis is down, report 503 on /ready, and recover after it restarts', async () => {
    const roomId = await createRoom(url, 'alice', ['bob']);
    await sendMany(url, 'alice', roomId, 3, (i) => `before ${i}`, 1);
    const c = wsClient(wsUrl, tokens.bob!);
    clients.push(c);
    const before = app.services.events.openCount();
    const old = subscribe(c, OnMessageAddedDocument, { roomId });
    await waitFor(() => app.services.events.openCount() > before, 5000, 'the subscription to be live');

    await redis!.stop();
    redis = undefined;

    for (const [doc, variables, user] of [
      [MessagesDocument, { roomId, last: 5 }, 'alice'],
      [SendMessageDocument, { input: { roomId, text: 'during the outage' } }, 'bob'],
      [CreateRoomDocument, { input: { name: 'during the outage' } }, 'alice'],
      // A user this instance has never seen: the first request of a session during an outage.
      [MessagesDocument, { roomId, last: 5 }, 'carol'],
    ] as const) {
      const r = await timed(doc, variables, user);
      expect(r.codes, `${user}: ${JSON.stringify(variables)}`).toEqual(['UNAVAILABLE']);
      expect(r.ms).toBeLessThan(3000);
    }
    const t0 = Date.now();
    expect(await status('/ready')).toBe(503);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(await status('/health')).toBe(200);

    await startOwnRedis();
    await waitFor(async () => (await status('/ready')) === 200, 10_000, '/ready to answer 200 again');
    // The data survived the restart (AOF): the room's seq continues.
    const { sendMessage } = await gqlOk(url, SendMessageDocument, { input: { roomId, text: 'after restart' } }, tokens.alice!);
    expect(sendMessage.seq).toBe(4);

    const c2 = wsClient(wsUrl, tokens.alice!);
    clients.push(c2);
    const fresh = subscribe(c2, OnMessageAddedDocument, { roomId });
    await waitFor(
      async () => {
        if (fresh.results.length === 0) {
          await gqlOk(url, SendMessageDocument, { input: { roomId, text: 'to the new subscription' } }, tokens.bob!);
        }
        return fresh.results.length > 0;
      },
      5000,
      'a message on a subscription opened after the restart',
    );
    expect(fresh.results[0]?.data?.messageAdded).toMatchObject({ text: 'to the new subscription', sender: { id: 'bob' } });

    // The subscription opened before the outage either continues without a gap or ends so the
    // client can resubscribe: never silently stuck.
    const lastSeq = fresh.results[0]!.data!.messageAdded.seq;
    await waitFor(() => old.done() || old.results.length >= lastSeq - 3, 5000, 'the old subscription to continue or end');
    if (!old.done()) expect(seqsOf(old)).toEqual(range(4, lastSeq));
  });

  it('should shut down within a bound while Redis is down, push worker, subscriber and live subscriptions included', async () => {
    // A second instance with push deliveries on (bullmq worker and queues, which wait for Redis).
    const other = await buildApp(
      loadConfig(
        testEnv({
          ...UNLIMITED,
          ...pushEnv('http://127.0.0.1:9/never'),
          REDIS_URL: redis!.url,
          REDIS_COMMAND_TIMEOUT_MS: '1000',
          REDIS_KEY_PREFIX: uniquePrefix('outage-stop'),
          SHUTDOWN_TIMEOUT_MS: '2000',
        }),
      ),
      { logger: captureLogger().logger },
    );
    const { port: otherPort, url: otherUrl } = await other.start();
    const roomId = await createRoom(otherUrl, 'alice', ['bob']);
    const c = wsClient(`ws://127.0.0.1:${otherPort}/graphql`, tokens.bob!);
    clients.push(c);
    const before = other.services.events.openCount();
    subscribe(c, OnMessageAddedDocument, { roomId });
    await waitFor(() => other.services.events.openCount() > before, 5000, 'the subscription to be live');

    await redis!.stop();
    redis = undefined;
    // The subscriber connection is reconnecting (its QUIT would wait for Redis), bullmq's too.
    const t0 = Date.now();
    await withTimeout(other.stop(), 20_000, 'the instance to stop during the outage');
    // Drain (2 s) plus each bounded close: well under the 20 s the test allows.
    expect(Date.now() - t0).toBeLessThan(12_000);
    await startOwnRedis();
    await waitFor(async () => (await status('/ready')) === 200, 10_000, '/ready to answer 200 again');
  });
});
