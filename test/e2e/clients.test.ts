import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { afterAll, afterEach, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import {
  CreateRoomDocument,
  errorCodes,
  JoinRoomDocument,
  MeDocument,
  MessagesDocument,
  OnMessageAddedDocument,
  resumable,
  SendMessageDocument,
  type MessagesQuery,
  type OnMessageAddedSubscription,
  type ResumeSink,
} from '../../src/sdk/index.js';
import { apolloApp, urqlApp, type AppTransport } from '../helpers/apps.js';
import { clientPool, createRoomAs, deferred, gqlOk, range, waitFor, withTimeout } from '../helpers/clients.js';
import { startProxy, type TcpProxy } from '../helpers/proxy.js';
import { openStreams, startCluster, testUsers, waitForStreams, waitForStreamsReleased, type TestInstance } from '../helpers/server.js';

/** What an operation gave the app: its typed data, or the error its client raised. */
interface Outcome<T> {
  data?: T | null;
  error?: unknown;
}

/** The three things an app does with a client, written as each client's docs show. */
interface AppClient {
  query<T, V>(doc: TypedDocumentNode<T, V>, variables: V): Promise<Outcome<T>>;
  mutate<T, V>(doc: TypedDocumentNode<T, V>, variables: V): Promise<Outcome<T>>;
  /** One subscription attempt reporting to `sink` (the shape `resumable` takes). */
  subscribe<T, V>(doc: TypedDocumentNode<T, V>, variables: V, sink: ResumeSink<T>): () => void;
}

const CLIENTS: { name: string; make(t: AppTransport): AppClient }[] = [
  {
    name: 'Apollo Client (HttpLink + GraphQLWsLink, split by operation type)',
    make(t) {
      const apollo = apolloApp(t);
      return {
        // Default error policy: a GraphQL error rejects the promise, as apps meet it.
        query: (query, variables) =>
          apollo.query({ query, variables, fetchPolicy: 'network-only' } as never).then(
            (r) => ({ data: r.data as never }),
            (error: unknown) => ({ error }),
          ),
        mutate: (mutation, variables) =>
          apollo.mutate({ mutation, variables } as never).then(
            (r) => ({ data: r.data as never }),
            (error: unknown) => ({ error }),
          ),
        subscribe(query, variables, sink) {
          const s = apollo.subscribe({ query, variables } as never).subscribe({
            next: (r) => (r.error ? sink.error(r.error) : sink.next(r.data as never)),
            error: (e) => sink.error(e),
            complete: () => sink.complete(),
          });
          return () => s.unsubscribe();
        },
      };
    },
  },
  {
    name: 'urql (@urql/core with graphcache, subscriptionExchange over graphql-ws)',
    make(t) {
      const urql = urqlApp(t);
      return {
        query: async (doc, variables) => {
          const r = await urql.query(doc, variables as never, { requestPolicy: 'network-only' }).toPromise();
          return { data: r.data, error: r.error };
        },
        mutate: async (doc, variables) => {
          const r = await urql.mutation(doc, variables as never).toPromise();
          return { data: r.data, error: r.error };
        },
        subscribe(doc, variables, sink) {
          const s = urql.subscription(doc, variables as never).subscribe((r) => (r.error ? sink.error(r.error) : r.data && sink.next(r.data)));
          return () => s.unsubscribe();
        },
      };
    },
  },
];

describe.each(CLIENTS)('when an app uses $name against two instances', ({ make }) => {
  const users = testUsers();
  const pool = clientPool();
  let a: TestInstance;
  let b: TestInstance;
  let proxy: TcpProxy;
  beforeAll(async () => {
    [a, b] = (await startCluster(2)) as [TestInstance, TestInstance];
    proxy = await startProxy(b.port);
  });
  afterEach(async () => {
    await pool.disposeAll();
    await waitForStreamsReleased([a, b]);
  });
  afterAll(async () => {
    await proxy?.close();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  /** A signed-in app: HTTP to instance A, WebSocket to instance B (through `wsUrl` if given). */
  const appFor = (user: string, wsUrl = b.wsUrl) => {
    const token = users.token(user);
    return make({ httpUrl: a.url, ws: pool.open(wsUrl, token), token });
  };

  it('should query, mutate, and receive on a subscription (B) what another user sent (A)', async () => {
    const alice = await users.newUser('alice');
    const bob = await users.newUser('bob');
    const app = appFor(alice);

    const me = await app.query(MeDocument, {});
    expect(me.error).toBeUndefined();
    expect(me.data?.me).toMatchObject({ id: alice, name: 'alice', presence: { status: expect.any(String) } });
    const created = await app.mutate(CreateRoomDocument, { input: { name: 'clients', memberIds: [bob] } });
    const roomId = created.data?.createRoom.id as string;
    expect(created.data?.createRoom).toMatchObject({ name: 'clients', memberCount: 2, owner: { id: alice } });

    const got = deferred<OnMessageAddedSubscription>();
    app.subscribe(OnMessageAddedDocument, { roomId }, { next: got.resolve, error: got.reject, complete: () => undefined });
    await waitForStreams(b, 1);
    await gqlOk(a.url, SendMessageDocument, { input: { roomId, text: 'hello apps' } }, users.token(bob));
    const event = await withTimeout(got.promise, 5000, 'the message on the subscription');
    expectTypeOf(event.messageAdded.seq).toEqualTypeOf<number>();
    expect(event.messageAdded).toMatchObject({ seq: 1, text: 'hello apps', sender: { id: bob, name: 'bob' } });
  });

  it("should surface the contract's error codes to the app, over HTTP and over WebSocket", async () => {
    const alice = await users.newUser('alice');
    const mallory = await users.newUser('mallory');
    const roomId = await createRoomAs(a.url, users.token(alice), [], { label: 'private' });
    const app = appFor(mallory);

    expect(errorCodes((await app.mutate(SendMessageDocument, { input: { roomId, text: 'let me in' } })).error)).toEqual(['FORBIDDEN']);
    expect(errorCodes((await app.mutate(JoinRoomDocument, { roomId: 'no-such-room' })).error)).toEqual(['NOT_FOUND']);
    expect(errorCodes((await appFor(alice).mutate(SendMessageDocument, { input: { roomId, text: '   ' } })).error)).toEqual([
      'BAD_USER_INPUT',
    ]);
    const anonymous = make({ httpUrl: a.url, ws: pool.open(b.wsUrl, users.token(mallory)), token: null });
    expect(errorCodes((await anonymous.query(MeDocument, {})).error)).toEqual(['UNAUTHENTICATED']);

    // A refused subscription ends with its code, and is not retried.
    const ended = deferred<unknown>();
    resumable(
      { subscribe: (after, sink) => app.subscribe(OnMessageAddedDocument, { roomId, after }, sink), cursor: (e: OnMessageAddedSubscription) => e.messageAdded.id },
      { next: () => undefined, error: ended.resolve },
    );
    expect(errorCodes(await withTimeout(ended.promise, 5000, 'the subscription to be refused'))).toEqual(['FORBIDDEN']);
  });

  it('should resume after a dropped connection with `after` = the last message received, missing nothing and repeating nothing', async () => {
    const alice = await users.newUser('alice');
    const bob = await users.newUser('bob');
    const roomId = await createRoomAs(a.url, users.token(alice), [bob], { label: 'resume' });
    const send = (text: string) => gqlOk(a.url, SendMessageDocument, { input: { roomId, text } }, users.token(alice));
    // Bob's WebSocket reaches B through a link the test can cut.
    const app = appFor(bob, proxy.wsUrl);
    const seqs: number[] = [];
    const failed = deferred<unknown>();
    const sub = resumable(
      {
        subscribe: (after, sink) => app.subscribe(OnMessageAddedDocument, { roomId, after }, sink),
        cursor: (e: OnMessageAddedSubscription) => e.messageAdded.id,
        retryDelaysMs: [100, 200, 400],
      },
      { next: (e: OnMessageAddedSubscription) => seqs.push(e.messageAdded.seq), error: failed.resolve },
    );
    try {
      await waitForStreams(b, 1);
      await send('one');
      await send('two');
      await waitFor(() => seqs.length === 2, 5000, 'the first two messages');

      proxy.cut();
      await waitFor(() => openStreams(b) === 0, 5000, 'B to notice the dropped connection');
      for (const text of ['three', 'four', 'five']) await send(text);
      proxy.restore();

      await waitFor(() => seqs.length >= 5, 10_000, 'the messages sent while disconnected');
      await send('six');
      await waitFor(() => seqs.length >= 6, 5000, 'a live message after resuming');
      expect(seqs).toEqual(range(1, 6));
      expect(await Promise.race([failed.promise, Promise.resolve('no error')])).toBe('no error');
    } finally {
      sub.unsubscribe();
      proxy.restore();
    }
  });
});

describe('when an app pages history with its client’s Relay pagination helper', () => {
  const users = testUsers();
  const pool = clientPool();
  let a: TestInstance;
  let alice: string;
  let roomId: string;
  beforeAll(async () => {
    [a] = (await startCluster(1)) as [TestInstance];
    alice = await users.newUser('alice');
    roomId = await createRoomAs(a.url, users.token(alice), [], { label: 'history' });
    for (const i of range(1, 12)) await gqlOk(a.url, SendMessageDocument, { input: { roomId, text: `m${i}` } }, users.token(alice));
  });
  afterAll(async () => {
    await pool.disposeAll();
    await a?.stop();
  });
  const transport = (): AppTransport => ({ httpUrl: a.url, ws: pool.open(a.wsUrl, users.token(alice)), token: users.token(alice) });
  const seqsOf = (data: MessagesQuery | undefined) => data?.messages.edges.map((e) => e.node.seq);

  it('should merge pages backward (last/before) and forward (first/after) with Apollo relayStylePagination', async () => {
    /** A watched query's list as the app renders it, once the first page is in. */
    const watch = async (variables: { roomId: string; first?: number; last?: number }) => {
      const query = apolloApp(transport()).watchQuery({ query: MessagesDocument, variables });
      const subscription = query.subscribe(() => undefined);
      const current = () => query.getCurrentResult().data as MessagesQuery | undefined;
      await waitFor(() => current(), 5000, 'the first page');
      /** fetchMore, then the watched list once the merged page reaches it (it follows the promise). */
      const more = async (variables: { before?: string | null; after?: string | null }) => {
        const had = current()?.messages.edges.length ?? 0;
        await query.fetchMore({ variables });
        await waitFor(() => (current()?.messages.edges.length ?? 0) > had, 5000, 'the merged page');
      };
      return { current, more, stop: () => subscription.unsubscribe() };
    };

    const backward = await watch({ roomId, last: 5 });
    expect(seqsOf(backward.current())).toEqual(range(8, 12));
    while (backward.current()?.messages.pageInfo.hasPreviousPage) {
      await backward.more({ before: backward.current()?.messages.pageInfo.startCursor });
    }
    expect(seqsOf(backward.current())).toEqual(range(1, 12));
    backward.stop();

    const forward = await watch({ roomId, first: 5 });
    while (forward.current()?.messages.pageInfo.hasNextPage) {
      await forward.more({ after: forward.current()?.messages.pageInfo.endCursor });
    }
    expect(seqsOf(forward.current())).toEqual(range(1, 12));
    forward.stop();
  });

  it('should merge pages forward (first/after) and backward (last/before) with urql graphcache relayPagination', async () => {
    const forward = urqlApp(transport());
    let page = (await forward.query(MessagesDocument, { roomId, first: 5 }).toPromise()).data;
    while (page?.messages.pageInfo.hasNextPage) {
      page = (await forward.query(MessagesDocument, { roomId, first: 5, after: page.messages.pageInfo.endCursor }).toPromise()).data;
    }
    // Each answer is every page so far, merged by the resolver.
    expect(seqsOf(page)).toEqual(range(1, 12));

    const backward = urqlApp(transport());
    page = (await backward.query(MessagesDocument, { roomId, last: 5 }).toPromise()).data;
    page = (await backward.query(MessagesDocument, { roomId, last: 5, before: page?.messages.pageInfo.startCursor }).toPromise()).data;
    expect(seqsOf(page)).toEqual(range(3, 12));
    expect(page?.messages.pageInfo.hasPreviousPage).toBe(true);
  });
});
