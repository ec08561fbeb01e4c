/**
 * One SQLite file shared by storyloom's embedded adapters: opening, pragmas, the schema version and its forward
 * migrations, error mapping, online backup and restore. The state store, the vector index and the keyword index of
 * `storyloom/sqlite` all run on a `SqliteDatabase` from here, so one file can hold a whole story.
 *
 * better-sqlite3 is loaded lazily, through this file only, so nothing else in the package needs the native module.
 *
 * @module
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { gzipSync } from 'node:zlib';
import type BetterSqlite3 from 'better-sqlite3';
import {
  ClosedError,
  MissingDependencyError,
  SchemaVersionError,
  StorageError,
  type StorageFailure,
  ValidationError,
} from '../core/errors.js';

/** The native handle; never part of the public API, so no published `.d.ts` names better-sqlite3's types. */
export type NativeDatabase = BetterSqlite3.Database;
/** A prepared statement taking any parameters (the filter translation decides how many). */
export type NativeStatement = BetterSqlite3.Statement<unknown[], unknown>;

/**
 * The schema version this build writes and the highest it can read. Each step of `MIGRATIONS` moves a file one
 * version forward; a file with a higher version was written by a newer storyloom and is refused untouched.
 */
export const SQLITE_SCHEMA_VERSION = 5;

/** Marks a file as storyloom's (`PRAGMA application_id`, "SLOM"), so another application's database is refused. */
const APPLICATION_ID = 0x534c4f4d;

/** The 16 bytes every SQLite 3 database file starts with. */
const SQLITE_HEADER = Buffer.from('SQLite format 3\u0000', 'latin1');

/**
 * Forward migrations: entry `i` takes a file from version `i` to `i + 1`. Never edit a released entry; append one.
 * Version 1 holds everything a story needs: state, snapshots, scenes, influences, the publication log, vectors
 * and the keyword index; version 2 adds the per-partition write counters of the vector index's in-memory mirror,
 * version 3 the same counters for the keyword index's, version 4 rebuilds the keyword terms with a tokenizer that
 * keeps combining marks inside words.
 *
 * Why version 4: the stored terms are `analyze`'s output (letters, digits and marks) joined by spaces, so FTS5 must
 * split them at the spaces alone. unicode61 by default also splits at combining marks (category M: Devanagari, Arabic
 * and Thai vowel signs), so a lone consonant matched every word holding it; with marks (and private-use characters) as
 * token characters it no longer does. The table is rebuilt from its own stored terms, rowids kept; nothing else
 * changes. Version 5 keeps state snapshots gzip-compressed (`snapshots.state_gzip`): a story keeps one snapshot per
 * episode and each holds the whole state, which grows with the cast, so uncompressed they made the file grow with the
 * square of the episodes (about 7 MB of a 13 MB file at 200 episodes, 170 MB at 1,000); compressed they take about a
 * seventh. The table is rebuilt, each row compressed by `storyloom_gzip` (registered by `migrate`). (These notes sit
 * here rather than beside the entries: comments inside the array are shipped in the bundle.)
 *
 * A migration that leaves more than a quarter of the file's pages free (version 5 does, dropping the plain snapshots)
 * is followed by one VACUUM, outside its transaction (VACUUM cannot run inside one): see `compactAfterMigration`.
 */
