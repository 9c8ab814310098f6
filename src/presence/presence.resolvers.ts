import { requireViewer, type AppContext } from '../context.js';
import { badInput, forbidden } from '../errors.js';
import type { Resolvers } from '../generated/resolvers-types.js';
import { checkedId } from '../infra/text.js';
import { resolveRoomEvent } from '../events/events.resolvers.js';
import { openPresenceStream } from './presence.service.js';
import type { PresenceEventModel } from './presence.models.js';

const MAX_FOLLOWED = 100;

/** Thin resolvers of presence. */
export const presenceResolvers: Resolvers = {
  User: {
    presence: (user, _, ctx) => user.presence ?? ctx.loaders.presence.load(user.id),
  },
  Room: {
    onlineMembers: async (room, _, ctx) =>
      ctx.loaders.users(await ctx.loaders.onlineMemberIds(requireViewer(ctx).id).load(room.id)),
    onlineCount: async (room, _, ctx) => {
      const member = await ctx.loaders.isMember.load({ roomId: room.id, userId: requireViewer(ctx).id });
      if (!member) throw forbidden('Room presence is for members only');
      return ctx.loaders.onlineCount.load(room.id);
    },
  },
  PresenceChanged: {
    user: (ev, _, ctx) => ctx.loaders.user.load(ev.userId),
  },
  Mutation: {
    setPresence: (_, { status }, ctx) => ctx.services.presence.setStatus(requireViewer(ctx), status),
  },
  Subscription: {
    presence: {
      subscribe: (_, { userIds }, ctx) => {
        requireViewer(ctx);
        if (userIds.length === 0 || userIds.length > MAX_FOLLOWED) {
          throw badInput('userIds', `userIds must hold 1..${MAX_FOLLOWED} ids`);
        }
        return openPresenceStream(ctx.services.pubsub, userIds.map((id) => checkedId('userIds', id)));
      },
      resolve: async (ev: PresenceEventModel, _args: unknown, ctx: AppContext) => {
        const user = await ctx.services.users.getMany([ev.userId]);
        return { ...(user[0] ?? { id: ev.userId, name: ev.userId, createdAt: 0 }), presence: ev.presence };
      },
    },
    roomPresence: {
      subscribe: (_, { roomId }, ctx) =>
        ctx.services.events.openRoomStream(requireViewer(ctx), roomId, { kind: 'presence', sink: ctx.eventSink }),
      resolve: resolveRoomEvent('PresenceChanged'),
    },
  },
};
