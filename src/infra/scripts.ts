import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { ChainableCommander, Redis } from 'ioredis';
import { DeferredCommands } from './deferred-commands.js';

/**
 * ioredis' own script command (what `defineCommand` uses): EVAL the first time on a connection,
 * EVALSHA after, and EVAL again after NOSCRIPT (a Redis restart or SCRIPT FLUSH), in pipelines too.
 * Used directly rather than through `defineCommand`, because every `redis.pipeline()` copies each
 * defined command onto the new pipeline object: with our scripts that copy was ~3% of a request's CPU.
 */
interface IoredisScript {
  readonly sha: string;
  /** Its command class (a Command whose `toWritable` picks EVAL or EVALSHA per connection). */
  readonly Command: new (name: string, args: unknown[], options: { replyEncoding: 'utf8' | null }) => ScriptCommand;
}
interface ScriptCommand {
  args: (string | Buffer)[];
  /** Set when an argument is a Buffer: the command is written as bytes (what stringifyArguments would set). */
  bufferMode?: boolean;
  promise: Promise<unknown>;
}
/** Where a command goes: the client, or a pipeline (which resends a NOSCRIPT retry through its client). */
interface CommandContainer {
  sendCommand(command: ScriptCommand): unknown;
  isPipeline?: boolean;
  redis?: CommandContainer;
}
const Script = (createRequire(import.meta.url)('ioredis/built/Script.js') as {
  default: new (lua: string, numberOfKeys: number | null, keyPrefix: string, readOnly: boolean) => IoredisScript;
}).default;
const NO_ARGS: never[] = [];

/**
 * The EVALSHA command of `script` with its keys prefixed and its arguments made strings here, as
 * ioredis' `Script.execute` and Command constructor would, minus their cost: the constructor
 * flattens the arguments with `Array.prototype.flat` and finds the keys to prefix through the
 * command table, which came to ~5% of a server's CPU at the fan-out benchmark's load (a send's
 * script carries its deferred commands' dozens of arguments). So the command is made without
 * arguments and given them already flat.
 */
function scriptCommand(
  script: IoredisScript,
  keyPrefix: string,
  keys: readonly string[],
  args: readonly ScriptArg[],
  options: { replyEncoding: 'utf8' | null },
): ScriptCommand {
  const command = new script.Command('evalsha', NO_ARGS, options);
  const all: (string | Buffer)[] = [script.sha, String(keys.length)];
  for (const key of keys) all.push(keyPrefix + key);
  for (const arg of args) {
    if (typeof arg === 'string') all.push(arg);
    else if (typeof arg === 'number') all.push(String(arg));
    else {
      all.push(arg);
      command.bufferMode = true;
    }
  }
  command.args = all;
  return command;
}

/** Sends EVALSHA of `script` on `container`, sending it again (as EVAL) once after NOSCRIPT, as `Script.execute` does. */
function executeScript(
  container: CommandContainer,
  script: IoredisScript,
  keyPrefix: string,
  keys: readonly string[],
  args: readonly ScriptArg[],
  options: { replyEncoding: 'utf8' | null },
): Promise<unknown> {
  const command = scriptCommand(script, keyPrefix, keys, args, options);
  command.promise = command.promise.catch((err: Error) => {
    if (!err.message.includes('NOSCRIPT')) throw err;
    // The command's own toWritable forgot the connection's copy on NOSCRIPT: this one is an EVAL.
    const client = container.isPipeline ? (container.redis as CommandContainer) : container;
    const resend = scriptCommand(script, keyPrefix, keys, args, options);
    client.sendCommand(resend);
    return resend.promise;
  });
  container.sendCommand(command);
  return command.promise;
}

const SCRIPT_FILE = /^([a-z][A-Za-z0-9]*)-(\d+|n)\.lua$/;

/** A script's first line may name other registered scripts it calls: `-- include: nameA nameB`. */
const INCLUDE_LINE = /^-- include:((?: [a-z][A-Za-z0-9]*)+)\s*$/m;

/** The names on a script's `-- include:` first line. */
function includesOf(text: string): string[] {
  const m = INCLUDE_LINE.exec(text.split('\n', 1)[0] ?? '');
  return m ? (m[1] as string).trim().split(' ') : [];
}

