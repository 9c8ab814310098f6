/**
 * Rate limit benchmark: the rate limit service (`createRateLimitService`, the same code an instance
 * runs) on a private redis-server (temp dir, no persistence, 127.0.0.1 only), driven in-process
 * through one ioredis command connection with the instance's options (key prefix, no offline
 * queue, command timeout) and the scripts of every domain (`loadScripts(LUA_DIRS)`).
 *
 * For a fixed duration, C concurrent loops each call
 *   check(identity, [{ scope: 'sendMessage', limit: { max: 1000, windowMs: 10000 }, hits: 1 }])
 * back to back over a pool of identities. Half the checks (--hot-share) go to the hottest 1% of
 * the pool, so those identities pass `max` within the window and the refused path of the script
 * runs too; the rest are spread evenly over the whole pool and are admitted. It prints:
 *
 *   - checks per second, admitted and refused counts, latency p50 / p99 / max of one check;
 *   - from `INFO commandstats` (`CONFIG RESETSTAT` just before the run, after a warm-up that loads
 *     the script on the connection): EVALSHA (+ EVAL) calls per check, which must be exactly 1:
 *     one pipeline with one script call, and the commands the script runs inside Redis per check
 *     (zremrangebyscore, zcard, zadd, pexpire, zrange), for information;
 *   - a concurrency sanity line: 200 concurrent checks on one identity with max 50, spread over
 *     several connections, admit exactly 50 (and leave exactly 50 hits in Redis).
 *
 *   npm run bench:ratelimit [-- --duration 5] [--concurrency 32] [--identities 1000] [--hot-share 0.5]
 *
 * Ends with a one-line JSON summary; exits 1 when the script calls per check are not exactly 1, the
 * sanity check fails or a check failed, 0 otherwise. redis-server, connections and the temp dir are
 * stopped and removed on exit, error or SIGINT; a watchdog bounds the whole run.
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { BENCH_COMMANDS, BenchRun, cliOptions, usageError, CLK_TCK, commandStats, cpuTicks, fmt, gitCommit, loadAverage, makeLog, percentile, round } from './lib.js';
import { waitReady } from '../src/infra/redis.js';
import { loadScripts } from '../src/infra/scripts.js';
import { createRateLimitService, type LimitCheck, type RateLimitService } from '../src/ratelimit/ratelimit.service.js';
import { LUA_DIRS } from '../src/services.js';

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  duration: number;
  concurrency: number;
  identities: number;
  hotShare: number;
}

const USAGE = `usage: npx tsx bench/ratelimit.ts [--duration S=5] [--concurrency C=32] [--identities N=1000] [--hot-share F=0.5]
  --duration     seconds the measured run lasts
  --concurrency  concurrent loops, each awaiting one check at a time
  --identities   size of the identity pool
  --hot-share    fraction of checks sent to the hottest 1% of the pool (so some are refused); 0 = uniform`;

function fatalUsage(message: string): never {
  return usageError('ratelimit', USAGE, message);
}

function parseOptions(argv: string[]): Options {
  const opts: Options = { duration: 5, concurrency: 32, identities: 1000, hotShare: 0.5 };
  for (const [name, raw] of cliOptions('ratelimit', argv, USAGE)) {
    const value = Number(raw);
    if (!Number.isFinite(value)) fatalUsage(`--${name} needs a number`);
    if (name === 'duration') {
      if (value < 0.5 || value > 300) fatalUsage('--duration needs 0.5..300 seconds');
      opts.duration = value;
    } else if (name === 'concurrency') {
      if (!Number.isInteger(value) || value < 1 || value > 10_000) fatalUsage('--concurrency needs an integer 1..10000');
      opts.concurrency = value;
    } else if (name === 'identities') {
      if (!Number.isInteger(value) || value < 1 || value > 10_000_000) fatalUsage('--identities needs an integer 1..10000000');
      opts.identities = value;
    } else if (name === 'hot-share') {
      if (value < 0 || value > 1) fatalUsage('--hot-share needs 0..1');
      opts.hotShare = value;
    } else {
      fatalUsage(`unknown argument --${name}`);
    }
  }
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Small utilities

const PREFIX = 'bench:';
const SCOPE = 'sendMessage';
const LIMIT = { max: 1000, windowMs: 10_000 };
/** Commands the script runs inside Redis, reported per check. */
const SCRIPT_COMMANDS = ['zremrangebyscore', 'zcard', 'zadd', 'pexpire', 'zrange'];
const SANITY = { checks: 200, max: 50, windowMs: 60_000, connections: 8, identity: 'sanity-one' };
const COMMAND_TIMEOUT_MS = 5000;

