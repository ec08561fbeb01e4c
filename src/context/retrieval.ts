/**
 * Hybrid retrieval: exact, lexical (BM25) and semantic (vector) candidates, fused, scored by relevance, recency and
 * importance in the manner of Generative Agents, and diversified with maximal marginal relevance (MMR). Pure and
 * backend-agnostic: it talks to the `VectorIndex`, `KeywordIndex` and `Embedder` ports only.
 *
 * Also the one place that decides what text a unit (a scene, a dialogue turn, a section) is indexed under, so the
 * context manager and the retrieval benchmark index the same way.
 *
 * @module
 */
import { z } from 'zod';
import { throwIfAborted, toProblems, ValidationError } from '../core/errors.js';
import { LIMITS, type VectorMetadata } from '../state/schema.js';
import { compileFilter } from './compiled-filter.js';
import { checkEmbeddings, type Embedder } from './embedder.js';
import { MAX_FILTER_VALUES, type MetadataFilter, validateFilter } from './filter.js';
import { copyMetadata } from './index-arguments.js';
import type { KeywordIndex } from './keyword-index.js';
import { selectByMmr } from './mmr.js';
import { proximityScores } from './term-proximity.js';
import { analyze, foldText, SPACELESS_SCRIPT, STOP_WORDS, stem, tokenizeWords } from './text-analysis.js';
import { descending, insertBounded, TopKHeap } from './top-k.js';
import type { VectorIndex, VectorIndexCapabilities } from './vector-index.js';

/** How dense and lexical rankings are combined. */
export type FusionMethod = 'rrf' | 'combsum';

/**
 * Options of `createHybridRetriever`. The defaults were chosen by measurement on the development split of the
 * retrieval benchmark (`npm run bench:retrieval`); `npm run bench:retrieval` reproduces the numbers.
 *
 * @example
 * ```ts
 * import type { HybridRetrieverOptions } from 'storyloom';
 * const options: HybridRetrieverOptions = { fusion: { method: 'rrf', rrfK: 60 }, mmr: { lambda: 1 } };
 * ```
 */
export interface HybridRetrieverOptions {
  /** How many candidates each source (dense, lexical) contributes before fusion. Default `max(4·k, 40)`. */
  candidates?: number;
  fusion?: {
    /**
     * `combsum` (default): weighted sum of each source's scores, min-max normalised over its candidates; a
     * candidate missing from a source gets 0 from it. `rrf`: reciprocal-rank fusion, `Σ weight / (rrfK + rank)`.
     */
    method?: FusionMethod;
    /** The RRF constant. Default 60 (Cormack et al.). */
    rrfK?: number;
    /** Weight of the dense (vector) ranking. Default 0.5: with the offline hashing embedder the dense side is weaker than BM25. */
    denseWeight?: number;
    /** Weight of the lexical (BM25) ranking. Default 1. */
    lexicalWeight?: number;
  };
  /** Generative-Agents scoring: `final = α·relevance + β·recency + γ·importance (+ exact)`. */
  scoring?: {
    /** α, weight of relevance (the fused score normalised to [0, 1] over the candidates). Default 1. */
    relevance?: number;
    /** β, weight of recency. Default 0.15. */
    recency?: number;
    /** γ, weight of importance (`metadata.importance`, 0..1). Default 0.15. */
    importance?: number;
    /** Added for candidates matched exactly (by id, character, location or theme). Default 0.3. */
    exact?: number;
    /**
     * Recency decay per scene: `recency = decay ^ (now.sceneIndex - sceneIndex)`. Default 0.98 (a scene 35 scenes
     * back counts half).
     */
    sceneDecay?: number;
    /** When scene indexes are unknown, recency halves every `halfLifeMs` of `timestamp` age. Default 7 days. */
    halfLifeMs?: number;
  };
  /**
   * Pseudo-relevance feedback (Rocchio) on the dense side: after the first fusion, the query vector is moved toward
   * the mean vector of the `documents` best fused candidates (`q + weight·mean`) and the vector search runs again.
   * It lets the lexical ranking steer the semantic one toward units like its best hits. `documents: 0` turns it off.
   */
  feedback?: { documents?: number; weight?: number };
  /**
   * Lexical pseudo-relevance feedback (RM3-style) on the BM25 side: the `documents` best lexical hits vote for their
   * terms (term share of each hit's `metadata.text`, weighted by its BM25 score, times the term's rarity among all
   * lexical hits); the `terms` best new terms are added to the query, the original query counting `queryWeight`
   * times, and BM25 runs again. Needs `metadata.text`. `documents: 0` turns it off.
   */
  lexicalFeedback?: { documents?: number; terms?: number; queryWeight?: number };
  /**
   * Hierarchical memory: units belong to groups (scenes to chapters, turns to sessions) named by a metadata field.
   * A group's evidence is the sum of its best members' relevances; each unit's final score gains `weight` times its
   * group's evidence (normalised to [0, 1] over the groups), so a unit in the chapter that is, as a whole, about
   * the query outranks an equally matching stray one. `retrieveGroups` ranks the groups themselves by the same
   * evidence. `weight: 0` turns the boost off (`retrieveGroups` still works).
   */
  grouping?: {
    /** The metadata field that names a unit's group. Default `'chapterId'`. */
    field?: GroupField;
    /** Weight of the group evidence in the final score. Default 0.4. */
    weight?: number;
    /** How many of a group's best members count toward its evidence. Default 3. */
    members?: number;
    /**
     * How many candidates each source contributes when grouping is on (more members seen → fairer group
     * evidence). Default `max(candidates, 20·k)`: 200 at k = 10, 100 at k = 5. A deeper pool costs time in both
     * searches and every later stage (at k = 5 and 10,000 scenes, 200 instead of 100 made `getRelevantContext`
     * about 0.9 ms slower, for 0.4 points of LoCoMo turn recall@5; docs/retrieval.md).
     */
    candidates?: number;
  };
  /**
   * Term proximity (BM25TP-style): the `candidates` best fused candidates are re-scored by how close together
   * their `metadata.text` holds the query's terms (pairs of distinct query terms within `window` non-stop-word
   * positions add `w(a)·w(b)/distance²`, `w` a term's rarity among those candidates), normalised to [0, 1] over
   * them; each one's fused score gains `weight ×` that times the best fused score. BM25 and the hashing embedder
   * score terms independently, so this is the only place where "red stone" beats a "red" and a "stone" far apart.
   * Needs `metadata.text`; a query of fewer than two terms is left as it is. `weight: 0` turns it off.
   */
  proximity?: {
    /** Weight of the proximity evidence, relative to the best fused score. Default 0.2. */
    weight?: number;
    /**
     * How many of the best fused candidates are re-scored. Default `max(3·k, 10)`, as many as MMR chooses from:
     * enough to reorder what could enter the top k, few enough to stay cheap.
     */
    candidates?: number;
    /** Largest distance (in non-stop-word positions) at which two query terms count as near. Default 8. */
    window?: number;
    /**
     * How much of each candidate's text is read, from its start: it bounds the cost on long scenes. Default 1,200
     * characters (`metadata.text` holds up to 2,000).
     */
    characters?: number;
  };
  /** Maximal marginal relevance over the candidates' vectors. */
  mmr?: {
    /** λ in `λ·score − (1 − λ)·max similarity to what is already chosen`; 1 turns MMR off. Default 0.95. */
    lambda?: number;
    /** How many of the best-scored candidates MMR chooses from. Default `3·k`. */
    pool?: number;
  };
}

/** Metadata fields that can name a unit's group. */
export type GroupField = 'chapterId' | 'sourceId';

/** Things the query names that must be boosted whatever their lexical or semantic score. */
export interface ExactMatches {
  /** Record ids to boost (and fetch, when the searches did not find them). */
  ids?: string[];
  /** Records whose `metadata.characters` holds one of these. */
  characters?: string[];
  /** Records whose `metadata.locations` holds one of these. */
  locations?: string[];
  /** Records whose `metadata.themes` holds one of these. */
  themes?: string[];
}

