/**
 * A point of view in the current chapter: characters met, introduced or lost since the chapter began, and a story
 * whose stored states have a gap; plot threads as the point of view last saw them. The chapter-start sheets are
 * covered in src/context/context-manager.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { applyDelta, assertContinuity } from '../src/state/reducer.js';
import {
  type CharacterState,
  CharacterStateSchema,
  chapterIdFor,
  type PlotThread,
  type Scene,
  type StateDeltaInput,
  type StoryState,
} from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';
import { importedWithout, memoryOptions } from './fixtures/keepers.js';

async function newStory() {
  const store = createMemoryStateStore();
  const state = await store.create(
    makeStoryState('tale', { bible: { ...makeStoryState('tale').bible, chapterLength: 4 } }),
  );
  const options = memoryOptions(store);
  return { store, state, options, manager: new ContextManager(options) };
}

/** Commits one more scene with `characters` present and the state changed by `next`, indexed by `manager`. */
async function commit(
  store: StoryStateStore,
  manager: ContextManager,
  state: StoryState,
  characters: string[],
  next: (before: StoryState) => Partial<StoryState> = () => ({}),
): Promise<{ state: StoryState; scene: Scene }> {
  const scene = makeNextScene(state, { characters });
  const committed = (
    await store.commitScene('tale', {
      expectedVersion: state.version,
      scene,
      nextState: makeNextState(state, scene, next(state)),
      consumedInfluenceIds: [],
    })
  ).state;
  await manager.indexScene(scene, { state: committed });
  return { state: committed, scene };
}

/** The state change of a scene that closes the chapter: the story moves on to chapter `index`. */
const closeChapter = (index: number) => () => ({ chapterIndex: index, chapterId: chapterIdFor(index) });

const change = (id: string, patch: Partial<CharacterState>) => (before: StoryState) => ({
  characters: { ...before.characters, [id]: { ...before.characters[id]!, ...patch } },
});

const WREN = CharacterStateSchema.parse({
  id: 'wren',
  name: 'Wren Hollis',
  role: 'minor',
  description: 'A smuggler who knows the bell tunnels.',
});

const introduceWren = (before: StoryState) => ({ characters: { ...before.characters, wren: WREN } });

