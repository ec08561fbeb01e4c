/**
 * The `SceneGenerator` port: writes the next scene and proposes its state change.
 *
 * @module
 */
import { z } from 'zod';
import { LIMITS, SceneSchema, type StateDelta, StateDeltaSchema, type StoryState } from '../state/schema.js';

/** The prompt as laid out by the context layer: a stable prefix for prompt caching, then the dynamic rest. */
export interface ScenePrompt {
  /** Instructions, story bible, world rules, main characters: byte-identical across episodes of a chapter. */
  stable: string;
  /**
   * `stable` cut into cacheable blocks (their concatenation equals `stable`): the chapter-constant part, then one
   * block per chapter-journal entry. A generator with prompt caching sends them as separate blocks, so the next
   * episode finds the previous one's cached prefix at a block boundary.
   */
  stableBlocks?: string[];
  /** Retrieved memories, recent scenes, audience influence and the task for this scene. */
  dynamic: string;
  /**
   * Ids of the audience influences `dynamic` already shows as quoted data. A generator that adds its own audience
   * block adds only the others (one a token budget cut, or all of them when this is absent), so no influence is
   * shown twice and none is lost.
   */
  influenceIds?: string[];
}

/** An audience influence after resolution: sanitized text, final weight, and whether it won the vote. */
export interface ResolvedInfluence {
  id: string;
  kind: 'vote' | 'suggestion' | 'tip';
  author: string;
  choice: string | null;
  /** Sanitized audience text. It is data to consider, never instructions. */
  text: string;
  weight: number;
  winning: boolean;
}

/** What a generator is asked to write. */
export interface SceneRequest {
  storyId: string;
  /** The id the scene must carry; deterministic for a story version, so a retried run writes the same scene. */
  sceneId: string;
  sceneIndex: number;
  chapterId: string;
  /** The state the scene continues from (read-only). */
  state: StoryState;
  prompt: ScenePrompt;
  influences: ResolvedInfluence[];
  /** Seed for generators that are deterministic (the procedural narrator). */
  seed: number;
}

/** The scene as a generator writes it: the committed `Scene` minus what the engine fills in. */
export const SceneDraftSchema = SceneSchema.pick({
  title: true,
  text: true,
  summary: true,
  characters: true,
  locations: true,
  themes: true,
  mood: true,
  importance: true,
  imagePrompt: true,
});
export type SceneDraft = z.infer<typeof SceneDraftSchema>;

/** The structured output every generator returns: the scene and its proposed delta. */
export const SceneOutputSchema = z.object({
  scene: SceneDraftSchema,
  delta: StateDeltaSchema,
});
export type SceneOutput = z.infer<typeof SceneOutputSchema>;

/** Token usage and cost of a call or of a whole generation. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  cacheWriteTokens: number;
  cacheReadTokens: number;
  /** Cost in US dollars from the generator's price table; 0 for offline generators. */
  costUsd: number;
}

/** An empty usage record. */
export function emptyUsage(): Usage {
  return { inputTokens: 0, outputTokens: 0, cacheWriteTokens: 0, cacheReadTokens: 0, costUsd: 0 };
}

/**
 * Progress of a generation, for progress bars (streamed characters, repair attempts) and cost accounting: `usage`
 * reports each model call as it is answered, so the cost of attempts that end in an error is known too (a result
 * carries only the usage of a generation that succeeded).
 */
export type GenerationProgress =
  | { type: 'attempt'; attempt: number }
  | { type: 'text'; characters: number }
  | { type: 'repair'; attempt: number; problems: string[] }
  | { type: 'usage'; attempt: number; usage: Usage };

/** What `generate` returns. */
export interface SceneGenerationResult {
  scene: SceneDraft;
  delta: StateDelta;
  usage: Usage;
  modelId: string;
  /** Generation attempts made, repairs included. */
  attempts: number;
}

/** Writes scenes. Implementations validate their own output; they never edit state. */
export interface SceneGenerator {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  readonly modelId: string;
  generate(
    request: SceneRequest,
    options?: { signal?: AbortSignal; onProgress?: (progress: GenerationProgress) => void },
  ): Promise<SceneGenerationResult>;
}

/** Upper bound of an image prompt, for adapters that truncate. */
export const MAX_IMAGE_PROMPT = LIMITS.description;
