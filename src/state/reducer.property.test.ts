import * as fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  garbageArbitrary,
  mutatedArbitrary,
  nextSceneArbitrary,
  plausibleDeltaArbitrary,
  plausibleSceneArbitrary,
  stateDeltaArbitrary,
  storyStateArbitrary,
  storyStepArbitrary,
} from '../testing/arbitraries.js';
import { applyDelta, CONTINUITY_ISSUE_CODES, type ContinuityIssueCode, type DeltaResult } from './reducer.js';
import {
  type Scene,
  type SceneInput,
  type StateDelta,
  type StateDeltaInput,
  type StoryState,
  StoryStateSchema,
} from './schema.js';

const RUNS = 500;
const KNOWN_CODES = new Set<string>(CONTINUITY_ISSUE_CODES);
const SETTINGS = { numRuns: RUNS, seed: 20_260_101 } as const;

function deepFreeze<T>(value: T): T {
  const stack: unknown[] = [value];
  const seen = new WeakSet<object>();
  while (stack.length > 0) {
    const node = stack.pop();
    if ((typeof node !== 'object' && typeof node !== 'function') || node === null || seen.has(node)) continue;
    // Typed arrays with elements cannot be frozen; they are not part of any domain object anyway.
    if (ArrayBuffer.isView(node)) continue;
    seen.add(node);
    Object.freeze(node);
    for (const key of Reflect.ownKeys(node)) stack.push((node as Record<PropertyKey, unknown>)[key]);
  }
  return value;
}

function isValidState(value: unknown): boolean {
  try {
    return StoryStateSchema.safeParse(value).success;
  } catch {
    // zod itself overflows the stack on the deepest garbage; such a state is not valid either.
    return false;
  }
}

/** The invariants every result must keep, whatever went in. */
function checkResult(input: StoryState, result: DeltaResult): void {
  expect(typeof result.ok).toBe('boolean');
  expect(Array.isArray(result.issues)).toBe(true);
  for (const issue of result.issues) {
    expect(Object.keys(issue).sort()).toEqual(['code', 'message', 'path', 'severity']);
    expect(KNOWN_CODES.has(issue.code)).toBe(true);
    expect(['error', 'warning']).toContain(issue.severity);
    expect(typeof issue.path).toBe('string');
    expect(issue.path.length).toBeGreaterThan(0);
    expect(typeof issue.message).toBe('string');
    expect(issue.message.length).toBeGreaterThan(0);
  }
  const errors = result.issues.filter((issue) => issue.severity === 'error');
  if (result.ok) {
    expect(errors).toEqual([]);
    expect(StoryStateSchema.parse(result.state)).toEqual(result.state);
    expect(result.state.version).toBe(input.version + 1);
    expect(result.state.sceneCount).toBe(input.sceneCount + 1);
  } else {
    expect(errors.length).toBeGreaterThan(0);
    expect(result.state).toBe(input);
  }
}

const within = (value: number | undefined, min: number, max: number) =>
  value === undefined || (value >= min && value <= max);

/**
 * An independent, deliberately simple reading of the continuity rules: the error codes a delta must draw. It covers
 * the rules that apply unconditionally; the reducer may find more (relationships, limits), never fewer.
 */
