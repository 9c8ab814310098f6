import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GraphQLFormattedError } from 'graphql';
import type { Client as WsClient } from 'graphql-ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { buildApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { freePort, startRedisServer, type EmbeddedRedis } from '../../src/infra/embedded-redis.js';
import {
  codes,
  deferred,
  gql,
  gqlOk,
  type HttpResult,
  parseSse,
  range,
  type SseEvent,
  subscribe,
  type Subscription,
  waitFor,
  withTimeout,
  wsClient,
} from '../helpers/clients.js';
import { startCluster, startInstance, testEnv, tokenFor, uid, uniquePrefix, waitForStreams, type TestInstance } from '../helpers/server.js';

/**
 * Rate limits (API.md § Errors, RATE_LIMITS, TRUST_PROXY) and WebSocket limits, end to end: atomic
 * across instances, sliding, alias-proof, per identity, at subscribe time over WebSocket and SSE,
 * and closed, never open, when Redis is away. Every describe starts its own instances with its own
 * RATE_LIMITS (the harness turns limits off by default).
 */

const SEND = 'mutation Send($roomId: ID!, $text: String!) { sendMessage(input: { roomId: $roomId, text: $text }) { id seq } }';
const CREATE = 'mutation Create($name: String!) { createRoom(input: { name: $name }) { id } }';
const HISTORY = 'query History($roomId: ID!) { messages(roomId: $roomId, last: 100) { edges { node { seq text } } } }';
const ME = '{ me { id } }';
const ON_MESSAGE = 'subscription OnMessage($roomId: ID!) { messageAdded(roomId: $roomId) { id text } }';
const ON_EVENTS = 'subscription OnEvents($roomId: ID!) { roomEvents(roomId: $roomId) { __typename } }';
const ON_TYPING = 'subscription OnTyping($roomId: ID!) { typing(roomId: $roomId) { users { id } } }';
const INTROSPECTION = '{ __schema { queryType { name } } }';

const clients: WsClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.dispose()));
});
const track = (c: WsClient) => (clients.push(c), c);

/** A user with a token and a room of their own. */
async function userWithRoom(url: string, label: string) {
  const id = uid(label);
  const token = await tokenFor(id);
  const { createRoom } = await gqlOk<{ createRoom: { id: string } }>(url, CREATE, { name: `${label} room` }, token);
  return { id, token, roomId: createRoom.id };
}

const send = (url: string, token: string, roomId: string, text = 'hi') => gql<{ sendMessage: { id: string } }>(url, SEND, { roomId, text }, { token });

/** How many messages the room holds. */
async function historyLength(url: string, token: string, roomId: string): Promise<number> {
  const data = await gqlOk<{ messages: { edges: unknown[] } }>(url, HISTORY, { roomId }, token);
  return data.messages.edges.length;
}

/** Asserts a request refused as a whole: 429, Retry-After, RATE_LIMITED with retryAfter >= 1. */
function expectRateLimited(r: HttpResult<unknown>, maxRetryAfter?: number): number {
  expect(codes(r.errors), JSON.stringify(r.body)).toEqual(['RATE_LIMITED']);
  expect(r.status).toBe(429);
  const retryAfter = r.errors?.[0]?.extensions?.retryAfter as number;
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  if (maxRetryAfter !== undefined) expect(retryAfter).toBeLessThanOrEqual(maxRetryAfter);
  expect(r.headers.get('retry-after')).toBe(String(retryAfter));
  expect(r.data ?? null).toBeNull();
  return retryAfter;
}

function expectAdmitted(r: HttpResult<unknown>) {
  expect(r.errors, JSON.stringify(r.body)).toBeUndefined();
  expect(r.status).toBe(200);
}

/** The codes of the errors a graphql-ws subscription answered with, as a result or as an `error` message. */
async function subscriptionErrors(sub: Subscription<unknown>, ms = 5000): Promise<GraphQLFormattedError[]> {
  await waitFor(() => sub.results.length > 0 || sub.done(), ms, 'the subscription to answer');
  const first = sub.results[0];
  if (first) return (first.errors ?? []) as unknown as GraphQLFormattedError[];
  const err = await withTimeout(sub.error, ms, 'the subscription error');
  return (Array.isArray(err) ? err : [err]) as GraphQLFormattedError[];
}

