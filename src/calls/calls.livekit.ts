import { AccessToken, ParticipantInfo_State, RoomServiceClient, WebhookReceiver, type WebhookEvent } from 'livekit-server-sdk';
import type { LiveKitConfig } from '../config.js';
import { AppError } from '../errors.js';

/** A participant LiveKit lists in a room (standard participants only: no agents, egress, SIP). */
export interface LiveKitParticipant {
  identity: string;
  sid: string;
  /** ms (0 when LiveKit did not say). */
  joinedAt: number;
}

/** What the calls domain needs of LiveKit. */
export interface LiveKit {
  /** The URL clients connect to. */
  readonly url: string;
  /** An access token to join (publish, subscribe) room `room` as `identity`. */
  token(opts: { identity: string; name: string; room: string; ttlSeconds: number }): Promise<string>;
  /** Connected standard participants of a room ([] when LiveKit has no such room). */
  listParticipants(room: string): Promise<LiveKitParticipant[]>;
  /** Disconnects a participant; one that is not there is fine. */
  removeParticipant(room: string, identity: string): Promise<void>;
  /** Ends a LiveKit room for everyone; one that is not there is fine. */
  deleteRoom(room: string): Promise<void>;
  /** Verifies a webhook (the raw body against the JWT's sha256 claim) and parses it; throws when bad. */
  receiveWebhook(rawBody: string, authorization: string | undefined): Promise<WebhookEvent>;
}

/** `ParticipantInfo_Kind.STANDARD` (the SDK does not re-export the enum): a person, not an agent, egress or SIP. */
export const STANDARD_PARTICIPANT = 0;

/** The LiveKit client, or `NOT_CONFIGURED` when the server has no LiveKit settings. */
export function requireLiveKit(livekit: LiveKit | null): LiveKit {
  if (!livekit) {
    throw new AppError('NOT_CONFIGURED', 'Calls are not configured on this server (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)');
  }
  return livekit;
}

/** LiveKit answers `not_found` (Twirp) for a room or participant it does not have. */
const isNotFound = (err: unknown) => (err as { code?: unknown } | null)?.code === 'not_found';

/** int64 fields come back as BigInt (LIBRARIES.md). */
export const toMs = (value: bigint | number | undefined, unitMs = 1) => Number(value ?? 0) * unitMs;

/** Creates the LiveKit client of one instance from its settings. */
export function createLiveKit(config: LiveKitConfig): LiveKit {
  const rooms = new RoomServiceClient(config.url, config.apiKey, config.apiSecret, {
    requestTimeout: config.requestTimeoutMs / 1000,
  });
  const receiver = new WebhookReceiver(config.apiKey, config.apiSecret);
  const ignoreNotFound = (err: unknown) => {
    if (!isNotFound(err)) throw err;
  };
  return {
    url: config.url,
    async token({ identity, name, room, ttlSeconds }) {
      const token = new AccessToken(config.apiKey, config.apiSecret, { identity, name, ttl: ttlSeconds });
      token.addGrant({ room, roomJoin: true, canPublish: true, canSubscribe: true, canPublishData: true });
      return token.toJwt();
    },
    async listParticipants(room) {
      const list = await rooms.listParticipants(room).catch((err: unknown) => {
        ignoreNotFound(err);
        return [];
      });
      return list
        .filter((p) => (p.kind as number) === STANDARD_PARTICIPANT && p.state !== ParticipantInfo_State.DISCONNECTED)
        .map((p) => ({
          identity: p.identity,
          sid: p.sid,
          joinedAt: p.joinedAtMs ? toMs(p.joinedAtMs) : toMs(p.joinedAt, 1000),
        }));
    },
    removeParticipant: (room, identity) => rooms.removeParticipant(room, identity).catch(ignoreNotFound),
    deleteRoom: (room) => rooms.deleteRoom(room).catch(ignoreNotFound),
    receiveWebhook: (rawBody, authorization) => receiver.receive(rawBody, authorization),
  };
}
