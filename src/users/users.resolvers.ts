import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';

/** Thin resolvers of the users domain. */
export const usersResolvers: Resolvers = {
  Query: {
    me: (_, __, ctx, info) => ctx.loaders.userFor(requireViewer(ctx).id, info),
    user: async (_, { id }, ctx) => {
      requireViewer(ctx);
      const [user] = await ctx.services.users.getMany([id]);
      return user ?? null;
    },
  },
};
