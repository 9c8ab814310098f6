import DataLoader from 'dataloader';
import type { YogaInitialContext } from 'graphql-yoga';
import type { PresenceModel } from './presence/presence.models.js';
import type { MessageModel } from './messages/messages.models.js';
import type { UnreadState } from './receipts/receipts.service.js';
import type { PollModel } from './polls/polls.models.js';
import type { Authenticator, AuthContext } from './infra/auth.js';
import { unauthenticated } from './errors.js';
import { createMessageLoader } from './messages/messages.loaders.js';
import { createIsMemberLoader, createMemberCountLoader, createRoomLoader } from './rooms/rooms.loaders.js';
import type { Services } from './services.js';
import { createUserLoader } from './users/users.loaders.js';
import type { Viewer } from './users/users.models.js';

/**
 * One operation's DataLoaders, each made on first use: most operations touch one or two, and an
 * idle subscription's context should cost nothing until an event arrives.
 */
export class Loaders {
  #user?: ReturnType<typeof createUserLoader>;
  #room?: ReturnType<typeof createRoomLoader>;
  #memberCount?: ReturnType<typeof createMemberCountLoader>;
  #isMember?: ReturnType<typeof createIsMemberLoader>;
  #message?: ReturnType<typeof createMessageLoader>;
  #presence?: DataLoader<string, PresenceModel>;
  #onlineCount?: DataLoader<string, number>;
  #unread = new Map<string, DataLoader<string, UnreadState>>();
  #readCount?: DataLoader<MessageModel, number, string>;
  #pollVotes = new Map<string, DataLoader<PollModel, number[], string>>();
  #pollVoters?: DataLoader<PollVotersKey, string[], string>;
  constructor(private readonly services: Services) {}
  get user() {
    return (this.#user ??= createUserLoader(this.services.users));
  }
  /** Makes `user` answer for a user whose name is known fresh (no Redis read for them). */
  knowUser(id: string, name: string): this {
    this.user.prime(id, { id, name, createdAt: 0 });
    return this;
  }
  get room() {
    return (this.#room ??= createRoomLoader(this.services.rooms));
  }
  get memberCount() {
    return (this.#memberCount ??= createMemberCountLoader(this.services.rooms));
  }
  get isMember() {
    return (this.#isMember ??= createIsMemberLoader(this.services.rooms));
  }
  get message() {
    return (this.#message ??= createMessageLoader(this.services.messages));
  }
  get presence() {
    return (this.#presence ??= new DataLoader<string, PresenceModel>((ids) => this.services.presence.getMany(ids)));
  }
  /** Unread state of `viewerId` by room id. */
  unread(viewerId: string) {
    let loader = this.#unread.get(viewerId);
    if (!loader) {
      loader = new DataLoader<string, UnreadState>((ids) => this.services.receipts.unread(viewerId, ids));
      this.#unread.set(viewerId, loader);
    }
    return loader;
  }
  get readCount() {
    return (this.#readCount ??= new DataLoader<MessageModel, number, string>((ms) => this.services.receipts.readCounts(ms), {
      cacheKeyFn: (m) => `${m.roomId}\n${m.seq}`,
    }));
  }
  /** The vote of `viewerId` (option indexes) by poll. */
  pollVotes(viewerId: string) {
    let loader = this.#pollVotes.get(viewerId);
    if (!loader) {
      loader = new DataLoader<PollModel, number[], string>((polls) => this.services.polls.votesOf(viewerId, polls), {
        cacheKeyFn: (p) => p.id,
      });
      this.#pollVotes.set(viewerId, loader);
    }
    return loader;
  }
  /** Who chose an option of a poll (at most `first`). */
  get pollVoters() {
    return (this.#pollVoters ??= new DataLoader<PollVotersKey, string[], string>((keys) => this.services.polls.voters(keys), {
      cacheKeyFn: (k) => `${k.poll.id}\n${k.index}\n${k.first}`,
    }));
  }
  get onlineCount() {
    return (this.#onlineCount ??= new DataLoader<string, number>((ids) => this.services.presence.onlineCounts(ids)));
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
      if (viewer) services.users.touch(viewer).catch(() => undefined);
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
