/**
 * Pruned history lives on in its chapter summary. The stable prefix shows the newest chapters' summaries as far as
 * its share of the budget goes; whatever it has no room for must stay reachable through retrieval, or a pruned
 * chapter is neither in the prompt nor findable.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createMemoryStateStore } from '../src/state/memory.js';

describe('a chapter summary the stable prefix has no room for', () => {
  it('is retrieved when asked about, so the pruned scenes it covers are still recalled', async () => {
    const storyId = 'long-watch';
    const store = createMemoryStateStore();
    await store.create(createStoryFromTemplate('lighthouse-keepers', storyId));
    const vectors = createMemoryVectorIndex({ dimensions: 256 });
    const context = new ContextManager({
      store,
      vectors,
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions: 256 }),
    });
    const engine = createStoryEngine({ store, context, generator: createProceduralNarrator({ seed: 1 }) });
    for (let episode = 0; episode < 64; episode++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
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
