import { badInput } from '../errors.js';

/** The largest page any connection field returns. */
export const MAX_PAGE_SIZE = 100;

/** Relay page information. */
export interface PageInfo {
  hasNextPage: boolean;
  hasPreviousPage: boolean;
  startCursor: string | null;
  endCursor: string | null;
}

/** A Relay connection of service models. */
export interface Connection<T> {
  edges: { cursor: string; node: T }[];
  pageInfo: PageInfo;
}

/** Checks a `first`/`last` argument: an integer in 0..100 (`BAD_USER_INPUT` naming it otherwise). */
export function pageSize(field: string, value: number | null | undefined, fallback: number): number {
  const n = value ?? fallback;
  if (!Number.isInteger(n) || n < 0 || n > MAX_PAGE_SIZE) {
    throw badInput(field, `${field} must be between 0 and ${MAX_PAGE_SIZE}`);
  }
  return n;
}

/** Builds a connection from a page of items and the cursor function. */
export function toConnection<T>(
  items: T[],
  cursorOf: (item: T) => string,
  hasPreviousPage: boolean,
  hasNextPage: boolean,
): Connection<T> {
  const edges = items.map((node) => ({ cursor: cursorOf(node), node }));
  return {
    edges,
    pageInfo: {
      hasNextPage,
      hasPreviousPage,
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges[edges.length - 1]?.cursor ?? null,
    },
  };
}

/** Encodes an opaque cursor. */
export const encodeCursor = (parts: (string | number)[]) =>
  Buffer.from(JSON.stringify(parts)).toString('base64url');

/** Decodes a cursor made by {@link encodeCursor}; `BAD_USER_INPUT` naming `field` when malformed. */
export function decodeCursor(field: string, cursor: string): (string | number)[] {
  try {
    const parts: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(parts) && parts.every((p) => typeof p === 'string' || typeof p === 'number')) {
      return parts as (string | number)[];
    }
  } catch {
    // fall through
  }
  throw badInput(field, `${field} is not a valid cursor`);
}
