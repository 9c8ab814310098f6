import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';

/** Thin resolvers of search. */
export const searchResolvers: Resolvers = {
  Query: {
    searchMessages: (_, args, ctx) => ctx.services.search.search(requireViewer(ctx), args),
  },
};
