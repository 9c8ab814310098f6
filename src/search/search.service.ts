import type { ChainableCommander, Redis } from 'ioredis';
import type { CacheService } from '../cache/cache.service.js';
import { badInput, SCRIPT_STATUS, scriptError } from '../errors.js';
import { decodeCursor, encodeCursor, pageSize, type Connection } from '../infra/pagination.js';
import { execPipeline } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId } from '../infra/text.js';
import { messageKeys } from '../messages/messages.keys.js';
import type { MessageModel } from '../messages/messages.models.js';
import { parseMessage, type MessagesService } from '../messages/messages.service.js';
import { roomKeys } from '../rooms/rooms.keys.js';
import { userKeys } from '../users/users.keys.js';
import type { Viewer } from '../users/users.models.js';
import { positionMember, SEARCH_NAMESPACE_PREFIX, searchKeys as keys, searchNamespace } from './search.keys.js';
import { indexTerms, parseQuery, type SearchQuery } from './search.tokens.js';
import { pipelineOf } from '../infra/direct-pipeline.js';
import { SENT, type DeferredCommands } from '../infra/deferred-commands.js';
import type { SendingMessage } from '../messages/messages.models.js';

/** Dependencies of {@link createSearchService}. */
export interface SearchServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  cache: CacheService;
  messages: MessagesService;
  /** Messages kept per room (0: all): the send that trims one also un-indexes it. */
  retentionMessages: number;
  /** How long a page of results is cached (0: not cached). */
  cacheTtlSeconds: number;
}

/** Message search. */
export type SearchService = ReturnType<typeof createSearchService>;

/** `searchMessages` arguments, as in the contract. */
export interface SearchArgs {
  query: string;
  roomId?: string | null;
  first?: number | null;
  after?: string | null;
}

/** Candidates one room's script examines per page at most, and the terms a prefix may expand to. */
const SCAN_BUDGET = 2000;
const MAX_PREFIX_EXPANSION = 50;
/** Bound seqs of the per-room scripts: nothing, or everything, of the bound's millisecond. */
const NO_SEQ = 0;
const ALL_SEQS = 1e13;

/** A position in the merged results, newest first: createdAt, then room id, then seq, descending. */
interface Position {
  at: number;
  roomId: string;
  seq: number;
}

const greater = (a: Position, b: Position) =>
  a.at !== b.at ? a.at > b.at : a.roomId !== b.roomId ? a.roomId > b.roomId : a.seq > b.seq;

const encodePosition = (p: Position) => encodeCursor([p.at, p.roomId, p.seq]);

function decodePosition(cursor: string): Position {
  const [at, roomId, seq] = decodeCursor('after', cursor);
  if (typeof at !== 'number' || typeof roomId !== 'string' || typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) {
    throw badInput('after', 'after is not a valid cursor');
  }
  return { at, roomId: checkedId('after', roomId), seq };
}

/** One room's answer: matches (newest first) and, when it stopped early, where. */
interface RoomMatches {
  matches: { position: Position; message: MessageModel | null }[];
  frontier: Position | null;
}

/**
 * Creates the search service. Each room has an inverted index under its hash tag, kept by the
 * message hooks (send indexes and un-indexes what retention trimmed, edit re-indexes, delete
 * un-indexes) in the write's own pipeline. A page is one script per searched room in one
 * pipeline, each bounded in work; rooms merge by time, and a page is cached under the viewer's
 * room set and the versions of those rooms' indexes.
 */
