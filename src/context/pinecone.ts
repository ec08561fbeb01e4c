/**
 * The Pinecone `VectorIndex`, on `@pinecone-database/pinecone` 8: one namespace per story, upserts cut into batches
 * by record count and by request bytes, metadata mapped within Pinecone's rules, the port's filter language
 * translated to Pinecone's operators, and every call retried with storyloom's one retry policy.
 *
 * Every request runs under a timeout and the caller's `AbortSignal`. Both reach the socket through the `fetchApi`
 * the SDK accepts: the adapter hands its client a fetch that reads the current attempt's signal from an
 * `AsyncLocalStorage` (one client serves concurrent calls, so the signal cannot be a closure), and that keeps the
 * status, URL, `retry-after` and body of a failed response, which the SDK's errors drop (the body and URL tell a
 * story's missing namespace, nothing to delete, from a missing index).
 *
 * The SDK is imported on first use, so a missing package surfaces as a `MissingDependencyError` that says what to
 * install instead of a module-resolution crash at import time.
 *
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Index, RecordMetadata } from '@pinecone-database/pinecone';
import { timeoutProblems, untilAborted } from '../core/abort.js';
import { type Clock, systemClock } from '../core/clock.js';
import {
  AbortedError,
  ClosedError,
  MissingDependencyError,
  ProviderError,
  StoryloomError,
  throwIfAborted,
  ValidationError,
  type ValidationProblem,
} from '../core/errors.js';
import { parseRetryAfter, type RetryOptions, withRetry } from '../core/retry.js';
import { type VectorMetadata, VectorMetadataSchema, type VectorRecord } from '../state/schema.js';
import {
  FILTERABLE_FIELDS,
  type FieldCondition,
  type MetadataFilter,
  matchesEverything,
  type Scalar,
  validateFilter,
} from './filter.js';
import {
  checkDeletion,
  checkIdList,
  checkQueryVector,
  checkStoryId,
  checkTopK,
  checkUpsertBatch,
  copyMetadata,
  inspectVector,
  invalidArgument,
} from './index-arguments.js';
import type { VectorIndex, VectorIndexCapabilities, VectorMatch, VectorQuery } from './vector-index.js';

/** Sparse values of a record or query, for hybrid search on a `dotproduct` index; empty ones mean none. */
export interface SparseValues {
  indices: number[];
  values: number[];
}

/**
 * Options of `createPineconeIndex`. Give `host` (the index host from the Pinecone console, or a local stand-in's URL)
 * with `apiKey`, or `indexName` with `apiKey` (the SDK looks the host up), or `index` (a client you built).
 *
 * Each request is bounded by `timeoutMs` and by the call's `signal`: either one closes the connection at once. A
 * timed-out request is a retryable `ProviderError` (code `TIMEOUT`) and goes through the retry policy like a 503; an
 * abort rejects with `AbortedError` and is not retried. A 429 or 5xx answer's `retry-after` sets the wait before the
 * next attempt.
 *
 * @example
 * ```ts
 * import { createPineconeIndex, type PineconeIndexOptions } from 'storyloom/pinecone';
 * const options: PineconeIndexOptions = {
 *   host: 'stories-abc123.svc.aped-4627-b74a.pinecone.io',
 *   apiKey: process.env.PINECONE_API_KEY,
 *   dimensions: 1536,
 *   namespacePrefix: 'prod-',
 *   timeoutMs: 10_000,
 * };
 * const index = createPineconeIndex(options);
 * const controller = new AbortController();
 * await index.deleteStory('story-1', { signal: controller.signal });
 * ```
 */
export interface PineconeIndexOptions {
  /**
   * A data-plane client you built. Create its `Pinecone` with `maxRetries: 0` (this adapter retries with storyloom's
   * policy and the SDK's own retries would multiply it) and with `fetchApi: createPineconeFetch()`: without it the
   * adapter cannot reach the connection, so a timed-out or aborted call still returns on time but its request runs
   * on in the background, `retry-after` is not seen, the index's metric is not checked (its dimension still is), and
   * a 404 of a delete is told from a missing namespace by its route alone.
   *
   * @example
   * ```ts
   * import { Pinecone } from '@pinecone-database/pinecone';
   * import { createPineconeFetch, createPineconeIndex } from 'storyloom/pinecone';
   *
   * const pinecone = new Pinecone({ apiKey: 'key', maxRetries: 0, fetchApi: createPineconeFetch() });
   * const index = createPineconeIndex({ index: pinecone.index({ name: 'stories' }), dimensions: 1536 });
   * ```
   */
  index?: Index<RecordMetadata>;
  /** The index host; with `apiKey`. */
  host?: string;
  /** The index name; with `apiKey`, and `host` when known (saves a control-plane call). */
  indexName?: string;
  /**
   * Pinecone API key, needed unless `index` is given. Default `process.env.PINECONE_API_KEY`, read when the index is
   * created: with neither, `createPineconeIndex` throws a `ValidationError`.
   */
  apiKey?: string;
  /**
   * Length of every vector; must equal the index's dimension and the embedder's. Checked against the index before the
   * first upsert or query: a mismatch is a `ValidationError` naming both.
   */
  dimensions: number;
  /** Prepended to the story id to name its namespace. Default none. */
  namespacePrefix?: string;
  /**
   * The index's metric. Default `cosine`. With `dotproduct` the adapter stores unit vectors (and each record's norm in
   * metadata, to give `fetch` the values back as given), so dense scores are still cosine similarities, and accepts
   * sparse values for hybrid search: `sparseValues` on upserted records and `sparseVector` on queries (see
   * `PineconeRecordInput`, `PineconeQuery`). A hybrid score is the cosine plus the sparse dot product; an empty sparse
   * vector (a sparse encoder that found no term) is no sparse part. Must be the index's: checked before the first
   * upsert or query, a mismatch is a `ValidationError` naming both.
   */
  metric?: 'cosine' | 'dotproduct';
  /**
   * The retry policy of every call (429, 5xx, timeouts and dropped connections are retried). Default 2 retries from
   * 0.5 s; a provider's `retry-after` wins over the backoff.
   */
  retry?: Omit<RetryOptions, 'signal' | 'clock'>;
  /** Time source of retry waits; tests pass a `ManualClock`. `timeoutMs` is measured in real time regardless. */
  clock?: Clock;
  /** Most bytes of one upsert request. Default 2,000,000 (Pinecone's limit is 2 MB). */
  maxRequestBytes?: number;
  /**
   * Longest wait for one HTTP request (one attempt: the retry policy may make more), in ms, from 1 to 2,147,483,647.
   * Default 30,000. The request is then cancelled and retried as a retryable `ProviderError` with code `TIMEOUT`.
   *
   * @example
   * ```ts
   * import { createPineconeIndex } from 'storyloom/pinecone';
   * const index = createPineconeIndex({ indexName: 'stories', dimensions: 1536, timeoutMs: 5_000 });
   * ```
   */
  timeoutMs?: number;
  /** The `fetch` under the client the adapter builds (not used with `index`). Default the global `fetch`. */
  fetch?: typeof fetch;
}

