import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runKeywordIndexSuite } from '../testing/keyword-index-suite.js';
import { createMemoryKeywordIndex } from './memory-keyword-index.js';
import { createSqliteKeywordIndex } from './sqlite-keyword-index.js';

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
    name: 'sqlite-memory',
    create: () => createSqliteKeywordIndex({ path: ':memory:' }),
    destroy: (index) => index.close(),
  },
);

describe('createSqliteKeywordIndex', () => {
  it('ranks like the memory index: same analysis, same BM25 ordering on one story', async () => {
    const texts = [
      'Mira lit the lantern on the harbor wall while the dragons slept.',
      'Oren carried a lantern into the archive, whispering to the dragon.',
      'The café by the harbor served bitter coffee to sleeping sailors.',
      'Kell never trusted lanterns that burned blue over the water.',
      'A dragon circled the tower; Mira counted its wingbeats from the harbor.',
      'Snow covered the mountain pass before winter ended.',
      'Merchants argued over copper prices in the market square.',
      'Bakers lit their ovens long before sunrise.',
    ];
    const documents = texts.map((text, i) => ({
      id: `d${i}`,
      text,
      metadata: { storyId: 's', type: 'scene' as const, timestamp: i, sourceId: `d${i}` },
    }));
    const sqlite = createSqliteKeywordIndex({ path: ':memory:' });
    const memory = createMemoryKeywordIndex();
    await sqlite.upsert('s', documents);
    await memory.upsert('s', documents);
    for (const text of ['dragons', 'harbor lantern', 'Cafe', 'sleeping dragon harbor', 'winter']) {
      const fromSqlite = (await sqlite.query('s', { text, topK: 10 })).map((match) => match.id);
      const fromMemory = (await memory.query('s', { text, topK: 10 })).map((match) => match.id);
      expect(fromSqlite, text).toEqual(fromMemory);
    }
    await sqlite.close();
  });
});
