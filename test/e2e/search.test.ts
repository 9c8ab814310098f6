import { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { searchKeys } from '../../src/search/search.keys.js';
import {
  AddMembersDocument,
  DeleteMessageDocument,
  EditMessageDocument,
  LeaveRoomDocument,
  RemoveMemberDocument,
  SearchMessagesDocument,
  SearchWithSendersDocument,
  SendMessageDocument,
  type SearchMessagesQuery,
  type SearchMessagesQueryVariables,
} from '../generated/graphql.js';
import { createRoomAs, expectError, gql, gqlOk, gqlTraced } from '../helpers/clients.js';
import { clusterForFile, sharedRedisUrl, startInstance, tokenFor, uid, uniquePrefix, type TestInstance } from '../helpers/server.js';

/**
 * searchMessages end to end, on two instances of one deployment: folding (case, accents, CJK),
 * prefixes, AND of words, pagination across rooms, edits and deletes, membership, the cache (with
 * its round trips through X-Debug-Redis), retention, input limits and the rate limit.
 */

type Page = SearchMessagesQuery['searchMessages'];

const cluster = clusterForFile(2);
/** The two instances (started before the tests). */
const a = () => cluster[0] as TestInstance;
const b = () => cluster[1] as TestInstance;

/** A user and their token. */
async function user(label: string) {
  const id = uid(label);
  return { id, token: await tokenFor(id, { name: label }) };
}

const send = async (token: string, roomId: string, text: string, on = a()) =>
  (await gqlOk(on.url, SendMessageDocument, { input: { roomId, text } }, token)).sendMessage;

const search = async (token: string, vars: SearchMessagesQueryVariables, on = a()): Promise<Page> =>
  (await gqlOk(on.url, SearchMessagesDocument, vars, token)).searchMessages;

/** The texts a search finds (first page of up to 100), newest first. */
const texts = async (token: string, query: string, roomId?: string, on = a()) =>
  (await search(token, { query, first: 100, ...(roomId ? { roomId } : {}) }, on)).edges.map((e) => e.node.text);

/** Runs a search with X-Debug-Redis; returns the page and `extensions.redis`. */
async function traced(token: string, vars: SearchMessagesQueryVariables) {
  const { data, redis } = await gqlTraced(a().url, SearchMessagesDocument, vars, token);
  return { page: data.searchMessages, redis };
}

/** A fresh user's room holding `texts`, sent in order. */
async function roomWith(label: string, texts: string[]) {
  const owner = await user(label);
  const roomId = await createRoomAs(a().url, owner.token, [], { label });
  for (const text of texts) await send(owner.token, roomId, text);
  return { owner, roomId };
}

describe('when words are written differently', () => {
  let owner: { id: string; token: string };
  let roomId: string;
  beforeAll(async () => {
    ({ owner, roomId } = await roomWith('folding', [
      'Meet at the Café Crème',
      'plain cafe downstairs',
      'HELLO World',
      '東京都に住んでいます',
      '我爱北京天安门',
      'naïve Straße résumé',
      'Ｆｕｌｌｗｉｄｔｈ letters',
    ]));
  });

  it('should find accented words without accents, and plain words with them', async () => {
    expect(await texts(owner.token, 'cafe', roomId)).toEqual(['plain cafe downstairs', 'Meet at the Café Crème']);
    expect(await texts(owner.token, 'CAFÉ', roomId)).toEqual(['plain cafe downstairs', 'Meet at the Café Crème']);
    expect(await texts(owner.token, 'creme', roomId)).toEqual(['Meet at the Café Crème']);
    expect(await texts(owner.token, 'naive resume strasse', roomId)).toEqual(['naïve Straße résumé']);
  });

  it('should ignore case, and fold full-width letters', async () => {
    expect(await texts(owner.token, 'hello world', roomId)).toEqual(['HELLO World']);
    expect(await texts(owner.token, 'World HELLO', roomId)).toEqual(['HELLO World']);
    expect(await texts(owner.token, 'fullwidth', roomId)).toEqual(['Ｆｕｌｌｗｉｄｔｈ letters']);
  });

  it('should find Chinese and Japanese words inside unspaced text', async () => {
    expect(await texts(owner.token, '東京', roomId)).toEqual(['東京都に住んでいます']);
    expect(await texts(owner.token, '北京', roomId)).toEqual(['我爱北京天安门']);
    expect(await texts(owner.token, '天安门 北京', roomId)).toEqual(['我爱北京天安门']);
    expect(await texts(owner.token, '我爱北', roomId)).toEqual(['我爱北京天安门']);
    expect(await texts(owner.token, '上海', roomId)).toEqual([]);
  });
});

describe('when a query has several words', () => {
  let owner: { id: string; token: string };
  let roomId: string;
  beforeAll(async () => {
    ({ owner, roomId } = await roomWith('words', ['red apple pie', 'green apple', 'red car', 'a wonderful day', 'helpful hint']));
  });

  it('should find only messages holding every word, in any order', async () => {
    expect(await texts(owner.token, 'apple red', roomId)).toEqual(['red apple pie']);
    expect(await texts(owner.token, 'red', roomId)).toEqual(['red car', 'red apple pie']);
    expect(await texts(owner.token, 'green car', roomId)).toEqual([]);
  });

  it('should match the last word as a prefix, and only the last', async () => {
    expect(await texts(owner.token, 'wond', roomId)).toEqual(['a wonderful day']);
    expect(await texts(owner.token, 'hel', roomId)).toEqual(['helpful hint']);
    expect(await texts(owner.token, 'red app', roomId)).toEqual(['red apple pie']);
    expect(await texts(owner.token, 'app red', roomId)).toEqual([]);
    expect(await texts(owner.token, 'wonderfully', roomId)).toEqual([]);
  });
});

describe('when results span several rooms and pages', () => {
  it('should page newest first across rooms with no duplicate and no gap', async () => {
    const owner = await user('pages');
    const rooms = await Promise.all([1, 2, 3].map(() => createRoomAs(a().url, owner.token, [], { label: 'pages' })));
    const sent: string[] = [];
    for (let i = 0; i < 26; i++) {
      // Alternate rooms and instances; every third message does not match.
      const on = i % 2 === 0 ? a() : b();
      const text = i % 3 === 2 ? `unrelated ${i}` : `paging needle ${i}`;
      const m = await send(owner.token, rooms[i % 3] as string, text, on);
      if (i % 3 !== 2) sent.push(m.id);
    }
    const seen: string[] = [];
    let after: string | null = null;
    for (let pages = 0; pages < 10; pages++) {
      const page: Page = await search(owner.token, { query: 'needle', first: 4, after }, pages % 2 === 0 ? a() : b());
      seen.push(...page.edges.map((e) => e.node.id));
      expect(page.pageInfo.hasPreviousPage).toBe(after !== null);
      if (!page.pageInfo.hasNextPage) break;
      after = page.pageInfo.endCursor ?? null;
    }
    expect(seen).toEqual([...sent].reverse());
  });

  it('should page one room the same way', async () => {
    const owner = await user('room-pages');
    const roomId = await createRoomAs(a().url, owner.token, [], { label: 'room-pages' });
    const sent: string[] = [];
    for (let i = 0; i < 11; i++) sent.push((await send(owner.token, roomId, `solo needle ${i}`)).id);
    const first = await search(owner.token, { query: 'needle', roomId, first: 5 });
    const second = await search(owner.token, { query: 'needle', roomId, first: 5, after: first.pageInfo.endCursor });
    const third = await search(owner.token, { query: 'needle', roomId, first: 5, after: second.pageInfo.endCursor });
    expect([first, second, third].map((p) => p.pageInfo.hasNextPage)).toEqual([true, true, false]);
    expect([...first.edges, ...second.edges, ...third.edges].map((e) => e.node.id)).toEqual([...sent].reverse());
  });
});

describe('when a message is edited or deleted', () => {
  it('should find it by its new text at once, and never once deleted, even right after a cached search', async () => {
    const owner = await user('edits');
    const other = await user('edits-other');
    const roomId = await createRoomAs(a().url, owner.token, [other.id], { label: 'edits' });
    const m = await send(owner.token, roomId, 'bring the banana bread');
    expect(await texts(other.token, 'banana')).toEqual(['bring the banana bread']);
    expect(await texts(other.token, 'banana')).toEqual(['bring the banana bread']); // cached now

    await gqlOk(b().url, EditMessageDocument, { messageId: m.id, text: 'bring the cherry pie' }, owner.token);
    expect(await texts(other.token, 'banana')).toEqual([]);
    expect(await texts(other.token, 'cherry')).toEqual(['bring the cherry pie']);
    expect(await texts(other.token, 'bread')).toEqual([]);

    await gqlOk(b().url, DeleteMessageDocument, { messageId: m.id }, owner.token);
    expect(await texts(other.token, 'cherry')).toEqual([]);
    expect(await texts(other.token, 'pie', roomId)).toEqual([]);
  });
});

describe('when membership changes', () => {
  it('should search only the rooms the viewer is a member of now', async () => {
    const owner = await user('members-owner');
    const guest = await user('members-guest');
    const roomId = await createRoomAs(a().url, owner.token, [], { label: 'members' });
    await send(owner.token, roomId, 'the secret plan');
    expect(await texts(guest.token, 'secret')).toEqual([]);
    expectError(await gql(a().url, SearchMessagesDocument, { query: 'secret', roomId }, { token: guest.token }), 'FORBIDDEN');

    await gqlOk(a().url, AddMembersDocument, { roomId, userIds: [guest.id] }, owner.token);
    expect(await texts(guest.token, 'secret')).toEqual(['the secret plan']);
    expect(await texts(guest.token, 'secret', roomId)).toEqual(['the secret plan']);

    // Leaving: the cached page of a moment ago is not served (the viewer's room set changed).
    await gqlOk(b().url, LeaveRoomDocument, { roomId }, guest.token);
    expect(await texts(guest.token, 'secret')).toEqual([]);
    expectError(await gql(a().url, SearchMessagesDocument, { query: 'secret', roomId }, { token: guest.token }), 'FORBIDDEN');

    await gqlOk(a().url, AddMembersDocument, { roomId, userIds: [guest.id] }, owner.token);
    expect(await texts(guest.token, 'secret')).toEqual(['the secret plan']);
    await gqlOk(b().url, RemoveMemberDocument, { roomId, userId: guest.id }, owner.token);
    expect(await texts(guest.token, 'secret')).toEqual([]);
  });

  it('should answer NOT_FOUND for a room that does not exist', async () => {
    const someone = await user('nowhere');
    expectError(await gql(a().url, SearchMessagesDocument, { query: 'x', roomId: 'no-such-room' }, { token: someone.token }), 'NOT_FOUND');
  });
});

describe('when a search is repeated', () => {
  it('should answer from the cache in one round trip until one of the rooms changes', async () => {
    const owner = await user('cache');
    const rooms = await Promise.all([1, 2, 3].map(() => createRoomAs(a().url, owner.token, [], { label: 'cache' })));
    for (const roomId of rooms) await send(owner.token, roomId, `cached words in ${roomId}`);

    const miss = await traced(owner.token, { query: 'cached words' });
    const hit = await traced(owner.token, { query: 'cached words' });
    expect(miss.page.edges).toHaveLength(3);
    expect(hit.page).toEqual(miss.page);
    expect(miss.redis.cache).toEqual({ hits: 0, misses: 1 });
    expect(hit.redis.cache).toEqual({ hits: 1, misses: 0 });
    expect(hit.redis.roundTrips).toBe(1);
    console.log(`search of 3 rooms: miss ${JSON.stringify(miss.redis)}, hit ${JSON.stringify(hit.redis)}`);

    // A message in any one of the rooms is a miss, and is found.
    await send(owner.token, rooms[1] as string, 'more cached words', b());
    const after = await traced(owner.token, { query: 'cached words' });
    expect(after.redis.cache).toEqual({ hits: 0, misses: 1 });
    expect(after.page.edges.map((e) => e.node.text)[0]).toBe('more cached words');
  });

  it('should cost the same round trips whatever the number of rooms and the page size', async () => {
    const owner = await user('search-budget');
    const rooms: string[] = [];
    for (let i = 0; i < 30; i++) rooms.push(await createRoomAs(a().url, owner.token, [], { label: 'search-budget' }));
    for (let i = 0; i < 120; i++) await send(owner.token, rooms[i % 30] as string, `budget words ${i}`);
    const few = await traced(owner.token, { query: 'budget words', roomId: rooms[0] as string, first: 5 });
    const many = await traced(owner.token, { query: 'budget words', first: 100 });
    const small = await traced(owner.token, { query: 'budget wor', first: 20 });
    expect(few.page.edges).toHaveLength(4);
    expect(many.page.edges).toHaveLength(100);
    expect(small.page.edges).toHaveLength(20);
    console.log(
      `search pages (misses): 1 room/5 ${JSON.stringify(few.redis)}, 30 rooms/100 ${JSON.stringify(many.redis)}, 30 rooms/20 ${JSON.stringify(small.redis)}`,
    );
    // The cache read, one script per room in one pipeline, the messages (across rooms), the cache write.
    expect(many.redis.roundTrips).toBeLessThanOrEqual(4);
    expect(small.redis.roundTrips).toBe(many.redis.roundTrips);
    expect(few.redis.roundTrips).toBeLessThanOrEqual(many.redis.roundTrips);

    // Senders cost no round trip per message: here they are all the viewer, whose name the request
    // knows from their token, so none at all (other senders: one pipeline per page, see budgets.test.ts).
    const withSenders = await gqlTraced(a().url, SearchWithSendersDocument, { query: 'budget words', first: 50 }, owner.token);
    expect(withSenders.data.searchMessages.edges[0]?.node.sender.name).toBe('search-budget');
    expect(withSenders.redis.roundTrips).toBe(many.redis.roundTrips);
  });
});

describe('when the query is not acceptable', () => {
  it('should refuse it with BAD_USER_INPUT naming the argument', async () => {
    const someone = await user('limits');
    const refuse = async (vars: SearchMessagesQueryVariables, field: string) =>
      expectError(await gql(a().url, SearchMessagesDocument, vars, { token: someone.token }), 'BAD_USER_INPUT', field);
    await refuse({ query: '   ' }, 'query');
    await refuse({ query: '?! …' }, 'query');
    await refuse({ query: 'x'.repeat(201) }, 'query');
    await refuse({ query: 'one two three four five six seven eight nine' }, 'query');
    await refuse({ query: 'ok', first: 101 }, 'first');
    await refuse({ query: 'ok', after: 'not-a-cursor' }, 'after');
  });
});

describe('when retention trims old messages', () => {
  it('should never find a trimmed message, and drop it from the index', async () => {
    const prefix = uniquePrefix('search-retention');
    const server = await startInstance({ REDIS_KEY_PREFIX: prefix, HISTORY_RETENTION_MESSAGES: '5' });
    const redis = new Redis(sharedRedisUrl(), { keyPrefix: prefix });
    try {
      const owner = await user('retention');
      const roomId = await createRoomAs(server.url, owner.token, [], { label: 'retention' });
      for (let i = 1; i <= 8; i++) await send(owner.token, roomId, `kept ${i}`, server);
      expect(await texts(owner.token, 'kept', roomId, server)).toEqual(['kept 8', 'kept 7', 'kept 6', 'kept 5', 'kept 4']);
      // Each send un-indexed the message it trimmed: the index holds the five kept ones.
      expect(await redis.hlen(searchKeys.docs(roomId))).toBe(5);
      expect(await redis.zcard(`${searchKeys.postingPrefix(roomId)}kept`)).toBe(5);
      expect(await redis.zscore(searchKeys.dictionary(roomId), '1')).toBeNull();
      expect(await redis.zscore(searchKeys.dictionary(roomId), '8')).not.toBeNull();
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });
});

describe('when searches exceed their rate limit', () => {
  it('should refuse them with RATE_LIMITED', async () => {
    const server = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('search-limit'), RATE_LIMITS: 'searchMessages=2/1m' });
    try {
      const someone = await user('limited');
      for (let i = 0; i < 2; i++) expect((await gql(server.url, SearchMessagesDocument, { query: 'hi' }, { token: someone.token })).errors).toBeUndefined();
      const refused = await gql(server.url, SearchMessagesDocument, { query: 'hi' }, { token: someone.token });
      expectError(refused, 'RATE_LIMITED');
      expect(refused.status).toBe(429);
    } finally {
      await server.stop();
    }
  });
});
