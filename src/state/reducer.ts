/**
 * The pure reducer of storyloom: `applyDelta(state, delta, scene)` checks a generator's proposed change against the
 * story's continuity and returns the next state, or every reason it cannot be applied.
 *
 * It never mutates its inputs, never reads the clock or a random source and never throws, whatever it is given: the
 * engine hands it untrusted model output, and a crash there would lose the episode instead of producing a repair
 * prompt. The state it returns is always one that `StoryStateSchema` accepts.
 *
 * @module
 */
import type { z } from 'zod';
import { ContinuityError } from '../core/errors.js';
import { singleLine } from '../core/single-line.js';
import { clipText } from '../core/text.js';
import {
  type CharacterState,
  chapterIdFor,
  type JsonValue,
  LIMITS,
  type PlotThread,
  type Relationship,
  type RelationshipChange,
  type Scene,
  type SceneInput,
  SceneSchema,
  type StateDelta,
  type StateDeltaInput,
  StateDeltaSchema,
  type StoryState,
  StoryStateSchema,
} from './schema.js';

/**
 * Every code `applyDelta` can report, in a stable order. Each code always comes with the same severity: the
 * warnings are `VALUE_CLAMPED`, `ARC_REGRESSION`, `KNOWLEDGE_FORGOTTEN`, `THREADS_ARCHIVED`,
 * `CHAPTER_CLOSED_WITH_OPEN_THREADS`, `UNKNOWN_SETUP`, `SETUPS_UNPAID`, `SUMMARY_REPLACED`, `DUPLICATE_INFLUENCE`
 * and `UNKNOWN_FIELD`; every other code is an error.
 *
 * @example
 * ```ts
 * import { CONTINUITY_ISSUE_CODES } from 'storyloom';
 * const known = new Set<string>(CONTINUITY_ISSUE_CODES);
 * known.has('DEAD_CHARACTER_ACTS'); // true
 * ```
 */
export const CONTINUITY_ISSUE_CODES = [
  'INVALID_STATE',
  'INVALID_DELTA',
  'INVALID_SCENE',
  'UNSAFE_KEY',
  'UNKNOWN_FIELD',
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
  'INVALID_NEXT_STATE',
  'INTERNAL_ERROR',
] as const;

/**
 * What kind of continuity problem an issue is. Codes are stable: tools may switch on them.
 *
 * @example
 * ```ts
 * import { applyDelta, type ContinuityIssueCode } from 'storyloom';
 * const fatal: ContinuityIssueCode[] = ['DEAD_CHARACTER_ACTS', 'THREAD_ALREADY_RESOLVED'];
 * const result = applyDelta(state, delta, scene);
 * const hasFatal = result.issues.some((issue) => fatal.includes(issue.code));
 * ```
 */
export type ContinuityIssueCode = (typeof CONTINUITY_ISSUE_CODES)[number];

/**
 * One problem found by `applyDelta`. Structurally an `IssueLike`, so it can travel inside a `ContinuityError`.
 *
 * @example
 * ```ts
 * import type { ContinuityIssue } from 'storyloom';
 * const issue: ContinuityIssue = {
 *   code: 'VALUE_OUT_OF_RANGE',
 *   severity: 'error',
 *   path: 'delta.characterUpdates.0.traits.courage',
 *   message: 'Trait "courage" of character "mara" must be within 0..1, got 1.4',
 * };
 * ```
 */
export interface ContinuityIssue {
  code: ContinuityIssueCode;
  /** An `error` blocks the delta; a `warning` is applied anyway and reported. */
  severity: 'error' | 'warning';
  /** Dotted path into the arguments, rooted at `state`, `delta`, `scene` or `nextState`. */
  path: string;
  /** Human readable; quotes the offending ids and values so a model can repair its output from it. */
  message: string;
}

/**
 * The outcome of `applyDelta`. When `ok` is false, `state` is the input state itself, untouched.
 *
 * @example
 * ```ts
 * import { applyDelta, type DeltaResult } from 'storyloom';
 * const result: DeltaResult = applyDelta(state, delta, scene);
 * if (result.ok) await store.commitScene(state.storyId, { expectedVersion: state.version, scene, nextState: result.state, consumedInfluenceIds: [] });
 * ```
 */
export type DeltaResult =
  | { ok: true; state: StoryState; issues: ContinuityIssue[] }
  | { ok: false; state: StoryState; issues: ContinuityIssue[] };

/** Zod issues listed per argument; past this a single line says how many more there were, to keep prompts short. */
const MAX_SCHEMA_ISSUES = 50;
/** A trait changed by `traitChanges` before it was ever set starts from the middle of its range. */
const NEUTRAL_TRAIT = 0.5;
/** Threads at least this important left unresolved at a chapter's end deserve a warning. */
const MAJOR_THREAD_IMPORTANCE = 0.7;
/** Stands in for the scene id when the scene itself is invalid, so the delta can still be checked. */
const PLACEHOLDER_SCENE_ID = 'invalid-scene';

