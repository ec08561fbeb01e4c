/**
 * Edges of what the prompt tells past the chapter journal, of the state standing in for a chapter start not stored,
 * and of the walk of a point of view's plot threads: each a way a death, or the same prompt in every process, was lost.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { CharacterStateSchema } from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import {
  battleStory,
  commitNextScene,
  importedWithout,
  longNight,
  memoryOptions,
  newKeepersStory,
  withDead,
} from './fixtures/keepers.js';

const taskOf = (dynamic: string) => dynamic.split('\n# ')[0]!;

describe('no point of view: the net comparison past the journal', () => {
  it('a character met and killed past the journal share is named dead in the task', async () => {
    const { store, options, state: created } = await newKeepersStory(60);
    const manager = new ContextManager(options);
    let state = created;
    for (let night = 0; night < 18; night++) {
      ({ state } = await commitNextScene(store, state, { summary: longNight(night) }, {}, manager));
    }
    const wren = CharacterStateSchema.parse({ id: 'wren', name: 'Wren Stranger', role: 'minor' });
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['mira', 'wren'], summary: 'A stranger washes ashore.' },
      { characters: { ...state.characters, wren } },
      manager,
    ));
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['mira', 'wren'], summary: 'The stranger drowns.' },
      withDead(state, 'wren'),
      manager,
    ));
    for (let night = 0; night < 4; night++) {
      ({ state } = await commitNextScene(store, state, { summary: longNight(30 + night) }, {}, manager));
    }
    const bundle = await manager.getRelevantContext('tale', 'the lamp');
    expect(bundle.prompt.stable).not.toMatch(/washes ashore/);
    // The dead stranger must be bound by the required task, as a death of a cast member is.
    expect(bundle.prompt.dynamic).toMatch(/New: Wren Stranger[^\n]*dead/);
    expect(taskOf(bundle.prompt.dynamic)).toMatch(/Dead, though[^\n]*Wren Stranger/);
  });

  it('a death past the journal is told when the state the journal last scene left is not stored', async () => {
    const { store, options, state: created } = await newKeepersStory(60);
    const manager = new ContextManager(options);
    let state = created;
    for (let night = 0; night < 18; night++) {
      ({ state } = await commitNextScene(store, state, { summary: longNight(night) }, {}, manager));
    }
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['mira', 'gull'], summary: 'A storm night.' },
      withDead(state, 'gull'),
      manager,
    ));
    for (let night = 0; night < 4; night++) {
      ({ state } = await commitNextScene(store, state, { summary: longNight(30 + night) }, {}, manager));
    }
    const full = await manager.getRelevantContext('tale', 'the lamp');
    expect(full.prompt.dynamic).toMatch(/Old Gull: now dead/);
    const lastId = full.trace.included
      .filter((item) => item.id.startsWith('journal:'))
      .at(-1)!
      .id.slice(8);
    const last = (await store.getScene('tale', lastId))!;
    const imported = await importedWithout(store, 'tale', (version) => version === last.stateVersion);
    const cold = new ContextManager(memoryOptions(imported));
    await cold.reindex('tale');
    const bundle = await cold.getRelevantContext('tale', 'the lamp');
    // Same journal, same scenes past it: only one snapshot is missing.
    expect(bundle.trace.included.filter((item) => item.id.startsWith('journal:')).at(-1)!.id).toBe(`journal:${lastId}`);
    expect(bundle.prompt.stable).not.toMatch(/A storm night/);
    expect(`${bundle.prompt.dynamic}`).toMatch(/Old Gull/);
  });
});

describe('the thread walk gate', () => {
  it('a store read that throws synchronously, queued behind 8 others, rejects the call instead of hanging', async () => {
    const inner = createMemoryStateStore();
    const base = makeStoryState('tale');
    const threads = Array.from({ length: 10 }, (_, i) => ({
      ...base.plotThreads[0]!,
      id: `thread-${i}`,
      title: `Thread ${i}`,
      openedIn: `lost-${i}`,
    }));
    let state = await inner.create(makeStoryState('tale', { plotThreads: threads }));
    const options = memoryOptions(inner);
    const manager = new ContextManager(options);
    for (let i = 0; i < 2; i++) ({ state } = await commitNextScene(inner, state, {}, {}, manager));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const store = new Proxy(inner, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver);
        if (typeof value !== 'function') return value;
        if (property === 'getScene') {
          return (storyId: string, id: string) => {
            // A custom store validating ids synchronously.
            if (id === 'lost-9') throw new Error('invalid scene id');
            return new Promise((resolve) => setTimeout(resolve, 30)).then(() => value.call(target, storyId, id));
          };
        }
        return value.bind(target);
      },
    });
    const cold = new ContextManager({ ...options, store });
    const outcome = await Promise.race([
      cold.getRelevantContext('tale', 'the lamp', { povCharacterId: 'mira' }).then(
        () => 'laid out',
        () => 'rejected',
      ),
      new Promise((resolve) => setTimeout(() => resolve('hung'), 3_000)),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    process.off('unhandledRejection', onUnhandled);
    expect(outcome).not.toBe('hung');
    expect(unhandled).toEqual([]);
  });
});

describe('the chapter-start stand-in in cold processes', () => {
  it('a long chapter none of whose first scenes left a stored state: each cold episode lays out the same chapter-constant block', async () => {
    const { store, state: created } = await newKeepersStory(200);
    let state = created;
    for (let night = 0; night < 40; night++)
      ({ state } = await commitNextScene(store, state, { summary: `Night ${night}.` }));
    const head = state.version;
    // An import lacking the chapter's snapshots (all but the head's).
    const imported = await importedWithout(store, 'tale', (version) => version < head);
    const coldBlocks: string[] = [];
    let live = await imported.load('tale');
    for (let episode = 0; episode < 3; episode++) {
      const cold = new ContextManager(memoryOptions(imported));
      if (episode === 0) await cold.reindex('tale');
      const bundle = await cold.getRelevantContext('tale', 'the lamp');
      coldBlocks.push(bundle.prompt.stableBlocks[0]!);
      ({ state: live } = await commitNextScene(
        imported,
        live,
        { summary: `Episode ${episode}.` },
        {
          worldState: { ...live.worldState, tide: `high ${episode}` },
        },
      ));
    }
    // Scenes committed since the import are stored: a cold process could stand the first of them in.
    expect(new Set(coldBlocks).size).toBe(1);
  });
});

const told = (bundle: { prompt: { stable: string; dynamic: string } }) =>
  `${bundle.prompt.stable}${bundle.prompt.dynamic}`;
const GULL_DEAD = /Old Gull[^\n]*dead|Dead[^\n]*Old Gull/;

describe('a death in a journal scene whose state snapshot is missing', () => {
  /** 3 quiet nights, Old Gull dies on night 4 (its snapshot dropped on import), then `after` more nights. */
  async function story(after: number, summary: (night: number) => string = () => 'A quiet night.') {
    const { store, state: created } = await newKeepersStory(200);
    let state = created;
    for (let night = 0; night < 3; night++)
      ({ state } = await commitNextScene(store, state, { summary: summary(night) }));
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['mira', 'gull'], summary: 'A storm night.' },
      withDead(state, 'gull'),
    ));
    const deathVersion = state.version;
    for (let night = 0; night < after; night++)
      ({ state } = await commitNextScene(store, state, { summary: summary(10 + night) }));
    return importedWithout(store, 'tale', (version) => version === deathVersion);
  }

  it('is told, though the journal entry of its scene cannot tell it (the journal within its share)', async () => {
    const imported = await story(3);
    const cold = new ContextManager(memoryOptions(imported));
    await cold.reindex('tale');
    // The chapter start shows "Old Gull — supporting, active"; the changes since it, taken from there, say otherwise.
    expect(told(await cold.getRelevantContext('tale', 'the lamp'))).toMatch(GULL_DEAD);
  });

  it('is told when the chapter runs past the journal share too', async () => {
    const imported = await story(24, longNight);
    const cold = new ContextManager(memoryOptions(imported));
    await cold.reindex('tale');
    const bundle = await cold.getRelevantContext('tale', 'the lamp');
    // Past the share: the journal's last scene left a stored state, compared with the current one (no change).
    expect(bundle.trace.included.some((item) => item.id.startsWith('chapter:'))).toBe(true);
    expect(told(bundle)).toMatch(GULL_DEAD);
  });
});

