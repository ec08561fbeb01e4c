/**
 * Metadata filters compiled once into a predicate, for the in-memory indexes that test one filter against thousands
 * of records per query. Same meaning as `matchesFilter`, checked against it by a property test.
 *
 * @module
 */
import type { FieldCondition, MetadataFilter, Scalar } from './filter.js';

/** A compiled filter: whether a record's metadata satisfies it. */
export type MetadataPredicate = (metadata: Readonly<Record<string, unknown>>) => boolean;

const always: MetadataPredicate = () => true;

/**
 * Compiles a (validated) filter into a predicate with the semantics of `matchesFilter(metadata, filter)`. The
 * filter's structure is walked once here instead of on every record, which makes a test about fifty times cheaper.
 *
 * @example
 * ```ts
 * const isRecentScene = compileFilter({ type: 'scene', sceneIndex: { $lt: 100 } });
 * isRecentScene({ type: 'scene', sceneIndex: 7 }); // true
 * ```
 */
export function compileFilter(filter: MetadataFilter | undefined): MetadataPredicate {
  if (!filter) return always;
  const parts: MetadataPredicate[] = [];
  for (const [key, value] of Object.entries(filter)) {
    if (value === undefined) continue;
    if (key === '$and') {
      parts.push(allOf((value as MetadataFilter[]).map(compileFilter)));
    } else if (key === '$or') {
      const branches = (value as MetadataFilter[]).map(compileFilter);
      parts.push((metadata) => {
        for (const branch of branches) if (branch(metadata)) return true;
        return false;
      });
    } else {
      parts.push(compileField(key, value as Scalar | FieldCondition));
    }
  }
  return allOf(parts);
}

function allOf(parts: readonly MetadataPredicate[]): MetadataPredicate {
  if (parts.length === 0) return always;
  if (parts.length === 1) return parts[0]!;
  if (parts.length === 2) {
    const [first, second] = parts as [MetadataPredicate, MetadataPredicate];
    return (metadata) => first(metadata) && second(metadata);
  }
  return (metadata) => {
    for (const part of parts) if (!part(metadata)) return false;
    return true;
  };
}

function isScalar(value: unknown): value is Scalar {
  return (
    typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))
  );
}

/**
 * One reader per known metadata field (speed, bench:context). The field predicates below are closures of one
 * function literal, so they share their inline caches: `metadata[key]` with a different key in each would go
 * megamorphic and cost a generic lookup per record. A named read in a function of its own stays monomorphic.
 */
const FIELD_READERS: Readonly<Record<string, (metadata: Readonly<Record<string, unknown>>) => unknown>> = {
  storyId: (metadata) => metadata.storyId,
  type: (metadata) => metadata.type,
  timestamp: (metadata) => metadata.timestamp,
  themes: (metadata) => metadata.themes,
  characters: (metadata) => metadata.characters,
  locations: (metadata) => metadata.locations,
  importance: (metadata) => metadata.importance,
  sourceId: (metadata) => metadata.sourceId,
  sceneIndex: (metadata) => metadata.sceneIndex,
  chapterId: (metadata) => metadata.chapterId,
  chunk: (metadata) => metadata.chunk,
  text: (metadata) => metadata.text,
};

function readerOf(key: string): (metadata: Readonly<Record<string, unknown>>) => unknown {
  return Object.hasOwn(FIELD_READERS, key) ? FIELD_READERS[key]! : (metadata) => metadata[key];
}

