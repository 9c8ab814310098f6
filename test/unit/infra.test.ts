import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse } from 'graphql';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, DEV_JWT_SECRET, loadConfig } from '../../src/config.js';
import { AppError } from '../../src/errors.js';
import { createAuthenticator, isIntrospectionOnly, signToken } from '../../src/infra/auth.js';
import { BoundedQueue } from '../../src/infra/bounded-queue.js';
import { decodeCursor, encodeCursor, MAX_PAGE_SIZE, pageSize, toConnection } from '../../src/infra/pagination.js';
import { decodeMessageId, encodeMessageId } from '../../src/messages/message-id.js';
import { parseMonitorArgs } from '../helpers/monitor.js';

/** Pure infrastructure: bounded queue, pagination, message ids, config, introspection check, JWT. */

/** Runs `fn`, expecting an `AppError` with this code (and field); returns it. */
function expectAppError(fn: () => unknown, code: string, field?: string): AppError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    const e = err as AppError;
    expect(e.extensions.code).toBe(code);
    if (field !== undefined) expect(e.extensions.field).toBe(field);
    return e;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

/** Settles within `ms`, or reports that it is still pending. */
const settled = <T>(p: Promise<T>, ms = 50) =>
  Promise.race([p.then((v) => ({ value: v })), new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);

/** A queue's owner that counts how often it is told the queue closed. */
const closesCounter = () => ({
  closes: 0,
  queueClosed() {
    this.closes++;
  },
});

describe('BoundedQueue', () => {
  describe('when items are pushed before anyone reads', () => {
    it('should hand them out in order and count them', async () => {
      const q = new BoundedQueue<number>(3);
      expect([q.push(1), q.push(2), q.push(3)]).toEqual([true, true, true]);
      expect(q.size).toBe(3);
      expect(await q.next()).toEqual({ value: 1, done: false });
      expect(await q.next()).toEqual({ value: 2, done: false });
      expect(q.size).toBe(1);
    });

    it('should refuse a push past capacity and keep what it holds', async () => {
      const q = new BoundedQueue<string>(2);
      q.push('a');
      q.push('b');
      expect(q.push('c')).toBe(false);
      expect(q.size).toBe(2);
      expect((await q.next()).value).toBe('a');
      expect(q.push('c')).toBe(true);
      expect((await q.next()).value).toBe('b');
      expect((await q.next()).value).toBe('c');
    });
  });

  describe('when a reader is waiting', () => {
    it('should resolve it with the next push, bypassing the buffer', async () => {
      const q = new BoundedQueue<number>(1);
      const pending = q.next();
      expect(await settled(pending)).toBe('pending');
      expect(q.push(42)).toBe(true);
      expect(await pending).toEqual({ value: 42, done: false });
      expect(q.size).toBe(0);
    });

    it('should deliver to a waiting reader even with capacity 0', async () => {
      const q = new BoundedQueue<number>(0);
      expect(q.push(1)).toBe(false);
      const pending = q.next();
      expect(q.push(2)).toBe(true);
      expect(await pending).toEqual({ value: 2, done: false });
    });

    it('should resolve it with done when the producer ends', async () => {
      const q = new BoundedQueue<number>(1);
      const pending = q.next();
      q.end();
      expect(await pending).toEqual({ value: undefined, done: true });
    });

    it('should reject it when the producer ends with an error', async () => {
      const q = new BoundedQueue<number>(1);
      const pending = q.next();
      q.end(new Error('boom'));
      await expect(pending).rejects.toThrow('boom');
    });
  });

  describe('when the producer ends', () => {
    it('should let the reader drain the queued items, then report done', async () => {
      const q = new BoundedQueue<number>(5);
      q.push(1);
      q.push(2);
      q.end();
      expect(q.closed).toBe(true);
      expect(q.push(3)).toBe(false);
      const seen: number[] = [];
      for await (const n of q) seen.push(n);
      expect(seen).toEqual([1, 2]);
      expect(await q.next()).toEqual({ value: undefined, done: true });
    });

    it('should drop queued items and throw the error once when ended with one', async () => {
      const q = new BoundedQueue<number>(5);
      q.push(1);
      q.end(new Error('gone'));
      await expect(q.next()).rejects.toThrow('gone');
      expect(await q.next()).toEqual({ value: undefined, done: true });
    });

    it('should tell its owner exactly once however often it is ended', () => {
      const owner = closesCounter();
      const q = new BoundedQueue<number>(1, owner);
      q.end();
      q.end(new Error('late'));
      void q.return();
      expect(owner.closes).toBe(1);
    });
  });

  describe('when the consumer returns', () => {
    it('should discard queued items, close, and tell its owner', async () => {
      const owner = closesCounter();
      const q = new BoundedQueue<number>(5, owner);
      q.push(1);
      q.push(2);
      expect(await q.return()).toEqual({ value: undefined, done: true });
      expect(owner.closes).toBe(1);
      expect(q.size).toBe(0);
      expect(q.push(3)).toBe(false);
      expect(await q.next()).toEqual({ value: undefined, done: true });
    });

    it('should end a for-await loop that breaks', async () => {
      const owner = closesCounter();
      const q = new BoundedQueue<number>(5, owner);
      q.push(1);
      q.push(2);
      for await (const n of q) {
        expect(n).toBe(1);
        break;
      }
      expect(owner.closes).toBe(1);
    });
  });

  describe('retain', () => {
    it('should keep only matching items, in order, freeing room', async () => {
      const q = new BoundedQueue<number>(4);
      [1, 2, 3, 4].forEach((n) => q.push(n));
      q.retain((n) => n % 2 === 0);
      expect(q.size).toBe(2);
      expect(q.push(6)).toBe(true);
      q.end();
      const drained: number[] = [];
      for await (const n of q) drained.push(n);
      expect(drained).toEqual([2, 4, 6]);
    });
  });
});

describe('pagination', () => {
  describe('pageSize', () => {
    it('should use the fallback when the argument is null or undefined', () => {
      expect(pageSize('first', undefined, 20)).toBe(20);
      expect(pageSize('first', null, 7)).toBe(7);
    });

    it('should accept 0 and the maximum', () => {
      expect(pageSize('first', 0, 20)).toBe(0);
      expect(pageSize('last', MAX_PAGE_SIZE, 20)).toBe(100);
    });

    it.each([-1, 101, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('should refuse %s with BAD_USER_INPUT naming the field', (n) => {
      expectAppError(() => pageSize('last', n, 20), 'BAD_USER_INPUT', 'last');
    });
  });

  describe('toConnection', () => {
    it('should build edges with cursors and page info', () => {
      const c = toConnection(['a', 'b', 'c'], (s) => `cur-${s}`, true, false);
      expect(c).toEqual({
        edges: [
          { cursor: 'cur-a', node: 'a' },
          { cursor: 'cur-b', node: 'b' },
          { cursor: 'cur-c', node: 'c' },
        ],
        pageInfo: { hasPreviousPage: true, hasNextPage: false, startCursor: 'cur-a', endCursor: 'cur-c' },
      });
    });

    it('should give an empty page null cursors', () => {
      expect(toConnection([], String, false, true).pageInfo).toEqual({
        hasPreviousPage: false,
        hasNextPage: true,
        startCursor: null,
        endCursor: null,
      });
    });
  });

  describe('cursors', () => {
    it('should round-trip strings and numbers, unicode included, as url-safe text', () => {
      const parts = [1_767_225_600_123, 'room/ü+🎉', 0, '', 'a\u0000b'];
      const cursor = encodeCursor(parts);
      expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(decodeCursor('after', cursor)).toEqual(parts);
    });

    it.each([
      ['garbage', '!!!not-base64!!!'],
      ['not JSON', Buffer.from('hello').toString('base64url')],
      ['a JSON object', Buffer.from('{"a":1}').toString('base64url')],
      ['a JSON string', Buffer.from('"x"').toString('base64url')],
      ['an array holding an object', Buffer.from('[1,{"a":1}]').toString('base64url')],
      ['an array holding null', Buffer.from('[null]').toString('base64url')],
    ])('should refuse %s with BAD_USER_INPUT naming the field', (_what, cursor) => {
      expectAppError(() => decodeCursor('after', cursor), 'BAD_USER_INPUT', 'after');
    });
  });
});

describe('message ids', () => {
  it('should round-trip room, epoch and seq', () => {
    const id = encodeMessageId('Ab3_-xYz', 42, 'Ep0-_');
    expect(decodeMessageId('messageId', id)).toEqual({ roomId: 'Ab3_-xYz', epoch: 'Ep0-_', seq: 42 });
  });

  it('should give the same (room, seq) a different id in another epoch', () => {
    expect(encodeMessageId('r', 1, 'a')).not.toBe(encodeMessageId('r', 1, 'b'));
  });

  it('should be opaque, url-safe and distinct per (room, seq)', () => {
    const ids = new Set<string>();
    for (const room of ['r1', 'r11', 'r1:1']) {
      for (const seq of [1, 11, 111]) {
        const id = encodeMessageId(room, seq, 'e1');
        expect(id).toMatch(/^[A-Za-z0-9_-]+$/);
        expect(id).not.toContain(room);
        ids.add(id);
      }
    }
    expect(ids.size).toBe(9);
  });

  it('should keep a room id that contains colons', () => {
    expect(decodeMessageId('after', encodeMessageId('a:b:c', 7, 'e1'))).toEqual({ roomId: 'a:b:c', epoch: 'e1', seq: 7 });
  });

  it('should handle large seqs', () => {
    expect(decodeMessageId('after', encodeMessageId('r', 2 ** 40, 'e1'))).toEqual({ roomId: 'r', epoch: 'e1', seq: 2 ** 40 });
  });

  const raw = (s: string) => Buffer.from(s).toString('base64url');
  it.each([
    ['an empty string', ''],
    ['garbage', '%%%'],
    ['no colon', raw('room42')],
    ['an empty room id', raw(':3')],
    ['seq 0', raw('room:0')],
    ['a negative seq', raw('room:-1')],
    ['a fractional seq', raw('room:1.5')],
    ['a seq with leading zeros', raw('room:01')],
    ['a seq in exponent form', raw('room:1e3')],
    ['a seq with spaces', raw('room: 1')],
    ['an unsafe integer seq', raw('room:9007199254740993')],
    ['a non-canonical encoding (padding)', `${encodeMessageId('room', 1, 'e1')}=`],
    ['a standard-base64 encoding', Buffer.from('room?>:1').toString('base64')],
    ['a pagination cursor', encodeCursor(['room', 1])],
  ])('should refuse %s with BAD_USER_INPUT naming the field', (_what, id) => {
    expectAppError(() => decodeMessageId('before', id), 'BAD_USER_INPUT', 'before');
  });
});

describe('loadConfig', () => {
  describe('when the environment is empty', () => {
    it('should use the documented defaults', () => {
      const c = loadConfig({});
      expect(c).toMatchObject({
        env: 'development',
        isProduction: false,
        port: 4000,
        host: '0.0.0.0',
        redisUrl: undefined,
        redisKeyPrefix: 'sb:',
        jwtSecret: DEV_JWT_SECRET,
        jwtJwksUrl: undefined,
        logLevel: 'info',
        subscriptionBufferSize: 1000,
        positionCheckMs: 2000,
        graphiql: true,
      });
      expect(c.instanceId).not.toBe('');
      expect(loadConfig({}).instanceId).not.toBe(c.instanceId);
    });
  });

  describe('when variables are set', () => {
    it('should parse them into typed values', () => {
      const c = loadConfig({
        NODE_ENV: 'test',
        PORT: '0',
        HOST: '127.0.0.1',
        REDIS_URL: 'redis://127.0.0.1:6380/2',
        REDIS_KEY_PREFIX: 'tenant-1:',
        REDIS_COMMAND_TIMEOUT_MS: '750',
        JWT_SECRET: 's3cret',
        SUBSCRIPTION_BUFFER_SIZE: '2',
        INSTANCE_ID: 'node-a',
        GRAPHIQL: 'no',
      });
      expect(c).toMatchObject({
        env: 'test',
        port: 0,
        host: '127.0.0.1',
        redisUrl: 'redis://127.0.0.1:6380/2',
        redisKeyPrefix: 'tenant-1:',
        redisCommandTimeoutMs: 750,
        jwtSecret: 's3cret',
        subscriptionBufferSize: 2,
        instanceId: 'node-a',
        graphiql: false,
        logLevel: 'silent',
      });
    });

    it('should treat empty strings as unset', () => {
      const c = loadConfig({ PORT: '', REDIS_URL: '', JWT_SECRET: '', GRAPHIQL: '' });
      expect(c).toMatchObject({ port: 4000, redisUrl: undefined, jwtSecret: DEV_JWT_SECRET, graphiql: true });
    });

    it.each([
      ['1', true],
      ['true', true],
      ['yes', true],
      ['0', false],
      ['false', false],
      ['no', false],
    ])('should read GRAPHIQL=%s as %s', (value, expected) => {
      expect(loadConfig({ GRAPHIQL: value }).graphiql).toBe(expected);
    });
  });

  describe('when several variables are bad', () => {
    it('should report every one of them in one ConfigError', () => {
      let error: unknown;
      try {
        loadConfig({
          PORT: 'eighty',
          REDIS_URL: 'not a url',
          SUBSCRIPTION_BUFFER_SIZE: '0',
          REDIS_KEY_PREFIX: 'bad prefix!',
          NODE_ENV: 'staging',
          GRAPHIQL: 'maybe',
        });
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ConfigError);
      const problems = (error as ConfigError).problems;
      for (const name of ['PORT', 'REDIS_URL', 'SUBSCRIPTION_BUFFER_SIZE', 'REDIS_KEY_PREFIX', 'NODE_ENV', 'GRAPHIQL']) {
        expect(problems.some((p) => p.startsWith(`${name}:`))).toBe(true);
      }
      expect(problems).toHaveLength(6);
      for (const p of problems) expect((error as ConfigError).message).toContain(p);
    });

    it.each([
      ['PORT', '65536'],
      ['PORT', '-1'],
      ['PORT', '80.5'],
      ['REDIS_COMMAND_TIMEOUT_MS', '10'],
      ['SUBSCRIPTION_BUFFER_SIZE', '1000001'],
      ['MAX_BODY_BYTES', '10'],
      ['POSITION_CHECK_INTERVAL_MS', '-5'],
      ['LOG_LEVEL', 'loud'],
      ['JWT_JWKS_URL', 'jwks.json'],
    ])('should refuse %s=%s', (name, value) => {
      expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
      try {
        loadConfig({ [name]: value });
      } catch (err) {
        expect((err as ConfigError).problems).toEqual([expect.stringMatching(new RegExp(`^${name}:`))]);
      }
    });
  });

  describe('when NODE_ENV is production', () => {
    it('should require REDIS_URL and JWT_SECRET, naming both', () => {
      try {
        loadConfig({ NODE_ENV: 'production' });
        expect.unreachable('loadConfig should have thrown');
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        const problems = (err as ConfigError).problems;
        expect(problems).toHaveLength(2);
        expect(problems[0]).toMatch(/^REDIS_URL:/);
        expect(problems[1]).toMatch(/^JWT_SECRET:/);
      }
    });

    it('should report its own rules together with malformed variables', () => {
      try {
        loadConfig({ NODE_ENV: 'production', PORT: 'x', JWT_SECRET: DEV_JWT_SECRET });
        expect.unreachable('loadConfig should have thrown');
      } catch (err) {
        const problems = (err as ConfigError).problems;
        expect(problems).toHaveLength(3);
        expect(problems.map((p) => p.split(':')[0]).sort()).toEqual(['JWT_SECRET', 'PORT', 'REDIS_URL']);
      }
    });

    it('should refuse the development secret', () => {
      expect(() =>
        loadConfig({ NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', JWT_SECRET: DEV_JWT_SECRET }),
      ).toThrow(/JWT_SECRET: the development secret/);
    });

    it('should accept a JWKS URL instead of a secret, with no secret defaulted', () => {
      const c = loadConfig({ NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', JWT_JWKS_URL: 'https://id.example/jwks' });
      expect(c).toMatchObject({ isProduction: true, jwtSecret: undefined, jwtJwksUrl: 'https://id.example/jwks' });
    });

    it('should start with both set, GraphiQL off unless asked for', () => {
      const c = loadConfig({ NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', JWT_SECRET: 'prod' });
      expect(c).toMatchObject({ isProduction: true, jwtSecret: 'prod', logLevel: 'info', graphiql: false });
      expect(loadConfig({ NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', JWT_SECRET: 'prod', GRAPHIQL: '1' }).graphiql).toBe(true);
    });
  });
});

describe('isIntrospectionOnly', () => {
  const check = (source: string, operationName?: string | null) => isIntrospectionOnly(parse(source), operationName);

  it.each([
    ['__typename', '{ __typename }'],
    ['__schema', '{ __schema { queryType { name } types { name fields { name } } } }'],
    ['__type', '{ __type(name: "Room") { name kind } }'],
    ['aliased meta fields', '{ t: __typename s: __schema { queryType { name } } }'],
    ['a fragment of meta fields', 'query { ...F } fragment F on Query { __typename }'],
    ['an inline fragment of meta fields', 'query { ... on Query { __typename } }'],
    ['a self-referencing fragment', 'query { ...A } fragment A on Query { __typename ...A }'],
    ['a mutation selecting only __typename', 'mutation { __typename }'],
  ])('should accept %s', (_what, source) => {
    expect(check(source)).toBe(true);
  });

  it.each([
    ['a data field', '{ me { id } }'],
    ['a data field beside __typename', '{ __typename me { id } }'],
    ['a data field in a fragment', 'query { __typename ...F } fragment F on Query { me { id } }'],
    ['a data field in a nested fragment', 'query { ...A } fragment A on Query { ...B } fragment B on Query { ...A apiVersion }'],
    ['a data field in an inline fragment', 'query { ... on Query { apiVersion } }'],
    ['a subscription field', 'subscription { messageAdded(roomId: "r") { id } }'],
  ])('should refuse %s', (_what, source) => {
    expect(check(source)).toBe(false);
  });

  describe('when the document holds several operations', () => {
    const doc = 'query Meta { __typename } query Data { me { id } }';

    it('should judge the one named by operationName', () => {
      expect(check(doc, 'Meta')).toBe(true);
      expect(check(doc, 'Data')).toBe(false);
    });

    it('should refuse when no operationName picks one, or it names none', () => {
      expect(check(doc)).toBe(false);
      expect(check(doc, null)).toBe(false);
      expect(check(doc, 'Missing')).toBe(false);
    });
  });
});

describe('createAuthenticator', () => {
  const SECRET = 'unit-secret-0123456789';
  const auth = createAuthenticator({ secret: SECRET, jwksUrl: undefined });
  const nowSeconds = () => Math.floor(Date.now() / 1000);

  describe('when the token is valid', () => {
    it('should return the principal, the name defaulting to the id', async () => {
      expect(await auth.verify(await signToken(SECRET, { sub: 'alice' }))).toEqual({ id: 'alice', name: 'alice', roles: [] });
    });

    it('should read the name (trimmed) and the string roles', async () => {
      const token = await new SignJWT({ name: '  Alice Liddell ', roles: ['admin', 7, 'mod', null] })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime('5m')
        .sign(new TextEncoder().encode(SECRET));
      expect(await auth.verify(token)).toEqual({ id: 'alice', name: 'Alice Liddell', roles: ['admin', 'mod'] });
    });

    it('should fall back to the id for a blank or non-string name', async () => {
      const blank = await signToken(SECRET, { sub: 'bob', name: '   ' });
      expect((await auth.verify(blank)).name).toBe('bob');
      const numeric = await new SignJWT({ name: 42 }).setProtectedHeader({ alg: 'HS256' }).setSubject('bob').sign(new TextEncoder().encode(SECRET));
      expect((await auth.verify(numeric)).name).toBe('bob');
    });
  });

  describe('when the token has expired', () => {
    it('should refuse it', async () => {
      const token = await signToken(SECRET, { sub: 'alice' }, nowSeconds() - 60);
      await expect(auth.verify(token)).rejects.toThrow(/exp/);
    });
  });

  describe('when the token is signed with another secret', () => {
    it('should refuse it', async () => {
      const token = await signToken('another-secret-entirely', { sub: 'alice' });
      await expect(auth.verify(token)).rejects.toThrow(/signature/i);
    });
  });

  describe('when the payload was tampered with', () => {
    it('should refuse it', async () => {
      const [h, , s] = (await signToken(SECRET, { sub: 'alice' })).split('.');
      const forged = Buffer.from(JSON.stringify({ sub: 'admin', exp: nowSeconds() + 3600 })).toString('base64url');
      await expect(auth.verify(`${h}.${forged}.${s}`)).rejects.toThrow(/signature/i);
    });
  });

  describe('when the token has no usable sub', () => {
    const sign = (claims: Record<string, unknown>, sub?: string) => {
      const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m');
      if (sub !== undefined) jwt.setSubject(sub);
      return jwt.sign(new TextEncoder().encode(SECRET));
    };

    it('should refuse a missing sub', async () => {
      await expect(auth.verify(await sign({ name: 'nobody' }))).rejects.toThrow(/sub/);
    });

    it('should refuse an empty sub', async () => {
      await expect(auth.verify(await sign({}, ''))).rejects.toThrow(/sub/);
    });

    it('should refuse a non-string sub', async () => {
      await expect(auth.verify(await sign({ sub: 12345 }))).rejects.toThrow(/sub/);
    });

    it('should refuse a sub over 128 characters', async () => {
      await expect(auth.verify(await sign({}, 'x'.repeat(129)))).rejects.toThrow(/sub/);
      expect((await auth.verify(await sign({}, 'x'.repeat(128)))).id).toHaveLength(128);
    });

    it('should refuse a sub with control characters', async () => {
      await expect(auth.verify(await sign({}, 'ali\nce'))).rejects.toThrow(/sub/);
    });
  });

  describe('when the algorithm is not accepted', () => {
    it('should refuse an unsigned (alg none) token', async () => {
      const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
      const payload = Buffer.from(JSON.stringify({ sub: 'alice', exp: nowSeconds() + 3600 })).toString('base64url');
      await expect(auth.verify(`${header}.${payload}.`)).rejects.toThrow(/not accepted/);
    });

    it('should refuse HS512 even with the right secret', async () => {
      const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS512' }).setSubject('alice').sign(new TextEncoder().encode(SECRET));
      await expect(auth.verify(token)).rejects.toThrow(/not accepted/);
    });

    it('should refuse RS256 when no JWKS URL is configured', async () => {
      const { privateKey } = await generateKeyPair('RS256');
      const token = await new SignJWT({}).setProtectedHeader({ alg: 'RS256' }).setSubject('alice').sign(privateKey);
      await expect(auth.verify(token)).rejects.toThrow(/not accepted/);
    });

    it('should refuse HS256 when no secret is configured', async () => {
      const noSecret = createAuthenticator({ secret: undefined, jwksUrl: undefined });
      await expect(noSecret.verify(await signToken(SECRET, { sub: 'alice' }))).rejects.toThrow(/not accepted/);
    });

    it('should refuse something that is not a JWT', async () => {
      await expect(auth.verify('not-a-jwt')).rejects.toThrow();
    });
  });

  describe('fromHeader', () => {
    it('should answer null when there is no header', async () => {
      expect(await auth.fromHeader(undefined)).toBeNull();
      expect(await auth.fromHeader(null)).toBeNull();
      expect(await auth.fromHeader('')).toBeNull();
    });

    it('should verify a Bearer token, whatever the scheme case', async () => {
      const token = await signToken(SECRET, { sub: 'carol' });
      expect((await auth.fromHeader(`Bearer ${token}`))?.id).toBe('carol');
      expect((await auth.fromHeader(`bearer  ${token} `))?.id).toBe('carol');
    });

    it.each(['Basic dXNlcjpwdw==', 'Bearer', 'Bearer a b', 'Token abc'])('should throw for %j', async (header) => {
      await expect(auth.fromHeader(header)).rejects.toThrow();
    });

    it('should throw for a Bearer token that does not verify', async () => {
      const token = await signToken('wrong-secret', { sub: 'carol' });
      await expect(auth.fromHeader(`Bearer ${token}`)).rejects.toThrow();
    });
  });

  describe('when a JWKS URL is configured', () => {
    let server: Server;
    let jwksUrl: string;
    let rsaKey: CryptoKey;
    let ecKey: CryptoKey;

    beforeAll(async () => {
      const rsa = await generateKeyPair('RS256');
      const ec = await generateKeyPair('ES256');
      rsaKey = rsa.privateKey;
      ecKey = ec.privateKey;
      const keys: JWK[] = [
        { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
        { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
      ];
      server = createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ keys }));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    });

    afterAll(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('should accept RS256 and ES256 tokens signed by its keys', async () => {
      const jwks = createAuthenticator({ secret: SECRET, jwksUrl });
      const rs = await new SignJWT({ name: 'Rita' }).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('rita').setExpirationTime('5m').sign(rsaKey);
      const es = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'ec-1' }).setSubject('eve').setExpirationTime('5m').sign(ecKey);
      expect(await jwks.verify(rs)).toEqual({ id: 'rita', name: 'Rita', roles: [] });
      expect((await jwks.verify(es)).id).toBe('eve');
      // HS256 keeps working beside the JWKS.
      expect((await jwks.verify(await signToken(SECRET, { sub: 'hana' }))).id).toBe('hana');
    });

    it('should refuse an RS256 token signed by a key it does not publish', async () => {
      const jwks = createAuthenticator({ secret: undefined, jwksUrl });
      const { privateKey } = await generateKeyPair('RS256');
      const token = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('mallory').sign(privateKey);
      await expect(jwks.verify(token)).rejects.toThrow();
    });

    it('should refuse an expired RS256 token', async () => {
      const jwks = createAuthenticator({ secret: undefined, jwksUrl });
      const token = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('rita').setExpirationTime(nowSeconds() - 60).sign(rsaKey);
      await expect(jwks.verify(token)).rejects.toThrow(/exp/);
    });
  });
});

describe('the authenticator cache', () => {
  describe('when a verified token expires', () => {
    it('should stop accepting it, cached or not', async () => {
      const auth = createAuthenticator({ secret: 'cache-secret', jwksUrl: undefined });
      const exp = Math.floor(Date.now() / 1000) + 1;
      const token = await new SignJWT({ name: 'Short' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('short-lived')
        .setExpirationTime(exp)
        .sign(new TextEncoder().encode('cache-secret'));
      expect(await auth.verify(token)).toMatchObject({ id: 'short-lived', name: 'Short' });
      expect(await auth.verify(token)).toMatchObject({ id: 'short-lived' }); // from the cache
      const deadline = Date.now() + 4000;
      let refused: unknown = null;
      while (!refused && Date.now() < deadline) {
        refused = await auth.verify(token).then(
          () => null,
          (e: unknown) => e,
        );
        if (!refused) await new Promise((r) => setTimeout(r, 50));
      }
      expect(refused).toBeInstanceOf(Error);
      expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000);
    });
  });

  describe('when a token is tampered with after a good one was cached', () => {
    it('should verify the tampered text on its own and refuse it', async () => {
      const auth = createAuthenticator({ secret: 'cache-secret', jwksUrl: undefined });
      const token = await signToken('cache-secret', { sub: 'u1' });
      await auth.verify(token);
      const [h, , s] = token.split('.');
      const forged = `${h}.${Buffer.from(JSON.stringify({ sub: 'admin', exp: 9999999999 })).toString('base64url')}.${s}`;
      await expect(auth.verify(forged)).rejects.toThrow();
    });
  });
});

describe('parseMonitorArgs (the test helper reading MONITOR lines)', () => {
  it('should split quoted arguments and undo Redis escapes', () => {
    expect(parseMonitorArgs('"hmget" "user:{a\\"b}" "name" "\\x00\\\\x41"')).toEqual(['hmget', 'user:{a"b}', 'name', '\u0000\\x41']);
  });
});
