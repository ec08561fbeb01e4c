/**
 * The SQLite `StoryStateStore`: a story in one durable file on the user's disk, with no network and no credentials.
 * Every commit is one `BEGIN IMMEDIATE` transaction, so version-conditional commits hold across every process that
 * opens the same file.
 *
 * @module
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import { ClosedError, ConflictError, NotFoundError, StorageError, ValidationError } from '../core/errors.js';
import {
  BaseStateStore,
  type BaseStateStoreOptions,
  misplacedScene,
  missingSnapshot,
  type PreparedCommit,
  type SceneQuery,
  type StoryBundle,
  staleVersion,
} from './base-store.js';
import type { Scene, StoryState, UserInfluence } from './schema.js';
import {
  type NativeDatabase,
  nativeOf,
  openSqliteDatabase,
  type SqliteDatabase,
  type SqliteDatabaseOptions,
  statementError,
} from './sqlite-database.js';
import type {
  CommitResult,
  EnqueueResult,
  PublicationEntry,
  RecordPublicationResult,
  StoryStateStoreCapabilities,
} from './store.js';

/**
 * Options of `createSqliteStateStore`: a file to open (`path`, with the options of `openSqliteDatabase`), or an
 * already open `database` shared with the SQLite vector and keyword indexes.
 *
 * @example
 * ```ts
 * import { createSqliteStateStore, type SqliteStateStoreOptions } from 'storyloom/sqlite';
 * const options: SqliteStateStoreOptions = { path: 'my-story.db' };
 * const store = createSqliteStateStore(options);
 * ```
 */
export type SqliteStateStoreOptions = BaseStateStoreOptions &
  (
    | ({ path: string; database?: undefined } & Omit<SqliteDatabaseOptions, 'path'>)
    | { database: SqliteDatabase; path?: undefined }
  );

/** A `StoryStateStore` on SQLite, with `backup` for online copies of its file. */
export interface SqliteStateStore extends BaseStateStore {
  /** The open file; share it with `createSqliteVectorIndex({ database })` and `createSqliteKeywordIndex`. */
  readonly database: SqliteDatabase;
  /** An online, consistent copy of the whole file (every story, vectors and keywords included) at `toPath`. */
  backup(toPath: string): Promise<void>;
}

/** Which stored records `parse` reads, and what a sound one holds at least (what readers take for granted). */
const SHAPES = {
  state: (value: Record<string, unknown>) =>
    typeof value.storyId === 'string' &&
    Number.isInteger(value.version) &&
    typeof value.characters === 'object' &&
    value.characters !== null &&
    Array.isArray(value.plotThreads) &&
    typeof value.bible === 'object' &&
    value.bible !== null,
  scene: (value: Record<string, unknown>) =>
    typeof value.id === 'string' &&
    Number.isInteger(value.index) &&
    typeof value.text === 'string' &&
    Array.isArray(value.characters),
  influence: (value: Record<string, unknown>) => typeof value.id === 'string' && typeof value.storyId === 'string',
  publication: (value: Record<string, unknown>) => typeof value.target === 'string',
} as const;

/**
 * A stored record, parsed; a `StorageError` `corrupt` when its JSON does not parse or lacks what readers rely on (a
 * damaged row was a TypeError deep in a reader, or the wrong state).
 */
function parseRecord<T>(json: string, kind: keyof typeof SHAPES, path: string): T {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (cause) {
    throw damaged(kind, path, 'its JSON does not parse', cause);
  }
  if (typeof value !== 'object' || value === null || !SHAPES[kind](value as Record<string, unknown>)) {
    throw damaged(kind, path, 'it lacks fields every record of its kind has');
  }
  return value as T;
}

/** A row of `snapshots`: the state as gzip-compressed JSON. */
interface SnapshotRow {
  state_gzip: Uint8Array;
}

