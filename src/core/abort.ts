/**
 * Waiting: the longest a timer can wait, and waiting on calls that may not honour their signal. Internal: not
 * exported from the package.
 */
import { AbortedError, ProviderError, type ValidationProblem } from './errors.js';

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

/** How `attemptWithin` bounds one attempt and names its failures. */
export interface AttemptBounds {
  /**
   * The longest the attempt may go without progress, in ms; measured in real time, not on a `Clock`. Beyond
   * `MAX_TIMER_MS` it waits `MAX_TIMER_MS`.
   */
  timeoutMs: number;
  /** The caller's signal: its abort ends the attempt as an `AbortedError`, never as a timeout. */
  signal?: AbortSignal | undefined;
  /** The `provider` of the timeout's `ProviderError`. */
  provider: string;
  /** The message of the timeout's `ProviderError`. */
  timeoutMessage: string;
  /** What any other failure becomes (thrown as returned). */
  failed: (error: unknown) => unknown;
}

/**
 * One attempt of a call to a service, bounded in time: `call` gets a signal that fires on the caller's abort and once
 * `timeoutMs` pass without progress, and the wait ends then even if the client it calls ignores that signal (an
 * injected one). `progress`, handed to `call`, starts the time limit again (a body still arriving). The time limit is
 * a retryable `ProviderError` with code `TIMEOUT`, which a retry policy tries again; the caller's abort an
 * `AbortedError`; any other failure whatever `failed` makes of it.
 */
export async function attemptWithin<T>(
  call: (signal: AbortSignal, progress: () => void) => PromiseLike<T>,
  bounds: AttemptBounds,
): Promise<T> {
  const { timeoutMs, signal } = bounds;
  const controller = new AbortController();
  let timedOut = false;
  let settled = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    clearTimeout(timer);
    if (settled) return;
    // Clamped: a caller may add an allowance to a `timeoutMs` already at the timer's limit, and Node fires a longer
    // delay after 1 ms, which would time out every attempt at once.
    timer = setTimeout(
      () => {
        timedOut = true;
        controller.abort(new Error(bounds.timeoutMessage));
      },
      Math.min(timeoutMs, MAX_TIMER_MS),
    );
  };
  const forwardAbort = () => controller.abort(signal?.reason);
  if (signal?.aborted) forwardAbort();
  else signal?.addEventListener('abort', forwardAbort, { once: true });
  arm();
  try {
    // Through `then`, so a client that throws instead of rejecting is mapped the same way.
    return await untilAborted(
      controller.signal,
      Promise.resolve().then(() => call(controller.signal, arm)),
    );
  } catch (error) {
    if (signal?.aborted) throw new AbortedError(undefined, { cause: signal.reason ?? error });
    if (timedOut) {
      throw new ProviderError(bounds.timeoutMessage, {
        provider: bounds.provider,
        code: 'TIMEOUT',
        isRetryable: true,
        cause: error,
      });
    }
    throw bounds.failed(error);
  } finally {
    settled = true;
    clearTimeout(timer);
    signal?.removeEventListener('abort', forwardAbort);
  }
}
