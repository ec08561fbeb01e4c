/**
 * The wire form of `SceneOutputSchema` for Claude's structured output (`output_config.format`, or a strict tool).
 *
 * Claude's constrained decoding accepts a subset of JSON Schema: every object closed (`additionalProperties: false`),
 * no open records, no arbitrary JSON values, no numeric or length bounds. The domain schema uses all of those, so the
 * model is given a lossless *wire* shape instead and its reply is decoded back before zod validates it:
 *
 * - a record (`traits: { courage: 0.7 }`) becomes an array of `{ key, value }` entries;
 * - an arbitrary JSON value (a world-state value) becomes a string holding that value's JSON;
 * - bounds, patterns and defaults move into the field's `description`, where the model still reads them, and zod
 *   remains the authority that enforces them.
 *
 * Fields with a default are required in the wire form (the model writes `[]` rather than omitting them), which keeps
 * the schema under the API's cap on optional parameters.
 *
 * @module
 */
import { z } from 'zod';
import { SceneOutputSchema } from './scene-generator.js';

type JsonSchema = Record<string, unknown>;

/** Where the wire form differs from the domain form: a record path (`*` marks array items) and its value kind. */
interface RecordLocation {
  path: readonly string[];
  /** `entries`: a record sent as entries; `json-entries`: the same with JSON-text values; `json`: one JSON-text value. */
  kind: 'entries' | 'json-entries' | 'json';
}

/** The keywords constrained decoding understands; everything else is moved into the description. */
const KEPT_KEYWORDS = new Set(['type', 'properties', 'required', 'items', 'enum', 'const', 'anyOf', 'description']);
const SUPPORTED_STRING_FORMATS = new Set(['date-time', 'time', 'date', 'duration', 'email', 'hostname', 'uri', 'uuid']);

