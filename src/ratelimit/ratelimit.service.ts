import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Clock } from '../infra/clock.js';
import { execPipeline } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { rateLimitKeys } from './ratelimit.keys.js';
import { pipelineOf } from '../infra/direct-pipeline.js';

/** A limit: at most `max` hits in any window of `windowMs`. */
export interface Limit {
  max: number;
  windowMs: number;
}

/** One check of a request: `hits` against `limit`, counted in `scope`. */
export interface LimitCheck {
  scope: string;
  limit: Limit;
  hits: number;
}

/** The outcome of one check. */
export interface LimitResult {
  scope: string;
  limit: Limit;
  admitted: boolean;
  remaining: number;
  /** When refused: until enough hits leave the window. */
  retryAfterMs: number;
  /** Until the window holds none of the hits counted now. */
  resetMs: number;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a window such as `10s`, `1m`, `500ms`, `1h`; null when malformed. */
export function parseWindow(text: string): number | null {
  const m = /^(\d+)\s*(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return null;
  const ms = Number(m[1]) * (UNITS[m[2] as string] as number);
  return ms > 0 ? ms : null;
}

/** Parses `max/window`, e.g. `30/10s`; null when malformed. */
export function parseLimit(text: string): Limit | null {
  const m = /^(\d+)\s*\/\s*(.+)$/.exec(text.trim());
  if (!m) return null;
  const windowMs = parseWindow(m[2] as string);
  const max = Number(m[1]);
  return windowMs && max > 0 ? { max, windowMs } : null;
}

/**
 * Parses `RATE_LIMITS` (`sendMessage=30/10s,createRoom=10/1m,*=600/1m`, or `off`): overrides by
 * operation name; `*` is every operation of a user. Throws with the bad entry.
 */
export function parseOverrides(text: string | undefined): { off: boolean; limits: Map<string, Limit> } {
  const limits = new Map<string, Limit>();
  if (!text || !text.trim()) return { off: false, limits };
  if (text.trim() === 'off') return { off: true, limits };
  for (const entry of text.split(',')) {
    const [name, value] = entry.split('=');
    const limit = value === undefined ? null : parseLimit(value);
    if (!name?.trim() || !limit) throw new Error(`"${entry}" is not <operation>=<max>/<window> (e.g. sendMessage=30/10s)`);
    limits.set(name.trim(), limit);
  }
  return { off: false, limits };
}

/** Rate limit checks on Redis. */
export type RateLimitService = ReturnType<typeof createRateLimitService>;

/**
 * Creates the rate limit service: all checks of one request go to Redis in one pipeline, each one
 * atomic sliding-window-log script, so any number of instances never admit more than `max` in any
 * window. A Redis failure rejects (the caller answers UNAVAILABLE): limits never fail open.
 */
export function createRateLimitService(deps: { redis: Redis; scripts: ScriptRegistry; clock: Clock }) {
  const { redis, scripts, clock } = deps;
  return {
    async check(identity: string, checks: readonly LimitCheck[]): Promise<LimitResult[]> {
      if (checks.length === 0) return [];
      const pipeline = pipelineOf(redis);
      const now = clock.now();
      const requestId = randomBytes(8).toString('base64url');
      for (const c of checks) {
        scripts.queue(pipeline, 'rateLimit', [rateLimitKeys.hits(identity, c.scope)], [
          now,
          c.limit.windowMs,
          c.limit.max,
          c.hits,
          requestId,
        ]);
      }
      const replies = await execPipeline(pipeline);
      return checks.map((c, i) => {
        const [admitted, remaining, retryAfterMs, resetMs] = replies[i] as [number, number, number, number];
        return { scope: c.scope, limit: c.limit, admitted: admitted === 1, remaining, retryAfterMs, resetMs };
      });
    },
  };
}
