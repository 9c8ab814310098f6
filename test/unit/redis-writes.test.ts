import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { countRoundTrips } from '../../bench/lib.js';
import { pipelineOf } from '../../src/infra/direct-pipeline.js';
import { coalesceWrites, execPipeline, newTrace, redisTrace, traceRoundTrips } from '../../src/infra/redis.js';
import { loadScripts } from '../../src/infra/scripts.js';
import { LUA_DIRS } from '../../src/services.js';
import { waitFor } from '../helpers/clients.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/server.js';

/** coalesceWrites: what a connection writes in one turn leaves in one write, in order. */

const prefix = uniquePrefix('writes');
const clients: Redis[] = [];

afterAll(async () => {
  const admin = new Redis(sharedRedisUrl());
  for await (const keys of admin.scanStream({ match: `${prefix}*`, count: 500 })) {
    if ((keys as string[]).length > 0) await admin.unlink(...(keys as string[]));
  }
  admin.disconnect();
  for (const c of clients) c.disconnect();
});

/** A ready client whose socket writes are counted (`countRoundTrips`; `count()` again after a reconnect). */
async function countedClient(): Promise<{ client: Redis; flush: () => void; writes: () => number; count: () => void }> {
  const client = new Redis(sharedRedisUrl(), { keyPrefix: prefix });
  clients.push(client);
  const flush = coalesceWrites(client);
  await waitFor(() => client.status === 'ready', 5000, 'the client to be ready');
  let earlier = 0;
  let counter = countRoundTrips(client);
  const count = () => {
    earlier += counter.count;
    counter = countRoundTrips(client);
  };
  return { client, flush, writes: () => earlier + counter.count, count };
}

describe('coalesceWrites', () => {
  it('should send the commands of one turn in one write, with every reply in order', async () => {
    const { client, writes } = await countedClient();
    const before = writes();
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => client.incrby('counter', i + 1)));
    expect(writes() - before).toBe(1);
    // INCRBY 1, 2, 3…: running sums, so any reordering would show.
    expect(replies).toEqual(Array.from({ length: 50 }, (_, i) => ((i + 1) * (i + 2)) / 2));
  });

  it('should send at once on flush()', async () => {
    const { client, flush, writes } = await countedClient();
    const before = writes();
    const reply = client.set('flushed', '1');
    expect(writes() - before).toBe(0);
    flush();
    expect(writes() - before).toBe(1);
    expect(await reply).toBe('OK');
  });

  it('should keep working on the new socket after a reconnect', async () => {
    const { client, writes, count } = await countedClient();
    const id = await client.client('ID');
    const admin = new Redis(sharedRedisUrl());
    await admin.client('KILL', 'ID', String(id));
    admin.disconnect();
    await waitFor(async () => (await client.ping().catch(() => null)) === 'PONG', 5000, 'the client to reconnect');
    count(); // the new socket's writes
    const before = writes();
    const replies = await Promise.all([client.set('after', 'x'), client.get('after')]);
    expect(replies).toEqual(['OK', 'x']);
    expect(writes() - before).toBe(1);
  });
});

describe('a direct pipeline (pipelineOf)', () => {
  it('should send nothing before exec(), then every command in order in one write, with [error, reply] pairs', async () => {
    const { client, writes } = await countedClient();
    const before = writes();
    const p = pipelineOf(client);
    for (let i = 1; i <= 20; i++) p.incrby('direct-counter', i);
    p.get('direct-counter');
    expect(p.length).toBe(21);
    await new Promise((r) => setImmediate(r));
    expect(writes() - before).toBe(0);
    expect(await client.exists('direct-counter')).toBe(0);
    const results = await p.exec();
    expect(writes() - before).toBe(2); // the EXISTS above, then the pipeline
    // Running sums: any reordering would show.
    expect(results).toEqual([...Array.from({ length: 20 }, (_, i) => [null, ((i + 1) * (i + 2)) / 2]), [null, '210']]);
  });

  it("should fail only the command that failed, as a pipeline's exec() does", async () => {
    const { client } = await countedClient();
    await client.set('direct-string', 'x');
    const results = (await pipelineOf(client).set('direct-a', '1').hset('direct-string', 'f', 'v').get('direct-a').exec()) ?? [];
    expect(results[0]).toEqual([null, 'OK']);
    expect(results[1]?.[0]).toBeInstanceOf(Error);
    expect(String(results[1]?.[0])).toMatch(/WRONGTYPE/);
    expect(results[2]).toEqual([null, '1']);
    await expect(execPipeline(pipelineOf(client).get('direct-a').hset('direct-string', 'f', 'v'))).rejects.toThrow(/WRONGTYPE/);
    expect(await pipelineOf(client).exec()).toEqual([]);
  });

  it('should run queued Lua scripts (EVALSHA), also after SCRIPT FLUSH (NOSCRIPT, then EVAL)', async () => {
    const { client } = await countedClient();
    const scripts = loadScripts(client, LUA_DIRS);
    const run = async () => {
      const p = pipelineOf(client);
      scripts.queue(p, 'touchUser', ['direct-user'], ['u1', 'Una', 1]);
      p.hget('direct-user', 'name');
      return execPipeline(p);
    };
    expect((await run())[1]).toBe('Una');
    await client.script('FLUSH');
    expect(await run()).toEqual([0, 'Una']);
  });

  it('should count as one round trip in a Redis trace, as an ioredis pipeline does', async () => {
    const { client } = await countedClient();
    traceRoundTrips(client);
    const trace = newTrace();
    await redisTrace.run(trace, async () => {
      await execPipeline(pipelineOf(client).set('direct-t', '1').get('direct-t').incr('direct-n'));
      await client.get('direct-t');
    });
    expect({ roundTrips: trace.roundTrips, commands: trace.commands }).toEqual({ roundTrips: 2, commands: 4 });
  });
});
