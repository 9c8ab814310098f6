import { randomBytes } from 'node:crypto';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodePollId, encodePollId } from '../../src/polls/poll-id.js';
import { pollKeys } from '../../src/polls/polls.keys.js';
import {
  AddMembersDocument,
  ClosePollDocument,
  CreatePollDocument,
  OnPollCountsDocument,
  OnPollUpdatedDocument,
  OnRoomPollEventsDocument,
  PollDocument,
  RemoveMemberDocument,
  RoomPollsDocument,
  SendMessageDocument,
  VoteCountsDocument,
  VoteDocument,
  type CreatePollInput,
  type OnPollUpdatedSubscription,
  type OnRoomPollEventsSubscription,
  type PollFieldsFragment,
} from '../generated/graphql.js';
import {
  clientPool,
  completesWithin,
  createRoomAs,
  expectError,
  gql,
  gqlOk,
  operationErrors,
  range,
  subscribe,
  waitFor,
  type Subscription,
} from '../helpers/clients.js';
import { deletePrefixed } from '../helpers/lua.js';
import {
  openStreams,
  sharedRedisUrl,
  startCluster,
  testUsers,
  uniquePrefix,
  waitForStreamsReleased,
  type TestInstance,
} from '../helpers/server.js';

/**
 * Polls end to end on two instances sharing one Redis: creation and its checks, votes (changing,
 * retracting, single vs multiple choice), 200 concurrent voters over both instances against a
 * recount of the stored votes, closing by hand and on schedule (once), anonymity in every field
 * and event, coalesced live results, per-viewer `viewerVote` in shared subscription executions,
 * pagination of Room.polls, and what non-members and removed members get.
 */

const TICK_MS = 100;
const prefix = uniquePrefix('polls');
const { newUser, token } = testUsers();
const clients = clientPool();
let a: TestInstance;
let b: TestInstance;
/** This file's keys, read directly to recount the stored votes. */
let redis: Redis;

beforeAll(async () => {
  [a, b] = (await startCluster(2, { REDIS_KEY_PREFIX: prefix, PRESENCE_TICK_MS: String(TICK_MS) })) as [TestInstance, TestInstance];
  redis = new Redis(sharedRedisUrl(), { keyPrefix: prefix });
});

afterEach(async () => {
  await clients.disposeAll();
  await waitForStreamsReleased([a, b]);
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  redis?.disconnect();
  await deletePrefixed(prefix);
});

type Poll = PollFieldsFragment;

const createRoom = (owner: string, members: string[], visibility: 'PUBLIC' | 'PRIVATE' = 'PRIVATE') =>
  createRoomAs(a.url, token(owner), members, { label: 'polls', visibility });

const pollInput = (roomId: string, extra: Partial<CreatePollInput> = {}): CreatePollInput => ({
  roomId,
  question: 'Where do we eat?',
  options: ['Pizza', 'Sushi', 'Tacos'],
  ...extra,
});

const createPoll = async (inst: TestInstance, userId: string, input: CreatePollInput): Promise<Poll> =>
  (await gqlOk(inst.url, CreatePollDocument, { input }, token(userId))).createPoll;

const vote = async (inst: TestInstance, userId: string, pollId: string, optionIds: string[]): Promise<Poll> =>
  (await gqlOk(inst.url, VoteDocument, { pollId, optionIds }, token(userId))).vote;

const poll = async (inst: TestInstance, userId: string, id: string): Promise<Poll | null> =>
  (await gqlOk(inst.url, PollDocument, { id }, token(userId))).poll;

const optionIds = (p: Poll) => p.options.map((o) => o.id);

/** Fresh users (the first owns the room, all are members) and a poll of three options the owner created. */
async function roomWithPoll(labels: string[], extra: Partial<CreatePollInput> = {}) {
  const users: string[] = [];
  for (const label of labels) users.push(await newUser(label));
  const roomId = await createRoom(users[0] as string, users.slice(1));
  const p = await createPoll(a, users[0] as string, pollInput(roomId, extra));
  return { users, roomId, p, options: optionIds(p) as [string, string, string] };
}
const counts = (p: { options: { votes: number }[] }) => p.options.map((o) => o.votes);
const voterIds = (p: Poll) => p.options.map((o) => o.voters.map((v) => v.id).sort());

