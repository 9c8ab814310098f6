import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { Client as UrqlClient, fetchExchange, subscriptionExchange } from '@urql/core';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print, type ExecutionResult, type GraphQLFormattedError } from 'graphql';
import { createClient, type Client as WsClient } from 'graphql-ws';
import WebSocket from 'ws';
import { CreateRoomDocument } from '../generated/graphql.js';

/** A GraphQL response as the HTTP client saw it. */
export interface HttpResult<T> {
  status: number;
  headers: Headers;
  data: T | null | undefined;
  errors: readonly GraphQLFormattedError[] | undefined;
  body: unknown;
}

type Doc<T, V> = TypedDocumentNode<T, V> | string;
const source = (doc: Doc<unknown, unknown>) => (typeof doc === 'string' ? doc : print(doc));

/** POSTs an operation over HTTP (GraphQL over HTTP, JSON). */
export async function gql<T = Record<string, unknown>, V = Record<string, unknown>>(
  url: string,
  doc: Doc<T, V>,
  variables?: V,
  opts: { token?: string | null; headers?: Record<string, string> } = {},
): Promise<HttpResult<T>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json, application/json',
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
      ...opts.headers,
    },
    body: JSON.stringify({ query: source(doc as Doc<unknown, unknown>), variables }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  const r = (typeof body === 'object' && body !== null ? body : {}) as ExecutionResult<T>;
  return { status: res.status, headers: res.headers, data: r.data, errors: r.errors as GraphQLFormattedError[] | undefined, body };
}

/** Like {@link gql}, but fails the test on any error and returns `data`. */
export async function gqlOk<T = Record<string, unknown>, V = Record<string, unknown>>(
  url: string,
  doc: Doc<T, V>,
  variables: V | undefined,
  token: string,
): Promise<T> {
  const r = await gql(url, doc, variables, { token });
  if (r.errors?.length || !r.data) {
    throw new Error(`GraphQL error (HTTP ${r.status}): ${JSON.stringify(r.errors ?? r.body)}`);
  }
  return r.data;
}

/** What `extensions.redis` reports for an operation sent with `X-Debug-Redis: 1`. */
export interface RedisExtension {
  roundTrips: number;
  commands: number;
  cache: { hits: number; misses: number };
  /** Sent without being waited for (the write of the viewer's user), not counted above. */
  unawaited: { roundTrips: number; commands: number };
}

/** Runs an operation with `X-Debug-Redis: 1`, failing the test on any error; returns its data and `extensions.redis`. */
export async function gqlTraced<T = Record<string, unknown>, V = Record<string, unknown>>(
  url: string,
  doc: Doc<T, V>,
  variables: V,
  token: string,
): Promise<{ data: T; redis: RedisExtension }> {
  const r = await gql(url, doc, variables, { token, headers: { 'X-Debug-Redis': '1' } });
  if (r.errors?.length || !r.data) throw new Error(`GraphQL error (HTTP ${r.status}): ${JSON.stringify(r.errors ?? r.body)}`);
  const redis = (r.body as { extensions?: { redis?: RedisExtension } }).extensions?.redis;
  if (!redis) throw new Error(`no extensions.redis in ${JSON.stringify(r.body).slice(0, 300)}`);
  return { data: r.data, redis };
}

/** The `extensions.code` of each error. */
export const codes = (errors: readonly GraphQLFormattedError[] | undefined) =>
  (errors ?? []).map((e) => e.extensions?.code);

/** A promise with its resolve/reject exposed. */
export function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Rejects after `ms` with a message saying what was awaited. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Polls `check` every 25 ms until it returns a truthy value, failing after `ms`. */
export async function waitFor<T>(check: () => T | Promise<T>, ms: number, what: string): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A graphql-ws client with the token in `connectionParams`; no retries unless asked. */
export function wsClient(
  wsUrl: string,
  token: string | null,
  opts: { retryAttempts?: number; onClose?: (code: number, reason: string) => void } = {},
): WsClient {
  return createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    lazy: false,
    retryAttempts: opts.retryAttempts ?? 0,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    on: {
      closed: (event) => {
        const e = event as { code: number; reason: string };
        opts.onClose?.(e.code, e.reason);
      },
    },
    onNonLazyError: () => undefined,
  });
}

/** A running subscription whose results are collected and awaited with bounded timeouts. */
export interface Subscription<T> {
  results: ExecutionResult<T>[];
  /** Resolves with the `n`-th result (1-based), waiting at most `ms`. */
  nth(n: number, ms?: number): Promise<ExecutionResult<T>>;
  /** Resolves with all results once there are `n`. */
  take(n: number, ms?: number): Promise<ExecutionResult<T>[]>;
  /** Resolves when the server completes the subscription. */
  completed: Promise<void>;
  /** Rejects/resolves when the subscription fails at the transport level. */
  error: Promise<unknown>;
  /** True once the subscription ended (complete or error). */
  done(): boolean;
  /** Stops it from the client side. */
  unsubscribe(): void;
}

/** roomEvents' ephemeral state events, which most tests do not follow. */
const EPHEMERAL_ROOM_EVENTS = new Set(['PresenceChanged', 'TypingChanged']);
const isEphemeralRoomEvent = (r: { data?: unknown }) => {
  const ev = (r.data as { roomEvents?: { __typename?: string } } | null | undefined)?.roomEvents;
  return ev?.__typename !== undefined && EPHEMERAL_ROOM_EVENTS.has(ev.__typename);
};

/**
 * Subscribes through a graphql-ws client and collects what arrives. `roomEvents` results that are
 * room presence or typing (`PresenceChanged`, `TypingChanged`: every subscriber's own arrival
 * produces one) are left out unless `keepEphemeral` is set.
 */
