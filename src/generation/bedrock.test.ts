/**
 * The Bedrock adapters against the local Bedrock stand-in, through the real `@aws-sdk/client-bedrock-runtime`
 * client over HTTP/1.1.
 */
import AnthropicBedrock from '@anthropic-ai/bedrock-sdk';
import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openingSceneRequest } from '../../test/support/scene-request.js';
import { embedInBatches } from '../context/embedder.js';
import { AbortedError, ContentFilteredError, ProviderError, RetryError, ValidationError } from '../core/errors.js';
import { type BedrockStandIn, startBedrockStandIn } from '../testing/bedrock-server.js';
import { ManualClock } from '../testing/manual-clock.js';
import { createBedrockEmbedder, createBedrockImageGenerator, createBedrockSceneGenerator } from './bedrock.js';
import { createClaudeSceneGenerator } from './claude-scene-generator.js';
import type { ImageRequest } from './image-generator.js';
import { seedFromSceneId } from './image-prompt.js';

let standIn: BedrockStandIn;

beforeAll(async () => {
  standIn = await startBedrockStandIn();
});
afterAll(async () => {
  await standIn.close();
});
beforeEach(() => {
  standIn.reset();
});

/** How every test reaches the stand-in: fake credentials, HTTP/1.1, and no backoff delays. */
function connection() {
  return {
    region: 'us-east-1',
    clientConfig: {
      endpoint: standIn.url,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      requestHandler: new NodeHttpHandler(),
    },
    retry: { initialDelayMs: 0, maxDelayMs: 0 },
  };
}

/**
 * Resolves `pending` while waking every retry wait on `clock` as soon as one is asked for: the HTTP round trips run
 * for real, the backoff does not.
 */
async function withManualTime<T>(clock: ManualClock, pending: Promise<T>): Promise<T> {
  let settled = false;
  pending.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  while (!settled) {
    if (clock.pendingSleeps > 0) await clock.runAll();
    else await new Promise((resolve) => setImmediate(resolve));
  }
  return pending;
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let normA = 0;
  let normB = 0;
  for (let index = 0; index < a.length; index++) {
    dot += a[index]! * b[index]!;
    normA += a[index]! * a[index]!;
    normB += b[index]! * b[index]!;
  }
  return dot / Math.sqrt(normA * normB);
}

