import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { largeStoryState, rewriteAsVersion4, writeVersion4Story } from '../../test/fixtures/sqlite-versions.js';
import { createSqliteKeywordIndex } from '../context/sqlite-keyword-index.js';
import { createSqliteVectorIndex } from '../context/sqlite-vector-index.js';
import { ClosedError, NotFoundError, SchemaVersionError, StorageError, ValidationError } from '../core/errors.js';
import { makeInfluence, makeNextScene, makeNextState, makeStoryState } from '../testing/fixtures.js';
import { runStoryStateStoreSuite } from '../testing/state-store-suite.js';
import { createSqliteStateStore } from './sqlite.js';
import { nativeOf, openSqliteDatabase, restoreSqliteBackup, SQLITE_SCHEMA_VERSION } from './sqlite-database.js';

const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-sqlite-state-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));
let files = 0;
const freshPath = (label = 'file') => path.join(folder, `${label}-${++files}.db`);

runStoryStateStoreSuite(
  { describe, it },
  {
    name: 'sqlite-file',
    create: () => createSqliteStateStore({ path: freshPath('suite') }),
    destroy: (s) => s.close(),
  },
);
runStoryStateStoreSuite(
  { describe, it },
  { name: 'sqlite-memory', create: () => createSqliteStateStore({ path: ':memory:' }), destroy: (s) => s.close() },
);

// "Run the conformance suite on the copy": every case gets its own restore of one backup of an empty, migrated
// store, so the suite exercises files that went through backup and restore.
const emptyBackup = freshPath('empty-backup');
{
  const source = createSqliteStateStore({ path: freshPath('empty-source') });
  await source.backup(emptyBackup);
  await source.close();
}
runStoryStateStoreSuite(
  { describe, it },
  {
    name: 'sqlite-restored-backup',
    create: async () => {
      const restored = freshPath('restored');
      await restoreSqliteBackup(emptyBackup, restored);
      return createSqliteStateStore({ path: restored, fileMustExist: true });
    },
    destroy: (s) => s.close(),
  },
);

async function populatedStore(file: string) {
  const store = createSqliteStateStore({ path: file });
  let state = await store.create(makeStoryState('saga'));
  await store.enqueueInfluence(makeInfluence('saga', 'vote-1'));
  await store.enqueueInfluence(makeInfluence('saga', 'vote-2'));
  for (let i = 0; i < 3; i++) {
    const scene = makeNextScene(state);
    const consumed = i === 0 ? ['vote-1'] : [];
    ({ state } = await store.commitScene('saga', {
      expectedVersion: state.version,
      scene,
      nextState: makeNextState(state, scene),
      consumedInfluenceIds: consumed,
    }));
    await store.recordPublication({
      storyId: 'saga',
      sceneId: scene.id,
      target: 'publish:site',
      status: 'done',
      result: {},
    });
  }
  return store;
}

async function exportLines(store: { exportStory(id: string): AsyncIterable<string> }, storyId: string) {
  const lines: string[] = [];
  for await (const line of store.exportStory(storyId)) lines.push(line);
  return lines;
}

