/**
 * Prune marks: the bounds each `prune` records so that what it dropped stays dropped through later rebuilds, in this
 * process and in others. Kept apart from `ContextManager` because these rules decide which memories a story may lose
 * for good, across concurrent prunes and rolling deploys, and are easier to check when read on their own. Internal:
 * not exported from the package.
 *
 * @module
 */

/**
 * The single meta record in which earlier versions kept every prune mark (read, merged and written whole by each
 * prune). A prune now writes its mark to a record of its own (`pruneRecordId`), which is what this version relies on;
 * it still writes this one too, merged as before, for processes of an earlier version during a rolling deploy (they
 * read only this one), and reads it with the others. Two prunes at once may lose a mark here, never in their own
 * records; compaction neither deletes it nor counts on it.
 */
export const PRUNED_ID = 'meta-pruned';

/** Most prune marks kept (see `mergePruneMarks`). */
const MAX_PRUNE_MARKS = 20;

/**
 * What one `prune` dropped: the scene memories (below `maxImportance`) of the summarised chapters whose last scene
 * comes before scene index `before`. An absolute bound, so a later `reindex` drops exactly these and nothing that
 * has aged since.
 */
export interface PruneMark {
  before: number;
  maxImportance: number;
}

/** Whether `mark` is a prune mark: numbers (not strings or objects that would compare as numbers), in range. */
function isPruneMark(mark: Partial<PruneMark> | null): mark is PruneMark {
  const importance = mark?.maxImportance;
  return Number.isFinite(mark?.before) && Number.isFinite(importance) && importance! >= 0 && importance! <= 1;
}

/** Whether `other` covers `mark`: a prune by `other` drops everything a prune by `mark` drops. */
function covers(other: PruneMark, mark: PruneMark): boolean {
  return other.before >= mark.before && other.maxImportance >= mark.maxImportance;
}

/**
 * `marks`, leaving out any mark another one covers (a larger-or-equal bound and importance), in order of bound. Only
 * well-formed marks take part: one that is not would otherwise cover, and so erase, the bounds of earlier prunes.
 */
export function mergePruneMarks(marks: readonly PruneMark[]): PruneMark[] {
  const all = marks.filter(isPruneMark);
  const kept = all.filter(
    (candidate, index) =>
      !all.some(
        (other, otherIndex) =>
          otherIndex !== index &&
          other.before >= candidate.before &&
          other.maxImportance >= candidate.maxImportance &&
          (other.before > candidate.before || other.maxImportance > candidate.maxImportance || otherIndex > index),
      ),
  );
  kept.sort((a, b) => a.before - b.before || a.maxImportance - b.maxImportance);
  // Past the cap (many prunes with ever lower importances), the marks with the lowest bounds are forgotten: a
  // reindex then keeps a few memories that prune dropped, and never drops one that prune kept.
  return kept.slice(Math.max(0, kept.length - MAX_PRUNE_MARKS));
}

/** The marks of a prune record: none without one, or when it does not parse (a rebuild then keeps more). */
export function marksOf(record: { metadata: { text?: string } } | undefined): PruneMark[] {
  try {
    const parsed: unknown = JSON.parse(record?.metadata.text || '[]');
    return Array.isArray(parsed) ? parsed.filter(isPruneMark) : [];
  } catch {
    return [];
  }
}

/**
 * The id of the prune record of `mark`: derived from the mark alone, so two prunes at once write two records (or, of
 * the same mark, the same one) instead of one reading, merging and overwriting what the other wrote.
 */
export function pruneRecordId(mark: PruneMark): string {
  return `meta-pruned-${mark.before}-${mark.maxImportance}`;
}

/**
 * The prune records that `records` (a listing of them) lets a prune delete: those of one mark that another record of
 * one mark covers (the legacy record is neither deleted nor counted on: a write there may have lost a mark). Never one
 * whose mark no other covers, so concurrent compactions cannot lose a bound: a record of one mark is deleted only for
 * another with a different, covering mark, so whatever one deletes, a record covering it stays.
 */
export function coveredPruneRecords(records: readonly { id: string; marks: readonly PruneMark[] }[]): string[] {
  const own = records.filter((record) => record.id !== PRUNED_ID && record.marks.length === 1);
  return own
    .filter((record) => own.some((other) => other.id !== record.id && covers(other.marks[0]!, record.marks[0]!)))
    .map((record) => record.id);
}

/** Whether a scene memory of a chapter whose last scene is `lastIndex`, of `importance`, was pruned by `marks`. */
export function prunedBy(marks: readonly PruneMark[], lastIndex: number, importance: number): boolean {
  return marks.some((mark) => lastIndex < mark.before && importance < mark.maxImportance);
}

/**
 * The meta record of the prunes that finished: which marks' deletions were all carried out, and under which
 * fingerprint record (`since`, see `rebuildOf`). A prune record is written before its deletions, so it cannot tell a
 * finished prune from one cut short; this one is written after them. With it, a prune in a new process (a daily
 * Lambda, at every chapter close with `autoPrune`) passes over the chapters an earlier one finished, instead of
 * querying and deleting in every old chapter again. Read, merged and written whole: two prunes at once may lose each
 * other's entry, which only makes a later prune visit those chapters again.
 */
export const PRUNE_DONE_ID = 'meta-prune-done';
/** Its `sourceId`: not the prune records' own, so their listing never reads it as one. */
export const PRUNE_DONE_SOURCE = 'prune-done';

/**
 * The finished marks a done record holds, if it was written under the fingerprint record `since`; none otherwise (a
 * rebuild since may have written back what those prunes deleted), without a fingerprint, or when it does not parse.
 */
export function finishedMarks(
  record: { metadata: { text?: string } } | undefined,
  since: string | undefined,
): PruneMark[] {
  if (since === undefined || !record?.metadata.text) return [];
  try {
    const parsed = JSON.parse(record.metadata.text) as { since?: unknown; marks?: unknown };
    if (parsed?.since !== since || !Array.isArray(parsed.marks)) return [];
    return mergePruneMarks(parsed.marks as PruneMark[]);
  } catch {
    return [];
  }
}

/** The text of a done record: `marks`, finished under the fingerprint record `since`. */
export function finishedRecordText(since: string, marks: readonly PruneMark[]): string {
  return JSON.stringify({ since, marks: mergePruneMarks(marks) });
}

/**
 * Whether a prune of the chapter ending at scene `lastIndex`, below `maxImportance`, has nothing left to do after the
 * finished `marks`: one of them reaches past the chapter with the same or a higher importance bound.
 */
export function finishedFor(marks: readonly PruneMark[], lastIndex: number, maxImportance: number): boolean {
  return marks.some((mark) => lastIndex < mark.before && mark.maxImportance >= maxImportance);
}