/** A raw `ws` client speaking graphql-transport-ws, to send exactly the frames a test wants. */
function rawSocket(url: string, token: string) {
  const ws = new WebSocket(url, 'graphql-transport-ws');
  const messages: { type: string; id?: string; payload?: unknown }[] = [];
  const acked = deferred<void>();
  const closed = deferred<{ code: number; reason: string }>();
  acked.promise.catch(() => undefined);
  ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })));
  ws.on('message', (raw) => {
    const msg = JSON.parse(String(raw)) as (typeof messages)[number];
    messages.push(msg);
    if (msg.type === 'connection_ack') acked.resolve();
  });
  ws.on('close', (code, reason) => {
    closed.resolve({ code, reason: String(reason) });
    acked.reject(new Error(`closed with ${code} before connection_ack`));
  });
  ws.on('error', () => undefined);
  return {
    ws,
    messages,
    acked: acked.promise,
    closed: closed.promise,
    send: (msg: object) => ws.send(JSON.stringify(msg)),
    isOpen: () => ws.readyState === WebSocket.OPEN,
    close: () => ws.close(),
  };
}

/** A GraphQL-over-SSE subscription (POST, `accept: text/event-stream`), read as it streams. */
async function openSse(url: string, query: string, variables: Record<string, unknown>, token: string) {
  const controller = new AbortController();
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
    signal: controller.signal,
  });
  const events: SseEvent[] = [];
  let text = '';
  const reading = (async () => {
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const chunk = decoder.decode(value, { stream: true });
        text += chunk;
        buffer += chunk;
        const parsed = parseSse(buffer);
        buffer = parsed.rest;
        events.push(...parsed.events);
      }
    } catch {
      // aborted by close()
    }
  })();
  const results = () =>
    events
      .filter((e) => (e.event === 'next' || e.event === 'message') && e.data.trim() !== '')
      .map((e) => JSON.parse(e.data) as { data?: unknown; errors?: GraphQLFormattedError[] });
  return {
    status: res.status,
    headers: res.headers,
    results,
    /** Every error the stream carried, or the body when the server answered JSON instead. */
    errors: (): GraphQLFormattedError[] => {
      const fromEvents = results().flatMap((r) => r.errors ?? []);
      if (fromEvents.length > 0 || res.headers.get('content-type')?.includes('text/event-stream')) return fromEvents;
      try {
        return ((JSON.parse(text) as { errors?: GraphQLFormattedError[] }).errors ?? []) as GraphQLFormattedError[];
      } catch {
        return [];
      }
    },
    async close() {
      controller.abort();
      await reading;
    },
  };
}

describe('when 200 sendMessage race across two instances against a limit of 50 per 5 s', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2, { RATE_LIMITS: 'sendMessage=50/5s,*=100000/1m' })) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('should admit exactly 50 and refuse the other 150 with RATE_LIMITED, 429 and Retry-After', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'racer');
    const results = await Promise.all(range(0, 199).map((i) => send(i % 2 === 0 ? a.url : b.url, token, roomId, `m${i}`)));
    const admitted = results.filter((r) => r.data?.sendMessage);
    const refused = results.filter((r) => !r.data?.sendMessage);
    expect(admitted).toHaveLength(50);
    expect(refused).toHaveLength(150);
    for (const r of admitted) expectAdmitted(r);
    for (const r of refused) expectRateLimited(r, 5);
    expect(await historyLength(b.url, token, roomId)).toBe(50);
  });

  it('should not let one user spend another user’s allowance', async () => {
    const noisy = await userWithRoom(a.url, 'noisy');
    const quiet = await userWithRoom(b.url, 'quiet');
    const results = await Promise.all(range(0, 59).map((i) => send(i % 2 === 0 ? a.url : b.url, noisy.token, noisy.roomId, `n${i}`)));
    expect(results.filter((r) => r.data?.sendMessage)).toHaveLength(50);
    const calm = await Promise.all(range(0, 9).map((i) => send(i % 2 === 0 ? a.url : b.url, quiet.token, quiet.roomId, `q${i}`)));
    for (const r of calm) expectAdmitted(r);
  });

  it('should report the per-user budget in RateLimit-Limit, -Remaining and -Reset', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'headers');
    const first = await send(a.url, token, roomId);
    const second = await send(b.url, token, roomId);
    for (const r of [first, second]) {
      expectAdmitted(r);
      expect(r.headers.get('ratelimit-limit')).toBe('100000');
      const reset = Number(r.headers.get('ratelimit-reset'));
      expect(reset).toBeGreaterThanOrEqual(1);
      expect(reset).toBeLessThanOrEqual(60);
    }
    // createRoom + 1 send, then one more: the budget counts across instances.
    expect(Number(first.headers.get('ratelimit-remaining'))).toBe(100000 - 2);
    expect(Number(second.headers.get('ratelimit-remaining'))).toBe(100000 - 3);
  });
});