const MIGRATIONS: ReadonlyArray<string> = [
  `
  CREATE TABLE stories (
    story_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state TEXT NOT NULL
  ) STRICT;
  CREATE TABLE snapshots (
    story_id TEXT NOT NULL REFERENCES stories(story_id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (story_id, version)
  ) STRICT;
  CREATE TABLE scenes (
    story_id TEXT NOT NULL REFERENCES stories(story_id) ON DELETE CASCADE,
    scene_id TEXT NOT NULL,
    scene_index INTEGER NOT NULL,
    chapter_id TEXT NOT NULL,
    scene TEXT NOT NULL,
    PRIMARY KEY (story_id, scene_id),
    UNIQUE (story_id, scene_index)
  ) STRICT;
  CREATE INDEX scenes_by_chapter ON scenes (story_id, chapter_id, scene_index);
  CREATE TABLE influences (
    story_id TEXT NOT NULL REFERENCES stories(story_id) ON DELETE CASCADE,
    influence_id TEXT NOT NULL,
    status TEXT NOT NULL,
    received_at TEXT NOT NULL,
    influence TEXT NOT NULL,
    PRIMARY KEY (story_id, influence_id)
  ) STRICT;
  CREATE INDEX influences_pending ON influences (story_id, status, received_at, influence_id);
  CREATE TABLE publications (
    story_id TEXT NOT NULL REFERENCES stories(story_id) ON DELETE CASCADE,
    scene_id TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (story_id, scene_id, target)
  ) STRICT;

  -- Vector and keyword metadata columns carry no type on purpose: with no affinity SQLite never converts a bound
  -- value (5 stays a number, '5' stays text), so filters compare exactly as matchesFilter does in JavaScript.
  CREATE TABLE vector_indexes (
    name TEXT PRIMARY KEY,
    dimensions INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE vectors (
    index_name TEXT NOT NULL,
    story_id TEXT NOT NULL,
    id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    metadata TEXT NOT NULL,
    type, importance, timestamp, source_id, scene_index, chapter_id, chunk, characters, locations, themes,
    UNIQUE (index_name, story_id, id)
  );
  CREATE TABLE keyword_documents (
    index_name TEXT NOT NULL,
    story_id TEXT NOT NULL,
    id TEXT NOT NULL,
    metadata TEXT NOT NULL,
    type, importance, timestamp, source_id, scene_index, chapter_id, chunk, characters, locations, themes,
    UNIQUE (index_name, story_id, id)
  );
  -- The analysed terms (see text-analysis.ts) of each keyword document, rowid = keyword_documents.rowid.
  CREATE VIRTUAL TABLE keyword_terms USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
  `,
  // Version 2: a counter per vector index partition, bumped by every write to it, so a process holding the partition
  // in memory can tell with one indexed read whether another connection changed it. Additive: a version-1 file keeps
  // all its rows, and a missing counter reads as 0.
  `
  CREATE TABLE vector_index_versions (
    name TEXT NOT NULL,
    story_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, story_id)
  ) STRICT, WITHOUT ROWID;
  `,
  // Version 3: the same counters for the keyword index's in-memory mirror. Additive, like version 2.
  `
  CREATE TABLE keyword_index_versions (
    name TEXT NOT NULL,
    story_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, story_id)
  ) STRICT, WITHOUT ROWID;
  `,
  // Version 4: see above.
  `
  ALTER TABLE keyword_terms RENAME TO keyword_terms_v3;
  CREATE VIRTUAL TABLE keyword_terms USING fts5(terms, tokenize = "unicode61 remove_diacritics 0 categories 'L* N* Co M*'");
  INSERT INTO keyword_terms (rowid, terms) SELECT rowid, terms FROM keyword_terms_v3;
  DROP TABLE keyword_terms_v3;
  `,
  `
  CREATE TABLE snapshots_v5 (
    story_id TEXT NOT NULL REFERENCES stories(story_id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    state_gzip BLOB NOT NULL,
    PRIMARY KEY (story_id, version)
  ) STRICT;
  INSERT INTO snapshots_v5 (story_id, version, state_gzip) SELECT story_id, version, storyloom_gzip(state) FROM snapshots;
  DROP TABLE snapshots;
  ALTER TABLE snapshots_v5 RENAME TO snapshots;
  `,
];

/**
 * Options of `openSqliteDatabase`.
 *
 * @example
 * ```ts
 * import { openSqliteDatabase, type SqliteDatabaseOptions } from 'storyloom/sqlite';
 * const options: SqliteDatabaseOptions = { path: 'story.db', busyTimeoutMs: 10_000 };
 * const database = openSqliteDatabase(options);
 * ```
 */
