/**
 * The `StoryStateStore` port: where a story's state, scenes, influences and publication log live.
 *
 * @module
 */
import type { Scene, StoryState, UserInfluence, UserInfluenceInput } from './schema.js';

/** What a store can and cannot do; conformance suites skip, with this as the reason, what a backend lacks. */
export interface StoryStateStoreCapabilities {
  /** Version-conditional commits hold across processes sharing the backend (not only within one process). */
  multiProcess: boolean;
  /** State survives a restart of the process. */
  durable: boolean;
  /**
   * Most influences one `commitScene` may resolve (a transaction limit, as DynamoDB's 100 actions). Absent means no
   * limit beyond `LIMITS.influencesPerScene`; the engine takes at most this many pending influences per scene.
   */
  maxInfluencesPerCommit?: number;
}

/** The arguments of `commitScene`. */
export interface CommitSceneInput {
  /** The version the caller read; the commit fails with `ConflictError` if the stored version differs. */
  expectedVersion: number;
  /** The story's next scene: its `index` must be the `sceneCount` of the state at `expectedVersion`. */
  scene: Scene;
  /**
   * The state after the scene; its `version` must be `expectedVersion + 1`, its `sceneId` the scene's id and its
   * `sceneCount` the scene's `index + 1`.
   */
  nextState: StoryState;
  /** Pending influences the scene applied; they become `applied`. */
  consumedInfluenceIds: string[];
  /**
   * Pending influences the scene turned down, each with its reason; they become `rejected`. A reason longer than 500
   * characters is cut between two characters.
   */
  rejectedInfluences?: Array<{ id: string; reason: string }>;
}

/** The outcome of `commitScene`. */
export interface CommitResult {
  scene: Scene;
  state: StoryState;
  /** False when this scene id was already committed and the original commit is returned instead. */
  created: boolean;
}

/** Paging of `listScenes`. */
export interface ListScenesOptions {
  /** Only scenes of this chapter. */
  chapterId?: string;
  /** `asc` (oldest first, the default) or `desc`. */
  order?: 'asc' | 'desc';
  /** Page size, 1..1000. Default 100. */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
}

/** One page of results. `nextCursor` is absent on the last page. */
export interface Page<T> {
  items: T[];
  nextCursor?: string;
}

/** The outcome of a publication step for one scene and target. */
export const PUBLICATION_STATUSES = ['done', 'failed', 'skipped'] as const;
export type PublicationStatus = (typeof PUBLICATION_STATUSES)[number];

/** One line of the publication log (the outbox): what happened to a scene's step for one target. */
export interface PublicationEntry {
  storyId: string;
  sceneId: string;
  /** The step or publisher, e.g. `index`, `cache`, `image`, `publish:s3`, `broadcast`. */
  target: string;
  status: PublicationStatus;
  /** What the step produced: urls, post ids, keys. Kept small (under 16 KB as JSON). */
  result: Record<string, unknown>;
  recordedAt: string;
}

/** The outcome of `recordPublication`: the first write for a scene and target wins. */
export interface RecordPublicationResult {
  recorded: boolean;
  entry: PublicationEntry;
}

/** The outcome of `enqueueInfluence`. */
export interface EnqueueResult {
  /** False when an influence with this id was already stored (for this story): nothing was changed. */
  inserted: boolean;
  influence: UserInfluence;
}

/** The outcome of `importStory`. */
export interface ImportResult {
  storyId: string;
  scenes: number;
  influences: number;
  publications: number;
}

/**
 * Persistence of stories. Every method is safe to call concurrently; `commitScene` is the one place where a story
 * moves forward, atomically and at most once per version.
 *
 * @example
 * ```ts
 * import { createMemoryStateStore, createStoryFromTemplate } from 'storyloom';
 * const store = createMemoryStateStore();
 * await store.create(createStoryFromTemplate('lighthouse-keepers', 'my-story'));
 * const state = await store.load('my-story');
 * ```
 */
export interface StoryStateStore {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  readonly capabilities: StoryStateStoreCapabilities;

  /**
   * Stores a new story at its initial state: version 0, no scene (`sceneCount` 0, `sceneId` null), else
   * `ValidationError`. `ConflictError` if the story exists.
   */
  create(state: StoryState): Promise<StoryState>;

