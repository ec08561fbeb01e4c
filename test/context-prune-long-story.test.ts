/**
 * Prune over a long story. Pruned history lives on in its chapter summary: the stable prefix shows the newest
 * chapters' summaries as far as its share of the budget goes, and whatever it has no room for must stay reachable
 * through retrieval, or a pruned chapter is neither in the prompt nor findable. And a prune (run at every chapter
 * close with `autoPrune`) must not cost more with every chapter the story has.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor } from '../src/state/schema.js';

/** A story of `episodes` offline episodes (chapters of 8), and the vector index's delete calls counted. */
async function longStory(episodes: number) {
  const storyId = 'long-watch';
  const store = createMemoryStateStore();
  await store.create(createStoryFromTemplate('lighthouse-keepers', storyId));
  const memory = createMemoryVectorIndex({ dimensions: 256 });
  const deletes = { count: 0 };
  const vectors: VectorIndex = {
    ...memory,
    upsert: memory.upsert.bind(memory),
    query: memory.query.bind(memory),
    fetch: memory.fetch.bind(memory),
    stats: memory.stats.bind(memory),
    deleteStory: memory.deleteStory.bind(memory),
    close: memory.close.bind(memory),
    delete: (...args) => {
      deletes.count++;
      return memory.delete(...args);
    },
  };
  const context = new ContextManager({
    store,
    vectors,
    keywords: createMemoryKeywordIndex(),
    embedder: createHashingEmbedder({ dimensions: 256 }),
  });
  const engine = createStoryEngine({ store, context, generator: createProceduralNarrator({ seed: 1 }) });
  for (let episode = 0; episode < episodes; episode++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
  return { storyId, vectors, context, engine, deletes };
}

describe('a chapter summary the stable prefix has no room for', () => {
  it('is retrieved when asked about, so the pruned scenes it covers are still recalled', async () => {
    const { storyId, vectors, context } = await longStory(64);
    expect((await context.prune(storyId, { minAgeScenes: 16, maxImportance: 0.6 })).deleted).toBeGreaterThan(0);

    const { trace } = await context.getRelevantContext(storyId, 'the lamp');
    const left = trace.omitted
      .filter((item) => item.section === '# The story so far' && item.id.startsWith('summary:'))
      .map((item) => item.id.slice('summary:'.length));
    expect(left.length, 'the prefix leaves some summaries of its window out').toBeGreaterThan(0);

    for (const chapterId of left) {
      const [record] = await vectors.fetch(storyId, [`summary-${chapterId}`]);
      expect(record?.metadata.text, `the summary of ${chapterId}`).toBeTruthy();
      const bundle = await context.getRelevantContext(storyId, record!.metadata.text!);
      const found = bundle.similarScenes.filter((scene) => scene.kind === 'chapterSummary');
      expect(
        found.map((scene) => scene.chapterId),
        `asking with ${chapterId}'s own summary finds it`,
      ).toContain(chapterId);
    }
  });
});

describe('prune in a long story', () => {
  it('passes over the chapters this process has pruned already, with the same or a higher bound', async () => {
    const { storyId, context, engine, deletes } = await longStory(64);
    const policy = { minAgeScenes: 8, maxImportance: 0.6 };
    const first = await context.prune(storyId, policy);
    expect(first.deleted).toBeGreaterThan(0);
    const firstDeletes = deletes.count;
    expect(firstDeletes).toBeGreaterThanOrEqual(6);

    // Two more chapters close; the next prune visits those only.
    for (let episode = 0; episode < 16; episode++) await engine.runEpisode(storyId);
    deletes.count = 0;
    const second = await context.prune(storyId, policy);
    // Exactly the two new chapters (an empty prune would pass over the old ones too), with scenes to drop.
    expect(first.chapters).toEqual(Array.from({ length: 7 }, (_, chapter) => chapterIdFor(chapter)));
    expect(second.chapters).toEqual([chapterIdFor(7), chapterIdFor(8)]);
    expect(second.deleted).toBeGreaterThan(0);
    expect(deletes.count).toBeLessThanOrEqual(2);

    // A higher bound is a new prune of every old chapter.
    deletes.count = 0;
    await context.prune(storyId, { ...policy, maxImportance: 0.8 });
    expect(deletes.count).toBeGreaterThanOrEqual(firstDeletes);
  });
});
