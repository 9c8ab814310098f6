import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { ChainableCommander, Redis } from 'ioredis';

/**
 * ioredis' own script runner (what `defineCommand` wraps): EVAL the first time on a connection,
 * EVALSHA after, and EVAL again on NOSCRIPT (a Redis restart or SCRIPT FLUSH), in pipelines too.
 * Used directly rather than through `defineCommand`, because every `redis.pipeline()` copies each
 * defined command onto the new pipeline object: with our scripts that copy was ~3% of a request's CPU.
 */
interface IoredisScript {
  execute(container: unknown, args: (string | number)[], options: { replyEncoding: 'utf8' | null }): Promise<unknown> | unknown;
}
const Script = (createRequire(import.meta.url)('ioredis/built/Script.js') as {
  default: new (lua: string, numberOfKeys: number, keyPrefix: string, readOnly: boolean) => IoredisScript;
}).default;

const SCRIPT_FILE = /^([a-z][A-Za-z0-9]*)-(\d+)\.lua$/;

/** A registered Lua script, callable with its keys and arguments. */
export type ScriptRunner = (keys: string[], args: (string | number)[]) => Promise<unknown>;

/** Runs registered scripts by name. */
export interface ScriptRegistry {
  /** Returns the runner of a script, failing if it was never registered. */
  get(name: string): ScriptRunner;
  /** Like {@link get}, but bulk replies come back as Buffers (binary values). */
  getBuffer(name: string): ScriptRunner;
  /** Adds a call of a registered script to a pipeline (its reply comes with the pipeline's). */
  queue(pipeline: ChainableCommander, name: string, keys: string[], args: (string | number)[]): void;
  names(): string[];
}

/**
 * Registers every `lua/<commandName>-<numKeys>.lua` in the given folders once for a client
 * (EVALSHA with an automatic EVAL fallback after a Redis restart; keys get the client's
 * keyPrefix). Fails on a duplicate name or a key count that does not match the file name.
 */
export function loadScripts(redis: Redis, dirs: (string | URL)[]): ScriptRegistry {
  const numKeysByName = new Map<string, number>();
  const byName = new Map<string, IoredisScript>();
  const keyPrefix = redis.options.keyPrefix ?? '';
  const options = { replyEncoding: 'utf8' as const };
  const bufferOptions = { replyEncoding: null };
  for (const d of dirs) {
    const dir = typeof d === 'string' ? d : fileURLToPath(d);
    for (const file of readdirSync(dir).sort()) {
      if (!file.endsWith('.lua')) continue;
      const m = SCRIPT_FILE.exec(file);
      if (!m) throw new Error(`Lua script ${file}: name must be <commandName>-<numKeys>.lua`);
      const name = m[1] as string;
      const numberOfKeys = Number(m[2]);
      if (numKeysByName.has(name)) throw new Error(`Lua script ${name} is defined twice`);
      numKeysByName.set(name, numberOfKeys);
      byName.set(name, new Script(readFileSync(join(dir, file), 'utf8'), numberOfKeys, keyPrefix, false));
    }
  }
  const scriptOf = (name: string): IoredisScript => {
    const script = byName.get(name);
    if (!script) throw new Error(`Lua script ${name} is not registered`);
    return script;
  };
  const keyCountError = (name: string, keys: string[]) => {
    const numberOfKeys = numKeysByName.get(name);
    return keys.length === numberOfKeys ? null : new Error(`${name} takes ${numberOfKeys} keys, got ${keys.length}`);
  };
  const runner = (name: string, replies: { replyEncoding: 'utf8' | null }): ScriptRunner => {
    const script = scriptOf(name);
    return (keys, args) => {
      const error = keyCountError(name, keys);
      if (error) return Promise.reject(error);
      return script.execute(redis, [...keys, ...args], { ...replies }) as Promise<unknown>;
    };
  };
  return {
    get: (name) => runner(name, options),
    getBuffer: (name) => runner(name, bufferOptions),
    queue(pipeline, name, keys, args) {
      const script = scriptOf(name);
      const error = keyCountError(name, keys);
      if (error) throw error;
      script.execute(pipeline, [...keys, ...args], { ...options });
    },
    names: () => [...numKeysByName.keys()],
  };
}
