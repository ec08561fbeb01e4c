/**
 * What a story's history says at a chapter start: the state the chapter began with, the state the story began with,
 * and what a point of view knows there (the characters it has met, as it last saw them, and the plot threads it saw
 * change). The stable part of a prompt is built from it, so each is read once per chapter start and point of view and
 * kept, bounded, for the process. Used by `ContextManager`; internal: not exported from the package.
 *
 * @module
 */
import { characterOf, type Scene, type StoryState } from '../state/schema.js';
import type { StoryStateStore } from '../state/store.js';
import { remember } from './bounded-map.js';
import { type Acquaintance, sceneWitnessedBy } from './prompt-layout.js';
import { eachScene } from './scene-listing.js';
import { lastSighting, type StoryHistory, scenesByIndex, type ThreadSightings } from './thread-sightings.js';

/**
 * How many scenes back from a chapter start are listed, at most, for a thread whose own record does not name the
 * scene that last changed it (a state written by other means than the reducer).
 */
const THREAD_SCAN_SCENES = 1_000;
/** How many store reads the walk of a chapter start's threads has under way at once. */
const THREAD_READS_AT_ONCE = 8;

/** A scene two characters were both in: its index, and the version of the state it left. */
interface SharedScene {
  index: number;
  stateVersion: number;
}

/** The reads of one store's history at chapter starts, shared and kept per story, chapter and point of view. */
export class ChapterHistory {
  /** Per story and chapter, the state the chapter began with, once the chapter has a scene (`chapterStartState`). */
  private readonly chapterStarts = new Map<string, StoryState>();
  /** Per story and chapter, the search for its start under way (`chapterStartState`). */
  private readonly chapterStartSearches = new Map<string, Promise<{ start: StoryState; found: boolean }>>();
  /**
   * Per story and point of view, from the newest complete scan: for each other character, the last scene before
   * `before` that the two were in together. A later chapter start reads only the scenes since.
   */
  private readonly sharedScenes = new Map<string, { before: number; last: Map<string, SharedScene> }>();
  /** Per story, point of view and chapter start: the characters it knows there (`acquaintances`), read or reading. */
  private readonly acquaintancesAt = new Map<string, Promise<Map<string, Acquaintance>>>();
  /** Per story, point of view and chapter start (its state version): the plot threads it knows (`knownThreads`). */
  private readonly threadSightings = new Map<string, ThreadSightings>();

  constructor(private readonly store: StoryStateStore) {}

  /**
   * The other characters `pov` knows at `chapterStart`: those it shared a scene with before the chapter, each as the
   * last such scene left it, and those it has a relationship with but never shared a scene with, as the story began.
   * Reads the scenes newest first, back to the last ones it read for this point of view, or, in a new process, until
   * every character is placed (the whole story when one was never met).
   */
  acquaintances(chapterStart: StoryState, pov: string): Promise<Map<string, Acquaintance>> {
    // Once per chapter start and point of view: the prompt and `knownTo` ask for the same, in every episode.
    const key = `${chapterStart.storyId}\u0000${pov}\u0000${chapterStart.version}`;
    const cached = this.acquaintancesAt.get(key);
    if (cached) return cached;
    const reading = this.readAcquaintances(chapterStart, pov);
    remember(this.acquaintancesAt, key, reading, 64);
    // A read that failed is not kept: the next call reads again.
    reading.catch(() => {
      if (this.acquaintancesAt.get(key) === reading) this.acquaintancesAt.delete(key);
    });
    return reading;
  }

