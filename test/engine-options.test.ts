/**
 * The options of the engine as a user writes them: a misspelt option or a retrieval value that every episode would
 * fail on is refused when the engine is built, saying where it is, rather than ignored or left to fail each run; and
 * `null` options of a call read as no options, as `getRelevantContext` reads them.
 */
import { describe, expect, it } from 'vitest';
import { createMemoryInfluenceSource } from '../src/chain/memory.js';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { ValidationError } from '../src/core/errors.js';
import { assertEpisodeComplete, createStoryEngine, type StoryEngineOptions } from '../src/engine/engine.js';
import { createStateOnlyContext } from '../src/engine/episode-context.js';
import { silentLogger } from '../src/engine/events.js';
import { createMemoryPublisher } from '../src/publishing/memory.js';
import {
  createScriptedGenerator,
  createSeededImages,
  newWorldStore,
  STORY_ID,
  socialPublisher,
} from './fixtures/engine-world.js';

/** The `ValidationError` `build` throws (failing the test when it throws none, or something else). */
function refusal(build: () => unknown): ValidationError {
  try {
    build();
  } catch (error) {
    if (ValidationError.isInstance(error)) return error;
    throw error;
  }
  throw new Error('expected a ValidationError, and nothing was thrown');
}

const paths = (error: ValidationError) => error.problems.map((problem) => problem.path);

describe('createStoryEngine: option keys', () => {
  it('refuses a misspelt option, naming it and the option it was likely meant to be', async () => {
    const { store } = await newWorldStore();
    const site = createMemoryPublisher({ target: 'site' });
    const error = refusal(() =>
      createStoryEngine({ store, generator: createScriptedGenerator(), publisher: [site] } as StoryEngineOptions),
    );
    expect(error.problems).toEqual([
      { path: 'publisher', message: expect.stringContaining('did you mean "publishers"?') },
    ]);
    expect(error.message).toContain('publisher');
  });

  it('lists every unknown key, suggests a near one only when there is one, and points retrieval keys to retrieval', async () => {
    const { store } = await newWorldStore();
    const error = refusal(() =>
      createStoryEngine({
        store,
        generator: createScriptedGenerator(),
        stepTimeout: 1_000,
        Clock: undefined,
        colour: 'blue',
        k: 5,
      } as unknown as StoryEngineOptions),
    );
    expect(paths(error)).toEqual(['stepTimeout', 'Clock', 'colour', 'k']);
    const message = (path: string) => error.problems.find((problem) => problem.path === path)!.message;
    expect(message('stepTimeout')).toContain('"stepTimeoutMs"');
    expect(message('Clock')).toContain('"clock"');
    expect(message('colour')).not.toContain('did you mean');
    expect(message('k')).toContain('retrieval');
  });

  it('refuses an unknown key inside retrieval, with its path', async () => {
    const { store } = await newWorldStore();
    const error = refusal(() =>
      createStoryEngine({
        store,
        generator: createScriptedGenerator(),
        retrieval: { topK: 5, tokenbudget: 1_000 },
      } as unknown as StoryEngineOptions),
    );
    expect(paths(error)).toEqual(['retrieval.topK', 'retrieval.tokenbudget']);
    expect(error.problems[1]!.message).toContain('"tokenBudget"');
  });

  it('takes every option it documents, and runs an episode with them', async () => {
    const { store, clock } = await newWorldStore();
    // `Required`: an option added to StoryEngineOptions must be added here, so the list of known keys is checked.
    const everything: Required<StoryEngineOptions> = {
      store,
      generator: createScriptedGenerator(),
      context: createStateOnlyContext({ store }),
      images: createSeededImages(),
      imageSkipReason: 'no pictures',
      publishers: [createMemoryPublisher({ target: 'site' })],
      influenceSources: [createMemoryInfluenceSource()],
      clock,
      logger: silentLogger,
      onEvent: () => {},
      influencePolicy: { maxWeightPerAuthor: 10, quadratic: true },
      retry: { maxRetries: 0 },
      retrieval: { k: 3, tokenBudget: 8_000, povCharacterId: 'mira' },
      maxConflictRetries: 3,
      maxInfluencesPerScene: 100,
      stepTimeoutMs: 60_000,
      storeTimeoutMs: 60_000,
      maxClockSkewMs: 0,
      imageAspectRatio: '16:9',
    };
    const engine = createStoryEngine(everything);
    expect(assertEpisodeComplete(await engine.runEpisode(STORY_ID)).outcome).toBe('created');
    // Options left undefined, as a spread of optional settings writes them, are no options.
    expect(() =>
      createStoryEngine({ store, generator: createScriptedGenerator(), clock: undefined, retrieval: undefined }),
    ).not.toThrow();
  });
});

