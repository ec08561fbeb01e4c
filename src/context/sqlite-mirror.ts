/**
 * The bookkeeping shared by the in-memory mirrors of the SQLite vector and keyword indexes: which stories are held in
 * memory, and whether each still matches the file. Every write transaction of an index bumps its story's counter in a
 * `*_index_versions` table; a mirror remembers the counter it was loaded at. A query reads the counter only when
 * `PRAGMA data_version` (other connections' commits) or this process's write count on the connection (its own commits,
 * which do not move data_version) moved since the mirror was last confirmed. Own writes are applied to the loaded
 * mirror after they commit; anything else makes the next query reload the story from SQLite. At most `maxStories`
 * copies are held, the least recently used dropped first, and a story with no rows is never held: a process that
 * touches many stories keeps only those it uses, and a dropped story is simply loaded again from the file.
 *
 * @module
 */
import { LRUCache } from 'lru-cache';
import { StorageError } from '../core/errors.js';
import type { VectorMetadata } from '../state/schema.js';
import type { NativeDatabase } from '../state/sqlite-database.js';

/** The counter tables, one per kind of index (see the schema migrations in `sqlite-database.ts`). */
export type MirrorVersionTable = 'vector_index_versions' | 'keyword_index_versions';

/** What a test can see of an index's mirrors: the stories held in memory and how many loads from SQLite ran. */
export interface SqliteMirrorState {
  stories: string[];
  loads: number;
}

/**
 * Writes made through each connection by this process: `PRAGMA data_version` only moves for other connections' commits,
 * so indexes sharing one connection (two indexes on one `database`, or a vector and a keyword index in the same file)
 * tell each other through this. One count for every kind of index, since all of them write through the connection.
 */
const localWriteCounts = new WeakMap<NativeDatabase, { writes: number }>();

/** How many stories' copies an index holds when its options do not say. */
export const DEFAULT_MAX_MIRRORED_STORIES = 256;

/** Options of `createSqliteMirrors`. */
export interface SqliteMirrorsOptions<Content> {
  db: NativeDatabase;
  /** The table holding the per-(index name, story) counters of this kind of index. */
  table: MirrorVersionTable;
  /** The index name, the first half of the counter's key. */
  name: string;
  /** How many stories' copies to hold at most; the least recently used is dropped first. */
  maxStories: number;
  /**
   * Builds a story's in-memory copy from its rows, synchronously, inside the transaction that reads the counter, so
   * both come from one snapshot and no write of this process can come in between; undefined when the story has no
   * rows, which is not worth holding. Rows are best streamed into the copy as they are read (`statement.iterate`): an
   * array of every row first costs memory and time on large stories. A read transaction does not block writers in
   * WAL mode.
   */
  read: (storyId: string) => Content | undefined;
}

/** The mirrors of one index object, keyed by story. */
export interface SqliteMirrors<Content> {
  /** Bumps the story's counter and returns its new value; call inside the write transaction. */
  bumpVersion(storyId: string): number;
  /** The story's copy when it is loaded and still matches SQLite, else undefined (a stale one is dropped). */
  current(storyId: string): Content | undefined;
  /** The story's copy, loaded from SQLite when absent or stale; undefined when the story has no rows. */
  load(storyId: string): Content | undefined;
  /**
   * After a write transaction committed and took the story's counter to `version`: applies the same change to the
   * loaded copy when it was exactly one write behind, and drops it when some other connection wrote in between.
   * `apply` must not throw for a change SQLite accepted; if it does (or its promise rejects), the copy is dropped and
   * rebuilt from SQLite at the next query, the safe side.
   */
  writeThrough(storyId: string, version: number, apply: (content: Content) => unknown): void;
  /** Forgets every copy (on close). */
  clear(): void;
  /** For tests. */
  state(): SqliteMirrorState;
}

/**
 * One story's copy, valid for `version` of the story's counter. `seenDataVersion` and `seenLocalWrites` are the
 * connection's `PRAGMA data_version` and this process's write count on the connection when the version was last
 * confirmed: while neither moved, nothing can have changed the story and the counter need not be read again.
 */
interface Mirror<Content> {
  content: Content;
  version: number;
  seenDataVersion: number;
  seenLocalWrites: number;
}

