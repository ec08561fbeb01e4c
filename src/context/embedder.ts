/**
 * The `Embedder` port: text to vectors.
 *
 * @module
 */

import { ProviderError } from '../core/errors.js';

/** Whether a text is stored (`document`) or searched with (`query`); some models embed the two differently. */
export type EmbeddingInputType = 'document' | 'query';

/**
 * Turns texts into vectors of a fixed dimension. `modelId` and `dimensions` make up the fingerprint that decides
 * when an index must be rebuilt.
 */
export interface Embedder {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  readonly modelId: string;
  readonly dimensions: number;
  /** Most texts accepted by one `embed` call. */
  readonly maxBatchSize: number;
  /** One vector per text, in order. Callers split inputs larger than `maxBatchSize`. */
  embed(
    texts: readonly string[],
    options?: { inputType?: EmbeddingInputType; signal?: AbortSignal },
  ): Promise<Float32Array[]>;
}

/**
 * Embeds any number of texts by calling `embedder.embed` in batches of its `maxBatchSize`. Each batch's answer is
 * checked (`checkEmbeddings`) before it is used: a vector too many or too few would otherwise give every text after it
 * its neighbour's vector.
 */
export async function embedInBatches(
  embedder: Embedder,
  texts: readonly string[],
  options: { inputType?: EmbeddingInputType; signal?: AbortSignal } = {},
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  const size = Math.max(1, embedder.maxBatchSize);
  for (let start = 0; start < texts.length; start += size) {
    const batch = texts.slice(start, start + size);
    out.push(...checkEmbeddings(embedder, batch.length, await embedder.embed(batch, options)));
  }
  return out;
}

/**
 * `vectors` as an embedder answered `count` texts, or a `ProviderError` naming the embedder: one `Float32Array` of
 * its `dimensions` per text, every value finite.
 */
export function checkEmbeddings(embedder: Embedder, count: number, vectors: unknown): Float32Array[] {
  const refuse = (problem: string) =>
    new ProviderError(`The embedder ${embedder.provider}/${embedder.modelId} ${problem}`, {
      provider: embedder.provider,
      code: 'INVALID_EMBEDDING',
    });
  if (!Array.isArray(vectors)) throw refuse(`returned ${typeof vectors} instead of a list of vectors`);
  if (vectors.length !== count) throw refuse(`returned ${vectors.length} vectors for ${count} texts`);
  for (const [index, vector] of vectors.entries()) {
    if (!(vector instanceof Float32Array)) throw refuse(`returned vector ${index} that is not a Float32Array`);
    if (vector.length !== embedder.dimensions) {
      throw refuse(`returned vector ${index} of ${vector.length} dimensions; it declares ${embedder.dimensions}`);
    }
    for (const value of vector) {
      if (!Number.isFinite(value)) throw refuse(`returned vector ${index} holding ${value}`);
    }
  }
  return vectors;
}
