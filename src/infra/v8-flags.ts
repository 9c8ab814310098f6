/**
 * V8 settings of the server process, applied on import (index.ts imports this first, before any
 * other module allocates).
 *
 * Allocation-site pretenuring off: V8 allocates objects of a site whose objects survived a
 * scavenge straight into old space. A request's objects (HTTP parser state, the send's Redis
 * commands, the GraphQL context) live about a millisecond, but the burst of subscriptions at
 * start-up and the requests that happen to straddle a scavenge mark their sites as long-lived, and
 * from then on every request's objects go to old space: at 500 messages/s that promoted ~1 MB per
 * scavenge, made scavenges 2-7 ms (old-to-new pointers to scan) and grew the heap until a
 * mark-compact. Off, they die young: ~0.2 MB per scavenge, scavenges ~1 ms (bench/fanout --rate 500
 * with --trace-gc; README § Delivery).
 */
import v8 from 'node:v8';

v8.setFlagsFromString('--no-allocation-site-pretenuring');
