import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateRoomDocument } from '../generated/graphql.js';
import { gqlOk } from '../helpers/clients.js';
import { startInstance, tokenFor, uid, uniquePrefix, type TestInstance } from '../helpers/server.js';

/**
 * The HTTP fast lane (src/infra/fast-lane.ts) runs the common request without yoga's HTTP layer.
 * Differential: each request is sent twice, once as is (fast lane) and once with an Origin header,
 * which leaves it to yoga; both answers must match in status, content type, body and the headers
 * plugins add. The instance's counter shows which path each took.
 */

let server: TestInstance;
let token: string;
let roomId: string;

beforeAll(async () => {
  server = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('fast-lane'), RATE_LIMITS: 'createRoom=2/1m,*=100000/1m' });
  token = await tokenFor(uid('fl'), { name: 'Fast Lane' });
  roomId = (await gqlOk(server.url, CreateRoomDocument, { input: { name: 'fast lane' } }, token)).createRoom.id;
});

afterAll(async () => {
  await server?.stop();
});

interface Answer {
  status: number;
  contentType: string | null;
  body: unknown;
  headers: Record<string, string>;
}

/** Headers CORS adds to yoga's answer (the Origin request) and nothing else would. */
const CORS_ONLY = /^(access-control-|vary$)/;
/** Headers that differ between any two answers. */
const PER_RESPONSE = new Set(['date', 'connection', 'keep-alive', 'ratelimit-remaining', 'ratelimit-reset']);

async function post(body: unknown, headers: Record<string, string>, viaYoga: boolean): Promise<Answer & { fast: boolean }> {
  const before = server.app.fastLaneRequests();
  const res = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers, ...(viaYoga ? { origin: 'http://example.test' } : {}) },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  const kept: Record<string, string> = {};
  res.headers.forEach((value, name) => {
    if (!PER_RESPONSE.has(name) && !CORS_ONLY.test(name)) kept[name] = value;
  });
  return {
    status: res.status,
    contentType: res.headers.get('content-type'),
    body: JSON.parse(text) as unknown,
    headers: kept,
    fast: server.app.fastLaneRequests() > before,
  };
}

/** Sends the request both ways; expects the first to take the fast lane, the second yoga, and equal answers. */
async function both(body: unknown, headers: Record<string, string> = {}) {
  const fast = await post(body, headers, false);
  const yoga = await post(body, headers, true);
  expect(fast.fast, 'the plain request took the fast lane').toBe(true);
  expect(yoga.fast, 'the request with an Origin went to yoga').toBe(false);
  const { fast: _f, ...fastAnswer } = fast;
  const { fast: _y, ...yogaAnswer } = yoga;
  expect(fastAnswer).toEqual(yogaAnswer);
  return fastAnswer;
}

const auth = () => ({ authorization: `Bearer ${token}` });