export function subscribe<T = Record<string, unknown>, V = Record<string, unknown>>(
  client: WsClient,
  doc: Doc<T, V>,
  variables?: V,
  opts: { keepEphemeral?: boolean; extensions?: Record<string, unknown> } = {},
): Subscription<T> {
  const results: ExecutionResult<T>[] = [];
  const waiters: (() => void)[] = [];
  const completed = deferred<void>();
  const error = deferred<unknown>();
  let ended = false;
  const notify = () => waiters.splice(0).forEach((w) => w());
  const unsubscribe = client.subscribe<T>(
    {
      query: source(doc as Doc<unknown, unknown>),
      variables: variables as Record<string, unknown> | undefined,
      ...(opts.extensions ? { extensions: opts.extensions } : {}),
    },
    {
      next: (r) => {
        if (!opts.keepEphemeral && isEphemeralRoomEvent(r)) return;
        results.push(r as ExecutionResult<T>);
        notify();
      },
      error: (e) => {
        ended = true;
        error.resolve(e);
        notify();
      },
      complete: () => {
        ended = true;
        completed.resolve();
        notify();
      },
    },
  );
  const take = (n: number, ms = 5000) =>
    withTimeout(
      new Promise<ExecutionResult<T>[]>((resolve) => {
        const check = () => (results.length >= n ? resolve(results.slice(0, n)) : waiters.push(check));
        check();
      }),
      ms,
      `${n} subscription results (got ${results.length})`,
    );
  return {
    results,
    take,
    nth: async (n, ms) => (await take(n, ms))[n - 1] as ExecutionResult<T>,
    completed: completed.promise,
    error: error.promise,
    done: () => ended,
    unsubscribe,
  };
}

/** An urql client over HTTP with subscriptions through graphql-ws. */
export function urqlClient(url: string, ws: WsClient, token: string): UrqlClient {
  return new UrqlClient({
    url,
    preferGetMethod: false,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${token}` } }),
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return {
            subscribe(sink) {
              const unsubscribe = ws.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
  });
}

/** from..to inclusive. */
export const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Expects exactly one error with `code` (and `extensions.field` when given). */
export function expectError(r: HttpResult<unknown>, code: string, field?: string): void {
  expect(codes(r.errors), JSON.stringify(r.errors)).toEqual([code]);
  if (field !== undefined) expect(r.errors?.[0]?.extensions?.field).toBe(field);
}

/** Resolves once the subscription completed (not errored, no error result) within `ms`. */
export async function completesWithin(sub: Subscription<unknown>, ms: number, what: string): Promise<void> {
  await withTimeout(
    Promise.race([
      sub.completed,
      sub.error.then((e) => {
        throw new Error(`${what} errored instead of completing: ${JSON.stringify(e)}`);
      }),
    ]),
    ms,
    `${what} to complete`,
  );
  const failed = sub.results.find((r) => r.errors);
  expect(failed, `${what} ended with errors instead of completing`).toBeUndefined();
}

/** graphql-ws clients a test file opened, so they can be disposed together after each test. */
export interface ClientPool {
  /** Opens a tracked {@link wsClient}. */
  open(wsUrl: string, token: string | null): WsClient;
  /** Disposes `client` if the pool still tracks it. */
  close(client: WsClient): Promise<void>;
  /** Disposes every tracked client. */
  disposeAll(): Promise<void>;
}

/** Makes an empty {@link ClientPool}. */
export function clientPool(): ClientPool {
  const open = new Set<WsClient>();
  return {
    open(wsUrl, token) {
      const client = wsClient(wsUrl, token);
      open.add(client);
      return client;
    },
    async close(client) {
      if (open.delete(client)) await client.dispose();
    },
    async disposeAll() {
      await Promise.all([...open].map((c) => c.dispose()));
      open.clear();
    },
  };
}

/**
 * The GraphQL errors an operation was answered with: graphql-ws sends errors found before execution
 * as an `error` message, and errors of the subscribe resolver as a `next` payload with `errors`.
 */
export async function operationErrors(sub: Subscription<unknown>, ms = 3000): Promise<readonly GraphQLFormattedError[]> {
  const errors = await withTimeout(
    Promise.race([
      sub.error.then((e) => {
        if (!Array.isArray(e)) throw new Error(`expected GraphQL errors, got ${JSON.stringify(e)}`);
        return e as GraphQLFormattedError[];
      }),
      sub.nth(1, ms + 1000).then((r) => r.errors ?? []),
    ]),
    ms,
    'the operation to fail',
  );
  expect(errors.length, 'the operation failed with at least one error').toBeGreaterThan(0);
  return errors;
}

/** Creates a room named `<label>-<random>` with `memberIds` as the owner of `token`; returns its id. */
export async function createRoomAs(
  url: string,
  token: string,
  memberIds: string[],
  opts: { label: string; visibility?: 'PUBLIC' | 'PRIVATE' },
): Promise<string> {
  const { createRoom } = await gqlOk(
    url,
    CreateRoomDocument,
    { input: { name: `${opts.label}-${randomBytes(3).toString('hex')}`, visibility: opts.visibility ?? 'PRIVATE', memberIds } },
    token,
  );
  return createRoom.id;
}

/** One parsed Server-Sent Event. */
export interface SseEvent {
  event: string;
  data: string;
}

/** Parses complete SSE events out of `buffer`; returns them and the unparsed rest. */
export function parseSse(buffer: string): { events: SseEvent[]; rest: string } {
  const events: SseEvent[] = [];
  const blocks = buffer.split(/\r?\n\r?\n/);
  const rest = blocks.pop() ?? '';
  for (const block of blocks) {
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(':')) continue; // keep-alive comment
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (data.length > 0 || event !== 'message') events.push({ event, data: data.join('\n') });
  }
  return { events, rest };
}
