/**
 * Shared pieces of the benchmarks in bench/: a private redis-server and temp dir with clean-up on
 * exit, error, SIGINT and SIGTERM (`BenchRun`), Switchboard server child processes, graphql-ws
 * connections, /proc readers, Redis statistics and printing helpers.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import type { Redis } from 'ioredis';
import { freePort, startRedisServer, type EmbeddedRedis } from '../src/infra/embedded-redis.js';

// ---------------------------------------------------------------------------------------------
// Paths and small utilities

/** The repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The built server entry point (`npm run build`). */
export const DIST_INDEX = join(ROOT, 'dist', 'index.js');
/** The bare reference server of `bench/fanout.ts --server bare`. */
export const BARE_SERVER = join(ROOT, 'bench', 'bare-server.ts');
/** Commands a bench itself sends on its stats connection inside a measured window; left out of the counts. */
export const BENCH_COMMANDS = new Set(['info', 'config|resetstat', 'config']);

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** A logger printing `[name 12.3s] message` (seconds since the process started). */
export const makeLog = (name: string) => (msg: string) => console.log(`[${name} ${(performance.now() / 1000).toFixed(1)}s] ${msg}`);
/** `n` rounded to `digits` decimals for JSON, null when not finite. */
export const round = (n: number, digits = 1) => (Number.isFinite(n) ? Number(n.toFixed(digits)) : null);
/** `n` with `digits` decimals, 'n/a' when not finite. */
export const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
/** A random JWT secret for one run. */
export const benchSecret = () => `bench-${Math.random().toString(36).slice(2)}-${Date.now()}`;

/** Rejects with "timed out after … waiting for `what`" when `p` takes longer than `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls until `check` is true or `ms` passed; answers whether it became true. */
export async function pollUntil(check: () => boolean | Promise<boolean>, ms: number, every = 50): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(every);
  }
}

/** The `p`th percentile (nearest rank) of ascending `sorted`; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] as number;
}

/** The commit the source tree is at (dist/ is assumed built from it), with "+dirty" for local changes under `paths`. */
export function gitCommit(paths: string[] = ['src', 'schema']): string | null {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  if (head.status !== 0) return null;
  const dirty = spawnSync('git', ['status', '--porcelain', '--', ...paths], { cwd: ROOT, encoding: 'utf8' });
  return `${head.stdout.trim()}${dirty.stdout?.trim() ? '+dirty' : ''}`;
}

/** The 1, 5 and 15 minute load averages, as /proc/loadavg writes them. */
export const loadAverage = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

// ---------------------------------------------------------------------------------------------
// Command line

/** Prints `bench:<bench>: <message>` and the usage to stderr, and exits 2. */
export function usageError(bench: string, usage: string, message: string): never {
  console.error(`bench:${bench}: ${message}\n${usage}`);
  process.exit(2);
}

/**
 * The `--name value` and `--name=value` options of a bench's command line, in order, each with a
 * value. `--help` (or `-h`) prints the usage and exits 0; anything else exits 2 with the usage.
 */
export function cliOptions(bench: string, argv: string[], usage: string): [name: string, value: string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') {
      console.log(usage);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) usageError(bench, usage, `unknown argument ${arg}`);
    const raw = m[2] ?? argv[++i];
    if (raw === undefined || raw === '') usageError(bench, usage, `--${m[1]} needs a value`);
    out.push([m[1] as string, raw]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// /proc readers

/** Clock ticks per second (getconf CLK_TCK, 100 when unknown). */
export const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/** utime + stime of a process, in clock ticks. */
export function cpuTicks(pid: number | 'self'): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces: fields are counted after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // fields 14 and 15 of proc(5)
}

