/**
 * The offline `Tokenizer`: a fast, conservative estimate of how many tokens a text costs in Claude's context window.
 *
 * Claude's tokenizer is not published, so an offline count can only be an estimate. The context layer uses counts to
 * pack a prompt into a budget, where an underestimate overflows the window (a failed call) while an overestimate only
 * leaves a little room unused. This estimator is therefore built to err high:
 *
 * - English prose runs at about 4 characters per token in Claude's tokenizer; the default of 3.5 leaves ~12 % margin.
 * - Short words cost a whole token each however few characters they have, so the word count times 1.3 is a second
 *   lower bound on prose full of short words and punctuation; the larger of the two wins.
 * - Digits and ASCII punctuation split into small pieces (numbers, code, JSON), so they count half a token each.
 * - A line break is a token of its own (the rest of a run of breaks joins it).
 * - Ids and invented names tokenize far worse than words: a base58 transaction signature costs about 0.7 tokens a
 *   character, not 0.3. A letter or digit costs more where such strings break into pieces: a capital after a small
 *   letter, a digit after a letter or a letter after a digit, and a pair of letters rare in English (a vocabulary
 *   learnt on English seldom has a token spanning one).
 * - Characters outside ASCII cost one token each, and two outside the Basic Multilingual Plane (emoji): byte-level
 *   tokenizers often spend one token per CJK character and several per emoji. A combining mark (the accent of a
 *   decomposed "é") costs two: itself, and the piece it cuts its word into.
 *
 * Measured against two published tokenizers (cl100k_base and o200k_base; Claude's is reported to be less compact than
 * both), the estimate is above both on paragraphs of English prose (by 15 to 25 %), on ids (base58, base64, hex,
 * UUIDs) and decomposed accents, and on sentences of invented names by about 9 % (up to one such sentence in ten
 * comes out a token or two under the larger count); on CJK and emoji it lies between the two. A short line of names or
 * decimals can come out a few tokens under the larger of them. The count is monotone (a text never costs less than a
 * piece of it), and the count of a concatenation is at most the sum of the counts plus one (a join between a letter
 * and a digit can start a new piece); joined at a line break, at most the sum plus that break.
 *
 * @module
 */
import { ValidationError } from '../core/errors.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * Options of `createEstimatingTokenizer`.
 *
 * @example
 * ```ts
 * import { createEstimatingTokenizer, type EstimatingTokenizerOptions } from 'storyloom';
 * const options: EstimatingTokenizerOptions = { charsPerToken: 3 };
 * const tokenizer = createEstimatingTokenizer(options);
 * ```
 */
export interface EstimatingTokenizerOptions {
  /**
   * Characters of plain ASCII letters and spaces per token. Default 3.5, below the ~4 Claude averages on English, so
   * the estimate stays above the real count. Lower is more conservative. Must be within 1..8.
   */
  charsPerToken?: number;
}

/** Tokens per word: the second bound, for prose of short words where characters alone would undercount. */
const TOKENS_PER_WORD = 1.3;
/** Digits and ASCII punctuation tokenize in small groups; half a token each keeps numbers and code on the safe side. */
const TOKENS_PER_SYMBOL = 0.5;
/** A non-ASCII character in the Basic Multilingual Plane (accented letter, CJK, ...). */
const TOKENS_PER_WIDE_CHARACTER = 1;
/** A character outside the BMP (emoji, rare CJK): several UTF-8 bytes, often several tokens. */
const TOKENS_PER_ASTRAL_CHARACTER = 2;
/** A combining mark: its own token, and the letters after it start another (BPE pre-splits words at marks). */
const TOKENS_PER_MARK = 2;
/** The first line break of a run: a token of its own. */
const TOKENS_PER_LINE_BREAK = 1;
/** Extra for a letter or digit that starts a new piece as ids do (`aB`, `a1`, `1a`). */
const TOKENS_PER_ID_BREAK = 0.8;
/** Extra for the second letter of a pair rare in English. */
const TOKENS_PER_RARE_PAIR = 0.8;
/**
 * The 371 of the 676 ASCII letter pairs (case aside) that few tokens of two published vocabularies span: fewer than
 * 300 of the 176,494 all-letter tokens of cl100k_base and o200k_base together hold the pair. One bit each at
 * `first * 26 + second`; `bench/letter-pairs.ts` rebuilds it. Charging such a pair lifts invented names and
 * all-letter ids to the tokenizers' counts (see the module notes), for about 1 % more on English prose.
 */
