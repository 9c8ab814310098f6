/**
 * Placeholders for what only the script that runs deferred commands knows when they run: the new
 * message's seq and what derives from it (see messages/lua/sendWithHooks-n.lua, which fills them).
 */
export const SENT = {
  seq: '\u0000seq',
  epoch: '\u0000epoch',
  /** The message id (message-id.ts). */
  id: '\u0000id',
  /** The seq zero-padded to 12 digits (search's member). */
  seqMember: '\u0000seq12',
  /** The seq that a retention of `retention` messages trims with this one, zero-padded, or ''. */
  trimmedMember: (retention: number) => `\u0000trimmed12:${retention}`,
  /** The MessageAdded event as pub/sub carries it (topics.ts), with the sender's name. */
  event: (senderName: string) => `\u0000event:${JSON.stringify(senderName)}`,
} as const;

/**
 * Commands queued to run inside a script, after its own work, in one round trip: scripts the
 * running script includes (`-- include:`), and the few plain commands features queue (XADD,
 * HSET, ZADD, HINCRBY, PUBLISH). It offers what a pipeline offers them, so a feature's hook queues into either
 * the same way; a command it does not offer fails where it is queued (TypeError), in tests.
 */
export class DeferredCommands {
  /** The keys of every command, in order (the script's KEYS after its own). */
  readonly keys: string[] = [];
  /** Per command: kind, name, key count, argument count, arguments (the script's ARGV after its own). */
  readonly args: (string | number)[] = [];
  #length = 0;

  constructor(private readonly includes: ReadonlySet<string>) {}

  /** Commands queued so far (hooks use it to find their replies, as with a pipeline). */
  get length(): number {
    return this.#length;
  }

  /** Queues a registered script the running script includes. */
  script(name: string, keys: readonly string[], args: readonly (string | number)[]): this {
    if (!this.includes.has(name)) throw new Error(`Lua script ${name} cannot be deferred: the running script does not include it`);
    return this.#add('s', name, keys, args);
  }

  xadd(key: string, ...args: (string | number)[]): this {
    return this.#add('c', 'XADD', [key], args);
  }

  hset(key: string, field: string, value: string | number): this {
    return this.#add('c', 'HSET', [key], [field, value]);
  }

  zadd(key: string, score: string | number, member: string): this {
    return this.#add('c', 'ZADD', [key], [score, member]);
  }

  hincrby(key: string, field: string, increment: number): this {
    return this.#add('c', 'HINCRBY', [key], [field, increment]);
  }

  /** A channel is not a key: pub/sub prefixes its channels itself. */
  publish(channel: string, message: string): this {
    return this.#add('c', 'PUBLISH', [], [channel, message]);
  }

  #add(kind: 's' | 'c', name: string, keys: readonly string[], args: readonly (string | number)[]): this {
    this.keys.push(...keys);
    this.args.push(kind, name, keys.length, args.length, ...args);
    this.#length++;
    return this;
  }
}
