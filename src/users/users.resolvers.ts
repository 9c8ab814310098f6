import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';

/** Thin resolvers of the users domain. */
export const usersResolvers: Resolvers = {
  Query: {
    me: (_, __, ctx) => ctx.loaders.user.load(requireViewer(ctx).id),
    user: async (_, { id }, ctx) => {
      requireViewer(ctx);
      const [user] = await ctx.services.users.getMany([id]);
      return user ?? null;
    },
  },
};
