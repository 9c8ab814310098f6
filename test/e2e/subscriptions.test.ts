import type { ExecutionResult } from 'graphql';
import type { Client as WsClient } from 'graphql-ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  AddMembersDocument,
  CreateRoomDocument,
  DeleteMessageDocument,
  EditMessageDocument,
  JoinRoomDocument,
  LeaveRoomDocument,
  OnMessageAddedDocument,
  OnRoomEventsDocument,
  RemoveMemberDocument,
  SendMessageDocument,
  type OnMessageAddedSubscription,
  type OnRoomEventsSubscription,
  type RoomVisibility,
} from '../generated/graphql.js';
import {
  completesWithin,
  gqlOk,
  operationErrors,
  range,
  subscribe,
  type Subscription,
  waitFor,
  withTimeout,
  wsClient,
} from '../helpers/clients.js';
import { startServer, type ChildServer } from '../helpers/process.js';
import {
  sharedRedisUrl,
  startCluster,
  TEST_JWT_SECRET,
  tokenFor,
  uniquePrefix,
  type TestInstance,
} from '../helpers/server.js';

let a: TestInstance;
let b: TestInstance;
const tokens: Record<string, string> = {};
const clients: WsClient[] = [];

/** A graphql-ws client that is disposed after the test. */
function client(instance: { wsUrl: string }, user: string): WsClient {
  const c = wsClient(instance.wsUrl, tokens[user] ?? null);
  clients.push(c);
  return c;
}

/** Open room streams across both instances (a subscription is live server-side). */
const streams = () => a.app.services.events.openCount() + b.app.services.events.openCount();

/** Resolves once `n` more streams than `base` are open on the two instances. */
const streamsOpened = (base: number, n: number) => waitFor(() => streams() >= base + n, 5000, `${n} live subscriptions`);

/** Creates a room owned by `owner` on `instance` with the given members. */
async function createRoom(
  instance: { url: string },
  owner: string,
  memberIds: string[],
  visibility: RoomVisibility = 'PRIVATE',
): Promise<string> {
  const { createRoom } = await gqlOk(
    instance.url,
    CreateRoomDocument,
    { input: { name: `room-${Math.random().toString(36).slice(2, 8)}`, visibility, memberIds } },
    tokens[owner]!,
  );
  return createRoom.id;
}

/** Sends one message and returns it. */
async function send(instance: { url: string }, user: string, roomId: string, text: string) {
  const { sendMessage } = await gqlOk(instance.url, SendMessageDocument, { input: { roomId, text } }, tokens[user]!);
  return sendMessage;
}

/** Sends `n` messages concurrently (at most `parallel` in flight), alternating instances. */
async function sendConcurrently(
  targets: { instance: TestInstance; user: string }[],
  roomId: string,
  n: number,
  label: string,
  parallel = 25,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const t = targets[i % targets.length]!;
      await send(t.instance, t.user, roomId, `${label} ${i}`);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

const seqsOf = (results: ExecutionResult<OnMessageAddedSubscription>[]) =>
  results.map((r) => r.data?.messageAdded.seq);

/** These tests are about delivery, not limits: whatever defaults rate limiting gets, lift them. */
const UNLIMITED = { RATE_LIMITS: 'off' };

beforeAll(async () => {
  [a, b] = (await startCluster(2, UNLIMITED)) as [TestInstance, TestInstance];
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) {
    tokens[user] = await tokenFor(user, { name: user[0]!.toUpperCase() + user.slice(1) });
  }
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.dispose()));
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

