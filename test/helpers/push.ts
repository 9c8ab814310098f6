import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Queue, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { PUSH_QUEUE, DEAD_QUEUE, queuePrefix } from '../../src/push/push.keys.js';
import type { DeadDeliveryData, DeliveryData, DeliveryResult, PushPayload } from '../../src/push/push.models.js';
import { waitFor } from './clients.js';
import { sharedRedisUrl } from './server.js';

/** The webhook secret of test deployments. */
export const TEST_PUSH_SECRET = 'push-test-secret-0123456789';

/**
 * The environment of a deployment pushing to `url`: short backoffs (tens of ms) so retries are
 * quick, and the given overrides (collapse window, attempts…).
 */
export const pushEnv = (url: string, overrides: Record<string, string> = {}): Record<string, string> => ({
  PUSH_WEBHOOK_URL: url,
  PUSH_WEBHOOK_SECRET: TEST_PUSH_SECRET,
  PUSH_ATTEMPTS: '3',
  PUSH_BACKOFF_MS: '50',
  PUSH_BACKOFF_MAX_MS: '200',
  PUSH_COLLAPSE_WINDOW_MS: '0',
  PUSH_WEBHOOK_TIMEOUT_MS: '5000',
  ...overrides,
});

/** The push queue and dead letters of the deployment with key prefix `prefix`, read as an operator's bullmq tool would. */
export function pushQueues(prefix: string, redisUrl = sharedRedisUrl()) {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  connection.on('error', () => undefined);
  const queue = new Queue<DeliveryData, DeliveryResult>(PUSH_QUEUE, { connection, prefix: queuePrefix(prefix) });
  const dead = new Queue<DeadDeliveryData>(DEAD_QUEUE, { connection, prefix: queuePrefix(prefix) });
  return {
    queue,
    dead,
    /** The connection under both (no key prefix). */
    redis: connection,
    /** The job once it exists (any state), within `ms`. */
    job: (id: string, ms = 10_000) =>
      waitFor(() => queue.getJob(id), ms, `job ${id} to exist`) as Promise<Job<DeliveryData, DeliveryResult>>,
    /** The job once it has finished (completed or failed), within `ms`. */
    finished: (id: string, ms = 10_000) =>
      waitFor(
        async () => {
          const job = await queue.getJob(id);
          return job?.finishedOn ? job : null;
        },
        ms,
        `job ${id} to finish`,
      ) as Promise<Job<DeliveryData, DeliveryResult>>,
    async close() {
      await Promise.all([queue.close(), dead.close()]);
      connection.disconnect();
    },
  };
}

/** Checks a received push's `X-Switchboard-Signature` against `secret`: the timestamp it signed, or null when it does not verify. */
export function verifiedTimestamp(push: { headers: IncomingHttpHeaders; raw: string }, secret = TEST_PUSH_SECRET): number | null {
  const header = String(push.headers['x-switchboard-signature'] ?? '');
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!m) return null;
  const expected = createHmac('sha256', secret).update(`${m[1]}.${push.raw}`).digest('hex');
  return expected === m[2] ? Number(m[1]) : null;
}

/** One POST the receiver got. */
export interface ReceivedPush {
  headers: IncomingHttpHeaders;
  /** The raw body, as the signature covers it. */
  raw: string;
  body: PushPayload;
  /** Date.now() when it arrived. */
  at: number;
}

/** How the receiver answers one request: a status, a full response, or never ('hold'). */
export type Answer = number | { status: number; headers?: Record<string, string>; body?: string } | 'hold';

/** A local HTTP server standing in for the push gateway behind PUSH_WEBHOOK_URL. */
export interface Receiver {
  url: string;
  requests: ReceivedPush[];
  /** The requests made for one recipient, in arrival order. */
  of(recipientId: string): ReceivedPush[];
  /** Resolves with the first `n` requests for `recipientId` once they arrived (bounded by `ms`). */
  waitFor(recipientId: string, n: number, ms?: number): Promise<ReceivedPush[]>;
  /**
   * How the next requests for `recipientId` are answered, in order; the last answer repeats
   * (unset: 200).
   */
  answer(recipientId: string, ...answers: Answer[]): void;
  close(): Promise<void>;
}

/** Starts a receiver on 127.0.0.1 (a free port). */
export async function startReceiver(): Promise<Receiver> {
  const requests: ReceivedPush[] = [];
  const answers = new Map<string, Answer[]>();
  const held = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (raw += d));
    req.on('end', () => {
      let body: PushPayload;
      try {
        body = JSON.parse(raw) as PushPayload;
      } catch {
        res.writeHead(400).end('not JSON');
        return;
      }
      requests.push({ headers: req.headers, raw, body, at: Date.now() });
      const queue = answers.get(body.recipientId) ?? [];
      const answer = (queue.length > 1 ? queue.shift() : queue[0]) ?? 200;
      if (answer === 'hold') {
        held.add(res);
        res.once('close', () => held.delete(res));
        return;
      }
      const { status, headers, body: text } = typeof answer === 'number' ? { status: answer, headers: {}, body: '' } : answer;
      res.writeHead(status, headers).end(text ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const of = (recipientId: string) => requests.filter((r) => r.body.recipientId === recipientId);
  return {
    url: `http://127.0.0.1:${port}/push`,
    requests,
    of,
    async waitFor(recipientId, n, ms = 10_000) {
      await waitFor(() => of(recipientId).length >= n, ms, `${n} push(es) for ${recipientId} (got ${of(recipientId).length})`);
      return of(recipientId).slice(0, n);
    },
    answer(recipientId, ...list) {
      answers.set(recipientId, list);
    },
    async close() {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
