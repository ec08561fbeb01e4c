/**
 * The metadata filter language shared by `VectorIndex` and `KeywordIndex`: a small subset of the MongoDB-style
 * operators that Pinecone accepts, so a filter means the same on every backend.
 *
 * @module
 */
import { ValidationError } from '../core/errors.js';

/** Fields of `VectorMetadata` that a filter may name. */
export const FILTERABLE_FIELDS = [
  'type',
  'characters',
  'locations',
  'themes',
  'importance',
  'timestamp',
  'sourceId',
  'sceneIndex',
  'chapterId',
  'chunk',
] as const;
export type FilterableField = (typeof FILTERABLE_FIELDS)[number];

/** A value a filter can compare with. */
export type Scalar = string | number | boolean;

/** Conditions on one field. On array fields (`characters`, `locations`, `themes`) a condition holds when any element matches. */
export interface FieldCondition {
  $eq?: Scalar;
  $ne?: Scalar;
  $in?: Scalar[];
  $nin?: Scalar[];
  $gt?: number;
  $gte?: number;
  $lt?: number;
  $lte?: number;
}

/**
 * A metadata filter: field conditions (a bare value means `$eq`), combined with `$and` / `$or`.
 *
 * @example
 * ```ts
 * import type { MetadataFilter } from 'storyloom';
 * const filter: MetadataFilter = { type: 'scene', characters: { $in: ['mira'] }, importance: { $gte: 0.5 } };
 * ```
 */
export type MetadataFilter = {
  [K in FilterableField]?: Scalar | FieldCondition;
} & {
  $and?: MetadataFilter[];
  $or?: MetadataFilter[];
};

/** How deep `$and` / `$or` may nest, and how many branches each may hold. */
const MAX_FILTER_DEPTH = 8;
const MAX_FILTER_BRANCHES = 100;
/** How many values an `$in` or `$nin` list may hold. */
export const MAX_FILTER_VALUES = 1_000;

const OPERATORS = new Set(['$eq', '$ne', '$in', '$nin', '$gt', '$gte', '$lt', '$lte']);
const FIELDS = new Set<string>(FILTERABLE_FIELDS);

/**
 * Checks a filter's shape: known fields, known operators, values of the right kind.
 * Throws `ValidationError` naming the first problem.
 */
export function validateFilter(filter: unknown, path = 'filter', depth = 0): asserts filter is MetadataFilter {
  if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) {
    throw new ValidationError(`${path} must be an object`, { problems: [{ path, message: 'must be an object' }] });
  }
  if (depth > MAX_FILTER_DEPTH) fail(path, `filters nest at most ${MAX_FILTER_DEPTH} levels deep`);
  for (const [key, value] of Object.entries(filter)) {
    const at = `${path}.${key}`;
    // An absent optional parameter (`{ type: options.type }`) means "no condition", as in matchesFilter.
    if (value === undefined) continue;
    if (key === '$and' || key === '$or') {
      if (!Array.isArray(value) || value.length === 0) fail(at, 'must be a non-empty array of filters');
      if (value.length > MAX_FILTER_BRANCHES) fail(at, `must hold at most ${MAX_FILTER_BRANCHES} filters`);
      value.forEach((part: unknown, index: number) => {
        validateFilter(part, `${at}.${index}`, depth + 1);
      });
      continue;
    }
    if (!FIELDS.has(key)) fail(at, `unknown field "${key}"; filterable fields are ${FILTERABLE_FIELDS.join(', ')}`);
    if (isScalar(value)) continue;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      fail(at, 'must be a string, number, boolean or an operator object');
    }
    for (const [operator, operand] of Object.entries(value)) {
      const opAt = `${at}.${operator}`;
      if (!OPERATORS.has(operator)) fail(opAt, `unknown operator "${operator}"`);
      if (operator === '$in' || operator === '$nin') {
        if (!Array.isArray(operand) || !operand.every(isScalar)) fail(opAt, 'must be an array of scalars');
        if (operand.length > MAX_FILTER_VALUES) fail(opAt, `must hold at most ${MAX_FILTER_VALUES} values`);
      } else if (operator === '$eq' || operator === '$ne') {
        if (!isScalar(operand)) fail(opAt, 'must be a string, number or boolean');
      } else if (typeof operand !== 'number' || !Number.isFinite(operand)) {
        fail(opAt, 'must be a finite number');
      }
    }
  }
}