/** Opens a subscription of `userId` on `inst`, resolved once its stream is live server-side. */
async function live<T, V>(inst: TestInstance, userId: string, doc: TypedDocumentNode<T, V>, variables: V) {
  const before = openStreams(inst);
  const sub = subscribe<T, V>(clients.open(inst.wsUrl, token(userId)), doc, variables);
  await waitFor(() => openStreams(inst) > before || sub.done(), 5000, `${userId}'s subscription to be live`);
  expect(sub.done(), JSON.stringify(sub.results)).toBe(false);
  return sub;
}

const dataOf = <T>(sub: Subscription<T>): T[] => {
  const failed = sub.results.find((r) => r.errors?.length);
  if (failed) throw new Error(`subscription error: ${JSON.stringify(failed.errors)}`);
  return sub.results.map((r) => r.data as T);
};
const pollEvents = (sub: Subscription<OnRoomPollEventsSubscription>, pollId: string): Poll[] =>
  dataOf(sub).flatMap((d) => (d.roomEvents.__typename === 'PollUpdated' && d.roomEvents.poll.id === pollId ? [d.roomEvents.poll] : []));
const updates = (sub: Subscription<OnPollUpdatedSubscription>): Poll[] => dataOf(sub).map((d) => d.pollUpdated);

/**
 * Sends a message through each instance and waits until `sub` got both: whatever those instances
 * published before (on the same Redis connection) has reached it by then.
 */
async function sentinels(sub: Subscription<OnRoomPollEventsSubscription>, roomId: string, userId: string) {
  const ids: string[] = [];
  for (const inst of [a, b]) {
    const { sendMessage } = await gqlOk(inst.url, SendMessageDocument, { input: { roomId, text: 'sentinel' } }, token(userId));
    ids.push(sendMessage.id);
  }
  await waitFor(
    () => ids.every((id) => dataOf(sub).some((d) => d.roomEvents.__typename === 'MessageAdded' && d.roomEvents.message.id === id)),
    5000,
    'the sentinel messages',
  );
}

/** The stored votes of a poll, userId -> option indexes, read from Redis. */
async function storedVotes(pollId: string): Promise<Map<string, number[]>> {
  const { roomId, localId } = decodePollId('pollId', pollId);
  const raw = await redis.hgetall(pollKeys.votes(roomId, localId));
  return new Map(Object.entries(raw).map(([user, v]) => [user, v.split(',').map(Number)]));
}

/** Counts per option and voters, recounted from the stored votes. */
function recount(votes: Map<string, number[]>, options: number) {
  const perOption = range(0, options - 1).map((i) => [...votes.values()].filter((v) => v.includes(i)).length);
  return { counts: perOption, totalVoters: votes.size };
}

describe('when a member creates a poll', () => {
  it('should answer it open with zero votes and announce it to the room on the other instance', async () => {
    const [owner, bob] = [await newUser('owner'), await newUser('bob')];
    const roomId = await createRoom(owner, [bob]);
    const bobOnB = await live(b, bob, OnRoomPollEventsDocument, { roomId });
    const closesAt = new Date(Date.now() + 3_600_000).toISOString();
    const created = await createPoll(a, bob, pollInput(roomId, { question: '  Where do we eat?  ', options: [' Pizza', 'Sushi '], closesAt }));
    expect(created).toMatchObject({
      roomId,
      question: 'Where do we eat?',
      multipleChoice: false,
      anonymous: false,
      closed: false,
      closesAt,
      closedAt: null,
      createdBy: { id: bob },
      totalVoters: 0,
      viewerVote: [],
    });
    expect(created.options.map((o) => [o.text, o.votes, o.voters])).toEqual([
      ['Pizza', 0, []],
      ['Sushi', 0, []],
    ]);
    // Option ids are unique, also across polls (client caches normalise by id).
    const other = await createPoll(b, owner, pollInput(roomId, { options: ['Pizza', 'Sushi'] }));
    expect(new Set([...optionIds(created), ...optionIds(other)]).size).toBe(4);
    await waitFor(() => pollEvents(bobOnB, created.id).length === 1, 5000, 'the new poll on roomEvents');
    expect(pollEvents(bobOnB, created.id)[0]).toEqual(created);
    expect(await poll(b, owner, created.id)).toEqual({ ...created, viewerVote: [] });
  });

  it('should refuse bad input with BAD_USER_INPUT naming the field, and store nothing', async () => {
    const owner = await newUser('owner');
    const roomId = await createRoom(owner, []);
    const bad = async (extra: Partial<CreatePollInput>, field: string) =>
      expectError(await gql(a.url, CreatePollDocument, { input: pollInput(roomId, extra) }, { token: token(owner) }), 'BAD_USER_INPUT', field);
    await bad({ options: ['Only one'] }, 'options');
    await bad({ options: range(1, 11).map((i) => `o${i}`) }, 'options');
    await bad({ options: ['Yes', ' yes '] }, 'options');
    await bad({ options: ['Yes', '   '] }, 'options');
    await bad({ options: ['Yes', 'x'.repeat(101)] }, 'options');
    await bad({ question: ' ' }, 'question');
    await bad({ question: 'q'.repeat(301) }, 'question');
    await bad({ closesAt: new Date(Date.now() - 1000).toISOString() }, 'closesAt');
    // The limits themselves are fine.
    const longest = range(0, 9).map((i) => String(i).repeat(100));
    const edge = await createPoll(a, owner, pollInput(roomId, { question: 'q'.repeat(300), options: longest }));
    expect(edge.options).toHaveLength(10);
    const { room } = await gqlOk(a.url, RoomPollsDocument, { id: roomId }, token(owner));
    expect(room?.polls.edges.map((e) => e.node.id)).toEqual([edge.id]);
  });
});

