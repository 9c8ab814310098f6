import type { GraphQLFormattedError } from 'graphql';
import type { Client as WsClient, SubscribePayload } from 'graphql-ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CreateRoomDocument, OnMessageAddedDocument, SendMessageDocument } from '../generated/graphql.js';
import { gqlOk, range, subscribe, waitFor, withTimeout, wsClient } from '../helpers/clients.js';
import { clusterForFile, testUsers, waitForStreams } from '../helpers/server.js';

/**
 * WebSocket operation set-ups wait for one of WS_SETUP_CONCURRENCY slots per instance (here 2): a
 * burst of subscriptions on two instances all go live with at most 2 set-ups at once on each, and
 * an operation that fails anywhere in its set-up gives its slot back.
 */

const SETUP_CONCURRENCY = 2;
const [a, b] = [0, 1];
const instances = clusterForFile(2, { WS_SETUP_CONCURRENCY: String(SETUP_CONCURRENCY) });
const users = testUsers();
const clients: WsClient[] = [];
let owner: string;
let roomId: string;

beforeAll(async () => {
  owner = await users.newUser('owner');
  const { createRoom } = await gqlOk(instances[a]!.url, CreateRoomDocument, { input: { name: 'setups', visibility: 'PRIVATE' } }, users.token(owner));
  roomId = createRoom.id;
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.dispose()));
  // Nothing holds a slot or waits for one once the operations are over.
  await waitFor(() => instances.every((i) => i.app.wsSetups().inUse === 0 && i.app.wsSetups().waiting === 0), 5000, 'slots given back');
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.dispose()));
});

const open = (instance: number) => {
  const c = wsClient(instances[instance]!.wsUrl, users.token(owner));
  clients.push(c);
  return c;
};

/** Sends a raw operation and resolves with the errors it is answered with (bounded). */
function errorsOf(client: WsClient, payload: SubscribePayload): Promise<readonly GraphQLFormattedError[]> {
  return withTimeout(
    new Promise((resolve, reject) => {
      client.subscribe(payload, {
        next: (r) => (r.errors?.length ? resolve(r.errors) : reject(new Error(`expected errors, got ${JSON.stringify(r)}`))),
        error: (e) => (Array.isArray(e) ? resolve(e as GraphQLFormattedError[]) : reject(e instanceof Error ? e : new Error(JSON.stringify(e)))),
        complete: () => undefined,
      });
    }),
    5000,
    'the operation to fail',
  );
}

describe('when 40 subscriptions arrive at once on two instances', () => {
  it('should set up at most 2 at a time on each and deliver the next message to all 40', async () => {
    const streamsBefore = instances.map((i) => i.app.services.events.openCount());
    const peakBefore = instances.map((i) => i.app.wsSetups().peak);
    const subs = [a, a, b, b].flatMap((i) => {
      const c = open(i);
      return range(1, 10).map(() => subscribe(c, OnMessageAddedDocument, { roomId }));
    });
    await Promise.all(instances.map((i, k) => waitForStreams(i, (streamsBefore[k] as number) + 20)));
    for (const i of instances) {
      expect(i.app.wsSetups().peak).toBeLessThanOrEqual(SETUP_CONCURRENCY);
    }
    // The burst queued: each instance held both of its slots at some point.
    expect(instances.map((i) => i.app.wsSetups().peak)).toEqual(peakBefore.map(() => SETUP_CONCURRENCY));
    const { sendMessage } = await gqlOk(instances[b]!.url, SendMessageDocument, { input: { roomId, text: 'to all 40' } }, users.token(owner));
    const got = await Promise.all(subs.map((s) => s.nth(1)));
    expect(got.map((r) => r.data?.messageAdded.id)).toEqual(subs.map(() => sendMessage.id));
  });
});

describe('when set-ups fail at every step', () => {
  it('should give each slot back, so a subscription after 3 rounds of failures still goes live', async () => {
    const c = open(a);
    const stranger = await users.newUser('stranger');
    const { createRoom } = await gqlOk(instances[a]!.url, CreateRoomDocument, { input: { name: 'not-yours', visibility: 'PRIVATE' } }, users.token(stranger));
    const sub = 'subscription S($roomId: ID!) { messageAdded(roomId: $roomId) { id } }';
    const failures: [string, SubscribePayload, string][] = [
      ['a parse error', { query: 'subscription {' }, 'BAD_USER_INPUT'],
      ['a validation error', { query: 'subscription { messageAdded(roomId: "x") { nope } }' }, 'BAD_USER_INPUT'],
      ['an unknown operation name', { query: sub, operationName: 'Other', variables: { roomId } }, 'BAD_USER_INPUT'],
      ['a room the viewer is not in', { query: sub, operationName: 'S', variables: { roomId: createRoom.id } }, 'FORBIDDEN'],
      ['a bad after cursor', { query: 'subscription { messageAdded(roomId: "r", after: "???") { id } }' }, 'BAD_USER_INPUT'],
    ];
    for (let round = 1; round <= 3; round++) {
      const answers = await Promise.all(failures.map(([, payload]) => errorsOf(c, payload)));
      answers.forEach((errors, k) => {
        const [what, , code] = failures[k] as [string, SubscribePayload, string];
        expect(errors.map((e) => e.extensions?.code), `${what}: ${JSON.stringify(errors)}`).toContain(code);
      });
    }
    expect(instances[a]!.app.wsSetups().inUse).toBe(0);
    const live = subscribe(c, OnMessageAddedDocument, { roomId });
    const before = instances[a]!.app.services.events.openCount();
    await waitForStreams(instances[a]!, before + 1);
    const { sendMessage } = await gqlOk(instances[a]!.url, SendMessageDocument, { input: { roomId, text: 'after the failures' } }, users.token(owner));
    expect((await live.nth(1)).data?.messageAdded.id).toBe(sendMessage.id);
  });
});

describe('when queries and mutations run over the WebSocket', () => {
  it('should answer them, each set-up giving its slot back before it executes', async () => {
    const c = open(b);
    const results = await Promise.all(
      range(1, 6).map(
        (n) =>
          new Promise<unknown>((resolve, reject) => {
            c.subscribe(
              { query: 'mutation ($input: SendMessageInput!) { sendMessage(input: $input) { text } }', variables: { input: { roomId, text: `over ws ${n}` } } },
              { next: (r) => resolve(r.data), error: reject, complete: () => undefined },
            );
          }),
      ),
    );
    expect(results).toEqual(range(1, 6).map((n) => ({ sendMessage: { text: `over ws ${n}` } })));
  });
});
