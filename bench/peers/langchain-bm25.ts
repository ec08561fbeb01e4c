/**
 * LangChain's `BM25Retriever`, as `@langchain/community` 1.1.29 ships it (`dist/retrievers/bm25.js` and the BM25
 * function it inlines from `okapibm25`, `dist/utils/@furkantoprak/bm25/BM25.js`), for the retrieval benchmark's peer
 * rows. Copied rather than installed: `@langchain/community` declares optional peer dependencies that npm cannot
 * resolve beside this project's `zod` 4 without `--legacy-peer-deps` for the whole tree. The logic is unchanged
 * (only typed): the query is lower-cased and split on whitespace, each term is counted in the document by a
 * case-sensitive substring match, document frequency by `includes`, k1 1.2 and b 0.75.
 *
 * LangChain.js is MIT licensed: Copyright (c) LangChain, Inc. The BM25 function is adapted by LangChain from
 * https://github.com/FurkanToprak/OkapiBM25 (MIT).
 *
 * @module
 */
import type { Document } from '@langchain/core/documents';
import { BaseRetriever, type BaseRetrieverInput } from '@langchain/core/retrievers';

const getWordCount = (corpus: string) => (corpus.match(/\w+/g) || []).length;

const getTermFrequency = (term: string, corpus: string) => {
  const escaped = term.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return (corpus.match(new RegExp(escaped, 'g')) || []).length;
};

const getIDF = (term: string, documents: ReadonlyArray<{ text: string }>) => {
  const relevantDocuments = documents.filter((document) => document.text.includes(term)).length;
  return Math.log((documents.length - relevantDocuments + 0.5) / (relevantDocuments + 0.5) + 1);
};

function bm25<T>(
  documents: ReadonlyArray<{ text: string; document: T }>,
  keywords: readonly string[],
): Array<{ score: number; document: T }> {
  const b = 0.75;
  const k1 = 1.2;
  const documentLengths = documents.map((document) => getWordCount(document.text));
  const averageDocumentLength = documentLengths.reduce((x, y) => x + y, 0) / documents.length;
  const idfByKeyword = new Map(keywords.map((keyword) => [keyword, getIDF(keyword, documents)]));
  const scored = documents.map(({ text, document }, index) => ({
    score: keywords
      .map((keyword) => {
        const idf = idfByKeyword.get(keyword)!;
        const termFrequency = getTermFrequency(keyword, text);
        const documentLength = documentLengths[index]!;
        return (
          (idf * (termFrequency * (k1 + 1))) /
          (termFrequency + k1 * (1 - b + (b * documentLength) / averageDocumentLength))
        );
      })
      .reduce((x, y) => x + y, 0),
    document,
  }));
  return scored.sort((x, y) => y.score - x.score);
}

/** `BM25Retriever` of `@langchain/community`: the `k` best documents by Okapi BM25. */
export class BM25Retriever extends BaseRetriever {
  static override lc_name() {
    return 'BM25Retriever';
  }
  override lc_namespace = ['langchain', 'retrievers', 'bm25_retriever'];
  readonly docs: Document[];
  readonly k: number;

  static fromDocuments(documents: Document[], options: BaseRetrieverInput & { k: number }): BM25Retriever {
    return new BM25Retriever({ ...options, docs: documents });
  }

  constructor(options: BaseRetrieverInput & { docs: Document[]; k: number }) {
    super(options);
    this.docs = options.docs;
    this.k = options.k;
  }

  preprocessFunc(text: string): string[] {
    return text.toLowerCase().split(/\s+/);
  }

  override async _getRelevantDocuments(query: string): Promise<Document[]> {
    const processedQuery = this.preprocessFunc(query);
    return bm25(
      this.docs.map((document) => ({ text: document.pageContent, document })),
      processedQuery,
    )
      .slice(0, this.k)
      .map((item) => item.document);
  }
}