describe('when the window slides (sendMessage=5/3s)', () => {
  const W = 3000;
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2, { RATE_LIMITS: `sendMessage=5/${W / 1000}s,*=100000/1m` })) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  /** Sends one message at a time until one is admitted; resolves with the time it was. */
  const admittedAt = (url: string, token: string, roomId: string, ms: number, what: string) =>
    waitFor(async () => ((await send(url, token, roomId, 'poll')).data?.sendMessage ? Date.now() : 0), ms, what);

  it('should refuse for the rest of the window, then admit once the oldest hits age out', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'slide');
    const t0 = Date.now();
    const first = await Promise.all(range(1, 5).map((i) => send(i % 2 ? a.url : b.url, token, roomId, `a${i}`)));
    first.forEach(expectAdmitted);
    // The five hits were recorded between t0 and t1.
    const t1 = Date.now();
    const refused = await Promise.all(range(1, 5).map((i) => send(i % 2 ? a.url : b.url, token, roomId, `b${i}`)));
    const waits = refused.map((r) => expectRateLimited(r, W / 1000));
    // About 1 s later the same 5 still fill the window, and the wait has shrunk accordingly (bounded
    // by when the hits were recorded, not when the test began: a loaded machine may be slow to send).
    await waitFor(() => Date.now() - t0 >= 1000, 2000, '1 s to pass');
    const tLater = Date.now();
    const later = await send(b.url, token, roomId, 'c');
    expect(expectRateLimited(later, Math.max(...waits))).toBeLessThanOrEqual(Math.ceil((t1 + W - tLater) / 1000));
    const at = await admittedAt(a.url, token, roomId, W + 2000, 'a send to be admitted again');
    expect(at).toBeGreaterThanOrEqual(t0 + W);
  });

  it('should admit exactly as many as aged out, while newer hits still count (no fixed boundary)', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'stagger');
    const tA = Date.now();
    (await Promise.all(range(1, 2).map((i) => send(i % 2 ? a.url : b.url, token, roomId, `A${i}`)))).forEach(expectAdmitted);
    await waitFor(() => Date.now() - tA >= W / 2, W, 'half a window to pass');
    const tB = Date.now();
    (await Promise.all(range(1, 3).map((i) => send(i % 2 ? a.url : b.url, token, roomId, `B${i}`)))).forEach(expectAdmitted);
    // Full: the first refusal says to come back when the A hits leave, not when B's do.
    const full = await send(b.url, token, roomId, 'full');
    expect(expectRateLimited(full)).toBeLessThanOrEqual(Math.ceil((tA + W - Date.now() + 100) / 1000));

    // The two A hits age out: exactly two are admitted (one may need a few more ms than the other).
    const firstBack = await admittedAt(a.url, token, roomId, W + 2000, 'the first A hit to age out');
    expect(firstBack).toBeGreaterThanOrEqual(tA + W);
    await admittedAt(b.url, token, roomId, 1000, 'the second A hit to age out');
    const third = await send(a.url, token, roomId, 'third');
    // Meaningful only while the B hits are still in the window.
    expect(Date.now(), 'the B hits left the window before the check: machine too slow').toBeLessThan(tB + W);
    expectRateLimited(third);

    // The three B hits age out: exactly three more.
    const secondBack = await admittedAt(b.url, token, roomId, W + 2000, 'the B hits to age out');
    expect(secondBack).toBeGreaterThanOrEqual(tB + W);
    await admittedAt(a.url, token, roomId, 1000, 'the second B hit to age out');
    await admittedAt(b.url, token, roomId, 1000, 'the third B hit to age out');
    expectRateLimited(await send(a.url, token, roomId, 'sixth'));
    expect(await historyLength(a.url, token, roomId)).toBe(10);
  });
});

