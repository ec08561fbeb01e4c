import { Pinecone } from '@pinecone-database/pinecone';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProviderError, RetryError, ValidationError } from '../core/errors.js';
import { RETRY_DEFAULTS } from '../core/retry.js';
import { createMemoryStateStore } from '../state/memory.js';
import type { VectorRecordInput } from '../state/schema.js';
import { ManualClock } from '../testing/manual-clock.js';
import { type PineconeStandIn, startPineconeStandIn } from '../testing/pinecone-server.js';
import { runVectorIndexSuite } from '../testing/vector-index-suite.js';
import { ContextManager } from './context-manager.js';
import { createHashingEmbedder } from './hashing-embedder.js';
import { createMemoryKeywordIndex } from './memory-keyword-index.js';
import {
  createPineconeIndex,
  cutBatches,
  fetchBatches,
  PINECONE_LIMITS,
  type PineconeQuery,
  type PineconeRecordInput,
  toPineconeFilter,
  toPineconeMetadata,
} from './pinecone.js';

const DIMENSIONS = 8;
let standIn: PineconeStandIn;

beforeAll(async () => {
  standIn = await startPineconeStandIn({ dimension: DIMENSIONS });
});
afterAll(() => standIn.close());

/** The real SDK pointed at the stand-in, as STACK describes; its own retries off, ours on with no real waiting. */
function realClientIndex(options: { namespacePrefix?: string } = {}) {
  const index = new Pinecone({ apiKey: 'local-key', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
  return createPineconeIndex({
    index,
    dimensions: DIMENSIONS,
    retry: { initialDelayMs: 1, maxDelayMs: 5 },
    ...options,
  });
}

describe('createPineconeIndex', () => {
  // The stand-in applies each write before it answers it: nothing is left to settle before an absence is checked.
  const counted = runVectorIndexSuite(
    { describe, it },
    { name: 'pinecone-stand-in', create: () => realClientIndex(), consistencyWindowMs: 0 },
  );

  it('runs every case of the suite', () => {
    expect(counted).toBeGreaterThanOrEqual(30);
  });
});

function record(storyId: string, id: string, extra: Partial<VectorRecordInput['metadata']> = {}, seed = 1) {
  const values = Float32Array.from({ length: DIMENSIONS }, (_, i) => Math.sin(seed * (i + 1)) + 0.01);
  return { id, values, metadata: { storyId, type: 'scene' as const, timestamp: 1, sourceId: id, ...extra } };
}

describe('Pinecone adapter specifics', () => {
  it('keeps one namespace per story, under the prefix', async () => {
    const index = realClientIndex({ namespacePrefix: 'tenant-a-' });
    await index.upsert('ns-story', [record('ns-story', 'a')]);
    expect(standIn.namespaces()['tenant-a-ns-story']).toBe(1);
    const upsert = standIn.requests.findLast((request) => request.path === '/vectors/upsert');
    expect(upsert?.headers['x-pinecone-api-version']).toMatch(/^\d{4}-\d{2}$/);
    expect(upsert?.headers['api-key']).toBe('local-key');
  });

  it('cuts upserts by bytes as well as by count', async () => {
    const index = createPineconeIndex({
      index: new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url }),
      dimensions: DIMENSIONS,
      maxRequestBytes: 20_000,
    });
    const before = standIn.requests.length;
    const records = Array.from({ length: 40 }, (_, i) =>
      record('bytes-story', `r${i}`, { text: 'x'.repeat(1_500) }, i + 1),
    );
    await index.upsert('bytes-story', records);
    const upserts = standIn.requests.slice(before).filter((request) => request.path === '/vectors/upsert');
    expect(upserts.length).toBeGreaterThan(2);
    for (const request of upserts) expect(request.bodyBytes).toBeLessThanOrEqual(20_000);
    expect(standIn.namespaces()['bytes-story']).toBe(40);
    // And by count alone: 2,500 small records are three requests.
    expect(
      cutBatches(
        Array.from({ length: 2_500 }, (_, i) => ({ id: `${i}` })),
        1_000,
        2_000_000,
      ).map((b) => b.length),
    ).toEqual([1_000, 1_000, 500]);
  });

  it('keeps metadata within 40 KB by shortening text, and drops what Pinecone cannot hold', () => {
    const metadata = {
      storyId: 's',
      type: 'scene' as const,
      timestamp: 1,
      themes: [],
      characters: ['mira'],
      locations: [],
      importance: 0.5,
      sourceId: 's1',
      chunk: 0,
      chapterId: undefined,
      text: '龍'.repeat(20_000),
    };
    const mapped = toPineconeMetadata(metadata, {}, 40_960);
    expect(Buffer.byteLength(JSON.stringify(mapped))).toBeLessThanOrEqual(40_960);
    expect((mapped.text as string).length).toBeGreaterThan(13_000);
    expect(mapped).not.toHaveProperty('themes');
    expect(mapped).not.toHaveProperty('chapterId');
    expect(mapped.characters).toEqual(['mira']);
  });

  it('translates the filter language to Pinecone operators', () => {
    const table: Array<[Parameters<typeof toPineconeFilter>[0], unknown]> = [
      [{ type: 'scene' }, { type: { $eq: 'scene' } }],
      [{ characters: { $in: ['mira'] } }, { characters: { $in: ['mira'] } }],
      [
        { importance: { $gte: 0.2, $lt: 0.8 } },
        { $and: [{ importance: { $gte: 0.2 } }, { importance: { $lt: 0.8 } }] },
      ],
      [
        { type: 'scene', chapterId: undefined, $or: [{ characters: 'mira' }, { timestamp: { $lte: 5 } }] },
        {
          $and: [{ type: { $eq: 'scene' } }, { $or: [{ characters: { $eq: 'mira' } }, { timestamp: { $lte: 5 } }] }],
        },
      ],
      // Pinecone's $ne and $nin hold only where the field is set; the port's hold where it is missing too. Fields
      // every record has need no more; the lists (left out when empty) and the optional fields need $exists.
      [
        { characters: { $nin: ['oren'] } },
        { $or: [{ characters: { $exists: false } }, { characters: { $nin: ['oren'] } }] },
      ],
      [
        { chapterId: { $ne: 'chapter-0001' }, type: { $ne: 'meta' } },
        {
          $and: [
            { $or: [{ chapterId: { $exists: false } }, { chapterId: { $ne: 'chapter-0001' } }] },
            { type: { $ne: 'meta' } },
          ],
        },
      ],
      [
        { sceneIndex: { $ne: 1, $lt: 3 }, importance: { $nin: [0.5] } },
        {
          $and: [
            { $or: [{ sceneIndex: { $exists: false } }, { sceneIndex: { $ne: 1 } }] },
            { sceneIndex: { $lt: 3 } },
            { importance: { $nin: [0.5] } },
          ],
        },
      ],
      [
        { $or: [{ themes: { $ne: 'war' } }, { locations: { $nin: ['tower'] } }] },
        {
          $or: [
            { $or: [{ themes: { $exists: false } }, { themes: { $ne: 'war' } }] },
            { $or: [{ locations: { $exists: false } }, { locations: { $nin: ['tower'] } }] },
          ],
        },
      ],
      // What holds for every record is no condition: Pinecone's client refuses `{}` and empty branches.
      [{}, undefined],
      [{ chapterId: undefined }, undefined],
      [{ $and: [{}, { chapterId: undefined }] }, undefined],
      [{ $or: [{ type: 'scene' }, {}] }, undefined],
      // An operator object without an operator is no condition either, never an empty $and (a 400 from Pinecone).
      [{ type: {} }, undefined],
      [{ $or: [{ importance: {} }, { type: 'summary' }] }, undefined],
      [{ $and: [{ type: {} }, { chapterId: {} }] }, undefined],
      [{ type: {}, importance: 1 }, { importance: { $eq: 1 } }],
      [
        { $or: [{ type: 'scene' }, { $and: [{ chunk: {} }, { importance: 1 }] }] },
        { $or: [{ type: { $eq: 'scene' } }, { importance: { $eq: 1 } }] },
      ],
      [{ type: 'scene', $and: [{}] }, { type: { $eq: 'scene' } }],
      [{ type: 'scene', $or: [{ importance: 1 }, { chapterId: undefined }] }, { type: { $eq: 'scene' } }],
      [
        { $and: [{}, { type: 'scene' }, { importance: { $gt: 0.5 } }] },
        { $and: [{ type: { $eq: 'scene' } }, { importance: { $gt: 0.5 } }] },
      ],
      [
        { $or: [{ type: 'scene' }, { $and: [{}, { importance: 1 }] }] },
        { $or: [{ type: { $eq: 'scene' } }, { importance: { $eq: 1 } }] },
      ],
    ];
    for (const [ours, theirs] of table) expect(toPineconeFilter(ours)).toEqual(theirs);
  });

  it('a query whose filter holds for every record reaches Pinecone without one', async () => {
    const index = realClientIndex();
    const storyId = 'no-condition';
    const vector = Float32Array.from({ length: DIMENSIONS }, (_, i) => i + 1);
    await index.upsert(storyId, [
      { id: 'a', values: vector, metadata: { storyId, type: 'scene', timestamp: 1, sourceId: 'a' } },
    ]);
    const chapter: string | undefined = undefined;
    for (const filter of [{ chapterId: chapter }, { chapterId: chapter, $and: [{}] }]) {
      const matches = await index.query(storyId, { vector, topK: 5, filter });
      expect(matches.map((match) => match.id)).toEqual(['a']);
    }
  });

  it('reads and drops a story only in its own namespace, under the prefix', async () => {
    const prefixed = realClientIndex({ namespacePrefix: 'tenant-b-' });
    const bare = realClientIndex();
    const storyId = 'prefix-scope';
    await prefixed.upsert(storyId, [record(storyId, 'mine-1'), record(storyId, 'mine-2', {}, 2)]);
    await bare.upsert(storyId, [record(storyId, 'theirs', {}, 3)]);
    expect((await prefixed.stats(storyId)).count).toBe(2);
    const vector = record(storyId, 'probe').values;
    expect((await prefixed.query(storyId, { vector, topK: 10 })).map((match) => match.id).sort()).toEqual([
      'mine-1',
      'mine-2',
    ]);
    await prefixed.delete(storyId, { ids: ['mine-1', 'theirs'] });
    expect((await prefixed.fetch(storyId, ['mine-1', 'mine-2'])).map((found) => found.id)).toEqual(['mine-2']);
    await prefixed.deleteStory(storyId);
    expect(standIn.namespaces()[`tenant-b-${storyId}`] ?? 0).toBe(0);
    expect((await prefixed.stats(storyId)).count).toBe(0);
    // The story of the same id without the prefix is another tenant's: untouched.
    expect((await bare.fetch(storyId, ['theirs'])).map((found) => found.id)).toEqual(['theirs']);
  });

  it('reports a delete Pinecone refuses, and passes over only the 404 of a namespace that holds nothing', async () => {
    let refuse = false;
    const index = createPineconeIndex({
      host: standIn.url,
      apiKey: 'local-key',
      dimensions: DIMENSIONS,
      retry: { initialDelayMs: 1, maxDelayMs: 5 },
      fetch: async (input, init) => {
        const url = input instanceof Request ? input.url : String(input);
        if (refuse && /\/(vectors\/delete|namespaces\/.+)$/.test(url)) {
          const body = JSON.stringify({ code: 7, message: 'Permission denied', details: [] });
          return new Response(body, { status: 403, headers: { 'content-type': 'application/json' } });
        }
        return fetch(input, init);
      },
    });
    const storyId = 'refused-delete';
    await index.upsert(storyId, [record(storyId, 'a')]);
    refuse = true;
    const deletes = [
      () => index.delete(storyId, { ids: ['a'] }),
      () => index.delete(storyId, { filter: { type: 'scene' } }),
      () => index.deleteStory(storyId),
    ];
    for (const remove of deletes) {
      const error = await remove().catch((caught: unknown) => caught);
      expect(ProviderError.isInstance(error) && error.status).toBe(403);
    }
    refuse = false;
    expect(standIn.namespaces()[storyId]).toBe(1);
    await expect(index.deleteStory('never-written')).resolves.toBeUndefined();
    await expect(index.delete('never-written', { ids: ['a'] })).resolves.toBe(-1);
  });

  it('cuts fetches by the length of the URL the ids make, not by their count alone', async () => {
    // 100 ids of 128 characters holding ':' take about 39 KB percent-encoded: one request would be refused (431).
    const ids = Array.from({ length: 100 }, (_, n) => `${String(n).padStart(3, '0')}:${'x:'.repeat(62)}`);
    expect(ids[0]).toHaveLength(128);
    const batches = fetchBatches(ids);
    expect(batches.flat()).toEqual(ids);
    for (const batch of batches) {
      const query = batch.map((id) => `&ids=${encodeURIComponent(id)}`).join('');
      expect(query.length).toBeLessThanOrEqual(PINECONE_LIMITS.maxFetchQueryBytes);
    }
    expect(fetchBatches(Array.from({ length: 250 }, (_, n) => `s${n}`)).map((batch) => batch.length)).toEqual([
      100, 100, 50,
    ]);
    const index = realClientIndex();
    const storyId = 'long-ids';
    const vector = Float32Array.from({ length: DIMENSIONS }, (_, i) => i + 1);
    await index.upsert(
      storyId,
      ids.map((id) => ({ id, values: vector, metadata: { storyId, type: 'scene', timestamp: 1, sourceId: 'a' } })),
    );
    const fetched = await index.fetch(storyId, ids);
    expect(fetched.map((record) => record.id)).toEqual(ids);
  });

  it('retries a 429 and a 500 with the one retry policy, waiting on the injected clock', async () => {
    const clock = new ManualClock();
    const index = createPineconeIndex({
      index: new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url }),
      dimensions: DIMENSIONS,
      clock,
      retry: { maxRetries: 3, jitter: 0 },
    });
    standIn.scheduleErrors([
      { status: 429, path: '/vectors/upsert' },
      { status: 500, path: '/vectors/upsert' },
    ]);
    let done = false;
    const pending = index.upsert('retry-story', [record('retry-story', 'a')]).finally(() => {
      done = true;
    });
    // Each wait resolves when the manual clock moves; the requests themselves need the event loop to turn.
    while (!done) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      await clock.advance(10_000);
    }
    await pending;
    expect(clock.sleeps).toEqual([500, 1_000]);
    expect(standIn.namespaces()['retry-story']).toBe(1);
  });

  it('gives up with a RetryError holding the 429s, and reports a 400 at once as not retryable', async () => {
    const index = createPineconeIndex({
      index: new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url }),
      dimensions: DIMENSIONS,
      retry: { maxRetries: 1, initialDelayMs: 1 },
    });
    standIn.scheduleErrors([
      { status: 429, path: '/query' },
      { status: 429, path: '/query' },
    ]);
    const error = await index
      .query('anything', { vector: record('x', 'a').values, topK: 1 })
      .catch((caught: unknown) => caught);
    expect(RetryError.isInstance(error)).toBe(true);
    const last = (error as RetryError).errors.at(-1);
    expect(ProviderError.isInstance(last) && last.status).toBe(429);
  });

  it('stand-in: rejects what Pinecone rejects, with a 400', async () => {
    const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
    const ok = { id: 'ok', values: Array.from({ length: DIMENSIONS }, () => 0.5) };
    const rejections: Array<[string, () => Promise<unknown>]> = [
      ['wrong dimension', () => sdk.upsert({ records: [{ id: 'a', values: [1, 2] }], namespace: 'r' })],
      [
        '1,001 records',
        () => sdk.upsert({ records: Array.from({ length: 1_001 }, (_, i) => ({ ...ok, id: `${i}` })), namespace: 'r' }),
      ],
      [
        'metadata over 40 KB',
        () => sdk.upsert({ records: [{ ...ok, metadata: { text: 'x'.repeat(41_000) } }], namespace: 'r' }),
      ],
      [
        'a nested metadata object',
        () => sdk.upsert({ records: [{ ...ok, metadata: { nested: { a: 1 } as never } }], namespace: 'r' }),
      ],
      [
        'a list of numbers',
        () => sdk.upsert({ records: [{ ...ok, metadata: { list: [1, 2] as never } }], namespace: 'r' }),
      ],
      ['topK over 10,000', () => sdk.query({ vector: ok.values, topK: 10_001, namespace: 'r' })],
      [
        'an unknown operator',
        () => sdk.query({ vector: ok.values, topK: 1, namespace: 'r', filter: { a: { $regex: 'x' } } }),
      ],
      [
        'sparse values on a cosine index',
        () => sdk.upsert({ records: [{ ...ok, sparseValues: { indices: [1], values: [1] } }], namespace: 'r' }),
      ],
      [
        'a body over 2 MB',
        () =>
          sdk.upsert({
            records: Array.from({ length: 900 }, (_, i) => ({
              ...ok,
              id: `${i}`,
              metadata: { text: 'y'.repeat(3_000) },
            })),
            namespace: 'r',
          }),
      ],
    ];
    for (const [label, attempt] of rejections) {
      const error = await attempt().then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error, label).toBeInstanceOf(Error);
      expect((error as Error).name, label).toBe('PineconeBadRequestError');
    }
    expect(standIn.namespaces().r).toBeUndefined();
  });

  it('stand-in: $ne and $nin skip a record without the field, as on Pinecone; $exists: false finds it', async () => {
    const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
    const values = Array.from({ length: DIMENSIONS }, (_, i) => i + 1);
    const namespace = 'missing-field';
    await sdk.upsert({
      records: [
        { id: 'bare', values, metadata: { type: 'plotThread' } },
        { id: 'set', values, metadata: { type: 'scene', chapterId: 'c2', characters: ['oren'] } },
      ],
      namespace,
    });
    const found = async (filter: object) =>
      ((await sdk.query({ vector: values, topK: 5, namespace, filter })).matches ?? []).map((match) => match.id);
    expect(await found({ chapterId: { $ne: 'c1' } })).toEqual(['set']);
    expect(await found({ characters: { $nin: ['mira'] } })).toEqual(['set']);
    expect(await found({ characters: { $exists: false } })).toEqual(['bare']);
    expect(await found({ $or: [{ chapterId: { $exists: false } }, { chapterId: { $ne: 'c1' } }] })).toEqual([
      'bare',
      'set',
    ]);
  });

  it('hybrid: on a dotproduct index, sparse values add to the cosine of the dense part', async () => {
    const hybridStandIn = await startPineconeStandIn({ dimension: DIMENSIONS, metric: 'dotproduct' });
    try {
      const index = createPineconeIndex({
        index: new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'hybrid', host: hybridStandIn.url }),
        dimensions: DIMENSIONS,
        metric: 'dotproduct',
      });
      const dense = record('h', 'same', {}, 3);
      const hybridRecords: PineconeRecordInput[] = [
        { ...dense, values: dense.values.map((value) => value * 40), sparseValues: { indices: [7], values: [1] } },
        { ...record('h', 'other', {}, 3), sparseValues: { indices: [9], values: [1] } },
      ];
      await index.upsert('h', hybridRecords);
      const [fetched] = await index.fetch('h', ['same']);
      expect(fetched!.values[0]).toBeCloseTo(dense.values[0]! * 40, 3);
      const plain = await index.query('h', { vector: dense.values, topK: 2 });
      expect(plain.map((match) => match.score.toFixed(4))).toEqual(['1.0000', '1.0000']);
      const hybrid = await index.query('h', {
        vector: dense.values,
        topK: 2,
        sparseVector: { indices: [7], values: [0.5] },
      } as PineconeQuery);
      expect(hybrid[0]!.id).toBe('same');
      expect(hybrid[0]!.score).toBeCloseTo(1.5, 4);
      await expect(
        createPineconeIndex({
          index: new Pinecone({ apiKey: 'k' }).index({ name: 'x', host: standIn.url }),
          dimensions: DIMENSIONS,
        }).query('h', {
          vector: dense.values,
          topK: 1,
          sparseVector: { indices: [1], values: [1] },
        } as PineconeQuery),
      ).rejects.toThrow(ValidationError);
    } finally {
      await hybridStandIn.close();
    }
  });
});

