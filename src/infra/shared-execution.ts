import { createHash } from 'node:crypto';
import {
  createSourceEventStream,
  type GraphQLError,
  execute,
  print,
  TypeInfo,
  visit,
  visitWithTypeInfo,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLSchema,
} from 'graphql';
import { isAsyncIterable, isPromise, type Plugin, type PromiseOrValue as MaybePromise } from 'graphql-yoga';
import { compiledOperation, runCompiled } from './jit-execution.js';
import { textFrame, type EndListener, type EndReporter } from './ws-server.js';

/** The SDL directive marking fields whose value depends on who asks. */
export const PER_VIEWER_DIRECTIVE = 'perViewer';

/**
 * Maps an async iterator, passing `return()` through at once so the source is released. A class, so
 * an open subscription holds one small object rather than a set of closures; `next()` chains
 * promises instead of suspending an async function per subscription.
 */
class MappedIterator<T, U> implements AsyncGenerator<U, void, void> {
  private readonly it: AsyncIterator<T>;
  constructor(
    source: AsyncIterable<T>,
    private readonly fn: (value: T) => MaybePromise<U>,
    /** When set, masks what the source throws (the direct path, which skips yoga's masking). */
    private readonly maskThrown?: (error: unknown) => unknown,
  ) {
    this.it = source[Symbol.asyncIterator]();
  }
  next(): Promise<IteratorResult<U, void>> {
    return this.it.next().then(
      (r) => (r.done ? DONE : Promise.resolve(this.fn(r.value)).then((value) => ({ done: false, value }))),
      this.maskThrown &&
        ((err: unknown) => {
          throw (this.maskThrown as (error: unknown) => unknown)(err);
        }),
    );
  }
  async return(): Promise<IteratorResult<U, void>> {
    await this.it.return?.();
    return DONE;
  }
  async throw(err: unknown): Promise<IteratorResult<U, void>> {
    if (this.it.throw) await this.it.throw(err);
    throw err;
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
}

const DONE: IteratorResult<never, void> = Object.freeze({ done: true, value: undefined });

/** True when the operation reads a field marked `@perViewer`. */
function readsPerViewerFields(schema: GraphQLSchema, document: DocumentNode): boolean {
  const typeInfo = new TypeInfo(schema);
  let found = false;
  visit(
    document,
    visitWithTypeInfo(typeInfo, {
      Field() {
        const def = typeInfo.getFieldDef();
        if (def?.astNode?.directives?.some((d) => d.name.value === PER_VIEWER_DIRECTIVE)) found = true;
      },
    }),
  );
  return found;
}

/** Counters, for tests and benchmarks. */
export interface SharedExecutionStats {
  /** Events executed (once per event and operation key). */
  executions: number;
  /** Results handed on without executing again. */
  shared: number;
  /** Frames the direct path wrote straight to WebSockets. */
  direct: number;
}

/**
 * Where a subscription's events go when they skip graphql-ws's per-event path (an async iterator
 * chain per subscriber): straight onto its WebSocket, as frames made of the shared result's bytes.
 */
export interface EventSink {
  /** True while an event can go out at once: the socket is open and not backed up. */
  readonly ready: boolean;
  /** Sends the event's result after every event sent before it; does not wait for the socket. */
  push(event: object): void;
  /** As `push`, resolving once this event left the process (or the socket closed): back-pressure. */
  send(event: object): Promise<void>;
  /**
   * Ends the subscription of a {@link SinkSource} the sink runs: `event` (an ending error), if any,
   * is its last result. Only for a source the sink has started.
   */
  end(event: object | null): void;
}

/**
 * A subscription's event stream that hands everything to its sink (a room stream). Returned by a
 * subscription resolver, the sink itself becomes the stream graphql-ws iterates: it starts the
 * source when asked for the first event and answers that request once, when the source calls
 * `end`, so an idle subscription holds no chain of iterators and promises between the two.
 */
export interface SinkSource extends AsyncIterable<unknown> {
  /** The sink the source delivers to. */
  readonly sink: EventSink | undefined;
  /** Starts delivering; the end is reported through `sink.end` (not through the source's own `next()`). */
  startThroughSink(): void;
  /** Stops for good: the subscription ended (completed by the client, or its socket closed). */
  stop(): void;
}

const isSinkSource = (v: unknown, sink: EventSink): v is SinkSource =>
  typeof (v as SinkSource).startThroughSink === 'function' && (v as SinkSource).sink === sink;

/** Where a direct-path context holds its subscription's own stream (see {@link directStreamOf}). */
export const DIRECT_STREAM = Symbol('directStream');

/** The context fields a WebSocket subscription carries (set in app.ts), and the sink made from them. */
export interface SinkContext {
  socket?: unknown;
  wsSubscriptionId?: string;
  eventSink?: EventSink;
  [DIRECT_STREAM]?: AsyncGenerator<ExecutionResult, void, void>;
}

/**
 * The stream of a WebSocket subscription that has a sink, for graphql-ws' `onOperation` to run in
 * place of the result envelop returned: that one wraps it in two iterators per subscription (yoga's
 * masked errors: a map of each result and a catch of each error), closures an idle subscription
 * would hold for its whole life. The stream masks results and errors itself, the same way. Taken
 * once: the context does not keep it.
 */
export function directStreamOf(context: unknown): AsyncGenerator<ExecutionResult, void, void> | undefined {
  const ctx = context as SinkContext | undefined;
  const stream = ctx?.[DIRECT_STREAM];
  if (stream) ctx[DIRECT_STREAM] = undefined;
  return stream;
}

/** What the direct path needs of a `ws` WebSocket. */
interface WsSocket {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Buffer, options: { binary: boolean }, cb?: (err?: Error) => void): void;
  /** Writes a whole frame at once (GraphqlWebSocket), or answers false: `send` then. */
  sendFrame?(frame: Buffer, cb?: (err?: Error) => void): boolean;
  close(code?: number, reason?: string): void;
}

