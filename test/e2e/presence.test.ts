import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import type { Client as WsClient } from 'graphql-ws';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { presenceKeys } from '../../src/presence/presence.keys.js';
import { OnMessageAddedDocument, OnRoomEventsDocument } from '../generated/graphql.js';
import {
  clientPool,
  codes,
  createRoomAs,
  gql,
  gqlOk,
  operationErrors,
  subscribe,
  waitFor,
  withTimeout,
  type Subscription,
} from '../helpers/clients.js';
import { monitorRedis } from '../helpers/monitor.js';
import { deletePrefixed } from '../helpers/lua.js';
import { killAllChildren, startServer, type ChildServer } from '../helpers/process.js';
import {
  openStreams as streams,
  sharedRedisUrl,
  startCluster,
  startInstance,
  TEST_JWT_SECRET,
  testUsers,
  uniquePrefix,
  waitForStreamsReleased,
  type TestInstance,
} from '../helpers/server.js';

/**
 * Presence end to end: real graphql-ws and SSE clients against two instances on one Redis (and a
 * child-process instance that is SIGKILLed). Each test uses fresh user ids, so no presence state
 * leaks from one test into the next.
 */

const GRACE_MS = 800;
const TICK_MS = 100;
/** Whatever defaults rate limiting gets, these tests are not about it. */
const UNLIMITED = { RATE_LIMITS: 'off' };
const MAIN_ENV = { ...UNLIMITED, PRESENCE_GRACE_MS: String(GRACE_MS), PRESENCE_TICK_MS: String(TICK_MS) };

type Status = 'ONLINE' | 'AWAY' | 'OFFLINE';
interface PresenceView {
  status: Status;
  lastSeenAt: string | null;
  connections: number;
}
interface PresenceResult {
  presence: { id: string; presence: PresenceView };
}
interface RoomPresenceResult {
  roomPresence: { roomId: string; present: boolean; user: { id: string } };
}

const PRESENCE_SUB = /* GraphQL */ `
  subscription OnPresence($userIds: [ID!]!) {
    presence(userIds: $userIds) { id presence { status lastSeenAt connections } }
  }
`;
const USER_PRESENCE = /* GraphQL */ `
  query UserPresence($id: ID!) { user(id: $id) { id presence { status lastSeenAt connections } } }
`;
const SET_PRESENCE = /* GraphQL */ `
  mutation SetPresence($status: PresenceStatus!) { setPresence(status: $status) { status lastSeenAt connections } }
`;
const ROOM_PRESENCE_SUB = /* GraphQL */ `
  subscription OnRoomPresence($roomId: ID!) { roomPresence(roomId: $roomId) { roomId present user { id } } }
`;
const ROOM_ONLINE = /* GraphQL */ `
  query RoomOnline($id: ID!) { room(id: $id) { id onlineCount onlineMembers { id } } }
`;

/** Instances sharing one key prefix, and a client with that prefix to read their presence keys. */
interface Cluster {
  prefix: string;
  instances: TestInstance[];
  keys: Redis;
}

/** Fresh user ids (`<label>-<random>`) and their tokens. */
const { newUser, token } = testUsers();
const clients = clientPool();
const openSse = new Set<AbortController>();
/** Every instance of the file, for the afterEach drain. */
const liveInstances = new Set<TestInstance>();
let plain: Redis;
let main: Cluster;
let a: TestInstance;
let b: TestInstance;

/** A browser tab: one graphql-ws connection, resolved once the server acknowledged it. */
interface Tab {
  userId: string;
  client: WsClient;
  close(): Promise<void>;
}

/**
 * Opens a tab. The server registers the presence connection before it acknowledges the socket, so
 * once this resolves the connection is counted (and any ONLINE it caused is published).
 */
async function openTab(instance: { wsUrl: string }, userId: string): Promise<Tab> {
  const client = clients.open(instance.wsUrl, token(userId));
  await withTimeout(
    new Promise<void>((resolve) => {
      const off = client.on('connected', () => {
        off();
        resolve();
      });
    }),
    5000,
    `${userId}'s socket to be acknowledged`,
  );
  return {
    userId,
    client,
    close: () => clients.close(client),
  };
}

/** The presence a watcher received for `userId`, in order. */
const presenceOf = (sub: Subscription<PresenceResult>, userId: string): PresenceView[] =>
  sub.results.filter((r) => r.data?.presence.id === userId).map((r) => r.data!.presence.presence);

/** Waits until the watcher holds `n` presence events of `userId`, and returns them. */
const presenceEvents = (sub: Subscription<PresenceResult>, userId: string, n: number, ms = 5000) =>
  waitFor(
    () => {
      const evs = presenceOf(sub, userId);
      return evs.length >= n ? evs : null;
    },
    ms,
    `${n} presence event(s) of ${userId} (have ${JSON.stringify(presenceOf(sub, userId))})`,
  );

/** Room presence a watcher received for `userId`, in order. */
const presentOf = (sub: Subscription<RoomPresenceResult>, userId: string): boolean[] =>
  sub.results.filter((r) => r.data?.roomPresence.user.id === userId).map((r) => r.data!.roomPresence.present);

