/** A user's live status, as the API shows it. */
export interface PresenceModel {
  status: 'ONLINE' | 'AWAY' | 'OFFLINE';
  lastSeenAt: number | null;
  connections: number;
}

/** Published on a user's channel at each real transition. */
export interface PresenceEventModel {
  userId: string;
  presence: PresenceModel;
}

/** A member started or stopped being present in a room (published on the room's channel). */
export interface PresenceChangedModel {
  type: 'PresenceChanged';
  roomId: string;
  userId: string;
  present: boolean;
}