/** VmRSS of a process, in KB. */
export function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Soft limit of open files, raised with prlimit (we run as root) when below `need`. */
export function ensureFileLimit(need: number, log: (msg: string) => void): number {
  const read = () => {
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m?.[1] === 'unlimited' ? Infinity : Number(m?.[1] ?? 1024);
  };
  const soft = read();
  if (soft >= need) return soft;
  const target = Math.max(need, 65536);
  const r = spawnSync('prlimit', ['--pid', String(process.pid), `--nofile=${target}:${target}`], { encoding: 'utf8' });
  const after = read();
  if (after < need) {
    log(`warning: open-file limit is ${after}, ${need} wanted (prlimit: ${r.stderr?.trim() || r.error?.message || 'failed'}); connections may fail`);
  } else {
    log(`raised the open-file limit from ${soft} to ${after}`);
  }
  return after;
}

// ---------------------------------------------------------------------------------------------
// Redis statistics

/** One command's line of INFO commandstats. */
export interface CommandStat {
  calls: number;
  usec: number;
  usecPerCall: number;
  failed: number;
}

/**
 * Counts the writes an ioredis client's socket makes from now until `restore()`: one per round
 * trip (a command, or a whole pipeline, is one write, and on a connection that coalesces the
 * writes of a turn, everything sent in one turn is). Counted where the socket hands data to the
 * kernel (`_write`/`_writev`), after corking. Used by bench/delivery and the push service test.
 */
export function countRoundTrips(client: Redis): { readonly count: number; restore(): void } {
  type Writer = (...args: unknown[]) => unknown;
  const stream = (client as unknown as { stream: { _write: Writer; _writev?: Writer } }).stream;
  const originals = { _write: stream._write, _writev: stream._writev };
  let count = 0;
  for (const name of ['_write', '_writev'] as const) {
    const original = originals[name];
    if (!original) continue;
    stream[name] = (...args: unknown[]) => {
      count++;
      return original.apply(stream, args);
    };
  }
  return {
    get count() {
      return count;
    },
    restore: () => {
      stream._write = originals._write;
      if (originals._writev) stream._writev = originals._writev;
    },
  };
}

