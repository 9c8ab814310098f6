import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root: children run `src/index.ts` from here, as `npm run dev` does. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** How a child process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A spawned child process whose output is collected. */
export interface Child {
  process: ChildProcess;
  pid: number;
  /** Everything written to stdout so far. */
  stdout(): string;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  /** True once the process has exited. */
  hasExited(): boolean;
  /** Resolves with the first stdout line matching `pattern`, failing after `ms` or on exit. */
  waitForLine(pattern: RegExp, ms?: number): Promise<string>;
  /** Sends a signal if the process still runs. */
  kill(signal?: NodeJS.Signals): void;
}

/** A child running the server, listening. */
export interface ChildServer extends Child {
  port: number;
  /** http://127.0.0.1:<port> */
  base: string;
  /** http://127.0.0.1:<port>/graphql */
  url: string;
  /** ws://127.0.0.1:<port>/graphql */
  wsUrl: string;
  /** SIGTERM, then SIGKILL if it is still running after `ms`; resolves with how it ended. */
  stop(ms?: number): Promise<Exit>;
}

const running = new Set<Child>();

/**
 * The environment of a child: nothing inherited from the test runner (its NODE_ENV, VITEST…)
 * except what finding binaries needs, so a test states every variable the server sees.
 */
export function childEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const base: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    TMPDIR: process.env.TMPDIR,
  };
  return Object.fromEntries(
    Object.entries({ ...base, ...env }).filter((e): e is [string, string] => e[1] !== undefined),
  );
}

/** Spawns `command args` in the repository root and collects its output. */
export function spawnChild(command: string, args: string[], env: Record<string, string | undefined>): Child {
  const child = spawn(command, args, { cwd: ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not spawn ${command}`);
  let out = '';
  let err = '';
  let ended = false;
  const lineWaiters = new Set<() => void>();
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    lineWaiters.forEach((w) => w());
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<Exit>((resolve) =>
    child.once('exit', (code, signal) => {
      ended = true;
      running.delete(handle);
      lineWaiters.forEach((w) => w());
      resolve({ code, signal });
    }),
  );
  const handle: Child = {
    process: child,
    pid: child.pid,
    stdout: () => out,
    stderr: () => err,
    exited,
    hasExited: () => ended,
    waitForLine(pattern, ms = 15_000) {
      return new Promise<string>((resolve, reject) => {
        const done = () => {
          clearTimeout(timer);
          lineWaiters.delete(check);
        };
        const check = () => {
          const line = out.split('\n').find((l) => pattern.test(l));
          if (line !== undefined) {
            done();
            resolve(line);
          } else if (ended) {
            done();
            reject(new Error(`${command} exited before printing ${pattern}\nstdout: ${out}\nstderr: ${err}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out after ${ms} ms waiting for ${pattern}\nstdout: ${out}\nstderr: ${err}`));
        }, ms);
        lineWaiters.add(check);
        check();
      });
    },
    kill(signal = 'SIGTERM') {
      if (!ended) child.kill(signal);
    },
  };
  running.add(handle);
  return handle;
}

/** Spawns the server (`node --import tsx src/index.ts`) with `env`, without waiting for it. */
export function spawnServer(env: Record<string, string | undefined>): Child {
  return spawnChild(process.execPath, ['--import', 'tsx', 'src/index.ts'], {
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    // Limits have tests of their own; elsewhere they would only trip bursts of test traffic.
    RATE_LIMITS: 'off',
    ...env,
  });
}

/** Starts the server in a child process and resolves once its "listening" log line is out. */
export async function startServer(env: Record<string, string | undefined>, ms = 20_000): Promise<ChildServer> {
  const child = spawnServer(env);
  let line: string;
  try {
    line = await child.waitForLine(/listening on http/, ms);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const port = (JSON.parse(line) as { port?: number }).port;
  if (typeof port !== 'number') throw new Error(`no port in the listening line: ${line}`);
  const base = `http://127.0.0.1:${port}`;
  return {
    ...child,
    port,
    base,
    url: `${base}/graphql`,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    async stop(killAfterMs = 10_000) {
      if (child.hasExited()) return child.exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      const exit = await child.exited;
      clearTimeout(timer);
      return exit;
    },
  };
}

/** Runs a command to completion (bounded by `ms`, then SIGKILL) and returns its output. */
export async function runToExit(
  command: string,
  args: string[],
  env: Record<string, string | undefined>,
  ms = 20_000,
): Promise<Exit & { stdout: string; stderr: string; elapsedMs: number }> {
  const started = Date.now();
  const child = spawnChild(command, args, env);
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const exit = await child.exited;
  clearTimeout(timer);
  return { ...exit, stdout: child.stdout(), stderr: child.stderr(), elapsedMs: Date.now() - started };
}

/** Parses the JSON log lines (pino) a child wrote to stdout; other lines are skipped. */
export function logLines(stdout: string): Record<string, unknown>[] {
  return stdout.split('\n').flatMap((l) => {
    try {
      const v = JSON.parse(l) as unknown;
      return typeof v === 'object' && v !== null ? [v as Record<string, unknown>] : [];
    } catch {
      return [];
    }
  });
}

/** SIGKILLs every child still running (afterAll safety net). */
export async function killAllChildren(): Promise<void> {
  const left = [...running];
  for (const c of left) c.kill('SIGKILL');
  await Promise.all(left.map((c) => c.exited));
}