const presentEvents = (sub: Subscription<RoomPresenceResult>, userId: string, n: number, ms = 5000) =>
  waitFor(
    () => {
      const evs = presentOf(sub, userId);
      return evs.length >= n ? evs : null;
    },
    ms,
    `${n} room presence event(s) of ${userId} (have ${JSON.stringify(presentOf(sub, userId))})`,
  );

const noErrors = (sub: Subscription<unknown>) =>
  expect(sub.results.flatMap((r: ExecutionResult<unknown>) => r.errors ?? [])).toEqual([]);

/**
 * Subscribes `watcher` (a fresh user, in a tab on `instance`) to `presence(userIds)`. The presence
 * stream does not wait for Redis to confirm its SUBSCRIBE, so this waits until every channel has at
 * least `subscribers` subscribed connections (one per instance watching it).
 */
async function watchPresence(
  cluster: Cluster,
  instance: TestInstance,
  userIds: string[],
  subscribers = 1,
): Promise<Subscription<PresenceResult>> {
  const watcher = await newUser('watcher');
  const tab = await openTab(instance, watcher);
  const sub = subscribe<PresenceResult>(tab.client, PRESENCE_SUB, { userIds });
  const channels = userIds.map((id) => `${cluster.prefix}user:${id}`);
  await waitFor(
    async () => {
      const reply = (await plain.call('PUBSUB', 'NUMSUB', ...channels)) as (string | number)[];
      return channels.every((_, i) => Number(reply[2 * i + 1]) >= subscribers) || sub.done();
    },
    5000,
    'the presence subscription to be live',
  );
  expect(sub.done()).toBe(false);
  return sub;
}

/**
 * A connected user whose AWAY flag is flipped through a chosen instance. Its event is published by
 * that instance after anything that instance published before the flip, so once it arrives, an
 * event the instance would have published earlier (a duplicate, a spurious ONLINE) has arrived too.
 */
class PresenceSentinel {
  private away = false;
  private seen = 0;
  constructor(
    readonly id: string,
    private readonly watchers: Subscription<PresenceResult>[],
  ) {}

  async connect(instance: TestInstance): Promise<void> {
    await openTab(instance, this.id);
    this.seen = 1;
    await this.arrived('ONLINE');
  }

  async ping(via: TestInstance): Promise<void> {
    this.away = !this.away;
    const status: Status = this.away ? 'AWAY' : 'ONLINE';
    await gqlOk(via.url, SET_PRESENCE, { status }, token(this.id));
    this.seen++;
    await this.arrived(status);
  }

  private async arrived(status: Status): Promise<void> {
    await Promise.all(
      this.watchers.map((w) =>
        waitFor(() => presenceOf(w, this.id)[this.seen - 1]?.status === status, 5000, `sentinel event ${this.seen}`),
      ),
    );
    for (const w of this.watchers) expect(presenceOf(w, this.id)).toHaveLength(this.seen);
  }
}

/** The user's presence as a query on `instance` shows it. */
async function presenceNow(instance: TestInstance, viewer: string, userId: string): Promise<PresenceView> {
  const { user } = await gqlOk<{ user: { presence: PresenceView } | null }>(
    instance.url,
    USER_PRESENCE,
    { id: userId },
    token(viewer),
  );
  if (!user) throw new Error(`user ${userId} does not exist`);
  return user.presence;
}

/** Room.onlineCount and Room.onlineMembers as `viewer` sees them on `instance`. */
async function onlineIn(instance: TestInstance, viewer: string, roomId: string) {
  const { room } = await gqlOk<{ room: { onlineCount: number; onlineMembers: { id: string }[] } }>(
    instance.url,
    ROOM_ONLINE,
    { id: roomId },
    token(viewer),
  );
  return { count: room.onlineCount, members: room.onlineMembers.map((u) => u.id) };
}

/** Creates a room owned by `owner` with `memberIds`. */
const createRoom = (instance: TestInstance, owner: string, memberIds: string[], visibility: 'PUBLIC' | 'PRIVATE' = 'PRIVATE') =>
  createRoomAs(instance.url, token(owner), memberIds, { label: 'presence', visibility });

/** Opens `roomPresence` for `watcher` and waits for their own arrival, which proves the stream live. */
async function watchRoom(instance: TestInstance, watcher: string, roomId: string) {
  const tab = await openTab(instance, watcher);
  const sub = subscribe<RoomPresenceResult>(tab.client, ROOM_PRESENCE_SUB, { roomId });
  expect(await presentEvents(sub, watcher, 1)).toEqual([true]);
  return sub;
}

/**
 * Room presence sentinel: `userId` subscribes to the room on `instance`, then unsubscribes; both
 * events are published by `instance` after whatever it published before.
 */
