import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type MmrEntry, type MmrSelection, selectByMmr } from './mmr.js';

/**
 * The plain greedy loop: every remaining entry compared with every newly chosen one, the best value taken each
 * round (the earliest in the pool on a tie). The reference semantics `selectByMmr` must reproduce exactly.
 */
function eagerMmr(pool: readonly MmrEntry[], k: number, lambda: number): MmrSelection {
  const top = pool[0]?.final ?? 0;
  const scale = top > 0 ? 1 / top : 0;
  const remaining = pool.map((entry, index) => ({ entry, index, maxSimilarity: 0, closest: '' }));
  const chosen: MmrSelection['chosen'] = [];
  const norm = (v: Float32Array) => {
    let squared = 0;
    for (let i = 0; i < v.length; i++) squared += v[i]! * v[i]!;
    return squared;
  };
  const cosine = (a: Float32Array | undefined, b: Float32Array | undefined) => {
    if (!a || !b || a.length !== b.length) return 0;
    let dot = 0;
    for (let i = 0; i < a.length; i++) dot += a[i]! * b[i]!;
    const na = norm(a);
    const nb = norm(b);
    return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
  };
  while (chosen.length < k && remaining.length > 0) {
    let bestAt = 0;
    let bestScore = Number.NEGATIVE_INFINITY;
    remaining.forEach((item, at) => {
      const value = lambda * item.entry.final * scale - (1 - lambda) * item.maxSimilarity;
      if (value > bestScore) {
        bestScore = value;
        bestAt = at;
      }
    });
    const [picked] = remaining.splice(bestAt, 1);
    if (!picked) break;
    chosen.push({ index: picked.index, mmr: bestScore });
    for (const item of remaining) {
      const similarity = cosine(item.entry.values, picked.entry.values);
      if (similarity > item.maxSimilarity || item.closest === '') {
        item.maxSimilarity = Math.max(item.maxSimilarity, similarity);
        if (similarity >= item.maxSimilarity) item.closest = picked.entry.id;
      }
    }
  }
  const dropped = remaining
    .filter((item) => item.index < k)
    .map((item) => ({ index: item.index, similarTo: item.closest, similarity: item.maxSimilarity }));
  return { chosen, dropped };
}

// Few distinct components and scores, so pools are full of ties, duplicates and orthogonal or opposite vectors.
const component = fc.constantFrom(-1, 0, 0, 0.5, 1, 2);
const vector = fc.oneof(
  fc.array(component, { minLength: 4, maxLength: 4 }).map((values) => Float32Array.from(values)),
  fc.array(component, { minLength: 3, maxLength: 3 }).map((values) => Float32Array.from(values)), // mismatched
  fc.constant(undefined), // a lexical-only candidate whose vector is missing
);
const pool = fc
  .array(fc.record({ final: fc.constantFrom(0, 0.2, 0.5, 0.5, 0.9, 1, 3), values: vector }), { maxLength: 24 })
  .map((entries) =>
    entries.sort((a, b) => b.final - a.final).map((entry, index) => ({ id: `c${index}`, ...entry }) as MmrEntry),
  );

// Pools that share vector objects: the very same Float32Array (not only an equal one) under several entries, as the
// retriever's pool can hold when an index hands out one array per record.
const sharedPool = fc
  .tuple(
    fc.array(vector, { minLength: 1, maxLength: 5 }),
    // Hundredths: many ties, and no subnormal top score whose inverse overflows (scores are relevances, 0 to about 2).
    fc.array(fc.record({ final: fc.integer({ min: 0, max: 200 }).map((n) => n / 100), pick: fc.nat() }), {
      maxLength: 60,
    }),
  )
  .map(([vectors, entries]) =>
    entries
      .sort((a, b) => b.final - a.final)
      .map(
        ({ final, pick }, index) => ({ id: `c${index}`, final, values: vectors[pick % vectors.length] }) as MmrEntry,
      ),
  );

