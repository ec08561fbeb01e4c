/**
 * Retrieval-quality benchmark: recall@k of dense-only, BM25-only, fused, fused + group evidence, fused + scoring
 * (as shipped) and group ranking (`retrieveGroups`) on LoCoMo (turns and sessions as units; sessions also ranked as
 * groups of their turns) and FairytaleQA (sections), through the real memory `VectorIndex` and `KeywordIndex`
 * adapters, the hashing embedder and the hybrid retriever. Measurements and what they led to: `docs/retrieval.md`.
 *
 *   npm run bench:retrieval -- --file ../shared/bench-data/locomo/locomo-dev.json --format locomo --json
 *   npm run bench:retrieval -- --file ../shared/bench-data/fairytaleqa/data-by-train-split --format fairytaleqa
 *
 * Tuning split: `--select 0-2` (LoCoMo) and FairytaleQA `train`; held-out: `--select 3-4` and `val`.
 *
 * Options: `--k 5,10` (every unit), `--select 0,1,2` (LoCoMo conversations by position), `--methods bm25,fused`,
 * `--out` (also write
 * `bench/results/retrieval-<dataset>.json`), `--retriever '<json>'` and `--compose '<json>'` (override the retriever
 * and index-text options), `--dimensions N`.
 *
 * Benchmark data has no notion of story time or importance: every unit gets importance 0.5 and no "now" is given,
 * so recency is neutral (1 for all). "fused+scoring" therefore measures the scoring stage and MMR as shipped, with
 * those two signals constant.
 *
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Embedder, embedInBatches } from '../src/context/embedder.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import type { KeywordIndex } from '../src/context/keyword-index.js';
import { createMemoryKeywordIndex, type MemoryKeywordIndexOptions } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import {
  type ComposeIndexTextOptions,
  composeEmbeddingText,
  composeIndexText,
  createHybridRetriever,
  DEFAULT_COMPOSE_OPTIONS,
  type HybridRetrieverOptions,
} from '../src/context/retrieval.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { loadFairytaleQa } from './datasets/fairytaleqa.js';
import { loadLocomo, readLocomo } from './datasets/locomo.js';
import type { BenchCorpus, BenchDataset, BenchUnit } from './datasets/types.js';
import { embedderFromSpec, withEmbeddingCache } from './embedders.js';
import { LANGCHAIN_METHODS, type LangChainMethod, langChainRetrievers } from './peers/langchain.js';

/**
 * The methods compared. `fused`: dense + BM25 fusion only. `fused+groups`: plus the group-evidence boost (units
 * that name a group only). `fused+scoring`: the retriever as shipped (scoring, grouping, MMR). `groups`: the
 * dataset's units ranked as groups of its finer member units with `retrieveGroups` (LoCoMo sessions from turns).
 */
export const METHODS = ['dense', 'bm25', 'fused', 'fused+groups', 'fused+scoring', 'groups'] as const;
export type Method = (typeof METHODS)[number];

/** One row of the results. */
export interface RecallResult {
  method: string;
  unit: BenchDataset['unit'];
  k: number;
  recall: number;
  byCategory: Record<string, number>;
  questions: number;
}

/** What a benchmark run is configured with. */
export interface BenchConfig {
  ks: readonly number[];
  methods?: readonly Method[];
  embedder?: Embedder;
  retriever?: HybridRetrieverOptions;
  compose?: ComposeIndexTextOptions;
  /** BM25 constants of the memory keyword index. */
  bm25?: MemoryKeywordIndexOptions;
  /**
   * Also measure the peers' retrievers on the same units, embedder and questions: `true` for all of
   * `LANGCHAIN_METHODS`, or those named.
   */
  peers?: boolean | readonly LangChainMethod[];
}

/** Retriever options for the plain "fused" method: fusion only, no recency, importance, exact boost or MMR. */
function fusedOnly(options: HybridRetrieverOptions = {}, grouped = false): HybridRetrieverOptions {
  return {
    ...options,
    scoring: { ...options.scoring, relevance: 1, recency: 0, importance: 0, exact: 0 },
    grouping: grouped ? { ...options.grouping } : { ...options.grouping, weight: 0 },
    mmr: { ...options.mmr, lambda: 1 },
  };
}

