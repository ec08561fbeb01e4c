/**
 * Prompt economy over a 200-episode offline story: input tokens per episode and the share of them in the stable
 * prefix (the part that is byte-identical across the episodes of a chapter, so a prompt cache can serve it).
 * Bar: from the second episode of a chapter on, at least 80 % of input tokens sit in the stable prefix.
 *
 * Each episode plays the engine's part with the real pieces: `buildEpisodeQuery` → `ContextManager.getRelevantContext`
 * → the offline `ProceduralNarrator` → `applyDelta` → memory store `commitScene` → `ContextManager.indexScene`.
 * Every few episodes a reader votes, so audience input shows up as it would.
 *
 * Run with `npm run bench:prompt` (`BENCH_EPISODES=200`; `BENCH_TEMPLATE=glasshouse-ship` and `BENCH_SEED=3` for
 * another story; `BENCH_POV=<character id>` for every prompt from that character's point of view). Writes `bench/results/prompt-economy.json` and `bench/results/prompt-economy.md` for the default
 * story only. Not part of `npm test`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ContextCache } from '../src/context/context-cache.js';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryCacheDriver } from '../src/context/memory-cache.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { buildEpisodeQuery } from '../src/engine/engine.js';
import { resolveInfluences } from '../src/engine/influence-resolution.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createStoryFromTemplate, defaultStoryTemplate, storyTemplates } from '../src/generation/story-templates.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { applyDelta } from '../src/state/reducer.js';
import type { StoryState } from '../src/state/schema.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.join(here, 'results');
const EPISODES = Number(process.env.BENCH_EPISODES ?? 200);
const TEMPLATE = process.env.BENCH_TEMPLATE ?? defaultStoryTemplate.name;
const SEED = Number(process.env.BENCH_SEED ?? 7);
/** Only the default story's run is the published result. */
const POV = process.env.BENCH_POV || undefined;
const DEFAULT_RUN = TEMPLATE === defaultStoryTemplate.name && SEED === 7 && EPISODES === 200 && POV === undefined;
const STORY = 'economy';
const EPOCH = Date.UTC(2026, 0, 1);
const BAR = 0.8;

interface Episode {
  episode: number;
  chapterId: string;
  /** 1 for the first episode of its chapter. */
  positionInChapter: number;
  stable: number;
  dynamic: number;
  total: number;
  stableShare: number;
  /** Estimated tokens of each dynamic section, and of each stable one. */
  dynamicSections: Record<string, number>;
  stableSections: Record<string, number>;
}

