/**
 * Small builders of valid domain objects for tests: a story, the next scene, the state after it, an influence.
 *
 * @module
 */
import {
  chapterIdFor,
  type Scene,
  SceneSchema,
  type StoryState,
  StoryStateSchema,
  type UserInfluenceInput,
} from '../state/schema.js';

const EPOCH = Date.UTC(2026, 0, 1);

/** A fixed timestamp `minutes` after 2026-01-01, so fixtures never depend on the wall clock. */
export function fixtureTime(minutes = 0): string {
  return new Date(EPOCH + minutes * 60_000).toISOString();
}

/**
 * A valid new story with two main characters, a supporting one and an open thread.
 *
 * @example
 * ```ts
 * import { makeStoryState } from 'storyloom/testing';
 * const state = makeStoryState('lighthouse');
 * ```
 */
export function makeStoryState(storyId = 'story-1', overrides: Partial<StoryState> = {}): StoryState {
  return StoryStateSchema.parse({
    storyId,
    version: 0,
    chapterId: chapterIdFor(0),
    chapterIndex: 0,
    sceneId: null,
    sceneCount: 0,
    bible: {
      title: 'The Lighthouse Keepers',
      premise: 'Two keepers guard a lighthouse on an island that moves at night.',
      genre: 'fantasy',
      tone: 'wistful, quietly funny',
      worldRules: ['The island drifts one mile north each night.', 'The lamp must never go dark.'],
      style: 'ink and watercolour, muted blues',
    },
    characters: {
      mira: { id: 'mira', name: 'Mira Vale', aliases: ['the keeper'], role: 'main', traits: { courage: 0.7 } },
      tobin: { id: 'tobin', name: 'Tobin Marsh', role: 'main', traits: { curiosity: 0.8 } },
      gull: { id: 'gull', name: 'Old Gull', role: 'supporting' },
    },
    worldState: { season: 'autumn' },
    plotThreads: [{ id: 'drift', title: 'Why the island drifts', importance: 0.8, characters: ['mira'] }],
    userInfluenceQueue: [],
    createdAt: fixtureTime(0),
    updatedAt: fixtureTime(0),
    ...overrides,
  });
}

/** The next scene of `state` (index, chapter and version filled in), with `overrides` on top. */
export function makeNextScene(state: StoryState, overrides: Partial<Scene> = {}): Scene {
  const index = state.sceneCount;
  return SceneSchema.parse({
    id: `${state.storyId}-s${index}`,
    storyId: state.storyId,
    chapterId: state.chapterId,
    index,
    title: `Night ${index + 1}`,
    text: `The lamp turned. Scene ${index + 1} of ${state.bible.title}: Mira and Tobin watched the sea.`,
    summary: `Mira and Tobin keep watch, night ${index + 1}.`,
    characters: ['mira', 'tobin'],
    locations: ['lighthouse'],
    themes: ['duty'],
    importance: 0.5,
    createdAt: fixtureTime(index + 1),
    stateVersion: state.version + 1,
    ...overrides,
  });
}

/** The state after `scene`, with the bookkeeping a commit expects and no other change. */
export function makeNextState(state: StoryState, scene: Scene, overrides: Partial<StoryState> = {}): StoryState {
  return StoryStateSchema.parse({
    ...state,
    version: state.version + 1,
    sceneId: scene.id,
    sceneCount: state.sceneCount + 1,
    updatedAt: scene.createdAt,
    userInfluenceQueue: [],
    ...overrides,
  });
}

/** A valid pending vote for `storyId`. */
export function makeInfluence(
  storyId: string,
  id: string,
  overrides: Partial<UserInfluenceInput> = {},
): UserInfluenceInput {
  return {
    id,
    storyId,
    source: 'api',
    author: 'reader-1',
    kind: 'vote',
    choice: 'open the door',
    text: '',
    weight: 1,
    receivedAt: fixtureTime(0),
    ...overrides,
  };
}
