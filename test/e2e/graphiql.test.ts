import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { SendMessageDocument } from '../generated/graphql.js';
import { collectPageErrors, keepScreenshot, useBrowserCluster } from '../helpers/browser.js';
import { createRoomAs, gqlOk } from '../helpers/clients.js';
import { testUsers, waitForStreams } from '../helpers/server.js';

const QUERY_EDITOR = '.graphiql-query-editor .monaco-editor';
const HEADERS_EDITOR = '.monaco-editor[data-uri$="headers.json"]';

/** Replaces the text of the Monaco editor `selector`, as a paste would. */
async function setEditor(page: Page, selector: string, text: string): Promise<void> {
  const editor = page.locator(selector);
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
}

/** The text of GraphiQL's response pane, white space (Monaco renders non-breaking spaces) folded. */
const responseText = async (page: Page) => (await page.locator('.graphiql-response').innerText()).replace(/\s+/g, ' ');

/** Waits until the response pane shows `expected`. */
async function expectResponse(page: Page, expected: string | RegExp): Promise<void> {
  await expect.poll(() => responseText(page), { timeout: 10_000 }).toMatch(expected);
}

describe('when a developer uses GraphiQL in a browser', () => {
  const users = testUsers();
  const env = useBrowserCluster();

  it('should run a query with the Authorization header and show a subscription event sent by another client', async () => {
    const { a, b, browser } = env;
    const alice = await users.newUser('alice');
    const bob = await users.newUser('bob');
    const roomId = await createRoomAs(a.url, users.token(alice), [bob], { label: 'graphiql' });
    const page = await browser.context.newPage();
    const errors = collectPageErrors(page);
    await page.goto(`${a.base}/graphql`);
    await page.locator(QUERY_EDITOR).waitFor();

    // The Headers tab, as a user fills it in.
    await page.getByRole('button', { name: 'Headers' }).click();
    await setEditor(page, HEADERS_EDITOR, JSON.stringify({ Authorization: `Bearer ${users.token(alice)}` }));

    await setEditor(page, QUERY_EDITOR, 'query { me { id name } }');
    await page.locator('.graphiql-execute-button').click();
    await expectResponse(page, new RegExp(`"id": "${alice}"`));

    await setEditor(
      page,
      QUERY_EDITOR,
      `subscription { messageAdded(roomId: "${roomId}") { seq text sender { name } } }`,
    );
    await page.locator('.graphiql-execute-button').click();
    // The subscription is live on the server (a room stream is open): another client, on the
    // other instance, sends.
    await waitForStreams(a, 1);
    await gqlOk(b.url, SendMessageDocument, { input: { roomId, text: 'hello GraphiQL' } }, users.token(bob));
    await expectResponse(page, /"seq": 1, "text": "hello GraphiQL"/);
    expect(await responseText(page)).toMatch(/"name": "bob"/);
    await keepScreenshot(page, 'graphiql-subscription');
    expect(errors.filter((e) => !/favicon/.test(e))).toEqual([]);
  });
});