const isWsSocket = (s: unknown): s is WsSocket =>
  typeof s === 'object' && s !== null && typeof (s as WsSocket).send === 'function' && 'bufferedAmount' in s;

const WS_OPEN = 1;
/** ws' options for a text frame whose payload is given as bytes. */
const TEXT_FRAME = Object.freeze({ binary: false });
/** The byte that closes a `next` message around its payload. */
const CLOSE_BRACE = 0x7d;
/** graphql-ws' close code for a server error while streaming. */
const WS_INTERNAL_ERROR = 4500;

/**
 * A subscription's sink onto its WebSocket: each event's frame is the shared result's JSON spliced
 * into `{"id":…,"type":"next","payload":…}`, in order. One small object per subscription, no closures.
 * For a {@link SinkSource} it is also the subscription's stream: `next()` answers once, with what
 * `end` reports.
 */
class SocketSink implements EventSink, EndReporter {
  /** The source this sink runs (a SinkSource), once it is the subscription's stream. */
  #source: SinkSource | null = null;
  #started = false;
  #over = false;
  /** Who gets the end: the WebSocket server's operation ({@link reportEnd}), or a waiting `next()`. */
  #listener: EndListener | null = null;
  /** The end, when it came before anyone asked for it. */
  #final: MaybePromise<IteratorResult<ExecutionResult, void>> | null = null;
  #pending = 0;
  /** The last event still waiting for its result (none while events go out at once). */
  #tail: Promise<void> | null = null;
  readonly #prefix: string;
  readonly #prefixBytes: number;
  constructor(
    private readonly socket: WsSocket,
    id: string,
    private readonly shared: SharedResults,
    private readonly args: ExecutionArgs,
    private readonly key: string,
    private readonly highWaterBytes: number,
    private readonly stats: SharedExecutionStats,
  ) {
    // One flat string (join), held for the subscription's life.
    this.#prefix = ['{"id":', JSON.stringify(id), ',"type":"next","payload":'].join('');
    this.#prefixBytes = Buffer.byteLength(this.#prefix);
  }
  get ready(): boolean {
    return this.socket.readyState === WS_OPEN && this.socket.bufferedAmount < this.highWaterBytes;
  }
  push(event: object): void {
    this.#out(event, undefined);
  }
  send(event: object): Promise<void> {
    return new Promise((resolve) => this.#out(event, resolve));
  }
  #out(event: object, done: (() => void) | undefined): void {
    let body: MaybePromise<Buffer>;
    try {
      body = this.shared.body(this.args, this.key, event);
    } catch {
      return this.#fail(done);
    }
    // Sync (the common case: every resolver of the selection answered at once) and nothing before it
    // still waiting: out now. Otherwise after what is waiting, so events keep their order.
    if (this.#pending === 0 && !isPromise(body)) return this.#write(body, done);
    this.#pending++;
    this.#tail = (this.#tail ?? Promise.resolve())
      .then(() => body)
      .then(
        (j) => {
          this.#write(j, done);
          this.#settled();
        },
        () => {
          this.#fail(done);
          this.#settled();
        },
      );
  }
  #settled(): void {
    if (--this.#pending === 0) this.#tail = null;
  }
  /** Makes this sink the stream of `source` (see {@link SinkSource}). */
  adopt(source: SinkSource): this {
    this.#source = source;
    return this;
  }
  end(event: object | null): void {
    if (this.#over) return;
    this.#over = true;
    let answer: MaybePromise<IteratorResult<ExecutionResult, void>> = DONE;
    if (event !== null) {
      try {
        const result = this.shared.ending(this.args, this.key, event);
        answer = isPromise(result) ? result.then((value) => ({ done: false, value })) : { done: false, value: result };
      } catch (err) {
        answer = Promise.reject(err);
      }
    }
    const listener = this.#listener;
    this.#listener = null;
    if (listener) listener.ended(answer);
    else this.#final = answer;
  }
  /** Starts the source; its end goes to `listener` (ws-server.ts' operations), not to a `next()`. */
  reportEnd(listener: EndListener): void {
    const final = this.#final;
    if (final !== null) {
      this.#final = null;
      return listener.ended(final);
    }
    if (this.#over) return listener.ended(DONE);
    this.#listener = listener;
    this.#start();
  }
  #start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#source?.startThroughSink();
  }
  /** Iterated instead: one answer, the end (then done). */
  next(): Promise<IteratorResult<ExecutionResult, void>> {
    return new Promise((resolve) => this.reportEnd({ ended: resolve }));
  }
  return(): Promise<IteratorResult<ExecutionResult, void>> {
    this.#over = true;
    this.#final = null;
    this.#source?.stop();
    const listener = this.#listener;
    this.#listener = null;
    listener?.ended(DONE);
    return Promise.resolve(DONE);
  }
  throw(err: unknown): Promise<IteratorResult<ExecutionResult, void>> {
    void this.return();
    return Promise.reject(err);
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
  /**
   * The frame is this subscription's prefix, the result's bytes (encoded once for all its
   * subscribers) and `}`, written into one buffer: no per-subscriber string to build and encode.
   */
  #write(body: Buffer, done: (() => void) | undefined): void {
    if (this.socket.readyState !== WS_OPEN) return done?.();
    this.stats.direct++;
    const payloadBytes = this.#prefixBytes + body.length + 1;
    const frame = textFrame(payloadBytes);
    const start = frame.length - payloadBytes;
    frame.write(this.#prefix, start);
    body.copy(frame, start + this.#prefixBytes);
    frame[frame.length - 1] = CLOSE_BRACE;
    const cb = done && (() => done());
    if (this.socket.sendFrame?.(frame, cb)) return;
    this.socket.send(frame.subarray(start), TEXT_FRAME, cb);
  }
  /** As graphql-ws does when a stream throws: the socket closes with 4500. */
  #fail(done: (() => void) | undefined): void {
    this.socket.close(WS_INTERNAL_ERROR, 'Internal server error');
    done?.();
  }
}

/** Results of events, executed once per (event, operation key) and serialized once. */
interface SharedResults {
  result(args: ExecutionArgs, key: string, event: unknown): MaybePromise<ExecutionResult>;
  /** The result's JSON as UTF-8 bytes, made once per (event, operation key). */
  body(args: ExecutionArgs, key: string, event: object): MaybePromise<Buffer>;
  /** An ending event's result as the direct path sends it (errors masked). */
  ending(args: ExecutionArgs, key: string, event: unknown): MaybePromise<ExecutionResult>;
}

/** Options of {@link useSharedExecution}. */
export interface SharedExecutionOptions {
  /** The viewer of an operation's context (for operations executed per viewer). */
  viewerIdOf: (context: unknown) => string;
  stats?: SharedExecutionStats;
  /** Masks an error of a result sent by the direct path, as yoga's masked errors would. */
  maskError: (error: GraphQLError) => Error;
  /** Bytes a WebSocket may hold unsent before its events take the queued path (back-pressure). */
  highWaterBytes: number;
}

/**
 * Executes each subscription event once per distinct (operation, variables) on this instance and
 * hands the same result to every subscriber of it, instead of resolving the same message (and
 * loading its sender) once per subscriber. Events are shared by identity: pub/sub parses a Redis
 * message once and gives every listener the same object. An operation that reads a `@perViewer`
 * field is executed per viewer. Results are held weakly by the event, so they go when it does.
 *
 * A WebSocket subscription also gets an {@link EventSink} in its context (`eventSink`): a stream
 * that uses it writes each event's frame straight to the socket, the result serialized once for
 * all its subscribers, and yields to graphql-ws only what ends it (an error), so a delivery costs a
 * string concatenation and a socket write rather than a chain of async iterators per subscriber.
 */
export function useSharedExecution(opts: SharedExecutionOptions): Plugin {
  const { viewerIdOf, maskError, highWaterBytes } = opts;
  const stats = opts.stats ?? { executions: 0, shared: 0, direct: 0 };
  // By text, not by node: two parses of one query (no parser cache, SSE vs WebSocket) still share.
  const docs = new WeakMap<DocumentNode, DocInfo>();
  type Entry = { result: MaybePromise<ExecutionResult>; body?: MaybePromise<Buffer> };
  // The results of an event ride on the event object itself (a symbol property), not in a WeakMap
  // keyed by it: V8's young-generation collector handles WeakMap entries with short-lived keys
  // slowly (scavenges measured ~10x longer) and promotes them, so they piled up in old space.
  type WithResults = { [RESULTS]?: Map<string, Entry> };

  const docOf = (args: ExecutionArgs): DocInfo => {
    let doc = docs.get(args.document);
    if (!doc) {
      const text = print(args.document);
      doc = { id: createHash('sha256').update(text).digest('base64'), perViewer: readsPerViewerFields(args.schema, args.document) };
      docs.set(args.document, doc);
    }
    return doc;
  };

  // One flat string (join) naming the document by its text's hash: an open subscription holds its
  // key, which a template literal would leave as a tree of string parts until first hashed.
  const keyOf = (args: ExecutionArgs): string => {
    const doc = docOf(args);
    const variables = args.variableValues ? JSON.stringify(args.variableValues) : '';
    const viewer = doc.perViewer ? viewerIdOf(args.contextValue) : '';
    return [doc.id, args.operationName ?? '', variables, viewer].join('\n');
  };

  const run = (args: ExecutionArgs, payload: unknown): MaybePromise<ExecutionResult> => {
    stats.executions++;
    // Compiled by graphql-jit where it compiles (jit-execution.ts): graphql-js's execute allocates
    // per call what V8's young generation then promotes.
    const compiled = compiledOperation(args);
    if (compiled) return runCompiled(compiled, args, payload);
    return execute({ ...args, rootValue: payload });
  };

  const entryOf = (args: ExecutionArgs, key: string, payload: object): Entry => {
    let byKey = (payload as WithResults)[RESULTS];
    if (!byKey) {
      // A frozen event cannot carry them: executed per subscriber, as without sharing.
      if (!Object.isExtensible(payload)) return { result: run(args, payload) };
      byKey = new Map();
      Object.defineProperty(payload, RESULTS, { value: byKey, enumerable: false, writable: true });
    }
    const cached = byKey.get(key);
    if (cached !== undefined) {
      stats.shared++;
      return cached;
    }
    const entry: Entry = { result: run(args, payload) };
    byKey.set(key, entry);
    return entry;
  };

  const masked = (result: ExecutionResult): ExecutionResult =>
    result.errors ? { ...result, errors: result.errors.map((e) => maskError(e) as GraphQLError) } : result;

  const shared: SharedResults = {
    result: (args, key, payload) =>
      typeof payload === 'object' && payload !== null ? entryOf(args, key, payload).result : run(args, payload),
    body(args, key, payload) {
      const entry = entryOf(args, key, payload);
      if (entry.body === undefined) {
        const { result } = entry;
        entry.body = isPromise(result)
          ? Promise.resolve(result).then((r) => Buffer.from(JSON.stringify(masked(r))))
          : Buffer.from(JSON.stringify(masked(result)));
      }
      return entry.body;
    },
    ending(args, key, payload) {
      const result = shared.result(args, key, payload);
      return isPromise(result) ? result.then(masked) : masked(result);
    },
  };

  return {
    onSubscribe({ setSubscribeFn }) {
      setSubscribeFn(async (args) => {
        const key = keyOf(args);
        const ctx = args.contextValue as SinkContext | undefined;
        const direct = ctx !== undefined && ctx.wsSubscriptionId !== undefined && isWsSocket(ctx.socket);
        const sink = direct
          ? new SocketSink(ctx.socket as WsSocket, ctx.wsSubscriptionId as string, shared, args, key, highWaterBytes, stats)
          : undefined;
        if (sink) (ctx as SinkContext).eventSink = sink;
        const source = await createSourceEventStream(args);
        if (!isAsyncIterable(source)) return source;
        if (!sink) return new MappedIterator(source, (payload: unknown) => shared.result(args, key, payload));
        // graphql-ws gets the stream itself (directStreamOf), not what yoga's masking wraps around
        // it: the sink for a source that runs through it, which masks its ending error (`ending`).
        const stream: AsyncGenerator<ExecutionResult, void, void> = isSinkSource(source, sink)
          ? sink.adopt(source)
          : // Any other stream still yields its events: mapped, and masked here.
            new MappedIterator(source, (payload: unknown) => shared.ending(args, key, payload), maskError as (error: unknown) => unknown);
        (ctx as SinkContext)[DIRECT_STREAM] = stream;
        return stream;
      });
    },
  };
}

/** What the plugin keeps of an operation's document. */
interface DocInfo {
  /** SHA-256 of the printed document (base64): documents of the same text share results. */
  id: string;
  perViewer: boolean;
}

/** Where an event carries its shared results. */
const RESULTS = Symbol('sharedResults');
