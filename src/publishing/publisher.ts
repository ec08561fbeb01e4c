/**
 * The `Publisher` port: puts a committed scene where its readers are. The publication log that makes publishing
 * exactly-once lives in the `StoryStateStore` (`recordPublication`).
 *
 * @module
 */
import type { Scene, StoryState } from '../state/schema.js';

/** An image that goes with a scene. */
export interface EpisodeImage {
  data: Uint8Array;
  mediaType: string;
  /** Alt text for readers who cannot see the picture. */
  alt: string;
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
  /** Publishing the same scene twice leaves one publication (deterministic keys, create-only writes). */
  idempotent: boolean;
}

/**
 * Publishes scenes to one target. `publish` must be safe to repeat for the same scene: the engine calls it again
 * after a crash when the log has no `done` entry.
 */
export interface Publisher {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  /** A name unique among the engine's publishers; the publication log is keyed on it. */
  readonly target: string;
  readonly capabilities: PublisherCapabilities;
  publish(episode: Episode, options?: { signal?: AbortSignal }): Promise<PublishResult>;
}
