import { describe, expect, it } from 'vitest';
import { ValidationError } from '../core/errors.js';
import { createEstimatingTokenizer } from './estimating-tokenizer.js';

describe('createEstimatingTokenizer', () => {
  const tokenizer = createEstimatingTokenizer();

  it('is a v1 estimate, not an exact count', () => {
    expect(tokenizer.specificationVersion).toBe('v1');
    expect(tokenizer.exact).toBe(false);
  });

  it('counts nothing for an empty text and at least one token for any non-empty text', () => {
    expect(tokenizer.count('')).toBe(0);
    // One word is rounded up from 1.3 tokens: the estimator would rather overcount a word than undercount it.
    expect(tokenizer.count('a')).toBe(2);
    expect(tokenizer.count(' ')).toBe(1);
  });

  it('stays above what Claude counts on English prose (about 4 characters per token)', () => {
    const prose =
      'The island drifted one mile north each night, and the keepers had learned to read the morning by the birds. ' +
      'Mira climbed the stairs before dawn, counting the steps the way her mother had taught her, and found Tobin ' +
      'already asleep beside the lamp with a book of tide tables open on his chest.';
    const claudeLike = Math.ceil(prose.length / 4);
    expect(tokenizer.count(prose)).toBeGreaterThanOrEqual(claudeLike);
    // Conservative, not absurd: within 30 % of the 4-characters-per-token figure.
    expect(tokenizer.count(prose)).toBeLessThan(claudeLike * 1.3);
  });

  it('uses the word bound when short words would make the character bound too low', () => {
    // 100 one-letter words: 199 characters, ~57 by characters, yet each word costs a token.
    const text = Array.from({ length: 100 }, () => 'a').join(' ');
    expect(tokenizer.count(text)).toBe(130);
  });

  it('charges digits, punctuation and non-Latin scripts more than letters', () => {
    expect(tokenizer.count('1234567890')).toBe(5);
    expect(tokenizer.count('{"a":[1,2]}')).toBeGreaterThanOrEqual(5);
    expect(tokenizer.count('灯台守は夜に島を見張る')).toBe(11);
    expect(tokenizer.count('🌊🌊🌊')).toBe(6);
    expect(tokenizer.count('abcdefghij')).toBeLessThan(tokenizer.count('1234567890'));
  });

  it('is additive enough to budget with: the count of a concatenation is at most the sum plus one', () => {
    const parts = ['The lamp turned. ', 'Mira watched the sea; ', 'Tobin counted 1, 2, 3. ', 'Café au lait? ☕'];
    const sum = parts.reduce((total, part) => total + tokenizer.count(part), 0);
    expect(tokenizer.count(parts.join(''))).toBeLessThanOrEqual(sum + 1);
  });

  it('is more conservative with fewer characters per token', () => {
    const text = 'A quiet morning on the drifting island.';
    expect(createEstimatingTokenizer({ charsPerToken: 2 }).count(text)).toBeGreaterThan(tokenizer.count(text));
  });

  it('refuses an invalid charsPerToken with a ValidationError', () => {
    for (const charsPerToken of [0, -1, Number.NaN, 100]) {
      expect(() => createEstimatingTokenizer({ charsPerToken })).toThrow(ValidationError);
    }
  });

  it('counts a 200,000-character scene quickly', () => {
    const text = 'The lamp must never go dark. '.repeat(7_000);
    const started = performance.now();
    const count = tokenizer.count(text);
    expect(count).toBeGreaterThan(text.length / 4);
    expect(performance.now() - started).toBeLessThan(200);
  });
});
