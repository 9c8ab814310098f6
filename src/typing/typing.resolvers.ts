import { requireViewer } from '../context.js';
import { resolveRoomEvent } from '../events/events.resolvers.js';
import type { Resolvers } from '../generated/resolvers-types.js';

/** Thin resolvers of typing. */
export const typingResolvers: Resolvers = {
  Room: {
    typing: async (room, _, ctx) => {
      const ids = await ctx.services.typing.userIds(requireViewer(ctx), room.id);
      const users = await ctx.loaders.user.loadMany(ids);
      return users.map((u) => {
        if (u instanceof Error) throw u;
        return u;
      });
    },
  },
  TypingChanged: {
    users: async (ev, _, ctx) =>
      (await ctx.loaders.user.loadMany(ev.userIds)).map((u) => {
        if (u instanceof Error) throw u;
        return u;
      }),
  },
  Mutation: {
    setTyping: (_, { roomId, typing }, ctx) => ctx.services.typing.set(requireViewer(ctx), roomId, typing),
  },
  Subscription: {
    typing: {
      subscribe: (_, { roomId }, ctx) => ctx.services.events.openRoomStream(requireViewer(ctx), roomId, { kind: 'typing' }),
      resolve: resolveRoomEvent('TypingChanged'),
    },
  },
};
