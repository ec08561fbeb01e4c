/**
 * The in-process `KeywordIndex`: an inverted index per story ranked with BM25. No network, no native module.
 *
 * @module
 */
import { z } from 'zod';
import { ClosedError, throwIfAborted, toProblems, ValidationError } from '../core/errors.js';
import type { VectorMetadata } from '../state/schema.js';
import { compileFilter } from './compiled-filter.js';
import { type MetadataFilter, matchesFilter } from './filter.js';
import {
  checkDeletion,
  checkKeywordQuery,
  checkStoryId,
  checkUpsertBatch,
  copyMetadata,
  describeProblems,
  inspectDocumentText,
} from './index-arguments.js';
import type { KeywordIndex, KeywordIndexCapabilities, KeywordMatch } from './keyword-index.js';
import { analyze } from './text-analysis.js';
import { bestPassing, byRank, kthLargest, sampledLowerBound, TopKHeap } from './top-k.js';

/**
 * Options of `createMemoryKeywordIndex`: the two BM25 constants.
 *
 * @example
 * ```ts
 * import { createMemoryKeywordIndex, type MemoryKeywordIndexOptions } from 'storyloom';
 * // Less length normalisation: long scenes are not penalised as much.
 * const options: MemoryKeywordIndexOptions = { k1: 1.2, b: 0.5 };
 * const index = createMemoryKeywordIndex(options);
 * ```
 */
export interface MemoryKeywordIndexOptions {
  /** Term-frequency saturation: how much a repeated term keeps adding. Default 1.2 (Lucene's). */
  k1?: number;
  /** Length normalisation from 0 (none) to 1 (full). Default 0.75 (Lucene's). */
  b?: number;
}

const OptionsSchema = z.object({
  k1: z.number().min(0).max(10).default(1.2),
  b: z.number().min(0).max(1).default(0.75),
});

/** The largest `topK` accepted, the same as the memory vector index's. */
const MAX_TOP_K = 10_000;

const CAPABILITIES: KeywordIndexCapabilities = Object.freeze({
  maxTopK: MAX_TOP_K,
  deleteByFilter: true,
  durable: false,
});

/**
 * Creates an in-memory BM25 keyword index.
 *
 * Texts go through `analyze` (accent folding, lowercasing, English stop words, Porter stemming), so "Dragons"
 * finds "dragon" and "cafe" finds "Café". Scores use Lucene's BM25: idf `ln(1 + (N - n + 0.5) / (n + 0.5))` over
 * the story's documents, term frequency saturated by `k1`, length normalised by `b` against the story's average
 * document length.
 *
 * @example
 * ```ts
 * import { createMemoryKeywordIndex } from 'storyloom';
 *
 * const index = createMemoryKeywordIndex();
 * await index.upsert('story-1', [
 *   {
 *     id: 'scene-1',
 *     text: 'Mira followed the dragon into the flooded archive.',
 *     metadata: { storyId: 'story-1', type: 'scene', timestamp: Date.now(), sourceId: 'scene-1' },
 *   },
 * ]);
 * const matches = await index.query('story-1', { text: 'dragons', topK: 5 });
 * ```
 */
