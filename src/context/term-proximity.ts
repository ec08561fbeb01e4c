/**
 * Term proximity evidence for re-ranking: how close together a candidate's text holds the query's terms. BM25 scores
 * each term on its own, so "the key was under the red stone" and a scene that says "key" in its first line and
 * "stone" in its last score alike; proximity tells them apart (BM25TP, Rasolofo & Savoy 2003; the ordered and
 * unordered windows of Metzler & Croft's sequential dependence model, 2005).
 *
 * It works on the text every index returns with a match (`metadata.text`), so every `KeywordIndex` and
 * `VectorIndex` backend gets the same behaviour.
 *
 * @module
 */
import { STOP_WORDS, stem, tokenizeWords } from './text-analysis.js';

/**
 * Analysed texts kept between queries, and the words already stemmed. Texts are stored as term ids (positions
 * among the text's non-stop words) so a query only compares small integers. Bounded: the oldest analysed texts are
 * forgotten first, and the vocabulary starts over when it grows past its bound.
 */
export class TermSequenceCache {
  private readonly sequences = new Map<string, { text: string; terms: Int32Array }>();
  private vocabulary = new Map<string, number>();
  private stems = new Map<string, string>();

  /**
   * @param maxTexts Most analysed texts kept.
   * @param maxTerms Most distinct terms (and stemmed words) kept before both maps start over.
   */
  constructor(
    private readonly maxTexts = 4_096,
    private readonly maxTerms = 200_000,
  ) {}

  /** The id of a term, or -1 when no cached text holds it (a term no text holds cannot match). */
  termId(term: string): number {
    return this.vocabulary.get(term) ?? -1;
  }

  /** The term ids of `text` in order, stop words left out; analysed once per `key` and text. */
  sequence(key: string, text: string): Int32Array {
    const cached = this.sequences.get(key);
    if (cached !== undefined && cached.text === text) {
      // Re-inserted so the Map's insertion order is least-recently-used first.
      this.sequences.delete(key);
      this.sequences.set(key, cached);
      return cached.terms;
    }
    if (this.vocabulary.size > this.maxTerms || this.stems.size > this.maxTerms) {
      // Ids are only meaningful with their vocabulary: forget every sequence with it.
      this.vocabulary = new Map();
      this.stems = new Map();
      this.sequences.clear();
    }
    const words = tokenizeWords(text);
    const terms = new Int32Array(words.length);
    let length = 0;
    for (const word of words) {
      if (STOP_WORDS.has(word)) continue;
      let term = this.stems.get(word);
      if (term === undefined) {
        term = stem(word);
        this.stems.set(word, term);
      }
      let id = this.vocabulary.get(term);
      if (id === undefined) {
        id = this.vocabulary.size;
        this.vocabulary.set(term, id);
      }
      terms[length++] = id;
    }
    const sequence = terms.slice(0, length);
    this.sequences.delete(key);
    this.sequences.set(key, { text, terms: sequence });
    if (this.sequences.size > this.maxTexts) {
      const oldest = this.sequences.keys().next().value;
      if (oldest !== undefined) this.sequences.delete(oldest);
    }
    return sequence;
  }
}

/**
 * Proximity scores of several texts for one query, each in [0, 1] (the best text gets 1, a text with no two query
 * terms within `window` positions gets 0).
 *
 * For every pair of distinct query terms that a text holds, the closest pair of occurrences at distance `d` (in
 * non-stop-word positions) adds `w(a) · w(b) / d²` when `d ≤ window`, as in BM25TP. A term's weight `w` is its
 * rarity among the texts scored, `ln(1 + texts / texts holding it)`: a term every candidate shares says little
 * about which one is closer to the question. Queries with fewer than two distinct terms give all zeros.
 *
 * @example
 * ```ts
 * import { analyze } from 'storyloom';
 * import { proximityScores, TermSequenceCache } from './term-proximity.js';
 * const cache = new TermSequenceCache();
 * const texts = [
 *   { key: 'a', text: 'The key was hidden under the red stone.' },
 *   { key: 'b', text: 'She lost the key. Much later, far away, she found a red stone.' },
 * ];
 * proximityScores(analyze('key under the stone'), texts, cache, 8); // [1, 0.04...]
 * ```
 */
export function proximityScores(
  queryTerms: readonly string[],
  texts: ReadonlyArray<{ key: string; text: string }>,
  cache: TermSequenceCache,
  window: number,
): number[] {
  const scores = new Array<number>(texts.length).fill(0);
  const distinct = [...new Set(queryTerms)];
  if (distinct.length < 2 || texts.length === 0) return scores;
  const sequences = texts.map(({ key, text }) => cache.sequence(key, text));
  // Looked up after the texts are analysed, so a query term first seen in one of them has its id.
  const ids = distinct.map((term) => cache.termId(term)).filter((id) => id >= 0);
  if (ids.length < 2) return scores;
  const slotOf = new Map(ids.map((id, slot) => [id, slot]));

  // positions[text][slot]: where each query term occurs in each text.
  const positions = sequences.map((terms) => {
    const found: number[][] = ids.map(() => []);
    for (let at = 0; at < terms.length; at++) {
      const slot = slotOf.get(terms[at]!);
      if (slot !== undefined) found[slot]!.push(at);
    }
    return found;
  });
  const holding = ids.map((_, slot) =>
    positions.reduce((count, found) => count + (found[slot]!.length > 0 ? 1 : 0), 0),
  );
  const weights = holding.map((count) => (count > 0 ? Math.log(1 + texts.length / count) : 0));

  let best = 0;
  positions.forEach((found, index) => {
    let score = 0;
    for (let a = 0; a < ids.length; a++) {
      const first = found[a]!;
      if (first.length === 0) continue;
      for (let b = a + 1; b < ids.length; b++) {
        const second = found[b]!;
        if (second.length === 0) continue;
        const distance = closestDistance(first, second);
        if (distance <= window) score += (weights[a]! * weights[b]!) / (distance * distance);
      }
    }
    scores[index] = score;
    if (score > best) best = score;
  });
  if (best > 0) for (let index = 0; index < scores.length; index++) scores[index]! /= best;
  return scores;
}

/** The smallest |x − y| over two ascending lists of distinct positions (both non-empty): one merge-like pass. */
function closestDistance(first: readonly number[], second: readonly number[]): number {
  let i = 0;
  let j = 0;
  let best = Number.POSITIVE_INFINITY;
  while (i < first.length && j < second.length) {
    const x = first[i]!;
    const y = second[j]!;
    const distance = x > y ? x - y : y - x;
    if (distance < best) best = distance;
    if (x < y) i++;
    else j++;
  }
  return best;
}
