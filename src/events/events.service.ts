import { AppError, badInput, cursorExpired, isRedisUnavailableError, unavailable } from '../errors.js';
import { BoundedQueue } from '../infra/bounded-queue.js';
import { ReleasingGenerator } from '../infra/releasable.js';
import type { Logger } from '../infra/logger.js';
import { settlesWithin } from '../infra/redis.js';
import type { EventSink, SinkSource } from '../infra/shared-execution.js';
import { checkedId } from '../infra/text.js';
import { decodeMessageId } from '../messages/message-id.js';
import type { MessageModel } from '../messages/messages.models.js';
import type { MessagesService } from '../messages/messages.service.js';
import type { RoomsService } from '../rooms/rooms.service.js';
import type { AppPubSub, RoomEventPayload } from '../topics.js';
import type { Viewer } from '../users/users.models.js';

/** Dependencies of {@link createEventsService}. */
export interface EventsServiceDeps {
  pubsub: AppPubSub;
  rooms: RoomsService;
  messages: MessagesService;
  logger: Logger;
  /** Events a subscription may hold while its client is not reading. */
  bufferSize: number;
  /** How long to wait for Redis to confirm a SUBSCRIBE. */
  subscribeTimeoutMs: number;
  /**
   * Every this many ms, one pipeline reads the latest seq of each room with open streams here, so a
   * message whose pub/sub event was lost, with no later message to reveal the gap, still arrives.
   * 0 turns the check off.
   */
  positionCheckMs: number;
  /**
   * Resolves once the command connection to Redis is ready again, rejects if it is not within a
   * bound. A catch-up read that meets an outage waits on it instead of ending the subscription: the
   * subscriber connection often comes back a moment before the command connection does.
   */
  waitForStorage: () => Promise<void>;
}

/** Features that follow who holds which room (room presence). Called once per stream each. */
export interface StreamHooks {
  opened(roomId: string, userId: string): Promise<void>;
  closed(roomId: string, userId: string): Promise<void>;
}

/** What a room stream yields: an event, or an error that ends the subscription with a code. */
export type StreamItem = RoomEventPayload | { type: 'StreamError'; error: AppError };

/** Room event streams behind `messageAdded` and `roomEvents`. */
export type EventsService = ReturnType<typeof createEventsService>;

/** Which events a stream wants. */
export type StreamKind = 'messages' | 'all' | 'typing' | 'presence' | 'polls';

const KIND_EVENTS: Record<Exclude<StreamKind, 'all'>, RoomEventPayload['type']> = {
  messages: 'MessageAdded',
  typing: 'TypingChanged',
  presence: 'PresenceChanged',
  polls: 'PollUpdated',
};

const CATCH_UP_BATCH = 100;
const STORAGE_RETRIES = 10;

/** The error of a cursor or stream whose room history was lost or reset. */
const historyReset = () =>
  cursorExpired('The room history was reset: reload the history and subscribe again', 'HISTORY_RESET');

/**
 * Creates the events service. A room stream listens to the room's channel before it reads the
 * room, so nothing published after that read is missed; message events are ordered and
 * de-duplicated by seq, and any gap (a replay `after` a cursor, a dropped event, a full buffer)
 * is filled from storage before anything newer is emitted.
 */