  /** The current state with `userInfluenceQueue` filled with its pending influences. `NotFoundError` if absent. */
  load(storyId: string): Promise<StoryState>;

  /** Whether the story exists. */
  exists(storyId: string): Promise<boolean>;

  /**
   * Writes a scene, the next state and the influence outcomes in one atomic, version-conditional step.
   * A stale `expectedVersion` gives `ConflictError`; committing an already committed scene id returns the original
   * commit with `created: false` and writes nothing. A scene that is not the story's next one (its index already
   * taken, or past a gap) or a `nextState` that does not follow from it is a `ValidationError` and writes nothing:
   * scenes stay numbered 0, 1, 2, ... so the story always exports and imports. So is an influence id that is not an
   * id, or a rejection without a reason string.
   */
  commitScene(storyId: string, input: CommitSceneInput): Promise<CommitResult>;

  /** A page of scenes, by chapter if asked, oldest or newest first. */
  listScenes(storyId: string, options?: ListScenesOptions): Promise<Page<Scene>>;

  /** A scene by id, or null. */
  getScene(storyId: string, sceneId: string): Promise<Scene | null>;

  /** The state as it stood right after `version` was committed (version 0 is the initial state), or null. */
  getStateAt(storyId: string, version: number): Promise<StoryState | null>;

  /**
   * Stores an influence as pending unless one with its id exists; idempotent by id. `NotFoundError` for no story.
   * `receivedAt` is kept in UTC; a time that leaves years 0000-9999 once in UTC is a `ValidationError`.
   */
  enqueueInfluence(influence: UserInfluenceInput): Promise<EnqueueResult>;

  /** Pending influences, oldest first (by `receivedAt`, then id). */
  pendingInfluences(storyId: string, options?: { limit?: number }): Promise<UserInfluence[]>;

  /** An influence by id in any status, or null. */
  getInfluence(storyId: string, influenceId: string): Promise<UserInfluence | null>;

  /**
   * Records the outcome of a step for a scene and target. The first `done` or `skipped` write wins; a `failed` entry
   * may be replaced. `NotFoundError` for no story. `ValidationError` unless the target is 1-128 characters of letters,
   * digits and `._:/-`, the result is still a JSON object once through `JSON.stringify` (a `toJSON` may make it
   * something else) and under 16 KB as JSON, and `recordedAt`, when given, is an ISO 8601 time.
   */
  recordPublication(
    entry: Omit<PublicationEntry, 'recordedAt'> & { recordedAt?: string },
  ): Promise<RecordPublicationResult>;

  /** Every log entry of a scene. */
  listPublications(storyId: string, sceneId: string): Promise<PublicationEntry[]>;

  /** The targets among `targets` that have no `done` or `skipped` entry for the scene, in the given order. */
  unfinishedPublications(storyId: string, sceneId: string, targets: readonly string[]): Promise<string[]>;

  /**
   * A new story `newStoryId` that shares history up to and including scene `atSceneIndex` and then goes its own way.
   * Pending influences and the publication log stay with the original.
   */
  fork(storyId: string, atSceneIndex: number, newStoryId: string): Promise<StoryState>;

  /**
   * The whole story as JSON lines, portable between backends: the same story exports the same lines on every
   * backend (the publication log by scene id, then target). The lines hold the story as it stood when the export
   * began, whatever is committed while they are read: no scene, snapshot or log entry of a later commit, and an
   * influence a later scene resolved as still pending.
   */
  exportStory(storyId: string): AsyncIterable<string>;

  /**
   * Loads an exported story. `ConflictError` if it exists here; `ValidationError` names the first bad line (a
   * repeated scene id or index, influence id, log entry or snapshot version is one, and so are versions no store
   * could have written: a state or snapshot whose version is not its scene count or that does not name the scene
   * that made it, a scene whose `stateVersion` is not its index plus one, a snapshot newer than the state). So is an
   * influence whose outcome the scenes contradict (applied or rejected in no scene of the story, pending in one,
   * rejected without a reason) and a log entry `recordPublication` would refuse. Influence times are kept in UTC, as
   * `enqueueInfluence` keeps them. A refused export writes nothing.
   */
  importStory(lines: AsyncIterable<string> | Iterable<string>): Promise<ImportResult>;

  /** Releases connections and file handles. */
  close(): Promise<void>;
}
