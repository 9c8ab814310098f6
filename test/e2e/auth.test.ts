import type { GraphQLFormattedError } from 'graphql';
import { CloseCode } from 'graphql-ws';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AccMeDocument,
  CreateRoomDocument,
  MyRoomsDocument,
  OnMessageAddedDocument,
  SendMessageDocument,
  UserByIdDocument,
} from '../generated/graphql.js';
import {
  codes,
  gql,
  gqlOk,
  parseSse,
  type SseEvent,
  subscribe,
  waitFor,
  withTimeout,
  wsClient,
  type Subscription,
} from '../helpers/clients.js';
import { startCluster, TEST_JWT_SECRET, type TestInstance, tokenFor, uid, waitForStreams } from '../helpers/server.js';


/** Seconds since the epoch, as JWT `exp` wants them. */
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A token of the right shape whose signature no server secret produced. */
const forgedAlgNone = (sub: string) => {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${part({ alg: 'none', typ: 'JWT' })}.${part({ sub, exp: nowSeconds() + 3600 })}.`;
};

/** A GraphQL-over-SSE subscription (POST, `accept: text/event-stream`), read as it streams. */
async function openSse(url: string, query: string, variables: Record<string, unknown>, token: string | null) {
  const controller = new AbortController();
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ query, variables }),
    signal: controller.signal,
  });
  const events: SseEvent[] = [];
  let ended = false;
  const reading = (async () => {
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        const parsed = parseSse(buffer);
        buffer = parsed.rest;
        events.push(...parsed.events);
      }
    } catch {
      // aborted by close()
    } finally {
      ended = true;
    }
  })();
  /** The GraphQL results carried by `next` events (or unnamed events). */
  const results = () =>
    events
      .filter((e) => e.event === 'next' || e.event === 'message')
      .filter((e) => e.data.trim() !== '')
      .map((e) => JSON.parse(e.data) as { data?: unknown; errors?: GraphQLFormattedError[] });
  return {
    status: res.status,
    contentType: res.headers.get('content-type') ?? '',
    events,
    results,
    ended: () => ended,
    async close() {
      controller.abort();
      await reading;
    },
  };
}

/** The codes of the errors a graphql-ws subscription answered with, whether as a result or as an `error` message. */
async function subscriptionErrorCodes(sub: Subscription<unknown>, ms = 5000): Promise<unknown[]> {
  await waitFor(() => sub.results.length > 0 || sub.done(), ms, 'the subscription to answer');
  const first = sub.results[0];
  if (first) return codes(first.errors as GraphQLFormattedError[] | undefined);
  const err = await withTimeout(sub.error, ms, 'the subscription error');
  return (Array.isArray(err) ? err : [err]).map((e) => (e as GraphQLFormattedError).extensions?.code);
}

describe('when a request reaches the API over HTTP', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2)) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  describe('when the token is missing or not valid', () => {
    const badTokens: [string, () => Promise<string | null>][] = [
      ['no token', async () => null],
      ['a garbage token', async () => 'garbage'],
      ['a three-part token that is not a JWT', async () => 'not.a.jwt'],
      ['a token signed with another secret', () => tokenFor('mallory', { secret: 'another-secret-0123456789abcdef' })],
      ['an expired token', () => tokenFor('mallory', { expiresIn: nowSeconds() - 60 })],
      ['an unsigned (alg none) token', async () => forgedAlgNone('mallory')],
      [
        'a token without a sub claim',
        () =>
          new SignJWT({ name: 'Nobody' })
            .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
            .setExpirationTime('1h')
            .sign(new TextEncoder().encode(TEST_JWT_SECRET)),
      ],
    ];

    it.each(badTokens)('should answer UNAUTHENTICATED and no data to a query with %s', async (_label, make) => {
      const token = await make();
      const r = await gql(a.url, AccMeDocument, undefined, { token });
      expect(codes(r.errors)).toEqual(['UNAUTHENTICATED']);
      expect(r.data ?? null).toBeNull();
    });

    it.each(badTokens)('should answer UNAUTHENTICATED and no data to a mutation with %s', async (_label, make) => {
      const token = await make();
      const r = await gql(a.url, CreateRoomDocument, { input: { name: 'nope' } }, { token });
      expect(codes(r.errors)).toEqual(['UNAUTHENTICATED']);
      expect(r.data ?? null).toBeNull();
    });

    it('should answer UNAUTHENTICATED to an Authorization header that is not a Bearer token', async () => {
      const token = await tokenFor(uid('basic'));
      const r = await gql(a.url, AccMeDocument, undefined, { headers: { authorization: `Basic ${token}` } });
      expect(codes(r.errors)).toEqual(['UNAUTHENTICATED']);
      expect(r.data ?? null).toBeNull();
    });

    it('should answer UNAUTHENTICATED to a GET request with no token', async () => {
      const res = await fetch(`${a.url}?query=${encodeURIComponent('{ me { id } }')}`, {
        headers: { accept: 'application/graphql-response+json, application/json' },
        signal: AbortSignal.timeout(5000),
      });
      const body = (await res.json()) as { data?: unknown; errors?: GraphQLFormattedError[] };
      expect(codes(body.errors)).toEqual(['UNAUTHENTICATED']);
      expect(body.data ?? null).toBeNull();
    });

    it('should not run a mutation sent with a forged token', async () => {
      const victim = uid('victim');
      const forged = await tokenFor(victim, { secret: 'another-secret-0123456789abcdef' });
      const r = await gql(a.url, CreateRoomDocument, { input: { name: 'forged room' } }, { token: forged });
      expect(codes(r.errors)).toEqual(['UNAUTHENTICATED']);
      const { rooms } = await gqlOk(b.url, MyRoomsDocument, {}, await tokenFor(victim));
      expect(rooms.edges).toEqual([]);
    });
  });

  describe('when the request is anonymous introspection', () => {
    it('should answer { __schema { queryType { name } } } without a token', async () => {
      const r = await gql<{ __schema: { queryType: { name: string } } }>(a.url, '{ __schema { queryType { name } } }');
      expect(r.errors).toBeUndefined();
      expect(r.data?.__schema.queryType.name).toBe('Query');
    });

    it('should answer { __typename } without a token', async () => {
      const r = await gql<{ __typename: string }>(a.url, '{ __typename }');
      expect(r.errors).toBeUndefined();
      expect(r.data).toEqual({ __typename: 'Query' });
    });

    it('should answer __type lookups without a token', async () => {
      const r = await gql<{ __type: { name: string; fields: { name: string }[] } }>(
        a.url,
        '{ __type(name: "Room") { name fields { name } } }',
      );
      expect(r.errors).toBeUndefined();
      expect(r.data?.__type.fields.map((f) => f.name)).toEqual(expect.arrayContaining(['id', 'name', 'members']));
    });

    it('should refuse a real field mixed into an introspection query', async () => {
      const r = await gql(a.url, '{ __typename me { id } }');
      expect(codes(r.errors)).toEqual(['UNAUTHENTICATED']);
      expect(r.data ?? null).toBeNull();
    });

    it('should refuse a real field hidden in a fragment', async () => {
      const r = await gql(a.url, 'query Q { __typename ...F } fragment F on Query { me { id } }');
      expect(codes(r.errors)).toEqual(['UNAUTHENTICATED']);
      expect(r.data ?? null).toBeNull();
    });
  });

  describe('when a valid token signs the request in', () => {
    it('should use the name claim as the display name', async () => {
      const id = uid('alice');
      const { me } = await gqlOk(a.url, AccMeDocument, {}, await tokenFor(id, { name: 'Alice Liddell' }));
      expect(me).toEqual({ id, name: 'Alice Liddell' });
    });

    it('should default the display name to the user id', async () => {
      const id = uid('noname');
      const { me } = await gqlOk(a.url, AccMeDocument, {}, await tokenFor(id));
      expect(me).toEqual({ id, name: id });
    });

    it('should make the user exist for others from the first request', async () => {
      const id = uid('newcomer');
      const observer = await tokenFor(uid('observer'));
      expect((await gqlOk(b.url, UserByIdDocument, { id }, observer)).user).toBeNull();
      await gqlOk(a.url, AccMeDocument, {}, await tokenFor(id, { name: 'New Comer' }));
      expect((await gqlOk(b.url, UserByIdDocument, { id }, observer)).user).toEqual({ id, name: 'New Comer' });
    });

    it('should refresh the name on the next sign-in with another name', async () => {
      const id = uid('renamed');
      const observer = await tokenFor(uid('observer'));
      await gqlOk(a.url, AccMeDocument, {}, await tokenFor(id, { name: 'First Name' }));
      const { me } = await gqlOk(a.url, AccMeDocument, {}, await tokenFor(id, { name: 'Second Name' }));
      expect(me.name).toBe('Second Name');
      expect((await gqlOk(b.url, UserByIdDocument, { id }, observer)).user?.name).toBe('Second Name');
    });

    it('should show the latest token name even when that name was used before on the same instance', async () => {
      const id = uid('flipflop');
      const observer = await tokenFor(uid('observer'));
      const asAlice = await tokenFor(id, { name: 'Alice' });
      const asAlicia = await tokenFor(id, { name: 'Alicia' });
      await gqlOk(a.url, AccMeDocument, {}, asAlice);
      await gqlOk(b.url, AccMeDocument, {}, asAlicia);
      expect((await gqlOk(a.url, UserByIdDocument, { id }, observer)).user?.name).toBe('Alicia');
      // Back to the first name, on the instance that already saw it.
      const { me } = await gqlOk(a.url, AccMeDocument, {}, asAlice);
      expect(me.name).toBe('Alice');
      expect((await gqlOk(b.url, UserByIdDocument, { id }, observer)).user?.name).toBe('Alice');
    });

    it('should name the sender of a message with the token name', async () => {
      const id = uid('sender');
      const token = await tokenFor(id, { name: 'Sender Name' });
      const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'names' } }, token);
      const { sendMessage } = await gqlOk(b.url, SendMessageDocument, { input: { roomId: createRoom.id, text: 'hi' } }, token);
      expect(sendMessage.sender).toEqual({ id, name: 'Sender Name' });
      expect(createRoom.owner).toEqual({ id, name: 'Sender Name' });
    });
  });

  describe('when a subscription is requested over SSE', () => {
    const query = 'subscription S($roomId: ID!) { messageAdded(roomId: $roomId) { id text } }';

    it.each([
      ['no token', async () => null],
      ['a garbage token', async () => 'garbage'],
      ['a token signed with another secret', () => tokenFor('mallory', { secret: 'another-secret-0123456789abcdef' })],
      ['an expired token', () => tokenFor('mallory', { expiresIn: nowSeconds() - 60 })],
    ] as [string, () => Promise<string | null>][])('should answer UNAUTHENTICATED with %s', async (_label, make) => {
      const owner = await tokenFor(uid('sse-owner'));
      const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'sse' } }, owner);
      const streamsBefore = a.app.services.events.openCount();
      const sse = await openSse(a.url, query, { roomId: createRoom.id }, await make());
      try {
        await waitFor(() => sse.results().length > 0 || sse.ended(), 5000, 'an SSE answer');
        const [first] = sse.results();
        expect(codes(first?.errors)).toEqual(['UNAUTHENTICATED']);
        expect(first?.data ?? null).toBeNull();
        expect(a.app.services.events.openCount()).toBe(streamsBefore);
      } finally {
        await sse.close();
      }
    });

    it('should stream messages to a member with a valid token', async () => {
      const owner = await tokenFor(uid('sse-owner'));
      const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'sse live' } }, owner);
      const before = a.app.services.events.openCount();
      const sse = await openSse(a.url, query, { roomId: createRoom.id }, owner);
      try {
        expect(sse.status).toBe(200);
        expect(sse.contentType).toContain('text/event-stream');
        await waitForStreams(a, before + 1);
        const { sendMessage } = await gqlOk(b.url, SendMessageDocument, { input: { roomId: createRoom.id, text: 'over sse' } }, owner);
        await waitFor(() => sse.results().length > 0, 5000, 'an SSE message');
        expect(sse.results()[0]).toEqual({ data: { messageAdded: { id: sendMessage.id, text: 'over sse' } } });
      } finally {
        await sse.close();
      }
    });
  });

  describe('when a WebSocket connects', () => {
    it.each([
      ['no token', async () => null],
      ['a garbage token', async () => 'garbage'],
      ['a token signed with another secret', () => tokenFor('mallory', { secret: 'another-secret-0123456789abcdef' })],
      ['an expired token', () => tokenFor('mallory', { expiresIn: nowSeconds() - 60 })],
      ['an unsigned (alg none) token', async () => forgedAlgNone('mallory')],
    ] as [string, () => Promise<string | null>][])('should close the socket with 4403 given %s', async (_label, make) => {
      const closes: number[] = [];
      const client = wsClient(a.wsUrl, await make(), { onClose: (code) => closes.push(code) });
      try {
        await waitFor(() => closes.length > 0, 5000, 'the socket to close');
        expect(closes[0]).toBe(CloseCode.Forbidden);
      } finally {
        await client.dispose();
      }
    });

    it('should refuse the operations of a socket whose token was refused', async () => {
      const closes: number[] = [];
      const client = wsClient(a.wsUrl, 'garbage', { onClose: (code) => closes.push(code) });
      try {
        const sub = subscribe(client, AccMeDocument);
        await waitFor(() => sub.done(), 5000, 'the operation to end');
        expect(sub.results).toEqual([]);
        expect(closes).toContain(CloseCode.Forbidden);
      } finally {
        await client.dispose();
      }
    });

    it('should run queries and subscriptions with a valid token', async () => {
      const id = uid('ws-user');
      const token = await tokenFor(id, { name: 'Socket User' });
      const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'ws' } }, token);
      const closes: number[] = [];
      const client = wsClient(b.wsUrl, token, { onClose: (code) => closes.push(code) });
      try {
        const me = subscribe(client, AccMeDocument);
        expect((await me.nth(1)).data?.me).toEqual({ id, name: 'Socket User' });
        await withTimeout(me.completed, 5000, 'the query to complete');

        const before = b.app.services.events.openCount();
        const sub = subscribe(client, OnMessageAddedDocument, { roomId: createRoom.id });
        await waitForStreams(b, before + 1);
        await gqlOk(a.url, SendMessageDocument, { input: { roomId: createRoom.id, text: 'over ws' } }, token);
        expect((await sub.nth(1)).data?.messageAdded).toMatchObject({ text: 'over ws', sender: { id } });
        expect(closes).toEqual([]);
      } finally {
        await client.dispose();
      }
    });

    it('should make the user exist from a WebSocket sign-in, with the token name', async () => {
      const id = uid('ws-first');
      const client = wsClient(a.wsUrl, await tokenFor(id, { name: 'Socket First' }));
      try {
        const observer = await tokenFor(uid('observer'));
        const user = await waitFor(
          async () => (await gqlOk(b.url, UserByIdDocument, { id }, observer)).user,
          5000,
          'the user to exist',
        );
        expect(user).toEqual({ id, name: 'Socket First' });
      } finally {
        await client.dispose();
      }
    });

    it('should keep an authenticated socket open and answer FORBIDDEN (not UNAUTHENTICATED) to an outsider subscribing to a room', async () => {
      const owner = await tokenFor(uid('owner'));
      const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'closed' } }, owner);
      const client = wsClient(a.wsUrl, await tokenFor(uid('outsider')));
      try {
        const sub = subscribe(client, OnMessageAddedDocument, { roomId: createRoom.id });
        expect(await subscriptionErrorCodes(sub as Subscription<unknown>)).toEqual(['FORBIDDEN']);
      } finally {
        await client.dispose();
      }
    });
  });
});
