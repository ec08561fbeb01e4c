import { randomBytes } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import { LRUCache } from 'lru-cache';
import { describe, expect, it, vi } from 'vitest';
import { StoryloomError, ValidationError } from '../core/errors.js';
import { runCacheDriverSuite } from '../testing/cache-driver-suite.js';
import { ManualClock } from '../testing/manual-clock.js';
import type { CacheDriver } from './cache-driver.js';
import { createMemoryCacheDriver } from './memory-cache.js';

const suiteClock = new ManualClock();
runCacheDriverSuite(
  { describe, it },
  {
    name: 'memory',
    create: () => createMemoryCacheDriver({ clock: suiteClock }),
    advanceTime: (ms) => suiteClock.advance(ms),
  },
);

describe('createMemoryCacheDriver', () => {
  it('declares itself as a process-local driver with an atomic setIfAbsent', () => {
    const cache = createMemoryCacheDriver();
    expect(cache.provider).toBe('memory');
    expect(cache.capabilities).toEqual({ shared: false, atomicSetIfAbsent: true });
  });

  it('expires entries on a clock that starts at 0', async () => {
    // lru-cache reads a start time of 0 as "no expiry"; the driver must not inherit that.
    const clock = new ManualClock(0);
    const cache = createMemoryCacheDriver({ clock });
    await cache.set('k', 'v', { ttlMs: 10 });
    await clock.advance(10);
    expect(await cache.get('k')).toBe('v');
    await clock.advance(1);
    expect(await cache.get('k')).toBeNull();
  });

  it('rounds a fractional ttl up to the next millisecond', async () => {
    const clock = new ManualClock();
    const cache = createMemoryCacheDriver({ clock });
    await cache.set('k', 'v', { ttlMs: 0.2 });
    await clock.advance(1);
    expect(await cache.get('k')).toBe('v');
    await clock.advance(1);
    expect(await cache.get('k')).toBeNull();
  });

  it('evicts the least recently used entry beyond maxEntries', async () => {
    const cache = createMemoryCacheDriver({ maxEntries: 2 });
    await cache.set('a', '1');
    await cache.set('b', '2');
    await cache.get('a');
    await cache.set('c', '3');
    expect(await cache.getMany(['a', 'b', 'c'])).toEqual(['1', null, '3']);
  });

  it('evicts by size under maxBytes, and refuses a single entry larger than it', async () => {
    // Each entry below takes 2 × (1 + 9) = 20 bytes.
    const cache = createMemoryCacheDriver({ maxBytes: 50 });
    await cache.set('a', 'x'.repeat(9));
    await cache.set('b', 'x'.repeat(9));
    await cache.set('c', 'x'.repeat(9));
    expect(await cache.getMany(['a', 'b', 'c'])).toEqual([null, 'x'.repeat(9), 'x'.repeat(9)]);
    await expect(cache.set('big', 'x'.repeat(30))).rejects.toThrow(/at most 50/);
    await expect(cache.setIfAbsent('big', 'x'.repeat(30))).rejects.toSatisfy(ValidationError.isInstance);
    expect(await cache.get('big')).toBeNull();
    expect(await cache.get('b')).toBe('x'.repeat(9));
  });

  it('refuses a maxEntries above 1,000,000, whose slots lru-cache would allocate up front', async () => {
    // 5,000,000 slots took some 160 MB before the first entry; 1,000,000 take some 30 to 50 MB.
    expect(() => createMemoryCacheDriver({ maxEntries: 1_000_001 })).toThrow(ValidationError);
    expect(() => createMemoryCacheDriver({ maxEntries: 5_000_000 })).toThrow(/maxEntries/);
    await createMemoryCacheDriver({ maxEntries: 1_000_000 }).close();
  });

  it('validates its options', () => {
    expect(() => createMemoryCacheDriver({ maxEntries: 0 })).toThrow(ValidationError);
    expect(() => createMemoryCacheDriver({ maxBytes: -1 })).toThrow(ValidationError);
    expect(() => createMemoryCacheDriver({ clock: { now: () => 0 } as unknown as ManualClock })).toThrow(/Clock/);
  });

  it('refuses non-string values instead of storing them', async () => {
    const cache = createMemoryCacheDriver();
    await expect(cache.set('k', 42 as unknown as string)).rejects.toSatisfy(ValidationError.isInstance);
    expect(await cache.get('k')).toBeNull();
  });

  it('refuses keys and prefixes that are not well-formed UTF-16, as the Redis driver does', async () => {
    const cache = createMemoryCacheDriver();
    for (const call of [
      () => cache.set('k\uD800', 'v'),
      () => cache.setIfAbsent('k\uDC00', 'v'),
      () => cache.get('k\uD800'),
      () => cache.getMany(['fine', 'k\uD800']),
      () => cache.delete(['k\uD800']),
      () => cache.deletePrefix('\uD83D'),
    ]) {
      const error = await call().catch((caught: unknown) => caught);
      expect(ValidationError.isInstance(error) && error.message).toMatch(/well-formed UTF-16/);
    }
    // A character outside the Basic Multilingual Plane is a surrogate pair: well-formed.
    await cache.set('story:😀', 'v');
    expect(await cache.get('story:😀')).toBe('v');
    expect(await cache.deletePrefix('story:\uD83D\uDE00')).toBe(1);
  });

  it('refuses every call once closed', async () => {
    const cache = createMemoryCacheDriver();
    await cache.set('k', 'v');
    await cache.close();
    const error = await cache.get('k').catch((caught: unknown) => caught);
    expect(StoryloomError.isInstance(error) && error.code).toBe('CLOSED');
  });
});

