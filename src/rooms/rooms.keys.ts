/** Redis keys of the rooms domain. Room keys share the `{roomId}` hash tag (one cluster slot). */
export const roomKeys = {
  /** Hash: id, name, visibility, ownerId, createdAt, lastActivityAt, seq. */
  room: (roomId: string) => `room:{${roomId}}`,
  /** Sorted set of member ids, all with score 0 (ordered by id, for cursor pagination). */
  members: (roomId: string) => `room:{${roomId}}:members`,
  /** Sorted set, score 0, members `<lowercased name>\0<roomId>`: public directory by name prefix. */
  publicDirectory: () => 'rooms:public',
};