describe('Pinecone query response cap', () => {
  const WIDE = 1536;
  let wide: PineconeStandIn;
  beforeAll(async () => {
    wide = await startPineconeStandIn({ dimension: WIDE });
  });
  afterAll(() => wide.close());

  it('stats lists a story past the 4 MB a response may hold, where one listing with values is refused', async () => {
    const index = createPineconeIndex({
      index: new Pinecone({ apiKey: 'local-key', maxRetries: 0 }).index({ name: 'local', host: wide.url }),
      dimensions: WIDE,
      retry: { initialDelayMs: 1, maxDelayMs: 5 },
    });
    const story = 'long-story';
    const vector = (seed: number) => Float32Array.from({ length: WIDE }, (_, i) => Math.sin(seed * 7.3 + i * 0.37));
    const text = 'The keeper climbed the stair and counted the storms she had outlasted. '.repeat(3);
    const records = [
      ...Array.from({ length: 400 }, (_, i) => ({
        id: `scene-s${i}-c0`,
        values: vector(i + 1),
        metadata: { storyId: story, type: 'scene' as const, timestamp: i, sourceId: `s${i}`, sceneIndex: i, text },
      })),
      ...['mira', 'tobin', 'gull'].map((id, i) => ({
        id: `character-${id}`,
        values: vector(1_000 + i),
        metadata: { storyId: story, type: 'character' as const, timestamp: 0, sourceId: id, text: id },
      })),
    ];
    await index.upsert(story, records);
    // 400 values of 1536 dimensions in one response pass 4 MB: Pinecone (and the stand-in) refuse it.
    await expect(
      index.query(story, { vector: vector(1), topK: 400, filter: { type: 'scene' }, includeValues: true }),
    ).rejects.toThrow(/exceeds the limit/);
    const manager = new ContextManager({
      store: createMemoryStateStore(),
      vectors: index,
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions: WIDE }),
    });
    const stats = await manager.stats(story, { sample: 20 });
    expect(stats.byType).toMatchObject({ scene: 400, character: 3, plotThread: 0, summary: 0 });
    expect(stats.countsExact).toBe(true);
    expect(stats.sampled).toBe(20);
    expect(stats.norms.min).toBeGreaterThan(0);
  });
});

