/**
 * Waiting on calls that may not honour their signal. Internal: not exported from the package.
 */

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
