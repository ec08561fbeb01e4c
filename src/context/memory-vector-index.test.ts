import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StoryloomError, ValidationError } from '../core/errors.js';
import type { VectorRecordInput } from '../state/schema.js';
import { runVectorIndexSuite } from '../testing/vector-index-suite.js';
import { createMemoryVectorIndex } from './memory-vector-index.js';
import { kthLargest, probeSize, TopKHeap, takePassing } from './top-k.js';

runVectorIndexSuite({ describe, it }, { name: 'memory', create: () => createMemoryVectorIndex({ dimensions: 8 }) });

const byScoreThenId = (a: { score: number; id: string }, b: { score: number; id: string }) =>
  b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function record(id: string, values: number[], storyId = 's1'): VectorRecordInput {
  return {
    id,
    values: Float32Array.from(values),
    metadata: { storyId, type: 'scene', timestamp: 1, sourceId: id },
  };
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
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

describe('TopKHeap', () => {
  it('keeps the same entries, in the same order, as a full sort', () => {
    fc.assert(
      fc.property(
        // Few distinct scores and ids so that ties, and ties on both score and id, are common.
        fc.array(fc.record({ score: fc.integer({ min: -3, max: 3 }), id: fc.stringMatching(/^[a-e]{1,2}$/) }), {
          maxLength: 60,
        }),
        fc.integer({ min: 0, max: 70 }),
        (candidates, k) => {
          const heap = new TopKHeap<number>(k);
          const offered: Array<{ score: number; id: string; position: number }> = [];
          candidates.forEach((candidate, position) => {
            // The shortcuts the indexes take before offering (threshold, accepts) must agree with what offer keeps:
            // a candidate is kept exactly when it ranks among the k best offered so far.
            offered.push({ ...candidate, position });
            const keeps = [...offered]
              .sort(byScoreThenId)
              .slice(0, k)
              .some((entry) => entry.position === position);
            expect(heap.accepts(candidate.score, candidate.id)).toBe(keeps);
            if (candidate.score < heap.threshold) expect(keeps).toBe(false);
            heap.offer(candidate.score, candidate.id, position);
          });
          const kept = heap.takeSorted().map(({ score, id }) => ({ score, id }));
          const expected = [...candidates]
            .sort(byScoreThenId)
            .slice(0, k)
            .map(({ score, id }) => ({ score, id }));
          expect(kept).toEqual(expected);
          expect(heap.size).toBe(0);
        },
      ),
      { numRuns: 500 },
    );
  });
  it('kthLargest finds the k-th largest value, ties and all', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: -5, max: 5 }), { minLength: 1, maxLength: 80 }),
        fc.nat(),
        (values, pick) => {
          const k = 1 + (pick % values.length);
          const sorted = [...values].sort((a, b) => b - a);
          expect(kthLargest(Float64Array.from(values), values.length, k)).toBe(sorted[k - 1]);
        },
      ),
      { numRuns: 1_000 },
    );
    expect(() => kthLargest(new Float64Array(3), 3, 4)).toThrow(RangeError);
  });

  it('kthLargest narrows long ranges by a sample and still finds the k-th largest, whatever the data', () => {
    // Long enough for the sampled path; values from few levels (many ties, a sample that can miss the top) to many,
    // sorted and reversed runs, and k from 1 to past the sampled path's reach.
    const shaped = fc.tuple(
      fc.integer({ min: 2_048, max: 12_000 }),
      fc.constantFrom(2, 7, 1_000, 1e9),
      fc.constantFrom('random', 'ascending', 'descending', 'one-spike'),
      fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    );
    fc.assert(
      fc.property(shaped, fc.nat(), ([length, levels, order, seed], pick) => {
        let state = seed;
        const next = () => {
          state = (Math.imul(state, 48_271) + 11) % 2_147_483_647;
          return state / 2_147_483_647;
        };
        const values = Array.from({ length }, () => Math.floor(next() * levels) / levels - 0.5);
        if (order === 'ascending') values.sort((a, b) => a - b);
        if (order === 'descending') values.sort((a, b) => b - a);
        if (order === 'one-spike') values[Math.floor(next() * length)] = 2;
        const k = 1 + (pick % (pick % 3 === 0 ? length : Math.ceil(length / 16)));
        const sorted = [...values].sort((a, b) => b - a);
        const scratch = Float64Array.from(values);
        expect(kthLargest(scratch, length, k)).toBe(sorted[k - 1]);
        // It only reorders: the same values are still there.
        expect([...scratch].sort((a, b) => b - a)).toEqual(sorted);
      }),
      { numRuns: 300 },
    );
    // A sample that lands on the only high values (every 32nd of 8,192) leaves too few above its estimate for k = 400:
    // the whole range decides.
    const adversarial = new Float64Array(8_192);
    for (let i = 0; i < 256; i++) adversarial[i * 32] = 1;
    for (let i = 0; i < 8_192; i++) if (i % 32 !== 0) adversarial[i] = 0.5 - i / 1e6;
    const expected = [...adversarial].sort((a, b) => b - a)[399];
    expect(kthLargest(adversarial, 8_192, 400)).toBe(expected);
  });

  it('takePassing keeps the k best that pass, or says the ranking was too short to know', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ score: fc.integer({ min: -3, max: 3 }), pass: fc.boolean() }), { maxLength: 60 }),
        fc.integer({ min: 0, max: 20 }),
        fc.integer({ min: 0, max: 70 }),
        (candidates, k, probe) => {
          const all = candidates
            .map((candidate, position) => ({ score: candidate.score, id: `c${position}`, item: candidate.pass }))
            .sort(byScoreThenId);
          const expected = all.filter((entry) => entry.item).slice(0, k);
          const ranked = all.slice(0, probe);
          const kept = takePassing(ranked, k, all.length, (pass) => pass);
          if (kept === undefined) {
            // Undefined only when the probe really was too short: fewer than k passed in it, and some were unranked.
            expect(ranked.filter((entry) => entry.item).length).toBeLessThan(k);
            expect(ranked.length).toBeLessThan(all.length);
          } else {
            expect(kept).toEqual(expected);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('createMemoryVectorIndex', () => {
  it('keeps the last of the same id in one batch, in what it returns and in what it scores', async () => {
    const index = createMemoryVectorIndex({ dimensions: 3, initialCapacity: 4 });
    // 130 records: the columns are written in blocks of 64, and the two versions of "dup" fall in different blocks.
    const records = Array.from({ length: 130 }, (_, at) => record(`r${at}`, [0.1, 0.2, 1]));
    records[5] = record('dup', [1, 0, 0]);
    records[100] = record('dup', [0, 1, 0]);
    await index.upsert('s1', records);
    const [fetched] = await index.fetch('s1', ['dup']);
    expect([...fetched!.values]).toEqual([0, 1, 0]);
    const [best] = await index.query('s1', { vector: Float32Array.from([0, 1, 0]), topK: 1 });
    expect(best).toMatchObject({ id: 'dup', score: 1 });
    const [other] = await index.query('s1', { vector: Float32Array.from([1, 0, 0]), topK: 1 });
    expect(other!.id).not.toBe('dup');
    expect((await index.stats('s1')).count).toBe(129);
  });

  it('keeps the smallest ids when the topK cut falls among equal scores, whatever order they were written in', async () => {
    const index = createMemoryVectorIndex({ dimensions: 3 });
    // Identical vectors score exactly alike. Written largest id first, each later tie must displace a kept one.
    await index.upsert('s1', [
      record('tie-d', [1, 1, 0]),
      record('tie-c', [1, 1, 0]),
      record('tie-b', [1, 1, 0]),
      record('tie-a', [1, 1, 0]),
      record('best', [1, 0, 0]),
    ]);
    const vector = Float32Array.from([1, 0.2, 0]);
    const top = async (topK: number) => (await index.query('s1', { vector, topK })).map((match) => match.id);
    expect(await top(2)).toEqual(['best', 'tie-a']);
    expect(await top(3)).toEqual(['best', 'tie-a', 'tie-b']);
    expect(await top(5)).toEqual(['best', 'tie-a', 'tie-b', 'tie-c', 'tie-d']);
  });

  it('answers like a brute-force full sort after any sequence of upserts and deletes', async () => {
    const operation = fc.oneof(
      fc.record({
        kind: fc.constant('upsert' as const),
        id: fc.integer({ min: 0, max: 25 }),
        // Small integers make equal scores (ties) frequent; the all-zero vector is avoided below.
        values: fc.array(fc.integer({ min: -2, max: 2 }), { minLength: 3, maxLength: 3 }),
      }),
      fc.record({ kind: fc.constant('delete' as const), id: fc.integer({ min: 0, max: 25 }) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(operation, { maxLength: 80 }),
        fc.array(fc.integer({ min: -2, max: 2 }), { minLength: 3, maxLength: 3 }),
        fc.integer({ min: 1, max: 30 }),
        async (operations, queryValues, topK) => {
          fc.pre(queryValues.some((value) => value !== 0));
          // Capacity 1 makes the partition grow, shrink and swap slots all the time.
          const index = createMemoryVectorIndex({ dimensions: 3, initialCapacity: 1 });
          const model = new Map<string, number[]>();
          for (const op of operations) {
            const id = `id-${String(op.id).padStart(2, '0')}`;
            if (op.kind === 'upsert') {
              if (op.values.every((value) => value === 0)) continue;
              await index.upsert('s1', [record(id, op.values)]);
              model.set(id, op.values);
            } else {
              expect(await index.delete('s1', { ids: [id] })).toBe(model.delete(id) ? 1 : 0);
            }
          }
          const reference = new Map([...model].map(([id, values]) => [id, cosine(values, queryValues)]));
          const expected = [...reference]
            .map(([id, score]) => ({ id, score }))
            .sort(byScoreThenId)
            .slice(0, topK);
          const matches = await index.query('s1', { vector: Float32Array.from(queryValues), topK });
          expect(matches).toHaveLength(expected.length);
          expect(new Set(matches.map((match) => match.id)).size).toBe(matches.length);
          matches.forEach((match, rank) => {
            // Each hit carries its true score, and that score belongs at this rank. Two different vectors with
            // mathematically equal scores may round apart by an ulp, so order is checked to 1e-6 here, and exact
            // ties (as the index computed them) must come in id order.
            expect(match.score).toBeCloseTo(reference.get(match.id)!, 6);
            expect(match.score).toBeCloseTo(expected[rank]!.score, 6);
            const previous = matches[rank - 1];
            if (previous) {
              expect(previous.score > match.score || (previous.score === match.score && previous.id < match.id)).toBe(
                true,
              );
            }
          });
          expect((await index.stats('s1')).count).toBe(model.size);
          const fetched = await index.fetch('s1', [...model.keys()]);
          expect(fetched.map((match) => Array.from(match.values ?? []))).toEqual([...model.values()]);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('answers filtered queries like a brute-force filter and sort, whether the filter passes few or most', async () => {
    await fc.assert(
      fc.asyncProperty(
        // More records than the probe ranks first (topK and half again, plus 16), so both paths run.
        fc.array(fc.array(fc.integer({ min: -2, max: 2 }), { minLength: 3, maxLength: 3 }), {
          minLength: 50,
          maxLength: 90,
        }),
        fc.array(fc.integer({ min: -2, max: 2 }), { minLength: 3, maxLength: 3 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 0, max: 100 }),
        fc.boolean(),
        async (vectors, queryValues, topK, horizon, below) => {
          const usable = vectors.filter((values) => values.some((value) => value !== 0));
          fc.pre(queryValues.some((value) => value !== 0) && usable.length > 0);
          const index = createMemoryVectorIndex({ dimensions: 3 });
          const records = usable.map((values, at) => {
            const base = record(`id-${String(at).padStart(2, '0')}`, values);
            return { ...base, metadata: { ...base.metadata, sceneIndex: at } };
          });
          await index.upsert('s1', records);
          // $lt of a small horizon passes few records (the filtered scan), of a large one most (the probe).
          const filter = { sceneIndex: below ? { $lt: horizon } : { $gte: horizon } };
          const expected = records
            .filter((item) => (below ? item.metadata.sceneIndex < horizon : item.metadata.sceneIndex >= horizon))
            .map((item) => ({ id: item.id, score: cosine(Array.from(item.values), queryValues) }))
            .sort(byScoreThenId)
            .slice(0, topK);
          const matches = await index.query('s1', { vector: Float32Array.from(queryValues), topK, filter });
          // Equal cosines may round an ulp apart, so ties at the cut are compared by score, not by id.
          expect(matches).toHaveLength(expected.length);
          expect(new Set(matches.map((match) => match.id)).size).toBe(matches.length);
          const passing = new Set(expected.map((item) => item.id));
          for (const [rank, match] of matches.entries()) {
            expect(match.score).toBeCloseTo(expected[rank]!.score, 6);
            const at = Number(match.id.slice(3));
            expect(below ? at < horizon : at >= horizon).toBe(true);
            if (!passing.has(match.id)) expect(match.score).toBeCloseTo(expected.at(-1)!.score, 6);
          }
          expect(probeSize(topK, records.length)).toBeLessThanOrEqual(records.length);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('validates its options', () => {
    for (const options of [
      { dimensions: 0 },
      { dimensions: 1.5 },
      { dimensions: 8_193 },
      { dimensions: 8, initialCapacity: 0 },
    ]) {
      expect(() => createMemoryVectorIndex(options), JSON.stringify(options)).toThrow(ValidationError);
    }
    expect(() => createMemoryVectorIndex(undefined as unknown as { dimensions: number })).toThrow(/dimensions/);
    expect(createMemoryVectorIndex({ dimensions: 8_192 }).dimensions).toBe(8_192);
  });

  it('says which record was wrong, where and why, listing every problem', async () => {
    const index = createMemoryVectorIndex({ dimensions: 3 });
    const good = record('good', [1, 0, 0]);
    const nan = record('has-nan', [1, Number.NaN, 0]);
    const otherStory = record('elsewhere', [1, 0, 0], 's2');
    const error = await index.upsert('s1', [good, nan, otherStory]).catch((caught: unknown) => caught);
    expect(ValidationError.isInstance(error)).toBe(true);
    const { message, problems } = error as ValidationError;
    expect(message).toContain('records.1 (id "has-nan").values.1');
    expect(message).toContain('and 1 more problem');
    expect(problems).toEqual([
      { path: 'records.1 (id "has-nan").values.1', message: 'must be a finite number, got NaN' },
      {
        path: 'records.2 (id "elsewhere").metadata.storyId',
        message: 'is "s2" but the record is upserted into story "s1"',
      },
    ]);
    expect((await index.stats('s1')).count).toBe(0);
  });

  it('rejects a plain array of numbers as values and an invalid story id', async () => {
    const index = createMemoryVectorIndex({ dimensions: 2 });
    const plain = { ...record('a', [1, 0]), values: [1, 0] as unknown as Float32Array<ArrayBuffer> };
    await expect(index.upsert('s1', [plain])).rejects.toThrow(/must be a Float32Array/);
    await expect(index.stats('not a story id')).rejects.toSatisfy(ValidationError.isInstance);
  });

  it('refuses an empty deletion filter, which would drop the whole story', async () => {
    const index = createMemoryVectorIndex({ dimensions: 2 });
    await index.upsert('s1', [record('a', [1, 0])]);
    await expect(index.delete('s1', { filter: {} })).rejects.toThrow(/deleteStory/);
    await expect(index.delete('s1', {} as { ids: string[] })).rejects.toSatisfy(ValidationError.isInstance);
    expect((await index.stats('s1')).count).toBe(1);
  });

  it('fetches records with their values exactly as stored', async () => {
    const index = createMemoryVectorIndex({ dimensions: 2 });
    await index.upsert('s1', [record('a', [3, 4])]);
    const [fetched] = await index.fetch('s1', ['a']);
    expect(fetched).not.toHaveProperty('score');
    expect(Array.from(fetched?.values ?? [])).toEqual([3, 4]);
  });

  it('refuses every call once closed', async () => {
    const index = createMemoryVectorIndex({ dimensions: 2 });
    await index.upsert('s1', [record('a', [1, 0])]);
    await index.close();
    const error = await index.stats('s1').catch((caught: unknown) => caught);
    expect(StoryloomError.isInstance(error) && error.code).toBe('CLOSED');
    await expect(index.query('s1', { vector: Float32Array.from([1, 0]), topK: 1 })).rejects.toThrow(/closed/);
  });
});

describe('createMemoryVectorIndex: dimension-major scoring', () => {
  /** The per-record dot product the index must reproduce bit for bit, sparse query or dense. */
  function referenceScores(records: ReadonlyArray<{ id: string; values: number[] }>, query: number[]) {
    let querySquared = 0;
    for (const value of query) querySquared += Math.fround(value) * Math.fround(value);
    const inverseQuery = 1 / Math.sqrt(querySquared);
    const unit = query.map((value) => Math.fround(value) * inverseQuery);
    return records.map(({ id, values }) => {
      const stored = Float32Array.from(values);
      let squared = 0;
      for (const value of stored) squared += value * value;
      let dot = 0;
      for (let i = 0; i < stored.length; i++) dot += unit[i]! * stored[i]!;
      return { id, score: Math.max(-1, Math.min(1, dot * (1 / Math.sqrt(squared)))) };
    });
  }

  const dimensions = 24;
  // Sparse vectors (mostly zeros, like the hashing embedder's) and dense ones, in the same index.
  const coordinate = fc.oneof(
    { weight: 3, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.double({ min: -1, max: 1, noNaN: true }) },
  );
  const sparse = fc.array(coordinate, { minLength: dimensions, maxLength: dimensions });
  const dense = fc.array(fc.double({ min: -1, max: 1, noNaN: true }), {
    minLength: dimensions,
    maxLength: dimensions,
  });
  const vector = fc.oneof(sparse, dense).filter((values) => values.some((value) => Math.fround(value) !== 0));

  it('gives sparse and dense queries exactly the scores and ranking of a per-record dot product', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(vector, { minLength: 1, maxLength: 40 }),
        fc.array(vector, { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 1, max: 50 }),
        async (vectors, queries, topK) => {
          const index = createMemoryVectorIndex({ dimensions, initialCapacity: 1 });
          const records = vectors.map((values, position) => ({ id: `r${String(position).padStart(2, '0')}`, values }));
          await index.upsert(
            's1',
            records.map(({ id, values }) => record(id, values)),
          );
          for (const query of queries) {
            const expected = referenceScores(records, query).sort(byScoreThenId).slice(0, topK);
            const matches = await index.query('s1', { vector: Float32Array.from(query), topK });
            expect(matches.map(({ id, score }) => ({ id, score }))).toEqual(expected);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('never serves a stale score: a write or a changed query vector between two queries is seen', async () => {
    const index = createMemoryVectorIndex({ dimensions: 2 });
    await index.upsert('s1', [record('a', [1, 0]), record('b', [0, 1])]);
    const query = Float32Array.from([1, 0.1]);
    expect((await index.query('s1', { vector: query, topK: 1 }))[0]?.id).toBe('a');
    await index.upsert('s1', [record('a', [-1, 0])]);
    expect((await index.query('s1', { vector: query, topK: 1 }))[0]?.id).toBe('b');
    query[0] = -1;
    query[1] = 0;
    expect((await index.query('s1', { vector: query, topK: 1 }))[0]?.id).toBe('a');
  });

  describe('large partitions, ranked by a sampled bound first', () => {
    // From 2,048 records on, with topK at most a sixteenth of them, the index keeps only the records at or above a
    // bound estimated from a sample of 256 evenly spaced ones; the ranking must be the full one's all the same.
    const size = 4_096;
    const idOf = (position: number) => `r${String(position).padStart(4, '0')}`;

    async function indexOf(values: (position: number) => number[]) {
      const index = createMemoryVectorIndex({ dimensions: 2, initialCapacity: 1 });
      await index.upsert(
        's1',
        Array.from({ length: size }, (_, position) => record(idOf(position), values(position))),
      );
      return index;
    }

    /** The k best of the whole partition, as the heap over every record ranks them (topK too large to sample). */
    async function fullRanking(index: Awaited<ReturnType<typeof indexOf>>, vector: number[], topK: number) {
      const all = await index.query('s1', { vector: Float32Array.from(vector), topK: size });
      return all.slice(0, topK).map(({ id, score }) => ({ id, score }));
    }

    it('returns the full ranking, ties broken by id', async () => {
      // Few distinct directions: long runs of equal cosines straddle every cut.
      const index = await indexOf((position) => [1, (position * 7919) % 13]);
      for (const topK of [1, 40, 166, 256]) {
        const matches = await index.query('s1', { vector: Float32Array.from([0.3, 1]), topK });
        expect(matches.map(({ id, score }) => ({ id, score }))).toEqual(await fullRanking(index, [0.3, 1], topK));
      }
    });

    it('falls back to ranking every record when the sample puts the bound too high', async () => {
      // The sampled slots (every 16th) hold the closest records, so the bound lets fewer than topK through.
      const index = await indexOf((position) =>
        position % 16 === 0 ? [1, 1 + position / size] : [1, -position / size],
      );
      const matches = await index.query('s1', { vector: Float32Array.from([0, 1]), topK: 200 });
      expect(matches).toHaveLength(200);
      expect(matches.map(({ id, score }) => ({ id, score }))).toEqual(await fullRanking(index, [0, 1], 200));
    });

    it('returns the full ranking when every record scores the same', async () => {
      const index = await indexOf(() => [1, 1]);
      const matches = await index.query('s1', { vector: Float32Array.from([1, 1]), topK: 100 });
      expect(matches.map((match) => match.id)).toEqual(Array.from({ length: 100 }, (_, position) => idOf(position)));
    });
  });

  it('checks the filter only on records good enough to be kept, with the same result as filtering first', async () => {
    const index = createMemoryVectorIndex({ dimensions: 2, initialCapacity: 1 });
    const ids = Array.from({ length: 30 }, (_, position) => `r${String(position).padStart(2, '0')}`);
    await index.upsert(
      's1',
      ids.map((id, position) => ({
        ...record(id, [1, position / 10]),
        metadata: { storyId: 's1', type: 'scene', timestamp: 1, sourceId: id, sceneIndex: position },
      })),
    );
    const matches = await index.query('s1', {
      vector: Float32Array.from([0, 1]),
      topK: 5,
      filter: { sceneIndex: { $lt: 20 } },
    });
    expect(matches.map((match) => match.id)).toEqual(['r19', 'r18', 'r17', 'r16', 'r15']);
  });
});
