/** A stored message (JSON in the room's message hash, field = seq). */
export interface MessageModel {
  roomId: string;
  seq: number;
  senderId: string;
  text: string;
  clientId: string | null;
  createdAt: number;
  editedAt: number | null;
  deleted: boolean;
}

/** A message event, as published and as returned by `roomEvents`. */
export interface MessageEventModel {
  type: 'MessageAdded' | 'MessageEdited' | 'MessageDeleted';
  message: MessageModel;
}
