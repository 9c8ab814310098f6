import { it, expect } from 'vitest';
import { CreateRoomDocument, OnMessageAddedDocument, SendMessageDocument } from '../generated/graphql.js';
import { gqlOk, subscribe, wsClient, waitFor } from '../helpers/clients.js';
import { startCluster, tokenFor, waitForStreams, type TestInstance } from '../helpers/server.js';
it('probe', async () => {
  const [a] = (await startCluster(1)) as [TestInstance];
  const alice = await tokenFor('alice');
  const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'p' } }, alice);
  const c = wsClient(a.wsUrl, alice);
  subscribe(c, OnMessageAddedDocument, { roomId: createRoom.id });
  await waitForStreams(a, 1);
  await c.dispose();
  await new Promise((r) => setTimeout(r, 1000));
  console.log('after dispose', a.app.services.events.openCount());
  await gqlOk(a.url, SendMessageDocument, { input: { roomId: createRoom.id, text: 'x' } }, alice);
  await waitFor(() => a.app.services.events.openCount() === 0, 2000, 'close');
  console.log('after message', a.app.services.events.openCount());
  await a.stop();
});