describe('when a message is sent on one instance and subscribed to on another', () => {
  it('should deliver it from B to a subscriber on A and from A to a subscriber on B', async () => {
    const roomId = await createRoom(a, 'alice', ['bob']);
    const base = streams();
    const onA = subscribe(client(a, 'alice'), OnMessageAddedDocument, { roomId });
    const onB = subscribe(client(b, 'bob'), OnMessageAddedDocument, { roomId });
    await streamsOpened(base, 2);

    await send(b, 'bob', roomId, 'from B');
    expect((await onA.nth(1)).data?.messageAdded).toMatchObject({ seq: 1, text: 'from B', sender: { id: 'bob' } });

    await send(a, 'alice', roomId, 'from A');
    const onBResults = await onB.take(2);
    expect(onBResults.map((r) => r.data?.messageAdded)).toMatchObject([
      { seq: 1, text: 'from B', sender: { id: 'bob' } },
      { seq: 2, text: 'from A', sender: { id: 'alice' } },
    ]);
    expect((await onA.nth(2)).data?.messageAdded).toMatchObject({ seq: 2, text: 'from A' });
  });

  it('should give every subscriber on both instances every message once, in seq order', async () => {
    const members = ['bob', 'carol', 'dave', 'erin', 'frank'];
    const roomId = await createRoom(a, 'alice', members);
    const base = streams();
    const subs = ['alice', ...members].map((user, i) => {
      const instance = i % 2 === 0 ? a : b;
      return subscribe(client(instance, user), OnMessageAddedDocument, { roomId });
    });
    // A second subscription of the same user on the same socket counts as its own subscriber.
    subs.push(subscribe(clients[0]!, OnMessageAddedDocument, { roomId }));
    await streamsOpened(base, subs.length);

    const n = 60;
    await sendConcurrently(
      [
        { instance: a, user: 'alice' },
        { instance: b, user: 'bob' },
        { instance: a, user: 'carol' },
        { instance: b, user: 'dave' },
      ],
      roomId,
      n,
      'burst',
    );
    // A sentinel sent after the burst: anything duplicated would show up before it.
    await send(b, 'erin', roomId, 'sentinel');
    for (const sub of subs) {
      const results = await sub.take(n + 1);
      expect(results.every((r) => !r.errors)).toBe(true);
      expect(seqsOf(results)).toEqual(range(1, n + 1));
      expect(results[n]?.data?.messageAdded.text).toBe('sentinel');
      expect(new Set(results.map((r) => r.data?.messageAdded.text)).size).toBe(n + 1);
    }
  });
});

describe('when a member subscribes to roomEvents', () => {
  it('should deliver message and membership events from the other instance, in order', async () => {
    const roomId = await createRoom(a, 'alice', ['bob'], 'PUBLIC');
    const base = streams();
    const events = subscribe(client(a, 'alice'), OnRoomEventsDocument, { roomId });
    await streamsOpened(base, 1);

    const sent = await send(b, 'bob', roomId, 'hello');
    await gqlOk(b.url, EditMessageDocument, { messageId: sent.id, text: 'hello, edited' }, tokens.bob!);
    await gqlOk(b.url, DeleteMessageDocument, { messageId: sent.id }, tokens.bob!);
    await gqlOk(b.url, AddMembersDocument, { roomId, userIds: ['carol'] }, tokens.alice!);
    await gqlOk(b.url, JoinRoomDocument, { roomId }, tokens.dave!);
    await gqlOk(b.url, RemoveMemberDocument, { roomId, userId: 'carol' }, tokens.alice!);
    await gqlOk(b.url, LeaveRoomDocument, { roomId }, tokens.dave!);

    const results = await events.take(7);
    expect(results.every((r) => !r.errors)).toBe(true);
    const got = results.map((r) => r.data?.roomEvents) as OnRoomEventsSubscription['roomEvents'][];
    expect(got).toEqual([
      { __typename: 'MessageAdded', message: { id: sent.id, seq: 1, text: 'hello' } },
      { __typename: 'MessageEdited', message: { id: sent.id, text: 'hello, edited', editedAt: expect.any(String) } },
      { __typename: 'MessageDeleted', message: { id: sent.id, deleted: true } },
      { __typename: 'MemberJoined', user: { id: 'carol' }, addedBy: { id: 'alice' } },
      { __typename: 'MemberJoined', user: { id: 'dave' }, addedBy: null },
      { __typename: 'MemberLeft', user: { id: 'carol' }, removedBy: { id: 'alice' } },
      { __typename: 'MemberLeft', user: { id: 'dave' }, removedBy: null },
    ]);
    expect(events.done()).toBe(false);
  });
});

describe('when messageAdded is given an after cursor', () => {
  it('should replay every later message, then go live, without gap or duplicate while 100 are sent concurrently from the other instance', async () => {
    const roomId = await createRoom(a, 'alice', ['bob']);
    const history = 300;
    await sendConcurrently([{ instance: a, user: 'alice' }], roomId, history, 'history', 20);
    const { messages } = await gqlOk(
      a.url,
      /* GraphQL */ `query First($roomId: ID!) { messages(roomId: $roomId, first: 1) { edges { node { id seq } } } }`,
      { roomId },
      tokens.alice!,
    ) as { messages: { edges: { node: { id: string; seq: number } }[] } };
    const first = messages.edges[0]!.node;
    expect(first.seq).toBe(1);

    const live = 100;
    const sub = subscribe(client(a, 'alice'), OnMessageAddedDocument, { roomId, after: first.id });
    // No wait: the live burst races the subscription's start and its replay from storage.
    const burst = sendConcurrently([{ instance: b, user: 'bob' }], roomId, live, 'live', 20);
    await sub.nth(1, 10_000);
    await burst;
    const total = history + live;
    await send(b, 'bob', roomId, 'sentinel');
    const results = await sub.take(total, 10_000);
    expect(results.every((r) => !r.errors)).toBe(true);
    expect(seqsOf(results)).toEqual(range(2, total + 1));
    expect(results[total - 1]?.data?.messageAdded.text).toBe('sentinel');
  });

  it('should answer BAD_USER_INPUT when after is a message of another room', async () => {
    const roomId = await createRoom(a, 'alice', []);
    const otherRoomId = await createRoom(a, 'alice', []);
    const other = await send(a, 'alice', otherRoomId, 'elsewhere');
    const sub = subscribe(client(b, 'alice'), OnMessageAddedDocument, { roomId, after: other.id });
    const errors = await operationErrors(sub);
    expect(errors.map((e) => e.extensions?.code)).toEqual(['BAD_USER_INPUT']);
    expect(errors[0]?.extensions?.field).toBe('after');
    await withTimeout(Promise.race([sub.completed, sub.error]), 1000, 'the operation to end');
    expect(sub.results.filter((r) => r.data)).toEqual([]);
  });
});

