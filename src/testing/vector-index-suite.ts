/**
 * The conformance suite of the `VectorIndex` port. Every vector index, built in or third-party, runs it; expected
 * rankings are computed inside the suite by brute force, so an adapter is checked against the mathematics rather
 * than against another adapter.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { MetadataFilter } from '../context/filter.js';
import type { VectorIndex } from '../context/vector-index.js';
import { AbortedError, ValidationError } from '../core/errors.js';
import { seededRandom } from '../core/seeded-random.js';
import type { VectorMetadataInput, VectorRecordInput } from '../state/schema.js';
import { registerSuite, type SuiteCase, type SuiteOptions, type SuiteTestApi } from './suite.js';

/** Scores may be computed in float32 by a backend; this is how far they may drift from the float64 reference. */
const SCORE_TOLERANCE = 1e-4;

/** A story id no other case, run or process uses, so cases sharing a real backend never see each other's data. */
function uniqueStoryId(label: string): string {
  return `${label}-${randomUUID().slice(0, 8)}`;
}

function randomVector(random: () => number, dimensions: number): Float32Array<ArrayBuffer> {
  const values = new Float32Array(dimensions);
  for (let i = 0; i < dimensions; i++) values[i] = random() * 2 - 1;
  values[0] = values[0] === 0 ? 0.5 : values[0]!;
  return values;
}

/** A vector with the given non-zero coordinates: `axes(8, { 0: 1, 1: 0.5 })`. */
function axes(dimensions: number, coordinates: Readonly<Record<number, number>>): Float32Array<ArrayBuffer> {
  const values = new Float32Array(dimensions);
  for (const [index, value] of Object.entries(coordinates)) values[Number(index)] = value;
  return values;
}

function makeRecord(
  storyId: string,
  id: string,
  values: Float32Array<ArrayBuffer>,
  metadata: Partial<VectorMetadataInput> = {},
): VectorRecordInput {
  return { id, values, metadata: { storyId, type: 'scene', timestamp: 1_000, sourceId: id, ...metadata } };
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let normA = 0;
  let normB = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    normA += a[i]! * a[i]!;
    normB += b[i]! * b[i]!;
  }
  return dot / Math.sqrt(normA * normB);
}

/** The reference ranking: every record scored, best first, ties by id. */
function bruteForce(records: readonly VectorRecordInput[], query: Float32Array): Array<{ id: string; score: number }> {
  return records
    .map((record) => ({ id: record.id, score: cosine(record.values, query) }))
    .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function ids(matches: ReadonlyArray<{ id: string }>): string[] {
  return matches.map((match) => match.id);
}

function sorted(values: readonly string[]): string[] {
  return [...values].sort();
}

function assertClose(actual: number, expected: number, label: string): void {
  assert.ok(Math.abs(actual - expected) <= SCORE_TOLERANCE, `${label}: expected ${expected}, got ${actual}`);
}

function assertValuesClose(actual: Float32Array | undefined, expected: Float32Array, label: string): void {
  assert.ok(actual instanceof Float32Array, `${label}: values should be a Float32Array`);
  assert.equal(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i]! - expected[i]!) <= 1e-6,
      `${label}: values[${i}] is ${actual[i]}, not ${expected[i]}`,
    );
  }
}

/**
 * What the `VectorIndex` suite needs beyond the common suite options.
 *
 * @example
 * ```ts
 * import type { VectorIndexSuiteExtras } from 'storyloom/testing';
 * // An index that may answer without a write for up to 10 s after it.
 * const extras: VectorIndexSuiteExtras = { consistencyWindowMs: 10_000 };
 * ```
 */
export interface VectorIndexSuiteExtras {
  /**
   * For an index whose `capabilities.readAfterWrite` is false: how long after a write returns a read may still answer
   * without it. A check that something is absent (a refused batch stored nothing, an aborted call changed nothing, a
   * delete left another story alone) passes at once on such an index whatever it will do, so the suite waits this
   * long before making it; checks that something is present poll instead. Default 5,000 ms (Pinecone usually shows a
   * write within seconds). Ignored when `readAfterWrite` is true: such an index is checked without waiting.
   */
  consistencyWindowMs?: number;
}

/** The default of `VectorIndexSuiteExtras.consistencyWindowMs`. */
const DEFAULT_CONSISTENCY_WINDOW_MS = 5_000;

/** The consistency window of each index the suite created, as its runner declared it. */
const consistencyWindows = new WeakMap<VectorIndex, number>();

/** How long a read of `index` may lag its writes: 0 for an index that reads its own writes. */
function consistencyWindow(index: VectorIndex): number {
  if (index.capabilities.readAfterWrite) return 0;
  return consistencyWindows.get(index) ?? DEFAULT_CONSISTENCY_WINDOW_MS;
}

/**
 * Waits until every write made so far is visible, before a check that something is absent: on an eventually
 * consistent index, a write that was wrongly accepted (or a delete that reached too far) shows only later.
 */
async function settle(index: VectorIndex): Promise<void> {
  const window = consistencyWindow(index);
  if (window > 0) await new Promise((resolve) => setTimeout(resolve, window));
}

/**
 * Runs `check` until it passes. Backends that read their own writes at once get one try; eventually consistent
 * ones (Pinecone) are polled with a bounded backoff. A passing poll proves presence only: before a check that
 * something is absent, `settle` first.
 */
