import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateRoomDocument, SendMessageDocument } from '../generated/graphql.js';
import { gqlOk, subscribe, wsClient } from '../helpers/clients.js';
import { startInstance, tokenFor, waitForStreams, type TestInstance } from '../helpers/server.js';

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
    await Promise.all(clients.map((c) => c.dispose()));
  });
});
