/**
 * What indexing and memory upkeep check before they write: an embedder's and a summarizer's answers, a rebuild cut
 * short or made by another process, long scenes without breaks, stored text, and the vector-space statistics.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager, type ContextManagerOptions } from '../src/context/context-manager.js';
import type { Embedder } from '../src/context/embedder.js';
import { createExtractiveSummarizer } from '../src/context/extractive-summarizer.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import type { Summarizer } from '../src/context/summarizer.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { StoryloomError } from '../src/core/errors.js';
import { chapterIdFor, type Scene, type StoryState } from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeNextScene, makeNextState } from '../src/testing/fixtures.js';
import { KEEPER_DIMENSIONS as DIMENSIONS, KEEPER_EVENTS as EVENTS, newKeepersStory } from './fixtures/keepers.js';

interface Story {
  store: StoryStateStore;
  options: ContextManagerOptions;
  manager: ContextManager;
  state: StoryState;
  scenes: Scene[];
}

async function newStory(overrides: Partial<ContextManagerOptions> = {}, chapterLength = 4): Promise<Story> {
  const { store, options, state } = await newKeepersStory(chapterLength, { recentScenes: 3, ...overrides });
  return { store, options, manager: new ContextManager(options), state, scenes: [] };
}

/** Commits the next scene; indexes it with `manager` unless `index` is false. */
async function commit(
  story: Story,
  scene: Partial<Scene> = {},
  { index = true, manager = story.manager, chapterLength = 4 } = {},
): Promise<Scene> {
  const { state } = story;
  const i = state.sceneCount;
  const made = makeNextScene(state, {
    title: `Night ${i + 1}`,
    text: `${EVENTS[i % EVENTS.length]} The sea kept its own counsel.`,
    summary: EVENTS[i % EVENTS.length],
    importance: 0.2,
    ...scene,
  });
  const closes = (i + 1) % chapterLength === 0;
  const next = makeNextState(state, made, {
    ...(closes ? { chapterIndex: state.chapterIndex + 1, chapterId: chapterIdFor(state.chapterIndex + 1) } : {}),
  });
  story.state = (
    await story.store.commitScene('tale', {
      expectedVersion: state.version,
      scene: made,
      nextState: next,
      consumedInfluenceIds: [],
    })
  ).state;
  story.scenes.push(made);
  if (index) await manager.indexScene(made, { state: story.state });
  return made;
}

async function build(count: number, overrides: Partial<ContextManagerOptions> = {}): Promise<Story> {
  const story = await newStory(overrides);
  for (let i = 0; i < count; i++) await commit(story);
  return story;
}

function wrapEmbedder(base: Embedder, embed: Embedder['embed'], extra: Partial<Embedder> = {}): Embedder {
  return { ...base, embed, ...extra };
}

function summarizerReturning(value: unknown): Summarizer {
  return { specificationVersion: 'v1', provider: 'junk', summarize: async () => value as string };
}

/** The error a promise rejects with, or `undefined` when it resolves. */
async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

async function sceneChunkIds(story: Story, scene: Scene): Promise<string[]> {
  const ids = Array.from({ length: 200 }, (_, chunk) => `scene-${scene.id}-c${chunk}`);
  return (await story.options.vectors.fetch('tale', ids)).map((record) => record.id);
}

