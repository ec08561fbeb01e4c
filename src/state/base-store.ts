/**
 * The logic every `StoryStateStore` shares, written once over a handful of backend primitives, in the manner of
 * Powertools' idempotency persistence layers: the base class validates, orders and exports; a backend only stores.
 *
 * @module
 */

import { isDeepStrictEqual } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { type Clock, isoNow, systemClock } from '../core/clock.js';
import { ConflictError, NotFoundError, toProblems, ValidationError } from '../core/errors.js';
import { clipText } from '../core/text.js';
import {
  IdSchema,
  IsoTimeSchema,
  LIMITS,
  type Scene,
  SceneSchema,
  type StoryState,
  StoryStateSchema,
  type UserInfluence,
  type UserInfluenceInput,
  UserInfluenceSchema,
} from './schema.js';
import type {
  CommitResult,
  CommitSceneInput,
  EnqueueResult,
  ImportResult,
  ListScenesOptions,
  Page,
  PublicationEntry,
  PublicationStatus,
  RecordPublicationResult,
  StoryStateStore,
  StoryStateStoreCapabilities,
} from './store.js';
import { PUBLICATION_STATUSES } from './store.js';
import { inUtc, timeProblems } from './times.js';

/**
 * A state snapshot as a `StoryBundle` carries it: gzip-compressed JSON, so a long story's history is never held
 * parsed in memory at once (each snapshot is the whole state; parsed, the 1,000 of a 1,000-episode story took about
 * 700 MB to import). `bundleSnapshot` makes one, `unbundleSnapshot` reads it.
 */
export interface BundledSnapshot {
  readonly version: number;
  /** The state as gzip-compressed JSON (what the SQLite and DynamoDB stores keep). */
  readonly gzip: Uint8Array;
}

/**
 * A state as a `StoryBundle` carries it.
 *
 * @example
 * ```ts
 * import { bundleSnapshot, unbundleSnapshot } from 'storyloom';
 * const snapshot = bundleSnapshot(state);
 * unbundleSnapshot(snapshot).version === state.version; // true
 * ```
 */
export function bundleSnapshot(state: StoryState): BundledSnapshot {
  // Copied: zlib hands back a view of its 16 KB output buffer, which a small snapshot would keep whole.
  return { version: state.version, gzip: Buffer.from(gzipSync(JSON.stringify(state))) };
}

/**
 * The state a `BundledSnapshot` holds (what a custom store's `insertStory` writes, when it keeps states parsed).
 *
 * @example
 * ```ts
 * import { unbundleSnapshot, type StoryBundle } from 'storyloom';
 * const states = (bundle: StoryBundle) => bundle.snapshots.map(unbundleSnapshot);
 * ```
 */
export function unbundleSnapshot(snapshot: BundledSnapshot): StoryState {
  return JSON.parse(gunzipSync(snapshot.gzip).toString('utf8')) as StoryState;
}

/** Everything a story is made of, as written by `create`, `fork` and `importStory`. */
export interface StoryBundle {
  state: StoryState;
  /** State snapshots by version, the current one included. */
  snapshots: BundledSnapshot[];
  scenes: Scene[];
  influences: UserInfluence[];
  publications: PublicationEntry[];
}

/** A commit after validation, ready for the backend's one atomic write. */
export interface PreparedCommit {
  expectedVersion: number;
  scene: Scene;
  /** The next state with an empty influence queue (influences are stored on their own). */
  nextState: StoryState;
  /** Influences to flip from pending to applied or rejected, with their final form. */
  resolvedInfluences: UserInfluence[];
}

/** Normalised paging arguments for `readScenes`. */
export interface SceneQuery {
  chapterId?: string;
  order: 'asc' | 'desc';
  limit: number;
  /** Exclusive bound on scene index: after it in `asc`, before it in `desc`. */
  afterIndex?: number;
}

/** The first line of an export: what format follows. */
export const EXPORT_FORMAT = 'storyloom-export';
/** Bump when the export format changes incompatibly; importers refuse newer versions. */
export const EXPORT_FORMAT_VERSION = 1;

/** The outcome of an influence no scene has resolved yet: a new one, or one resolved past an export's cut. */
const UNRESOLVED = { status: 'pending', reason: null, resolvedIn: null } as const;

const MAX_PAGE = 1_000;
const MAX_PUBLICATION_RESULT_CHARS = 16_000;
/** A publication target: ASCII, so every backend orders the log the same (code units and UTF-8 bytes agree). */
const PUBLICATION_TARGET = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

/** Options common to every store. */
export interface BaseStateStoreOptions {
  /** Source of `recordedAt` timestamps. Default: the system clock. */
  clock?: Clock;
}

/**
 * Base class of storyloom's state stores. Subclasses implement the protected primitives; each must be atomic on its
 * own (`writeCommit` and `insertStory` above all), and the base class does everything else.
 */
export abstract class BaseStateStore implements StoryStateStore {
  readonly specificationVersion = 'v1' as const;
  abstract readonly provider: string;
  abstract readonly capabilities: StoryStateStoreCapabilities;
  protected readonly clock: Clock;

  constructor(options: BaseStateStoreOptions = {}) {
    this.clock = options.clock ?? systemClock;
  }