/**
 * The Pinecone `VectorIndex`. `deleteStory` takes a `signal` as the other calls do.
 *
 * @example
 * ```ts
 * import { createPineconeIndex, type PineconeVectorIndex } from 'storyloom/pinecone';
 * const index: PineconeVectorIndex = createPineconeIndex({ indexName: 'stories', dimensions: 1536 });
 * await index.deleteStory('story-1', { signal: AbortSignal.timeout(10_000) });
 * ```
 */
export interface PineconeVectorIndex extends VectorIndex {
  deleteStory(storyId: string, options?: { signal?: AbortSignal }): Promise<void>;
}

/** An upserted record with optional sparse values (`dotproduct` indexes only). */
export type PineconeRecordInput = Parameters<VectorIndex['upsert']>[1][number] & { sparseValues?: SparseValues };

/** A query with an optional sparse part (`dotproduct` indexes only). */
export type PineconeQuery = VectorQuery & { sparseVector?: SparseValues };

/** Pinecone's limits. */
export const PINECONE_LIMITS = Object.freeze({
  maxUpsertRecords: 1_000,
  maxRequestBytes: 2_000_000,
  maxMetadataBytes: 40_960,
  maxTopK: 10_000,
  /** A query's response, values and metadata included. */
  maxQueryResultBytes: 4 * 1024 * 1024,
  /** Ids per fetch: they travel in the URL, which servers cap at a few kilobytes. */
  maxFetchIds: 100,
  /** Bytes of `ids=` query parameters per fetch, percent-encoded (an id of 128 characters can take 384). */
  maxFetchQueryBytes: 6_000,
  maxDeleteIds: 1_000,
  /** Non-zero entries of one sparse vector on a hybrid (`dotproduct`) index. */
  maxSparseValues: 1_000,
});

/** Default of `timeoutMs`: ample for a query or a 2 MB upsert, short enough that a hung host does not hold a Lambda. */
const DEFAULT_TIMEOUT_MS = 30_000;

/** Metadata key of a record's original norm on a `dotproduct` index. */
const NORM_KEY = 'sl_norm';

type PineconeModule = typeof import('@pinecone-database/pinecone');
let sdkLoading: Promise<PineconeModule> | undefined;

function loadPinecone(): Promise<PineconeModule> {
  sdkLoading ??= import('@pinecone-database/pinecone').catch((error: unknown) => {
    sdkLoading = undefined;
    throw new MissingDependencyError('@pinecone-database/pinecone', 'storyloom/pinecone', { cause: error });
  });
  return sdkLoading;
}

/** One attempt of one call, as the fetch under the SDK sees it. */
interface Exchange {
  /** Fires on the caller's abort and on the attempt's timeout. */
  signal: AbortSignal;
  /** The last response that was not a success, when the last request got one, with the URL that answered it. */
  failure?: { status: number; url: string; retryAfter: string | undefined; retryAfterMs: string | undefined };
  /**
   * The last response's JSON body, when it failed (its gRPC `code` and `message` tell a missing namespace from a
   * missing index, which the SDK's errors do not) or when `keepBody` asks for it.
   */
  body?: { code?: unknown; message?: unknown; metric?: unknown } | undefined;
  /** Set by the index check: the SDK drops the `metric` of the index description, so the fetch keeps the body. */
  keepBody?: boolean;
}

/** The attempt a request belongs to: the SDK's client is shared by concurrent calls, so it is found by context. */
const exchanges = new AsyncLocalStorage<Exchange>();

