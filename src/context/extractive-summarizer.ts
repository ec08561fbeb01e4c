/**
 * The offline `Summarizer`: picks the sentences that best represent the texts and keeps them in their order.
 *
 * Scoring is a TF-IDF centroid: every sentence becomes a TF-IDF vector over the terms of `analyze` (stemmed, stop
 * words out), the centroid of all sentences stands for "what the texts are about", and a sentence scores by its
 * cosine to the centroid. A `focus` adds the share of its terms a sentence contains, so a summary asked to focus on
 * a character keeps the sentences about that character. Sentences too similar to one already chosen are skipped,
 * so a repetitive chapter does not fill its summary with the same fact twice.
 *
 * Extractive on purpose: it invents nothing, needs no model and is deterministic, which is what an offline default
 * that compresses a story's own history needs. An abstractive Claude summarizer can replace it later.
 *
 * @module
 */
import { throwIfAborted, ValidationError } from '../core/errors.js';
import { checkSummarizerTexts, type Summarizer } from './summarizer.js';
import { analyze, clipWords, countWords } from './text-analysis.js';

/** Sentences more similar than this (cosine) to a chosen one are redundant. */
const REDUNDANCY_THRESHOLD = 0.8;
/** How much a sentence holding every focus term gains; the centroid score is at most 1. */
const FOCUS_WEIGHT = 1;
/** The opening sentence of each text usually sets the scene; a small bonus keeps it when scores are close. */
const LEAD_BONUS = 0.05;

interface Sentence {
  text: string;
  /** Position over all texts, for keeping the original order. */
  order: number;
  words: number;
  lead: boolean;
  terms: Map<string, number>;
}

/**
 * Creates the offline extractive summarizer. The summary holds whole sentences of the input, in input order, and
 * never more than `maxWords` words; when not even the best sentence fits, it is cut to `maxWords` words with an
 * ellipsis.
 *
 * @example
 * ```ts
 * import { createExtractiveSummarizer } from 'storyloom';
 * const summarizer = createExtractiveSummarizer();
 * const summary = await summarizer.summarize(chapterScenes.map((scene) => scene.text), { maxWords: 120, focus: 'Mira' });
 * ```
 */
export function createExtractiveSummarizer(): Summarizer {
  return {
    specificationVersion: 'v1',
    provider: 'extractive',
    async summarize(texts, options) {
      throwIfAborted(options.signal);
      checkSummarizerTexts(texts);
      const maxWords = options.maxWords;
      if (!Number.isInteger(maxWords) || maxWords < 1) {
        throw new ValidationError(`maxWords must be a positive integer, got ${String(maxWords)}`, {
          problems: [{ path: 'maxWords', message: 'must be a positive integer' }],
        });
      }
      return summarizeSentences(texts, maxWords, options.focus ?? '');
    },
  };
}

function summarizeSentences(texts: readonly string[], maxWords: number, focus: string): string {
  const sentences = splitAll(texts);
  if (sentences.length === 0) return '';

  const documentFrequency = new Map<string, number>();
  for (const sentence of sentences) {
    for (const term of sentence.terms.keys()) documentFrequency.set(term, (documentFrequency.get(term) ?? 0) + 1);
  }
  // Smoothed IDF: a term in every sentence still weighs a little, so a one-sentence input is not all zeros.
  const idf = (term: string) => Math.log(1 + sentences.length / (documentFrequency.get(term) ?? 1));
  const vectors = sentences.map((sentence) => normalize(weigh(sentence.terms, idf)));
  const centroid = normalize(sumVectors(vectors));
  const focusTerms = new Set(analyze(focus));

  const scored = sentences.map((sentence, index) => {
    let score = dot(vectors[index]!, centroid);
    if (focusTerms.size > 0) {
      let shared = 0;
      for (const term of focusTerms) if (sentence.terms.has(term)) shared++;
      score += FOCUS_WEIGHT * (shared / focusTerms.size);
    }
    if (sentence.lead) score += LEAD_BONUS;
    return { index, score };
  });
  // Ties go to the earlier sentence, so the order of equal scores never depends on the sort's stability.
  scored.sort((a, b) => b.score - a.score || a.index - b.index);

  const chosen: number[] = [];
  // Term → the chosen sentences that hold it, so a candidate is compared only with those it shares a term with.
  const postings = new Map<string, number[]>();
  let words = 0;
  for (const { index } of scored) {
    const sentence = sentences[index]!;
    if (words + sentence.words > maxWords) continue;
    if (isRedundant(vectors[index]!, vectors, postings)) continue;
    chosen.push(index);
    for (const term of vectors[index]!.keys()) {
      const holders = postings.get(term);
      if (holders) holders.push(index);
      else postings.set(term, [index]);
    }
    words += sentence.words;
  }
  if (chosen.length === 0) {
    // The ellipsis joins the last word, so it adds none; where that word is cut from a script without spaces, one
    // word less leaves room for it.
    const best = sentences[scored[0]!.index]!.text;
    const cut = clipWords(best, maxWords).replace(/ …$/, '…');
    return countWords(cut) > maxWords ? clipWords(best, maxWords - 1).replace(/ …$/, '…') : cut;
  }
  return chosen
    .sort((a, b) => sentences[a]!.order - sentences[b]!.order)
    .map((index) => sentences[index]!.text)
    .join(' ');
}

