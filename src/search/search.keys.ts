/** Redis keys of search: one inverted index per room, under the room's hash tag. */
export const searchKeys = {
  /** Sorted set, score 0: the room's terms (the dictionary a prefix is a lexical range of). */
  dictionary: (roomId: string) => `room:{${roomId}}:search:dict`,
  /** Prefix of postings: `room:{id}:search:t:<term>`, sorted set of message positions. */
  postingPrefix: (roomId: string) => `room:{${roomId}}:search:t:`,
  /** Sorted set of every indexed message's position (scanned when a prefix matches too many terms). */
  all: (roomId: string) => `room:{${roomId}}:search:all`,
  /** Hash: position member -> the message's terms, space-separated (to un-index without the text). */
  docs: (roomId: string) => `room:{${roomId}}:search:docs`,
};

/**
 * A message's member in postings: its seq, zero-padded so that members of one score (messages of
 * one millisecond) sort by seq. The score is the message's `createdAt`, so rooms merge by time.
 */
export const positionMember = (seq: number) => String(seq).padStart(12, '0');

/** The cache namespace of a room's search results: bumped by every change to its index. */
export const searchNamespace = (roomId: string) => `search:${roomId}`;
/** The prefix that turns a viewer's room ids into search namespaces. */
export const SEARCH_NAMESPACE_PREFIX = 'search:';
