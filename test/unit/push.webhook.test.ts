import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadConfig, type PushConfig } from '../../src/config.js';
import { preview } from '../../src/push/push.service.js';
import { parseRetryAfter, RetryableDeliveryError, retryDelay, sign } from '../../src/push/push.webhook.js';

/**
 * The pure parts of push delivery: the signature receivers verify, Retry-After, the backoff with
 * jitter, the text preview, and the PUSH_* settings.
 */

const push = (env: Record<string, string> = {}): PushConfig => {
  const config = loadConfig({ PUSH_WEBHOOK_URL: 'http://127.0.0.1:1/push', PUSH_WEBHOOK_SECRET: 's'.repeat(16), ...env });
  if (!config.push) throw new Error('push not configured');
  return config.push;
};

describe('sign', () => {
  it('should be the hex HMAC-SHA256 of "<timestamp>.<body>" with the secret', () => {
    const body = '{"a":1}';
    const mac = createHmac('sha256', 'k'.repeat(16)).update(`1700000000.${body}`).digest('hex');
    expect(sign('k'.repeat(16), 1_700_000_000, body)).toBe(`t=1700000000,v1=${mac}`);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  it('should read delta-seconds and HTTP dates, and nothing else', () => {
    expect(parseRetryAfter('3', now)).toBe(3000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:10 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter(null, now)).toBeNull();
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter('999999999', now)).toBe(24 * 60 * 60 * 1000);
  });
});

describe('retryDelay', () => {
  it('should double from PUSH_BACKOFF_MS up to PUSH_BACKOFF_MAX_MS without jitter', () => {
    const p = push({ PUSH_BACKOFF_MS: '100', PUSH_BACKOFF_MAX_MS: '1000', PUSH_BACKOFF_JITTER: '0' });
    expect([1, 2, 3, 4, 5, 6].map((n) => retryDelay(p, n, new Error('x')))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('should draw the jitter share at random below the exponential delay', () => {
    const p = push({ PUSH_BACKOFF_MS: '1000', PUSH_BACKOFF_JITTER: '0.5' });
    expect(retryDelay(p, 3, new Error('x'), () => 0)).toBe(4000);
    expect(retryDelay(p, 3, new Error('x'), () => 0.999999)).toBe(2000);
    const draws = Array.from({ length: 200 }, () => retryDelay(p, 3, new Error('x')));
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(2000);
    expect(Math.max(...draws)).toBeLessThanOrEqual(4000);
    expect(new Set(draws).size).toBeGreaterThan(10);
  });

  it('should wait what a 429’s Retry-After asked', () => {
    const p = push({ PUSH_BACKOFF_MS: '100' });
    expect(retryDelay(p, 1, new RetryableDeliveryError('429', 7000))).toBe(7000);
    expect(retryDelay(p, 1, new RetryableDeliveryError('429', null), () => 0)).toBe(100);
  });
});

describe('preview', () => {
  it('should fold whitespace and cut long texts by characters, not UTF-16 units', () => {
    expect(preview('  a \n\t b  ')).toBe('a b');
    const long = '😀'.repeat(200);
    const cut = preview(long);
    expect(Array.from(cut)).toHaveLength(140);
    expect(cut.endsWith('😀…')).toBe(true);
  });
});

describe('PUSH_* settings', () => {
  it('should leave push off without PUSH_WEBHOOK_URL, and refuse a URL without a secret, one line each', () => {
    expect(loadConfig({}).push).toBeNull();
    expect(() => loadConfig({ PUSH_WEBHOOK_URL: 'http://127.0.0.1/push' })).toThrow(/PUSH_WEBHOOK_SECRET: required/);
    expect(() =>
      loadConfig({ PUSH_WEBHOOK_URL: 'ftp://x/push', PUSH_WEBHOOK_SECRET: 'short', PUSH_BACKOFF_JITTER: '2' }),
    ).toThrow(/PUSH_WEBHOOK_URL[\s\S]*PUSH_WEBHOOK_SECRET[\s\S]*PUSH_BACKOFF_JITTER/);
    expect(push()).toMatchObject({ attempts: 10, backoffMs: 1000, collapseWindowMs: 3000, concurrency: 16, deadRetentionSeconds: 604_800 });
  });
});
