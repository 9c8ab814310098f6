import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';
import { encodeMessageId } from './message-id.js';

/** Thin resolvers of the messages domain. */
export const messagesResolvers: Resolvers = {
  Query: {
    messages: (_, { roomId, ...args }, ctx) =>
      ctx.services.messages.history(requireViewer(ctx), roomId, args),
  },
  Mutation: {
    sendMessage: (_, { input }, ctx) => ctx.services.messages.send(requireViewer(ctx), input),
    editMessage: (_, { messageId, text }, ctx) =>
      ctx.services.messages.edit(requireViewer(ctx), messageId, text),
    deleteMessage: (_, { messageId }, ctx) =>
      ctx.services.messages.delete(requireViewer(ctx), messageId),
  },
  Room: {
    messages: (room, args, ctx) => ctx.loaders.history(requireViewer(ctx).id).load({ roomId: room.id, args }),
    lastMessage: (room, _, ctx) =>
      room.lastSeq > 0 ? ctx.loaders.message.load({ roomId: room.id, seq: room.lastSeq }) : null,
  },
  Message: {
    id: (m) => encodeMessageId(m.roomId, m.seq, m.epoch),
    sender: (m, _, ctx, info) => ctx.loaders.userFor(m.senderId, info),
    createdAt: (m) => m.createdAt,
    editedAt: (m) => m.editedAt,
  },
};
