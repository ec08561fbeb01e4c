/**
 * The in-process `VectorIndex`: exact cosine search over dimension-major `Float32Array` storage, one partition per story.
 * No network, no native module; the default when nothing else is configured, and the reference the conformance
 * suite was written against.
 *
 * @module
 */

import { z } from 'zod';
import { ClosedError, throwIfAborted, toProblems, ValidationError, type ValidationProblem } from '../core/errors.js';
import { LIMITS, type VectorMetadata, type VectorRecord } from '../state/schema.js';
import { compileFilter } from './compiled-filter.js';
import { createDenseColumns, type DenseColumns } from './dense-columns.js';
import { type MetadataFilter, matchesFilter, validateFilter } from './filter.js';
import {
  checkDeletion,
  checkIdList,
  checkQueryVector,
  checkStoryId,
  checkTopK,
  checkUpsertBatch,
  copyMetadata,
  describeProblems,
  inspectVector,
  invalidArgument,
} from './index-arguments.js';
import { bestPassing, byRank, kthLargest, sampledLowerBound, TopKHeap } from './top-k.js';
import type { VectorIndex, VectorIndexCapabilities, VectorIndexStats, VectorMatch } from './vector-index.js';

/**
 * Options of `createMemoryVectorIndex`.
 *
 * @example
 * ```ts
 * import { createMemoryVectorIndex, type MemoryVectorIndexOptions } from 'storyloom';
 * const options: MemoryVectorIndexOptions = { dimensions: 1536, initialCapacity: 1_024 };
 * const index = createMemoryVectorIndex(options);
 * ```
 */
export interface MemoryVectorIndexOptions {
  /** Length of every vector, 1..8192; the same setting as the embedder's. */
  dimensions: number;
  /** Records each story partition has room for before its storage first doubles. Default 64. */
  initialCapacity?: number;
}

const OptionsSchema = z.object({
  dimensions: z.number().int().min(1).max(LIMITS.vectorDimensions),
  initialCapacity: z.number().int().min(1).max(1_000_000).default(64),
});

/** The largest `topK` accepted: the same bound as Pinecone, so code tested here runs there. */
const MAX_TOP_K = 10_000;

const CAPABILITIES: VectorIndexCapabilities = Object.freeze({
  maxUpsertBatch: Number.MAX_SAFE_INTEGER,
  maxTopK: MAX_TOP_K,
  deleteByFilter: true,
  readAfterWrite: true,
  durable: false,
});

/**
 * Creates an in-memory vector index.
 *
 * Each story's vectors sit twice in memory (8 bytes per dimension per record): row-major, for `fetch` and
 * `includeValues`, and dimension-major (one column per dimension) for scoring; both double as they grow, and a delete
 * moves the last record into the freed slot. A query scores every record one dimension at a
 * time and skips the dimensions where the query is zero, so sparse queries (the hashing embedder's) cost a fraction
 * of dense ones; results are the same exact cosine ranking either way. Each record's inverse norm is computed once
 * at upsert, and the stored values are kept exactly as given (`fetch` returns them unchanged). The best `topK` are
 * kept in a bounded heap instead of sorting every score, and the metadata filter is checked only for records that
 * score well enough to enter it.
 *
 * @example
 * ```ts
 * import { createMemoryVectorIndex } from 'storyloom';
 *
 * const index = createMemoryVectorIndex({ dimensions: 3 });
 * await index.upsert('story-1', [
 *   {
 *     id: 'scene-1',
 *     values: new Float32Array([0.1, 0.9, 0]),
 *     metadata: { storyId: 'story-1', type: 'scene', timestamp: Date.now(), sourceId: 'scene-1' },
 *   },
 * ]);
 * const matches = await index.query('story-1', { vector: new Float32Array([0, 1, 0]), topK: 5 });
 * ```
 */
export function createMemoryVectorIndex(options: MemoryVectorIndexOptions): VectorIndex {
  const parsed = OptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    const problems = toProblems(parsed.error.issues, 'options');
    throw new ValidationError(`Invalid memory vector index options: ${describeProblems(problems)}`, { problems });
  }
  const { dimensions, initialCapacity } = parsed.data;
  return memoryVectorIndexOver(dimensions, initialCapacity, new Map());
}

