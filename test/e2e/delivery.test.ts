import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionResult, GraphQLFormattedError } from 'graphql';
import type { Client as WsClient } from 'graphql-ws';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LUA_DIRS } from '../../src/app.js';
import { freePort, startRedisServer, type EmbeddedRedis } from '../../src/infra/embedded-redis.js';
import { loadScripts } from '../../src/infra/scripts.js';
import { messageKeys } from '../../src/messages/messages.keys.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import {
  CreateRoomDocument,
  DeleteMessageDocument,
  EditMessageDocument,
  MeDocument,
  MessagesDocument,
  OnMessageAddedDocument,
  OnRoomEventsDocument,
  SendMessageDocument,
  type OnMessageAddedSubscription,
} from '../generated/graphql.js';
import {
  codes,
  completesWithin,
  gql,
  gqlOk,
  range,
  subscribe,
  type Subscription,
  waitFor,
  withTimeout,
  wsClient,
} from '../helpers/clients.js';
import {
  sharedRedisUrl,
  startInstance,
  tokenFor,
  uniquePrefix,
  waitForStreams,
  type TestInstance,
} from '../helpers/server.js';

/**
 * Delivery guarantees end to end: two instances on one Redis, real graphql-ws clients. Lost
 * pub/sub events (a killed subscriber connection, a PUBLISH that never happens), a Redis that
 * comes back empty, retention, revocations whose MemberLeft event was lost, history resets, and
 * ordering under load.
 */

/** These tests are about delivery, not limits: whatever defaults rate limiting gets, lift them. */
const UNLIMITED = { RATE_LIMITS: 'off' };

const USERS = ['alice', 'bob', 'carol', 'dave'] as const;
type User = (typeof USERS)[number];
const tokens = {} as Record<User, string>;
const clients: WsClient[] = [];

beforeAll(async () => {
  for (const user of USERS) tokens[user] = await tokenFor(user);
});

/** A cluster of two instances, A and B, on one Redis with one key prefix. */
interface Pair {
  a: TestInstance;
  b: TestInstance;
  prefix: string;
  redisUrl: string;
  stop(): Promise<void>;
}

/** The ids of the connections named `switchboard:sub` (each instance's pub/sub connection). */
async function subscriberIds(admin: Redis): Promise<Set<string>> {
  const list = (await admin.client('LIST')) as string;
  const ids = list
    .split('\n')
    .map((line) => Object.fromEntries(line.trim().split(' ').map((kv) => kv.split('=', 2) as [string, string])))
    .filter((c) => c.name === 'switchboard:sub')
    .map((c) => c.id as string);
  return new Set(ids);
}

/**
 * Starts A, then B, on `redisUrl` with one prefix (what startCluster(2) does, one after the other so
 * each one's subscriber connection can be told apart in CLIENT LIST by its id).
 */
async function startPair(redisUrl: string, env: Record<string, string> = {}): Promise<Pair & { bSubscriberIds: Set<string> }> {
  const prefix = uniquePrefix('delivery');
  const admin = new Redis(redisUrl);
  try {
    const envOf = { ...UNLIMITED, ...env, REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix };
    const a = await startInstance(envOf);
    const afterA = await waitFor(async () => ((await subscriberIds(admin)).size > 0 ? subscriberIds(admin) : null), 5000, 'A’s subscriber connection');
    const b = await startInstance(envOf);
    const bSubscriberIds = await waitFor(
      async () => {
        const fresh = [...(await subscriberIds(admin))].filter((id) => !afterA.has(id));
        return fresh.length > 0 ? new Set(fresh) : null;
      },
      5000,
      'B’s subscriber connection',
    );
    return {
      a,
      b,
      prefix,
      redisUrl,
      bSubscriberIds,
      async stop() {
        await Promise.all([a.stop(), b.stop()]);
        await removeKeys(redisUrl, prefix);
      },
    };
  } finally {
    admin.disconnect();
  }
}

