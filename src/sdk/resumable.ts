/** What one attempt of a subscription reports to {@link resumable}. */
export interface ResumeSink<T> {
  next(value: T): void;
  error(error: unknown): void;
  complete(): void;
}

/** How {@link resumable} starts attempts and reads where to resume. */
export interface ResumableOptions<T> {
  /**
   * Starts one attempt reading from `after` (a message id; null: live events only) with your
   * client, reporting to `sink`; returns what stops it.
   */
  subscribe(after: string | null, sink: ResumeSink<T>): () => void;
  /** The id of the message a value delivers, if it delivers one: the next attempt resumes after it. */
  cursor(value: T): string | null | undefined;
  /** Where the first attempt starts (default null: live events only). */
  after?: string | null;
  /** The pause before each new attempt after a drop; the last one repeats (default 250 ms doubling to 8 s). */
  retryDelaysMs?: readonly number[];
  /** Whether an error is a dropped connection to resume after (default: it carries no GraphQL error code). */
  isDropped?(error: unknown): boolean;
}

/** What the app receives: every value once, and the error that ended it (never a drop). */
export interface ResumableObserver<T> {
  next(value: T): void;
  error?(error: unknown): void;
  complete?(): void;
}

/** A running {@link resumable} subscription. */
export interface Resumable {
  /** Stops it (and any pending attempt). */
  unsubscribe(): void;
  /** The last message id delivered: where it resumes. */
  readonly after: string | null;
}

const DEFAULT_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000];

/**
 * The `extensions.code` of every GraphQL error in `error`, whichever client raised it: an array
 * of errors (graphql-ws), Apollo Client's `CombinedGraphQLErrors` (`errors`), urql's
 * `CombinedError` (`graphQLErrors`). Empty for a network failure.
 */
export function errorCodes(error: unknown): string[] {
  const list = Array.isArray(error)
    ? error
    : ((error as { errors?: unknown; graphQLErrors?: unknown } | null)?.graphQLErrors ??
      (error as { errors?: unknown } | null)?.errors);
  if (!Array.isArray(list)) return [];
  return list.flatMap((e: { extensions?: { code?: unknown } } | null) =>
    typeof e?.extensions?.code === 'string' ? [e.extensions.code] : [],
  );
}

/**
 * Keeps a room subscription (`messageAdded`, `roomEvents`) going across dropped connections with
 * any client: after a drop it subscribes again with `after` = the last message delivered, so the
 * app misses nothing and gets nothing twice (the server replays from storage, then goes live).
 * Errors with a code (`FORBIDDEN`, `CURSOR_EXPIRED`: reload history, then subscribe again…) end
 * it and reach `observer.error`. Give your client no transport retries of its own (graphql-ws:
 * `retryAttempts: 0`): they would resubscribe with the first `after`.
 */
export function resumable<T>(options: ResumableOptions<T>, observer: ResumableObserver<T>): Resumable {
  const delays = options.retryDelaysMs?.length ? options.retryDelaysMs : DEFAULT_DELAYS_MS;
  const isDropped = options.isDropped ?? ((e: unknown) => errorCodes(e).length === 0);
  let after = options.after ?? null;
  let failures = 0;
  let attempt = 0;
  let stop: (() => void) | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let ended = false;

  const end = () => {
    ended = true;
    clearTimeout(timer);
    const s = stop;
    stop = null;
    s?.();
  };

  const start = () => {
    const current = ++attempt;
    // Callbacks of an attempt that has been replaced or stopped are ignored.
    const live = () => !ended && current === attempt;
    stop = options.subscribe(after, {
      next(value) {
        if (!live()) return;
        failures = 0;
        after = options.cursor(value) ?? after;
        observer.next(value);
      },
      error(error) {
        if (!live()) return;
        if (!isDropped(error)) {
          end();
          observer.error?.(error);
          return;
        }
        attempt++;
        stop?.();
        stop = null;
        const delay = delays[Math.min(failures++, delays.length - 1)] ?? 0;
        timer = setTimeout(start, delay);
      },
      complete() {
        if (!live()) return;
        end();
        observer.complete?.();
      },
    });
  };
  start();

  return {
    unsubscribe: end,
    get after() {
      return after;
    },
  };
}
