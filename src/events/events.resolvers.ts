import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';
import type { RoomEventPayload } from '../topics.js';
import type { StreamItem } from './events.service.js';

/** A stream item as a subscription value: errors are thrown from `resolve`, which ends the stream with that error. */
const unwrap = (item: StreamItem): RoomEventPayload => {
  if (item.type === 'StreamError') throw item.error;
  return item;
};

/** Subscriptions to a room's events. */
export const eventsResolvers: Resolvers = {
  Subscription: {
    messageAdded: {
      subscribe: (_, { roomId, after }, ctx) =>
        ctx.services.events.openRoomStream(requireViewer(ctx), roomId, { after, kind: 'messages' }),
      resolve: (item: StreamItem) => {
        const ev = unwrap(item);
        if (ev.type !== 'MessageAdded') throw new Error(`unexpected ${ev.type} on messageAdded`);
        return ev.message;
      },
    },
    roomEvents: {
      subscribe: (_, { roomId, after }, ctx) =>
        ctx.services.events.openRoomStream(requireViewer(ctx), roomId, { after, kind: 'all' }),
      resolve: (item: StreamItem) => unwrap(item),
    },
  },
  RoomEvent: {
    __resolveType: (ev) => ev.type,
  },
};
