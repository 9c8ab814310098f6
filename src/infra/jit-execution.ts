import { getOperationAST, getVariableValues, type DocumentNode, type ExecutionArgs, type ExecutionResult, type OperationDefinitionNode } from 'graphql';
import { compileQuery, isCompiledQuery, type CompiledQuery } from 'graphql-jit';
import { isPromise, type Plugin } from 'graphql-yoga';

/** By document, then operation name: the compilation (null: graphql-jit could not compile it). */
const compiledByDocument = new WeakMap<DocumentNode, Map<string, Compiled | null>>();

/** A compiled operation, with its definition (for checking variables as graphql-js does). */
export interface Compiled {
  query: CompiledQuery;
  operation: OperationDefinitionNode;
}

/**
 * The operation of `args` compiled by graphql-jit, once per document and operation name (documents
 * come from the parser cache, so the same request text is the same document), or null where it
 * cannot be compiled: callers then execute as usual. Compiled from the first run, so an operation's
 * answers keep one shape (graphql-jit leaves `locations` out of resolver errors).
 */
export function compiledOperation(args: ExecutionArgs): Compiled | null {
  let byName = compiledByDocument.get(args.document);
  if (!byName) {
    byName = new Map();
    compiledByDocument.set(args.document, byName);
  }
  const name = args.operationName ?? '';
  const known = byName.get(name);
  if (known !== undefined) return known;
  const c = compileQuery(args.schema, args.document, args.operationName ?? undefined);
  const operation = getOperationAST(args.document, args.operationName ?? undefined);
  const compiled = isCompiledQuery(c) && operation ? { query: c, operation } : null;
  byName.set(name, compiled);
  return compiled;
}

/**
 * Runs a compiled operation with the arguments graphql-js's execute takes. Variables that do not
 * coerce are refused with graphql-js's errors (graphql-jit words them differently); graphql-js
 * reads them only then, so a request that coerces pays for one coercion, graphql-jit's.
 */
export function runCompiled(compiled: Compiled, args: ExecutionArgs, rootValue: unknown = args.rootValue): ExecutionResult | Promise<ExecutionResult> {
  const variables = (args.variableValues ?? {}) as Record<string, unknown>;
  const result = compiled.query.query(rootValue, args.contextValue, variables) as ExecutionResult | Promise<ExecutionResult>;
  // graphql-jit answers a variable it cannot coerce synchronously, with errors and no data at all.
  if (isPromise(result) || 'data' in result || !result.errors) return result;
  const checked = getVariableValues(args.schema, compiled.operation.variableDefinitions ?? [], variables);
  return checked.errors ? { errors: checked.errors } : result;
}

/**
 * Queries and mutations (HTTP and WebSocket) run compiled by graphql-jit where it compiles them
 * (graphql's executor otherwise): no per-call field collection, whose memoization in WeakMaps keyed by each
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
