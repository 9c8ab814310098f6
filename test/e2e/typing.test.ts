import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  LeaveRoomDocument,
  OnMessageAddedDocument,
  RemoveMemberDocument,
  SendMessageDocument,
} from '../generated/graphql.js';
import { clientPool, codes, createRoomAs, gql, gqlOk, operationErrors, subscribe, waitFor, type Subscription } from '../helpers/clients.js';
import { deletePrefixed } from '../helpers/lua.js';
import {
  openStreams as streams,
  startCluster,
  testUsers,
  uniquePrefix,
  waitForStreamsReleased,
  type TestInstance,
} from '../helpers/server.js';

/**
 * Typing indicators end to end: real graphql-ws clients against two instances on one Redis. One
 * cluster has a long typing timeout (nothing expires while a test runs), another a 1 s one for
 * expiry. Each test uses fresh users and rooms.
 */

const TICK_MS = 100;
/** Whatever defaults rate limiting gets, these tests are not about it. */
const UNLIMITED = { RATE_LIMITS: 'off' };

interface TypingResult {
  typing: { roomId: string; users: { id: string }[] };
}
type RoomEvent =
  | { __typename: 'TypingChanged'; roomId: string; users: { id: string }[] }
  | { __typename: 'PresenceChanged'; roomId: string; present: boolean; user: { id: string } }
  | { __typename: 'MessageAdded'; message: { id: string; text: string } }
  | { __typename: string };
interface RoomEventsResult {
  roomEvents: RoomEvent;
}

const TYPING_SUB = /* GraphQL */ `
  subscription OnTyping($roomId: ID!) { typing(roomId: $roomId) { roomId users { id } } }
`;
const SET_TYPING = /* GraphQL */ `
  mutation SetTyping($roomId: ID!, $typing: Boolean!) { setTyping(roomId: $roomId, typing: $typing) }
`;
const ROOM_TYPING = /* GraphQL */ `
  query RoomTyping($id: ID!) { room(id: $id) { id typing { id } } }
`;
const ROOM_EVENTS_SUB = /* GraphQL */ `
  subscription OnRoomEventsEphemeral($roomId: ID!) {
    roomEvents(roomId: $roomId) {
      __typename
      ... on TypingChanged { roomId users { id } }
      ... on PresenceChanged { roomId present user { id } }
      ... on MessageAdded { message { id text } }
    }
  }
`;

/** Fresh users (labels sort as the alphabet, so lists ordered by id are predictable) and their tokens. */
const { newUser, token } = testUsers();
const clients = clientPool();
const liveInstances = new Set<TestInstance>();
const prefixes: string[] = [];
let a: TestInstance;
let b: TestInstance;

const client = (instance: TestInstance, userId: string) => clients.open(instance.wsUrl, token(userId));

const createRoom = (instance: TestInstance, owner: string, memberIds: string[], visibility: 'PUBLIC' | 'PRIVATE' = 'PRIVATE') =>
  createRoomAs(instance.url, token(owner), memberIds, { label: 'typing', visibility });

const setTyping = (instance: TestInstance, userId: string, roomId: string, typing: boolean) =>
  gqlOk<{ setTyping: boolean }>(instance.url, SET_TYPING, { roomId, typing }, token(userId));

/** `Room.typing` as `viewer` sees it on `instance`. */
async function typingNow(instance: TestInstance, viewer: string, roomId: string): Promise<string[]> {
  const { room } = await gqlOk<{ room: { typing: { id: string }[] } }>(instance.url, ROOM_TYPING, { id: roomId }, token(viewer));
  return room.typing.map((u) => u.id);
}

/** Opens `typing(roomId)` for `viewer` on `instance`, resolved once the stream is live server-side. */
async function watchTyping(instance: TestInstance, viewer: string, roomId: string): Promise<Subscription<TypingResult>> {
  const before = streams(instance);
  const sub = subscribe<TypingResult>(client(instance, viewer), TYPING_SUB, { roomId });
  await waitFor(() => streams(instance) > before || sub.done(), 5000, 'the typing subscription to be live');
  expect(sub.done()).toBe(false);
  return sub;
}

