/**
 * The SQLite `VectorIndex`: records in the same file as the story's state, in a regular table partitioned by
 * (index name, story). By default queries are answered from an in-memory mirror of each story (the memory index's
 * layout), kept in step by write-through and checked against a per-story write counter, so a query costs what the
 * memory index costs while SQLite stays the durable source of truth. Without the mirror, queries run inside SQLite:
 * sqlite-vec's `vec_distance_cosine` over the rows that pass the filter, which becomes SQL on the metadata columns
 * (and a float64 cosine for the rare vectors too long or too short for float32 arithmetic), then the rows near the
 * `topK` cut scored again in float64, as the memory index scores them.
 *
 * @module
 */
import { z } from 'zod';
import { ClosedError, throwIfAborted, toProblems, ValidationError, type ValidationProblem } from '../core/errors.js';
import { IdSchema, LIMITS, type VectorMetadata, type VectorRecord } from '../state/schema.js';
import {
  ensureVectorExtension,
  type NativeDatabase,
  type NativeStatement,
  nativeOf,
  openSqliteDatabase,
  type SqliteDatabase,
  type SqliteDatabaseOptions,
  statementError,
  toStorageError,
} from '../state/sqlite-database.js';
import { validateFilter } from './filter.js';
import {
  checkDeletion,
  checkIdList,
  checkQueryVector,
  checkStoryId,
  checkTopK,
  checkUpsertBatch,
  describeProblems,
  inspectVector,
  invalidArgument,
} from './index-arguments.js';
import { createValidatedVectorLoad } from './memory-vector-index.js';
import { filterToSql, METADATA_COLUMN_NAMES, metadataColumns } from './sqlite-filter.js';
import {
  corruptRow,
  createSqliteMirrors,
  DEFAULT_MAX_MIRRORED_STORIES,
  parseStoredMetadata,
  type SqliteMirrorState,
  type StoredRow,
} from './sqlite-mirror.js';
import type { VectorIndex, VectorIndexCapabilities, VectorMatch } from './vector-index.js';

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
  /**
   * Answer `query` (and `fetch`, `stats`) from an in-memory copy of each story, loaded on the story's first query.
   * Default true. The copy costs about 8 bytes × dimensions × records (a 10,000-record story of 1536 dimensions:
   * about 123 MB; up to twice that while it grows), so turn it off on small-memory hosts; queries then scan the
   * rows inside SQLite, several times slower.
   */
  mirror?: boolean;
  /**
   * How many stories' copies the mirror holds at most: past it, the least recently queried story's copy is dropped
   * (and loaded again from the file if it is queried again). A story with no records is never held. Default 256.
   */
  maxMirroredStories?: number;
} & (
  | ({ path: string; database?: undefined } & Omit<SqliteDatabaseOptions, 'path'>)
  | { database: SqliteDatabase; path?: undefined }
);

