import { gql as apolloGql } from '@apollo/client';
import type { ApolloClient } from '@apollo/client';
import type { Client as UrqlClient } from '@urql/core';
import { print, type DocumentNode } from 'graphql';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  CreateRoomDocument,
  errorCodes,
  MeDocument,
  OnMessageAddedDocument,
  persistedHash,
  SendMessageDocument,
  type OnMessageAddedSubscription,
} from '../../src/sdk/index.js';
import { apolloApp, urqlApp } from '../helpers/apps.js';
import { clientPool, operationErrors, subscribe, waitFor, type HttpResult } from '../helpers/clients.js';
import { startInstance, testUsers, waitForStreams, waitForStreamsReleased, type TestInstance } from '../helpers/server.js';

type Mode = 'off' | 'allowed' | 'required';

/** `extensions` naming an SDK document by its manifest hash (what Apollo's and urql's links send). */
const byHash = (doc: DocumentNode | string) => ({
  persistedQuery: { version: 1, sha256Hash: typeof doc === 'string' ? doc : (persistedHash(doc) as string) },
});

/** POSTs `body` as JSON. */
async function post(url: string, body: Record<string, unknown>, token: string): Promise<HttpResult<Record<string, unknown>>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as { data?: Record<string, unknown>; errors?: HttpResult<unknown>['errors'] };
  return { status: res.status, headers: res.headers, data: json.data, errors: json.errors, body: json };
}

/** Runs an SDK document by its hash alone and returns its data. */
async function runByHash<T>(url: string, doc: DocumentNode, variables: Record<string, unknown>, token: string): Promise<T> {
  const r = await post(url, { variables, extensions: byHash(doc) }, token);
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data as T;
}

/** A query that no manifest holds. */
const AD_HOC = 'query AdHoc { me { id } }';