/** The lists a typing subscription received, in order. */
const lists = (sub: Subscription<TypingResult>) =>
  sub.results.map((r) => {
    if (r.errors) throw new Error(`typing subscription error: ${JSON.stringify(r.errors)}`);
    return r.data!.typing.users.map((u) => u.id);
  });

/** Waits for the `n`-th list and returns every list so far. */
async function listsAfter(sub: Subscription<TypingResult>, n: number, ms = 5000): Promise<string[][]> {
  await sub.take(n, ms);
  return lists(sub);
}

async function cluster(env: Record<string, string>): Promise<[TestInstance, TestInstance]> {
  const prefix = uniquePrefix('typing');
  prefixes.push(prefix);
  const instances = (await startCluster(2, { ...UNLIMITED, PRESENCE_TICK_MS: String(TICK_MS), ...env, REDIS_KEY_PREFIX: prefix })) as [
    TestInstance,
    TestInstance,
  ];
  for (const i of instances) liveInstances.add(i);
  return instances;
}

beforeAll(async () => {
  [a, b] = await cluster({ TYPING_TIMEOUT_SECONDS: '30' });
});

afterEach(async () => {
  await clients.disposeAll();
  await waitForStreamsReleased(liveInstances);
});

afterAll(async () => {
  await Promise.all([...liveInstances].map((i) => i.stop()));
  for (const prefix of prefixes) await deletePrefixed(prefix);
});

describe('when members start and stop typing on the other instance', () => {
  it('should send the full list, ordered by id, on every change, and Room.typing should agree on both instances', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const carol = await newUser('carol');
    const roomId = await createRoom(a, bob, [alice, carol]);
    const sub = await watchTyping(a, bob, roomId);

    expect(await setTyping(b, carol, roomId, true)).toEqual({ setTyping: true });
    expect(await listsAfter(sub, 1)).toEqual([[carol]]);
    await setTyping(b, alice, roomId, true);
    expect(await listsAfter(sub, 2)).toEqual([[carol], [alice, carol]]);
    for (const instance of [a, b]) expect(await typingNow(instance, bob, roomId)).toEqual([alice, carol]);

    await setTyping(a, carol, roomId, false);
    expect(await listsAfter(sub, 3)).toEqual([[carol], [alice, carol], [alice]]);
    await setTyping(b, alice, roomId, false);
    expect(await listsAfter(sub, 4)).toEqual([[carol], [alice, carol], [alice], []]);
    for (const instance of [a, b]) expect(await typingNow(instance, alice, roomId)).toEqual([]);
    expect(sub.results.every((r) => r.data?.typing.roomId === roomId)).toBe(true);
  });

  it('should not re-broadcast an unchanged list when setTyping(true) is repeated, nor when a non-typist stops', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const carol = await newUser('carol');
    const roomId = await createRoom(a, bob, [alice, carol]);
    const sub = await watchTyping(a, bob, roomId);

    await setTyping(b, alice, roomId, true);
    expect(await listsAfter(sub, 1)).toEqual([[alice]]);
    await Promise.all([setTyping(a, alice, roomId, true), setTyping(b, alice, roomId, true)]);
    await setTyping(b, alice, roomId, true);
    await setTyping(a, carol, roomId, false);
    // Sentinels through each instance: anything either published before them arrives first.
    await setTyping(a, carol, roomId, true);
    await sub.take(2);
    await setTyping(b, carol, roomId, false);
    expect(await listsAfter(sub, 3)).toEqual([[alice], [alice, carol], [alice]]);
    expect(await typingNow(b, bob, roomId)).toEqual([alice]);
  });
});

