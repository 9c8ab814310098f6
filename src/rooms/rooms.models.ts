/** Who can see and join a room. */
export type Visibility = 'PUBLIC' | 'PRIVATE';

/** A stored room. */
export interface RoomModel {
  id: string;
  name: string;
  visibility: Visibility;
  ownerId: string;
  createdAt: number;
  lastActivityAt: number;
  /** Seq of the latest message, 0 if none. */
  lastSeq: number;
}

/** A membership event, as published and as returned by `roomEvents`. */
export interface MemberEventModel {
  type: 'MemberJoined' | 'MemberLeft';
  roomId: string;
  userId: string;
  /** Who added or removed the user; absent when they acted themselves. */
  byUserId?: string | null;
}
