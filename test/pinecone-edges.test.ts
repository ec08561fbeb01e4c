/**
 * The Pinecone adapter at its edges, over the real `@pinecone-database/pinecone` client: a host that never answers
 * (timeouts and aborts must close the connection), a 429 or 503 that asks for a wait, a missing API key, a long
 * namespace near the 2 MB request limit, and what Pinecone refuses that the port's own checks let through (booleans
 * in `$in`, sparse vectors over 1,000 values, all-zero dense vectors).
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Errors, Pinecone } from '@pinecone-database/pinecone';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPineconeFetch,
  createPineconeIndex,
  cutBatches,
  type PineconeRecordInput,
  type PineconeVectorIndex,
  toProviderError,
} from '../src/context/pinecone.js';
import { AbortedError, ProviderError, RetryError, ValidationError } from '../src/core/errors.js';
import { MANUAL_CLOCK_START, ManualClock } from '../src/testing/manual-clock.js';
import { type PineconeStandIn, startPineconeStandIn } from '../src/testing/pinecone-server.js';

const DIMENSIONS = 8;

function record(storyId: string, id: string, text = 'a scene') {
  const values = Float32Array.from({ length: DIMENSIONS }, (_, i) => (i === 0 ? 1 : 0.5));
  return { id, values, metadata: { storyId, type: 'scene' as const, timestamp: 1, sourceId: id, text } };
}

/** A host that accepts every request and never answers it, and notes when each request's connection closes. */
interface HungHost {
  url: string;
  requests: Array<{ path: string; closed: Promise<void> }>;
  /** Resolves once `count` requests have arrived. */
  received(count: number): Promise<void>;
  close(): Promise<void>;
}

async function startHungHost(): Promise<HungHost> {
  const requests: HungHost['requests'] = [];
  const waiters: Array<() => void> = [];
  const server = createServer((request: IncomingMessage) => {
    const closed = new Promise<void>((resolve) => request.socket.once('close', () => resolve()));
    requests.push({ path: new URL(request.url ?? '/', 'http://hung').pathname, closed });
    for (const wake of waiters.splice(0)) wake();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    async received(count) {
      while (requests.length < count) await new Promise<void>((resolve) => waiters.push(resolve));
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Rejects when `promise` has not settled within `ms`: a check that a connection closed "at once". */
function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms)),
  ]);
}