/** One retrieval request. */
export interface RetrievalQuery {
  query: string;
  /** How many results to return. */
  k: number;
  filter?: MetadataFilter;
  exact?: ExactMatches;
  /** "Now" for recency: the current scene index and/or time. Without it recency is neutral (1 for every candidate). */
  now?: { sceneIndex?: number; timestamp?: number };
  /**
   * `'sourceId'`: at most one candidate per source (a long scene's best chunk), chosen before diversity, so `k`
   * counts distinct scenes. Default: every chunk competes on its own.
   */
  distinct?: 'sourceId';
  signal?: AbortSignal;
}

/** Where a candidate stood in one source's ranking (1-based rank) and its raw score there. */
export interface SourceSignal {
  rank: number;
  score: number;
}

/** Why each candidate scored what it scored. */
export interface RetrievalSignals {
  dense?: SourceSignal;
  lexical?: SourceSignal;
  exact: boolean;
  /** The fused score before normalisation. */
  fused: number;
  /** The fused score normalised to [0, 1] over the candidates. */
  relevance: number;
  recency: number;
  importance: number;
  /** The evidence of the candidate's group, normalised to [0, 1] over the groups, when grouping is on. */
  group?: number;
  /** The term-proximity evidence in [0, 1] (already part of `fused`), when the candidate was re-scored for it. */
  proximity?: number;
  /**
   * α·relevance + β·recency + γ·importance + exact boost (+ group boost): the order before MMR. On a later `page`,
   * scaled under every candidate of the earlier pages.
   */
  final: number;
  /**
   * The page of the search that found the candidate, when past the first (2, 3, ...): the first could not hold k
   * sources within what one response of the index holds, and the next asked for the sources it had not found. Its
   * other signals are measured within its page.
   */
  page?: number;
  /** The MMR score when the candidate was chosen, if MMR ran. */
  mmr?: number;
}

/** A scored candidate. */
export interface RetrievedCandidate {
  id: string;
  metadata: VectorMetadata;
  score: number;
  signals: RetrievalSignals;
}

/** A candidate that would have made the top k by score but lost its place to MMR. */
export interface DroppedCandidate extends RetrievedCandidate {
  reason: 'near-duplicate';
  /** The chosen candidate it is most similar to, and how similar (cosine). */
  similarTo: string;
  similarity: number;
}

/**
 * Milliseconds per step of one retrieval. `vector` and `lexical` run concurrently: each is its own call plus how
 * long its result took to arrive once both had been started (for in-process indexes, the call is the work). `mmr`
 * includes fetching the vectors of lexical-only candidates.
 */
export interface RetrievalTimings {
  embed: number;
  vector: number;
  lexical: number;
  fuse: number;
  /** The term-proximity re-scoring (`HybridRetrieverOptions.proximity`). */
  proximity: number;
  score: number;
  mmr: number;
  total: number;
}

/** Timings of a retrieval that has not run any stage yet: every stage at 0. */
export function noTimings(): RetrievalTimings {
  return { embed: 0, vector: 0, lexical: 0, fuse: 0, proximity: 0, score: 0, mmr: 0, total: 0 };
}

/**
 * What `retrieve` returns: the chosen candidates best first, those MMR dropped, the next best that were not chosen,
 * and the time per stage.
 */
export interface RetrievalResult {
  candidates: RetrievedCandidate[];
  dropped: DroppedCandidate[];
  /**
   * The best `k` candidates after the chosen ones that were neither chosen nor dropped as near-duplicates, best
   * first: what a trace shows as "ranked below the top k" (with `distinct`, one per source).
   */
  runnersUp: RetrievedCandidate[];
  timings: RetrievalTimings;
}

/** A group (chapter, session) ranked by the evidence of its members. */
export interface RetrievedGroup {
  /** The value of the grouping field. */
  key: string;
  /** The sum of the relevances of its best `grouping.members` members. */
  score: number;
  /** Its members among the candidates, best first (at most `grouping.members`). */
  members: RetrievedCandidate[];
}

/** What `retrieveGroups` returns: groups best first, and the time per stage. */
export interface GroupRetrievalResult {
  groups: RetrievedGroup[];
  timings: RetrievalTimings;
}

/** A hybrid retriever over one vector index, one keyword index and one embedder. */
export interface HybridRetriever {
  /**
   * The `k` best units for a query. A query with no term to search for and no exact match (`isSearchableQuery`)
   * finds nothing, without a search.
   */
  retrieve(storyId: string, query: RetrievalQuery): Promise<RetrievalResult>;
  /**
   * The `k` best groups (chapters by default; see `HybridRetrieverOptions.grouping`) for a query, ranked by the
   * evidence of their member units. Units without the grouping field are ignored; a query with nothing to search
   * for finds none.
   */
  retrieveGroups(storyId: string, query: RetrievalQuery): Promise<GroupRetrievalResult>;
}

/** The measured defaults (see `HybridRetrieverOptions`). */
export const DEFAULT_RETRIEVAL_OPTIONS = Object.freeze({
  fusion: Object.freeze({ method: 'combsum' as FusionMethod, rrfK: 60, denseWeight: 0.5, lexicalWeight: 1 }),
  scoring: Object.freeze({
    relevance: 1,
    recency: 0.15,
    importance: 0.15,
    exact: 0.3,
    sceneDecay: 0.98,
    halfLifeMs: 7 * 24 * 3_600_000,
  }),
  feedback: Object.freeze({ documents: 0, weight: 0.5 }),
  lexicalFeedback: Object.freeze({ documents: 0, terms: 10, queryWeight: 2 }),
  grouping: Object.freeze({ field: 'chapterId' as GroupField, weight: 0.4, members: 3 }),
  proximity: Object.freeze({ weight: 0.2, window: 8, characters: 1_200 }),
  mmr: Object.freeze({ lambda: 0.95 }),
});

const weight = z.number().min(0).max(1_000);
// Strict: a misspelt option (`methd`, `denseWieght`) is refused rather than silently left at its default.
const OptionsSchema = z.strictObject({
  candidates: z.number().int().min(1).max(10_000).optional(),
  fusion: z
    .strictObject({
      method: z.enum(['rrf', 'combsum']).default(DEFAULT_RETRIEVAL_OPTIONS.fusion.method),
      rrfK: z.number().min(0).max(10_000).default(DEFAULT_RETRIEVAL_OPTIONS.fusion.rrfK),
      denseWeight: weight.default(DEFAULT_RETRIEVAL_OPTIONS.fusion.denseWeight),
      lexicalWeight: weight.default(DEFAULT_RETRIEVAL_OPTIONS.fusion.lexicalWeight),
    })
    .default({ ...DEFAULT_RETRIEVAL_OPTIONS.fusion }),
  scoring: z
    .strictObject({
      relevance: weight.default(DEFAULT_RETRIEVAL_OPTIONS.scoring.relevance),
      recency: weight.default(DEFAULT_RETRIEVAL_OPTIONS.scoring.recency),
      importance: weight.default(DEFAULT_RETRIEVAL_OPTIONS.scoring.importance),
      exact: weight.default(DEFAULT_RETRIEVAL_OPTIONS.scoring.exact),
      sceneDecay: z.number().gt(0).max(1).default(DEFAULT_RETRIEVAL_OPTIONS.scoring.sceneDecay),
      halfLifeMs: z.number().positive().default(DEFAULT_RETRIEVAL_OPTIONS.scoring.halfLifeMs),
    })
    .default({ ...DEFAULT_RETRIEVAL_OPTIONS.scoring }),
  feedback: z
    .strictObject({
      documents: z.number().int().min(0).max(100).default(DEFAULT_RETRIEVAL_OPTIONS.feedback.documents),
      weight: z.number().min(0).max(100).default(DEFAULT_RETRIEVAL_OPTIONS.feedback.weight),
    })
    .default({ ...DEFAULT_RETRIEVAL_OPTIONS.feedback }),
  lexicalFeedback: z
    .strictObject({
      documents: z.number().int().min(0).max(100).default(DEFAULT_RETRIEVAL_OPTIONS.lexicalFeedback.documents),
      terms: z.number().int().min(1).max(100).default(DEFAULT_RETRIEVAL_OPTIONS.lexicalFeedback.terms),
      queryWeight: z.number().int().min(1).max(10).default(DEFAULT_RETRIEVAL_OPTIONS.lexicalFeedback.queryWeight),
    })
    .default({ ...DEFAULT_RETRIEVAL_OPTIONS.lexicalFeedback }),
  grouping: z
    .strictObject({
      field: z.enum(['chapterId', 'sourceId']).default(DEFAULT_RETRIEVAL_OPTIONS.grouping.field),
      weight: weight.default(DEFAULT_RETRIEVAL_OPTIONS.grouping.weight),
      members: z.number().int().min(1).max(1_000).default(DEFAULT_RETRIEVAL_OPTIONS.grouping.members),
      candidates: z.number().int().min(1).max(10_000).optional(),
    })
    .default({ ...DEFAULT_RETRIEVAL_OPTIONS.grouping }),
  proximity: z
    .strictObject({
      weight: weight.default(DEFAULT_RETRIEVAL_OPTIONS.proximity.weight),
      candidates: z.number().int().min(1).max(10_000).optional(),
      window: z.number().int().min(1).max(1_000).default(DEFAULT_RETRIEVAL_OPTIONS.proximity.window),
      characters: z.number().int().min(1).max(100_000).default(DEFAULT_RETRIEVAL_OPTIONS.proximity.characters),
    })
    .default({ ...DEFAULT_RETRIEVAL_OPTIONS.proximity }),
  mmr: z
    .strictObject({
      lambda: z.number().min(0).max(1).default(DEFAULT_RETRIEVAL_OPTIONS.mmr.lambda),
      pool: z.number().int().min(1).max(10_000).optional(),
    })
    .default({ ...DEFAULT_RETRIEVAL_OPTIONS.mmr }),
});

