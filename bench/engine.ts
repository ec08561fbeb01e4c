/**
 * Engine overhead per episode, without generator time, at story lengths 100 and 10,000 scenes: the cost of the
 * pipeline itself (load, resume check, influence resolution, prompt, continuity, commit, publication log, publish)
 * must not grow with the story. Each (store, length) runs in its own child process so that its peak RSS is its own.
 *
 *   npm run bench:engine                      # memory and sqlite stores, 100 and 10,000 scenes
 *   npm run bench:engine -- --episodes 300    # more measured episodes per case
 *
 * Writes `bench/results/engine.json` and `bench/results/engine.md`.
 *
 * @module
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createMemoryInfluenceSource } from '../src/chain/memory.js';
import { createStoryEngine } from '../src/engine/engine.js';
import type { SceneGenerator } from '../src/generation/scene-generator.js';
import { createMemoryPublisher } from '../src/publishing/memory.js';
import { EXPORT_FORMAT, EXPORT_FORMAT_VERSION } from '../src/state/base-store.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor, type Scene, type StoryState } from '../src/state/schema.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { createMockImageGenerator, createMockSceneGenerator } from '../src/testing/mock-generators.js';

const here = dirname(fileURLToPath(import.meta.url));
const STORY = 'bench-tale';
const LENGTHS = [100, 10_000];
const STORES = ['memory', 'sqlite'] as const;
type StoreKind = (typeof STORES)[number];

interface CaseResult {
  store: StoreKind;
  scenes: number;
  episodes: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  peakRssMb: number;
  setupMs: number;
}

/** A story of `scenes` scenes as export lines (state, scenes, a full publication log), for a fast import. */
function* synthesizedExport(scenes: number): Generator<string> {
  const base = makeStoryState(STORY);
  const at = new Date(Date.UTC(2026, 0, 1)).toISOString();
  const chapterLength = base.bible.chapterLength;
  const chapterIndex = Math.floor(scenes / chapterLength);
  const state: StoryState = {
    ...base,
    version: scenes,
    sceneCount: scenes,
    sceneId: scenes > 0 ? `old-${scenes - 1}` : null,
    chapterIndex,
    chapterId: chapterIdFor(chapterIndex),
    updatedAt: at,
  };
  yield JSON.stringify({ kind: EXPORT_FORMAT, formatVersion: EXPORT_FORMAT_VERSION, storyId: STORY });
  yield JSON.stringify({ kind: 'state', state });
  yield JSON.stringify({ kind: 'snapshot', state });
  for (let index = 0; index < scenes; index++) {
    const scene: Scene = {
      id: `old-${index}`,
      storyId: STORY,
      chapterId: chapterIdFor(Math.floor(index / chapterLength)),
      index,
      title: `Night ${index + 1}`,
      text: `Scene ${index + 1}. `.repeat(150),
      summary: `Night ${index + 1} at the lighthouse.`,
      characters: ['mira', 'tobin'],
      locations: ['lighthouse'],
      themes: ['duty'],
      mood: '',
      importance: 0.5,
      imagePrompt: '',
      createdAt: at,
      stateVersion: index + 1,
      influencesApplied: [],
    };
    yield JSON.stringify({ kind: 'scene', scene });
  }
  const targets = ['index', 'image', 'publish:site'];
  for (let index = 0; index < scenes; index++) {
    for (const target of targets) {
      yield JSON.stringify({
        kind: 'publication',
        entry: { storyId: STORY, sceneId: `old-${index}`, target, status: 'done', result: {}, recordedAt: at },
      });
    }
  }
  yield JSON.stringify({
    kind: 'end',
    counts: { snapshots: 1, scenes, influences: 0, publications: scenes * targets.length },
  });
}

