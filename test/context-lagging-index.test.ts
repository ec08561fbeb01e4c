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
import { createPineconeIndex } from '../src/context/pinecone.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { startPineconeStandIn } from '../src/testing/pinecone-server.js';
import { commitNextScene, commitScenes } from './fixtures/keepers.js';
import {
  countingFills,
  nightWatchGenerator,
  nightWatchStory,
  processOver,
  withMembers,
} from './fixtures/night-watch.js';

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
      // As Pinecone: a deletion by filter does not say how many it deleted.
      return 'ids' in deletion && deletion.ids ? deletion.ids.length : -1;
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

/**
 * `manager`, counting its rebuilds: the automatic one goes through `reindex` too (see `ContextManager.reindex`), so
 * wrapping it sees every rebuild.
 */
function countingRebuilds(manager: ContextManager): ContextManager & { rebuilds(): number } {
  let rebuilds = 0;
  const original = manager.reindex.bind(manager);
  manager.reindex = (storyId, given) => {
    rebuilds++;
    return original(storyId, given);
  };
  return Object.assign(manager, { rebuilds: () => rebuilds });
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
      const next = countingRebuilds(new ContextManager({ ...options, keywords: createMemoryKeywordIndex() }));
      const bundle = await next.getRelevantContext('tale', 'the lamp');
      expect(bundle.similarScenes.length).toBeGreaterThan(0);
      expect(next.rebuilds()).toBe(0);
    },
  );
});

describe('memory upkeep on the Pinecone stand-in with writes seen late (visibilityLag)', () => {
  it('the stand-in shows a write to reads only after as many more requests', async () => {
    const standIn = await startPineconeStandIn({ dimension: 4, visibilityLag: 2 });
    try {
      const index = createPineconeIndex({ host: standIn.url, apiKey: 'local', dimensions: 4 });
      const values = Float32Array.from([1, 0, 0, 0]);
      await index.upsert('s', [
        { id: 'a', values, metadata: { storyId: 's', type: 'scene', sourceId: 'a', timestamp: 0, text: 'A.' } },
      ]);
      expect(await index.fetch('s', ['a'])).toEqual([]);
      expect((await index.fetch('s', ['a'])).map((record) => record.id)).toEqual(['a']);
      await index.delete('s', { ids: ['a'] });
      expect((await index.fetch('s', ['a'])).map((record) => record.id)).toEqual(['a']);
      standIn.catchUp();
      expect(await index.fetch('s', ['a'])).toEqual([]);
    } finally {
      await standIn.close();
    }
  });

  it.each([1, 3, 8])('indexes, reindexes and retrieves, a new process rebuilding nothing (lag %i)', async (lag) => {
    const standIn = await startPineconeStandIn({ dimension: DIMENSIONS, visibilityLag: lag });
    try {
      const store = createMemoryStateStore();
      const embedder = createHashingEmbedder({ dimensions: DIMENSIONS });
      const vectors = createPineconeIndex({ host: standIn.url, apiKey: 'local', dimensions: DIMENSIONS });
      const manager = new ContextManager({ store, vectors, embedder, keywords: createMemoryKeywordIndex() });
      let state = await store.create(makeStoryState('tale'));
      for (let scene = 0; scene < 8; scene++) ({ state } = await commitNextScene(store, state, {}, {}, manager));
      expect((await manager.reindex('tale')).scenes).toBe(8);
      standIn.catchUp();
      const next = countingRebuilds(
        new ContextManager({ store, vectors, embedder, keywords: createMemoryKeywordIndex() }),
      );
      const bundle = await next.getRelevantContext('tale', 'the lamp');
      expect(bundle.similarScenes.length).toBeGreaterThan(0);
      expect(next.rebuilds()).toBe(0);
    } finally {
      await standIn.close();
    }
  });
});

/** A clock whose waits end at once: the re-reads of a late index are counted in requests here, not in time. */
const instant = { now: () => Date.now(), sleep: async () => {} };

