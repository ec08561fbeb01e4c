/**
 * The claim of a publish step of a publisher that is not idempotent, at its edges: a run aborted while the publisher
 * is being called, a claim lost to one its holder released since, and leases read on a clock that is not the
 * holder's. In each, the publisher is called at most once per scene, and a step is reported in doubt (not retryable,
 * someone must look) only when a call may have gone out and nobody is calling any more.
 */
import { describe, expect, it } from 'vitest';
import { AbortedError, ProviderError, ValidationError } from '../src/core/errors.js';
import {
  assertEpisodeComplete,
  createStoryEngine,
  type EpisodeResult,
  type StoryEngineOptions,
} from '../src/engine/engine.js';
import { createStateOnlyContext } from '../src/engine/episode-context.js';
import { EpisodeIncompleteError } from '../src/engine/episode-errors.js';
import type { Publisher } from '../src/publishing/publisher.js';
import type { PublicationEntry, StoryStateStore } from '../src/state/store.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { createScriptedGenerator, newWorldStore, STORY_ID, socialPublisher } from './fixtures/engine-world.js';

const NO_WAIT = { initialDelayMs: 0 };
const MINUTE = 60_000;

/** A promise opened from outside. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

/** An engine over `store` with the scripted generator and the state-only context. */
function engineOver(
  store: StoryStateStore,
  clock: ManualClock,
  publisher: Publisher,
  extra: Partial<StoryEngineOptions> = {},
) {
  return createStoryEngine({
    store,
    context: createStateOnlyContext({ store }),
    generator: createScriptedGenerator(),
    publishers: [publisher],
    clock,
    retry: NO_WAIT,
    ...extra,
  });
}

/** `store`, with `before` awaited before each `recordPublication` it is given. */
function beforeEachWrite(
  store: StoryStateStore,
  before: (entry: Parameters<StoryStateStore['recordPublication']>[0]) => Promise<void> | void,
): StoryStateStore {
  return new Proxy(store, {
    get(object, property, receiver) {
      if (property === 'recordPublication') {
        return async (entry: Parameters<StoryStateStore['recordPublication']>[0]) => {
          await before(entry);
          return object.recordPublication(entry);
        };
      }
      const value = Reflect.get(object, property, receiver);
      return typeof value === 'function' ? value.bind(object) : value;
    },
  });
}

const failureCodes = (result: EpisodeResult) => result.failures.map((f) => (f.error as { code?: string }).code);

const stepEntry = async (store: StoryStateStore, sceneId: string): Promise<PublicationEntry | undefined> =>
  (await store.listPublications(STORY_ID, sceneId)).find((entry) => entry.target === 'publish:social');

/** The result's failures are one PUBLISH_IN_DOUBT of the social step, and the episode is not retryable. */
function expectInDoubt(result: EpisodeResult) {
  expect(result.complete).toBe(false);
  expect(failureCodes(result)).toEqual(['PUBLISH_IN_DOUBT']);
  const incomplete = new EpisodeIncompleteError(STORY_ID, result.scene.id, result.failures);
  expect(incomplete.isRetryable).toBe(false);
}

describe('engine claims: a run aborted while its claim is being written', () => {
  it('releases the claim once it lands (nothing went out), so the next run publishes the scene once', async () => {
    const { store: inner, clock } = await newWorldStore();
    const controller = new AbortController();
    const landing = gate();
    // The claim's write is on its way (a DynamoDB write under way) when the caller's deadline fires; it lands after.
    const store = beforeEachWrite(inner, async (entry) => {
      if (entry.target !== 'claim:publish:social:0') return;
      setTimeout(() => controller.abort(new Error('deadline ahead')), 0);
      setTimeout(landing.open, 20);
      await landing.opened;
    });
    const publisher = socialPublisher();
    await expect(
      engineOver(store, clock, publisher).runEpisode(STORY_ID, { signal: controller.signal }),
    ).rejects.toSatisfy((error: unknown) => AbortedError.isInstance(error));
    const sceneId = (await inner.load(STORY_ID)).sceneId!;
    const targets = (await inner.listPublications(STORY_ID, sceneId)).map((entry) => entry.target);
    expect(targets).toEqual(expect.arrayContaining(['claim:publish:social:0', 'release:publish:social:0']));
    expect(publisher.calls).toEqual([]);
    const next = await engineOver(inner, clock, publisher).runEpisode(STORY_ID);
    expect(failureCodes(next)).toEqual([]);
    expect(publisher.calls).toEqual([sceneId]);
  });
});

