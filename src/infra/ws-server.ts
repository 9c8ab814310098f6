import {
  execute as graphqlExecute,
  getOperationAST,
  GraphQLError,
  parse as graphqlParse,
  validate as graphqlValidate,
  subscribe as graphqlSubscribe,
  type ExecutionArgs,
  type ExecutionResult,
} from 'graphql';
import {
  areGraphQLErrors,
  CloseCode,
  handleProtocols,
  makeServer,
  MessageType,
  parseMessage,
  stringifyMessage,
  type Context,
  type OperationResult,
  type ServerOptions,
  type SubscribeMessage,
  type SubscribePayload,
} from 'graphql-ws';
import { isAsyncIterable, type PromiseOrValue as MaybePromise } from 'graphql-yoga';
import { WebSocket, type RawData, type WebSocketServer } from 'ws';
import type { SlotWaiter, Slots } from './slots.js';

/**
 * A `ws` socket that graphql-ws serves: its per-connection state is fields of the socket itself,
 * and its events go to one set of handlers shared by every socket (see `emit`), so a connection
 * costs no listeners or closures of its own. Pass the class as the server's `WebSocket` option.
 */
export class GraphqlWebSocket extends WebSocket {
  /**
   * EventEmitter gives every emitter an empty listener map, a dictionary-mode object (~180 B), and
   * its methods make one on the first listener when there is none: this socket gets its events
   * without listeners (emit below), so most never need one.
   */
  protected _events: unknown = undefined;
  /** Where this socket's events go (set by {@link useGraphqlWs}). */
  events: SocketEvents | null = null;
  /** graphql-ws' handler of this socket's messages, once opened. */
  onGraphqlMessage: ((data: string) => Promise<void>) | null = null;
  /** graphql-ws' handler of this socket's close, once opened. */
  onGraphqlClose: ((code: number, reason: string) => Promise<void>) | null = null;
  /** Pinged, and no pong since (keep-alive). */
  awaitingPong = false;
  /** When `connection_init` must have arrived by (epoch ms), while the socket is in the sweep's set. */
  initDeadline = 0;
  /** Which of the keep-alive rounds pings this socket. */
  pingRound = 0;
  /** Pongs to the client's pings not yet written (when the server answers pings itself). */
  pendingPongs = 0;
  /** graphql-ws' context of this socket, from its `connection_init` on (the adapter runs its operations). */
  graphqlContext: object | null = null;

  /**
   * The adapter's handlers get the socket's events here rather than as listeners: a socket's
   * listener map is a dictionary V8 grows for each event name (~270 B a socket for four, measured).
   * Listeners added by anyone else still get every event.
   */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    const events = this.events;
    if (events !== null) {
      switch (event) {
        case 'message':
          events.message(this, args[0] as RawData);
          break;
        case 'pong':
          this.awaitingPong = false;
          break;
        case 'ping':
          events.ping?.(this, args[0] as Buffer);
          break;
        case 'close':
          events.close(this, args[0] as number, args[1] as Buffer);
          break;
        case 'error':
          events.error(this, args[0] as Error);
          // Handled: with no listener of its own, EventEmitter would throw it.
          if (this.listenerCount('error') === 0) return true;
          break;
      }
    }
    return super.emit(event, ...args);
  }

  /**
   * Writes a text message framed by the caller ({@link textFrame}: header and payload in one
   * buffer) straight to the TCP socket, as ws' sender would write its header and then the payload:
   * one buffer, one write, instead of a header buffer of ws' own and a corked write of two. Only
   * while ws' sender would write at once too (nothing of its own queued: no compression, no blob
   * being read); false otherwise, and the caller sends the payload through `send`.
   */
  sendFrame(frame: Buffer, cb?: (err?: Error) => void): boolean {
    const self = this as unknown as WsInternals;
    // Read defensively: were a later ws to rename these, frames would go through `send` (the unit
    // test of a plain socket getting true would fail), not throw on every delivery.
    if (this.readyState !== WebSocket.OPEN || self._sender?._state !== WS_SENDER_DEFAULT || self._extensions?.[DEFLATE] !== undefined) {
      return false;
    }
    const socket = self._socket;
    if (typeof socket?.write !== 'function') return false;
    socket.write(frame, cb);
    return true;
  }
}

