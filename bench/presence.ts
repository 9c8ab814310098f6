/**
 * Presence benchmark: one Switchboard instance (`node dist/index.js`) on a private redis-server
 * (temp dir, no persistence), idle graphql-ws connections opened in steps (1,000 then 5,000 by
 * default). At each step it measures, over a whole number of heartbeat intervals:
 *
 *   - the Redis commands the instance issues per heartbeat interval (`CONFIG RESETSTAT`, then
 *     `INFO commandstats`), by command and in total: this must not grow with the connection count;
 *   - the heartbeat's duration: the round trip of the server's own heartbeat ZADD, timed inside the
 *     server process by a preload hook on ioredis (`--require`, nothing in src/ changes), the ZADD's
 *     execution time inside Redis (`usec_per_call`), and for reference the round trip of the same
 *     command (ZADD of one member on a one-member sorted set) from the bench's own connection;
 *   - the Redis key count and the memory presence keys take.
 *
 *   npm run build && npm run bench:presence [-- --connections 1000,5000] [--intervals 5]
 *     [--presence-timeout 4] [--settle 2] [--probes 200]
 *
 * Prints a comparison line "commands per heartbeat interval: 1000 conns = X, 5000 conns = Y" and a
 * one-line JSON summary; exits 1 when the commands per interval grow with the connections (or a
 * child crashed), 0 otherwise. Everything it starts (server, redis-server, sockets, temp dir) is
 * stopped on exit, error or SIGINT; everything listens on 127.0.0.1 only.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { signToken } from '../src/infra/auth.js';
import { freePort } from '../src/infra/embedded-redis.js';
import {
  BENCH_COMMANDS,
  BenchRun,
  CLK_TCK,
  DIST_INDEX,
  ROOT,
  ServerIssues,
  benchSecret,
  cliOptions,
  commandStats,
  connectClient,
  cpuTicks,
  ensureFileLimit,
  fmt,
  gitCommit,
  hasExited,
  inBatches,
  loadAverage,
  makeLog,
  percentile,
  pollUntil,
  round,
  rssKb,
  serverEnv,
  sleep,
  spawnServer,
  terminateChild,
  usageError,
  waitServerReady,
  type ChildEnd,
  type ServerChild,
} from './lib.js';

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  connections: number[];
  intervals: number;
  presenceTimeout: number;
  settle: number;
  probes: number;
}

const USAGE = `usage: npx tsx bench/presence.ts [--connections N1,N2,...=1000,5000] [--intervals K=5]
  [--presence-timeout S=4] [--settle S=2] [--probes P=200]
  --connections       total idle connections at each step (ascending); the first and last are compared
  --intervals         heartbeat intervals measured at each step
  --presence-timeout  PRESENCE_TIMEOUT_SECONDS of the server (heartbeat interval = timeout / 4)
  --settle            seconds to wait after the last connection_ack before measuring
  --probes            ZADD round trips timed from the bench's own Redis connection at each step`;

function fatalUsage(message: string): never {
  return usageError('presence', USAGE, message);
}

function parseOptions(argv: string[]): Options {
  const opts: Options = { connections: [1000, 5000], intervals: 5, presenceTimeout: 4, settle: 2, probes: 200 };
  for (const [name, raw] of cliOptions('presence', argv, USAGE)) {
    if (name === 'connections') {
      const list = raw.split(',').map((s) => Number(s.trim()));
      if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1 || n > 60_000)) {
        fatalUsage('--connections needs integers 1..60000 separated by commas');
      }
      if (list.some((n, k) => k > 0 && n <= (list[k - 1] as number))) fatalUsage('--connections must be ascending');
      opts.connections = list;
      continue;
    }
    const value = Number(raw);
    if (!Number.isFinite(value)) fatalUsage(`--${name} needs a number`);
    if (name === 'intervals') {
      if (!Number.isInteger(value) || value < 1 || value > 120) fatalUsage('--intervals needs an integer 1..120');
      opts.intervals = value;
    } else if (name === 'presence-timeout') {
      if (value < 0.6 || value > 60) fatalUsage('--presence-timeout needs 0.6..60 seconds');
      opts.presenceTimeout = value;
    } else if (name === 'settle') {
      if (value < 0 || value > 120) fatalUsage('--settle needs 0..120 seconds');
      opts.settle = value;
    } else if (name === 'probes') {
      if (!Number.isInteger(value) || value < 1 || value > 100_000) fatalUsage('--probes needs an integer 1..100000');
      opts.probes = value;
    } else {
      fatalUsage(`unknown argument --${name}`);
    }
  }
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Small utilities

const PREFIX = 'bench:';
const INSTANCE_ID = 'presence-bench';
const KEY_INSTANCES = `${PREFIX}presence:instances`;
const KEY_INSTANCE_CONNS = `${PREFIX}presence:instance:{${INSTANCE_ID}}:conns`;
const KEY_GRACE = `${PREFIX}presence:grace`;
const KEY_PROBE = `${PREFIX}bench-probe:zadd`;
/** Lines the preload hook writes to the server's stderr. */
const HOOK_TAG = '@@presence-bench ';

