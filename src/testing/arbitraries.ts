/**
 * fast-check arbitraries for the domain model: valid story states, deltas and next scenes built relative to a state
 * (so they reference ids that exist), and garbage to throw at anything that takes untrusted input.
 *
 * Ids, trait names and world-state keys are drawn partly from names that `Object.prototype` also has
 * (`constructor`, `toString`, ...), so code that reads records without `Object.hasOwn` fails these properties, and
 * nested domain objects sometimes have a null prototype, as fast-check builds them, so code that calls
 * `value.hasOwnProperty(...)` fails too.
 * `fast-check` is an optional peer dependency of storyloom: install it to use this entry. No test runner is imported.
 *
 * @module
 */
import * as fc from 'fast-check';
import {
  type CharacterState,
  chapterIdFor,
  type JsonValue,
  LIMITS,
  type PlotThread,
  type Relationship,
  type RelationshipChange,
  type Scene,
  type StateDelta,
  type StoryState,
  type UserInfluence,
} from '../state/schema.js';

/** Names that also live on `Object.prototype`: a record read without `Object.hasOwn` finds them there. */
const PROTOTYPE_NAMES = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf'] as const;

const idArbitrary = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom(...PROTOTYPE_NAMES) },
  { weight: 6, arbitrary: fc.stringMatching(/^[a-z0-9][a-z0-9._:-]{0,15}$/) },
);
const nameArbitrary = fc.stringMatching(/^[A-Z][a-z]{1,10}( [A-Z][a-z]{1,10})?$/);
const shortTextArbitrary = fc.string({ maxLength: 60 });
const unitArbitrary = fc.double({ min: 0, max: 1, noNaN: true });
const affinityArbitrary = fc.double({ min: -1, max: 1, noNaN: true });
const isoDateArbitrary = fc
  .date({ min: new Date('2000-01-01T00:00:00.000Z'), max: new Date('2099-12-31T23:59:59.999Z'), noInvalidDate: true })
  .map((date) => date.toISOString());
const traitNameArbitrary = fc.constantFrom('courage', 'fear', 'wit', 'loyalty', 'greed', ...PROTOTYPE_NAMES);
const worldKeyArbitrary = fc.oneof(
  fc.constantFrom('weather', 'hour', 'door.open', 'rules:magic', ...PROTOTYPE_NAMES),
  fc.stringMatching(/^[a-z][a-z0-9 _.:-]{0,30}$/),
);

/**
 * Small JSON values with plain keys (`fc.jsonValue` may emit `__proto__` keys, which the schema silently drops).
 * Two levels of at most four items keep every value well under `LIMITS.worldStateValueChars` once serialized.
 */
const worldValueArbitrary: fc.Arbitrary<JsonValue> = fc.letrec<{ value: JsonValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', maxDepth: 2, withCrossShrink: true },
    fc.string({ maxLength: 40 }),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc
      .uniqueArray(fc.tuple(fc.stringMatching(/^[a-z]{1,8}$/), tie('value')), {
        maxLength: 4,
        selector: ([key]) => key,
      })
      .map((entries) => Object.fromEntries(entries)),
  ),
})).value;

/** Picks a sub-list, in order, of at most `max` items (fast-check refuses a maxLength above the list's length). */
function someOf<T>(items: readonly T[], max: number): fc.Arbitrary<T[]> {
  return fc.subarray([...items], { maxLength: Math.max(0, Math.min(max, items.length)) });
}

/** Ids drawn from `idArbitrary` that are not in `taken`, at most `max` of them. */
function freshIds(taken: ReadonlySet<string>, max: number): fc.Arbitrary<string[]> {
  return fc.uniqueArray(idArbitrary, { maxLength: Math.max(0, max) }).map((ids) => ids.filter((id) => !taken.has(id)));
}

function recordFrom<V>(entries: ReadonlyArray<readonly [string, V]>): Record<string, V> {
  return Object.fromEntries(entries);
}

function traitsArbitrary(maxKeys: number): fc.Arbitrary<Record<string, number>> {
  return fc
    .uniqueArray(fc.tuple(traitNameArbitrary, unitArbitrary), { maxLength: maxKeys, selector: ([name]) => name })
    .map(recordFrom);
}

function relationshipArbitrary(): fc.Arbitrary<Relationship> {
  return fc.record({
    kind: fc.constantFrom('acquaintance', 'friend', 'rival', 'sibling', 'mentor'),
    affinity: affinityArbitrary,
    trust: unitArbitrary,
    since: fc.option(idArbitrary, { nil: null }),
  });
}

