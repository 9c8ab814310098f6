import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeys } from '../../src/users/users.keys.js';
import { CreateRoomDocument, SendMessageDocument } from '../generated/graphql.js';
import { gqlOk, subscribe, wsClient } from '../helpers/clients.js';
import { monitorRedis } from '../helpers/monitor.js';
import {
  sharedRedisUrl,
  startCluster,
  startInstance,
  tokenFor,
  uid,
  uniquePrefix,
  waitForStreams,
  type TestInstance,
} from '../helpers/server.js';

// messageAdded only: room presence events (each subscriber's arrival) would add executions of their own.
const PLAIN = `subscription($r: ID!) { messageAdded(roomId: $r) { seq text sender { id name } } }`;

describe('when several subscribers on one instance run the same operation', () => {
  let server: TestInstance;
  beforeAll(async () => {
    server = await startInstance();
  });
  afterAll(() => server?.stop());

  it('should execute each event once and give every subscriber the same result', async () => {
    const owner = await tokenFor('se-owner', { name: 'Owner' });
    const ids = ['se-a', 'se-b', 'se-c'];
    const { createRoom } = await gqlOk(server.url, CreateRoomDocument, { input: { name: 'shared', memberIds: ids } }, owner);
    const clients = await Promise.all(ids.map(async (id) => wsClient(server.wsUrl, await tokenFor(id))));
    const subs = clients.map((c) => subscribe(c, PLAIN, { r: createRoom.id }));
    await waitForStreams(server, 3);
    const before = { ...server.app.executionStats };
    for (let i = 1; i <= 5; i++) {
      await gqlOk(server.url, SendMessageDocument, { input: { roomId: createRoom.id, text: `m${i}` } }, owner);
    }
    const all = await Promise.all(subs.map((s) => s.take(5)));
    for (const results of all) {
      expect(results.map((r) => (r.data as { messageAdded: { seq: number } }).messageAdded.seq)).toEqual([1, 2, 3, 4, 5]);
      expect(results[0]?.data).toEqual({
        messageAdded: { seq: 1, text: 'm1', sender: { id: 'se-owner', name: 'Owner' } },
      });
    }
    expect(server.app.executionStats.executions - before.executions).toBe(5);
    expect(server.app.executionStats.shared - before.shared).toBe(10);
    // Live subscribers get their frames straight from the pub/sub listener, not through graphql-ws'
    // per-subscriber iterator chain: 3 subscribers x 5 messages.
    expect(server.app.executionStats.direct - before.direct).toBe(15);
    await Promise.all(clients.map((c) => c.dispose()));
  });
});

describe('when a message is delivered by an instance other than the one it was sent to', () => {
  let a: TestInstance;
  let b: TestInstance;
  const prefix = uniquePrefix('se-two');
  beforeAll(async () => {
    [a, b] = (await startCluster(2, { REDIS_KEY_PREFIX: prefix })) as [TestInstance, TestInstance];
  });
  afterAll(() => Promise.all([a?.stop(), b?.stop()]));

  it("should name the sender from the event, reading no user from Redis, and show a new name at once", async () => {
    const sender = uid('se-sender');
    const readers = [uid('se-r1'), uid('se-r2')];
    const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'named', memberIds: readers } }, await tokenFor(sender, { name: 'Before' }));
    const clients = await Promise.all(readers.map(async (id) => wsClient(b.wsUrl, await tokenFor(id))));
    const subs = clients.map((c) => subscribe(c, PLAIN, { r: createRoom.id }));
    await waitForStreams(b, 2);
    const userReads: string[][] = []; // every command naming the sender's hash
    const monitor = await monitorRedis(sharedRedisUrl(), (args) => {
      if (args.some((x) => x.startsWith(`${prefix}${userKeys.user(sender)}`))) userReads.push(args);
    });
    try {
      for (const [i, name] of ['Before', 'Before', 'After'].entries()) {
        await gqlOk(a.url, SendMessageDocument, { input: { roomId: createRoom.id, text: `m${i + 1}` } }, await tokenFor(sender, { name }));
      }
      const all = await Promise.all(subs.map((s) => s.take(3)));
      for (const results of all) {
        expect(results.map((r) => (r.data as { messageAdded: { sender: { name: string } } }).messageAdded.sender.name)).toEqual(['Before', 'Before', 'After']);
      }
      // The sends write the name (touch, on instance a; MONITOR shows a script's inner commands too),
      // but nothing reads the sender's hash: not the deliveries on b, not the sends' own answers.
      expect(userReads.length, 'the touches were seen').toBeGreaterThan(0);
      expect(userReads.filter((c) => /^(hget|hmget|hgetall)$/i.test(c[0] ?? ''))).toEqual([]);
    } finally {
      monitor.stop();
      await Promise.all(clients.map((c) => c.dispose()));
    }
  });
});
