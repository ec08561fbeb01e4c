/**
 * The conformance suites of `storyloom/testing` catch broken adapters. Each mutant below wraps a shipped in-memory
 * adapter and breaks one clause of its port's contract. Its test shows two things:
 *
 * 1. the mutant really breaks the clause (a direct probe of the adapter);
 * 2. the whole suite, run through its own `SuiteTestApi` with a collecting `describe`/`it`, fails at least one case
 *    for the mutant that the unbroken adapter passes under the same harness.
 *
 * The baselines check the harness itself: every unbroken adapter passes every case.
 */
import { describe, expect, it } from 'vitest';
import type { CacheDriver } from '../src/context/cache-driver.js';
import type { KeywordDocument, KeywordIndex, KeywordMatch } from '../src/context/keyword-index.js';
import { createMemoryCacheDriver } from '../src/context/memory-cache.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import type { VectorIndex, VectorMatch } from '../src/context/vector-index.js';
import { ConflictError, throwIfAborted } from '../src/core/errors.js';
import { createMemoryPublisher } from '../src/publishing/memory.js';
import type { Episode, Publisher, PublishResult } from '../src/publishing/publisher.js';
import { validateEpisode } from '../src/publishing/publisher.js';
import type { PreparedCommit } from '../src/state/base-store.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { StoryState, UserInfluence, VectorRecordInput } from '../src/state/schema.js';
import type { CommitResult, EnqueueResult, StoryStateStore } from '../src/state/store.js';
import { runCacheDriverSuite } from '../src/testing/cache-driver-suite.js';
import { makeInfluence, makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';
import { runKeywordIndexSuite } from '../src/testing/keyword-index-suite.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { type PublisherHarness, runPublisherSuite } from '../src/testing/publisher-suite.js';
import { runStoryStateStoreSuite } from '../src/testing/state-store-suite.js';
import type { RunnerContext, SuiteTestApi } from '../src/testing/suite.js';
import { runVectorIndexSuite } from '../src/testing/vector-index-suite.js';

// ---------------------------------------------------------------------------------------------------------------
// Running a suite programmatically

interface Outcome {
  passed: string[];
  failed: Array<{ name: string; message: string }>;
  skipped: string[];
}

/** Registers one suite with the given test API (a `run…Suite` call). */
type Register = (api: SuiteTestApi) => number;

/** Runs every case `register` declares, one after the other, and sorts them by outcome. */
async function runSuite(register: Register): Promise<Outcome> {
  const cases: Array<{ name: string; body?: (context: RunnerContext) => Promise<void> }> = [];
  const collect = Object.assign(
    (name: string, body: (context: RunnerContext) => Promise<void>) => {
      cases.push({ name, body });
    },
    { skip: (name: string) => cases.push({ name }) },
  );
  register({ describe: (_name, body) => body(), it: collect });
  const outcome: Outcome = { passed: [], failed: [], skipped: [] };
  for (const { name, body } of cases) {
    if (!body) {
      outcome.skipped.push(name);
      continue;
    }
    let skipped = false;
    try {
      await body({ skip: () => (skipped = true) });
      (skipped ? outcome.skipped : outcome.passed).push(name);
    } catch (error) {
      outcome.failed.push({ name, message: String((error as Error)?.message ?? error).slice(0, 300) });
    }
  }
  return outcome;
}

/** Each baseline runs once per file, however many mutants compare with it. */
const baselines = new Map<string, Promise<Outcome>>();
function baseline(key: string, register: Register): Promise<Outcome> {
  let outcome = baselines.get(key);
  if (!outcome) {
    outcome = runSuite(register);
    baselines.set(key, outcome);
  }
  return outcome;
}

/** The suite catches the mutant: some case the unbroken adapter passes fails for it. */
async function expectCaught(clause: string, mutant: Outcome, unbroken: Outcome): Promise<void> {
  const passedUnbroken = new Set(unbroken.passed);
  const caughtBy = mutant.failed.filter((failure) => passedUnbroken.has(failure.name));
  expect(
    caughtBy.map((failure) => failure.name),
    `the suite missed a broken "${clause}": the mutant passed every case the unbroken adapter passes`,
  ).not.toEqual([]);
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
const SUITE_TIMEOUT_MS = 120_000;

// ---------------------------------------------------------------------------------------------------------------
// StoryStateStore

/** The storage primitives of the memory store that the mutants replace, on one instance. */
interface MemoryStoreInternals {
  stories: Map<string, { state: StoryState; influences: Map<string, UserInfluence> }>;
  writeCommit(storyId: string, commit: PreparedCommit): Promise<CommitResult>;
  insertInfluence(influence: UserInfluence): Promise<EnqueueResult>;
  readInfluence(storyId: string, influenceId: string): Promise<UserInfluence | null>;
}

/** A memory store with some of its primitives replaced; `original` holds the ones it had. */
function stateStoreMutant(
  patch: (store: MemoryStoreInternals, original: Omit<MemoryStoreInternals, 'stories'>) => void,
): () => StoryStateStore {
  return () => {
    const store = createMemoryStateStore();
    const internals = store as unknown as MemoryStoreInternals;
    patch(internals, {
      writeCommit: internals.writeCommit.bind(store),
      insertInfluence: internals.insertInfluence.bind(store),
      readInfluence: internals.readInfluence.bind(store),
    });
    return store;
  };
}

const stateMutants = {
  ignoresExpectedVersion: stateStoreMutant((store, original) => {
    store.writeCommit = (storyId, commit) =>
      original.writeCommit(storyId, { ...commit, expectedVersion: store.stories.get(storyId)?.state.version ?? 0 });
  }),
  enqueueNotIdempotent: stateStoreMutant((store) => {
    store.insertInfluence = async (influence) => {
      store.stories.get(influence.storyId)?.influences.set(influence.id, structuredClone(influence));
      return { inserted: true, influence: structuredClone(influence) };
    };
  }),
  replayReturnsCurrentState: stateStoreMutant((store, original) => {
    store.writeCommit = async (storyId, commit) => {
      const result = await original.writeCommit(storyId, commit);
      if (result.created) return result;
      return { ...result, state: structuredClone(store.stories.get(storyId)!.state) };
    };
  }),
  rejectsNonPendingInfluence: stateStoreMutant((store, original) => {
    store.writeCommit = async (storyId, commit) => {
      // Only the applied influences are checked for being pending: a rejection overwrites any status.
      const story = store.stories.get(storyId);
      for (const influence of commit.resolvedInfluences) {
        const stored = story?.influences.get(influence.id);
        if (influence.status === 'rejected' && stored) stored.status = 'pending';
      }
      return original.writeCommit(storyId, commit);
    };
  }),
  getInfluenceAcrossStories: stateStoreMutant((store, original) => {
    store.readInfluence = async (storyId, influenceId) => {
      const own = await original.readInfluence(storyId, influenceId);
      if (own) return own;
      // Keyed by the influence id alone.
      for (const story of store.stories.values()) {
        const found = story.influences.get(influenceId);
        if (found) return structuredClone(found);
      }
      return null;
    };
  }),
};

const stateRegister = (create: () => StoryStateStore) => (api: SuiteTestApi) =>
  runStoryStateStoreSuite(api, { name: 'mutant', create });
const stateBaseline = () =>
  baseline(
    'state',
    stateRegister(() => createMemoryStateStore()),
  );

/** A story with one scene committed that applied `inf-a`; returns the state after it. */
async function storyWithAppliedInfluence(store: StoryStateStore): Promise<StoryState> {
  const initial = await store.create(makeStoryState('m'));
  await store.enqueueInfluence(makeInfluence('m', 'inf-a'));
  const scene = makeNextScene(initial, { influencesApplied: ['inf-a'] });
  const result = await store.commitScene('m', {
    expectedVersion: 0,
    scene,
    nextState: makeNextState(initial, scene),
    consumedInfluenceIds: ['inf-a'],
  });
  return result.state;
}

describe('the StoryStateStore suite catches broken stores', () => {
  it(
    'baseline: the memory store passes every case',
    async () => {
      const outcome = await stateBaseline();
      expect(outcome.failed).toEqual([]);
      expect(outcome.skipped).toEqual([]);
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a store that ignores expectedVersion',
    async () => {
      const store = stateMutants.ignoresExpectedVersion();
      const initial = await store.create(makeStoryState('m'));
      const scene0 = makeNextScene(initial);
      const after = await store.commitScene('m', {
        expectedVersion: 0,
        scene: scene0,
        nextState: makeNextState(initial, scene0),
        consumedInfluenceIds: [],
      });
      // A writer that still believes the story is at version 0 (it is at 1) commits the next scene.
      const staleView = { ...after.state, version: 0 };
      const scene1 = makeNextScene(staleView);
      const stale = await store.commitScene('m', {
        expectedVersion: 0,
        scene: scene1,
        nextState: makeNextState(staleView, scene1),
        consumedInfluenceIds: [],
      });
      expect(stale.created).toBe(true); // accepted, where the contract says ConflictError
      await expectCaught(
        'a stale expectedVersion is a ConflictError',
        await runSuite(stateRegister(stateMutants.ignoresExpectedVersion)),
        await stateBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a store whose enqueueInfluence is not idempotent',
    async () => {
      const store = stateMutants.enqueueNotIdempotent();
      await store.create(makeStoryState('m'));
      await store.enqueueInfluence(makeInfluence('m', 'inf-a'));
      const again = await store.enqueueInfluence(makeInfluence('m', 'inf-a', { choice: 'another choice' }));
      expect(again.inserted).toBe(true);
      expect((await store.getInfluence('m', 'inf-a'))?.choice).toBe('another choice');
      await expectCaught(
        'enqueueInfluence is idempotent by id',
        await runSuite(stateRegister(stateMutants.enqueueNotIdempotent)),
        await stateBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a store whose replayed commit answers with the current state, not the state of the original commit',
    async () => {
      const store = stateMutants.replayReturnsCurrentState();
      const initial = await store.create(makeStoryState('m'));
      const scene0 = makeNextScene(initial);
      const commit0 = {
        expectedVersion: 0,
        scene: scene0,
        nextState: makeNextState(initial, scene0),
        consumedInfluenceIds: [],
      };
      const first = await store.commitScene('m', commit0);
      const scene1 = makeNextScene(first.state);
      await store.commitScene('m', {
        expectedVersion: 1,
        scene: scene1,
        nextState: makeNextState(first.state, scene1),
        consumedInfluenceIds: [],
      });
      const replay = await store.commitScene('m', commit0);
      expect(replay.created).toBe(false);
      expect(replay.state.version).toBe(2); // the original commit made version 1
      await expectCaught(
        'a replayed commit returns the original commit',
        await runSuite(stateRegister(stateMutants.replayReturnsCurrentState)),
        await stateBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a store that lets a commit reject an influence an earlier scene applied',
    async () => {
      const rejectLate = (state: StoryState) => {
        const scene = makeNextScene(state);
        return {
          expectedVersion: 1,
          scene,
          nextState: makeNextState(state, scene),
          consumedInfluenceIds: [],
          rejectedInfluences: [{ id: 'inf-a', reason: 'late' }],
        };
      };
      const store = stateMutants.rejectsNonPendingInfluence();
      await store.commitScene('m', rejectLate(await storyWithAppliedInfluence(store)));
      expect((await store.getInfluence('m', 'inf-a'))?.status).toBe('rejected'); // resolved twice
      const unbroken = createMemoryStateStore();
      await expect(unbroken.commitScene('m', rejectLate(await storyWithAppliedInfluence(unbroken)))).rejects.toSatisfy(
        ConflictError.isInstance,
      );
      await expectCaught(
        'every influence a commit resolves, rejected ones included, must be pending',
        await runSuite(stateRegister(stateMutants.rejectsNonPendingInfluence)),
        await stateBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a store whose getInfluence finds the influence of another story',
    async () => {
      const store = stateMutants.getInfluenceAcrossStories();
      await store.create(makeStoryState('a'));
      await store.create(makeStoryState('b'));
      await store.enqueueInfluence(makeInfluence('a', 'only-in-a'));
      expect((await store.getInfluence('b', 'only-in-a'))?.storyId).toBe('a');
      await expectCaught(
        'getInfluence is scoped to its story',
        await runSuite(stateRegister(stateMutants.getInfluenceAcrossStories)),
        await stateBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );
});

// ---------------------------------------------------------------------------------------------------------------
// VectorIndex

const DIMENSIONS = 8;

function delegateVector(inner: VectorIndex, overrides: Partial<VectorIndex> = {}): VectorIndex {
  return {
    specificationVersion: 'v1',
    provider: 'mutant',
    dimensions: inner.dimensions,
    capabilities: inner.capabilities,
    upsert: (storyId, records, options) => inner.upsert(storyId, records, options),
    query: (storyId, query) => inner.query(storyId, query),
    fetch: (storyId, ids, options) => inner.fetch(storyId, ids, options),
    delete: (storyId, deletion, options) => inner.delete(storyId, deletion, options),
    stats: (storyId, options) => inner.stats(storyId, options),
    deleteStory: (storyId, options) => inner.deleteStory(storyId, options),
    close: () => inner.close(),
    ...overrides,
  };
}

const byScoreThenId = (a: { score: number; id: string }, b: { score: number; id: string }) =>
  b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Wraps `upsert` to remember the stories written, for the mutants that reach across stories. */
function storyTracking<Rest extends unknown[]>(upsert: (storyId: string, ...rest: Rest) => Promise<void>) {
  const stories = new Set<string>();
  return {
    stories,
    upsert: async (storyId: string, ...rest: Rest) => {
      await upsert(storyId, ...rest);
      stories.add(storyId);
    },
  };
}

const memoryVectorIndex = () => createMemoryVectorIndex({ dimensions: DIMENSIONS });

const vectorMutants = {
  ignoresFilter: () => {
    const inner = memoryVectorIndex();
    return delegateVector(inner, { query: (storyId, { filter: _ignored, ...query }) => inner.query(storyId, query) });
  },
  unsorted: () => {
    const inner = memoryVectorIndex();
    return delegateVector(inner, { query: async (storyId, query) => (await inner.query(storyId, query)).reverse() });
  },
  ignoresTopK: () => {
    const inner = memoryVectorIndex();
    return delegateVector(inner, {
      query: (storyId, query) =>
        Number.isInteger(query.topK) && query.topK >= 1 && query.topK <= inner.capabilities.maxTopK
          ? inner.query(storyId, { ...query, topK: inner.capabilities.maxTopK })
          : inner.query(storyId, query),
    });
  },
  dropsDeletes: () => {
    const inner = memoryVectorIndex();
    // Counts what it would delete and deletes nothing.
    return delegateVector(inner, {
      delete: async (storyId, deletion) =>
        'ids' in deletion ? (await inner.fetch(storyId, deletion.ids)).length : inner.delete(storyId, deletion),
    });
  },
  keepsStaleVector: () => {
    const inner = memoryVectorIndex();
    return delegateVector(inner, {
      upsert: async (storyId, records, options) => {
        const ids = records.map((record) => record.id);
        const old = new Map((await inner.fetch(storyId, ids)).map((record) => [record.id, record.values]));
        await inner.upsert(storyId, records, options);
        // A replaced record keeps its old values: only its metadata is updated.
        const stale = records
          .filter((record) => old.has(record.id))
          .map((record) => ({ ...record, values: Float32Array.from(old.get(record.id)!) }));
        if (stale.length > 0) await inner.upsert(storyId, stale);
      },
    });
  },
  filteredQueryAcrossStories: () => {
    const inner = memoryVectorIndex();
    const tracking = storyTracking(inner.upsert.bind(inner));
    return delegateVector(inner, {
      upsert: tracking.upsert,
      query: async (storyId, query) => {
        if (!query.filter) return inner.query(storyId, query);
        // A filtered query compiled to one condition that forgot the story.
        const all: VectorMatch[] = [];
        for (const story of new Set([storyId, ...tracking.stories])) all.push(...(await inner.query(story, query)));
        return all.sort(byScoreThenId).slice(0, query.topK);
      },
    });
  },
  filteredDeleteAcrossStories: () => {
    const inner = memoryVectorIndex();
    const tracking = storyTracking(inner.upsert.bind(inner));
    return delegateVector(inner, {
      upsert: tracking.upsert,
      delete: async (storyId, deletion, options) => {
        const own = await inner.delete(storyId, deletion, options);
        if ('filter' in deletion) {
          for (const story of tracking.stories) if (story !== storyId) await inner.delete(story, deletion);
        }
        return own;
      },
    });
  },
  nonAtomicBatch: () => {
    const inner = memoryVectorIndex();
    return delegateVector(inner, {
      upsert: async (storyId, records, options) => {
        // Dimensions are checked for the whole batch first; everything else record by record, as it is written.
        for (const record of records) {
          if (record.values?.length !== DIMENSIONS) return inner.upsert(storyId, [record], options);
        }
        for (const record of records) await inner.upsert(storyId, [record], options);
      },
    });
  },
};

/**
 * An eventually consistent index: every write is validated at once and becomes visible `LAG_MS` later, in order.
 * `nonAtomic` makes it write a batch record by record, so the records before a bad one land.
 */
const LAG_MS = 150;
function laggingVectorIndex(options: { nonAtomic?: boolean } = {}): VectorIndex {
  const visible = memoryVectorIndex();
  const shadow = memoryVectorIndex();
  const later = (write: () => Promise<unknown>) => {
    setTimeout(() => void write().catch(() => {}), LAG_MS);
  };
  const copyOf = (record: VectorRecordInput): VectorRecordInput => ({
    ...record,
    values: Float32Array.from(record.values),
    metadata: structuredClone(record.metadata),
  });
  return delegateVector(visible, {
    capabilities: { ...visible.capabilities, readAfterWrite: false },
    upsert: async (storyId, records, upsertOptions) => {
      if (options.nonAtomic) {
        for (const record of records) {
          await shadow.upsert(storyId, [record], upsertOptions);
          const copy = copyOf(record);
          later(() => visible.upsert(storyId, [copy]));
        }
        return;
      }
      await shadow.upsert(storyId, records, upsertOptions);
      const copies = records.map(copyOf);
      later(() => visible.upsert(storyId, copies));
    },
    delete: async (storyId, deletion, deleteOptions) => {
      await shadow.delete(storyId, deletion, deleteOptions);
      later(() => visible.delete(storyId, deletion));
      return -1;
    },
    deleteStory: async (storyId, deleteOptions) => {
      await shadow.deleteStory(storyId, deleteOptions);
      later(() => visible.deleteStory(storyId));
    },
  });
}

const vectorRegister = (create: () => VectorIndex) => (api: SuiteTestApi) =>
  runVectorIndexSuite(api, { name: 'mutant', create, consistencyWindowMs: LAG_MS * 2 });
const vectorBaseline = () => baseline('vector', vectorRegister(memoryVectorIndex));
const laggingBaseline = () =>
  baseline(
    'vector-lagging',
    vectorRegister(() => laggingVectorIndex()),
  );

function vec(...values: number[]): Float32Array<ArrayBuffer> {
  const out = new Float32Array(DIMENSIONS);
  values.forEach((value, i) => {
    out[i] = value;
  });
  return out;
}

function rec(storyId: string, id: string, values: Float32Array<ArrayBuffer>, extra: object = {}): VectorRecordInput {
  return { id, values, metadata: { storyId, type: 'scene', timestamp: 1, sourceId: id, ...extra } };
}

const matchIds = (matches: ReadonlyArray<{ id: string }>) => matches.map((match) => match.id);

describe('the VectorIndex suite catches broken indexes', () => {
  it(
    'baseline: the memory index passes every case',
    async () => {
      const outcome = await vectorBaseline();
      expect(outcome.failed).toEqual([]);
      expect(outcome.skipped).toEqual([]);
    },
    SUITE_TIMEOUT_MS,
  );

  it('baseline: a correct eventually consistent index (readAfterWrite false) passes every case', async () => {
    const outcome = await laggingBaseline();
    expect(outcome.failed).toEqual([]);
    expect(outcome.skipped).toEqual([]);
  }, 300_000);

  it(
    'an index that ignores the filter',
    async () => {
      const index = vectorMutants.ignoresFilter();
      await index.upsert('a', [rec('a', 'scene', vec(1)), rec('a', 'person', vec(1, 1), { type: 'character' })]);
      const matches = await index.query('a', { vector: vec(1), topK: 10, filter: { type: 'character' } });
      expect(matchIds(matches)).toContain('scene');
      await expectCaught(
        'query honours its filter',
        await runSuite(vectorRegister(vectorMutants.ignoresFilter)),
        await vectorBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index that answers worst first',
    async () => {
      const index = vectorMutants.unsorted();
      await index.upsert('a', [rec('a', 'best', vec(1)), rec('a', 'worst', vec(0, 1))]);
      expect(matchIds(await index.query('a', { vector: vec(1), topK: 2 }))).toEqual(['worst', 'best']);
      await expectCaught(
        'matches come best first',
        await runSuite(vectorRegister(vectorMutants.unsorted)),
        await vectorBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index that ignores topK',
    async () => {
      const index = vectorMutants.ignoresTopK();
      await index.upsert('a', [rec('a', 'x', vec(1)), rec('a', 'y', vec(1, 1)), rec('a', 'z', vec(0, 1))]);
      expect(await index.query('a', { vector: vec(1), topK: 1 })).toHaveLength(3);
      await expectCaught(
        'topK bounds the matches',
        await runSuite(vectorRegister(vectorMutants.ignoresTopK)),
        await vectorBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index whose delete by ids deletes nothing',
    async () => {
      const index = vectorMutants.dropsDeletes();
      await index.upsert('a', [rec('a', 'x', vec(1))]);
      expect(await index.delete('a', { ids: ['x'] })).toBe(1);
      expect(matchIds(await index.fetch('a', ['x']))).toEqual(['x']);
      await expectCaught(
        'delete by ids removes the records',
        await runSuite(vectorRegister(vectorMutants.dropsDeletes)),
        await vectorBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index whose upsert keeps the old values of a replaced record',
    async () => {
      const index = vectorMutants.keepsStaleVector();
      await index.upsert('a', [rec('a', 'x', vec(1))]);
      await index.upsert('a', [rec('a', 'x', vec(0, 1))]);
      expect(Array.from((await index.fetch('a', ['x']))[0]!.values!)).toEqual(Array.from(vec(1)));
      await expectCaught(
        'upsert replaces the values of an existing id',
        await runSuite(vectorRegister(vectorMutants.keepsStaleVector)),
        await vectorBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index whose filtered query returns records of other stories',
    async () => {
      const index = vectorMutants.filteredQueryAcrossStories();
      await index.upsert('a', [rec('a', 'mine', vec(1))]);
      await index.upsert('b', [rec('b', 'theirs', vec(1, 0.1))]);
      const hits = await index.query('a', { vector: vec(1), topK: 10, filter: { type: 'scene' } });
      expect(hits.map((hit) => hit.metadata.storyId)).toContain('b');
      await expectCaught(
        'a filtered query reads its own story only',
        await runSuite(vectorRegister(vectorMutants.filteredQueryAcrossStories)),
        await vectorBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index whose delete by filter also deletes the matching records of other stories',
    async () => {
      const index = vectorMutants.filteredDeleteAcrossStories();
      await index.upsert('a', [rec('a', 'x', vec(1), { importance: 0.9 })]);
      await index.upsert('b', [rec('b', 'y', vec(1), { importance: 0.9 })]);
      await index.delete('a', { filter: { importance: { $gt: 0.5 } } });
      expect((await index.stats('b')).count).toBe(0);
      await expectCaught(
        'delete by filter deletes in its own story only',
        await runSuite(vectorRegister(vectorMutants.filteredDeleteAcrossStories)),
        await vectorBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index that stores the good records of a batch before a bad one (NaN, bad metadata, bad id)',
    async () => {
      const index = vectorMutants.nonAtomicBatch();
      await expect(index.upsert('a', [rec('a', 'good', vec(1)), rec('a', 'bad', vec(1, Number.NaN))])).rejects.toThrow(
        /bad/,
      );
      expect((await index.stats('a')).count).toBe(1);
      await expectCaught(
        'upsert is all-or-nothing on validation',
        await runSuite(vectorRegister(vectorMutants.nonAtomicBatch)),
        await vectorBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it('an eventually consistent index that stores part of a refused batch, which shows only later', async () => {
    const index = laggingVectorIndex({ nonAtomic: true });
    const short = { ...rec('a', 'short', vec(1)), values: new Float32Array(3) };
    await expect(index.upsert('a', [rec('a', 'good', vec(1)), short])).rejects.toThrow(/short/);
    expect((await index.stats('a')).count).toBe(0); // nothing yet: a check made now proves nothing
    await new Promise((resolve) => setTimeout(resolve, LAG_MS * 2));
    expect((await index.stats('a')).count).toBe(1);
    await expectCaught(
      'a refused batch stores nothing, also once an eventually consistent index has settled',
      await runSuite(vectorRegister(() => laggingVectorIndex({ nonAtomic: true }))),
      await laggingBaseline(),
    );
  }, 300_000);
});

// ---------------------------------------------------------------------------------------------------------------
// KeywordIndex

function delegateKeyword(inner: KeywordIndex, overrides: Partial<KeywordIndex> = {}): KeywordIndex {
  return {
    specificationVersion: 'v1',
    provider: 'mutant',
    capabilities: inner.capabilities,
    upsert: (storyId, documents, options) => inner.upsert(storyId, documents, options),
    query: (storyId, query) => inner.query(storyId, query),
    delete: (storyId, deletion, options) => inner.delete(storyId, deletion, options),
    count: (storyId) => inner.count(storyId),
    deleteStory: (storyId, options) => inner.deleteStory(storyId, options),
    close: () => inner.close(),
    ...overrides,
  };
}

/** A keyword index whose query reads every story written when `reachesAcross` says so. */
function keywordQueryAcrossStories(reachesAcross: (query: Parameters<KeywordIndex['query']>[1]) => boolean) {
  const inner = createMemoryKeywordIndex();
  const tracking = storyTracking(inner.upsert.bind(inner));
  return delegateKeyword(inner, {
    upsert: tracking.upsert,
    query: async (storyId, query) => {
      if (!reachesAcross(query)) return inner.query(storyId, query);
      const all: KeywordMatch[] = [];
      for (const story of new Set([storyId, ...tracking.stories])) all.push(...(await inner.query(story, query)));
      return all.sort(byScoreThenId).slice(0, query.topK);
    },
  });
}

const keywordMutants = {
  ignoresDeletes: () => {
    const inner = createMemoryKeywordIndex();
    // Counts the documents it would delete and deletes nothing.
    const known = new Map<string, Set<string>>();
    return delegateKeyword(inner, {
      upsert: async (storyId, documents, options) => {
        await inner.upsert(storyId, documents, options);
        const ids = known.get(storyId) ?? new Set<string>();
        for (const document of documents) ids.add(document.id);
        known.set(storyId, ids);
      },
      delete: async (storyId, deletion, options) =>
        'ids' in deletion
          ? new Set(deletion.ids.filter((id) => known.get(storyId)?.has(id))).size
          : inner.delete(storyId, deletion, options),
    });
  },
  queryIgnoresStory: () => keywordQueryAcrossStories(() => true),
  filteredQueryAcrossStories: () => keywordQueryAcrossStories((query) => query.filter !== undefined),
  filteredDeleteAcrossStories: () => {
    const inner = createMemoryKeywordIndex();
    const tracking = storyTracking(inner.upsert.bind(inner));
    return delegateKeyword(inner, {
      upsert: tracking.upsert,
      delete: async (storyId, deletion, options) => {
        const own = await inner.delete(storyId, deletion, options);
        if ('filter' in deletion) {
          for (const story of tracking.stories) if (story !== storyId) await inner.delete(story, deletion);
        }
        return own;
      },
    });
  },
};

const keywordRegister = (create: () => KeywordIndex) => (api: SuiteTestApi) =>
  runKeywordIndexSuite(api, { name: 'mutant', create });
const keywordBaseline = () =>
  baseline(
    'keyword',
    keywordRegister(() => createMemoryKeywordIndex()),
  );

function kdoc(storyId: string, id: string, text: string, extra: object = {}): KeywordDocument {
  return { id, text, metadata: { storyId, type: 'scene', timestamp: 1, sourceId: id, ...extra } };
}

describe('the KeywordIndex suite catches broken indexes', () => {
  it(
    'baseline: the memory keyword index passes every case',
    async () => {
      const outcome = await keywordBaseline();
      expect(outcome.failed).toEqual([]);
      expect(outcome.skipped).toEqual([]);
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index whose delete by ids deletes nothing',
    async () => {
      const index = keywordMutants.ignoresDeletes();
      await index.upsert('a', [kdoc('a', 'x', 'The lantern glowed.')]);
      expect(await index.delete('a', { ids: ['x'] })).toBe(1);
      expect(matchIds(await index.query('a', { text: 'lantern', topK: 10 }))).toEqual(['x']);
      await expectCaught(
        'delete by ids removes the documents',
        await runSuite(keywordRegister(keywordMutants.ignoresDeletes)),
        await keywordBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index whose query searches every story',
    async () => {
      const index = keywordMutants.queryIgnoresStory();
      await index.upsert('a', [kdoc('a', 'mine', 'The lantern glowed.')]);
      await index.upsert('b', [kdoc('b', 'theirs', 'A lantern in another story.')]);
      expect(matchIds(await index.query('a', { text: 'lantern', topK: 10 }))).toContain('theirs');
      await expectCaught(
        'a query reads its own story only',
        await runSuite(keywordRegister(keywordMutants.queryIgnoresStory)),
        await keywordBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index whose filtered query returns documents of other stories',
    async () => {
      const index = keywordMutants.filteredQueryAcrossStories();
      await index.upsert('a', [kdoc('a', 'mine', 'The lantern glowed.')]);
      await index.upsert('b', [kdoc('b', 'theirs', 'A lantern in another story.')]);
      expect(matchIds(await index.query('a', { text: 'lantern', topK: 10 }))).toEqual(['mine']);
      const filtered = await index.query('a', { text: 'lantern', topK: 10, filter: { type: 'scene' } });
      expect(filtered.map((match) => match.metadata.storyId)).toContain('b');
      await expectCaught(
        'a filtered query reads its own story only',
        await runSuite(keywordRegister(keywordMutants.filteredQueryAcrossStories)),
        await keywordBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'an index whose delete by filter also deletes the matching documents of other stories',
    async () => {
      const index = keywordMutants.filteredDeleteAcrossStories();
      await index.upsert('a', [kdoc('a', 'x', 'The lantern glowed.', { characters: ['mira'] })]);
      await index.upsert('b', [kdoc('b', 'y', 'The lantern dimmed.', { characters: ['mira'] })]);
      await index.delete('a', { filter: { characters: 'mira' } });
      expect(await index.count('b')).toBe(0);
      await expectCaught(
        'delete by filter deletes in its own story only',
        await runSuite(keywordRegister(keywordMutants.filteredDeleteAcrossStories)),
        await keywordBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );
});

// ---------------------------------------------------------------------------------------------------------------
// CacheDriver

function delegateCache(inner: CacheDriver, overrides: Partial<CacheDriver> = {}): CacheDriver {
  return {
    specificationVersion: 'v1',
    provider: 'mutant',
    capabilities: inner.capabilities,
    get: (key) => inner.get(key),
    getMany: (keys) => inner.getMany(keys),
    set: (key, value, options) => inner.set(key, value, options),
    setIfAbsent: (key, value, options) => inner.setIfAbsent(key, value, options),
    delete: (keys) => inner.delete(keys),
    deletePrefix: (prefix) => inner.deletePrefix(prefix),
    close: () => inner.close(),
    ...overrides,
  };
}

/** A ttl the drivers accept: the mutants below break only what a valid ttl would do. */
const validTtl = (ttlMs: number | undefined) => ttlMs === undefined || (ttlMs > 0 && ttlMs <= Number.MAX_SAFE_INTEGER);

type CacheMutant = (clock: ManualClock) => CacheDriver;
const cacheMutants: Record<
  'ignoresTtl' | 'nonAtomicSetIfAbsent' | 'losingSetIfAbsentExtendsTtl' | 'getServesExpired' | 'mergesLoneSurrogates',
  CacheMutant
> = {
  ignoresTtl: (clock) => {
    const inner = createMemoryCacheDriver({ clock });
    return delegateCache(inner, {
      set: (key, value, options) => (validTtl(options?.ttlMs) ? inner.set(key, value) : inner.set(key, value, options)),
      setIfAbsent: (key, value, options) =>
        validTtl(options?.ttlMs) ? inner.setIfAbsent(key, value) : inner.setIfAbsent(key, value, options),
    });
  },
  nonAtomicSetIfAbsent: (clock) => {
    const inner = createMemoryCacheDriver({ clock });
    return delegateCache(inner, {
      setIfAbsent: async (key, value, options) => {
        if (!validTtl(options?.ttlMs)) return inner.setIfAbsent(key, value, options);
        if ((await inner.get(key)) !== null) return false;
        await tick();
        await inner.set(key, value, options);
        return true;
      },
    });
  },
  losingSetIfAbsentExtendsTtl: (clock) => {
    const inner = createMemoryCacheDriver({ clock });
    return delegateCache(inner, {
      // SET NX followed by an unconditional PEXPIRE: each losing attempt extends the holder's ttl.
      setIfAbsent: async (key, value, options) => {
        const won = await inner.setIfAbsent(key, value, options);
        if (!won && options?.ttlMs !== undefined) {
          const current = await inner.get(key);
          if (current !== null) await inner.set(key, current, options);
        }
        return won;
      },
    });
  },
  getServesExpired: (clock) => {
    const inner = createMemoryCacheDriver({ clock });
    // A near cache in front of get that knows nothing of expiry; getMany asks the driver.
    const near = new Map<string, string>();
    return delegateCache(inner, {
      get: async (key) => (await inner.get(key)) ?? near.get(key) ?? null,
      set: async (key, value, options) => {
        await inner.set(key, value, options);
        near.set(key, value);
      },
      setIfAbsent: async (key, value, options) => {
        const won = await inner.setIfAbsent(key, value, options);
        if (won) near.set(key, value);
        return won;
      },
      delete: async (keys) => {
        for (const key of keys) near.delete(key);
        return inner.delete(keys);
      },
      deletePrefix: async (prefix) => {
        for (const key of [...near.keys()]) if (key.startsWith(prefix)) near.delete(key);
        return inner.deletePrefix(prefix);
      },
    });
  },
  mergesLoneSurrogates: (clock) => {
    const inner = createMemoryCacheDriver({ clock });
    // Keys stored as UTF-8 bytes, as Redis stores them, with no check: each lone surrogate becomes U+FFFD.
    const stored = (key: string) => Buffer.from(key, 'utf8').toString('utf8');
    return delegateCache(inner, {
      get: (key) => inner.get(stored(key)),
      getMany: (keys) => inner.getMany(keys.map(stored)),
      set: (key, value, options) => inner.set(stored(key), value, options),
      setIfAbsent: (key, value, options) => inner.setIfAbsent(stored(key), value, options),
      delete: (keys) => inner.delete(keys.map(stored)),
      deletePrefix: (prefix) => inner.deletePrefix(stored(prefix)),
    });
  },
};

const cacheRegister = (make: CacheMutant) => (api: SuiteTestApi) => {
  const clock = new ManualClock();
  return runCacheDriverSuite(api, {
    name: 'mutant',
    create: () => make(clock),
    advanceTime: (ms) => clock.advance(ms),
  });
};
const cacheBaseline = () =>
  baseline(
    'cache',
    cacheRegister((clock) => createMemoryCacheDriver({ clock })),
  );

describe('the CacheDriver suite catches broken drivers', () => {
  it(
    'baseline: the memory cache passes every case',
    async () => {
      const outcome = await cacheBaseline();
      expect(outcome.failed).toEqual([]);
      expect(outcome.skipped).toEqual([]);
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a driver that ignores the ttl',
    async () => {
      const clock = new ManualClock();
      const cache = cacheMutants.ignoresTtl(clock);
      await cache.set('k', 'v', { ttlMs: 500 });
      await clock.advance(600);
      expect(await cache.get('k')).toBe('v');
      await expectCaught(
        'entries expire after their ttl',
        await runSuite(cacheRegister(cacheMutants.ignoresTtl)),
        await cacheBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a driver whose setIfAbsent checks, then sets',
    async () => {
      const cache = cacheMutants.nonAtomicSetIfAbsent(new ManualClock());
      const won = await Promise.all([cache.setIfAbsent('lock', 'one'), cache.setIfAbsent('lock', 'two')]);
      expect(won).toEqual([true, true]);
      await expectCaught(
        'setIfAbsent is atomic',
        await runSuite(cacheRegister(cacheMutants.nonAtomicSetIfAbsent)),
        await cacheBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    "a driver whose losing setIfAbsent extends the winner's ttl",
    async () => {
      const clock = new ManualClock();
      const cache = cacheMutants.losingSetIfAbsentExtendsTtl(clock);
      expect(await cache.setIfAbsent('lock', 'owner-1', { ttlMs: 500 })).toBe(true);
      await clock.advance(400);
      expect(await cache.setIfAbsent('lock', 'owner-2', { ttlMs: 500 })).toBe(false);
      await clock.advance(200);
      expect(await cache.get('lock')).toBe('owner-1'); // 600 ms after it was taken for 500
      await expectCaught(
        'a losing setIfAbsent changes nothing, the expiry included',
        await runSuite(cacheRegister(cacheMutants.losingSetIfAbsentExtendsTtl)),
        await cacheBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a driver whose get serves a value past its ttl (getMany does not)',
    async () => {
      const clock = new ManualClock();
      const cache = cacheMutants.getServesExpired(clock);
      await cache.set('k', 'v', { ttlMs: 500 });
      await clock.advance(600);
      expect(await cache.getMany(['k'])).toEqual([null]);
      expect(await cache.get('k')).toBe('v');
      await expectCaught(
        'get misses once the ttl has passed',
        await runSuite(cacheRegister(cacheMutants.getServesExpired)),
        await cacheBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a driver that stores keys as UTF-8 and merges keys differing in a lone surrogate',
    async () => {
      const cache = cacheMutants.mergesLoneSurrogates(new ManualClock());
      await cache.set('k\uD800', 'high');
      await cache.set('k\uDC00', 'low');
      expect(await cache.get('k\uD800')).toBe('low');
      await expectCaught(
        'keys with a lone surrogate are refused with a ValidationError, or kept apart: never merged',
        await runSuite(cacheRegister(cacheMutants.mergesLoneSurrogates)),
        await cacheBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );
});

// ---------------------------------------------------------------------------------------------------------------
// Publisher

type CmsMode = 'correct' | 'notIdempotent' | 'racyLookupThenCreate' | 'dropsText' | 'ignoresAbort';

/** A publisher over a small "CMS" that lists its publications with their content; `mode` picks the bug. */
function cmsPublisher(mode: CmsMode): PublisherHarness & { read: NonNullable<PublisherHarness['read']> } {
  const items = new Map<string, { sceneKey: string; content: string }>();
  let counter = 0;
  const itemsOf = (sceneKey: string) => [...items.entries()].filter(([, item]) => item.sceneKey === sceneKey);
  const publisher: Publisher = {
    specificationVersion: 'v1',
    provider: 'cms',
    target: 'cms',
    capabilities: { idempotent: true },
    async publish(episode: Episode, options = {}): Promise<PublishResult> {
      if (mode !== 'ignoresAbort') throwIfAborted(options.signal);
      const { scene } = validateEpisode(episode);
      const sceneKey = `${scene.storyId}/${scene.id}`;
      // The bug of `dropsText`: a template that leaves out the scene's body.
      const content = JSON.stringify(
        mode === 'dropsText' ? { title: scene.title } : { title: scene.title, text: scene.text },
      );
      const result = { target: 'cms', url: `https://cms.example/${sceneKey}`, ids: [sceneKey] };
      if (mode === 'notIdempotent') {
        items.set(`${sceneKey}#${counter++}`, { sceneKey, content });
        return result;
      }
      const [existing] = itemsOf(sceneKey);
      if (mode === 'racyLookupThenCreate') await tick(); // the lookup is one request, the create another
      if (!existing) items.set(`${sceneKey}#${counter++}`, { sceneKey, content });
      return result;
    },
  };
  return {
    publisher,
    published: async (storyId, sceneId) => itemsOf(`${storyId}/${sceneId}`).map(([id]) => id),
    read: async (storyId, sceneId) => itemsOf(`${storyId}/${sceneId}`)[0]?.[1].content ?? null,
  };
}

const publisherRegister = (create: () => PublisherHarness) => (api: SuiteTestApi) =>
  runPublisherSuite(api, { name: 'mutant', create });
const publisherBaseline = () =>
  baseline(
    'publisher',
    publisherRegister(() => cmsPublisher('correct')),
  );

function episodeOf(text?: string): Episode {
  const state = makeStoryState('pub-story');
  const scene = makeNextScene(state, text ? { text } : {});
  return { story: makeNextState(state, scene), scene };
}

describe('the Publisher suite catches broken publishers', () => {
  it(
    'baseline: a correct publisher and the memory publisher pass every case',
    async () => {
      const correct = await publisherBaseline();
      expect(correct.failed).toEqual([]);
      expect(correct.skipped).toEqual([]);
      const memory = await runSuite(
        publisherRegister(() => {
          const publisher = createMemoryPublisher();
          const of = (storyId: string, sceneId: string) =>
            [...publisher.publications.values()].filter(
              (publication) => publication.scene.storyId === storyId && publication.scene.id === sceneId,
            );
          return {
            publisher,
            published: async (storyId, sceneId) => of(storyId, sceneId).map((publication) => publication.key),
            read: async (storyId, sceneId) =>
              of(storyId, sceneId)
                .map((publication) => JSON.stringify(publication.scene))
                .join('\n') || null,
          };
        }),
      );
      expect(memory.failed).toEqual([]);
      expect(memory.skipped).toEqual([]);
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a publisher that creates a new publication at every publish',
    async () => {
      const harness = cmsPublisher('notIdempotent');
      const episode = episodeOf();
      await harness.publisher.publish(episode);
      await harness.publisher.publish(episode);
      expect(await harness.published('pub-story', episode.scene.id)).toHaveLength(2);
      await expectCaught(
        'publishing the same scene twice leaves one publication',
        await runSuite(publisherRegister(() => cmsPublisher('notIdempotent'))),
        await publisherBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a publisher whose concurrent publishes of one scene each create a publication (lookup, then create)',
    async () => {
      const harness = cmsPublisher('racyLookupThenCreate');
      const episode = episodeOf();
      await Promise.all(Array.from({ length: 10 }, () => harness.publisher.publish(episode)));
      expect(await harness.published('pub-story', episode.scene.id)).toHaveLength(10);
      await expectCaught(
        'concurrent publishes of one scene leave as many publications as one publish',
        await runSuite(publisherRegister(() => cmsPublisher('racyLookupThenCreate'))),
        await publisherBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a publisher whose publication leaves out the scene text',
    async () => {
      const harness = cmsPublisher('dropsText');
      const episode = episodeOf('The ferryman kept the coin under his tongue.');
      await harness.publisher.publish(episode);
      expect(await harness.published('pub-story', episode.scene.id)).toHaveLength(1);
      expect(await harness.read('pub-story', episode.scene.id)).not.toContain('ferryman');
      await expectCaught(
        'the publication holds the scene text',
        await runSuite(publisherRegister(() => cmsPublisher('dropsText'))),
        await publisherBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );

  it(
    'a publisher that ignores an aborted signal',
    async () => {
      const harness = cmsPublisher('ignoresAbort');
      const episode = episodeOf();
      await harness.publisher.publish(episode, { signal: AbortSignal.abort() });
      expect(await harness.published('pub-story', episode.scene.id)).toHaveLength(1);
      await expectCaught(
        'an aborted publish rejects with AbortedError and publishes nothing',
        await runSuite(publisherRegister(() => cmsPublisher('ignoresAbort'))),
        await publisherBaseline(),
      );
    },
    SUITE_TIMEOUT_MS,
  );
});
