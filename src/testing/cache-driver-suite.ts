/**
 * The conformance suite of the `CacheDriver` port. Every cache driver, built in or third-party, runs it.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { CacheDriver } from '../context/cache-driver.js';
import { ValidationError } from '../core/errors.js';
import { registerSuite, type SuiteCase, type SuiteOptions, type SuiteTestApi } from './suite.js';

/**
 * What the cache suite needs beyond the common suite options.
 *
 * @example
 * ```ts
 * import type { CacheDriverSuiteExtras } from 'storyloom/testing';
 * // A real server cannot be fast-forwarded: wait for real.
 * const extras: CacheDriverSuiteExtras = { advanceTime: (ms) => new Promise((resolve) => setTimeout(resolve, ms)) };
 * ```
 */
export interface CacheDriverSuiteExtras {
  /**
   * Moves the driver's time forward by `ms`, for the expiry cases: a `ManualClock`'s `advance` for the memory
   * driver, a real wait for a server such as Redis. Without it the expiry cases are skipped, with that reason.
   */
  advanceTime?: (ms: number) => Promise<void>;
}

/** Keys of one case, under a prefix no other case, run or process uses: real servers are shared. */
function namespace(): string {
  return `sl-suite-${randomUUID().slice(0, 8)}:`;
}

async function rejectsWith<E>(
  promise: Promise<unknown>,
  isInstance: (error: unknown) => error is E,
  label: string,
): Promise<E> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isInstance(error), `expected ${label}, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected ${label}, but the call succeeded`);
}

const TTL_MS = 500;

/**
 * The cases of the `CacheDriver` suite. The expiry cases use `extras.advanceTime`, so the list is built per run;
 * names are the same whatever the extras.
 *
 * @example
 * ```ts
 * import { cacheDriverCases } from 'storyloom/testing';
 * console.log(cacheDriverCases().map((testCase) => testCase.name));
 * ```
 */
