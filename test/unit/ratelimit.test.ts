import { buildSchema, parse } from 'graphql';
import { describe, expect, it } from 'vitest';
import { parseLimit, parseOverrides, parseWindow, type Limit } from '../../src/ratelimit/ratelimit.service.js';
import { collectLimits, countRootFields, rateLimited } from '../../src/ratelimit/use-rate-limits.js';

/**
 * The pure parts of rate limiting: the `RATE_LIMITS` grammar, how the `@rateLimit` directive and the
 * overrides combine into per-field limits, and how many hits an operation asks for (aliases count).
 */

const SDL = /* GraphQL */ `
  directive @rateLimit(max: Int!, window: String!, scope: String) on FIELD_DEFINITION
  type Query {
    me: String
    rooms(first: Int): [String!]! @rateLimit(max: 120, window: "1m")
    sub2: String
  }
  type Mutation {
    sendMessage(text: String!): String! @rateLimit(max: 30, window: "10s")
    createRoom(name: String!): String! @rateLimit(max: 10, window: "1m")
    setTyping(on: Boolean!): Boolean!
  }
  type Subscription {
    messageAdded(roomId: ID!): String! @rateLimit(max: 60, window: "1m", scope: "roomSubscriptions")
    typing(roomId: ID!): String! @rateLimit(max: 60, window: "1m", scope: "roomSubscriptions")
    free: String!
  }
`;

const limit = (max: number, windowMs: number): Limit => ({ max, windowMs });

describe('parseWindow', () => {
  it.each([
    ['500ms', 500],
    ['1s', 1000],
    ['10s', 10_000],
    ['1m', 60_000],
    ['2h', 7_200_000],
    ['1d', 86_400_000],
    [' 10 s ', 10_000],
  ])('should read %j as %d ms', (text, ms) => {
    expect(parseWindow(text)).toBe(ms);
  });

  it.each(['', 's', '10', '0s', '0ms', '-1s', '1.5s', '10x', '1 minute', 's10', '1m1s'])('should refuse %j with null', (text) => {
    expect(parseWindow(text)).toBeNull();
  });
});

describe('parseLimit', () => {
  it('should read max/window', () => {
    expect(parseLimit('30/10s')).toEqual(limit(30, 10_000));
    expect(parseLimit(' 600 / 1m ')).toEqual(limit(600, 60_000));
    expect(parseLimit('1/500ms')).toEqual(limit(1, 500));
  });

  it.each(['', '30', '/10s', '30/', '30/10', '0/10s', '-1/10s', '1.5/10s', 'x/10s', '30/0s', '30/10s/1m'])(
    'should refuse %j with null',
    (text) => {
      expect(parseLimit(text)).toBeNull();
    },
  );
});

describe('parseOverrides', () => {
  describe('when RATE_LIMITS is unset or blank', () => {
    it.each([undefined, '', '   '])('should give no overrides and limits on for %j', (text) => {
      const parsed = parseOverrides(text);
      expect(parsed.off).toBe(false);
      expect([...parsed.limits]).toEqual([]);
    });
  });

  describe('when RATE_LIMITS is off', () => {
    it('should turn limits off', () => {
      expect(parseOverrides('off')).toEqual({ off: true, limits: new Map() });
      expect(parseOverrides(' off ').off).toBe(true);
    });
  });

  describe('when RATE_LIMITS lists operations', () => {
    it('should map each operation (and `*`) to its limit', () => {
      const parsed = parseOverrides('sendMessage=30/10s,createRoom=10/1m,*=600/1m');
      expect(parsed.off).toBe(false);
      expect(parsed.limits).toEqual(
        new Map([
          ['sendMessage', limit(30, 10_000)],
          ['createRoom', limit(10, 60_000)],
          ['*', limit(600, 60_000)],
        ]),
      );
    });

    it('should tolerate spaces around names and values', () => {
      expect(parseOverrides(' sendMessage = 5/2s , * = 100/1m ').limits).toEqual(
        new Map([
          ['sendMessage', limit(5, 2000)],
          ['*', limit(100, 60_000)],
        ]),
      );
    });

    it('should let a later entry for the same operation win', () => {
      expect(parseOverrides('sendMessage=5/1s,sendMessage=7/1m').limits.get('sendMessage')).toEqual(limit(7, 60_000));
    });
  });

  describe('when an entry is malformed', () => {
    it.each(['sendMessage', 'sendMessage=', '=5/1s', 'sendMessage=5', 'sendMessage=5/1x', 'sendMessage=0/1s', 'a=1/1s,,b=1/1s', 'a=1/1s,b'])(
      'should throw naming the bad entry for %j',
      (text) => {
        expect(() => parseOverrides(text)).toThrow(/is not <operation>=<max>\/<window>/);
      },
    );

    it('should quote the offending entry in the message', () => {
      expect(() => parseOverrides('sendMessage=5/1s,createRoom=ten/1m')).toThrow('"createRoom=ten/1m"');
    });
  });
});

