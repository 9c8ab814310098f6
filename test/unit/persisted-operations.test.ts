import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createPersistedOperations, loadManifests, SDK_MANIFEST_PATH } from '../../src/infra/persisted-operations.js';
import { MeDocument, persistedHash } from '../../src/sdk/index.js';

const dir = mkdtempSync(join(tmpdir(), 'switchboard-manifest-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ME = persistedHash(MeDocument) as string;
const sdk = loadManifests([SDK_MANIFEST_PATH]);
const pq = (hash: string) => ({ extensions: { persistedQuery: { version: 1, sha256Hash: hash } } });

describe('loadManifests', () => {
  it('should read the SDK manifest by bare hex, the text of each hash being the document the SDK holds', () => {
    expect(sdk.size).toBeGreaterThan(20);
    expect(sdk.get(ME)).toMatch(/query Me \{ __typename me \{/);
  });

  it('should refuse a manifest whose key is not the sha256 of its document', () => {
    const path = join(dir, 'tampered.json');
    writeFileSync(path, JSON.stringify({ [`sha256:${ME}`]: 'query Me { me { id } } mutation Evil { leaveRoom(roomId: "x") }' }));
    expect(() => loadManifests([path])).toThrow(/is not the sha256 of its document/);
  });

  it('should stop an instance from starting with a manifest it cannot trust', async () => {
    const path = join(dir, 'not-an-object.json');
    writeFileSync(path, '[]');
    const config = loadConfig({ NODE_ENV: 'test', PERSISTED_OPERATIONS: 'required', PERSISTED_OPERATIONS_MANIFEST: path, REDIS_URL: 'redis://127.0.0.1:1' });
    await expect(buildApp(config)).rejects.toThrow(/^PERSISTED_OPERATIONS_MANIFEST: .*a manifest is a JSON object/);
  });
});

describe('createPersistedOperations', () => {
  const text = { query: 'query AdHoc { me { id } }' };
  const cases = [
    ['off', text, { query: text.query }],
    ['off', pq(ME), { code: 'BAD_USER_INPUT', message: 'PersistedQueryNotSupported' }],
    ['allowed', text, { query: text.query }],
    ['allowed', pq(ME), { query: sdk.get(ME) }],
    ['allowed', { ...text, ...pq('a'.repeat(64)) }, { query: text.query }],
    ['allowed', pq('a'.repeat(64)), { code: 'NOT_FOUND', message: 'PersistedQueryNotFound' }],
    ['required', text, { code: 'FORBIDDEN' }],
    ['required', { ...text, ...pq('a'.repeat(64)) }, { code: 'FORBIDDEN' }],
    ['required', { ...text, ...pq(ME) }, { query: sdk.get(ME) }],
    ['required', { documentId: `sha256:${ME}` }, { query: sdk.get(ME) }],
  ] as const;
  it.each(cases)('when %s, %j should give %j', (mode, params, expected) => {
    const r = createPersistedOperations(mode, sdk).resolve(params);
    if ('query' in expected) expect(r).toEqual({ query: expected.query });
    else expect({ code: r.error?.extensions.code, ...('message' in expected ? { message: r.error?.message } : {}) }).toEqual(expected);
  });
});

describe('the configuration of trusted documents and the demo', () => {
  const production = { NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', JWT_SECRET: 'a-production-secret' };

  it('should be off with the demo outside production, allowed without the demo in production', () => {
    expect(loadConfig({ NODE_ENV: 'development' })).toMatchObject({ persistedOperations: { mode: 'off', manifests: [] }, demo: true });
    expect(loadConfig(production)).toMatchObject({ persistedOperations: { mode: 'allowed' }, demo: false });
  });

  it('should take the mode and a list of manifests, and refuse an unknown mode', () => {
    const c = loadConfig({ ...production, PERSISTED_OPERATIONS: 'required', PERSISTED_OPERATIONS_MANIFEST: 'a.json, b.json' });
    expect(c.persistedOperations).toEqual({ mode: 'required', manifests: ['a.json', 'b.json'] });
    expect(() => loadConfig({ PERSISTED_OPERATIONS: 'sometimes' })).toThrow(/PERSISTED_OPERATIONS/);
  });
});
