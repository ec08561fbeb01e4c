/**
 * Edges of what the prompt tells past the chapter journal, of the state standing in for a chapter start not stored,
 * and of the walk of a point of view's plot threads: each a way a death, or the same prompt in every process, was lost.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { CharacterStateSchema, type StoryState } from '../src/state/schema.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { commitNextScene, importedWithout, memoryOptions, newKeepersStory } from './fixtures/keepers.js';

const longNight = (night: number) =>
  `Night ${night} on the island. ${'The lamp turned and the gulls slept on the rocks below while the sea kept its counsel. '.repeat(3)}`;

const withDead = (state: StoryState, id: string) => ({
  characters: { ...state.characters, [id]: { ...state.characters[id]!, status: 'dead' as const } },
});

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
