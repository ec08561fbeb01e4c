/**
 * 50 real episodes through the engine, the ContextManager's prompt layout and the Claude scene generator, against
 * the local Messages API stand-in and its prompt-cache behaviour (5-minute TTL, 1,024-token minimum prefix).
 * Reports input, output, cache-write and cache-read tokens, the cache-read share of input and the cost per episode.
 * Tokens are the stand-in's estimate (⌈characters / 4⌉); prices are the generator's default table.
 *
 * Run: npm run bench:claude-episodes
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import Anthropic from '@anthropic-ai/sdk';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import type { Clock } from '../src/core/clock.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createClaudeSceneGenerator } from '../src/generation/claude-scene-generator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { defaultStandInReply, startAnthropicStandIn } from '../src/testing/anthropic-server.js';

const EPISODES = 50;
const MODEL = 'claude-sonnet-4-6';
const SPACING_MINUTES = Number(process.env.BENCH_SPACING_MINUTES ?? 4);

let now = Date.UTC(2026, 0, 1);
const clock: Clock = {
  now: () => now,
  sleep: async (ms) => {
    now += ms;
  },
};

const standIn = await startAnthropicStandIn({
  clock,
  // Each model's own minimum prefix (1,024 tokens for the Sonnet models this bench runs).
  cache: { ttlMs: 5 * 60_000 },
  respond: (request) => defaultStandInReply(request, 6_000),
});
const store = createMemoryStateStore({ clock });
const context = new ContextManager({
  store,
  vectors: createMemoryVectorIndex({ dimensions: 1536 }),
  keywords: createMemoryKeywordIndex(),
  embedder: createHashingEmbedder({ dimensions: 1536 }),
});
const generator = createClaudeSceneGenerator({
  client: new Anthropic({ apiKey: 'bench', baseURL: standIn.url, maxRetries: 0 }),
  model: MODEL,
  maxTokens: 8_000,
  clock,
});
const engine = createStoryEngine({ store, context, generator, clock });
await store.create(createStoryFromTemplate('lighthouse-keepers', 'bench', clock));

const rows: Array<{
  episode: number;
  input: number;
  cacheWrite: number;
  cacheRead: number;
  output: number;
  cost: number;
}> = [];
for (let episode = 1; episode <= EPISODES; episode++) {
  const result = await engine.runEpisode('bench');
  const usage = result.usage;
  if (!usage) throw new Error(`episode ${episode} reported no usage`);
  rows.push({
    episode,
    input: usage.inputTokens,
    cacheWrite: usage.cacheWriteTokens,
    cacheRead: usage.cacheReadTokens,
    output: usage.outputTokens,
    cost: usage.costUsd,
  });
  now += SPACING_MINUTES * 60_000;
}
await standIn.close();

const sum = (pick: (row: (typeof rows)[number]) => number, from = 0) =>
  rows.slice(from).reduce((total, row) => total + pick(row), 0);
const allInput = (from = 0) => sum((row) => row.input + row.cacheWrite + row.cacheRead, from);
const summary = {
  episodes: EPISODES,
  spacingMinutes: SPACING_MINUTES,
  model: MODEL,
  perEpisode: {
    input: sum((row) => row.input) / EPISODES,
    cacheWrite: sum((row) => row.cacheWrite) / EPISODES,
    cacheRead: sum((row) => row.cacheRead) / EPISODES,
    output: sum((row) => row.output) / EPISODES,
    costUsd: sum((row) => row.cost) / EPISODES,
  },
  cacheReadShare: sum((row) => row.cacheRead) / allInput(),
  cacheReadShareFromSecond: sum((row) => row.cacheRead, 1) / allInput(1),
  totalCostUsd: sum((row) => row.cost),
  rows,
};
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/claude-episodes.json', `${JSON.stringify(summary, null, 2)}\n`);
const fmt = (value: number) => Math.round(value).toLocaleString('en-US');
console.log(`# Claude episodes through the engine (${EPISODES} episodes, ${SPACING_MINUTES} min apart, ${MODEL})\n`);
console.log('| per episode | input | cache write | cache read | output | cache-read share | cost |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
console.log(
  `| mean | ${fmt(summary.perEpisode.input)} | ${fmt(summary.perEpisode.cacheWrite)} | ${fmt(summary.perEpisode.cacheRead)} | ${fmt(summary.perEpisode.output)} | ${(summary.cacheReadShare * 100).toFixed(1)} % (${(summary.cacheReadShareFromSecond * 100).toFixed(1)} % from episode 2) | $${summary.perEpisode.costUsd.toFixed(4)} |`,
);
console.log(`\nTotal for ${EPISODES} episodes: $${summary.totalCostUsd.toFixed(2)}`);
