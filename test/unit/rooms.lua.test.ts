import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScriptRegistry, ScriptRunner } from '../../src/infra/scripts.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The rooms domain's Lua scripts, called directly (no service in between): every status code of
 * every script, and the races the scripts exist to make safe.
 */

const prefix = uniquePrefix('rooms-lua');
let redis: Redis;
let joinRoom: ScriptRunner;
let addMembers: ScriptRunner;
let removeMember: ScriptRunner;
let leaveRoom: ScriptRunner;

beforeAll(async () => {
  let scripts: ScriptRegistry;
  ({ redis, scripts } = await luaConnection(prefix));
  joinRoom = scripts.get('joinRoom');
  addMembers = scripts.get('addMembers');
  removeMember = scripts.get('removeMember');
  leaveRoom = scripts.get('leaveRoom');
});

afterAll(async () => {
  await deletePrefixed(prefix);
  redis?.disconnect();
});

const newRoomId = () => randomBytes(6).toString('hex');
const keysOf = (roomId: string) => [roomKeys.room(roomId), roomKeys.members(roomId)];

/** Stores a room the way the rooms service creates one. */
async function seedRoom(opts: { owner: string; members?: string[]; visibility?: 'PUBLIC' | 'PRIVATE' }) {
  const roomId = newRoomId();
  const members = [opts.owner, ...(opts.members ?? [])];
  await redis
    .multi()
    .hset(roomKeys.room(roomId), {
      id: roomId,
      name: `room ${roomId}`,
      visibility: opts.visibility ?? 'PRIVATE',
      ownerId: opts.owner,
      createdAt: 1,
      lastActivityAt: 1,
      seq: 0,
    })
    .zadd(roomKeys.members(roomId), ...members.flatMap((m) => [0, m]))
    .exec();
  return roomId;
}

const membersOf = (roomId: string) => redis.zrange(roomKeys.members(roomId), 0, -1);
const ownerOf = (roomId: string) => redis.hget(roomKeys.room(roomId), 'ownerId');

describe('joinRoom', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND) and create nothing', async () => {
      const roomId = newRoomId();
      expect(await joinRoom(keysOf(roomId), ['alice'])).toEqual([1, 0]);
      expect(await redis.exists(roomKeys.members(roomId))).toBe(0);
    });
  });

  describe('when the room is private', () => {
    it('should answer status 3 (NOT_PUBLIC) to a non-member and not add them', async () => {
      const roomId = await seedRoom({ owner: 'owner' });
      expect(await joinRoom(keysOf(roomId), ['mallory'])).toEqual([3, 0]);
      expect(await membersOf(roomId)).toEqual(['owner']);
    });

    it('should answer OK with added 0 to someone already a member (idempotent)', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      expect(await joinRoom(keysOf(roomId), ['bob'])).toEqual([0, 0]);
    });
  });

  describe('when the room is public', () => {
    it('should add a new member and report added 1, then 0 on the second join', async () => {
      const roomId = await seedRoom({ owner: 'owner', visibility: 'PUBLIC' });
      expect(await joinRoom(keysOf(roomId), ['carol'])).toEqual([0, 1]);
      expect(await joinRoom(keysOf(roomId), ['carol'])).toEqual([0, 0]);
      expect(await membersOf(roomId)).toEqual(['carol', 'owner']);
    });
  });

  describe('when one user joins concurrently many times', () => {
    it('should report added 1 exactly once', async () => {
      const roomId = await seedRoom({ owner: 'owner', visibility: 'PUBLIC' });
      const results = (await Promise.all(
        Array.from({ length: 40 }, () => joinRoom(keysOf(roomId), ['dave'])),
      )) as [number, number][];
      expect(results.every(([status]) => status === 0)).toBe(true);
      expect(results.filter(([, added]) => added === 1)).toHaveLength(1);
      expect(await redis.zcard(roomKeys.members(roomId))).toBe(2);
    });
  });
});

