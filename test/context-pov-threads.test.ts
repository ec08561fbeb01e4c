/**
 * `ContextManager.knownTo`'s threads against a reference: the story's scenes replayed in order, each thread known to a
 * point of view as the last scene it witnessed that changed the thread left it (or as the story began, to a character
 * in its cast then). And what it costs a new process: the history before the chapter is read once, for the prompt's
 * thread section and the call alike.
 */
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { eachScene } from '../src/context/scene-listing.js';
import { buildEpisodeQuery, createStoryEngine } from '../src/engine/engine.js';
import { resolveInfluences } from '../src/engine/influence-resolution.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { PlotThread, Scene, StoryState } from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import { ManualClock } from '../src/testing/manual-clock.js';

const STORY = 'threads';
const DIM = 64;
const POVS = ['mira', 'tobin', 'gull'];
/** Below the walk's own bound (20 scenes a thread), so that every thread's history is told. */
const MOST_UNSEEN_CHANGES = 18;

async function allScenes(store: StoryStateStore): Promise<Scene[]> {
  const scenes: Scene[] = [];
  for await (const scene of eachScene(store, STORY, { limit: 16 })) scenes.push(scene);
  return scenes.sort((a, b) => a.index - b.index);
}

/**
 * The threads of `state` that `pov` knows, replayed forward: per thread, the version the last witnessed change left,
 * and how many changes it did not witness since (a thread with too many is left out of the comparison).
 */
async function replayed(store: StoryStateStore, scenes: Scene[], state: StoryState, pov: string) {
  const known = new Map<string, PlotThread>();
  const unseenSince = new Map<string, number>();
  const first = await store.getStateAt(STORY, scenes[0]!.stateVersion - 1);
  for (const thread of first!.plotThreads) if (thread.characters.includes(pov)) known.set(thread.id, thread);
  for (const scene of scenes.filter((candidate) => candidate.index < state.sceneCount)) {
    const before = (await store.getStateAt(STORY, scene.stateVersion - 1))!;
    const after = (await store.getStateAt(STORY, scene.stateVersion))!;
    for (const thread of after.plotThreads) {
      const earlier = before.plotThreads.find((candidate) => candidate.id === thread.id);
      if (isDeepStrictEqual(earlier, thread)) continue;
      if (scene.characters.includes(pov)) {
        known.set(thread.id, thread);
        unseenSince.set(thread.id, 0);
      } else {
        unseenSince.set(thread.id, (unseenSince.get(thread.id) ?? 0) + 1);
      }
    }
  }
  return { known, unseenSince };
}

async function story(episodes: number) {
  const clock = new ManualClock();
  const store = createMemoryStateStore({ clock });
  const template = createStoryFromTemplate('lighthouse-keepers', STORY, clock);
  await store.create({ ...template, bible: { ...template.bible, chapterLength: 6 } });
  const options = {
    vectors: createMemoryVectorIndex({ dimensions: DIM }),
    keywords: createMemoryKeywordIndex(),
    embedder: createHashingEmbedder({ dimensions: DIM }),
  };
  const context = new ContextManager({ store, ...options });
  const engine = createStoryEngine({ store, context, generator: createProceduralNarrator({ seed: 11 }), clock });
  const states: StoryState[] = [];
  for (let i = 0; i < episodes; i++) {
    expect((await engine.runEpisode(STORY)).complete).toBe(true);
    states.push(await store.load(STORY));
  }
  return { store, options, context, states };
}

/** A store that counts the states read below `version`, by version. */
function countingStates(inner: StoryStateStore) {
  const reads: number[] = [];
  const store: StoryStateStore = Object.create(inner);
  store.getStateAt = (storyId, version) => {
    reads.push(version);
    return inner.getStateAt(storyId, version);
  };
  return { store, reads };
}

describe('ContextManager.knownTo: threads', () => {
  it('gives each thread as the point of view last saw it change, in a warm process and a new one', {
    timeout: 120_000,
  }, async () => {
    const { store, options, context, states } = await story(48);
    const scenes = await allScenes(store);
    let compared = 0;
    let knownSeen = 0;
    for (const state of states.filter((_, index) => index % 4 === 3)) {
      for (const pov of POVS) {
        const reference = await replayed(store, scenes, state, pov);
        const fresh = new ContextManager({ store, ...options });
        for (const [label, manager] of [
          ['warm', context],
          ['new', fresh],
        ] as const) {
          const known = (await manager.knownTo(STORY, pov, { state })).threads;
          const byId = new Map(known.map((thread) => [thread.id, thread]));
          for (const thread of state.plotThreads) {
            const where = `${label} ${pov} at scene ${state.sceneCount}, thread ${thread.id}`;
            const expected = reference.known.get(thread.id);
            if ((reference.unseenSince.get(thread.id) ?? 0) > MOST_UNSEEN_CHANGES) {
              // Past the walk's bound: left out, or right.
              if (byId.has(thread.id)) expect(byId.get(thread.id), where).toEqual(expected);
              continue;
            }
            expect(byId.get(thread.id), where).toEqual(expected);
            compared++;
            if (expected) knownSeen++;
          }
          // In the state's order, and nothing the state does not have.
          expect(
            known.map((thread) => thread.id),
            `${label} ${pov}`,
          ).toEqual(state.plotThreads.filter((thread) => byId.has(thread.id)).map((thread) => thread.id));
        }
      }
    }
    // The comparison covered threads known and unknown to a point of view.
    expect(knownSeen).toBeGreaterThan(10);
    expect(compared - knownSeen).toBeGreaterThan(10);
  });

  it("reads the history before the chapter once in a new process: the engine's call adds none to the prompt's", {
    timeout: 120_000,
  }, async () => {
    const { store, options, states } = await story(40);
    let checked = 0;
    for (const state of states.slice(-8)) {
      const chapterStartVersion = (await allScenes(store)).find(
        (scene) => scene.chapterId === state.chapterId,
      )?.stateVersion;
      if (chapterStartVersion === undefined || chapterStartVersion - 1 === state.version) continue;
      const beforeChapter = (reads: number[]) => reads.filter((version) => version < chapterStartVersion - 1).length;
      for (const pov of POVS) {
        const resolution = resolveInfluences(state.userInfluenceQueue);
        // The prompt alone, in a new process.
        const alone = countingStates(store);
        await new ContextManager({ store: alone.store, ...options }).getRelevantContext(
          STORY,
          buildEpisodeQuery(state, resolution, { povCharacterId: pov }),
          { state, povCharacterId: pov },
        );
        // As the engine asks: the threads it knows, then the prompt.
        const both = countingStates(store);
        const manager = new ContextManager({ store: both.store, ...options });
        const known = await manager.knownTo(STORY, pov, { state });
        await manager.getRelevantContext(STORY, buildEpisodeQuery(state, resolution, { povCharacterId: pov, known }), {
          state,
          povCharacterId: pov,
        });
        expect(beforeChapter(both.reads), `${pov} at scene ${state.sceneCount}`).toBe(beforeChapter(alone.reads));
        if (beforeChapter(alone.reads) > 0) checked++;
      }
    }
    expect(checked).toBeGreaterThan(4);
  });
});