describe('the required task under a point of view', () => {
  it('under a point of view the task names at most 12 of the dead, both lists together', async () => {
    const { options, store, state: battleState } = await battleStory(40);
    let state = battleState;
    // Tobin and Old Gull die where Mira is not.
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['tobin', 'gull'], summary: 'Far away.' },
      {
        characters: {
          ...state.characters,
          tobin: { ...state.characters.tobin!, status: 'dead' as const },
          gull: { ...state.characters.gull!, status: 'dead' as const },
        },
      },
    ));
    const manager = new ContextManager(options);
    const bundle = await manager.getRelevantContext('battle', 'the lamp', { povCharacterId: 'mira' });
    const task = bundle.prompt.dynamic.split('\n# ')[0]!;
    const named = task.match(/\((sailor-\d+|tobin|gull)\)/g) ?? [];
    expect(named.length).toBeLessThanOrEqual(12);
  });

  it('the deaths it does not know are named first: nothing else tells them, while its own are told below too', async () => {
    const { options, store, state: battleState } = await battleStory(40);
    // Tobin dies far from Mira, after the 40 deaths she saw.
    const { state } = await commitNextScene(
      store,
      battleState,
      { characters: ['tobin'], summary: 'Far away.' },
      withDead(battleState, 'tobin'),
    );
    expect(state.characters.tobin!.status).toBe('dead');
    const bundle = await new ContextManager(options).getRelevantContext('battle', 'the lamp', {
      povCharacterId: 'mira',
    });
    const task = bundle.prompt.dynamic.split('\n# ')[0]!;
    expect(told(bundle)).not.toMatch(/Tobin[^\n]*dead/);
    expect(task).toMatch(/cannot appear or act[^\n]*\(tobin\)/);
    // The sailors she saw die: told by their change items.
    expect(bundle.prompt.dynamic).toMatch(/now dead/);
  });
});