describe('when one request selects a limited field through aliases (sendMessage=5/1m)', () => {
  let a: TestInstance;
  beforeAll(async () => {
    a = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('rl-alias'), RATE_LIMITS: 'sendMessage=5/1m,*=100000/1m' });
  });
  afterAll(async () => {
    await a?.stop();
  });

  const aliased = (n: number) =>
    `mutation Many($roomId: ID!) { ${range(1, n)
      .map((i) => `m${i}: sendMessage(input: { roomId: $roomId, text: "alias ${i}" }) { seq }`)
      .join(' ')} }`;

  it('should count every alias: 10 against 5 are refused as a whole, 3 then 2 fill it, then nothing', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'alias');
    const ten = await gql(a.url, aliased(10), { roomId }, { token });
    expect(expectRateLimited(ten)).toBe(60);
    expect(await historyLength(a.url, token, roomId)).toBe(0);

    const three = await gql<Record<string, { seq: number }>>(a.url, aliased(3), { roomId }, { token });
    expectAdmitted(three);
    expect(Object.values(three.data ?? {}).map((m) => m.seq)).toEqual([1, 2, 3]);

    // 3 more do not fit in the 2 left: refused as a whole, nothing sent.
    expectRateLimited(await gql(a.url, aliased(3), { roomId }, { token }));
    expect(await historyLength(a.url, token, roomId)).toBe(3);

    expectAdmitted(await gql(a.url, aliased(2), { roomId }, { token }));
    expectRateLimited(await send(a.url, token, roomId));
    expect(await historyLength(a.url, token, roomId)).toBe(5);
  });

  it('should count aliases spread through fragments', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'fragment');
    const doc = `mutation M($roomId: ID!) { ...A ...B }
      fragment A on Mutation { a1: sendMessage(input: { roomId: $roomId, text: "1" }) { seq } a2: sendMessage(input: { roomId: $roomId, text: "2" }) { seq } a3: sendMessage(input: { roomId: $roomId, text: "3" }) { seq } }
      fragment B on Mutation { b1: sendMessage(input: { roomId: $roomId, text: "4" }) { seq } b2: sendMessage(input: { roomId: $roomId, text: "5" }) { seq } b3: sendMessage(input: { roomId: $roomId, text: "6" }) { seq } }`;
    expectRateLimited(await gql(a.url, doc, { roomId }, { token }));
    expect(await historyLength(a.url, token, roomId)).toBe(0);
  });
});

describe('when the per-user budget (*=5/1m) is spent', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2, { RATE_LIMITS: '*=5/1m' })) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('should count every operation of the user, whichever the operation and instance, and say so in the headers', async () => {
    const id = uid('budget');
    const token = await tokenFor(id);
    const created = await gql<{ createRoom: { id: string } }>(a.url, CREATE, { name: 'budget' }, { token });
    const roomId = created.data!.createRoom.id;
    const steps = [
      created,
      await gql(b.url, ME, undefined, { token }),
      await gql(a.url, '{ rooms { edges { node { id } } } }', undefined, { token }),
      await send(b.url, token, roomId),
      await gql(a.url, '{ __typename }', undefined, { token }),
    ];
    steps.forEach((r, i) => {
      expectAdmitted(r);
      expect(r.headers.get('ratelimit-limit')).toBe('5');
      expect(r.headers.get('ratelimit-remaining')).toBe(String(4 - i));
      const reset = Number(r.headers.get('ratelimit-reset'));
      expect(reset).toBeGreaterThanOrEqual(1);
      expect(reset).toBeLessThanOrEqual(60);
    });
    for (const r of [await gql(b.url, ME, undefined, { token }), await send(a.url, token, roomId), await gql(a.url, '{ __typename }', undefined, { token })]) {
      expectRateLimited(r, 60);
      expect(r.headers.get('ratelimit-limit')).toBe('5');
      expect(r.headers.get('ratelimit-remaining')).toBe('0');
    }
  });

  it('should leave another user’s budget whole', async () => {
    const spender = await tokenFor(uid('spender'));
    for (let i = 0; i < 6; i++) await gql(a.url, ME, undefined, { token: spender });
    expectRateLimited(await gql(b.url, ME, undefined, { token: spender }));
    const other = await gql(b.url, ME, undefined, { token: await tokenFor(uid('other')) });
    expectAdmitted(other);
    expect(other.headers.get('ratelimit-remaining')).toBe('4');
  });
});