describe('createSqliteStateStore: files', () => {
  it('keeps a story across reopening the file', async () => {
    const file = freshPath();
    const store = await populatedStore(file);
    const before = await exportLines(store, 'saga');
    await store.close();
    const reopened = createSqliteStateStore({ path: file });
    expect(await exportLines(reopened, 'saga')).toEqual(before);
    expect((await reopened.load('saga')).version).toBe(3);
    await reopened.close();
  });

  it('backs up online and restores a populated story line for line', async () => {
    const file = freshPath();
    const store = await populatedStore(file);
    const backup = freshPath('backup');
    await store.backup(backup);
    const expected = await exportLines(store, 'saga');
    // Writes after the backup are not in it.
    await store.enqueueInfluence(makeInfluence('saga', 'late-vote'));
    await store.close();
    const restoredPath = freshPath('restored');
    await restoreSqliteBackup(backup, restoredPath);
    const restored = createSqliteStateStore({ path: restoredPath });
    expect(await exportLines(restored, 'saga')).toEqual(expected);
    expect(await restored.getInfluence('saga', 'late-vote')).toBeNull();
    expect(restored.database.integrityCheck()).toEqual(['ok']);
    await restored.close();
    await expect(restoreSqliteBackup(backup, restoredPath)).rejects.toSatisfy(
      (error) => StorageError.isInstance(error) && /exists/.test(error.message),
    );
  });

  it('restores a backup from an older schema version: the backup stays byte for byte, the copy is migrated', async () => {
    const store = await populatedStore(freshPath());
    const backup = freshPath('version-4-backup');
    await store.backup(backup);
    const expected = await exportLines(store, 'saga');
    const states = await Promise.all([0, 1, 2, 3].map((version) => store.getStateAt('saga', version)));
    await store.close();
    rewriteAsVersion4(backup);
    const bytes = readFileSync(backup);

    const restoredPath = freshPath('restored');
    await restoreSqliteBackup(backup, restoredPath);
    expect(readFileSync(backup).equals(bytes), 'the backup is unchanged').toBe(true);
    const restored = createSqliteStateStore({ path: restoredPath, fileMustExist: true });
    expect(nativeOf(restored.database).pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    expect(await exportLines(restored, 'saga')).toEqual(expected);
    for (const state of states) expect(await restored.getStateAt('saga', state!.version)).toEqual(state);
    await restored.close();

    // Still refused, creating nothing: a backup from a newer storyloom, an older one that is damaged, and a file that
    // is no database.
    const newer = freshPath('newer-backup');
    copyFileSync(restoredPath, newer);
    const native = new Database(newer);
    native.pragma(`user_version = ${SQLITE_SCHEMA_VERSION + 1}`);
    native.close();
    const damaged = freshPath('damaged-backup');
    copyFileSync(backup, damaged);
    truncateSync(damaged, Math.floor(bytes.length / 2));
    const text = freshPath('text-backup');
    writeFileSync(text, 'Chapter one.\n'.repeat(100));
    const refusals: Array<[string, (error: unknown) => boolean]> = [
      [newer, SchemaVersionError.isInstance],
      [damaged, (error) => StorageError.isInstance(error) && error.reason === 'corrupt'],
      [text, (error) => StorageError.isInstance(error) && error.reason === 'notADatabase'],
    ];
    for (const [from, check] of refusals) {
      const to = freshPath('not-restored');
      await expect(restoreSqliteBackup(from, to), from).rejects.toSatisfy(check);
      expect(existsSync(to), to).toBe(false);
    }
  });

  it('one file holds a whole story: state, scenes, influences, vectors and keywords', async () => {
    const file = freshPath('whole');
    const database = openSqliteDatabase({ path: file });
    const store = createSqliteStateStore({ database });
    const vectors = createSqliteVectorIndex({ database, dimensions: 4 });
    const keywords = createSqliteKeywordIndex({ database });
    const state = await store.create(makeStoryState('saga'));
    const scene = makeNextScene(state);
    await store.commitScene('saga', {
      expectedVersion: 0,
      scene,
      nextState: makeNextState(state, scene),
      consumedInfluenceIds: [],
    });
    const metadata = { storyId: 'saga', type: 'scene' as const, timestamp: 1, sourceId: scene.id };
    await vectors.upsert('saga', [{ id: scene.id, values: new Float32Array([1, 0, 0, 0]), metadata }]);
    await keywords.upsert('saga', [{ id: scene.id, text: scene.text, metadata }]);
    // Closing the adapters leaves the shared file open for the others; its owner closes it.
    await store.close();
    await vectors.close();
    expect(database.closed).toBe(false);
    database.close();

    const reopened = openSqliteDatabase({ path: file });
    expect((await createSqliteStateStore({ database: reopened }).load('saga')).sceneCount).toBe(1);
    const [match] = await createSqliteVectorIndex({ database: reopened, dimensions: 4 }).query('saga', {
      vector: new Float32Array([1, 0, 0, 0]),
      topK: 1,
    });
    expect(match?.id).toBe(scene.id);
    expect(
      (await createSqliteKeywordIndex({ database: reopened }).query('saga', { text: 'lamp', topK: 1 }))[0]?.id,
    ).toBe(scene.id);
    reopened.close();
  });

  it('writes the schema version into the file and runs in WAL mode', () => {
    const file = freshPath();
    const database = openSqliteDatabase({ path: file });
    const native = nativeOf(database);
    expect(native.pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    expect(native.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(native.pragma('synchronous', { simple: true })).toBe(2); // FULL
    database.close();
  });

  it('a path that starts or ends with white space is refused, never trimmed into another file', async () => {
    // better-sqlite3 trims file names: "story.db " would have opened, backed up over, or restored over "story.db".
    const livePath = freshPath('live');
    const live = await populatedStore(livePath);
    const liveLines = await exportLines(live, 'saga');
    const backup = freshPath('backup');
    await live.backup(backup);
    const existing = freshPath('existing-copy');
    await live.backup(existing);
    const existingBytes = readFileSync(existing);
    const isValidation = (error: unknown) => ValidationError.isInstance(error);

    for (const given of [' ', '\t', `${livePath} `, ` ${livePath}`, `${freshPath('new')}\n`]) {
      expect(() => openSqliteDatabase({ path: given }), JSON.stringify(given)).toThrow(ValidationError);
      expect(() => createSqliteStateStore({ path: given }), JSON.stringify(given)).toThrow(ValidationError);
    }
    await expect(live.backup(`${existing} `)).rejects.toSatisfy(isValidation);
    await expect(live.database.backup(` ${existing}`)).rejects.toSatisfy(isValidation);
    expect(readFileSync(existing).equals(existingBytes), 'the existing copy is unchanged').toBe(true);
    expect(existsSync(`${existing} `)).toBe(false);

    const restoredPath = freshPath('restored');
    await expect(restoreSqliteBackup(backup, `${livePath} `)).rejects.toSatisfy(isValidation);
    await expect(restoreSqliteBackup(`${backup} `, restoredPath)).rejects.toSatisfy(isValidation);
    expect(existsSync(restoredPath)).toBe(false);
    expect(await exportLines(live, 'saga'), 'the live story is untouched').toEqual(liveLines);
    await live.close();
  });

  it('a backup into a folder that does not exist is a StorageError (cannotOpen) naming the path', async () => {
    const store = await populatedStore(freshPath());
    const toPath = path.join(folder, 'missing-folder', 'copy.db');
    const error = await store.backup(toPath).catch((e: unknown) => e);
    expect(StorageError.isInstance(error) && error.reason === 'cannotOpen', String(error)).toBe(true);
    expect((error as StorageError).path).toBe(toPath);
    await store.close();
  });

  it('a closed database refuses backup and integrityCheck with ClosedError, and a close during a backup ends it so', async () => {
    const database = openSqliteDatabase({ path: freshPath() });
    database.close();
    expect(() => database.integrityCheck()).toThrow(ClosedError);
    await expect(database.backup(freshPath('after-close'))).rejects.toSatisfy(ClosedError.isInstance);

    // About 3 MB, so the copy takes many steps and the close lands between two of them.
    const file = freshPath('large');
    const store = createSqliteStateStore({ path: file });
    let state = await store.create(makeStoryState('saga'));
    for (let i = 0; i < 20; i++) {
      const scene = makeNextScene(state, { text: 'x'.repeat(150_000) });
      ({ state } = await store.commitScene('saga', {
        expectedVersion: state.version,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: [],
      }));
    }
    const toPath = freshPath('interrupted');
    const running = store.backup(toPath);
    // The copy has started once its file exists; close before it can finish.
    while (!existsSync(toPath)) await new Promise((resolve) => setImmediate(resolve));
    store.database.close();
    await expect(running).rejects.toSatisfy(ClosedError.isInstance);
    expect(existsSync(toPath), 'the partial copy is removed').toBe(false);
  });

  it('a store on a shared database takes no calls after its own close(), while the database serves the others', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const store = createSqliteStateStore({ database });
    await store.create(makeStoryState('s1'));
    await store.close();
    await expect(store.create(makeStoryState('s2'))).rejects.toSatisfy(ClosedError.isInstance);
    await expect(store.load('s1')).rejects.toSatisfy(ClosedError.isInstance);
    await expect(store.backup(freshPath('after-store-close'))).rejects.toSatisfy(ClosedError.isInstance);
    expect(database.closed).toBe(false);
    expect((await createSqliteStateStore({ database }).load('s1')).version).toBe(0);
    database.close();
  });
});

describe('createSqliteStateStore: snapshots', () => {
  const rawSnapshots = (file: string) => {
    const native = new Database(file, { readonly: true });
    try {
      return native.prepare('SELECT version, state_gzip FROM snapshots ORDER BY version').all() as Array<{
        version: number;
        state_gzip: Buffer;
      }>;
    } finally {
      native.close();
    }
  };

  it('keeps every snapshot gzip-compressed, a fraction of its JSON, and reads it back whole', async () => {
    const file = freshPath('compressed');
    const store = createSqliteStateStore({ path: file });
    let state = await store.create(largeStoryState('saga'));
    const states = [state];
    for (let i = 0; i < 3; i++) {
      const scene = makeNextScene(state);
      ({ state } = await store.commitScene('saga', {
        expectedVersion: state.version,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: [],
      }));
      states.push(state);
    }
    for (const expected of states) expect(await store.getStateAt('saga', expected.version)).toEqual(expected);
    await store.close();
    const rows = rawSnapshots(file);
    expect(rows.map((row) => row.version)).toEqual(states.map((s) => s.version));
    for (const [i, row] of rows.entries()) {
      expect([...row.state_gzip.subarray(0, 2)]).toEqual([0x1f, 0x8b]); // the gzip magic
      expect(JSON.parse(gunzipSync(row.state_gzip).toString('utf8'))).toEqual(states[i]);
      expect(row.state_gzip.length).toBeLessThan(JSON.stringify(states[i]).length / 4);
    }
  });

  it('migrates a version-4 file: its plain-JSON snapshots are compressed and read as before', async () => {
    const file = freshPath('version-4');
    const store = await populatedStore(file);
    const before = await exportLines(store, 'saga');
    const { version } = await store.load('saga');
    const versions = Array.from({ length: version + 1 }, (_, i) => i);
    const states = (await Promise.all(versions.map((v) => store.getStateAt('saga', v)))).filter((s) => s !== null);
    expect(states).toHaveLength(4);
    await store.close();
    rewriteAsVersion4(file);

    const reopened = createSqliteStateStore({ path: file });
    expect(nativeOf(reopened.database).pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    expect(await exportLines(reopened, 'saga')).toEqual(before);
    for (const expected of states) expect(await reopened.getStateAt('saga', expected.version)).toEqual(expected);
    // The migrated table still belongs to its story: deleting the story takes its snapshots.
    const native = nativeOf(reopened.database);
    expect(native.prepare('SELECT count(*) FROM snapshots').pluck().get()).toBe(4);
    native.prepare("DELETE FROM stories WHERE story_id = 'saga'").run();
    expect(native.prepare('SELECT count(*) FROM snapshots').pluck().get()).toBe(0);
    await reopened.close();
  });

  /**
   * The outcome of each VACUUM run on any connection while `run` runs: 'done', or the error's code. `before` runs
   * before each VACUUM and returns what to do after it.
   */
  const vacuumsDuring = async (run: () => unknown, before?: () => () => void) => {
    const exec = Database.prototype.exec;
    const outcomes: string[] = [];
    const spy = vi.spyOn(Database.prototype, 'exec').mockImplementation(function (this: Database.Database, sql) {
      if (sql !== 'VACUUM') return exec.call(this, sql);
      const after = before?.();
      try {
        const result = exec.call(this, sql);
        outcomes.push('done');
        return result;
      } catch (error) {
        outcomes.push(String((error as { code?: string }).code));
        throw error;
      } finally {
        after?.();
      }
    });
    try {
      await run();
    } finally {
      spy.mockRestore();
    }
    return outcomes;
  };

  it('migrating a version-4 file compacts it once: it comes out smaller than it went in, nothing lost', async () => {
    const file = freshPath('compacted');
    const states = await writeVersion4Story(file, 'saga', 20);
    const before = statSync(file).size;
    const vacuums = await vacuumsDuring(async () => {
      const store = createSqliteStateStore({ path: file });
      expect(nativeOf(store.database).pragma('freelist_count', { simple: true })).toBe(0);
      for (const expected of states) expect(await store.getStateAt('saga', expected.version)).toEqual(expected);
      expect(store.database.integrityCheck()).toEqual(['ok']);
      await store.close();
    });
    expect(vacuums).toEqual(['done']);
    const after = statSync(file).size;
    expect(after, `version 4: ${before} bytes, migrated: ${after} bytes`).toBeLessThan(before / 2);
    // A file that needs no migration, and a new one, open without a VACUUM.
    const reopens = await vacuumsDuring(() => {
      openSqliteDatabase({ path: file }).close();
      openSqliteDatabase({ path: freshPath('new') }).close();
    });
    expect(reopens).toEqual([]);
  });

  it('a compaction that fails (another connection holds the write lock) leaves the file opened, migrated and whole', async () => {
    const file = freshPath('not-compacted');
    const states = await writeVersion4Story(file, 'saga', 10);
    let database: ReturnType<typeof openSqliteDatabase> | undefined;
    const vacuums = await vacuumsDuring(
      () => {
        database = openSqliteDatabase({ path: file, busyTimeoutMs: 50 });
      },
      () => {
        const other = new Database(file);
        other.exec('BEGIN IMMEDIATE');
        return () => {
          other.exec('ROLLBACK');
          other.close();
        };
      },
    );
    expect(vacuums).toEqual(['SQLITE_BUSY']);
    const native = nativeOf(database!);
    expect(native.pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    // Not compacted: the old snapshots' pages are still free, for later writes to reuse.
    expect(native.pragma('freelist_count', { simple: true })).toBeGreaterThan(0);
    const store = createSqliteStateStore({ database: database! });
    for (const expected of states) expect(await store.getStateAt('saga', expected.version)).toEqual(expected);
    expect(database!.integrityCheck()).toEqual(['ok']);
    database!.close();
    // The next open finds nothing to migrate, so it does not try again.
    expect(await vacuumsDuring(() => openSqliteDatabase({ path: file }).close())).toEqual([]);
  });

  it('a damaged compressed snapshot is a StorageError (corrupt), not a crash', async () => {
    const file = freshPath('damaged-snapshot');
    const store = await populatedStore(file);
    await store.close();
    const native = new Database(file);
    native.prepare('UPDATE snapshots SET state_gzip = ? WHERE version = 2').run(Buffer.from('not gzip at all'));
    native.close();
    const reopened = createSqliteStateStore({ path: file });
    const error = await reopened.getStateAt('saga', 2).catch((e: unknown) => e);
    expect(StorageError.isInstance(error) && error.reason === 'corrupt', String(error)).toBe(true);
    expect(String(error)).toContain('damaged state record');
    expect((await reopened.getStateAt('saga', 3))?.version).toBe(3);
    await reopened.close();
  });

  it('replaying a commit whose snapshot is not in the file is a NotFoundError, not a crash', async () => {
    const store = createSqliteStateStore({ path: ':memory:' });
    const state = await store.create(makeStoryState('saga'));
    const scene = makeNextScene(state);
    const commit = { expectedVersion: 0, scene, nextState: makeNextState(state, scene), consumedInfluenceIds: [] };
    await store.commitScene('saga', commit);
    nativeOf(store.database).prepare("DELETE FROM snapshots WHERE story_id = 'saga' AND version = 1").run();
    const error = await store.commitScene('saga', commit).catch((e: unknown) => e);
    expect(NotFoundError.isInstance(error), String(error)).toBe(true);
    expect(String(error)).toContain('The state after scene 0 of "saga" (version 1) is missing');
    await store.close();
  });
});

describe('createSqliteStateStore: scenes that disagree with the state', () => {
  it('a scene index already taken in the file is a ValidationError, not a storage failure, and writes nothing', async () => {
    const store = createSqliteStateStore({ path: ':memory:' });
    const state = await store.create(makeStoryState('s1'));
    const first = makeNextScene(state);
    const after = (
      await store.commitScene('s1', {
        expectedVersion: 0,
        scene: first,
        nextState: makeNextState(state, first),
        consumedInfluenceIds: [],
      })
    ).state;
    // A file whose state no longer counts its scene (edited by hand, or written before scene indexes were checked).
    nativeOf(store.database)
      .prepare("UPDATE stories SET state = json_set(state, '$.sceneCount', 0) WHERE story_id = 's1'")
      .run();
    const recounted = { ...after, sceneCount: 0 };
    const clash = makeNextScene(recounted, { id: 'clash' });
    const error = await store
      .commitScene('s1', {
        expectedVersion: 1,
        scene: clash,
        nextState: makeNextState(recounted, clash),
        consumedInfluenceIds: [],
      })
      .catch((e: unknown) => e);
    expect(ValidationError.isInstance(error), String(error)).toBe(true);
    expect(await store.getScene('s1', 'clash')).toBeNull();
    expect(await store.getScene('s1', first.id)).toEqual(first);
    expect((await store.load('s1')).version).toBe(1);
    await store.close();
  });
});

describe('a file upgraded by a newer storyloom while open', () => {
  it('fails the next statement that meets the new tables with SchemaVersionError, in the store and both indexes', async () => {
    const file = freshPath('upgraded-while-open');
    const store = await populatedStore(file);
    const vectors = createSqliteVectorIndex({ database: store.database, dimensions: 4, mirror: false });
    const keywords = createSqliteKeywordIndex({ database: store.database, mirror: false });
    const metadata = { storyId: 'saga', type: 'scene', timestamp: 0, sourceId: 'a', text: 'the lamp' } as const;
    await vectors.upsert('saga', [{ id: 'a', values: new Float32Array([1, 0, 0, 0]), metadata }]);
    await keywords.upsert('saga', [{ id: 'a', text: 'the lamp', metadata }]);
    // What a newer version's migration might do, from another process.
    const newer = new Database(file);
    newer.exec(`
      ALTER TABLE snapshots RENAME TO snapshots_next;
      ALTER TABLE vectors RENAME TO vectors_next;
      ALTER TABLE keyword_documents RENAME TO keyword_documents_next;
      PRAGMA user_version = ${SQLITE_SCHEMA_VERSION + 1};`);
    newer.close();
    const upgraded = (error: unknown) =>
      SchemaVersionError.isInstance(error) &&
      error.fileVersion === SQLITE_SCHEMA_VERSION + 1 &&
      error.message.includes('restart the process with the newer storyloom');
    await expect(store.getStateAt('saga', 1)).rejects.toSatisfy(upgraded);
    await expect(vectors.query('saga', { vector: new Float32Array([1, 0, 0, 0]), topK: 1 })).rejects.toSatisfy(
      upgraded,
    );
    await expect(keywords.query('saga', { text: 'lamp', topK: 1 })).rejects.toSatisfy(upgraded);
    await store.close();
  });

  it('a statement that fails for another reason is still a StorageError', async () => {
    const file = freshPath('broken-while-open');
    const store = await populatedStore(file);
    const other = new Database(file);
    other.exec('ALTER TABLE snapshots RENAME TO snapshots_gone;');
    other.close();
    const error = await store.getStateAt('saga', 1).catch((e: unknown) => e);
    expect(StorageError.isInstance(error), String(error)).toBe(true);
    await store.close();
  });
});

describe('createSqliteStateStore: refused files are never written', () => {
  const refuse = (file: string, check: (error: unknown) => boolean) => {
    const before = readFileSync(file);
    let thrown: unknown;
    try {
      createSqliteStateStore({ path: file });
    } catch (error) {
      thrown = error;
    }
    expect(thrown, 'the store should refuse the file').toBeDefined();
    expect(check(thrown), String(thrown)).toBe(true);
    expect(readFileSync(file).equals(before), 'the file is unchanged').toBe(true);
    return thrown as Error;
  };

  it('a text file is not a database', () => {
    const file = freshPath();
    writeFileSync(file, 'Chapter one. It was a dark and stormy night.\n'.repeat(200));
    const error = refuse(file, (e) => StorageError.isInstance(e) && e.reason === 'notADatabase');
    expect(error.message).toContain('not a SQLite database');
  });

  it('random bytes are not a database', () => {
    const file = freshPath();
    writeFileSync(file, Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 7919 + 13) % 256)));
    refuse(file, (e) => StorageError.isInstance(e) && e.reason === 'notADatabase');
  });

  it('a truncated SQLite file is corrupt', async () => {
    const file = freshPath();
    const store = await populatedStore(file);
    await store.close();
    truncateSync(file, Math.floor(statSync(file).size / 2));
    refuse(file, (e) => StorageError.isInstance(e) && e.reason === 'corrupt');
  });

  it('a file from a newer schema is a SchemaVersionError', () => {
    const file = freshPath();
    openSqliteDatabase({ path: file }).close();
    const database = openSqliteDatabase({ path: file });
    nativeOf(database).pragma(`user_version = ${SQLITE_SCHEMA_VERSION + 1}`);
    database.close();
    const error = refuse(file, SchemaVersionError.isInstance) as SchemaVersionError;
    expect(error.fileVersion).toBe(SQLITE_SCHEMA_VERSION + 1);
    expect(error.message).toContain('newer storyloom');
  });

  it("another application's SQLite database is refused", () => {
    const file = freshPath();
    const database = openSqliteDatabase({ path: file });
    nativeOf(database).pragma('application_id = 42');
    database.close();
    refuse(file, (e) => StorageError.isInstance(e) && e.reason === 'notADatabase');
  });

  it("another application's database that sets user_version but no application_id is refused", () => {
    // Every file storyloom writes has its application_id from the migration that sets its version.
    for (const version of [1, SQLITE_SCHEMA_VERSION - 1, -1]) {
      const file = freshPath('other-application');
      const native = new Database(file);
      native.exec(`CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
        INSERT INTO notes (body) VALUES ('buy milk');
        PRAGMA user_version = ${version};`);
      native.close();
      refuse(file, (e) => StorageError.isInstance(e) && e.reason === 'notADatabase');
    }
    // And one with a negative version but no table at all.
    const empty = freshPath('negative-version');
    const native = new Database(empty);
    native.pragma('user_version = -1');
    native.close();
    refuse(empty, (e) => StorageError.isInstance(e) && e.reason === 'notADatabase');
  });

  it('a directory, or a path in a missing folder, cannot be opened', () => {
    expect(() => createSqliteStateStore({ path: folder })).toThrow(
      expect.objectContaining({ name: 'StorageError', reason: 'cannotOpen' }),
    );
    expect(() => createSqliteStateStore({ path: path.join(folder, 'missing', 'story.db') })).toThrow(
      expect.objectContaining({ name: 'StorageError', reason: 'cannotOpen' }),
    );
    expect(() => createSqliteStateStore({ path: freshPath(), fileMustExist: true })).toThrow(
      expect.objectContaining({ name: 'StorageError', reason: 'cannotOpen' }),
    );
  });

  // Tests run as root, where chmod 0444 does not stop writes; a read-only open is the honest way to get a
  // read-only file here. SQLite then refuses every write, whoever the process runs as.
  it('a read-only store reads, refuses writes with StorageError(readOnly), and changes nothing', async () => {
    const file = freshPath();
    const store = await populatedStore(file);
    const expected = await exportLines(store, 'saga');
    await store.close();
    const readOnly = createSqliteStateStore({ path: file, readonly: true });
    expect(await exportLines(readOnly, 'saga')).toEqual(expected);
    await expect(readOnly.enqueueInfluence(makeInfluence('saga', 'vote-9'))).rejects.toSatisfy(
      (error) => StorageError.isInstance(error) && error.reason === 'readOnly',
    );
    await expect(readOnly.create(makeStoryState('other'))).rejects.toSatisfy(
      (error) => StorageError.isInstance(error) && error.reason === 'readOnly',
    );
    await readOnly.close();
    const again = createSqliteStateStore({ path: file });
    expect(await exportLines(again, 'saga')).toEqual(expected);
    await again.close();
  });

  it('bad options are a ValidationError', () => {
    expect(() => createSqliteStateStore({ path: '' })).toThrow(ValidationError);
    expect(() => createSqliteStateStore(null as never)).toThrow(ValidationError);
  });
});
