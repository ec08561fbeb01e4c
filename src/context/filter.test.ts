import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../core/errors.js';
import { type MetadataFilter, matchesFilter, validateFilter } from './filter.js';

const scene = {
  storyId: 's1',
  type: 'scene',
  timestamp: 5_000,
  themes: ['loss'],
  characters: ['mira', 'oren'],
  locations: [],
  importance: 0.6,
  sourceId: 'scene-1',
  chunk: 0,
  text: '',
};

describe('matchesFilter', () => {
  it('matches everything without a filter or with an empty one', () => {
    expect(matchesFilter(scene, undefined)).toBe(true);
    expect(matchesFilter(scene, {})).toBe(true);
  });

  it.each<[string, MetadataFilter, boolean]>([
    ['bare value on a scalar', { type: 'scene' }, true],
    ['bare value that differs', { type: 'character' }, false],
    ['bare value on an array: any element', { characters: 'oren' }, true],
    ['bare value absent from the array', { characters: 'kell' }, false],
    ['$in on an array: any element in the set', { characters: { $in: ['kell', 'mira'] } }, true],
    ['$in with an empty set', { type: { $in: [] } }, false],
    ['$nin with an empty set', { type: { $nin: [] } }, true],
    ['$ne on an array: no element may equal', { characters: { $ne: 'mira' } }, false],
    ['$nin on an array: no element may be in the set', { characters: { $nin: ['kell', 'oren'] } }, false],
    ['$nin on an array that holds none of the set', { characters: { $nin: ['kell'] } }, true],
    ['$ne on an empty array holds', { locations: { $ne: 'harbor' } }, true],
    ['a positive condition on an empty array fails', { locations: 'harbor' }, false],
    ['$ne with a positive condition on an array', { characters: { $ne: 'kell', $eq: 'oren' } }, true],
    ['a range on a number', { importance: { $gt: 0.5, $lte: 0.6 } }, true],
    ['an empty range', { importance: { $gt: 0.6, $lt: 0.6 } }, false],
    ['a range on a string field never holds', { type: { $gt: 0 } }, false],
    ['numbers and strings never compare equal', { timestamp: '5000' as unknown as number }, false],
    ['several fields: every one must hold', { type: 'scene', importance: { $lt: 0.5 } }, false],
    ['$and of holding parts', { $and: [{ type: 'scene' }, { characters: 'mira' }] }, true],
    ['$and with one failing part', { $and: [{ type: 'scene' }, { characters: 'kell' }] }, false],
    ['$or with one holding part', { $or: [{ type: 'summary' }, { themes: 'loss' }] }, true],
    ['$or with no holding part', { $or: [{ type: 'summary' }, { themes: 'hope' }] }, false],
    ['nested $or inside $and', { $and: [{ $or: [{ type: 'summary' }, { chunk: 0 }] }, { timestamp: 5_000 }] }, true],
    ['a missing field fails a positive condition', { sceneIndex: { $gte: 0 } }, false],
    ['a missing field fails a bare value', { chapterId: 'chapter-0001' }, false],
    ['a missing field satisfies $ne', { chapterId: { $ne: 'chapter-0001' } }, true],
    ['a missing field satisfies $nin', { sceneIndex: { $nin: [1, 2] } }, true],
    ['a missing field fails $ne combined with a positive condition', { sceneIndex: { $ne: 1, $lt: 9 } }, false],
  ])('%s', (_label, filter, expected) => {
    validateFilter(filter);
    expect(matchesFilter(scene, filter)).toBe(expected);
  });

  it('skips fields whose condition is undefined, as built by optional parameters', () => {
    const type: string | undefined = undefined;
    expect(matchesFilter(scene, { type, importance: { $gte: 0.5 } } as MetadataFilter)).toBe(true);
  });

  it('follows boolean logic: $and is every, $or is some, and $nin is the negation of $in on scalars', () => {
    const value = fc.constantFrom('scene', 'character', 'summary');
    const leaf = fc.oneof(
      value.map((type): MetadataFilter => ({ type })),
      fc.double({ min: 0, max: 1, noNaN: true }).map((bound): MetadataFilter => ({ importance: { $gt: bound } })),
      fc.array(value, { maxLength: 3 }).map((set): MetadataFilter => ({ type: { $in: set } })),
    );
    const metadata = fc.record({
      type: value,
      importance: fc.double({ min: 0, max: 1, noNaN: true }),
    });
    fc.assert(
      fc.property(metadata, fc.array(leaf, { minLength: 1, maxLength: 4 }), (record, parts) => {
        const each = parts.map((part) => matchesFilter(record, part));
        expect(matchesFilter(record, { $and: parts })).toBe(each.every(Boolean));
        expect(matchesFilter(record, { $or: parts })).toBe(each.some(Boolean));
      }),
    );
    fc.assert(
      fc.property(metadata, fc.array(value, { maxLength: 3 }), (record, set) => {
        expect(matchesFilter(record, { type: { $nin: set } })).toBe(!matchesFilter(record, { type: { $in: set } }));
      }),
    );
  });
});

