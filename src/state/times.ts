/**
 * Times as storyloom writes them: in UTC, with a four-digit year. Internal: not exported from the package.
 *
 * @module
 */

/**
 * `time` in UTC, so that every backend orders the influence queue the same way; undefined when that leaves years
 * 0000-9999. A time near year 0 or 9999 can leave them once moved to UTC, and `toISOString` then writes a signed
 * six-digit year ("+010000-…") that sorts before every other time and that the schema (and so `importStory`) refuses.
 */
export function inUtc(time: string): string | undefined {
  const utc = new Date(time).toISOString();
  return /^\d{4}-/.test(utc) ? utc : undefined;
}

/**
 * The times of a scene or state (`createdAt`, and a state's `updatedAt`; or those of `fields`) that leave years
 * 0000-9999 once moved to UTC, as problems under `path`: the site would write them with a signed six-digit year, which
 * is not RFC 3339 and sorts before every other time. The schema accepts them, so a story already stored with one stays
 * readable; they are refused where they are written (a story's creation and import; a commit's scene and the state's
 * `updatedAt`, not the `createdAt` it carries over), as an influence's time is, and where the publishers write them.
 */
export function timeProblems(
  record: { createdAt: string; updatedAt?: string },
  path: string,
  fields: ReadonlyArray<'createdAt' | 'updatedAt'> = ['createdAt', 'updatedAt'],
): Array<{ path: string; message: string }> {
  return fields.flatMap((field) => {
    const time = record[field];
    return time !== undefined && inUtc(time) === undefined
      ? [{ path: `${path}.${field}`, message: `${time} is outside years 0000-9999 in UTC` }]
      : [];
  });
}