/**
 * Creates a hybrid retriever.
 *
 * One `retrieve` call embeds the query, then runs the vector search, the BM25 search and, when exact matches are
 * asked for, their lookups, all concurrently. The two rankings are fused (`combsum` or `rrf`), the fused score is
 * normalised to a relevance in [0, 1] and combined with recency and importance, exact matches get a fixed boost,
 * units gain the evidence of their group (chapter) when `grouping.weight > 0`, and MMR picks the final `k` so
 * near-duplicates do not crowd out the rest. Every candidate carries the breakdown of its score. Measurements behind
 * the defaults: `docs/retrieval.md`.
 *
 * @example
 * ```ts
 * import {
 *   createHashingEmbedder,
 *   createHybridRetriever,
 *   createMemoryKeywordIndex,
 *   createMemoryVectorIndex,
 * } from 'storyloom';
 *
 * const embedder = createHashingEmbedder({ dimensions: 1536 });
 * const retriever = createHybridRetriever({
 *   vectors: createMemoryVectorIndex({ dimensions: 1536 }),
 *   keywords: createMemoryKeywordIndex(),
 *   embedder,
 * });
 * const { candidates } = await retriever.retrieve('story-1', { query: 'Where did Mira hide the key?', k: 8 });
 * // The three chapters most about the key, by the evidence of their scenes (`metadata.chapterId`).
 * const { groups } = await retriever.retrieveGroups('story-1', { query: 'Where did Mira hide the key?', k: 3 });
 * ```
 */
