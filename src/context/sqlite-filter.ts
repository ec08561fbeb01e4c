/**
 * Translates the port's metadata filter language (see `filter.ts`) into a SQL condition over the metadata columns
 * that the SQLite vector and keyword indexes share, with the exact semantics of `matchesFilter`: array fields match
 * when any element matches a positive condition and no element matches a negative one; a missing optional field
 * (`sceneIndex`, `chapterId`) satisfies only negative conditions; a number never equals a string.
 *
 * @module
 */
import type { FieldCondition, FilterableField, MetadataFilter, Scalar } from './filter.js';

/** A SQL condition and the values bound to its `?` placeholders, in order. */
export interface SqlCondition {
  sql: string;
  params: Array<string | number>;
}

const ARRAY_COLUMNS: Readonly<Partial<Record<FilterableField, string>>> = {
  characters: 'characters',
  locations: 'locations',
  themes: 'themes',
};

const SCALAR_COLUMNS: Readonly<Partial<Record<FilterableField, string>>> = {
  type: 'type',
  importance: 'importance',
  timestamp: 'timestamp',
  sourceId: 'source_id',
  sceneIndex: 'scene_index',
  chapterId: 'chapter_id',
  chunk: 'chunk',
};

const COMPARISONS: Readonly<Record<string, string>> = { $gt: '>', $gte: '>=', $lt: '<', $lte: '<=' };

const TRUE = '1';
const FALSE = '0';

/**
 * The metadata columns of a record, as the translation expects them: scalars as they are (no affinity, so no
 * conversion), arrays as JSON text, absent optional fields as NULL.
 */
export function metadataColumns(metadata: {
  type: string;
  importance: number;
  timestamp: number;
  sourceId: string;
  sceneIndex?: number | undefined;
  chapterId?: string | undefined;
  chunk: number;
  characters: string[];
  locations: string[];
  themes: string[];
}): Array<string | number | null> {
  return [
    metadata.type,
    metadata.importance,
    metadata.timestamp,
    metadata.sourceId,
    metadata.sceneIndex ?? null,
    metadata.chapterId ?? null,
    metadata.chunk,
    JSON.stringify(metadata.characters),
    JSON.stringify(metadata.locations),
    JSON.stringify(metadata.themes),
  ];
}

/** Column names in the order of `metadataColumns`. */
export const METADATA_COLUMN_NAMES =
  'type, importance, timestamp, source_id, scene_index, chapter_id, chunk, characters, locations, themes';

/**
 * The SQL condition of an already validated filter (`validateFilter`), over columns qualified by `alias`.
 * An absent or empty filter is `1`.
 */
export function filterToSql(filter: MetadataFilter | undefined, alias: string): SqlCondition {
  const params: Array<string | number> = [];
  const sql = filter === undefined ? TRUE : translate(filter, alias, params);
  return { sql, params };
}

function translate(filter: MetadataFilter, alias: string, params: Array<string | number>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(filter)) {
    if (value === undefined) continue;
    if (key === '$and' || key === '$or') {
      const branches = (value as MetadataFilter[]).map((part) => `(${translate(part, alias, params)})`);
      parts.push(branches.join(key === '$and' ? ' AND ' : ' OR '));
      continue;
    }
    const arrayColumn = ARRAY_COLUMNS[key as FilterableField];
    if (arrayColumn !== undefined) {
      parts.push(arrayCondition(`${alias}.${arrayColumn}`, value as Scalar | FieldCondition, params));
      continue;
    }
    const column = `${alias}.${SCALAR_COLUMNS[key as FilterableField]!}`;
    // Same rule as matchesFilter: an absent field passes only conditions made of $ne / $nin.
    const onlyNegative =
      !isScalar(value) && Object.keys(value as object).every((operator) => operator === '$ne' || operator === '$nin');
    const present = scalarCondition(column, value as Scalar | FieldCondition, params);
    parts.push(`((${column} IS NULL AND ${onlyNegative ? TRUE : FALSE}) OR (${column} IS NOT NULL AND ${present}))`);
  }
  return parts.length === 0 ? TRUE : parts.map((part) => `(${part})`).join(' AND ');
}

