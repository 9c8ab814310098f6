import { createLoaders, requireViewer, type AppContext } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';
import type { RoomEventPayload } from '../topics.js';
import type { StreamItem } from './events.service.js';

/**
 * A stream item as a subscription value: errors are thrown from `resolve`, which ends the stream
 * with that error. A subscription's context lives as long as the subscription, so each event gets
 * fresh loaders: nothing cached stays stale (a renamed user) or piles up for hours.
 */
const unwrap = (item: StreamItem, ctx: AppContext): RoomEventPayload => {
  if (item.type === 'StreamError') throw item.error;
  ctx.loaders = createLoaders(ctx.services);
  // The sender's name travels with the events they cause: no Redis read per event per instance.
  if ('senderName' in item && item.senderName !== undefined) ctx.loaders.knowUser(item.message.senderId, item.senderName);
  return item;
};

/** The `resolve` of a subscription that emits one kind of room event (typing, roomPresence…). */
export const resolveRoomEvent =
  <T extends RoomEventPayload['type']>(type: T) =>
  (item: StreamItem, _args: unknown, ctx: AppContext): RoomEventPayload & { type: T } => {
    const ev = unwrap(item, ctx);
    if (ev.type !== type) throw new Error(`unexpected ${ev.type} where ${type} was expected`);
    return ev as RoomEventPayload & { type: T };
  };

/** Subscriptions to a room's events. */
export const eventsResolvers: Resolvers = {
  Subscription: {
    messageAdded: {
      subscribe: (_, { roomId, after }, ctx) =>
        ctx.services.events.openRoomStream(requireViewer(ctx), roomId, { after, kind: 'messages', sink: ctx.eventSink }),
      resolve: (item: StreamItem, args: unknown, ctx: AppContext) => resolveRoomEvent('MessageAdded')(item, args, ctx).message,
    },
    roomEvents: {
      subscribe: (_, { roomId, after }, ctx) =>
        ctx.services.events.openRoomStream(requireViewer(ctx), roomId, { after, kind: 'all', sink: ctx.eventSink }),
      resolve: (item: StreamItem, _args: unknown, ctx: AppContext) => unwrap(item, ctx),
    },
  },
  RoomEvent: {
    __resolveType: (ev) => ev.type,
  },
};
