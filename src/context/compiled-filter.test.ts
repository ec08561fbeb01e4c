import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileFilter } from './compiled-filter.js';
import { type MetadataFilter, matchesFilter, validateFilter } from './filter.js';

// Small value domains, so that conditions hit and miss about equally often.
const word = fc.constantFrom('a', 'b', 'c');
const number = fc.integer({ min: 0, max: 4 });
const scalar = fc.oneof(word, number, fc.boolean());

const metadata = fc.record(
  {
    type: fc.constantFrom('scene', 'character'),
    characters: fc.array(word, { maxLength: 3 }),
    themes: fc.array(word, { maxLength: 2 }),
    sceneIndex: number,
    importance: fc.constantFrom(0, 0.5, 1),
    chapterId: word,
  },
  { requiredKeys: [] },
);

const operator = fc.oneof(
  fc.record({ $eq: scalar }),
  fc.record({ $ne: scalar }),
  fc.record({ $in: fc.array(scalar, { maxLength: 3 }) }),
  fc.record({ $nin: fc.array(scalar, { maxLength: 3 }) }),
  fc.record({ $gt: number }),
  fc.record({ $gte: number }),
  fc.record({ $lt: number }),
  fc.record({ $lte: number }),
);
// A bare value, one operator, or two (most real filters); more operators mostly make every record fail.
const condition = fc.oneof(
  scalar,
  operator,
  fc.tuple(operator, operator).map(([first, second]) => ({ ...first, ...second })),
);

const field = fc.constantFrom('type', 'characters', 'themes', 'sceneIndex', 'importance', 'chapterId');

// Nesting is capped below `validateFilter`'s limit of 8 levels: deeper filters are invalid input, refused by the
// validator (its own tests cover that), not filters whose matching could disagree.
const filter: fc.Arbitrary<MetadataFilter> = fc.letrec<{ filter: MetadataFilter }>((tie) => ({
  filter: fc.oneof(
    { depthSize: 'small', withCrossShrink: true, maxDepth: 6 },
    fc.dictionary(field, condition, { maxKeys: 3 }) as fc.Arbitrary<MetadataFilter>,
    fc.record({ $and: fc.array(tie('filter'), { minLength: 1, maxLength: 3 }) }),
    fc.record({ $or: fc.array(tie('filter'), { minLength: 1, maxLength: 3 }) }),
    fc
      .tuple(fc.dictionary(field, condition, { maxKeys: 2 }), fc.array(tie('filter'), { minLength: 1, maxLength: 2 }))
      .map(([fields, branches]) => ({ ...fields, $or: branches }) as MetadataFilter),
  ),
})).filter;

describe('compileFilter', () => {
  it('agrees with matchesFilter on every filter and record', () => {
    fc.assert(
      fc.property(filter, fc.array(metadata, { minLength: 1, maxLength: 8 }), (candidate, records) => {
        validateFilter(candidate);
        const compiled = compileFilter(candidate);
        for (const record of records) expect(compiled(record)).toBe(matchesFilter(record, candidate));
      }),
      { numRuns: 2_000 },
    );
  });

  it('treats a missing field as satisfying only negative conditions', () => {
    expect(compileFilter({ chapterId: { $ne: 'a' } })({})).toBe(true);
    expect(compileFilter({ chapterId: { $nin: ['a'] } })({})).toBe(true);
    expect(compileFilter({ chapterId: 'a' })({})).toBe(false);
    expect(compileFilter({ chapterId: { $ne: 'a', $eq: 'b' } })({})).toBe(false);
    expect(compileFilter(undefined)({})).toBe(true);
  });
});