describe('engine claims: a run aborted while the publisher is being called', () => {
  // Two ways a publisher honours the abort: an AbortedError, or what an HTTP client says of a dropped connection.
  const answers: Array<[string, () => Error]> = [
    ['an AbortedError', () => new AbortedError('request cancelled')],
    ['a retryable error', () => new ProviderError('socket hang up', { provider: 'social', isRetryable: true })],
  ];
  for (const [what, answer] of answers) {
    it(`is in doubt at once when the call answered the abort with ${what}, and settles without force`, async () => {
      const { store, clock } = await newWorldStore();
      const controller = new AbortController();
      const publisher = socialPublisher((call, _episode, signal) => {
        if (call !== 1) return;
        // The request is on its way when the caller stops the run; the client drops it and reports so.
        return new Promise<void>((_, reject) => {
          signal?.addEventListener('abort', () => reject(answer()), { once: true });
          controller.abort(new Error('operator stop'));
        });
      });
      const engine = engineOver(store, clock, publisher);
      await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toSatisfy((error: unknown) =>
        AbortedError.isInstance(error),
      );
      const sceneId = (await store.load(STORY_ID)).sceneId!;
      // The call is over and the run has settled: the log says so, and the claim is kept (it may have gone out).
      expect(await stepEntry(store, sceneId)).toMatchObject({
        status: 'failed',
        result: { callEndedUnderClaim: 0, code: 'ABORTED' },
      });
      expect((await store.listPublications(STORY_ID, sceneId)).map((entry) => entry.target)).not.toContain(
        'release:publish:social:0',
      );

      // Well within the claim's lease (47 minutes with the defaults), nothing calls the publisher again on its own.
      await clock.advance(10 * MINUTE);
      expectInDoubt(await engine.runEpisode(STORY_ID));
      expectInDoubt(await engine.runEpisode(STORY_ID));
      expect(publisher.calls).toEqual([sceneId]);

      await engine.resolvePublication(STORY_ID, sceneId, 'social', 'not-published');
      const resumed = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
      expect(resumed.outcome).toBe('resumed');
      expect(publisher.calls).toEqual([sceneId, sceneId]);
    });
  }

  it('can be settled as published without force once the aborted run has settled', async () => {
    const { store, clock } = await newWorldStore();
    const controller = new AbortController();
    const publisher = socialPublisher((call) => {
      if (call !== 1) return;
      controller.abort();
      throw new AbortedError('request cancelled');
    });
    const engine = engineOver(store, clock, publisher);
    await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toThrow(AbortedError);
    const sceneId = (await store.load(STORY_ID)).sceneId!;
    await engine.resolvePublication(STORY_ID, sceneId, 'social', 'published', { ids: ['post-1'] });
    const next = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(next.outcome).toBe('created');
    expect(publisher.calls).toEqual([sceneId, next.scene.id]);
    expect(await stepEntry(store, sceneId)).toMatchObject({ status: 'done', result: { settled: 'published' } });
  });

  it('keeps the claim held when the call ignored the abort and was left behind still going at the time limit', async () => {
    const { store, clock } = await newWorldStore();
    const controller = new AbortController();
    // The call never answers, whatever its signal says: it may post at any time.
    const publisher = socialPublisher((call) => {
      if (call !== 1) return;
      controller.abort();
      return new Promise<void>(() => {});
    });
    const engine = engineOver(store, clock, publisher, { stepTimeoutMs: 30 });
    await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toThrow(AbortedError);
    const sceneId = (await store.load(STORY_ID)).sceneId!;
    expect(await stepEntry(store, sceneId)).toBeUndefined();
    const next = await engine.runEpisode(STORY_ID);
    expect(failureCodes(next)).toEqual(['PUBLISH_IN_PROGRESS']);
    await expect(engine.resolvePublication(STORY_ID, sceneId, 'social', 'not-published')).rejects.toThrow(
      'may still be being published',
    );
    expect(publisher.calls).toHaveLength(1);
  });
});