function fail(path: string, message: string): never {
  throw new ValidationError(`Invalid metadata filter at ${path}: ${message}`, { problems: [{ path, message }] });
}

function isScalar(value: unknown): value is Scalar {
  return (
    typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))
  );
}

function conditionHolds(actual: unknown, condition: Scalar | FieldCondition): boolean {
  if (Array.isArray(actual)) {
    const cond: FieldCondition = isScalar(condition) ? { $eq: condition } : condition;
    // On array fields each operator is checked on its own, as Pinecone does: positive ones need some element to
    // match, negative ones need no element to match.
    for (const [operator, operand] of Object.entries(cond)) {
      if (operand === undefined) continue;
      if (operator === '$ne') {
        if (actual.includes(operand)) return false;
      } else if (operator === '$nin') {
        if (actual.some((item) => (operand as Scalar[]).includes(item as Scalar))) return false;
      } else if (!actual.some((item) => conditionHolds(item, { [operator]: operand }))) {
        return false;
      }
    }
    return true;
  }
  if (isScalar(condition)) return actual === condition;
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

/**
 * Whether a valid filter holds for every record: it names no condition (only `undefined` values, or operator objects
 * with no operator, such as `{ type: {} }`), its `$and` parts all hold for every record, or one of its `$or`
 * branches does. `{ chapterId: options.chapter }` with no chapter is such a filter, and so is `{ $and: [{}] }`.
 */
export function matchesEverything(filter: MetadataFilter): boolean {
  for (const [key, value] of Object.entries(filter)) {
    if (value === undefined) continue;
    if (key === '$and') {
      if (!(value as MetadataFilter[]).every(matchesEverything)) return false;
    } else if (key === '$or') {
      if (!(value as MetadataFilter[]).some(matchesEverything)) return false;
    } else if (!isEmptyCondition(value as Scalar | FieldCondition)) return false;
  }
  return true;
}

/**
 * Whether a field's condition names no operator: `{}` (or operators left `undefined`, which `validateFilter` refuses).
 * It holds for every record, the field present or missing, so an adapter must not send it as a condition: Pinecone
 * refuses the empty `$and` it would become.
 */
function isEmptyCondition(condition: Scalar | FieldCondition | undefined): boolean {
  if (condition === undefined) return true;
  if (isScalar(condition)) return false;
  return Object.values(condition).every((operand) => operand === undefined);
}

/** Whether `metadata` satisfies `filter`. A missing field satisfies only negative conditions. */
export function matchesFilter(
  metadata: Readonly<Record<string, unknown>>,
  filter: MetadataFilter | undefined,
): boolean {
  if (!filter) return true;
  for (const [key, value] of Object.entries(filter)) {
    if (value === undefined) continue;
    if (key === '$and') {
      if (!(value as MetadataFilter[]).every((part) => matchesFilter(metadata, part))) return false;
    } else if (key === '$or') {
      if (!(value as MetadataFilter[]).some((part) => matchesFilter(metadata, part))) return false;
    } else {
      const actual = metadata[key];
      if (actual === undefined) {
        const cond = value as FieldCondition;
        const onlyNegative =
          !isScalar(value) &&
          Object.entries(cond).every(([op, operand]) => operand === undefined || op === '$ne' || op === '$nin');
        if (!onlyNegative) return false;
        continue;
      }
      if (!conditionHolds(actual, value as Scalar | FieldCondition)) return false;
    }
  }
  return true;
}
