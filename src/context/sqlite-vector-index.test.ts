import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { SNAPSHOTS_BEFORE_VERSION_5 } from '../../test/fixtures/sqlite-versions.js';
import { StorageError, ValidationError } from '../core/errors.js';
import { seededRandom } from '../core/seeded-random.js';
import type { VectorRecordInput } from '../state/schema.js';
import { nativeOf, openSqliteDatabase, SQLITE_SCHEMA_VERSION } from '../state/sqlite-database.js';
import { runVectorIndexSuite } from '../testing/vector-index-suite.js';
import { type FilterableField, type MetadataFilter, matchesFilter } from './filter.js';
import { createMemoryVectorIndex } from './memory-vector-index.js';
import { createSqliteVectorIndex, sqliteVectorMirrorState } from './sqlite-vector-index.js';

const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-sqlite-vectors-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));
let files = 0;

runVectorIndexSuite(
  { describe, it },
  {
    name: 'sqlite-file',
    create: () => createSqliteVectorIndex({ path: path.join(folder, `suite-${++files}.db`), dimensions: 8 }),
    destroy: (index) => index.close(),
  },
);
runVectorIndexSuite(
  { describe, it },
  {
    name: 'sqlite-file-without-mirror',
    create: () =>
      createSqliteVectorIndex({ path: path.join(folder, `suite-${++files}.db`), dimensions: 8, mirror: false }),
    destroy: (index) => index.close(),
  },
);
runVectorIndexSuite(
  { describe, it },
  {
    name: 'sqlite-memory',
    create: () => createSqliteVectorIndex({ path: ':memory:', dimensions: 8 }),
    destroy: (index) => index.close(),
  },
);

describe('createSqliteVectorIndex', () => {
  it.each([
    ['in SQL', false],
    ['in the mirror', true],
  ])('filters %s exactly as matchesFilter does in JavaScript', async (_where, mirror) => {
    const index = createSqliteVectorIndex({ path: ':memory:', dimensions: 2, mirror });
    const scalar = fc.oneof(
      fc.constantFrom('scene', 'character', 'mira', 'oren', 'c1', '5'),
      fc.constantFrom(0, 0.5, 1, 5, 1_000),
      fc.boolean(),
    );
    const field = fc.constantFrom<FilterableField>(
      'type',
      'characters',
      'locations',
      'importance',
      'timestamp',
      'sceneIndex',
      'chapterId',
      'chunk',
    );
    const operator = fc.oneof(
      fc.record({ $ne: scalar }),
      fc.record({ $nin: fc.array(scalar, { maxLength: 3 }) }),
      fc.record({ $in: fc.array(scalar, { maxLength: 3 }) }),
      fc.record({ $gte: fc.constantFrom(0, 0.5, 5) }),
    );
    const condition = fc.oneof(
      scalar,
      operator,
      fc.record(
        {
          $eq: scalar,
          $ne: scalar,
          $in: fc.array(scalar, { maxLength: 3 }),
          $nin: fc.array(scalar, { maxLength: 3 }),
          $gt: fc.constantFrom(0, 0.5, 5),
          $lte: fc.constantFrom(0.5, 1, 1_000),
        },
        { requiredKeys: [] },
      ),
    );
    const leaf = fc.dictionary(field, condition, { maxKeys: 2 }) as fc.Arbitrary<MetadataFilter>;
    const filter = fc.oneof(
      leaf,
      fc.record({ $or: fc.array(leaf, { minLength: 1, maxLength: 3 }) }),
      fc.record({ $and: fc.array(leaf, { minLength: 1, maxLength: 3 }), type: fc.constantFrom('scene', 'summary') }),
    ) as fc.Arbitrary<MetadataFilter>;
    const records: VectorRecordInput[] = [
      { type: 'scene', characters: ['mira', 'oren'], locations: ['5'], importance: 0.5, timestamp: 5, chunk: 0 },
      { type: 'character', characters: [], importance: 1, timestamp: 1_000, sceneIndex: 5, chapterId: 'c1' },
      { type: 'summary', characters: ['c1'], locations: ['harbor'], importance: 0, timestamp: 0, chapterId: '5' },
      { type: 'scene', characters: ['oren'], importance: 0.5, timestamp: 0, sceneIndex: 0, chunk: 5 },
    ].map((metadata, i) => ({
      id: `r${i}`,
      values: new Float32Array([1, i]),
      metadata: { storyId: 's', sourceId: `r${i}`, ...metadata } as VectorRecordInput['metadata'],
    }));
    await index.upsert('s', records);
    const stored = await index.fetch(
      's',
      records.map((record) => record.id),
    );
    await fc.assert(
      fc.asyncProperty(filter, async (candidate) => {
        const expected = stored.filter((record) => matchesFilter(record.metadata, candidate)).map((r) => r.id);
        const matches = await index.query('s', { vector: new Float32Array([1, 0]), topK: 10, filter: candidate });
        expect(matches.map((match) => match.id).sort()).toEqual(expected.sort());
      }),
      {
        numRuns: 400,
        // The edge cases named outright: absent optional fields, numbers against text, booleans, empty lists.
        examples: [
          [{ sceneIndex: { $ne: 5 } }],
          [{ chapterId: { $nin: ['c1'] } }],
          [{ chapterId: {} }],
          [{ chapterId: 5 }],
          [{ locations: { $gt: 1 } }],
          [{ type: { $gt: 0 } }],
          [{ characters: { $ne: true } }],
          [{ characters: { $in: [] } }],
          [{ importance: { $nin: [0.5, true] } }],
        ],
      },
    );
    await index.close();
  });

  it('refuses to reopen an index with other dimensions, and keeps its records', async () => {
    const file = path.join(folder, 'dimensions.db');
    const index = createSqliteVectorIndex({ path: file, dimensions: 3 });
    const metadata = { storyId: 's', type: 'scene' as const, timestamp: 1, sourceId: 'a' };
    await index.upsert('s', [{ id: 'a', values: new Float32Array([1, 2, 3]), metadata }]);
    await index.close();
    expect(() => createSqliteVectorIndex({ path: file, dimensions: 4 })).toThrow(/holds 3-dimension vectors, not 4/);
    const again = createSqliteVectorIndex({ path: file, dimensions: 3 });
    await expect(
      again.upsert('s', [{ id: 'a', values: new Float32Array([1, Number.NaN, 3]), metadata }]),
    ).rejects.toSatisfy((error) => ValidationError.isInstance(error) && /finite/.test(error.message));
    await expect(
      again.query('s', { vector: new Float32Array([1, 2, 3]), topK: 1, filter: { mood: 'dark' } as never }),
    ).rejects.toSatisfy((error) => ValidationError.isInstance(error) && /unknown field "mood"/.test(error.message));
    const [stored] = await again.fetch('s', ['a']);
    expect(Array.from(stored!.values)).toEqual([1, 2, 3]);
    await again.close();
  });
});