describe('when the owner removes a member on instance B', () => {
  it("should end the removed user's subscriptions on A and B within 1 s while others continue", async () => {
    const roomId = await createRoom(a, 'alice', ['bob', 'carol']);
    const base = streams();
    const bobA = client(a, 'bob');
    const bobB = client(b, 'bob');
    const carolA = client(a, 'carol');
    const carolB = client(b, 'carol');
    const removed = [
      subscribe(bobA, OnMessageAddedDocument, { roomId }),
      subscribe(bobA, OnRoomEventsDocument, { roomId }),
      subscribe(bobB, OnMessageAddedDocument, { roomId }),
      subscribe(bobB, OnRoomEventsDocument, { roomId }),
    ];
    const staying = {
      messagesA: subscribe(carolA, OnMessageAddedDocument, { roomId }),
      eventsB: subscribe(carolB, OnRoomEventsDocument, { roomId }),
    };
    await streamsOpened(base, 6);

    await gqlOk(b.url, RemoveMemberDocument, { roomId, userId: 'bob' }, tokens.alice!);
    const removedAt = Date.now();
    await Promise.all(removed.map((s, i) => completesWithin(s, 1000, `bob's subscription #${i + 1}`)));
    expect(Date.now() - removedAt).toBeLessThan(1000);

    await send(a, 'alice', roomId, 'after removal');
    expect((await staying.messagesA.nth(1)).data?.messageAdded).toMatchObject({ seq: 1, text: 'after removal' });
    const events = await staying.eventsB.take(2);
    expect(events.map((r) => r.data?.roomEvents)).toMatchObject([
      { __typename: 'MemberLeft', user: { id: 'bob' }, removedBy: { id: 'alice' } },
      { __typename: 'MessageAdded', message: { seq: 1, text: 'after removal' } },
    ]);
    expect(staying.messagesA.done() || staying.eventsB.done()).toBe(false);
    for (const s of removed) {
      expect(s.results.some((r) => JSON.stringify(r).includes('after removal'))).toBe(false);
    }
  });
});

describe('when a member leaves a room', () => {
  it("should end the leaver's own subscriptions on both instances", async () => {
    const roomId = await createRoom(a, 'alice', ['bob']);
    const base = streams();
    const leaving = [
      subscribe(client(a, 'bob'), OnMessageAddedDocument, { roomId }),
      subscribe(client(b, 'bob'), OnRoomEventsDocument, { roomId }),
    ];
    const owner = subscribe(client(b, 'alice'), OnMessageAddedDocument, { roomId });
    await streamsOpened(base, 3);

    await gqlOk(a.url, LeaveRoomDocument, { roomId }, tokens.bob!);
    await Promise.all(leaving.map((s, i) => completesWithin(s, 1000, `bob's subscription #${i + 1}`)));

    await send(a, 'alice', roomId, 'still here');
    expect((await owner.nth(1)).data?.messageAdded).toMatchObject({ seq: 1, text: 'still here' });
    expect(owner.done()).toBe(false);
  });
});

describe('when subscribing over SSE', () => {
  it('should receive a message sent on the other instance', async () => {
    const roomId = await createRoom(a, 'alice', ['bob']);
    const base = streams();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10_000);
    try {
      const res = await fetch(a.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'text/event-stream',
          authorization: `Bearer ${tokens.alice}`,
        },
        body: JSON.stringify({
          query: 'subscription ($roomId: ID!) { messageAdded(roomId: $roomId) { id seq text sender { id } } }',
          variables: { roomId },
        }),
        signal: abort.signal,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const reader = res.body!.getReader();
      const firstEvent = readSseEvent(reader, (e) => e.event === 'next');
      // Aborting in `finally` rejects the read: never an unhandled rejection when a step above fails.
      firstEvent.catch(() => undefined);
      await streamsOpened(base, 1);
      await send(b, 'bob', roomId, 'over sse');
      const ev = await withTimeout(firstEvent, 5000, 'an SSE "next" event');
      expect(JSON.parse(ev.data)).toMatchObject({
        data: { messageAdded: { seq: 1, text: 'over sse', sender: { id: 'bob' } } },
      });
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  });
});

