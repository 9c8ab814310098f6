import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScriptRegistry, ScriptRunner } from '../../src/infra/scripts.js';
import { encodePollId } from '../../src/polls/poll-id.js';
import { closePollKeys, createPollKeys, pollKeys, voteKeys, type PollRef } from '../../src/polls/polls.keys.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { range } from '../helpers/clients.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The polls domain's Lua scripts, called directly: createPoll's checks, vote's status codes, its
 * replacement of the previous vote, races of concurrent votes on several connections (counts must
 * equal a recount of the stored votes), the update window, and closePoll by hand and on schedule,
 * exactly once under concurrent sweeps.
 */

const prefix = uniquePrefix('polls-lua');
const NOW = 1_800_000_000_000;
let redis: Redis;
let scripts: ScriptRegistry;
const extra: Redis[] = [];
let createPoll: ScriptRunner;
let vote: ScriptRunner;
let closePoll: ScriptRunner;

beforeAll(async () => {
  ({ redis, scripts } = await luaConnection(prefix));
  createPoll = scripts.get('createPoll');
  vote = scripts.get('vote');
  closePoll = scripts.get('closePoll');
});

afterAll(async () => {
  await deletePrefixed(prefix);
  for (const r of extra) r.disconnect();
  redis?.disconnect();
});

const hex = () => randomBytes(6).toString('hex');

/** A room owned by `members[0]`. */
async function seedRoom(members: string[]) {
  const roomId = hex();
  await redis
    .multi()
    .hset(roomKeys.room(roomId), { id: roomId, name: 'r', visibility: 'PRIVATE', ownerId: members[0] ?? 'o', seq: 0, epoch: 'E' })
    .zadd(roomKeys.members(roomId), ...members.flatMap((m) => [0, m]))
    .exec();
  return roomId;
}

interface PollOpts {
  creator?: string;
  options?: number;
  multiple?: boolean;
  anonymous?: boolean;
  closesAt?: number | '';
}

/** Runs createPoll as the service does; answers the status and the poll's ref. */
async function create(roomId: string, opts: PollOpts = {}): Promise<{ status: number; ref: PollRef; pollId: string }> {
  const ref = { roomId, localId: hex() };
  const pollId = encodePollId(ref);
  const n = opts.options ?? 3;
  const [status] = (await createPoll(createPollKeys(ref), [
    opts.creator ?? 'owner',
    pollId,
    ref.localId,
    roomId,
    'Lunch?',
    JSON.stringify(range(1, n).map((i) => `option ${i}`)),
    n,
    opts.multiple ? 1 : 0,
    opts.anonymous ? 1 : 0,
    opts.closesAt ?? '',
    NOW,
  ])) as [number];
  return { status, ref, pollId };
}

/** A room with `members` (the first owns it) and a poll created by the owner. */
async function seedPoll(members: string[], opts: PollOpts = {}) {
  const roomId = await seedRoom(members);
  const { ref, pollId } = await create(roomId, { creator: members[0], ...opts });
  return { ref, pollId };
}

/** [status, changed, windowOpened] */
const cast = (ref: PollRef, userId: string, options: number[], opts: { now?: number; windowMs?: number; runner?: ScriptRunner } = {}) =>
  ((opts.runner ?? vote)(voteKeys(ref), [userId, opts.now ?? NOW, opts.windowMs ?? 0, ...options]) as Promise<unknown[]>).then(
    (r) => r.slice(0, 3) as [number, number, number],
  );

/** [status, changed] */
const close = (ref: PollRef, pollId: string, userId: string, now = NOW, runner = closePoll) =>
  (runner(closePollKeys(ref), [userId, pollId, now]) as Promise<unknown[]>).then((r) => r.slice(0, 2) as [number, number]);

const pollHash = (ref: PollRef) => redis.hgetall(pollKeys.poll(ref.roomId, ref.localId));
const votesHash = (ref: PollRef) => redis.hgetall(pollKeys.votes(ref.roomId, ref.localId));

/** What the poll hash says: votes per option and voters. */
async function counts(ref: PollRef, n: number) {
  const h = await pollHash(ref);
  return { votes: range(0, n - 1).map((i) => Number(h[`v:${i}`])), voters: Number(h.voters) };
}

/** A recount from the stored votes (userId -> '0,2'). */
async function recount(ref: PollRef, n: number) {
  const votes = Object.values(await votesHash(ref));
  const perOption = range(0, n - 1).map((i) => votes.filter((v) => v.split(',').map(Number).includes(i)).length);
  return { votes: perOption, voters: votes.length };
}

