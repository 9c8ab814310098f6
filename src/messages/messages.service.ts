import type { Redis } from 'ioredis';
import { badInput, SCRIPT_STATUS, scriptError } from '../errors.js';
import type { Clock } from '../infra/clock.js';
import type { HookList } from '../infra/hooks.js';
import { pageSize, toConnection, type Connection } from '../infra/pagination.js';
import { execPipeline } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId, checkedText } from '../infra/text.js';
import { roomKeys } from '../rooms/rooms.keys.js';
import type { RoomsService } from '../rooms/rooms.service.js';
import type { AppPubSub } from '../topics.js';
import type { Viewer } from '../users/users.models.js';
import { decodeMessageId, encodeMessageId } from './message-id.js';
import { messageKeys } from './messages.keys.js';
import type { MessageModel } from './messages.models.js';

/** Dependencies of {@link createMessagesService}. */
export interface MessagesServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  rooms: RoomsService;
  clock: Clock;
  /** Features' commands to run once a new message is stored (one pipeline for all of them). */
  messageHooks: HookList<{ message: MessageModel; viewer: Viewer }>;
}

/** Messages: send, edit, delete, history. */
export type MessagesService = ReturnType<typeof createMessagesService>;

/** Contract limits. */
export const MESSAGE_MAX_CHARS = 4000;
const CLIENT_ID_MAX_CHARS = 128;
const DEDUPE_TTL_SECONDS = 24 * 60 * 60;
const DEFAULT_LAST = 50;

/** History paging arguments, as in the contract. */
export interface HistoryArgs {
  first?: number | null;
  after?: string | null;
  last?: number | null;
  before?: string | null;
}

/** Parses a stored message. */
export const parseMessage = (json: string): MessageModel => {
  const m = JSON.parse(json) as MessageModel;
  return {
    roomId: m.roomId,
    seq: m.seq,
    senderId: m.senderId,
    text: m.text,
    clientId: m.clientId ?? null,
    createdAt: m.createdAt,
    editedAt: m.editedAt ?? null,
    deleted: m.deleted === true,
  };
};

