import type { WebSocket, WebSocketServer } from 'ws';

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
 * with 4429. Register before graphql-ws so the count sees every message first.
 */
export function useWsMessageLimits(wss: WebSocketServer, limits: WsLimits) {
  const stamps = new WeakMap<WebSocket, number[]>();
  // `this` is the socket: one listener for every socket rather than a closure per connection.
  function count(this: WebSocket) {
    let times = stamps.get(this);
    if (!times) stamps.set(this, (times = []));
    const now = Date.now();
    times.push(now);
    while (times.length > 0 && (times[0] as number) <= now - WINDOW_MS) times.shift();
    if (times.length > 2 * limits.maxMessagesPer10s) {
      this.close(CloseCode.TooManyRequests, 'Too many messages');
      times.length = 0;
    }
  }
  wss.on('connection', (socket) => socket.on('message', count));
  return {
    /** True while the socket is over its message limit: refuse its operations. */
    isOver(socket: WebSocket): boolean {
      const times = stamps.get(socket);
      return times !== undefined && times.length > limits.maxMessagesPer10s;
    },
  };
}
