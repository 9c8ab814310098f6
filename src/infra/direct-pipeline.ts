import { Redis, type ChainableCommander } from 'ioredis';

/** What a command of ioredis is, as far as sending it goes. */
interface SendableCommand {
  promise: Promise<unknown>;
}

type Queued = { name: string; args: unknown[] } | { command: SendableCommand };

const ok = (value: unknown): [null, unknown] => [null, value];
const failed = (err: unknown): [Error, null] => [err as Error, null];

/** The batch whose commands are being sent right now (see {@link sendingBatch}). */
const sending: { batch: object | null } = { batch: null };

/**
 * The pipeline whose commands are being sent at this moment, if any: lets a command counter
 * (traceRoundTrips) count a batch's commands as one round trip, as it counts a pipeline's.
 */
export const sendingBatch = (): object | null => sending.batch;

/**
 * A pipeline without ioredis' `Pipeline` object: commands are recorded as they are queued and sent
 * one after the other, in order, on `exec()`, each as a plain command of the client; `exec()`
 * resolves with `[error, reply]` pairs, as a pipeline's does. On a connection whose writes of a
 * turn leave in one write (coalesceWrites), that is one round trip too.
 *
 * Why: ioredis' Pipeline constructor gives every instance its own `length` accessor (and copies
 * the client's script and added commands onto it), so each pipeline gets a hidden class of its own.
 * Measured here, a loop of 5-command pipelines made V8's young-generation collections take 4-8 ms
 * and promote megabytes a second into the old generation; the same commands sent as plain
 * commands: 0.5 ms collections, nothing promoted. On the send path that was the tail of delivery
 * latency (README § Delivery).
 */
class DirectPipeline {
  /** For ioredis' Script: a NOSCRIPT retry goes to `redis` itself (see Script.execute). */
  readonly isPipeline = true;
  /** What `exec()` will send, in order. */
  readonly queued: Queued[] = [];
  constructor(readonly redis: Redis) {}

  get length(): number {
    return this.queued.length;
  }

  /** Queues a command made elsewhere (ioredis' Script.execute does this). */
  sendCommand(command: SendableCommand): this {
    this.queued.push({ command });
    return this;
  }

  exec(): Promise<[Error | null, unknown][]> {
    const queue = this.queued.splice(0);
    const replies: Promise<[Error | null, unknown]>[] = [];
    const client = this.redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>> & Redis;
    sending.batch = this.queued;
    try {
      for (const q of queue) {
        if ('command' in q) {
          client.sendCommand(q.command as never);
          replies.push(q.command.promise.then(ok, failed));
        } else {
          let reply: Promise<unknown>;
          try {
            reply = (client[q.name] as (...args: unknown[]) => Promise<unknown>).apply(client, q.args);
          } catch (err) {
            reply = Promise.reject(err);
          }
          replies.push(reply.then(ok, failed));
        }
      }
    } finally {
      sending.batch = null;
    }
    return Promise.all(replies);
  }
}

// Every command method of the client, queuing instead of sending (`get`, `getBuffer`, `call`…).
const proto = DirectPipeline.prototype as unknown as Record<string, unknown>;
for (const name of [...Redis.prototype.getBuiltinCommands(), 'call']) {
  for (const method of [name, `${name}Buffer`]) {
    if (method in proto) continue;
    proto[method] = function (this: DirectPipeline, ...args: unknown[]) {
      this.queued.push({ name: method, args });
      return this;
    };
  }
}

/** A pipeline on `redis` that sends plain commands on `exec()` (see {@link DirectPipeline}). */
export function pipelineOf(redis: Redis): ChainableCommander {
  return new DirectPipeline(redis) as unknown as ChainableCommander;
}
