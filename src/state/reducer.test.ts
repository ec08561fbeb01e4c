import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { ContinuityError } from '../core/errors.js';
import {
  applyDelta,
  assertContinuity,
  CONTINUITY_ISSUE_CODES,
  type ContinuityIssue,
  type ContinuityIssueCode,
  type DeltaResult,
  formatIssues,
} from './reducer.js';
import {
  chapterIdFor,
  LIMITS,
  type SceneInput,
  type StateDeltaInput,
  type StoryState,
  StoryStateSchema,
} from './schema.js';

type StoryStateInput = z.input<typeof StoryStateSchema>;

function influence(id: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    storyId: 'tide',
    source: 'web' as const,
    author: 'reader',
    kind: 'vote' as const,
    choice: 'north',
    receivedAt: '2026-01-01T10:00:00Z',
    ...extra,
  };
}

/**
 * A story three scenes in: Mara and Oren alive, the ghost dead; the lighthouse thread open and important, the debt
 * thread resolved; two pending influences and one already applied.
 */
function baseState(overrides: Partial<StoryStateInput> = {}): StoryState {
  return StoryStateSchema.parse({
    storyId: 'tide',
    version: 3,
    chapterId: chapterIdFor(0),
    chapterIndex: 0,
    sceneId: 'scene-2',
    sceneCount: 3,
    bible: { title: 'The Tide', premise: 'A keeper and a lamp that lights itself.', genre: 'fantasy', tone: 'wry' },
    characters: {
      mara: {
        id: 'mara',
        name: 'Mara',
        role: 'main',
        traits: { courage: 0.6 },
        arcProgress: 0.4,
        relationships: { oren: { kind: 'friend', affinity: 0.5, trust: 0.7, since: 'scene-0' } },
        knowledge: ['the lighthouse is empty'],
      },
      oren: { id: 'oren', name: 'Oren' },
      ghost: { id: 'ghost', name: 'The Ghost', status: 'dead' },
    },
    worldState: { weather: 'storm', tide: { height: 3 } },
    plotThreads: [
      {
        id: 'lighthouse',
        title: 'The Lighthouse',
        summary: 'Who lights the lamp?',
        status: 'open',
        importance: 0.9,
        characters: ['mara'],
        setups: ['a key under the mat'],
      },
      { id: 'debt', title: 'The Debt', status: 'resolved', resolvedIn: 'scene-1', importance: 0.8 },
      { id: 'gull', title: 'The Gull', importance: 0.2 },
    ],
    userInfluenceQueue: [
      influence('inf-1'),
      influence('inf-2', { kind: 'suggestion', text: 'a storm' }),
      influence('inf-done', { status: 'applied' }),
    ],
    createdAt: '2026-01-01T00:00:00Z',
    updatedAt: '2026-01-02T00:00:00Z',
    ...overrides,
  });
}

function sceneFor(state: StoryState, overrides: Partial<SceneInput> = {}): SceneInput {
  return {
    id: `scene-${state.sceneCount}`,
    storyId: state.storyId,
    chapterId: state.chapterId,
    index: state.sceneCount,
    title: 'The Lamp',
    text: 'The lamp was lit again.',
    createdAt: '2026-01-03T08:00:00Z',
    stateVersion: state.version + 1,
    ...overrides,
  };
}

function apply(delta: unknown, sceneOverrides: Partial<SceneInput> = {}, state = baseState()): DeltaResult {
  return applyDelta(state, delta as StateDeltaInput, sceneFor(state, sceneOverrides));
}

function expectIssue(
  result: DeltaResult,
  code: ContinuityIssueCode,
  severity: 'error' | 'warning',
  path: string,
): ContinuityIssue {
  const found = result.issues.find((issue) => issue.code === code && issue.path === path);
  expect(found, `expected ${code} at ${path}, got ${JSON.stringify(result.issues, null, 1)}`).toBeDefined();
  expect(found!.severity).toBe(severity);
  expect(result.ok).toBe(severity === 'warning' ? result.issues.every((i) => i.severity === 'warning') : false);
  return found!;
}

function expectOk(result: DeltaResult): StoryState {
  expect(result.issues.filter((issue) => issue.severity === 'error')).toEqual([]);
  expect(result.ok).toBe(true);
  return result.state;
}

function deepFreeze<T>(value: T): T {
  const stack: unknown[] = [value];
  const seen = new WeakSet<object>();
  while (stack.length > 0) {
    const node = stack.pop();
    if ((typeof node !== 'object' && typeof node !== 'function') || node === null || seen.has(node)) continue;
    seen.add(node);
    Object.freeze(node);
    for (const key of Reflect.ownKeys(node)) stack.push((node as Record<PropertyKey, unknown>)[key]);
  }
  return value;
}

