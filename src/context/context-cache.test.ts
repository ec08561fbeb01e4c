import { afterEach, describe, expect, it, vi } from 'vitest';
import { commitScenes, storyWithScenes } from '../../test/fixtures/keepers.js';
import { AbortedError, ProviderError, ValidationError } from '../core/errors.js';
import type { StoryState } from '../state/schema.js';
import type { StoryStateStore } from '../state/store.js';
import { makeNextScene, makeNextState, makeStoryState } from '../testing/fixtures.js';
import type { CacheDriver } from './cache-driver.js';
import { ContextCache, frequentContextOf } from './context-cache.js';
import { createMemoryCacheDriver } from './memory-cache.js';

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

/** `store` whose `listScenes` calls (numbered from 1) go through `wrap`. */
function withListScenes(
  store: StoryStateStore,
  wrap: (
    call: number,
    real: () => ReturnType<StoryStateStore['listScenes']>,
  ) => ReturnType<StoryStateStore['listScenes']>,
): StoryStateStore {
  let calls = 0;
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === 'listScenes') {
        return (...args: Parameters<StoryStateStore['listScenes']>) => wrap(++calls, () => target.listScenes(...args));
      }
      return Reflect.get(target, property, receiver);
    },
  });
}

/** A store read that never answers (a dead socket). */
const never = () => new Promise<never>(() => {});