/** Deletes every key of a prefix (each test file cleans up its namespace). */
async function removeKeys(redisUrl: string, prefix: string) {
  const admin = new Redis(redisUrl);
  for await (const keys of admin.scanStream({ match: `${prefix}*`, count: 500 })) {
    if ((keys as string[]).length > 0) await admin.unlink(...(keys as string[]));
  }
  admin.disconnect();
}

/** A graphql-ws client that is disposed after the test. */
function client(instance: TestInstance, user: User): WsClient {
  const c = wsClient(instance.wsUrl, tokens[user]);
  clients.push(c);
  return c;
}

/** Disposes the test's clients and waits until the servers released their streams. */
async function releaseClients(...instances: TestInstance[]) {
  await Promise.all(clients.splice(0).map((c) => c.dispose()));
  await waitFor(
    () => instances.every((i) => i.app.services.events.openCount() === 0),
    3000,
    'the servers to release every stream',
  );
}

async function createRoom(instance: TestInstance, owner: User, memberIds: User[]): Promise<string> {
  const { createRoom } = await gqlOk(
    instance.url,
    CreateRoomDocument,
    { input: { name: `delivery-${Math.random().toString(36).slice(2, 8)}`, memberIds } },
    tokens[owner],
  );
  return createRoom.id;
}

async function send(instance: TestInstance, user: User, roomId: string, text: string) {
  const { sendMessage } = await gqlOk(instance.url, SendMessageDocument, { input: { roomId, text } }, tokens[user]);
  return sendMessage;
}

const seqsOf = (results: ExecutionResult<OnMessageAddedSubscription>[]) => results.map((r) => r.data?.messageAdded.seq);

/** Waits for `n` results and checks they are seqs `from..from+n-1`, error-free. */
async function expectSeqs(sub: Subscription<OnMessageAddedSubscription>, from: number, n: number, ms: number, who: string) {
  const results = await sub.take(n, ms).catch((err: Error) => {
    throw new Error(`${who}: ${err.message}; got seqs ${JSON.stringify(seqsOf(sub.results))}`);
  });
  expect(results.filter((r) => r.errors), `${who}: errors`).toEqual([]);
  expect(seqsOf(results), `${who}: seqs`).toEqual(range(from, from + n - 1));
}

/**
 * The errors a subscription ended with, within `ms`: graphql-ws sends errors of the subscribe
 * resolver and of a stream as a `next` payload with `errors` (then `complete`), and errors found
 * before execution as an `error` message. Fails if it completes without an error.
 */
async function endsWithErrors(sub: Subscription<unknown>, ms: number, what: string): Promise<readonly GraphQLFormattedError[]> {
  let transport: unknown;
  void sub.error.then((e) => (transport = e));
  const errors = await waitFor(
    () => {
      const failed = sub.results.find((r) => r.errors?.length);
      if (failed) return failed.errors;
      if (transport !== undefined) {
        if (Array.isArray(transport)) return transport as GraphQLFormattedError[];
        throw new Error(`${what} failed at the transport level: ${JSON.stringify(transport)}`);
      }
      if (sub.done()) throw new Error(`${what} completed without an error`);
      return null;
    },
    ms,
    `${what} to end with an error`,
  );
  await withTimeout(Promise.race([sub.completed, sub.error]), 2000, `${what} to end after its error`);
  return errors;
}


/**
 * Stores messages of `sender` in order, exactly as sendMessage stores them, but publishes nothing:
 * what subscribers get of them comes from storage.
 */
async function storeUnpublished(pair: Pair, roomId: string, sender: User, texts: string[]): Promise<void> {
  const redis = new Redis(pair.redisUrl, { keyPrefix: pair.prefix });
  try {
    const send = loadScripts(redis, LUA_DIRS).get('sendMessage');
    for (const text of texts) {
      const [status] = (await send(
        [roomKeys.room(roomId), roomKeys.members(roomId), messageKeys.messages(roomId), messageKeys.dedupe(roomId, sender, '')],
        [roomId, sender, text, '', Date.now(), 60, 0],
      )) as [number];
      expect(status).toBe(0);
    }
  } finally {
    redis.disconnect();
  }
}