describe('when members vote', () => {
  it('should replace each voter’s vote, show every viewer their own, and retract with []', async () => {
    const { users, p, options } = await roomWithPoll(['owner', 'bob', 'carol']);
    const [owner, bob, carol] = users as [string, string, string];
    const [pizza, sushi, tacos] = options;

    const afterBob = await vote(a, bob, p.id, [pizza]);
    expect(afterBob).toMatchObject({ totalVoters: 1, viewerVote: [pizza] });
    expect(counts(afterBob)).toEqual([1, 0, 0]);
    expect(voterIds(afterBob)).toEqual([[bob], [], []]);
    const afterCarol = await vote(b, carol, p.id, [sushi]);
    expect(afterCarol).toMatchObject({ totalVoters: 2, viewerVote: [sushi] });
    // Bob changes his mind: his pizza vote goes, the voter count stays.
    const changed = await vote(b, bob, p.id, [tacos]);
    expect(changed).toMatchObject({ totalVoters: 2, viewerVote: [tacos] });
    expect(counts(changed)).toEqual([0, 1, 1]);
    expect(voterIds(changed)).toEqual([[], [carol], [bob]]);
    // Each viewer sees their own vote, on either instance.
    expect((await poll(a, carol, p.id))?.viewerVote).toEqual([sushi]);
    expect((await poll(b, bob, p.id))?.viewerVote).toEqual([tacos]);
    expect((await poll(a, owner, p.id))?.viewerVote).toEqual([]);
    // Retracting.
    const retracted = await vote(a, bob, p.id, []);
    expect(retracted).toMatchObject({ totalVoters: 1, viewerVote: [] });
    expect(counts(retracted)).toEqual([0, 1, 0]);
    expect(voterIds(retracted)).toEqual([[], [carol], []]);
    expect(await storedVotes(p.id)).toEqual(new Map([[carol, [1]]]));
  });

  it('should refuse two options in a single-choice poll, and accept several in a multiple-choice one', async () => {
    const [owner, bob] = [await newUser('owner'), await newUser('bob')];
    const roomId = await createRoom(owner, [bob]);
    const single = await createPoll(a, owner, pollInput(roomId));
    const [pizza, sushi, tacos] = optionIds(single) as [string, string, string];
    await vote(a, bob, single.id, [pizza]);
    const refused = async (inst: TestInstance, pollId: string, options: string[]) =>
      expectError(await gql(inst.url, VoteDocument, { pollId, optionIds: options }, { token: token(bob) }), 'BAD_USER_INPUT', 'optionIds');
    await refused(b, single.id, [sushi, tacos]);
    // The refused vote changed nothing: the previous one stands.
    const after = await poll(a, bob, single.id);
    expect(after?.viewerVote).toEqual([pizza]);
    expect(counts(after as Poll)).toEqual([1, 0, 0]);

    const multi = await createPoll(b, owner, pollInput(roomId, { multipleChoice: true }));
    const [m0, m1, m2] = optionIds(multi) as [string, string, string];
    const voted = await vote(a, bob, multi.id, [m2, m0]);
    expect(voted).toMatchObject({ multipleChoice: true, totalVoters: 1, viewerVote: [m0, m2] });
    expect(counts(voted)).toEqual([1, 0, 1]);
    // An option twice, or an option of another poll, is refused.
    await refused(a, multi.id, [m1, m1]);
    await refused(a, multi.id, [m1, pizza]);
    await refused(b, multi.id, ['nonsense']);
    expect(counts((await poll(b, owner, multi.id)) as Poll)).toEqual([1, 0, 1]);
  });

  it('should answer NOT_FOUND for a poll that does not exist and BAD_USER_INPUT for an id that is not a poll id', async () => {
    const owner = await newUser('owner');
    const roomId = await createRoom(owner, []);
    const missing = encodePollId({ roomId, localId: randomBytes(6).toString('hex') });
    expect(await poll(a, owner, missing)).toBeNull();
    expectError(await gql(a.url, VoteDocument, { pollId: missing, optionIds: [] }, { token: token(owner) }), 'NOT_FOUND');
    expectError(await gql(b.url, ClosePollDocument, { pollId: missing }, { token: token(owner) }), 'NOT_FOUND');
    expectError(await gql(a.url, PollDocument, { id: 'not-a-poll' }, { token: token(owner) }), 'BAD_USER_INPUT', 'id');
    expectError(await gql(a.url, VoteDocument, { pollId: 'not-a-poll', optionIds: [] }, { token: token(owner) }), 'BAD_USER_INPUT', 'pollId');
  });
});

