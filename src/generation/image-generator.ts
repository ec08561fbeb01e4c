/**
 * The `ImageGenerator` port: a picture for a scene.
 *
 * @module
 */

/** The aspect ratios an `ImageRequest` may ask for: an image generator is never handed another. */
export const IMAGE_ASPECT_RATIOS = ['1:1', '16:9', '3:2', '4:5', '9:16'] as const;

/** What an image generator is asked to draw. */
export interface ImageRequest {
  storyId: string;
  sceneId: string;
  prompt: string;
  negativePrompt?: string;
  /** The story's visual style guide, kept the same across episodes. */
  style?: string;
  /** Deterministic seed, derived from the scene id so a retry draws the same picture. */
  seed: number;
  aspectRatio?: (typeof IMAGE_ASPECT_RATIOS)[number];
  /** Scene metadata an offline illustrator composes from. */
  title?: string;
  mood?: string;
  themes?: string[];
  characters?: Array<{ id: string; name: string; appearance?: string }>;
}

/** A generated picture. */
export interface GeneratedImage {
  data: Uint8Array;
  mediaType: 'image/png' | 'image/jpeg' | 'image/webp' | 'image/svg+xml';
  seed: number;
  modelId: string;
  width?: number;
  height?: number;
}

/** Draws pictures. A safety-filtered result is a `ContentFilteredError`, never retried with the same prompt. */
export interface ImageGenerator {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  readonly modelId: string;
  generate(request: ImageRequest, options?: { signal?: AbortSignal }): Promise<GeneratedImage>;
}