/**
 * Applies a generator's proposed `delta` for `scene` to `state`, checking continuity, and returns the next state.
 *
 * Contract:
 * - Pure and deterministic: inputs are never mutated, an ok result's state shares no object with them, and the
 *   same inputs always give a deep-equal result. It never throws: schema failures become `INVALID_STATE` / `INVALID_DELTA` /
 *   `INVALID_SCENE` issues whose paths come from zod, and an unexpected failure becomes `INTERNAL_ERROR`.
 * - Every issue is collected (not only the first), in a deterministic order: schema problems, scene header, then
 *   characters introduced, character updates, characters present, threads opened / advanced / resolved, world
 *   state, chapter, influences, limits. `ok` is true exactly when no issue is an error.
 * - A scene that was already applied (`scene.id === state.sceneId`, or `scene.index < state.sceneCount`) yields a
 *   single `DELTA_ALREADY_APPLIED` error and nothing else, whatever its delta holds (a replay's delta is not even
 *   read), so the engine can recognise a replay without noise.
 *
 * Semantics where the domain needed a decision:
 * - Two spellings of one text (composed and decomposed Unicode, NFC and NFD) are one: an alias, a knowledge item, a
 *   setup, a trait name or a world-state key is matched in either, and an entry keeps the spelling it had first.
 * - Introductions are applied first, then updates in order (two updates of one character both apply, the later
 *   one seeing the earlier), then threads opened, advanced and resolved in that order.
 * - Characters in `scene.characters` must exist or be introduced by this delta; one that was dead before the scene
 *   may not be present (`DEAD_CHARACTER_ACTS`), but one who dies in this scene may. There is no resurrection: an
 *   update moving a dead character to any other status is `DEAD_CHARACTER_ACTS` too.
 * - In one update an absolute value is applied before its relative change; a `traitChanges` entry for a trait the
 *   character does not have starts from 0.5. Results of relative changes are clamped with `VALUE_CLAMPED`.
 * - A relationship change creates the relationship when absent (kind `acquaintance`, affinity 0, trust 0.5,
 *   `since` = this scene); `remove: true` deletes it and ignores the other fields. A relationship of a character
 *   with itself is `SELF_RELATIONSHIP`, except its removal: a state may hold one (the schema accepts it), and
 *   `remove: true` deletes it.
 * - Advancing a thread replaces its summary when one is given; setups are added before paid-off ones are removed,
 *   and paying off an unknown setup is an `UNKNOWN_SETUP` warning. Resolving appends `Resolution: ...` to the
 *   summary, or replaces the summary with the resolution (warning `SUMMARY_REPLACED`) when both would not fit;
 *   resolving a thread with setups still unpaid is a `SETUPS_UNPAID` warning. Resolving also sets `lastAdvancedIn`.
 * - A character's sheet keeps at most `LIMITS.knowledge` (200) facts: when new ones would pass that, the oldest are
 *   dropped (`KNOWLEDGE_FORGOTTEN` warning; a fact the delta states again counts as new), so a story that runs for
 *   years never stalls on a full sheet. What was dropped is still told in the scenes, which retrieval finds.
 * - The same holds for plot threads: when the threads a delta opens would take the story past `LIMITS.plotThreads`
 *   (500), the earliest-opened resolved threads that this delta does not touch leave the live state, as many as
 *   needed (`THREADS_ARCHIVED` warning). Earlier snapshots, the scenes and the chapter summaries keep them. Only when
 *   too few resolved threads are left is the delta refused (`LIMIT_EXCEEDED`). An archived thread is unknown from
 *   then on: advancing it is `UNKNOWN_THREAD`, and its id may be used again.
 * - `worldStateSet` is applied before `worldStateUnset`, so a key in both ends up absent. A `__proto__` key in
 *   `worldStateSet` (at any depth) or in `traits` / `traitChanges` is rejected (`UNSAFE_KEY`): zod would otherwise
 *   drop it silently. Keys that name other `Object.prototype` members (`constructor`, `toString`) are ordinary keys.
 * - An influence listed twice in one list is a `DUPLICATE_INFLUENCE` warning; the same id both applied and rejected
 *   is an `INFLUENCE_CONFLICT` error.
 * - `scene.influencesApplied` must list exactly the ids of `delta.influencesApplied` (`INFLUENCE_MISMATCH`), so
 *   the committed scene and the consumed influences cannot disagree.
 * - A state the schema accepts may still be rejected as `INVALID_STATE` when a character's key differs from its
 *   `id` or two plot threads share an id: continuing from such a state would corrupt it further.
 *
 * @example
 * ```ts
 * import { applyDelta, assertContinuity, formatIssues } from 'storyloom';
 * const result = applyDelta(state, delta, scene);
 * if (!result.ok) {
 *   const repairPrompt = `Your scene breaks continuity:\n${formatIssues(result.issues)}`;
 * }
 * const { state: next, warnings } = assertContinuity(result);
 * ```
 */
export function applyDelta(state: StoryState, delta: StateDeltaInput, scene: SceneInput): DeltaResult {
  const issues = new IssueList();
  try {
    return reduce(state, delta, scene, issues);
  } catch (error) {
    issues.error('INTERNAL_ERROR', '(root)', `applyDelta failed unexpectedly: ${describeError(error)}`);
    return { ok: false, state, issues: issues.items };
  }
}

/**
 * Unwraps a `DeltaResult`: returns the next state and its warnings, or throws a `ContinuityError` whose `issues` are
 * the errors of the result and whose message lists them one per line.
 *
 * @example
 * ```ts
 * import { applyDelta, assertContinuity, ContinuityError } from 'storyloom';
 * try {
 *   const { state: next, warnings } = assertContinuity(applyDelta(state, delta, scene));
 * } catch (error) {
 *   if (ContinuityError.isInstance(error)) console.error(error.issues);
 * }
 * ```
 */
export function assertContinuity(result: DeltaResult): { state: StoryState; warnings: ContinuityIssue[] } {
  if (result.ok) return { state: result.state, warnings: result.issues };
  const errors = result.issues.filter((issue) => issue.severity === 'error');
  const count = errors.length === 1 ? '1 error' : `${errors.length} errors`;
  throw new ContinuityError(`The scene breaks the story's continuity (${count}):\n${formatIssues(errors)}`, {
    issues: errors,
  });
}

/**
 * Formats issues one per line (`error UNKNOWN_CHARACTER at scene.characters.2: ...`), for model repair prompts and
 * CLI output. Line breaks and control characters inside a path or message become spaces, so each issue stays on its
 * own line.
 *
 * @example
 * ```ts
 * import { applyDelta, formatIssues } from 'storyloom';
 * const result = applyDelta(state, delta, scene);
 * console.log(formatIssues(result.issues));
 * ```
 */
export function formatIssues(issues: ContinuityIssue[]): string {
  return issues
    .map(
      (issue) =>
        `${issue.severity} ${issue.code} at ${singleLine(String(issue.path))}: ${singleLine(String(issue.message))}`,
    )
    .join('\n');
}

class IssueList {
  readonly items: ContinuityIssue[] = [];
  error(code: ContinuityIssueCode, path: string, message: string): void {
    this.items.push({ code, severity: 'error', path, message });
  }
  warn(code: ContinuityIssueCode, path: string, message: string): void {
    this.items.push({ code, severity: 'warning', path, message });
  }
  get hasErrors(): boolean {
    return this.items.some((issue) => issue.severity === 'error');
  }
}