  /** The stored state without its influence queue, or null. */
  protected abstract readState(storyId: string): Promise<StoryState | null>;
  /** Writes a whole new story atomically; `ConflictError` if it exists. */
  protected abstract insertStory(bundle: StoryBundle): Promise<void>;
  /**
   * The one atomic, version-conditional write. Must, in one step: return the original commit if `scene.id` exists
   * (`created: false`; `missingSnapshot` when the state it made is not stored); else throw `ConflictError` if the
   * stored version is not `expectedVersion`; else throw `ValidationError` (`misplacedScene`) if `scene.index` is not
   * the stored `sceneCount` (so scenes stay numbered 0, 1, 2, ... without a gap or an overwrite); else `ConflictError`
   * if any influence to resolve is no longer pending; else store scene, state, snapshot and influence outcomes.
   */
  protected abstract writeCommit(storyId: string, commit: PreparedCommit): Promise<CommitResult>;
  protected abstract readScenes(storyId: string, query: SceneQuery): Promise<Scene[]>;
  protected abstract readScene(storyId: string, sceneId: string): Promise<Scene | null>;
  protected abstract readSnapshot(storyId: string, version: number): Promise<StoryState | null>;
  /**
   * Inserts the influence unless its id exists; returns the stored one and whether it was inserted. In the same
   * atomic step, `NotFoundError` if the story does not exist (an import still running counts as not existing).
   */
  protected abstract insertInfluence(influence: UserInfluence): Promise<EnqueueResult>;
  /** Pending influences ordered by `receivedAt`, then id. */
  protected abstract readPendingInfluences(storyId: string, limit: number): Promise<UserInfluence[]>;
  protected abstract readInfluence(storyId: string, influenceId: string): Promise<UserInfluence | null>;
  /** Every influence of a story in any status (for export). */
  protected abstract readAllInfluences(storyId: string): Promise<UserInfluence[]>;
  /**
   * Writes the entry unless a `done`/`skipped` one exists for the scene and target (a `failed` one is replaced); in
   * the same atomic step, `NotFoundError` if the story does not exist.
   */
  protected abstract writePublication(entry: PublicationEntry): Promise<RecordPublicationResult>;
  protected abstract readPublications(storyId: string, sceneId: string): Promise<PublicationEntry[]>;
  /**
   * Every publication entry of a story (for export), ordered by scene id, then target (code-unit order): the log's
   * key, so every backend exports the same lines whatever order the entries were written in.
   */
  protected abstract readAllPublications(storyId: string): Promise<PublicationEntry[]>;
  abstract close(): Promise<void>;

  async create(state: StoryState): Promise<StoryState> {
    const parsed = parseOrThrow(StoryStateSchema, state, 'state');
    // A story starts with no scene: a state that claims some would make the first commit leave a gap in the scene
    // numbering, and the story's export would no longer import.
    const problems: Array<{ path: string; message: string }> = [];
    if (parsed.version !== 0) problems.push({ path: 'state.version', message: 'must be 0 for a new story' });
    if (parsed.sceneCount !== 0) problems.push({ path: 'state.sceneCount', message: 'must be 0 for a new story' });
    if (parsed.sceneId !== null) problems.push({ path: 'state.sceneId', message: 'must be null for a new story' });
    problems.push(...timeProblems(parsed, 'state'));
    if (problems.length > 0) {
      throw new ValidationError(`Invalid state: ${problems.map((p) => `${p.path} ${p.message}`).join('; ')}`, {
        problems,
      });
    }
    const stored = { ...parsed, userInfluenceQueue: [] };
    await this.insertStory({
      state: stored,
      snapshots: [bundleSnapshot(stored)],
      scenes: [],
      influences: [],
      publications: [],
    });
    return stored;
  }

  async load(storyId: string): Promise<StoryState> {
    const state = await this.readState(checkId(storyId, 'storyId'));
    if (!state) throw new NotFoundError(`Story "${storyId}" does not exist`);
    const queue = await this.readPendingInfluences(storyId, 1_000);
    return { ...state, userInfluenceQueue: queue };
  }

  async exists(storyId: string): Promise<boolean> {
    return (await this.readState(checkId(storyId, 'storyId'))) !== null;
  }

