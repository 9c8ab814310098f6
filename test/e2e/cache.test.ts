import { describe, expect, it } from 'vitest';
import { PublicRoomsDocument } from '../generated/graphql.js';
import { createRoomAs, gqlTraced } from '../helpers/clients.js';
import { clusterForFile, tokenFor, uid, type TestInstance } from '../helpers/server.js';

/** The cache behind the public room directory, on two instances of one deployment. */

const cluster = clusterForFile(2);

describe('when the public directory is read twice', () => {
  it('should answer the second read from the cache, until a public room is created on any instance', async () => {
    const [a, b] = cluster as [TestInstance, TestInstance];
    const token = await tokenFor(uid('directory'));
    const label = uid('dir');
    const first = await createRoomAs(a.url, token, [], { label, visibility: 'PUBLIC' });
    const read = (on: TestInstance) => gqlTraced(on.url, PublicRoomsDocument, { query: label, first: 10 }, token);

    const miss = await read(a);
    const hit = await read(a);
    expect(miss.data.publicRooms.edges.map((e) => e.node.id)).toEqual([first]);
    expect(hit.data).toEqual(miss.data);
    expect(miss.redis.cache).toEqual({ hits: 0, misses: 1 });
    expect(hit.redis.cache).toEqual({ hits: 1, misses: 0 });
    // The cached page of entries, then the rooms themselves (read fresh).
    expect(hit.redis.roundTrips).toBe(2);
    // Another instance shares the entry.
    expect((await read(b)).redis.cache).toEqual({ hits: 1, misses: 0 });

    // A private room changes nothing; a public one is listed at once, on both instances.
    await createRoomAs(b.url, token, [], { label, visibility: 'PRIVATE' });
    expect((await read(a)).redis.cache).toEqual({ hits: 1, misses: 0 });
    const second = await createRoomAs(b.url, token, [], { label, visibility: 'PUBLIC' });
    const after = await read(a);
    expect(after.redis.cache).toEqual({ hits: 0, misses: 1 });
    expect(after.data.publicRooms.edges.map((e) => e.node.id).sort()).toEqual([first, second].sort());
  });
});
