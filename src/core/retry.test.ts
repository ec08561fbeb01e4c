import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Clock } from './clock.js';
import { AbortedError, NotFoundError, ProviderError, RetryError, ValidationError } from './errors.js';
import { backoffDelay, parseRetryAfter, retryAfterFromError, retryOptionsProblems, withRetry } from './retry.js';

/**
 * A clock that never waits for real: `sleep` records the delay and moves time forward at once, or, while `hold` is
 * set, stays pending until its signal fires, the way a long real wait would.
 */
class FakeClock implements Clock {
  private time = Date.UTC(2026, 0, 15, 12, 0, 0);
  readonly sleeps: number[] = [];
  hold = false;

  now(): number {
    return this.time;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    if (signal?.aborted) return Promise.reject(new AbortedError(undefined, { cause: signal.reason }));
    if (!this.hold) {
      this.time += ms;
      return Promise.resolve();
    }
    return new Promise((_resolve, reject) => {
      signal?.addEventListener('abort', () => reject(new AbortedError(undefined, { cause: signal.reason })), {
        once: true,
      });
    });
  }
}

const overloaded = (message = 'overloaded') => new ProviderError(message, { provider: 'test', status: 529 });

/** An operation that fails with `failures` (in order) and then returns `result`, recording each attempt number. */
function scripted<T>(failures: unknown[], result: T) {
  const attempts: number[] = [];
  const operation = async (attempt: number) => {
    attempts.push(attempt);
    const failure = failures[attempt];
    if (failure !== undefined) throw failure;
    return result;
  };
  return { operation, attempts };
}

function withHeaders(headers: unknown) {
  return Object.assign(overloaded('rate limited'), { headers });
}

afterEach(() => {
  vi.useRealTimers();
});

