/**
 * The episode pipeline end to end on the memory adapters: a 30-episode story, concurrency, idempotency keys,
 * continuity errors, failing steps and their resumption, events and aborts.
 */
import { describe, expect, it } from 'vitest';
import { createMemoryInfluenceSource } from '../src/chain/memory.js';
import { AbortedError, ContentFilteredError, ContinuityError, ProviderError, RetryError } from '../src/core/errors.js';
import { assertEpisodeComplete, createStoryEngine, type EpisodeResult } from '../src/engine/engine.js';
import { EpisodeIncompleteError } from '../src/engine/episode-errors.js';
import type { EngineEvent } from '../src/engine/events.js';
import { seedFromSceneId } from '../src/generation/image-prompt.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import type { SceneGenerator } from '../src/generation/scene-generator.js';
import { createMemoryPublisher } from '../src/publishing/memory.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { createMockImageGenerator, createMockSceneGenerator } from '../src/testing/mock-generators.js';
import {
  createScriptedGenerator,
  createSeededImages,
  influencesFor,
  newWorldStore,
  STORY_ID,
} from './fixtures/engine-world.js';
import { captureUnhandledRejections } from './support/unhandled.js';

const newStore = newWorldStore;

/** The scripted generator, held inside `generate` until `open` is called; `entered` resolves once it is there. */
function gatedGenerator() {
  const inner = createScriptedGenerator();
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let arrived!: () => void;
  const entered = new Promise<void>((resolve) => {
    arrived = resolve;
  });
  const gated = {
    calls: 0,
    open,
    entered,
    generator: {
      ...inner,
      async generate(request, options) {
        gated.calls++;
        arrived();
        await gate;
        return inner.generate(request, options);
      },
    } satisfies SceneGenerator,
  };
  return gated;
}

describe('StoryEngine: a 30-episode story', () => {
  it('writes contiguous scenes, resolves every influence with a reason and completes the publication log', async () => {
    const { store, clock } = await newStore();
    const source = createMemoryInfluenceSource();
    const publisher = createMemoryPublisher({ target: 'site' });
    const events: EngineEvent[] = [];
    const engine = createStoryEngine({
      store,
      generator: createProceduralNarrator({ seed: 3 }),
      images: createSeededImages(),
      publishers: [publisher],
      influenceSources: [source],
      clock,
      onEvent: (event) => events.push(event),
    });
    const results: EpisodeResult[] = [];
    for (let episode = 0; episode < 30; episode++) {
      for (const influence of influencesFor(episode)) source.push({ ...influence, storyId: STORY_ID });
      results.push(assertEpisodeComplete(await engine.runEpisode(STORY_ID)));
    }
    expect(results.map((result) => result.outcome)).toEqual(Array(30).fill('created'));
    const scenes = (await store.listScenes(STORY_ID, { limit: 100 })).items;
    expect(scenes.map((scene) => scene.index)).toEqual([...Array(30).keys()]);
    expect(scenes.map((scene) => scene.stateVersion)).toEqual([...Array(30).keys()].map((index) => index + 1));
    expect(new Set(scenes.map((scene) => scene.id)).size).toBe(30);
    expect(await store.pendingInfluences(STORY_ID)).toEqual([]);
    const applied = scenes.flatMap((scene) => scene.influencesApplied);
    expect(new Set(applied).size).toBe(applied.length);
    for (let episode = 0; episode < 30; episode++) {
      for (const { id } of influencesFor(episode)) {
        const influence = await store.getInfluence(STORY_ID, id);
        expect(['applied', 'rejected']).toContain(influence?.status);
        expect(influence?.resolvedIn).toBe(scenes[episode]!.id);
        if (influence?.status === 'rejected') expect(influence.reason?.length).toBeGreaterThan(0);
        if (influence?.status === 'applied') expect(scenes[episode]!.influencesApplied).toContain(id);
      }
      // The losing choice "light the lamp" (2.5 < 3 from alice+bob at even episodes) loses with a stated reason.
    }
    for (const scene of scenes) {
      const log = await store.listPublications(STORY_ID, scene.id);
      expect(log.map((entry) => `${entry.target}:${entry.status}`).sort()).toEqual([
        'image:done',
        'index:done',
        'publish:site:done',
      ]);
      const image = log.find((entry) => entry.target === 'image')!;
      expect(image.result).toMatchObject({
        mediaType: 'image/svg+xml',
        sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      });
    }
    expect(publisher.publications.size).toBe(30);
    // Every step has a start and an end event.
    const starts = events.filter((event) => event.type === 'step.start').length;
    const ends = events.filter((event) => event.type === 'step.end').length;
    expect(starts).toBe(ends);
    expect(events.filter((event) => event.type === 'episode.end')).toHaveLength(30);
  });

  it('applies every vote of the winning choice, rejects the losers with the winner named', async () => {
    const { store, clock } = await newStore();
    for (const influence of influencesFor(0)) await store.enqueueInfluence(influence);
    const engine = createStoryEngine({ store, generator: createScriptedGenerator(), clock });
    const result = await engine.runEpisode(STORY_ID);
    // alice 2 + bob 1 for "open the door" (3) against carol 2.5 + dave's tip 3 for "light the lamp" (5.5).
    expect(result.influences?.applied.sort()).toEqual(['e0-s2', 'e0-t1', 'e0-v3']);
    const lost = result.influences?.rejected.find((entry) => entry.id === 'e0-v1');
    expect(lost?.reason).toMatch(/Lost the vote to "Light the lamp"/);
    expect(result.influences?.rejected.find((entry) => entry.id === 'e0-s1')?.reason).toBe(
      'It does not belong in this story.',
    );
  });

  it('quotes hostile audience text as data in the prompt', async () => {
    const { store, clock } = await newStore();
    for (const influence of influencesFor(1)) await store.enqueueInfluence(influence);
    const generator = createScriptedGenerator();
    const engine = createStoryEngine({ store, generator, clock });
    await engine.runEpisode(STORY_ID);
    const dynamic = generator.calls[0]!.prompt.dynamic;
    const audience = dynamic.slice(dynamic.indexOf('<audience_input>'), dynamic.indexOf('</audience_input>'));
    // The hostile text cannot close the block, open a code fence or start a line of its own.
    expect(audience).not.toContain('</audience_input');
    expect(audience).not.toContain('```');
    expect(audience).not.toMatch(/\nSystem:/);
    expect(dynamic.match(/<\/audience_input>/g)).toHaveLength(1);
    expect(audience).toContain('ignore the rules');
  });
});