async function roomSentinel(instance: TestInstance, userId: string, roomId: string, watcher: Subscription<RoomPresenceResult>) {
  const before = presentOf(watcher, userId).length;
  const tab = await openTab(instance, userId);
  const sub = subscribe(tab.client, OnMessageAddedDocument, { roomId });
  await presentEvents(watcher, userId, before + 1);
  sub.unsubscribe();
  await presentEvents(watcher, userId, before + 2);
  await tab.close();
  expect(presentOf(watcher, userId).slice(before)).toEqual([true, false]);
}


const graceDue = (cluster: Cluster, userId: string) => cluster.keys.zscore(presenceKeys.grace(), userId);

async function stopInstance(instance: TestInstance): Promise<void> {
  liveInstances.delete(instance);
  await instance.stop();
}

beforeAll(async () => {
  plain = new Redis(sharedRedisUrl());
  const prefix = uniquePrefix('presence');
  const instances = await startCluster(2, { ...MAIN_ENV, REDIS_KEY_PREFIX: prefix });
  [a, b] = instances as [TestInstance, TestInstance];
  main = { prefix, instances, keys: new Redis(sharedRedisUrl(), { keyPrefix: prefix }) };
  for (const i of instances) liveInstances.add(i);
});

afterEach(async () => {
  for (const c of openSse) c.abort();
  openSse.clear();
  await clients.disposeAll();
  await killAllChildren();
  // The next test counts streams from zero: wait until the servers released every one of them.
  await waitForStreamsReleased(liveInstances);
});

afterAll(async () => {
  await Promise.all([...liveInstances].map((i) => i.stop()));
  for (const cluster of [main]) {
    if (!cluster) continue;
    await deletePrefixed(cluster.prefix);
    cluster.keys.disconnect();
  }
  plain?.disconnect();
});

describe('when a user opens tabs on two instances', () => {
  it('should announce ONLINE once, nothing for the second tab or for closing one, and OFFLINE once after the grace period', async () => {
    const alice = await newUser('alice');
    const sentinelId = await newUser('sentinel');
    const onA = await watchPresence(main, a, [alice, sentinelId]);
    const sentinel = new PresenceSentinel(sentinelId, [onA]);
    await sentinel.connect(a);

    const tab1 = await openTab(a, alice);
    expect(await presenceEvents(onA, alice, 1)).toEqual([{ status: 'ONLINE', lastSeenAt: null, connections: 1 }]);

    const tab2 = await openTab(b, alice);
    expect(await presenceNow(a, sentinelId, alice)).toEqual({ status: 'ONLINE', lastSeenAt: null, connections: 2 });
    expect(await presenceNow(b, sentinelId, alice)).toMatchObject({ status: 'ONLINE', connections: 2 });
    await sentinel.ping(b);
    expect(presenceOf(onA, alice)).toHaveLength(1);

    await tab2.close();
    await waitFor(async () => (await presenceNow(a, sentinelId, alice)).connections === 1, 5000, 'one connection left');
    // One tab is still open: no grace period started, so no OFFLINE can follow later either.
    expect(await graceDue(main, alice)).toBeNull();
    await sentinel.ping(b);
    expect(presenceOf(onA, alice)).toHaveLength(1);

    const closedAt = Date.now();
    await tab1.close();
    const events = await presenceEvents(onA, alice, 2, GRACE_MS + 5000);
    const receivedAt = Date.now();
    const offline = events[1]!;
    expect(offline).toMatchObject({ status: 'OFFLINE', connections: 0 });
    expect(offline.lastSeenAt).not.toBeNull();
    const lastSeenAt = Date.parse(offline.lastSeenAt!);
    expect(lastSeenAt).toBeGreaterThanOrEqual(closedAt);
    expect(lastSeenAt).toBeLessThanOrEqual(receivedAt);
    expect(receivedAt - lastSeenAt).toBeGreaterThanOrEqual(GRACE_MS);
    expect(await presenceNow(b, sentinelId, alice)).toEqual(offline);

    // Both instances settle grace periods; events either would publish before these pings are out.
    await sentinel.ping(a);
    await sentinel.ping(b);
    expect(presenceOf(onA, alice).map((p) => p.status)).toEqual(['ONLINE', 'OFFLINE']);
    noErrors(onA);
  });

  it('should emit nothing when a tab reloads within the grace period, even onto the other instance', async () => {
    const alice = await newUser('alice');
    const sentinelId = await newUser('sentinel');
    const onA = await watchPresence(main, a, [alice, sentinelId]);
    const onB = await watchPresence(main, b, [alice, sentinelId], 2);
    const sentinel = new PresenceSentinel(sentinelId, [onA, onB]);
    await sentinel.connect(a);

    const tab = await openTab(a, alice);
    await presenceEvents(onA, alice, 1);
    await presenceEvents(onB, alice, 1);

    const closedAt = Date.now();
    await tab.close();
    // The server processed the close: the grace period runs.
    await waitFor(() => graceDue(main, alice), 5000, 'the grace period to start');
    await openTab(b, alice);
    expect(Date.now() - closedAt, 'the reload must land within the grace period for this test to mean anything').toBeLessThan(
      GRACE_MS,
    );
    expect(await graceDue(main, alice)).toBeNull();
    expect(await presenceNow(a, sentinelId, alice)).toEqual({ status: 'ONLINE', lastSeenAt: null, connections: 1 });

    // An OFFLINE could only come from a settle tick after the original grace deadline: let that
    // deadline and a few ticks pass (bounded quiet window), then flush both instances with pings.
    const quiet = closedAt + GRACE_MS + 3 * TICK_MS - Date.now();
    await new Promise((r) => setTimeout(r, Math.max(0, quiet)));
    await sentinel.ping(a);
    await sentinel.ping(b);
    expect(presenceOf(onA, alice).map((p) => p.status)).toEqual(['ONLINE']);
    expect(presenceOf(onB, alice).map((p) => p.status)).toEqual(['ONLINE']);
    noErrors(onA);
    noErrors(onB);
  });
});