describe('withRetry', () => {
  it('returns the first result without waiting when the first attempt succeeds', async () => {
    const clock = new FakeClock();
    const { operation, attempts } = scripted([], 'scene');
    await expect(withRetry(operation, { clock })).resolves.toBe('scene');
    expect(attempts).toEqual([0]);
    expect(clock.sleeps).toEqual([]);
  });

  it('retries retryable errors until one attempt succeeds', async () => {
    const clock = new FakeClock();
    const { operation, attempts } = scripted([overloaded(), overloaded()], 'scene');
    await expect(withRetry(operation, { clock, random: () => 0 })).resolves.toBe('scene');
    expect(attempts).toEqual([0, 1, 2]);
    expect(clock.sleeps).toEqual([500, 1000]);
  });

  it('uses the documented defaults: 2 retries, 500 ms doubling, 25 % jitter', async () => {
    const clock = new FakeClock();
    const failures = [overloaded('1'), overloaded('2'), overloaded('3')];
    const { operation, attempts } = scripted(failures, 'never');
    const error = await withRetry(operation, { clock, random: () => 0.999_999 }).catch((caught) => caught);
    expect(RetryError.isInstance(error)).toBe(true);
    expect(attempts).toEqual([0, 1, 2]);
    expect(clock.sleeps).toHaveLength(2);
    expect(clock.sleeps[0]).toBeCloseTo(375, 2);
    expect(clock.sleeps[1]).toBeCloseTo(750, 2);
  });

  it('doubles the delay up to maxDelayMs', async () => {
    const clock = new FakeClock();
    const { operation } = scripted(
      Array.from({ length: 7 }, () => overloaded()),
      'done',
    );
    await withRetry(operation, { clock, random: () => 0, maxRetries: 7, initialDelayMs: 100, maxDelayMs: 1000 });
    expect(clock.sleeps).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
  });

  it('keeps every delay within [base * (1 - jitter), base] for any random source', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 5_000 }),
        fc.integer({ min: 1, max: 60_000 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 8 }),
        async (initialDelayMs, maxDelayMs, jitter, randoms) => {
          const clock = new FakeClock();
          let draw = 0;
          const random = () => randoms[draw++ % randoms.length]!;
          const { operation } = scripted(
            randoms.map(() => overloaded()),
            'done',
          );
          await withRetry(operation, { clock, random, jitter, initialDelayMs, maxDelayMs, maxRetries: randoms.length });
          expect(clock.sleeps).toHaveLength(randoms.length);
          clock.sleeps.forEach((delay, index) => {
            const base = Math.min(initialDelayMs * 2 ** index, maxDelayMs);
            expect(delay).toBeGreaterThanOrEqual(base * (1 - jitter) - 1e-9);
            expect(delay).toBeLessThanOrEqual(base);
          });
        },
      ),
      { numRuns: 200 },
    );
  });

  it('reports each retry to onRetry before waiting', async () => {
    const clock = new FakeClock();
    const failures = [overloaded('a'), overloaded('b')];
    const { operation } = scripted(failures, 'ok');
    const events: Array<{ attempt: number; delayMs: number; error: unknown }> = [];
    await withRetry(operation, { clock, random: () => 0, onRetry: (event) => events.push(event) });
    expect(events).toEqual([
      { attempt: 1, delayMs: 500, error: failures[0] },
      { attempt: 2, delayMs: 1000, error: failures[1] },
    ]);
  });

  it('gives up after maxRetries with a RetryError holding every error, oldest first', async () => {
    const clock = new FakeClock();
    const failures = [overloaded('1'), overloaded('2'), overloaded('3'), overloaded('4')];
    const { operation, attempts } = scripted(failures, 'never');
    const error = await withRetry(operation, { clock, maxRetries: 3 }).catch((caught) => caught);
    expect(RetryError.isInstance(error)).toBe(true);
    const retryError = error as RetryError;
    expect(retryError.errors).toEqual(failures);
    expect(retryError.errors[0]).toBe(failures[0]);
    expect(retryError.attempts).toBe(4);
    expect(retryError.reason).toBe('maxRetriesExceeded');
    expect(retryError.cause).toBe(failures[3]);
    expect(retryError.isRetryable).toBe(false);
    expect(retryError.message).toContain('4 attempts');
    expect(attempts).toEqual([0, 1, 2, 3]);
    expect(clock.sleeps).toHaveLength(3);
  });

  it('makes exactly one attempt with maxRetries 0', async () => {
    const clock = new FakeClock();
    const { operation, attempts } = scripted([overloaded()], 'never');
    const error = await withRetry(operation, { clock, maxRetries: 0 }).catch((caught) => caught);
    expect(RetryError.isInstance(error)).toBe(true);
    expect(attempts).toEqual([0]);
    expect(clock.sleeps).toEqual([]);
  });

  it('rethrows a non-retryable error of the first attempt as is', async () => {
    const clock = new FakeClock();
    const notFound = new NotFoundError('no such story');
    const plain = new TypeError('fetch failed');
    for (const failure of [notFound, plain, new ProviderError('bad request', { provider: 'test', status: 400 })]) {
      const { operation, attempts } = scripted([failure], 'never');
      await expect(withRetry(operation, { clock })).rejects.toBe(failure);
      expect(attempts).toEqual([0]);
    }
    expect(clock.sleeps).toEqual([]);
  });

  it('wraps a non-retryable error after retries in a RetryError with every error', async () => {
    const clock = new FakeClock();
    const failures = [overloaded(), new ValidationError('the model returned garbage')];
    const { operation } = scripted(failures, 'never');
    const error = await withRetry(operation, { clock }).catch((caught) => caught);
    expect(RetryError.isInstance(error)).toBe(true);
    expect((error as RetryError).errors).toEqual(failures);
    expect((error as RetryError).reason).toBe('errorNotRetryable');
    expect(clock.sleeps).toHaveLength(1);
  });

  it('asks shouldRetry with the error and the zero-based attempt', async () => {
    const clock = new FakeClock();
    const plain = new Error('ECONNRESET');
    const seen: Array<[unknown, number]> = [];
    const { operation } = scripted([plain, plain], 'ok');
    const result = await withRetry(operation, {
      clock,
      shouldRetry: (error, attempt) => {
        seen.push([error, attempt]);
        return true;
      },
    });
    expect(result).toBe('ok');
    expect(seen).toEqual([
      [plain, 0],
      [plain, 1],
    ]);
  });

  it('passes the attempt number and the signal to the operation', async () => {
    const controller = new AbortController();
    const seen: Array<[number, AbortSignal | undefined]> = [];
    await withRetry(
      async (attempt, signal) => {
        seen.push([attempt, signal]);
        if (attempt === 0) throw overloaded();
        return 'ok';
      },
      { clock: new FakeClock(), signal: controller.signal },
    );
    expect(seen).toEqual([
      [0, controller.signal],
      [1, controller.signal],
    ]);
  });

  describe('options', () => {
    it('refuses options it cannot honour with a ValidationError, before the first attempt', async () => {
      for (const [options, path] of [
        // NaN retried without end; a jitter of 2 waited a negative time.
        [{ maxRetries: Number.NaN }, 'retry.maxRetries'],
        [{ maxRetries: -1 }, 'retry.maxRetries'],
        [{ maxRetries: 1.5 }, 'retry.maxRetries'],
        [{ maxRetries: Number.POSITIVE_INFINITY }, 'retry.maxRetries'],
        [{ initialDelayMs: -1 }, 'retry.initialDelayMs'],
        [{ initialDelayMs: Number.POSITIVE_INFINITY }, 'retry.initialDelayMs'],
        [{ maxDelayMs: Number.NaN }, 'retry.maxDelayMs'],
        [{ maxRetryAfterMs: -5 }, 'retry.maxRetryAfterMs'],
        [{ jitter: 2 }, 'retry.jitter'],
        [{ jitter: -0.5 }, 'retry.jitter'],
        [{ maxRetries: '3' }, 'retry.maxRetries'],
      ] as const) {
        const clock = new FakeClock();
        const { operation, attempts } = scripted([overloaded(), overloaded()], 'ok');
        const error = await withRetry(operation, { clock, ...(options as object) }).catch((caught) => caught);
        expect(ValidationError.isInstance(error), JSON.stringify(options)).toBe(true);
        expect((error as ValidationError).problems.map((problem) => problem.path)).toEqual([path]);
        expect(attempts).toEqual([]);
        expect(clock.sleeps).toEqual([]);
      }
    });

    it('takes Infinity as no bound for maxDelayMs and maxRetryAfterMs', async () => {
      const clock = new FakeClock();
      const throttled = new ProviderError('come back tomorrow', {
        provider: 'test',
        status: 429,
        retryAfterMs: 86_400_000,
      });
      const { operation } = scripted([overloaded(), throttled], 'ok');
      const options = { clock, random: () => 0, maxDelayMs: Number.POSITIVE_INFINITY };
      await expect(withRetry(operation, { ...options, maxRetryAfterMs: Number.POSITIVE_INFINITY })).resolves.toBe('ok');
      expect(clock.sleeps).toEqual([500, 86_400_000]);
    });
  });

  describe('retry-after', () => {
    it('honours a retryAfterMs field instead of the backoff', async () => {
      const clock = new FakeClock();
      const throttled = new ProviderError('slow down', { provider: 'test', status: 429, retryAfterMs: 1234 });
      const { operation } = scripted([throttled], 'ok');
      await withRetry(operation, { clock, random: () => 0 });
      expect(clock.sleeps).toEqual([1234]);
    });

    it('honours retry-after seconds from a Headers object', async () => {
      const clock = new FakeClock();
      const { operation } = scripted([withHeaders(new Headers({ 'Retry-After': '3' }))], 'ok');
      await withRetry(operation, { clock });
      expect(clock.sleeps).toEqual([3000]);
    });

    it('honours retry-after as an HTTP date', async () => {
      const clock = new FakeClock();
      const date = new Date(clock.now() + 5000).toUTCString();
      const { operation } = scripted([withHeaders({ 'retry-after': date })], 'ok');
      await withRetry(operation, { clock });
      expect(clock.sleeps).toEqual([5000]);
    });

    it('prefers retry-after-ms over retry-after', async () => {
      const clock = new FakeClock();
      const headers = new Headers({ 'retry-after-ms': '250', 'retry-after': '9' });
      const { operation } = scripted([withHeaders(headers)], 'ok');
      await withRetry(operation, { clock });
      expect(clock.sleeps).toEqual([250]);
    });

    it('reads plain header records whatever the case of the header name', async () => {
      const clock = new FakeClock();
      const failures = [
        withHeaders({ 'retry-after': '2' }),
        withHeaders({ 'Retry-After': '4' }),
        withHeaders({ 'Retry-After-Ms': '125' }),
        withHeaders({ 'retry-after': ['6'] }),
      ];
      const { operation } = scripted(failures, 'ok');
      await withRetry(operation, { clock, maxRetries: 4 });
      expect(clock.sleeps).toEqual([2000, 4000, 125, 6000]);
    });

    it('falls back to the backoff when the header is malformed', async () => {
      const clock = new FakeClock();
      const failures = [withHeaders({ 'retry-after': '-1' }), withHeaders({ 'retry-after': 'soon' })];
      const { operation } = scripted(failures, 'ok');
      await withRetry(operation, { clock, random: () => 0 });
      expect(clock.sleeps).toEqual([500, 1000]);
    });

    it('gives up at once when the provider asks to wait longer than maxRetryAfterMs', async () => {
      const clock = new FakeClock();
      const throttled = new ProviderError('come back in 2 min', {
        provider: 'test',
        status: 429,
        retryAfterMs: 120_000,
      });
      const { operation, attempts } = scripted([throttled], 'never');
      const error = await withRetry(operation, { clock }).catch((caught) => caught);
      expect(RetryError.isInstance(error)).toBe(true);
      expect((error as RetryError).reason).toBe('retryAfterTooLong');
      expect((error as RetryError).errors).toEqual([throttled]);
      expect(attempts).toEqual([0]);
      expect(clock.sleeps).toEqual([]);

      const lenient = new FakeClock();
      const again = scripted([throttled], 'ok');
      await expect(withRetry(again.operation, { clock: lenient, maxRetryAfterMs: 300_000 })).resolves.toBe('ok');
      expect(lenient.sleeps).toEqual([120_000]);
    });

    it('waits a retry-after of exactly maxRetryAfterMs: the bound is allowed', async () => {
      // "Retry-After: 60" is what providers commonly send, and 60 s is the default bound.
      const clock = new FakeClock();
      const { operation, attempts } = scripted([withHeaders({ 'retry-after': '60' })], 'ok');
      await expect(withRetry(operation, { clock })).resolves.toBe('ok');
      expect(attempts).toEqual([0, 1]);
      expect(clock.sleeps).toEqual([60_000]);
    });

    it('never retries a non-retryable error, even one that carries a retry-after', async () => {
      const clock = new FakeClock();
      const badRequest = Object.assign(
        new ProviderError('bad request', { provider: 'test', status: 400, retryAfterMs: 1000 }),
        { headers: { 'retry-after': '1' } },
      );
      const { operation, attempts } = scripted([badRequest], 'never');
      await expect(withRetry(operation, { clock })).rejects.toBe(badRequest);
      expect(attempts).toEqual([0]);
      expect(clock.sleeps).toEqual([]);
    });
  });

  describe('abort', () => {
    it('rejects with AbortedError as soon as the signal fires during a wait', async () => {
      const clock = new FakeClock();
      clock.hold = true;
      const controller = new AbortController();
      const { operation, attempts } = scripted([overloaded(), overloaded()], 'never');
      const running = withRetry(operation, {
        clock,
        signal: controller.signal,
        onRetry: () => queueMicrotask(() => controller.abort(new Error('deploy'))),
      });
      const error = await running.catch((caught) => caught);
      expect(AbortedError.isInstance(error)).toBe(true);
      expect((error as AbortedError).code).toBe('ABORTED');
      expect(attempts).toEqual([0]);
      expect(clock.sleeps).toHaveLength(1);
    });

    it('does not start when the signal has already fired', async () => {
      const controller = new AbortController();
      controller.abort();
      const { operation, attempts } = scripted([], 'never');
      await expect(withRetry(operation, { clock: new FakeClock(), signal: controller.signal })).rejects.toSatisfy(
        AbortedError.isInstance,
      );
      expect(attempts).toEqual([]);
    });

    it('turns a failure caused by the abort into AbortedError instead of retrying', async () => {
      const clock = new FakeClock();
      const controller = new AbortController();
      const cause = new DOMException('This operation was aborted', 'AbortError');
      const operation = async () => {
        controller.abort();
        throw cause;
      };
      const error = await withRetry(operation, { clock, signal: controller.signal }).catch((caught) => caught);
      expect(AbortedError.isInstance(error)).toBe(true);
      expect((error as AbortedError).cause).toBe(cause);
      expect(clock.sleeps).toEqual([]);
    });

    it('cancels the real timer of the default clock on abort', async () => {
      vi.useFakeTimers();
      const controller = new AbortController();
      const { operation, attempts } = scripted([overloaded()], 'never');
      const running = withRetry(operation, { signal: controller.signal, initialDelayMs: 8000 }).catch(
        (caught) => caught,
      );
      await vi.waitFor(() => expect(vi.getTimerCount()).toBe(1));
      controller.abort();
      const error = await running;
      expect(AbortedError.isInstance(error)).toBe(true);
      expect(vi.getTimerCount()).toBe(0);
      expect(attempts).toEqual([0]);
    });
  });
});

