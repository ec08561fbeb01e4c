/**
 * The `Summarizer` port: long history into short text, so old chapters are remembered at lower detail.
 *
 * @module
 */

/** Summarizes texts into one summary of at most about `maxWords` words. */
export interface Summarizer {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  summarize(
    texts: readonly string[],
    options: { maxWords: number; focus?: string; signal?: AbortSignal },
  ): Promise<string>;
}
