/**
 * The context manager over Pinecone (the local stand-in, which enforces the service's documented limits: 40 KB of
 * metadata a record, 4 MB a query response) with scenes at the edges of what the schema allows: every write and
 * every search stays within them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createPineconeIndex, PINECONE_LIMITS } from '../src/context/pinecone.js';
import { recordsPerResponse } from '../src/context/retrieval.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor, type Scene, type StoryState } from '../src/state/schema.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';
import { type PineconeStandIn, startPineconeStandIn } from '../src/testing/pinecone-server.js';

const DIMENSIONS = 1536;
let standIn: PineconeStandIn;
beforeAll(async () => {
  standIn = await startPineconeStandIn({ dimension: DIMENSIONS });
});
afterAll(() => standIn.close());

async function story(storyId: string, chapterLength?: number, chunkWords?: number) {
  const store = createMemoryStateStore();
  const initial = makeStoryState(storyId);
  await store.create(chapterLength ? { ...initial, bible: { ...initial.bible, chapterLength } } : initial);
  const vectors = createPineconeIndex({ host: standIn.url, apiKey: 'local', dimensions: DIMENSIONS });
  const context = new ContextManager({
    store,
    vectors,
    keywords: createMemoryKeywordIndex(),
    embedder: createHashingEmbedder({ dimensions: DIMENSIONS }),
    ...(chunkWords ? { chunkWords } : {}),
  });
  const commit = async (overrides: Partial<Scene>, next: Partial<StoryState> = {}) => {
    const state = await store.load(storyId);
    const scene = makeNextScene(state, overrides);
    const committed = await store.commitScene(storyId, {
      expectedVersion: state.version,
      scene,
      nextState: makeNextState(state, scene, next),
      consumedInfluenceIds: [],
    });
    await context.indexScene(scene, { state: committed.state });
    return scene;
  };
  return { context, vectors, commit };
}

/**
 * The requests the stand-in refused since `from`: answered with anything but 200, save a count of a story not written
 * yet (Pinecone's "Namespace not found", an answer).
 */
const refusedSince = (from: number) =>
  standIn.requests
    .slice(from)
    .filter((request) => request.status !== 200 && !(request.method === 'GET' && request.status === 404))
    .map((request) => `${request.path} ${request.status}`);