describe('validateFilter', () => {
  it('accepts every operator on every filterable field', () => {
    const filter: MetadataFilter = {
      type: { $eq: 'scene', $ne: 'summary', $in: ['scene'], $nin: ['character'] },
      importance: { $gt: 0, $gte: 0, $lt: 1, $lte: 1 },
      characters: 'mira',
      locations: { $in: ['harbor'] },
      themes: { $nin: ['hope'] },
      timestamp: { $gte: 0 },
      sourceId: 'scene-1',
      sceneIndex: 3,
      chapterId: { $ne: 'chapter-0002' },
      chunk: { $lte: 2 },
      $and: [{ type: 'scene' }],
      $or: [{ type: 'summary' }, { importance: 1 }],
    };
    expect(() => validateFilter(filter)).not.toThrow();
  });

  it.each<[string, unknown, string]>([
    ['not an object', 'scene', 'filter'],
    ['an array', [{ type: 'scene' }], 'filter'],
    ['null', null, 'filter'],
    ['an unknown field', { mood: 'grim' }, 'filter.mood'],
    ['a field that is not filterable', { text: 'x' }, 'filter.text'],
    ['storyId, which the partition already decides', { storyId: 's1' }, 'filter.storyId'],
    ['an unknown operator', { importance: { $between: [0, 1] } }, 'filter.importance.$between'],
    ['an array as a bare value', { characters: ['mira'] }, 'filter.characters'],
    ['null as a value', { type: null }, 'filter.type'],
    ['NaN as a value', { importance: Number.NaN }, 'filter.importance'],
    ['$in that is not an array', { type: { $in: 'scene' } }, 'filter.type.$in'],
    ['$in holding an object', { type: { $in: [{}] } }, 'filter.type.$in'],
    ['$eq holding an array', { type: { $eq: ['scene'] } }, 'filter.type.$eq'],
    ['a range on a string', { timestamp: { $gt: '2020' } }, 'filter.timestamp.$gt'],
    ['a range on Infinity', { timestamp: { $lt: Number.POSITIVE_INFINITY } }, 'filter.timestamp.$lt'],
    ['$and that is not an array', { $and: { type: 'scene' } }, 'filter.$and'],
    ['a bad filter nested in $or', { $or: [{ type: 'scene' }, { colour: 'red' }] }, 'filter.$or.1.colour'],
    ['an operator at the top level', { $not: { type: 'scene' } }, 'filter.$not'],
  ])('rejects %s, naming where', (_label, filter, path) => {
    let caught: unknown;
    try {
      validateFilter(filter);
    } catch (error) {
      caught = error;
    }
    expect(ValidationError.isInstance(caught)).toBe(true);
    expect((caught as ValidationError).problems[0]?.path).toBe(path);
    expect((caught as ValidationError).message).toContain(path);
  });

  it('uses the path it is given, so callers can say which argument was wrong', () => {
    expect(() => validateFilter({ mood: 'grim' }, 'query.filter')).toThrow(/query\.filter\.mood/);
  });

  it('accepts an undefined condition the way matchesFilter ignores it', () => {
    expect(() => validateFilter({ type: undefined, importance: { $gte: 0.2 } })).not.toThrow();
  });

  it('rejects empty $and / $or, which would silently match everything or nothing', () => {
    expect(() => validateFilter({ $and: [] })).toThrow(/non-empty/);
    expect(() => validateFilter({ $or: [] })).toThrow(/non-empty/);
  });

  it('bounds nesting depth so a hostile filter cannot recurse without limit', () => {
    let deep: Record<string, unknown> = { type: 'scene' };
    for (let i = 0; i < 20; i++) deep = { $and: [deep] };
    expect(() => validateFilter(deep)).toThrow(/nest at most/);
  });
});

describe('matchesFilter on array fields', () => {
  const meta = { characters: ['a', 'b'] };
  it('checks each operator on its own: different elements may satisfy different operators', () => {
    expect(matchesFilter(meta, { characters: { $in: ['a'], $eq: 'b' } })).toBe(true);
    expect(matchesFilter(meta, { characters: { $in: ['a'], $ne: 'b' } })).toBe(false);
    expect(matchesFilter(meta, { characters: { $nin: ['c'], $eq: 'a' } })).toBe(true);
  });
});
