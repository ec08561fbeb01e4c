import { describe, expect, it, vi } from 'vitest';
import { AbortedError, ValidationError } from '../core/errors.js';
import { MANUAL_CLOCK_START, ManualClock } from './manual-clock.js';

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => {
      state.settled = true;
      state.value = value;
    },
    (error: unknown) => {
      state.settled = true;
      state.error = error;
    },
  );
  return state;
}

describe('ManualClock', () => {
  it('starts at the given time, or at MANUAL_CLOCK_START, and only moves when advanced', async () => {
    expect(new ManualClock().now()).toBe(MANUAL_CLOCK_START);
    const clock = new ManualClock(1_000);
    expect(clock.now()).toBe(1_000);
    await clock.advance(250);
    expect(clock.now()).toBe(1_250);
    await clock.advance(0);
    expect(clock.now()).toBe(1_250);
  });

  it('rejects a non-finite start', () => {
    expect(() => new ManualClock(Number.NaN)).toThrow(ValidationError);
  });

  it('wakes a sleep exactly when time reaches its deadline', async () => {
    const clock = new ManualClock(0);
    const sleep = track(clock.sleep(1_000));
    await clock.advance(999);
    expect(sleep.settled).toBe(false);
    expect(clock.pendingSleeps).toBe(1);
    await clock.advance(1);
    expect(sleep.settled).toBe(true);
    expect(sleep.error).toBeUndefined();
    expect(clock.pendingSleeps).toBe(0);
  });

  it('records every requested delay in call order', async () => {
    const clock = new ManualClock();
    void clock.sleep(500);
    void clock.sleep(0);
    void clock.sleep(2_000);
    expect(clock.sleeps).toEqual([500, 0, 2_000]);
  });

  it('resolves zero, negative and NaN delays without advancing', async () => {
    const clock = new ManualClock(0);
    await clock.sleep(0);
    await clock.sleep(-5);
    await clock.sleep(Number.NaN);
    expect(clock.now()).toBe(0);
    expect(clock.pendingSleeps).toBe(0);
  });

  it('wakes sleepers in deadline order, same deadlines in request order, each seeing its own deadline as now', async () => {
    const clock = new ManualClock(0);
    const woke: Array<[string, number]> = [];
    const sleepAs = (name: string, ms: number) => clock.sleep(ms).then(() => woke.push([name, clock.now()]));
    void sleepAs('late', 300);
    void sleepAs('first-at-100', 100);
    void sleepAs('second-at-100', 100);
    void sleepAs('mid', 200);
    await clock.advance(1_000);
    expect(woke).toEqual([
      ['first-at-100', 100],
      ['second-at-100', 100],
      ['mid', 200],
      ['late', 300],
    ]);
    expect(clock.now()).toBe(1_000);
  });

  it('wakes sleeps started by awakened code when they fall within the same advance', async () => {
    const clock = new ManualClock(0);
    const wakeTimes: number[] = [];
    const loop = (async () => {
      for (let attempt = 0; attempt < 3; attempt++) {
        await clock.sleep(100);
        wakeTimes.push(clock.now());
      }
    })();
    await clock.advance(250);
    expect(wakeTimes).toEqual([100, 200]);
    await clock.advance(50);
    await loop;
    expect(wakeTimes).toEqual([100, 200, 300]);
  });

  it('runs concurrent advances one after the other', async () => {
    const clock = new ManualClock(0);
    const sleep = track(clock.sleep(15));
    await Promise.all([clock.advance(10), clock.advance(10)]);
    expect(clock.now()).toBe(20);
    expect(sleep.settled).toBe(true);
  });

  it('rejects a negative or non-finite advance and keeps the time', async () => {
    const clock = new ManualClock(0);
    await expect(clock.advance(-1)).rejects.toSatisfy(ValidationError.isInstance);
    await expect(clock.advance(Number.POSITIVE_INFINITY)).rejects.toSatisfy(ValidationError.isInstance);
    await expect(clock.advance(Number.NaN)).rejects.toSatisfy(ValidationError.isInstance);
    expect(clock.now()).toBe(0);
    await clock.advance(5);
    expect(clock.now()).toBe(5);
  });

  it('rejects at once with AbortedError when the signal has already fired, and records the delay', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    controller.abort('stop');
    const error = await clock.sleep(100, controller.signal).catch((caught: unknown) => caught);
    expect(AbortedError.isInstance(error)).toBe(true);
    expect((error as AbortedError).cause).toBe('stop');
    expect(clock.sleeps).toEqual([100]);
    expect(clock.pendingSleeps).toBe(0);
  });

  it('rejects a waiting sleep when its signal fires, and forgets it', async () => {
    const clock = new ManualClock(0);
    const controller = new AbortController();
    const aborted = track(clock.sleep(1_000, controller.signal));
    const other = track(clock.sleep(1_000));
    controller.abort(new Error('cancelled'));
    await Promise.resolve();
    expect(aborted.settled).toBe(true);
    expect(AbortedError.isInstance(aborted.error)).toBe(true);
    expect(((aborted.error as AbortedError).cause as Error).message).toBe('cancelled');
    expect(clock.pendingSleeps).toBe(1);
    await clock.advance(1_000);
    expect(other.settled).toBe(true);
    expect(other.error).toBeUndefined();
  });

  it('stops listening to the signal once the sleep has woken', async () => {
    const clock = new ManualClock(0);
    const controller = new AbortController();
    const remove = vi.spyOn(controller.signal, 'removeEventListener');
    const sleep = track(clock.sleep(10, controller.signal));
    await clock.advance(10);
    expect(remove).toHaveBeenCalledWith('abort', expect.any(Function));
    controller.abort();
    await Promise.resolve();
    expect(sleep.error).toBeUndefined();
  });

  it('never wakes a sleep of Infinity on advance', async () => {
    const clock = new ManualClock(0);
    const sleep = track(clock.sleep(Number.POSITIVE_INFINITY));
    await clock.advance(Number.MAX_SAFE_INTEGER);
    expect(sleep.settled).toBe(false);
    await expect(clock.runAll()).rejects.toThrow(/Infinity/);
  });

  it('runAll drives a backoff loop to the end and reports the time it took', async () => {
    const clock = new ManualClock(0);
    const attempts: number[] = [];
    const retrying = (async () => {
      for (let attempt = 0; attempt < 4; attempt++) {
        attempts.push(clock.now());
        if (attempt < 3) await clock.sleep(500 * 2 ** attempt);
      }
    })();
    expect(clock.nextWakeAt()).toBe(500);
    const elapsed = await clock.runAll();
    await retrying;
    expect(elapsed).toBe(500 + 1_000 + 2_000);
    expect(attempts).toEqual([0, 500, 1_500, 3_500]);
    expect(clock.sleeps).toEqual([500, 1_000, 2_000]);
    expect(clock.nextWakeAt()).toBeUndefined();
  });

  it('runAll gives up on code that sleeps forever, and later advances still work', async () => {
    const clock = new ManualClock(0);
    let stop = false;
    void (async () => {
      while (!stop) await clock.sleep(1);
    })();
    await expect(clock.runAll(50)).rejects.toThrow(/after 50 wake-ups/);
    stop = true;
    await clock.advance(1);
    expect(clock.pendingSleeps).toBe(0);
  });
});
