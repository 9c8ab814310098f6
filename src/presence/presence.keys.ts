/** Redis keys of presence. Per-user keys share the user's hash tag; instance keys the instance's. */
export const presenceKeys = {
  /** Sorted set: instanceId -> last heartbeat (ms). An instance missing heartbeats is reaped. */
  instances: () => 'presence:instances',
  /** Hash: connectionId -> userId, the live connections of one instance. */
  instanceConnections: (instanceId: string) => `presence:instance:{${instanceId}}:conns`,
  /** Hash: `<roomId>\n<userId>` -> subscriptions this instance holds there. */
  instanceRooms: (instanceId: string) => `presence:instance:{${instanceId}}:rooms`,
  /** Set of the user's live connection ids, on every instance. */
  connections: (userId: string) => `user:{${userId}}:conns`,
  /** Hash: state (ONLINE/OFFLINE), away ('1' or ''), lastSeenAt (ms). */
  presence: (userId: string) => `user:{${userId}}:presence`,
  /** Sorted set: userId -> when their grace period ends (ms); they go OFFLINE then if still unconnected. */
  grace: () => 'presence:grace',
  /** Hash: userId -> subscriptions holding the room, across instances (room presence). */
  roomPresent: (roomId: string) => `room:{${roomId}}:present`,
};