/** INFO commandstats, by command name (Redis 7 names subcommands `config|resetstat`). */
export async function commandStats(client: Redis): Promise<Map<string, CommandStat>> {
  const out = new Map<string, CommandStat>();
  const info = await client.info('commandstats');
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)(?:.*?failed_calls=(\d+))?/gm)) {
    out.set(m[1] as string, { calls: Number(m[2]), usec: Number(m[3]), usecPerCall: Number(m[4]), failed: Number(m[5] ?? 0) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The run: Redis, temp dir, clean-up, exit

/** What a bench adds to the shared clean-up. */
export interface BenchHooks {
  /** Timeout of the clean-up `exitWith` runs, in ms. */
  cleanupMs: number;
  /** Orderly stop of the bench's children (servers), before the sockets close. */
  stopChildren?: () => Promise<void>;
  /** Closes the bench's own Redis connections, after the sockets and before redis-server stops. */
  closeConnections?: () => void;
  /** Synchronous last resort on process 'exit', after the sockets are terminated. */
  killChildrenNow?: () => void;
  /** Called by `exitWith` with a non-zero code before clean-up began (prints what may explain it). */
  onFailure?: () => void;
}

/**
 * One benchmark run: its private redis-server, temp dir and graphql-ws clients, stopped on exit,
 * error, SIGINT (exit 130) and SIGTERM (exit 143). Construct it once, at module load.
 */
export class BenchRun {
  /** The private redis-server, once started. */
  redis: EmbeddedRedis | null = null;
  /** The temp dir, removed on clean-up. */
  tmpDir: string | null = null;
  /** Every graphql-ws client opened, terminated on clean-up. */
  readonly wsClients: Client[] = [];
  /** True once clean-up began (SIGINT, SIGTERM, watchdog, error or the end of main). */
  exiting = false;
  /** True once the bench itself stops its children: their exits are not crashes. */
  stoppingChildren = false;

  constructor(
    /** Short name: messages are prefixed `bench:<name>:`. */
    readonly name: string,
    private readonly hooks: BenchHooks,
  ) {
    process.on('exit', () => this.killAllNow());
    process.on('SIGINT', () => {
      if (this.exiting) process.exit(130);
      void this.exitWith(130, 'interrupted');
    });
    process.on('SIGTERM', () => {
      if (this.exiting) process.exit(143);
      void this.exitWith(143, 'terminated');
    });
  }

  /** Creates the temp dir `switchboard-<name>-*` and starts redis-server in it, without persistence. */
  async startRedis(): Promise<EmbeddedRedis> {
    this.tmpDir = mkdtempSync(join(tmpdir(), `switchboard-${this.name}-`));
    this.redis = await startRedisServer({ dir: join(this.tmpDir, 'redis'), appendOnly: false });
    return this.redis;
  }

  /** Ends the run with exit code 3 when it lasts longer than `budgetMs`. */
  watchdog(budgetMs: number): void {
    setTimeout(() => void this.exitWith(3, `watchdog: the run took more than ${Math.round(budgetMs / 1000)} s`), budgetMs).unref();
  }

  /** Synchronous last resort (process 'exit'): kill whatever is still running. */
  private killAllNow() {
    for (const c of this.wsClients) {
      try {
        c.terminate();
      } catch {
        // already gone
      }
    }
    this.hooks.killChildrenNow?.();
    if (this.redis) {
      try {
        process.kill(this.redis.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    if (this.tmpDir) rmSync(this.tmpDir, { recursive: true, force: true });
  }

  /** Orderly clean-up: children, sockets, connections, then Redis and the temp dir. */
  async cleanup(): Promise<void> {
    this.stoppingChildren = true;
    await this.hooks.stopChildren?.();
    for (const c of this.wsClients.splice(0)) {
      try {
        c.terminate();
      } catch {
        // gone
      }
    }
    this.hooks.closeConnections?.();
    if (this.redis) {
      const r = this.redis;
      await withTimeout(r.stop(), 7000, 'redis-server to stop').catch(() => {
        try {
          process.kill(r.pid, 'SIGKILL');
        } catch {
          // gone
        }
      });
      this.redis = null;
    }
    if (this.tmpDir) {
      rmSync(this.tmpDir, { recursive: true, force: true });
      this.tmpDir = null;
    }
  }

  /** Prints `message`, cleans up (once) and exits with `code`. */
  async exitWith(code: number, message?: string): Promise<never> {
    if (message) console.error(`bench:${this.name}: ${message}`);
    if (code !== 0 && !this.exiting) this.hooks.onFailure?.();
    if (!this.exiting) {
      this.exiting = true;
      await withTimeout(this.cleanup(), this.hooks.cleanupMs, 'clean-up').catch((err: Error) => console.error(`bench:${this.name}: ${err.message}`));
    }
    process.exit(code);
  }

  /** The end of a successful main: clean-up within `ms`, a warning through `log` when it times out. */
  async finish(ms: number, log: (msg: string) => void): Promise<void> {
    this.exiting = true;
    await withTimeout(this.cleanup(), ms, 'clean-up').catch((err: Error) => log(`warning: ${err.message}`));
  }
}

// ---------------------------------------------------------------------------------------------
// Server children

/** What node prints when the bench opens a server's inspector (collectGarbage): not the server's. */
const INSPECTOR_LINE = /^(Debugger (listening on|attached|ending on)|For help, see: https:\/\/nodejs\.org)/;

/** What the servers wrote at warn level and above, and how they ended. */
export class ServerIssues {
  warnings = 0;
  errors = 0;
  samples: string[] = [];
  crashes: string[] = [];

  /** Counts one line of a server's output (pino JSON; anything else counts as an error). */
  note(label: string, line: string) {
    if (!line.trim() || INSPECTOR_LINE.test(line)) return;
    let level = 50;
    let msg = line;
    try {
      const j = JSON.parse(line) as { level?: number; msg?: string; err?: unknown };
      level = typeof j.level === 'number' ? j.level : 50;
      msg = `${j.msg ?? ''} ${j.err ? JSON.stringify(j.err).slice(0, 300) : ''}`.trim();
    } catch {
      // not pino JSON (a stack trace, a start-up error): count it as an error
    }
    if (level >= 50) this.errors++;
    else if (level >= 40) this.warnings++;
    else return;
    const sample = `${label}: ${msg.slice(0, 400)}`;
    if (this.samples.length < 12 && !this.samples.includes(sample)) this.samples.push(sample);
  }

  /** Prints the samples to stderr (for `BenchHooks.onFailure`). */
  printSamples() {
    if (this.samples.length === 0) return;
    console.error('server output (warn and above):');
    for (const line of this.samples) console.error(`  ${line}`);
  }
}

/** Environment of a server child: production, warn-level logs, rate limits off, 127.0.0.1, key prefix `bench:`. */
export function serverEnv(port: number, redisUrl: string, secret: string, instanceId: string, extra: NodeJS.ProcessEnv, drop: string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    RATE_LIMITS: 'off', // a benchmark of delivery, not of limits
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    JWT_SECRET: secret,
    REDIS_KEY_PREFIX: 'bench:',
    INSTANCE_ID: instanceId,
    ...extra,
  };
  for (const k of drop) delete env[k];
  return env;
}

/** A spawned server child. */
export interface ServerChild {
  child: ChildProcess;
  pid: number;
  exited: Promise<void>;
}

/**
 * Spawns `node <args>` in ROOT; hands every line of its stdout and stderr to `onLine`, and records
 * an exit the bench did not ask for in `issues.crashes` (printed as `bench:<name>: <label> … exited unexpectedly`).
 */
export function spawnServer(
  run: BenchRun,
  issues: ServerIssues,
  o: { label: string; args: string[]; env: NodeJS.ProcessEnv; onLine: (line: string) => void; startError: string },
): ServerChild {
  const child = spawn(process.execPath, o.args, { cwd: ROOT, env: o.env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(o.startError);
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  for (const stream of [child.stdout, child.stderr]) {
    let buf = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        o.onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (buf.length > 100_000) buf = buf.slice(-10_000);
    });
  }
  child.once('exit', (code, signal) => {
    if (!run.stoppingChildren) {
      const what = `${o.label} (pid ${child.pid}) exited unexpectedly: code ${code}, signal ${signal}`;
      issues.crashes.push(what);
      console.error(`bench:${run.name}: ${what}`);
    }
  });
  return { child, pid: child.pid, exited };
}

/** Whether a child process has ended. */
export const hasExited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

/** How a child ended on SIGTERM. */
export interface ChildEnd {
  code: number | null;
  signal: string | null;
  ms: number;
}

/** SIGTERM to a running child (SIGKILL after 12 s); resolves with how it ended. */
export async function terminateChild(s: ServerChild): Promise<ChildEnd> {
  const t0 = performance.now();
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), 12_000);
  await s.exited;
  clearTimeout(timer);
  return { code: s.child.exitCode, signal: s.child.signalCode, ms: Math.round(performance.now() - t0) };
}

/** GET a path; resolves with the status (0 on a connection error). */
export function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((res) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: 2000 }, (r) => {
      r.resume();
      res(r.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => res(0));
  });
}

/** Polls GET /ready for up to 20 s; answers whether it answered 200 (false at once when the child ended). */
export async function waitServerReady(s: ServerChild, port: number): Promise<boolean> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (hasExited(s.child)) break;
    if ((await httpStatus(port, '/ready')) === 200) return true;
    await sleep(100);
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// graphql-ws connections

/** Runs `open(i)` for i in [from, to), `size` at a time (SYN-flood friendly), while `go()` holds. */
export async function inBatches(from: number, to: number, size: number, open: (i: number) => Promise<void>, go: () => boolean = () => true): Promise<void> {
  for (let start = from; start < to && go(); start += size) {
    const batch: Promise<void>[] = [];
    for (let i = start; i < Math.min(to, start + size); i++) batch.push(open(i));
    await Promise.all(batch);
  }
}

/**
 * Opens one graphql-ws client (eager, no retries, tracked in `run.wsClients`); resolves with it on
 * connection_ack, or with the reason it failed (30 s at most). `onLateClose` hears closes after that.
 */
export function connectClient(
  run: BenchRun,
  o: { url: string; token: string; webSocketImpl: unknown; onLateClose: (e: { code?: number; reason?: string }) => void },
): Promise<{ client: Client } | { failed: string }> {
  return new Promise((res) => {
    let settled = false;
    const done = (r: { client: Client } | { failed: string }) => {
      if (settled) return;
      settled = true;
      res(r);
    };
    const client = createClient({
      url: o.url,
      webSocketImpl: o.webSocketImpl,
      lazy: false,
      retryAttempts: 0,
      connectionParams: { authorization: `Bearer ${o.token}` },
      onNonLazyError: () => undefined,
      on: {
        connected: () => done({ client }),
        closed: (event) => {
          const e = event as { code?: number; reason?: string };
          if (!settled) done({ failed: `closed ${e.code} ${e.reason ?? ''}` });
          else o.onLateClose(e);
        },
        error: (err) => done({ failed: err instanceof Error ? err.message : String(err) }),
      },
    });
    run.wsClients.push(client);
    setTimeout(() => done({ failed: 'no connection_ack in 30 s' }), 30_000).unref();
  });
}

// ---------------------------------------------------------------------------------------------
// Switchboard server children and GraphQL over HTTP

/** A Switchboard server child with its addresses and keep-alive agent. */
export interface ServerProc extends ServerChild {
  /** The inspector's port, when started `inspectable`. */
  inspectPort?: number;
  name: string;
  port: number;
  url: string;
  wsUrl: string;
  agent: http.Agent;
}

/**
 * Spawns `node dist/index.js` as `name` on a free port (production, rate limits off, see
 * `serverEnv`) and records it in `servers`. BENCH_SERVER_NODE_ARGS adds node options, e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/prof" (NODE_OPTIONS refuses --cpu-prof).
 */
export async function startBenchServer(
  run: BenchRun,
  issues: ServerIssues,
  servers: ServerProc[],
  o: {
    name: string;
    redisUrl: string;
    secret: string;
    env?: NodeJS.ProcessEnv;
    /** What node runs instead of `dist/index.js` (its arguments). */
    entry?: string[];
    /** Gives the child an inspector port (opened on SIGUSR1) so the bench can ask for a full GC ({@link collectGarbage}). */
    inspectable?: boolean;
  },
): Promise<ServerProc> {
  const { name } = o;
  const port = await freePort();
  const inspectPort = o.inspectable ? await freePort() : undefined;
  const env = serverEnv(port, o.redisUrl, o.secret, name, o.env ?? {}, ['JWT_JWKS_URL', 'GRAPHIQL', 'BENCH_SERVER_NODE_ARGS']);
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  // The port only: the inspector stays closed until the bench sends SIGUSR1 (collectGarbage).
  if (inspectPort !== undefined) nodeArgs.push(`--inspect-port=127.0.0.1:${inspectPort}`);
  const child = spawnServer(run, issues, {
    label: name,
    args: [...nodeArgs, ...(o.entry ?? [DIST_INDEX])],
    env,
    onLine: (line) => issues.note(name, line),
    startError: `${name} could not be started`,
  });
  const s: ServerProc = {
    ...child,
    name,
    port,
    inspectPort,
    url: `http://127.0.0.1:${port}/graphql`,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    // Idle sockets close after 2 s, before the server's 5 s keep-alive timeout would close them
    // under a request being written (ECONNRESET).
    agent: new http.Agent({ keepAlive: true, maxSockets: 256, timeout: 2000 }),
  };
  servers.push(s);
  return s;
}

/** Waits for GET /ready of a server child, or throws. */
export async function waitReady(s: ServerProc): Promise<void> {
  if (await waitServerReady(s, s.port)) return;
  throw new Error(`${s.name} did not become ready on port ${s.port} (see errors above)`);
}

/** A GraphQL response over HTTP. */
export interface GqlResponse<T> {
  data?: T | null;
  errors?: { message: string; extensions?: { code?: string } }[];
}

/** POSTs a GraphQL operation through the instance's keep-alive agent. */
export function post<T>(s: ServerProc, token: string, query: string, variables: Record<string, unknown>, timeoutMs = 10_000): Promise<GqlResponse<T>> {
  const body = JSON.stringify({ query, variables });
  return new Promise((res, rej) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: s.port,
        path: '/graphql',
        method: 'POST',
        agent: s.agent,
        headers: {
          'content-type': 'application/json',
          accept: 'application/graphql-response+json, application/json',
          authorization: `Bearer ${token}`,
          'content-length': Buffer.byteLength(body),
        },
      },
      (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            res(JSON.parse(text) as GqlResponse<T>);
          } catch {
            rej(new Error(`HTTP ${r.statusCode}: ${text.slice(0, 200)}`));
          }
        });
        r.on('error', rej);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    req.on('error', rej);
    req.end(body);
  });
}

