import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScriptRunner } from '../../src/infra/scripts.js';
import { presenceKeys as keys } from '../../src/presence/presence.keys.js';
import { typingKeys } from '../../src/typing/typing.keys.js';
import { userKeys } from '../../src/users/users.keys.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The presence and typing Lua scripts, called directly: every reply shape, the state they leave,
 * and races. Races run as `Promise.all` of concurrent calls spread over several connections, as
 * several instances would send them; Lua makes each call atomic, so exactly one caller may see
 * each transition.
 */

const prefix = uniquePrefix('presence-lua');
const CONNECTIONS = 4;
const NOW = 1_767_225_600_000;
const GRACE = 5000;
const TIMEOUT = 6000;

interface Runners {
  registerConnection: ScriptRunner;
  connectUser: ScriptRunner;
  unregisterConnection: ScriptRunner;
  settleOffline: ScriptRunner;
  reapInstance: ScriptRunner;
  roomPresence: ScriptRunner;
  setAway: ScriptRunner;
  setTyping: ScriptRunner;
}

const clients: Redis[] = [];
const runners: Runners[] = [];
let redis: Redis;

/** The runners of the i-th connection (round robin), so concurrent calls use several connections. */
const on = (i: number) => runners[i % runners.length] as Runners;

const id = (label: string) => `${label}-${randomBytes(4).toString('hex')}`;

type RegisterReply = [number, number, number];
type UnregisterReply = [number, number];
type SettleReply = [number, string];

const register = (conn: string, user: string, iid: string, i = 0) =>
  on(i).registerConnection(
    [keys.connections(user), keys.presence(user), keys.instanceConnections(iid), keys.grace()],
    [conn, user],
  ) as Promise<RegisterReply>;

const unregister = (conn: string, user: string, iid: string, now = NOW, grace = GRACE, i = 0) =>
  on(i).unregisterConnection(
    [keys.connections(user), keys.presence(user), keys.instanceConnections(iid), keys.grace()],
    [conn, user, now, grace],
  ) as Promise<UnregisterReply>;

const settle = (user: string, now: number, i = 0) =>
  on(i).settleOffline([keys.connections(user), keys.presence(user), keys.grace()], [user, now]) as Promise<SettleReply>;

const reap = (iid: string, deadline: number, i = 0) =>
  on(i).reapInstance([keys.instances(), keys.instanceConnections(iid), keys.instanceRooms(iid)], [iid, deadline]) as Promise<
    (number | string)[]
  >;

const roomPresence = (roomId: string, user: string, iid: string, delta: number, i = 0) =>
  on(i).roomPresence([keys.roomPresent(roomId), keys.instanceRooms(iid)], [user, `${roomId}\n${user}`, delta]) as Promise<number>;

const setAway = (user: string, away: boolean, i = 0) =>
  on(i).setAway([keys.connections(user), keys.presence(user)], [away ? '1' : '']) as Promise<[number, number]>;

const setTyping = (roomId: string, user: string, typing: boolean, now = NOW, i = 0) =>
  on(i).setTyping([typingKeys.typing(roomId), typingKeys.rooms()], [roomId, user, typing ? 1 : 0, now, TIMEOUT]) as Promise<
    (number | string)[]
  >;

const expireTyping = (roomId: string, now: number, i = 0) =>
  // The expiry sweep is setTyping with no user change (ARGV[3] '').
  on(i).setTyping([typingKeys.typing(roomId), typingKeys.rooms()], [roomId, '', '', now, TIMEOUT]) as Promise<(number | string)[]>;

const state = (user: string) => redis.hgetall(keys.presence(user));
const count = (xs: unknown[], v: unknown) => xs.filter((x) => x === v).length;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** A user with `n` registered connections on instance `iid`. */
async function connected(n: number, iid = id('i')) {
  const user = id('u');
  const conns = range(n).map((i) => `${iid}:${user}:${i}`);
  for (const c of conns) await register(c, user, iid);
  return { user, conns, iid };
}