export interface SqliteDatabaseOptions {
  /**
   * The database file, created when absent; `:memory:` for a private in-memory database. A path that starts or ends
   * with white space is refused (`ValidationError`): better-sqlite3 would trim it and open another file.
   */
  path: string;
  /** Open without writing: every write fails with `StorageError` (`readOnly`), and the file is never migrated. */
  readonly?: boolean;
  /** Refuse to create the file when it does not exist (`StorageError`, `cannotOpen`). Default false. */
  fileMustExist?: boolean;
  /** How long a write waits for another process's write lock before failing with `busy`. Default 10,000 ms. */
  busyTimeoutMs?: number;
  /**
   * Run `PRAGMA quick_check` when the file is opened, so a damaged file is refused at once instead of failing halfway
   * through some later read. It reads the whole file (about a second per gigabyte). Default true.
   */
  checkOnOpen?: boolean;
}

/**
 * An open storyloom SQLite file. Hand it to several adapters (`{ database }`) to keep state, vectors and keywords
 * in one file; an adapter given a database never closes it, its owner does.
 *
 * @example
 * ```ts
 * import { createSqliteKeywordIndex, createSqliteStateStore, createSqliteVectorIndex, openSqliteDatabase } from 'storyloom/sqlite';
 *
 * const database = openSqliteDatabase({ path: 'my-story.db' });
 * const store = createSqliteStateStore({ database });
 * const vectors = createSqliteVectorIndex({ database, dimensions: 1536 });
 * const keywords = createSqliteKeywordIndex({ database });
 * // ... and when the process is done:
 * database.close();
 * ```
 */
export interface SqliteDatabase {
  /** The file path as given. */
  readonly path: string;
  /** The schema version of the file (after migrations: `SQLITE_SCHEMA_VERSION`). */
  readonly schemaVersion: number;
  readonly readonly: boolean;
  /** Whether `close()` has been called. */
  readonly closed: boolean;
  /**
   * Copies the database, consistently and while it stays in use, to `toPath` (SQLite's online backup). The copy is
   * a complete, standalone file; open it with `openSqliteDatabase` or restore it with `restoreSqliteBackup`. It
   * finishes even while other processes keep committing to the file. A missing folder is a `StorageError`
   * (`cannotOpen`); a path that starts or ends with white space a `ValidationError`; a database closed before or
   * during the copy a `ClosedError`.
   */
  backup(toPath: string): Promise<void>;
  /** `PRAGMA integrity_check`: `['ok']` for a sound file, else the problems SQLite found. `ClosedError` once closed. */
  integrityCheck(): string[];
  /** Closes the file. Adapters built on it fail with `ClosedError` afterwards. Safe to call twice. */
  close(): void;
}

interface DatabaseInternals {
  native: NativeDatabase;
  vectorExtensionLoaded: boolean;
}

const internals = new WeakMap<SqliteDatabase, DatabaseInternals>();

/**
 * The internals of a database opened here. A closed one is refused with `ClosedError` at once: an adapter created on
 * it would otherwise fail with better-sqlite3's bare TypeError, or, loading sqlite-vec, as a missing package.
 */
function internalsOf(database: SqliteDatabase): DatabaseInternals {
  const found = internals.get(database);
  if (!found) throw new TypeError('database must come from openSqliteDatabase');
  if (!found.native.open) throw new ClosedError(`The SQLite database "${database.path}" is closed`);
  return found;
}

/** The native handle of an open database opened here (else `ClosedError`). Not exported from the entry. */
export function nativeOf(database: SqliteDatabase): NativeDatabase {
  return internalsOf(database).native;
}

// Resolved from this file, so the user's installed copy is found. The CommonJS build has `__filename`; the ESM build
// has `import.meta.url`. A bare `require` would not do: the ESM bundle replaces it with a stub that throws. The
// native module is only loaded when a SQLite adapter is first created, so importing `storyloom/sqlite` never fails.
const requireOptional: NodeRequire = createRequire(typeof __filename === 'string' ? __filename : import.meta.url);

