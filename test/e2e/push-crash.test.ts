import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { deliveryId } from '../../src/push/push.keys.js';
import { CreateRoomDocument, SendMessageDocument } from '../generated/graphql.js';
import { gqlOk, withTimeout } from '../helpers/clients.js';
import { deletePrefixed } from '../helpers/lua.js';
import { killAllChildren, startServer } from '../helpers/process.js';
import { pushEnv, pushQueues, startReceiver, type Receiver } from '../helpers/push.js';
import { sharedRedisUrl, startInstance, TEST_JWT_SECRET, tokenFor, uniquePrefix, type TestInstance } from '../helpers/server.js';

/**
 * Crash safety of push deliveries: an instance SIGKILLed while its worker is in the middle of a
 * delivery (the webhook request sent, no answer yet) loses nothing: bullmq's stalled-job recovery
 * hands the job to a worker elsewhere, which delivers it with the same Idempotency-Key.
 */

let receiver: Receiver;
const stops: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  receiver = await startReceiver();
});

afterEach(async () => {
  await killAllChildren();
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

afterAll(async () => {
  await receiver.close();
});

describe('when the instance running a delivery is killed (SIGKILL) mid-request', () => {
  it('should lose nothing: another instance takes the stalled job over and completes it', async () => {
    const prefix = uniquePrefix('push-crash');
    // A worker silent for 1.5 s loses its job (30 s by default).
    const env = { REDIS_KEY_PREFIX: prefix, ...pushEnv(receiver.url, { PUSH_STALLED_TIMEOUT_MS: '1500' }) };
    const queues = pushQueues(prefix);
    stops.push(() => queues.close(), () => deletePrefixed(prefix));

    const a = await startServer({ REDIS_URL: sharedRedisUrl(), JWT_SECRET: TEST_JWT_SECRET, ...env });
    const alice = await tokenFor('alice');
    const { createRoom } = await gqlOk(a.url, CreateRoomDocument, { input: { name: 'crash', memberIds: ['bob'] } }, alice);
    // The receiver never answers the first request: the delivery is in flight when A dies.
    receiver.answer('bob', 'hold', 200);
    const { sendMessage } = await gqlOk(a.url, SendMessageDocument, { input: { roomId: createRoom.id, text: 'survive this' } }, alice);
    const id = deliveryId(sendMessage.id, 'bob');
    const [first] = await receiver.waitFor('bob', 1);
    a.kill('SIGKILL');
    expect(await withTimeout(a.exited, 5000, 'the SIGKILLed server to exit')).toEqual({ code: null, signal: 'SIGKILL' });
    const job = await queues.job(id);
    expect(await job.getState()).toBe('active');

    // Another instance (started only now, so nothing but the recovery can hand it the job).
    const b: TestInstance = await startInstance(env);
    stops.unshift(() => b.stop());
    const [, second] = await receiver.waitFor('bob', 2, 20_000);
    expect(second?.headers['idempotency-key']).toBe(id);
    expect(first?.headers['idempotency-key']).toBe(id);
    expect(second?.body).toEqual(first?.body);
    const done = await queues.finished(id);
    expect(done.returnvalue).toEqual({ status: 'delivered', messageCount: 1 });
    expect(receiver.of('bob')).toHaveLength(2);
  });
});