describe('selectByMmr', () => {
  it('chooses exactly what the plain greedy loop chooses, with the same values and similarities', () => {
    fc.assert(
      fc.property(
        pool,
        fc.integer({ min: 1, max: 12 }),
        fc.constantFrom(0, 0.3, 0.5, 0.9, 0.95, 1),
        (entries, k, lambda) => {
          expect(selectByMmr(entries, k, lambda)).toStrictEqual(eagerMmr(entries, k, lambda));
        },
      ),
      { numRuns: 3_000 },
    );
  });

  it('chooses what the plain greedy loop chooses in larger pools of shared vectors, for any λ and k', () => {
    fc.assert(
      fc.property(
        sharedPool,
        fc.integer({ min: 0, max: 70 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (entries, k, lambda) => {
          expect(selectByMmr(entries, k, lambda)).toStrictEqual(eagerMmr(entries, k, lambda));
        },
      ),
      { numRuns: 1_000 },
    );
  });

  it('breaks every tie by pool order when all entries are alike', () => {
    const same = Float32Array.from([1, 1, 0]);
    const entries: MmrEntry[] = Array.from({ length: 8 }, (_, i) => ({ id: `c${i}`, final: 0.5, values: same }));
    const selection = selectByMmr(entries, 5, 0.7);
    expect(selection).toStrictEqual(eagerMmr(entries, 5, 0.7));
    expect(selection.chosen.map(({ index }) => index)).toEqual([0, 1, 2, 3, 4]);
  });

  it('works out a bound for a few entries per choice, not for every remaining entry each round', () => {
    // 1,000 candidates, k = 300: a selection that computes every remaining entry's value each round (and sorts
    // them) computes about k × pool = 255,000 of them (seconds at k = 3,000 of 10,000). Each value is computed from
    // the entry's score, so counting reads of `final` counts them.
    const dimensions = 64;
    const entries: MmrEntry[] = Array.from({ length: 1_000 }, (_, i) => {
      const values = new Float32Array(dimensions);
      values[i % dimensions] = 1;
      values[(i * 7 + 3) % dimensions] = 0.5;
      return { id: `c${i}`, final: 1 - i / 2_000, values };
    });
    for (const lambda of [0.95, 0.5]) {
      let reads = 0;
      const counted = entries.map((entry) => ({
        id: entry.id,
        values: entry.values,
        get final() {
          reads++;
          return entry.final;
        },
      }));
      const selection = selectByMmr(counted, 300, lambda);
      expect(selection).toStrictEqual(eagerMmr(entries, 300, lambda));
      expect(reads, `λ ${lambda}`).toBeLessThan(10 * entries.length);
    }
  });

  it('passes over a near-duplicate of a better candidate and says which', () => {
    const a = Float32Array.from([1, 0, 0]);
    const entries: MmrEntry[] = [
      { id: 'best', final: 1, values: a },
      { id: 'copy', final: 0.99, values: Float32Array.from(a) },
      { id: 'other', final: 0.9, values: Float32Array.from([0, 1, 0]) },
    ];
    const selection = selectByMmr(entries, 2, 0.5);
    expect(selection.chosen.map(({ index }) => entries[index]!.id)).toEqual(['best', 'other']);
    expect(selection.dropped).toEqual([{ index: 1, similarTo: 'best', similarity: 1 }]);
  });

  it('compares far fewer pairs than the plain loop when λ is high', () => {
    // 45 mutually dissimilar candidates, k = 15, λ 0.95: the plain loop computes a cosine for every remaining entry
    // after each choice (44 + 43 + ... + 30 = 555); the lazy one only for the entries it brings up to date.
    const dimensions = 64;
    const entries: MmrEntry[] = Array.from({ length: 45 }, (_, i) => {
      const values = new Float32Array(dimensions);
      values[i % dimensions] = 1;
      values[(i * 7 + 3) % dimensions] = 0.5;
      return { id: `c${i}`, final: 1 - i / 100, values };
    });
    let reads = 0;
    const counted = entries.map((entry) => ({
      ...entry,
      get values() {
        reads++;
        return entry.values;
      },
    }));
    const selection = selectByMmr(counted, 15, 0.95);
    expect(selection).toStrictEqual(eagerMmr(entries, 15, 0.95));
    // Each cosine reads two vectors; each squared norm is computed once per vector.
    expect(reads / 2).toBeLessThan(555 / 4);
  });
});
