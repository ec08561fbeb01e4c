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
import { MAX_TERM_LENGTH, STOP_WORDS, stem, tokenizeWords } from './text-analysis.js';

/**
 * Where each query term occurs in `text`, as positions among its non-stop words, one ascending list per entry of
 * `terms` (stemmed query terms, as `analyze` gives them). A word occurs as a term when it is not a
 * stop word and its Porter stem is the term, exactly as the keyword index would count it.
 *
 * Only words that can stem to a query term are stemmed. Porter's stemmer rewrites the end of a word only, never
 * lengthens it, and leaves all but at most the last two letters of the stem as they were in the word ("sensibility"
 * → "sensibl", "happy" → "happi"), and the first two of a stem of three letters or more ("says" → "sai"; only a
 * two-letter stem can change its second, "ays" → "ai"). A word that does not start with that much of a term, or is
 * shorter than it, cannot stem to it and is never stemmed. `stems` memoises the stemmer across calls.
 */
export function termPositions(text: string, terms: readonly string[], stems: Map<string, string>): number[][] {
  const positions: number[][] = terms.map(() => []);
  if (terms.length === 0) return positions;
  const prefixes = terms.map((term) => term.slice(0, term.length >= 3 ? Math.max(2, term.length - 2) : 1));
  const firstLetters = terms.map((term) => term.charCodeAt(0));
  const lengths = terms.map((term) => term.length);
  const wanted = (source: string, start: number, length: number): boolean => {
    const first = source.charCodeAt(start);
    for (let slot = 0; slot < firstLetters.length; slot++) {
      if (first === firstLetters[slot] && length >= lengths[slot]! && source.startsWith(prefixes[slot]!, start)) {
        return true;
      }
    }
    return false;
  };
  const match = (word: string, position: number): void => {
    const slot = terms.indexOf(memoisedStem(stems, word));
    if (slot >= 0) positions[slot]!.push(position);
  };

  if (NOT_PLAIN_TEXT.test(text)) {
    let position = 0;
    for (const word of tokenizeWords(text)) {
      if (STOP_WORDS.has(word)) continue;
      if (wanted(word, 0, word.length)) match(word, position);
      position++;
    }
    return positions;
  }

  // Plain text: the words of `tokenizeWords` (runs of letters and digits, an apostrophe kept only between two of
  // them, then a possessive 's dropped and other apostrophes removed), found by a hand-written scan that makes no
  // string for a word unless it may be a query term, and tells stop words by a hash of their letters. On
  // scene-sized text the regular expression and the string per word of `tokenizeWords` cost several times more.
  const lower = text.toLowerCase();
  const length = lower.length;
  let position = 0;
  let at = 0;
  while (at < length) {
    let code = lower.charCodeAt(at);
    if (!((code >= 97 && code <= 122) || (code >= 48 && code <= 57))) {
      at++;
      continue;
    }
    const start = at;
    let hash = 0;
    let apostrophe = false;
    for (;;) {
      while (at < length) {
        code = lower.charCodeAt(at);
        if (!((code >= 97 && code <= 122) || (code >= 48 && code <= 57))) break;
        hash = (Math.imul(hash, 31) + code) | 0;
        at++;
      }
      if (at + 1 < length && isApostrophe(lower.charCodeAt(at)) && isAlphanumeric(lower.charCodeAt(at + 1))) {
        apostrophe = true;
        at++;
        continue;
      }
      break;
    }
    if (apostrophe) {
      const word = lower.slice(start, at).replace(POSSESSIVE, '').replace(APOSTROPHES, '');
      if (word.length === 0 || word.length > MAX_TERM_LENGTH || STOP_WORDS.has(word)) continue;
      if (wanted(word, 0, word.length)) match(word, position);
      position++;
      continue;
    }
    const size = at - start;
    if (size > MAX_TERM_LENGTH || isStopWordAt(lower, start, size, hash)) continue;
    if (wanted(lower, start, size)) match(lower.slice(start, at), position);
    position++;
  }
  return positions;
}

/**
 * Like `termPositions`, but exact only where it matters to proximity: the difference of two returned positions is
 * their true distance when that is at most `window`, and more than `window` otherwise. On plain text that lets it
 * find each term with `indexOf` and count the words between neighbouring occurrences only until `window` is passed,
 * instead of reading every word: several times cheaper on scene-sized text, where most words are far from any
 * query term.
 */