  async commitScene(storyId: string, input: CommitSceneInput): Promise<CommitResult> {
    checkId(storyId, 'storyId');
    const scene = parseOrThrow(SceneSchema, input.scene, 'scene');
    const nextState = parseOrThrow(StoryStateSchema, input.nextState, 'nextState');
    const problems: Array<{ path: string; message: string }> = [];
    if (!Number.isSafeInteger(input.expectedVersion) || input.expectedVersion < 0) {
      problems.push({ path: 'expectedVersion', message: 'must be a non-negative integer' });
    }
    if (scene.storyId !== storyId) problems.push({ path: 'scene.storyId', message: `must be "${storyId}"` });
    if (nextState.storyId !== storyId) problems.push({ path: 'nextState.storyId', message: `must be "${storyId}"` });
    if (nextState.version !== input.expectedVersion + 1) {
      problems.push({
        path: 'nextState.version',
        message: `must be expectedVersion + 1 (${input.expectedVersion + 1})`,
      });
    }
    if (scene.stateVersion !== nextState.version) {
      problems.push({ path: 'scene.stateVersion', message: 'must equal nextState.version' });
    }
    if (nextState.sceneId !== scene.id) problems.push({ path: 'nextState.sceneId', message: 'must be the scene id' });
    if (nextState.sceneCount !== scene.index + 1) {
      problems.push({
        path: 'nextState.sceneCount',
        message: `must count the scene (scene.index + 1 = ${scene.index + 1})`,
      });
    }
    // The times this commit writes: the state's createdAt is carried over (a story stored with one out of range
    // before such times were refused must still take scenes).
    problems.push(...timeProblems(scene, 'scene'), ...timeProblems(nextState, 'nextState', ['updatedAt']));
    const { consumed, rejected } = checkOutcomes(input, problems);
    const outcomeIds = [...consumed, ...rejected.map((r) => r.id)];
    if (new Set(outcomeIds).size !== outcomeIds.length) {
      problems.push({ path: 'consumedInfluenceIds', message: 'an influence may be resolved once per commit' });
    }
    if (problems.length > 0) {
      throw new ValidationError(`Invalid commit for story "${storyId}": ${problems[0]!.path} ${problems[0]!.message}`, {
        problems,
      });
    }
    const resolvedInfluences: UserInfluence[] = [];
    for (const id of consumed) {
      const influence = await this.readInfluence(storyId, id);
      if (!influence) throw new ValidationError(`Influence "${id}" does not exist in story "${storyId}"`);
      resolvedInfluences.push({ ...influence, status: 'applied', resolvedIn: scene.id, reason: null });
    }
    for (const { id, reason } of rejected) {
      const influence = await this.readInfluence(storyId, id);
      if (!influence) throw new ValidationError(`Influence "${id}" does not exist in story "${storyId}"`);
      // Cut between characters: a lone half of a surrogate pair would not survive a backend's UTF-8 round trip.
      resolvedInfluences.push({
        ...influence,
        status: 'rejected',
        resolvedIn: scene.id,
        reason: clipText(reason, LIMITS.shortText),
      });
    }
    return this.writeCommit(storyId, {
      expectedVersion: input.expectedVersion,
      scene,
      nextState: { ...nextState, userInfluenceQueue: [] },
      resolvedInfluences,
    });
  }