describe('when 200 members vote at once through two instances, many changing their vote', () => {
  it('should end with counts and totalVoters equal to a recount of the stored votes', async () => {
    const owner = await newUser('owner');
    const voters = await Promise.all(range(1, 200).map((i) => newUser(`v${String(i).padStart(3, '0')}`)));
    const roomId = await createRoom(owner, voters.slice(0, 100));
    await gqlOk(a.url, AddMembersDocument, { roomId, userIds: voters.slice(100) }, token(owner));
    const p = await createPoll(a, owner, pollInput(roomId, { options: ['A', 'B', 'C', 'D'] }));
    const ids = optionIds(p);
    const via = (i: number) => (i % 2 === 0 ? a : b);
    const cast = (i: number, options: string[], inst = via(i)) =>
      gqlOk(inst.url, VoteCountsDocument, { pollId: p.id, optionIds: options }, token(voters[i] as string));

    // Round 1: everyone votes at once.
    await Promise.all(voters.map((_, i) => cast(i, [ids[i % 4] as string])));
    const first = await poll(b, owner, p.id);
    expect(first?.totalVoters).toBe(200);
    expect(counts(first as Poll)).toEqual([50, 50, 50, 50]);

    // Round 2, all at once: 80 change their vote, 30 retract, 40 send two different votes at the
    // same time through both instances (whichever runs last wins), 50 vote again the same.
    const expected = new Map<string, string[]>();
    const round2 = voters.flatMap((userId, i) => {
      if (i < 80) {
        expected.set(userId, [ids[(i + 1) % 4] as string]);
        return [cast(i, [ids[(i + 1) % 4] as string])];
      }
      if (i < 110) return [cast(i, [])];
      if (i < 150) return [cast(i, [ids[(i + 2) % 4] as string], a), cast(i, [ids[(i + 3) % 4] as string], b)];
      expected.set(userId, [ids[i % 4] as string]);
      return [cast(i, [ids[i % 4] as string])];
    });
    await Promise.all(round2);

    const stored = await storedVotes(p.id);
    const truth = recount(stored, 4);
    for (const inst of [a, b]) {
      const now = (await poll(inst, owner, p.id)) as Poll;
      expect({ counts: counts(now), totalVoters: now.totalVoters }).toEqual(truth);
    }
    // The deterministic voters hold exactly what they sent; the racing ones one of their two.
    for (const [userId, options] of expected) expect(stored.get(userId)?.map((i) => ids[i])).toEqual(options);
    for (const i of range(110, 149)) {
      const got = stored.get(voters[i] as string);
      expect([ids[(i + 2) % 4], ids[(i + 3) % 4]]).toContain(got && ids[got[0] as number]);
    }
    for (const i of range(80, 109)) expect(stored.has(voters[i] as string)).toBe(false);
    expect(truth.totalVoters).toBe(80 + 40 + 50);
    // Each voter sees their own stored vote.
    for (const i of [0, 85, 120, 199]) {
      const userId = voters[i] as string;
      expect((await poll(via(i + 1), userId, p.id))?.viewerVote).toEqual((stored.get(userId) ?? []).map((o) => ids[o]));
    }
  });
});

