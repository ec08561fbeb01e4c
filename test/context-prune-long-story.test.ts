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
import type { StoryStateStore } from '../src/state/store.js';

/** A story of `episodes` offline episodes (chapters of 8), and the vector index's delete calls counted. */
async function longStory(episodes: number) {
  const storyId = 'long-watch';
  const store = createMemoryStateStore();
  await store.create(createStoryFromTemplate('lighthouse-keepers', storyId));
  const memory = createMemoryVectorIndex({ dimensions: 256 });
  const { context, vectors, deletes } = processOver(store, memory);
  const engine = createStoryEngine({ store, context, generator: createProceduralNarrator({ seed: 1 }) });
  for (let episode = 0; episode < episodes; episode++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
  return { storyId, store, memory, vectors, context, engine, deletes };
}

/**
 * What a process of its own sees of the story: a context manager over the same stored vectors through an index object
 * of its own (what a process knows, it keeps per index object) and a keyword index of its own, its deletes counted.
 */
function processOver(store: StoryStateStore, memory: VectorIndex) {
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
  return { context, vectors, deletes };
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

  it('in a new process, passes over the chapters a finished prune elsewhere dropped, unless the story was rebuilt since', async () => {
    const { storyId, store, memory, context, engine } = await longStory(64);
    const policy = { minAgeScenes: 8, maxImportance: 0.6 };
    expect((await context.prune(storyId, policy)).chapters).toHaveLength(7);
    for (let episode = 0; episode < 16; episode++) await engine.runEpisode(storyId);

    // A higher bound than any finished one is work in every old chapter.
    const higher = processOver(store, memory);
    const raised = await higher.context.prune(storyId, { ...policy, maxImportance: 0.7 });
    expect(raised.deleted).toBeGreaterThan(0);
    expect(higher.deletes.count).toBeGreaterThanOrEqual(9);

    // The next process visits only what no finished prune reached: nothing at the same bound; with no chapter newly
    // done, it does not write the done record again.
    const next = processOver(store, memory);
    let doneWrites = 0;
    const { upsert } = next.vectors;
    next.vectors.upsert = async (...args) => {
      if (args[1].some((record) => record.id === 'meta-prune-done')) doneWrites++;
      return upsert(...args);
    };
    const again = await next.context.prune(storyId, policy);
    expect(again).toEqual({ chapters: [], deleted: 0 });
    expect(next.deletes.count).toBe(0);
    expect(doneWrites, 'the done record already covers every chapter it reached').toBe(0);

    // A prune cut short finished nothing: the process after it visits every old chapter again.
    const cut = processOver(store, memory);
    const controller = new AbortController();
    const { delete: remove } = cut.vectors;
    cut.vectors.delete = async (...args) => {
      const removed = await remove(...args);
      controller.abort();
      return removed;
    };
    await expect(
      cut.context.prune(storyId, { ...policy, maxImportance: 0.9, signal: controller.signal }),
    ).rejects.toThrow();
    const after = processOver(store, memory);
    const finished = await after.context.prune(storyId, { ...policy, maxImportance: 0.9 });
    expect(finished.chapters.length, 'the chapters the cut prune did not reach').toBeGreaterThan(0);
    expect(after.deletes.count).toBeGreaterThanOrEqual(9);

    // A reindex writes a new fingerprint record: what was finished before it is not trusted after it.
    await after.context.reindex(storyId);
    const rebuilt = processOver(store, memory);
    await rebuilt.context.prune(storyId, { ...policy, maxImportance: 0.9 });
    expect(rebuilt.deletes.count).toBeGreaterThanOrEqual(9);
    const settled = processOver(store, memory);
    await settled.context.prune(storyId, { ...policy, maxImportance: 0.9 });
    expect(settled.deletes.count).toBe(0);
  });

  it('keeps what earlier prunes finished when a later one reaches further at a lower bound', async () => {
    const { storyId, store, memory, context, engine } = await longStory(64);
    const policy = { minAgeScenes: 8, maxImportance: 0.9 };
    expect((await context.prune(storyId, policy)).chapters).toHaveLength(7);
    for (let episode = 0; episode < 16; episode++) await engine.runEpisode(storyId);
    // Two more chapters are old enough: another process prunes them at a lower bound (the others are done).
    const lower = processOver(store, memory);
    const pruned = await lower.context.prune(storyId, { ...policy, maxImportance: 0.6 });
    expect(pruned.chapters).toEqual([chapterIdFor(7), chapterIdFor(8)]);
    // A prune at the first bound has work only in the two chapters the first prune did not reach.
    const next = processOver(store, memory);
    const again = await next.context.prune(storyId, policy);
    expect(again.chapters).toEqual([chapterIdFor(7), chapterIdFor(8)]);
    expect(next.deletes.count).toBeLessThanOrEqual(2);
  });

  it('records nothing as done when a deletion fails part way: the process after it finishes the chapters left', async () => {
    const { storyId, store, memory } = await longStory(64);
    const policy = { minAgeScenes: 8, maxImportance: 0.6 };
    const failing = processOver(store, memory);
    const { delete: remove } = failing.vectors;
    failing.vectors.delete = async (...args) => {
      if (failing.deletes.count > 2) throw new Error('delete refused');
      return remove(...args);
    };
    await expect(failing.context.prune(storyId, policy)).rejects.toThrow('delete refused');
    const after = processOver(store, memory);
    const finished = await after.context.prune(storyId, policy);
    expect(finished.chapters.length, 'the chapters the failed prune did not reach').toBeGreaterThan(0);
    expect(finished.deleted).toBeGreaterThan(0);
  });

  it('trusts no done record under a fingerprint record of an earlier version, which every rebuild of theirs writes alike', async () => {
    const { storyId, store, memory } = await longStory(64);
    // As an earlier version writes it: the same source and time at every rebuild.
    const [fingerprint] = await memory.fetch(storyId, ['meta-fingerprint']);
    await memory.upsert(storyId, [
      { ...fingerprint!, metadata: { ...fingerprint!.metadata, sourceId: 'fingerprint', timestamp: 0 } },
    ]);
    const policy = { minAgeScenes: 8, maxImportance: 0.6 };
    const first = processOver(store, memory);
    expect((await first.context.prune(storyId, policy)).deleted).toBeGreaterThan(0);
    expect(await memory.fetch(storyId, ['meta-prune-done']), 'no record under such a fingerprint').toEqual([]);
    // A record claiming every chapter under that fingerprint (written by a version that trusted it) is passed over.
    await memory.upsert(storyId, [
      {
        id: 'meta-prune-done',
        values: fingerprint!.values,
        metadata: {
          storyId,
          type: 'meta',
          timestamp: 0,
          sourceId: 'prune-done',
          importance: 0,
          text: JSON.stringify({ since: 'fingerprint@0', marks: [{ before: 1_000, maxImportance: 1 }] }),
        },
      },
    ]);
    const next = processOver(store, memory);
    await next.context.prune(storyId, policy);
    expect(next.deletes.count).toBeGreaterThanOrEqual(7);
  });

  it('finishes a prune whose done record cannot be written: the record only spares later prunes work', async () => {
    const { storyId, store, memory } = await longStory(64);
    const failing = processOver(store, memory);
    const { upsert } = failing.vectors;
    failing.vectors.upsert = async (...args) => {
      if (args[1].some((record) => record.id === 'meta-prune-done')) throw new Error('write refused');
      return upsert(...args);
    };
    const pruned = await failing.context.prune(storyId, { minAgeScenes: 8, maxImportance: 0.6 });
    expect(pruned.deleted).toBeGreaterThan(0);
    expect(await memory.fetch(storyId, ['meta-prune-done'])).toEqual([]);
  });
});