function characterArbitrary(id: string, others: readonly string[]): fc.Arbitrary<CharacterState> {
  return fc
    .record({
      name: nameArbitrary,
      aliases: fc.uniqueArray(nameArbitrary, { maxLength: 3 }),
      description: shortTextArbitrary,
      role: fc.constantFrom('main', 'supporting', 'minor' as const),
      status: fc.constantFrom('active', 'active', 'absent', 'missing', 'dead' as const),
      traits: traitsArbitrary(4),
      targets: someOf(others, 3),
      relationshipValues: fc.array(relationshipArbitrary(), { minLength: 3, maxLength: 3 }),
      arcProgress: unitArbitrary,
      introducedIn: fc.option(idArbitrary, { nil: null }),
      lastAppearance: fc.option(idArbitrary, { nil: null }),
      knowledge: fc.uniqueArray(shortTextArbitrary, { maxLength: 3 }),
      appearance: shortTextArbitrary,
    })
    .map(({ targets, relationshipValues, ...rest }) => ({
      id,
      ...rest,
      relationships: recordFrom(targets.map((target, index) => [target, relationshipValues[index]!] as const)),
    }));
}

function threadArbitrary(id: string, characterIds: readonly string[]): fc.Arbitrary<PlotThread> {
  return fc
    .record({
      title: nameArbitrary,
      summary: shortTextArbitrary,
      status: fc.constantFrom('open', 'advancing', 'dormant', 'resolved' as const),
      importance: unitArbitrary,
      characters: someOf(characterIds, 4),
      openedIn: fc.option(idArbitrary, { nil: null }),
      lastAdvancedIn: fc.option(idArbitrary, { nil: null }),
      resolvedScene: idArbitrary,
      setups: fc.uniqueArray(shortTextArbitrary, { maxLength: 3 }),
    })
    .map(({ resolvedScene, ...rest }) => ({
      id,
      ...rest,
      resolvedIn: rest.status === 'resolved' ? resolvedScene : null,
    }));
}

function influenceArbitrary(id: string, storyId: string): fc.Arbitrary<UserInfluence> {
  return fc.record({
    id: fc.constant(id),
    storyId: fc.constant(storyId),
    source: fc.constantFrom('solana', 'web', 'api', 'cli' as const),
    author: fc.stringMatching(/^[A-Za-z0-9]{1,20}$/),
    kind: fc.constantFrom('vote', 'suggestion', 'tip' as const),
    choice: fc.option(fc.string({ maxLength: 20 }), { nil: null }),
    text: shortTextArbitrary,
    weight: fc.double({ min: 0, max: 1000, noNaN: true }),
    receivedAt: isoDateArbitrary,
    proof: fc.constant({ type: 'none' as const }),
    // Mostly pending, as the store's read view holds; the odd settled one checks that only pending ones are used.
    status: fc.constantFrom('pending', 'pending', 'pending', 'applied', 'rejected' as const),
    reason: fc.constant(null),
    resolvedIn: fc.constant(null),
  });
}

/** Bounds of `storyStateArbitrary`; small defaults keep properties fast. */
export interface StoryStateArbitraryOptions {
  /** Most characters in a generated state. Default 6. */
  maxCharacters?: number;
  /** Most plot threads. Default 6. */
  maxThreads?: number;
  /** Most influences in the queue. Default 4. */
  maxInfluences?: number;
  /** Most world-state keys. Default 6. */
  maxWorldKeys?: number;
}

/**
 * Any valid `StoryState` (it passes `StoryStateSchema`), with characters stored under their own ids, unique
 * thread ids, relationships and thread characters that point at existing characters, and some dead characters,
 * resolved threads and settled influences among the rest.
 *
 * @example
 * ```ts
 * import fc from 'fast-check';
 * import { StoryStateSchema } from 'storyloom';
 * import { storyStateArbitrary } from 'storyloom/testing/arbitraries';
 * fc.assert(fc.property(storyStateArbitrary(), (state) => StoryStateSchema.safeParse(state).success));
 * ```
 */