describe('when a poll is closed by hand', () => {
  it('should let only its creator or the room owner close it, announce it once, and refuse later votes with CONFLICT', async () => {
    const [owner, bob, carol] = [await newUser('owner'), await newUser('bob'), await newUser('carol')];
    const roomId = await createRoom(owner, [bob, carol]);
    const byBob = await createPoll(a, bob, pollInput(roomId));
    const [pizza, sushi] = optionIds(byBob) as [string, string];
    await vote(a, carol, byBob.id, [pizza]);
    const carolOnB = await live(b, carol, OnRoomPollEventsDocument, { roomId });
    const watch = await live(a, carol, OnPollUpdatedDocument, { pollId: byBob.id });

    expectError(await gql(b.url, ClosePollDocument, { pollId: byBob.id }, { token: token(carol) }), 'FORBIDDEN');
    const closed = (await gqlOk(b.url, ClosePollDocument, { pollId: byBob.id }, token(bob))).closePoll;
    expect(closed).toMatchObject({ closed: true, totalVoters: 1, viewerVote: [] });
    expect(closed.closedAt).not.toBeNull();
    // Idempotent: closing again answers the same poll and announces nothing.
    const again = (await gqlOk(a.url, ClosePollDocument, { pollId: byBob.id }, token(owner))).closePoll;
    expect(again).toMatchObject({ closed: true, version: closed.version });
    expectError(await gql(a.url, VoteDocument, { pollId: byBob.id, optionIds: [sushi] }, { token: token(carol) }), 'CONFLICT');
    expectError(await gql(b.url, VoteDocument, { pollId: byBob.id, optionIds: [] }, { token: token(carol) }), 'CONFLICT');
    expect((await poll(a, carol, byBob.id))?.viewerVote).toEqual([pizza]);

    await sentinels(carolOnB, roomId, owner);
    const seen = pollEvents(carolOnB, byBob.id);
    expect(seen.map((e) => e.closed)).toEqual([true]);
    expect(seen[0]).toEqual({ ...closed, viewerVote: [pizza] });
    await waitFor(() => updates(watch).length === 1, 5000, 'the close on pollUpdated');
    expect(updates(watch)).toEqual([{ ...closed, viewerVote: [pizza] }]);

    // The room owner may close a poll they did not create.
    const other = await createPoll(b, carol, pollInput(roomId));
    expect((await gqlOk(a.url, ClosePollDocument, { pollId: other.id }, token(owner))).closePoll.closed).toBe(true);
  });
});

describe('when closesAt passes', () => {
  it('should refuse votes from closesAt on and close the poll once, announced to subscribers on both instances', async () => {
    const [owner, bob] = [await newUser('owner'), await newUser('bob')];
    const roomId = await createRoom(owner, [bob]);
    const closesAt = Date.now() + 1500;
    const p = await createPoll(a, owner, pollInput(roomId, { closesAt: new Date(closesAt).toISOString() }));
    const [pizza] = optionIds(p) as [string];
    const onA = await live(a, bob, OnRoomPollEventsDocument, { roomId });
    const onB = await live(b, owner, OnRoomPollEventsDocument, { roomId });
    const watchA = await live(a, owner, OnPollUpdatedDocument, { pollId: p.id });
    const watchB = await live(b, bob, OnPollUpdatedDocument, { pollId: p.id });
    await vote(b, bob, p.id, [pizza]);

    await waitFor(() => updates(watchA).some((u) => u.closed) && updates(watchB).some((u) => u.closed), 5000, 'the scheduled close');
    expect(Date.now()).toBeGreaterThanOrEqual(closesAt);
    expectError(await gql(a.url, VoteDocument, { pollId: p.id, optionIds: [] }, { token: token(bob) }), 'CONFLICT');
    // A sweep that read the schedule just before the close removed the poll from it still finds
    // the poll due: put it back, and sweeps racing on both instances close nothing more…
    await redis.zadd(pollKeys.closing(), closesAt, p.id);
    expect(await Promise.all([a.app.services.polls.sweep(), b.app.services.polls.sweep(), a.app.services.polls.sweep()])).toEqual([0, 0, 0]);
    expect(await redis.zscore(pollKeys.closing(), p.id)).toBeNull();
    // …and announce nothing: the sentinels follow whatever either instance published before.
    await sentinels(onA, roomId, owner);
    await sentinels(onB, roomId, owner);
    for (const sub of [onA, onB]) {
      const closes = pollEvents(sub, p.id).filter((e) => e.closed);
      expect(closes).toHaveLength(1);
      expect(closes[0]).toMatchObject({ closed: true, closedAt: new Date(closesAt).toISOString(), totalVoters: 1 });
    }
    for (const watch of [watchA, watchB]) expect(updates(watch).filter((u) => u.closed)).toHaveLength(1);
    expect(counts((await poll(b, owner, p.id)) as Poll)).toEqual([1, 0, 0]);
  });
});

