import { describe, expect, it } from 'vitest';
import { coveredPruneRecords, mergePruneMarks, PRUNED_ID, type PruneMark, pruneRecordId } from './prune-marks.js';

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
