import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScriptRunner } from '../../src/infra/scripts.js';
import { messageKeys } from '../../src/messages/messages.keys.js';
import type { MessageModel } from '../../src/messages/messages.models.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { positionMember, searchKeys } from '../../src/search/search.keys.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The search scripts called directly: indexMessage (index, re-index, un-index, retention) and
 * searchRoom (statuses, AND and prefix, deleted and trimmed messages, the work budget and its
 * frontier, messages of one millisecond, prefixes of many terms).
 */

const prefix = uniquePrefix('search-lua');
let redis: Redis;
let indexMessage: ScriptRunner;
let searchRoom: ScriptRunner;
const T0 = 1_800_000_000_000;
const ALL = 1e13;

beforeAll(async () => {
  const c = await luaConnection(prefix);
  redis = c.redis;
  indexMessage = c.scripts.get('indexMessage');
  searchRoom = c.scripts.get('searchRoom');
});
afterAll(async () => {
  await deletePrefixed(prefix);
  redis?.disconnect();
});

const indexKeys = (roomId: string) => [
  searchKeys.dictionary(roomId),
  searchKeys.postingPrefix(roomId),
  searchKeys.all(roomId),
  searchKeys.docs(roomId),
];

/** A room with `viewer` as member. */
async function seedRoom(viewer = 'v') {
  const roomId = randomBytes(6).toString('hex');
  await redis.hset(roomKeys.room(roomId), { id: roomId, seq: 0 });
  await redis.zadd(roomKeys.members(roomId), 0, viewer);
  return roomId;
}

/** Stores message `seq` with `terms` (its text is the terms) and indexes it at `createdAt`. */
async function put(roomId: string, seq: number, terms: string[], createdAt = T0 + seq, deleted = false) {
  const m: MessageModel = {
    roomId,
    epoch: 'E',
    seq,
    senderId: 'v',
    text: deleted ? '' : terms.join(' '),
    clientId: null,
    createdAt,
    editedAt: null,
    deleted,
  };
  await redis.hset(messageKeys.messages(roomId), String(seq), JSON.stringify(m));
  await indexMessage(indexKeys(roomId), [positionMember(seq), createdAt, '', ...terms]);
}

interface Found {
  status: number;
  exhausted: number;
  frontier: [string, number];
  seqs: number[];
}

/** Calls searchRoom (positions only) and parses its reply. */
async function find(
  roomId: string,
  query: { prefix: string; exact?: string[] },
  opts: { limit?: number; budget?: number; expansion?: number; bound?: [string | number, number]; viewer?: string } = {},
): Promise<Found> {
  const [score, seq] = opts.bound ?? ['+inf', 0];
  const reply = (await searchRoom(
    [
      roomKeys.room(roomId),
      roomKeys.members(roomId),
      messageKeys.messages(roomId),
      ...indexKeys(roomId),
    ],
    [opts.viewer ?? 'v', opts.limit ?? 100, opts.budget ?? 1000, opts.expansion ?? 50, score, seq, 0, query.prefix, ...(query.exact ?? [])],
  )) as [number, number, string, string, ...string[]];
  const [status, exhausted, frontierScore, frontierMember, ...rest] = reply;
  const seqs: number[] = [];
  for (let i = 0; i < rest.length; i += 2) seqs.push(Number(rest[i + 1]));
  return { status, exhausted, frontier: [frontierScore, Number(frontierMember)], seqs };
}

describe('indexMessage', () => {
  it('should index terms, re-index an edit under its new terms only, and un-index a delete completely', async () => {
    const roomId = await seedRoom();
    await put(roomId, 1, ['apple', 'pie']);
    expect(await redis.zrange(searchKeys.dictionary(roomId), 0, -1)).toEqual(['apple', 'pie']);
    await indexMessage(indexKeys(roomId), [positionMember(1), T0, '', 'cherry', 'pie']);
    expect(await redis.zrange(searchKeys.dictionary(roomId), 0, -1)).toEqual(['cherry', 'pie']);
    expect(await redis.exists(`${searchKeys.postingPrefix(roomId)}apple`)).toBe(0);
    expect(await redis.hget(searchKeys.docs(roomId), positionMember(1))).toBe('cherry pie');
    await indexMessage(indexKeys(roomId), [positionMember(1), T0, '']);
    expect(await redis.zcard(searchKeys.dictionary(roomId))).toBe(0);
    expect(await redis.exists(`${searchKeys.postingPrefix(roomId)}pie`, searchKeys.docs(roomId), searchKeys.all(roomId))).toBe(0);
  });

  it('should keep a term in the dictionary while another message holds it', async () => {
    const roomId = await seedRoom();
    await put(roomId, 1, ['shared', 'one']);
    await put(roomId, 2, ['shared', 'two']);
    await indexMessage(indexKeys(roomId), [positionMember(1), T0, '']);
    expect(await redis.zrange(searchKeys.dictionary(roomId), 0, -1)).toEqual(['shared', 'two']);
  });

  it('should un-index the message retention trimmed', async () => {
    const roomId = await seedRoom();
    await put(roomId, 1, ['old']);
    await indexMessage(indexKeys(roomId), [positionMember(2), T0 + 2, positionMember(1), 'new']);
    expect(await redis.zrange(searchKeys.dictionary(roomId), 0, -1)).toEqual(['new']);
    expect(await redis.hkeys(searchKeys.docs(roomId))).toEqual([positionMember(2)]);
  });
});