/** Who the voters sorted set lists per option. */
async function listed(ref: PollRef, n: number) {
  const members = await redis.zrange(pollKeys.voters(ref.roomId, ref.localId), 0, -1, 'WITHSCORES');
  const out = range(0, n - 1).map(() => [] as string[]);
  for (let i = 0; i < members.length; i += 2) {
    const [index, userId] = (members[i] as string).split(':') as [string, string];
    expect(members[i + 1]).toBe(index);
    out[Number(index)]?.push(userId);
  }
  return out.map((l) => l.sort());
}

describe('createPoll', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND) and store nothing', async () => {
      const { status, ref } = await create(hex());
      expect(status).toBe(1);
      expect(await redis.exists(pollKeys.poll(ref.roomId, ref.localId), pollKeys.roomPolls(ref.roomId))).toBe(0);
    });
  });

  describe('when the creator is not a member', () => {
    it('should answer status 2 (NOT_MEMBER) and store nothing', async () => {
      const roomId = await seedRoom(['owner']);
      const { status, ref, pollId } = await create(roomId, { creator: 'mallory', closesAt: NOW + 1000 });
      expect(status).toBe(2);
      expect(await redis.exists(pollKeys.poll(ref.roomId, ref.localId), pollKeys.roomPolls(roomId))).toBe(0);
      expect(await redis.zscore(pollKeys.closing(), pollId)).toBeNull();
    });
  });

  describe('when a member creates a poll', () => {
    it('should store it open with zero counts, list it in the room, and schedule its close', async () => {
      const roomId = await seedRoom(['owner', 'bob']);
      const { status, ref, pollId } = await create(roomId, { creator: 'bob', options: 4, closesAt: NOW + 5000 });
      expect(status).toBe(0);
      expect(await pollHash(ref)).toMatchObject({
        id: pollId,
        roomId,
        creatorId: 'bob',
        closed: '0',
        closesAt: String(NOW + 5000),
        optionCount: '4',
        voters: '0',
        version: '1',
      });
      expect(await counts(ref, 4)).toEqual({ votes: [0, 0, 0, 0], voters: 0 });
      expect(await redis.zrange(pollKeys.roomPolls(roomId), 0, -1)).toEqual([ref.localId]);
      expect(await redis.zscore(pollKeys.closing(), pollId)).toBe(String(NOW + 5000));
    });
  });
});

