/** A stored message (JSON in the room's message hash, field = seq). */
export interface MessageModel {
  roomId: string;
  /** The room's history epoch when the message was stored (part of its id). */
  epoch: string;
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
  /**
   * The sender's name when the sender caused the event (their token's name, which their request
   * has just stored): instances that deliver it resolve `sender { name }` without reading Redis.
   */
  senderName?: string;
}
