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
 * Tier-up after a quarter of V8's default interrupt budget (67584 -> 16896 bytecodes run): a
 * function is handed to the optimizing compiler after a quarter of the work it otherwise takes.
 * A server's request path is a few thousand functions (HTTP, yoga/envelop, graphql-jit, ioredis,
 * ours); with the default, `--trace-opt` still showed ~30 compilations a second per instance 5-15 s
 * after start at 500 messages/s, so the first tens of seconds after every start (a deploy, a
 * scale-out, a crash restart) ran partly unoptimized. Measured (bench/fanout --rate 500, 3 s
 * warm-up, alternated, README § Delivery): p99 4.4/5.6/4.7 -> 3.1/3.0/3.0 ms, server CPU 3.8-4.4 ->
 * 3.1-3.6 s per 10 s; at steady state (20 s warm-up) no difference beyond noise. Warm code
 * is the same code: only when it is compiled changes.
 *
 * Set here rather than as a `node` option so that every way of starting the server (npm start,
 * the Dockerfile, the benchmarks' and tests' child processes) gets it; Node's docs warn that flags
 * changed after start-up may do nothing, so each effect was checked on Node 20 (`--trace-gc`, and the
 * same figures as with the flag given to `node`). It runs before any other module of the server is evaluated.
 */
import v8 from 'node:v8';

v8.setFlagsFromString('--no-allocation-site-pretenuring');
v8.setFlagsFromString('--interrupt-budget=16896');