export function createHybridRetriever(config: {
  vectors: VectorIndex;
  keywords: KeywordIndex;
  embedder: Embedder;
  options?: HybridRetrieverOptions;
}): HybridRetriever {
  const { vectors, keywords, embedder } = config;
  if (embedder.dimensions !== vectors.dimensions) {
    throw new ValidationError(
      `The embedder makes ${embedder.dimensions}-dimensional vectors but the vector index holds ${vectors.dimensions}`,
      { problems: [{ path: 'embedder.dimensions', message: `must equal vectors.dimensions (${vectors.dimensions})` }] },
    );
  }
  const parsed = OptionsSchema.safeParse(config.options ?? {});
  if (!parsed.success) {
    const problems = toProblems(parsed.error.issues, 'options');
    throw new ValidationError(`Invalid retriever options: ${problems[0]?.path}: ${problems[0]?.message}`, {
      problems,
    });
  }
  const options = parsed.data;

  const grouping = options.grouping;
  // The Porter stems of the words the proximity stage has met, kept between queries.
  const stems = new Map<string, string>();

  /** The most any one search of the pool may ask for: what both indexes answer, and what one response holds. */
  const largestPool = () =>
    Math.min(vectors.capabilities.maxTopK, keywords.capabilities.maxTopK, recordsPerResponse(vectors.capabilities));

  /**
   * Searches, fuses and scores a request that `checkRequest` passed and that has something to search for: every
   * candidate, best first.
   */
  const rank = async (
    storyId: string,
    request: RetrievalQuery,
    grouped: boolean,
    widened?: { pool: number; queryVector: Float32Array; embedTime: number },
  ): Promise<{
    scored: ScoredEntry[];
    timings: RetrievalTimings;
    pool: number;
    full: boolean;
    queryVector: Float32Array;
  }> => {
    const { query, k, filter, exact, now, signal } = request;
    // The pool never asks an index for more than it answers (10,000 on every backend, fewer where a response's size
    // is capped): a large k (or `candidates`) otherwise became the index's own error.
    const maxPool = largestPool();
    const basePool = Math.min(maxPool, options.candidates ?? Math.max(4 * k, 40));
    const poolSize = Math.min(
      maxPool,
      widened?.pool ?? (grouped ? (grouping.candidates ?? Math.max(basePool, 20 * k)) : basePool),
    );
    const timings = noTimings();

    let mark = performance.now();
    // A widened search reuses the query's vector: a remote embedder would otherwise be asked again.
    const [queryVector] = widened
      ? [widened.queryVector]
      : checkEmbeddings(embedder, 1, await embedder.embed([query], { inputType: 'query', signal }));
    timings.embed = widened ? widened.embedTime : performance.now() - mark;
    throwIfAborted(signal);
    if (!queryVector) throw new ValidationError('The embedder returned no vector for the query');

    // The lookups run concurrently. An in-process index does its work synchronously when called (it returns a
    // settled promise), a remote one waits on the network after the call returns; so a stage's time is the time of
    // its own call plus how long its promise took to settle once every lookup had been started. Timing from the call
    // to the settle alone would charge each lookup with the synchronous work of those started after it.
    const launch = <T>(stage: 'vector' | 'lexical' | undefined, start: () => Promise<T>) => {
      const begin = performance.now();
      const promise = start();
      const own = performance.now() - begin;
      return { stage, promise, own };
    };
    const exactFilter = exact ? exactMetadataFilter(exact) : undefined;
    const isExact = exactFilter ? compileFilter(exactFilter) : undefined;
    const dense = launch('vector', () =>
      // Speed (bench:context): no values here. Only the MMR pool and the feedback seeds need them, and both fetch
      // what is missing; copying the values of every one of `poolSize` matches cost more than the search.
      vectors.query(storyId, {
        vector: queryVector,
        topK: poolSize,
        filter,
        includeValues: false,
        sharedMetadata: true,
        signal,
      }),
    );
    const lexical = launch('lexical', () =>
      keywords.query(storyId, { text: query, topK: poolSize, filter, sharedMetadata: true, signal }),
    );
    const byId = launch(undefined, () =>
      exact?.ids && exact.ids.length > 0 ? vectors.fetch(storyId, exact.ids, { signal }) : Promise.resolve([]),
    );
    const launched = performance.now();
    const settle = <T>(lookup: { stage: 'vector' | 'lexical' | undefined; promise: Promise<T>; own: number }) =>
      lookup.promise.finally(() => {
        if (lookup.stage) timings[lookup.stage] = lookup.own + (performance.now() - launched);
      });
    let [denseMatches, lexicalMatches, exactById] = await Promise.all([settle(dense), settle(lexical), settle(byId)]);
    throwIfAborted(signal);
    // The extra search brings in the best exact matches by vector that the two searches missed (the pool's own are
    // marked below). It returns the `exactTopK` best exact matches by the same vector under the same filter, so when
    // the vector search's own results already hold that many, they are its answer and it would add nothing: it is
    // skipped, saving a second scan of the story (or a network round trip) in the usual case, a query that names a
    // character the story is full of.
    const exactTopK = Math.min(poolSize, basePool);
    let exactMatches: typeof denseMatches = [];
    if (exactFilter && isExact) {
      let found = 0;
      for (const match of denseMatches) if (isExact(match.metadata)) found++;
      if (found < exactTopK) {
        const begin = performance.now();
        exactMatches = await vectors.query(storyId, {
          vector: queryVector,
          topK: exactTopK,
          filter: joined(filter, exactFilter),
          includeValues: false,
          sharedMetadata: true,
          signal,
        });
        timings.vector += performance.now() - begin;
      }
    }
    throwIfAborted(signal);

    if (options.lexicalFeedback.documents > 0 && lexicalMatches.length > 0) {
      // The whole lexical feedback (choosing the terms, the second search) is the lexical side's.
      const begin = performance.now();
      const expanded = expandQuery(query, lexicalMatches, options.lexicalFeedback);
      if (expanded !== undefined) {
        lexicalMatches = await keywords.query(storyId, {
          text: expanded,
          topK: poolSize,
          filter,
          sharedMetadata: true,
          signal,
        });
        throwIfAborted(signal);
      }
      timings.lexical += performance.now() - begin;
    }

    if (options.feedback.documents > 0 && options.feedback.weight > 0) {
      // The whole dense feedback (seeds, their vectors, the second search) is the vector side's.
      const begin = performance.now();
      const seeds = firstFusion(denseMatches, lexicalMatches, options.fusion).slice(0, options.feedback.documents);
      const known = new Map(denseMatches.map((match) => [match.id, match.values]));
      const missing = seeds.filter((id) => !known.get(id));
      if (missing.length > 0) {
        for (const record of await vectors.fetch(storyId, missing, { signal })) known.set(record.id, record.values);
      }
      const feedbackVector = rocchio(
        queryVector,
        seeds.map((id) => known.get(id)),
        options.feedback.weight,
      );
      if (feedbackVector) {
        denseMatches = await vectors.query(storyId, {
          vector: feedbackVector,
          // With their values: fewer of them fit one response where its size is capped.
          topK: Math.min(poolSize, recordsPerResponse(vectors.capabilities, vectors.dimensions)),
          filter,
          includeValues: true,
          sharedMetadata: true,
          signal,
        });
        throwIfAborted(signal);
      }
      timings.vector += performance.now() - begin;
    }

    mark = performance.now();
    const pool = new Map<string, PoolEntry>();
    const entry = (id: string, metadata: VectorMetadata): PoolEntry => {
      let found = pool.get(id);
      if (!found) {
        found = newPoolEntry(id, metadata);
        pool.set(id, found);
      }
      return found;
    };
    denseMatches.forEach((match, index) => {
      const candidate = entry(match.id, match.metadata);
      candidate.dense = { rank: index + 1, score: match.score };
      if (match.values) candidate.values = match.values;
    });
    lexicalMatches.forEach((match, index) => {
      entry(match.id, match.metadata).lexical = { rank: index + 1, score: match.score };
    });
    const exactIds = new Set(exact?.ids ?? []);
    for (const match of exactMatches) {
      const candidate = entry(match.id, match.metadata);
      candidate.exact = true;
      if (match.values && !candidate.values) candidate.values = match.values;
    }
    // Ids named outright still obey the request's filter (recency horizon, point of view), like every other source.
    const passes = filter === undefined ? undefined : compileFilter(filter);
    for (const record of exactById) {
      if (passes !== undefined && !passes(record.metadata)) continue;
      const candidate = entry(record.id, record.metadata);
      candidate.exact = true;
      if (!candidate.values) candidate.values = record.values;
    }
    for (const candidate of pool.values()) {
      if (exactIds.has(candidate.id) || isExact?.(candidate.metadata)) candidate.exact = true;
    }
    const entries = [...pool.values()];
    fuse(entries, denseMatches, lexicalMatches, options.fusion);
    timings.fuse = performance.now() - mark;

    if (options.proximity.weight > 0) {
      mark = performance.now();
      addProximityEvidence(
        entries,
        query,
        { ...options.proximity, candidates: options.proximity.candidates ?? Math.max(3 * k, 10) },
        stems,
      );
      timings.proximity = performance.now() - mark;
    }

    mark = performance.now();
    const scored = scoreCandidates(entries, options.scoring, now, grouped ? grouping : undefined);
    timings.score = performance.now() - mark;
    // Either search filled the pool: there may be more matches beyond it.
    const full = denseMatches.length >= poolSize || lexicalMatches.length >= poolSize;
    return { scored, timings, pool: poolSize, full, queryVector };
  };

  /** Checks a request; the time it was started at, or undefined when it has nothing to search for. */
  const start = (request: RetrievalQuery): number | undefined => {
    const started = performance.now();
    checkRequest(request);
    throwIfAborted(request.signal);
    // Without a term or an exact match every score is noise, and min-max scaling would make the best of it
    // "relevance 1": a query with nothing to search for finds nothing.
    return isSearchableQuery(request.query, request.exact) ? started : undefined;
  };

  return {
    async retrieve(storyId, request) {
      const started = start(request);
      if (started === undefined) return { candidates: [], dropped: [], runnersUp: [], timings: noTimings() };
      const grouped = grouping.weight > 0;
      let ranked = await rank(storyId, request, grouped);
      const { k, signal } = request;
      let scored = request.distinct === 'sourceId' ? bestPerSource(ranked.scored) : ranked.scored;
      // Long sources (a long scene's many chunks) can fill the pool with few sources: widen it until k distinct
      // sources are in, or the searches hold no more. The narrower rounds' work counts too (`total` holds it); the
      // query was embedded once.
      const maxPool = largestPool();
      const widen = async (pool: number, filter: MetadataFilter | undefined) => {
        const next = await rank(storyId, filter === request.filter ? request : { ...request, filter }, grouped, {
          pool,
          queryVector: ranked.queryVector,
          embedTime: ranked.timings.embed,
        });
        for (const stage of ['vector', 'lexical', 'fuse', 'proximity', 'score'] as const) {
          next.timings[stage] += ranked.timings[stage];
        }
        return next;
      };
      while (request.distinct === 'sourceId' && scored.length < k && ranked.full && ranked.pool < maxPool) {
        ranked = await widen(Math.min(maxPool, ranked.pool * 4), request.filter);
        scored = bestPerSource(ranked.scored);
      }
      // The pool cannot widen further (one response holds so many records: Pinecone's 4 MB): the next page asks both
      // indexes for the sources not found yet. What it finds comes after everything found before, having been
      // outside both searches' pools: its final scores are scaled under the last one found, and it carries its page
      // (`signals.page`). Each page adds a source or ends the paging, as does a list of sources found too long for one
      // filter (`$nin` holds at most 1,000 values): the request then gets fewer than k, as without paging.
      for (let page = 2; request.distinct === 'sourceId' && scored.length < k && ranked.full; page++) {
        const found = new Set(scored.map((candidate) => candidate.metadata.sourceId));
        if (found.size > MAX_FILTER_VALUES) break;
        ranked = await widen(maxPool, joined(request.filter, { sourceId: { $nin: [...found] } }));
        const added = bestPerSource(ranked.scored).filter((candidate) => !found.has(candidate.metadata.sourceId));
        if (added.length === 0) break;
        scored = [...scored, ...onLaterPage(added, scored.at(-1)?.final ?? 0, page)];
      }
      const { timings } = ranked;
      const mark = performance.now();
      let chosen: RetrievedCandidate[];
      let dropped: DroppedCandidate[] = [];
      if (options.mmr.lambda >= 1 || scored.length <= k) {
        chosen = scored.slice(0, k).map(toCandidate);
      } else {
        const mmrPool = scored.slice(0, Math.max(k, options.mmr.pool ?? 3 * k));
        const missing = mmrPool.filter((candidate) => !candidate.values).map((candidate) => candidate.id);
        if (missing.length > 0) {
          // Lexical-only candidates: their vectors are needed to compare them with the rest.
          const records = await vectors.fetch(storyId, missing, { signal });
          const byId = new Map(records.map((record) => [record.id, record.values]));
          for (const candidate of mmrPool) if (!candidate.values) candidate.values = byId.get(candidate.id);
        }
        throwIfAborted(signal);
        ({ chosen, dropped } = maximalMarginalRelevance(mmrPool, k, options.mmr.lambda));
      }
      const passedOver = new Set([...chosen, ...dropped].map((candidate) => candidate.id));
      const runnersUp: RetrievedCandidate[] = [];
      for (const candidate of scored) {
        if (runnersUp.length >= k) break;
        if (!passedOver.has(candidate.id)) runnersUp.push(toCandidate(candidate));
      }
      timings.mmr = performance.now() - mark;
      timings.total = performance.now() - started;
      return { candidates: chosen, dropped, runnersUp, timings };
    },

    async retrieveGroups(storyId, request) {
      const started = start(request);
      if (started === undefined) return { groups: [], timings: noTimings() };
      const { scored, timings } = await rank(storyId, request, true);
      const mark = performance.now();
      const groups = rankGroups(scored, grouping)
        .slice(0, request.k)
        .map((group) => ({ key: group.key, score: group.score, members: group.members.map(toCandidate) }));
      timings.fuse += performance.now() - mark;
      timings.total = performance.now() - started;
      return { groups, timings };
    },
  };
}

