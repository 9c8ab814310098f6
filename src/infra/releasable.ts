/**
 * A subscription's generator whose `return()` and `throw()` run `release()` first. A generator
 * paused at an await on a quiet source (no event in the room) would only see `return()` once the
 * next event arrives, and one never started skips its `finally`: releasing the listener and waking
 * the await first frees everything at once when a client unsubscribes or disconnects.
 *
 * A class to extend (the events service's room streams are one object each, no closures per
 * subscription): `run()` makes the generator on the first `next()`.
 */
export abstract class ReleasingGenerator<T> implements AsyncGenerator<T, void, undefined> {
  #gen: AsyncGenerator<T, void, undefined> | null = null;

  /** The generator itself; its `finally` should call `release()` too. */
  protected abstract run(): AsyncGenerator<T, void, undefined>;
  /** Frees what the generator holds; called more than once. */
  abstract release(): void;

  get #it(): AsyncGenerator<T, void, undefined> {
    return (this.#gen ??= this.run());
  }
  next(): Promise<IteratorResult<T, void>> {
    return this.#it.next();
  }
  return(): Promise<IteratorResult<T, void>> {
    this.release();
    return this.#it.return(undefined);
  }
  throw(err: unknown): Promise<IteratorResult<T, void>> {
    this.release();
    return this.#it.throw(err);
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** {@link ReleasingGenerator} around a generator made elsewhere. */
class Releasable<T> extends ReleasingGenerator<T> {
  constructor(
    private readonly gen: AsyncGenerator<T, void, undefined>,
    private readonly releaseFn: () => void,
  ) {
    super();
  }
  protected run(): AsyncGenerator<T, void, undefined> {
    return this.gen;
  }
  release(): void {
    this.releaseFn();
  }
}

/** Wraps `gen` so that its `return()` and `throw()` run `release` first (see {@link ReleasingGenerator}). */
export function releasable<T>(gen: AsyncGenerator<T, void, undefined>, release: () => void): AsyncGenerator<T, void, undefined> {
  return new Releasable(gen, release);
}
