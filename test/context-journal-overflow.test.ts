/**
 * What a long chapter changed after its journal is full. The stable part shows the cast, threads and world as the
 * chapter began, and the chapter journal tells what each scene changed, within its share of the budget (and at most
 * a dozen changes a scene). A scene past that share, or a change past that dozen, must still reach the narrator: a
 * death it does not see lets the dead act. Those changes go to the dynamic part, never into the stable prefix, which
 * must stay the prefix of every later prompt of the chapter.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import type { StoryState } from '../src/state/schema.js';
import { battleStory, commitNextScene, longNight, newKeepersStory } from './fixtures/keepers.js';

/** The death of Old Gull and a broken lamp, in a scene Mira and Old Gull are in. */
const stormNight = (state: StoryState) => ({
  characters: { ...state.characters, gull: { ...state.characters.gull!, status: 'dead' as const } },
  worldState: { ...state.worldState, lamp: 'broken' },
});

/** A story of one long chapter: `before` quiet nights, the storm night, then `after` quiet nights. */
async function longChapter(before: number, after: number) {
  const { store, options, state: created } = await newKeepersStory(60);
  const manager = new ContextManager(options);
  let state = created;
  for (let night = 0; night < before; night++) {
    ({ state } = await commitNextScene(store, state, { summary: longNight(night) }, {}, manager));
  }
  ({ state } = await commitNextScene(
    store,
    state,
    { characters: ['mira', 'gull'], summary: 'A storm night.' },
    stormNight(state),
    manager,
  ));
  for (let night = 0; night < after; night++) {
    ({ state } = await commitNextScene(store, state, { summary: longNight(before + 1 + night) }, {}, manager));
  }
  return { store, manager, state };
}

describe('changes of a long chapter past its journal', () => {
  it('a death and a world change in a scene past the journal share reach the prompt, in its dynamic part', async () => {
    const { manager } = await longChapter(18, 6);
    const bundle = await manager.getRelevantContext('tale', 'the lamp');
    // The storm night is past the journal: the journal does not tell it.
    expect(bundle.prompt.stable).not.toMatch(/A storm night/);
    expect(bundle.prompt.dynamic).toMatch(/Old Gull: now dead/);
    expect(bundle.prompt.dynamic).toMatch(/lamp = "broken"/);
    const item = bundle.trace.included.find((included) => included.id.startsWith('changes:'));
    expect(item?.part).toBe('dynamic');
  });

  it('the stable part stays the prefix of the next episode of the chapter', async () => {
    const { store, manager, state } = await longChapter(18, 6);
    const first = await manager.getRelevantContext('tale', 'the lamp');
    await commitNextScene(store, state, { summary: longNight(40) }, {}, manager);
    const second = await manager.getRelevantContext('tale', 'the lamp');
    expect(`${second.prompt.stable}${second.prompt.dynamic}`.startsWith(first.prompt.stable)).toBe(true);
    expect(second.prompt.dynamic).toMatch(/Old Gull: now dead/);
  });

  it('a change past the dozen a journal entry shows reaches the prompt', async () => {
    const { store, options, state: created } = await newKeepersStory(60);
    const manager = new ContextManager(options);
    // A death and fourteen world facts: the entry shows a dozen changes, the death first and the facts in key order.
    const worldState = Object.fromEntries(Array.from({ length: 14 }, (_, i) => [`fact-${i}`, i]));
    const { state } = await commitNextScene(
      store,
      created,
      { characters: ['mira', 'gull'], summary: 'A night of many changes.' },
      { worldState, characters: stormNight(created).characters },
      manager,
    );
    await commitNextScene(store, state, { summary: 'A quiet night.' }, {}, manager);
    const bundle = await manager.getRelevantContext('tale', 'the lamp');
    // The journal tells the scene, but only its first dozen changes: fact-7 to fact-9 come after them.
    expect(bundle.prompt.stable).toMatch(/A night of many changes/);
    expect(bundle.prompt.stable).not.toMatch(/fact-9 = 9/);
    expect(bundle.prompt.dynamic).toMatch(/fact-9 = 9/);
  });

  it('under a point of view, a death it witnessed past the journal reaches the prompt; one it did not is not told', async () => {
    const { store, options, state: created } = await newKeepersStory(60);
    const manager = new ContextManager(options);
    let state = created;
    for (let night = 0; night < 18; night++) {
      ({ state } = await commitNextScene(
        store,
        state,
        { characters: ['mira', 'tobin'], summary: longNight(night) },
        {},
        manager,
      ));
    }
    // Tobin is not there when Old Gull dies; Mira is.
    ({ state } = await commitNextScene(
      store,
      state,
      { characters: ['mira', 'gull'], summary: 'A storm night.' },
      stormNight(state),
      manager,
    ));
    for (let night = 0; night < 6; night++) {
      ({ state } = await commitNextScene(
        store,
        state,
        { characters: ['mira', 'tobin'], summary: longNight(30 + night) },
        {},
        manager,
      ));
    }
    const mira = await manager.getRelevantContext('tale', 'the lamp', { povCharacterId: 'mira' });
    expect(mira.prompt.dynamic).toMatch(/Old Gull: now dead/);
    expect(mira.prompt.dynamic).toMatch(/lamp = "broken"/);
    const tobin = await manager.getRelevantContext('tale', 'the lamp', { povCharacterId: 'tobin' });
    const tobinPrompt = `${tobin.prompt.stable}${tobin.prompt.dynamic}`;
    expect(tobinPrompt).not.toMatch(/now dead|A storm night|broken/);
    // The story's continuity still holds for him: the dead cannot act, without saying why.
    expect(tobinPrompt).toMatch(/cannot appear or act[^\n]*Old Gull/);
  });
});

