/**
 * Calling a caller's listener (progress, events, retries) without letting it break the work that calls it.
 *
 * @module
 */

/**
 * Calls `listener` with `value`. A throw, or the rejection of a promise it returns (an async listener), goes to
 * `onError` (by default nowhere): a broken progress bar or metrics sink must not fail the work it watches, and a
 * rejection left unhandled would end a Node.js process.
 */
export function callListener<T>(
  listener: ((value: T) => unknown) | undefined,
  value: T,
  onError: (error: unknown) => void = () => {},
): void {
  if (!listener) return;
  const report = (error: unknown) => {
    try {
      onError(error);
    } catch {
      // Nothing left to tell it to.
    }
  };
  try {
    const returned = listener(value);
    if (typeof (returned as PromiseLike<unknown> | undefined)?.then === 'function') {
      Promise.resolve(returned).catch(report);
    }
  } catch (error) {
    report(error);
  }
}
