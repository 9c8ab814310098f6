import type { ChainableCommander, Redis } from 'ioredis';
import { Queue, UnrecoverableError, Worker, type Job, type JobsOptions } from 'bullmq';
import type { PushConfig } from '../config.js';
import { badInput, forbidden, notConfigured, unavailable } from '../errors.js';
import type { Clock } from '../infra/clock.js';
import type { Logger } from '../infra/logger.js';
import { closeConnection, execPipeline, settlesWithin } from '../infra/redis.js';
import { repeatUnlessBusy } from '../infra/repeat.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { decodeMessageId, encodeMessageId, type MessageRef } from '../messages/message-id.js';
import { parseMessage } from '../messages/messages.service.js';
import type { MessageModel } from '../messages/messages.models.js';
import { presenceKeys } from '../presence/presence.keys.js';
import { receiptKeys } from '../receipts/receipts.keys.js';
import type { UnreadState } from '../receipts/receipts.service.js';
import { roomKeys } from '../rooms/rooms.keys.js';
import { userKeys } from '../users/users.keys.js';
import type { Viewer } from '../users/users.models.js';
import type { UsersService } from '../users/users.service.js';
import { claimPushKeys, DEAD_QUEUE, deliveryId, PUSH_QUEUE, pushKeys, pushSummaryKeys, queuePrefix } from './push.keys.js';
import type {
  DeadDeliveryData,
  DeadDeliveryModel,
  DeliveryData,
  DeliveryResult,
  DeliveryStatsModel,
  PushPayload,
} from './push.models.js';
import { createOutboxConsumer, type OutboxEntry } from './push.outbox.js';
import { postDelivery, retryDelay } from './push.webhook.js';
import { pipelineOf } from '../infra/direct-pipeline.js';
import { SENT, type DeferredCommands } from '../infra/deferred-commands.js';
import type { SendingMessage } from '../messages/messages.models.js';

/** Dependencies of {@link createPushService}. */
export interface PushServiceDeps {
  /** The command connection (fails fast): the send hook, the fan-out's reads, the delivery's scripts. */
  redis: Redis;
  scripts: ScriptRegistry;
  /** Push settings; null when PUSH_WEBHOOK_URL is unset (no hook, no queue, no connection). */
  config: PushConfig | null;
  redisKeyPrefix: string;
  /** Opens a connection that waits through outages (bullmq's, and the outbox's blocking reader). */
  openConnection(name: string, opts?: { keyPrefix: boolean }): Redis;
  users: UsersService;
  /** Unread state of one user in many rooms (receipts), for badges. */
  unread(userId: string, roomIds: readonly string[]): Promise<UnreadState[]>;
  clock: Clock;
  logger: Logger;
  instanceId: string;
  /** Bound on the waits of operator requests (`UNAVAILABLE` past it, never a hang). */
  requestTimeoutMs: number;
  /** How long `stop()` lets a delivery in flight finish before aborting it (it is retried later). */
  drainMs: number;
}

/** Push deliveries: the send hook, the queue and its workers, operator views. */
export type PushService = ReturnType<typeof createPushService>;

/** Characters of a message's text a push carries. */
export const PREVIEW_CHARS = 140;
/** Completed jobs are kept this long, so a fan-out repeated within it (an outbox entry taken over) adds nothing. */
const KEEP_COMPLETED_SECONDS = 3600;
/** Jobs added per bullmq call. */
const ADD_CHUNK = 500;
/** Dead deliveries moved, retried or listed per call at most. */
const MAX_BATCH = 1000;

/** Claim statuses of claimPush-2.lua, in order. */
const CLAIM_SKIPS = [null, 'online', 'covered', 'read'] as const;

const pushNotConfigured = () =>
  notConfigured('Push deliveries are not configured: set PUSH_WEBHOOK_URL and PUSH_WEBHOOK_SECRET');

/** The first `max` characters of `text` (code points, not UTF-16 units), whitespace folded, "…" when cut. */
export function preview(text: string, max = PREVIEW_CHARS): string {
  const chars = Array.from(text.replace(/\s+/g, ' ').trim());
  return chars.length <= max ? chars.join('') : `${chars.slice(0, max - 1).join('')}…`;
}