/** POSTs an operation and returns its data, or throws with its errors. */
export async function postOk<T>(s: ServerProc, token: string, query: string, variables: Record<string, unknown>): Promise<T> {
  const r = await post<T>(s, token, query, variables);
  if (r.errors?.length || !r.data) throw new Error(`GraphQL error from ${s.name}: ${JSON.stringify(r.errors ?? r)}`);
  return r.data;
}

/**
 * Runs `use` with a session on the inspector of a server started `inspectable` (SIGUSR1 opens it on
 * its port); `call` sends one protocol command and resolves with its result.
 */
async function withInspector<T>(s: ServerProc, use: (call: (method: string, params?: object) => Promise<unknown>) => Promise<T>): Promise<T> {
  if (s.inspectPort === undefined) throw new Error(`${s.name} was not started inspectable`);
  process.kill(s.pid, 'SIGUSR1');
  const target = await withTimeout(
    (async () => {
      for (;;) {
        try {
          const res = await fetch(`http://127.0.0.1:${s.inspectPort}/json/list`);
          const list = (await res.json()) as { webSocketDebuggerUrl: string }[];
          if (list[0]) return list[0].webSocketDebuggerUrl;
        } catch {
          // Not listening yet.
        }
        await sleep(100);
      }
    })(),
    10_000,
    `${s.name}'s inspector`,
  );
  const ws = new WebSocket(target);
  await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), 10_000, 'inspector socket');
  let id = 0;
  const call = (method: string, params?: object) => {
    const callId = ++id;
    const answered = new Promise<unknown>((resolve) => {
      const onMessage = (data: WebSocket.RawData) => {
        const m = JSON.parse(String(data)) as { id?: number; result?: unknown };
        if (m.id !== callId) return;
        ws.off('message', onMessage);
        resolve(m.result);
      };
      ws.on('message', onMessage);
    });
    ws.send(JSON.stringify({ id: callId, method, params }));
    return withTimeout(answered, 60_000, method);
  };
  try {
    return await use(call);
  } finally {
    ws.close();
  }
}

