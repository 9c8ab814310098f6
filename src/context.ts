import DataLoader from 'dataloader';
import type { GraphQLResolveInfo } from 'graphql';
import type { YogaInitialContext } from 'graphql-yoga';
import type { PipelineBatch } from './infra/pipeline-batch.js';
import { unawaited } from './infra/redis.js';
import { selectsField } from './infra/selection.js';
import type { EventSink } from './infra/shared-execution.js';
import type { PresenceModel } from './presence/presence.models.js';
import type { MessageModel } from './messages/messages.models.js';
import type { HistoryArgs } from './messages/messages.service.js';
import type { Connection } from './infra/pagination.js';
import type { RoomModel } from './rooms/rooms.models.js';
import type { UnreadState } from './receipts/receipts.service.js';
import type { PollModel } from './polls/polls.models.js';
import type { Authenticator, AuthContext } from './infra/auth.js';
import { unauthenticated } from './errors.js';
import { createMessageLoader } from './messages/messages.loaders.js';
import { createIsMemberLoader, createMemberCountLoader, createRoomLoader } from './rooms/rooms.loaders.js';
import type { Services } from './services.js';
import { createUserLoader } from './users/users.loaders.js';
import type { UserModel, Viewer } from './users/users.models.js';

/** `first`/`after` of a connection field. */
type PageArgs = { first?: number | null; after?: string | null };

/** Cache key of a message: room and seq. */
const messageKey = (m: { roomId: string; seq: number }) => `${m.roomId}\n${m.seq}`;

/** The loaders of one operation, made on first use (see {@link Loaders}). */
class LoaderSlots {
  batch?: PipelineBatch;
  user?: ReturnType<typeof createUserLoader>;
  room?: ReturnType<typeof createRoomLoader>;
  memberCount?: ReturnType<typeof createMemberCountLoader>;
  isMember?: ReturnType<typeof createIsMemberLoader>;
  message?: ReturnType<typeof createMessageLoader>;
  presence?: DataLoader<string, PresenceModel>;
  onlineCount?: DataLoader<string, number>;
  /** Loaders whose answers depend on a viewer, by `<kind>\n<viewerId>`; made on first use. */
  perViewer?: Map<string, DataLoader<never, unknown, string>>;
  /** Users known fresh without a read ({@link knowUser}). */
  known?: Map<string, UserModel>;
  readCount?: DataLoader<MessageModel, number, string>;
  pollVoters?: DataLoader<PollVotersKey, string[], string>;
  readBy?: DataLoader<{ message: MessageModel; first: number }, string[], string>;
}

/**
 * One operation's DataLoaders, each made on first use: most operations touch one or two, and an
 * idle subscription's context should cost nothing until an event arrives. Every loader dispatches
 * into one {@link PipelineBatch}: whatever a wave of resolvers asks for (users, rooms, memberships,
 * messages, watermarks, presence) is one round trip, whatever the page size.
 */
