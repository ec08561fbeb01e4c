/**
 * Work that concurrent callers share: a fingerprint check with the rebuild it may start, a keyword fill.
 *
 * @module
 */
import { AbortedError } from '../core/errors.js';

/**
 * One piece of shared work. It runs under a signal of its own, not any one caller's, so that one caller giving up
 * does not fail the others. When every caller has stopped waiting (each at its own signal), that signal fires and the
 * work is `abandoned`: a call that never answers (a hung embedder, a stalled network read) cannot keep every later
 * caller in the process waiting behind it, since the next caller starts the work afresh.
 */
export class SharedWork<T> {
  /** Settles with the work; rejects with an `AbortedError` once abandoned, if the work honours its signal. */
  readonly promise: Promise<T>;
  private readonly controller = new AbortController();
  private waiters = 0;
  private done = false;

  /**
   * `onAbandon` runs once, when the last waiting caller gives up before the work settled: the owner forgets the work
   * there, so no later caller joins it.
   */
  constructor(
    work: (signal: AbortSignal) => Promise<T>,
    private readonly onAbandon: () => void = () => {},
  ) {
    this.promise = work(this.controller.signal);
    const settle = () => {
      this.done = true;
    };
    this.promise.then(settle, settle);
  }

  /** Work that is already done. */
  static done(): SharedWork<void> {
    return new SharedWork(async () => {});
  }

  /** True once the work has finished, well or not. */
  get settled(): boolean {
    return this.done;
  }

  /** True once every caller gave up before the work settled; the work's signal has fired. */
  get abandoned(): boolean {
    return this.controller.signal.aborted;
  }

  /**
   * Waits for the work, or until `signal` fires: then this caller stops waiting with an `AbortedError`, and the work
   * is abandoned if no other caller still waits. A caller without a signal waits for as long as the work takes.
   */
  wait(signal: AbortSignal | undefined): Promise<T> {
    if (signal?.aborted) return Promise.reject(new AbortedError(undefined, { cause: signal.reason }));
    this.waiters++;
    return new Promise<T>((resolve, reject) => {
      let waiting = true;
      const leave = () => {
        if (!waiting) return false;
        waiting = false;
        signal?.removeEventListener('abort', onAbort);
        this.waiters--;
        return true;
      };
      const onAbort = () => {
        if (!leave()) return;
        reject(new AbortedError(undefined, { cause: signal?.reason }));
        if (this.waiters === 0 && !this.done && !this.abandoned) {
          this.controller.abort(new AbortedError('Every caller waiting for this work stopped waiting'));
          this.onAbandon();
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.promise.then(
        (value) => {
          if (leave()) resolve(value);
        },
        (error: unknown) => {
          if (leave()) reject(error);
        },
      );
    });
  }
}