/** An adapter that builds its own client (so its fetch reads the bodies the SDK drops) on `host`. */
function ownClientIndex(host: string, options: Partial<Parameters<typeof createPineconeIndex>[0]> = {}) {
  return createPineconeIndex({
    host,
    apiKey: 'local-key',
    dimensions: DIMENSIONS,
    retry: { initialDelayMs: 1, maxDelayMs: 5 },
    ...options,
  });
}

/** The requests `standIn` received since `from`, as `METHOD path`. */
const sentSince = (server: PineconeStandIn, from: number) =>
  server.requests.slice(from).map((request) => `${request.method} ${request.path}`);

describe('Pinecone 404s: a missing namespace is nothing to delete, any other 404 is a failure', () => {
  it('a misspelt index name (the control plane answers 404) fails every delete and the count', async () => {
    const controlPlane: string[] = [];
    const index = createPineconeIndex({
      // Unique: the SDK keeps the hosts it found per key and index name for the whole process.
      indexName: `no-such-index-${process.pid}`,
      apiKey: 'local-key',
      dimensions: DIMENSIONS,
      retry: { maxRetries: 0 },
      fetch: async (input, init) => {
        const url = input instanceof Request ? input.url : String(input);
        if (new URL(url).pathname.startsWith('/indexes/')) {
          controlPlane.push(url);
          const body = JSON.stringify({ error: { code: 'NOT_FOUND', message: 'Index not found' }, status: 404 });
          return new Response(body, { status: 404, headers: { 'content-type': 'application/json' } });
        }
        return fetch(input, init);
      },
    });
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['deleteStory', () => index.deleteStory('erase-me')],
      ['delete by ids', () => index.delete('erase-me', { ids: ['a'] })],
      ['delete by filter', () => index.delete('erase-me', { filter: { type: 'scene' } })],
      ['stats', () => index.stats('erase-me')],
    ];
    for (const [name, run] of calls) {
      const error = await run().catch((caught: unknown) => caught);
      expect(ProviderError.isInstance(error), `${name}: ${String(error)}`).toBe(true);
      expect((error as ProviderError).status, name).toBe(404);
      expect((error as ProviderError).isRetryable, name).toBe(false);
    }
    expect(controlPlane).toHaveLength(calls.length);
  });

  it('a 404 of the data plane that does not say "Namespace not found" fails too', async () => {
    const index = ownClientIndex(standIn.url, {
      fetch: async (input, init) => {
        const url = input instanceof Request ? input.url : String(input);
        if (/\/(vectors\/delete|namespaces\/.+)$/.test(url)) {
          // What a host without the route (or a proxy in front of the wrong host) answers.
          const body = JSON.stringify({ code: 5, message: 'Not Found', details: [] });
          return new Response(body, { status: 404, headers: { 'content-type': 'application/json' } });
        }
        return fetch(input, init);
      },
    });
    for (const run of [
      () => index.deleteStory('no-route'),
      () => index.delete('no-route', { ids: ['a'] }),
      () => index.stats('no-route'),
    ]) {
      const error = await run().catch((caught: unknown) => caught);
      expect(ProviderError.isInstance(error) && error.status, String(error)).toBe(404);
    }
  });

  it("the stand-in's 404 for a namespace that does not exist is Pinecone's, and the adapter passes over it", async () => {
    const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
    const from = standIn.requests.length;
    await expect(sdk.deleteMany({ ids: ['a'], namespace: 'never-there' })).rejects.toThrow(/404/);
    await expect(sdk.deleteNamespace('never-there')).rejects.toThrow(/404/);
    await expect(sdk.describeNamespace('never-there')).rejects.toThrow(/404/);
    const answers = standIn.requests.slice(from);
    expect(answers.map((request) => request.status)).toEqual([404, 404, 404]);
    // With a client of its own and with one given as index (whose fetch it cannot read: the SDK's message names the route).
    for (const index of [ownClientIndex(standIn.url), realClientIndex()]) {
      await expect(index.deleteStory('never-there')).resolves.toBeUndefined();
      await expect(index.delete('never-there', { ids: ['a'] })).resolves.toBe(-1);
      await expect(index.delete('never-there', { filter: { type: 'scene' } })).resolves.toBe(-1);
      await expect(index.stats('never-there')).resolves.toEqual({ count: 0, dimensions: DIMENSIONS });
    }
  });

  it('under a client given as index, a failure that is not a 404 fails the delete and the count, and deletes nothing', async () => {
    // The adapter cannot read this client's responses: only a 404 of the namespace routes (named in the SDK's message)
    // may pass for a missing namespace. A server error must not pass for "nothing to delete" and leave the story.
    const index = realClientIndex();
    await index.upsert('kept', [record('kept', 'a'), record('kept', 'b', {}, 2)]);
    const failing = (path: string) =>
      Array.from({ length: RETRY_DEFAULTS.maxRetries + 1 }, () => ({ status: 500 as const, path }));
    const calls: Array<[string, string, () => Promise<unknown>]> = [
      ['deleteStory', '/namespaces/kept', () => index.deleteStory('kept')],
      ['delete by ids', '/vectors/delete', () => index.delete('kept', { ids: ['a'] })],
      ['delete by filter', '/vectors/delete', () => index.delete('kept', { filter: { type: 'scene' } })],
      ['stats', '/namespaces/kept', () => index.stats('kept')],
    ];
    for (const [name, path, run] of calls) {
      standIn.scheduleErrors(failing(path));
      const error = await run().catch((caught: unknown) => caught);
      expect(RetryError.isInstance(error), `${name}: ${String(error)}`).toBe(true);
      expect(error, name).toMatchObject({ reason: 'maxRetriesExceeded', attempts: RETRY_DEFAULTS.maxRetries + 1 });
    }
    expect(standIn.namespaces().kept).toBe(2);
    expect(await index.stats('kept')).toEqual({ count: 2, dimensions: DIMENSIONS });
  });
});

