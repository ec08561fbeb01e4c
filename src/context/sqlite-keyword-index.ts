/**
 * The SQLite `KeywordIndex`: FTS5 ranked with `bm25()`, in the same file as the story's state. Documents and queries
 * go through the same `analyze` as the memory index (accent folding, stop words, Porter stemming) and FTS5 only
 * splits the result on spaces, so both indexes agree on what a term is.
 *
 * @module
 */
import { ClosedError, throwIfAborted } from '../core/errors.js';
import { IdSchema, LIMITS, type VectorMetadata } from '../state/schema.js';
import {
  type NativeStatement,
  nativeOf,
  openSqliteDatabase,
  type SqliteDatabase,
  type SqliteDatabaseOptions,
  toStorageError,
} from '../state/sqlite-database.js';
import { validateFilter } from './filter.js';
import {
  checkDeletion,
  checkStoryId,
  checkUpsertBatch,
  inspectDocumentText,
  invalidArgument,
} from './index-arguments.js';
import type { KeywordIndex, KeywordIndexCapabilities, KeywordMatch } from './keyword-index.js';
import { filterToSql, METADATA_COLUMN_NAMES, metadataColumns } from './sqlite-filter.js';
import { analyze } from './text-analysis.js';

/**
 * Options of `createSqliteKeywordIndex`: a file (`path`) or an open `database`.
 *
 * @example
 * ```ts
 * import { createSqliteKeywordIndex, type SqliteKeywordIndexOptions } from 'storyloom/sqlite';
 * const options: SqliteKeywordIndexOptions = { path: 'my-story.db' };
 * const index = createSqliteKeywordIndex(options);
 * ```
 */
export type SqliteKeywordIndexOptions = {
  /** Several keyword indexes can share a file under different names. Default `default`. */
  name?: string;
} & (
  | ({ path: string; database?: undefined } & Omit<SqliteDatabaseOptions, 'path'>)
  | { database: SqliteDatabase; path?: undefined }
);

const MAX_TOP_K = 10_000;

const CAPABILITIES: KeywordIndexCapabilities = Object.freeze({
  maxTopK: MAX_TOP_K,
  deleteByFilter: true,
  durable: true,
});

interface PreparedDocument {
  id: string;
  terms: string;
  metadata: VectorMetadata;
}

/**
 * Creates a BM25 keyword index on SQLite FTS5.
 *
 * Scores are FTS5's `bm25()` (k1 = 1.2, b = 0.75) turned round so that higher is better. Unlike the memory index,
 * FTS5 keeps one set of statistics (document count, average length, term counts) for its whole table, so the idf
 * of a term counts the documents of every story and index name in the file. With one story per file, the usual
 * case, the two agree on rankings; scores differ in scale (FTS5's idf is `ln((N - n + 0.5) / (n + 0.5))`, floored
 * at a tiny positive value for terms in more than half the documents, where Lucene's adds 1 inside the logarithm).
 *
 * @example
 * ```ts
 * import { createSqliteKeywordIndex } from 'storyloom/sqlite';
 *
 * const index = createSqliteKeywordIndex({ path: 'my-story.db' });
 * await index.upsert('story-1', [
 *   {
 *     id: 'scene-1',
 *     text: 'Mira followed the dragon into the flooded archive.',
 *     metadata: { storyId: 'story-1', type: 'scene', timestamp: Date.now(), sourceId: 'scene-1' },
 *   },
 * ]);
 * const matches = await index.query('story-1', { text: 'dragons', topK: 5, filter: { type: 'scene' } });
 * ```
 */
