import type { ChainableCommander, Redis } from 'ioredis';
import { badInput, SCRIPT_STATUS, scriptError } from '../errors.js';
import { createCoalescingWindows } from '../infra/coalescing.js';
import { runRead, type PipelineRead } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId } from '../infra/text.js';
import { decodeMessageId } from '../messages/message-id.js';
import type { MessageModel } from '../messages/messages.models.js';
import { roomKeys } from '../rooms/rooms.keys.js';
import type { RoomModel } from '../rooms/rooms.models.js';
import type { RoomsService } from '../rooms/rooms.service.js';
import type { AppPubSub } from '../topics.js';
import type { Viewer } from '../users/users.models.js';
import { markReadKeys, receiptKeys as keys } from './receipts.keys.js';
import { SENT, type DeferredCommands } from '../infra/deferred-commands.js';
import type { SendingMessage } from '../messages/messages.models.js';

/** Dependencies of {@link createReceiptsService}. */
export interface ReceiptsServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  rooms: RoomsService;
  /** At most one ReadReceipt per (room, user) per this window, the last one always sent. */
  coalesceMs: number;
}

/** Read receipts: watermarks, unread counts, read counts. */
export type ReceiptsService = ReturnType<typeof createReceiptsService>;

/** A member's unread state in a room. */
export interface UnreadState {
  unread: number;
  /** Their own watermark (0: nothing read). */
  ownSeq: number;
}

