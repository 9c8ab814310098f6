import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';

/** Thin resolvers of push operations (admin only, checked by the service). */
export const pushResolvers: Resolvers = {
  Query: {
    deliveryStats: (_, __, ctx) => ctx.services.push.stats(requireViewer(ctx)),
    deadDeliveries: (_, { first }, ctx) => ctx.services.push.deadDeliveries(requireViewer(ctx), first ?? 20),
  },
  Mutation: {
    retryDeadDeliveries: (_, { limit }, ctx) => ctx.services.push.retryDead(requireViewer(ctx), limit ?? 100),
  },
};