describe('the cost and size of what the journal does not tell', () => {
  it('the task names a bounded number of the dead, so a budget that lays out the chapter still does', async () => {
    const quiet = (await battleStory(0)).manager;
    const battle = (await battleStory(40)).manager;
    let smallest = Number.NaN;
    for (let budget = 256; budget < 20_000; budget += 32) {
      const laidOut = await quiet.getRelevantContext('battle', 'the lamp', { tokenBudget: budget }).then(
        () => true,
        () => false,
      );
      if (laidOut) {
        smallest = budget;
        break;
      }
    }
    expect(Number.isFinite(smallest)).toBe(true);
    const bundle = await battle.getRelevantContext('battle', 'the lamp', { tokenBudget: smallest });
    const task = bundle.prompt.dynamic.split('\n').find((line) => line.startsWith('Dead, though'));
    expect(task).toMatch(/sailor-0\b.*and 28 more\.$/);
    // With room (the default budget), every death is told: by the journal, or by the changes it does not tell.
    const roomy = await battle.getRelevantContext('battle', 'the lamp');
    const told = `${roomy.prompt.stable}${roomy.prompt.dynamic}`;
    for (let i = 0; i < 40; i++) expect(told).toContain(`Sailor Number ${i}: now dead`);
  });

  it('under a tight budget the changes go a line at a time, not all or nothing', async () => {
    const battle = (await battleStory(40)).manager;
    const bundle = await battle.getRelevantContext('battle', 'the lamp', { tokenBudget: 3_000 });
    const placed = bundle.trace.included.filter((item) => item.id.startsWith('changes:'));
    const cut = bundle.trace.omitted.filter((item) => item.id.startsWith('changes:'));
    expect(placed.length).toBeGreaterThan(0);
    expect(cut.length).toBeGreaterThan(0);
    // The deaths go in before the other changes.
    expect(placed.every((item) => /^changes:net:changed-character:sailor-/.test(item.id))).toBe(true);
  });

  it('a long chapter past the journal share costs a few state reads, not two per scene', async () => {
    const { store, options, state: created } = await newKeepersStory(1_000);
    let state = created;
    for (let night = 0; night < 300; night++) {
      ({ state } = await commitNextScene(store, state, { characters: ['mira'], summary: longNight(night) }));
    }
    await new ContextManager(options).reindex('tale');
    let reads = 0;
    const counted = new Proxy(store, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver);
        if (typeof value !== 'function') return value;
        if (property === 'getStateAt') {
          return (...args: unknown[]) => {
            reads++;
            return (value as (...given: unknown[]) => unknown).apply(target, args);
          };
        }
        return value.bind(target);
      },
    });
    const cold = () => new ContextManager({ ...options, store: counted });
    await cold().getRelevantContext('tale', 'the lamp');
    // The journal's own entries read two each (they fit its share, a handful), the changes past it one.
    const withoutPov = reads;
    expect(withoutPov).toBeLessThan(40);
    reads = 0;
    await cold().getRelevantContext('tale', 'the lamp', { povCharacterId: 'mira' });
    // A point of view is told the newest scenes past the share, each scene's own: a bounded number.
    expect(reads).toBeLessThan(withoutPov + 2 * 24 + 10);
  });
});