describe('ContextManager: a point of view within the current chapter', () => {
  it('keeps a character met in this chapter, who then died away from the point of view, from acting', async () => {
    const { store, manager, state: created } = await newStory();
    // Chapter 0, the current chapter: Mira meets Wren (introduced in that scene); then, without Mira, Wren dies.
    let { state } = await commit(store, manager, created, ['mira', 'wren'], introduceWren);
    ({ state } = await commit(store, manager, state, ['tobin', 'wren'], change('wren', { status: 'dead' })));

    // The narrator's own prompt says Wren is dead.
    const all = await manager.getRelevantContext('tale', 'the lamp at night');
    expect(all.prompt.stable).toContain('- Wren Hollis: now dead');

    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    // Mira's prompt shows Wren alive (the journal's "New:" line of the scene they shared) ...
    expect(seen.prompt.stable).toContain('- New: Wren Hollis (id: wren), minor, active.');
    // ... so, as for Old Gull in the commit's own test, the task must keep the dead from acting.
    expect(seen.prompt.dynamic).toContain('cannot appear or act in it');
    expect(seen.prompt.dynamic).toContain('Wren Hollis (wren)');
  });

  it('does not tell the narrator the point of view does not know of a death it witnessed in this chapter', async () => {
    const { store, manager, state: created } = await newStory();
    // Chapter 0: Mira and Old Gull together; the chapter closes.
    let { state } = await commit(store, manager, created, ['mira', 'gull']);
    ({ state } = await commit(store, manager, state, ['mira', 'tobin'], closeChapter(1)));
    // Chapter 1: Old Gull dies in front of Mira.
    ({ state } = await commit(store, manager, state, ['mira', 'gull'], change('gull', { status: 'dead' })));

    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    // Her journal tells the death, in a scene she was in.
    expect(seen.prompt.stable).toContain('Present: Mira Vale (mira), Old Gull (gull).\n  - Old Gull: now dead');
    // The task must not say she does not know why Old Gull cannot appear.
    expect(seen.prompt.dynamic).not.toContain('Mira Vale does not know why');
  });

  it('traces the scenes the point of view was not in as left out, before the chapter and in it', async () => {
    const { store, manager, state: created } = await newStory();
    // Chapter 0: one scene with Mira, one without; then chapter 1: one with her, one without.
    let { state, scene: before } = await commit(store, manager, created, ['tobin']);
    ({ state } = await commit(store, manager, state, ['mira']));
    ({ state } = await commit(store, manager, state, ['mira', 'tobin']));
    ({ state } = await commit(store, manager, state, ['mira'], closeChapter(1)));
    ({ state } = await commit(store, manager, state, ['mira']));
    const awayFromMira = await commit(store, manager, state, ['tobin']);
    const away = awayFromMira.scene;
    ({ state } = await commit(store, manager, awayFromMira.state, ['mira']));

    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    const omitted = seen.trace.omitted.filter((item) => item.reason === 'mira was not there');
    expect(omitted.map((item) => item.id).sort()).toEqual([`earlier:${before.id}`, `journal:${away.id}`].sort());
    // Neither is in the prompt, and the narrator's own prompt (no point of view) traces nothing as unwitnessed.
    expect(seen.trace.included.map((item) => item.id)).not.toContain(`journal:${away.id}`);
    const all = await manager.getRelevantContext('tale', 'the lamp at night');
    expect(all.trace.omitted.filter((item) => item.reason.endsWith('was not there'))).toEqual([]);
    expect(all.trace.included.map((item) => item.id)).toContain(`journal:${away.id}`);
  });

  it('gives the narrator the id of a character the point of view met in this chapter', async () => {
    const { store, manager, state: created } = await newStory();
    // Chapter 0: Wren is introduced away from Mira, then the two share a scene.
    let { state } = await commit(store, manager, created, ['tobin', 'wren'], introduceWren);
    ({ state } = await commit(store, manager, state, ['mira', 'wren']));

    const all = await manager.getRelevantContext('tale', 'the lamp at night');
    expect(all.prompt.stable).toContain('(id: wren)');
    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    const prompt = seen.prompt.stable + seen.prompt.dynamic;
    // Mira's journal names Wren as present with her, with the id the narrator refers to Wren by ("Refer to
    // characters by their ids"); Wren has no sheet in her prompt, having come into the story in this chapter.
    expect(prompt).toContain('Present: Mira Vale (mira), Wren Hollis (wren).');
    expect(prompt).not.toContain('smuggler');
  });

  it('does not say the point of view never met a character whose snapshot of their last shared scene is missing', async () => {
    // A story imported from an export that lacks one snapshot (exportStory skips missing ones; importStory accepts).
    const { store, manager, state: created } = await newStory();
    let { state } = await commit(store, manager, created, ['mira', 'tobin']);
    const shared = state.version;
    ({ state } = await commit(store, manager, state, ['mira'], closeChapter(1)));
    ({ state } = await commit(store, manager, state, ['mira']));
    const imported = await importedWithout(store, 'tale', (version) => version === shared);
    expect(await imported.getStateAt('tale', shared)).toBeNull();

    const cold = new ContextManager(memoryOptions(imported));
    const seen = await cold.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    // Scene 0 has Mira and Tobin together: the prompt must not tell the narrator they never met.
    expect(seen.prompt.stable).toContain('Mira and Tobin keep watch, night 1.');
    expect(seen.prompt.stable).not.toContain('not met in a scene so far');
    expect(seen.prompt.stable).toContain('- Tobin Marsh (id: tobin), main: last with mira in scene 0');
  });

  it('a death in a journal scene whose previous snapshot is missing is neither shown nor kept from acting', async () => {
    const { store, manager, state: created } = await newStory();
    // Chapter 0: Mira and Old Gull together (alive); the chapter closes.
    let { state } = await commit(store, manager, created, ['mira', 'gull']);
    ({ state } = await commit(store, manager, state, ['mira', 'tobin'], closeChapter(1)));
    // Chapter 1: Mira and Tobin; then Old Gull dies in a scene Mira is in.
    ({ state } = await commit(store, manager, state, ['mira', 'tobin']));
    const gap = state.version;
    ({ state } = await commit(store, manager, state, ['mira', 'gull'], change('gull', { status: 'dead' })));
    // The story comes back from an export lacking one snapshot: the state before the death scene.
    const imported = await importedWithout(store, 'tale', (version) => version === gap);
    expect(await imported.getStateAt('tale', gap)).toBeNull();

    const cold = new ContextManager(memoryOptions(imported));
    const seen = await cold.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    const prompt = `${seen.prompt.stable}\n${seen.prompt.dynamic}`;
    // Old Gull is dead now.
    expect((await imported.load('tale')).characters.gull!.status).toBe('dead');
    // Mira's prompt does not show it anywhere: the sheet is as of scene 0 (active) and the journal entry of the
    // death scene has no change lines (its "before" state is missing) ...
    expect(seen.prompt.stable).toContain('Old Gull (id: gull) — supporting, active');
    expect(prompt).not.toMatch(/Old Gull: now dead|Old Gull \(id: gull\) — supporting, dead/);
    // ... so either the prompt tells the death, or the task keeps Old Gull from acting, as for any death the prompt
    // does not show (the reducer flags a dead character acting).
    expect(prompt).toMatch(/Old Gull: now dead|cannot appear or act in it[^\n]*Old Gull \(gull\)/);
  });

  it("the journal's change lines keep another character's ties to third parties, as the sheets do", async () => {
    const { store, manager, state: created } = await newStory();
    // Chapter 0: Mira and Tobin; in that scene Tobin becomes Old Gull's rival (Old Gull is not there).
    let { state } = await commit(store, manager, created, ['mira', 'tobin'], (before) => ({
      characters: {
        ...before.characters,
        tobin: {
          ...before.characters.tobin!,
          relationships: { gull: { kind: 'secret rival', affinity: -0.7, trust: 0.1, since: null } },
        },
      },
    }));
    ({ state } = await commit(store, manager, state, ['mira']));
    const now = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    // Close the chapter: in the next chapter Tobin's sheet, as that same scene left it, hides the tie ("how the
    // others stand among themselves is theirs").
    ({ state } = await commit(store, manager, state, ['mira'], closeChapter(1)));
    ({ state } = await commit(store, manager, state, ['mira']));
    const later = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    expect(later.prompt.stable).toContain('## Tobin Marsh (id: tobin)');
    expect(later.prompt.stable).not.toContain('secret rival');
    // The journal of the chapter the scene is in must not tell it either: Mira has never even met Old Gull.
    expect(now.prompt.stable).toContain('Old Gull (id: gull), supporting: mira has not met them');
    expect(now.prompt.stable).not.toContain('secret rival');
  });
});

