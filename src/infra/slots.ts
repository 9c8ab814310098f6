/**
 * At most `size` holders at once; the others wait in arrival order. A holder gets its `release`
 * (`acquireFor`), which may be called any number of times (only the first counts), so every
 * path that can end a holder's work may call it. With `maxHoldMs`, a holder that has not released
 * by then is released anyway, so a holder whose work never ends cannot take a slot for good.
 *
 * The WebSocket server holds one while it sets up an operation (ws-server.ts, `setups`): after a deploy or a
 * network blip thousands of clients resubscribe within a second, and each set-up holds tens of
 * kilobytes (context, execution, Redis commands in flight) while it waits on Redis. All of them in
 * flight at once kept that much alive across young-generation collections, which moved it into the
 * old generation (README § Delivery); waiting their turn costs a queue entry each.
 */
export class Slots {
  #free: number;
  // FIFO of waiters (objects the caller has anyway, nothing made per waiter besides): an array
  // read from `#head`, compacted when half of it has been consumed.
  #waiting: (SlotWaiter | undefined)[] = [];
  #head = 0;
  #peak = 0;
  /** A dispatch is running (a release from inside `granted` leaves the rest to it). */
  #dispatching = false;

  constructor(
    readonly size: number,
    private readonly maxHoldMs?: number,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`slots: size must be an integer >= 1, got ${size}`);
    this.#free = size;
  }

  /** Holders now. */
  get inUse(): number {
    return this.size - this.#free;
  }

  /** The most holders there ever were at once. */
  get peak(): number {
    return this.#peak;
  }

  /** Callers waiting for a slot. */
  get waiting(): number {
    return this.#waiting.length - this.#head;
  }

  /**
   * Gives `waiter` a slot: at once when one is free and nobody waits, else when its turn comes
   * (`granted` is then called from the `release` of a holder). A waiter costs the queue one entry:
   * no promise, no closure (thousands of WebSocket subscribes wait here after a deploy).
   */
  acquireFor(waiter: SlotWaiter): void {
    this.#waiting.push(waiter);
    this.#dispatch();
  }

  /**
   * Hands free slots to waiters in order. A loop, not a recursion: a waiter may give its slot back
   * from `granted` (a subscribe whose socket closed while it waited), and thousands in a row would
   * otherwise nest a release in a grant in a release, deeper than the stack.
   */
  #dispatch(): void {
    if (this.#dispatching) return;
    this.#dispatching = true;
    try {
      while (this.#free > 0 && this.#head < this.#waiting.length) {
        const next = this.#waiting[this.#head] as SlotWaiter;
        // Consumed entries let go of their waiters at once (a promise, and through it what its
        // continuation holds), not at the next compaction.
        this.#waiting[this.#head++] = undefined;
        if (this.#head === this.#waiting.length) {
          this.#waiting = [];
          this.#head = 0;
        } else if (this.#head > 1024 && this.#head * 2 > this.#waiting.length) {
          this.#waiting = this.#waiting.slice(this.#head);
          this.#head = 0;
        }
        this.#free--;
        this.#peak = Math.max(this.#peak, this.inUse);
        next.granted(this.#releaser());
      }
    } finally {
      this.#dispatching = false;
    }
  }

  #releaser(): () => void {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      clearTimeout(timer);
      this.#free++;
      this.#dispatch();
    };
    const timer = this.maxHoldMs === undefined ? undefined : setTimeout(release, this.maxHoldMs).unref();
    return release;
  }
}

/** Who waits for a slot ({@link Slots.acquireFor}). */
export interface SlotWaiter {
  /** The slot is this waiter's; `release` gives it back. */
  granted(release: () => void): void;
}
