import type { IncomingMessage, ServerResponse } from 'node:http';
import { getOperationAST, type DocumentNode, type ExecutionArgs, type ExecutionResult, type GraphQLSchema } from 'graphql';
import { isAsyncIterable, processRegularResult } from 'graphql-yoga';

/** The envelop functions of one request, as `yoga.getEnveloped(initialContext)` returns them. */
interface Enveloped {
  schema: GraphQLSchema;
  parse(source: string): DocumentNode;
  validate(schema: GraphQLSchema, document: DocumentNode): readonly unknown[];
  contextFactory(): unknown;
  execute(args: ExecutionArgs): unknown;
}

/** GraphQL-over-HTTP parameters of a JSON body. */
export interface FastLaneParams {
  query: string;
  variables?: Record<string, unknown> | null;
  operationName?: string | null;
  extensions?: Record<string, unknown> | null;
}

/** Dependencies of {@link createFastLane}. */
export interface FastLaneDeps {
  /** yoga.getEnveloped: every envelop plugin (auth, limits, armor, masking, caches) applies. */
  getEnveloped(initialContext: Record<string, unknown>): Enveloped;
  /** Trusted documents: the text to run, or null to leave the request to yoga (which refuses it). */
  resolveQuery(params: FastLaneParams): string | null;
  /** The result as yoga's result hooks would leave it (error codes). */
  processResult(result: ExecutionResult): ExecutionResult;
  /** An error thrown outside execution, masked as yoga would. */
  maskError(error: unknown): Error;
  /** Headers the plugins add to a request's response (RateLimit-*), by the request object. */
  responseHeaders(request: object): Record<string, string> | null;
  /** Requests carrying one of these headers are left to yoga (debug tracing, CORS). */
  yogaHeaders: readonly string[];
  /** A failure of the fast lane itself (a bug): logged; the request answers 500. */
  onError(error: unknown): void;
}

const PARAM_KEYS = new Set(['query', 'variables', 'operationName', 'extensions']);
const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The GraphQL parameters of a body, or null when it is anything yoga alone should judge. */
function paramsOf(body: Record<string, unknown>): FastLaneParams | null {
  for (const key in body) if (!PARAM_KEYS.has(key)) return null;
  const { query, variables, operationName, extensions } = body;
  if (typeof query !== 'string') return null;
  if (variables != null && !isPlainObject(variables)) return null;
  if (operationName != null && typeof operationName !== 'string') return null;
  if (extensions != null && !isPlainObject(extensions)) return null;
  return body as unknown as FastLaneParams;
}

const REGULAR_MEDIA_TYPES = ['application/graphql-response+json', 'application/json'] as const;
type RegularMediaType = (typeof REGULAR_MEDIA_TYPES)[number];

/**
 * The media type yoga's result processors choose for a single (non-streamed) result, by its own
 * rules (use-result-processor.js, accept.js): the request's types in reverse order, each matched
 * against the regular processor's, the last match winning; the regular processor comes last, so it
 * wins whenever one matches. Null when none does (yoga answers 406, or streams as SSE).
 */
export function regularMediaType(accept: string | undefined): RegularMediaType | null {
  const key = accept ?? '';
  const known = mediaTypes.get(key);
  if (known !== undefined) return known;
  const chosen = chooseMediaType(accept);
  // Clients send a handful of distinct Accept headers: remember a few.
  if (mediaTypes.size >= 64) mediaTypes.clear();
  mediaTypes.set(key, chosen);
  return chosen;
}
const mediaTypes = new Map<string, RegularMediaType | null>();

function chooseMediaType(accept: string | undefined): RegularMediaType | null {
  const requested: string[] = [];
  for (const part of (accept || '*/*').replace(/\s/g, '').toLowerCase().split(',')) {
    const [mediaType, ...params] = part.split(';');
    if (mediaType === undefined) continue;
    const charset = params.find((p) => p.includes('charset=')) || 'charset=utf-8';
    if (charset !== 'charset=utf-8') continue;
    requested.push(mediaType);
  }
  requested.reverse();
  let chosen: RegularMediaType | null = null;
  for (const asked of requested) {
    const [askedPre, askedSuf] = asked.split('/');
    for (const type of REGULAR_MEDIA_TYPES) {
      const [pre, suf] = type.split('/');
      if ((askedPre === '*' || askedPre === pre) && (askedSuf === '*' || askedSuf === suf)) chosen = type;
    }
  }
  return chosen;
}