describe('createMemoryCacheDriver: expired entries give their memory back', () => {
  // The heap is what a user notices: ContextCache writes one key per story version, and an expired one that is never
  // read again stayed in the LRU list until evicted as the least recently used.
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const ENTRIES = 40;
  const megabyte = () => randomBytes(500_000).toString('hex');

  /** Megabytes of heap the cache holds after `act`, with ENTRIES values of 1 MB written under `story:` first. */
  async function retainedAfter(act: (cache: CacheDriver, clock: ManualClock) => Promise<void>): Promise<number> {
    const clock = new ManualClock();
    const cache = createMemoryCacheDriver({ clock });
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < ENTRIES; i++) await cache.set(`story:{s${i}}:frequent:v1`, megabyte(), { ttlMs: 60_000 });
    await act(cache, clock);
    gc();
    const retained = (process.memoryUsage().heapUsed - before) / 1e6;
    await cache.close();
    return retained;
  }

  it('holds them while they live (the measure sees the entries)', async () => {
    expect(await retainedAfter(async () => {})).toBeGreaterThan(ENTRIES * 0.8);
  });

  it('drops every expired entry on a later write', async () => {
    const retained = await retainedAfter(async (cache, clock) => {
      await clock.advance(61_000);
      await cache.set('another', 'small', { ttlMs: 60_000 });
      expect(await cache.get('another')).toBe('small');
    });
    expect(retained).toBeLessThan(ENTRIES / 4);
  });

  it('deletePrefix drops expired entries too, without counting them', async () => {
    const retained = await retainedAfter(async (cache, clock) => {
      await clock.advance(61_000);
      expect(await cache.deletePrefix('story:')).toBe(0);
    });
    expect(retained).toBeLessThan(ENTRIES / 4);
  });

  it('walks the cache for expired entries at most once a second of its clock', async () => {
    const clock = new ManualClock();
    const cache = createMemoryCacheDriver({ clock });
    await clock.advance(1_000);
    await cache.set('first', 'v'); // the first walk
    let walks = 0;
    const counting = vi.spyOn(LRUCache.prototype, 'purgeStale').mockImplementation(function (
      this: LRUCache<string, string>,
    ) {
      walks++;
      return false;
    });
    try {
      for (let i = 0; i < 100; i++) await cache.set(`k${i}`, 'v', { ttlMs: 10 });
      expect(walks).toBe(0);
      await clock.advance(1_000);
      for (let i = 0; i < 100; i++) await cache.set(`k${i}`, 'v', { ttlMs: 10 });
      expect(walks).toBe(1);
    } finally {
      counting.mockRestore();
      await cache.close();
    }
  });
});
