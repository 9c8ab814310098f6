/**
 * V8 settings of the server process, applied on import (index.ts imports this first, before any
 * other module allocates).
 *
 * Allocation-site pretenuring off: V8 allocates the objects of an allocation site straight into
 * old space once enough of that site's objects survived scavenges. A request's objects (HTTP parser
 * state, the send's Redis commands, the GraphQL context) live about a millisecond, but measured
 * here (bench/fanout --rate 500 with --trace-gc) the servers' old generation grew ~1 MB per
 * scavenge and scavenges took 2-7 ms (old-to-new pointers to scan); with pretenuring off, ~0.2 MB
 * and ~1 ms, and p99 latency and server CPU both lower in alternated runs (README § Delivery).
 *
 * Set here rather than as a `node` option so that every way of starting the server (npm start,
 * the Dockerfile, the benchmarks' and tests' child processes) gets it; Node's docs warn that flags
 * changed after start-up may do nothing, so the effect was checked on Node 20 with `--trace-gc` (the
 * figures above). It runs before any other module of the server is evaluated.
 */
import v8 from 'node:v8';

v8.setFlagsFromString('--no-allocation-site-pretenuring');