describe('createBedrockEmbedder: construction', () => {
  it('rejects a Titan V2 dimension the model cannot produce', () => {
    expect(() => createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', dimensions: 1536 })).toThrow(
      ValidationError,
    );
  });

  it('accepts each dimension Titan V2 and Cohere v4 document, and only 1536 for Titan G1', () => {
    for (const dimensions of [256, 512, 1024]) {
      expect(createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', dimensions }).dimensions).toBe(dimensions);
    }
    for (const dimensions of [256, 512, 1024, 1536]) {
      expect(createBedrockEmbedder({ model: 'cohere.embed-v4:0', dimensions }).dimensions).toBe(dimensions);
    }
    expect(createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1' }).dimensions).toBe(1536);
    expect(() => createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1', dimensions: 1024 })).toThrow(
      ValidationError,
    );
    expect(() => createBedrockEmbedder({ model: 'cohere.embed-v4:0', dimensions: 768 })).toThrow(ValidationError);
  });

  it('rejects, at construction, an embedder whose dimension does not match the index', () => {
    let caught: unknown;
    try {
      // Titan V2's default is 1024; the reference Pinecone index is 1536.
      createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', expectedDimensions: 1536 });
    } catch (error) {
      caught = error;
    }
    expect(ValidationError.isInstance(caught)).toBe(true);
    const problems = (caught as ValidationError).problems;
    expect(problems.map((problem) => problem.path)).toEqual(['expectedDimensions']);
    expect(problems[0]!.message).toContain('cannot produce 1536');
    expect(
      createBedrockEmbedder({ model: 'cohere.embed-v4:0', dimensions: 1536, expectedDimensions: 1536 }).dimensions,
    ).toBe(1536);
  });

  it('lists every problem of the options at once', () => {
    let caught: unknown;
    try {
      createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1', dimensions: 512, concurrency: 0, truncate: 'LEFT' });
    } catch (error) {
      caught = error;
    }
    expect((caught as ValidationError).problems.map((problem) => problem.path)).toEqual([
      'dimensions',
      'concurrency',
      'truncate',
    ]);
  });

  it('refuses a truncate value Cohere Embed v4 does not take (v3’s START and END), and takes NONE, LEFT and RIGHT', () => {
    for (const truncate of ['END', 'START', 'right']) {
      let caught: unknown;
      try {
        createBedrockEmbedder({ model: 'cohere.embed-v4:0', truncate: truncate as never });
      } catch (error) {
        caught = error;
      }
      expect(ValidationError.isInstance(caught), truncate).toBe(true);
      expect((caught as ValidationError).problems.map((problem) => problem.path)).toEqual(['truncate']);
    }
    for (const truncate of ['NONE', 'LEFT', 'RIGHT'] as const) {
      expect(createBedrockEmbedder({ model: 'cohere.embed-v4:0', truncate }).modelId).toBe('cohere.embed-v4:0');
    }
  });

  it('refuses a timeoutMs that is not a number of milliseconds from 1 to 2,147,483,647', () => {
    for (const timeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2_147_483_648, '100' as never]) {
      expect(() => createBedrockEmbedder({ model: 'cohere.embed-v4:0', timeoutMs }), String(timeoutMs)).toThrow(
        /timeoutMs must be a number of milliseconds/,
      );
      expect(() => createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', timeoutMs })).toThrow(
        ValidationError,
      );
      expect(() => createBedrockSceneGenerator({ model: 'us.anthropic.claude-sonnet-4-5', timeoutMs })).toThrow(
        ValidationError,
      );
    }
    expect(createBedrockEmbedder({ model: 'cohere.embed-v4:0', timeoutMs: 2_147_483_647 }).dimensions).toBe(1536);
  });

  it('declares what one embed() call accepts', () => {
    expect(createBedrockEmbedder({ model: 'cohere.embed-v4:0' }).maxBatchSize).toBe(96);
    expect(createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1' }).maxBatchSize).toBe(128);
  });
});

describe('createBedrockEmbedder: round trips', () => {
  it('Titan G1 returns one 1536-dimension vector per text, equal texts giving equal vectors', async () => {
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1', ...connection() });
    const [a, b, c] = await embedder.embed(['the lighthouse keeper', 'a storm at sea', 'the lighthouse keeper']);
    expect(a).toBeInstanceOf(Float32Array);
    expect(a!.length).toBe(1536);
    expect(Array.from(c!)).toEqual(Array.from(a!));
    expect(cosine(a!, b!)).toBeLessThan(0.9);
    expect(standIn.requests.map((request) => request.body)).toEqual([
      { inputText: 'the lighthouse keeper' },
      { inputText: 'a storm at sea' },
      { inputText: 'the lighthouse keeper' },
    ]);
  });

  it('Titan V2 sends the configured dimensions and gets vectors of that size', async () => {
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', dimensions: 512, ...connection() });
    const [vector] = await embedder.embed(['Mara climbs the stairs']);
    expect(vector!.length).toBe(512);
    expect(standIn.requests[0]!.modelId).toBe('amazon.titan-embed-text-v2:0');
    expect(standIn.requests[0]!.body).toEqual({
      inputText: 'Mara climbs the stairs',
      dimensions: 512,
      normalize: true,
    });
  });

  it('Cohere v4 embeds documents and queries with their own input types and output_dimension', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', dimensions: 1024, ...connection() });
    const [document] = await embedder.embed(['the lamp went dark'], { inputType: 'document' });
    const [query] = await embedder.embed(['the lamp went dark'], { inputType: 'query' });
    const [defaulted] = await embedder.embed(['the lamp went dark']);
    expect(document!.length).toBe(1024);
    expect(Array.from(query!)).not.toEqual(Array.from(document!));
    expect(Array.from(defaulted!)).toEqual(Array.from(document!));
    const sent = (inputType: string) => ({
      texts: ['the lamp went dark'],
      input_type: inputType,
      embedding_types: ['float'],
      output_dimension: 1024,
      truncate: 'RIGHT',
    });
    expect(standIn.requests.map((request) => request.body)).toEqual([
      sent('search_document'),
      sent('search_query'),
      sent('search_document'),
    ]);
  });

  it('Cohere v4 splits 200 texts into calls of 96, 96 and 8, in order', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', ...connection() });
    const texts = Array.from({ length: 200 }, (_, index) => `scene number ${index}`);
    const vectors = await embedInBatches(embedder, texts, { inputType: 'query' });
    expect(vectors).toHaveLength(200);
    const bodies = standIn.requests.map((request) => request.body as { texts: string[]; input_type: string });
    expect(bodies.map((body) => body.texts.length)).toEqual([96, 96, 8]);
    expect(bodies.every((body) => body.input_type === 'search_query')).toBe(true);
    expect(bodies[2]!.texts[7]).toBe('scene number 199');
    // The 150th vector is the one of the 150th text: embedding it alone gives the same values.
    const [alone] = await embedder.embed(['scene number 150'], { inputType: 'query' });
    expect(Array.from(vectors[150]!)).toEqual(Array.from(alone!));
  });

  it('rejects more texts than maxBatchSize, and empty texts, before any call', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', ...connection() });
    await expect(embedder.embed(Array.from({ length: 97 }, () => 'x'))).rejects.toThrow(ValidationError);
    await expect(embedder.embed(['fine', '  '])).rejects.toThrow(/texts\.1 must be a non-empty string/);
    expect(standIn.requests).toHaveLength(0);
    expect(await embedder.embed([])).toEqual([]);
  });

  it('Cohere v4 through an inference profile: sent under the profile id, read with the model’s settings', async () => {
    for (const model of ['us.cohere.embed-v4:0', 'eu.cohere.embed-v4:0', 'global.cohere.embed-v4:0'] as const) {
      const embedder = createBedrockEmbedder({ model, dimensions: 512, ...connection() });
      expect(embedder.maxBatchSize).toBe(96);
      const [vector] = await embedder.embed(['the lamp'], { inputType: 'query' });
      expect(vector!.length).toBe(512);
      // The model that makes the vectors, not the route: an index's fingerprint names it, so moving to a profile
      // of the same model rebuilds nothing.
      expect(embedder.modelId).toBe('cohere.embed-v4:0');
    }
    expect(standIn.requests.map((request) => [request.modelId, request.status])).toEqual([
      ['us.cohere.embed-v4:0', 200],
      ['eu.cohere.embed-v4:0', 200],
      ['global.cohere.embed-v4:0', 200],
    ]);
    expect(() => createBedrockEmbedder({ model: 'us.amazon.titan-embed-text-v2:0' as never })).toThrow(ValidationError);
  });

  it('Cohere v4 splits a batch whose body would pass 25,000,000 bytes, keeping the order of the vectors', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', dimensions: 256, ...connection() });
    const texts = Array.from({ length: 96 }, (_, index) =>
      `scene ${index} `.padEnd(300_000, 'the keeper lit the lamp '),
    );
    const vectors = await embedder.embed(texts);
    expect(vectors).toHaveLength(96);
    const sizes = standIn.requests.map((request) => Buffer.byteLength(JSON.stringify(request.body)));
    expect(sizes.length).toBeGreaterThan(1);
    expect(sizes.every((size) => size <= 25_000_000)).toBe(true);
    expect(standIn.requests.every((request) => request.status === 200)).toBe(true);
    const sent = standIn.requests.flatMap((request) => (request.body as { texts: string[] }).texts);
    expect(sent).toEqual(texts);
    const [last] = await embedder.embed([texts[95]!]);
    expect(Array.from(vectors[95]!)).toEqual(Array.from(last!));
  }, 60_000);

  it('Cohere v4 sends a batch whose body is exactly 25,000,000 bytes in one request, and splits one a byte longer', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', dimensions: 256, ...connection() });
    const frame = Buffer.byteLength(
      JSON.stringify({
        texts: [],
        input_type: 'search_document',
        embedding_types: ['float'],
        output_dimension: 256,
        truncate: 'RIGHT',
      }),
    );
    // Two texts, each with its quotes, and the comma between them fill the body to the limit.
    const characters = 25_000_000 - frame - 1 - 4;
    const first = 'a'.repeat(Math.floor(characters / 2));
    const second = 'b'.repeat(characters - first.length);
    const bodySizes = () => standIn.requests.map((request) => Buffer.byteLength(JSON.stringify(request.body)));

    await embedder.embed([first, second]);
    expect(bodySizes()).toEqual([25_000_000]);
    expect(standIn.requests[0]!.status).toBe(200);

    standIn.reset();
    await embedder.embed([first, `${second}b`]);
    expect(standIn.requests.map((request) => (request.body as { texts: string[] }).texts.length)).toEqual([1, 1]);
    expect(standIn.requests.every((request) => request.status === 200)).toBe(true);
  }, 60_000);
});