describe('when requests are anonymous', () => {
  describe('and TRUST_PROXY is unset (*=3/1m)', () => {
    let a: TestInstance;
    beforeAll(async () => {
      a = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('rl-anon'), RATE_LIMITS: '*=3/1m' });
    });
    afterAll(async () => {
      await a?.stop();
    });

    it('should budget introspection by the socket IP and ignore X-Forwarded-For', async () => {
      const spoofed = (n: number) => ({ headers: { 'x-forwarded-for': `203.0.113.${n}` } });
      for (const n of [1, 2, 3]) expectAdmitted(await gql(a.url, INTROSPECTION, undefined, spoofed(n)));
      expectRateLimited(await gql(a.url, INTROSPECTION, undefined, spoofed(4)), 60);
      expectRateLimited(await gql(a.url, '{ __typename }', undefined, {}), 60);
    });

    it('should count an authenticated user apart from their IP', async () => {
      expectAdmitted(await gql(a.url, ME, undefined, { token: await tokenFor(uid('behind-nat')) }));
    });
  });

  describe('and TRUST_PROXY=1 (*=3/1m)', () => {
    let a: TestInstance;
    beforeAll(async () => {
      a = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('rl-proxy'), RATE_LIMITS: '*=3/1m', TRUST_PROXY: '1' });
    });
    afterAll(async () => {
      await a?.stop();
    });

    it('should budget each client by the first X-Forwarded-For address', async () => {
      const from = (xff: string) => ({ headers: { 'x-forwarded-for': xff } });
      for (let i = 0; i < 3; i++) expectAdmitted(await gql(a.url, INTROSPECTION, undefined, from('198.51.100.7')));
      expectRateLimited(await gql(a.url, INTROSPECTION, undefined, from('198.51.100.7')), 60);
      expectRateLimited(await gql(a.url, INTROSPECTION, undefined, from('198.51.100.7, 10.0.0.1')), 60);
      // Another client behind the same proxy, and the proxy itself, have budgets of their own.
      expectAdmitted(await gql(a.url, INTROSPECTION, undefined, from('198.51.100.8, 198.51.100.7')));
      expectAdmitted(await gql(a.url, INTROSPECTION, undefined, {}));
    });
  });
});

describe('when subscriptions share a scope (roomSubscriptions=2/1m)', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2, { RATE_LIMITS: 'roomSubscriptions=2/1m,*=100000/1m' })) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('should refuse the third subscribe over graphql-ws with RATE_LIMITED and keep the first two live', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'ws-subs');
    const [ca, cb] = [track(wsClient(a.wsUrl, token)), track(wsClient(b.wsUrl, token))];
    const beforeA = a.app.services.events.openCount();
    const beforeB = b.app.services.events.openCount();
    const first = subscribe<{ messageAdded: { text: string } }>(ca, ON_MESSAGE, { roomId });
    await waitForStreams(a, beforeA + 1);
    const second = subscribe(cb, ON_EVENTS, { roomId });
    await waitForStreams(b, beforeB + 1);
    const third = subscribe(ca, ON_TYPING, { roomId });
    const errors = await subscriptionErrors(third);
    expect(codes(errors)).toEqual(['RATE_LIMITED']);
    const retryAfter = errors[0]?.extensions?.retryAfter as number;
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);

    await gqlOk(b.url, SEND, { roomId, text: 'still live' }, token);
    expect((await first.nth(1)).data?.messageAdded.text).toBe('still live');
    expect((await second.nth(1)).errors).toBeUndefined();
    expect(first.done() || second.done()).toBe(false);
  });

  it('should refuse the third subscribe over SSE with RATE_LIMITED', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'sse-subs');
    const beforeA = a.app.services.events.openCount();
    const beforeB = b.app.services.events.openCount();
    const streams = [await openSse(a.url, ON_MESSAGE, { roomId }, token)];
    try {
      await waitForStreams(a, beforeA + 1);
      streams.push(await openSse(b.url, ON_MESSAGE, { roomId }, token));
      await waitForStreams(b, beforeB + 1);
      for (const s of streams) expect(s.status).toBe(200);
      const third = await openSse(a.url, ON_EVENTS, { roomId }, token);
      streams.push(third);
      await waitFor(() => third.errors().length > 0, 5000, 'the third SSE subscription to be refused');
      expect(codes(third.errors())).toEqual(['RATE_LIMITED']);
      expect(third.errors()[0]?.extensions?.retryAfter).toBeGreaterThanOrEqual(1);

      await gqlOk(b.url, SEND, { roomId, text: 'sse live' }, token);
      for (const s of streams.slice(0, 2)) {
        await waitFor(() => s.results().length > 0, 5000, 'an SSE message');
        expect(s.results()[0]).toEqual({ data: { messageAdded: expect.objectContaining({ text: 'sse live' }) } });
      }
    } finally {
      await Promise.all(streams.map((s) => s.close()));
    }
  });

  it('should count WebSocket and SSE subscribes of a user together', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'mixed-subs');
    const before = a.app.services.events.openCount();
    const c = track(wsClient(a.wsUrl, token));
    subscribe(c, ON_MESSAGE, { roomId });
    await waitForStreams(a, before + 1);
    const sse = await openSse(b.url, ON_MESSAGE, { roomId }, token);
    try {
      const third = subscribe(c, ON_EVENTS, { roomId });
      expect(codes(await subscriptionErrors(third))).toEqual(['RATE_LIMITED']);
    } finally {
      await sse.close();
    }
  });
});

