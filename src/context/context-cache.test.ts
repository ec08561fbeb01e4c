import { describe, expect, it } from 'vitest';
import { commitScenes } from '../../test/fixtures/keepers.js';
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

describe('ContextCache', () => {
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
});