describe('when a poll is anonymous', () => {
  it('should never reveal who voted what in any field or event, while each voter sees their own vote', async () => {
    const [owner, bob, carol, dave] = [await newUser('owner'), await newUser('bob'), await newUser('carol'), await newUser('dave')];
    const roomId = await createRoom(owner, [bob, carol, dave]);
    const p = await createPoll(a, owner, pollInput(roomId, { anonymous: true, multipleChoice: true }));
    const [pizza, sushi, tacos] = optionIds(p) as [string, string, string];
    const daveEvents = await live(b, dave, OnRoomPollEventsDocument, { roomId });
    const ownerWatch = await live(a, owner, OnPollUpdatedDocument, { pollId: p.id });
    const bobWatch = await live(b, bob, OnPollUpdatedDocument, { pollId: p.id });

    const answers: unknown[] = [];
    answers.push(await vote(a, bob, p.id, [pizza, tacos]));
    answers.push(await vote(b, carol, p.id, [tacos]));
    answers.push(await vote(a, bob, p.id, [sushi]));
    const last = (await gqlOk(b.url, ClosePollDocument, { pollId: p.id }, token(owner))).closePoll;
    expect(counts(last)).toEqual([0, 1, 1]);
    expect(last.totalVoters).toBe(2);
    for (const viewer of [owner, dave]) answers.push(await poll(a, viewer, p.id));
    answers.push(await gqlOk(b.url, RoomPollsDocument, { id: roomId }, token(dave)));
    expect((await poll(b, bob, p.id))?.viewerVote).toEqual([sushi]);
    expect((await poll(a, carol, p.id))?.viewerVote).toEqual([tacos]);

    await sentinels(daveEvents, roomId, owner);
    await waitFor(() => updates(ownerWatch).some((u) => u.closed) && updates(bobWatch).some((u) => u.closed), 5000, 'the close on pollUpdated');
    // Every option of every poll anyone saw lists nobody…
    const seenPolls = [...pollEvents(daveEvents, p.id), ...updates(ownerWatch), ...(answers.slice(0, 5) as Poll[])];
    expect(seenPolls.length).toBeGreaterThan(6);
    for (const seen of seenPolls) expect(voterIds(seen)).toEqual([[], [], []]);
    // …and no voter's id appears anywhere in what others received (the creator is not anonymous).
    const othersSaw = JSON.stringify([answers.slice(3), dataOf(daveEvents), dataOf(ownerWatch)]);
    for (const voter of [bob, carol]) expect(othersSaw).not.toContain(voter);
    // Bob's own subscription shows him his own vote, and still nobody else's.
    expect(updates(bobWatch).at(-1)?.viewerVote).toEqual([sushi]);
    expect(JSON.stringify(dataOf(bobWatch))).not.toContain(carol);
  });
});

