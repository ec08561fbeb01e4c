/**
 * The context manager over a store whose pages come back short, even empty, with a `nextCursor` (as a DynamoDB query
 * does when a page hits 1 MB or a filter): `Page` only promises that `nextCursor` is absent on the last page.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { Scene } from '../src/state/schema.js';
import type { ListScenesOptions, Page, StoryStateStore } from '../src/state/store.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { createMockSceneGenerator } from '../src/testing/mock-generators.js';

const DIM = 64;

/** A store whose every listing starts with an empty page that carries a nextCursor (a legal Page). */
function emptyFirstPages(store: StoryStateStore): StoryStateStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'listScenes') {
        return async (storyId: string, options: ListScenesOptions = {}): Promise<Page<Scene>> => {
          if (options.cursor === undefined) return { items: [], nextCursor: 'start' };
          const { cursor, ...rest } = options;
          return target.listScenes(storyId, cursor === 'start' ? rest : options);
        };
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

function generator() {
  return createMockSceneGenerator({
    respond: (request) => {
      const i = request.sceneIndex;
      return {
        scene: {
          title: `Night ${i + 1}`,
          text: `Night ${i + 1}. Mira climbed to the lamp room. ${i % 2 ? 'The brass key turned.' : 'Gulls cried.'}`,
          summary: `Night ${i + 1} in the lamp room.`,
          characters: ['mira'],
          locations: ['the lamp room'],
          themes: ['duty'],
          importance: 0.5,
        },
        delta: { chapterClosed: (i + 1) % 6 === 0 ? { summary: `Chapter ending at ${i + 1}.` } : null },
      };
    },
  });
}

async function story(episodes: number) {
  const clock = new ManualClock();
  const store = createMemoryStateStore({ clock });
  await store.create(makeStoryState('pg', { bible: { ...makeStoryState().bible, chapterLength: 6 } }));
  const embedder = createHashingEmbedder({ dimensions: DIM });
  const vectors = createMemoryVectorIndex({ dimensions: DIM });
  const keywords = createMemoryKeywordIndex();
  const context = new ContextManager({ store, vectors, keywords, embedder, recentScenes: 2 });
  const engine = createStoryEngine({ store, context, generator: generator(), clock });
  for (let e = 0; e < episodes; e++) expect((await engine.runEpisode('pg')).complete).toBe(true);
  return { store, embedder, vectors, keywords };
}

describe('paging over a store that returns an empty page with a nextCursor', () => {
  it('an index lost while the store has scenes is rebuilt, whatever the first page holds', async () => {
    // An empty index beside a story with scenes is rebuilt, however the store pages: read as "no scenes", the empty
    // index would get a fingerprint and stay empty.
    const { store, embedder } = await story(10);
    const vectors = createMemoryVectorIndex({ dimensions: DIM });
    const context = new ContextManager({
      store: emptyFirstPages(store),
      vectors,
      keywords: createMemoryKeywordIndex(),
      embedder,
      recentScenes: 2,
    });
    const bundle = await context.getRelevantContext('pg', 'the brass key', { k: 3 });
    expect((await vectors.stats('pg')).count).toBeGreaterThan(2);
    expect(bundle.similarScenes.length).toBeGreaterThan(0);
  });

  it('the stable prefix stays byte-identical within a chapter', async () => {
    // The prompts for scenes 8 and 9 of chapter-0002, which starts at scene 6, each laid out by a new process: the
    // chapter's first scene must be found behind an empty page, or the chapter start moves with every episode.
    const { store, embedder, vectors, keywords } = await story(8);
    const wrapped = emptyFirstPages(store);
    const clock = new ManualClock();
    const make = () =>
      new ContextManager({ store: wrapped, vectors, keywords, embedder, recentScenes: 2, earlierScenes: 2 });
    const first = await make().getRelevantContext('pg', 'the brass key', { k: 3 });
    const engine = createStoryEngine({ store, context: make(), generator: generator(), clock });
    expect((await engine.runEpisode('pg')).complete).toBe(true);
    const second = await make().getRelevantContext('pg', 'the brass key', { k: 3 });
    expect(second.coreState.chapterId).toBe(first.coreState.chapterId);
    expect(`${second.prompt.stable}${second.prompt.dynamic}`.startsWith(first.prompt.stable)).toBe(true);
  });
});
