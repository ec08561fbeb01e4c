/**
 * Speed of `ContextManager.getRelevantContext` at 1,000, 10,000 and 100,000 indexed scenes (1536-dimension vectors
 * from the hashing embedder), against LangChain.js `MemoryVectorStore.similaritySearchVectorWithScore` and raw
 * sqlite-vec KNN over the same vectors, in the same run. Peak memory per size.
 *
 * Run with `npm run bench:context` (`BENCH_SIZES=1000,10000` to choose sizes, `BENCH_QUERIES=220` queries of the raw
 * searches, `BENCH_CALLS=2200` getRelevantContext calls,
 * `BENCH_SQLITE=0` to skip the SQLite backend, `BENCH_TRIALS=5` to set the trials per size). Each size runs in its own
 * child processes (five trials up to 10,000 scenes, one above), so its peak RSS is its own and each row is the
 * median trial's.
 * Writes `bench/results/context.json` and `bench/results/context.md`. Not part of `npm test`: tests never depend on
 * speed.
 *
 * How a story is built: scenes come from `story-synthesis.ts` (deterministic, ~200 words, one indexed chunk each) and
 * are loaded into the state store with `importStory`. Scene 0 is indexed through the real `ContextManager.indexScene`
 * (which also writes the index fingerprint); the bench checks that its own unit for scene 0 is byte-identical (text,
 * metadata, vector) to what `indexScene` wrote, then writes every other scene as the same units in bulk (batched
 * embedding, bulk upserts), because 100,000 sequential `indexScene` calls would take far longer than the queries.
 * Characters and threads go through `indexCharacter` / `indexPlotThread`, the last chapters through
 * `summarizeChapter`. Every measured query goes through `getRelevantContext`.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { ContextCache } from '../src/context/context-cache.js';
import { type ContextBundle, ContextManager, chunkWords } from '../src/context/context-manager.js';
import { embedInBatches } from '../src/context/embedder.js';
import type { MetadataFilter } from '../src/context/filter.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import type { KeywordIndex } from '../src/context/keyword-index.js';
import { createMemoryCacheDriver } from '../src/context/memory-cache.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { firstSentence } from '../src/context/prompt-layout.js';
import { composeIndexText } from '../src/context/retrieval.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import {
  chapterIdFor,
  LIMITS,
  type Scene,
  type StoryState,
  type VectorMetadataInput,
  VectorMetadataSchema,
} from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import {
  SCENES_PER_CHAPTER,
  synthesizeExport,
  synthesizeQueries,
  synthesizeScene,
  synthesizeState,
} from './story-synthesis.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.join(here, 'results');
const DIMENSIONS = 1536;
const STORY = 'bench-serial';
const SIZES = (process.env.BENCH_SIZES ?? '1000,10000,100000').split(',').map(Number);
const QUERIES = Number(process.env.BENCH_QUERIES ?? 220);
/**
 * Measured getRelevantContext calls per backend, size and trial: ten times the peers' queries. At about a tenth of
 * LangChain's time per call, they then take about as much wall time as LangChain's queries, so both p50s are taken
 * over windows of the same length. On shared cores the machine's speed drifts from second to second (p50s of
 * consecutive 220-call rounds of one process ranged from 2.4 to 4.0 ms at 10,000 scenes): a 0.7 s window set against
 * a 7 s one made the ratio a draw of which second ours happened to run in.
 */
const CALLS = Number(process.env.BENCH_CALLS ?? QUERIES * 10);
const WARMUP = 20;
const K = 5;
/**
 * topK of the raw searches compared side by side (ours, LangChain, sqlite-vec). getRelevantContext itself asks each
 * index for its grouping pool, `max(4k, 40, 20k)` = 100 at k = 5 (retrieval.ts).
 */
const POOL = 60;
/**
 * Each size runs this many times, each in a fresh process; every reported figure is the median trial's (per
 * backend and per peer), so a burst of other load on the machine during one trial does not decide a row. Default 5
 * up to 10,000 scenes (on two shared cores, single trials of the same code ranged from 2.6 to 4.2 ms at 10,000
 * scenes) and 1 above (a 100,000-scene trial takes minutes).
 */
