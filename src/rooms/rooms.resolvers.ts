import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';
import type { Connection } from '../infra/pagination.js';
import type { UserModel } from '../users/users.models.js';

/** Thin resolvers of the rooms domain. */
export const roomsResolvers: Resolvers = {
  Query: {
    room: (_, { id }, ctx) => ctx.services.rooms.get(requireViewer(ctx), id),
    rooms: (_, args, ctx) => ctx.services.rooms.listForViewer(requireViewer(ctx), args),
    publicRooms: (_, args, ctx) => ctx.services.rooms.listPublic(requireViewer(ctx), args),
  },
  Mutation: {
    createRoom: (_, { input }, ctx) => ctx.services.rooms.create(requireViewer(ctx), input),
    joinRoom: (_, { roomId }, ctx) => ctx.services.rooms.join(requireViewer(ctx), roomId),
    addMembers: (_, { roomId, userIds }, ctx) =>
      ctx.services.rooms.addMembers(requireViewer(ctx), roomId, userIds),
    removeMember: (_, { roomId, userId }, ctx) =>
      ctx.services.rooms.removeMember(requireViewer(ctx), roomId, userId),
    leaveRoom: (_, { roomId }, ctx) => ctx.services.rooms.leave(requireViewer(ctx), roomId),
  },
  Room: {
    createdAt: (room) => room.createdAt,
    lastActivityAt: (room) => room.lastActivityAt,
    owner: (room, _, ctx, info) => ctx.loaders.userFor(room.ownerId, info),
    memberCount: (room, _, ctx) => ctx.loaders.memberCount.load(room.id),
    viewerIsMember: (room, _, ctx) =>
      ctx.loaders.isMember.load({ roomId: room.id, userId: requireViewer(ctx).id }),
    members: async (room, args, ctx): Promise<Connection<UserModel>> => {
      const page = await ctx.loaders.memberPages(requireViewer(ctx).id).load({ room, args });
      const users = await ctx.loaders.users(page.edges.map((e) => e.node));
      return {
        pageInfo: page.pageInfo,
        edges: page.edges.map((e, i) => ({ cursor: e.cursor, node: users[i] as UserModel })),
      };
    },
  },
  MemberJoined: {
    user: (ev, _, ctx) => ctx.loaders.user.load(ev.userId),
    addedBy: (ev, _, ctx) => (ev.byUserId ? ctx.loaders.user.load(ev.byUserId) : null),
  },
  MemberLeft: {
    user: (ev, _, ctx) => ctx.loaders.user.load(ev.userId),
    removedBy: (ev, _, ctx) => (ev.byUserId ? ctx.loaders.user.load(ev.byUserId) : null),
  },
};