/** Once clean-up began (SIGINT, SIGTERM, watchdog), the run stops where it is: nothing more is measured or printed. */
const halted = () => run.exiting;
const HALT = () => new Promise<never>(() => undefined);
const log = makeLog('presence');
const mb = (bytes: number) => (bytes / 1_048_576).toFixed(2);

// ---------------------------------------------------------------------------------------------
// Redis statistics

async function usedMemory(client: Redis): Promise<number> {
  const m = /^used_memory:(\d+)/m.exec(await client.info('memory'));
  return m ? Number(m[1]) : NaN;
}

/** Keys matching `pattern` (bounded SCAN). */
async function scanKeys(client: Redis, pattern: string, max = 200_000): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  for (let rounds = 0; rounds < 10_000; rounds++) {
    const [next, batch] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    keys.push(...batch);
    cursor = next;
    if (cursor === '0' || keys.length >= max) break;
  }
  return keys;
}

/** Presence keys (per-user connection sets and presence hashes, the instance's keys) and their bytes. */
async function presenceFootprint(client: Redis): Promise<{ keys: number; bytes: number; users: number; onlineUsers: number }> {
  const conns = await scanKeys(client, `${PREFIX}user:{*}:conns`);
  const hashes = await scanKeys(client, `${PREFIX}user:{*}:presence`);
  const shared = (await scanKeys(client, `${PREFIX}presence:*`)).filter((k) => k !== KEY_PROBE);
  const all = [...conns, ...hashes, ...shared];
  let bytes = 0;
  for (let k = 0; k < all.length; k += 1000) {
    const pipeline = client.pipeline();
    for (const key of all.slice(k, k + 1000)) pipeline.memory('USAGE', key, 'SAMPLES', '0');
    for (const [err, n] of (await pipeline.exec()) ?? []) if (!err) bytes += Number(n ?? 0);
  }
  let onlineUsers = 0;
  for (let k = 0; k < hashes.length; k += 1000) {
    const pipeline = client.pipeline();
    for (const key of hashes.slice(k, k + 1000)) pipeline.hget(key, 'state');
    for (const [err, s] of (await pipeline.exec()) ?? []) if (!err && s === 'ONLINE') onlineUsers++;
  }
  return { keys: all.length, bytes, users: conns.length, onlineUsers };
}

/** Round trips of ZADD (one member, on a one-member sorted set like the instances key) from here. */
async function probeZadd(client: Redis, n: number): Promise<{ p50: number; p99: number; max: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await client.zadd(KEY_PROBE, Date.now(), INSTANCE_ID);
    times.push(performance.now() - t0);
  }
  await client.del(KEY_PROBE);
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), max: times[times.length - 1] ?? NaN };
}

// ---------------------------------------------------------------------------------------------
// The preload hook: times the server's own heartbeat inside the server process

/**
 * A CommonJS preload (`node --require`) that wraps ioredis' `Redis.prototype.sendCommand` and, for
 * the heartbeat (ZADD on the instances key) and the reap query that follows it (ZRANGEBYSCORE on the
 * same key), writes one tagged JSON line to stderr when the reply arrives; every other
 * ZRANGEBYSCORE (the periodic sweeps: grace periods, typing expiries) gets a line naming its key.
 * It sends nothing to Redis and changes no behaviour.
 */
