import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { parseOverrides, type Limit } from './ratelimit/ratelimit.service.js';

/** Every operation of one user, together, unless RATE_LIMITS says otherwise (`*=600/1m`). */
const DEFAULT_BUDGET: Limit = { max: 600, windowMs: 60_000 };

/** The development JWT secret; refused in production. */
export const DEV_JWT_SECRET = 'switchboard-dev-secret-change-me';

const intFrom = (fallback: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

const optionalBool = z
  .enum(['1', '0', 'true', 'false', 'yes', 'no'])
  .optional()
  .transform((v) => (v === undefined ? undefined : v === '1' || v === 'true' || v === 'yes'));

/** Every environment variable the server reads, with its default. The README lists the same. */
const EnvSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: intFrom(4000, 0, 65535),
  HOST: z.string().min(1).default('0.0.0.0'),
  REDIS_URL: z.string().url().optional(),
  REDIS_KEY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_-]*$/, 'letters, digits, ":", "_" and "-" only')
    .default('sb:'),
  REDIS_COMMAND_TIMEOUT_MS: intFrom(2000, 50, 60000),
  EMBEDDED_REDIS_DIR: z.string().min(1).default('.data/redis'),
  JWT_SECRET: z.string().min(1).optional(),
  JWT_JWKS_URL: z.string().url().optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
  SHUTDOWN_TIMEOUT_MS: intFrom(8000, 100, 60000),
  SUBSCRIPTION_BUFFER_SIZE: intFrom(1000, 1, 1_000_000),
  POSITION_CHECK_INTERVAL_MS: intFrom(2000, 0, 600_000),
  HISTORY_RETENTION_MESSAGES: intFrom(100_000, 0, 100_000_000),
  PRESENCE_TIMEOUT_SECONDS: z.coerce.number().min(0.5).max(3600).default(30),
  PRESENCE_GRACE_MS: intFrom(5000, 0, 600_000),
  TYPING_TIMEOUT_SECONDS: z.coerce.number().min(0.1).max(600).default(6),
  PRESENCE_TICK_MS: intFrom(500, 50, 60_000),
  RATE_LIMITS: z.string().optional(),
  TRUST_PROXY: optionalBool,
  WS_MAX_MESSAGES_PER_10S: intFrom(200, 1, 1_000_000),
  WS_MAX_SUBSCRIPTIONS: intFrom(100, 1, 100_000),
  WS_MAX_CONNECTIONS_PER_USER: intFrom(20, 1, 100_000),
  WS_SETUP_CONCURRENCY: intFrom(32, 1, 100_000),
  MAX_DEPTH: intFrom(12, 1, 1000),
  MAX_ALIASES: intFrom(30, 1, 10_000),
  MAX_DIRECTIVES: intFrom(20, 1, 10_000),
  MAX_TOKENS: intFrom(1000, 10, 1_000_000),
  MAX_COST: intFrom(5000, 1, 10_000_000),
  MAX_BODY_BYTES: intFrom(1_048_576, 1024, 100 * 1_048_576),
  CACHE_MAX_VALUE_BYTES: intFrom(262_144, 1024, 64 * 1_048_576),
  SEARCH_CACHE_TTL_SECONDS: intFrom(30, 0, 3600),
  INSTANCE_ID: z.string().min(1).optional(),
  GRAPHIQL: optionalBool,
  LIVEKIT_URL: z
    .string()
    .url()
    .refine((u) => /^(wss?|https?):\/\//.test(u), 'a ws://, wss://, http:// or https:// URL')
    .optional(),
  LIVEKIT_API_KEY: z.string().min(1).optional(),
  LIVEKIT_API_SECRET: z.string().min(1).optional(),
  LIVEKIT_REQUEST_TIMEOUT_MS: intFrom(3000, 100, 60_000),
  CALL_KEY_TTL_SECONDS: z.coerce.number().min(0.1).max(7 * 86400).default(7200),
  CALL_TOKEN_TTL_SECONDS: intFrom(300, 10, 86400),
  CALL_DEPARTURE_TIMEOUT_MS: intFrom(20_000, 0, 3_600_000),
  CALL_REKEY_WINDOW_MS: intFrom(2000, 0, 60_000),
  CALL_JOIN_GRACE_MS: intFrom(30_000, 0, 3_600_000),
  CALL_SYNC_STALE_MS: intFrom(5000, 0, 3_600_000),
  CALL_SYNC_INTERVAL_MS: intFrom(15_000, 0, 3_600_000),
  CALL_PARTICIPANTS_CACHE_MS: intFrom(2000, 1, 60_000),
  PUSH_WEBHOOK_URL: z.string().url().refine((u) => /^https?:/i.test(u), 'an http:// or https:// URL').optional(),
  PUSH_WEBHOOK_SECRET: z.string().min(16, 'at least 16 characters').optional(),
  PUSH_WEBHOOK_TIMEOUT_MS: intFrom(10_000, 100, 120_000),
  PUSH_ATTEMPTS: intFrom(10, 1, 100),
  PUSH_BACKOFF_MS: intFrom(1000, 1, 3_600_000),
  PUSH_BACKOFF_MAX_MS: intFrom(3_600_000, 1, 86_400_000),
  PUSH_BACKOFF_JITTER: z.coerce.number().min(0).max(1).default(0.5),
  PUSH_COLLAPSE_WINDOW_MS: intFrom(3000, 0, 600_000),
  PUSH_DEAD_RETENTION_SECONDS: intFrom(7 * 86_400, 1, 365 * 86_400),
  PUSH_CONCURRENCY: intFrom(16, 0, 1000),
  PUSH_STALLED_TIMEOUT_MS: intFrom(30_000, 500, 600_000),
  PERSISTED_OPERATIONS: z.enum(['off', 'allowed', 'required']).optional(),
  PERSISTED_OPERATIONS_MANIFEST: z.string().optional(),
});

