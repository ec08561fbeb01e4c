/**
 * The SQLite `VectorIndex`: exact cosine search with sqlite-vec's `vec_distance_cosine`, in the same file as the
 * story's state. Records live in a regular table partitioned by (index name, story); metadata filters become SQL
 * on the metadata columns, so only the matching rows are scored.
 *
 * @module
 */
import { z } from 'zod';
import { ClosedError, throwIfAborted, toProblems, ValidationError, type ValidationProblem } from '../core/errors.js';
import { IdSchema, LIMITS, type VectorMetadata, VectorMetadataSchema, type VectorRecord } from '../state/schema.js';
import {
  ensureVectorExtension,
  type NativeDatabase,
  type NativeStatement,
  nativeOf,
  openSqliteDatabase,
  type SqliteDatabase,
  type SqliteDatabaseOptions,
  toStorageError,
} from '../state/sqlite-database.js';
import { type MetadataFilter, validateFilter } from './filter.js';
import { filterToSql, METADATA_COLUMN_NAMES, metadataColumns } from './sqlite-filter.js';
import type { VectorDeletion, VectorIndex, VectorIndexCapabilities, VectorMatch } from './vector-index.js';

/**
 * Options of `createSqliteVectorIndex`: `dimensions`, and a file (`path`) or an open `database`.
 *
 * @example
 * ```ts
 * import { createSqliteVectorIndex, type SqliteVectorIndexOptions } from 'storyloom/sqlite';
 * const options: SqliteVectorIndexOptions = { path: 'my-story.db', dimensions: 1536 };
 * const index = createSqliteVectorIndex(options);
 * ```
 */
export type SqliteVectorIndexOptions = {
  /** Length of every vector, 1..8192; the same setting as the embedder's. Fixed per index name in a file. */
  dimensions: number;
  /** Several indexes (of different dimensions, say) can share a file under different names. Default `default`. */
  name?: string;
} & (
  | ({ path: string; database?: undefined } & Omit<SqliteDatabaseOptions, 'path'>)
  | { database: SqliteDatabase; path?: undefined }
);

const OptionsSchema = z.object({
  dimensions: z.number().int().min(1).max(LIMITS.vectorDimensions),
  name: IdSchema.default('default'),
});

const MAX_TOP_K = 10_000;

const CAPABILITIES: VectorIndexCapabilities = Object.freeze({
  // Each upsert is one transaction; a large batch is simply a longer one.
  maxUpsertBatch: Number.MAX_SAFE_INTEGER,
  maxTopK: MAX_TOP_K,
  deleteByFilter: true,
  readAfterWrite: true,
  durable: true,
});

interface PreparedRecord {
  id: string;
  blob: Buffer;
  metadata: VectorMetadata;
}

/**
 * Creates a vector index in a SQLite file (better-sqlite3 + sqlite-vec).
 *
 * Search is exact: every record of the story that passes the filter is scored with `vec_distance_cosine` inside
 * SQLite and the best `topK` come back ordered by score, then id. Scores are cosine similarities computed in
 * float32 (within 1e-6 of the float64 values of the memory index). Upserts, deletes and `deleteStory` are each one
 * transaction. Pass `{ database }` to keep vectors in the same file as the state store.
 *
 * Throws `ValidationError` for bad options, or when the file already holds this index `name` with other
 * dimensions; `MissingDependencyError` when better-sqlite3 or sqlite-vec is not installed.
 *
 * @example
 * ```ts
 * import { createSqliteVectorIndex } from 'storyloom/sqlite';
 *
 * const index = createSqliteVectorIndex({ path: 'my-story.db', dimensions: 3 });
 * await index.upsert('story-1', [
 *   {
 *     id: 'scene-1',
 *     values: new Float32Array([0.1, 0.9, 0]),
 *     metadata: { storyId: 'story-1', type: 'scene', timestamp: Date.now(), sourceId: 'scene-1', characters: ['mira'] },
 *   },
 * ]);
 * const matches = await index.query('story-1', {
 *   vector: new Float32Array([0, 1, 0]),
 *   topK: 5,
 *   filter: { characters: 'mira' },
 * });
 * ```
 */
