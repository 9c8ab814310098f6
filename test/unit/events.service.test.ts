import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import type { StreamItem } from '../../src/events/events.service.js';
import { encodeMessageId } from '../../src/messages/message-id.js';
import { messageKeys } from '../../src/messages/messages.keys.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { deferred, waitFor, withTimeout } from '../helpers/clients.js';
import { monitorRedis } from '../helpers/monitor.js';
import { sharedRedisUrl } from '../helpers/server.js';
import { STREAM_MODES, nextOf, openStream, sendAndAwaitEvents, range, seqsOf, take, viewer, wire, type TestWiring } from '../helpers/wiring.js';

/**
 * The events service on real Redis, wired as src/app.ts wires it (two connections, the script
 * loader, the pub/sub wrapper, createServices), each test with its own key prefix.
 */


const alice = viewer('alice');
const bob = viewer('bob');
const carol = viewer('carol');


/** The next item of a stream, failing after `ms` (the stream must not hang). */




/** Expects an `AppError` with `code` (and `field`). */
async function expectCode(p: Promise<unknown>, code: string, field?: string) {
  const err = await p.then(
    () => {
      throw new Error(`expected ${code}, the call succeeded`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  expect((err as AppError).extensions.code).toBe(code);
  if (field !== undefined) expect((err as AppError).extensions.field).toBe(field);
}

// Every test runs in each stream mode: as async generators, and with a WebSocket-like sink (the pump), run by the sink or iterated.
for (const mode of STREAM_MODES) {
describe(`room streams (${mode})`, () => {
  describe('when a stream opens with `after` while messages are being sent', () => {
    it('should replay what follows the cursor, then go live, with no gap and no duplicate', async () => {
      const { services } = await wire();
      const room = await services.rooms.create(alice, { name: 'replay', memberIds: ['bob'] });
      for (let i = 1; i <= 10; i++) await services.messages.send(bob, { roomId: room.id, text: `m${i}` });

      // 30 more sends race with the opening and with the reading: 20 one after another, 10 at once.
      const sequential = (async () => {
        for (let i = 0; i < 20; i++) await services.messages.send(bob, { roomId: room.id, text: `s${i}` });
      })();
      const burst = Promise.all(
        Array.from({ length: 10 }, (_, i) => services.messages.send(alice, { roomId: room.id, text: `b${i}`, clientId: `b${i}` })),
      );
      const stream = await openStream(mode, services.events, alice, room.id, {
        after: encodeMessageId(room.id, 3, room.epoch),
        kind: 'messages',
      });
      const items = await take(stream, 37);
      await Promise.all([sequential, burst]);
      expect(seqsOf(items)).toEqual(range(4, 40));

      // Live after the replay, and nothing left over between the two.
      await services.messages.send(bob, { roomId: room.id, text: 'live' });
      const [live] = await take(stream, 1);
      expect(live).toMatchObject({ type: 'MessageAdded', message: { seq: 41, text: 'live', senderId: 'bob' } });
      await stream.return(undefined);
    });

    it('should replay more than one catch-up batch in order', async () => {
      const { services } = await wire();
      const room = await services.rooms.create(alice, { name: 'long history' });
      await Promise.all(Array.from({ length: 250 }, (_, i) => services.messages.send(alice, { roomId: room.id, text: `m${i}` })));
      const stream = await openStream(mode, services.events, alice, room.id, { after: encodeMessageId(room.id, 1, room.epoch), kind: 'all' });
      expect(seqsOf(await take(stream, 249))).toEqual(range(2, 250));
      await services.messages.send(alice, { roomId: room.id, text: 'then live' });
      expect(seqsOf(await take(stream, 1))).toEqual([251]);
      await stream.return(undefined);
    });

    it('should replay nothing when `after` is the latest message, then go live', async () => {
      const { services } = await wire();
      const room = await services.rooms.create(alice, { name: 'caught up' });
      const last = await services.messages.send(alice, { roomId: room.id, text: 'only' });
      const stream = await openStream(mode, services.events, alice, room.id, { after: encodeMessageId(room.id, last.seq, room.epoch), kind: 'messages' });
      await services.messages.send(alice, { roomId: room.id, text: 'next' });
      expect(seqsOf(await take(stream, 1))).toEqual([2]);
      await stream.return(undefined);
    });
  });

  describe('when a stream’s buffer is tiny and nobody reads it while 50 messages are sent', () => {
    it('should still yield seqs 1..50 in order when read (catch-up from storage), then live ones', async () => {
      const { services, pubsub } = await wire({ bufferSize: 2 });
      const room = await services.rooms.create(alice, { name: 'slow reader', memberIds: ['bob'] });
      const stream = await openStream(mode, services.events, alice, room.id, { kind: 'messages' });

      // Every event reached this instance (so the buffer overflowed).
      await sendAndAwaitEvents(pubsub, room.id, 50, () =>
        Promise.all(Array.from({ length: 50 }, (_, i) => services.messages.send(i % 2 ? bob : alice, { roomId: room.id, text: `m${i}` }))),
      );

      expect(seqsOf(await take(stream, 50))).toEqual(range(1, 50));
      await services.messages.send(bob, { roomId: room.id, text: 'after the flood' });
      expect(seqsOf(await take(stream, 1))).toEqual([51]);
      await stream.return(undefined);
    });

    it('should end a roomEvents stream with CURSOR_EXPIRED when events that storage cannot replay overflow it', async () => {
      // 3: the viewer's own PresenceChanged (room presence) takes the first slot.
      const { services } = await wire({ bufferSize: 3 });
      const room = await services.rooms.create(alice, { name: 'slow events' });
      const stream = await openStream(mode, services.events, alice, room.id, { kind: 'all' });
      await waitFor(async () => (await services.presence.onlineCounts([room.id]))[0] === 1, 2000, 'alice to be present');
      for (const id of ['u1', 'u2', 'u3']) await services.rooms.addMembers(alice, room.id, [id]);
      await waitFor(() => services.events.openCount() === 0, 2000, 'the overflowing stream to close');

      const items = await take(stream, 3);
      expect(items.slice(0, 2)).toMatchObject([
        { type: 'MemberJoined', userId: 'u1' },
        { type: 'MemberJoined', userId: 'u2' },
      ]);
      const last = items[2] as Extract<StreamItem, { type: 'StreamError' }>;
      expect(last.type).toBe('StreamError');
      expect(last.error.extensions).toMatchObject({ code: 'CURSOR_EXPIRED', reason: 'SLOW_CONSUMER' });
      expect((await nextOf(stream)).done).toBe(true);
    });
  });

  describe('when the viewer stops being a member', () => {
    it('should end a messages stream when the owner removes the viewer', async () => {
      const { services } = await wire();
      const room = await services.rooms.create(alice, { name: 'kick', memberIds: ['bob'] });
      const stream = await openStream(mode, services.events, bob, room.id, { kind: 'messages' });
      const pending = nextOf(stream, 2000, 'the end of the removed member’s stream');
      await services.rooms.removeMember(alice, room.id, 'bob');
      expect(await pending).toEqual({ value: undefined, done: true });
      expect(services.events.openCount()).toBe(0);
    });

    it('should yield MemberLeft, then end, a roomEvents stream of a viewer who leaves', async () => {
      const { services } = await wire();
      const room = await services.rooms.create(alice, { name: 'leave', memberIds: ['bob'] });
      const stream = await openStream(mode, services.events, bob, room.id, { kind: 'all' });
      await services.rooms.leave(bob, room.id);
      expect(await take(stream, 1)).toMatchObject([{ type: 'MemberLeft', roomId: room.id, userId: 'bob' }]);
      expect((await nextOf(stream)).done).toBe(true);
      expect(services.events.openCount()).toBe(0);
    });

    it('should keep the stream open when someone else leaves', async () => {
      const { services } = await wire();
      const room = await services.rooms.create(alice, { name: 'others', memberIds: ['bob', 'carol'] });
      const events = await openStream(mode, services.events, bob, room.id, { kind: 'all' });
      const messages = await openStream(mode, services.events, bob, room.id, { kind: 'messages' });
      await services.rooms.leave(carol, room.id);
      await services.messages.send(alice, { roomId: room.id, text: 'still here?' });
      expect(await take(events, 2)).toMatchObject([
        { type: 'MemberLeft', userId: 'carol' },
        { type: 'MessageAdded', message: { seq: 1 } },
      ]);
      // The messages stream does not even see the other member's departure.
      expect(seqsOf(await take(messages, 1))).toEqual([1]);
      expect(services.events.openCount()).toBe(2);
      await Promise.all([events.return(undefined), messages.return(undefined)]);
    });
  });

  describe('when a stream cannot be opened', () => {
    it.each([
      ['a room that does not exist', 'NOT_FOUND', undefined],
      ['a room the viewer is not in', 'FORBIDDEN', undefined],
    ])('should refuse %s with %s and leave nothing behind', async (what, code) => {
      const { services, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'private' });
      const roomId = what.includes('not exist') ? 'no-such-room' : room.id;
      await expectCode(openStream(mode, services.events, carol, roomId, { kind: 'messages' }), code);
      expect(services.events.openCount()).toBe(0);
      expect(pubsub.stats().listeners).toBe(0);
    });

    it('should refuse an `after` of another room, or not a message id, with BAD_USER_INPUT', async () => {
      const { services, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'a' });
      const other = await services.rooms.create(alice, { name: 'b' });
      await services.messages.send(alice, { roomId: other.id, text: 'x' });
      await expectCode(openStream(mode, services.events, alice, room.id, { after: encodeMessageId(other.id, 1, other.epoch), kind: 'messages' }), 'BAD_USER_INPUT', 'after');
      await expectCode(openStream(mode, services.events, alice, room.id, { after: 'nonsense', kind: 'messages' }), 'BAD_USER_INPUT', 'after');
      expect(pubsub.stats().listeners).toBe(0);
    });

    it('should answer CURSOR_EXPIRED for an `after` past the room’s latest message', async () => {
      const { services, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'reset' });
      await services.messages.send(alice, { roomId: room.id, text: 'x' });
      await expectCode(openStream(mode, services.events, alice, room.id, { after: encodeMessageId(room.id, 2, room.epoch), kind: 'all' }), 'CURSOR_EXPIRED');
      expect(services.events.openCount()).toBe(0);
      expect(pubsub.stats().listeners).toBe(0);
    });
  });

  describe('closeAll', () => {
    it('should end every open stream, waiting or not, and bring openCount to 0', async () => {
      const { services } = await wire();
      const room = await services.rooms.create(alice, { name: 'shutdown', memberIds: ['bob'] });
      const a = await openStream(mode, services.events, alice, room.id, { kind: 'messages' });
      const b = await openStream(mode, services.events, bob, room.id, { kind: 'all' });
      const c = await openStream(mode, services.events, bob, room.id, { kind: 'messages' });
      expect(services.events.openCount()).toBe(3);
      const waitingA = nextOf(a, 2000, 'stream a to end');
      const waitingB = nextOf(b, 2000, 'stream b to end');
      services.events.closeAll();
      expect(services.events.openCount()).toBe(0);
      expect(await waitingA).toEqual({ value: undefined, done: true });
      expect(await waitingB).toEqual({ value: undefined, done: true });
      expect((await nextOf(c)).done).toBe(true);
    });

    it('should deliver what was already queued before ending', async () => {
      const { services, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'drain' });
      const stream = await openStream(mode, services.events, alice, room.id, { kind: 'messages' });
      await sendAndAwaitEvents(pubsub, room.id, 1, () => services.messages.send(alice, { roomId: room.id, text: 'queued' }));
      services.events.closeAll();
      expect(seqsOf(await take(stream, 1))).toEqual([1]);
      expect((await nextOf(stream)).done).toBe(true);
    });
  });

  describe('openCount', () => {
    it('should count open streams and go back to 0 once they end', async () => {
      const { services, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'count', memberIds: ['bob'] });
      expect(services.events.openCount()).toBe(0);
      const a = await openStream(mode, services.events, alice, room.id, { kind: 'messages' });
      const b = await openStream(mode, services.events, bob, room.id, { kind: 'messages' });
      expect(services.events.openCount()).toBe(2);
      await services.messages.send(alice, { roomId: room.id, text: 'x' });
      await take(a, 1);
      await a.return(undefined); // suspended at a yield: returns at once
      expect(services.events.openCount()).toBe(1);
      // b has its message queued, then ends when bob leaves.
      await services.rooms.leave(bob, room.id);
      expect(seqsOf(await take(b, 1))).toEqual([1]);
      expect((await nextOf(b, 2000, 'b to end')).done).toBe(true);
      await waitFor(() => services.events.openCount() === 0, 2000, 'openCount 0');
      expect(pubsub.stats().listeners).toBe(0);
    });

    it('should go back to 0 when a consumer waiting in a quiet room stops reading (client unsubscribes)', async () => {
      const { services, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'quiet' });
      const stream = await openStream(mode, services.events, alice, room.id, { kind: 'messages' });
      // graphql-ws / yoga pull the next value at once, then call return() when the client leaves.
      const waiting = stream.next();
      void waiting.catch(() => undefined);
      const returned = stream.return(undefined);
      void returned.catch(() => undefined);
      await waitFor(() => services.events.openCount() === 0, 1000, 'openCount 0 after return()');
      expect(pubsub.stats().listeners).toBe(0);
      expect(await withTimeout(returned, 1000, 'return() to settle')).toEqual({ value: undefined, done: true });
    });

    it('should go back to 0 when a stream is returned before it was ever read', async () => {
      const { services, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'never read' });
      const stream = await openStream(mode, services.events, alice, room.id, { kind: 'messages' });
      expect(services.events.openCount()).toBe(1);
      await stream.return(undefined);
      await waitFor(() => services.events.openCount() === 0, 1000, 'openCount 0 after return()');
      expect(pubsub.stats().listeners).toBe(0);
    });
  });

  /** Stores a message the way sendMessage does, but publishes nothing: its pub/sub event is "lost". */
  async function sendSilently(w: TestWiring, roomId: string, senderId: string, text: string) {
    const [status] = (await w.scripts.get('sendMessage')(
      [roomKeys.room(roomId), roomKeys.members(roomId), messageKeys.messages(roomId), messageKeys.dedupe(roomId, senderId, '')],
      [roomId, senderId, text, '', Date.now(), 60, 0],
    )) as [number];
    expect(status).toBe(0);
  }

  describe('when a message’s pub/sub event is lost and no later message reveals the gap', () => {
    it('should deliver it after a position check, then carry on live without duplicates', async () => {
      const w = await wire();
      const room = await w.services.rooms.create(alice, { name: 'lost event' });
      const stream = await openStream(mode, w.services.events, alice, room.id, { kind: 'messages' });
      const pending = nextOf(stream, 3000, 'the lost message');
      await sendSilently(w, room.id, 'alice', 'nobody heard me');
      await w.services.events.checkPositions();
      expect(await pending).toMatchObject({ done: false, value: { type: 'MessageAdded', message: { seq: 1, text: 'nobody heard me' } } });
      await w.services.messages.send(alice, { roomId: room.id, text: 'heard' });
      expect(seqsOf(await take(stream, 1))).toEqual([2]);
      await w.services.events.checkPositions();
      await w.services.messages.send(alice, { roomId: room.id, text: 'still one each' });
      expect(seqsOf(await take(stream, 1))).toEqual([3]);
      await stream.return(undefined);
    });

    it('should deliver it on its own when the periodic check is on', async () => {
      const w = await wire({ positionCheckMs: 50 });
      const room = await w.services.rooms.create(alice, { name: 'timer' });
      const stream = await openStream(mode, w.services.events, alice, room.id, { kind: 'all' });
      await sendSilently(w, room.id, 'alice', 'found by the timer');
      expect(seqsOf(await take(stream, 1, 3000))).toEqual([1]);
      await stream.return(undefined);
    });

    it('should deliver what was sent while the subscriber connection was down, once it is back', async () => {
      const w = await wire();
      const room = await w.services.rooms.create(alice, { name: 'reconnect', memberIds: ['bob'] });
      const stream = await openStream(mode, w.services.events, alice, room.id, { kind: 'messages' });
      const back = deferred<void>();
      const off = w.pubsub.onResubscribed(() => back.resolve());
      const closed = deferred<void>();
      w.redis.subscriber.once('close', () => closed.resolve());
      w.redis.subscriber.disconnect(true);
      await withTimeout(closed.promise, 2000, 'the subscriber connection to close');
      // It reconnects after the retry strategy's first delay (100 ms): the send below falls in the gap.
      expect(w.redis.subscriber.status).not.toBe('ready');
      // Published while nobody here listens: pub/sub drops it.
      await w.services.messages.send(bob, { roomId: room.id, text: 'during the outage' });
      await withTimeout(back.promise, 5000, 'the subscriber to reconnect');
      off();
      expect(await take(stream, 1)).toMatchObject([{ type: 'MessageAdded', message: { seq: 1, text: 'during the outage' } }]);
      // Live again after the reconnect.
      await w.services.messages.send(bob, { roomId: room.id, text: 'after' });
      expect(seqsOf(await take(stream, 1))).toEqual([2]);
      await stream.return(undefined);
    });
  });

  describe('when the position check runs while the memberships of a room do not change', () => {
    it('should read each membership once, then one command per room, and again only after a removal', async () => {
      const w = await wire();
      const members = ['m1', 'm2', 'm3', 'm4'];
      const room = await w.services.rooms.create(alice, { name: 'versions', memberIds: members });
      const streams = await Promise.all(members.map((id) => openStream(mode, w.services.events, viewer(id), room.id, { kind: 'messages' })));
      const commands: string[][] = [];
      const monitor = await monitorRedis(sharedRedisUrl(), (args) => {
        if (args.some((a) => a.startsWith(w.prefix))) commands.push(args);
      });
      // MONITOR shows commands in the order Redis ran them, some time after: a GET of a marker key
      // fences off what came before (a script's inner commands too).
      const isMarker = (c: string[], name: string) => c[0]?.toLowerCase() === 'get' && (c[1] ?? '').endsWith(name);
      const fence = async (name: string) => {
        await w.redis.command.get(name);
        await waitFor(() => commands.some((c) => isMarker(c, name)), 2000, `${name} to show in MONITOR`);
      };
      /** The reads one check sent. */
      const checkCommands = async () => {
        await fence('start-of-check');
        commands.length = 0;
        await w.services.events.checkPositions();
        await fence('end-of-check');
        const names = commands.slice(0, commands.findIndex((c) => isMarker(c, 'end-of-check'))).map((c) => c[0]?.toLowerCase());
        return names.filter((n) => n === 'hmget' || n === 'zscore');
      };
      try {
        // New streams: their memberships are read once.
        expect((await checkCommands()).sort()).toEqual(['hmget', 'zscore', 'zscore', 'zscore', 'zscore']);
        // Nothing changed: one read of the room, none per stream.
        expect(await checkCommands()).toEqual(['hmget']);
        expect(await checkCommands()).toEqual(['hmget']);
        // A removal whose MemberLeft is lost (the script's writes, no event): the version moved, so
        // the room's memberships are read again and m2's stream ends.
        const removed = w.scripts.get('removeMember');
        const [status] = (await removed([roomKeys.room(room.id), roomKeys.members(room.id)], ['alice', 'm2'])) as [number];
        expect(status).toBe(0);
        expect((await checkCommands()).sort()).toEqual(['hmget', 'zscore', 'zscore', 'zscore', 'zscore']);
        expect(await withTimeout(streams[1]!.next(), 2000, "m2's stream to end")).toEqual({ done: true, value: undefined });
        expect(await checkCommands()).toEqual(['hmget']);
      } finally {
        monitor.stop();
        await Promise.all(streams.map((s) => s.return(undefined)));
      }
    });
  });
});
}