describe('when a typing member sends a message', () => {
  it("should clear the sender's typing and send the new list", async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const carol = await newUser('carol');
    const roomId = await createRoom(a, bob, [alice, carol]);
    const sub = await watchTyping(a, bob, roomId);

    await setTyping(b, alice, roomId, true);
    await setTyping(b, carol, roomId, true);
    await sub.take(2);
    await gqlOk(b.url, SendMessageDocument, { input: { roomId, text: 'done typing' } }, token(alice));
    expect(await listsAfter(sub, 3)).toEqual([[alice], [alice, carol], [carol]]);
    for (const instance of [a, b]) expect(await typingNow(instance, bob, roomId)).toEqual([carol]);

    // A message from someone who was not typing changes no list: the sentinel's is the next event.
    await gqlOk(b.url, SendMessageDocument, { input: { roomId, text: 'hi' } }, token(bob));
    await setTyping(b, bob, roomId, true);
    expect(await listsAfter(sub, 4)).toEqual([[alice], [alice, carol], [carol], [bob, carol]]);
  });
});

describe('when a typing member leaves the room', () => {
  it('should clear their typing when they leave', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const carol = await newUser('carol');
    const roomId = await createRoom(a, bob, [alice, carol]);
    const sub = await watchTyping(a, bob, roomId);

    await setTyping(b, alice, roomId, true);
    await setTyping(b, carol, roomId, true);
    await sub.take(2);
    expect(await gqlOk(b.url, LeaveRoomDocument, { roomId }, token(alice))).toEqual({ leaveRoom: true });
    expect(await listsAfter(sub, 3)).toEqual([[alice], [alice, carol], [carol]]);
    expect(await typingNow(a, bob, roomId)).toEqual([carol]);
  });

  it('should clear their typing when the owner removes them', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const roomId = await createRoom(a, bob, [alice]);
    const sub = await watchTyping(b, bob, roomId);

    await setTyping(a, alice, roomId, true);
    await sub.take(1);
    await gqlOk(a.url, RemoveMemberDocument, { roomId, userId: alice }, token(bob));
    expect(await listsAfter(sub, 2)).toEqual([[alice], []]);
    expect(await typingNow(b, bob, roomId)).toEqual([]);
  });
});

describe('when a member follows roomEvents with its ephemeral events', () => {
  it('should carry PresenceChanged and TypingChanged along with the messages', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const roomId = await createRoom(a, bob, [alice]);
    const events = subscribe<RoomEventsResult>(client(a, bob), ROOM_EVENTS_SUB, { roomId }, { keepEphemeral: true });
    // Bob's own arrival is the first event: the stream is live once it is here.
    expect((await events.nth(1)).data?.roomEvents).toEqual({
      __typename: 'PresenceChanged',
      roomId,
      present: true,
      user: { id: bob },
    });

    const aliceTab = client(b, alice);
    const aliceSub = subscribe(aliceTab, OnMessageAddedDocument, { roomId });
    expect((await events.nth(2)).data?.roomEvents).toEqual({ __typename: 'PresenceChanged', roomId, present: true, user: { id: alice } });

    await setTyping(b, alice, roomId, true);
    expect((await events.nth(3)).data?.roomEvents).toEqual({ __typename: 'TypingChanged', roomId, users: [{ id: alice }] });

    const { sendMessage } = await gqlOk(b.url, SendMessageDocument, { input: { roomId, text: 'typed' } }, token(alice));
    const [, , , m1, m2] = (await events.take(5)).map((r) => r.data?.roomEvents);
    // The two may come in either order; each exactly once.
    expect([m1, m2]).toEqual(
      expect.arrayContaining([
        { __typename: 'TypingChanged', roomId, users: [] },
        { __typename: 'MessageAdded', message: { id: sendMessage.id, text: 'typed' } },
      ]),
    );

    aliceSub.unsubscribe();
    expect((await events.nth(6)).data?.roomEvents).toEqual({ __typename: 'PresenceChanged', roomId, present: false, user: { id: alice } });
    expect(events.results.flatMap((r) => r.errors ?? [])).toEqual([]);
    expect(events.results).toHaveLength(6);
  });
});

