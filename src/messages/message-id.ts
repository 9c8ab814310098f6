import { badInput } from '../errors.js';

/** Encodes a message's opaque, globally unique id (also its cursor). */
export const encodeMessageId = (roomId: string, seq: number) =>
  Buffer.from(`${roomId}:${seq}`).toString('base64url');

/** Decodes a message id; `BAD_USER_INPUT` naming `field` when it is not one. */
export function decodeMessageId(field: string, id: string): { roomId: string; seq: number } {
  const raw = Buffer.from(id, 'base64url').toString('utf8');
  const colon = raw.lastIndexOf(':');
  const roomId = raw.slice(0, colon);
  const seq = Number(raw.slice(colon + 1));
  if (colon < 1 || !Number.isSafeInteger(seq) || seq < 1 || encodeMessageId(roomId, seq) !== id) {
    throw badInput(field, `${field} is not a valid message id`);
  }
  return { roomId, seq };
}