export function createEventsService(deps: EventsServiceDeps) {
  const { pubsub, rooms, messages, logger, bufferSize, subscribeTimeoutMs, positionCheckMs, waitForStorage } = deps;

  /** A catch-up read that rides out a Redis reconnect; other errors, and an outage that lasts, end the stream. */
  async function readWhenStorageIsBack(roomId: string, from: number, to: number) {
    // Bounded: a Redis that is connected but does not answer (each try times out) ends it too.
    for (let attempt = 1; ; attempt++) {
      try {
        return await messages.readRun(roomId, from, to);
      } catch (err) {
        if (!isRedisUnavailableError(err) || attempt >= STORAGE_RETRIES) throw err;
        await waitForStorage();
      }
    }
  }
  const open = new Set<RoomStream>();
  const env: StreamEnv = { pubsub, rooms, logger, bufferSize, readWhenStorageIsBack, hooks: null, open };
  // Events published while the subscriber connection was down are gone: every stream checks storage.
  pubsub.onResubscribed(() => {
    logger.info({ streams: open.size }, 'pub/sub reconnected: streams catch up from storage');
    for (const stream of open) stream.resync();
  });

  let checking = false;
  /**
   * One pipelined read of each room with streams here (its latest seq, epoch and members version),
   * then, only for streams whose room's members version moved since their membership was last
   * confirmed (and streams never checked), one pipelined read of those memberships: a stream behind
   * the stored seq re-reads storage, one whose history was reset fails with `CURSOR_EXPIRED`, and
   * one whose viewer is no longer a member ends, so a lost pub/sub event costs a few seconds, never
   * a message or a revocation. In steady state the check costs one command per room, not one per
   * subscription.
   */
  async function checkPositions(): Promise<void> {
    if (checking || open.size === 0) return;
    checking = true;
    try {
      const byRoom = new Map<string, RoomStream[]>();
      const byMember = new Map<string, RoomStream[]>();
      const group = (map: Map<string, RoomStream[]>, key: string, ctl: RoomStream) => {
        const list = map.get(key);
        if (list) list.push(ctl);
        else map.set(key, [ctl]);
      };
      for (const ctl of open) group(byRoom, ctl.roomId, ctl);
      const roomIds = [...byRoom.keys()];
      const positions = await rooms.positions(roomIds);
      const versionOf = new Map<string, number>();
      roomIds.forEach((roomId, i) => {
        const pos = positions[i];
        if (pos) versionOf.set(roomId, pos.membersVersion);
        for (const ctl of byRoom.get(roomId) ?? []) {
          if (!pos || pos.epoch !== ctl.epoch) {
            ctl.fail(historyReset());
            continue;
          }
          if (ctl.lastSeq < pos.lastSeq) ctl.resync();
          // Memberships are read after the version: a removal between the two reads shows in
          // them, or moves the version the next check compares with.
          if (ctl.checkedMembersVersion !== pos.membersVersion) group(byMember, `${ctl.roomId}\n${ctl.viewerId}`, ctl);
        }
      });
      if (byMember.size === 0) return;
      const lists = [...byMember.values()];
      const memberships = await rooms.areMembers(
        lists.map((list) => ({ roomId: (list[0] as RoomStream).roomId, userId: (list[0] as RoomStream).viewerId })),
      );
      lists.forEach((list, i) => {
        for (const ctl of list) {
          if (memberships[i] === false) ctl.revoke();
          else ctl.checkedMembersVersion = versionOf.get(ctl.roomId) ?? null;
        }
      });
    } catch (err) {
      logger.debug({ err: (err as Error).message }, 'position check failed');
    } finally {
      checking = false;
    }
  }
  const positionTimer = positionCheckMs > 0 ? setInterval(() => void checkPositions(), positionCheckMs) : null;
  positionTimer?.unref();

  async function withTimeout(ready: Promise<void>): Promise<void> {
    if (!(await settlesWithin(ready, subscribeTimeoutMs))) throw unavailable();
    await ready.catch((err: unknown) => {
      throw err instanceof AppError ? err : unavailable();
    });
  }

  return {
    /** Open streams on this instance (for tests and metrics). */
    openCount: () => open.size,

    /** Lets a feature follow streams opening and closing (room presence). */
    setStreamHooks(hooks: StreamHooks): void {
      env.hooks = hooks;
    },

    /** Runs the position check now (tests; the timer runs it every `positionCheckMs`). */
    checkPositions,

    /** Ends every open stream (graceful shutdown): their subscriptions complete. */
    closeAll(): void {
      if (positionTimer) clearInterval(positionTimer);
      for (const stream of [...open]) stream.queue.end();
    },

    /**
     * Opens a stream of a room's events for a member. With `after` (a message id of this room),
     * the messages after it come first. Ends when the viewer stops being a member.
     */
    async openRoomStream(
      viewer: Viewer,
      roomIdArg: string,
      opts: {
        after?: string | null;
        kind: StreamKind;
        /** Narrows a one-kind stream further (one poll of the room); called once per event, in order. */
        match?: (ev: RoomEventPayload) => boolean;
        /**
         * The subscription's WebSocket sink (see shared-execution.ts). With one, events go to it
         * instead of being yielded: straight from the pub/sub listener while the stream is live and
         * in order, from the loop below otherwise. Only an ending error is yielded.
         */
        sink?: EventSink;
      },
    ): Promise<AsyncGenerator<StreamItem, void, undefined>> {
      const roomId = checkedId('roomId', roomIdArg);
      const after = opts.after != null ? decodeMessageId('after', opts.after) : null;
      if (after && after.roomId !== roomId) throw badInput('after', 'after is a message of another room');
      const stream = new RoomStream(env, viewer.id, roomId, opts.kind, opts.match, opts.sink);
      try {
        await withTimeout(pubsub.attach('room', roomId, stream));
        const room = await rooms.requireMember(viewer, roomId).catch((err: unknown) => {
          // A cursor into a room that no longer exists: its history was lost (Redis reset).
          throw after && err instanceof AppError && err.code === 'NOT_FOUND' ? historyReset() : err;
        });
        if (after && (after.epoch !== room.epoch || after.seq > room.lastSeq)) throw historyReset();
        if (after && after.seq < room.firstSeq - 1) {
          throw cursorExpired('after is older than the history kept for this room: reload the history', 'RETENTION');
        }
        stream.start(after?.seq ?? room.lastSeq, room.epoch, room.lastSeq);
      } catch (err) {
        pubsub.detach('room', roomId, stream);
        throw err;
      }
      return stream;
    },
  };
}