/** Creates the receipts service. */
export function createReceiptsService(deps: ReceiptsServiceDeps) {
  const { redis, scripts, pubsub, rooms, coalesceMs } = deps;
  const markScript = scripts.get('markRead');

  const markKeys = markReadKeys;

  // Coalescing, cluster-wide (see coalescing.ts): 50 marks in a second make two events, and the
  // last one is always the latest watermark.
  const windows = createCoalescingWindows(coalesceMs);
  /** Reads the unread state of one viewer in many rooms. */
  const readUnread =
    (viewerId: string, roomIds: readonly string[]): PipelineRead<UnreadState[]> =>
    (pipeline) => {
      for (const id of roomIds) {
        scripts.queue(pipeline, 'unreadCount', [roomKeys.room(id), keys.ownMarks(id), keys.deleted(id), roomKeys.members(id)], [
          viewerId,
        ]);
      }
      return (replies) =>
        replies.map((r) => {
          const [unread, ownSeq] = r as [number, number];
          return { unread, ownSeq };
        });
    };

  /** Reads how many members other than the sender have publicly read each message. */
  const readReadCounts =
    (messages: readonly MessageModel[]): PipelineRead<number[]> =>
    (pipeline) => {
      for (const m of messages) {
        pipeline.zcount(keys.publicMarks(m.roomId), m.seq, '+inf').zscore(keys.publicMarks(m.roomId), m.senderId);
      }
      return (replies) =>
        messages.map((m, i) => {
          const count = Number(replies[2 * i]);
          const sender = replies[2 * i + 1];
          return count - (sender !== null && Number(sender) >= m.seq ? 1 : 0);
        });
    };

  /** Reads who (other than the sender) has publicly read each message, at most `first` each. */
  const readReadBy =
    (queries: readonly { message: MessageModel; first: number }[]): PipelineRead<string[][]> =>
    (pipeline) => {
      for (const { message, first } of queries) {
        pipeline.zrangebyscore(keys.publicMarks(message.roomId), message.seq, '+inf', 'LIMIT', 0, Math.min(first, 100) + 1);
      }
      return (replies) =>
        queries.map(({ message, first }, i) =>
          first <= 0 ? [] : (replies[i] as string[]).filter((id) => id !== message.senderId).slice(0, first),
        );
    };

  // Coalescing, cluster-wide: the markRead that opens a (room, user) window in Redis sends its
  // receipt at once, and when the window ends that same instance sends the watermark as it is then
  // (whichever instance moved it meanwhile), if it moved: 50 marks in a second make two events,
  // and the last one is always the latest watermark.
  const send = (roomId: string, userId: string, seq: number, epoch: string, isPrivate: boolean) =>
    pubsub.publish('room', roomId, { type: 'ReadReceipt', roomId, userId, seq, epoch, private: isPrivate });
  function closeWindowLater(roomId: string, userId: string, sentSeq: number, epoch: string, isPrivate: boolean) {
    windows.whenClosed(
      async () => {
        const value = isPrivate ? await redis.hget(keys.ownMarks(roomId), userId) : await redis.zscore(keys.publicMarks(roomId), userId);
        const seq = Number(value ?? 0);
        return seq > sentSeq ? seq : null;
      },
      (seq) => send(roomId, userId, seq, epoch, isPrivate),
    );
  }

  return {
    /** `markRead`: moves the viewer's watermark forward; a private one moves only their own unread state. */
    async markRead(viewer: Viewer, roomIdArg: string, messageId: string, isPrivate: boolean): Promise<RoomModel> {
      const roomId = checkedId('roomId', roomIdArg);
      const ref = decodeMessageId('messageId', messageId);
      if (ref.roomId !== roomId) throw badInput('messageId', 'messageId is a message of another room');
      const [status, ownChanged, publicChanged, ownSeq, opened] = (await markScript(markKeys(roomId, viewer.id), [
        viewer.id,
        ref.seq,
        isPrivate ? 1 : 0,
        ref.epoch,
        coalesceMs,
      ])) as [number, number, number, number, number];
      if (status !== SCRIPT_STATUS.OK) throw scriptError(status);
      // Public receipts are for everyone; a private one only tells the reader's other devices.
      const moved = publicChanged === 1 ? { seq: ref.seq, private: false } : ownChanged === 1 ? { seq: ownSeq, private: true } : null;
      if (moved && opened === 1) {
        send(roomId, viewer.id, moved.seq, ref.epoch, moved.private);
        closeWindowLater(roomId, viewer.id, moved.seq, ref.epoch, moved.private);
      }
      const [room] = await rooms.getMany([roomId]);
      return room as RoomModel;
    },

    /** Unread state of one viewer in many rooms, in one round trip. */
    unread: (viewerId: string, roomIds: readonly string[]) => runRead(redis, readUnread(viewerId, roomIds)),

    /** How many members other than the sender have publicly read each message: O(log n) each, one round trip. */
    readCounts: (messages: readonly MessageModel[]) => runRead(redis, readReadCounts(messages)),

    /** Who (other than the sender) has publicly read a message, at most `first`. */
    readBy: async (message: MessageModel, first: number): Promise<string[]> =>
      (await runRead(redis, readReadBy([{ message, first }])))[0] ?? [],

    /** Reads for a shared pipeline (the operation's loaders). */
    readUnread,
    readReadCounts,
    readReadBy,

    /**
     * Hook: sending a message marks it read for its sender (publicly). The send script has just
     * stored it as the room's newest message, after its own checks: both watermarks move to it with
     * no markRead checks (no watermark passes the room's latest seq). Sending is not announced as a
     * receipt (the message itself says it): no window is opened.
     */
    sentInPipeline(deferred: DeferredCommands, message: SendingMessage) {
      deferred.hset(keys.ownMarks(message.roomId), message.senderId, SENT.seq).zadd(keys.publicMarks(message.roomId), SENT.seq, message.senderId);
    },

    /** Hook: a deleted message stops counting as unread. */
    deletedInPipeline(pipeline: ChainableCommander, message: MessageModel) {
      pipeline.zadd(keys.deleted(message.roomId), message.seq, String(message.seq));
    },

    /** Hook: a member who left no longer counts as a reader. */
    leftInPipeline(pipeline: ChainableCommander, roomId: string, userId: string) {
      pipeline.zrem(keys.publicMarks(roomId), userId).hdel(keys.ownMarks(roomId), userId);
    },

    /** Stops the coalescing timers (shutdown). */
    stop: windows.stop,
  };
}
