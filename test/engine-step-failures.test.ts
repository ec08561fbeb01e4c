/**
 * How the engine bounds and reports a step that fails: each attempt has a time limit (a call that never answers
 * cannot hold a process's episodes forever, nor a context manager's shared check), the publication log names what
 * failed rather than "retries ran out", and an unfinished episode says whether running it again can help.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import type { Embedder } from '../src/context/embedder.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { MAX_TIMER_MS } from '../src/core/abort.js';
import { AbortedError, ProviderError, type StoryloomError, ValidationError } from '../src/core/errors.js';
import { assertEpisodeComplete, createStoryEngine } from '../src/engine/engine.js';
import { createStateOnlyContext, type EpisodeContext } from '../src/engine/episode-context.js';
import { EpisodeIncompleteError } from '../src/engine/episode-errors.js';
import type { EngineEvent } from '../src/engine/events.js';
import { createMemoryPublisher } from '../src/publishing/memory.js';
import type { Publisher } from '../src/publishing/publisher.js';
import { createScriptedGenerator, newWorldStore, STORY_ID } from './fixtures/engine-world.js';

/** Retries without waiting, so that the manual clock never has to be moved. */
const NO_WAIT = { initialDelayMs: 0 };

/** A call that never settles, whatever its signal says, as a stuck client's may. */
const never = <T>(): Promise<T> => new Promise<T>(() => {});

/** A publisher that fails every attempt with `error` (target `feed`). */
function failingPublisher(error: () => unknown): Publisher & { attempts: number } {
  const inner = createMemoryPublisher({ target: 'feed' });
  const publisher = {
    ...inner,
    attempts: 0,
    publish: async () => {
      publisher.attempts++;
      throw error();
    },
  };
  return publisher;
}