describe('createStoryEngine: retrieval values', () => {
  it('refuses a k or a token budget every episode would fail on, when it is built', async () => {
    const { store } = await newWorldStore();
    const generator = createScriptedGenerator();
    const context = new ContextManager({
      store,
      vectors: createMemoryVectorIndex({ dimensions: 64 }),
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions: 64 }),
    });
    const refused: Array<[Record<string, unknown>, string]> = [
      [{ k: 0 }, 'retrieval.k'],
      [{ k: 101 }, 'retrieval.k'],
      [{ k: 2.5 }, 'retrieval.k'],
      [{ k: Number.NaN }, 'retrieval.k'],
      [{ k: '5' }, 'retrieval.k'],
      [{ tokenBudget: -1 }, 'retrieval.tokenBudget'],
      [{ tokenBudget: 255 }, 'retrieval.tokenBudget'],
      [{ tokenBudget: 2_000_001 }, 'retrieval.tokenBudget'],
      [{ tokenBudget: Number.POSITIVE_INFINITY }, 'retrieval.tokenBudget'],
      [{ povCharacterId: null }, 'retrieval.povCharacterId'],
      [{ povCharacterId: 7 }, 'retrieval.povCharacterId'],
    ];
    for (const [retrieval, path] of refused) {
      const error = refusal(() => createStoryEngine({ store, generator, context, retrieval } as StoryEngineOptions));
      expect(paths(error), JSON.stringify(retrieval)).toEqual([path]);
    }
    expect(paths(refusal(() => createStoryEngine({ store, generator, context, retrieval: 'k=5' } as never)))).toEqual([
      'retrieval',
    ]);
    for (const retrieval of [{ k: 1, tokenBudget: 256 }, { k: 100, tokenBudget: 2_000_000 }, {}, null]) {
      expect(() => createStoryEngine({ store, generator, context, retrieval } as StoryEngineOptions)).not.toThrow();
    }
    // Another context layer (here the state-only default, which ignores both) has bounds of its own: only whole
    // numbers from 1 are asked for.
    for (const retrieval of [{ k: 200 }, { tokenBudget: 128 }]) {
      expect(() => createStoryEngine({ store, generator, retrieval })).not.toThrow();
    }
    for (const [retrieval, path] of [
      [{ k: 0 }, 'retrieval.k'],
      [{ tokenBudget: 2.5 }, 'retrieval.tokenBudget'],
    ] as const) {
      expect(paths(refusal(() => createStoryEngine({ store, generator, retrieval })))).toEqual([path]);
    }
  });

  it('agrees with getRelevantContext on every k and token budget tried: what one takes, so does the other', async () => {
    const { store } = await newWorldStore();
    const context = new ContextManager({
      store,
      vectors: createMemoryVectorIndex({ dimensions: 64 }),
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions: 64 }),
    });
    const generator = createScriptedGenerator();
    const engineTakes = (retrieval: Record<string, unknown>) => {
      try {
        createStoryEngine({ store, generator, context, retrieval } as StoryEngineOptions);
        return true;
      } catch (error) {
        if (ValidationError.isInstance(error)) return false;
        throw error;
      }
    };
    // Refused for its range, not for what the story needs (a budget too small for this story is a later matter).
    const managerTakes = async (name: string, retrieval: Record<string, unknown>) => {
      try {
        await context.getRelevantContext(STORY_ID, 'Mira keeps the lamp', retrieval);
        return true;
      } catch (error) {
        if (!ValidationError.isInstance(error)) throw error;
        return !error.problems.some((problem) => problem.path === name && /integer from/.test(problem.message));
      }
    };
    const tried: Record<'k' | 'tokenBudget', unknown[]> = {
      k: [-1, 0, 1, 2, 5, 99, 100, 101, 1.5, 1e9, Number.NaN, Number.POSITIVE_INFINITY, '5'],
      tokenBudget: [-1, 0, 255, 256, 257, 8_000, 1_999_999, 2_000_000, 2_000_001, 256.5, Number.NaN, '8000'],
    };
    let taken = 0;
    for (const name of ['k', 'tokenBudget'] as const) {
      for (const value of tried[name]) {
        const retrieval = { [name]: value };
        const engine = engineTakes(retrieval);
        expect(engine, `${name}: ${String(value)}`).toBe(await managerTakes(name, retrieval));
        if (engine) taken++;
      }
    }
    // Both sides took some and refused some: the comparison compared something.
    expect(taken).toBeGreaterThan(4);
    expect(taken).toBeLessThan(tried.k.length + tried.tokenBudget.length - 4);
  });
});