function expectedErrors(state: StoryState, delta: StateDelta, scene: Scene): Set<ContinuityIssueCode> {
  const codes = new Set<ContinuityIssueCode>();
  if (scene.storyId !== state.storyId) codes.add('SCENE_STORY_MISMATCH');
  if (scene.index > state.sceneCount) codes.add('SCENE_OUT_OF_ORDER');
  if (scene.chapterId !== state.chapterId) codes.add('SCENE_CHAPTER_MISMATCH');
  if (scene.stateVersion !== state.version + 1) codes.add('SCENE_VERSION_MISMATCH');

  const before = new Map(Object.entries(state.characters));
  const introduced = delta.charactersIntroduced.map((intro) => intro.id);
  const known = new Set([...before.keys(), ...introduced]);
  delta.charactersIntroduced.forEach((intro, index) => {
    if (before.has(intro.id) || introduced.indexOf(intro.id) !== index) codes.add('DUPLICATE_CHARACTER');
    else if (!Object.values(intro.traits).every((value) => within(value, 0, 1))) codes.add('VALUE_OUT_OF_RANGE');
  });
  for (const update of delta.characterUpdates) {
    if (!known.has(update.id)) {
      codes.add('UNKNOWN_CHARACTER');
      continue;
    }
    if (before.get(update.id)?.status === 'dead' && update.status !== undefined && update.status !== 'dead') {
      codes.add('DEAD_CHARACTER_ACTS');
    }
    if (!within(update.arcProgress, 0, 1) || !Object.values(update.traits).every((v) => within(v, 0, 1))) {
      codes.add('VALUE_OUT_OF_RANGE');
    }
  }
  for (const id of scene.characters) {
    if (!known.has(id)) codes.add('UNKNOWN_CHARACTER');
    else if (before.get(id)?.status === 'dead') codes.add('DEAD_CHARACTER_ACTS');
  }

  const threadsBefore = new Map(state.plotThreads.map((thread) => [thread.id, thread]));
  const opened = delta.threadsOpened.map((opening) => opening.id);
  delta.threadsOpened.forEach((opening, index) => {
    if (threadsBefore.has(opening.id) || opened.indexOf(opening.id) !== index) codes.add('DUPLICATE_THREAD');
    else if (!within(opening.importance, 0, 1)) codes.add('VALUE_OUT_OF_RANGE');
  });
  for (const { id } of [...delta.threadsAdvanced, ...delta.threadsResolved]) {
    if (!threadsBefore.has(id) && !opened.includes(id)) codes.add('UNKNOWN_THREAD');
    else if (threadsBefore.get(id)?.status === 'resolved') codes.add('THREAD_ALREADY_RESOLVED');
  }
  const resolvedIds = delta.threadsResolved.map((resolution) => resolution.id);
  if (new Set(resolvedIds).size !== resolvedIds.length) codes.add('THREAD_ALREADY_RESOLVED');

  const pending = new Set(state.userInfluenceQueue.filter((item) => item.status === 'pending').map((item) => item.id));
  const applied = new Set(delta.influencesApplied);
  for (const id of applied) if (!pending.has(id)) codes.add('INFLUENCE_NOT_PENDING');
  for (const { id } of delta.influencesRejected) {
    if (applied.has(id)) codes.add('INFLUENCE_CONFLICT');
    else if (!pending.has(id)) codes.add('INFLUENCE_NOT_PENDING');
  }
  const listed = new Set(scene.influencesApplied);
  if (listed.size !== applied.size || [...listed].some((id) => !applied.has(id))) codes.add('INFLUENCE_MISMATCH');
  return codes;
}

const stateWithStep = storyStateArbitrary().chain((state) =>
  storyStepArbitrary(state).map((step) => ({ state, ...step })),
);

