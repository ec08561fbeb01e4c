import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nearPositions, proximityScores, termPositions } from './term-proximity.js';
import { analyze, STOP_WORDS, stem, tokenizeWords } from './text-analysis.js';

const score = (query: string, texts: string[], window = 8) => proximityScores(analyze(query), texts, window);

describe('proximityScores', () => {
  it('gives the text with the query terms closest together 1, and decays with the squared distance', () => {
    const [adjacent, two, far] = score('red stone', [
      'He found the red stone.',
      'He found the red, cracked stone.',
      'Red sky at night; many miles away, past hills and rivers and towns and farms, a stone.',
    ]);
    expect(adjacent).toBe(1);
    expect(two).toBeCloseTo(1 / 4);
    expect(far).toBe(0);
  });

  it('matches stems, never a stop word, and counts distance in non-stop words', () => {
    // "stones" stems to "stone"; "of the" are stop words, so "red" and "stones" are adjacent. "his" is a stop word
    // even though it stems to "hi".
    const [stemmed, other] = score('red stone', ['A heap of red of the stones.', 'A stone near a red door.']);
    expect(stemmed).toBe(1);
    expect(other).toBeCloseTo(1 / 4);
    expect(score('hi stone', ['his stone', 'hi stone'])).toEqual([0, 1]);
  });

  it('weighs pairs by how rare their terms are among the texts', () => {
    // Every text holds "key" and "door"; only the first holds "cellar". The cellar pair is worth more than the
    // door pair at the same distance.
    const [cellar, door] = score('key cellar door', [
      'The key of the cellar.',
      'The key of the door.',
      'A key, then far away, past the garden and the well and the orchard and the barn, a door.',
    ]);
    expect(cellar).toBe(1);
    expect(door).toBeGreaterThan(0);
    expect(door).toBeLessThan(1);
  });

  it('gives zeros to a query of fewer than two distinct terms, or with no term any text holds', () => {
    expect(score('stone', ['red stone', 'stone'])).toEqual([0, 0]);
    expect(score('stone stones', ['red stone', 'stone'])).toEqual([0, 0]);
    expect(score('dragon castle', ['red stone', 'stone'])).toEqual([0, 0]);
    expect(score('red stone', [])).toEqual([]);
  });
});

describe('termPositions', () => {
  /** The definition: positions among the non-stop words of `tokenizeWords`, of the words that stem to a term. */
  const reference = (text: string, terms: string[]) => {
    const positions: number[][] = terms.map(() => []);
    tokenizeWords(text)
      .filter((word) => !STOP_WORDS.has(word))
      .forEach((word, position) => {
        const slot = terms.indexOf(stem(word));
        if (slot >= 0) positions[slot]!.push(position);
      });
    return positions;
  };
  const plain = [
    ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
    ...' \n\t.,;:!?-()"\'',
    '\u2019',
    '\u2018',
    '\u201C',
    '\u201D',
    '\u2013',
    '\u2014',
    '\u2026',
    '\u00A0',
  ];
  const other = ['\u02BC', 'é', 'É', 'ß', 'İ', 'ﬁ', 'が', 'Σ'];
  const words = [
    'the',
    'red',
    'stones',
    'stone',
    'running',
    'runs',
    'his',
    'hi',
    'café',
    "dragon's",
    'dont',
    'is',
    "don't",
    'couldnt',
    'of',
  ];

  it('finds what the keyword index would count, on plain English text and on any other', () => {
    const property = (alphabet: string[]) =>
      fc.property(
        fc.array(fc.oneof(fc.constantFrom(...alphabet), fc.constantFrom(...words.map((word) => ` ${word}`))), {
          maxLength: 60,
        }),
        fc.uniqueArray(fc.constantFrom(...words), { minLength: 1, maxLength: 4 }),
        (pieces, queryWords) => {
          const text = pieces.join('');
          const terms = [...new Set(analyze(queryWords.join(' ')))];
          expect(termPositions(text, terms, new Map())).toEqual(reference(text, terms));
        },
      );
    fc.assert(property(plain), { numRuns: 2_000 });
    fc.assert(property([...plain, ...other]), { numRuns: 1_000 });
    expect(
      termPositions("The dragon’s cave, the Dragon's CAVE; a café.", ['dragon', 'cave', 'cafe'], new Map()),
    ).toEqual([[0, 2], [1, 3], [4]]);
  });
});

describe('nearPositions', () => {
  const closest = (positions: number[][], window: number) =>
    positions.map((first) =>
      positions.map((second) => {
        let best = Number.POSITIVE_INFINITY;
        for (const a of first) for (const b of second) if (a !== b) best = Math.min(best, Math.abs(a - b));
        return best <= window ? best : Number.POSITIVE_INFINITY;
      }),
    );
  const pieces = [
    ...' .,;:!?-()"\'\u2019\u2026\n',
    ...['the', 'red', 'stones', 'stone', 'running', 'runs', 'his', 'hi', "dragon's", 'dont', "don't", 'is', 'of'],
    ...['a', 'and', 'sea', 'far', 'o\u2019brien', 'redstone', 'ared', 'xred'],
    'x'.repeat(70),
  ];

  it('gives the same distances as termPositions up to the window, and says "farther" beyond it', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...pieces), { maxLength: 80 }),
        fc.uniqueArray(fc.constantFrom('red', 'stone', 'run', 'hi', 'dragon', 'sea', 'brien', 'obrien'), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.integer({ min: 1, max: 10 }),
        (parts, terms, window) => {
          const text = parts.join(' ');
          expect(closest(nearPositions(text, terms, new Map(), window), window)).toEqual(
            closest(termPositions(text, terms, new Map()), window),
          );
        },
      ),
      { numRuns: 3_000 },
    );
  });
});
