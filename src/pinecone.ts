/**
 * `storyloom/pinecone`: the `VectorIndex` on Pinecone, with a namespace per story. Needs the optional peer
 * `@pinecone-database/pinecone` (8.x).
 *
 * Hybrid sparse-dense search needs an index created with the `dotproduct` metric: pass `metric: 'dotproduct'`, give
 * records `sparseValues` and queries `sparseVector` (`{ indices, values }`, e.g. from a BM25 or SPLADE encoder).
 *
 * @example
 * ```ts
 * import { createPineconeIndex } from 'storyloom/pinecone';
 *
 * const vectors = createPineconeIndex({
 *   host: process.env.PINECONE_HOST,
 *   apiKey: process.env.PINECONE_API_KEY,
 *   dimensions: 1536,
 * });
 * ```
 *
 * @module storyloom/pinecone
 */

export * from './context/pinecone.js';
