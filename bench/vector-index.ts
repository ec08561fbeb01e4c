/**
 * Insert and top-10 query timings of the memory and SQLite vector indexes at 10,000 vectors of 1536 dimensions (the
 * reference deployment's embedding size). Run with `npm run bench:vector-index`; writes
 * `bench/results/vector-index.json` and prints a markdown table. Not part of `npm test`.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createSqliteVectorIndex } from '../src/context/sqlite-vector-index.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { seededRandom } from '../src/core/seeded-random.js';
import type { VectorRecordInput } from '../src/state/schema.js';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 10_000);
const DIMENSIONS = 1536;
const QUERIES = Number(process.env.BENCH_QUERIES ?? 200);
const BATCH = 500;
const STORY = 'bench';

const random = seededRandom(1536);
const vector = () => {
  const values = new Float32Array(DIMENSIONS);
  for (let i = 0; i < DIMENSIONS; i++) values[i] = random() * 2 - 1;
  return values;
};
const CHARACTERS = ['mira', 'oren', 'kell', 'sela', 'tobin'];
const records: VectorRecordInput[] = Array.from({ length: RECORDS }, (_, i) => ({
  id: `r${String(i).padStart(5, '0')}`,
  values: vector(),
  metadata: {
    storyId: STORY,
    type: i % 4 === 0 ? 'character' : 'scene',
    timestamp: i,
    sourceId: `r${i}`,
    characters: [CHARACTERS[i % 5]!, CHARACTERS[(i * 3) % 5]!],
    importance: (i % 10) / 10,
  },
}));
const queries = Array.from({ length: QUERIES }, vector);
// About one record in ten passes: scenes with mira, of importance 0.5 or more.
const FILTER = { type: 'scene', characters: 'mira', importance: { $gte: 0.5 } } as const;

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;

async function measure(name: string, index: VectorIndex) {
  const insertStart = performance.now();
  for (let i = 0; i < records.length; i += BATCH) await index.upsert(STORY, records.slice(i, i + BATCH));
  const insertMs = performance.now() - insertStart;
  const time = async (filter?: typeof FILTER) => {
    const durations: number[] = [];
    for (const query of queries) {
      const start = performance.now();
      await index.query(STORY, filter ? { vector: query, topK: 10, filter } : { vector: query, topK: 10 });
      durations.push(performance.now() - start);
    }
    durations.sort((a, b) => a - b);
    return { p50: percentile(durations, 0.5), p99: percentile(durations, 0.99) };
  };
  const unfiltered = await time();
  const filtered = await time(FILTER);
  await index.close();
  return {
    index: name,
    insertMs,
    insertPerSecond: (records.length / insertMs) * 1000,
    query: unfiltered,
    filteredQuery: filtered,
  };
}

const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-bench-'));
try {
  const results = [
    await measure('memory', createMemoryVectorIndex({ dimensions: DIMENSIONS })),
    await measure(
      'sqlite (file, WAL)',
      createSqliteVectorIndex({ path: path.join(folder, 'bench.db'), dimensions: DIMENSIONS }),
    ),
    await measure('sqlite (:memory:)', createSqliteVectorIndex({ path: ':memory:', dimensions: DIMENSIONS })),
  ];
  const output = {
    records: RECORDS,
    dimensions: DIMENSIONS,
    queries: QUERIES,
    topK: 10,
    filter: FILTER,
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    results,
  };
  const resultsFolder = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(resultsFolder, { recursive: true });
  writeFileSync(path.join(resultsFolder, 'vector-index.json'), `${JSON.stringify(output, null, 2)}\n`);
  const f = (ms: number) => ms.toFixed(1);
  console.log(`\n${RECORDS} vectors × ${DIMENSIONS} dimensions, top-10, ${QUERIES} queries\n`);
  console.log('| index | insert (total) | inserts/s | query p50 | query p99 | filtered p50 | filtered p99 |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of results) {
    console.log(
      `| ${r.index} | ${f(r.insertMs)} ms | ${Math.round(r.insertPerSecond)} | ${f(r.query.p50)} ms | ${f(r.query.p99)} ms | ${f(r.filteredQuery.p50)} ms | ${f(r.filteredQuery.p99)} ms |`,
    );
  }
} finally {
  rmSync(folder, { recursive: true, force: true });
}