/**
 * A later page's candidates, best first, marked with their page and with their final scores scaled so that the best
 * of them equals `floor` (the last candidate found before them) and their order is kept: the pool stays in order of
 * `final`, as MMR takes it, and they come after every earlier candidate before diversity (MMR may still choose one
 * that is less alike the rest over an earlier one). Their other signals are measured within their page.
 */
function onLaterPage(entries: readonly ScoredEntry[], floor: number, page: number): ScoredEntry[] {
  const top = entries[0]?.final ?? 0;
  const factor = top > 0 ? Math.min(1, floor / top) : 0;
  return entries.map((candidate) => ({ ...candidate, final: candidate.final * factor, page }));
}

/**
 * Both `filter` and `condition`, nested no deeper than the deeper of them where that can be (a request's filter may
 * already nest as deep as `validateFilter` allows, and wrapping it in one more `$and` would pass that): the
 * condition's fields join the filter's own when none of them is there already, else the filter's top-level `$and`.
 */
function joined(filter: MetadataFilter | undefined, condition: MetadataFilter): MetadataFilter {
  if (filter === undefined) return condition;
  const record = filter as Record<string, unknown>;
  if (Object.keys(condition).every((key) => record[key] === undefined)) return { ...filter, ...condition };
  return { ...filter, $and: [...(filter.$and ?? []), condition] };
}

/** The first (best) candidate of each `metadata.sourceId`, in order. */
function bestPerSource(scored: readonly ScoredEntry[]): ScoredEntry[] {
  const seen = new Set<string>();
  const kept: ScoredEntry[] = [];
  for (const candidate of scored) {
    if (seen.has(candidate.metadata.sourceId)) continue;
    seen.add(candidate.metadata.sourceId);
    kept.push(candidate);
  }
  return kept;
}

/** A group of candidates with its evidence (`evidence`: its score over the best group's, set by the scoring). */
interface CandidateGroup {
  key: string;
  score: number;
  members: ScoredEntry[];
  evidence: number;
}

/** Groups of candidates by the grouping field, with their evidence, best first. */
function rankGroups(
  scored: readonly ScoredEntry[],
  grouping: { field: GroupField; members: number },
): CandidateGroup[] {
  return collectGroups(scored, grouping).sort(
    (a, b) => descending(a.score, b.score) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0),
  );
}

/**
 * Groups of candidates by the grouping field, with their evidence, in the order first met. `groupOf`, when given,
 * receives each candidate's group at the candidate's index (undefined for one without the field).
 */
function collectGroups(
  scored: readonly ScoredEntry[],
  grouping: { field: GroupField; members: number },
  groupOf?: Array<CandidateGroup | undefined>,
): CandidateGroup[] {
  const groups = new Map<string, CandidateGroup>();
  // Each group keeps its best members by relevance (not by final score, which may already hold the group boost, so
  // the evidence does not feed on itself), by insertion into a list of at most `members`: one pass, no sort of the
  // whole pool (speed, bench:context).
  const limit = grouping.members;
  for (let index = 0; index < scored.length; index++) {
    const candidate = scored[index]!;
    const key = candidate.metadata[grouping.field];
    if (key === undefined) continue;
    let group = groups.get(key);
    if (!group) {
      group = { key, score: 0, members: [], evidence: 0 };
      groups.set(key, group);
    }
    if (groupOf) groupOf[index] = group;
    insertBounded(group.members, candidate, limit, comesBefore);
  }
  const list = [...groups.values()];
  // Summed best first, as a sorted pass would have added them.
  for (const group of list) for (const member of group.members) group.score += member.relevance;
  return list;
}

