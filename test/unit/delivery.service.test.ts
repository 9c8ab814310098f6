import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import type { StreamItem } from '../../src/events/events.service.js';
import { encodeMessageId } from '../../src/messages/message-id.js';
import { messageKeys } from '../../src/messages/messages.keys.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import type { Services } from '../../src/services.js';
import type { Viewer } from '../../src/users/users.models.js';
import { waitFor } from '../helpers/clients.js';
import { STREAM_MODES, drain, nextOf, openStream, sendAndAwaitEvents, range, seqsOf, take, viewer, wire, type Stream } from '../helpers/wiring.js';

/**
 * Delivery guarantees of the events service on real Redis: cursors that can no longer be honoured
 * exactly (history reset, retention), history lost under an open stream, revocations whose
 * MemberLeft event was lost, and slow streams that fall behind retention. Wired as src/app.ts
 * wires it (two connections, the script loader, the pub/sub wrapper, createServices), each test
 * with its own key prefix. The periodic position check is off: tests call checkPositions().
 */

const alice = viewer('alice');
const bob = viewer('bob');
const carol = viewer('carol');

type StreamErrorItem = Extract<StreamItem, { type: 'StreamError' }>;






/** Expects `p` to reject with an AppError carrying `code` and `reason`. */
async function expectCursorExpired(p: Promise<unknown>, reason: string) {
  const err = await p.then(
    (v) => {
      if (v && typeof (v as Stream).return === 'function') void (v as Stream).return(undefined);
      throw new Error('expected CURSOR_EXPIRED, the stream opened');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  expect((err as AppError).extensions).toMatchObject({ code: 'CURSOR_EXPIRED', reason });
}

/** Sends `n` messages one after the other; returns them in seq order. */
async function sendMany(services: Services, sender: Viewer, roomId: string, n: number) {
  const sent = [];
  for (let i = 1; i <= n; i++) sent.push(await services.messages.send(sender, { roomId, text: `m${i}` }));
  return sent;
}

// Every test runs in each stream mode: as async generators, and with a WebSocket-like sink (the pump), run by the sink or iterated.
for (const mode of STREAM_MODES) {
describe(`room streams (${mode})`, () => {
  describe('when a stream opens with an `after` cursor that cannot be honoured exactly', () => {
    it('should refuse a cursor of another history epoch with CURSOR_EXPIRED (reason HISTORY_RESET) and leave nothing behind', async () => {
      const { services, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'reset', memberIds: ['bob'] });
      await sendMany(services, bob, room.id, 3);
      // Seq 2 exists in this room, but in another history: it is not the same message.
      const stale = encodeMessageId(room.id, 2, 'oldEpoch');
      for (const kind of ['messages', 'all'] as const) {
        await expectCursorExpired(openStream(mode, services.events, alice, room.id, { after: stale, kind }), 'HISTORY_RESET');
      }
      expect(services.events.openCount()).toBe(0);
      expect(pubsub.stats().listeners).toBe(0);
    });

    it('should refuse a cursor into a room whose keys are gone with CURSOR_EXPIRED (reason HISTORY_RESET), not NOT_FOUND', async () => {
      const { services, redis, pubsub } = await wire();
      const room = await services.rooms.create(alice, { name: 'wiped' });
      const [first] = await sendMany(services, alice, room.id, 2);
      await redis.command.del(roomKeys.room(room.id), roomKeys.members(room.id), messageKeys.messages(room.id));
      await expectCursorExpired(
        openStream(mode, services.events, alice, room.id, { after: encodeMessageId(room.id, first!.seq, first!.epoch), kind: 'messages' }),
        'HISTORY_RESET',
      );
      expect(pubsub.stats().listeners).toBe(0);
    });

    it('should refuse a cursor older than the retained history with CURSOR_EXPIRED (reason RETENTION)', async () => {
      const { services, pubsub } = await wire({ retention: 5 });
      const room = await services.rooms.create(alice, { name: 'retention' });
      const sent = await sendMany(services, alice, room.id, 12);
      // Seqs 8..12 are kept: after seq 2 would have to replay 3..7, which are gone.
      const after = encodeMessageId(room.id, sent[1]!.seq, sent[1]!.epoch);
      await expectCursorExpired(openStream(mode, services.events, alice, room.id, { after, kind: 'messages' }), 'RETENTION');
      // One short of the window (seq 6 would need 7) is refused too.
      const justTooOld = encodeMessageId(room.id, 6, room.epoch);
      await expectCursorExpired(openStream(mode, services.events, alice, room.id, { after: justTooOld, kind: 'all' }), 'RETENTION');
      expect(services.events.openCount()).toBe(0);
      expect(pubsub.stats().listeners).toBe(0);
    });

    it('should replay from the oldest kept message when `after` is the one just before it, then go live', async () => {
      const { services } = await wire({ retention: 5 });
      const room = await services.rooms.create(alice, { name: 'edge of retention' });
      const sent = await sendMany(services, alice, room.id, 12);
      const stream = await openStream(mode, services.events, alice, room.id, {
        after: encodeMessageId(room.id, 7, sent[6]!.epoch),
        kind: 'messages',
      });
      expect(seqsOf(await take(stream, 5))).toEqual(range(8, 12));
      await services.messages.send(alice, { roomId: room.id, text: 'live' });
      expect(seqsOf(await take(stream, 1))).toEqual([13]);
      await stream.return(undefined);
    });
  });

  describe('when a room’s history is lost under an open stream', () => {
    it('should end the stream with CURSOR_EXPIRED at the next position check once the room’s keys are deleted', async () => {
      const { services, redis } = await wire();
      const room = await services.rooms.create(alice, { name: 'flushed', memberIds: ['bob'] });
      await services.messages.send(bob, { roomId: room.id, text: 'before' });
      const stream = await openStream(mode, services.events, alice, room.id, { kind: 'messages' });
      const pending = nextOf(stream, 3000, 'the end of the stream of a deleted room');
      await redis.command.del(roomKeys.room(room.id), roomKeys.members(room.id), messageKeys.messages(room.id));
      await services.events.checkPositions();
      const r = await pending;
      expect(r.done).toBe(false);
      const item = r.value as StreamErrorItem;
      expect(item.type).toBe('StreamError');
      expect(item.error.extensions).toMatchObject({ code: 'CURSOR_EXPIRED', reason: 'HISTORY_RESET' });
      expect((await nextOf(stream)).done).toBe(true);
      expect(services.events.openCount()).toBe(0);
    });

    it('should end the stream with CURSOR_EXPIRED at the next position check once the room’s epoch changed', async () => {
      const { services, redis } = await wire();
      const room = await services.rooms.create(alice, { name: 'new epoch' });
      await services.messages.send(alice, { roomId: room.id, text: 'old history' });
      const stream = await openStream(mode, services.events, alice, room.id, { kind: 'all' });
      const pending = nextOf(stream, 3000, 'the end of the stream of a reset room');
      await redis.command.hset(roomKeys.room(room.id), 'epoch', 'reset01');
      await services.events.checkPositions();
      const r = await pending;
      expect(r.value).toMatchObject({ type: 'StreamError' });
      expect((r.value as StreamErrorItem).error.extensions).toMatchObject({ code: 'CURSOR_EXPIRED', reason: 'HISTORY_RESET' });
      expect((await nextOf(stream)).done).toBe(true);
    });
  });

  describe('when a member is removed and the MemberLeft event is lost', () => {
    it('should end that member’s streams quietly at the next position check and keep the others open', async () => {
      const { services, redis } = await wire();
      const room = await services.rooms.create(alice, { name: 'silent kick', memberIds: ['bob', 'carol'] });
      const bobMessages = await openStream(mode, services.events, bob, room.id, { kind: 'messages' });
      const bobEvents = await openStream(mode, services.events, bob, room.id, { kind: 'all' });
      const carolMessages = await openStream(mode, services.events, carol, room.id, { kind: 'messages' });
      const pendingMessages = nextOf(bobMessages, 3000, 'the end of bob’s messages stream');
      const pendingEvents = nextOf(bobEvents, 3000, 'the end of bob’s events stream');

      // Straight in Redis: no script, no MemberLeft publish.
      expect(await redis.command.zrem(roomKeys.members(room.id), 'bob')).toBe(1);
      await services.events.checkPositions();
      // Done, with no error item: a revocation is a completion, not a failure.
      expect(await pendingMessages).toEqual({ value: undefined, done: true });
      expect(await pendingEvents).toEqual({ value: undefined, done: true });
      expect(services.events.openCount()).toBe(1);

      await services.messages.send(alice, { roomId: room.id, text: 'carol still hears this' });
      expect(await take(carolMessages, 1)).toMatchObject([{ type: 'MessageAdded', message: { seq: 1, text: 'carol still hears this' } }]);
      await carolMessages.return(undefined);
    });
  });

  describe('when a stream is never read while its room trims past its position', () => {
    it('should end with CURSOR_EXPIRED (reason RETENTION) when read, never skipping messages silently', async () => {
      const { services, pubsub } = await wire({ retention: 5, bufferSize: 2 });
      const room = await services.rooms.create(alice, { name: 'slow and trimmed', memberIds: ['bob'] });
      const stream = await openStream(mode, services.events, alice, room.id, { kind: 'messages' });

      // Every event reached this instance (so the buffer overflowed).
      await sendAndAwaitEvents(pubsub, room.id, 20, () => sendMany(services, bob, room.id, 20));

      const items = await drain(stream);
      const last = items[items.length - 1];
      expect(last?.type, `items: ${JSON.stringify(items.map((i) => i.type))}`).toBe('StreamError');
      expect((last as StreamErrorItem).error.extensions).toMatchObject({ code: 'CURSOR_EXPIRED', reason: 'RETENTION' });
      // Whatever came before the error is a gap-free run from seq 1.
      const seqs = seqsOf(items.slice(0, -1));
      expect(seqs).toEqual(range(1, seqs.length));
      await waitFor(() => services.events.openCount() === 0, 1000, 'the stream to be released');
      expect(pubsub.stats().listeners).toBe(0);
    });
  });
});
}
