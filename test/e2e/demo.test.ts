import { randomBytes } from 'node:crypto';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectPageErrors, keepScreenshot, useBrowserCluster, type Browser } from '../helpers/browser.js';
import { gql } from '../helpers/clients.js';
import { startInstance, type TestInstance } from '../helpers/server.js';

/** Opens the demo on `base` and signs in as `name`, as a newcomer would. */
async function signIn(browser: Browser, base: string, name: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.context.newPage();
  const errors = collectPageErrors(page);
  await page.goto(`${base}/demo`);
  await page.locator('body[data-ready="true"]').waitFor();
  await page.locator('#name').fill(name);
  await page.locator('#sign-in').click();
  await expect.poll(() => page.locator('#me').innerText()).toContain(name);
  return { page, errors };
}

describe('when two people chat on the demo page, each on another instance', () => {
  const env = useBrowserCluster();

  it('should show each one the other present, typing, and their messages live', async () => {
    const { a, b, browser } = env;
    const tag = randomBytes(3).toString('hex');
    const alice = await signIn(browser, a.base, `Alice ${tag}`);
    const roomName = `lobby-${tag}`;
    await alice.page.locator('#new-room').fill(roomName);
    await alice.page.locator('#create-room').click();
    await expect.poll(() => alice.page.locator('#room-name').innerText()).toBe(roomName);

    const bob = await signIn(browser, b.base, `Bob ${tag}`);
    await bob.page.locator('#public-rooms li', { hasText: roomName }).getByRole('button', { name: 'Join' }).click();
    await expect.poll(() => bob.page.locator('#room-name').innerText()).toBe(roomName);

    // Presence: each sees the other in the room.
    await expect.poll(() => alice.page.locator('#online').innerText()).toContain(`Bob ${tag}`);
    await expect.poll(() => bob.page.locator('#online').innerText()).toContain(`Alice ${tag}`);

    // Typing: Bob types, Alice sees it; sending clears it and delivers the message.
    await bob.page.locator('#composer').pressSequentially('hello from Bob');
    await expect.poll(() => alice.page.locator('#typing').innerText()).toBe(`Bob ${tag} is typing…`);
    await keepScreenshot(alice.page, 'demo-typing');
    await bob.page.locator('#composer').press('Enter');
    await expect.poll(() => alice.page.locator('#messages').innerText()).toContain('hello from Bob');
    await expect.poll(() => alice.page.locator('#typing').innerText()).toBe('');

    await alice.page.locator('#composer').fill('hi Bob');
    await alice.page.locator('#send').click();
    await expect.poll(() => bob.page.locator('#messages').innerText()).toMatch(/hello from Bob[\s\S]*hi Bob/);
    await keepScreenshot(bob.page, 'demo-chat');

    // Bob leaves (closes the page): Alice sees him go.
    await bob.page.close();
    await expect.poll(() => alice.page.locator('#online').innerText(), { timeout: 10_000 }).not.toContain(`Bob ${tag}`);
    expect([...alice.errors, ...bob.errors]).toEqual([]);
  });

  it('should refuse a sign-in without a usable name', async () => {
    const res = await fetch(`${env.a.base}/demo/token`, { method: 'POST', body: JSON.stringify({ name: ' !! ' }) });
    expect(res.status).toBe(400);
  });

  it('should hand out a token the API accepts, for the user named', async () => {
    const res = await fetch(`${env.a.base}/demo/token`, { method: 'POST', body: JSON.stringify({ name: 'Zoë Demo' }) });
    const { token, userId } = (await res.json()) as { token: string; userId: string };
    expect(userId).toBe('zoe-demo');
    const me = await gql(env.a.url, 'query { me { id name } }', undefined, { token });
    expect(me.data).toEqual({ me: { id: 'zoe-demo', name: 'Zoë Demo' } });
  });
});

describe('when NODE_ENV is production', () => {
  let prod: TestInstance;
  beforeAll(async () => {
    prod = await startInstance({ NODE_ENV: 'production', JWT_SECRET: 'a-production-secret-for-tests' });
  });
  afterAll(() => prod?.stop());

  it('should serve neither the demo page nor its development sign-in', async () => {
    expect((await fetch(`${prod.base}/demo`)).status).toBe(404);
    expect((await fetch(`${prod.base}/demo/demo.js`)).status).toBe(404);
    const signIn = await fetch(`${prod.base}/demo/token`, { method: 'POST', body: JSON.stringify({ name: 'mallory' }) });
    expect(signIn.status).toBe(404);
  });
});
