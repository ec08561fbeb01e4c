/**
 * The `Summarizer` port: long history into short text, so old chapters are remembered at lower detail.
 *
 * @module
 */
import { ValidationError } from '../core/errors.js';

/** Summarizes texts into one summary of at most about `maxWords` words. */
export interface Summarizer {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  summarize(
    texts: readonly string[],
    options: { maxWords: number; focus?: string; signal?: AbortSignal },
  ): Promise<string>;
}

/**
 * Refuses `texts` that are not an array of strings (the chapter's scenes passed whole, say) with a `ValidationError`
 * naming the first bad entry: a summarizer would otherwise fail on it with a bare `TypeError`, or send `[object
 * Object]` to a model.
 *
 * @example
 * ```ts
 * import { checkSummarizerTexts } from 'storyloom';
 * checkSummarizerTexts(scenes.map((scene) => scene.text));
 * ```
 */
export function checkSummarizerTexts(texts: unknown): asserts texts is readonly string[] {
  if (!Array.isArray(texts)) {
    throw new ValidationError('texts must be an array of strings (the texts to summarize)', {
      problems: [{ path: 'texts', message: 'must be an array of strings' }],
    });
  }
  const bad = texts.findIndex((text) => typeof text !== 'string');
  if (bad >= 0) {
    const found = texts[bad] === null ? 'null' : typeof texts[bad];
    throw new ValidationError(`texts[${bad}] must be a string, got ${found} (pass each scene's text, not the scene)`, {
      problems: [{ path: `texts.${bad}`, message: 'must be a string' }],
    });
  }
}
