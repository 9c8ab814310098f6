import {
  createSourceEventStream,
  execute,
  print,
  TypeInfo,
  visit,
  visitWithTypeInfo,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLSchema,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';

/** The SDL directive marking fields whose value depends on who asks. */
export const PER_VIEWER_DIRECTIVE = 'perViewer';

type MaybePromise<T> = T | Promise<T>;

const isAsyncIterable = (v: unknown): v is AsyncIterable<unknown> =>
  typeof v === 'object' && v !== null && Symbol.asyncIterator in v;

/**
 * Maps an async iterator, passing `return()` through at once so the source is released. A class, so
 * an open subscription holds one small object rather than a set of closures.
 */
class MappedIterator<T, U> implements AsyncGenerator<U, void, void> {
  private readonly it: AsyncIterator<T>;
  constructor(
    source: AsyncIterable<T>,
    private readonly fn: (value: T) => MaybePromise<U>,
  ) {
    this.it = source[Symbol.asyncIterator]();
  }
  async next(): Promise<IteratorResult<U, void>> {
    const r = await this.it.next();
    if (r.done) return { done: true, value: undefined };
    return { done: false, value: await this.fn(r.value) };
  }
  async return(): Promise<IteratorResult<U, void>> {
    await this.it.return?.();
    return { done: true, value: undefined };
  }
  async throw(err: unknown): Promise<IteratorResult<U, void>> {
    if (this.it.throw) await this.it.throw(err);
    throw err;
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** True when the operation reads a field marked `@perViewer`. */
function readsPerViewerFields(schema: GraphQLSchema, document: DocumentNode): boolean {
  const typeInfo = new TypeInfo(schema);
  let found = false;
  visit(
    document,
    visitWithTypeInfo(typeInfo, {
      Field() {
        const def = typeInfo.getFieldDef();
        if (def?.astNode?.directives?.some((d) => d.name.value === PER_VIEWER_DIRECTIVE)) found = true;
      },
    }),
  );
  return found;
}

/** Counters, for tests and benchmarks. */
export interface SharedExecutionStats {
  executions: number;
  shared: number;
}

/**
 * Executes each subscription event once per distinct (operation, variables) on this instance and
 * hands the same result to every subscriber of it, instead of resolving the same message (and
 * loading its sender) once per subscriber. Events are shared by identity: pub/sub parses a Redis
 * message once and gives every listener the same object. An operation that reads a `@perViewer`
 * field is executed per viewer. Results are held weakly by the event, so they go when it does.
 */
export function useSharedExecution(
  viewerIdOf: (context: unknown) => string,
  stats: SharedExecutionStats = { executions: 0, shared: 0 },
): Plugin {
  // By text, not by node: two parses of one query (no parser cache, SSE vs WebSocket) still share.
  const docs = new WeakMap<DocumentNode, { text: string; perViewer: boolean }>();
  const results = new WeakMap<object, Map<string, MaybePromise<ExecutionResult>>>();

  const keyOf = (args: ExecutionArgs): string => {
    let doc = docs.get(args.document);
    if (!doc) {
      doc = { text: print(args.document), perViewer: readsPerViewerFields(args.schema, args.document) };
      docs.set(args.document, doc);
    }
    const variables = args.variableValues ? JSON.stringify(args.variableValues) : '';
    const viewer = doc.perViewer ? viewerIdOf(args.contextValue) : '';
    return `${args.operationName ?? ''}\n${variables}\n${viewer}\n${doc.text}`;
  };

  const run = (args: ExecutionArgs, payload: unknown) => {
    stats.executions++;
    return execute({ ...args, rootValue: payload });
  };

  return {
    onSubscribe({ setSubscribeFn }) {
      setSubscribeFn(async (args) => {
        const source = await createSourceEventStream(args);
        if (!isAsyncIterable(source)) return source;
        const key = keyOf(args);
        return new MappedIterator(source, (payload: unknown) => {
          if (typeof payload !== 'object' || payload === null) return run(args, payload);
          let byKey = results.get(payload);
          if (!byKey) {
            byKey = new Map();
            results.set(payload, byKey);
          }
          const cached = byKey.get(key);
          if (cached !== undefined) {
            stats.shared++;
            return cached;
          }
          const result = run(args, payload);
          byKey.set(key, result);
          return result;
        });
      });
    },
  };
}