describe('applyDelta properties', () => {
  it('applies every delta that is valid by construction, and keeps the state valid', () => {
    let okCount = 0;
    fc.assert(
      fc.property(stateWithStep, ({ state, delta, scene }) => {
        const frozen = deepFreeze(state);
        const result = applyDelta(frozen, deepFreeze(delta), deepFreeze(scene));
        checkResult(frozen, result);
        if (result.ok) {
          okCount += 1;
          expect(result.state.sceneId).toBe(scene.id);
          expect(result.state.updatedAt).toBe(scene.createdAt);
          for (const id of scene.characters) expect(result.state.characters[id]?.lastAppearance).toBe(scene.id);
          for (const intro of delta.charactersIntroduced) {
            expect(result.state.characters[intro.id]?.introducedIn).toBe(scene.id);
          }
          const consumed = new Set([...delta.influencesApplied, ...delta.influencesRejected.map((r) => r.id)]);
          expect(result.state.userInfluenceQueue.some((item) => consumed.has(item.id))).toBe(false);
        }
      }),
      SETTINGS,
    );
    // Not vacuous: the arbitraries build valid deltas, so (nearly) all of them must apply.
    expect(okCount / RUNS).toBeGreaterThan(0.95);
  });

  it('is deterministic: the same inputs give deep-equal results', () => {
    fc.assert(
      fc.property(stateWithStep, ({ state, delta, scene }) => {
        const first = applyDelta(state, delta, scene);
        const second = applyDelta(structuredClone(state), structuredClone(delta), structuredClone(scene));
        expect(second).toEqual(first);
      }),
      SETTINGS,
    );
  });

  it('refuses to apply a step twice', () => {
    fc.assert(
      fc.property(stateWithStep, ({ state, delta, scene }) => {
        const first = applyDelta(state, delta, scene);
        fc.pre(first.ok);
        const replay = applyDelta(first.state, delta, scene);
        expect(replay.ok).toBe(false);
        expect(replay.issues.map((issue) => issue.code)).toEqual(['DELTA_ALREADY_APPLIED']);
      }),
      SETTINGS,
    );
  });

  it('walks a story several scenes forward, one valid step after another', () => {
    let steps = 0;
    fc.assert(
      fc.property(storyStateArbitrary(), fc.gen(), (initial, generate) => {
        let state = initial;
        for (let step = 0; step < 5; step += 1) {
          const delta = generate(stateDeltaArbitrary, state);
          const scene = generate(nextSceneArbitrary, state, delta);
          const result = applyDelta(state, delta, scene);
          checkResult(state, result);
          expect(result.ok).toBe(true);
          state = result.state;
          steps += 1;
        }
        expect(state.version).toBe(initial.version + 5);
      }),
      { ...SETTINGS, numRuns: 100 },
    );
    expect(steps).toBe(500);
  });

  it('finds every continuity error an independent check finds, and applies plausible deltas only when clean', () => {
    let okCount = 0;
    const input = storyStateArbitrary().chain((state) =>
      plausibleDeltaArbitrary(state).chain((delta) =>
        plausibleSceneArbitrary(state, delta).map((scene) => ({ state, delta, scene })),
      ),
    );
    fc.assert(
      fc.property(input, ({ state, delta, scene }) => {
        const result = applyDelta(state, delta, scene);
        checkResult(state, result);
        const codes = result.issues.filter((issue) => issue.severity === 'error').map((issue) => issue.code);
        if (scene.storyId === state.storyId && (scene.id === state.sceneId || scene.index < state.sceneCount)) {
          expect(codes).toEqual(['DELTA_ALREADY_APPLIED']);
          return;
        }
        const expected = expectedErrors(state, delta, scene);
        for (const code of expected) expect(codes, `${code} in ${JSON.stringify(result.issues)}`).toContain(code);
        if (!result.ok) return;
        okCount += 1;
        expect(expected.size).toBe(0);
        // What an applied delta must have left alone or done.
        for (const [id, character] of Object.entries(state.characters)) {
          if (character.status === 'dead') expect(result.state.characters[id]?.status).toBe('dead');
        }
        for (const thread of state.plotThreads) {
          if (thread.status === 'resolved') expect(result.state.plotThreads).toContainEqual(thread);
        }
        expect(Object.keys(result.state.characters)).toHaveLength(
          Object.keys(state.characters).length + delta.charactersIntroduced.length,
        );
        expect(result.state.plotThreads).toHaveLength(state.plotThreads.length + delta.threadsOpened.length);
        const unset = new Set(delta.worldStateUnset);
        for (const [key, value] of Object.entries(delta.worldStateSet)) {
          if (!unset.has(key)) expect(result.state.worldState[key]).toEqual(value);
        }
        for (const key of unset) expect(Object.hasOwn(result.state.worldState, key)).toBe(false);
      }),
      SETTINGS,
    );
    // Both outcomes must be common, or one half of this property would be vacuous.
    expect(okCount / RUNS).toBeGreaterThan(0.1);
    expect(okCount / RUNS).toBeLessThan(0.9);
  });

  it('never throws on a garbage delta or scene, and leaves the state alone', () => {
    const input = storyStateArbitrary().chain((state) =>
      fc.record({
        state: fc.constant(state),
        delta: fc.oneof(garbageArbitrary(), stateDeltaArbitrary(state)),
        scene: fc.oneof(garbageArbitrary(), nextSceneArbitrary(state)),
      }),
    );
    fc.assert(
      fc.property(input, ({ state, delta, scene }) => {
        const frozen = deepFreeze(state);
        const snapshot = structuredClone(frozen);
        const result = applyDelta(frozen, deepFreeze(delta) as StateDeltaInput, deepFreeze(scene) as SceneInput);
        checkResult(frozen, result);
        expect(frozen).toEqual(snapshot);
      }),
      SETTINGS,
    );
  });

  it('never throws on a corrupted delta or scene, and only ever returns a valid state', () => {
    let okCount = 0;
    const input = storyStateArbitrary().chain((state) =>
      storyStepArbitrary(state).chain(({ delta, scene }) =>
        fc.oneof(
          fc.record({
            state: fc.constant(state),
            delta: mutatedArbitrary(fc.constant(delta)),
            scene: fc.constant<unknown>(scene),
          }),
          fc.record({
            state: fc.constant(state),
            delta: fc.constant<unknown>(delta),
            scene: mutatedArbitrary(fc.constant(scene)),
          }),
        ),
      ),
    );
    fc.assert(
      fc.property(input, ({ state, delta, scene }) => {
        const frozen = deepFreeze(state);
        const result = applyDelta(frozen, deepFreeze(delta) as StateDeltaInput, deepFreeze(scene) as SceneInput);
        checkResult(frozen, result);
        if (result.ok) okCount += 1;
      }),
      SETTINGS,
    );
    // Corruption must bite most of the time, or this property would test little beyond the valid one.
    expect(okCount / RUNS).toBeLessThan(0.5);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('never throws on a corrupted state, and reports it as INVALID_STATE', () => {
    const input = storyStateArbitrary().chain((state) =>
      fc.record({
        original: fc.constant(state),
        corrupted: mutatedArbitrary(fc.constant(state)),
        step: storyStepArbitrary(state),
      }),
    );
    fc.assert(
      fc.property(input, ({ corrupted, step }) => {
        const state = deepFreeze(corrupted) as StoryState;
        const result = applyDelta(state, step.delta, step.scene);
        if (!isValidState(corrupted)) {
          expect(result.ok).toBe(false);
          expect(result.issues[0]?.code).toBe('INVALID_STATE');
          expect(result.state).toBe(state);
        } else if (result.ok) {
          expect(StoryStateSchema.parse(result.state)).toEqual(result.state);
        }
      }),
      SETTINGS,
    );
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