export function createSqliteVectorIndex(options: SqliteVectorIndexOptions): VectorIndex {
  const parsed = OptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    const problems = toProblems(parsed.error.issues, 'options');
    throw new ValidationError(`Invalid SQLite vector index options: ${describeProblems(problems)}`, { problems });
  }
  const { dimensions, name } = parsed.data;
  const ownsDatabase = options.database === undefined;
  const database = options.database ?? openSqliteDatabase(options as SqliteDatabaseOptions);
  try {
    ensureVectorExtension(database);
    registerIndex(nativeOf(database), name, dimensions, database.path);
  } catch (error) {
    if (ownsDatabase) database.close();
    throw error;
  }
  const db = nativeOf(database);
  const columns = METADATA_COLUMN_NAMES;
  const statements = {
    upsert: db.prepare(
      `INSERT INTO vectors (index_name, story_id, id, embedding, metadata, ${columns})
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (index_name, story_id, id) DO UPDATE SET embedding = excluded.embedding,
         metadata = excluded.metadata, type = excluded.type, importance = excluded.importance,
         timestamp = excluded.timestamp, source_id = excluded.source_id, scene_index = excluded.scene_index,
         chapter_id = excluded.chapter_id, chunk = excluded.chunk, characters = excluded.characters,
         locations = excluded.locations, themes = excluded.themes`,
    ),
    fetch: db.prepare('SELECT embedding, metadata FROM vectors WHERE index_name = ? AND story_id = ? AND id = ?'),
    deleteId: db.prepare('DELETE FROM vectors WHERE index_name = ? AND story_id = ? AND id = ?'),
    count: db.prepare('SELECT count(*) AS n FROM vectors WHERE index_name = ? AND story_id = ?'),
    deleteStory: db.prepare('DELETE FROM vectors WHERE index_name = ? AND story_id = ?'),
  };
  // Query statements depend on the filter's shape; the few shapes an application uses are prepared once each.
  const queryStatements = new Map<string, NativeStatement>();
  const deleteStatements = new Map<string, NativeStatement>();
  const cached = (cache: typeof queryStatements, sql: string) => {
    let statement = cache.get(sql);
    if (!statement) {
      if (cache.size > 256) cache.clear();
      statement = db.prepare<unknown[]>(sql);
      cache.set(sql, statement);
    }
    return statement;
  };

  let closed = false;
  const open = (operation: string): void => {
    if (closed || database.closed) throw new ClosedError(`Cannot ${operation}: the SQLite vector index is closed`);
  };
  const guard = <T>(body: () => T, operation: string): T => {
    try {
      return body();
    } catch (error) {
      throw toStorageError(error, database.path, `SQLite vector index ${operation} failed`);
    }
  };

  return {
    specificationVersion: 'v1',
    provider: 'sqlite',
    dimensions,
    capabilities: CAPABILITIES,

    async upsert(storyId, records, upsertOptions) {
      open('upsert');
      checkStoryId(storyId);
      throwIfAborted(upsertOptions?.signal);
      const prepared = prepareRecords(storyId, records, dimensions);
      if (prepared.length === 0) return;
      guard(
        () =>
          db.transaction(() => {
            for (const record of prepared) {
              statements.upsert.run(
                name,
                storyId,
                record.id,
                record.blob,
                JSON.stringify(record.metadata),
                ...metadataColumns(record.metadata),
              );
            }
          })(),
        'upsert',
      );
    },

    async query(storyId, query) {
      open('query');
      checkStoryId(storyId);
      if (typeof query !== 'object' || query === null) throw invalid('query', 'must be an object with vector and topK');
      throwIfAborted(query.signal);
      checkQueryVector(query.vector, dimensions);
      checkTopK(query.topK);
      if (query.filter !== undefined) validateFilter(query.filter, 'query.filter');
      const condition = filterToSql(query.filter, 'v');
      const includeValues = query.includeValues === true;
      const sql = `SELECT v.id, v.metadata, ${includeValues ? 'v.embedding' : 'NULL AS embedding'},
          vec_distance_cosine(v.embedding, ?) AS distance
        FROM vectors AS v
        WHERE v.index_name = ? AND v.story_id = ? AND ${condition.sql}
        ORDER BY distance, v.id LIMIT ?`;
      const rows = guard(
        () => cached(queryStatements, sql).all(toBlob(query.vector), name, storyId, ...condition.params, query.topK),
        'query',
      ) as Array<{ id: string; metadata: string; embedding: Buffer | null; distance: number }>;
      return rows.map((row): VectorMatch => {
        // Rounding can push |cosine| a hair past 1; the port promises [-1, 1].
        const match: VectorMatch = {
          id: row.id,
          score: Math.max(-1, Math.min(1, 1 - row.distance)),
          metadata: JSON.parse(row.metadata),
        };
        if (row.embedding) match.values = fromBlob(row.embedding);
        return match;
      });
    },

    async fetch(storyId, ids, fetchOptions) {
      open('fetch');
      checkStoryId(storyId);
      checkIdList(ids, 'ids');
      throwIfAborted(fetchOptions?.signal);
      const records: VectorRecord[] = [];
      guard(() => {
        for (const id of ids) {
          const row = statements.fetch.get(name, storyId, id) as { embedding: Buffer; metadata: string } | undefined;
          if (row) records.push({ id, values: fromBlob(row.embedding), metadata: JSON.parse(row.metadata) });
        }
      }, 'fetch');
      return records;
    },

    async delete(storyId, deletion, deleteOptions) {
      open('delete');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      const target = checkDeletion(deletion);
      return guard(() => {
        if ('ids' in target) {
          return db.transaction(() => {
            let deleted = 0;
            for (const id of new Set(target.ids)) deleted += statements.deleteId.run(name, storyId, id).changes;
            return deleted;
          })();
        }
        const condition = filterToSql(target.filter, 'v');
        const sql = `DELETE FROM vectors AS v WHERE v.index_name = ? AND v.story_id = ? AND ${condition.sql}`;
        return cached(deleteStatements, sql).run(name, storyId, ...condition.params).changes;
      }, 'delete');
    },

    async stats(storyId, statsOptions) {
      open('read stats');
      checkStoryId(storyId);
      throwIfAborted(statsOptions?.signal);
      const row = guard(() => statements.count.get(name, storyId), 'stats') as { n: number };
      return { count: row.n, dimensions };
    },

    async deleteStory(storyId) {
      open('delete a story');
      checkStoryId(storyId);
      guard(() => statements.deleteStory.run(name, storyId), 'deleteStory');
    },

    async close() {
      if (closed) return;
      closed = true;
      if (ownsDatabase) database.close();
    },
  };
}