describe('embedder output is checked before it is written', () => {
  it("refuses an embedder that returns one vector too many, writing nothing (every unit would get its neighbour's vector)", async () => {
    const base = createHashingEmbedder({ dimensions: DIMENSIONS });
    const story = await build(2);
    // One extra vector in front: every unit would get the vector of the unit before it.
    const manager = new ContextManager({
      ...story.options,
      embedder: wrapEmbedder(base, async (texts, options) => {
        const vectors = await base.embed(texts, options);
        return [vectors[vectors.length - 1]!, ...vectors];
      }),
    });
    const scene = await commit(story, {}, { index: false });
    const error = await failureOf(manager.indexScene(scene, { state: story.state }));
    expect(StoryloomError.isInstance(error)).toBe(true);
    expect(await sceneChunkIds(story, scene)).toEqual([]);
  });

  it('refuses an embedder that returns one vector too few with a typed error', async () => {
    const base = createHashingEmbedder({ dimensions: DIMENSIONS });
    const story = await build(2);
    const manager = new ContextManager({
      ...story.options,
      embedder: wrapEmbedder(base, async (texts, options) => (await base.embed(texts, options)).slice(1)),
    });
    const scene = await commit(story, {}, { index: false });
    const error = await failureOf(manager.indexScene(scene, { state: story.state }));
    expect(error).toBeInstanceOf(Error);
    expect(StoryloomError.isInstance(error), String(error)).toBe(true);
  });

  it("tries a new embedder before an automatic rebuild clears anything: one that returns NaN leaves the story's memory as it was", async () => {
    const story = await build(8);
    const before = await story.options.vectors.stats('tale');
    const keywordsBefore = await story.options.keywords.count('tale');
    const base = createHashingEmbedder({ dimensions: DIMENSIONS, seed: 5 });
    const broken = new ContextManager({
      ...story.options,
      embedder: wrapEmbedder(base, async (texts, options) =>
        (await base.embed(texts, options)).map((vector) => vector.map(() => Number.NaN)),
      ),
    });
    const error = await failureOf(broken.getRelevantContext('tale', 'the brass key'));
    expect(StoryloomError.isInstance(error)).toBe(true);
    // The refused embedder should leave the story's memory as it was, not empty.
    expect((await story.options.vectors.stats('tale')).count).toBe(before.count);
    expect(await story.options.keywords.count('tale')).toBe(keywordsBefore);
  });
});

describe('summarizer output is checked before it is written', () => {
  it('refuses a summary that is not text with a typed error', async () => {
    for (const junk of [42, undefined, { text: 'a summary' }]) {
      const story = await build(3);
      const manager = new ContextManager({ ...story.options, summarizer: summarizerReturning(junk) });
      const scene = await commit(story, {}, { index: false }); // closes chapter 1
      const error = await failureOf(manager.indexScene(scene, { state: story.state }));
      expect(error, `summary ${JSON.stringify(junk)}`).toBeDefined();
      expect(StoryloomError.isInstance(error), `summary ${JSON.stringify(junk)}: ${String(error)}`).toBe(true);
    }
  });

  it('stores no empty chapter summary, so prune keeps the scenes nothing else tells of', async () => {
    const story = await newStory({ summarizer: summarizerReturning('') });
    for (let i = 0; i < 8; i++) {
      // Whether indexing the chapter-closing scene fails or not, the scenes are committed.
      await failureOf(commit(story));
    }
    const [summary] = await story.options.vectors.fetch('tale', ['summary-chapter-0001']);
    // Either no summary at all, or one that says something.
    if (summary) expect(summary.metadata.text.trim()).not.toBe('');
    const result = await story.manager.prune('tale', { minAgeScenes: 0, maxImportance: 1 });
    // Nothing represents chapter 1 at lower detail, so none of its scenes may go.
    expect(result.chapters).not.toContain('chapter-0001');
  });

  it('writes an over-long summary to both indexes (clipped) or to neither, never to one', async () => {
    const story = await build(3);
    const manager = new ContextManager({ ...story.options, summarizer: summarizerReturning('tide '.repeat(50_000)) });
    const scene = await commit(story, {}, { index: false }); // closes chapter 1
    const error = await failureOf(manager.indexScene(scene, { state: story.state }));
    const inVectors = (await story.options.vectors.fetch('tale', ['summary-chapter-0001'])).length > 0;
    const inKeywords =
      (await story.options.keywords.query('tale', { text: 'tide', topK: 10, filter: { type: 'summary' } })).length > 0;
    // Written to both indexes (clipped) or to neither (refused): never one side only.
    expect({ failed: error !== undefined, inVectors, inKeywords }).toMatchObject({ inVectors: inKeywords });
  });
});

