import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from '@graphql-codegen/cli';
import {
  buildClientSchema,
  buildSchema,
  getIntrospectionQuery,
  lexicographicSortSchema,
  printSchema,
  type GraphQLSchema,
  type IntrospectionQuery,
} from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql } from '../helpers/clients.js';
import { ROOT } from '../helpers/process.js';
import { startInstance, type TestInstance } from '../helpers/server.js';

const PRINTED_SCHEMA = join(ROOT, 'src/sdk/schema.graphql');
const sorted = (schema: GraphQLSchema) => printSchema(lexicographicSortSchema(schema));

describe('when an app generates its own typed SDK from our schema', () => {
  let server: TestInstance;
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-app-sdk-'));
  const documents = join(dir, 'app.graphql');
  beforeAll(async () => {
    server = await startInstance();
    writeFileSync(documents, 'query AppRoomNames($first: Int) { rooms(first: $first) { edges { node { id name } } } }\n');
  });
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await server?.stop();
  });

  it('should find in src/sdk/schema.graphql the schema the server serves by introspection (anonymously)', async () => {
    const r = await gql<IntrospectionQuery>(server.url, getIntrospectionQuery());
    expect(r.errors).toBeUndefined();
    const served = buildClientSchema(r.data as IntrospectionQuery);
    expect(sorted(buildSchema(readFileSync(PRINTED_SCHEMA, 'utf8')))).toBe(sorted(served));
  });

  it.each([
    ['the printed schema file', () => PRINTED_SCHEMA],
    ['introspection of a running server', () => server.url],
  ])('should generate typed documents with the client preset from %s', async (_from, schema) => {
    const files = await generate(
      {
        schema: schema(),
        documents,
        silent: true,
        generates: { [join(dir, 'gql/')]: { preset: 'client', config: { scalars: { DateTime: 'string' } } } },
      },
      false,
    );
    const graphqlTs = files.find((f: { filename: string }) => f.filename.endsWith('graphql.ts'))?.content ?? '';
    expect(graphqlTs).toContain('export type AppRoomNamesQuery = { rooms: { edges: Array<{ node: { id: string, name: string } }> } };');
    expect(graphqlTs).toContain('export const AppRoomNamesDocument');
  });
});
