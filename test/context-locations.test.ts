/**
 * The `meta-locations` record once it is at its 2,000-character cap: it keeps the most recently named locations,
 * and every process, with a keyword side of its own or without, recognises the same ones.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import {
  durableMemoryKeywords,
  NIGHT_WATCH_DIMENSIONS,
  nightWatchEmbedder,
  nightWatchStory,
  placesGenerator,
  processOver,
} from './fixtures/night-watch.js';

/** A long place name (about 100 characters): 19 of them fill the record. */
const ward = (i: number) =>
  `Harbor Ward ${i} by the Long Stair beside the Salt Warehouses near the Ferry Steps of the Old Quay`;

/** A generator whose scene `i` names `places[i]` (a function: worked out when the scene is written). */

async function storedLocations(vectors: VectorIndex, storyId: string): Promise<string[]> {
  const [record] = await vectors.fetch(storyId, ['meta-locations']);
  const entries = record ? (JSON.parse(record.metadata.text ?? '[]') as Array<string | [string, number]>) : [];
  return entries.map((entry) => (Array.isArray(entry) ? entry[0] : entry));
}

describe("ContextManager: the known locations at the record's cap", () => {
  it('keeps a location named two scenes ago rather than one last named twenty scenes ago, in every process', async () => {
    const storyId = 'audit-loc-recent';
    const clock = new ManualClock();
    const store = createMemoryStateStore({ clock });
    await store.create(makeStoryState(storyId, { bible: { ...makeStoryState().bible, chapterLength: 100 } }));
    // Scenes 0..24 each name a new ward (the record then holds the newest 20, at its cap); scene 25 goes back to
    // the oldest ward the record holds; scene 26 names a new ward 25.
    const vectors = createMemoryVectorIndex({ dimensions: NIGHT_WATCH_DIMENSIONS });
    let revisited = '';
    const places: (string[] | (() => Promise<string[]>))[] = Array.from({ length: 25 }, (_, i) => [ward(i)]);
    places.push(async () => {
      revisited = (await storedLocations(vectors, storyId))[0]!;
      return [revisited];
    }, [ward(25)]);
    const context = new ContextManager({
      store,
      vectors,
      keywords: createMemoryKeywordIndex(),
      embedder: nightWatchEmbedder,
      recentScenes: 2,
    });
    const engine = createStoryEngine({
      store,
      context,
      generator: placesGenerator((i) => {
        const entry = places[i] ?? ['Nowhere'];
        return typeof entry === 'function' ? entry() : entry;
      }),
      clock,
    });
    for (let e = 0; e < places.length; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);

    const record = await storedLocations(vectors, storyId);
    const [stored] = await vectors.fetch(storyId, ['meta-locations']);
    expect(stored!.metadata.text!.length).toBeLessThanOrEqual(2_000);
    // Scene 25 went back to the oldest ward the record held; scene 26's new ward then pushed out the next oldest.
    const held = Number(/Harbor Ward (\d+)/.exec(revisited)![1]);
    expect(record).toContain(revisited);
    expect(record).not.toContain(ward(held + 1));
    expect(record).toContain(ward(25));
    // The exact stage of the process that wrote the record, and of a new one.
    const bundle = await context.getRelevantContext(storyId, `back to ${revisited}`);
    expect(bundle.trace.exact.locations, 'the writing process').toEqual([revisited]);
    const fresh = new ContextManager({
      store,
      vectors,
      keywords: createMemoryKeywordIndex(),
      embedder: nightWatchEmbedder,
      recentScenes: 2,
    });
    const cold = await fresh.getRelevantContext(storyId, `back to ${revisited}`);
    expect(cold.trace.exact.locations, 'a new process').toEqual([revisited]);
  });

  it('a process with its own keyword side and one without recognise the same locations', async () => {
    const storyId = 'audit-loc-sides';
    const { clock, store, vectors } = await nightWatchStory(storyId, 100);
    // Gull Rock first, then long wards up to the cap; Gull Rock again (no write: the record has it); new places
    // push it out (it is first in the record) and then push out long wards, until the record has room to spare.
    const places: (string[] | (() => Promise<string[]>))[] = [['Gull Rock']];
    for (let i = 1; i <= 19; i++) places.push([ward(i)]);
    places.push(['Gull Rock'], [ward(20)]);
    const shorts = ['Tern Point', 'Fog Bell', 'Kelp Yard', 'Mast Hill', 'Rope Walk', 'Net Loft', 'Cod Lane'];
    let next = 0;
    for (let n = 0; n < 7; n++) {
      places.push(async () => {
        const record = await storedLocations(vectors, storyId);
        const slack = 2_000 - JSON.stringify(record).length;
        // A new short place while the record is nearly full, else one it already holds (no write).
        return record.includes('Gull Rock') || slack < 20 ? [shorts[next++]!] : [record.at(-1)!];
      });
    }
    const writer = processOver(store, vectors);
    const engine = createStoryEngine({
      store,
      context: writer.context,
      generator: placesGenerator((i) => {
        const entry = places[i] ?? ['Nowhere'];
        return typeof entry === 'function' ? entry() : entry;
      }),
      clock,
    });
    for (let e = 0; e < places.length; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);

    const named = ['Gull Rock', ...shorts, ...Array.from({ length: 21 }, (_, i) => ward(i))];
    const own = processOver(store, vectors); // durable vectors + a fresh in-process keyword index: fills its side
    const without = processOver(store, vectors, {}, durableMemoryKeywords()); // reads the record alone
    const recognised = async (context: ContextManager) => {
      const out: string[] = [];
      for (const place of named) {
        const bundle = await context.getRelevantContext(storyId, `back to ${place}`);
        out.push(...bundle.trace.exact.locations);
      }
      return out;
    };
    const a = await recognised(own.context);
    const b = await recognised(without.context);
    expect(
      a.filter((p) => !b.includes(p)),
      `own keyword side recognises what a process without one does not (record: ${JSON.stringify(await storedLocations(vectors, storyId)).length} chars)`,
    ).toEqual([]);
    expect(b.filter((p) => !a.includes(p))).toEqual([]);
  });
});