/** A reindex of `storyId` cut short once its scenes are being written (an embedder blip, a Lambda timeout). */
async function failedReindex(manager: ContextManager, storyId: string) {
  const controller = new AbortController();
  const outcome = await manager
    .reindex(storyId, {
      signal: controller.signal,
      onProgress: (progress) => progress.phase === 'scenes' && controller.abort(),
    })
    .then(
      () => 'finished',
      (error: Error) => error.name,
    );
  expect(outcome).toBe('AbortedError');
}

describe('rebuilds after another on an index that shows writes late', () => {
  it.each([1, 2, 4, 8, 12])(
    'a second reindex right after the first, and one after a failed one, finish (lag %i)',
    async (lag) => {
      const store = createMemoryStateStore();
      await commitScenes(store, await store.create(makeStoryState('tale')), 6);
      const inner = createMemoryVectorIndex({ dimensions: DIMENSIONS });
      const replica = lagging(inner, lag);
      const embedder = createHashingEmbedder({ dimensions: DIMENSIONS });
      const manager = new ContextManager({
        store,
        vectors: replica.index,
        embedder,
        keywords: createMemoryKeywordIndex(),
        clock: instant,
      });
      const outcomes: string[] = [];
      const outcome = (work: Promise<unknown>) =>
        work.then(
          () => 'ok',
          (error: Error) => error.name,
        );
      outcomes.push(await outcome(manager.reindex('tale')));
      outcomes.push(await outcome(manager.reindex('tale')));
      await failedReindex(manager, 'tale');
      outcomes.push(await outcome(manager.reindex('tale')));
      await failedReindex(manager, 'tale');
      // The next retrieval rebuilds the story itself.
      outcomes.push(await outcome(manager.getRelevantContext('tale', 'the lamp')));
      outcomes.push(await outcome(manager.getRelevantContext('tale', 'the lamp')));
      expect(outcomes).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
      await replica.catchUp();
      const [fingerprint] = await inner.fetch('tale', ['meta-fingerprint']);
      expect(fingerprint?.metadata.type).toBe('meta');
    },
  );

  it.each([3, 8])(
    'on the Pinecone stand-in: after a failed rebuild, reindex, retrieval and a new process work (lag %i)',
    async (lag) => {
      const standIn = await startPineconeStandIn({ dimension: DIMENSIONS, visibilityLag: lag });
      try {
        const store = createMemoryStateStore();
        const embedder = createHashingEmbedder({ dimensions: DIMENSIONS });
        const vectors = createPineconeIndex({ host: standIn.url, apiKey: 'local', dimensions: DIMENSIONS });
        const options = { store, vectors, embedder, clock: instant };
        const manager = new ContextManager({ ...options, keywords: createMemoryKeywordIndex() });
        let state = await store.create(makeStoryState('tale'));
        for (let scene = 0; scene < 8; scene++) ({ state } = await commitNextScene(store, state, {}, {}, manager));
        standIn.catchUp();
        await failedReindex(manager, 'tale');
        standIn.catchUp();
        expect((await manager.reindex('tale')).scenes).toBe(8);
        expect((await manager.getRelevantContext('tale', 'the lamp')).similarScenes.length).toBeGreaterThan(0);
        standIn.catchUp();
        const fresh = new ContextManager({ ...options, keywords: createMemoryKeywordIndex() });
        expect((await fresh.getRelevantContext('tale', 'the lamp')).similarScenes.length).toBeGreaterThan(0);
      } finally {
        await standIn.close();
      }
    },
  );
});

describe('a keyword side of its own beside vectors that show writes late', () => {
  it.each([1, 6, 12])(
    'takes its own prune, read back late, for no prune made elsewhere: no refill (lag %i)',
    async (lag) => {
      const storyId = 'lag-prune';
      const { clock, store, vectors: durable } = await nightWatchStory(storyId);
      const replica = lagging(durable, lag);
      const counting = countingFills(store);
      const server = processOver(counting.store, replica.index, { clock: instant });
      const engine = createStoryEngine({ store, context: server.context, generator: nightWatchGenerator(), clock });
      for (let episode = 0; episode < 12; episode++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
      await replica.catchUp();
      await server.context.getRelevantContext(storyId, 'the lamp');
      const before = counting.fills();
      const pruned = await server.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 });
      expect(pruned.deleted).toBeGreaterThan(0);
      for (let call = 0; call < 6; call++)
        await server.context.getRelevantContext(storyId, 'The sea was calm', { k: 12 });
      expect(counting.fills() - before).toBe(0);
      // And it holds what a new process holds.
      await replica.catchUp();
      const warm = await server.context.getRelevantContext(storyId, 'The sea was calm', { k: 12 });
      const cold = await processOver(store, replica.index).context.getRelevantContext(storyId, 'The sea was calm', {
        k: 12,
      });
      const shown = (bundle: typeof warm) => bundle.similarScenes.map((scene) => `${scene.kind}:${scene.index}`);
      expect(shown(warm)).toEqual(shown(cold));
    },
  );
});