describe('engine claims: a claim write answered with an error', () => {
  it('reads the log and finds the claim another run holds: it is in progress there, and the publisher is called once', async () => {
    const { store: plain, clock } = await newWorldStore();
    const callStarted = gate();
    const callAnswers = gate();
    const publisherA = socialPublisher(async () => {
      callStarted.open();
      await callAnswers.opened;
    });
    // Run B's claim write fails outright (it writes nothing): only the log can say whose claim stands.
    const storeB = beforeEachWrite(plain, (entry) => {
      if (entry.target === 'claim:publish:social:0') throw new Error('connection reset by peer');
    });
    const publisherB = socialPublisher();
    const engineA = engineOver(plain, clock, publisherA);
    const engineB = engineOver(storeB, clock, publisherB);
    const runA = engineA.runEpisode(STORY_ID);
    await callStarted.opened; // A holds generation 0 and is calling
    const resultB = await engineB.runEpisode(STORY_ID);
    expect(resultB.outcome).toBe('resumed');
    expect(resultB.complete).toBe(false);
    expect(failureCodes(resultB)).toEqual(['PUBLISH_IN_PROGRESS']);
    expect(publisherB.calls).toEqual([]);
    callAnswers.open();
    const resultA = assertEpisodeComplete(await runA);
    expect([...publisherA.calls, ...publisherB.calls]).toEqual([resultA.scene.id]);
    expect((await stepEntry(plain, resultA.scene.id))?.status).toBe('done');
  });
});

describe('engine claims: a claim lost to one released since', () => {
  it('claims the next generation and publishes, never reporting the released one in doubt', async () => {
    const { store: plain, clock } = await newWorldStore();
    const heldWrite = gate();
    const reachedWrite = gate();
    // Run B's claim write of generation 0 waits until run A has released that generation.
    const storeB = beforeEachWrite(plain, async (entry) => {
      if (entry.target === 'claim:publish:social:0') {
        reachedWrite.open();
        await heldWrite.opened;
      }
    });
    const callStarted = gate();
    const callAnswers = gate();
    const publisherA = socialPublisher(async () => {
      callStarted.open();
      await callAnswers.opened;
      throw new ProviderError('503: nothing went out', { provider: 'social', status: 503, isRetryable: true });
    });
    const publisherB = socialPublisher();
    const engineA = engineOver(plain, clock, publisherA, { retry: { maxRetries: 0 } });
    const engineB = engineOver(storeB, clock, publisherB, { retry: { maxRetries: 0 } });

    const runA = engineA.runEpisode(STORY_ID);
    await callStarted.opened; // A holds generation 0 and is calling
    const runB = engineB.runEpisode(STORY_ID); // B read generation 0 and is about to claim it
    await reachedWrite.opened;
    callAnswers.open(); // A's call says nothing went out: A releases generation 0
    const resultA = await runA;
    const sceneId = resultA.scene.id;
    expect(await stepEntry(plain, sceneId)).toMatchObject({ status: 'failed', result: { code: 'PROVIDER' } });
    const targets = (await plain.listPublications(STORY_ID, sceneId)).map((entry) => entry.target);
    expect(targets).toContain('release:publish:social:0');
    heldWrite.open();

    const resultB = await runB;
    expect(resultB.failures).toEqual([]);
    expect(resultB.complete).toBe(true);
    expect(publisherB.calls).toEqual([sceneId]);
    const log = await plain.listPublications(STORY_ID, sceneId);
    expect(log.find((entry) => entry.target === 'claim:publish:social:1')).toBeDefined();
    expect((await stepEntry(plain, sceneId))?.status).toBe('done');
  });

  it('reports in progress (retryable), not in doubt, when every generation it tries is released under it', async () => {
    const { store: plain, clock } = await newWorldStore();
    // Before each of this run's claim writes, another run takes that generation, and its call fails saying nothing
    // went out: it writes what the engine writes then, the release and the failure of a call that ended.
    const store = beforeEachWrite(plain, async (entry) => {
      const match = /^claim:publish:social:(\d+)$/.exec(entry.target);
      if (!match) return;
      const generation = Number(match[1]);
      const where = { storyId: entry.storyId, sceneId: entry.sceneId };
      const leaseUntil = new Date(clock.now() + 60 * MINUTE).toISOString();
      await plain.recordPublication({ ...where, target: entry.target, status: 'done', result: { leaseUntil } });
      await plain.recordPublication({
        ...where,
        target: `release:publish:social:${generation}`,
        status: 'done',
        result: { reason: 'nothing went out' },
      });
      await plain.recordPublication({
        ...where,
        target: 'publish:social',
        status: 'failed',
        result: { code: 'PROVIDER', retryable: true, callEndedUnderClaim: generation },
      });
    });
    const publisher = socialPublisher();
    const engine = engineOver(store, clock, publisher);
    const result = await engine.runEpisode(STORY_ID);
    expect(failureCodes(result)).toEqual(['PUBLISH_IN_PROGRESS']);
    expect(result.failures[0]!.error).toMatchObject({ isRetryable: true });
    expect(new EpisodeIncompleteError(STORY_ID, result.scene.id, result.failures).isRetryable).toBe(true);
    expect(publisher.calls).toHaveLength(0);
    // The run tried a few generations, then left the step to the next run.
    const log = await plain.listPublications(STORY_ID, result.scene.id);
    const claims = log.filter((entry) => entry.target.startsWith('claim:publish:social:'));
    expect(claims.length).toBeGreaterThan(1);
    expect(claims.length).toBeLessThan(10);
  });
});