/**
 * The text of a script that includes others: each included script's text becomes a local function
 * `INCLUDED.<name>(KEYS, ARGV)` (its parameters shadow the globals, so its text runs unchanged and
 * its `return` is the function's), then the script's own text.
 */
function composed(text: string, sources: Map<string, string>): string {
  const names = includesOf(text);
  if (names.length === 0) return text;
  const parts = ['local INCLUDED = {}'];
  for (const name of names) {
    const source = sources.get(name);
    if (source === undefined) throw new Error(`Lua script includes ${name}, which is not registered`);
    parts.push(`INCLUDED.${name} = function(KEYS, ARGV)\n${source}\nend`);
  }
  parts.push(text);
  return parts.join('\n');
}

/** An argument of a script: numbers go as their decimal text, Buffers as their bytes. */
export type ScriptArg = string | number | Buffer;

/** A registered Lua script, callable with its keys and arguments. */
export type ScriptRunner = (keys: string[], args: ScriptArg[]) => Promise<unknown>;

/** Runs registered scripts by name. */
export interface ScriptRegistry {
  /** Returns the runner of a script, failing if it was never registered. */
  get(name: string): ScriptRunner;
  /** Like {@link get}, but bulk replies come back as Buffers (binary values). */
  getBuffer(name: string): ScriptRunner;
  /** Adds a call of a registered script to a pipeline (its reply comes with the pipeline's), or to deferred commands. */
  queue(pipeline: ChainableCommander | DeferredCommands, name: string, keys: string[], args: (string | number)[]): void;
  names(): string[];
  /** The scripts a script includes (`-- include:`), which commands deferred into its run may call. */
  included(name: string): ReadonlySet<string>;
}

/**
 * Registers every `lua/<commandName>-<numKeys>.lua` in the given folders once for a client
 * (EVALSHA with an automatic EVAL fallback after a Redis restart; keys get the client's
 * keyPrefix). Fails on a duplicate name or a key count that does not match the file name.
 * `<commandName>-n.lua` takes any number of keys; a script whose first line is
 * `-- include: a b` runs the registered scripts `a` and `b` as `INCLUDED.a(KEYS, ARGV)`.
 */
export function loadScripts(redis: Redis, dirs: (string | URL)[]): ScriptRegistry {
  /** By name: the number of keys, or null for a script that takes any number (`-n.lua`). */
  const numKeysByName = new Map<string, number | null>();
  const sources = new Map<string, string>();
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
      const numberOfKeys = m[2] === 'n' ? null : Number(m[2]);
      if (numKeysByName.has(name)) throw new Error(`Lua script ${name} is defined twice`);
      numKeysByName.set(name, numberOfKeys);
      sources.set(name, readFileSync(join(dir, file), 'utf8'));
    }
  }
  for (const [name, text] of sources) {
    byName.set(name, new Script(composed(text, sources), null, '', false));
  }
  const scriptOf = (name: string): IoredisScript => {
    const script = byName.get(name);
    if (!script) throw new Error(`Lua script ${name} is not registered`);
    return script;
  };
  const keyCountError = (name: string, keys: string[]) => {
    const numberOfKeys = numKeysByName.get(name);
    if (numberOfKeys === null) return null;
    return keys.length === numberOfKeys ? null : new Error(`${name} takes ${numberOfKeys} keys, got ${keys.length}`);
  };
  const runner = (name: string, replies: { replyEncoding: 'utf8' | null }): ScriptRunner => {
    const script = scriptOf(name);
    return (keys, args) => {
      const error = keyCountError(name, keys);
      if (error) return Promise.reject(error);
      return executeScript(redis as unknown as CommandContainer, script, keyPrefix, keys, args, replies);
    };
  };
  return {
    get: (name) => runner(name, options),
    getBuffer: (name) => runner(name, bufferOptions),
    queue(pipeline, name, keys, args) {
      const script = scriptOf(name);
      const error = keyCountError(name, keys);
      if (error) throw error;
      // Deferred into another script's run (sendWithHooks): that script calls this one itself.
      if (pipeline instanceof DeferredCommands) return void pipeline.script(name, keys, args);
      void executeScript(pipeline as unknown as CommandContainer, script, keyPrefix, keys, args, options);
    },
    names: () => [...numKeysByName.keys()],
    included: (name) => {
      scriptOf(name);
      return new Set(includesOf(sources.get(name) ?? ''));
    },
  };
}