describe('trusted documents (PERSISTED_OPERATIONS)', () => {
  const users = testUsers();
  const pool = clientPool();
  const instances = {} as Record<Mode, TestInstance>;
  let alice: string;
  let token: string;
  beforeAll(async () => {
    const started = await Promise.all((['off', 'allowed', 'required'] as const).map((m) => startInstance({ PERSISTED_OPERATIONS: m })));
    [instances.off, instances.allowed, instances.required] = started as [TestInstance, TestInstance, TestInstance];
    alice = await users.newUser('alice');
    token = users.token(alice);
  });
  afterEach(async () => {
    await pool.disposeAll();
    await waitForStreamsReleased(Object.values(instances));
  });
  afterAll(async () => {
    await Promise.all(Object.values(instances).map((i) => i?.stop()));
  });

  /** A room of alice's on `instance`, created by hash. */
  const newRoom = async (instance: TestInstance) =>
    (await runByHash<{ createRoom: { id: string } }>(instance.url, CreateRoomDocument, { input: { name: 'pq' } }, token)).createRoom.id;

  describe('when required', () => {
    it('should run an SDK operation sent as its manifest hash alone, by POST, GET or documentId', async () => {
      const url = instances.required.url;
      expect(await runByHash(url, MeDocument, {}, token)).toMatchObject({ me: { id: alice } });
      const get = await fetch(`${url}?extensions=${encodeURIComponent(JSON.stringify(byHash(MeDocument)))}`, {
        headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
      });
      expect(await get.json()).toMatchObject({ data: { me: { id: alice } } });
      const byId = await post(url, { documentId: `sha256:${persistedHash(MeDocument)}` }, token);
      expect(byId.data).toMatchObject({ me: { id: alice } });
    });

    it('should refuse an operation sent as text with FORBIDDEN and a message saying what to send', async () => {
      const r = await post(instances.required.url, { query: AD_HOC }, token);
      expect(errorCodes(r.errors)).toEqual(['FORBIDDEN']);
      expect(r.errors?.[0]?.message).toMatch(/^Only trusted documents run on this server \(PERSISTED_OPERATIONS=required\): send the sha256 hash/);
      expect(r.errors?.[0]?.extensions?.reason).toBe('PERSISTED_QUERY_ONLY');
      expect(r.data ?? null).toBeNull();
    });

    it('should refuse the text of an SDK operation too: what runs is named by its hash', async () => {
      const r = await post(instances.required.url, { query: print(MeDocument) }, token);
      expect(errorCodes(r.errors)).toEqual(['FORBIDDEN']);
    });

    it('should refuse a hash that is not in the manifest with NOT_FOUND and the PersistedQueryNotFound message clients know', async () => {
      const r = await post(instances.required.url, { extensions: byHash('0'.repeat(64)) }, token);
      expect(errorCodes(r.errors)).toEqual(['NOT_FOUND']);
      expect(r.errors?.[0]?.message).toBe('PersistedQueryNotFound');
    });

    it('should apply the same rule over WebSocket: a hash subscribes, a text is refused, the socket stays open', async () => {
      const roomId = await newRoom(instances.required);
      let closeCode: number | null = null;
      const ws = pool.open(instances.required.wsUrl, token);
      ws.on('closed', (e) => (closeCode = (e as { code: number }).code));
      const refused = subscribe(ws, `subscription { messageAdded(roomId: "${roomId}") { id } }`);
      expect(errorCodes(await operationErrors(refused))).toEqual(['FORBIDDEN']);
      const unknown = subscribe(ws, '', { roomId }, { extensions: byHash('f'.repeat(64)) });
      expect(errorCodes(await operationErrors(unknown))).toEqual(['NOT_FOUND']);

      const sub = subscribe<OnMessageAddedSubscription>(ws, '', { roomId }, { extensions: byHash(OnMessageAddedDocument) });
      await waitForStreams(instances.required, 1);
      await runByHash(instances.required.url, SendMessageDocument, { input: { roomId, text: 'by hash' } }, token);
      expect((await sub.nth(1)).data?.messageAdded).toMatchObject({ text: 'by hash', sender: { id: alice } });
      expect(closeCode).toBeNull();
    });

    /** Query, mutation and subscription through a client sending the SDK's hashes. */
    async function roundTrip(app: {
      me(): Promise<string | undefined>;
      createRoom(): Promise<string>;
      send(roomId: string, text: string): Promise<unknown>;
      subscribe(roomId: string, onMessage: (text: string) => void): void;
    }) {
      expect(await app.me()).toBe(alice);
      const roomId = await app.createRoom();
      const texts: string[] = [];
      app.subscribe(roomId, (t) => texts.push(t));
      await waitForStreams(instances.required, 1);
      await app.send(roomId, 'trusted');
      await waitFor(() => texts.includes('trusted'), 5000, 'the message on the subscription');
    }

    it('should serve Apollo Client with the persisted query link sending the SDK hashes (HTTP and WebSocket)', async () => {
      const ws = pool.open(instances.required.wsUrl, token);
      const apollo: ApolloClient = apolloApp({ httpUrl: instances.required.url, ws, token, persisted: true });
      await roundTrip({
        me: async () => (await apollo.query({ query: MeDocument })).data?.me.id,
        createRoom: async () => (await apollo.mutate({ mutation: CreateRoomDocument, variables: { input: { name: 'apollo-pq' } } })).data!.createRoom.id,
        send: (roomId, text) => apollo.mutate({ mutation: SendMessageDocument, variables: { input: { roomId, text } } }),
        subscribe: (roomId, onMessage) =>
          apollo.subscribe({ query: OnMessageAddedDocument, variables: { roomId } }).subscribe((r) => r.data && onMessage(r.data.messageAdded.text)),
      });
      // An ad-hoc document is not trusted: the link's retry with the text is refused, clearly.
      const adHoc = await apollo.query({ query: apolloGql(AD_HOC), errorPolicy: 'all', fetchPolicy: 'network-only' });
      expect(errorCodes(adHoc.error)).toEqual(['FORBIDDEN']);
    });

    it('should serve urql with persistedExchange sending the SDK hashes (HTTP and WebSocket)', async () => {
      const ws = pool.open(instances.required.wsUrl, token);
      const urql: UrqlClient = urqlApp({ httpUrl: instances.required.url, ws, token, persisted: true });
      await roundTrip({
        me: async () => (await urql.query(MeDocument, {}).toPromise()).data?.me.id,
        createRoom: async () => (await urql.mutation(CreateRoomDocument, { input: { name: 'urql-pq' } }).toPromise()).data!.createRoom.id,
        send: (roomId, text) => urql.mutation(SendMessageDocument, { input: { roomId, text } }).toPromise(),
        subscribe: (roomId, onMessage) =>
          void urql.subscription(OnMessageAddedDocument, { roomId }).subscribe((r) => r.data && onMessage(r.data.messageAdded.text)),
      });
    });
  });

  describe('when allowed', () => {
    it('should run texts and manifest hashes alike, and refuse an unknown hash', async () => {
      const url = instances.allowed.url;
      expect((await post(url, { query: AD_HOC }, token)).data).toEqual({ me: { id: alice } });
      expect(await runByHash(url, MeDocument, {}, token)).toMatchObject({ me: { id: alice } });
      expect(errorCodes((await post(url, { extensions: byHash('1'.repeat(64)) }, token)).errors)).toEqual(['NOT_FOUND']);
    });

    it('should let an Apollo persisted query link fall back to the text of a document the manifest lacks', async () => {
      const apollo = apolloApp({ httpUrl: instances.allowed.url, ws: pool.open(instances.allowed.wsUrl, token), token, persisted: true });
      const r = await apollo.query({ query: apolloGql(AD_HOC) });
      expect(r.data).toEqual({ me: { __typename: 'User', id: alice } });
    });
  });

  describe('when off', () => {
    it('should run texts, and answer a hash alone with PersistedQueryNotSupported', async () => {
      const url = instances.off.url;
      expect((await post(url, { query: AD_HOC }, token)).data).toEqual({ me: { id: alice } });
      const r = await post(url, { extensions: byHash(MeDocument) }, token);
      expect(errorCodes(r.errors)).toEqual(['BAD_USER_INPUT']);
      expect(r.errors?.[0]?.message).toBe('PersistedQueryNotSupported');
    });

    it('should let Apollo Client with the persisted query link fall back to texts', async () => {
      const apollo = apolloApp({ httpUrl: instances.off.url, ws: pool.open(instances.off.wsUrl, token), token, persisted: true });
      expect((await apollo.query({ query: MeDocument })).data?.me.id).toBe(alice);
    });
  });
});
