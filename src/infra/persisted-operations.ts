import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Plugin } from 'graphql-yoga';
import { AppError } from '../errors.js';

/** `PERSISTED_OPERATIONS`: which operations may run (contract § Transport, trusted documents). */
export type PersistedOperationsMode = 'off' | 'allowed' | 'required';

/** The manifest the SDK build emits (`npm run codegen`): `sha256:<hex>` → document text. */
export const SDK_MANIFEST_PATH = new URL('../sdk/generated/persisted-documents.json', import.meta.url);

/** What a request or a WebSocket `subscribe` message carries, as far as trusted documents go. */
export interface OperationParams {
  query?: string | null;
  extensions?: Record<string, unknown> | null;
  /** The GraphQL-over-HTTP trusted documents spelling: `sha256:<hex>` (or the bare hex). */
  documentId?: unknown;
}

/** The document to run, or why the request is refused. */
export type Resolved = { query: string | undefined; error?: undefined } | { error: AppError; query?: undefined };

/** Trusted documents: turns a hash into its document and refuses what the mode does not allow. */
export interface PersistedOperations {
  readonly mode: PersistedOperationsMode;
  /** How many documents the manifests hold. */
  readonly size: number;
  /** The query to run for `params` (the manifest's when a hash is given), or the refusal. */
  resolve(params: OperationParams): Resolved;
}

const HEX_SHA256 = /^[0-9a-f]{64}$/;
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * Reads manifests (`{ "sha256:<hex>": "<document>" }`, the client preset's `persisted-documents.json`)
 * into one map by bare hex. Throws when a file is unreadable or a key is not its document's hash:
 * a server must not start trusting a manifest it misreads.
 */
export function loadManifests(paths: readonly (string | URL)[]): Map<string, string> {
  const documents = new Map<string, string>();
  for (const path of paths) {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new Error(`${String(path)}: a manifest is a JSON object of hash -> document`);
    }
    for (const [key, document] of Object.entries(parsed)) {
      const hex = key.replace(/^sha256:/, '');
      if (typeof document !== 'string' || !HEX_SHA256.test(hex) || sha256(document) !== hex) {
        throw new Error(`${String(path)}: "${key}" is not the sha256 of its document`);
      }
      documents.set(hex, document);
    }
  }
  return documents;
}

/** The hash a request names: `extensions.persistedQuery.sha256Hash` (Apollo, urql) or `documentId`. */
export function requestedHash(params: OperationParams): string | null {
  const pq = params.extensions?.persistedQuery as { version?: unknown; sha256Hash?: unknown } | undefined;
  const raw = typeof pq?.sha256Hash === 'string' ? pq.sha256Hash : typeof params.documentId === 'string' ? params.documentId : null;
  return raw === null ? null : raw.replace(/^sha256:/, '').toLowerCase();
}

/** Creates the trusted-documents rule for `mode` over `documents` (from {@link loadManifests}). */
export function createPersistedOperations(mode: PersistedOperationsMode, documents: ReadonlyMap<string, string>): PersistedOperations {
  return {
    mode,
    size: documents.size,
    resolve(params) {
      const hash = requestedHash(params);
      const text = params.query ? params.query : undefined;
      if (mode === 'off') {
        if (hash !== null && text === undefined) {
          // The message Apollo's and urql's persisted-query links recognise: they resend with the text.
          return { error: new AppError('BAD_USER_INPUT', 'PersistedQueryNotSupported', { reason: 'PERSISTED_QUERY_NOT_SUPPORTED' }) };
        }
        return { query: text };
      }
      const document = hash === null ? undefined : documents.get(hash);
      // The manifest's text runs, whatever text came along with the hash.
      if (document !== undefined) return { query: document };
      if (hash !== null && text === undefined) {
        // Again the links' message: they resend with the text (and the hash), which is then judged
        // as a text: it runs when `allowed`.
        return { error: new AppError('NOT_FOUND', 'PersistedQueryNotFound', { reason: 'PERSISTED_QUERY_NOT_FOUND' }) };
      }
      if (mode === 'required') {
        return {
          error: new AppError(
            'FORBIDDEN',
            'Only trusted documents run on this server (PERSISTED_OPERATIONS=required): send the sha256 hash of ' +
              'an operation of the SDK manifest as extensions.persistedQuery.sha256Hash, not a query text',
            { reason: 'PERSISTED_QUERY_ONLY' },
          ),
        };
      }
      return { query: text };
    },
  };
}

/**
 * Applies {@link PersistedOperations} to HTTP and SSE requests, before anything parses them. (The
 * WebSocket path calls `resolve` in graphql-ws' `onSubscribe`.) Not yoga's own persisted-operations
 * plugin: that one refuses a request carrying both a hash and the text, which Apollo's WebSocket
 * link always sends.
 */
export function usePersistedOperations(operations: PersistedOperations): Plugin {
  return {
    onParams({ params, setParams }) {
      const raw = params as typeof params & { documentId?: unknown };
      const resolved = operations.resolve(raw);
      if (resolved.error) throw resolved.error;
      if (resolved.query !== params.query || raw.documentId !== undefined) {
        // documentId is not a parameter yoga knows: it would answer "Unexpected parameter".
        setParams({
          query: resolved.query,
          operationName: params.operationName,
          variables: params.variables,
          extensions: params.extensions,
        });
      }
    },
  };
}