function loadOptional<T>(packageName: string, feature: string): T {
  try {
    return requireOptional(packageName) as T;
  } catch (cause) {
    const code = (cause as { code?: string }).code;
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') {
      throw new MissingDependencyError(packageName, feature, { cause });
    }
    // Installed but unloadable (built for another Node ABI, say): say so rather than "not installed".
    throw new MissingDependencyError(packageName, `${feature} (the installed copy failed to load: ${String(cause)})`, {
      cause,
    });
  }
}

/** Loads sqlite-vec into the connection once; the vector index needs its distance functions. */
export function ensureVectorExtension(database: SqliteDatabase): void {
  const found = internalsOf(database);
  if (found.vectorExtensionLoaded) return;
  const sqliteVec = loadOptional<{ load(db: NativeDatabase): void }>('sqlite-vec', 'The SQLite vector index');
  try {
    sqliteVec.load(found.native);
  } catch (cause) {
    throw new MissingDependencyError('sqlite-vec', 'The SQLite vector index (its extension failed to load)', { cause });
  }
  found.vectorExtensionLoaded = true;
}

/**
 * Opens (creating when absent) a storyloom SQLite file: checks it is a SQLite database, refuses one written by a
 * newer schema, applies forward migrations, and sets WAL mode with `synchronous = FULL`.
 *
 * Why FULL and not NORMAL: in WAL mode NORMAL survives a process crash but may lose the last commits on power loss.
 * A story commits one scene per episode, so the extra fsync per commit costs nothing noticeable and a committed
 * scene is never lost.
 *
 * Throws `StorageError` (`cannotOpen`, `notADatabase`, `corrupt`, `readOnly`), `SchemaVersionError`, or
 * `MissingDependencyError` when better-sqlite3 is not installed. A refused file is never written.
 *
 * @example
 * ```ts
 * import { openSqliteDatabase } from 'storyloom/sqlite';
 * const database = openSqliteDatabase({ path: 'my-story.db' });
 * await database.backup('my-story.backup.db');
 * database.close();
 * ```
 */
export function openSqliteDatabase(options: SqliteDatabaseOptions): SqliteDatabase {
  return openDatabase(options, false);
}

/**
 * `openSqliteDatabase`, and for `restoreSqliteBackup` alone, `readsOlder`: a read-only open that accepts a file of an
 * older schema version (version 1 and up) as it is, unmigrated, to be copied and then migrated in the copy. Such a
 * handle must never reach an adapter, which expects the current tables.
 */
