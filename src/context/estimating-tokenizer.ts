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
 * - Characters outside ASCII cost one token each, and two outside the Basic Multilingual Plane (emoji): byte-level
 *   tokenizers often spend one token per CJK character and several per emoji.
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
      for (let index = 0; index < text.length; index++) {
        const code = text.charCodeAt(index);
        const isSpace = code === 32 || (code >= 9 && code <= 13);
        if (isSpace) inWord = false;
        else if (!inWord) {
          inWord = true;
          words++;
        }
        if (code < 128) {
          const isLetter = (code >= 65 && code <= 90) || (code >= 97 && code <= 122);
          tokens += isLetter || isSpace ? tokensPerPlainCharacter : TOKENS_PER_SYMBOL;
        } else if (code >= 0xd800 && code <= 0xdbff && index + 1 < text.length) {
          const next = text.charCodeAt(index + 1);
          if (next >= 0xdc00 && next <= 0xdfff) index++;
          tokens += TOKENS_PER_ASTRAL_CHARACTER;
        } else {
          tokens += TOKENS_PER_WIDE_CHARACTER;
        }
      }
      // The small epsilon keeps float noise (0.1 + 0.2) from rounding a whole count up by one.
      return Math.max(Math.ceil(tokens - 1e-9), Math.ceil(words * TOKENS_PER_WORD - 1e-9));
    },
  };
}
