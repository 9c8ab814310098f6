import { readdirSync, readFileSync } from 'node:fs';
import { createServer, ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { GraphQLError, getOperationAST, type ExecutionArgs, type ExecutionResult, type ValidationContext } from 'graphql';
import type { Context as WsContext, SubscribePayload } from 'graphql-ws';
import { createSchema, createYoga, maskError as yogaMaskError, type Plugin } from 'graphql-yoga';
import { WebSocketServer } from 'ws';
import { baseResolvers } from './base.resolvers.js';
import type { Config } from './config.js';
import { createContextFactory, type AppContext } from './context.js';
import { AppError, ERROR_CODES, isRedisUnavailableError, unavailable, type ErrorCode } from './errors.js';
import { eventsResolvers } from './events/events.resolvers.js';
import type { Resolvers } from './generated/resolvers-types.js';
import { createAuthenticator, useAuth } from './infra/auth.js';
import { systemClock, type Clock } from './infra/clock.js';
import { startRedisServer, type EmbeddedRedis } from './infra/embedded-redis.js';
import { createLogger, type Logger } from './infra/logger.js';
import { redisTrace, traced, waitReady } from './infra/redis.js';
import { DIRECT_STREAM, directStreamOf, useSharedExecution, type SharedExecutionStats } from './infra/shared-execution.js';
import {
  createPersistedOperations,
  loadManifests,
  SDK_MANIFEST_PATH,
  usePersistedOperations,
  type PersistedOperations,
} from './infra/persisted-operations.js';
import { createDemoHandler } from './demo/demo.handler.js';
import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { rateLimitHeaders, useRateLimits } from './ratelimit/use-rate-limits.js';
import { createFastLane } from './infra/fast-lane.js';
import { Slots } from './infra/slots.js';
import { useJitExecution } from './infra/jit-execution.js';
import { CloseCode, createWsMessageLimits } from './infra/ws-limits.js';
import { GraphqlWebSocket, useGraphqlWs, type Extra as WsSocketExtra } from './infra/ws-server.js';
import { messagesResolvers } from './messages/messages.resolvers.js';
import { roomsResolvers } from './rooms/rooms.resolvers.js';
import { wireServices, type Services } from './services.js';

export { LUA_DIRS } from './services.js';
import { usersResolvers } from './users/users.resolvers.js';
import { presenceResolvers } from './presence/presence.resolvers.js';
import { typingResolvers } from './typing/typing.resolvers.js';
import { receiptsResolvers } from './receipts/receipts.resolvers.js';
import { pollsResolvers } from './polls/polls.resolvers.js';
import { callsResolvers } from './calls/calls.resolvers.js';
import { createLiveKitWebhookHandler, LIVEKIT_WEBHOOK_PATH } from './calls/calls.webhook.js';
import { searchResolvers } from './search/search.resolvers.js';
import { pushResolvers } from './push/push.resolvers.js';
import type { Viewer } from './users/users.models.js';

/** A running (or startable) Switchboard instance. */
export interface App {
  /** Listens on `config.host:config.port`; resolves with the bound port. */
  start(): Promise<{ port: number; url: string }>;
  /** Graceful shutdown (contract § Transport and process). Idempotent. */
  stop(): Promise<void>;
  /** For tests and tooling. */
  readonly services: Services;
  readonly logger: Logger;
  readonly redisUrl: string;
  /** How many subscription events were executed, and how many results were shared. */
  readonly executionStats: SharedExecutionStats;
  /** HTTP requests run by the fast lane (the rest went through yoga's HTTP layer). */
  fastLaneRequests(): number;
  /** WebSocket operation set-ups: holding a slot now, waiting for one, and the most ever held at once. */
  wsSetups(): { inUse: number; waiting: number; peak: number };
}

/** Options beyond the config, for tests. */
export interface BuildOptions {
  clock?: Clock;
  logger?: Logger;
}

const SCHEMA_DIR = new URL('../schema/', import.meta.url);

/** Reads every SDL file of `schema/`, one per domain. */
export function loadTypeDefs(): string[] {
  const dir = fileURLToPath(SCHEMA_DIR);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.graphql'))
    .sort()
    .map((f) => readFileSync(new URL(f, SCHEMA_DIR), 'utf8'));
}

/** Every domain's resolvers, merged. */
export function allResolvers(): Resolvers[] {
  return [
    baseResolvers,
    usersResolvers,
    roomsResolvers,
    messagesResolvers,
    eventsResolvers,
    presenceResolvers,
    typingResolvers,
    receiptsResolvers,
    pollsResolvers,
    callsResolvers,
    searchResolvers,
    pushResolvers,
  ];
}

/** Codes kept as they are: the contract's, and the one yoga gives masked internal errors. */
const KEPT_CODES = new Set<string>([...ERROR_CODES, 'INTERNAL_SERVER_ERROR']);

/**
 * Gives `BAD_USER_INPUT` to request errors that carry no code or one of yoga's own
 * (`GRAPHQL_PARSE_FAILED`, `GRAPHQL_VALIDATION_FAILED`, `BAD_REQUEST`…): clients branch on the
 * contract's codes only.
 */
export function withCode(error: GraphQLError): GraphQLError {
  const code = error.extensions?.code;
  if (typeof code === 'string' && KEPT_CODES.has(code)) return error;
  return new GraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    originalError: error.originalError,
    extensions: { ...error.extensions, code: 'BAD_USER_INPUT' },
  });
}

