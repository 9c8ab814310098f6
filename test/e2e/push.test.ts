import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { deliveryId, pushKeys, queuePrefix } from '../../src/push/push.keys.js';
import {
  CreateRoomDocument,
  DeadDeliveriesDocument,
  DeleteMessageDocument,
  DeliveryStatsDocument,
  MarkReadDocument,
  RetryDeadDeliveriesDocument,
  SendMessageDocument,
} from '../generated/graphql.js';
import { clientPool, expectError, gql, gqlOk, waitFor, withTimeout } from '../helpers/clients.js';
import { deletePrefixed } from '../helpers/lua.js';
import { pushEnv, pushQueues, startReceiver, TEST_PUSH_SECRET, verifiedTimestamp, type Answer, type Receiver } from '../helpers/push.js';
import { sharedRedisUrl, startCluster, testUsers, tokenFor, uniquePrefix, type TestInstance } from '../helpers/server.js';

/**
 * Push deliveries end to end, with real instances on the shared Redis and a local receiving HTTP
 * server behind PUSH_WEBHOOK_URL: who gets a push, what it says and how it is signed, retries and
 * Retry-After, permanent failures and the dead letters, retrying them, idempotency, skips and the
 * collapse of bursts. Each describe runs its own deployment (key prefix); the SIGKILL of a worker
 * mid-delivery is in push-crash.test.ts.
 */

const users = testUsers();
const pool = clientPool();
let receiver: Receiver;
/** A token with the `admin` role. */
let admin: string;

beforeAll(async () => {
  receiver = await startReceiver();
  admin = await tokenFor('ops', { roles: ['admin'] });
});

afterEach(async () => {
  await pool.disposeAll();
});

afterAll(async () => {
  await receiver.close();
});

/** A deployment of `n` instances pushing to the receiver, with its own prefix and an operator's view of its queues. */
function deployment(n: number, env: Record<string, string> = {}) {
  const prefix = uniquePrefix('push');
  const d = {
    prefix,
    instances: [] as TestInstance[],
    queues: pushQueues(prefix),
    get a() {
      return d.instances[0] as TestInstance;
    },
    get b() {
      return d.instances[1] ?? (d.instances[0] as TestInstance);
    },
  };
  beforeAll(async () => {
    d.instances = await startCluster(n, { REDIS_KEY_PREFIX: prefix, ...pushEnv(receiver.url, env) });
  });
  afterAll(async () => {
    await Promise.all(d.instances.map((i) => i.stop()));
    await d.queues.close();
    await deletePrefixed(prefix);
  });
  return d;
}

/** A room of `label` owned by a fresh sender, with fresh members; returns the ids. */
async function roomWith(url: string, label: string, memberLabels: string[]) {
  const sender = await users.newUser('alice');
  const members = await Promise.all(memberLabels.map((l) => users.newUser(l)));
  const name = `${label}-${randomBytes(3).toString('hex')}`;
  const { createRoom } = await gqlOk(url, CreateRoomDocument, { input: { name, memberIds: members } }, users.token(sender));
  return { roomId: createRoom.id, name, sender, members };
}

const send = async (url: string, token: string, roomId: string, text: string, clientId?: string) =>
  (await gqlOk(url, SendMessageDocument, { input: { roomId, text, ...(clientId ? { clientId } : {}) } }, token)).sendMessage;

/**
 * A fresh room with one offline member, `bob`, whose pushes the receiver answers with `answers`
 * (200 when none); sends `text` into it and returns the message and bob's delivery id.
 */
async function sendToOneOffline(url: string, label: string, text: string, ...answers: Answer[]) {
  const { roomId, name, sender, members } = await roomWith(url, label, ['bob']);
  const bob = members[0] as string;
  if (answers.length > 0) receiver.answer(bob, ...answers);
  const message = await send(url, users.token(sender), roomId, text);
  return { roomId, name, sender, bob, message, id: deliveryId(message.id, bob) };
}

