import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startRedisServer, type EmbeddedRedis } from '../src/infra/embedded-redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

let redis: EmbeddedRedis | undefined;
let dir: string | undefined;

/** Starts one private redis-server for the whole run (real Redis, never a mock) and stops it by its pid. */
export async function setup(project: TestProject) {
  dir = mkdtempSync(join(tmpdir(), 'switchboard-test-redis-'));
  redis = await startRedisServer({ dir, appendOnly: false });
  project.provide('redisUrl', redis.url);
}

export async function teardown() {
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}