/**
 * Internal, for the SQLite vector index's mirror: a memory index holding one story, filled record by record with
 * records that a durable store validated when they were written. `add` skips `upsert`'s schema checks of ids and
 * metadata, most of the cost of loading a large story, and still refuses a vector of the wrong length or without a
 * finite, non-zero norm (which only a damaged file could hold). Not exported from the package entry.
 */
export function createValidatedVectorLoad(
  dimensions: number,
  storyId: string,
  expected: number,
): { index: VectorIndex; add(id: string, values: Float32Array, metadata: VectorMetadata): void } {
  const capacity = Math.max(1, Math.min(1_000_000, expected));
  const partition = new Partition(dimensions, capacity);
  const partitions = new Map<string, Partition>([[storyId, partition]]);
  return {
    index: memoryVectorIndexOver(dimensions, capacity, partitions),
    add(id, values, metadata) {
      const problems: ValidationProblem[] = [];
      const squared = inspectVector(values, dimensions, `stored record ${JSON.stringify(id)}`, problems);
      if (problems.length > 0) {
        throw new ValidationError(`A stored vector cannot be loaded: ${describeProblems(problems)}`, { problems });
      }
      // Copied into the partition's own storage by put; the metadata copy gives every slot the same object shape.
      partition.put({ id, values, inverseNorm: 1 / Math.sqrt(squared), metadata: copyMetadata(metadata) });
    },
  };
}

function memoryVectorIndexOver(
  dimensions: number,
  initialCapacity: number,
  partitions: Map<string, Partition>,
): VectorIndex {
  let closed = false;

  const open = (operation: string): void => {
    if (closed) throw new ClosedError(`Cannot ${operation}: the memory vector index is closed`);
  };

  return {
    specificationVersion: 'v1',
    provider: 'memory',
    dimensions,
    capabilities: CAPABILITIES,

    async upsert(storyId, records, upsertOptions) {
      open('upsert');
      checkStoryId(storyId);
      throwIfAborted(upsertOptions?.signal);
      // Everything is checked before anything is written: a bad record anywhere leaves the index untouched.
      const prepared = prepareRecords(storyId, records, dimensions);
      if (prepared.length === 0) return;
      let partition = partitions.get(storyId);
      if (!partition) {
        partition = new Partition(dimensions, initialCapacity);
        partitions.set(storyId, partition);
      }
      for (const record of prepared) partition.put(record);
    },

    async query(storyId, query) {
      open('query');
      checkStoryId(storyId);
      if (typeof query !== 'object' || query === null) {
        throw invalidArgument('query', 'must be an object with vector and topK');
      }
      throwIfAborted(query.signal);
      const inverseQueryNorm = 1 / Math.sqrt(checkQueryVector(query.vector, dimensions));
      checkTopK(query.topK, MAX_TOP_K);
      if (query.filter !== undefined) validateFilter(query.filter, 'query.filter');
      const partition = partitions.get(storyId);
      if (!partition) return [];
      return partition.search(
        query.vector,
        inverseQueryNorm,
        query.topK,
        query.filter,
        query.includeValues === true,
        query.sharedMetadata === true,
      );
    },

    async fetch(storyId, ids, fetchOptions) {
      open('fetch');
      checkStoryId(storyId);
      checkIdList(ids, 'ids');
      throwIfAborted(fetchOptions?.signal);
      const partition = partitions.get(storyId);
      if (!partition) return [];
      const records: VectorRecord[] = [];
      for (const id of ids) {
        const slot = partition.slotOf.get(id);
        if (slot !== undefined) records.push(partition.record(slot));
      }
      return records;
    },

    async delete(storyId, deletion, deleteOptions) {
      open('delete');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      const target = checkDeletion(deletion);
      const partition = partitions.get(storyId);
      if (!partition) return 0;
      let deleted = 0;
      if ('ids' in target) {
        for (const id of new Set(target.ids)) if (partition.remove(id)) deleted++;
      } else {
        // Collected first: removing moves records between slots, which would skip some during a single pass.
        const doomed: string[] = [];
        for (let slot = 0; slot < partition.size; slot++) {
          if (matchesFilter(partition.metadata[slot]!, target.filter)) doomed.push(partition.ids[slot]!);
        }
        for (const id of doomed) if (partition.remove(id)) deleted++;
      }
      if (partition.size === 0) partitions.delete(storyId);
      return deleted;
    },

    async stats(storyId, statsOptions): Promise<VectorIndexStats> {
      open('read stats');
      checkStoryId(storyId);
      throwIfAborted(statsOptions?.signal);
      return { count: partitions.get(storyId)?.size ?? 0, dimensions };
    },

    async deleteStory(storyId, deleteOptions) {
      open('delete a story');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      partitions.delete(storyId);
    },

    async close() {
      closed = true;
      partitions.clear();
    },
  };
}

