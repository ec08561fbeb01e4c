/**
 * Edges shared by the SQLite vector and keyword indexes: a closed database, and filters too large to bind one value
 * per SQL variable. Each is checked against the memory index where it has an answer.
 */
import { describe, expect, it } from 'vitest';
import type { MetadataFilter } from '../src/context/filter.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createSqliteKeywordIndex } from '../src/context/sqlite-keyword-index.js';
import { createSqliteVectorIndex } from '../src/context/sqlite-vector-index.js';
import { ClosedError } from '../src/core/errors.js';
import { openSqliteDatabase } from '../src/state/sqlite-database.js';

const metadata = (id: string, extra: Record<string, unknown> = {}) => ({
  storyId: 's',
  type: 'scene' as const,
  timestamp: 1,
  sourceId: id,
  ...extra,
});

/** 40 branches of 1,000 values: each list within validateFilter's 1,000 values, the branches within its 100. */
function manyValues(field: 'sourceId' | 'characters', last: string, operator: '$in' | '$nin'): MetadataFilter {
  return {
    $or: Array.from({ length: 40 }, (_, branch) => ({
      [field]: { [operator]: [...Array.from({ length: 999 }, (_, i) => `other-${branch}-${i}`), last] },
    })),
  };
}

describe('creating a SQLite index on a closed database', () => {
  it('gives ClosedError, not "npm install sqlite-vec" or a TypeError', () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    database.close();
    expect(() => createSqliteVectorIndex({ database, dimensions: 2 })).toThrow(ClosedError);
    expect(() => createSqliteKeywordIndex({ database })).toThrow(ClosedError);
  });

  it('gives ClosedError too when the database already served indexes before it was closed', async () => {
    const database = openSqliteDatabase({ path: ':memory:' });
    await createSqliteVectorIndex({ database, dimensions: 2 }).close();
    await createSqliteKeywordIndex({ database }).close();
    database.close();
    expect(() => createSqliteVectorIndex({ database, dimensions: 2 })).toThrow(ClosedError);
    expect(() => createSqliteKeywordIndex({ database })).toThrow(ClosedError);
  });
});

describe('filters holding more values than SQLite has variables', () => {
  it.each([true, false])('delete by such a filter, as the memory index does (mirror: %s)', async (mirror) => {
    const filter = manyValues('sourceId', 'a', '$in');
    const memory = createMemoryVectorIndex({ dimensions: 2 });
    const vectors = createSqliteVectorIndex({ path: ':memory:', dimensions: 2, mirror });
    const keywords = createSqliteKeywordIndex({ path: ':memory:', mirror });
    const records = ['a', 'b'].map((id) => ({ id, values: new Float32Array([1, 0]), metadata: metadata(id) }));
    await memory.upsert('s', records);
    await vectors.upsert('s', records);
    await keywords.upsert('s', [
      { id: 'a', text: 'the lantern', metadata: metadata('a') },
      { id: 'b', text: 'the lantern', metadata: metadata('b') },
    ]);
    expect(await memory.delete('s', { filter })).toBe(1);
    await expect(vectors.delete('s', { filter })).resolves.toBe(1);
    await expect(keywords.delete('s', { filter })).resolves.toBe(1);
    expect((await vectors.query('s', { vector: new Float32Array([1, 0]), topK: 5 })).map((m) => m.id)).toEqual(['b']);
    expect((await keywords.query('s', { text: 'lantern', topK: 5 })).map((m) => m.id)).toEqual(['b']);
    await vectors.close();
    await keywords.close();
  });

  it('queries without the mirror with such $in and $nin filters, on scalar and list fields', async () => {
    const vectors = createSqliteVectorIndex({ path: ':memory:', dimensions: 2, mirror: false });
    const keywords = createSqliteKeywordIndex({ path: ':memory:', mirror: false });
    const memoryVectors = createMemoryVectorIndex({ dimensions: 2 });
    const memoryKeywords = createMemoryKeywordIndex();
    const items = [
      { id: 'a', characters: ['mira'] },
      { id: 'b', characters: ['oren'] },
      { id: 'c', characters: ['mira', 'kell'] },
    ];
    for (const vectorIndex of [vectors, memoryVectors]) {
      await vectorIndex.upsert(
        's',
        items.map(({ id, characters }) => ({
          id,
          values: new Float32Array([1, 0]),
          metadata: metadata(id, { characters }),
        })),
      );
    }
    for (const keywordIndex of [keywords, memoryKeywords]) {
      await keywordIndex.upsert(
        's',
        items.map(({ id, characters }) => ({ id, text: 'the lantern', metadata: metadata(id, { characters }) })),
      );
    }
    const filters = [
      manyValues('sourceId', 'b', '$in'),
      manyValues('characters', 'mira', '$in'),
      manyValues('characters', 'kell', '$nin'),
      manyValues('sourceId', 'b', '$nin'),
    ];
    for (const filter of filters) {
      const vectorQuery = { vector: new Float32Array([1, 0]), topK: 5, filter };
      const keywordQuery = { text: 'lantern', topK: 5, filter };
      const expectedVectors = (await memoryVectors.query('s', vectorQuery)).map((match) => match.id);
      const expectedKeywords = (await memoryKeywords.query('s', keywordQuery)).map((match) => match.id);
      expect(expectedVectors.length).toBeGreaterThan(0);
      expect((await vectors.query('s', vectorQuery)).map((match) => match.id)).toEqual(expectedVectors);
      expect((await keywords.query('s', keywordQuery)).map((match) => match.id)).toEqual(expectedKeywords);
    }
    await vectors.close();
    await keywords.close();
  });
});
