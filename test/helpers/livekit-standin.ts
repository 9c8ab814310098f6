import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AccessToken, ParticipantInfo, ParticipantInfo_State, Room, TokenVerifier, WebhookEvent } from 'livekit-server-sdk';

/**
 * A small stand-in for a LiveKit server (none can be installed here): its RoomService over Twirp
 * JSON (`POST /twirp/livekit.RoomService/<Method>`, Bearer JWT checked with the SDK's
 * TokenVerifier and its grants, errors as LiveKit's `{"code","msg"}` with content-type exactly
 * `application/json`), the room and participant state behind it, and webhooks signed as LiveKit
 * signs them (a JWT whose sha256 claim is the base64 SHA-256 of the body).
 */
export interface LiveKitStandin {
  /** http://127.0.0.1:<port>: what LIVEKIT_URL points at. */
  url: string;
  apiKey: string;
  apiSecret: string;
  /** LIVEKIT_* settings for a Switchboard instance using this stand-in. */
  env: Record<string, string>;
  /** Every RoomService request received, in order. */
  requests: { method: string; room: string; identity?: string }[];
  /** Where webhooks go (a Switchboard instance's /webhooks/livekit); unset: none are sent. */
  webhookUrl: string | null;
  /** While true, RoomService answers 503. */
  down: boolean;
  /** Each RoomService answer waits this long first. */
  delayMs: number;
  /** Connects `identity` to `room` (starting the room if needed); sends room_started/participant_joined. */
  connect(room: string, identity: string, opts?: { webhooks?: boolean }): Promise<{ sid: string; roomSid: string }>;
  /** Disconnects `identity`; sends participant_left. */
  disconnect(room: string, identity: string, opts?: { webhooks?: boolean }): Promise<void>;
  /** Identities LiveKit has in `room`. */
  identities(room: string): string[];
  /** The sid of a LiveKit room, if it is open. */
  roomSid(room: string): string | undefined;
  /** A webhook event as LiveKit would send it (id and createdAt filled in unless given). */
  event(
    event: string,
    room: string,
    opts?: { roomSid?: string; identity?: string; participantSid?: string; id?: string; createdAtSeconds?: number },
  ): WebhookEvent;
  /** Posts a webhook to `webhookUrl` (or `url`), signed with the stand-in's key unless told otherwise. */
  send(
    event: WebhookEvent,
    opts?: { secret?: string; tamper?: boolean; authorization?: string | null; url?: string },
  ): Promise<{ status: number; body: unknown }>;
  /** The `Authorization` value LiveKit would send with `body` (a JWT whose sha256 claim is the body's). */
  sign(body: string, secret?: string): Promise<string>;
  close(): Promise<void>;
}

interface StandinParticipant {
  identity: string;
  sid: string;
  joinedAtMs: number;
}

const sha256Base64 = (body: string) => createHash('sha256').update(body).digest('base64');
const sid = (prefix: string) => `${prefix}_${randomBytes(6).toString('hex')}`;

