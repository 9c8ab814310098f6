/** Redis keys of the users domain (ioredis adds the global prefix). */
export const userKeys = {
  /** Hash: name, createdAt. */
  user: (userId: string) => `user:{${userId}}`,
  /** Set of room ids the user is a member of (an index; the room's member set is the truth). */
  rooms: (userId: string) => `user:{${userId}}:rooms`,
};
