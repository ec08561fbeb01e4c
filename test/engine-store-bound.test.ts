/**
 * How the engine bounds its calls of the state store: a store whose connection stalls (a call that never settles)
 * fails the run with a retryable `TIMEOUT` after `storeTimeoutMs` instead of holding it forever; the caller's abort
 * ends such a wait at once; and a commit whose answer came too late, but which lands all the same, is neither written
 * a second time nor resolves an influence twice: the next runs pick it up and finish the episode.
 */
import { describe, expect, it, vi } from 'vitest';
import { MAX_TIMER_MS } from '../src/core/abort.js';
import { AbortedError, ValidationError } from '../src/core/errors.js';
import { createStoryEngine, type StoryEngineOptions } from '../src/engine/engine.js';
import { createStateOnlyContext } from '../src/engine/episode-context.js';
import { StoreTimeoutError } from '../src/engine/episode-errors.js';
import { createMemoryPublisher } from '../src/publishing/memory.js';
import type { CommitResult, StoryStateStore } from '../src/state/store.js';
import {
  createScriptedGenerator,
  influencesFor,
  newWorldStore,
  STORY_ID,
  socialPublisher,
} from './fixtures/engine-world.js';

/** A call that never settles, as one over a stalled connection may. */
const never = <T>(): Promise<T> => new Promise<T>(() => {});

/** Retries without waiting, so that the manual clock never has to be moved. */
const NO_WAIT = { initialDelayMs: 0 };

/**
 * `inner`, except that the calls `stalls` picks never settle. `calls` lists every call made through it, by method.
 */
function stallingStore(
  inner: StoryStateStore,
  stalls: (method: string, args: unknown[]) => boolean,
): { store: StoryStateStore; calls: string[] } {
  const calls: string[] = [];
  const store = new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.push(String(property));
        return stalls(String(property), args) ? never() : value.apply(target, args);
      };
    },
  });
  return { store, calls };
}

/**
 * `inner`, except that its first `commitScene` is held back until `land()`: the commit reaches the store only then,
 * long after the engine stopped waiting for it. `landed` is that commit's outcome.
 */
function heldCommitStore(inner: StoryStateStore) {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let held: Promise<CommitResult> | undefined;
  const store = new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      if (property === 'commitScene' && held === undefined) {
        return (...args: Parameters<StoryStateStore['commitScene']>) => {
          held = gate.then(() => inner.commitScene(...args));
          return held;
        };
      }
      return value.bind(target);
    },
  });
  return {
    store,
    /** Lets the held commit land; its outcome. */
    land(): Promise<CommitResult> {
      if (!held) throw new Error('no commit was held');
      open();
      return held;
    },
  };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the run to fail');
}

describe('engine: a state store call that never answers', () => {
  const cases: Array<{
    operation: string;
    stalls: (method: string, args: unknown[]) => boolean;
    key?: string;
    committed: boolean;
  }> = [
    { operation: 'load', stalls: (method) => method === 'load', committed: false },
    { operation: 'commitScene', stalls: (method) => method === 'commitScene', committed: false },
    // A keyed run reads the key's record in the publication log before anything else.
    {
      operation: 'listPublications',
      stalls: (method) => method === 'listPublications',
      key: 'night-1',
      committed: false,
    },
    // The record of the first step after the commit.
    {
      operation: 'recordPublication',
      stalls: (method, args) => method === 'recordPublication' && (args[0] as { target: string }).target === 'index',
      committed: true,
    },
    { operation: 'enqueueInfluence', stalls: (method) => method === 'enqueueInfluence', committed: false },
  ];

  for (const { operation, stalls, key, committed } of cases) {
    it(`fails the run with a retryable TIMEOUT after storeTimeoutMs (${operation}); the next run finishes the episode`, async () => {
      const { store: inner, clock } = await newWorldStore();
      const { store } = stallingStore(inner, stalls);
      const source = {
        specificationVersion: 'v1' as const,
        provider: 'memory',
        pull: async () => influencesFor(1),
        acknowledge: async () => {},
        close: async () => {},
      };
      const options = (over: StoryStateStore): StoryEngineOptions => ({
        store: over,
        context: createStateOnlyContext({ store: inner }),
        generator: createScriptedGenerator(),
        publishers: [createMemoryPublisher({ target: 'site' })],
        influenceSources: [source],
        clock,
        retry: NO_WAIT,
        storeTimeoutMs: 50,
      });
      const runOptions = key === undefined ? {} : { idempotencyKey: key };
      const error = await rejection(createStoryEngine(options(store)).runEpisode(STORY_ID, runOptions));
      expect(StoreTimeoutError.isInstance(error)).toBe(true);
      expect(error).toMatchObject({ code: 'TIMEOUT', isRetryable: true, operation, timeoutMs: 50 });
      expect((await inner.load(STORY_ID)).version).toBe(committed ? 1 : 0);

      const next = await createStoryEngine(options(inner)).runEpisode(STORY_ID, runOptions);
      expect(next.outcome).toBe(committed ? 'resumed' : 'created');
      expect(next.complete).toBe(true);
      const state = await inner.load(STORY_ID);
      expect(state.version).toBe(1);
      expect(state.sceneId).toBe(next.scene.id);
    }, 10_000);
  }

  it('refuses a store time limit that is not a positive number, or longer than a timer can wait', async () => {
    const { store } = await newWorldStore();
    for (const storeTimeoutMs of [0, -5, Number.NaN, '100' as unknown as number, MAX_TIMER_MS + 1]) {
      expect(() => createStoryEngine({ store, generator: createScriptedGenerator(), storeTimeoutMs })).toThrow(
        ValidationError,
      );
    }
    for (const storeTimeoutMs of [1, MAX_TIMER_MS, Number.POSITIVE_INFINITY]) {
      expect(() => createStoryEngine({ store, generator: createScriptedGenerator(), storeTimeoutMs })).not.toThrow();
    }
  });
});

