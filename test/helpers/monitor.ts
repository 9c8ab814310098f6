import { connect } from 'node:net';

/** A MONITOR session: every command Redis runs, as its arguments, until `stop()`. */
export interface RedisMonitor {
  stop(): void;
}

/** Splits a MONITOR line's `"cmd" "arg" …` part into its arguments (Redis escapes `"` and `\`). */
export function parseMonitorArgs(line: string): string[] {
  const args: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"/g;
  for (let m = re.exec(line); m; m = re.exec(line)) {
    args.push((m[1] as string).replace(/\\(x[0-9a-f]{2}|.)/gi, (_, e: string) => (e.length === 3 ? String.fromCharCode(parseInt(e.slice(1), 16)) : e)));
  }
  return args;
}

/**
 * Runs MONITOR on a connection of its own, reading the protocol by hand: ioredis' MONITOR mode can
 * throw "Command queue state error" out of its parser under a burst, an uncaught exception in
 * whatever test is running. Resolves once Redis has started monitoring. Scripts' inner commands
 * are reported too, as MONITOR shows them.
 */
export function monitorRedis(url: string, onCommand: (args: string[]) => void): Promise<RedisMonitor> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let started = false;
    let buffer = '';
    socket.setEncoding('utf8');
    socket.once('error', reject);
    socket.on('connect', () => socket.write('MONITOR\r\n'));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 2);
        if (!started) {
          if (line !== '+OK') return reject(new Error(`MONITOR answered ${line}`));
          started = true;
          resolve({ stop: () => socket.destroy() });
          continue;
        }
        // +<time> [<db> <client>] "cmd" "arg" …
        const bracket = line.indexOf('] ');
        if (line.startsWith('+') && bracket > 0) onCommand(parseMonitorArgs(line.slice(bracket + 2)));
      }
    });
  });
}
