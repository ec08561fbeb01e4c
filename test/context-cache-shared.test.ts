/**
 * ContextCache where a cache is shared: by processes of other configurations, by a story's timelines, with foreign
 * entries, slow drivers and invalid options. The Redis driver's own cases are in src/context/redis*.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CacheDriver } from '../src/context/cache-driver.js';
import { ContextCache } from '../src/context/context-cache.js';
import { createMemoryCacheDriver } from '../src/context/memory-cache.js';
import { ValidationError } from '../src/core/errors.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { createSqliteStateStore } from '../src/state/sqlite.js';
import { restoreSqliteBackup } from '../src/state/sqlite-database.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { commitScenes, managerWith } from './fixtures/keepers.js';

/** Resolves to 'timeout' if `promise` has not settled within `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([promise, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms))]);
}

describe('ContextCache on a shared cache', () => {
  it('does not serve an entry written with another recentScenes (another process or configuration on a shared cache)', async () => {
    const store = createMemoryStateStore();
    await commitScenes(store, await store.create(makeStoryState('tale')), 7);
    // One shared cache, two deployments of the SDK (a rolling deploy, the CLI's prompt viewer beside the Lambda...).
    const driver = createMemoryCacheDriver();
    const narrow = new ContextCache({ driver, store, recentScenes: 2 });
    await narrow.getFrequentContext('tale');
    const wide = new ContextCache({ driver, store, recentScenes: 5 });
    const frequent = await wide.getFrequentContext('tale');
    // Documented: "Recent scenes kept. Default 5" and the manager relies on it (retrieval skips the newest five).
    expect(frequent.recent_scenes.map((scene) => scene.index)).toEqual([2, 3, 4, 5, 6]);
  });

  it("does not serve a story restored from a backup the lost timeline's frequent context of the same version", async () => {
    const folder = await mkdtemp(path.join(os.tmpdir(), 'audit-cache-'));
    const driver = createMemoryCacheDriver(); // stands for a shared Redis
    try {
      const live = createSqliteStateStore({ path: path.join(folder, 'live.db') });
      const v1 = await commitScenes(live, await live.create(makeStoryState('tale')), 1);
      await live.backup(path.join(folder, 'backup.db'));
      // The timeline that will be lost: two more scenes, cached as the engine does after each commit.
      await commitScenes(live, v1, 2, (index) => ({ title: `Lost night ${index + 1}` }));
      const liveCache = new ContextCache({ driver, store: live });
      await liveCache.cacheFrequentContext('tale');
      await live.close();

      // Disaster recovery: restore Monday's backup and go on writing; a writer that does not refresh the cache
      // (or whose refresh failed during a cache blip) commits the new scenes 2 and 3.
      await restoreSqliteBackup(path.join(folder, 'backup.db'), path.join(folder, 'restored.db'));
      const restored = createSqliteStateStore({ path: path.join(folder, 'restored.db') });
      try {
        // Committed after the restore, so at a later time than the lost timeline's scenes of the same versions.
        const after = await commitScenes(restored, await restored.load('tale'), 2, (index) => ({
          title: `New night ${index + 1}`,
          createdAt: new Date(Date.UTC(2030, 0, 1, 0, index)).toISOString(),
        }));
        const cache = new ContextCache({ driver, store: restored });
        const frequent = await cache.getFrequentContext('tale');
        expect(frequent.version).toBe(after.version);
        expect(frequent.recent_scenes.map((scene) => scene.title)).toEqual(['Night 1', 'New night 2', 'New night 3']);
      } finally {
        await restored.close();
      }
    } finally {
      await driver.close();
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('treats an entry with the right envelope but malformed items as a miss, and the retrieval goes on', async () => {
    const store = createMemoryStateStore();
    await commitScenes(store, await store.create(makeStoryState('tale')), 2);
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store });
    const manager = managerWith(store, cache);
    // A foreign or older writer on a shared cache: storyId, version and four lists match; the items do not.
    await driver.set(
      cache.keyFor('tale', 2),
      JSON.stringify({
        storyId: 'tale',
        version: 2,
        main_characters: [],
        active_plots: [],
        world_rules: [],
        recent_scenes: [null],
      }),
    );
    const bundle = await manager.getRelevantContext('tale', 'the lamp');
    expect(bundle.cachedContext.recent_scenes.map((scene) => scene.index)).toEqual([0, 1]);
  });

  it('bounds each driver call: a driver whose command hangs is bypassed, not waited for', async () => {
    const store = createMemoryStateStore();
    await commitScenes(store, await store.create(makeStoryState('tale')), 2);
    const never = () => new Promise<never>(() => {});
    const hanging: CacheDriver = {
      specificationVersion: 'v1',
      provider: 'hanging',
      capabilities: { shared: true, atomicSetIfAbsent: true },
      get: never,
      getMany: never,
      set: never,
      setIfAbsent: never,
      delete: never,
      deletePrefix: never,
      close: async () => {},
    };
    const cache = new ContextCache({ driver: hanging, store });
    // "Reads never fail because of the cache: a failing driver is bypassed" -- a stuck one is not.
    const result = await within(cache.getFrequentContext('tale'), 3_000);
    expect(result).not.toBe('timeout');
  });

  it('refuses invalid options at construction (a ttlMs of 0 made every write fail unseen)', async () => {
    const store = createMemoryStateStore();
    await commitScenes(store, await store.create(makeStoryState('tale')), 1);
    const driver = createMemoryCacheDriver();
    let cache: ContextCache;
    try {
      cache = new ContextCache({ driver, store, ttlMs: 0 });
    } catch (error) {
      // Validated at construction, as the conventions ask: that is the fix.
      expect(ValidationError.isInstance(error)).toBe(true);
      return;
    }
    await cache.getFrequentContext('tale');
    await cache.getFrequentContext('tale');
    // Every write failed with the driver's ValidationError, swallowed as a "cache error": no hit ever.
    expect(cache.stats()).toMatchObject({ hits: 1, errors: 0 });
  });
});