describe('a reindex cut short', () => {
  it("is finished by the same manager's next call, not served half-built", async () => {
    const story = await build(8);
    const before = await story.manager.stats('tale');
    const controller = new AbortController();
    const aborted = await failureOf(
      story.manager.reindex('tale', {
        signal: controller.signal,
        onProgress: (progress) => {
          if (progress.phase === 'scenes') controller.abort();
        },
      }),
    );
    expect(aborted).toMatchObject({ code: 'ABORTED' });
    // The next calls of the same manager (a warm Lambda container) should find the rebuild unfinished and finish it.
    await story.manager.getRelevantContext('tale', 'the brass key in the lantern room');
    const after = await story.manager.stats('tale');
    expect(after.fingerprint).toBe(before.fingerprint);
    expect(after.byType).toEqual(before.byType);
  });
});

describe('indexing and a rebuild stay within what one call takes', () => {
  it('never send the embedder more texts than its maxBatchSize, or the vector index more records than its maxUpsertBatch', async () => {
    // The hashing embedder refuses a call of more texts than its maxBatchSize.
    const embedder = createHashingEmbedder({ dimensions: DIMENSIONS, maxBatchSize: 2 });
    const memory = createMemoryVectorIndex({ dimensions: DIMENSIONS });
    const upserts: number[] = [];
    const vectors: VectorIndex = {
      ...memory,
      capabilities: { ...memory.capabilities, maxUpsertBatch: 3 },
      upsert: (storyId, records, options) => {
        upserts.push(records.length);
        return memory.upsert(storyId, records, options);
      },
    };
    // The first scene brings in the whole cast and every thread; chapters close and are summarised.
    const story = await build(6, { embedder, vectors });
    expect(await story.manager.reindex('tale')).toMatchObject({ scenes: 6 });
    expect((await story.manager.stats('tale')).byType.scene).toBe(6);
    expect(upserts.length).toBeGreaterThan(0);
    expect(Math.max(...upserts)).toBeLessThanOrEqual(3);
  });
});

describe('a rebuild asks the embedder once per text', () => {
  it('reuses the vectors of its trial call for the first units it writes, and writes the vectors a fresh embedding gives', async () => {
    const base = createHashingEmbedder({ dimensions: DIMENSIONS });
    const asked = new Map<string, number>();
    // A small batch, so the trial call covers some scenes and the rest are embedded as they are written.
    const counting = wrapEmbedder(
      base,
      async (texts, options) => {
        for (const text of texts) asked.set(text, (asked.get(text) ?? 0) + 1);
        return base.embed(texts, options);
      },
      { maxBatchSize: 4 },
    );
    const story = await build(6, { embedder: counting });
    const [probe] = await base.embed(['the lighthouse'], { inputType: 'query' });
    const ids = (await story.options.vectors.query('tale', { vector: probe!, topK: 10_000 })).map((match) => match.id);
    expect(ids.length).toBeGreaterThan(6);
    const before = await story.options.vectors.fetch('tale', ids);
    asked.clear();
    const result = await story.manager.reindex('tale');
    expect(result.scenes).toBe(6);
    const repeated = [...asked].filter(([, count]) => count > 1);
    expect(repeated).toEqual([]);
    // Every record is back with the vector it had: the reused vectors belong to the units they were made for.
    const after = await story.options.vectors.fetch('tale', ids);
    expect(after.map((record) => record.id)).toEqual(ids);
    for (const [index, record] of after.entries()) {
      expect(Array.from(record.values), record.id).toEqual(Array.from(before[index]!.values));
    }
  });

  it('reuses them when the trial call reaches past the first page of scenes', async () => {
    const base = createHashingEmbedder({ dimensions: DIMENSIONS });
    const asked = new Map<string, number>();
    const counting = wrapEmbedder(
      base,
      async (texts, options) => {
        for (const text of texts) asked.set(text, (asked.get(text) ?? 0) + 1);
        return base.embed(texts, options);
      },
      { maxBatchSize: 512 },
    );
    const story = await newStory({ embedder: counting });
    // The store lists 200 scenes a page: a trial of up to 511 units covers these 250 scenes over two pages.
    for (let i = 0; i < 250; i++) {
      await commit(
        story,
        { text: `${EVENTS[i % EVENTS.length]} The sea kept its counsel on night ${i + 1}.` },
        { index: false },
      );
    }
    const result = await story.manager.reindex('tale');
    expect(result.scenes).toBe(250);
    expect([...asked].filter(([, count]) => count > 1)).toEqual([]);
    expect((await story.manager.stats('tale')).byType.scene).toBe(250);
  });
});

