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

/**
 * A message being sent, as the hooks of its send see it (services.ts): what is known before the
 * send script runs. What depends on the seq it assigns is queued as placeholders (`SENT` in
 * infra/deferred-commands.ts) that the script fills in.
 */
export interface SendingMessage {
  roomId: string;
  senderId: string;
  /** Trimmed and checked. */
  text: string;
  createdAt: number;
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
