import { createSchema, createYoga } from 'graphql-yoga';
import { GraphQLError, parse, type ExecutionArgs } from 'graphql';
import { describe, expect, it } from 'vitest';
import { directStreamOf, useSharedExecution, type EventSink, type SharedExecutionStats } from '../../src/infra/shared-execution.js';

/** What the direct path sees of a `ws` WebSocket: frames are recorded, the write callback comes a turn later. */
class RecordingSocket {
  readyState = 1;
  bufferedAmount = 0;
  frames: string[] = [];
  closed: { code?: number; reason?: string } | null = null;
  send(data: Buffer | string, options?: { binary?: boolean }, cb?: (err?: Error) => void) {
    // As ws: bytes with `binary: false` go out as a text frame.
    if (typeof data !== 'string' && options?.binary !== false) throw new Error('expected a text frame');
    this.frames.push(String(data));
    if (cb) setImmediate(() => cb());
  }
  close(code?: number, reason?: string) {
    this.closed = { code, reason };
    this.readyState = 3;
  }
  /** The frames, parsed. */
  get messages() {
    return this.frames.map((f) => JSON.parse(f) as { id: string; type: string; payload: { data?: unknown; errors?: { message: string }[] } });
  }
}

type Ev = { text: string; delayMs?: number; fail?: boolean };

/** The test schema: a subscription of events with a text. */
const EVENTS_SDL = /* GraphQL */ `
  type Query { ok: Boolean }
  type Event { text: String! }
  type Subscription { events: Event! }
`;

/** An event's text: later when it says so, an error (with a detail to mask) when it says so. */
const eventText = (e: Ev) => {
  if (e.fail) throw new Error('secret detail');
  return e.delayMs ? new Promise((r) => setTimeout(() => r(e.text), e.delayMs)) : e.text;
};

/**
 * A schema whose subscription registers the sink it was given (as the room streams do) and never
 * yields: events are pushed into the sinks by the test, as the pub/sub listener pushes them.
 */
function harness(highWaterBytes = 1000) {
  const sinks: (EventSink | undefined)[] = [];
  const stats: SharedExecutionStats = { executions: 0, shared: 0, direct: 0 };
  const yoga = createYoga<{ eventSink?: EventSink }>({
    schema: createSchema<{ eventSink?: EventSink }>({
      typeDefs: EVENTS_SDL,
      resolvers: {
        Event: { text: eventText },
        Subscription: {
          events: {
            subscribe: async function* (_: unknown, __: unknown, ctx: { eventSink?: EventSink }) {
              sinks.push(ctx.eventSink);
              await new Promise(() => undefined);
              yield {};
            },
            resolve: (e: unknown) => e,
          },
        },
      },
    }),
    plugins: [
      useSharedExecution({
        viewerIdOf: () => '',
        stats,
        maskError: (e) => new GraphQLError('masked', { originalError: e.originalError }),
        highWaterBytes,
      }),
    ],
  });
  /** Opens one subscription and returns its sink (call one at a time). */
  async function open(socket: RecordingSocket | null, id: string) {
    const initial = socket ? { socket, wsSubscriptionId: id } : {};
    const { subscribe, contextFactory, schema } = yoga.getEnveloped(initial);
    const args: ExecutionArgs = { schema, document: parse('subscription { events { text } }'), contextValue: await contextFactory() };
    const it = (await subscribe(args)) as AsyncGenerator;
    void it.next(); // starts the generator: the resolver registers its sink
    await new Promise((r) => setImmediate(r));
    return sinks[sinks.length - 1];
  }
  return { open, stats };
}

const texts = (s: RecordingSocket) => s.messages.map((m) => (m.payload.data as { events: { text: string } }).events.text);