describe("Pinecone: the index's metric and dimension are checked against the options", () => {
  it('refuses a cosine adapter on a dotproduct index before writing, naming both metrics', async () => {
    const dotproduct = await startPineconeStandIn({ dimension: DIMENSIONS, metric: 'dotproduct' });
    try {
      const index = ownClientIndex(dotproduct.url);
      for (const run of [
        () => index.upsert('m', [record('m', 'a')]),
        () => index.query('m', { vector: record('m', 'a').values, topK: 1 }),
      ]) {
        const error = await run().catch((caught: unknown) => caught);
        expect(ValidationError.isInstance(error), String(error)).toBe(true);
        expect((error as ValidationError).message).toMatch(/cosine/);
        expect((error as ValidationError).message).toMatch(/dotproduct/);
        expect((error as ValidationError).problems.map((problem) => problem.path)).toEqual(['options.metric']);
      }
      expect(dotproduct.requests.some((request) => request.path === '/vectors/upsert')).toBe(false);
      expect(dotproduct.namespaces().m).toBeUndefined();
      // The matching adapter works.
      await ownClientIndex(dotproduct.url, { metric: 'dotproduct' }).upsert('m', [record('m', 'a')]);
      expect(dotproduct.namespaces().m).toBe(1);
    } finally {
      await dotproduct.close();
    }
  });

  it('refuses a dimension the index does not have, naming both', async () => {
    const index = ownClientIndex(standIn.url, { dimensions: DIMENSIONS * 2 });
    const wide = { ...record('wide', 'a'), values: new Float32Array(DIMENSIONS * 2).fill(0.5) };
    const error = await index.upsert('wide', [wide]).catch((caught: unknown) => caught);
    expect(ValidationError.isInstance(error), String(error)).toBe(true);
    expect((error as ValidationError).problems).toEqual([
      { path: 'options.dimensions', message: `is ${DIMENSIONS * 2}, the index's is ${DIMENSIONS}` },
    ]);
    expect(standIn.namespaces().wide).toBeUndefined();
  });

  it('reads the index once per instance; a read that a retry could mend lets the call go ahead, and is made again', async () => {
    const index = ownClientIndex(standIn.url, { retry: { maxRetries: 0 } });
    const from = standIn.requests.length;
    // The stats route rate-limited, then down: the check is a safeguard, not the call, and the upsert is made.
    standIn.scheduleErrors([
      { status: 429, path: '/describe_index_stats' },
      { status: 503, path: '/describe_index_stats' },
    ]);
    await index.upsert('once', [record('once', 'a')]);
    await index.upsert('once', [record('once', 'a')]);
    await index.upsert('once', [record('once', 'a')]);
    await index.query('once', { vector: record('once', 'a').values, topK: 1 });
    await index.upsert('once', [record('once', 'b', {}, 2)]);
    expect(sentSince(standIn, from)).toEqual([
      'POST /describe_index_stats',
      'POST /vectors/upsert',
      'POST /describe_index_stats',
      'POST /vectors/upsert',
      'POST /describe_index_stats',
      'POST /vectors/upsert',
      'POST /query',
      'POST /vectors/upsert',
    ]);
    // A refusal no retry mends (the key cannot read the index) fails the call, and nothing is written.
    const refused = ownClientIndex(standIn.url, { retry: { maxRetries: 0 } });
    standIn.scheduleErrors([{ status: 403, path: '/describe_index_stats' }]);
    const before = standIn.requests.length;
    await expect(refused.upsert('once', [record('once', 'c')])).rejects.toThrow(/403/);
    expect(sentSince(standIn, before)).toEqual(['POST /describe_index_stats']);
  });
});

