/**
 * The hybrid retriever and `ContextManager.getRelevantContext`'s retrieval surface at their edges: large k, names in
 * scripts without spaces or told apart by symbols, a slow store under an abort.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createHybridRetriever, findNamedEntities } from '../src/context/retrieval.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeStoryState } from '../src/testing/fixtures.js';

const STORY = 'story-1';

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