function byRelevance(a: ScoredEntry, b: ScoredEntry): number {
  return descending(a.relevance, b.relevance) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

const comesBefore = (a: ScoredEntry, b: ScoredEntry): boolean => byRelevance(a, b) < 0;

interface PoolEntry {
  id: string;
  metadata: VectorMetadata;
  dense: SourceSignal | undefined;
  lexical: SourceSignal | undefined;
  exact: boolean;
  fused: number;
  values: Float32Array | undefined;
  relevance: number | undefined;
  recency: number | undefined;
  importance: number | undefined;
  group: number | undefined;
  proximity: number | undefined;
  final: number | undefined;
  page: number | undefined;
}

/**
 * A pool entry with every field present from the start: the stages fill them in later, and an object whose fields
 * are all declared up front keeps one shape and its fields inline, instead of growing a property store for each
 * candidate of every query.
 */
function newPoolEntry(id: string, metadata: VectorMetadata): PoolEntry {
  return {
    id,
    metadata,
    dense: undefined,
    lexical: undefined,
    exact: false,
    fused: 0,
    values: undefined,
    relevance: undefined,
    recency: undefined,
    importance: undefined,
    group: undefined,
    proximity: undefined,
    final: undefined,
    page: undefined,
  };
}

type ScoredEntry = PoolEntry & { relevance: number; recency: number; importance: number; final: number };

function fuse(
  pool: PoolEntry[],
  dense: ReadonlyArray<{ score: number }>,
  lexical: ReadonlyArray<{ score: number }>,
  fusion: { method: FusionMethod; rrfK: number; denseWeight: number; lexicalWeight: number },
): void {
  if (fusion.method === 'rrf') {
    for (const candidate of pool) {
      candidate.fused = reciprocalRankFusion(
        [
          { rank: candidate.dense?.rank, weight: fusion.denseWeight },
          { rank: candidate.lexical?.rank, weight: fusion.lexicalWeight },
        ],
        fusion.rrfK,
      );
    }
    return;
  }
  const denseRange = scoreRange(dense);
  const lexicalRange = scoreRange(lexical);
  for (const candidate of pool) {
    candidate.fused =
      fusion.denseWeight * normaliseScore(candidate.dense?.score, denseRange) +
      fusion.lexicalWeight * normaliseScore(candidate.lexical?.score, lexicalRange);
  }
}

/**
 * Adds term-proximity evidence to the fused scores of the `candidates` best candidates (see
 * `HybridRetrieverOptions.proximity`). The boost is scaled by the best fused score so its weight means the same
 * whatever the fusion method's scale.
 */
function addProximityEvidence(
  pool: PoolEntry[],
  query: string,
  proximity: { weight: number; candidates: number; window: number; characters: number },
  stems: Map<string, string>,
): void {
  const terms = analyze(query);
  if (new Set(terms).size < 2 || pool.length === 0) return;
  // The best `candidates` (a higher fused score, then a smaller id) by a bounded heap: the pool usually holds a few
  // hundred entries of which a few are wanted, so a full sort cost more than the scoring; and at a large k (up to
  // 30,000 wanted of up to 20,000) an insertion pass shifted its list for every entry.
  const heap = new TopKHeap<PoolEntry>(proximity.candidates);
  for (const candidate of pool) {
    if (candidate.metadata.text.length > 0) heap.offer(candidate.fused, candidate.id, candidate);
  }
  const best = heap.takeSorted().map(({ item }) => item);
  const top = best[0]?.fused ?? 0;
  if (top <= 0) return;
  const scores = proximityScores(
    terms,
    best.map((candidate) => candidate.metadata.text.slice(0, proximity.characters)),
    proximity.window,
    stems,
  );
  best.forEach((candidate, index) => {
    const score = scores[index] ?? 0;
    candidate.proximity = score;
    candidate.fused += proximity.weight * top * score;
  });
}

/** The ids of a quick fusion of the two rankings, best first, to seed feedback. */
function firstFusion(
  dense: ReadonlyArray<{ id: string; score: number; metadata: VectorMetadata }>,
  lexical: ReadonlyArray<{ id: string; score: number; metadata: VectorMetadata }>,
  fusion: { method: FusionMethod; rrfK: number; denseWeight: number; lexicalWeight: number },
): string[] {
  const pool = new Map<string, PoolEntry>();
  const entry = (id: string, metadata: VectorMetadata): PoolEntry => {
    let found = pool.get(id);
    if (!found) {
      found = newPoolEntry(id, metadata);
      pool.set(id, found);
    }
    return found;
  };
  dense.forEach((match, index) => {
    entry(match.id, match.metadata).dense = { rank: index + 1, score: match.score };
  });
  lexical.forEach((match, index) => {
    entry(match.id, match.metadata).lexical = { rank: index + 1, score: match.score };
  });
  const entries = [...pool.values()];
  fuse(entries, dense, lexical, fusion);
  return entries
    .sort((a, b) => descending(a.fused, b.fused) || (a.id < b.id ? -1 : 1))
    .map((candidate) => candidate.id);
}

/**
 * The query text expanded with the best terms of the top lexical hits (RM3-style relevance model): each of the
 * `documents` best hits gives every term its share of the hit's words times the hit's share of the hits' scores;
 * the sum is multiplied by the term's rarity among all hits (`ln(1 + hits / hits containing it)`), so words every
 * hit shares (speaker names, the query's own topic word) do not crowd out the informative ones. Terms already in
 * the query are skipped. Returns undefined when nothing is to be added, and when the expanded text would be longer
 * than a keyword index takes (`LIMITS.sceneText`): the query alone passed the first search, and a query that long
 * is searched once, as it is, rather than refused for the copies feedback made of it.
 */
function expandQuery(
  query: string,
  hits: ReadonlyArray<{ score: number; metadata: VectorMetadata }>,
  feedback: { documents: number; terms: number; queryWeight: number },
): string | undefined {
  const queryTerms = new Set(analyze(query));
  if (queryTerms.size === 0) return undefined;
  const documentFrequency = new Map<string, number>();
  const analysed = hits.map((hit) => {
    const counts = new Map<string, { count: number; word: string }>();
    let length = 0;
    for (const word of tokenizeWords(hit.metadata.text)) {
      if (STOP_WORDS.has(word)) continue;
      const term = stem(word);
      length++;
      const found = counts.get(term);
      if (found) found.count++;
      else counts.set(term, { count: 1, word });
    }
    for (const term of counts.keys()) documentFrequency.set(term, (documentFrequency.get(term) ?? 0) + 1);
    return { counts, length, score: hit.score };
  });
  const top = analysed.slice(0, feedback.documents);
  let scoreSum = 0;
  for (const hit of top) scoreSum += hit.score;
  if (scoreSum <= 0) return undefined;
  const weights = new Map<string, { weight: number; word: string }>();
  for (const hit of top) {
    if (hit.length === 0) continue;
    for (const [term, { count, word }] of hit.counts) {
      if (queryTerms.has(term)) continue;
      const add = (count / hit.length) * (hit.score / scoreSum);
      const found = weights.get(term);
      if (found) found.weight += add;
      else weights.set(term, { weight: add, word });
    }
  }
  const chosen = [...weights.entries()]
    .map(([term, { weight, word }]) => ({
      term,
      word,
      weight: weight * Math.log(1 + hits.length / (documentFrequency.get(term) ?? 1)),
    }))
    .sort((a, b) => b.weight - a.weight || (a.term < b.term ? -1 : 1))
    .slice(0, feedback.terms);
  if (chosen.length === 0) return undefined;
  const expanded = [...Array.from({ length: feedback.queryWeight }, () => query), ...chosen.map((item) => item.word)];
  const length = expanded.reduce((sum, part) => sum + part.length, expanded.length - 1);
  return length <= LIMITS.sceneText ? expanded.join(' ') : undefined;
}

/** `q/|q| + weight · mean(d/|d|)`, or undefined when no document vector is known. */
function rocchio(
  query: Float32Array,
  documents: ReadonlyArray<Float32Array | undefined>,
  weight: number,
): Float32Array | undefined {
  const known = documents.filter((values): values is Float32Array => values !== undefined);
  if (known.length === 0) return undefined;
  const out = new Float32Array(query.length);
  const add = (values: Float32Array, scale: number) => {
    let squared = 0;
    for (let i = 0; i < values.length; i++) squared += values[i]! * values[i]!;
    if (squared === 0) return;
    const factor = scale / Math.sqrt(squared);
    for (let i = 0; i < values.length; i++) out[i]! += values[i]! * factor;
  };
  add(query, 1);
  for (const values of known) add(values, weight / known.length);
  let squared = 0;
  for (let i = 0; i < out.length; i++) squared += out[i]! * out[i]!;
  return squared > 0 ? out : undefined;
}

/**
 * Reciprocal-rank fusion of one candidate's ranks: `Σ weight / (k + rank)` over the rankings it appears in (rank
 * 1-based; an absent rank adds nothing).
 *
 * @example
 * ```ts
 * import { reciprocalRankFusion } from 'storyloom';
 * reciprocalRankFusion([{ rank: 1, weight: 1 }, { rank: 3, weight: 1 }], 60); // 1/61 + 1/63
 * ```
 */
export function reciprocalRankFusion(
  ranks: ReadonlyArray<{ rank: number | undefined; weight: number }>,
  k: number,
): number {
  let sum = 0;
  for (const { rank, weight } of ranks) if (rank !== undefined) sum += weight / (k + rank);
  return sum;
}

/** The smallest and largest score of a ranking. */
function scoreRange(matches: ReadonlyArray<{ score: number }>): { min: number; max: number } | undefined {
  if (matches.length === 0) return undefined;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (const { score } of matches) {
    if (score < min) min = score;
    if (score > max) max = score;
  }
  return { min, max };
}

/**
 * Min-max normalisation of one score into [0, 1] against its ranking; a lone (or all-equal) ranking gives 1, an
 * absent score 0. The bottom of a ranking maps to 0, so only its relative standing counts, as in CombSUM over
 * min-max scores (Fox & Shaw; Lee 1997).
 */
function normaliseScore(score: number | undefined, range: { min: number; max: number } | undefined): number {
  if (score === undefined || range === undefined) return 0;
  const span = range.max - range.min;
  return span > 0 ? (score - range.min) / span : 1;
}

function scoreCandidates(
  pool: PoolEntry[],
  scoring: {
    relevance: number;
    recency: number;
    importance: number;
    exact: number;
    sceneDecay: number;
    halfLifeMs: number;
  },
  now: RetrievalQuery['now'],
  grouping?: { field: GroupField; weight: number; members: number },
): ScoredEntry[] {
  let maxFused = 0;
  for (const candidate of pool) if (candidate.fused > maxFused) maxFused = candidate.fused;
  for (const candidate of pool) {
    const relevance = maxFused > 0 ? candidate.fused / maxFused : 0;
    const recency = recencyOf(candidate.metadata, now, scoring);
    const importance = candidate.metadata.importance;
    candidate.relevance = relevance;
    candidate.recency = recency;
    candidate.importance = importance;
    candidate.final =
      scoring.relevance * relevance +
      scoring.recency * recency +
      scoring.importance * importance +
      (candidate.exact ? scoring.exact : 0);
  }
  if (grouping && grouping.weight > 0) {
    // Each candidate's group comes back beside it, and only the best evidence is needed here: no map from key to
    // evidence, no second lookup per candidate, no sort of the groups (speed, bench:context).
    const groupOf: Array<CandidateGroup | undefined> = new Array(pool.length);
    const groups = collectGroups(pool as ScoredEntry[], grouping, groupOf);
    let best = 0;
    for (const group of groups) if (group.score > best) best = group.score;
    if (best > 0) {
      for (const group of groups) group.evidence = group.score / best;
      for (let index = 0; index < pool.length; index++) {
        const candidate = pool[index]!;
        const group = groupOf[index]?.evidence ?? 0;
        candidate.group = group;
        candidate.final = (candidate.final ?? 0) + grouping.weight * group;
      }
    }
  }
  return (pool as ScoredEntry[]).sort(
    (a, b) => descending(a.final, b.final) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}

/**
 * Recency in (0, 1]: exponential decay over scenes when both the candidate and "now" have a scene index, else over
 * time when "now" has a timestamp, else 1 (neutral: no "now", nothing to decay against).
 */
function recencyOf(
  metadata: VectorMetadata,
  now: RetrievalQuery['now'],
  scoring: { sceneDecay: number; halfLifeMs: number },
): number {
  if (now?.sceneIndex !== undefined && metadata.sceneIndex !== undefined) {
    return scoring.sceneDecay ** Math.max(0, now.sceneIndex - metadata.sceneIndex);
  }
  if (now?.timestamp !== undefined) {
    return 0.5 ** (Math.max(0, now.timestamp - metadata.timestamp) / scoring.halfLifeMs);
  }
  return 1;
}

function maximalMarginalRelevance(
  pool: ScoredEntry[],
  k: number,
  lambda: number,
): { chosen: RetrievedCandidate[]; dropped: DroppedCandidate[] } {
  const selection = selectByMmr(pool, k, lambda);
  const chosen = selection.chosen.map(({ index, mmr }) => {
    const candidate = toCandidate(pool[index]!);
    candidate.signals.mmr = mmr;
    return candidate;
  });
  const dropped = selection.dropped.map(({ index, similarTo, similarity }) => ({
    ...toCandidate(pool[index]!),
    reason: 'near-duplicate' as const,
    similarTo,
    similarity,
  }));
  return { chosen, dropped };
}

function toCandidate(entry: ScoredEntry): RetrievedCandidate {
  const signals: RetrievalSignals = {
    exact: entry.exact,
    fused: entry.fused,
    relevance: entry.relevance,
    recency: entry.recency,
    importance: entry.importance,
    final: entry.final,
  };
  if (entry.group !== undefined) signals.group = entry.group;
  if (entry.proximity !== undefined) signals.proximity = entry.proximity;
  if (entry.page !== undefined) signals.page = entry.page;
  if (entry.dense) signals.dense = { ...entry.dense };
  if (entry.lexical) signals.lexical = { ...entry.lexical };
  // The pool holds the indexes' own metadata objects (queried with `sharedMetadata`); what leaves the retriever is a
  // copy, the caller's to keep or change.
  return { id: entry.id, metadata: copyMetadata(entry.metadata), score: entry.final, signals };
}

function exactMetadataFilter(exact: ExactMatches): MetadataFilter | undefined {
  const branches: MetadataFilter[] = [];
  if (exact.characters?.length) branches.push({ characters: { $in: [...exact.characters] } });
  if (exact.locations?.length) branches.push({ locations: { $in: [...exact.locations] } });
  if (exact.themes?.length) branches.push({ themes: { $in: [...exact.themes] } });
  if (branches.length === 0) return undefined;
  return branches.length === 1 ? branches[0] : { $or: branches };
}

function checkRequest(request: RetrievalQuery): void {
  const problem = (path: string, message: string) =>
    new ValidationError(`${path}: ${message}`, { problems: [{ path, message }] });
  if (typeof request !== 'object' || request === null) throw problem('query', 'must be an object');
  if (typeof request.query !== 'string') throw problem('query.query', 'must be a string');
  if (!Number.isInteger(request.k) || request.k < 1 || request.k > 10_000) {
    throw problem('query.k', `must be an integer from 1 to 10000, got ${String(request.k)}`);
  }
  if (request.filter !== undefined) validateFilter(request.filter, 'query.filter');
  if (request.exact !== undefined) checkExactMatches(request.exact, problem);
  if (request.distinct !== undefined && request.distinct !== 'sourceId') {
    throw problem('query.distinct', `must be 'sourceId' when given, got ${String(request.distinct)}`);
  }
  if (request.now !== undefined) {
    if (typeof request.now !== 'object' || request.now === null) throw problem('query.now', 'must be an object');
    for (const field of ['sceneIndex', 'timestamp'] as const) {
      const value = request.now[field];
      // Recency decays with the distance from now: a NaN here made every score NaN and the order arbitrary.
      if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0)) {
        throw problem(`query.now.${field}`, `must be a finite number of 0 or more, got ${String(value)}`);
      }
    }
  }
}