function damaged(kind: string, path: string, what: string, cause?: unknown): StorageError {
  return new StorageError(`"${path}" holds a damaged ${kind} record: ${what} (restore the file from a backup)`, {
    reason: 'corrupt',
    path,
    ...(cause === undefined ? {} : { cause }),
  });
}

class SqliteStateStoreImpl extends BaseStateStore implements SqliteStateStore {
  readonly provider = 'sqlite';
  readonly capabilities: StoryStateStoreCapabilities = { multiProcess: true, durable: true };
  readonly database: SqliteDatabase;
  private readonly ownsDatabase: boolean;
  /** Set by `close()`: a store on a shared database stops too, though the database stays open for the others. */
  private closed = false;
  private readonly db: NativeDatabase;
  private readonly statements: ReturnType<typeof prepareStatements>;

  constructor(options: SqliteStateStoreOptions) {
    super(options);
    if (options.database !== undefined) {
      this.database = options.database;
      this.ownsDatabase = false;
    } else {
      this.database = openSqliteDatabase(options);
      this.ownsDatabase = true;
    }
    this.db = nativeOf(this.database);
    this.statements = prepareStatements(this.db);
  }

  // Async, so a closed store's refusal is a rejection like every other failure of a backup, not a throw.
  async backup(toPath: string): Promise<void> {
    this.open('back up');
    return this.database.backup(toPath);
  }

  protected async readState(storyId: string): Promise<StoryState | null> {
    const row = this.run(() => this.statements.readState.get(storyId)) as { state: string } | undefined;
    return row ? this.parse<StoryState>(row.state, 'state') : null;
  }

  protected async insertStory(bundle: StoryBundle): Promise<void> {
    const s = this.statements;
    const storyId = bundle.state.storyId;
    this.write(() => {
      if (s.readState.get(storyId)) throw new ConflictError(`Story "${storyId}" already exists`);
      s.insertStory.run(storyId, bundle.state.version, JSON.stringify(bundle.state));
      for (const snapshot of bundle.snapshots) s.insertSnapshot.run(storyId, snapshot.version, snapshot.gzip);
      for (const scene of bundle.scenes) {
        s.insertScene.run(storyId, scene.id, scene.index, scene.chapterId, JSON.stringify(scene));
      }
      for (const influence of bundle.influences) {
        s.insertInfluence.run(storyId, influence.id, influence.status, influence.receivedAt, JSON.stringify(influence));
      }
      for (const entry of bundle.publications) {
        s.insertPublication.run(storyId, entry.sceneId, entry.target, entry.status, JSON.stringify(entry));
      }
    });
  }