  async listScenes(storyId: string, options: ListScenesOptions = {}): Promise<Page<Scene>> {
    checkId(storyId, 'storyId');
    const limit = options.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
      throw new ValidationError(`limit must be an integer from 1 to ${MAX_PAGE}`);
    }
    const order = options.order ?? 'asc';
    if (order !== 'asc' && order !== 'desc') throw new ValidationError('order must be "asc" or "desc"');
    const afterIndex = options.cursor === undefined ? undefined : decodeCursor(options.cursor);
    const query: SceneQuery = { order, limit: limit + 1 };
    if (options.chapterId !== undefined) query.chapterId = checkId(options.chapterId, 'chapterId');
    if (afterIndex !== undefined) query.afterIndex = afterIndex;
    const rows = await this.readScenes(storyId, query);
    const items = rows.slice(0, limit);
    const page: Page<Scene> = { items };
    if (rows.length > limit) page.nextCursor = encodeCursor(items.at(-1)!.index);
    return page;
  }

  async getScene(storyId: string, sceneId: string): Promise<Scene | null> {
    return this.readScene(checkId(storyId, 'storyId'), checkId(sceneId, 'sceneId'));
  }

  async getStateAt(storyId: string, version: number): Promise<StoryState | null> {
    if (!Number.isSafeInteger(version) || version < 0)
      throw new ValidationError('version must be a non-negative integer');
    return this.readSnapshot(checkId(storyId, 'storyId'), version);
  }

  async enqueueInfluence(influence: UserInfluenceInput): Promise<EnqueueResult> {
    const parsed = parseOrThrow(UserInfluenceSchema, influence, 'influence');
    // Whatever status the caller sent, a new influence starts pending: only a commit resolves it.
    const receivedAt = inUtc(parsed.receivedAt);
    if (receivedAt === undefined) {
      throw new ValidationError(
        `Invalid influence: receivedAt ${parsed.receivedAt} is outside years 0000-9999 in UTC`,
        {
          problems: [{ path: 'influence.receivedAt', message: 'must fall within years 0000-9999 in UTC' }],
        },
      );
    }
    return this.insertInfluence({ ...parsed, receivedAt, ...UNRESOLVED });
  }

  async pendingInfluences(storyId: string, options: { limit?: number } = {}): Promise<UserInfluence[]> {
    const limit = options.limit ?? 1_000;
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
      throw new ValidationError('limit must be an integer from 1 to 10000');
    }
    return this.readPendingInfluences(checkId(storyId, 'storyId'), limit);
  }

  async getInfluence(storyId: string, influenceId: string): Promise<UserInfluence | null> {
    return this.readInfluence(checkId(storyId, 'storyId'), checkId(influenceId, 'influenceId'));
  }

  async recordPublication(
    entry: Omit<PublicationEntry, 'recordedAt'> & { recordedAt?: string },
  ): Promise<RecordPublicationResult> {
    return this.writePublication(toPublicationEntry({ ...entry, recordedAt: entry.recordedAt ?? isoNow(this.clock) }));
  }

  async listPublications(storyId: string, sceneId: string): Promise<PublicationEntry[]> {
    return this.readPublications(checkId(storyId, 'storyId'), checkId(sceneId, 'sceneId'));
  }

  async unfinishedPublications(storyId: string, sceneId: string, targets: readonly string[]): Promise<string[]> {
    const finished = new Set(
      (await this.listPublications(storyId, sceneId))
        .filter((entry) => entry.status === 'done' || entry.status === 'skipped')
        .map((entry) => entry.target),
    );
    return targets.filter((target) => !finished.has(target));
  }

  async fork(storyId: string, atSceneIndex: number, newStoryId: string): Promise<StoryState> {
    checkId(storyId, 'storyId');
    checkId(newStoryId, 'newStoryId');
    if (!Number.isSafeInteger(atSceneIndex) || atSceneIndex < 0) {
      throw new ValidationError('atSceneIndex must be a non-negative integer');
    }
    const current = await this.readState(storyId);
    if (!current) throw new NotFoundError(`Story "${storyId}" does not exist`);
    if (atSceneIndex >= current.sceneCount) {
      throw new ValidationError(
        `Story "${storyId}" has ${current.sceneCount} scenes; cannot fork at index ${atSceneIndex}`,
      );
    }
    const scenes: Scene[] = [];
    for await (const scene of this.allScenes(storyId)) {
      if (scene.index > atSceneIndex) break;
      scenes.push({ ...scene, storyId: newStoryId });
    }
    const last = scenes.at(-1);
    if (!last || last.index !== atSceneIndex)
      throw new NotFoundError(`Scene ${atSceneIndex} of "${storyId}" is missing`);
    const snapshots: BundledSnapshot[] = [];
    let state: StoryState | undefined;
    for (let version = 0; version <= last.stateVersion; version++) {
      const snapshot = await this.readSnapshot(storyId, version);
      if (!snapshot) continue;
      state = { ...snapshot, storyId: newStoryId, userInfluenceQueue: [] };
      snapshots.push(bundleSnapshot(state));
    }
    if (!state || state.version !== last.stateVersion) {
      throw new NotFoundError(`The state after scene ${atSceneIndex} of "${storyId}" is missing`);
    }
    await this.insertStory({ state, snapshots, scenes, influences: [], publications: [] });
    return state;
  }

  /**
   * The story as it stood at the state read first, whatever is committed while the lines stream (the command line
   * exports from a file a running engine may be committing to): no snapshot past that state's version, no scene past
   * its scene count, no log entry of a later scene, and an influence a later scene resolved as still pending. Without
   * this cut the file would hold more scenes than its state counts, and no store would import it.
   */
  async *exportStory(storyId: string): AsyncIterable<string> {
    checkId(storyId, 'storyId');
    const state = await this.readState(storyId);
    if (!state) throw new NotFoundError(`Story "${storyId}" does not exist`);
    const counts = { snapshots: 0, scenes: 0, influences: 0, publications: 0 };
    yield JSON.stringify({ kind: EXPORT_FORMAT, formatVersion: EXPORT_FORMAT_VERSION, storyId });
    yield JSON.stringify({ kind: 'state', state });
    for (let version = 0; version <= state.version; version++) {
      const snapshot = await this.readSnapshot(storyId, version);
      if (!snapshot) continue;
      counts.snapshots++;
      yield JSON.stringify({ kind: 'snapshot', state: snapshot });
    }
    const exportedScenes = new Set<string>();
    for await (const scene of this.allScenes(storyId)) {
      if (scene.index >= state.sceneCount) break;
      exportedScenes.add(scene.id);
      counts.scenes++;
      yield JSON.stringify({ kind: 'scene', scene });
    }
    // Every scene up to the cut is exported, so a stored scene that is not was committed past it. An id no scene has
    // (a log entry may name one) is not past the cut: it is exported as it stands.
    const pastCut = new Map<string, boolean>();
    const isPastCut = async (sceneId: string | null): Promise<boolean> => {
      if (sceneId === null || exportedScenes.has(sceneId)) return false;
      let past = pastCut.get(sceneId);
      if (past === undefined) {
        past = (await this.readScene(storyId, sceneId)) !== null;
        pastCut.set(sceneId, past);
      }
      return past;
    };
    for (const stored of await this.readAllInfluences(storyId)) {
      const influence: UserInfluence = (await isPastCut(stored.resolvedIn)) ? { ...stored, ...UNRESOLVED } : stored;
      counts.influences++;
      yield JSON.stringify({ kind: 'influence', influence });
    }
    for (const entry of await this.readAllPublications(storyId)) {
      if (await isPastCut(entry.sceneId)) continue;
      counts.publications++;
      yield JSON.stringify({ kind: 'publication', entry });
    }
    yield JSON.stringify({ kind: 'end', counts });
  }

  async importStory(lines: AsyncIterable<string> | Iterable<string>): Promise<ImportResult> {
    const bundle = await parseExport(lines);
    const problems = [
      ...timeProblems(bundle.state, 'state'),
      ...bundle.scenes.flatMap((scene) => timeProblems(scene, `scene ${scene.index}`)),
    ];
    if (problems.length > 0) {
      throw new ValidationError(`Invalid import: ${problems[0]!.path} ${problems[0]!.message}`, { problems });
    }
    await this.insertStory(bundle);
    return {
      storyId: bundle.state.storyId,
      scenes: bundle.scenes.length,
      influences: bundle.influences.length,
      publications: bundle.publications.length,
    };
  }

  private async *allScenes(storyId: string): AsyncIterable<Scene> {
    let cursor: string | undefined;
    do {
      const page = await this.listScenes(
        storyId,
        cursor === undefined ? { limit: MAX_PAGE } : { limit: MAX_PAGE, cursor },
      );
      yield* page.items;
      cursor = page.nextCursor;
    } while (cursor !== undefined);
  }
}

