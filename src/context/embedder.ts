/**
 * The `Embedder` port: text to vectors.
 *
 * @module
 */

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

/** Embeds any number of texts by calling `embedder.embed` in batches of its `maxBatchSize`. */
export async function embedInBatches(
  embedder: Embedder,
  texts: readonly string[],
  options: { inputType?: EmbeddingInputType; signal?: AbortSignal } = {},
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  const size = Math.max(1, embedder.maxBatchSize);
  for (let start = 0; start < texts.length; start += size) {
    out.push(...(await embedder.embed(texts.slice(start, start + size), options)));
  }
  return out;
}
