/**
 * The SQLite `KeywordIndex`: documents and their analysed terms (an FTS5 table) in the same file as the story's state.
 * Documents and queries go through the same `analyze` as the memory index (accent folding, stop words, Porter
 * stemming) and FTS5 only splits the result on spaces, so both indexes agree on what a term is. By default queries are
 * answered from an in-memory mirror of each story, the memory index's BM25 partition loaded from the stored terms and
 * kept in step like the vector index's mirror (write-through, a per-story write counter), so the embedded default
 * ranks and scores exactly like the memory index. Without the mirror, queries run FTS5 `MATCH` ranked by `bm25()`.
 *
 * @module
 */
import { ClosedError, throwIfAborted } from '../core/errors.js';
import { IdSchema, type VectorMetadata } from '../state/schema.js';
import {
  type NativeStatement,
  nativeOf,
  openSqliteDatabase,
  type SqliteDatabase,
  type SqliteDatabaseOptions,
  statementError,
} from '../state/sqlite-database.js';
import {
  checkDeletion,
  checkKeywordQuery,
  checkStoryId,
  checkUpsertBatch,
  inspectDocumentText,
  invalidArgument,
} from './index-arguments.js';
import type { KeywordIndex, KeywordIndexCapabilities, KeywordMatch } from './keyword-index.js';
import { type AnalysedKeywordPartition, createAnalysedKeywordPartition } from './memory-keyword-index.js';
import { filterToSql, METADATA_COLUMN_NAMES, metadataColumns } from './sqlite-filter.js';
import {
  createSqliteMirrors,
  DEFAULT_MAX_MIRRORED_STORIES,
  parseStoredMetadata,
  type SqliteMirrorState,
} from './sqlite-mirror.js';
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
  /**
   * Answer `query` (and `count`) from an in-memory copy of each story, loaded on the story's first query, ranked
   * exactly like `createMemoryKeywordIndex`. Default true. The copy holds every document's metadata and term counts,
   * about 4.5 KB per 200-word document (a 10,000-document story: about 45 MB); turn it off on small-memory hosts, and
   * queries then run FTS5 `bm25()` inside SQLite, about ten times slower and with whole-file statistics.
   */
  mirror?: boolean;
  /**
   * How many stories' copies the mirror holds at most: past it, the least recently queried story's copy is dropped
   * (and loaded again from the file if it is queried again). A story with no documents is never held. Default 256.
   */
  maxMirroredStories?: number;
} & (
  | ({ path: string; database?: undefined } & Omit<SqliteDatabaseOptions, 'path'>)
  | { database: SqliteDatabase; path?: undefined }
);

const MAX_TOP_K = 10_000;

/**
 * How many distinct terms of a query reach FTS5 without the mirror; later ones are left out. FTS5's work on a row grows
 * with the number of phrases times the row's hits on them, so a long query must not become an unbounded `OR`. 256
 * distinct terms is a page of prose, far more than a retrieval query holds. For tests; not exported from the package
 * entry (the factory's documentation states the limit).
 */
export const MAX_FTS_QUERY_TERMS = 256;

const CAPABILITIES: KeywordIndexCapabilities = Object.freeze({
  maxTopK: MAX_TOP_K,
  deleteByFilter: true,
  durable: true,
});

/** A row of the load statement: a document's id, its metadata as stored, and its analysed terms joined by spaces. */
interface LoadedRow {
  id: string;
  metadata: string;
  terms: string;
}

interface PreparedDocument {
  id: string;
  /** `analyze`'s output: FTS5 stores it joined by spaces, the mirror takes it as it is. */
  terms: string[];
  /** What SQLite stores, so the mirror holds the same metadata whether written through or loaded. */
  metadataJson: string;
  metadata: VectorMetadata;
}

const mirrorStates = new WeakMap<KeywordIndex, () => SqliteMirrorState>();

/**
 * The mirror state of an index made by `createSqliteKeywordIndex`, for tests; not exported from the package entry.
 * Undefined for other indexes and for one created with `mirror: false`.
 */
