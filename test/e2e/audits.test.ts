import { serverAudits, type AuditResult } from 'graphql-http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInstance, uniquePrefix, type TestInstance } from '../helpers/server.js';

/**
 * GraphQL over HTTP conformance: graphql-http's server audits against a live instance. A `MUST`
 * that fails is an `error` and fails its test; `SHOULD`/`MAY` misses are warnings, printed.
 */

let instance: TestInstance | undefined;
const warnings: string[] = [];
const notices: string[] = [];

// The URL is read when each audit runs, after beforeAll started the instance.
const audits = serverAudits({
  url: () => {
    if (!instance) throw new Error('the instance is not started');
    return instance.url;
  },
});

beforeAll(async () => {
  instance = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('audits') });
});

afterAll(async () => {
  await instance?.stop();
  const list = (items: string[]) => items.map((i) => `\n  - ${i}`).join('');
  console.warn(
    `graphql-http audits: ${audits.length} run, ${warnings.length} warning(s)${list(warnings)}` +
      (notices.length > 0 ? `\n${notices.length} notice(s)${list(notices)}` : ''),
  );
});

/** A failed result's reason with the body the server answered, for the failure message. */
async function describeFailure(result: Exclude<AuditResult, { status: 'ok' }>): Promise<string> {
  let body = '';
  try {
    body = await result.response.clone().text();
  } catch {
    body = '(body unreadable)';
  }
  return `${result.name}: ${result.reason} (HTTP ${result.response.status}) ${body.slice(0, 500)}`;
}

describe('when graphql-http audits the /graphql endpoint', () => {
  it('should have the full list of audits to run', () => {
    expect(audits.length).toBeGreaterThanOrEqual(50);
    expect(new Set(audits.map((a) => a.id)).size).toBe(audits.length);
  });

  for (const audit of audits) {
    it(`should pass ${audit.id}: ${audit.name}`, async () => {
      const result = await audit.fn();
      if (result.status === 'ok') return;
      if (result.status === 'warn') warnings.push(`${result.id} ${result.name}: ${result.reason}`);
      if (result.status === 'notice') notices.push(`${result.id} ${result.name}: ${result.reason}`);
      if (result.status === 'error') expect.fail(await describeFailure(result));
    });
  }
});
