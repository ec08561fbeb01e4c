import { describe, expect, it } from 'vitest';
import { clipSentences, clipText, ellipsize } from './text.js';

describe('clipText', () => {
  it('keeps text that fits and cuts the rest to the limit', () => {
    expect(clipText('harbour', 7)).toBe('harbour');
    expect(clipText('harbour', 4)).toBe('harb');
    expect(clipText('harbour', 0)).toBe('');
  });

  it('never leaves half of a surrogate pair', () => {
    // '🌊' is two code units: a cut after its first would leave a lone high surrogate.
    expect(clipText('ab🌊cd', 3)).toBe('ab');
    expect(clipText('ab🌊cd', 4)).toBe('ab🌊');
  });
});

describe('clipText between grapheme clusters', () => {
  it('keeps an accent on its letter, a vowel sign on its consonant and an emoji sequence whole', () => {
    // A decomposed "é" is an "e" and a combining accent.
    expect(clipText('cafe\u0301s', 4)).toBe('caf');
    expect(clipText('cafe\u0301s', 5)).toBe('cafe\u0301');
    // Hindi: "स्ते" is one letter of four code points.
    expect(clipText('नमस्ते', 4)).toBe('नम');
    // A family is seven code points (eleven code units) joined by zero-width joiners; a flag is two.
    const family = '👨‍👩‍👧‍👦';
    expect(clipText(`ab${family}`, 12)).toBe('ab');
    expect(clipText(`ab${family}c`, 13)).toBe(`ab${family}`);
    expect(clipText('🇫🇷🇩🇪', 6)).toBe('🇫🇷');
  });

  it('cuts a first cluster longer than the room between code points, so it never returns nothing', () => {
    const stacked = `a${'\u0301'.repeat(20)}`;
    expect(clipText(stacked, 5)).toBe(stacked.slice(0, 5));
    expect(clipText(`🌊${'\u0301'.repeat(5)}`, 3)).toBe('🌊\u0301');
    expect(clipText(`🌊${'\u0301'.repeat(5)}`, 2)).toBe('🌊');
    // One code unit of room and an astral character first: nothing, never half of the character.
    expect(clipText(`🌊${'\u0301'.repeat(5)}`, 1)).toBe('');
  });

  it('leaves whole clusters to ellipsize and clipSentences', () => {
    expect(ellipsize(`abc${'e\u0301'.repeat(4)}`, 6)).toBe('abce\u0301…');
    expect(clipSentences(`xxxx${'e\u0301'.repeat(10)}`, 10)).toBe(`xxxx${'e\u0301'.repeat(2)}…`);
  });
});

describe('ellipsize', () => {
  it('keeps text that fits, and ends a cut one in an ellipsis within the limit', () => {
    expect(ellipsize('the lamp', 8)).toBe('the lamp');
    const cut = ellipsize('the lamp was lit', 10);
    expect(cut).toBe('the lamp…');
    expect(cut.length).toBeLessThanOrEqual(10);
  });

  it('trims the space the cut leaves and never splits an emoji', () => {
    expect(ellipsize('the lamp was lit', 5)).toBe('the…');
    const cut = ellipsize(`${'a'.repeat(8)}🌊🌊`, 10);
    expect(cut).toBe(`${'a'.repeat(8)}…`);
    expect(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/.test(cut)).toBe(false);
  });
});

describe('clipSentences', () => {
  it('keeps whole sentences that fit', () => {
    const text = 'Mira lit the lamp. Tobin counted the ships. The fog came in over the bay.';
    expect(clipSentences(text, 200)).toBe(text);
    expect(clipSentences(text, 50)).toBe('Mira lit the lamp. Tobin counted the ships.');
    // A sentence end at the very edge of the room, followed by a space in the text, is kept.
    expect(clipSentences(text, 43)).toBe('Mira lit the lamp. Tobin counted the ships.');
    // The only sentence end that fits is in the first half of the room: more of the text, cut at a word.
    expect(clipSentences(text, 42)).toBe('Mira lit the lamp. Tobin counted the…');
  });

  it('cuts at a word with an ellipsis when no sentence ends in the second half of the room', () => {
    const text = 'A long sentence without any full stop that goes on and on past the room it has';
    const cut = clipSentences(text, 30);
    expect(cut).toBe('A long sentence without any…');
    expect(cut.length).toBeLessThanOrEqual(30);
  });
});