/** Indexes one corpus's units, composed as `unit` units, into fresh memory indexes (as the context manager does). */
export async function indexCorpus(
  corpus: BenchCorpus,
  unit: BenchDataset['unit'],
  embedder: Embedder,
  config: BenchConfig,
): Promise<{ vectors: VectorIndex; keywords: KeywordIndex }> {
  const vectors = createMemoryVectorIndex({ dimensions: embedder.dimensions, initialCapacity: corpus.units.length });
  const keywords = createMemoryKeywordIndex(config.bm25);
  const compose = config.compose ?? COMPOSE_BY_UNIT[unit];
  const texts = corpus.units.map((item) => composeIndexText(item, compose));
  // As the context manager does: the keyword index holds the neighbour-padded text, the vector index the unit alone.
  const values = await embedInBatches(
    embedder,
    corpus.units.map((item) => composeEmbeddingText(item, compose)),
    { inputType: 'document' },
  );
  const metadata = (item: BenchUnit, index: number) => ({
    storyId: corpus.id,
    type: 'scene' as const,
    timestamp: 0,
    sourceId: item.id,
    sceneIndex: index,
    importance: 0.5,
    text: texts[index]!.slice(0, 2_000),
    ...(item.group ? { chapterId: item.group } : {}),
  });
  await vectors.upsert(
    corpus.id,
    corpus.units.map((item, index) => ({ id: item.id, values: values[index]!, metadata: metadata(item, index) })),
  );
  await keywords.upsert(
    corpus.id,
    corpus.units.map((item, index) => ({ id: item.id, text: texts[index]!, metadata: metadata(item, index) })),
  );
  return { vectors, keywords };
}

/** Share of a question's gold ids found among the retrieved ids. */
export function recallOf(gold: readonly string[], retrieved: readonly string[]): number {
  if (gold.length === 0) return 0;
  const found = new Set(retrieved);
  let hits = 0;
  for (const id of gold) if (found.has(id)) hits++;
  return hits / gold.length;
}

/**
 * Runs every method at every k over one dataset; recall is the mean over questions of each question's recall. The
 * questions of a corpus with no units (a LoCoMo conversation without sessions) are misses for every method that
 * measures the dataset: nothing can be found there, and dropping them would raise recall.
 */
