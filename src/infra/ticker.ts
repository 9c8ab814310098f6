import type { Logger } from './logger.js';
import { repeatUnlessBusy } from './repeat.js';

/** A periodic sweep (typing expiries, scheduled poll closes) that an instance starts and stops. */
export interface Ticker {
  /** Runs the work every interval from now on. */
  start(): void;
  /** Stops it (shutdown); a run in progress finishes on its own. */
  stop(): void;
}

/**
 * Runs `work` every `tickMs`, skipping a tick while the previous run is still going (a slow Redis
 * never piles up runs). A failed run is logged at debug: the next tick tries again.
 */
export function createTicker(work: () => Promise<unknown>, opts: { tickMs: number; logger: Logger; what: string }): Ticker {
  let timer: NodeJS.Timeout | null = null;
  return {
    start() {
      timer ??= repeatUnlessBusy(opts.tickMs, work, (err) => opts.logger.debug({ err: err.message }, `${opts.what} failed`));
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = null;
    },
  };
}