describe('Pinecone stats read the one namespace', () => {
  it("counts one story among many without listing the index's namespaces", async () => {
    const index = realClientIndex({ namespacePrefix: 'many-' });
    for (let story = 0; story < 20; story++) {
      await index.upsert(
        `s${story}`,
        [record(`s${story}`, 'a'), record(`s${story}`, 'b', {}, 2)].slice(0, 1 + (story % 2)),
      );
    }
    const from = standIn.requests.length;
    expect(await index.stats('s7')).toEqual({ count: 2, dimensions: DIMENSIONS });
    expect(await index.stats('s8')).toEqual({ count: 1, dimensions: DIMENSIONS });
    expect(await index.stats('s99')).toEqual({ count: 0, dimensions: DIMENSIONS });
    expect(sentSince(standIn, from)).toEqual([
      'GET /namespaces/many-s7',
      'GET /namespaces/many-s8',
      'GET /namespaces/many-s99',
    ]);
  });

  it("the stand-in's namespace description has the spec's shape and sees writes as late as its other reads", async () => {
    const late = await startPineconeStandIn({ dimension: DIMENSIONS, visibilityLag: 2 });
    try {
      const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'late', host: late.url });
      await sdk.upsert({ records: [{ id: 'a', values: [...record('x', 'a').values] }], namespace: 'ns/1 é' });
      // One request after the write: not visible yet, so no namespace.
      await expect(sdk.describeNamespace('ns/1 é')).rejects.toThrow(/404/);
      expect(await sdk.describeNamespace('ns/1 é')).toMatchObject({ name: 'ns/1 é', recordCount: 1 });
      const raw = late.requests.at(-1)!;
      expect(raw.path).toBe(`/namespaces/${encodeURIComponent('ns/1 é')}`);
    } finally {
      await late.close();
    }
  });
});