describe('applyDelta: happy paths', () => {
  it('advances the bookkeeping fields of the state', () => {
    const state = baseState();
    const next = expectOk(apply({}));
    expect(next.version).toBe(4);
    expect(next.sceneId).toBe('scene-3');
    expect(next.sceneCount).toBe(4);
    expect(next.updatedAt).toBe('2026-01-03T08:00:00Z');
    expect(next.createdAt).toBe(state.createdAt);
    expect(next.chapterId).toBe(state.chapterId);
    expect(StoryStateSchema.parse(next)).toEqual(next);
  });

  it('introduces a character with relationships, present in the scene', () => {
    const result = apply(
      {
        charactersIntroduced: [
          {
            id: 'ines',
            name: 'Ines',
            traits: { wit: 0.9 },
            relationships: [{ targetId: 'mara', kind: 'rival', affinity: -0.3 }],
            knowledge: ['the lamp burns oil', 'the lamp burns oil'],
          },
        ],
      },
      { characters: ['ines', 'mara'] },
    );
    const next = expectOk(result);
    expect(next.characters.ines).toEqual({
      id: 'ines',
      name: 'Ines',
      aliases: [],
      description: '',
      role: 'supporting',
      status: 'active',
      traits: { wit: 0.9 },
      relationships: { mara: { kind: 'rival', affinity: -0.3, trust: 0.5, since: 'scene-3' } },
      arcProgress: 0,
      introducedIn: 'scene-3',
      lastAppearance: 'scene-3',
      knowledge: ['the lamp burns oil'],
      appearance: '',
    });
    expect(next.characters.mara?.lastAppearance).toBe('scene-3');
    expect(next.characters.oren?.lastAppearance).toBeNull();
  });

  it('updates traits, relationships, arc, knowledge, aliases and status of a character', () => {
    const result = apply(
      {
        characterUpdates: [
          {
            id: 'mara',
            traits: { resolve: 0.7 },
            traitChanges: { courage: 0.1, patience: -0.2 },
            relationships: [
              { targetId: 'oren', affinityChange: 0.2, note: 'saved her' },
              { targetId: 'ghost', kind: 'haunted by', trust: 0.1 },
            ],
            arcProgress: 0.5,
            knowledgeAdded: ['the lighthouse is empty', 'Oren has a key'],
            aliasesAdded: ['The Keeper', 'The Keeper'],
            description: 'A keeper who does not sleep.',
            role: 'main',
          },
          { id: 'oren', status: 'dead' },
        ],
      },
      { characters: ['mara', 'oren'] },
    );
    const next = expectOk(result);
    const mara = next.characters.mara!;
    expect(mara.traits).toEqual({ courage: 0.7, resolve: 0.7, patience: 0.3 });
    expect(mara.relationships.oren).toEqual({
      kind: 'friend',
      affinity: 0.7,
      trust: 0.7,
      note: 'saved her',
      since: 'scene-0',
    });
    expect(mara.relationships.ghost).toEqual({ kind: 'haunted by', affinity: 0, trust: 0.1, since: 'scene-3' });
    expect(mara.arcProgress).toBe(0.5);
    expect(mara.knowledge).toEqual(['the lighthouse is empty', 'Oren has a key']);
    expect(mara.aliases).toEqual(['The Keeper']);
    expect(mara.description).toBe('A keeper who does not sleep.');
    // Oren dies in this very scene, so he may be present in it.
    expect(next.characters.oren?.status).toBe('dead');
    expect(next.characters.oren?.lastAppearance).toBe('scene-3');
  });

  it("changes a character's appearance, and leaves it as it was when an update does not name it", () => {
    const scarred = expectOk(
      apply(
        { characterUpdates: [{ id: 'mara', appearance: 'A burn scar runs down her left cheek.' }] },
        { characters: ['mara', 'oren'] },
      ),
    );
    expect(scarred.characters.mara?.appearance).toBe('A burn scar runs down her left cheek.');
    const before = expectOk(apply({}, { characters: ['mara'] })).characters.mara?.appearance;
    const untouched = expectOk(
      apply({ characterUpdates: [{ id: 'mara', arcProgress: 0.4 }] }, { characters: ['mara'] }),
    );
    expect(untouched.characters.mara?.appearance).toBe(before);
  });

  it('removes a relationship with remove: true', () => {
    const next = expectOk(
      apply({ characterUpdates: [{ id: 'mara', relationships: [{ targetId: 'oren', remove: true }] }] }),
    );
    expect(next.characters.mara?.relationships).toEqual({});
  });

  it('opens, advances and resolves plot threads', () => {
    const result = apply({
      threadsOpened: [
        { id: 'storm', title: 'The Storm', importance: 0.4, characters: ['oren'], setups: ['a barometer'] },
      ],
      threadsAdvanced: [
        {
          id: 'lighthouse',
          summary: 'Someone lights the lamp at midnight.',
          charactersAdded: ['oren', 'mara'],
          setupsAdded: ['footprints in the oil'],
          setupsPaidOff: ['a key under the mat'],
        },
        { id: 'gull', status: 'dormant', importance: 0.1 },
      ],
      threadsResolved: [{ id: 'storm', resolution: 'The storm passes.' }],
    });
    const next = expectOk(result);
    const [lighthouse, debt, gull, storm] = next.plotThreads;
    expect(lighthouse).toMatchObject({
      status: 'advancing',
      summary: 'Someone lights the lamp at midnight.',
      characters: ['mara', 'oren'],
      setups: ['footprints in the oil'],
      lastAdvancedIn: 'scene-3',
    });
    expect(debt).toEqual(baseState().plotThreads[1]);
    expect(gull).toMatchObject({ status: 'dormant', importance: 0.1, lastAdvancedIn: 'scene-3' });
    expect(storm).toEqual({
      id: 'storm',
      title: 'The Storm',
      summary: 'The storm passes.',
      status: 'resolved',
      importance: 0.4,
      characters: ['oren'],
      openedIn: 'scene-3',
      lastAdvancedIn: 'scene-3',
      resolvedIn: 'scene-3',
      setups: ['a barometer'],
    });
    // The barometer was never paid off.
    expectIssue(result, 'SETUPS_UNPAID', 'warning', 'delta.threadsResolved.0.id');
  });

  it('appends the resolution to an existing summary', () => {
    const result = apply({
      threadsAdvanced: [{ id: 'lighthouse', setupsPaidOff: ['a key under the mat'] }],
      threadsResolved: [{ id: 'lighthouse', resolution: 'Oren lit it.' }],
    });
    const next = expectOk(result);
    expect(next.plotThreads[0]).toMatchObject({
      status: 'resolved',
      resolvedIn: 'scene-3',
      summary: 'Who lights the lamp?\n\nResolution: Oren lit it.',
    });
    expect(result.issues).toEqual([]);
  });

  it('sets and unsets world state, prototype-named keys included', () => {
    const next = expectOk(
      apply({
        worldStateSet: { weather: 'calm', constructor: 'a plain key', toString: { nested: [1, 'two', null] } },
        worldStateUnset: ['tide', 'never-set'],
      }),
    );
    expect(next.worldState).toEqual({
      weather: 'calm',
      constructor: 'a plain key',
      toString: { nested: [1, 'two', null] },
    });
    expect(Object.hasOwn(next.worldState, 'constructor')).toBe(true);
    expect(Object.getPrototypeOf(next.worldState)).toBe(Object.prototype);
  });

  it('handles characters whose ids name Object.prototype members', () => {
    const state = baseState();
    const introduced = expectOk(
      apply({ charactersIntroduced: [{ id: 'constructor', name: 'Con' }] }, { characters: ['constructor'] }, state),
    );
    expect(introduced.characters.constructor?.name).toBe('Con');
    // Not in the state: the prototype's `toString` must not be mistaken for a character.
    const unknown = apply({ characterUpdates: [{ id: 'toString', arcProgress: 0.2 }] }, { characters: ['valueOf'] });
    expectIssue(unknown, 'UNKNOWN_CHARACTER', 'error', 'delta.characterUpdates.0.id');
    expectIssue(unknown, 'UNKNOWN_CHARACTER', 'error', 'scene.characters.0');
  });

  it('closes a chapter', () => {
    const result = apply({
      chapterClosed: { summary: 'The lamp is lit.' },
      threadsResolved: [{ id: 'lighthouse', resolution: 'Oren.' }],
    });
    const next = expectOk(result);
    expect(next.chapterIndex).toBe(1);
    expect(next.chapterId).toBe('chapter-0002');
    expect(result.issues.map((issue) => issue.code)).not.toContain('CHAPTER_CLOSED_WITH_OPEN_THREADS');
  });

  it('drops applied and rejected influences from the queue', () => {
    const next = expectOk(
      apply(
        { influencesApplied: ['inf-1'], influencesRejected: [{ id: 'inf-2', reason: 'off topic' }] },
        { influencesApplied: ['inf-1'] },
      ),
    );
    expect(next.userInfluenceQueue.map((item) => item.id)).toEqual(['inf-done']);
  });
});