describe('engine: the claim of a post-once publish step whose write timed out and lands later', () => {
  it('is released once it lands (nothing was sent under it), so the next run publishes the scene once', async () => {
    const { store: inner, clock } = await newWorldStore();
    let land!: () => void;
    const gate = new Promise<void>((resolve) => {
      land = resolve;
    });
    let landed: Promise<unknown> | undefined;
    // The claim's write reaches the store only after the engine stopped waiting for it.
    const store = new Proxy(inner, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver);
        if (property !== 'recordPublication') return typeof value === 'function' ? value.bind(target) : value;
        return (entry: Parameters<StoryStateStore['recordPublication']>[0]) => {
          if (entry.target !== 'claim:publish:social:0' || landed) return inner.recordPublication(entry);
          landed = gate.then(() => inner.recordPublication(entry));
          return landed;
        };
      },
    });
    const publisher = socialPublisher();
    const options = (over: StoryStateStore): StoryEngineOptions => ({
      store: over,
      context: createStateOnlyContext({ store: inner }),
      generator: createScriptedGenerator(),
      publishers: [publisher],
      clock,
      retry: NO_WAIT,
      storeTimeoutMs: 50,
    });
    const error = await rejection(createStoryEngine(options(store)).runEpisode(STORY_ID));
    expect(error).toMatchObject({ code: 'TIMEOUT', operation: 'recordPublication' });
    const sceneId = (await inner.load(STORY_ID)).sceneId!;
    land();
    await landed;
    // The release is written once the late claim has landed.
    await vi.waitFor(async () => {
      const targets = (await inner.listPublications(STORY_ID, sceneId)).map((entry) => entry.target);
      expect(targets).toEqual(expect.arrayContaining(['claim:publish:social:0', 'release:publish:social:0']));
    });
    const next = await createStoryEngine(options(inner)).runEpisode(STORY_ID);
    expect(next.failures).toEqual([]);
    expect(publisher.calls).toEqual([sceneId]);
  }, 10_000);
});

/**
 * `inner`, except that the first write of the social step's claim is held back until `land()` and then lands (the
 * default) or fails without writing anything; `failRelease` makes the store refuse the claim's release. `logger`
 * collects what the engine warns of (`warnings`) and what it logs at debug level (`debugs`).
 */
