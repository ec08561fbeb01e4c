/**
 * The context manager over the real Pinecone client talking to the local stand-in, against the same story over the
 * memory index: retrieval, prompt, prune, stats, reindex and the meta records must not depend on the backend.
 */
import { Pinecone } from '@pinecone-database/pinecone';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import type { Embedder } from '../src/context/embedder.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createPineconeIndex } from '../src/context/pinecone.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor } from '../src/state/schema.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { type PineconeStandIn, startPineconeStandIn } from '../src/testing/pinecone-server.js';
import { nightWatchGenerator, withMembers } from './fixtures/night-watch.js';

const DIM = 64;
let standIn: PineconeStandIn;
beforeAll(async () => {
  standIn = await startPineconeStandIn({ dimension: DIM });
});
afterAll(() => standIn.close());

async function build(storyId: string, vectors: VectorIndex, episodes = 16) {
  const clock = new ManualClock();
  const store = createMemoryStateStore({ clock });
  await store.create(makeStoryState(storyId, { bible: { ...makeStoryState().bible, chapterLength: 4 } }));
  const keywords = createMemoryKeywordIndex();
  const embedder = createHashingEmbedder({ dimensions: DIM });
  const context = new ContextManager({ store, vectors, keywords, embedder, recentScenes: 2, summaryChapters: 1 });
  const engine = createStoryEngine({ store, context, generator: nightWatchGenerator(), clock });
  for (let e = 0; e < episodes; e++) {
    const result = await engine.runEpisode(storyId);
    expect(result.complete).toBe(true);
  }
  return { store, context, vectors, keywords, engine };
}