describe('a Pinecone host that never answers', () => {
  let hung: HungHost;
  beforeAll(async () => {
    hung = await startHungHost();
  });
  afterAll(() => hung.close());

  // The case timeout bounds both hung attempts: far above timeoutMs, far below the 30 s default they would wait.
  it('times a request out after timeoutMs, closes its connection, retries it and reports a retryable TIMEOUT', {
    timeout: 5_000,
  }, async () => {
    const before = hung.requests.length;
    const index = createPineconeIndex({
      host: hung.url,
      apiKey: 'local-key',
      dimensions: DIMENSIONS,
      timeoutMs: 100,
      retry: { maxRetries: 1, initialDelayMs: 1, maxDelayMs: 1 },
    });
    // A fetch: a query's first request is the adapter's one check of the index's dimension and metric.
    const error = await index.fetch('hung-story', ['q']).catch((caught: unknown) => caught);
    expect(RetryError.isInstance(error), String(error)).toBe(true);
    const attempts = (error as RetryError).errors;
    expect(attempts).toHaveLength(2);
    for (const attempt of attempts) {
      expect(ProviderError.isInstance(attempt) && attempt.code).toBe('TIMEOUT');
      expect((attempt as ProviderError).isRetryable).toBe(true);
      // Our timer ended the attempt, not another one: the error names timeoutMs.
      expect((attempt as ProviderError).message).toBe('Pinecone fetch timed out after 100 ms');
    }
    const sent = hung.requests.slice(before);
    expect(sent.map((request) => request.path)).toEqual(['/vectors/fetch', '/vectors/fetch']);
    await within(1_000, Promise.all(sent.map((request) => request.closed)), 'closing the timed-out connections');
  });

  // The case timeout bounds the six aborted calls: without the abort each would wait out the 30 s default timeoutMs.
  it('an abort rejects every data-plane call at once with AbortedError and closes its connection', {
    timeout: 5_000,
  }, async () => {
    const index = createPineconeIndex({ host: hung.url, apiKey: 'local-key', dimensions: DIMENSIONS });
    const calls: Array<[string, (signal: AbortSignal) => Promise<unknown>]> = [
      ['upsert', (signal) => index.upsert('s', [record('s', 'a')], { signal })],
      ['query', (signal) => index.query('s', { vector: record('s', 'a').values, topK: 1, signal })],
      ['fetch', (signal) => index.fetch('s', ['a'], { signal })],
      ['delete', (signal) => index.delete('s', { ids: ['a'] }, { signal })],
      ['stats', (signal) => index.stats('s', { signal })],
      ['deleteStory', (signal) => index.deleteStory('s', { signal })],
    ];
    for (const [name, run] of calls) {
      const controller = new AbortController();
      const reason = new Error(`stop ${name}`);
      const count = hung.requests.length;
      const pending = run(controller.signal).catch((caught: unknown) => caught);
      await within(1_000, hung.received(count + 1), `${name} reaching the host`);
      controller.abort(reason);
      const error = await within(1_000, pending, `${name} returning after the abort`);
      expect(AbortedError.isInstance(error), `${name}: ${String(error)}`).toBe(true);
      expect((error as AbortedError).cause, name).toBe(reason);
      await within(1_000, hung.requests.at(-1)!.closed, `closing the connection of ${name}`);
      // Aborted, not retried: one request per call.
      expect(hung.requests.length, name).toBe(count + 1);
    }
  });

  it('aborting one call leaves a concurrent call on the same client running', { timeout: 5_000 }, async () => {
    const index = createPineconeIndex({ host: hung.url, apiKey: 'local-key', dimensions: DIMENSIONS });
    const first = new AbortController();
    const second = new AbortController();
    const count = hung.requests.length;
    const pendingFirst = index.fetch('s', ['a'], { signal: first.signal }).catch((caught: unknown) => caught);
    const pendingSecond = index.stats('s', { signal: second.signal }).catch((caught: unknown) => caught);
    await within(1_000, hung.received(count + 2), 'both calls reaching the host');
    const [queryRequest, statsRequest] = ['/vectors/fetch', '/namespaces/s'].map(
      (path) => hung.requests.slice(count).find((request) => request.path === path)!,
    );
    first.abort();
    expect(AbortedError.isInstance(await within(1_000, pendingFirst, 'the aborted query'))).toBe(true);
    await within(1_000, queryRequest!.closed, 'closing the aborted query');
    const stillOpen = await Promise.race([
      statsRequest!.closed.then(() => false),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 150)),
    ]);
    expect(stillOpen).toBe(true);
    second.abort();
    expect(AbortedError.isInstance(await within(1_000, pendingSecond, 'the second call'))).toBe(true);
    await within(1_000, statsRequest!.closed, 'closing the second call');
  });

  it('a client built with createPineconeFetch is cut off the same way; one built without it still returns on time', {
    timeout: 5_000,
  }, async () => {
    const own = createPineconeIndex({
      index: new Pinecone({ apiKey: 'k', maxRetries: 0, fetchApi: createPineconeFetch() }).index({
        name: 'hung',
        host: hung.url,
      }),
      dimensions: DIMENSIONS,
      timeoutMs: 80,
      retry: { maxRetries: 0 },
    });
    let count = hung.requests.length;
    const timedOut = await own.stats('s').catch((caught: unknown) => caught);
    // With no retries allowed the policy gives up on the first retryable failure.
    expect(RetryError.isInstance(timedOut), String(timedOut)).toBe(true);
    const [only] = (timedOut as RetryError).errors;
    expect(ProviderError.isInstance(only) && only.code).toBe('TIMEOUT');
    await within(1_000, hung.requests[count]!.closed, 'closing the connection of a client given as index');

    const plain = createPineconeIndex({
      index: new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'hung', host: hung.url }),
      dimensions: DIMENSIONS,
      timeoutMs: 80,
      retry: { maxRetries: 0 },
    });
    count = hung.requests.length;
    const controller = new AbortController();
    const pending = plain.fetch('s', ['a'], { signal: controller.signal }).catch((caught: unknown) => caught);
    await hung.received(count + 1);
    controller.abort();
    expect(AbortedError.isInstance(await within(500, pending, 'an abort through a client without our fetch'))).toBe(
      true,
    );
  });
});

