/**
 * `storyloom/anthropic` factories: the SDK client they create talks to the stand-in; the summarizer and the exact
 * token counter work over the real protocol.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProviderError, RetryError } from '../core/errors.js';
import { type AnthropicStandIn, startAnthropicStandIn } from '../testing/anthropic-server.js';
import { makeStoryState } from '../testing/fixtures.js';
import { createAnthropicSceneGenerator, createAnthropicSummarizer, createAnthropicTokenizer } from './anthropic.js';

let standIn: AnthropicStandIn;
beforeAll(async () => {
  standIn = await startAnthropicStandIn({
    respond: (request) =>
      request.body.output_config
        ? { scene: { title: 'Fog', text: 'The fog came in.' }, delta: {} }
        : 'Mira and Tobin kept the lamp lit while the island drifted north.',
  });
});
afterAll(() => standIn.close());

const connection = () => ({ apiKey: 'test-key', baseURL: standIn.url });

describe('createAnthropicSceneGenerator', () => {
  it('creates the SDK client on first use, with its own retries off', async () => {
    const generator = createAnthropicSceneGenerator({ ...connection(), model: 'claude-sonnet-4-6' });
    expect(generator.provider).toBe('anthropic');
    const state = makeStoryState('fog');
    const result = await generator.generate({
      storyId: 'fog',
      sceneId: 'scene-1',
      sceneIndex: 0,
      chapterId: state.chapterId,
      state,
      prompt: { stable: 'Bible.', dynamic: 'Write.' },
      influences: [],
      seed: 1,
    });
    expect(result.scene.title).toBe('Fog');
    expect(standIn.requests.at(-1)!.headers.authorization).toBe('Bearer test-key');
    // One request although the client was created lazily: no SDK retry layered under storyloom's.
    standIn.requests.length = 0;
    standIn.scheduleErrors(['server-error']);
    const failing = createAnthropicSceneGenerator({
      ...connection(),
      model: 'claude-sonnet-4-6',
      retry: { maxRetries: 0 },
    });
    const error = await failing
      .generate({
        storyId: 'fog',
        sceneId: 'scene-1',
        sceneIndex: 0,
        chapterId: state.chapterId,
        state,
        prompt: { stable: 'Bible.', dynamic: 'Write.' },
        influences: [],
        seed: 1,
      })
      .catch((caught: unknown) => caught);
    expect(RetryError.isInstance(error)).toBe(true);
    const last = (error as RetryError).errors.at(-1);
    expect(ProviderError.isInstance(last) && last.status).toBe(500);
    expect(standIn.requests).toHaveLength(1);
  });
});

describe('createAnthropicSummarizer', () => {
  it('summarizes on its own model and returns the text', async () => {
    const summarizer = createAnthropicSummarizer({ ...connection(), model: 'claude-haiku-4-5' });
    const summary = await summarizer.summarize(['Scene one.', 'Scene two.'], { maxWords: 50, focus: 'the lamp' });
    expect(summary).toBe('Mira and Tobin kept the lamp lit while the island drifted north.');
    const sent = standIn.requests.at(-1)!.body;
    expect(sent.model).toBe('claude-haiku-4-5');
    expect(sent.messages[0].content).toContain('<text index="2">\nScene two.\n</text>');
    expect(sent.messages[0].content).toContain('at most 50 words');
  });
});

describe('per-attempt bounds', () => {
  it('reach the summarizer, the token counter and the scene generator, checked at construction', () => {
    // Given through the factories, an out-of-range bound is refused: it was handed to what applies it.
    expect(() => createAnthropicSummarizer({ ...connection(), model: 'claude-haiku-4-5', timeoutMs: 0 })).toThrow(
      /timeoutMs/,
    );
    expect(() => createAnthropicTokenizer({ ...connection(), model: 'claude-sonnet-4-6', timeoutMs: 0 })).toThrow(
      /timeoutMs/,
    );
    expect(() =>
      createAnthropicSceneGenerator({ ...connection(), model: 'claude-sonnet-4-6', stream: false, replyTimeoutMs: 0 }),
    ).toThrow(/replyTimeoutMs/);
  });
});

describe('createAnthropicTokenizer', () => {
  it('counts exactly through count_tokens and remembers the count for the synchronous count', async () => {
    const tokenizer = createAnthropicTokenizer({ ...connection(), model: 'claude-sonnet-4-6' });
    const text = 'The lamp must never go dark. '.repeat(40);
    const estimate = tokenizer.count(text);
    const exact = await tokenizer.countTokensExact(text);
    expect(standIn.requests.at(-1)!.path).toBe('/v1/messages/count_tokens');
    expect(exact).toBe(Math.ceil(text.length / 4));
    expect(estimate).toBeGreaterThanOrEqual(exact);
    expect(tokenizer.count(text)).toBe(exact);
    const requestsBefore = standIn.requests.length;
    await tokenizer.countTokensExact(text);
    expect(standIn.requests).toHaveLength(requestsBefore);
  });
});