describe('when many votes arrive in a burst through both instances', () => {
  it('should coalesce PollUpdated to a few per second on both streams, the last carrying the final results', async () => {
    const owner = await newUser('owner');
    const voters = await Promise.all(range(1, 80).map((i) => newUser(`c${i}`)));
    const roomId = await createRoom(owner, voters);
    const p = await createPoll(a, owner, pollInput(roomId));
    const ids = optionIds(p);
    const events = await live(b, owner, OnRoomPollEventsDocument, { roomId });
    const watch = await live(a, owner, OnPollCountsDocument, { pollId: p.id });

    const started = Date.now();
    // 8 waves of 10 concurrent votes, then everyone's second thoughts: 160 changes in all.
    for (const wave of range(0, 15)) {
      await Promise.all(
        range(0, 9).map((j) => {
          const i = (wave % 8) * 10 + j;
          const option = ids[(i + (wave >= 8 ? 1 : 0)) % 3] as string;
          const inst = (i + wave) % 2 === 0 ? a : b;
          return gqlOk(inst.url, VoteCountsDocument, { pollId: p.id, optionIds: [option] }, token(voters[i] as string));
        }),
      );
    }
    const lastVoteAt = Date.now();
    const elapsed = lastVoteAt - started;
    const final = (await poll(a, owner, p.id)) as Poll;
    expect(counts(final)).toEqual([26, 27, 27]);

    await waitFor(() => dataOf(watch).some((d) => d.pollUpdated.version === final.version), 5000, 'the final results on pollUpdated');
    // The window (500 ms) opened last has ended everywhere: nothing more may come after this.
    await waitFor(() => Date.now() - lastVoteAt > 800, 5000, 'the coalescing window to end');
    await sentinels(events, roomId, owner);
    const fromRoom = pollEvents(events, p.id);
    const fromPoll = dataOf(watch).map((d) => d.pollUpdated);
    // Two per 500 ms window at most (the one that opens it and the one that ends it), plus one.
    const bound = 2 * Math.ceil(elapsed / 500) + 1;
    for (const [what, seen] of [
      ['roomEvents', fromRoom],
      ['pollUpdated', fromPoll],
    ] as const) {
      const detail = `${what}: ${seen.length} updates for 160 votes in ${elapsed} ms (versions ${seen.map((s) => s.version).join(',')})`;
      expect(seen.length, detail).toBeGreaterThanOrEqual(1);
      expect(seen.length, detail).toBeLessThanOrEqual(bound);
      expect(seen.length, detail).toBeLessThan(40);
      expect(seen.at(-1)?.version, detail).toBe(final.version);
      expect(counts(seen.at(-1) as Poll), detail).toEqual([26, 27, 27]);
      expect(seen.at(-1)?.totalVoters).toBe(80);
    }
    // pollUpdated never goes back in time.
    const versions = fromPoll.map((u) => u.version);
    expect([...versions].sort((x, y) => x - y)).toEqual(versions);
  });
});

describe('when two members on one instance run the same subscription', () => {
  it('should give each their own viewerVote, on pollUpdated and on roomEvents', async () => {
    const { users, roomId, p, options } = await roomWithPoll(['owner', 'bob', 'carol']);
    const [owner, bob, carol] = users as [string, string, string];
    const [pizza, sushi, tacos] = options;
    await vote(a, bob, p.id, [pizza]);
    await vote(b, carol, p.id, [sushi]);
    const watches = [
      await live(a, bob, OnPollUpdatedDocument, { pollId: p.id }),
      await live(a, carol, OnPollUpdatedDocument, { pollId: p.id }),
    ];
    const rooms = [
      await live(a, bob, OnRoomPollEventsDocument, { roomId }),
      await live(a, carol, OnRoomPollEventsDocument, { roomId }),
    ];
    await vote(b, owner, p.id, [tacos]);
    await waitFor(() => watches.every((w) => updates(w).length > 0), 5000, 'both pollUpdated subscribers');
    await waitFor(() => rooms.every((r) => pollEvents(r, p.id).length > 0), 5000, 'both roomEvents subscribers');
    expect(watches.map((w) => updates(w)[0]?.viewerVote)).toEqual([[pizza], [sushi]]);
    expect(rooms.map((r) => pollEvents(r, p.id)[0]?.viewerVote)).toEqual([[pizza], [sushi]]);
    expect(updates(watches[0] as Subscription<OnPollUpdatedSubscription>)[0]?.totalVoters).toBe(3);
  });
});

