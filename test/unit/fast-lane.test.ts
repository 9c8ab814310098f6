import type { IncomingMessage, ServerResponse } from 'node:http';
import { GraphQLError, parse, print, type DocumentNode, type GraphQLSchema } from 'graphql';
import { describe, expect, it } from 'vitest';
import { createFastLane, regularMediaType } from '../../src/infra/fast-lane.js';

/**
 * The media type the fast lane answers with must be the one yoga's result processors would choose
 * (test/e2e/fast-lane.test.ts checks a few against yoga itself): the request's types in reverse
 * order, the last match winning; other charsets than utf-8 are skipped.
 */
describe('regularMediaType', () => {
  it.each([
    [undefined, 'application/json'],
    ['', 'application/json'],
    ['*/*', 'application/json'],
    ['application/json', 'application/json'],
    ['application/*', 'application/json'],
    ['application/graphql-response+json', 'application/graphql-response+json'],
    ['application/graphql-response+json, application/json', 'application/graphql-response+json'],
    ['application/json, application/graphql-response+json', 'application/json'],
    ['application/graphql-response+json,application/json;q=0.9', 'application/graphql-response+json'],
    ['Application/JSON; charset=UTF-8', 'application/json'],
    ['text/event-stream', null],
    ['multipart/mixed', null],
    ['application/json; charset=iso-8859-1', null],
    ['text/html, application/xhtml+xml', null],
  ])('should choose %j -> %s', (accept, expected) => {
    expect(regularMediaType(accept)).toBe(expected);
    // Remembered: the same answer the second time.
    expect(regularMediaType(accept)).toBe(expected);
  });
});

describe('the fast lane validating documents', () => {
  /** A fast lane over a stub envelop whose parser caches by text (as yoga's does) and counts validations. */
  function lane(invalid: Set<string>) {
    const docs = new Map<string, DocumentNode>();
    const validatedTexts: string[] = [];
    const written: { status: number; body: string }[] = [];
    const fast = createFastLane({
      getEnveloped: () => ({
        schema: {} as GraphQLSchema,
        parse: (text: string) => {
          let doc = docs.get(text);
          if (!doc) docs.set(text, (doc = parse(text)));
          return doc;
        },
        validate: (_schema: GraphQLSchema, doc: DocumentNode) => {
          const text = print(doc);
          validatedTexts.push(text);
          return invalid.has(text) ? [new GraphQLError('invalid')] : [];
        },
        contextFactory: () => ({}),
        execute: () => ({ data: { ok: true } }),
      }),
      resolveQuery: (params) => params.query,
      processResult: (r) => r,
      maskError: (e) => e as Error,
      responseHeaders: () => null,
      yogaHeaders: [],
      onError: (err) => {
        throw err;
      },
    });
    const send = (query: string) => {
      let status = 0;
      const res = {
        destroyed: false,
        headersSent: false,
        writeHead: (s: number) => void (status = s),
        end: (body: string) => void written.push({ status, body }),
      };
      return fast.tryHandle({ headers: {} } as IncomingMessage, res as unknown as ServerResponse, { query });
    };
    return { send, validatedTexts, written };
  }

  it('should validate a document once, and leave an invalid one to yoga every time', async () => {
    const invalidQuery = print(parse('{ nope }'));
    const l = lane(new Set([invalidQuery]));
    expect(l.send('{ ok }')).toBe(true);
    expect(l.send('{ ok }')).toBe(true);
    expect(l.send('{ nope }')).toBe(false);
    expect(l.send('{ nope }')).toBe(false);
    expect(l.validatedTexts).toEqual([print(parse('{ ok }')), invalidQuery, invalidQuery]);
    await new Promise((r) => setImmediate(r));
    expect(l.written).toEqual([
      { status: 200, body: '{"data":{"ok":true}}' },
      { status: 200, body: '{"data":{"ok":true}}' },
    ]);
  });
});