/**
 * Runs a full garbage collection in a server started `inspectable`, through the inspector
 * protocol (HeapProfiler.collectGarbage). The server's code is not involved. Used so an RSS reading
 * counts what the process holds, not garbage V8 has not collected yet (when it does depends on its
 * heuristics).
 */
export async function collectGarbage(s: ServerProc, times = 2): Promise<void> {
  await withInspector(s, async (call) => {
    for (let i = 1; i <= times; i++) await call('HeapProfiler.collectGarbage');
  });
}

/** The sizes of V8's young and old generations in a server started `inspectable` (MB), or null when it cannot tell. */
export async function heapSpaces(s: ServerProc): Promise<{ newMb: number; oldMb: number } | null> {
  // Read-only: node:v8's statistics, evaluated in the server through the inspector.
  const expression = `(() => { const get = process.getBuiltinModule?.('v8')?.getHeapSpaceStatistics; if (!get) return null;
    const size = (n) => get().find((x) => x.space_name === n)?.space_size ?? 0;
    return JSON.stringify({ newMb: size('new_space') / 1048576, oldMb: size('old_space') / 1048576 }); })()`;
  const result = (await withInspector(s, (call) => call('Runtime.evaluate', { expression }))) as { result?: { value?: unknown } };
  const value = result?.result?.value;
  return typeof value === 'string' ? (JSON.parse(value) as { newMb: number; oldMb: number }) : null;
}