describe('when one subscription field is limited (messageAdded=2/1m)', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2, { RATE_LIMITS: 'messageAdded=2/1m,*=100000/1m' })) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('should refuse the third subscribe over graphql-ws, across instances, with RATE_LIMITED', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'ws-field');
    const [ca, cb] = [track(wsClient(a.wsUrl, token)), track(wsClient(b.wsUrl, token))];
    const beforeA = a.app.services.events.openCount();
    const beforeB = b.app.services.events.openCount();
    const first = subscribe<{ messageAdded: { text: string } }>(ca, ON_MESSAGE, { roomId });
    await waitForStreams(a, beforeA + 1);
    const second = subscribe<{ messageAdded: { text: string } }>(cb, ON_MESSAGE, { roomId });
    await waitForStreams(b, beforeB + 1);
    const errors = await subscriptionErrors(subscribe(ca, ON_MESSAGE, { roomId }));
    expect(codes(errors)).toEqual(['RATE_LIMITED']);
    expect(errors[0]?.extensions?.retryAfter).toBeGreaterThanOrEqual(1);
    expect(a.app.services.events.openCount()).toBe(beforeA + 1);
    await gqlOk(b.url, SEND, { roomId, text: 'two live' }, token);
    expect((await first.nth(1)).data?.messageAdded.text).toBe('two live');
    expect((await second.nth(1)).data?.messageAdded.text).toBe('two live');
  });

  it('should refuse the third subscribe over SSE with RATE_LIMITED', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'sse-field');
    const beforeA = a.app.services.events.openCount();
    const streams = [await openSse(a.url, ON_MESSAGE, { roomId }, token), await openSse(b.url, ON_MESSAGE, { roomId }, token)];
    try {
      await waitForStreams(a, beforeA + 1);
      const third = await openSse(a.url, ON_MESSAGE, { roomId }, token);
      streams.push(third);
      await waitFor(() => third.errors().length > 0, 5000, 'the third SSE subscription to be refused');
      expect(codes(third.errors())).toEqual(['RATE_LIMITED']);
      expect(third.errors()[0]?.extensions?.retryAfter).toBeGreaterThanOrEqual(1);
    } finally {
      await Promise.all(streams.map((s) => s.close()));
    }
  });
});

