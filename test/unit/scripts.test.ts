import { LUA_DIRS } from '../../src/app.js';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadScripts } from '../../src/infra/scripts.js';
import { messageKeys } from '../../src/messages/messages.keys.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/server.js';

/** The Lua script loader: naming rules, duplicates, key counts, and surviving SCRIPT FLUSH. */

const APP_LUA_DIRS = LUA_DIRS;
const prefix = uniquePrefix('scripts');
const tmpRoot = mkdtempSync(join(tmpdir(), 'switchboard-scripts-test-'));
const clients: Redis[] = [];
let dirCount = 0;

/** A fresh folder holding the given `.lua` (or other) files. */
function luaDir(files: Record<string, string>): string {
  const dir = join(tmpRoot, `d${dirCount++}`);
  mkdirSync(dir);
  for (const [name, body] of Object.entries(files)) writeFileSync(join(dir, name), body);
  return dir;
}

/** A client with this file's key prefix (scripts are defined per client). */
function client(): Redis {
  const c = new Redis(sharedRedisUrl(), { keyPrefix: prefix });
  clients.push(c);
  return c;
}

const ECHO = "return { KEYS[1] or '', ARGV[1] or '', #KEYS, #ARGV }";

let admin: Redis;
beforeAll(() => {
  admin = new Redis(sharedRedisUrl());
});

afterAll(async () => {
  for await (const keys of admin.scanStream({ match: `${prefix}*`, count: 500 })) {
    if ((keys as string[]).length > 0) await admin.unlink(...(keys as string[]));
  }
  for (const c of clients) c.disconnect();
  admin.disconnect();
  rmSync(tmpRoot, { recursive: true, force: true });
});

describe('loadScripts', () => {
  describe('when given the application folders', () => {
    it('should register every script under its command name', () => {
      const scripts = loadScripts(client(), APP_LUA_DIRS);
      expect(scripts.names().sort()).toEqual([
        'addMembers',
        'applyCall',
        'cacheRead',
        'cacheWrite',
        'claimPush',
        'closePoll',
        'connectUser',
        'createPoll',
        'deleteMessage',
        'editMessage',
        'indexMessage',
        'joinRoom',
        'leaveRoom',
        'markRead',
        'publishCallKey',
        'pushSummary',
        'rateLimit',
        'readMessages',
        'reapInstance',
        'registerConnection',
        'removeMember',
        'roomPresence',
        'searchRoom',
        'sendMessage',
        'sendWithHooks',
        'setAway',
        'setTyping',
        'settleOffline',
        'touchUser',
        'unreadCount',
        'unregisterConnection',
        'vote',
      ]);
    });
  });

  describe('when folders are strings or file URLs', () => {
    it('should accept both', () => {
      const a = luaDir({ 'fromString-1.lua': ECHO });
      const b = luaDir({ 'fromUrl-1.lua': ECHO });
      const scripts = loadScripts(client(), [a, pathToFileURL(`${b}/`)]);
      expect(scripts.names().sort()).toEqual(['fromString', 'fromUrl']);
    });
  });

  describe('when a folder holds files that are not Lua', () => {
    it('should ignore them', () => {
      const dir = luaDir({ 'README.md': '# notes', 'ok-1.lua': ECHO, 'ok-1.lua.bak': 'junk' });
      expect(loadScripts(client(), [dir]).names()).toEqual(['ok']);
    });
  });

  describe('when two files define the same command name', () => {
    it('should fail across folders, naming the script', () => {
      const a = luaDir({ 'twice-1.lua': ECHO });
      const b = luaDir({ 'twice-1.lua': ECHO });
      expect(() => loadScripts(client(), [a, b])).toThrow(/twice.*defined twice/);
    });

    it('should fail within one folder even when the key counts differ', () => {
      const dir = luaDir({ 'twice-1.lua': ECHO, 'twice-2.lua': ECHO });
      expect(() => loadScripts(client(), [dir])).toThrow(/twice.*defined twice/);
    });

    it('should fail when the same folder is given twice', () => {
      const dir = luaDir({ 'echoOnce-1.lua': ECHO });
      expect(() => loadScripts(client(), [dir, dir])).toThrow(/defined twice/);
    });
  });

  describe('when a script name is an ioredis method', () => {
    it('should run the script and leave the method alone (scripts are not defined on the client)', async () => {
      const dir = luaDir({ 'get-1.lua': "return 'script:' .. KEYS[1]" });
      const redis = client();
      const scripts = loadScripts(redis, [dir]);
      await redis.set('plain', 'value');
      expect(await scripts.get('get')(['k'], [])).toBe(`script:${prefix}k`);
      expect(await redis.get('plain')).toBe('value');
      expect(Object.keys(redis.pipeline())).not.toContain('get');
    });
  });

  describe('when a file is badly named', () => {
    it.each([
      'noKeyCount.lua',
      'Capital-1.lua',
      'snake_case-1.lua',
      'kebab-case-1.lua',
      '1starts-1.lua',
      'keys-x.lua',
      'keys--1.lua',
      '-1.lua',
    ])('should refuse %s, naming the file', (file) => {
      const dir = luaDir({ [file]: ECHO });
      expect(() => loadScripts(client(), [dir])).toThrow(file);
    });
  });

  describe('when a folder does not exist', () => {
    it('should fail', () => {
      expect(() => loadScripts(client(), [join(tmpRoot, 'missing')])).toThrow();
    });
  });
});

