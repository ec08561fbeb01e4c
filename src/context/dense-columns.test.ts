import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../core/seeded-random.js';
import { createDenseColumns, SIMD_MIN_CAPACITY, simdKernelAvailable } from './dense-columns.js';
import { DENSE_KERNEL_WASM } from './dense-kernel-wasm.js';
import { createMemoryVectorIndex } from './memory-vector-index.js';

describe('dense columns', () => {
  it('runs the SIMD kernel on this runtime (Node 20 has WebAssembly SIMD)', () => {
    expect(simdKernelAvailable()).toBe(true);
    expect(createDenseColumns(SIMD_MIN_CAPACITY, 4).kernel).toBe('simd');
    expect(createDenseColumns(SIMD_MIN_CAPACITY - 1, 4).kernel).toBe('js');
  });

  it('the shipped kernel bytes are the compiled dense-kernel.wat', async () => {
    // @ts-expect-error: a build script in JavaScript, without type declarations.
    const { compileDenseKernel } = await import('../../scripts/build-wasm.mjs');
    const compiled: Buffer = await compileDenseKernel();
    expect(compiled.toString('base64')).toBe(DENSE_KERNEL_WASM);
  });

  it('the SIMD kernel gives the JavaScript loop’s scores to the last bit, any size and any dimensions', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 67 }),
        fc.integer({ min: 1, max: 24 }),
        fc.integer({ min: 0, max: 67 }),
        fc.integer(),
        (capacity, dimensions, sizeWish, seed) => {
          const size = Math.min(sizeWish, capacity);
          const random = seededRandom(seed);
          const simd = createDenseColumns(capacity, dimensions, 'simd');
          const js = createDenseColumns(capacity, dimensions, 'js');
          for (let at = 0; at < capacity * dimensions; at++) {
            // Zeros, tiny and large magnitudes, so rounding differences would show.
            const roll = random();
            const value = roll < 0.3 ? 0 : (random() - 0.5) * 10 ** Math.floor(random() * 8 - 4);
            simd.columns[at] = value;
            js.columns[at] = value;
          }
          // Any subset of the dimensions, in ascending order, with weights of any sign.
          const dims: number[] = [];
          const weights: number[] = [];
          for (let i = 0; i < dimensions; i++) {
            if (random() < 0.6) {
              dims.push(i);
              weights.push((random() - 0.5) * 3);
            }
          }
          // Stale scores from an earlier call must not leak into the next one.
          simd.scores.fill(7);
          js.scores.fill(7);
          simd.accumulate(size, dims, weights);
          js.accumulate(size, dims, weights);
          for (let slot = 0; slot < size; slot++) {
            let expected = 0;
            for (let t = 0; t < dims.length; t++) expected += weights[t]! * js.columns[dims[t]! * capacity + slot]!;
            expect(Object.is(js.scores[slot], expected)).toBe(true);
            expect(Object.is(simd.scores[slot], js.scores[slot])).toBe(true);
          }
          // Slots at or past `size` are not written.
          for (let slot = size; slot < capacity; slot++) expect(simd.scores[slot]).toBe(7);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a memory vector index large enough for the SIMD kernel ranks like brute force, through growth and deletes', async () => {
    const dimensions = 48;
    const random = seededRandom(7);
    const index = createMemoryVectorIndex({ dimensions, initialCapacity: 16 });
    const stored = new Map<string, Float32Array>();
    const vector = (sparse: boolean) =>
      Float32Array.from({ length: dimensions }, () => (sparse && random() < 0.7 ? 0 : random() - 0.5));
    const put = async (count: number, from: number) => {
      const records = Array.from({ length: count }, (_, i) => {
        const id = `r${from + i}`;
        const values = vector(false);
        stored.set(id, values);
        return { id, values, metadata: { storyId: 's', type: 'scene' as const, timestamp: from + i, sourceId: id } };
      });
      await index.upsert('s', records);
    };
    const expectBruteForce = async () => {
      for (let q = 0; q < 5; q++) {
        const query = vector(q % 2 === 0);
        if (query.every((value) => value === 0)) query[0] = 1;
        const matches = await index.query('s', { vector: query, topK: 25 });
        const expected = [...stored]
          .map(([id, values]) => {
            let dot = 0;
            let norm = 0;
            let queryNorm = 0;
            for (let i = 0; i < dimensions; i++) {
              dot += query[i]! * values[i]!;
              norm += values[i]! * values[i]!;
              queryNorm += query[i]! * query[i]!;
            }
            return { id, score: dot / Math.sqrt(norm * queryNorm) };
          })
          .sort((a, b) => b.score - a.score)
          .slice(0, 25);
        expect(matches.map((match) => match.id)).toEqual(expected.map((entry) => entry.id));
        for (let i = 0; i < matches.length; i++) expect(matches[i]!.score).toBeCloseTo(expected[i]!.score, 9);
      }
    };
    // 16 → 2,048 slots (SIMD from 1,024), an odd number of records, then deletes that shrink it back below 1,024.
    await put(1_501, 0);
    await expectBruteForce();
    const doomed = [...stored.keys()].filter((_, i) => i % 5 !== 0);
    await index.delete('s', { ids: doomed });
    for (const id of doomed) stored.delete(id);
    expect(stored.size).toBe(301);
    await expectBruteForce();
    await put(900, 5_000);
    await expectBruteForce();
  });
});