function openDatabase(options: SqliteDatabaseOptions, readsOlder: boolean): SqliteDatabase {
  const problem = typeof options === 'object' && options !== null ? pathProblem(options.path) : 'must be a string';
  if (problem !== undefined) {
    throw new ValidationError(`openSqliteDatabase needs { path }: a file path, or ":memory:" (path ${problem})`, {
      problems: [{ path: 'options.path', message: problem }],
    });
  }
  const { path } = options;
  const readonly = options.readonly === true;
  const inMemory = path === ':memory:';
  if (!inMemory) checkFileBeforeOpening(path);
  const Database = loadOptional<typeof BetterSqlite3>('better-sqlite3', 'The SQLite adapters of storyloom');
  let native: NativeDatabase;
  try {
    native = new Database(path, {
      readonly,
      fileMustExist: options.fileMustExist === true || readonly,
      timeout: options.busyTimeoutMs ?? 10_000,
    });
  } catch (cause) {
    const mapped = toStorageError(cause, path, `Cannot open the SQLite file "${path}"`);
    if (StorageError.isInstance(mapped)) throw mapped;
    // better-sqlite3 reports a missing folder or a missing file (fileMustExist) as a plain TypeError.
    throw new StorageError(`Cannot open the SQLite file "${path}": ${(cause as Error).message}`, {
      reason: 'cannotOpen',
      path,
      cause,
    });
  }
  try {
    // Reads only, up to the migration: a refused file must come out byte for byte as it went in.
    const fileVersion = readVersion(native, path);
    if (fileVersion > SQLITE_SCHEMA_VERSION) {
      throw new SchemaVersionError(
        `"${path}" has schema version ${fileVersion}, written by a newer storyloom; this version reads up to ${SQLITE_SCHEMA_VERSION}. Upgrade storyloom to open it; the file was not changed.`,
        { fileVersion, supportedVersion: SQLITE_SCHEMA_VERSION, path },
      );
    }
    if (options.checkOnOpen !== false && !inMemory) {
      const problems = runIntegrityCheck(native, 'quick_check');
      if (problems[0] !== 'ok') {
        throw new StorageError(`"${path}" is a damaged SQLite file: ${problems.slice(0, 3).join('; ')}`, {
          reason: 'corrupt',
          path,
        });
      }
    }
    if (fileVersion < SQLITE_SCHEMA_VERSION && readonly && !(readsOlder && fileVersion > 0)) {
      throw new StorageError(
        `"${path}" has schema version ${fileVersion} and needs migrating to ${SQLITE_SCHEMA_VERSION}, which a read-only open cannot do`,
        { reason: 'readOnly', path },
      );
    }
    if (!readonly) {
      native.pragma('journal_mode = WAL');
      native.pragma('synchronous = FULL');
    }
    native.pragma('foreign_keys = ON');
    if (fileVersion < SQLITE_SCHEMA_VERSION && !readonly && migrate(native, path) && !inMemory) {
      compactAfterMigration(native);
    }
  } catch (error) {
    native.close();
    if (SchemaVersionError.isInstance(error) || StorageError.isInstance(error)) throw error;
    throw toStorageError(error, path, `Cannot open the SQLite file "${path}"`);
  }

  const database: SqliteDatabase = {
    path,
    schemaVersion: SQLITE_SCHEMA_VERSION,
    readonly,
    get closed() {
      return !native.open;
    },
    async backup(toPath: string) {
      checkFilePath(toPath, 'toPath', 'backup');
      const closed = (cause?: unknown) =>
        new ClosedError(`Cannot back up "${path}": the SQLite database is closed`, { cause });
      if (!native.open) throw closed();
      try {
        await copyOnline(native, toPath);
      } catch (cause) {
        // better-sqlite3 reports a close during the copy, and a missing folder, as bare TypeErrors.
        if (!native.open) throw closed(cause);
        if (!existsSync(dirname(toPath))) {
          throw new StorageError(`Backup of "${path}" to "${toPath}" failed: its folder does not exist`, {
            reason: 'cannotOpen',
            path: toPath,
            cause,
          });
        }
        throw toStorageError(cause, toPath, `Backup of "${path}" to "${toPath}" failed`);
      }
    },
    integrityCheck() {
      if (!native.open) throw new ClosedError(`Cannot check "${path}": the SQLite database is closed`);
      return runIntegrityCheck(native, 'integrity_check');
    },
    close() {
      if (native.open) native.close();
    },
  };
  internals.set(database, { native, vectorExtensionLoaded: false });
  return database;
}

/**
 * Restores a backup made with `backup()`: checks that `fromPath` is a sound storyloom file this version can read,
 * then copies it to `toPath` with SQLite's backup API (never a plain file copy, which could tear a file in use).
 * `toPath` must not exist, so a restore never overwrites a story by mistake. A backup written by an older storyloom
 * is read as it is, never written, and the copy is migrated to the current schema version; one written by a newer
 * storyloom is refused (`SchemaVersionError`), and so is a damaged one (`StorageError`, `corrupt`). A path that
 * starts or ends with white space is a `ValidationError`: better-sqlite3 would trim it, and the restore would write
 * over the file without the spaces, which the check above never looked at.
 *
 * @example
 * ```ts
 * import { createSqliteStateStore, restoreSqliteBackup } from 'storyloom/sqlite';
 * await restoreSqliteBackup('backups/my-story-monday.db', 'my-story-restored.db');
 * const store = createSqliteStateStore({ path: 'my-story-restored.db' });
 * ```
 */