describe('addMembers', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND)', async () => {
      expect(await addMembers(keysOf(newRoomId()), ['alice', 'bob'])).toEqual([1]);
    });
  });

  describe('when the viewer is not a member', () => {
    it('should answer status 2 (NOT_MEMBER) and add nobody', async () => {
      const roomId = await seedRoom({ owner: 'owner' });
      expect(await addMembers(keysOf(roomId), ['mallory', 'mallory', 'eve'])).toEqual([2]);
      expect(await membersOf(roomId)).toEqual(['owner']);
    });
  });

  describe('when the viewer is a member', () => {
    it('should add the new ids and list only those that were not members before', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      // Any member may add (not only the owner); bob and the owner are already in.
      const result = await addMembers(keysOf(roomId), ['bob', 'owner', 'carol', 'bob', 'dave', 'carol']);
      expect(result).toEqual([0, 'carol', 'dave']);
      expect(await membersOf(roomId)).toEqual(['bob', 'carol', 'dave', 'owner']);
    });

    it('should answer OK with no ids when everyone is already a member', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      expect(await addMembers(keysOf(roomId), ['owner', 'bob'])).toEqual([0]);
    });
  });

  describe('when members add overlapping ids concurrently', () => {
    it('should add each id exactly once across all callers', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['m1', 'm2', 'm3'] });
      const viewers = ['owner', 'm1', 'm2', 'm3'];
      const ids = Array.from({ length: 30 }, (_, i) => `u${String(i).padStart(2, '0')}`);
      // 20 callers, each adding a window of 12 ids that overlaps its neighbours'.
      const calls = Array.from({ length: 20 }, (_, i) => {
        const window = Array.from({ length: 12 }, (_, j) => ids[(i + j) % ids.length] as string);
        return addMembers(keysOf(roomId), [viewers[i % viewers.length] as string, ...window]);
      });
      const results = (await Promise.all(calls)) as [number, ...string[]][];
      expect(results.every(([status]) => status === 0)).toBe(true);
      const added = results.flatMap(([, ...a]) => a).sort();
      expect(added).toEqual(ids);
      expect(await redis.zcard(roomKeys.members(roomId))).toBe(4 + ids.length);
    });
  });
});

describe('removeMember', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND)', async () => {
      expect(await removeMember(keysOf(newRoomId()), ['owner', 'bob'])).toEqual([1, 0]);
    });
  });

  describe('when the viewer is not the owner', () => {
    it('should answer status 6 (NOT_OWNER) to a member and remove nobody', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob', 'carol'] });
      expect(await removeMember(keysOf(roomId), ['bob', 'carol'])).toEqual([6, 0]);
      expect(await membersOf(roomId)).toEqual(['bob', 'carol', 'owner']);
    });

    it('should answer status 6 to a stranger', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      expect(await removeMember(keysOf(roomId), ['mallory', 'bob'])).toEqual([6, 0]);
    });

    it('should answer status 6 when the recorded owner is no longer a member', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      await redis.zrem(roomKeys.members(roomId), 'owner');
      expect(await removeMember(keysOf(roomId), ['owner', 'bob'])).toEqual([6, 0]);
      expect(await membersOf(roomId)).toEqual(['bob']);
    });
  });

  describe('when the owner names themselves', () => {
    it('should answer status 8 (IS_OWNER) and stay a member', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      expect(await removeMember(keysOf(roomId), ['owner', 'owner'])).toEqual([8, 0]);
      expect(await membersOf(roomId)).toEqual(['bob', 'owner']);
    });
  });

  describe('when the owner removes a member', () => {
    it('should remove them (removed 1), then answer removed 0 for a non-member', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      expect(await removeMember(keysOf(roomId), ['owner', 'bob'])).toEqual([0, 1]);
      expect(await removeMember(keysOf(roomId), ['owner', 'bob'])).toEqual([0, 0]);
      expect(await membersOf(roomId)).toEqual(['owner']);
    });
  });

  describe('when the owner removes the same member concurrently', () => {
    it('should report removed 1 exactly once, and move the members version once', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      const results = (await Promise.all(
        Array.from({ length: 20 }, () => removeMember(keysOf(roomId), ['owner', 'bob'])),
      )) as [number, number][];
      expect(results.every(([s]) => s === 0)).toBe(true);
      expect(results.filter(([, r]) => r === 1)).toHaveLength(1);
      expect(await membersVersionOf(roomId)).toBe(1);
    });
  });

  describe('when a removal changes nothing or is refused', () => {
    it('should leave the members version alone', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      expect(await removeMember(keysOf(roomId), ['owner', 'stranger'])).toEqual([0, 0]);
      expect(await removeMember(keysOf(roomId), ['bob', 'owner'])).toEqual([6, 0]);
      expect(await membersVersionOf(roomId)).toBe(0);
    });
  });
});

