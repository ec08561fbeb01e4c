/**
 * A `Clock` whose time moves only when a test moves it, so retries, expiries and schedules are tested without
 * sleeping and without depending on how fast the machine is.
 *
 * @module
 */
import type { Clock } from '../core/clock.js';
import { AbortedError, ValidationError } from '../core/errors.js';

/**
 * Where a `ManualClock` starts unless told otherwise: 2025-01-01T00:00:00.000Z. Not 0, so that timestamps in test
 * output read as dates and code that treats 0 as "unset" is not fooled.
 *
 * @example
 * ```ts
 * import { MANUAL_CLOCK_START, ManualClock } from 'storyloom/testing';
 * new ManualClock().now() === MANUAL_CLOCK_START; // true
 * ```
 */
export const MANUAL_CLOCK_START = Date.UTC(2025, 0, 1);

interface PendingSleep {
  wakeAt: number;
  /** Creation order: sleeps due at the same time wake in the order they were requested, like timers. */
  sequence: number;
  resolve: () => void;
  release: () => void;
}

/**
 * A manually driven `Clock`. `sleep` waits until `advance` (or `runAll`) moves time past its deadline; `sleeps`
 * records every delay asked for, so a retry test can assert the backoff schedule.
 *
 * `advance` wakes due sleepers one at a time, in deadline order, setting `now()` to each one's deadline and letting
 * the awakened code run (its promise continuations, up to the next macrotask) before going on. A retry loop that
 * sleeps again after waking is therefore woken again by the same `advance` when its next deadline falls within it.
 *
 * @example
 * ```ts
 * import { ManualClock } from 'storyloom/testing';
 *
 * const clock = new ManualClock();
 * const done = clock.sleep(1_000).then(() => 'woke');
 * await clock.advance(999); // not yet
 * await clock.advance(1); // resolves `done`
 * clock.sleeps; // [1000]
 * ```
 */
export class ManualClock implements Clock {
  /** Every delay passed to `sleep`, in call order, including sleeps later aborted. */
  readonly sleeps: number[] = [];
  private current: number;
  private readonly pending: PendingSleep[] = [];
  private sequence = 0;
  // Advances run one after another, so two concurrent `advance(10)` calls move time by 20, in order.
  private queue: Promise<void> = Promise.resolve();

  /** @param startMs The initial `now()`, in milliseconds since the epoch. Default `MANUAL_CLOCK_START`. */
  constructor(startMs: number = MANUAL_CLOCK_START) {
    if (!Number.isFinite(startMs)) throw invalidTime('startMs', 'must be a finite number of milliseconds', startMs);
    this.current = startMs;
  }

  /** The current manual time in milliseconds since the epoch. */
  now(): number {
    return this.current;
  }

  /**
   * Resolves once time has been advanced by `ms` from now; a delay of 0 or less (or NaN) resolves at once, like a
   * zero `setTimeout`. Rejects with `AbortedError` (carrying the signal's reason) when `signal` fires first.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    if (signal?.aborted) return Promise.reject(new AbortedError(undefined, { cause: signal.reason }));
    // NaN and negative delays behave as 0, as they do in setTimeout.
    const delay = Number.isNaN(ms) ? 0 : Math.max(ms, 0);
    if (delay === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.forget(entry);
        reject(new AbortedError(undefined, { cause: signal?.reason }));
      };
      const entry: PendingSleep = {
        wakeAt: this.current + delay,
        sequence: this.sequence++,
        resolve,
        release: () => signal?.removeEventListener('abort', onAbort),
      };
      this.pending.push(entry);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Number of sleeps waiting for time to pass. */
  get pendingSleeps(): number {
    return this.pending.length;
  }

  /** The deadline of the next waiting sleep, or undefined when none waits. */
  nextWakeAt(): number | undefined {
    return this.earliest()?.wakeAt;
  }

  /**
   * Moves time forward by `ms` (≥ 0), waking every sleep that falls due on the way, in order. Resolves when the
   * time has moved and the awakened code has run up to its next wait.
   */
  advance(ms: number): Promise<void> {
    if (!Number.isFinite(ms) || ms < 0) {
      return Promise.reject(invalidTime('ms', 'must be a finite, non-negative number of milliseconds', ms));
    }
    return this.enqueue(() => this.advanceTo(this.current + ms));
  }

  /**
   * Advances to each pending deadline in turn until no sleep waits, including sleeps started by awakened code.
   * Resolves with the total time moved. Throws after `maxSteps` wake-ups, which catches a loop that sleeps forever.
   */
  runAll(maxSteps = 1_000): Promise<number> {
    return this.enqueue(async () => {
      const start = this.current;
      for (let step = 0; ; step++) {
        const next = this.earliest();
        if (!next) return this.current - start;
        if (step >= maxSteps) {
          throw new Error(`ManualClock.runAll: still sleeping after ${maxSteps} wake-ups; is something looping?`);
        }
        if (next.wakeAt === Number.POSITIVE_INFINITY) {
          throw new Error('ManualClock.runAll: a sleep of Infinity never wakes');
        }
        await this.advanceTo(next.wakeAt);
      }
    });
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task);
    // A failed advance must not jam every later one.
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async advanceTo(target: number): Promise<void> {
    for (;;) {
      const next = this.earliest();
      if (!next || next.wakeAt > target) break;
      this.current = Math.max(this.current, next.wakeAt);
      this.forget(next);
      next.resolve();
      await settle();
    }
    this.current = Math.max(this.current, target);
    await settle();
  }

  private earliest(): PendingSleep | undefined {
    let best: PendingSleep | undefined;
    for (const entry of this.pending) {
      if (!best || entry.wakeAt < best.wakeAt || (entry.wakeAt === best.wakeAt && entry.sequence < best.sequence)) {
        best = entry;
      }
    }
    return best;
  }

  private forget(entry: PendingSleep): void {
    const index = this.pending.indexOf(entry);
    if (index >= 0) this.pending.splice(index, 1);
    entry.release();
  }
}

function invalidTime(path: string, rule: string, value: number): ValidationError {
  const message = `${rule}, got ${value}`;
  return new ValidationError(`ManualClock: ${path} ${message}`, { problems: [{ path, message }] });
}

/**
 * Lets every pending promise continuation run: a macrotask boundary drains the whole microtask queue. This is an
 * event-loop turn, not a wait; it does not work under fake timers that replace `setImmediate`.
 */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
