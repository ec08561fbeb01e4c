import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  analyze,
  clipWords,
  foldText,
  isSpace,
  lastWords,
  MAX_TERM_LENGTH,
  STOP_WORDS,
  stem,
  tokenizeWords,
} from './text-analysis.js';

describe('foldText', () => {
  it('lowercases and folds accents, ligatures, width variants and letters NFKD leaves alone', () => {
    expect(foldText('Ångström Café')).toBe('angstrom cafe');
    expect(foldText('ﬁre ＡＢＣ １２３')).toBe('fire abc 123');
    expect(foldText('Straße Æsir Œuvre Øresund Łódź Đakovo Þórr')).toBe(
      'strasse aesir oeuvre oresund lodz dakovo thorr',
    );
    expect(foldText('İstanbul ΣΟΦΊΑ')).toBe('istanbul σοφια');
  });

  it('leaves plain lowercase ASCII unchanged', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z0-9 .,;!?-]*$/), (text) => {
        expect(foldText(text)).toBe(text);
      }),
    );
  });
});

describe('tokenizeWords', () => {
  it('splits on anything but letters and digits, keeping stop words and word forms', () => {
    expect(tokenizeWords('The dragons—3 of them—slept; (quietly).')).toEqual([
      'the',
      'dragons',
      '3',
      'of',
      'them',
      'slept',
      'quietly',
    ]);
  });

  it('drops a possessive and joins contractions, with straight or curly apostrophes', () => {
    expect(tokenizeWords("Mira's café, don’t! O'Brien")).toEqual(['mira', 'cafe', 'dont', 'obrien']);
    expect(tokenizeWords('Mira’s')).toEqual(tokenizeWords("Mira's"));
    expect(tokenizeWords("'quoted' rock 'n' roll")).toEqual(['quoted', 'rock', 'n', 'roll']);
  });

  it('keeps words of any script whole, with the marks that change their meaning', () => {
    expect(tokenizeWords('Дракон спит. التنين')).toEqual(['дракон', 'спит', 'التنين']);
    expect(tokenizeWords('ड्रैगन सो रहा है')).toEqual(['ड्रैगन', 'सो', 'रहा', 'है']);
    expect(tokenizeWords('용이 잔다')).toEqual(['용이', '잔다']);
    expect(tokenizeWords('ΟΔΟΣ')).toEqual(tokenizeWords('οδοσ'));
  });

  it('reads scripts written without spaces as overlapping pairs of characters', () => {
    // A whole run was one "word": a Chinese or Japanese sentence matched only itself, and a run over
    // MAX_TERM_LENGTH characters was dropped, so nothing in it could be searched for.
    expect(tokenizeWords('龍が眠る。')).toEqual(['龍が', 'が眠', '眠る']);
    expect(tokenizeWords('李明去了哪里？')).toEqual(['李明', '明去', '去了', '了哪', '哪里']);
    expect(tokenizeWords('明')).toEqual(['明']);
    // Other scripts inside the run stay words; a Thai vowel sign stays with its consonant.
    expect(tokenizeWords('Mira は iPhoneを持つ')).toEqual(['mira', 'は', 'iphone', 'を持', '持つ']);
    expect(tokenizeWords('น้ำ')).toEqual([foldText('น้ำ')]);
    expect(tokenizeWords('灯'.repeat(MAX_TERM_LENGTH + 10))).toHaveLength(MAX_TERM_LENGTH + 9);
    // Full-width forms fold first, so ＭＩＲＡ is mira.
    expect(tokenizeWords('ＭＩＲＡ')).toEqual(['mira']);
  });

  it('drops tokens longer than MAX_TERM_LENGTH', () => {
    const long = 'x'.repeat(MAX_TERM_LENGTH + 1);
    expect(tokenizeWords(`keep ${long} this`)).toEqual(['keep', 'this']);
    expect(tokenizeWords('y'.repeat(MAX_TERM_LENGTH))).toHaveLength(1);
  });

  it('returns only non-empty folded words, whatever the input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 80 }), (text) => {
        for (const word of tokenizeWords(text)) {
          expect(word.length).toBeGreaterThan(0);
          expect(word.length).toBeLessThanOrEqual(MAX_TERM_LENGTH);
          expect(word).toBe(foldText(word));
          expect(word).toMatch(/^[\p{L}\p{N}\p{M}]+$/u);
        }
      }),
    );
  });
});