describe('a new process right after a rebuild, on an index that shows writes late', () => {
  it.each([1, 6, 12])('finds the rebuild finished instead of rebuilding the story again (lag %i)', async (lag) => {
    const store = createMemoryStateStore();
    await commitScenes(store, await store.create(makeStoryState('tale')), 6);
    const inner = createMemoryVectorIndex({ dimensions: DIMENSIONS });
    const replica = lagging(inner, lag);
    const embedder = createHashingEmbedder({ dimensions: DIMENSIONS });
    const options = { store, vectors: replica.index, embedder, clock: instant };
    await new ContextManager({ ...options, keywords: createMemoryKeywordIndex() }).reindex('tale');
    // Straight after, with the rebuild's last writes not shown yet.
    let embedded = 0;
    const counted = {
      ...embedder,
      embed: (texts: string[], given?: Parameters<typeof embedder.embed>[1]) => {
        embedded += texts.length;
        return embedder.embed(texts, given);
      },
    };
    const next = countingRebuilds(
      new ContextManager({ ...options, embedder: counted, keywords: createMemoryKeywordIndex() }),
    );
    expect((await next.getRelevantContext('tale', 'the lamp')).similarScenes.length).toBeGreaterThan(0);
    expect(next.rebuilds()).toBe(0);
    // The query alone was embedded.
    expect(embedded).toBe(1);
  });
});

describe('counts that trail the index (Pinecone: "vector count may lag behind updates")', () => {
  it('reads a story with no records with one query, not a listing of every type', async () => {
    const store = createMemoryStateStore();
    await store.create(makeStoryState('empty'));
    const inner = createMemoryVectorIndex({ dimensions: DIMENSIONS });
    let queries = 0;
    const vectors: VectorIndex = {
      ...inner,
      capabilities: { ...inner.capabilities, readAfterWrite: false },
      query: (storyId, query) => {
        queries++;
        return inner.query(storyId, query);
      },
    };
    const manager = new ContextManager({
      store,
      vectors,
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions: DIMENSIONS }),
      autoReindex: false,
    });
    const stats = await manager.stats('empty');
    expect(stats.total).toBe(0);
    expect(Object.values(stats.byType).every((n) => n === 0)).toBe(true);
    expect(queries).toBe(1);
  });

  /** `inner`, read late in its counts alone: `stats` says `count()`, whatever the index holds. */
  function staleCount(inner: VectorIndex, count: () => number): VectorIndex {
    return {
      ...inner,
      capabilities: { ...inner.capabilities, readAfterWrite: false },
      stats: async (storyId, options) => ({ ...(await inner.stats(storyId, options)), count: count() }),
    };
  }

  /** Twelve nights of `storyId` on an index that counts right, and its stats there. */
  async function twelveNights(storyId: string) {
    const { clock, store, vectors } = await nightWatchStory(storyId);
    const honest = processOver(store, vectors, { clock: instant });
    const engine = createStoryEngine({ store, context: honest.context, generator: nightWatchGenerator(), clock });
    for (let episode = 0; episode < 12; episode++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    return { store, vectors, honest, truth: await honest.context.stats(storyId) };
  }

  /**
   * Prunes `storyId` through `late` and checks that it says how many scene memories it dropped, as counted through
   * `honest`, an index that counts right.
   */
  async function pruneCounted(storyId: string, honest: ContextManager, late: ContextManager) {
    const scenes = async () => (await honest.stats(storyId)).byType.scene!;
    const before = await scenes();
    const pruned = await late.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 });
    const removed = before - (await scenes());
    expect(removed).toBeGreaterThan(0);
    expect(pruned.deleted).toBe(removed);
    return pruned;
  }

  it('lists by what a query and a response allow, not by the count, for stats and for a prune', async () => {
    const storyId = 'stale-count';
    const { store, vectors, honest, truth } = await twelveNights(storyId);
    const listed = Object.values(truth.byType).reduce((total, n) => total + n, 0);
    expect(truth.total).toBe(listed);

    // A count of 8 while the index holds more: each type was listed 8 at most, the scenes made up from the total.
    let stale = 8;
    const late = processOver(
      store,
      staleCount(vectors, () => stale),
      { clock: instant },
    );
    const seen = await late.context.stats(storyId);
    expect(seen.byType).toEqual(truth.byType);
    expect(seen.total).toBe(listed);

    // A count of 0 (a namespace whose writes the count has not caught up with): the prune deleted, and says so.
    stale = 0;
    await pruneCounted(storyId, honest.context, late.context);
  });

  it('a count of 0 hides nothing from stats, nor from a prune on an index whose deletes by filter count nothing', async () => {
    const storyId = 'zero-count';
    const { store, vectors, honest, truth } = await twelveNights(storyId);
    // As Pinecone: the count trails the writes (here it still says 0), and a delete by filter answers -1, so the
    // manager lists what matches to say how many it deleted.
    const pineconeLike: VectorIndex = {
      ...staleCount(vectors, () => 0),
      delete: async (id, deletion) => {
        const deleted = await vectors.delete(id, deletion);
        return 'filter' in deletion && deletion.filter ? -1 : deleted;
      },
    };
    const late = processOver(store, pineconeLike, { clock: instant });
    const seen = await late.context.stats(storyId);
    expect(seen.byType).toEqual(truth.byType);
    expect(seen.total).toBe(truth.total);
    const pruned = await pruneCounted(storyId, honest.context, late.context);
    expect(pruned.chapters.length).toBeGreaterThan(0);
  });
});

