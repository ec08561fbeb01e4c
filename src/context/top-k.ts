/**
 * Top-k selection without a full sort.
 *
 * @module
 */

/**
 * The `k` best of a stream of scored candidates, kept in a binary min-heap whose root is the worst kept entry, so
 * each candidate costs O(log k) and memory stays O(k). "Better" means a higher score, then a smaller id (compared by
 * UTF-16 code units, the same on every machine).
 *
 * Shared by the memory vector and keyword indexes and by retrieval fusion.
 *
 * @example
 * ```ts
 * const best = new TopKHeap<string>(2);
 * best.offer(0.5, 'b', 'payload-b');
 * best.offer(0.9, 'a', 'payload-a');
 * best.offer(0.1, 'c', 'payload-c');
 * best.takeSorted(); // entries a, then b
 * ```
 */
export class TopKHeap<T> {
  private readonly scores: number[] = [];
  private readonly ids: string[] = [];
  private readonly items: T[] = [];

  constructor(private readonly k: number) {}

  /** Number of entries kept so far. */
  get size(): number {
    return this.scores.length;
  }

  /**
   * A score below which `offer` keeps nothing: the worst kept score once the heap is full, `-Infinity` before. A
   * candidate scoring below it can be skipped without looking at its id.
   */
  get threshold(): number {
    if (this.k <= 0) return Number.POSITIVE_INFINITY;
    return this.scores.length < this.k ? Number.NEGATIVE_INFINITY : this.scores[0]!;
  }

  /**
   * Whether `offer(score, id, …)` would keep a candidate. Lets a caller skip expensive work (a metadata filter, say)
   * for candidates that could not make the cut anyway; after the heap fills, that is almost every candidate.
   */
  accepts(score: number, id: string): boolean {
    if (this.k <= 0) return false;
    if (this.scores.length < this.k) return true;
    return isWorse(this.scores[0]!, this.ids[0]!, score, id);
  }

  /** Considers a candidate; it is kept when it is among the `k` best seen so far. */
  offer(score: number, id: string, item: T): void {
    if (this.k <= 0) return;
    if (this.scores.length < this.k) {
      this.scores.push(score);
      this.ids.push(id);
      this.items.push(item);
      this.siftUp(this.scores.length - 1);
      return;
    }
    if (!isWorse(this.scores[0]!, this.ids[0]!, score, id)) return;
    this.scores[0] = score;
    this.ids[0] = id;
    this.items[0] = item;
    this.siftDown(0);
  }

  /** The kept entries, best first. Empties the heap. */
  takeSorted(): Array<{ score: number; id: string; item: T }> {
    const out = new Array<{ score: number; id: string; item: T }>(this.scores.length);
    for (let position = this.scores.length - 1; position >= 0; position--) {
      out[position] = { score: this.scores[0]!, id: this.ids[0]!, item: this.items[0]! };
      const lastScore = this.scores.pop()!;
      const lastId = this.ids.pop()!;
      const lastItem = this.items.pop()!;
      if (this.scores.length > 0) {
        this.scores[0] = lastScore;
        this.ids[0] = lastId;
        this.items[0] = lastItem;
        this.siftDown(0);
      }
    }
    return out;
  }

  private worse(a: number, b: number): boolean {
    return isWorse(this.scores[a]!, this.ids[a]!, this.scores[b]!, this.ids[b]!);
  }

  private swap(a: number, b: number): void {
    // Plain temporaries: destructuring swaps allocate when the JIT does not see through them, and this is hot.
    const { scores, ids, items } = this;
    const score = scores[a]!;
    scores[a] = scores[b]!;
    scores[b] = score;
    const id = ids[a]!;
    ids[a] = ids[b]!;
    ids[b] = id;
    const item = items[a]!;
    items[a] = items[b]!;
    items[b] = item;
  }

  private siftUp(index: number): void {
    let child = index;
    while (child > 0) {
      const parent = (child - 1) >> 1;
      if (!this.worse(child, parent)) return;
      this.swap(child, parent);
      child = parent;
    }
  }

  private siftDown(index: number): void {
    const length = this.scores.length;
    let parent = index;
    for (;;) {
      const left = 2 * parent + 1;
      const right = left + 1;
      let worst = parent;
      if (left < length && this.worse(left, worst)) worst = left;
      if (right < length && this.worse(right, worst)) worst = right;
      if (worst === parent) return;
      this.swap(parent, worst);
      parent = worst;
    }
  }
}

/**
 * Compares two numbers for a descending sort: -1, 0 or 1, the sign of `b - a`. A comparator that returns `b - a`
 * itself hands the sort a fractional number, which V8 boxes on the heap at every comparison (kilobytes per sort of
 * a candidate pool); a small integer costs nothing. Equal (or NaN) gives 0, as `b - a` does.
 *
 * @example
 * ```ts
 * [0.2, 0.9, 0.5].sort(descending); // [0.9, 0.5, 0.2]
 * ```
 */