function compileField(key: string, value: Scalar | FieldCondition): MetadataPredicate {
  const read = readerOf(key);
  const scalar = isScalar(value);
  // A missing field satisfies only negative conditions (as in matchesFilter, an operator object whose keys are all
  // $ne / $nin, whatever their values).
  const missing = !scalar && Object.keys(value).every((operator) => operator === '$ne' || operator === '$nin');
  const arrayCondition = compileArrayCondition(scalar ? { $eq: value } : value);
  if (scalar) {
    return (metadata) => {
      const actual = read(metadata);
      if (actual === undefined) return false;
      if (Array.isArray(actual)) return arrayCondition(actual);
      return actual === value;
    };
  }
  const condition = value;
  const single = singleScalarCheck(condition);
  if (single) {
    return (metadata) => {
      const actual = read(metadata);
      if (actual === undefined) return missing;
      if (Array.isArray(actual)) return arrayCondition(actual);
      return single(actual);
    };
  }
  return (metadata) => {
    const actual = read(metadata);
    if (actual === undefined) return missing;
    if (Array.isArray(actual)) return arrayCondition(actual);
    return scalarHolds(actual, condition);
  };
}

/** On array fields each operator is checked on its own: positive ones need some element to match, negative ones none. */
function compileArrayCondition(condition: FieldCondition): (actual: readonly unknown[]) => boolean {
  const checks: Array<(actual: readonly unknown[]) => boolean> = [];
  for (const [operator, operand] of Object.entries(condition)) {
    if (operand === undefined) continue;
    if (operator === '$ne') {
      checks.push((actual) => !actual.includes(operand));
    } else if (operator === '$nin') {
      const excluded = operand as Scalar[];
      checks.push((actual) => !actual.some((item) => excluded.includes(item as Scalar)));
    } else {
      const single: FieldCondition = { [operator]: operand };
      // Compiled once, not interpreted per element (speed: a character filter tests every scene's cast).
      const holds = singleScalarCheck(single) ?? ((item: unknown) => scalarHolds(item, single));
      checks.push((actual) => {
        for (let at = 0; at < actual.length; at++) if (holds(actual[at])) return true;
        return false;
      });
    }
  }
  if (checks.length === 1) return checks[0]!;
  return (actual) => {
    for (const check of checks) if (!check(actual)) return false;
    return true;
  };
}

/** A direct check for the common one-operator conditions (`{ $lt: n }`, `{ $in: [...] }`, ...) on a non-array value. */
function singleScalarCheck(condition: FieldCondition): ((actual: unknown) => boolean) | undefined {
  const defined = Object.entries(condition).filter(([, operand]) => operand !== undefined);
  if (defined.length !== 1) return undefined;
  const [operator, operand] = defined[0]!;
  switch (operator) {
    case '$eq':
      return (actual) => actual === operand;
    case '$ne':
      return (actual) => actual !== operand;
    case '$in': {
      const allowed = operand as Scalar[];
      return (actual) => allowed.includes(actual as Scalar);
    }
    case '$nin': {
      const excluded = operand as Scalar[];
      return (actual) => !excluded.includes(actual as Scalar);
    }
    case '$gt':
      return (actual) => typeof actual === 'number' && actual > (operand as number);
    case '$gte':
      return (actual) => typeof actual === 'number' && actual >= (operand as number);
    case '$lt':
      return (actual) => typeof actual === 'number' && actual < (operand as number);
    case '$lte':
      return (actual) => typeof actual === 'number' && actual <= (operand as number);
    default:
      return undefined;
  }
}

/** `conditionHolds` of `filter.ts` for a non-array value and an operator object. */
function scalarHolds(actual: unknown, condition: FieldCondition): boolean {
  if (Array.isArray(actual)) return compileArrayCondition(condition)(actual);
  if (condition.$eq !== undefined && actual !== condition.$eq) return false;
  if (condition.$ne !== undefined && actual === condition.$ne) return false;
  if (condition.$in !== undefined && !condition.$in.includes(actual as Scalar)) return false;
  if (condition.$nin?.includes(actual as Scalar)) return false;
  const numeric = typeof actual === 'number';
  if (condition.$gt !== undefined && !(numeric && actual > condition.$gt)) return false;
  if (condition.$gte !== undefined && !(numeric && actual >= condition.$gte)) return false;
  if (condition.$lt !== undefined && !(numeric && actual < condition.$lt)) return false;
  if (condition.$lte !== undefined && !(numeric && actual <= condition.$lte)) return false;
  return true;
}
