import { requireViewer } from '../context.js';
import { resolveRoomEvent } from '../events/events.resolvers.js';
import type { Resolvers } from '../generated/resolvers-types.js';

/** Thin resolvers of typing. */
export const typingResolvers: Resolvers = {
  Room: {
    typing: async (room, _, ctx) => ctx.loaders.users(await ctx.loaders.typingIds(requireViewer(ctx).id).load(room.id)),
  },
  TypingChanged: {
    users: (ev, _, ctx) => ctx.loaders.users(ev.userIds),
  },
  Mutation: {
    setTyping: (_, { roomId, typing }, ctx) => ctx.services.typing.set(requireViewer(ctx), roomId, typing),
  },
  Subscription: {
    typing: {
      subscribe: (_, { roomId }, ctx) => ctx.services.events.openRoomStream(requireViewer(ctx), roomId, { kind: 'typing', sink: ctx.eventSink }),
      resolve: resolveRoomEvent('TypingChanged'),
    },
  },
};
