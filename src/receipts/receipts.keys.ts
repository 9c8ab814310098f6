/** Redis keys of read receipts, under the room's hash tag. */
export const receiptKeys = {
  /** Sorted set: userId -> public watermark seq (what others see, what readCount counts). */
  publicMarks: (roomId: string) => `room:{${roomId}}:read`,
  /** Hash: userId -> own watermark seq (public or private, whichever is further): unread state. */
  ownMarks: (roomId: string) => `room:{${roomId}}:readOwn`,
  /** Sorted set: seq -> seq of deleted messages, so unread counts skip them without a scan. */
  deleted: (roomId: string) => `room:{${roomId}}:deleted`,
};
