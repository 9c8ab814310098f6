import type { GraphQLFormattedError } from 'graphql';
import { serverAudits } from 'graphql-http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { codes, deferred, gql, gqlOk, type HttpResult, range, subscribe, waitFor, withTimeout, wsClient } from '../helpers/clients.js';
import { startInstance, tokenFor, uid, uniquePrefix, type TestInstance } from '../helpers/server.js';

/**
 * Query hardening with the default limits (MAX_DEPTH=12, MAX_ALIASES=30, MAX_DIRECTIVES=20,
 * MAX_TOKENS=1000, MAX_COST=5000, MAX_BODY_BYTES=1 MiB, pages of at most 100): each abuse is refused
 * with a clear error carrying `extensions.code`, and the server keeps serving.
 */

const MAX_BODY_BYTES = 1_048_576;

let a: TestInstance;
let token: string;
let roomId: string;

beforeAll(async () => {
  a = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('hardening'), RATE_LIMITS: '*=100000/1m' });
  token = await tokenFor(uid('hardener'));
  const { createRoom } = await gqlOk<{ createRoom: { id: string } }>(
    a.url,
    'mutation { createRoom(input: { name: "hardening" }) { id } }',
    undefined,
    token,
  );
  roomId = createRoom.id;
});

afterAll(async () => {
  await a?.stop();
});

afterEach(async () => {
  // Whatever the abuse, the server keeps serving.
  const r = await gql(a.url, '{ me { id } }', undefined, { token });
  expect(r.status).toBe(200);
  expect(r.errors).toBeUndefined();
});

/** Expects a request refused before execution with one BAD_USER_INPUT error whose message matches. */
function expectRefused(r: HttpResult<unknown>, message: RegExp, status = 400) {
  // GraphQL over HTTP: an application/graphql-response+json response without `data` MUST be 4xx/5xx.
  expect(r.status, `${r.headers.get('content-type')} ${JSON.stringify(r.body)}`).toBe(status);
  expect(codes(r.errors), JSON.stringify(r.errors)).toEqual(['BAD_USER_INPUT']);
  expect(r.errors?.[0]?.message).toMatch(message);
  expect(r.data ?? null).toBeNull();
}

const nestedInlineFragments = (depth: number) => `{ ${'... on Query { '.repeat(depth)}__typename${' }'.repeat(depth)} }`;
const aliasedMe = (n: number) => `{ ${range(1, n).map((i) => `a${i}: me { id }`).join(' ')} }`;
const directives = (n: number) => `{ ${range(1, n).map((i) => `t${i}: __typename @include(if: true)`).join(' ')} }`;