describe('when a user sets their presence', () => {
  it('should keep AWAY across a second tab, go back to ONLINE on request, and refuse OFFLINE', async () => {
    const alice = await newUser('alice');
    const sentinelId = await newUser('sentinel');
    const onA = await watchPresence(main, a, [alice, sentinelId]);
    const sentinel = new PresenceSentinel(sentinelId, [onA]);
    await sentinel.connect(a);

    await openTab(a, alice);
    await presenceEvents(onA, alice, 1);

    const away = await gqlOk<{ setPresence: PresenceView }>(a.url, SET_PRESENCE, { status: 'AWAY' }, token(alice));
    expect(away.setPresence).toEqual({ status: 'AWAY', lastSeenAt: null, connections: 1 });
    expect((await presenceEvents(onA, alice, 2))[1]).toEqual({ status: 'AWAY', lastSeenAt: null, connections: 1 });

    await openTab(b, alice);
    expect(await presenceNow(b, sentinelId, alice)).toEqual({ status: 'AWAY', lastSeenAt: null, connections: 2 });
    // Saying AWAY again changes nothing: no event either.
    const again = await gqlOk<{ setPresence: PresenceView }>(b.url, SET_PRESENCE, { status: 'AWAY' }, token(alice));
    expect(again.setPresence).toMatchObject({ status: 'AWAY', connections: 2 });
    await sentinel.ping(b);
    expect(presenceOf(onA, alice).map((p) => p.status)).toEqual(['ONLINE', 'AWAY']);

    const back = await gqlOk<{ setPresence: PresenceView }>(b.url, SET_PRESENCE, { status: 'ONLINE' }, token(alice));
    expect(back.setPresence).toEqual({ status: 'ONLINE', lastSeenAt: null, connections: 2 });
    expect((await presenceEvents(onA, alice, 3))[2]).toEqual({ status: 'ONLINE', lastSeenAt: null, connections: 2 });

    const offline = await gql(a.url, SET_PRESENCE, { status: 'OFFLINE' }, { token: token(alice) });
    expect(codes(offline.errors)).toEqual(['BAD_USER_INPUT']);
    expect(offline.errors?.[0]?.extensions?.field).toBe('status');
    expect(await presenceNow(a, sentinelId, alice)).toMatchObject({ status: 'ONLINE', connections: 2 });
    await sentinel.ping(a);
    expect(presenceOf(onA, alice)).toHaveLength(3);
    noErrors(onA);
  });

  it('should keep AWAY when the only tab reloads within the grace period', async () => {
    const alice = await newUser('alice');
    const sentinelId = await newUser('sentinel');
    const onA = await watchPresence(main, a, [alice, sentinelId]);
    const sentinel = new PresenceSentinel(sentinelId, [onA]);
    await sentinel.connect(a);
    const tab = await openTab(a, alice);
    await gqlOk(a.url, SET_PRESENCE, { status: 'AWAY' }, token(alice));
    await presenceEvents(onA, alice, 2);

    await tab.close();
    await waitFor(() => graceDue(main, alice), 5000, 'the grace period to start');
    await openTab(b, alice);
    expect(await presenceNow(a, sentinelId, alice)).toEqual({ status: 'AWAY', lastSeenAt: null, connections: 1 });
    await sentinel.ping(b);
    expect(presenceOf(onA, alice).map((p) => p.status)).toEqual(['ONLINE', 'AWAY']);
  });

  it('should forget AWAY once the user went OFFLINE, so the next connection is ONLINE', async () => {
    const alice = await newUser('alice');
    const onA = await watchPresence(main, a, [alice]);
    const tab = await openTab(b, alice);
    await gqlOk(b.url, SET_PRESENCE, { status: 'AWAY' }, token(alice));
    await presenceEvents(onA, alice, 2);
    await tab.close();
    expect((await presenceEvents(onA, alice, 3, GRACE_MS + 5000))[2]).toMatchObject({ status: 'OFFLINE', connections: 0 });

    await openTab(a, alice);
    expect((await presenceEvents(onA, alice, 4))[3]).toEqual({ status: 'ONLINE', lastSeenAt: null, connections: 1 });
    expect(presenceOf(onA, alice).map((p) => p.status)).toEqual(['ONLINE', 'AWAY', 'OFFLINE', 'ONLINE']);
  });
});