describe('applyDelta: one issue per code', () => {
  it('INVALID_STATE when the state fails its schema', () => {
    const state = { ...baseState(), version: -1 } as StoryState;
    const result = applyDelta(state, {}, sceneFor(baseState()));
    expectIssue(result, 'INVALID_STATE', 'error', 'state.version');
    expect(result.state).toBe(state);
    expectIssue(applyDelta(null as never, {}, sceneFor(baseState())), 'INVALID_STATE', 'error', 'state');
  });

  it('INVALID_STATE when a character is stored under another key', () => {
    const state = baseState();
    const broken = { ...state, characters: { ...state.characters, mara: { ...state.characters.mara!, id: 'marah' } } };
    expectIssue(applyDelta(broken, {}, sceneFor(state)), 'INVALID_STATE', 'error', 'state.characters.mara.id');
  });

  it('INVALID_DELTA with the path of the bad field', () => {
    const result = apply({ characterUpdates: [{ id: 'mara', arcProgress: 'high' }] });
    expectIssue(result, 'INVALID_DELTA', 'error', 'delta.characterUpdates.0.arcProgress');
    expectIssue(apply(null), 'INVALID_DELTA', 'error', 'delta');
    expectIssue(
      apply({ characterUpdates: [{ id: 'mara', arcProgress: Number.NaN }] }),
      'INVALID_DELTA',
      'error',
      'delta.characterUpdates.0.arcProgress',
    );
  });

  it('INVALID_SCENE with the path of the bad field', () => {
    const state = baseState();
    const { text: _text, ...scene } = sceneFor(state);
    expectIssue(applyDelta(state, {}, scene as SceneInput), 'INVALID_SCENE', 'error', 'scene.text');
  });

  it('UNSAFE_KEY for a __proto__ key, without polluting any prototype', () => {
    const delta = JSON.parse(
      '{"worldStateSet": {"__proto__": {"polluted": "yes"}, "door": {"__proto__": 1}},' +
        ' "characterUpdates": [{"id": "mara", "traitChanges": {"__proto__": 0.1}}]}',
    );
    const result = apply(delta);
    expectIssue(result, 'UNSAFE_KEY', 'error', 'delta.worldStateSet.__proto__');
    expectIssue(result, 'UNSAFE_KEY', 'error', 'delta.worldStateSet.door.__proto__');
    expectIssue(result, 'UNSAFE_KEY', 'error', 'delta.characterUpdates.0.traitChanges.__proto__');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('UNKNOWN_FIELD for a field the delta schema does not know, at any depth, and the rest still applies', () => {
    // A third-party generator's typo, or a change the schema cannot express: zod drops such a field, and the delta
    // came back ok while nothing changed.
    const delta = {
      threadResolved: [{ id: 'quest' }],
      characterUpdates: [{ id: 'mara', name: 'Mara the Bold', arcProgress: 0.4 }],
      chapterClosed: null,
      worldStateSet: { anyKey: { nested: true } },
    };
    const result = apply(delta as StateDeltaInput);
    expectIssue(result, 'UNKNOWN_FIELD', 'warning', 'delta.threadResolved');
    expectIssue(result, 'UNKNOWN_FIELD', 'warning', 'delta.characterUpdates.0.name');
    expect(result.issues.filter((issue) => issue.code === 'UNKNOWN_FIELD')).toHaveLength(2);
    const state = expectOk(result);
    expect(state.characters.mara!.arcProgress).toBe(0.4);
    expect(state.worldState.anyKey).toEqual({ nested: true });
    // A generator that writes another format entirely gets a bounded number of warnings, not one per field.
    const foreign = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`field${i}`, i]));
    const flood = apply(foreign as StateDeltaInput);
    expect(flood.issues.filter((issue) => issue.code === 'UNKNOWN_FIELD')).toHaveLength(20);
  });

  it('SCENE_STORY_MISMATCH', () => {
    expectIssue(apply({}, { storyId: 'other' }), 'SCENE_STORY_MISMATCH', 'error', 'scene.storyId');
  });

  it('SCENE_OUT_OF_ORDER when the scene skips ahead', () => {
    expectIssue(apply({}, { index: 5 }), 'SCENE_OUT_OF_ORDER', 'error', 'scene.index');
  });

  it('SCENE_CHAPTER_MISMATCH', () => {
    expectIssue(apply({}, { chapterId: 'chapter-0002' }), 'SCENE_CHAPTER_MISMATCH', 'error', 'scene.chapterId');
  });

  it('SCENE_VERSION_MISMATCH', () => {
    expectIssue(apply({}, { stateVersion: 9 }), 'SCENE_VERSION_MISMATCH', 'error', 'scene.stateVersion');
  });

  it('DELTA_ALREADY_APPLIED for the last scene id or an index already written, alone', () => {
    const sameId = apply({ charactersIntroduced: [{ id: 'mara', name: 'Mara' }] }, { id: 'scene-2' });
    expectIssue(sameId, 'DELTA_ALREADY_APPLIED', 'error', 'scene.id');
    expect(sameId.issues).toHaveLength(1);
    expectIssue(apply({}, { id: 'scene-x', index: 1 }), 'DELTA_ALREADY_APPLIED', 'error', 'scene.index');
  });

  it('UNKNOWN_CHARACTER in the scene, an update and a thread', () => {
    const result = apply(
      {
        characterUpdates: [{ id: 'nobody', arcProgress: 0.1 }],
        threadsOpened: [{ id: 'new', title: 'New', characters: ['mara', 'stranger'] }],
        threadsAdvanced: [{ id: 'gull', charactersAdded: ['phantom'] }],
      },
      { characters: ['mara', 'ines'] },
    );
    expectIssue(result, 'UNKNOWN_CHARACTER', 'error', 'scene.characters.1');
    expectIssue(result, 'UNKNOWN_CHARACTER', 'error', 'delta.characterUpdates.0.id');
    expectIssue(result, 'UNKNOWN_CHARACTER', 'error', 'delta.threadsOpened.0.characters.1');
    expectIssue(result, 'UNKNOWN_CHARACTER', 'error', 'delta.threadsAdvanced.0.charactersAdded.0');
    expect(result.issues.find((issue) => issue.path === 'scene.characters.1')?.message).toContain('"ines"');
  });

  it('DUPLICATE_CHARACTER when introducing an existing id, or one id twice', () => {
    const result = apply({
      charactersIntroduced: [
        { id: 'oren', name: 'Oren' },
        { id: 'ines', name: 'Ines' },
        { id: 'ines', name: 'Ines again' },
      ],
    });
    expectIssue(result, 'DUPLICATE_CHARACTER', 'error', 'delta.charactersIntroduced.0.id');
    expectIssue(result, 'DUPLICATE_CHARACTER', 'error', 'delta.charactersIntroduced.2.id');
  });

  it('DEAD_CHARACTER_ACTS when a dead character is present', () => {
    const result = apply({}, { characters: ['mara', 'ghost'] });
    const issue = expectIssue(result, 'DEAD_CHARACTER_ACTS', 'error', 'scene.characters.1');
    expect(issue.message).toContain('"ghost"');
  });

  it('DEAD_CHARACTER_ACTS when an update would resurrect a dead character', () => {
    expectIssue(
      apply({ characterUpdates: [{ id: 'ghost', status: 'active' }] }),
      'DEAD_CHARACTER_ACTS',
      'error',
      'delta.characterUpdates.0.status',
    );
  });

  it('UNKNOWN_THREAD when advancing or resolving a missing thread', () => {
    const result = apply({ threadsAdvanced: [{ id: 'nope' }], threadsResolved: [{ id: 'nada' }] });
    expectIssue(result, 'UNKNOWN_THREAD', 'error', 'delta.threadsAdvanced.0.id');
    expectIssue(result, 'UNKNOWN_THREAD', 'error', 'delta.threadsResolved.0.id');
  });

  it('DUPLICATE_THREAD when opening an existing thread', () => {
    expectIssue(
      apply({ threadsOpened: [{ id: 'gull', title: 'Gull' }] }),
      'DUPLICATE_THREAD',
      'error',
      'delta.threadsOpened.0.id',
    );
  });

  it('THREAD_ALREADY_RESOLVED when advancing or resolving a resolved thread', () => {
    const result = apply({ threadsAdvanced: [{ id: 'debt' }], threadsResolved: [{ id: 'debt' }] });
    expectIssue(result, 'THREAD_ALREADY_RESOLVED', 'error', 'delta.threadsAdvanced.0.id');
    expectIssue(result, 'THREAD_ALREADY_RESOLVED', 'error', 'delta.threadsResolved.0.id');
  });

  it('UNKNOWN_SETUP when paying off a setup the thread never had', () => {
    const result = apply({ threadsAdvanced: [{ id: 'lighthouse', setupsPaidOff: ['a gun on the wall'] }] });
    expectIssue(result, 'UNKNOWN_SETUP', 'warning', 'delta.threadsAdvanced.0.setupsPaidOff.0');
    expect(result.ok).toBe(true);
  });

  it('SETUPS_UNPAID when a thread is resolved with setups left', () => {
    const result = apply({ threadsResolved: [{ id: 'lighthouse', resolution: 'Done.' }] });
    const issue = expectIssue(result, 'SETUPS_UNPAID', 'warning', 'delta.threadsResolved.0.id');
    expect(issue.message).toContain('"a key under the mat"');
  });

  it('SUMMARY_REPLACED when summary and resolution do not fit together', () => {
    const state = baseState();
    const long = {
      ...state,
      plotThreads: [{ ...state.plotThreads[2]!, summary: 's'.repeat(LIMITS.summary) }],
    };
    const result = applyDelta(long, { threadsResolved: [{ id: 'gull', resolution: 'Flew off.' }] }, sceneFor(long));
    expectIssue(result, 'SUMMARY_REPLACED', 'warning', 'delta.threadsResolved.0.resolution');
    expect(expectOk(result).plotThreads[0]?.summary).toBe('Flew off.');
  });

  it('SELF_RELATIONSHIP', () => {
    expectIssue(
      apply({ characterUpdates: [{ id: 'mara', relationships: [{ targetId: 'mara', affinity: 1 }] }] }),
      'SELF_RELATIONSHIP',
      'error',
      'delta.characterUpdates.0.relationships.0.targetId',
    );
  });

  it('SELF_RELATIONSHIP refuses changing one a stored state holds, yet lets a delta remove it', () => {
    // The state schema accepts a relationship of a character with itself (older states may hold one).
    const base = baseState();
    const mara = base.characters.mara!;
    const state = StoryStateSchema.parse({
      ...base,
      characters: {
        ...base.characters,
        mara: { ...mara, relationships: { ...mara.relationships, mara: { kind: 'rival' } } },
      },
    });
    const changed = apply(
      { characterUpdates: [{ id: 'mara', relationships: [{ targetId: 'mara', trust: 0.1 }] }] },
      {},
      state,
    );
    expectIssue(changed, 'SELF_RELATIONSHIP', 'error', 'delta.characterUpdates.0.relationships.0.targetId');
    const removed = expectOk(
      apply({ characterUpdates: [{ id: 'mara', relationships: [{ targetId: 'mara', remove: true }] }] }, {}, state),
    );
    expect(removed.characters.mara?.relationships).toEqual(mara.relationships);
    // Removing one that is not there is a no-op, as for any known character; creating one is still refused.
    expectOk(apply({ characterUpdates: [{ id: 'oren', relationships: [{ targetId: 'oren', remove: true }] }] }));
    expectIssue(
      apply({ charactersIntroduced: [{ id: 'ines', name: 'Ines', relationships: [{ targetId: 'ines' }] }] }),
      'SELF_RELATIONSHIP',
      'error',
      'delta.charactersIntroduced.0.relationships.0.targetId',
    );
  });

  it('UNKNOWN_RELATIONSHIP_TARGET', () => {
    const result = apply({
      charactersIntroduced: [{ id: 'ines', name: 'Ines', relationships: [{ targetId: 'nobody' }] }],
      characterUpdates: [{ id: 'mara', relationships: [{ targetId: 'ines' }, { targetId: 'stranger', remove: true }] }],
    });
    expectIssue(
      result,
      'UNKNOWN_RELATIONSHIP_TARGET',
      'error',
      'delta.charactersIntroduced.0.relationships.0.targetId',
    );
    expectIssue(result, 'UNKNOWN_RELATIONSHIP_TARGET', 'error', 'delta.characterUpdates.0.relationships.1.targetId');
    // A relationship to a character introduced by the same delta is fine.
    expect(result.issues.some((issue) => issue.path === 'delta.characterUpdates.0.relationships.0.targetId')).toBe(
      false,
    );
  });

  it('VALUE_OUT_OF_RANGE for traits, affinity, trust, arc progress and importance', () => {
    const result = apply({
      charactersIntroduced: [{ id: 'ines', name: 'Ines', traits: { wit: -0.1 } }],
      characterUpdates: [
        {
          id: 'mara',
          traits: { courage: 1.4 },
          arcProgress: 1.5,
          relationships: [{ targetId: 'oren', affinity: -2, trust: 1.1 }],
        },
      ],
      threadsOpened: [{ id: 'storm', title: 'Storm', importance: 3 }],
      threadsAdvanced: [{ id: 'gull', importance: -1 }],
    });
    const courage = expectIssue(result, 'VALUE_OUT_OF_RANGE', 'error', 'delta.characterUpdates.0.traits.courage');
    expect(courage.message).toContain('1.4');
    expectIssue(result, 'VALUE_OUT_OF_RANGE', 'error', 'delta.charactersIntroduced.0.traits.wit');
    expectIssue(result, 'VALUE_OUT_OF_RANGE', 'error', 'delta.characterUpdates.0.arcProgress');
    expectIssue(result, 'VALUE_OUT_OF_RANGE', 'error', 'delta.characterUpdates.0.relationships.0.affinity');
    expectIssue(result, 'VALUE_OUT_OF_RANGE', 'error', 'delta.characterUpdates.0.relationships.0.trust');
    expectIssue(result, 'VALUE_OUT_OF_RANGE', 'error', 'delta.threadsOpened.0.importance');
    expectIssue(result, 'VALUE_OUT_OF_RANGE', 'error', 'delta.threadsAdvanced.0.importance');
  });

  it('VALUE_CLAMPED when a relative change overshoots, and the clamped value is applied', () => {
    const result = apply({
      characterUpdates: [
        { id: 'mara', traitChanges: { courage: 0.9 }, relationships: [{ targetId: 'oren', affinityChange: -3 }] },
      ],
    });
    expectIssue(result, 'VALUE_CLAMPED', 'warning', 'delta.characterUpdates.0.traitChanges.courage');
    expectIssue(result, 'VALUE_CLAMPED', 'warning', 'delta.characterUpdates.0.relationships.0.affinityChange');
    const next = expectOk(result);
    expect(next.characters.mara?.traits.courage).toBe(1);
    expect(next.characters.mara?.relationships.oren?.affinity).toBe(-1);
  });

  it('ARC_REGRESSION when arc progress goes back, still applied', () => {
    const result = apply({ characterUpdates: [{ id: 'mara', arcProgress: 0.1 }] });
    expectIssue(result, 'ARC_REGRESSION', 'warning', 'delta.characterUpdates.0.arcProgress');
    expect(expectOk(result).characters.mara?.arcProgress).toBe(0.1);
  });

  it('CHAPTER_CLOSED_WITH_OPEN_THREADS for each important unresolved thread', () => {
    const result = apply({ chapterClosed: { summary: 'End.' } });
    const issue = expectIssue(result, 'CHAPTER_CLOSED_WITH_OPEN_THREADS', 'warning', 'delta.chapterClosed');
    expect(issue.message).toContain('"lighthouse"');
    // The resolved debt thread and the minor gull thread are not reported.
    expect(result.issues.filter((i) => i.code === 'CHAPTER_CLOSED_WITH_OPEN_THREADS')).toHaveLength(1);
    expect(expectOk(result).chapterIndex).toBe(1);
  });

  it('INFLUENCE_NOT_PENDING for an unknown or settled influence', () => {
    const result = apply(
      { influencesApplied: ['inf-done'], influencesRejected: [{ id: 'inf-404', reason: 'spam' }] },
      { influencesApplied: ['inf-done'] },
    );
    expectIssue(result, 'INFLUENCE_NOT_PENDING', 'error', 'delta.influencesApplied.0');
    expectIssue(result, 'INFLUENCE_NOT_PENDING', 'error', 'delta.influencesRejected.0.id');
  });

  it('INFLUENCE_CONFLICT when one influence is both applied and rejected', () => {
    expectIssue(
      apply(
        { influencesApplied: ['inf-1'], influencesRejected: [{ id: 'inf-1', reason: 'changed my mind' }] },
        { influencesApplied: ['inf-1'] },
      ),
      'INFLUENCE_CONFLICT',
      'error',
      'delta.influencesRejected.0.id',
    );
  });

  it('DUPLICATE_INFLUENCE when an influence is listed twice', () => {
    const result = apply({ influencesApplied: ['inf-1', 'inf-1'] }, { influencesApplied: ['inf-1'] });
    expectIssue(result, 'DUPLICATE_INFLUENCE', 'warning', 'delta.influencesApplied.1');
    expect(expectOk(result).userInfluenceQueue.map((item) => item.id)).toEqual(['inf-2', 'inf-done']);
  });

  it('INFLUENCE_MISMATCH when scene and delta disagree on applied influences', () => {
    const result = apply({ influencesApplied: ['inf-1'] }, { influencesApplied: ['inf-2'] });
    expectIssue(result, 'INFLUENCE_MISMATCH', 'error', 'scene.influencesApplied.0');
    expectIssue(result, 'INFLUENCE_MISMATCH', 'error', 'delta.influencesApplied.0');
  });

  it('KNOWLEDGE_FORGOTTEN: a full sheet drops its oldest facts for new ones instead of refusing the scene', () => {
    const state = baseState();
    const facts = Array.from({ length: LIMITS.knowledge }, (_, i) => `fact ${i}`);
    const full = StoryStateSchema.parse({
      ...state,
      characters: { ...state.characters, mara: { ...state.characters.mara, knowledge: facts } },
    });
    const result = applyDelta(
      full,
      { characterUpdates: [{ id: 'mara', knowledgeAdded: ['fact 5', 'the lamp was lit from below', 'Oren lied'] }] },
      sceneFor(full),
    );
    expectIssue(result, 'KNOWLEDGE_FORGOTTEN', 'warning', 'delta.characterUpdates.0.knowledgeAdded');
    const next = expectOk(result);
    // "fact 5", stated again, counts as new: the two new facts push out the two oldest of the others.
    expect(next.characters.mara!.knowledge).toEqual([
      ...facts.slice(2).filter((fact) => fact !== 'fact 5'),
      'fact 5',
      'the lamp was lit from below',
      'Oren lied',
    ]);
    // A delta that states again the 100 oldest facts and adds 100 new ones forgets none of what it states.
    const added = [...facts.slice(0, 100), ...Array.from({ length: 100 }, (_, i) => `new fact ${i}`)];
    const restated = expectOk(
      applyDelta(full, { characterUpdates: [{ id: 'mara', knowledgeAdded: added }] }, sceneFor(full)),
    );
    expect(restated.characters.mara!.knowledge).toEqual(added);
    expect(StoryStateSchema.safeParse(next).success).toBe(true);
  });

  it('LIMIT_EXCEEDED for characters, threads and world state', () => {
    const state = baseState();
    const full = StoryStateSchema.parse({
      ...state,
      characters: {
        ...state.characters,
        ...Object.fromEntries(
          Array.from({ length: LIMITS.characters - 3 }, (_, i) => [`extra-${i}`, { id: `extra-${i}`, name: 'Extra' }]),
        ),
      },
      // None resolved, so no thread can be archived to make room.
      plotThreads: [
        ...state.plotThreads.map((thread) => ({ ...thread, status: 'open', resolvedIn: null })),
        ...Array.from({ length: LIMITS.plotThreads - 3 }, (_, i) => ({ id: `thread-${i}`, title: 'Thread' })),
      ],
      worldState: Object.fromEntries(Array.from({ length: LIMITS.worldStateKeys }, (_, i) => [`key-${i}`, i])),
    });
    const result = applyDelta(
      full,
      {
        charactersIntroduced: [{ id: 'one-too-many', name: 'Extra' }],
        threadsOpened: [{ id: 'thread-too-many', title: 'More' }],
        worldStateSet: { 'key-new': true },
      },
      sceneFor(full),
    );
    expectIssue(result, 'LIMIT_EXCEEDED', 'error', 'delta.charactersIntroduced');
    expectIssue(result, 'LIMIT_EXCEEDED', 'error', 'delta.threadsOpened');
    expectIssue(result, 'LIMIT_EXCEEDED', 'error', 'delta.worldStateSet');
    expect(result.state).toBe(full);
  });

  it('THREADS_ARCHIVED: a full thread list makes room by archiving the earliest resolved threads the delta leaves alone', () => {
    const state = baseState();
    const resolved = (id: string) => ({ id, title: `Thread ${id}`, status: 'resolved', resolvedIn: 'scene-0' });
    const full = StoryStateSchema.parse({
      ...state,
      plotThreads: [
        resolved('old-0'),
        ...state.plotThreads,
        resolved('old-1'),
        resolved('old-2'),
        ...Array.from({ length: LIMITS.plotThreads - state.plotThreads.length - 3 }, (_, i) => ({
          id: `thread-${i}`,
          title: 'Thread',
        })),
      ],
    });
    expect(full.plotThreads).toHaveLength(LIMITS.plotThreads);
    const result = applyDelta(
      full,
      {
        threadsOpened: [
          { id: 'new-a', title: 'New A' },
          { id: 'new-b', title: 'New B' },
        ],
      },
      sceneFor(full),
    );
    expectIssue(result, 'THREADS_ARCHIVED', 'warning', 'delta.threadsOpened');
    const next = expectOk(result);
    const ids = next.plotThreads.map((thread) => thread.id);
    expect(ids).toHaveLength(LIMITS.plotThreads);
    // In list order (opening order), the first two resolved threads go: "old-0", then the base state's "debt".
    expect(ids).not.toContain('old-0');
    expect(ids).not.toContain('debt');
    expect(ids).toContain('old-1');
    expect(ids).toContain('old-2');
    expect(ids.slice(-2)).toEqual(['new-a', 'new-b']);
    expect(StoryStateSchema.safeParse(next).success).toBe(true);
    // The archived thread is unknown from then on, and its id can be used again.
    const scene = sceneFor(next);
    expectIssue(
      applyDelta(next, { threadsAdvanced: [{ id: 'old-0' }] }, scene),
      'UNKNOWN_THREAD',
      'error',
      'delta.threadsAdvanced.0.id',
    );

    // A thread the delta resolves itself is not archived by the same delta; with no other resolved thread the
    // delta is refused as before.
    const onlyOne = StoryStateSchema.parse({
      ...full,
      plotThreads: full.plotThreads.map((thread) =>
        thread.status === 'resolved' ? { ...thread, status: 'open', resolvedIn: null } : thread,
      ),
    });
    const live = onlyOne.plotThreads[0]!.id;
    const refused = applyDelta(
      onlyOne,
      { threadsResolved: [{ id: live }], threadsOpened: [{ id: 'new-a', title: 'New A' }] },
      sceneFor(onlyOne),
    );
    expectIssue(refused, 'LIMIT_EXCEEDED', 'error', 'delta.threadsOpened');
    expect(refused.issues.some((issue) => issue.code === 'THREADS_ARCHIVED')).toBe(false);
    expect(refused.state).toBe(onlyOne);
  });

  it('INVALID_NEXT_STATE when the next state would break its schema in a way no other check covers', () => {
    const state = baseState({ chapterIndex: 1_000_000, chapterId: chapterIdFor(1_000_000) });
    const result = applyDelta(state, { chapterClosed: { summary: '' } }, sceneFor(state));
    expectIssue(result, 'INVALID_NEXT_STATE', 'error', 'nextState.chapterIndex');
  });

  it('INTERNAL_ERROR instead of a throw when the input changes under the reducer', () => {
    let reads = 0;
    const treacherous = {
      get worldStateSet() {
        reads += 1;
        if (reads > 1) throw new Error('gotcha');
        return {};
      },
    };
    const result = apply(treacherous);
    expectIssue(result, 'INTERNAL_ERROR', 'error', '(root)');
    expect(result.issues[0]?.message).toContain('gotcha');
  });

  it('every code the reducer declares is covered by a test above', () => {
    // Keeps this file honest when a code is added: the list below must name every code.
    const tested: ContinuityIssueCode[] = [
      'INVALID_STATE',
      'INVALID_DELTA',
      'INVALID_SCENE',
      'UNSAFE_KEY',
      'SCENE_STORY_MISMATCH',
      'SCENE_OUT_OF_ORDER',
      'SCENE_CHAPTER_MISMATCH',
      'SCENE_VERSION_MISMATCH',
      'DELTA_ALREADY_APPLIED',
      'UNKNOWN_CHARACTER',
      'DUPLICATE_CHARACTER',
      'DEAD_CHARACTER_ACTS',
      'UNKNOWN_THREAD',
      'DUPLICATE_THREAD',
      'THREAD_ALREADY_RESOLVED',
      'UNKNOWN_SETUP',
      'SETUPS_UNPAID',
      'SUMMARY_REPLACED',
      'SELF_RELATIONSHIP',
      'UNKNOWN_RELATIONSHIP_TARGET',
      'VALUE_OUT_OF_RANGE',
      'VALUE_CLAMPED',
      'ARC_REGRESSION',
      'KNOWLEDGE_FORGOTTEN',
      'THREADS_ARCHIVED',
      'CHAPTER_CLOSED_WITH_OPEN_THREADS',
      'INFLUENCE_NOT_PENDING',
      'INFLUENCE_CONFLICT',
      'DUPLICATE_INFLUENCE',
      'INFLUENCE_MISMATCH',
      'LIMIT_EXCEEDED',
      'UNKNOWN_FIELD',
      'INVALID_NEXT_STATE',
      'INTERNAL_ERROR',
    ];
    expect([...tested].sort()).toEqual([...CONTINUITY_ISSUE_CODES].sort());
  });
});

