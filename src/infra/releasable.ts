/**
 * Wraps a subscription's generator so that `return()` and `throw()` run `release` first. A
 * generator paused at an await on a quiet source (no event in the room) would only see `return()`
 * once the next event arrives, and one never started skips its `finally`: releasing the listener
 * and waking the await first frees everything at once when a client unsubscribes or disconnects.
 */
export function releasable<T>(gen: AsyncGenerator<T>, release: () => void): AsyncGenerator<T> {
  const stream: AsyncGenerator<T> = {
    next: (...args) => gen.next(...args),
    return: (value) => {
      release();
      return gen.return(value);
    },
    throw: (err) => {
      release();
      return gen.throw(err);
    },
    [Symbol.asyncIterator]() {
      return stream;
    },
  };
  return stream;
}
