import { createHmac } from 'node:crypto';
import { UnrecoverableError } from 'bullmq';
import type { PushConfig } from '../config.js';
import type { PushPayload } from './push.models.js';

/** The header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`. */
export const SIGNATURE_HEADER = 'x-switchboard-signature';

/** Longest wait a `Retry-After` may ask for; beyond it the usual backoff applies. */
const MAX_RETRY_AFTER_MS = 24 * 60 * 60 * 1000;
/** Characters of a refused response's body kept in the error (the dead letter's last error). */
const ERROR_BODY_CHARS = 200;

/** Signs a body as receivers verify it: HMAC-SHA256 over `<timestamp>.<raw body>`, hex. */
export function sign(secret: string, timestampSeconds: number, body: string): string {
  const mac = createHmac('sha256', secret).update(`${timestampSeconds}.${body}`).digest('hex');
  return `t=${timestampSeconds},v1=${mac}`;
}

/** A delivery attempt that failed in a way worth retrying; `retryAfterMs` when the receiver said when. */
export class RetryableDeliveryError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
    this.name = 'RetryableDeliveryError';
  }
}

/** Milliseconds a `Retry-After` value (delta-seconds or an HTTP date) asks for; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, nowMs: number): number | null {
  if (value === null || value.trim() === '') return null;
  const text = value.trim();
  const ms = /^\d+$/.test(text) ? Number(text) * 1000 : Date.parse(text) - nowMs;
  if (!Number.isFinite(ms)) return null;
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

/**
 * The wait before retry number `attemptsMade` (1 for the first retry): the receiver's `Retry-After`
 * when it sent one, else exponential (`backoffMs · 2^(n-1)`, capped at `backoffMaxMs`) with the
 * configured share of it drawn at random, so retries of many deliveries do not arrive in step.
 */
export function retryDelay(push: PushConfig, attemptsMade: number, err: unknown, random = Math.random): number {
  if (err instanceof RetryableDeliveryError && err.retryAfterMs !== null) return err.retryAfterMs;
  const exponential = Math.min(push.backoffMaxMs, push.backoffMs * 2 ** Math.max(0, attemptsMade - 1));
  return Math.round(exponential * (1 - push.backoffJitter * random()));
}

/**
 * POSTs one delivery. Resolves on 2xx. Throws `UnrecoverableError` (no retry, straight to the
 * dead letters) on a 4xx other than 408 and 429 and on anything else unexpected (a redirect: the
 * signed body is not sent elsewhere); `RetryableDeliveryError` on 408, 429 (with its Retry-After),
 * 5xx, a timeout or a network error.
 */
export async function postDelivery(
  push: PushConfig,
  deliveryId: string,
  payload: PushPayload,
  signal: AbortSignal,
  nowMs: number,
): Promise<void> {
  const body = JSON.stringify(payload);
  let res: Response;
  try {
    res = await fetch(push.webhookUrl, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        'content-type': 'application/json',
        'user-agent': 'Switchboard-Push/1',
        'idempotency-key': deliveryId,
        [SIGNATURE_HEADER]: sign(push.webhookSecret, Math.floor(nowMs / 1000), body),
      },
      body,
      signal: AbortSignal.any([signal, AbortSignal.timeout(push.webhookTimeoutMs)]),
    });
  } catch (err) {
    const reason = err instanceof Error ? (err.name === 'TimeoutError' ? `no answer in ${push.webhookTimeoutMs} ms` : err.message) : String(err);
    throw new RetryableDeliveryError(`webhook unreachable: ${reason}`);
  }
  const text = await res.text().catch(() => '');
  if (res.status >= 200 && res.status < 300) return;
  const detail = `webhook answered HTTP ${res.status}${text ? `: ${text.slice(0, ERROR_BODY_CHARS)}` : ''}`;
  if (res.status === 429) throw new RetryableDeliveryError(detail, parseRetryAfter(res.headers.get('retry-after'), nowMs));
  if (res.status === 408 || res.status >= 500) throw new RetryableDeliveryError(detail);
  throw new UnrecoverableError(detail);
}