describe('applyDelta: two spellings of one text (NFC and NFD)', () => {
  const composed = 'caf\u00e9';
  const decomposed = 'cafe\u0301';

  it('pays off a setup written in the other spelling', () => {
    const opened = apply({
      threadsOpened: [{ id: 'cafe', title: 'The café', setups: [`the ${composed} is haunted`] }],
    });
    const state = expectOk(opened);
    const paid = applyDelta(
      state,
      { threadsAdvanced: [{ id: 'cafe', setupsPaidOff: [`the ${decomposed} is haunted`] }] },
      sceneFor(state),
    );
    expect(paid.issues.map((issue) => issue.code)).not.toContain('UNKNOWN_SETUP');
    expect(expectOk(paid).plotThreads.find((thread) => thread.id === 'cafe')?.setups).toEqual([]);
  });

  it('keeps one trait, alias and world key under the spelling seen first, the later value winning', () => {
    const state = expectOk(
      apply({
        characterUpdates: [
          { id: 'mara', traits: { [composed]: 0.2, [decomposed]: 0.9 }, aliasesAdded: [composed, decomposed] },
        ],
        worldStateSet: { [composed]: 'open', [decomposed]: 'closed' },
      }),
    );
    const mara = state.characters.mara!;
    expect(Object.keys(mara.traits).filter((key) => key.normalize('NFC') === composed)).toEqual([composed]);
    expect(mara.traits[composed]).toBe(0.9);
    expect(mara.aliases.filter((alias) => alias.normalize('NFC') === composed)).toEqual([composed]);
    expect(Object.keys(state.worldState).filter((key) => key.normalize('NFC') === composed)).toEqual([composed]);
    expect(state.worldState[composed]).toBe('closed');
    // A later scene's change in the other spelling changes that entry; unsetting in it removes it.
    const later = expectOk(
      applyDelta(
        state,
        { characterUpdates: [{ id: 'mara', traitChanges: { [decomposed]: -0.5 } }], worldStateUnset: [decomposed] },
        sceneFor(state),
      ),
    );
    expect(later.characters.mara!.traits).toMatchObject({ [composed]: 0.4 });
    expect(Object.keys(later.characters.mara!.traits)).not.toContain(decomposed);
    expect(Object.hasOwn(later.worldState, composed)).toBe(false);
  });
});