describe('opening createSqliteVectorIndex', () => {
  it('reports a write lock held by another connection as a retryable StorageError busy, not a raw SqliteError', () => {
    const file = path.join(folder, 'locked.db');
    openSqliteDatabase({ path: file }).close();
    const other = new Database(file);
    other.exec('BEGIN IMMEDIATE');
    try {
      // Registering a new index name must write, and the lock outlasts busyTimeoutMs.
      let caught: unknown;
      try {
        createSqliteVectorIndex({ path: file, dimensions: 2, busyTimeoutMs: 50 });
      } catch (error) {
        caught = error;
      }
      expect(StorageError.isInstance(caught) && caught.reason).toBe('busy');
      expect((caught as StorageError).isRetryable).toBe(true);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
  });

  it('opens an index the file already holds without waiting for the write lock', async () => {
    const file = path.join(folder, 'locked-existing.db');
    const before = createSqliteVectorIndex({ path: file, dimensions: 2 });
    await before.upsert('s', [record('a', [1, 0])]);
    await before.close();
    const other = new Database(file);
    other.exec('BEGIN IMMEDIATE');
    try {
      const index = createSqliteVectorIndex({ path: file, dimensions: 2, busyTimeoutMs: 50 });
      expect(ids(await index.query('s', { vector: new Float32Array([1, 0]), topK: 1 }))).toEqual(['a']);
      await index.close();
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
  });

  it('on a read-only database opens an index the file holds, and refuses a new name with StorageError readOnly', async () => {
    const file = path.join(folder, 'read-only.db');
    const before = createSqliteVectorIndex({ path: file, dimensions: 2 });
    await before.upsert('s', [record('a', [1, 0])]);
    await before.close();
    const database = openSqliteDatabase({ path: file, readonly: true });
    try {
      const index = createSqliteVectorIndex({ database, dimensions: 2 });
      expect(ids(await index.query('s', { vector: new Float32Array([1, 0]), topK: 1 }))).toEqual(['a']);
      await index.close();
      expect(() => createSqliteVectorIndex({ database, dimensions: 2, name: 'other' })).toThrow(
        expect.objectContaining({ name: 'StorageError', reason: 'readOnly' }),
      );
    } finally {
      database.close();
    }
  });
});

function record(id: string, values: number[], storyId = 's'): VectorRecordInput {
  return {
    id,
    values: new Float32Array(values),
    metadata: { storyId, type: 'scene', timestamp: 1, sourceId: id },
  };
}

const ids = (matches: Array<{ id: string }>) => matches.map((match) => match.id);
const scored = (matches: Array<{ id: string; score: number }>) => matches.map((match) => [match.id, match.score]);

describe('the in-memory mirror of createSqliteVectorIndex', () => {
  it('sees at the next query what another connection to the file wrote, deleted or dropped', async () => {
    const file = path.join(folder, 'two-connections.db');
    const first = openSqliteDatabase({ path: file });
    const second = openSqliteDatabase({ path: file });
    const reader = createSqliteVectorIndex({ database: first, dimensions: 2 });
    const writer = createSqliteVectorIndex({ database: second, dimensions: 2 });
    const query = { vector: new Float32Array([1, 0]), topK: 3 };
    await reader.upsert('s', [record('far', [0, 1])]);
    expect(ids(await reader.query('s', query))).toEqual(['far']);
    expect(sqliteVectorMirrorState(reader)).toEqual({ stories: ['s'], loads: 1 });

    await writer.upsert('s', [record('near', [1, 0.1])]);
    expect(ids(await reader.query('s', query))).toEqual(['near', 'far']);
    expect((await reader.fetch('s', ['near'])).map((found) => found.id)).toEqual(['near']);
    await writer.delete('s', { ids: ['far'] });
    expect(ids(await reader.query('s', query))).toEqual(['near']);
    expect(await reader.stats('s')).toEqual({ count: 1, dimensions: 2 });
    await writer.deleteStory('s');
    expect(await reader.query('s', query)).toEqual([]);
    expect(await reader.fetch('s', ['near'])).toEqual([]);
    // A write to another story leaves this story's mirror alone: the counter is read, nothing is reloaded. (The
    // story was empty when last read, and an empty story is not held: the first query after this write loads it.)
    await reader.upsert('s', [record('again', [1, 1])]);
    expect(ids(await reader.query('s', query))).toEqual(['again']);
    const loads = sqliteVectorMirrorState(reader)!.loads;
    await writer.upsert('other', [record('elsewhere', [1, 0], 'other')]);
    expect(ids(await reader.query('s', query))).toEqual(['again']);
    expect(sqliteVectorMirrorState(reader)!.loads).toBe(loads);
    await reader.close();
    await writer.close();
    first.close();
    second.close();
  });

  it('sees what another index on the same connection wrote', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const reader = createSqliteVectorIndex({ database, dimensions: 2 });
    const writer = createSqliteVectorIndex({ database, dimensions: 2 });
    const query = { vector: new Float32Array([1, 0]), topK: 3 };
    await reader.upsert('s', [record('far', [0, 1])]);
    expect(ids(await reader.query('s', query))).toEqual(['far']);
    await writer.upsert('s', [record('near', [1, 0])]);
    expect(ids(await reader.query('s', query))).toEqual(['near', 'far']);
    await reader.close();
    await writer.close();
    database.close();
  });

  it('leaves the mirror as it was when the SQL write fails', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const index = createSqliteVectorIndex({ database, dimensions: 2 });
    const query = { vector: new Float32Array([1, 0]), topK: 3 };
    await index.upsert('s', [record('a', [1, 0.5]), record('b', [0, 1])]);
    expect(ids(await index.query('s', query))).toEqual(['a', 'b']);
    const native = nativeOf(database);
    native.exec(`CREATE TEMP TRIGGER refuse_insert BEFORE INSERT ON vectors BEGIN SELECT RAISE(ABORT, 'disk full'); END;
      CREATE TEMP TRIGGER refuse_delete BEFORE DELETE ON vectors BEGIN SELECT RAISE(ABORT, 'disk full'); END;`);
    await expect(index.upsert('s', [record('c', [1, 0])])).rejects.toThrow(/disk full/);
    await expect(index.delete('s', { ids: ['a'] })).rejects.toThrow(/disk full/);
    await expect(index.delete('s', { filter: { type: 'scene' } })).rejects.toThrow(/disk full/);
    await expect(index.deleteStory('s')).rejects.toThrow(/disk full/);
    native.exec('DROP TRIGGER refuse_insert; DROP TRIGGER refuse_delete;');
    expect(ids(await index.query('s', query))).toEqual(['a', 'b']);
    expect(await index.stats('s')).toEqual({ count: 2, dimensions: 2 });
    // Served from the mirror it loaded first, not rebuilt after the failures.
    expect(sqliteVectorMirrorState(index)).toEqual({ stories: ['s'], loads: 1 });
    await index.close();
    database.close();
  });

  it('applies its own writes to the loaded mirror without reloading it, and deleteStory empties it', async () => {
    const index = createSqliteVectorIndex({ path: ':memory:', dimensions: 2 });
    const query = { vector: new Float32Array([1, 0]), topK: 5 };
    await index.upsert('s', [record('a', [1, 0.5]), record('b', [0, 1])]);
    expect(ids(await index.query('s', query))).toEqual(['a', 'b']);
    await index.upsert('s', [record('c', [1, 0])]);
    expect(await index.delete('s', { ids: ['b', 'missing'] })).toBe(1);
    expect(ids(await index.query('s', query))).toEqual(['c', 'a']);
    await index.deleteStory('s');
    expect(await index.query('s', query)).toEqual([]);
    expect(await index.stats('s')).toEqual({ count: 0, dimensions: 2 });
    await index.upsert('s', [record('d', [0, 1])]);
    expect(ids(await index.query('s', query))).toEqual(['d']);
    expect(sqliteVectorMirrorState(index)).toEqual({ stories: ['s'], loads: 1 });
    await index.close();
  });

  it('is absent with mirror: false, and answers the same', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const mirrored = createSqliteVectorIndex({ database, dimensions: 2 });
    const direct = createSqliteVectorIndex({ database, dimensions: 2, mirror: false });
    await direct.upsert('s', [record('a', [1, 0.5]), record('b', [0, 1]), record('c', [-1, 0.2])]);
    const query = { vector: new Float32Array([1, 0.1]), topK: 3, includeValues: true };
    const fromMirror = await mirrored.query('s', query);
    const fromSql = await direct.query('s', query);
    expect(ids(fromMirror)).toEqual(ids(fromSql));
    fromMirror.forEach((match, i) => {
      expect(match.score).toBeCloseTo(fromSql[i]!.score, 6);
      expect(Array.from(match.values!)).toEqual(Array.from(fromSql[i]!.values!));
    });
    expect(sqliteVectorMirrorState(direct)).toBeUndefined();
    await mirrored.close();
    await direct.close();
    database.close();
  });

  it('holds at most maxMirroredStories stories and none without records, and reloads a dropped one fresh', async () => {
    const file = path.join(folder, 'bounded-mirrors.db');
    const reader = createSqliteVectorIndex({ path: file, dimensions: 2, maxMirroredStories: 2 });
    const writer = createSqliteVectorIndex({ path: file, dimensions: 2 });
    const query = { vector: new Float32Array([1, 0]), topK: 5 };
    for (const story of ['a', 'b', 'c']) await writer.upsert(story, [record(`${story}1`, [1, 0.5], story)]);
    for (const story of ['a', 'b', 'c']) expect(ids(await reader.query(story, query))).toEqual([`${story}1`]);
    // a, queried first, was dropped for c.
    expect(sqliteVectorMirrorState(reader)!.stories.sort()).toEqual(['b', 'c']);
    // Stories with no records are answered, and never held.
    for (let story = 0; story < 100; story++) expect(await reader.query(`empty-${story}`, query)).toEqual([]);
    expect(sqliteVectorMirrorState(reader)!.stories.sort()).toEqual(['b', 'c']);
    // What was written to a dropped story while it was out is there when it is queried again.
    await writer.upsert('a', [record('a2', [1, 0], 'a')]);
    expect(ids(await reader.query('a', query))).toEqual(['a2', 'a1']);
    await reader.close();
    await writer.close();
  });

  it('scores vectors of very small or very large length like the memory index without the mirror', async () => {
    // sqlite-vec squares in float32, which underflows (tiny) or overflows (huge): left to it, the distance is NaN or
    // infinite, sorts first and scores 1. Every vector here is finite and non-zero, so upsert accepts it.
    const records = [
      record('good', [1, 0]),
      record('huge', [-1e25, 1e25]),
      record('tiny', [1e-25, -1e-25]),
      record('small', [3e-21, 1e-21]),
      record('large', [1e18, 3e18]),
    ];
    const memory = createMemoryVectorIndex({ dimensions: 2 });
    const sqlite = createSqliteVectorIndex({ path: ':memory:', dimensions: 2, mirror: false });
    await memory.upsert('s', records);
    await sqlite.upsert('s', records);
    const reference = await memory.query('s', { vector: new Float32Array([1, 0]), topK: 5 });
    const scoreOf = (id: string) => reference.find((match) => match.id === id)!.score;
    expect(scoreOf('good')).toBeCloseTo(1, 6);
    expect(scoreOf('tiny')).toBeCloseTo(Math.SQRT1_2, 6);
    expect(scoreOf('huge')).toBeCloseTo(-Math.SQRT1_2, 6);
    // A huge or tiny query too: its length must not matter either.
    for (const vector of [
      [1, 0],
      [1e-30, 2e-30],
      [-3e30, 1e30],
    ]) {
      const query = { vector: new Float32Array(vector), topK: 5 };
      const expected = await memory.query('s', query);
      const actual = await sqlite.query('s', query);
      expect(ids(actual), `query ${vector}`).toEqual(ids(expected));
      actual.forEach((match, i) => {
        expect(match.score, `${match.id} for query ${vector}`).toBeCloseTo(expected[i]!.score, 6);
      });
    }
    await sqlite.close();
  });

  it('ranks records float32 cannot tell apart by their float64 scores without the mirror, as the memory index does', async () => {
    // Cosines with [1, 0, 0, 0] of 1 - 5e-13·k²: float32 rounds every one to 1, so sqlite-vec ties them all at
    // distance 0; ids run the other way, so a tie broken by id would put the farthest first. 80 of them: more than a
    // fixed number of extra candidates would hold.
    const records = Array.from({ length: 80 }, (_, i) =>
      record(`near-${String(79 - i).padStart(2, '0')}`, [1, (i + 1) * 1e-6, 0, 0]),
    );
    records.push(record('a', [1, 2e-4, 0, 0]), record('b', [1, 1e-4, 0, 0]), record('far', [1, 1, 0, 0]));
    const memory = createMemoryVectorIndex({ dimensions: 4 });
    const sqlite = createSqliteVectorIndex({ path: ':memory:', dimensions: 4, mirror: false });
    await memory.upsert('s', records);
    await sqlite.upsert('s', records);
    const vector = new Float32Array([1, 0, 0, 0]);
    expect(ids(await sqlite.query('s', { vector, topK: 1 }))).toEqual(['near-79']);
    for (const topK of [1, 5, 40, 81, 82, 100]) {
      for (const filter of [undefined, { sourceId: { $in: ['a', 'b', 'far', 'near-00'] } }]) {
        const expected = await memory.query('s', { vector, topK, filter });
        const actual = await sqlite.query('s', { vector, topK, filter });
        // The same ranking and the same scores, to the last bit.
        expect(scored(actual), `topK ${topK}, filter ${JSON.stringify(filter)}`).toEqual(scored(expected));
      }
    }
    // Only 'a' and 'b' pass: b is the closer one.
    expect(ids(await sqlite.query('s', { vector, topK: 1, filter: { sourceId: { $in: ['a', 'b'] } } }))).toEqual(['b']);
    await memory.close();
    await sqlite.close();
  });

  it('without the mirror, ranks clusters of near-duplicates in many dimensions as the memory index does', async () => {
    const dimensions = 384;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        fc.constantFrom(1e-7, 1e-6, 1e-5, 1e-3),
        fc.integer({ min: 1, max: 60 }),
        async (seed, spread, topK) => {
          const uniform = seededRandom(seed);
          const random = () => uniform() - 0.5;
          const base = Array.from({ length: dimensions }, random);
          const records = Array.from({ length: 60 }, (_, i) =>
            record(
              `r${String(i).padStart(2, '0')}`,
              base.map((value) => value + random() * spread),
            ),
          );
          const memory = createMemoryVectorIndex({ dimensions });
          const sqlite = createSqliteVectorIndex({ path: ':memory:', dimensions, mirror: false });
          await memory.upsert('s', records);
          await sqlite.upsert('s', records);
          const vector = new Float32Array(base.map((value) => value + random() * spread));
          // The same ranking and the same scores, to the last bit.
          expect(scored(await sqlite.query('s', { vector, topK }))).toEqual(
            scored(await memory.query('s', { vector, topK })),
          );
          await memory.close();
          await sqlite.close();
        },
      ),
      { numRuns: 40, seed: 20_260_101 },
    );
  });

  it('opens a file of schema version 1 and keeps its vectors', async () => {
    const file = path.join(folder, 'version-1.db');
    const before = createSqliteVectorIndex({ path: file, dimensions: 2, mirror: false });
    await before.upsert('s', [record('a', [1, 0]), record('b', [0, 1])]);
    await before.close();
    // What version 1 wrote: everything but the counters.
    const old = openSqliteDatabase({ path: file });
    nativeOf(old).exec(
      `${SNAPSHOTS_BEFORE_VERSION_5} DROP TABLE vector_index_versions; DROP TABLE keyword_index_versions; PRAGMA user_version = 1;`,
    );
    old.close();

    const database = openSqliteDatabase({ path: file });
    expect(database.schemaVersion).toBe(SQLITE_SCHEMA_VERSION);
    expect(nativeOf(database).pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    const index = createSqliteVectorIndex({ database, dimensions: 2 });
    const query = { vector: new Float32Array([1, 0.1]), topK: 5 };
    expect(ids(await index.query('s', query))).toEqual(['a', 'b']);
    const other = openSqliteDatabase({ path: file });
    await createSqliteVectorIndex({ database: other, dimensions: 2 }).upsert('s', [record('c', [1, 0.1])]);
    other.close();
    expect(ids(await index.query('s', query))).toEqual(['c', 'a', 'b']);
    await index.close();
    database.close();
  });

  it.each([
    ['a vector of the wrong length', 'embedding', Buffer.alloc(4)],
    ['a vector holding NaN', 'embedding', Buffer.from(new Float32Array([Number.NaN, 1]).buffer)],
    ['the zero vector', 'embedding', Buffer.from(new Float32Array([0, 0]).buffer)],
    ['metadata that is not JSON', 'metadata', '{"storyId": "s", '],
    ['metadata of another shape', 'metadata', '{"storyId": "s", "type": "scene", "timestamp": 1, "text": 7}'],
  ])(
    'refuses to load a story holding %s, naming the record, and loads it once it is deleted',
    async (_what, column, value) => {
      const database = openSqliteDatabase({ path: ':memory:' });
      const writer = createSqliteVectorIndex({ database, dimensions: 2 });
      await writer.upsert('s', [record('a', [1, 0]), record('b', [0, 1]), record('c', [1, 1])]);
      nativeOf(database).prepare(`UPDATE vectors SET ${column} = ? WHERE id = 'b'`).run(value);
      // A fresh index object loads the story from the file (the writer's mirror never saw the damage).
      const reader = createSqliteVectorIndex({ database, dimensions: 2 });
      const query = { vector: new Float32Array([0, 1]), topK: 3 };
      const damaged = (error: unknown) =>
        StorageError.isInstance(error) &&
        error.reason === 'corrupt' &&
        error.message.includes('damaged vector record "b" in story "s"');
      // Every path that reads the row says so: a fetch before the story is loaded, the load, and a query without
      // the mirror (except for vectors sqlite-vec scores itself: it reads only the metadata of what it returns).
      await expect(reader.fetch('s', ['b'])).rejects.toSatisfy(damaged);
      await expect(reader.query('s', query)).rejects.toSatisfy(damaged);
      if (column === 'metadata') {
        const direct = createSqliteVectorIndex({ database, dimensions: 2, mirror: false });
        await expect(direct.query('s', query)).rejects.toSatisfy(damaged);
        await expect(direct.fetch('s', ['b'])).rejects.toSatisfy(damaged);
      }
      expect(sqliteVectorMirrorState(reader)).toEqual({ stories: [], loads: 0 });
      await reader.delete('s', { ids: ['b'] });
      expect(ids(await reader.query('s', query))).toEqual(['c', 'a']);
      await writer.close();
      await reader.close();
      database.close();
    },
  );

  it('maps a failed load to a StorageError', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const index = createSqliteVectorIndex({ database, dimensions: 2 });
    nativeOf(database).exec('DROP TABLE vector_index_versions');
    await expect(index.query('s', { vector: new Float32Array([1, 0]), topK: 1 })).rejects.toSatisfy(
      (error) => StorageError.isInstance(error) && /query failed/.test(error.message),
    );
    await index.close();
    database.close();
  });
});