/**
 * A `fetch` for `new Pinecone({ fetchApi })` that lets `createPineconeIndex` cancel a request (on its timeout or the
 * caller's abort) and read a failed response's status and `retry-after`, which the SDK's errors do not carry. The
 * adapter gives one to the clients it builds; pass one when you build the client yourself. Outside a call of the
 * adapter it is `base` unchanged.
 *
 * @param base The fetch that sends the requests. Default the global `fetch`, looked up at each request.
 *
 * @example
 * ```ts
 * import { Pinecone } from '@pinecone-database/pinecone';
 * import { createPineconeFetch, createPineconeIndex } from 'storyloom/pinecone';
 *
 * const pinecone = new Pinecone({ apiKey: process.env.PINECONE_API_KEY!, maxRetries: 0, fetchApi: createPineconeFetch() });
 * const index = createPineconeIndex({ index: pinecone.index({ name: 'stories' }), dimensions: 1536, timeoutMs: 5_000 });
 * ```
 */
export function createPineconeFetch(base?: typeof fetch): typeof fetch {
  return async (input, init) => {
    const send = base ?? globalThis.fetch;
    const exchange = exchanges.getStore();
    if (!exchange) return send(input, init);
    exchange.failure = exchange.body = undefined;
    const signal = init?.signal ? AbortSignal.any([init.signal, exchange.signal]) : exchange.signal;
    const response = await send(input, { ...init, signal });
    if (!response.ok) {
      exchange.failure = {
        status: response.status,
        url: input instanceof Request ? input.url : String(input),
        retryAfter: response.headers.get('retry-after') ?? undefined,
        retryAfterMs: response.headers.get('retry-after-ms') ?? undefined,
      };
    }
    // Read from a clone, so the SDK still reads its own; a body that is not JSON is no body.
    if (!response.ok || exchange.keepBody) {
      exchange.body = await response
        .clone()
        .json()
        .catch(() => undefined);
    }
    return response;
  };
}

/**
 * Creates a `VectorIndex` on a Pinecone index, with a namespace per story (`namespacePrefix + storyId`).
 *
 * Records are validated whole before anything is sent (a bad record fails the call and stores nothing); a batch
 * larger than 1,000 records or 2 MB is sent as several requests, so a failure in a later request can leave the earlier
 * ones written, and upserting the same records again repairs it. Pinecone is eventually consistent: a read right
 * after a write may not see it (`capabilities.readAfterWrite` is false). `delete` returns -1 (Pinecone does not say
 * how many it deleted). `stats` reads the story's namespace alone, and `deleteStory` deletes the namespace (not only
 * its records, which would leave it counting against the index's cap on namespaces); a story that has none holds
 * nothing, but any other 404 (a misspelt index name) is a `ProviderError`. Both use the namespace routes of API
 * 2026-04, which serverless indexes have and pod-based ones do not: the adapter is for serverless indexes. The first
 * upsert or query of an instance reads the index's dimension and metric, and refuses options that differ. Every call
 * takes a `signal`; each request is bounded by `timeoutMs` (see `PineconeIndexOptions`).
 *
 * @example
 * ```ts
 * import { createPineconeIndex } from 'storyloom/pinecone';
 *
 * const index = createPineconeIndex({ indexName: 'stories', apiKey: process.env.PINECONE_API_KEY, dimensions: 1536 });
 * const matches = await index.query('lighthouse', {
 *   vector: new Float32Array(1536).fill(0.01),
 *   topK: 8,
 *   filter: { type: 'scene', characters: { $in: ['mira'] } },
 *   signal: AbortSignal.timeout(5_000),
 * });
 * ```
 */