describe('when a user is connected over SSE only', () => {
  it('should count the open SSE request as a connection (ONLINE, room presence) and go OFFLINE after it closes', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const roomId = await createRoom(a, bob, [alice]);
    const onA = await watchPresence(main, a, [alice]);
    const rooms = await watchRoom(a, bob, roomId);

    const controller = new AbortController();
    openSse.add(controller);
    const res = await fetch(b.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token(alice)}` },
      body: JSON.stringify({
        query: 'subscription ($roomId: ID!) { messageAdded(roomId: $roomId) { id } }',
        variables: { roomId },
      }),
      signal: controller.signal,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    // Keep reading so nothing backs up; the read fails once the request is aborted.
    void res.body
      ?.pipeTo(new WritableStream())
      .catch(() => undefined);

    expect(await presenceEvents(onA, alice, 1)).toEqual([{ status: 'ONLINE', lastSeenAt: null, connections: 1 }]);
    expect(await presentEvents(rooms, alice, 1)).toEqual([true]);
    expect(await presenceNow(a, bob, alice)).toEqual({ status: 'ONLINE', lastSeenAt: null, connections: 1 });
    expect(await onlineIn(a, bob, roomId)).toEqual({ count: 2, members: [alice, bob].sort() });

    const closedAt = Date.now();
    controller.abort();
    openSse.delete(controller);
    const events = await presenceEvents(onA, alice, 2, GRACE_MS + 5000);
    expect(events[1]).toMatchObject({ status: 'OFFLINE', connections: 0 });
    expect(Date.parse(events[1]!.lastSeenAt!)).toBeGreaterThanOrEqual(closedAt);
    expect(await presentEvents(rooms, alice, 2)).toEqual([true, false]);
    expect(await onlineIn(b, bob, roomId)).toEqual({ count: 1, members: [bob] });
  });
});

describe('when a member holds a room from two tabs', () => {
  it('should announce present once, nothing when one tab closes, and absent once when both did', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const carol = await newUser('carol');
    const roomId = await createRoom(a, bob, [alice, carol]);
    const watcher = await watchRoom(a, bob, roomId);
    expect(await onlineIn(b, bob, roomId)).toEqual({ count: 1, members: [bob] });

    const tab1 = await openTab(a, alice);
    subscribe(tab1.client, OnMessageAddedDocument, { roomId });
    expect(await presentEvents(watcher, alice, 1)).toEqual([true]);

    const tab2 = await openTab(b, alice);
    subscribe(tab2.client, OnRoomEventsDocument, { roomId });
    await waitFor(() => streams(b) === 1, 5000, "alice's second subscription to be live on B");
    await roomSentinel(b, carol, roomId, watcher);
    expect(presentOf(watcher, alice)).toEqual([true]);
    for (const instance of [a, b]) {
      expect(await onlineIn(instance, alice, roomId)).toEqual({ count: 2, members: [alice, bob].sort() });
    }

    await tab2.close();
    await waitFor(() => streams(b) === 0, 5000, "alice's subscription on B to be released");
    await roomSentinel(b, carol, roomId, watcher);
    expect(presentOf(watcher, alice)).toEqual([true]);
    expect(await onlineIn(b, bob, roomId)).toEqual({ count: 2, members: [alice, bob].sort() });

    await tab1.close();
    expect(await presentEvents(watcher, alice, 2)).toEqual([true, false]);
    await roomSentinel(a, carol, roomId, watcher);
    expect(presentOf(watcher, alice)).toEqual([true, false]);
    for (const instance of [a, b]) {
      expect(await onlineIn(instance, bob, roomId)).toEqual({ count: 1, members: [bob] });
    }
    expect(watcher.results.every((r) => r.data?.roomPresence.roomId === roomId)).toBe(true);
    noErrors(watcher);
  });

  it('should count a subscription that is not to the room as no room presence', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const roomId = await createRoom(a, bob, [alice]);
    const other = await createRoom(a, alice, []);
    const tab = await openTab(b, alice);
    subscribe(tab.client, OnMessageAddedDocument, { roomId: other });
    await waitFor(() => streams(b) === 1, 5000, 'the subscription to the other room to be live');
    expect(await onlineIn(a, bob, roomId)).toEqual({ count: 0, members: [] });
    expect(await onlineIn(a, alice, other)).toEqual({ count: 1, members: [alice] });
  });
});

describe('when one socket holds a room with several subscriptions', () => {
  it('should announce present once and absent once, whatever the number of subscriptions', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const carol = await newUser('carol');
    const roomId = await createRoom(a, bob, [alice, carol]);
    const watcher = await watchRoom(a, bob, roomId);

    const tab = await openTab(b, alice);
    const messages = subscribe(tab.client, OnMessageAddedDocument, { roomId });
    expect(await presentEvents(watcher, alice, 1)).toEqual([true]);
    subscribe(tab.client, OnRoomEventsDocument, { roomId });
    subscribe(tab.client, ROOM_PRESENCE_SUB, { roomId });
    subscribe(tab.client, 'subscription ($roomId: ID!) { typing(roomId: $roomId) { roomId } }', { roomId });
    await waitFor(() => streams(b) === 4, 5000, "alice's four subscriptions to be live");
    messages.unsubscribe();
    await waitFor(() => streams(b) === 3, 5000, 'one subscription to be released');
    await roomSentinel(b, carol, roomId, watcher);
    expect(presentOf(watcher, alice)).toEqual([true]);
    expect(await onlineIn(a, bob, roomId)).toEqual({ count: 2, members: [alice, bob].sort() });

    await tab.close();
    expect(await presentEvents(watcher, alice, 2)).toEqual([true, false]);
    await roomSentinel(b, carol, roomId, watcher);
    expect(presentOf(watcher, alice)).toEqual([true, false]);
  });
});

describe('when a present member leaves the room or is removed', () => {
  it('should announce them absent once and drop them from onlineMembers', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const dave = await newUser('dave');
    const roomId = await createRoom(a, bob, [alice, dave]);
    const watcher = await watchRoom(a, bob, roomId);

    const aliceTab = await openTab(b, alice);
    const aliceSub = subscribe(aliceTab.client, OnRoomEventsDocument, { roomId });
    const daveTab = await openTab(a, dave);
    const daveSub = subscribe(daveTab.client, OnMessageAddedDocument, { roomId });
    await presentEvents(watcher, alice, 1);
    await presentEvents(watcher, dave, 1);
    expect(await onlineIn(a, bob, roomId)).toEqual({ count: 3, members: [alice, bob, dave].sort() });

    await gqlOk(a.url, 'mutation ($roomId: ID!) { leaveRoom(roomId: $roomId) }', { roomId }, token(alice));
    expect(await presentEvents(watcher, alice, 2)).toEqual([true, false]);
    await withTimeout(aliceSub.completed, 5000, "alice's subscription to end");
    await gqlOk(b.url, 'mutation ($roomId: ID!, $userId: ID!) { removeMember(roomId: $roomId, userId: $userId) { id } }', { roomId, userId: dave }, token(bob));
    expect(await presentEvents(watcher, dave, 2)).toEqual([true, false]);
    await withTimeout(daveSub.completed, 5000, "dave's subscription to end");
    for (const instance of [a, b]) {
      expect(await onlineIn(instance, bob, roomId)).toEqual({ count: 1, members: [bob] });
    }
    // Their sockets stay open: they are still ONLINE, just not in the room.
    expect(await presenceNow(a, bob, alice)).toMatchObject({ status: 'ONLINE', connections: 1 });
  });
});

describe('when a non-member asks for room presence', () => {
  it('should answer FORBIDDEN for onlineMembers, onlineCount and the roomPresence subscription, yet show any user presence', async () => {
    const alice = await newUser('alice');
    const mallory = await newUser('mallory');
    const roomId = await createRoom(a, alice, [], 'PUBLIC');
    await openTab(a, alice);

    const members = await gql(b.url, 'query ($id: ID!) { room(id: $id) { id onlineMembers { id } } }', { id: roomId }, { token: token(mallory) });
    expect(codes(members.errors)).toEqual(['FORBIDDEN']);
    const count = await gql(b.url, 'query ($id: ID!) { room(id: $id) { id onlineCount } }', { id: roomId }, { token: token(mallory) });
    expect(codes(count.errors)).toEqual(['FORBIDDEN']);

    const tab = await openTab(b, mallory);
    const sub = subscribe(tab.client, ROOM_PRESENCE_SUB, { roomId });
    expect(codes(await operationErrors(sub))).toEqual(['FORBIDDEN']);

    // Presence itself is public to any authenticated user, room or no room in common.
    expect(await presenceNow(b, mallory, alice)).toEqual({ status: 'ONLINE', lastSeenAt: null, connections: 1 });
    const anonymous = await gql(b.url, USER_PRESENCE, { id: alice });
    expect(codes(anonymous.errors)).toEqual(['UNAUTHENTICATED']);
  });

  it('should refuse a presence subscription of no users or of more than 100 with BAD_USER_INPUT', async () => {
    const alice = await newUser('alice');
    const tab = await openTab(a, alice);
    const none = subscribe(tab.client, PRESENCE_SUB, { userIds: [] });
    expect(codes(await operationErrors(none))).toEqual(['BAD_USER_INPUT']);
    const many = subscribe(tab.client, PRESENCE_SUB, { userIds: Array.from({ length: 101 }, (_, i) => `u${i}`) });
    expect(codes(await operationErrors(many))).toEqual(['BAD_USER_INPUT']);
  });
});

describe('when an instance shuts down gracefully', () => {
  it('should remove its connections and room presence at once, so its users go OFFLINE after the grace period, not the timeout', async () => {
    const c = await startInstance({ ...MAIN_ENV, REDIS_KEY_PREFIX: main.prefix });
    liveInstances.add(c);
    const cId = c.app.services.presence.instanceId;
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    const roomId = await createRoom(a, bob, [alice]);
    const onA = await watchPresence(main, a, [alice]);
    const rooms = await watchRoom(b, bob, roomId);

    const tab = await openTab(c, alice);
    subscribe(tab.client, OnMessageAddedDocument, { roomId });
    expect(await presenceEvents(onA, alice, 1)).toEqual([{ status: 'ONLINE', lastSeenAt: null, connections: 1 }]);
    expect(await presentEvents(rooms, alice, 1)).toEqual([true]);
    expect(await main.keys.zscore(presenceKeys.instances(), cId)).not.toBeNull();

    const stoppedAt = Date.now();
    await stopInstance(c);
    // At once: no connection, no room presence, no registry entry left behind by C.
    expect(await presenceNow(a, bob, alice)).toMatchObject({ connections: 0 });
    expect(await main.keys.zscore(presenceKeys.instances(), cId)).toBeNull();
    expect(await main.keys.exists(presenceKeys.instanceConnections(cId), presenceKeys.instanceRooms(cId))).toBe(0);
    expect(await onlineIn(a, bob, roomId)).toEqual({ count: 1, members: [bob] });
    expect(await presentEvents(rooms, alice, 2)).toEqual([true, false]);

    // The default timeout is 30 s: OFFLINE within the grace period (plus a margin) proves no waiting for it.
    const events = await presenceEvents(onA, alice, 2, GRACE_MS + 5000);
    expect(events[1]).toMatchObject({ status: 'OFFLINE', connections: 0 });
    expect(Date.now() - stoppedAt).toBeLessThan(GRACE_MS + 3000);
    expect(Date.parse(events[1]!.lastSeenAt!)).toBeGreaterThanOrEqual(stoppedAt);
  });
});

describe('when an instance is SIGKILLed', () => {
  const TIMEOUT_SECONDS = 2;
  const KILL_GRACE_MS = 200;
  /**
   * The margin over the timeout. The server reaps an instance at the first sweep (one per heartbeat,
   * every timeout / 3) after its last heartbeat is a timeout old, so a kill right after a heartbeat
   * lands up to timeout / 3 past the timeout (reported: a strict "within the timeout" needs the
   * sweep folded into the timeout); the rest is scheduling on a busy test machine.
   */
  const MARGIN_MS = 1500;
  const env = {
    ...UNLIMITED,
    PRESENCE_TIMEOUT_SECONDS: String(TIMEOUT_SECONDS),
    PRESENCE_GRACE_MS: String(KILL_GRACE_MS),
    PRESENCE_TICK_MS: String(TICK_MS),
  };
  let k: Cluster;
  let k1: TestInstance;
  let k2: TestInstance;

  beforeAll(async () => {
    const prefix = uniquePrefix('presence-kill');
    const instances = await startCluster(2, { ...env, REDIS_KEY_PREFIX: prefix });
    [k1, k2] = instances as [TestInstance, TestInstance];
    for (const i of instances) liveInstances.add(i);
    k = { prefix, instances, keys: new Redis(sharedRedisUrl(), { keyPrefix: prefix }) };
  });

  afterAll(async () => {
    await Promise.all([k1, k2].filter(Boolean).map((i) => stopInstance(i)));
    if (!k) return;
    for await (const keys of plain.scanStream({ match: `${k.prefix}*`, count: 500 })) {
      if ((keys as string[]).length > 0) await plain.unlink(...(keys as string[]));
    }
    k.keys.disconnect();
  });

  /** Resolves once `instance` has written two heartbeats after `since`: every sweep it started before is over. */
  async function twoSweepsAfter(instance: TestInstance, since: number): Promise<void> {
    const id = instance.app.services.presence.instanceId;
    const beats: number[] = [];
    await waitFor(
      async () => {
        const score = Number(await k.keys.zscore(presenceKeys.instances(), id));
        if (score > since && !beats.includes(score)) beats.push(score);
        return beats.length >= 2;
      },
      10_000,
      `two heartbeats of ${id}`,
    );
  }

  it('should keep any number of connections alive with one heartbeat command per instance per interval', async () => {
    const users = await Promise.all(Array.from({ length: 20 }, () => newUser('tab')));
    for (const u of users) await openTab(k1, u);
    const k1Id = k1.app.services.presence.instanceId;
    const seen: string[][] = [];
    const monitor = await monitorRedis(sharedRedisUrl(), (args) => {
      if (args.some((x) => x.startsWith(k.prefix))) seen.push(args);
    });
    try {
      const beatsOf = (iid: string) =>
        seen.filter((c) => c[0]?.toLowerCase() === 'zadd' && c[1] === `${k.prefix}${presenceKeys.instances()}` && c.at(-1) === iid);
      const from = Date.now();
      await waitFor(() => beatsOf(k1Id).length >= 3, 10_000, `three heartbeats of ${k1Id}`);
      const elapsed = Date.now() - from;
      // Heartbeats come every timeout / 4: three of them take at least two intervals.
      expect(elapsed).toBeGreaterThanOrEqual(2 * Math.floor((TIMEOUT_SECONDS * 1000) / 4) - 100);
      // Nothing per connection: no command of the window names a connected user or their keys.
      expect(seen.filter((c) => users.some((u) => c.some((x) => x.includes(u))))).toEqual([]);
      // Only the instance-wide periodic work: the heartbeat and the sweeps' range reads.
      const kinds = new Set(seen.map((c) => `${c[0]!.toLowerCase()} ${c[1]!.slice(k.prefix.length)}`));
      for (const kind of kinds) expect(kind).toMatch(/^(zadd presence:instances|zrangebyscore (presence:instances|presence:grace|typing:rooms|polls:closing))$/);
    } finally {
      monitor.stop();
    }
    expect(await presenceNow(k2, users[0]!, users[19]!)).toMatchObject({ status: 'ONLINE', connections: 1 });
  });

  it('should make each of its users OFFLINE exactly once, within the timeout, seen from both surviving instances', async () => {
    const victimId = `victim-${randomBytes(4).toString('hex')}`;
    const child: ChildServer = await startServer({
      ...env,
      REDIS_URL: sharedRedisUrl(),
      REDIS_KEY_PREFIX: k.prefix,
      JWT_SECRET: TEST_JWT_SECRET,
      INSTANCE_ID: victimId,
    });
    const dave = await newUser('dave');
    const frank = await newUser('frank');
    const gina = await newUser('gina');
    const bob = await newUser('bob');
    const sentinelId = await newUser('sentinel');
    const watched = [dave, frank, gina, sentinelId];
    const onK1 = await watchPresence(k, k1, watched);
    const onK2 = await watchPresence(k, k2, watched, 2);
    const sentinel = new PresenceSentinel(sentinelId, [onK1, onK2]);
    await sentinel.connect(k1);
    const roomId = await createRoom(k1, bob, [dave, frank, sentinelId]);
    const rooms = await watchRoom(k2, bob, roomId);

    // dave and frank connect to the victim only; gina to the victim and to k1.
    const daveTab = await openTab(child, dave);
    subscribe(daveTab.client, OnRoomEventsDocument, { roomId });
    await openTab(child, frank);
    await openTab(child, gina);
    await openTab(k1, gina);
    for (const w of [onK1, onK2]) {
      for (const u of [dave, frank, gina]) expect((await presenceEvents(w, u, 1))[0]).toMatchObject({ status: 'ONLINE' });
    }
    expect(await presentEvents(rooms, dave, 1)).toEqual([true]);
    expect(await onlineIn(k1, bob, roomId)).toEqual({ count: 2, members: [bob, dave].sort() });
    expect(await presenceNow(k2, bob, gina)).toMatchObject({ status: 'ONLINE', connections: 2 });

    const killedAt = Date.now();
    child.kill('SIGKILL');
    expect(await withTimeout(child.exited, 5000, 'the child to die')).toMatchObject({ signal: 'SIGKILL' });

    const deadline = TIMEOUT_SECONDS * 1000 + MARGIN_MS;
    for (const w of [onK1, onK2]) {
      for (const u of [dave, frank]) {
        const events = await presenceEvents(w, u, 2, deadline + 5000);
        expect(events[1]).toMatchObject({ status: 'OFFLINE', connections: 0 });
        expect(events[1]!.lastSeenAt).not.toBeNull();
      }
    }
    const elapsed = Date.now() - killedAt;
    expect(elapsed, `OFFLINE after ${elapsed} ms`).toBeLessThanOrEqual(deadline);
    expect(await presentEvents(rooms, dave, 2, 5000)).toEqual([true, false]);
    for (const instance of [k1, k2]) {
      expect(await onlineIn(instance, bob, roomId)).toEqual({ count: 1, members: [bob] });
    }
    await waitFor(async () => (await presenceNow(k1, bob, gina)).connections === 1, 5000, "gina's dead connection to go");
    expect(await presenceNow(k2, bob, gina)).toEqual({ status: 'ONLINE', lastSeenAt: null, connections: 1 });
    expect(await k.keys.zscore(presenceKeys.instances(), victimId)).toBeNull();
    expect(await k.keys.exists(presenceKeys.instanceConnections(victimId), presenceKeys.instanceRooms(victimId))).toBe(0);

    // Both survivors sweep; once each has finished every sweep it started around the reap, a ping
    // through each flushes whatever it published: a second OFFLINE would be in the streams by then.
    const settledAt = Date.now();
    await Promise.all([twoSweepsAfter(k1, settledAt), twoSweepsAfter(k2, settledAt)]);
    await sentinel.ping(k1);
    await sentinel.ping(k2);
    for (const w of [onK1, onK2]) {
      expect(presenceOf(w, dave).map((p) => p.status)).toEqual(['ONLINE', 'OFFLINE']);
      expect(presenceOf(w, frank).map((p) => p.status)).toEqual(['ONLINE', 'OFFLINE']);
      expect(presenceOf(w, gina).map((p) => p.status)).toEqual(['ONLINE']);
      noErrors(w);
    }
    await roomSentinel(k1, sentinelId, roomId, rooms);
    await roomSentinel(k2, sentinelId, roomId, rooms);
    expect(presentOf(rooms, dave)).toEqual([true, false]);
  });
});
