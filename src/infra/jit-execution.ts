import type { DocumentNode, ExecutionArgs, ExecutionResult } from 'graphql';
import { compileQuery, isCompiledQuery, type CompiledQuery } from 'graphql-jit';
import type { Plugin } from 'graphql-yoga';

/** Compilations by document, then operation name (null: graphql-jit could not compile it). */
const compiledByDocument = new WeakMap<DocumentNode, Map<string, CompiledQuery | null>>();

/**
 * The operation of `args` compiled by graphql-jit (once per document and operation name), or null
 * where it cannot be: callers then execute as usual. Documents come from the parser cache, so the
 * same request text compiles once.
 */
export function compiledOperation(args: ExecutionArgs): CompiledQuery | null {
  let byName = compiledByDocument.get(args.document);
  if (!byName) {
    byName = new Map();
    compiledByDocument.set(args.document, byName);
  }
  const name = args.operationName ?? '';
  let compiled = byName.get(name);
  if (compiled === undefined) {
    const c = compileQuery(args.schema, args.document, args.operationName ?? undefined);
    compiled = isCompiledQuery(c) ? c : null;
    byName.set(name, compiled);
  }
  return compiled;
}

/** Runs a compiled operation with the arguments graphql-js's execute takes. */
export function runCompiled(compiled: CompiledQuery, args: ExecutionArgs, rootValue: unknown = args.rootValue) {
  return compiled.query(rootValue, args.contextValue, (args.variableValues ?? {}) as Record<string, unknown>) as
    | ExecutionResult
    | Promise<ExecutionResult>;
}

/**
 * Queries and mutations over HTTP run compiled by graphql-jit where it compiles them (graphql-js's
 * executor otherwise): no per-call field collection, whose memoization in WeakMaps keyed by each
 * call's context V8's young generation handles slowly. Subscriptions are useSharedExecution's.
 */
export function useJitExecution(): Plugin {
  return {
    onExecute({ args, setExecuteFn }) {
      const compiled = compiledOperation(args);
      if (compiled) setExecuteFn((a) => runCompiled(compiled, a));
    },
  };
}