export function createPineconeIndex(options: PineconeIndexOptions): PineconeVectorIndex {
  const settings = checkOptions(options);
  const { dimensions, namespacePrefix, metric, maxRequestBytes, timeoutMs } = settings;
  const clock = options.clock ?? systemClock;
  let clientLoading: Promise<Index<RecordMetadata>> | undefined = options.index
    ? Promise.resolve(options.index)
    : undefined;
  let closed = false;

  const client = (): Promise<Index<RecordMetadata>> => {
    clientLoading ??= loadPinecone().then((sdk) => {
      const pinecone = new sdk.Pinecone({
        apiKey: settings.apiKey,
        maxRetries: 0,
        fetchApi: createPineconeFetch(options.fetch),
      });
      return pinecone.index({ name: options.indexName ?? '', host: options.host } as never) as Index<RecordMetadata>;
    });
    clientLoading.catch(() => {
      clientLoading = undefined;
    });
    return clientLoading;
  };

  const open = (operation: string): void => {
    if (closed) throw new ClosedError(`Cannot ${operation}: the Pinecone index is closed`);
  };

  /**
   * One request, bounded by the timeout and the caller's signal; failures become typed errors. `run` gets the attempt's
   * exchange, to read what the fetch kept of the response.
   */
  const attempt = async <T>(
    operation: string,
    signal: AbortSignal | undefined,
    run: (index: Index<RecordMetadata>, exchange: Exchange) => Promise<T>,
  ): Promise<T> => {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`Pinecone ${operation} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const forwardAbort = () => controller.abort(signal?.reason);
    if (signal?.aborted) forwardAbort();
    else signal?.addEventListener('abort', forwardAbort, { once: true });
    const exchange: Exchange = { signal: controller.signal };
    try {
      return await untilAborted(
        controller.signal,
        exchanges.run(exchange, async () => run(await client(), exchange)),
      );
    } catch (error) {
      if (signal?.aborted) throw new AbortedError(undefined, { cause: signal.reason });
      if (timedOut) {
        throw new ProviderError(`Pinecone ${operation} timed out after ${timeoutMs} ms`, {
          provider: 'pinecone',
          code: 'TIMEOUT',
          isRetryable: true,
          cause: error,
        });
      }
      const failure = exchange.failure;
      throw toProviderError(
        operation,
        error,
        failure && {
          status: failure.status,
          retryAfterMs: parseRetryAfter(failure.retryAfterMs, failure.retryAfter, clock.now()),
        },
      );
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', forwardAbort);
    }
  };

  /** One Pinecone call under the retry policy. */
  const call = <T>(
    operation: string,
    signal: AbortSignal | undefined,
    run: (index: Index<RecordMetadata>, exchange: Exchange) => Promise<T>,
  ): Promise<T> =>
    withRetry(() => attempt(operation, signal, run), {
      ...options.retry,
      signal,
      ...(options.clock ? { clock: options.clock } : {}),
    });

  const namespaceOf = (storyId: string) => namespacePrefix + storyId;

  /** The index's dimension and metric, once read. */
  let described: Record<string, unknown> | undefined;

  /**
   * Refuses options that do not match the index, before the first upsert or query: with the wrong metric the adapter
   * stores and scores vectors wrongly with no error at all (a cosine adapter on a `dotproduct` index clamps scores to
   * ±1), and a wrong dimension fails every request. Read once per instance from the index's stats, in one attempt
   * under the call's own signal (calls that start before the first read answers make their own). The check is a
   * safeguard, not the call: should its attempt fail in a way a retry can mend (the stats route rate-limited, a
   * timeout), the call goes ahead unchecked and a later one reads again. Under a client built without
   * `createPineconeFetch` the metric is out of reach (the SDK drops it) and only the dimension is checked.
   */
  const checkIndex = async (signal: AbortSignal | undefined): Promise<void> => {
    if (!described) {
      try {
        described = await attempt('describeIndexStats', signal, async (index, exchange) => {
          exchange.keepBody = true;
          const { dimension } = await index.describeIndexStats();
          return { dimensions: dimension, metric: exchange.body?.metric };
        });
      } catch (error) {
        if (AbortedError.isInstance(error) || !(StoryloomError.isInstance(error) && error.isRetryable)) throw error;
        return;
      }
    }
    // Each option against the index's value, where the index told it.
    const problems = Object.entries({ dimensions, metric }).flatMap(([key, value]) => {
      const found = described?.[key];
      return found === undefined || found === value
        ? []
        : [{ path: `options.${key}`, message: `is ${value}, the index's is ${String(found)}` }];
    });
    if (problems[0]) throw optionsError(problems);
  };

  return {
    specificationVersion: 'v1',
    provider: 'pinecone',
    dimensions,
    capabilities: {
      maxUpsertBatch: PINECONE_LIMITS.maxUpsertRecords,
      maxTopK: PINECONE_LIMITS.maxTopK,
      maxQueryResultBytes: PINECONE_LIMITS.maxQueryResultBytes,
      maxMetadataBytes: PINECONE_LIMITS.maxMetadataBytes,
      deleteByFilter: true,
      readAfterWrite: false,
      durable: true,
    } satisfies VectorIndexCapabilities,

    async upsert(storyId, records, upsertOptions) {
      open('upsert');
      checkStoryId(storyId);
      throwIfAborted(upsertOptions?.signal);
      const prepared = prepareRecords(storyId, records, dimensions, metric);
      await checkIndex(upsertOptions?.signal);
      const namespace = namespaceOf(storyId);
      for (const batch of cutBatches(prepared, PINECONE_LIMITS.maxUpsertRecords, maxRequestBytes, namespace)) {
        throwIfAborted(upsertOptions?.signal);
        await call('upsert', upsertOptions?.signal, (index) => index.upsert({ records: batch, namespace }));
      }
    },

    async query(storyId, query: PineconeQuery) {
      open('query');
      checkStoryId(storyId);
      if (typeof query !== 'object' || query === null)
        throw invalidArgument('query', 'must be an object with vector and topK');
      throwIfAborted(query.signal);
      const norm = Math.sqrt(checkQueryVector(query.vector, dimensions));
      checkTopK(query.topK, PINECONE_LIMITS.maxTopK);
      if (query.filter !== undefined) validateFilter(query.filter, 'query.filter');
      const sparseVector =
        query.sparseVector === undefined ? undefined : checkSparse(query.sparseVector, metric, 'query.sparseVector');
      const filter = query.filter === undefined ? undefined : toPineconeFilter(query.filter, 'query.filter');
      const vector = Array.from(query.vector, (value) => (metric === 'dotproduct' ? value / norm : value));
      await checkIndex(query.signal);
      const response = await call('query', query.signal, (index) =>
        index.query({
          vector,
          topK: query.topK,
          namespace: namespaceOf(storyId),
          includeMetadata: true,
          includeValues: query.includeValues === true,
          ...(filter === undefined ? {} : { filter }),
          ...(sparseVector ? { sparseVector } : {}),
        }),
      );
      const matches: VectorMatch[] = (response.matches ?? []).map((match) => {
        const metadata = (match.metadata ?? {}) as Record<string, unknown>;
        const raw = match.score ?? 0;
        const result: VectorMatch = {
          id: match.id,
          // A hybrid score is not a cosine; a dense one is clamped, as float32 rounding can step past ±1.
          score: sparseVector ? raw : Math.max(-1, Math.min(1, raw)),
          metadata: fromPineconeMetadata(metadata),
        };
        if (query.includeValues === true && match.values) result.values = restoreValues(match.values, metadata);
        return result;
      });
      // Pinecone does not promise an order among equal scores; the port does.
      return matches.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    },

    async fetch(storyId, ids, fetchOptions) {
      open('fetch');
      checkStoryId(storyId);
      checkIdList(ids, 'ids');
      throwIfAborted(fetchOptions?.signal);
      const unique = [...new Set(ids)];
      const found = new Map<string, VectorRecord>();
      for (const batch of fetchBatches(unique)) {
        const response = await call('fetch', fetchOptions?.signal, (index) =>
          index.fetch({ ids: batch, namespace: namespaceOf(storyId) }),
        );
        for (const [id, record] of Object.entries(response.records ?? {})) {
          const metadata = (record.metadata ?? {}) as Record<string, unknown>;
          found.set(id, {
            id,
            values: restoreValues(record.values ?? [], metadata),
            metadata: fromPineconeMetadata(metadata),
          });
        }
      }
      return ids.flatMap((id) => {
        const record = found.get(id);
        if (!record) return [];
        // The same id asked twice gets two independent copies.
        return [{ ...record, values: Float32Array.from(record.values), metadata: copyMetadata(record.metadata) }];
      });
    },

    async delete(storyId, deletion, deleteOptions) {
      open('delete');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      const target = checkDeletion(deletion);
      const namespace = namespaceOf(storyId);
      if ('ids' in target) {
        const unique = [...new Set(target.ids)];
        for (let start = 0; start < unique.length; start += PINECONE_LIMITS.maxDeleteIds) {
          const batch = unique.slice(start, start + PINECONE_LIMITS.maxDeleteIds);
          await call('delete', deleteOptions?.signal, (index, exchange) =>
            unlessNamespaceMissing(index.deleteMany({ ids: batch, namespace }), exchange),
          );
        }
      } else {
        const filter = toPineconeFilter(target.filter, 'deletion.filter');
        await call('delete', deleteOptions?.signal, (index, exchange) =>
          unlessNamespaceMissing(index.deleteMany({ filter, namespace }), exchange),
        );
      }
      return -1;
    },

    async stats(storyId, statsOptions) {
      open('read stats');
      checkStoryId(storyId);
      throwIfAborted(statsOptions?.signal);
      // The story's namespace alone: the index's stats list every namespace of the index (hundreds of kilobytes with
      // thousands of stories), under a rate limit that every story shares.
      const description = await call('describeNamespace', statsOptions?.signal, (index, exchange) =>
        unlessNamespaceMissing(index.describeNamespace(namespaceOf(storyId)), exchange),
      );
      return { count: Number(description?.recordCount ?? 0), dimensions };
    },

    async deleteStory(storyId, deleteOptions?: { signal?: AbortSignal }) {
      open('delete a story');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      // The namespace itself, not only its records (`deleteAll` leaves it, and it keeps counting against the index's
      // cap on namespaces).
      await call('deleteNamespace', deleteOptions?.signal, (index, exchange) =>
        unlessNamespaceMissing(index.deleteNamespace(namespaceOf(storyId)), exchange),
      );
    },

    async close() {
      closed = true;
    },
  };
}