/** A record that passed validation, ready to be copied into a partition. */
interface PreparedRecord {
  id: string;
  values: Float32Array;
  inverseNorm: number;
  metadata: VectorMetadata;
}

/**
 * The vectors of one story, stored twice: row-major in `rows` (record `j` at `rows[j * dimensions ...]`), which
 * `fetch` and `includeValues` copy from, and dimension-major in `dense.columns` (coordinate `i` of record `j` at
 * `columns[i * capacity + j]`), which queries score from (`dense-columns.ts`: in WebAssembly memory with a SIMD
 * kernel from 1,024 records). Slots `0..size-1` are live; `slotOf` and `ids` map between ids and slots.
 *
 * Why dimension-major: a query then scores every record at once, one dimension at a time, as a contiguous
 * `scores[j] += q[i] * column_i[j]` loop that compiles to tight machine code, and a dimension where the query is zero
 * is skipped outright. Text embedders such as the hashing embedder produce sparse queries (about 50 to 150 non-zero
 * coordinates of 1536 for a one-line query), so a query costs `nnz(q) × N` instead of `D × N`: about ten times less
 * work. The sums run over dimensions in ascending order, exactly as a row-major dot product would, so the scores
 * are bit-for-bit those of a plain per-record dot product, sparse or dense query alike.
 */
class Partition {
  rows: Float32Array;
  dense: DenseColumns;
  inverseNorms: Float64Array;
  readonly ids: string[] = [];
  readonly metadata: VectorMetadata[] = [];
  readonly slotOf = new Map<string, number>();
  size = 0;
  private readonly minimumCapacity: number;
  /** Bumped by every write; `dense.scores` holds the scores of `scoredQuery` while `scoredGeneration` equals it. */
  private generation = 0;
  private scoredGeneration = -1;
  private scoredQuery: Float32Array | undefined;
  /** Scratch of a ranking: each live slot's cosine, and a copy of them that selection reorders. */
  private cosines = new Float64Array(0);
  private selection = new Float64Array(0);
  /** Scratch of `bestAbove`: the slots of the records it kept. */
  private keptSlots = new Int32Array(0);

  constructor(
    private readonly dimensions: number,
    capacity: number,
  ) {
    this.minimumCapacity = capacity;
    this.rows = new Float32Array(capacity * dimensions);
    this.dense = createDenseColumns(capacity, dimensions);
    this.inverseNorms = new Float64Array(capacity);
  }

  get capacity(): number {
    return this.inverseNorms.length;
  }

  put(record: PreparedRecord): void {
    let slot = this.slotOf.get(record.id);
    if (slot === undefined) {
      if (this.size === this.capacity) this.resize(this.capacity * 2);
      slot = this.size++;
      this.slotOf.set(record.id, slot);
      this.ids[slot] = record.id;
    }
    const { capacity } = this;
    const { columns } = this.dense;
    const values = record.values;
    this.rows.set(values, slot * this.dimensions);
    for (let i = 0, at = slot; i < this.dimensions; i++, at += capacity) columns[at] = values[i]!;
    this.inverseNorms[slot] = record.inverseNorm;
    this.metadata[slot] = record.metadata;
    this.generation++;
  }

  remove(id: string): boolean {
    const slot = this.slotOf.get(id);
    if (slot === undefined) return false;
    const last = this.size - 1;
    if (slot !== last) {
      const { capacity, dimensions } = this;
      const { columns } = this.dense;
      this.rows.copyWithin(slot * dimensions, last * dimensions, last * dimensions + dimensions);
      for (let base = 0, end = this.dimensions * capacity; base < end; base += capacity) {
        columns[base + slot] = columns[base + last]!;
      }
      this.inverseNorms[slot] = this.inverseNorms[last]!;
      const movedId = this.ids[last]!;
      this.ids[slot] = movedId;
      this.metadata[slot] = this.metadata[last]!;
      this.slotOf.set(movedId, slot);
    }
    this.ids.pop();
    this.metadata.pop();
    this.slotOf.delete(id);
    this.size = last;
    this.generation++;
    // Pruning old vectors should give memory back; shrinking at a quarter keeps grow/shrink from thrashing.
    if (this.capacity > this.minimumCapacity && this.size <= this.capacity / 4) {
      this.resize(Math.max(this.minimumCapacity, this.capacity / 2));
    }
    return true;
  }

