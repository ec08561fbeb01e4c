/**
 * An episode through the engine, the ContextManager's layout and the Claude scene generator (against the Messages
 * API stand-in) shows each audience influence to the model exactly once: the layout's "Audience input" lines carry
 * them, and the generator's own audience block adds only what the token budget cut.
 */
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createClaudeSceneGenerator } from '../src/generation/claude-scene-generator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { defaultStandInReply, startAnthropicStandIn } from '../src/testing/anthropic-server.js';

const standIn = await startAnthropicStandIn({ respond: (request) => defaultStandInReply(request, 2_000) });
afterAll(() => standIn.close());

const SUGGESTIONS = [
  'Let the fog lift over the harbour at dawn, so that the keepers finally see what the island has been hiding.',
  'Mira should finally open the sealed letter from her mother and read it aloud to Tobin in the lamp room.',
  'Bring back the gull that talks, and let it warn the keepers about the ship that is coming in the night.',
];

/** The text the model reads: every system block and every message block. */
function sentText(body: { system?: Array<{ text: string }>; messages: Array<{ content: Array<{ text?: string }> }> }) {
  return [
    ...(body.system ?? []).map((block) => block.text),
    ...body.messages.flatMap((message) => message.content.map((block) => block.text ?? '')),
  ].join('\n');
}

describe('audience influence in a Claude request', () => {
  it('appears once per influence, with room for all of it or not', async () => {
    for (const roomy of [true, false]) {
      const first = standIn.requests.length;
      const store = createMemoryStateStore();
      const context = new ContextManager({
        store,
        vectors: createMemoryVectorIndex({ dimensions: 256 }),
        keywords: createMemoryKeywordIndex(),
        embedder: createHashingEmbedder({ dimensions: 256 }),
        // Without room: the smallest dynamic part the manager allows, so the budget must cut audience input.
        ...(roomy ? {} : { minDynamicTokens: 64, dynamicRatio: 0.01 }),
      });
      const generator = createClaudeSceneGenerator({
        client: new Anthropic({ apiKey: 'test', baseURL: standIn.url, maxRetries: 0 }),
        model: 'claude-sonnet-4-6',
        maxTokens: 4_000,
      });
      const engine = createStoryEngine({ store, context, generator });
      await store.create(createStoryFromTemplate('lighthouse-keepers', 'tale'));
      for (const [i, text] of SUGGESTIONS.entries()) {
        await store.enqueueInfluence({
          id: `tx-${i}`,
          storyId: 'tale',
          source: 'web',
          kind: 'suggestion',
          author: `reader-${i}`,
          choice: null,
          text,
          weight: 1,
          receivedAt: new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString(),
          status: 'pending',
        });
      }
      await engine.runEpisode('tale');
      expect(standIn.requests.length).toBeGreaterThan(first);
      const text = sentText(standIn.requests[first]!.body);
      for (const suggestion of SUGGESTIONS) {
        const quoted = JSON.stringify(suggestion);
        expect(text.split(quoted).length - 1, `${suggestion} (${roomy ? 'room' : 'no room'})`).toBe(1);
      }
      // Both paths are taken: with room, the layout shows them all; without, it cuts some, which the generator's
      // block carries instead.
      const block = /<audience_influence>\n([\s\S]*?)\n<\/audience_influence>/.exec(text)?.[1];
      const carried = block ? block.split('\n').length : 0;
      if (roomy) expect(carried).toBe(0);
      else expect(carried).toBeGreaterThan(0);
    }
  });
});
