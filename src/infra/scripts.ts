import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChainableCommander, Redis } from 'ioredis';

const SCRIPT_FILE = /^([a-z][A-Za-z0-9]*)-(\d+)\.lua$/;

/** A Lua script registered with `defineCommand`, callable with its keys and arguments. */
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
 * Registers every `lua/<commandName>-<numKeys>.lua` in the given folders once with ioredis
 * `defineCommand` (EVALSHA with an automatic EVAL fallback after a Redis restart). Fails on a
 * duplicate name or a key count that does not match the file name.
 */
export function loadScripts(redis: Redis, dirs: (string | URL)[]): ScriptRegistry {
  const numKeysByName = new Map<string, number>();
  for (const d of dirs) {
    const dir = typeof d === 'string' ? d : fileURLToPath(d);
    for (const file of readdirSync(dir).sort()) {
      if (!file.endsWith('.lua')) continue;
      const m = SCRIPT_FILE.exec(file);
      if (!m) throw new Error(`Lua script ${file}: name must be <commandName>-<numKeys>.lua`);
      const name = m[1] as string;
      const numberOfKeys = Number(m[2]);
      if (numKeysByName.has(name)) throw new Error(`Lua script ${name} is defined twice`);
      if (name in redis) throw new Error(`Lua script ${name} would shadow the ioredis method ${name}`);
      numKeysByName.set(name, numberOfKeys);
      redis.defineCommand(name, { numberOfKeys, lua: readFileSync(join(dir, file), 'utf8') });
    }
  }
  const callable = redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>;
  // defineCommand adds `<name>` (string replies) and `<name>Buffer` (Buffer replies).
  const runner = (name: string, method: string): ScriptRunner => {
    const numberOfKeys = numKeysByName.get(name);
    const fn = callable[method];
    if (numberOfKeys === undefined || !fn) throw new Error(`Lua script ${name} is not registered`);
    return (keys, args) => {
      if (keys.length !== numberOfKeys) {
        return Promise.reject(new Error(`${name} takes ${numberOfKeys} keys, got ${keys.length}`));
      }
      return fn.call(redis, ...keys, ...args);
    };
  };
  return {
    get: (name) => runner(name, name),
    getBuffer: (name) => runner(name, `${name}Buffer`),
    queue(pipeline, name, keys, args) {
      const numberOfKeys = numKeysByName.get(name);
      const fn = (pipeline as unknown as Record<string, (...a: (string | number)[]) => unknown>)[name];
      if (numberOfKeys === undefined || !fn) throw new Error(`Lua script ${name} is not registered`);
      if (keys.length !== numberOfKeys) throw new Error(`${name} takes ${numberOfKeys} keys, got ${keys.length}`);
      fn.call(pipeline, ...keys, ...args);
    },
    names: () => [...numKeysByName.keys()],
  };
}
