import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codes, gql } from '../helpers/clients.js';
import { startInstance, tokenFor, type TestInstance } from '../helpers/server.js';

describe('when a request is malformed', () => {
  let server: TestInstance;
  let token: string;
  beforeAll(async () => {
    server = await startInstance({ MAX_BODY_BYTES: '4096' });
    token = await tokenFor('err-user');
  });
  afterAll(() => server?.stop());

  it('should answer a syntax error with BAD_USER_INPUT and HTTP 400', async () => {
    const r = await gql(server.url, '{ me { id ', undefined, { token });
    expect(r.status).toBe(400);
    expect(codes(r.errors)).toEqual(['BAD_USER_INPUT']);
  });

  it('should answer an unknown field with BAD_USER_INPUT', async () => {
    const r = await gql(server.url, '{ nope }', undefined, { token });
    expect(codes(r.errors)).toEqual(['BAD_USER_INPUT']);
    expect(r.data ?? null).toBeNull();
  });

  it('should answer a variable of the wrong type with BAD_USER_INPUT', async () => {
    const r = await gql(server.url, 'query($id: ID!) { room(id: $id) { id } }', { id: { not: 'an id' } }, { token });
    expect(codes(r.errors)).toEqual(['BAD_USER_INPUT']);
  });

  it('should answer malformed JSON variables in a GET with 400 instead of 500', async () => {
    const res = await fetch(`${server.url}?query=${encodeURIComponent('{ __typename }')}&variables=%7Bbad`, {
      headers: { accept: 'application/json', authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { errors: { extensions: { code: string } }[] };
    expect(body.errors[0]?.extensions.code).toBe('BAD_USER_INPUT');
  });

  it('should refuse a body over MAX_BODY_BYTES with 413 and keep serving', async () => {
    const big = 'x'.repeat(10_000);
    const r = await gql(server.url, `{ __typename } # ${big}`, undefined, { token });
    expect(r.status).toBe(413);
    const ok = await gql(server.url, '{ __typename }', undefined, { token });
    expect(ok.data).toEqual({ __typename: 'Query' });
  });
});
