import { describe, expect, it } from 'vitest';
import { RecentlyWritten } from '../../src/users/users.service.js';

/** A clock the test moves. */
const manualClock = (start = 1_000) => {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
};

describe('RecentlyWritten', () => {
  it('should say seen only for the same id and name within the period', () => {
    const clock = manualClock();
    const written = new RecentlyWritten(clock, 60_000);
    expect(written.seen('u1', 'Una')).toBe(false);
    expect(written.seen('u1', 'Una')).toBe(true);
    expect(written.seen('u2', 'Una')).toBe(false);
    // A new name is not seen (it must be written), and then it is.
    expect(written.seen('u1', 'Uma')).toBe(false);
    expect(written.seen('u1', 'Uma')).toBe(true);
    expect(written.seen('u1', 'Una')).toBe(false);
  });

  it('should forget everything once a period has passed, even for a user seen throughout', () => {
    const clock = manualClock();
    const written = new RecentlyWritten(clock, 60_000);
    expect(written.seen('u1', 'Una')).toBe(false);
    clock.advance(59_999);
    expect(written.seen('u1', 'Una')).toBe(true);
    clock.advance(1);
    // Written again once per period however often the user is active.
    expect(written.seen('u1', 'Una')).toBe(false);
    expect(written.seen('u1', 'Una')).toBe(true);
  });

  it('should forget one user or all of them', () => {
    const written = new RecentlyWritten(manualClock(), 60_000);
    written.seen('u1', 'Una');
    written.seen('u2', 'Ugo');
    written.forget('u1');
    expect(written.seen('u1', 'Una')).toBe(false);
    expect(written.seen('u2', 'Ugo')).toBe(true);
    written.forget();
    expect(written.seen('u1', 'Una')).toBe(false);
    expect(written.seen('u2', 'Ugo')).toBe(false);
  });
});