export function storyStateArbitrary(options: StoryStateArbitraryOptions = {}): fc.Arbitrary<StoryState> {
  const { maxCharacters = 6, maxThreads = 6, maxInfluences = 4, maxWorldKeys = 6 } = options;
  return fc
    .record({
      storyId: idArbitrary,
      version: fc.nat({ max: 1_000_000 }),
      chapterIndex: fc.nat({ max: 1_000 }),
      sceneCount: fc.nat({ max: 1_000_000 }),
      sceneId: fc.option(idArbitrary, { nil: null }),
      characterIds: fc.uniqueArray(idArbitrary, { maxLength: maxCharacters }),
      threadIds: fc.uniqueArray(idArbitrary, { maxLength: maxThreads }),
      influenceIds: fc.uniqueArray(idArbitrary, { maxLength: maxInfluences }),
      bible: fc.record({
        title: nameArbitrary,
        premise: fc.string({ minLength: 1, maxLength: 80 }),
        genre: fc.constantFrom('fantasy', 'noir', 'science fiction', 'romance'),
        tone: fc.constantFrom('wry', 'bleak', 'hopeful'),
        worldRules: fc.array(shortTextArbitrary, { maxLength: 3 }),
        style: shortTextArbitrary,
        chapterLength: fc.integer({ min: 1, max: 20 }),
      }),
      worldState: fc
        .uniqueArray(fc.tuple(worldKeyArbitrary, worldValueArbitrary), {
          maxLength: maxWorldKeys,
          selector: ([key]) => key,
        })
        .map(recordFrom),
      createdAt: isoDateArbitrary,
      updatedAt: isoDateArbitrary,
    })
    .chain(({ characterIds, threadIds, influenceIds, ...rest }) =>
      fc
        .record({
          characters: fc.tuple(
            ...characterIds.map((id) =>
              characterArbitrary(
                id,
                characterIds.filter((other) => other !== id),
              ),
            ),
          ),
          plotThreads: fc.tuple(...threadIds.map((id) => threadArbitrary(id, characterIds))),
          userInfluenceQueue: fc.tuple(...influenceIds.map((id) => influenceArbitrary(id, rest.storyId))),
        })
        .map(
          ({ characters, plotThreads, userInfluenceQueue }): StoryState => ({
            ...rest,
            chapterId: chapterIdFor(rest.chapterIndex),
            // A story with no scene yet has no last scene id.
            sceneId: rest.sceneCount === 0 ? null : (rest.sceneId ?? `scene-${rest.sceneCount - 1}`),
            characters: recordFrom(characters.map((character) => [character.id, character] as const)),
            plotThreads,
            userInfluenceQueue,
          }),
        ),
    );
}

function relationshipChangeArbitrary(targetId: string): fc.Arbitrary<RelationshipChange> {
  return fc
    .record(
      {
        kind: fc.constantFrom('friend', 'rival', 'ally', 'enemy'),
        affinity: affinityArbitrary,
        affinityChange: fc.double({ min: -0.5, max: 0.5, noNaN: true }),
        trust: unitArbitrary,
        note: fc.string({ maxLength: 40 }),
      },
      { requiredKeys: [], noNullPrototype: true },
    )
    .map((change) => ({ targetId, ...change }));
}

function relationshipChangesArbitrary(
  ownerId: string,
  candidates: readonly string[],
  existing: Readonly<Record<string, Relationship>>,
): fc.Arbitrary<RelationshipChange[]> {
  const room = LIMITS.relationships - Object.keys(existing).length;
  // At the relationship limit only existing relationships may change, so the delta stays valid.
  const targets = candidates.filter((id) => id !== ownerId && (room > 3 || Object.hasOwn(existing, id)));
  return someOf(targets, 3).chain((chosen) =>
    fc.tuple(
      ...chosen.map((targetId) =>
        fc.oneof(
          { weight: 6, arbitrary: relationshipChangeArbitrary(targetId) },
          { weight: 1, arbitrary: fc.constant<RelationshipChange>({ targetId, remove: true }) },
        ),
      ),
    ),
  );
}

/** Knobs of `stateDeltaArbitrary`. */
export interface StateDeltaArbitraryOptions {
  /** Most entries in each list of the delta. Default 3. */
  maxEntries?: number;
}

/**
 * A `StateDelta` that is valid for `state` by construction: updates and advances name existing characters and
 * threads, new ids are fresh, absolute values are in range, dead characters stay dead, resolved threads are left
 * alone, influences come from the pending queue and no limit is exceeded. Relative changes may still overshoot and be
 * clamped, which `applyDelta` reports as warnings. Pair it with `nextSceneArbitrary`, or use `storyStepArbitrary`.
 *
 * @example
 * ```ts
 * import fc from 'fast-check';
 * import { applyDelta } from 'storyloom';
 * import { nextSceneArbitrary, stateDeltaArbitrary, storyStateArbitrary } from 'storyloom/testing/arbitraries';
 * const step = storyStateArbitrary().chain((state) =>
 *   stateDeltaArbitrary(state).chain((delta) => nextSceneArbitrary(state, delta).map((scene) => ({ state, delta, scene }))),
 * );
 * fc.assert(fc.property(step, ({ state, delta, scene }) => applyDelta(state, delta, scene).ok));
 * ```
 */