describe('countRootFields', () => {
  const count = (source: string, operationName?: string) => {
    const r = countRootFields(parse(source), operationName);
    return r && { type: r.type, counts: Object.fromEntries(r.counts) };
  };

  it('should count each root field once', () => {
    expect(count('{ me rooms }')).toEqual({ type: 'Query', counts: { me: 1, rooms: 1 } });
  });

  it('should count every alias of a field as a hit', () => {
    expect(count('mutation { a: sendMessage(text: "1") b: sendMessage(text: "2") c: sendMessage(text: "3") setTyping(on: true) }')).toEqual({
      type: 'Mutation',
      counts: { sendMessage: 3, setTyping: 1 },
    });
  });

  it('should count fields selected through inline fragments and fragment spreads', () => {
    const source = `
      mutation M { a: sendMessage(text: "1") ... on Mutation { b: sendMessage(text: "2") } ...F ...F }
      fragment F on Mutation { c: sendMessage(text: "3") createRoom(name: "r") }
    `;
    // GraphQL merges a fragment spread twice into one execution; counting it twice may overcount,
    // which errs on the side of the limit: never fewer hits than executions.
    const counted = count(source);
    expect(counted?.type).toBe('Mutation');
    expect(counted?.counts.sendMessage).toBeGreaterThanOrEqual(3);
    expect(counted?.counts.createRoom).toBeGreaterThanOrEqual(1);
  });

  it('should count nested fragments and survive fragment cycles', () => {
    const source = `
      query Q { ...A }
      fragment A on Query { me ...B }
      fragment B on Query { rooms ...A }
    `;
    expect(count(source)).toEqual({ type: 'Query', counts: { me: 1, rooms: 1 } });
  });

  it('should leave introspection and __typename uncounted', () => {
    expect(count('{ __typename __schema { queryType { name } } me }')).toEqual({ type: 'Query', counts: { me: 1 } });
    expect(count('{ __typename }')).toEqual({ type: 'Query', counts: {} });
  });

  it('should count only the operation named by operationName', () => {
    const source = 'query A { me } mutation B { x: sendMessage(text: "1") y: sendMessage(text: "2") } subscription C { messageAdded(roomId: "r") }';
    expect(count(source, 'A')).toEqual({ type: 'Query', counts: { me: 1 } });
    expect(count(source, 'B')).toEqual({ type: 'Mutation', counts: { sendMessage: 2 } });
    expect(count(source, 'C')).toEqual({ type: 'Subscription', counts: { messageAdded: 1 } });
  });

  it('should answer null when the operation cannot be chosen', () => {
    expect(count('query A { me } query B { me }')).toBeNull();
    expect(count('query A { me }', 'Nope')).toBeNull();
  });
});