export class Loaders {
  /** Made with the first loader: an idle subscription's context holds the services and nothing else. */
  #slots: LoaderSlots | null = null;
  constructor(private readonly services: Services) {}
  get #s(): LoaderSlots {
    return (this.#slots ??= new LoaderSlots());
  }
  /** The operation's pipeline of the tick, shared by every loader. */
  get batch() {
    return (this.#s.batch ??= this.services.newBatch());
  }
  get user() {
    if (!this.#s.user) {
      this.#s.user = createUserLoader(this.services.users, this.batch);
      if (this.#s.known) for (const [id, user] of this.#s.known) this.#s.user.prime(id, user);
    }
    return this.#s.user;
  }
  /**
   * A user for a field that returns one (`Message.sender`, `Room.owner`): when the query selects
   * the user's `presence`, it is loaded in the same tick, so the pair costs one round trip.
   */
  userFor(id: string, info: GraphQLResolveInfo): UserModel | Promise<UserModel> {
    if (selectsField(info, 'presence')) this.presence.load(id).catch(() => undefined);
    // Known (the sender of the event being resolved): answered at once, so a subscription event's
    // result is computed synchronously and the direct path writes it without a promise per subscriber.
    return this.#s.known?.get(id) ?? this.user.load(id);
  }
  /** Users by id, in order; fails if one cannot be loaded. */
  async users(ids: readonly string[]): Promise<UserModel[]> {
    return (await this.user.loadMany(ids)).map((u) => {
      if (u instanceof Error) throw u;
      return u;
    });
  }
  /** Makes `user` answer for a user whose name is known fresh (no Redis read for them). */
  knowUser(id: string, name: string): this {
    const user = { id, name, createdAt: 0 };
    (this.#s.known ??= new Map()).set(id, user);
    // The loader, once made, is primed with every known user (most requests never make it).
    this.#s.user?.prime(id, user);
    return this;
  }
  get room() {
    return (this.#s.room ??= createRoomLoader(this.services.rooms, this.batch));
  }
  get memberCount() {
    return (this.#s.memberCount ??= createMemberCountLoader(this.services.rooms, this.batch));
  }
  get isMember() {
    return (this.#s.isMember ??= createIsMemberLoader(this.services.rooms, this.batch));
  }
  get message() {
    return (this.#s.message ??= createMessageLoader(this.services.messages, this.batch));
  }
  get presence() {
    return (this.#s.presence ??= new DataLoader<string, PresenceModel>((ids) => this.batch.run(this.services.presence.readPresence(ids))));
  }
  /** Unread state of `viewerId` by room id. */
  unread(viewerId: string) {
    return this.#ofViewer<string, UnreadState>('unread', viewerId, (ids) => this.batch.run(this.services.receipts.readUnread(viewerId, ids)));
  }
  /** Members present by room id, as `viewerId` may see them (`FORBIDDEN` where not a member). */
  onlineMemberIds(viewerId: string) {
    return this.#ofViewer<string, string[]>('onlineMemberIds', viewerId, (ids) => this.batch.run(this.services.presence.readOnlineMemberIds(viewerId, ids)));
  }
  /** Users typing by room id, as `viewerId` may see them (`FORBIDDEN` where not a member). */
  typingIds(viewerId: string) {
    return this.#ofViewer<string, string[]>('typingIds', viewerId, (ids) => this.batch.run(this.services.typing.readUserIds(viewerId, ids)));
  }
  /** History pages by room as `viewerId` may read them (`Room.messages` of a list: two round trips in all). */
  history(viewerId: string) {
    return this.#ofViewer<{ roomId: string; args: HistoryArgs }, Connection<MessageModel>>(
      'history',
      viewerId,
      (queries) => this.services.messages.histories(viewerId, queries, (read) => this.batch.run(read)),
      ({ roomId, args }) => JSON.stringify([roomId, args.first, args.after, args.last, args.before]),
    );
  }
  /** Pages of member ids by room as `viewerId` may read them (`Room.members` of a list: one round trip). */
  memberPages(viewerId: string) {
    return this.#ofViewer<{ room: RoomModel; args: PageArgs }, Connection<string>>(
      'memberPages',
      viewerId,
      (queries) => this.services.rooms.memberPages(viewerId, queries, (read) => this.batch.run(read)),
      ({ room, args }) => JSON.stringify([room.id, args.first, args.after]),
    );
  }
  get readCount() {
    return (this.#s.readCount ??= new DataLoader<MessageModel, number, string>((ms) => this.batch.run(this.services.receipts.readReadCounts(ms)), {
      cacheKeyFn: messageKey,
    }));
  }
  /** The vote of `viewerId` (option indexes) by poll. */
  pollVotes(viewerId: string) {
    return this.#ofViewer<PollModel, number[]>('pollVotes', viewerId, (polls) => this.services.polls.votesOf(viewerId, polls), (p) => p.id);
  }
  /** Who chose an option of a poll (at most `first`). */
  get pollVoters() {
    return (this.#s.pollVoters ??= new DataLoader<PollVotersKey, string[], string>((keys) => this.services.polls.voters(keys), {
      cacheKeyFn: (k) => `${k.poll.id}\n${k.index}\n${k.first}`,
    }));
  }
  /** Public readers of a message other than its sender, at most `first`. */
  get readBy() {
    return (this.#s.readBy ??= new DataLoader<{ message: MessageModel; first: number }, string[], string>(
      (queries) => this.batch.run(this.services.receipts.readReadBy(queries)),
      { cacheKeyFn: (q) => `${messageKey(q.message)}\n${q.first}` },
    ));
  }
  get onlineCount() {
    return (this.#s.onlineCount ??= new DataLoader<string, number>((ids) => this.batch.run(this.services.presence.readOnlineCounts(ids))));
  }
  /** The `kind` loader of `viewerId`, made on first use (an idle subscription's context holds none). */
  #ofViewer<K, V>(
    kind: string,
    viewerId: string,
    load: (keys: readonly K[]) => Promise<(V | Error)[]>,
    cacheKeyFn?: (key: K) => string,
  ): DataLoader<K, V, string> {
    const loaders = (this.#s.perViewer ??= new Map());
    const key = `${kind}\n${viewerId}`;
    let loader = loaders.get(key) as DataLoader<K, V, string> | undefined;
    if (!loader) {
      loader = new DataLoader<K, V, string>(load, cacheKeyFn ? { cacheKeyFn } : {});
      loaders.set(key, loader as unknown as DataLoader<never, unknown, string>);
    }
    return loader;
  }
}

/** An option of a poll and how many of its voters to list. */
interface PollVotersKey {
  poll: PollModel;
  index: number;
  first: number;
}

/** The per-operation context every resolver receives. */
export interface AppContext extends AuthContext {
  viewer: Viewer | null;
  services: Services;
  loaders: Loaders;
  /** A WebSocket subscription's direct path to its socket (set by useSharedExecution). */
  eventSink?: EventSink;
}

/** What the transports hand to the context factory besides yoga's own fields. */
export interface TransportContext {
  /** Set by the WebSocket server, which authenticated the connection in `connection_init`. */
  wsViewer?: Viewer | null;
}

/** Builds one operation's loaders (lazily). */
export const createLoaders = (services: Services) => new Loaders(services);

/**
 * Builds the context: the viewer (from the WebSocket's `connection_init`, or from the HTTP/SSE
 * `Authorization` header) and fresh loaders. A bad token leaves `viewer` null with the reason, and
 * `useAuth` refuses the operation.
 */
export function createContextFactory(services: Services, auth: Authenticator) {
  return async (initial: YogaInitialContext & TransportContext): Promise<Omit<AppContext, keyof YogaInitialContext>> => {
    let viewer: Viewer | null = null;
    let authError: string | null = null;
    if (initial.wsViewer !== undefined) {
      viewer = initial.wsViewer;
    } else {
      try {
        viewer = await auth.fromHeader(initial.request?.headers.get('authorization'));
      } catch (err) {
        authError = err instanceof Error ? err.message : 'invalid token';
      }
      // A user exists from their first authenticated request; not awaited (see touch()).
      if (viewer) {
        const v = viewer;
        unawaited(() => services.users.touch(v)).catch(() => undefined);
      }
    }
    // The viewer's name is the one their token carries, which this request has just stored.
    const loaders = createLoaders(services);
    if (viewer && initial.wsViewer === undefined) loaders.knowUser(viewer.id, viewer.name);
    return { viewer, authError, services, loaders };
  };
}

/** The viewer, or `UNAUTHENTICATED` (useAuth already refuses anonymous operations; this narrows the type). */
export function requireViewer(ctx: AppContext): Viewer {
  if (!ctx.viewer) throw unauthenticated();
  return ctx.viewer;
}
