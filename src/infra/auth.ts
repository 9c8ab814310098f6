import type { Plugin } from 'graphql-yoga';
import { Kind, type DocumentNode, type OperationDefinitionNode, type SelectionSetNode } from 'graphql';
import { createRemoteJWKSet, jwtVerify, SignJWT, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { unauthenticated } from '../errors.js';

/** Who a valid token says the caller is. */
export interface Principal {
  id: string;
  name: string;
  roles: string[];
}

/** Verifies Bearer tokens. */
export interface Authenticator {
  /** The principal of a valid token; throws with a reason otherwise. */
  verify(token: string): Promise<Principal>;
  /** The principal of an `Authorization` value (`Bearer <jwt>`): null when absent, throws when bad. */
  fromHeader(header: string | null | undefined): Promise<Principal | null>;
}

/** Options for {@link createAuthenticator}. */
export interface AuthOptions {
  /** HS256 secret. */
  secret: string | undefined;
  /** JWKS endpoint for RS256/ES256 tokens. */
  jwksUrl: string | undefined;
}

const MAX_ID_LENGTH = 128;
/** Verified tokens remembered (by their exact text) so a client's every request is not re-verified. */
const VERIFIED_CACHE_SIZE = 10_000;
/** How long a verified token without `exp` stays cached. */
const NO_EXP_CACHE_MS = 60_000;

/** Turns verified claims into a principal, checking `sub`, `name` and `roles`. */
function toPrincipal(payload: JWTPayload): Principal {
  const sub = payload.sub;
  // eslint-disable-next-line no-control-regex
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > MAX_ID_LENGTH || /[\u0000-\u001f]/.test(sub)) {
    throw new Error('the token has no valid "sub" claim');
  }
  const rawName = (payload as { name?: unknown }).name;
  const name = typeof rawName === 'string' && rawName.trim() !== '' ? rawName.trim().slice(0, 100) : sub;
  const rawRoles = (payload as { roles?: unknown }).roles;
  const roles = Array.isArray(rawRoles) ? rawRoles.filter((r): r is string => typeof r === 'string') : [];
  return { id: sub, name, roles };
}

/** Creates the JWT authenticator (HS256 with `JWT_SECRET`, RS256/ES256 from `JWT_JWKS_URL`). */
export function createAuthenticator(opts: AuthOptions): Authenticator {
  const secret = opts.secret ? new TextEncoder().encode(opts.secret) : null;
  const jwks: JWTVerifyGetKey | null = opts.jwksUrl ? createRemoteJWKSet(new URL(opts.jwksUrl)) : null;
  // token -> principal and when to stop trusting the cached verdict (exp, or a minute without one).
  const verified = new Map<string, { principal: Principal; untilMs: number }>();
  const remember = (token: string, principal: Principal, exp: number | undefined) => {
    if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value as string);
    verified.set(token, { principal, untilMs: exp !== undefined ? exp * 1000 : Date.now() + NO_EXP_CACHE_MS });
  };
  const verifyUncached = async (token: string): Promise<Principal> => {
    const alg = (() => {
      try {
        const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { alg?: unknown };
        return typeof header.alg === 'string' ? header.alg : '';
      } catch {
        return '';
      }
    })();
    let payload: JWTPayload;
    if (alg === 'HS256' && secret) {
      payload = (await jwtVerify(token, secret, { algorithms: ['HS256'] })).payload;
    } else if ((alg === 'RS256' || alg === 'ES256') && jwks) {
      payload = (await jwtVerify(token, jwks, { algorithms: ['RS256', 'ES256'] })).payload;
    } else {
      throw new Error(`tokens signed with "${alg || 'unknown'}" are not accepted`);
    }
    const principal = toPrincipal(payload);
    // Tokens not yet valid are not cached: jose checks nbf again next time.
    if (payload.nbf === undefined) remember(token, principal, payload.exp);
    return principal;
  };
  const verify = async (token: string): Promise<Principal> => {
    const hit = verified.get(token);
    if (hit) {
      if (Date.now() < hit.untilMs) return hit.principal;
      verified.delete(token);
    }
    return verifyUncached(token);
  };
  return {
    verify,
    async fromHeader(header) {
      if (header == null || header === '') return null;
      const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
      if (!match?.[1]) throw new Error('the Authorization value must be "Bearer <token>"');
      return verify(match[1]);
    },
  };
}

/** Signs an HS256 token, as `npm run token` does. */
export async function signToken(
  secret: string,
  claims: { sub: string; name?: string; roles?: string[] },
  expiresIn: string | number = '30d',
): Promise<string> {
  const { sub, ...rest } = claims;
  return new SignJWT(rest)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(secret));
}

/** True when the operation selects only introspection fields (`__schema`, `__type`, `__typename`). */
export function isIntrospectionOnly(document: DocumentNode, operationName?: string | null): boolean {
  const ops = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const op = operationName ? ops.find((o) => o.name?.value === operationName) : ops.length === 1 ? ops[0] : undefined;
  if (!op) return false;
  const fragments = new Map(
    document.definitions.flatMap((d) => (d.kind === Kind.FRAGMENT_DEFINITION ? [[d.name.value, d] as const] : [])),
  );
  const onlyMeta = (set: SelectionSetNode, seen: Set<string>): boolean =>
    set.selections.every((s) => {
      if (s.kind === Kind.FIELD) return s.name.value.startsWith('__');
      if (s.kind === Kind.INLINE_FRAGMENT) return onlyMeta(s.selectionSet, seen);
      const f = fragments.get(s.name.value);
      if (!f || seen.has(f.name.value)) return true;
      return onlyMeta(f.selectionSet, new Set([...seen, f.name.value]));
    });
  return onlyMeta(op.selectionSet, new Set());
}

/** The part of the context `useAuth` reads. */
export interface AuthContext {
  viewer: Principal | null;
  /** Why the presented token was refused, when it was. */
  authError: string | null;
}

/**
 * Refuses every operation without a valid token with `UNAUTHENTICATED`, except pure introspection
 * and `__typename` (contract § Authentication), for queries, mutations and subscriptions alike.
 */
export function useAuth(): Plugin<AuthContext> {
  const check = (ctx: AuthContext, document: DocumentNode, operationName?: string | null) => {
    if (ctx.viewer) return null;
    if (!ctx.authError && isIntrospectionOnly(document, operationName)) return null;
    return unauthenticated(ctx.authError ? `Invalid token: ${ctx.authError}` : undefined);
  };
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const error = check(args.contextValue, args.document, args.operationName);
      if (error) setResultAndStopExecution({ errors: [error] });
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const error = check(args.contextValue, args.document, args.operationName);
      if (error) setResultAndStopExecution({ errors: [error] });
    },
  };
}
