import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SNAPSHOTS_BEFORE_VERSION_5 } from '../../test/fixtures/sqlite-versions.js';
import { StorageError, ValidationError } from '../core/errors.js';
import { nativeOf, openSqliteDatabase, SQLITE_SCHEMA_VERSION } from '../state/sqlite-database.js';
import { runKeywordIndexSuite } from '../testing/keyword-index-suite.js';
import type { MetadataFilter } from './filter.js';
import type { KeywordDocument, KeywordIndex, KeywordMatch } from './keyword-index.js';
import { createMemoryKeywordIndex } from './memory-keyword-index.js';
import { createSqliteKeywordIndex, MAX_FTS_QUERY_TERMS, sqliteKeywordMirrorState } from './sqlite-keyword-index.js';
import { createSqliteVectorIndex } from './sqlite-vector-index.js';

const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-sqlite-keywords-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));
let files = 0;

runKeywordIndexSuite(
  { describe, it },
  {
    name: 'sqlite-file',
    create: () => createSqliteKeywordIndex({ path: path.join(folder, `suite-${++files}.db`) }),
    destroy: (index) => index.close(),
  },
);
runKeywordIndexSuite(
  { describe, it },
  {
    name: 'sqlite-file-without-mirror',
    create: () => createSqliteKeywordIndex({ path: path.join(folder, `suite-${++files}.db`), mirror: false }),
    destroy: (index) => index.close(),
  },
);
runKeywordIndexSuite(
  { describe, it },
  {
    name: 'sqlite-memory',
    create: () => createSqliteKeywordIndex({ path: ':memory:' }),
    destroy: (index) => index.close(),
  },
);

function document(
  id: string,
  text: string,
  extra: Partial<KeywordDocument['metadata']> = {},
  storyId = 's',
): KeywordDocument {
  return { id, text, metadata: { storyId, type: 'scene', timestamp: 1, sourceId: id, ...extra } };
}

const ids = (matches: readonly KeywordMatch[]) => matches.map((match) => match.id);

/** Ids and scores only: what ranking equality means. */
const ranking = (matches: readonly KeywordMatch[]) => matches.map(({ id, score }) => ({ id, score }));

const TEXTS = [
  'Mira lit the lantern on the harbor wall while the dragons slept.',
  'Oren carried a lantern into the archive, whispering to the dragon.',
  'The café by the harbor served bitter coffee to sleeping sailors.',
  'Kell never trusted lanterns that burned blue over the water.',
  'A dragon circled the tower; Mira counted its wingbeats from the harbor, the harbor, the harbor.',
  'Snow covered the mountain pass before winter ended.',
  'Merchants argued over copper prices in the market square.',
  'Bakers lit their ovens long before sunrise.',
  // "universal" analyses to "univers", which analysed again would become "univ": stored terms must not be re-analysed.
  'The universal law of the harbor: every lantern is lit by dusk.',
  // Only stop words: a document with no terms still counts in N and the average length.
  'And then it was over, and all of them were there.',
];

describe('createSqliteKeywordIndex', () => {
  it.each([
    ['with the mirror', true],
    ['with FTS5 bm25()', false],
  ])('ranks like the memory index %s: same analysis, same ordering on one story', async (_how, mirror) => {
    const documents = TEXTS.map((text, i) => document(`d${i}`, text));
    const sqlite = createSqliteKeywordIndex({ path: ':memory:', mirror });
    const memory = createMemoryKeywordIndex();
    await sqlite.upsert('s', documents);
    await memory.upsert('s', documents);
    for (const text of ['dragons', 'harbor lantern', 'Cafe', 'sleeping dragon harbor', 'winter', 'universal']) {
      const fromSqlite = ids(await sqlite.query('s', { text, topK: 10 }));
      const fromMemory = ids(await memory.query('s', { text, topK: 10 }));
      expect(fromSqlite, text).toEqual(fromMemory);
    }
    await sqlite.close();
  });

  it('rejects a mirror option that is not a boolean', () => {
    expect(() => createSqliteKeywordIndex({ path: ':memory:', mirror: 'yes' as unknown as boolean })).toThrow(
      ValidationError,
    );
  });

  it('rejects a maxMirroredStories that is not a whole number of at least 1', () => {
    for (const maxMirroredStories of [0, 1.5, Number.NaN]) {
      expect(() => createSqliteKeywordIndex({ path: ':memory:', maxMirroredStories })).toThrow(ValidationError);
    }
  });
});