const log = makeLog('ratelimit');

/** A small seeded PRNG (mulberry32): the identity sequence is the same from run to run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// Children and clean-up

const clients: Redis[] = [];

/** Clean-up: connections, Redis, the temp dir. */
const bench = new BenchRun('ratelimit', {
  cleanupMs: 15_000,
  killChildrenNow: () => {
    for (const c of clients) c.disconnect();
  },
  closeConnections: () => {
    for (const c of clients.splice(0)) c.disconnect();
  },
});

function newClient(url: string, name: string, keyPrefix?: string): Redis {
  // The instance's command connection (src/infra/redis.ts): no offline queue, one retry, a timeout.
  const client = new Redis(url, {
    lazyConnect: false,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    commandTimeout: COMMAND_TIMEOUT_MS,
    connectionName: name,
    retryStrategy: () => null,
    ...(keyPrefix ? { keyPrefix } : {}),
  });
  client.on('error', () => undefined);
  clients.push(client);
  return client;
}

function buildService(client: Redis): RateLimitService {
  const scripts = loadScripts(client, LUA_DIRS);
  return createRateLimitService({ redis: client, scripts, clock: { now: () => Date.now() } });
}

// ---------------------------------------------------------------------------------------------
// Concurrency sanity: 200 concurrent checks on one identity, max 50, over several connections

interface Sanity {
  checks: number;
  max: number;
  connections: number;
  admitted: number;
  refused: number;
  stored: number;
  /** The `remaining` of the admitted checks are exactly max-1 .. 0, once each. */
  remainingDistinct: boolean;
  ok: boolean;
}

async function sanityCheck(url: string, stats: Redis): Promise<Sanity> {
  const services: RateLimitService[] = [];
  for (let k = 0; k < SANITY.connections; k++) {
    const client = newClient(url, `ratelimit-bench:sanity-${k}`, PREFIX);
    await waitReady(client, 5000);
    services.push(buildService(client));
  }
  const checks: LimitCheck[] = [{ scope: SCOPE, limit: { max: SANITY.max, windowMs: SANITY.windowMs }, hits: 1 }];
  const results = await Promise.all(
    Array.from({ length: SANITY.checks }, (_, i) => (services[i % services.length] as RateLimitService).check(SANITY.identity, checks)),
  );
  const admittedResults = results.filter((r) => r[0]?.admitted);
  const admitted = admittedResults.length;
  const stored = await stats.zcard(`${PREFIX}rl:{${SANITY.identity}}:${SCOPE}`);
  const remaining = admittedResults.map((r) => r[0]?.remaining ?? -1).sort((a, b) => a - b);
  const remainingDistinct = remaining.length === SANITY.max && remaining.every((v, i) => v === i);
  for (const c of clients.splice(clients.length - SANITY.connections)) c.disconnect();
  return {
    checks: SANITY.checks,
    max: SANITY.max,
    connections: SANITY.connections,
    admitted,
    refused: results.length - admitted,
    stored,
    remainingDistinct,
    ok: admitted === SANITY.max && stored === SANITY.max && remainingDistinct,
  };
}

// ---------------------------------------------------------------------------------------------
// The measured run