describe('when a plain query or mutation is POSTed as JSON', () => {
  it.each([
    ['no Accept', {}, 'application/json; charset=utf-8'],
    ['Accept */*', { accept: '*/*' }, 'application/json; charset=utf-8'],
    ['Accept application/json', { accept: 'application/json' }, 'application/json; charset=utf-8'],
    ['Accept application/*', { accept: 'application/*' }, 'application/json; charset=utf-8'],
    ['JSON listed first', { accept: 'application/json, application/graphql-response+json' }, 'application/json; charset=utf-8'],
    ["Apollo Client's Accept", { accept: 'application/graphql-response+json,application/json;q=0.9' }, 'application/graphql-response+json; charset=utf-8'],
    [
      "urql's Accept",
      { accept: 'application/graphql-response+json, application/graphql+json, application/json, text/event-stream, multipart/mixed' },
      'application/graphql-response+json; charset=utf-8',
    ],
  ])('should answer as yoga does with %s', async (_label, accept, contentType) => {
    const answer = await both({ query: '{ me { id name } }' }, { ...auth(), ...accept });
    expect(answer.status).toBe(200);
    expect(answer.contentType).toBe(contentType);
    expect(answer.body).toEqual({ data: { me: { id: expect.any(String), name: 'Fast Lane' } } });
    expect(answer.headers['ratelimit-limit']).toBe('100000');
  });

  it('should run variables and an operation name like yoga', async () => {
    const query = 'query A { me { id } } query B($id: ID!) { room(id: $id) { id name } }';
    const answer = await both({ query, variables: { id: roomId }, operationName: 'B' }, auth());
    expect(answer.body).toEqual({ data: { room: { id: roomId, name: 'fast lane' } } });
  });

  it('should answer execution errors with the same codes and status as yoga', async () => {
    const forbidden = await both({ query: 'query($r: ID!) { messages(roomId: $r, last: 1) { edges { cursor } } }', variables: { r: 'nope' } }, auth());
    expect(JSON.stringify(forbidden.body)).toMatch(/"code":"(NOT_FOUND|FORBIDDEN)"/);
    const anonymous = await both({ query: '{ me { id } }' }, {});
    expect(JSON.stringify(anonymous.body)).toContain('"code":"UNAUTHENTICATED"');
    const badInput = await both({ query: 'mutation { sendMessage(input: { roomId: "x", text: "" }) { id } }' }, auth());
    expect(JSON.stringify(badInput.body)).toMatch(/"code":"(BAD_USER_INPUT|NOT_FOUND|FORBIDDEN)"/);
    // Variables that do not coerce: refused before execution (400 under graphql-response+json).
    for (const accept of ['application/graphql-response+json', 'application/json']) {
      const badVariables = await both({ query: 'query($id: ID!) { room(id: $id) { id } }', variables: { id: { a: 1 } } }, { ...auth(), accept });
      expect(JSON.stringify(badVariables.body)).toContain('"code":"BAD_USER_INPUT"');
    }
  });

  it('should answer a rate-limited mutation 429 with Retry-After and the RateLimit headers, as yoga does', async () => {
    const limited = await tokenFor(uid('fl-limited'));
    const create = (viaYoga: boolean) =>
      post({ query: 'mutation { createRoom(input: { name: "limited" }) { id } }' }, { authorization: `Bearer ${limited}` }, viaYoga);
    expect((await create(false)).status).toBe(200);
    expect((await create(false)).status).toBe(200);
    const fast = await create(false);
    const yoga = await create(true);
    expect(fast.fast).toBe(true);
    for (const answer of [fast, yoga]) {
      expect(answer.status).toBe(429);
      expect(answer.headers['retry-after']).toMatch(/^\d+$/);
      expect(answer.headers['ratelimit-limit']).toBe('100000');
      expect(JSON.stringify(answer.body)).toContain('"code":"RATE_LIMITED"');
    }
    expect(fast.headers).toEqual(yoga.headers);
    expect(fast.contentType).toEqual(yoga.contentType);
  });
});

describe('when a request is anything but the common case', () => {
  it.each([
    ['a parse error', { query: '{ me { id ' }, {}],
    ['a validation error', { query: '{ nope }' }, {}],
    ['an unknown parameter', { query: '{ me { id } }', other: 1 }, {}],
    ['variables that are not an object', { query: '{ me { id } }', variables: [1] }, {}],
    ['two operations and no operation name', { query: 'query A { me { id } } query B { me { name } }' }, {}],
    ['a subscription', { query: 'subscription($r: ID!) { messageAdded(roomId: $r) { id } }', variables: { r: 'x' } }, {}],
    ['an Accept only for event streams', { query: '{ me { id } }' }, { accept: 'text/event-stream' }],
    ['a debug header', { query: '{ me { id } }' }, { 'x-debug-redis': '1' }],
  ])('should leave %s to yoga', async (_label, body, headers) => {
    const before = server.app.fastLaneRequests();
    const res = await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth(), ...headers },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    await res.arrayBuffer();
    expect(res.status).toBeLessThan(500);
    expect(server.app.fastLaneRequests()).toBe(before);
  });

  it('should leave a batch to yoga', async () => {
    const before = server.app.fastLaneRequests();
    const res = await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth() },
      body: JSON.stringify([{ query: '{ me { id } }' }]),
      signal: AbortSignal.timeout(10_000),
    });
    await res.arrayBuffer();
    expect(server.app.fastLaneRequests()).toBe(before);
  });
});