describe('StoryEngine: concurrency and idempotency', () => {
  it('20 concurrent runs on one story (20 engines, one store) yield exactly one new scene', async () => {
    const { store, clock } = await newStore();
    const publisher = createMemoryPublisher({ target: 'site' });
    const generator = createScriptedGenerator();
    const engines = Array.from({ length: 20 }, () =>
      createStoryEngine({ store, generator, publishers: [publisher], clock }),
    );
    const results = await Promise.all(engines.map((engine) => engine.runEpisode(STORY_ID)));
    const state = await store.load(STORY_ID);
    expect(state.sceneCount).toBe(1);
    expect(new Set(results.map((result) => result.scene.id))).toEqual(new Set([state.sceneId]));
    expect(results.filter((result) => result.outcome === 'created')).toHaveLength(1);
    expect(publisher.publications.size).toBe(1);
  });

  it('20 concurrent calls on one engine share one run', async () => {
    const { store, clock } = await newStore();
    const generator = createScriptedGenerator();
    const engine = createStoryEngine({ store, generator, clock });
    const results = await Promise.all(Array.from({ length: 20 }, () => engine.runEpisode(STORY_ID)));
    expect(new Set(results.map((result) => result.scene.id)).size).toBe(1);
    expect(generator.calls).toHaveLength(1);
    expect((await store.load(STORY_ID)).sceneCount).toBe(1);
  });

  it("fails no caller that shares a run for another caller's abort: the run goes on for it", async () => {
    const { store, clock } = await newStore();
    const gated = gatedGenerator();
    const engine = createStoryEngine({ store, generator: gated.generator, clock });
    const stopping = new AbortController();
    const first = engine.runEpisode(STORY_ID, { signal: stopping.signal });
    const second = engine.runEpisode(STORY_ID);
    await gated.entered;
    stopping.abort();
    gated.open();
    await expect(first).rejects.toThrow(AbortedError);
    // The second caller never asked to stop: the run went on for it.
    expect((await second).outcome).toBe('created');
    expect(gated.calls).toBe(1);
  });

  it("rejects a caller that joined another's run as soon as it aborts, and the run goes on for the first", async () => {
    const { store, clock } = await newStore();
    const gated = gatedGenerator();
    const engine = createStoryEngine({ store, generator: gated.generator, clock });
    const first = engine.runEpisode(STORY_ID);
    const leaving = new AbortController();
    const second = engine.runEpisode(STORY_ID, { signal: leaving.signal });
    const settled = second.then(
      () => 'resolved',
      (error: unknown) => (AbortedError.isInstance(error) ? 'aborted' : 'failed otherwise'),
    );
    await gated.entered;
    leaving.abort();
    // Settled while the run is still inside the generator.
    await new Promise((resolve) => setImmediate(resolve));
    expect(await Promise.race([settled, 'still waiting'])).toBe('aborted');
    gated.open();
    expect((await first).outcome).toBe('created');
    expect((await store.load(STORY_ID)).sceneCount).toBe(1);
  });

  it('stops a run every caller aborted, and a caller that comes after starts a run of its own', async () => {
    const { store, clock } = await newStore();
    const gated = gatedGenerator();
    const engine = createStoryEngine({ store, generator: gated.generator, clock });
    const callers = [new AbortController(), new AbortController()];
    const runs = callers.map((caller) => engine.runEpisode(STORY_ID, { signal: caller.signal }));
    await gated.entered;
    for (const caller of callers) caller.abort();
    const later = engine.runEpisode(STORY_ID);
    gated.open();
    for (const run of runs) await expect(run).rejects.toThrow(AbortedError);
    expect((await later).outcome).toBe('created');
    // The aborted run stopped before its commit; the later caller's run wrote the one scene.
    expect((await store.load(STORY_ID)).sceneCount).toBe(1);
    expect(gated.calls).toBe(2);
  });

  it('the same idempotency key twice gives one scene; a different key gives another', async () => {
    const { store, clock } = await newStore();
    const engine = createStoryEngine({ store, generator: createScriptedGenerator(), clock });
    const first = await engine.runEpisode(STORY_ID, { idempotencyKey: 'tale@2026-01-01T00:00Z' });
    const again = await engine.runEpisode(STORY_ID, { idempotencyKey: 'tale@2026-01-01T00:00Z' });
    expect(first.outcome).toBe('created');
    expect(again.outcome).toBe('existing');
    expect(again.scene).toEqual(first.scene);
    const other = await engine.runEpisode(STORY_ID, { idempotencyKey: 'tale@2026-01-02T00:00Z' });
    expect(other.outcome).toBe('created');
    expect(other.scene.index).toBe(1);
    // Still the first scene for the first key, even now that it is no longer the last.
    expect((await engine.runEpisode(STORY_ID, { idempotencyKey: 'tale@2026-01-01T00:00Z' })).scene.id).toBe(
      first.scene.id,
    );
    expect((await store.load(STORY_ID)).sceneCount).toBe(2);
  });

  it('an unkeyed run that loses the commit race to a keyed run reports that scene and writes none of its own', async () => {
    const { store, clock } = await newStore();
    const keyed = createStoryEngine({ store, generator: createScriptedGenerator(), clock });
    let keyedResult: EpisodeResult | undefined;
    // Just before the unkeyed run commits, a keyed run writes a whole episode at the same version.
    const racing = new Proxy(store, {
      get(target, property, receiver) {
        if (property === 'commitScene') {
          return async (...args: Parameters<typeof store.commitScene>) => {
            keyedResult ??= await keyed.runEpisode(STORY_ID, { idempotencyKey: 'first' });
            return target.commitScene(...args);
          };
        }
        const value = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const generator = createScriptedGenerator();
    const unkeyed = createStoryEngine({ store: racing, generator, clock });
    const result = await unkeyed.runEpisode(STORY_ID);
    expect(keyedResult?.outcome).toBe('created');
    expect(result.outcome).toBe('existing');
    expect(result.scene.id).toBe(keyedResult?.scene.id);
    expect(generator.calls).toHaveLength(1);
    expect((await store.load(STORY_ID)).sceneCount).toBe(1);
  });

  it('a keyed run that first finishes the unfinished scene before it still writes its own', async () => {
    const { store, clock } = await newStore();
    const flaky = createMemoryPublisher({ target: 'social' });
    let down = true;
    const engine = createStoryEngine({
      store,
      generator: createScriptedGenerator(),
      publishers: [
        {
          ...flaky,
          publish: (episode, options) => (down ? Promise.reject(new Error('503')) : flaky.publish(episode, options)),
        },
      ],
      clock,
      retry: { maxRetries: 0 },
    });
    const first = await engine.runEpisode(STORY_ID, { idempotencyKey: 'a' });
    expect(first.outcome).toBe('created');
    expect(first.complete).toBe(false);
    down = false;
    const second = await engine.runEpisode(STORY_ID, { idempotencyKey: 'b' });
    expect(second.outcome).toBe('created');
    expect(second.scene.id).not.toBe(first.scene.id);
    expect(second.scene.index).toBe(1);
    expect(second.complete).toBe(true);
    // Both scenes went out, the first before the second.
    expect([...flaky.publications.values()].map((publication) => publication.scene.id)).toEqual([
      first.scene.id,
      second.scene.id,
    ]);
    expect((await store.load(STORY_ID)).sceneCount).toBe(2);
  });

  it('concurrent runs with two different keys write two scenes', async () => {
    const { store, clock } = await newStore();
    const generator = createScriptedGenerator();
    const a = createStoryEngine({ store, generator, clock });
    const b = createStoryEngine({ store, generator, clock });
    const results = await Promise.all([
      a.runEpisode(STORY_ID, { idempotencyKey: 'k1' }),
      b.runEpisode(STORY_ID, { idempotencyKey: 'k2' }),
      a.runEpisode(STORY_ID, { idempotencyKey: 'k1' }),
      b.runEpisode(STORY_ID, { idempotencyKey: 'k2' }),
    ]);
    expect((await store.load(STORY_ID)).sceneCount).toBe(2);
    expect(new Set(results.map((result) => result.scene.id)).size).toBe(2);
  });
});

describe('StoryEngine: failures', () => {
  it('a continuity error is typed and commits nothing', async () => {
    const { store, clock } = await newStore();
    const generator = createMockSceneGenerator({
      respond: () => ({ scene: { title: 'Ghost', text: 'A stranger speaks.', characters: ['nobody'] }, delta: {} }),
    });
    const engine = createStoryEngine({ store, generator, clock });
    const error = await engine.runEpisode(STORY_ID).catch((caught: unknown) => caught);
    expect(ContinuityError.isInstance(error)).toBe(true);
    expect((error as ContinuityError).issues.map((issue) => issue.code)).toContain('UNKNOWN_CHARACTER');
    expect((await store.load(STORY_ID)).sceneCount).toBe(0);
  });

  it('reports a continuity error to onEvent as the failed step and a failed episode, never as a success', async () => {
    const { store, clock } = await newStore();
    const generator = createMockSceneGenerator({
      respond: () => ({ scene: { title: 'Ghost', text: 'A stranger speaks.', characters: ['nobody'] }, delta: {} }),
    });
    const events: EngineEvent[] = [];
    const engine = createStoryEngine({ store, generator, clock, onEvent: (event) => events.push(event) });
    const error = await engine.runEpisode(STORY_ID).catch((caught: unknown) => caught);
    const ends = events.flatMap((event) => (event.type === 'step.end' ? [`${event.step}:${event.status}`] : []));
    expect(ends).toContain('continuity:failed');
    expect(ends).not.toContain('continuity:done');
    expect(ends).not.toContain('commit:done');
    expect(events.filter((event) => event.type === 'episode.end')).toEqual([]);
    const failed = events.filter((event) => event.type === 'episode.error');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ storyId: STORY_ID, error });
  });

  it('commits nothing when the run is aborted while the generator, which ignores its signal, is writing', async () => {
    const { store, clock } = await newStore();
    const controller = new AbortController();
    const scripted = createScriptedGenerator();
    const generator: SceneGenerator = {
      ...scripted,
      async generate(request) {
        controller.abort();
        // Answers all the same, as a generator that never looks at its signal does.
        return scripted.generate(request);
      },
    };
    const publisher = createMemoryPublisher({ target: 'site' });
    const engine = createStoryEngine({ store, generator, clock, publishers: [publisher] });
    await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toSatisfy(AbortedError.isInstance);
    expect((await store.load(STORY_ID)).sceneCount).toBe(0);
    expect(publisher.publications.size).toBe(0);
  });

  it('publishes without a picture when the image is refused by a content filter, at once or after its own retries', async () => {
    const filtered = () => new ContentFilteredError('the prompt was filtered', { provider: 'test' });
    const refusals: Array<[string, () => Error]> = [
      ['at once', filtered],
      [
        // As an image generator that retries on its own (Bedrock's) reports a filter its last attempt met.
        'after its own retries',
        () =>
          new RetryError('Failed after 2 attempts with a non-retryable error', {
            errors: [new ProviderError('overloaded', { provider: 'test', status: 529 }), filtered()],
            reason: 'errorNotRetryable',
          }),
      ],
    ];
    for (const [when, refusal] of refusals) {
      const { store, clock } = await newStore();
      const publisher = createMemoryPublisher({ target: 'site' });
      const images = createMockImageGenerator({
        respond: () => {
          throw refusal();
        },
      });
      const engine = createStoryEngine({
        store,
        generator: createScriptedGenerator(),
        images,
        publishers: [publisher],
        clock,
      });
      const result = await engine.runEpisode(STORY_ID);
      expect(result.complete, when).toBe(true);
      const log = await store.listPublications(STORY_ID, result.scene.id);
      expect(
        log.find((entry) => entry.target === 'image'),
        when,
      ).toMatchObject({
        status: 'skipped',
        result: { reason: 'content filtered' },
      });
      expect([...publisher.publications.values()].map((publication) => publication.imageBytes)).toEqual([0]);
    }
  });

  it('a failing publisher is recorded failed, reported, and resumed by the next run without a new scene', async () => {
    const { store, clock } = await newStore();
    const good = createMemoryPublisher({ target: 'site' });
    let down = true;
    const flaky = createMemoryPublisher({ target: 'social' });
    const engine = createStoryEngine({
      store,
      generator: createScriptedGenerator(),
      images: createSeededImages(),
      publishers: [
        good,
        {
          ...flaky,
          publish: (episode, options) => (down ? Promise.reject(new Error('503')) : flaky.publish(episode, options)),
        },
      ],
      clock,
    });
    const first = await engine.runEpisode(STORY_ID);
    expect(first.complete).toBe(false);
    expect(first.failures.map((failure) => failure.step)).toEqual(['publish:social']);
    expect(() => assertEpisodeComplete(first)).toThrow(EpisodeIncompleteError);
    const log = await store.listPublications(STORY_ID, first.scene.id);
    expect(log.find((entry) => entry.target === 'publish:social')?.status).toBe('failed');
    down = false;
    const second = await engine.runEpisode(STORY_ID);
    expect(second.outcome).toBe('resumed');
    expect(second.scene.id).toBe(first.scene.id);
    expect(second.steps.map((step) => step.step)).toEqual(['publish:social']);
    expect(second.complete).toBe(true);
    expect(good.publications.size).toBe(1);
    expect([...good.publications.values()][0]!.requests).toBe(1);
    expect(flaky.publications.size).toBe(1);
  });

  it('a picture step logged as skipped is finished: a new engine writes the next scene instead of resuming', async () => {
    const { store, clock } = await newStore();
    const publisher = createMemoryPublisher({ target: 'site' });
    const options = {
      store,
      generator: createScriptedGenerator(),
      publishers: [publisher],
      clock,
      imageSkipReason: 'no images',
    };
    const first = assertEpisodeComplete(await createStoryEngine(options).runEpisode(STORY_ID));
    const log = await store.listPublications(STORY_ID, first.scene.id);
    expect(log.find((entry) => entry.target === 'image')?.status).toBe('skipped');
    // Another process: an engine that never saw the first scene's steps finish.
    const next = await createStoryEngine(options).runEpisode(STORY_ID);
    expect(next.outcome).toBe('created');
    expect(next.scene.id).not.toBe(first.scene.id);
    expect(next.steps.filter((step) => step.sceneId === first.scene.id)).toEqual([]);
    expect(publisher.publications.size).toBe(2);
  });

  it('a failed image blocks publishing until it is drawn; resumed publishing gets the same picture', async () => {
    const { store, clock } = await newStore();
    const publisher = createMemoryPublisher({ target: 'site' });
    const seeded = createSeededImages();
    let failImage = true;
    const images = createMockImageGenerator({
      respond: (request) => {
        if (failImage) throw new ProviderError('down', { provider: 'test', status: 400 });
        return seeded.generate(request);
      },
    });
    const engine = createStoryEngine({
      store,
      generator: createScriptedGenerator(),
      images,
      publishers: [publisher],
      clock,
    });
    const first = await engine.runEpisode(STORY_ID);
    expect(first.failures.map((failure) => `${failure.step}:${failure.status}`)).toEqual([
      'image:failed',
      'publish:site:blocked',
    ]);
    expect(publisher.publications.size).toBe(0);
    failImage = false;
    const second = await engine.runEpisode(STORY_ID);
    expect(second.complete).toBe(true);
    expect([...publisher.publications.values()][0]!.imageBytes).toBeGreaterThan(0);
  });

  it('a logged picture that cannot be drawn again the same says why: another seed, or a generator that ignores seeds', async () => {
    for (const logged of ['another seed', 'the same seed'] as const) {
      const { store, clock } = await newStore();
      const publisher = createMemoryPublisher({ target: 'site' });
      const seeded = createSeededImages();
      let failImage = true;
      const warnings: Array<{ message: string; fields: unknown }> = [];
      const engine = createStoryEngine({
        store,
        generator: createScriptedGenerator(),
        images: createMockImageGenerator({
          respond: (request) => {
            if (failImage) throw new ProviderError('down', { provider: 'test', status: 400 });
            return seeded.generate(request);
          },
        }),
        publishers: [publisher],
        clock,
        logger: { info() {}, warn: (message, fields) => warnings.push({ message, fields }), error() {} },
      });
      const first = await engine.runEpisode(STORY_ID);
      expect(first.complete).toBe(false);
      // The picture as an earlier run logged it, drawn from a request this engine no longer makes.
      const seed = seedFromSceneId(first.scene.id);
      await store.recordPublication({
        storyId: STORY_ID,
        sceneId: first.scene.id,
        target: 'image',
        status: 'done',
        result: { sha256: 'f'.repeat(64), seed: logged === 'the same seed' ? seed : seed ^ 1 },
      });
      failImage = false;
      expect((await engine.runEpisode(STORY_ID)).complete).toBe(true);
      const reasons = warnings.map((warning) => warning.message).filter((message) => message.includes('drawn again'));
      expect(reasons, logged).toEqual([
        logged === 'the same seed'
          ? 'the picture drawn again differs from the one logged: the image generator ignores seeds'
          : 'the picture drawn again differs from the one logged: it was first drawn with another seed (by an older storyloom)',
      ]);
    }
  });

  it('retries a retryable generator error and honours the abort signal between steps', async () => {
    const { store } = await newStore();
    const clock = new ManualClock();
    let calls = 0;
    const scripted = createScriptedGenerator();
    const generator = {
      ...scripted,
      generate: async (...args: Parameters<typeof scripted.generate>) => {
        if (calls++ === 0) throw new ProviderError('overloaded', { provider: 'test', status: 529 });
        return scripted.generate(...args);
      },
    };
    const retries: EngineEvent[] = [];
    const engine = createStoryEngine({
      store,
      generator,
      clock,
      onEvent: (event) => event.type === 'step.retry' && retries.push(event),
    });
    const running = engine.runEpisode(STORY_ID);
    // Let the run reach its backoff sleep, then move the manual clock past it.
    while (clock.pendingSleeps === 0) await new Promise((resolve) => setImmediate(resolve));
    await clock.runAll();
    expect((await running).outcome).toBe('created');
    expect(retries).toHaveLength(1);
    const controller = new AbortController();
    controller.abort();
    await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toSatisfy(AbortedError.isInstance);
    expect((await store.load(STORY_ID)).sceneCount).toBe(1);
  });

  it('an onEvent listener that throws does not break the episode', async () => {
    const { store, clock } = await newStore();
    const warnings: string[] = [];
    const engine = createStoryEngine({
      store,
      generator: createScriptedGenerator(),
      clock,
      onEvent: () => {
        throw new Error('broken progress bar');
      },
      logger: { info() {}, warn: (message) => warnings.push(message), error() {} },
    });
    expect((await engine.runEpisode(STORY_ID)).outcome).toBe('created');
    expect(warnings).toContain('onEvent listener threw');
  });

  it('an async onEvent listener that rejects is logged, and leaves no unhandled rejection to end the process', async () => {
    const warnings: string[] = [];
    const { store, clock } = await newStore();
    const engine = createStoryEngine({
      store,
      generator: createScriptedGenerator(),
      clock,
      onEvent: async () => {
        throw new Error('metrics sink down');
      },
      logger: { info() {}, warn: (message) => warnings.push(message), error() {} },
    });
    const { result, unhandled } = await captureUnhandledRejections(() => engine.runEpisode(STORY_ID), {
      settleMs: 50,
    });
    expect(result.outcome).toBe('created');
    expect(unhandled).toEqual([]);
    expect(warnings).toContain('onEvent listener threw');
  });
});