/** LiveKit's coordinates; all three or none. */
export interface LiveKitConfig {
  url: string;
  apiKey: string;
  apiSecret: string;
  /** How long one RoomService request may take. */
  requestTimeoutMs: number;
}

/** Calls and their end-to-end media keys. */
export interface CallsConfig {
  /** How long a published call key is served (CALL_KEY_TTL_SECONDS). */
  keyTtlSeconds: number;
  /** Lifetime of the LiveKit access token joinCall hands out (only needed to connect). */
  tokenTtlSeconds: number;
  /** A call with no participant left ends after this long. */
  departureTimeoutMs: number;
  /** Leaves within this window cause one epoch rotation, at its end. */
  rekeyWindowMs: number;
  /** How long a joinCall participant counts without LiveKit listing them. */
  joinGraceMs: number;
  /** A read of a call whose last sync with LiveKit is older than this syncs first. */
  syncStaleMs: number;
  /** How often active calls are synced with LiveKit (0: only on reads). */
  syncIntervalMs: number;
  /** How long one LiveKit participant list is shared by every instance. */
  participantsCacheMs: number;
}

/** Push delivery settings; present only when PUSH_WEBHOOK_URL is set. */
export interface PushConfig {
  webhookUrl: string;
  webhookSecret: string;
  webhookTimeoutMs: number;
  /** Tries per delivery, the first included. */
  attempts: number;
  /** Exponential backoff: the first retry waits about this long, each next one twice as long… */
  backoffMs: number;
  /** …up to this. */
  backoffMaxMs: number;
  /** Share of each delay drawn at random (0: none, 1: anywhere between 0 and the delay). */
  backoffJitter: number;
  /** Messages to one offline recipient in one room within this long make one push. */
  collapseWindowMs: number;
  /** How long dead-lettered deliveries are kept. */
  deadRetentionSeconds: number;
  /** Deliveries this process works on at once (0: none here; run `npm run worker` elsewhere). */
  concurrency: number;
  /** A worker silent this long has its job (and its unfinished outbox entries) taken over. */
  stalledTimeoutMs: number;
}

