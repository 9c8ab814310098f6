import type { WebSocket } from 'ws';

/** Close code for a WebSocket that kept exceeding its limits after being told (named as graphql-ws names its codes). */
export const CloseCode = {
  /** 4429 Too Many Requests: inbound messages or connections over the limit. */
  TooManyRequests: 4429,
} as const;

/** Limits per WebSocket connection. */
export interface WsLimits {
  /** Inbound messages (subscribe, complete, ping, all) per connection in any 10 s. */
  maxMessagesPer10s: number;
}

const WINDOW_MS = 10_000;

/**
 * Counts every inbound message of each socket in a sliding 10 s window (a socket lives on one
 * instance, so memory is the right place). Over the limit, `isOver` says so and operations are
 * refused with RATE_LIMITED (the client is told); a socket that goes on to twice the limit is closed
 * with 4429. The WebSocket server calls `count` with each message before handling it.
 */
export function createWsMessageLimits(limits: WsLimits) {
  const stamps = new WeakMap<WebSocket, number[]>();
  return {
    /** Counts one inbound message of `socket`; closes it at twice the limit. */
    count(socket: WebSocket): void {
      let times = stamps.get(socket);
      if (!times) stamps.set(socket, (times = []));
      const now = Date.now();
      times.push(now);
      while (times.length > 0 && (times[0] as number) <= now - WINDOW_MS) times.shift();
      if (times.length > 2 * limits.maxMessagesPer10s) {
        socket.close(CloseCode.TooManyRequests, 'Too many messages');
        times.length = 0;
      }
    },
    /** True while the socket is over its message limit: refuse its operations. */
    isOver(socket: WebSocket): boolean {
      const times = stamps.get(socket);
      return times !== undefined && times.length > limits.maxMessagesPer10s;
    },
  };
}
