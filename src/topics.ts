import type { PubSub } from './infra/pubsub.js';
import type { MessageEventModel } from './messages/messages.models.js';
import type { PresenceChangedModel, PresenceEventModel } from './presence/presence.models.js';
import type { MemberEventModel } from './rooms/rooms.models.js';
import type { TypingChangedModel } from './typing/typing.models.js';
import type { ReadReceiptModel } from './receipts/receipts.models.js';
import type { PollUpdatedModel } from './polls/polls.models.js';
import type { CallEventModel } from './calls/calls.models.js';

/** Everything published on a room's channel. Features add their event models here. */
export type RoomEventPayload =
  | MessageEventModel
  | MemberEventModel
  | PresenceChangedModel
  | TypingChangedModel
  | ReadReceiptModel
  | PollUpdatedModel
  | CallEventModel;

/** The typed topic map: topic → payload; channels are `<prefix><topic>:<id>`. */
export type Topics = {
  /** Per room: every room event. */
  room: RoomEventPayload;
  /** Per user: their presence at each real transition. */
  user: PresenceEventModel;
};

/** The application's pub/sub. */
export type AppPubSub = PubSub<Topics>;
