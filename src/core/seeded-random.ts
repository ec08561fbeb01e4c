/**
 * A small seeded pseudo-random generator, for everything that must draw the same "random" values on every run: the
 * procedural illustrator's pictures, test data and benchmark corpora. Internal: not exported from the package.
 *
 * @module
 */

/**
 * mulberry32: returns a function that yields numbers in [0, 1), the same sequence for the same seed on every machine.
 *
 * @example
 * ```ts
 * const random = seededRandom(42);
 * random(); // the same first value on every run
 * ```
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