beforeAll(async () => {
  for (let i = 0; i < CONNECTIONS; i++) {
    // scripts are registered per client: each connection gets its own registry.
    const { redis: c, scripts } = await luaConnection(prefix);
    clients.push(c);
    runners.push({
      registerConnection: scripts.get('registerConnection'),
      connectUser: scripts.get('connectUser'),
      unregisterConnection: scripts.get('unregisterConnection'),
      settleOffline: scripts.get('settleOffline'),
      reapInstance: scripts.get('reapInstance'),
      roomPresence: scripts.get('roomPresence'),
      setAway: scripts.get('setAway'),
      setTyping: scripts.get('setTyping'),
    });
  }
  redis = clients[0] as Redis;
});

afterAll(async () => {
  await deletePrefixed(prefix);
  for (const c of clients) c.disconnect();
});

describe('registerConnection', () => {
  describe('when a user opens their first connection', () => {
    it('should answer transition 1, mark them ONLINE and file the connection under its instance', async () => {
      const user = id('u');
      const iid = id('i');
      expect(await register('c1', user, iid)).toEqual([1, 0, 1]);
      expect(await state(user)).toEqual({ state: 'ONLINE', away: '' });
      expect(await redis.smembers(keys.connections(user))).toEqual(['c1']);
      expect(await redis.hgetall(keys.instanceConnections(iid))).toEqual({ c1: user });
    });
  });

  describe('when the user is already connected', () => {
    it('should answer transition 0 with the connection count, and report AWAY', async () => {
      const { user, iid } = await connected(1);
      expect(await register('second', user, iid)).toEqual([0, 0, 2]);
      expect(await setAway(user, true)).toEqual([1, 2]);
      expect(await register('third', user, id('other'))).toEqual([0, 1, 3]);
      // The same connection registered twice counts once.
      expect(await register('third', user, iid)).toEqual([0, 1, 3]);
    });
  });

  describe('when the user comes back within their grace period', () => {
    it('should answer transition 0 and end the grace period', async () => {
      const { user, conns, iid } = await connected(1);
      await unregister(conns[0]!, user, iid);
      expect(await redis.zscore(keys.grace(), user)).toBe(String(NOW + GRACE));
      expect(await register('reload', user, iid)).toEqual([0, 0, 1]);
      expect(await redis.zscore(keys.grace(), user)).toBeNull();
      expect(await state(user)).toMatchObject({ state: 'ONLINE' });
    });
  });

  describe('when the user comes back after going OFFLINE', () => {
    it('should answer transition 1 and forget AWAY', async () => {
      const { user, conns, iid } = await connected(1);
      await setAway(user, true);
      expect(await unregister(conns[0]!, user, iid, NOW, 0)).toEqual([1, 0]);
      expect(await register('again', user, iid)).toEqual([1, 0, 1]);
      expect(await state(user)).toMatchObject({ state: 'ONLINE', away: '' });
    });
  });

  describe('when 20 connections of one user register concurrently on several instances', () => {
    it('should give exactly one caller transition 1 and count every connection once', async () => {
      const user = id('u');
      const replies = await Promise.all(range(20).map((i) => register(`c${i}`, user, `i${i % 3}`, i)));
      expect(count(replies.map((r) => r[0]), 1)).toBe(1);
      expect(replies.map((r) => r[2]).sort((x, y) => x - y)).toEqual(range(20).map((i) => i + 1));
      expect(await redis.scard(keys.connections(user))).toBe(20);
      expect(await state(user)).toEqual({ state: 'ONLINE', away: '' });
    });
  });
});

describe('connectUser', () => {
  const connectUser = (conn: string, user: string, iid: string, name: string, now: number, i = 0) =>
    on(i).connectUser(
      [keys.connections(user), keys.presence(user), keys.instanceConnections(iid), keys.grace(), userKeys.user(user)],
      [conn, user, name, now],
    ) as Promise<RegisterReply>;

  it('should register the connection as registerConnection does and write the user, keeping their createdAt', async () => {
    const user = id('u');
    const iid = id('i');
    expect(await connectUser(`${iid}:1`, user, iid, 'Una', NOW)).toEqual([1, 0, 1]);
    expect(await redis.hgetall(userKeys.user(user))).toEqual({ id: user, name: 'Una', createdAt: String(NOW) });
    expect(await state(user)).toMatchObject({ state: 'ONLINE' });
    expect(await redis.hget(keys.instanceConnections(iid), `${iid}:1`)).toBe(user);
    // A second connection: no transition, the count, a new name from the token, the first createdAt.
    expect(await connectUser(`${iid}:2`, user, iid, 'Una B.', NOW + 1000)).toEqual([0, 0, 2]);
    expect(await redis.hgetall(userKeys.user(user))).toEqual({ id: user, name: 'Una B.', createdAt: String(NOW) });
  });

  it('should let exactly one of 20 concurrent first connections announce the user', async () => {
    const user = id('u');
    const replies = await Promise.all(range(20).map((i) => connectUser(`c${i}`, user, id('i'), 'Una', NOW + i, i)));
    expect(count(replies.map((r) => r[0]), 1)).toBe(1);
    expect(replies.map((r) => r[2]).sort((a, b) => a - b)).toEqual(range(20).map((i) => i + 1));
    expect(await redis.hget(userKeys.user(user), 'name')).toBe('Una');
  });
});