export async function restoreSqliteBackup(fromPath: string, toPath: string): Promise<void> {
  checkFilePath(fromPath, 'fromPath', 'restoreSqliteBackup');
  checkFilePath(toPath, 'toPath', 'restoreSqliteBackup');
  if (existsSync(toPath)) {
    throw new StorageError(`Cannot restore to "${toPath}": the file exists; restore to a new path`, {
      reason: 'cannotOpen',
      path: toPath,
    });
  }
  const source = openDatabase({ path: fromPath, readonly: true, checkOnOpen: false }, true);
  try {
    const problems = source.integrityCheck();
    if (problems[0] !== 'ok') {
      throw new StorageError(`The backup "${fromPath}" is damaged: ${problems.slice(0, 3).join('; ')}`, {
        reason: 'corrupt',
        path: fromPath,
      });
    }
    await source.backup(toPath);
  } finally {
    source.close();
  }
  // Opening the copy puts it in WAL mode, like every file this module writes, and migrates it.
  openSqliteDatabase({ path: toPath, fileMustExist: true }).close();
}

/**
 * What is wrong with a path given for a file, if anything. better-sqlite3 trims the file names it is given (opening
 * and backing up), while the checks here (does the file exist, is it a SQLite file) look at the name as given: with
 * "story.db " they would check one file and SQLite would write another, and " " would open an anonymous temporary
 * database instead of a file. So a path whose ends are white space is refused rather than trimmed.
 */
function pathProblem(path: unknown): string | undefined {
  if (typeof path !== 'string' || path === '') return 'must be a non-empty string';
  if (path.trim() !== path) return 'must not start or end with white space';
  return undefined;
}

/** Refuses (`ValidationError`) a path that cannot name a file to write: see `pathProblem`, and `:memory:`. */
function checkFilePath(path: unknown, label: string, operation: string): void {
  const problem = path === ':memory:' ? 'must be a file path, not ":memory:"' : pathProblem(path);
  if (problem !== undefined) {
    throw new ValidationError(`${operation} needs a file path: ${label} ${problem}`, {
      problems: [{ path: label, message: problem }],
    });
  }
}

/** Pages an online backup copies per step while nothing else writes: the event loop runs between steps. */
const BACKUP_PAGES_PER_STEP = 100;
/** The most pages better-sqlite3 copies in one step: the whole file. */
const WHOLE_FILE_STEP = 0x7fffffff;

/**
 * SQLite's online backup, made to finish while other connections keep committing. SQLite starts a backup over from
 * page 1 whenever another connection changes the file between two steps, so in steps of 100 pages, with another
 * process committing a scene every few milliseconds, a backup of a large file started over forever. The copy goes in
 * steps while the file stays quiet, so the event loop keeps running during a long backup; after the first restart
 * (fewer pages copied than after the step before) the rest goes in one step, which holds one read transaction until
 * it is done: no commit can restart it, and in WAL mode the writers do not wait for it. (Copying the whole file in one
 * step from the start would also finish, but would block this process's event loop for the whole copy every time.)
 */
function copyOnline(native: NativeDatabase, toPath: string): Promise<unknown> {
  let copiedBefore = -1;
  return native.backup(toPath, {
    progress({ totalPages, remainingPages }) {
      const copied = totalPages - remainingPages;
      if (copied <= copiedBefore) return WHOLE_FILE_STEP;
      copiedBefore = copied;
      return BACKUP_PAGES_PER_STEP;
    },
  });
}

/**
 * Refuses, before SQLite touches it, a path that is a directory or a non-empty file that does not start with the
 * SQLite header: SQLite would only notice on the first read, and a text file must never be turned into a database.
 */