export function nearPositions(
  text: string,
  terms: readonly string[],
  stems: Map<string, string>,
  window: number,
): number[][] {
  if (terms.length === 0 || NOT_PLAIN_TEXT.test(text)) return termPositions(text, terms, stems);
  const lower = text.toLowerCase();
  const occurrences: Array<{ start: number; end: number; slot: number }> = [];
  const seen = new Set<number>();
  /** Records the word at `start` when it is one of the terms. */
  const consider = (start: number): number => {
    const { end, apostrophe } = wordEnd(lower, start);
    let word = lower.slice(start, end);
    if (apostrophe) word = word.replace(POSSESSIVE, '').replace(APOSTROPHES, '');
    if (word.length === 0 || word.length > MAX_TERM_LENGTH || STOP_WORDS.has(word)) return end;
    const slot = terms.indexOf(memoisedStem(stems, word));
    if (slot >= 0 && !seen.has(start)) {
      seen.add(start);
      occurrences.push({ start, end, slot });
    }
    return end;
  };
  for (const term of terms) {
    const prefix = term.slice(0, term.length >= 3 ? Math.max(2, term.length - 2) : 1);
    let from = 0;
    for (;;) {
      const start = lower.indexOf(prefix, from);
      if (start < 0) break;
      from = start > 0 && insideWord(lower, start) ? start + 1 : consider(start);
    }
  }
  // A word with an apostrophe inside is read without it ("o'brien" is "obrien"), so its term may not appear in the
  // text as such: such words, few in any text, are each considered on their own.
  JOINED_APOSTROPHE.lastIndex = 0;
  for (let found = JOINED_APOSTROPHE.exec(lower); found !== null; found = JOINED_APOSTROPHE.exec(lower)) {
    // Back to the start of the word: over letters and digits, and over apostrophes between two of them.
    let start = found.index;
    for (;;) {
      if (start > 0 && isAlphanumeric(lower.charCodeAt(start - 1))) start--;
      else if (start > 1 && isApostrophe(lower.charCodeAt(start - 1)) && isAlphanumeric(lower.charCodeAt(start - 2))) {
        start -= 2;
      } else break;
    }
    JOINED_APOSTROPHE.lastIndex = Math.max(consider(start), found.index + 1);
  }
  occurrences.sort((a, b) => a.start - b.start);
  const positions: number[][] = terms.map(() => []);
  let position = 0;
  occurrences.forEach((occurrence, index) => {
    if (index > 0) {
      const between = countContentWords(lower, occurrences[index - 1]!.end, occurrence.start, window + 1);
      position += between + 1;
    }
    positions[occurrence.slot]!.push(position);
  });
  return positions;
}

/** Whether `source[at]` continues a word (follows a letter or digit, or an apostrophe that follows one). */
function insideWord(source: string, at: number): boolean {
  const previous = source.charCodeAt(at - 1);
  if (isAlphanumeric(previous)) return true;
  return at >= 2 && isApostrophe(previous) && isAlphanumeric(source.charCodeAt(at - 2));
}

/** The end of the word that starts at `start`, apostrophes between letters included, as `tokenizeWords` reads it. */
function wordEnd(source: string, start: number): { end: number; apostrophe: boolean } {
  const length = source.length;
  let at = start;
  let apostrophe = false;
  for (;;) {
    while (at < length && isAlphanumeric(source.charCodeAt(at))) at++;
    if (at + 1 < length && isApostrophe(source.charCodeAt(at)) && isAlphanumeric(source.charCodeAt(at + 1))) {
      apostrophe = true;
      at++;
      continue;
    }
    return { end: at, apostrophe };
  }
}

/** How many non-stop words lie in `source[from, to)` (whole words only), counting no further than `limit`. */
function countContentWords(source: string, from: number, to: number, limit: number): number {
  let count = 0;
  let at = from;
  while (at < to && count < limit) {
    let code = source.charCodeAt(at);
    if (!((code >= 97 && code <= 122) || (code >= 48 && code <= 57)) || (at > 0 && insideWord(source, at))) {
      at++;
      continue;
    }
    // Letters and digits, hashed as they are read so a stop word is told without making the word's string.
    const start = at;
    let hash = 0;
    while (at < to) {
      code = source.charCodeAt(at);
      if (!((code >= 97 && code <= 122) || (code >= 48 && code <= 57))) break;
      hash = (Math.imul(hash, 31) + code) | 0;
      at++;
    }
    if (at + 1 < source.length && isApostrophe(source.charCodeAt(at)) && isAlphanumeric(source.charCodeAt(at + 1))) {
      const { end } = wordEnd(source, start);
      const word = source.slice(start, end).replace(POSSESSIVE, '').replace(APOSTROPHES, '');
      if (word.length > 0 && word.length <= MAX_TERM_LENGTH && !STOP_WORDS.has(word)) count++;
      at = end;
      continue;
    }
    const size = at - start;
    if (size <= MAX_TERM_LENGTH && !isStopWordAt(source, start, size, hash)) count++;
  }
  return count;
}