/**
 * Parses and checks a whole export before anything is written, so a bad file writes nothing. Each key a story holds
 * once (a snapshot's version, a scene's id and index, an influence's id, a log entry's scene and target) must appear
 * once: a repeated one would overwrite the first on one backend and break the write on another. The versions must
 * be those of a story the stores wrote (see `checkVersions`), each influence's outcome must agree with the scenes
 * (see `checkInfluenceOutcomes`), and each record is held to what the method that writes it accepts: an influence's
 * time is moved to UTC as `enqueueInfluence` moves it, a log entry is checked and rebuilt as `recordPublication`
 * does.
 */
async function parseExport(lines: AsyncIterable<string> | Iterable<string>): Promise<StoryBundle> {
  let lineNumber = 0;
  let storyId: string | undefined;
  let state: StoryState | undefined;
  let stateLine = 0;
  let ended = false;
  let newest: { snapshot: StoryState; line: number } | undefined;
  /** The scene each snapshot names, by version: all that is kept of the snapshots but the newest. */
  const snapshotScenes = new Map<number, string | null>();
  const bundle: Omit<StoryBundle, 'state'> = { snapshots: [], scenes: [], influences: [], publications: [] };
  const fail = (message: string, cause?: unknown): never => {
    throw new ValidationError(`Import line ${lineNumber}: ${message}`, {
      cause,
      problems: [{ path: `line ${lineNumber}`, message }],
    });
  };
  /** The line where each key was first seen, by kind of key. */
  const seen = {
    snapshot: new Map<number, number>(),
    sceneId: new Map<string, number>(),
    sceneIndex: new Map<number, number>(),
    influence: new Map<string, number>(),
    publication: new Map<string, number>(),
  };
  const once = <K>(firstLines: Map<K, number>, key: K, what: string) => {
    const first = firstLines.get(key);
    if (first !== undefined) fail(`${what} is already on line ${first}`);
    firstLines.set(key, lineNumber);
  };
  for await (const raw of lines) {
    lineNumber++;
    const text = raw.trim();
    if (text === '') continue;
    if (ended) fail('data after the end marker');
    let record: { kind?: unknown; [key: string]: unknown };
    try {
      record = JSON.parse(text);
    } catch (cause) {
      return fail('not valid JSON', cause);
    }
    if (typeof record !== 'object' || record === null) fail('expected a JSON object');
    if (storyId === undefined) {
      if (record.kind !== EXPORT_FORMAT) fail(`expected a "${EXPORT_FORMAT}" header`);
      if (record.formatVersion !== EXPORT_FORMAT_VERSION) {
        fail(
          `format version ${String(record.formatVersion)} is not supported (this version reads ${EXPORT_FORMAT_VERSION})`,
        );
      }
      storyId = checkId(record.storyId, 'storyId');
      continue;
    }
    const sameStory = (found: string) => {
      if (found !== storyId) fail(`belongs to story "${found}", not "${storyId}"`);
    };
    switch (record.kind) {
      case 'state': {
        if (state) fail(`a second state record (the first is on line ${stateLine})`);
        state = parseLine(StoryStateSchema, record.state, fail);
        sameStory(state.storyId);
        stateLine = lineNumber;
        break;
      }
      case 'snapshot': {
        const snapshot = parseLine(StoryStateSchema, record.state, fail);
        sameStory(snapshot.storyId);
        // As the state's and the scenes' (checked by importStory): a time past year 9999 in UTC is refused.
        const [badTime] = timeProblems(snapshot, 'snapshot');
        if (badTime) fail(`${badTime.path}: ${badTime.message}`);
        once(seen.snapshot, snapshot.version, `the snapshot of version ${snapshot.version}`);
        if (snapshot.sceneCount !== snapshot.version) {
          fail(
            `the snapshot of version ${snapshot.version} counts ${snapshot.sceneCount} scenes (one version per scene)`,
          );
        }
        snapshotScenes.set(snapshot.version, snapshot.sceneId);
        bundle.snapshots.push(bundleSnapshot(snapshot));
        // Only the newest is kept parsed: it must be the state itself (checked once the state is known).
        if (!newest || snapshot.version > newest.snapshot.version) newest = { snapshot, line: lineNumber };
        break;
      }
      case 'scene': {
        const scene = parseLine(SceneSchema, record.scene, fail);
        sameStory(scene.storyId);
        once(seen.sceneId, scene.id, `scene id "${scene.id}"`);
        once(seen.sceneIndex, scene.index, `scene index ${scene.index}`);
        bundle.scenes.push(scene);
        break;
      }
      case 'influence': {
        const influence = parseLine(UserInfluenceSchema, record.influence, fail);
        sameStory(influence.storyId);
        once(seen.influence, influence.id, `influence "${influence.id}"`);
        const receivedAt = inUtc(influence.receivedAt);
        if (receivedAt === undefined) fail(`receivedAt ${influence.receivedAt} is outside years 0000-9999 in UTC`);
        if (influence.status === 'pending' && influence.resolvedIn !== null) {
          fail(`influence "${influence.id}" is pending but resolved in scene "${influence.resolvedIn}"`);
        }
        if (influence.status !== 'pending' && influence.resolvedIn === null) {
          fail(`influence "${influence.id}" is ${influence.status} but names no scene that resolved it`);
        }
        if (influence.status === 'rejected' && influence.reason === null) {
          fail(`influence "${influence.id}" is rejected but gives no reason`);
        }
        bundle.influences.push({ ...influence, receivedAt: receivedAt! });
        break;
      }
      case 'publication': {
        const entry = parsePublication(record.entry, fail);
        sameStory(entry.storyId);
        once(
          seen.publication,
          JSON.stringify([entry.sceneId, entry.target]),
          `the publication of scene "${entry.sceneId}" to "${entry.target}"`,
        );
        bundle.publications.push(entry);
        break;
      }
      case 'end': {
        const counts = record.counts as Record<string, unknown> | undefined;
        const expected = {
          snapshots: bundle.snapshots.length,
          scenes: bundle.scenes.length,
          influences: bundle.influences.length,
          publications: bundle.publications.length,
        };
        for (const [key, value] of Object.entries(expected)) {
          if (counts?.[key] !== value)
            fail(`the end marker counts ${String(counts?.[key])} ${key}, the file has ${value}`);
        }
        ended = true;
        break;
      }
      default:
        fail(`unknown record kind ${JSON.stringify(record.kind)}`);
    }
  }
  if (storyId === undefined) throw new ValidationError('Import is empty: expected a storyloom export');
  if (!state) throw new ValidationError('Import has no "state" record');
  if (!ended) throw new ValidationError('Import is truncated: the end marker is missing');
  const scenes = bundle.scenes.sort((a, b) => a.index - b.index);
  scenes.forEach((scene, index) => {
    if (scene.index !== index) throw new ValidationError(`Import is missing scene ${index}`);
  });
  if (scenes.length !== state.sceneCount) {
    throw new ValidationError(`Import has ${scenes.length} scenes but the state counts ${state.sceneCount}`);
  }
  checkVersions(state, stateLine, scenes, { ...seen, snapshotScenes });
  bundle.influences = pendingPastTheCut(bundle.influences, scenes);
  // The snapshot of the state's version is the state: were they to differ, a store that answers `getStateAt`, a
  // replayed commit or a fork from the snapshot would tell another story than `load`. The queue is left out (the
  // export writes the state's empty; each influence is its own record).
  if (
    newest?.snapshot.version === state.version &&
    !isDeepStrictEqual({ ...newest.snapshot, userInfluenceQueue: [] }, { ...state, userInfluenceQueue: [] })
  ) {
    throw new ValidationError(
      `Import line ${newest.line}: the snapshot of version ${state.version} differs from the state on line ${stateLine}`,
      { problems: [{ path: `line ${newest.line}`, message: `differs from the state of the same version` }] },
    );
  }
  return { state: { ...state, userInfluenceQueue: [] }, ...bundle, scenes };
}