describe('a rebuild keeps the chapter summaries it finds', () => {
  function countingSummarizer() {
    const extractive = createExtractiveSummarizer();
    const counter = { calls: 0 };
    const summarizer: Summarizer = {
      ...extractive,
      summarize: (texts, options) => {
        counter.calls++;
        return extractive.summarize(texts, options);
      },
    };
    return { summarizer, counter };
  }
  const summaryIds = ['summary-synopsis', summaryIdOf(0), summaryIdOf(1)];
  function summaryIdOf(chapter: number) {
    return `summary-${chapterIdFor(chapter)}`;
  }

  it('writes the stored summaries and synopsis again without asking the summarizer, as they were', async () => {
    const { summarizer, counter } = countingSummarizer();
    const story = await build(10, { summarizer }); // two chapters closed
    expect(counter.calls).toBe(4); // each chapter and the synopsis after it
    const before = await story.options.vectors.fetch('tale', summaryIds);
    expect(before.map((record) => record.id)).toEqual(summaryIds);
    const statsBefore = await story.manager.stats('tale');
    counter.calls = 0;
    await story.manager.reindex('tale');
    expect(counter.calls, 'summarizer calls of the rebuild').toBe(0);
    expect(await story.manager.stats('tale')).toEqual(statsBefore);
    const after = await story.options.vectors.fetch('tale', summaryIds);
    for (const [index, record] of after.entries()) {
      expect(record.metadata, record.id).toEqual(before[index]!.metadata);
      expect(Array.from(record.values), record.id).toEqual(Array.from(before[index]!.values));
    }
    const keywordSummaries = await story.options.keywords.query('tale', {
      text: 'keeper lamp sea',
      topK: 10,
      filter: { type: 'summary' },
    });
    expect(keywordSummaries.map((hit) => hit.id).sort()).toEqual([...summaryIds].sort());
  });

  it('summarizes a chapter whose summary is missing, and makes the synopsis again', async () => {
    const { summarizer, counter } = countingSummarizer();
    const story = await build(10, { summarizer });
    const before = await story.options.vectors.fetch('tale', [summaryIdOf(1)]);
    await story.options.vectors.delete('tale', { ids: [summaryIdOf(1)] });
    counter.calls = 0;
    await story.manager.reindex('tale');
    expect(counter.calls).toBe(2);
    const [summary] = await story.options.vectors.fetch('tale', [summaryIdOf(1)]);
    expect(summary?.metadata).toEqual(before[0]!.metadata);
  });

  it('summarizes again a chapter whose stored summary was made before its last scene', async () => {
    const { summarizer, counter } = countingSummarizer();
    const story = await build(3, { summarizer });
    // Chapter 1 summarised early, at scene 2; scene 3 then closes it, and its index step never runs.
    await story.manager.summarizeChapter('tale', chapterIdFor(0));
    const [early] = await story.options.vectors.fetch('tale', [summaryIdOf(0)]);
    expect(early?.metadata.text).not.toContain('logbook');
    await commit(story, {}, { index: false });
    counter.calls = 0;
    await story.manager.reindex('tale');
    expect(counter.calls).toBe(2); // the chapter and the synopsis
    // The summary prune trusts to tell of the whole chapter tells of its last scene too.
    const [summary] = await story.options.vectors.fetch('tale', [summaryIdOf(0)]);
    expect(summary?.metadata).toMatchObject({ sceneIndex: 3, text: expect.stringContaining(EVENTS[3]!) });
  });
});