/** graphql-armor options that report a refusal as a validation error instead of throwing it. */
const REPORT = {
  propagateOnRejection: false,
  onReject: [(ctx: ValidationContext | null, err: GraphQLError) => ctx?.reportError(err)],
};

/**
 * Bytes a WebSocket may hold unsent (in Node, past what the kernel took) before its subscriptions'
 * events stop going out directly and queue instead: the queue is bounded, and what overflows it is
 * caught up from storage once the client reads again (README § Delivery).
 */
const WS_HIGH_WATER_BYTES = 1 << 20;

/** Operation texts by text, so open subscriptions share one copy of each (bounded: 1,000 of 10 k characters at most). */
const queryTexts = new Map<string, string>();
function internQuery(text: string): string {
  if (text.length > 10_000) return text;
  const known = queryTexts.get(text);
  if (known !== undefined) return known;
  if (queryTexts.size >= 1000) queryTexts.clear();
  queryTexts.set(text, text);
  return text;
}

/**
 * The longest a WebSocket operation's set-up holds its slot (infra/slots.ts' `maxHoldMs`). Set-ups
 * end well before (their Redis waits are bounded).
 */
const SETUP_HOLD_MAX_MS = 10_000;

/** A WebSocket operation refused by a connection limit. */
const rateLimitedWs = (message: string) => new AppError('RATE_LIMITED', message, { retryAfter: 10 });

/** Maps Redis outages to `UNAVAILABLE` and masks everything else yoga would mask. */
export function maskError(error: unknown, message: string, isDev?: boolean): Error {
  const original = error instanceof GraphQLError ? (error.originalError ?? error) : error;
  // By code as well as by class: a second copy of graphql (bundlers, test runners) breaks instanceof.
  const code = (original as { extensions?: { code?: unknown } } | null)?.extensions?.code;
  if (original instanceof AppError || ERROR_CODES.includes(code as ErrorCode)) return error as Error;
  if (isRedisUnavailableError(original)) {
    const u = unavailable();
    return error instanceof GraphQLError
      ? new GraphQLError(u.message, { nodes: error.nodes, path: error.path, extensions: u.extensions })
      : u;
  }
  return yogaMaskError(error, message, isDev);
}

/** The result with a code on every error. */
function withCodes(result: ExecutionResult): ExecutionResult {
  return result.errors ? { ...result, errors: result.errors.map(withCode) } : result;
}

/** Gives every error a code: the contract's clients branch on `extensions.code`. */
function useErrorCodes(): Plugin {
  return {
    onResultProcess({ result, setResult }) {
      if (Array.isArray(result) || !('errors' in result) || !result.errors) return;
      setResult(withCodes(result as ExecutionResult));
    },
  };
}

/** The request header that asks for an operation's Redis round trips (outside production). */
export const DEBUG_REDIS_HEADER = 'x-debug-redis';