async function main(): Promise<void> {
  let now = EPOCH;
  const clock = { now: () => now, sleep: async () => {} };
  const store = createMemoryStateStore({ clock });
  await store.create(createStoryFromTemplate(TEMPLATE, STORY, clock));
  const context = new ContextManager({
    store,
    vectors: createMemoryVectorIndex({ dimensions: 1536 }),
    keywords: createMemoryKeywordIndex(),
    embedder: createHashingEmbedder({ dimensions: 1536 }),
    cache: new ContextCache({ driver: createMemoryCacheDriver(), store }),
  });
  const narrator = createProceduralNarrator({ seed: SEED });
  const episodes: Episode[] = [];
  let chapterStartedAt = 0;
  let previousChapter = '';
  const started = performance.now();
  for (let episode = 1; episode <= EPISODES; episode++) {
    now += 3_600_000;
    if (episode % 4 === 0) {
      await store.enqueueInfluence({
        id: `vote-${episode}`,
        storyId: STORY,
        source: 'api',
        author: `reader-${episode % 7}`,
        kind: 'vote',
        choice: episode % 8 === 0 ? 'follow the lights on the water' : 'open the sealed door',
        text: 'I think they should go tonight.',
        weight: 1,
        receivedAt: new Date(now - 60_000).toISOString(),
      });
    }
    const state: StoryState = await store.load(STORY);
    const resolution = resolveInfluences(state.userInfluenceQueue);
    // The engine's query: under a point of view, naming only what that character knows.
    const query = buildEpisodeQuery(
      state,
      resolution,
      POV ? { povCharacterId: POV, known: await context.knownTo(STORY, POV, { state }) } : {},
    );
    const bundle = await context.getRelevantContext(STORY, query, {
      state,
      influences: resolution.influences,
      ...(POV ? { povCharacterId: POV } : {}),
    });
    if (state.chapterId !== previousChapter) {
      previousChapter = state.chapterId;
      chapterStartedAt = episode;
    }
    const sections = (part: 'stable' | 'dynamic') => {
      const totals: Record<string, number> = {};
      for (const item of bundle.trace.included) {
        if (item.part !== part) continue;
        const section = item.section.replace(/chapter-\d+/g, 'chapter-N');
        totals[section] = (totals[section] ?? 0) + item.tokens;
      }
      return totals;
    };
    episodes.push({
      episode,
      chapterId: state.chapterId,
      positionInChapter: episode - chapterStartedAt + 1,
      stable: bundle.tokens.stable,
      dynamic: bundle.tokens.dynamic,
      total: bundle.tokens.total,
      stableShare: bundle.tokens.total > 0 ? bundle.tokens.stable / bundle.tokens.total : 0,
      dynamicSections: sections('dynamic'),
      stableSections: sections('stable'),
    });

    const sceneId = `${STORY}-s${state.sceneCount}`;
    const { scene, delta } = await narrator.generate({
      storyId: STORY,
      sceneId,
      sceneIndex: state.sceneCount,
      chapterId: state.chapterId,
      state,
      prompt: bundle.prompt,
      influences: resolution.influences,
      seed: state.sceneCount,
    });
    const committedScene = {
      ...scene,
      id: sceneId,
      storyId: STORY,
      chapterId: state.chapterId,
      index: state.sceneCount,
      createdAt: new Date(now).toISOString(),
      stateVersion: state.version + 1,
      influencesApplied: delta.influencesApplied,
    };
    const result = applyDelta(state, delta, committedScene);
    if (!result.ok) throw new Error(`episode ${episode}: ${JSON.stringify(result.issues.slice(0, 3))}`);
    const rejected = delta.influencesRejected ?? [];
    const commit = await store.commitScene(STORY, {
      expectedVersion: state.version,
      scene: committedScene,
      nextState: result.state,
      consumedInfluenceIds: delta.influencesApplied,
      rejectedInfluences: rejected,
    });
    await context.indexScene(commit.scene, { state: commit.state });
  }
  const seconds = (performance.now() - started) / 1000;

  const later = episodes.filter((episode) => episode.positionInChapter >= 2);
  const shares = later.map((episode) => episode.stableShare);
  const min = Math.min(...shares);
  const mean = shares.reduce((sum, share) => sum + share, 0) / shares.length;
  const meanOf = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length);
  const sectionMeans = (part: 'dynamicSections' | 'stableSections') => {
    const totals = new Map<string, number>();
    for (const episode of later) {
      for (const [section, tokens] of Object.entries(episode[part])) {
        totals.set(section, (totals.get(section) ?? 0) + tokens);
      }
    }
    return Object.fromEntries(
      [...totals].sort((a, b) => b[1] - a[1]).map(([section, tokens]) => [section, Math.round(tokens / later.length)]),
    );
  };
  const summary = {
    episodes: EPISODES,
    chapters: new Set(episodes.map((episode) => episode.chapterId)).size,
    seconds: Number(seconds.toFixed(1)),
    tokensPerEpisode: {
      mean: Math.round(meanOf(episodes.map((episode) => episode.total))),
      min: Math.min(...episodes.map((episode) => episode.total)),
      max: Math.max(...episodes.map((episode) => episode.total)),
    },
    stableShareFromSecondEpisode: {
      min: Number(min.toFixed(3)),
      mean: Number(mean.toFixed(3)),
      episodes: later.length,
      belowBar: later.filter((episode) => episode.stableShare < BAR).length,
    },
    bar: BAR,
    met: min >= BAR,
    meanStable: Math.round(meanOf(later.map((episode) => episode.stable))),
    meanDynamic: Math.round(meanOf(later.map((episode) => episode.dynamic))),
    dynamicSectionsMean: sectionMeans('dynamicSections'),
    stableSectionsMean: sectionMeans('stableSections'),
  };

  const lines = [
    '# Prompt economy',
    '',
    `${EPISODES} episodes of "${storyTemplates[TEMPLATE]?.bible.title ?? TEMPLATE}" (narrator seed ${SEED}) with the procedural narrator, the memory store and indexes, the hashing embedder; a reader vote every 4th episode. Tokens are the context manager's estimates. ${summary.chapters} chapters, ${summary.seconds} s.`,
    '',
    '| measure | value |',
    '|---|---:|',
    `| input tokens per episode (mean / min / max) | ${summary.tokensPerEpisode.mean} / ${summary.tokensPerEpisode.min} / ${summary.tokensPerEpisode.max} |`,
    `| stable share, episodes ≥ 2nd of their chapter (min / mean) | ${(min * 100).toFixed(1)} % / ${(mean * 100).toFixed(1)} % |`,
    `| episodes ≥ 2nd below ${BAR * 100} % | ${summary.stableShareFromSecondEpisode.belowBar} of ${later.length} |`,
    `| mean stable / dynamic tokens (episodes ≥ 2nd) | ${summary.meanStable} / ${summary.meanDynamic} |`,
    `| bar (min ≥ ${BAR * 100} %) | **${summary.met ? 'met' : 'missed'}** |`,
    '',
    '## Mean tokens per section (episodes ≥ 2nd of their chapter)',
    '',
    '| part | section | tokens |',
    '|---|---|---:|',
    ...Object.entries(summary.stableSectionsMean).map(([section, tokens]) => `| stable | ${section} | ${tokens} |`),
    ...Object.entries(summary.dynamicSectionsMean).map(([section, tokens]) => `| dynamic | ${section} | ${tokens} |`),
    '',
    '## Per episode',
    '',
    '| episode | chapter | # in chapter | stable | dynamic | total | stable share |',
    '|---:|---|---:|---:|---:|---:|---:|',
    ...episodes.map(
      (episode) =>
        `| ${episode.episode} | ${episode.chapterId} | ${episode.positionInChapter} | ${episode.stable} | ${episode.dynamic} | ${episode.total} | ${(episode.stableShare * 100).toFixed(1)} % |`,
    ),
  ];
  if (DEFAULT_RUN) {
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(
      path.join(RESULTS, 'prompt-economy.json'),
      `${JSON.stringify({ node: process.version, summary, episodes }, null, 2)}\n`,
    );
    writeFileSync(path.join(RESULTS, 'prompt-economy.md'), `${lines.join('\n')}\n`);
  }
  process.stdout.write(`${lines.slice(0, 22).join('\n')}\n`);
}

await main();
