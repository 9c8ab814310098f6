/**
 * The sha256 (hex) a generated document carries in `__meta__.hash`: what a client sends as
 * `extensions.persistedQuery.sha256Hash` so that a server with `PERSISTED_OPERATIONS=required`
 * runs it. Null for a document that is not from the SDK.
 */
export function persistedHash(document: unknown): string | null {
  const hash = (document as { __meta__?: { hash?: unknown } } | null)?.__meta__?.hash;
  return typeof hash === 'string' ? hash.replace(/^sha256:/, '') : null;
}