describe('createSqliteKeywordIndex without the mirror (FTS5)', () => {
  it('matches words with combining marks (Devanagari, Arabic, Thai) as whole terms, like the memory index', async () => {
    const documents = [document('hindi', 'किताब'), document('arabic', 'كِتَاب'), document('thai', 'กินข้าว')];
    const memory = createMemoryKeywordIndex();
    const sqlite = createSqliteKeywordIndex({ path: ':memory:', mirror: false });
    await memory.upsert('s', documents);
    await sqlite.upsert('s', documents);
    // A lone consonant is no word of these texts; the words themselves are found.
    for (const text of ['क', 'ك', 'ت', 'ก', 'किताब', 'كِتَاب', 'กินข้าว']) {
      const expected = ids(await memory.query('s', { text, topK: 5 }));
      expect({ text, ids: ids(await sqlite.query('s', { text, topK: 5 })) }).toEqual({ text, ids: expected });
    }
    expect(ids(await sqlite.query('s', { text: 'किताब', topK: 5 }))).toEqual(['hindi']);
    await sqlite.close();
  });

  // The case timeout is the guard: this takes milliseconds, one FTS5 phrase per occurrence would take minutes.
  it('answers a long query of repeated words at once, a term weighing as often as it is asked', {
    timeout: 30_000,
  }, async () => {
    // One FTS5 phrase per query occurrence grew with the cube of the repeats: 1,200 on each side took 6 s.
    const documents = [document('long', 'the dragon '.repeat(4_000)), document('other', 'a quiet harbor')];
    const memory = createMemoryKeywordIndex();
    const sqlite = createSqliteKeywordIndex({ path: ':memory:', mirror: false });
    await memory.upsert('s', documents);
    await sqlite.upsert('s', documents);
    const text = 'dragon '.repeat(4_000);
    expect(ids(await memory.query('s', { text, topK: 5 }))).toEqual(['long']);
    const matches = await sqlite.query('s', { text, topK: 5 });
    expect(ids(matches)).toEqual(['long']);
    const [once] = await sqlite.query('s', { text: 'dragon', topK: 1 });
    expect(matches[0]!.score).toBeCloseTo(4_000 * once!.score, 6);
    await sqlite.close();
  });

  it('weighs a term asked n times n times, as the memory index does', async () => {
    const sqlite = createSqliteKeywordIndex({ path: ':memory:', mirror: false });
    await sqlite.upsert(
      's',
      TEXTS.map((text, i) => document(`d${i}`, text)),
    );
    const scoresOf = async (text: string) =>
      new Map((await sqlite.query('s', { text, topK: 10 })).map((match) => [match.id, match.score]));
    const [harbor, lantern, dragon] = await Promise.all(['harbor', 'lantern', 'dragon'].map(scoresOf));
    // Counts of 3, 1 and 2: each document scores 3 × its harbor score + its lantern score + 2 × its dragon score.
    const mixed = await sqlite.query('s', { text: 'harbor lantern dragon harbor dragon harbor', topK: 10 });
    const expected = new Map<string, number>();
    for (const [weight, scores] of [
      [3, harbor],
      [1, lantern],
      [2, dragon],
    ] as const) {
      for (const [id, score] of scores!) expected.set(id, (expected.get(id) ?? 0) + weight * score);
    }
    expect(mixed.map((match) => match.id).sort()).toEqual([...expected.keys()].sort());
    for (const match of mixed) expect(match.score, match.id).toBeCloseTo(expected.get(match.id)!, 9);
    for (let i = 1; i < mixed.length; i++) expect(mixed[i - 1]!.score).toBeGreaterThanOrEqual(mixed[i]!.score);
    await sqlite.close();
  });

  it(`searches the first ${MAX_FTS_QUERY_TERMS} distinct terms of a query`, async () => {
    const sqlite = createSqliteKeywordIndex({ path: ':memory:', mirror: false });
    const fillers = Array.from({ length: MAX_FTS_QUERY_TERMS - 1 }, (_, i) => `filler${i}`);
    await sqlite.upsert('s', [document('last', 'lantern'), document('past', 'harbor')]);
    const text = [...fillers, 'lantern', ...fillers, 'harbor'].join(' ');
    expect(ids(await sqlite.query('s', { text, topK: 5 }))).toEqual(['last']);
    await sqlite.close();
  });
});