describe('the direct path of WebSocket subscriptions (EventSink)', () => {
  describe('when events resolve at once', () => {
    it('should execute each once and write every subscriber a graphql-ws next frame with its own id, in order', async () => {
      const h = harness();
      const sockets = [new RecordingSocket(), new RecordingSocket(), new RecordingSocket()];
      const sinks: (EventSink | undefined)[] = [];
      for (const [i, s] of sockets.entries()) sinks.push(await h.open(s, `sub-${i}`));
      const events: Ev[] = [{ text: 'a' }, { text: 'b' }];
      for (const ev of events) for (const sink of sinks) sink?.push(ev);
      sockets.forEach((s, i) => {
        // Written synchronously: no promise between the listener and the socket.
        expect(s.messages).toEqual([
          { id: `sub-${i}`, type: 'next', payload: { data: { events: { text: 'a' } } } },
          { id: `sub-${i}`, type: 'next', payload: { data: { events: { text: 'b' } } } },
        ]);
      });
      expect(h.stats).toEqual({ executions: 2, shared: 4, direct: 6 });
    });

    it('should write text beyond ASCII, in the id and the payload, as UTF-8 that reads back the same', async () => {
      const h = harness();
      const sockets = [new RecordingSocket(), new RecordingSocket()];
      const ids = ['ïd-✓', 'sub-😀'];
      const sinks: (EventSink | undefined)[] = [];
      for (const [i, s] of sockets.entries()) sinks.push(await h.open(s, ids[i] as string));
      for (const sink of sinks) sink?.push({ text: 'héllo 👋 — ça va' });
      sockets.forEach((s, i) => {
        expect(s.messages).toEqual([{ id: ids[i], type: 'next', payload: { data: { events: { text: 'héllo 👋 — ça va' } } } }]);
      });
    });
  });

  describe('when an event resolves later than the ones after it', () => {
    it('should still write them in the order they were pushed', async () => {
      const h = harness();
      const sockets = [new RecordingSocket(), new RecordingSocket()];
      const sinks: (EventSink | undefined)[] = [];
      for (const [i, s] of sockets.entries()) sinks.push(await h.open(s, `s${i}`));
      const slow: Ev = { text: 'slow', delayMs: 30 };
      const fast: Ev = { text: 'fast' };
      for (const sink of sinks) sink?.push(slow);
      for (const sink of sinks) sink?.push(fast);
      expect(sockets[0]?.frames).toEqual([]); // the fast one waits behind the slow one
      await sinks[0]?.send({ text: 'last' });
      await sinks[1]?.send({ text: 'last2' });
      expect(texts(sockets[0] as RecordingSocket)).toEqual(['slow', 'fast', 'last']);
      expect(texts(sockets[1] as RecordingSocket)).toEqual(['slow', 'fast', 'last2']);
      // Once nothing waits, an event that resolves at once goes out at once again.
      sinks[0]?.push({ text: 'now' });
      expect(texts(sockets[0] as RecordingSocket).at(-1)).toBe('now');
    });
  });

  describe('when an event fails to resolve', () => {
    it('should send the error masked, as yoga would, and keep the subscription', async () => {
      const h = harness();
      const socket = new RecordingSocket();
      const sink = await h.open(socket, 'e');
      sink?.push({ text: 'x', fail: true });
      sink?.push({ text: 'fine' });
      const [failed, fine] = socket.messages;
      expect(failed?.payload.errors?.map((e) => e.message)).toEqual(['masked']);
      expect(JSON.stringify(failed)).not.toContain('secret detail');
      expect(fine?.payload.data).toEqual({ events: { text: 'fine' } });
      expect(socket.closed).toBeNull();
    });
  });

  describe('when the socket backs up or closes', () => {
    it('should report not ready past the high-water mark or once closed, and write nothing to a closed socket', async () => {
      const h = harness(1000);
      const socket = new RecordingSocket();
      const sink = await h.open(socket, 'bp');
      expect(sink?.ready).toBe(true);
      socket.bufferedAmount = 999;
      expect(sink?.ready).toBe(true);
      socket.bufferedAmount = 1000;
      expect(sink?.ready).toBe(false);
      socket.bufferedAmount = 0;
      socket.readyState = 2; // closing
      expect(sink?.ready).toBe(false);
      // send() still settles, so a stream's loop moves on and ends instead of hanging.
      await sink?.send({ text: 'lost' });
      expect(socket.frames).toEqual([]);
    });

    it('should resolve send() only once the socket took the frame', async () => {
      const h = harness();
      const socket = new RecordingSocket();
      const sink = await h.open(socket, 'cb');
      let settled = false;
      const sent = sink?.send({ text: 'a' }).then(() => (settled = true));
      expect(socket.frames.length).toBe(1);
      expect(settled).toBe(false); // the write callback comes a turn later
      await sent;
      expect(settled).toBe(true);
    });
  });

  describe('when the subscription is not on a WebSocket (SSE)', () => {
    it('should give it no sink, so its events take the iterator path', async () => {
      const h = harness();
      expect(await h.open(null, 'none')).toBeUndefined();
    });
  });

  describe("when graphql-ws runs the subscription's own stream (directStreamOf) instead of yoga's wrappers", () => {
    /** A stream that yields what the test hands it, then throws what it is told to. */
    function streaming() {
      const items: unknown[] = [];
      let wake: (() => void) | null = null;
      const yoga = createYoga({
        schema: createSchema({
          typeDefs: EVENTS_SDL,
          resolvers: {
            Event: { text: eventText },
            Subscription: {
              events: {
                subscribe: async function* () {
                  for (;;) {
                    while (items.length === 0) await new Promise<void>((r) => (wake = r));
                    const item = items.shift();
                    if (item instanceof Error) throw item;
                    yield item;
                  }
                },
                resolve: (e: unknown) => e,
              },
            },
          },
        }),
        plugins: [
          useSharedExecution({
            viewerIdOf: () => '',
            maskError: (e) => new GraphQLError('masked', { originalError: (e as GraphQLError).originalError ?? e }),
            highWaterBytes: 1000,
          }),
        ],
      });
      const feed = (item: unknown) => {
        items.push(item);
        wake?.();
      };
      const open = async (initial: Record<string, unknown>) => {
        const { subscribe, contextFactory, schema } = yoga.getEnveloped(initial);
        const contextValue = await contextFactory();
        const args: ExecutionArgs = { schema, document: parse('subscription { events { text } }'), contextValue };
        const wrapped = (await subscribe(args)) as AsyncGenerator;
        return { wrapped, contextValue };
      };
      return { feed, open };
    }

    it('should hand over the stream once, and mask what it yields and what it throws', async () => {
      const h = streaming();
      const { wrapped, contextValue } = await h.open({ socket: new RecordingSocket(), wsSubscriptionId: 'd' });
      const stream = directStreamOf(contextValue);
      expect(stream).toBeDefined();
      expect(stream).not.toBe(wrapped); // yoga wrapped it; graphql-ws gets the stream itself
      expect(directStreamOf(contextValue)).toBeUndefined(); // taken once
      const it = stream as AsyncGenerator<{ data?: unknown; errors?: readonly GraphQLError[] }>;
      h.feed({ text: 'ok' });
      expect((await it.next()).value?.data).toEqual({ events: { text: 'ok' } });
      h.feed({ text: 'x', fail: true });
      const failed = (await it.next()).value;
      expect(failed?.errors?.map((e: GraphQLError) => e.message)).toEqual(['masked']);
      h.feed(new Error('internal secret'));
      const thrown = await it.next().then(
        () => null,
        (err: unknown) => err,
      );
      expect(thrown).toBeInstanceOf(GraphQLError);
      expect((thrown as Error).message).toBe('masked');
    });

    it('should not exist for a subscription without a socket (SSE): yoga masks that one', async () => {
      const h = streaming();
      const { contextValue } = await h.open({});
      expect(directStreamOf(contextValue)).toBeUndefined();
    });
  });
});
