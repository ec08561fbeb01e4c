/**
 * The `VectorIndex` port: similarity search over embeddings, partitioned by story.
 *
 * @module
 */
import type { VectorMetadata, VectorRecord, VectorRecordInput } from '../state/schema.js';
import type { MetadataFilter } from './filter.js';

/** What a vector index can do. */
export interface VectorIndexCapabilities {
  /** Most records accepted by one `upsert` call; larger inputs are split by the caller or the adapter. */
  maxUpsertBatch: number;
  /** Largest `topK` accepted. */
  maxTopK: number;
  /** `delete({ filter })` is supported. */
  deleteByFilter: boolean;
  /** Reads see writes at once (false for Pinecone, which is eventually consistent). */
  readAfterWrite: boolean;
  /** Data survives a restart. */
  durable: boolean;
  /**
   * Largest response one query may return, in bytes, where the backend caps it (Pinecone: 4 MB): a caller listing
   * many records, with their values or metadata, asks for few enough to stay under it. Absent: no cap.
   */
  maxQueryResultBytes?: number;
  /**
   * Largest metadata one record may carry, in bytes as JSON (Pinecone: 40 KB). With `maxQueryResultBytes`, how many
   * records one query can surely return: the retriever's pool and `ContextManager.stats` ask for no more.
   */
  maxMetadataBytes?: number;
}

/** One search hit. `score` is cosine similarity in [-1, 1], higher is closer. */
export interface VectorMatch {
  id: string;
  score: number;
  metadata: VectorMetadata;
  values?: Float32Array;
}

/** A similarity query. */
export interface VectorQuery {
  vector: Float32Array;
  topK: number;
  filter?: MetadataFilter;
  includeValues?: boolean;
  /**
   * The caller promises not to modify the matches' metadata, so an index may return the metadata objects it holds
   * instead of copies. The in-process indexes then skip a copy per match (the retriever reads a couple of hundred
   * matches per query and keeps a few); an index whose matches are new objects anyway ignores it. Default false:
   * returned metadata is the caller's own.
   */
  sharedMetadata?: boolean;
  signal?: AbortSignal;
}

/** What to delete: given ids, or every record matching a filter. */
export type VectorDeletion = { ids: string[] } | { filter: MetadataFilter };

/** Counts for monitoring the vector space. */
export interface VectorIndexStats {
  count: number;
  dimensions: number;
}

/**
 * Cosine-similarity search over records of one fixed dimension, one partition (namespace) per story.
 * Records are validated on upsert: wrong dimensions or non-finite values give a `ValidationError` and store nothing.
 */
export interface VectorIndex {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  readonly dimensions: number;
  readonly capabilities: VectorIndexCapabilities;
  /** Inserts or replaces records by id. All-or-nothing on validation. */
  upsert(storyId: string, records: VectorRecordInput[], options?: { signal?: AbortSignal }): Promise<void>;
  /** The `topK` closest records, best first; ties broken by id. */
  query(storyId: string, query: VectorQuery): Promise<VectorMatch[]>;
  /** The records with these ids that exist, in the order asked, with their values as stored. */
  fetch(storyId: string, ids: string[], options?: { signal?: AbortSignal }): Promise<VectorRecord[]>;
  /** Deletes by ids or by filter; returns how many were deleted when the backend knows, else -1. */
  delete(storyId: string, deletion: VectorDeletion, options?: { signal?: AbortSignal }): Promise<number>;
  /** Counts for one story. */
  stats(storyId: string, options?: { signal?: AbortSignal }): Promise<VectorIndexStats>;
  /** Drops every record of a story. An aborted `signal` rejects with `AbortedError` and drops nothing. */
  deleteStory(storyId: string, options?: { signal?: AbortSignal }): Promise<void>;
  close(): Promise<void>;
}
