/**
 * Memory upkeep on an eventually consistent vector index (Pinecone: "there can be a slight delay before new or
 * changed records are visible"): reads served by a replica that applies each write only after a few more requests.
 * A rebuild must finish there, and leave its fingerprint.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { commitScenes } from './fixtures/keepers.js';

const DIMENSIONS = 64;

/**
 * `inner` behind a replica `lag` requests behind: a write is acknowledged at once and applied once `lag` more
 * requests (reads or writes) have been made, in order; `catchUp` applies the rest.
 */
function lagging(inner: VectorIndex, lag: number) {
  const pending: Array<{ at: number; apply: () => Promise<unknown> }> = [];
  let requests = 0;
  const settle = async (all = false) => {
    while (pending.length > 0 && (all || requests - pending[0]!.at >= lag)) await pending.shift()!.apply();
  };
  const request = async () => {
    requests++;
    await settle();
  };
  const later = async (apply: () => Promise<unknown>) => {
    await request();
    pending.push({ at: requests, apply });
  };
  const index: VectorIndex = {
    ...inner,
    capabilities: { ...inner.capabilities, readAfterWrite: false },
    upsert: (storyId, records) => later(() => inner.upsert(storyId, structuredClone(records))),
    delete: async (storyId, deletion) => {
      await later(() => inner.delete(storyId, deletion));
      return 'ids' in deletion && deletion.ids ? deletion.ids.length : 0;
    },
    deleteStory: (storyId) => later(() => inner.deleteStory(storyId)),
    fetch: async (storyId, ids, options) => {
      await request();
      return inner.fetch(storyId, ids, options);
    },
    query: async (storyId, query) => {
      await request();
      return inner.query(storyId, query);
    },
    stats: async (storyId, options) => {
      await request();
      return inner.stats(storyId, options);
    },
  };
  return { index, catchUp: () => settle(true) };
}

describe('memory upkeep on an eventually consistent vector index', () => {
  it.each([1, 4, 12])(
    'reindex finishes and leaves its fingerprint; the next process does not rebuild again (lag %i)',
    async (lag) => {
      const store = createMemoryStateStore();
      await commitScenes(store, await store.create(makeStoryState('tale')), 6);
      const inner = createMemoryVectorIndex({ dimensions: DIMENSIONS });
      const replica = lagging(inner, lag);
      const embedder = createHashingEmbedder({ dimensions: DIMENSIONS });
      const options = { store, vectors: replica.index, embedder };
      const manager = new ContextManager({ ...options, keywords: createMemoryKeywordIndex() });
      const result = await manager.reindex('tale');
      expect(result.scenes).toBe(6);
      await replica.catchUp();
      const [fingerprint] = await inner.fetch('tale', ['meta-fingerprint']);
      expect(fingerprint?.metadata.type).toBe('meta');
      // A new process finds the story built for its embedder: its first call rebuilds nothing.
      const phases: string[] = [];
      const next = new ContextManager({ ...options, keywords: createMemoryKeywordIndex() });
      const original = next.reindex.bind(next);
      next.reindex = (storyId, given) => {
        phases.push('reindex');
        return original(storyId, given);
      };
      const bundle = await next.getRelevantContext('tale', 'the lamp');
      expect(bundle.similarScenes.length).toBeGreaterThan(0);
      expect(phases).toEqual([]);
    },
  );
});
