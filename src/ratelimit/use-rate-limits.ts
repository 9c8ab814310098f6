import type { IncomingMessage } from 'node:http';
import {
  getOperationAST,
  Kind,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLSchema,
  type SelectionSetNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { AppError, isRedisUnavailableError, unavailable } from '../errors.js';
import { parseWindow, type Limit, type LimitCheck, type LimitResult, type RateLimitService } from './ratelimit.service.js';

/** The SDL directive that sets a field's default limit. */
export const RATE_LIMIT_DIRECTIVE = 'rateLimit';

/** Options of {@link useRateLimits}. */
export interface RateLimitOptions {
  service: RateLimitService;
  /** By operation (root field) name, and `*` for every operation of a user; from RATE_LIMITS. */
  overrides: Map<string, Limit>;
  /** Honour X-Forwarded-For for anonymous identities. */
  trustProxy: boolean;
}

interface LimitedField {
  scope: string;
  limit: Limit;
}

/** Every root field's limit: the directive's default, replaced by an override of the same name. */
export function collectLimits(schema: GraphQLSchema, overrides: Map<string, Limit>): Map<string, LimitedField> {
  const out = new Map<string, LimitedField>();
  for (const root of [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()]) {
    if (!root) continue;
    for (const field of Object.values(root.getFields())) {
      const directive = field.astNode?.directives?.find((d) => d.name.value === RATE_LIMIT_DIRECTIVE);
      const arg = (name: string) => directive?.arguments?.find((a) => a.name.value === name)?.value;
      let limit: Limit | null = null;
      const max = arg('max');
      const window = arg('window');
      if (max?.kind === Kind.INT && window?.kind === Kind.STRING) {
        const windowMs = parseWindow(window.value);
        if (!windowMs) throw new Error(`@rateLimit on ${root.name}.${field.name}: bad window "${window.value}"`);
        limit = { max: Number(max.value), windowMs };
      }
      const scopeArg = arg('scope');
      const scope = scopeArg?.kind === Kind.STRING ? scopeArg.value : field.name;
      // An override may name the operation or its shared scope (`roomSubscriptions=2/1m`).
      limit = overrides.get(field.name) ?? overrides.get(scope) ?? limit;
      if (limit) out.set(`${root.name}.${field.name}`, { scope, limit });
    }
  }
  return out;
}

/** How many times each root field executes (aliases and repeated selections count each). */
export function countRootFields(document: DocumentNode, operationName?: string | null): { type: string; counts: Map<string, number> } | null {
  const op = getOperationAST(document, operationName ?? undefined);
  if (!op) return null;
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const counts = new Map<string, number>();
  const walk = (set: SelectionSetNode, seen: Set<string>) => {
    for (const s of set.selections) {
      if (s.kind === Kind.FIELD) {
        if (!s.name.value.startsWith('__')) counts.set(s.name.value, (counts.get(s.name.value) ?? 0) + 1);
      } else if (s.kind === Kind.INLINE_FRAGMENT) {
        walk(s.selectionSet, seen);
      } else {
        const f = fragments.get(s.name.value);
        if (f && !seen.has(f.name.value)) walk(f.selectionSet, new Set([...seen, f.name.value]));
      }
    }
  };
  walk(op.selectionSet, new Set());
  const type = op.operation === 'query' ? 'Query' : op.operation === 'mutation' ? 'Mutation' : 'Subscription';
  return { type, counts };
}

/** The identity limits are counted for: the user, or the client IP for anonymous requests. */
function identityOf(ctx: Record<string, unknown>, trustProxy: boolean): string {
  const viewer = ctx.viewer as { id: string } | null | undefined;
  if (viewer) return `u:${viewer.id}`;
  // Yoga's server context over HTTP, and our WebSocket context, both carry the node request as `req`.
  const req = ctx.req as IncomingMessage | undefined;
  const forwarded = req?.headers['x-forwarded-for'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim();
  if (trustProxy && first) return `ip:${first}`;
  return `ip:${req?.socket?.remoteAddress ?? 'unknown'}`;
}

/** `RATE_LIMITED` for the check that has to wait longest; over HTTP the request answers 429. */
export function rateLimited(refused: LimitResult[]): AppError {
  const worst = refused.reduce((a, b) => (b.retryAfterMs > a.retryAfterMs ? b : a));
  const retryAfter = Math.max(1, Math.ceil(worst.retryAfterMs / 1000));
  return new AppError(
    'RATE_LIMITED',
    `Rate limit of ${worst.scope === '*' ? 'all operations' : worst.scope} exceeded (${worst.limit.max} per ${worst.limit.windowMs / 1000} s): retry in ${retryAfter} s`,
    { retryAfter, status: 429, headers: { 'Retry-After': String(retryAfter) } },
  );
}

/**
 * The operation budget of a request, for the RateLimit-* response headers, carried by the request
 * object itself (a WeakMap keyed by short-lived requests slows V8's young-generation collector).
 */
const BUDGET = Symbol('rateLimitBudget');
type WithBudget = { [BUDGET]?: LimitResult };

/** The RateLimit-* headers of a request's response (its operation budget), if it was counted. */
export function rateLimitHeaders(request: object): Record<string, string> | null {
  const b = (request as WithBudget)[BUDGET];
  if (!b) return null;
  return {
    'RateLimit-Limit': String(b.limit.max),
    'RateLimit-Remaining': String(Math.max(0, b.remaining)),
    'RateLimit-Reset': String(Math.max(1, Math.ceil(b.resetMs / 1000))),
  };
}

/**
 * Enforces the `@rateLimit` directive and the per-user budget (`*`) for queries, mutations and
 * subscriptions (at subscribe time), over HTTP, SSE and WebSocket alike: one pipeline of atomic
 * Lua checks per operation, one check per limited field whatever its aliases (each counts as a
 * hit). Refused: `RATE_LIMITED` with `retryAfter`, 429 and `Retry-After` over HTTP. Redis away:
 * `UNAVAILABLE`, never an open door.
 */
export function useRateLimits(opts: RateLimitOptions): Plugin {
  const limitsBySchema = new WeakMap<GraphQLSchema, Map<string, LimitedField>>();
  const budget = opts.overrides.get('*');

  const guard = async (args: { schema: GraphQLSchema; document: DocumentNode; operationName?: string | null; contextValue: unknown }) => {
    let limits = limitsBySchema.get(args.schema);
    if (!limits) {
      limits = collectLimits(args.schema, opts.overrides);
      limitsBySchema.set(args.schema, limits);
    }
    const counted = countRootFields(args.document, args.operationName);
    if (!counted) return null;
    const checks: LimitCheck[] = [];
    for (const [field, hits] of counted.counts) {
      const limited = limits.get(`${counted.type}.${field}`);
      if (limited) checks.push({ scope: limited.scope, limit: limited.limit, hits });
    }
    if (budget) checks.push({ scope: '*', limit: budget, hits: 1 });
    if (checks.length === 0) return null;
    const ctx = args.contextValue as Record<string, unknown>;
    let results: LimitResult[];
    try {
      results = await opts.service.check(identityOf(ctx, opts.trustProxy), checks);
    } catch (err) {
      if (isRedisUnavailableError(err)) return unavailable();
      throw err;
    }
    const request = ctx.request as object | undefined;
    const star = results.find((r) => r.scope === '*');
    if (request && star && Object.isExtensible(request)) (request as WithBudget)[BUDGET] = star;
    const refused = results.filter((r) => !r.admitted);
    return refused.length > 0 ? rateLimited(refused) : null;
  };

  return {
    async onExecute({ args, setResultAndStopExecution }) {
      const error = await guard(args);
      if (error) setResultAndStopExecution({ errors: [error] });
    },
    async onSubscribe({ args, setResultAndStopExecution }) {
      const error = await guard(args);
      if (error) setResultAndStopExecution({ errors: [error] });
    },
    onResponse({ request, response }) {
      for (const [name, value] of Object.entries(rateLimitHeaders(request) ?? {})) response.headers.set(name, value);
    },
  };
}