export async function runRetrievalBenchmark(dataset: BenchDataset, config: BenchConfig): Promise<RecallResult[]> {
  const embedder = config.embedder ?? createHashingEmbedder();
  const wanted =
    (config.compose ?? COMPOSE_BY_UNIT[dataset.unit]).maxNeighbours ?? DEFAULT_COMPOSE_OPTIONS.maxNeighbours;
  if (dataset.neighbours !== undefined && wanted > dataset.neighbours) {
    throw new Error(
      `compose.maxNeighbours ${wanted} reads more neighbours than the ${dataset.unit} units were loaded with (${dataset.neighbours}): load them with loadDatasets(file, format, select, compose)`,
    );
  }
  const methods = config.methods ?? METHODS;
  const unknown = methods.filter((method) => !(METHODS as readonly string[]).includes(method));
  if (unknown.length > 0) throw new Error(`Unknown method ${unknown.join(', ')}: methods are ${METHODS.join(', ')}`);
  const peerMethods = config.peers === true ? LANGCHAIN_METHODS : config.peers || [];
  const ks = [...new Set(config.ks)].sort((a, b) => a - b);
  const maxK = ks[ks.length - 1] ?? 10;
  // sums[method][k] → { total, count, categories }
  const sums = new Map<string, { total: number; count: number; categories: Map<string, [number, number]> }>();
  const add = (method: string, k: number, category: string, recall: number) => {
    const key = `${method}\u0000${k}`;
    let sum = sums.get(key);
    if (!sum) {
      sum = { total: 0, count: 0, categories: new Map() };
      sums.set(key, sum);
    }
    sum.total += recall;
    sum.count++;
    const byCategory = sum.categories.get(category) ?? [0, 0];
    byCategory[0] += recall;
    byCategory[1]++;
    sum.categories.set(category, byCategory);
  };

  const byCorpus = new Map<string, BenchDataset['questions']>();
  for (const question of dataset.questions) {
    const list = byCorpus.get(question.corpusId) ?? [];
    list.push(question);
    byCorpus.set(question.corpusId, list);
  }

  // Whether the dataset has rows for these two methods at all: an empty corpus's misses go only into rows that exist.
  const datasetGrouped = dataset.corpora.some((corpus) => corpus.units.some((item) => item.group !== undefined));
  const datasetMembers = dataset.members !== undefined && dataset.members.length > 0;

  for (const corpus of dataset.corpora) {
    const questions = byCorpus.get(corpus.id);
    if (!questions || questions.length === 0) continue;
    if (corpus.units.length === 0) {
      for (const question of questions) {
        for (const method of [...methods, ...peerMethods]) {
          if (method === 'fused+groups' && !datasetGrouped) continue;
          if (method === 'groups' && !datasetMembers) continue;
          for (const k of ks) add(method, k, question.category, 0);
        }
      }
      continue;
    }
    const { vectors, keywords } = await indexCorpus(corpus, dataset.unit, embedder, config);
    const fused = createHybridRetriever({ vectors, keywords, embedder, options: fusedOnly(config.retriever) });
    const grouped = createHybridRetriever({ vectors, keywords, embedder, options: fusedOnly(config.retriever, true) });
    const scored = createHybridRetriever({ vectors, keywords, embedder, options: config.retriever });
    const grouping = corpus.units.some((item) => item.group !== undefined);
    const memberCorpus = methods.includes('groups')
      ? dataset.members?.find((candidate) => candidate.id === corpus.id)
      : undefined;
    const members = memberCorpus ? await indexCorpus(memberCorpus, 'turn', embedder, config) : undefined;
    const ofMembers = members
      ? createHybridRetriever({ ...members, embedder, options: fusedOnly(config.retriever, true) })
      : undefined;

    const peers =
      peerMethods.length > 0
        ? await langChainRetrievers(
            corpus,
            corpus.units.map((item) => composeEmbeddingText(item, config.compose ?? COMPOSE_BY_UNIT[dataset.unit])),
            embedder,
            maxK,
          )
        : undefined;

    for (const question of questions) {
      if (peers) {
        for (const method of peerMethods) {
          const ids = await peers.search(method, question.question);
          for (const k of ks) add(method, k, question.category, recallOf(question.gold, ids.slice(0, k)));
        }
      }
      const needsVector = methods.includes('dense');
      const [queryVector] = needsVector ? await embedder.embed([question.question], { inputType: 'query' }) : [];
      for (const method of methods) {
        if (method === 'fused+groups' && !grouping) continue;
        if (method === 'groups') {
          if (!ofMembers) continue;
          const { groups } = await ofMembers.retrieveGroups(corpus.id, { query: question.question, k: maxK });
          const ids = groups.map((group) => group.key);
          for (const k of ks) add(method, k, question.category, recallOf(question.gold, ids.slice(0, k)));
        } else if (method !== 'fused+scoring') {
          let ids: string[];
          if (method === 'dense') {
            ids = (await vectors.query(corpus.id, { vector: queryVector!, topK: maxK })).map((match) => match.id);
          } else if (method === 'bm25') {
            ids = (await keywords.query(corpus.id, { text: question.question, topK: maxK })).map((match) => match.id);
          } else {
            const retriever = method === 'fused' ? fused : grouped;
            ids = (await retriever.retrieve(corpus.id, { query: question.question, k: maxK })).candidates.map(
              (c) => c.id,
            );
          }
          for (const k of ks) add(method, k, question.category, recallOf(question.gold, ids.slice(0, k)));
        } else {
          // MMR's choice depends on k, so each k is its own retrieval.
          for (const k of ks) {
            const result = await scored.retrieve(corpus.id, { query: question.question, k });
            add(
              method,
              k,
              question.category,
              recallOf(
                question.gold,
                result.candidates.map((c) => c.id),
              ),
            );
          }
        }
      }
    }
    if (members) {
      await members.vectors.close();
      await members.keywords.close();
    }
    await vectors.close();
    await keywords.close();
  }

  const results: RecallResult[] = [];
  for (const method of [...methods, ...peerMethods]) {
    for (const k of ks) {
      const sum = sums.get(`${method}\u0000${k}`);
      if (!sum) continue;
      const byCategory: Record<string, number> = {};
      for (const [category, [total, count]] of [...sum.categories].sort(([a], [b]) => (a < b ? -1 : 1))) {
        byCategory[category] = round(total / count);
      }
      results.push({
        method,
        unit: dataset.unit,
        k,
        recall: round(sum.total / sum.count),
        byCategory,
        questions: sum.count,
      });
    }
  }
  return results;
}

function round(value: number): number {
  return Math.round(value * 10_000) / 10_000;
}