describe('ContextManager: ids that are names of Object.prototype', () => {
  it('names a relationship to "constructor", someone not in the cast yet, by its id, never as "Object"', async () => {
    const { store, manager, state: created } = await newStory();
    const rival = { kind: 'rival', affinity: -0.5, trust: 0.2, since: null };
    const { state } = await commit(store, manager, created, ['mira'], (before) => ({
      characters: {
        ...before.characters,
        mira: { ...before.characters.mira!, relationships: { constructor: rival } },
      },
    }));
    expect(state.characters.mira!.relationships).toHaveProperty('constructor');
    for (const options of [{}, { povCharacterId: 'mira' }]) {
      const { prompt } = await manager.getRelevantContext('tale', 'the lamp at night', options);
      const text = `${prompt.stable}\n${prompt.dynamic}`;
      expect(text).toContain('constructor');
      expect(text).not.toMatch(/\bObject\b/);
    }
  });
});

/** A story whose one thread, "Why the island drifts", is Mira's alone and has a summary from the start. */
async function newThreadStory() {
  const store = createMemoryStateStore();
  const base = makeStoryState('tale');
  const state = await store.create(
    makeStoryState('tale', {
      bible: { ...base.bible, chapterLength: 4 },
      plotThreads: [
        {
          ...base.plotThreads[0]!,
          summary: 'The island drifts a little further east each night.',
        },
      ],
    }),
  );
  return { store, state, manager: new ContextManager(memoryOptions(store)) };
}

