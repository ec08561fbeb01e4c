/**
 * Memory upkeep keeps what it promises: a refused prune policy loses no earlier prune; a prune made during a rebuild
 * stays dropped; a rebuild for a new embedder tries a full batch before it clears anything; a chapter whose summary
 * is missing is kept by the vector side and by a keyword fill alike; indexScene refuses another story's state and an
 * empty text, deletes the chunks a longer text left, and leaves out a scene a prune dropped; reindex progress never
 * counts past its total; an abort rejects at once while a summarizer or embedder does not answer. On the memory
 * indexes and on SQLite, with and without its in-memory mirror.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager, type ContextManagerOptions, type ReindexProgress } from '../src/context/context-manager.js';
import type { Embedder } from '../src/context/embedder.js';
import { createExtractiveSummarizer } from '../src/context/extractive-summarizer.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import type { KeywordIndex } from '../src/context/keyword-index.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createSqliteKeywordIndex } from '../src/context/sqlite-keyword-index.js';
import { createSqliteVectorIndex } from '../src/context/sqlite-vector-index.js';
import type { Summarizer } from '../src/context/summarizer.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { type StoryloomError, ValidationError } from '../src/core/errors.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor, type Scene, type StoryState } from '../src/state/schema.js';
import { createSqliteStateStore } from '../src/state/sqlite.js';
import { openSqliteDatabase } from '../src/state/sqlite-database.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';
import { KEEPER_EVENTS } from './fixtures/keepers.js';

const DIMENSIONS = 64;
const CHAPTER_LENGTH = 4;
type Backend = 'memory' | 'sqlite' | 'sqlite-nomirror';
const backends: Backend[] = ['memory', 'sqlite', 'sqlite-nomirror'];

interface World {
  store: StoryStateStore;
  vectors: VectorIndex;
  keywords: KeywordIndex;
  options: ContextManagerOptions;
  manager: ContextManager;
  states: Map<string, StoryState>;
  scenes: Scene[];
}

async function newWorld(
  backend: Backend,
  overrides: Partial<ContextManagerOptions> = {},
  ownKeywords = false,
): Promise<World> {
  let store: StoryStateStore;
  let vectors: VectorIndex;
  let keywords: KeywordIndex;
  if (backend === 'memory') {
    store = createMemoryStateStore();
    vectors = createMemoryVectorIndex({ dimensions: DIMENSIONS });
    keywords = createMemoryKeywordIndex();
  } else {
    const database = openSqliteDatabase({ path: ':memory:' });
    const mirror = backend === 'sqlite';
    store = createSqliteStateStore({ database });
    vectors = createSqliteVectorIndex({ database, dimensions: DIMENSIONS, mirror });
    // Durable vectors beside an in-process keyword index: the process keeps a keyword side of its own.
    keywords = ownKeywords ? createMemoryKeywordIndex() : createSqliteKeywordIndex({ database, mirror });
  }
  const options: ContextManagerOptions = {
    store,
    vectors,
    keywords,
    embedder: createHashingEmbedder({ dimensions: DIMENSIONS }),
    ...overrides,
  };
  const states = new Map<string, StoryState>();
  for (const id of ['tale', 'other']) {
    const base = makeStoryState(id);
    states.set(id, await store.create(makeStoryState(id, { bible: { ...base.bible, chapterLength: CHAPTER_LENGTH } })));
  }
  return { store, vectors, keywords, options, manager: new ContextManager(options), states, scenes: [] };
}

/** Commits the next scene of "tale" (a chapter closes every CHAPTER_LENGTH scenes), and indexes it unless told not to. */
async function commit(world: World, scene: Partial<Scene> = {}, index = true): Promise<Scene> {
  const state = world.states.get('tale')!;
  const i = state.sceneCount;
  const made = makeNextScene(state, {
    title: `Night ${i + 1}`,
    text: `${KEEPER_EVENTS[i % KEEPER_EVENTS.length]} The sea kept its own counsel.`,
    summary: KEEPER_EVENTS[i % KEEPER_EVENTS.length],
    importance: 0.2,
    ...scene,
  });
  const closes = (i + 1) % CHAPTER_LENGTH === 0;
  const next = makeNextState(
    state,
    made,
    closes ? { chapterIndex: state.chapterIndex + 1, chapterId: chapterIdFor(state.chapterIndex + 1) } : {},
  );
  const { state: committed } = await world.store.commitScene('tale', {
    expectedVersion: state.version,
    scene: made,
    nextState: next,
    consumedInfluenceIds: [],
  });
  world.states.set('tale', committed);
  world.scenes.push(made);
  if (index) await world.manager.indexScene(made, { state: committed });
  return made;
}