describe('collectLimits', () => {
  const schema = buildSchema(SDL);

  it('should take each limited field from its directive, scoped by its name unless the directive names a scope', () => {
    const limits = collectLimits(schema, new Map());
    expect(Object.fromEntries(limits)).toEqual({
      'Query.rooms': { scope: 'rooms', limit: limit(120, 60_000) },
      'Mutation.sendMessage': { scope: 'sendMessage', limit: limit(30, 10_000) },
      'Mutation.createRoom': { scope: 'createRoom', limit: limit(10, 60_000) },
      'Subscription.messageAdded': { scope: 'roomSubscriptions', limit: limit(60, 60_000) },
      'Subscription.typing': { scope: 'roomSubscriptions', limit: limit(60, 60_000) },
    });
  });

  it('should replace a default with the override of the same name and keep the others', () => {
    const limits = collectLimits(schema, new Map([['sendMessage', limit(50, 5000)]]));
    expect(limits.get('Mutation.sendMessage')).toEqual({ scope: 'sendMessage', limit: limit(50, 5000) });
    expect(limits.get('Mutation.createRoom')).toEqual({ scope: 'createRoom', limit: limit(10, 60_000) });
  });

  it('should keep a directive scope when its field is overridden', () => {
    const limits = collectLimits(schema, new Map([['typing', limit(2, 60_000)]]));
    expect(limits.get('Subscription.typing')).toEqual({ scope: 'roomSubscriptions', limit: limit(2, 60_000) });
    expect(limits.get('Subscription.messageAdded')).toEqual({ scope: 'roomSubscriptions', limit: limit(60, 60_000) });
  });

  it('should apply an override named after a scope to every field of that scope (RATE_LIMITS=roomSubscriptions=2/1m)', () => {
    const limits = collectLimits(schema, new Map([['roomSubscriptions', limit(2, 60_000)]]));
    expect(limits.get('Subscription.messageAdded')).toEqual({ scope: 'roomSubscriptions', limit: limit(2, 60_000) });
    expect(limits.get('Subscription.typing')).toEqual({ scope: 'roomSubscriptions', limit: limit(2, 60_000) });
  });

  it('should limit a field without a directive when an override names it', () => {
    const limits = collectLimits(schema, new Map([['setTyping', limit(3, 1000)]]));
    expect(limits.get('Mutation.setTyping')).toEqual({ scope: 'setTyping', limit: limit(3, 1000) });
    expect(limits.has('Query.me')).toBe(false);
    expect(limits.has('Subscription.free')).toBe(false);
  });

  it('should not turn the `*` budget into a field limit', () => {
    const limits = collectLimits(schema, new Map([['*', limit(5, 1000)]]));
    expect([...limits.keys()].some((k) => k.endsWith('.*'))).toBe(false);
    expect(limits.size).toBe(5);
  });

  it('should throw on a directive with a malformed window', () => {
    const bad = buildSchema(SDL.replace('window: "10s"', 'window: "ten seconds"'));
    expect(() => collectLimits(bad, new Map())).toThrow(/Mutation\.sendMessage.*ten seconds/);
  });
});

describe('rateLimited', () => {
  const refused = (scope: string, retryAfterMs: number) => ({
    scope,
    limit: limit(5, 2000),
    admitted: false,
    remaining: 0,
    retryAfterMs,
    resetMs: 2000,
  });

  it('should answer RATE_LIMITED with the longest wait in whole seconds, 429 and Retry-After', () => {
    const error = rateLimited([refused('sendMessage', 1200), refused('*', 3001)]);
    expect(error.extensions).toMatchObject({
      code: 'RATE_LIMITED',
      retryAfter: 4,
      http: { status: 429, headers: { 'Retry-After': '4' } },
    });
    expect(error.message).toMatch(/all operations/);
  });

  it('should never tell a client to retry in less than 1 s', () => {
    expect(rateLimited([refused('sendMessage', 1)]).extensions.retryAfter).toBe(1);
    expect(rateLimited([refused('sendMessage', 0)]).extensions.retryAfter).toBe(1);
  });
});
