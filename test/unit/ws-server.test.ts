import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { buildSchema } from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import type { ExecutionResult } from 'graphql';
import { Slots } from '../../src/infra/slots.js';
import { GraphqlWebSocket, useGraphqlWs, type EndListener, type EndReporter, type GraphqlWsOptions } from '../../src/infra/ws-server.js';
import { deferred, waitFor, withTimeout } from '../helpers/clients.js';

/**
 * The graphql-ws adapter (src/infra/ws-server.ts) on a real `ws` server with real clients: the
 * protocol end to end, graphql-ws' close codes (4406, 4408, 4500, 1001), one keep-alive timer
 * terminating a socket that stops answering pings, and a subscription's source released on close.
 */

const schema = buildSchema(`
  type Query { hello: String }
  type Subscription { ticks(count: Int!): Int reported: Int }
`);

/**
 * A stream that reports its end to a listener (as the direct path's socket sink does): the test
 * ends it through `listener`; `next()` is never to be called (the adapter does not iterate it).
 */
class Reporter implements EndReporter {
  listener: EndListener | null = null;
  nexts = 0;
  returned = 0;
  reportEnd(listener: EndListener): void {
    this.listener = listener;
  }
  next(): Promise<IteratorResult<ExecutionResult, void>> {
    this.nexts++;
    return new Promise(() => undefined);
  }
  return(): Promise<IteratorResult<ExecutionResult, void>> {
    this.returned++;
    const listener = this.listener;
    this.listener = null;
    listener?.ended({ done: true, value: undefined });
    return Promise.resolve({ done: true, value: undefined });
  }
  throw(err: unknown): Promise<IteratorResult<ExecutionResult, void>> {
    return Promise.reject(err);
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.return().then(() => undefined);
  }
}

interface Harness {
  url: string;
  server: Server;
  dispose(): Promise<void>;
  /** Sources of `ticks` that were returned (released). */
  released: number;
  internalErrors: string[];
  closes: { code: number; reason: string }[];
  /** The streams made for `reported` subscriptions, in order. */
  reporters: Reporter[];
}

const harnesses: Harness[] = [];
const sockets: WebSocket[] = [];
const clients: Client[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.dispose()));
  for (const s of sockets.splice(0)) s.terminate();
  await Promise.all(harnesses.splice(0).map((h) => h.dispose().then(() => new Promise((r) => h.server.close(r)))));
});

async function start(
  opts: Partial<GraphqlWsOptions> & {
    throwOnSubscribe?: boolean;
    onConnection?: (s: WebSocket) => void;
    /** Called by onSubscribe with the operation's id; onSubscribe waits for what it returns. */
    onSubscribeOf?: (id: string) => Promise<void> | void;
  } = {},
): Promise<Harness> {
  const server = createServer();
  // As app.ts makes it: the adapter tracks the sockets and answers pings.
  const wss = new WebSocketServer({ server, WebSocket: GraphqlWebSocket, clientTracking: false, autoPong: false });
  if (opts.onConnection) wss.on('connection', opts.onConnection);
  const h = { released: 0, internalErrors: [] as string[], closes: [] as { code: number; reason: string }[], reporters: [] as Reporter[] } as Harness;
  const ws = useGraphqlWs(
    {
      schema,
      roots: {
        query: { hello: () => 'world' },
        subscription: {
          // Yields `count` ticks, then stays open until released (return()).
          ticks: ({ count }: { count: number }): AsyncIterableIterator<{ ticks: number }> => {
            let sent = 0;
            let release: (() => void) | null = null;
            const it: AsyncIterableIterator<{ ticks: number }> = {
              next: () =>
                sent < count
                  ? Promise.resolve({ done: false, value: { ticks: ++sent } })
                  : new Promise((resolve) => (release = () => resolve({ done: true, value: undefined }))),
              return: () => {
                h.released++;
                release?.();
                return Promise.resolve({ done: true, value: undefined });
              },
              [Symbol.asyncIterator]: () => it,
            };
            return it;
          },
          // A source that never yields, replaced by a Reporter in onOperation.
          reported: () => ({ [Symbol.asyncIterator]: () => ({ next: () => new Promise(() => undefined), return: () => Promise.resolve({ done: true }) }) }),
        },
      },
      onSubscribe: (_ctx, id) => {
        if (opts.throwOnSubscribe) throw new Error('boom in onSubscribe');
        return opts.onSubscribeOf?.(id);
      },
      onClose: (_ctx, code, reason) => {
        h.closes.push({ code: code ?? 0, reason: reason ?? '' });
      },
      // `reported` runs as a Reporter, put in place of the result as app.ts puts its direct streams.
      onOperation: (_ctx, _id, payload, _args, result) => {
        if (!payload.query.includes('reported')) return undefined;
        void (result as AsyncGenerator).return(undefined);
        const r = new Reporter();
        h.reporters.push(r);
        return r;
      },
    },
    wss,
    { isProd: false, onInternalError: (err) => h.internalErrors.push(String(err)), ...opts },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  h.url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  h.server = server;
  h.dispose = ws.dispose;
  harnesses.push(h);
  return h;
}

const client = (url: string) => {
  const c = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false });
  clients.push(c);
  return c;
};

