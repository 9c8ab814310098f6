/** Redis keys of rate limiting: one sorted set per (identity, scope), under the identity's hash tag. */
export const rateLimitKeys = {
  /** Sorted set of admitted hits (member -> time ms), expiring with its window. */
  hits: (identity: string, scope: string) => `rl:{${identity}}:${scope}`,
};
