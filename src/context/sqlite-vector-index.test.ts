import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../core/errors.js';
import type { VectorRecordInput } from '../state/schema.js';
import { runVectorIndexSuite } from '../testing/vector-index-suite.js';
import { type FilterableField, type MetadataFilter, matchesFilter } from './filter.js';
import { createSqliteVectorIndex } from './sqlite-vector-index.js';

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
    name: 'sqlite-memory',
    create: () => createSqliteVectorIndex({ path: ':memory:', dimensions: 8 }),
    destroy: (index) => index.close(),
  },
);

describe('createSqliteVectorIndex', () => {
  it('filters in SQL exactly as matchesFilter does in JavaScript', async () => {
    const index = createSqliteVectorIndex({ path: ':memory:', dimensions: 2 });
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