describe('Pinecone over the stand-in', () => {
  let standIn: PineconeStandIn;
  beforeAll(async () => {
    standIn = await startPineconeStandIn({ dimension: DIMENSIONS });
  });
  afterAll(() => standIn.close());

  /**
   * Runs `call`, moving the manual clock to each retry wait's end once the wait is asked for, and no further: time
   * stands still while a request is in flight, so an HTTP-date `retry-after` is read against the time it was sent at.
   */
  async function driving<T>(clock: ManualClock, call: Promise<T>): Promise<T> {
    let done = false;
    const pending = call.finally(() => {
      done = true;
    });
    while (!done) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      const wakeAt = clock.nextWakeAt();
      if (wakeAt !== undefined) await clock.advance(wakeAt - clock.now());
    }
    return pending;
  }

  it("waits as long as a 429's or 503's retry-after asks, in seconds or as an HTTP date, instead of the backoff", async () => {
    const cases: Array<[string, Parameters<PineconeStandIn['scheduleErrors']>[0][number], number]> = [
      ['429, seconds', { status: 429, path: '/vectors/upsert', retryAfterSeconds: 2 }, 2_000],
      [
        '503, HTTP date',
        { status: 503, path: '/vectors/upsert', retryAfter: new Date(MANUAL_CLOCK_START + 3_000).toUTCString() },
        3_000,
      ],
    ];
    for (const [label, scheduled, wait] of cases) {
      const clock = new ManualClock();
      const seen: Array<{ status: number | undefined; retryAfterMs: number | undefined }> = [];
      const index = createPineconeIndex({
        host: standIn.url,
        apiKey: 'local-key',
        dimensions: DIMENSIONS,
        clock,
        retry: {
          jitter: 0,
          onRetry: ({ error }) => {
            const provider = error as ProviderError;
            seen.push({ status: provider.status, retryAfterMs: provider.retryAfterMs });
          },
        },
      });
      standIn.scheduleErrors([scheduled]);
      await driving(clock, index.upsert('wait-story', [record('wait-story', 'a')]));
      // Without the header the wait would be the backoff's 500 ms.
      expect(clock.sleeps, label).toEqual([wait]);
      expect(seen, label).toEqual([{ status: scheduled.status, retryAfterMs: wait }]);
    }
    expect(standIn.namespaces()['wait-story']).toBe(1);
  });

  it('a missing API key is a ValidationError when the index is created, naming what to set', () => {
    const saved = process.env.PINECONE_API_KEY;
    delete process.env.PINECONE_API_KEY;
    try {
      let error: unknown;
      try {
        createPineconeIndex({ host: standIn.url, dimensions: DIMENSIONS });
      } catch (caught) {
        error = caught;
      }
      expect(ValidationError.isInstance(error), String(error)).toBe(true);
      expect((error as ValidationError).message).toMatch(/apiKey.*PINECONE_API_KEY/);
      expect((error as ValidationError).problems[0]?.path).toBe('options.apiKey');
      // From the environment it is enough; with a client given as index none is needed.
      process.env.PINECONE_API_KEY = 'from-env';
      expect(() => createPineconeIndex({ host: standIn.url, dimensions: DIMENSIONS })).not.toThrow();
    } finally {
      if (saved === undefined) delete process.env.PINECONE_API_KEY;
      else process.env.PINECONE_API_KEY = saved;
    }
    // The SDK's own configuration errors never escape raw.
    const mapped = toProviderError(
      'query',
      new Errors.PineconeConfigurationError('The client configuration must have apiKey'),
    );
    expect(ValidationError.isInstance(mapped)).toBe(true);
    expect(mapped.isRetryable).toBe(false);
  });

  it('keeps each upsert within maxRequestBytes when the namespace is long', async () => {
    // A namespace of 430 bytes as JSON: a prefix in a script of three bytes a character, and a story id of 128.
    const namespacePrefix = '物語'.repeat(50);
    const storyId = `s${'x'.repeat(127)}`;
    const records = Array.from({ length: 30 }, (_, i) => record(storyId, `r${String(i).padStart(2, '0')}`));
    // Learn one record's size from what the client sends: two bodies differ by one record and its comma.
    const probeIndex = createPineconeIndex({ host: standIn.url, apiKey: 'k', dimensions: DIMENSIONS });
    const before = standIn.requests.length;
    await probeIndex.upsert(storyId, records.slice(0, 1));
    await probeIndex.upsert(storyId, records.slice(0, 2));
    const [one, two] = standIn.requests
      .slice(before)
      .filter((request) => request.path === '/vectors/upsert')
      .map((request) => request.bodyBytes);
    const perRecord = two! - one!;
    // A limit that a fixed 300-byte allowance for the body around the records fills exactly with 10 records.
    const limit = 300 + 10 * perRecord;
    const tight = await startPineconeStandIn({ dimension: DIMENSIONS, limits: { maxRequestBytes: limit } });
    try {
      const index = createPineconeIndex({
        host: tight.url,
        apiKey: 'k',
        dimensions: DIMENSIONS,
        namespacePrefix,
        maxRequestBytes: limit,
        retry: { maxRetries: 0 },
      });
      await index.upsert(storyId, records);
      const upserts = tight.requests.filter((request) => request.path === '/vectors/upsert');
      expect(upserts.every((request) => request.status === 200 && request.bodyBytes <= limit)).toBe(true);
      expect(upserts.length).toBeGreaterThan(3);
      expect(tight.namespaces()[namespacePrefix + storyId]).toBe(30);
    } finally {
      await tight.close();
    }
    // The same rule, exactly: the body the SDK sends for each batch fits.
    const namespace = namespacePrefix + storyId;
    const items = Array.from({ length: 50 }, (_, i) => ({ id: `r${String(i).padStart(2, '0')}`, pad: 'p'.repeat(90) }));
    const itemBytes = JSON.stringify(items[0]).length + 1;
    for (const maxBytes of [300 + 7 * itemBytes, 2_000 + 3 * itemBytes]) {
      for (const batch of cutBatches(items, 1_000, maxBytes, namespace)) {
        expect(Buffer.byteLength(JSON.stringify({ vectors: batch, namespace }))).toBeLessThanOrEqual(maxBytes);
      }
    }
  });

  it('refuses booleans in $in and $nin before sending, as Pinecone would refuse them', async () => {
    const index = createPineconeIndex({ host: standIn.url, apiKey: 'k', dimensions: DIMENSIONS });
    await index.upsert('flags', [record('flags', 'a')]);
    const before = standIn.requests.length;
    const query = index.query('flags', {
      vector: record('flags', 'a').values,
      topK: 1,
      filter: { $or: [{ type: 'scene' }, { chapterId: { $in: ['c1', true] } }] },
    });
    await expect(query).rejects.toThrow(ValidationError);
    await expect(query).rejects.toThrow(/query\.filter\.\$or\.1\.chapterId\.\$in/);
    await expect(index.delete('flags', { filter: { sourceId: { $nin: [false] } } })).rejects.toThrow(ValidationError);
    expect(standIn.requests.length).toBe(before);
    // $eq keeps its booleans.
    await expect(
      index.query('flags', { vector: record('flags', 'a').values, topK: 1, filter: { sourceId: { $ne: true } } }),
    ).resolves.toHaveLength(1);
    // And the stand-in answers a boolean list as Pinecone does, with a 400.
    const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
    const direct = await sdk
      .query({ vector: [...record('flags', 'a').values], topK: 1, namespace: 'flags', filter: { a: { $in: [true] } } })
      .catch((caught: unknown) => caught);
    expect((direct as Error).name).toBe('PineconeBadRequestError');
  });

  it('refuses an all-zero dense vector: the stand-in with 400 as Pinecone does, the adapter before sending', async () => {
    const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
    const direct = await sdk
      .upsert({ records: [{ id: 'zero', values: new Array(DIMENSIONS).fill(0) }], namespace: 'zeros' })
      .catch((caught: unknown) => caught);
    expect((direct as Error).name).toBe('PineconeBadRequestError');
    expect((direct as Error).message).toMatch(/at least one non-zero value/);
    expect(standIn.namespaces().zeros).toBeUndefined();

    const index = createPineconeIndex({ host: standIn.url, apiKey: 'k', dimensions: DIMENSIONS });
    const before = standIn.requests.length;
    const zero = { ...record('zeros', 'zero'), values: new Float32Array(DIMENSIONS) };
    await expect(index.upsert('zeros', [zero])).rejects.toThrow(ValidationError);
    expect(standIn.requests.length).toBe(before);
  });
});