const TRIALS = process.env.BENCH_TRIALS ? Number(process.env.BENCH_TRIALS) : undefined;
if (TRIALS !== undefined && (!Number.isInteger(TRIALS) || TRIALS < 1)) {
  throw new Error(`BENCH_TRIALS must be a positive integer, got ${JSON.stringify(process.env.BENCH_TRIALS)}`);
}
const BATCH = 1_000;

interface Percentiles {
  p50: number;
  p99: number;
  mean: number;
  n: number;
}

interface BackendResult {
  backend: 'memory' | 'sqlite';
  /**
   * SQLite only: the first getRelevantContext of a process that opens the story file afresh (a cold Lambda), which
   * loads the story's in-memory index mirrors; ms.
   */
  coldFirstCallMs?: number;
  /**
   * Memory only: the first getRelevantContext of a process with the same vectors and a new, empty in-process keyword
   * index, which it fills from the store (the layout of a Lambda over Pinecone); ms.
   */
  keywordFillFirstCallMs?: number;
  buildSeconds: number;
  rssAfterBuildMb: number;
  getRelevantContext: Percentiles;
  /** CPU time of the process per call (user + system), less sensitive than wall time to other load on the machine. */
  getRelevantContextCpu: Percentiles;
  vectorQuery: Percentiles;
  stages: Record<string, number>;
  tokens: { stable: number; dynamic: number; total: number };
}

interface SizeResult {
  scenes: number;
  /** How many trials ran, and each trial's p50s: the rows above are the median trial of each. */
  trials?: { count: number; p50s: Record<string, number[]> };
  vectors: number;
  embedSeconds: number;
  backends: BackendResult[];
  langchain: (Percentiles & { buildSeconds: number; rssDeltaMb: number }) | null;
  sqliteVec: (Percentiles & { buildSeconds: number; mode: string }) | null;
  sqliteVecScan: (Percentiles & { mode: string }) | null;
  peakRssMb: number;
  totalSeconds: number;
  /** 1-minute load average when the size finished, and when: other work on the machine inflates wall times. */
  loadAverage: number;
  measuredAt: string;
}

const percentiles = (samples: number[]): Percentiles => {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  return {
    p50: round(at(0.5)),
    p99: round(at(0.99)),
    mean: round(sorted.reduce((sum, value) => sum + value, 0) / sorted.length),
    n: sorted.length,
  };
};
const round = (value: number, digits = 3) => Number(value.toFixed(digits));
const rssMb = () => round(process.memoryUsage().rss / 2 ** 20, 0);
const gc = () => (globalThis as { gc?: () => void }).gc?.();
const seconds = (start: number) => round((performance.now() - start) / 1000, 1);
const log = (message: string) => process.stderr.write(`[bench:context] ${message}\n`);

/** The units `ContextManager.indexScene` writes for a scene (one chunk: synthetic scenes are under 300 words). */
function sceneUnit(scene: Scene, state: StoryState, previous: Scene | null) {
  const chunks = chunkWords(scene.text, 300);
  if (chunks.length !== 1) throw new Error(`synthetic scene ${scene.id} has ${chunks.length} chunks`);
  const chunk = chunks[0]!;
  const names = scene.characters.map((id) => state.characters[id]?.name ?? id);
  const metadata: VectorMetadataInput = {
    storyId: scene.storyId,
    type: 'scene',
    timestamp: Date.parse(scene.createdAt),
    themes: scene.themes,
    characters: scene.characters,
    locations: scene.locations,
    importance: scene.importance,
    sourceId: scene.id,
    sceneIndex: scene.index,
    chapterId: scene.chapterId,
    chunk: 0,
    text: `${scene.title}\n${scene.summary ? `${scene.summary}\n` : ''}${chunk}`.slice(0, LIMITS.metadataText),
  };
  return {
    id: `scene-${scene.id}-c0`,
    text: composeIndexText({
      text: scene.summary ? `${scene.summary}\n${chunk}` : chunk,
      labels: [scene.title, ...names, ...scene.locations],
      before: previous ? [previous.summary || firstSentence(previous.text)] : [],
      after: [],
    }),
    metadata,
  };
}

