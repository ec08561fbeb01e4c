/**
 * Argument checks shared by every vector and keyword index adapter, so they reject bad input with the same
 * `ValidationError`s, paths and messages.
 *
 * @module
 */
import { throwIfAborted, toProblems, ValidationError, type ValidationProblem } from '../core/errors.js';
import { IdSchema, LIMITS, type VectorMetadata, VectorMetadataSchema } from '../state/schema.js';
import { type MetadataFilter, matchesEverything, validateFilter } from './filter.js';

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
 * Checks a keyword query (`{ text, topK, filter?, signal? }`) the way every keyword index does: an object, not
 * aborted, text of at most `LIMITS.sceneText` characters, `topK` from 1 to `maxTopK`, a valid filter.
 */
export function checkKeywordQuery(query: unknown, maxTopK: number): void {
  if (typeof query !== 'object' || query === null)
    throw invalidArgument('query', 'must be an object with text and topK');
  const { text, topK, filter, signal } = query as {
    text?: unknown;
    topK?: unknown;
    filter?: unknown;
    signal?: AbortSignal;
  };
  throwIfAborted(signal);
  if (typeof text !== 'string' || text.length > LIMITS.sceneText) {
    throw invalidArgument('query.text', `must be a string of at most ${LIMITS.sceneText} characters`);
  }
  checkTopK(topK, maxTopK);
  if (filter !== undefined) validateFilter(filter, 'query.filter');
}

/**
 * Checks a deletion: `{ ids }` or a `{ filter }` that names a condition. A filter without one (`{}`, a field set to
 * `undefined`, `{ $and: [{}] }`) would match every record, so dropping a whole story must go through `deleteStory`,
 * never through a typo or an option left unset.
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
    if (matchesEverything(deletion.filter)) {
      throw invalidArgument(
        'deletion.filter',
        'must name at least one condition; use deleteStory to drop a whole story',
      );
    }
    return { filter: deletion.filter };
  }
  throw invalidArgument('deletion', 'must be { ids } or { filter }');
}

/**
 * A copy of metadata whose arrays the caller may change without touching the index. Field by field rather than a
 * spread (speed, bench:context): every copy then has one of four hidden classes, which keeps the filter predicates'
 * property reads monomorphic, and a query copies a couple of hundred of these. Parsed metadata holds no other keys
 * (the schema strips them).
 */
export function copyMetadata(metadata: VectorMetadata): VectorMetadata {
  const copy: VectorMetadata = {
    storyId: metadata.storyId,
    type: metadata.type,
    timestamp: metadata.timestamp,
    themes: metadata.themes.slice(),
    characters: metadata.characters.slice(),
    locations: metadata.locations.slice(),
    importance: metadata.importance,
    sourceId: metadata.sourceId,
    chunk: metadata.chunk,
    text: metadata.text,
  };
  if (metadata.sceneIndex !== undefined) copy.sceneIndex = metadata.sceneIndex;
  if (metadata.chapterId !== undefined) copy.chapterId = metadata.chapterId;
  return copy;
}

/** Checks a vector and returns its squared length; a problem goes to `problems` under `path`, and 0 is returned. */
export function inspectVector(
  values: unknown,
  dimensions: number,
  path: string,
  problems: ValidationProblem[],
): number {
  if (!(values instanceof Float32Array)) {
    problems.push({ path, message: 'must be a Float32Array' });
    return 0;
  }
  if (values.length !== dimensions) {
    problems.push({ path, message: `has ${values.length} dimensions; this index holds ${dimensions}` });
    return 0;
  }
  let squared = 0;
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!;
    if (!Number.isFinite(value)) {
      problems.push({ path: `${path}.${i}`, message: `must be a finite number, got ${value}` });
      return 0;
    }
    squared += value * value;
  }
  if (squared === 0) problems.push({ path, message: 'is the zero vector, which has no direction to compare' });
  return squared;
}

/** Throws unless `vector` can be searched with; returns its squared length. */
export function checkQueryVector(vector: unknown, dimensions: number): number {
  const problems: ValidationProblem[] = [];
  const squared = inspectVector(vector, dimensions, 'query.vector', problems);
  if (problems.length > 0) {
    throw new ValidationError(`Invalid query vector: ${describeProblems(problems)}`, { problems });
  }
  return squared;
}

/** A keyword document's text: a string within the scene text limit. */
export function inspectDocumentText(item: Record<string, unknown>, at: string, problems: ValidationProblem[]): void {
  if (typeof item.text !== 'string' || item.text.length > LIMITS.sceneText) {
    problems.push({ path: `${at}.text`, message: `must be a string of at most ${LIMITS.sceneText} characters` });
  }
}

/** An item of an upsert batch that passed the shared checks. */
export interface CheckedItem {
  id: string;
  /** The item as given, for the fields the adapter checked itself. */
  item: Record<string, unknown>;
  /** Where problems of this item are reported: its position and its id. */
  at: string;
  metadata: VectorMetadata;
}

/**
 * Checks a whole upsert batch before anything is written: each item's id, its body (`inspectBody`: the vector or the
 * text) and its metadata, which must belong to `storyId`. Every problem of every item is collected under a path
 * that names both the position and the id, so a failed batch of a thousand points at its culprits, and any problem
 * refuses the whole batch. `build` turns each clean item into what the adapter stores; it may report more problems.
 */
export function checkUpsertBatch<Body, Prepared>(
  storyId: string,
  items: unknown,
  spec: {
    label: 'records' | 'documents';
    /** What an item holds, for the message about a non-object: `id, values and metadata`. */
    fields: string;
    inspectBody: (item: Record<string, unknown>, at: string, problems: ValidationProblem[]) => Body;
    build: (checked: CheckedItem, body: Body, problems: ValidationProblem[]) => Prepared | undefined;
  },
): Prepared[] {
  const { label } = spec;
  if (!Array.isArray(items)) throw invalidArgument(label, `must be an array of ${label}`);
  const noun = label === 'records' ? 'record' : 'document';
  const problems: ValidationProblem[] = [];
  const prepared: Prepared[] = [];
  items.forEach((candidate: unknown, index: number) => {
    const before = problems.length;
    if (typeof candidate !== 'object' || candidate === null) {
      problems.push({ path: `${label}.${index}`, message: `must be an object with ${spec.fields}` });
      return;
    }
    const item = candidate as Record<string, unknown>;
    const { id } = item;
    const at = typeof id === 'string' ? `${label}.${index} (id ${JSON.stringify(id)})` : `${label}.${index}`;
    const idResult = IdSchema.safeParse(id);
    if (!idResult.success) problems.push(...toProblems(idResult.error.issues, `${at}.id`));
    const body = spec.inspectBody(item, at, problems);
    const metadataResult = VectorMetadataSchema.safeParse(item.metadata);
    if (!metadataResult.success) {
      problems.push(...toProblems(metadataResult.error.issues, `${at}.metadata`));
    } else if (metadataResult.data.storyId !== storyId) {
      problems.push({
        path: `${at}.metadata.storyId`,
        message: `is ${JSON.stringify(metadataResult.data.storyId)} but the ${noun} is upserted into story ${JSON.stringify(storyId)}`,
      });
    }
    if (problems.length > before || !metadataResult.success) return;
    const built = spec.build({ id: id as string, item, at, metadata: metadataResult.data }, body, problems);
    if (built !== undefined) prepared.push(built);
  });
  if (problems.length > 0) {
    throw new ValidationError(
      `Nothing was upserted into story ${JSON.stringify(storyId)}: ${describeProblems(problems)}`,
      { problems },
    );
  }
  return prepared;
}