describe('when a WebSocket floods (WS_MAX_MESSAGES_PER_10S=20)', () => {
  let a: TestInstance;
  beforeAll(async () => {
    a = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('rl-flood'), RATE_LIMITS: '*=100000/1m', WS_MAX_MESSAGES_PER_10S: '20' });
  });
  afterAll(async () => {
    await a?.stop();
  });

  it('should answer subscribes over the limit with RATE_LIMITED, then close the socket with 4429', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'flood');
    const before = a.app.services.events.openCount();
    const raw = rawSocket(a.wsUrl, token);
    try {
      await withTimeout(raw.acked, 5000, 'connection_ack'); // message 1: connection_init
      raw.send({ id: 'live', type: 'subscribe', payload: { query: ON_MESSAGE, variables: { roomId } } }); // 2
      await waitForStreams(a, before + 1);
      for (let i = 0; i < 19; i++) raw.send({ type: 'ping' }); // 3..21: over 20
      await waitFor(() => raw.messages.filter((m) => m.type === 'pong').length >= 19, 5000, 'the pongs');
      raw.send({ id: 'over', type: 'subscribe', payload: { query: ON_MESSAGE, variables: { roomId } } }); // 22
      const refusal = await waitFor(() => raw.messages.find((m) => m.id === 'over'), 5000, 'an answer to the subscribe over the limit');
      expect(refusal.type).toBe('error');
      const errors = refusal.payload as GraphQLFormattedError[];
      expect(codes(errors)).toEqual(['RATE_LIMITED']);
      expect(errors[0]?.extensions?.retryAfter).toBeGreaterThanOrEqual(1);
      expect(raw.isOpen()).toBe(true);
      for (let i = 0; i < 30 && raw.isOpen(); i++) raw.send({ type: 'ping' }); // up to 52: over 40
      const { code } = await withTimeout(raw.closed, 5000, 'the socket to be closed');
      expect(code).toBe(4429);
    } finally {
      raw.close();
    }
    // The server keeps serving: a new socket of the same user subscribes and hears messages.
    const c = track(wsClient(a.wsUrl, token));
    const sub = subscribe<{ messageAdded: { text: string } }>(c, ON_MESSAGE, { roomId });
    await waitFor(async () => {
      await gqlOk(a.url, SEND, { roomId, text: 'after the flood' }, token);
      return sub.results.length > 0;
    }, 5000, 'a message after the flood');
    expect(sub.results[0]?.data?.messageAdded.text).toBe('after the flood');
  });
});

describe('when a socket holds WS_MAX_SUBSCRIPTIONS=3', () => {
  let a: TestInstance;
  beforeAll(async () => {
    a = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('rl-subs'), RATE_LIMITS: '*=100000/1m', WS_MAX_SUBSCRIPTIONS: '3' });
  });
  afterAll(async () => {
    await a?.stop();
  });

  it('should refuse the fourth concurrent subscription on that socket only, and admit one again when a slot frees', async () => {
    const { token, roomId } = await userWithRoom(a.url, 'max-subs');
    const before = a.app.services.events.openCount();
    const c = track(wsClient(a.wsUrl, token));
    const subs = [subscribe(c, ON_MESSAGE, { roomId }), subscribe(c, ON_EVENTS, { roomId }), subscribe(c, ON_TYPING, { roomId })];
    await waitForStreams(a, before + 3);
    const fourth = subscribe(c, ON_MESSAGE, { roomId });
    expect(codes(await subscriptionErrors(fourth))).toEqual(['RATE_LIMITED']);
    expect(subs.some((s) => s.done())).toBe(false);

    // Another socket of the same user has its own allowance.
    const other = track(wsClient(a.wsUrl, token));
    subscribe(other, ON_MESSAGE, { roomId });
    await waitForStreams(a, before + 4);

    // One ends: the socket may hold a third again (the refused one took no slot).
    subs[0]!.unsubscribe();
    await waitFor(() => a.app.services.events.openCount() === before + 3, 5000, 'the subscription to end');
    const again = subscribe<{ messageAdded: { text: string } }>(c, ON_MESSAGE, { roomId });
    await waitForStreams(a, before + 4);
    await gqlOk(a.url, SEND, { roomId, text: 'slot' }, token);
    expect((await again.nth(1)).data?.messageAdded.text).toBe('slot');
  });
});