/**
 * Refuses an export whose versions no store could have written. A story starts at version 0 with no scene (`create`)
 * and each commit adds one scene and one version, and a fork or an import keeps this; so the state's version is its
 * scene count, scene `i` made version `i + 1`, no snapshot is past the state, and each state (the current one and
 * every snapshot) names the scene that made it, none at version 0. A snapshot that told another count or scene would
 * pass to a fork taken there, whose next commit would land past a gap on one backend and be refused for ever on
 * another. Export and fork read the snapshots by version number, from 0 up to the state's (or a scene's) version: an
 * import that broke this (a version of 3 million and no scene) made every export take seconds, or never end near
 * 2^53. With it, that walk is as long as the scenes the export holds. A snapshot may be missing (an export skips one
 * a story lacks), so none is required.
 */
function checkVersions(
  state: StoryState,
  stateLine: number,
  scenes: readonly Scene[],
  lines: {
    snapshot: ReadonlyMap<number, number>;
    sceneIndex: ReadonlyMap<number, number>;
    /** The scene each snapshot names, by version. */
    snapshotScenes: ReadonlyMap<number, string | null>;
  },
): void {
  const refuse = (line: number, message: string): never => {
    throw new ValidationError(`Import line ${line}: ${message}`, { problems: [{ path: `line ${line}`, message }] });
  };
  if (state.version !== state.sceneCount) {
    refuse(
      stateLine,
      `the state is at version ${state.version} but counts ${state.sceneCount} scenes (one version per scene)`,
    );
  }
  const lastScene = scenes.at(-1)?.id ?? null;
  if (state.sceneId !== lastScene) {
    refuse(
      stateLine,
      `the state names scene ${JSON.stringify(state.sceneId)}, not its last, ${JSON.stringify(lastScene)}`,
    );
  }
  for (const scene of scenes) {
    if (scene.stateVersion !== scene.index + 1) {
      refuse(
        lines.sceneIndex.get(scene.index)!,
        `scene ${scene.index} made state version ${scene.stateVersion}, not ${scene.index + 1}`,
      );
    }
  }
  for (const [version, line] of lines.snapshot) {
    if (version > state.version) {
      refuse(line, `the snapshot of version ${version} is past the state's version ${state.version}`);
    }
    // The state's version is its scene count, so every scene up to this version is here.
    const maker = version === 0 ? null : scenes[version - 1]!.id;
    const named = lines.snapshotScenes.get(version) ?? null;
    if (named !== maker) {
      refuse(
        line,
        `the snapshot of version ${version} names scene ${JSON.stringify(named)}, not ${JSON.stringify(maker)}, the one that made it`,
      );
    }
  }
}