/** The room's members version (bumped by each removal and departure; read by the position check). */
const membersVersionOf = async (roomId: string) => Number((await redis.hget(roomKeys.room(roomId), 'membersVersion')) ?? 0);

describe('leaveRoom', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND)', async () => {
      expect(await leaveRoom(keysOf(newRoomId()), ['alice'])).toEqual([1, 0, '']);
    });
  });

  describe('when the user is not a member', () => {
    it('should answer OK with removed 0 (idempotent), the members version unchanged', async () => {
      const roomId = await seedRoom({ owner: 'owner' });
      expect(await leaveRoom(keysOf(roomId), ['stranger'])).toEqual([0, 0, '']);
      expect(await ownerOf(roomId)).toBe('owner');
      expect(await membersVersionOf(roomId)).toBe(0);
    });
  });

  describe('when a member who is not the owner leaves', () => {
    it('should remove them, keep the owner and move the members version', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob'] });
      expect(await leaveRoom(keysOf(roomId), ['bob'])).toEqual([0, 1, '']);
      expect(await membersOf(roomId)).toEqual(['owner']);
      expect(await ownerOf(roomId)).toBe('owner');
      expect(await membersVersionOf(roomId)).toBe(1);
    });
  });

  describe('when the owner leaves', () => {
    it('should hand ownership to the remaining member with the smallest id', async () => {
      const roomId = await seedRoom({ owner: 'mike', members: ['zoe', 'bob', 'kate'] });
      expect(await leaveRoom(keysOf(roomId), ['mike'])).toEqual([0, 1, 'bob']);
      expect(await ownerOf(roomId)).toBe('bob');
      expect(await membersOf(roomId)).toEqual(['bob', 'kate', 'zoe']);
    });

    it('should hand ownership to nobody when they were the last member', async () => {
      const roomId = await seedRoom({ owner: 'solo' });
      expect(await leaveRoom(keysOf(roomId), ['solo'])).toEqual([0, 1, '']);
      expect(await membersOf(roomId)).toEqual([]);
    });
  });

  describe('when one user leaves concurrently many times', () => {
    it('should report removed 1 exactly once and move ownership once', async () => {
      const roomId = await seedRoom({ owner: 'owner', members: ['bob', 'carol'] });
      const results = (await Promise.all(
        Array.from({ length: 20 }, () => leaveRoom(keysOf(roomId), ['owner'])),
      )) as [number, number, string][];
      expect(results.filter(([, removed]) => removed === 1)).toEqual([[0, 1, 'bob']]);
      expect(await ownerOf(roomId)).toBe('bob');
    });
  });

  describe('when the owner leaves while removing a member concurrently', () => {
    it('should end in the state of one of the two serial orders, with a member as owner', async () => {
      // Members sort as a-bob < m-owner < z-carl: if the owner leaves first, a-bob takes over and
      // the removal is refused; if the removal runs first, z-carl takes over.
      const runs = await Promise.all(
        Array.from({ length: 25 }, async () => {
          const roomId = await seedRoom({ owner: 'm-owner', members: ['a-bob', 'z-carl'] });
          const [left, removed] = (await Promise.all([
            leaveRoom(keysOf(roomId), ['m-owner']),
            removeMember(keysOf(roomId), ['m-owner', 'a-bob']),
          ])) as [[number, number, string], [number, number]];
          return { left, removed, owner: await ownerOf(roomId), members: await membersOf(roomId) };
        }),
      );
      for (const run of runs) {
        const leaveFirst = {
          left: [0, 1, 'a-bob'],
          removed: [6, 0],
          owner: 'a-bob',
          members: ['a-bob', 'z-carl'],
        };
        const removeFirst = {
          left: [0, 1, 'z-carl'],
          removed: [0, 1],
          owner: 'z-carl',
          members: ['z-carl'],
        };
        expect([leaveFirst, removeFirst]).toContainEqual(run);
        expect(run.members).toContain(run.owner);
      }
    });
  });
});