export function createSearchService(deps: SearchServiceDeps) {
  const { redis, scripts, cache, messages, retentionMessages, cacheTtlSeconds } = deps;

  const indexKeys = (roomId: string) => [keys.dictionary(roomId), keys.postingPrefix(roomId), keys.all(roomId), keys.docs(roomId)];

  /**
   * Queues (re)indexing or un-indexing of a message (its member, or the send's placeholder for it)
   * and of the one retention trimmed ('' for none), and the bump of its room's cached results.
   */
  function queueIndex(
    pipeline: ChainableCommander | DeferredCommands,
    roomId: string,
    member: string,
    createdAt: number,
    terms: string[],
    trimmedMember = '',
  ) {
    scripts.queue(pipeline, 'indexMessage', indexKeys(roomId), [member, createdAt, trimmedMember, ...terms]);
    cache.bumpInPipeline(pipeline, searchNamespace(roomId));
  }
  /** {@link queueIndex} of a stored message. */
  const queueStored = (pipeline: ChainableCommander, message: MessageModel, terms: string[]) =>
    queueIndex(pipeline, message.roomId, positionMember(message.seq), message.createdAt, terms);

  /** Searches the rooms of one page in one pipeline and merges them, newest first. */
  async function searchRooms(
    viewer: Viewer,
    roomIds: readonly string[],
    query: SearchQuery,
    first: number,
    after: Position | null,
    scoped: boolean,
  ): Promise<Connection<MessageModel>> {
    const limit = first + 1;
    const single = roomIds.length === 1;
    const pipeline = pipelineOf(redis);
    for (const roomId of roomIds) {
      // The bound of this room in the merged order: below the cursor's millisecond, and within it
      // below the cursor's room (then seq).
      const boundSeq = !after ? NO_SEQ : roomId > after.roomId ? NO_SEQ : roomId < after.roomId ? ALL_SEQS : after.seq;
      scripts.queue(
        pipeline,
        'searchRoom',
        [
          roomKeys.room(roomId),
          roomKeys.members(roomId),
          messageKeys.messages(roomId),
          keys.dictionary(roomId),
          keys.postingPrefix(roomId),
          keys.all(roomId),
          keys.docs(roomId),
        ],
        [viewer.id, limit, SCAN_BUDGET, MAX_PREFIX_EXPANSION, after ? after.at : '+inf', boundSeq, single ? 1 : 0, query.prefix, ...query.exact],
      );
    }
    const replies = roomIds.length > 0 ? await execPipeline(pipeline) : [];
    const rooms: RoomMatches[] = [];
    replies.forEach((reply, i) => {
      const roomId = roomIds[i] as string;
      const [status, exhausted, frontierAt, frontierMember, ...rest] = reply as [number, number, string, string, ...string[]];
      if (status !== SCRIPT_STATUS.OK) {
        // Searching one room is for its members; across rooms, one the viewer just left is skipped.
        if (scoped) throw scriptError(status);
        return;
      }
      const matches: RoomMatches['matches'] = [];
      const step = single ? 3 : 2;
      for (let j = 0; j < rest.length; j += step) {
        matches.push({
          position: { at: Number(rest[j]), roomId, seq: Number(rest[j + 1]) },
          message: single ? parseMessage(rest[j + 2] as string) : null,
        });
      }
      const frontier = exhausted === 1 ? null : { at: Number(frontierAt), roomId, seq: Number(frontierMember) };
      rooms.push({ matches, frontier });
    });
    // Below the highest frontier, a room that stopped early may hold matches it did not examine.
    let cutoff: Position | null = null;
    for (const r of rooms) if (r.frontier && (!cutoff || greater(r.frontier, cutoff))) cutoff = r.frontier;
    const merged = rooms
      .flatMap((r) => r.matches)
      .filter((m) => !cutoff || !greater(cutoff, m.position))
      .sort((a, b) => (greater(a.position, b.position) ? -1 : 1));
    const page = merged.slice(0, first);
    const hasNextPage = merged.length > first || cutoff !== null;
    const last = page.at(-1);
    const endPosition = merged.length > first ? last?.position : (cutoff ?? last?.position);
    if (!single) {
      const loaded = await messages.getMany(page.map((m) => m.position));
      page.forEach((m, i) => (m.message = loaded[i] ?? null));
    }
    // A message deleted between the two reads is left out; the cursors stay where they were.
    const edges = page.flatMap((m) =>
      m.message && !m.message.deleted ? [{ cursor: encodePosition(m.position), node: m.message }] : [],
    );
    return {
      edges,
      pageInfo: {
        hasNextPage,
        hasPreviousPage: after !== null,
        startCursor: edges[0]?.cursor ?? null,
        endCursor: endPosition ? encodePosition(endPosition) : null,
      },
    };
  }

  return {
    /**
     * `searchMessages`: messages holding every word of the query (the last may be a prefix), newest
     * first, in the rooms the viewer is a member of now (or in `roomId`, members only). A page is
     * cached for `cacheTtlSeconds` under the viewer's room set and the versions of those rooms'
     * indexes: any change to one of them, or to the set, is a miss.
     */
    async search(viewer: Viewer, args: SearchArgs): Promise<Connection<MessageModel>> {
      const query = parseQuery(args.query);
      const first = pageSize('first', args.first, 20);
      const roomId = args.roomId != null ? checkedId('roomId', args.roomId) : null;
      const after = args.after != null ? decodePosition(args.after) : null;
      const run = (members: string[]) => searchRooms(viewer, roomId ? [roomId] : members, query, first, after, roomId !== null);
      if (cacheTtlSeconds <= 0) {
        return run(await redis.smembers(userKeys.rooms(viewer.id)));
      }
      const key = JSON.stringify(['searchMessages', viewer.id, roomId, first, args.after ?? null, query.exact, query.prefix]);
      const page = await cache.getOrLoad(key, cacheTtlSeconds, ({ members }) => run(members), {
        namespaceSet: { key: userKeys.rooms(viewer.id), prefix: SEARCH_NAMESPACE_PREFIX },
      });
      return page as Connection<MessageModel>;
    },

    /** Hook: a new message is indexed; the one retention trimmed, if any, is un-indexed. */
    storedInPipeline(deferred: DeferredCommands, message: SendingMessage) {
      // The seq is the send script's: its member, and the one retention trims with it, are placeholders.
      const trimmed = retentionMessages > 0 ? SENT.trimmedMember(retentionMessages) : '';
      queueIndex(deferred, message.roomId, SENT.seqMember, message.createdAt, indexTerms(message.text), trimmed);
    },

    /** Hook: an edited message is indexed under its new text only. */
    editedInPipeline(pipeline: ChainableCommander, message: MessageModel) {
      queueStored(pipeline, message, message.deleted ? [] : indexTerms(message.text));
    },

    /** Hook: a deleted message is un-indexed. */
    deletedInPipeline(pipeline: ChainableCommander, message: MessageModel) {
      queueStored(pipeline, message, []);
    },
  };
}