interface Corpus {
  scenes: Scene[];
  state: StoryState;
  units: Array<ReturnType<typeof sceneUnit>>;
  vectors: Float32Array[];
  queries: string[];
  queryVectors: Float32Array[];
}

async function buildCorpus(size: number): Promise<Corpus> {
  const state = synthesizeState(STORY, size);
  const scenes = Array.from({ length: size }, (_, index) => synthesizeScene(STORY, index));
  const units = scenes.map((scene, index) => sceneUnit(scene, state, index > 0 ? scenes[index - 1]! : null));
  const embedder = createHashingEmbedder({ dimensions: DIMENSIONS });
  const vectors = await embedInBatches(
    embedder,
    units.map((unit) => unit.text),
    { inputType: 'document' },
  );
  const queries = synthesizeQueries(WARMUP + Math.max(CALLS, QUERIES));
  // The raw searches (ours, LangChain, sqlite-vec) run the first WARMUP + QUERIES of them.
  const queryVectors = await embedInBatches(embedder, queries.slice(0, WARMUP + QUERIES), { inputType: 'query' });
  return { scenes, state, units, vectors, queries, queryVectors };
}

/** The context manager every measured backend runs: the hashing embedder and an in-process cache. */
function contextManager(parts: { store: StoryStateStore; vectors: VectorIndex; keywords: KeywordIndex }) {
  return new ContextManager({
    ...parts,
    embedder: createHashingEmbedder({ dimensions: DIMENSIONS }),
    cache: new ContextCache({ driver: createMemoryCacheDriver(), store: parts.store }),
  });
}

async function buildBackend(
  corpus: Corpus,
  parts: { store: StoryStateStore; vectors: VectorIndex; keywords: KeywordIndex },
): Promise<ContextManager> {
  const { scenes, state, units, vectors } = corpus;
  const manager = contextManager(parts);
  // Scene 0 through the real path: it writes the fingerprint and is the reference for the bulk units. It goes in
  // before the story does: an empty index of a story with scenes in the store is a lost one, and would be rebuilt.
  await manager.indexScene(scenes[0]!, { state });
  await parts.store.importStory(synthesizeExport(STORY, scenes.length));
  const [written] = await parts.vectors.fetch(STORY, [units[0]!.id]);
  if (!written) throw new Error('indexScene wrote no unit for scene 0');
  const sameValues = written.values.every((value, i) => value === vectors[0]![i]);
  const sameMetadata = isDeepStrictEqual(written.metadata, VectorMetadataSchema.parse(units[0]!.metadata));
  if (!sameValues || !sameMetadata) throw new Error('the bench composes scene units differently from indexScene');
  for (let start = 1; start < units.length; start += BATCH) {
    const end = Math.min(units.length, start + BATCH);
    const slice = units.slice(start, end);
    await parts.vectors.upsert(
      STORY,
      slice.map((unit, offset) => ({ id: unit.id, values: vectors[start + offset]!, metadata: unit.metadata })),
    );
    await parts.keywords.upsert(
      STORY,
      slice.map((unit) => ({ id: unit.id, text: unit.text, metadata: unit.metadata })),
    );
  }
  for (const id of Object.keys(state.characters)) await manager.indexCharacter(STORY, id);
  for (const thread of state.plotThreads) await manager.indexPlotThread(STORY, thread.id);
  // The stable prefix shows the summaries of the last 50 closed chapters (`summaryChapters`) and the synopsis, as a
  // story indexed scene by scene holds them (a prefix that misses one is made again on every call until it appears).
  for (let chapter = Math.max(0, state.chapterIndex - 50); chapter < state.chapterIndex; chapter++) {
    await manager.summarizeChapter(STORY, chapterIdFor(chapter));
  }
  return manager;
}

