import { describe, expect, it } from 'vitest';
import { decodePollId, encodeOptionId } from '../../src/polls/poll-id.js';
import type { PollUpdatedModel } from '../../src/polls/polls.models.js';
import type { RoomEventPayload } from '../../src/topics.js';
import { waitFor } from '../helpers/clients.js';
import { uniquePrefix } from '../helpers/server.js';
import { viewer, wire, type TestWiring } from '../helpers/wiring.js';

/**
 * The polls service on real Redis, as two instances of one deployment (two wirings on one key
 * prefix): the scheduled close under racing sweeps, and the end of a coalescing window after a
 * close. What was published is read through pub/sub, up to a sentinel each instance publishes last.
 */

const owner = viewer('owner');
const bob = viewer('bob');
const carol = viewer('carol');

async function twoInstances() {
  const prefix = uniquePrefix('polls-svc');
  return [await wire({ prefix }), await wire({ prefix })] as const;
}

/** Everything published on a room's channel, as seen through `w`. */
async function recordRoom(w: TestWiring, roomId: string) {
  const seen: RoomEventPayload[] = [];
  const listener = w.pubsub.listen('room', roomId, (ev) => seen.push(ev));
  await listener.ready;
  return {
    seen,
    polls: () => seen.filter((e): e is PollUpdatedModel => e.type === 'PollUpdated'),
    /** Publishes a sentinel through each instance and waits for both: what they published before has arrived. */
    async settle(instances: readonly TestWiring[]) {
      instances.forEach((i, n) => i.pubsub.publish('room', roomId, { type: 'TypingChanged', roomId, userIds: [`sentinel-${n}`] }));
      await waitFor(
        () => instances.every((_, n) => seen.some((e) => e.type === 'TypingChanged' && e.userIds[0] === `sentinel-${n}`)),
        5000,
        'the sentinels',
      );
    },
  };
}

describe('when both instances sweep a due poll at the same time', () => {
  it('should close it once and announce it once', async () => {
    const [a, b] = await twoInstances();
    const room = await a.services.rooms.create(owner, { name: 'sweep', memberIds: ['bob'] });
    const closesAt = Date.now() + 60_000;
    const poll = await a.services.polls.create(owner, {
      roomId: room.id,
      question: 'Soon over?',
      options: ['yes', 'no'],
      closesAt: new Date(closesAt).toISOString(),
    });
    await b.services.polls.vote(bob, poll.id, []);
    const record = await recordRoom(a, room.id);
    // Not due yet: nothing closes.
    expect(await Promise.all([a.services.polls.sweep(closesAt - 1), b.services.polls.sweep(closesAt - 1)])).toEqual([0, 0]);
    // Due: eight sweeps race over the two instances' connections.
    const closed = await Promise.all(
      Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).services.polls.sweep(closesAt + 10)),
    );
    expect(closed.reduce((x, y) => x + y, 0)).toBe(1);
    await record.settle([a, b]);
    expect(record.polls().map((e) => [e.poll.id, e.poll.closed, e.poll.closedAt])).toEqual([[poll.id, true, closesAt]]);
    expect(await a.services.polls.get(owner, poll.id)).toMatchObject({ closed: true, closedAt: closesAt });
  });
});

describe('when a poll closes while a coalescing window is open', () => {
  it('should announce the close at once and nothing more when the window ends', async () => {
    const [a, b] = await twoInstances();
    const room = await a.services.rooms.create(owner, { name: 'window', memberIds: ['bob', 'carol'] });
    const poll = await a.services.polls.create(owner, { roomId: room.id, question: 'Quick?', options: ['yes', 'no'] });
    const [yes, no] = [0, 1].map((i) => encodeOptionId(decodePollId('pollId', poll.id), i)) as [string, string];
    const record = await recordRoom(b, room.id);
    // Opens the window on a (announced now), then a vote inside it on b (announced at its end)…
    const first = await a.services.polls.vote(bob, poll.id, [yes]);
    await b.services.polls.vote(carol, poll.id, [no]);
    // …but the poll closes first: the close is the last word.
    const closed = await b.services.polls.close(owner, poll.id);
    const windowEnds = Date.now() + 500;
    await waitFor(() => Date.now() > windowEnds + 300, 5000, 'the coalescing window to end');
    await record.settle([a, b]);
    // (The creation's own announcement may reach this late listener or not: Redis writes of a turn
    // leave together at its end, after `create` returned.)
    const updates = record.polls().filter((e) => e.poll.version >= first.poll.version);
    expect(updates.map((e) => e.poll.version)).toEqual([first.poll.version, closed.version]);
    expect(updates.at(-1)?.poll).toMatchObject({ closed: true, votes: [1, 1], totalVoters: 2 });
  });
});