describe('engine claims: leases read on another clock', () => {
  /** Run A (clock A) is inside the publisher; run B runs on `clockB`. */
  async function holderStillCalling(clockBAhead: number, extra: Partial<StoryEngineOptions> = {}) {
    const { store, clock: clockA } = await newWorldStore();
    const clockB = new ManualClock(clockA.now() + clockBAhead);
    const callStarted = gate();
    const callAnswers = gate();
    const publisherA = socialPublisher(async () => {
      callStarted.open();
      await callAnswers.opened;
    });
    const publisherB = socialPublisher();
    // One attempt of at most a minute: the claim's lease is one minute.
    const options = { stepTimeoutMs: MINUTE, retry: { maxRetries: 0 }, ...extra };
    const engineA = engineOver(store, clockA, publisherA, options);
    const engineB = engineOver(store, clockB, publisherB, options);
    const runA = engineA.runEpisode(STORY_ID);
    await callStarted.opened;
    const claimedAt = clockA.now();
    const finishA = async () => {
      callAnswers.open();
      return runA;
    };
    return { store, clockB, engineB, publisherA, publisherB, claimedAt, finishA };
  }

  it('counts a claim as held for the allowed skew past its lease: a clock 5 minutes ahead neither doubts nor settles it', async () => {
    const { engineB, publisherA, publisherB, claimedAt, finishA } = await holderStillCalling(5 * MINUTE);
    const resultB = await engineB.runEpisode(STORY_ID);
    expect(failureCodes(resultB)).toEqual(['PUBLISH_IN_PROGRESS']);
    expect(resultB.failures[0]!.error).toMatchObject({ isRetryable: true });
    // The time it names is the lease (one minute on A's clock) and the default allowance of five minutes.
    const holdsUntil = new Date(claimedAt + MINUTE + 5 * MINUTE).toISOString();
    expect((resultB.failures[0]!.error as Error).message).toContain(`holds until ${holdsUntil}`);
    await expect(engineB.resolvePublication(STORY_ID, resultB.scene.id, 'social', 'not-published')).rejects.toThrow(
      `settle it after ${holdsUntil}`,
    );
    expect(failureCodes(await engineB.runEpisode(STORY_ID))).toEqual(['PUBLISH_IN_PROGRESS']);
    assertEpisodeComplete(await finishA());
    expect([...publisherA.calls, ...publisherB.calls]).toEqual([resultB.scene.id]);
  });

  it('takes maxClockSkewMs as the allowance, and past it reads the claim as lapsed', async () => {
    const world = await holderStillCalling(9 * MINUTE, { maxClockSkewMs: 10 * MINUTE });
    const { engineB, clockB, publisherB, finishA } = world;
    const within = await engineB.runEpisode(STORY_ID);
    expect(failureCodes(within)).toEqual(['PUBLISH_IN_PROGRESS']);
    // Eleven minutes and a bit past the claim on B's clock: lease and allowance have both run out.
    await clockB.advance(2 * MINUTE + 1);
    expectInDoubt(await engineB.runEpisode(STORY_ID));
    expect(publisherB.calls).toHaveLength(0);
    await finishA();
  });

  it('refuses a clock skew allowance that is not a number of ms from 0 to a day', async () => {
    const { store } = await newWorldStore();
    for (const maxClockSkewMs of [-1, Number.NaN, Number.POSITIVE_INFINITY, 24 * 60 * MINUTE + 1, '300000']) {
      expect(() =>
        createStoryEngine({ store, generator: createScriptedGenerator(), maxClockSkewMs: maxClockSkewMs as number }),
      ).toThrow(ValidationError);
    }
    for (const maxClockSkewMs of [0, 30_000, 24 * 60 * MINUTE]) {
      expect(() => createStoryEngine({ store, generator: createScriptedGenerator(), maxClockSkewMs })).not.toThrow();
    }
  });
});
