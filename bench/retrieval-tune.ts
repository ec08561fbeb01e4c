/**
 * Development-only sweep: runs the retrieval benchmark over a grid of embedder, index-text and retriever settings
 * on the tuning split, printing one line per setting. Not part of the published benchmark; kept so the chosen
 * defaults can be re-derived.
 *
 *   npx tsx bench/retrieval-tune.ts locomo 0-2 '<json list of configs>'
 *
 * @module
 */
import { createHashingEmbedder, type HashingEmbedderOptions } from '../src/context/hashing-embedder.js';
import {
  type ComposeIndexTextOptions,
  DEFAULT_COMPOSE_OPTIONS,
  type HybridRetrieverOptions,
} from '../src/context/retrieval.js';
import { loadDatasets, type Method, runRetrievalBenchmark } from './retrieval.js';

interface TuneConfig {
  name?: string;
  embedder?: HashingEmbedderOptions;
  compose?: ComposeIndexTextOptions;
  retriever?: HybridRetrieverOptions;
  methods?: Method[];
  bm25?: { k1?: number; b?: number };
}

const [format = 'locomo', select = '0-2', raw = '[{}]', file] = process.argv.slice(2);
const path =
  file ??
  (format === 'locomo'
    ? '../shared/bench-data/locomo/locomo-dev.json'
    : '../shared/bench-data/fairytaleqa/data-by-train-split/section-stories/train');
const range = /^(\d+)-(\d+)$/.exec(select);
const indexes = range
  ? Array.from({ length: Number(range[2]) - Number(range[1]) + 1 }, (_, i) => Number(range[1]) + i)
  : undefined;
const configs = JSON.parse(raw) as TuneConfig[];
// Loaded once, with the widest neighbour window any configuration reads (each reads as many as it asks for).
const widest = Math.max(
  DEFAULT_COMPOSE_OPTIONS.maxNeighbours,
  ...configs.map((config) => config.compose?.maxNeighbours ?? 0),
);
const datasets = loadDatasets(path, format, indexes, { maxNeighbours: widest });
for (const config of configs) {
  const embedder = createHashingEmbedder(config.embedder);
  const line: string[] = [];
  for (const dataset of datasets) {
    const ks = dataset.unit === 'turn' ? [10] : dataset.unit === 'session' ? [5] : [1, 3];
    const results = await runRetrievalBenchmark(dataset, {
      ks,
      embedder,
      methods: config.methods ?? ['dense', 'bm25', 'fused', 'fused+groups', 'fused+scoring', 'groups'],
      ...(config.compose ? { compose: config.compose } : {}),
      ...(config.bm25 ? { bm25: config.bm25 } : {}),
      ...(config.retriever ? { retriever: config.retriever } : {}),
    });
    line.push(...results.map((row) => `${row.unit[0]}@${row.k} ${row.method}=${row.recall.toFixed(3)}`));
  }
  console.log(`${config.name ?? JSON.stringify(config)}\n   ${line.join('  ')}`);
}
