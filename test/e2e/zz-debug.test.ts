import { it } from 'vitest';
import { CreateRoomDocument, OnMessageAddedDocument } from '../generated/graphql.js';
import { gqlOk, subscribe, waitFor, wsClient } from '../helpers/clients.js';
import { startInstance, tokenFor } from '../helpers/server.js';
it('dbg', async () => {
  const a = await startInstance({ LOG_LEVEL: 'debug' });
  const owner = await tokenFor('o');
  const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'x' } }, owner);
  const client = wsClient(a.wsUrl, await tokenFor('out'));
  const sub = subscribe(client, OnMessageAddedDocument, { roomId: createRoom.id });
  await waitFor(() => sub.results.length > 0 || sub.done(), 5000, 'x');
  console.log(JSON.stringify(sub.results), sub.done());
  sub.error.then((e) => console.log('ERR', JSON.stringify(e)));
  const sub2 = subscribe(client, OnMessageAddedDocument, { roomId: 'nope' });
  await waitFor(() => sub2.results.length > 0 || sub2.done(), 5000, 'x');
  console.log(JSON.stringify(sub2.results));
  await client.dispose(); await a.stop();
});
