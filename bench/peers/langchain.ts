/**
 * LangChain.js's retrievers on the retrieval benchmark's data, for the peer rows of `bench:retrieval --peers`:
 *
 * - `langchain-vector`: `MemoryVectorStore` (`@langchain/classic`) cosine search;
 * - `langchain-bm25`: `BM25Retriever` (`./langchain-bm25.ts`, LangChain's own code);
 * - `langchain-ensemble`: `EnsembleRetriever` (`@langchain/classic`) over the two, weights 0.5 / 0.5, the weighted
 *   reciprocal-rank fusion LangChain documents for hybrid search, each retriever asked for the deepest k.
 *
 * Each unit is one LangChain `Document` holding what a LangChain user would store: the unit's text with its labels
 * (a turn with its speaker), without the neighbours storyloom's keyword index borrows. Vectors come from the same
 * embedder as storyloom's rows, so the comparison is of retrieval, not of embedding models.
 *
 * @module
 */
import { EnsembleRetriever } from '@langchain/classic/retrievers/ensemble';
import { MemoryVectorStore } from '@langchain/classic/vectorstores/memory';
import { Document } from '@langchain/core/documents';
import { Embeddings } from '@langchain/core/embeddings';
import { type Embedder, embedInBatches } from '../../src/context/embedder.js';
import type { BenchCorpus } from '../datasets/types.js';
import { BM25Retriever } from './langchain-bm25.js';

export const LANGCHAIN_METHODS = ['langchain-vector', 'langchain-bm25', 'langchain-ensemble'] as const;
export type LangChainMethod = (typeof LANGCHAIN_METHODS)[number];

/** A storyloom `Embedder` as LangChain `Embeddings`: documents and queries embedded as such. */
class StoryloomEmbeddings extends Embeddings {
  constructor(private readonly embedder: Embedder) {
    super({});
  }

  async embedDocuments(texts: string[]): Promise<number[][]> {
    const vectors = await embedInBatches(this.embedder, texts, { inputType: 'document' });
    return vectors.map((vector) => Array.from(vector));
  }

  async embedQuery(text: string): Promise<number[]> {
    const [vector] = await this.embedder.embed([text], { inputType: 'query' });
    return Array.from(vector!);
  }
}

/** LangChain's retrievers over one corpus: `search(method, query, k)` gives unit ids, best first. */
export async function langChainRetrievers(
  corpus: BenchCorpus,
  texts: readonly string[],
  embedder: Embedder,
  depth: number,
): Promise<{ search(method: LangChainMethod, query: string): Promise<string[]> }> {
  const documents = corpus.units.map(
    (unit, index) => new Document({ pageContent: texts[index]!, metadata: { id: unit.id } }),
  );
  const embeddings = new StoryloomEmbeddings(embedder);
  const store = new MemoryVectorStore(embeddings);
  await store.addVectors(await embeddings.embedDocuments([...texts]), documents);
  const bm25 = BM25Retriever.fromDocuments(documents, { k: depth });
  const ensemble = new EnsembleRetriever({
    retrievers: [bm25, store.asRetriever({ k: depth })],
    weights: [0.5, 0.5],
  });
  const ids = (found: Document[]) => found.map((document) => document.metadata.id as string);
  return {
    async search(method, query) {
      if (method === 'langchain-vector') return ids(await store.similaritySearch(query, depth));
      if (method === 'langchain-bm25') return ids(await bm25.invoke(query));
      return ids(await ensemble.invoke(query));
    },
  };
}
