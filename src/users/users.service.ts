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

/** Creates the users service. */
export function createUsersService({ redis, scripts, clock }: UsersServiceDeps) {
  const touchScript = scripts.get('touchUser');
  return {
    /**
     * Makes sure the viewer exists with the name from their token (the contract's "a user exists
     * from the first authenticated request; name is refreshed from the token"). Not awaited by
     * callers: the write shares the command connection with everything the request does next, and
     * Redis runs a connection's commands in order, so the request already reads what it wrote, and
     * no request waits a round trip for it. A failure (Redis away) is logged by the caller's catch.
     */
    touch(viewer: Viewer): Promise<void> {
      return touchScript([userKeys.user(viewer.id)], [viewer.id, viewer.name, clock.now()]).then(() => undefined);
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
