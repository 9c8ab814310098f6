import { requireViewer } from '../context.js';
import type { Resolvers } from '../generated/resolvers-types.js';
import { callLoaders } from './calls.loaders.js';

/** Thin resolvers of calls and their media keys. */
export const callsResolvers: Resolvers = {
  Query: {
    callKeys: (_, { roomId }, ctx) => ctx.services.callKeys.list(requireViewer(ctx), roomId),
  },
  Mutation: {
    joinCall: (_, { roomId }, ctx) => ctx.services.calls.join(requireViewer(ctx), roomId),
    leaveCall: (_, { roomId }, ctx) => ctx.services.calls.leave(requireViewer(ctx), roomId),
    endCall: (_, { roomId }, ctx) => ctx.services.calls.end(requireViewer(ctx), roomId),
    registerIdentityKey: (_, { publicKey }, ctx) => ctx.services.callKeys.registerIdentityKey(requireViewer(ctx), publicKey),
    publishCallKey: (_, { roomId, input }, ctx) => ctx.services.callKeys.publish(requireViewer(ctx), roomId, input),
  },
  Room: {
    call: (room, _, ctx) => {
      requireViewer(ctx);
      return callLoaders(ctx).call.load(room.id);
    },
  },
  User: {
    identityKey: (user, _, ctx) => callLoaders(ctx).identityKey.load(user.id),
  },
  CallParticipant: {
    user: (p, _, ctx) => ctx.loaders.user.load(p.userId),
  },
  CallKey: {
    user: (key, _, ctx) => ctx.loaders.user.load(key.userId),
  },
  IdentityKeyChanged: {
    user: (ev, _, ctx) => ctx.loaders.user.load(ev.userId),
  },
};
