import type { ChainableCommander, Redis } from 'ioredis';
import type { Clock } from '../infra/clock.js';
import type { Logger } from '../infra/logger.js';
import { createTicker } from '../infra/ticker.js';
import type { AppError } from '../errors.js';
import type { PipelineRead } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId } from '../infra/text.js';
import type { RoomsService } from '../rooms/rooms.service.js';
import type { AppPubSub } from '../topics.js';
import type { Viewer } from '../users/users.models.js';
import { typingKeys as keys } from './typing.keys.js';
import type { DeferredCommands } from '../infra/deferred-commands.js';

/** Dependencies of {@link createTypingService}. */
export interface TypingServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  rooms: RoomsService;
  clock: Clock;
  logger: Logger;
  timeoutSeconds: number;
  /** How often expiries are looked for (well under a second, so lists update within timeout + 1 s). */
  tickMs: number;
}

/** Typing indicators. */
export type TypingService = ReturnType<typeof createTypingService>;

/** Creates the typing service. */
export function createTypingService(deps: TypingServiceDeps) {
  const { redis, scripts, pubsub, rooms, clock, logger, timeoutSeconds, tickMs } = deps;
  const setScript = scripts.get('setTyping');
  const timeoutMs = timeoutSeconds * 1000;

  const publishIfChanged = (roomId: string, reply: unknown) => {
    const [changed, ...userIds] = reply as [number, ...string[]];
    if (changed === 1) pubsub.publish('room', roomId, { type: 'TypingChanged', roomId, userIds: userIds.sort() });
  };

  /** Finds rooms whose earliest typing expired and publishes their new lists (one claim each). */
  async function expire(): Promise<void> {
    const now = clock.now();
    const due = await redis.zrangebyscore(keys.rooms(), '-inf', now, 'LIMIT', 0, 500);
    for (const roomId of due) {
      publishIfChanged(roomId, await setScript([keys.typing(roomId), keys.rooms()], [roomId, '', '', now, timeoutMs]));
    }
  }

  const ticker = createTicker(expire, { tickMs, logger, what: 'typing expiry' });

  return {
    expire,

    /** Starts looking for expiries. */
    start: ticker.start,

    /** Stops the timer. */
    stop: ticker.stop,

    /** `setTyping`: members only; an unchanged list is not broadcast again. */
    async set(viewer: Viewer, roomIdArg: string, typing: boolean): Promise<boolean> {
      const roomId = checkedId('roomId', roomIdArg);
      await rooms.requireMember(viewer, roomId);
      publishIfChanged(
        roomId,
        await setScript([keys.typing(roomId), keys.rooms()], [roomId, viewer.id, typing ? 1 : 0, clock.now(), timeoutMs]),
      );
      return true;
    },

    /** Who is typing now (members only). */
    async userIds(viewer: Viewer, roomId: string): Promise<string[]> {
      await rooms.requireMember(viewer, roomId);
      return (await redis.zrangebyscore(keys.typing(roomId), `(${clock.now()}`, '+inf')).sort();
    },

    /** {@link userIds} of many rooms for a shared pipeline (the typing loader's): `FORBIDDEN` for non-members. */
    readUserIds:
      (viewerId: string, roomIds: readonly string[]): PipelineRead<(string[] | AppError)[]> =>
      rooms.readAsMember(
        viewerId,
        roomIds,
        (pipeline) => {
          const now = clock.now();
          for (const id of roomIds) pipeline.zrangebyscore(keys.typing(id), `(${now}`, '+inf');
          return (replies) => replies.map((ids) => (ids as string[]).sort());
        },
        'You are not a member of this room',
      ),

    /**
     * A pipeline hook: the user stopped typing (they sent a message, or left the room). Rides in the
     * core's pipeline; publishes the new list if it changed.
     */
    stopInPipeline(pipeline: ChainableCommander | DeferredCommands, roomId: string, userId: string) {
      scripts.queue(pipeline, 'setTyping', [keys.typing(roomId), keys.rooms()], [roomId, userId, 0, clock.now(), timeoutMs]);
      return (replies: unknown[]) => publishIfChanged(roomId, replies[0]);
    },
  };
}
