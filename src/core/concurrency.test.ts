import { describe, expect, it } from 'vitest';
import { mapWithConcurrency } from './concurrency.js';

/** A task's wait that ends only with its signal, rejecting with `reason` (what an aborted client call throws). */
function untilSignal(signal: AbortSignal, reason: Error): Promise<never> {
  return new Promise((_resolve, reject) => {
    if (signal.aborted) reject(reason);
    signal.addEventListener('abort', () => reject(reason), { once: true });
  });
}

describe('mapWithConcurrency', () => {
  it('keeps the order of the items whatever order the tasks finish in', async () => {
    const results = await mapWithConcurrency([3, 1, 2], 2, undefined, async (item) => {
      for (let turn = 0; turn < item; turn++) await Promise.resolve();
      return item * 10;
    });
    expect(results).toEqual([30, 10, 20]);
  });

  it('after the first failure starts no new task, aborts the ones in flight and throws that first failure', async () => {
    const started: number[] = [];
    const first = new Error('throttled');
    const error = await mapWithConcurrency([0, 1, 2, 3, 4, 5], 2, undefined, async (item, signal) => {
      started.push(item);
      if (item === 0) throw first;
      return untilSignal(signal, new Error('aborted'));
    }).catch((caught: unknown) => caught);
    expect(error).toBe(first);
    expect(started).toEqual([0, 1]);
  });

  it("hands the tasks an aborted signal when the caller's signal fired before the call", async () => {
    const caller = new AbortController();
    caller.abort(new Error('deploy'));
    const aborted = new Error('aborted');
    const outcome = await mapWithConcurrency([0, 1], 2, caller.signal, async (item, signal) => {
      // A client call that honours its signal gives up at once.
      if (signal.aborted) throw aborted;
      return item;
    }).catch((caught: unknown) => caught);
    expect(outcome).toBe(aborted);
  });
});
