import type { Redis } from 'ioredis';
import { createCacheService } from './cache/cache.service.js';
import type { Config } from './config.js';
import { createEventsService } from './events/events.service.js';
import type { Clock } from './infra/clock.js';
import { createHooks } from './infra/hooks.js';
import type { Logger } from './infra/logger.js';
import { createPubSub } from './infra/pubsub.js';
import { createRedisClients, createWaitingConnection, waitReady, type RedisClients } from './infra/redis.js';
import { PipelineBatch } from './infra/pipeline-batch.js';
import { loadScripts } from './infra/scripts.js';
import type { ScriptRegistry } from './infra/scripts.js';
import { createMessagesService } from './messages/messages.service.js';
import type { MessageModel, SendingMessage } from './messages/messages.models.js';
import type { DeferredCommands } from './infra/deferred-commands.js';
import { createRoomsService, type MembershipChange } from './rooms/rooms.service.js';
import type { AppPubSub, Topics } from './topics.js';
import type { Viewer } from './users/users.models.js';
import { createUsersService } from './users/users.service.js';
import { createPresenceService } from './presence/presence.service.js';
import { createTypingService } from './typing/typing.service.js';
import { createRateLimitService } from './ratelimit/ratelimit.service.js';
import { createReceiptsService } from './receipts/receipts.service.js';
import { createPollsService } from './polls/polls.service.js';
import { createCallsService } from './calls/calls.service.js';
import { createCallKeysService } from './calls/call-keys.service.js';
import { participantsCache } from './calls/calls.cache.js';
import { createLiveKit } from './calls/calls.livekit.js';
import { createSearchService } from './search/search.service.js';
import { createPushService } from './push/push.service.js';

/** How long an open subscription waits for Redis to come back before it ends with UNAVAILABLE. */
const STORAGE_OUTAGE_MS = 30_000;

/** What services are built from. */
export interface ServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  clock: Clock;
  config: Config;
  logger: Logger;
  /** Where `redis` points, for the connections push opens for bullmq. */
  redisUrl: string;
}

/** Every service, built once per instance. */
export type Services = ReturnType<typeof createServices>;