describe('when a query is too deep (MAX_DEPTH=12)', () => {
  it('should refuse depth 13 with BAD_USER_INPUT naming the limit', async () => {
    expectRefused(await gql(a.url, nestedInlineFragments(12), undefined, { token }), /depth limit of 12 exceeded/i);
  });

  it('should run a query at the limit', async () => {
    const r = await gql(a.url, nestedInlineFragments(11), undefined, { token });
    expect(r.errors).toBeUndefined();
    expect(r.data).toEqual({ __typename: 'Query' });
  });

  it('should refuse a deep query over WebSocket too, with an error and the socket left open', async () => {
    const closes: number[] = [];
    const client = wsClient(a.wsUrl, token, { onClose: (code) => closes.push(code) });
    try {
      const deep = subscribe(client, nestedInlineFragments(13).replace(/^\{/, 'query Deep {'));
      await waitFor(() => deep.results.length > 0 || deep.done(), 5000, 'the deep operation to be answered');
      const answer = deep.results[0]?.errors ?? (await withTimeout(deep.error, 1000, 'the error'));
      expect(Array.isArray(answer), `expected GraphQL errors, got ${JSON.stringify(answer)} (socket closes: ${JSON.stringify(closes)})`).toBe(true);
      const errors = answer as GraphQLFormattedError[];
      expect(codes(errors)).toEqual(['BAD_USER_INPUT']);
      expect(errors[0]?.message).toMatch(/depth limit of 12 exceeded/i);
      expect(closes).toEqual([]);
    } finally {
      await client.dispose();
    }
  });
});

describe('when a query has too many aliases (MAX_ALIASES=30)', () => {
  it('should refuse 31 aliases', async () => {
    expectRefused(await gql(a.url, aliasedMe(31), undefined, { token }), /aliases limit of 30 exceeded/i);
  });

  it('should run 30', async () => {
    const r = await gql<Record<string, { id: string }>>(a.url, aliasedMe(30), undefined, { token });
    expect(r.errors).toBeUndefined();
    expect(Object.keys(r.data ?? {})).toHaveLength(30);
  });
});

describe('when a query has too many directives (MAX_DIRECTIVES=20)', () => {
  it('should refuse 21 directives', async () => {
    expectRefused(await gql(a.url, directives(21), undefined, { token }), /directives limit of 20 exceeded/i);
  });

  it('should run 20', async () => {
    const r = await gql(a.url, directives(20), undefined, { token });
    expect(r.errors).toBeUndefined();
  });
});

describe('when a query has too many tokens (MAX_TOKENS=1000)', () => {
  it('should refuse a 20,000-token query at parse time', async () => {
    // `__typename` 20,000 times between braces: ~20,002 tokens, well under the body limit.
    const query = `{ ${'__typename '.repeat(20_000)}}`;
    expect(Buffer.byteLength(JSON.stringify({ query }))).toBeLessThan(MAX_BODY_BYTES);
    const started = Date.now();
    const r = await gql(a.url, query, undefined, { token });
    expectRefused(r, /token limit of 1000 exceeded/i);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('should refuse it anonymously too', async () => {
    expectRefused(await gql(a.url, `{ ${'__typename '.repeat(20_000)}}`), /token limit of 1000 exceeded/i);
  });
});

describe('when a query costs too much (MAX_COST=5000)', () => {
  it('should refuse 100 rooms × 100 messages before running it', async () => {
    const query = '{ rooms(first: 100) { edges { node { messages(first: 100) { edges { node { id text sender { name } } } } } } } }';
    expectRefused(await gql(a.url, query, undefined, { token }), /cost limit of 5000 exceeded/i);
  });

  it('should run a modest page', async () => {
    const r = await gql(a.url, '{ rooms(first: 10) { edges { node { id messages(first: 10) { edges { node { id } } } } } } }', undefined, { token });
    expect(r.errors).toBeUndefined();
  });
});

describe('when a page asks for more than 100 items', () => {
  it.each([
    ['messages first', 'query Q($roomId: ID!) { messages(roomId: $roomId, first: 101) { edges { cursor } } }', 'first'],
    ['messages last', 'query Q($roomId: ID!) { messages(roomId: $roomId, last: 101) { edges { cursor } } }', 'last'],
    ['Room.messages first', 'query Q($roomId: ID!) { room(id: $roomId) { messages(first: 101) { edges { cursor } } } }', 'first'],
    ['Room.members first', 'query Q($roomId: ID!) { room(id: $roomId) { members(first: 101) { edges { cursor } } } }', 'first'],
    ['rooms first', '{ rooms(first: 101) { edges { cursor } } }', 'first'],
    ['publicRooms first', '{ publicRooms(first: 101) { edges { cursor } } }', 'first'],
  ])('should refuse %s: 101 with BAD_USER_INPUT naming the argument', async (_label, query, field) => {
    const r = await gql(a.url, query, { roomId }, { token });
    expect(codes(r.errors), JSON.stringify(r.errors)).toEqual(['BAD_USER_INPUT']);
    expect(r.errors?.[0]?.extensions?.field).toBe(field);
    expect(r.errors?.[0]?.message).toMatch(/100/);
  });

  it('should serve 100', async () => {
    const r = await gql(a.url, 'query Q($roomId: ID!) { messages(roomId: $roomId, first: 100) { edges { cursor } } }', { roomId }, { token });
    expect(r.errors).toBeUndefined();
  });
});

describe('when a JSON POST body is not a GraphQL request', () => {
  /** POSTs a raw body as application/json. */
  const postRaw = async (body: string) => {
    const r = await fetch(a.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', authorization: `Bearer ${token}` },
      body,
    });
    const json = (await r.json()) as { errors?: GraphQLFormattedError[]; data?: unknown };
    return { status: r.status, errors: json.errors, data: json.data };
  };

  it.each([
    ['malformed JSON', '{"query": "{ __typename }"', /not valid JSON/],
    ['JSON null', 'null', /JSON object/],
    ['a JSON string', '"{ __typename }"', /JSON object/],
    ['an empty object', '{}', /JSON object/],
  ])('should answer %s with 400 and BAD_USER_INPUT', async (_label, body, message) => {
    const r = await postRaw(body);
    expect(r.status).toBe(400);
    expect(codes(r.errors), JSON.stringify(r.errors)).toEqual(['BAD_USER_INPUT']);
    expect(r.errors?.[0]?.message).toMatch(message);
    expect(r.data ?? null).toBeNull();
  });

  it('should run a body split over many packets (chunks joined before parsing)', async () => {
    const query = `{ me { id } ${'\n'.repeat(200_000)} }`;
    const r = await postRaw(JSON.stringify({ query }));
    expect(r.status).toBe(200);
    expect(r.errors).toBeUndefined();
  });
});

describe('when a request body is over MAX_BODY_BYTES', () => {
  const bigBody = () => JSON.stringify({ query: '{ __typename }', variables: { pad: 'x'.repeat(MAX_BODY_BYTES) } });

  it('should answer 413 with BAD_USER_INPUT when Content-Length says so', async () => {
    const res = await fetch(a.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: bigBody(),
      signal: AbortSignal.timeout(10_000),
    });
    expect(res.status).toBe(413);
    const body = (await res.json()) as { errors: GraphQLFormattedError[] };
    expect(codes(body.errors)).toEqual(['BAD_USER_INPUT']);
    expect(body.errors[0]?.message).toMatch(/body/i);
  });

  it('should refuse a body streamed without a Content-Length (411) instead of reading it unbounded', async () => {
    const chunk = new TextEncoder().encode(bigBody());
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < chunk.length; i += 65_536) controller.enqueue(chunk.subarray(i, i + 65_536));
        controller.close();
      },
    });
    const res = await fetch(a.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: stream,
      duplex: 'half',
      signal: AbortSignal.timeout(10_000),
    } as RequestInit & { duplex: 'half' }).catch((err: Error) => err);
    // Refusing by closing the connection mid-upload is also acceptable; running it is not.
    if (res instanceof Error) return;
    const text = await res.text();
    expect(res.status, text.slice(0, 300)).toBe(411);
    expect(codes((JSON.parse(text) as { errors: GraphQLFormattedError[] }).errors)).toEqual(['BAD_USER_INPUT']);
  });

  it('should keep serving after refusing one', async () => {
    const r = await gql(a.url, '{ __typename }', undefined, { token });
    expect(r.data).toEqual({ __typename: 'Query' });
  });
});

