/**
 * Prunes of this process against its own keyword side: a prune whose record write lands but reports failure, one
 * aborted midway, two at once, one that starts while a fill is under way. Each must leave the side as a new
 * process fills it, and every bound recorded.
 */
import { describe, expect, it } from 'vitest';
import type { KeywordIndex } from '../src/context/keyword-index.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import type { StoryStateStore } from '../src/state/store.js';
import { nightWatchGenerator, nightWatchStory, processOver, withMembers } from './fixtures/night-watch.js';

async function written(storyId: string, episodes = 12) {
  const { clock, store, vectors: durable } = await nightWatchStory(storyId);
  const lambda = processOver(store, durable);
  const engine = createStoryEngine({ store, context: lambda.context, generator: nightWatchGenerator(), clock });
  for (let e = 0; e < episodes; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
  return { store, durable };
}

async function sameAsNewProcess(storyId: string, store: StoryStateStore, vectors: VectorIndex, keywords: KeywordIndex) {
  const cold = processOver(store, vectors);
  await cold.context.getRelevantContext(storyId, 'the lamp');
  const ids = async (k: KeywordIndex) =>
    (await k.query(storyId, { text: 'Night Mira Tobin brass key sea calm Salt Market lamp room', topK: 1000 }))
      .map((m) => m.id)
      .sort();
  expect(await ids(keywords), 'keyword side vs a new process').toEqual(await ids(cold.keywords));
}

describe('ContextManager: prunes of this process and its own keyword side', () => {
  it('a prune whose record write lands but reports failure leaves the next call consistent with a new process', async () => {
    const storyId = 'prune-write-throws';
    const { store, durable } = await written(storyId);
    let failNext = false;
    const vectors = withMembers(durable, {
      upsert: async (id: string, records: { id: string }[], options?: object) => {
        await durable.upsert(id, records as never, options as never);
        // A timeout / connection reset after the backend applied the write (or the caller's signal fired then).
        if (failNext && records.some((r) => r.id.startsWith('meta-pruned'))) {
          failNext = false;
          throw new Error('socket hang up');
        }
      },
    }) as VectorIndex;
    const server = processOver(store, vectors);
    await server.context.getRelevantContext(storyId, 'the lamp');
    failNext = true;
    await expect(server.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 })).rejects.toThrow();
    await server.context.getRelevantContext(storyId, 'the lamp');
    await sameAsNewProcess(storyId, store, vectors, server.keywords);
  });

  it('a prune that aborts midway leaves the next call refilling', async () => {
    const storyId = 'prune-abort';
    const { store, durable } = await written(storyId);
    const controller = new AbortController();
    let deletes = 0;
    const vectors = withMembers(durable, {
      delete: async (...args: unknown[]) => {
        const out = await (durable.delete as (...a: unknown[]) => unknown)(...args);
        if (++deletes === 1) controller.abort();
        return out;
      },
    }) as VectorIndex;
    const server = processOver(store, vectors);
    await server.context.getRelevantContext(storyId, 'the lamp');
    await expect(
      server.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5, signal: controller.signal }),
    ).rejects.toThrow();
    await server.context.getRelevantContext(storyId, 'the lamp');
    await sameAsNewProcess(storyId, store, vectors, server.keywords);
  });

  it('two concurrent prunes of one story in one process: side consistent, and both bounds recorded', async () => {
    const storyId = 'prune-two';
    const { store, durable } = await written(storyId, 16);
    const server = processOver(store, durable);
    await server.context.getRelevantContext(storyId, 'the lamp');
    await Promise.all([
      server.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 }),
      server.context.prune(storyId, { minAgeScenes: 12, maxImportance: 0.95 }),
    ]);
    await server.context.getRelevantContext(storyId, 'the lamp');
    await sameAsNewProcess(storyId, store, durable, server.keywords);
    // Each prune keeps its mark in a record of its own (beside the merged record earlier versions read).
    const probe = new Float32Array((await durable.stats(storyId)).dimensions);
    probe[0] = 1;
    const records = await durable.query(storyId, {
      vector: probe,
      topK: 100,
      filter: { type: 'meta', sourceId: 'pruned' },
    });
    const marks = records
      .filter((record) => record.id !== 'meta-pruned')
      .flatMap((record) => JSON.parse(record.metadata.text!) as unknown[]);
    expect(marks, 'prune records after two concurrent prunes').toHaveLength(2);
  });

  it("a fill under way when this process's own prune starts ends consistent with a new process", async () => {
    const storyId = 'prune-during-fill';
    const { store, durable } = await written(storyId);
    let fillListed: (() => void) | undefined;
    let keywordDeleted: () => void = () => {};
    const deletedGate = new Promise<void>((r) => (keywordDeleted = r));
    let readerDone: () => void = () => {};
    const readerGate = new Promise<void>((r) => (readerDone = r));
    const gatedStore = withMembers(store, {
      listScenes: async (id: string, options: Parameters<StoryStateStore['listScenes']>[1]) => {
        if (fillListed && options?.limit === 200 && !options.cursor && !options.order && !options.chapterId) {
          const f = fillListed;
          fillListed = undefined;
          f();
          await deletedGate;
        }
        return store.listScenes(id, options);
      },
    }) as StoryStateStore;
    const inner = createMemoryKeywordIndex();
    const keywords = withMembers(inner, {
      delete: async (...args: unknown[]) => {
        const out = await (inner.delete as (...a: unknown[]) => unknown)(...args);
        keywordDeleted();
        await readerGate;
        return out;
      },
    }) as KeywordIndex;
    const server = processOver(gatedStore, durable, {}, keywords);
    let pruning: Promise<unknown> | undefined;
    fillListed = () => {
      pruning = server.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 });
    };
    await server.context.getRelevantContext(storyId, 'the lamp').finally(readerDone);
    expect(pruning).toBeDefined();
    await pruning;
    await server.context.getRelevantContext(storyId, 'the lamp');
    await sameAsNewProcess(storyId, store, durable, keywords);
  });
});