/** A generator that costs nothing: a fixed valid scene that applies the winning vote. */
function zeroCostGenerator(): SceneGenerator {
  return createMockSceneGenerator({
    respond: (request) => ({
      scene: {
        title: 'Night',
        text: 'Mira and Tobin kept the lamp.',
        summary: 'A quiet night.',
        characters: ['mira', 'tobin'],
      },
      delta: {
        worldStateSet: { night: request.sceneIndex },
        influencesApplied: request.influences
          .filter((influence) => influence.winning)
          .slice(0, 1)
          .map((i) => i.id),
      },
    }),
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function runCase(kind: StoreKind, scenes: number, episodes: number): Promise<CaseResult> {
  const setupStart = performance.now();
  let store: StoryStateStore;
  let cleanup = () => {};
  if (kind === 'memory') store = createMemoryStateStore();
  else {
    const { createSqliteStateStore } = await import('../src/state/sqlite.js');
    const dir = mkdtempSync(join(tmpdir(), 'storyloom-bench-engine-'));
    store = createSqliteStateStore({ path: join(dir, 'story.db') });
    cleanup = () => rmSync(dir, { recursive: true, force: true });
  }
  await store.importStory(synthesizedExport(scenes));
  const setupMs = performance.now() - setupStart;
  const inner = zeroCostGenerator();
  let generatorMs = 0;
  const generator: SceneGenerator = {
    ...inner,
    async generate(request, options) {
      const started = performance.now();
      try {
        return await inner.generate(request, options);
      } finally {
        generatorMs += performance.now() - started;
      }
    },
  };
  const source = createMemoryInfluenceSource();
  const engine = createStoryEngine({
    store,
    generator,
    images: createMockImageGenerator(),
    publishers: [createMemoryPublisher({ target: 'site' })],
    influenceSources: [source],
    influencePolicy: { maxWeightPerAuthor: 5, quadratic: true },
  });
  const samples: number[] = [];
  const warmup = 20;
  for (let episode = 0; episode < episodes + warmup; episode++) {
    for (let vote = 0; vote < 5; vote++) {
      source.push({
        id: `b${episode}-${vote}`,
        storyId: STORY,
        source: 'api',
        author: `reader-${vote}`,
        kind: 'vote',
        choice: vote % 2 === 0 ? 'open the door' : 'light the lamp',
        weight: vote + 1,
        receivedAt: new Date(Date.UTC(2026, 1, 1, 0, episode, vote)).toISOString(),
      });
    }
    generatorMs = 0;
    const started = performance.now();
    const result = await engine.runEpisode(STORY);
    const elapsed = performance.now() - started - generatorMs;
    if (!result.complete || result.outcome !== 'created') throw new Error(`episode ${episode} did not complete`);
    if (episode >= warmup) samples.push(elapsed);
  }
  await store.close();
  cleanup();
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    store: kind,
    scenes,
    episodes,
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    meanMs: round(samples.reduce((sum, value) => sum + value, 0) / samples.length),
    peakRssMb: round(process.resourceUsage().maxRSS / 1024),
    setupMs: Math.round(setupMs),
  };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

const { values } = parseArgs({
  options: {
    child: { type: 'boolean', default: false },
    store: { type: 'string' },
    scenes: { type: 'string' },
    episodes: { type: 'string', default: '200' },
  },
});
const episodes = Number(values.episodes);

if (values.child) {
  const result = await runCase(values.store as StoreKind, Number(values.scenes), episodes);
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else {
  const results: CaseResult[] = [];
  for (const kind of STORES) {
    for (const scenes of LENGTHS) {
      const child = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          fileURLToPath(import.meta.url),
          '--child',
          '--store',
          kind,
          '--scenes',
          String(scenes),
          '--episodes',
          String(episodes),
        ],
        { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
      );
      if (child.status !== 0) throw new Error(`bench case ${kind}/${scenes} failed:\n${child.stderr}`);
      const result = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as CaseResult;
      results.push(result);
      console.log(
        `${kind.padEnd(7)} ${String(scenes).padStart(6)} scenes: p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, peak RSS ${result.peakRssMb} MB`,
      );
    }
  }
  const ratios = STORES.map((kind) => {
    const small = results.find((r) => r.store === kind && r.scenes === LENGTHS[0])!;
    const large = results.find((r) => r.store === kind && r.scenes === LENGTHS[1])!;
    return { store: kind, p50Ratio: round(large.p50Ms / small.p50Ms), meanRatio: round(large.meanMs / small.meanMs) };
  });
  const bar = 1.5;
  const output = {
    benchmark: 'engine-overhead',
    description:
      'Engine time per episode excluding generator time, zero-cost mock generator, mock image, memory publisher, 5 votes per episode',
    node: process.version,
    episodesPerCase: episodes,
    bar: { maxRatio: bar },
    results,
    ratios,
    pass: ratios.every((ratio) => ratio.p50Ratio <= bar),
  };
  const resultsDir = join(here, 'results');
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, 'engine.json'), `${JSON.stringify(output, null, 2)}\n`);
  const table = [
    '# Engine overhead per episode (generator time excluded)',
    '',
    `Node ${process.version}, ${episodes} measured episodes per case after 20 warm-up episodes; each case in its own process.`,
    '',
    '| store | scenes | p50 ms | p99 ms | mean ms | peak RSS MB | setup ms |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...results.map(
      (r) => `| ${r.store} | ${r.scenes} | ${r.p50Ms} | ${r.p99Ms} | ${r.meanMs} | ${r.peakRssMb} | ${r.setupMs} |`,
    ),
    '',
    '| store | p50 ratio 10k/100 | mean ratio | bar |',
    '|---|---:|---:|---|',
    ...ratios.map(
      (r) => `| ${r.store} | ${r.p50Ratio} | ${r.meanRatio} | ≤ ${bar} ${r.p50Ratio <= bar ? 'pass' : 'FAIL'} |`,
    ),
    '',
  ].join('\n');
  writeFileSync(join(resultsDir, 'engine.md'), table);
  console.log(table);
  if (!output.pass) process.exitCode = 1;
}