export function createMemoryKeywordIndex(options: MemoryKeywordIndexOptions = {}): KeywordIndex {
  const parsed = OptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    const problems = toProblems(parsed.error.issues, 'options');
    throw new ValidationError(`Invalid memory keyword index options: ${describeProblems(problems)}`, { problems });
  }
  const { k1, b } = parsed.data;
  const partitions = new Map<string, KeywordPartition>();
  let closed = false;

  const open = (operation: string): void => {
    if (closed) throw new ClosedError(`Cannot ${operation}: the memory keyword index is closed`);
  };

  return {
    specificationVersion: 'v1',
    provider: 'memory',
    capabilities: CAPABILITIES,

    async upsert(storyId, documents, upsertOptions) {
      open('upsert');
      checkStoryId(storyId);
      throwIfAborted(upsertOptions?.signal);
      // Analysis happens during validation, so the partition is only touched once every document is known good.
      const prepared = prepareDocuments(storyId, documents);
      if (prepared.length === 0) return;
      let partition = partitions.get(storyId);
      if (!partition) {
        partition = new KeywordPartition();
        partitions.set(storyId, partition);
      }
      for (const document of prepared) partition.put(document);
    },

    async query(storyId, query) {
      open('query');
      checkStoryId(storyId);
      checkKeywordQuery(query, MAX_TOP_K);
      const { topK } = query;
      const partition = partitions.get(storyId);
      if (!partition) return [];
      return partition.search(analyze(query.text), topK, query.filter, k1, b, query.sharedMetadata === true);
    },

    async delete(storyId, deletion) {
      open('delete');
      checkStoryId(storyId);
      const target = checkDeletion(deletion);
      const partition = partitions.get(storyId);
      if (!partition) return 0;
      let deleted = 0;
      if ('ids' in target) {
        for (const id of new Set(target.ids)) if (partition.remove(id)) deleted++;
      } else {
        const doomed: string[] = [];
        for (const [id, document] of partition.documents) {
          if (matchesFilter(document.metadata, target.filter)) doomed.push(id);
        }
        for (const id of doomed) if (partition.remove(id)) deleted++;
      }
      if (partition.documents.size === 0) partitions.delete(storyId);
      return deleted;
    },

    async count(storyId) {
      open('count');
      checkStoryId(storyId);
      return partitions.get(storyId)?.documents.size ?? 0;
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

/** A document that passed validation: its analysed terms, every occurrence in order. */
interface PreparedDocument {
  id: string;
  terms: readonly string[];
  metadata: VectorMetadata;
}

/**
 * A stored document: the number of its slot in the partition's per-slot arrays, and the postings that list it (for
 * removal). It keeps no term map of its own: a story of 10,000 scenes held 10,000 maps of a hundred-odd entries and
 * their own copies of every term string, most of what garbage collection walked while a SQLite mirror loaded.
 */
interface StoredDocument {
  id: string;
  length: number;
  metadata: VectorMetadata;
  slot: number;
  postings: Posting[];
}

/**
 * The documents that contain one term, as parallel arrays of slot numbers and term frequencies, with each
 * document's position for removal. Scoring walks these arrays and the partition's per-slot arrays only, never a
 * map or a document object: a common term's list holds a large share of the story, and chasing a pointer per entry
 * cost more than the arithmetic.
 */
class Posting {
  constructor(
    /** The term, as the partition's postings map holds it. */
    readonly term: string,
  ) {}
  readonly slots: number[] = [];
  readonly frequencies: number[] = [];
  /**
   * `(k1 + 1) · f / (f + lengthNorm(slot))` per entry, the part of the term's BM25 score that does not depend on its
   * idf, computed by the first search after a write (`weightsKey` is the partition's length-norm key it was made
   * under) and reused until the next write: a common term's list is walked by most queries, and this takes a
   * division and a lookup of the slot's length norm out of every step. Only terms that are searched get one.
   */
  weights: Float64Array | undefined;
  weightsKey = '';
  /**
   * Slot → position in `slots`, built on the first removal only (speed: loading a story adds about a hundred
   * postings per document, and a map entry per posting made loads several times slower; most postings never lose a
   * document).
   */
  private positions: Map<number, number> | undefined;

  get size(): number {
    return this.slots.length;
  }

  /** Counts one occurrence of the term in the document at `slot`; true when that document was not listed yet. */
  count(slot: number): boolean {
    const last = this.slots.length - 1;
    // A document's occurrences are counted together (put), so it can only be the last one listed.
    if (last >= 0 && this.slots[last] === slot) {
      this.frequencies[last]!++;
      return false;
    }
    this.positions?.set(slot, this.slots.length);
    this.slots.push(slot);
    this.frequencies.push(1);
    return true;
  }

  remove(slot: number): void {
    let positions = this.positions;
    if (positions === undefined) {
      positions = new Map();
      for (let at = 0; at < this.slots.length; at++) positions.set(this.slots[at]!, at);
      this.positions = positions;
    }
    const position = positions.get(slot);
    if (position === undefined) return;
    const last = this.slots.length - 1;
    if (position !== last) {
      const moved = this.slots[last]!;
      this.slots[position] = moved;
      this.frequencies[position] = this.frequencies[last]!;
      positions.set(moved, position);
    }
    this.slots.pop();
    this.frequencies.pop();
    positions.delete(slot);
  }
}

/** The inverted index of one story. */
class KeywordPartition {
  readonly documents = new Map<string, StoredDocument>();
  /** term → the documents that contain it. */
  private readonly postings = new Map<string, Posting>();
  private totalLength = 0;
  /** The document in each slot (undefined when free); slots of removed documents are reused first. */
  private readonly bySlot: Array<StoredDocument | undefined> = [];
  private readonly freeSlots: number[] = [];
  /** Per-slot document length, and the scratch of one search: the score so far, valid while `stamps[slot]` is its stamp. */
  private lengths = new Float64Array(64);
  private scores = new Float64Array(64);
  private stamps = new Uint32Array(64);
  private searches = 0;
  /**
   * `k1 · (1 − b + b · length / averageLength)` per slot, the document-length part of BM25, kept between searches
   * while no write changed the lengths (speed, bench:context: one division less per posting visited).
   */
  private lengthNorms = new Float64Array(64);
  private lengthNormsKey = '';
  /** Counts the writes: length norms and posting weights made before the last write are stale. */
  private writes = 0;
  /** Scratch for selecting the k-th best score of a search. */
  private selection = new Float64Array(0);
  /** Scratch of one search: the slots it scored, in the order first touched. */
  private touched = new Int32Array(0);
  /** Scratch of `bestAbove`: the slots it kept, in the order touched. */
  private keptSlots = new Int32Array(0);

  put(prepared: PreparedDocument): void {
    // Replacing must take the old terms out, or a document would still match words it no longer contains.
    this.remove(prepared.id);
    const slot = this.freeSlots.pop() ?? this.bySlot.length;
    if (slot >= this.lengths.length) this.grow(this.lengths.length * 2);
    // Occurrences are counted straight into the postings (one map lookup each), not into a map per document first.
    const postings: Posting[] = [];
    for (const term of prepared.terms) {
      let posting = this.postings.get(term);
      if (!posting) {
        posting = new Posting(term);
        this.postings.set(term, posting);
      }
      if (posting.count(slot)) postings.push(posting);
    }
    const { id, metadata } = prepared;
    const length = prepared.terms.length;
    const document: StoredDocument = { id, length, metadata, slot, postings };
    this.bySlot[slot] = document;
    this.lengths[slot] = length;
    this.writes++;
    this.documents.set(id, document);
    this.totalLength += length;
  }

  remove(id: string): boolean {
    const document = this.documents.get(id);
    if (!document) return false;
    this.writes++;
    for (const posting of document.postings) {
      posting.remove(document.slot);
      if (posting.size === 0) this.postings.delete(posting.term);
    }
    this.documents.delete(id);
    this.bySlot[document.slot] = undefined;
    this.freeSlots.push(document.slot);
    this.totalLength -= document.length;
    return true;
  }

  search(
    terms: string[],
    topK: number,
    filter: MetadataFilter | undefined,
    k1: number,
    b: number,
    sharedMetadata: boolean,
  ): KeywordMatch[] {
    if (terms.length === 0) return [];
    const documentCount = this.documents.size;
    const averageLength = this.totalLength / documentCount;
    // A term asked twice weighs twice, as in Lucene and FTS5 where each occurrence is its own clause.
    const queryFrequencies = new Map<string, number>();
    for (const term of terms) queryFrequencies.set(term, (queryFrequencies.get(term) ?? 0) + 1);

    // Scores are summed in per-slot arrays stamped with this search rather than in a map keyed by id.
    if (this.searches === 0xffffffff) {
      this.stamps.fill(0);
      this.searches = 0;
    }
    const stamp = ++this.searches;
    const { scores, stamps } = this;
    const lengthNorms = this.lengthNormsFor(k1, b, averageLength);
    const weightsKey = this.lengthNormsKey;
    if (this.touched.length < this.bySlot.length) this.touched = new Int32Array(this.scores.length);
    const touched = this.touched;
    let touchedCount = 0;
    for (const [term, queryFrequency] of queryFrequencies) {
      const posting = this.postings.get(term);
      if (!posting) continue;
      const idf = Math.log(1 + (documentCount - posting.size + 0.5) / (posting.size + 0.5));
      const { slots } = posting;
      let weights = posting.weights;
      if (weights === undefined || posting.weightsKey !== weightsKey) {
        if (weights === undefined || weights.length !== slots.length) weights = new Float64Array(slots.length);
        const { frequencies } = posting;
        for (let at = 0; at < slots.length; at++) {
          const frequency = frequencies[at]!;
          weights[at] = (frequency * (k1 + 1)) / (frequency + lengthNorms[slots[at]!]!);
        }
        posting.weights = weights;
        posting.weightsKey = weightsKey;
      }
      const termWeight = queryFrequency * idf;
      for (let at = 0; at < slots.length; at++) {
        const slot = slots[at]!;
        if (stamps[slot] !== stamp) {
          stamps[slot] = stamp;
          scores[slot] = termWeight * weights[at]!;
          touched[touchedCount++] = slot;
        } else {
          scores[slot]! += termWeight * weights[at]!;
        }
      }
    }

    // BM25 statistics are over the whole story whatever the filter, so a document's score does not depend on it:
    // the filter only decides membership. The best few are ranked without reading metadata and filtered best first;
    // a selective filter that leaves fewer than topK among them gets the filtered pass. Same result either way.
    const toMatch = (entry: { score: number; id: string; item: StoredDocument }): KeywordMatch => ({
      id: entry.id,
      score: entry.score,
      // Stored metadata is only ever replaced, never changed in place: sharing it is safe for a caller that keeps
      // its promise not to modify it.
      metadata: sharedMetadata ? entry.item.metadata : copyMetadata(entry.item.metadata),
    });
    if (filter === undefined) return this.best(touched, touchedCount, topK, undefined).map(toMatch);
    const passes = compileFilter(filter);
    const passesDocument = (document: StoredDocument) => passes(document.metadata);
    const ranker = (k: number, passes: ((document: StoredDocument) => boolean) | undefined) =>
      this.best(touched, touchedCount, k, passes);
    return bestPassing(ranker, topK, touchedCount, passesDocument).map(toMatch);
  }

  /** The `topK` best of the first `count` touched slots (scores of the current search) that pass, best first. */
  private best(
    touched: Int32Array,
    count: number,
    topK: number,
    passes: ((document: StoredDocument) => boolean) | undefined,
  ): Array<{ score: number; id: string; item: StoredDocument }> {
    const { scores, bySlot } = this;
    if (passes === undefined && count > 4 * topK && topK > 0) {
      // Common words touch most of the story: a heap step per candidate that beat its worst so far cost more than
      // the search. One pass keeps the few at or above a sampled bound instead.
      const bound = sampledLowerBound(count, topK, (at) => scores[touched[at]!]!);
      return (
        this.bestAbove(touched, count, topK, bound) ?? this.bestAbove(touched, count, topK, Number.NEGATIVE_INFINITY)!
      );
    }
    const best = new TopKHeap<StoredDocument>(Math.min(topK, count));
    let threshold = best.threshold;
    for (let at = 0; at < count; at++) {
      const slot = touched[at]!;
      const score = scores[slot]!;
      if (score < threshold) continue;
      const document = bySlot[slot]!;
      if (!best.accepts(score, document.id)) continue;
      if (passes !== undefined && !passes(document)) continue;
      best.offer(score, document.id, document);
      threshold = best.threshold;
    }
    return best.takeSorted();
  }

  /**
   * `best` without a filter, in one pass over the touched slots (speed, bench:context): only the slots scoring at
   * least `bound` (`sampledLowerBound`'s estimate, a few times `topK` of them; every slot at `-Infinity`) are kept,
   * and the exact k-th best is selected among those, so only about `topK` are sorted. Whenever `topK` or more are
   * kept, the picks and their order are exactly those of a heap over every slot. Undefined when fewer are kept (an
   * unlucky sample): the caller then asks again at `-Infinity`.
   */
  private bestAbove(
    touched: Int32Array,
    count: number,
    topK: number,
    bound: number,
  ): Array<{ score: number; id: string; item: StoredDocument }> | undefined {
    const { scores, bySlot } = this;
    if (this.selection.length < count) this.selection = new Float64Array(this.scores.length);
    if (this.keptSlots.length < count) this.keptSlots = new Int32Array(this.scores.length);
    const { selection, keptSlots } = this;
    let kept = 0;
    for (let at = 0; at < count; at++) {
      const slot = touched[at]!;
      const score = scores[slot]!;
      if (score < bound) continue;
      selection[kept] = score;
      keptSlots[kept++] = slot;
    }
    if (kept < topK) return undefined;
    const threshold = kthLargest(selection, kept, topK);
    const picked: Array<{ score: number; id: string; item: StoredDocument }> = [];
    for (let at = 0; at < kept; at++) {
      const slot = keptSlots[at]!;
      const score = scores[slot]!;
      if (score < threshold) continue;
      const document = bySlot[slot]!;
      picked.push({ score, id: document.id, item: document });
    }
    picked.sort(byRank);
    if (picked.length > topK) picked.length = topK;
    return picked;
  }

  private lengthNormsFor(k1: number, b: number, averageLength: number): Float64Array {
    // Any write changes the key (lengths and the average may have changed); between writes only the constants could.
    const key = `${this.writes}:${k1}:${b}`;
    if (key === this.lengthNormsKey && this.lengthNorms.length === this.lengths.length) return this.lengthNorms;
    if (this.lengthNorms.length !== this.lengths.length) this.lengthNorms = new Float64Array(this.lengths.length);
    const { lengths, lengthNorms } = this;
    for (let slot = 0; slot < this.bySlot.length; slot++) {
      lengthNorms[slot] = k1 * (averageLength > 0 ? 1 - b + (b * lengths[slot]!) / averageLength : 1);
    }
    this.lengthNormsKey = key;
    return lengthNorms;
  }

  private grow(capacity: number): void {
    const lengths = new Float64Array(capacity);
    lengths.set(this.lengths);
    this.lengths = lengths;
    this.scores = new Float64Array(capacity);
    // Stamps restart with the new array: no slot can carry a stale stamp of a later search.
    this.stamps = new Uint32Array(capacity);
    this.searches = 0;
  }
}

/**
 * One story's BM25 partition filled with terms that were analysed already: the SQLite keyword index's in-memory
 * mirror, loaded from the terms it stores. Internal: not exported from the package.
 */
export interface AnalysedKeywordPartition {
  /** Number of documents held. */
  readonly size: number;
  /**
   * Adds or replaces a document. `terms` are `analyze`'s output, used as they are: Porter stemming is not idempotent,
   * so analysing them again would change them. `metadata` is kept by reference; results return copies of it
   * unless `sharedMetadata` is asked for.
   */
  put(id: string, terms: readonly string[], metadata: VectorMetadata): void;
  remove(id: string): boolean;
  /** Ranks exactly as `createMemoryKeywordIndex()` (default k1 and b) does: `queryTerms` are `analyze(query.text)`. */
  search(
    queryTerms: string[],
    topK: number,
    filter: MetadataFilter | undefined,
    sharedMetadata?: boolean,
  ): KeywordMatch[];
}

/** Creates an empty `AnalysedKeywordPartition`. Internal: for `createSqliteKeywordIndex` only. */
export function createAnalysedKeywordPartition(): AnalysedKeywordPartition {
  const { k1, b } = OptionsSchema.parse({});
  const partition = new KeywordPartition();
  return {
    get size() {
      return partition.documents.size;
    },
    put: (id, terms, metadata) => partition.put({ id, terms, metadata }),
    remove: (id) => partition.remove(id),
    search: (queryTerms, topK, filter, sharedMetadata = false) =>
      partition.search(queryTerms, topK, filter, k1, b, sharedMetadata),
  };
}

function prepareDocuments(storyId: string, documents: unknown): PreparedDocument[] {
  return checkUpsertBatch(storyId, documents, {
    label: 'documents',
    fields: 'id, text and metadata',
    inspectBody: inspectDocumentText,
    build: ({ id, item, metadata }) => ({ id, terms: analyze(item.text as string), metadata: copyMetadata(metadata) }),
  });
}
