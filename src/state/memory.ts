/**
 * The in-memory `StoryStateStore`: the default for tests and short-lived processes. Data lives as long as the
 * process; every value is copied in and out so callers can never alias stored state.
 *
 * @module
 */
import { ConflictError, NotFoundError } from '../core/errors.js';
import {
  BaseStateStore,
  type BaseStateStoreOptions,
  misplacedScene,
  missingSnapshot,
  type PreparedCommit,
  type SceneQuery,
  type StoryBundle,
  staleVersion,
  unbundleSnapshot,
} from './base-store.js';
import type { Scene, StoryState, UserInfluence } from './schema.js';
import type {
  CommitResult,
  EnqueueResult,
  PublicationEntry,
  RecordPublicationResult,
  StoryStateStoreCapabilities,
} from './store.js';

interface StoredStory {
  state: StoryState;
  snapshots: Map<number, StoryState>;
  /** Scenes by index: a scene's index is its position. */
  scenes: Scene[];
  sceneIds: Map<string, number>;
  /** The scene indexes of each chapter, ascending: listing a chapter never scans the whole story. */
  chapters: Map<string, number[]>;
  influences: Map<string, UserInfluence>;
  /** The publication log by scene, then target. */
  publications: Map<string, Map<string, PublicationEntry>>;
}

const copy = <T>(value: T): T => structuredClone(value);

function chaptersOf(scenes: readonly Scene[]): Map<string, number[]> {
  const chapters = new Map<string, number[]>();
  for (const scene of [...scenes].sort((a, b) => a.index - b.index)) addToChapter(chapters, scene);
  return chapters;
}

/** Scenes are committed in index order, so appending keeps each chapter's list ascending. */
function addToChapter(chapters: Map<string, number[]>, scene: Scene): void {
  const indexes = chapters.get(scene.chapterId);
  if (indexes) indexes.push(scene.index);
  else chapters.set(scene.chapterId, [scene.index]);
}

class MemoryStateStore extends BaseStateStore {
  readonly provider = 'memory';
  readonly capabilities: StoryStateStoreCapabilities = { multiProcess: false, durable: false };
  private readonly stories = new Map<string, StoredStory>();

  protected async readState(storyId: string): Promise<StoryState | null> {
    const story = this.stories.get(storyId);
    return story ? copy(story.state) : null;
  }

  protected async insertStory(bundle: StoryBundle): Promise<void> {
    const storyId = bundle.state.storyId;
    if (this.stories.has(storyId)) throw new ConflictError(`Story "${storyId}" already exists`);
    const scenes = bundle.scenes.map(copy);
    this.stories.set(storyId, {
      state: copy(bundle.state),
      snapshots: new Map(bundle.snapshots.map((snapshot) => [snapshot.version, unbundleSnapshot(snapshot)])),
      scenes,
      sceneIds: new Map(scenes.map((scene) => [scene.id, scene.index])),
      chapters: chaptersOf(scenes),
      influences: new Map(bundle.influences.map((influence) => [influence.id, copy(influence)])),
      publications: groupPublications(bundle.publications),
    });
  }

  // No await between the checks and the writes: in one process this is atomic.
  protected async writeCommit(storyId: string, commit: PreparedCommit): Promise<CommitResult> {
    const story = this.required(storyId);
    const existing = story.sceneIds.get(commit.scene.id);
    if (existing !== undefined) {
      const scene = story.scenes[existing]!;
      const state = story.snapshots.get(scene.stateVersion);
      if (!state) throw missingSnapshot(storyId, scene);
      return { scene: copy(scene), state: copy(state), created: false };
    }
    if (story.state.version !== commit.expectedVersion) {
      throw staleVersion(storyId, commit.expectedVersion, story.state.version);
    }
    // Scenes are stored by index: any other index would overwrite a committed scene or leave a gap.
    if (commit.scene.index !== story.state.sceneCount) {
      throw misplacedScene(storyId, commit.scene.index, story.state.sceneCount);
    }
    for (const influence of commit.resolvedInfluences) {
      if (story.influences.get(influence.id)?.status !== 'pending') {
        throw new ConflictError(`Influence "${influence.id}" is no longer pending`);
      }
    }
    const scene = copy(commit.scene);
    const state = copy(commit.nextState);
    story.scenes[scene.index] = scene;
    story.sceneIds.set(scene.id, scene.index);
    addToChapter(story.chapters, scene);
    story.state = state;
    story.snapshots.set(state.version, copy(state));
    for (const influence of commit.resolvedInfluences) story.influences.set(influence.id, copy(influence));
    return { scene: copy(scene), state: copy(state), created: true };
  }

