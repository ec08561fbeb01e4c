/**
 * The `Publisher` port: puts a committed scene where its readers are. The publication log that makes publishing
 * exactly-once lives in the `StoryStateStore` (`recordPublication`).
 *
 * @module
 */
import { ellipsize } from '../core/text.js';
import type { Scene, StoryState } from '../state/schema.js';

/** An image that goes with a scene. */
export interface EpisodeImage {
  data: Uint8Array;
  mediaType: string;
  /** Alt text for readers who cannot see the picture. */
  alt: string;
}

/** Longest alt text of a scene picture: an image prompt may run to 2,000 characters, too long for a reader to hear. */
const MAX_ALT_TEXT = 300;

/**
 * The alt text of a scene's picture: the scene's `imagePrompt`, or its title, cut to 300 characters (ending in `…`).
 * The engine gives it to its publishers with each picture, and a site rebuilt from stored scenes (the command's
 * import and fork) gives the same, so a rebuilt page describes its picture as the original did.
 *
 * @example
 * ```ts
 * import { sceneAltText, sceneIllustrationRequest } from 'storyloom';
 * const drawn = await images.generate(sceneIllustrationRequest(scene, story));
 * const image = { data: drawn.data, mediaType: drawn.mediaType, alt: sceneAltText(scene) };
 * ```
 */
export function sceneAltText(scene: Pick<Scene, 'imagePrompt' | 'title'>): string {
  const text = scene.imagePrompt || scene.title;
  return ellipsize(text, MAX_ALT_TEXT);
}

/** Everything a publisher needs to publish one scene. */
export interface Episode {
  story: StoryState;
  scene: Scene;
  image?: EpisodeImage;
}

/** Where a scene ended up. */
export interface PublishResult {
  target: string;
  /** Public URL or path of the published scene, when there is one. */
  url?: string;
  /** Remote ids (post ids, object keys) that a later run must know to not publish again. */
  ids: string[];
}

/** What a publisher can do. */
export interface PublisherCapabilities {
  /**
   * Publishing the same scene twice leaves one publication (deterministic keys, create-only writes). When false (a
   * post on a social network, say), the engine calls `publish` at most once per scene: see `Publisher`.
   */
  idempotent: boolean;
}

/**
 * Publishes scenes to one target.
 *
 * An idempotent publisher's `publish` must be safe to repeat for the same scene: the engine calls it again after a
 * crash or a failure, until the publication log has a `done` entry.
 *
 * A publisher that is not idempotent is called at most once per scene. The engine claims the step in the log first,
 * so of all the runs that reach it (a retried Lambda beside the first, say) one calls it; another run that finds the
 * claim while its holder may still be calling (the holder's time limits and retry waits, a day at most) reports
 * `PUBLISH_IN_PROGRESS` (retryable) and leaves it. A failure with a retryable error means nothing went out: the
 * engine retries it (never any other error, whatever its retry policy says), and once retries run out, or the run is
 * stopped before a call, it releases the claim for a later run. Any other outcome without `done` (a crash, a step
 * timeout, a non-retryable or unknown error) leaves the step in doubt: the publisher is not called again, runs report
 * `PUBLISH_IN_DOUBT` (not retryable), and the story waits until `StoryEngine.resolvePublication` settles it as
 * published or not.
 */
export interface Publisher {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  /** A name unique among the engine's publishers; the publication log is keyed on it. */
  readonly target: string;
  readonly capabilities: PublisherCapabilities;
  publish(episode: Episode, options?: { signal?: AbortSignal }): Promise<PublishResult>;
}