/** yoga's result processor writes a Response; this one keeps what it was given. */
class CapturedResponse {
  constructor(
    readonly body: string | null,
    readonly init: { status?: number; headers?: Record<string, string> },
  ) {}
}
const CAPTURE = { Response: CapturedResponse } as unknown as Parameters<typeof processRegularResult>[1];

/** The part of a fetch Request that context factories and plugins read: its headers. */
class NodeRequestHeaders {
  constructor(private readonly req: IncomingMessage) {}
  get(name: string): string | null {
    const value = this.req.headers[name.toLowerCase()];
    return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
  }
  has(name: string): boolean {
    return this.req.headers[name.toLowerCase()] !== undefined;
  }
}

/**
 * The common GraphQL request, run without yoga's HTTP layer: a JSON POST of one query or mutation
 * (no Origin, no debug header, a JSON result accepted) that parses and validates. It goes through
 * the same envelop plugins as through yoga (context, auth, rate limits, armor, masking, caches),
 * and its answer is made by yoga's own result processor (status, content type, body), with the
 * headers plugins add; what yoga does on top, fetch Request and Response objects for every request,
 * costs about a third of a small request's CPU. Anything else (batches, GET, SSE, CORS, parse or
 * validation errors, trusted-document refusals) is left to yoga: `tryHandle` answers false before
 * anything runs, so yoga takes the request as if the fast lane did not exist.
 */
export function createFastLane(deps: FastLaneDeps) {
  // Documents that validated without errors, by the parsed document (yoga's parser cache hands
  // back one object per query text). The rules (graphql's, graphql-armor's limits) depend only on
  // the document and the one schema, so a document valid once is valid again: this skips the
  // per-request work of yoga's own validation cache (its key joins the names of every rule).
  const validated = new WeakSet<DocumentNode>();
  async function run(
    res: ServerResponse,
    env: Enveloped,
    request: { headers: NodeRequestHeaders },
    document: DocumentNode,
    params: FastLaneParams,
    mediaType: RegularMediaType,
  ): Promise<void> {
    let result: ExecutionResult;
    try {
      const contextValue = await env.contextFactory();
      result = (await env.execute({
        schema: env.schema,
        document,
        variableValues: params.variables ?? undefined,
        operationName: params.operationName ?? undefined,
        contextValue,
      })) as ExecutionResult;
    } catch (err) {
      result = { errors: [deps.maskError(err) as never] };
    }
    if (res.destroyed) return;
    const response = processRegularResult(
      isAsyncIterable(result) ? result : deps.processResult(result),
      CAPTURE,
      mediaType,
    ) as unknown as CapturedResponse;
    const body = response.body ?? '';
    const headers = { ...response.init.headers, ...deps.responseHeaders(request), 'Content-Length': String(Buffer.byteLength(body)) };
    res.writeHead(response.init.status ?? 200, headers);
    res.end(body);
  }

  return {
    /** Requests run by the fast lane so far (tests, metrics). */
    handled: 0,
    /** Runs the request when it is the common case; false (nothing done) leaves it to yoga. */
    tryHandle(req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>): boolean {
      for (const name of deps.yogaHeaders) if (req.headers[name] !== undefined) return false;
      const mediaType = regularMediaType(req.headers.accept);
      if (!mediaType) return false;
      const params = paramsOf(body);
      if (!params) return false;
      const query = deps.resolveQuery(params);
      if (query === null) return false;
      const resolved: FastLaneParams = query === params.query ? params : { ...params, query };
      const request = { headers: new NodeRequestHeaders(req) };
      const env = deps.getEnveloped({ request, req, res, params: resolved });
      let document: DocumentNode;
      try {
        document = env.parse(query);
        if (!validated.has(document)) {
          if (env.validate(env.schema, document).length > 0) return false;
          validated.add(document);
        }
      } catch {
        return false;
      }
      const operation = getOperationAST(document, resolved.operationName ?? undefined);
      if (!operation || operation.operation === 'subscription') return false;
      this.handled++;
      run(res, env, request, document, resolved, mediaType).catch((err: unknown) => {
        deps.onError(err);
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify({ errors: [{ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] }));
      });
      return true;
    },
  };
}