/** A marker that wakes a stream so it re-reads storage. */
type Resync = { type: 'Resync' };

/** What every stream of the service shares. */
interface StreamEnv {
  pubsub: AppPubSub;
  rooms: RoomsService;
  logger: Logger;
  bufferSize: number;
  readWhenStorageIsBack(roomId: string, from: number, to: number): ReturnType<MessagesService['readRun']>;
  /** Room presence's hooks, once set. */
  hooks: StreamHooks | null;
  /** The open streams (for the position check, a pub/sub reconnect, and shutdown). */
  open: Set<RoomStream>;
}

/**
 * One open room stream: an async iterator to its subscription, listening to the room's channel.
 * A class, so an idle subscription holds one object and its queue rather than a dozen closures
 * over shared variables (memory per idle subscription: README § Delivery). `return()` and `throw()`
 * release first (ReleasingGenerator).
 *
 * Two ways to run, with the same steps ({@link gapToFill}, {@link readGap}, {@link stepOf}):
 * - without a sink, an async generator ({@link run}) that yields each event;
 * - with a WebSocket sink, a pump ({@link pump}) that runs only while there is something to do
 *   (storage to read, queued events) and hands events to the sink; while the stream is live and
 *   idle no async function is suspended for it, and events go to the sink straight from the
 *   listener ({@link direct}). The sink runs the stream (`startThroughSink`, shared-execution.ts'
 *   SinkSource) and gets its end (its error, if any); read through `next()` instead, the stream
 *   answers only when it ends.
 */
class RoomStream extends ReleasingGenerator<StreamItem> implements SinkSource {
  /** Storage holds messages not delivered yet: read them before anything newer. */
  gap = false;
  failure: AppError | null = null;
  revoked = false;
  lastSeq = 0;
  epoch = '';
  /** The room's members version at which the viewer's membership was last confirmed by a check. */
  checkedMembersVersion: number | null = null;
  held = false;
  readonly queue: BoundedQueue<RoomEventPayload | Resync>;
  /** Sink mode: where the pump is (see {@link PumpState}). */
  #state = PumpState.NotStarted;
  /** Sink mode: the consumer's `next()` waiting for the end. */
  #waiter: ((r: IteratorResult<StreamItem, void>) => void) | null = null;
  /** Sink mode: the end, when it came before the consumer asked. */
  #end: IteratorResult<StreamItem, void> | null = null;
  /** Sink mode: the sink runs the subscription and gets the end (`startThroughSink`), not `next()`. */
  #throughSink = false;