/** Builds the services and the hooks through which features join the core's write paths. */
export function createServices(deps: ServiceDeps) {
  const { redis, scripts, pubsub, clock, config, logger, redisUrl } = deps;
  const hooks = {
    messageStored: createHooks<{ message: SendingMessage; viewer: Viewer }, DeferredCommands>(),
    membershipChanged: createHooks<MembershipChange>(),
    messageDeleted: createHooks<{ message: MessageModel }>(),
    messageEdited: createHooks<{ message: MessageModel }>(),
  };
  const cache = createCacheService({ redis, scripts, clock, logger, maxValueBytes: config.cacheMaxValueBytes });
  const users = createUsersService({ redis, scripts, clock });
  const rooms = createRoomsService({
    redis,
    scripts,
    pubsub,
    users,
    clock,
    membershipHooks: hooks.membershipChanged,
    cache,
  });
  const messages = createMessagesService({
    redis,
    scripts,
    pubsub,
    rooms,
    clock,
    messageHooks: hooks.messageStored,
    deleteHooks: hooks.messageDeleted,
    editHooks: hooks.messageEdited,
    retentionMessages: config.historyRetentionMessages,
  });
  const events = createEventsService({
    pubsub,
    rooms,
    messages,
    logger,
    bufferSize: config.subscriptionBufferSize,
    subscribeTimeoutMs: config.redisCommandTimeoutMs,
    positionCheckMs: config.positionCheckMs,
    waitForStorage: () => waitReady(redis, STORAGE_OUTAGE_MS),
  });
  const presence = createPresenceService({
    redis,
    scripts,
    pubsub,
    rooms,
    clock,
    logger,
    instanceId: config.instanceId,
    timeoutSeconds: config.presenceTimeoutSeconds,
    graceMs: config.presenceGraceMs,
    tickMs: config.presenceTickMs,
  });
  const typing = createTypingService({
    redis,
    scripts,
    pubsub,
    rooms,
    clock,
    logger,
    timeoutSeconds: config.typingTimeoutSeconds,
    tickMs: config.presenceTickMs,
  });
  // Features join the core through its hooks: a sender stops typing, a leaver stops typing, and a
  // member is present in a room while one of their subscriptions holds it.
  hooks.messageStored.add((pipeline, { message }) => typing.stopInPipeline(pipeline, message.roomId, message.senderId));
  hooks.membershipChanged.add((pipeline, change) =>
    change.joined ? undefined : typing.stopInPipeline(pipeline, change.roomId, change.userId),
  );
  events.setStreamHooks({ opened: presence.enterRoom, closed: presence.leaveRoom });
  const rateLimits = createRateLimitService({ redis, scripts, clock });
  const receipts = createReceiptsService({ redis, scripts, pubsub, rooms, coalesceMs: 500 });
  hooks.messageStored.add((pipeline, { message }) => receipts.sentInPipeline(pipeline, message));
  hooks.messageDeleted.add((pipeline, { message }) => receipts.deletedInPipeline(pipeline, message));
  hooks.membershipChanged.add((pipeline, change) =>
    change.joined ? undefined : receipts.leftInPipeline(pipeline, change.roomId, change.userId),
  );
  // A member who leaves keeps their votes (a poll records what was voted while they were in the
  // room): polls join no hook.
  const polls = createPollsService({
    redis,
    scripts,
    pubsub,
    rooms,
    events,
    clock,
    logger,
    coalesceMs: 500,
    tickMs: config.presenceTickMs,
  });
  const livekit = config.livekit ? createLiveKit(config.livekit) : null;
  const calls = createCallsService({
    redis,
    scripts,
    pubsub,
    rooms,
    clock,
    logger,
    livekit,
    cache: participantsCache(cache, config.livekit?.requestTimeoutMs ?? 1000),
    settings: config.calls,
    tickMs: config.presenceTickMs,
  });
  const callKeys = createCallKeysService({ redis, scripts, pubsub, clock, livekit, keyTtlSeconds: config.calls.keyTtlSeconds });
  // A member who leaves a room (or is removed) leaves its call.
  if (calls.configured) {
    hooks.membershipChanged.add((pipeline, change) =>
      change.joined ? undefined : calls.leftInPipeline(pipeline, change.roomId, change.userId),
    );
  }
  // Search indexes in the write paths of messages: a viewer's rooms come from their room set, so
  // membership changes need no hook.
  const search = createSearchService({
    redis,
    scripts,
    cache,
    messages,
    retentionMessages: config.historyRetentionMessages,
    cacheTtlSeconds: config.searchCacheTtlSeconds,
  });
  hooks.messageStored.add((pipeline, { message }) => search.storedInPipeline(pipeline, message));
  hooks.messageEdited.add((pipeline, { message }) => search.editedInPipeline(pipeline, message));
  hooks.messageDeleted.add((pipeline, { message }) => search.deletedInPipeline(pipeline, message));
  const push = createPushService({
    redis,
    scripts,
    config: config.push,
    redisKeyPrefix: config.redisKeyPrefix,
    openConnection: (name, opts) =>
      createWaitingConnection({ url: redisUrl, name, logger, ...(opts?.keyPrefix ? { keyPrefix: config.redisKeyPrefix } : {}) }),
    users,
    unread: receipts.unread,
    clock,
    logger,
    instanceId: config.instanceId,
    requestTimeoutMs: config.redisCommandTimeoutMs,
    drainMs: Math.min(config.shutdownTimeoutMs, 5000),
  });
  // Push joins only when configured: otherwise sending costs not one command more.
  if (push.configured) {
    hooks.messageStored.add((pipeline, { message }) => push.sentInPipeline(pipeline, message));
    hooks.membershipChanged.add((pipeline, change) =>
      change.joined ? undefined : push.leftInPipeline(pipeline, change.roomId, change.userId),
    );
  }
  return {
    hooks,
    pubsub,
    users,
    rooms,
    messages,
    events,
    presence,
    typing,
    rateLimits,
    receipts,
    polls,
    calls,
    callKeys,
    cache,
    search,
    push,
    /** A pipeline batch for one operation's loaders (see context.ts). */
    newBatch: () => new PipelineBatch(redis),
  };
}

/** Redis connections, scripts, pub/sub and services: what an instance (or a service test) runs on. */
export interface Wiring {
  redis: RedisClients;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  services: Services;
}

/** Every domain's Lua folder, registered once at start-up. */
export const LUA_DIRS = [
  new URL('./users/lua/', import.meta.url),
  new URL('./presence/lua/', import.meta.url),
  new URL('./typing/lua/', import.meta.url),
  new URL('./rooms/lua/', import.meta.url),
  new URL('./messages/lua/', import.meta.url),
  new URL('./ratelimit/lua/', import.meta.url),
  new URL('./receipts/lua/', import.meta.url),
  new URL('./polls/lua/', import.meta.url),
  new URL('./calls/lua/', import.meta.url),
  new URL('./cache/lua/', import.meta.url),
  new URL('./search/lua/', import.meta.url),
  new URL('./push/lua/', import.meta.url),
];

/** Opens the two Redis connections and builds scripts, pub/sub and services on them. */
export function wireServices(config: Config, opts: { redisUrl: string; logger: Logger; clock: Clock }): Wiring {
  const { logger, clock } = opts;
  const redis = createRedisClients({
    url: opts.redisUrl,
    keyPrefix: config.redisKeyPrefix,
    commandTimeoutMs: config.redisCommandTimeoutMs,
    logger,
    traceRoundTrips: !config.isProduction,
  });
  const scripts = loadScripts(redis.command, LUA_DIRS);
  const pubsub = createPubSub<Topics>({
    command: redis.command,
    subscriber: redis.subscriber,
    channelPrefix: config.redisKeyPrefix,
    logger,
  });
  const services = createServices({ redis: redis.command, scripts, pubsub, clock, config, logger, redisUrl: opts.redisUrl });
  return { redis, scripts, pubsub, services };
}