/** The parts of a ws WebSocket (8.x, lib/websocket.js and lib/sender.js) that {@link GraphqlWebSocket.sendFrame} reads. */
interface WsInternals {
  _sender?: { _state?: number } | null;
  _extensions?: Record<string, unknown>;
  _socket?: { write?(data: Buffer, cb?: (err?: Error) => void): boolean } | null;
}
/** ws' sender state when it writes frames at once (`DEFAULT` in lib/sender.js). */
const WS_SENDER_DEFAULT = 0;
const DEFLATE = 'permessage-deflate';

/**
 * A server's unmasked, final text frame of `payloadBytes` bytes (RFC 6455 § 5.2): a buffer with
 * the header written; the caller writes the payload into its last `payloadBytes` bytes.
 */
export function textFrame(payloadBytes: number): Buffer {
  const offset = payloadBytes < 126 ? 2 : payloadBytes < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(offset + payloadBytes);
  frame[0] = 0x81;
  if (offset === 2) frame[1] = payloadBytes;
  else if (offset === 4) {
    frame[1] = 126;
    frame.writeUInt16BE(payloadBytes, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(payloadBytes / 2 ** 32), 2);
    frame.writeUInt32BE(payloadBytes >>> 0, 6);
  }
  return frame;
}

/** The handlers of a {@link GraphqlWebSocket}'s events, one set per server. */
interface SocketEvents {
  message(socket: GraphqlWebSocket, data: RawData): void;
  /** Answers a client's ping, when the server was made with `autoPong: false`. */
  ping?: (socket: GraphqlWebSocket, data: Buffer) => void;
  close(socket: GraphqlWebSocket, code: number, reason: Buffer): void;
  error(socket: GraphqlWebSocket, err: Error): void;
}

/** What graphql-ws' context carries as `extra` for a socket served here. */
export interface Extra {
  readonly socket: GraphqlWebSocket;
}

/** Options of {@link useGraphqlWs}. */
export interface GraphqlWsOptions {
  /** Ping period; a socket that has not answered the previous ping by the next one is terminated. 0: off. */
  keepAliveMs?: number;
  /** How long a socket may take to send `connection_init` before it is closed with 4408. */
  connectionInitWaitMs?: number;
  /** Reports an internal error (a failed handler, a socket or server error). */
  onInternalError: (err: unknown, what: string) => void;
  /** Close reasons name the error when false; "Internal server error" when true. */
  isProd: boolean;
  /** Sees each message before graphql-ws does (message limits); a socket it closed is not served further. */
  beforeMessage?: (socket: GraphqlWebSocket) => void;
  /**
   * Operations set up at once: each holds a slot from before `onSubscribe` until its result (a
   * subscription's stream) is there; the others wait in arrival order, costing the queue one entry
   * each (infra/slots.ts). With `onSubscribe` only.
   */
  setups?: Pick<Slots, 'acquireFor'>;
}

/** Keep-alive pings go out in this many rounds per period, so thousands of sockets are not pinged in one turn. */
const KEEP_ALIVE_ROUNDS = 8;
const INIT_SWEEP_MS = 250;
/** As ws' default `maxPendingAutoPongs`. */
const MAX_PENDING_PONGS = 60;
/** graphql-ws' close reasons are capped at 123 bytes (the WebSocket limit). */
const reasonOf = (err: unknown, isProd: boolean) =>
  isProd ? 'Internal server error' : (err instanceof Error ? err.message : String(err)).slice(0, 100) || 'Internal server error';