/** Commits one more scene with `characters` present, its state change made by the reducer from `delta`. */
async function commitDelta(
  store: StoryStateStore,
  manager: ContextManager,
  state: StoryState,
  characters: string[],
  delta: StateDeltaInput = {},
): Promise<{ state: StoryState; scene: Scene }> {
  const scene = makeNextScene(state, { characters });
  const { state: nextState } = assertContinuity(applyDelta(state, delta, scene));
  const committed = (
    await store.commitScene('tale', { expectedVersion: state.version, scene, nextState, consumedInfluenceIds: [] })
  ).state;
  await manager.indexScene(scene, { state: committed });
  return { state: committed, scene };
}

const CLOSE: StateDeltaInput = { chapterClosed: { summary: '' } };

const promptOf = (bundle: { prompt: { stable: string; dynamic: string } }) =>
  `${bundle.prompt.stable}\n${bundle.prompt.dynamic}`;

/** A thread's state change written by hand, as a caller of `commitScene` may: its record of scenes left as it was. */
const rewriteThread = (id: string, patch: Partial<PlotThread>) => (before: StoryState) => ({
  plotThreads: before.plotThreads.map((thread) => (thread.id === id ? { ...thread, ...patch } : thread)),
});

describe('ContextManager: plot threads as the point of view last saw them', () => {
  it('shows a thread it is in as before an advance it did not witness', async () => {
    const { store, manager, state: created } = await newThreadStory();
    let { state } = await commitDelta(store, manager, created, ['mira', 'tobin']);
    // Scene 1, without Mira: Tobin advances her thread.
    ({ state } = await commitDelta(store, manager, state, ['tobin', 'gull'], {
      threadsAdvanced: [
        {
          id: 'drift',
          summary: 'Old Gull sawed through the anchor chain; Tobin found out.',
          setupsAdded: ['Tobin hides the saw under his bunk'],
        },
      ],
    }));
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));

    const all = await manager.getRelevantContext('tale', 'the lamp at night');
    expect(all.prompt.stable).toContain('Old Gull sawed through the anchor chain');
    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    // Mira knows her thread as the story began: she saw no scene change it since.
    expect(seen.prompt.stable).toContain(
      '- [open] Why the island drifts (id: drift, importance 0.80)\n  The island drifts a little further east each night.\n  Involves: Mira Vale\n',
    );
    expect(promptOf(seen)).not.toContain('sawed through the anchor chain');
    expect(promptOf(seen)).not.toContain('hides the saw');
    expect(seen.trace.included).toContainEqual(
      expect.objectContaining({
        id: 'thread:drift',
        reason: 'open thread, importance 0.8, as mira knew it when the story began',
      }),
    );
  });

  it('does not show a thread it is in as resolved, nor its resolution, when it did not witness the resolution', async () => {
    const { store, manager, state: created } = await newThreadStory();
    let { state } = await commitDelta(store, manager, created, ['mira', 'tobin']);
    ({ state } = await commitDelta(store, manager, state, ['tobin'], {
      threadsResolved: [{ id: 'drift', resolution: 'the island drifts because a whale sleeps beneath it' }],
    }));
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));

    const all = await manager.getRelevantContext('tale', 'the lamp at night');
    expect(all.prompt.stable).toContain('Resolution: the island drifts because a whale sleeps beneath it');
    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    expect(seen.prompt.stable).toContain('- [open] Why the island drifts (id: drift, importance 0.80)');
    expect(promptOf(seen)).not.toContain('[resolved]');
    expect(promptOf(seen)).not.toContain('whale');
  });

  it('leaves out a thread it was added to in a scene it was not in, with what happened before', async () => {
    const { store, manager, state: created } = await newThreadStory();
    let { state } = await commitDelta(store, manager, created, ['mira', 'tobin']);
    ({ state } = await commitDelta(store, manager, state, ['tobin', 'gull'], {
      threadsOpened: [
        {
          id: 'frame',
          title: 'The frame-up',
          summary: 'Tobin and Old Gull stole the lamp oil and agree to blame someone.',
          importance: 0.9,
          characters: ['tobin', 'gull'],
        },
      ],
    }));
    // Scene 2, without her either: they decide to blame Mira.
    ({ state } = await commitDelta(store, manager, state, ['tobin', 'gull'], {
      threadsAdvanced: [{ id: 'frame', charactersAdded: ['mira'] }],
    }));
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));

    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    expect(promptOf(seen)).not.toContain('stole the lamp oil');
    expect(promptOf(seen)).not.toContain('The frame-up');
    expect(seen.trace.omitted).toContainEqual({
      id: 'thread:frame',
      part: 'stable',
      section: '# Plot threads at the start of chapter-0002',
      reason: 'mira never saw it opened or advanced',
    });
    // Tobin saw it all.
    const his = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'tobin' });
    expect(his.prompt.stable).toContain(
      'Tobin and Old Gull stole the lamp oil and agree to blame someone.\n  Involves: Tobin Marsh, Old Gull, Mira Vale',
    );
  });

  it('does not name a thread it is not in and never saw opened or advanced, before or after the chapter closes', async () => {
    const { store, manager, state: created } = await newThreadStory();
    let { state } = await commitDelta(store, manager, created, ['mira', 'tobin']);
    ({ state } = await commitDelta(store, manager, state, ['tobin', 'gull'], {
      threadsOpened: [
        {
          id: 'poison',
          title: 'Tobin plans to poison Old Gull',
          summary: 'Tobin bought arsenic in the harbour town.',
          importance: 0.9,
          characters: ['tobin', 'gull'],
        },
      ],
    }));
    ({ state } = await commitDelta(store, manager, state, ['mira', 'tobin']));
    const now = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    expect(promptOf(now)).not.toContain('poison');
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));

    const all = await manager.getRelevantContext('tale', 'the lamp at night');
    expect(all.prompt.stable).toContain('Tobin plans to poison Old Gull');
    const later = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    expect(promptOf(later)).not.toContain('poison');
    expect(promptOf(later)).not.toContain('arsenic');
    expect(later.prompt.stable).toContain('## Tobin Marsh (id: tobin)');
    expect(later.trace.omitted).toContainEqual(
      expect.objectContaining({ id: 'thread:poison', reason: 'mira never saw it opened or advanced' }),
    );
  });

  it.each([
    ['the reducer', false],
    ['a hand-written state that leaves the thread’s record of scenes as it was', true],
  ])(
    'shows the version it witnessed of a thread advanced again where it was not (state change by %s)',
    async (_, byHand) => {
      const story = await newThreadStory();
      const { store, manager } = story;
      let state = story.state;
      /** One more scene that rewrites the thread's summary, by the reducer or by hand. */
      const advance = async (characters: string[], summary: string) => {
        ({ state } = byHand
          ? await commit(store, manager, state, characters, rewriteThread('drift', { status: 'advancing', summary }))
          : await commitDelta(store, manager, state, characters, { threadsAdvanced: [{ id: 'drift', summary }] }));
      };
      // Scene 0, with Mira: the shore moves. Scene 1, without her: Tobin finds the chain cut.
      await advance(['mira', 'tobin'], 'Mira sees the shore move at night.');
      await advance(['tobin'], 'Tobin finds the anchor chain cut.');
      // In the chapter, her journal tells the change she witnessed, as that scene left the thread.
      const now = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
      expect(now.prompt.stable).toContain(
        '- Thread "Why the island drifts" (drift): open → advancing. Mira sees the shore move at night.',
      );
      expect(promptOf(now)).not.toContain('anchor chain cut');
      ({ state } = await commit(store, manager, state, ['mira'], closeChapter(1)));
      ({ state } = await commit(store, manager, state, ['mira']));

      // In the next chapter, the prefix shows the thread as that same scene left it.
      const later = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
      expect(later.prompt.stable).toContain(
        '- [advancing] Why the island drifts (id: drift, importance 0.80)\n  Mira sees the shore move at night.\n',
      );
      expect(promptOf(later)).not.toContain('anchor chain cut');
      expect(later.trace.included).toContainEqual(
        expect.objectContaining({
          id: 'thread:drift',
          reason: 'advancing thread, importance 0.8, as mira last saw it (scene 0)',
        }),
      );
      const all = await manager.getRelevantContext('tale', 'the lamp at night');
      expect(all.prompt.stable).toContain('Tobin finds the anchor chain cut.');
    },
  );

  it('shows a thread it is not in, which it saw opened, by title, status and cast', async () => {
    const { store, manager, state: created } = await newThreadStory();
    let { state } = await commitDelta(store, manager, created, ['mira', 'tobin', 'gull'], {
      threadsOpened: [
        {
          id: 'bell',
          title: 'The sunken bell',
          summary: 'Tobin and Old Gull swear to raise the sunken bell.',
          importance: 0.6,
          characters: ['tobin', 'gull'],
        },
      ],
    });
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));
    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    expect(seen.prompt.stable).toContain(
      '- [open] The sunken bell (id: bell, importance 0.60)\n  Involves: Tobin Marsh, Old Gull\n',
    );
    // Of a thread it is not in, the summary stays the cast's (it tells what happened in the thread's scenes).
    expect(seen.prompt.stable).not.toContain('swear to raise');
  });

  it('leaves out a thread changed more often since it last saw it than the scenes read back to find out', async () => {
    const { store, manager, state: created } = await newThreadStory();
    let { state } = await commitDelta(store, manager, created, ['mira', 'tobin'], {
      threadsAdvanced: [{ id: 'drift', summary: 'Mira sees the shore move at night.' }],
    });
    for (let night = 1; night <= 20; night++) {
      ({ state } = await commitDelta(store, manager, state, ['tobin'], {
        threadsAdvanced: [{ id: 'drift', summary: `Tobin measures the drift, night ${night}.` }],
      }));
    }
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));
    const seen = await manager.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    expect(promptOf(seen)).not.toContain('Tobin measures the drift');
    expect(seen.prompt.stable).not.toContain('(id: drift');
    expect(seen.trace.omitted).toContainEqual(
      expect.objectContaining({
        id: 'thread:drift',
        reason: 'the stored history does not tell whether mira saw it opened or advanced',
      }),
    );
  });

  it('leaves out a thread whose state after the scene that changed it is not stored', async () => {
    const { store, manager, state: created } = await newThreadStory();
    let { state } = await commitDelta(store, manager, created, ['mira', 'tobin'], {
      threadsAdvanced: [{ id: 'drift', summary: 'Mira sees the shore move at night.' }],
    });
    const gap = state.version;
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));
    const imported = await importedWithout(store, 'tale', (version) => version === gap);
    const cold = new ContextManager(memoryOptions(imported));
    const seen = await cold.getRelevantContext('tale', 'the lamp at night', { povCharacterId: 'mira' });
    expect(seen.prompt.stable).not.toContain('(id: drift');
    expect(seen.trace.omitted).toContainEqual(expect.objectContaining({ id: 'thread:drift' }));
    // The whole story's prompt still shows it, from the chapter start's state.
    const all = await cold.getRelevantContext('tale', 'the lamp at night');
    expect(all.prompt.stable).toContain('Mira sees the shore move at night.');
  });

  it('lays out the threads of the whole story, without a point of view, as at the chapter start', async () => {
    const { store, manager, state: created } = await newThreadStory();
    let { state } = await commitDelta(store, manager, created, ['tobin', 'gull'], {
      threadsOpened: [
        {
          id: 'bell',
          title: 'The sunken bell',
          summary: 'Tobin and Old Gull swear to raise the sunken bell.',
          importance: 0.6,
          characters: ['tobin', 'gull'],
          setups: ['the bell rope is rotten'],
        },
      ],
      threadsAdvanced: [{ id: 'drift', summary: 'Tobin finds the anchor chain cut.' }],
    });
    ({ state } = await commitDelta(store, manager, state, ['tobin'], {
      threadsResolved: [{ id: 'bell', resolution: 'The bell is raised.' }],
    }));
    ({ state } = await commitDelta(store, manager, state, ['mira'], CLOSE));
    ({ state } = await commitDelta(store, manager, state, ['mira']));
    const all = await manager.getRelevantContext('tale', 'the lamp at night');
    expect(all.prompt.stable).toContain(
      [
        '# Plot threads at the start of chapter-0002',
        '- [advancing] Why the island drifts (id: drift, importance 0.80)',
        '  Tobin finds the anchor chain cut.',
        '  Involves: Mira Vale',
        '- [resolved] The sunken bell (id: bell, importance 0.60)',
        '  Tobin and Old Gull swear to raise the sunken bell.',
        '',
        'Resolution: The bell is raised.',
        '  Involves: Tobin Marsh, Old Gull',
        '  Unpaid setups: the bell rope is rotten',
        '',
      ].join('\n'),
    );
    expect(all.trace.omitted.filter((item) => item.id.startsWith('thread:'))).toEqual([]);
    expect(all.trace.included).toContainEqual(
      expect.objectContaining({ id: 'thread:bell', reason: 'resolved thread, importance 0.6' }),
    );
  });
});

