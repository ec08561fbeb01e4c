/**
 * The engine driving episodes with a ContextManager under a point of view (`retrieval.povCharacterId`): prompts
 * are the same in a long-lived process and in a new process per episode, through crashes between commit and index
 * step, and the Claude request's system blocks stay a byte-identical prefix within each chapter.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { AbortedError, ValidationError } from '../src/core/errors.js';
import { buildEpisodeQuery, createStoryEngine, type StoryEngineOptions } from '../src/engine/engine.js';
import { buildClaudeRequest } from '../src/generation/claude-scene-generator.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import type { SceneGenerator, SceneRequest } from '../src/generation/scene-generator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { CharacterStateSchema, PlotThreadSchema } from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { createMockSceneGenerator } from '../src/testing/mock-generators.js';
import { commitNextScene, newKeepersStory } from './fixtures/keepers.js';
import { durableMemoryVectors } from './fixtures/night-watch.js';

const DIM = 128;
const STORY = 'pov-tale';
const POV = 'mira';
const EPISODES = 14;

function recording(inner: SceneGenerator, prompts: SceneRequest[]): SceneGenerator {
  return {
    ...inner,
    generate: (request, options) => {
      prompts.push(structuredClone(request));
      return inner.generate(request, options);
    },
  };
}

async function world(vectorsDurable = false) {
  const clock = new ManualClock();
  const store = createMemoryStateStore({ clock });
  const state = createStoryFromTemplate('lighthouse-keepers', STORY, clock);
  await store.create({ ...state, bible: { ...state.bible, chapterLength: 5 } });
  const vectors: VectorIndex = vectorsDurable
    ? durableMemoryVectors(DIM)
    : createMemoryVectorIndex({ dimensions: DIM });
  const keywords = createMemoryKeywordIndex();
  return { clock, store, vectors, keywords };
}

function manager(store: StoryStateStore, vectors: VectorIndex, keywords = createMemoryKeywordIndex()) {
  return new ContextManager({ store, vectors, keywords, embedder: createHashingEmbedder({ dimensions: DIM }) });
}

function engineOver(
  parts: { clock: ManualClock; store: StoryStateStore },
  context: StoryEngineOptions['context'],
  prompts: SceneRequest[],
) {
  return createStoryEngine({
    store: parts.store,
    context,
    generator: recording(createProceduralNarrator({ seed: 3 }), prompts),
    clock: parts.clock,
    retrieval: { povCharacterId: POV },
  });
}

/** The prompts of EPISODES episodes written by one long-lived process. */
async function oneProcess(durable = false): Promise<SceneRequest[]> {
  const a = await world(durable);
  const prompts: SceneRequest[] = [];
  const engine = engineOver(a, manager(a.store, a.vectors, a.keywords), prompts);
  for (let i = 0; i < EPISODES; i++) expect((await engine.runEpisode(STORY)).complete).toBe(true);
  return prompts;
}

/**
 * The prompt the engine gives the narrator for the next scene of "tale" from Mira's point of view: the first runs
 * finish the steps of the scenes committed by hand, the next one writes a scene.
 */
async function nextPromptOfMira(store: StoryStateStore, context: StoryEngineOptions['context']) {
  const generator = createMockSceneGenerator({
    respond: () => ({
      scene: { title: 'Dawn', text: 'The sun rose over the lamp.', summary: 'Dawn.', characters: ['mira'] },
      delta: {},
    }),
  });
  const engine = createStoryEngine({ store, context, generator, retrieval: { povCharacterId: 'mira' } });
  for (let run = 0; run < 3 && generator.calls.length === 0; run++) await engine.runEpisode('tale');
  return generator.calls[0]!.prompt;
}