/**
 * Serves the graphql-transport-ws protocol (graphql-ws' `makeServer`) on a `ws` server whose
 * `WebSocket` is {@link GraphqlWebSocket}: what graphql-ws/use/ws does, with an idle connection's
 * memory kept small (measured with heap snapshots, README § Delivery):
 * - one keep-alive timer for all sockets (ws' heartbeat recipe) instead of an interval per socket
 *   and a timeout plus a `once('pong')` per ping;
 * - one sweep of connection-init deadlines instead of a timer per socket that graphql-ws' close
 *   handler keeps for the connection's life;
 * - no listeners per socket: the socket class hands its events to one set of handlers;
 * - a message handler that hands graphql-ws the parsed message rather than its text;
 * - `subscribe` messages run here ({@link Operations}), not in graphql-ws' handler, which stays
 *   suspended for a subscription's life: a subscription waits on no async function, and one whose
 *   stream reports its end ({@link EndReporter}) on no promise either; with `setups`, each waits
 *   for a set-up slot as a queue entry.
 * Close codes are graphql-ws' own: 4400 for a message that is not JSON, 4408 for a late init, 4500
 * when a handler throws.
 */
export function useGraphqlWs<P extends Record<string, unknown> | undefined, E extends Record<PropertyKey, unknown>>(
  options: ServerOptions<P, Extra & Partial<E>>,
  wss: WebSocketServer,
  opts: GraphqlWsOptions & {
    /**
     * Makes a socket's `extra`. Give every field the connection will set, so the object is made
     * with them rather than growing a separate property store when they are added (default: `{ socket }`).
     */
    extra?: (socket: GraphqlWebSocket) => Extra & Partial<E>;
  },
): { dispose(): Promise<void> } {
  const { keepAliveMs = 12_000, connectionInitWaitMs = 3_000, onInternalError, isProd, beforeMessage, extra = (socket) => ({ socket }) } = opts;
  const Socket = (wss.options as { WebSocket?: unknown }).WebSocket;
  if (Socket !== GraphqlWebSocket && !(typeof Socket === 'function' && Socket.prototype instanceof GraphqlWebSocket)) {
    throw new Error('useGraphqlWs: create the WebSocketServer with { WebSocket: GraphqlWebSocket }');
  }
  const awaitingInit = new Set<GraphqlWebSocket>();
  const reviver = options.jsonMessageReviver;
  const server = makeServer<P, Extra & Partial<E>>({
    ...options,
    // The deadline is this module's (one sweep, below).
    connectionInitWaitTimeout: 0,
    onConnect: (ctx) => {
      awaitingInit.delete(ctx.extra.socket);
      ctx.extra.socket.graphqlContext = ctx;
      return options.onConnect?.(ctx);
    },
  });
  const operations = options.onSubscribe
    ? new Operations<P, Extra & Partial<E>>(options, opts.setups ?? null, (socket, err) => internalError(socket, err, 'message handling'))
    : null;
  wss.options.handleProtocols = handleProtocols;

  const internalError = (socket: GraphqlWebSocket, err: unknown, what: string) => {
    onInternalError(err, what);
    socket.close(CloseCode.InternalServerError, reasonOf(err, isProd));
  };
  const events: SocketEvents = {
    message(socket, data) {
      beforeMessage?.(socket);
      const handle = socket.onGraphqlMessage;
      if (!handle || socket.readyState !== WebSocket.OPEN) return;
      // Parsed here, as graphql-ws would (its parseMessage takes an object as well as text): its
      // handler keeps what it is given for a subscription's life, and the text (the query once more,
      // inside the JSON) would be held beside the message parsed from it.
      let message: unknown;
      try {
        message = JSON.parse(String(data), reviver);
      } catch {
        socket.close(CloseCode.BadRequest, 'Invalid message received');
        return;
      }
      // Operations run here rather than in graphql-ws' handler, which stays suspended for a
      // subscription's life (see Operations); the rest of the protocol is graphql-ws'.
      const ctx = socket.graphqlContext as Context<P, Extra & Partial<E>> | null;
      if (operations && ctx && (message as { type?: unknown } | null)?.type === MessageType.Subscribe) {
        let subscribe: SubscribeMessage;
        try {
          subscribe = parseMessage(message, reviver) as SubscribeMessage;
        } catch {
          socket.close(CloseCode.BadRequest, 'Invalid message received');
          return;
        }
        operations.subscribe(socket, ctx, subscribe);
        return;
      }
      handle(message as string).catch((err: unknown) => internalError(socket, err, 'message handling'));
    },
    error(socket, err) {
      internalError(socket, err, 'socket');
    },
    close(socket, code, reason) {
      clients.delete(socket);
      awaitingInit.delete(socket);
      const closed = socket.onGraphqlClose;
      socket.onGraphqlMessage = null;
      socket.onGraphqlClose = null;
      socket.graphqlContext = null;
      closed?.(code, String(reason)).catch((err: unknown) => onInternalError(err, 'close handling'));
    },
  };
  // ws' own `autoPong` makes a closure per socket; answered here instead when it is off, with the
  // same cap on pongs waiting to be written (a client flooding pings is cut off).
  if ((wss.options as { autoPong?: boolean }).autoPong === false) {
    const cap = (wss.options as { maxPendingAutoPongs?: number }).maxPendingAutoPongs ?? MAX_PENDING_PONGS;
    events.ping = (socket, data) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      if (cap > 0 && socket.pendingPongs >= cap) return socket.terminate();
      socket.pendingPongs++;
      socket.pong(data, false, () => socket.pendingPongs--);
    };
  }
  // The sockets served, tracked here (ws' own tracking, `clientTracking`, adds a close listener
  // and its closure to every socket: create the server with it off).
  const clients = new Set<GraphqlWebSocket>();

  let initSweep: NodeJS.Timeout | null = null;
  const sweepInits = () => {
    const now = Date.now();
    for (const socket of awaitingInit) {
      if (socket.initDeadline > now) continue;
      awaitingInit.delete(socket);
      socket.close(CloseCode.ConnectionInitialisationTimeout, 'Connection initialisation timeout');
    }
    if (awaitingInit.size === 0 && initSweep) {
      clearInterval(initSweep);
      initSweep = null;
    }
  };

  let round = 0;
  let opened = 0;
  const keepAlive =
    keepAliveMs > 0
      ? setInterval(() => {
          round = (round + 1) % KEEP_ALIVE_ROUNDS;
          for (const socket of clients) {
            if (socket.pingRound !== round || socket.readyState !== WebSocket.OPEN) continue;
            if (socket.awaitingPong) {
              socket.terminate();
              continue;
            }
            socket.awaitingPong = true;
            socket.ping();
          }
        }, keepAliveMs / KEEP_ALIVE_ROUNDS)
      : null;
  keepAlive?.unref();

  const onServerError = (err: Error) => {
    onInternalError(err, 'WebSocket server');
    for (const client of clients) client.close(CloseCode.InternalServerError, reasonOf(err, isProd));
  };
  wss.once('error', onServerError);

  wss.on('connection', (socket: GraphqlWebSocket) => {
    socket.events = events;
    clients.add(socket);
    socket.pingRound = opened = (opened + 1) % KEEP_ALIVE_ROUNDS;
    if (connectionInitWaitMs > 0 && Number.isFinite(connectionInitWaitMs)) {
      socket.initDeadline = Date.now() + connectionInitWaitMs;
      awaitingInit.add(socket);
      initSweep ??= setInterval(sweepInits, INIT_SWEEP_MS);
      initSweep.unref();
    }
    socket.onGraphqlClose = server.opened(new SocketAdapter(socket), extra(socket) as Extra & Partial<E>);
  });

  let disposed: Promise<void> | null = null;
  return {
    /** Closes every socket with 1001 Going Away and the server (once; later calls wait for it). */
    dispose() {
      disposed ??= new Promise<void>((resolve, reject) => {
        if (keepAlive) clearInterval(keepAlive);
        if (initSweep) clearInterval(initSweep);
        for (const client of clients) client.close(1001, 'Going away');
        wss.removeAllListeners();
        wss.close((err) => (err ? reject(err) : resolve()));
      });
      return disposed;
    },
  };
}

