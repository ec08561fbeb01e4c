/**
 * ContextCache under a store read that never answers, through ContextManager and the engine: a hung computation of
 * the frequent context is shared for `buildTimeoutMs` only, so one dead socket does not fail every later retrieval and
 * episode of the process. The cache's own cases are in src/context/context-cache.test.ts.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ContextCache } from '../src/context/context-cache.js';
import { createMemoryCacheDriver } from '../src/context/memory-cache.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import type { StoryStateStore } from '../src/state/store.js';
import { managerWith, storyWithScenes } from './fixtures/keepers.js';

/**
 * `store` as the cache sees it: each `listScenes` call never answers while `hanging()` is true (a read on a dead
 * socket), and answers as the store does otherwise. The manager and the engine keep the plain store, so the only
 * call that hangs is the cache's own.
 */
function hangingWhile(store: StoryStateStore, hanging: () => boolean): StoryStateStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === 'listScenes') {
        return (...args: Parameters<StoryStateStore['listScenes']>) =>
          hanging() ? new Promise<never>(() => {}) : target.listScenes(...args);
      }
      return Reflect.get(target, property, receiver);
    },
  });
}

describe('ContextCache when a store read never answers', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('through ContextManager: a retrieval aborted behind a hung computation does not wedge the next one', async () => {
    const { store } = await storyWithScenes(3);
    let hang = false;
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store: hangingWhile(store, () => hang), buildTimeoutMs: 500 });
    const manager = managerWith(store, cache);
    const state = await store.load('tale');
    await manager.getRelevantContext('tale', 'the lamp', { state }); // warm: the keyword side is filled
    await driver.deletePrefix('storyloom:'); // the entry expired (TTL, LRU)
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    hang = true;
    const controller = new AbortController();
    const first = manager.getRelevantContext('tale', 'the lamp', { state, signal: controller.signal });
    const firstFailed = expect(first).rejects.toThrow();
    await vi.advanceTimersByTimeAsync(100);
    controller.abort(); // what the engine's stepTimeoutMs does
    await firstFailed;
    hang = false; // the store answers again
    let answered = false;
    const retry = manager.getRelevantContext('tale', 'the lamp', { state }).then((bundle) => {
      answered = true;
      return bundle;
    });
    // The aborted retrieval was the only caller of the hung computation, so its abort dropped it: the next one
    // computes at once, without waiting out buildTimeoutMs.
    await vi.advanceTimersByTimeAsync(1);
    expect(answered).toBe(true);
    expect((await retry).cachedContext.recent_scenes).toHaveLength(3);
  });

  it('through the engine: one store read that never answered fails neither the retry nor later episodes', async () => {
    const { store } = await storyWithScenes(3);
    let armed = false;
    // Exactly one of the cache's store reads hangs; the store answers every other call.
    const cacheStore = hangingWhile(store, () => {
      if (!armed) return false;
      armed = false;
      return true;
    });
    const driver = createMemoryCacheDriver();
    const cache = new ContextCache({ driver, store: cacheStore, buildTimeoutMs: 100 });
    const engine = createStoryEngine({
      store,
      context: managerWith(store, cache),
      generator: createProceduralNarrator(),
      stepTimeoutMs: 1_000,
      retry: { maxRetries: 1, initialDelayMs: 10, maxDelayMs: 10 },
    });
    await engine.runEpisode('tale'); // finishes the fixture's steps and warms everything
    await driver.deletePrefix('storyloom:'); // the entry expired (TTL, LRU)
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    armed = true;
    const settled: Array<PromiseSettledResult<unknown>> = [];
    const run = () =>
      engine.runEpisode('tale').then(
        (result) => settled.push({ status: 'fulfilled', value: result }),
        (reason: unknown) => settled.push({ status: 'rejected', reason }),
      );
    // The context step's first attempt times out behind the hung read; its retry, past buildTimeoutMs, computes
    // afresh instead of joining it.
    // Time enough for both attempts of each episode to time out.
    void run();
    await vi.advanceTimersByTimeAsync(2_100);
    void run();
    await vi.advanceTimersByTimeAsync(2_100);
    expect(armed).toBe(false); // the hung read happened
    expect(settled.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled']);
    expect(settled.map((result) => (result.status === 'fulfilled' ? result.value : null))).toEqual([
      expect.objectContaining({ outcome: 'created' }),
      expect.objectContaining({ outcome: 'created' }),
    ]);
  });
});