describe('ids of the changes the journal does not tell', () => {
  it('are unique in one packing', async () => {
    const { store, options, state: created } = await newKeepersStory(60);
    let state = created;
    // A scene whose id reads like a change line's, with more changes than its journal entry shows.
    const many = Object.fromEntries(Array.from({ length: 14 }, (_, i) => [`fact-${i}`, i]));
    ({ state } = await commitNextScene(
      store,
      state,
      { id: 'world:tide', summary: 'Many changes.' },
      { worldState: { ...state.worldState, ...many } },
    ));
    for (let night = 0; night < 24; night++)
      ({ state } = await commitNextScene(store, state, { summary: longNight(night) }));
    ({ state } = await commitNextScene(
      store,
      state,
      { summary: 'The tide turns.' },
      { worldState: { ...state.worldState, tide: 'high' } },
    ));
    const manager = new ContextManager(options);
    await manager.reindex('tale');
    const bundle = await manager.getRelevantContext('tale', 'the lamp');
    const ids = bundle.trace.included.filter((item) => item.id.startsWith('changes:')).map((item) => item.id);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('the chapter journal in a new process', () => {
  it('reads each stored state of the chapter once, the current one not at all: the state after a scene is the one before the next', async () => {
    const { store, options, state: created } = await newKeepersStory(40);
    const manager = new ContextManager(options);
    let state = created;
    for (let night = 0; night < 12; night++) ({ state } = await commitNextScene(store, state, {}, {}, manager));
    const reads = new Map<number, number>();
    const counted: StoryStateStore = Object.create(store, {
      getStateAt: {
        value: (storyId: string, version: number) => {
          reads.set(version, (reads.get(version) ?? 0) + 1);
          return store.getStateAt(storyId, version);
        },
      },
    });
    const fresh = new ContextManager({ ...options, store: counted });
    const bundle = await fresh.getRelevantContext('tale', 'the lamp');
    expect(bundle.trace.included.filter((item) => item.section === 'journal')).toHaveLength(12);
    // Version 0 is the chapter's start, which the call has read to lay out the prefix; versions 1 to 11 are each the
    // state after one scene and before the next.
    for (let version = 0; version < state.version; version++) expect(reads.get(version), `version ${version}`).toBe(1);
    // The state after the newest scene is the one the call has.
    expect(reads.get(state.version), 'the current version').toBeUndefined();
  });
});