/** Quotes a value for a message, short enough that a hostile megabyte-long id cannot flood a prompt. */
function quote(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = '(unprintable value)';
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function quoteList(values: readonly string[]): string {
  const shown = values.slice(0, 5).map(quote).join(', ');
  return values.length > 5 ? `${shown} and ${values.length - 5} more` : shown;
}

function describeError(error: unknown): string {
  try {
    if (error instanceof Error) return clipText(`${error.name}: ${error.message}`, 300);
    return clipText(String(error), 300);
  } catch {
    return 'an error that cannot be described';
  }
}

type SchemaProblem = { path: ReadonlyArray<PropertyKey>; message: string };
type Parsed<T> = { ok: true; data: T } | { ok: false; problems: SchemaProblem[] };

/** `safeParse` that also survives what zod itself throws on (stack overflow on deep nesting, hostile proxies). */
function parseGuarded<S extends z.ZodType>(schema: S, input: unknown): Parsed<z.output<S>> {
  try {
    const result = schema.safeParse(input);
    if (result.success) return { ok: true, data: result.data };
    return { ok: false, problems: result.error.issues };
  } catch (error) {
    return { ok: false, problems: [{ path: [], message: `could not be validated: ${describeError(error)}` }] };
  }
}

function joinPath(prefix: string, path: ReadonlyArray<PropertyKey>): string {
  return [prefix, ...path.map((part) => String(part))].join('.');
}

function reportSchemaProblems(
  issues: IssueList,
  code: ContinuityIssueCode,
  prefix: string,
  problems: SchemaProblem[],
): void {
  for (const problem of problems.slice(0, MAX_SCHEMA_ISSUES)) {
    issues.error(code, joinPath(prefix, problem.path), problem.message);
  }
  if (problems.length > MAX_SCHEMA_ISSUES) {
    issues.error(code, prefix, `${problems.length - MAX_SCHEMA_ISSUES} more schema problems are not listed`);
  }
}

function reduce(input: StoryState, rawDelta: unknown, rawScene: unknown, issues: IssueList): DeltaResult {
  const fail = (): DeltaResult => ({ ok: false, state: input, issues: issues.items });

  const parsedState = parseGuarded(StoryStateSchema, input);
  if (!parsedState.ok) {
    reportSchemaProblems(issues, 'INVALID_STATE', 'state', parsedState.problems);
    return fail();
  }
  const state = parsedState.data;
  checkStateInvariants(state, issues);
  if (issues.hasErrors) return fail();

  const parsedScene = parseGuarded(SceneSchema, rawScene);
  const scene = parsedScene.ok ? parsedScene.data : undefined;
  // A replay is recognised before the delta is even read: a retried run gets one DELTA_ALREADY_APPLIED, whatever
  // else is wrong with the delta it brings back.
  if (scene !== undefined && reportReplay(state, scene, issues)) return fail();
  if (!parsedScene.ok) reportSchemaProblems(issues, 'INVALID_SCENE', 'scene', parsedScene.problems);
  const parsedDelta = parseGuarded(StateDeltaSchema, rawDelta);
  if (!parsedDelta.ok) reportSchemaProblems(issues, 'INVALID_DELTA', 'delta', parsedDelta.problems);
  else {
    reportUnsafeKeys(rawDelta, issues);
    reportUnknownFields(StateDeltaSchema, rawDelta, 'delta', issues);
  }

  const delta = parsedDelta.ok ? parsedDelta.data : undefined;
  if (scene !== undefined) checkSceneHeader(state, scene, issues);
  if (delta === undefined) return fail();

  const next = applyChanges(state, delta, scene, issues);
  if (scene === undefined || issues.hasErrors) return fail();

  const candidate: StoryState = {
    ...state,
    ...next,
    version: state.version + 1,
    sceneId: scene.id,
    sceneCount: state.sceneCount + 1,
    updatedAt: scene.createdAt,
  };
  // The safety net: whatever a check above missed, an invalid state never leaves the reducer. Its output is also
  // zod's fresh copy, so the caller's result shares no object with the input; world-state values, which the schema
  // checks without copying, were copied by applyWorldState.
  const validated = parseGuarded(StoryStateSchema, candidate);
  if (!validated.ok) {
    reportSchemaProblems(issues, 'INVALID_NEXT_STATE', 'nextState', validated.problems);
    return fail();
  }
  return { ok: true, state: validated.data, issues: issues.items };
}

function checkStateInvariants(state: StoryState, issues: IssueList): void {
  for (const [key, character] of Object.entries(state.characters)) {
    if (character.id !== key) {
      issues.error(
        'INVALID_STATE',
        `state.characters.${key}.id`,
        `Character stored under key ${quote(key)} has id ${quote(character.id)}; the key and the id must match`,
      );
    }
  }
  const seen = new Set<string>();
  state.plotThreads.forEach((thread, index) => {
    if (seen.has(thread.id)) {
      issues.error('INVALID_STATE', `state.plotThreads.${index}.id`, `Plot thread id ${quote(thread.id)} is repeated`);
    }
    seen.add(thread.id);
  });
}

/**
 * Zod drops a `__proto__` record key without a word; reporting it instead keeps the generator from believing a
 * change was stored. Only the record positions of the delta are walked, and only after the schema bounded them.
 */
function reportUnsafeKeys(rawDelta: unknown, issues: IssueList): void {
  const delta = rawDelta as Record<string, unknown>;
  // The schema has already accepted this value, which bounds its size (and so the depth of this recursion).
  const walk = (value: unknown, path: string): void => {
    if (typeof value !== 'object' || value === null) return;
    if (Array.isArray(value)) {
      value.forEach((item, index) => {
        walk(item, `${path}.${index}`);
      });
      return;
    }
    for (const key of Object.keys(value)) {
      const childPath = `${path}.${key}`;
      if (key === '__proto__') {
        issues.error('UNSAFE_KEY', childPath, 'The key "__proto__" is not allowed in a record; choose another name');
        continue;
      }
      walk((value as Record<string, unknown>)[key], childPath);
    }
  };
  const shallow = (value: unknown, path: string): void => {
    if (typeof value === 'object' && value !== null && Object.hasOwn(value, '__proto__')) {
      issues.error(
        'UNSAFE_KEY',
        `${path}.__proto__`,
        'The key "__proto__" is not allowed in a record; choose another name',
      );
    }
  };
  walk(delta.worldStateSet, 'delta.worldStateSet');
  const eachEntry = (list: unknown, path: string, fields: string[]): void => {
    if (!Array.isArray(list)) return;
    list.forEach((entry, index) => {
      if (typeof entry !== 'object' || entry === null) return;
      for (const field of fields) shallow((entry as Record<string, unknown>)[field], `${path}.${index}.${field}`);
    });
  };
  eachEntry(delta.charactersIntroduced, 'delta.charactersIntroduced', ['traits']);
  eachEntry(delta.characterUpdates, 'delta.characterUpdates', ['traits', 'traitChanges']);
}

/**
 * Reports a scene that was already applied (the last one, or an earlier index) as a single `DELTA_ALREADY_APPLIED`
 * and returns true. A scene of another story is never a replay: `checkSceneHeader` reports it.
 */
function reportReplay(state: StoryState, scene: Scene, issues: IssueList): boolean {
  if (scene.storyId !== state.storyId) return false;
  if (scene.id === state.sceneId) {
    issues.error(
      'DELTA_ALREADY_APPLIED',
      'scene.id',
      `Scene ${quote(scene.id)} is already the last applied scene of the story (version ${state.version})`,
    );
    return true;
  }
  if (scene.index < state.sceneCount) {
    issues.error(
      'DELTA_ALREADY_APPLIED',
      'scene.index',
      `Scene index ${scene.index} was already written: the story has ${state.sceneCount} scenes, so the next index is ${state.sceneCount}`,
    );
    return true;
  }
  return false;
}

/** Checks the header of a scene that is not a replay (`reportReplay` ran first) against the state. */
function checkSceneHeader(state: StoryState, scene: Scene, issues: IssueList): void {
  if (scene.storyId !== state.storyId) {
    issues.error(
      'SCENE_STORY_MISMATCH',
      'scene.storyId',
      `Scene belongs to story ${quote(scene.storyId)} but the state is story ${quote(state.storyId)}`,
    );
  }
  if (scene.index !== state.sceneCount) {
    issues.error(
      'SCENE_OUT_OF_ORDER',
      'scene.index',
      `Scene index must be ${state.sceneCount} (the story's scene count), got ${scene.index}`,
    );
  }
  if (scene.chapterId !== state.chapterId) {
    issues.error(
      'SCENE_CHAPTER_MISMATCH',
      'scene.chapterId',
      `Scene is in chapter ${quote(scene.chapterId)} but the story is in chapter ${quote(state.chapterId)}`,
    );
  }
  if (scene.stateVersion !== state.version + 1) {
    issues.error(
      'SCENE_VERSION_MISMATCH',
      'scene.stateVersion',
      `Scene must produce state version ${state.version + 1}, got ${scene.stateVersion}`,
    );
  }
}

/**
 * The `UNKNOWN_FIELD` warnings of a delta as a generator wrote it, for a caller that parses the delta itself before
 * `applyDelta` (parsing drops the fields, and with them the warnings): the engine reports them with the scene's
 * continuity warnings.
 *
 * @example
 * ```ts
 * import { unknownDeltaFields } from 'storyloom';
 * unknownDeltaFields({ threadResolved: [] }); // [{ code: 'UNKNOWN_FIELD', severity: 'warning', path: 'delta.threadResolved', ... }]
 * ```
 */
export function unknownDeltaFields(rawDelta: unknown): ContinuityIssue[] {
  const issues = new IssueList();
  reportUnknownFields(StateDeltaSchema, rawDelta, 'delta', issues);
  return issues.items;
}

/** Most `UNKNOWN_FIELD` warnings one delta gets: a generator that writes another format would otherwise get hundreds. */
const MAX_UNKNOWN_FIELD_WARNINGS = 20;

/**
 * Warns (`UNKNOWN_FIELD`) of every field of the delta, at any depth, that its schema does not know: zod drops them, so
 * a generator's typo (`threadResolved`) or a change the schema cannot express (a character update's `name`) would
 * otherwise come back ok while nothing changed. Records with free keys (`worldStateSet`, `traits`) are not walked.
 */
function reportUnknownFields(schema: z.ZodType, raw: unknown, path: string, issues: IssueList): void {
  let reported = 0;
  const walk = (node: z.ZodType, value: unknown, at: string): void => {
    if (reported >= MAX_UNKNOWN_FIELD_WARNINGS || typeof value !== 'object' || value === null) return;
    const def = node._zod.def as {
      type: string;
      innerType?: z.ZodType;
      element?: z.ZodType;
      shape?: z.ZodRawShape;
      in?: z.ZodType;
    };
    const inner = def.innerType ?? (def.type === 'pipe' ? def.in : undefined);
    if (inner) {
      walk(inner, value, at);
      return;
    }
    if (def.type === 'array' && def.element && Array.isArray(value)) {
      value.forEach((item, index) => {
        walk(def.element!, item, `${at}.${index}`);
      });
      return;
    }
    if (def.type !== 'object' || !def.shape || Array.isArray(value)) return;
    for (const key of Object.keys(value)) {
      const field = Object.hasOwn(def.shape, key) ? def.shape[key] : undefined;
      if (field) {
        walk(field as z.ZodType, (value as Record<string, unknown>)[key], `${at}.${key}`);
      } else if (key !== '__proto__' && reported++ < MAX_UNKNOWN_FIELD_WARNINGS) {
        issues.warn(
          'UNKNOWN_FIELD',
          `${at}.${key}`,
          `The field ${quote(key)} is not part of a state delta here and was ignored`,
        );
      }
    }
  };
  walk(schema, raw, path);
}

/** The parts of the next state the delta decides. */
type NextParts = Pick<
  StoryState,
  'characters' | 'worldState' | 'plotThreads' | 'userInfluenceQueue' | 'chapterId' | 'chapterIndex'
>;

interface Context {
  state: StoryState;
  sceneId: string;
  issues: IssueList;
  /** The characters as the delta has left them so far. */
  characters: Map<string, CharacterState>;
  /** Ids a relationship may point at: the story's characters and every one this delta introduces. */
  relationshipTargets: Set<string>;
}

function applyChanges(state: StoryState, delta: StateDelta, scene: Scene | undefined, issues: IssueList): NextParts {
  const context: Context = {
    state,
    sceneId: scene?.id ?? PLACEHOLDER_SCENE_ID,
    issues,
    characters: new Map(Object.entries(state.characters)),
    relationshipTargets: new Set([
      ...Object.keys(state.characters),
      ...delta.charactersIntroduced.map((intro) => intro.id),
    ]),
  };
  introduceCharacters(context, delta);
  updateCharacters(context, delta);
  if (scene !== undefined) markPresentCharacters(context, scene);
  const plotThreads = archiveResolvedThreads(context, delta, applyThreads(context, delta));
  const worldState = applyWorldState(context, delta);

  let chapterIndex = state.chapterIndex;
  let chapterId = state.chapterId;
  if (delta.chapterClosed !== null) {
    chapterIndex += 1;
    chapterId = chapterIdFor(chapterIndex);
    for (const thread of plotThreads) {
      if (thread.status !== 'resolved' && thread.importance >= MAJOR_THREAD_IMPORTANCE) {
        issues.warn(
          'CHAPTER_CLOSED_WITH_OPEN_THREADS',
          'delta.chapterClosed',
          `Chapter ${quote(state.chapterId)} closes with thread ${quote(thread.id)} (importance ${thread.importance}) still ${thread.status}`,
        );
      }
    }
  }

  const userInfluenceQueue = applyInfluences(context, delta, scene);

  if (context.characters.size > LIMITS.characters) {
    issues.error(
      'LIMIT_EXCEEDED',
      'delta.charactersIntroduced',
      `The story would have ${context.characters.size} characters; at most ${LIMITS.characters} are allowed`,
    );
  }
  if (plotThreads.length > LIMITS.plotThreads) {
    issues.error(
      'LIMIT_EXCEEDED',
      'delta.threadsOpened',
      `The story would have ${plotThreads.length} plot threads; at most ${LIMITS.plotThreads} are allowed, and too few of them are resolved to make room (resolved ones are archived as needed)`,
    );
  }

  return {
    characters: Object.fromEntries(context.characters),
    worldState,
    plotThreads,
    userInfluenceQueue,
    chapterId,
    chapterIndex,
  };
}

function isWithin(value: number, min: number, max: number): boolean {
  return Number.isFinite(value) && value >= min && value <= max;
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

/** The form two spellings of one text share: "café" composed (NFC) or decomposed (NFD) is one text. */
function textKey(text: string): string {
  return text.normalize('NFC');
}

/** `existing` and then the `added` items it does not hold yet, two spellings of one text (NFC, NFD) counting as one. */
function appendUnique(existing: readonly string[], added: readonly string[]): string[] {
  const result = [...existing];
  const seen = new Set(existing.map(textKey));
  for (const item of added) {
    const key = textKey(item);
    if (!seen.has(key)) {
      seen.add(key);
      result.push(item);
    }
  }
  return result;
}

/**
 * A map keyed by names a model writes (traits, world-state keys): two spellings of one name (NFC and NFD) are one
 * key, kept under the first spelling seen, so a state never holds two entries that look the same.
 */
class NameMap<V> {
  readonly entries = new Map<string, V>();
  private readonly spellings = new Map<string, string>();
  constructor(initial: Iterable<[string, V]> = []) {
    for (const [name, value] of initial) this.set(name, value);
  }
  get(name: string): V | undefined {
    const key = this.spellings.get(textKey(name));
    return key === undefined ? undefined : this.entries.get(key);
  }
  set(name: string, value: V): void {
    const normal = textKey(name);
    const key = this.spellings.get(normal) ?? name;
    this.spellings.set(normal, key);
    this.entries.set(key, value);
  }
  delete(name: string): void {
    const normal = textKey(name);
    const key = this.spellings.get(normal);
    if (key === undefined) return;
    this.spellings.delete(normal);
    this.entries.delete(key);
  }
  get size(): number {
    return this.entries.size;
  }
}

function introduceCharacters(context: Context, delta: StateDelta): void {
  const { issues } = context;
  delta.charactersIntroduced.forEach((intro, index) => {
    const path = `delta.charactersIntroduced.${index}`;
    if (context.characters.has(intro.id)) {
      const where = Object.hasOwn(context.state.characters, intro.id) ? 'in the story' : 'earlier in this delta';
      issues.error(
        'DUPLICATE_CHARACTER',
        `${path}.id`,
        `Character ${quote(intro.id)} already exists ${where}; introduce a new id or change it with characterUpdates`,
      );
      return;
    }
    const traits = new NameMap<number>();
    for (const [trait, value] of Object.entries(intro.traits)) {
      if (!isWithin(value, 0, 1)) {
        issues.error(
          'VALUE_OUT_OF_RANGE',
          `${path}.traits.${trait}`,
          `Trait ${quote(trait)} of character ${quote(intro.id)} must be within 0..1, got ${value}`,
        );
        continue;
      }
      traits.set(trait, value);
    }
    checkTraitCount(context, traits.entries, `${path}.traits`, intro.id);
    const character: CharacterState = {
      id: intro.id,
      name: intro.name,
      aliases: appendUnique([], intro.aliases),
      description: intro.description,
      role: intro.role,
      status: intro.status,
      traits: Object.fromEntries(traits.entries),
      relationships: applyRelationshipChanges(context, intro.id, {}, intro.relationships, path),
      arcProgress: 0,
      introducedIn: context.sceneId,
      lastAppearance: null,
      knowledge: appendUnique([], intro.knowledge),
      appearance: intro.appearance,
    };
    context.characters.set(intro.id, character);
  });
}

function checkTraitCount(context: Context, traits: Map<string, number>, path: string, characterId: string): void {
  if (traits.size > LIMITS.traits) {
    context.issues.error(
      'LIMIT_EXCEEDED',
      path,
      `Character ${quote(characterId)} would have ${traits.size} traits; at most ${LIMITS.traits} are allowed`,
    );
  }
}

function updateCharacters(context: Context, delta: StateDelta): void {
  const { issues } = context;
  delta.characterUpdates.forEach((update, index) => {
    const path = `delta.characterUpdates.${index}`;
    const current = context.characters.get(update.id);
    if (current === undefined) {
      issues.error(
        'UNKNOWN_CHARACTER',
        `${path}.id`,
        `Cannot update character ${quote(update.id)}: it is not in the story and this delta does not introduce it`,
      );
      return;
    }
    const next: CharacterState = { ...current };

    if (update.status !== undefined) {
      if (current.status === 'dead' && update.status !== 'dead') {
        issues.error(
          'DEAD_CHARACTER_ACTS',
          `${path}.status`,
          `Character ${quote(update.id)} is dead and cannot become ${quote(update.status)}: resurrection is not allowed`,
        );
      } else {
        next.status = update.status;
      }
    }
    if (update.description !== undefined) next.description = update.description;
    if (update.role !== undefined) next.role = update.role;
    if (update.appearance !== undefined) next.appearance = update.appearance;

    next.aliases = appendUnique(current.aliases, update.aliasesAdded);
    if (next.aliases.length > LIMITS.aliases) {
      issues.error(
        'LIMIT_EXCEEDED',
        `${path}.aliasesAdded`,
        `Character ${quote(update.id)} would have ${next.aliases.length} aliases; at most ${LIMITS.aliases} are allowed`,
      );
    }

    const traits = new NameMap(Object.entries(current.traits));
    for (const [trait, value] of Object.entries(update.traits)) {
      if (!isWithin(value, 0, 1)) {
        issues.error(
          'VALUE_OUT_OF_RANGE',
          `${path}.traits.${trait}`,
          `Trait ${quote(trait)} of character ${quote(update.id)} must be within 0..1, got ${value}`,
        );
        continue;
      }
      traits.set(trait, value);
    }
    for (const [trait, change] of Object.entries(update.traitChanges)) {
      const raw = (traits.get(trait) ?? NEUTRAL_TRAIT) + change;
      const clamped = clamp(raw, 0, 1);
      if (clamped !== raw) {
        issues.warn(
          'VALUE_CLAMPED',
          `${path}.traitChanges.${trait}`,
          `Trait ${quote(trait)} of character ${quote(update.id)} would become ${raw}; clamped to ${clamped}`,
        );
      }
      traits.set(trait, clamped);
    }
    checkTraitCount(context, traits.entries, `${path}.traits`, update.id);
    next.traits = Object.fromEntries(traits.entries);

    next.relationships = applyRelationshipChanges(
      context,
      update.id,
      current.relationships,
      update.relationships,
      path,
    );

    if (update.arcProgress !== undefined) {
      if (!isWithin(update.arcProgress, 0, 1)) {
        issues.error(
          'VALUE_OUT_OF_RANGE',
          `${path}.arcProgress`,
          `Arc progress of character ${quote(update.id)} must be within 0..1, got ${update.arcProgress}`,
        );
      } else {
        if (update.arcProgress < current.arcProgress) {
          issues.warn(
            'ARC_REGRESSION',
            `${path}.arcProgress`,
            `Arc progress of character ${quote(update.id)} goes back from ${current.arcProgress} to ${update.arcProgress}`,
          );
        }
        next.arcProgress = update.arcProgress;
      }
    }

    next.knowledge = appendUnique(current.knowledge, update.knowledgeAdded);
    if (next.knowledge.length > LIMITS.knowledge) {
      // A fact this scene states again counts as new: the oldest of the others go.
      const stated = new Set(update.knowledgeAdded);
      const kept = [
        ...current.knowledge.filter((fact) => !stated.has(fact)),
        ...appendUnique([], update.knowledgeAdded),
      ];
      const forgotten = kept.length - LIMITS.knowledge;
      next.knowledge = kept.slice(forgotten);
      issues.warn(
        'KNOWLEDGE_FORGOTTEN',
        `${path}.knowledgeAdded`,
        `Character ${quote(update.id)} knows at most ${LIMITS.knowledge} facts: the ${forgotten} oldest are dropped from the sheet`,
      );
    }
    context.characters.set(update.id, next);
  });
}

function applyRelationshipChanges(
  context: Context,
  ownerId: string,
  current: Record<string, Relationship>,
  changes: readonly RelationshipChange[],
  path: string,
): Record<string, Relationship> {
  const { issues } = context;
  const relationships = new Map(Object.entries(current));
  changes.forEach((change, index) => {
    const at = `${path}.relationships.${index}`;
    const target = change.targetId;
    if (target === ownerId && change.remove === true) {
      // The state schema accepts a relationship of a character with itself (refusing it would stop stored states
      // from loading), so a delta must be able to remove one; creating or changing one stays refused below.
      relationships.delete(target);
      return;
    }
    if (target === ownerId) {
      issues.error(
        'SELF_RELATIONSHIP',
        `${at}.targetId`,
        `Character ${quote(ownerId)} cannot have a relationship to itself`,
      );
      return;
    }
    if (!context.relationshipTargets.has(target) && !(change.remove === true && relationships.has(target))) {
      issues.error(
        'UNKNOWN_RELATIONSHIP_TARGET',
        `${at}.targetId`,
        `Character ${quote(ownerId)} cannot relate to ${quote(target)}: no such character in the story or this delta`,
      );
      return;
    }
    if (change.remove === true) {
      relationships.delete(target);
      return;
    }
    const previous = relationships.get(target);
    let affinity = previous?.affinity ?? 0;
    let trust = previous?.trust ?? 0.5;
    if (change.affinity !== undefined) {
      if (isWithin(change.affinity, -1, 1)) affinity = change.affinity;
      else {
        issues.error(
          'VALUE_OUT_OF_RANGE',
          `${at}.affinity`,
          `Affinity of ${quote(ownerId)} towards ${quote(target)} must be within -1..1, got ${change.affinity}`,
        );
      }
    }
    if (change.trust !== undefined) {
      if (isWithin(change.trust, 0, 1)) trust = change.trust;
      else {
        issues.error(
          'VALUE_OUT_OF_RANGE',
          `${at}.trust`,
          `Trust of ${quote(ownerId)} in ${quote(target)} must be within 0..1, got ${change.trust}`,
        );
      }
    }
    if (change.affinityChange !== undefined) {
      const raw = affinity + change.affinityChange;
      affinity = clamp(raw, -1, 1);
      if (affinity !== raw) {
        issues.warn(
          'VALUE_CLAMPED',
          `${at}.affinityChange`,
          `Affinity of ${quote(ownerId)} towards ${quote(target)} would become ${raw}; clamped to ${affinity}`,
        );
      }
    }
    const next: Relationship = {
      kind: change.kind ?? previous?.kind ?? 'acquaintance',
      affinity,
      trust,
      since: previous === undefined ? context.sceneId : previous.since,
    };
    const note = change.note ?? previous?.note;
    if (note !== undefined) next.note = note;
    relationships.set(target, next);
  });
  if (relationships.size > LIMITS.relationships) {
    issues.error(
      'LIMIT_EXCEEDED',
      `${path}.relationships`,
      `Character ${quote(ownerId)} would have ${relationships.size} relationships; at most ${LIMITS.relationships} are allowed`,
    );
  }
  return Object.fromEntries(relationships);
}

function markPresentCharacters(context: Context, scene: Scene): void {
  const { issues } = context;
  const seen = new Set<string>();
  scene.characters.forEach((id, index) => {
    if (seen.has(id)) return;
    seen.add(id);
    const path = `scene.characters.${index}`;
    const before = Object.hasOwn(context.state.characters, id) ? context.state.characters[id] : undefined;
    const current = context.characters.get(id);
    if (current === undefined) {
      issues.error(
        'UNKNOWN_CHARACTER',
        path,
        `Character ${quote(id)} is present in the scene but is not in the story; introduce it in charactersIntroduced`,
      );
      return;
    }
    if (before?.status === 'dead') {
      issues.error(
        'DEAD_CHARACTER_ACTS',
        path,
        `Character ${quote(id)} died before this scene and cannot be present in it`,
      );
      return;
    }
    context.characters.set(id, { ...current, lastAppearance: scene.id });
  });
}

function checkKnownCharacters(context: Context, ids: readonly string[], path: string, threadId: string): string[] {
  const known: string[] = [];
  ids.forEach((id, index) => {
    if (context.characters.has(id)) known.push(id);
    else {
      context.issues.error(
        'UNKNOWN_CHARACTER',
        `${path}.${index}`,
        `Thread ${quote(threadId)} names character ${quote(id)}, who is not in the story or introduced by this delta`,
      );
    }
  });
  return known;
}

function checkImportance(context: Context, value: number, path: string, threadId: string): boolean {
  if (isWithin(value, 0, 1)) return true;
  context.issues.error(
    'VALUE_OUT_OF_RANGE',
    path,
    `Importance of thread ${quote(threadId)} must be within 0..1, got ${value}`,
  );
  return false;
}

function checkThreadSizes(context: Context, thread: PlotThread, path: string): void {
  if (thread.characters.length > LIMITS.sceneTags) {
    context.issues.error(
      'LIMIT_EXCEEDED',
      `${path}.characters`,
      `Thread ${quote(thread.id)} would name ${thread.characters.length} characters; at most ${LIMITS.sceneTags} are allowed`,
    );
  }
  if (thread.setups.length > LIMITS.threadSetups) {
    context.issues.error(
      'LIMIT_EXCEEDED',
      `${path}.setups`,
      `Thread ${quote(thread.id)} would hold ${thread.setups.length} setups; at most ${LIMITS.threadSetups} are allowed`,
    );
  }
}

function applyThreads(context: Context, delta: StateDelta): PlotThread[] {
  const { issues, sceneId } = context;
  const threads = [...context.state.plotThreads];
  const positions = new Map(threads.map((thread, index) => [thread.id, index]));

  delta.threadsOpened.forEach((opening, index) => {
    const path = `delta.threadsOpened.${index}`;
    if (positions.has(opening.id)) {
      issues.error('DUPLICATE_THREAD', `${path}.id`, `Plot thread ${quote(opening.id)} already exists`);
      return;
    }
    // An out-of-range importance is reported, yet the thread is still opened so that later advances of it in this
    // delta are checked instead of drowning in UNKNOWN_THREAD noise; the result is an error either way.
    checkImportance(context, opening.importance, `${path}.importance`, opening.id);
    const thread: PlotThread = {
      id: opening.id,
      title: opening.title,
      summary: opening.summary,
      status: 'open',
      importance: clamp(opening.importance, 0, 1),
      characters: appendUnique([], checkKnownCharacters(context, opening.characters, `${path}.characters`, opening.id)),
      openedIn: sceneId,
      lastAdvancedIn: sceneId,
      resolvedIn: null,
      setups: appendUnique([], opening.setups),
    };
    positions.set(thread.id, threads.length);
    threads.push(thread);
  });

  const findOpen = (id: string, path: string, verb: string): number | undefined => {
    const position = positions.get(id);
    const thread = position === undefined ? undefined : threads[position];
    if (position === undefined || thread === undefined) {
      issues.error('UNKNOWN_THREAD', path, `Cannot ${verb} plot thread ${quote(id)}: no such thread`);
      return undefined;
    }
    if (thread.status === 'resolved') {
      issues.error(
        'THREAD_ALREADY_RESOLVED',
        path,
        `Cannot ${verb} plot thread ${quote(id)}: it was resolved in scene ${quote(thread.resolvedIn)}`,
      );
      return undefined;
    }
    return position;
  };

  delta.threadsAdvanced.forEach((advance, index) => {
    const path = `delta.threadsAdvanced.${index}`;
    const position = findOpen(advance.id, `${path}.id`, 'advance');
    if (position === undefined) return;
    const current = threads[position]!;
    const next: PlotThread = { ...current, status: advance.status ?? 'advancing', lastAdvancedIn: sceneId };
    if (advance.summary !== undefined) next.summary = advance.summary;
    if (
      advance.importance !== undefined &&
      checkImportance(context, advance.importance, `${path}.importance`, advance.id)
    ) {
      next.importance = advance.importance;
    }
    next.characters = appendUnique(
      current.characters,
      checkKnownCharacters(context, advance.charactersAdded, `${path}.charactersAdded`, advance.id),
    );
    const setups = appendUnique(current.setups, advance.setupsAdded);
    const held = new Set(setups.map(textKey));
    advance.setupsPaidOff.forEach((setup, setupIndex) => {
      if (!held.has(textKey(setup))) {
        issues.warn(
          'UNKNOWN_SETUP',
          `${path}.setupsPaidOff.${setupIndex}`,
          `Thread ${quote(advance.id)} has no setup ${quote(setup)} to pay off`,
        );
      }
    });
    const paidOff = new Set(advance.setupsPaidOff.map(textKey));
    next.setups = setups.filter((setup) => !paidOff.has(textKey(setup)));
    checkThreadSizes(context, next, path);
    threads[position] = next;
  });

  delta.threadsResolved.forEach((resolution, index) => {
    const path = `delta.threadsResolved.${index}`;
    const position = findOpen(resolution.id, `${path}.id`, 'resolve');
    if (position === undefined) return;
    const current = threads[position]!;
    let summary = current.summary;
    if (resolution.resolution !== '') {
      const appended =
        current.summary === '' ? resolution.resolution : `${current.summary}\n\nResolution: ${resolution.resolution}`;
      if (appended.length <= LIMITS.summary) summary = appended;
      else {
        summary = resolution.resolution;
        issues.warn(
          'SUMMARY_REPLACED',
          `${path}.resolution`,
          `Thread ${quote(resolution.id)}'s summary and resolution together exceed ${LIMITS.summary} characters; the resolution replaces the summary`,
        );
      }
    }
    if (current.setups.length > 0) {
      issues.warn(
        'SETUPS_UNPAID',
        `${path}.id`,
        `Thread ${quote(resolution.id)} is resolved with setups never paid off: ${quoteList(current.setups)}`,
      );
    }
    threads[position] = { ...current, status: 'resolved', resolvedIn: sceneId, lastAdvancedIn: sceneId, summary };
  });

  return threads;
}

/**
 * Makes room for the threads a delta opens by archiving resolved threads, earliest opened first, that the delta
 * itself does not touch. Returns the threads that stay; the count check after it reports what could not be made room.
 */
function archiveResolvedThreads(context: Context, delta: StateDelta, threads: PlotThread[]): PlotThread[] {
  const excess = threads.length - LIMITS.plotThreads;
  if (excess <= 0) return threads;
  const touched = new Set(
    [...delta.threadsOpened, ...delta.threadsAdvanced, ...delta.threadsResolved].map((thread) => thread.id),
  );
  const archived: string[] = [];
  for (const thread of threads) {
    if (archived.length === excess) break;
    if (thread.status === 'resolved' && !touched.has(thread.id)) archived.push(thread.id);
  }
  if (archived.length < excess) return threads;
  context.issues.warn(
    'THREADS_ARCHIVED',
    'delta.threadsOpened',
    `The story keeps at most ${LIMITS.plotThreads} plot threads: ${archived.length === 1 ? 'resolved thread' : `${archived.length} resolved threads,`} ${quoteList(archived)}${archived.length === 1 ? ' leaves' : ', leave'} the live state (the scenes still tell them)`,
  );
  const gone = new Set(archived);
  return threads.filter((thread) => !gone.has(thread.id));
}

/**
 * A copy of a world-state value that shares no object with it. The schemas check world values without copying them
 * (zod copies objects it knows the shape of, not these), so without this the next state would hold the delta's and
 * the previous state's own objects. The value was just checked to be bounded JSON: structuredClone copies it whole
 * (own `__proto__` keys and `-0` included), and a primitive needs no copy.
 */
function copyWorldValue(value: JsonValue): JsonValue {
  return typeof value === 'object' && value !== null ? structuredClone(value) : value;
}

function applyWorldState(context: Context, delta: StateDelta): Record<string, JsonValue> {
  // A Map holds any key, `__proto__` and `constructor` included, without prototype tricks; Object.fromEntries then
  // defines own properties rather than assigning, so no setter of Object.prototype can be reached.
  // Two spellings of one key (NFC, NFD) are one key, under the spelling the story had first.
  const world = new NameMap<JsonValue>();
  for (const [key, value] of Object.entries(context.state.worldState)) world.set(key, copyWorldValue(value));
  for (const [key, value] of Object.entries(delta.worldStateSet)) world.set(key, copyWorldValue(value));
  for (const key of delta.worldStateUnset) world.delete(key);
  if (world.size > LIMITS.worldStateKeys) {
    context.issues.error(
      'LIMIT_EXCEEDED',
      'delta.worldStateSet',
      `The world state would hold ${world.size} keys; at most ${LIMITS.worldStateKeys} are allowed: unset keys no longer needed (worldStateUnset)`,
    );
  }
  return Object.fromEntries(world.entries);
}

function applyInfluences(
  context: Context,
  delta: StateDelta,
  scene: Scene | undefined,
): StoryState['userInfluenceQueue'] {
  const { issues, state } = context;
  const statusById = new Map<string, string>();
  for (const influence of state.userInfluenceQueue) {
    if (!statusById.has(influence.id)) statusById.set(influence.id, influence.status);
  }
  const checkPending = (id: string, path: string, verb: string): boolean => {
    const status = statusById.get(id);
    if (status === 'pending') return true;
    issues.error(
      'INFLUENCE_NOT_PENDING',
      path,
      status === undefined
        ? `Cannot ${verb} influence ${quote(id)}: it is not in the story's pending influence queue`
        : `Cannot ${verb} influence ${quote(id)}: its status is ${quote(status)}, not "pending"`,
    );
    return false;
  };

  const applied = new Set<string>();
  delta.influencesApplied.forEach((id, index) => {
    const path = `delta.influencesApplied.${index}`;
    if (applied.has(id)) {
      issues.warn('DUPLICATE_INFLUENCE', path, `Influence ${quote(id)} is listed more than once`);
      return;
    }
    applied.add(id);
    checkPending(id, path, 'apply');
  });
  const rejected = new Set<string>();
  delta.influencesRejected.forEach(({ id }, index) => {
    const path = `delta.influencesRejected.${index}.id`;
    if (rejected.has(id)) {
      issues.warn('DUPLICATE_INFLUENCE', path, `Influence ${quote(id)} is listed more than once`);
      return;
    }
    rejected.add(id);
    if (applied.has(id)) {
      issues.error('INFLUENCE_CONFLICT', path, `Influence ${quote(id)} is both applied and rejected; choose one`);
      return;
    }
    checkPending(id, path, 'reject');
  });

  if (scene !== undefined) {
    const listedByScene = new Set(scene.influencesApplied);
    scene.influencesApplied.forEach((id, index) => {
      if (!applied.has(id)) {
        issues.error(
          'INFLUENCE_MISMATCH',
          `scene.influencesApplied.${index}`,
          `Scene lists influence ${quote(id)} as applied but the delta does not apply it`,
        );
      }
    });
    [...applied].forEach((id) => {
      if (!listedByScene.has(id)) {
        issues.error(
          'INFLUENCE_MISMATCH',
          `delta.influencesApplied.${delta.influencesApplied.indexOf(id)}`,
          `Delta applies influence ${quote(id)} but the scene's influencesApplied does not list it`,
        );
      }
    });
  }

  return state.userInfluenceQueue.filter((influence) => !applied.has(influence.id) && !rejected.has(influence.id));
}