describe('createBedrockEmbedder: texts longer than the model takes', () => {
  const segmenter = new Intl.Segmenter('en', { granularity: 'grapheme' });

  /** The one text the stand-in received, checked to be a start of `text` cut between two grapheme clusters. */
  function sentPrefixOf(text: string): string {
    expect(standIn.requests).toHaveLength(1);
    expect(standIn.requests[0]!.status).toBe(200);
    const sent = (standIn.requests[0]!.body as { inputText: string }).inputText;
    expect(text.startsWith(sent)).toBe(true);
    expect(sent.length).toBeGreaterThan(0);
    expect(segmenter.segment(text).containing(sent.length)?.index).toBe(sent.length);
    return sent;
  }

  it.each(['amazon.titan-embed-text-v1', 'amazon.titan-embed-text-v2:0'] as const)(
    '%s embeds the start of a 100,000-character text instead of failing',
    async (model) => {
      const text = 'The keeper lit the lamp and wrote the storm into the log. '.repeat(1_720); // ~100,000 characters
      const embedder = createBedrockEmbedder({ model, ...connection() });
      const [vector] = await embedder.embed([text]);
      expect(vector!.length).toBe(embedder.dimensions);
      const sent = sentPrefixOf(text);
      expect(sent.length).toBeLessThan(text.length);
      expect(sent.length).toBeLessThanOrEqual(50_000);
      // The same start, sent alone, gives the same vector: the clipped text is what was embedded.
      standIn.reset();
      const [again] = await embedder.embed([sent]);
      expect(Array.from(again!)).toEqual(Array.from(vector!));
      expect((standIn.requests[0]!.body as { inputText: string }).inputText).toBe(sent);
    },
  );

  it('sends a text Titan takes as it is', async () => {
    const text = 'A storm at sea. '.repeat(200);
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', ...connection() });
    await embedder.embed([text]);
    expect((standIn.requests[0]!.body as { inputText: string }).inputText).toBe(text);
  });

  it('counts every character outside ASCII as at least a token, so a CJK text stays within 8,192 tokens', async () => {
    const text = '灯台守は嵐の夜に灯りをともした。'.repeat(2_000); // 32,000 characters, each about a token
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', ...connection() });
    await embedder.embed([text]);
    expect(sentPrefixOf(text).length).toBeLessThan(8_192);
  });

  it('counts digits and punctuation as a token each', async () => {
    const text = '1,2;3.4!5?'.repeat(2_000); // 20,000 characters, all of them tokens on their own
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', ...connection() });
    await embedder.embed([text]);
    expect(sentPrefixOf(text).length).toBeLessThan(8_192);
  });

  it('counts a character outside the Basic Multilingual Plane (most emoji) as two tokens', async () => {
    const text = '🐉'.repeat(30_000); // 60,000 code units, each emoji at least two tokens
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', ...connection() });
    await embedder.embed([text]);
    expect([...sentPrefixOf(text)].length * 2).toBeLessThanOrEqual(8_192);
  });

  it('never splits a surrogate pair or an emoji sequence where it cuts', async () => {
    for (const unit of ['👨‍👩‍👧 ', '🐉', 'é'.normalize('NFD')]) {
      standIn.reset();
      const text = `${'x'.repeat(7)}${unit.repeat(Math.ceil(60_000 / unit.length))}`;
      const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', ...connection() });
      await embedder.embed([text]);
      const sent = sentPrefixOf(text);
      expect(/[\uD800-\uDBFF]$/.test(sent), JSON.stringify(unit)).toBe(false);
    }
  });

  it('Cohere v4 asks the service to drop the end of an over-long text, so it is embedded from its start', async () => {
    const text = 'The keeper lit the lamp. '.repeat(24_000); // 600,000 characters, past v4's 128,000 tokens
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', ...connection() });
    const [vector] = await embedder.embed([text]);
    expect(vector!.length).toBe(1536);
    expect(standIn.requests[0]!.body).toMatchObject({ truncate: 'RIGHT' });
  });

  it('Cohere v4 sends a truncate it was given, and NONE makes an over-long text fail as the service says', async () => {
    const text = 'The keeper lit the lamp. '.repeat(24_000);
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', truncate: 'NONE', ...connection() });
    await expect(embedder.embed([text])).rejects.toSatisfy(
      (error) => ProviderError.isInstance(error) && error.status === 400,
    );
    expect(standIn.requests[0]!.body).toMatchObject({ truncate: 'NONE' });
  });
});

