import type { PubSub } from './infra/pubsub.js';
import type { MessageEventModel } from './messages/messages.models.js';
import type { MemberEventModel } from './rooms/rooms.models.js';

/** Everything published on a room's channel. Features add their event models here. */
export type RoomEventPayload = MessageEventModel | MemberEventModel;

/** The typed topic map: topic → payload; channels are `<prefix><topic>:<id>`. */
export type Topics = {
  room: RoomEventPayload;
};

/** The application's pub/sub. */
export type AppPubSub = PubSub<Topics>;