/** graphql-ws' view of a socket: one small object per connection, no closures. */
class SocketAdapter {
  constructor(private readonly socket: GraphqlWebSocket) {}
  get protocol(): string {
    return this.socket.protocol;
  }
  send(data: string): Promise<void> {
    return sendText(this.socket, data);
  }
  close(code: number, reason: string): void {
    this.socket.close(code, reason);
  }
  onMessage(cb: (data: string) => Promise<void>): void {
    this.socket.onGraphqlMessage = cb;
  }
}

/** Writes a text message; resolves once written (at once when the socket is no longer open). */
function sendText(socket: WebSocket, data: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.readyState !== WebSocket.OPEN) return resolve();
    socket.send(data, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * An operation's stream that delivers its events itself (the direct path's socket sink,
 * shared-execution.ts) and reports only its end: the adapter gives it a listener instead of
 * iterating it, so an idle subscription waits on nothing (no pending `next()`, no promise).
 * graphql-ws still ends it with `return()` (a client's `complete`, the socket's close).
 */
export interface EndReporter extends AsyncGenerator<ExecutionResult, void, void> {
  /** Starts the stream; `listener.ended` is called once, with its end (done, a last result, or a rejection). */
  reportEnd(listener: EndListener): void;
}

/** Gets the end of an {@link EndReporter}. */
export interface EndListener {
  ended(end: MaybePromise<IteratorResult<ExecutionResult, void>>): void;
}

