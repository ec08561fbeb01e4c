/**
 * Argument checks shared by the cache drivers, so they reject bad input with the same `ValidationError`s, paths and
 * messages.
 *
 * @module
 */
import { ValidationError } from '../core/errors.js';
import type { CacheSetOptions } from './cache-driver.js';

function invalid(path: string, message: string): ValidationError {
  return new ValidationError(`${path}: ${message}`, { problems: [{ path, message }] });
}

/** A key or prefix: a non-empty string. */
export function checkCacheKey(key: unknown, path: string): asserts key is string {
  // An empty key or prefix is a bug upstream; an empty prefix would empty a shared cache of every story's entries.
  if (typeof key !== 'string' || key.length === 0) throw invalid(path, 'must be a non-empty string');
}

/** An array of keys, each a non-empty string. */
export function checkCacheKeys(keys: unknown): asserts keys is string[] {
  if (!Array.isArray(keys)) throw invalid('keys', 'must be an array of strings');
  keys.forEach((key, index) => {
    checkCacheKey(key, `keys.${index}`);
  });
}

/** Checks a write's key, value and options; returns its TTL in whole milliseconds, or 0 for none. */
export function checkCacheWrite(key: unknown, value: unknown, options: CacheSetOptions | undefined): number {
  checkCacheKey(key, 'key');
  if (typeof value !== 'string') throw invalid('value', 'must be a string; callers serialize');
  const ttlMs = options?.ttlMs;
  if (ttlMs === undefined) return 0;
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) {
    throw invalid('options.ttlMs', `must be a positive number of milliseconds, got ${String(ttlMs)}`);
  }
  // Whole milliseconds (Redis PX takes no fraction); rounding up never expires an entry early.
  return Math.ceil(ttlMs);
}

/** A `ValidationError` for a value the driver cannot hold. */
export function invalidCacheValue(message: string): ValidationError {
  return invalid('value', message);
}
