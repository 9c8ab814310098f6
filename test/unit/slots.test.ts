import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { Slots } from '../../src/infra/slots.js';

/** Slots: at most `size` holders, waiters served in arrival order, releases idempotent. */

const tick = () => new Promise<void>((r) => setImmediate(r));
/** A slot as a promise of its release (a waiter that resolves it). */
const acquire = (slots: Slots) => new Promise<() => void>((granted) => slots.acquireFor({ granted }));

describe('Slots', () => {
  it('should refuse a size below 1 or not an integer', () => {
    expect(() => new Slots(0)).toThrow(RangeError);
    expect(() => new Slots(1.5)).toThrow(RangeError);
  });

  describe('when 50 holders race for 3 slots, each holding for a few turns', () => {
    it('should never have more than 3 at once, use all 3, and serve every one', async () => {
      const slots = new Slots(3);
      let now = 0;
      let most = 0;
      const served: number[] = [];
      await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const release = await acquire(slots);
          now++;
          most = Math.max(most, now);
          expect(slots.inUse).toBeLessThanOrEqual(3);
          for (let t = 0; t < 1 + (i % 4); t++) await tick();
          served.push(i);
          now--;
          release();
        }),
      );
      expect(most).toBe(3);
      expect(slots.peak).toBe(3);
      expect(served).toHaveLength(50);
      expect([slots.inUse, slots.waiting]).toEqual([0, 0]);
    });
  });

  describe('when callers wait', () => {
    it('should hand the slots out in arrival order', async () => {
      const slots = new Slots(1);
      const first = await acquire(slots);
      const order: number[] = [];
      const waiting = [1, 2, 3, 4].map((n) => acquire(slots).then((release) => (order.push(n), release)));
      await tick();
      expect(slots.waiting).toBe(4);
      first();
      for (const w of waiting) (await w)();
      expect(order).toEqual([1, 2, 3, 4]);
      expect([slots.inUse, slots.waiting]).toEqual([0, 0]);
    });
  });

  describe('when a release is called twice', () => {
    it('should give back one slot only', async () => {
      const slots = new Slots(2);
      const a = await acquire(slots);
      const b = await acquire(slots);
      a();
      a();
      expect(slots.inUse).toBe(1);
      const c = await acquire(slots);
      // Both slots are held (b, c): a third caller waits.
      let third = false;
      const d = acquire(slots).then((release) => ((third = true), release));
      await tick();
      expect(third).toBe(false);
      b();
      (await d)();
      c();
      expect([slots.inUse, slots.waiting]).toEqual([0, 0]);
    });
  });

  describe('when a holder never releases and maxHoldMs is set', () => {
    it('should release it after maxHoldMs, so the next caller gets the slot', async () => {
      const slots = new Slots(1, 50);
      const stuck = await acquire(slots);
      const started = Date.now();
      const next = await acquire(slots);
      expect(Date.now() - started).toBeGreaterThanOrEqual(45);
      expect(slots.inUse).toBe(1);
      // The stuck holder's late release gives back nothing: its slot is already the next one's.
      stuck();
      expect(slots.inUse).toBe(1);
      next();
      expect([slots.inUse, slots.waiting]).toEqual([0, 0]);
    });
  });

  describe('when thousands of waiters give their slot back as soon as they get it', () => {
    it('should serve them all in order without nesting one grant in another (no stack overflow)', () => {
      const slots = new Slots(1);
      let holder: (() => void) | null = null;
      slots.acquireFor({ granted: (release) => (holder = release) });
      const order: number[] = [];
      let depth = 0;
      let deepest = 0;
      for (let i = 0; i < 20_000; i++) {
        slots.acquireFor({
          granted: (release) => {
            depth++;
            deepest = Math.max(deepest, depth);
            order.push(i);
            // Given back at once, from inside granted (a subscribe whose socket closed while it waited).
            release();
            depth--;
          },
        });
      }
      expect(slots.waiting).toBe(20_000);
      (holder as unknown as () => void)();
      expect(order).toEqual(Array.from({ length: 20_000 }, (_, i) => i));
      expect(deepest).toBe(1);
      expect([slots.inUse, slots.waiting]).toEqual([0, 0]);
    });

    it('should keep arrival order for a waiter that comes while a grant runs', () => {
      const slots = new Slots(1);
      const order: string[] = [];
      let holder: (() => void) | null = null;
      slots.acquireFor({ granted: (release) => (holder = release) });
      slots.acquireFor({
        granted: (release) => {
          order.push('a');
          // Arrives while a's grant runs, and a gives its slot back right after: b, queued first, goes before it.
          slots.acquireFor({ granted: (r) => (order.push('c'), r()) });
          release();
        },
      });
      slots.acquireFor({ granted: (r) => (order.push('b'), r()) });
      (holder as unknown as () => void)();
      expect(order).toEqual(['a', 'b', 'c']);
      expect([slots.inUse, slots.waiting]).toEqual([0, 0]);
    });
  });

  describe('when a waiter has been served', () => {
    it('should not keep it (its promise, and the release it resolved with)', async () => {
      v8.setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as () => void;
      const slots = new Slots(1, 60_000);
      const first = await acquire(slots);
      const refs: WeakRef<object>[] = [];
      const served: Promise<void>[] = [];
      // In a function of its own, so no register of this test's frame still holds the last one.
      const wait = () => {
        const waiter = acquire(slots);
        refs.push(new WeakRef(waiter));
        served.push(waiter.then((release) => release()));
      };
      for (let i = 0; i < 3; i++) wait();
      first();
      await Promise.all(served);
      served.length = 0;
      for (let i = 0; i < 3 && refs.some((r) => r.deref() !== undefined); i++) {
        await new Promise((resolve) => setImmediate(resolve));
        gc();
      }
      expect(refs.map((r) => r.deref() === undefined)).toEqual([true, true, true]);
      expect(slots.inUse).toBe(0);
    });
  });

  describe('when thousands wait at once (the waiting list is compacted as it is consumed)', () => {
    it('should serve all of them in order with the limit kept', async () => {
      const slots = new Slots(4);
      const order: number[] = [];
      await Promise.all(
        Array.from({ length: 5000 }, async (_, i) => {
          const release = await acquire(slots);
          expect(slots.inUse).toBeLessThanOrEqual(4);
          order.push(i);
          await tick();
          release();
        }),
      );
      expect(order).toEqual(Array.from({ length: 5000 }, (_, i) => i));
      expect([slots.inUse, slots.waiting, slots.peak]).toEqual([0, 0, 4]);
    });
  });
});
