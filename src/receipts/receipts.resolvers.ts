import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';
import { pageSize } from '../infra/pagination.js';
import { encodeMessageId } from '../messages/message-id.js';

/** Thin resolvers of read receipts. */
export const receiptsResolvers: Resolvers = {
  Room: {
    unreadCount: async (room, _, ctx) => (await ctx.loaders.unread(requireViewer(ctx).id).load(room.id)).unread,
    lastReadMessageId: async (room, _, ctx) => {
      const { ownSeq } = await ctx.loaders.unread(requireViewer(ctx).id).load(room.id);
      return ownSeq > 0 ? encodeMessageId(room.id, ownSeq, room.epoch) : null;
    },
  },
  Message: {
    readCount: (m, _, ctx) => ctx.loaders.readCount.load(m),
    readBy: async (m, { first }, ctx) =>
      ctx.loaders.users(await ctx.loaders.readBy.load({ message: m, first: pageSize('first', first, 20) })),
  },
  ReadReceipt: {
    user: (ev, _, ctx) => ctx.loaders.user.load(ev.userId),
    messageId: (ev) => encodeMessageId(ev.roomId, ev.seq, ev.epoch),
  },
  Mutation: {
    markRead: (_, args, ctx) => ctx.services.receipts.markRead(requireViewer(ctx), args.roomId, args.messageId, args.private ?? false),
  },
};
