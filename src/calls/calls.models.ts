import { forbidden, scriptError, type AppError } from '../errors.js';

/** A participant of a call. */
export interface CallParticipantModel {
  userId: string;
  /** When they joined, ms. */
  joinedAt: number;
}

/** A room's call (at most one at a time), as stored and as published. */
export interface CallModel {
  id: string;
  roomId: string;
  startedAt: number;
  /** Bumped after participants leave: keys of older epochs are no longer served. */
  epoch: number;
  /** Set on the last snapshot of a call, the one announcing its end. */
  endedAt: number | null;
  participants: CallParticipantModel[];
}

/** What `joinCall` answers. */
export interface CallJoinModel {
  token: string;
  url: string;
  call: CallModel;
}

/** A participant's published media key (X25519 public key signed by their identity key). */
export interface CallKeyModel {
  roomId: string;
  callId: string;
  userId: string;
  keyId: string;
  publicKey: string;
  signature: string;
  epoch: number;
  /** ms */
  expiresAt: number;
}

/** The call changed: joined, left, rotated its epoch (`rekey`) or ended (`call.endedAt`). */
export interface CallUpdatedModel {
  type: 'CallUpdated';
  roomId: string;
  call: CallModel;
  /** The epoch rotated: participants publish a new key for `call.epoch`. */
  rekey: boolean;
}

/** A participant published a media key. */
export interface CallKeyPublishedModel {
  type: 'CallKeyPublished';
  roomId: string;
  key: CallKeyModel;
}

/** A member registered or replaced their identity key. */
export interface IdentityKeyChangedModel {
  type: 'IdentityKeyChanged';
  roomId: string;
  userId: string;
  publicKey: string;
}

/** Everything the calls domain publishes on a room's channel. */
export type CallEventModel = CallUpdatedModel | CallKeyPublishedModel | IdentityKeyChangedModel;

/** Status codes of the calls scripts beyond the shared ones (see each script's header). */
export const CALL_STATUS = {
  NO_CALL: 20,
  NOT_PARTICIPANT: 21,
  STALE: 22,
  DUPLICATE: 23,
} as const;

/** How `applyCall-10` reports what changed. */
export const CALL_CHANGE = { NONE: 0, CHANGED: 1, REKEYED: 2, ENDED: 3 } as const;

/** A calls script status as an API error (the shared ones through `scriptError`). */
export function callScriptError(status: number): AppError {
  switch (status) {
    // With no call on, nobody is a participant.
    case CALL_STATUS.NO_CALL:
    case CALL_STATUS.NOT_PARTICIPANT:
      return forbidden('You are not a participant of this call');
    default:
      return scriptError(status);
  }
}