/** Starts a stand-in on a free loopback port. */
export async function startLiveKitStandin(): Promise<LiveKitStandin> {
  const apiKey = `APIkey${randomBytes(4).toString('hex')}`;
  const apiSecret = randomBytes(24).toString('base64url');
  const verifier = new TokenVerifier(apiKey, apiSecret);
  const rooms = new Map<string, { sid: string; participants: Map<string, StandinParticipant> }>();

  const twirpError = (res: ServerResponse, status: number, code: string, msg: string) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ code, msg }));
  };
  const readBody = (req: IncomingMessage) =>
    new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });

  async function sign(body: string, secret = apiSecret) {
    const token = new AccessToken(apiKey, secret, { ttl: '5m' });
    token.sha256 = sha256Base64(body);
    return token.toJwt();
  }

  async function post(event: WebhookEvent, opts: Parameters<LiveKitStandin['send']>[1] = {}) {
    const url = opts.url ?? standin.webhookUrl;
    if (!url) throw new Error('the stand-in has no webhookUrl');
    const body = event.toJsonString();
    const authorization = opts.authorization === undefined ? await sign(body, opts.secret) : opts.authorization;
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/webhook+json', ...(authorization === null ? {} : { authorization }) },
      // Tampering changes the body after signing, as an attacker on the way would.
      body: opts.tamper ? body.replace(/"identity":"/, '"identity":"x') : body,
      signal: AbortSignal.timeout(5000),
    });
    // The endpoint answers JSON whatever the outcome.
    return { status: res.status, body: (await res.json()) as unknown };
  }

  const info = (p: StandinParticipant) =>
    new ParticipantInfo({
      identity: p.identity,
      sid: p.sid,
      name: p.identity,
      state: ParticipantInfo_State.ACTIVE,
      joinedAt: BigInt(Math.floor(p.joinedAtMs / 1000)),
      joinedAtMs: BigInt(p.joinedAtMs),
    });

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const body = await readBody(req);
    const match = /^\/twirp\/livekit\.RoomService\/(\w+)$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !match) return twirpError(res, 404, 'bad_route', `no route ${req.method} ${req.url}`);
    const method = match[1] as string;
    const data = JSON.parse(body || '{}') as { room?: string; identity?: string };
    const room = data.room ?? '';
    standin.requests.push({ method, room, ...(data.identity ? { identity: data.identity } : {}) });
    if (standin.delayMs > 0) await new Promise((r) => setTimeout(r, standin.delayMs));
    if (standin.down) return twirpError(res, 503, 'unavailable', 'stand-in is down');
    let grants;
    try {
      grants = await verifier.verify((req.headers.authorization ?? '').replace(/^Bearer /, ''));
    } catch (err) {
      return twirpError(res, 401, 'unauthenticated', (err as Error).message);
    }
    const video = grants.video ?? {};
    const adminOf = video.roomAdmin === true && video.room === room;
    const ok = (payload: unknown) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(payload));
    };
    const open = rooms.get(room);
    switch (method) {
      case 'ListParticipants':
        if (!adminOf) return twirpError(res, 403, 'permission_denied', 'roomAdmin grant for this room needed');
        if (!open) return twirpError(res, 404, 'not_found', 'requested room does not exist');
        return ok({ participants: [...open.participants.values()].map((p) => info(p).toJson()) });
      case 'RemoveParticipant':
        if (!adminOf) return twirpError(res, 403, 'permission_denied', 'roomAdmin grant for this room needed');
        if (!open?.participants.has(data.identity ?? '')) return twirpError(res, 404, 'not_found', 'participant not found');
        ok({});
        return standin.disconnect(room, data.identity ?? '', { webhooks: Boolean(standin.webhookUrl) });
      case 'DeleteRoom':
        if (video.roomCreate !== true) return twirpError(res, 403, 'permission_denied', 'roomCreate grant needed');
        if (!open) return twirpError(res, 404, 'not_found', 'room not found');
        ok({});
        rooms.delete(room);
        if (standin.webhookUrl) await post(standin.event('room_finished', room, { roomSid: open.sid })).catch(() => undefined);
        return;
      default:
        return twirpError(res, 404, 'bad_route', `unknown method ${method}`);
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      if (!res.headersSent) twirpError(res, 500, 'internal', err.message);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const standin: LiveKitStandin = {
    url,
    apiKey,
    apiSecret,
    env: { LIVEKIT_URL: url, LIVEKIT_API_KEY: apiKey, LIVEKIT_API_SECRET: apiSecret },
    requests: [],
    webhookUrl: null,
    down: false,
    delayMs: 0,
    async connect(room, identity, opts = {}) {
      let open = rooms.get(room);
      const started = !open;
      if (!open) {
        open = { sid: sid('RM'), participants: new Map() };
        rooms.set(room, open);
      }
      const p = { identity, sid: sid('PA'), joinedAtMs: Date.now() };
      open.participants.set(identity, p);
      if (opts.webhooks ?? Boolean(standin.webhookUrl)) {
        if (started) await post(standin.event('room_started', room, { roomSid: open.sid }));
        await post(standin.event('participant_joined', room, { roomSid: open.sid, identity, participantSid: p.sid }));
      }
      return { sid: p.sid, roomSid: open.sid };
    },
    async disconnect(room, identity, opts = {}) {
      const open = rooms.get(room);
      const p = open?.participants.get(identity);
      if (!open || !p) return;
      open.participants.delete(identity);
      if (opts.webhooks ?? Boolean(standin.webhookUrl)) {
        await post(standin.event('participant_left', room, { roomSid: open.sid, identity, participantSid: p.sid }));
      }
    },
    identities: (room) => [...(rooms.get(room)?.participants.keys() ?? [])].sort(),
    roomSid: (room) => rooms.get(room)?.sid,
    event(event, room, opts = {}) {
      const open = rooms.get(room);
      const participant = opts.identity
        ? open?.participants.get(opts.identity) ??
          ({ identity: opts.identity, sid: opts.participantSid ?? sid('PA'), joinedAtMs: Date.now() } as StandinParticipant)
        : null;
      const webhook = new WebhookEvent({
        id: opts.id ?? sid('EV'),
        createdAt: BigInt(opts.createdAtSeconds ?? Math.floor(Date.now() / 1000)),
        room: new Room({ name: room, sid: opts.roomSid ?? open?.sid ?? sid('RM') }),
        ...(participant ? { participant: info({ ...participant, sid: opts.participantSid ?? participant.sid }) } : {}),
      });
      // The SDK's WebhookEvent resets `event` after its constructor ran: set it afterwards.
      webhook.event = event as WebhookEvent['event'];
      return webhook;
    },
    send: (event, opts) => post(event, opts),
    sign,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return standin;
}