describe('unregisterConnection', () => {
  describe('when the connection is unknown', () => {
    it('should answer transition 0 with the count and change nothing', async () => {
      const { user, iid } = await connected(2);
      expect(await unregister('nope', user, iid)).toEqual([0, 2]);
      expect(await redis.hget(keys.presence(user), 'lastSeenAt')).toBeNull();
    });
  });

  describe('when other connections remain', () => {
    it('should answer transition 0 and start no grace period', async () => {
      const { user, conns, iid } = await connected(2);
      expect(await unregister(conns[0]!, user, iid)).toEqual([0, 1]);
      expect(await redis.zscore(keys.grace(), user)).toBeNull();
      expect(await redis.hget(keys.presence(user), 'lastSeenAt')).toBeNull();
      expect(await redis.hexists(keys.instanceConnections(iid), conns[0]!)).toBe(0);
    });
  });

  describe('when the last connection closes with a grace period', () => {
    it('should keep the user ONLINE, set lastSeenAt and schedule the settle at now + grace', async () => {
      const { user, conns, iid } = await connected(1);
      expect(await unregister(conns[0]!, user, iid, NOW, GRACE)).toEqual([0, 0]);
      expect(await state(user)).toEqual({ state: 'ONLINE', away: '', lastSeenAt: String(NOW) });
      expect(await redis.zscore(keys.grace(), user)).toBe(String(NOW + GRACE));
      expect(await redis.exists(keys.instanceConnections(iid))).toBe(0);
    });
  });

  describe('when the last connection closes with grace 0', () => {
    it('should answer transition 1 and take the user OFFLINE at once', async () => {
      const { user, conns, iid } = await connected(1);
      await setAway(user, true);
      expect(await unregister(conns[0]!, user, iid, NOW, 0)).toEqual([1, 0]);
      expect(await state(user)).toEqual({ state: 'OFFLINE', away: '', lastSeenAt: String(NOW) });
      expect(await redis.zscore(keys.grace(), user)).toBeNull();
    });
  });

  describe('when all 20 connections close concurrently', () => {
    it('should let exactly one caller start the grace period', async () => {
      const { user, conns, iid } = await connected(20);
      const replies = await Promise.all(conns.map((c, i) => unregister(c, user, iid, NOW, GRACE, i)));
      expect(replies.map((r) => r[0])).toEqual(range(20).map(() => 0));
      expect(replies.map((r) => r[1]).sort((x, y) => x - y)).toEqual(range(20));
      expect(await redis.zscore(keys.grace(), user)).toBe(String(NOW + GRACE));
      expect(await state(user)).toMatchObject({ state: 'ONLINE', lastSeenAt: String(NOW) });
    });

    it('should give exactly one caller the OFFLINE transition with grace 0', async () => {
      const { user, conns, iid } = await connected(20);
      const replies = await Promise.all(conns.map((c, i) => unregister(c, user, iid, NOW, 0, i)));
      expect(count(replies.map((r) => r[0]), 1)).toBe(1);
      expect(await state(user)).toMatchObject({ state: 'OFFLINE', lastSeenAt: String(NOW) });
    });
  });

  describe('when one connection is unregistered by several callers at once (socket close and shutdown)', () => {
    it('should count it once', async () => {
      const { user, conns, iid } = await connected(1);
      const replies = await Promise.all(range(10).map((i) => unregister(conns[0]!, user, iid, NOW, 0, i)));
      expect(count(replies.map((r) => r[0]), 1)).toBe(1);
      expect(replies.every((r) => r[1] === 0)).toBe(true);
    });
  });
});

