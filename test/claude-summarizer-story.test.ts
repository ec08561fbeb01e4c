/**
 * The Claude summarizer and token counter in a story: a chapter-closing scene whose summary holds a lone surrogate
 * does not stop the story, and an unwarmed Claude counter keeps a CJK prompt within its budget.
 */
import Anthropic from '@anthropic-ai/sdk';
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createEstimatingTokenizer } from '../src/context/estimating-tokenizer.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import type { ClaudeClient } from '../src/generation/claude-scene-generator.js';
import { createClaudeSummarizer, createClaudeTokenCounter } from '../src/generation/claude-summarizer.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { startAnthropicStandIn } from '../src/testing/anthropic-server.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { createMockSceneGenerator } from '../src/testing/mock-generators.js';
import { newWorldStore, STORY_ID } from './fixtures/engine-world.js';

describe('a story summarized by Claude', () => {
  it('keeps going when a chapter-closing scene summary holds a lone surrogate', async () => {
    // The stand-in refuses a body holding a lone surrogate as the API does: 400, not retryable. Sent as it is, the
    // chapter summary would fail the index step, and every later run would resume that step and fail again.
    const standIn = await startAnthropicStandIn({ respond: () => 'The keepers kept the lamp.' });
    try {
      const { store, clock } = await newWorldStore();
      const context = new ContextManager({
        store,
        vectors: createMemoryVectorIndex({ dimensions: 64 }),
        keywords: createMemoryKeywordIndex(),
        embedder: createHashingEmbedder({ dimensions: 64 }),
        summarizer: createClaudeSummarizer({
          client: new Anthropic({ apiKey: 'test', baseURL: standIn.url, maxRetries: 0 }),
          model: 'claude-haiku-4-5',
          retry: { maxRetries: 0 },
        }),
      });
      // A user's own generator (schema-valid output) closes a chapter with every scene; the first summary ends in
      // half an emoji, as text clipped by code units leaves it.
      const generator = createMockSceneGenerator({
        respond: (request) => ({
          scene: {
            title: `Night ${request.sceneIndex + 1}`,
            text: 'Mira and Tobin kept the lamp.',
            summary: request.sceneIndex === 0 ? 'Mira saw the lamp \ud83d' : 'Tobin counted ships.',
          },
          delta: { chapterClosed: { summary: 'A night ends.' } },
        }),
      });
      const engine = createStoryEngine({ store, context, generator, clock, retry: { initialDelayMs: 0 } });
      const outcomes: string[] = [];
      for (let run = 0; run < 3; run++) {
        const result = await engine.runEpisode(STORY_ID).catch((error: unknown) => error as { outcome?: string });
        outcomes.push(String(result.outcome));
      }
      expect(outcomes).toEqual(['created', 'created', 'created']);
      expect((await store.load(STORY_ID)).sceneCount).toBe(3);
      const summarized = standIn.requests.map((request) => String(request.body.messages[0].content));
      expect(summarized.some((content) => content.includes('Mira saw the lamp \uFFFD'))).toBe(true);
    } finally {
      await standIn.close();
    }
  });

  it('keeps a CJK prompt within its budget with an unwarmed Claude token counter', async () => {
    // count_tokens is never called here: every count is the counter's fallback.
    const client: ClaudeClient = {
      messages: {
        create: () => Promise.reject(new Error('not used')),
        stream: () => {
          throw new Error('not used');
        },
        countTokens: () => Promise.reject(new Error('not used')),
      },
    };
    const tokenizer = createClaudeTokenCounter({ client, model: 'claude-sonnet-4-6' });
    const line = '灯台の光は決して消えてはならない。島は毎晩北へ一マイル流れる。';
    const base = makeStoryState('tale');
    const characters = Object.fromEntries(
      ['mira', 'tobin', 'wren', 'ash', 'lark'].map((id) => [
        id,
        { ...base.characters.mira!, id, name: `Keeper ${id}`, role: 'main' as const, description: line.repeat(25) },
      ]),
    );
    const rule = line.repeat(12).slice(0, 400);
    const store = createMemoryStateStore();
    await store.create(
      makeStoryState('tale', {
        characters,
        bible: { ...base.bible, worldRules: Array.from({ length: 40 }, () => rule) },
      }),
    );
    const manager = new ContextManager({
      store,
      vectors: createMemoryVectorIndex({ dimensions: 64 }),
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions: 64 }),
      tokenizer,
    });
    const budget = 8_000;
    const bundle = await manager.getRelevantContext('tale', 'the lamp', { tokenBudget: budget });
    expect(bundle.tokens.total).toBeLessThanOrEqual(budget);
    // Claude spends about a token per CJK character, as the offline estimate counts it.
    expect(createEstimatingTokenizer().count(`${bundle.prompt.stable}${bundle.prompt.dynamic}`)).toBeLessThanOrEqual(
      budget,
    );
  });
});
