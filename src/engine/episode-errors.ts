/**
 * The typed error of an episode whose scene is committed but whose later steps (index, image, publishing) did not
 * all finish.
 *
 * @module
 */
import { StoryloomError } from '../core/errors.js';
import type { EngineStep, StepStatus } from './events.js';

/** A post-commit step that did not finish, as reported in an `EpisodeResult`. */
export interface StepFailure {
  step: EngineStep;
  sceneId: string;
  status: Extract<StepStatus, 'failed' | 'blocked'>;
  error?: unknown;
}

/**
 * The scene is committed (it will never be written again) but some steps after the commit failed or were blocked.
 * Retryable: the next `runEpisode` resumes exactly those steps. Throw it from a scheduled handler to have the
 * scheduler retry.
 *
 * @example
 * ```ts
 * import { EpisodeIncompleteError } from 'storyloom';
 * try { await handler(event) } catch (error) {
 *   if (EpisodeIncompleteError.isInstance(error)) console.log(error.sceneId, error.failures.map((f) => f.step));
 * }
 * ```
 */
export class EpisodeIncompleteError extends StoryloomError {
  readonly storyId: string;
  readonly sceneId: string;
  readonly failures: StepFailure[];
  constructor(storyId: string, sceneId: string, failures: StepFailure[], options: { cause?: unknown } = {}) {
    const steps = failures.map((failure) => `${failure.step} (${failure.status})`).join(', ');
    super('EPISODE_INCOMPLETE', `Scene "${sceneId}" of story "${storyId}" is committed but unfinished: ${steps}`, {
      cause: options.cause ?? failures.find((failure) => failure.error !== undefined)?.error,
      isRetryable: true,
    });
    this.name = 'EpisodeIncompleteError';
    this.storyId = storyId;
    this.sceneId = sceneId;
    this.failures = failures;
  }
  static override isInstance(error: unknown): error is EpisodeIncompleteError {
    return StoryloomError.isInstance(error) && error.name === 'EpisodeIncompleteError';
  }
}
