/**
 * The in-process `CacheDriver`: a least-recently-used cache (`lru-cache`) with per-entry expiry. Values live in the
 * process; nothing is shared with other Lambdas or machines.
 *
 * @module
 */
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { type Clock, systemClock } from '../core/clock.js';
import { ClosedError, toProblems, ValidationError } from '../core/errors.js';
import { checkCacheKey, checkCacheKeys, checkCacheWrite, invalidCacheValue } from './cache-arguments.js';
import type { CacheDriver, CacheDriverCapabilities, CacheSetOptions } from './cache-driver.js';

/**
 * Options of `createMemoryCacheDriver`.
 *
 * @example
 * ```ts
 * import { createMemoryCacheDriver, type MemoryCacheDriverOptions } from 'storyloom';
 * const options: MemoryCacheDriverOptions = { maxEntries: 5_000, maxBytes: 64 * 1024 * 1024 };
 * const cache = createMemoryCacheDriver(options);
 * ```
 */
export interface MemoryCacheDriverOptions {
  /**
   * Most entries kept; the least recently used goes first. Default 10,000, at most 1,000,000. `lru-cache` allocates
   * its bookkeeping for every slot up front, about 30 to 50 bytes each (the more with `maxBytes` and TTLs): some
   * 0.5 MB at the default, 50 MB at the maximum, whatever the cache holds. A process that needs more entries than
   * that wants a shared cache (Redis) instead.
   */
  maxEntries?: number;
  /**
   * Most memory the keys and values may take, counted as UTF-16 bytes (2 per code unit). Unbounded by default.
   * A single entry larger than this is refused with a `ValidationError`.
   */
  maxBytes?: number;
  /** The time source of expiry. Default the system clock; tests pass a `ManualClock`. */
  clock?: Clock;
}

const OptionsSchema = z.object({
  maxEntries: z.number().int().min(1).max(1_000_000).default(10_000),
  maxBytes: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  clock: z
    .custom<Clock>(
      (value) =>
        typeof value === 'object' &&
        value !== null &&
        typeof (value as Clock).now === 'function' &&
        typeof (value as Clock).sleep === 'function',
      'must be a Clock with now() and sleep()',
    )
    .optional(),
});

/** Least time between two walks that drop expired entries on write. */
const PURGE_INTERVAL_MS = 1_000;

const CAPABILITIES: CacheDriverCapabilities = Object.freeze({ shared: false, atomicSetIfAbsent: true });

/**
 * Creates an in-memory cache driver on `lru-cache`.
 *
 * Expiry follows `clock`: the cache reads time only through it, so a test moves time with a `ManualClock` instead
 * of sleeping. An entry expires once more than `ttlMs` milliseconds have passed since it was written, as in Redis.
 * Expired entries give their memory back: a write drops every expired entry (at most once a second of `clock`, as
 * that walks the whole cache) and `deletePrefix` drops them all before it looks, while a read drops the one it finds
 * expired. `setIfAbsent` is atomic: JavaScript runs it without interruption.
 *
 * @example
 * ```ts
 * import { createMemoryCacheDriver } from 'storyloom';
 *
 * const cache = createMemoryCacheDriver({ maxEntries: 1_000 });
 * await cache.set('story:{s1}:recent', JSON.stringify(['scene-1']), { ttlMs: 60_000 });
 * const recent = await cache.get('story:{s1}:recent');
 * ```
 */
export function createMemoryCacheDriver(options: MemoryCacheDriverOptions = {}): CacheDriver {
  const parsed = OptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    const problems = toProblems(parsed.error.issues, 'options');
    const first = problems[0];
    throw new ValidationError(`Invalid memory cache options: ${first?.path}: ${first?.message}`, { problems });
  }
  const { maxEntries, maxBytes } = parsed.data;
  const clock = parsed.data.clock ?? systemClock;
  // lru-cache takes a start time of 0 to mean "no TTL", so time is measured from construction and offset by one:
  // with a clock that starts at 0 (a fresh ManualClock, say) entries written at once would otherwise never expire.
  const origin = clock.now();
  const entrySize = (value: string, key: string) => 2 * (key.length + value.length);
  const cache = new LRUCache<string, string>({
    max: maxEntries,
    ...(maxBytes === undefined ? {} : { maxSize: maxBytes, sizeCalculation: entrySize }),
    perf: { now: () => clock.now() - origin + 1 },
    // lru-cache otherwise remembers "now" for ttlResolution ms with a real timer, which a manual clock cannot move.
    ttlResolution: 0,
  });
  let closed = false;
  // When expired entries were last dropped: lru-cache drops one only when it is read (or evicted as the least
  // recently used), so the key of each version a long-running process wrote once would otherwise stay for good.
  let purgedAt = clock.now();

  const purgeStale = (): void => {
    purgedAt = clock.now();
    cache.purgeStale();
  };
  /** Drops the expired entries, at most once a second: the walk costs as much as the cache holds. */
  const purgeStaleNowAndThen = (): void => {
    if (clock.now() - purgedAt >= PURGE_INTERVAL_MS) purgeStale();
  };

  const open = (operation: string): void => {
    if (closed) throw new ClosedError(`Cannot ${operation}: the memory cache is closed`);
  };

  /** Checks a write completely, before anything changes; returns the TTL to write with. */
  const checkWrite = (key: unknown, value: unknown, setOptions: CacheSetOptions | undefined): number => {
    const ttl = checkCacheWrite(key, value, setOptions);
    const size = entrySize(value as string, key as string);
    if (maxBytes !== undefined && size > maxBytes) {
      // lru-cache would drop it silently; a setIfAbsent that answered true without storing would break a lock.
      throw invalidCacheValue(`takes ${size} bytes with its key; this cache holds at most ${maxBytes}`);
    }
    return ttl;
  };

  return {
    specificationVersion: 'v1',
    provider: 'memory',
    capabilities: CAPABILITIES,

    async get(key) {
      open('get');
      checkCacheKey(key, 'key');
      return cache.get(key) ?? null;
    },

    async getMany(keys) {
      open('getMany');
      checkCacheKeys(keys);
      return keys.map((key) => cache.get(key) ?? null);
    },

    async set(key, value, setOptions) {
      open('set');
      const ttl = checkWrite(key, value, setOptions);
      purgeStaleNowAndThen();
      // ttl 0 means "never expires" in lru-cache: a plain set clears an earlier expiry, as SET does in Redis.
      cache.set(key, value, { ttl });
    },

    async setIfAbsent(key, value, setOptions) {
      open('setIfAbsent');
      const ttl = checkWrite(key, value, setOptions);
      purgeStaleNowAndThen();
      // has() treats an expired entry as absent, so an expired lock can be taken again.
      if (cache.has(key)) return false;
      cache.set(key, value, { ttl });
      return true;
    },

    async delete(keys) {
      open('delete');
      checkCacheKeys(keys);
      let deleted = 0;
      for (const key of new Set(keys)) {
        // An expired entry still sitting in the LRU list is not counted: for the caller it was already gone.
        if (cache.has(key)) deleted++;
        cache.delete(key);
      }
      return deleted;
    },

    async deletePrefix(prefix) {
      open('deletePrefix');
      checkCacheKey(prefix, 'prefix');
      // keys() yields live entries only: the expired ones, matching or not, are dropped first (and not counted; for
      // the caller they were already gone). Collected first because deleting while iterating skips entries.
      purgeStale();
      const doomed = [...cache.keys()].filter((key) => key.startsWith(prefix));
      for (const key of doomed) cache.delete(key);
      return doomed.length;
    },

    async close() {
      closed = true;
      cache.clear();
    },
  };
}