  private async readAcquaintances(chapterStart: StoryState, pov: string): Promise<Map<string, Acquaintance>> {
    const { storyId } = chapterStart;
    const before = chapterStart.sceneCount;
    const key = `${storyId}\u0000${pov}`;
    const earlier = this.sharedScenes.get(key);
    const base = earlier && earlier.before <= before ? earlier : undefined;
    const floor = base?.before ?? 0;
    const cast = Object.keys(chapterStart.characters).filter((id) => id !== pov);
    const last = new Map<string, SharedScene>();
    let complete = true;
    if (before > floor) {
      for await (const scene of eachScene(this.store, storyId, { order: 'desc', limit: 200 })) {
        if (scene.index >= before) continue;
        if (scene.index < floor) break;
        if (!sceneWitnessedBy(scene, pov)) continue;
        for (const id of scene.characters) {
          if (id !== pov && !last.has(id)) last.set(id, { index: scene.index, stateVersion: scene.stateVersion });
        }
        if (!base && scene.index > 0 && cast.every((id) => last.has(id))) {
          complete = false;
          break;
        }
      }
    }
    if (base) for (const [id, shared] of base.last) if (!last.has(id)) last.set(id, shared);
    if (complete && (!earlier || earlier.before <= before)) remember(this.sharedScenes, key, { before, last }, 256);
    const relationships = characterOf(chapterStart, pov)?.relationships ?? {};
    const byName = cast.filter((id) => !last.has(id) && Object.hasOwn(relationships, id));
    const versions = [...new Set(cast.flatMap((id) => (last.has(id) ? [last.get(id)!.stateVersion] : [])))];
    const [states, beginning] = await Promise.all([
      Promise.all(versions.map(async (version) => [version, await this.store.getStateAt(storyId, version)] as const)),
      byName.length > 0 ? this.initialState(chapterStart) : undefined,
    ]);
    const stateAt = new Map(states);
    const known = new Map<string, Acquaintance>();
    for (const id of cast) {
      const shared = last.get(id);
      if (shared) {
        known.set(id, {
          sheet: characterOf(stateAt.get(shared.stateVersion) ?? { characters: {} }, id) ?? null,
          lastSharedScene: shared.index,
        });
      } else if (byName.includes(id)) {
        known.set(id, { sheet: (beginning && characterOf(beginning, id)) ?? null, lastSharedScene: null });
      }
    }
    return known;
  }

