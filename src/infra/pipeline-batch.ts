import type { Redis } from 'ioredis';
import type { PipelineRead } from './redis.js';
import { pipelineOf } from './direct-pipeline.js';

interface Pending {
  read: PipelineRead<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * One operation's reads, gathered into one pipeline per tick: every DataLoader of the operation
 * dispatches here, so the users, rooms, messages, watermarks and presence a tick asks for cost one
 * round trip together instead of one per loader. The flush waits for `setImmediate`, after
 * DataLoader's own dispatch (`process.nextTick` once promise jobs ran), so the loaders of one wave
 * of resolvers land in the same pipeline.
 */
export class PipelineBatch {
  #pending: Pending[] = [];
  #scheduled = false;

  constructor(private readonly redis: Redis) {}

  /** Queues `read` into this tick's pipeline; resolves with what it parsed from its own replies. */
  run<T>(read: PipelineRead<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#pending.push({ read, resolve: resolve as (value: unknown) => void, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => void this.#flush());
      }
    });
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    const batch = this.#pending.splice(0);
    const pipeline = pipelineOf(this.redis);
    const parts: { entry: Pending; from: number; to: number; parse: (replies: unknown[]) => unknown }[] = [];
    for (const entry of batch) {
      const from = pipeline.length;
      try {
        const parse = entry.read(pipeline);
        parts.push({ entry, from, to: pipeline.length, parse });
      } catch (err) {
        entry.reject(err);
      }
    }
    let results: [Error | null, unknown][] = [];
    try {
      if (pipeline.length > 0) results = (await pipeline.exec()) ?? [];
    } catch (err) {
      for (const { entry } of parts) entry.reject(err);
      return;
    }
    // Each read fails alone: one command's error rejects only the read that queued it.
    for (const { entry, from, to, parse } of parts) {
      const own = results.slice(from, to);
      const failed = own.find(([err]) => err)?.[0];
      if (failed) {
        entry.reject(failed);
        continue;
      }
      try {
        entry.resolve(parse(own.map(([, value]) => value)));
      } catch (err) {
        entry.reject(err);
      }
    }
  }
}