describe('when Room.polls is paged', () => {
  it('should list the polls newest first, with cursors that page on', async () => {
    const owner = await newUser('owner');
    const roomId = await createRoom(owner, []);
    const created: string[] = [];
    for (const i of range(1, 5)) created.push((await createPoll(i % 2 ? a : b, owner, pollInput(roomId, { question: `q${i}` }))).id);
    const page = async (first: number, after?: string | null) =>
      (await gqlOk(b.url, RoomPollsDocument, { id: roomId, first, after }, token(owner))).room?.polls;
    const one = await page(2);
    expect(one?.edges.map((e) => e.node.question)).toEqual(['q5', 'q4']);
    expect(one?.pageInfo).toMatchObject({ hasNextPage: true, hasPreviousPage: false });
    const two = await page(2, one?.pageInfo.endCursor);
    expect(two?.edges.map((e) => e.node.question)).toEqual(['q3', 'q2']);
    const three = await page(2, two?.pageInfo.endCursor);
    expect(three?.edges.map((e) => e.node.id)).toEqual([created[0]]);
    expect(three?.pageInfo).toMatchObject({ hasNextPage: false, hasPreviousPage: true });
    expectError(await gql(a.url, RoomPollsDocument, { id: roomId, first: 101 }, { token: token(owner) }), 'BAD_USER_INPUT', 'first');
    expectError(await gql(a.url, RoomPollsDocument, { id: roomId, after: 'junk' }, { token: token(owner) }), 'BAD_USER_INPUT', 'after');
  });
});

describe('when a non-member uses polls', () => {
  it('should answer FORBIDDEN to every poll operation, in a private or a public room', async () => {
    const [owner, bob, mallory] = [await newUser('owner'), await newUser('bob'), await newUser('mallory')];
    for (const visibility of ['PRIVATE', 'PUBLIC'] as const) {
      const roomId = await createRoom(owner, [bob], visibility);
      const p = await createPoll(a, owner, pollInput(roomId));
      const t = { token: token(mallory) };
      expectError(await gql(a.url, CreatePollDocument, { input: pollInput(roomId) }, t), 'FORBIDDEN');
      expectError(await gql(b.url, PollDocument, { id: p.id }, t), 'FORBIDDEN');
      expectError(await gql(a.url, VoteDocument, { pollId: p.id, optionIds: [optionIds(p)[0] as string] }, t), 'FORBIDDEN');
      expectError(await gql(b.url, ClosePollDocument, { pollId: p.id }, t), 'FORBIDDEN');
      if (visibility === 'PUBLIC') {
        // The room itself is visible to anyone; its polls are not.
        const r = await gql(a.url, RoomPollsDocument, { id: roomId }, t);
        expect(r.errors?.map((e) => [e.extensions?.code, e.path])).toEqual([['FORBIDDEN', ['room', 'polls']]]);
      }
      const sub = subscribe(clients.open(b.wsUrl, token(mallory)), OnPollUpdatedDocument, { pollId: p.id });
      expect((await operationErrors(sub)).map((e) => e.extensions?.code)).toEqual(['FORBIDDEN']);
      const after = (await poll(a, owner, p.id)) as Poll;
      expect([after.totalVoters, after.closed]).toEqual([0, false]);
    }
    expectError(
      await gql(a.url, CreatePollDocument, { input: pollInput('no-such-room') }, { token: token(mallory) }),
      'NOT_FOUND',
    );
  });
});

describe('when a member who voted is removed from the room', () => {
  it('should end their pollUpdated subscription, refuse them with FORBIDDEN, and keep their vote counted', async () => {
    const { users, roomId, p, options } = await roomWithPoll(['owner', 'bob', 'carol']);
    const [owner, bob, carol] = users as [string, string, string];
    const [pizza] = options;
    await vote(a, bob, p.id, [pizza]);
    const watch = await live(b, bob, OnPollUpdatedDocument, { pollId: p.id });
    await gqlOk(a.url, RemoveMemberDocument, { roomId, userId: bob }, token(owner));
    await completesWithin(watch, 1000, "bob's pollUpdated subscription");
    expectError(await gql(b.url, VoteDocument, { pollId: p.id, optionIds: [] }, { token: token(bob) }), 'FORBIDDEN');
    expectError(await gql(a.url, PollDocument, { id: p.id }, { token: token(bob) }), 'FORBIDDEN');
    const now = (await poll(a, carol, p.id)) as Poll;
    expect(now.totalVoters).toBe(1);
    expect(voterIds(now)).toEqual([[bob], [], []]);
  });
});