  protected async writeCommit(storyId: string, commit: PreparedCommit): Promise<CommitResult> {
    const s = this.statements;
    // One IMMEDIATE transaction takes the file's write lock before reading, so the checks below and the writes
    // after them are one step for every process sharing the file.
    return this.write(() => {
      const existing = s.readScene.get(storyId, commit.scene.id) as { scene: string } | undefined;
      if (existing) {
        const scene = this.parse<Scene>(existing.scene, 'scene');
        const snapshot = s.readSnapshot.get(storyId, scene.stateVersion) as SnapshotRow | undefined;
        if (!snapshot) throw missingSnapshot(storyId, scene);
        return { scene, state: this.snapshot(snapshot), created: false };
      }
      const current = s.readVersion.get(storyId) as { version: number } | undefined;
      if (!current) throw new ConflictError(`Story "${storyId}" does not exist (deleted while in use?)`);
      if (current.version !== commit.expectedVersion) {
        throw staleVersion(storyId, commit.expectedVersion, current.version);
      }
      // Scenes are numbered without a gap: the one before must be there (an index lookup, where reading the state's
      // count would parse its JSON), and the insert below refuses an index already taken.
      if (commit.scene.index > 0 && !s.hasSceneAt.get(storyId, commit.scene.index - 1)) {
        throw misplacedScene(storyId, commit.scene.index);
      }
      for (const influence of commit.resolvedInfluences) {
        const row = s.readInfluenceStatus.get(storyId, influence.id) as { status: string } | undefined;
        if (row?.status !== 'pending') throw new ConflictError(`Influence "${influence.id}" is no longer pending`);
      }
      const { scene, nextState } = commit;
      try {
        s.insertScene.run(storyId, scene.id, scene.index, scene.chapterId, JSON.stringify(scene));
      } catch (error) {
        // The index is taken: a misplaced scene, as the check above says of a gap, not a storage failure.
        if ((error as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
          throw misplacedScene(storyId, scene.index);
        }
        throw error;
      }
      s.updateState.run(nextState.version, JSON.stringify(nextState), storyId);
      s.insertSnapshot.run(storyId, nextState.version, gzipSync(JSON.stringify(nextState)));
      for (const influence of commit.resolvedInfluences) {
        s.updateInfluence.run(influence.status, JSON.stringify(influence), storyId, influence.id);
      }
      return { scene: structuredClone(scene), state: structuredClone(nextState), created: true };
    });
  }

  protected async readScenes(storyId: string, query: SceneQuery): Promise<Scene[]> {
    const ascending = query.order === 'asc';
    const bound = query.afterIndex ?? (ascending ? -1 : Number.MAX_SAFE_INTEGER);
    const statement =
      query.chapterId === undefined
        ? ascending
          ? this.statements.scenesAsc
          : this.statements.scenesDesc
        : ascending
          ? this.statements.chapterScenesAsc
          : this.statements.chapterScenesDesc;
    const args =
      query.chapterId === undefined ? [storyId, bound, query.limit] : [storyId, query.chapterId, bound, query.limit];
    const rows = this.run(() => statement.all(...args)) as Array<{ scene: string }>;
    return rows.map((row) => this.parse<Scene>(row.scene, 'scene'));
  }

  protected async readScene(storyId: string, sceneId: string): Promise<Scene | null> {
    const row = this.run(() => this.statements.readScene.get(storyId, sceneId)) as { scene: string } | undefined;
    return row ? this.parse<Scene>(row.scene, 'scene') : null;
  }

  protected async readSnapshot(storyId: string, version: number): Promise<StoryState | null> {
    const row = this.run(() => this.statements.readSnapshot.get(storyId, version)) as SnapshotRow | undefined;
    return row ? this.snapshot(row) : null;
  }

  protected async insertInfluence(influence: UserInfluence): Promise<EnqueueResult> {
    const s = this.statements;
    return this.write(() => {
      if (!s.readVersion.get(influence.storyId)) throw new NotFoundError(`Story "${influence.storyId}" does not exist`);
      const result = s.insertInfluenceIfAbsent.run(
        influence.storyId,
        influence.id,
        influence.status,
        influence.receivedAt,
        JSON.stringify(influence),
      );
      if (result.changes === 1) return { inserted: true, influence: structuredClone(influence) };
      const stored = s.readInfluence.get(influence.storyId, influence.id) as { influence: string };
      return { inserted: false, influence: this.parse<UserInfluence>(stored.influence, 'influence') };
    });
  }

  protected async readPendingInfluences(storyId: string, limit: number): Promise<UserInfluence[]> {
    const rows = this.run(() => this.statements.pendingInfluences.all(storyId, limit)) as Array<{ influence: string }>;
    return rows.map((row) => this.parse<UserInfluence>(row.influence, 'influence'));
  }

  protected async readInfluence(storyId: string, influenceId: string): Promise<UserInfluence | null> {
    const row = this.run(() => this.statements.readInfluence.get(storyId, influenceId)) as
      | { influence: string }
      | undefined;
    return row ? this.parse<UserInfluence>(row.influence, 'influence') : null;
  }

  protected async readAllInfluences(storyId: string): Promise<UserInfluence[]> {
    const rows = this.run(() => this.statements.allInfluences.all(storyId)) as Array<{ influence: string }>;
    return rows.map((row) => this.parse<UserInfluence>(row.influence, 'influence'));
  }

  protected async writePublication(entry: PublicationEntry): Promise<RecordPublicationResult> {
    const s = this.statements;
    return this.write(() => {
      if (!s.readVersion.get(entry.storyId)) throw new NotFoundError(`Story "${entry.storyId}" does not exist`);
      const existing = s.readPublication.get(entry.storyId, entry.sceneId, entry.target) as
        | { status: string; entry: string }
        | undefined;
      if (existing && existing.status !== 'failed') {
        return { recorded: false, entry: this.parse<PublicationEntry>(existing.entry, 'publication') };
      }
      if (existing)
        s.updatePublication.run(entry.status, JSON.stringify(entry), entry.storyId, entry.sceneId, entry.target);
      else s.insertPublication.run(entry.storyId, entry.sceneId, entry.target, entry.status, JSON.stringify(entry));
      return { recorded: true, entry: structuredClone(entry) };
    });
  }

  protected async readPublications(storyId: string, sceneId: string): Promise<PublicationEntry[]> {
    const rows = this.run(() => this.statements.scenePublications.all(storyId, sceneId)) as Array<{ entry: string }>;
    return rows.map((row) => this.parse<PublicationEntry>(row.entry, 'publication'));
  }

  protected async readAllPublications(storyId: string): Promise<PublicationEntry[]> {
    const rows = this.run(() => this.statements.allPublications.all(storyId)) as Array<{ entry: string }>;
    return rows.map((row) => this.parse<PublicationEntry>(row.entry, 'publication'));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.ownsDatabase) this.database.close();
  }