describe('applyDelta: purity, determinism and robustness', () => {
  const busyDelta: StateDeltaInput = {
    charactersIntroduced: [{ id: 'ines', name: 'Ines', relationships: [{ targetId: 'mara', affinity: 0.2 }] }],
    characterUpdates: [{ id: 'mara', traitChanges: { courage: 0.9 }, knowledgeAdded: ['x'], arcProgress: 0.3 }],
    worldStateSet: { weather: 'fog', constructor: 1 },
    worldStateUnset: ['tide'],
    threadsOpened: [{ id: 'fog', title: 'Fog', characters: ['ines'] }],
    threadsAdvanced: [{ id: 'lighthouse', setupsAdded: ['a lantern'] }],
    threadsResolved: [{ id: 'gull', resolution: 'Gone.' }],
    chapterClosed: { summary: 'Fog.' },
    influencesApplied: ['inf-1'],
    influencesRejected: [{ id: 'inf-2', reason: 'no' }],
  };

  it('does not mutate deep-frozen inputs, and its result shares nothing with them', () => {
    const state = deepFreeze(baseState());
    const scene = deepFreeze(sceneFor(state, { characters: ['ines', 'mara'], influencesApplied: ['inf-1'] }));
    const delta = deepFreeze(structuredClone(busyDelta));
    const before = structuredClone({ state, scene, delta });
    const result = applyDelta(state, delta, scene);
    const next = expectOk(result);
    expect({ state, scene, delta }).toEqual(before);
    // Mutating the result must not reach the (frozen) input: it would throw if an object were shared.
    next.characters.mara!.traits.courage = 0;
    next.plotThreads[0]!.setups.push('more');
    (next.worldState as Record<string, unknown>).weather = 'sun';
    next.userInfluenceQueue.length = 0;
    expect(state.characters.mara?.traits.courage).toBe(0.6);
  });

  it('copies world-state values: the next state shares none with the delta or the previous state', () => {
    const state = baseState();
    const door = { open: false, keys: ['brass'] };
    const next = expectOk(apply({ worldStateSet: { door } }, {}, state));
    expect(next.worldState.door).not.toBe(door);
    expect(next.worldState.tide).not.toBe(state.worldState.tide);
    // The generator keeps using its delta, and the caller edits the next state: neither reaches the other.
    door.keys.push('iron');
    (next.worldState.tide as { height: number }).height = 9;
    expect(next.worldState.door).toEqual({ open: false, keys: ['brass'] });
    expect(state.worldState.tide).toEqual({ height: 3 });
  });

  it('gives deep-equal results for the same inputs, warnings in the same order', () => {
    const state = baseState();
    const scene = sceneFor(state, { characters: ['ines', 'mara'], influencesApplied: ['inf-1'] });
    const first = applyDelta(state, busyDelta, scene);
    const second = applyDelta(structuredClone(state), structuredClone(busyDelta), structuredClone(scene));
    expect(first.ok).toBe(true);
    expect(second).toEqual(first);
    expect(first.issues.map((issue) => issue.code)).toEqual([
      'VALUE_CLAMPED',
      'ARC_REGRESSION',
      'CHAPTER_CLOSED_WITH_OPEN_THREADS',
    ]);
  });

  it('refuses the same delta twice', () => {
    const state = baseState();
    const scene = sceneFor(state, { characters: ['ines', 'mara'], influencesApplied: ['inf-1'] });
    const first = expectOk(applyDelta(state, busyDelta, scene));
    const replay = applyDelta(first, busyDelta, scene);
    expect(replay.ok).toBe(false);
    expect(replay.issues).toEqual([
      {
        code: 'DELTA_ALREADY_APPLIED',
        severity: 'error',
        path: 'scene.id',
        message: expect.stringContaining('"scene-3"'),
      },
    ]);
    expect(replay.state).toBe(first);
  });

  it('recognises a replay before reading its delta: a malformed delta still gives DELTA_ALREADY_APPLIED alone', () => {
    const state = baseState();
    const malformed = JSON.parse('{"worldStateSet": {"__proto__": 1}, "threadsOpened": "not a list"}');
    for (const scene of [sceneFor(state, { id: 'scene-2' }), sceneFor(state, { id: 'scene-x', index: 1 })]) {
      const replay = applyDelta(state, malformed, scene);
      expect(replay.ok).toBe(false);
      expect(replay.issues.map((issue) => issue.code)).toEqual(['DELTA_ALREADY_APPLIED']);
      expect(replay.state).toBe(state);
    }
    // Not a replay: the same delta is reported as usual.
    expectIssue(apply(malformed), 'INVALID_DELTA', 'error', 'delta.threadsOpened');
  });

  it('collects every error in one pass, in a stable order', () => {
    const result = apply(
      {
        characterUpdates: [{ id: 'ghost', status: 'active', arcProgress: 2 }],
        threadsAdvanced: [{ id: 'debt' }],
        influencesApplied: ['inf-404'],
      },
      { characters: ['ghost'], stateVersion: 99 },
    );
    expect(result.issues.map((issue) => `${issue.code} ${issue.path}`)).toEqual([
      'SCENE_VERSION_MISMATCH scene.stateVersion',
      'DEAD_CHARACTER_ACTS delta.characterUpdates.0.status',
      'VALUE_OUT_OF_RANGE delta.characterUpdates.0.arcProgress',
      'DEAD_CHARACTER_ACTS scene.characters.0',
      'THREAD_ALREADY_RESOLVED delta.threadsAdvanced.0.id',
      'INFLUENCE_NOT_PENDING delta.influencesApplied.0',
      'INFLUENCE_MISMATCH delta.influencesApplied.0',
    ]);
  });

  it('reports both schema failures and keeps checking the delta when only the scene is invalid', () => {
    const state = baseState();
    const result = applyDelta(state, { threadsAdvanced: [{ id: 'debt' }] }, { ...sceneFor(state), title: '' });
    expectIssue(result, 'INVALID_SCENE', 'error', 'scene.title');
    expectIssue(result, 'THREAD_ALREADY_RESOLVED', 'error', 'delta.threadsAdvanced.0.id');
  });

  it('never throws on hostile input', () => {
    const state = baseState();
    let deep: unknown = 'bottom';
    for (let level = 0; level < 50_000; level += 1) deep = [deep];
    const hostile: unknown[] = [
      undefined,
      42,
      'delta',
      [],
      { worldStateSet: { deep } },
      { characterUpdates: new Array(100_000).fill({ id: 'mara' }) },
      { characterUpdates: [{ id: 'x'.repeat(1_000_000) }] },
      new Proxy(
        {},
        {
          get() {
            throw new Error('trap');
          },
          ownKeys() {
            throw new Error('trap');
          },
        },
      ),
    ];
    for (const delta of hostile) {
      const result = applyDelta(state, delta as StateDeltaInput, sceneFor(state));
      expect(result.ok).toBe(false);
      expect(result.state).toBe(state);
      expect(result.issues.length).toBeGreaterThan(0);
      expect(result.issues.length).toBeLessThanOrEqual(60);
      for (const issue of result.issues) expect(issue.message.length).toBeLessThan(1_000);
    }
    for (const scene of hostile) {
      expect(applyDelta(state, {}, scene as SceneInput).ok).toBe(false);
    }
    // A null-prototype object is still a plain object: an empty delta, applied as usual.
    expect(applyDelta(state, Object.create(null), sceneFor(state)).ok).toBe(true);
  });
});

