/**
 * Cluster-wide coalescing of state events (read receipts, poll results). The write that opens a
 * window in Redis (`SET key 1 NX PX windowMs`, inside its own script) announces its state at once
 * and calls {@link CoalescingWindows.whenClosed}; when the window ends, that same instance reads
 * the state as it is then (whichever instance changed it meanwhile) and announces it if it moved.
 * Writes inside an open window announce nothing. So a burst costs two events per window, and the
 * last event always carries the latest state: a write either opened a window (announced now) or
 * fell in one whose end reads after it.
 */
export interface CoalescingWindows {
  /**
   * Once the window this instance opened has ended, runs `readLatest`; a non-null answer (the state
   * moved since the window opened) goes to `send`. Errors are dropped: the next window resends.
   */
  whenClosed<T>(readLatest: () => Promise<T | null>, send: (latest: T) => void): void;
  /** Cancels the pending ends (shutdown). */
  stop(): void;
}

/** Creates the timers behind {@link CoalescingWindows} for windows of `windowMs`. */
export function createCoalescingWindows(windowMs: number): CoalescingWindows {
  const timers = new Set<NodeJS.Timeout>();
  return {
    whenClosed(readLatest, send) {
      // +10 ms: the key has expired in Redis before the read, so a write that saw the window open
      // is in what the read returns.
      const timer = setTimeout(() => {
        timers.delete(timer);
        readLatest()
          .then((latest) => {
            if (latest !== null) send(latest);
          })
          .catch(() => undefined);
      }, windowMs + 10);
      timer.unref();
      timers.add(timer);
    },
    stop() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
  };
}
