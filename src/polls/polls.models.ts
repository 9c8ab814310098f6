/**
 * A stored poll, as the API reads it and as PollUpdated carries it: nothing in it depends on who
 * reads it, and it names no voter (`voters` and `viewerVote` are read apart).
 */
export interface PollModel {
  id: string;
  roomId: string;
  creatorId: string;
  question: string;
  /** Option texts, in order; an option's index is its place here. */
  options: string[];
  /** Votes per option, same order. */
  votes: number[];
  totalVoters: number;
  multipleChoice: boolean;
  anonymous: boolean;
  /** Closed by hand or by the sweep, or its closesAt has passed (votes are refused from then on). */
  closed: boolean;
  closesAt: number | null;
  closedAt: number | null;
  createdAt: number;
  /** Bumped by every change (vote, close): of two snapshots, the higher version is the newer. */
  version: number;
}

/** One option of a poll (the API's PollOption). */
export interface PollOptionModel {
  poll: PollModel;
  index: number;
}

/** A poll was created, voted on (coalesced) or closed: published on its room's channel. */
export interface PollUpdatedModel {
  type: 'PollUpdated';
  roomId: string;
  poll: PollModel;
}
