/**
 * A reader's getRelevantContext that lands while the same process's prune is under way (a long-lived process that
 * runs the schedule's episodes, with autoPrune or an operator's prune, and answers readers): no refill of the whole
 * keyword side for it, and the side ends as a new process's.
 */
import { describe, expect, it } from 'vitest';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import {
  durableMemoryVectors,
  NIGHT_WATCH_DIMENSIONS,
  nightWatchGenerator,
  processOver,
} from './fixtures/night-watch.js';

describe('ContextManager: its own prune and a concurrent call', () => {
  it("a call during this process's own prune does not refill the whole keyword side", async () => {
    const storyId = 'audit-prune-race';
    const clock = new ManualClock();
    const store = createMemoryStateStore({ clock });
    await store.create(makeStoryState(storyId, { bible: { ...makeStoryState().bible, chapterLength: 4 } }));
    const durable = durableMemoryVectors(NIGHT_WATCH_DIMENSIONS);
    // The prune's deletions (one request per summarized chapter on Pinecone) wait until the reader's call, made
    // right after the prune record is written, has finished: the call lands in the middle of the prune.
    let onPruneRecord: (() => void) | undefined;
    let readerDone: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      readerDone = resolve;
    });
    const vectors = new Proxy(durable, {
      get(target, property) {
        if (property === 'upsert') {
          return async (id: string, records: { id: string }[], options?: object) => {
            await target.upsert(id, records as never, options as never);
            if (records.some((record) => record.id === 'meta-pruned')) onPruneRecord?.();
          };
        }
        if (property === 'delete') {
          return async (...args: unknown[]) => {
            await gate;
            return (target.delete as (...a: unknown[]) => unknown)(...args);
          };
        }
        const value = Reflect.get(target, property);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as VectorIndex;
    // Counts the fill's full listings of the story (pages of 200 from the start, in no particular order).
    let fills = 0;
    const counting = new Proxy(store, {
      get(target, property) {
        if (property === 'listScenes') {
          return (id: string, options: Parameters<StoryStateStore['listScenes']>[1]) => {
            if (options && options.limit === 200 && !options.cursor && !options.order && !options.chapterId) fills++;
            return target.listScenes(id, options);
          };
        }
        const value = Reflect.get(target, property);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as StoryStateStore;
    const server = processOver(counting, vectors);
    const engine = createStoryEngine({ store, context: server.context, generator: nightWatchGenerator(), clock });
    for (let e = 0; e < 12; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    await server.context.getRelevantContext(storyId, 'the lamp');
    const fillsBefore = fills;

    let reader: Promise<unknown> | undefined;
    onPruneRecord = () => {
      onPruneRecord = undefined;
      reader = server.context.getRelevantContext(storyId, 'brass key').finally(readerDone);
    };
    const pruned = await server.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 });
    expect(pruned.deleted).toBeGreaterThan(0);
    expect(reader).toBeDefined();
    await reader;
    await server.context.getRelevantContext(storyId, 'the lamp');
    expect(fills - fillsBefore, "full refills of the keyword side caused by the process's own prune").toBe(0);

    // Whatever happened, the side must end as a new process's.
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the lamp');
    expect(await server.keywords.count(storyId)).toBe(await cold.keywords.count(storyId));
  });
});
