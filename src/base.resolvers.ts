import { GraphQLScalarType, Kind } from 'graphql';
import { badInput } from './errors.js';
import type { Resolvers } from './generated/resolvers-types.js';

/** The API version `Query.apiVersion` reports. */
export const API_VERSION = '1';

const toIso = (value: unknown): string => {
  const date = value instanceof Date ? value : new Date(value as string | number);
  if (Number.isNaN(date.getTime())) throw new TypeError(`Not a date: ${String(value)}`);
  return date.toISOString();
};

const parseIso = (value: unknown): string => {
  if (typeof value !== 'string' || Number.isNaN(Date.parse(value))) {
    throw badInput('DateTime', 'expected an ISO-8601 date-time string');
  }
  return new Date(value).toISOString();
};

/** Roots and scalars. */
export const baseResolvers: Resolvers = {
  DateTime: new GraphQLScalarType({
    name: 'DateTime',
    // The SDL's description: a scalar's resolver object replaces the type, description included.
    description: 'An ISO-8601 date-time in UTC, e.g. `2026-11-26T09:30:00.000Z`.',
    serialize: toIso,
    parseValue: parseIso,
    parseLiteral: (ast) => (ast.kind === Kind.STRING ? parseIso(ast.value) : undefined),
  }),
  Query: {
    apiVersion: () => API_VERSION,
  },
};