describe('stem', () => {
  // From Porter's published sample vocabulary and its output.
  const vocabulary: Record<string, string> = {
    caresses: 'caress',
    ponies: 'poni',
    ties: 'ti',
    caress: 'caress',
    cats: 'cat',
    feed: 'feed',
    agreed: 'agre',
    plastered: 'plaster',
    bled: 'bled',
    motoring: 'motor',
    sing: 'sing',
    conflated: 'conflat',
    troubled: 'troubl',
    sized: 'size',
    hopping: 'hop',
    tanned: 'tan',
    falling: 'fall',
    hissing: 'hiss',
    fizzed: 'fizz',
    failing: 'fail',
    filing: 'file',
    happy: 'happi',
    sky: 'sky',
    relational: 'relat',
    conditional: 'condit',
    rational: 'ration',
    valenci: 'valenc',
    digitizer: 'digit',
    conformabli: 'conform',
    radicalli: 'radic',
    differentli: 'differ',
    vileli: 'vile',
    analogousli: 'analog',
    vietnamization: 'vietnam',
    predication: 'predic',
    operator: 'oper',
    feudalism: 'feudal',
    decisiveness: 'decis',
    hopefulness: 'hope',
    callousness: 'callous',
    formaliti: 'formal',
    sensitiviti: 'sensit',
    sensibiliti: 'sensibl',
    triplicate: 'triplic',
    formative: 'form',
    formalize: 'formal',
    electriciti: 'electr',
    electrical: 'electr',
    hopeful: 'hope',
    goodness: 'good',
    revival: 'reviv',
    allowance: 'allow',
    inference: 'infer',
    airliner: 'airlin',
    gyroscopic: 'gyroscop',
    adjustable: 'adjust',
    defensible: 'defens',
    irritant: 'irrit',
    replacement: 'replac',
    adjustment: 'adjust',
    dependent: 'depend',
    adoption: 'adopt',
    homologou: 'homolog',
    communism: 'commun',
    activate: 'activ',
    angulariti: 'angular',
    homologous: 'homolog',
    effective: 'effect',
    bowdlerize: 'bowdler',
    probate: 'probat',
    rate: 'rate',
    cease: 'ceas',
    controll: 'control',
    roll: 'roll',
    generalizations: 'gener',
    oscillators: 'oscil',
    archaeology: 'archaeolog',
  };

  it.each(Object.entries(vocabulary))('%s → %s', (word, expected) => {
    expect(stem(word)).toBe(expected);
  });

  it('gives singular and plural, and verb forms, the same stem', () => {
    expect(stem('dragons')).toBe(stem('dragon'));
    expect(new Set(['walk', 'walks', 'walked', 'walking'].map(stem))).toEqual(new Set(['walk']));
  });

  it('leaves short words, digits and non-English letters as they are', () => {
    expect(stem('is')).toBe('is');
    expect(stem('1980s')).toBe('1980s');
    expect(stem('драконы')).toBe('драконы');
  });

  it('never lengthens a word by more than one letter and is stable on its output for plain words', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z]{1,15}$/), (word) => {
        const stemmed = stem(word);
        expect(stemmed.length).toBeGreaterThan(0);
        // Step 1b can add an "e" (hoping → hope); nothing else adds letters.
        expect(stemmed.length).toBeLessThanOrEqual(word.length + 1);
      }),
    );
  });
});

describe('analyze', () => {
  it('folds, drops stop words and stems', () => {
    expect(analyze('The Dragons were sleeping in the Château')).toEqual(['dragon', 'sleep', 'chateau']);
  });

  it('returns nothing for stop words and punctuation alone', () => {
    expect(analyze("The and of it's, isn't it? ...")).toEqual([]);
    expect(analyze('')).toEqual([]);
  });

  it('keeps negations, which change what a passage says', () => {
    expect(analyze('not guilty, never, no way')).toEqual(['not', 'guilti', 'never', 'no', 'wai']);
  });

  it('lists its stop words in folded form, so tokenizeWords output can be looked up', () => {
    for (const word of STOP_WORDS) expect(tokenizeWords(word)).toEqual([word]);
  });

  it('gives the same terms for a query in another case or accent style', () => {
    expect(analyze('CAFÉS Naïve')).toEqual(analyze('cafes naive'));
  });

  it('gives every caller a list of its own, however often the same text is analysed', () => {
    // Short texts (queries) are remembered between calls: a caller changing its list must not change the next one's.
    const first = analyze('Where did the dragons hide the lantern?');
    expect(first).toEqual(['dragon', 'hide', 'lantern']);
    first.push('changed');
    first[0] = 'changed';
    expect(analyze('Where did the dragons hide the lantern?')).toEqual(['dragon', 'hide', 'lantern']);
    expect(analyze('Where did the dragons hide the lantern?')).not.toBe(
      analyze('Where did the dragons hide the lantern?'),
    );
  });
});

describe('clipWords and lastWords', () => {
  // The split-based versions they replace, which read the whole text.
  const words = (text: string) => text.split(/\s+/).filter(Boolean);
  const clipReference = (text: string, n: number) =>
    words(text).length <= n ? words(text).join(' ') : `${words(text).slice(0, n).join(' ')} …`;
  const lastReference = (text: string, n: number) => words(text).slice(-n).join(' ');
  const spaced = fc.string({
    unit: fc.constantFrom('a', 'b', 'é', '😀', ' ', '  ', '\n', '\t', '\u00a0', '\u2003', '\u3000', '\ufeff', '.'),
    maxLength: 60,
  });

  it('give what splitting on whitespace gives', () => {
    fc.assert(
      fc.property(spaced, fc.integer({ min: 1, max: 12 }), (text, n) => {
        expect(clipWords(text, n)).toBe(clipReference(text, n));
        expect(lastWords(text, n)).toBe(lastReference(text, n));
      }),
      { numRuns: 2_000 },
    );
  });

  it('reads whitespace exactly as \\s does, on every UTF-16 code unit', () => {
    for (let code = 0; code <= 0xffff; code++) {
      expect(isSpace(code), `U+${code.toString(16)}`).toBe(/\s/.test(String.fromCharCode(code)));
    }
  });
});