describe('ContextManager: a point of view that is not a string', () => {
  it.each([null, 0])('refuses povCharacterId %s, even when a character has that id as a string', async (pov) => {
    const store = createMemoryStateStore();
    const base = makeStoryState('tale', { bible: { ...makeStoryState('tale').bible, chapterLength: 4 } });
    const created = await store.create({
      ...base,
      characters: {
        ...base.characters,
        [String(pov)]: CharacterStateSchema.parse({ id: String(pov), name: 'The Automaton', role: 'main' }),
      },
    });
    const manager = new ContextManager(memoryOptions(store));
    let { state } = await commit(store, manager, created, [String(pov), 'mira']);
    ({ state } = await commit(store, manager, state, ['tobin'], closeChapter(1)));
    ({ state } = await commit(store, manager, state, ['tobin']));
    await expect(
      manager.getRelevantContext('tale', 'gold', { povCharacterId: pov as unknown as string }),
    ).rejects.toMatchObject({ code: 'VALIDATION', problems: [{ path: 'povCharacterId' }] });
    // The id as a string is that character's point of view: Tobin's scenes are not in it.
    const its = await manager.getRelevantContext('tale', 'gold', { povCharacterId: String(pov) });
    expect(its.trace.omitted).toContainEqual(
      expect.objectContaining({ id: `journal:${state.sceneId}`, reason: `${String(pov)} was not there` }),
    );
  });
});