describe('settleOffline', () => {
  /** A user whose last connection closed at NOW: due at NOW + GRACE. */
  async function inGrace() {
    const { user, conns, iid } = await connected(1);
    await unregister(conns[0]!, user, iid, NOW, GRACE);
    return { user, iid };
  }

  describe('when the grace period is not over', () => {
    it('should answer 0 and keep the period running', async () => {
      const { user } = await inGrace();
      expect(await settle(user, NOW + GRACE - 1)).toEqual([0, '']);
      expect(await redis.zscore(keys.grace(), user)).toBe(String(NOW + GRACE));
      expect(await state(user)).toMatchObject({ state: 'ONLINE' });
    });
  });

  describe('when the grace period is over and no connection came back', () => {
    it('should answer 1 with lastSeenAt and take the user OFFLINE', async () => {
      const { user } = await inGrace();
      expect(await settle(user, NOW + GRACE)).toEqual([1, String(NOW)]);
      expect(await state(user)).toEqual({ state: 'OFFLINE', away: '', lastSeenAt: String(NOW) });
      expect(await redis.zscore(keys.grace(), user)).toBeNull();
      expect(await settle(user, NOW + GRACE)).toEqual([0, '']);
    });
  });

  describe('when a connection exists although the period was left behind', () => {
    it('should answer 0, keep the user ONLINE and drop the period', async () => {
      const { user } = await connected(1);
      await redis.zadd(keys.grace(), NOW, user);
      expect(await settle(user, NOW)).toEqual([0, '']);
      expect(await redis.zscore(keys.grace(), user)).toBeNull();
      expect(await state(user)).toMatchObject({ state: 'ONLINE' });
    });
  });

  describe('when there is no grace period', () => {
    it('should answer 0', async () => {
      expect(await settle(id('u'), NOW)).toEqual([0, '']);
    });
  });

  describe('when 20 callers settle the same user at once', () => {
    it('should give exactly one of them the transition', async () => {
      const { user } = await inGrace();
      const replies = await Promise.all(range(20).map((i) => settle(user, NOW + GRACE + i, i)));
      expect(count(replies.map((r) => r[0]), 1)).toBe(1);
      expect(replies.filter((r) => r[0] === 0).every((r) => r[1] === '')).toBe(true);
      expect(await state(user)).toMatchObject({ state: 'OFFLINE' });
    });
  });

  describe('when the settle races a reconnect', () => {
    it('should either announce OFFLINE and then ONLINE, or nothing at all, and leave the user ONLINE', async () => {
      for (let n = 0; n < 10; n++) {
        const { user, iid } = await inGrace();
        const first = n % 2 === 0;
        const [s, r] = first
          ? await Promise.all([settle(user, NOW + GRACE, n), register('back', user, iid, n + 1)])
          : await Promise.all([register('back', user, iid, n + 1), settle(user, NOW + GRACE, n)]).then(([x, y]) => [y, x] as const);
        expect(s[0], 'settle and reconnect must agree on whether the user went OFFLINE').toBe(r[0]);
        expect(await state(user)).toMatchObject({ state: 'ONLINE' });
        expect(await redis.zscore(keys.grace(), user)).toBeNull();
      }
    });
  });
});

describe('setAway', () => {
  describe('when the user has no connection', () => {
    it('should answer changed 0 and store nothing', async () => {
      const user = id('u');
      expect(await setAway(user, true)).toEqual([0, 0]);
      expect(await state(user)).toEqual({});
    });
  });

  describe('when the user is in their grace period (no connection, still ONLINE)', () => {
    it('should answer changed 0', async () => {
      const { user, conns, iid } = await connected(1);
      await unregister(conns[0]!, user, iid);
      expect(await setAway(user, true)).toEqual([0, 0]);
    });
  });

  describe('when a connected user switches between AWAY and ONLINE', () => {
    it('should report only real changes', async () => {
      const { user } = await connected(2);
      expect(await setAway(user, true)).toEqual([1, 2]);
      expect(await setAway(user, true)).toEqual([0, 2]);
      expect(await setAway(user, false)).toEqual([1, 2]);
      expect(await setAway(user, false)).toEqual([0, 2]);
    });
  });

  describe('when 10 callers set AWAY at once', () => {
    it('should report one change', async () => {
      const { user } = await connected(1);
      const replies = await Promise.all(range(10).map((i) => setAway(user, true, i)));
      expect(count(replies.map((r) => r[0]), 1)).toBe(1);
    });
  });
});