/** Records the index's dimensions in the file, or checks them against what the file already says. */
function registerIndex(db: NativeDatabase, name: string, dimensions: number, path: string): void {
  db.transaction(() => {
    const row = db.prepare('SELECT dimensions FROM vector_indexes WHERE name = ?').get(name) as
      | { dimensions: number }
      | undefined;
    if (row === undefined) {
      db.prepare('INSERT INTO vector_indexes (name, dimensions) VALUES (?, ?)').run(name, dimensions);
    } else if (row.dimensions !== dimensions) {
      throw new ValidationError(
        `The vector index "${name}" in "${path}" holds ${row.dimensions}-dimension vectors, not ${dimensions}; open it with dimensions: ${row.dimensions} or use another name`,
        { problems: [{ path: 'options.dimensions', message: `must be ${row.dimensions} for the index "${name}"` }] },
      );
    }
  }).immediate();
}

function toBlob(values: Float32Array): Buffer {
  // A copy: the caller may reuse its buffer after upserting.
  return Buffer.from(Float32Array.from(values).buffer);
}

function fromBlob(blob: Buffer): Float32Array {
  // A fresh, aligned buffer: returned values are the caller's to mutate.
  const values = new Float32Array(blob.byteLength / 4);
  new Uint8Array(values.buffer).set(blob);
  return values;
}

function describeProblems(problems: readonly ValidationProblem[]): string {
  const first = problems[0];
  if (!first) return 'invalid input';
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  return `${first.path}: ${first.message}${more}`;
}

function invalid(path: string, message: string): ValidationError {
  return new ValidationError(`${path}: ${message}`, { problems: [{ path, message }] });
}

function checkStoryId(storyId: unknown): asserts storyId is string {
  const result = IdSchema.safeParse(storyId);
  if (!result.success) {
    const problems = toProblems(result.error.issues, 'storyId');
    throw new ValidationError(`Invalid story id ${JSON.stringify(storyId)}: ${describeProblems(problems)}`, {
      problems,
    });
  }
}

