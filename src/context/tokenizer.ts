/**
 * The `Tokenizer` port: how many tokens a text costs in a model's context window.
 *
 * @module
 */

/** Counts tokens. `exact` says whether counts match the model's own or are a conservative estimate. */
export interface Tokenizer {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  readonly exact: boolean;
  /** Tokens of `text`. Estimators round up so that a budget computed with them is never exceeded. */
  count(text: string): number;
  /**
   * For a tokenizer whose count of a text can change (one that learns exact counts): a number that changes whenever
   * it may. Callers that remember counts (`ContextManager` keeps its stable prefix's) count again when it changes.
   * Leave it out when `count` always answers the same for the same text.
   */
  readonly revision?: number;
}
