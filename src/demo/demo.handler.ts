import { readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname } from 'node:path';
import { Kind, parse, type OperationDefinitionNode } from 'graphql';
import { signToken } from '../infra/auth.js';
import { loadManifests } from '../infra/persisted-operations.js';

/** The page's static files (no CDN, nothing fetched from elsewhere). The build copies them to dist/. */
const PUBLIC_DIR = new URL('./public/', import.meta.url);

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** A demo sign-in lasts a working day. */
const DEMO_TOKEN_TTL = '12h';
const MAX_NAME_LENGTH = 40;
const MAX_BODY_BYTES = 1024;

/** Options of {@link createDemoHandler}. */
export interface DemoOptions {
  /** Signs the development tokens; undefined (JWKS only) disables the sign-in. */
  jwtSecret: string | undefined;
  /** The SDK's trusted-documents manifest: the page runs the SDK's operations by name. */
  manifestPath: URL;
}

/** A user id from a display name: `Ada Lovelace` → `ada-lovelace`. */
export function demoUserId(name: string): string {
  return name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

/** The SDK's operations by name, with their hash and text, for the page. */
function operationsByName(manifestPath: URL): Record<string, { hash: string; query: string }> {
  const byName: Record<string, { hash: string; query: string }> = {};
  for (const [hash, query] of loadManifests([manifestPath])) {
    const op = parse(query).definitions.find((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
    if (op?.name) byName[op.name.value] = { hash, query };
  }
  return byName;
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' });
  res.end(body);
}

const sendJson = (res: ServerResponse, status: number, value: unknown) =>
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));

/** Reads a small JSON body; null when it is too large or not JSON. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return null;
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    return null;
  }
}

/**
 * The demo chat page at `/demo` (DEVELOPMENT ONLY: `buildApp` creates it only outside production):
 * static files, the SDK's operations (`/demo/operations.json`), and a sign-in that hands anyone a
 * token for the name they type (`POST /demo/token`). Answers every `/demo` path.
 */
export function createDemoHandler(opts: DemoOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const files = new Map<string, { type: string; body: Buffer }>();
  for (const name of readdirSync(PUBLIC_DIR)) {
    const type = CONTENT_TYPES[extname(name)];
    if (type) files.set(name, { type, body: readFileSync(new URL(name, PUBLIC_DIR)) });
  }
  let operations: string | null = null;

  async function signIn(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!opts.jwtSecret) {
      return sendJson(res, 501, { error: 'The demo sign-in needs JWT_SECRET (tokens from a JWKS come from your identity provider)' });
    }
    const body = (await readJson(req)) as { name?: unknown } | null;
    const name = typeof body?.name === 'string' ? body.name.trim() : '';
    const userId = demoUserId(name);
    if (!userId || name.length > MAX_NAME_LENGTH) {
      return sendJson(res, 400, { error: `A name of 1..${MAX_NAME_LENGTH} characters with at least one letter or digit` });
    }
    const token = await signToken(opts.jwtSecret, { sub: userId, name }, DEMO_TOKEN_TTL);
    sendJson(res, 200, { token, userId, name });
  }

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/demo/token' && req.method === 'POST') {
      signIn(req, res).catch(() => sendJson(res, 500, { error: 'Could not sign in' }));
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: 'Method not allowed' });
    if (path === '/demo/operations.json') {
      operations ??= JSON.stringify(operationsByName(opts.manifestPath));
      return send(res, 200, 'application/json; charset=utf-8', operations);
    }
    const file = files.get(path === '/demo' || path === '/demo/' ? 'index.html' : path.slice('/demo/'.length));
    if (!file) return sendJson(res, 404, { error: 'Not found' });
    send(res, 200, file.type, file.body);
  };
}