  search(
    query: Float32Array,
    inverseQueryNorm: number,
    topK: number,
    filter: MetadataFilter | undefined,
    includeValues: boolean,
    sharedMetadata: boolean,
  ): VectorMatch[] {
    const scores = this.scoreAll(query, inverseQueryNorm);
    const toMatch = (entry: { score: number; item: number }) =>
      this.match(entry.item, entry.score, includeValues, sharedMetadata);
    if (filter === undefined) return this.best(scores, topK, undefined).map(toMatch);
    const passes = compileFilter(filter);
    const passesSlot = (slot: number) => passes(this.metadata[slot]!);
    // Rank the best few without reading metadata, then filter those best first; a selective filter that leaves
    // fewer than topK among them gets the filtered scan. Same result either way.
    return bestPassing((k, passes) => this.best(scores, k, passes), topK, this.size, passesSlot).map(toMatch);
  }

  /** The `topK` best live slots that pass `passes` (all when undefined), best first. */
  private best(
    scores: Float64Array,
    topK: number,
    passes: ((slot: number) => boolean) | undefined,
  ): Array<{ score: number; id: string; item: number }> {
    const size = this.size;
    const inverseNorms = this.inverseNorms;
    const ids = this.ids;
    if (passes === undefined && size > 4 * topK && topK > 0) {
      // Rounding can push |cosine| a hair past 1; the port promises [-1, 1].
      const bound = sampledLowerBound(size, topK, (slot) =>
        Math.max(-1, Math.min(1, scores[slot]! * inverseNorms[slot]!)),
      );
      return this.bestAbove(scores, topK, bound) ?? this.bestAbove(scores, topK, Number.NEGATIVE_INFINITY)!;
    }
    const best = new TopKHeap<number>(Math.min(topK, size));
    let threshold = best.threshold;
    for (let slot = 0; slot < size; slot++) {
      const raw = scores[slot]! * inverseNorms[slot]!;
      // Cheapest test first: once the heap is full, most records score below its worst and are never looked at
      // again. The filter, the expensive part, runs only for records good enough to be kept; the result is the same
      // as filtering first. Above a threshold of -1, a raw score below it stays below it once clamped.
      if (raw < threshold && threshold > -1) continue;
      const score = Math.max(-1, Math.min(1, raw));
      if (score < threshold) continue;
      const id = ids[slot]!;
      if (!best.accepts(score, id)) continue;
      if (passes !== undefined && !passes(slot)) continue;
      best.offer(score, id, slot);
      threshold = best.threshold;
    }
    return best.takeSorted();
  }

  /**
   * `best` without a filter, in one pass over the records (speed, bench:context): only the records whose cosine is at
   * least `bound` (`sampledLowerBound`'s estimate, a few times `topK` of them; every record at `-Infinity`) are kept,
   * and the exact k-th best is selected among those, so only about `topK` are sorted. Whenever `topK` or more are
   * kept, the picks and their order are exactly those of a heap over every record. Undefined when fewer are kept (an
   * unlucky sample): the caller then asks again at `-Infinity`.
   */
  private bestAbove(
    scores: Float64Array,
    topK: number,
    bound: number,
  ): Array<{ score: number; id: string; item: number }> | undefined {
    const size = this.size;
    const inverseNorms = this.inverseNorms;
    if (this.cosines.length < size) {
      this.cosines = new Float64Array(this.capacity);
      this.selection = new Float64Array(this.capacity);
    }
    if (this.keptSlots.length < size) this.keptSlots = new Int32Array(this.capacity);
    // `cosines` holds the kept records' cosines and `keptSlots` their slots; `selection` is reordered by selection.
    const { cosines, selection, keptSlots } = this;
    let kept = 0;
    for (let slot = 0; slot < size; slot++) {
      const cosine = Math.max(-1, Math.min(1, scores[slot]! * inverseNorms[slot]!));
      if (cosine < bound) continue;
      cosines[kept] = cosine;
      selection[kept] = cosine;
      keptSlots[kept++] = slot;
    }
    if (kept < topK) return undefined;
    const threshold = kthLargest(selection, kept, topK);
    const ids = this.ids;
    const picked: Array<{ score: number; id: string; item: number }> = [];
    for (let at = 0; at < kept; at++) {
      const score = cosines[at]!;
      if (score >= threshold) picked.push({ score, id: ids[keptSlots[at]!]!, item: keptSlots[at]! });
    }
    picked.sort(byRank);
    if (picked.length > topK) picked.length = topK;
    return picked;
  }