export function stateDeltaArbitrary(
  state: StoryState,
  options: StateDeltaArbitraryOptions = {},
): fc.Arbitrary<StateDelta> {
  const max = Math.min(options.maxEntries ?? 3, LIMITS.deltaEntries);
  const characters = Object.values(state.characters);
  const existingIds = Object.keys(state.characters);
  const threadIds = new Set(state.plotThreads.map((thread) => thread.id));
  const unresolved = state.plotThreads.filter((thread) => thread.status !== 'resolved');
  const pending = [...new Set(state.userInfluenceQueue.filter((i) => i.status === 'pending').map((i) => i.id))];
  const worldKeys = Object.keys(state.worldState);

  return fc
    .record({
      newCharacterIds: freshIds(new Set(existingIds), Math.min(max, LIMITS.characters - existingIds.length)),
      newThreadIds: freshIds(threadIds, Math.min(max, LIMITS.plotThreads - state.plotThreads.length)),
      updated: someOf(characters, max),
      advanced: someOf(unresolved, max),
      resolved: someOf(unresolved, max),
      influences: fc.shuffledSubarray(pending, { maxLength: Math.min(pending.length, LIMITS.influencesPerScene) }),
      rejectedCount: fc.nat(),
      worldSet: fc.uniqueArray(fc.tuple(worldKeyArbitrary, worldValueArbitrary), {
        maxLength: max,
        selector: ([key]) => key,
      }),
      worldUnset: someOf(worldKeys, max),
      chapterClosed: fc.option(fc.record({ summary: shortTextArbitrary }), { nil: null }),
    })
    .chain((plan) => {
      const known = [...existingIds, ...plan.newCharacterIds];
      const worldRoom = LIMITS.worldStateKeys - worldKeys.length;
      const worldStateSet = recordFrom(
        plan.worldSet.filter(([key]) => worldRoom >= max || Object.hasOwn(state.worldState, key)),
      );
      const split = plan.influences.length === 0 ? 0 : plan.rejectedCount % (plan.influences.length + 1);
      return fc.record({
        charactersIntroduced: fc.tuple(
          ...plan.newCharacterIds.map((id) =>
            fc
              .record({
                name: nameArbitrary,
                aliases: fc.uniqueArray(nameArbitrary, { maxLength: 2 }),
                description: shortTextArbitrary,
                role: fc.constantFrom('main', 'supporting', 'minor' as const),
                // Mostly alive; a body found in the scene is a character too.
                status: fc.constantFrom('active', 'active', 'active', 'absent', 'dead' as const),
                traits: traitsArbitrary(4),
                relationships: relationshipChangesArbitrary(id, known, {}),
                knowledge: fc.uniqueArray(shortTextArbitrary, { maxLength: 2 }),
                appearance: shortTextArbitrary,
              })
              .map((intro) => ({ id, ...intro })),
          ),
        ),
        characterUpdates: fc.tuple(...plan.updated.map((character) => characterUpdateArbitrary(character, known))),
        worldStateSet: fc.constant(worldStateSet),
        worldStateUnset: fc.constant(plan.worldUnset),
        threadsOpened: fc.tuple(
          ...plan.newThreadIds.map((id) =>
            fc
              .record({
                title: nameArbitrary,
                summary: shortTextArbitrary,
                importance: unitArbitrary,
                characters: someOf(known, 4),
                setups: fc.uniqueArray(shortTextArbitrary, { maxLength: 2 }),
              })
              .map((opening) => ({ id, ...opening })),
          ),
        ),
        threadsAdvanced: fc.tuple(...plan.advanced.map((thread) => threadAdvanceArbitrary(thread, known))),
        threadsResolved: fc.tuple(
          ...plan.resolved.map((thread) =>
            fc.string({ maxLength: 60 }).map((resolution) => ({ id: thread.id, resolution })),
          ),
        ),
        chapterClosed: fc.constant(plan.chapterClosed),
        influencesApplied: fc.constant(plan.influences.slice(split)),
        influencesRejected: fc.tuple(
          ...plan.influences
            .slice(0, split)
            .map((id) => fc.stringMatching(/^[A-Za-z][A-Za-z ]{0,30}$/).map((reason) => ({ id, reason }))),
        ),
      });
    });
}

function characterUpdateArbitrary(
  character: CharacterState,
  known: readonly string[],
): fc.Arbitrary<StateDelta['characterUpdates'][number]> {
  const traitRoom = LIMITS.traits - Object.keys(character.traits).length;
  const aliasRoom = LIMITS.aliases - character.aliases.length;
  const knowledgeRoom = LIMITS.knowledge - character.knowledge.length;
  // Near the trait limit, only traits the character already has may change.
  const traitMap = (values: fc.Arbitrary<number>) =>
    fc
      .uniqueArray(fc.tuple(traitNameArbitrary, values), { maxLength: 3, selector: ([name]) => name })
      .map((entries) =>
        recordFrom(entries.filter(([name]) => traitRoom >= 10 || Object.hasOwn(character.traits, name))),
      );
  return fc
    .record(
      {
        // The dead stay dead; the living may take any status, death included.
        status:
          character.status === 'dead'
            ? fc.constant('dead' as const)
            : fc.constantFrom('active', 'absent', 'missing', 'dead' as const),
        description: shortTextArbitrary,
        role: fc.constantFrom('main', 'supporting', 'minor' as const),
        arcProgress: unitArbitrary,
      },
      { requiredKeys: [], noNullPrototype: true },
    )
    .chain((optional) =>
      fc
        .record({
          aliasesAdded: fc.uniqueArray(nameArbitrary, { maxLength: Math.max(0, Math.min(2, aliasRoom)) }),
          traits: traitMap(unitArbitrary),
          traitChanges: traitMap(fc.double({ min: -0.6, max: 0.6, noNaN: true })),
          relationships: relationshipChangesArbitrary(character.id, known, character.relationships),
          knowledgeAdded: fc.uniqueArray(shortTextArbitrary, { maxLength: Math.max(0, Math.min(2, knowledgeRoom)) }),
        })
        .map((lists) => ({ id: character.id, ...optional, ...lists })),
    );
}

