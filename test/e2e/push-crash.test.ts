import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedisServer } from '../../src/infra/embedded-redis.js';
import { deliveryId, pushKeys } from '../../src/push/push.keys.js';
import { CreateRoomDocument, SendMessageDocument } from '../generated/graphql.js';
import { gqlOk, withTimeout } from '../helpers/clients.js';
import { deletePrefixed } from '../helpers/lua.js';
import { killAllChildren, runToExit, spawnChild, startServer } from '../helpers/process.js';
import { pushEnv, pushQueues, startReceiver, type Receiver } from '../helpers/push.js';
import { sharedRedisUrl, startInstance, TEST_JWT_SECRET, tokenFor, uniquePrefix, type TestInstance } from '../helpers/server.js';

/**
 * Crash safety of push deliveries: an instance SIGKILLed while its worker is in the middle of a
 * delivery (the webhook request sent, no answer yet) loses nothing: bullmq's stalled-job recovery
 * hands the job to a worker elsewhere, which delivers it with the same Idempotency-Key. And a
 * Redis SIGKILLed and restarted (AOF on, as the README asks) keeps the jobs it acknowledged.
 * Deliveries can also be left to a separate `npm run worker` process.
 */

let receiver: Receiver;
const stops: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  receiver = await startReceiver();
});

afterEach(async () => {
  await killAllChildren();
  // In order: instances and queues first (unshifted), their Redis last (pushed); stopping a Redis
  // under an instance that is still stopping is what an outage looks like, not a teardown.
  for (const stop of stops.splice(0)) await stop();
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

describe('when Redis is SIGKILLed and restarted (appendonly yes) while a delivery waits', () => {
  it('should keep the job, and the instance should deliver it once Redis is back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-push-aof-'));
    let redis = await startRedisServer({ dir: join(dir, 'redis'), appendOnly: true });
    stops.push(async () => {
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const prefix = uniquePrefix('push-aof');
    // The collapse window holds the delivery for a minute: it is in Redis, not in flight.
    const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, ...pushEnv(receiver.url, { PUSH_COLLAPSE_WINDOW_MS: '60000' }) };
    const app = await startInstance(env);
    stops.unshift(() => app.stop());
    const alice = await tokenFor('alice');
    const { createRoom } = await gqlOk(app.url, CreateRoomDocument, { input: { name: 'aof', memberIds: ['erin'] } }, alice);
    const { sendMessage } = await gqlOk(app.url, SendMessageDocument, { input: { roomId: createRoom.id, text: 'kept on disk' } }, alice);
    const id = deliveryId(sendMessage.id, 'erin');
    const before = pushQueues(prefix, redis.url);
    expect(await (await before.job(id)).getState()).toBe('delayed');
    await before.close();

    const port = Number(new URL(redis.url).port);
    process.kill(redis.pid, 'SIGKILL');
    await redis.stop();
    redis = await startRedisServer({ dir: join(dir, 'redis'), appendOnly: true, port });

    const after = pushQueues(prefix, redis.url);
    stops.unshift(() => after.close());
    const job = await after.job(id);
    expect(await job.getState()).toBe('delayed');
    await job.promote();
    const [push] = await receiver.waitFor('erin', 1, 20_000);
    expect(push?.body).toMatchObject({ id, messageId: sendMessage.id, preview: 'kept on disk' });
    expect((await after.finished(id)).returnvalue).toEqual({ status: 'delivered', messageCount: 1 });
  });
});

describe('when instances leave deliveries to a separate worker process (PUSH_CONCURRENCY=0, npm run worker)', () => {
  it('should deliver what the instances enqueued once the worker runs, and stop on SIGTERM with exit 0', async () => {
    const prefix = uniquePrefix('push-worker');
    const env = { REDIS_URL: sharedRedisUrl(), REDIS_KEY_PREFIX: prefix, ...pushEnv(receiver.url) };
    stops.push(() => deletePrefixed(prefix));
    const app = await startInstance({ ...env, PUSH_CONCURRENCY: '0' });
    stops.unshift(() => app.stop());
    const alice = await tokenFor('alice');
    const { createRoom } = await gqlOk(app.url, CreateRoomDocument, { input: { name: 'offload', memberIds: ['frank'] } }, alice);
    const { sendMessage } = await gqlOk(app.url, SendMessageDocument, { input: { roomId: createRoom.id, text: 'for the worker' } }, alice);
    // The instance only enqueued: the entry waits in the outbox, no job exists.
    const queues = pushQueues(prefix);
    stops.unshift(() => queues.close());
    expect(await queues.redis.xlen(`${prefix}${pushKeys.outbox()}`)).toBe(1);
    expect(await queues.queue.getJob(deliveryId(sendMessage.id, 'frank'))).toBeUndefined();

    const worker = spawnChild(process.execPath, ['--import', 'tsx', 'src/worker.ts'], { NODE_ENV: 'test', LOG_LEVEL: 'info', ...env });
    await worker.waitForLine(/push worker started/);
    const [push] = await receiver.waitFor('frank', 1);
    expect(push?.body).toMatchObject({ id: deliveryId(sendMessage.id, 'frank'), preview: 'for the worker' });

    worker.kill('SIGTERM');
    expect(await withTimeout(worker.exited, 10_000, 'the worker to exit')).toEqual({ code: 0, signal: null });
  });

  it('should refuse to start without push settings or REDIS_URL, one stderr line each', async () => {
    const r = await runToExit(process.execPath, ['--import', 'tsx', 'src/worker.ts'], { NODE_ENV: 'test' });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      'switchboard-worker: PUSH_WEBHOOK_URL: not set, so there is nothing to deliver',
      "switchboard-worker: REDIS_URL: required (the worker serves the instances' Redis; it starts none)",
    ]);
  });
});
