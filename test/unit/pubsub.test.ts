import { describe, expect, it } from 'vitest';
import type { PubSubListener } from '../../src/infra/pubsub.js';
import type { RoomEventPayload } from '../../src/topics.js';
import { waitFor } from '../helpers/clients.js';
import { uniquePrefix } from '../helpers/server.js';
import { wire } from '../helpers/wiring.js';

/**
 * The pub/sub wrapper's listener objects (attach/detach) on real Redis, two wirings as two
 * instances: one event-target callback per channel hands each event to the channel's listeners in
 * order, a throwing listener does not stop the others, and the channel is unsubscribed in Redis
 * with its last listener, whichever way (listen or attach) they came.
 */

const typing = (roomId: string, n: number): RoomEventPayload => ({ type: 'TypingChanged', roomId, userIds: [`u${n}`] });

class Recorder implements PubSubListener<RoomEventPayload> {
  seen: string[] = [];
  constructor(
    readonly name: string,
    private readonly log: string[],
    private readonly throws = false,
  ) {}
  onEvent(ev: RoomEventPayload): void {
    const label = ev.type === 'TypingChanged' ? (ev.userIds[0] as string) : ev.type;
    this.seen.push(label);
    this.log.push(`${this.name}:${label}`);
    if (this.throws) throw new Error('listener failure');
  }
}

const subscribers = async (w: Awaited<ReturnType<typeof wire>>, roomId: string) => {
  const [, count] = (await w.redis.command.pubsub('NUMSUB', w.pubsub.channelOf('room', roomId))) as [string, number];
  return count;
};

describe('pub/sub listener objects', () => {
  it('should hand every event to each listener of the channel in attach order, past a throwing one, once each', async () => {
    const prefix = uniquePrefix('pubsub');
    const [a, b] = [await wire({ prefix }), await wire({ prefix })];
    const roomId = 'room-1';
    const log: string[] = [];
    const first = new Recorder('first', log, true);
    const second = new Recorder('second', log);
    await Promise.all([a.pubsub.attach('room', roomId, first), a.pubsub.attach('room', roomId, second)]);
    // Attaching again changes nothing (no second delivery).
    await a.pubsub.attach('room', roomId, second);
    for (let n = 1; n <= 3; n++) b.pubsub.publish('room', roomId, typing(roomId, n));
    await waitFor(() => second.seen.length === 3, 5000, 'three events');
    expect(log).toEqual(['first:u1', 'second:u1', 'first:u2', 'second:u2', 'first:u3', 'second:u3']);
    expect(a.pubsub.stats().listeners).toBe(2);
  });

  it('should stop delivering to a detached listener and unsubscribe with the last one, listen and attach alike', async () => {
    const prefix = uniquePrefix('pubsub');
    const [a, b] = [await wire({ prefix }), await wire({ prefix })];
    const roomId = 'room-2';
    const log: string[] = [];
    const obj = new Recorder('obj', log);
    const fnSeen: string[] = [];
    await a.pubsub.attach('room', roomId, obj);
    const fn = a.pubsub.listen('room', roomId, (ev) => fnSeen.push(ev.type));
    await fn.ready;
    expect(await subscribers(a, roomId)).toBe(1);

    b.pubsub.publish('room', roomId, typing(roomId, 1));
    await waitFor(() => obj.seen.length === 1 && fnSeen.length === 1, 5000, 'the first event');

    a.pubsub.detach('room', roomId, obj);
    a.pubsub.detach('room', roomId, obj); // twice: nothing
    b.pubsub.publish('room', roomId, typing(roomId, 2));
    await waitFor(() => fnSeen.length === 2, 5000, 'the second event');
    expect(obj.seen).toEqual(['u1']);
    expect(await subscribers(a, roomId)).toBe(1);

    fn.remove();
    fn.remove();
    await waitFor(async () => (await subscribers(a, roomId)) === 0, 5000, 'the channel unsubscribed');
    expect(a.pubsub.stats().listeners).toBe(0);

    // Attaching again subscribes again, and events flow.
    await a.pubsub.attach('room', roomId, obj);
    expect(await subscribers(a, roomId)).toBe(1);
    b.pubsub.publish('room', roomId, typing(roomId, 3));
    await waitFor(() => obj.seen.length === 2, 5000, 'the third event');
    expect(obj.seen).toEqual(['u1', 'u3']);
  });
});
