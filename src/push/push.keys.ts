import { messageKeys } from '../messages/messages.keys.js';
import { presenceKeys } from '../presence/presence.keys.js';
import { receiptKeys } from '../receipts/receipts.keys.js';
import { roomKeys } from '../rooms/rooms.keys.js';

/** Redis keys of push deliveries (ioredis adds the global prefix; bullmq's keys live under `<prefix>bull:`). */
export const pushKeys = {
  /**
   * Stream: one entry per stored message (`m` message id, `u` sender id), written in the send's
   * pipeline and turned into deliveries by the workers' consumer group. One Redis, not Cluster.
   */
  outbox: () => 'push:outbox',
  /** Hash under the recipient's hash tag: roomId → JSON `{ e, w, j, f, t }` (see claimPush-2.lua). */
  state: (userId: string) => `user:{${userId}}:push`,
};

/** The consumer group of the outbox: every worker process reads it as one consumer. */
export const OUTBOX_GROUP = 'push';

/** The bullmq queue of deliveries, and the one dead deliveries are kept in (README § Push). */
export const PUSH_QUEUE = 'push';
export const DEAD_QUEUE = 'push-dead';

/** bullmq's `prefix` option for a deployment's key prefix: `sb:` gives `sb:bull:push:*`. */
export const queuePrefix = (redisKeyPrefix: string) => `${redisKeyPrefix}bull`;

/**
 * The delivery (job) id of a message for a recipient: deterministic, so a fan-out run twice, or by
 * two instances at once, adds one job. bullmq ids may not contain ':' nor be all digits: the
 * recipient is base64url-encoded after a '.', which neither a message id nor base64url contains.
 */
export const deliveryId = (messageId: string, recipientId: string) =>
  `${messageId}.${Buffer.from(recipientId).toString('base64url')}`;

/** The KEYS of claimPush-2, in order (the recipient's hash tag). */
export const claimPushKeys = (userId: string) => [presenceKeys.connections(userId), pushKeys.state(userId)];

/** The KEYS of pushSummary-5, in order (the room's hash tag). */
export const pushSummaryKeys = (roomId: string) => [
  roomKeys.room(roomId),
  roomKeys.members(roomId),
  messageKeys.messages(roomId),
  receiptKeys.deleted(roomId),
  receiptKeys.ownMarks(roomId),
];
