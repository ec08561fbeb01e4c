/**
 * What the engine reports while it runs: one event before and after every step (for progress bars, logs and
 * metrics), and a small structured logger port.
 *
 * @module
 */
import type { Usage } from '../generation/scene-generator.js';
import type { ContinuityIssue } from '../state/reducer.js';

/** The steps before the commit. Free to run twice: nothing they do is visible until the commit. */
export const PRE_COMMIT_STEPS = [
  'influences',
  'load',
  'resolve',
  'context',
  'generate',
  'continuity',
  'commit',
] as const;
export type PreCommitStep = (typeof PRE_COMMIT_STEPS)[number];

/**
 * A step of the episode pipeline. After the commit, each step is also a `target` of the publication log:
 * `index`, `cache`, `image` and `publish:<publisher target>`.
 */
export type EngineStep = PreCommitStep | 'index' | 'cache' | 'image' | `publish:${string}`;

/** How a step ended. `blocked` means it did not run because a step it needs failed (publishing waits for the image). */
export type StepStatus = 'done' | 'skipped' | 'failed' | 'blocked';

/**
 * An event of `StoryEngine`. Every event carries the story, the wall time `at` (ms since the epoch, from the
 * engine's clock) and, once known, the scene.
 *
 * @example
 * ```ts
 * import { createStoryEngine, type EngineEvent } from 'storyloom';
 * const onEvent = (event: EngineEvent) => {
 *   if (event.type === 'step.end') console.log(event.step, event.status, `${event.durationMs} ms`);
 * };
 * ```
 */
export type EngineEvent =
  | { type: 'episode.start'; storyId: string; at: number; idempotencyKey?: string }
  | {
      type: 'episode.end';
      storyId: string;
      at: number;
      sceneId: string;
      outcome: 'created' | 'resumed' | 'existing';
      complete: boolean;
      durationMs: number;
    }
  | { type: 'episode.error'; storyId: string; at: number; error: unknown; durationMs: number }
  | { type: 'step.start'; storyId: string; at: number; step: EngineStep; sceneId?: string; resumed?: boolean }
  | {
      type: 'step.end';
      storyId: string;
      at: number;
      step: EngineStep;
      sceneId?: string;
      status: StepStatus;
      durationMs: number;
      /** What the step recorded in the publication log (after the commit), or a summary (before). */
      result?: Record<string, unknown>;
      error?: unknown;
    }
  | {
      type: 'step.retry';
      storyId: string;
      at: number;
      step: EngineStep;
      attempt: number;
      delayMs: number;
      error: unknown;
    }
  | { type: 'continuity.warning'; storyId: string; at: number; sceneId: string; issues: ContinuityIssue[] }
  /** One model call of the generator answered, with what it cost; sent for calls of a failed generation too. */
  | { type: 'generation.usage'; storyId: string; at: number; sceneId: string; attempt: number; usage: Usage }
  | { type: 'conflict'; storyId: string; at: number; expectedVersion: number; attempt: number }
  | { type: 'warning'; storyId: string; at: number; message: string; details?: Record<string, unknown> };

/** A structured logger: a message and fields. Pino, console and Powertools' Logger all fit. */
export interface EngineLogger {
  debug?(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/**
 * A logger that says nothing: the default, because a library should not write to the console unasked.
 *
 * @example
 * ```ts
 * import { createStoryEngine, silentLogger } from 'storyloom';
 * const engine = createStoryEngine({ store, generator, logger: silentLogger });
 * ```
 */
export const silentLogger: EngineLogger = {
  info() {},
  warn() {},
  error() {},
};
