/**
 * A publisher that is not idempotent (a post on a social network) is called at most once per scene: the engine claims
 * the step in the publication log before calling it, a retryable failure ("nothing went out") releases the claim, and
 * any other unfinished call leaves the step in doubt, reported and never repeated until someone settles it.
 */
import { describe, expect, it } from 'vitest';
import { AbortedError, ProviderError, ValidationError } from '../src/core/errors.js';
import type { RetryOptions } from '../src/core/retry.js';
import { assertEpisodeComplete, createStoryEngine, type StoryEngine } from '../src/engine/engine.js';
import { createStateOnlyContext } from '../src/engine/episode-context.js';
import { EpisodeIncompleteError } from '../src/engine/episode-errors.js';
import type { EngineEvent } from '../src/engine/events.js';
import type { Publisher, PublishResult } from '../src/publishing/publisher.js';
import type { StoryStateStore } from '../src/state/store.js';
import { createScriptedGenerator, newWorldStore, STORY_ID, socialPublisher } from './fixtures/engine-world.js';

const NO_WAIT = { initialDelayMs: 0 };
/** Longer than any claim holds (a day at most). */
const A_DAY_AND_MORE = 25 * 60 * 60 * 1000;

/** The store, with one `recordPublication` of `target` failing as a crash would stop the process there. */
function crashingOnce(store: StoryStateStore, target: string): StoryStateStore {
  let armed = true;
  return new Proxy(store, {
    get(object, property, receiver) {
      if (property === 'recordPublication') {
        return async (entry: Parameters<StoryStateStore['recordPublication']>[0]) => {
          if (armed && entry.target === target && entry.status === 'done') {
            armed = false;
            throw new Error('the process died here');
          }
          return object.recordPublication(entry);
        };
      }
      const value = Reflect.get(object, property, receiver);
      return typeof value === 'function' ? value.bind(object) : value;
    },
  });
}

interface EngineSetup {
  /** Wraps the world's store (the engine sees the wrapper; `plain` is the store itself). */
  wrap?: (store: StoryStateStore) => StoryStateStore;
  stepTimeoutMs?: number;
  retry?: RetryOptions;
  onEvent?: (event: EngineEvent) => void;
}

/** An engine over a fresh world store with `publishers`, retrying once without waiting unless told otherwise. */
async function engineWith(publishers: Publisher | Publisher[], setup: EngineSetup = {}) {
  const world = await newWorldStore();
  const store = setup.wrap ? setup.wrap(world.store) : world.store;
  const build = () =>
    createStoryEngine({
      store,
      context: createStateOnlyContext({ store }),
      generator: createScriptedGenerator(),
      publishers: Array.isArray(publishers) ? publishers : [publishers],
      clock: world.clock,
      retry: setup.retry ?? { ...NO_WAIT, maxRetries: 1 },
      ...(setup.stepTimeoutMs === undefined ? {} : { stepTimeoutMs: setup.stepTimeoutMs }),
      ...(setup.onEvent ? { onEvent: setup.onEvent } : {}),
    });
  return { engine: build(), store, plain: world.store, clock: world.clock, world, build };
}

const inDoubt = (engine: StoryEngine) =>
  engine.runEpisode(STORY_ID).then((result) => {
    expect(result.complete).toBe(false);
    expect(result.failures.map((failure) => [failure.step, (failure.error as { code?: string }).code])).toEqual([
      ['publish:social', 'PUBLISH_IN_DOUBT'],
    ]);
    const error = (() => {
      try {
        assertEpisodeComplete(result);
      } catch (caught) {
        return caught;
      }
    })();
    expect(EpisodeIncompleteError.isInstance(error)).toBe(true);
    expect((error as EpisodeIncompleteError).isRetryable).toBe(false);
    return result;
  });