describe('a script that includes others (-- include:) and takes any number of keys (-n.lua)', () => {
  const files = {
    'echo-1.lua': ECHO,
    'pair-2.lua': "return { KEYS[1], KEYS[2], ARGV[1] }",
    'both-n.lua':
      "-- include: echo pair\nreturn { INCLUDED.echo({ KEYS[1] }, { ARGV[1] }), INCLUDED.pair({ KEYS[2], KEYS[3] }, { ARGV[2] }), #KEYS }",
  };

  it('should run the included scripts as functions of their own KEYS and ARGV, with the key count given first', async () => {
    const scripts = loadScripts(client(), [luaDir(files)]);
    expect(await scripts.get('both')(['a', 'b', 'c'], ['x', 'y'])).toEqual([
      [`${prefix}a`, 'x', 1, 1],
      [`${prefix}b`, `${prefix}c`, 'y'],
      3,
    ]);
    // Any number of keys: the count is not checked against the file name.
    expect(((await scripts.get('both')(['a', 'b', 'c', 'd'], ['x', 'y'])) as unknown[])[2]).toBe(4);
    expect([...scripts.included('both')]).toEqual(['echo', 'pair']);
    expect(scripts.included('echo').size).toBe(0);
  });

  it('should refuse to load a script that includes one not registered, naming it', () => {
    expect(() => loadScripts(client(), [luaDir({ 'lonely-n.lua': '-- include: missing\nreturn 1' })])).toThrow(/missing/);
  });
});