describe('createBedrockEmbedder: answers', () => {
  it('refuses a value beyond float32 range (finite as a double, Infinity once stored) as a ProviderError', async () => {
    const client = new BedrockRuntimeClient({ ...connection().clientConfig, region: 'us-east-1', maxAttempts: 1 });
    const realSend = client.send.bind(client);
    const embedder = createBedrockEmbedder({
      model: 'amazon.titan-embed-text-v2:0',
      dimensions: 256,
      client: {
        send: async (command: unknown, options?: unknown) => {
          const output = (await realSend(command as never, options as never)) as { body: Uint8Array };
          const json = JSON.parse(new TextDecoder().decode(output.body)) as { embedding: number[] };
          json.embedding[3] = 1e39;
          return { ...output, body: new TextEncoder().encode(JSON.stringify(json)) };
        },
      } as unknown as BedrockRuntimeClient,
    });
    await expect(embedder.embed(['the lamp'])).rejects.toSatisfy(
      (error) => ProviderError.isInstance(error) && /embedding\[3\] is 1e\+39/.test(error.message),
    );
  });
});

describe('Bedrock calls that get no answer', () => {
  // The case timeout bounds the hung attempt: far above timeoutMs, far below the 60 s default it would otherwise wait.
  it('times out an attempt after timeoutMs as a retryable ProviderError (TIMEOUT), then retries it', {
    timeout: 5_000,
  }, async () => {
    const retried: unknown[] = [];
    const embedder = createBedrockEmbedder({
      model: 'cohere.embed-v4:0',
      ...connection(),
      retry: { ...connection().retry, onRetry: ({ error }) => retried.push(error) },
      timeoutMs: 100,
    });
    standIn.scheduleErrors(['hang']);
    const [vector] = await embedder.embed(['the lamp']);
    expect(vector!.length).toBe(1536);
    expect(standIn.requests.map((request) => request.fault)).toEqual(['hang', undefined]);
    // Our timer ended the hung attempt, not another one: the error names timeoutMs.
    expect(retried).toHaveLength(1);
    const [timedOut] = retried;
    expect(ProviderError.isInstance(timedOut) && timedOut.code).toBe('TIMEOUT');
    expect((timedOut as ProviderError).isRetryable).toBe(true);
    expect((timedOut as ProviderError).message).toBe('Bedrock cohere.embed-v4:0 did not answer within 100 ms');
  });

  it('gives up with every timed-out attempt once retries run out, for Titan and for pictures', async () => {
    const embedder = createBedrockEmbedder({
      model: 'amazon.titan-embed-text-v2:0',
      ...connection(),
      retry: { maxRetries: 1, initialDelayMs: 0, maxDelayMs: 0 },
      timeoutMs: 80,
    });
    standIn.scheduleErrors(['hang', 'hang']);
    const error = await embedder.embed(['the lamp']).catch((caught: unknown) => caught);
    expect(RetryError.isInstance(error), String(error)).toBe(true);
    for (const attempt of (error as RetryError).errors) {
      expect(ProviderError.isInstance(attempt) && attempt.code).toBe('TIMEOUT');
      expect((attempt as ProviderError).isRetryable).toBe(true);
    }

    const generator = createBedrockImageGenerator({
      model: 'stability.stable-image-core-v1:1',
      ...connection(),
      retry: { maxRetries: 0 },
      timeoutMs: 80,
    });
    standIn.scheduleErrors(['hang']);
    const drawing = await generator
      .generate({ storyId: 's', sceneId: 'scene-1', prompt: 'a lighthouse', seed: 7 })
      .catch((caught: unknown) => caught);
    expect(RetryError.isInstance(drawing), String(drawing)).toBe(true);
    expect(((drawing as RetryError).errors[0] as ProviderError).code).toBe('TIMEOUT');
  });

  it('an abort during a hung call is an AbortedError, not a timeout', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', ...connection(), timeoutMs: 60_000 });
    standIn.scheduleErrors(['hang']);
    const controller = new AbortController();
    const pending = embedder.embed(['the lamp'], { signal: controller.signal });
    while (standIn.requests.length === 0) await new Promise((resolve) => setImmediate(resolve));
    controller.abort();
    await expect(pending).rejects.toSatisfy((error) => AbortedError.isInstance(error));
    expect(standIn.requests).toHaveLength(1);
  });

  it('bounds a Claude call on Bedrock by timeoutMs too', async () => {
    const generator = createBedrockSceneGenerator({
      model: 'us.anthropic.claude-sonnet-4-5-20250929-v1:0',
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      baseURL: standIn.url,
      stream: false,
      retry: { maxRetries: 0 },
      timeoutMs: 150,
    });
    standIn.scheduleErrors(['hang']);
    const error = await generator.generate(openingSceneRequest()).catch((caught: unknown) => caught);
    const last = RetryError.isInstance(error) ? error.errors.at(-1) : error;
    expect(ProviderError.isInstance(last) && last.isRetryable, String(error)).toBe(true);
    expect(standIn.requests.map((request) => request.fault)).toEqual(['hang']);
  }, 5_000);
});

