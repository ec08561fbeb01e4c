/**
 * The one source of time for storyloom. Everything that waits or stamps a time takes a `Clock`, so tests run on a
 * manual clock and never sleep for real.
 *
 * @module
 */
import { MAX_TIMER_MS } from './abort.js';
import { AbortedError } from './errors.js';

/** What storyloom needs to know about time: now, and waiting. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Resolves after `ms` milliseconds, or rejects with `AbortedError` when `signal` fires first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * The real clock: `Date.now()` and `setTimeout`. A wait longer than one timer can hold (`MAX_TIMER_MS`, about 24.8
 * days; Node fires a longer timer after 1 ms) is waited out in timers of at most that length, one after the other.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new AbortedError(undefined, { cause: signal.reason }));
        return;
      }
      let left = ms;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = () => {
        clearTimeout(timer);
        reject(new AbortedError(undefined, { cause: signal?.reason }));
      };
      // Counted down rather than read off the wall clock: each timer waits at least its share, so the whole wait never
      // ends early, whatever the system time does meanwhile.
      const wait = () => {
        const share = Math.min(left, MAX_TIMER_MS);
        left -= share;
        timer = setTimeout(() => {
          if (left > 0) {
            wait();
            return;
          }
          signal?.removeEventListener('abort', onAbort);
          resolve();
        }, share);
      };
      wait();
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** The current time of `clock` as an ISO 8601 string. */
export function isoNow(clock: Clock): string {
  return new Date(clock.now()).toISOString();
}