  /**
   * Un-normalised-by-record scores (`dot(q/|q|, v)`) of every live slot. Two queries in a row with the same vector
   * and no write between them (retrieval's main search and its exact-match search) share one computation.
   */
  private scoreAll(query: Float32Array, inverseQueryNorm: number): Float64Array {
    const { dense, dimensions } = this;
    if (this.scoredGeneration === this.generation && sameValues(this.scoredQuery, query)) return dense.scores;
    // The query's non-zero dimensions, ascending, with their weights in the unit query: a sparse query (the hashing
    // embedder's) costs nnz(q) × N instead of D × N, and the sums are those of a row-major dot product.
    const dims: number[] = [];
    const weights: number[] = [];
    for (let i = 0; i < dimensions; i++) {
      const raw = query[i]!;
      if (raw === 0) continue;
      dims.push(i);
      weights.push(raw * inverseQueryNorm);
    }
    dense.accumulate(this.size, dims, weights);
    this.scoredGeneration = this.generation;
    this.scoredQuery = Float32Array.from(query);
    return dense.scores;
  }

  /**
   * The stored values of a slot. Copied from the row-major copy: gathering 1536 values from the columns touches
   * 1536 memory pages, and retrieval asks for the values of a couple of hundred matches per query.
   */
  values(slot: number): Float32Array {
    return this.rows.slice(slot * this.dimensions, (slot + 1) * this.dimensions);
  }

  record(slot: number): VectorRecord {
    return { id: this.ids[slot]!, values: this.values(slot), metadata: copyMetadata(this.metadata[slot]!) };
  }

  match(slot: number, score: number, includeValues: boolean, sharedMetadata = false): VectorMatch {
    // Stored metadata objects are only ever replaced, never changed in place, so sharing one is safe for a caller
    // that keeps its promise not to modify it.
    const metadata = sharedMetadata ? this.metadata[slot]! : copyMetadata(this.metadata[slot]!);
    const match: VectorMatch = { id: this.ids[slot]!, score, metadata };
    if (includeValues) match.values = this.values(slot);
    return match;
  }

  private resize(capacity: number): void {
    const rows = new Float32Array(capacity * this.dimensions);
    rows.set(this.rows.subarray(0, this.size * this.dimensions));
    this.rows = rows;
    const dense = createDenseColumns(capacity, this.dimensions);
    const old = this.capacity;
    const from = this.dense.columns;
    for (let i = 0; i < this.dimensions; i++) {
      dense.columns.set(from.subarray(i * old, i * old + this.size), i * capacity);
    }
    const inverseNorms = new Float64Array(capacity);
    inverseNorms.set(this.inverseNorms.subarray(0, this.size));
    this.dense = dense;
    this.inverseNorms = inverseNorms;
    this.generation++;
  }
}

function sameValues(a: Float32Array | undefined, b: Float32Array): boolean {
  if (a === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

function prepareRecords(storyId: string, records: unknown, dimensions: number): PreparedRecord[] {
  return checkUpsertBatch(storyId, records, {
    label: 'records',
    fields: 'id, values and metadata',
    inspectBody: (item, at, problems) => inspectVector(item.values, dimensions, `${at}.values`, problems),
    build: ({ id, item, metadata }, squared) => ({
      id,
      // Not copied here: the partition copies it into its own buffer within this same synchronous upsert.
      values: item.values as Float32Array,
      inverseNorm: 1 / Math.sqrt(squared),
      metadata: copyMetadata(metadata),
    }),
  });
}