describe('engine: a publisher that is not idempotent', () => {
  it('is called once per scene, after its claim is in the log', async () => {
    // What the log holds of the step's claims at the moment the publisher is called.
    const claimsAtCall: string[][] = [];
    const publisher = socialPublisher(async (_call, episode) => {
      const log = await store.listPublications(STORY_ID, episode.scene.id);
      claimsAtCall.push(log.map((entry) => entry.target).filter((target) => target.startsWith('claim:publish:social')));
    });
    const { engine, store } = await engineWith(publisher);
    const first = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(publisher.calls).toHaveLength(2);
    expect(claimsAtCall).toEqual([['claim:publish:social:0'], ['claim:publish:social:0']]);
    const log = await store.listPublications(STORY_ID, first.scene.id);
    expect(log.map((entry) => entry.target).sort()).toEqual([...engine.steps, 'claim:publish:social:0'].sort());
  });

  it('is not called again after a crash between its post and the log: the step is in doubt until settled', async () => {
    const publisher = socialPublisher();
    const { engine, store, world } = await engineWith(publisher, {
      wrap: (plain) => crashingOnce(plain, 'publish:social'),
    });
    await expect(engine.runEpisode(STORY_ID)).rejects.toThrow('the process died here');
    expect(publisher.calls).toHaveLength(1);
    // While the dead run's claim holds, a run leaves the step to it (it may still be publishing), retryably.
    const waiting = await engine.runEpisode(STORY_ID);
    expect(waiting.failures.map((failure) => (failure.error as { code?: string }).code)).toEqual([
      'PUBLISH_IN_PROGRESS',
    ]);
    await expect(engine.resolvePublication(STORY_ID, waiting.scene.id, 'social', 'not-published')).rejects.toThrow(
      'may still be being published',
    );
    await world.clock.advance(A_DAY_AND_MORE);
    const doubted = await inDoubt(engine);
    await inDoubt(engine);
    // Twice in doubt, never called again: the post that went out is not made twice.
    expect(publisher.calls).toHaveLength(1);
    expect((doubted.failures[0]!.error as Error).message).toContain('resolvePublication');

    await engine.resolvePublication(STORY_ID, doubted.scene.id, 'social', 'published', { ids: ['post-1'] });
    const next = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(next.outcome).toBe('created');
    expect(publisher.calls).toEqual([doubted.scene.id, next.scene.id]);
    const settled = (await store.listPublications(STORY_ID, doubted.scene.id)).find(
      (entry) => entry.target === 'publish:social',
    );
    expect(settled).toMatchObject({ status: 'done', result: { settled: 'published', ids: ['post-1'] } });
  });

  it('settles a step whose claim still holds only with force, for a run known to have stopped', async () => {
    const publisher = socialPublisher();
    const { engine, plain } = await engineWith(publisher, { wrap: (store) => crashingOnce(store, 'publish:social') });
    await expect(engine.runEpisode(STORY_ID)).rejects.toThrow('the process died here');
    const scene = (await plain.load(STORY_ID)).sceneId!;
    await expect(engine.resolvePublication(STORY_ID, scene, 'social', 'published')).rejects.toThrow('force: true');
    await engine.resolvePublication(STORY_ID, scene, 'social', 'published', {
      force: true,
      url: 'https://social.example/1',
    });
    expect(assertEpisodeComplete(await engine.runEpisode(STORY_ID)).outcome).toBe('created');
    expect(publisher.calls).toHaveLength(2);
  });

  it('is called once more when the step is settled as not published', async () => {
    // The first call fails in a way that does not say nothing went out.
    const publisher = socialPublisher((call) => {
      if (call === 1) throw new Error('connection reset');
    });
    const { engine, world } = await engineWith(publisher);
    const failed = await engine.runEpisode(STORY_ID);
    expect(failed.complete).toBe(false);
    await world.clock.advance(A_DAY_AND_MORE);
    const doubted = await inDoubt(engine);
    expect(publisher.calls).toHaveLength(1);
    await engine.resolvePublication(STORY_ID, doubted.scene.id, 'social', 'not-published');
    const resumed = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(resumed.outcome).toBe('resumed');
    expect(publisher.calls).toEqual([doubted.scene.id, doubted.scene.id]);
    // Settling a finished step is refused.
    await expect(engine.resolvePublication(STORY_ID, doubted.scene.id, 'social', 'published')).rejects.toThrow(
      ValidationError,
    );
  });

  it('retries a failure that says nothing went out, and a later run calls it again once retries ran out', async () => {
    const unavailable = () =>
      new ProviderError('the service is down', { provider: 'social', status: 503, isRetryable: true });
    const publisher = socialPublisher((call) => {
      if (call <= 2) throw unavailable();
    });
    const { engine } = await engineWith(publisher);
    const first = await engine.runEpisode(STORY_ID);
    // One try and one retry, both refused before anything went out: the claim is released.
    expect(first.complete).toBe(false);
    expect(publisher.calls).toHaveLength(2);
    const second = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(second.outcome).toBe('resumed');
    expect(publisher.calls).toHaveLength(3);
  });

  it('is not retried after a step timeout: the call may have gone out', async () => {
    const publisher = socialPublisher((call) => (call === 1 ? new Promise<void>(() => {}) : undefined));
    const { engine, world } = await engineWith(publisher, { stepTimeoutMs: 30 });
    const first = await engine.runEpisode(STORY_ID);
    expect(first.failures.map((failure) => (failure.error as { code?: string }).code)).toEqual(['TIMEOUT']);
    expect(publisher.calls).toHaveLength(1);
    await world.clock.advance(A_DAY_AND_MORE);
    await inDoubt(engine);
    expect(publisher.calls).toHaveLength(1);
  });

  it('is called by one of two runs that reach the step together', async () => {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const publisher = socialPublisher((call) => (call === 1 ? gate : undefined));
    const { engine, build } = await engineWith(publisher);
    // Another process's engine over the same store (an engine runs one episode of a story at a time).
    const other = build();
    const first = engine.runEpisode(STORY_ID);
    // The first run is inside the publisher; a second run finds the scene's publish step claimed.
    while (publisher.calls.length === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    const second = await other.runEpisode(STORY_ID);
    expect(second.outcome).toBe('resumed');
    // Within the first run's claim: in progress, retryable, for the next run to look at again.
    expect(second.failures.map((failure) => (failure.error as { code?: string }).code)).toEqual([
      'PUBLISH_IN_PROGRESS',
    ]);
    expect(second.failures[0]!.error).toMatchObject({ isRetryable: true });
    open();
    assertEpisodeComplete(await first);
    expect(publisher.calls).toHaveLength(1);
    // Finished by the first run: the next one writes a new scene.
    expect(assertEpisodeComplete(await engine.runEpisode(STORY_ID)).outcome).toBe('created');
    expect(publisher.calls).toHaveLength(2);
  });

  it('settles only what is in doubt, for a publisher the engine has', async () => {
    const publisher = socialPublisher();
    const { engine } = await engineWith(publisher);
    const done = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    await expect(engine.resolvePublication(STORY_ID, done.scene.id, 'nowhere', 'published')).rejects.toThrow(
      'names no publisher of this engine ("nowhere")',
    );
    await expect(
      engine.resolvePublication(STORY_ID, done.scene.id, 'social', 'published', { ids: 'post-1' as never }),
    ).rejects.toThrow(ValidationError);
    await expect(engine.resolvePublication(STORY_ID, done.scene.id, 'social', 'not-published')).rejects.toThrow(
      'already finished',
    );
    const { store } = await newWorldStore();
    const engineFor = (target: string) =>
      createStoryEngine({ store, generator: createScriptedGenerator(), publishers: [{ ...publisher, target }] });
    expect(() => engineFor('x'.repeat(101))).toThrow('of a publisher that is not idempotent must be at most 100');
    expect(engineFor('x'.repeat(100)).steps).toContain(`publish:${'x'.repeat(100)}`);
  });
});

/** The store, calling `after` once the first write of a target starting with `prefix` is recorded; `lose`: that
 * write's answer is then lost (it throws although the write went through). */
function watchingWrites(store: StoryStateStore, prefix: string, after: () => void, lose = false): StoryStateStore {
  let armed = true;
  return new Proxy(store, {
    get(object, property, receiver) {
      if (property === 'recordPublication') {
        return async (entry: Parameters<StoryStateStore['recordPublication']>[0]) => {
          const result = await object.recordPublication(entry);
          if (armed && entry.target.startsWith(prefix)) {
            armed = false;
            after();
            if (lose) throw new Error('socket hang up (the write went through)');
          }
          return result;
        };
      }
      const value = Reflect.get(object, property, receiver);
      return typeof value === 'function' ? value.bind(object) : value;
    },
  });
}

describe('engine: a publisher that is not idempotent, at the edges', () => {
  it('counts the releases of its own step only, when another target starts with its name', async () => {
    const social = socialPublisher((call) => {
      if (call === 1) throw new Error('connection reset after the request was sent');
    });
    const eu = {
      ...socialPublisher((call) => {
        if (call <= 2) throw new ProviderError('down', { provider: 'social', status: 503, isRetryable: true });
      }),
      target: 'social:eu',
    };
    const { engine, clock } = await engineWith([social, eu]);
    const first = await engine.runEpisode(STORY_ID);
    await clock.advance(A_DAY_AND_MORE);
    const second = await engine.runEpisode(STORY_ID);
    // "social:eu" said nothing went out and is called again; "social" may have posted and is not.
    expect(social.calls).toEqual([first.scene.id]);
    expect(eu.calls).toEqual([first.scene.id, first.scene.id, first.scene.id]);
    expect(second.failures.map((failure) => [failure.step, (failure.error as { code?: string }).code])).toEqual([
      ['publish:social', 'PUBLISH_IN_DOUBT'],
    ]);
  });

  it('never calls it again after a timeout, whatever the retry policy says of timeouts', async () => {
    const publisher = socialPublisher(() => new Promise<void>(() => {}));
    // A policy that retries everything.
    const { engine, clock } = await engineWith(publisher, {
      stepTimeoutMs: 30,
      retry: { ...NO_WAIT, maxRetries: 2, shouldRetry: () => true },
    });
    await engine.runEpisode(STORY_ID);
    await clock.advance(A_DAY_AND_MORE);
    await engine.runEpisode(STORY_ID);
    expect(publisher.calls).toHaveLength(1);
  });

  it('leaves the step to the next run when the run is stopped before or between its calls', async () => {
    // Stopped right after the claim is written: nothing was sent.
    const quiet = socialPublisher();
    const controller = new AbortController();
    const { engine } = await engineWith(quiet, {
      wrap: (store) => watchingWrites(store, 'claim:publish:social:', () => controller.abort()),
    });
    await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toThrow();
    expect(quiet.calls).toHaveLength(0);
    assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(quiet.calls).toHaveLength(1);

    // Stopped while waiting to retry a call that said nothing went out (after the call had ended).
    const stopping = new AbortController();
    const refused = socialPublisher((call) => {
      if (call === 1) {
        throw new ProviderError('the service is down', { provider: 'social', status: 503, isRetryable: true });
      }
    });
    const second = await engineWith(refused, {
      onEvent: (event) => {
        if (event.type === 'step.retry' && event.step === 'publish:social') stopping.abort();
      },
    });
    await expect(second.engine.runEpisode(STORY_ID, { signal: stopping.signal })).rejects.toThrow();
    assertEpisodeComplete(await second.engine.runEpisode(STORY_ID));
    expect(refused.calls).toHaveLength(2);
  });

  it('goes on as the claim holder when the answer to its claim write is lost', async () => {
    const publisher = socialPublisher();
    const { engine } = await engineWith(publisher, {
      wrap: (store) => watchingWrites(store, 'claim:publish:social:', () => {}, true),
      retry: NO_WAIT,
    });
    const first = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    const second = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(publisher.calls).toEqual([first.scene.id, second.scene.id]);
  });
});

/**
 * A post-once publisher whose calls `hangs` picks answer their signal as many HTTP clients report a dropped
 * connection: with a retryable provider error, although the request may well have reached the service.
 */
function cutShortPublisher(hangs: (call: number) => boolean, onCall: () => void = () => {}) {
  return socialPublisher((call, _episode, signal) => {
    if (!hangs(call)) return;
    onCall();
    return new Promise<void>((_, reject) => {
      signal?.addEventListener('abort', () =>
        reject(new ProviderError('socket hang up', { provider: 'social', isRetryable: true })),
      );
    });
  });
}

const failureCodes = (result: { failures: Array<{ error?: unknown }> }) =>
  result.failures.map((failure) => (failure.error as { code?: string }).code);

describe('engine: a publisher that is not idempotent, cut short by the engine', () => {
  it('is never called again after the step timeout cut its call short, whatever error the call then reports', async () => {
    const publisher = cutShortPublisher((call) => call === 1);
    const { engine, clock } = await engineWith(publisher, { stepTimeoutMs: 30 });
    const first = await engine.runEpisode(STORY_ID);
    expect(failureCodes(first)).toEqual(['TIMEOUT']);
    await clock.advance(A_DAY_AND_MORE);
    await inDoubt(engine);
    expect(publisher.calls).toHaveLength(1);
  });

  it('is never called again after the run was aborted during its call, whatever error the call then reports', async () => {
    const controller = new AbortController();
    // The request is on the wire when the caller stops the run.
    const publisher = cutShortPublisher(
      (call) => call === 1,
      () => setTimeout(() => controller.abort(), 5),
    );
    const { engine, clock } = await engineWith(publisher);
    await expect(engine.runEpisode(STORY_ID, { signal: controller.signal })).rejects.toThrow(AbortedError);
    await clock.advance(A_DAY_AND_MORE);
    await inDoubt(engine);
    expect(publisher.calls).toHaveLength(1);
  });
});

describe('engine: a publisher that is not idempotent, whose call ended with a definite error', () => {
  const refusedOnce = () =>
    socialPublisher((call) => {
      if (call === 1) throw new ProviderError('Bad Request: duplicate content', { provider: 'social', status: 400 });
    });

  it('is in doubt at once, not in progress, and can be settled without waiting for the claim to lapse', async () => {
    const publisher = refusedOnce();
    const { engine } = await engineWith(publisher);
    const first = await engine.runEpisode(STORY_ID);
    expect(failureCodes(first)).toEqual(['PROVIDER']);
    // Within the claim's lease: its holder's call is over, so nobody is publishing the step.
    await inDoubt(engine);
    await engine.resolvePublication(STORY_ID, first.scene.id, 'social', 'not-published');
    assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    expect(publisher.calls).toEqual([first.scene.id, first.scene.id]);
  });

  it("keeps its holder's error in the log: a run that does not hold the claim writes nothing there", async () => {
    const publisher = refusedOnce();
    const { engine, store, clock } = await engineWith(publisher);
    const first = await engine.runEpisode(STORY_ID);
    const entry = async () =>
      (await store.listPublications(STORY_ID, first.scene.id)).find((e) => e.target === 'publish:social');
    const recorded = await entry();
    expect(recorded).toMatchObject({ status: 'failed', result: { code: 'PROVIDER', status: 400 } });
    const second = await inDoubt(engine);
    // Reported in the result, as a failure of the step…
    expect(second.steps.find((step) => step.step === 'publish:social')).toMatchObject({ status: 'failed' });
    await clock.advance(A_DAY_AND_MORE);
    await inDoubt(engine);
    // …and the log still says what the call that was made answered.
    expect(await entry()).toEqual(recorded);
  });

  it('reads an entry that does not say its call ended (as older versions wrote) as a call that may still be going', async () => {
    const publisher = refusedOnce();
    const { engine, clock } = await engineWith(publisher, {
      wrap: (store) =>
        new Proxy(store, {
          get(object, property, receiver) {
            if (property === 'recordPublication') {
              return (entry: Parameters<StoryStateStore['recordPublication']>[0]) => {
                const { callEndedUnderClaim: _, ...result } = entry.result;
                return object.recordPublication({ ...entry, result });
              };
            }
            const value = Reflect.get(object, property, receiver);
            return typeof value === 'function' ? value.bind(object) : value;
          },
        }),
    });
    const first = await engine.runEpisode(STORY_ID);
    expect(failureCodes(await engine.runEpisode(STORY_ID))).toEqual(['PUBLISH_IN_PROGRESS']);
    await expect(engine.resolvePublication(STORY_ID, first.scene.id, 'social', 'not-published')).rejects.toThrow(
      'may still be being published',
    );
    await clock.advance(A_DAY_AND_MORE);
    await inDoubt(engine);
    expect(publisher.calls).toHaveLength(1);
  });
});

/** What a store accepts of one log entry's result, as JSON. */
const MAX_STORED_RESULT = 16_000;
/** 100 long ids (asset paths, say): about 20,000 characters of JSON together. */
const manyLongIds = Array.from({ length: 100 }, (_, index) => `assets/${'x'.repeat(180)}-${index}.webp`);

describe('engine: what the log keeps of a publish', () => {
  const entryOf = async (store: StoryStateStore, sceneId: string, target: string) =>
    (await store.listPublications(STORY_ID, sceneId)).find((entry) => entry.target === target);

  it('records a post that went out with a large answer as done, with as many ids as fit and the count of the rest', async () => {
    const publisher = {
      ...socialPublisher(),
      async publish(): Promise<PublishResult> {
        return { target: 'social', url: 'https://social.example/1', ids: manyLongIds };
      },
    };
    const { engine, store } = await engineWith(publisher);
    const first = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    const entry = await entryOf(store, first.scene.id, 'publish:social');
    expect(entry?.status).toBe('done');
    const ids = entry?.result.ids as string[];
    expect(ids.length).toBeGreaterThan(0);
    expect(ids).toEqual(manyLongIds.slice(0, ids.length));
    expect(entry?.result.idsLeftOut).toBe(manyLongIds.length - ids.length);
    expect(JSON.stringify(entry?.result).length).toBeLessThanOrEqual(MAX_STORED_RESULT);
    expect(assertEpisodeComplete(await engine.runEpisode(STORY_ID)).outcome).toBe('created');
  });

  it('publishes a scene with an idempotent publisher once, however large its answer', async () => {
    let calls = 0;
    const publisher: Publisher = {
      specificationVersion: 'v1',
      provider: 'assets',
      target: 'site',
      capabilities: { idempotent: true },
      async publish() {
        calls++;
        return { target: 'site', ids: manyLongIds };
      },
    };
    const { engine } = await engineWith(publisher);
    const outcomes: string[] = [];
    for (let run = 0; run < 3; run++) outcomes.push(assertEpisodeComplete(await engine.runEpisode(STORY_ID)).outcome);
    expect(outcomes).toEqual(['created', 'created', 'created']);
    expect(calls).toBe(3);
  });

  it('records whatever a publisher answered: a huge url is clipped, an id too long alone and a non-string are left out', async () => {
    const url = `https://social.example/${'"'.repeat(50_000)}`;
    const publisher = {
      ...socialPublisher(),
      async publish(): Promise<PublishResult> {
        return { target: 'social', url, ids: ['y'.repeat(20_000), 7 as unknown as string] };
      },
    };
    const { engine, store } = await engineWith(publisher);
    const first = assertEpisodeComplete(await engine.runEpisode(STORY_ID));
    const entry = await entryOf(store, first.scene.id, 'publish:social');
    expect(entry).toMatchObject({ status: 'done', result: { ids: [], idsLeftOut: 2 } });
    expect(url.startsWith(String(entry?.result.url).slice(0, -1))).toBe(true);
    expect(JSON.stringify(entry?.result).length).toBeLessThanOrEqual(MAX_STORED_RESULT);
  });

  it('settles a step in doubt as published with as many ids and as much url as were found', async () => {
    const publisher = socialPublisher();
    const { engine, store, world } = await engineWith(publisher, {
      wrap: (plain) => crashingOnce(plain, 'publish:social'),
    });
    await expect(engine.runEpisode(STORY_ID)).rejects.toThrow('the process died here');
    await world.clock.advance(A_DAY_AND_MORE);
    const doubted = await inDoubt(engine);
    await engine.resolvePublication(STORY_ID, doubted.scene.id, 'social', 'published', {
      url: `https://social.example/${'z'.repeat(20_000)}`,
      ids: manyLongIds,
    });
    const entry = await entryOf(store, doubted.scene.id, 'publish:social');
    expect(entry).toMatchObject({ status: 'done', result: { settled: 'published' } });
    const { ids, idsLeftOut } = entry!.result as { ids: string[]; idsLeftOut: number };
    expect(ids.length).toBeGreaterThan(0);
    expect(ids.length + idsLeftOut).toBe(manyLongIds.length);
    expect(assertEpisodeComplete(await engine.runEpisode(STORY_ID)).outcome).toBe('created');
  });
});