/**
 * `pending`, or undefined when it failed because the story's namespace does not exist (a story never written, or
 * deleted), which a delete or a count takes for "nothing there". That is Pinecone's 404 with gRPC code 5, "Namespace
 * not found", from the data plane's delete or namespace routes, and no other 404: one from the control plane (a
 * misspelt index name, so nothing was deleted at all) or from a route the host lacks is a failure. Under a client
 * built without `createPineconeFetch` the body is out of reach, and a 404 of those routes (named in the SDK's message)
 * is taken as the namespace's.
 */
function unlessNamespaceMissing<T>(pending: Promise<T>, exchange: Exchange): Promise<T | undefined> {
  return pending.catch((error: unknown) => {
    const { failure, body } = exchange;
    const url = failure ? failure.url : /A call to (\S+) returned HTTP status 404/.exec(String(error))?.[1];
    if (
      /\/(vectors\/delete|namespaces\/[^/]+)$/.test(url ?? '') &&
      (!failure || (failure.status === 404 && body?.code === 5 && /namespace not found/i.test(String(body.message))))
    ) {
      return undefined;
    }
    throw error;
  });
}

const STATUS_BY_ERROR_NAME: Readonly<Record<string, number>> = {
  PineconeBadRequestError: 400,
  PineconeAuthorizationError: 401,
  PineconeNotFoundError: 404,
  PineconeMethodNotAllowedError: 405,
  PineconeConflictError: 409,
  PineconeUnprocessableEntityError: 422,
  PineconeInternalServerError: 500,
  PineconeNotImplementedError: 501,
  PineconeUnavailableError: 503,
};

/** What the fetch under the SDK saw of a failed response: its status and the wait it asked for. */
export interface PineconeFailedResponse {
  status: number;
  /** From `retry-after` (seconds or an HTTP date) or `retry-after-ms`. */
  retryAfterMs?: number | undefined;
}

/**
 * Maps an SDK error to a typed error: a `ProviderError` with the HTTP status (429 and 5xx retryable, network failures
 * too) and the wait a 429 or 503 asked for, when `response` says; a `ValidationError` for the SDK's configuration and
 * argument errors, which no retry cures.
 */