/** Follows `promise`: `outcome` is its value or error once settled, `undefined` while it is pending. */
function watch<T>(promise: Promise<T>): { outcome: { value: T } | { error: unknown } | undefined } {
  const watched: { outcome: { value: T } | { error: unknown } | undefined } = { outcome: undefined };
  promise.then(
    (value) => {
      watched.outcome = { value };
    },
    (error: unknown) => {
      watched.outcome = { error };
    },
  );
  return watched;
}

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

  it('treats an entry that names another version than its key as a miss', async () => {
    const { store } = await storyWithScenes(2);
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store });
    const current = await cache.cacheFrequentContext('tale');
    expect(current.version).toBe(2);
    // Well-formed, of this story and commit time, but of version 1: written under the key of version 2.
    await driver.set(cache.keyFor('tale', 2), JSON.stringify({ ...current, version: 1 }));
    const read = await cache.getFrequentContext('tale');
    expect(read.version).toBe(2);
    expect(cache.stats()).toMatchObject({ hits: 0, misses: 1 });
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

  it('shares a computation that never answers for buildTimeoutMs only, and leaves no timer behind', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { store } = await storyWithScenes(3);
    let reads = 0;
    // The first store read never answers; every later one does.
    const flaky = withListScenes(store, (call, real) => {
      reads = call;
      return call === 1 ? never() : real();
    });
    const cache = new ContextCache({ driver: createMemoryCacheDriver(), store: flaky, buildTimeoutMs: 500 });
    const state = await store.load('tale');
    const starter = watch(cache.getFrequentContext('tale', { state }));
    await settled();
    const joiner = watch(cache.getFrequentContext('tale', { state }));
    await vi.advanceTimersByTimeAsync(499);
    expect(joiner.outcome).toBeUndefined();
    expect(reads).toBe(1);
    // Past buildTimeoutMs the joiner stops waiting for the hung computation and computes on its own.
    await vi.advanceTimersByTimeAsync(1);
    await settled();
    expect(reads).toBe(2);
    expect(joiner.outcome).toEqual({ value: expect.objectContaining({ version: 3 }) });
    // The caller that started it waits for its own store read, as it would without a cache.
    expect(starter.outcome).toBeUndefined();
    expect(vi.getTimerCount()).toBe(0);

    // Of a version nobody has cached: a caller that arrives after buildTimeoutMs starts afresh instead of joining.
    const other = await storyWithScenes(2);
    const hangsOnce = withListScenes(other.store, (call, real) => (call === 1 ? never() : real()));
    const second = new ContextCache({ driver: createMemoryCacheDriver(), store: hangsOnce, buildTimeoutMs: 500 });
    void second.getFrequentContext('tale');
    await settled();
    await vi.advanceTimersByTimeAsync(500);
    const later = watch(second.getFrequentContext('tale'));
    await settled();
    expect(later.outcome).toEqual({ value: expect.objectContaining({ version: 2 }) });
    expect(vi.getTimerCount()).toBe(0);
  });

  it('releases an aborted caller at once without failing the others, and a computation all gave up on is not joined', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { store } = await storyWithScenes(3);
    let reads = 0;
    const flaky = withListScenes(store, (call, real) => {
      reads = call;
      return call === 1 ? never() : real();
    });
    const cache = new ContextCache({ driver: createMemoryCacheDriver(), store: flaky });
    const state = await store.load('tale');
    const first = new AbortController();
    const second = new AbortController();
    const a = watch(cache.getFrequentContext('tale', { state, signal: first.signal }));
    const b = watch(cache.getFrequentContext('tale', { state, signal: second.signal }));
    await settled();
    first.abort(new Error('step timed out'));
    await settled();
    expect(a.outcome && 'error' in a.outcome && AbortedError.isInstance(a.outcome.error)).toBe(true);
    expect(b.outcome).toBeUndefined();
    second.abort();
    await settled();
    expect(b.outcome && 'error' in b.outcome && AbortedError.isInstance(b.outcome.error)).toBe(true);
    // No one waits for the hung computation any more: the next caller computes afresh, without waiting for
    // buildTimeoutMs (no timer moved).
    const next = watch(cache.getFrequentContext('tale', { state }));
    await settled();
    expect(next.outcome).toEqual({ value: expect.objectContaining({ version: 3 }) });
    expect(reads).toBe(2);
    // A signal that has already fired is refused before any work.
    const aborted = cache.getFrequentContext('tale', { state, signal: AbortSignal.abort() });
    await expect(aborted).rejects.toSatisfy((error: unknown) => AbortedError.isInstance(error));
  });

  it('cacheFrequentContext ends at once on abort while its computation hangs, and writes nothing of it', async () => {
    const { store } = await storyWithScenes(3);
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The store read waits for the gate: a refresh stuck on a slow store.
    const slow = withListScenes(store, async (_call, real) => {
      await gate;
      return real();
    });
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store: slow });
    const state = await store.load('tale');
    const controller = new AbortController();
    const refresh = watch(cache.cacheFrequentContext('tale', { state, signal: controller.signal }));
    await settled();
    expect(refresh.outcome).toBeUndefined();
    controller.abort(new Error('step timed out'));
    await settled();
    expect(refresh.outcome && 'error' in refresh.outcome && AbortedError.isInstance(refresh.outcome.error)).toBe(true);
    // The computation finishing afterwards writes nothing: the next read is a miss.
    release();
    await settled();
    expect(await driver.get(cache.keyFor('tale', state.version))).toBeNull();
    // A signal that has already fired is refused before any work.
    await expect(cache.cacheFrequentContext('tale', { state, signal: AbortSignal.abort() })).rejects.toSatisfy(
      (error: unknown) => AbortedError.isInstance(error),
    );
  });

  it('computes apart two states of one version from two timelines, each caller getting its own', async () => {
    const { store } = await storyWithScenes(2);
    const a = await store.load('tale');
    // A story restored from a backup reaches the same version with another state (another commit time).
    const b: StoryState = {
      ...a,
      updatedAt: new Date(Date.parse(a.updatedAt) + 86_400_000).toISOString(),
      bible: { ...a.bible, worldRules: ['Only timeline B holds this rule'] },
    };
    const cache = new ContextCache({ driver: createMemoryCacheDriver(), store });
    const [fromA, fromB] = await Promise.all([
      cache.getFrequentContext('tale', { state: a }),
      cache.getFrequentContext('tale', { state: b }),
    ]);
    expect(fromA.updatedAt).toBe(a.updatedAt);
    expect(fromA.world_rules).toEqual(a.bible.worldRules);
    expect(fromB.updatedAt).toBe(b.updatedAt);
    expect(fromB.world_rules).toEqual(['Only timeline B holds this rule']);
    expect(cache.stats().computed).toBe(2);
  });

  it('leaves no entry behind invalidate(): a write issued before it is removed once it lands', async () => {
    const { store } = await storyWithScenes(2);
    const inner = createMemoryCacheDriver();
    const landings: Array<() => void> = [];
    // Writes land only when the test says so: after the invalidation.
    const slowSet = drivenBy(
      {
        set: (key, value, options) =>
          new Promise<void>((resolve, reject) => {
            landings.push(() => inner.set(key, value, options).then(resolve, reject));
          }),
      },
      inner,
    );
    const cache = new ContextCache({ driver: slowSet, store, timeoutMs: 60_000 });
    await cache.getFrequentContext('tale'); // a miss: returns, its write-back still under way
    const caching = cache.cacheFrequentContext('tale'); // a fill, its write still under way
    await settled();
    expect(landings).toHaveLength(2);
    await cache.invalidate('tale');
    for (const land of landings) land();
    await caching;
    await settled();
    expect(await inner.get(cache.keyFor('tale', 2))).toBeNull();
    expect(cache.stats().errors).toBe(0);
  });

  it('does not let a caller after invalidate() join a computation begun before it, nor that one write', async () => {
    const { store } = await storyWithScenes(2);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The first computation's store read waits for the test; later ones answer at once.
    const gated = withListScenes(store, (call, real) => (call === 1 ? gate.then(real) : real()));
    const inner = createMemoryCacheDriver();
    let writes = 0;
    const counting = drivenBy(
      {
        set: (key, value, options) => {
          writes++;
          return inner.set(key, value, options);
        },
      },
      inner,
    );
    const cache = new ContextCache({ driver: counting, store: gated });
    const before = cache.getFrequentContext('tale');
    await settled();
    await cache.invalidate('tale');
    const after = watch(cache.getFrequentContext('tale'));
    await settled();
    expect(after.outcome).toEqual({ value: expect.objectContaining({ version: 2 }) });
    expect(cache.stats().computed).toBe(2);
    expect(writes).toBe(1);
    release();
    expect((await before).version).toBe(2);
    await settled();
    // The computation begun before the invalidation was not written back.
    expect(writes).toBe(1);
  });

  it('never fails a read, a fill or an invalidation because onError throws or rejects', async () => {
    const { store } = await storyWithScenes(2);
    for (const onError of [
      () => {
        throw new Error('metrics client down');
      },
      async () => {
        throw new Error('metrics client down, asynchronously');
      },
    ]) {
      const cache = new ContextCache({ driver: failingDriver(), store, onError });
      expect((await cache.getFrequentContext('tale')).recent_scenes).toHaveLength(2);
      expect((await cache.cacheFrequentContext('tale')).recent_scenes).toHaveLength(2);
      await expect(cache.invalidate('tale')).resolves.toBeUndefined();
      await settled();
      expect(cache.stats().errors).toBe(4); // get, the write-back's set, the fill's set, delete
    }
  });

  it('refuses a buildTimeoutMs a Node timer cannot wait, and a prefix that is not well-formed UTF-16', async () => {
    const { store } = await storyWithScenes(1);
    const driver = createMemoryCacheDriver();
    for (const options of [
      { buildTimeoutMs: 0 },
      { buildTimeoutMs: -1 },
      { buildTimeoutMs: Number.NaN },
      { buildTimeoutMs: 2 ** 31 },
      { prefix: 'app\uD800' },
    ]) {
      expect(() => new ContextCache({ driver, store, ...options })).toThrow(ValidationError);
    }
    expect(() => new ContextCache({ driver, store, buildTimeoutMs: 2_147_483_647, prefix: 'app😀' })).not.toThrow();
  });
});

describe('frequentContextOf', () => {
  it('lists the plot threads not yet resolved as the active plots', () => {
    const base = makeStoryState('tale');
    const state = makeStoryState('tale', {
      plotThreads: [
        { ...base.plotThreads[0]!, id: 'done', title: 'The lost bell', status: 'resolved', importance: 0.9 },
        { ...base.plotThreads[0]!, id: 'drift', status: 'open', importance: 0.5 },
      ],
    });
    expect(frequentContextOf(state, []).active_plots.map((plot) => plot.id)).toEqual(['drift']);
  });

  it('puts no dead character in the spotlight of a story without main characters', () => {
    const base = makeStoryState('tale');
    const state = makeStoryState('tale', {
      characters: {
        gull: { ...base.characters.gull!, role: 'supporting', status: 'active' },
        ghost: { ...base.characters.gull!, id: 'ghost', name: 'The Ghost', role: 'supporting', status: 'dead' },
      },
    });
    expect(frequentContextOf(state, []).main_characters.map((character) => character.id)).toEqual(['gull']);
  });
});