const RARE_LETTER_PAIRS = Uint8Array.from(
  atob(
    'EEABuNumryYbrrltugACADjblu9imb67bbmAAVG5/77vbju+uemw7C7rC0gOCygQoJtN+P//7wMKBKsmMqqaaaiAQvG7+/7v5rn/ut/97gf7u/v+Dw==',
  ),
  (character) => character.charCodeAt(0),
);
/** Sticky: tests the one character at `lastIndex` without slicing the text. */
const COMBINING_MARK = /\p{M}/uy;

/** 1 for a small ASCII letter, 2 for a capital, 3 for a digit, 0 for anything else. */
function asciiKind(code: number): number {
  return code >= 97 && code <= 122 ? 1 : code >= 65 && code <= 90 ? 2 : code >= 48 && code <= 57 ? 3 : 0;
}

/**
 * Creates the offline token estimator (`exact: false`). Counting is a single pass over the text's code units, with
 * no allocation, so it can run on every candidate item of a context budget.
 *
 * @example
 * ```ts
 * import { createEstimatingTokenizer } from 'storyloom';
 * const tokenizer = createEstimatingTokenizer();
 * tokenizer.count('The lamp must never go dark.'); // 9: at least what Claude counts
 * ```
 */
export function createEstimatingTokenizer(options: EstimatingTokenizerOptions = {}): Tokenizer {
  const charsPerToken = options.charsPerToken ?? 3.5;
  if (typeof charsPerToken !== 'number' || !Number.isFinite(charsPerToken) || charsPerToken < 1 || charsPerToken > 8) {
    throw new ValidationError(`charsPerToken must be a number within 1..8, got ${String(charsPerToken)}`, {
      problems: [{ path: 'charsPerToken', message: 'must be a number within 1..8' }],
    });
  }
  const tokensPerPlainCharacter = 1 / charsPerToken;
  return {
    specificationVersion: 'v1',
    provider: 'estimate',
    exact: false,
    count(text: string): number {
      if (text.length === 0) return 0;
      let tokens = 0;
      let words = 0;
      let inWord = false;
      let previous = 0;
      for (let index = 0; index < text.length; index++) {
        const code = text.charCodeAt(index);
        const isSpace = code === 32 || (code >= 9 && code <= 13);
        if (isSpace) inWord = false;
        else if (!inWord) {
          inWord = true;
          words++;
        }
        if (code === 10 || code === 13) {
          tokens += previous === 10 || previous === 13 ? tokensPerPlainCharacter : TOKENS_PER_LINE_BREAK;
        } else if (code < 128) {
          const kind = asciiKind(code);
          const before = asciiKind(previous);
          tokens += kind === 3 || (kind === 0 && !isSpace) ? TOKENS_PER_SYMBOL : tokensPerPlainCharacter;
          // Only the previous character matters, so a join adds at most one of these (the "sum plus one" above).
          if (kind !== 0 && before !== 0) {
            const pair = ((previous | 32) - 97) * 26 + (code | 32) - 97;
            if ((kind === 3) !== (before === 3) || (kind === 2 && before === 1)) tokens += TOKENS_PER_ID_BREAK;
            else if (kind !== 3 && (RARE_LETTER_PAIRS[pair >> 3]! >> (pair & 7)) & 1) tokens += TOKENS_PER_RARE_PAIR;
          }
        } else if (code >= 0xd800 && code <= 0xdbff && index + 1 < text.length) {
          const next = text.charCodeAt(index + 1);
          if (next >= 0xdc00 && next <= 0xdfff) index++;
          tokens += TOKENS_PER_ASTRAL_CHARACTER;
        } else {
          COMBINING_MARK.lastIndex = index;
          tokens += COMBINING_MARK.test(text) ? TOKENS_PER_MARK : TOKENS_PER_WIDE_CHARACTER;
        }
        previous = code;
      }
      // The small epsilon keeps float noise (0.1 + 0.2) from rounding a whole count up by one.
      return Math.max(Math.ceil(tokens - 1e-9), Math.ceil(words * TOKENS_PER_WORD - 1e-9));
    },
  };
}
