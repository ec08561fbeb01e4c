/**
 * `storyloom/pinecone`: the `VectorIndex` on Pinecone, with a namespace per story. Needs the optional peer
 * `@pinecone-database/pinecone` (8.x).
 *
 * Hybrid sparse-dense search needs an index created with the `dotproduct` metric: pass `metric: 'dotproduct'`, give
 * records `sparseValues` and queries `sparseVector` (`{ indices, values }`, e.g. from a BM25 or SPLADE encoder).
 *
 * Every call takes an `AbortSignal` and every request a timeout (`timeoutMs`, default 30 s); either one closes the
 * connection. A timed-out request is retried as a `ProviderError` with code `TIMEOUT`, an abort rejects with
 * `AbortedError`, and a 429's or 503's `retry-after` sets the wait before the next attempt. A client you build
 * yourself (`index`) gets this only when its `Pinecone` was given `fetchApi: createPineconeFetch()`.
 *
 * @example
 * ```ts
 * import { createPineconeIndex } from 'storyloom/pinecone';
 *
 * const vectors = createPineconeIndex({
 *   host: process.env.PINECONE_HOST,
 *   apiKey: process.env.PINECONE_API_KEY,
 *   dimensions: 1536,
 *   timeoutMs: 10_000,
 * });
 * await vectors.deleteStory('story-1', { signal: AbortSignal.timeout(30_000) });
 * ```
 *
 * @module storyloom/pinecone
 */

export * from './context/pinecone.js';
