import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { CreateRoomDocument, MeDocument, OnMessageAddedDocument, SendMessageDocument } from '../generated/graphql.js';
import { deferred, gql, gqlOk, subscribe, waitFor, withTimeout, wsClient } from '../helpers/clients.js';
import { killAllChildren, runToExit, startServer, type ChildServer } from '../helpers/process.js';
import { sharedRedisUrl, TEST_JWT_SECRET, tokenFor, uniquePrefix } from '../helpers/server.js';

const tmpDirs: string[] = [];
const tempDir = (label: string) => {
  const dir = mkdtempSync(join(tmpdir(), `switchboard-${label}-`));
  tmpDirs.push(dir);
  return dir;
};

afterEach(async () => {
  await killAllChildren();
});

afterAll(() => {
  for (const dir of tmpDirs) rmSync(dir, { recursive: true, force: true });
});

/** A server child on the shared test Redis. */
const startOnSharedRedis = (env: Record<string, string> = {}) =>
  startServer({ REDIS_URL: sharedRedisUrl(), REDIS_KEY_PREFIX: uniquePrefix('proc'), JWT_SECRET: TEST_JWT_SECRET, ...env });

/**
 * Starts a POST whose body is held back: `Expect: 100-continue` makes the server answer "100
 * Continue" once it has parsed the headers, so the request is provably in flight on the server.
 */
async function heldRequest(url: string, token: string, body: string) {
  const response = deferred<{ status: number; body: string }>();
  const req = httpRequest(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      authorization: `Bearer ${token}`,
      expect: '100-continue',
    },
  });
  req.on('response', (res: IncomingMessage) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => (text += d));
    res.on('end', () => response.resolve({ status: res.statusCode ?? 0, body: text }));
    res.on('error', response.reject);
  });
  req.on('error', response.reject);
  const accepted = new Promise<void>((resolve) => req.once('continue', resolve));
  req.flushHeaders();
  await withTimeout(accepted, 5000, '100 Continue');
  const half = Math.floor(body.length / 2);
  req.write(body.slice(0, half));
  return {
    /** Sends the rest of the body; resolves with the response. */
    finish() {
      req.end(body.slice(half));
      return withTimeout(response.promise, 5000, 'the held request to complete');
    },
  };
}

describe.each(['SIGTERM', 'SIGINT'] as const)('when the server receives %s', (signal) => {
  it('should close WebSockets with 1001, stop accepting, complete the in-flight request, and exit 0 within 10 s', async () => {
    const server: ChildServer = await startOnSharedRedis();
    const alice = await tokenFor('alice');
    const { createRoom } = await gqlOk(server.url, CreateRoomDocument, { input: { name: 'shutdown' } }, alice);
    const roomId = createRoom.id;

    const closed = deferred<number>();
    const ws = wsClient(server.wsUrl, alice, { onClose: (code) => closed.resolve(code) });
    const sub = subscribe(ws, OnMessageAddedDocument, { roomId });
    await waitFor(
      async () => {
        if (sub.results.length === 0) await gqlOk(server.url, SendMessageDocument, { input: { roomId, text: 'live' } }, alice);
        return sub.results.length > 0;
      },
      5000,
      'the subscription to be live',
    );

    const held = await heldRequest(
      server.url,
      alice,
      JSON.stringify({ query: 'mutation ($roomId: ID!) { sendMessage(input: { roomId: $roomId, text: "in flight" }) { text } }', variables: { roomId } }),
    );
    const signalledAt = Date.now();
    server.kill(signal);
    await server.waitForLine(/shutting down/, 5000);

    expect(await withTimeout(closed.promise, 5000, 'the WebSocket to close')).toBe(1001);
    // Stopped accepting: a new connection is refused while the held request still runs.
    await expect(fetch(`${server.base}/health`, { signal: AbortSignal.timeout(2000) })).rejects.toThrow();
    expect(server.hasExited()).toBe(false);

    const res = await held.finish();
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ data: { sendMessage: { text: 'in flight' } } });

    const exit = await withTimeout(server.exited, 10_000, 'the process to exit');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(10_000);
    await ws.dispose();
  });
});