function threadAdvanceArbitrary(
  thread: PlotThread,
  known: readonly string[],
): fc.Arbitrary<StateDelta['threadsAdvanced'][number]> {
  const characterRoom = LIMITS.sceneTags - thread.characters.length;
  const setupRoom = LIMITS.threadSetups - thread.setups.length;
  return fc
    .record(
      {
        summary: shortTextArbitrary,
        status: fc.constantFrom('open', 'advancing', 'dormant' as const),
        importance: unitArbitrary,
      },
      { requiredKeys: [], noNullPrototype: true },
    )
    .chain((optional) =>
      fc
        .record({
          charactersAdded: someOf(known, Math.min(2, characterRoom)),
          setupsAdded: fc.uniqueArray(shortTextArbitrary, { maxLength: Math.max(0, Math.min(2, setupRoom)) }),
          setupsPaidOff: someOf(thread.setups, 2),
        })
        .map((lists) => ({ id: thread.id, ...optional, ...lists })),
    );
}

/**
 * A valid next `Scene` for `state`: same story and chapter, `index = state.sceneCount`,
 * `stateVersion = state.version + 1`, a fresh id, and present characters drawn from the living characters of the
 * state and those `delta` introduces. `influencesApplied` mirrors `delta.influencesApplied`.
 *
 * @example
 * ```ts
 * import fc from 'fast-check';
 * import { nextSceneArbitrary, storyStateArbitrary } from 'storyloom/testing/arbitraries';
 * const [state] = fc.sample(storyStateArbitrary(), { numRuns: 1, seed: 42 });
 * const [scene] = fc.sample(nextSceneArbitrary(state!), { numRuns: 1, seed: 42 });
 * ```
 */
export function nextSceneArbitrary(state: StoryState, delta?: StateDelta): fc.Arbitrary<Scene> {
  const living = Object.values(state.characters)
    .filter((character) => character.status !== 'dead')
    .map((character) => character.id);
  const present = [...living, ...(delta?.charactersIntroduced.map((intro) => intro.id) ?? [])];
  return fc
    .record({
      id: idArbitrary.filter((id) => id !== state.sceneId),
      title: nameArbitrary,
      text: fc.string({ minLength: 1, maxLength: 200 }).filter((text) => /\S/.test(text)),
      summary: shortTextArbitrary,
      characters: someOf(present, LIMITS.sceneTags),
      locations: fc.uniqueArray(nameArbitrary, { maxLength: 3 }),
      themes: fc.uniqueArray(nameArbitrary, { maxLength: 3 }),
      mood: fc.constantFrom('', 'tense', 'calm', 'eerie'),
      importance: unitArbitrary,
      imagePrompt: shortTextArbitrary,
      createdAt: isoDateArbitrary,
    })
    .map((scene) => ({
      ...scene,
      storyId: state.storyId,
      chapterId: state.chapterId,
      index: state.sceneCount,
      stateVersion: state.version + 1,
      influencesApplied: [...(delta?.influencesApplied ?? [])],
    }));
}

/**
 * One step of a story: a valid delta for `state` and the valid next scene that goes with it.
 *
 * @example
 * ```ts
 * import fc from 'fast-check';
 * import { applyDelta } from 'storyloom';
 * import { storyStateArbitrary, storyStepArbitrary } from 'storyloom/testing/arbitraries';
 * const withStep = storyStateArbitrary().chain((state) => storyStepArbitrary(state).map((step) => ({ state, ...step })));
 * fc.assert(fc.property(withStep, ({ state, delta, scene }) => applyDelta(state, delta, scene).ok));
 * ```
 */
export function storyStepArbitrary(
  state: StoryState,
  options: StateDeltaArbitraryOptions = {},
): fc.Arbitrary<{ delta: StateDelta; scene: Scene }> {
  return stateDeltaArbitrary(state, options).chain((delta) =>
    nextSceneArbitrary(state, delta).map((scene) => ({ delta, scene })),
  );
}

/** Mostly a value from `right`, now and then one from `wrong`. */
function mostly<T>(right: fc.Arbitrary<T>, wrong: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return fc.oneof({ weight: 12, arbitrary: right }, { weight: 1, arbitrary: wrong });
}

/** Mostly one of `known`, sometimes any id at all. */
function mostlyKnownId(known: readonly string[]): fc.Arbitrary<string> {
  return known.length === 0 ? idArbitrary : mostly(fc.constantFrom(...known), idArbitrary);
}