describe('when a non-member touches typing', () => {
  it('should answer FORBIDDEN for Room.typing, setTyping and the typing subscription', async () => {
    const alice = await newUser('alice');
    const mallory = await newUser('mallory');
    const roomId = await createRoom(a, alice, [], 'PUBLIC');
    await setTyping(a, alice, roomId, true);

    const read = await gql(b.url, ROOM_TYPING, { id: roomId }, { token: token(mallory) });
    expect(codes(read.errors)).toEqual(['FORBIDDEN']);
    const write = await gql(b.url, SET_TYPING, { roomId, typing: true }, { token: token(mallory) });
    expect(codes(write.errors)).toEqual(['FORBIDDEN']);
    const sub = subscribe(client(b, mallory), TYPING_SUB, { roomId });
    expect(codes(await operationErrors(sub))).toEqual(['FORBIDDEN']);
    expect(await typingNow(a, alice, roomId)).toEqual([alice]);

    const missing = await gql(b.url, SET_TYPING, { roomId: 'no-such-room', typing: true }, { token: token(mallory) });
    expect(codes(missing.errors)).toEqual(['NOT_FOUND']);
  });
});

describe('when nobody calls setTyping(false)', () => {
  const TIMEOUT_SECONDS = 1;
  let e1: TestInstance;
  let e2: TestInstance;

  beforeAll(async () => {
    [e1, e2] = await cluster({ TYPING_TIMEOUT_SECONDS: String(TIMEOUT_SECONDS) });
  });

  it('should expire the typing within the timeout + 1 s and send the new list once, though both instances sweep', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const carol = await newUser('carol');
    const roomId = await createRoom(e1, bob, [alice, carol]);
    const sub = await watchTyping(e1, bob, roomId);

    const startedAt = Date.now();
    await setTyping(e2, alice, roomId, true);
    expect(await listsAfter(sub, 1)).toEqual([[alice]]);
    expect(await listsAfter(sub, 2, TIMEOUT_SECONDS * 1000 + 3000)).toEqual([[alice], []]);
    const elapsed = Date.now() - startedAt;
    expect(elapsed, `expired after ${elapsed} ms`).toBeGreaterThanOrEqual(TIMEOUT_SECONDS * 1000);
    expect(elapsed, `expired after ${elapsed} ms`).toBeLessThanOrEqual(TIMEOUT_SECONDS * 1000 + 1000);
    for (const instance of [e1, e2]) expect(await typingNow(instance, bob, roomId)).toEqual([]);

    // A duplicate expiry would come from the other instance's next tick: let a few ticks pass
    // (bounded quiet window), then sentinels through each instance flush what they published.
    await new Promise((r) => setTimeout(r, 3 * TICK_MS));
    await setTyping(e1, carol, roomId, true);
    await sub.take(3);
    await setTyping(e2, carol, roomId, false);
    expect(await listsAfter(sub, 4)).toEqual([[alice], [], [carol], []]);
  });

  it('should keep a typist whose setTyping(true) is repeated within the window, and expire them a timeout after the last one', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const roomId = await createRoom(e1, bob, [alice]);
    const sub = await watchTyping(e2, bob, roomId);

    await setTyping(e1, alice, roomId, true);
    await sub.take(1);
    // Repeat halfway through the window (a client's keystroke); the repeat is an action, not a wait for an event.
    await new Promise((r) => setTimeout(r, (TIMEOUT_SECONDS * 1000) / 2));
    const refreshedAt = Date.now();
    await setTyping(e2, alice, roomId, true);
    expect(await listsAfter(sub, 2, TIMEOUT_SECONDS * 1000 + 3000)).toEqual([[alice], []]);
    const elapsed = Date.now() - refreshedAt;
    expect(elapsed, `expired ${elapsed} ms after the refresh`).toBeGreaterThanOrEqual(TIMEOUT_SECONDS * 1000);
    expect(elapsed).toBeLessThanOrEqual(TIMEOUT_SECONDS * 1000 + 1000);
  });
});
