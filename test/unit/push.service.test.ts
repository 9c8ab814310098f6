import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeMessageId as encode } from '../../src/messages/message-id.js';
import { deliveryId, OUTBOX_GROUP, pushKeys } from '../../src/push/push.keys.js';
import { countRoundTrips } from '../../bench/lib.js';
import { waitFor } from '../helpers/clients.js';
import { pushEnv, pushQueues, startReceiver, type Receiver } from '../helpers/push.js';
import { viewer, wire } from '../helpers/wiring.js';

/**
 * The push service on real Redis, wired as an instance wires it: what it adds to the send path
 * (round trips counted on the command connection's socket), the take-over of outbox entries whose
 * reader died, and the retention of dead letters.
 */

const alice = viewer('alice');
let receiver: Receiver;

beforeAll(async () => {
  receiver = await startReceiver();
});

afterAll(async () => {
  await receiver.close();
});

describe('when a message is sent', () => {
  it.each([
    ['without push', {}],
    ['with push', pushEnv('http://127.0.0.1:9/never')],
  ])('should cost one round trip %s: the send script runs the hooks’ commands and the PUBLISH itself', async (label, env) => {
    const w = await wire({ env });
    const room = await w.services.rooms.create(alice, { name: `rt-${label}`, memberIds: ['bob', 'carol'] });
    // Warm-up: the first EVALSHA of each script may need its EVAL fallback.
    await w.services.messages.send(alice, { roomId: room.id, text: 'warm-up' });
    const trips = countRoundTrips(w.redis.command);
    await w.services.messages.send(alice, { roomId: room.id, text: 'counted' });
    trips.restore();
    expect(trips.count).toBe(1);
    // With push, each message left one outbox entry; without, no outbox at all.
    expect(await w.redis.command.xlen(pushKeys.outbox())).toBe(w.services.push.configured ? 2 : 0);
  });
});

describe('when a worker process dies after reading outbox entries but before enqueuing them', () => {
  it('should have another take them over once they are idle for the stalled timeout, and deliver', async () => {
    const w = await wire({ env: pushEnv(receiver.url, { PUSH_STALLED_TIMEOUT_MS: '500' }) });
    const queues = pushQueues(w.prefix);
    try {
      const room = await w.services.rooms.create(alice, { name: 'ghost', memberIds: ['bob-ghost'] });
      const message = await w.services.messages.send(alice, { roomId: room.id, text: 'taken over' });
      // A consumer that reads the entry and dies without acknowledging it.
      const redis = w.redis.command;
      await redis.call('XGROUP', 'CREATE', `${w.prefix}${pushKeys.outbox()}`, OUTBOX_GROUP, '0', 'MKSTREAM');
      const read = (await redis.xreadgroup('GROUP', OUTBOX_GROUP, 'ghost', 'COUNT', 10, 'STREAMS', pushKeys.outbox(), '>')) as unknown[];
      expect(read).toHaveLength(1);

      await w.services.push.start();
      const [push] = await receiver.waitFor('bob-ghost', 1);
      expect(push?.body.id).toBe(deliveryId(encode(room.id, message.seq, message.epoch), 'bob-ghost'));
      const pending = (await redis.xpending(pushKeys.outbox(), OUTBOX_GROUP)) as [number, ...unknown[]];
      expect(pending[0]).toBe(0);
      expect(await redis.xlen(pushKeys.outbox())).toBe(0);
    } finally {
      await queues.close();
    }
  });
});

describe('when dead letters outlive PUSH_DEAD_RETENTION_SECONDS', () => {
  it('should drop them', async () => {
    const w = await wire({ env: pushEnv(receiver.url, { PUSH_DEAD_RETENTION_SECONDS: '2', PUSH_STALLED_TIMEOUT_MS: '500' }) });
    const queues = pushQueues(w.prefix);
    try {
      await w.services.push.start();
      receiver.answer('bob-expires', 410);
      const room = await w.services.rooms.create(alice, { name: 'expiring', memberIds: ['bob-expires'] });
      const message = await w.services.messages.send(alice, { roomId: room.id, text: 'gone soon' });
      const id = deliveryId(encode(room.id, message.seq, message.epoch), 'bob-expires');
      const dead = await waitFor(() => queues.dead.getJob(id), 5000, 'the dead letter');
      expect(dead.data.error).toBe('webhook answered HTTP 410');
      // The periodic sweep (every 250 ms here) removes it once it is 2 s old.
      await waitFor(async () => (await queues.dead.getJob(id)) === undefined, 10_000, 'the dead letter to expire');
      expect(Date.now() - dead.timestamp).toBeGreaterThanOrEqual(2000);
    } finally {
      await queues.close();
    }
  });
});