/**
 * Outside production, an operation requested with `X-Debug-Redis: 1` runs inside a Redis trace
 * (AsyncLocalStorage): its result carries `extensions.redis = { roundTrips, commands, cache,
 * unawaited }`, every command sent on its behalf counted, a pipeline as one round trip; what it
 * sends without waiting (the write of the viewer's user) is counted apart. Other operations never
 * enter a trace: they cost one `getStore()` per command, and the async hooks behind the trace are
 * off while no traced operation runs. In production this plugin is absent.
 */
function useRedisDebug(): Plugin {
  return {
    instrumentation: {
      operation: ({ request }, wrapped) =>
        request.headers.get(DEBUG_REDIS_HEADER) === '1' ? traced(wrapped) : wrapped(),
    },
    onExecutionResult({ result, setResult }) {
      const trace = redisTrace.getStore();
      if (!trace || !result || Symbol.asyncIterator in result) return;
      const { roundTrips, commands, cache, unawaited } = trace;
      const redis = {
        roundTrips,
        commands,
        cache: { ...cache },
        unawaited: { roundTrips: unawaited.roundTrips, commands: unawaited.commands },
      };
      setResult({ ...result, extensions: { ...result.extensions, redis } });
    },
  };
}

/** The trusted-documents rule of `config`: manifests are read (and checked) only when a mode uses them. */
function persistedOperationsOf(config: Config): PersistedOperations {
  const { mode, manifests } = config.persistedOperations;
  if (mode === 'off') return createPersistedOperations(mode, new Map());
  try {
    return createPersistedOperations(mode, loadManifests(manifests.length > 0 ? manifests : [SDK_MANIFEST_PATH]));
  } catch (err) {
    throw new Error(`PERSISTED_OPERATIONS_MANIFEST: ${(err as Error).message}`);
  }
}