/** Creates the mirror bookkeeping of one index object; prepares its statements on `db`. */
export function createSqliteMirrors<Content>(options: SqliteMirrorsOptions<Content>): SqliteMirrors<Content> {
  const { db, table, name, read, maxStories } = options;
  const statements = {
    // The row is never deleted, so a story's counter never repeats, even across deleteStory.
    bumpVersion: db
      .prepare(
        `INSERT INTO ${table} (name, story_id, version) VALUES (?, ?, 1)
         ON CONFLICT (name, story_id) DO UPDATE SET version = version + 1 RETURNING version`,
      )
      .pluck(),
    version: db.prepare(`SELECT version FROM ${table} WHERE name = ? AND story_id = ?`).pluck(),
    dataVersion: db.prepare('PRAGMA data_version').pluck(),
  };
  let connectionWrites = localWriteCounts.get(db);
  if (!connectionWrites) {
    connectionWrites = { writes: 0 };
    localWriteCounts.set(db, connectionWrites);
  }
  const localWrites = connectionWrites;
  // `get` counts as a use; `peek` (for bookkeeping that is not a query) does not.
  const mirrors = new LRUCache<string, Mirror<Content>>({ max: maxStories });
  let loads = 0;

  const currentMirror = (storyId: string): Mirror<Content> | undefined => {
    const mirror = mirrors.get(storyId);
    if (!mirror) return undefined;
    const dataVersion = statements.dataVersion.get() as number;
    if (dataVersion === mirror.seenDataVersion && localWrites.writes === mirror.seenLocalWrites) return mirror;
    const version = (statements.version.get(name, storyId) as number | undefined) ?? 0;
    if (version !== mirror.version) {
      mirrors.delete(storyId);
      return undefined;
    }
    mirror.seenDataVersion = dataVersion;
    mirror.seenLocalWrites = localWrites.writes;
    return mirror;
  };

  const drop = (storyId: string, mirror: Mirror<Content>): void => {
    if (mirrors.peek(storyId) === mirror) mirrors.delete(storyId);
  };

  return {
    bumpVersion: (storyId) => statements.bumpVersion.get(name, storyId) as number,

    current: (storyId) => currentMirror(storyId)?.content,

    load(storyId) {
      const current = currentMirror(storyId);
      if (current) return current.content;
      const seenDataVersion = statements.dataVersion.get() as number;
      const seenLocalWrites = localWrites.writes;
      const { version, content } = db.transaction(() => ({
        version: (statements.version.get(name, storyId) as number | undefined) ?? 0,
        content: read(storyId),
      }))();
      loads++;
      if (content !== undefined) mirrors.set(storyId, { content, version, seenDataVersion, seenLocalWrites });
      return content;
    },

    writeThrough(storyId, version, apply) {
      localWrites.writes++;
      const mirror = mirrors.peek(storyId);
      if (!mirror) return;
      if (mirror.version !== version - 1) {
        mirrors.delete(storyId);
        return;
      }
      mirror.version = version;
      // Own commits do not move data_version; only the counter this write itself bumped is new.
      mirror.seenLocalWrites = localWrites.writes;
      // Both copies (the memory indexes) do their work synchronously inside the call, so the copy is updated before
      // this returns; a failure would mean it disagrees with what SQLite accepted, and then it is rebuilt from SQLite.
      let applied: unknown;
      try {
        applied = apply(mirror.content);
      } catch {
        drop(storyId, mirror);
        return;
      }
      if (applied instanceof Promise) applied.catch(() => drop(storyId, mirror));
    },

    clear: () => mirrors.clear(),

    state: () => ({ stories: [...mirrors.keys()], loads }),
  };
}

/**
 * The metadata of a stored row of the SQLite vector or keyword index, parsed and checked for the fields every reader
 * relies on, or a `StorageError` `corrupt` that names the row and says what to do. Rows were fully validated when
 * written; this catches a file damaged since (by hand, by a crash of the disk, by another program), on every path
 * that reads rows (mirror loads, fetches and queries without the mirror), instead of a `SyntaxError` or a
 * `TypeError` later.
 */
export function parseStoredMetadata(json: string, row: StoredRow): VectorMetadata {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (error) {
    throw corruptRow(row, `its metadata is not JSON (${(error as Error).message})`, error);
  }
  const problem = metadataProblem(parsed);
  if (problem !== undefined) throw corruptRow(row, `its metadata ${problem}`);
  return parsed as VectorMetadata;
}

/** Where a stored row of an index is: for the message of a `StorageError` `corrupt`. */
export interface StoredRow {
  path: string;
  kind: 'vector' | 'keyword';
  id: string;
  storyId: string;
}

/** A `StorageError` `corrupt` for a damaged row of an index. */
export function corruptRow(row: StoredRow, what: string, cause?: unknown): StorageError {
  return new StorageError(
    `"${row.path}" holds a damaged ${row.kind} record ${JSON.stringify(row.id)} in story ${JSON.stringify(row.storyId)}: ${what} (restore the file from a backup, or delete the record and index it again)`,
    { reason: 'corrupt', path: row.path, ...(cause === undefined ? {} : { cause }) },
  );
}

/** What is wrong with parsed metadata for the fields readers use, or undefined when nothing is. */
function metadataProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'is not an object';
  const metadata = value as Record<string, unknown>;
  if (typeof metadata.storyId !== 'string') return 'has no storyId';
  if (typeof metadata.type !== 'string') return 'has no type';
  if (typeof metadata.timestamp !== 'number') return 'has no timestamp';
  for (const field of ['sourceId', 'chapterId', 'text'] as const) {
    if (metadata[field] !== undefined && typeof metadata[field] !== 'string') return `has a ${field} that is not text`;
  }
  for (const field of ['importance', 'sceneIndex', 'chunk'] as const) {
    if (metadata[field] !== undefined && typeof metadata[field] !== 'number')
      return `has a ${field} that is not a number`;
  }
  for (const field of ['characters', 'locations', 'themes'] as const) {
    if (metadata[field] !== undefined && !Array.isArray(metadata[field])) return `has ${field} that are not a list`;
  }
  return undefined;
}