describe('when a message is sent in a room with offline members', () => {
  const d = deployment(2);

  it('should POST one signed push per offline member (not the sender, not a connected member) with its unread counts', async () => {
    const { roomId, name, sender, members } = await roomWith(d.a.url, 'general', ['bob', 'carol']);
    const [bob, carol] = members as [string, string];
    // carol has a live connection (on the other instance); bob has none.
    const ws = pool.open(d.b.wsUrl, users.token(carol));
    await withTimeout(new Promise<void>((resolve) => ws.on('connected', () => resolve())), 5000, 'carol to connect');

    const message = await send(d.a.url, users.token(sender), roomId, '  hello   bob, see you at noon  ');
    const [push] = await receiver.waitFor(bob, 1);
    const id = deliveryId(message.id, bob);

    expect(push?.body).toEqual({
      id,
      recipientId: bob,
      room: { id: roomId, name },
      messageId: message.id,
      messageCount: 1,
      sender: { id: sender, name: 'alice' },
      preview: 'hello bob, see you at noon',
      title: `alice in #${name}`,
      unreadCount: 1,
      roomUnreadCount: 1,
      sentAt: message.createdAt,
    });
    expect(push?.headers['content-type']).toBe('application/json');
    expect(push?.headers['idempotency-key']).toBe(id);
    const signedAt = verifiedTimestamp(push!);
    expect(signedAt, `signature ${String(push?.headers['x-switchboard-signature'])} does not verify`).not.toBeNull();
    expect(Math.abs(signedAt! - Date.now() / 1000)).toBeLessThan(60);
    expect(verifiedTimestamp(push!, `${TEST_PUSH_SECRET}-not`)).toBeNull();

    // The fan-out that made bob's job made every job of the message: none for carol or alice.
    expect(await d.queues.queue.getJob(deliveryId(message.id, carol))).toBeUndefined();
    expect(await d.queues.queue.getJob(deliveryId(message.id, sender))).toBeUndefined();
    const job = await d.queues.finished(id);
    expect(job.returnvalue).toEqual({ status: 'delivered', messageCount: 1 });
    expect(receiver.of(carol)).toEqual([]);
    expect(receiver.of(sender)).toEqual([]);
  });

  it('should count the badge over all of the recipient’s rooms', async () => {
    const first = await roomWith(d.a.url, 'one', ['bob']);
    const bob = first.members[0] as string;
    const { createRoom } = await gqlOk(d.a.url, CreateRoomDocument, { input: { name: 'two', memberIds: [bob] } }, users.token(first.sender));
    await send(d.a.url, users.token(first.sender), createRoom.id, 'in two');
    await receiver.waitFor(bob, 1);
    await send(d.b.url, users.token(first.sender), first.roomId, 'in one');
    const pushes = await receiver.waitFor(bob, 2);
    expect(pushes[1]?.body).toMatchObject({ room: { id: first.roomId }, unreadCount: 2, roomUnreadCount: 1 });
  });
});

describe('when the receiver fails', () => {
  const d = deployment(1, { PUSH_ATTEMPTS: '4' });

  it('should retry after 500s with the same Idempotency-Key and body, then succeed', async () => {
    const { bob, id } = await sendToOneOffline(d.a.url, 'flaky', 'try again', 500, 500, 200);
    const pushes = await receiver.waitFor(bob, 3);
    expect(pushes.map((p) => p.headers['idempotency-key'])).toEqual([id, id, id]);
    expect(new Set(pushes.map((p) => p.body.id))).toEqual(new Set([id]));
    expect(pushes.every((p) => verifiedTimestamp(p) !== null)).toBe(true);
    const job = await d.queues.finished(id);
    expect(job.returnvalue).toEqual({ status: 'delivered', messageCount: 1 });
    expect(job.attemptsMade).toBe(3);
  });

  it('should retry a 408 like a 500', async () => {
    const { bob, id } = await sendToOneOffline(d.a.url, 'timeout', 'slow', 408, 200);
    await receiver.waitFor(bob, 2);
    expect((await d.queues.finished(id)).returnvalue).toMatchObject({ status: 'delivered' });
  });

  it('should wait as long as a 429’s Retry-After asks, not the (much shorter) backoff', async () => {
    const { bob } = await sendToOneOffline(d.a.url, 'limited', 'slow down', { status: 429, headers: { 'retry-after': '1' } }, 200);
    const [first, second] = await receiver.waitFor(bob, 2);
    // The backoff here is 50..200 ms: only Retry-After explains a second or more.
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(950);
  });

  it('should dead-letter a delivery whose every attempt failed, with the last error', async () => {
    const { bob, message, id } = await sendToOneOffline(d.a.url, 'down', 'anyone?', { status: 503, body: 'maintenance' });
    const dead = await waitFor(() => d.queues.dead.getJob(id), 10_000, 'the dead letter');
    expect(receiver.of(bob)).toHaveLength(4);
    expect(dead.data).toMatchObject({ messageId: message.id, recipientId: bob, attempts: 4 });
    expect(dead.data.error).toBe('webhook answered HTTP 503: maintenance');
    expect(await d.queues.queue.getJob(id)).toBeUndefined();
  });
});