describe('createBedrockEmbedder: Titan fan-out', () => {
  it('keeps at most `concurrency` calls in flight and returns vectors in input order', async () => {
    const slow = await startBedrockStandIn({ latencyMs: 15 });
    try {
      const embedder = createBedrockEmbedder({
        model: 'amazon.titan-embed-text-v1',
        concurrency: 3,
        ...connection(),
        clientConfig: { ...connection().clientConfig, endpoint: slow.url },
      });
      const texts = Array.from({ length: 12 }, (_, index) => `text ${index}`);
      const vectors = await embedder.embed(texts);
      expect(slow.requests).toHaveLength(12);
      expect(slow.maxInFlight).toBe(3);
      const [eleventh] = await embedder.embed(['text 11']);
      expect(Array.from(vectors[11]!)).toEqual(Array.from(eleventh!));
    } finally {
      await slow.close();
    }
  });

  it('stops launching calls after a failure that is not retryable', async () => {
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1', concurrency: 1, ...connection() });
    standIn.scheduleErrors(['validation']);
    await expect(embedder.embed(['a', 'b', 'c', 'd'])).rejects.toSatisfy(
      (error) => ProviderError.isInstance(error) && error.status === 400 && !error.isRetryable,
    );
    expect(standIn.requests).toHaveLength(1);
  });
});