const isEndReporter = (v: unknown): v is EndReporter => typeof (v as EndReporter).reportEnd === 'function';
const isAsyncGenerator = (v: unknown): v is AsyncGenerator<unknown> =>
  isAsyncIterable(v) && typeof (v as AsyncGenerator<unknown>).return === 'function';
/** Calls `fn` now; its value or throw as a promise. */
const settle = <T>(fn: () => MaybePromise<T>): Promise<T> => {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
};
/** What graphql-ws makes of a throw while a stream runs (graphql 16). */
const streamError = (err: unknown) => {
  const originalError = err instanceof Error ? err : new Error(String(err));
  return new GraphQLError(originalError.message, { originalError });
};

/** One operation of a socket (a `subscribe` message): what its hooks and its end need. */
class Operation<P extends Record<string, unknown> | undefined, E> implements EndListener, SlotWaiter {
  args: ExecutionArgs | null = null;
  /** The stream, once the operation has one (then graphql-ws' `ctx.subscriptions[id]`; the operation itself until then). */
  stream: AsyncIterable<unknown> | null = null;
  /** Gives back the set-up slot (once). */
  #release: (() => void) | null = null;
  constructor(
    readonly runner: Operations<P, E>,
    readonly socket: GraphqlWebSocket,
    readonly ctx: Context<P, E>,
    readonly id: string,
    readonly payload: SubscribePayload,
  ) {}
  /**
   * Not completed by the client, the socket not closed: graphql-ws' `id in ctx.subscriptions`, by
   * identity, so an operation that waited for a slot while its id was completed and reused is not.
   */
  get live(): boolean {
    const current = (this.ctx.subscriptions as Record<string, unknown>)[this.id];
    return current !== undefined && (current === this || current === this.stream);
  }
  granted(release: () => void): void {
    this.#release = release;
    this.runner.start(this);
  }
  /** Gives back the set-up slot, if it holds one. */
  freeSlot(): void {
    const release = this.#release;
    this.#release = null;
    release?.();
  }
  ended(end: MaybePromise<IteratorResult<ExecutionResult, void>>): void {
    this.runner.ended(this, end);
  }
}

/**
 * Runs the operations of graphql-ws' `subscribe` messages as graphql-ws' handler does (its hooks,
 * messages, close codes and `ctx.subscriptions` bookkeeping, so its `complete` and close handling
 * still end them), with two differences in what a subscription holds while it waits: no async
 * function suspended for its whole life (graphql-ws' handler keeps its frame, the message and an
 * object of three closures per subscription until the stream ends), and for an {@link EndReporter}
 * no iteration at all. Served when `onSubscribe` is given (graphql-ws' handler otherwise).
 */