describe('Pinecone hybrid limits', () => {
  let hybrid: PineconeStandIn;
  let index: PineconeVectorIndex;
  beforeAll(async () => {
    hybrid = await startPineconeStandIn({ dimension: DIMENSIONS, metric: 'dotproduct' });
    index = createPineconeIndex({ host: hybrid.url, apiKey: 'k', dimensions: DIMENSIONS, metric: 'dotproduct' });
  });
  afterAll(() => hybrid.close());

  const sparse = (count: number) => ({
    indices: Array.from({ length: count }, (_, i) => i * 3),
    values: Array.from({ length: count }, () => 0.1),
  });

  it('accepts 1,000 sparse values and refuses 1,001 before sending, on records and on queries', async () => {
    const at = (count: number): PineconeRecordInput => ({
      ...record('sparse', `s${count}`),
      sparseValues: sparse(count),
    });
    await index.upsert('sparse', [at(1_000)]);
    const before = hybrid.requests.length;
    await expect(index.upsert('sparse', [at(1_001)])).rejects.toThrow(/1001 non-zero values/);
    await expect(
      index.query('sparse', { vector: record('sparse', 'q').values, topK: 1, sparseVector: sparse(1_001) } as never),
    ).rejects.toThrow(ValidationError);
    expect(hybrid.requests.length).toBe(before);
    expect(hybrid.namespaces().sparse).toBe(1);
    // The stand-in refuses what Pinecone refuses.
    const sdk = new Pinecone({ apiKey: 'k', maxRetries: 0 }).index({ name: 'hybrid', host: hybrid.url });
    const direct = await sdk
      .upsert({ records: [{ id: 'big', values: [...record('x', 'big').values], sparseValues: sparse(1_001) }] })
      .catch((caught: unknown) => caught);
    expect((direct as Error).name).toBe('PineconeBadRequestError');
  });
});
