import { roomKeys } from '../rooms/rooms.keys.js';

/**
 * Redis keys of calls. A call's keys share its room's hash tag (one cluster slot); the two indexes
 * every instance sweeps (`calls:timers`, `calls:active`) are global, as `typing:rooms` is.
 */
export const callKeys = {
  /** Hash: id, startedAt, epoch, sid (LiveKit room sid), syncedAt, emptySince, rekeyAt. Exists while a call is on. */
  call: (roomId: string) => `room:{${roomId}}:call`,
  /** Hash: userId -> `<joinedAtMs>|<participant sid, '' until LiveKit saw them>|<seenAtMs>`. */
  participants: (roomId: string) => `room:{${roomId}}:call:participants`,
  /** Hash: userId -> JSON call key of the current epoch (CallKeyModel); expires with its latest key. */
  mediaKeys: (roomId: string) => `room:{${roomId}}:call:keys`,
  /** Set of LiveKit participant sids that left (a late participant_joined of one is ignored). */
  gone: (roomId: string) => `room:{${roomId}}:call:gone`,
  /** Hash: at, sid, id of the room's last ended call, kept a day (late webhooks of it are ignored). */
  ended: (roomId: string) => `room:{${roomId}}:call:ended`,
  /** String, expiring: a LiveKit webhook event of this room was applied. */
  webhookEvent: (roomId: string, eventId: string) => `room:{${roomId}}:call:event:${eventId}`,
  /** String, expiring: the room's LiveKit participant list, shared by every instance (through the cache service). */
  participantList: (roomId: string) => `room:{${roomId}}:call:lk-participants`,
  /** Sorted set: roomId -> when its call next has something due (a rotation, a departure timeout). */
  timers: () => 'calls:timers',
  /** Sorted set: roomId -> when its active call was last synced with LiveKit. */
  active: () => 'calls:active',
  /** String: a user's long-term Ed25519 identity public key (base64). */
  identity: (userId: string) => `user:{${userId}}:identity-key`,
};

/** The KEYS of applyCall-10, in order; `eventId` only for a webhook (dedupe). */
export const applyCallKeys = (roomId: string, eventId = '') => [
  roomKeys.room(roomId),
  roomKeys.members(roomId),
  callKeys.call(roomId),
  callKeys.participants(roomId),
  callKeys.mediaKeys(roomId),
  callKeys.gone(roomId),
  callKeys.ended(roomId),
  callKeys.webhookEvent(roomId, eventId),
  callKeys.timers(),
  callKeys.active(),
];

/** The KEYS of publishCallKey-4, in order. */
export const publishCallKeyKeys = (roomId: string) => [
  roomKeys.members(roomId),
  callKeys.call(roomId),
  callKeys.participants(roomId),
  callKeys.mediaKeys(roomId),
];