describe('prunes in new processes on an index that shows writes late', () => {
  /** The ids of a story's scene memories, read directly. */
  const sceneIds = async (vectors: VectorIndex, storyId: string) =>
    (
      await vectors.query(storyId, {
        vector: Float32Array.from({ length: DIMENSIONS }, (_, i) => (i === 0 ? 1 : 0)),
        topK: 10_000,
        filter: { type: 'scene' },
      })
    )
      .map((match) => match.id)
      .sort();

  it.each([1, 4, 12])(
    'leave the memories the same prunes leave where writes show at once, done records and all (lag %i)',
    async (lag) => {
      const storyId = 'lag-done';
      const run = async (late: boolean) => {
        const { clock, store, vectors: durable } = await nightWatchStory(storyId);
        const replica = late ? lagging(durable, lag) : { index: durable, catchUp: async () => {} };
        const writer = processOver(store, replica.index, { clock: instant });
        const engine = createStoryEngine({ store, context: writer.context, generator: nightWatchGenerator(), clock });
        for (let episode = 0; episode < 16; episode++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
        await replica.catchUp();
        const before = await sceneIds(durable, storyId);
        // Each prune in a process of its own (an index object of its own), as daily Lambdas would run them; the
        // night watch's scenes weigh 0.2 or 0.9, so the higher bound drops more.
        for (const maxImportance of [0.5, 0.5, 0.95, 0.95, 0.5]) {
          const process = processOver(store, withMembers(replica.index, {}), { clock: instant });
          await process.context.prune(storyId, { minAgeScenes: 4, maxImportance });
        }
        await replica.catchUp();
        const after = await sceneIds(durable, storyId);
        // Exactly what the prune records drop: a rebuild, which applies them, leaves the same.
        await processOver(store, durable, { clock: instant }).context.reindex(storyId);
        return { before, after, rebuilt: await sceneIds(durable, storyId) };
      };
      const prompt = await run(false);
      const late = await run(true);
      expect(prompt.after.length).toBeLessThan(prompt.before.length);
      expect(prompt.rebuilt).toEqual(prompt.after);
      expect(late.rebuilt).toEqual(late.after);
      expect(late.before).toEqual(prompt.before);
      expect(late.after).toEqual(prompt.after);
    },
  );
});