describe('when a subscriber disconnects', () => {
  it('should release its room stream on the server without waiting for the next event', async () => {
    const roomId = await createRoom(a, 'alice', []);
    const base = streams();
    const c = client(a, 'alice');
    subscribe(c, OnMessageAddedDocument, { roomId });
    subscribe(c, OnRoomEventsDocument, { roomId });
    await streamsOpened(base, 2);
    await c.dispose();
    // Nothing is sent to the room: an idle room must not pin a gone subscriber's listener and buffer.
    await waitFor(() => streams() <= base, 2000, 'the streams of the closed socket to be released');
  });
});

describe('when a server runs as its own process', () => {
  // Plain node, as deployed: graphql-ws tells errors from execution arguments with `instanceof
  // GraphQLError`, which depends on which copy of graphql is loaded; a test runner's module
  // resolution must not be what makes these pass.
  let child: ChildServer;
  beforeAll(async () => {
    child = await startServer({
      ...UNLIMITED,
      REDIS_URL: sharedRedisUrl(),
      REDIS_KEY_PREFIX: uniquePrefix('subs-child'),
      JWT_SECRET: TEST_JWT_SECRET,
    });
  });
  afterAll(async () => {
    await child?.stop();
  });

  it('should answer a graphql-ws subscription with a syntax error with an error, keep the socket open, and serve another subscription on it', async () => {
    const roomId = await createRoom(child, 'alice', ['bob']);
    let closedWith: number | null = null;
    const c = wsClient(child.wsUrl, tokens.alice!, { onClose: (code) => (closedWith = code) });
    clients.push(c);

    const broken = subscribe(c, 'subscription { messageAdded(roomId: "x") { id ', {});
    const errors = await operationErrors(broken);
    expect(errors[0]?.message).toMatch(/Syntax Error/);
    expect(errors.map((e) => e.extensions?.code)).toEqual(['BAD_USER_INPUT']);

    const working = subscribe(c, OnMessageAddedDocument, { roomId });
    // No stream counter in another process: a message is sent until one arrives.
    const first = await sendUntilReceived(child, roomId, working);
    expect(first).toMatchObject({ text: 'still open', sender: { id: 'bob' } });
    expect(closedWith).toBeNull();
    expect(broken.results).toEqual([]);
  });

  it('should answer a graphql-ws subscription that fails validation with BAD_USER_INPUT and keep the socket open', async () => {
    const roomId = await createRoom(child, 'alice', ['bob']);
    let closedWith: number | null = null;
    const c = wsClient(child.wsUrl, tokens.alice!, { onClose: (code) => (closedWith = code) });
    clients.push(c);

    const invalid = subscribe(c, 'subscription { messageAdded(roomId: "x") { nope } }', {});
    const errors = await operationErrors(invalid);
    expect(errors[0]?.message).toMatch(/nope/);
    const working = subscribe(c, OnMessageAddedDocument, { roomId });
    expect(await sendUntilReceived(child, roomId, working)).toMatchObject({ text: 'still open' });
    expect(closedWith).toBeNull();
    // The contract's catalogue has no GRAPHQL_VALIDATION_FAILED: a bad document is bad user input.
    expect(errors.map((e) => e.extensions?.code)).toEqual(['BAD_USER_INPUT']);
  });
});

/**
 * Sends "still open" messages (bounded) until the subscription gets one: for a server in another
 * process, whose open streams cannot be counted, this is how a test knows a subscription is live.
 */
async function sendUntilReceived(
  server: { url: string },
  roomId: string,
  sub: Subscription<OnMessageAddedSubscription>,
): Promise<OnMessageAddedSubscription['messageAdded']> {
  const received = await waitFor(
    async () => {
      if (sub.results.length === 0) await send(server, 'bob', roomId, 'still open');
      return sub.results[0];
    },
    5000,
    'a message on the new subscription',
  );
  expect(received.errors).toBeUndefined();
  return received.data!.messageAdded;
}

/** Reads server-sent events until one matches (comments and pings are skipped). */
async function readSseEvent(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  match: (e: { event: string; data: string }) => boolean,
): Promise<{ event: string; data: string }> {
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    let boundary: number;
    while ((boundary = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      const ev = { event, data: data.join('\n') };
      if (data.length > 0 && match(ev)) return ev;
    }
    const { value, done } = await reader.read();
    if (done) throw new Error('the event stream ended before the expected event');
    buffer += decoder.decode(value, { stream: true });
  }
}