describe('the in-memory mirror of createSqliteKeywordIndex', () => {
  it('scores exactly like createMemoryKeywordIndex fed the same documents and writes, per story', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const sqlite = createSqliteKeywordIndex({ database });
    // Another index name and another story in the same file: the mirror's statistics are the story's alone.
    const neighbour = createSqliteKeywordIndex({ database, name: 'neighbour' });
    const memory = createMemoryKeywordIndex();
    const documents = TEXTS.map((text, i) =>
      document(`d${i}`, text, { sceneIndex: i, characters: i % 2 === 0 ? ['mira'] : ['oren'] }),
    );
    const elsewhere = [
      document('x0', 'dragon dragon dragon harbor', {}, 'other'),
      document('x1', 'lantern lantern', {}, 'other'),
    ];
    await sqlite.upsert('s', documents);
    await sqlite.upsert('other', elsewhere);
    await neighbour.upsert('s', [document('n0', 'dragon harbor lantern universal')]);
    await memory.upsert('s', documents);
    const queries: Array<{ text: string; filter?: MetadataFilter }> = [
      { text: 'dragons' },
      { text: 'harbor lantern' },
      { text: 'harbor harbor dragon' },
      { text: 'universal lantern', filter: { sceneIndex: { $lt: 9 } } },
      { text: 'Cafe sailors', filter: { type: 'scene' } },
      { text: 'lantern dragon mira', filter: { characters: 'mira' } },
    ];
    const compare = async (label: string) => {
      for (const { text, filter } of queries) {
        const fromSqlite = await sqlite.query('s', { text, topK: 10, filter });
        const fromMemory = await memory.query('s', { text, topK: 10, filter });
        expect(fromSqlite.length, `${label}: ${text}`).toBeGreaterThan(0);
        expect(ranking(fromSqlite), `${label}: ${text}`).toEqual(ranking(fromMemory));
        expect(fromSqlite.map((match) => match.metadata)).toEqual(fromMemory.map((match) => match.metadata));
      }
    };
    await compare('loaded from SQLite');
    // The same writes through both: the mirror is updated in place, and must stay identical.
    const writes: Array<(index: KeywordIndex) => Promise<unknown>> = [
      (index) => index.upsert('s', [document('d1', 'The dragon archive burned; universal grief.', { sceneIndex: 1 })]),
      (index) => index.upsert('s', [document('d10', 'A harbor without lanterns.', { sceneIndex: 10 })]),
      (index) => index.delete('s', { ids: ['d3', 'missing'] }),
      (index) => index.delete('s', { filter: { characters: 'oren' } }),
    ];
    for (const write of writes) {
      await write(sqlite);
      await write(memory);
      await compare('written through');
    }
    expect(sqliteKeywordMirrorState(sqlite)).toEqual({ stories: ['s'], loads: 1 });
    expect(await sqlite.count('s')).toBe(await memory.count('s'));
    // And a fresh load of what SQLite holds agrees with the copy that was written through.
    const fresh = createSqliteKeywordIndex({ database });
    for (const { text, filter } of queries) {
      expect(ranking(await fresh.query('s', { text, topK: 10, filter }))).toEqual(
        ranking(await sqlite.query('s', { text, topK: 10, filter })),
      );
    }
    await fresh.close();
    await sqlite.close();
    await neighbour.close();
    database.close();
  });

  it('sees at the next query what another connection to the file wrote, deleted or dropped', async () => {
    const file = path.join(folder, 'two-connections.db');
    const first = openSqliteDatabase({ path: file });
    const second = openSqliteDatabase({ path: file });
    const reader = createSqliteKeywordIndex({ database: first });
    const writer = createSqliteKeywordIndex({ database: second });
    const query = { text: 'lantern', topK: 5 };
    await reader.upsert('s', [document('old', 'An old lantern.', { sceneIndex: 1 })]);
    expect(ids(await reader.query('s', query))).toEqual(['old']);
    expect(sqliteKeywordMirrorState(reader)).toEqual({ stories: ['s'], loads: 1 });

    await writer.upsert('s', [document('new', 'A lantern, a lantern, a new lantern.', { sceneIndex: 2 })]);
    expect(ids(await reader.query('s', query))).toEqual(['new', 'old']);
    expect(sqliteKeywordMirrorState(reader)!.loads).toBe(2);
    expect(await reader.count('s')).toBe(2);
    await writer.delete('s', { ids: ['old'] });
    expect(ids(await reader.query('s', query))).toEqual(['new']);
    expect(sqliteKeywordMirrorState(reader)!.loads).toBe(3);
    await writer.upsert('s', [document('third', 'The third lantern.', { sceneIndex: 3 })]);
    expect(ids(await reader.query('s', query))).toEqual(['new', 'third']);
    await writer.delete('s', { filter: { sceneIndex: { $gte: 3 } } });
    expect(ids(await reader.query('s', query))).toEqual(['new']);
    await writer.deleteStory('s');
    expect(await reader.query('s', query)).toEqual([]);
    expect(await reader.count('s')).toBe(0);
    // A write to another story leaves this story's mirror alone: the counter is read, nothing is reloaded. (The
    // story was empty when last read, and an empty story is not held: the first query after this write loads it.)
    await reader.upsert('s', [document('again', 'Lantern again.')]);
    expect(ids(await reader.query('s', query))).toEqual(['again']);
    const loads = sqliteKeywordMirrorState(reader)!.loads;
    await writer.upsert('other', [document('elsewhere', 'A lantern elsewhere.', {}, 'other')]);
    expect(ids(await reader.query('s', query))).toEqual(['again']);
    expect(sqliteKeywordMirrorState(reader)!.loads).toBe(loads);
    // A delete that matched nothing changed nothing: no reload either.
    await writer.delete('s', { ids: ['missing'] });
    expect(ids(await reader.query('s', query))).toEqual(['again']);
    expect(sqliteKeywordMirrorState(reader)!.loads).toBe(loads);
    // The other connection writes, then this one before any query: its copy is two writes behind, so it is not
    // patched with its own write alone but reloaded, and holds both.
    await writer.upsert('s', [document('theirs', 'Their lantern.')]);
    await reader.upsert('s', [document('ours', 'Our lantern.')]);
    expect(ids(await reader.query('s', query)).sort()).toEqual(['again', 'ours', 'theirs']);
    expect(sqliteKeywordMirrorState(reader)!.loads).toBe(loads + 1);
    await reader.close();
    await writer.close();
    first.close();
    second.close();
  });

  it('sees what another index on the same connection wrote, and is not reloaded by a vector write', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const reader = createSqliteKeywordIndex({ database });
    const writer = createSqliteKeywordIndex({ database });
    const vectors = createSqliteVectorIndex({ database, dimensions: 2 });
    const query = { text: 'lantern', topK: 5 };
    await reader.upsert('s', [document('old', 'An old lantern.')]);
    expect(ids(await reader.query('s', query))).toEqual(['old']);
    // Own commits do not move data_version: only the shared per-connection write count tells the reader.
    await writer.upsert('s', [document('new', 'A lantern, a lantern, a new lantern.')]);
    expect(ids(await reader.query('s', query))).toEqual(['new', 'old']);
    await writer.deleteStory('s');
    expect(await reader.query('s', query)).toEqual([]);
    await reader.upsert('s', [document('mine', 'My lantern.')]);
    expect(ids(await reader.query('s', query))).toEqual(['mine']);
    const loads = sqliteKeywordMirrorState(reader)!.loads;
    await vectors.upsert('s', [
      { id: 'v', values: new Float32Array([1, 0]), metadata: document('v', '').metadata as never },
    ]);
    expect(ids(await reader.query('s', query))).toEqual(['mine']);
    expect(sqliteKeywordMirrorState(reader)!.loads).toBe(loads);
    await reader.close();
    await writer.close();
    await vectors.close();
    database.close();
  });

  it('applies its own writes to the loaded mirror without reloading it', async () => {
    const index = createSqliteKeywordIndex({ path: ':memory:' });
    const query = { text: 'universal lantern', topK: 5 };
    await index.upsert('s', [document('a', 'A lantern.', { sceneIndex: 1 }), document('b', 'Bread.')]);
    expect(ids(await index.query('s', query))).toEqual(['a']);
    // Terms written through are analysed once, like those loaded: "universal" is found either way.
    await index.upsert('s', [document('c', 'The universal lantern, lantern.', { sceneIndex: 2 })]);
    await index.upsert('s', [document('b', 'A universal truth.', { sceneIndex: 3 })]);
    // b replaced "Bread" (which matched nothing): a's idf, twice a's length.
    expect(ids(await index.query('s', query))).toEqual(['c', 'a', 'b']);
    expect(await index.delete('s', { ids: ['a', 'missing'] })).toBe(1);
    expect(ids(await index.query('s', query))).toEqual(['c', 'b']);
    expect(await index.delete('s', { filter: { sceneIndex: { $gte: 3 } } })).toBe(1);
    expect(ids(await index.query('s', query))).toEqual(['c']);
    expect(await index.count('s')).toBe(1);
    await index.deleteStory('s');
    expect(await index.query('s', query)).toEqual([]);
    expect(await index.count('s')).toBe(0);
    await index.upsert('s', [document('d', 'Universal.')]);
    expect(ids(await index.query('s', query))).toEqual(['d']);
    expect(sqliteKeywordMirrorState(index)).toEqual({ stories: ['s'], loads: 1 });
    await index.close();
  });

  it('leaves SQLite and the mirror as they were when a write fails', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const index = createSqliteKeywordIndex({ database });
    const direct = createSqliteKeywordIndex({ database, mirror: false });
    const query = { text: 'lantern harbor', topK: 5 };
    await index.upsert('s', [document('a', 'A lantern by the harbor.'), document('b', 'A lantern.')]);
    const before = ranking(await index.query('s', query));
    expect(before.map((match) => match.id)).toEqual(['a', 'b']);
    const unchanged = async () => {
      expect(ranking(await index.query('s', query))).toEqual(before);
      expect(await index.count('s')).toBe(2);
      expect(ids(await direct.query('s', query))).toEqual(['a', 'b']);
      expect(await direct.count('s')).toBe(2);
    };

    // Invalid: nothing reaches SQLite.
    await expect(index.upsert('s', [document('c', 'Harbor lantern.'), document('bad id!', 'x')])).rejects.toThrow(
      ValidationError,
    );
    await unchanged();
    // Valid, but SQLite refuses the second document or any delete inside the transaction.
    const native = nativeOf(database);
    native.exec(`CREATE TEMP TRIGGER refuse_insert BEFORE INSERT ON keyword_documents WHEN NEW.id = 'd'
        BEGIN SELECT RAISE(ABORT, 'disk full'); END;
      CREATE TEMP TRIGGER refuse_delete BEFORE DELETE ON keyword_documents BEGIN SELECT RAISE(ABORT, 'disk full'); END;`);
    await expect(
      index.upsert('s', [document('c', 'Harbor lantern, harbor lantern.'), document('d', 'Lantern.')]),
    ).rejects.toThrow(/disk full/);
    await expect(index.upsert('s', [document('a', 'Replaced.')])).rejects.toThrow(/disk full/);
    await expect(index.delete('s', { ids: ['a'] })).rejects.toThrow(/disk full/);
    await expect(index.delete('s', { filter: { type: 'scene' } })).rejects.toThrow(/disk full/);
    await expect(index.deleteStory('s')).rejects.toThrow(/disk full/);
    native.exec('DROP TRIGGER refuse_insert; DROP TRIGGER refuse_delete;');
    await unchanged();
    // The counter is bumped in the write's own transaction: when the bump fails, the documents are rolled back.
    native.exec(`CREATE TEMP TRIGGER refuse_bump BEFORE UPDATE ON keyword_index_versions
        BEGIN SELECT RAISE(ABORT, 'counter refused'); END;`);
    await expect(index.upsert('s', [document('c', 'Harbor lantern, harbor lantern.')])).rejects.toThrow(
      /counter refused/,
    );
    native.exec('DROP TRIGGER refuse_bump;');
    await unchanged();
    // Served from the mirror it loaded first, not rebuilt after the failures.
    expect(sqliteKeywordMirrorState(index)).toEqual({ stories: ['s'], loads: 1 });
    await index.close();
    await direct.close();
    database.close();
  });

  it('is absent with mirror: false', async () => {
    const index = createSqliteKeywordIndex({ path: ':memory:', mirror: false });
    await index.upsert('s', [document('a', 'A lantern.')]);
    expect(ids(await index.query('s', { text: 'lantern', topK: 1 }))).toEqual(['a']);
    expect(sqliteKeywordMirrorState(index)).toBeUndefined();
    await index.close();
  });

  it('opens a file of schema version 2 and keeps its documents', async () => {
    const file = path.join(folder, 'version-2.db');
    const before = createSqliteKeywordIndex({ path: file, mirror: false });
    await before.upsert('s', [document('a', 'A lantern.'), document('b', 'A harbor lantern.')]);
    await before.close();
    // What version 2 wrote: everything but the keyword counters.
    const old = openSqliteDatabase({ path: file });
    nativeOf(old).exec(`${SNAPSHOTS_BEFORE_VERSION_5} DROP TABLE keyword_index_versions; PRAGMA user_version = 2;`);
    old.close();

    const database = openSqliteDatabase({ path: file });
    expect(database.schemaVersion).toBe(SQLITE_SCHEMA_VERSION);
    expect(nativeOf(database).pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    const index = createSqliteKeywordIndex({ database });
    const query = { text: 'harbor lantern', topK: 5 };
    expect(ids(await index.query('s', query))).toEqual(['b', 'a']);
    const other = openSqliteDatabase({ path: file });
    await createSqliteKeywordIndex({ database: other }).upsert('s', [document('c', 'Harbor, harbor lantern.')]);
    other.close();
    expect(ids(await index.query('s', query))).toEqual(['c', 'b', 'a']);
    await index.close();
    database.close();
  });

  it('opens a file of schema version 3 and rebuilds its terms, which combining marks no longer split', async () => {
    const file = path.join(folder, 'version-3.db');
    const before = createSqliteKeywordIndex({ path: file, mirror: false });
    await before.upsert('s', [document('hindi', 'किताब'), document('lantern', 'A harbor lantern.')]);
    await before.close();
    // What version 3 wrote: the terms table tokenized by unicode61 with its default categories.
    const old = openSqliteDatabase({ path: file });
    nativeOf(old).exec(`${SNAPSHOTS_BEFORE_VERSION_5}
      CREATE VIRTUAL TABLE keyword_terms_v3 USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
      INSERT INTO keyword_terms_v3 (rowid, terms) SELECT rowid, terms FROM keyword_terms;
      DROP TABLE keyword_terms;
      ALTER TABLE keyword_terms_v3 RENAME TO keyword_terms;
      PRAGMA user_version = 3;`);
    const consonantMatches = () =>
      nativeOf(old).prepare(`SELECT count(*) FROM keyword_terms WHERE keyword_terms MATCH '"क"'`).pluck().get();
    expect(consonantMatches()).toBe(1);
    old.close();

    const database = openSqliteDatabase({ path: file });
    expect(nativeOf(database).pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    for (const mirror of [false, true]) {
      const index = createSqliteKeywordIndex({ database, mirror });
      expect(await index.query('s', { text: 'क', topK: 5 }), `mirror: ${mirror}`).toEqual([]);
      expect(ids(await index.query('s', { text: 'किताब', topK: 5 })), `mirror: ${mirror}`).toEqual(['hindi']);
      expect(ids(await index.query('s', { text: 'lanterns', topK: 5 })), `mirror: ${mirror}`).toEqual(['lantern']);
      expect(await index.count('s')).toBe(2);
      await index.close();
    }
    // Writes after the migration replace and remove terms as before.
    const index = createSqliteKeywordIndex({ database, mirror: false });
    await index.upsert('s', [document('lantern', 'A harbor at night.')]);
    expect(await index.query('s', { text: 'lantern', topK: 5 })).toEqual([]);
    expect(ids(await index.query('s', { text: 'harbor', topK: 5 }))).toEqual(['lantern']);
    await index.close();
    database.close();
  });

  it('holds at most maxMirroredStories stories and none without documents, and reloads a dropped one fresh', async () => {
    const file = path.join(folder, 'bounded-mirrors.db');
    const reader = createSqliteKeywordIndex({ path: file, maxMirroredStories: 2 });
    const writer = createSqliteKeywordIndex({ path: file });
    const query = { text: 'lantern', topK: 5 };
    for (const story of ['a', 'b', 'c']) await writer.upsert(story, [document(`${story}1`, 'A lantern.', {}, story)]);
    for (const story of ['a', 'b', 'c']) expect(ids(await reader.query(story, query))).toEqual([`${story}1`]);
    // a, queried first, was dropped for c.
    expect(sqliteKeywordMirrorState(reader)!.stories.sort()).toEqual(['b', 'c']);
    for (let story = 0; story < 100; story++) expect(await reader.query(`empty-${story}`, query)).toEqual([]);
    expect(sqliteKeywordMirrorState(reader)!.stories.sort()).toEqual(['b', 'c']);
    await writer.upsert('a', [document('a2', 'Lantern, lantern.', {}, 'a')]);
    expect(ids(await reader.query('a', query))).toEqual(['a2', 'a1']);
    await reader.close();
    await writer.close();
  });

  it.each([
    ['metadata that is not JSON', '{"storyId": "s", '],
    ['metadata of another shape', '{"storyId": "s", "type": "scene", "timestamp": 1, "text": ["not", "text"]}'],
  ])('refuses a story holding %s, naming the record, with or without the mirror', async (_what, metadata) => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const writer = createSqliteKeywordIndex({ database });
    const meta = (id: string) => ({ storyId: 's', type: 'scene' as const, timestamp: 1, sourceId: id });
    await writer.upsert('s', [
      { id: 'a', text: 'the lantern', metadata: meta('a') },
      { id: 'b', text: 'the lantern room', metadata: meta('b') },
    ]);
    nativeOf(database).prepare(`UPDATE keyword_documents SET metadata = ? WHERE id = 'b'`).run(metadata);
    // Fresh index objects read the file (the writer's mirror never saw the damage): a load, and an FTS5 query.
    for (const mirror of [true, false]) {
      const reader = createSqliteKeywordIndex({ database, mirror });
      await expect(reader.query('s', { text: 'lantern', topK: 5 })).rejects.toSatisfy(
        (error) =>
          StorageError.isInstance(error) &&
          error.reason === 'corrupt' &&
          error.message.includes('damaged keyword record "b" in story "s"'),
      );
      await reader.close();
    }
    await writer.delete('s', { ids: ['b'] });
    const reader = createSqliteKeywordIndex({ database });
    expect((await reader.query('s', { text: 'lantern', topK: 5 })).map((match) => match.id)).toEqual(['a']);
    await writer.close();
    await reader.close();
    database.close();
  });

  it('maps a failed load to a StorageError', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    const index = createSqliteKeywordIndex({ database });
    nativeOf(database).exec('DROP TABLE keyword_index_versions');
    await expect(index.query('s', { text: 'lantern', topK: 1 })).rejects.toSatisfy(
      (error) => StorageError.isInstance(error) && /query failed/.test(error.message),
    );
    await index.close();
    database.close();
  });
});
