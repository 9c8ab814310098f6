import { badInput } from '../errors.js';
import type { PollRef } from './polls.keys.js';

const LOCAL_ID = /^[0-9a-z]+$/;

/** Encodes a poll's opaque, globally unique id: its room and its id within the room. */
export const encodePollId = ({ roomId, localId }: PollRef) => Buffer.from(`${roomId}:${localId}`).toString('base64url');

/** Encodes a poll option's id: the poll and the option's index (globally unique, so client caches never mix two polls' options). */
export const encodeOptionId = ({ roomId, localId }: PollRef, index: number) =>
  Buffer.from(`${roomId}:${localId}:${index}`).toString('base64url');

/** Splits `raw` at its last `parts - 1` colons (room ids may hold colons, the other parts never do). */
function splitTail(raw: string, parts: number): string[] | null {
  const out: string[] = [];
  let rest = raw;
  for (let i = 1; i < parts; i++) {
    const at = rest.lastIndexOf(':');
    if (at < 1) return null;
    out.unshift(rest.slice(at + 1));
    rest = rest.slice(0, at);
  }
  return [rest, ...out];
}

/** Decodes a poll id; `BAD_USER_INPUT` naming `field` when it is not one. */
export function decodePollId(field: string, id: string): PollRef {
  const [roomId, localId] = splitTail(Buffer.from(id, 'base64url').toString('utf8'), 2) ?? [];
  if (roomId === undefined || localId === undefined || !LOCAL_ID.test(localId) || encodePollId({ roomId, localId }) !== id) {
    throw badInput(field, `${field} is not a valid poll id`);
  }
  return { roomId, localId };
}

/** Decodes an option id into its poll and index; `BAD_USER_INPUT` naming `field` when it is not one. */
export function decodeOptionId(field: string, id: string): PollRef & { index: number } {
  const [roomId, localId, index] = splitTail(Buffer.from(id, 'base64url').toString('utf8'), 3) ?? [];
  const n = Number(index);
  if (
    roomId === undefined ||
    localId === undefined ||
    !LOCAL_ID.test(localId) ||
    !Number.isSafeInteger(n) ||
    encodeOptionId({ roomId, localId }, n) !== id
  ) {
    throw badInput(field, `${field} holds an id that is not a poll option id`);
  }
  return { roomId, localId, index: n };
}