function heldClaimWrite(
  inner: StoryStateStore,
  options: { onWrite?: () => void; landing?: 'lands' | 'fails'; failRelease?: boolean } = {},
) {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let held: Promise<unknown> | undefined;
  const store = new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (property !== 'recordPublication') return typeof value === 'function' ? value.bind(target) : value;
      return (entry: Parameters<StoryStateStore['recordPublication']>[0]) => {
        if (options.failRelease && entry.target === 'release:publish:social:0') {
          return Promise.reject(new Error('the store refused the release'));
        }
        if (entry.target !== 'claim:publish:social:0' || held) return inner.recordPublication(entry);
        options.onWrite?.();
        held = gate.then(() =>
          options.landing === 'fails'
            ? Promise.reject(new Error('connection reset before the write reached the table'))
            : inner.recordPublication(entry),
        );
        return held;
      };
    },
  });
  const warnings: string[] = [];
  const debugs: string[] = [];
  const logger = {
    debug: (message: string) => debugs.push(message),
    info() {},
    warn: (message: string) => warnings.push(message),
    error() {},
  };
  return {
    store,
    logger,
    warnings,
    debugs,
    /** Lets the held write land (or fail); waits for its outcome. */
    async land(): Promise<void> {
      if (!held) throw new Error('no claim write was held');
      open();
      await held.catch(() => {});
    },
  };
}

describe("engine: the caller's abort while a publish claim's write is parked", () => {
  it('settles the run with AbortedError, not after the store time limit; the claim is released once it lands', async () => {
    const { store: inner, clock } = await newWorldStore();
    const controller = new AbortController();
    // The claim's write is parked (a stalled connection) when the caller's deadline fires.
    const held = heldClaimWrite(inner, {
      onWrite: () => setTimeout(() => controller.abort(new Error('deadline ahead of the function limit')), 10),
    });
    const publisher = socialPublisher();
    const options = (over: StoryStateStore): StoryEngineOptions => ({
      store: over,
      context: createStateOnlyContext({ store: inner }),
      generator: createScriptedGenerator(),
      publishers: [publisher],
      clock,
      retry: NO_WAIT,
      // Far past the case's own time limit: a run that waited for it would fail the case.
      storeTimeoutMs: 120_000,
    });
    const error = await rejection(
      createStoryEngine(options(held.store)).runEpisode(STORY_ID, { signal: controller.signal }),
    );
    // The parked write is given half a second past the abort, not the store time limit.
    expect(AbortedError.isInstance(error)).toBe(true);
    expect(publisher.calls).toEqual([]);
    const sceneId = (await inner.load(STORY_ID)).sceneId!;

    await held.land();
    await vi.waitFor(async () => {
      const targets = (await inner.listPublications(STORY_ID, sceneId)).map((entry) => entry.target);
      expect(targets).toEqual(expect.arrayContaining(['claim:publish:social:0', 'release:publish:social:0']));
    });
    const next = await createStoryEngine(options(inner)).runEpisode(STORY_ID);
    expect(next.failures).toEqual([]);
    expect(next.complete).toBe(true);
    expect(publisher.calls).toEqual([sceneId]);
  }, 15_000);
});

describe('engine: a publish claim write that timed out and then failed', () => {
  const run = async (landing: 'lands' | 'fails', failRelease = false) => {
    const { store: inner, clock } = await newWorldStore();
    const held = heldClaimWrite(inner, { landing, failRelease });
    const error = await rejection(
      createStoryEngine({
        store: held.store,
        context: createStateOnlyContext({ store: inner }),
        generator: createScriptedGenerator(),
        publishers: [socialPublisher()],
        clock,
        retry: NO_WAIT,
        storeTimeoutMs: 50,
        logger: held.logger,
      }).runEpisode(STORY_ID),
    );
    expect(error).toMatchObject({ code: 'TIMEOUT', operation: 'recordPublication' });
    await held.land();
    return held;
  };

  it('is not reported as a claim that landed and could not be released: nothing landed', async () => {
    const held = await run('fails');
    // Whatever the engine says of the failed write, it has said it once the write has failed.
    await vi.waitFor(() => expect([...held.debugs, ...held.warnings]).not.toEqual([]));
    expect(held.warnings).toEqual([]);
    expect(held.debugs).toHaveLength(1);
  });

  it('warns when a claim that landed late could not be released', async () => {
    const held = await run('lands', true);
    await vi.waitFor(() =>
      expect(held.warnings).toEqual(['could not release a publish claim that landed after its run gave up on it']),
    );
  });
});