class Operations<P extends Record<string, unknown> | undefined, E> {
  constructor(
    private readonly options: ServerOptions<P, E>,
    private readonly setups: Pick<Slots, 'acquireFor'> | null,
    private readonly failed: (socket: GraphqlWebSocket, err: unknown) => void,
  ) {}

  subscribe(socket: GraphqlWebSocket, ctx: Context<P, E>, message: SubscribeMessage): void {
    if (!ctx.acknowledged) return socket.close(CloseCode.Unauthorized, 'Unauthorized');
    const { id, payload } = message;
    if (id in ctx.subscriptions) return socket.close(CloseCode.SubscriberAlreadyExists, `Subscriber for ${id} already exists`);
    const op = new Operation(this, socket, ctx, id, payload);
    // The operation stands for itself until it has a stream: graphql-ws' complete and close
    // handling skip what is not an async generator, as they skip its null.
    (ctx.subscriptions as Record<string, unknown>)[id] = op;
    if (this.setups) this.setups.acquireFor(op);
    else this.start(op);
  }

  /** Sets the operation up (in its slot, if any) and runs it. */
  start(op: Operation<P, E>): void {
    // Completed by the client, or its socket closed, while it waited.
    if (!op.live) return op.freeSlot();
    let handedOver = false;
    settle(() => (this.options.onSubscribe as NonNullable<ServerOptions<P, E>['onSubscribe']>)(op.ctx, op.id, op.payload))
      .then((prepared) => this.#prepared(op, prepared))
      .then((outcome) => void (handedOver = outcome === HANDED_OVER))
      .catch((err: unknown) => this.failed(op.socket, err))
      .finally(() => {
        op.freeSlot();
        if (!handedOver) this.#forget(op);
      });
  }

  #prepared(op: Operation<P, E>, prepared: ExecutionArgs | readonly GraphQLError[] | void): Promise<unknown> | undefined {
    if (!prepared) return this.#parsed(op);
    if (areGraphQLErrors(prepared)) return op.live ? this.#error(op, prepared) : undefined;
    if (Array.isArray(prepared)) throw new Error('Invalid return value from onSubscribe hook, expected an array of GraphQLError objects');
    return this.#execute(op, prepared as ExecutionArgs);
  }