export function sqliteKeywordMirrorState(index: KeywordIndex): SqliteMirrorState | undefined {
  return mirrorStates.get(index)?.();
}

/**
 * Creates a BM25 keyword index in a SQLite file (better-sqlite3, FTS5).
 *
 * Upserts, deletes and `deleteStory` are each one transaction. With `mirror` (the default) a story's first query
 * loads its documents' stored terms into an in-memory BM25 partition, the memory index's own (about 0.25 s for 10,000
 * documents of 200 words), and later queries are answered there. Scores are then exactly `createMemoryKeywordIndex`'s:
 * Lucene's idf `ln(1 + (N - n + 0.5) / (n + 0.5))` over the story's documents, k1 = 1.2, b = 0.75, so the embedded
 * default ranks as the memory backend does. Each write commits to SQLite first and only then updates the loaded copy,
 * so a failed write leaves both unchanged. Every write also bumps the story's counter in `keyword_index_versions`;
 * before answering, a query compares it with the copy's (one indexed read, skipped while `PRAGMA data_version` shows no
 * other connection committed), so writes from other processes or connections are seen at the next query, at the price
 * of one reload of that story. `count` uses the copy when it is loaded and current.
 *
 * With `mirror: false` scores are FTS5's `bm25()` (k1 = 1.2, b = 0.75) turned round so that higher is better. FTS5
 * keeps one set of statistics (document count, average length, term counts) for its whole table, so the idf of a
 * term counts the documents of every story and index name in the file. With one story per file, the usual case,
 * rankings mostly agree with the mirror's; scores differ in scale (FTS5's idf is `ln((N - n + 0.5) / (n + 0.5))`,
 * floored at a tiny positive value for terms in more than half the documents, where Lucene's adds 1 inside the
 * logarithm). A term asked twice weighs twice, as with the mirror; only the first `MAX_FTS_QUERY_TERMS` (256) distinct
 * terms of a query are searched.
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
  const mirrorEnabled = options.mirror ?? true;
  if (typeof mirrorEnabled !== 'boolean') throw invalidArgument('options.mirror', 'must be a boolean');
  const maxMirroredStories = options.maxMirroredStories ?? DEFAULT_MAX_MIRRORED_STORIES;
  if (!Number.isSafeInteger(maxMirroredStories) || maxMirroredStories < 1) {
    throw invalidArgument('options.maxMirroredStories', 'must be an integer of at least 1');
  }
  const ownsDatabase = options.database === undefined;
  const database = options.database ?? openSqliteDatabase(options as SqliteDatabaseOptions);
  // ClosedError for a closed database.
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
    storyRows: db.prepare('SELECT rowid, id FROM keyword_documents WHERE index_name = ? AND story_id = ?'),
    load: db.prepare(
      `SELECT d.id, d.metadata, t.terms FROM keyword_documents AS d JOIN keyword_terms AS t ON t.rowid = d.rowid
       WHERE d.index_name = ? AND d.story_id = ?`,
    ),
  };
  // Every write transaction bumps its story's counter, with or without a mirror here: other connections may hold one.
  const mirrors = createSqliteMirrors({
    db,
    table: 'keyword_index_versions',
    name,
    maxStories: maxMirroredStories,
    // Rows go straight into the copy as they are read: no array of every row and its parsed metadata at once.
    read: (storyId): AnalysedKeywordPartition | undefined => {
      const partition = createAnalysedKeywordPartition();
      for (const row of statements.load.iterate(name, storyId) as Iterable<LoadedRow>) {
        const where = { path: database.path, kind: 'keyword' as const, id: row.id, storyId };
        partition.put(row.id, splitTerms(row.terms), parseStoredMetadata(row.metadata, where));
      }
      return partition.size > 0 ? partition : undefined;
    },
  });
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
  const removeRows = (rowids: readonly number[]): void => {
    for (const rowid of rowids) {
      statements.deleteTerms.run(rowid);
      statements.deleteDocument.run(rowid);
    }
  };

  let closed = false;
  const open = (operation: string): void => {
    if (closed || database.closed) throw new ClosedError(`Cannot ${operation}: the SQLite keyword index is closed`);
  };
  const guard = <T>(body: () => T, operation: string): T => {
    try {
      return body();
    } catch (error) {
      throw statementError(database, error, `SQLite keyword index ${operation} failed`);
    }
  };

  const index: KeywordIndex = {
    specificationVersion: 'v1',
    provider: 'sqlite',
    capabilities: CAPABILITIES,

    async upsert(storyId, documents, upsertOptions) {
      open('upsert');
      checkStoryId(storyId);
      throwIfAborted(upsertOptions?.signal);
      const prepared = prepareDocuments(storyId, documents);
      if (prepared.length === 0) return;
      const version = guard(
        () =>
          db
            .transaction(() => {
              for (const document of prepared) {
                // Replacing takes the old terms out, or the document would still match words it no longer holds.
                const existing = statements.find.get(name, storyId, document.id) as { rowid: number } | undefined;
                if (existing) removeRows([existing.rowid]);
                const { lastInsertRowid } = statements.insert.run(
                  name,
                  storyId,
                  document.id,
                  document.metadataJson,
                  ...metadataColumns(document.metadata),
                );
                statements.insertTerms.run(lastInsertRowid, document.terms.join(' '));
              }
              return mirrors.bumpVersion(storyId);
            })
            .immediate(),
        'upsert',
      );
      mirrors.writeThrough(storyId, version, (partition) => {
        for (const document of prepared) {
          partition.put(document.id, document.terms, JSON.parse(document.metadataJson));
        }
      });
    },

    async query(storyId, query) {
      open('query');
      checkStoryId(storyId);
      checkKeywordQuery(query, MAX_TOP_K);
      const { topK } = query;
      const terms = analyze(query.text);
      if (terms.length === 0) return [];
      if (mirrorEnabled) {
        const partition = guard(() => mirrors.load(storyId), 'query');
        return partition?.search(terms, topK, query.filter, query.sharedMetadata === true) ?? [];
      }
      const matches = weightedMatches(terms);
      const condition = filterToSql(query.filter, 'd');
      // One expression (the usual query, each term once) is flattened by SQLite into a plain join, as fast as a direct
      // MATCH; several are summed per document. A compound subquery is never flattened into the aggregate, which FTS5
      // would refuse: bm25() must run where its MATCH is.
      const single = matches.length === 1;
      const sql = `SELECT d.id, d.metadata, ${single ? 'm.rank' : 'sum(m.rank) AS rank'} FROM (${matches
        .map(() => 'SELECT rowid, ? * bm25(keyword_terms) AS rank FROM keyword_terms WHERE keyword_terms MATCH ?')
        .join(' UNION ALL ')}) AS m JOIN keyword_documents AS d ON d.rowid = m.rowid
        WHERE d.index_name = ? AND d.story_id = ? AND ${condition.sql}
        ${single ? '' : 'GROUP BY d.rowid'} ORDER BY rank, d.id LIMIT ?`;
      const params = matches.flatMap(({ weight, match }) => [weight, match]);
      const rows = guard(() => cached(sql).all(...params, name, storyId, ...condition.params, topK), 'query') as Array<{
        id: string;
        metadata: string;
        rank: number;
      }>;
      // FTS5's bm25() is negated so that ORDER BY ascends; the port wants higher-is-better.
      return rows.map(
        (row): KeywordMatch => ({
          id: row.id,
          score: -row.rank,
          metadata: parseStoredMetadata(row.metadata, { path: database.path, kind: 'keyword', id: row.id, storyId }),
        }),
      );
    },

    async delete(storyId, deletion, deleteOptions) {
      open('delete');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      const target = checkDeletion(deletion);
      const { deleted, version } = guard(
        () =>
          db
            .transaction(() => {
              let deleted: Array<{ rowid: number; id: string }>;
              if ('ids' in target) {
                deleted = [];
                for (const id of new Set(target.ids)) {
                  const row = statements.find.get(name, storyId, id) as { rowid: number } | undefined;
                  if (row) deleted.push({ rowid: row.rowid, id });
                }
              } else {
                const condition = filterToSql(target.filter, 'd');
                deleted = cached(
                  `SELECT d.rowid, d.id FROM keyword_documents AS d WHERE d.index_name = ? AND d.story_id = ? AND ${condition.sql}`,
                ).all(name, storyId, ...condition.params) as Array<{ rowid: number; id: string }>;
              }
              removeRows(deleted.map((row) => row.rowid));
              // Nothing deleted, nothing changed: the counter stays, and so does every process's mirror.
              return { deleted, version: deleted.length > 0 ? mirrors.bumpVersion(storyId) : undefined };
            })
            .immediate(),
        'delete',
      );
      if (version !== undefined) {
        mirrors.writeThrough(storyId, version, (partition) => {
          for (const row of deleted) partition.remove(row.id);
        });
      }
      return deleted.length;
    },

    async count(storyId) {
      open('count');
      checkStoryId(storyId);
      const mirror = mirrorEnabled ? guard(() => mirrors.current(storyId), 'count') : undefined;
      if (mirror) return mirror.size;
      return (guard(() => statements.count.get(name, storyId), 'count') as { n: number }).n;
    },

    async deleteStory(storyId, deleteOptions) {
      open('delete a story');
      checkStoryId(storyId);
      throwIfAborted(deleteOptions?.signal);
      const { rows, version } = guard(
        () =>
          db
            .transaction(() => {
              const rows = statements.storyRows.all(name, storyId) as Array<{ rowid: number; id: string }>;
              removeRows(rows.map((row) => row.rowid));
              return { rows, version: mirrors.bumpVersion(storyId) };
            })
            .immediate(),
        'deleteStory',
      );
      mirrors.writeThrough(storyId, version, (partition) => {
        for (const row of rows) partition.remove(row.id);
      });
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
 * The FTS5 `MATCH` expressions of a query's analysed terms, each with the weight of its `bm25()`. A term asked n times
 * must weigh n times, as in the memory index, and FTS5's `bm25()` sums one contribution per phrase, but n copies of a
 * phrase cost FTS5 about n² times the work on every row that holds it (seconds for a word repeated a thousand times).
 * So each distinct term goes once into the expression of weight 2^k for every bit k set in its count: the weighted sum
 * of those expressions' `bm25()` is the sum over terms of count × contribution, with at most 17 expressions. Terms
 * past the first `MAX_FTS_QUERY_TERMS` distinct ones are left out.
 */