const HOOK_SOURCE = `'use strict';
const { createRequire } = require('node:module');
const { performance } = require('node:perf_hooks');
const TAG = ${JSON.stringify(HOOK_TAG)};
const KEY = ${JSON.stringify(KEY_INSTANCES)};
const PREFIX = ${JSON.stringify(PREFIX)};
const emit = (o) => { try { process.stderr.write(TAG + JSON.stringify(o) + '\\n'); } catch (e) { /* gone */ } };
try {
  const req = createRequire(${JSON.stringify(join(ROOT, 'package.json'))});
  const mod = req('ioredis');
  const Redis = mod.Redis || mod.default || mod;
  const original = Redis.prototype.sendCommand;
  let beatStart = null;
  Redis.prototype.sendCommand = function (command, stream) {
    try {
      const name = command && command.name;
      const key = command && command.args && command.args.length > 0 ? String(command.args[0]) : '';
      if (name === 'zrangebyscore') {
        emit({ kind: 'range', at: Date.now(), key: key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key });
      }
      if (key === KEY && (name === 'zadd' || name === 'zrangebyscore')) {
        const t0 = performance.now();
        const at = Date.now();
        const start = name === 'zadd' ? t0 : beatStart;
        if (name === 'zadd') beatStart = t0;
        const done = (ok, err) => {
          const t1 = performance.now();
          if (name === 'zadd') emit({ kind: 'heartbeat', at, ms: t1 - t0, ok, err });
          else if (start !== null) { beatStart = null; emit({ kind: 'tick', at, ms: t1 - start, ok, err }); }
        };
        command.promise.then(() => done(true), (e) => done(false, String(e && e.message)));
      }
    } catch (e) {
      emit({ kind: 'hook-error', err: String(e && e.message) });
    }
    return original.call(this, command, stream);
  };
  emit({ kind: 'ready' });
} catch (e) {
  emit({ kind: 'hook-error', err: String(e && e.message) });
}
`;

interface HookSample {
  kind: 'heartbeat' | 'tick';
  at: number;
  ms: number;
  ok: boolean;
  err?: string;
}

const hook = {
  ready: false,
  error: null as string | null,
  samples: [] as HookSample[],
  /** ZRANGEBYSCORE the server sent: when, and on which key (prefix left out). */
  ranges: [] as { at: number; key: string }[],
};

// ---------------------------------------------------------------------------------------------
// Children and clean-up

let server: (ServerChild & { port: number; wsUrl: string }) | null = null;
let stats: Redis | null = null;

const serverIssues = new ServerIssues();
const problems = { connectFailures: 0, socketCloses: 0, samples: [] as string[] };
function noteProblem(sample: string) {
  if (problems.samples.length < 12 && !problems.samples.includes(sample)) problems.samples.push(sample);
}

function noteServerLine(line: string) {
  if (!line.trim()) return;
  if (line.startsWith(HOOK_TAG)) {
    try {
      const o = JSON.parse(line.slice(HOOK_TAG.length)) as { kind: string; at?: number; ms?: number; ok?: boolean; err?: string; key?: string };
      if (o.kind === 'ready') hook.ready = true;
      else if (o.kind === 'range') {
        if (hook.ranges.length < 100_000) hook.ranges.push({ at: Number(o.at), key: String(o.key) });
      }
      else if (o.kind === 'hook-error') hook.error = o.err ?? 'unknown';
      else if ((o.kind === 'heartbeat' || o.kind === 'tick') && hook.samples.length < 100_000) {
        hook.samples.push({ kind: o.kind, at: Number(o.at), ms: Number(o.ms), ok: o.ok === true, err: o.err });
      }
    } catch {
      hook.error = `unreadable hook line: ${line.slice(0, 200)}`;
    }
    return;
  }
  serverIssues.note('server', line);
}

/** SIGTERM to the server (SIGKILL after 12 s); resolves with how it ended. */
async function stopServer(): Promise<ChildEnd | null> {
  const s = server;
  if (!s) return null;
  run.stoppingChildren = true;
  if (hasExited(s.child)) return { code: s.child.exitCode, signal: s.child.signalCode, ms: 0 };
  return terminateChild(s);
}

