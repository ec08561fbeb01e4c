/**
 * The work a context manager shares between concurrent calls (the fingerprint check with any rebuild it starts, the
 * catch-up of a process's own keyword side) runs under no one caller's signal. A call in it that never answers must
 * not hold up every later call of the process: once every caller has given up, the work is abandoned, its calls are
 * told through their signal, and the next call starts afresh.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import type { Embedder } from '../src/context/embedder.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { AbortedError } from '../src/core/errors.js';
import { commitNextScene, KEEPER_DIMENSIONS, newKeepersStory } from './fixtures/keepers.js';
import { nightWatchStory, processOver, withMembers } from './fixtures/night-watch.js';

/** A call that hangs until released: it ignores its signal, as a stuck client may. */
interface HeldCall {
  signal: AbortSignal | undefined;
  release: () => void;
}

/** An embedder whose calls hang while `hold` is set; `called` resolves at the first held call. */
function holdingEmbedder() {
  const inner = createHashingEmbedder({ dimensions: KEEPER_DIMENSIONS });
  const held: HeldCall[] = [];
  let calls = 0;
  let onHeld = () => {};
  const called = new Promise<void>((resolve) => {
    onHeld = resolve;
  });
  const control = { hold: true };
  const embedder: Embedder = {
    specificationVersion: 'v1',
    provider: inner.provider,
    modelId: inner.modelId,
    dimensions: inner.dimensions,
    maxBatchSize: inner.maxBatchSize,
    embed: (texts, options) => {
      calls++;
      if (!control.hold) return inner.embed(texts, options);
      return new Promise((resolve) => {
        held.push({ signal: options?.signal, release: () => resolve(inner.embed(texts, options)) });
        onHeld();
      });
    },
  };
  return { embedder, held, called, control, calls: () => calls };
}

describe('the fingerprint check, shared by concurrent calls', () => {
  it('is abandoned when its only caller gives up, so a hung embedder does not hold up the next call', async () => {
    const holding = holdingEmbedder();
    const { options } = await newKeepersStory(4, { embedder: holding.embedder });
    const manager = new ContextManager(options);

    const first = new AbortController();
    const call = manager.getRelevantContext('tale', 'the brass key', { signal: first.signal });
    await holding.called;
    first.abort();
    await expect(call).rejects.toSatisfy(AbortedError.isInstance);
    // The embedder's call is told that nobody waits for it any more.
    expect(holding.held[0]!.signal?.aborted).toBe(true);

    holding.control.hold = false;
    const bundle = await manager.getRelevantContext('tale', 'the brass key');
    expect(bundle.similarScenes).toEqual([]);
    expect(holding.calls()).toBe(2);
    // The abandoned call answering late changes nothing.
    holding.held[0]!.release();
    await expect(manager.getRelevantContext('tale', 'the brass key')).resolves.toBeDefined();
    expect(holding.calls()).toBe(2);
  });

  it('goes on while another caller still waits for it', async () => {
    const holding = holdingEmbedder();
    const { options } = await newKeepersStory(4, { embedder: holding.embedder });
    const manager = new ContextManager(options);

    const first = new AbortController();
    const impatient = manager.getRelevantContext('tale', 'the brass key', { signal: first.signal });
    const patient = manager.getRelevantContext('tale', 'the lantern room');
    await holding.called;
    first.abort();
    await expect(impatient).rejects.toSatisfy(AbortedError.isInstance);
    expect(holding.held[0]!.signal?.aborted).toBe(false);

    holding.held[0]!.release();
    await expect(patient).resolves.toBeDefined();
    expect(holding.calls()).toBe(1);
  });
});

describe("the catch-up of a process's own keyword side", () => {
  it('is abandoned when its only caller gives up, and the next call fills the side afresh', async () => {
    const { store, vectors } = await nightWatchStory('watch');
    const writer = processOver(store, vectors);
    // The server's reads of stored summaries (with the synopsis) hang while `hold` is set.
    const hold = { on: false };
    const signals: Array<AbortSignal | undefined> = [];
    const serverVectors = withMembers<VectorIndex>(vectors, {
      fetch: (storyId: string, ids: string[], options?: { signal?: AbortSignal }) => {
        if (hold.on && ids.includes('summary-synopsis')) {
          signals.push(options?.signal);
          return new Promise(() => {});
        }
        return vectors.fetch(storyId, ids, options);
      },
    });
    const server = processOver(store, serverVectors);

    let state = await store.load('watch');
    for (let i = 0; i < 2; i++) ({ state } = await commitNextScene(store, state, {}, {}, writer.context));
    await server.context.getRelevantContext('watch', 'Mira');
    for (let i = 0; i < 3; i++) ({ state } = await commitNextScene(store, state, {}, {}, writer.context));

    hold.on = true;
    const caller = new AbortController();
    const call = server.context.getRelevantContext('watch', 'Mira', { signal: caller.signal });
    await expect.poll(() => signals.length).toBeGreaterThan(0);
    caller.abort();
    await expect(call).rejects.toSatisfy(AbortedError.isInstance);
    expect(signals[0]?.aborted).toBe(true);

    hold.on = false;
    await server.context.getRelevantContext('watch', 'Mira');
    // The side holds what a new process's holds after its first call.
    const fresh = processOver(store, vectors);
    await fresh.context.getRelevantContext('watch', 'Mira');
    expect(await server.keywords.count('watch')).toBe(await fresh.keywords.count('watch'));
    expect(await server.keywords.count('watch')).toBeGreaterThan(5);
  });
});