/**
 * A `StateDelta` that passes `StateDeltaSchema` but is only mostly right about continuity: now and then an id is
 * unknown or already taken, a character is dead, a thread resolved, an influence settled or both applied and
 * rejected, a number a little outside its range. Use it to check that a continuity checker finds what is wrong, as
 * `stateDeltaArbitrary` checks that it accepts what is right. Pair it with `plausibleSceneArbitrary`.
 *
 * @example
 * ```ts
 * import fc from 'fast-check';
 * import { applyDelta } from 'storyloom';
 * import { plausibleDeltaArbitrary, plausibleSceneArbitrary } from 'storyloom/testing/arbitraries';
 * const step = plausibleDeltaArbitrary(state).chain((delta) =>
 *   plausibleSceneArbitrary(state, delta).map((scene) => ({ delta, scene })),
 * );
 * fc.assert(fc.property(step, ({ delta, scene }) => {
 *   const result = applyDelta(state, delta, scene); // ok, or errors that say why
 * }));
 * ```
 */
export function plausibleDeltaArbitrary(state: StoryState): fc.Arbitrary<StateDelta> {
  const characterIds = Object.keys(state.characters);
  const openThreadIds = state.plotThreads.filter((thread) => thread.status !== 'resolved').map((thread) => thread.id);
  const anyThreadId = mostlyKnownId(state.plotThreads.map((thread) => thread.id));
  const pendingIds = state.userInfluenceQueue.filter((item) => item.status === 'pending').map((item) => item.id);
  const characterId = mostlyKnownId(characterIds);
  const threadId = openThreadIds.length === 0 ? anyThreadId : mostly(fc.constantFrom(...openThreadIds), anyThreadId);
  const influenceId = mostlyKnownId(pendingIds.length > 0 ? pendingIds : state.userInfluenceQueue.map((i) => i.id));
  const loose = (min: number, max: number) =>
    mostly(fc.double({ min, max, noNaN: true }), fc.double({ min: min - 1, max: max + 1, noNaN: true }));
  const optional = { requiredKeys: [] as never[], noNullPrototype: true };
  const traits = (values: fc.Arbitrary<number>) =>
    fc.uniqueArray(fc.tuple(traitNameArbitrary, values), { maxLength: 2, selector: ([name]) => name }).map(recordFrom);
  const relationshipChange = fc
    .tuple(
      characterId,
      fc.record(
        {
          kind: fc.constantFrom('friend', 'rival'),
          affinity: loose(-1, 1),
          affinityChange: fc.double({ min: -1, max: 1, noNaN: true }),
          trust: loose(0, 1),
          remove: fc.boolean(),
        },
        optional,
      ),
    )
    .map(([targetId, change]): RelationshipChange => ({ targetId, ...change }));
  const few = <T>(item: fc.Arbitrary<T>) => fc.array(item, { maxLength: 2 });
  // With nothing to refer to, a list is mostly left empty rather than always wrong.
  const fewOf = <T>(known: readonly unknown[], item: fc.Arbitrary<T>, maxLength = 2) =>
    known.length > 0 ? fc.array(item, { maxLength }) : mostly(fc.constant<T[]>([]), fc.array(item, { maxLength: 1 }));
  return fc.record({
    charactersIntroduced: few(
      fc.record({
        id: characterIds.length === 0 ? idArbitrary : mostly(idArbitrary, fc.constantFrom(...characterIds)),
        name: nameArbitrary,
        aliases: fc.constant([]),
        description: fc.constant(''),
        role: fc.constant('supporting' as const),
        status: mostly(fc.constant('active' as const), fc.constant('dead' as const)),
        traits: traits(loose(0, 1)),
        relationships: fc.array(relationshipChange, { maxLength: 1 }),
        knowledge: fc.constant([]),
        appearance: fc.constant(''),
      }),
    ),
    characterUpdates: fewOf(
      characterIds,
      fc
        .tuple(
          characterId,
          fc.record(
            {
              status: fc.constantFrom('active', 'absent', 'missing', 'dead' as const),
              arcProgress: loose(0, 1),
            },
            optional,
          ),
          fc.record({
            aliasesAdded: fc.uniqueArray(nameArbitrary, { maxLength: 1 }),
            traits: traits(loose(0, 1)),
            traitChanges: traits(fc.double({ min: -1, max: 1, noNaN: true })),
            relationships: fc.array(relationshipChange, { maxLength: 1 }),
            knowledgeAdded: fc.uniqueArray(shortTextArbitrary, { maxLength: 1 }),
          }),
        )
        .map(([id, optionalFields, lists]) => ({ id, ...optionalFields, ...lists })),
    ),
    worldStateSet: fc
      .uniqueArray(fc.tuple(worldKeyArbitrary, worldValueArbitrary), { maxLength: 2, selector: ([key]) => key })
      .map(recordFrom),
    worldStateUnset: fc.uniqueArray(worldKeyArbitrary, { maxLength: 2 }),
    threadsOpened: few(
      fc.record({
        id: mostly(idArbitrary, anyThreadId),
        title: nameArbitrary,
        summary: shortTextArbitrary,
        importance: loose(0, 1),
        characters: fc.array(characterId, { maxLength: 2 }),
        setups: fc.constant([]),
      }),
    ),
    threadsAdvanced: fewOf(
      openThreadIds,
      fc
        .tuple(
          threadId,
          fc.record(
            { status: fc.constantFrom('open', 'advancing', 'dormant' as const), importance: loose(0, 1) },
            optional,
          ),
          fc.record({
            charactersAdded: fc.array(characterId, { maxLength: 1 }),
            setupsAdded: fc.uniqueArray(shortTextArbitrary, { maxLength: 1 }),
            setupsPaidOff: fc.uniqueArray(shortTextArbitrary, { maxLength: 1 }),
          }),
        )
        .map(([id, optionalFields, lists]) => ({ id, ...optionalFields, ...lists })),
    ),
    threadsResolved: fewOf(openThreadIds, fc.record({ id: threadId, resolution: shortTextArbitrary }), 1),
    chapterClosed: fc.option(fc.record({ summary: shortTextArbitrary }), { nil: null }),
    influencesApplied: fewOf(pendingIds, influenceId, 1),
    influencesRejected: fewOf(
      pendingIds,
      fc.record({ id: influenceId, reason: fc.constantFrom('off topic', 'too late') }),
      1,
    ),
  });
}

