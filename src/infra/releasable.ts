/**
 * Wraps a subscription's generator so that `return()` and `throw()` run `release` first. A
 * generator paused at an await on a quiet source (no event in the room) would only see `return()`
 * once the next event arrives, and one never started skips its `finally`: releasing the listener
 * and waking the await first frees everything at once when a client unsubscribes or disconnects.
 */
export function releasable<T>(gen: AsyncGenerator<T>, release: () => void): AsyncGenerator<T> {
  return new Releasable(gen, release);
}

/** One object per subscription, its methods on the prototype (no closures per subscription). */
class Releasable<T> implements AsyncGenerator<T> {
  constructor(
    private readonly gen: AsyncGenerator<T>,
    private readonly release: () => void,
  ) {}
  next(...args: [] | [unknown]): Promise<IteratorResult<T>> {
    return this.gen.next(...args);
  }
  return(value: T | PromiseLike<T>): Promise<IteratorResult<T>> {
    this.release();
    return this.gen.return(value);
  }
  throw(err: unknown): Promise<IteratorResult<T>> {
    this.release();
    return this.gen.throw(err);
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
}