  constructor(
    private readonly env: StreamEnv,
    readonly viewerId: string,
    readonly roomId: string,
    private readonly kind: StreamKind,
    private readonly match: ((ev: RoomEventPayload) => boolean) | undefined,
    /**
     * The subscription's WebSocket sink (see shared-execution.ts). With one, events go to it instead
     * of being yielded: straight from the pub/sub listener while the stream is live and in order,
     * from the pump otherwise. Only an ending error is answered to `next()`.
     */
    readonly sink: EventSink | undefined,
  ) {
    super();
    this.queue = new BoundedQueue<RoomEventPayload | Resync>(env.bufferSize, this);
  }

  /** The queue ended (fail, revoke, overflow past recovery, release, shutdown). */
  queueClosed(): void {
    this.env.open.delete(this);
    this.#wake();
  }

  /** Live from `lastSeq` on (the room read after the listener was ready). */
  start(lastSeq: number, epoch: string, roomLastSeq: number): void {
    this.lastSeq = lastSeq;
    this.epoch = epoch;
    // ||=: the listener may already have marked a gap (overflow) during the reads.
    this.gap ||= lastSeq < roomLastSeq;
    // Not if the queue already ended (overflowed past recovery during the reads): the loop reports it.
    if (!this.queue.closed) this.env.open.add(this);
    this.hold();
  }

  /** Only streams that emit messages follow the room's seq (replay, gap fill); typing and presence streams carry ephemeral state. */
  get tracksMessages(): boolean {
    return this.kind === 'messages' || this.kind === 'all';
  }

  wanted(ev: RoomEventPayload): boolean {
    if (ev.type === 'MemberLeft' && ev.userId === this.viewerId) return true;
    // A private receipt is for the reader's own devices only.
    if (this.kind === 'all') return ev.type !== 'ReadReceipt' || !ev.private || ev.userId === this.viewerId;
    return ev.type === KIND_EVENTS[this.kind] && (this.match?.(ev) ?? true);
  }

