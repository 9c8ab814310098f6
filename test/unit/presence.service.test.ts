import { describe, expect, it } from 'vitest';
import { presenceKeys } from '../../src/presence/presence.keys.js';
import { uniquePrefix } from '../helpers/server.js';
import { viewer, wire } from '../helpers/wiring.js';

/** Two instances of one deployment: the presence services of two wirings on one key prefix. */
async function twoInstances() {
  const prefix = uniquePrefix('presence-svc');
  const env = { PRESENCE_TIMEOUT_SECONDS: '2', PRESENCE_GRACE_MS: '0' };
  const a = await wire({ prefix, env: { ...env, INSTANCE_ID: 'inst-a' } });
  const b = await wire({ prefix, env: { ...env, INSTANCE_ID: 'inst-b' } });
  await a.services.presence.heartbeat();
  await b.services.presence.heartbeat();
  return { a, b };
}

describe('when a live instance is taken for dead and reaped (a long pause, a partition)', () => {
  it('should register its connections and room presence again at its next heartbeat', async () => {
    const { a, b } = await twoInstances();
    const alice = viewer('alice');
    const room = await a.services.rooms.create(alice, { name: 'paused' });
    await a.services.presence.connect(alice);
    await a.services.presence.enterRoom(room.id, 'alice');
    expect((await b.services.presence.getMany(['alice']))[0]).toMatchObject({ status: 'ONLINE', connections: 1 });

    // A's heartbeat looks ancient: B reaps it, and alice goes OFFLINE although her socket is open.
    await a.redis.command.zadd(presenceKeys.instances(), 1, 'inst-a');
    expect(await b.services.presence.reapDead()).toBe(1);
    expect((await b.services.presence.getMany(['alice']))[0]).toMatchObject({ status: 'OFFLINE', connections: 0 });
    expect(await b.services.presence.onlineCounts([room.id])).toEqual([0]);

    // A's next heartbeat notices it was removed and puts everything back.
    await a.services.presence.heartbeat();
    expect((await b.services.presence.getMany(['alice']))[0]).toMatchObject({ status: 'ONLINE', connections: 1 });
    expect(await b.services.presence.onlineCounts([room.id])).toEqual([1]);

    // And it stays consistent: leaving the room and disconnecting still settle to zero.
    await a.services.presence.leaveRoom(room.id, 'alice');
    expect(await b.services.presence.onlineCounts([room.id])).toEqual([0]);
  });

  it('should not reap an instance whose heartbeat is fresh', async () => {
    const { a, b } = await twoInstances();
    await a.services.presence.connect(viewer('bob'));
    expect(await b.services.presence.reapDead()).toBe(0);
    expect((await b.services.presence.getMany(['bob']))[0]).toMatchObject({ status: 'ONLINE', connections: 1 });
  });
});
