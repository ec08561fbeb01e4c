/**
 * The hybrid retriever and `ContextManager.getRelevantContext`'s retrieval surface at their edges: large k, names in
 * scripts without spaces or told apart by symbols, a slow store under an abort.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager, type ContextManagerOptions } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createHybridRetriever, findNamedEntities } from '../src/context/retrieval.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor } from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { commitNextScene, KEEPER_EVENTS, newKeepersStory } from './fixtures/keepers.js';

const STORY = 'story-1';

/** The keepers' story with `count` scenes (chapters of `chapterLength`), every scene indexed. */
async function keepers(count: number, chapterLength: number, overrides: Partial<ContextManagerOptions> = {}) {
  const { store, options, state: created } = await newKeepersStory(chapterLength, overrides);
  const manager = new ContextManager(options);
  let state = created;
  for (let i = 0; i < count; i++) {
    const event = KEEPER_EVENTS[i % KEEPER_EVENTS.length]!;
    const closes = (i + 1) % chapterLength === 0;
    ({ state } = await commitNextScene(
      store,
      state,
      { title: `Night ${i + 1}`, text: `${event} The sea kept its own counsel.`, summary: event, importance: 0.3 },
      closes ? { chapterIndex: state.chapterIndex + 1, chapterId: chapterIdFor(state.chapterIndex + 1) } : {},
      manager,
    ));
  }
  return { store, manager, state };
}

async function smallRetriever() {
  const embedder = createHashingEmbedder({ dimensions: 64 });
  const vectors = createMemoryVectorIndex({ dimensions: 64 });
  const keywords = createMemoryKeywordIndex();
  const texts = ['the silver key', 'a red stone', 'the harbour bell', 'silver key again'];
  const values = await embedder.embed(texts);
  const metadata = (i: number) => ({
    storyId: STORY,
    type: 'scene' as const,
    timestamp: 0,
    sourceId: `d${i}`,
    importance: 0.5,
    text: texts[i]!,
  });
  await vectors.upsert(
    STORY,
    texts.map((_, i) => ({ id: `d${i}`, values: values[i]!, metadata: metadata(i) })),
  );
  await keywords.upsert(
    STORY,
    texts.map((text, i) => ({ id: `d${i}`, text, metadata: metadata(i) })),
  );
  return createHybridRetriever({ vectors, keywords, embedder });
}

// ---------------------------------------------------------------------------------------------------------------
// The retriever and the exact stage
// ---------------------------------------------------------------------------------------------------------------

describe('hybrid retriever', () => {
  it('retrieve() answers every k it accepts: the pool is capped at what the indexes answer', async () => {
    const retriever = await smallRetriever();
    // k = 500 works; k = 501 makes the grouping pool 20·k = 10020, past the indexes' maxTopK (10000), and the
    // index's own validation error ("query.topK ... got 10020") escapes, although checkRequest promises 1..10000.
    await expect(retriever.retrieve(STORY, { query: 'silver key', k: 500 })).resolves.toBeDefined();
    const result = await retriever.retrieve(STORY, { query: 'silver key', k: 501 });
    expect(result.candidates.length).toBe(4);
  });

  it('retrieveGroups() answers a large k the same way', async () => {
    const retriever = await smallRetriever();
    await expect(retriever.retrieveGroups(STORY, { query: 'silver key', k: 3_000 })).resolves.toBeDefined();
  });
});

describe('findNamedEntities (the exact stage of getRelevantContext)', () => {
  it('finds Chinese and Japanese names in text without spaces', () => {
    const entities = [
      { id: 'li-ming', names: ['李明'] },
      { id: 'mira', names: ['ミラ'] },
    ];
    // With spaces around it the name is found ("Where is 李明?"), inside ordinary Chinese / Japanese text it is not:
    // the tokenizer reads the whole run of ideographs as one "word".
    expect(findNamedEntities('Where is 李明?', entities)).toEqual(['li-ming']);
    expect(findNamedEntities('李明去了哪里？', entities)).toEqual(['li-ming']);
    expect(findNamedEntities('ミラはどこへ行った？', entities)).toEqual(['mira']);
  });

  it('tells a name by its symbols: "C++" is not named by "Plan C"', () => {
    const entities = [{ id: 'cpp', names: ['C++'] }];
    expect(findNamedEntities('Plan C failed at dawn', entities)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// getRelevantContext and its AbortSignal
// ---------------------------------------------------------------------------------------------------------------

describe('ContextManager.getRelevantContext', () => {
  it('honours its AbortSignal while the state store is slow', async () => {
    const inner = createMemoryStateStore();
    await inner.create(makeStoryState('tale'));
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    // A store whose load is slow (a DynamoDB read stuck on the network): the caller's abort must still end the call.
    const store = new Proxy(inner, {
      get(target, property, receiver) {
        if (property === 'load') {
          return async (storyId: string) => {
            await gate;
            return target.load(storyId);
          };
        }
        const value = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as StoryStateStore;
    const manager = new ContextManager({
      store,
      vectors: createMemoryVectorIndex({ dimensions: 64 }),
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions: 64 }),
    });
    const controller = new AbortController();
    const call = manager.getRelevantContext('tale', 'Mira and the key', { signal: controller.signal });
    const outcome = call.then(
      () => 'resolved',
      (error: Error) => error.name,
    );
    setTimeout(() => controller.abort(), 20);
    const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('still waiting'), 500));
    const first = await Promise.race([outcome, timeout]);
    release();
    await outcome;
    expect(first).toBe('AbortedError');
  });
});

describe('ContextManager.getRelevantContext: what retrieval may bring back', () => {
  it('with summaryChapters 0, every chapter summary competes in retrieval, so a pruned chapter is still recalled', async () => {
    // No chapter summary in the prefix: each is older than the (empty) window and left to retrieval.
    const { manager } = await keepers(24, 4, { summaryChapters: 0, earlierScenes: 0 });
    const pruned = await manager.prune('tale', { minAgeScenes: 0, maxImportance: 1 });
    expect(pruned.deleted).toBeGreaterThan(0);
    const bundle = await manager.getRelevantContext('tale', 'the brass key hidden inside the lantern room wall');
    const kinds = bundle.similarScenes.map((scene) => [scene.kind, scene.sceneId]);
    // The key was found in chapter 0 (scene 1), whose scenes are pruned: its summary tells of it.
    expect(kinds).toContainEqual(['chapterSummary', chapterIdFor(0)]);
    // The synopsis is the prefix's, never a memory.
    expect(bundle.prompt.stable).toContain('Synopsis:');
    expect(kinds.map(([, id]) => id)).not.toContain('synopsis');
  });

  it('treats a query with no searchable word like an empty one, instead of retrieving noise at relevance 1', async () => {
    const { manager } = await keepers(24, 4, { earlierScenes: 0 });
    const empty = await manager.getRelevantContext('tale', '   ');
    expect(empty.similarScenes).toEqual([]);
    for (const query of ['the of and', '?!', '🌊🌊', '  ...  ']) {
      const bundle = await manager.getRelevantContext('tale', query);
      expect(
        bundle.similarScenes.map((scene) => [scene.sceneId, scene.signals.relevance]),
        query,
      ).toEqual([]);
    }
    // A word, or a name the exact stage knows, is something to search for.
    expect((await manager.getRelevantContext('tale', 'the lens')).similarScenes.length).toBeGreaterThan(0);
    expect((await manager.getRelevantContext('tale', 'Mira?')).similarScenes.length).toBeGreaterThan(0);
  });
});