describe('reapInstance', () => {
  /** An instance with two users' connections and some room subscriptions, last seen at `beat`. */
  async function instanceWith(beat: number) {
    const iid = id('i');
    const [u1, u2, room] = [id('u'), id('u'), id('r')];
    await register('c1', u1, iid);
    await register('c2', u2, iid);
    await roomPresence(room, u1, iid, 1);
    await roomPresence(room, u1, iid, 1);
    await redis.zadd(keys.instances(), beat, iid);
    return { iid, u1, u2, room };
  }

  const pairs = (flat: (number | string)[]) => {
    const out: string[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push(`${flat[i]}=${flat[i + 1]}`);
    return out.sort();
  };

  describe('when the instance still beats', () => {
    it('should answer 0 and leave it alone', async () => {
      const { iid } = await instanceWith(NOW);
      expect(await reap(iid, NOW - 1)).toEqual([0]);
      expect(await redis.zscore(keys.instances(), iid)).toBe(String(NOW));
      expect(await redis.hlen(keys.instanceConnections(iid))).toBe(2);
    });
  });

  describe('when the instance is unknown (already reaped or stopped)', () => {
    it('should answer 0', async () => {
      expect(await reap(id('gone'), NOW)).toEqual([0]);
    });
  });

  describe('when the last heartbeat is at or before the deadline', () => {
    it('should claim it, hand back its connections and room tallies, and delete them', async () => {
      const { iid, u1, u2, room } = await instanceWith(NOW - TIMEOUT);
      const reply = await reap(iid, NOW - TIMEOUT);
      expect(reply.slice(0, 2)).toEqual([1, 2]);
      expect(pairs(reply.slice(2, 6))).toEqual([`c1=${u1}`, `c2=${u2}`].sort());
      expect(pairs(reply.slice(6))).toEqual([`${room}\n${u1}=2`]);
      expect(await redis.zscore(keys.instances(), iid)).toBeNull();
      expect(await redis.exists(keys.instanceConnections(iid), keys.instanceRooms(iid))).toBe(0);
    });
  });

  describe('when 10 live instances reap the same dead one at once', () => {
    it('should let exactly one claim it', async () => {
      const { iid } = await instanceWith(NOW - 10 * TIMEOUT);
      const replies = await Promise.all(range(10).map((i) => reap(iid, NOW - TIMEOUT, i)));
      const claims = replies.filter((r) => r[0] === 1);
      expect(claims).toHaveLength(1);
      expect(claims[0]![1]).toBe(2);
      expect(replies.filter((r) => r[0] !== 1).every((r) => r.length === 1 && r[0] === 0)).toBe(true);
    });
  });
});

describe('roomPresence', () => {
  describe('when subscriptions of one user come and go across instances', () => {
    it('should answer 1 on the first, -1 on the last, and 0 in between', async () => {
      const [room, user, i1, i2] = [id('r'), id('u'), id('i'), id('i')];
      expect(await roomPresence(room, user, i1, 1)).toBe(1);
      expect(await roomPresence(room, user, i2, 1)).toBe(0);
      expect(await redis.hget(keys.roomPresent(room), user)).toBe('2');
      expect(await roomPresence(room, user, i1, -1)).toBe(0);
      expect(await roomPresence(room, user, i2, -1)).toBe(-1);
      expect(await redis.exists(keys.roomPresent(room), keys.instanceRooms(i1), keys.instanceRooms(i2))).toBe(0);
    });
  });

  describe("when a dead instance's tally is removed at once", () => {
    it('should keep the user present while another instance holds the room', async () => {
      const [room, user, dead, live] = [id('r'), id('u'), id('i'), id('i')];
      await roomPresence(room, user, dead, 1);
      await roomPresence(room, user, dead, 1);
      await roomPresence(room, user, live, 1);
      expect(await roomPresence(room, user, dead, -2)).toBe(0);
      expect(await redis.exists(keys.instanceRooms(dead))).toBe(0);
      expect(await redis.hget(keys.roomPresent(room), user)).toBe('1');
      expect(await roomPresence(room, user, live, -1)).toBe(-1);
    });
  });

  describe('when 20 subscriptions open concurrently, then all close concurrently', () => {
    it('should give exactly one present and one absent transition', async () => {
      const [room, user] = [id('r'), id('u')];
      const iids = range(3).map(() => id('i'));
      const opened = await Promise.all(range(20).map((i) => roomPresence(room, user, iids[i % 3]!, 1, i)));
      expect(count(opened, 1)).toBe(1);
      expect(count(opened, 0)).toBe(19);
      expect(await redis.hget(keys.roomPresent(room), user)).toBe('20');
      const closed = await Promise.all(range(20).map((i) => roomPresence(room, user, iids[i % 3]!, -1, i + 1)));
      expect(count(closed, -1)).toBe(1);
      expect(count(closed, 0)).toBe(19);
      expect(await redis.exists(keys.roomPresent(room), ...iids.map((i) => keys.instanceRooms(i)))).toBe(0);
    });
  });

  describe('when several users arrive at once with several subscriptions each', () => {
    it('should announce each user once', async () => {
      const room = id('r');
      const users = range(5).map(() => id('u'));
      const calls = users.flatMap((u, k) => range(4).map((i) => ({ u, i: k * 4 + i })));
      const replies = await Promise.all(calls.map(({ u, i }) => roomPresence(room, u, `i${i % 2}`, 1, i)));
      for (const u of users) expect(count(replies.filter((_, j) => calls[j]!.u === u), 1)).toBe(1);
      expect(await redis.hlen(keys.roomPresent(room))).toBe(5);
    });
  });
});

describe('setTyping', () => {
  const sorted = (reply: (number | string)[]) => [reply[0], ...reply.slice(1).map(String).sort()];

  describe('when a member starts, refreshes and stops typing', () => {
    it('should report a change with the full list only when the list changes', async () => {
      const [room, u1, u2] = [id('r'), id('a'), id('b')];
      expect(await setTyping(room, u1, true)).toEqual([1, u1]);
      expect(await redis.zscore(typingKeys.typing(room), u1)).toBe(String(NOW + TIMEOUT));
      expect(await redis.zscore(typingKeys.rooms(), room)).toBe(String(NOW + TIMEOUT));

      expect(await setTyping(room, u1, true, NOW + 1000)).toEqual([0]);
      expect(await redis.zscore(typingKeys.typing(room), u1)).toBe(String(NOW + 1000 + TIMEOUT));
      expect(await redis.zscore(typingKeys.rooms(), room)).toBe(String(NOW + 1000 + TIMEOUT));

      expect(sorted(await setTyping(room, u2, true, NOW + 2000))).toEqual([1, ...[u1, u2].sort()]);
      expect(await redis.zscore(typingKeys.rooms(), room)).toBe(String(NOW + 1000 + TIMEOUT));
      expect(await setTyping(room, u1, false, NOW + 2000)).toEqual([1, u2]);
      expect(await setTyping(room, u1, false, NOW + 2000)).toEqual([0]);
      expect(await setTyping(room, u2, false, NOW + 2000)).toEqual([1]);
      expect(await redis.zscore(typingKeys.rooms(), room)).toBeNull();
      expect(await redis.exists(typingKeys.typing(room))).toBe(0);
    });
  });

  describe('when nobody is typing in the room (every send stops its sender)', () => {
    it('should report no change, create no key, and drop a stale entry of the room from the index', async () => {
      const room = id('r');
      await redis.zadd(typingKeys.rooms(), NOW, room); // an index entry with no typist behind it
      expect(await setTyping(room, id('a'), false)).toEqual([0]);
      expect(await expireTyping(room, NOW)).toEqual([0]);
      expect(await redis.exists(typingKeys.typing(room))).toBe(0);
      expect(await redis.zscore(typingKeys.rooms(), room)).toBeNull();
    });
  });

  describe('when entries have expired', () => {
    it('should drop them first, so the reported list never holds an expired typist', async () => {
      const [room, u1, u2] = [id('r'), id('a'), id('b')];
      await setTyping(room, u1, true, NOW);
      // At exactly NOW + TIMEOUT the entry is expired.
      expect(await setTyping(room, u2, true, NOW + TIMEOUT)).toEqual([1, u2]);
      expect(await setTyping(room, u1, true, NOW + TIMEOUT)).toEqual(expect.arrayContaining([1, u1, u2]));
    });

    it('should report a change when only expired entries went', async () => {
      const [room, u1, u2] = [id('r'), id('a'), id('b')];
      await setTyping(room, u1, true, NOW);
      await setTyping(room, u2, true, NOW + 1000);
      expect(await setTyping(room, u2, true, NOW + TIMEOUT + 1)).toEqual([1, u2]);
    });
  });

  describe('when 20 refreshes of the same typist run concurrently', () => {
    it('should report a change to the first only', async () => {
      const [room, user] = [id('r'), id('a')];
      const replies = await Promise.all(range(20).map((i) => setTyping(room, user, true, NOW + i, i)));
      expect(replies.filter((r) => r[0] === 1)).toEqual([[1, user]]);
      expect(replies.filter((r) => r[0] === 0)).toHaveLength(19);
    });
  });

  describe('when 20 different members start typing concurrently', () => {
    it('should report 20 changes and end with all of them, each list growing by one', async () => {
      const room = id('r');
      const users = range(20).map(() => id('a'));
      const replies = await Promise.all(users.map((u, i) => setTyping(room, u, true, NOW, i)));
      expect(replies.every((r) => r[0] === 1)).toBe(true);
      expect(replies.map((r) => r.length - 1).sort((x, y) => x - y)).toEqual(range(20).map((i) => i + 1));
      expect((await redis.zrange(typingKeys.typing(room), 0, -1)).sort()).toEqual([...users].sort());
    });
  });
});

describe('setTyping as the expiry sweep', () => {
  describe('when nothing has expired', () => {
    it('should answer 0 and index the room by its earliest expiry', async () => {
      const [room, u1] = [id('r'), id('a')];
      await setTyping(room, u1, true, NOW);
      await redis.zrem(typingKeys.rooms(), room);
      expect(await expireTyping(room, NOW + TIMEOUT - 1)).toEqual([0]);
      expect(await redis.zscore(typingKeys.rooms(), room)).toBe(String(NOW + TIMEOUT));
    });
  });

  describe('when some typists expired', () => {
    it('should answer 1 with those left, and re-index the room by the next expiry', async () => {
      const [room, u1, u2] = [id('r'), id('a'), id('b')];
      await setTyping(room, u1, true, NOW);
      await setTyping(room, u2, true, NOW + 1000);
      expect(await expireTyping(room, NOW + TIMEOUT)).toEqual([1, u2]);
      expect(await redis.zscore(typingKeys.rooms(), room)).toBe(String(NOW + 1000 + TIMEOUT));
      expect(await expireTyping(room, NOW + 1000 + TIMEOUT)).toEqual([1]);
      expect(await redis.zscore(typingKeys.rooms(), room)).toBeNull();
      expect(await redis.exists(typingKeys.typing(room))).toBe(0);
    });
  });

  describe('when 10 instances expire the same room at once', () => {
    it('should report the change to exactly one of them', async () => {
      const [room, u1, u2] = [id('r'), id('a'), id('b')];
      await setTyping(room, u1, true, NOW);
      await setTyping(room, u2, true, NOW + 1000);
      const replies = await Promise.all(range(10).map((i) => expireTyping(room, NOW + TIMEOUT + i, i)));
      expect(replies.filter((r) => r[0] === 1)).toEqual([[1, u2]]);
      expect(replies.filter((r) => r[0] === 0)).toHaveLength(9);
    });
  });

  describe('when an expiry races a refresh by setTyping', () => {
    it('should report the drop once, to whichever ran first', async () => {
      const [room, u1, u2] = [id('r'), id('a'), id('b')];
      await setTyping(room, u1, true, NOW);
      await setTyping(room, u2, true, NOW + 1000);
      const at = NOW + TIMEOUT;
      const [expired, refreshed] = await Promise.all([expireTyping(room, at, 0), setTyping(room, u2, true, at, 1)]);
      expect(count([expired[0], refreshed[0]], 1)).toBe(1);
      expect(await redis.zrange(typingKeys.typing(room), 0, -1)).toEqual([u2]);
    });
  });
});
