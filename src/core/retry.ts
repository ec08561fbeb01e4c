/**
 * The one retry policy of storyloom, used for every network call: exponential backoff with jitter, honouring a
 * provider's `retry-after`, stopping at once on abort. Defaults match the Anthropic SDK: 2 retries, 0.5 s growing to
 * at most 8 s, 25 % jitter.
 *
 * @module
 */
import { type Clock, systemClock } from './clock.js';
import { AbortedError, RetryError, StoryloomError, throwIfAborted } from './errors.js';

/** The knobs of the retry policy; the same on every client of storyloom. */
export interface RetryOptions {
  /** Retries after the first attempt. Default 2. */
  maxRetries?: number;
  /** Delay before the first retry, in ms. Default 500. */
  initialDelayMs?: number;
  /** Upper bound of any computed delay, in ms. Default 8000. */
  maxDelayMs?: number;
  /** Share of the delay removed at random, 0..1. Default 0.25. */
  jitter?: number;
  /** Upper bound for a provider's `retry-after`, in ms; longer waits give up instead. Default 60000. */
  maxRetryAfterMs?: number;
  signal?: AbortSignal;
  clock?: Clock;
  /** Source of randomness in [0, 1). Default `Math.random`. */
  random?: () => number;
  /** Whether `error` is worth another attempt. Default: `error.isRetryable` for storyloom errors, else false. */
  shouldRetry?: (error: unknown, attempt: number) => boolean;
  /** Called before each wait, for logs and metrics. */
  onRetry?: (event: { attempt: number; delayMs: number; error: unknown }) => void;
}

/** The values `withRetry` uses for the options left out. */
export const RETRY_DEFAULTS = {
  maxRetries: 2,
  initialDelayMs: 500,
  maxDelayMs: 8_000,
  jitter: 0.25,
  maxRetryAfterMs: 60_000,
} as const;

/** Reads a wait request from an error: `retryAfterMs`, or `retry-after` / `retry-after-ms` headers. */
export function retryAfterFromError(error: unknown, now: number): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const record = error as { retryAfterMs?: unknown; headers?: unknown };
  if (typeof record.retryAfterMs === 'number' && Number.isFinite(record.retryAfterMs) && record.retryAfterMs >= 0) {
    return record.retryAfterMs;
  }
  const headers = record.headers;
  const read = (name: string): string | undefined => {
    if (!headers || typeof headers !== 'object') return undefined;
    if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
    // Header names are case-insensitive; plain records come as `Retry-After` as often as `retry-after`.
    const entry = Object.entries(headers).find(([key]) => key.toLowerCase() === name);
    const value = Array.isArray(entry?.[1]) ? entry[1][0] : entry?.[1];
    return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
  };
  return parseRetryAfter(read('retry-after-ms'), read('retry-after'), now);
}

// Every HTTP-date form (IMF-fixdate, RFC 850, asctime) starts with a day name. Checking for it keeps `Date.parse`,
// which reads almost anything (`"-1"` is a date in 2001), from turning a malformed value into "retry now".
const HTTP_DATE = /^\s*[A-Za-z]{3}/;

/**
 * Parses `retry-after-ms` (milliseconds) or `retry-after` (seconds, or an HTTP date) into milliseconds to wait.
 * Returns undefined when neither header holds a usable value.
 */
export function parseRetryAfter(
  retryAfterMs: string | undefined,
  retryAfter: string | undefined,
  now: number,
): number | undefined {
  if (retryAfterMs !== undefined) {
    const ms = Number.parseFloat(retryAfterMs);
    if (Number.isFinite(ms) && ms >= 0) return ms;
  }
  if (retryAfter !== undefined) {
    const seconds = Number.parseFloat(retryAfter);
    if (Number.isFinite(seconds) && seconds >= 0 && /^\s*[\d.]+\s*$/.test(retryAfter)) return seconds * 1000;
    const date = HTTP_DATE.test(retryAfter) ? Date.parse(retryAfter) : Number.NaN;
    if (Number.isFinite(date)) return Math.max(0, date - now);
  }
  return undefined;
}

/** The delay before retry number `attempt` (1-based), before any `retry-after`. */
export function backoffDelay(attempt: number, options: RetryOptions = {}): number {
  const initial = options.initialDelayMs ?? RETRY_DEFAULTS.initialDelayMs;
  const max = options.maxDelayMs ?? RETRY_DEFAULTS.maxDelayMs;
  const jitter = options.jitter ?? RETRY_DEFAULTS.jitter;
  const random = options.random ?? Math.random;
  const base = Math.min(initial * 2 ** (attempt - 1), max);
  return base * (1 - jitter * random());
}

function defaultShouldRetry(error: unknown): boolean {
  return StoryloomError.isInstance(error) && error.isRetryable;
}

/**
 * Calls `operation` until it succeeds, retrying retryable failures with backoff.
 * Throws a `RetryError` holding every attempt's error when it gives up, or `AbortedError` when aborted.
 *
 * @example
 * ```ts
 * import { withRetry } from 'storyloom';
 * const page = await withRetry((attempt) => fetchPage(attempt), { maxRetries: 3 });
 * ```
 */
export async function withRetry<T>(
  operation: (attempt: number, signal: AbortSignal | undefined) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const clock = options.clock ?? systemClock;
  const maxRetries = options.maxRetries ?? RETRY_DEFAULTS.maxRetries;
  const shouldRetry = options.shouldRetry ?? defaultShouldRetry;
  const maxRetryAfter = options.maxRetryAfterMs ?? RETRY_DEFAULTS.maxRetryAfterMs;
  const errors: unknown[] = [];
  for (let attempt = 0; ; attempt++) {
    throwIfAborted(options.signal);
    try {
      return await operation(attempt, options.signal);
    } catch (error) {
      if (AbortedError.isInstance(error) || options.signal?.aborted) {
        throw AbortedError.isInstance(error) ? error : new AbortedError(undefined, { cause: error });
      }
      errors.push(error);
      if (!shouldRetry(error, attempt)) {
        if (attempt === 0) throw error;
        throw new RetryError(`Failed after ${attempt + 1} attempts with a non-retryable error: ${describe(error)}`, {
          errors,
          reason: 'errorNotRetryable',
        });
      }
      if (attempt >= maxRetries) {
        throw new RetryError(`Failed after ${attempt + 1} attempts: ${describe(error)}`, {
          errors,
          reason: 'maxRetriesExceeded',
        });
      }
      const requested = retryAfterFromError(error, clock.now());
      if (requested !== undefined && requested > maxRetryAfter) {
        throw new RetryError(
          `The provider asked to wait ${Math.round(requested)} ms, more than the ${maxRetryAfter} ms allowed`,
          { errors, reason: 'retryAfterTooLong' },
        );
      }
      const delayMs = requested ?? backoffDelay(attempt + 1, options);
      options.onRetry?.({ attempt: attempt + 1, delayMs, error });
      await clock.sleep(delayMs, options.signal);
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
