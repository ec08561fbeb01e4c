/**
 * The `meta-locations` record of `[name, last scene index]` pairs: an old record of plain names keeps its order when
 * upgraded; a reindex and incremental indexing write the same record; re-indexing an older scene changes nothing.
 */
import { describe, expect, it } from 'vitest';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { durableMemoryKeywords, nightWatchStory, placesGenerator, processOver } from './fixtures/night-watch.js';

const long = (tag: string) =>
  `${tag} Ward by the Long Stair beside the Salt Warehouses near the Ferry Steps of the Old Quay and Rope Walk`;

async function recordText(vectors: VectorIndex, storyId: string) {
  const [r] = await vectors.fetch(storyId, ['meta-locations']);
  return r?.metadata.text;
}

async function setup(storyId: string, places: (i: number) => string[], episodes: number) {
  const { clock, store, vectors } = await nightWatchStory(storyId, 100);
  const writer = processOver(store, vectors);
  const engine = createStoryEngine({ store, context: writer.context, generator: placesGenerator(places), clock });
  for (let e = 0; e < episodes; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
  return { store, vectors, writer };
}

describe('ContextManager: the meta-locations record', () => {
  it('a full record of plain names (old format) keeps its most recently named places after the upgrade', async () => {
    const storyId = 'old-full';
    const { store, vectors } = await setup(storyId, () => ['Nowhere'], 2);
    // Old format: least recently named first. The most recently named ("A ...") is alphabetically first.
    const letters = 'SRQPONMLKJIHGFEDCBA'.split('');
    const names = letters.map(long);
    const text = JSON.stringify(names);
    expect(text.length).toBeLessThanOrEqual(2_000);
    const [meta] = await vectors.fetch(storyId, ['meta-locations']);
    await vectors.upsert(storyId, [{ ...meta!, metadata: { ...meta!.metadata, text } }]);
    const reader = processOver(store, vectors, {}, durableMemoryKeywords());
    const recent = names.at(-1)!;
    const middle = await reader.context.getRelevantContext(storyId, `back to ${names[5]}`);
    expect(middle.trace.exact.locations, 'a place from the middle of the record').toEqual([names[5]]);
    const bundle = await reader.context.getRelevantContext(storyId, `back to ${recent}`);
    // The previous code recognised every name of this record; the most recently named above all.
    expect(bundle.trace.exact.locations, 'the most recently named place of an old full record').toEqual([recent]);
  });

  it('reindex from scratch and incremental indexing write the same record (renamings, ties, cap)', async () => {
    const storyId = 'reindex-eq';
    const places = (i: number) =>
      i % 5 === 4 ? [long(`R${i % 3}`), long(`Q${i}`)] : [long(`W${i}`), long(`V${i}`)].slice(0, 1 + (i % 2));
    const { store, vectors } = await setup(storyId, places, 30);
    const incremental = await recordText(vectors, storyId);
    expect(incremental!.length).toBeLessThanOrEqual(2_000);
    const other = processOver(store, vectors);
    await other.context.reindex(storyId);
    expect(await recordText(vectors, storyId)).toEqual(incremental);
  });

  it('re-indexing an older scene in a new process neither lowers an index nor evicts newer places', async () => {
    const storyId = 'reindex-old-scene';
    const places = (i: number) => [long(`W${i % 25}`)];
    const { store, vectors } = await setup(storyId, places, 30);
    const before = await recordText(vectors, storyId);
    const resumed = processOver(store, vectors);
    const { items } = await store.listScenes(storyId, { limit: 200 });
    const state = await store.load(storyId);
    for (const scene of items.filter((s) => s.index < 10)) await resumed.context.indexScene(scene, { state });
    expect(await recordText(vectors, storyId)).toEqual(before);
  });
});