describe('createBedrockEmbedder: failures', () => {
  it('retries throttling, model-not-ready and server errors, then succeeds, waiting on the injected clock', async () => {
    const clock = new ManualClock();
    const embedder = createBedrockEmbedder({
      model: 'cohere.embed-v4:0',
      ...connection(),
      retry: { maxRetries: 4, clock, random: () => 0 },
    });
    standIn.scheduleErrors(['throttling', 'model-not-ready', 'unavailable', 'internal']);
    const [vector] = await withManualTime(clock, embedder.embed(['the tide turns']));
    expect(vector!.length).toBe(1536);
    expect(standIn.requests.map((request) => request.status)).toEqual([429, 429, 503, 500, 200]);
    expect(clock.sleeps).toEqual([500, 1000, 2000, 4000]);
  });

  it('retries a 500 that names no exception of the service (a proxy in the way), then succeeds', async () => {
    const client = new BedrockRuntimeClient({ ...connection().clientConfig, region: 'us-east-1', maxAttempts: 1 });
    const realSend = client.send.bind(client);
    let calls = 0;
    const embedder = createBedrockEmbedder({
      model: 'cohere.embed-v4:0',
      ...connection(),
      client: {
        send: (command: never, options?: never) => {
          calls++;
          if (calls > 1) return realSend(command, options);
          return Promise.reject(
            Object.assign(new Error('Internal Server Error'), {
              name: 'UnknownError',
              $metadata: { httpStatusCode: 500 },
            }),
          );
        },
      } as unknown as BedrockRuntimeClient,
    });
    const [vector] = await embedder.embed(['the tide turns']);
    expect(vector!.length).toBe(1536);
    expect(calls).toBe(2);
  });

  it('honours retry-after from a throttled answer', async () => {
    const clock = new ManualClock();
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1', ...connection(), retry: { clock } });
    standIn.scheduleErrors([{ fault: 'throttling', retryAfterSeconds: 3 }]);
    await withManualTime(clock, embedder.embed(['x']));
    expect(clock.sleeps).toEqual([3000]);
  });

  it('reads a retry-after given as a date on the clock of the retry policy', async () => {
    const clock = new ManualClock();
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1', ...connection(), retry: { clock } });
    const at = new Date(clock.now() + 5_000).toUTCString();
    standIn.scheduleErrors([{ fault: 'throttling', retryAfter: at }]);
    await withManualTime(clock, embedder.embed(['x']));
    expect(clock.sleeps).toEqual([5_000]);
  });

  it('gives up with a RetryError holding every attempt once retries run out', async () => {
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', ...connection() });
    standIn.scheduleErrors(['throttling', 'throttling', 'throttling']);
    const error = await embedder.embed(['x']).catch((caught: unknown) => caught);
    expect(RetryError.isInstance(error)).toBe(true);
    const retryError = error as RetryError;
    expect(retryError.attempts).toBe(3);
    expect(retryError.errors.every((attempt) => ProviderError.isInstance(attempt) && attempt.status === 429)).toBe(
      true,
    );
    expect((retryError.errors[0] as ProviderError).message).toContain('ThrottlingException');
  });

  it('retries a 424 ModelErrorException ("Try your request again"), then succeeds', async () => {
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v2:0', ...connection() });
    standIn.scheduleErrors(['model-error']);
    const [vector] = await embedder.embed(['the lamp']);
    expect(vector!.length).toBe(1024);
    expect(standIn.requests.map((request) => request.status)).toEqual([424, 200]);
  });

  it('does not retry a ServiceQuotaExceededException', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', ...connection() });
    standIn.scheduleErrors(['service-quota']);
    await expect(embedder.embed(['x'])).rejects.toSatisfy(
      (error) =>
        ProviderError.isInstance(error) && !error.isRetryable && /ServiceQuotaExceededException/.test(error.message),
    );
    expect(standIn.requests).toHaveLength(1);
  });

  it('names the request id Bedrock gave the failed call', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', ...connection() });
    standIn.scheduleErrors(['validation']);
    const error = await embedder.embed(['x']).catch((caught: unknown) => caught);
    expect(standIn.requests[0]!.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect((error as ProviderError).message).toContain(`(request-id ${standIn.requests[0]!.requestId})`);
  });

  it('does not retry a ValidationException', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', ...connection() });
    standIn.scheduleErrors(['validation']);
    await expect(embedder.embed(['x'])).rejects.toSatisfy(
      (error) => ProviderError.isInstance(error) && error.status === 400,
    );
    expect(standIn.requests).toHaveLength(1);
  });

  it('turns a body that is not JSON into a ProviderError', async () => {
    const embedder = createBedrockEmbedder({ model: 'amazon.titan-embed-text-v1', ...connection() });
    standIn.scheduleErrors(['malformed-json']);
    await expect(embedder.embed(['x'])).rejects.toSatisfy(
      (error) => ProviderError.isInstance(error) && /not JSON/.test(error.message),
    );
  });

  it('turns a vector of the wrong length into a ProviderError', async () => {
    // The stand-in answers the dimension it is asked for: rewriting the body on its way out makes it answer 256
    // values to an embedder that expects 1536.
    const client = new BedrockRuntimeClient({ ...connection().clientConfig, region: 'us-east-1', maxAttempts: 1 });
    const realSend = client.send.bind(client);
    const embedder = createBedrockEmbedder({
      model: 'cohere.embed-v4:0',
      client: {
        send: (command: { input: { body: string } }, options?: unknown) => {
          const body = JSON.parse(command.input.body) as Record<string, unknown>;
          command.input.body = JSON.stringify({ ...body, output_dimension: 256 });
          return realSend(command as never, options as never);
        },
      } as unknown as BedrockRuntimeClient,
    });
    await expect(embedder.embed(['x'])).rejects.toSatisfy(
      (error) => ProviderError.isInstance(error) && /256 values, expected 1536/.test(error.message),
    );
  });

  it('honours an abort: the call rejects with AbortedError and nothing more is sent', async () => {
    const slow = await startBedrockStandIn({ latencyMs: 200 });
    try {
      const embedder = createBedrockEmbedder({
        model: 'amazon.titan-embed-text-v1',
        concurrency: 1,
        ...connection(),
        clientConfig: { ...connection().clientConfig, endpoint: slow.url },
      });
      const controller = new AbortController();
      const pending = embedder.embed(['a', 'b', 'c'], { signal: controller.signal });
      while (slow.requests.length === 0) await new Promise((resolve) => setImmediate(resolve));
      controller.abort();
      await expect(pending).rejects.toSatisfy((error) => AbortedError.isInstance(error));
      expect(slow.requests).toHaveLength(1);
    } finally {
      await slow.close();
    }
  });

  it('rejects at once when the signal has already fired', async () => {
    const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', ...connection() });
    await expect(embedder.embed(['x'], { signal: AbortSignal.abort() })).rejects.toThrow(AbortedError);
    expect(standIn.requests).toHaveLength(0);
  });
});

