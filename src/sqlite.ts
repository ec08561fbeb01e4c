/**
 * `storyloom/sqlite`: the embedded, durable defaults. A story lives in one SQLite file on the user's disk (state,
 * scenes, influences, publication log, vectors and keywords), with no network and no credentials.
 *
 * Needs the optional packages `better-sqlite3` (and `sqlite-vec` for the vector index):
 * `npm install better-sqlite3 sqlite-vec`. Without them, creating an adapter throws `MissingDependencyError`.
 *
 * @example
 * ```ts
 * import { createSqliteKeywordIndex, createSqliteStateStore, createSqliteVectorIndex, openSqliteDatabase } from 'storyloom/sqlite';
 *
 * const database = openSqliteDatabase({ path: 'my-story.db' });
 * const store = createSqliteStateStore({ database });
 * const vectors = createSqliteVectorIndex({ database, dimensions: 1536 });
 * const keywords = createSqliteKeywordIndex({ database });
 * ```
 *
 * @module storyloom/sqlite
 */
export { createSqliteKeywordIndex, type SqliteKeywordIndexOptions } from './context/sqlite-keyword-index.js';
export { createSqliteVectorIndex, type SqliteVectorIndexOptions } from './context/sqlite-vector-index.js';
export { createSqliteStateStore, type SqliteStateStore, type SqliteStateStoreOptions } from './state/sqlite.js';
export {
  openSqliteDatabase,
  restoreSqliteBackup,
  SQLITE_SCHEMA_VERSION,
  type SqliteDatabase,
  type SqliteDatabaseOptions,
} from './state/sqlite-database.js';
