import { afterEach, describe, expect, it, vi } from 'vitest';
import { attemptWithin, MAX_TIMER_MS } from './abort.js';
import { AbortedError, ProviderError } from './errors.js';

/** Bounds of one attempt whose other failures pass through unchanged. */
const bounds = (timeoutMs: number) => ({
  timeoutMs,
  provider: 'test',
  timeoutMessage: 'no answer in time',
  failed: (error: unknown) => error,
});

afterEach(() => {
  vi.useRealTimers();
});

describe('attemptWithin with a timeoutMs beyond the longest timer', () => {
  it('waits for a call that answers after 20 ms instead of timing it out at once', async () => {
    // Node's own timer, on purpose: it is Node that fires a delay beyond its limit after 1 ms.
    const answer = attemptWithin(
      () => new Promise<string>((resolve) => setTimeout(() => resolve('answered'), 20)),
      bounds(MAX_TIMER_MS + 1_000),
    );
    await expect(answer).resolves.toBe('answered');
  });

  it('still ends a call that never answers, once the longest timer has passed', async () => {
    vi.useFakeTimers();
    let outcome: unknown;
    const attempt = attemptWithin(() => new Promise<never>(() => {}), bounds(MAX_TIMER_MS + 1_000)).catch(
      (error: unknown) => {
        outcome = error;
      },
    );
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS - 1);
    expect(outcome).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    await attempt;
    expect(ProviderError.isInstance(outcome) && outcome.code === 'TIMEOUT').toBe(true);
  });
});

describe("attemptWithin and the caller's abort", () => {
  it('ends at once as an AbortedError when the signal fired before the attempt, though the call ignores its signal', async () => {
    const caller = new AbortController();
    caller.abort(new Error('deploy'));
    const given: AbortSignal[] = [];
    let answer: (value: string) => void = () => {};
    const attempt = attemptWithin(
      (signal) => {
        given.push(signal);
        return new Promise<string>((resolve) => {
          answer = resolve;
        });
      },
      { ...bounds(60_000), signal: caller.signal },
    ).catch((error: unknown) => error);
    await new Promise((resolve) => setImmediate(resolve));
    // The call answers only now: by then the attempt has already ended.
    answer('answered after the abort');
    const outcome = await attempt;
    expect(AbortedError.isInstance(outcome)).toBe(true);
    expect((outcome as AbortedError).cause).toBe(caller.signal.reason);
    expect(given.every((signal) => signal.aborted)).toBe(true);
  });

  it("ends as an AbortedError, not as what `failed` makes of the call's failure, when the caller aborts under way", async () => {
    const caller = new AbortController();
    const attempt = attemptWithin(
      (signal) =>
        new Promise<never>((_resolve, reject) => {
          signal.addEventListener('abort', () => reject(new Error('socket closed')), { once: true });
        }),
      {
        ...bounds(60_000),
        signal: caller.signal,
        failed: (error: unknown) =>
          new ProviderError('connection lost', { provider: 'test', isRetryable: true, cause: error }),
      },
    ).catch((error: unknown) => error);
    caller.abort(new Error('deploy'));
    const outcome = await attempt;
    expect(AbortedError.isInstance(outcome)).toBe(true);
    expect((outcome as AbortedError).isRetryable).toBe(false);
  });
});