describe("engine: the caller's abort while the run waits for the store", () => {
  it('settles the run with AbortedError at once, however long the store time limit', async () => {
    const { store: inner, clock } = await newWorldStore();
    const controller = new AbortController();
    const { store } = stallingStore(inner, (method) => {
      if (method !== 'commitScene') return false;
      // The run is parked in the commit when its caller gives up.
      setTimeout(() => controller.abort(new Error('the function is about to be stopped')), 0);
      return true;
    });
    const engine = createStoryEngine({
      store,
      context: createStateOnlyContext({ store: inner }),
      generator: createScriptedGenerator(),
      clock,
      storeTimeoutMs: Number.POSITIVE_INFINITY,
    });
    const error = await rejection(engine.runEpisode(STORY_ID, { signal: controller.signal }));
    expect(AbortedError.isInstance(error)).toBe(true);
    expect((await inner.load(STORY_ID)).version).toBe(0);
    // Nothing of the run is left to hold the story: the next run writes the scene.
    const next = await createStoryEngine({
      store: inner,
      generator: createScriptedGenerator(),
      clock,
    }).runEpisode(STORY_ID);
    expect(next.outcome).toBe('created');
  }, 10_000);

  it('settles a run shared by two callers once both abort, while it is parked in a load', async () => {
    const { store: inner, clock } = await newWorldStore();
    let loads = 0;
    let isParked!: () => void;
    const parked = new Promise<void>((resolve) => {
      isParked = resolve;
    });
    const { store } = stallingStore(inner, (method) => {
      if (method !== 'load' || ++loads > 1) return false;
      isParked();
      return true;
    });
    const engine = createStoryEngine({
      store,
      context: createStateOnlyContext({ store: inner }),
      generator: createScriptedGenerator(),
      clock,
      storeTimeoutMs: Number.POSITIVE_INFINITY,
    });
    const first = new AbortController();
    const second = new AbortController();
    const firstRun = engine.runEpisode(STORY_ID, { signal: first.signal });
    const secondRun = engine.runEpisode(STORY_ID, { signal: second.signal });
    await parked;
    first.abort();
    expect(AbortedError.isInstance(await rejection(firstRun))).toBe(true);
    second.abort();
    expect(AbortedError.isInstance(await rejection(secondRun))).toBe(true);
    // The stopped run holds nothing: a new one loads again and writes the scene.
    const next = await engine.runEpisode(STORY_ID);
    expect(next.outcome).toBe('created');
    expect(loads).toBeGreaterThan(1);
  }, 10_000);

  it('settles while the record of a step after the commit is parked; the next run resumes the scene', async () => {
    const { store: inner, clock } = await newWorldStore();
    const controller = new AbortController();
    const { store } = stallingStore(inner, (method, args) => {
      if (method !== 'recordPublication' || (args[0] as { target: string }).target !== 'index') return false;
      setTimeout(() => controller.abort(), 0);
      return true;
    });
    const engine = createStoryEngine({
      store,
      context: createStateOnlyContext({ store: inner }),
      generator: createScriptedGenerator(),
      clock,
      storeTimeoutMs: Number.POSITIVE_INFINITY,
    });
    const error = await rejection(engine.runEpisode(STORY_ID, { signal: controller.signal }));
    expect(AbortedError.isInstance(error)).toBe(true);
    const next = await createStoryEngine({
      store: inner,
      context: createStateOnlyContext({ store: inner }),
      generator: createScriptedGenerator(),
      clock,
    }).runEpisode(STORY_ID);
    expect(next.outcome).toBe('resumed');
    expect(next.complete).toBe(true);
    expect((await inner.load(STORY_ID)).sceneCount).toBe(1);
  }, 10_000);
});