export function descending(a: number, b: number): number {
  return a > b ? -1 : a < b ? 1 : 0;
}

/**
 * Sort order of ranked entries, best first: a higher score, then a smaller id. The order `TopKHeap.takeSorted`
 * returns, for callers that pick their few candidates by `kthLargest` and sort just those.
 */
export function byRank(a: { score: number; id: string }, b: { score: number; id: string }): number {
  if (isWorse(b.score, b.id, a.score, a.id)) return -1;
  return isWorse(a.score, a.id, b.score, b.id) ? 1 : 0;
}

/** True when (scoreA, idA) ranks below (scoreB, idB): a lower score, or an equal score and a larger id. */
export function isWorse(scoreA: number, idA: string, scoreB: number, idB: string): boolean {
  return scoreA < scoreB || (scoreA === scoreB && idA > idB);
}

/**
 * The first `k` entries of `ranked` (best first) whose item passes, when that is the answer: when `k` of them pass,
 * or when `ranked` holds all `total` candidates. Otherwise `undefined`: the caller must search again with the
 * filter. Any candidate missing from `ranked` ranks below every entry in it, so it cannot displace one that passed.
 *
 * This lets the memory indexes rank first without reading metadata and filter only the best few: the usual filters
 * (a recency horizon, a record type) pass nearly everything, and a filter check costs more than a heap step.
 *
 * @example
 * ```ts
 * const ranked = [{ score: 0.9, id: 'a', item: 1 }, { score: 0.8, id: 'b', item: 2 }, { score: 0.1, id: 'c', item: 3 }];
 * takePassing(ranked, 1, 5, (item) => item > 1); // [{ score: 0.8, id: 'b', item: 2 }]
 * takePassing(ranked, 2, 5, (item) => item > 2); // undefined: only one passed, and two candidates were never ranked
 * ```
 */
export function takePassing<T>(
  ranked: ReadonlyArray<{ score: number; id: string; item: T }>,
  k: number,
  total: number,
  passes: (item: T) => boolean,
): Array<{ score: number; id: string; item: T }> | undefined {
  const kept: Array<{ score: number; id: string; item: T }> = [];
  if (k <= 0) return kept;
  for (const entry of ranked) {
    if (!passes(entry.item)) continue;
    kept.push(entry);
    if (kept.length === k) return kept;
  }
  return ranked.length >= total ? kept : undefined;
}

/** How many candidates to rank before filtering, for `takePassing`: `k` and half again, plus a few. */
export function probeSize(k: number, total: number): number {
  return Math.min(total, k + (k >> 1) + 16);
}

/**
 * The `k`-th largest of `values[0..length)` (1-based: `k = 1` is the maximum), by quickselect in expected linear
 * time. Reorders `values` in place; pass a scratch copy. A caller that keeps only candidates scoring at least this
 * value keeps every one of the `k` best (ties included) and, for distinct scores, little else, so a heap over them
 * does about `k` steps instead of one per candidate that beat the heap's worst so far.
 *
 * @example
 * ```ts
 * kthLargest(Float64Array.from([0.2, 0.9, 0.5, 0.7]), 4, 2); // 0.7
 * ```
 */
export function kthLargest(values: Float64Array, length: number, k: number): number {
  if (k < 1 || k > length) throw new RangeError(`k must be within 1..${length}, got ${k}`);
  // Speed (bench:context, 10,000 cosines for k about 166): move every value at or above the sampled estimate to the
  // front in one pass and select among those only. Whenever at least k values are there, the k-th largest is the
  // k-th largest among them; an unlucky sample falls through to the whole range, which still holds every value.
  const estimate = sampledLowerBound(length, k, (at) => values[at]!);
  if (estimate > Number.NEGATIVE_INFINITY) {
    let count = 0;
    for (let i = 0; i < length; i++) {
      const value = values[i]!;
      if (value >= estimate) {
        values[i] = values[count]!;
        values[count++] = value;
      }
    }
    if (count >= k) return quickselect(values, count, k);
  }
  return quickselect(values, length, k);
}

/**
 * A value a little below the `k`-th largest of `length` values (`1 ≤ k`), estimated from an evenly spaced sample of
 * them read through `valueAt`; `-Infinity` when a sample would say little (fewer than 2,048 values, or `k` above a
 * sixteenth of them). It is an estimate, not a promise: a caller keeps the values at or above it, and when at least
 * `k` are kept they hold every one of the `k` largest, ties included, so the `k` best among them are the `k` best of
 * all; when fewer are kept (an unlucky sample) the caller ranks every value. Lets a ranking keep a few times `k`
 * candidates in one pass instead of storing and partitioning every value first.
 *
 * @example
 * ```ts
 * const scores = Float64Array.from({ length: 10_000 }, (_, at) => Math.sin(at));
 * const bound = sampledLowerBound(scores.length, 10, (at) => scores[at]!);
 * scores.filter((score) => score >= bound).length; // a few times 10, among them the 10 largest
 * ```
 */