describe('createBedrockImageGenerator', () => {
  const request: ImageRequest = {
    storyId: 'lighthouse',
    sceneId: 'scene-0042',
    prompt: 'Mara opens the lighthouse door to a storm',
    style: 'muted watercolour, ink outlines',
    characters: [
      { id: 'mara', name: 'Mara', appearance: 'tall, red scarf, salt-white hair' },
      { id: 'tomas', name: 'Tomas', appearance: 'stooped old keeper, oilskin coat' },
    ],
    seed: seedFromSceneId('scene-0042'),
    aspectRatio: '3:2',
  };

  it.each([
    'stability.sd3-5-large-v1:0',
    'stability.stable-image-core-v1:1',
    'stability.stable-image-ultra-v1:1',
  ] as const)('%s draws a PNG with the style guide, the appearances and the scene seed', async (model) => {
    const generator = createBedrockImageGenerator({ model, negativePrompt: 'text, watermark', ...connection() });
    const image = await generator.generate(request);
    expect(image.mediaType).toBe('image/png');
    expect(Array.from(image.data.slice(0, 4))).toEqual([0x89, 0x50, 0x4e, 0x47]);
    expect({ width: image.width, height: image.height }).toEqual({ width: 8, height: 8 });
    expect(image.seed).toBe(request.seed);
    expect(image.modelId).toBe(model);
    const sent = standIn.requests[0]!;
    expect(sent.modelId).toBe(model);
    const body = sent.body as Record<string, unknown>;
    expect(body).toMatchObject({
      negative_prompt: 'text, watermark',
      aspect_ratio: '3:2',
      seed: seedFromSceneId('scene-0042'),
      output_format: 'png',
    });
    expect(String(body.prompt)).toMatch(/^Style: muted watercolour, ink outlines\./);
    expect(String(body.prompt)).toContain('Mara opens the lighthouse door to a storm');
    expect(String(body.prompt)).toContain('Mara: tall, red scarf, salt-white hair');
    expect(String(body.prompt)).toContain('Tomas: stooped old keeper, oilskin coat');
  });

  it('draws the same picture for the same scene, and a different one for another scene', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', ...connection() });
    const first = await generator.generate(request);
    const again = await generator.generate(request);
    const other = await generator.generate({ ...request, sceneId: 'scene-0043', seed: seedFromSceneId('scene-0043') });
    expect(Buffer.from(again.data).equals(Buffer.from(first.data))).toBe(true);
    expect(Buffer.from(other.data).equals(Buffer.from(first.data))).toBe(false);
  });

  it('uses the generator style guide when the request carries none', async () => {
    const generator = createBedrockImageGenerator({
      model: 'stability.stable-image-ultra-v1:1',
      style: 'woodcut print, two colours',
      ...connection(),
    });
    await generator.generate({ ...request, style: undefined });
    expect(String((standIn.requests[0]!.body as { prompt: string }).prompt)).toMatch(/^Style: woodcut print/);
  });

  it('lets a request’s own aspect ratio and negative prompt win over the generator’s', async () => {
    const generator = createBedrockImageGenerator({
      model: 'stability.stable-image-core-v1:1',
      aspectRatio: '1:1',
      negativePrompt: 'text, watermark',
      ...connection(),
    });
    await generator.generate({ ...request, aspectRatio: '9:16', negativePrompt: 'crowds' });
    await generator.generate({ ...request, aspectRatio: undefined });
    expect(standIn.requests.map((sent) => sent.body)).toMatchObject([
      { aspect_ratio: '9:16', negative_prompt: 'crowds' },
      { aspect_ratio: '1:1', negative_prompt: 'text, watermark' },
    ]);
  });

  it('throws ContentFilteredError for a filtered result, after exactly one request', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.sd3-5-large-v1:0', ...connection() });
    standIn.scheduleErrors(['filtered']);
    const error = await generator.generate(request).catch((caught: unknown) => caught);
    expect(ContentFilteredError.isInstance(error)).toBe(true);
    expect((error as ContentFilteredError).message).toContain('Filter reason: prompt');
    expect((error as ContentFilteredError).isRetryable).toBe(false);
    expect(standIn.requests).toHaveLength(1);
  });

  it('throws ContentFilteredError itself, not a RetryError, when the filter answers a retried call', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.sd3-5-large-v1:0', ...connection() });
    standIn.scheduleErrors(['throttling', 'filtered']);
    const error = await generator.generate(request).catch((caught: unknown) => caught);
    expect(ContentFilteredError.isInstance(error)).toBe(true);
    expect(standIn.requests).toHaveLength(2);
  });

  it('retries throttling, then draws', async () => {
    const clock = new ManualClock();
    const generator = createBedrockImageGenerator({
      model: 'stability.stable-image-ultra-v1:1',
      ...connection(),
      retry: { clock },
    });
    standIn.scheduleErrors(['throttling', 'model-timeout']);
    const image = await withManualTime(clock, generator.generate(request));
    expect(image.mediaType).toBe('image/png');
    expect(standIn.requests.map((sent) => sent.status)).toEqual([429, 408, 200]);
  });

  it('retries an "Inference error" finish reason, which is no content filter, then draws', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', ...connection() });
    standIn.scheduleErrors(['inference-error']);
    const image = await generator.generate(request);
    expect(image.mediaType).toBe('image/png');
    expect(standIn.requests.map((sent) => sent.fault)).toEqual(['inference-error', undefined]);
  });

  it('gives up on repeated inference errors with retryable ProviderErrors, never a ContentFilteredError', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', ...connection() });
    standIn.scheduleErrors(['inference-error', 'inference-error', 'inference-error']);
    const error = await generator.generate(request).catch((caught: unknown) => caught);
    expect(RetryError.isInstance(error), String(error)).toBe(true);
    const attempts = (error as RetryError).errors;
    expect(attempts).toHaveLength(3);
    for (const attempt of attempts) {
      expect(ProviderError.isInstance(attempt) && attempt.isRetryable).toBe(true);
      expect((attempt as ProviderError).message).toContain('Inference error');
    }
  });

  it('draws a JPEG when asked for one, and says so', async () => {
    const generator = createBedrockImageGenerator({
      model: 'stability.sd3-5-large-v1:0',
      outputFormat: 'jpeg',
      ...connection(),
    });
    const image = await generator.generate(request);
    expect(image.mediaType).toBe('image/jpeg');
    expect({ width: image.width, height: image.height }).toEqual({ width: 8, height: 8 });
    expect(standIn.requests[0]!.body).toMatchObject({ output_format: 'jpeg' });
  });

  it('refuses seed 0, which Stability reads as "pick a random seed", before any call', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', ...connection() });
    await expect(generator.generate({ ...request, seed: 0 })).rejects.toThrow(/seed must be an integer in 1\.\./);
    expect(standIn.requests).toHaveLength(0);
  });

  it('turns bytes that are no image into a ProviderError', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', ...connection() });
    standIn.scheduleErrors(['garbage-image']);
    await expect(generator.generate(request)).rejects.toSatisfy(
      (error) => ProviderError.isInstance(error) && /neither a PNG nor a JPEG/.test(error.message),
    );
  });

  it('rejects a seed outside Stability’s range and bad options before any call', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', ...connection() });
    await expect(generator.generate({ ...request, seed: 4_294_967_295 })).rejects.toThrow(ValidationError);
    await expect(generator.generate({ ...request, seed: 1.5 })).rejects.toThrow(ValidationError);
    expect(standIn.requests).toHaveLength(0);
    expect(() =>
      createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', aspectRatio: '7:3' as never }),
    ).toThrow(ValidationError);
    expect(() => createBedrockImageGenerator({ model: 'stability.sdxl' as never })).toThrow(ValidationError);
  });

  it('honours an abort', async () => {
    const generator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', ...connection() });
    await expect(generator.generate(request, { signal: AbortSignal.abort() })).rejects.toThrow(AbortedError);
    expect(standIn.requests).toHaveLength(0);
  });
});

