/**
 * The in-process `InfluenceSource`: a queue that an app (a web handler, a CLI) pushes influences into.
 *
 * @module
 */
import { throwIfAborted } from '../core/errors.js';
import type { UserInfluenceInput } from '../state/schema.js';
import type { InfluenceSource } from './influence-source.js';

/** An `InfluenceSource` fed by `push`. */
export interface MemoryInfluenceSource extends InfluenceSource {
  /** Queues an influence for its story; pushing an id twice keeps the first. Returns false for a duplicate. */
  push(influence: UserInfluenceInput): boolean;
  /** Influences pushed and not yet acknowledged, per story. */
  size(storyId: string): number;
}

/**
 * An in-process queue of influences. `pull` returns what is not yet acknowledged, so an influence survives a
 * crash between `pull` and storing it, as long as the process lives.
 *
 * @example
 * ```ts
 * import { createMemoryInfluenceSource } from 'storyloom';
 * const source = createMemoryInfluenceSource();
 * source.push({ id: 'vote-1', storyId: 'tale', source: 'web', author: 'ana', kind: 'vote', choice: 'north', receivedAt: new Date().toISOString() });
 * ```
 */
export function createMemoryInfluenceSource(): MemoryInfluenceSource {
  const queues = new Map<string, Map<string, UserInfluenceInput>>();
  const queueOf = (storyId: string) => {
    let queue = queues.get(storyId);
    if (!queue) {
      queue = new Map();
      queues.set(storyId, queue);
    }
    return queue;
  };
  return {
    specificationVersion: 'v1',
    provider: 'memory',
    push(influence) {
      const queue = queueOf(influence.storyId);
      if (queue.has(influence.id)) return false;
      queue.set(influence.id, structuredClone(influence));
      return true;
    },
    size(storyId) {
      return queues.get(storyId)?.size ?? 0;
    },
    async pull(storyId, options = {}) {
      throwIfAborted(options.signal);
      return [...(queues.get(storyId)?.values() ?? [])].map((influence) => structuredClone(influence));
    },
    async acknowledge(storyId, ids) {
      const queue = queues.get(storyId);
      for (const id of ids) queue?.delete(id);
    },
    async close() {
      queues.clear();
    },
  };
}