/** A raw socket speaking the protocol, and how it closed (bounded). */
function raw(url: string, protocols: string | string[] = 'graphql-transport-ws', options: WebSocket.ClientOptions = {}) {
  const s = new WebSocket(url, protocols, options);
  sockets.push(s);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => s.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
  const opened = new Promise<void>((resolve, reject) => s.once('open', resolve).once('error', reject));
  return { s, opened, closed: (ms: number) => withTimeout(closed, ms, 'the socket to close') };
}

const take = <T>(c: Client, query: string, n: number): Promise<T[]> =>
  withTimeout(
    new Promise<T[]>((resolve, reject) => {
      const got: T[] = [];
      const stop = c.subscribe<T>(
        { query },
        {
          next: (r) => {
            got.push(r.data as T);
            if (got.length === n) {
              stop();
              resolve(got);
            }
          },
          error: reject,
          complete: () => resolve(got),
        },
      );
    }),
    5000,
    `${n} results`,
  );

describe('graphql-ws on ws through the adapter', () => {
  it('should answer queries and stream subscriptions, releasing the source when the client stops', async () => {
    const h = await start();
    const c = client(h.url);
    expect(await take(c, '{ hello }', 1)).toEqual([{ hello: 'world' }]);
    expect(await take(c, 'subscription { ticks(count: 3) }', 3)).toEqual([{ ticks: 1 }, { ticks: 2 }, { ticks: 3 }]);
    await withTimeout(
      (async () => {
        while (h.released < 1) await new Promise((r) => setTimeout(r, 10));
      })(),
      5000,
      'the source to be released',
    );
    expect(h.internalErrors).toEqual([]);
  });

  it('should release every open subscription and report the close when the socket closes', async () => {
    const h = await start();
    const { s, opened, closed } = raw(h.url);
    await opened;
    const acked = deferred<void>();
    const firsts: string[] = [];
    s.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string; id?: string };
      if (m.type === 'connection_ack') acked.resolve();
      if (m.type === 'next' && m.id) firsts.push(m.id);
    });
    s.send(JSON.stringify({ type: 'connection_init' }));
    await withTimeout(acked.promise, 5000, 'connection_ack');
    for (const id of ['a', 'b']) s.send(JSON.stringify({ id, type: 'subscribe', payload: { query: 'subscription { ticks(count: 1) }' } }));
    await withTimeout(
      (async () => {
        while (firsts.length < 2) await new Promise((r) => setTimeout(r, 10));
      })(),
      5000,
      'both subscriptions to start',
    );
    s.close(4321, 'bye');
    await closed(5000);
    await withTimeout(
      (async () => {
        while (h.released < 2 || h.closes.length < 1) await new Promise((r) => setTimeout(r, 10));
      })(),
      5000,
      'both sources released and onClose called',
    );
    expect(h.closes).toEqual([{ code: 4321, reason: 'bye' }]);
  });

  it('should close with 4408 a socket that sends no connection_init in time, and not one that did', async () => {
    const h = await start({ connectionInitWaitMs: 300 });
    const late = raw(h.url);
    const prompt = raw(h.url);
    await Promise.all([late.opened, prompt.opened]);
    prompt.s.send(JSON.stringify({ type: 'connection_init' }));
    const started = Date.now();
    expect(await late.closed(5000)).toEqual({ code: 4408, reason: 'Connection initialisation timeout' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    // Past the deadline (sweeps every 250 ms), the one that sent its init is still open: it answers
    // an operation sent after two more sweeps' time.
    const answered = deferred<void>();
    prompt.s.on('message', (data) => {
      if ((JSON.parse(String(data)) as { type: string }).type === 'complete') answered.resolve();
    });
    await withTimeout(
      (async () => {
        while (Date.now() - started < 800) await new Promise((r) => setTimeout(r, 50));
      })(),
      5000,
      'two more sweeps',
    );
    prompt.s.send(JSON.stringify({ id: 'q', type: 'subscribe', payload: { query: '{ hello }' } }));
    await withTimeout(answered.promise, 5000, 'the answer to an operation sent past the deadline');
    expect(prompt.s.readyState).toBe(WebSocket.OPEN);
  });

  it('should terminate a socket that stops answering pings, and keep one that answers', async () => {
    const h = await start({ keepAliveMs: 400 });
    const deaf = raw(h.url, 'graphql-transport-ws', { autoPong: false });
    const alive = raw(h.url);
    await Promise.all([deaf.opened, alive.opened]);
    let pings = 0;
    alive.s.on('ping', () => pings++);
    for (const { s } of [deaf, alive]) s.send(JSON.stringify({ type: 'connection_init' }));
    // Pinged within one period, terminated by the next one without a pong (no close frame: 1006).
    expect((await deaf.closed(5000)).code).toBe(1006);
    // The one that answers stays open through three more pings.
    const after = pings;
    await withTimeout(
      (async () => {
        while (pings < after + 3) await new Promise((r) => setTimeout(r, 20));
      })(),
      5000,
      'three more pings',
    );
    expect(alive.s.readyState).toBe(WebSocket.OPEN);
  });

  it('should hand a stream that reports its end a listener instead of iterating it, and send what the end says', async () => {
    const h = await start();
    const { s, opened } = raw(h.url);
    await opened;
    const messages: { id?: string; type: string; payload?: unknown }[] = [];
    s.on('message', (data) => messages.push(JSON.parse(String(data)) as (typeof messages)[number]));
    const seen = (what: string, test: () => boolean) => waitFor(test, 5000, what);
    s.send(JSON.stringify({ type: 'connection_init' }));
    await seen('connection_ack', () => messages.some((m) => m.type === 'connection_ack'));
    const subscribe = (id: string) => s.send(JSON.stringify({ id, type: 'subscribe', payload: { query: 'subscription { reported }' } }));
    const messagesOf = (id: string) => messages.filter((m) => m.id === id).map((m) => [m.type, m.payload ?? null]);
    for (const id of ['last', 'failed', 'done', 'stopped']) subscribe(id);
    await seen('four listeners', () => h.reporters.filter((r) => r.listener).length === 4);
    const [last, failed, done, stopped] = h.reporters as [Reporter, Reporter, Reporter, Reporter];
    // A last result, then complete.
    last.listener?.ended(Promise.resolve({ done: false, value: { data: { reported: 7 } } }));
    await seen('complete of "last"', () => messagesOf('last').length === 2);
    expect(messagesOf('last')).toEqual([
      ['next', { data: { reported: 7 } }],
      ['complete', null],
    ]);
    // A failure: an error message, as graphql-ws sends when a stream throws.
    failed.listener?.ended(Promise.reject(new Error('stream broke')));
    await seen('error of "failed"', () => messagesOf('failed').length === 1);
    expect(messagesOf('failed')).toEqual([['error', [{ message: 'stream broke' }]]]);
    // Done: complete only.
    done.listener?.ended({ done: true, value: undefined });
    await seen('complete of "done"', () => messagesOf('done').length === 1);
    expect(messagesOf('done')).toEqual([['complete', null]]);
    // The client stops one: returned, nothing sent back, and its id free for a new subscription.
    s.send(JSON.stringify({ id: 'stopped', type: 'complete' }));
    await seen('"stopped" returned', () => stopped.returned === 1);
    subscribe('stopped');
    await seen('a fifth listener', () => h.reporters.length === 5 && h.reporters[4]?.listener !== null);
    expect(messagesOf('stopped')).toEqual([]);
    // Ids of ended operations are free again too; a live one is not (4409).
    subscribe('last');
    await seen('a sixth listener', () => h.reporters.length === 6);
    expect(h.reporters.map((r) => r.nexts)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(h.internalErrors).toEqual([]);
    const closed = new Promise<number>((resolve) => s.once('close', (code) => resolve(code)));
    subscribe('last');
    expect(await withTimeout(closed, 5000, 'the close')).toBe(4409);
    // The close returned the two live ones.
    await seen('live ones returned', () => (h.reporters[4]?.returned ?? 0) === 1 && (h.reporters[5]?.returned ?? 0) === 1);
  });

  it('should set operations up one slot at a time in arrival order, skipping those completed or closed while they waited', async () => {
    const slots = new Slots(1);
    const gate = deferred<void>();
    const called: string[] = [];
    const h = await start({
      setups: slots,
      onSubscribeOf: (id) => {
        called.push(id);
        return id === 'a' ? gate.promise : undefined;
      },
    });
    const { s, opened } = raw(h.url);
    await opened;
    const types: string[] = [];
    s.on('message', (data) => types.push((JSON.parse(String(data)) as { type: string }).type));
    const until = (what: string, test: () => boolean) => waitFor(test, 5000, what);
    s.send(JSON.stringify({ type: 'connection_init' }));
    await until('connection_ack', () => types.includes('connection_ack'));
    for (const id of ['a', 'b', 'c']) s.send(JSON.stringify({ id, type: 'subscribe', payload: { query: 'subscription { reported }' } }));
    await until('b and c waiting', () => slots.waiting === 2);
    expect(called).toEqual(['a']);
    expect(slots.inUse).toBe(1);
    s.send(JSON.stringify({ id: 'b', type: 'complete' }));
    // Handled in order: once the ping is answered, so is the complete.
    s.send(JSON.stringify({ type: 'ping' }));
    await until('pong', () => types.includes('pong'));
    // Another socket's subscribe waits too, and its socket closes.
    const other = raw(h.url);
    await other.opened;
    const otherAcked = deferred<void>();
    other.s.on('message', (data) => (JSON.parse(String(data)) as { type: string }).type === 'connection_ack' && otherAcked.resolve());
    other.s.send(JSON.stringify({ type: 'connection_init' }));
    await withTimeout(otherAcked.promise, 5000, 'the other connection_ack');
    other.s.send(JSON.stringify({ id: 'd', type: 'subscribe', payload: { query: 'subscription { reported }' } }));
    await until('d waiting', () => slots.waiting === 3);
    other.s.close();
    await until('the other socket closed', () => h.closes.length === 1);
    gate.resolve();
    // a's stream is there: its slot goes to b, which was completed (skipped), then to c, then to d,
    // whose socket closed (skipped).
    await until('two streams', () => h.reporters.filter((r) => r.listener).length === 2);
    await until('slots given back', () => slots.inUse === 0 && slots.waiting === 0);
    expect(called).toEqual(['a', 'c']);
    expect(h.internalErrors).toEqual([]);
  });

  it('should close with 4400 a socket that sends what is not JSON, or not a protocol message', async () => {
    const h = await start();
    for (const bad of ['{"type": "connection_init"', '{"type": "no-such-type"}']) {
      const { s, opened, closed } = raw(h.url);
      await opened;
      s.send(bad);
      const { code } = await closed(5000);
      expect(code).toBe(4400);
    }
    expect(h.internalErrors).toEqual([]);
  });

  it('should still give listeners added by others every message and the close, and call beforeMessage first', async () => {
    const order: string[] = [];
    const h = await start({
      beforeMessage: () => order.push('before'),
      onConnection: (s) => {
        s.on('message', (data) => order.push(`listener:${(JSON.parse(String(data)) as { type: string }).type}`));
        s.on('close', (code) => order.push(`close:${code}`));
      },
    });
    const c = client(h.url);
    expect(await take(c, '{ hello }', 1)).toEqual([{ hello: 'world' }]);
    await c.dispose();
    await withTimeout(
      (async () => {
        while (!order.some((o) => o.startsWith('close:'))) await new Promise((r) => setTimeout(r, 10));
      })(),
      5000,
      'the close',
    );
    // (The client may also send `complete` for the query, racing the server's own.)
    expect(order.slice(0, 4)).toEqual(['before', 'listener:connection_init', 'before', 'listener:subscribe']);
    expect(order.at(-1)).toBe('close:1000');
    order.forEach((o, i) => {
      if (o.startsWith('listener:')) expect(order[i - 1]).toBe('before');
    });
  });

  it("should answer a client's pings with pongs carrying their data", async () => {
    const h = await start();
    const { s, opened } = raw(h.url);
    await opened;
    const pongs: string[] = [];
    s.on('pong', (data) => pongs.push(String(data)));
    for (const d of ['a', 'b', 'c']) s.ping(d);
    await withTimeout(
      (async () => {
        while (pongs.length < 3) await new Promise((r) => setTimeout(r, 10));
      })(),
      5000,
      'three pongs',
    );
    expect(pongs).toEqual(['a', 'b', 'c']);
  });

  it('should refuse a socket without the graphql-transport-ws subprotocol', async () => {
    const h = await start();
    // None offered: the handshake has no subprotocol, and graphql-ws closes with 4406.
    const s = raw(h.url, []);
    expect((await s.closed(5000)).code).toBe(4406);
  });

  it('should close with 4500 and report it when a handler throws, naming the error outside production', async () => {
    for (const isProd of [false, true]) {
      const h = await start({ throwOnSubscribe: true, isProd });
      const { s, opened, closed } = raw(h.url);
      await opened;
      s.on('message', (data) => {
        if ((JSON.parse(String(data)) as { type: string }).type === 'connection_ack') {
          s.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: '{ hello }' } }));
        }
      });
      s.send(JSON.stringify({ type: 'connection_init' }));
      expect(await closed(5000)).toEqual({ code: 4500, reason: isProd ? 'Internal server error' : 'boom in onSubscribe' });
      expect(h.internalErrors).toEqual(['Error: boom in onSubscribe']);
    }
  });

  it('should close every socket with 1001 on dispose', async () => {
    const h = await start();
    const { opened, closed } = raw(h.url);
    await opened;
    await h.dispose();
    expect((await closed(5000)).code).toBe(1001);
  });

  it('should refuse a WebSocketServer that does not make GraphqlWebSockets', () => {
    const wss = new WebSocketServer({ noServer: true });
    expect(() => useGraphqlWs({ schema }, wss, { isProd: false, onInternalError: () => undefined })).toThrow(/GraphqlWebSocket/);
  });
});
