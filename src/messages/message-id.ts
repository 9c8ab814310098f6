import { badInput } from '../errors.js';

/**
 * Encodes a message's opaque, globally unique id (also its cursor): room, history epoch and seq.
 * The epoch makes a cursor from a history that was lost or reset detectable (`CURSOR_EXPIRED`)
 * instead of silently pointing at a different message with the same seq.
 */
export const encodeMessageId = (roomId: string, seq: number, epoch: string) =>
  Buffer.from(`${roomId}:${epoch}:${seq}`).toString('base64url');

/** A decoded message id. */
export interface MessageRef {
  roomId: string;
  epoch: string;
  seq: number;
}

/** Decodes a message id; `BAD_USER_INPUT` naming `field` when it is not one. */
export function decodeMessageId(field: string, id: string): MessageRef {
  const raw = Buffer.from(id, 'base64url').toString('utf8');
  const last = raw.lastIndexOf(':');
  const middle = raw.lastIndexOf(':', last - 1);
  const roomId = raw.slice(0, middle);
  const epoch = raw.slice(middle + 1, last);
  const seq = Number(raw.slice(last + 1));
  if (
    middle < 1 ||
    !/^[A-Za-z0-9_-]*$/.test(epoch) ||
    !Number.isSafeInteger(seq) ||
    seq < 1 ||
    encodeMessageId(roomId, seq, epoch) !== id
  ) {
    throw badInput(field, `${field} is not a valid message id`);
  }
  return { roomId, epoch, seq };
}