export function cacheDriverCases(extras: CacheDriverSuiteExtras = {}): Array<SuiteCase<CacheDriver>> {
  const { advanceTime } = extras;
  const needsTime = () => (advanceTime ? undefined : 'no advanceTime was given, so expiry cannot be observed');
  const advance = async (ms: number) => {
    if (!advanceTime) throw new Error('advanceTime is required by this case');
    await advanceTime(ms);
  };

  return [
    {
      name: 'get returns null for a missing key and the value after set',
      async run(cache) {
        const ns = namespace();
        assert.equal(await cache.get(`${ns}missing`), null);
        await cache.set(`${ns}a`, 'alpha');
        assert.equal(await cache.get(`${ns}a`), 'alpha');
        await cache.set(`${ns}empty`, '');
        assert.equal(await cache.get(`${ns}empty`), '', 'an empty string is a value, not a miss');
      },
    },
    {
      name: 'set overwrites an existing value',
      async run(cache) {
        const ns = namespace();
        await cache.set(`${ns}a`, 'first');
        await cache.set(`${ns}a`, 'second');
        assert.equal(await cache.get(`${ns}a`), 'second');
      },
    },
    {
      name: 'getMany returns values in the asked order, null where absent',
      async run(cache) {
        const ns = namespace();
        await cache.set(`${ns}a`, '1');
        await cache.set(`${ns}c`, '3');
        assert.deepEqual(await cache.getMany([`${ns}c`, `${ns}b`, `${ns}a`, `${ns}c`]), ['3', null, '1', '3']);
        assert.deepEqual(await cache.getMany([]), []);
      },
    },
    {
      name: 'delete removes keys and counts the ones that existed',
      async run(cache) {
        const ns = namespace();
        await cache.set(`${ns}a`, '1');
        await cache.set(`${ns}b`, '2');
        await cache.set(`${ns}c`, '3');
        assert.equal(await cache.delete([`${ns}a`, `${ns}missing`, `${ns}c`]), 2);
        assert.deepEqual(await cache.getMany([`${ns}a`, `${ns}b`, `${ns}c`]), [null, '2', null]);
        assert.equal(await cache.delete([`${ns}b`, `${ns}b`]), 1, 'a key named twice is deleted once');
        assert.equal(await cache.delete([]), 0);
      },
    },
    {
      name: 'deletePrefix removes every key with the prefix and no other',
      async run(cache) {
        const ns = namespace();
        const doomed = [`${ns}story:{s1}:recent`, `${ns}story:{s1}:characters`, `${ns}story:{s1}:`];
        const kept = [`${ns}story:{s10}:recent`, `${ns}story:{s2}:recent`, `${ns}stor`];
        for (const key of [...doomed, ...kept]) await cache.set(key, key);
        assert.equal(await cache.deletePrefix(`${ns}story:{s1}:`), doomed.length);
        assert.deepEqual(await cache.getMany(doomed), [null, null, null]);
        assert.deepEqual(await cache.getMany(kept), kept);
        assert.equal(await cache.deletePrefix(`${ns}story:{s1}:`), 0);
      },
    },
    {
      name: 'deletePrefix treats glob characters in the prefix literally',
      async run(cache) {
        const ns = namespace();
        // Redis SCAN MATCH reads * ? [ ] and \ as a pattern; a driver must escape them.
        const doomed = [`${ns}p[1]*?\\:a`, `${ns}p[1]*?\\:b`];
        const kept = [`${ns}p1x\\:a`, `${ns}p[1]zz\\:a`, `${ns}p\\:a`, `${ns}pX`];
        for (const key of [...doomed, ...kept]) await cache.set(key, 'v');
        assert.equal(await cache.deletePrefix(`${ns}p[1]*?\\:`), 2);
        assert.deepEqual(await cache.getMany(doomed), [null, null]);
        assert.deepEqual(await cache.getMany(kept), ['v', 'v', 'v', 'v']);
      },
    },
    {
      name: 'an empty key or prefix is a ValidationError and changes nothing',
      async run(cache) {
        const ns = namespace();
        await cache.set(`${ns}a`, '1');
        await rejectsWith(cache.deletePrefix(''), ValidationError.isInstance, 'ValidationError for an empty prefix');
        await rejectsWith(cache.set('', 'x'), ValidationError.isInstance, 'ValidationError for an empty key');
        assert.equal(await cache.get(`${ns}a`), '1');
      },
    },
    {
      name: 'setIfAbsent writes only when the key is absent',
      async run(cache) {
        const ns = namespace();
        assert.equal(await cache.setIfAbsent(`${ns}lock`, 'first'), true);
        assert.equal(await cache.setIfAbsent(`${ns}lock`, 'second'), false);
        assert.equal(await cache.get(`${ns}lock`), 'first');
        await cache.delete([`${ns}lock`]);
        assert.equal(await cache.setIfAbsent(`${ns}lock`, 'third'), true);
        assert.equal(await cache.get(`${ns}lock`), 'third');
      },
    },
    {
      name: 'concurrent setIfAbsent on one key: exactly one wins and its value is kept',
      async run(cache) {
        const ns = namespace();
        const contenders = Array.from({ length: 20 }, (_, i) => `worker-${i}`);
        const results = await Promise.all(contenders.map((value) => cache.setIfAbsent(`${ns}lock`, value)));
        assert.equal(results.filter(Boolean).length, 1, `one winner, got ${results.filter(Boolean).length}`);
        assert.equal(await cache.get(`${ns}lock`), contenders[results.indexOf(true)]);
      },
    },
    {
      name: 'an entry expires after its ttl; others stay',
      skipUnless: needsTime,
      async run(cache) {
        const ns = namespace();
        await cache.set(`${ns}short`, 'gone soon', { ttlMs: TTL_MS });
        await cache.set(`${ns}unread`, 'gone unseen', { ttlMs: TTL_MS });
        await cache.set(`${ns}forever`, 'stays');
        await advance(TTL_MS * 0.4);
        assert.equal(await cache.get(`${ns}short`), 'gone soon', 'still there before its ttl');
        await advance(TTL_MS * 0.8);
        assert.equal(await cache.get(`${ns}short`), null, 'get misses once the ttl has passed');
        assert.deepEqual(await cache.getMany([`${ns}short`, `${ns}forever`]), [null, 'stays']);
        assert.equal(await cache.delete([`${ns}short`]), 0, 'an expired key is not counted as deleted');
        assert.equal(await cache.delete([`${ns}unread`]), 0, 'nor one that was never read after it expired');
        assert.equal(await cache.deletePrefix(`${ns}sh`), 0, 'nor by deletePrefix');
      },
    },
    {
      name: 'a key set with setIfAbsent and a ttl can be taken again once it has expired',
      skipUnless: needsTime,
      async run(cache) {
        const ns = namespace();
        assert.equal(await cache.setIfAbsent(`${ns}lock`, 'owner-1', { ttlMs: TTL_MS }), true);
        // A losing attempt late in the holder's ttl changes nothing, its expiry included: the key is free at the
        // holder's ttl, not a ttl after the loser's attempt.
        await advance(TTL_MS * 0.6);
        assert.equal(await cache.setIfAbsent(`${ns}lock`, 'owner-2', { ttlMs: TTL_MS }), false);
        assert.equal(await cache.get(`${ns}lock`), 'owner-1');
        await advance(TTL_MS * 0.6);
        assert.equal(await cache.get(`${ns}lock`), null, 'the key expired at the ttl of the one who set it');
        assert.deepEqual(await cache.getMany([`${ns}lock`]), [null]);
        assert.equal(await cache.setIfAbsent(`${ns}lock`, 'owner-2', { ttlMs: TTL_MS }), true);
        assert.equal(await cache.get(`${ns}lock`), 'owner-2');
      },
    },
    {
      name: 'a plain set replaces an earlier ttl, as SET does in Redis',
      skipUnless: needsTime,
      async run(cache) {
        const ns = namespace();
        await cache.set(`${ns}a`, 'with ttl', { ttlMs: TTL_MS });
        await cache.set(`${ns}a`, 'without ttl');
        await cache.set(`${ns}b`, 'long ttl', { ttlMs: TTL_MS * 100 });
        await cache.set(`${ns}b`, 'short ttl', { ttlMs: TTL_MS });
        await advance(TTL_MS * 1.2);
        assert.deepEqual(await cache.getMany([`${ns}a`, `${ns}b`]), ['without ttl', null]);
        assert.equal(await cache.get(`${ns}a`), 'without ttl');
        assert.equal(await cache.get(`${ns}b`), null, 'get misses once the shorter ttl has passed');
      },
    },
    {
      name: 'a ttl that is not a positive number up to Number.MAX_SAFE_INTEGER ms is a ValidationError and writes nothing',
      async run(cache) {
        const ns = namespace();
        // Redis refuses a PX beyond its 64-bit range: a driver that passed one on failed every write, retryably,
        // while the memory driver stored it. Every driver takes the same range.
        const refused = [0, -5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER + 2, 1e19, 2 ** 63];
        for (const ttlMs of refused) {
          await rejectsWith(
            cache.set(`${ns}a`, 'x', { ttlMs }),
            ValidationError.isInstance,
            `ValidationError for ttlMs ${ttlMs}`,
          );
          await rejectsWith(
            cache.setIfAbsent(`${ns}b`, 'x', { ttlMs }),
            ValidationError.isInstance,
            `ValidationError for setIfAbsent with ttlMs ${ttlMs}`,
          );
        }
        assert.deepEqual(await cache.getMany([`${ns}a`, `${ns}b`]), [null, null]);
        // The longest one is stored.
        await cache.set(`${ns}a`, 'long-lived', { ttlMs: Number.MAX_SAFE_INTEGER });
        assert.equal(await cache.setIfAbsent(`${ns}b`, 'long-lived', { ttlMs: Number.MAX_SAFE_INTEGER }), true);
        assert.deepEqual(await cache.getMany([`${ns}a`, `${ns}b`]), ['long-lived', 'long-lived']);
      },
    },
    {
      name: 'large values round-trip unchanged',
      async run(cache) {
        const ns = namespace();
        const chunk = 'Mira walked the length of the harbor wall; 龍 🐉 é. ';
        const large = chunk.repeat(Math.ceil(1_000_000 / chunk.length));
        await cache.set(`${ns}large`, large);
        const read = await cache.get(`${ns}large`);
        assert.equal(read?.length, large.length);
        assert.ok(read === large, 'the value comes back byte for byte');
      },
    },
    {
      name: 'unicode keys and values, and keys with {}, : and spaces, round-trip',
      async run(cache) {
        const ns = namespace();
        const entries: Array<[string, string]> = [
          [`${ns}clé:ñandú:🐉`, 'valeur: «dragon» 🐉'],
          [`${ns}story:{s1}:scene:{42}`, '{"json":true,"list":[1,2]}'],
          [`${ns}with space and\ttab`, 'line one\nline two\r\n'],
          [`${ns}漢字`, '\u0000nul and \u{1F600} astral'],
        ];
        for (const [key, value] of entries) await cache.set(key, value);
        assert.deepEqual(
          await cache.getMany(entries.map(([key]) => key)),
          entries.map(([, value]) => value),
        );
        assert.equal(await cache.deletePrefix(`${ns}clé:`), 1);
        assert.equal(await cache.get(`${ns}clé:ñandú:🐉`), null);
      },
    },
    {
      name: 'keys with a lone surrogate are refused with a ValidationError, or kept apart: never merged',
      async run(cache) {
        const ns = namespace();
        // Encoded as UTF-8 (as Redis stores keys), each of these would become `${ns}\uFFFD`: one entry for all three.
        const high = `${ns}\uD800`;
        const low = `${ns}\uDC00`;
        const replacement = `${ns}\uFFFD`;
        await cache.set(replacement, 'replacement');
        const refused = async (call: Promise<unknown>): Promise<boolean> => {
          try {
            await call;
            return false;
          } catch (error) {
            assert.ok(ValidationError.isInstance(error), `expected a ValidationError or success, got ${String(error)}`);
            return true;
          }
        };
        if (await refused(cache.set(high, 'high'))) {
          assert.equal(await cache.get(replacement), 'replacement', 'a refused write changes nothing');
        } else {
          if (!(await refused(cache.set(low, 'low')))) {
            assert.equal(await cache.get(high), 'high', 'two keys differing in a lone surrogate are two entries');
            assert.equal(await cache.get(low), 'low', 'two keys differing in a lone surrogate are two entries');
          }
          assert.equal(await cache.get(replacement), 'replacement', 'a lone surrogate is not U+FFFD');
        }
        // A prefix with a lone surrogate must not delete the keys it would name once encoded.
        if (!(await refused(cache.deletePrefix(`${ns}\uDBFF`)))) {
          assert.equal(await cache.get(replacement), 'replacement', 'deletePrefix of a lone surrogate kept U+FFFD');
        }
        assert.equal(await cache.get(replacement), 'replacement');
      },
    },
  ];
}

/**
 * Registers the `CacheDriver` conformance suite with a test runner and returns the number of cases.
 *
 * Each case writes under its own random key prefix, so one shared server serves every case. Pass `advanceTime` to
 * run the expiry cases.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest';
 * import { createMemoryCacheDriver } from 'storyloom';
 * import { ManualClock, runCacheDriverSuite } from 'storyloom/testing';
 *
 * const clock = new ManualClock();
 * runCacheDriverSuite(
 *   { describe, it },
 *   { name: 'memory', create: () => createMemoryCacheDriver({ clock }), advanceTime: (ms) => clock.advance(ms) },
 * );
 * ```
 */
export function runCacheDriverSuite(
  api: SuiteTestApi,
  options: SuiteOptions<CacheDriver> & CacheDriverSuiteExtras,
): number {
  return registerSuite(api, 'CacheDriver conformance', cacheDriverCases(options), options);
}