  protected async readScenes(storyId: string, query: SceneQuery): Promise<Scene[]> {
    const story = this.stories.get(storyId);
    if (!story) return [];
    // The positions to walk, ascending: the chapter's scenes, or every index.
    const positions = query.chapterId === undefined ? undefined : (story.chapters.get(query.chapterId) ?? []);
    const count = positions ? positions.length : story.scenes.length;
    const indexAt = (at: number) => (positions ? positions[at]! : at);
    // First position whose scene index is above `afterIndex` (asc) or at or above it (desc).
    const { afterIndex } = query;
    const boundary = (limit: number) => {
      let low = 0;
      let high = count;
      while (low < high) {
        const middle = (low + high) >>> 1;
        if (indexAt(middle) < limit) low = middle + 1;
        else high = middle;
      }
      return low;
    };
    const out: Scene[] = [];
    if (query.order === 'asc') {
      for (
        let at = afterIndex === undefined ? 0 : boundary(afterIndex + 1);
        at < count && out.length < query.limit;
        at++
      ) {
        const scene = story.scenes[indexAt(at)];
        if (scene) out.push(copy(scene));
      }
    } else {
      for (
        let at = (afterIndex === undefined ? count : boundary(afterIndex)) - 1;
        at >= 0 && out.length < query.limit;
        at--
      ) {
        const scene = story.scenes[indexAt(at)];
        if (scene) out.push(copy(scene));
      }
    }
    return out;
  }

  protected async readScene(storyId: string, sceneId: string): Promise<Scene | null> {
    const story = this.stories.get(storyId);
    const index = story?.sceneIds.get(sceneId);
    return story && index !== undefined ? copy(story.scenes[index]!) : null;
  }

  protected async readSnapshot(storyId: string, version: number): Promise<StoryState | null> {
    const snapshot = this.stories.get(storyId)?.snapshots.get(version);
    return snapshot ? copy(snapshot) : null;
  }

  protected async insertInfluence(influence: UserInfluence): Promise<EnqueueResult> {
    const story = this.known(influence.storyId);
    const existing = story.influences.get(influence.id);
    if (existing) return { inserted: false, influence: copy(existing) };
    story.influences.set(influence.id, copy(influence));
    return { inserted: true, influence: copy(influence) };
  }

  protected async readPendingInfluences(storyId: string, limit: number): Promise<UserInfluence[]> {
    const story = this.stories.get(storyId);
    if (!story) return [];
    return [...story.influences.values()]
      .filter((influence) => influence.status === 'pending')
      .sort(compareInfluences)
      .slice(0, limit)
      .map(copy);
  }

  protected async readInfluence(storyId: string, influenceId: string): Promise<UserInfluence | null> {
    const influence = this.stories.get(storyId)?.influences.get(influenceId);
    return influence ? copy(influence) : null;
  }

  protected async readAllInfluences(storyId: string): Promise<UserInfluence[]> {
    return [...(this.stories.get(storyId)?.influences.values() ?? [])].sort(compareInfluences).map(copy);
  }

  protected async writePublication(entry: PublicationEntry): Promise<RecordPublicationResult> {
    const story = this.known(entry.storyId);
    let byTarget = story.publications.get(entry.sceneId);
    if (!byTarget) {
      byTarget = new Map();
      story.publications.set(entry.sceneId, byTarget);
    }
    const existing = byTarget.get(entry.target);
    if (existing && existing.status !== 'failed') return { recorded: false, entry: copy(existing) };
    byTarget.set(entry.target, copy(entry));
    return { recorded: true, entry: copy(entry) };
  }

  protected async readPublications(storyId: string, sceneId: string): Promise<PublicationEntry[]> {
    return [...(this.stories.get(storyId)?.publications.get(sceneId)?.values() ?? [])]
      .sort((a, b) => compareText(a.target, b.target))
      .map(copy);
  }

  protected async readAllPublications(storyId: string): Promise<PublicationEntry[]> {
    const byScene = this.stories.get(storyId)?.publications ?? new Map<string, Map<string, PublicationEntry>>();
    return [...byScene.keys()]
      .sort(compareText)
      .flatMap((sceneId) => [...byScene.get(sceneId)!.values()].sort((a, b) => compareText(a.target, b.target)))
      .map(copy);
  }

  async close(): Promise<void> {}

  /** The story an influence or a publication is written to: an unknown id is the caller's mistake. */
  private known(storyId: string): StoredStory {
    const story = this.stories.get(storyId);
    if (!story) throw new NotFoundError(`Story "${storyId}" does not exist`);
    return story;
  }

  private required(storyId: string): StoredStory {
    const story = this.stories.get(storyId);
    if (!story) throw new ConflictError(`Story "${storyId}" does not exist (deleted while in use?)`);
    return story;
  }
}

function groupPublications(entries: readonly PublicationEntry[]): Map<string, Map<string, PublicationEntry>> {
  const grouped = new Map<string, Map<string, PublicationEntry>>();
  for (const entry of entries) {
    const byTarget = grouped.get(entry.sceneId) ?? new Map<string, PublicationEntry>();
    byTarget.set(entry.target, copy(entry));
    grouped.set(entry.sceneId, byTarget);
  }
  return grouped;
}

/** Code-unit order, as SQLite's BINARY collation and DynamoDB's sort keys order the ASCII ids and targets. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Orders influences by arrival, then id, the same on every backend. */
export function compareInfluences(a: UserInfluence, b: UserInfluence): number {
  return compareText(a.receivedAt, b.receivedAt) || compareText(a.id, b.id);
}

/** Options of `createMemoryStateStore`. */
export type MemoryStateStoreOptions = BaseStateStoreOptions;

/**
 * A `StoryStateStore` held in process memory.
 *
 * @example
 * ```ts
 * import { createMemoryStateStore } from 'storyloom';
 * const store = createMemoryStateStore();
 * ```
 */
export function createMemoryStateStore(options: MemoryStateStoreOptions = {}): BaseStateStore {
  return new MemoryStateStore(options);
}
