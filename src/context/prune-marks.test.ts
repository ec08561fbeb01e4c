import { describe, expect, it } from 'vitest';
import {
  coveredPruneRecords,
  finishedFor,
  finishedMarks,
  finishedRecordText,
  mergePruneMarks,
  PRUNED_ID,
  type PruneMark,
  pruneRecordId,
} from './prune-marks.js';

describe('mergePruneMarks', () => {
  it('past the cap forgets the lowest bounds, and keeps those of the latest, furthest-reaching prunes', () => {
    // 25 prunes, each reaching further with a lower importance: none covers another.
    const marks: PruneMark[] = Array.from({ length: 25 }, (_, i) => ({
      before: 4 * (i + 1),
      maxImportance: 0.9 - i / 50,
    }));
    const merged = mergePruneMarks(marks);
    expect(merged).toHaveLength(20);
    expect(merged).toEqual(marks.slice(5));
  });
});

describe('coveredPruneRecords', () => {
  it('deletes only a record another record covers, never the one that covers it', () => {
    const wide = { before: 8, maxImportance: 0.5 };
    const narrow = { before: 4, maxImportance: 0.3 };
    const apart = { before: 2, maxImportance: 0.9 };
    const records = [wide, narrow, apart].map((mark) => ({ id: pruneRecordId(mark), marks: [mark] }));
    // The legacy record of every mark is neither deleted nor counted on.
    records.push({ id: PRUNED_ID, marks: [wide, narrow, apart] });
    expect(coveredPruneRecords(records)).toEqual([pruneRecordId(narrow)]);
  });
});

describe('the done record', () => {
  const since = 'fingerprint-1@5';
  const record = (text: string) => ({ metadata: { text } });

  it('gives its marks only under the fingerprint record it was written under', () => {
    const marks = [{ before: 40, maxImportance: 0.4 }];
    const text = finishedRecordText(since, marks);
    expect(finishedMarks(record(text), since)).toEqual(marks);
    expect(finishedMarks(record(text), 'fingerprint-2@9'), 'after a rebuild').toEqual([]);
    expect(finishedMarks(record(text), undefined), 'without a fingerprint').toEqual([]);
    expect(finishedMarks(undefined, since)).toEqual([]);
  });

  it('gives no mark that is not one, whatever the record holds', () => {
    const hostile = [
      'not json',
      'null',
      '"text"',
      '12',
      '[]',
      JSON.stringify({ since, marks: 'all' }),
      JSON.stringify({ since, marks: [{ before: '40', maxImportance: 0.4 }] }),
      JSON.stringify({ since, marks: [{ before: 40, maxImportance: 2 }] }),
      `{"since":"${since}","marks":[{"before":1e999,"maxImportance":0.4}]}`,
      JSON.stringify({ since, marks: [null, 7] }),
    ];
    for (const text of hostile) expect(finishedMarks(record(text), since), text).toEqual([]);
  });

  it('covers a chapter ending before a finished bound, at the same or a lower importance', () => {
    const marks = [{ before: 40, maxImportance: 0.4 }];
    expect(finishedFor(marks, 39, 0.4)).toBe(true);
    expect(finishedFor(marks, 39, 0.3)).toBe(true);
    expect(finishedFor(marks, 40, 0.4), 'the chapter ends at the bound').toBe(false);
    expect(finishedFor(marks, 10, 0.5), 'a higher importance').toBe(false);
    expect(finishedFor([], 0, 0)).toBe(false);
  });
});