describe('StoryEngine under a point of view', () => {
  it('a long-lived process and a new process per episode give the same prompts', async () => {
    const aPrompts = await oneProcess();

    const b = await world();
    const bPrompts: SceneRequest[] = [];
    for (let i = 0; i < EPISODES; i++) {
      // A new process each episode (a Lambda's cold start), over the same store and indexes.
      const bEngine = engineOver(b, manager(b.store, b.vectors, b.keywords), bPrompts);
      expect((await bEngine.runEpisode(STORY)).complete).toBe(true);
    }
    expect(bPrompts.length).toBe(aPrompts.length);
    for (let i = 0; i < aPrompts.length; i++) {
      expect(bPrompts[i]!.prompt.stable, `episode ${i + 1} stable`).toBe(aPrompts[i]!.prompt.stable);
      expect(bPrompts[i]!.prompt.dynamic, `episode ${i + 1} dynamic`).toBe(aPrompts[i]!.prompt.dynamic);
    }
    // The prompt really is under the point of view.
    expect(aPrompts.at(-1)!.prompt.dynamic).toContain(`(${POV}): only what they witness or know`);
  });

  it("stable blocks are a byte-identical prefix across a chapter's episodes, also in the Claude request", async () => {
    const a = await world();
    const prompts: SceneRequest[] = [];
    const engine = engineOver(a, manager(a.store, a.vectors, a.keywords), prompts);
    for (let i = 0; i < EPISODES; i++) expect((await engine.runEpisode(STORY)).complete).toBe(true);
    let checked = 0;
    for (let i = 1; i < prompts.length; i++) {
      const before = prompts[i - 1]!;
      const now = prompts[i]!;
      if (before.chapterId !== now.chapterId) continue;
      expect(now.prompt.stable.startsWith(before.prompt.stable), `episode ${i + 1}`).toBe(true);
      const blocksBefore = before.prompt.stableBlocks ?? [];
      const blocksNow = now.prompt.stableBlocks ?? [];
      expect(blocksNow.slice(0, blocksBefore.length), `episode ${i + 1} blocks`).toEqual(blocksBefore);
      const system = (r: SceneRequest) =>
        (buildClaudeRequest(r, { model: 'm', maxTokens: 100 }).system as Array<{ text: string }>).map((b) => b.text);
      const sBefore = system(before);
      expect(system(now).slice(0, sBefore.length), `episode ${i + 1} system`).toEqual(sBefore);
      checked++;
    }
    expect(checked).toBeGreaterThan(5);
  });

  it('a crash between commit and index step, then a resumed run, gives the same next prompts', async () => {
    const aPrompts = await oneProcess();

    const b = await world();
    const bPrompts: SceneRequest[] = [];
    let failIndex = true;
    for (let i = 0; i < EPISODES; ) {
      const context = manager(b.store, b.vectors, b.keywords);
      const crashing = {
        getRelevantContext: context.getRelevantContext.bind(context),
        refreshCache: context.refreshCache.bind(context),
        indexScene: async (...args: Parameters<ContextManager['indexScene']>) => {
          // The process dies after the commit of scenes 4 (closes chapter 0) and 7, before their index step.
          if (failIndex && (args[0].index === 4 || args[0].index === 7)) {
            failIndex = false;
            throw new Error('killed');
          }
          failIndex = true;
          return context.indexScene(...args);
        },
      };
      const engine = engineOver(b, crashing, bPrompts);
      const result = await engine.runEpisode(STORY, {});
      if (result.outcome !== 'resumed') i++;
    }
    expect(bPrompts.length).toBe(aPrompts.length);
    for (let i = 0; i < aPrompts.length; i++) {
      expect(bPrompts[i]!.prompt.stable, `episode ${i + 1} stable`).toBe(aPrompts[i]!.prompt.stable);
      expect(bPrompts[i]!.prompt.dynamic, `episode ${i + 1} dynamic`).toBe(aPrompts[i]!.prompt.dynamic);
    }
  });

  it('a process with durable vectors and its own keyword side gives the prompts a single process gives', async () => {
    const aPrompts = await oneProcess(true);

    const b = await world(true);
    const bPrompts: SceneRequest[] = [];
    for (let i = 0; i < EPISODES; i++) {
      // A new Lambda each episode: the vectors outlive it, its keyword index does not.
      const bEngine = engineOver(b, manager(b.store, b.vectors), bPrompts);
      expect((await bEngine.runEpisode(STORY)).complete).toBe(true);
    }
    for (let i = 0; i < aPrompts.length; i++) {
      expect(bPrompts[i]!.prompt.stable, `episode ${i + 1} stable`).toBe(aPrompts[i]!.prompt.stable);
      expect(bPrompts[i]!.prompt.dynamic, `episode ${i + 1} dynamic`).toBe(aPrompts[i]!.prompt.dynamic);
    }
  });

  it('does not name in the task a character or thread introduced where the point of view was not', async () => {
    const { store, options, state: created } = await newKeepersStory(6);
    const context = new ContextManager(options);
    let { state } = await commitNextScene(store, created, { characters: ['mira', 'tobin'] }, {}, context);
    // Scene 1, without Mira: Tobin meets Wren, a smuggler, and a secret thread opens between them.
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['tobin', 'wren'], summary: 'Tobin meets a smuggler at the harbour.' },
      {
        characters: {
          ...state.characters,
          wren: CharacterStateSchema.parse({ id: 'wren', name: 'Wren Hollis', role: 'main' }),
        },
        plotThreads: [
          ...state.plotThreads,
          PlotThreadSchema.parse({
            id: 'tunnel',
            title: 'The smuggler tunnel under the bell',
            importance: 0.95,
            characters: ['tobin', 'wren'],
            openedIn: 'tale-s1',
            lastAdvancedIn: 'tale-s1',
          }),
        ],
      },
      context,
    ));
    const prompt = await nextPromptOfMira(store, context);
    const text = prompt.stable + prompt.dynamic;
    expect(text).toContain('from the point of view of Mira Vale');
    // What Mira knows is still the focus (Tobin, whom she met in scene 0, included); Wren and the tunnel, which she has
    // never met nor heard of, are not named.
    expect(prompt.dynamic).toMatch(/^Focus: Characters: Mira Vale, Tobin Marsh\. Threads: Why the island drifts$/m);
    expect(text).not.toContain('Wren');
    expect(text).not.toContain('smuggler tunnel');
  });

  it('does not name in the focus a thread of its cast it never saw, nor a title it never heard', async () => {
    const { store, options, state: created } = await newKeepersStory(6);
    const context = new ContextManager(options);
    let { state } = await commitNextScene(store, created, { characters: ['mira', 'tobin'] }, {}, context);
    // Scene 1, without Mira: the drift thread is renamed, and a tunnel thread opens with Mira in its cast.
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['tobin'], summary: 'Tobin charts the drift alone.' },
      {
        plotThreads: [
          { ...state.plotThreads[0]!, title: 'The course the island keeps', lastAdvancedIn: 'tale-s1' },
          PlotThreadSchema.parse({
            id: 'tunnel',
            title: 'The smuggler tunnel under the bell',
            importance: 0.95,
            characters: ['tobin', 'mira'],
            openedIn: 'tale-s1',
            lastAdvancedIn: 'tale-s1',
          }),
        ],
      },
      context,
    ));
    const known = await context.knownTo('tale', 'mira');
    expect(known.threads.map((thread) => [thread.id, thread.title])).toEqual([['drift', 'Why the island drifts']]);
    const prompt = await nextPromptOfMira(store, context);
    // Both threads have Mira in their cast; she knows one, by the title she last heard.
    expect(prompt.dynamic).toMatch(/^Focus: Characters: Mira Vale, Tobin Marsh\. Threads: Why the island drifts$/m);
    const text = prompt.stable + prompt.dynamic;
    expect(text).not.toContain('smuggler tunnel');
    expect(text).not.toContain('The course the island keeps');
    // Without a point of view, both are the focus, by their titles now.
    expect(buildEpisodeQuery(state, { winner: null }, null)).toBe(buildEpisodeQuery(state, { winner: null }));
    expect(buildEpisodeQuery(state, { winner: null })).toContain(
      'Threads: The smuggler tunnel under the bell; The course the island keeps',
    );
  });

  it('does not name in the focus a character given a relationship to it in a scene it was not in', async () => {
    const { store, options, state: created } = await newKeepersStory(6);
    const context = new ContextManager(options);
    let { state } = await commitNextScene(store, created, { characters: ['mira', 'tobin'] }, {}, context);
    // Scene 1, without Mira: Vex arrives, and the scene gives Mira a tie to Vex.
    const mira = state.characters.mira!;
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['tobin', 'vex'], summary: 'A stranger lands at night.' },
      {
        characters: {
          ...state.characters,
          mira: {
            ...mira,
            relationships: { ...mira.relationships, vex: { kind: 'rival', affinity: -0.4, trust: 0.1, since: null } },
          },
          vex: CharacterStateSchema.parse({ id: 'vex', name: 'Vex the Hidden', role: 'main' }),
        },
      },
      context,
    ));
    expect((await context.knownTo('tale', 'mira')).characterIds).not.toContain('vex');
    // The query as the state alone suggests it names Vex (a relationship); the engine asks its context layer instead.
    expect(buildEpisodeQuery(state, { winner: null }, { povCharacterId: 'mira' })).toContain('Vex the Hidden');
    const prompt = await nextPromptOfMira(store, context);
    expect(prompt.dynamic).toMatch(/^Focus: Characters: Mira Vale, Tobin Marsh\. /m);
    expect(prompt.stable + prompt.dynamic).not.toContain('Vex');
  });

  it('fails the episode with a ValidationError when a context layer answers knownTo with something else', async () => {
    const { store, options, state: created } = await newKeepersStory(6);
    const manager = new ContextManager(options);
    await commitNextScene(store, created, { characters: ['mira'] }, {}, manager);
    for (const answer of [null, { threads: [] }, { characterIds: ['mira'], threads: [null] }, []]) {
      const generator = createMockSceneGenerator({
        respond: () => ({ scene: { title: 'T', text: 'Text.', summary: 'S.', characters: ['mira'] }, delta: {} }),
      });
      const context = {
        getRelevantContext: manager.getRelevantContext.bind(manager),
        indexScene: manager.indexScene.bind(manager),
        knownTo: async () => answer as never,
      };
      const engine = createStoryEngine({ store, context, generator, retrieval: { povCharacterId: 'mira' } });
      let error: unknown;
      for (let run = 0; run < 3 && error === undefined; run++) {
        error = await engine.runEpisode('tale').then(
          () => undefined,
          (caught: unknown) => caught,
        );
      }
      expect(ValidationError.isInstance(error), `${JSON.stringify(answer)}: ${String(error)}`).toBe(true);
      expect(String(error)).toContain('context.knownTo must return');
      expect(generator.calls).toHaveLength(0);
    }
  });

  it('knownTo refuses what is not a character of the story, and follows an abort', async () => {
    const { store, options, state: created } = await newKeepersStory(6);
    const context = new ContextManager(options);
    await commitNextScene(store, created, { characters: ['mira'] }, {}, context);
    for (const pov of ['nobody', 'constructor', null, 7]) {
      const error = await context.knownTo('tale', pov as string).catch((caught: unknown) => caught);
      expect(ValidationError.isInstance(error), String(pov)).toBe(true);
    }
    const other = makeStoryState('elsewhere');
    await expect(context.knownTo('tale', 'mira', { state: other })).rejects.toThrow(/belongs to "elsewhere"/);
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await expect(context.knownTo('tale', 'mira', { signal: controller.signal })).rejects.toSatisfy((error: unknown) =>
      AbortedError.isInstance(error),
    );
    expect((await context.knownTo('tale', 'mira')).threads.map((thread) => thread.id)).toEqual(['drift']);
  });

  it('buildEpisodeQuery under a point of view names only the characters and threads it knows', () => {
    const main = (id: string, name: string, extra: object = {}) =>
      CharacterStateSchema.parse({ id, name, role: 'main', ...extra });
    const state = makeStoryState('tale', {
      characters: {
        mira: main('mira', 'Mira Vale', {
          lastAppearance: 'tale-s7',
          relationships: { oren: { kind: 'sister', affinity: 0.6, trust: 0.7 } },
        }),
        oren: main('oren', 'Oren Vale', { lastAppearance: 'tale-s2' }),
        tobin: main('tobin', 'Tobin Marsh', { lastAppearance: 'tale-s7' }),
        wren: main('wren', 'Wren Hollis', { lastAppearance: 'tale-s8' }),
      },
      plotThreads: [
        PlotThreadSchema.parse({ id: 'drift', title: 'Why the island drifts', importance: 0.5, characters: ['mira'] }),
        PlotThreadSchema.parse({ id: 'tunnel', title: 'The smuggler tunnel', importance: 0.9, characters: ['wren'] }),
      ],
    });
    // The whole story's query, without a point of view.
    expect(buildEpisodeQuery(state, { winner: null })).toBe(
      'Characters: Mira Vale, Oren Vale, Tobin Marsh, Wren Hollis. Threads: The smuggler tunnel; Why the island drifts',
    );
    // Mira: herself, her sister (a relationship), Tobin (in her last scene, tale-s7); not Wren nor Wren's thread.
    expect(buildEpisodeQuery(state, { winner: null }, { povCharacterId: 'mira' })).toBe(
      'Characters: Mira Vale, Oren Vale, Tobin Marsh. Threads: Why the island drifts',
    );
    // With what she knows (from the context layer): each thread by the title she knows; only the characters named.
    const known = {
      characterIds: ['mira', 'oren', 'tobin'],
      threads: [{ id: 'drift', title: 'The island that wanders' }],
    };
    expect(buildEpisodeQuery(state, { winner: null }, { povCharacterId: 'mira', known })).toBe(
      'Characters: Mira Vale, Oren Vale, Tobin Marsh. Threads: The island that wanders',
    );
    expect(
      buildEpisodeQuery(
        state,
        { winner: null },
        { povCharacterId: 'mira', known: { characterIds: ['mira', 'wren'], threads: [] } },
      ),
    ).toBe('Characters: Mira Vale, Wren Hollis');
    // Known threads outside her cast stay out, and without a point of view the option changes nothing.
    expect(
      buildEpisodeQuery(
        state,
        { winner: null },
        { povCharacterId: 'mira', known: { ...known, threads: state.plotThreads } },
      ),
    ).toBe('Characters: Mira Vale, Oren Vale, Tobin Marsh. Threads: Why the island drifts');
    expect(buildEpisodeQuery(state, { winner: null }, { known: { characterIds: [], threads: [] } })).toBe(
      buildEpisodeQuery(state, { winner: null }),
    );
  });
});
