import type { Redis } from 'ioredis';
import { badInput, cursorExpired, SCRIPT_STATUS, scriptError } from '../errors.js';
import type { Clock } from '../infra/clock.js';
import type { HookList } from '../infra/hooks.js';
import { pageSize, toConnection, type Connection } from '../infra/pagination.js';
import { execPipeline, runRead, type PipelineRead } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId, checkedText } from '../infra/text.js';
import { roomKeys } from '../rooms/rooms.keys.js';
import type { RoomModel } from '../rooms/rooms.models.js';
import type { RoomsService } from '../rooms/rooms.service.js';
import type { AppPubSub } from '../topics.js';
import type { Viewer } from '../users/users.models.js';
import { decodeMessageId, encodeMessageId } from './message-id.js';
import { messageKeys } from './messages.keys.js';
import type { MessageModel, SendingMessage } from './messages.models.js';
import { pipelineOf } from '../infra/direct-pipeline.js';
import { DeferredCommands, SENT } from '../infra/deferred-commands.js';

/** Dependencies of {@link createMessagesService}. */
export interface MessagesServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  rooms: RoomsService;
  clock: Clock;
  /**
   * Features' commands to run once a new message is stored: deferred into the send script's run
   * (sendWithHooks), so a send is one round trip; what needs the seq is queued as placeholders.
   */
  messageHooks: HookList<{ message: SendingMessage; viewer: Viewer }, DeferredCommands>;
  /** Messages kept per room (0: all). */
  retentionMessages: number;
  /** Features' commands to run once a message is deleted (one pipeline for all of them). */
  deleteHooks: HookList<{ message: MessageModel }>;
  /** Features' commands to run once a message's text is edited (one pipeline for all of them). */
  editHooks?: HookList<{ message: MessageModel }>;
}

/** A run of stored messages with the room's position, read atomically. */
export interface MessageRun {
  epoch: string;
  firstSeq: number;
  lastSeq: number;
  /** From the requested seq on, stopping at the first one not stored. */
  messages: MessageModel[];
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
    epoch: m.epoch ?? '',
    seq: m.seq,
    senderId: m.senderId,
    text: m.text,
    clientId: m.clientId ?? null,
    createdAt: m.createdAt,
    editedAt: m.editedAt ?? null,
    deleted: m.deleted === true,
  };
};

/** Parses a readMessages-2 reply; null when the room does not exist. */
function parseRun(reply: unknown): MessageRun | null {
  const [status, epoch, firstSeq, lastSeq, ...jsons] = reply as [number, string, number, number, ...string[]];
  if (status !== SCRIPT_STATUS.OK) return null;
  return { epoch, firstSeq, lastSeq, messages: jsons.map(parseMessage) };
}

/** Reads messages by (room, seq); null where absent. */
const readMessages =
  (keys: readonly { roomId: string; seq: number }[]): PipelineRead<(MessageModel | null)[]> =>
  (pipeline) => {
    for (const k of keys) pipeline.hget(messageKeys.messages(k.roomId), String(k.seq));
    return (jsons) => jsons.map((json) => (typeof json === 'string' ? parseMessage(json) : null));
  };

