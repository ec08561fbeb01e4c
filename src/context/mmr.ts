/**
 * Maximal marginal relevance (Carbonell & Goldstein 1998) over candidates' vectors: the selection step of the hybrid
 * retriever, kept apart so its lazy evaluation can be checked against the plain greedy loop. Internal: not exported
 * from the package.
 *
 * @module
 */
import { descending } from './top-k.js';

/** What MMR needs of a candidate: its id, its score before diversity, its vector (if any). */
export interface MmrEntry {
  id: string;
  /** The score before diversity; the pool is in descending order of it. */
  final: number;
  values?: Float32Array | undefined;
}

/** Which pool entries MMR chose, in order, and which of the pool's first `k` it passed over. */
export interface MmrSelection {
  /** Pool indexes in the order chosen, each with its MMR value when chosen. */
  chosen: Array<{ index: number; mmr: number }>;
  /**
   * Pool indexes among the first `k` that were not chosen, in pool order, with the chosen entry each is most similar
   * to (empty when none is similar at all) and that cosine.
   */
  dropped: Array<{ index: number; similarTo: string; similarity: number }>;
}

/**
 * Chooses `k` entries greedily by `λ·final/top − (1 − λ)·(largest cosine to an entry already chosen)`, the highest
 * value first and the earliest in the pool on a tie. A missing or mismatched vector has cosine 0 with everything.
 *
 * Evaluated lazily (speed, bench:context): an entry's largest similarity only grows as entries are chosen, so its
 * value with an out-of-date similarity is an upper bound of its value. Each round brings entries up to date, best
 * bound first, until no bound left can beat the best up-to-date value. The choice, the values and the similarities
 * are those of the plain loop that compares every remaining entry with every newly chosen one (same sums in the same
 * order), with far fewer cosines: at the retriever's λ = 0.95 mostly just the few that are chosen.
 */
export function selectByMmr(pool: readonly MmrEntry[], k: number, lambda: number): MmrSelection {
  const top = pool[0]?.final ?? 0;
  // Scores are scaled to [0, 1] so λ trades them against cosine similarities on the same scale.
  const scale = top > 0 ? 1 / top : 0;
  // `seen`: how many of the chosen entries `maxSimilarity` and `closest` already account for.
  const remaining = pool.map((entry, index) => ({ entry, index, maxSimilarity: 0, closest: '', seen: 0 }));
  type Item = (typeof remaining)[number];
  // Each vector's squared norm is computed once, not once per pair.
  const squaredNorms = new Map<Float32Array, number>();
  const squaredNorm = (values: Float32Array): number => {
    let squared = squaredNorms.get(values);
    if (squared === undefined) {
      squared = 0;
      for (let i = 0; i < values.length; i++) squared += values[i]! * values[i]!;
      squaredNorms.set(values, squared);
    }
    return squared;
  };
  const chosenEntries: MmrEntry[] = [];
  const chosen: MmrSelection['chosen'] = [];
  const mmrValue = (item: Item) => lambda * item.entry.final * scale - (1 - lambda) * item.maxSimilarity;
  // Brings an item's largest similarity up to date with every chosen entry, in the order they were chosen.
  const update = (item: Item) => {
    for (; item.seen < chosenEntries.length; item.seen++) {
      const picked = chosenEntries[item.seen]!;
      const similarity = cosine(item.entry.values, picked.values, squaredNorm);
      if (similarity > item.maxSimilarity || item.closest === '') {
        item.maxSimilarity = Math.max(item.maxSimilarity, similarity);
        if (similarity >= item.maxSimilarity) item.closest = picked.id;
      }
    }
  };
  while (chosen.length < k && remaining.length > 0) {
    const bounds = remaining.map((item, at) => ({ at, bound: mmrValue(item) }));
    bounds.sort((a, b) => descending(a.bound, b.bound) || a.at - b.at);
    let bestAt = 0;
    let bestValue = Number.NEGATIVE_INFINITY;
    let evaluated = false;
    for (const { at, bound } of bounds) {
      if (evaluated && (bound < bestValue || (bound === bestValue && at > bestAt))) break;
      const item = remaining[at]!;
      update(item);
      const value = mmrValue(item);
      if (!evaluated || value > bestValue || (value === bestValue && at < bestAt)) {
        bestValue = value;
        bestAt = at;
        evaluated = true;
      }
    }
    const [picked] = remaining.splice(bestAt, 1);
    if (!picked) break;
    chosen.push({ index: picked.index, mmr: bestValue });
    chosenEntries.push(picked.entry);
  }
  const dropped = remaining
    .filter((item) => item.index < k)
    .map((item) => {
      update(item);
      return { index: item.index, similarTo: item.closest, similarity: item.maxSimilarity };
    });
  return { chosen, dropped };
}

/** Cosine similarity (0 for a missing or mismatched vector), with the squared norms supplied by the caller. */
function cosine(
  a: Float32Array | undefined,
  b: Float32Array | undefined,
  squaredNorm: (values: Float32Array) => number,
): number {
  if (!a || !b || a.length !== b.length) return 0;
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i]! * b[i]!;
  const normA = squaredNorm(a);
  const normB = squaredNorm(b);
  return normA > 0 && normB > 0 ? dot / Math.sqrt(normA * normB) : 0;
}