  /**
   * The plot threads of `chapterStart` that `pov` knows, each as it stood right after the last scene before the
   * chapter that `pov` witnessed and that opened, advanced or resolved it (`KnownThread`), and the others as left out,
   * with why. A thread's record names the scene that last changed it; the state before that scene holds its previous
   * version, which names the scene before, and so on back to one `pov` witnessed. A scene is taken to change a thread
   * only when the thread differs between the states before and after it, so a record that names the wrong scene (a
   * state written by other means than the reducer) is checked against the scenes themselves, newest first. Read once
   * per chapter start and point of view; the states and scenes read are shared by the threads.
   */
  async knownThreads(
    chapterStart: StoryState,
    pov: string,
    base?: { state: StoryState; sightings: ThreadSightings },
  ): Promise<ThreadSightings> {
    const { storyId } = chapterStart;
    // A walk cut short at a base has a key of its own: the thread section of a chapter start is always walked whole,
    // the same in every process.
    const key = `${storyId}\u0000${pov}\u0000${chapterStart.version}${base ? `\u0000${base.state.version}` : ''}`;
    const cached = this.threadSightings.get(key);
    if (cached) return cached;
    const states = new Map<number, Promise<StoryState | null>>();
    const scenes = new Map<string, Promise<Scene | null>>();
    let beginning: Promise<StoryState | null> | undefined;
    // A few reads at a time: a new process walking the threads of a long story must not burst a remote store.
    let reading = 0;
    const waiting: Array<() => void> = [];
    const gated = <T>(read: () => Promise<T>): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        const start = () => {
          reading++;
          // Through `then`: a read that throws instead of rejecting must still give its slot back.
          Promise.resolve()
            .then(read)
            .then(resolve, reject)
            .finally(() => {
              reading--;
              waiting.shift()?.();
            });
        };
        if (reading < THREAD_READS_AT_ONCE) start();
        else waiting.push(start);
      });
    const history: StoryHistory = {
      stateAt: (version) => {
        if (version === chapterStart.version) return Promise.resolve(chapterStart);
        let state = states.get(version);
        if (!state) {
          state = gated(() => this.store.getStateAt(storyId, version));
          states.set(version, state);
        }
        return state;
      },
      scene: (id) => {
        let scene = scenes.get(id);
        if (!scene) {
          scene = gated(() => this.store.getScene(storyId, id));
          scenes.set(id, scene);
        }
        return scene;
      },
      sceneAt: scenesByIndex(this.store, storyId, chapterStart.sceneCount, THREAD_SCAN_SCENES),
      beginning: () => {
        beginning ??= this.initialState(chapterStart);
        return beginning;
      },
    };
    const section = `# Plot threads at the start of ${chapterStart.chapterId}`;
    const sightings = await Promise.all(
      chapterStart.plotThreads.map((thread) =>
        lastSighting(
          thread,
          pov,
          chapterStart.sceneCount,
          history,
          base && { sceneCount: base.state.sceneCount, state: base.state, sightings: base.sightings.byThread },
        ),
      ),
    );
    const result: ThreadSightings = { known: new Map(), omitted: [], byThread: new Map() };
    chapterStart.plotThreads.forEach((thread, position) => {
      const sighting = sightings[position]!;
      result.byThread.set(thread.id, sighting);
      if (sighting !== 'unseen' && sighting !== 'untraced') {
        result.known.set(thread.id, sighting);
        return;
      }
      result.omitted.push({
        id: `thread:${thread.id}`,
        section,
        reason:
          sighting === 'unseen'
            ? `${pov} never saw it opened or advanced`
            : `the stored history does not tell whether ${pov} saw it opened or advanced`,
      });
    });
    remember(this.threadSightings, key, result, 64);
    return result;
  }

  /** The state a story began with: the one its first scene was written against (or `chapterStart`, before any). */
  async initialState(chapterStart: StoryState): Promise<StoryState | null> {
    if (chapterStart.sceneCount === 0) return chapterStart;
    for await (const first of eachScene(this.store, chapterStart.storyId, { limit: 1 })) {
      return this.store.getStateAt(chapterStart.storyId, first.stateVersion - 1);
    }
    return null;
  }

  /**
   * The state the chapter of `state` began with (`searchChapterStart`), the same in every process once the chapter has
   * a scene; before, `state` itself (without its influence queue).
   */
  async chapterStartState(state: StoryState): Promise<StoryState> {
    const key = `${state.storyId}\u0000${state.chapterId}`;
    const cached = this.chapterStarts.get(key);
    if (cached) return cached;
    // The search under way is shared: the stable prefix and the summary horizon ask for it at once.
    const pending = this.chapterStartSearches.get(key);
    if (pending) return (await pending).start;
    const search = this.searchChapterStart(state).finally(() => this.chapterStartSearches.delete(key));
    this.chapterStartSearches.set(key, search);
    const { start, found } = await search;
    // Cached once the chapter has a scene (before, the "start" is whatever the current state is); the live state, the
    // last resort when nothing the chapter left is stored, is cached too, so a process keeps one stable part.
    if (found) remember(this.chapterStarts, key, start, 256);
    return start;
  }

  /**
   * The state the chapter of `state` began with, `found` once the chapter has a scene. Not stored (an import may lack
   * snapshots), the earliest stored state that one of the chapter's scenes left stands in, as it is (its scenes count
   * as before the chapter), the same in every process: the live state would give each process (and each episode of a
   * cold one) a stable part of its own, and show the chapter's latest facts as its start. Looked for a page of scenes
   * at a time, the page's states read together.
   */
  private async searchChapterStart(state: StoryState): Promise<{ start: StoryState; found: boolean }> {
    const clean = (start: StoryState) => ({ ...start, userInfluenceQueue: [] });
    let first: Scene | undefined;
    let page: Scene[] = [];
    const readPage = async (): Promise<StoryState | null> => {
      const states = await Promise.all(page.map((scene) => this.store.getStateAt(state.storyId, scene.stateVersion)));
      page = [];
      return states.find((candidate) => candidate !== null) ?? null;
    };
    for await (const scene of eachScene(this.store, state.storyId, { chapterId: state.chapterId, limit: 16 })) {
      if (!first) {
        first = scene;
        const start = await this.store.getStateAt(state.storyId, scene.stateVersion - 1);
        if (start) return { start: clean(start), found: true };
      }
      page.push(scene);
      if (page.length === 16) {
        const start = await readPage();
        if (start) return { start: clean(start), found: true };
      }
    }
    const start = page.length > 0 ? await readPage() : null;
    return { start: clean(start ?? state), found: first !== undefined };
  }
}
