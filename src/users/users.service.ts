import type { Redis } from 'ioredis';
import type { Clock } from '../infra/clock.js';
import { execPipeline, runRead, type PipelineRead } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { userKeys } from './users.keys.js';
import type { UserModel, Viewer } from './users.models.js';
import { pipelineOf } from '../infra/direct-pipeline.js';

/** Dependencies of {@link createUsersService}. */
export interface UsersServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  clock: Clock;
}

/** Users: created from tokens, read in batches. */
export type UsersService = ReturnType<typeof createUsersService>;

const DONE = Promise.resolve();

/** Reads users (HMGET each); null for ids never seen. */
const readUsers =
  (ids: readonly string[]): PipelineRead<(UserModel | null)[]> =>
  (pipeline) => {
    for (const id of ids) pipeline.hmget(userKeys.user(id), 'name', 'createdAt');
    return (results) =>
      ids.map((id, i) => {
        const [name, createdAt] = (results[i] as (string | null)[] | undefined) ?? [];
        if (name == null) return null;
        return { id, name, createdAt: Number(createdAt ?? 0) };
      });
  };

/** How long this instance trusts that a user it wrote is stored with that name. */
export const TOUCH_FRESH_MS = 60_000;

/**
 * The users this instance wrote in the current period, with the name written: id -> name, all
 * dropped when a period of `periodMs` has passed, so each active user is written again once per
 * period and the memory stays bounded by the users active in one. Emptied by `forget()`.
 */
export class RecentlyWritten {
  #written = new Map<string, string>();
  #since: number;

  constructor(
    private readonly clock: Clock,
    private readonly periodMs: number,
  ) {
    this.#since = clock.now();
  }

  /** True when `id` was written with `name` in this period; else records it as written. */
  seen(id: string, name: string): boolean {
    const now = this.clock.now();
    if (now - this.#since >= this.periodMs) {
      this.#written = new Map();
      this.#since = now;
    }
    if (this.#written.get(id) === name) return true;
    this.#written.set(id, name);
    return false;
  }

  /** Drops `id` (its write failed), or everything (the connection the writes went on closed). */
  forget(id?: string): void {
    if (id === undefined) this.#written = new Map();
    else this.#written.delete(id);
  }
}

/** Creates the users service. */
export function createUsersService({ redis, scripts, clock }: UsersServiceDeps) {
  const touchScript = scripts.get('touchUser');
  const written = new RecentlyWritten(clock, TOUCH_FRESH_MS);
  // Whatever Redis held may be gone when the connection comes back (a restart without persistence,
  // a failover to an empty replica): write every user again from their next request.
  redis.on('close', () => written.forget());
  return {
    /**
     * Makes sure the viewer exists with the name from their token (the contract's "a user exists
     * from the first authenticated request; name is refreshed from the token"). Not awaited by
     * callers: the write shares the command connection with everything the request does next, and
     * Redis runs a connection's commands in order, so the request already reads what it wrote, and
     * no request waits a round trip for it. A failure (Redis away) is logged by the caller's catch.
     *
     * Written once per user and name per {@link TOUCH_FRESH_MS} on this instance, not on every
     * request: users are never deleted, so a user this instance wrote on the same connection still
     * exists (Redis losing data closes the connection), and a new name in the token is written at
     * once. A failed write, or the connection closing, forgets what was written, so the next
     * request writes again.
     */
    touch(viewer: Viewer): Promise<void> {
      if (written.seen(viewer.id, viewer.name)) return DONE;
      return touchScript([userKeys.user(viewer.id)], [viewer.id, viewer.name, clock.now()]).then(
        () => undefined,
        (err: unknown) => {
          written.forget(viewer.id);
          throw err;
        },
      );
    },

    /** Creates users that were never seen (added to a room before signing in), named by their id. */
    async ensureExist(ids: string[]): Promise<void> {
      if (ids.length === 0) return;
      const pipeline = pipelineOf(redis);
      const now = String(clock.now());
      for (const id of ids) {
        const key = userKeys.user(id);
        pipeline.hsetnx(key, 'id', id).hsetnx(key, 'name', id).hsetnx(key, 'createdAt', now);
      }
      await execPipeline(pipeline);
    },

    /** Reads users in one round trip; null for ids never seen. */
    getMany: (ids: readonly string[]) => runRead(redis, readUsers(ids)),

    /** {@link getMany} as commands for a shared pipeline (the user loader's). */
    readMany: readUsers,
  };
}
