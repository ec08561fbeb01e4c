/**
 * The one retry policy of storyloom, used for every network call: exponential backoff with jitter, honouring a
 * provider's `retry-after`, stopping at once on abort. Defaults match the Anthropic SDK: 2 retries, 0.5 s growing to
 * at most 8 s, 25 % jitter.
 *
 * @module
 */
import { type Clock, systemClock } from './clock.js';
import {
  AbortedError,
  RetryError,
  StoryloomError,
  throwIfAborted,
  ValidationError,
  type ValidationProblem,
} from './errors.js';
import { callListener } from './listener.js';

/** The knobs of the retry policy; the same on every client of storyloom. */
export interface RetryOptions {
  /** Retries after the first attempt: a whole number, 0 or more. Default 2. */
  maxRetries?: number;
  /** Delay before the first retry, in ms: finite, 0 or more. Default 500. */
  initialDelayMs?: number;
  /** Upper bound of any computed delay, in ms: 0 or more, `Infinity` for none. Default 8000. */
  maxDelayMs?: number;
  /** Share of the delay removed at random, 0..1. Default 0.25. */
  jitter?: number;
  /**
   * Upper bound for a provider's `retry-after`, in ms: 0 or more, `Infinity` to wait as long as asked; longer waits
   * give up instead. Default 60000.
   */
  maxRetryAfterMs?: number;
  signal?: AbortSignal;
  clock?: Clock;
  /** Source of randomness in [0, 1). Default `Math.random`. */
  random?: () => number;
  /** Whether `error` is worth another attempt. Default: `error.isRetryable` for storyloom errors, else false. */
  shouldRetry?: (error: unknown, attempt: number) => boolean;
  /** Called before each wait, for logs and metrics; one that throws (or an async one that rejects) is ignored. */
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

// The three forms of an HTTP date (RFC 9110, section 5.6.7), each matched whole before a date is read from it:
// `Date.parse` reads almost anything (`"-1"` and `"soon 2"` are dates in 2001), and would turn a malformed value into
// "retry now"; it also reads the asctime form in local time, though HTTP means GMT.
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = `(${MONTHS.join('|')})`;
const TIME = '(\\d\\d):(\\d\\d):(\\d\\d)';
const DAY_NAME = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
/** IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, and RFC 850, `Sunday, 06-Nov-94 08:49:37 GMT`: day, month, year, time. */
const IMF_FIXDATE = new RegExp(`^${DAY_NAME}, (\\d\\d) ${MONTH} (\\d{4}) ${TIME} GMT$`);
const RFC_850_DATE = new RegExp(`^(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, (\\d\\d)-${MONTH}-(\\d\\d) ${TIME} GMT$`);
/** asctime, `Sun Nov  6 08:49:37 1994`: month, day, time, year. */
const ASCTIME_DATE = new RegExp(`^${DAY_NAME} ${MONTH} ([\\d ]\\d) ${TIME} (\\d{4})$`);

/** Milliseconds since the epoch of an HTTP date, or NaN when `value` is not one or names no real day and time. */
function parseHttpDate(value: string, now: number): number {
  const text = value.trim();
  const dated = IMF_FIXDATE.exec(text) ?? RFC_850_DATE.exec(text);
  const asctime = dated ? null : ASCTIME_DATE.exec(text);
  const fields =
    dated?.slice(1) ?? (asctime && [asctime[2], asctime[1], asctime[6], asctime[3], asctime[4], asctime[5]]);
  if (!fields) return Number.NaN;
  const [dayText, monthName, yearText, ...clock] = fields as string[];
  const [day, hour, minute, second] = [dayText, ...clock].map(Number) as [number, number, number, number];
  let year = Number(yearText);
  if (yearText!.length === 2) {
    // A two-digit year (RFC 850) is the one nearest now that is at most 50 years ahead (RFC 9110, section 5.6.7).
    const thisYear = new Date(now).getUTCFullYear();
    year += Math.floor(thisYear / 100) * 100;
    if (year > thisYear + 50) year -= 100;
    else if (year <= thisYear - 50) year += 100;
  }
  const month = MONTHS.indexOf(monthName!);
  // `Date.UTC` would carry 31 Feb into March and hour 25 into the next day: such a value names no real time. Second
  // 60 is a leap second, which the grammar allows.
  const realDay = new Date(Date.UTC(year, month, day)).getUTCDate() === day;
  return realDay && hour < 24 && minute < 60 && second <= 60
    ? Date.UTC(year, month, day, hour, minute, second)
    : Number.NaN;
}

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
    if (Number.isFinite(seconds) && /^\s*(?:\d+(?:\.\d*)?|\.\d+)\s*$/.test(retryAfter)) return seconds * 1000;
    const date = parseHttpDate(retryAfter, now);
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

/**
 * Every problem with retry options, each with the path of the option under `path` (`retry.maxRetries`, say), in the
 * shape of `ValidationError.problems`; empty when the options can be honoured. `maxRetries` must be a whole number,
 * 0 or more; `initialDelayMs` a finite number of milliseconds, 0 or more; `maxDelayMs` and `maxRetryAfterMs` 0 or more,
 * `Infinity` meaning no bound; `jitter` from 0 to 1. `undefined`, for the whole object or any option, is the default.
 * `withRetry` refuses options with any problem; a client that takes retry options can check them with it when it is
 * built, so that a bad value (a NaN read from an unset environment variable, say) fails there instead of at its first
 * call.
 *
 * @example
 * ```ts
 * import { retryOptionsProblems } from 'storyloom';
 * retryOptionsProblems({ maxRetries: Number.NaN }); // [{ path: 'retry.maxRetries', message: 'must be a whole number, 0 or more' }]
 * ```
 */
export function retryOptionsProblems(options: RetryOptions | undefined, path = 'retry'): ValidationProblem[] {
  if (options === undefined) return [];
  if (options === null || typeof options !== 'object') return [{ path, message: 'must be an object' }];
  const bound = 'must be a number of milliseconds, 0 or more (or Infinity)';
  // Each option must be a number, 0 or more (which NaN is not), and pass its own test.
  const rules: Array<[keyof RetryOptions, (value: number) => boolean, string]> = [
    ['maxRetries', Number.isInteger, 'must be a whole number, 0 or more'],
    ['initialDelayMs', Number.isFinite, 'must be a finite number of milliseconds, 0 or more'],
    ['maxDelayMs', () => true, bound],
    ['jitter', (value) => value <= 1, 'must be a number from 0 to 1'],
    ['maxRetryAfterMs', () => true, bound],
  ];
  const problems: ValidationProblem[] = [];
  for (const [name, test, message] of rules) {
    const value = options[name];
    if (value !== undefined && !(typeof value === 'number' && value >= 0 && test(value))) {
      problems.push({ path: `${path}.${name}`, message });
    }
  }
  return problems;
}

function defaultShouldRetry(error: unknown): boolean {
  return StoryloomError.isInstance(error) && error.isRetryable;
}

/**
 * Calls `operation` until it succeeds, retrying retryable failures with backoff.
 * Throws a `RetryError` holding every attempt's error when it gives up, or `AbortedError` when aborted; options it
 * cannot honour (see `retryOptionsProblems`) make it throw a `ValidationError` before the first attempt.
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
  // A NaN `maxRetries` would retry without end, a jitter above 1 would wait a negative time: refused, not guessed at.
  const problems = retryOptionsProblems(options);
  if (problems.length > 0) {
    throw new ValidationError(
      `Invalid retry options: ${problems.map((problem) => `${problem.path} ${problem.message}`).join('; ')}`,
      { problems },
    );
  }
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
      callListener(options.onRetry, { attempt: attempt + 1, delayMs, error });
      await clock.sleep(delayMs, options.signal);
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