function weightedMatches(terms: readonly string[]): Array<{ weight: number; match: string }> {
  const counts = new Map<string, number>();
  for (const term of terms) {
    const count = counts.get(term);
    if (count !== undefined) counts.set(term, count + 1);
    else if (counts.size < MAX_FTS_QUERY_TERMS) counts.set(term, 1);
  }
  const byWeight = new Map<number, string[]>();
  for (const [term, count] of counts) {
    for (let weight = 1; weight <= count; weight *= 2) {
      if ((count & weight) === 0) continue;
      const group = byWeight.get(weight);
      if (group) group.push(term);
      else byWeight.set(weight, [term]);
    }
  }
  // Each analysed term is letters and digits only; quoting makes FTS5 read it as a term, never as an operator (a
  // story may well mention "NEAR" or "NOT").
  return [...byWeight].map(([weight, group]) => ({ weight, match: group.map((term) => `"${term}"`).join(' OR ') }));
}

/** The stored terms string back as `analyze`'s output; a text with no terms is stored as the empty string. */
function splitTerms(terms: string): string[] {
  return terms === '' ? [] : terms.split(' ');
}

function prepareDocuments(storyId: string, documents: unknown): PreparedDocument[] {
  return checkUpsertBatch(storyId, documents, {
    label: 'documents',
    fields: 'id, text and metadata',
    inspectBody: inspectDocumentText,
    build: ({ id, item, metadata }) => ({
      id,
      terms: analyze(item.text as string),
      metadataJson: JSON.stringify(metadata),
      metadata,
    }),
  });
}
