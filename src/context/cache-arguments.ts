/**
 * Argument checks shared by the cache drivers, so they reject bad input with the same `ValidationError`s, paths and
 * messages.
 *
 * @module
 */
import { ValidationError } from '../core/errors.js';
import type { CacheSetOptions } from './cache-driver.js';

/**
 * The longest TTL a cache accepts, in milliseconds (about 285,000 years): an exact integer in JavaScript, and one
 * Redis takes as `PX` (it refuses one beyond its 64-bit range, which a driver would report as a failed write on every
 * call while the memory driver stored it).
 */
export const MAX_CACHE_TTL_MS = Number.MAX_SAFE_INTEGER;

function invalid(path: string, message: string): ValidationError {
  return new ValidationError(`${path}: ${message}`, { problems: [{ path, message }] });
}

/** A surrogate code unit without its pair: in Unicode mode, the only text `\p{Cs}` matches. */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Whether `text` holds a lone surrogate (is not well-formed UTF-16): encoded as UTF-8, as Redis stores keys, each
 * becomes U+FFFD, so two such texts that differ there become one.
 */
export function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

/** A key or prefix: a non-empty string of well-formed UTF-16. */
export function checkCacheKey(key: unknown, path: string): asserts key is string {
  // An empty key or prefix is a bug upstream; an empty prefix would empty a shared cache of every story's entries.
  if (typeof key !== 'string' || key.length === 0) throw invalid(path, 'must be a non-empty string');
  // Encoded as UTF-8 (Redis), every lone surrogate becomes U+FFFD: two distinct keys would share one entry, while
  // a driver that keeps strings kept them apart. Refused by every driver, so all behave alike.
  if (hasLoneSurrogate(key)) throw invalid(path, 'must be well-formed UTF-16 (it holds a lone surrogate)');
}

/** An array of keys, each a non-empty string. */
export function checkCacheKeys(keys: unknown): asserts keys is string[] {
  if (!Array.isArray(keys)) throw invalid('keys', 'must be an array of strings');
  keys.forEach((key, index) => {
    checkCacheKey(key, `keys.${index}`);
  });
}

/**
 * Checks a write's key, value and options; returns its TTL in whole milliseconds (1 to `MAX_CACHE_TTL_MS`), or 0 for
 * none.
 */
export function checkCacheWrite(key: unknown, value: unknown, options: CacheSetOptions | undefined): number {
  checkCacheKey(key, 'key');
  if (typeof value !== 'string') throw invalid('value', 'must be a string; callers serialize');
  const ttlMs = options?.ttlMs;
  if (ttlMs === undefined) return 0;
  // Whole milliseconds (Redis PX takes no fraction); rounding up never expires an entry early.
  const whole = typeof ttlMs === 'number' ? Math.ceil(ttlMs) : Number.NaN;
  if (!(whole > 0 && whole <= MAX_CACHE_TTL_MS)) {
    throw invalid(
      'options.ttlMs',
      `must be a positive number of milliseconds up to ${MAX_CACHE_TTL_MS}, got ${String(ttlMs)}`,
    );
  }
  return whole;
}

/** A `ValidationError` for a value the driver cannot hold. */
export function invalidCacheValue(message: string): ValidationError {
  return invalid('value', message);
}