describe('engine: a commit that timed out and lands later', () => {
  /** A world whose story has the influences of episode 1 pending, and an engine factory over a given store. */
  async function world() {
    const { store: inner, clock } = await newWorldStore();
    const influences = influencesFor(1);
    for (const influence of influences) await inner.enqueueInfluence(influence);
    const social = socialPublisher();
    const engineOver = (store: StoryStateStore) =>
      createStoryEngine({
        store,
        context: createStateOnlyContext({ store: inner }),
        generator: createScriptedGenerator(),
        publishers: [createMemoryPublisher({ target: 'site' }), social],
        clock,
        retry: NO_WAIT,
        influencePolicy: { maxWeightPerAuthor: 3 },
        storeTimeoutMs: 50,
      });
    /** Every influence of episode 1 was resolved once, by `sceneId`, and the story holds that one scene. */
    const expectResolvedOnceBy = async (sceneId: string) => {
      const state = await inner.load(STORY_ID);
      expect(state.version).toBe(1);
      expect(state.sceneId).toBe(sceneId);
      expect(state.userInfluenceQueue).toEqual([]);
      const scenes = (await inner.listScenes(STORY_ID)).items;
      expect(scenes.map((scene) => scene.id)).toEqual([sceneId]);
      for (const { id } of influences) {
        const stored = await inner.getInfluence(STORY_ID, id);
        expect(stored?.status === 'applied' || stored?.status === 'rejected').toBe(true);
        expect(stored?.resolvedIn).toBe(sceneId);
      }
    };
    /** The next scene takes none of episode 1's influences again, and the social post went out once per scene. */
    const expectStoryGoesOn = async (sceneId: string) => {
      const after = await engineOver(inner).runEpisode(STORY_ID);
      expect(after.outcome).toBe('created');
      expect(after.scene.index).toBe(1);
      const ids = new Set(influences.map((influence) => influence.id));
      expect(after.scene.influencesApplied.filter((id) => ids.has(id))).toEqual([]);
      expect(social.calls).toEqual([sceneId, after.scene.id]);
    };
    return { inner, engineOver, expectResolvedOnceBy, expectStoryGoesOn };
  }

  const timedOutCommit = async (run: Promise<unknown>) => {
    const error = await rejection(run);
    expect(error).toMatchObject({ code: 'TIMEOUT', isRetryable: true, operation: 'commitScene' });
  };

  it('before the next run: that run finds the scene committed and finishes its steps', async () => {
    const { inner, engineOver, expectResolvedOnceBy, expectStoryGoesOn } = await world();
    const held = heldCommitStore(inner);
    await timedOutCommit(engineOver(held.store).runEpisode(STORY_ID));
    const landed = await held.land();
    expect(landed.created).toBe(true);

    const next = await engineOver(inner).runEpisode(STORY_ID);
    expect(next.outcome).toBe('resumed');
    expect(next.complete).toBe(true);
    expect(next.scene.id).toBe(landed.scene.id);
    await expectResolvedOnceBy(landed.scene.id);
    await expectStoryGoesOn(landed.scene.id);
  }, 10_000);

  it('while the next run writes the same version: its commit writes nothing, and a later run finishes the steps', async () => {
    const { inner, engineOver, expectResolvedOnceBy, expectStoryGoesOn } = await world();
    const held = heldCommitStore(inner);
    await timedOutCommit(engineOver(held.store).runEpisode(STORY_ID));
    // The next run has loaded the story at version 0 and generated; the late commit lands just before its own.
    let landed: CommitResult | undefined;
    const racing = new Proxy(inner, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver);
        if (typeof value !== 'function') return value;
        if (property !== 'commitScene') return value.bind(target);
        return async (...args: Parameters<StoryStateStore['commitScene']>) => {
          landed ??= await held.land();
          return inner.commitScene(...args);
        };
      },
    });
    const next = await engineOver(racing).runEpisode(STORY_ID);
    expect(landed?.created).toBe(true);
    expect(next.outcome).toBe('existing');
    expect(next.scene.id).toBe(landed!.scene.id);
    await expectResolvedOnceBy(landed!.scene.id);

    const finishing = await engineOver(inner).runEpisode(STORY_ID);
    expect(finishing.outcome).toBe('resumed');
    expect(finishing.complete).toBe(true);
    await expectResolvedOnceBy(landed!.scene.id);
    await expectStoryGoesOn(landed!.scene.id);
  }, 10_000);

  it('after the next run committed: the late commit writes nothing', async () => {
    const { inner, engineOver, expectResolvedOnceBy, expectStoryGoesOn } = await world();
    const held = heldCommitStore(inner);
    await timedOutCommit(engineOver(held.store).runEpisode(STORY_ID));

    const next = await engineOver(inner).runEpisode(STORY_ID);
    expect(next.outcome).toBe('created');
    expect(next.complete).toBe(true);
    const late = await held.land().catch((error: unknown) => error);
    // The store keeps the commit that landed first: the late one at the same scene id answers with it.
    expect(late).toMatchObject({ created: false, scene: { id: next.scene.id, text: next.scene.text } });
    await expectResolvedOnceBy(next.scene.id);
    await expectStoryGoesOn(next.scene.id);
  }, 10_000);
});
