/**
 * The typed error of an episode whose scene is committed but whose later steps (index, image, publishing) did not
 * all finish.
 *
 * @module
 */
import { RetryError, StoryloomError } from '../core/errors.js';
import type { EngineStep, StepStatus } from './events.js';

/** A post-commit step that did not finish, as reported in an `EpisodeResult`. */
export interface StepFailure {
  step: EngineStep;
  sceneId: string;
  status: Extract<StepStatus, 'failed' | 'blocked'>;
  error?: unknown;
}

/**
 * Whether a step's failure may pass if the step runs again later: a storyloom error that says so, or retries that ran
 * out on such errors (or were asked to wait longer than allowed). A step that failed in a way no retry cures (a
 * refused request, a content filter, an error storyloom does not know) fails the same way next time.
 *
 * @example
 * ```ts
 * import { isRetryableStepFailure } from 'storyloom';
 * for (const failure of result.failures) if (!isRetryableStepFailure(failure.error)) alertOperator(failure);
 * ```
 */
export function isRetryableStepFailure(error: unknown): boolean {
  if (RetryError.isInstance(error)) return error.reason !== 'errorNotRetryable';
  return StoryloomError.isInstance(error) && error.isRetryable;
}

/**
 * The scene is committed (it will never be written again) but some steps after the commit failed or were blocked.
 * The next `runEpisode` resumes exactly those steps. Throw it from a scheduled handler to have the scheduler retry.
 * `isRetryable` is false when a step failed in a way a later run cannot cure (`isRetryableStepFailure`): retrying
 * the episode then would only fail again, paying for the steps before it each time; someone must look.
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
  declare private readonly episodeIncompleteErrorBrand: never;
  readonly storyId: string;
  readonly sceneId: string;
  readonly failures: StepFailure[];
  constructor(storyId: string, sceneId: string, failures: StepFailure[], options: { cause?: unknown } = {}) {
    const steps = failures.map((failure) => `${failure.step} (${failure.status})`).join(', ');
    super('EPISODE_INCOMPLETE', `Scene "${sceneId}" of story "${storyId}" is committed but unfinished: ${steps}`, {
      cause: options.cause ?? failures.find((failure) => failure.error !== undefined)?.error,
      // Blocked steps wait for a failed one: whether the episode can finish later is for the failed ones to say.
      isRetryable: failures.every((failure) => failure.status === 'blocked' || isRetryableStepFailure(failure.error)),
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

/** A call of the state store that the engine waits for, and so bounds by `storeTimeoutMs`. */
export type StoreOperation =
  | 'load'
  | 'getScene'
  | 'getStateAt'
  | 'listPublications'
  | 'enqueueInfluence'
  | 'recordPublication'
  | 'commitScene';

/**
 * A call of the state store did not answer within the engine's `storeTimeoutMs` (a stalled connection): the engine
 * stopped waiting and failed the run. Retryable: the next run starts from what the store holds. The port takes no
 * signal, so the call was left behind and may still land; a write that does (`commitScene`, `recordPublication`,
 * `enqueueInfluence`) lands as the run meant it, and the next run reads it: a scene committed late is resumed, never
 * written a second time (its id is fixed by the story and the version, and the commit is version-conditional).
 *
 * @example
 * ```ts
 * import { StoreTimeoutError } from 'storyloom';
 * try { await engine.runEpisode('lighthouse') } catch (error) {
 *   if (StoreTimeoutError.isInstance(error)) console.log(error.operation, error.timeoutMs, error.isRetryable);
 * }
 * ```
 */
export class StoreTimeoutError extends StoryloomError {
  declare private readonly storeTimeoutErrorBrand: never;
  /** The store method that did not answer. */
  readonly operation: StoreOperation;
  readonly timeoutMs: number;
  constructor(operation: StoreOperation, timeoutMs: number) {
    const doubt =
      operation === 'commitScene'
        ? ': the commit is in doubt (it may still land); the next run finds it landed, or commits at the same version'
        : '';
    super('TIMEOUT', `The state store's ${operation} did not answer within ${timeoutMs} ms${doubt}`, {
      isRetryable: true,
    });
    this.name = 'StoreTimeoutError';
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
  static override isInstance(error: unknown): error is StoreTimeoutError {
    return StoryloomError.isInstance(error) && error.name === 'StoreTimeoutError';
  }
}
