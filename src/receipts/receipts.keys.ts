import { roomKeys } from '../rooms/rooms.keys.js';

/** Redis keys of read receipts, under the room's hash tag. */
export const receiptKeys = {
  /** Sorted set: userId -> public watermark seq (what others see, what readCount counts). */
  publicMarks: (roomId: string) => `room:{${roomId}}:read`,
  /** Hash: userId -> own watermark seq (public or private, whichever is further): unread state. */
  ownMarks: (roomId: string) => `room:{${roomId}}:readOwn`,
  /** String, expiring: a receipt window of (room, user) is open; one instance owns it (see markRead). */
  window: (roomId: string, userId: string, isPrivate: boolean) =>
    `room:{${roomId}}:rcpt:${userId.length}:${userId}:${isPrivate ? 'priv' : 'pub'}`,
  /** Sorted set: seq -> seq of deleted messages, so unread counts skip them without a scan. */
  deleted: (roomId: string) => `room:{${roomId}}:deleted`,
};

/** The KEYS of markRead-6, in order. */
export const markReadKeys = (roomId: string, userId: string) => [
  roomKeys.room(roomId),
  roomKeys.members(roomId),
  receiptKeys.publicMarks(roomId),
  receiptKeys.ownMarks(roomId),
  receiptKeys.window(roomId, userId, false),
  receiptKeys.window(roomId, userId, true),
];
