/**
 * Claude on Bedrock with the generator's default, streaming: the real `AnthropicBedrock` client against the Bedrock
 * stand-in's `InvokeModelWithResponseStream`, which frames each Messages event as an AWS event-stream `chunk` and
 * ends a faulty stream with an `exception` message, as the service does.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ProviderError, RetryError } from '../src/core/errors.js';
import { createBedrockSceneGenerator } from '../src/generation/bedrock.js';
import { type BedrockStandIn, startBedrockStandIn } from '../src/testing/bedrock-server.js';
import { openingSceneRequest } from './support/scene-request.js';

const MODEL = 'global.anthropic.claude-sonnet-4-6';

let standIn: BedrockStandIn;
beforeAll(async () => {
  standIn = await startBedrockStandIn({ claude: { usage: () => ({ cache_read_input_tokens: 120 }) } });
});
afterAll(async () => {
  await standIn.close();
});
beforeEach(() => standIn.reset());

/** The generator as a user builds it: no `stream` option, so it streams. */
function generator(model = MODEL) {
  return createBedrockSceneGenerator({
    model,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    baseURL: standIn.url,
    retry: { maxRetries: 2, initialDelayMs: 0, maxDelayMs: 0 },
  });
}

describe('Claude on Bedrock, streamed (the default)', () => {
  it('writes a scene through InvokeModelWithResponseStream, with the body Bedrock takes', async () => {
    const result = await generator().generate(openingSceneRequest());
    expect(result.scene.title).toBe('The Next Scene');
    expect(result.scene.text).toMatch(/^The lamp turned above the sleeping island/);
    expect(result.usage.cacheReadTokens).toBe(120);
    expect(result.usage.outputTokens).toBeGreaterThan(0);
    expect(standIn.requests).toHaveLength(1);
    const sent = standIn.requests[0]!;
    expect(sent).toMatchObject({ modelId: MODEL, operation: 'InvokeModelWithResponseStream', status: 200 });
    expect(sent.body).toMatchObject({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 16_000 });
    expect(sent.body).not.toHaveProperty('model');
    expect(sent.body).not.toHaveProperty('stream');
  });

  it('retries a stream that a throttlingException cuts after a few chunks, then writes the scene', async () => {
    standIn.scheduleErrors([{ fault: 'stream-throttling', afterChunks: 3 }]);
    const result = await generator().generate(openingSceneRequest());
    expect(result.scene.text.length).toBeGreaterThan(0);
    expect(standIn.requests.map((request) => [request.operation, request.fault])).toEqual([
      ['InvokeModelWithResponseStream', 'stream-throttling'],
      ['InvokeModelWithResponseStream', undefined],
    ]);
  });

  it.each(['stream-model-stream-error', 'stream-internal'] as const)('retries a stream cut by %s', async (fault) => {
    standIn.scheduleErrors([fault]);
    await generator().generate(openingSceneRequest());
    expect(standIn.requests.map((request) => request.fault)).toEqual([fault, undefined]);
  });

  it('gives up on a mid-stream validationException at once, naming it and the request id', async () => {
    standIn.scheduleErrors(['stream-validation']);
    const error = await generator()
      .generate(openingSceneRequest())
      .catch((caught: unknown) => caught);
    expect(ProviderError.isInstance(error), String(error)).toBe(true);
    const provider = error as ProviderError;
    expect(provider.isRetryable).toBe(false);
    expect(provider.message).toContain('validationException');
    expect(provider.message).toContain('Input is too long for requested model.');
    expect(provider.message).toContain(`request-id ${standIn.requests[0]!.requestId}`);
    expect(standIn.requests).toHaveLength(1);
  });

  it('retries a throttled stream request (429 before the stream), then writes the scene', async () => {
    standIn.scheduleErrors(['throttling']);
    await generator().generate(openingSceneRequest());
    expect(standIn.requests.map((request) => request.status)).toEqual([429, 200]);
  });

  it('does not retry a model id Bedrock does not know (400 ValidationException)', async () => {
    const error = await generator('moon.anthropic.claude-sonnet-4-6')
      .generate(openingSceneRequest())
      .catch((caught: unknown) => caught);
    const last = RetryError.isInstance(error) ? error.errors.at(-1) : error;
    expect(ProviderError.isInstance(last) && last.status).toBe(400);
    expect(standIn.requests).toHaveLength(1);
  });
});