/**
 * Builds an instance: Redis (or an embedded redis-server), services, yoga over HTTP/SSE, and
 * graphql-ws on the same port and path. Nothing listens until `start()`.
 */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<App> {
  const logger = options.logger ?? createLogger(config.logLevel, config.instanceId);
  const clock = options.clock ?? systemClock;
  // Read first: a manifest that cannot be trusted stops the start before anything is opened.
  const persisted = persistedOperationsOf(config);
  // Development only: the demo page signs anyone in by name (config.demo is false in production).
  const demo = config.demo ? createDemoHandler({ jwtSecret: config.jwtSecret, manifestPath: SDK_MANIFEST_PATH }) : null;

  let embedded: EmbeddedRedis | null = null;
  let redisUrl = config.redisUrl;
  if (!redisUrl) {
    embedded = await startRedisServer({ dir: config.embeddedRedisDir, logger });
    redisUrl = embedded.url;
  }
  const { redis, services } = wireServices(config, { redisUrl, logger, clock });
  const auth = createAuthenticator({ secret: config.jwtSecret, jwksUrl: config.jwtJwksUrl });
  const contextFactory = createContextFactory(services, auth);
  const executionStats: SharedExecutionStats = { executions: 0, shared: 0, direct: 0 };
  // Errors outside yoga's own handling (the direct WebSocket path, the HTTP fast lane), masked as
  // yoga masks, and logged as yoga logs what it masks.
  const maskUnexpected = (error: unknown) => {
    const masked = maskError(error, 'Unexpected error.', !config.isProduction);
    if (masked !== error) logger.error({ err: error }, 'unexpected error (masked)');
    return masked;
  };

  const yoga = createYoga<Record<string, unknown>, AppContext>({
    schema: createSchema<AppContext>({
      typeDefs: loadTypeDefs(),
      resolvers: allResolvers() as never,
    }) as never,
    context: contextFactory as never,
    graphqlEndpoint: '/graphql',
    // Subscriptions over SSE: GraphiQL sends the Headers tab (Authorization) with HTTP requests, but
    // not in a WebSocket's connection_init, where this server needs the token.
    graphiql: config.graphiql ? { subscriptionsProtocol: 'SSE', title: 'Switchboard' } : false,
    // GraphiQL's bundle is ~30 MB of strings in memory: loaded only where GraphiQL is served.
    renderGraphiQL: config.graphiql ? (await import('@graphql-yoga/render-graphiql')).renderGraphiQL : undefined,
    landingPage: false,
    healthCheckEndpoint: '/health',
    // handle() caps bodies before yoga sees them (413; a POST needs a Content-Length, which Node's
    // parser holds the body to), so yoga's own cap, a TransformStream per request, is not needed.
    maxRequestBodySize: false,
    maskedErrors: { maskError, isDev: !config.isProduction },
    logging: {
      debug: (...a: unknown[]) => logger.debug({ yoga: a }, 'yoga'),
      info: (...a: unknown[]) => logger.info({ yoga: a }, 'yoga'),
      warn: (...a: unknown[]) => logger.warn({ yoga: a }, 'yoga'),
      error: (...a: unknown[]) => logger.error({ yoga: a }, 'yoga'),
    },
    plugins: [
      usePersistedOperations(persisted),
      EnvelopArmorPlugin({
        // Reported as validation errors (HTTP 400, an error message over WebSocket), not thrown
        // out of validation (HTTP 200, or a socket closed with 4500).
        maxDepth: { n: config.armor.maxDepth, ...REPORT },
        maxAliases: { n: config.armor.maxAliases, ...REPORT },
        maxDirectives: { n: config.armor.maxDirectives, ...REPORT },
        maxTokens: { n: config.armor.maxTokens },
        costLimit: { maxCost: config.armor.maxCost, ...REPORT },
        // Field suggestions stay on outside production: they help while writing queries.
        blockFieldSuggestion: { enabled: config.isProduction },
      }) as Plugin,
      useAuth() as Plugin,
      ...(config.rateLimits.off
        ? []
        : [
            useRateLimits({
              service: services.rateLimits,
              overrides: config.rateLimits.limits,
              trustProxy: config.trustProxy,
            }),
          ]),
      useErrorCodes(),
      ...(config.isProduction ? [] : [useRedisDebug()]),
      useJitExecution(),
      useSharedExecution({
        viewerIdOf: (ctx) => (ctx as AppContext).viewer?.id ?? '',
        stats: executionStats,
        maskError: maskUnexpected,
        highWaterBytes: WS_HIGH_WATER_BYTES,
      }),
    ],
  });

  const fastLane = createFastLane({
    getEnveloped: (initial) => yoga.getEnveloped(initial) as never,
    resolveQuery(params) {
      const resolved = persisted.resolve(params);
      return resolved.error || typeof resolved.query !== 'string' ? null : resolved.query;
    },
    processResult: withCodes,
    maskError: maskUnexpected,
    responseHeaders: rateLimitHeaders,
    yogaHeaders: ['origin', DEBUG_REDIS_HEADER],
    onError: (err) => logger.error({ err }, 'fast lane request failed'),
  });

  let stopping = false;
  const livekitWebhook = createLiveKitWebhookHandler({ calls: services.calls, logger, maxBodyBytes: config.maxBodyBytes });

  async function isRedisUp(): Promise<boolean> {
    try {
      return (await redis.command.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  async function trackSseConnection(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const viewer = await auth.fromHeader(req.headers.authorization).catch(() => null);
    if (!viewer || res.writableEnded) return;
    const connection = services.presence.connect(viewer).catch(() => null);
    res.once('close', () => {
      void connection.then((c) => (c ? services.presence.disconnect(c.id) : undefined)).catch(() => undefined);
    });
  }

  function handle(req: IncomingMessage, res: ServerResponse) {
    // While stopping, no keep-alive: each connection closes after its response, so shutdown does
    // not wait for clients (or a proxy's pool) to drop idle connections.
    if (stopping) res.setHeader('connection', 'close');
    const path = (req.url ?? '/').split('?')[0];
    if (demo && (path === '/demo' || path?.startsWith('/demo/'))) return demo(req, res);
    if (path === '/ready') {
      void isRedisUp().then((up) => {
        const ok = up && !stopping;
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ready: ok, redis: up ? 'up' : 'down', stopping }));
      });
      return;
    }
    const refuse = (status: number, message: string) => {
      res.writeHead(status, { 'content-type': 'application/json', ...(status === 413 ? { connection: 'close' } : {}) });
      res.end(JSON.stringify({ errors: [{ message, extensions: { code: 'BAD_USER_INPUT' } }] }));
      req.resume();
    };
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > config.maxBodyBytes) return refuse(413, `Request body over ${config.maxBodyBytes} bytes`);
    // A streamed body (no Content-Length) could not be capped before it is read: ask for a length.
    if (req.method === 'POST' && req.headers['content-length'] === undefined) {
      return refuse(411, 'POST bodies need a Content-Length');
    }
    if (path === LIVEKIT_WEBHOOK_PATH) return void livekitWebhook(req, res);
    if (req.method === 'GET' && req.url?.includes('?')) {
      // yoga answers 500 to malformed JSON in GET parameters (LIBRARIES.md): answer 400 first.
      const params = new URLSearchParams(req.url.slice(req.url.indexOf('?') + 1));
      for (const name of ['variables', 'extensions']) {
        const value = params.get(name);
        if (value === null || value === '') continue;
        try {
          JSON.parse(value);
        } catch {
          return refuse(400, `The ${name} parameter is not valid JSON`);
        }
      }
    }
    // An SSE request is a connection for presence while it stays open.
    if (req.headers.accept?.includes('text/event-stream') && req.headers.authorization) {
      void trackSseConnection(req, res);
    }
    if (req.method === 'POST' && req.headers['content-type']?.includes('application/json')) {
      readJsonBody(req, res, path === '/graphql', refuse);
      return;
    }
    void yoga.handle(req, res);
  }

  /**
   * Reads a JSON POST body and hands yoga the parsed object (whatwg-node's `request.body` path):
   * yoga then skips wrapping the socket in a web ReadableStream and piping it, which cost about a
   * fifth of a small request's CPU. The length is already capped and known (Content-Length).
   */
  function readJsonBody(
    req: IncomingMessage,
    res: ServerResponse,
    graphqlPath: boolean,
    refuse: (status: number, message: string) => void,
  ) {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('error', () => res.destroy());
    req.once('end', () => {
      let body: unknown;
      try {
        body = JSON.parse((chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)).toString('utf8'));
      } catch {
        return refuse(400, 'The request body is not valid JSON');
      }
      // whatwg-node takes a non-empty object as the parsed body; anything else is no GraphQL request.
      if (typeof body !== 'object' || body === null || Object.keys(body).length === 0) {
        return refuse(400, 'The request body must be a JSON object with a query');
      }
      // The common request skips yoga's HTTP layer (fast-lane.ts); anything else is yoga's.
      if (graphqlPath && fastLane.tryHandle(req, res, body as Record<string, unknown>)) return;
      (req as IncomingMessage & { body?: unknown }).body = body;
      void yoga.handle(req, res);
    });
  }

  // Redis writes of a turn go out together (coalesceWrites); an answer goes out only after them, so
  // what a request wrote without waiting (the user's touch, a PUBLISH) is in Redis before the client
  // can act on the answer.
  class FlushingResponse extends ServerResponse {}
  const writeHead = ServerResponse.prototype.writeHead;
  FlushingResponse.prototype.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    redis.flushCommands();
    return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
  } as ServerResponse['writeHead'];
  const httpServer: Server = createServer({ ServerResponse: FlushingResponse }, handle);
  // The adapter tracks its sockets and answers pings itself: ws would add a listener and a closure
  // to every socket for each (infra/ws-server.ts).
  const wss = new WebSocketServer({
    server: httpServer,
    path: '/graphql',
    maxPayload: config.maxBodyBytes,
    WebSocket: GraphqlWebSocket,
    clientTracking: false,
    autoPong: false,
  });
  const wsMessages = createWsMessageLimits({ maxMessagesPer10s: config.wsMaxMessagesPer10s });
  /** `connection`: the socket's presence connection id, a promise of it until registered. */
  type WsExtra = { viewer?: Viewer; connection?: Promise<string | null> | string | null };
  // Operations being set up at once (infra/slots.ts): the adapter gives each a slot before
  // onSubscribe and takes it back once its result (a subscription's stream) is there.
  const setups = new Slots(config.wsSetupConcurrency, SETUP_HOLD_MAX_MS);
  /** The root value graphql-ws hands to `execute`/`subscribe`: envelop's functions. */
  type WsRoot = { execute(a: ExecutionArgs): unknown; subscribe(a: ExecutionArgs): unknown };
  /**
   * A WebSocket operation's execution arguments (trusted documents, parse, validation, context), or
   * the errors that answer it; the adapter (ws-server.ts) runs the arguments with `execute` or `subscribe` below.
   */
  async function prepareWsOperation(
    ctx: WsContext<Record<string, unknown> | undefined, WsSocketExtra & Partial<WsExtra>>,
    id: string,
    payload: SubscribePayload,
  ): Promise<ExecutionArgs | readonly GraphQLError[]> {
    // Trusted documents, as over HTTP: a hash runs the manifest's text; refusals answer this operation.
    const resolved = persisted.resolve(payload);
    if (resolved.error) return [resolved.error];
    // One copy of each operation's text for all the subscriptions that send it, in the payload
    // (graphql-ws keeps it for the subscription's life), which is also yoga's `params`; a trusted
    // document's hash is resolved to its text.
    const query = internQuery(resolved.query ?? '');
    (payload as { query: string }).query = query;
    // A literal, not `{ ...ctx, … }` as yoga's graphql-ws recipe has it: V8 gave each spread
    // copy its own hidden class (a map and a ~380-byte descriptor array per subscription, held
    // for its life); nothing downstream reads graphql-ws' own fields from the context. It is made
    // with the fields set later (the context factory's, the direct path's), so it holds them all
    // in the object rather than in a property store grown when they are added.
    const { schema, execute, subscribe, contextFactory: envelopedContext, parse, validate } = yoga.getEnveloped({
      socket: ctx.extra.socket,
      params: payload,
      wsViewer: ctx.extra.viewer ?? null,
      // With the socket, lets a subscription write its events straight to it (shared-execution.ts).
      wsSubscriptionId: id,
      viewer: null,
      authError: null,
      services: undefined,
      loaders: undefined,
      eventSink: undefined,
      [DIRECT_STREAM]: undefined,
    });
    let document;
    try {
      document = parse(query);
    } catch (err) {
      // Answer this operation with the error instead of letting graphql-ws close the socket (4500).
      return [withCode(err instanceof GraphQLError ? err : new GraphQLError(String(err)))];
    }
    let errors: readonly GraphQLError[];
    try {
      errors = validate(schema, document);
    } catch (err) {
      errors = [err instanceof GraphQLError ? err : new GraphQLError(String(err))];
    }
    if (errors.length > 0) return errors.map(withCode);
    // The adapter would answer this itself, but without the contract's error code.
    if (!getOperationAST(document, payload.operationName)) return [withCode(new GraphQLError('Unable to identify operation'))];
    return {
      schema,
      document,
      operationName: payload.operationName,
      variableValues: payload.variables,
      contextValue: await envelopedContext(),
      rootValue: { execute, subscribe } satisfies WsRoot,
    };
  }

  const wsServer = useGraphqlWs<Record<string, unknown> | undefined, WsExtra>(
    {
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const header = params.authorization ?? params.Authorization;
        try {
          const viewer = await auth.fromHeader(typeof header === 'string' ? header : null);
          if (!viewer) return false;
          ctx.extra.viewer = viewer;
        } catch {
          return false;
        }
        // The token is not needed once the socket is authenticated: let it go rather than hold it
        // for the connection's life.
        (ctx as { connectionParams?: unknown }).connectionParams = undefined;
        // The socket is a presence connection until it closes; registering it also writes the user
        // (a user exists from their first authenticated request). An outage refuses no socket.
        const registered = services.presence.connect(ctx.extra.viewer).catch(() => null);
        // The id itself once known: the socket holds a string for its life, not a settled promise.
        const extra = ctx.extra;
        extra.connection = registered.then((r) => (extra.connection = r?.id ?? null));
        const connections = (await registered)?.connections ?? 0;
        if (connections > config.wsMaxConnectionsPerUser) {
          ctx.extra.socket.close(CloseCode.TooManyRequests, 'Too many connections for this user');
          return false;
        }
        return true;
      },
      // Called in the operation's set-up slot (the adapter's `setups`): after a deploy thousands of
      // subscribes wait for one at once, each as an entry in the slots' queue.
      onSubscribe: (ctx, id, payload: SubscribePayload) => {
        if (wsMessages.isOver(ctx.extra.socket)) {
          return [rateLimitedWs('Too many messages on this connection: slow down or it will be closed (4429)')];
        }
        // graphql-ws has already entered this one in ctx.subscriptions.
        if (Object.keys(ctx.subscriptions).length > config.wsMaxSubscriptions) {
          return [rateLimitedWs(`At most ${config.wsMaxSubscriptions} subscriptions per connection`)];
        }
        return prepareWsOperation(ctx, id, payload);
      },
      execute: (args) => (args.rootValue as WsRoot).execute(args) as never,
      subscribe: (args) => (args.rootValue as WsRoot).subscribe(args) as never,
      // A subscription with a direct sink runs its own stream, which masks as yoga would, rather
      // than yoga's wrappers of it (shared-execution.ts, directStreamOf).
      onOperation: (_ctx, _id, _payload, args) => directStreamOf(args.contextValue),
      onClose: (ctx) => {
        const connection = ctx.extra.connection;
        if (typeof connection === 'string') services.presence.disconnect(connection).catch(() => undefined);
        else
          void connection
            ?.then((id) => (id ? services.presence.disconnect(id) : undefined))
            .catch(() => undefined);
      },
      // As over HTTP: Redis writes of this turn before the result (a mutation's PUBLISH).
      onNext: () => {
        redis.flushCommands();
      },
      onError: (_ctx, _id, _payload, errors) => {
        logger.debug({ errors: errors.map((e) => e.message) }, 'websocket operation error');
      },
    },
    wss,
    {
      isProd: config.isProduction,
      beforeMessage: (socket) => wsMessages.count(socket),
      setups,
      extra: (socket) => ({ socket, viewer: undefined, connection: undefined }),
      onInternalError: (err, what) => logger.error({ err }, `WebSocket ${what} failed`),
    },
  );

  let started: Promise<void> | null = null;
  let stopped: Promise<void> | null = null;

  return {
    services,
    logger,
    redisUrl,
    executionStats,
    fastLaneRequests: () => fastLane.handled,
    wsSetups: () => ({ inUse: setups.inUse, waiting: setups.waiting, peak: setups.peak }),
    async start() {
      started ??= (async () => {
        await waitReady(redis.command, 10_000).catch((err: Error) =>
          logger.warn({ err: err.message }, 'starting while Redis is unreachable: /ready answers 503'),
        );
        await services.presence.start();
        services.typing.start();
        services.polls.start();
        services.calls.start();
        await services.push.start();
        await new Promise<void>((resolve, reject) => {
          httpServer.once('error', reject);
          httpServer.listen(config.port, config.host, () => resolve());
        });
      })();
      await started;
      const { port } = httpServer.address() as AddressInfo;
      const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
      logger.info(
        {
          port,
          redis: embedded ? 'embedded' : 'external',
          persistedOperations: persisted.mode,
          trustedDocuments: persisted.size,
          demo: demo !== null,
        },
        `Switchboard listening on http://${host}:${port}/graphql`,
      );
      return { port, url: `http://${host}:${port}/graphql` };
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        logger.info('shutting down');
        // Stop accepting, then end subscriptions so SSE responses finish and sockets can close.
        const closed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
        // Push workers drain meanwhile: no new job is taken, those in flight get a few seconds.
        const pushStopped = services.push.stop().catch((err: Error) => logger.warn({ err: err.message }, 'push shutdown failed'));
        services.events.closeAll();
        await wsServer.dispose(); // closes every socket with 1001 Going Away
        services.typing.stop();
        services.receipts.stop();
        services.polls.stop();
        services.calls.stop();
        // This instance's connections go at once (their users get the grace period elsewhere).
        await services.presence.stop().catch((err: Error) => logger.warn({ err: err.message }, 'presence cleanup failed'));
        const timer = setTimeout(() => httpServer.closeAllConnections(), config.shutdownTimeoutMs);
        httpServer.closeIdleConnections();
        if (httpServer.listening || started) await closed;
        clearTimeout(timer);
        await yoga.dispose();
        await pushStopped;
        await redis.close();
        await embedded?.stop();
        logger.info('stopped');
      })();
      return stopped;
    },
  };
}