describe('the context manager within Pinecone limits', () => {
  it('indexes a scene whose 64 places and 64 themes have long CJK names, keeping its characters', async () => {
    const { vectors, commit } = await story('cjk-tags');
    const from = standIn.requests.length;
    // 120 characters each, as the schema allows, 3 bytes each in UTF-8: 46 KB of tags alone.
    const name = (index: number, word: string) => `${word}${index}`.padEnd(120, '港');
    const scene = await commit({
      characters: ['mira', 'tobin'],
      locations: Array.from({ length: 64 }, (_, index) => name(index, '北の灯台')),
      themes: Array.from({ length: 64 }, (_, index) => name(index, '海と義務')),
    });
    expect(refusedSince(from)).toEqual([]);
    const vector = Float32Array.from({ length: DIMENSIONS }, (_, index) => (index === 0 ? 1 : 0));
    const [chunk] = await vectors.query('cjk-tags', { vector, topK: 1, filter: { sourceId: scene.id } });
    expect(chunk?.metadata.characters).toEqual(['mira', 'tobin']);
    // The first places stay; only as many tags as it took went, themes first.
    expect(chunk?.metadata.locations?.slice(0, 3)).toEqual(scene.locations.slice(0, 3));
    expect((chunk?.metadata.themes ?? []).length).toBeLessThan(scene.themes.length);
  });

  it('never asks one query for more records than a 4 MB response holds at 40 KB each, heavy records included', async () => {
    const { context, commit } = await story('heavy');
    const sentence = 'The keeper climbed the stair and counted the lamps of the harbour one by one. ';
    const text = sentence.repeat(Math.floor(200_000 / sentence.length));
    const characters = Array.from({ length: 64 }, (_, index) => `character-${index}-${'x'.repeat(110)}`);
    const locations = Array.from({ length: 64 }, (_, index) =>
      `Place ${index} ${'of the long harbour '.repeat(6)}`.slice(0, 120),
    );
    for (let scene = 0; scene < 6; scene++) await commit({ text, characters, locations });
    const from = standIn.requests.length;
    const bundle = await context.getRelevantContext('heavy', 'the keeper counted the lamps', { k: 5 });
    expect(bundle.similarScenes.length).toBeGreaterThan(0);
    expect(refusedSince(from)).toEqual([]);
    const most = recordsPerResponse({
      maxQueryResultBytes: PINECONE_LIMITS.maxQueryResultBytes,
      maxMetadataBytes: PINECONE_LIMITS.maxMetadataBytes,
    });
    // The searches over scene chunks (the meta listings read small records the manager writes itself).
    const topKs = standIn.requests
      .slice(from)
      .filter(
        (request) =>
          request.path === '/query' &&
          JSON.stringify((request.body as { filter?: unknown }).filter).includes('"scene"'),
      )
      .map((request) => (request.body as { topK: number }).topK);
    expect(topKs.length).toBeGreaterThan(0);
    expect(Math.max(...topKs)).toBeLessThanOrEqual(most);
    // And the stats listing of the story too.
    const statsFrom = standIn.requests.length;
    await context.stats('heavy');
    expect(refusedSince(statsFrom)).toEqual([]);
  });

  it('finds k scenes when one response holds the chunks of fewer: the next page asks for the scenes not found', async () => {
    // 20 words a chunk and scenes of about 2,400 words: 120 chunks each, so the 101 records one response holds may
    // all be one scene's, and the keyword side's (capped alike) another's.
    const { context, commit } = await story('many-chunks', undefined, 20);
    const words = ['keeper', 'lamp', 'harbour', 'stair', 'tide', 'gull', 'rope', 'brass', 'fog', 'bell'];
    const scenes: Scene[] = [];
    for (let scene = 0; scene < 20; scene++) {
      const sentences = Array.from(
        { length: 200 },
        (_, index) =>
          `The ${words[(scene + index) % words.length]} and the ${words[(scene * 3 + index) % words.length]} of night ${scene} waited by the sea.`,
      );
      scenes.push(await commit({ text: sentences.join(' '), title: `Night ${scene}` }));
    }
    const from = standIn.requests.length;
    const bundle = await context.getRelevantContext('many-chunks', 'the keeper and the lamp by the sea', { k: 10 });
    expect(refusedSince(from)).toEqual([]);
    const found = bundle.similarScenes.filter((scene) => scene.kind === 'scene').map((scene) => scene.sceneId);
    expect(new Set(found).size).toBe(found.length);
    expect(found).toHaveLength(10);
    // Older scenes only (the latest are the prompt's own), each a scene of this story.
    const older = new Set(scenes.slice(0, -5).map((scene) => scene.id));
    for (const id of found) expect(older.has(id)).toBe(true);
    // Paged, not asked for more than one response holds.
    const most = recordsPerResponse({
      maxQueryResultBytes: PINECONE_LIMITS.maxQueryResultBytes,
      maxMetadataBytes: PINECONE_LIMITS.maxMetadataBytes,
    });
    const sceneQueries = standIn.requests
      .slice(from)
      .filter((request) => request.path === '/query' && JSON.stringify(request.body).includes('"scene"'));
    for (const request of sceneQueries) expect((request.body as { topK: number }).topK).toBeLessThanOrEqual(most);
    expect(sceneQueries.some((request) => JSON.stringify(request.body).includes('$nin'))).toBe(true);
  });

  it('prunes a summarized chapter of heavy scenes without asking for more than one response holds', async () => {
    const { context, commit } = await story('heavy-prune', 3);
    const sentence = 'The keeper climbed the stair and counted the lamps of the harbour one by one. ';
    const text = sentence.repeat(Math.floor(200_000 / sentence.length));
    const locations = Array.from({ length: 64 }, (_, index) =>
      `Place ${index} ${'of the long harbour '.repeat(6)}`.slice(0, 120),
    );
    const characters = Array.from({ length: 64 }, (_, index) => `character-${index}-${'x'.repeat(110)}`);
    const themes = Array.from({ length: 64 }, (_, index) =>
      `Theme ${index} ${'duty and loss at sea '.repeat(6)}`.slice(0, 120),
    );
    // Chapter 1 (scenes 0-2) closes and is summarized; its scenes are old enough once scene 5 is in.
    for (let scene = 0; scene < 6; scene++) {
      await commit(
        { text, characters, locations, themes, importance: 0.2 },
        scene === 2 ? { chapterId: chapterIdFor(1), chapterIndex: 1 } : {},
      );
    }
    const from = standIn.requests.length;
    const pruned = await context.prune('heavy-prune', { minAgeScenes: 1, maxImportance: 0.5 });
    expect(refusedSince(from)).toEqual([]);
    expect(pruned.chapters).toEqual([chapterIdFor(0)]);
    expect(pruned.deleted).toBeGreaterThan(0);
  });
});