describe('when the receiver refuses a push for good (4xx)', () => {
  const d = deployment(2);

  it('should not retry it, keep it in the dead letters with the error, and requeue it on retryDeadDeliveries (admin only)', async () => {
    const { roomId, bob, message, id } = await sendToOneOffline(d.a.url, 'refused', 'are you there', { status: 400, body: 'unknown device' });
    await waitFor(() => d.queues.dead.getJob(id), 10_000, 'the dead letter');
    expect(receiver.of(bob)).toHaveLength(1);

    const ops = admin;
    const stats = await gqlOk(d.b.url, DeliveryStatsDocument, {}, ops);
    expect(stats.deliveryStats).toMatchObject({ queue: 'push', dead: 1, failed: 0 });
    const { deadDeliveries } = await gqlOk(d.b.url, DeadDeliveriesDocument, { first: 10 }, ops);
    expect(deadDeliveries).toEqual([
      { id, recipientId: bob, roomId, messageId: message.id, error: 'webhook answered HTTP 400: unknown device', attempts: 1, failedAt: expect.any(String) },
    ]);

    // Operators only.
    expectError(await gql(d.b.url, RetryDeadDeliveriesDocument, { limit: 10 }, { token: users.token(bob) }), 'FORBIDDEN');
    expectError(await gql(d.b.url, DeliveryStatsDocument, {}, { token: users.token(bob) }), 'FORBIDDEN');
    expectError(await gql(d.b.url, RetryDeadDeliveriesDocument, { limit: 0 }, { token: ops }), 'BAD_USER_INPUT', 'limit');

    // The receiver is fixed; the operator retries.
    receiver.answer(bob, 200);
    const retried = await gqlOk(d.b.url, RetryDeadDeliveriesDocument, { limit: 10 }, ops);
    expect(retried.retryDeadDeliveries).toBe(1);
    const [, again] = await receiver.waitFor(bob, 2);
    expect(again?.headers['idempotency-key']).toBe(id);
    expect(again?.body).toMatchObject({ id, messageId: message.id, messageCount: 1 });
    expect((await d.queues.finished(id)).returnvalue).toEqual({ status: 'delivered', messageCount: 1 });
    await waitFor(
      async () => (await gqlOk(d.b.url, DeliveryStatsDocument, {}, ops)).deliveryStats.dead === 0,
      5000,
      'the dead letters to be empty',
    );
    expect((await gqlOk(d.b.url, RetryDeadDeliveriesDocument, { limit: 10 }, ops)).retryDeadDeliveries).toBe(0);
  });
});

describe('when the same message is sent twice or fanned out twice', () => {
  const d = deployment(2);

  it('should push it once per recipient', async () => {
    const { roomId, sender, members } = await roomWith(d.a.url, 'dupes', ['bob', 'carol']);
    const token = users.token(sender);
    // The same clientId through both instances at once: one message.
    const [m1, m2] = await Promise.all([send(d.a.url, token, roomId, 'once', 'c-1'), send(d.b.url, token, roomId, 'once', 'c-1')]);
    expect(m1.id).toBe(m2.id);
    for (const userId of members) {
      const job = await d.queues.finished(deliveryId(m1.id, userId));
      expect(job.returnvalue).toEqual({ status: 'delivered', messageCount: 1 });
    }
    // The outbox entry handled again (a reader that died after enqueuing, taken over): nothing new.
    const redis = new Redis(sharedRedisUrl(), { keyPrefix: d.prefix });
    try {
      await redis.xadd(pushKeys.outbox(), '*', 'm', m1.id, 'u', sender);
      await waitFor(async () => (await redis.xlen(pushKeys.outbox())) === 0, 5000, 'the outbox to drain');
    } finally {
      redis.disconnect();
    }
    for (const userId of members) {
      expect(receiver.of(userId)).toHaveLength(1);
      expect((await d.queues.queue.getJob(deliveryId(m1.id, userId)))?.attemptsMade).toBe(1);
    }
  });
});

