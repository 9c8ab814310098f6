import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, inject } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { signToken } from '../../src/infra/auth.js';
import { waitFor } from './clients.js';

/** The JWT secret every test instance uses. */
export const TEST_JWT_SECRET = 'test-secret-0123456789abcdef';

/** A running in-process instance. */
export interface TestInstance {
  app: App;
  port: number;
  /** http://127.0.0.1:<port>/graphql */
  url: string;
  /** ws://127.0.0.1:<port>/graphql */
  wsUrl: string;
  base: string;
  stop(): Promise<void>;
}

/** A fresh key/channel prefix, so test files share one redis-server without seeing each other. */
export const uniquePrefix = (label = 't') => `test:${label}:${randomBytes(4).toString('hex')}:`;

/** The shared test redis-server started by the global setup. */
export const sharedRedisUrl = () => inject('redisUrl');

/** The environment a test instance is configured from. */
export function testEnv(overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL: sharedRedisUrl(),
    JWT_SECRET: TEST_JWT_SECRET,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    REDIS_COMMAND_TIMEOUT_MS: '1000',
    // Limits have tests of their own (ratelimit tests set RATE_LIMITS); elsewhere they would only
    // trip bursts of test traffic.
    RATE_LIMITS: 'off',
    ...overrides,
  };
}

/** Starts an instance in this process on a free port. Instances given the same prefix share state. */
export async function startInstance(env: Record<string, string | undefined> = {}): Promise<TestInstance> {
  const app = await buildApp(loadConfig(testEnv(env)));
  const { port } = await app.start();
  const base = `http://127.0.0.1:${port}`;
  return {
    app,
    port,
    base,
    url: `${base}/graphql`,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    stop: () => app.stop(),
  };
}

/** Starts `n` instances on one Redis with one prefix: a cluster behind a load balancer. */
export async function startCluster(n: number, env: Record<string, string | undefined> = {}) {
  const prefix = env.REDIS_KEY_PREFIX ?? uniquePrefix('cluster');
  return Promise.all(Array.from({ length: n }, () => startInstance({ ...env, REDIS_KEY_PREFIX: prefix })));
}

/**
 * Starts `n` instances of one deployment before the file's tests and stops them after; the array
 * fills once they run (read it inside tests and hooks).
 */
export function clusterForFile(n: number, env: Record<string, string | undefined> = {}): TestInstance[] {
  const instances: TestInstance[] = [];
  beforeAll(async () => {
    instances.push(...(await startCluster(n, env)));
  });
  afterAll(async () => {
    await Promise.all(instances.map((i) => i.stop()));
  });
  return instances;
}

/** Signs a token for `sub` with the test secret. */
export function tokenFor(
  sub: string,
  opts: { name?: string; roles?: string[]; expiresIn?: string | number; secret?: string } = {},
): Promise<string> {
  return signToken(
    opts.secret ?? TEST_JWT_SECRET,
    { sub, ...(opts.name ? { name: opts.name } : {}), ...(opts.roles ? { roles: opts.roles } : {}) },
    opts.expiresIn ?? '1h',
  );
}

/** Waits until `instance` has at least `n` open room streams (a subscription is live server-side). */
export async function waitForStreams(instance: TestInstance, n: number, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (instance.app.services.events.openCount() < n) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${n} open streams (have ${instance.app.services.events.openCount()})`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A user id (or name tag) no other test uses, so tests share a cluster without seeing each other. */
export const uid = (label: string) => `${label}-${randomBytes(4).toString('hex')}`;

/** Fresh users of one test file, each with a token signed for it. */
export interface TestUsers {
  /** A fresh user id `<label>-<random>` (labels sort as the alphabet) with a token named `label`. */
  newUser(label: string): Promise<string>;
  /** The token of a user made by `newUser` (throws for any other id). */
  token(userId: string): string;
}

/** Makes a registry of fresh users and their tokens. */
export function testUsers(): TestUsers {
  const tokens = new Map<string, string>();
  return {
    async newUser(label) {
      const id = `${label}-${randomBytes(4).toString('hex')}`;
      tokens.set(id, await tokenFor(id, { name: label }));
      return id;
    },
    token(userId) {
      const t = tokens.get(userId);
      if (!t) throw new Error(`no token for ${userId}`);
      return t;
    },
  };
}

/** Open room streams of an instance (a subscription holds the room server-side). */
export const openStreams = (instance: TestInstance) => instance.app.services.events.openCount();

/** Waits until none of `instances` holds a room stream, so the next test counts streams from zero. */
export const waitForStreamsReleased = (instances: Iterable<TestInstance>, ms = 5000) =>
  waitFor(() => [...instances].every((i) => openStreams(i) === 0), ms, 'every room stream to be released');