interface Run {
  elapsedMs: number;
  checks: number;
  admitted: number;
  refused: number;
  errors: number;
  errorSamples: string[];
  latency: { p50: number; p99: number; max: number; mean: number };
  hotIdentities: number;
  hotChecks: number;
  identitiesTouched: number;
  identitiesRefused: number;
  benchCpuPct: number;
  redisCpuPct: number;
}

async function runLoad(service: RateLimitService, opts: Options, redisPid: number): Promise<Run> {
  const hotIdentities = Math.max(1, Math.ceil(opts.identities / 100));
  const checks: LimitCheck[] = [{ scope: SCOPE, limit: LIMIT, hits: 1 }];
  let capacity = 1 << 16;
  let latencies = new Float64Array(capacity);
  let n = 0;
  let admitted = 0;
  let refused = 0;
  let hotChecks = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  const touched = new Uint8Array(opts.identities);
  const refusedIds = new Uint8Array(opts.identities);
  let stop = false;

  const cpuSelf0 = cpuTicks('self');
  const cpuRedis0 = cpuTicks(redisPid);
  const t0 = performance.now();
  const deadline = t0 + opts.duration * 1000;
  const loop = async (k: number) => {
    const rand = prng(0x5eed + k);
    while (!stop && !bench.exiting && performance.now() < deadline) {
      const hot = rand() < opts.hotShare;
      const idx = hot ? Math.floor(rand() * hotIdentities) : Math.floor(rand() * opts.identities);
      const started = performance.now();
      try {
        const [r] = await service.check(`u${idx}`, checks);
        const ms = performance.now() - started;
        if (n === capacity) {
          capacity *= 2;
          const bigger = new Float64Array(capacity);
          bigger.set(latencies);
          latencies = bigger;
        }
        latencies[n++] = ms;
        if (hot) hotChecks++;
        touched[idx] = 1;
        if (r?.admitted) admitted++;
        else {
          refused++;
          refusedIds[idx] = 1;
        }
      } catch (err) {
        errors++;
        const msg = err instanceof Error ? err.message : String(err);
        if (errorSamples.length < 5 && !errorSamples.includes(msg)) errorSamples.push(msg);
        stop = true; // a failing Redis would only spin: end the run
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, (_, k) => loop(k)));
  const elapsedMs = performance.now() - t0;
  const cpuSelf1 = cpuTicks('self');
  const cpuRedis1 = cpuTicks(redisPid);

  const sorted = latencies.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i] as number;
  const count = (a: Uint8Array) => a.reduce((s, v) => s + v, 0);
  const pct = (ticks: number) => (ticks / CLK_TCK / (elapsedMs / 1000)) * 100;
  return {
    elapsedMs,
    checks: n,
    admitted,
    refused,
    errors,
    errorSamples,
    latency: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[n - 1] ?? NaN, mean: n ? sum / n : NaN },
    hotIdentities,
    hotChecks,
    identitiesTouched: count(touched),
    identitiesRefused: count(refusedIds),
    benchCpuPct: pct(cpuSelf1 - cpuSelf0),
    redisCpuPct: pct(cpuRedis1 - cpuRedis0),
  };
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const commit = gitCommit(['src']);
  const load = loadAverage();
  log(
    `commit ${commit ?? 'unknown'}; ${opts.duration} s, ${opts.concurrency} concurrent loops, ${opts.identities} identities (${fmt(opts.hotShare * 100, 0)}% of checks to the hottest ${Math.max(1, Math.ceil(opts.identities / 100))}); limit ${LIMIT.max}/${LIMIT.windowMs} ms, 1 hit per check; load average ${load}`,
  );
  if (Number(load.split(' ')[0]) > 1) log(`warning: load average ${load}: other processes may compete for the CPU`);

  // Hard stop, whatever happens.
  const budgetMs = 60_000 + opts.duration * 1000 * 2;
  bench.watchdog(budgetMs);

  // --- Redis (no persistence, loopback) and the service on one command connection
  const redis = await bench.startRedis();
  const redisPid = redis.pid;
  const stats = newClient(redis.url, 'ratelimit-bench:stats');
  const command = newClient(redis.url, 'ratelimit-bench:cmd', PREFIX);
  await waitReady(stats, 5000);
  await waitReady(command, 5000);
  const version = /^redis_version:(\S+)/m.exec(await stats.info('server'))?.[1] ?? 'unknown';
  log(`redis-server ${version} at ${redis.url} (pid ${redisPid}, no persistence)`);
  const service = buildService(command);

  // --- Concurrency sanity (before the stats are reset: its commands stay out of the figures)
  const sanity = await sanityCheck(redis.url, stats);
  if (bench.exiting) return;

  // --- Warm-up: the first script call on a connection is an EVAL (ioredis), then EVALSHA.
  for (let i = 0; i < 10; i++) await service.check('warmup', [{ scope: SCOPE, limit: LIMIT, hits: 1 }]);
  await stats.flushdb();
  await stats.config('RESETSTAT');

  // --- Measured run
  log(`running for ${opts.duration} s ...`);
  const run = await runLoad(service, opts, redisPid);
  if (bench.exiting) return;
  const cmdStats = await commandStats(stats);
  const dbsize = await stats.dbsize();

  const calls = (name: string) => cmdStats.get(name)?.calls ?? 0;
  const perCheck = (name: string) => (run.checks > 0 ? calls(name) / run.checks : NaN);
  const scriptCalls = calls('evalsha') + calls('eval');
  const scriptCallsPerCheck = run.checks > 0 ? scriptCalls / run.checks : NaN;
  const exactlyOne = run.checks > 0 && scriptCalls === run.checks;
  const others = [...cmdStats.entries()]
    .filter(([name]) => !BENCH_COMMANDS.has(name) && name !== 'evalsha' && name !== 'eval' && !SCRIPT_COMMANDS.includes(name))
    .map(([name, s]) => `${name} ${s.calls}`);
  const innerTotal = SCRIPT_COMMANDS.reduce((s, name) => s + calls(name), 0);
  const failedCalls = [...cmdStats.entries()].filter(([name]) => !BENCH_COMMANDS.has(name)).reduce((s, [, c]) => s + c.failed, 0);

  // --- Report
  const rate = run.checks / (run.elapsedMs / 1000);
  console.log('');
  console.log(`=== rate limit check: ${opts.concurrency} concurrent loops, one ioredis connection, ${opts.identities} identities ===`);
  console.log(`duration                    ${fmt(run.elapsedMs / 1000, 2)} s`);
  console.log(`checks                      ${run.checks} (${run.errors} failed)`);
  console.log(`checks/s                    ${fmt(rate, 0)}`);
  console.log(
    `admitted / refused          ${run.admitted} / ${run.refused} (${fmt((run.refused / Math.max(1, run.checks)) * 100, 1)}% refused; ${run.identitiesRefused} of ${run.identitiesTouched} identities touched saw a refusal; ${run.hotChecks} checks to the ${run.hotIdentities} hot identities)`,
  );
  console.log(`latency per check           p50 ${fmt(run.latency.p50, 3)} ms, p99 ${fmt(run.latency.p99, 3)} ms, max ${fmt(run.latency.max, 3)} ms, mean ${fmt(run.latency.mean, 3)} ms`);
  console.log(`CPU during the run          bench (Node) ${fmt(run.benchCpuPct, 0)}%, redis-server ${fmt(run.redisCpuPct, 0)}%`);
  console.log(`commands per check (EVALSHA): ${fmt(scriptCallsPerCheck)}`);
  console.log(
    `  evalsha ${calls('evalsha')} + eval ${calls('eval')} = ${scriptCalls} script calls for ${run.checks} checks; evalsha usec_per_call ${fmt(cmdStats.get('evalsha')?.usecPerCall ?? NaN, 2)} us in Redis`,
  );
  console.log(`commands inside the script per check (information; admitted: zremrangebyscore, zcard, zadd, pexpire, zrange; refused: zremrangebyscore, zcard, zrange x2):`);
  for (const name of SCRIPT_COMMANDS) {
    console.log(`  ${name.padEnd(18)} ${String(calls(name)).padStart(9)} calls   ${fmt(perCheck(name), 3).padStart(6)} per check   ${fmt(cmdStats.get(name)?.usecPerCall ?? NaN, 2).padStart(6)} usec/call`);
  }
  console.log(`  ${'total'.padEnd(18)} ${String(innerTotal).padStart(9)} calls   ${fmt(run.checks > 0 ? innerTotal / run.checks : NaN, 3).padStart(6)} per check`);
  console.log(`  other commands in the window: ${others.join(', ') || 'none'}; failed calls ${failedCalls}; keys at the end ${dbsize}`);
  console.log(
    `concurrency sanity          ${sanity.checks} concurrent checks on one identity (max ${sanity.max}, ${sanity.connections} connections): admitted ${sanity.admitted}, refused ${sanity.refused}, ${sanity.stored} hits stored, remaining ${sanity.remainingDistinct ? `${sanity.max - 1}..0 once each` : 'NOT distinct'} -> ${sanity.ok ? 'OK' : 'FAIL'}`,
  );

  const problems: string[] = [];
  if (!exactlyOne) problems.push(`script calls per check are ${scriptCalls}/${run.checks}, not exactly 1`);
  if (!sanity.ok) problems.push(`concurrency sanity: ${sanity.admitted} admitted of ${sanity.checks} with max ${sanity.max}`);
  if (run.errors > 0) problems.push(`${run.errors} checks failed: ${run.errorSamples.join('; ')}`);
  const warnings: string[] = [];
  if (run.admitted === 0) warnings.push('no check was admitted: the admitted path did not run');
  if (run.refused === 0) warnings.push('no check was refused: the refused path did not run (raise --duration or --hot-share)');
  for (const w of warnings) console.log(`warning: ${w}`);
  console.log(problems.length ? `FAIL: ${problems.join('; ')}` : 'OK: one Redis command (EVALSHA) per check; the concurrency sanity check admits exactly max');

  const summary = {
    bench: 'ratelimit',
    commit,
    redisVersion: version,
    loadAverageAtStart: load,
    durationS: opts.duration,
    concurrency: opts.concurrency,
    identities: opts.identities,
    hotShare: opts.hotShare,
    hotIdentities: run.hotIdentities,
    limit: LIMIT,
    elapsedMs: round(run.elapsedMs, 0),
    checks: run.checks,
    checksPerSecond: round(rate, 0),
    admitted: run.admitted,
    refused: run.refused,
    errors: run.errors,
    latencyMs: { p50: round(run.latency.p50, 3), p99: round(run.latency.p99, 3), max: round(run.latency.max, 3), mean: round(run.latency.mean, 3) },
    cpuPct: { bench: round(run.benchCpuPct, 0), redis: round(run.redisCpuPct, 0) },
    commandsPerCheck: round(scriptCallsPerCheck, 4),
    evalsha: calls('evalsha'),
    eval: calls('eval'),
    evalshaUsecPerCall: round(cmdStats.get('evalsha')?.usecPerCall ?? NaN, 2),
    insideScriptPerCheck: Object.fromEntries(SCRIPT_COMMANDS.map((name) => [name, round(perCheck(name), 3)])),
    sanity,
    ok: problems.length === 0,
    problems,
    warnings,
  };
  console.log(JSON.stringify(summary));

  await bench.finish(15_000, log);
  process.exit(problems.length ? 1 : 0);
}

main().catch((err: unknown) => {
  // After SIGINT/SIGTERM or the watchdog, clean-up closes what main was using: its errors are moot.
  if (bench.exiting) return;
  void bench.exitWith(1, err instanceof Error ? (err.stack ?? err.message) : String(err));
});