function checkIdList(ids: unknown, path: string): asserts ids is string[] {
  if (!Array.isArray(ids)) throw invalid(path, 'must be an array of ids');
  ids.forEach((id, index) => {
    if (typeof id !== 'string') throw invalid(`${path}.${index}`, 'must be a string');
  });
}

function checkTopK(topK: unknown): void {
  if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1 || topK > MAX_TOP_K) {
    throw invalid('query.topK', `must be an integer from 1 to ${MAX_TOP_K}, got ${String(topK)}`);
  }
}

function checkDeletion(deletion: unknown): VectorDeletion {
  if (typeof deletion !== 'object' || deletion === null) throw invalid('deletion', 'must be { ids } or { filter }');
  if ('ids' in deletion) {
    checkIdList(deletion.ids, 'deletion.ids');
    return { ids: deletion.ids };
  }
  if ('filter' in deletion) {
    validateFilter(deletion.filter, 'deletion.filter');
    if (Object.keys(deletion.filter as MetadataFilter).length === 0) {
      throw invalid('deletion.filter', 'must name at least one condition; use deleteStory to drop a whole story');
    }
    return { filter: deletion.filter as MetadataFilter };
  }
  throw invalid('deletion', 'must be { ids } or { filter }');
}

/** Checks a vector; problems go to `problems` under `path`. */
function inspectVector(values: unknown, dimensions: number, path: string, problems: ValidationProblem[]): void {
  if (!(values instanceof Float32Array)) {
    problems.push({ path, message: 'must be a Float32Array' });
    return;
  }
  if (values.length !== dimensions) {
    problems.push({ path, message: `has ${values.length} dimensions; this index holds ${dimensions}` });
    return;
  }
  let squared = 0;
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!;
    if (!Number.isFinite(value)) {
      problems.push({ path: `${path}.${i}`, message: `must be a finite number, got ${value}` });
      return;
    }
    squared += value * value;
  }
  if (squared === 0) problems.push({ path, message: 'is the zero vector, which has no direction to compare' });
}

function checkQueryVector(vector: unknown, dimensions: number): void {
  const problems: ValidationProblem[] = [];
  inspectVector(vector, dimensions, 'query.vector', problems);
  if (problems.length > 0)
    throw new ValidationError(`Invalid query vector: ${describeProblems(problems)}`, { problems });
}

function prepareRecords(storyId: string, records: unknown, dimensions: number): PreparedRecord[] {
  if (!Array.isArray(records)) throw invalid('records', 'must be an array of records');
  const problems: ValidationProblem[] = [];
  const prepared: PreparedRecord[] = [];
  records.forEach((record: unknown, index: number) => {
    const before = problems.length;
    if (typeof record !== 'object' || record === null) {
      problems.push({ path: `records.${index}`, message: 'must be an object with id, values and metadata' });
      return;
    }
    const { id, values, metadata } = record as Record<string, unknown>;
    const at = typeof id === 'string' ? `records.${index} (id ${JSON.stringify(id)})` : `records.${index}`;
    const idResult = IdSchema.safeParse(id);
    if (!idResult.success) problems.push(...toProblems(idResult.error.issues, `${at}.id`));
    inspectVector(values, dimensions, `${at}.values`, problems);
    const metadataResult = VectorMetadataSchema.safeParse(metadata);
    if (!metadataResult.success) {
      problems.push(...toProblems(metadataResult.error.issues, `${at}.metadata`));
    } else if (metadataResult.data.storyId !== storyId) {
      problems.push({
        path: `${at}.metadata.storyId`,
        message: `is ${JSON.stringify(metadataResult.data.storyId)} but the record is upserted into story ${JSON.stringify(storyId)}`,
      });
    }
    if (problems.length > before || !metadataResult.success) return;
    prepared.push({ id: id as string, blob: toBlob(values as Float32Array), metadata: metadataResult.data });
  });
  if (problems.length > 0) {
    throw new ValidationError(
      `Nothing was upserted into story ${JSON.stringify(storyId)}: ${describeProblems(problems)}`,
      { problems },
    );
  }
  return prepared;
}