  /** No arguments from `onSubscribe`: graphql-ws' own parse and validation against `schema`. */
  #parsed(op: Operation<P, E>): Promise<unknown> | undefined {
    const { schema, parse = graphqlParse, validate = graphqlValidate } = this.options;
    if (!schema) throw new Error('The GraphQL schema is not provided');
    const { ctx, id, payload } = op;
    const partial = { operationName: payload.operationName, document: parse(payload.query), variableValues: payload.variables };
    return settle(() => (typeof schema === 'function' ? schema(ctx, id, payload, partial) : schema)).then((resolved) => {
      const args: ExecutionArgs = { ...partial, schema: resolved };
      const errors = validate(args.schema, args.document);
      if (errors.length > 0) return op.live ? this.#error(op, errors) : undefined;
      return this.#execute(op, args);
    });
  }

  #execute(op: Operation<P, E>, args: ExecutionArgs): Promise<unknown> | undefined {
    const { options } = this;
    const { ctx, id, payload } = op;
    op.args = args;
    const ast = getOperationAST(args.document, args.operationName);
    if (!ast) return op.live ? this.#error(op, [new GraphQLError('Unable to identify operation')]) : undefined;
    if (!('rootValue' in args)) args.rootValue = options.roots?.[ast.operation];
    const context = options.context;
    const contextReady =
      'contextValue' in args
        ? Promise.resolve()
        : settle(() => (typeof context === 'function' ? context(ctx, id, payload, args) : context)).then((value) => {
            args.contextValue = value;
          });
    return contextReady
      .then((): OperationResult =>
        ast.operation === 'subscription' ? (options.subscribe ?? graphqlSubscribe)(args) : (options.execute ?? graphqlExecute)(args),
      )
      .then((result) => settle(() => options.onOperation?.(ctx, id, payload, args, result)).then((replaced) => replaced || result))
      .then((result) => this.#run(op, result));
  }

  #run(op: Operation<P, E>, result: unknown): Promise<unknown> | typeof HANDED_OVER | undefined {
    // Set up: the next operation may start while this one runs.
    op.freeSlot();
    if (!isAsyncIterable(result)) {
      return (op.live ? this.#next(op, result as ExecutionResult) : Promise.resolve()).then(() => this.#complete(op, op.live));
    }
    if (!op.live) {
      if (isAsyncGenerator(result)) void result.return(undefined);
      return undefined;
    }
    (op.ctx.subscriptions as Record<string, unknown>)[op.id] = result;
    op.stream = result;
    if (isEndReporter(result)) {
      result.reportEnd(op);
      return HANDED_OVER;
    }
    return this.#iterate(op, result[Symbol.asyncIterator]()).then(() => this.#complete(op, op.live));
  }

  /** graphql-ws' `for await` over a stream, as promise callbacks: nothing suspended between events. */
  #iterate(op: Operation<P, E>, it: AsyncIterator<unknown>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const failed = (err: unknown) =>
        this.#error(op, [streamError(err)]).then(() => {
          this.#forget(op);
          resolve();
        }, reject);
      const step = (): void => {
        settle(() => it.next())
          .then((r) => (r.done ? resolve() : this.#next(op, r.value as ExecutionResult).then(step)))
          .catch(failed);
      };
      step();
    });
  }

  /** The end an {@link EndReporter} reported: its last result if any, then `complete`. */
  ended(op: Operation<P, E>, end: MaybePromise<IteratorResult<ExecutionResult, void>>): void {
    Promise.resolve(end)
      .then(
        (r) => (r.done || !op.live ? undefined : this.#next(op, r.value)),
        (err: unknown) => this.#error(op, [streamError(err)]).then(() => this.#forget(op)),
      )
      .then(() => this.#complete(op, op.live))
      .catch((err: unknown) => this.failed(op.socket, err))
      .finally(() => this.#forget(op));
  }

  #next(op: Operation<P, E>, result: ExecutionResult): Promise<void> {
    const { ctx, id, payload } = op;
    return settle(() => this.options.onNext?.(ctx, id, payload, op.args as ExecutionArgs, result)).then((replaced) => {
      const { errors, ...rest } = result;
      const message = {
        id,
        type: MessageType.Next,
        payload: replaced || { ...rest, ...(errors ? { errors: errors.map((e) => e.toJSON()) } : {}) },
      } as const;
      return sendText(op.socket, stringifyMessage(message, this.options.jsonMessageReplacer));
    });
  }

  #error(op: Operation<P, E>, errors: readonly GraphQLError[]): Promise<void> {
    const { ctx, id, payload } = op;
    return settle(() => this.options.onError?.(ctx, id, payload, errors)).then((replaced) =>
      sendText(
        op.socket,
        stringifyMessage({ id, type: MessageType.Error, payload: replaced || errors.map((e) => e.toJSON()) }, this.options.jsonMessageReplacer),
      ),
    );
  }

  #complete(op: Operation<P, E>, notifyClient: boolean): Promise<void> {
    const { ctx, id, payload } = op;
    return settle(() => this.options.onComplete?.(ctx, id, payload)).then(() =>
      notifyClient ? sendText(op.socket, stringifyMessage({ id, type: MessageType.Complete }, this.options.jsonMessageReplacer)) : undefined,
    );
  }

  /** The operation is over: its id is free again (unless a newer operation took it). */
  #forget(op: Operation<P, E>): void {
    if (op.live) delete (op.ctx.subscriptions as Record<string, unknown>)[op.id];
  }
}

/** An operation whose end its stream reports ({@link EndReporter}): the set-up leaves it live. */
const HANDED_OVER = Symbol('handedOver');
