import { execute, parse, type ExecutionArgs, type GraphQLSchema } from 'graphql';
import { createSchema } from 'graphql-yoga';
import { describe, expect, it } from 'vitest';
import { compiledOperation, runCompiled } from '../../src/infra/jit-execution.js';

// Resolvers as the app declares them (graphql-jit does not call function-valued root fields).
const schema = createSchema({
  typeDefs: `
    type User { id: ID! name: String! }
    type Message { id: ID! seq: Int! sender: User! }
    type Query { message(seq: Int!): Message }
  `,
  resolvers: {
    Query: { message: (_: unknown, { seq }: { seq: number }) => ({ id: `m${seq}`, seq, sender: { id: 'u1', name: 'Ann' } }) },
  },
}) as unknown as GraphQLSchema;
const root = {};

describe('compiledOperation', () => {
  it('should compile a document once and reuse the compilation, answering as graphql-js does', () => {
    const args: ExecutionArgs = { schema, document: parse('query Q($s: Int!) { message(seq: $s) { id seq sender { name } } }'), rootValue: root, variableValues: { s: 3 } };
    const compiled = compiledOperation(args);
    expect(compiled).not.toBeNull();
    expect(compiledOperation(args)).toBe(compiled);
    // The same answer as graphql-js.
    expect(runCompiled(compiled!, args)).toEqual(execute(args));
    // Variables that do not coerce: refused with graphql-js's own errors (graphql-jit words them
    // differently).
    const bad = { ...args, variableValues: { s: 'x' } };
    expect(JSON.stringify(runCompiled(compiled!, bad))).toEqual(JSON.stringify(execute(bad)));
  });

  it('should compile per operation name', () => {
    const document = parse('query A { message(seq: 1) { id } } query B { message(seq: 2) { seq } }');
    const a: ExecutionArgs = { schema, document, rootValue: root, operationName: 'A' };
    const b: ExecutionArgs = { ...a, operationName: 'B' };
    expect(runCompiled(compiledOperation(a)!, a)).toEqual({ data: { message: { id: 'm1' } } });
    expect(runCompiled(compiledOperation(b)!, b)).toEqual({ data: { message: { seq: 2 } } });
  });
});
