import { GraphQLError } from 'graphql';
import { describe, expect, it } from 'vitest';
import { maskError, withCode } from '../../src/app.js';
import { badInput, forbidden, scriptError, SCRIPT_STATUS } from '../../src/errors.js';

const located = (original: Error) =>
  new GraphQLError(original.message, { path: ['field'], originalError: original });

describe('maskError', () => {
  describe('when in production (isDev false)', () => {
    it('should hide an internal error behind a generic message without its details', () => {
      const masked = maskError(located(new Error('SELECT secret FROM db')), 'Unexpected error.', false);
      expect(masked.message).toBe('Unexpected error.');
      expect(JSON.stringify((masked as GraphQLError).toJSON())).not.toContain('secret');
    });

    it('should keep an API error with its code and field', () => {
      const masked = maskError(located(badInput('text', 'too long')), 'Unexpected error.', false) as GraphQLError;
      expect(masked.message).toBe('too long');
      expect(masked.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'text' });
    });

    it('should turn a Redis connection error into UNAVAILABLE', () => {
      const redisDown = new Error("Stream isn't writeable and enableOfflineQueue options is false");
      const masked = maskError(located(redisDown), 'Unexpected error.', false) as GraphQLError;
      expect(masked.extensions.code).toBe('UNAVAILABLE');
      expect(masked.path).toEqual(['field']);
    });

    it('should turn a Redis command timeout into UNAVAILABLE', () => {
      const masked = maskError(located(new Error('Command timed out')), 'Unexpected error.', false) as GraphQLError;
      expect(masked.extensions.code).toBe('UNAVAILABLE');
    });
  });
});

describe('withCode', () => {
  it("should replace yoga's own codes with BAD_USER_INPUT", () => {
    const e = withCode(new GraphQLError('bad', { extensions: { code: 'GRAPHQL_VALIDATION_FAILED', http: { status: 400 } } }));
    expect(e.extensions).toMatchObject({ code: 'BAD_USER_INPUT', http: { status: 400 } });
  });

  it('should keep contract codes and INTERNAL_SERVER_ERROR', () => {
    expect(withCode(forbidden()).extensions.code).toBe('FORBIDDEN');
    expect(withCode(new GraphQLError('x', { extensions: { code: 'INTERNAL_SERVER_ERROR' } })).extensions.code).toBe(
      'INTERNAL_SERVER_ERROR',
    );
  });

  it('should give a code to an error without one', () => {
    expect(withCode(new GraphQLError('x')).extensions.code).toBe('BAD_USER_INPUT');
  });
});

describe('scriptError', () => {
  it('should map every script status to a contract code', () => {
    expect(scriptError(SCRIPT_STATUS.ROOM_NOT_FOUND).extensions.code).toBe('NOT_FOUND');
    expect(scriptError(SCRIPT_STATUS.NOT_MEMBER).extensions.code).toBe('FORBIDDEN');
    expect(scriptError(SCRIPT_STATUS.NOT_PUBLIC).extensions.code).toBe('FORBIDDEN');
    expect(scriptError(SCRIPT_STATUS.MESSAGE_NOT_FOUND).extensions.code).toBe('NOT_FOUND');
    expect(scriptError(SCRIPT_STATUS.NOT_AUTHOR).extensions.code).toBe('FORBIDDEN');
    expect(scriptError(SCRIPT_STATUS.NOT_OWNER).extensions.code).toBe('FORBIDDEN');
    expect(scriptError(SCRIPT_STATUS.DELETED).extensions.code).toBe('CONFLICT');
  });
});
