import { afterEach, describe, expect, it, vi } from 'vitest';
import { commitScenes } from '../../test/fixtures/keepers.js';
import { ProviderError, ValidationError } from '../core/errors.js';
import { createMemoryStateStore } from '../state/memory.js';
import { makeNextScene, makeNextState, makeStoryState } from '../testing/fixtures.js';
import type { CacheDriver } from './cache-driver.js';
import { ContextCache } from './context-cache.js';
import { createMemoryCacheDriver } from './memory-cache.js';

async function storyWithScenes(count: number) {
  const store = createMemoryStateStore();
  const state = await commitScenes(store, await store.create(makeStoryState('tale')), count);
  return { store, state };
}

function failingDriver(): CacheDriver & { calls: number } {
  const fail = async () => {
    driver.calls++;
    throw new Error('connection refused');
  };
  const driver = {
    specificationVersion: 'v1' as const,
    provider: 'broken',
    capabilities: { shared: true, atomicSetIfAbsent: true },
    calls: 0,
    get: fail,
    getMany: fail,
    set: fail,
    setIfAbsent: fail,
    delete: fail,
    deletePrefix: fail,
    close: async () => {},
  };
  return driver;
}

/** A driver that does what `inner` does, but for the calls `overrides` replace. */
function drivenBy(overrides: Partial<CacheDriver>, inner: CacheDriver = createMemoryCacheDriver()): CacheDriver {
  return { ...inner, ...overrides };
}