export function toProviderError(operation: string, error: unknown, response?: PineconeFailedResponse): StoryloomError {
  if (StoryloomError.isInstance(error)) return error;
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error);
  if (name === 'PineconeConfigurationError' || name === 'PineconeArgumentError') {
    return new ValidationError(`Pinecone ${operation}: ${message}`, {
      cause: error,
      problems: [{ path: name === 'PineconeConfigurationError' ? 'options' : operation, message }],
    });
  }
  const parsed = /(?:status(?: code)?:?|HTTP status)\s*(\d{3})/i.exec(message);
  // The response itself is the surest source: with maxRetries 0 the SDK turns a 5xx into an error without a status.
  const status = response?.status ?? STATUS_BY_ERROR_NAME[name] ?? (parsed ? Number(parsed[1]) : undefined);
  const network = name === 'PineconeConnectionError' || name === 'PineconeTimeoutError';
  return new ProviderError(
    `Pinecone ${operation} failed${status === undefined ? '' : ` (HTTP ${status})`}: ${message}`,
    {
      provider: 'pinecone',
      status,
      cause: error,
      ...(response?.retryAfterMs === undefined ? {} : { retryAfterMs: response.retryAfterMs }),
      ...(status === undefined ? { isRetryable: network || name === 'PineconeMaxRetriesExceededError' } : {}),
    },
  );
}

/**
 * Cuts ids into fetch requests: at most `maxFetchIds` each, and at most `maxFetchQueryBytes` of query string, as the
 * ids travel percent-encoded in the URL (`&ids=` and the id). Cutting by count alone sent URLs of 30 KB for ids
 * holding `:`, which servers refuse (431).
 */
