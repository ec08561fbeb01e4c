/**
 * Argument checks shared by every vector and keyword index adapter, so they reject bad input with the same
 * `ValidationError`s, paths and messages.
 *
 * @module
 */
import { toProblems, ValidationError, type ValidationProblem } from '../core/errors.js';
import { IdSchema, type VectorMetadata } from '../state/schema.js';
import { type MetadataFilter, validateFilter } from './filter.js';

/** The first problem with its path, and how many more there are. */
export function describeProblems(problems: readonly ValidationProblem[]): string {
  const first = problems[0];
  if (!first) return 'invalid input';
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  return `${first.path}: ${first.message}${more}`;
}

/** A `ValidationError` for one argument at `path`. */
export function invalidArgument(path: string, message: string): ValidationError {
  return new ValidationError(`${path}: ${message}`, { problems: [{ path, message }] });
}

/** Throws unless `storyId` is a valid id. */
export function checkStoryId(storyId: unknown): asserts storyId is string {
  const result = IdSchema.safeParse(storyId);
  if (!result.success) {
    const problems = toProblems(result.error.issues, 'storyId');
    throw new ValidationError(`Invalid story id ${JSON.stringify(storyId)}: ${describeProblems(problems)}`, {
      problems,
    });
  }
}

/** Throws unless `ids` is an array of strings. */
export function checkIdList(ids: unknown, path: string): asserts ids is string[] {
  if (!Array.isArray(ids)) throw invalidArgument(path, 'must be an array of ids');
  ids.forEach((id, index) => {
    if (typeof id !== 'string') throw invalidArgument(`${path}.${index}`, 'must be a string');
  });
}

/** Throws unless `topK` is an integer from 1 to `max`. */
export function checkTopK(topK: unknown, max: number): void {
  if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1 || topK > max) {
    throw invalidArgument('query.topK', `must be an integer from 1 to ${max}, got ${String(topK)}`);
  }
}

/**
 * Checks a deletion: `{ ids }` or a non-empty `{ filter }`. An empty filter would match every record, so dropping
 * a whole story must go through `deleteStory`, never through a typo.
 */
export function checkDeletion(deletion: unknown): { ids: string[] } | { filter: MetadataFilter } {
  if (typeof deletion !== 'object' || deletion === null) {
    throw invalidArgument('deletion', 'must be { ids } or { filter }');
  }
  if ('ids' in deletion) {
    checkIdList(deletion.ids, 'deletion.ids');
    return { ids: deletion.ids };
  }
  if ('filter' in deletion) {
    validateFilter(deletion.filter, 'deletion.filter');
    if (Object.values(deletion.filter).every((value) => value === undefined)) {
      throw invalidArgument(
        'deletion.filter',
        'must name at least one condition; use deleteStory to drop a whole story',
      );
    }
    return { filter: deletion.filter };
  }
  throw invalidArgument('deletion', 'must be { ids } or { filter }');
}

/** A copy of metadata whose arrays the caller may change without touching the index. */
export function copyMetadata(metadata: VectorMetadata): VectorMetadata {
  return {
    ...metadata,
    themes: [...metadata.themes],
    characters: [...metadata.characters],
    locations: [...metadata.locations],
  };
}