async function measureBackend(
  name: BackendResult['backend'],
  corpus: Corpus,
  parts: { store: StoryStateStore; vectors: VectorIndex; keywords: KeywordIndex },
): Promise<BackendResult> {
  gc();
  const start = performance.now();
  const manager = await buildBackend(corpus, parts);
  const buildSeconds = seconds(start);
  gc();
  const rssAfterBuildMb = rssMb();
  log(`${name}: built in ${buildSeconds} s, rss ${rssAfterBuildMb} MB`);

  // The profile (BENCH_PROFILE) covers the measured calls only, not the warm-up (which loads the SQLite mirrors).
  let profiler: Awaited<ReturnType<typeof startProfile>> | undefined;
  const times: number[] = [];
  const cpuTimes: number[] = [];
  const stageSamples = new Map<string, number[]>();
  let last: ContextBundle | undefined;
  for (let i = 0; i < corpus.queries.length; i++) {
    if (i === WARMUP && process.env.BENCH_PROFILE) profiler = await startProfile();
    const cpuBegin = process.cpuUsage();
    const begin = performance.now();
    const bundle = await manager.getRelevantContext(STORY, corpus.queries[i]!, { k: K });
    const elapsed = performance.now() - begin;
    const cpu = process.cpuUsage(cpuBegin);
    if (i < WARMUP) continue;
    times.push(elapsed);
    cpuTimes.push((cpu.user + cpu.system) / 1000);
    last = bundle;
    const { retrieval, ...outer } = bundle.trace.timings;
    for (const [stage, value] of [
      ...Object.entries(outer),
      ...Object.entries(retrieval).map(([key, value]) => [`retrieval.${key}`, value] as const),
    ]) {
      const samples = stageSamples.get(stage) ?? [];
      samples.push(value);
      stageSamples.set(stage, samples);
    }
  }
  if (profiler) await profiler.stop(`${process.env.BENCH_PROFILE}-${name}-${corpus.scenes.length}.cpuprofile`);
  // The raw vector search getRelevantContext runs: same vectors, pool size and filter.
  const filter: MetadataFilter = { type: 'scene', sceneIndex: { $lt: corpus.scenes.length - 5 } };
  const vectorTimes: number[] = [];
  for (let i = 0; i < corpus.queryVectors.length; i++) {
    const begin = performance.now();
    await parts.vectors.query(STORY, { vector: corpus.queryVectors[i]!, topK: POOL, filter, includeValues: true });
    if (i >= WARMUP) vectorTimes.push(performance.now() - begin);
  }
  const stages = Object.fromEntries([...stageSamples].map(([stage, samples]) => [stage, percentiles(samples).p50]));
  return {
    backend: name,
    buildSeconds,
    rssAfterBuildMb,
    getRelevantContext: percentiles(times),
    getRelevantContextCpu: percentiles(cpuTimes),
    vectorQuery: percentiles(vectorTimes),
    stages,
    tokens: { stable: last!.tokens.stable, dynamic: last!.tokens.dynamic, total: last!.tokens.total },
  };
}

/** `BENCH_PROFILE=prefix`: a CPU profile of the measured getRelevantContext calls only (not the setup). */
async function startProfile() {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(file: string) {
      const { profile } = await session.post('Profiler.stop');
      writeFileSync(file, JSON.stringify(profile));
      session.disconnect();
      log(`profile written to ${file}`);
    },
  };
}

async function measureLangChain(corpus: Corpus, queryCount: number): Promise<SizeResult['langchain']> {
  const { MemoryVectorStore } = await import('@langchain/classic/vectorstores/memory');
  const { Document } = await import('@langchain/core/documents');
  gc();
  const before = rssMb();
  const start = performance.now();
  const embeddings = {
    embedDocuments: async () => {
      throw new Error('vectors are given');
    },
    embedQuery: async () => {
      throw new Error('vectors are given');
    },
  };
  const store = new MemoryVectorStore(embeddings as never);
  for (let at = 0; at < corpus.units.length; at += BATCH) {
    const slice = corpus.units.slice(at, at + BATCH);
    await store.addVectors(
      slice.map((_, offset) => Array.from(corpus.vectors[at + offset]!)),
      slice.map(
        (unit) =>
          new Document({
            pageContent: unit.metadata.text ?? '',
            metadata: { id: unit.id, type: unit.metadata.type, sceneIndex: unit.metadata.sceneIndex },
          }),
      ),
    );
  }
  const buildSeconds = seconds(start);
  gc();
  const rssDeltaMb = rssMb() - before;
  const horizon = corpus.scenes.length - 5;
  const filter = (document: { metadata: Record<string, unknown> }) =>
    document.metadata.type === 'scene' && (document.metadata.sceneIndex as number) < horizon;
  const times: number[] = [];
  const vectors = corpus.queryVectors.slice(0, WARMUP + queryCount).map((vector) => Array.from(vector));
  for (let i = 0; i < vectors.length; i++) {
    const begin = performance.now();
    await store.similaritySearchVectorWithScore(vectors[i]!, POOL, filter);
    if (i >= WARMUP) times.push(performance.now() - begin);
  }
  return { ...percentiles(times), buildSeconds, rssDeltaMb };
}

