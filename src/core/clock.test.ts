import { afterEach, describe, expect, it, vi } from 'vitest';
import { MAX_TIMER_MS } from './abort.js';
import { systemClock } from './clock.js';
import { AbortedError } from './errors.js';

afterEach(() => {
  vi.useRealTimers();
});

/** Whether `promise` has settled, once every timer due by now and every callback it queued has run. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(
    () => (done = true),
    () => (done = true),
  );
  await vi.advanceTimersByTimeAsync(0);
  return done;
}

describe('systemClock.sleep', () => {
  it('resolves after the wait, leaving no timer behind', async () => {
    vi.useFakeTimers();
    const sleeping = systemClock.sleep(1_000);
    await vi.advanceTimersByTimeAsync(999);
    expect(await settled(sleeping)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await settled(sleeping)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('waits out a wait longer than one timer can hold, instead of ending it after 1 ms', async () => {
    vi.useFakeTimers();
    const wait = MAX_TIMER_MS * 2 + 10_000;
    const sleeping = systemClock.sleep(wait);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await settled(sleeping)).toBe(false);
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS * 2 - 1_000);
    expect(await settled(sleeping)).toBe(false);
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(9_999);
    expect(await settled(sleeping)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await settled(sleeping)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with AbortedError when aborted in a later share of a long wait, clearing its timer', async () => {
    vi.useFakeTimers();
    const controller = new AbortController();
    const sleeping = systemClock.sleep(MAX_TIMER_MS + 60_000, controller.signal).catch((caught: unknown) => caught);
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS + 1_000);
    expect(vi.getTimerCount()).toBe(1);
    const reason = new Error('shutdown');
    controller.abort(reason);
    const error = await sleeping;
    expect(AbortedError.isInstance(error)).toBe(true);
    expect((error as AbortedError).cause).toBe(reason);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects at once when the signal has already fired, starting no timer', async () => {
    vi.useFakeTimers();
    const controller = new AbortController();
    controller.abort();
    await expect(systemClock.sleep(10, controller.signal)).rejects.toSatisfy(AbortedError.isInstance);
    expect(vi.getTimerCount()).toBe(0);
  });
});
