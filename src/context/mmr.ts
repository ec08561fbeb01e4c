/**
 * Maximal marginal relevance (Carbonell & Goldstein 1998) over candidates' vectors: the selection step of the hybrid
 * retriever, kept apart so its lazy evaluation can be checked against the plain greedy loop. Internal: not exported
 * from the package.
 *
 * @module
 */

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
 * value with an out-of-date similarity is an upper bound of its value. The entries wait in a max-heap ordered by
 * (bound, earliest in the pool). While the top is out of date it is compared with the entries chosen since it was
 * last looked at (only until its value falls behind the next best bound) and sifted down; the first top that is up
 * to date is chosen: no other entry's bound, and so no other value, comes before it. Each round thus costs the few
 * entries it brings up to date, a logarithm each, instead of a pass over (and a sort of) every remaining entry: k =
 * 3,000 of 10,000 took seconds that way. The choice, the values and the similarities are those of the plain loop
 * that compares every remaining entry with every newly chosen one (same sums in the same order), with far fewer
 * cosines: at the retriever's λ = 0.95 mostly just the few that are chosen.
 */
export function selectByMmr(pool: readonly MmrEntry[], k: number, lambda: number): MmrSelection {
  const top = pool[0]?.final ?? 0;
  // Scores are scaled to [0, 1] so λ trades them against cosine similarities on the same scale.
  const scale = top > 0 ? 1 / top : 0;
  // `seen`: how many of the chosen entries `maxSimilarity` and `closest` already account for.
  const items = pool.map((entry, index) => ({ entry, index, maxSimilarity: 0, closest: '', seen: 0 }));
  type Item = (typeof items)[number];
  // Each entry's squared norm is computed once, not once per pair (-1: not yet), by pool index: a lookup by vector
  // cost more than the rest of a cosine.
  const squaredNorms = new Float64Array(pool.length).fill(-1);
  const squaredNorm = (index: number, values: Float32Array): number => {
    let squared = squaredNorms[index]!;
    if (squared < 0) {
      squared = 0;
      for (let i = 0; i < values.length; i++) squared += values[i]! * values[i]!;
      squaredNorms[index] = squared;
    }
    return squared;
  };
  /** Cosine similarity of two pool entries (0 for a missing or mismatched vector). */
  const cosine = (a: Item, b: Item): number => {
    const valuesA = a.entry.values;
    const valuesB = b.entry.values;
    if (!valuesA || !valuesB || valuesA.length !== valuesB.length) return 0;
    let dot = 0;
    for (let i = 0; i < valuesA.length; i++) dot += valuesA[i]! * valuesB[i]!;
    const normA = squaredNorm(a.index, valuesA);
    const normB = squaredNorm(b.index, valuesB);
    return normA > 0 && normB > 0 ? dot / Math.sqrt(normA * normB) : 0;
  };
  const chosenEntries: Item[] = [];
  const chosen: MmrSelection['chosen'] = [];
  const mmrValue = (item: Item) => lambda * item.entry.final * scale - (1 - lambda) * item.maxSimilarity;
  // `bounds[index]`: the value of pool entry `index` with the chosen entries it has been compared with so far (its
  // exact value once `seen` is the number chosen). `heap` holds the pool indexes not chosen yet.
  const bounds = new Float64Array(pool.length);
  /**
   * Brings an item's largest similarity up to date with the chosen entries, in the order they were chosen: with
   * every one, or, given a `rival` pool index, until the item's value falls behind the rival's bound. It then cannot
   * be chosen this round, and the rest of its comparisons can wait.
   */
  const update = (item: Item, index = -1, rival = -1) => {
    while (item.seen < chosenEntries.length) {
      const picked = chosenEntries[item.seen]!;
      item.seen++;
      const similarity = cosine(item, picked);
      if (similarity > item.maxSimilarity || item.closest === '') {
        const grew = similarity > item.maxSimilarity;
        item.maxSimilarity = Math.max(item.maxSimilarity, similarity);
        if (similarity >= item.maxSimilarity) item.closest = picked.entry.id;
        if (grew && rival >= 0) {
          const value = mmrValue(item);
          const rivalBound = bounds[rival]!;
          if (rivalBound > value || (rivalBound === value && rival < index)) return;
        }
      }
    }
  };
  for (let index = 0; index < pool.length; index++) bounds[index] = mmrValue(items[index]!);
  const heap = new MmrHeap(bounds);
  const picked = new Uint8Array(pool.length);
  while (chosen.length < k && heap.size > 0) {
    const index = heap.top;
    const item = items[index]!;
    if (item.seen < chosenEntries.length) {
      update(item, index, heap.runnerUp);
      // Its value can only have fallen: down the heap it goes, and the next top is looked at.
      bounds[index] = mmrValue(item);
      heap.lowerTop();
      continue;
    }
    heap.pop();
    picked[index] = 1;
    chosen.push({ index, mmr: bounds[index]! });
    chosenEntries.push(item);
  }
  const dropped: MmrSelection['dropped'] = [];
  for (let index = 0; index < Math.min(k, pool.length); index++) {
    if (picked[index]) continue;
    const item = items[index]!;
    update(item);
    dropped.push({ index, similarTo: item.closest, similarity: item.maxSimilarity });
  }
  return { chosen, dropped };
}

/**
 * A binary max-heap of pool indexes ordered by their bound, then by the earlier index: the order in which the plain
 * loop prefers entries of equal value. It reads the bounds from the array it is given, so a caller that lowers the
 * top's bound there calls `lowerTop` to restore the order.
 */
class MmrHeap {
  private readonly slots: number[];

  constructor(private readonly bounds: Float64Array) {
    this.slots = Array.from({ length: bounds.length }, (_, index) => index);
    for (let at = (this.slots.length >> 1) - 1; at >= 0; at--) this.siftDown(at);
  }

  get size(): number {
    return this.slots.length;
  }

  /** The best index; only valid while `size > 0`. */
  get top(): number {
    return this.slots[0]!;
  }

  /** The index that comes first after the top (one of its children), or -1 when the top is alone. */
  get runnerUp(): number {
    const { slots } = this;
    if (slots.length < 2) return -1;
    if (slots.length === 2 || this.before(slots[1]!, slots[2]!)) return slots[1]!;
    return slots[2]!;
  }

  /** Removes the best index. */
  pop(): void {
    const last = this.slots.pop()!;
    if (this.slots.length === 0) return;
    this.slots[0] = last;
    this.siftDown(0);
  }

  /** Restores the order after the top's bound was lowered. */
  lowerTop(): void {
    this.siftDown(0);
  }

  /** Whether index `a` comes before index `b`: a higher bound, or an equal bound and an earlier place in the pool. */
  private before(a: number, b: number): boolean {
    const boundA = this.bounds[a]!;
    const boundB = this.bounds[b]!;
    return boundA > boundB || (boundA === boundB && a < b);
  }

  private siftDown(from: number): void {
    const { slots } = this;
    const length = slots.length;
    let parent = from;
    for (;;) {
      const left = 2 * parent + 1;
      const right = left + 1;
      let best = parent;
      if (left < length && this.before(slots[left]!, slots[best]!)) best = left;
      if (right < length && this.before(slots[right]!, slots[best]!)) best = right;
      if (best === parent) return;
      const swap = slots[parent]!;
      slots[parent] = slots[best]!;
      slots[best] = swap;
      parent = best;
    }
  }
}