describe('when the collapse window holds deliveries back', () => {
  // Deliveries wait a minute unless promoted: each test decides when "the window ends".
  const d = deployment(1, { PUSH_COLLAPSE_WINDOW_MS: '60000' });

  /** Ends the window of these deliveries now; resolves with their finished jobs. */
  async function endWindow(ids: string[]) {
    for (const id of ids) await (await d.queues.job(id)).promote();
    return Promise.all(ids.map((id) => d.queues.finished(id)));
  }

  it('should skip a recipient who connected before the delivery ran', async () => {
    const { bob, id } = await sendToOneOffline(d.a.url, 'back', 'you there?');
    expect(await (await d.queues.job(id)).getState()).toBe('delayed');
    const ws = pool.open(d.a.wsUrl, users.token(bob));
    await withTimeout(new Promise<void>((resolve) => ws.on('connected', () => resolve())), 5000, 'bob to connect');
    const [job] = await endWindow([id]);
    expect(job?.returnvalue).toEqual({ status: 'skipped', reason: 'online' });
    expect(receiver.of(bob)).toEqual([]);
  });

  it('should skip a recipient who read the room before the delivery ran', async () => {
    const { roomId, bob, message, id } = await sendToOneOffline(d.a.url, 'read', 'read me');
    await d.queues.job(id);
    await gqlOk(d.a.url, MarkReadDocument, { roomId, messageId: message.id }, users.token(bob));
    const [job] = await endWindow([id]);
    expect(job?.returnvalue).toEqual({ status: 'skipped', reason: 'read' });
    expect(receiver.of(bob)).toEqual([]);
  });

  it('should collapse a burst to one recipient into one push, and push what comes after it separately', async () => {
    const { roomId, name, sender, members } = await roomWith(d.a.url, 'burst', ['bob']);
    const bob = members[0] as string;
    const token = users.token(sender);
    const burst = [];
    for (const text of ['one', 'two', 'three']) burst.push(await send(d.a.url, token, roomId, text));
    const ids = burst.map((m) => deliveryId(m.id, bob));
    const jobs = await endWindow(ids);
    expect(jobs.map((j) => j.returnvalue)).toEqual([
      { status: 'delivered', messageCount: 3 },
      { status: 'skipped', reason: 'covered' },
      { status: 'skipped', reason: 'covered' },
    ]);
    const [push] = await receiver.waitFor(bob, 1);
    expect(push?.body).toMatchObject({
      id: ids[0],
      messageId: burst[2]?.id,
      messageCount: 3,
      preview: 'three',
      title: `3 new messages in #${name}`,
      unreadCount: 3,
    });

    const later = await send(d.a.url, token, roomId, 'four');
    await endWindow([deliveryId(later.id, bob)]);
    const [, next] = await receiver.waitFor(bob, 2);
    expect(next?.body).toMatchObject({ messageId: later.id, messageCount: 1, preview: 'four', title: `alice in #${name}`, unreadCount: 4 });
    expect(receiver.of(bob)).toHaveLength(2);
  });

  it('should leave deleted messages out of a push, and skip it when nothing is left', async () => {
    const { roomId, sender, members } = await roomWith(d.a.url, 'oops', ['bob']);
    const bob = members[0] as string;
    const token = users.token(sender);
    const kept = await send(d.a.url, token, roomId, 'kept');
    const gone = await send(d.a.url, token, roomId, 'typo');
    await gqlOk(d.a.url, DeleteMessageDocument, { messageId: gone.id }, token);
    const [job] = await endWindow([deliveryId(kept.id, bob), deliveryId(gone.id, bob)]);
    expect(job?.returnvalue).toEqual({ status: 'delivered', messageCount: 1 });
    const [push] = await receiver.waitFor(bob, 1);
    expect(push?.body).toMatchObject({ messageId: kept.id, preview: 'kept' });

    const alone = await send(d.a.url, token, roomId, 'never mind');
    await gqlOk(d.a.url, DeleteMessageDocument, { messageId: alone.id }, token);
    const [skippedJob] = await endWindow([deliveryId(alone.id, bob)]);
    expect(skippedJob?.returnvalue).toEqual({ status: 'skipped', reason: 'read' });
    expect(receiver.of(bob)).toHaveLength(1);
  });
});

describe('when push is not configured', () => {
  const prefix = uniquePrefix('nopush');
  let instances: TestInstance[] = [];
  beforeAll(async () => {
    instances = await startCluster(1, { REDIS_KEY_PREFIX: prefix });
  });
  afterAll(async () => {
    await Promise.all(instances.map((i) => i.stop()));
    await deletePrefixed(prefix);
  });

  it('should enqueue nothing, and answer operators NOT_CONFIGURED', async () => {
    const url = (instances[0] as TestInstance).url;
    const { roomId, sender, members } = await roomWith(url, 'quiet', ['bob']);
    await send(url, users.token(sender), roomId, 'no push');
    const redis = new Redis(sharedRedisUrl());
    try {
      expect(await redis.exists(`${prefix}${pushKeys.outbox()}`)).toBe(0);
      expect(await redis.keys(`${queuePrefix(prefix)}*`)).toEqual([]);
    } finally {
      redis.disconnect();
    }
    expect(receiver.of(members[0] as string)).toEqual([]);
    expectError(await gql(url, DeliveryStatsDocument, {}, { token: admin }), 'NOT_CONFIGURED');
    expectError(await gql(url, RetryDeadDeliveriesDocument, {}, { token: admin }), 'NOT_CONFIGURED');
    expectError(await gql(url, DeliveryStatsDocument, {}, { token: users.token(sender) }), 'FORBIDDEN');
  });
});
