/**
 * Redis keys of the cache. Entries are named by a digest of the caller's key and the versions of
 * the namespaces they depend on, so bumping a version orphans every entry of that namespace at
 * once (they expire by their TTL). The read script builds the entry key from its prefix, bullmq
 * style: like presence, the cache assumes one Redis, not Redis Cluster.
 */
export const cacheKeys = {
  /** Hash: namespace -> version (absent: 0). */
  versions: () => 'cache:ns',
  /** Prefix of entry keys: `cache:e:<digest>` (string), its load lock `cache:e:<digest>:lock`. */
  entryPrefix: () => 'cache:e:',
  entry: (digest: string) => `cache:e:${digest}`,
  lock: (digest: string) => `cache:e:${digest}:lock`,
  /** Never written: the namespace set of calls that have none. */
  noSet: () => 'cache:none',
};