describe('Pinecone hybrid: an empty sparse vector is no sparse vector', () => {
  let hybrid: PineconeStandIn;
  beforeAll(async () => {
    hybrid = await startPineconeStandIn({ dimension: DIMENSIONS, metric: 'dotproduct' });
  });
  afterAll(() => hybrid.close());

  it('the stand-in refuses empty sparse values with a 400, as the API does, on upserts and queries', async () => {
    const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'hybrid', host: hybrid.url });
    const values = [...record('x', 'a').values];
    const upsert = await sdk
      .upsert({ records: [{ id: 'a', values, sparseValues: { indices: [], values: [] } }], namespace: 'empty' })
      .catch((caught: unknown) => caught);
    expect((upsert as Error).name).toBe('PineconeBadRequestError');
    // The SDK refuses an empty query vector itself; sent raw, the stand-in refuses it too.
    const response = await fetch(`${hybrid.url}/query`, {
      method: 'POST',
      headers: { 'api-key': 'k', 'content-type': 'application/json' },
      body: JSON.stringify({ vector: values, topK: 1, namespace: 'empty', sparseVector: { indices: [], values: [] } }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ code: 3 });
    expect(hybrid.namespaces().empty).toBeUndefined();
  });

  it('upserts a record with empty sparse values as a dense one, and queries with one dense-only', async () => {
    const index = ownClientIndex(hybrid.url, { metric: 'dotproduct' });
    const empty = { indices: [], values: [] };
    const from = hybrid.requests.length;
    await index.upsert('empty-sparse', [
      { ...record('empty-sparse', 'no-terms'), sparseValues: empty },
      { ...record('empty-sparse', 'terms', {}, 2), sparseValues: { indices: [3], values: [0.5] } },
    ] as PineconeRecordInput[]);
    const upsert = hybrid.requests.slice(from).find((request) => request.path === '/vectors/upsert');
    const sent = (upsert!.body as { vectors: Array<{ id: string; sparseValues?: unknown }> }).vectors;
    expect(sent.map((vector) => [vector.id, vector.sparseValues !== undefined])).toEqual([
      ['no-terms', false],
      ['terms', true],
    ]);
    const matches = await index.query('empty-sparse', {
      vector: record('empty-sparse', 'no-terms').values,
      topK: 2,
      sparseVector: empty,
    } as PineconeQuery);
    expect(matches[0]).toMatchObject({ id: 'no-terms' });
    expect(matches[0]!.score).toBeCloseTo(1, 5);
    const query = hybrid.requests.findLast((request) => request.path === '/query');
    expect(query?.body).not.toHaveProperty('sparseVector');
  });
});

