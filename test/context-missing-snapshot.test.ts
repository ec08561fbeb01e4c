/**
 * A story imported without some of its state snapshots (an export may lack them). The state a chapter began with
 * may then not be stored; the stable part must still be the same bytes in every process and every episode of the
 * chapter (or prompt caching never hits), and a point of view must learn nothing from the state that stands in.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { applyDelta, assertContinuity } from '../src/state/reducer.js';
import type { Scene, StateDeltaInput, StoryState } from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeNextScene, makeStoryState } from '../src/testing/fixtures.js';
import { importedWithout, memoryOptions } from './fixtures/keepers.js';

/** A story of chapters of `chapterLength` scenes, with a manager over the memory defaults. */
async function threadStory(overrides: Partial<StoryState> = {}, chapterLength = 4) {
  const store = createMemoryStateStore();
  const base = makeStoryState('tale');
  const state = await store.create(
    makeStoryState('tale', {
      bible: { ...base.bible, chapterLength },
      plotThreads: [{ ...base.plotThreads[0]!, summary: 'The island drifts a little further east each night.' }],
      ...overrides,
    }),
  );
  const options = memoryOptions(store);
  return { store, state, options, manager: new ContextManager(options) };
}

/** Commits the next scene with `characters` present, through the reducer. */
async function commitDelta(
  store: StoryStateStore,
  manager: ContextManager | undefined,
  state: StoryState,
  characters: string[],
  delta: StateDeltaInput = {},
  scene: Partial<Scene> = {},
): Promise<{ state: StoryState; scene: Scene }> {
  const made = makeNextScene(state, { characters, ...scene });
  const { state: nextState } = assertContinuity(applyDelta(state, delta, made));
  const committed = (
    await store.commitScene('tale', {
      expectedVersion: state.version,
      scene: made,
      nextState,
      consumedInfluenceIds: [],
    })
  ).state;
  if (manager) await manager.indexScene(made, { state: committed });
  return { state: committed, scene: made };
}

/** Closes the chapter. */
const CLOSE: StateDeltaInput = { chapterClosed: { summary: '' } };
const promptOf = (bundle: { prompt: { stable: string; dynamic: string } }) =>
  `${bundle.prompt.stable}\n${bundle.prompt.dynamic}`;

/** Chapters of 4 scenes, 6 scenes: chapter-0002 began at version 4, and its first two scenes left versions 5 and 6. */
async function twoChapters() {
  const { store, manager, state: created } = await threadStory();
  let state = created;
  for (let i = 0; i < 6; i++)
    ({ state } = await commitDelta(store, manager, state, ['mira', 'tobin'], i === 3 ? CLOSE : {}));
  return store;
}

describe('a chapter whose starting state is not stored', () => {
  it('lays out the same stable part in a warm and in a new process, episode after episode', async () => {
    const imported = await importedWithout(await twoChapters(), 'tale', (version) => version === 4);
    const options = memoryOptions(imported);
    const warm = new ContextManager(options);
    await warm.reindex('tale');
    let state = await imported.load('tale');
    const warmPrefixes: string[] = [];
    const coldPrefixes: string[] = [];
    for (let episode = 0; episode < 3; episode++) {
      const fromWarm = await warm.getRelevantContext('tale', 'the lamp', { state });
      const fromCold = await new ContextManager(options).getRelevantContext('tale', 'the lamp', { state });
      expect(fromCold.prompt.stable).toBe(fromWarm.prompt.stable);
      warmPrefixes.push(fromWarm.prompt.stableBlocks[0]!);
      coldPrefixes.push(fromCold.prompt.stableBlocks[0]!);
      // Each episode changes the world: a fact of the chapter, not of its start.
      ({ state } = await commitDelta(imported, warm, state, ['mira', 'tobin'], {
        worldStateSet: { tide: `high ${episode}` },
      }));
    }
    // The chapter-constant block is the same in every episode, and holds none of the chapter's later facts.
    expect(new Set(coldPrefixes).size).toBe(1);
    expect(new Set(warmPrefixes).size).toBe(1);
    expect(coldPrefixes[0]).not.toMatch(/tide/);
  });

  it("with neither it nor the first scene's state stored, a later stored state stands in, alike in every process", async () => {
    const imported = await importedWithout(await twoChapters(), 'tale', (version) => version === 4 || version === 5);
    const options = memoryOptions(imported);
    const warm = new ContextManager(options);
    await warm.reindex('tale');
    let state = await imported.load('tale');
    const first = await warm.getRelevantContext('tale', 'the lamp');
    expect((await new ContextManager(options).getRelevantContext('tale', 'the lamp')).prompt.stable).toBe(
      first.prompt.stable,
    );
    ({ state } = await commitDelta(imported, warm, state, ['mira', 'tobin'], { worldStateSet: { tide: 'high' } }));
    const second = await warm.getRelevantContext('tale', 'the lamp');
    expect(`${second.prompt.stable}${second.prompt.dynamic}`.startsWith(first.prompt.stable)).toBe(true);
    expect((await new ContextManager(options).getRelevantContext('tale', 'the lamp')).prompt.stable).toBe(
      second.prompt.stable,
    );
  });

  it('a point of view learns nothing from the state standing in for a story start not stored', async () => {
    const { store, manager, state: created } = await threadStory();
    // Scene 0, without Mira: Tobin advances her thread with a secret.
    let { state } = await commitDelta(store, manager, created, ['tobin'], {
      threadsAdvanced: [{ id: 'drift', summary: 'SECRET: Tobin sawed the anchor chain.' }],
    });
    ({ state } = await commitDelta(store, manager, state, ['mira']));
    expect(promptOf(await manager.getRelevantContext('tale', 'the lamp', { povCharacterId: 'mira' }))).not.toContain(
      'SECRET',
    );
    const imported = await importedWithout(store, 'tale', (version) => version === 0);
    expect(await imported.getStateAt('tale', 0)).toBeNull();
    const cold = new ContextManager(memoryOptions(imported));
    expect(promptOf(await cold.getRelevantContext('tale', 'the lamp', { povCharacterId: 'mira' }))).not.toContain(
      'SECRET',
    );
  });
});

describe('a thread whose record names a scene not stored', () => {
  it('is known to a point of view in its cast from the start as it stood then, if nothing changed it', async () => {
    const base = makeStoryState('tale');
    const {
      store,
      manager,
      state: created,
    } = await threadStory(
      {
        plotThreads: [
          {
            ...base.plotThreads[0]!,
            summary: 'The island drifts a little further east each night.',
            // A prologue the story was imported with, not one of its scenes.
            openedIn: 'prologue',
          },
        ],
      },
      60,
    );
    let state = created;
    for (let night = 0; night < 25; night++) ({ state } = await commitDelta(store, manager, state, ['mira', 'tobin']));
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));
    expect((await manager.getRelevantContext('tale', 'the lamp')).prompt.stable).toContain('(id: drift');
    const mira = await manager.getRelevantContext('tale', 'the lamp', { povCharacterId: 'mira' });
    expect(mira.prompt.stable).toContain('(id: drift');
    expect(mira.prompt.stable).toContain('The island drifts a little further east each night.');
  });
});
