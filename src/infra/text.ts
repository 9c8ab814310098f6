import { badInput } from '../errors.js';

/** Length in Unicode code points, what users call characters. */
export const charLength = (s: string) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

/** Trims `value` and checks its length is within `min..max` characters; `BAD_USER_INPUT` naming `field` otherwise. */
export function checkedText(field: string, value: string, min: number, max: number): string {
  const text = value.trim();
  const len = charLength(text);
  if (len < min || len > max) {
    throw badInput(field, `${field} must be ${min}..${max} characters after trimming (got ${len})`);
  }
  return text;
}

/** Checks an id argument: 1..128 characters, no control characters. */
export function checkedId(field: string, value: string): string {
  // eslint-disable-next-line no-control-regex
  if (value.length < 1 || value.length > 128 || /[\u0000-\u001f\u007f]/.test(value)) {
    throw badInput(field, `${field} is not a valid id`);
  }
  return value;
}