describe('a script runner', () => {
  it('should split keys and arguments by the count in the file name, and prefix the keys', async () => {
    const dir = luaDir({ 'echoTwo-2.lua': "return { KEYS[1], KEYS[2], ARGV[1], #KEYS, #ARGV }" });
    const scripts = loadScripts(client(), [dir]);
    expect(await scripts.get('echoTwo')(['k1', 'k2'], ['a', 3])).toEqual([`${prefix}k1`, `${prefix}k2`, 'a', 2, 2]);
  });

  it('should send many arguments in order, numbers as their decimal text, leaving the given arrays as they were', async () => {
    const dir = luaDir({ 'all-n.lua': 'return { KEYS[1], KEYS[#KEYS], #KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[#ARGV], #ARGV }' });
    const scripts = loadScripts(client(), [dir]);
    const keys = Array.from({ length: 40 }, (_, i) => `key${i}`);
    const args: (string | number)[] = [-2, 1.5, '', ...Array.from({ length: 200 }, (_, i) => (i % 2 ? i : `a${i}`))];
    const given = { keys: [...keys], args: [...args] };
    // Twice: the first call on a connection is an EVAL, the next an EVALSHA.
    for (let round = 0; round < 2; round++) {
      expect(await scripts.get('all')(keys, args)).toEqual([`${prefix}key0`, `${prefix}key39`, 40, '-2', '1.5', '', '199', 203]);
    }
    expect({ keys, args }).toEqual(given);
  });

  it('should send a Buffer argument as its bytes, beside strings and numbers', async () => {
    const dir = luaDir({ 'bytes-1.lua': 'return { KEYS[1], ARGV[1], ARGV[2], ARGV[3], #ARGV[2] }' });
    const bytes = Buffer.from([0xff, 0x00, 0x80, 0x7b]);
    const reply = (await loadScripts(client(), [dir]).getBuffer('bytes')(['k'], ['text', bytes, 7])) as (Buffer | number)[];
    expect(reply.map((r) => (Buffer.isBuffer(r) ? r.toString('hex') : r))).toEqual([
      Buffer.from(`${prefix}k`).toString('hex'),
      Buffer.from('text').toString('hex'),
      'ff00807b',
      Buffer.from('7').toString('hex'),
      4,
    ]);
  });

  it('should hand back Buffers from getBuffer, for binary values', async () => {
    const dir = luaDir({ 'binary-0.lua': "return { ARGV[1], 'text' }" });
    const reply = (await loadScripts(client(), [dir]).getBuffer('binary')([], ['\u00ff'])) as Buffer[];
    expect(reply.map((b) => Buffer.isBuffer(b))).toEqual([true, true]);
    expect(reply[0]?.equals(Buffer.from('\u00ff', 'utf8'))).toBe(true);
    expect(reply[1]?.toString()).toBe('text');
  });

  it('should accept a script that takes no keys', async () => {
    const dir = luaDir({ 'noKeys-0.lua': ECHO });
    expect(await loadScripts(client(), [dir]).get('noKeys')([], ['x'])).toEqual(['', 'x', 0, 1]);
  });

  describe('when given the wrong number of keys', () => {
    it('should reject without running the script', async () => {
      const c = client();
      const dir = luaDir({ 'countTwo-2.lua': "redis.call('INCR', KEYS[1]) return 1" });
      const run = loadScripts(c, [dir]).get('countTwo');
      await expect(run(['only-one'], [])).rejects.toThrow('countTwo takes 2 keys, got 1');
      await expect(run(['a', 'b', 'c'], [])).rejects.toThrow('countTwo takes 2 keys, got 3');
      expect(await c.exists('only-one', 'a')).toBe(0);
    });

    it('should reject for the application scripts too', async () => {
      const scripts = loadScripts(client(), APP_LUA_DIRS);
      await expect(scripts.get('sendMessage')([roomKeys.room('r'), roomKeys.members('r')], ['r', 'u', 'x', '', 1, 1])).rejects.toThrow(
        /sendMessage takes 4 keys, got 2/,
      );
    });
  });

  describe('when the name was never registered', () => {
    it('should throw at lookup', () => {
      const scripts = loadScripts(client(), APP_LUA_DIRS);
      expect(() => scripts.get('nope')).toThrow('Lua script nope is not registered');
    });

    it('should not hand out ordinary client methods as scripts', () => {
      const scripts = loadScripts(client(), APP_LUA_DIRS);
      expect(() => scripts.get('get')).toThrow(/not registered/);
    });
  });

  describe('when the script fails inside Redis', () => {
    it('should reject with the Redis error', async () => {
      const c = client();
      await c.set('a-string', 'x');
      const dir = luaDir({ 'wrongType-1.lua': "return redis.call('HGET', KEYS[1], 'f')" });
      await expect(loadScripts(c, [dir]).get('wrongType')(['a-string'], [])).rejects.toThrow(/WRONGTYPE/);
    });
  });

  describe('after SCRIPT FLUSH (as after a Redis restart)', () => {
    it('should keep working by falling back from EVALSHA to EVAL', async () => {
      const c = client();
      const scripts = loadScripts(c, APP_LUA_DIRS);
      const roomId = 'flushed';
      await c.hset(roomKeys.room(roomId), { id: roomId, ownerId: 'o', visibility: 'PUBLIC', seq: 0 });
      await c.zadd(roomKeys.members(roomId), 0, 'o');
      const send = (text: string) =>
        scripts.get('sendMessage')(
          [roomKeys.room(roomId), roomKeys.members(roomId), messageKeys.messages(roomId), messageKeys.dedupe(roomId, 'o', '')],
          [roomId, 'o', text, '', 1, 60, 0],
        ) as Promise<[number, string, number]>;
      expect((await send('before'))[0]).toBe(0);
      // Other test files use the same server: the flush only costs them a reload, never a failure.
      await admin.script('FLUSH');
      const [status, json] = await send('after');
      expect(status).toBe(0);
      expect(JSON.parse(json)).toMatchObject({ seq: 2, text: 'after' });
      expect(await scripts.get('joinRoom')([roomKeys.room(roomId), roomKeys.members(roomId)], ['newcomer'])).toEqual([0, 1]);
    });

    it('should keep working inside a pipeline too', async () => {
      const c = client();
      const dir = luaDir({ 'bump-1.lua': "return redis.call('INCR', KEYS[1])" });
      const scripts = loadScripts(c, [dir]);
      const run = async () => {
        const pipeline = c.pipeline();
        scripts.queue(pipeline, 'bump', ['bumped'], []);
        pipeline.get('bumped');
        return (await pipeline.exec())?.map(([err, value]) => err ?? value);
      };
      expect(await run()).toEqual([1, '1']);
      await admin.script('FLUSH');
      // The EVALSHA fails with NOSCRIPT and is sent again as EVAL: its reply comes back with the pipeline's.
      const [bumped] = (await run()) ?? [];
      expect(bumped).toBe(2);
      expect(await c.get('bumped')).toBe('2');
    });
  });
});