describe('chunking of long scenes', () => {
  it('splits a long scene of verse lines without sentence punctuation into chunks', async () => {
    const story = await build(1);
    const text = Array.from({ length: 500 }, (_, i) => `the tide comes in and the lamp turns round ${i}`).join('\n');
    expect(text.split(/\s+/).length).toBeGreaterThan(4_000); // chunkWords is 300 by default
    const scene = await commit(story, { text });
    expect((await sceneChunkIds(story, scene)).length).toBeGreaterThanOrEqual(10);
  });

  it('splits a long Chinese scene (no spaces) into chunks', async () => {
    const story = await build(1);
    const text = '灯塔的光芒照亮了整片海面，守塔人在风中等待着船只归来。'.repeat(1_000); // 27,000 characters
    const scene = await commit(story, { text });
    expect((await sceneChunkIds(story, scene)).length).toBeGreaterThan(1);
  });

  it('indexes a scene of the maximum length without a single break', async () => {
    const story = await build(1);
    const text = '灯塔的光芒照亮了整片海面，守塔人在风中等待着船只归来。'.repeat(8_000).slice(0, 200_000);
    expect(text.length).toBe(200_000); // LIMITS.sceneText: a scene the schema accepts
    const scene = await commit(story, { text }, { index: false });
    const error = await failureOf(story.manager.indexScene(scene, { state: story.state }));
    const vectorsLeft = await sceneChunkIds(story, scene);
    expect(error, `${String(error)}; scene vectors written anyway: ${vectorsLeft.join(', ')}`).toBeUndefined();
  });
});

describe('stored text', () => {
  it('never cuts stored text between the halves of a surrogate pair', async () => {
    const story = await newStory();
    const title = 'Night 1';
    const summary = 'The sea rose.';
    // The record's text is `${title}\n${summary}\n${chunk}`, cut at 2,000 UTF-16 units: put an emoji across the cut.
    const before = 1_999 - `${title}\n${summary}\n`.length;
    const text = `${'a'.repeat(before)}🌊 and the waves came in.`;
    const scene = await commit(story, { title, summary, text });
    const [record] = await story.options.vectors.fetch('tale', [`scene-${scene.id}-c0`]);
    const stored = record!.metadata.text;
    expect(stored.length).toBeLessThanOrEqual(2_000);
    // A lone high surrogate at the end: not well-formed Unicode (U+D800..U+DBFF with nothing after it).
    expect(/[\uD800-\uDBFF]$/.test(stored)).toBe(false);
  });
});

describe('stats of the vector space', () => {
  it("leaves the meta records' fixed vectors out of the norm distribution", async () => {
    const base = createHashingEmbedder({ dimensions: DIMENSIONS });
    // An embedder whose vectors all have norm 3 (not normalised, as many are).
    const embedder = wrapEmbedder(base, async (texts, options) =>
      (await base.embed(texts, options)).map((vector) => vector.map((value) => value * 3)),
    );
    const story = await build(4, { embedder });
    const stats = await story.manager.stats('tale');
    expect(stats.norms.min).toBeGreaterThan(2.99);
    expect(stats.norms.mean).toBeGreaterThan(2.99);
  });

  it('measures the near-duplicate rate on a sample spread over the story, not the scenes nearest one axis', async () => {
    const story = await newStory();
    // 60 distinct scenes, then a generator stuck in a loop writes the same scene 60 times: half are duplicates.
    for (let i = 0; i < 120; i++) {
      const distinct = i < 60;
      await commit(story, {
        title: distinct ? `Distinct ${i}` : 'Same again',
        text: distinct
          ? `Entry ${i}: ${Array.from({ length: 12 }, (_, j) => `w${i}x${j}`).join(' ')}.`
          : 'The lamp turned and the sea was grey and nothing happened at all tonight.',
        summary: distinct ? `Summary ${i}.` : 'Nothing happened.',
      });
    }
    expect((await story.manager.stats('tale', { sample: 1_000 })).nearDuplicateRate).toBe(0.5);
    for (const sample of [20, 50]) {
      const rate = (await story.manager.stats('tale', { sample })).nearDuplicateRate;
      expect(rate, `sample ${sample}`).toBeGreaterThan(0.2);
      expect(rate, `sample ${sample}`).toBeLessThan(0.8);
    }
  });
});