const OptionsSchema = z.object({
  dimensions: z.number().int().min(1).max(LIMITS.vectorDimensions),
  name: IdSchema.default('default'),
  mirror: z.boolean().default(true),
  maxMirroredStories: z.number().int().min(1).default(DEFAULT_MAX_MIRRORED_STORIES),
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

/** A row of the load statement. */
interface LoadedRow {
  id: string;
  embedding: Buffer;
  metadata: string;
}

interface PreparedRecord {
  id: string;
  blob: Buffer;
  metadata: VectorMetadata;
}

/** What a test can see of an index's mirrors: the stories held in memory and how many loads from SQLite ran. */
export type SqliteVectorMirrorState = SqliteMirrorState;

const mirrorStates = new WeakMap<VectorIndex, () => SqliteVectorMirrorState>();

/**
 * The mirror state of an index made by `createSqliteVectorIndex`, for tests; not exported from the package entry.
 * Undefined for other indexes and for one created with `mirror: false`.
 */
export function sqliteVectorMirrorState(index: VectorIndex): SqliteVectorMirrorState | undefined {
  return mirrorStates.get(index)?.();
}

/**
 * Creates a vector index in a SQLite file (better-sqlite3 + sqlite-vec).
 *
 * Search is exact: every record of the story that passes the filter is scored and the best `topK` come back ordered
 * by score, then id. Upserts, deletes and `deleteStory` are each one transaction. Pass `{ database }` to keep vectors
 * in the same file as the state store.
 *
 * With `mirror` (the default) a story's first query loads its rows into an in-memory index (about 0.5 to 1 s for
 * 10,000 records of 1536 dimensions; rows were validated when written, so a load only checks each vector's length and norm
 * and refuses a damaged record with `StorageError` `corrupt`), and later queries are answered there at the memory
 * index's speed, scores in float64.
 * Each write commits to SQLite first and only then updates the loaded copy, so a failed write leaves both unchanged.
 * Every write also bumps the story's counter in `vector_index_versions`; before answering, a query compares it with
 * the copy's (one indexed read, skipped while `PRAGMA data_version` shows no other connection committed), so writes
 * from other processes or connections are seen at the next query, at the price of one reload of that story. `fetch`
 * and `stats` use the copy when it is loaded and current. With `mirror: false` every query scans the rows inside
 * SQLite with sqlite-vec's float32 `vec_distance_cosine` (a stored vector whose length is below 1e-15 or above 1e15,
 * where float32 squares would underflow or overflow, in float64 instead), then scores again in float64 the rows
 * whose float32 distance is within float32's rounding of the `topK`-th: scores and ranking are the memory index's,
 * to the last bit, even among records float32 cannot tell apart. The second pass costs a JavaScript call per row it
 * scores, usually a few beyond `topK`; a story with many near-duplicates of the query (thousands within about
 * 5e-4 in cosine of each other at 1536 dimensions) pays it for each of them.
 *
 * Opening an index whose name the file already holds only reads; registering a new name takes the write lock once.
 * Throws `ValidationError` for bad options, or when the file already holds this index `name` with other
 * dimensions; `StorageError` `busy` (retryable) when another process holds the write lock past `busyTimeoutMs` while
 * a new name is registered, `readOnly` when a new name would have to be registered in a read-only database;
 * `ClosedError` for a closed `database`; `MissingDependencyError` when better-sqlite3 or sqlite-vec is not installed.
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
  const { dimensions, name, mirror: mirrorEnabled, maxMirroredStories } = parsed.data;
  const ownsDatabase = options.database === undefined;
  const database = options.database ?? openSqliteDatabase(options as SqliteDatabaseOptions);
  try {
    // First: it refuses a closed database with ClosedError, before any talk of a missing package.
    ensureVectorExtension(database);
    registerCosineFunction(nativeOf(database));
    registerIndex(database, name, dimensions);
  } catch (error) {
    if (ownsDatabase) database.close();
    throw toStorageError(error, database.path, `Cannot open the SQLite vector index "${name}"`);
  }
  const db = nativeOf(database);
  const columns = METADATA_COLUMN_NAMES;
  // The zero vector: a distance to it is a vector's length.
  const origin = Buffer.alloc(dimensions * 4);
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
    load: db.prepare('SELECT id, embedding, metadata FROM vectors WHERE index_name = ? AND story_id = ?'),
  };
  // Every write transaction bumps its story's counter, with or without a mirror here: other connections may hold one.
  const mirrors = createSqliteMirrors({
    db,
    table: 'vector_index_versions',
    name,
    maxStories: maxMirroredStories,
    // Rows go straight into the copy as they are read (no array of every row and its parsed metadata at once), and
    // without upsert's schema checks: they were checked when they were written.
    read: (storyId) => {
      const { n } = statements.count.get(name, storyId) as { n: number };
      if (n === 0) return undefined;
      const load = createValidatedVectorLoad(dimensions, storyId, n);
      for (const row of statements.load.iterate(name, storyId) as Iterable<LoadedRow>) {
        const where = { path: database.path, kind: 'vector' as const, id: row.id, storyId };
        const values = viewOfBlob(checkedBlob(row.embedding, dimensions, where));
        const metadata = parseStoredMetadata(row.metadata, where);
        try {
          load.add(row.id, values, metadata);
        } catch (cause) {
          throw corruptRow(where, (cause as Error).message, cause);
        }
      }
      return load.index;
    },
  });
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
      throw statementError(database, error, `SQLite vector index ${operation} failed`);
    }
  };

  const index: VectorIndex = {
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
      const version = guard(
        () =>
          db
            .transaction(() => {
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
              return mirrors.bumpVersion(storyId);
            })
            .immediate(),
        'upsert',
      );
      mirrors.writeThrough(storyId, version, (memory) =>
        memory.upsert(
          storyId,
          prepared.map((record) => ({ id: record.id, values: viewOfBlob(record.blob), metadata: record.metadata })),
        ),
      );
    },

    async query(storyId, query) {
      open('query');
      checkStoryId(storyId);
      if (typeof query !== 'object' || query === null)
        throw invalidArgument('query', 'must be an object with vector and topK');
      throwIfAborted(query.signal);
      const squared = checkQueryVector(query.vector, dimensions);
      checkTopK(query.topK, MAX_TOP_K);
      if (query.filter !== undefined) validateFilter(query.filter, 'query.filter');
      if (mirrorEnabled) {
        const mirror = guard(() => mirrors.load(storyId), 'query');
        return mirror === undefined ? [] : mirror.query(storyId, query);
      }
      const condition = filterToSql(query.filter, 'v');
      const includeValues = query.includeValues === true;
      // Two passes in one statement. The first ranks every row that passes the filter by sqlite-vec's float32
      // distance; float32 squares of a vector longer than about 1e19 overflow and of one shorter than about 1e-19
      // underflow, so rows whose length (a distance to the origin) lies outside 1e-15..1e15 are scored in float64
      // there already. The query is scaled to length 1 first, so its own length never matters. Float32 cannot tell
      // apart scores closer than its rounding (near-duplicates tie at distance 0, and the tie would go by id), so the
      // second pass scores again, in float64 exactly as the memory index does, every row the first put within twice
      // float32's error of the topK-th distance, and ranks by that: the rows near the cut, usually a few.
      const sql = `WITH rough AS MATERIALIZED (
          SELECT v.rowid AS row_id,
            CASE WHEN vec_distance_l2(v.embedding, ?) BETWEEN 1e-15 AND 1e15 THEN vec_distance_cosine(v.embedding, ?) ELSE ${COSINE_DISTANCE_FUNCTION}(v.embedding, ?) END AS distance
          FROM vectors AS v
          WHERE v.index_name = ? AND v.story_id = ? AND ${condition.sql}
        ),
        cut AS (SELECT max(distance) + ? AS distance FROM (SELECT distance FROM rough WHERE distance IS NOT NULL ORDER BY distance LIMIT ?))
        SELECT v.id, v.metadata, ${includeValues ? 'v.embedding' : 'NULL AS embedding'}, ${COSINE_FUNCTION}(v.embedding, ?) AS score
        FROM rough JOIN vectors AS v ON v.rowid = rough.row_id
        WHERE rough.distance IS NULL OR rough.distance <= (SELECT distance FROM cut)
        ORDER BY score IS NULL, score DESC, v.id LIMIT ?`;
      const exactQuery = toBlob(query.vector);
      const rows = guard(
        () =>
          cached(queryStatements, sql).all(
            origin,
            unitBlob(query.vector, squared),
            exactQuery,
            name,
            storyId,
            ...condition.params,
            2 * float32CosineError(dimensions),
            query.topK,
            exactQuery,
            query.topK,
          ),
        'query',
      ) as Array<{ id: string; metadata: string; embedding: Buffer | null; score: number | null }>;
      return rows.map((row): VectorMatch => {
        const where = { path: database.path, kind: 'vector' as const, id: row.id, storyId };
        // No score: the stored vector has no finite, non-zero length, which only a damaged file can hold.
        if (row.score === null) throw corruptRow(where, 'its vector has no finite, non-zero length');
        const match: VectorMatch = { id: row.id, score: row.score, metadata: parseStoredMetadata(row.metadata, where) };
        if (row.embedding) match.values = storedValues(row.embedding, dimensions, where);
        return match;
      });
    },

    async fetch(storyId, ids, fetchOptions) {
      open('fetch');
      checkStoryId(storyId);
      checkIdList(ids, 'ids');
      throwIfAborted(fetchOptions?.signal);
      const mirror = mirrorEnabled ? guard(() => mirrors.current(storyId), 'fetch') : undefined;
      if (mirror) return mirror.fetch(storyId, ids);
      const records: VectorRecord[] = [];
      guard(() => {
        for (const id of ids) {
          const row = statements.fetch.get(name, storyId, id) as { embedding: Buffer; metadata: string } | undefined;
          if (!row) continue;
          const where = { path: database.path, kind: 'vector' as const, id, storyId };
          records.push({
            id,
            values: storedValues(row.embedding, dimensions, where),
            metadata: parseStoredMetadata(row.metadata, where),
          });
        }
      }, 'fetch');
      return records;
    },

    async delete(storyId, deletion, deleteOptions) {
      open('delete');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      const target = checkDeletion(deletion);
      const condition = 'ids' in target ? undefined : filterToSql(target.filter, 'v');
      const { deletedIds, version } = guard(
        () =>
          db
            .transaction(() => {
              const deletedIds: string[] = [];
              if (condition === undefined) {
                for (const id of new Set((target as { ids: string[] }).ids)) {
                  if (statements.deleteId.run(name, storyId, id).changes > 0) deletedIds.push(id);
                }
              } else {
                // The ids SQLite deleted, so the mirror drops exactly those rows.
                const sql = `DELETE FROM vectors AS v WHERE v.index_name = ? AND v.story_id = ? AND ${condition.sql} RETURNING id`;
                const rows = cached(deleteStatements, sql).all(name, storyId, ...condition.params) as Array<{
                  id: string;
                }>;
                for (const row of rows) deletedIds.push(row.id);
              }
              // Nothing deleted, nothing changed: the counter stays, and so does every process's mirror.
              const version = deletedIds.length > 0 ? mirrors.bumpVersion(storyId) : undefined;
              return { deletedIds, version };
            })
            .immediate(),
        'delete',
      );
      if (version !== undefined)
        mirrors.writeThrough(storyId, version, (memory) => memory.delete(storyId, { ids: deletedIds }));
      return deletedIds.length;
    },

    async stats(storyId, statsOptions) {
      open('read stats');
      checkStoryId(storyId);
      throwIfAborted(statsOptions?.signal);
      const mirror = mirrorEnabled ? guard(() => mirrors.current(storyId), 'stats') : undefined;
      if (mirror) return mirror.stats(storyId);
      const row = guard(() => statements.count.get(name, storyId), 'stats') as { n: number };
      return { count: row.n, dimensions };
    },

    async deleteStory(storyId, deleteOptions) {
      open('delete a story');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      const version = guard(
        () =>
          db
            .transaction(() => {
              statements.deleteStory.run(name, storyId);
              return mirrors.bumpVersion(storyId);
            })
            .immediate(),
        'deleteStory',
      );
      mirrors.writeThrough(storyId, version, (memory) => memory.deleteStory(storyId));
    },

    async close() {
      if (closed) return;
      closed = true;
      mirrors.clear();
      if (ownsDatabase) database.close();
    },
  };
  if (mirrorEnabled) mirrorStates.set(index, mirrors.state);
  return index;
}

/**
 * Records the index's dimensions in the file, or checks them against what the file already says. It reads first:
 * opening an index the file already holds needs no write lock, so it neither waits behind another process's write
 * nor fails on a read-only database. Only a new name is written, by one statement (its own write transaction, which
 * waits up to the busy timeout); SQLITE_BUSY and SQLITE_READONLY are mapped to `StorageError` by the caller.
 */
function registerIndex(database: SqliteDatabase, name: string, dimensions: number): void {
  const db = nativeOf(database);
  const { path } = database;
  const select = db.prepare('SELECT dimensions FROM vector_indexes WHERE name = ?').pluck();
  let stored = select.get(name) as number | undefined;
  if (stored === undefined) {
    // OR IGNORE, and read again: another process may have registered the name since the first read.
    db.prepare('INSERT OR IGNORE INTO vector_indexes (name, dimensions) VALUES (?, ?)').run(name, dimensions);
    stored = select.get(name) as number;
  }
  if (stored !== dimensions) {
    throw new ValidationError(
      `The vector index "${name}" in "${path}" holds ${stored}-dimension vectors, not ${dimensions}; open it with dimensions: ${stored} or use another name`,
      { problems: [{ path: 'options.dimensions', message: `must be ${stored} for the index "${name}"` }] },
    );
  }
}

/** The SQL function giving the float64 cosine distance of the rows outside float32's safe lengths. */
const COSINE_DISTANCE_FUNCTION = 'storyloom_cosine_distance';

/** The SQL function giving the float64 cosine that ranks the rows near the cut, as the memory index scores them. */
const COSINE_FUNCTION = 'storyloom_cosine';

const connectionsWithCosine = new WeakSet<NativeDatabase>();

/**
 * Registers `COSINE_DISTANCE_FUNCTION` and `COSINE_FUNCTION` on the connection, once: better-sqlite3 refuses to
 * define a function while the connection is iterating a query, which an index created inside a loop over another's
 * rows would otherwise hit.
 */
function registerCosineFunction(db: NativeDatabase): void {
  if (connectionsWithCosine.has(db)) return;
  // Called with a blob, or JSON text (vec_distance_l2, evaluated first on the same row, refuses anything else); text,
  // which only a damaged row holds, has no byteLength and scores null.
  db.function(COSINE_DISTANCE_FUNCTION, { deterministic: true }, cosineDistance as (...values: unknown[]) => unknown);
  db.function(COSINE_FUNCTION, { deterministic: true }, cosine as (...values: unknown[]) => unknown);
  connectionsWithCosine.add(db);
}

/**
 * The cosine of two float32 blobs computed as the memory index computes its scores, to the last bit: the query scaled
 * to length 1, the products with its non-zero coordinates summed in float64 in ascending dimensions, times the stored
 * vector's inverse length, clamped into [-1, 1]. So without the mirror a query ranks exactly as with it, ties and
 * all, and any finite non-zero float32 vector has a length. Null (sorted last, reported as damage) when either has
 * none or their sizes differ.
 */
function cosine(stored: Buffer, query: Buffer): number | null {
  // The query blob always holds the index's dimensions.
  if (stored.byteLength !== query.byteLength) return null;
  const values = viewOfBlob(stored);
  const weights = queryWeights(query);
  let squared = 0;
  let dot = 0;
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!;
    squared += value * value;
    // The memory index skips the query's zero coordinates; adding their ±0 products to a sum that starts at +0
    // leaves it bit for bit the same.
    dot += weights[i]! * value;
  }
  const score = dot * (1 / Math.sqrt(squared));
  return Number.isFinite(score) ? Math.max(-1, Math.min(1, score)) : null;
}

/** The weights of the last query scored: one query scores many rows in a row, and its length is summed once. */
let lastQuery: { blob: Buffer; weights: Float64Array } | undefined;

/** The query scaled to length 1 in float64, as the memory index scales it. */
function queryWeights(query: Buffer): Float64Array {
  if (lastQuery?.blob.equals(query)) return lastQuery.weights;
  const direction = fromBlob(query);
  let squared = 0;
  for (let i = 0; i < direction.length; i++) squared += direction[i]! * direction[i]!;
  const inverseNorm = 1 / Math.sqrt(squared);
  const weights = Float64Array.from(direction, (value) => value * inverseNorm);
  lastQuery = { blob: Buffer.from(query), weights };
  return weights;
}

/** `1 - cosine`: the distance of the rows sqlite-vec cannot score, in the first pass of a query. */
function cosineDistance(stored: Buffer, query: Buffer): number | null {
  const similarity = cosine(stored, query);
  return similarity === null ? null : 1 - similarity;
}

/**
 * A bound on how far sqlite-vec's float32 cosine distance can stray from the float64 one, for vectors of `dimensions`
 * floats whose squares stay in float32's normal range: each of the three sums (dot product and two squared lengths)
 * is off by at most `dimensions` roundings relative to |a|·|b| (Cauchy-Schwarz), which moves the cosine by at most
 * twice that, plus a few roundings for the square roots, the division and the query's own rounding to float32.
 * Taken with room to spare: actual errors are far smaller, and a looser bound only re-scores a few more rows.
 */
function float32CosineError(dimensions: number): number {
  return (3 * dimensions + 16) * 2 ** -24;
}

/** The query scaled to length 1 (in float64, then stored as float32), so sqlite-vec never squares a huge or tiny one. */
function unitBlob(values: Float32Array, squared: number): Buffer {
  const inverse = 1 / Math.sqrt(squared);
  return Buffer.from(Float32Array.from(values, (value) => value * inverse).buffer);
}

function toBlob(values: Float32Array): Buffer {
  // A copy: the caller may reuse its buffer after upserting.
  return Buffer.from(Float32Array.from(values).buffer);
}

/** The floats of a blob without copying them, for the mirror, which copies them into its own storage at once. */
function viewOfBlob(blob: Buffer): Float32Array {
  // SQLite hands out blobs at arbitrary offsets; a Float32Array view needs four-byte alignment.
  return blob.byteOffset % 4 === 0
    ? new Float32Array(blob.buffer, blob.byteOffset, blob.byteLength / 4)
    : fromBlob(blob);
}

/** `blob` when it holds a vector of `dimensions` floats; else a `StorageError` `corrupt` naming the row. */
function checkedBlob(blob: Buffer, dimensions: number, row: StoredRow): Buffer {
  if (blob.byteLength !== dimensions * 4) {
    throw corruptRow(row, `its vector is ${blob.byteLength} bytes, not ${dimensions * 4}`);
  }
  return blob;
}

/** The vector of a stored row, a copy the caller may keep, checked as the mirror's load checks it. */
function storedValues(blob: Buffer, dimensions: number, row: StoredRow): Float32Array {
  const values = fromBlob(checkedBlob(blob, dimensions, row));
  const problems: ValidationProblem[] = [];
  inspectVector(values, dimensions, 'its vector', problems);
  if (problems.length > 0) throw corruptRow(row, describeProblems(problems));
  return values;
}

function fromBlob(blob: Buffer): Float32Array {
  // A fresh, aligned buffer: returned values are the caller's to mutate.
  const values = new Float32Array(blob.byteLength / 4);
  new Uint8Array(values.buffer).set(blob);
  return values;
}

function prepareRecords(storyId: string, records: unknown, dimensions: number): PreparedRecord[] {
  return checkUpsertBatch(storyId, records, {
    label: 'records',
    fields: 'id, values and metadata',
    inspectBody: (item, at, problems) => inspectVector(item.values, dimensions, `${at}.values`, problems),
    build: ({ id, item, metadata }) => ({ id, blob: toBlob(item.values as Float32Array), metadata }),
  });
}
