import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateRoomDocument, OnMessageAddedDocument, SendMessageDocument } from '../generated/graphql.js';
import { gqlOk, subscribe, wsClient } from '../helpers/clients.js';
import { startCluster, tokenFor, waitForStreams, type TestInstance } from '../helpers/server.js';


describe('when two instances share one Redis', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2)) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('should deliver a message sent on B to a subscriber on A', async () => {
    const alice = await tokenFor('alice');
    const bob = await tokenFor('bob');
    const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'smoke', memberIds: ['bob'] } }, alice);
    const client = wsClient(a.wsUrl, alice);
    const sub = subscribe(client, OnMessageAddedDocument, { roomId: createRoom.id });
    await waitForStreams(a, 1);
    await gqlOk(b.url, SendMessageDocument, { input: { roomId: createRoom.id, text: 'hi' } }, bob);
    const first = await sub.nth(1);
    expect(first.data?.messageAdded).toMatchObject({ text: 'hi', seq: 1, sender: { id: 'bob' } });
    await client.dispose();
  });
});
