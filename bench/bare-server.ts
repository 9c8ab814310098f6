/**
 * The reference of `bench/fanout.ts --server bare`: what a hand-rolled chat server costs with no
 * GraphQL at all, on the same machine, under the same load. `ws` + ioredis only: HTTP POSTs are
 * recognised by the operation's name in the body (the four the benchmark sends), a message is
 * stored and published by one Lua script (INCR of the room's seq, HSET, PUBLISH), and each Redis
 * message is serialized once per room and written to every subscriber as a graphql-transport-ws
 * `next` frame. Tokens are checked (HS256) as a real server must. No gap filling, no presence, no
 * limits: a floor, not a product.
 *
 *   PORT=… REDIS_URL=… JWT_SECRET=… node --import tsx bench/bare-server.ts
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Redis } from 'ioredis';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.env.PORT ?? 4000);
const host = process.env.HOST ?? '127.0.0.1';
const prefix = process.env.REDIS_KEY_PREFIX ?? 'bare:';
const secret = process.env.JWT_SECRET ?? '';
const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { keyPrefix: prefix });
const subscriber = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');

const SEND = `
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local message = cjson.encode({ id = ARGV[1] .. ':' .. seq, seq = seq, text = ARGV[2], createdAt = ARGV[3],
  sender = { id = ARGV[4], name = ARGV[5] } })
redis.call('HSET', KEYS[2], seq, message)
redis.call('PUBLISH', ARGV[6], message)
return seq`;
redis.defineCommand('bareSend', { numberOfKeys: 2, lua: SEND });
type WithSend = Redis & { bareSend(room: string, messages: string, ...args: string[]): Promise<number> };

/** The `sub` and `name` of a valid HS256 token, or null. */
function viewerOf(header: string | undefined): { id: string; name: string } | null {
  const token = header?.startsWith('Bearer ') ? header.slice(7) : null;
  const parts = token?.split('.');
  if (!parts || parts.length !== 3) return null;
  const [h, p, s] = parts as [string, string, string];
  const expected = createHmac('sha256', secret).update(`${h}.${p}`).digest();
  const given = Buffer.from(s, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as { sub: string; name?: string; exp?: number };
  if (claims.exp !== undefined && claims.exp * 1000 < Date.now()) return null;
  return { id: claims.sub, name: claims.name ?? claims.sub };
}

const channel = (roomId: string) => `${prefix}room:${roomId}`;

function answer(res: ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function operation(viewer: { id: string; name: string }, query: string, variables: Record<string, unknown>) {
  if (query.includes('sendMessage')) {
    const input = variables.input as { roomId: string; text: string };
    const seq = await (redis as WithSend).bareSend(`room:${input.roomId}`, `room:${input.roomId}:messages`, input.roomId, input.text, new Date().toISOString(), viewer.id, viewer.name, channel(input.roomId));
    return { sendMessage: { id: `${input.roomId}:${seq}`, seq } };
  }
  if (query.includes('createRoom')) return { createRoom: { id: randomBytes(8).toString('hex') } };
  if (query.includes('addMembers')) return { addMembers: { id: variables.roomId, memberCount: (variables.userIds as unknown[]).length } };
  if (query.includes('lastMessage')) {
    const seq = Number((await redis.hget(`room:${variables.id as string}`, 'seq')) ?? 0);
    return { room: { lastMessage: seq > 0 ? { seq } : null } };
  }
  throw new Error('unknown operation');
}

function handle(req: IncomingMessage, res: ServerResponse) {
  if (req.url === '/ready') return answer(res, 200, { ready: true });
  if (req.method !== 'POST') return answer(res, 404, { errors: [{ message: 'not found' }] });
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const viewer = viewerOf(req.headers.authorization);
    if (!viewer) return answer(res, 401, { errors: [{ message: 'unauthenticated' }] });
    const { query, variables } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { query: string; variables?: Record<string, unknown> };
    operation(viewer, query, variables ?? {}).then(
      (data) => answer(res, 200, { data }),
      (err: Error) => answer(res, 500, { errors: [{ message: err.message }] }),
    );
  });
}

// Subscribers by room: the socket and the operation id of each subscription.
const rooms = new Map<string, Map<WebSocket, Set<string>>>();
subscriber.on('message', (ch: string, message: string) => {
  const subs = rooms.get(ch);
  if (!subs) return;
  const payload = `{"data":{"messageAdded":${message}}}`;
  for (const [ws, ids] of subs) for (const id of ids) ws.send(`{"id":${JSON.stringify(id)},"type":"next","payload":${payload}}`);
});

const server = createServer(handle);
const wss = new WebSocketServer({ server, path: '/graphql' });
wss.on('connection', (ws) => {
  const mine = new Map<string, string>(); // subscription id -> channel
  ws.on('message', (data) => {
    const msg = JSON.parse(String(data)) as { type: string; id?: string; payload?: Record<string, unknown> };
    if (msg.type === 'connection_init') {
      const auth = (msg.payload?.authorization ?? msg.payload?.Authorization) as string | undefined;
      if (!viewerOf(auth)) return ws.close(4403, 'Forbidden');
      ws.send('{"type":"connection_ack"}');
    } else if (msg.type === 'ping') {
      ws.send('{"type":"pong"}');
    } else if (msg.type === 'subscribe' && msg.id) {
      const roomId = (msg.payload?.variables as { roomId: string }).roomId;
      const ch = channel(roomId);
      let subs = rooms.get(ch);
      if (!subs) {
        subs = new Map();
        rooms.set(ch, subs);
        void subscriber.subscribe(ch);
      }
      const ids = subs.get(ws) ?? new Set<string>();
      ids.add(msg.id);
      subs.set(ws, ids);
      mine.set(msg.id, ch);
    } else if (msg.type === 'complete' && msg.id) {
      const ch = mine.get(msg.id);
      if (ch) rooms.get(ch)?.get(ws)?.delete(msg.id);
      mine.delete(msg.id);
    }
  });
  ws.on('close', () => {
    for (const ch of new Set(mine.values())) rooms.get(ch)?.delete(ws);
  });
});

server.listen(port, host);
const stop = () => {
  wss.close();
  server.close();
  for (const ws of wss.clients) ws.terminate();
  void Promise.allSettled([redis.quit(), subscriber.quit()]).then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