describe('when a WebSocket frame is over MAX_BODY_BYTES', () => {
  it('should close that socket with 1009 and leave others open', async () => {
    const bystander = wsClient(a.wsUrl, token);
    const ws = new WebSocket(a.wsUrl, 'graphql-transport-ws');
    const acked = deferred<void>();
    const closed = deferred<number>();
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })));
    ws.on('message', (raw) => {
      if ((JSON.parse(String(raw)) as { type: string }).type === 'connection_ack') acked.resolve();
    });
    ws.on('close', (code) => closed.resolve(code));
    ws.on('error', () => undefined);
    try {
      await withTimeout(acked.promise, 5000, 'connection_ack');
      ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: '{ __typename }', variables: { pad: 'x'.repeat(MAX_BODY_BYTES) } } }));
      expect(await withTimeout(closed.promise, 5000, 'the socket to close')).toBe(1009);
      const sub = subscribe(bystander, '{ __typename }');
      expect((await sub.nth(1)).data).toEqual({ __typename: 'Query' });
    } finally {
      ws.close();
      await bystander.dispose();
    }
  });
});

describe('when rate limits are on with their defaults', () => {
  let limited: TestInstance | undefined;
  // The URL is read when each audit runs, after beforeAll started the instance.
  const audits = serverAudits({
    url: () => {
      if (!limited) throw new Error('the instance is not started');
      return limited.url;
    },
  });

  beforeAll(async () => {
    // RATE_LIMITS empty: the SDL defaults and the default per-user budget, not `off`.
    limited = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('hardening-audits'), RATE_LIMITS: '' });
  });

  afterAll(async () => {
    await limited?.stop();
  });

  it('should be limiting (the budget headers are there)', async () => {
    const r = await gql(limited!.url, '{ __typename }');
    expect(r.headers.get('ratelimit-limit')).toBe('600');
  });

  for (const audit of audits) {
    it(`should still pass graphql-http ${audit.id}: ${audit.name}`, async () => {
      const result = await audit.fn();
      if (result.status === 'error') {
        const body = await result.response
          .clone()
          .text()
          .catch(() => '');
        expect.fail(`${result.name}: ${result.reason} (HTTP ${result.response.status}) ${body.slice(0, 500)}`);
      }
    });
  }
});