  private open(operation: string): void {
    if (this.closed || this.database.closed) {
      throw new ClosedError(`Cannot ${operation}: the SQLite state store is closed`);
    }
  }

  private parse<T>(json: string, kind: keyof typeof SHAPES): T {
    return parseRecord<T>(json, kind, this.database.path);
  }

  /** A stored snapshot: gzip-compressed JSON (schema version 5). */
  private snapshot(row: SnapshotRow): StoryState {
    let json: string;
    try {
      json = gunzipSync(row.state_gzip).toString('utf8');
    } catch (cause) {
      throw damaged('state', this.database.path, 'its compressed snapshot does not inflate', cause);
    }
    return this.parse<StoryState>(json, 'state');
  }

  /** Runs a read, mapping SQLite failures to typed errors. */
  private run<T>(body: () => T): T {
    this.open('read');
    try {
      return body();
    } catch (error) {
      throw statementError(this.database, error, 'SQLite read failed');
    }
  }

  /** Runs `body` in one IMMEDIATE transaction: all of it is written, or none of it. */
  private write<T>(body: () => T): T {
    this.open('write');
    try {
      return this.db.transaction(body).immediate();
    } catch (error) {
      throw statementError(this.database, error, 'SQLite write failed');
    }
  }
}

function prepareStatements(db: NativeDatabase) {
  const p = (sql: string) => db.prepare(sql);
  return {
    readState: p('SELECT state FROM stories WHERE story_id = ?'),
    readVersion: p('SELECT version FROM stories WHERE story_id = ?'),
    hasSceneAt: p('SELECT 1 FROM scenes WHERE story_id = ? AND scene_index = ?'),
    insertStory: p('INSERT INTO stories (story_id, version, state) VALUES (?, ?, ?)'),
    updateState: p('UPDATE stories SET version = ?, state = ? WHERE story_id = ?'),
    insertSnapshot: p('INSERT INTO snapshots (story_id, version, state_gzip) VALUES (?, ?, ?)'),
    readSnapshot: p('SELECT state_gzip FROM snapshots WHERE story_id = ? AND version = ?'),
    insertScene: p('INSERT INTO scenes (story_id, scene_id, scene_index, chapter_id, scene) VALUES (?, ?, ?, ?, ?)'),
    readScene: p('SELECT scene FROM scenes WHERE story_id = ? AND scene_id = ?'),
    scenesAsc: p('SELECT scene FROM scenes WHERE story_id = ? AND scene_index > ? ORDER BY scene_index LIMIT ?'),
    scenesDesc: p('SELECT scene FROM scenes WHERE story_id = ? AND scene_index < ? ORDER BY scene_index DESC LIMIT ?'),
    chapterScenesAsc: p(
      'SELECT scene FROM scenes WHERE story_id = ? AND chapter_id = ? AND scene_index > ? ORDER BY scene_index LIMIT ?',
    ),
    chapterScenesDesc: p(
      'SELECT scene FROM scenes WHERE story_id = ? AND chapter_id = ? AND scene_index < ? ORDER BY scene_index DESC LIMIT ?',
    ),
    insertInfluence: p(
      'INSERT INTO influences (story_id, influence_id, status, received_at, influence) VALUES (?, ?, ?, ?, ?)',
    ),
    insertInfluenceIfAbsent: p(
      'INSERT INTO influences (story_id, influence_id, status, received_at, influence) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
    ),
    readInfluence: p('SELECT influence FROM influences WHERE story_id = ? AND influence_id = ?'),
    readInfluenceStatus: p('SELECT status FROM influences WHERE story_id = ? AND influence_id = ?'),
    updateInfluence: p('UPDATE influences SET status = ?, influence = ? WHERE story_id = ? AND influence_id = ?'),
    pendingInfluences: p(
      "SELECT influence FROM influences WHERE story_id = ? AND status = 'pending' ORDER BY received_at, influence_id LIMIT ?",
    ),
    allInfluences: p('SELECT influence FROM influences WHERE story_id = ? ORDER BY received_at, influence_id'),
    readPublication: p('SELECT status, entry FROM publications WHERE story_id = ? AND scene_id = ? AND target = ?'),
    insertPublication: p('INSERT INTO publications (story_id, scene_id, target, status, entry) VALUES (?, ?, ?, ?, ?)'),
    updatePublication: p(
      'UPDATE publications SET status = ?, entry = ? WHERE story_id = ? AND scene_id = ? AND target = ?',
    ),
    scenePublications: p('SELECT entry FROM publications WHERE story_id = ? AND scene_id = ? ORDER BY target'),
    allPublications: p('SELECT entry FROM publications WHERE story_id = ? ORDER BY scene_id, target'),
  };
}