/** Parsed, validated configuration: the only place `process.env` is read. */
export interface Config {
  env: 'development' | 'production' | 'test';
  isProduction: boolean;
  port: number;
  host: string;
  /** Undefined: start an embedded redis-server (never in production). */
  redisUrl: string | undefined;
  redisKeyPrefix: string;
  redisCommandTimeoutMs: number;
  embeddedRedisDir: string;
  jwtSecret: string | undefined;
  jwtJwksUrl: string | undefined;
  logLevel: string;
  shutdownTimeoutMs: number;
  subscriptionBufferSize: number;
  /** How often streams compare their position with storage (0: never). */
  positionCheckMs: number;
  /** Messages kept per room; older ones are trimmed as new ones arrive (0: keep all). */
  historyRetentionMessages: number;
  /** A dead instance's connections count as gone after this long without its heartbeat. */
  presenceTimeoutSeconds: number;
  /** How long after a user's last connection closes before they are announced OFFLINE. */
  presenceGraceMs: number;
  /** How long a `setTyping(true)` lasts unless repeated. */
  typingTimeoutSeconds: number;
  /** How often grace periods and typing expiries are settled. */
  presenceTickMs: number;
  /** Limits off (RATE_LIMITS=off), or overrides by operation name with `*` the per-user budget. */
  rateLimits: { off: boolean; limits: Map<string, Limit> };
  trustProxy: boolean;
  /** WebSocket: inbound messages per connection per 10 s, subscriptions per connection, connections per user. */
  wsMaxMessagesPer10s: number;
  wsMaxSubscriptions: number;
  wsMaxConnectionsPerUser: number;
  /** WebSocket operations being set up at once on this instance (see infra/slots.ts). */
  wsSetupConcurrency: number;
  /** Query hardening (graphql-armor). */
  armor: { maxDepth: number; maxAliases: number; maxDirectives: number; maxTokens: number; maxCost: number };
  maxBodyBytes: number;
  /** Cached values above this many bytes (after compression) are not stored. */
  cacheMaxValueBytes: number;
  /** How long a page of search results is cached (0: not cached). */
  searchCacheTtlSeconds: number;
  instanceId: string;
  graphiql: boolean;
  /** Null when LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are unset: voice answers NOT_CONFIGURED. */
  livekit: LiveKitConfig | null;
  calls: CallsConfig;
  /** Push deliveries to offline members; null when PUSH_WEBHOOK_URL is not set. */
  push: PushConfig | null;
  /**
   * Trusted documents: `off` (any operation text, no hashes), `allowed` (texts and manifest hashes),
   * `required` (manifest hashes only). `manifests`: files of hash -> document; empty: the SDK's.
   */
  persistedOperations: { mode: 'off' | 'allowed' | 'required'; manifests: string[] };
  /** The demo chat page and its development sign-in at /demo: never in production. */
  demo: boolean;
}