describe('engine calls given null options', () => {
  it('runEpisode reads null as no options, and refuses options that are not an object', async () => {
    const { store } = await newWorldStore();
    const engine = createStoryEngine({ store, generator: createScriptedGenerator() });
    const result = await engine.runEpisode(STORY_ID, null);
    expect(result.outcome).toBe('created');
    expect(result.complete).toBe(true);
    // Falsy ones too: `runEpisode(id, key && { idempotencyKey: key })` with an empty key must not run unkeyed.
    for (const options of ['lighthouse@2026', ['key'], 7, '', false, 0]) {
      await expect(engine.runEpisode(STORY_ID, options as never), JSON.stringify(options)).rejects.toSatisfy(
        (error: unknown) => ValidationError.isInstance(error) && paths(error).join() === 'options',
      );
    }
    // Nothing was written for the refused calls.
    expect((await store.load(STORY_ID)).sceneCount).toBe(1);
  });

  it('runEpisode refuses a misspelt option, which would make the run unkeyed and let a redelivery write twice', async () => {
    const { store } = await newWorldStore();
    const engine = createStoryEngine({ store, generator: createScriptedGenerator() });
    const error = await engine
      .runEpisode(STORY_ID, { idempotencykey: 'lighthouse@2026-11-28T06' } as never)
      .catch((caught: unknown) => caught);
    expect(ValidationError.isInstance(error) && error.problems).toEqual([
      { path: 'options.idempotencykey', message: expect.stringContaining('did you mean "idempotencyKey"?') },
    ]);
    expect((await store.load(STORY_ID)).sceneCount).toBe(0);
    // Spelt right, the same delivery twice writes one scene.
    const first = await engine.runEpisode(STORY_ID, { idempotencyKey: 'lighthouse@2026-11-28T06' });
    const again = await engine.runEpisode(STORY_ID, { idempotencyKey: 'lighthouse@2026-11-28T06', signal: undefined });
    expect([first.outcome, again.outcome]).toEqual(['created', 'existing']);
    expect((await store.load(STORY_ID)).sceneCount).toBe(1);
  });

  it('resolvePublication reads null as no options, and refuses options that are not an object', async () => {
    const { store, clock } = await newWorldStore();
    // The first call fails in a way that does not say nothing went out: the step is left for someone to settle.
    const publisher = socialPublisher((call) => {
      if (call === 1) throw new Error('connection reset');
    });
    const engine = createStoryEngine({
      store,
      generator: createScriptedGenerator(),
      publishers: [publisher],
      clock,
      retry: { initialDelayMs: 0, maxRetries: 0 },
    });
    const failed = await engine.runEpisode(STORY_ID);
    expect(failed.complete).toBe(false);
    for (const options of ['force', ['force']]) {
      await expect(
        engine.resolvePublication(STORY_ID, failed.scene.id, 'social', 'not-published', options as never),
      ).rejects.toThrow(ValidationError);
    }
    await engine.resolvePublication(STORY_ID, failed.scene.id, 'social', 'not-published', null);
    // Settled as not published: the next run calls the publisher for that scene once more.
    const resumed = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(resumed.outcome).toBe('resumed');
    expect(publisher.calls).toEqual([failed.scene.id, failed.scene.id]);
  });
});
