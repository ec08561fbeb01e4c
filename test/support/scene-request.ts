/** Scene requests as the engine makes them, for tests of scene generators. */
import type { SceneRequest } from '../../src/generation/scene-generator.js';
import { makeStoryState } from '../../src/testing/fixtures.js';

/** The request for the first scene of a fresh story, as the engine makes it. */
export function openingSceneRequest(): SceneRequest {
  const state = makeStoryState('lighthouse');
  return {
    storyId: state.storyId,
    sceneId: 'scene-0001',
    sceneIndex: 0,
    chapterId: state.chapterId,
    state,
    prompt: { stable: 'Story bible.', dynamic: 'Write the opening scene.' },
    influences: [],
    seed: 1,
  };
}