export function fetchBatches(
  ids: readonly string[],
  maxIds: number = PINECONE_LIMITS.maxFetchIds,
  maxBytes: number = PINECONE_LIMITS.maxFetchQueryBytes,
): string[][] {
  const batches: string[][] = [];
  let batch: string[] = [];
  let bytes = 0;
  for (const id of ids) {
    const size = encodeURIComponent(id).length + '&ids='.length;
    if (batch.length > 0 && (batch.length >= maxIds || bytes + size > maxBytes)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(id);
    bytes += size;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

/** A record ready to send, with its estimated JSON size. */
interface PreparedRecord {
  id: string;
  values: number[];
  metadata: Record<string, string | number | boolean | string[]>;
  sparseValues?: SparseValues;
}

/**
 * Splits records into requests of at most `maxRecords` records and `maxBytes` bytes of JSON, counting the body around
 * them, `{"vectors":[...],"namespace":"..."}`, with the namespace they go to. A single record over `maxBytes` cannot
 * be sent at all and is a `ValidationError`.
 */
export function cutBatches<T extends { id: string }>(
  records: readonly T[],
  maxRecords: number,
  maxBytes: number,
  namespace = '',
): T[][] {
  // The body without records; each record then adds its JSON and a comma (one too many, which errs on the safe side).
  const envelope = Buffer.byteLength(JSON.stringify({ vectors: [], namespace }), 'utf8');
  const batches: T[][] = [];
  let current: T[] = [];
  let bytes = envelope;
  for (const record of records) {
    const size = Buffer.byteLength(JSON.stringify(record), 'utf8') + 1;
    if (size + envelope > maxBytes) {
      throw invalidArgument(
        `records (id ${JSON.stringify(record.id)})`,
        `takes ${size} bytes as JSON; a request to namespace ${JSON.stringify(namespace)} holds at most ${maxBytes - envelope}`,
      );
    }
    if (current.length > 0 && (current.length >= maxRecords || bytes + size > maxBytes)) {
      batches.push(current);
      current = [];
      bytes = envelope;
    }
    current.push(record);
    bytes += size;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/**
 * Our metadata in Pinecone's terms: only strings, numbers, booleans and lists of strings; no undefined and no empty
 * list (they read back as their defaults); `text` shortened so the whole stays within `maxBytes` (40 KB). A record
 * whose other fields alone pass it (a scene's 64 places and 64 themes of long CJK names, which the schema allows)
 * first loses its last themes, then its last places, as few as it takes: never its characters, which a point of view
 * filters on.
 */
export function toPineconeMetadata(
  metadata: VectorMetadata,
  extra: Record<string, number> = {},
  maxBytes: number = PINECONE_LIMITS.maxMetadataBytes,
): Record<string, string | number | boolean | string[]> {
  const out: Record<string, string | number | boolean | string[]> = {};
  for (const [key, value] of Object.entries(metadata)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      if (value.length > 0) out[key] = [...value];
    } else out[key] = value as string | number;
  }
  Object.assign(out, extra);
  const withoutText = () => Buffer.byteLength(JSON.stringify({ ...out, text: '' }), 'utf8');
  for (const key of ['themes', 'locations'] as const) {
    const tags = out[key];
    if (!Array.isArray(tags)) continue;
    while (tags.length > 0 && withoutText() > maxBytes) tags.pop();
    if (tags.length === 0) delete out[key];
  }
  let size = Buffer.byteLength(JSON.stringify(out), 'utf8');
  if (size > maxBytes && typeof out.text === 'string') {
    const codePoints = [...out.text];
    const sizeWith = (keep: number) => {
      out.text = codePoints.slice(0, keep).join('');
      return Buffer.byteLength(JSON.stringify(out), 'utf8');
    };
    // The longest prefix of the text (in code points, never splitting one) that fits.
    let low = 0;
    let high = codePoints.length;
    while (low < high) {
      const middle = Math.ceil((low + high) / 2);
      if (sizeWith(middle) <= maxBytes) low = middle;
      else high = middle - 1;
    }
    size = sizeWith(low);
  }
  if (size > maxBytes) {
    throw invalidArgument('metadata', `takes ${size} bytes as JSON even without its text; Pinecone allows ${maxBytes}`);
  }
  return out;
}

function fromPineconeMetadata(metadata: Record<string, unknown>): VectorMetadata {
  const { [NORM_KEY]: _norm, ...rest } = metadata;
  const parsed = VectorMetadataSchema.safeParse(rest);
  if (!parsed.success) {
    throw new ProviderError('Pinecone returned metadata that is not storyloom metadata (a foreign record?)', {
      provider: 'pinecone',
      isRetryable: false,
      cause: parsed.error,
    });
  }
  return parsed.data;
}

function restoreValues(values: readonly number[], metadata: Record<string, unknown>): Float32Array {
  const norm = metadata[NORM_KEY];
  return typeof norm === 'number' ? Float32Array.from(values, (value) => value * norm) : Float32Array.from(values);
}

/**
 * The filterable fields a stored record can lack: the optional ones (`sceneIndex`, `chapterId`) and the lists, which
 * `toPineconeMetadata` leaves out when empty. Read from the schema, so a field added there is covered here.
 */
const FIELDS_PINECONE_MAY_LACK: ReadonlySet<string> = new Set(
  FILTERABLE_FIELDS.filter((field) => {
    const absent = VectorMetadataSchema.shape[field].safeParse(undefined);
    return absent.success && (absent.data === undefined || (Array.isArray(absent.data) && absent.data.length === 0));
  }),
);

/**
 * Our filter in Pinecone's operators. Each field condition with several operators becomes an `$and` of one-operator
 * conditions, and conditions of several fields an `$and`: on list fields every operator is then checked on its own
 * (positive ones by any element, negative ones by none), which is the port's meaning.
 *
 * The port lets a missing field satisfy `$ne` and `$nin` (a thread with nobody in it is "not about the villain");
 * Pinecone matches them only where the field is set. So on a field a record can lack, `$ne` / `$nin` become
 * `{ $or: [{ field: { $exists: false } }, { field: { $ne: value } }] }`, one level deeper than the condition.
 *
 * What holds for every record is no condition: a filter that holds for every record is `undefined` (Pinecone, its
 * client already, refuses `{}` and an empty `$and`), and such parts are left out of `$and` and `$or`.
 *
 * Pinecone's `$in` and `$nin` take strings and numbers only: a boolean in their list is a `ValidationError` here
 * rather than a 400 from Pinecone (`$eq` and `$ne` take booleans).
 */
export function toPineconeFilter(filter: MetadataFilter, path = 'filter'): Record<string, unknown> | undefined {
  if (matchesEverything(filter)) return undefined;
  const parts: Array<Record<string, unknown>> = [];
  for (const [key, value] of Object.entries(filter)) {
    if (value === undefined) continue;
    if (key === '$and' || key === '$or') {
      const branches = value as MetadataFilter[];
      // An `$or` with a branch that always holds always holds itself (and is not reached: checked above).
      if (key === '$or' && branches.some(matchesEverything)) continue;
      const translated = branches.flatMap((part, index) => {
        const branch = toPineconeFilter(part, `${path}.${key}.${index}`);
        return branch === undefined ? [] : [branch];
      });
      if (translated.length > 0) parts.push(translated.length === 1 ? translated[0]! : { [key]: translated });
      continue;
    }
    if (typeof value !== 'object' || value === null) {
      parts.push({ [key]: { $eq: value as Scalar } });
      continue;
    }
    for (const [operator, operand] of Object.entries(value as FieldCondition)) {
      if (operand === undefined) continue;
      if (
        (operator === '$in' || operator === '$nin') &&
        (operand as Scalar[]).some((item) => typeof item === 'boolean')
      ) {
        throw invalidArgument(
          `${path}.${key}.${operator}`,
          `Pinecone compares ${operator} with strings and numbers only; use $eq or $ne for a boolean`,
        );
      }
      const condition = { [key]: { [operator]: operand } };
      const negative = operator === '$ne' || operator === '$nin';
      parts.push(
        negative && FIELDS_PINECONE_MAY_LACK.has(key) ? { $or: [{ [key]: { $exists: false } }, condition] } : condition,
      );
    }
  }
  // Nothing left (operator objects without an operator): no condition, never an empty `$and`.
  if (parts.length === 0) return undefined;
  return parts.length === 1 ? parts[0]! : { $and: parts };
}

interface CheckedOptions {
  dimensions: number;
  namespacePrefix: string;
  metric: 'cosine' | 'dotproduct';
  maxRequestBytes: number;
  timeoutMs: number;
  /** The key of the client the adapter builds; empty with `index`. */
  apiKey: string;
}

function checkOptions(options: PineconeIndexOptions): CheckedOptions {
  const problems: ValidationProblem[] = [];
  if (typeof options !== 'object' || options === null) throw invalidArgument('options', 'must be an object');
  const { dimensions } = options;
  if (typeof dimensions !== 'number' || !Number.isInteger(dimensions) || dimensions < 1 || dimensions > 20_000) {
    problems.push({ path: 'options.dimensions', message: 'must be an integer from 1 to 20000' });
  }
  if (options.index === undefined && options.host === undefined && options.indexName === undefined) {
    problems.push({ path: 'options', message: 'give index, host or indexName' });
  }
  const namespacePrefix = options.namespacePrefix ?? '';
  if (typeof namespacePrefix !== 'string' || namespacePrefix.length > 100) {
    problems.push({ path: 'options.namespacePrefix', message: 'must be a string of at most 100 characters' });
  }
  const metric = options.metric ?? 'cosine';
  if (metric !== 'cosine' && metric !== 'dotproduct') {
    problems.push({ path: 'options.metric', message: "must be 'cosine' or 'dotproduct'" });
  }
  const maxRequestBytes = options.maxRequestBytes ?? PINECONE_LIMITS.maxRequestBytes;
  if (!Number.isInteger(maxRequestBytes) || maxRequestBytes < 1_024 || maxRequestBytes > 2 * 1024 * 1024) {
    problems.push({ path: 'options.maxRequestBytes', message: 'must be an integer from 1024 to 2 MB' });
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  problems.push(...timeoutProblems(timeoutMs, 'options.timeoutMs'));
  if (options.fetch !== undefined && typeof options.fetch !== 'function') {
    problems.push({ path: 'options.fetch', message: 'must be a fetch function' });
  }
  // Checked now, not at the first call: a deployment missing its key fails where it is configured, with a message
  // that says what to set, instead of with the SDK's configuration error from deep inside a request.
  let apiKey = '';
  if (options.index === undefined) {
    const given = options.apiKey ?? process.env.PINECONE_API_KEY;
    if (options.apiKey !== undefined && typeof options.apiKey !== 'string') {
      problems.push({ path: 'options.apiKey', message: 'must be a string' });
    } else if (given === undefined || given.trim() === '') {
      problems.push({
        path: 'options.apiKey',
        message:
          'is missing: pass apiKey, or set the PINECONE_API_KEY environment variable (or pass a client as index)',
      });
    } else apiKey = given;
  }
  if (problems[0]) throw optionsError(problems);
  return { dimensions, namespacePrefix, metric, maxRequestBytes, timeoutMs, apiKey };
}

/** Options that are wrong, or that do not match the index: a `ValidationError` named by the first problem. */
function optionsError(problems: ValidationProblem[]): ValidationError {
  return new ValidationError(`Invalid Pinecone index options: ${problems[0]!.path}: ${problems[0]!.message}`, {
    problems,
  });
}

/**
 * Checked sparse values, or undefined for an empty vector (a sparse encoder that found no term): Pinecone refuses
 * empty `indices` (its whole upsert batch, with a 400) and the SDK refuses an empty query vector, where no sparse part
 * is what the caller means.
 */
function checkSparse(sparse: unknown, metric: string, path: string): SparseValues | undefined {
  if (metric !== 'dotproduct') throw invalidArgument(path, "sparse values need an index with metric 'dotproduct'");
  const { indices, values } = (sparse ?? {}) as Partial<SparseValues>;
  if (
    !Array.isArray(indices) ||
    !Array.isArray(values) ||
    indices.length !== values.length ||
    !indices.every((index) => Number.isInteger(index) && index >= 0 && index < 2 ** 32) ||
    !values.every((value) => typeof value === 'number' && Number.isFinite(value)) ||
    new Set(indices).size !== indices.length
  ) {
    throw invalidArgument(
      path,
      'must be { indices, values } of equal length: distinct unsigned integers and finite numbers',
    );
  }
  if (indices.length > PINECONE_LIMITS.maxSparseValues) {
    throw invalidArgument(
      path,
      `has ${indices.length} non-zero values; Pinecone accepts at most ${PINECONE_LIMITS.maxSparseValues}`,
    );
  }
  return indices.length > 0 ? { indices: [...indices], values: [...values] } : undefined;
}

function prepareRecords(
  storyId: string,
  records: unknown,
  dimensions: number,
  metric: 'cosine' | 'dotproduct',
): PreparedRecord[] {
  const unit = metric === 'dotproduct';
  return checkUpsertBatch(storyId, records, {
    label: 'records',
    fields: 'id, values and metadata',
    inspectBody: (item, at, problems) => {
      const norm = Math.sqrt(inspectVector(item.values, dimensions, `${at}.values`, problems));
      let sparse: SparseValues | undefined;
      if (item.sparseValues !== undefined) {
        try {
          sparse = checkSparse(item.sparseValues, metric, `${at}.sparseValues`);
        } catch (error) {
          problems.push(...(error as ValidationError).problems);
        }
      }
      return { norm, sparse };
    },
    build: ({ id, item, at, metadata }, { norm, sparse }, problems) => {
      let mapped: PreparedRecord['metadata'];
      try {
        mapped = toPineconeMetadata(metadata, unit ? { [NORM_KEY]: norm } : {});
      } catch (error) {
        problems.push({ path: `${at}.metadata`, message: (error as Error).message });
        return undefined;
      }
      return {
        id,
        // Copied now: the caller may reuse its buffer as soon as upsert returns.
        values: Array.from(item.values as Float32Array, (value) => (unit ? value / norm : value)),
        metadata: mapped,
        ...(sparse ? { sparseValues: sparse } : {}),
      };
    },
  });
}
