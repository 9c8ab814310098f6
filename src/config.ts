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
  MAX_DEPTH: intFrom(12, 1, 1000),
  MAX_ALIASES: intFrom(30, 1, 10_000),
  MAX_DIRECTIVES: intFrom(20, 1, 10_000),
  MAX_TOKENS: intFrom(1000, 10, 1_000_000),
  MAX_COST: intFrom(5000, 1, 10_000_000),
  MAX_BODY_BYTES: intFrom(1_048_576, 1024, 100 * 1_048_576),
  INSTANCE_ID: z.string().min(1).optional(),
  GRAPHIQL: optionalBool,
  PERSISTED_OPERATIONS: z.enum(['off', 'allowed', 'required']).optional(),
  PERSISTED_OPERATIONS_MANIFEST: z.string().optional(),
});

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
  /** Query hardening (graphql-armor). */
  armor: { maxDepth: number; maxAliases: number; maxDirectives: number; maxTokens: number; maxCost: number };
  maxBodyBytes: number;
  instanceId: string;
  graphiql: boolean;
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
    armor: {
      maxDepth: e.MAX_DEPTH,
      maxAliases: e.MAX_ALIASES,
      maxDirectives: e.MAX_DIRECTIVES,
      maxTokens: e.MAX_TOKENS,
      maxCost: e.MAX_COST,
    },
    maxBodyBytes: e.MAX_BODY_BYTES,
    instanceId: e.INSTANCE_ID ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    graphiql: e.GRAPHIQL ?? !isProduction,
    persistedOperations: {
      mode: e.PERSISTED_OPERATIONS ?? (isProduction ? 'allowed' : 'off'),
      manifests: (e.PERSISTED_OPERATIONS_MANIFEST ?? '').split(',').map((f) => f.trim()).filter(Boolean),
    },
    demo: !isProduction,
  };
}
