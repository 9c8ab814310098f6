/**
 * Request-cost benchmark: the server CPU one HTTP GraphQL operation costs, for a few typical
 * operations, on one Switchboard instance (`node dist/index.js`) and a private redis-server.
 *
 *   npm run build && npx tsx bench/requests.ts [--requests 4000] [--inflight 8]
 *
 * For each operation: server CPU µs per request (from /proc/<pid>/stat), requests/s, and Redis
 * commands per request (INFO commandstats, Lua's inner commands included). Figures are printed,
 * not asserted. BENCH_SERVER_NODE_ARGS adds node options to the server (e.g. --cpu-prof).
 */
import { Redis } from 'ioredis';
import { signToken } from '../src/infra/auth.js';
import {
  BENCH_COMMANDS,
  BenchRun,
  CLK_TCK,
  ServerIssues,
  benchSecret,
  cliOptions,
  commandStats,
  cpuTicks,
  hasExited,
  loadAverage,
  makeLog,
  post,
  postOk,
  startBenchServer,
  terminateChild,
  usageError,
  waitReady,
  type ServerProc,
} from './lib.js';

const USAGE = 'usage: npx tsx bench/requests.ts [--requests N=4000] [--inflight P=8]';

function parseOptions(argv: string[]) {
  const opts = { requests: 4000, inflight: 8 };
  for (const [name, raw] of cliOptions('requests', argv, USAGE)) {
    const value = Number(raw);
    if (name !== 'requests' && name !== 'inflight') usageError('requests', USAGE, `unknown argument --${name}`);
    if (!Number.isInteger(value) || value < 1) usageError('requests', USAGE, `--${name} needs an integer >= 1`);
    opts[name] = value;
  }
  return opts;
}

const servers: ServerProc[] = [];
const issues = new ServerIssues();
const run = new BenchRun('requests', {
  cleanupMs: 20_000,
  onFailure: () => issues.printSamples(),
  killChildrenNow: () => {
    for (const s of servers) if (!hasExited(s.child)) s.child.kill('SIGKILL');
  },
  stopChildren: async () => {
    for (const s of servers) s.agent.destroy();
    await Promise.all(servers.map((s) => (hasExited(s.child) ? undefined : terminateChild(s))));
  },
});
const log = makeLog('requests');

/** One measured operation: its document and the variables of request `i`. */
interface Operation {
  name: string;
  query: string;
  variables: (i: number) => Record<string, unknown>;
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  run.watchdog(10 * 60_000);
  const redis = await run.startRedis();
  const secret = benchSecret();
  const server = await startBenchServer(run, issues, servers, { name: 'server', redisUrl: redis.url, secret });
  await waitReady(server);
  const stats = new Redis(redis.url, { lazyConnect: false });
  const token = await signToken(secret, { sub: 'bench-user', name: 'Bench User' }, '2h');
  const room = await postOk<{ createRoom: { id: string } }>(server, token, 'mutation { createRoom(input: { name: "bench" }) { id } }', {});
  const roomId = room.createRoom.id;
  log(`commit server on ${server.url}; ${opts.requests} requests per operation, ${opts.inflight} in flight; load ${loadAverage()}`);

  const operations: Operation[] = [
    { name: '{ __typename }', query: '{ __typename }', variables: () => ({}) },
    { name: 'me', query: 'query { me { id name } }', variables: () => ({}) },
    {
      name: 'sendMessage',
      query: 'mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id seq } }',
      variables: (i) => ({ input: { roomId, text: `message ${i}` } }),
    },
    {
      name: 'room + last 20 messages',
      query: 'query ($id: ID!) { room(id: $id) { name messages(last: 20) { edges { node { id text sender { name } } } } } }',
      variables: () => ({ id: roomId }),
    },
  ];

  console.log('\n=== HTTP request cost (one instance; server CPU from /proc) ===');
  const summary: Record<string, { serverCpuUsPerRequest: number; requestsPerSec: number; redisCommandsPerRequest: number }> = {};
  for (const op of operations) {
    // Warm-up: JIT, parser and validation caches, keep-alive sockets.
    await drive(server, token, op, Math.max(1000, Math.floor(opts.requests / 2)), opts.inflight);
    await stats.config('RESETSTAT');
    const cpu0 = cpuTicks(server.pid);
    const t0 = performance.now();
    await drive(server, token, op, opts.requests, opts.inflight);
    const seconds = (performance.now() - t0) / 1000;
    const cpuUs = ((cpuTicks(server.pid) - cpu0) / CLK_TCK) * 1e6;
    let commands = 0;
    for (const [name, s] of await commandStats(stats)) if (!BENCH_COMMANDS.has(name)) commands += s.calls;
    const row = {
      serverCpuUsPerRequest: Math.round(cpuUs / opts.requests),
      requestsPerSec: Math.round(opts.requests / seconds),
      redisCommandsPerRequest: Number((commands / opts.requests).toFixed(2)),
    };
    summary[op.name] = row;
    console.log(`${op.name.padEnd(28)} ${String(row.serverCpuUsPerRequest).padStart(5)} µs server CPU/request   ${String(row.requestsPerSec).padStart(6)} requests/s   ${row.redisCommandsPerRequest} Redis commands/request`);
  }
  console.log(`problems: server log warnings ${issues.warnings}, errors ${issues.errors}, crashes ${issues.crashes.length}`);
  for (const s of [...issues.samples, ...issues.crashes]) console.log(`  ${s}`);
  console.log(JSON.stringify({ bench: 'requests', ...opts, loadAverageAtStart: loadAverage(), operations: summary }));
  stats.disconnect();
  await run.finish(20_000, log);
  process.exit(issues.errors + issues.crashes.length > 0 ? 1 : 0);
}

/** Sends `count` requests of `op`, `inflight` at a time; throws on the first GraphQL error. */
async function drive(server: ServerProc, token: string, op: Operation, count: number, inflight: number) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const r = await post(server, token, op.query, op.variables(i));
      if (r.errors?.length || !r.data) throw new Error(`${op.name}: ${JSON.stringify(r.errors ?? r)}`);
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
}

main().catch((err: unknown) => run.exitWith(1, err instanceof Error ? (err.stack ?? err.message) : String(err)));
