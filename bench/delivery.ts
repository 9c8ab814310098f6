/**
 * Push delivery benchmark, on a private redis-server (temp dir, no persistence) and a local
 * receiving HTTP server standing in for PUSH_WEBHOOK_URL (answers 200 at once). Three parts:
 *
 *   1. What push adds to sendMessage, in round trips and Redis commands: the services wired
 *      in-process as an instance wires them (src/services.ts), with and without push, counting the
 *      writes to the command connection's socket per send (one per round trip: a pipeline is one
 *      write) and the Redis commands per send (`INFO commandstats`).
 *   2. What push adds to sendMessage's latency: two built servers (`node dist/index.js`), one with
 *      push off, one with push on but no worker of its own (PUSH_CONCURRENCY=0: the send path alone,
 *      no delivery competing for the CPU), sends alternated between them one at a time, over HTTP;
 *      p50 / p99 of each.
 *   3. Deliveries end to end: one built server with push on (its workers, collapse window 0),
 *      `--rooms` rooms of one sender and `--recipients` members who never connect (offline), each of
 *      them a member of `--rooms-per-recipient` of the rooms (their badge counts unread messages in
 *      every room they are in: one script per room and push), one message per room, `--concurrency`
 *      sends in flight; from the first send to the last webhook
 *      received: deliveries per second, and per delivery the time from its send to its webhook
 *      (p50 / p95 / p99 / max), lost and duplicated deliveries.
 *
 *   npm run build && npm run bench:delivery [-- --sends 300] [--rooms 200] [--recipients 10]
 *     [--rooms-per-recipient 1] [--concurrency 8] [--worker-concurrency 16]
 *
 * Prints the figures and a one-line JSON summary; exits 1 when a delivery was lost or duplicated
 * or a server crashed, 0 otherwise (figures are printed, never asserted against a clock).
 * Everything it starts is stopped on exit, error or SIGINT; everything listens on 127.0.0.1 only.
 */
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { loadConfig } from '../src/config.js';
import { signToken } from '../src/infra/auth.js';
import { systemClock } from '../src/infra/clock.js';
import { freePort } from '../src/infra/embedded-redis.js';
import { createLogger } from '../src/infra/logger.js';
import { waitReady } from '../src/infra/redis.js';
import { wireServices, type Wiring } from '../src/services.js';
import {
  BENCH_COMMANDS,
  BenchRun,
  DIST_INDEX,
  ServerIssues,
  benchSecret,
  cliOptions,
  commandStats,
  countRoundTrips,
  fmt,
  gitCommit,
  hasExited,
  loadAverage,
  makeLog,
  percentile,
  pollUntil,
  round,
  serverEnv,
  spawnServer,
  terminateChild,
  usageError,
  waitServerReady,
  type ServerChild,
} from './lib.js';

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  sends: number;
  rooms: number;
  recipients: number;
  roomsPerRecipient: number;
  concurrency: number;
  workerConcurrency: number;
}

const USAGE = `usage: npm run bench:delivery [-- --sends N=300] [--rooms R=200] [--recipients K=10] [--rooms-per-recipient M=1] [--concurrency C=8] [--worker-concurrency W=16]
  --sends               sendMessage calls timed per server in part 2 (push off / push on)
  --rooms               rooms in part 3, one message each
  --recipients          offline members per room in part 3 (deliveries = rooms x recipients)
  --rooms-per-recipient how many of the part 3 rooms each recipient is a member of (the badge's cost)
  --concurrency         sends in flight in part 3
  --worker-concurrency  PUSH_CONCURRENCY of the part 3 server`;