const EXACT_FIELDS = ['ids', 'characters', 'locations', 'themes'] as const;

/**
 * Checks `query.exact`: an object whose fields are lists of non-empty strings. A string where a list belongs was
 * spread into its letters (`'mira'` matched `m`, `i`, `r` and `a`), and anything else was silently ignored. The lists
 * of characters, locations and themes become `$in` filters, which hold at most 1,000 values; ids are fetched, in as
 * many requests as the vector index needs.
 */
function checkExactMatches(exact: unknown, problem: (path: string, message: string) => ValidationError): void {
  if (typeof exact !== 'object' || exact === null || Array.isArray(exact)) {
    throw problem('query.exact', 'must be an object of ids, characters, locations and themes');
  }
  for (const [field, values] of Object.entries(exact)) {
    const at = `query.exact.${field}`;
    if (!(EXACT_FIELDS as readonly string[]).includes(field)) {
      throw problem(at, `unknown field; exact matches are by ${EXACT_FIELDS.join(', ')}`);
    }
    // An absent optional field (`{ ids: options.ids }`) asks for nothing, as in a filter.
    if (values === undefined) continue;
    if (!Array.isArray(values)) throw problem(at, `must be an array of strings, got ${typeof values}`);
    if (field !== 'ids' && values.length > 1_000) throw problem(at, 'must hold at most 1000 values');
    values.forEach((value: unknown, index: number) => {
      if (typeof value !== 'string' || value.length === 0)
        throw problem(`${at}.${index}`, 'must be a non-empty string');
    });
  }
}

/**
 * Whether a query gives retrieval something to search for: a term as the keyword side reads it (stop words,
 * punctuation and symbols are none), or an exact match it asks for. A query without either retrieves nothing: every
 * score would be noise, and normalisation would make the best of it "relevance 1".
 *
 * @example
 * ```ts
 * import { isSearchableQuery } from 'storyloom';
 * isSearchableQuery('Where did Mira hide the key?'); // true
 * isSearchableQuery('and then?'); // false: stop words only
 * isSearchableQuery('and then?', { characters: ['mira'] }); // true
 * ```
 */
export function isSearchableQuery(query: string, exact?: ExactMatches): boolean {
  if (exact && EXACT_FIELDS.some((field) => (exact[field]?.length ?? 0) > 0)) return true;
  return analyze(query).length > 0;
}

/** A unit of text to index (a scene, a dialogue turn, a section) with what surrounds it. */
export interface IndexableUnit {
  /** The unit's own text. */
  text: string;
  /** Short labels that say who and where: speaker or characters present, location, date, chapter title. */
  labels?: readonly string[];
  /** Text just before the unit (the previous turn or scene), nearest last. */
  before?: readonly string[];
  /** Text just after the unit, nearest first. */
  after?: readonly string[];
}