function pinecone() {
  const index = new Pinecone({ apiKey: 'local-key', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
  return createPineconeIndex({ index, dimensions: DIM, retry: { initialDelayMs: 1, maxDelayMs: 5 } });
}

const strip = (scenes: Array<{ sceneId: string; kind: string; score: number }>) =>
  scenes.map((s) => `${s.kind}:${s.sceneId}:${s.score.toFixed(4)}`);

describe('ContextManager over Pinecone (the local stand-in) and over the memory index, end to end', () => {
  it('the same story gives the same similarScenes', async () => {
    const memory = await build('pc-same', createMemoryVectorIndex({ dimensions: DIM }));
    const remote = await build('pc-same', pinecone());
    for (const query of ['Mira at Salt Market', 'brass key', 'Tobin Gull Rock', 'the Drowned Archive']) {
      const a = await memory.context.getRelevantContext('pc-same', query, { k: 5 });
      const b = await remote.context.getRelevantContext('pc-same', query, { k: 5 });
      expect(strip(b.similarScenes)).toEqual(strip(a.similarScenes));
      expect(b.prompt.stable).toEqual(a.prompt.stable);
      expect(b.prompt.dynamic).toEqual(a.prompt.dynamic);
    }
  });

  it('a new process over Pinecone with the in-process keyword index fills the keyword side, and embeds nothing', async () => {
    // The Lambda layout: vectors that outlive the process, a keyword index that does not. The fingerprint matches,
    // so nothing is rebuilt; the keyword side must still come back, or retrieval runs on vectors alone.
    const warm = await build('pc-cold', pinecone());
    await warm.context.prune('pc-cold', { minAgeScenes: 4, maxImportance: 0.5 });
    const hashing = createHashingEmbedder({ dimensions: DIM });
    const documentsEmbedded: string[] = [];
    const embedder: Embedder = {
      ...hashing,
      embed: (texts, options) => {
        if (options?.inputType !== 'query') documentsEmbedded.push(...texts);
        return hashing.embed(texts, options);
      },
    };
    const keywords = createMemoryKeywordIndex();
    const cold = new ContextManager({
      store: warm.store,
      vectors: pinecone(),
      keywords,
      embedder,
      recentScenes: 2,
      summaryChapters: 1,
    });
    for (const query of [
      'Mira at Salt Market',
      'brass key',
      'Tobin Gull Rock',
      'Chapter ending',
      'the Drowned Archive',
    ]) {
      const a = await warm.context.getRelevantContext('pc-cold', query, { k: 5 });
      const b = await cold.getRelevantContext('pc-cold', query, { k: 5 });
      expect(strip(b.similarScenes)).toEqual(strip(a.similarScenes));
      expect(b.prompt.dynamic).toEqual(a.prompt.dynamic);
      // The keyword sides hold the same documents: every match and BM25 score agrees, pruned scenes included.
      const words = `${query} Night sea calm key alpha beta gamma delta`;
      const lexicalA = await warm.keywords.query('pc-cold', { text: words, topK: 1_000 });
      const lexicalB = await keywords.query('pc-cold', { text: words, topK: 1_000 });
      expect(lexicalB.map((m) => [m.id, m.score.toFixed(6), m.metadata])).toEqual(
        lexicalA.map((m) => [m.id, m.score.toFixed(6), m.metadata]),
      );
    }
    expect(await keywords.count('pc-cold')).toBe(await warm.keywords.count('pc-cold'));
    expect(documentsEmbedded).toEqual([]);
  });

  it('a long-lived process keeps its own keyword side up with scenes, summaries and prunes other processes write', async () => {
    // The episode Lambda writes the story; a reader-facing server over the same store and Pinecone index, with an
    // in-process keyword index, answers in between. Its keyword side must match a new process's at every point.
    const lambda = await build('pc-keep', pinecone(), 8);
    const embedder = createHashingEmbedder({ dimensions: DIM });
    const open = () => {
      const keywords = createMemoryKeywordIndex();
      const options = { store: lambda.store, vectors: pinecone(), keywords, embedder, recentScenes: 2 };
      return { keywords, context: new ContextManager({ ...options, summaryChapters: 1 }) };
    };
    const server = open();
    const words = 'Night Mira Tobin Salt Market Drowned Archive Gull Rock lamp room north pier brass key sea calm';
    const agree = async (label: string) => {
      const cold = open();
      for (const query of ['Mira at Salt Market', 'brass key', 'Chapter ending', 'the north pier']) {
        const a = await cold.context.getRelevantContext('pc-keep', query, { k: 5 });
        const b = await server.context.getRelevantContext('pc-keep', query, { k: 5 });
        expect(strip(b.similarScenes), label).toEqual(strip(a.similarScenes));
      }
      const lexical = async (keywords: typeof server.keywords) =>
        (await keywords.query('pc-keep', { text: words, topK: 1_000 })).map((m) => [
          m.id,
          m.score.toFixed(6),
          m.metadata,
        ]);
      expect(await lexical(server.keywords), label).toEqual(await lexical(cold.keywords));
    };
    await agree('after the fill');
    // Six more episodes, one of which closes a chapter (its summary and the synopsis come with its index step).
    for (let episode = 0; episode < 6; episode++)
      expect((await lambda.engine.runEpisode('pc-keep')).complete).toBe(true);
    await agree('after six more episodes');
    // A prune elsewhere: what it dropped leaves this side too.
    expect((await lambda.context.prune('pc-keep', { minAgeScenes: 4, maxImportance: 0.5 })).deleted).toBeGreaterThan(0);
    expect((await lambda.engine.runEpisode('pc-keep')).complete).toBe(true);
    await agree('after a prune and an episode');
    // The server looks between the commit of a chapter's last scene and the index step that writes its summary.
    let state = await lambda.store.load('pc-keep');
    while ((state.sceneCount + 1) % 4 !== 0) {
      expect((await lambda.engine.runEpisode('pc-keep')).complete).toBe(true);
      state = await lambda.store.load('pc-keep');
    }
    const scene = makeNextScene(state, { summary: 'The keepers close the chapter at the north pier.' });
    const next = makeNextState(state, scene, {
      chapterIndex: state.chapterIndex + 1,
      chapterId: chapterIdFor(state.chapterIndex + 1),
    });
    state = (
      await lambda.store.commitScene('pc-keep', {
        expectedVersion: state.version,
        scene,
        nextState: next,
        consumedInfluenceIds: [],
      })
    ).state;
    await server.context.getRelevantContext('pc-keep', 'the north pier');
    await lambda.context.indexScene(scene, { state });
    await agree('after the summary it waited for');
  });

  it('a keeping-up cut short is undone: the next call fills the keyword side again and agrees with a new process', async () => {
    const lambda = await build('pc-keep-fail', pinecone(), 8);
    const embedder = createHashingEmbedder({ dimensions: DIM });
    const fresh = createMemoryKeywordIndex();
    // Armed, the second write from then on fails: the first has gone in, so the side is half done.
    let armed = 0;
    const keywords = withMembers(fresh, {
      upsert: (...args: Parameters<typeof fresh.upsert>) => {
        if (armed > 0 && ++armed === 3) {
          armed = 0;
          return Promise.reject(new Error('keyword outage'));
        }
        return fresh.upsert(...args);
      },
    });
    const options = { store: lambda.store, embedder, recentScenes: 2, summaryChapters: 1 };
    const server = new ContextManager({ ...options, vectors: pinecone(), keywords });
    await server.getRelevantContext('pc-keep-fail', 'the lamp');
    for (let episode = 0; episode < 3; episode++) {
      expect((await lambda.engine.runEpisode('pc-keep-fail')).complete).toBe(true);
    }
    // A prune elsewhere: the server's next call empties its side and fills it again, and that fill fails half-way.
    expect(
      (await lambda.context.prune('pc-keep-fail', { minAgeScenes: 4, maxImportance: 0.5 })).deleted,
    ).toBeGreaterThan(0);
    expect((await lambda.engine.runEpisode('pc-keep-fail')).complete).toBe(true);
    armed = 1;
    await expect(server.getRelevantContext('pc-keep-fail', 'brass key')).rejects.toThrow('keyword outage');
    const cold = createMemoryKeywordIndex();
    const other = new ContextManager({ ...options, vectors: pinecone(), keywords: cold });
    for (const query of ['brass key', 'Mira at Salt Market', 'the north pier']) {
      const a = await other.getRelevantContext('pc-keep-fail', query, { k: 5 });
      const b = await server.getRelevantContext('pc-keep-fail', query, { k: 5 });
      expect(strip(b.similarScenes)).toEqual(strip(a.similarScenes));
    }
    const words = 'Night Mira Tobin Salt Market Drowned Archive Gull Rock lamp room north pier brass key sea calm';
    const lexical = async (index: typeof fresh) =>
      (await index.query('pc-keep-fail', { text: words, topK: 1_000 })).map((m) => [m.id, m.score.toFixed(6)]);
    expect(await lexical(fresh)).toEqual(await lexical(cold));
  });

  it('prune reports what it dropped through Pinecone as through the memory index', async () => {
    // Pinecone does not say how many records a delete by filter removed: the manager asks first what matches.
    const memory = await build('pc-prune', createMemoryVectorIndex({ dimensions: DIM }));
    const remote = await build('pc-prune', pinecone());
    const a = await memory.context.prune('pc-prune', { minAgeScenes: 4, maxImportance: 0.5 });
    const b = await remote.context.prune('pc-prune', { minAgeScenes: 4, maxImportance: 0.5 });
    expect(a.deleted).toBeGreaterThan(0);
    expect(b).toEqual(a);
  });

  it('stats, reindex and meta records agree after a prune', async () => {
    const memory = await build('pc-stats', createMemoryVectorIndex({ dimensions: DIM }));
    const remote = await build('pc-stats', pinecone());
    await memory.context.prune('pc-stats', { minAgeScenes: 4, maxImportance: 0.5 });
    await remote.context.prune('pc-stats', { minAgeScenes: 4, maxImportance: 0.5 });
    const sa = await memory.context.stats('pc-stats');
    const sb = await remote.context.stats('pc-stats');
    expect(sb.byType).toEqual(sa.byType);
    expect(sb.total).toEqual(sa.total);
    const ra = await memory.context.reindex('pc-stats');
    const rb = await remote.context.reindex('pc-stats');
    expect(rb).toEqual(ra);
    const sa2 = await memory.context.stats('pc-stats');
    const sb2 = await remote.context.stats('pc-stats');
    expect(sb2.byType).toEqual(sa2.byType);
    expect(sa2.byType).toEqual(sa.byType);
    const ids = ['meta-fingerprint', 'meta-pruned', 'meta-locations'];
    const ma = (await memory.vectors.fetch('pc-stats', ids)).map((r) => [r.id, r.metadata.text]);
    const mb = (await remote.vectors.fetch('pc-stats', ids)).map((r) => [r.id, r.metadata.text]);
    expect(mb).toEqual(ma);
    for (const query of ['Mira at Salt Market', 'brass key']) {
      const a = await memory.context.getRelevantContext('pc-stats', query, { k: 5 });
      const b = await remote.context.getRelevantContext('pc-stats', query, { k: 5 });
      expect(strip(b.similarScenes)).toEqual(strip(a.similarScenes));
    }
  });
});