export function createSqliteKeywordIndex(options: SqliteKeywordIndexOptions): KeywordIndex {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument('options', 'must be { path } or { database }');
  }
  const name = options.name ?? 'default';
  if (!IdSchema.safeParse(name).success)
    throw invalidArgument('options.name', 'must be an id: letters, digits and "._:-"');
  const ownsDatabase = options.database === undefined;
  const database = options.database ?? openSqliteDatabase(options as SqliteDatabaseOptions);
  const db = nativeOf(database);
  const statements = {
    find: db.prepare('SELECT rowid FROM keyword_documents WHERE index_name = ? AND story_id = ? AND id = ?'),
    insert: db.prepare(
      `INSERT INTO keyword_documents (index_name, story_id, id, metadata, ${METADATA_COLUMN_NAMES})
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    deleteDocument: db.prepare('DELETE FROM keyword_documents WHERE rowid = ?'),
    insertTerms: db.prepare('INSERT INTO keyword_terms (rowid, terms) VALUES (?, ?)'),
    deleteTerms: db.prepare('DELETE FROM keyword_terms WHERE rowid = ?'),
    count: db.prepare('SELECT count(*) AS n FROM keyword_documents WHERE index_name = ? AND story_id = ?'),
    storyRows: db.prepare('SELECT rowid FROM keyword_documents WHERE index_name = ? AND story_id = ?'),
  };
  const statementCache = new Map<string, NativeStatement>();
  const cached = (sql: string) => {
    let statement = statementCache.get(sql);
    if (!statement) {
      if (statementCache.size > 256) statementCache.clear();
      statement = db.prepare<unknown[]>(sql);
      statementCache.set(sql, statement);
    }
    return statement;
  };

  /** Removes documents by rowid from both tables; the caller holds the transaction. */
  const removeRows = (rowids: readonly number[]): number => {
    for (const rowid of rowids) {
      statements.deleteTerms.run(rowid);
      statements.deleteDocument.run(rowid);
    }
    return rowids.length;
  };

  let closed = false;
  const open = (operation: string): void => {
    if (closed || database.closed) throw new ClosedError(`Cannot ${operation}: the SQLite keyword index is closed`);
  };
  const guard = <T>(body: () => T, operation: string): T => {
    try {
      return body();
    } catch (error) {
      throw toStorageError(error, database.path, `SQLite keyword index ${operation} failed`);
    }
  };

  return {
    specificationVersion: 'v1',
    provider: 'sqlite',
    capabilities: CAPABILITIES,

    async upsert(storyId, documents, upsertOptions) {
      open('upsert');
      checkStoryId(storyId);
      throwIfAborted(upsertOptions?.signal);
      const prepared = prepareDocuments(storyId, documents);
      if (prepared.length === 0) return;
      guard(
        () =>
          db.transaction(() => {
            for (const document of prepared) {
              // Replacing takes the old terms out, or the document would still match words it no longer holds.
              const existing = statements.find.get(name, storyId, document.id) as { rowid: number } | undefined;
              if (existing) removeRows([existing.rowid]);
              const { lastInsertRowid } = statements.insert.run(
                name,
                storyId,
                document.id,
                JSON.stringify(document.metadata),
                ...metadataColumns(document.metadata),
              );
              statements.insertTerms.run(lastInsertRowid, document.terms);
            }
          })(),
        'upsert',
      );
    },

    async query(storyId, query) {
      open('query');
      checkStoryId(storyId);
      if (typeof query !== 'object' || query === null)
        throw invalidArgument('query', 'must be an object with text and topK');
      throwIfAborted(query.signal);
      if (typeof query.text !== 'string' || query.text.length > LIMITS.sceneText) {
        throw invalidArgument('query.text', `must be a string of at most ${LIMITS.sceneText} characters`);
      }
      const { topK } = query;
      if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1 || topK > MAX_TOP_K) {
        throw invalidArgument('query.topK', `must be an integer from 1 to ${MAX_TOP_K}, got ${String(topK)}`);
      }
      if (query.filter !== undefined) validateFilter(query.filter, 'query.filter');
      const terms = analyze(query.text);
      if (terms.length === 0) return [];
      // Each analysed term is letters and digits only; quoting makes FTS5 read it as a term, never as an operator
      // (a story may well mention "NEAR" or "NOT").
      const match = terms.map((term) => `"${term}"`).join(' OR ');
      const condition = filterToSql(query.filter, 'd');
      const sql = `SELECT d.id, d.metadata, bm25(keyword_terms) AS rank
        FROM keyword_terms JOIN keyword_documents AS d ON d.rowid = keyword_terms.rowid
        WHERE keyword_terms MATCH ? AND d.index_name = ? AND d.story_id = ? AND ${condition.sql}
        ORDER BY rank, d.id LIMIT ?`;
      const rows = guard(() => cached(sql).all(match, name, storyId, ...condition.params, topK), 'query') as Array<{
        id: string;
        metadata: string;
        rank: number;
      }>;
      // FTS5's bm25() is negated so that ORDER BY ascends; the port wants higher-is-better.
      return rows.map((row): KeywordMatch => ({ id: row.id, score: -row.rank, metadata: JSON.parse(row.metadata) }));
    },

    async delete(storyId, deletion, deleteOptions) {
      open('delete');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      const target = checkDeletion(deletion);
      return guard(
        () =>
          db.transaction(() => {
            if ('ids' in target) {
              const rowids: number[] = [];
              for (const id of new Set(target.ids)) {
                const row = statements.find.get(name, storyId, id) as { rowid: number } | undefined;
                if (row) rowids.push(row.rowid);
              }
              return removeRows(rowids);
            }
            const condition = filterToSql(target.filter, 'd');
            const rows = cached(
              `SELECT d.rowid FROM keyword_documents AS d WHERE d.index_name = ? AND d.story_id = ? AND ${condition.sql}`,
            ).all(name, storyId, ...condition.params) as Array<{ rowid: number }>;
            return removeRows(rows.map((row) => row.rowid));
          })(),
        'delete',
      );
    },

    async count(storyId) {
      open('count');
      checkStoryId(storyId);
      return (guard(() => statements.count.get(name, storyId), 'count') as { n: number }).n;
    },

    async deleteStory(storyId) {
      open('delete a story');
      checkStoryId(storyId);
      guard(
        () =>
          db.transaction(() => {
            const rows = statements.storyRows.all(name, storyId) as Array<{ rowid: number }>;
            removeRows(rows.map((row) => row.rowid));
          })(),
        'deleteStory',
      );
    },

    async close() {
      if (closed) return;
      closed = true;
      if (ownsDatabase) database.close();
    },
  };
}

function prepareDocuments(storyId: string, documents: unknown): PreparedDocument[] {
  return checkUpsertBatch(storyId, documents, {
    label: 'documents',
    fields: 'id, text and metadata',
    inspectBody: inspectDocumentText,
    build: ({ id, item, metadata }) => ({ id, terms: analyze(item.text as string).join(' '), metadata }),
  });
}