const MAX_MEMOISED_STEMS = 100_000;

/** `stem(word)`, remembered in `stems` (cleared when it grows past `MAX_MEMOISED_STEMS`). */
function memoisedStem(stems: Map<string, string>, word: string): string {
  let stemmed = stems.get(word);
  if (stemmed === undefined) {
    stemmed = stem(word);
    if (stems.size >= MAX_MEMOISED_STEMS) stems.clear();
    stems.set(word, stemmed);
  }
  return stemmed;
}

// ASCII plus the punctuation that typeset English adds (curly quotes, dashes, ellipsis, no-break space): none of it
// is a letter, a digit or a mark, and folding changes no word of such text, so lowercasing is all it needs.
const NOT_PLAIN_TEXT = /[^\p{ASCII}\u00A0\u2013\u2014\u2018-\u201F\u2026]/u;
const APOSTROPHES = /['\u2019\u02BC]/g;
const JOINED_APOSTROPHE = /[a-z0-9]['\u2019\u02BC][a-z0-9]/g;
const POSSESSIVE = /['\u2019\u02BC]s$/;

const isAlphanumeric = (code: number) => (code >= 97 && code <= 122) || (code >= 48 && code <= 57);
const isApostrophe = (code: number) => code === 39 || code === 0x2019 || code === 0x02bc;

/** The hash the plain-text scan computes over a word's letters and digits. */
function letterHash(word: string): number {
  let hash = 0;
  for (let at = 0; at < word.length; at++) hash = (Math.imul(hash, 31) + word.charCodeAt(at)) | 0;
  return hash;
}

/** Stop words (those without an apostrophe: the folded list has none) by the hash of their letters. */
const STOP_WORDS_BY_HASH = new Map<number, string[]>();
for (const word of STOP_WORDS) {
  const hash = letterHash(word);
  const list = STOP_WORDS_BY_HASH.get(hash);
  if (list) list.push(word);
  else STOP_WORDS_BY_HASH.set(hash, [word]);
}

/** Whether `source[start, start + length)` is a stop word, its letters' hash given; checked in place. */
function isStopWordAt(source: string, start: number, length: number, hash: number): boolean {
  const list = STOP_WORDS_BY_HASH.get(hash);
  if (list === undefined) return false;
  for (const word of list) if (word.length === length && source.startsWith(word, start)) return true;
  return false;
}

/**
 * Proximity scores of several texts for one query, each in [0, 1] (the best text gets 1, a text with no two query
 * terms within `window` non-stop words gets 0).
 *
 * For every pair of distinct query terms that a text holds, the closest pair of occurrences at distance `d` (in
 * non-stop words) adds `w(a) · w(b) / d²` when `d ≤ window`, as in BM25TP. A term's weight `w` is its rarity among the texts
 * scored, `ln(1 + texts / texts holding it)`: a term every candidate shares says little about which one is closer
 * to the question. Queries with fewer than two distinct terms give all zeros.
 *
 * @example
 * ```ts
 * import { analyze } from './text-analysis.js';
 * import { proximityScores } from './term-proximity.js';
 * proximityScores(
 *   analyze('key under the stone'),
 *   ['The key was hidden under the red stone.', 'She lost the key. Far away, much later, she found a stone.'],
 *   4,
 * ); // [1, 0]: 3 words apart in the first, 6 in the second
 * ```
 */
export function proximityScores(
  queryTerms: readonly string[],
  texts: readonly string[],
  window: number,
  stems: Map<string, string> = new Map(),
): number[] {
  const scores = new Array<number>(texts.length).fill(0);
  const terms = [...new Set(queryTerms)];
  if (terms.length < 2 || texts.length === 0) return scores;
  const positions = texts.map((text) => nearPositions(text, terms, stems, window));
  const weights = terms.map((_, slot) => {
    let holding = 0;
    for (const found of positions) if (found[slot]!.length > 0) holding++;
    return holding > 0 ? Math.log(1 + texts.length / holding) : 0;
  });

  let best = 0;
  positions.forEach((found, index) => {
    let score = 0;
    for (let a = 0; a < terms.length; a++) {
      const first = found[a]!;
      if (first.length === 0) continue;
      for (let b = a + 1; b < terms.length; b++) {
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