/** Thrown with one line per bad variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Parses and validates the environment once; throws `ConfigError` listing every problem. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty strings mean "unset", as in most .env tooling.
  const cleaned = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v !== ''),
  );
  const parsed = EnvSchema.safeParse(cleaned);
  const problems = parsed.success
    ? []
    : parsed.error.issues.map((i) => `${i.path.join('.') || '(env)'}: ${i.message}`);
  // Cross-variable rules, checked on the raw values so every problem is reported at once.
  if (cleaned.NODE_ENV === 'production') {
    if (!cleaned.REDIS_URL) {
      problems.push('REDIS_URL: required when NODE_ENV=production (no embedded Redis in production)');
    }
    if (!cleaned.JWT_SECRET && !cleaned.JWT_JWKS_URL) {
      problems.push('JWT_SECRET: required when NODE_ENV=production (or set JWT_JWKS_URL)');
    }
    if (cleaned.JWT_SECRET === DEV_JWT_SECRET) {
      problems.push('JWT_SECRET: the development secret cannot be used in production');
    }
  }
  const livekitVars = ['LIVEKIT_URL', 'LIVEKIT_API_KEY', 'LIVEKIT_API_SECRET'] as const;
  if (livekitVars.some((v) => cleaned[v])) {
    for (const v of livekitVars) {
      if (!cleaned[v]) problems.push(`${v}: required when any of ${livekitVars.join(', ')} is set`);
    }
  }
  if (cleaned.PUSH_WEBHOOK_URL && !cleaned.PUSH_WEBHOOK_SECRET) {
    problems.push('PUSH_WEBHOOK_SECRET: required when PUSH_WEBHOOK_URL is set (deliveries are signed with it)');
  }
  let rateLimits: ReturnType<typeof parseOverrides> | undefined;
  try {
    rateLimits = parseOverrides(cleaned.RATE_LIMITS);
    // The per-user budget over every operation, unless RATE_LIMITS sets its own.
    if (!rateLimits.limits.has('*')) rateLimits.limits.set('*', DEFAULT_BUDGET);
  } catch (err) {
    problems.push(`RATE_LIMITS: ${(err as Error).message}`);
  }
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems);
  const e = parsed.data;
  const isProduction = e.NODE_ENV === 'production';
  return {
    env: e.NODE_ENV,
    isProduction,
    port: e.PORT,
    host: e.HOST,
    redisUrl: e.REDIS_URL,
    redisKeyPrefix: e.REDIS_KEY_PREFIX,
    redisCommandTimeoutMs: e.REDIS_COMMAND_TIMEOUT_MS,
    embeddedRedisDir: e.EMBEDDED_REDIS_DIR,
    jwtSecret: e.JWT_SECRET ?? (isProduction ? undefined : DEV_JWT_SECRET),
    jwtJwksUrl: e.JWT_JWKS_URL,
    logLevel: e.LOG_LEVEL ?? (e.NODE_ENV === 'test' ? 'silent' : 'info'),
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    subscriptionBufferSize: e.SUBSCRIPTION_BUFFER_SIZE,
    positionCheckMs: e.POSITION_CHECK_INTERVAL_MS,
    historyRetentionMessages: e.HISTORY_RETENTION_MESSAGES,
    presenceTimeoutSeconds: e.PRESENCE_TIMEOUT_SECONDS,
    presenceGraceMs: e.PRESENCE_GRACE_MS,
    typingTimeoutSeconds: e.TYPING_TIMEOUT_SECONDS,
    presenceTickMs: e.PRESENCE_TICK_MS,
    rateLimits: rateLimits ?? { off: false, limits: new Map() },
    trustProxy: e.TRUST_PROXY ?? false,
    wsMaxMessagesPer10s: e.WS_MAX_MESSAGES_PER_10S,
    wsMaxSubscriptions: e.WS_MAX_SUBSCRIPTIONS,
    wsMaxConnectionsPerUser: e.WS_MAX_CONNECTIONS_PER_USER,
    wsSetupConcurrency: e.WS_SETUP_CONCURRENCY,
    armor: {
      maxDepth: e.MAX_DEPTH,
      maxAliases: e.MAX_ALIASES,
      maxDirectives: e.MAX_DIRECTIVES,
      maxTokens: e.MAX_TOKENS,
      maxCost: e.MAX_COST,
    },
    maxBodyBytes: e.MAX_BODY_BYTES,
    cacheMaxValueBytes: e.CACHE_MAX_VALUE_BYTES,
    searchCacheTtlSeconds: e.SEARCH_CACHE_TTL_SECONDS,
    instanceId: e.INSTANCE_ID ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    graphiql: e.GRAPHIQL ?? !isProduction,
    livekit:
      e.LIVEKIT_URL && e.LIVEKIT_API_KEY && e.LIVEKIT_API_SECRET
        ? { url: e.LIVEKIT_URL, apiKey: e.LIVEKIT_API_KEY, apiSecret: e.LIVEKIT_API_SECRET, requestTimeoutMs: e.LIVEKIT_REQUEST_TIMEOUT_MS }
        : null,
    calls: {
      keyTtlSeconds: e.CALL_KEY_TTL_SECONDS,
      tokenTtlSeconds: e.CALL_TOKEN_TTL_SECONDS,
      departureTimeoutMs: e.CALL_DEPARTURE_TIMEOUT_MS,
      rekeyWindowMs: e.CALL_REKEY_WINDOW_MS,
      joinGraceMs: e.CALL_JOIN_GRACE_MS,
      syncStaleMs: e.CALL_SYNC_STALE_MS,
      syncIntervalMs: e.CALL_SYNC_INTERVAL_MS,
      participantsCacheMs: e.CALL_PARTICIPANTS_CACHE_MS,
    },
    push:
      e.PUSH_WEBHOOK_URL && e.PUSH_WEBHOOK_SECRET
        ? {
            webhookUrl: e.PUSH_WEBHOOK_URL,
            webhookSecret: e.PUSH_WEBHOOK_SECRET,
            webhookTimeoutMs: e.PUSH_WEBHOOK_TIMEOUT_MS,
            attempts: e.PUSH_ATTEMPTS,
            backoffMs: e.PUSH_BACKOFF_MS,
            backoffMaxMs: Math.max(e.PUSH_BACKOFF_MAX_MS, e.PUSH_BACKOFF_MS),
            backoffJitter: e.PUSH_BACKOFF_JITTER,
            collapseWindowMs: e.PUSH_COLLAPSE_WINDOW_MS,
            deadRetentionSeconds: e.PUSH_DEAD_RETENTION_SECONDS,
            concurrency: e.PUSH_CONCURRENCY,
            stalledTimeoutMs: e.PUSH_STALLED_TIMEOUT_MS,
          }
        : null,
    persistedOperations: {
      mode: e.PERSISTED_OPERATIONS ?? (isProduction ? 'allowed' : 'off'),
      manifests: (e.PERSISTED_OPERATIONS_MANIFEST ?? '').split(',').map((f) => f.trim()).filter(Boolean),
    },
    demo: !isProduction,
  };
}