function checkFileBeforeOpening(path: string): void {
  let size: number;
  try {
    const stats = statSync(path);
    if (stats.isDirectory()) {
      throw new StorageError(`Cannot open "${path}": it is a directory, not a SQLite file`, {
        reason: 'cannotOpen',
        path,
      });
    }
    size = stats.size;
  } catch (error) {
    if (StorageError.isInstance(error)) throw error;
    if ((error as { code?: string }).code === 'ENOENT') return; // created by SQLite, if its folder exists
    throw toStorageError(error, path, `Cannot open "${path}"`);
  }
  if (size === 0) return; // an empty file is a valid, empty SQLite database
  const header = Buffer.alloc(SQLITE_HEADER.length);
  let read = 0;
  try {
    const descriptor = openSync(path, 'r');
    try {
      read = readSync(descriptor, header, 0, header.length, 0);
    } finally {
      closeSync(descriptor);
    }
  } catch (error) {
    throw toStorageError(error, path, `Cannot read "${path}"`);
  }
  if (read < header.length || !header.equals(SQLITE_HEADER)) {
    throw new StorageError(`"${path}" is not a SQLite database (it does not start with the SQLite header)`, {
      reason: 'notADatabase',
      path,
    });
  }
}

/**
 * The file's schema version, read without writing; a file that is not storyloom's is refused. Every file storyloom
 * has written holds a version of 1 or more and its application id, both set by the same migration transaction, so a
 * file with a version but not the id (another application that uses `user_version` too), or with a negative
 * version, belongs to someone else: it is refused here, before the pragmas that follow would write to it.
 */
function readVersion(native: NativeDatabase, path: string): number {
  const version = native.pragma('user_version', { simple: true }) as number;
  const applicationId = native.pragma('application_id', { simple: true }) as number;
  if (applicationId !== 0 && applicationId !== APPLICATION_ID) {
    throw new StorageError(`"${path}" is another application's SQLite database (application_id ${applicationId})`, {
      reason: 'notADatabase',
      path,
    });
  }
  if (version < 0 || (version > 0 && applicationId !== APPLICATION_ID)) {
    throw new StorageError(
      `"${path}" is a SQLite database but not a storyloom one (user_version ${version} without storyloom's application_id)`,
      { reason: 'notADatabase', path },
    );
  }
  if (version === 0) {
    // A brand-new file has no tables; one that has tables but no storyloom version belongs to someone else.
    const tables = native.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table'").get() as {
      n: number;
    };
    if (tables.n > 0) {
      throw new StorageError(`"${path}" is a SQLite database but not a storyloom one (it has tables but no version)`, {
        reason: 'notADatabase',
        path,
      });
    }
  }
  return version;
}

/** Applies the missing migrations; true when this connection applied any (another process may have come first). */
function migrate(native: NativeDatabase, path: string): boolean {
  native.function('storyloom_gzip', { deterministic: true }, (text) => gzipSync(String(text)));
  // IMMEDIATE: two processes opening a new file at once must not both run the migration; the second waits, then
  // sees the version the first wrote and has nothing left to do.
  return native
    .transaction(() => {
      let version = native.pragma('user_version', { simple: true }) as number;
      if (version > SQLITE_SCHEMA_VERSION) {
        throw new SchemaVersionError(
          `"${path}" was upgraded to schema version ${version} by a newer storyloom while opening`,
          { fileVersion: version, supportedVersion: SQLITE_SCHEMA_VERSION, path },
        );
      }
      const migrated = version < SQLITE_SCHEMA_VERSION;
      for (; version < SQLITE_SCHEMA_VERSION; version++) native.exec(MIGRATIONS[version]!);
      native.pragma(`application_id = ${APPLICATION_ID}`);
      native.pragma(`user_version = ${SQLITE_SCHEMA_VERSION}`);
      return migrated;
    })
    .immediate();
}

/**
 * Compacts the file once after a migration that left more than a quarter of its pages free (version 5 frees the
 * plain snapshots, most of a long story's file), so the upgrade does not leave the file larger than it was. Best
 * effort: VACUUM needs the write lock, and when another process holds it past the busy timeout VACUUM fails
 * (SQLITE_BUSY) and changes nothing; the file stays migrated and whole, and later writes reuse the free pages. The
 * checkpoint moves the rewritten pages out of the WAL and truncates it, so the disk space comes back now rather than
 * when the last connection closes (it waits for other processes' reads, at most the busy timeout, and never fails).
 */
