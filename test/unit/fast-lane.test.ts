import { describe, expect, it } from 'vitest';
import { regularMediaType } from '../../src/infra/fast-lane.js';

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
