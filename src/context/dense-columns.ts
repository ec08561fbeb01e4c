/**
 * Dimension-major vector storage with its scoring loop: the part of the memory vector index that every query runs
 * over every record. Internal: not exported from the package.
 *
 * Large partitions keep their columns in WebAssembly memory and score with a 128-bit SIMD kernel
 * (`dense-kernel.wat`), two records per instruction, about three and a half times faster than the JavaScript loop at
 * 10,000 records. The arithmetic is the same (each f32 value widened to f64, the product and then the sum rounded,
 * dimensions in the order given), so both paths give identical scores to the last bit; a test holds them to it.
 * Small partitions, runtimes without WebAssembly SIMD, and partitions too large for one 32-bit WebAssembly memory
 * use the JavaScript loop.
 *
 * @module
 */

import { DENSE_KERNEL_WASM } from './dense-kernel-wasm.js';

/** Column storage of `capacity` records of `dimensions` coordinates, and a score per record. */
export interface DenseColumns {
  readonly capacity: number;
  readonly dimensions: number;
  /** Coordinate `i` of the record in slot `j` at `columns[i * capacity + j]`. */
  readonly columns: Float32Array;
  /** Scratch of `accumulate`: one score per slot. */
  readonly scores: Float64Array;
  /** `'simd'` when the WebAssembly kernel scores, `'js'` otherwise. */
  readonly kernel: 'simd' | 'js';
  /**
   * Sets `scores[slot]` to `Σ weights[t] × columns[dims[t] * capacity + slot]` for every slot below `size`, the terms
   * added one at a time in the order of `dims` (ascending dimensions give the sum a row-major dot product would).
   */
  accumulate(size: number, dims: readonly number[], weights: readonly number[]): void;
}

/** Which kernel `createDenseColumns` uses: by size (the default), or forced (tests compare the two). */
export type DenseKernelChoice = 'auto' | 'simd' | 'js';

/**
 * Below this capacity the JavaScript loop is used: the gain is a few microseconds there, and each WebAssembly memory
 * reserves its own address space, so a process holding many small stories should not create one per story.
 */
export const SIMD_MIN_CAPACITY = 1_024;

/** The largest WebAssembly memory a partition asks for; larger ones score in JavaScript. */
const MAX_SIMD_BYTES = 2 ** 31;

const PAGE = 65_536;

interface KernelExports {
  score8(
    scores: number,
    n: number,
    a: number,
    b: number,
    c: number,
    d: number,
    e: number,
    f: number,
    g: number,
    h: number,
    wa: number,
    wb: number,
    wc: number,
    wd: number,
    we: number,
    wf: number,
    wg: number,
    wh: number,
  ): void;
  score1(scores: number, n: number, a: number, wa: number): void;
}

let kernelModule: WebAssembly.Module | null | undefined;

/** The compiled kernel, or null where this runtime cannot compile it (no WebAssembly, or no SIMD). */
function denseKernel(): WebAssembly.Module | null {
  if (kernelModule === undefined) {
    try {
      kernelModule = new WebAssembly.Module(Uint8Array.from(atob(DENSE_KERNEL_WASM), (c) => c.charCodeAt(0)));
    } catch {
      kernelModule = null;
    }
  }
  return kernelModule;
}

/** True when this runtime runs the SIMD kernel. */
export function simdKernelAvailable(): boolean {
  return denseKernel() !== null;
}

/** Allocates zeroed storage for `capacity` records. */
export function createDenseColumns(
  capacity: number,
  dimensions: number,
  choice: DenseKernelChoice = 'auto',
): DenseColumns {
  if (choice !== 'js') {
    const bytes = capacity * (8 + 4 * dimensions);
    const wanted = choice === 'simd' || (capacity >= SIMD_MIN_CAPACITY && bytes <= MAX_SIMD_BYTES);
    if (wanted) {
      const simd = simdColumns(capacity, dimensions, bytes);
      if (simd) return simd;
      if (choice === 'simd') throw new Error('The WebAssembly SIMD kernel is not available in this runtime');
    }
  }
  return jsColumns(capacity, dimensions);
}

function simdColumns(capacity: number, dimensions: number, bytes: number): DenseColumns | undefined {
  const module = denseKernel();
  if (!module) return undefined;
  let memory: WebAssembly.Memory;
  try {
    memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(bytes / PAGE)) });
  } catch {
    // Out of address space or memory: the JavaScript arrays may still fit.
    return undefined;
  }
  const kernel = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as KernelExports;
  // Scores first (8-byte aligned at 0), then the columns.
  const scores = new Float64Array(memory.buffer, 0, capacity);
  const columnsAt = capacity * 8;
  const columns = new Float32Array(memory.buffer, columnsAt, capacity * dimensions);
  const stride = capacity * 4;
  return {
    capacity,
    dimensions,
    columns,
    scores,
    kernel: 'simd',
    accumulate(size, dims, weights) {
      scores.fill(0, 0, size);
      const at = (t: number) => columnsAt + dims[t]! * stride;
      let next = 0;
      for (; next + 8 <= dims.length; next += 8) {
        kernel.score8(
          0,
          size,
          at(next),
          at(next + 1),
          at(next + 2),
          at(next + 3),
          at(next + 4),
          at(next + 5),
          at(next + 6),
          at(next + 7),
          weights[next]!,
          weights[next + 1]!,
          weights[next + 2]!,
          weights[next + 3]!,
          weights[next + 4]!,
          weights[next + 5]!,
          weights[next + 6]!,
          weights[next + 7]!,
        );
      }
      for (; next < dims.length; next++) kernel.score1(0, size, at(next), weights[next]!);
    },
  };
}

function jsColumns(capacity: number, dimensions: number): DenseColumns {
  const columns = new Float32Array(capacity * dimensions);
  const scores = new Float64Array(capacity);
  return {
    capacity,
    dimensions,
    columns,
    scores,
    kernel: 'js',
    accumulate(size, dims, weights) {
      scores.fill(0, 0, size);
      // Eight dimensions per pass over the scores, the last few one at a time: an eighth of the loads and stores of
      // `scores`. Each score still receives its terms one at a time in the order of `dims`.
      let next = 0;
      for (; next + 8 <= dims.length; next += 8) {
        const a = dims[next]! * capacity;
        const b = dims[next + 1]! * capacity;
        const c = dims[next + 2]! * capacity;
        const d = dims[next + 3]! * capacity;
        const e = dims[next + 4]! * capacity;
        const f = dims[next + 5]! * capacity;
        const g = dims[next + 6]! * capacity;
        const h = dims[next + 7]! * capacity;
        const wa = weights[next]!;
        const wb = weights[next + 1]!;
        const wc = weights[next + 2]!;
        const wd = weights[next + 3]!;
        const we = weights[next + 4]!;
        const wf = weights[next + 5]!;
        const wg = weights[next + 6]!;
        const wh = weights[next + 7]!;
        for (let slot = 0; slot < size; slot++) {
          let sum = scores[slot]!;
          sum += wa * columns[a + slot]!;
          sum += wb * columns[b + slot]!;
          sum += wc * columns[c + slot]!;
          sum += wd * columns[d + slot]!;
          sum += we * columns[e + slot]!;
          sum += wf * columns[f + slot]!;
          sum += wg * columns[g + slot]!;
          sum += wh * columns[h + slot]!;
          scores[slot] = sum;
        }
      }
      for (; next < dims.length; next++) {
        const base = dims[next]! * capacity;
        const weight = weights[next]!;
        for (let slot = 0; slot < size; slot++) scores[slot]! += weight * columns[base + slot]!;
      }
    },
  };
}