/** How `composeIndexText` builds the indexed text of a unit. */
export interface ComposeIndexTextOptions {
  /**
   * Short units borrow their neighbours' text until the composed text is at least this long (characters);
   * neighbours are taken nearest first, alternating before and after. Units already this long get none, so long
   * scenes and sections are indexed under their own words only. Default 700 (measured with `npm run bench:retrieval`).
   */
  minCharacters?: number;
  /** Most neighbours taken on each side. Default 2. */
  maxNeighbours?: number;
  /** Include the labels. Default true. */
  labels?: boolean;
}

/** The measured defaults of `composeIndexText`. */
export const DEFAULT_COMPOSE_OPTIONS = Object.freeze({ minCharacters: 700, maxNeighbours: 2, labels: true });

/**
 * The text a unit is indexed under in the keyword index: its labels, its own text, and, for a short unit, some of
 * its neighbours. Neighbours matter because a short turn or scene often answers something its neighbour names: "Yes,
 * last week!" only means something next to "Did you visit the archive?". Measured on the development data, borrowing
 * neighbours up to 700 characters lifts LoCoMo turn recall@10 by about 14 points, while adding neighbours to long
 * units (FairytaleQA sections) costs recall, hence the length budget. The vector index embeds the unit without its
 * neighbours (`composeEmbeddingText`).
 *
 * @example
 * ```ts
 * import { composeIndexText } from 'storyloom';
 * composeIndexText({ text: 'Yes, last week!', labels: ['Mira'], before: ['Did you visit the archive?'] });
 * // 'Did you visit the archive?\nMira: Yes, last week!'
 * ```
 */
export function composeIndexText(unit: IndexableUnit, options: ComposeIndexTextOptions = {}): string {
  const minCharacters = options.minCharacters ?? DEFAULT_COMPOSE_OPTIONS.minCharacters;
  const maxNeighbours = options.maxNeighbours ?? DEFAULT_COMPOSE_OPTIONS.maxNeighbours;
  const labels = options.labels === false ? [] : (unit.labels ?? []).filter((label) => label.length > 0);
  const head = labels.length > 0 ? `${labels.join(', ')}: ${unit.text}` : unit.text;
  const before = unit.before ?? [];
  const after = unit.after ?? [];
  const earlier: string[] = [];
  const later: string[] = [];
  let length = head.length;
  for (let distance = 1; distance <= maxNeighbours && length < minCharacters; distance++) {
    const previous = before[before.length - distance];
    if (previous !== undefined && length < minCharacters) {
      earlier.unshift(previous);
      length += previous.length + 1;
    }
    const next = after[distance - 1];
    if (next !== undefined && length < minCharacters) {
      later.push(next);
      length += next.length + 1;
    }
  }
  return [...earlier, head, ...later].filter((part) => part.length > 0).join('\n');
}

/**
 * The text a unit is embedded under in the vector index: its labels and its own text, never its neighbours. The two
 * indexes thus see two fields of one unit, as in BM25F: the lexical side matches the unit in its context, the
 * semantic side the unit alone, and fusion weighs the unit's own words above the words it borrows. Embedding the
 * neighbour-padded text instead made the two sides agree on the same neighbourhood; on the LoCoMo tuning split
 * embedding the unit alone lifted turn recall@10 of the shipped retriever from 0.792 to 0.805 (held-out 0.759 →
 * 0.773), and it changes nothing for units long enough to borrow no neighbours. Only `labels` of the options apply.
 *
 * @example
 * ```ts
 * import { composeEmbeddingText } from 'storyloom';
 * composeEmbeddingText({ text: 'Yes, last week!', labels: ['Mira'], before: ['Did you visit the archive?'] });
 * // 'Mira: Yes, last week!'
 * ```
 */
export function composeEmbeddingText(unit: IndexableUnit, options: ComposeIndexTextOptions = {}): string {
  return composeIndexText(unit, { ...options, minCharacters: 0 });
}

/**
 * The entities a query names, by whole-word match on any of their names or aliases (folded: case and accents do not
 * matter; "Mira's" names Mira). Feeds `RetrievalQuery.exact` from the story state.
 *
 * @example
 * ```ts
 * import { findNamedEntities } from 'storyloom';
 * findNamedEntities('Where did Mira hide the key?', [
 *   { id: 'mira', names: ['Mira', 'the Archivist'] },
 *   { id: 'tomas', names: ['Tomas'] },
 * ]); // ['mira']
 * ```
 */
export function findNamedEntities(
  query: string,
  entities: ReadonlyArray<{ id: string; names: readonly string[] }>,
): string[] {
  const words = ` ${tokenizeWords(query).join(' ')} `;
  let folded: string | undefined;
  const found: string[] = [];
  for (const entity of entities) {
    for (const name of entity.names) {
      const { phrase, literal } = phraseOf(name);
      if (phrase.length === 0 || !words.includes(` ${phrase} `)) {
        // A one-character name in a script written without spaces ("明") is not one of the query's character pairs.
        if (!(literal !== undefined && phrase === literal && SPACELESS_SCRIPT.test(phrase))) continue;
        folded ??= foldText(query);
        if (!folded.includes(literal)) continue;
      } else if (literal !== undefined) {
        // Its symbols tell it apart ("C++" is not "C"): they must be in the query too.
        folded ??= foldText(query);
        if (!folded.includes(literal)) continue;
      }
      found.push(entity.id);
      break;
    }
  }
  return found;
}

/**
 * A name's words as `findNamedEntities` matches them, remembered: every call matches the query against every
 * character, thread and known location (up to 2,000) of the story, whose names rarely change. `literal` is the
 * folded name itself where its words alone would not tell it apart: a name with symbols the words leave out ("C++",
 * "AT&T"), and a one-character name in a script written without spaces.
 */
function phraseOf(name: string): { phrase: string; literal: string | undefined } {
  let entry = PHRASES.get(name);
  if (entry === undefined) {
    const phrase = tokenizeWords(name).join(' ');
    const foldedName = foldText(name).trim();
    const literal =
      SYMBOLS.test(foldedName) || (phrase.length > 0 && !phrase.includes(' ') && [...phrase].length === 1)
        ? foldedName
        : undefined;
    entry = { phrase, literal };
    if (PHRASES.size >= 20_000) PHRASES.clear();
    PHRASES.set(name, entry);
  }
  return entry;
}
const PHRASES = new Map<string, { phrase: string; literal: string | undefined }>();
/** Characters a name may hold that its words leave out and that tell it apart: not spaces, apostrophes, dots, hyphens. */
const SYMBOLS = /[^\p{L}\p{N}\p{M}\s'\u2019\u02BC.\-\u2010\u2011,]/u;

/** Bytes one vector value may take in a JSON response (a float with its sign, digits and exponent, and a comma). */
const VALUE_JSON_BYTES = 24;
/** Bytes a match takes besides its metadata and values: its id, score and the JSON around them. */
const MATCH_OVERHEAD_BYTES = 512;

/**
 * How many records one query response surely holds where the index caps its size (`maxQueryResultBytes`) and the
 * metadata a record may carry (`maxMetadataBytes`): Pinecone answers a response past 4 MB with an error, and a
 * record may carry 40 KB. `withValues`: the dimensions of the values each match carries, if it does. Without both
 * caps, no bound.
 *
 * @example
 * ```ts
 * recordsPerResponse({ maxQueryResultBytes: 4 * 1024 * 1024, maxMetadataBytes: 40_960 }); // 101
 * ```
 */
export function recordsPerResponse(
  capabilities: Pick<VectorIndexCapabilities, 'maxQueryResultBytes' | 'maxMetadataBytes'>,
  withValues = 0,
): number {
  const { maxQueryResultBytes, maxMetadataBytes } = capabilities;
  if (maxQueryResultBytes === undefined || maxMetadataBytes === undefined) return Number.POSITIVE_INFINITY;
  const matchBytes = maxMetadataBytes + VALUE_JSON_BYTES * withValues + MATCH_OVERHEAD_BYTES;
  return Math.max(1, Math.floor(maxQueryResultBytes / matchBytes));
}