/**
 * A `Scene` that passes `SceneSchema` and is mostly, but not always, the right next scene for `state`: now and then
 * the story, chapter, index, version or id is off, present characters include the dead and the unknown, and the
 * applied influences may disagree with `delta`.
 *
 * @example
 * ```ts
 * import fc from 'fast-check';
 * import { plausibleSceneArbitrary } from 'storyloom/testing/arbitraries';
 * const scenes = plausibleSceneArbitrary(state);
 * ```
 */
export function plausibleSceneArbitrary(state: StoryState, delta?: StateDelta): fc.Arbitrary<Scene> {
  const everyone = [...Object.keys(state.characters), ...(delta?.charactersIntroduced.map((intro) => intro.id) ?? [])];
  const living = everyone.filter((id) => state.characters[id]?.status !== 'dead');
  const rarely = <T>(right: T, wrong: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 19, arbitrary: fc.constant(right) }, { weight: 1, arbitrary: wrong });
  return fc
    .record({
      scene: nextSceneArbitrary(state, delta),
      characters:
        living.length === 0
          ? mostly(fc.constant<string[]>([]), fc.array(mostlyKnownId(everyone), { maxLength: 1 }))
          : fc.array(mostly(fc.constantFrom(...living), mostlyKnownId(everyone)), { maxLength: 3 }),
      storyId: rarely(state.storyId, idArbitrary),
      chapterId: rarely(state.chapterId, fc.nat({ max: 1_000 }).map(chapterIdFor)),
      index: rarely(state.sceneCount, fc.nat({ max: state.sceneCount + 2 })),
      stateVersion: rarely(state.version + 1, fc.integer({ min: 1, max: state.version + 3 })),
      id: rarely<string | null>(null, fc.constant(state.sceneId)),
      influencesApplied: rarely<string[] | null>(null, fc.array(idArbitrary, { maxLength: 2 })),
    })
    .map(({ scene, id, influencesApplied, ...header }) => ({
      ...scene,
      ...header,
      id: id ?? scene.id,
      influencesApplied: influencesApplied ?? scene.influencesApplied,
    }));
}

function nestedArray(depth: number): unknown {
  let value: unknown = 'bottom';
  for (let level = 0; level < depth; level += 1) value = [value];
  // fast-check prints counterexamples recursively and would overflow its own stack on this one.
  Object.defineProperty(value, fc.toStringMethod, { value: () => `[array nested ${depth} deep]` });
  return value;
}

/** Hostile values that random generation rarely reaches on its own. Built lazily, once: some are large. */
let hostileValues: unknown[] | undefined;
function getHostileValues(): unknown[] {
  hostileValues ??= [
    null,
    undefined,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    -0,
    -1,
    2,
    1e308,
    -1e308,
    Number.MAX_SAFE_INTEGER + 2,
    '',
    ' ',
    '\u0000',
    '__proto__',
    'constructor',
    'x'.repeat(300_000),
    [],
    {},
    [null],
    new Array(10_001).fill('x'),
    JSON.parse('{"__proto__": {"polluted": "yes"}}'),
    JSON.parse('{"constructor": {"prototype": {"polluted": "yes"}}}'),
    Object.create(null),
    nestedArray(20_000),
    new Date(Number.NaN),
    new Map([['a', 1]]),
    Symbol('garbage'),
    10n,
    () => 'function',
  ];
  return hostileValues;
}