/**
 * Whether a chosen sentence is more similar to `vector` than the threshold. Only a chosen sentence that shares a term
 * can be; and one that shares only terms holding less than the threshold of `vector`'s weight cannot (its cosine is at
 * most the norm of those weights), so the longest lists, a character's name in every sentence, are not read.
 */
function isRedundant(
  vector: Map<string, number>,
  vectors: readonly Map<string, number>[],
  postings: ReadonlyMap<string, readonly number[]>,
): boolean {
  const holders = (term: string) => postings.get(term) ?? [];
  const terms = [...vector].sort((a, b) => holders(b[0]).length - holders(a[0]).length);
  const compared = new Set<number>();
  // A hair under the threshold's square, so that rounding never skips a sentence the full comparison would catch.
  let skippable = REDUNDANCY_THRESHOLD ** 2 - 1e-9;
  for (const [term, weight] of terms) {
    if (weight * weight < skippable) {
      skippable -= weight * weight;
      continue;
    }
    for (const other of holders(term)) {
      if (compared.has(other)) continue;
      compared.add(other);
      if (dot(vectors[other]!, vector) > REDUNDANCY_THRESHOLD) return true;
    }
  }
  return false;
}

// A sentence ends at . ! ? or … (with closing quotes or brackets), followed by white space, or at 。！？ (Chinese and
// Japanese, with no space after them); paragraph breaks end one too. Abbreviations split wrongly now and then, which
// costs a summary a little fluency, never correctness. Matched forwards, the end kept with its sentence: a lookbehind
// of any length rescans a run of closing quotes or brackets at each of its characters, quadratic in the run.
const SENTENCE_END = /([.!?…]["'”’)\]]*(?=\s)|[。！？][」』）"'”’)\]]*)\s*|\n\s*\n/gu;

/** `text` cut into sentences at `SENTENCE_END`, each with its end mark and without the white space after it. */
export function splitSentences(text: string): string[] {
  const pieces: string[] = [];
  let start = 0;
  for (const match of text.matchAll(SENTENCE_END)) {
    pieces.push(text.slice(start, match.index + (match[1]?.length ?? 0)));
    start = match.index + match[0].length;
  }
  pieces.push(text.slice(start));
  return pieces;
}

function splitAll(texts: readonly string[]): Sentence[] {
  const sentences: Sentence[] = [];
  for (const text of texts) {
    let lead = true;
    for (const raw of splitSentences(text)) {
      const sentenceText = raw.replace(/\s+/g, ' ').trim();
      if (sentenceText === '') continue;
      const terms = new Map<string, number>();
      for (const term of analyze(sentenceText)) terms.set(term, (terms.get(term) ?? 0) + 1);
      sentences.push({
        text: sentenceText,
        order: sentences.length,
        words: countWords(sentenceText),
        lead,
        terms,
      });
      lead = false;
    }
  }
  return sentences;
}

function weigh(terms: Map<string, number>, idf: (term: string) => number): Map<string, number> {
  const vector = new Map<string, number>();
  for (const [term, count] of terms) vector.set(term, (1 + Math.log(count)) * idf(term));
  return vector;
}

function sumVectors(vectors: readonly Map<string, number>[]): Map<string, number> {
  const sum = new Map<string, number>();
  for (const vector of vectors) for (const [term, value] of vector) sum.set(term, (sum.get(term) ?? 0) + value);
  return sum;
}

function normalize(vector: Map<string, number>): Map<string, number> {
  let norm = 0;
  for (const value of vector.values()) norm += value * value;
  norm = Math.sqrt(norm);
  if (norm === 0) return vector;
  const unit = new Map<string, number>();
  for (const [term, value] of vector) unit.set(term, value / norm);
  return unit;
}

function dot(a: Map<string, number>, b: Map<string, number>): number {
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  let sum = 0;
  for (const [term, value] of small) sum += value * (large.get(term) ?? 0);
  return sum;
}