describe('backoffDelay', () => {
  it('starts at initialDelayMs, doubles per attempt and stops at maxDelayMs', () => {
    const noJitter = { random: () => 0 };
    expect([1, 2, 3, 4, 5, 6, 7].map((attempt) => backoffDelay(attempt, noJitter))).toEqual([
      500, 1000, 2000, 4000, 8000, 8000, 8000,
    ]);
    expect(backoffDelay(3, { initialDelayMs: 10, maxDelayMs: 25, random: () => 0 })).toBe(25);
  });

  it('removes up to `jitter` of the delay', () => {
    expect(backoffDelay(1, { random: () => 0.5 })).toBe(500 * (1 - 0.25 * 0.5));
    expect(backoffDelay(2, { random: () => 0.5, jitter: 0 })).toBe(1000);
    expect(backoffDelay(2, { random: () => 0.5, jitter: 1 })).toBe(500);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.UTC(2026, 0, 15, 12, 0, 0);
  it.each([
    ['retry-after-ms', '250', undefined, 250],
    ['retry-after-ms with a fraction', '12.5', undefined, 12.5],
    ['retry-after seconds', undefined, '3', 3000],
    ['retry-after fractional seconds', undefined, '1.5', 1500],
    ['retry-after zero', undefined, '0', 0],
    ['retry-after-ms first', '100', '9', 100],
    ['a bad retry-after-ms falls back to retry-after', 'soon', '2', 2000],
    ['IMF-fixdate', undefined, new Date(now + 7000).toUTCString(), 7000],
    ['a date in the past', undefined, new Date(now - 7000).toUTCString(), 0],
    ['nothing', undefined, undefined, undefined],
    ['negative seconds', undefined, '-1', undefined],
    ['negative milliseconds', '-5', undefined, undefined],
    ['garbage', 'soon', 'later', undefined],
    ['seconds with a unit', undefined, '5s', undefined],
    ['empty', '', '', undefined],
    ['seconds with two points', undefined, '1.2.3', undefined],
    // `Date.parse` reads each of these as a day in 2001, long past: "retry now".
    ['a word and a number', undefined, 'soon 2', undefined],
    ['three letters and a number', undefined, 'abc 1', undefined],
    ['a day name and a number', undefined, 'Mon 1', undefined],
    ['an IMF-fixdate with a day that does not exist', undefined, 'Thu, 31 Feb 2026 12:00:07 GMT', undefined],
    ['an IMF-fixdate in another zone', undefined, 'Thu, 15 Jan 2026 12:00:07 PST', undefined],
    ['an IMF-fixdate at hour 25', undefined, 'Thu, 15 Jan 2026 25:00:07 GMT', undefined],
    ['an IMF-fixdate at hour 24', undefined, 'Thu, 15 Jan 2026 24:00:00 GMT', undefined],
    ['an IMF-fixdate with a leap second', undefined, 'Thu, 15 Jan 2026 12:00:60 GMT', 60_000],
    ['RFC 850', undefined, 'Thursday, 15-Jan-26 12:00:07 GMT', 7000],
    ['asctime', undefined, 'Thu Jan 15 12:00:07 2026', 7000],
    ['asctime with a one-digit day', undefined, 'Thu Jan  8 12:00:07 2026', 0],
    ['an IMF-fixdate with spaces around it', undefined, '  Thu, 15 Jan 2026 12:00:09 GMT ', 9000],
  ])('%s', (_case, retryAfterMs, retryAfter, expected) => {
    expect(parseRetryAfter(retryAfterMs, retryAfter, now)).toBe(expected);
  });
});

describe('parseRetryAfter: HTTP dates', () => {
  const now = Date.UTC(2026, 0, 15, 12, 0, 0);

  it('reads an asctime date as GMT, as HTTP means it, in any time zone of the host', () => {
    const zone = process.env.TZ;
    process.env.TZ = 'America/New_York';
    try {
      expect(parseRetryAfter(undefined, 'Thu Jan 15 12:00:07 2026', now)).toBe(7000);
    } finally {
      if (zone === undefined) delete process.env.TZ;
      else process.env.TZ = zone;
    }
  });

  it('reads a two-digit RFC 850 year as the nearest year at most 50 years ahead', () => {
    // Seen in 2026: 75 is 2075 (49 years ahead), 94 is 1994 (2094 would be 68 years ahead), so a date long past.
    const in2075 = parseRetryAfter(undefined, 'Tuesday, 15-Jan-75 12:00:00 GMT', now);
    expect(in2075).toBe(Date.UTC(2075, 0, 15, 12) - now);
    expect(parseRetryAfter(undefined, 'Sunday, 06-Nov-94 08:49:37 GMT', now)).toBe(0);
  });
});

describe('retryOptionsProblems', () => {
  it('finds nothing wrong with the defaults, an empty object or valid bounds', () => {
    expect(retryOptionsProblems(undefined)).toEqual([]);
    expect(retryOptionsProblems({})).toEqual([]);
    expect(
      retryOptionsProblems({
        maxRetries: 0,
        initialDelayMs: 0,
        maxDelayMs: Number.POSITIVE_INFINITY,
        jitter: 1,
        maxRetryAfterMs: 0,
      }),
    ).toEqual([]);
  });

  it('lists every problem, under the path given', () => {
    expect(
      retryOptionsProblems(
        { maxRetries: Number.NaN, jitter: 1.5, maxRetryAfterMs: -1, maxDelayMs: 10 },
        'engine.retry',
      ),
    ).toEqual([
      { path: 'engine.retry.maxRetries', message: 'must be a whole number, 0 or more' },
      { path: 'engine.retry.jitter', message: 'must be a number from 0 to 1' },
      { path: 'engine.retry.maxRetryAfterMs', message: 'must be a number of milliseconds, 0 or more (or Infinity)' },
    ]);
    expect(retryOptionsProblems('fast' as never)).toEqual([{ path: 'retry', message: 'must be an object' }]);
  });
});

describe('retryAfterFromError', () => {
  const now = Date.UTC(2026, 0, 15, 12, 0, 0);
  it('reads a retryAfterMs field first', () => {
    const error = { retryAfterMs: 40, headers: { 'retry-after': '9' } };
    expect(retryAfterFromError(error, now)).toBe(40);
  });

  it('ignores a negative or non-finite retryAfterMs field', () => {
    expect(retryAfterFromError({ retryAfterMs: -1 }, now)).toBeUndefined();
    expect(retryAfterFromError({ retryAfterMs: Number.NaN, headers: { 'retry-after': '1' } }, now)).toBe(1000);
  });

  it('reads Headers objects and plain records', () => {
    expect(retryAfterFromError({ headers: new Headers({ 'retry-after': '2' }) }, now)).toBe(2000);
    expect(retryAfterFromError({ headers: { 'retry-after-ms': '80' } }, now)).toBe(80);
    expect(retryAfterFromError({ headers: { 'RETRY-AFTER': 7 } }, now)).toBe(7000);
  });

  it('returns undefined when the error says nothing about waiting', () => {
    for (const value of [undefined, null, 'boom', new Error('boom'), { headers: 'retry-after: 3' }, { headers: {} }]) {
      expect(retryAfterFromError(value, now)).toBeUndefined();
    }
  });
});

describe('withRetry onRetry', () => {
  it('goes on retrying when the onRetry listener throws', async () => {
    let calls = 0;
    const result = await withRetry(
      async () => {
        calls++;
        if (calls < 3) throw overloaded();
        return 'done';
      },
      {
        initialDelayMs: 0,
        onRetry: () => {
          throw new Error('broken metrics');
        },
      },
    );
    expect(result).toBe('done');
    expect(calls).toBe(3);
  });
});