describe('Pinecone deleteStory deletes the namespace, which deleting every record leaves', () => {
  it('sends DELETE /namespaces/{namespace}; afterwards the namespace is gone, not empty', async () => {
    const index = realClientIndex({ namespacePrefix: 'erase-' });
    await index.upsert('story', [record('story', 'a'), record('story', 'b', {}, 2)]);
    const from = standIn.requests.length;
    await index.deleteStory('story');
    expect(sentSince(standIn, from)).toEqual(['DELETE /namespaces/erase-story']);
    expect(standIn.namespaces()).not.toHaveProperty('erase-story');
    expect((await index.stats('story')).count).toBe(0);
    // Again: nothing left to delete, and no error.
    await expect(index.deleteStory('story')).resolves.toBeUndefined();
  });

  it('the stand-in keeps a namespace whose records are all deleted, as Pinecone does', async () => {
    const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
    const values = [...record('x', 'a').values];
    for (const namespace of ['kept-by-ids', 'kept-by-delete-all']) {
      await sdk.upsert({ records: [{ id: 'a', values }], namespace });
    }
    await sdk.deleteMany({ ids: ['a'], namespace: 'kept-by-ids' });
    await sdk.deleteAll({ namespace: 'kept-by-delete-all' });
    for (const namespace of ['kept-by-ids', 'kept-by-delete-all']) {
      expect(standIn.namespaces()[namespace], namespace).toBe(0);
      expect(await sdk.describeNamespace(namespace)).toMatchObject({ name: namespace, recordCount: 0 });
      await sdk.deleteNamespace(namespace);
      expect(standIn.namespaces(), namespace).not.toHaveProperty(namespace);
      await expect(sdk.describeNamespace(namespace)).rejects.toThrow(/404/);
    }
  });
});
