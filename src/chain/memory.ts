/**
 * The in-process `InfluenceSource`: a queue that an app (a web handler, a CLI) pushes influences into.
 *
 * @module
 */
import { z } from 'zod';
import { ClosedError, StoryloomError, throwIfAborted, toProblems, ValidationError } from '../core/errors.js';
import { parseOrThrow } from '../state/base-store.js';
import { LIMITS, type UserInfluenceInput, UserInfluenceSchema } from '../state/schema.js';
import type { InfluenceSource } from './influence-source.js';

/**
 * Options of `createMemoryInfluenceSource`.
 *
 * @example
 * ```ts
 * import { createMemoryInfluenceSource, type MemoryInfluenceSourceOptions } from 'storyloom';
 * const options: MemoryInfluenceSourceOptions = { maxQueuedPerStory: 200 };
 * const source = createMemoryInfluenceSource(options);
 * ```
 */
export interface MemoryInfluenceSourceOptions {
  /**
   * Most influences one story may have pushed and not yet acknowledged; a push past it is refused with a
   * `StoryloomError` of code `QUEUE_FULL`. Acknowledged influences free their places. Default
   * `LIMITS.influenceQueue` (1,000, the most a story's pending queue holds), at most 1,000,000.
   */
  maxQueuedPerStory?: number;
}

const OptionsSchema = z.object({
  maxQueuedPerStory: z.number().int().min(1).max(1_000_000).default(LIMITS.influenceQueue),
});

/** An `InfluenceSource` fed by `push`. */
export interface MemoryInfluenceSource extends InfluenceSource {
  /**
   * Queues an influence for its story; pushing an id twice keeps the first. Returns false for a duplicate (an id
   * still queued for that story), true when queued.
   *
   * Throws, queueing nothing: a `ValidationError` when the influence does not match `UserInfluenceSchema` (its
   * `problems` say where), a `StoryloomError` of code `QUEUE_FULL` (retryable) when the story already has
   * `maxQueuedPerStory` influences waiting for `acknowledge`, and a `ClosedError` after `close()`.
   */
  push(influence: UserInfluenceInput): boolean;
  /** Influences pushed and not yet acknowledged, per story. */
  size(storyId: string): number;
}

/**
 * An in-process queue of influences. `pull` returns what is not yet acknowledged, so an influence survives a
 * crash between `pull` and storing it, as long as the process lives.
 *
 * Each influence is checked when pushed, so a malformed or oversized one never waits in memory, and each story's
 * queue is bounded (`maxQueuedPerStory`): a reader cannot grow the process without limit. The number of stories is
 * not bounded: story ids come from the app, which knows its stories.
 *
 * @example
 * ```ts
 * import { createMemoryInfluenceSource } from 'storyloom';
 * const source = createMemoryInfluenceSource();
 * source.push({ id: 'vote-1', storyId: 'tale', source: 'web', author: 'ana', kind: 'vote', choice: 'north', receivedAt: new Date().toISOString() });
 * ```
 */
export function createMemoryInfluenceSource(options: MemoryInfluenceSourceOptions = {}): MemoryInfluenceSource {
  const parsed = OptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    const problems = toProblems(parsed.error.issues, 'options');
    const first = problems[0];
    throw new ValidationError(`Invalid memory influence source options: ${first?.path}: ${first?.message}`, {
      problems,
    });
  }
  const { maxQueuedPerStory } = parsed.data;
  const queues = new Map<string, Map<string, UserInfluenceInput>>();
  let closed = false;
  return {
    specificationVersion: 'v1',
    provider: 'memory',
    push(influence) {
      if (closed) throw new ClosedError('Cannot push: the memory influence source is closed');
      // zod's output is a fresh copy: what the caller changes afterwards is not what is queued.
      const checked = parseOrThrow(UserInfluenceSchema, influence, 'influence');
      const queue = queues.get(checked.storyId) ?? new Map<string, UserInfluenceInput>();
      if (queue.has(checked.id)) return false;
      if (queue.size >= maxQueuedPerStory) {
        throw new StoryloomError(
          'QUEUE_FULL',
          `Cannot push influence "${checked.id}": story "${checked.storyId}" already has ${queue.size} influences waiting to be acknowledged (at most ${maxQueuedPerStory})`,
          { isRetryable: true },
        );
      }
      queue.set(checked.id, checked);
      queues.set(checked.storyId, queue);
      return true;
    },
    size(storyId) {
      return queues.get(storyId)?.size ?? 0;
    },
    async pull(storyId, pullOptions = {}) {
      throwIfAborted(pullOptions.signal);
      return [...(queues.get(storyId)?.values() ?? [])].map((influence) => structuredClone(influence));
    },
    async acknowledge(storyId, ids) {
      const queue = queues.get(storyId);
      if (queue === undefined) return;
      for (const id of ids) queue.delete(id);
      // A story with nothing waiting keeps no entry, so stories that come and go leave nothing behind.
      if (queue.size === 0) queues.delete(storyId);
    },
    async close() {
      closed = true;
      queues.clear();
    },
  };
}