describe('assertContinuity and formatIssues', () => {
  it('returns the state and warnings of an ok result', () => {
    const result = apply({ characterUpdates: [{ id: 'mara', arcProgress: 0.1 }] });
    const { state, warnings } = assertContinuity(result);
    expect(state.version).toBe(4);
    expect(warnings.map((warning) => warning.code)).toEqual(['ARC_REGRESSION']);
  });

  it('throws a ContinuityError listing only the errors', () => {
    const result = apply({ characterUpdates: [{ id: 'mara', arcProgress: 0.1 }, { id: 'nobody' }] });
    let thrown: unknown;
    try {
      assertContinuity(result);
    } catch (error) {
      thrown = error;
    }
    expect(ContinuityError.isInstance(thrown)).toBe(true);
    const error = thrown as ContinuityError;
    expect(error.code).toBe('CONTINUITY');
    expect(error.issues.map((issue) => issue.code)).toEqual(['UNKNOWN_CHARACTER']);
    expect(error.message).toContain('error UNKNOWN_CHARACTER at delta.characterUpdates.1.id');
    expect(error.message).not.toContain('ARC_REGRESSION');
  });

  it('formats one line per issue, flattening line breaks', () => {
    const text = formatIssues([
      { code: 'UNKNOWN_THREAD', severity: 'error', path: 'delta.threadsAdvanced.0.id', message: 'no\nsuch thread' },
      { code: 'VALUE_CLAMPED', severity: 'warning', path: 'delta.x', message: 'clamped' },
    ]);
    expect(text.split('\n')).toEqual([
      'error UNKNOWN_THREAD at delta.threadsAdvanced.0.id: no such thread',
      'warning VALUE_CLAMPED at delta.x: clamped',
    ]);
    expect(formatIssues([])).toBe('');
  });
});
