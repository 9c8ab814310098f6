import { roomKeys } from '../rooms/rooms.keys.js';

/** Redis keys of polls: a poll's keys share its room's hash tag (one cluster slot). */
export const pollKeys = {
  /**
   * Hash: id, roomId, creatorId, question, options (JSON array of texts), optionCount, multiple,
   * anonymous, closed, closesAt ('' when none), createdAt, closedAt, voters (how many have a vote),
   * version (bumped by every change), and `v:<i>` (votes of option i, 0-based).
   */
  poll: (roomId: string, localId: string) => `room:{${roomId}}:poll:${localId}`,
  /** Hash: userId -> the option indexes they voted for, comma-separated: what counts are recounted from. */
  votes: (roomId: string, localId: string) => `room:{${roomId}}:poll:${localId}:votes`,
  /** Sorted set: score option index, member `<index>:<userId>` (who chose what); never written for anonymous polls. */
  voters: (roomId: string, localId: string) => `room:{${roomId}}:poll:${localId}:voters`,
  /** String, expiring: a PollUpdated coalescing window of the poll is open; one instance owns it (see vote). */
  window: (roomId: string, localId: string) => `room:{${roomId}}:poll:${localId}:window`,
  /** Sorted set, all scores 0, of poll local ids (time-ordered strings): the room's polls, newest last. */
  roomPolls: (roomId: string) => `room:{${roomId}}:polls`,
  /** Sorted set: poll id -> closesAt (ms) of open polls with a closing time, swept by every instance. */
  closing: () => 'polls:closing',
};

/** A poll's place: its room and its id within the room. */
export interface PollRef {
  roomId: string;
  localId: string;
}

/** The KEYS of createPoll-5, in order. */
export const createPollKeys = ({ roomId, localId }: PollRef) => [
  roomKeys.room(roomId),
  roomKeys.members(roomId),
  pollKeys.poll(roomId, localId),
  pollKeys.roomPolls(roomId),
  pollKeys.closing(),
];

/** The KEYS of vote-5, in order. */
export const voteKeys = ({ roomId, localId }: PollRef) => [
  pollKeys.poll(roomId, localId),
  pollKeys.votes(roomId, localId),
  pollKeys.voters(roomId, localId),
  roomKeys.members(roomId),
  pollKeys.window(roomId, localId),
];

/** The KEYS of closePoll-4, in order. */
export const closePollKeys = ({ roomId, localId }: PollRef) => [
  pollKeys.poll(roomId, localId),
  roomKeys.room(roomId),
  roomKeys.members(roomId),
  pollKeys.closing(),
];