/**
 * Influences resolved by a scene the file does not hold, as still pending. Each line was checked on its own (a
 * pending influence names no scene, an applied or rejected one names the scene that resolved it, a rejected one gives
 * its reason). An export cuts the story at the state it read first, and writes an influence a later scene resolved as
 * pending; an export of an earlier storyloom could hold one resolved by a scene committed as it streamed, past its
 * cut. Either way the scene is not in the story, so the influence waits for one that is, as it did at the cut.
 */
function pendingPastTheCut(influences: readonly UserInfluence[], scenes: readonly Scene[]): UserInfluence[] {
  const sceneIds = new Set(scenes.map((scene) => scene.id));
  return influences.map((influence) =>
    influence.resolvedIn !== null && !sceneIds.has(influence.resolvedIn) ? { ...influence, ...UNRESOLVED } : influence,
  );
}

function parseLine<T>(
  schema: { safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: unknown[] } } },
  value: unknown,
  fail: (message: string) => never,
): T {
  const result = schema.safeParse(value);
  if (!result.success) {
    const problems = toProblems(result.error.issues as Parameters<typeof toProblems>[0]);
    return fail(problems.map((p) => `${p.path}: ${p.message}`).join('; '));
  }
  return result.data;
}

/**
 * A log entry of an export, held to what `recordPublication` accepts. Earlier storyloom versions stored two things
 * it now refuses, and their exports must still import: a time in another form than ISO 8601 with an offset (read by
 * `Date`, in UTC when it names no zone) and a result that is JSON but not an object (kept as `{ value }`).
 */
function parsePublication(value: unknown, fail: (message: string, cause?: unknown) => never): PublicationEntry {
  if (typeof value !== 'object' || value === null) return fail('invalid publication entry: expected an object');
  const entry: { [K in keyof PublicationEntry]?: unknown } = { ...value };
  const { recordedAt, result } = entry;
  if (typeof recordedAt === 'string' && !IsoTimeSchema.safeParse(recordedAt).success) {
    // Without an offset, `Date` would read it in the machine's zone: it is taken in UTC, the same everywhere.
    const withOffset = /(?:[zZ]|[+-]\d\d:?\d\d)$/.test(recordedAt) ? recordedAt : `${recordedAt}Z`;
    // Another form is read only when it names its zone: read in the machine's, it would differ from one to another.
    const time = Number.isFinite(Date.parse(withOffset))
      ? Date.parse(withOffset)
      : /\b(?:GMT|UTC)\b|[+-]\d\d:?\d\d\b/i.test(recordedAt)
        ? Date.parse(recordedAt)
        : Number.NaN;
    const utc = Number.isFinite(time) ? inUtc(new Date(time).toISOString()) : undefined;
    if (utc !== undefined) entry.recordedAt = utc;
  }
  if (result !== undefined && result !== null && (typeof result !== 'object' || Array.isArray(result))) {
    entry.result = { value: result };
  }
  try {
    return toPublicationEntry(entry);
  } catch (error) {
    if (!ValidationError.isInstance(error)) throw error;
    return fail(`invalid publication entry: ${error.message}`, error);
  }
}

/**
 * A log entry as every store keeps it, checked and rebuilt from its known fields (whatever else the input carried
 * is left out): what `recordPublication` writes and `importStory` reads alike, so an entry one takes the other
 * takes too. The result is kept as its JSON round trip gives it, and must still be an object after it (a `toJSON`
 * may turn it into a string); the time must be an ISO 8601 time, as the schemas' are.
 */
function toPublicationEntry(entry: { [K in keyof PublicationEntry]?: unknown }): PublicationEntry {
  const storyId = checkId(entry.storyId, 'storyId');
  const sceneId = checkId(entry.sceneId, 'sceneId');
  const { target, status, recordedAt } = entry;
  if (typeof target !== 'string' || !PUBLICATION_TARGET.test(target)) {
    throw new ValidationError('target must be 1-128 characters of letters, digits and "._:/-"');
  }
  if (!PUBLICATION_STATUSES.includes(status as PublicationStatus)) {
    throw new ValidationError(`status must be one of ${PUBLICATION_STATUSES.join(', ')}`);
  }
  let serialized: string | undefined;
  try {
    serialized = JSON.stringify(entry.result ?? {});
  } catch (cause) {
    throw new ValidationError('result must be JSON-serializable', { cause });
  }
  if (serialized !== undefined && serialized.length > MAX_PUBLICATION_RESULT_CHARS) {
    throw new ValidationError(`result must serialize to at most ${MAX_PUBLICATION_RESULT_CHARS} characters`);
  }
  const result: unknown = serialized === undefined ? undefined : JSON.parse(serialized);
  if (typeof result !== 'object' || result === null || Array.isArray(result)) {
    throw new ValidationError('result must be a JSON object');
  }
  if (!IsoTimeSchema.safeParse(recordedAt).success) {
    throw new ValidationError('recordedAt must be an ISO 8601 time');
  }
  return {
    storyId,
    sceneId,
    target,
    status: status as PublicationStatus,
    result: result as Record<string, unknown>,
    recordedAt: recordedAt as string,
  };
}

