/**
 * Token economy of the Claude scene generator over a 50-episode run against the local Messages API stand-in and its
 * prompt-cache behaviour (5-minute TTL, 1,024-token minimum): tokens by kind, cache-read share and cost per episode.
 *
 * The prompt is a realistic synthetic layout, not yet the ContextManager's: a stable prefix of about 4,000 tokens
 * (story bible, world rules, character sheets, thread list) that is byte-identical across episodes, and a dynamic
 * part of about 1,500 tokens (retrieved memories, recent scenes, the task) that changes every episode. Replies are
 * ~2,000-token scenes. Tokens are the stand-in's estimate (⌈characters / 4⌉); prices are the default table's.
 *
 * Two schedules: episodes 4 minutes apart (inside the cache TTL) and 60 minutes apart (every prefix expires).
 *
 * Run: npm run bench:claude
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import Anthropic from '@anthropic-ai/sdk';
import type { Clock } from '../src/core/clock.js';
import { createClaudeSceneGenerator } from '../src/generation/claude-scene-generator.js';
import type { SceneRequest, Usage } from '../src/generation/scene-generator.js';
import { applyDelta } from '../src/state/reducer.js';
import type { StoryState } from '../src/state/schema.js';
import { defaultStandInReply, startAnthropicStandIn } from '../src/testing/anthropic-server.js';
import { makeStoryState } from '../src/testing/fixtures.js';

const EPISODES = 50;
const MODEL = 'claude-sonnet-4-6';

function stablePrefix(state: StoryState): string {
  const sections = [
    `# Story bible\nTitle: ${state.bible.title}\nPremise: ${state.bible.premise}\nGenre: ${state.bible.genre}\nTone: ${state.bible.tone}`,
    `# World rules\n${Array.from({ length: 30 }, (_, index) => `${index + 1}. ${state.bible.worldRules[index % state.bible.worldRules.length]} The keepers log every exception to this rule in the red ledger, and the ledger is never wrong.`).join('\n')}`,
    `# Characters\n${Array.from({ length: 20 }, (_, index) => `## character-${index}\nA keeper of the island with a long memory. Traits: courage 0.${index % 10}, curiosity 0.${(index + 3) % 10}. Relationships: trusts character-${(index + 1) % 12}, wary of character-${(index + 5) % 12}. Knows: the lamp's secret, the tide tables, the name of the drowned bell. Appearance: weathered coat, salt in the hair, a brass key on a cord.`).join('\n')}`,
    `# Plot threads\n${Array.from({ length: 16 }, (_, index) => `- thread-${index}: an open question about the drifting island, importance 0.${index}; setups: the missing logbook page, the second lamp, the gull that speaks.`).join('\n')}`,
  ];
  return sections.join('\n\n');
}

function dynamicPart(episode: number): string {
  const memories = Array.from(
    { length: 34 },
    (_, index) =>
      `- Memory ${episode}.${index}: in scene ${Math.max(0, episode - index)} the keepers argued about the tide, the lamp flickered twice, and a stranger's boat was seen to the north-east.`,
  ).join('\n');
  return `# Retrieved memories\n${memories}\n\n# Recent scenes\nEpisode ${episode - 1} ended at the foot of the lamp stairs, with the fog rising.\n\n# Task\nWrite episode ${episode}: advance one open thread and end on a question.`;
}

async function run(spacingMinutes: number) {
  let now = Date.UTC(2026, 0, 1);
  const clock: Clock = {
    now: () => now,
    sleep: async (ms) => {
      now += ms;
    },
  };
  const standIn = await startAnthropicStandIn({
    clock,
    cache: { ttlMs: 5 * 60_000, minPrefixTokens: 1_024 },
    respond: (request) => defaultStandInReply(request, 8_000),
  });
  const generator = createClaudeSceneGenerator({
    client: new Anthropic({ apiKey: 'bench', baseURL: standIn.url }),
    model: MODEL,
    clock,
  });
  let state = makeStoryState('economy');
  const stable = stablePrefix(state);
  const episodes: Array<Usage & { episode: number; cacheReadShare: number }> = [];
  for (let episode = 1; episode <= EPISODES; episode++) {
    const request: SceneRequest = {
      storyId: state.storyId,
      sceneId: `scene-${String(episode).padStart(4, '0')}`,
      sceneIndex: state.sceneCount,
      chapterId: state.chapterId,
      state,
      prompt: { stable, dynamic: dynamicPart(episode) },
      influences: [],
      seed: episode,
    };
    const result = await generator.generate(request);
    const applied = applyDelta(state, result.delta, {
      ...result.scene,
      id: request.sceneId,
      storyId: state.storyId,
      chapterId: state.chapterId,
      index: state.sceneCount,
      createdAt: new Date(now).toISOString(),
      stateVersion: state.version + 1,
      influencesApplied: result.delta.influencesApplied,
    });
    if (!applied.ok) throw new Error(`episode ${episode} was not applicable`);
    state = applied.state;
    const { usage } = result;
    const input = usage.inputTokens + usage.cacheWriteTokens + usage.cacheReadTokens;
    episodes.push({ episode, ...usage, cacheReadShare: usage.cacheReadTokens / input });
    now += spacingMinutes * 60_000;
  }
  await standIn.close();
  const sum = (key: keyof Usage) => episodes.reduce((total, item) => total + item[key], 0);
  const totals = {
    inputTokens: sum('inputTokens'),
    outputTokens: sum('outputTokens'),
    cacheWriteTokens: sum('cacheWriteTokens'),
    cacheReadTokens: sum('cacheReadTokens'),
    costUsd: sum('costUsd'),
  };
  const allInput = totals.inputTokens + totals.cacheWriteTokens + totals.cacheReadTokens;
  return {
    spacingMinutes,
    totals,
    perEpisode: {
      inputTokens: totals.inputTokens / EPISODES,
      outputTokens: totals.outputTokens / EPISODES,
      cacheWriteTokens: totals.cacheWriteTokens / EPISODES,
      cacheReadTokens: totals.cacheReadTokens / EPISODES,
      costUsd: totals.costUsd / EPISODES,
    },
    cacheReadShare: totals.cacheReadTokens / allInput,
    cacheReadShareFromEpisode2:
      episodes.slice(1).reduce((total, item) => total + item.cacheReadTokens, 0) /
      episodes
        .slice(1)
        .reduce((total, item) => total + item.inputTokens + item.cacheWriteTokens + item.cacheReadTokens, 0),
    episodes,
  };
}

const withinTtl = await run(4);
const hourly = await run(60);
const results = {
  model: MODEL,
  episodes: EPISODES,
  note: 'Synthetic prompt layout (stable ≈4k tokens, dynamic ≈1.5k) against the local stand-in; tokens are ⌈chars/4⌉ estimates.',
  schedules: { every4Minutes: withinTtl, every60Minutes: hourly },
};
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/claude-economy.json', import.meta.url), `${JSON.stringify(results, null, 2)}\n`);

const row = (name: string, r: typeof withinTtl) =>
  `| ${name} | ${r.perEpisode.inputTokens.toFixed(0)} | ${r.perEpisode.cacheWriteTokens.toFixed(0)} | ${r.perEpisode.cacheReadTokens.toFixed(0)} | ${r.perEpisode.outputTokens.toFixed(0)} | ${(r.cacheReadShare * 100).toFixed(1)} % | $${r.perEpisode.costUsd.toFixed(4)} | $${r.totals.costUsd.toFixed(3)} |`;
console.log(`Claude scene economy, ${EPISODES} episodes, ${MODEL} prices (per episode)\n`);
console.log('| schedule | input | cache write | cache read | output | cache-read share | cost/episode | cost/50 |');
console.log('|---|---|---|---|---|---|---|---|');
console.log(row('every 4 min (within 5 m TTL)', withinTtl));
console.log(row('every 60 min (TTL expired)', hourly));