describe('engine: a step that never answers', () => {
  it('has its attempt stopped at stepTimeoutMs and retried: the run goes on', async () => {
    const { store, clock } = await newWorldStore();
    const inner = createStateOnlyContext({ store });
    const signals: AbortSignal[] = [];
    const context: EpisodeContext = {
      ...inner,
      getRelevantContext: (storyId, query, options = {}) => {
        signals.push(options.signal!);
        return signals.length === 1 ? never() : inner.getRelevantContext(storyId, query, options);
      },
    };
    const events: EngineEvent[] = [];
    const engine = createStoryEngine({
      store,
      context,
      generator: createScriptedGenerator(),
      clock,
      stepTimeoutMs: 50,
      retry: NO_WAIT,
      onEvent: (event) => events.push(event),
    });
    const result = await engine.runEpisode(STORY_ID);
    expect(result.outcome).toBe('created');
    // The first attempt was told its time was up, through its signal.
    expect(signals[0]!.aborted).toBe(true);
    expect(signals[0]!.reason).toMatchObject({ code: 'TIMEOUT', isRetryable: true });
    const retries = events.filter((event) => event.type === 'step.retry');
    expect(retries.map((event) => [event.step, (event as { error: StoryloomError }).error.code])).toEqual([
      ['context', 'TIMEOUT'],
    ]);
  });

  it('frees a context manager whose shared check hangs on the embedder: the next attempt checks afresh', async () => {
    const { store, clock } = await newWorldStore();
    const hashing = createHashingEmbedder({ dimensions: 64 });
    let embedCalls = 0;
    const embedder: Embedder = {
      specificationVersion: 'v1',
      provider: hashing.provider,
      modelId: hashing.modelId,
      dimensions: hashing.dimensions,
      maxBatchSize: hashing.maxBatchSize,
      // The first call (the fingerprint's, in the check every call shares) never answers.
      embed: (texts, options) => (embedCalls++ === 0 ? never() : hashing.embed(texts, options)),
    };
    const context = new ContextManager({
      store,
      vectors: createMemoryVectorIndex({ dimensions: 64 }),
      keywords: createMemoryKeywordIndex(),
      embedder,
    });
    const engine = createStoryEngine({
      store,
      context,
      generator: createScriptedGenerator(),
      clock,
      stepTimeoutMs: 50,
      retry: NO_WAIT,
    });
    const first = await engine.runEpisode(STORY_ID);
    expect(first.complete).toBe(true);
    const second = await engine.runEpisode(STORY_ID);
    expect(second.complete).toBe(true);
    // Both scenes reached the index the freed check let through.
    const stats = await context.stats(STORY_ID);
    expect(stats.byType.scene).toBeGreaterThanOrEqual(2);
  });

  it('records a step after the commit that timed out as failed, retryable, with code TIMEOUT', async () => {
    const { store, clock } = await newWorldStore();
    const inner = createStateOnlyContext({ store });
    const context: EpisodeContext = { ...inner, indexScene: () => never() };
    const engine = createStoryEngine({
      store,
      context,
      generator: createScriptedGenerator(),
      clock,
      stepTimeoutMs: 30,
      retry: { ...NO_WAIT, maxRetries: 1 },
    });
    const result = await engine.runEpisode(STORY_ID);
    expect(result.complete).toBe(false);
    const [entry] = (await store.listPublications(STORY_ID, result.scene.id)).filter((e) => e.target === 'index');
    expect(entry).toMatchObject({ status: 'failed', result: { code: 'TIMEOUT', attempts: 2, retryable: true } });
    const error = (() => {
      try {
        assertEpisodeComplete(result);
      } catch (thrown) {
        return thrown;
      }
    })();
    expect(EpisodeIncompleteError.isInstance(error) && error.isRetryable).toBe(true);
  });

  it('refuses a time limit that is not a positive number, or longer than a timer can wait', async () => {
    const { store } = await newWorldStore();
    const thirtyDays = 30 * 24 * 60 * 60 * 1000;
    for (const stepTimeoutMs of [0, -5, Number.NaN, '100' as unknown as number, MAX_TIMER_MS + 1, thirtyDays]) {
      expect(() => createStoryEngine({ store, generator: createScriptedGenerator(), stepTimeoutMs })).toThrow(
        ValidationError,
      );
    }
    for (const stepTimeoutMs of [MAX_TIMER_MS, Number.POSITIVE_INFINITY]) {
      expect(() => createStoryEngine({ store, generator: createScriptedGenerator(), stepTimeoutMs })).not.toThrow();
    }
  });

  it('runs a step that takes a while within the longest time limit a timer can wait', async () => {
    const { store, clock } = await newWorldStore();
    const inner = createMemoryPublisher({ target: 'site' });
    const slow: Publisher = {
      ...inner,
      publish: async (episode, options) => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        return inner.publish(episode, options);
      },
    };
    const engine = createStoryEngine({
      store,
      generator: createScriptedGenerator(),
      publishers: [slow],
      clock,
      stepTimeoutMs: MAX_TIMER_MS,
      retry: NO_WAIT,
    });
    const result = await engine.runEpisode(STORY_ID);
    expect(result.failures).toEqual([]);
  });

  it('skips a cache refresh that never answers at the time limit, without retrying it, telling it through its signal: the episode is complete', async () => {
    const { store, clock } = await newWorldStore();
    let refreshes = 0;
    const signals: AbortSignal[] = [];
    const context: EpisodeContext = {
      ...createStateOnlyContext({ store }),
      refreshCache: (_storyId, _state, options) => {
        refreshes++;
        if (options?.signal) signals.push(options.signal);
        return never();
      },
    };
    const engine = createStoryEngine({
      store,
      context,
      generator: createScriptedGenerator(),
      publishers: [createMemoryPublisher({ target: 'site' })],
      clock,
      stepTimeoutMs: 30,
      retry: { ...NO_WAIT, maxRetries: 2 },
    });
    const first = await engine.runEpisode(STORY_ID);
    expect(first.complete).toBe(true);
    expect(refreshes).toBe(1);
    const entry = (await store.listPublications(STORY_ID, first.scene.id)).find((e) => e.target === 'cache');
    expect(entry?.status).toBe('skipped');
    expect(String(entry?.result.reason)).toContain('took longer than 30 ms');
    // The refresh left behind was told to stop.
    expect(signals.map((signal) => signal.aborted)).toEqual([true]);
    // The next run writes the next scene rather than resume the cache step.
    expect((await engine.runEpisode(STORY_ID)).outcome).toBe('created');
  });

  it('skips a refresh that stops on an abort of its own (the run not aborted), and publishes the episode', async () => {
    const { store, clock } = await newWorldStore();
    const context: EpisodeContext = {
      ...createStateOnlyContext({ store }),
      // A refresh bounded by a signal of its own, which fires: an AbortedError the run did not cause.
      refreshCache: async () => {
        throw new AbortedError('the refresh ran past its own bound');
      },
    };
    const engine = createStoryEngine({
      store,
      context,
      generator: createScriptedGenerator(),
      publishers: [createMemoryPublisher({ target: 'site' })],
      clock,
      retry: NO_WAIT,
    });
    const result = await engine.runEpisode(STORY_ID);
    expect(result.complete).toBe(true);
    const log = await store.listPublications(STORY_ID, result.scene.id);
    expect(log.find((e) => e.target === 'cache')?.status).toBe('skipped');
    expect(log.find((e) => e.target === 'publish:site')?.status).toBe('done');
  });

  it('leaves the cache step unrecorded when the run is aborted during its refresh, so the next run refreshes', async () => {
    const { store, clock } = await newWorldStore();
    const controller = new AbortController();
    let refreshes = 0;
    const context: EpisodeContext = {
      ...createStateOnlyContext({ store }),
      refreshCache: (_storyId, _state, options) => {
        refreshes++;
        // The first refresh answers only when told to stop; the next one at once.
        if (refreshes > 1) return Promise.resolve();
        return new Promise<void>((_, reject) => {
          options?.signal?.addEventListener('abort', () => reject(new AbortedError('refresh stopped')), { once: true });
          controller.abort(new Error('the operator stopped the run'));
        });
      },
    };
    const engine = createStoryEngine({
      store,
      context,
      generator: createScriptedGenerator(),
      publishers: [createMemoryPublisher({ target: 'site' })],
      clock,
      retry: NO_WAIT,
    });
    await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toSatisfy((error: unknown) =>
      AbortedError.isInstance(error),
    );
    const sceneId = (await store.load(STORY_ID)).sceneId!;
    const logged = async () => (await store.listPublications(STORY_ID, sceneId)).find((e) => e.target === 'cache');
    expect(await logged()).toBeUndefined();
    // The next run resumes the episode and refreshes the cache it left.
    const resumed = await engine.runEpisode(STORY_ID);
    expect(resumed.outcome).not.toBe('created');
    expect(refreshes).toBe(2);
    expect((await logged())?.status).toBe('done');
  });

  // A refresh stopped by the run's abort rarely throws a storyloom error: the platform's `signal.throwIfAborted()`
  // throws the signal's reason (a DOMException `AbortError` by default), and a client may report its own error.
  const abortedRefreshErrors: Array<[string, (signal: AbortSignal) => unknown]> = [
    [
      'the DOMException AbortError of signal.throwIfAborted()',
      (signal) => {
        try {
          signal.throwIfAborted();
        } catch (error) {
          return error;
        }
      },
    ],
    ['a client error of its own', () => new Error('socket closed')],
  ];
  for (const [what, errorFor] of abortedRefreshErrors) {
    it(`leaves the cache step unrecorded when the run's abort stops its refresh with ${what}`, async () => {
      const { store, clock } = await newWorldStore();
      const controller = new AbortController();
      let refreshes = 0;
      const thrown: unknown[] = [];
      const context: EpisodeContext = {
        ...createStateOnlyContext({ store }),
        refreshCache: (_storyId, _state, options) => {
          refreshes++;
          if (refreshes > 1) return Promise.resolve();
          return new Promise<void>((_, reject) => {
            const signal = options!.signal!;
            signal.addEventListener(
              'abort',
              () => {
                const error = errorFor(signal);
                thrown.push(error);
                reject(error);
              },
              { once: true },
            );
            // Aborted without a reason: the signal's reason is a DOMException named AbortError.
            controller.abort();
          });
        },
      };
      const engine = createStoryEngine({
        store,
        context,
        generator: createScriptedGenerator(),
        publishers: [createMemoryPublisher({ target: 'site' })],
        clock,
        retry: NO_WAIT,
      });
      await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toSatisfy(
        (error: unknown) => AbortedError.isInstance(error) && error.cause === thrown[0],
      );
      expect(thrown).toHaveLength(1);
      expect(AbortedError.isInstance(thrown[0])).toBe(false);
      const sceneId = (await store.load(STORY_ID)).sceneId!;
      const logged = async () => (await store.listPublications(STORY_ID, sceneId)).find((e) => e.target === 'cache');
      expect(await logged()).toBeUndefined();
      const resumed = await engine.runEpisode(STORY_ID);
      expect(resumed.outcome).toBe('resumed');
      expect(refreshes).toBe(2);
      expect((await logged())?.status).toBe('done');
    });
  }

  it('refuses an imageSkipReason the publication log could not hold, before any episode', async () => {
    const { store } = await newWorldStore();
    for (const imageSkipReason of ['', '  ', 'x'.repeat(1_001), null, 7] as unknown as string[]) {
      expect(() => createStoryEngine({ store, generator: createScriptedGenerator(), imageSkipReason })).toThrow(
        ValidationError,
      );
    }
    const engine = createStoryEngine({
      store,
      generator: createScriptedGenerator(),
      imageSkipReason: 'x'.repeat(1_000),
    });
    expect(engine.steps).toContain('image');
    expect((await engine.runEpisode(STORY_ID)).complete).toBe(true);
  });

  it('refuses an imageAspectRatio no image request may carry, before any episode', async () => {
    const { store } = await newWorldStore();
    for (const imageAspectRatio of ['constructor', '2:1', '', 1] as unknown as '1:1'[]) {
      expect(() => createStoryEngine({ store, generator: createScriptedGenerator(), imageAspectRatio })).toThrow(
        /imageAspectRatio must be one of 1:1, 16:9, 3:2, 4:5, 9:16/,
      );
    }
    expect(() =>
      createStoryEngine({ store, generator: createScriptedGenerator(), imageAspectRatio: '4:5' }),
    ).not.toThrow();
  });

  it('refuses two publishers with one target, and a conflict retry count outside 0 to 100, before any episode', async () => {
    const { store } = await newWorldStore();
    const generator = createScriptedGenerator();
    const twins = [createMemoryPublisher({ target: 'site' }), createMemoryPublisher({ target: 'site' })];
    expect(() => createStoryEngine({ store, generator, publishers: twins })).toThrow('publishers.1.target');
    for (const maxConflictRetries of [-1, 1.5, 101, Number.NaN]) {
      expect(() => createStoryEngine({ store, generator, maxConflictRetries }), String(maxConflictRetries)).toThrow(
        ValidationError,
      );
    }
    expect(() => createStoryEngine({ store, generator, maxConflictRetries: 100 })).not.toThrow();
  });

  it('refuses retry options it cannot honour, before any episode', async () => {
    const { store } = await newWorldStore();
    const bad: Array<[Record<string, number>, string]> = [
      [{ maxRetries: Number.NaN }, 'retry.maxRetries'],
      [{ maxRetries: -1 }, 'retry.maxRetries'],
      [{ jitter: 2 }, 'retry.jitter'],
      [{ initialDelayMs: Number.POSITIVE_INFINITY }, 'retry.initialDelayMs'],
    ];
    for (const [retry, path] of bad) {
      const attempt = () => createStoryEngine({ store, generator: createScriptedGenerator(), retry });
      expect(attempt).toThrow(ValidationError);
      expect(attempt).toThrow(path);
    }
    const engine = createStoryEngine({ store, generator: createScriptedGenerator(), retry: { maxRetries: 0 } });
    expect((await engine.runEpisode(STORY_ID)).complete).toBe(true);
  });
});

