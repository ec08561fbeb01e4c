import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type MmrEntry, type MmrSelection, selectByMmr } from './mmr.js';

/** The plain greedy loop: every remaining entry compared with every newly chosen one. The reference. */
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
