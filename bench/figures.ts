/**
 * The delivery figures of the README (issue #3's targets) in one command: `rounds` rounds, each
 * running bench/fanout.ts four times in a row (Switchboard at the default load, the bare
 * reference server at the default load, then both at a fixed 500 messages/s without idle
 * connections), so each Switchboard run has a bare run taken under the same machine conditions.
 *
 *   npm run build && npx tsx bench/figures.ts [--rounds 3]
 *
 * Prints every run's figures, the medians, and per pair (Switchboard over bare) the ratio of the
 * deliveries per server CPU-second and of the p99 at 500 messages/s, with their medians: on a
 * shared machine a pair's ratio moves less than either figure. Figures are printed, not asserted; a run that loses or duplicates a
 * message, or fails, makes the command exit 1.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliOptions, makeLog, percentile, usageError } from './lib.js';

const USAGE = 'usage: npx tsx bench/figures.ts [--rounds N=3]';
const FANOUT = join(dirname(fileURLToPath(import.meta.url)), 'fanout.ts');
const log = makeLog('figures');

/** The fields of bench/fanout's JSON line this summary reads. */
interface FanoutResult {
  deliveriesPerServerCpuSec: number;
  latencyMs: { p50: number; p95: number; p99: number };
  lost: number;
  duplicated: number;
  rssPerIdleConnectionKb: number | null;
  rssPerIdleConnectionUncollectedKb: number | null;
  uncollectedSplitKb?: { youngGrowth: number; oldGarbage: number } | null;
}

type Server = 'switchboard' | 'bare';
type Load = 'default' | 'rate500';

function parseOptions(argv: string[]) {
  const opts = { rounds: 3 };
  for (const [name, raw] of cliOptions('figures', argv, USAGE)) {
    const value = Number(raw);
    if (name !== 'rounds') usageError('figures', USAGE, `unknown argument --${name}`);
    if (!Number.isInteger(value) || value < 1) usageError('figures', USAGE, `--${name} needs an integer >= 1`);
    opts.rounds = value;
  }
  return opts;
}

/** Runs bench/fanout.ts once and returns its JSON line (its other output goes to stderr). */
function fanout(server: Server, load: Load): Promise<FanoutResult> {
  const args = ['--import', 'tsx', FANOUT];
  if (server === 'bare') args.push('--server', 'bare');
  if (load === 'rate500') args.push('--rate', '500', '--idle-connections', '0');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      process.stderr.write(chunk);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{"bench"'));
      if (code !== 0 || !line) return reject(new Error(`bench/fanout ${args.slice(2).join(' ')} exited ${code} without its JSON line`));
      resolve(JSON.parse(line) as FanoutResult);
    });
  });
}

/** The median of `xs` (nearest rank). */
const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);

const fmt = (x: number | null, digits = 1) => (x === null ? '-' : x.toFixed(digits));

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const runs: Record<`${Server} ${Load}`, FanoutResult[]> = {
    'switchboard default': [],
    'bare default': [],
    'switchboard rate500': [],
    'bare rate500': [],
  };
  for (let round = 1; round <= opts.rounds; round++) {
    for (const load of ['default', 'rate500'] as const) {
      for (const server of ['switchboard', 'bare'] as const) {
        log(`round ${round}/${opts.rounds}: ${server}, ${load === 'default' ? 'default load' : '500 messages/s'}`);
        runs[`${server} ${load}`].push(await fanout(server, load));
      }
    }
  }

  const col = (server: Server, load: Load, pick: (r: FanoutResult) => number | null, digits = 1) => {
    const values = runs[`${server} ${load}`].map(pick);
    const known = values.filter((v): v is number => v !== null);
    return `${known.length ? fmt(median(known), digits) : '-'} (${values.map((v) => fmt(v, digits)).join(', ')})`;
  };
  const rows: [string, Load, (r: FanoutResult) => number | null, number][] = [
    ['deliveries per server CPU-second, default load', 'default', (r) => r.deliveriesPerServerCpuSec, 0],
    ['latency p50 ms, default load', 'default', (r) => r.latencyMs.p50, 2],
    ['latency p99 ms, default load', 'default', (r) => r.latencyMs.p99, 2],
    ['latency p99 ms at 500 messages/s', 'rate500', (r) => r.latencyMs.p99, 2],
    ['RSS per idle connection KB, after a full GC', 'default', (r) => r.rssPerIdleConnectionKb, 1],
    ['the same before that GC', 'default', (r) => r.rssPerIdleConnectionUncollectedKb, 1],
    ['  of it: young generation grown by the burst', 'default', (r) => r.uncollectedSplitKb?.youngGrowth ?? null, 1],
    ['  of it: old-generation garbage', 'default', (r) => r.uncollectedSplitKb?.oldGarbage ?? null, 1],
  ];
  console.log(`\n=== delivery figures: medians of ${opts.rounds} (runs in order) ===`);
  for (const [label, load, pick, digits] of rows) {
    console.log(`${label.padEnd(46)} switchboard ${col('switchboard', load, pick, digits)}   bare ${col('bare', load, pick, digits)}`);
  }
  /** Switchboard's figure over the bare one's, per pair (a run and the bare run after it). */
  const pairs = (load: Load, pick: (r: FanoutResult) => number) =>
    runs[`switchboard ${load}`].map((r, i) => pick(r) / pick(runs[`bare ${load}`][i] as FanoutResult));
  const throughput = pairs('default', (r) => r.deliveriesPerServerCpuSec);
  const p99 = pairs('rate500', (r) => r.latencyMs.p99);
  console.log(`deliveries per server CPU-second, switchboard / bare, per pair: ${throughput.map((x) => x.toFixed(2)).join(', ')}; median ${median(throughput).toFixed(2)}`);
  console.log(`p99 at 500 messages/s, switchboard / bare, per pair: ${p99.map((x) => x.toFixed(2)).join(', ')}; median ${median(p99).toFixed(2)}x`);
  const all = Object.values(runs).flat();
  const lost = all.reduce((n, r) => n + r.lost, 0);
  const duplicated = all.reduce((n, r) => n + r.duplicated, 0);
  console.log(`lost / duplicated over all ${all.length} runs: ${lost} / ${duplicated}`);
  if (lost > 0 || duplicated > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(`bench:figures: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
