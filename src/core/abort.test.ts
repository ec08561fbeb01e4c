import { afterEach, describe, expect, it, vi } from 'vitest';
import { attemptWithin, MAX_TIMER_MS } from './abort.js';
import { ProviderError } from './errors.js';

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