  /**
   * The direct path: an event goes out from the listener itself when the pump is idle (nothing
   * queued or being handed over), no gap is open, and the socket keeps up. A message that does not
   * follow the last one, and the viewer's own MemberLeft, take the queue.
   */
  direct(ev: RoomEventPayload): boolean {
    const sink = this.sink;
    if (!sink || this.#state !== PumpState.Idle || this.gap || this.failure || this.revoked || !sink.ready) return false;
    if (ev.type === 'MessageAdded') {
      const seq = ev.message.seq;
      if (seq <= this.lastSeq) return true; // already delivered
      if (seq !== this.lastSeq + 1) return false;
      this.lastSeq = seq;
    } else if (ev.type === 'MemberLeft' && ev.userId === this.viewerId) {
      return false;
    }
    sink.push(ev);
    return true;
  }

  onEvent(ev: RoomEventPayload): void {
    if (!this.wanted(ev) || this.direct(ev)) return;
    if (this.queue.push(ev)) return this.#wake();
    // Full. Messages can be read again from storage, so drop them and remember the gap; other
    // events cannot, so a client that still has no room for one is told instead of losing it.
    this.queue.retain((e) => e.type !== 'MessageAdded');
    this.gap = true;
    if (ev.type !== 'MessageAdded' && !this.queue.push(ev)) {
      this.failure = cursorExpired(
        'This subscription fell too far behind and was ended: resubscribe with `after` set to the last message id received',
        'SLOW_CONSUMER',
      );
      this.env.logger.warn({ roomId: this.roomId, userId: this.viewerId }, 'slow subscriber ended');
      this.queue.end();
    }
    this.#wake();
  }

  /** Re-read storage from the last delivered seq. */
  resync(): void {
    this.gap = true;
    this.queue.push({ type: 'Resync' });
    this.#wake();
  }

  /** End with an error (history reset). */
  fail(error: AppError): void {
    this.failure ??= error;
    this.queue.end();
  }

  /** End quietly: the viewer is no longer a member (its MemberLeft event was lost). */
  revoke(): void {
    this.revoked = true;
    this.queue.end();
  }

  /** Room presence: a member is present while one of their subscriptions holds the room. */
  hold(): void {
    const hooks = this.env.hooks;
    if (this.held || !hooks) return;
    this.held = true;
    hooks.opened(this.roomId, this.viewerId).catch((err: Error) => this.env.logger.debug({ err: err.message }, 'stream hook failed'));
  }

  unhold(): void {
    const hooks = this.env.hooks;
    if (!this.held || !hooks) return;
    this.held = false;
    hooks.closed(this.roomId, this.viewerId).catch((err: Error) => this.env.logger.debug({ err: err.message }, 'stream hook failed'));
  }

  release(): void {
    this.env.pubsub.detach('room', this.roomId, this);
    this.queue.end();
    this.unhold();
  }

  /** True when storage must be read before anything newer (queued events still drain after fail()/revoke()). */
  gapToFill(): boolean {
    if (this.gap && !this.tracksMessages) this.gap = false;
    return this.gap && !this.failure && !this.revoked;
  }

  /** The next messages after `lastSeq` from storage, or null once the stream must end (`failure` set). */
  async readGap(): Promise<MessageModel[] | null> {
    const batch = await this.env.readWhenStorageIsBack(this.roomId, this.lastSeq + 1, this.lastSeq + CATCH_UP_BATCH);
    if (!batch || batch.epoch !== this.epoch) {
      this.failure = historyReset();
      return null;
    }
    if (this.lastSeq + 1 < batch.firstSeq) {
      this.failure = cursorExpired('This subscription fell behind the history kept for this room: reload the history', 'RETENTION');
      return null;
    }
    if (batch.messages.length === 0 && this.lastSeq < batch.lastSeq) {
      this.failure = historyReset();
      return null;
    }
    this.gap = this.lastSeq + batch.messages.length < batch.lastSeq;
    return batch.messages;
  }

  /** What to do with a queued event (moves `lastSeq` past a message to deliver, opens a gap). */
  stepOf(ev: RoomEventPayload | Resync): Step {
    if (ev.type === 'Resync') return Step.Skip;
    if (ev.type === 'MessageAdded') {
      const seq = ev.message.seq;
      if (seq <= this.lastSeq) return Step.Skip;
      // An event went missing (dropped on overflow, or lost by pub/sub): storage has it.
      if (seq > this.lastSeq + 1) {
        this.gap = true;
        return Step.Skip;
      }
      this.lastSeq = seq;
      return Step.Deliver;
    }
    if (ev.type === 'MemberLeft' && ev.userId === this.viewerId) return this.kind === 'all' ? Step.DeliverAndEnd : Step.End;
    return Step.Deliver;
  }

  /** Without a sink: yields each event (the consumer pulls, and so paces the stream). */
  protected async *run(): AsyncGenerator<StreamItem, void, undefined> {
    try {
      for (;;) {
        if (this.gapToFill()) {
          const messages = await this.readGap();
          if (!messages) break;
          for (const message of messages) {
            this.lastSeq = message.seq;
            yield { type: 'MessageAdded', message };
          }
          continue;
        }
        const next = await this.queue.next();
        if (next.done) break;
        const step = this.stepOf(next.value);
        if (step === Step.Skip) continue;
        if (step !== Step.End) yield next.value as RoomEventPayload;
        if (step !== Step.Deliver) return;
      }
      if (this.failure) yield { type: 'StreamError', error: this.failure };
    } catch (err) {
      yield { type: 'StreamError', error: err instanceof AppError ? err : unavailable() };
    } finally {
      this.release();
    }
  }

  /** With a sink: hands events to it (waiting for each to leave: back-pressure) until idle or over. */
  private async pump(sink: EventSink): Promise<void> {
    let failure: AppError | null = null;
    try {
      for (;;) {
        if (this.#isOver()) return;
        if (this.gapToFill()) {
          const messages = await this.readGap();
          if (!messages) break;
          for (const message of messages) {
            if (this.#isOver()) return;
            this.lastSeq = message.seq;
            await sink.send({ type: 'MessageAdded', message });
          }
          continue;
        }
        const ev = this.queue.take();
        if (ev === undefined) {
          if (this.queue.closed) break;
          // Live and idle: the listener delivers (direct) or queues and wakes the pump.
          this.#state = PumpState.Idle;
          return;
        }
        const step = this.stepOf(ev);
        if (step === Step.Skip) continue;
        if (step !== Step.End) await sink.send(ev as RoomEventPayload);
        if (step !== Step.Deliver) return this.#finish(null);
      }
      failure = this.failure;
    } catch (err) {
      failure = err instanceof AppError ? err : unavailable();
    }
    this.#finish(failure);
  }

  /** Sink mode: returned, or ended (a method: the pump asks again after each await). */
  #isOver(): boolean {
    return this.#state === PumpState.Over;
  }

  /** Sink mode: runs the pump unless it runs already, has not been asked for yet, or is over. */
  #wake(): void {
    const sink = this.sink;
    if (!sink || (this.#state !== PumpState.Idle && this.#state !== PumpState.Ready)) return;
    this.#state = PumpState.Pumping;
    // The pump catches what its steps throw; this is for a bug in its own ending.
    this.pump(sink).catch((err: unknown) => this.env.logger.error({ err }, 'room stream pump failed'));
  }

  /** Sink mode: the stream is over; the sink (or `next()`) gets its error, then the end. */
  #finish(failure: AppError | null): void {
    if (this.#state === PumpState.Over) return;
    this.#state = PumpState.Over;
    this.release();
    const error: StreamItem | null = failure ? { type: 'StreamError', error: failure } : null;
    if (this.#throughSink) (this.sink as EventSink).end(error);
    else this.#answer(error ? { done: false, value: error } : STREAM_DONE);
  }

  /** Sink mode, run by the sink (shared-execution.ts, SinkSource): starts the pump; the end goes to the sink. */
  startThroughSink(): void {
    if (!this.sink || this.#state !== PumpState.NotStarted) return;
    this.#throughSink = true;
    this.#state = PumpState.Ready;
    this.#wake();
  }

  /** Sink mode, run by the sink: the subscription ended. */
  stop(): void {
    this.#state = PumpState.Over;
    this.release();
  }

  #answer(result: IteratorResult<StreamItem, void>): void {
    const waiter = this.#waiter;
    this.#waiter = null;
    if (waiter) waiter(result);
    else this.#end = result;
  }

  override next(): Promise<IteratorResult<StreamItem, void>> {
    if (!this.sink) return super.next();
    const end = this.#end;
    if (end) {
      this.#end = end.done ? end : STREAM_DONE;
      return Promise.resolve(end);
    }
    if (this.#state === PumpState.Over) return Promise.resolve(STREAM_DONE);
    const answer = new Promise<IteratorResult<StreamItem, void>>((resolve) => (this.#waiter = resolve));
    if (this.#state === PumpState.NotStarted) {
      this.#state = PumpState.Ready;
      this.#wake();
    }
    return answer;
  }

  override return(): Promise<IteratorResult<StreamItem, void>> {
    if (!this.sink) return super.return();
    this.stop();
    // A waiting next() ends, and so does every later one (an end not yet read is dropped).
    this.#answer(STREAM_DONE);
    this.#end = STREAM_DONE;
    return Promise.resolve(STREAM_DONE);
  }

  override throw(err: unknown): Promise<IteratorResult<StreamItem, void>> {
    if (!this.sink) return super.throw(err);
    void this.return();
    return Promise.reject(err);
  }
}

/** Where a sink-mode stream's pump is. */
const enum PumpState {
  /** The consumer has not asked yet: events wait in the queue. */
  NotStarted,
  /** Asked, not yet pumping (transient). */
  Ready,
  Pumping,
  /** Live, nothing to do: events go to the sink from the listener. */
  Idle,
  Over,
}

/** What a stream does with a queued event. */
const enum Step {
  Skip,
  Deliver,
  /** The viewer's own MemberLeft on a stream of every event: deliver it, then end. */
  DeliverAndEnd,
  /** The viewer's own MemberLeft on a stream of one kind: end. */
  End,
}

const STREAM_DONE: IteratorResult<StreamItem, void> = Object.freeze({ done: true, value: undefined });