async function measureSqliteVec(
  corpus: Corpus,
  queryCount: number,
): Promise<{ knn: SizeResult['sqliteVec']; scan: SizeResult['sqliteVecScan'] } | null> {
  let Database: typeof import('better-sqlite3');
  let sqliteVec: typeof import('sqlite-vec');
  try {
    Database = (await import('better-sqlite3')).default;
    sqliteVec = await import('sqlite-vec');
  } catch (error) {
    log(`sqlite-vec skipped: ${String(error)}`);
    return null;
  }
  const db = new Database(':memory:');
  sqliteVec.load(db);
  const start = performance.now();
  // vec0 with a metadata column, so the KNN applies the same "older than the recent scenes" filter.
  db.exec(
    `CREATE VIRTUAL TABLE items USING vec0(embedding float[${DIMENSIONS}] distance_metric=cosine, scene_index integer)`,
  );
  db.exec(`CREATE TABLE plain (id INTEGER PRIMARY KEY, scene_index INTEGER, embedding BLOB)`);
  const insert = db.prepare('INSERT INTO items (rowid, embedding, scene_index) VALUES (?, ?, ?)');
  const insertPlain = db.prepare('INSERT INTO plain (id, scene_index, embedding) VALUES (?, ?, ?)');
  const blob = (vector: Float32Array) => Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
  db.transaction(() => {
    corpus.vectors.forEach((vector, index) => {
      insert.run(BigInt(index), blob(vector), BigInt(index));
      insertPlain.run(index, index, blob(vector));
    });
  })();
  const buildSeconds = seconds(start);
  const horizon = corpus.scenes.length - 5;
  const knn = db.prepare(
    'SELECT rowid, distance FROM items WHERE embedding MATCH ? AND k = ? AND scene_index < ? ORDER BY distance',
  );
  const scan = db.prepare(
    'SELECT id, vec_distance_cosine(embedding, ?) AS distance FROM plain WHERE scene_index < ? ORDER BY distance LIMIT ?',
  );
  const run = (query: (vector: Float32Array) => unknown) => {
    const times: number[] = [];
    const vectors = corpus.queryVectors.slice(0, WARMUP + queryCount);
    for (let i = 0; i < vectors.length; i++) {
      const begin = performance.now();
      query(vectors[i]!);
      if (i >= WARMUP) times.push(performance.now() - begin);
    }
    return percentiles(times);
  };
  const knnResult = run((vector) => knn.all(blob(vector), POOL, horizon));
  const scanResult = run((vector) => scan.all(blob(vector), horizon, POOL));
  db.close();
  return {
    knn: { ...knnResult, buildSeconds, mode: 'vec0 KNN (distance_metric=cosine, metadata filter)' },
    scan: { ...scanResult, mode: 'vec_distance_cosine full scan over a plain table' },
  };
}

async function sqliteParts(directory: string) {
  try {
    const sqlite = await import('../src/sqlite.js');
    const store = sqlite.createSqliteStateStore({ path: path.join(directory, 'story.db') });
    return {
      store,
      vectors: sqlite.createSqliteVectorIndex({ database: store.database, dimensions: DIMENSIONS }),
      keywords: sqlite.createSqliteKeywordIndex({ database: store.database }),
    };
  } catch (error) {
    log(`SQLite backend skipped: ${String(error)}`);
    return null;
  }
}