/** Creates the messages service: every method that takes `viewer` authorizes first. */
export function createMessagesService(deps: MessagesServiceDeps) {
  const { redis, scripts, pubsub, rooms, clock, messageHooks, retentionMessages, deleteHooks, editHooks } = deps;
  const sendScript = scripts.get('sendWithHooks');
  const sendIncludes = scripts.included('sendWithHooks');
  const readScript = scripts.get('readMessages');
  const editScript = scripts.get('editMessage');
  const deleteScript = scripts.get('deleteMessage');

  const roomScriptKeys = (roomId: string) => [
    roomKeys.room(roomId),
    roomKeys.members(roomId),
    messageKeys.messages(roomId),
  ];

  /**
   * Messages `from..to` (inclusive) of a room with its position, in one round trip; null when the
   * room does not exist. Nothing is returned when `from` was trimmed by retention.
   */
  async function readRun(roomId: string, from: number, to: number): Promise<MessageRun | null> {
    return parseRun(await readScript([roomKeys.room(roomId), messageKeys.messages(roomId)], [from, to]));
  }

  /** A history page's arguments, checked (no Redis yet). */
  function planHistory(roomId: string, args: HistoryArgs) {
    checkedId('roomId', roomId);
    if (args.first != null && args.last != null) {
      throw badInput('last', 'pass either first or last, not both');
    }
    const first = args.first != null ? pageSize('first', args.first, 0) : null;
    const last = first === null ? pageSize('last', args.last, DEFAULT_LAST) : 0;
    const cursor = (field: 'after' | 'before', id: string | null | undefined) => {
      if (id == null) return null;
      const ref = decodeMessageId(field, id);
      if (ref.roomId !== roomId) throw badInput(field, `${field} is a message of another room`);
      return ref;
    };
    return { roomId, first, last, after: cursor('after', args.after), before: cursor('before', args.before) };
  }
  type HistoryPlan = ReturnType<typeof planHistory>;

  /** The seqs a page covers in `room`: `CURSOR_EXPIRED` for a cursor of a history that was reset. */
  function historyWindow(room: RoomModel, { first, last, after, before }: HistoryPlan) {
    for (const ref of [after, before]) {
      if (ref && (ref.epoch !== room.epoch || ref.seq > room.lastSeq)) {
        throw cursorExpired('The cursor belongs to a history that was reset: reload the history');
      }
    }
    // The window the cursors leave (within retention), then `first` from its start or `last` from its end.
    const lo = Math.max(room.firstSeq, (after?.seq ?? 0) + 1);
    const hi = Math.min(room.lastSeq, (before?.seq ?? room.lastSeq + 1) - 1);
    const from = first !== null ? lo : Math.max(lo, hi - last + 1);
    const to = first !== null ? Math.min(hi, lo + first - 1) : hi;
    return { from, to };
  }

  /** Reads runs of messages (readMessages-2 each); null where the room is gone. */
  const readRuns =
    (ranges: readonly { roomId: string; from: number; to: number }[]): PipelineRead<(MessageRun | null)[]> =>
    (pipeline) => {
      for (const { roomId, from, to } of ranges) {
        scripts.queue(pipeline, 'readMessages', [roomKeys.room(roomId), messageKeys.messages(roomId)], [from, to]);
      }
      return (replies) => replies.map(parseRun);
    };

  async function histories(
    viewerId: string,
    queries: readonly { roomId: string; args: HistoryArgs }[],
    run: <T>(read: PipelineRead<T>) => Promise<T>,
  ): Promise<(Connection<MessageModel> | Error)[]> {
    const pages: (Connection<MessageModel> | Error)[] = [];
    const planned: { i: number; plan: HistoryPlan }[] = [];
    queries.forEach((q, i) => {
      try {
        planned.push({ i, plan: planHistory(q.roomId, q.args) });
      } catch (err) {
        pages[i] = err as Error;
      }
    });
    const found = planned.length > 0 ? await run(rooms.readMemberRooms(viewerId, planned.map((p) => p.plan.roomId))) : [];
    const windows: { i: number; room: RoomModel; from: number; to: number; run?: MessageRun | null }[] = [];
    planned.forEach(({ i, plan }, j) => {
      const room = found[j] as RoomModel | Error;
      try {
        if (room instanceof Error) throw room;
        windows.push({ i, room, ...historyWindow(room, plan) });
      } catch (err) {
        pages[i] = err as Error;
      }
    });
    const toRead = windows.filter((w) => w.to >= w.from);
    const runs = toRead.length > 0 ? await run(readRuns(toRead.map((w) => ({ roomId: w.room.id, from: w.from, to: w.to })))) : [];
    toRead.forEach((w, k) => (w.run = runs[k]));
    for (const { i, room, from, run: read } of windows) {
      const page = read?.messages ?? [];
      const start = page[0]?.seq ?? from;
      const end = page[page.length - 1]?.seq ?? from - 1;
      pages[i] = toConnection(page, (m) => encodeMessageId(m.roomId, m.seq, m.epoch), start > room.firstSeq, end < room.lastSeq);
    }
    return pages;
  }

  return {
    readRun,

    /** Messages by (room, seq), in one round trip; null where absent. */
    getMany: (keys: readonly { roomId: string; seq: number }[]) => runRead(redis, readMessages(keys)),

    /** {@link getMany} as commands for a shared pipeline (the message loader's). */
    readMany: readMessages,

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
      const now = clock.now();
      // The features' commands and the event, deferred into the send script's run: one round
      // trip, and none of them runs unless a message was created (not for a clientId seen before).
      const deferred = new DeferredCommands(sendIncludes);
      const settle = messageHooks.apply(deferred, { message: { roomId, senderId: viewer.id, text, createdAt: now }, viewer });
      deferred.publish(pubsub.channelOf('room', roomId), SENT.event(viewer.name));
      const sendArgs = [roomId, viewer.id, text, clientId, now, DEDUPE_TTL_SECONDS, retentionMessages];
      const [[status, json, created], ...replies] = (await sendScript(
        [...roomScriptKeys(roomId), messageKeys.dedupe(roomId, viewer.id, clientId), ...deferred.keys],
        [sendArgs.length, ...sendArgs, ...deferred.args],
      )) as [[number, string, number], ...unknown[]];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const message = parseMessage(json);
      if (created === 1) {
        // As a pipeline's first failed command did: the message is stored, the request reports it.
        const failed = replies.find((r) => r instanceof Error);
        if (failed) throw failed;
        settle(replies);
      }
      return message;
    },

    /** Edits a message's text (author only). */
    async edit(viewer: Viewer, messageId: string, newText: string): Promise<MessageModel> {
      const { roomId, seq, epoch } = decodeMessageId('messageId', messageId);
      const text = checkedText('text', newText, 1, MESSAGE_MAX_CHARS);
      const [status, json] = (await editScript(roomScriptKeys(roomId), [
        viewer.id,
        seq,
        text,
        clock.now(),
        epoch,
      ])) as [number, string];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const message = parseMessage(json);
      const pipeline = pipelineOf(redis);
      const settle = editHooks?.apply(pipeline, { message });
      pubsub.publishIn(pipeline, 'room', roomId, { type: 'MessageEdited', message, senderName: viewer.name });
      const replies = await execPipeline(pipeline);
      settle?.(replies);
      return message;
    },

    /** Deletes a message (author or room owner); idempotent. */
    async delete(viewer: Viewer, messageId: string): Promise<MessageModel> {
      const { roomId, seq, epoch } = decodeMessageId('messageId', messageId);
      const [status, json, changed] = (await deleteScript(roomScriptKeys(roomId), [
        viewer.id,
        seq,
        clock.now(),
        epoch,
      ])) as [number, string, number];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      const message = parseMessage(json);
      if (changed === 1) {
        const pipeline = pipelineOf(redis);
        const settle = deleteHooks.apply(pipeline, { message });
        pubsub.publishIn(pipeline, 'room', roomId, { type: 'MessageDeleted', message });
        settle(await execPipeline(pipeline));
      }
      return message;
    },

    /**
     * A page of history, oldest first: `first`/`after` forward, `last`/`before` backward, neither
     * the last 50. Seqs have no gaps, so a page is seq arithmetic plus one read. A cursor from
     * another history epoch (history reset) is `CURSOR_EXPIRED`.
     */
    async history(viewer: Viewer, roomId: string, args: HistoryArgs): Promise<Connection<MessageModel>> {
      const [page] = await histories(viewer.id, [{ roomId, args }], (read) => runRead(redis, read));
      if (!page || page instanceof Error) throw page ?? new Error('history not read');
      return page;
    },

    /**
     * {@link history} of many rooms for one viewer in two round trips in all (rooms with the
     * viewer's membership, then every run), through `run` (an operation's pipeline batch). Each
     * page is a connection, or the error that page alone failed with.
     */
    histories,
  };
}
