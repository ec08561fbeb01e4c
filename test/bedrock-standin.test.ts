/**
 * The Bedrock stand-in of `storyloom/testing` on its own, over plain HTTP: it must reject what the service rejects,
 * answer errors the way the SDK expects them, and draw well-formed PNGs and JPEGs. Requests carry an
 * `Authorization` header of SigV4's form (the stand-in checks the form, not the signature), as the SDK's do.
 */
import { inflateSync } from 'node:zlib';
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
): Promise<{ status: number; headers: Headers; json: unknown }> {
  const response = await fetch(`${standIn.url}/model/${encodeURIComponent(modelId)}/invoke`, {
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

  it('answers 404 ResourceNotFoundException for a model it does not serve', async () => {
    const result = await invoke('stability.sdxl-v1', { prompt: 'x' });
    expect(result.status).toBe(404);
    expect(result.headers.get('x-amzn-errortype')).toMatch(/^ResourceNotFoundException:/);
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
    const filtered = (await invoke('stability.stable-image-ultra-v1:1', { prompt: 'x' })).json as {
      finish_reasons: string[];
      images: string[];
    };
    expect(filtered.finish_reasons).toEqual(['Filter reason: prompt']);
    expect(filtered.images).toEqual([]);
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