describe('fingerprint across processes', () => {
  it('refuses to write old-model vectors after another process rebuilt the story for a new embedder', async () => {
    const story = await build(4);
    const oldEmbedder = createHashingEmbedder({ dimensions: DIMENSIONS });
    const newEmbedder = createHashingEmbedder({ dimensions: DIMENSIONS, seed: 7 });
    const embeddedByA: string[] = [];
    // Process A (an old container during a deploy) has verified the index; process B (the new code) rebuilds it.
    const processA = new ContextManager({
      ...story.options,
      embedder: wrapEmbedder(oldEmbedder, (texts, options) => {
        embeddedByA.push(...texts);
        return oldEmbedder.embed(texts, options);
      }),
    });
    await processA.getRelevantContext('tale', 'the lamp');
    const processB = new ContextManager({ ...story.options, embedder: newEmbedder });
    await processB.getRelevantContext('tale', 'the lamp');
    const fingerprint = (await processB.stats('tale')).fingerprint;
    expect(fingerprint).toContain(newEmbedder.modelId);
    // A indexes the next scene.
    const scene = await commit(story, { text: 'A whale surfaced beside the jetty at midnight.' }, { index: false });
    const error = await failureOf(processA.indexScene(scene, { state: story.state }));
    const [record] = await story.options.vectors.fetch('tale', [`scene-${scene.id}-c0`]);
    const text = embeddedByA.find((candidate) => candidate.includes('whale'));
    const [oldVector] = text ? await oldEmbedder.embed([text]) : [];
    const fromOldModel =
      record !== undefined && oldVector?.every((value, i) => Math.abs(value - record.values[i]!) < 1e-6) === true;
    // The index still claims to hold the new model's vectors...
    expect((await processB.stats('tale')).fingerprint).toBe(fingerprint);
    // ...so A must refuse (its embedder no longer matches the index) rather than mix in an old-model vector.
    expect(error).toMatchObject({ code: 'CONFLICT' });
    expect(fromOldModel, 'an old-model vector sits under the new fingerprint').toBe(false);
    // Nor does A rebuild the story back for its own embedder: two deployments would take turns rebuilding it.
    await processA.getRelevantContext('tale', 'the whale');
    expect((await processB.stats('tale')).fingerprint).toBe(fingerprint);
  });

  it('with autoReindex off, a process of another embedder is refused instead of rebuilding, until reindex is run', async () => {
    const story = await build(6);
    const before = await story.manager.stats('tale');
    const other = createHashingEmbedder({ dimensions: DIMENSIONS, seed: 7 });
    // A cold process of the other code during a deploy: its first call finds the story built for another embedder.
    const cold = new ContextManager({ ...story.options, embedder: other, autoReindex: false });
    for (const call of [
      () => cold.getRelevantContext('tale', 'the brass key'),
      () => cold.indexScene(story.scenes.at(-1)!, { state: story.state }),
    ]) {
      const error = await failureOf(call());
      expect(error).toMatchObject({ code: 'CONFLICT', isRetryable: false });
      expect(String(error)).toContain('autoReindex is off');
    }
    // Nothing was rebuilt: the story still answers the embedder it was built for.
    expect(await story.manager.stats('tale')).toEqual(before);
    // A deliberate reindex rebuilds it, and the process then serves it.
    await cold.reindex('tale');
    expect((await cold.stats('tale')).fingerprint).toContain(other.modelId);
    expect((await cold.getRelevantContext('tale', 'the brass key')).similarScenes.length).toBeGreaterThan(0);
    // An option that is not a boolean is refused rather than read as on.
    expect(() => new ContextManager({ ...story.options, autoReindex: 'no' as unknown as boolean })).toThrow(
      /autoReindex must be true or false/,
    );
  });

  it('with autoReindex off, indexes a new story from its first scene: an index still empty has nothing to rebuild', async () => {
    const story = await build(0, { autoReindex: false });
    for (let i = 0; i < 3; i++) await commit(story);
    expect((await story.manager.stats('tale')).byType.scene).toBe(3);
  });
});