/**
 * The influence outcomes of a commit, each checked before any is read: an id must be an id and a reason a string,
 * or the backend's lookup or the reason's cut would fail with an untyped error. Adds what is wrong to `problems`, and
 * returns the outcomes only when nothing is (the commit goes no further otherwise).
 */
function checkOutcomes(
  input: CommitSceneInput,
  problems: Array<{ path: string; message: string }>,
): { consumed: string[]; rejected: Array<{ id: string; reason: string }> } {
  const before = problems.length;
  const consumed: unknown = input.consumedInfluenceIds ?? [];
  const rejected: unknown = input.rejectedInfluences ?? [];
  if (!Array.isArray(consumed)) problems.push({ path: 'consumedInfluenceIds', message: 'must be an array of ids' });
  else {
    consumed.forEach((id, index) => {
      if (!IdSchema.safeParse(id).success) {
        problems.push({ path: `consumedInfluenceIds.${index}`, message: 'must be an influence id' });
      }
    });
  }
  if (!Array.isArray(rejected)) problems.push({ path: 'rejectedInfluences', message: 'must be an array' });
  else {
    rejected.forEach((outcome: unknown, index) => {
      const fields: Partial<Record<string, unknown>> = typeof outcome === 'object' && outcome !== null ? outcome : {};
      const { id, reason } = fields;
      if (!IdSchema.safeParse(id).success) {
        problems.push({ path: `rejectedInfluences.${index}.id`, message: 'must be an influence id' });
      }
      if (typeof reason !== 'string') {
        problems.push({ path: `rejectedInfluences.${index}.reason`, message: 'must be a string' });
      }
    });
  }
  if (problems.length > before) return { consumed: [], rejected: [] };
  return { consumed: consumed as string[], rejected: rejected as Array<{ id: string; reason: string }> };
}

/** Validates with a zod schema, throwing a `ValidationError` that lists every problem under `label`. */
export function parseOrThrow<T>(
  schema: { safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: unknown[] } } },
  value: unknown,
  label: string,
): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problems = toProblems(result.error.issues as Parameters<typeof toProblems>[0], label);
  throw new ValidationError(`Invalid ${label}: ${problems.map((p) => `${p.path} ${p.message}`).join('; ')}`, {
    problems,
  });
}

/** Checks an identifier and returns it. */
export function checkId(value: unknown, label: string): string {
  const result = IdSchema.safeParse(value);
  if (!result.success) {
    throw new ValidationError(`${label} must be 1-128 characters of letters, digits and "._:-"`, {
      problems: [{ path: label, message: result.error.issues[0]?.message ?? 'invalid id' }],
    });
  }
  return result.data;
}

function encodeCursor(index: number): string {
  return `i${index}`;
}

function decodeCursor(cursor: string): number {
  const match = /^i(\d{1,16})$/.exec(cursor);
  if (!match) throw new ValidationError('cursor is not one returned by listScenes');
  return Number(match[1]);
}

/**
 * The `ValidationError` of a commit whose scene is not the story's next one: its index must be the `sceneCount` of
 * the state it follows, so scenes stay numbered 0, 1, 2, ... with no gap (the story would no longer export and
 * import) and no overwrite of a committed scene. Retrying cannot help, hence not a `ConflictError`.
 */
export function misplacedScene(storyId: string, index: number, sceneCount?: number): ValidationError {
  const expected = sceneCount === undefined ? "the story's scene count" : String(sceneCount);
  return new ValidationError(`Story "${storyId}" has its next scene at index ${expected}, not ${index}`, {
    problems: [{ path: 'scene.index', message: `must be ${expected}, the index of the story's next scene` }],
  });
}

/**
 * The `NotFoundError` of a commit replayed (its scene id is stored) whose original result cannot be returned: the
 * state its scene made is not stored (a story imported from an export that lacked that snapshot), as `fork` says of
 * the same gap.
 */
export function missingSnapshot(storyId: string, scene: Scene): NotFoundError {
  return new NotFoundError(
    `The state after scene ${scene.index} of "${storyId}" (version ${scene.stateVersion}) is missing, so the commit of scene "${scene.id}" cannot be returned again`,
  );
}

/** Throws the `ConflictError` of a stale commit. */
export function staleVersion(storyId: string, expected: number, actual: number): ConflictError {
  return new ConflictError(`Story "${storyId}" is at version ${actual}, not ${expected}`, {
    expectedVersion: expected,
    actualVersion: actual,
  });
}
