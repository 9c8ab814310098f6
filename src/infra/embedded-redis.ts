import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import type { Logger } from './logger.js';

/** A redis-server child process owned by this server (development only). */
export interface EmbeddedRedis {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** Finds a free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

/** True when `redis-server` can be run. */
export function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Options for {@link startRedisServer}. */
export interface RedisServerOptions {
  dir: string;
  port?: number;
  appendOnly?: boolean;
  logger?: Logger;
}

/**
 * Starts `redis-server` on loopback with its data in `dir` (AOF on by default) and resolves once it
 * accepts connections. A pid file lets the next start stop a server orphaned by a crashed parent.
 */
export async function startRedisServer(opts: RedisServerOptions): Promise<EmbeddedRedis> {
  if (!hasRedisServer()) {
    throw new Error(
      'redis-server not found: install it (apt-get install redis-server, or `npm run setup`) or set REDIS_URL',
    );
  }
  const dir = resolve(opts.dir);
  mkdirSync(dir, { recursive: true });
  const pidFile = resolve(dir, 'switchboard-redis.pid');
  killOrphan(pidFile, opts.logger);
  const port = opts.port ?? (await freePort());
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--appendonly', opts.appendOnly === false ? 'no' : 'yes',
    '--appendfsync', 'everysec',
    '--save', '',
    '--daemonize', 'no',
    '--protected-mode', 'yes',
    '--loglevel', 'warning',
  ];
  const child: ChildProcess = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
  child.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  if (child.pid === undefined) throw new Error('redis-server could not be started');
  writeFileSync(pidFile, String(child.pid));
  await waitForPort(port, 10_000, () => child.exitCode !== null).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw new Error(`redis-server did not start: ${(err as Error).message}\n${output}`);
  });
  opts.logger?.info({ port, dir, pid: child.pid }, 'embedded redis-server started');
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(pidFile, { force: true });
    },
  };
}

function killOrphan(pidFile: string, logger?: Logger): void {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (cmdline.includes('redis-server')) {
      process.kill(pid, 'SIGTERM');
      logger?.warn({ pid }, 'stopped an orphaned embedded redis-server');
    }
  } catch {
    // Not running any more.
  }
}

async function waitForPort(port: number, timeoutMs: number, dead: () => boolean): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (dead()) throw new Error('process exited');
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.write('PING\r\n');
        s.once('data', (d) => {
          s.destroy();
          // LOADING while the AOF is replayed: keep waiting.
          res(d.toString().startsWith('+PONG'));
        });
      });
      s.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`port ${port} not answering PONG in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
