import type { Redis } from 'ioredis';
import type { Logger } from '../infra/logger.js';
import { execPipeline, settlesWithin } from '../infra/redis.js';
import { OUTBOX_GROUP, pushKeys } from './push.keys.js';
import { pipelineOf } from '../infra/direct-pipeline.js';

/** One outbox entry: a stored message waiting to become deliveries. */
export interface OutboxEntry {
  /** The stream entry id. */
  id: string;
  messageId: string;
  senderId: string;
}

/** How long `stop()` waits for the reading loop to end. */
const STOP_GRACE_MS = 2000;

/** Dependencies of {@link createOutboxConsumer}. */
export interface OutboxConsumerDeps {
  /** The command connection (fails fast). */
  redis: Redis;
  /** A connection of its own for the blocking read (ioredis runs one command at a time per socket). */
  reader: Redis;
  /** The deployment's key prefix: ioredis does not prefix the keys of XGROUP and XINFO (subcommands). */
  keyPrefix: string;
  /** This process's consumer name in the group. */
  consumer: string;
  /** Turns entries into delivery jobs; idempotent (job ids are deterministic), so an entry may be handled twice. */
  handle(entries: OutboxEntry[]): Promise<unknown>;
  /** An entry read but not acknowledged for this long (its reader died) is taken over. */
  reclaimIdleMs: number;
  logger: Logger;
}

/** Entries read per XREADGROUP. */
const BATCH = 200;
/** How long one blocking read waits before it looks again (and notices a stop). */
const BLOCK_MS = 2000;
/** A consumer that has not read for this long, with nothing pending, is a process that is gone. */
const FORGET_CONSUMER_MS = 60 * 60 * 1000;

type StreamReply = [string, [string, string[]][]][] | null;

const toEntries = (raw: [string, string[] | null][]): OutboxEntry[] =>
  raw.flatMap(([id, fields]) => {
    if (!fields) return [{ id, messageId: '', senderId: '' }];
    const get = (name: string) => fields[fields.indexOf(name) + 1] ?? '';
    return [{ id, messageId: get('m'), senderId: get('u') }];
  });

/**
 * The push outbox's consumer: the send path adds one stream entry per message (in its existing
 * pipeline); every worker process reads the stream as one consumer of a group, so each entry goes
 * to one of them, and acknowledges (then deletes) an entry only once its jobs are in the queue. An
 * entry whose reader died unacknowledged is taken over by `reclaim()` after `reclaimIdleMs`.
 */
export function createOutboxConsumer(deps: OutboxConsumerDeps) {
  const { redis, reader, keyPrefix, consumer, handle, reclaimIdleMs, logger } = deps;
  const key = pushKeys.outbox();
  const fullKey = keyPrefix + key;
  let running: Promise<void> | null = null;
  let stopped = false;

  async function ensureGroup(): Promise<void> {
    // From id 0: entries added before the group existed are delivered too.
    await redis.call('XGROUP', 'CREATE', fullKey, OUTBOX_GROUP, '0', 'MKSTREAM').catch((err: Error) => {
      if (!/BUSYGROUP/.test(err.message)) throw err;
    });
  }

  /** Hands entries to `handle`, then acknowledges and deletes them in one round trip. */
  async function handleBatch(entries: OutboxEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await handle(entries.filter((e) => e.messageId !== ''));
    const ids = entries.map((e) => e.id);
    await execPipeline(pipelineOf(redis).xack(key, OUTBOX_GROUP, ...ids).xdel(key, ...ids));
  }

  async function loop(): Promise<void> {
    let failures = 0;
    // After a failure, this consumer's own unacknowledged entries first (id 0 reads them back at
    // once), then new ones (">", blocking).
    let backlog = false;
    while (!stopped) {
      try {
        const reply = (await reader.xreadgroup(
          'GROUP', OUTBOX_GROUP, consumer, 'COUNT', BATCH, 'BLOCK', BLOCK_MS, 'STREAMS', key, backlog ? '0' : '>',
        )) as StreamReply;
        const entries = toEntries(reply?.[0]?.[1] ?? []);
        await handleBatch(entries);
        if (backlog && entries.length === 0) backlog = false;
        failures = 0;
      } catch (err) {
        backlog = true;
        if (stopped) break;
        if (/NOGROUP/.test((err as Error).message)) await ensureGroup().catch(() => undefined);
        // What was read stays pending and is taken over by reclaim(); back off while Redis is away.
        failures++;
        if (failures === 1 || failures % 20 === 0) logger.warn({ err: (err as Error).message }, 'push outbox read failed');
        await new Promise((r) => setTimeout(r, Math.min(100 * failures, 2000)));
      }
    }
  }

  return {
    /** Creates the group if needed and starts reading. */
    async start(): Promise<void> {
      stopped = false;
      await ensureGroup().catch((err: Error) => logger.warn({ err: err.message }, 'push outbox group not created yet'));
      running = loop();
    },

    /** Stops reading; resolves once the batch in hand (if any) is handled, within `STOP_GRACE_MS`. */
    async stop(): Promise<void> {
      stopped = true;
      // Ends the blocking read at once; a batch being handled finishes on the command connection
      // (whose commands time out). A read queued while Redis is away is another matter: after
      // disconnect() ioredis never settles what waits in the offline queue of a reconnecting
      // connection, so the loop is waited for only so long (what it read stays pending and is
      // taken over by reclaim()).
      reader.disconnect();
      if (running) await settlesWithin(running, STOP_GRACE_MS);
      running = null;
    },

    /**
     * Takes over entries another reader (or this one, after a failure) left unacknowledged for
     * `reclaimIdleMs`, handles them, and forgets consumers long gone with nothing pending.
     * Returns how many entries it handled.
     */
    async reclaim(): Promise<number> {
      let cursor = '0-0';
      let handled = 0;
      do {
        const [next, raw, deleted] = (await redis.xautoclaim(key, OUTBOX_GROUP, consumer, reclaimIdleMs, cursor, 'COUNT', BATCH)) as [
          string,
          [string, string[] | null][],
          string[]?,
        ];
        const entries = toEntries(raw);
        await handleBatch(entries);
        // Entries deleted while pending (trimmed) only need their acknowledgement.
        if (deleted && deleted.length > 0) await redis.xack(key, OUTBOX_GROUP, ...deleted);
        handled += entries.length;
        cursor = next;
      } while (cursor !== '0-0' && !stopped);
      const consumers = (await redis.xinfo('CONSUMERS', fullKey, OUTBOX_GROUP).catch(() => [])) as (string | number)[][];
      for (const fields of consumers) {
        const info = new Map<string, string | number>();
        for (let i = 0; i + 1 < fields.length; i += 2) info.set(String(fields[i]), fields[i + 1] as string | number);
        if (info.get('name') !== consumer && Number(info.get('pending')) === 0 && Number(info.get('idle')) > FORGET_CONSUMER_MS) {
          await redis.call('XGROUP', 'DELCONSUMER', fullKey, OUTBOX_GROUP, String(info.get('name')));
        }
      }
      return handled;
    },
  };
}