function isScalar(value: unknown): value is Scalar {
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean';
}

/** SQLite binds no booleans, and no stored metadata value is one: an equality with a boolean never holds. */
function bindable(values: readonly Scalar[]): Array<string | number> {
  return values.filter((value): value is string | number => typeof value !== 'boolean');
}

/**
 * `expression IN list`, the list bound as one JSON array: one placeholder per value would pass SQLite's limit on
 * variables with a few long lists (40 lists of 1,000 values do), and one statement shape serves every length.
 * `json_each` gives back each value with its type (text stays text, so `1` never equals `'1'`) and no affinity, so
 * the comparison is the same as with bound values: JavaScript prints a number as the shortest digits that read back
 * as the same double. The one exception, an integer beyond 2^53 (printed as padded digits, which SQLite reads as an
 * exact 64-bit integer), can equal no stored value either way: metadata numbers are safe integers or fractions.
 */
function inList(expression: string, values: readonly Scalar[], params: Array<string | number>): string {
  const kept = bindable(values);
  if (kept.length === 0) return FALSE;
  params.push(JSON.stringify(kept));
  return `${expression} IN (SELECT value FROM json_each(?))`;
}

function equals(expression: string, value: Scalar, params: Array<string | number>): string {
  if (typeof value === 'boolean') return FALSE;
  params.push(value);
  return `${expression} = ?`;
}

function numericComparison(expression: string, operator: string, operand: number, params: Array<string | number>) {
  params.push(operand);
  // Without the type test SQLite would call any text greater than any number.
  return `(typeof(${expression}) IN ('integer', 'real') AND ${expression} ${COMPARISONS[operator]} ?)`;
}

/** A condition on a present scalar column. */
function scalarCondition(column: string, condition: Scalar | FieldCondition, params: Array<string | number>): string {
  if (isScalar(condition)) return equals(column, condition, params);
  const parts: string[] = [];
  for (const [operator, operand] of Object.entries(condition)) {
    if (operand === undefined) continue;
    if (operator === '$eq') parts.push(equals(column, operand as Scalar, params));
    else if (operator === '$ne') parts.push(`NOT (${equals(column, operand as Scalar, params)})`);
    else if (operator === '$in') parts.push(inList(column, operand as Scalar[], params));
    else if (operator === '$nin') parts.push(`NOT (${inList(column, operand as Scalar[], params)})`);
    else parts.push(numericComparison(column, operator, operand as number, params));
  }
  return parts.length === 0 ? TRUE : parts.join(' AND ');
}

/** A condition on a JSON array column: each operator on its own, positive ones on some element, negative on none. */
function arrayCondition(column: string, condition: Scalar | FieldCondition, params: Array<string | number>): string {
  const cond: FieldCondition = isScalar(condition) ? { $eq: condition } : condition;
  const some = (test: (element: string) => string) =>
    `EXISTS (SELECT 1 FROM json_each(${column}) AS element WHERE ${test('element.value')})`;
  const parts: string[] = [];
  for (const [operator, operand] of Object.entries(cond)) {
    if (operand === undefined) continue;
    if (operator === '$eq') parts.push(some((element) => equals(element, operand as Scalar, params)));
    else if (operator === '$ne') parts.push(`NOT ${some((element) => equals(element, operand as Scalar, params))}`);
    else if (operator === '$in') parts.push(some((element) => inList(element, operand as Scalar[], params)));
    else if (operator === '$nin') parts.push(`NOT ${some((element) => inList(element, operand as Scalar[], params))}`);
    else parts.push(some((element) => numericComparison(element, operator, operand as number, params)));
  }
  return parts.length === 0 ? TRUE : parts.join(' AND ');
}