function compactAfterMigration(native: NativeDatabase): void {
  try {
    const free = native.pragma('freelist_count', { simple: true }) as number;
    if (free * 4 <= (native.pragma('page_count', { simple: true }) as number)) return;
    native.exec('VACUUM');
    native.pragma('wal_checkpoint(TRUNCATE)');
  } catch {
    // Not compacted this time; see above.
  }
}

function runIntegrityCheck(native: NativeDatabase, pragma: 'quick_check' | 'integrity_check'): string[] {
  const rows = native.pragma(pragma) as Array<Record<string, string>>;
  return rows.map((row) => Object.values(row)[0] ?? '');
}

/** SQLite result codes (primary, the low byte of an extended code) and what they mean for a caller. */
const FAILURES: Readonly<Record<string, StorageFailure>> = {
  SQLITE_CANTOPEN: 'cannotOpen',
  SQLITE_PERM: 'cannotOpen',
  SQLITE_AUTH: 'cannotOpen',
  SQLITE_NOTADB: 'notADatabase',
  SQLITE_CORRUPT: 'corrupt',
  SQLITE_READONLY: 'readOnly',
  SQLITE_BUSY: 'busy',
  SQLITE_LOCKED: 'busy',
  EACCES: 'cannotOpen',
  EPERM: 'cannotOpen',
  ENOENT: 'cannotOpen',
  EISDIR: 'cannotOpen',
  ENOTDIR: 'cannotOpen',
};

/**
 * `toStorageError` for a statement on an open database, and a `SchemaVersionError` when it failed because a newer
 * storyloom migrated the file while this connection had it open (its tables are no longer the ones this version
 * knows: "no such table", "no such column"), so the process is told to upgrade rather than that storage failed.
 */
export function statementError(database: SqliteDatabase, error: unknown, context: string): Error {
  if ((error as { code?: unknown } | null)?.code === 'SQLITE_ERROR' && !database.closed) {
    let fileVersion = 0;
    try {
      fileVersion = nativeOf(database).pragma('user_version', { simple: true }) as number;
    } catch {
      // Unreadable: reported as the statement's own failure below.
    }
    if (fileVersion > SQLITE_SCHEMA_VERSION) {
      return new SchemaVersionError(
        `"${database.path}" was upgraded to schema version ${fileVersion} by a newer storyloom while this process had it open (this version reads up to ${SQLITE_SCHEMA_VERSION}); restart the process with the newer storyloom`,
        { fileVersion, supportedVersion: SQLITE_SCHEMA_VERSION, path: database.path, cause: error },
      );
    }
  }
  return toStorageError(error, database.path, context);
}

/** Maps a better-sqlite3 or file-system error to a `StorageError`, or returns the error when it is neither. */
export function toStorageError(error: unknown, path: string, context: string): Error {
  if (StorageError.isInstance(error) || SchemaVersionError.isInstance(error)) return error;
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== 'string') return error instanceof Error ? error : new Error(String(error));
  const primary = code.startsWith('SQLITE_') ? code.split('_').slice(0, 2).join('_') : code;
  const reason = FAILURES[primary] ?? (code.startsWith('SQLITE_') ? 'io' : undefined);
  if (reason === undefined) return error as Error;
  const detail = (error as Error).message;
  const hint: Record<StorageFailure, string> = {
    cannotOpen: 'check that the folder exists and the process may read and write it',
    notADatabase: 'the file is not a SQLite database',
    corrupt: 'the file is damaged; restore it from a backup',
    readOnly: 'the file or the store is read-only',
    busy: 'another process holds the write lock; retry',
    io: 'the storage engine failed',
  };
  return new StorageError(`${context}: ${detail} (${hint[reason]})`, { reason, path, cause: error });
}