async function runSize(size: number): Promise<SizeResult> {
  const started = performance.now();
  const embedStart = performance.now();
  const corpus = await buildCorpus(size);
  const embedSeconds = seconds(embedStart);
  log(`${size} scenes: synthesised and embedded in ${embedSeconds} s`);
  const peerQueries = size >= 100_000 ? Math.min(QUERIES, 60) : QUERIES;

  const backends: BackendResult[] = [];
  const memoryParts = {
    store: createMemoryStateStore(),
    vectors: createMemoryVectorIndex({ dimensions: DIMENSIONS, initialCapacity: 1_024 }),
    keywords: createMemoryKeywordIndex(),
  };
  const memory = await measureBackend('memory', corpus, memoryParts);
  backends.push(memory);
  gc();
  log(`memory: getRelevantContext p50 ${memory.getRelevantContext.p50} ms`);
  {
    // A new process over vectors that outlive it (Pinecone, say) with an in-process keyword index of its own: its
    // first call fills the keyword side from the store.
    const manager = contextManager({ ...memoryParts, keywords: createMemoryKeywordIndex() });
    gc();
    const begin = performance.now();
    await manager.getRelevantContext(STORY, corpus.queries[WARMUP]!, { k: K });
    memory.keywordFillFirstCallMs = round(performance.now() - begin, 1);
    log(`memory: first call with a keyword fill ${memory.keywordFillFirstCallMs} ms`);
  }
  gc();
  const langchain = await measureLangChain(corpus, peerQueries);
  gc();
  log(`langchain: p50 ${langchain?.p50} ms`);
  const sqliteVec = await measureSqliteVec(corpus, peerQueries);
  gc();
  log(`sqlite-vec: knn p50 ${sqliteVec?.knn?.p50} ms, scan p50 ${sqliteVec?.scan?.p50} ms`);
  if (process.env.BENCH_SQLITE !== '0') {
    const directory = mkdtempSync(path.join(tmpdir(), 'storyloom-bench-'));
    try {
      const parts = await sqliteParts(directory);
      if (parts) {
        const sqlite = await measureBackend('sqlite', corpus, parts);
        log(`sqlite: getRelevantContext p50 ${sqlite.getRelevantContext.p50} ms`);
        await parts.store.close();
        // A cold start: new connections to the same file, empty mirrors, one call.
        const cold = await sqliteParts(directory);
        if (cold) {
          const manager = contextManager(cold);
          gc();
          const profiler = process.env.BENCH_PROFILE ? await startProfile() : undefined;
          const begin = performance.now();
          await manager.getRelevantContext(STORY, corpus.queries[WARMUP]!, { k: K });
          sqlite.coldFirstCallMs = round(performance.now() - begin, 1);
          await profiler?.stop(`${process.env.BENCH_PROFILE}-sqlite-cold-${size}.cpuprofile`);
          log(`sqlite: cold first call ${sqlite.coldFirstCallMs} ms`);
          await cold.store.close();
        }
        backends.push(sqlite);
      }
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  }
  return {
    scenes: size,
    vectors: corpus.vectors.length,
    embedSeconds,
    backends,
    langchain,
    sqliteVec: sqliteVec?.knn ?? null,
    sqliteVecScan: sqliteVec?.scan ?? null,
    peakRssMb: round(process.resourceUsage().maxRSS / 1024, 0),
    totalSeconds: seconds(started),
    loadAverage: round(loadavg()[0]!, 1),
    measuredAt: new Date().toISOString(),
  };
}

/**
 * One result from several trials of a size: each backend's row, LangChain's and sqlite-vec's figures come from the
 * trial whose p50 is the median of theirs (so a row stays internally consistent), and every trial's p50 is kept.
 */
function medianTrial(trials: SizeResult[]): SizeResult {
  const median = <T>(items: T[], p50: (item: T) => number): T =>
    [...items].sort((a, b) => p50(a) - p50(b))[Math.floor((items.length - 1) / 2)]!;
  const first = trials[0]!;
  const p50s: Record<string, number[]> = {};
  const backends = first.backends.map((backend) => {
    const rows = trials.map((trial) => trial.backends.find((row) => row.backend === backend.backend)!);
    p50s[backend.backend] = rows.map((row) => row.getRelevantContext.p50);
    return median(rows, (row) => row.getRelevantContext.p50);
  });
  const peer = <T extends { p50: number } | null>(pick: (trial: SizeResult) => T, name: string): T => {
    const values = trials.map(pick);
    if (values.some((value) => value === null)) return values[0]!;
    p50s[name] = values.map((value) => value!.p50);
    return median(values, (value) => value!.p50);
  };
  return {
    ...first,
    backends,
    langchain: peer((trial) => trial.langchain, 'langchain'),
    sqliteVec: peer((trial) => trial.sqliteVec, 'sqliteVec'),
    sqliteVecScan: peer((trial) => trial.sqliteVecScan, 'sqliteVecScan'),
    peakRssMb: Math.max(...trials.map((trial) => trial.peakRssMb)),
    loadAverage: Math.max(...trials.map((trial) => trial.loadAverage)),
    measuredAt: trials.at(-1)!.measuredAt,
    trials: { count: trials.length, p50s },
  };
}

function ratio(peer: number | undefined, ours: number): string {
  return peer === undefined ? 'n/a' : `${(peer / ours).toFixed(1)}×`;
}

function markdown(results: SizeResult[]): string {
  const lines = [
    '# getRelevantContext speed',
    '',
    `Hashing embedder, ${DIMENSIONS} dimensions, k = ${K}. ${CALLS} getRelevantContext calls after ${WARMUP} warm-up per backend, size and trial: ten times the peers' queries, so that ours and LangChain's take about the same wall time and their p50s come from windows of the same length (the speed of shared cores drifts from second to second). The raw searches (ours, LangChain MemoryVectorStore.similaritySearchVectorWithScore, sqlite-vec) run the same query vectors with topK ${POOL} and the same "older than the 5 recent scenes" filter (${QUERIES} queries; 60 at 100,000). Ratios are peer p50 ÷ our getRelevantContext p50. Node ${process.version}, ${availableParallelism()} cores shared with other work: see the load average per size below; wall times include waiting for a core, CPU is this process's own time.`,
    '',
    '| scenes | backend | getRelevantContext p50 / p99 (ms) | CPU p50 (ms) | its vector search p50 (ms) | LangChain MemoryVectorStore p50 / p99 (ms) | sqlite-vec vec0 KNN p50 (ms) | sqlite-vec scan p50 (ms) | LangChain ÷ ours | vec0 ÷ ours | build (s) | peak RSS (MB) |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const result of results) {
    for (const backend of result.backends) {
      const ours = backend.getRelevantContext;
      lines.push(
        `| ${result.scenes.toLocaleString('en')} | ${backend.backend} | ${ours.p50} / ${ours.p99} | ${backend.getRelevantContextCpu.p50} | ${backend.vectorQuery.p50} | ${result.langchain ? `${result.langchain.p50} / ${result.langchain.p99}` : 'n/a'} | ${result.sqliteVec?.p50 ?? 'n/a'} | ${result.sqliteVecScan?.p50 ?? 'n/a'} | ${ratio(result.langchain?.p50, ours.p50)} | ${ratio(result.sqliteVec?.p50, ours.p50)} | ${backend.buildSeconds} | ${result.peakRssMb} |`,
      );
    }
  }
  lines.push(
    '',
    'Each size ran in several fresh processes (trials); each row is the median trial of that backend or peer. p50 of every trial, ms:',
    '',
  );
  for (const result of results) {
    const trials = result.trials;
    if (!trials) continue;
    const list = Object.entries(trials.p50s)
      .map(([name, values]) => `${name} ${values.join(' / ')}`)
      .join('; ');
    lines.push(
      `- ${result.scenes.toLocaleString('en')} scenes, ${trials.count} trial${trials.count === 1 ? '' : 's'}: ${list}`,
    );
  }
  lines.push('', '## Where the time goes (p50 per stage, ms, memory backend)', '');
  const stageNames = Object.keys(results[0]?.backends[0]?.stages ?? {});
  lines.push(`| scenes | ${stageNames.join(' | ')} |`, `|---:|${stageNames.map(() => '---:').join('|')}|`);
  for (const result of results) {
    const memory = result.backends.find((backend) => backend.backend === 'memory');
    if (memory)
      lines.push(`| ${result.scenes} | ${stageNames.map((stage) => round(memory.stages[stage] ?? 0)).join(' | ')} |`);
  }
  lines.push('', '## Setup and memory', '');
  lines.push(
    '| scenes | synthesise + embed (s) | memory backend build (s) / RSS after (MB) | LangChain build (s) / RSS delta (MB) | sqlite-vec build (s) | SQLite cold first call (ms) | keyword fill first call (ms) | total (s) | peak RSS (MB) | load average | measured at |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  );
  for (const result of results) {
    const memory = result.backends.find((backend) => backend.backend === 'memory');
    const sqlite = result.backends.find((backend) => backend.backend === 'sqlite');
    lines.push(
      `| ${result.scenes} | ${result.embedSeconds} | ${memory?.buildSeconds} / ${memory?.rssAfterBuildMb} | ${result.langchain?.buildSeconds} / ${result.langchain?.rssDeltaMb} | ${result.sqliteVec?.buildSeconds ?? 'n/a'} | ${sqlite?.coldFirstCallMs ?? 'n/a'} | ${memory?.keywordFillFirstCallMs ?? 'n/a'} | ${result.totalSeconds} | ${result.peakRssMb} | ${result.loadAverage ?? 'n/a'} | ${result.measuredAt ?? ''} |`,
    );
  }
  const ten = results.find((result) => result.scenes === 10_000);
  // Every backend measured: SQLite is the embedded default, memory the in-process one.
  for (const backend of ten?.backends ?? []) {
    const p50 = backend.getRelevantContext.p50;
    const speedup = ten?.langchain ? ten.langchain.p50 / p50 : 0;
    lines.push(
      '',
      `Bars at 10,000 scenes (${backend.backend} backend): p50 ≤ 5 ms: **${p50 <= 5 ? 'met' : 'missed'}** (${p50} ms); ≥ 10× faster than LangChain MemoryVectorStore: **${speedup >= 10 ? 'met' : 'missed'}** (${speedup.toFixed(1)}×).`,
    );
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const child = process.env.BENCH_CONTEXT_CHILD;
  if (child) {
    const result = await runSize(Number(child));
    writeFileSync(process.env.BENCH_CONTEXT_OUT!, JSON.stringify(result));
    return;
  }
  mkdirSync(RESULTS, { recursive: true });
  const scratch = mkdtempSync(path.join(tmpdir(), 'storyloom-bench-out-'));
  const results: SizeResult[] = [];
  try {
    for (const size of SIZES) {
      const trials: SizeResult[] = [];
      const count = TRIALS ?? (size <= 10_000 ? 5 : 1);
      for (let trial = 0; trial < count; trial++) {
        const out = path.join(scratch, `${size}-${trial}.json`);
        const run = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url)], {
          env: { ...process.env, BENCH_CONTEXT_CHILD: String(size), BENCH_CONTEXT_OUT: out },
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        if (run.status !== 0) throw new Error(`the ${size}-scene run failed (exit ${run.status})`);
        trials.push(JSON.parse(readFileSync(out, 'utf8')) as SizeResult);
      }
      results.push(medianTrial(trials));
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  if (process.env.BENCH_MERGE === '1') {
    // Re-measure some sizes (after a noisy run, say) and keep the others from the previous results file.
    try {
      const previous = JSON.parse(readFileSync(path.join(RESULTS, 'context.json'), 'utf8')) as {
        results: SizeResult[];
      };
      for (const old of previous.results) if (!results.some((fresh) => fresh.scenes === old.scenes)) results.push(old);
      results.sort((a, b) => a.scenes - b.scenes);
    } catch {
      // No previous results: nothing to merge.
    }
  }
  const table = markdown(results);
  writeFileSync(
    path.join(RESULTS, 'context.json'),
    `${JSON.stringify({ node: process.version, dimensions: DIMENSIONS, k: K, pool: POOL, scenesPerChapter: SCENES_PER_CHAPTER, results }, null, 2)}\n`,
  );
  writeFileSync(path.join(RESULTS, 'context.md'), table);
  process.stdout.write(table);
}

await main();
