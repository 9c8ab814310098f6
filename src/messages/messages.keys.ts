/** Redis keys of the messages domain, under the room's hash tag. */
export const messageKeys = {
  /** Hash: seq → message JSON. The room hash's `seq` field is the latest seq. */
  messages: (roomId: string) => `room:{${roomId}}:messages`,
  /** String: seq of the message first sent with this clientId; expires after 24 h. */
  dedupe: (roomId: string, userId: string, clientId: string) =>
    `room:{${roomId}}:dedupe:${userId.length}:${userId}:${clientId}`,
};