async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

/** Every record id of the story in the vector index, sorted. */
async function vectorIds(world: World, storyId = 'tale'): Promise<string[]> {
  const { count } = await world.vectors.stats(storyId);
  if (count === 0) return [];
  const probe = new Float32Array(DIMENSIONS);
  probe[0] = 1;
  return (await world.vectors.query(storyId, { vector: probe, topK: count })).map((match) => match.id).sort();
}

async function sceneIds(world: World): Promise<string[]> {
  return (await vectorIds(world)).filter((id) => id.startsWith('scene-'));
}

/** The ids of the chunks of `scene` that the keyword index holds. */
async function keywordChunks(world: World, scene: Scene): Promise<string[]> {
  const matches = await world.keywords.query('tale', {
    text: 'brass key lamp sentence keepers sea',
    topK: 100,
    filter: { sourceId: scene.id },
  });
  return matches.map((match) => match.id).sort();
}

/** Waits some turns of the event loop (no wall-clock time) for `promise` to settle; true when it did. */
async function settlesSoon(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  for (let turn = 0; turn < 200 && !settled; turn++) await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

/** An embedder whose next calls wait at a gate once `hold()` is called: `hold` resolves when a call arrives there. */
function gated(base: Embedder, extra: Partial<Embedder> = {}) {
  let gate: Promise<void> | undefined;
  let open = () => {};
  let arrive = () => {};
  const embedder: Embedder = {
    ...base,
    ...extra,
    embed: async (texts, options) => {
      if (gate) {
        arrive();
        await gate;
      }
      return base.embed(texts, options);
    },
  };
  return {
    embedder,
    hold(): Promise<void> {
      gate = new Promise((resolve) => {
        open = () => {
          gate = undefined;
          resolve();
        };
      });
      return new Promise((resolve) => {
        arrive = resolve;
      });
    },
    release: () => open(),
  };
}

describe.each(backends)('prune policies that are not numbers (%s)', (backend) => {
  it('are refused before anything is written, and every earlier prune stays dropped through reindex', async () => {
    const world = await newWorld(backend);
    for (let i = 0; i < 9; i++) await commit(world);
    expect((await world.manager.prune('tale', { minAgeScenes: 0, maxImportance: 0.4 })).deleted).toBeGreaterThan(0);
    const afterPrune = await sceneIds(world);
    const [record] = await world.vectors.fetch('tale', ['meta-pruned']);
    const policies: unknown[] = [
      { minAgeScenes: 0, maxImportance: '0.5' },
      { minAgeScenes: 0, maxImportance: true },
      { minAgeScenes: 0, maxImportance: [0.5] },
      { minAgeScenes: 0, maxImportance: { valueOf: () => 0.5 } },
      { minAgeScenes: '0', maxImportance: 0.5 },
      { minAgeScenes: true, maxImportance: 0.5 },
    ];
    for (const policy of policies) {
      const error = await failureOf(world.manager.prune('tale', policy as never));
      expect(ValidationError.isInstance(error), `${String(error)}`).toBe(true);
    }
    const [after] = await world.vectors.fetch('tale', ['meta-pruned']);
    expect(after?.metadata.text).toBe(record?.metadata.text);
    await world.manager.reindex('tale');
    expect(await sceneIds(world)).toEqual(afterPrune);
  });
});

describe.each(backends)('the default prune policy (%s)', (backend) => {
  it('drops only scenes below importance 0.4, and a reindex keeps the scene of exactly 0.4 it kept', async () => {
    const world = await newWorld(backend);
    // Chapter 1: a quiet scene, one at the bound, one just above it, and an important one.
    for (const importance of [0.35, 0.4, 0.45, 0.9]) await commit(world, { importance });
    for (let i = 0; i < 5; i++) await commit(world, { importance: 0.9 }); // chapter 2 closes, scene 8 opens chapter 3
    const [quiet, atBound, above] = world.scenes;
    expect(await world.manager.prune('tale', { minAgeScenes: 0 })).toEqual({ chapters: [chapterIdFor(0)], deleted: 1 });
    const kept = await sceneIds(world);
    expect(kept).not.toContain(`scene-${quiet!.id}-c0`);
    expect(kept).toContain(`scene-${atBound!.id}-c0`);
    expect(kept).toContain(`scene-${above!.id}-c0`);
    await world.manager.reindex('tale');
    expect(await sceneIds(world), 'the reindex dropped a scene the prune kept').toEqual(kept);
  });

  it('keeps every scene of the last 200', async () => {
    const world = await newWorld(backend);
    for (let i = 0; i < 24; i++) await commit(world); // six chapters closed and summarised, every scene at 0.2
    const all = await sceneIds(world);
    expect(await world.manager.prune('tale', { maxImportance: 0.5 })).toEqual({ chapters: [], deleted: 0 });
    expect(await sceneIds(world)).toEqual(all);
  });
});

describe.each(backends)('a prune and a rebuild of one story in one process (%s)', (backend) => {
  /** Scenes 0 to 7 fill two summarised chapters; scene 8 opens the third, which no prune reaches. */
  const survivors = (world: World) => world.scenes.slice(8).map((scene) => `scene-${scene.id}-c0`);

  it('a prune called while reindex runs waits for it, and stays dropped', async () => {
    const gate = gated(createHashingEmbedder({ dimensions: DIMENSIONS }));
    const world = await newWorld(backend, { embedder: gate.embedder });
    for (let i = 0; i < 9; i++) await commit(world);
    const arrived = gate.hold();
    const rebuilding = world.manager.reindex('tale');
    await arrived;
    const pruning = world.manager.prune('tale', { minAgeScenes: 0, maxImportance: 0.5 });
    expect(await settlesSoon(pruning), 'the prune ran beside the rebuild').toBe(false);
    gate.release();
    await rebuilding;
    expect((await pruning).deleted).toBe(8);
    expect(await sceneIds(world)).toEqual(survivors(world));
    await world.manager.reindex('tale');
    expect(await sceneIds(world)).toEqual(survivors(world));
  });

  it('a prune called while an automatic rebuild for a new embedder runs waits for it, and stays dropped', async () => {
    const world = await newWorld(backend);
    for (let i = 0; i < 9; i++) await commit(world);
    const gate = gated(createHashingEmbedder({ dimensions: DIMENSIONS }), { modelId: 'hashing-next' });
    const manager = new ContextManager({ ...world.options, embedder: gate.embedder });
    const arrived = gate.hold();
    const reading = manager.getRelevantContext('tale', 'the brass key');
    await arrived;
    const pruning = manager.prune('tale', { minAgeScenes: 0, maxImportance: 0.5 });
    expect(await settlesSoon(pruning), 'the prune ran beside the rebuild').toBe(false);
    gate.release();
    await reading;
    expect((await pruning).deleted).toBe(8);
    expect(await sceneIds(world)).toEqual(survivors(world));
    await manager.reindex('tale');
    expect(await sceneIds(world)).toEqual(survivors(world));
  });
});

describe.each(backends)('an automatic rebuild for a broken new embedder (%s)', (backend) => {
  const base = createHashingEmbedder({ dimensions: DIMENSIONS });
  const broken: Record<string, Embedder['embed']> = {
    // Its batch path is broken: one vector short whenever more than one text is sent.
    'fails only on a full batch': async (texts, options) => {
      const vectors = await base.embed(texts, options);
      return texts.length > 1 ? vectors.slice(1) : vectors;
    },
    // NaN for one kind of text; the fingerprint text alone is fine.
    'answers NaN for one scene': async (texts, options) =>
      (await base.embed(texts, options)).map((vector, i) =>
        texts[i]!.includes('peaches') ? new Float32Array(DIMENSIONS).fill(Number.NaN) : vector,
      ),
  };
  for (const [what, embed] of Object.entries(broken)) {
    it(`that ${what} leaves the memory as it was`, async () => {
      const world = await newWorld(backend);
      for (let i = 0; i < 9; i++) await commit(world);
      const before = await vectorIds(world);
      const manager = new ContextManager({ ...world.options, embedder: { ...base, embed, modelId: 'hashing-next' } });
      for (let call = 0; call < 2; call++) {
        const error = await failureOf(manager.getRelevantContext('tale', 'the brass key'));
        expect((error as StoryloomError).code).toBe('INVALID_EMBEDDING');
        expect(await vectorIds(world)).toEqual(before);
      }
      // The embedder the memory was built for still finds it whole.
      const bundle = await world.manager.getRelevantContext('tale', 'the brass key in the lantern room wall');
      expect(bundle.similarScenes[0]?.sceneId).toBe(world.scenes[1]!.id);
    });
  }
});

const flakySummarizer = () => {
  const extractive = createExtractiveSummarizer();
  const flaky = {
    fail: true,
    summarizer: {
      specificationVersion: 'v1',
      provider: 'flaky',
      summarize: async (texts, options) => {
        if (flaky.fail) throw new Error('model down');
        return extractive.summarize(texts, options);
      },
    } satisfies Summarizer as Summarizer,
  };
  return flaky;
};

describe.each(backends)('a chapter whose summary is missing (%s)', (backend) => {
  it('ends what prune reaches, for the vector side and a rebuild alike, until the summary is written', async () => {
    const flaky = flakySummarizer();
    const world = await newWorld(backend, { summarizer: flaky.summarizer });
    for (let i = 0; i < 3; i++) await commit(world);
    expect(await failureOf(commit(world))).toBeInstanceOf(Error); // closes chapter 1: its summary fails
    flaky.fail = false;
    for (let i = 0; i < 5; i++) await commit(world); // closes chapter 2, summarised
    const all = await sceneIds(world);
    expect(await world.manager.prune('tale', { minAgeScenes: 0, maxImportance: 1 })).toEqual({
      chapters: [],
      deleted: 0,
    });
    expect(await sceneIds(world)).toEqual(all);
    await world.manager.reindex('tale');
    expect(await sceneIds(world)).toEqual(all);
    // The summary written at last, the next prune reaches both chapters.
    await world.manager.summarizeChapter('tale', chapterIdFor(0));
    expect((await world.manager.prune('tale', { minAgeScenes: 0, maxImportance: 1 })).chapters).toEqual([
      chapterIdFor(0),
      chapterIdFor(1),
    ]);
    expect(await sceneIds(world)).toEqual([`scene-${world.scenes[8]!.id}-c0`]);
  });
});

describe.each(['sqlite', 'sqlite-nomirror'] as const)(
  'a chapter whose summary is missing, own keyword side (%s)',
  (backend) => {
    it('a fresh process fills its keyword side with that chapter, as the vectors keep it', async () => {
      const flaky = flakySummarizer();
      const world = await newWorld(backend, { summarizer: flaky.summarizer }, true);
      for (let i = 0; i < 3; i++) await commit(world);
      expect(await failureOf(commit(world))).toBeInstanceOf(Error);
      flaky.fail = false;
      for (let i = 0; i < 4; i++) await commit(world);
      await world.manager.prune('tale', { minAgeScenes: 0, maxImportance: 1 });
      const chapter1 = world.scenes.slice(0, 4);
      const ids = await vectorIds(world);
      for (const scene of chapter1) expect(ids).toContain(`scene-${scene.id}-c0`);
      const keywords = createMemoryKeywordIndex();
      const fresh = new ContextManager({ ...world.options, keywords });
      await fresh.getRelevantContext('tale', 'Mira polished the great lens');
      for (const scene of chapter1) {
        const matches = await keywords.query('tale', { text: scene.summary, topK: 5, filter: { sourceId: scene.id } });
        expect(
          matches.map((match) => match.id),
          scene.id,
        ).toContain(`scene-${scene.id}-c0`);
      }
    });
  },
);

describe.each(backends)('indexScene (%s)', (backend) => {
  it('refuses a state of another story, and writes nothing of it', async () => {
    const world = await newWorld(backend);
    const other = world.states.get('other')!;
    const spy = { ...other.characters.gull!, id: 'spy', name: 'Agent Nightjar', description: 'A secret.' };
    const otherState = { ...other, characters: { ...other.characters, spy } };
    const scene = await commit(world, {}, false);
    const error = await failureOf(world.manager.indexScene(scene, { state: otherState }));
    expect(ValidationError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toContain('options.state belongs to "other"');
    expect(await world.vectors.fetch('tale', ['character-spy'])).toEqual([]);
  });

  it('refuses a scene whose text is empty or white space', async () => {
    const world = await newWorld(backend);
    await commit(world);
    const scene = await commit(world, {}, false);
    const before = await vectorIds(world);
    for (const text of ['', '   \n\t ']) {
      const error = await failureOf(world.manager.indexScene({ ...scene, text }, { state: world.states.get('tale')! }));
      expect(ValidationError.isInstance(error), `text ${JSON.stringify(text)}: ${String(error)}`).toBe(true);
    }
    expect(await vectorIds(world)).toEqual(before);
  });

  it('deletes the chunks a longer earlier text of the scene left, in both indexes', async () => {
    const world = await newWorld(backend, { chunkWords: 20 });
    await commit(world);
    const text = Array.from({ length: 30 }, (_, i) => `Sentence ${i} tells of the brass key and the lamp.`).join(' ');
    const scene = await commit(world, { text });
    const chunks = (await vectorIds(world)).filter((id) => id.startsWith(`scene-${scene.id}-c`));
    expect(chunks.length).toBeGreaterThan(3);
    expect((await keywordChunks(world, scene)).length).toBe(chunks.length);
    const shorter = { ...scene, text: 'Only one short sentence of the brass key now.' };
    await world.manager.indexScene(shorter, { state: world.states.get('tale')! });
    expect((await vectorIds(world)).filter((id) => id.startsWith(`scene-${scene.id}-c`))).toEqual([
      `scene-${scene.id}-c0`,
    ]);
    expect(await keywordChunks(world, scene)).toEqual([`scene-${scene.id}-c0`]);
  });

  it('writes a scene the prune kept when its index step is retried after that prune, in both indexes', async () => {
    const world = await newWorld(backend);
    for (let i = 0; i < 4; i++) await commit(world);
    const late = await commit(world, {}, false); // scene 4: its index step failed, to be retried
    for (let i = 0; i < 7; i++) await commit(world); // chapters 2 and 3 close
    // Chapter 1 (scenes 0 to 3) goes; chapter 2 (4 to 7) ends too recently and is kept, scene 4 with it.
    expect((await world.manager.prune('tale', { minAgeScenes: 5, maxImportance: 0.5 })).chapters).toEqual([
      chapterIdFor(0),
    ]);
    await world.manager.indexScene(late, { state: world.states.get('tale')! });
    expect(await sceneIds(world)).toContain(`scene-${late.id}-c0`);
    expect(await keywordChunks(world, late)).toEqual([`scene-${late.id}-c0`]);
  });

  it('leaves out a scene a prune dropped when it is indexed again, and later prunes keep it out', async () => {
    const world = await newWorld(backend);
    for (let i = 0; i < 9; i++) await commit(world);
    await world.manager.prune('tale', { minAgeScenes: 0, maxImportance: 0.5 });
    const afterPrune = await sceneIds(world);
    const first = world.scenes[0]!;
    expect(afterPrune).not.toContain(`scene-${first.id}-c0`);
    await world.manager.indexScene(first, { state: world.states.get('tale')! });
    expect(await sceneIds(world)).toEqual(afterPrune);
    expect(await keywordChunks(world, first)).toEqual([]);
    await world.manager.prune('tale', { minAgeScenes: 0, maxImportance: 0.5 });
    expect(await sceneIds(world)).toEqual(afterPrune);
  });
});

describe.each(backends)('reindex progress (%s)', (backend) => {
  it('never counts more scenes done than its total, when a scene is committed while it runs', async () => {
    const gate = gated(createHashingEmbedder({ dimensions: DIMENSIONS }));
    const world = await newWorld(backend, { embedder: gate.embedder });
    for (let i = 0; i < 6; i++) await commit(world);
    const arrived = gate.hold();
    const events: ReindexProgress[] = [];
    const rebuilding = world.manager.reindex('tale', { onProgress: (event) => events.push(event) });
    await arrived;
    await commit(world, {}, false);
    gate.release();
    expect((await rebuilding).scenes).toBe(7);
    const scenes = events.filter((event) => event.phase === 'scenes');
    expect(scenes.at(-1)).toEqual({ phase: 'scenes', done: 7, total: 7 });
    for (const event of events) expect(event.done, JSON.stringify(event)).toBeLessThanOrEqual(event.total);
  });
});

describe('an abort while a dependency does not answer (memory)', () => {
  const never = () => new Promise<never>(() => {});

  it('rejects indexScene at once while the summarizer hangs', async () => {
    let arrive = () => {};
    const arrived = new Promise<void>((resolve) => {
      arrive = resolve;
    });
    const summarizer: Summarizer = {
      specificationVersion: 'v1',
      provider: 'hang',
      summarize: () => {
        arrive();
        return never();
      },
    };
    const world = await newWorld('memory', { summarizer });
    for (let i = 0; i < 3; i++) await commit(world);
    const scene = await commit(world, {}, false); // closes chapter 1: its summary hangs
    const controller = new AbortController();
    const indexing = world.manager.indexScene(scene, { state: world.states.get('tale')!, signal: controller.signal });
    await arrived;
    controller.abort();
    await expect(indexing).rejects.toMatchObject({ code: 'ABORTED' });
  }, 2_000);

  it("rejects reindex at once while the embedder hangs, and the story's next prune is not held up by it", async () => {
    const base = createHashingEmbedder({ dimensions: DIMENSIONS });
    let hang = false;
    let arrive = () => {};
    const arrived = new Promise<void>((resolve) => {
      arrive = resolve;
    });
    const embedder: Embedder = {
      ...base,
      embed: (texts, options) => {
        if (!hang) return base.embed(texts, options);
        arrive();
        return never();
      },
    };
    const world = await newWorld('memory', { embedder });
    for (let i = 0; i < 9; i++) await commit(world);
    hang = true;
    const controller = new AbortController();
    const rebuilding = world.manager.reindex('tale', { signal: controller.signal });
    await arrived;
    controller.abort();
    await expect(rebuilding).rejects.toMatchObject({ code: 'ABORTED' });
    // The abandoned rebuild, stuck before its clear, cleared nothing; a prune after it runs.
    expect((await world.manager.prune('tale', { minAgeScenes: 0, maxImportance: 0.5 })).deleted).toBe(8);
  }, 2_000);
});

describe.each(backends)('a reindex progress listener that throws (%s)', (backend) => {
  it('does not stop the rebuild half-way, its index cleared', async () => {
    const world = await newWorld(backend);
    for (let index = 0; index < CHAPTER_LENGTH + 1; index++) await commit(world);
    const before = await vectorIds(world);
    expect(before.length).toBeGreaterThan(0);
    const phases: string[] = [];
    await world.manager.reindex('tale', {
      onProgress: ({ phase }) => {
        phases.push(phase);
        throw new Error('broken progress bar');
      },
    });
    expect(phases.at(-1)).toBe('done');
    expect(await vectorIds(world)).toEqual(before);
  });
});
