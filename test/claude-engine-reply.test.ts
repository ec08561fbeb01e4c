/**
 * What the engine makes of a generator's reply: the Claude generator (through the real SDK against the Messages API
 * stand-in) leaves influence ids it was not offered to the engine, which settles them, instead of spending repair
 * turns on them; a scene of white space is repaired, never committed; a third-party generator's delta in input form
 * is read with its defaults, and a malformed one is a typed error; every model call's cost is reported, those of a
 * generation that failed too.
 */
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { ContinuityError, ValidationError } from '../src/core/errors.js';
import { createStoryEngine } from '../src/engine/engine.js';
import type { EngineEvent } from '../src/engine/events.js';
import { createClaudeSceneGenerator } from '../src/generation/claude-scene-generator.js';
import { emptyUsage, type SceneGenerator } from '../src/generation/scene-generator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { defaultStandInReply, startAnthropicStandIn } from '../src/testing/anthropic-server.js';

type Reply = { scene: Record<string, unknown>; delta: Record<string, unknown> };
/** Reshapes the stand-in's valid reply for one test. */
let reshape: (reply: Reply) => void = () => {};
const standIn = await startAnthropicStandIn({
  respond: (request) => {
    const reply = defaultStandInReply(request, 2_000) as Reply;
    reshape(reply);
    return reply;
  },
});
afterAll(() => standIn.close());
afterEach(() => {
  reshape = () => {};
});

function claude(options: { maxRepairAttempts?: number } = {}): SceneGenerator {
  return createClaudeSceneGenerator({
    client: new Anthropic({ apiKey: 'test', baseURL: standIn.url, maxRetries: 0 }),
    model: 'claude-sonnet-4-6',
    maxTokens: 4_000,
    ...options,
  });
}

/** A story with one pending suggestion `tx-1`, behind an engine on `generator`. */
async function storyOn(generator: SceneGenerator, onEvent?: (event: EngineEvent) => void) {
  const store = createMemoryStateStore();
  const context = new ContextManager({
    store,
    vectors: createMemoryVectorIndex({ dimensions: 256 }),
    keywords: createMemoryKeywordIndex(),
    embedder: createHashingEmbedder({ dimensions: 256 }),
  });
  await store.create(createStoryFromTemplate('lighthouse-keepers', 'tale'));
  await store.enqueueInfluence({
    id: 'tx-1',
    storyId: 'tale',
    source: 'web',
    kind: 'suggestion',
    author: 'reader-1',
    choice: null,
    text: 'Let the fog lift over the harbour at dawn.',
    weight: 1,
    receivedAt: '2026-01-01T00:00:00.000Z',
    status: 'pending',
  });
  return { store, engine: createStoryEngine({ store, context, generator, ...(onEvent ? { onEvent } : {}) }) };
}

describe('the Claude generator through the engine', () => {
  it('leaves an influence id it was not offered to the engine, which ignores it: one call, the scene written', async () => {
    reshape = (reply) => {
      reply.delta.influencesApplied = ['tx-1', 'tx-ghost'];
    };
    const { store, engine } = await storyOn(claude());
    const first = standIn.requests.length;
    const result = await engine.runEpisode('tale');
    expect(standIn.requests.length - first).toBe(1);
    expect(result.outcome).toBe('created');
    expect(result.influences?.applied).toEqual(['tx-1']);
    expect(result.influences?.ignored).toEqual(['tx-ghost']);
    expect((await store.getInfluence('tale', 'tx-1'))?.status).toBe('applied');
  });

  it('reads an influence both applied and rejected as applied, as the engine settles it', async () => {
    reshape = (reply) => {
      reply.delta.influencesApplied = ['tx-1'];
      reply.delta.influencesRejected = [{ id: 'tx-1', reason: 'Changed my mind.' }];
    };
    const { engine } = await storyOn(claude());
    const first = standIn.requests.length;
    const result = await engine.runEpisode('tale');
    expect(standIn.requests.length - first).toBe(1);
    expect(result.influences?.applied).toEqual(['tx-1']);
    expect(result.influences?.rejected).toEqual([]);
  });

  it('reports what every call cost, those of a generation that failed too', async () => {
    reshape = (reply) => {
      reply.scene.text = ' ';
    };
    const spent: Array<Extract<EngineEvent, { type: 'generation.usage' }>> = [];
    const { engine } = await storyOn(claude({ maxRepairAttempts: 1 }), (event) => {
      if (event.type === 'generation.usage') spent.push(event);
    });
    await expect(engine.runEpisode('tale')).rejects.toThrow(ValidationError);
    expect(spent.map((event) => event.attempt)).toEqual([1, 2]);
    for (const event of spent) {
      expect(event.usage.inputTokens).toBeGreaterThan(0);
      expect(event.usage.costUsd).toBeGreaterThan(0);
    }
    // A generation that succeeds reports the same calls its result sums.
    reshape = () => {};
    spent.length = 0;
    const result = await engine.runEpisode('tale');
    expect(spent).toHaveLength(1);
    expect(spent[0]!.usage).toEqual(result.usage);
  });

  it('never commits a scene whose text is only white space', async () => {
    reshape = (reply) => {
      reply.scene.text = ' \n\n \t ';
    };
    const { store, engine } = await storyOn(claude({ maxRepairAttempts: 0 }));
    const error = await engine.runEpisode('tale').catch((caught: unknown) => caught);
    expect(ValidationError.isInstance(error)).toBe(true);
    expect((error as ValidationError).problems.map((problem) => problem.path)).toContain('scene.text');
    expect((await store.load('tale')).sceneCount).toBe(0);
  });
});

describe('a third-party generator', () => {
  function returning(delta: unknown): SceneGenerator {
    return {
      specificationVersion: 'v1',
      provider: 'third-party',
      modelId: 'third-party-1',
      generate: async () => ({
        scene: { title: 'Dawn', text: 'The sun rose over the lamp.' } as never,
        delta: delta as never,
        usage: emptyUsage(),
        modelId: 'third-party-1',
        attempts: 1,
      }),
    };
  }

  it('may leave out the delta lists it does not use: they read as empty', async () => {
    const { store, engine } = await storyOn(returning({}));
    const result = await engine.runEpisode('tale');
    expect(result.outcome).toBe('created');
    expect((await store.load('tale')).sceneCount).toBe(1);
    // Not taken up by the narrator: rejected with the default reason, not left pending.
    expect((await store.getInfluence('tale', 'tx-1'))?.status).toBe('rejected');
  });

  it('gets a ContinuityError naming the malformed delta, and nothing is committed', async () => {
    const { store, engine } = await storyOn(returning({ influencesRejected: [null], charactersIntroduced: 'x' }));
    const error = await engine.runEpisode('tale').catch((caught: unknown) => caught);
    expect(ContinuityError.isInstance(error)).toBe(true);
    expect((error as ContinuityError).issues.every((issue) => issue.code === 'INVALID_DELTA')).toBe(true);
    expect((error as ContinuityError).issues.length).toBeGreaterThan(0);
    expect((await store.load('tale')).sceneCount).toBe(0);
    expect((await store.getInfluence('tale', 'tx-1'))?.status).toBe('pending');
  });
});
