/**
 * The Bedrock stand-in of `storyloom/testing` on its own, over plain HTTP: it must reject what the service rejects,
 * answer errors the way the SDK expects them, and draw well-formed PNGs and JPEGs. Requests carry an
 * `Authorization` header of SigV4's form (the stand-in checks the form, not the signature), as the SDK's do.
 */
import { inflateSync } from 'node:zlib';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type BedrockStandIn, startBedrockStandIn } from '../src/testing/bedrock-server.js';

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

const SIGNED = {
  authorization:
    'AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=0123456789abcdef',
};

async function invoke(
  modelId: string,
  body: unknown,
  headers: Record<string, string> = SIGNED,
  operation: 'invoke' | 'invoke-with-response-stream' = 'invoke',
): Promise<{ status: number; headers: Headers; json: unknown }> {
  const response = await fetch(`${standIn.url}/model/${encodeURIComponent(modelId)}/${operation}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: response.status, headers: response.headers, json };
}

function expectValidationError(result: { status: number; headers: Headers }): void {
  expect(result.status).toBe(400);
  expect(result.headers.get('x-amzn-errortype')).toMatch(/^ValidationException:/);
}

const CLAUDE = 'global.anthropic.claude-sonnet-4-6';
const CLAUDE_BODY = {
  anthropic_version: 'bedrock-2023-05-31',
  max_tokens: 1_000,
  messages: [{ role: 'user', content: 'Write the opening scene.' }],
};

const codec = new EventStreamCodec(
  (bytes: Uint8Array) => Buffer.from(bytes).toString('utf8'),
  (text: string) => new Uint8Array(Buffer.from(text, 'utf8')),
);

interface Frame {
  headers: Record<string, string>;
  payload: unknown;
}

/** A streamed call, its body cut into AWS event-stream messages (each prefixed by its total length) and decoded. */
async function invokeStream(
  modelId: string,
  body: unknown,
): Promise<{ status: number; headers: Headers; frames: Frame[] }> {
  const response = await fetch(`${standIn.url}/model/${encodeURIComponent(modelId)}/invoke-with-response-stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...SIGNED },
    body: JSON.stringify(body),
  });
  const bytes = Buffer.from(await response.arrayBuffer());
  const frames: Frame[] = [];
  if (response.headers.get('content-type') !== 'application/vnd.amazon.eventstream') {
    return { status: response.status, headers: response.headers, frames };
  }
  for (let offset = 0; offset < bytes.length; ) {
    const length = bytes.readUInt32BE(offset);
    const message = codec.decode(bytes.subarray(offset, offset + length));
    const headers = Object.fromEntries(
      Object.entries(message.headers).map(([name, header]) => [name, String(header.value)]),
    );
    const json = JSON.parse(Buffer.from(message.body).toString('utf8')) as { bytes?: string };
    const payload =
      headers[':message-type'] === 'event' ? JSON.parse(Buffer.from(json.bytes!, 'base64').toString('utf8')) : json;
    frames.push({ headers, payload });
    offset += length;
  }
  return { status: response.status, headers: response.headers, frames };
}

