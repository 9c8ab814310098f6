import { GraphQLError } from 'graphql';

/** The contract's error codes (API.md § Errors), and nothing else. */
export const ERROR_CODES = [
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'NOT_FOUND',
  'BAD_USER_INPUT',
  'RATE_LIMITED',
  'CONFLICT',
  'NOT_CONFIGURED',
  'UNAVAILABLE',
  'CURSOR_EXPIRED',
] as const;

/** One of the contract's error codes. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** An expected API error: carries `extensions.code` (+ `field`, `retryAfter`) and is never masked. */
export class AppError extends GraphQLError {
  readonly code: ErrorCode;
  constructor(
    code: ErrorCode,
    message: string,
    extra: { field?: string; retryAfter?: number; reason?: string; status?: number; headers?: Record<string, string> } = {},
  ) {
    const { status, headers, ...rest } = extra;
    super(message, {
      extensions: {
        code,
        ...rest,
        ...(status !== undefined || headers ? { http: { ...(status !== undefined ? { status } : {}), ...(headers ? { headers } : {}) } } : {}),
      },
    });
    this.code = code;
    this.name = 'AppError';
  }
}

/** No or bad credentials. */
export const unauthenticated = (message = 'Authentication required: send a valid Bearer token') =>
  new AppError('UNAUTHENTICATED', message);
/** The viewer may not do this (not a member, not the author, not the owner). */
export const forbidden = (message = 'Forbidden') => new AppError('FORBIDDEN', message);
/** The thing does not exist. */
export const notFound = (what: string) => new AppError('NOT_FOUND', `${what} not found`);
/** Bad input; `field` names the argument at fault. */
export const badInput = (field: string, message: string) =>
  new AppError('BAD_USER_INPUT', message, { field });
/** The state does not allow the change. */
export const conflict = (message: string) => new AppError('CONFLICT', message);
/** A feature whose settings are absent. */
export const notConfigured = (message: string) => new AppError('NOT_CONFIGURED', message);
/** Redis is unreachable. */
export const unavailable = (message = 'Service temporarily unavailable: storage is unreachable') =>
  new AppError('UNAVAILABLE', message);
/** A subscription's cursor can no longer be honoured exactly. */
export const cursorExpired = (message: string, reason?: string) =>
  new AppError('CURSOR_EXPIRED', message, reason ? { reason } : {});

/** Status codes returned by Lua scripts (see each script's header), mapped to API errors. */
export const SCRIPT_STATUS = {
  OK: 0,
  ROOM_NOT_FOUND: 1,
  NOT_MEMBER: 2,
  NOT_PUBLIC: 3,
  MESSAGE_NOT_FOUND: 4,
  NOT_AUTHOR: 5,
  NOT_OWNER: 6,
  DELETED: 7,
  // 8 is rooms' IS_OWNER (removeMember), answered there.
  POLL_NOT_FOUND: 9,
  POLL_CLOSED: 10,
  BAD_OPTION: 11,
  SINGLE_CHOICE: 12,
  NOT_POLL_CLOSER: 13,
} as const;

/** Turns a script status code into the API error it stands for. */
export function scriptError(status: number): AppError {
  switch (status) {
    case SCRIPT_STATUS.ROOM_NOT_FOUND:
      return notFound('Room');
    case SCRIPT_STATUS.NOT_MEMBER:
      return forbidden('You are not a member of this room');
    case SCRIPT_STATUS.NOT_PUBLIC:
      return forbidden('This room is private: ask a member to add you');
    case SCRIPT_STATUS.MESSAGE_NOT_FOUND:
      return notFound('Message');
    case SCRIPT_STATUS.NOT_AUTHOR:
      return forbidden('Only the author may do this');
    case SCRIPT_STATUS.NOT_OWNER:
      return forbidden('Only the room owner may do this');
    case SCRIPT_STATUS.DELETED:
      return conflict('The message was deleted');
    case SCRIPT_STATUS.POLL_NOT_FOUND:
      return notFound('Poll');
    case SCRIPT_STATUS.POLL_CLOSED:
      return conflict('The poll is closed');
    case SCRIPT_STATUS.BAD_OPTION:
      return badInput('optionIds', 'optionIds must be distinct options of this poll');
    case SCRIPT_STATUS.SINGLE_CHOICE:
      return badInput('optionIds', 'This poll is single choice: vote for one option (or none to retract)');
    case SCRIPT_STATUS.NOT_POLL_CLOSER:
      return forbidden('Only the poll creator or the room owner may close it');
    default:
      return new AppError('CONFLICT', `Unexpected script status ${status}`);
  }
}

const REDIS_DOWN_PATTERNS = [
  /Connection is closed/i,
  /Stream isn't writeable/i,
  /enableOfflineQueue/i,
  /Command timed out/i,
  /MaxRetriesPerRequest/i,
  /ECONNREFUSED/,
  /ECONNRESET/,
  /EPIPE/,
  /LOADING/,
  /MISCONF/,
  /READONLY/,
];

/** True when an error means Redis could not be reached (as opposed to a bug). */
export function isRedisUnavailableError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const text = `${err.name} ${err.message}`;
  return REDIS_DOWN_PATTERNS.some((p) => p.test(text));
}