/**
 * Creates a `StoryStateStore` in a SQLite file (better-sqlite3, WAL mode, `synchronous = FULL`).
 *
 * Each commit is one `BEGIN IMMEDIATE` transaction holding every check and write, so a commit happens whole or not
 * at all, even if the process is killed mid-way, and two processes committing on one version see exactly one win.
 * Pass `{ path }` to open (and own) a file, or `{ database }` to share a file opened with `openSqliteDatabase`
 * with the vector and keyword indexes; a store closes only a file it opened, and once closed takes no more calls
 * (`ClosedError`), even while others still use the file.
 *
 * Throws `StorageError` for a path that cannot be opened, a file that is not a SQLite database or is damaged,
 * `SchemaVersionError` for a file written by a newer storyloom, `MissingDependencyError` when better-sqlite3 is not
 * installed. A refused file is never written.
 *
 * @example
 * ```ts
 * import { createSqliteStateStore } from 'storyloom/sqlite';
 *
 * const store = createSqliteStateStore({ path: 'my-story.db' });
 * if (!(await store.exists('my-story'))) {
 *   // create the story with its initial state...
 * }
 * await store.backup('my-story.backup.db');
 * await store.close();
 * ```
 */
export function createSqliteStateStore(options: SqliteStateStoreOptions): SqliteStateStore {
  if (typeof options !== 'object' || options === null) {
    throw new ValidationError('createSqliteStateStore needs { path } or { database }', {
      problems: [{ path: 'options', message: 'must be { path } or { database }' }],
    });
  }
  return new SqliteStateStoreImpl(options);
}