describe('Bedrock stand-in: request validation', () => {
  it.each([
    ['Titan V2 with 1536 dimensions', 'amazon.titan-embed-text-v2:0', { inputText: 'x', dimensions: 1536 }],
    ['Titan G1 with a V2 setting', 'amazon.titan-embed-text-v1', { inputText: 'x', dimensions: 512 }],
    ['Titan with an empty text', 'amazon.titan-embed-text-v1', { inputText: '' }],
    ['Cohere with 97 texts', 'cohere.embed-v4:0', { texts: Array(97).fill('x'), input_type: 'search_document' }],
    ['Cohere with an empty text', 'cohere.embed-v4:0', { texts: ['a', ''], input_type: 'search_document' }],
    ['Cohere without an input type', 'cohere.embed-v4:0', { texts: ['a'] }],
    [
      'Cohere with output_dimension 768',
      'cohere.embed-v4:0',
      { texts: ['a'], input_type: 'search_query', output_dimension: 768 },
    ],
    [
      'Stability with an unknown aspect ratio',
      'stability.stable-image-core-v1:1',
      { prompt: 'x', aspect_ratio: '7:3' },
    ],
    ['Stability with a seed out of range', 'stability.stable-image-ultra-v1:1', { prompt: 'x', seed: 4_294_967_295 }],
    ['Stability with a prompt over 10,000 characters', 'stability.sd3-5-large-v1:0', { prompt: 'x'.repeat(10_001) }],
    ['a body that is not JSON', 'cohere.embed-v4:0', '{"texts": ['],
    [
      'Titan V2 with a text over 8,192 tokens but under 50,000 characters',
      'amazon.titan-embed-text-v2:0',
      { inputText: 'The keeper climbed the stair and lit the lamp again tonight. '.repeat(700) },
    ],
    [
      'Titan G1 with a text over 8,192 tokens',
      'amazon.titan-embed-text-v1',
      { inputText: 'The keeper lit the lamp. '.repeat(1_400) },
    ],
    [
      'Cohere with v3’s truncate END',
      'cohere.embed-v4:0',
      { texts: ['a'], input_type: 'search_document', truncate: 'END' },
    ],
    [
      'Cohere with a text over 128,000 tokens and no truncate',
      'cohere.embed-v4:0',
      { texts: ['The keeper lit the lamp. '.repeat(24_000)], input_type: 'search_document' },
    ],
    [
      'Cohere with a text over 128,000 tokens and truncate NONE',
      'cohere.embed-v4:0',
      { texts: ['The keeper lit the lamp. '.repeat(24_000)], input_type: 'search_document', truncate: 'NONE' },
    ],
    ['Stability with output_format webp', 'stability.stable-image-core-v1:1', { prompt: 'x', output_format: 'webp' }],
    ['Stability with an unknown key', 'stability.stable-image-ultra-v1:1', { prompt: 'x', style_preset: 'anime' }],
    [
      'Cohere with an unknown key',
      'cohere.embed-v4:0',
      { texts: ['a'], input_type: 'search_query', model: 'embed-v4.0' },
    ],
    ['Titan V2 with embeddingTypes int4', 'amazon.titan-embed-text-v2:0', { inputText: 'a', embeddingTypes: ['int4'] }],
    ['Titan V2 with empty embeddingTypes', 'amazon.titan-embed-text-v2:0', { inputText: 'a', embeddingTypes: [] }],
    ['Claude with a model key', CLAUDE, { ...CLAUDE_BODY, model: 'claude-sonnet-4-6' }],
    ['Claude with a stream key', CLAUDE, { ...CLAUDE_BODY, stream: true }],
    ['Claude with the Messages API’s version', CLAUDE, { ...CLAUDE_BODY, anthropic_version: '2023-06-01' }],
    ['Claude without anthropic_version', CLAUDE, { max_tokens: 10, messages: CLAUDE_BODY.messages }],
    ['Claude without max_tokens', CLAUDE, { anthropic_version: 'bedrock-2023-05-31', messages: CLAUDE_BODY.messages }],
    ['Claude without messages', CLAUDE, { anthropic_version: 'bedrock-2023-05-31', max_tokens: 10 }],
  ])('rejects %s with a 400 ValidationException', async (_name, modelId, body) => {
    expectValidationError(await invoke(modelId, body));
  });

  it('takes Cohere texts over 128,000 tokens when truncate is LEFT or RIGHT', async () => {
    for (const truncate of ['LEFT', 'RIGHT']) {
      const result = await invoke('cohere.embed-v4:0', {
        texts: ['The keeper lit the lamp. '.repeat(24_000)],
        input_type: 'search_document',
        truncate,
      });
      expect(result.status).toBe(200);
    }
  });

  it('takes a Titan text of 8,192 tokens as it counts them (about 4 characters each)', async () => {
    const result = await invoke('amazon.titan-embed-text-v2:0', { inputText: 'x'.repeat(8_192 * 4) });
    expect(result.status).toBe(200);
    expect((result.json as { inputTextTokenCount: number }).inputTextTokenCount).toBe(8_192);
  });

  it.each([
    ['no Authorization header', {}],
    ['an Authorization header that is no signature', { authorization: 'test' }],
  ])('refuses a request with %s with 403, as Bedrock does, and keeps its scheduled fault', async (_name, headers) => {
    standIn.scheduleErrors(['throttling']);
    const result = await invoke('amazon.titan-embed-text-v2:0', { inputText: 'the lamp' }, headers);
    expect(result.status).toBe(403);
    expect(result.headers.get('x-amzn-errortype')).toMatch(/^MissingAuthenticationTokenException:/);
    expect((await invoke('amazon.titan-embed-text-v2:0', { inputText: 'the lamp' })).status).toBe(429);
    expect(standIn.requests.map((request) => request.status)).toEqual([403, 429]);
  });

  it('takes a Bedrock API key (Bearer) as credentials', async () => {
    const result = await invoke('amazon.titan-embed-text-v2:0', { inputText: 'x' }, { authorization: 'Bearer key' });
    expect(result.status).toBe(200);
  });

  it('answers a model id it does not serve as Bedrock does: 400 ValidationException', async () => {
    for (const modelId of ['stability.sdxl-v1', 'amazon.titan-embed-text-v9:0', 'us.amazon.titan-embed-text-v2:0']) {
      const result = await invoke(modelId, { prompt: 'x' });
      expectValidationError(result);
      expect(result.json).toEqual({ message: 'The provided model identifier is invalid.' });
    }
  });

  it('refuses the Messages API’s own keys in a Claude body in Bedrock’s words', async () => {
    const result = await invoke(CLAUDE, { ...CLAUDE_BODY, model: 'claude-sonnet-4-6' });
    expect(String((result.json as { message: string }).message)).toContain('extraneous key [model] is not permitted');
  });

  it('refuses a body over 25,000,000 bytes, on either operation', async () => {
    const body = { texts: ['the lamp '.repeat(2_800_000)], input_type: 'search_document', truncate: 'RIGHT' };
    const result = await invoke('cohere.embed-v4:0', body);
    expectValidationError(result);
    expect(String((result.json as { message: string }).message)).toContain(
      'Member must have length less than or equal to 25000000',
    );
    const streamed = await invoke(
      CLAUDE,
      { ...CLAUDE_BODY, system: 'x'.repeat(25_000_000) },
      SIGNED,
      'invoke-with-response-stream',
    );
    expectValidationError(streamed);
  });

  it('refuses a Claude body over 20,000,000 bytes, Claude’s payload limit, and takes one of exactly that size', async () => {
    const frame = Buffer.byteLength(JSON.stringify({ ...CLAUDE_BODY, system: '' }));
    const ofSize = (bytes: number) => ({ ...CLAUDE_BODY, system: 'x'.repeat(bytes - frame) });
    expect((await invoke(CLAUDE, ofSize(20_000_000))).status).toBe(200);
    const over = await invoke(CLAUDE, ofSize(20_000_001));
    expectValidationError(over);
    expect(String((over.json as { message: string }).message)).toContain(
      'Member must have length less than or equal to 20000000',
    );
    expectValidationError(await invoke(CLAUDE, ofSize(20_000_001), SIGNED, 'invoke-with-response-stream'));
    // The 25,000,000-byte limit of other models stays theirs.
    const cohere = { texts: ['x'.repeat(20_000_001)], input_type: 'search_document', truncate: 'RIGHT' };
    expect((await invoke('cohere.embed-v4:0', cohere)).status).toBe(200);
    expect(standIn.requests.map((request) => request.status)).toEqual([200, 400, 400, 200]);
  });

  it('refuses a Claude body holding a lone surrogate, as the Messages API does', async () => {
    const result = await invoke(CLAUDE, {
      ...CLAUDE_BODY,
      messages: [{ role: 'user', content: 'The lamp \ud83d went out.' }],
    });
    expectValidationError(result);
    expect(String((result.json as { message: string }).message)).toContain('no low surrogate in string');
  });

  it('takes Titan V2 embeddingTypes float and binary, and answers both', async () => {
    const result = await invoke('amazon.titan-embed-text-v2:0', {
      inputText: 'the lamp',
      dimensions: 256,
      embeddingTypes: ['float', 'binary'],
    });
    expect(result.status).toBe(200);
    const byType = (result.json as { embeddingsByType: { float: number[]; binary: number[] } }).embeddingsByType;
    expect(byType.float).toHaveLength(256);
    expect(byType.binary).toEqual(byType.float.map((value) => (value > 0 ? 1 : 0)));
  });

  it('serves Cohere v4 through its inference profiles', async () => {
    for (const prefix of ['us', 'eu', 'apac', 'global']) {
      const result = await invoke(`${prefix}.cohere.embed-v4:0`, { texts: ['a'], input_type: 'search_query' });
      expect(result.status).toBe(200);
    }
  });

  it('sends an x-amzn-RequestId (a UUID) with every answer, as recorded, and records unknown routes too', async () => {
    const ok = await invoke('amazon.titan-embed-text-v1', { inputText: 'x' });
    standIn.scheduleErrors(['throttling']);
    const throttled = await invoke('amazon.titan-embed-text-v1', { inputText: 'x' });
    const unsigned = await invoke('amazon.titan-embed-text-v1', { inputText: 'x' }, {});
    const unknown = await fetch(`${standIn.url}/model/amazon.titan-embed-text-v1/converse-everything`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...SIGNED },
      body: '{}',
    });
    const ids = [ok, throttled, unsigned, unknown].map((answer) => answer.headers.get('x-amzn-requestid'));
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(4);
    expect(standIn.requests.map((request) => [request.requestId, request.status])).toEqual([
      [ids[0], 200],
      [ids[1], 429],
      [ids[2], 403],
      [ids[3], 404],
    ]);
    expect(standIn.requests[3]).toMatchObject({
      modelId: '',
      route: 'POST /model/amazon.titan-embed-text-v1/converse-everything',
    });
    expect(standIn.requests[3]!.operation).toBeUndefined();
  });
});

