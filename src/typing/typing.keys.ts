/** Redis keys of typing. */
export const typingKeys = {
  /** Sorted set: userId -> when their typing expires (ms). */
  typing: (roomId: string) => `room:{${roomId}}:typing`,
  /** Sorted set: roomId -> its earliest typing expiry (ms), so expiry is found without a scan. */
  rooms: () => 'typing:rooms',
};
