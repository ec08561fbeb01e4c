/**
 * The `KeywordIndex` port: lexical (BM25) search, partitioned by story, with the same filters as vectors.
 *
 * @module
 */
import type { VectorMetadata, VectorMetadataInput } from '../state/schema.js';
import type { MetadataFilter } from './filter.js';

/** A document to index lexically. */
export interface KeywordDocument {
  id: string;
  text: string;
  metadata: VectorMetadataInput;
}

/** One lexical hit; `score` is BM25, higher is better, comparable only within one query. */
export interface KeywordMatch {
  id: string;
  score: number;
  metadata: VectorMetadata;
}

/** What a keyword index can do. */
export interface KeywordIndexCapabilities {
  /** Largest `topK` accepted. */
  maxTopK: number;
  deleteByFilter: boolean;
  durable: boolean;
}

/** Lexical search with BM25 ranking. */
export interface KeywordIndex {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  readonly capabilities: KeywordIndexCapabilities;
  /** Inserts or replaces documents by id. */
  upsert(storyId: string, documents: KeywordDocument[], options?: { signal?: AbortSignal }): Promise<void>;
  /** The `topK` best documents for `text`; an empty or stop-word-only query returns []. */
  query(
    storyId: string,
    query: {
      text: string;
      topK: number;
      filter?: MetadataFilter;
      /** As `VectorQuery.sharedMetadata`: the caller will not modify the matches' metadata, so it need not be copied. */
      sharedMetadata?: boolean;
      signal?: AbortSignal;
    },
  ): Promise<KeywordMatch[]>;
  /** Deletes by ids or by filter; returns how many were deleted. */
  delete(
    storyId: string,
    deletion: { ids: string[] } | { filter: MetadataFilter },
    options?: { signal?: AbortSignal },
  ): Promise<number>;
  /** Number of documents of a story. */
  count(storyId: string): Promise<number>;
  /** Drops every document of a story. An aborted `signal` rejects with `AbortedError` and drops nothing. */
  deleteStory(storyId: string, options?: { signal?: AbortSignal }): Promise<void>;
  close(): Promise<void>;
}
