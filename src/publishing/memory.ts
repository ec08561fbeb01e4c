/**
 * The in-memory `Publisher`: keeps what it publishes in process, for tests and for wiring checks.
 *
 * @module
 */
import { throwIfAborted } from '../core/errors.js';
import type { Scene } from '../state/schema.js';
import {
  type Episode,
  type Publisher,
  type PublisherCapabilities,
  type PublishResult,
  validateEpisode,
} from './publisher.js';

/** One scene as the memory publisher holds it. */
export interface MemoryPublication {
  key: string;
  scene: Scene;
  imageBytes: number;
  /** How many times `publish` was asked for this scene (the publication itself exists once). */
  requests: number;
}

/** A `Publisher` that records publications in memory; `publications` exposes them to tests. */
export interface MemoryPublisher extends Publisher {
  readonly publications: ReadonlyMap<string, MemoryPublication>;
}

/** Options of `createMemoryPublisher`. */
export interface MemoryPublisherOptions {
  /** The target name in the publication log. Default `memory`. */
  target?: string;
}

/**
 * A publisher that keeps each scene once, under a deterministic key (its story's and its own id), in memory: the
 * first publish of a scene is kept, and publishing it again (with other text, or at another index) only counts the
 * request. It checks each episode as the other
 * publishers do (`validateEpisode`), so a wiring check catches an episode they would refuse.
 *
 * @example
 * ```ts
 * import { createMemoryPublisher } from 'storyloom';
 * const publisher = createMemoryPublisher({ target: 'preview' });
 * ```
 */
export function createMemoryPublisher(options: MemoryPublisherOptions = {}): MemoryPublisher {
  const target = options.target ?? 'memory';
  const publications = new Map<string, MemoryPublication>();
  const capabilities: PublisherCapabilities = { idempotent: true };
  return {
    specificationVersion: 'v1',
    provider: 'memory',
    target,
    capabilities,
    publications,
    async publish(episode: Episode, publishOptions = {}): Promise<PublishResult> {
      throwIfAborted(publishOptions.signal);
      const { scene, image } = validateEpisode(episode);
      // By the scene's id alone: a scene published again at another index is still one publication.
      const key = `${scene.storyId}/scenes/${scene.id}`;
      const existing = publications.get(key);
      if (existing) existing.requests++;
      else {
        publications.set(key, {
          key,
          scene,
          imageBytes: image?.data.byteLength ?? 0,
          requests: 1,
        });
      }
      return { target, url: `memory://${key}`, ids: [key] };
    },
  };
}
