/**
 * A story at the thread cap: the reducer archives resolved threads to make room for new ones, and the context
 * manager's indexes then hold the live threads only, as a rebuild from the state would leave them.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { applyDelta, assertContinuity } from '../src/state/reducer.js';
import type { StateDeltaInput, StoryState } from '../src/state/schema.js';
import { makeNextScene, makeStoryState } from '../src/testing/fixtures.js';

const STORY = 'arc';
const DIMENSIONS = 64;

const open = (ids: string[]) =>
  ids.map((id) => ({ id, title: `Thread ${id}`, summary: `What ${id} is about.`, importance: 0.5 }));
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `t${from + i}`);

describe('ContextManager at the thread cap', () => {
  it('drops the records of the threads a scene archived, in both indexes, as a reindex would', async () => {
    const store = createMemoryStateStore();
    const vectors = createMemoryVectorIndex({ dimensions: DIMENSIONS });
    const keywords = createMemoryKeywordIndex();
    const manager = new ContextManager({
      store,
      vectors,
      keywords,
      embedder: createHashingEmbedder({ dimensions: DIMENSIONS }),
      recentScenes: 2,
    });
    let state: StoryState = await store.create(
      makeStoryState(STORY, { bible: { ...makeStoryState(STORY).bible, chapterLength: 50 } }),
    );
    const step = async (delta: StateDeltaInput) => {
      const scene = makeNextScene(state);
      const { state: next, warnings } = assertContinuity(applyDelta(state, delta, scene));
      const commit = await store.commitScene(STORY, {
        expectedVersion: state.version,
        scene,
        nextState: next,
        consumedInfluenceIds: [],
      });
      state = commit.state;
      await manager.indexScene(commit.scene, { state });
      return warnings;
    };
    // 500 threads, the first 100 of them resolved ("drift" of the fixture, then t0 .. t98).
    for (let from = 0; from < 499; from += 100)
      await step({ threadsOpened: open(range(from, Math.min(from + 100, 499))) });
    await step({ threadsResolved: ['drift', ...range(0, 99)].map((id) => ({ id, resolution: `${id} is settled.` })) });
    expect(state.plotThreads).toHaveLength(500);
    const before = await manager.stats(STORY);
    expect((await vectors.fetch(STORY, ['thread-drift', 'thread-t0'])).map((record) => record.id)).toEqual([
      'thread-drift',
      'thread-t0',
    ]);

    // Two new threads: "drift" and "t0", the earliest-opened resolved ones, leave the state and the indexes.
    const warnings = await step({ threadsOpened: open(['fresh-a', 'fresh-b']) });
    expect(warnings.map((issue) => issue.code)).toContain('THREADS_ARCHIVED');
    expect(state.plotThreads.map((thread) => thread.id)).not.toContain('drift');
    expect(await vectors.fetch(STORY, ['thread-drift', 'thread-t0', 'thread-t1'])).toHaveLength(1);
    const found = await keywords.query(STORY, {
      text: 'drift t0 settled',
      topK: 1_000,
      filter: { type: 'plotThread' },
    });
    expect(found.map((hit) => hit.id)).not.toContain('thread-drift');
    expect(found.map((hit) => hit.id)).not.toContain('thread-t0');
    const incremental = await manager.stats(STORY);
    expect(incremental.byType.plotThread).toBe(before.byType.plotThread);

    await manager.reindex(STORY);
    const rebuilt = await manager.stats(STORY);
    expect(rebuilt.byType.plotThread).toBe(state.plotThreads.length);
    expect(incremental.byType.plotThread).toBe(rebuilt.byType.plotThread);

    // A scene at the cap that opens no thread archives none: its index step reads no state (the one before it is
    // the largest snapshot of a long story).
    const { getStateAt } = store;
    let stateReads = 0;
    store.getStateAt = (...args) => {
      stateReads++;
      return getStateAt.apply(store, args);
    };
    await step({ threadsAdvanced: [{ id: 'fresh-a', summary: 'fresh-a moves on.' }] });
    expect(state.plotThreads).toHaveLength(500);
    expect(stateReads).toBe(0);
  });
});