async function eventually(index: VectorIndex, check: () => Promise<void>, timeoutMs = 20_000): Promise<void> {
  if (index.capabilities.readAfterWrite) return check();
  const deadline = Date.now() + Math.max(timeoutMs, 2 * consistencyWindow(index));
  for (let delay = 100; ; delay = Math.min(delay * 2, 1_000)) {
    try {
      return await check();
    } catch (error) {
      if (!(error instanceof assert.AssertionError) || Date.now() + delay > deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function rejectsWith<E>(
  promise: Promise<unknown>,
  isInstance: (error: unknown) => error is E,
  label: string,
): Promise<E> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isInstance(error), `expected ${label}, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected ${label}, but the call succeeded`);
}

async function count(index: VectorIndex, storyId: string): Promise<number> {
  return (await index.stats(storyId)).count;
}

/**
 * Seven records whose metadata covers every filterable kind of value, and every way a field can be missing: f7 has
 * empty lists (which a backend may not store at all) and, like f3 and f4, no `sceneIndex` or `chapterId`. The port
 * holds a backend to one rule for them: a missing field, or an empty list, satisfies negative conditions only.
 */
function filterFixture(index: VectorIndex, storyId: string): VectorRecordInput[] {
  const random = seededRandom(7);
  const record = (id: string, metadata: Partial<VectorMetadataInput>) =>
    makeRecord(storyId, id, randomVector(random, index.dimensions), metadata);
  return [
    record('f1', {
      type: 'scene',
      characters: ['mira', 'oren'],
      locations: ['harbor'],
      themes: ['loyalty'],
      importance: 0.9,
      timestamp: 1_000,
      sceneIndex: 0,
      chapterId: 'chapter-0001',
    }),
    record('f2', {
      type: 'scene',
      characters: ['oren'],
      locations: ['archive'],
      themes: ['war'],
      importance: 0.4,
      timestamp: 2_000,
      sceneIndex: 1,
      chapterId: 'chapter-0001',
    }),
    record('f3', { type: 'character', characters: ['mira'], locations: ['ship'], importance: 0.7, timestamp: 3_000 }),
    record('f4', {
      type: 'plotThread',
      characters: ['kell', 'mira'],
      locations: ['harbor', 'tower'],
      themes: ['war', 'loyalty'],
      importance: 0.2,
      timestamp: 4_000,
    }),
    record('f5', {
      type: 'summary',
      characters: ['sela'],
      locations: ['tower'],
      importance: 0.5,
      timestamp: 5_000,
      sceneIndex: 2,
      chapterId: 'chapter-0002',
    }),
    record('f6', {
      type: 'scene',
      characters: ['kell'],
      locations: ['archive'],
      themes: ['tide'],
      importance: 1,
      timestamp: 6_000,
      sceneIndex: 3,
      chapterId: 'chapter-0002',
    }),
    // A plot thread nobody has joined yet, set nowhere, in no chapter.
    record('f7', { type: 'plotThread', characters: [], locations: [], themes: [], importance: 0.6, timestamp: 7_500 }),
  ];
}

const ALL_FIXTURE_IDS = ['f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7'];

/** Filters of one operator family with the ids of `filterFixture` each one must return. */
const FILTER_TABLE: ReadonlyArray<{ name: string; expectations: ReadonlyArray<[MetadataFilter, string[]]> }> = [
  {
    name: 'a bare value means $eq',
    expectations: [
      [{ type: 'scene' }, ['f1', 'f2', 'f6']],
      [{ importance: 0.5 }, ['f5']],
    ],
  },
  {
    name: '$eq',
    expectations: [
      [{ type: { $eq: 'character' } }, ['f3']],
      [{ timestamp: { $eq: 4_000 } }, ['f4']],
    ],
  },
  {
    name: '$ne',
    expectations: [
      [{ type: { $ne: 'scene' } }, ['f3', 'f4', 'f5', 'f7']],
      [{ importance: { $ne: 0.9 } }, ['f2', 'f3', 'f4', 'f5', 'f6', 'f7']],
    ],
  },
  {
    name: '$in',
    expectations: [
      [{ type: { $in: ['character', 'plotThread'] } }, ['f3', 'f4', 'f7']],
      [{ timestamp: { $in: [1_000, 6_000, 7_000] } }, ['f1', 'f6']],
    ],
  },
  {
    name: '$nin',
    expectations: [[{ type: { $nin: ['scene', 'summary'] } }, ['f3', 'f4', 'f7']]],
  },
  {
    name: '$gt, $gte, $lt and $lte on numbers',
    expectations: [
      [{ importance: { $gt: 0.7 } }, ['f1', 'f6']],
      [{ importance: { $gte: 0.7 } }, ['f1', 'f3', 'f6']],
      [{ importance: { $lt: 0.4 } }, ['f4']],
      [{ importance: { $lte: 0.4 } }, ['f2', 'f4']],
      [{ timestamp: { $gte: 2_000, $lt: 5_000 } }, ['f2', 'f3', 'f4']],
      [{ importance: { $gt: 0.3, $lt: 0.8 } }, ['f2', 'f3', 'f5', 'f7']],
    ],
  },
  {
    name: '$and',
    expectations: [
      [{ $and: [{ type: 'scene' }, { importance: { $gte: 0.5 } }] }, ['f1', 'f6']],
      [{ type: 'scene', locations: 'archive' }, ['f2', 'f6']],
    ],
  },
  {
    name: '$or',
    expectations: [
      [{ $or: [{ type: 'summary' }, { characters: 'kell' }] }, ['f4', 'f5', 'f6']],
      [{ $or: [{ timestamp: { $lt: 2_000 } }, { $and: [{ type: 'scene' }, { importance: 1 }] }] }, ['f1', 'f6']],
    ],
  },
  {
    name: 'array fields match when any element matches',
    expectations: [
      [{ characters: 'mira' }, ['f1', 'f3', 'f4']],
      [{ characters: { $eq: 'oren' } }, ['f1', 'f2']],
      [{ locations: { $in: ['tower', 'nowhere'] } }, ['f4', 'f5']],
    ],
  },
  {
    name: 'negative conditions on array fields exclude records holding the value',
    expectations: [
      [{ characters: { $ne: 'mira' } }, ['f2', 'f5', 'f6', 'f7']],
      [{ characters: { $nin: ['mira', 'kell'] } }, ['f2', 'f5', 'f7']],
    ],
  },
  {
    name: 'an empty list or a missing field satisfies $ne and $nin, and no positive condition',
    expectations: [
      [{ themes: { $ne: 'war' } }, ['f1', 'f3', 'f5', 'f6', 'f7']],
      [{ themes: { $nin: ['war', 'tide'] } }, ['f1', 'f3', 'f5', 'f7']],
      [{ locations: { $nin: ['harbor', 'archive', 'ship', 'tower'] } }, ['f7']],
      [{ themes: 'war' }, ['f2', 'f4']],
      [{ chapterId: { $ne: 'chapter-0001' } }, ['f3', 'f4', 'f5', 'f6', 'f7']],
      [{ chapterId: { $nin: ['chapter-0002'] } }, ['f1', 'f2', 'f3', 'f4', 'f7']],
      [{ sceneIndex: { $ne: 1 } }, ['f1', 'f3', 'f4', 'f5', 'f6', 'f7']],
      [{ sceneIndex: { $nin: [0, 3] } }, ['f2', 'f3', 'f4', 'f5', 'f7']],
      [{ chapterId: { $in: ['chapter-0001', 'chapter-0002'] } }, ['f1', 'f2', 'f5', 'f6']],
      [{ sceneIndex: { $lt: 2 } }, ['f1', 'f2']],
      // A positive operator beside the negative one needs the field.
      [{ sceneIndex: { $ne: 1, $lt: 3 } }, ['f1', 'f5']],
      [{ type: 'plotThread', characters: { $nin: ['villain'] } }, ['f4', 'f7']],
      [
        { $or: [{ characters: { $nin: ['mira', 'oren', 'kell'] } }, { type: 'scene' }] },
        ['f1', 'f2', 'f5', 'f6', 'f7'],
      ],
      [{ $and: [{ chapterId: { $ne: 'chapter-0002' } }, { themes: { $ne: 'loyalty' } }] }, ['f2', 'f3', 'f7']],
    ],
  },
  {
    name: 'a condition left undefined or without an operator, and an $and or $or that holds for every record, mean no condition',
    expectations: [
      [{}, ALL_FIXTURE_IDS],
      [{ chapterId: undefined }, ALL_FIXTURE_IDS],
      [{ type: {} }, ALL_FIXTURE_IDS],
      [{ chapterId: {} }, ALL_FIXTURE_IDS],
      [{ $and: [{}] }, ALL_FIXTURE_IDS],
      [{ type: 'scene', $and: [{ chapterId: undefined }, {}] }, ['f1', 'f2', 'f6']],
      [{ type: 'scene', $or: [{ chapterId: undefined }, { importance: 1 }] }, ['f1', 'f2', 'f6']],
      [{ type: 'scene', $or: [{ importance: {} }, { importance: 1 }] }, ['f1', 'f2', 'f6']],
      [{ $or: [{ importance: {} }, { type: 'summary' }] }, ALL_FIXTURE_IDS],
      [{ type: 'scene', sceneIndex: {} }, ['f1', 'f2', 'f6']],
      [{ $and: [{ type: 'scene' }, { $or: [{}, { importance: 1 }] }, { importance: { $gte: 0.5 } }] }, ['f1', 'f6']],
    ],
  },
  {
    name: 'a filter that matches nothing',
    expectations: [
      [{ type: 'scene', importance: { $lt: 0.1 } }, []],
      [{ characters: 'nobody' }, []],
    ],
  },
];

/**
 * The filter fixture written to a story named after `name`, and to a second story beside it: a filter or a delete by
 * filter must select within its own story, though the other story's records match it too. Returns once both are
 * visible.
 */
async function filterFixtureBesideAnother(
  index: VectorIndex,
  name: string,
): Promise<{ storyId: string; otherStory: string; records: VectorRecordInput[] }> {
  const storyId = uniqueStoryId(name);
  const otherStory = uniqueStoryId(`${name}-other`);
  const records = filterFixture(index, storyId);
  await index.upsert(otherStory, filterFixture(index, otherStory));
  await index.upsert(storyId, records);
  await eventually(index, async () => {
    assert.equal(await count(index, otherStory), records.length);
    assert.equal(await count(index, storyId), records.length);
  });
  return { storyId, otherStory, records };
}

const filterCases: Array<SuiteCase<VectorIndex>> = FILTER_TABLE.map(({ name, expectations }) => ({
  name: `filter: ${name}`,
  async run(index) {
    // Another story holds the same records: a filter selects within its query's story, never across stories.
    const { storyId, records } = await filterFixtureBesideAnother(index, 'filter');
    const query = records[0]!.values;
    for (const [filter, expected] of expectations) {
      await eventually(index, async () => {
        const matches = await index.query(storyId, { vector: query, topK: records.length, filter });
        assert.deepEqual(sorted(ids(matches)), sorted(expected), `filter ${JSON.stringify(filter)}`);
        for (const match of matches) assert.equal(match.metadata.storyId, storyId, `story of ${match.id}`);
      });
    }
  },
}));

/**
 * The cases of the `VectorIndex` suite, exported so tools can list them and adapters can name skips.
 *
 * @example
 * ```ts
 * import { vectorIndexCases } from 'storyloom/testing';
 * console.log(vectorIndexCases.map((testCase) => testCase.name));
 * ```
 */
export const vectorIndexCases: ReadonlyArray<SuiteCase<VectorIndex>> = [
  {
    name: 'upsert then query returns the nearest neighbours, best first',
    async run(index) {
      const storyId = uniqueStoryId('knn');
      const random = seededRandom(42);
      const records = Array.from({ length: 40 }, (_, i) =>
        makeRecord(storyId, `r${String(i).padStart(2, '0')}`, randomVector(random, index.dimensions)),
      );
      await index.upsert(storyId, records);
      for (let q = 0; q < 3; q++) {
        const query = randomVector(random, index.dimensions);
        const expected = bruteForce(records, query).slice(0, 10);
        const byId = new Map(bruteForce(records, query).map((entry) => [entry.id, entry.score]));
        await eventually(index, async () => {
          const matches = await index.query(storyId, { vector: query, topK: 10 });
          assert.equal(matches.length, 10);
          matches.forEach((match, rank) => {
            // Each hit has its true score, and that score is the one the reference puts at this rank: the ranking
            // is right even where two true scores differ by less than float32 can tell apart.
            assertClose(match.score, byId.get(match.id) ?? Number.NaN, `score of ${match.id}`);
            assertClose(match.score, expected[rank]!.score, `score at rank ${rank}`);
            assert.equal(match.metadata.sourceId, match.id);
          });
        });
      }
    },
  },
  {
    name: 'scores are cosine similarities in [-1, 1], whatever the vector lengths',
    skipUnless: (index) => (index.dimensions < 4 ? 'the case needs at least 4 dimensions' : undefined),
    async run(index) {
      const storyId = uniqueStoryId('cosine');
      const d = index.dimensions;
      await index.upsert(storyId, [
        makeRecord(storyId, 'same', axes(d, { 0: 1 })),
        makeRecord(storyId, 'longer', axes(d, { 0: 250 })),
        makeRecord(storyId, 'opposite', axes(d, { 0: -3 })),
        makeRecord(storyId, 'orthogonal', axes(d, { 1: 2 })),
        makeRecord(storyId, 'diagonal', axes(d, { 0: 1, 1: 1 })),
      ]);
      await eventually(index, async () => {
        const matches = await index.query(storyId, { vector: axes(d, { 0: 0.01 }), topK: 5 });
        const score = new Map(matches.map((match) => [match.id, match.score]));
        assertClose(score.get('same')!, 1, 'same direction');
        assertClose(score.get('longer')!, 1, 'same direction, 250 times longer');
        assertClose(score.get('diagonal')!, Math.SQRT1_2, 'at 45 degrees');
        assertClose(score.get('orthogonal')!, 0, 'orthogonal');
        assertClose(score.get('opposite')!, -1, 'opposite');
        for (const match of matches) assert.ok(match.score >= -1 && match.score <= 1, `${match.id}: ${match.score}`);
      });
    },
  },
  {
    name: 'topK bounds the number of matches',
    async run(index) {
      const storyId = uniqueStoryId('topk');
      const random = seededRandom(3);
      const records = Array.from({ length: 12 }, (_, i) =>
        makeRecord(storyId, `t${String(i).padStart(2, '0')}`, randomVector(random, index.dimensions)),
      );
      await index.upsert(storyId, records);
      const query = randomVector(random, index.dimensions);
      await eventually(index, async () => {
        const top5 = await index.query(storyId, { vector: query, topK: 5 });
        assert.deepEqual(
          top5.map((match) => match.id),
          bruteForce(records, query)
            .slice(0, 5)
            .map((entry) => entry.id),
        );
        assert.equal((await index.query(storyId, { vector: query, topK: 1 })).length, 1);
        assert.equal((await index.query(storyId, { vector: query, topK: 100 })).length, 12);
      });
    },
  },
  {
    name: 'equal scores are ordered by id, best scores first',
    skipUnless: (index) => (index.dimensions < 4 ? 'the case needs at least 4 dimensions' : undefined),
    async run(index) {
      const storyId = uniqueStoryId('ties');
      const d = index.dimensions;
      const tied = axes(d, { 0: 1, 1: 1 });
      await index.upsert(storyId, [
        makeRecord(storyId, 'tie-c', tied),
        makeRecord(storyId, 'best', axes(d, { 0: 1 })),
        makeRecord(storyId, 'tie-a', tied),
        makeRecord(storyId, 'worst', axes(d, { 1: 1 })),
        makeRecord(storyId, 'tie-b', tied),
      ]);
      await eventually(index, async () => {
        const matches = await index.query(storyId, { vector: axes(d, { 0: 1, 1: 0.2 }), topK: 5 });
        assert.deepEqual(ids(matches), ['best', 'tie-a', 'tie-b', 'tie-c', 'worst']);
        for (let i = 1; i < matches.length; i++) assert.ok(matches[i - 1]!.score >= matches[i]!.score);
      });
    },
  },
  {
    name: 'upsert replaces a record with the same id',
    skipUnless: (index) => (index.dimensions < 4 ? 'the case needs at least 4 dimensions' : undefined),
    async run(index) {
      const storyId = uniqueStoryId('replace');
      const d = index.dimensions;
      await index.upsert(storyId, [makeRecord(storyId, 'x', axes(d, { 0: 1 }), { type: 'scene', importance: 0.1 })]);
      await index.upsert(storyId, [
        makeRecord(storyId, 'x', axes(d, { 1: 1 }), { type: 'character', importance: 0.8 }),
      ]);
      await eventually(index, async () => {
        assert.equal(await count(index, storyId), 1);
        const matches = await index.query(storyId, { vector: axes(d, { 1: 1 }), topK: 10 });
        assert.deepEqual(ids(matches), ['x']);
        assertClose(matches[0]!.score, 1, 'score against the new vector');
        assert.equal(matches[0]!.metadata.type, 'character');
        assert.equal(matches[0]!.metadata.importance, 0.8);
        const [fetched] = await index.fetch(storyId, ['x']);
        assertValuesClose(fetched?.values, axes(d, { 1: 1 }), 'fetched values');
      });
    },
  },
  {
    name: 'metadata defaults are filled in and values round-trip through fetch',
    async run(index) {
      const storyId = uniqueStoryId('roundtrip');
      const values = randomVector(seededRandom(11), index.dimensions);
      await index.upsert(storyId, [
        makeRecord(storyId, 'full', values, {
          type: 'plotThread',
          timestamp: 1_712_000_000_000,
          themes: ['loyalty', 'the sea'],
          characters: ['mira'],
          locations: ['north harbor'],
          importance: 0.25,
          sceneIndex: 12,
          chapterId: 'chapter-0002',
          chunk: 3,
          text: 'Mira swears to find the lighthouse keeper — «whatever it costs».',
        }),
        makeRecord(storyId, 'minimal', values),
      ]);
      await eventually(index, async () => {
        const [full, minimal] = await index.fetch(storyId, ['full', 'minimal']);
        assert.ok(full && minimal, 'both records are fetched');
        assertValuesClose(full.values, values, 'full.values');
        assert.deepEqual(full.metadata, {
          storyId,
          type: 'plotThread',
          timestamp: 1_712_000_000_000,
          themes: ['loyalty', 'the sea'],
          characters: ['mira'],
          locations: ['north harbor'],
          importance: 0.25,
          sourceId: 'full',
          sceneIndex: 12,
          chapterId: 'chapter-0002',
          chunk: 3,
          text: 'Mira swears to find the lighthouse keeper — «whatever it costs».',
        });
        assert.deepEqual(minimal.metadata, {
          storyId,
          type: 'scene',
          timestamp: 1_000,
          themes: [],
          characters: [],
          locations: [],
          importance: 0.5,
          sourceId: 'minimal',
          chunk: 0,
          text: '',
        });
      });
    },
  },
  {
    name: 'stories are isolated from each other',
    async run(index) {
      const storyA = uniqueStoryId('story-a');
      const storyB = uniqueStoryId('story-b');
      const random = seededRandom(5);
      const shared = randomVector(random, index.dimensions);
      await index.upsert(storyA, [makeRecord(storyA, 'same-id', shared, { importance: 0.1 })]);
      await index.upsert(storyB, [
        makeRecord(storyB, 'same-id', randomVector(random, index.dimensions), { importance: 0.9 }),
        makeRecord(storyB, 'only-b', randomVector(random, index.dimensions)),
      ]);
      await eventually(index, async () => {
        // Story B's records are visible before story A is read, so a read that reached into B would show them.
        assert.equal(await count(index, storyB), 2);
        assert.equal(await count(index, storyA), 1);
        const inA = await index.query(storyA, { vector: shared, topK: 10 });
        assert.deepEqual(ids(inA), ['same-id']);
        assert.equal(inA[0]!.metadata.storyId, storyA);
        assert.equal(inA[0]!.metadata.importance, 0.1);
        assert.deepEqual(ids(await index.fetch(storyA, ['only-b'])), []);
        // A filter that B's records match too (every record is a scene) still reads story A only.
        for (const filter of [{ type: 'scene' }, { importance: { $gte: 0 } }] as MetadataFilter[]) {
          const filtered = await index.query(storyA, { vector: shared, topK: 10, filter });
          assert.deepEqual(ids(filtered), ['same-id'], `filter ${JSON.stringify(filter)}`);
          assert.equal(filtered[0]!.metadata.storyId, storyA);
          assert.equal(filtered[0]!.metadata.importance, 0.1);
        }
      });
      await index.delete(storyA, { ids: ['same-id'] });
      await eventually(index, async () => assert.equal(await count(index, storyA), 0));
      await settle(index);
      const [stillInB] = await index.fetch(storyB, ['same-id']);
      assert.equal(stillInB?.metadata.importance, 0.9);
      assert.equal(await count(index, storyB), 2);
    },
  },
  ...filterCases,
  {
    name: 'a filter is applied before topK, not to the topK best',
    async run(index) {
      const storyId = uniqueStoryId('filter-topk');
      const random = seededRandom(13);
      const query = randomVector(random, index.dimensions);
      const near = Float32Array.from(query);
      // Twenty scenes closer to the query than the one character: a post-filter of the top 5 would find nothing.
      const records = Array.from({ length: 20 }, (_, i) =>
        makeRecord(storyId, `scene-${String(i).padStart(2, '0')}`, near, { type: 'scene' }),
      );
      const far = Float32Array.from(query, (value) => -value);
      far[0] = far[0]! + 0.1;
      records.push(makeRecord(storyId, 'the-character', far, { type: 'character' }));
      await index.upsert(storyId, records);
      await eventually(index, async () => {
        const matches = await index.query(storyId, { vector: query, topK: 5, filter: { type: 'character' } });
        assert.deepEqual(ids(matches), ['the-character']);
      });
    },
  },
  {
    name: 'an unknown filter field or operator is a ValidationError',
    async run(index) {
      const storyId = uniqueStoryId('bad-filter');
      const vector = randomVector(seededRandom(1), index.dimensions);
      await index.upsert(storyId, [makeRecord(storyId, 'a', vector)]);
      const bad: unknown[] = [
        { mood: 'grim' },
        { importance: { $between: [0, 1] } },
        { $or: { type: 'scene' } },
        { $and: [{ colour: 'red' }] },
        { timestamp: { $gt: 'yesterday' } },
      ];
      for (const filter of bad) {
        await rejectsWith(
          index.query(storyId, { vector, topK: 1, filter: filter as MetadataFilter }),
          ValidationError.isInstance,
          `ValidationError for ${JSON.stringify(filter)}`,
        );
      }
    },
  },
  {
    name: 'a record of the wrong dimension is a ValidationError and nothing of its batch is stored',
    async run(index) {
      const storyId = uniqueStoryId('bad-dimension');
      const random = seededRandom(17);
      const kept = randomVector(random, index.dimensions);
      await index.upsert(storyId, [makeRecord(storyId, 'kept', kept, { importance: 0.3 })]);
      await eventually(index, async () => assert.equal(await count(index, storyId), 1));
      const error = await rejectsWith(
        index.upsert(storyId, [
          makeRecord(storyId, 'kept', randomVector(random, index.dimensions), { importance: 0.9 }),
          makeRecord(storyId, 'fresh', randomVector(random, index.dimensions)),
          makeRecord(storyId, 'too-short', randomVector(random, index.dimensions - 1 || 2)),
        ]),
        ValidationError.isInstance,
        'ValidationError',
      );
      assert.match(error.message, /too-short/, 'the message names the record at fault');
      // Give an eventually consistent backend the time a wrongly accepted write would need to show.
      await settle(index);
      const fetched = await index.fetch(storyId, ['kept', 'fresh']);
      assert.deepEqual(ids(fetched), ['kept']);
      assert.equal(fetched[0]!.metadata.importance, 0.3);
      assertValuesClose(fetched[0]!.values, kept, 'the earlier record is intact');
      assert.equal(await count(index, storyId), 1);
    },
  },
  {
    name: 'NaN, Infinity and the zero vector are ValidationErrors',
    async run(index) {
      const storyId = uniqueStoryId('bad-values');
      const random = seededRandom(19);
      const withValue = (value: number) => {
        const values = randomVector(random, index.dimensions);
        values[index.dimensions - 1] = value;
        return values;
      };
      const cases: Array<[string, Float32Array<ArrayBuffer>]> = [
        ['nan', withValue(Number.NaN)],
        ['infinity', withValue(Number.POSITIVE_INFINITY)],
        ['minus-infinity', withValue(Number.NEGATIVE_INFINITY)],
        ['zero', new Float32Array(index.dimensions)],
      ];
      // Each bad record follows a good one in its batch: the batch is refused whole.
      const good = makeRecord(storyId, 'good', randomVector(random, index.dimensions));
      for (const [id, values] of cases) {
        const error = await rejectsWith(
          index.upsert(storyId, [good, makeRecord(storyId, id, values)]),
          ValidationError.isInstance,
          `ValidationError for ${id}`,
        );
        assert.match(error.message, new RegExp(id), 'the message names the record at fault');
      }
      await settle(index);
      assert.equal(await count(index, storyId), 0, 'nothing of a refused batch is stored');
    },
  },
  {
    name: 'metadata is validated, including its storyId',
    async run(index) {
      const storyId = uniqueStoryId('bad-metadata');
      const values = randomVector(seededRandom(23), index.dimensions);
      const bad: Array<[string, Record<string, unknown>]> = [
        ['other-story', { storyId: 'another-story' }],
        ['bad-type', { type: 'poem' }],
        ['bad-importance', { importance: 2 }],
        ['bad-timestamp', { timestamp: -1 }],
        ['bad-characters', { characters: 'mira' }],
      ];
      // Each bad record follows a good one in its batch: the batch is refused whole.
      const good = makeRecord(storyId, 'good', values);
      for (const [id, overrides] of bad) {
        const record = makeRecord(storyId, id, values);
        const broken = { ...record, metadata: { ...record.metadata, ...overrides } } as VectorRecordInput;
        const error = await rejectsWith(
          index.upsert(storyId, [good, broken]),
          ValidationError.isInstance,
          `ValidationError for ${id}`,
        );
        assert.match(error.message, new RegExp(id), 'the message names the record at fault');
      }
      await rejectsWith(
        index.upsert(storyId, [good, { ...makeRecord(storyId, 'bad id!', values) }]),
        ValidationError.isInstance,
        'ValidationError for an invalid id',
      );
      await settle(index);
      assert.equal(await count(index, storyId), 0, 'nothing of a refused batch is stored');
    },
  },
  {
    name: 'the query is validated: vector dimension, finite values and topK range',
    async run(index) {
      const storyId = uniqueStoryId('bad-query');
      const random = seededRandom(29);
      const vector = randomVector(random, index.dimensions);
      await index.upsert(storyId, [makeRecord(storyId, 'a', vector)]);
      const withNaN = Float32Array.from(vector);
      withNaN[0] = Number.NaN;
      const bad: Array<[string, { vector: Float32Array; topK: number }]> = [
        ['a longer vector', { vector: randomVector(random, index.dimensions + 1), topK: 1 }],
        ['a NaN coordinate', { vector: withNaN, topK: 1 }],
        ['the zero vector', { vector: new Float32Array(index.dimensions), topK: 1 }],
        ['topK 0', { vector, topK: 0 }],
        ['a fractional topK', { vector, topK: 1.5 }],
        ['topK above maxTopK', { vector, topK: index.capabilities.maxTopK + 1 }],
      ];
      for (const [label, query] of bad) {
        await rejectsWith(index.query(storyId, query), ValidationError.isInstance, `ValidationError for ${label}`);
      }
    },
  },
  {
    name: 'fetch returns the asked records in the asked order and skips missing ids',
    async run(index) {
      const storyId = uniqueStoryId('fetch');
      const random = seededRandom(31);
      const records = ['a', 'b', 'c', 'd'].map((id) => makeRecord(storyId, id, randomVector(random, index.dimensions)));
      await index.upsert(storyId, records);
      await eventually(index, async () => {
        const fetched = await index.fetch(storyId, ['d', 'missing', 'a', 'c']);
        assert.deepEqual(ids(fetched), ['d', 'a', 'c']);
        assertValuesClose(fetched[0]!.values, records[3]!.values, 'values of d');
        assert.deepEqual(await index.fetch(storyId, []), []);
        assert.deepEqual(await index.fetch(uniqueStoryId('empty'), ['a']), []);
      });
    },
  },
  {
    name: 'delete by ids removes those records and says how many',
    async run(index) {
      const storyId = uniqueStoryId('delete-ids');
      const random = seededRandom(37);
      const records = ['a', 'b', 'c', 'd'].map((id) => makeRecord(storyId, id, randomVector(random, index.dimensions)));
      await index.upsert(storyId, records);
      await eventually(index, async () => assert.equal(await count(index, storyId), 4));
      const deleted = await index.delete(storyId, { ids: ['b', 'd', 'missing'] });
      assert.ok(deleted === 2 || deleted === -1, `2 deleted (or -1 when unknown), got ${deleted}`);
      await eventually(index, async () => {
        assert.equal(await count(index, storyId), 2);
        assert.deepEqual(ids(await index.fetch(storyId, ['a', 'b', 'c', 'd'])), ['a', 'c']);
        const matches = await index.query(storyId, { vector: records[1]!.values, topK: 10 });
        assert.deepEqual(sorted(ids(matches)), ['a', 'c']);
      });
    },
  },
  {
    name: 'delete by filter removes the matching records only',
    skipUnless: (index) => (index.capabilities.deleteByFilter ? undefined : 'capabilities.deleteByFilter is false'),
    async run(index) {
      // Another story holds records the filter matches too: they stay.
      const { storyId, otherStory, records } = await filterFixtureBesideAnother(index, 'delete-filter');
      const deleted = await index.delete(storyId, { filter: { $or: [{ type: 'summary' }, { characters: 'oren' }] } });
      assert.ok(deleted === 3 || deleted === -1, `3 deleted (or -1 when unknown), got ${deleted}`);
      await eventually(index, async () => {
        const left = await index.query(storyId, { vector: records[0]!.values, topK: 10 });
        assert.deepEqual(sorted(ids(left)), ['f3', 'f4', 'f6', 'f7']);
        assert.equal(await count(index, storyId), 4);
      });
      await settle(index);
      assert.equal(await count(index, otherStory), 7, 'the other story keeps every record');
    },
  },
  {
    name: 'delete by a negative filter also removes the records that lack the field',
    skipUnless: (index) => (index.capabilities.deleteByFilter ? undefined : 'capabilities.deleteByFilter is false'),
    async run(index) {
      // Another story holds records the filter matches too, those lacking the field among them: they stay.
      const { storyId, otherStory, records } = await filterFixtureBesideAnother(index, 'delete-negative');
      // f3, f4 and f7 have no chapter; f7 has nobody in it.
      const deleted = await index.delete(storyId, {
        filter: { chapterId: { $ne: 'chapter-0001' }, characters: { $nin: ['kell'] } },
      });
      assert.ok(deleted === 3 || deleted === -1, `3 deleted (or -1 when unknown), got ${deleted}`);
      await eventually(index, async () => {
        const left = await index.query(storyId, { vector: records[0]!.values, topK: 10 });
        assert.deepEqual(sorted(ids(left)), ['f1', 'f2', 'f4', 'f6']);
        assert.equal(await count(index, storyId), 4);
      });
      await settle(index);
      assert.equal(await count(index, otherStory), 7, 'the other story keeps every record');
    },
  },
  {
    name: 'delete refuses a filter that holds for every record, however it is nested (deleteStory does that)',
    async run(index) {
      const storyId = uniqueStoryId('delete-everything');
      const records = filterFixture(index, storyId);
      await index.upsert(storyId, records);
      await eventually(index, async () => assert.equal(await count(index, storyId), 7));
      const everything: MetadataFilter[] = [
        {},
        { chapterId: undefined },
        { type: {} },
        { $and: [{}] },
        { $and: [{ chapterId: undefined }, { $or: [{ type: undefined }] }] },
        { $or: [{ type: 'scene' }, {}] },
        { $or: [{ importance: {} }, { type: 'summary' }] },
      ];
      for (const filter of everything) {
        await assert.rejects(
          index.delete(storyId, { filter }),
          (error: unknown) => ValidationError.isInstance(error),
          `delete with ${JSON.stringify(filter)}`,
        );
      }
      await settle(index);
      assert.equal(await count(index, storyId), 7, 'nothing was deleted');
    },
  },
  {
    name: 'deleteStory drops one story and leaves the others',
    async run(index) {
      const doomed = uniqueStoryId('doomed');
      const kept = uniqueStoryId('kept');
      const random = seededRandom(41);
      const vector = randomVector(random, index.dimensions);
      await index.upsert(doomed, [makeRecord(doomed, 'a', vector), makeRecord(doomed, 'b', vector)]);
      await index.upsert(kept, [makeRecord(kept, 'a', vector)]);
      await eventually(index, async () => assert.equal(await count(index, doomed), 2));
      await eventually(index, async () => assert.equal(await count(index, kept), 1));
      await index.deleteStory(doomed);
      await eventually(index, async () => {
        assert.equal(await count(index, doomed), 0);
        assert.deepEqual(await index.query(doomed, { vector, topK: 10 }), []);
      });
      await settle(index);
      assert.deepEqual(ids(await index.query(kept, { vector, topK: 10 })), ['a'], 'the other story is intact');
      // The story can be written again afterwards.
      await index.upsert(doomed, [makeRecord(doomed, 'c', vector)]);
      await eventually(index, async () => assert.deepEqual(ids(await index.fetch(doomed, ['a', 'c'])), ['c']));
    },
  },
  {
    name: 'stats counts the records of one story and reports the dimensions',
    async run(index) {
      const storyId = uniqueStoryId('stats');
      const random = seededRandom(43);
      assert.deepEqual(await index.stats(storyId), { count: 0, dimensions: index.dimensions });
      await index.upsert(
        storyId,
        ['a', 'b', 'c'].map((id) => makeRecord(storyId, id, randomVector(random, index.dimensions))),
      );
      await index.upsert(storyId, [makeRecord(storyId, 'a', randomVector(random, index.dimensions))]);
      await eventually(index, async () => {
        assert.deepEqual(await index.stats(storyId), { count: 3, dimensions: index.dimensions });
      });
    },
  },
  {
    name: 'returned values and metadata are copies: mutating them changes nothing stored',
    async run(index) {
      const storyId = uniqueStoryId('copies');
      const values = randomVector(seededRandom(47), index.dimensions);
      const original = Float32Array.from(values);
      const record = makeRecord(storyId, 'a', values, { characters: ['mira'] });
      await index.upsert(storyId, [record]);
      // The caller reuses its buffers after upserting.
      values.fill(0.25);
      (record.metadata.characters as string[]).push('intruder');
      await eventually(index, async () => {
        const [first] = await index.fetch(storyId, ['a']);
        assertValuesClose(first?.values, original, 'values after the input was reused');
        assert.deepEqual(first?.metadata.characters, ['mira']);
      });
      const [fetched] = await index.fetch(storyId, ['a']);
      fetched!.values!.fill(9);
      fetched!.metadata.characters.push('ghost');
      fetched!.metadata.importance = 0;
      const [queried] = await index.query(storyId, { vector: original, topK: 1, includeValues: true });
      queried!.values!.fill(7);
      queried!.metadata.locations.push('nowhere');
      const [again] = await index.fetch(storyId, ['a']);
      assertValuesClose(again?.values, original, 'values after results were mutated');
      assert.deepEqual(again?.metadata.characters, ['mira']);
      assert.deepEqual(again?.metadata.locations, []);
      assert.equal(again?.metadata.importance, 0.5);
    },
  },
  {
    name: 'sharedMetadata changes nothing a caller can see but mutation: the same matches, filter included',
    async run(index) {
      const storyId = uniqueStoryId('shared-metadata');
      const random = seededRandom(59);
      const records = Array.from({ length: 6 }, (_, i) =>
        makeRecord(storyId, `s${i}`, randomVector(random, index.dimensions), {
          characters: i % 2 === 0 ? ['mira'] : ['oren'],
          themes: ['tide'],
          importance: i / 10,
          sceneIndex: i,
          chapterId: 'chapter-0001',
          text: `scene ${i}`,
        }),
      );
      await index.upsert(storyId, records);
      const vector = randomVector(random, index.dimensions);
      for (const filter of [undefined, { characters: { $in: ['mira'] } }]) {
        const query = { vector, topK: 6, includeValues: true, ...(filter ? { filter } : {}) };
        await eventually(index, async () => {
          const copied = await index.query(storyId, query);
          const shared = await index.query(storyId, { ...query, sharedMetadata: true });
          assert.equal(copied.length, filter ? 3 : 6);
          assert.deepEqual(
            shared.map((match) => [match.id, match.metadata, Array.from(match.values ?? [])]),
            copied.map((match) => [match.id, match.metadata, Array.from(match.values ?? [])]),
          );
        });
      }
    },
  },
  {
    name: 'includeValues decides whether query matches carry their values',
    async run(index) {
      const storyId = uniqueStoryId('include-values');
      const values = randomVector(seededRandom(53), index.dimensions);
      await index.upsert(storyId, [makeRecord(storyId, 'a', values)]);
      await eventually(index, async () => {
        const [withValues] = await index.query(storyId, { vector: values, topK: 1, includeValues: true });
        assertValuesClose(withValues?.values, values, 'includeValues: true');
        const [without] = await index.query(storyId, { vector: values, topK: 1 });
        assert.equal(without?.id, 'a');
        assert.equal(without?.values, undefined);
      });
    },
  },
  {
    name: 'concurrent upserts of distinct ids all land',
    async run(index) {
      const storyId = uniqueStoryId('concurrent');
      const random = seededRandom(59);
      const records = Array.from({ length: 25 }, (_, i) =>
        makeRecord(storyId, `c${String(i).padStart(2, '0')}`, randomVector(random, index.dimensions)),
      );
      await Promise.all(records.map((record) => index.upsert(storyId, [record])));
      await eventually(index, async () => {
        assert.equal(await count(index, storyId), records.length);
        const fetched = await index.fetch(
          storyId,
          records.map((record) => record.id),
        );
        assert.deepEqual(
          ids(fetched),
          records.map((record) => record.id),
        );
      });
    },
  },
  {
    name: 'a batch larger than maxUpsertBatch lands whole',
    async run(index) {
      const storyId = uniqueStoryId('big-batch');
      const random = seededRandom(61);
      // Beyond the declared limit when there is a practical one; otherwise simply a large batch.
      const limit = index.capabilities.maxUpsertBatch;
      const size = limit <= 10_000 ? limit + 1 : 2_500;
      const records = Array.from({ length: size }, (_, i) =>
        makeRecord(storyId, `b${String(i).padStart(5, '0')}`, randomVector(random, index.dimensions)),
      );
      await index.upsert(storyId, records);
      const probes = [records[0]!, records[Math.floor(size / 2)]!, records[size - 1]!];
      await eventually(index, async () => {
        assert.equal(await count(index, storyId), size);
        assert.deepEqual(
          ids(
            await index.fetch(
              storyId,
              probes.map((record) => record.id),
            ),
          ),
          probes.map((record) => record.id),
        );
        const [nearest] = await index.query(storyId, { vector: probes[2]!.values, topK: 1 });
        assert.equal(nearest?.id, probes[2]!.id);
      });
    },
  },
  {
    name: 'delete by more ids than one request of a backend takes removes every one of them',
    async run(index) {
      const storyId = uniqueStoryId('big-delete');
      const random = seededRandom(67);
      // 2,500: more than two of Pinecone's requests (1,000 ids each) and a part of a third.
      const records = Array.from({ length: 2_500 }, (_, i) =>
        makeRecord(storyId, `d${String(i).padStart(5, '0')}`, randomVector(random, index.dimensions)),
      );
      await index.upsert(storyId, records);
      await eventually(index, async () => assert.equal(await count(index, storyId), records.length));
      const deleted = await index.delete(storyId, { ids: records.map((record) => record.id) });
      assert.ok(deleted === records.length || deleted === -1, `${records.length} deleted, got ${deleted}`);
      await eventually(index, async () => {
        assert.equal(await count(index, storyId), 0);
        assert.deepEqual(ids(await index.fetch(storyId, ids(records))), []);
      });
    },
  },
  {
    name: 'an aborted signal rejects with AbortedError and writes nothing',
    async run(index) {
      const storyId = uniqueStoryId('aborted');
      const vector = randomVector(seededRandom(67), index.dimensions);
      const signal = AbortSignal.abort(new Error('stop'));
      await rejectsWith(
        index.upsert(storyId, [makeRecord(storyId, 'a', vector)], { signal }),
        AbortedError.isInstance,
        'AbortedError from upsert',
      );
      await rejectsWith(
        index.query(storyId, { vector, topK: 1, signal }),
        AbortedError.isInstance,
        'AbortedError from query',
      );
      await settle(index);
      assert.equal(await count(index, storyId), 0, 'an aborted upsert writes nothing');
      await index.upsert(storyId, [makeRecord(storyId, 'kept', vector)]);
      await eventually(index, async () => assert.equal(await count(index, storyId), 1));
      await rejectsWith(
        index.deleteStory(storyId, { signal }),
        AbortedError.isInstance,
        'AbortedError from deleteStory',
      );
      await settle(index);
      assert.equal(await count(index, storyId), 1, 'an aborted deleteStory drops nothing');
    },
  },
];

/**
 * Registers the `VectorIndex` conformance suite with a test runner and returns the number of cases.
 *
 * `create` must return an index with no records in the stories the suite writes; every case uses its own random
 * story ids, so one shared backend index (a Pinecone index with a namespace per story) serves every case. Cases that
 * need a capability the adapter declares it lacks are skipped with the reason. An index whose
 * `capabilities.readAfterWrite` is false is given `consistencyWindowMs` (default 5,000 ms) to settle before each
 * check that something is absent.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest';
 * import { createMemoryVectorIndex } from 'storyloom';
 * import { runVectorIndexSuite } from 'storyloom/testing';
 *
 * runVectorIndexSuite({ describe, it }, { name: 'memory', create: () => createMemoryVectorIndex({ dimensions: 8 }) });
 * ```
 */
export function runVectorIndexSuite(
  api: SuiteTestApi,
  options: SuiteOptions<VectorIndex> & VectorIndexSuiteExtras,
): number {
  const { consistencyWindowMs } = options;
  if (consistencyWindowMs !== undefined && !(Number.isFinite(consistencyWindowMs) && consistencyWindowMs >= 0)) {
    throw new Error(
      `VectorIndex conformance: consistencyWindowMs must be a number of ms >= 0, not ${consistencyWindowMs}`,
    );
  }
  return registerSuite(api, 'VectorIndex conformance', vectorIndexCases, {
    ...options,
    create: async () => {
      const index = await options.create();
      if (consistencyWindowMs !== undefined) consistencyWindows.set(index, consistencyWindowMs);
      return index;
    },
  });
}
