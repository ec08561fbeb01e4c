import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StoryloomError, ValidationError } from '../core/errors.js';
import { runKeywordIndexSuite } from '../testing/keyword-index-suite.js';
import type { KeywordDocument } from './keyword-index.js';
import { createMemoryKeywordIndex } from './memory-keyword-index.js';

runKeywordIndexSuite({ describe, it }, { name: 'memory', create: () => createMemoryKeywordIndex() });

function doc(id: string, text: string, storyId = 's1'): KeywordDocument {
  return { id, text, metadata: { storyId, type: 'scene', timestamp: 1, sourceId: id } };
}

/** Lucene's BM25 for one term, written out independently of the index. */
function bm25(tf: number, docLength: number, averageLength: number, n: number, total: number, k1 = 1.2, b = 0.75) {
  const idf = Math.log(1 + (total - n + 0.5) / (n + 0.5));
  return (idf * tf * (k1 + 1)) / (tf + k1 * (1 - b + (b * docLength) / averageLength));
}

describe('createMemoryKeywordIndex', () => {
  it('scores with Lucene BM25 exactly', async () => {
    const index = createMemoryKeywordIndex();
    // Terms after analysis: [wolf, howl, wolf] (3), [wolf, moon] (2), [river, bend, stone, moss] (4). Average 3.
    await index.upsert('s1', [
      doc('a', 'The wolf howled, a wolf.'),
      doc('b', 'Wolf moon'),
      doc('c', 'river bend stone moss'),
    ]);
    const matches = await index.query('s1', { text: 'wolf howling', topK: 10 });
    const wolfA = bm25(2, 3, 3, 2, 3);
    const howlA = bm25(1, 3, 3, 1, 3);
    const wolfB = bm25(1, 2, 3, 2, 3);
    expect(matches.map((match) => match.id)).toEqual(['a', 'b']);
    expect(matches[0]!.score).toBeCloseTo(wolfA + howlA, 12);
    expect(matches[1]!.score).toBeCloseTo(wolfB, 12);
  });

  it('uses its k1 and b options', async () => {
    const index = createMemoryKeywordIndex({ k1: 2, b: 0 });
    await index.upsert('s1', [doc('a', 'wolf wolf wolf'), doc('b', 'river'), doc('c', 'stone')]);
    const [match] = await index.query('s1', { text: 'wolf', topK: 1 });
    expect(match!.score).toBeCloseTo(bm25(3, 3, 5 / 3, 1, 3, 2, 0), 12);
  });

  it('keeps document counts and lengths right through replacements and deletes', async () => {
    const index = createMemoryKeywordIndex();
    await index.upsert('s1', [doc('a', 'wolf wolf wolf wolf wolf wolf'), doc('b', 'wolf river')]);
    await index.upsert('s1', [doc('a', 'stone moss'), doc('c', 'bend')]);
    await index.delete('s1', { ids: ['c'] });
    // Left: a = [stone, moss], b = [wolf, river]: N = 2, average length 2; "a" no longer holds "wolf".
    const matches = await index.query('s1', { text: 'wolf', topK: 10 });
    expect(matches.map((match) => match.id)).toEqual(['b']);
    expect(matches[0]!.score).toBeCloseTo(bm25(1, 2, 2, 1, 2), 12);
  });

  it('re-reads document lengths after a write that leaves the count and the average unchanged', async () => {
    const index = createMemoryKeywordIndex();
    await index.upsert('s1', [doc('a', 'wolf river'), doc('b', 'wolf river stone moss')]);
    const before = await index.query('s1', { text: 'wolf', topK: 2 });
    expect(before.map((match) => match.id)).toEqual(['a', 'b']);
    // Same two lengths, swapped: N and the average length do not move, the shorter document now is "b".
    await index.upsert('s1', [doc('a', 'wolf river stone moss'), doc('b', 'wolf river')]);
    const after = await index.query('s1', { text: 'wolf', topK: 2 });
    expect(after.map((match) => match.id)).toEqual(['b', 'a']);
    expect(after[0]!.score).toBeCloseTo(bm25(1, 2, 3, 2, 2), 12);
  });

  it('answers filtered queries like the unfiltered ranking filtered, whether the filter passes few or most', async () => {
    const index = createMemoryKeywordIndex();
    const words = ['wolf', 'river', 'stone', 'moss', 'bend', 'lantern', 'harbour'];
    // Deterministic variety: each document mixes a few words, repeated differently, so scores spread and tie.
    const documents = Array.from({ length: 120 }, (_, at) => {
      const text = words.filter((_, w) => (at * (w + 3)) % (w + 2) !== 0 || w === at % words.length).join(' ');
      const base = doc(`d-${String(at).padStart(3, '0')}`, `${text} ${words[at % 5]}`);
      return { ...base, metadata: { ...base.metadata, sceneIndex: at } };
    });
    await index.upsert('s1', documents);
    const everything = await index.query('s1', { text: 'wolf lantern harbour', topK: 1_000 });
    for (const topK of [1, 7, 29]) {
      expect(await index.query('s1', { text: 'wolf lantern harbour', topK })).toEqual(everything.slice(0, topK));
    }
    for (const horizon of [3, 20, 60, 115, 200]) {
      for (const topK of [1, 5, 30]) {
        const filtered = await index.query('s1', {
          text: 'wolf lantern harbour',
          topK,
          filter: { sceneIndex: { $lt: horizon } },
        });
        const expected = everything.filter((match) => match.metadata.sceneIndex! < horizon).slice(0, topK);
        expect(filtered, `horizon ${horizon}, topK ${topK}`).toEqual(expected);
      }
    }
  });

  it('after any sequence of upserts and deletes, ranks exactly as an index built from what is left', async () => {
    const words = ['wolf', 'river', 'stone', 'moss', 'bend', 'lantern'];
    const operation = fc.oneof(
      fc.record({
        kind: fc.constant('upsert' as const),
        id: fc.integer({ min: 0, max: 12 }),
        text: fc.array(fc.constantFrom(...words), { minLength: 1, maxLength: 6 }).map((list) => list.join(' ')),
      }),
      fc.record({ kind: fc.constant('delete' as const), id: fc.integer({ min: 0, max: 12 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(operation, { maxLength: 60 }), async (operations) => {
        const index = createMemoryKeywordIndex();
        const model = new Map<string, string>();
        for (const op of operations) {
          const id = `d-${String(op.id).padStart(2, '0')}`;
          if (op.kind === 'upsert') {
            await index.upsert('s1', [doc(id, op.text)]);
            model.set(id, op.text);
          } else {
            expect(await index.delete('s1', { ids: [id] })).toBe(model.delete(id) ? 1 : 0);
          }
        }
        const rebuilt = createMemoryKeywordIndex();
        if (model.size > 0)
          await rebuilt.upsert(
            's1',
            [...model].map(([id, text]) => doc(id, text)),
          );
        for (const query of ['wolf', 'river moss', 'lantern bend stone wolf']) {
          const matches = await index.query('s1', { text: query, topK: 20 });
          const expected = await rebuilt.query('s1', { text: query, topK: 20 });
          expect(matches.map((match) => match.id)).toEqual(expected.map((match) => match.id));
          matches.forEach((match, at) => {
            expect(match.score).toBeCloseTo(expected[at]!.score, 12);
          });
        }
      }),
      { numRuns: 200 },
    );
  });

  describe('many matching documents, ranked by a sampled bound first', () => {
    // From 2,048 matching documents on, with topK at most a sixteenth of them, the index keeps only those at or
    // above a bound estimated from 256 evenly spaced ones; the ranking must be the full one's all the same.
    const size = 4_096;
    const idOf = (position: number) => `d${String(position).padStart(4, '0')}`;

    async function indexOf(text: (position: number) => string) {
      const index = createMemoryKeywordIndex();
      await index.upsert(
        's1',
        Array.from({ length: size }, (_, position) => doc(idOf(position), text(position))),
      );
      return index;
    }

    /** The k best of every match, as the heap over all of them ranks them (topK too large to sample). */
    async function fullRanking(index: Awaited<ReturnType<typeof indexOf>>, text: string, topK: number) {
      return (await index.query('s1', { text, topK: size })).slice(0, topK);
    }

    it('returns the full ranking, ties broken by id', async () => {
      // Few distinct term frequencies and lengths: long runs of equal scores straddle every cut.
      const index = await indexOf(
        (position) => `${'lantern '.repeat(1 + (position % 3))}${'harbor '.repeat(position % 5)}tide`,
      );
      for (const topK of [1, 40, 166, 256]) {
        expect(await index.query('s1', { text: 'lantern harbor', topK })).toEqual(
          await fullRanking(index, 'lantern harbor', topK),
        );
      }
    });

    it('falls back to ranking every match when the sample puts the bound too high', async () => {
      // A one-term query walks the documents in the order stored: the sampled ones (every 16th) say the term most,
      // each a different number of times, so only the few best of the sample reach the bound.
      const index = await indexOf((position) =>
        position % 16 === 0 ? 'lantern '.repeat(3 + position / 16) : 'lantern tide',
      );
      const matches = await index.query('s1', { text: 'lantern', topK: 200 });
      expect(matches).toHaveLength(200);
      expect(matches).toEqual(await fullRanking(index, 'lantern', 200));
    });
  });

  it('weighs a term asked twice twice', async () => {
    const index = createMemoryKeywordIndex();
    await index.upsert('s1', [doc('a', 'wolf'), doc('b', 'moon'), doc('c', 'river')]);
    const [once] = await index.query('s1', { text: 'wolf', topK: 1 });
    const [twice] = await index.query('s1', { text: 'wolf WOLF', topK: 1 });
    expect(twice!.score).toBeCloseTo(2 * once!.score, 12);
  });

  it('keeps the last of two documents with the same id in one batch', async () => {
    const index = createMemoryKeywordIndex();
    await index.upsert('s1', [doc('a', 'wolf'), doc('a', 'moon')]);
    expect(await index.count('s1')).toBe(1);
    expect(await index.query('s1', { text: 'wolf', topK: 1 })).toEqual([]);
    expect((await index.query('s1', { text: 'moon', topK: 1 })).map((match) => match.id)).toEqual(['a']);
  });

  it('says which document was wrong and why', async () => {
    const index = createMemoryKeywordIndex();
    const bad = { ...doc('bad', 'text'), metadata: { ...doc('bad', 'text').metadata, type: 'poem' } };
    const error = await index
      .upsert('s1', [doc('good', 'text'), bad as KeywordDocument])
      .catch((caught: unknown) => caught);
    expect(ValidationError.isInstance(error)).toBe(true);
    expect((error as ValidationError).problems[0]?.path).toBe('documents.1 (id "bad").metadata.type');
    expect(await index.count('s1')).toBe(0);
  });

  it('validates its options', () => {
    expect(() => createMemoryKeywordIndex({ k1: -1 })).toThrow(ValidationError);
    expect(() => createMemoryKeywordIndex({ b: 1.5 })).toThrow(ValidationError);
    expect(() => createMemoryKeywordIndex({ k1: Number.NaN })).toThrow(ValidationError);
  });

  it('refuses an empty deletion filter, which would drop the whole story', async () => {
    const index = createMemoryKeywordIndex();
    await index.upsert('s1', [doc('a', 'wolf')]);
    await expect(index.delete('s1', { filter: {} })).rejects.toThrow(/deleteStory/);
    expect(await index.count('s1')).toBe(1);
  });

  it('refuses every call once closed', async () => {
    const index = createMemoryKeywordIndex();
    await index.close();
    const error = await index.count('s1').catch((caught: unknown) => caught);
    expect(StoryloomError.isInstance(error) && error.code).toBe('CLOSED');
  });
});