/** Resolves once every pending promise reaction has run (a macrotask later). */
const settled = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('ContextCache', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds main characters, active plots, world rules and the five most recent scenes', async () => {
    const { store } = await storyWithScenes(7);
    const cache = new ContextCache({ driver: createMemoryCacheDriver(), store });
    const frequent = await cache.getFrequentContext('tale');
    expect(frequent.main_characters.map((c) => c.id)).toEqual(['mira', 'tobin']);
    expect(frequent.active_plots.map((p) => p.id)).toEqual(['drift']);
    expect(frequent.world_rules).toHaveLength(2);
    expect(frequent.recent_scenes.map((s) => s.index)).toEqual([2, 3, 4, 5, 6]);
    expect(frequent.version).toBe(7);
  });

  it('counts a miss, then hits, under a key that carries the version', async () => {
    const { store } = await storyWithScenes(1);
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store });
    await cache.getFrequentContext('tale');
    await cache.getFrequentContext('tale');
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 1, computed: 1 });
    expect(await driver.get(cache.keyFor('tale', 1))).not.toBeNull();
    expect(cache.keyFor('tale', 1)).toContain('{tale}');
  });

  it('never serves a stale version after a commit', async () => {
    const { store, state } = await storyWithScenes(2);
    const cache = new ContextCache({ driver: createMemoryCacheDriver(), store });
    expect((await cache.getFrequentContext('tale')).recent_scenes).toHaveLength(2);
    const scene = makeNextScene(state, { title: 'The new night' });
    await store.commitScene('tale', {
      expectedVersion: state.version,
      scene,
      nextState: makeNextState(state, scene),
      consumedInfluenceIds: [],
    });
    const after = await cache.getFrequentContext('tale');
    expect(after.version).toBe(3);
    expect(after.recent_scenes.at(-1)?.title).toBe('The new night');
  });

  it('computes once for twenty concurrent misses (single flight)', async () => {
    const { store } = await storyWithScenes(3);
    let listCalls = 0;
    const counting = new Proxy(store, {
      get(target, property, receiver) {
        if (property === 'listScenes') {
          return (...args: Parameters<typeof store.listScenes>) => {
            listCalls++;
            return target.listScenes(...args);
          };
        }
        return Reflect.get(target, property, receiver);
      },
    });
    const cache = new ContextCache({ driver: createMemoryCacheDriver(), store: counting });
    const state = await store.load('tale');
    const results = await Promise.all(Array.from({ length: 20 }, () => cache.getFrequentContext('tale', { state })));
    expect(listCalls).toBe(1);
    for (const result of results) expect(result).toEqual(results[0]);
  });

  it('bypasses a failing cache: retrieval still succeeds and the failure is counted', async () => {
    const { store } = await storyWithScenes(2);
    const driver = failingDriver();
    const errors: string[] = [];
    const cache = new ContextCache({ driver, store, onError: (_e, operation) => errors.push(operation) });
    const frequent = await cache.getFrequentContext('tale');
    expect(frequent.recent_scenes).toHaveLength(2);
    expect(await cache.cacheFrequentContext('tale')).toEqual(frequent);
    expect(errors).toEqual(['get', 'set', 'set']);
    expect(cache.stats().errors).toBe(3);
    await expect(cache.invalidate('tale')).resolves.toBeUndefined();
  });

  it('holds only the scenes of the version asked for, not those committed after it', async () => {
    // A state loaded just before another writer commits (or an older one asked for): its recent scenes are its own
    // (listed oldest first).
    const { store } = await storyWithScenes(3);
    const v3 = await store.load('tale');
    await commitScenes(store, v3, 4);
    const cache = new ContextCache({ driver: createMemoryCacheDriver(), store, recentScenes: 2 });
    const old = await cache.getFrequentContext('tale', { state: v3 });
    expect(old.recent_scenes.map((scene) => scene.index)).toEqual([1, 2]);
    const now = await cache.getFrequentContext('tale');
    expect(now.recent_scenes.map((scene) => scene.index)).toEqual([5, 6]);
  });

  it('treats a corrupt or foreign entry as a miss', async () => {
    const { store } = await storyWithScenes(1);
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store });
    await driver.set(cache.keyFor('tale', 1), '{not json');
    expect((await cache.getFrequentContext('tale')).version).toBe(1);
    await driver.set(cache.keyFor('tale', 1), JSON.stringify({ storyId: 'other', version: 1 }));
    expect((await cache.getFrequentContext('tale')).storyId).toBe('tale');
    // The right story and version, another shape (a foreign writer, or a release that shapes it differently).
    for (const entry of [null, { storyId: 'tale', version: 1, world_rules: [] }]) {
      await driver.set(cache.keyFor('tale', 1), JSON.stringify(entry));
      const context = await cache.getFrequentContext('tale');
      expect(context.main_characters.map((character) => character.id)).toEqual(['mira', 'tobin']);
      expect(context.recent_scenes).toHaveLength(1);
    }
    expect(cache.stats().hits).toBe(0);
    expect(cache.keyFor('tale', 1)).toMatch(/:frequent:f\d+:r5:v1$/);
  });

  it('refuses a timeoutMs a Node timer cannot wait and a ttlMs no driver can hold', async () => {
    const { store } = await storyWithScenes(1);
    const driver = createMemoryCacheDriver();
    // setTimeout fires a delay above 2^31-1 ms after 1 ms: every call timed out. Redis refuses a PX beyond its range:
    // every write failed, so nothing was ever a hit.
    for (const options of [{ timeoutMs: 2 ** 31 }, { timeoutMs: 1e12 }, { ttlMs: 2 ** 63 }, { ttlMs: 1e19 }]) {
      expect(() => new ContextCache({ driver, store, ...options })).toThrow(ValidationError);
    }
    const longest = new ContextCache({ driver, store, timeoutMs: 2_147_483_647, ttlMs: Number.MAX_SAFE_INTEGER });
    await longest.getFrequentContext('tale');
    await longest.getFrequentContext('tale');
    expect(longest.stats()).toMatchObject({ hits: 1, errors: 0 });
  });

  it('bounds invalidate() by timeoutMs and reports its failure as a delete', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { store } = await storyWithScenes(1);
    const reported: Array<[unknown, string]> = [];
    const onError = (error: unknown, operation: string) => reported.push([error, operation]);
    const stuck = drivenBy({ deletePrefix: () => new Promise<never>(() => {}) });
    const cache = new ContextCache({ driver: stuck, store, timeoutMs: 1_000, onError });
    let done = false;
    const invalidating = cache.invalidate('tale').then(() => {
      done = true;
    });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(done).toBe(true);
    await invalidating;
    expect(reported.map(([, operation]) => operation)).toEqual(['delete']);
    expect(ProviderError.isInstance(reported[0]![0])).toBe(true);

    const failing = new ContextCache({ driver: failingDriver(), store, onError });
    await failing.invalidate('tale');
    expect(reported.map(([, operation]) => operation)).toEqual(['delete', 'delete']);
    expect(failing.stats().errors).toBe(1);
  });

  it('returns a miss without waiting for its write-back, which is still bounded and reported', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { store } = await storyWithScenes(2);
    const operations: string[] = [];
    let writes = 0;
    const stuck = drivenBy({
      set: () => {
        writes++;
        return new Promise<never>(() => {});
      },
    });
    const cache = new ContextCache({
      driver: stuck,
      store,
      timeoutMs: 1_000,
      onError: (_e, op) => operations.push(op),
    });
    let frequent: Awaited<ReturnType<ContextCache['getFrequentContext']>> | undefined;
    const retrieving = cache.getFrequentContext('tale').then((context) => {
      frequent = context;
    });
    await settled();
    // Returned with the write still pending: a stuck cache no longer costs the read's timeout and the write's.
    expect(writes).toBe(1);
    expect(frequent?.recent_scenes).toHaveLength(2);
    expect(operations).toEqual([]);
    await retrieving;
    await vi.advanceTimersByTimeAsync(1_000);
    expect(operations).toEqual(['set']);
    expect(cache.stats()).toMatchObject({ misses: 1, errors: 1 });
  });

  it('counts and reports a write-back that fails after the miss has returned, and it is not an unhandled rejection', async () => {
    const { store } = await storyWithScenes(2);
    let fail!: (error: Error) => void;
    const driver = drivenBy({
      set: () =>
        new Promise<never>((_, reject) => {
          fail = reject;
        }),
    });
    const operations: string[] = [];
    const cache = new ContextCache({ driver, store, onError: (_e, op) => operations.push(op) });
    expect((await cache.getFrequentContext('tale')).recent_scenes).toHaveLength(2);
    expect(operations).toEqual([]);
    fail(new Error('connection reset'));
    await settled();
    expect(operations).toEqual(['set']);
    expect(cache.stats().errors).toBe(1);
  });

  it('still waits for the write in cacheFrequentContext', async () => {
    const { store } = await storyWithScenes(1);
    let finish!: () => void;
    const driver = drivenBy({
      set: () =>
        new Promise<void>((resolve) => {
          finish = resolve;
        }),
    });
    const cache = new ContextCache({ driver, store });
    let done = false;
    const caching = cache.cacheFrequentContext('tale').then(() => {
      done = true;
    });
    await settled();
    expect(done).toBe(false);
    finish();
    await caching;
    expect(done).toBe(true);
  });

  it('gives every caller of one computation a result of its own, sharing nothing with the state', async () => {
    const { store } = await storyWithScenes(3);
    const cache = new ContextCache({ driver: createMemoryCacheDriver(), store });
    const state = await store.load('tale');
    const aliases = structuredClone(state.characters.mira!.aliases);
    const [first, second] = await Promise.all([
      cache.getFrequentContext('tale', { state }),
      cache.getFrequentContext('tale', { state }),
    ]);
    expect(cache.stats().computed).toBe(1);
    // One caller orders its copy newest first and changes a character, for its own display.
    first.recent_scenes.reverse();
    first.main_characters[0]!.aliases.push('the impostor');
    first.main_characters[0]!.traits.courage = -1;
    first.active_plots[0]!.setups.push('a forged letter');
    expect(second.recent_scenes.map((scene) => scene.index)).toEqual([0, 1, 2]);
    expect(second.main_characters[0]!.aliases).toEqual(aliases);
    expect(state.characters.mira!.aliases).toEqual(aliases);
    expect(state.characters.mira!.traits.courage).not.toBe(-1);
    const thread = state.plotThreads.find(({ id }) => id === first.active_plots[0]!.id)!;
    expect(thread.setups).not.toContain('a forged letter');
    // What cacheFrequentContext returns is the caller's own too.
    const written = await cache.cacheFrequentContext('tale', { state });
    written.main_characters[0]!.aliases.push('the impostor');
    written.recent_scenes[0]!.characters.push('a stranger');
    expect(state.characters.mira!.aliases).toEqual(aliases);
    const again = await cache.getFrequentContext('tale', { state });
    expect(again.recent_scenes.map((scene) => scene.characters)).toEqual(
      second.recent_scenes.map((scene) => scene.characters),
    );
  });

  it('refuses a state of another story, as ContextManager does, and caches nothing', async () => {
    const { store } = await storyWithScenes(2);
    await store.create(makeStoryState('other'));
    const other = await store.load('other');
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store });
    for (const call of [
      cache.getFrequentContext('tale', { state: other }),
      cache.cacheFrequentContext('tale', { state: other }),
    ]) {
      const error = await call.catch((caught: unknown) => caught);
      expect(ValidationError.isInstance(error) && error.message).toMatch(/options\.state belongs to "other"/);
    }
    expect(await driver.get(cache.keyFor('tale', other.version))).toBeNull();
    expect(cache.stats().computed).toBe(0);
  });

  it('treats an entry whose numbers or appearance are of another type as a miss', async () => {
    const { store, state } = await storyWithScenes(2);
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store });
    const good = await cache.cacheFrequentContext('tale');
    type Loose = { main_characters: Array<Record<string, unknown>>; active_plots: Array<Record<string, unknown>> };
    const spoilers: Array<(entry: Loose) => void> = [
      (entry) => {
        entry.active_plots[0]!.importance = 'high';
      },
      (entry) => {
        entry.main_characters[0]!.arcProgress = null;
      },
      (entry) => {
        entry.main_characters[0]!.traits = { courage: 'brave' };
      },
      (entry) => {
        entry.main_characters[0]!.traits = [0.5];
      },
      (entry) => {
        entry.main_characters[0]!.lastAppearance = 42;
      },
    ];
    for (const spoil of spoilers) {
      const entry = structuredClone(good) as unknown as Loose;
      spoil(entry);
      await driver.set(cache.keyFor('tale', state.version), JSON.stringify(entry));
      expect(await cache.getFrequentContext('tale')).toEqual(good);
    }
    expect(cache.stats()).toMatchObject({ hits: 0, misses: spoilers.length });
    // The well-formed entry (each spoiled one replaced by it) is a hit.
    await cache.getFrequentContext('tale');
    expect(cache.stats().hits).toBe(1);
  });
});