/**
 * Values no schema should accept and no parser should crash on: anything fast-check can build (null-prototype
 * objects, boxed values, maps, sparse arrays, big integers, ...) plus hand-picked hostile values: NaN, infinities,
 * 300 KB strings, 10,001-item arrays, 20,000-deep nesting, `__proto__` and `constructor` keys.
 *
 * @example
 * ```ts
 * import fc from 'fast-check';
 * import { applyDelta } from 'storyloom';
 * import { garbageArbitrary } from 'storyloom/testing/arbitraries';
 * fc.assert(fc.property(garbageArbitrary(), (garbage) => {
 *   applyDelta(state, garbage as never, scene); // must not throw
 * }));
 * ```
 */
export function garbageArbitrary(): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.anything({
      withNullPrototype: true,
      withBoxedValues: true,
      withMap: true,
      withSet: true,
      withBigInt: true,
      withDate: true,
      withTypedArray: true,
      withSparseArray: true,
      withObjectString: true,
      withUnicodeString: true,
    }),
    fc.constantFrom(...getHostileValues()),
  );
}

type PathStep = string | number;

/**
 * The paths inside a JSON-like value, the root included, so one can be picked to corrupt. Depth and count are
 * capped: an earlier mutation may have planted a 20,000-deep nesting or a 10,001-item array.
 */
function pathsOf(value: unknown): PathStep[][] {
  const paths: PathStep[][] = [];
  const walk = (node: unknown, path: PathStep[]): void => {
    if (paths.length >= 2_000) return;
    paths.push(path);
    if (path.length >= 12 || typeof node !== 'object' || node === null) return;
    if (Array.isArray(node)) {
      node.slice(0, 100).forEach((item, index) => {
        walk(item, [...path, index]);
      });
    } else {
      for (const key of Object.keys(node)) walk((node as Record<string, unknown>)[key], [...path, key]);
    }
  };
  walk(value, []);
  return paths;
}

type Mutation =
  | { kind: 'replace'; pick: number; value: unknown }
  | { kind: 'delete'; pick: number }
  | { kind: 'addKey'; pick: number; key: string; value: unknown };

/** Rebuilds `root` with `path` changed by `edit`; untouched branches are shared, the input is never modified. */
function editAt(root: unknown, path: readonly PathStep[], edit: (node: unknown) => unknown): unknown {
  if (path.length === 0) return edit(root);
  const [head, ...rest] = path as [PathStep, ...PathStep[]];
  if (Array.isArray(root)) {
    const copy = [...root];
    copy[head as number] = editAt(root[head as number], rest, edit);
    return copy;
  }
  const source = root as Record<string, unknown>;
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(source)) {
    // defineProperty, not assignment: a `__proto__` key must stay an own key, as JSON.parse would leave it.
    Object.defineProperty(copy, key, {
      value: key === head ? editAt(source[key], rest, edit) : source[key],
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return copy;
}

function applyMutation(value: unknown, mutation: Mutation): unknown {
  const paths = pathsOf(value);
  const path = paths[mutation.pick % paths.length] ?? [];
  switch (mutation.kind) {
    case 'replace':
      return editAt(value, path, () => mutation.value);
    case 'delete':
      if (path.length === 0) return undefined;
      return editAt(value, path.slice(0, -1), (parent) => {
        const last = path[path.length - 1]!;
        if (Array.isArray(parent)) return parent.filter((_, index) => index !== last);
        const copy = { ...(parent as Record<string, unknown>) };
        delete copy[last as string];
        return copy;
      });
    case 'addKey':
      return editAt(value, path, (node) => {
        if (typeof node !== 'object' || node === null || Array.isArray(node)) return node;
        const copy = { ...(node as Record<string, unknown>) };
        Object.defineProperty(copy, mutation.key, {
          value: mutation.value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
        return copy;
      });
  }
}

/**
 * Takes valid values from `valid` and corrupts one to three places in each: a field replaced by a wrong type, an
 * out-of-range or non-finite number, a huge string or array, or garbage; a field deleted; or a key such as
 * `__proto__` or `constructor` added. Some results stay valid by chance (a string replaced by another string).
 *
 * @example
 * ```ts
 * import fc from 'fast-check';
 * import { applyDelta } from 'storyloom';
 * import { mutatedArbitrary, stateDeltaArbitrary } from 'storyloom/testing/arbitraries';
 * fc.assert(fc.property(mutatedArbitrary(stateDeltaArbitrary(state)), (delta) => {
 *   applyDelta(state, delta as never, scene); // must not throw
 * }));
 * ```
 */
export function mutatedArbitrary<T>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  const replacement = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...getHostileValues()) },
    { weight: 2, arbitrary: fc.double() },
    { weight: 1, arbitrary: fc.integer() },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
    { weight: 1, arbitrary: garbageArbitrary() },
  );
  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('replace' as const), pick: fc.nat(), value: replacement }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('addKey' as const),
        pick: fc.nat(),
        key: fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', ''),
        value: replacement,
      }),
    },
  );
  return fc
    .tuple(valid, fc.array(mutation, { minLength: 1, maxLength: 3 }))
    .map(([value, mutations]) => mutations.reduce<unknown>(applyMutation, value));
}
