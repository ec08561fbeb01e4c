/**
 * The one source of time for storyloom. Everything that waits or stamps a time takes a `Clock`, so tests run on a
 * manual clock and never sleep for real.
 *
 * @module
 */
import { AbortedError } from './errors.js';

/** What storyloom needs to know about time: now, and waiting. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Resolves after `ms` milliseconds, or rejects with `AbortedError` when `signal` fires first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock: `Date.now()` and `setTimeout`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new AbortedError(undefined, { cause: signal.reason }));
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(new AbortedError(undefined, { cause: signal?.reason }));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** The current time of `clock` as an ISO 8601 string. */
export function isoNow(clock: Clock): string {
  return new Date(clock.now()).toISOString();
}