describe('vote', () => {
  describe('when the poll does not exist', () => {
    it('should answer status 9 (POLL_NOT_FOUND)', async () => {
      const roomId = await seedRoom(['owner']);
      expect(await cast({ roomId, localId: hex() }, 'owner', [0])).toEqual([9, 0, 0]);
    });
  });

  describe('when the voter is not a member', () => {
    it('should answer status 2 (NOT_MEMBER) and count nothing', async () => {
      const { ref } = await seedPoll(['owner', 'bob']);
      expect(await cast(ref, 'mallory', [0])).toEqual([2, 0, 0]);
      expect(await counts(ref, 3)).toEqual({ votes: [0, 0, 0], voters: 0 });
      expect(await votesHash(ref)).toEqual({});
    });
  });

  describe('when the options do not fit the poll', () => {
    it('should answer 11 (BAD_OPTION) for an index out of range or twice, and 12 (SINGLE_CHOICE) for two in a single-choice poll', async () => {
      const { ref } = await seedPoll(['owner', 'bob']);
      expect(await cast(ref, 'bob', [3])).toEqual([11, 0, 0]);
      expect(await cast(ref, 'bob', [-1])).toEqual([11, 0, 0]);
      expect(await cast(ref, 'bob', [1.5])).toEqual([11, 0, 0]);
      expect(await cast(ref, 'bob', [0, 2])).toEqual([12, 0, 0]);
      const multi = await seedPoll(['owner', 'bob'], { multiple: true });
      expect(await cast(multi.ref, 'bob', [1, 1])).toEqual([11, 0, 0]);
      expect(await counts(ref, 3)).toEqual({ votes: [0, 0, 0], voters: 0 });
      expect(await counts(multi.ref, 3)).toEqual({ votes: [0, 0, 0], voters: 0 });
    });
  });

  describe('when the poll is closed', () => {
    it('should answer 10 (POLL_CLOSED) once closed, and from closesAt on even before any sweep', async () => {
      const { ref } = await seedPoll(['owner', 'bob'], { closesAt: NOW + 1000 });
      expect(await cast(ref, 'bob', [0], { now: NOW + 999 })).toEqual([0, 1, 0]);
      expect(await cast(ref, 'bob', [1], { now: NOW + 1000 })).toEqual([10, 0, 0]);
      expect(await cast(ref, 'bob', [], { now: NOW + 1000 })).toEqual([10, 0, 0]);
      const manual = await seedPoll(['owner', 'bob']);
      expect(await close(manual.ref, manual.pollId, 'owner')).toEqual([0, 1]);
      expect(await cast(manual.ref, 'bob', [0])).toEqual([10, 0, 0]);
      expect(await counts(ref, 3)).toEqual({ votes: [1, 0, 0], voters: 1 });
    });
  });

  describe('when a member votes, changes and retracts', () => {
    it('should replace the previous vote in the counts, the voter count and the voters set', async () => {
      const { ref } = await seedPoll(['owner', 'bob', 'carol'], { multiple: true });
      expect(await cast(ref, 'bob', [0, 2])).toEqual([0, 1, 0]);
      expect(await cast(ref, 'carol', [2])).toEqual([0, 1, 0]);
      expect(await counts(ref, 3)).toEqual({ votes: [1, 0, 2], voters: 2 });
      // The same choice in another order changes nothing (no version bump).
      const before = (await pollHash(ref)).version;
      expect(await cast(ref, 'bob', [2, 0])).toEqual([0, 0, 0]);
      expect((await pollHash(ref)).version).toBe(before);
      expect(await cast(ref, 'bob', [1])).toEqual([0, 1, 0]);
      expect(await counts(ref, 3)).toEqual({ votes: [0, 1, 1], voters: 2 });
      expect(await listed(ref, 3)).toEqual([[], ['bob'], ['carol']]);
      expect(await cast(ref, 'carol', [])).toEqual([0, 1, 0]);
      expect(await cast(ref, 'carol', [])).toEqual([0, 0, 0]);
      expect(await counts(ref, 3)).toEqual({ votes: [0, 1, 0], voters: 1 });
      expect(await votesHash(ref)).toEqual({ bob: '1' });
      expect(await listed(ref, 3)).toEqual([[], ['bob'], []]);
    });
  });

  describe('when the poll is anonymous', () => {
    it('should count votes but never write who chose what to the voters set', async () => {
      const { ref } = await seedPoll(['owner', 'bob', 'carol'], { anonymous: true, multiple: true });
      await cast(ref, 'bob', [0, 1]);
      await cast(ref, 'carol', [1]);
      await cast(ref, 'bob', [2]);
      expect(await counts(ref, 3)).toEqual({ votes: [0, 1, 1], voters: 2 });
      expect(await redis.exists(pollKeys.voters(ref.roomId, ref.localId))).toBe(0);
    });
  });

  describe('when 200 members vote, change and retract concurrently over several connections', () => {
    it('should end with counts, voters and the voters set equal to a recount of the stored votes', async () => {
      const members = ['owner', ...range(1, 200).map((i) => `u${String(i).padStart(3, '0')}`)];
      const n = 5;
      const { ref } = await seedPoll(members, { options: n, multiple: true });
      const runners = await Promise.all(
        range(1, 4).map(async () => {
          const c = await luaConnection(prefix);
          extra.push(c.redis);
          return c.scripts.get('vote');
        }),
      );
      // Each voter sends three votes at once (their final one is whichever Redis runs last).
      const choices = (i: number, round: number): number[] => {
        const k = (i * 7 + round * 3) % 11;
        if (k === 0) return [];
        return [...new Set([k % n, (k * 3) % n].slice(0, 1 + (k % 2)))];
      };
      const replies = await Promise.all(
        members.slice(1).flatMap((userId, i) =>
          range(0, 2).map((round) => cast(ref, userId, choices(i, round), { runner: runners[(i + round) % runners.length] as ScriptRunner })),
        ),
      );
      expect(replies.every((r) => r[0] === 0)).toBe(true);
      const stored = await counts(ref, n);
      expect(stored).toEqual(await recount(ref, n));
      expect(stored.voters).toBeGreaterThan(100);
      // The voters set lists exactly the stored votes.
      const votes = await votesHash(ref);
      const expected = range(0, n - 1).map((o) =>
        Object.entries(votes)
          .filter(([, v]) => v.split(',').map(Number).includes(o))
          .map(([u]) => u)
          .sort(),
      );
      expect(await listed(ref, n)).toEqual(expected);
      // Every final vote is one of that voter's three.
      for (const [i, userId] of members.slice(1).entries()) {
        const options = range(0, 2).map((round) => [...choices(i, round)].sort((x, y) => x - y).join(','));
        expect(options).toContain(votes[userId] ?? '');
      }
    });
  });

  describe('when concurrent votes race to open the update window', () => {
    it('should let exactly one changing vote open it, and a vote that changes nothing open none', async () => {
      const { ref } = await seedPoll(['owner', ...range(1, 30).map((i) => `v${i}`)]);
      const replies = await Promise.all(range(1, 30).map((i) => cast(ref, `v${i}`, [i % 3], { windowMs: 2000 })));
      expect(replies.filter((r) => r[2] === 1)).toHaveLength(1);
      const ttl = await redis.pttl(pollKeys.window(ref.roomId, ref.localId));
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(2000);
      const quiet = await seedPoll(['owner', 'bob']);
      await cast(quiet.ref, 'bob', [1]);
      expect(await cast(quiet.ref, 'bob', [1], { windowMs: 2000 })).toEqual([0, 0, 0]);
      expect(await redis.exists(pollKeys.window(quiet.ref.roomId, quiet.ref.localId))).toBe(0);
    });
  });
});

