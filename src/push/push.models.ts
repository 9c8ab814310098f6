/** The data of a delivery job (bullmq stores it as JSON). */
export interface DeliveryData {
  /** The message whose arrival made the job. */
  messageId: string;
  recipientId: string;
  /**
   * The messages this job pushes (after `from` up to `to`, in history `epoch`), saved once it has
   * claimed them, so that a retry, or a retry from the dead letters, sends the same push.
   */
  claim?: { from: number; to: number; epoch: string };
}

/** A dead delivery: its job's data and why it died. */
export interface DeadDeliveryData extends DeliveryData {
  /** The last error (e.g. `webhook answered HTTP 400: …`). */
  error: string;
  attempts: number;
  /** When it was dead-lettered, epoch milliseconds. */
  failedAt: number;
}

/** What a delivery job ends with (its bullmq return value). */
export type DeliveryResult =
  | { status: 'delivered'; messageCount: number }
  | {
      status: 'skipped';
      /**
       * online: a live connection; covered: an earlier push of the burst took the message; read:
       * read (or deleted) before the push; left: no longer a member; gone: the room or its history is gone.
       */
      reason: 'online' | 'covered' | 'read' | 'left' | 'gone';
    };

/** The JSON body POSTed to PUSH_WEBHOOK_URL (README § Push lists every field). */
export interface PushPayload {
  /** The delivery id, also sent as `Idempotency-Key`: the same on every retry. */
  id: string;
  recipientId: string;
  room: { id: string; name: string };
  /** The latest message the push covers. */
  messageId: string;
  /** How many unread messages of the room the push covers (several within the collapse window make one push). */
  messageCount: number;
  /** The sender of the latest message. */
  sender: { id: string; name: string };
  /** The latest message's text, at most PREVIEW_CHARS characters. */
  preview: string;
  /** One line for the notification: `Alice in #general` or `3 new messages in #general`. */
  title: string;
  /** The recipient's unread messages in all their rooms: the badge. */
  unreadCount: number;
  /** Their unread messages in this room. */
  roomUnreadCount: number;
  /** When the latest message was sent (ISO-8601). */
  sentAt: string;
}

/** `deliveryStats`: the push queue's counts. */
export interface DeliveryStatsModel {
  queue: string;
  outbox: number;
  waiting: number;
  active: number;
  delayed: number;
  failed: number;
  dead: number;
}

/** One dead-lettered delivery, as `deadDeliveries` lists it. */
export interface DeadDeliveryModel {
  id: string;
  recipientId: string;
  messageId: string;
  roomId: string;
  error: string;
  attempts: number;
  failedAt: number;
}