/** Creates the messages service: every method that takes `viewer` authorizes first. */
export function createMessagesService(deps: MessagesServiceDeps) {
  const { redis, scripts, pubsub, rooms, clock, messageHooks } = deps;
  const sendScript = scripts.get('sendMessage');
  const editScript = scripts.get('editMessage');
  const deleteScript = scripts.get('deleteMessage');

  const roomScriptKeys = (roomId: string) => [
    roomKeys.room(roomId),
    roomKeys.members(roomId),
    messageKeys.messages(roomId),
  ];

  /** Messages `from..to` (inclusive) of a room, in one round trip; stops at the first missing one. */
  async function range(roomId: string, from: number, to: number): Promise<MessageModel[]> {
    if (to < from) return [];
    const seqs: number[] = [];
    for (let s = from; s <= to; s++) seqs.push(s);
    const raw = await redis.hmget(messageKeys.messages(roomId), ...seqs.map(String));
    const out: MessageModel[] = [];
    for (const json of raw) {
      if (json === null) break;
      out.push(parseMessage(json));
    }
    return out;
  }

  return {
    range,

    /** Messages by (room, seq), in one round trip; null where absent. */
    async getMany(keys: readonly { roomId: string; seq: number }[]): Promise<(MessageModel | null)[]> {
      if (keys.length === 0) return [];
      const pipeline = redis.pipeline();
      for (const k of keys) pipeline.hget(messageKeys.messages(k.roomId), String(k.seq));
      return (await execPipeline(pipeline)).map((json) =>
        typeof json === 'string' ? parseMessage(json) : null,
      );
    },

    /** Sends a message; the same (viewer, room, clientId) within 24 h returns the first one. */
    async send(
      viewer: Viewer,
      input: { roomId: string; text: string; clientId?: string | null },
    ): Promise<MessageModel> {
      const roomId = checkedId('roomId', input.roomId);
      const text = checkedText('text', input.text, 1, MESSAGE_MAX_CHARS);
      const clientId = input.clientId ?? '';
      if (input.clientId != null && (clientId.length < 1 || clientId.length > CLIENT_ID_MAX_CHARS)) {
        throw badInput('clientId', `clientId must be 1..${CLIENT_ID_MAX_CHARS} characters`);
      }
      const [status, json, created] = (await sendScript(
        [...roomScriptKeys(roomId), messageKeys.dedupe(roomId, viewer.id, clientId)],
        [roomId, viewer.id, text, clientId, clock.now(), DEDUPE_TTL_SECONDS],
      )) as [number, string, number];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const message = parseMessage(json);
      if (created === 1) {
        const pipeline = redis.pipeline();
        messageHooks.apply(pipeline, { message, viewer });
        if (pipeline.length > 0) await execPipeline(pipeline);
        pubsub.publish('room', roomId, { type: 'MessageAdded', message });
      }
      return message;
    },

    /** Edits a message's text (author only). */
    async edit(viewer: Viewer, messageId: string, newText: string): Promise<MessageModel> {
      const { roomId, seq } = decodeMessageId('messageId', messageId);
      const text = checkedText('text', newText, 1, MESSAGE_MAX_CHARS);
      const [status, json] = (await editScript(roomScriptKeys(roomId), [
        viewer.id,
        seq,
        text,
        clock.now(),
      ])) as [number, string];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const message = parseMessage(json);
      pubsub.publish('room', roomId, { type: 'MessageEdited', message });
      return message;
    },

    /** Deletes a message (author or room owner); idempotent. */
    async delete(viewer: Viewer, messageId: string): Promise<MessageModel> {
      const { roomId, seq } = decodeMessageId('messageId', messageId);
      const [status, json, changed] = (await deleteScript(roomScriptKeys(roomId), [
        viewer.id,
        seq,
        clock.now(),
      ])) as [number, string, number];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const message = parseMessage(json);
      if (changed === 1) pubsub.publish('room', roomId, { type: 'MessageDeleted', message });
      return message;
    },

    /**
     * A page of history, oldest first: `first`/`after` forward, `last`/`before` backward, neither
     * the last 50. Seqs have no gaps, so a page is seq arithmetic plus one HMGET.
     */
    async history(viewer: Viewer, roomId: string, args: HistoryArgs): Promise<Connection<MessageModel>> {
      checkedId('roomId', roomId);
      if (args.first != null && args.last != null) {
        throw badInput('last', 'pass either first or last, not both');
      }
      const cursorSeq = (field: 'after' | 'before', id: string | null | undefined) => {
        if (id == null) return null;
        const decoded = decodeMessageId(field, id);
        if (decoded.roomId !== roomId) throw badInput(field, `${field} is a message of another room`);
        return decoded.seq;
      };
      const afterSeq = cursorSeq('after', args.after);
      const beforeSeq = cursorSeq('before', args.before);
      const room = await rooms.requireMember(viewer, roomId);
      const latest = room.lastSeq;
      // The window the cursors leave, then `first` from its start or `last` from its end.
      const lo = Math.max(1, (afterSeq ?? 0) + 1);
      const hi = Math.min(latest, (beforeSeq ?? latest + 1) - 1);
      let from: number;
      let to: number;
      if (args.first != null) {
        from = lo;
        to = Math.min(hi, lo + pageSize('first', args.first, 0) - 1);
      } else {
        const last = pageSize('last', args.last, DEFAULT_LAST);
        to = hi;
        from = Math.max(lo, hi - last + 1);
      }
      const page = to >= from ? await range(roomId, from, to) : [];
      const start = page[0]?.seq ?? from;
      const end = page[page.length - 1]?.seq ?? from - 1;
      return toConnection(
        page,
        (m) => encodeMessageId(m.roomId, m.seq),
        start > 1,
        end < latest,
      );
    },
  };
}