function isSchemaObject(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isOpenRecord(schema: JsonSchema): boolean {
  return schema.type === 'object' && isSchemaObject(schema.additionalProperties) && schema.properties === undefined;
}

function isUntypedValue(schema: JsonSchema): boolean {
  return (
    schema.type === undefined && schema.anyOf === undefined && schema.enum === undefined && schema.const === undefined
  );
}

function withNotes(target: JsonSchema, notes: Record<string, unknown>): JsonSchema {
  const entries = Object.entries(notes);
  if (entries.length === 0) return target;
  const constraint = `{${entries.map(([key, value]) => `${key}: ${JSON.stringify(value)}`).join(', ')}}`;
  const description = typeof target.description === 'string' ? `${target.description}\n\n${constraint}` : constraint;
  return { ...target, description };
}

function convert(schema: JsonSchema, path: string[], records: RecordLocation[]): JsonSchema {
  if (isOpenRecord(schema)) {
    const valueSchema = schema.additionalProperties as JsonSchema;
    const jsonValues = isUntypedValue(valueSchema);
    records.push({ path, kind: jsonValues ? 'json-entries' : 'entries' });
    const value = jsonValues
      ? { type: 'string', description: 'The value as JSON text, e.g. "\\"autumn\\"", "3" or "{\\"open\\":true}".' }
      : convert(valueSchema, [...path, '*', 'value'], records);
    const keyNotes: Record<string, unknown> = {};
    if (isSchemaObject(schema.propertyNames)) {
      for (const [keyword, bound] of Object.entries(schema.propertyNames))
        if (keyword !== 'type') keyNotes[keyword] = bound;
    }
    return withNotes(
      {
        type: 'array',
        description: 'Entries of a map, one per key; keys are unique.',
        items: {
          type: 'object',
          properties: { key: withNotes({ type: 'string' }, keyNotes), value },
          required: ['key', 'value'],
          additionalProperties: false,
        },
      },
      schema.default !== undefined ? { default: [] } : {},
    );
  }
  if (isUntypedValue(schema)) {
    records.push({ path, kind: 'json' });
    return { type: 'string', description: 'A JSON value written as JSON text.' };
  }
  const result: JsonSchema = {};
  const notes: Record<string, unknown> = {};
  for (const [keyword, value] of Object.entries(schema)) {
    if (keyword === '$schema' || keyword === 'additionalProperties' || keyword === 'title') continue;
    if (keyword === 'properties' && isSchemaObject(value)) {
      result.properties = Object.fromEntries(
        Object.entries(value).map(([name, child]) => [name, convert(child as JsonSchema, [...path, name], records)]),
      );
    } else if (keyword === 'items' && isSchemaObject(value)) {
      result.items = convert(value, [...path, '*'], records);
    } else if (keyword === 'anyOf' && Array.isArray(value)) {
      result.anyOf = value.map((variant) => convert(variant as JsonSchema, path, records));
    } else if (keyword === 'format' && typeof value === 'string' && SUPPORTED_STRING_FORMATS.has(value)) {
      result.format = value;
    } else if (keyword === 'minItems' && (value === 0 || value === 1)) {
      result.minItems = value;
    } else if (KEPT_KEYWORDS.has(keyword)) {
      result[keyword] = value;
    } else {
      notes[keyword] = value;
    }
  }
  if (result.type === 'object') {
    result.properties ??= {};
    result.additionalProperties = false;
  }
  return withNotes(result, notes);
}

/** The wire schema and how to decode replies written against it. */
export interface ClaudeOutputFormat {
  /** JSON Schema accepted by `output_config.format` (type `json_schema`) and by strict tools. */
  schema: JsonSchema;
  /** Turns a reply written in the wire form back into the domain form; other shapes pass through untouched. */
  decode(value: unknown): unknown;
}

let cached: ClaudeOutputFormat | undefined;

/**
 * The structured-output form of `SceneOutputSchema` and its decoder. Built once, then shared.
 *
 * @example
 * ```ts
 * import { sceneOutputFormat } from 'storyloom/anthropic';
 * const { schema } = sceneOutputFormat();
 * const params = { output_config: { format: { type: 'json_schema', schema } } };
 * ```
 */
export function sceneOutputFormat(): ClaudeOutputFormat {
  if (cached) return cached;
  const records: RecordLocation[] = [];
  const domain = z.toJSONSchema(SceneOutputSchema, { io: 'output', unrepresentable: 'any' }) as JsonSchema;
  const schema = convert(domain, [], records);
  // Deepest first, so a record nested inside another record's values is decoded before its parent.
  records.sort((a, b) => b.path.length - a.path.length);
  cached = { schema, decode: (value) => decodeRecords(value, records) };
  return cached;
}

function decodeRecords(value: unknown, records: readonly RecordLocation[]): unknown {
  let root = value;
  for (const record of records) root = rewriteAt(root, record.path, 0, record.kind);
  return root;
}

function rewriteAt(node: unknown, path: readonly string[], depth: number, kind: RecordLocation['kind']): unknown {
  if (depth === path.length)
    return kind === 'json' ? decodeJsonText(node) : decodeEntries(node, kind === 'json-entries');
  const segment = path[depth]!;
  if (segment === '*') {
    if (!Array.isArray(node)) return node;
    return node.map((item) => rewriteAt(item, path, depth + 1, kind));
  }
  if (!isSchemaObject(node) || !Object.hasOwn(node, segment)) return node;
  const copy: Record<string, unknown> = { ...node };
  Object.defineProperty(copy, segment, {
    value: rewriteAt(node[segment], path, depth + 1, kind),
    enumerable: true,
    writable: true,
    configurable: true,
  });
  return copy;
}

function decodeJsonText(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch {
    // A bare word is what a model most often writes for a string value: keep it as that string.
    return value;
  }
}

/** Entries back into a record. Anything else (a reply already in the domain form) is left for zod to judge. */
function decodeEntries(node: unknown, jsonValues: boolean): unknown {
  if (!Array.isArray(node)) return node;
  const isEntryList = node.every((entry) => isSchemaObject(entry) && typeof entry.key === 'string' && 'value' in entry);
  if (!isEntryList) return node;
  const result: Record<string, unknown> = {};
  for (const entry of node as Array<{ key: string; value: unknown }>) {
    // defineProperty keeps a hostile `__proto__` key as inert data, for the reducer to refuse (UNSAFE_KEY).
    Object.defineProperty(result, entry.key, {
      value: jsonValues ? decodeJsonText(entry.value) : entry.value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return result;
}