describe('when a user opens more than WS_MAX_CONNECTIONS_PER_USER=2 sockets across two instances', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2, { RATE_LIMITS: '*=100000/1m', WS_MAX_CONNECTIONS_PER_USER: '2' })) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('should close the third with 4429, leave other users alone, and accept a new one once one closed', async () => {
    const token = await tokenFor(uid('many-tabs'));
    const sockets: ReturnType<typeof rawSocket>[] = [];
    try {
      const first = rawSocket(a.wsUrl, token);
      sockets.push(first);
      await withTimeout(first.acked, 5000, 'the first connection_ack');
      const second = rawSocket(b.wsUrl, token);
      sockets.push(second);
      await withTimeout(second.acked, 5000, 'the second connection_ack');
      const third = rawSocket(a.wsUrl, token);
      sockets.push(third);
      const { code } = await withTimeout(third.closed, 5000, 'the third socket to be closed');
      expect(code).toBe(4429);
      expect(third.messages.some((m) => m.type === 'connection_ack')).toBe(false);
      expect(first.isOpen() && second.isOpen()).toBe(true);

      const stranger = rawSocket(b.wsUrl, await tokenFor(uid('stranger')));
      sockets.push(stranger);
      await withTimeout(stranger.acked, 5000, 'another user’s connection_ack');

      first.close();
      await withTimeout(first.closed, 5000, 'the first socket to close');
      // Presence forgets the closed socket (and the refused one) shortly: a new one is accepted.
      await waitFor(
        async () => {
          const next = rawSocket(b.wsUrl, token);
          sockets.push(next);
          const outcome = await Promise.race([next.acked.then(() => 'acked'), next.closed.then(() => 'closed')]);
          return outcome === 'acked';
        },
        5000,
        'a new connection to be accepted after one closed',
      );
    } finally {
      sockets.forEach((s) => s.close());
    }
  });
});

describe('when Redis is away', () => {
  let redis: EmbeddedRedis | undefined;
  let dir: string;
  let app: App;
  let url: string;

  beforeAll(async () => {
    const port = await freePort();
    dir = mkdtempSync(join(tmpdir(), 'switchboard-rl-outage-'));
    redis = await startRedisServer({ dir, port, appendOnly: true });
    app = await buildApp(
      loadConfig(
        testEnv({
          REDIS_URL: redis.url,
          REDIS_COMMAND_TIMEOUT_MS: '1000',
          REDIS_KEY_PREFIX: uniquePrefix('rl-outage'),
          RATE_LIMITS: 'sendMessage=50/1m,*=100000/1m',
        }),
      ),
    );
    const started = await app.start();
    url = `http://127.0.0.1:${started.port}/graphql`;
  });

  afterAll(async () => {
    if (redis) {
      try {
        process.kill(redis.pid, 'SIGCONT');
      } catch {
        // already gone
      }
    }
    await app?.stop();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('should answer a limited mutation UNAVAILABLE within the command timeout when Redis hangs, and send nothing', async () => {
    const { token, roomId } = await userWithRoom(url, 'hang');
    expectAdmitted(await send(url, token, roomId, 'before'));
    process.kill(redis!.pid, 'SIGSTOP');
    let r: HttpResult<{ sendMessage: { id: string } }>;
    const started = Date.now();
    try {
      r = await send(url, token, roomId, 'during');
    } finally {
      process.kill(redis!.pid, 'SIGCONT');
    }
    expect(Date.now() - started).toBeLessThan(3000);
    expect(codes(r.errors), JSON.stringify(r.body)).toEqual(['UNAVAILABLE']);
    expect(r.data?.sendMessage ?? null).toBeNull();
    await waitFor(async () => (await send(url, token, roomId, 'after')).data?.sendMessage, 10_000, 'Redis to answer again');
    const texts = (await gqlOk<{ messages: { edges: { node: { text: string } }[] } }>(url, HISTORY, { roomId }, token)).messages.edges.map(
      (e) => e.node.text,
    );
    expect(texts).toEqual(['before', 'after']);
  });

  it('should answer UNAVAILABLE fast when Redis is stopped, never admitting', async () => {
    const { token, roomId } = await userWithRoom(url, 'down');
    await redis!.stop();
    redis = undefined;
    const results: HttpResult<{ sendMessage: { id: string } }>[] = [];
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      results.push(await send(url, token, roomId, `down ${i}`));
      expect(Date.now() - started).toBeLessThan(2500);
    }
    for (const r of results) {
      expect(codes(r.errors), JSON.stringify(r.body)).toEqual(['UNAVAILABLE']);
      expect(r.data?.sendMessage ?? null).toBeNull();
    }
  });
});
