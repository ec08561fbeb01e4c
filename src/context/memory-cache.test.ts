import { describe, expect, it } from 'vitest';
import { StoryloomError, ValidationError } from '../core/errors.js';
import { runCacheDriverSuite } from '../testing/cache-driver-suite.js';
import { ManualClock } from '../testing/manual-clock.js';
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

  it('refuses every call once closed', async () => {
    const cache = createMemoryCacheDriver();
    await cache.set('k', 'v');
    await cache.close();
    const error = await cache.get('k').catch((caught: unknown) => caught);
    expect(StoryloomError.isInstance(error) && error.code).toBe('CLOSED');
  });
});