/** Clean-up: server, sockets, the stats connection, Redis, the temp dir. */
const run = new BenchRun('presence', {
  cleanupMs: 25_000,
  onFailure: () => serverIssues.printSamples(),
  killChildrenNow: () => {
    if (server && !hasExited(server.child)) {
      try {
        server.child.kill('SIGKILL');
      } catch {
        // gone
      }
    }
  },
  stopChildren: async () => {
    await stopServer();
  },
  closeConnections: () => {
    stats?.disconnect();
    stats = null;
  },
});

// ---------------------------------------------------------------------------------------------
// Server

async function startServer(redisUrl: string, secret: string, presenceTimeout: number, hookPath: string) {
  const port = await freePort();
  const env = serverEnv(port, redisUrl, secret, INSTANCE_ID, { PRESENCE_TIMEOUT_SECONDS: String(presenceTimeout) }, [
    'JWT_JWKS_URL',
    'GRAPHIQL',
    'PRESENCE_TICK_MS',
    'PRESENCE_GRACE_MS',
    'POSITION_CHECK_INTERVAL_MS',
    'NODE_OPTIONS',
  ]);
  const child = spawnServer(run, serverIssues, {
    label: 'server',
    args: ['--require', hookPath, DIST_INDEX],
    env,
    onLine: noteServerLine,
    startError: 'the server could not be started',
  });
  server = { ...child, port, wsUrl: `ws://127.0.0.1:${port}/graphql` };
  return server;
}

async function waitReady(s: NonNullable<typeof server>): Promise<void> {
  if (await waitServerReady(s, s.port)) return;
  throw new Error(`the server did not become ready on port ${s.port}${serverIssues.samples.length ? `:\n  ${serverIssues.samples.join('\n  ')}` : ''}`);
}

// ---------------------------------------------------------------------------------------------
// Connections

/**
 * `ws` with an error listener always attached: terminating a client whose socket is still
 * connecting (clean-up after SIGINT) makes `ws` emit 'error' after graphql-ws let go of it.
 */
class QuietWebSocket extends WebSocket {
  constructor(...args: ConstructorParameters<typeof WebSocket>) {
    super(...args);
    this.on('error', () => undefined);
  }
}

