import { createSchema, createYoga } from 'graphql-yoga';
import { parse, type ExecutionArgs, type ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import { useSharedExecution, type SharedExecutionStats } from '../../src/infra/shared-execution.js';

/** A schema whose subscription yields the very objects pushed to `feed`, like pub/sub does. */
function harness() {
  const listeners = new Set<(v: object) => void>();
  const calls = { text: 0, mine: 0 };
  const stats: SharedExecutionStats = { executions: 0, shared: 0, direct: 0 };
  const yoga = createYoga<{ viewer: string }>({
    schema: createSchema<{ viewer: string }>({
      typeDefs: /* GraphQL */ `
        directive @perViewer on FIELD_DEFINITION
        type Query { ok: Boolean }
        type Event { text: String! mine: Boolean! @perViewer }
        type Subscription { events(tag: String): Event! }
      `,
      resolvers: {
        Event: {
          text: (e: { text: string }) => {
            calls.text++;
            return e.text;
          },
          mine: (e: { author: string }, _: unknown, ctx: { viewer: string }) => {
            calls.mine++;
            return e.author === ctx.viewer;
          },
        },
        Subscription: {
          events: {
            subscribe: async function* () {
              const queue: object[] = [];
              let wake: (() => void) | null = null;
              const l = (v: object) => {
                queue.push(v);
                wake?.();
              };
              listeners.add(l);
              try {
                for (;;) {
                  while (queue.length === 0) await new Promise<void>((r) => (wake = r));
                  yield queue.shift();
                }
              } finally {
                listeners.delete(l);
              }
            },
            resolve: (e: unknown) => e,
          },
        },
      },
    }),
    plugins: [
      useSharedExecution({
        viewerIdOf: (ctx) => (ctx as { viewer: string }).viewer,
        stats,
        maskError: (e) => e,
        highWaterBytes: 1 << 20,
      }),
    ],
  });
  async function open(query: string, viewer: string, variables?: Record<string, unknown>) {
    const { subscribe, contextFactory, schema } = yoga.getEnveloped({ viewer });
    const ctx = await contextFactory();
    const args: ExecutionArgs = { schema, document: parse(query), contextValue: { ...ctx, viewer }, variableValues: variables };
    const it = (await subscribe(args)) as AsyncGenerator<ExecutionResult>;
    const first = it.next(); // starts the generator so it listens
    await new Promise((r) => setTimeout(r, 0));
    return { it, first };
  }
  const feed = (v: object) => listeners.forEach((l) => l(v));
  return { open, feed, calls, stats, listeners };
}

describe('useSharedExecution', () => {
  describe('when subscribers share an operation and variables', () => {
    it('should resolve each event once and hand all of them the same result', async () => {
      const h = harness();
      const subs = await Promise.all(['v1', 'v2', 'v3'].map((v) => h.open('subscription { events { text } }', v)));
      h.feed({ text: 'hello', author: 'v1' });
      const results = await Promise.all(subs.map((s) => s.first));
      for (const r of results) expect(r.value).toEqual({ data: { events: { text: 'hello' } } });
      expect(h.calls.text).toBe(1);
      expect(h.stats).toEqual({ executions: 1, shared: 2, direct: 0 });
      await Promise.all(subs.map((s) => s.it.return(undefined)));
      expect(h.listeners.size).toBe(0);
    });
  });

  describe('when the variables differ', () => {
    it('should execute once per distinct variables', async () => {
      const h = harness();
      const q = 'subscription($t: String) { events(tag: $t) { text } }';
      const subs = [await h.open(q, 'v1', { t: 'a' }), await h.open(q, 'v2', { t: 'a' }), await h.open(q, 'v3', { t: 'b' })];
      h.feed({ text: 'x', author: 'v1' });
      await Promise.all(subs.map((s) => s.first));
      expect(h.stats).toEqual({ executions: 2, shared: 1, direct: 0 });
      await Promise.all(subs.map((s) => s.it.return(undefined)));
    });
  });

  describe('when the operation reads a @perViewer field', () => {
    it('should execute per viewer, so each one gets its own answer', async () => {
      const h = harness();
      const q = 'subscription { events { text mine } }';
      const subs = [await h.open(q, 'alice'), await h.open(q, 'bob'), await h.open(q, 'alice')];
      h.feed({ text: 'hi', author: 'alice' });
      const [a1, b, a2] = await Promise.all(subs.map((s) => s.first));
      expect(a1?.value).toEqual({ data: { events: { text: 'hi', mine: true } } });
      expect(b?.value).toEqual({ data: { events: { text: 'hi', mine: false } } });
      expect(a2?.value).toEqual(a1?.value);
      expect(h.calls.mine).toBe(2);
      expect(h.stats).toEqual({ executions: 2, shared: 1, direct: 0 });
      await Promise.all(subs.map((s) => s.it.return(undefined)));
    });

    it('should notice it through fragments too', async () => {
      const h = harness();
      const q = 'subscription { events { ...F } } fragment F on Event { mine }';
      const subs = [await h.open(q, 'alice'), await h.open(q, 'bob')];
      h.feed({ text: 'hi', author: 'bob' });
      await Promise.all(subs.map((s) => s.first));
      expect(h.stats.executions).toBe(2);
      await Promise.all(subs.map((s) => s.it.return(undefined)));
    });
  });

  describe('when events are distinct objects with equal content', () => {
    it('should not share across them', async () => {
      const h = harness();
      const subs = [await h.open('subscription { events { text } }', 'v1')];
      h.feed({ text: 'a', author: 'x' });
      await subs[0]?.first;
      const second = subs[0]?.it.next();
      h.feed({ text: 'a', author: 'x' });
      await second;
      expect(h.stats.executions).toBe(2);
      await subs[0]?.it.return(undefined);
    });
  });
});
