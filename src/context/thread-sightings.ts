/**
 * Which plot threads a point of view knows at a chapter start, and as it last saw them: a thread's record names the
 * scene that last changed it, and the states before and after that scene tell the version before, back to a scene the
 * point of view witnessed (`lastSighting`). Used by `ContextManager` to keep a point of view's prompt to what it saw.
 * Internal: not exported from the package.
 *
 * @module
 */
import { isDeepStrictEqual } from 'node:util';
import type { PlotThread, Scene, StoryState } from '../state/schema.js';
import type { StoryStateStore } from '../state/store.js';
import { type KnownThread, type OmittedItem, sceneWitnessedBy } from './prompt-layout.js';
import { eachScene } from './scene-listing.js';

/**
 * The most scenes looked at per plot thread to find the last one a point of view saw change it: a thread changed
 * more often than that since it last saw it is left out of its prompt rather than read back further.
 */
const THREAD_SIGHTING_STEPS = 20;

/** The plot threads a point of view knows at a chapter start, and those it does not, as left out of its prompt. */
export interface ThreadSightings {
  known: Map<string, KnownThread>;
  omitted: OmittedItem[];
  /** Each thread's sighting, by id (`lastSighting`). */
  byThread: Map<string, KnownThread | 'unseen' | 'untraced'>;
}

/** The reads of a story's history that the threads of one chapter start share (see `knownThreads`). */
export interface StoryHistory {
  /** The state as it stood right after `version`, or null when not stored. */
  stateAt(version: number): Promise<StoryState | null>;
  scene(id: string): Promise<Scene | null>;
  /** The scene of index `index` (below the chapter start), or null past the scenes listed. */
  sceneAt(index: number): Promise<Scene | null>;
  /** The state the story began with. */
  beginning(): Promise<StoryState | null>;
}

/**
 * A reader of the scenes below index `below` by index, listed newest first as far as they are asked for and at most
 * `reach` of them. The threads of a chapter start ask for them concurrently: one listing serves them all, in turn.
 */
export function scenesByIndex(
  store: StoryStateStore,
  storyId: string,
  below: number,
  reach: number,
): (index: number) => Promise<Scene | null> {
  const byIndex = new Map<number, Scene>();
  let lowest = below;
  let listing: AsyncGenerator<Scene> | undefined;
  let exhausted = false;
  let turn: Promise<unknown> = Promise.resolve();
  return (index) => {
    const read = turn.then(async () => {
      listing ??= eachScene(store, storyId, { order: 'desc', limit: 200 });
      while (!exhausted && lowest > index && below - lowest < reach) {
        const next = await listing.next();
        if (next.done) {
          exhausted = true;
          break;
        }
        if (next.value.index >= below) continue;
        byIndex.set(next.value.index, next.value);
        lowest = Math.min(lowest, next.value.index);
      }
      return byIndex.get(index) ?? null;
    });
    turn = read.catch(() => undefined);
    return read;
  };
}

/**
 * The thread as `pov` last saw it, by the rule of `KnownThread`: `'unseen'` when it never saw a scene open, advance or
 * resolve it, `'untraced'` when the stored history (states missing, or more than `THREAD_SIGHTING_STEPS` scenes to
 * look at) does not tell. Both leave the thread out: leaving out never tells the point of view too much. Versions of a
 * thread are compared with `isDeepStrictEqual`, whatever order a store gave their keys in.
 */
export async function lastSighting(
  thread: PlotThread,
  pov: string,
  chapterStartScenes: number,
  history: StoryHistory,
  base?: {
    sceneCount: number;
    state: StoryState;
    sightings: ReadonlyMap<string, KnownThread | 'unseen' | 'untraced'>;
  },
): Promise<KnownThread | 'unseen' | 'untraced'> {
  // The thread as the base (an earlier state, walked already) holds it: where the walk, not yet past the base, finds
  // the thread just as the base holds it, the rest of the walk is the base's (a scene that changed the thread in
  // between would have left its id in the record; a state written otherwise at worst shows the older sighting).
  const atBase = base && threadOf(base.state, thread.id);
  const baseSighting = atBase && base.sightings.get(thread.id);
  /** The thread as the story began, known only to a character in its cast then. */
  const fromBeginning = (first: PlotThread | undefined): KnownThread | 'unseen' =>
    first?.characters.includes(pov) ? { thread: first, lastWitnessedScene: null } : 'unseen';
  // The version of the thread being traced, as it stood just before the scene of index `below`.
  let current = thread;
  let below = chapterStartScenes;
  let steps = THREAD_SIGHTING_STEPS;
  for (;;) {
    let change: { scene: Scene; before: PlotThread | undefined; after: PlotThread } | undefined;
    if (baseSighting && below >= base!.sceneCount && isDeepStrictEqual(current, atBase)) return baseSighting;
    if (steps-- <= 0) return 'untraced';
    // The scene the thread's record names as its last change, if it holds: the thread left it as it is now.
    const named = current.resolvedIn ?? current.lastAdvancedIn ?? current.openedIn;
    if (named === null) {
      const beginning = await history.beginning();
      if (!beginning) return 'untraced';
      const first = threadOf(beginning, thread.id);
      if (isDeepStrictEqual(first, current)) return fromBeginning(first);
    } else {
      const scene = await history.scene(named);
      if (scene && scene.index < below) {
        const [before, after] = await Promise.all([
          history.stateAt(scene.stateVersion - 1),
          history.stateAt(scene.stateVersion),
        ]);
        const then = after ? threadOf(after, thread.id) : undefined;
        const earlier = before ? threadOf(before, thread.id) : undefined;
        if (before && then && isDeepStrictEqual(then, current) && !isDeepStrictEqual(earlier, then)) {
          change = { scene, before: earlier, after: then };
        }
      }
    }
    // A record naming no scene that holds (one not stored, say) of a thread as it stood when the story began: known as
    // it stood then, without reading the scenes back.
    if (!change && named !== null) {
      const beginning = await history.beginning();
      const first = beginning ? threadOf(beginning, thread.id) : undefined;
      if (first && isDeepStrictEqual(first, current)) return fromBeginning(first);
    }
    // Otherwise the record is wrong: the scenes, newest first, tell which one last changed the thread.
    for (let index = below - 1; !change; index--) {
      if (index < 0) {
        const beginning = await history.beginning();
        return beginning ? fromBeginning(threadOf(beginning, thread.id)) : 'untraced';
      }
      if (steps-- <= 0) return 'untraced';
      const scene = await history.sceneAt(index);
      if (!scene) return 'untraced';
      const [before, after] = await Promise.all([
        history.stateAt(scene.stateVersion - 1),
        history.stateAt(scene.stateVersion),
      ]);
      if (!before || !after) return 'untraced';
      const then = threadOf(after, thread.id);
      const earlier = threadOf(before, thread.id);
      if (isDeepStrictEqual(earlier, then)) continue;
      // Gone after the scene yet there later: it came back by other means than a scene, which no one witnessed.
      if (!then) return 'unseen';
      change = { scene, before: earlier, after: then };
    }
    if (sceneWitnessedBy(change.scene, pov)) return { thread: change.after, lastWitnessedScene: change.scene.index };
    // Opened in a scene `pov` was not in: nothing of it is known to `pov`.
    if (!change.before) return 'unseen';
    current = change.before;
    below = change.scene.index;
  }
}

/** The plot thread of `id` in `state`, if it holds one. */
export function threadOf(state: StoryState, id: string): PlotThread | undefined {
  return state.plotThreads.find((thread) => thread.id === id);
}