/** Opens idle graphql-ws connections in batches; resolves once each got connection_ack or failed. */
async function openClients(from: number, to: number, wsUrl: string, tokenOf: (i: number) => string): Promise<number> {
  let ok = 0;
  await inBatches(
    from,
    to,
    200,
    async (i) => {
      const r = await connectClient(run, {
        url: wsUrl,
        token: tokenOf(i),
        webSocketImpl: QuietWebSocket,
        onLateClose: (e) => {
          if (!run.exiting && !run.stoppingChildren) {
            problems.socketCloses++;
            noteProblem(`socket ${i} closed: ${e.code} ${e.reason ?? ''}`);
          }
        },
      });
      if ('client' in r) ok++;
      else {
        problems.connectFailures++;
        noteProblem(`connection ${i} failed: ${r.failed}`);
      }
    },
    () => !halted(),
  );
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Phase {
  connections: number;
  users: number;
  registered: number;
  windowMs: number;
  intervals: number;
  commands: { name: string; calls: number; perInterval: number; usecPerCall: number }[];
  totalCalls: number;
  commandsPerInterval: number;
  zaddCalls: number;
  zaddUsecPerCall: number;
  heartbeat: { n: number; p50: number; max: number; failed: number; tickP50: number; tickMax: number; maxGapMs: number };
  /** ZRANGEBYSCORE calls the server sent in the window, by key (from the hook). */
  rangesByKey: Record<string, number>;
  probe: { p50: number; p99: number; max: number };
  dbsize: number;
  presenceKeys: number;
  presenceBytes: number;
  presenceUsers: number;
  onlineUsers: number;
  usedMemoryDelta: number;
  serverCpuPct: number;
  serverRssKb: number;
}

async function measure(
  client: Redis,
  s: NonNullable<typeof server>,
  opts: Options,
  heartbeatMs: number,
  connections: number,
  users: number,
  baselineMemory: number,
): Promise<Phase> {
  // Everything the bench itself reads happens before the window opens.
  const registered = await client.hlen(KEY_INSTANCE_CONNS);
  const dbsize = await client.dbsize();
  const footprint = await presenceFootprint(client);
  const memory = await usedMemory(client);
  const probe = await probeZadd(client, opts.probes);

  // Open the window a quarter interval after a heartbeat, so it holds exactly `intervals` of them
  // (and no tick boundary of the 500 ms timers sits on its edges).
  if (hook.ready) {
    const seen = hook.samples.length;
    await pollUntil(() => hook.samples.slice(seen).some((x) => x.kind === 'heartbeat'), heartbeatMs * 3, 5);
    const last = [...hook.samples].reverse().find((x) => x.kind === 'heartbeat');
    if (last) {
      const wait = last.at + heartbeatMs / 4 - Date.now();
      if (wait > 0) await sleep(wait);
    }
  }
  const cpu0 = cpuTicks(s.pid);
  const wall0 = Date.now();
  await client.config('RESETSTAT');
  const t0 = performance.now();
  await sleep(opts.intervals * heartbeatMs);
  if (halted()) return HALT();
  const after = await commandStats(client);
  const windowMs = performance.now() - t0;
  const wall1 = Date.now();
  const cpu1 = cpuTicks(s.pid);
  const intervals = windowMs / heartbeatMs;

  const commands = [...after]
    .filter(([name]) => !BENCH_COMMANDS.has(name))
    .map(([name, st]) => ({ name, calls: st.calls, perInterval: st.calls / intervals, usecPerCall: st.usecPerCall }))
    .sort((a, b) => b.calls - a.calls || a.name.localeCompare(b.name));
  const totalCalls = commands.reduce((n, c) => n + c.calls, 0);
  const zadd = after.get('zadd');

  // Heartbeats the server sent in the window (timed inside the server by the preload hook).
  const inWindow = hook.samples.filter((x) => x.at >= wall0 && x.at <= wall1);
  const beats = inWindow.filter((x) => x.kind === 'heartbeat');
  const ticks = inWindow.filter((x) => x.kind === 'tick');
  const beatMs = beats.filter((x) => x.ok).map((x) => x.ms).sort((a, b) => a - b);
  const tickMs = ticks.filter((x) => x.ok).map((x) => x.ms).sort((a, b) => a - b);
  let maxGapMs = NaN;
  const allBeats = hook.samples.filter((x) => x.kind === 'heartbeat' && x.at >= wall0 - heartbeatMs && x.at <= wall1);
  for (let k = 1; k < allBeats.length; k++) {
    const gap = (allBeats[k] as HookSample).at - (allBeats[k - 1] as HookSample).at;
    if (!(gap <= maxGapMs)) maxGapMs = gap;
  }

  const rangesByKey: Record<string, number> = {};
  for (const r of hook.ranges) if (r.at >= wall0 && r.at <= wall1) rangesByKey[r.key] = (rangesByKey[r.key] ?? 0) + 1;

  return {
    connections,
    users,
    registered,
    windowMs,
    intervals,
    commands,
    totalCalls,
    commandsPerInterval: totalCalls / intervals,
    zaddCalls: zadd?.calls ?? 0,
    zaddUsecPerCall: zadd?.usecPerCall ?? NaN,
    heartbeat: {
      n: beats.length,
      p50: percentile(beatMs, 50),
      max: beatMs[beatMs.length - 1] ?? NaN,
      failed: beats.filter((x) => !x.ok).length,
      tickP50: percentile(tickMs, 50),
      tickMax: tickMs[tickMs.length - 1] ?? NaN,
      maxGapMs,
    },
    rangesByKey,
    probe,
    dbsize,
    presenceKeys: footprint.keys,
    presenceBytes: footprint.bytes,
    presenceUsers: footprint.users,
    onlineUsers: footprint.onlineUsers,
    usedMemoryDelta: memory - baselineMemory,
    serverCpuPct: ((cpu1 - cpu0) / CLK_TCK / (windowMs / 1000)) * 100,
    serverRssKb: rssKb(s.pid),
  };
}

function printPhase(p: Phase, heartbeatMs: number) {
  console.log('');
  console.log(`=== ${p.connections} connections (${p.users} users; ${p.registered} registered in Redis) ===`);
  console.log(`window                      ${(p.windowMs / 1000).toFixed(2)} s = ${p.intervals.toFixed(2)} heartbeat intervals of ${heartbeatMs} ms`);
  console.log(`redis commands per interval ${fmt(p.commandsPerInterval)}  (${p.totalCalls} calls in the window; INFO and CONFIG RESETSTAT of the bench left out; commands run inside Lua scripts count too)`);
  console.log('  command               calls   per interval   usec/call');
  for (const c of p.commands) {
    console.log(`  ${c.name.padEnd(20)} ${String(c.calls).padStart(6)}   ${c.perInterval.toFixed(2).padStart(12)}   ${c.usecPerCall.toFixed(2).padStart(9)}`);
  }
  if (hook.ready) {
    const ranges = Object.entries(p.rangesByKey).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    console.log(`  zrangebyscore by key, as the server sent them: ${ranges.map(([k, n]) => `${k} ${n} (${(n / p.intervals).toFixed(2)}/interval)`).join(', ') || 'none'}`);
  }
  const hb = p.heartbeat;
  console.log(
    `heartbeat (server's ZADD)   ${hook.ready ? `round trip in the server p50 ${fmt(hb.p50, 3)} ms, max ${fmt(hb.max, 3)} ms over ${hb.n} heartbeats${hb.failed ? ` (${hb.failed} FAILED)` : ''}; with the reap query after it p50 ${fmt(hb.tickP50, 3)} ms, max ${fmt(hb.tickMax, 3)} ms; largest gap between heartbeats ${fmt(hb.maxGapMs, 0)} ms` : `not timed in the server (hook: ${hook.error ?? 'no ready line'})`}`,
  );
  console.log(`heartbeat in Redis          ZADD usec_per_call ${fmt(p.zaddUsecPerCall, 2)} us (${p.zaddCalls} calls in the window)`);
  console.log(`same ZADD from the bench    round trip p50 ${fmt(p.probe.p50, 3)} ms, p99 ${fmt(p.probe.p99, 3)} ms, max ${fmt(p.probe.max, 3)} ms (bench's own connection, not the server's)`);
  console.log(`keys / presence keys        ${p.dbsize} / ${p.presenceKeys} (${p.presenceUsers} users with a connection set, ${p.onlineUsers} ONLINE)`);
  console.log(`presence memory             ${mb(p.presenceBytes)} MB by MEMORY USAGE (${fmt(p.presenceBytes / Math.max(1, p.connections), 0)} B per connection); used_memory +${mb(p.usedMemoryDelta)} MB since before the first connection`);
  console.log(`server idle CPU / RSS       ${fmt(p.serverCpuPct, 1)}% / ${(p.serverRssKb / 1024).toFixed(0)} MB`);
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  if (!existsSync(DIST_INDEX)) {
    await run.exitWith(1, `${DIST_INDEX} is missing: run npm run build first`);
  }
  const commit = gitCommit();
  const load = loadAverage();
  const heartbeatMs = Math.max(100, Math.floor((opts.presenceTimeout * 1000) / 4)); // as presence.service.ts
  const maxConnections = opts.connections[opts.connections.length - 1] as number;
  log(`commit ${commit ?? 'unknown'}; steps ${opts.connections.join(', ')} connections; PRESENCE_TIMEOUT_SECONDS ${opts.presenceTimeout} (heartbeat every ${heartbeatMs} ms); ${opts.intervals} intervals measured per step; load average ${load}`);
  if (Number(load.split(' ')[0]) > 1) log(`warning: load average ${load}: other processes may compete for the CPU`);
  ensureFileLimit(maxConnections + 2000, log);

  // Hard stop, whatever happens.
  const perStepMs = (opts.settle + 5) * 1000 + (opts.intervals + 4) * heartbeatMs + opts.probes * 20;
  const budgetMs = 120_000 + maxConnections * 25 + opts.connections.length * perStepMs;
  run.watchdog(budgetMs);

  // --- Redis (no persistence) and one instance
  const redis = await run.startRedis();
  stats = new Redis(redis.url, { lazyConnect: false, maxRetriesPerRequest: 1, connectionName: 'presence-bench' });
  stats.on('error', () => undefined);
  const client = stats;
  const hookPath = join(run.tmpDir as string, 'heartbeat-hook.cjs');
  writeFileSync(hookPath, HOOK_SOURCE);
  const secret = benchSecret();
  const s = await startServer(redis.url, secret, opts.presenceTimeout, hookPath);
  await waitReady(s);
  await pollUntil(() => hook.ready || hook.error !== null, 3000);
  if (!hook.ready) log(`warning: the heartbeat hook is not active (${hook.error ?? 'no ready line'}): the server's heartbeat round trip is not timed`);
  log(`redis ${redis.url} (pid ${redis.pid}); server :${s.port} (pid ${s.pid}, instance ${INSTANCE_ID})`);
  await sleep(heartbeatMs);
  const baselineMemory = await usedMemory(client);

  // Connection i belongs to user floor(i * 4 / 5): one user in four has two connections.
  const userOf = (i: number) => `pb-${Math.floor((i * 4) / 5)}`;
  const tokens = new Map<string, string>();
  const tokenOf = (i: number) => tokens.get(userOf(i)) as string;

  const phases: Phase[] = [];
  let open = 0;
  let opened = 0;
  for (const target of opts.connections) {
    const ids = new Set<string>();
    for (let i = opened; i < target; i++) ids.add(userOf(i));
    const missing = [...ids].filter((id) => !tokens.has(id));
    const signed = await Promise.all(missing.map((id) => signToken(secret, { sub: id, name: `Presence ${id}` }, '2h')));
    missing.forEach((id, k) => tokens.set(id, signed[k] as string));

    const t0 = performance.now();
    open += await openClients(opened, target, s.wsUrl, tokenOf);
    opened = target;
    if (halted()) return HALT();
    log(`${open} of ${target} connections acknowledged (${((performance.now() - t0) / 1000).toFixed(1)} s for ${target - (phases.at(-1)?.connections ?? 0)} new)`);
    const allRegistered = await pollUntil(async () => (await client.hlen(KEY_INSTANCE_CONNS)) >= open, 10_000, 100);
    if (!allRegistered) log(`warning: Redis holds ${await client.hlen(KEY_INSTANCE_CONNS)} connections of the instance, ${open} are open`);
    await sleep(opts.settle * 1000);
    const users = new Set(Array.from({ length: target }, (_, i) => userOf(i))).size;
    if (halted()) return HALT();
    const phase = await measure(client, s, opts, heartbeatMs, open, users, baselineMemory);
    if (halted()) return HALT();
    phases.push(phase);
    printPhase(phase, heartbeatMs);
    console.log('');
    if (serverIssues.crashes.length > 0) break;
  }

  // --- Comparison
  if (halted()) return HALT();
  const first = phases[0] as Phase;
  const last = phases[phases.length - 1] as Phase;
  // Idle, the count depends on how the timers fall, not on connections: the heartbeat (with its reap
  // query) and the grace sweep share one busy flag in presence.service.ts (when this was written), so
  // a grace tick that lands while a heartbeat runs is skipped; a window may also hold one tick more or less of each timer. Anything that scales
  // with connections adds thousands of calls, far past this tolerance.
  const tolerance = Math.max(2, first.commandsPerInterval * 0.25);
  const grows = phases.length > 1 && last.commandsPerInterval - first.commandsPerInterval > tolerance;
  console.log(`commands per heartbeat interval: ${first.connections} conns = ${fmt(first.commandsPerInterval)}, ${last.connections} conns = ${fmt(last.commandsPerInterval)}`);
  console.log(`heartbeat duration (server's ZADD round trip, p50 / max): ${phases.map((p) => `${p.connections} conns = ${fmt(p.heartbeat.p50, 3)} / ${fmt(p.heartbeat.max, 3)} ms`).join(', ')}; in Redis: ${phases.map((p) => `${fmt(p.zaddUsecPerCall, 2)} us`).join(', ')}`);
  console.log(
    grows
      ? `FAIL: Redis commands per heartbeat interval grow with the connections (${fmt(first.commandsPerInterval)} -> ${fmt(last.commandsPerInterval)}, tolerance ${fmt(tolerance)})`
      : `OK: Redis commands per heartbeat interval do not grow with the connections (difference ${fmt(last.commandsPerInterval - first.commandsPerInterval)}, tolerance ${fmt(tolerance)})`,
  );

  // --- Graceful shutdown with every socket open, then what presence left behind in Redis
  const shutdown = await stopServer();
  const leftover = {
    instanceConnections: await client.hlen(KEY_INSTANCE_CONNS),
    instanceRegistered: (await client.zscore(KEY_INSTANCES, INSTANCE_ID)) !== null,
    usersWithConnections: (await scanKeys(client, `${PREFIX}user:{*}:conns`)).length,
    graceEntries: await client.zcard(KEY_GRACE),
  };
  console.log('');
  console.log(`shutdown (SIGTERM)          exit ${shutdown?.code ?? shutdown?.signal} in ${((shutdown?.ms ?? 0) / 1000).toFixed(1)} s with ${open} sockets open`);
  console.log(`presence after shutdown     ${leftover.instanceConnections} connections of the instance, instance ${leftover.instanceRegistered ? 'STILL registered' : 'unregistered'}, ${leftover.usersWithConnections} users with connections, ${leftover.graceEntries} users in their grace period`);
  const badShutdown = !shutdown || shutdown.code !== 0 || shutdown.ms > 10_000;
  const leftBehind = leftover.instanceConnections > 0 || leftover.instanceRegistered || leftover.usersWithConnections > 0;
  const anyProblem =
    problems.connectFailures + problems.socketCloses + serverIssues.warnings + serverIssues.errors + serverIssues.crashes.length > 0 ||
    badShutdown ||
    leftBehind ||
    hook.error !== null;
  console.log(
    `problems: connection failures ${problems.connectFailures}, unexpected socket closes ${problems.socketCloses}; server log warnings ${serverIssues.warnings}, errors ${serverIssues.errors}, crashes ${serverIssues.crashes.length}${hook.error ? `; hook: ${hook.error}` : ''}${anyProblem ? '' : ' (none)'}`,
  );
  for (const line of [...problems.samples, ...serverIssues.samples, ...serverIssues.crashes]) console.log(`  ${line}`);

  const summary = {
    bench: 'presence',
    commit,
    loadAverageAtStart: load,
    presenceTimeoutSeconds: opts.presenceTimeout,
    heartbeatIntervalMs: heartbeatMs,
    intervalsPerStep: opts.intervals,
    commandsPerInterval: Object.fromEntries(phases.map((p) => [p.connections, round(p.commandsPerInterval, 2)])),
    grows,
    tolerance: round(tolerance, 2),
    steps: phases.map((p) => ({
      connections: p.connections,
      users: p.users,
      registered: p.registered,
      windowMs: round(p.windowMs, 0),
      commandsPerInterval: round(p.commandsPerInterval, 2),
      byCommand: Object.fromEntries(p.commands.map((c) => [c.name, round(c.perInterval, 2)])),
      zrangebyscoreByKey: p.rangesByKey,
      zaddCalls: p.zaddCalls,
      zaddUsecPerCall: round(p.zaddUsecPerCall, 2),
      heartbeatRoundTripMs: { p50: round(p.heartbeat.p50, 3), max: round(p.heartbeat.max, 3), n: p.heartbeat.n, failed: p.heartbeat.failed },
      heartbeatWithReapMs: { p50: round(p.heartbeat.tickP50, 3), max: round(p.heartbeat.tickMax, 3) },
      maxHeartbeatGapMs: round(p.heartbeat.maxGapMs, 0),
      benchZaddRoundTripMs: { p50: round(p.probe.p50, 3), p99: round(p.probe.p99, 3) },
      dbsize: p.dbsize,
      presenceKeys: p.presenceKeys,
      presenceBytes: p.presenceBytes,
      usedMemoryDeltaBytes: p.usedMemoryDelta,
      serverCpuPct: round(p.serverCpuPct, 1),
      serverRssKb: p.serverRssKb,
    })),
    connectFailures: problems.connectFailures,
    socketCloses: problems.socketCloses,
    serverLogWarnings: serverIssues.warnings,
    serverLogErrors: serverIssues.errors,
    serverCrashes: serverIssues.crashes.length,
    shutdown: shutdown ? { code: shutdown.code, signal: shutdown.signal, ms: shutdown.ms } : null,
    leftover,
  };
  console.log(JSON.stringify(summary));

  await run.finish(25_000, log);
  process.exit(grows || serverIssues.crashes.length > 0 ? 1 : 0);
}

main().catch((err: unknown) => {
  // After SIGINT/SIGTERM or the watchdog, clean-up closes what main was using: its errors are moot.
  if (run.exiting) return;
  void run.exitWith(1, err instanceof Error ? (err.stack ?? err.message) : String(err));
});
