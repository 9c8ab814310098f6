import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import { startCluster, type TestInstance } from './server.js';

/** Debian's Chromium (`apt-get install chromium`; .ci/setup installs it). No browser is downloaded. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Screenshots kept as test artifacts (gitignored). */
export const ARTIFACTS_DIR = fileURLToPath(new URL('../artifacts/', import.meta.url));

const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A headless Chromium with a fresh profile folder, removed on close. */
export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/**
 * Starts headless Chromium through playwright-core's `launchPersistentContext` (playwright refuses
 * `--user-data-dir` among the args) on a fresh profile. Fails, never skips, when Chromium is missing.
 */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM_PATH}: the browser tests need Debian's package ` +
        '(apt-get install -y chromium, which .ci/setup runs) or CHROMIUM_PATH pointing at a Chromium',
    );
  }
  const profile = mkdtempSync(join(tmpdir(), 'switchboard-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: ARGS,
      viewport: { width: 1280, height: 800 },
      timeout: 30_000,
    });
    context.setDefaultTimeout(10_000);
    return {
      context,
      async close() {
        await context.close();
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
}

/** Saves a full-page screenshot as `test/artifacts/<name>.png` and returns its path. */
export async function keepScreenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const path = join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Errors the page logged or threw, for failure messages. */
export function collectPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  return errors;
}

/** Two instances on one Redis and a Chromium, for the tests of one describe block. */
export interface BrowserCluster {
  a: TestInstance;
  b: TestInstance;
  browser: Browser;
}

/** Starts a {@link BrowserCluster} before the block's tests and stops it after them. */
export function useBrowserCluster(): BrowserCluster {
  const env = {} as BrowserCluster;
  beforeAll(async () => {
    [env.a, env.b] = (await startCluster(2)) as [TestInstance, TestInstance];
    env.browser = await launchChromium();
  });
  afterAll(async () => {
    await env.browser?.close();
    await Promise.all([env.a?.stop(), env.b?.stop()]);
  });
  return env;
}
