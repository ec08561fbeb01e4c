/**
 * Waiting: the longest a timer can wait, and waiting on calls that may not honour their signal. Internal: not
 * exported from the package.
 */
import { AbortedError, type ValidationProblem } from './errors.js';

/** The longest delay `setTimeout` waits (2^31-1 ms, about 24.8 days): Node fires a longer one after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * The problem with a per-request `timeoutMs` option, if any: it must be a number of milliseconds from 1 to
 * `MAX_TIMER_MS` (a longer one would fire at once). `undefined` (the default) is none.
 */
export function timeoutProblems(timeoutMs: unknown, path: string): ValidationProblem[] {
  if (timeoutMs === undefined) return [];
  if (typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs >= 1 && timeoutMs <= MAX_TIMER_MS) {
    return [];
  }
  return [{ path, message: `must be a number of milliseconds from 1 to ${MAX_TIMER_MS}` }];
}

/**
 * `pending`, or a rejection with `signal`'s reason as soon as it fires, whichever comes first: for a call of a client
 * that may not honour the signal it was given (an injected one), so that a timeout or an abort ends the wait.
 */
export function untilAborted<T>(signal: AbortSignal, pending: Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    pending.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * `promise`, or an `AbortedError` (caused by the signal's reason) as soon as `signal` fires, whichever comes first:
 * for waiting on work shared with other callers, which one caller's abort must not stop. The work goes on, unwatched
 * (its failure then handled here, never left unhandled).
 */
export function waitUnlessAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortedError(undefined, { cause: signal.reason }));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
