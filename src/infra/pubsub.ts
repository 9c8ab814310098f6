import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import type { ChainableCommander, Redis } from 'ioredis';
import type { Logger } from './logger.js';

/** Options for {@link createPubSub}. */
export interface PubSubOptions {
  command: Redis;
  subscriber: Redis;
  channelPrefix: string;
  logger: Logger;
}

/** A typed publish/listen pair over Redis, one channel per (topic, id). */
export interface PubSub<Topics extends Record<string, unknown>> {
  /** Fire-and-forget: a failed PUBLISH is logged and counted, never thrown. */
  publish<K extends keyof Topics & string>(topic: K, id: string, payload: Topics[K]): void;
  /**
   * Adds the PUBLISH to a pipeline about to run: it goes out in the same write and round trip as
   * the pipeline's other commands, and Redis runs it after them (what they wrote is visible to
   * anyone acting on the event). Its failure is the pipeline's.
   */
  publishIn<K extends keyof Topics & string>(pipeline: ChainableCommander, topic: K, id: string, payload: Topics[K]): void;
  /**
   * Registers a listener. `ready` resolves once Redis confirmed the SUBSCRIBE, so a read made after
   * it cannot miss an event published later; `remove` unregisters (unsubscribing the last one).
   */
  listen<K extends keyof Topics & string>(
    topic: K,
    id: string,
    listener: (payload: Topics[K]) => void,
  ): { ready: Promise<void>; remove: () => void };
  /**
   * As `listen`, for a listener object (its `onEvent` gets each event): nothing is made per
   * listener but its entry in the channel's set, which matters for what an idle subscription holds.
   * Resolves as `listen`'s `ready`; `detach` unregisters.
   */
  attach<K extends keyof Topics & string>(topic: K, id: string, listener: PubSubListener<Topics[K]>): Promise<void>;
  /** Unregisters a listener `attach` registered (again: nothing). */
  detach<K extends keyof Topics & string>(topic: K, id: string, listener: PubSubListener<Topics[K]>): void;
  /** The Redis channel of (topic, id), for a PUBLISH queued elsewhere (a script's deferred commands). */
  channelOf(topic: keyof Topics & string, id: string): string;
  /** Called each time the subscriber connection is ready again after it dropped. */
  onResubscribed(cb: () => void): () => void;
  /** Counters for observability and tests. */
  stats(): { publishFailures: number; subscribeFailures: number; listeners: number };
}

/** What {@link PubSub.attach} registers. */
export interface PubSubListener<T> {
  onEvent(payload: T): void;
}

/**
 * Wraps `@graphql-yoga/redis-event-target` so that Redis failures never escape as unhandled
 * rejections (the event target ignores the promises of PUBLISH/SUBSCRIBE), and hands each event
 * to plain listeners: buffering is the subscriber's business (see bounded-queue.ts), so one slow
 * client cannot overflow a shared buffer and crash the process.
 */
export function createPubSub<Topics extends Record<string, unknown>>(
  opts: PubSubOptions,
): PubSub<Topics> {
  const { command, subscriber, logger } = opts;
  let publishFailures = 0;
  let subscribeFailures = 0;
  let listeners = 0;
  const publishClient = {
    publish(channel: string, message: string) {
      return command.publish(channel, message).catch((err: Error) => {
        publishFailures++;
        logger.warn({ err: err.message, channel }, 'publish failed');
        return 0;
      });
    },
  };
  // The SUBSCRIBE in flight (or done) per channel, so listeners can wait for it.
  const subscribed = new Map<string, Promise<void>>();
  const subscribeClient = {
    on: subscriber.on.bind(subscriber),
    subscribe(channel: string) {
      const done = subscriber.subscribe(channel).then(
        () => undefined,
        (err: Error) => {
          subscribeFailures++;
          logger.warn({ err: err.message, channel }, 'subscribe failed');
          subscribed.delete(channel);
          throw err;
        },
      );
      done.catch(() => undefined);
      subscribed.set(channel, done);
      return done;
    },
    unsubscribe(channel: string) {
      subscribed.delete(channel);
      return subscriber.unsubscribe(channel).catch((err: Error) => {
        logger.warn({ err: err.message, channel }, 'unsubscribe failed');
      });
    },
  };
  const target = createRedisEventTarget({
    publishClient: publishClient as unknown as Redis,
    subscribeClient: subscribeClient as unknown as Redis,
  });
  const channel = (topic: string, id: string) => `${opts.channelPrefix}${topic}:${id}`;

  const resubscribed = new Set<() => void>();
  let wasReady = false;
  subscriber.on('ready', () => {
    if (!wasReady) {
      wasReady = true;
      return;
    }
    // ioredis emits 'ready' before it re-sends SUBSCRIBE for every channel; a PING queued after
    // those answers once they are active, so what listeners read from storage then is not racing them.
    setImmediate(() => {
      subscriber
        .ping()
        .catch(() => undefined)
        .finally(() => {
          for (const cb of resubscribed) cb();
        });
    });
  });
  // ioredis emits 'ready' without a ready check too; treat an already-connected client as ready.
  if (subscriber.status === 'ready') wasReady = true;

  // The event target gets one callback per channel, which hands each event to the channel's
  // listeners in the order they attached.
  type Channel = { listeners: Set<PubSubListener<never>>; callback: (event: Event) => void };
  const channels = new Map<string, Channel>();
  function attach<K extends keyof Topics & string>(topic: K, id: string, listener: PubSubListener<Topics[K]>): Promise<void> {
    const ch = channel(topic, id);
    let entry = channels.get(ch);
    if (!entry) {
      const set = new Set<PubSubListener<never>>();
      entry = {
        listeners: set,
        callback: (event: Event) => {
          const detail = (event as CustomEvent<never>).detail;
          for (const l of set) {
            try {
              l.onEvent(detail);
            } catch (err) {
              logger.error({ err, channel: ch }, 'pubsub listener threw');
            }
          }
        },
      };
      channels.set(ch, entry);
      target.addEventListener(ch, entry.callback);
    }
    if (!entry.listeners.has(listener as PubSubListener<never>)) {
      entry.listeners.add(listener as PubSubListener<never>);
      listeners++;
    }
    return subscribed.get(ch) ?? Promise.resolve();
  }
  function detach<K extends keyof Topics & string>(topic: K, id: string, listener: PubSubListener<Topics[K]>): void {
    const ch = channel(topic, id);
    const entry = channels.get(ch);
    if (!entry?.listeners.delete(listener as PubSubListener<never>)) return;
    listeners--;
    if (entry.listeners.size > 0) return;
    channels.delete(ch);
    // The event target unsubscribes the channel with its last callback.
    target.removeEventListener(ch, entry.callback);
  }

  return {
    publish(topic, id, payload) {
      target.dispatchEvent(new CustomEvent(channel(topic, id), { detail: payload }));
    },
    channelOf: (topic, id) => channel(topic, id),
    publishIn(pipeline, topic, id, payload) {
      // As the event target serializes (JSON; its listeners parse with JSON).
      pipeline.publish(channel(topic, id), JSON.stringify(payload));
    },
    listen(topic, id, listener) {
      const entry = { onEvent: listener };
      return { ready: attach(topic, id, entry), remove: () => detach(topic, id, entry) };
    },
    attach,
    detach,
    onResubscribed(cb) {
      resubscribed.add(cb);
      return () => resubscribed.delete(cb);
    },
    stats: () => ({ publishFailures, subscribeFailures, listeners }),
  };
}