/** Default k per unit: the bars of the project (turn@10, session@5, section@1) plus one neighbour. */
const DEFAULT_KS: Record<BenchDataset['unit'], number[]> = { turn: [10], session: [5], section: [1] };

/**
 * Index-text options per unit kind. Dialogue turns are fragments and borrow their neighbours (the library default);
 * story sections are self-contained and are indexed alone: on the FairytaleQA train split, borrowing neighbours for
 * short sections cost 7 points of recall@1.
 */
export const COMPOSE_BY_UNIT: Record<BenchDataset['unit'], ComposeIndexTextOptions> = {
  turn: {},
  session: {},
  section: { minCharacters: 0 },
};

/**
 * Loads the datasets a `--file` / `--format` pair names, their units carrying as many neighbours as `compose` (the
 * index-text options the benchmark will run with, `COMPOSE_BY_UNIT` when not given) reads.
 */
export function loadDatasets(
  file: string,
  format: string,
  select?: number[],
  compose?: ComposeIndexTextOptions,
): BenchDataset[] {
  if (format === 'locomo') {
    const neighbours = (compose ?? COMPOSE_BY_UNIT.turn).maxNeighbours ?? DEFAULT_COMPOSE_OPTIONS.maxNeighbours;
    const { turns, sessions } = loadLocomo(readLocomo(file, select), { neighbours });
    return [turns, sessions];
  }
  if (format === 'fairytaleqa') return [loadFairytaleQa(file)];
  throw new Error(`--format must be locomo or fairytaleqa, got ${JSON.stringify(format)}`);
}

/**
 * The numbers an `option` names (`5,10`, `0-2`), in order, each once; undefined when the option is not given. An
 * entry that is not a number or an ascending range, or a list that names nothing, is an error naming the option:
 * it would otherwise measure nothing, or something other than what was asked for.
 */
/**
 * A list of numbers and ranges (`5,10`, `0-2`). A range reaching past `limit` is refused before it is spelled out,
 * so `--k 1-999999999999` is one line of error rather than an exhausted heap.
 */
function parseList(option: string, raw: string | undefined, limit: number): number[] | undefined {
  if (raw === undefined) return undefined;
  const list: number[] = [];
  for (const part of raw.split(',').map((entry) => entry.trim())) {
    const range = /^(\d+)-(\d+)$/.exec(part);
    if (range) {
      const [from, to] = [Number(range[1]), Number(range[2])];
      if (from > to) throw new Error(`${option}: the range ${part} runs backwards (write ${to}-${from})`);
      if (to > limit) throw new Error(`${option}: the range ${part} reaches past ${limit}`);
      for (let n = from; n <= to; n++) list.push(n);
    } else if (/^\d+$/.test(part)) list.push(Number(part));
    else throw new Error(`${option} takes numbers and ranges like 5,10 or 0-2, got ${JSON.stringify(part)}`);
  }
  return [...new Set(list)];
}

/** The largest k the retriever and the indexes answer (`retrieve()`'s `k`, the indexes' `topK`). */
const MAX_K = 10_000;
/** The largest conversation or story number `--select` takes. */
const MAX_SELECT = 1_000_000;

/** `--k`: every k a whole number from 1 to `MAX_K`, which the retriever would otherwise refuse in its own words. */
function parseKs(raw: string | undefined): number[] | undefined {
  const ks = parseList('--k', raw, MAX_K);
  const bad = ks?.filter((k) => !Number.isInteger(k) || k < 1 || k > MAX_K) ?? [];
  if (bad.length > 0) throw new Error(`--k must be whole numbers from 1 to ${MAX_K}, got ${bad.join(',')}`);
  return ks;
}

/**
 * `--methods`: the benchmark's own methods, to which `--peers` adds the LangChain ones. Naming LangChain methods
 * keeps only those peer rows; naming none keeps them all. An unknown name is an error listing the valid ones.
 */