describe('Bedrock stand-in: Claude', () => {
  it('serves Claude by model id and through every geography’s inference profile, and nothing else prefixed', async () => {
    const served = ['us', 'eu', 'apac', 'global', 'us-gov', 'jp', 'au'].map(
      (prefix) => `${prefix}.anthropic.claude-sonnet-4-5-20250929-v1:0`,
    );
    for (const modelId of ['anthropic.claude-sonnet-4-5-20250929-v1:0', ...served]) {
      expect((await invoke(modelId, CLAUDE_BODY)).status, modelId).toBe(200);
    }
    for (const modelId of ['xx.anthropic.claude-sonnet-4-6', 'global.us.anthropic.claude-sonnet-4-6']) {
      expectValidationError(await invoke(modelId, CLAUDE_BODY));
    }
  });

  it('answers InvokeModel with a Messages reply', async () => {
    const result = await invoke('anthropic.claude-3-haiku-20240307-v1:0', CLAUDE_BODY);
    expect(result.status).toBe(200);
    expect(result.json).toMatchObject({
      type: 'message',
      role: 'assistant',
      stop_reason: 'end_turn',
      content: [{ type: 'text', text: expect.stringContaining('"title":"The Next Scene"') }],
      usage: { input_tokens: 6, cache_read_input_tokens: 0 },
    });
  });

  it('streams the reply as chunk events of base64 Messages events, ending with Bedrock’s metrics', async () => {
    const { status, headers, frames } = await invokeStream(CLAUDE, CLAUDE_BODY);
    expect(status).toBe(200);
    expect(headers.get('x-amzn-requestid')).toMatch(/^[0-9a-f-]{36}$/);
    expect(frames.every((frame) => frame.headers[':message-type'] === 'event')).toBe(true);
    expect(frames.every((frame) => frame.headers[':event-type'] === 'chunk')).toBe(true);
    const types = frames.map((frame) => (frame.payload as { type: string }).type);
    expect(types[0]).toBe('message_start');
    expect(types.slice(-3)).toEqual(['content_block_stop', 'message_delta', 'message_stop']);
    const text = frames
      .map((frame) => frame.payload as { type: string; delta?: { text?: string } })
      .filter((event) => event.type === 'content_block_delta')
      .map((event) => event.delta!.text)
      .join('');
    expect(JSON.parse(text)).toMatchObject({ scene: { title: 'The Next Scene' } });
    expect(frames.at(-1)!.payload).toMatchObject({
      'amazon-bedrock-invocationMetrics': { inputTokenCount: 6, outputTokenCount: expect.any(Number) },
    });
    expect(standIn.requests[0]).toMatchObject({ operation: 'InvokeModelWithResponseStream', status: 200 });
  });

  it('streams the events the Messages API streams, a ping after the text block opens included', async () => {
    const { frames } = await invokeStream(CLAUDE, CLAUDE_BODY);
    const events = frames.map((frame) => frame.payload as { type: string });
    expect(events.map((event) => event.type).filter((type) => type !== 'content_block_delta')).toEqual([
      'message_start',
      'content_block_start',
      'ping',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    // The final usage, input and cache included, as the Messages API's message_delta reports it.
    expect(events.find((event) => event.type === 'message_delta')).toMatchObject({
      usage: { input_tokens: 6, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
    });
  });

  it('ends a stream with an exception message after the scheduled number of chunks', async () => {
    standIn.scheduleErrors([{ fault: 'stream-validation', afterChunks: 2 }]);
    const { status, frames } = await invokeStream(CLAUDE, CLAUDE_BODY);
    expect(status).toBe(200);
    expect(frames).toHaveLength(3);
    expect(frames.slice(0, 2).map((frame) => frame.headers[':event-type'])).toEqual(['chunk', 'chunk']);
    expect(frames[2]).toEqual({
      headers: {
        ':message-type': 'exception',
        ':exception-type': 'validationException',
        ':content-type': 'application/json',
      },
      payload: { message: 'Input is too long for requested model.' },
    });
  });

  it('keeps a stream fault for the next streamed request, past requests that are not streamed', async () => {
    standIn.scheduleErrors(['stream-throttling']);
    expect((await invoke(CLAUDE, CLAUDE_BODY)).status).toBe(200);
    const { frames } = await invokeStream(CLAUDE, CLAUDE_BODY);
    expect(frames.map((frame) => frame.headers[':exception-type']).filter(Boolean)).toEqual(['throttlingException']);
    expect(standIn.requests.map((request) => request.fault)).toEqual([undefined, 'stream-throttling']);
  });

  it('refuses to stream an embedding model', async () => {
    expectValidationError(
      await invoke(
        'cohere.embed-v4:0',
        { texts: ['a'], input_type: 'search_query' },
        SIGNED,
        'invoke-with-response-stream',
      ),
    );
  });
});

describe('Bedrock stand-in: answers', () => {
  it('gives Titan V2 unit vectors of the asked size, equal for equal texts', async () => {
    const first = (await invoke('amazon.titan-embed-text-v2:0', { inputText: 'the tide', dimensions: 256 })).json as {
      embedding: number[];
      embeddingsByType: { float: number[] };
    };
    const second = (await invoke('amazon.titan-embed-text-v2:0', { inputText: 'the tide', dimensions: 256 })).json as {
      embedding: number[];
    };
    expect(first.embedding).toHaveLength(256);
    expect(first.embeddingsByType.float).toEqual(first.embedding);
    expect(second.embedding).toEqual(first.embedding);
    const norm = Math.sqrt(first.embedding.reduce((sum, value) => sum + value * value, 0));
    expect(norm).toBeCloseTo(1, 5);
  });

  it('gives Cohere different vectors for the same text as a document and as a query', async () => {
    const body = { texts: ['the lamp'], embedding_types: ['float'], output_dimension: 512 };
    const document = (await invoke('cohere.embed-v4:0', { ...body, input_type: 'search_document' })).json as {
      embeddings: { float: number[][] };
      response_type: string;
    };
    const query = (await invoke('cohere.embed-v4:0', { ...body, input_type: 'search_query' })).json as {
      embeddings: { float: number[][] };
    };
    expect(document.response_type).toBe('embeddings_by_type');
    expect(document.embeddings.float[0]).toHaveLength(512);
    expect(query.embeddings.float[0]).not.toEqual(document.embeddings.float[0]);
  });

  it('draws a well-formed PNG (valid chunk CRCs, inflatable pixels) that depends on the seed', async () => {
    const draw = async (seed: number) => {
      const result = await invoke('stability.stable-image-core-v1:1', {
        prompt: 'a lighthouse',
        seed,
        output_format: 'png',
      });
      const json = result.json as { images: string[]; seeds: number[]; finish_reasons: Array<string | null> };
      expect(json.finish_reasons).toEqual([null]);
      expect(json.seeds).toEqual([seed]);
      return Buffer.from(json.images[0]!, 'base64');
    };
    const png = await draw(7);
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    let offset = 8;
    const types: string[] = [];
    let pixels = Buffer.alloc(0);
    while (offset < png.length) {
      const length = png.readUInt32BE(offset);
      const type = png.subarray(offset + 4, offset + 8).toString('ascii');
      const data = png.subarray(offset + 8, offset + 8 + length);
      expect(png.readUInt32BE(offset + 8 + length)).toBe(crc32(png.subarray(offset + 4, offset + 8 + length)));
      if (type === 'IDAT') pixels = Buffer.concat([pixels, data]);
      types.push(type);
      offset += 12 + length;
    }
    expect(types).toEqual(['IHDR', 'IDAT', 'IEND']);
    expect(inflateSync(pixels).length).toBe(8 * (1 + 8 * 3));
    expect((await draw(7)).equals(png)).toBe(true);
    expect((await draw(8)).equals(png)).toBe(false);
  });

  it('draws a baseline JPEG when output_format is jpeg, whose colour follows the seed', async () => {
    const draw = async (seed: number) => {
      const result = await invoke('stability.stable-image-ultra-v1:1', {
        prompt: 'a lighthouse',
        seed,
        output_format: 'jpeg',
      });
      expect(result.status).toBe(200);
      return Buffer.from((result.json as { images: string[] }).images[0]!, 'base64');
    };
    const jpeg = await draw(7);
    expect(Array.from(jpeg.subarray(0, 3))).toEqual([0xff, 0xd8, 0xff]);
    expect(Array.from(jpeg.subarray(-2))).toEqual([0xff, 0xd9]);
    // Walk the segments up to the scan: JFIF, quantisation table, baseline frame of 8×8 in 3 components, 2 Huffman
    // tables, start of scan.
    const markers: number[] = [];
    let offset = 2;
    let frame: Buffer | undefined;
    while (offset < jpeg.length && jpeg[offset] === 0xff && jpeg[offset + 1] !== 0xda) {
      const length = jpeg.readUInt16BE(offset + 2);
      markers.push(jpeg[offset + 1]!);
      if (jpeg[offset + 1] === 0xc0) frame = jpeg.subarray(offset + 4, offset + 2 + length);
      offset += 2 + length;
    }
    expect(markers).toEqual([0xe0, 0xdb, 0xc0, 0xc4, 0xc4]);
    expect(jpeg[offset + 1]).toBe(0xda);
    expect({
      precision: frame![0],
      height: frame!.readUInt16BE(1),
      width: frame!.readUInt16BE(3),
      components: frame![5],
    }).toEqual({ precision: 8, height: 8, width: 8, components: 3 });
    expect((await draw(7)).equals(jpeg)).toBe(true);
    expect((await draw(8)).equals(jpeg)).toBe(false);
  });

  it('picks a random seed for seed 0 or none, as Stability does, and reports it', async () => {
    const seeds: number[] = [];
    for (const body of [
      { prompt: 'a lighthouse', seed: 0 },
      { prompt: 'a lighthouse', seed: 0 },
      { prompt: 'a lighthouse' },
    ]) {
      const json = (await invoke('stability.stable-image-core-v1:1', body)).json as { seeds: number[] };
      seeds.push(json.seeds[0]!);
    }
    for (const seed of seeds) {
      expect(Number.isInteger(seed) && seed >= 1 && seed <= 4_294_967_294).toBe(true);
    }
    expect(new Set(seeds).size).toBe(3);
  });
});

describe('Bedrock stand-in: scheduled faults', () => {
  it('answers each scheduled fault once, in order, then serves normally', async () => {
    standIn.scheduleErrors(['throttling', { fault: 'unavailable', retryAfterSeconds: 2 }, 'malformed-json']);
    const body = { inputText: 'x' };
    const throttled = await invoke('amazon.titan-embed-text-v1', body);
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get('x-amzn-errortype')).toMatch(/^ThrottlingException:/);
    expect(throttled.json).toEqual({ message: expect.any(String) });
    const unavailable = await invoke('amazon.titan-embed-text-v1', body);
    expect(unavailable.status).toBe(503);
    expect(unavailable.headers.get('retry-after')).toBe('2');
    const malformed = await invoke('amazon.titan-embed-text-v1', body);
    expect(malformed.status).toBe(200);
    expect(typeof malformed.json).toBe('string');
    expect((await invoke('amazon.titan-embed-text-v1', body)).status).toBe(200);
    expect(standIn.requests.map((request) => request.fault)).toEqual([
      'throttling',
      'unavailable',
      'malformed-json',
      undefined,
    ]);
  });

  it('keeps a fault aimed at one model for that model', async () => {
    standIn.scheduleErrors([{ fault: 'filtered', modelId: 'stability.stable-image-ultra-v1:1' }]);
    expect((await invoke('cohere.embed-v4:0', { texts: ['a'], input_type: 'search_query' })).status).toBe(200);
    const filtered = (await invoke('stability.stable-image-ultra-v1:1', { prompt: 'x' })).json;
    // The documented shape: the reason alone.
    expect(filtered).toEqual({ finish_reasons: ['Filter reason: prompt'] });
  });

  it('answers model-error with 424 ModelErrorException and service-quota with 400 ServiceQuotaExceededException', async () => {
    standIn.scheduleErrors(['model-error', 'service-quota']);
    const modelError = await invoke('amazon.titan-embed-text-v1', { inputText: 'x' });
    expect(modelError.status).toBe(424);
    expect(modelError.headers.get('x-amzn-errortype')).toMatch(/^ModelErrorException:/);
    const quota = await invoke('amazon.titan-embed-text-v1', { inputText: 'x' });
    expect(quota.status).toBe(400);
    expect(quota.headers.get('x-amzn-errortype')).toMatch(/^ServiceQuotaExceededException:/);
  });

  it('answers "Inference error" as a finish reason with no image', async () => {
    standIn.scheduleErrors(['inference-error']);
    const json = (await invoke('stability.sd3-5-large-v1:0', { prompt: 'x', seed: 3 })).json;
    expect(json).toEqual({ seeds: [3], finish_reasons: ['Inference error'], images: [] });
  });

  it('holds a hung request without an answer until the client gives up', async () => {
    standIn.scheduleErrors(['hang']);
    const controller = new AbortController();
    const pending = fetch(`${standIn.url}/model/amazon.titan-embed-text-v1/invoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...SIGNED },
      body: JSON.stringify({ inputText: 'x' }),
      signal: controller.signal,
    }).then(
      () => 'answered',
      () => 'gave up',
    );
    while (standIn.inFlight === 0) await new Promise((resolve) => setImmediate(resolve));
    const raced = await Promise.race([pending, new Promise((resolve) => setTimeout(() => resolve('no answer'), 100))]);
    expect(raced).toBe('no answer');
    controller.abort();
    expect(await pending).toBe('gave up');
    while (standIn.inFlight > 0) await new Promise((resolve) => setImmediate(resolve));
    expect(standIn.requests.map((request) => request.fault)).toEqual(['hang']);
  });
});

function crc32(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}