describe('createBedrockSceneGenerator', () => {
  const model = 'us.anthropic.claude-sonnet-4-5-20250929-v1:0';

  it('rejects an ARN model id at construction', () => {
    expect(() =>
      createBedrockSceneGenerator({
        model: 'arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-sonnet-20240229-v1:0',
      }),
    ).toThrow(/ARN/);
  });

  it('sends the Messages request to InvokeModel of the model, signed, through the real AnthropicBedrock client', async () => {
    const generator = createBedrockSceneGenerator({
      model,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      baseURL: standIn.url,
      stream: false,
    });
    const result = await generator.generate(openingSceneRequest());
    expect(result.scene.title).toBe('The Next Scene');
    expect(standIn.requests).toHaveLength(1);
    const sent = standIn.requests[0]!;
    expect(sent).toMatchObject({ modelId: model, operation: 'InvokeModel', status: 200 });
    // Bedrock takes this one version and refuses the Messages API's own ("Invalid API version").
    expect(sent.body).toMatchObject({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 16_000 });
    expect(sent.body).not.toHaveProperty('model');
    expect(sent.body).not.toHaveProperty('stream');
    expect(String(sent.headers.authorization)).toMatch(/^AWS4-HMAC-SHA256 Credential=test\//);
  });

  /** An `AnthropicBedrock` client as a user builds it, pointed at the stand-in. */
  const ownClient = () =>
    new AnthropicBedrock({
      awsRegion: 'us-east-1',
      awsAccessKey: 'test',
      awsSecretKey: 'test',
      baseURL: standIn.url,
      maxRetries: 0,
    });

  it('sends the anthropic_version Bedrock takes through a client of the user’s own, streamed or not', async () => {
    const generators = [
      createBedrockSceneGenerator({ model, client: ownClient(), stream: false }),
      createBedrockSceneGenerator({ model, client: ownClient() }),
      // The Anthropic entry's generator, which knows the client by its class.
      createClaudeSceneGenerator({ model, client: ownClient() }),
      createClaudeSceneGenerator({ model, client: ownClient(), stream: false }),
    ];
    for (const generator of generators) {
      const result = await generator.generate(openingSceneRequest());
      expect(result.scene.title).toBe('The Next Scene');
    }
    expect(standIn.requests.map((request) => [request.operation, request.status])).toEqual([
      ['InvokeModel', 200],
      ['InvokeModelWithResponseStream', 200],
      ['InvokeModelWithResponseStream', 200],
      ['InvokeModel', 200],
    ]);
    for (const request of standIn.requests) {
      expect(request.body).toMatchObject({ anthropic_version: 'bedrock-2023-05-31' });
    }
  });

  it('retries a 424 ModelErrorException, as the service asks, through its own client or the user’s', async () => {
    const retry = { initialDelayMs: 0, maxDelayMs: 0 };
    const generators = [
      createBedrockSceneGenerator({
        model,
        region: 'us-east-1',
        credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
        baseURL: standIn.url,
        retry,
      }),
      createClaudeSceneGenerator({ model, client: ownClient(), stream: false, retry }),
    ];
    for (const generator of generators) {
      standIn.reset();
      standIn.scheduleErrors([{ fault: 'model-error', modelId: model }]);
      const result = await generator.generate(openingSceneRequest());
      expect(result.scene.title).toBe('The Next Scene');
      expect(standIn.requests.map((request) => [request.fault, request.status])).toEqual([
        ['model-error', 424],
        [undefined, 200],
      ]);
    }
  });

  it('names the request id of a refused request, and does not retry it', async () => {
    const generator = createBedrockSceneGenerator({
      model,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      baseURL: standIn.url,
      retry: { initialDelayMs: 0, maxDelayMs: 0 },
    });
    standIn.scheduleErrors(['validation']);
    const error = await generator.generate(openingSceneRequest()).catch((caught: unknown) => caught);
    expect(ProviderError.isInstance(error), String(error)).toBe(true);
    const provider = error as ProviderError;
    expect([provider.status, provider.isRetryable]).toEqual([400, false]);
    expect(provider.message).toContain(`request-id ${standIn.requests[0]!.requestId}`);
    expect(standIn.requests).toHaveLength(1);
  });
});
