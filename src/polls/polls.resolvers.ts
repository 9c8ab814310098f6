import { requireViewer, type AppContext } from '../context.js';
import type { StreamItem } from '../events/events.service.js';
import { resolveRoomEvent } from '../events/events.resolvers.js';
import type { Resolvers } from '../generated/resolvers-types.js';
import { pageSize } from '../infra/pagination.js';
import { decodePollId, encodeOptionId } from './poll-id.js';

/** Thin resolvers of polls. */
export const pollsResolvers: Resolvers = {
  Query: {
    poll: (_, { id }, ctx) => ctx.services.polls.get(requireViewer(ctx), id),
  },
  Mutation: {
    createPoll: (_, { input }, ctx) => ctx.services.polls.create(requireViewer(ctx), input),
    vote: async (_, { pollId, optionIds }, ctx) => {
      const viewer = requireViewer(ctx);
      const { poll, viewerVote } = await ctx.services.polls.vote(viewer, pollId, optionIds);
      // The answer carries the vote just made: Poll.viewerVote needs no read.
      ctx.loaders.pollVotes(viewer.id).prime(poll, viewerVote);
      return poll;
    },
    closePoll: (_, { pollId }, ctx) => ctx.services.polls.close(requireViewer(ctx), pollId),
  },
  Subscription: {
    pollUpdated: {
      subscribe: (_, { pollId }, ctx) => ctx.services.polls.openPollStream(requireViewer(ctx), pollId, ctx.eventSink),
      resolve: (item: StreamItem, args: unknown, ctx: AppContext) => resolveRoomEvent('PollUpdated')(item, args, ctx).poll,
    },
  },
  Room: {
    polls: (room, args, ctx) => ctx.services.polls.list(requireViewer(ctx), room.id, args),
  },
  Poll: {
    options: (poll) => poll.options.map((_, index) => ({ poll, index })),
    closesAt: (poll) => poll.closesAt,
    closedAt: (poll) => poll.closedAt,
    createdAt: (poll) => poll.createdAt,
    createdBy: (poll, _, ctx) => ctx.loaders.user.load(poll.creatorId),
    viewerVote: async (poll, _, ctx) => {
      const indexes = await ctx.loaders.pollVotes(requireViewer(ctx).id).load(poll);
      const ref = decodePollId('pollId', poll.id);
      return indexes.map((i) => encodeOptionId(ref, i));
    },
  },
  PollOption: {
    id: ({ poll, index }) => encodeOptionId(decodePollId('pollId', poll.id), index),
    text: ({ poll, index }) => poll.options[index] ?? '',
    votes: ({ poll, index }) => poll.votes[index] ?? 0,
    voters: async ({ poll, index }, { first }, ctx) => {
      const ids = await ctx.loaders.pollVoters.load({ poll, index, first: pageSize('first', first, 20) });
      return (await ctx.loaders.user.loadMany(ids)).map((u) => {
        if (u instanceof Error) throw u;
        return u;
      });
    },
  },
};
