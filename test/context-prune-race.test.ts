/**
 * A reader's getRelevantContext that lands while the same process's prune is under way (a long-lived process that
 * runs the schedule's episodes, with autoPrune or an operator's prune, and answers readers): no refill of the whole
 * keyword side for it, and the side ends as a new process's.
 */
import { describe, expect, it } from 'vitest';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import {
  countingFills,
  nightWatchGenerator,
  nightWatchStory,
  processOver,
  withMembers,
} from './fixtures/night-watch.js';

describe('ContextManager: its own prune and a concurrent call', () => {
  it("a call during this process's own prune does not refill the whole keyword side", async () => {
    const storyId = 'audit-prune-race';
    const { clock, store, vectors: durable } = await nightWatchStory(storyId);
    // The prune's deletions (one request per summarized chapter on Pinecone) wait until the reader's call, made
    // right after the prune record is written, has finished: the call lands in the middle of the prune.
    let onPruneRecord: (() => void) | undefined;
    let readerDone: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      readerDone = resolve;
    });
    const vectors = withMembers(durable, {
      upsert: async (...args: Parameters<VectorIndex['upsert']>) => {
        await durable.upsert(...args);
        if (args[1].some((record) => record.id.startsWith('meta-pruned'))) onPruneRecord?.();
      },
      delete: async (...args: Parameters<VectorIndex['delete']>) => {
        await gate;
        return durable.delete(...args);
      },
    });
    const counting = countingFills(store);
    const server = processOver(counting.store, vectors);
    const engine = createStoryEngine({ store, context: server.context, generator: nightWatchGenerator(), clock });
    for (let e = 0; e < 12; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    await server.context.getRelevantContext(storyId, 'the lamp');
    const fillsBefore = counting.fills();

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
    expect(counting.fills() - fillsBefore, "full refills of the keyword side caused by the process's own prune").toBe(
      0,
    );

    // Whatever happened, the side must end as a new process's.
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the lamp');
    expect(await server.keywords.count(storyId)).toBe(await cold.keywords.count(storyId));
  });
});