export function sampledLowerBound(length: number, k: number, valueAt: (at: number) => number): number {
  if (length < SAMPLE_FROM || k * 16 > length) return Number.NEGATIVE_INFINITY;
  const step = length / SAMPLE_SIZE;
  for (let i = 0; i < SAMPLE_SIZE; i++) sample[i] = valueAt(Math.floor(i * step));
  // About twice the rank the k-th largest is expected at in the sample, plus a few: the margin against bad luck.
  const rank = Math.min(SAMPLE_SIZE, Math.ceil((2 * k * SAMPLE_SIZE) / length) + 4);
  return quickselect(sample, SAMPLE_SIZE, rank);
}

/** From this many values on, a sample narrows the range first (`sampledLowerBound`). */
const SAMPLE_FROM = 2_048;
const SAMPLE_SIZE = 256;
/** Scratch of the sample: shared, as every ranking runs to its end synchronously. */
const sample = new Float64Array(SAMPLE_SIZE);

/** The `k`-th largest of `values[0..length)` by quickselect (`1 ≤ k ≤ length`), reordering them. */
function quickselect(values: Float64Array, length: number, k: number): number {
  // Selects the element of ascending rank `length - k` in [low, high].
  const target = length - k;
  let low = 0;
  let high = length - 1;
  while (high > low) {
    // Median of three as the pivot keeps sorted and reversed inputs linear.
    const middle = (low + high) >>> 1;
    const a = values[low]!;
    const b = values[middle]!;
    const c = values[high]!;
    const pivot = Math.max(Math.min(a, b), Math.min(Math.max(a, b), c));
    let left = low;
    let right = high;
    while (left <= right) {
      while (values[left]! < pivot) left++;
      while (values[right]! > pivot) right--;
      if (left <= right) {
        const swap = values[left]!;
        values[left] = values[right]!;
        values[right] = swap;
        left++;
        right--;
      }
    }
    if (target <= right) high = right;
    else if (target >= left) low = left;
    else return values[target]!;
  }
  return values[target]!;
}

/** A ranking pass: the `k` best candidates that pass `passes` (every one when it is undefined), best first. */
export type Ranker<T> = (
  k: number,
  passes: ((item: T) => boolean) | undefined,
) => Array<{ score: number; id: string; item: T }>;

/**
 * The `k` best of `total` candidates that pass `passes`: ranks the best `probeSize(k, total)` without the filter and
 * filters them best first (`takePassing`); only when too few of them pass does it rank again with the filter. Same
 * result as one filtered ranking, with the filter run on a few candidates instead of every one that could be kept.
 *
 * @example
 * ```ts
 * const items = [5, 3, 9, 1];
 * const rank: Ranker<number> = (k, passes) => {
 *   const heap = new TopKHeap<number>(k);
 *   items.forEach((item, at) => { if (!passes || passes(item)) heap.offer(item, `i${at}`, item); });
 *   return heap.takeSorted();
 * };
 * bestPassing(rank, 1, items.length, (item) => item < 9); // [{ score: 5, id: 'i0', item: 5 }]
 * ```
 */
export function bestPassing<T>(
  rank: Ranker<T>,
  k: number,
  total: number,
  passes: (item: T) => boolean,
): Array<{ score: number; id: string; item: T }> {
  return takePassing(rank(probeSize(k, total), undefined), k, total, passes) ?? rank(k, passes);
}

/**
 * Inserts `item` into `list`, which is kept ordered by `before` and at most `limit` long: when it is full, an item
 * that does not come before its last entry is left out, and otherwise the last entry drops out. One step of an
 * insertion sort, for keeping the few best of many without sorting them all.
 *
 * @example
 * ```ts
 * const best: number[] = [];
 * for (const value of [4, 9, 1, 7]) insertBounded(best, value, 2, (a, b) => a > b);
 * best; // [9, 7]
 * ```
 */
export function insertBounded<T>(list: T[], item: T, limit: number, before: (a: T, b: T) => boolean): void {
  if (limit <= 0) return;
  if (list.length >= limit && !before(item, list[limit - 1]!)) return;
  let at = list.length >= limit ? limit - 1 : list.length;
  while (at > 0 && before(item, list[at - 1]!)) {
    list[at] = list[at - 1]!;
    at--;
  }
  list[at] = item;
}
