/**
 * A bounded FIFO consumed as an async iterator: `push` never blocks and answers false when full,
 * so the producer (a pub/sub listener) decides what overflow means instead of memory growing
 * without bound or a shared buffer throwing inside the Redis client.
 */
export class BoundedQueue<T> implements AsyncIterableIterator<T> {
  private items: T[] = [];
  private waiter: ((r: IteratorResult<T>) => void) | null = null;
  private failWaiter: ((e: unknown) => void) | null = null;
  private ended = false;
  private error: unknown = undefined;

  constructor(
    readonly capacity: number,
    /** Told once when the queue ends (an object, so an owner needs no closure for it). */
    private readonly owner?: { queueClosed(): void },
  ) {}

  /** Items waiting to be consumed. */
  get size(): number {
    return this.items.length;
  }

  /** True while the consumer waits on an empty queue: nothing queued, nothing being handed over. */
  get waiting(): boolean {
    return this.waiter !== null;
  }

  /** True once ended (by the producer or the consumer). */
  get closed(): boolean {
    return this.ended;
  }

  /** Adds an item; false when the queue is full or closed. */
  push(item: T): boolean {
    if (this.ended) return false;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = this.failWaiter = null;
      w({ value: item, done: false });
      return true;
    }
    if (this.items.length >= this.capacity) return false;
    this.items.push(item);
    return true;
  }

  /** Keeps only the waiting items that match. */
  retain(predicate: (item: T) => boolean): void {
    this.items = this.items.filter(predicate);
  }

  /** Ends the stream after the queued items; with an error, the consumer gets it instead. */
  end(error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    if (error !== undefined) this.items = [];
    if (this.waiter) {
      const w = this.waiter;
      const f = this.failWaiter;
      this.waiter = this.failWaiter = null;
      if (error !== undefined && f) f(error);
      else w({ value: undefined, done: true });
    }
    this.owner?.queueClosed();
  }

  /** The next item if one is queued, without waiting (for a consumer that is woken some other way). */
  take(): T | undefined {
    return this.items.shift();
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.ended) {
      if (this.error !== undefined) {
        const e = this.error;
        this.error = undefined;
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.items = [];
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