function parseOptions(argv: string[]): Options {
  const opts: Options = { sends: 300, rooms: 200, recipients: 10, roomsPerRecipient: 1, concurrency: 8, workerConcurrency: 16 };
  const limits: Record<string, [keyof Options, number, number]> = {
    sends: ['sends', 10, 100_000],
    rooms: ['rooms', 1, 100_000],
    recipients: ['recipients', 1, 99],
    'rooms-per-recipient': ['roomsPerRecipient', 1, 100_000],
    concurrency: ['concurrency', 1, 1000],
    'worker-concurrency': ['workerConcurrency', 1, 1000],
  };
  for (const [name, raw] of cliOptions('delivery', argv, USAGE)) {
    const limit = limits[name];
    const value = Number(raw);
    if (!limit) usageError('delivery', USAGE, `unknown argument --${name}`);
    if (!Number.isInteger(value) || value < limit[1] || value > limit[2]) usageError('delivery', USAGE, `--${name} needs an integer ${limit[1]}..${limit[2]}`);
    opts[limit[0]] = value;
  }
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Run, servers, receiver

const log = makeLog('delivery');
const serverIssues = new ServerIssues();
const servers: ServerChild[] = [];
const connections: Redis[] = [];
const wirings: Wiring[] = [];
let receiver: Server | null = null;

const run = new BenchRun('delivery', {
  cleanupMs: 30_000,
  onFailure: () => serverIssues.printSamples(),
  killChildrenNow: () => {
    for (const s of servers) if (!hasExited(s.child)) s.child.kill('SIGKILL');
  },
  stopChildren: async () => {
    await Promise.all(servers.splice(0).map((s) => (hasExited(s.child) ? undefined : terminateChild(s))));
    await Promise.all(wirings.splice(0).map((w) => w.services.push.stop().then(() => w.redis.close())));
  },
  closeConnections: () => {
    for (const c of connections.splice(0)) c.disconnect();
    receiver?.closeAllConnections();
    receiver?.close();
  },
});

/** Starts a built server; resolves with its GraphQL URL once /ready answers 200. */
async function startServer(label: string, redisUrl: string, secret: string, env: NodeJS.ProcessEnv): Promise<{ url: string; child: ServerChild }> {
  const port = await freePort();
  const child = spawnServer(run, serverIssues, {
    label,
    args: [DIST_INDEX],
    env: serverEnv(port, redisUrl, secret, `delivery-${label}`, env, ['NODE_OPTIONS', 'JWT_JWKS_URL']),
    onLine: (line) => serverIssues.note(label, line),
    startError: `the ${label} server could not be started`,
  });
  servers.push(child);
  if (!(await waitServerReady(child, port))) throw new Error(`the ${label} server did not become ready on port ${port}`);
  return { url: `http://127.0.0.1:${port}/graphql`, child };
}

/** Stops a server between parts (its exit is not a crash). */
async function stopServer(s: ServerChild): Promise<void> {
  servers.splice(servers.indexOf(s), 1);
  run.stoppingChildren = true;
  await terminateChild(s);
  run.stoppingChildren = false;
}

/** What the receiver saw: arrival time (performance.now()) per delivery id, and duplicates. */
const received = new Map<string, { at: number; roomId: string }>();
let duplicates = 0;

async function startReceiver(): Promise<string> {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const at = performance.now();
      const id = String(req.headers['idempotency-key'] ?? '');
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { room: { id: string } };
        if (received.has(id)) duplicates++;
        else received.set(id, { at, roomId: body.room.id });
      } catch {
        // counted as nothing: the lost count shows it
      }
      res.writeHead(200).end();
    });
  });
  receiver.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => (receiver as Server).listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/push`;
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP

async function gql<T>(url: string, token: string, query: string, variables: Record<string, unknown>): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data?: T; errors?: unknown[] };
  if (!body.data || body.errors) throw new Error(`GraphQL error: ${JSON.stringify(body.errors)}`);
  return body.data;
}

const CREATE_ROOM = 'mutation ($input: CreateRoomInput!) { createRoom(input: $input) { id } }';
const SEND = 'mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id } }';

const createRoom = async (url: string, token: string, name: string, memberIds: string[]) =>
  (await gql<{ createRoom: { id: string } }>(url, token, CREATE_ROOM, { input: { name, memberIds } })).createRoom.id;
const send = (url: string, token: string, roomId: string, text: string) => gql(url, token, SEND, { input: { roomId, text } });

const stat = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 50), p95: percentile(s, 95), p99: percentile(s, 99), max: s[s.length - 1] ?? NaN };
};

// ---------------------------------------------------------------------------------------------
// Part 1: round trips and commands per send, in-process

async function sendPathCost(redisUrl: string, webhookUrl: string, withPush: boolean) {
  const prefix = withPush ? 'bench-rt-push:' : 'bench-rt-off:';
  const config = loadConfig({
    NODE_ENV: 'production',
    REDIS_URL: redisUrl,
    JWT_SECRET: benchSecret(),
    REDIS_KEY_PREFIX: prefix,
    ...(withPush ? { PUSH_WEBHOOK_URL: webhookUrl, PUSH_WEBHOOK_SECRET: 'bench-secret-0123456789' } : {}),
  });
  const wiring = wireServices(config, { redisUrl, logger: createLogger('silent', 'bench'), clock: systemClock });
  wirings.push(wiring);
  await waitReady(wiring.redis.command, 5000);
  const alice = { id: 'alice', name: 'Alice', roles: [] };
  const room = await wiring.services.rooms.create(alice, { name: 'rt', memberIds: ['r-1', 'r-2', 'r-3'] });
  // Warm-up: EVALSHA falls back to EVAL once per script.
  for (let i = 0; i < 5; i++) await wiring.services.messages.send(alice, { roomId: room.id, text: 'warm-up' });
  const trips = countRoundTrips(wiring.redis.command);
  const statsClient = connections[0] as Redis;
  await statsClient.config('RESETSTAT');
  const n = 100;
  for (let i = 0; i < n; i++) await wiring.services.messages.send(alice, { roomId: room.id, text: `m${i}` });
  trips.restore();
  const byCommand = [...(await commandStats(statsClient)).entries()]
    .filter(([name]) => !BENCH_COMMANDS.has(name))
    .map(([name, s]) => [name, round(s.calls / n, 2)] as const);
  wirings.splice(wirings.indexOf(wiring), 1);
  await wiring.services.push.stop();
  await wiring.redis.close();
  return { writesPerSend: trips.count / n, commandsPerSend: byCommand.reduce((sum, [, c]) => sum + (c ?? 0), 0), byCommand: Object.fromEntries(byCommand) };
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  if (!existsSync(DIST_INDEX)) await run.exitWith(1, `${DIST_INDEX} is missing: run npm run build first`);
  const commit = gitCommit();
  const load = loadAverage();
  log(`commit ${commit ?? 'unknown'}; load average ${load}; ${JSON.stringify(opts)}`);
  run.watchdog(300_000 + opts.sends * 200 + opts.rooms * opts.recipients * 20);

  const redis = await run.startRedis();
  connections.push(new Redis(redis.url, { maxRetriesPerRequest: 1, connectionName: 'delivery-bench' }));
  (connections[0] as Redis).on('error', () => undefined);
  const webhookUrl = await startReceiver();
  const secret = benchSecret();
  const token = (sub: string) => signToken(secret, { sub, name: sub }, '2h');
  const pushSettings = { PUSH_WEBHOOK_URL: webhookUrl, PUSH_WEBHOOK_SECRET: 'bench-secret-0123456789' };

  // --- Part 1
  const rtOff = await sendPathCost(redis.url, webhookUrl, false);
  const rtOn = await sendPathCost(redis.url, webhookUrl, true);
  console.log(`send path, round trips per sendMessage (socket writes, PUBLISH included): push off ${fmt(rtOff.writesPerSend)}, push on ${fmt(rtOn.writesPerSend)}`);
  console.log(`send path, Redis commands per sendMessage: push off ${fmt(rtOff.commandsPerSend)} ${JSON.stringify(rtOff.byCommand)}; push on ${fmt(rtOn.commandsPerSend)} ${JSON.stringify(rtOn.byCommand)}`);

  // --- Part 2
  const off = await startServer('push-off', redis.url, secret, { REDIS_KEY_PREFIX: 'bench-off:' });
  const on = await startServer('push-enqueue', redis.url, secret, { REDIS_KEY_PREFIX: 'bench-on:', ...pushSettings, PUSH_CONCURRENCY: '0' });
  const sender = await token('sender');
  const members = Array.from({ length: 5 }, (_, i) => `lat-${i}`);
  const roomOff = await createRoom(off.url, sender, 'latency', members);
  const roomOn = await createRoom(on.url, sender, 'latency', members);
  for (let i = 0; i < 30; i++) {
    await send(off.url, sender, roomOff, 'warm-up');
    await send(on.url, sender, roomOn, 'warm-up');
  }
  const latOff: number[] = [];
  const latOn: number[] = [];
  for (let i = 0; i < opts.sends; i++) {
    // Alternated (and which goes first too), so drift in the machine's load hits both alike.
    const order = i % 2 === 0 ? ([[off.url, roomOff, latOff], [on.url, roomOn, latOn]] as const) : ([[on.url, roomOn, latOn], [off.url, roomOff, latOff]] as const);
    for (const [url, roomId, into] of order) {
      const t0 = performance.now();
      await send(url, sender, roomId, `m${i}`);
      into.push(performance.now() - t0);
    }
  }
  const sOff = stat(latOff);
  const sOn = stat(latOn);
  console.log(`sendMessage over HTTP, ${opts.sends} sends each, one at a time: push off p50 ${fmt(sOff.p50, 3)} ms p99 ${fmt(sOff.p99, 3)} ms; push on (enqueue only) p50 ${fmt(sOn.p50, 3)} ms p99 ${fmt(sOn.p99, 3)} ms; p50 difference ${fmt(sOn.p50 - sOff.p50, 3)} ms`);
  await stopServer(off.child);
  await stopServer(on.child);

  // --- Part 3
  const e2e = await startServer('push-e2e', redis.url, secret, {
    REDIS_KEY_PREFIX: 'bench-e2e:',
    ...pushSettings,
    PUSH_COLLAPSE_WINDOW_MS: '0',
    PUSH_CONCURRENCY: String(opts.workerConcurrency),
  });
  // Rooms i..i+M-1 (M = --rooms-per-recipient) share their recipients.
  const recipientsOf = (room: number) =>
    Array.from({ length: opts.recipients }, (_, j) => `r-${Math.floor(room / opts.roomsPerRecipient)}-${j}`);
  const roomIds: string[] = [];
  for (let i = 0; i < opts.rooms; i += 20) {
    roomIds.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(20, opts.rooms - i) }, (_, k) => createRoom(e2e.url, sender, `e2e-${i + k}`, recipientsOf(i + k))),
      )),
    );
  }
  const expected = opts.rooms * opts.recipients;
  const sentAt = new Map<string, number>();
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (next < roomIds.length) {
        const roomId = roomIds[next++] as string;
        sentAt.set(roomId, performance.now());
        await send(e2e.url, sender, roomId, `to ${opts.recipients}`);
      }
    }),
  );
  const sendsDone = performance.now();
  const complete = await pollUntil(() => received.size >= expected, 120_000, 20);
  const lastArrival = Math.max(...[...received.values()].map((r) => r.at));
  const windowSec = (lastArrival - t0) / 1000;
  const latencies = [...received.values()].map((r) => r.at - (sentAt.get(r.roomId) ?? t0));
  const s = stat(latencies);
  const lost = expected - received.size;
  console.log(
    `end to end: ${received.size} of ${expected} deliveries (${opts.rooms} messages x ${opts.recipients} offline recipients, each in ${Math.min(opts.roomsPerRecipient, opts.rooms)} of the rooms) in ${fmt(windowSec, 2)} s from the first send to the last webhook: ${fmt(received.size / windowSec, 0)} deliveries/s (sends took ${fmt((sendsDone - t0) / 1000, 2)} s)`,
  );
  console.log(`end to end, send to webhook per delivery: p50 ${fmt(s.p50, 1)} ms, p95 ${fmt(s.p95, 1)} ms, p99 ${fmt(s.p99, 1)} ms, max ${fmt(s.max, 1)} ms; lost ${lost}, duplicated ${duplicates}${complete ? '' : ' (timed out after 120 s)'}`);
  await stopServer(e2e.child);
  console.log(`server log warnings ${serverIssues.warnings}, errors ${serverIssues.errors}, crashes ${serverIssues.crashes.length}`);
  for (const line of [...serverIssues.samples, ...serverIssues.crashes]) console.log(`  ${line}`);

  console.log(
    JSON.stringify({
      bench: 'delivery',
      commit,
      loadAverageAtStart: load,
      options: opts,
      sendPath: {
        roundTripsPerSend: { pushOff: round(rtOff.writesPerSend, 2), pushOn: round(rtOn.writesPerSend, 2) },
        commandsPerSend: { pushOff: round(rtOff.commandsPerSend, 2), pushOn: round(rtOn.commandsPerSend, 2) },
        httpLatencyMs: {
          pushOff: { p50: round(sOff.p50, 3), p99: round(sOff.p99, 3) },
          pushOn: { p50: round(sOn.p50, 3), p99: round(sOn.p99, 3) },
        },
      },
      endToEnd: {
        deliveries: received.size,
        expected,
        seconds: round(windowSec, 3),
        deliveriesPerSec: round(received.size / windowSec, 0),
        latencyMs: { p50: round(s.p50, 1), p95: round(s.p95, 1), p99: round(s.p99, 1), max: round(s.max, 1) },
        lost,
        duplicated: duplicates,
      },
      serverCrashes: serverIssues.crashes.length,
    }),
  );
  await run.finish(30_000, log);
  process.exit(lost > 0 || duplicates > 0 || serverIssues.crashes.length > 0 ? 1 : 0);
}

main().catch((err: unknown) => {
  if (run.exiting) return;
  void run.exitWith(1, err instanceof Error ? (err.stack ?? err.message) : String(err));
});