describe('when the configuration is invalid', () => {
  const serverCommand: [string, string[]] = [process.execPath, ['--import', 'tsx', 'src/index.ts']];

  it('should exit 1 with one stderr line naming REDIS_URL when NODE_ENV=production has no REDIS_URL', async () => {
    const r = await runToExit(...serverCommand, { NODE_ENV: 'production', JWT_SECRET: 'a-production-secret-of-some-length', PORT: '0' });
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/REDIS_URL/);
    expect(r.stdout).not.toMatch(/listening/);
  });

  it('should exit 1 with a clear line naming PORT when PORT is not a number', async () => {
    const r = await runToExit(...serverCommand, {
      NODE_ENV: 'test',
      PORT: 'abc',
      REDIS_URL: sharedRedisUrl(),
      JWT_SECRET: TEST_JWT_SECRET,
    });
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/\bPORT\b/);
    // A message for a person, not a stack trace.
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });
});

describe('when no REDIS_URL is set outside production', () => {
  it('should run an embedded redis-server with AOF in EMBEDDED_REDIS_DIR and stop it on SIGTERM', async () => {
    const dir = tempDir('embedded');
    const server = await startServer({ NODE_ENV: 'development', EMBEDDED_REDIS_DIR: dir, JWT_SECRET: TEST_JWT_SECRET });
    const ready = await fetch(`${server.base}/ready`);
    expect(ready.status).toBe(200);

    const alice = await tokenFor('alice');
    const me = await gqlOk(server.url, MeDocument, undefined, alice);
    expect(me.me.id).toBe('alice');

    const files = readdirSync(dir, { recursive: true }).map(String);
    expect(files.some((f) => /appendonly/.test(f)), files.join(', ')).toBe(true);
    const pid = Number(readFileSync(join(dir, 'switchboard-redis.pid'), 'utf8'));
    expect(Number.isInteger(pid) && pid > 0).toBe(true);
    try {
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toMatch(/redis-server/);
      const exit = await server.stop();
      expect(exit).toEqual({ code: 0, signal: null });
      await waitFor(() => !existsSync(`/proc/${pid}`), 5000, `redis-server ${pid} to be gone`);
    } finally {
      // Never leave an orphan behind when an assertion above failed.
      if (existsSync(`/proc/${pid}`) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server')) {
        process.kill(pid, 'SIGKILL');
      }
    }
  });
});

describe('when a developer prints a token with npm run token', () => {
  it('should print a JWT that a server with the same JWT_SECRET accepts', async () => {
    const secret = `token-secret-${Date.now()}`;
    const r = await runToExit('npm', ['run', 'token', '--', 'alice', 'Alice A'], { JWT_SECRET: secret, NODE_ENV: 'development' });
    expect(r.code, r.stderr).toBe(0);
    const token = r.stdout
      .trim()
      .split('\n')
      .map((l) => l.trim())
      .find((l) => /^[\w-]+\.[\w-]+\.[\w-]+$/.test(l));
    expect(token, r.stdout).toBeDefined();

    const server = await startOnSharedRedis({ JWT_SECRET: secret });
    const me = await gql(server.url, MeDocument, undefined, { token: token! });
    expect(me.errors).toBeUndefined();
    expect(me.data?.me).toMatchObject({ id: 'alice', name: 'Alice A' });
    // And the secret matters: a server with another secret refuses it.
    const other = await startOnSharedRedis({ JWT_SECRET: `${secret}-other` });
    const refused = await gql(other.url, MeDocument, undefined, { token: token! });
    expect(refused.errors?.map((e) => e.extensions?.code)).toEqual(['UNAUTHENTICATED']);
    await Promise.all([server.stop(), other.stop()]);
  });
});