describe('closePoll', () => {
  describe('when closed by hand', () => {
    it('should let the creator or the owner close it, once, and refuse anyone else', async () => {
      const byCreator = await seedPoll(['owner', 'bob', 'carol'], { creator: 'bob', closesAt: NOW + 60_000 });
      expect(await close(byCreator.ref, byCreator.pollId, 'carol')).toEqual([13, 0]);
      expect(await close(byCreator.ref, byCreator.pollId, 'mallory')).toEqual([2, 0]);
      expect((await pollHash(byCreator.ref)).closed).toBe('0');
      expect(await close(byCreator.ref, byCreator.pollId, 'bob')).toEqual([0, 1]);
      expect(await close(byCreator.ref, byCreator.pollId, 'bob')).toEqual([0, 0]);
      expect(await pollHash(byCreator.ref)).toMatchObject({ closed: '1', closedAt: String(NOW) });
      // No longer scheduled.
      expect(await redis.zscore(pollKeys.closing(), byCreator.pollId)).toBeNull();

      const byOwner = await seedPoll(['owner', 'bob'], { creator: 'bob' });
      expect(await close(byOwner.ref, byOwner.pollId, 'owner')).toEqual([0, 1]);
    });
  });

  describe('when the poll does not exist', () => {
    it('should answer 9 (POLL_NOT_FOUND) and drop it from the schedule', async () => {
      const roomId = await seedRoom(['owner']);
      const ref = { roomId, localId: hex() };
      const pollId = encodePollId(ref);
      await redis.zadd(pollKeys.closing(), NOW, pollId);
      expect(await close(ref, pollId, '')).toEqual([9, 0]);
      expect(await redis.zscore(pollKeys.closing(), pollId)).toBeNull();
    });
  });

  describe('when the scheduled close runs', () => {
    it('should close only once closesAt has passed, recording closesAt as the closing time', async () => {
      const { ref, pollId } = await seedPoll(['owner', 'bob'], { closesAt: NOW + 1000 });
      expect(await close(ref, pollId, '', NOW + 999)).toEqual([0, 0]);
      expect(await redis.zscore(pollKeys.closing(), pollId)).toBe(String(NOW + 1000));
      expect(await close(ref, pollId, '', NOW + 1500)).toEqual([0, 1]);
      expect(await pollHash(ref)).toMatchObject({ closed: '1', closedAt: String(NOW + 1000), version: '2' });
      expect(await redis.zscore(pollKeys.closing(), pollId)).toBeNull();
    });

    it('should never close a poll with no closesAt', async () => {
      const { ref, pollId } = await seedPoll(['owner', 'bob']);
      expect(await close(ref, pollId, '', NOW + 10_000_000)).toEqual([0, 0]);
      expect((await pollHash(ref)).closed).toBe('0');
    });

    it('should close a due poll exactly once when many sweeps and a manual close race on several connections', async () => {
      const { ref, pollId } = await seedPoll(['owner', 'bob'], { closesAt: NOW + 1000 });
      const runners = await Promise.all(
        range(1, 4).map(async () => {
          const c = await luaConnection(prefix);
          extra.push(c.redis);
          return c.scripts.get('closePoll');
        }),
      );
      const replies = await Promise.all([
        ...range(0, 19).map((i) => close(ref, pollId, '', NOW + 2000, runners[i % runners.length] as ScriptRunner)),
        close(ref, pollId, 'owner', NOW + 2000, runners[0] as ScriptRunner),
      ]);
      expect(replies.every((r) => r[0] === 0)).toBe(true);
      expect(replies.filter((r) => r[1] === 1)).toHaveLength(1);
      expect((await pollHash(ref)).version).toBe('2');
    });
  });
});
