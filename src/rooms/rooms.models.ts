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
  /** Seq of the oldest message still kept (retention), 1 until something was trimmed. */
  firstSeq: number;
  /** Identifies this room's message history; message ids carry it (see message-id.ts). */
  epoch: string;
}

/** A membership event, as published and as returned by `roomEvents`. */
export interface MemberEventModel {
  type: 'MemberJoined' | 'MemberLeft';
  roomId: string;
  userId: string;
  /** Who added or removed the user; absent when they acted themselves. */
  byUserId?: string | null;
}