function parseMethods(
  raw: string | undefined,
  peers: boolean,
): { methods?: Method[]; peers?: true | LangChainMethod[] } {
  const allPeers = peers ? { peers: true as const } : {};
  if (raw === undefined) return allPeers;
  const valid: readonly string[] = [...METHODS, ...(peers ? LANGCHAIN_METHODS : [])];
  const names = [...new Set(raw.split(',').map((name) => name.trim()))];
  const unknown = names.filter((name) => !valid.includes(name));
  if (unknown.length > 0) {
    const hint = peers ? '' : ` (with --peers also ${LANGCHAIN_METHODS.join(', ')})`;
    throw new Error(
      `--methods: unknown ${unknown.map((name) => JSON.stringify(name)).join(', ')}; valid: ${valid.join(', ')}${hint}`,
    );
  }
  const methods = names.filter((name): name is Method => (METHODS as readonly string[]).includes(name));
  const peerMethods = names.filter((name): name is LangChainMethod =>
    (LANGCHAIN_METHODS as readonly string[]).includes(name),
  );
  return { methods, ...(peerMethods.length > 0 ? { peers: peerMethods } : allPeers) };
}

function markdown(dataset: string, results: RecallResult[]): string {
  const categories = [...new Set(results.flatMap((row) => Object.keys(row.byCategory)))].sort();
  const header = `| method | unit | k | recall | ${categories.map((c) => `cat ${c}`).join(' | ')} |`;
  const rule = `|${' --- |'.repeat(4 + categories.length)}`;
  const rows = results.map(
    (row) =>
      `| ${row.method} | ${row.unit} | ${row.k} | ${row.recall.toFixed(4)} | ${categories
        .map((c) => (row.byCategory[c] === undefined ? '' : row.byCategory[c]!.toFixed(3)))
        .join(' | ')} |`,
  );
  return [`### ${dataset}`, '', header, rule, ...rows].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      file: { type: 'string' },
      format: { type: 'string' },
      json: { type: 'boolean', default: false },
      k: { type: 'string' },
      select: { type: 'string' },
      out: { type: 'boolean', default: false },
      retriever: { type: 'string' },
      compose: { type: 'string' },
      dimensions: { type: 'string' },
      methods: { type: 'string' },
      embedder: { type: 'string', default: 'hashing' },
      'embedding-cache': { type: 'string' },
      peers: { type: 'boolean', default: false },
    },
  });
  if (!values.file || !values.format) {
    throw new Error(
      'Usage: bench:retrieval -- --file PATH --format locomo|fairytaleqa [--json] [--k 5,10] [--out] [--embedder hashing|bedrock:<model>] [--embedding-cache FILE] [--peers]',
    );
  }
  const ks = parseKs(values.k);
  const select = parseList('--select', values.select, MAX_SELECT);
  const chosen = parseMethods(values.methods, values.peers);
  const base = embedderFromSpec(values.embedder, values.dimensions ? { dimensions: Number(values.dimensions) } : {});
  // A model is paid per text: every text is embedded once (in memory, or across runs in the --embedding-cache file).
  const cache =
    values['embedding-cache'] !== undefined || values.embedder !== 'hashing'
      ? withEmbeddingCache(base, values['embedding-cache'] ?? ':memory:')
      : undefined;
  const embedder = cache ?? base;
  const retriever = values.retriever ? (JSON.parse(values.retriever) as HybridRetrieverOptions) : undefined;
  const compose = values.compose ? (JSON.parse(values.compose) as ComposeIndexTextOptions) : undefined;
  const datasets = loadDatasets(values.file, values.format, select, compose);
  // What was left out is said on stderr: stdout holds the results alone.
  for (const note of new Set(datasets.flatMap((dataset) => dataset.notes ?? []))) console.error(note);
  const results: RecallResult[] = [];
  for (const dataset of datasets) {
    const config: BenchConfig = { ks: ks ?? DEFAULT_KS[dataset.unit], embedder };
    if (retriever) config.retriever = retriever;
    if (compose) config.compose = compose;
    if (chosen.methods) config.methods = chosen.methods;
    if (chosen.peers) config.peers = chosen.peers;
    results.push(...(await runRetrievalBenchmark(dataset, config)));
  }
  cache?.close();
  const name = datasets[0]?.dataset ?? values.format;
  const report = { dataset: name, embedder: embedder.modelId, results };
  if (values.out) {
    const folder = join(dirname(fileURLToPath(import.meta.url)), 'results');
    mkdirSync(folder, { recursive: true });
    // The hashing embedder's results are the committed ones; another model's go beside them, named for it.
    const suffix = values.embedder === 'hashing' ? '' : `-${embedder.modelId.replace(/[^A-Za-z0-9.-]+/g, '_')}`;
    writeFileSync(join(folder, `retrieval-${name}${suffix}.json`), `${JSON.stringify(report, null, 2)}\n`);
  }
  console.log(values.json ? JSON.stringify(report) : markdown(name, results));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}
