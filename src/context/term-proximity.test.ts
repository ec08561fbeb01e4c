import { describe, expect, it } from 'vitest';
import { proximityScores, TermSequenceCache } from './term-proximity.js';
import { analyze } from './text-analysis.js';

const score = (query: string, texts: string[], window = 8, cache = new TermSequenceCache()) =>
  proximityScores(
    analyze(query),
    texts.map((text, index) => ({ key: String(index), text })),
    cache,
    window,
  );

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

  it('matches stems and skips stop words when it counts the distance', () => {
    // "stones" stems to "stone"; "of the" are stop words, so "red" and "stones" are adjacent.
    const [stemmed, other] = score('red stone', ['A heap of red of the stones.', 'A stone, near a red door.']);
    expect(stemmed).toBe(1);
    expect(other).toBeCloseTo(1 / 4);
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

  it('re-analyses a cached text when it changes under the same key', () => {
    const cache = new TermSequenceCache();
    expect(score('red stone', ['the red stone', 'a stone'], 8, cache)).toEqual([1, 0]);
    expect(score('red stone', ['the red hill, far from any stone at all', 'a red stone'], 2, cache)).toEqual([0, 1]);
  });

  it('stays bounded: the oldest texts are forgotten, and analysis starts over when the vocabulary is full', () => {
    const cache = new TermSequenceCache(2, 5);
    cache.sequence('a', 'red stone');
    cache.sequence('b', 'blue stone');
    cache.sequence('c', 'green stone');
    // 'a' was forgotten; re-analysing it still gives the same terms.
    expect(Array.from(cache.sequence('a', 'red stone'))).toHaveLength(2);
    cache.sequence('d', 'one two three four five six seven');
    cache.sequence('e', 'red stone');
    expect(cache.termId('seven')).toBe(-1);
    expect(cache.termId('red')).toBeGreaterThanOrEqual(0);
    expect(score('red stone', ['red stone'], 8, cache)).toEqual([1]);
  });
});