describe('searchRoom', () => {
  it('should answer ROOM_NOT_FOUND and NOT_MEMBER', async () => {
    const roomId = await seedRoom();
    expect((await find('no-such-room', { prefix: 'x' })).status).toBe(1);
    expect((await find(roomId, { prefix: 'x' }, { viewer: 'stranger' })).status).toBe(2);
  });

  it('should find messages holding every exact word and a word with the prefix, newest first', async () => {
    const roomId = await seedRoom();
    await put(roomId, 1, ['red', 'apple']);
    await put(roomId, 2, ['green', 'apple']);
    await put(roomId, 3, ['red', 'apricot']);
    await put(roomId, 4, ['red', 'car']);
    expect((await find(roomId, { prefix: 'ap' })).seqs).toEqual([3, 2, 1]);
    expect((await find(roomId, { exact: ['red'], prefix: 'ap' })).seqs).toEqual([3, 1]);
    expect((await find(roomId, { exact: ['red', 'car'], prefix: 'red' })).seqs).toEqual([4]);
    expect((await find(roomId, { exact: ['blue'], prefix: 'red' })).seqs).toEqual([]);
    expect((await find(roomId, { prefix: 'z' })).exhausted).toBe(1);
  });

  it('should skip deleted and trimmed messages that are still indexed', async () => {
    const roomId = await seedRoom();
    await put(roomId, 1, ['ghost']);
    await put(roomId, 2, ['ghost'], T0 + 2, true);
    await put(roomId, 3, ['ghost']);
    await redis.hdel(messageKeys.messages(roomId), '1');
    expect((await find(roomId, { prefix: 'ghost' })).seqs).toEqual([3]);
  });

  it('should stop at its budget with a frontier from which the search goes on without loss or repeat', async () => {
    const roomId = await seedRoom();
    // Odd messages say alpha, even ones beta, and every tenth both: the lists are large, their
    // intersection small, so most candidates examined are not matches.
    for (let seq = 1; seq <= 60; seq++) await put(roomId, seq, seq % 2 === 1 ? ['alpha'] : seq % 10 === 0 ? ['alpha', 'beta'] : ['beta']);
    const found: number[] = [];
    let bound: [string | number, number] = ['+inf', 0];
    let calls = 0;
    for (;;) {
      calls++;
      const r = await find(roomId, { exact: ['alpha'], prefix: 'beta' }, { budget: 7, limit: 100, bound });
      found.push(...r.seqs);
      if (r.exhausted === 1) break;
      bound = r.frontier;
      expect(calls).toBeLessThan(20);
    }
    expect(found).toEqual([60, 50, 40, 30, 20, 10]);
    // 30 candidates (the even messages, the smaller list), 7 at most per call.
    expect(calls).toBe(5);
  });

  it('should order and page messages of one millisecond by seq', async () => {
    const roomId = await seedRoom();
    for (let seq = 1; seq <= 12; seq++) await put(roomId, seq, ['tick'], T0);
    const seen: number[] = [];
    let bound: [string | number, number] = ['+inf', 0];
    for (let page = 0; page < 10; page++) {
      const r = await find(roomId, { prefix: 'tick' }, { limit: 5, bound });
      seen.push(...r.seqs);
      if (r.exhausted === 1) break;
      bound = r.frontier;
    }
    expect(seen).toEqual([12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
    // From a position inside that millisecond: everything below it, or all of it.
    expect((await find(roomId, { prefix: 'tick' }, { bound: [T0, 4] })).seqs).toEqual([3, 2, 1]);
    expect((await find(roomId, { prefix: 'tick' }, { bound: [T0, ALL] })).seqs).toHaveLength(12);
    expect((await find(roomId, { prefix: 'tick' }, { bound: [T0, 0] })).seqs).toEqual([]);
  });

  it('should find each message once through a prefix of several terms, and scan when the prefix has too many', async () => {
    const roomId = await seedRoom();
    await put(roomId, 1, ['abacus', 'abbey']);
    await put(roomId, 2, ['abc']);
    await put(roomId, 3, ['abd', 'other']);
    await put(roomId, 4, ['zebra']);
    await put(roomId, 5, ['abe']);
    expect((await find(roomId, { prefix: 'ab' })).seqs).toEqual([5, 3, 2, 1]);
    expect((await find(roomId, { prefix: 'ab' }, { expansion: 2 })).seqs).toEqual([5, 3, 2, 1]);
    expect((await find(roomId, { exact: ['other'], prefix: 'ab' }, { expansion: 2 })).seqs).toEqual([3]);
  });
});