/** A room of alice (its owner), bob, carol and dave; alice and bob subscribed on A, carol and dave on B. */
async function roomOfFour({ a, b }: Pair) {
  const roomId = await createRoom(a, 'alice', ['bob', 'carol', 'dave']);
  const subs = [
    subscribe(client(a, 'alice'), OnMessageAddedDocument, { roomId }),
    subscribe(client(a, 'bob'), OnMessageAddedDocument, { roomId }),
    subscribe(client(b, 'carol'), OnMessageAddedDocument, { roomId }),
    subscribe(client(b, 'dave'), OnMessageAddedDocument, { roomId }),
  ];
  await waitForStreams(a, 2);
  await waitForStreams(b, 2);
  return { roomId, subs };
}

describe('when instance A’s subscriber connection to Redis is killed', () => {
  // The position check is off here: what is tested is the resync on reconnect and the gap fill.
  let ownRedis: EmbeddedRedis;
  let dir: string;
  let pair: Awaited<ReturnType<typeof startPair>>;
  let admin: Redis;

  beforeAll(async () => {
    // Its own redis-server: CLIENT LIST then only holds this file's connections, so A's
    // subscriber connection is known for sure (both instances name theirs `switchboard:sub`).
    dir = mkdtempSync(join(tmpdir(), 'switchboard-delivery-'));
    ownRedis = await startRedisServer({ dir, appendOnly: false });
    pair = await startPair(ownRedis.url, { POSITION_CHECK_INTERVAL_MS: '0' });
    admin = new Redis(ownRedis.url);
  });
  afterEach(async () => {
    await releaseClients(pair.a, pair.b);
  });
  afterAll(async () => {
    admin?.disconnect();
    await pair?.stop();
    await ownRedis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Kills A's subscriber connection (by id) and resolves once Redis dropped it. */
  async function killSubscriberOfA(): Promise<string> {
    const ids = [...(await subscriberIds(admin))].filter((id) => !pair.bSubscriberIds.has(id));
    expect(ids, 'A has exactly one subscriber connection').toHaveLength(1);
    const id = ids[0]!;
    expect(await admin.client('KILL', 'ID', id)).toBe(1);
    return id;
  }

  /** Subscribers of a room's channel, as Redis counts them. */
  async function channelSubscribers(roomId: string): Promise<number> {
    const [, n] = (await admin.pubsub('NUMSUB', `${pair.prefix}room:${roomId}`)) as [string, number];
    return Number(n);
  }

  it('should give A’s subscribers every message sent from B during the gap and after, once each, in seq order, within a few seconds', async () => {
    const { a, b } = pair;
    const roomId = await createRoom(a, 'alice', ['bob', 'carol']);
    const onA = [subscribe(client(a, 'alice'), OnMessageAddedDocument, { roomId }), subscribe(client(a, 'bob'), OnMessageAddedDocument, { roomId })];
    const onB = subscribe(client(b, 'carol'), OnMessageAddedDocument, { roomId });
    await waitForStreams(a, 2);
    await waitForStreams(b, 1);
    expect(await channelSubscribers(roomId)).toBe(2);

    for (let i = 1; i <= 3; i++) await send(b, 'carol', roomId, `before ${i}`);
    for (const [i, sub] of onA.entries()) await expectSeqs(sub, 1, 3, 5000, `A#${i} before the kill`);

    const killed = await killSubscriberOfA();
    // Sent while A is not subscribed: Redis pub/sub drops these events for A.
    await Promise.all(range(4, 6).map((i) => send(b, 'carol', roomId, `during the gap ${i}`)));
    expect(await channelSubscribers(roomId), 'A must still be unsubscribed when the gap messages are sent').toBe(1);

    // With no later message to reveal the gap, A's subscribers still get them: A re-reads storage
    // once its subscriber connection is back.
    for (const [i, sub] of onA.entries()) await expectSeqs(sub, 1, 6, 5000, `A#${i} after the reconnect`);
    const back = [...(await subscriberIds(admin))].filter((id) => !pair.bSubscriberIds.has(id));
    expect(back).toHaveLength(1);
    expect(back[0]).not.toBe(killed);

    for (let i = 7; i <= 9; i++) await send(b, 'carol', roomId, `after ${i}`);
    await send(b, 'carol', roomId, 'sentinel');
    for (const [i, sub] of [...onA, onB].entries()) {
      await expectSeqs(sub, 1, 10, 5000, `subscriber #${i}`);
      expect(sub.results[9]?.data?.messageAdded.text).toBe('sentinel');
      expect(new Set(sub.results.map((r) => r.data?.messageAdded.id)).size).toBe(10);
      expect(sub.done()).toBe(false);
    }
  });

  it('should give 4 subscribers on both instances seqs 1..200 once each, in order, when A’s subscriber connection is killed in the middle of a concurrent burst', async () => {
    const { a, b } = pair;
    const { roomId, subs } = await roomOfFour(pair);

    const n = 200;
    const senders: [TestInstance, User][] = [
      [a, 'alice'],
      [b, 'bob'],
      [a, 'carol'],
      [b, 'dave'],
    ];
    let next = 0;
    let killedAt = -1;
    const worker = async () => {
      while (next < n) {
        const i = next++;
        if (i === n / 2) {
          await killSubscriberOfA();
          killedAt = i;
        }
        const [instance, user] = senders[i % senders.length]!;
        await send(instance, user, roomId, `burst ${i}`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(killedAt).toBe(n / 2);
    await send(b, 'bob', roomId, 'sentinel');

    for (const [i, sub] of subs.entries()) {
      await expectSeqs(sub, 1, n + 1, 10_000, `subscriber #${i}`);
      expect(sub.results[n]?.data?.messageAdded.text).toBe('sentinel');
      expect(sub.done()).toBe(false);
    }
  });
});

describe('when position checks run every 300 ms', () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startPair(sharedRedisUrl(), { POSITION_CHECK_INTERVAL_MS: '300' });
  });
  afterEach(async () => {
    await releaseClients(pair.a, pair.b);
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('should deliver a stored message whose PUBLISH never happened to subscribers on both instances within 2 s', async () => {
    const { a, b } = pair;
    const roomId = await createRoom(a, 'alice', ['bob']);
    const onA = subscribe(client(a, 'alice'), OnMessageAddedDocument, { roomId });
    const onB = subscribe(client(b, 'bob'), OnMessageAddedDocument, { roomId });
    await waitForStreams(a, 1);
    await waitForStreams(b, 1);

    await storeUnpublished(pair, roomId, 'bob', ['never published']);
    const storedAt = Date.now();
    for (const sub of [onA, onB]) {
      expect((await sub.nth(1, 2000)).data?.messageAdded).toMatchObject({ seq: 1, text: 'never published', sender: { id: 'bob' } });
    }
    expect(Date.now() - storedAt).toBeLessThan(2000);

    // Then live as usual, with nothing twice.
    await send(a, 'alice', roomId, 'published');
    await expectSeqs(onA, 1, 2, 3000, 'A');
    await expectSeqs(onB, 1, 2, 3000, 'B');
  });

  it('should complete the subscriptions on both instances of a member removed with no MemberLeft event (lost) within 2 s, and keep the others', async () => {
    const { a, b } = pair;
    const roomId = await createRoom(a, 'alice', ['bob', 'carol']);
    const removed = [
      subscribe(client(a, 'bob'), OnMessageAddedDocument, { roomId }),
      subscribe(client(a, 'bob'), OnRoomEventsDocument, { roomId }),
      subscribe(client(b, 'bob'), OnMessageAddedDocument, { roomId }),
    ];
    const staying = [
      subscribe(client(a, 'carol'), OnMessageAddedDocument, { roomId }),
      subscribe(client(b, 'carol'), OnMessageAddedDocument, { roomId }),
    ];
    await waitForStreams(a, 3);
    await waitForStreams(b, 2);

    const redis = new Redis(pair.redisUrl, { keyPrefix: pair.prefix });
    try {
      // What the removeMember script writes (atomically), and no event: only the position check
      // can notice, from the room's members version.
      const [[, removed]] = (await redis.multi().zrem(roomKeys.members(roomId), 'bob').hincrby(roomKeys.room(roomId), 'membersVersion', 1).exec()) as [[null, number]];
      expect(removed).toBe(1);
    } finally {
      redis.disconnect();
    }
    const removedAt = Date.now();
    await Promise.all(removed.map((s, i) => completesWithin(s, 2000, `bob's subscription #${i + 1}`)));
    expect(Date.now() - removedAt).toBeLessThan(2000);

    await send(b, 'alice', roomId, 'bob is gone');
    for (const [i, sub] of staying.entries()) {
      await expectSeqs(sub, 1, 1, 3000, `carol #${i}`);
      expect(sub.done()).toBe(false);
    }
    for (const sub of removed) expect(JSON.stringify(sub.results)).not.toContain('bob is gone');
  });

  describe('when the room’s history epoch changes (a reset)', () => {
    it('should answer CURSOR_EXPIRED to history with an old cursor and NOT_FOUND to edits and deletes of old ids', async () => {
      const { a, b } = pair;
      const roomId = await createRoom(a, 'alice', ['bob']);
      const sent = [];
      for (let i = 1; i <= 3; i++) sent.push(await send(b, 'alice', roomId, `old ${i}`));
      const old = sent[1]!;

      const redis = new Redis(pair.redisUrl, { keyPrefix: pair.prefix });
      try {
        expect(await redis.hset(roomKeys.room(roomId), 'epoch', 'reset42')).toBe(0);

        for (const args of [{ after: old.id, first: 10 }, { before: old.id, last: 10 }]) {
          const r = await gql(b.url, MessagesDocument, { roomId, ...args }, { token: tokens.alice });
          expect(codes(r.errors), JSON.stringify(args)).toEqual(['CURSOR_EXPIRED']);
        }
        const edit = await gql(a.url, EditMessageDocument, { messageId: old.id, text: 'rewritten' }, { token: tokens.alice });
        expect(codes(edit.errors)).toEqual(['NOT_FOUND']);
        // The owner may delete anyone's message: NOT_FOUND, not FORBIDDEN, for an old id.
        for (const user of ['alice', 'bob'] as const) {
          const del = await gql(b.url, DeleteMessageDocument, { messageId: old.id }, { token: tokens[user] });
          expect(codes(del.errors), user).toEqual(['NOT_FOUND']);
        }
        // Nothing was applied to the stored message.
        const stored = JSON.parse((await redis.hget(messageKeys.messages(roomId), String(old.seq)))!) as { text: string; deleted: boolean };
        expect(stored).toMatchObject({ text: 'old 2', deleted: false });
      } finally {
        redis.disconnect();
      }
    });

    it('should end open messageAdded subscriptions on both instances with CURSOR_EXPIRED within 2 s', async () => {
      const { a, b } = pair;
      const roomId = await createRoom(a, 'alice', ['bob']);
      await send(a, 'alice', roomId, 'old history');
      const onA = subscribe(client(a, 'alice'), OnMessageAddedDocument, { roomId });
      const onB = subscribe(client(b, 'bob'), OnMessageAddedDocument, { roomId });
      await waitForStreams(a, 1);
      await waitForStreams(b, 1);

      const redis = new Redis(pair.redisUrl, { keyPrefix: pair.prefix });
      try {
        await redis.hset(roomKeys.room(roomId), 'epoch', 'reset43');
      } finally {
        redis.disconnect();
      }
      for (const [i, sub] of [onA, onB].entries()) {
        const errors = await endsWithErrors(sub, 2000, `subscription #${i}`);
        expect(errors.map((e) => e.extensions?.code)).toEqual(['CURSOR_EXPIRED']);
        expect(errors[0]?.extensions?.reason).toBe('HISTORY_RESET');
      }
    });
  });
});

describe('when rooms keep only 5 messages (HISTORY_RETENTION_MESSAGES=5) and 12 were sent', () => {
  let pair: Pair;
  let roomId: string;
  const ids: Record<number, string> = {};

  beforeAll(async () => {
    pair = await startPair(sharedRedisUrl(), { HISTORY_RETENTION_MESSAGES: '5' });
    roomId = await createRoom(pair.a, 'alice', ['bob']);
    for (let i = 1; i <= 12; i++) {
      const m = await send(i % 2 ? pair.a : pair.b, i % 2 ? 'alice' : 'bob', roomId, `m${i}`);
      expect(m.seq).toBe(i);
      ids[m.seq] = m.id;
    }
  });
  afterEach(async () => {
    await releaseClients(pair.a, pair.b);
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('should return seqs 8..12 for messages(last: 50) with hasPreviousPage false', async () => {
    const { messages } = await gqlOk(pair.b.url, MessagesDocument, { roomId, last: 50 }, tokens.alice);
    expect(messages.edges.map((e) => e.node.seq)).toEqual(range(8, 12));
    expect(messages.pageInfo.hasPreviousPage).toBe(false);
    expect(messages.pageInfo.hasNextPage).toBe(false);
    // A history cursor older than the window answers from the oldest kept.
    const page = await gqlOk(pair.a.url, MessagesDocument, { roomId, first: 2, after: ids[2] }, tokens.bob);
    expect(page.messages.edges.map((e) => e.node.seq)).toEqual([8, 9]);
  });

  it('should end messageAdded(after: seq 2) with CURSOR_EXPIRED (reason RETENTION)', async () => {
    const sub = subscribe(client(pair.a, 'alice'), OnMessageAddedDocument, { roomId, after: ids[2] });
    const errors = await endsWithErrors(sub, 3000, 'messageAdded after seq 2');
    expect(errors.map((e) => e.extensions?.code)).toEqual(['CURSOR_EXPIRED']);
    expect(errors[0]?.extensions?.reason).toBe('RETENTION');
    expect(sub.results.filter((r) => r.data?.messageAdded)).toEqual([]);
  });

  it('should replay 8..12 to messageAdded(after: seq 7), then deliver live messages from the other instance', async () => {
    const sub = subscribe(client(pair.b, 'bob'), OnMessageAddedDocument, { roomId, after: ids[7] });
    await expectSeqs(sub, 8, 5, 5000, 'the replay');
    expect(sub.results.map((r) => r.data?.messageAdded.id)).toEqual(range(8, 12).map((s) => ids[s]));
    await send(pair.a, 'alice', roomId, 'm13');
    await expectSeqs(sub, 8, 6, 5000, 'replay then live');
    expect(sub.results[5]?.data?.messageAdded.text).toBe('m13');
    expect(sub.done()).toBe(false);
  });
});

describe('when Redis stops and restarts with its data (AOF) under open subscriptions', () => {
  // The position check is off: what is tested is that each instance resumes on its own when its
  // connections come back, re-reading storage for what pub/sub did not bring.
  let redis: EmbeddedRedis | undefined;
  let port: number;
  let dir: string;
  let pair: Pair;

  const startOwnRedis = async () => {
    redis = await startRedisServer({ dir, port, appendOnly: true });
  };

  beforeAll(async () => {
    port = await freePort();
    dir = mkdtempSync(join(tmpdir(), 'switchboard-delivery-aof-'));
    await startOwnRedis();
    pair = await startPair(redis!.url, { POSITION_CHECK_INTERVAL_MS: '0', REDIS_COMMAND_TIMEOUT_MS: '1000' });
  });
  afterAll(async () => {
    await Promise.all(clients.splice(0).map((c) => c.dispose()));
    await pair?.stop();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Sends until the send is stored: UNAVAILABLE (Redis not back yet) is retried, anything else fails. */
  async function sendWhenBack(instance: TestInstance, user: User, roomId: string, text: string): Promise<number> {
    return waitFor(
      async () => {
        const r = await gql(instance.url, SendMessageDocument, { input: { roomId, text } }, { token: tokens[user] });
        if (r.data?.sendMessage) return r.data.sendMessage.seq;
        expect(codes(r.errors), JSON.stringify(r.errors)).toEqual(['UNAVAILABLE']);
        return null;
      },
      15_000,
      `${text} to be stored`,
    );
  }

  it('should resume every subscription on both instances, catch up from storage with what pub/sub never brought, and go on live', async () => {
    const { a, b } = pair;
    const { roomId, subs } = await roomOfFour(pair);
    for (let i = 1; i <= 3; i++) await send(i % 2 ? a : b, 'alice', roomId, `before ${i}`);
    for (const [i, sub] of subs.entries()) await expectSeqs(sub, 1, 3, 5000, `subscriber #${i} before the stop`);

    await redis!.stop();
    redis = undefined;
    // Down: a send is refused (nothing stored, so nothing for anyone to miss).
    const refused = await gql(b.url, SendMessageDocument, { input: { roomId, text: 'while down' } }, { token: tokens.bob });
    expect(codes(refused.errors)).toEqual(['UNAVAILABLE']);

    await startOwnRedis();
    // Back with its data. Stored while the instances reconnect, as sendMessage stores them but with
    // no PUBLISH and no later message: only an instance re-reading storage once it is subscribed
    // again can deliver them (the position check is off). Then every subscriber connection is
    // dropped once more, so each instance's re-read surely comes after these writes.
    await storeUnpublished(pair, roomId, 'dave', [4, 5, 6].map((seq) => `stored while reconnecting ${seq}`));
    const admin = new Redis(pair.redisUrl);
    try {
      await admin.client('KILL', 'TYPE', 'pubsub');
    } finally {
      admin.disconnect();
    }
    for (const [i, sub] of subs.entries()) {
      await expectSeqs(sub, 1, 6, 10_000, `subscriber #${i} after the restart`);
      expect(sub.results[5]?.data?.messageAdded).toMatchObject({ text: 'stored while reconnecting 6', sender: { id: 'dave' } });
    }

    // Then live from both instances, sends racing the instances' connections coming back.
    const seqs: number[] = [];
    await Promise.all(
      (['alice', 'bob', 'carol', 'dave'] as const).map(async (user, k) => {
        for (let i = 0; i < 3; i++) seqs.push(await sendWhenBack(k % 2 ? b : a, user, roomId, `after ${user} ${i}`));
      }),
    );
    expect(seqs.sort((x, y) => x - y), 'the room’s seq continues from the stored history').toEqual(range(7, 18));
    for (const [i, sub] of subs.entries()) {
      await expectSeqs(sub, 1, 18, 10_000, `subscriber #${i} live again`);
      expect(new Set(sub.results.map((r) => r.data?.messageAdded.id)).size).toBe(18);
      expect(sub.done(), `subscriber #${i} still open`).toBe(false);
    }
  });
});

describe('when Redis restarts empty (no persistence) under open subscriptions', () => {
  let redis: EmbeddedRedis | undefined;
  let port: number;
  const dirs: string[] = [];
  let pair: Pair;
  let roomId: string;
  let oldId: string;
  let open: Subscription<OnMessageAddedSubscription>[];
  let backAt: number;

  const startEmptyRedis = async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-delivery-reset-'));
    dirs.push(dir);
    redis = await startRedisServer({ dir, port, appendOnly: false });
  };

  beforeAll(async () => {
    // Its own redis-server, AOF off, so that a stop and a start on the same port with a new, empty
    // folder is a Redis that lost everything.
    port = await freePort();
    await startEmptyRedis();
    pair = await startPair(redis!.url);
    const { a, b } = pair;
    roomId = await createRoom(a, 'alice', ['bob']);
    open = [subscribe(client(a, 'alice'), OnMessageAddedDocument, { roomId }), subscribe(client(b, 'bob'), OnMessageAddedDocument, { roomId })];
    await waitForStreams(a, 1);
    await waitForStreams(b, 1);
    await send(b, 'bob', roomId, 'before the reset 1');
    await send(a, 'alice', roomId, 'before the reset 2');
    for (const [i, sub] of open.entries()) await expectSeqs(sub, 1, 2, 5000, `${i ? 'B' : 'A'} before the reset`);
    oldId = open[0]!.results[1]!.data!.messageAdded.id;

    await redis!.stop();
    redis = undefined;
    await startEmptyRedis();
    backAt = Date.now();
  });
  afterAll(async () => {
    await Promise.all(clients.splice(0).map((c) => c.dispose()));
    await pair?.stop();
    await redis?.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('should end the open messageAdded subscriptions on both instances with CURSOR_EXPIRED within 5 s of Redis being back', async () => {
    for (const [i, sub] of open.entries()) {
      const errors = await endsWithErrors(sub, 5000, `the subscription on ${i ? 'B' : 'A'} open through the reset`);
      expect(errors.map((e) => e.extensions?.code), JSON.stringify(errors)).toEqual(['CURSOR_EXPIRED']);
    }
    expect(Date.now() - backAt).toBeLessThan(5000);
  });

  it('should answer CURSOR_EXPIRED to a resubscription with `after` set to a message id received before the reset', async () => {
    for (const instance of [pair.a, pair.b]) {
      const resubscribed = subscribe(client(instance, 'alice'), OnMessageAddedDocument, { roomId, after: oldId });
      const errors = await endsWithErrors(resubscribed, 5000, 'the resubscription after an old id');
      expect(errors.map((e) => e.extensions?.code)).toEqual(['CURSOR_EXPIRED']);
    }
  });

  it('should store a user again from their next request to the instance that wrote them before the reset', async () => {
    // Bob was written by B before the reset (his socket and his send), and nothing of his has run
    // since: his next request, to the same instance, writes him again.
    const { b } = pair;
    await waitFor(async () => (await fetch(`${b.base}/ready`, { signal: AbortSignal.timeout(2000) })).status === 200, 5000, '/ready to answer 200');
    expect(await b.app.services.users.getMany(['bob'])).toEqual([null]);
    await gqlOk(b.url, MeDocument, {}, tokens.bob);
    await waitFor(async () => (await b.app.services.users.getMany(['bob']))[0] !== null, 2000, 'bob stored again');
  });

  it('should keep both servers up and deliver again across instances once the users re-create a room', async () => {
    const { a, b } = pair;
    for (const instance of [a, b]) {
      expect((await fetch(`${instance.base}/health`, { signal: AbortSignal.timeout(2000) })).status).toBe(200);
      await waitFor(
        async () => (await fetch(`${instance.base}/ready`, { signal: AbortSignal.timeout(2000) })).status === 200,
        5000,
        '/ready to answer 200',
      );
    }
    const newRoomId = await createRoom(b, 'alice', ['bob']);
    const streamsBefore = [a, b].map((i) => i.app.services.events.openCount());
    const freshA = subscribe(client(a, 'bob'), OnMessageAddedDocument, { roomId: newRoomId });
    const freshB = subscribe(client(b, 'alice'), OnMessageAddedDocument, { roomId: newRoomId });
    await waitForStreams(a, streamsBefore[0]! + 1);
    await waitForStreams(b, streamsBefore[1]! + 1);
    await send(a, 'alice', newRoomId, 'after the reset 1');
    await send(b, 'bob', newRoomId, 'after the reset 2');
    await expectSeqs(freshA, 1, 2, 5000, 'A after the reset');
    await expectSeqs(freshB, 1, 2, 5000, 'B after the reset');
    expect(freshA.results.map((r) => r.data?.messageAdded.text)).toEqual(['after the reset 1', 'after the reset 2']);
    const { messages } = await gqlOk(a.url, MessagesDocument, { roomId: newRoomId, last: 10 }, tokens.bob);
    expect(messages.edges.map((e) => e.node.text)).toEqual(['after the reset 1', 'after the reset 2']);
  });
});