/**
 * One episode whose only publisher fails every attempt with `error`: its result, the publisher's log entry, how often
 * the publisher was tried, and the `EpisodeIncompleteError` a scheduled handler would throw.
 */
async function episodeFailingWith(error: () => unknown) {
  const { store, clock } = await newWorldStore();
  const publisher = failingPublisher(error);
  const engine = createStoryEngine({
    store,
    generator: createScriptedGenerator(),
    publishers: [publisher],
    clock,
    retry: NO_WAIT,
  });
  const result = await engine.runEpisode(STORY_ID);
  const [entry] = (await store.listPublications(STORY_ID, result.scene.id)).filter((e) => e.target === 'publish:feed');
  const incomplete = new EpisodeIncompleteError(result.storyId, result.scene.id, result.failures);
  return { result, entry, attempts: publisher.attempts, incomplete };
}

describe('engine: an unfinished episode', () => {
  it('says retries will not help when a step failed in a way no retry cures; the log keeps the cause', async () => {
    const { entry, attempts, incomplete } = await episodeFailingWith(
      () => new ProviderError('the post was refused', { provider: 'feedhost', status: 403 }),
    );
    expect(entry).toMatchObject({
      status: 'failed',
      result: { code: 'PROVIDER', provider: 'feedhost', status: 403, retryable: false },
    });
    expect(attempts).toBe(1);
    expect(incomplete.isRetryable).toBe(false);
  });

  it('stays retryable when retries ran out on an outage, and the log names the outage, not RETRY_EXHAUSTED', async () => {
    const { entry, incomplete } = await episodeFailingWith(
      () => new ProviderError('unavailable', { provider: 'feedhost', status: 503 }),
    );
    expect(entry).toMatchObject({
      status: 'failed',
      result: { code: 'PROVIDER', provider: 'feedhost', status: 503, attempts: 3, retryable: true },
    });
    expect(incomplete.isRetryable).toBe(true);
  });

  it('is not retryable when a step threw an error storyloom does not know (a bug, not an outage)', async () => {
    const { result, incomplete } = await episodeFailingWith(
      () => new TypeError("Cannot read properties of undefined (reading 'id')"),
    );
    expect(result.failures.map((failure) => failure.step)).toEqual(['publish:feed']);
    expect(incomplete.isRetryable).toBe(false);
  });
});