/** How long each step of `stop()` may take beyond draining before its connections are dropped. */
const CLOSE_GRACE_MS = 2000;

/** Rejects with `UNAVAILABLE` when `p` takes longer than `ms` (bullmq waits for Redis; requests must not). */
async function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  if (!(await settlesWithin(p, ms))) throw unavailable();
  return p;
}

/**
 * Creates the push service. Sending a message adds one outbox entry to the send script's run (no
 * round trip of its own); worker processes turn each entry into one delivery job per member with
 * no live connection (job id from message and recipient), delayed by the collapse window; a job
 * then claims, in Lua, every message of the room its recipient has neither read nor been pushed,
 * so a burst makes one push, and POSTs it, signed, retrying with backoff; what fails for good is
 * moved to the dead-letter queue.
 */
export function createPushService(deps: PushServiceDeps) {
  const { redis, scripts, config: push, users, unread, clock, logger, instanceId, requestTimeoutMs, drainMs } = deps;
  const claimScript = scripts.get('claimPush');

  /** The queues exist only when push is configured; made on first use (an instance may only enqueue). */
  let queues: { connection: Redis; queue: Queue<DeliveryData>; dead: Queue<DeadDeliveryData> } | null = null;
  function getQueues() {
    if (!push) throw pushNotConfigured();
    if (!queues) {
      const connection = deps.openConnection('push-queue');
      const prefix = queuePrefix(deps.redisKeyPrefix);
      const queue = new Queue<DeliveryData>(PUSH_QUEUE, { connection, prefix, defaultJobOptions: jobOptions(push) });
      const dead = new Queue<DeadDeliveryData>(DEAD_QUEUE, { connection, prefix });
      for (const q of [queue, dead]) q.on('error', (err) => logger.warn({ err: err.message, queue: q.name }, 'push queue error'));
      queues = { connection, queue, dead };
    }
    return queues;
  }

  const requireAdmin = (viewer: Viewer) => {
    if (!viewer.roles.includes('admin')) throw forbidden('Push delivery operations need the admin role');
  };

  // ---------------------------------------------------------------------------------------------
  // Fan-out: outbox entries → delivery jobs

  /** One job per (message, member without a live connection, not the sender). */
  async function fanOut(entries: OutboxEntry[]): Promise<number> {
    if (!push) return 0;
    const messages = entries.flatMap((e) => {
      try {
        return [{ ...e, ref: decodeMessageId('messageId', e.messageId) }];
      } catch {
        logger.warn({ entry: e.id }, 'push outbox entry with an invalid message id dropped');
        return [];
      }
    });
    const roomIds = [...new Set(messages.map((m) => m.ref.roomId))];
    const membersPipeline = pipelineOf(redis);
    for (const roomId of roomIds) membersPipeline.zrange(roomKeys.members(roomId), 0, -1);
    const membersByRoom = new Map(
      (roomIds.length > 0 ? await execPipeline(membersPipeline) : []).map((r, i) => [roomIds[i] as string, r as string[]]),
    );
    const candidates = [...new Set([...membersByRoom.values()].flat())];
    const onlinePipeline = pipelineOf(redis);
    for (const userId of candidates) onlinePipeline.scard(presenceKeys.connections(userId));
    const connections = candidates.length > 0 ? await execPipeline(onlinePipeline) : [];
    const offline = new Set(candidates.filter((_, i) => Number(connections[i]) === 0));
    const jobs = messages.flatMap((m) =>
      (membersByRoom.get(m.ref.roomId) ?? [])
        .filter((userId) => userId !== m.senderId && offline.has(userId))
        .map((recipientId) => ({
          name: 'deliver',
          data: { messageId: m.messageId, recipientId },
          opts: { jobId: deliveryId(m.messageId, recipientId), delay: push.collapseWindowMs },
        })),
    );
    const { queue } = getQueues();
    for (let i = 0; i < jobs.length; i += ADD_CHUNK) await queue.addBulk(jobs.slice(i, i + ADD_CHUNK));
    return jobs.length;
  }

  // ---------------------------------------------------------------------------------------------
  // Delivery: one job

  const skipped = (reason: Extract<DeliveryResult, { status: 'skipped' }>['reason']): DeliveryResult => ({ status: 'skipped', reason });

  /** Claims the messages this job pushes (claimPush-2.lua), or says why it pushes nothing. */
  async function claim(job: Job<DeliveryData>, ref: MessageRef): Promise<NonNullable<DeliveryData['claim']> | DeliveryResult> {
    const { recipientId } = job.data;
    const [room, member, read] = await execPipeline(
      pipelineOf(redis)
        .hmget(roomKeys.room(ref.roomId), 'epoch', 'seq')
        .zscore(roomKeys.members(ref.roomId), recipientId)
        .hget(receiptKeys.ownMarks(ref.roomId), recipientId),
    );
    const [epoch, lastSeq] = room as (string | null)[];
    if (lastSeq == null || (epoch ?? '') !== ref.epoch) return skipped('gone');
    if (member === null) return skipped('left');
    const [status, from, to] = (await claimScript(claimPushKeys(recipientId), [
      ref.roomId,
      job.id as string,
      ref.seq,
      ref.epoch,
      Number(lastSeq),
      Number(read ?? 0),
    ])) as [number, number, number];
    const skip = CLAIM_SKIPS[status];
    return skip ? skipped(skip) : { from, to, epoch: ref.epoch };
  }

  async function deliver(job: Job<DeliveryData>, signal: AbortSignal): Promise<DeliveryResult> {
    if (!push) throw new UnrecoverableError('push is not configured');
    const { messageId, recipientId } = job.data;
    let ref: MessageRef;
    try {
      ref = decodeMessageId('messageId', messageId);
    } catch {
      throw new UnrecoverableError(`not a message id: ${messageId}`);
    }
    let range = job.data.claim;
    if (!range) {
      const claimed = await claim(job, ref);
      if ('status' in claimed) return claimed;
      range = claimed;
      // Saved with the job: a retry (or a retry from the dead letters) sends this same push.
      await job.updateData({ ...job.data, claim: range });
    }
    const pipeline = pipelineOf(redis);
    scripts.queue(pipeline, 'pushSummary', pushSummaryKeys(ref.roomId), [recipientId, range.from, range.to, range.epoch]);
    pipeline.smembers(userKeys.rooms(recipientId)).scard(presenceKeys.connections(recipientId));
    const [summary, roomIds, connections] = await execPipeline(pipeline);
    const [status, messageCount, latestJson, roomName] = summary as [number, number, string, string];
    if (status === 1) return skipped('gone');
    if (status === 2) return skipped('left');
    // A retry: they may have connected since the claim.
    if (Number(connections) > 0) return skipped('online');
    if (messageCount <= 0 || latestJson === '') return skipped('read');
    const latest: MessageModel = parseMessage(latestJson);
    const rooms = [...new Set([...(roomIds as string[]), ref.roomId])];
    const [states, [sender]] = await Promise.all([unread(recipientId, rooms), users.getMany([latest.senderId])]);
    const unreadCount = states.reduce((sum, s) => sum + s.unread, 0);
    const roomUnreadCount = states[rooms.indexOf(ref.roomId)]?.unread ?? 0;
    const senderName = sender?.name ?? latest.senderId;
    const payload: PushPayload = {
      id: job.id as string,
      recipientId,
      room: { id: ref.roomId, name: roomName },
      messageId: encodeMessageId(latest.roomId, latest.seq, latest.epoch),
      messageCount,
      sender: { id: latest.senderId, name: senderName },
      preview: preview(latest.text),
      title: messageCount === 1 ? `${senderName} in #${roomName}` : `${messageCount} new messages in #${roomName}`,
      unreadCount,
      roomUnreadCount,
      sentAt: new Date(latest.createdAt).toISOString(),
    };
    await postDelivery(push, job.id as string, payload, signal, clock.now());
    return { status: 'delivered', messageCount };
  }

  // ---------------------------------------------------------------------------------------------
  // Dead letters

  /** Moves a job that failed for good to the dead-letter queue (same id), then out of the main queue. */
  async function deadLetter(job: Job<DeliveryData>): Promise<void> {
    const { queue, dead } = getQueues();
    const { claim: range, messageId, recipientId } = job.data;
    await dead.add(
      'dead',
      {
        messageId,
        recipientId,
        ...(range ? { claim: range } : {}),
        error: job.failedReason || 'unknown error',
        attempts: job.attemptsMade,
        failedAt: job.finishedOn ?? clock.now(),
      },
      { jobId: job.id as string, removeOnComplete: true, removeOnFail: true },
    );
    await queue.remove(job.id as string);
    logger.warn({ delivery: job.id, recipientId, error: job.failedReason }, 'push delivery dead-lettered');
  }

  let worker: Worker<DeliveryData, DeliveryResult> | null = null;
  let outbox: ReturnType<typeof createOutboxConsumer> | null = null;
  let sweeper: NodeJS.Timeout | null = null;
  const shutdown = new AbortController();

  /**
   * The periodic chores of a worker process: take over outbox entries whose reader died, move jobs
   * left in `failed` (their process died before moving them) to the dead letters, and drop dead
   * letters older than the retention.
   */
  async function sweep(): Promise<{ reclaimed: number; deadLettered: number; expired: number }> {
    if (!push) return { reclaimed: 0, deadLettered: 0, expired: 0 };
    const { queue, dead } = getQueues();
    const reclaimed = outbox ? await outbox.reclaim() : 0;
    const failed = await queue.getFailed(0, MAX_BATCH - 1);
    for (const job of failed) await deadLetter(job);
    const expired = await dead.clean(push.deadRetentionSeconds * 1000, MAX_BATCH, 'wait');
    return { reclaimed, deadLettered: failed.length, expired: expired.length };
  }

  return {
    /** True when PUSH_WEBHOOK_URL is set. */
    configured: push !== null,

    /** Hook: a stored message joins the push outbox (one command deferred into the send script's run). */
    sentInPipeline(deferred: DeferredCommands, message: SendingMessage) {
      deferred.xadd(pushKeys.outbox(), '*', 'm', SENT.id, 'u', message.senderId);
    },

    /** Hook: a member who left has no push state in the room any more. */
    leftInPipeline(pipeline: ChainableCommander, roomId: string, userId: string) {
      pipeline.hdel(pushKeys.state(userId), roomId);
    },

    fanOut,
    sweep,

    /** Starts this process's workers and outbox reader (PUSH_CONCURRENCY > 0). */
    async start(): Promise<void> {
      if (!push || push.concurrency === 0 || worker) return;
      const { connection } = getQueues();
      outbox = createOutboxConsumer({
        redis,
        reader: deps.openConnection('push-outbox', { keyPrefix: true }),
        keyPrefix: deps.redisKeyPrefix,
        consumer: instanceId,
        handle: fanOut,
        reclaimIdleMs: push.stalledTimeoutMs,
        logger,
      });
      worker = new Worker<DeliveryData, DeliveryResult>(PUSH_QUEUE, (job) => deliver(job, shutdown.signal), {
        connection,
        prefix: queuePrefix(deps.redisKeyPrefix),
        concurrency: push.concurrency,
        lockDuration: push.stalledTimeoutMs,
        stalledInterval: push.stalledTimeoutMs,
        maxStalledCount: 2,
        settings: { backoffStrategy: (attemptsMade, _type, err) => retryDelay(push, attemptsMade, err) },
      });
      worker.on('error', (err) => logger.warn({ err: err.message }, 'push worker error'));
      worker.on('failed', (job, err) => {
        if (!job) return;
        // finishedOn is set only when the job failed for good (no retry left, or unrecoverable).
        if (!job.finishedOn) {
          logger.debug({ delivery: job.id, err: err.message, attempt: job.attemptsMade }, 'push delivery will be retried');
          return;
        }
        deadLetter(job).catch((e: Error) => logger.warn({ delivery: job.id, err: e.message }, 'dead-lettering failed: the sweep retries'));
      });
      await outbox.start();
      const every = Math.max(250, Math.min(60_000, Math.floor(push.stalledTimeoutMs / 2)));
      sweeper = repeatUnlessBusy(every, sweep, (err) => logger.debug({ err: err.message }, 'push sweep failed'));
    },

    /** Stops reading, lets deliveries in flight finish for `drainMs` (then aborts them: retried later), closes the queues. */
    async stop(): Promise<void> {
      if (sweeper) clearInterval(sweeper);
      sweeper = null;
      await outbox?.stop();
      // Each step is bounded: bullmq's connections wait for Redis, so during an outage a close would
      // never end; past its bound the connections are dropped (a job in flight is retried later).
      // (Not waited for either: bullmq's disconnect() waits on the same connections.)
      const bounded = async (what: string, p: Promise<unknown>, ms: number, drop: () => Promise<unknown>) => {
        if (await settlesWithin(p, ms)) return;
        logger.warn(`${what} did not close within ${ms} ms: disconnected`);
        drop().catch(() => undefined);
      };
      if (worker) {
        const w = worker;
        const abort = setTimeout(() => shutdown.abort(), drainMs);
        await bounded('push worker', w.close(), drainMs + CLOSE_GRACE_MS, () => w.disconnect());
        clearTimeout(abort);
      }
      if (queues) {
        const { queue, dead, connection } = queues;
        await Promise.all([
          bounded('push queue', queue.close(), CLOSE_GRACE_MS, () => queue.disconnect()),
          bounded('push dead-letter queue', dead.close(), CLOSE_GRACE_MS, () => dead.disconnect()),
        ]);
        await closeConnection(connection, CLOSE_GRACE_MS);
      }
      worker = null;
      outbox = null;
      queues = null;
    },

    /** `deliveryStats` (admin). */
    async stats(viewer: Viewer): Promise<DeliveryStatsModel> {
      requireAdmin(viewer);
      const { queue, dead } = getQueues();
      const [counts, deadCount, outboxLength] = await withDeadline(
        Promise.all([
          queue.getJobCounts('waiting', 'active', 'delayed', 'failed'),
          dead.getWaitingCount(),
          redis.xlen(pushKeys.outbox()),
        ]),
        requestTimeoutMs,
      );
      return {
        queue: PUSH_QUEUE,
        outbox: outboxLength,
        waiting: counts.waiting ?? 0,
        active: counts.active ?? 0,
        delayed: counts.delayed ?? 0,
        failed: counts.failed ?? 0,
        dead: deadCount,
      };
    },

    /** `deadDeliveries` (admin): the oldest dead deliveries first, with their last error. */
    async deadDeliveries(viewer: Viewer, first: number): Promise<DeadDeliveryModel[]> {
      requireAdmin(viewer);
      if (!Number.isInteger(first) || first < 0 || first > 100) throw badInput('first', 'first must be 0..100');
      const { dead } = getQueues();
      if (first === 0) return [];
      const jobs = await withDeadline(dead.getJobs(['wait'], 0, first - 1, true), requestTimeoutMs);
      return jobs.map((job) => ({
        id: job.id as string,
        recipientId: job.data.recipientId,
        messageId: job.data.messageId,
        roomId: decodeMessageId('messageId', job.data.messageId).roomId,
        error: job.data.error,
        attempts: job.data.attempts,
        failedAt: job.data.failedAt,
      }));
    },

    /** `retryDeadDeliveries` (admin): requeues up to `limit` dead deliveries, oldest first, under their own ids. */
    async retryDead(viewer: Viewer, limit: number): Promise<number> {
      requireAdmin(viewer);
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_BATCH) throw badInput('limit', `limit must be 1..${MAX_BATCH}`);
      const { queue, dead } = getQueues();
      const jobs = await withDeadline(dead.getJobs(['wait'], 0, limit - 1, true), requestTimeoutMs);
      const requeue = async (job: Job<DeadDeliveryData>) => {
        const { messageId, recipientId, claim: range } = job.data;
        // A leftover of the failed job (its process died while moving it) would swallow the add.
        await queue.remove(job.id as string);
        await queue.add('deliver', { messageId, recipientId, ...(range ? { claim: range } : {}) }, { jobId: job.id as string });
        await dead.remove(job.id as string);
      };
      await withDeadline(Promise.all(jobs.map(requeue)), requestTimeoutMs);
      return jobs.length;
    },
  };
}

/** Every delivery job's options (the queue's defaults): attempts, the backoff strategy, how long finished jobs stay. */
function jobOptions(push: PushConfig): JobsOptions {
  return {
    attempts: push.attempts,
    backoff: { type: 'push' },
    removeOnComplete: { age: KEEP_COMPLETED_SECONDS },
    removeOnFail: false,
  };
}
