import { describe, expect, it, vi } from 'vitest';
import { ValidationError } from '../core/errors.js';
import type { VectorMetadataInput } from '../state/schema.js';
import type { Embedder } from './embedder.js';
import type { MetadataFilter } from './filter.js';
import { createHashingEmbedder } from './hashing-embedder.js';
import { createMemoryKeywordIndex } from './memory-keyword-index.js';
import { createMemoryVectorIndex } from './memory-vector-index.js';
import {
  composeEmbeddingText,
  composeIndexText,
  createHybridRetriever,
  findNamedEntities,
  type HybridRetrieverOptions,
  isSearchableQuery,
  type RetrievalTimings,
  reciprocalRankFusion,
} from './retrieval.js';
import type { VectorIndex } from './vector-index.js';

const STORY = 'story-1';

interface Doc {
  id: string;
  text: string;
  metadata?: Partial<VectorMetadataInput>;
}

async function setup(
  docs: Doc[],
  options?: HybridRetrieverOptions,
  embedder: Embedder = createHashingEmbedder({ dimensions: 256 }),
) {
  return createHybridRetriever({ ...(await indexesOf(docs, embedder)), options });
}

/** Both indexes holding `docs`, and the embedder they were embedded with. */
async function indexesOf(docs: Doc[], embedder: Embedder = createHashingEmbedder({ dimensions: 256 })) {
  const vectors = createMemoryVectorIndex({ dimensions: embedder.dimensions });
  const keywords = createMemoryKeywordIndex();
  const values: Float32Array[] = [];
  for (let start = 0; start < docs.length; start += embedder.maxBatchSize) {
    values.push(...(await embedder.embed(docs.slice(start, start + embedder.maxBatchSize).map((doc) => doc.text))));
  }
  const metadata = (doc: Doc): VectorMetadataInput => ({
    storyId: STORY,
    type: 'scene',
    timestamp: 0,
    sourceId: doc.id,
    ...doc.metadata,
  });
  await vectors.upsert(
    STORY,
    docs.map((doc, i) => ({ id: doc.id, values: values[i]!, metadata: metadata(doc) })),
  );
  await keywords.upsert(
    STORY,
    docs.map((doc) => ({ id: doc.id, text: doc.text, metadata: metadata(doc) })),
  );
  return { vectors, keywords, embedder };
}

describe('reciprocalRankFusion', () => {
  it('sums weight / (k + rank) over the rankings a candidate appears in', () => {
    expect(
      reciprocalRankFusion(
        [
          { rank: 1, weight: 1 },
          { rank: 3, weight: 1 },
        ],
        60,
      ),
    ).toBeCloseTo(1 / 61 + 1 / 63);
    expect(
      reciprocalRankFusion(
        [
          { rank: 2, weight: 0.5 },
          { rank: undefined, weight: 1 },
        ],
        10,
      ),
    ).toBeCloseTo(0.5 / 12);
    expect(reciprocalRankFusion([], 60)).toBe(0);
  });
});

describe('createHybridRetriever', () => {
  it('hands out metadata of its own: changing a result changes nothing in the indexes', async () => {
    // The retriever reads the in-process indexes' own metadata objects (`sharedMetadata`) and copies only what it
    // returns; a result that shared them would let a caller rewrite the index.
    const retriever = await setup([
      {
        id: 'key',
        text: 'Mira hid the silver key.',
        metadata: { characters: ['mira'], themes: ['secrets'], chapterId: 'chapter-0001' },
      },
      {
        id: 'storm',
        text: 'A storm wrecked the boats.',
        metadata: { characters: ['tomas'], chapterId: 'chapter-0002' },
      },
    ]);
    const query = { query: 'the silver key Mira hid', k: 2 };
    const first = await retriever.retrieve(STORY, query);
    const key = first.candidates.find((candidate) => candidate.id === 'key')!;
    key.metadata.characters.push('ghost');
    key.metadata.themes.length = 0;
    key.metadata.importance = 0;
    const groups = await retriever.retrieveGroups(STORY, { ...query, k: 1 });
    expect(groups.groups[0]?.members[0]?.id).toBe('key');
    groups.groups[0]!.members[0]!.metadata.locations.push('nowhere');
    const again = (await retriever.retrieve(STORY, query)).candidates.find((candidate) => candidate.id === 'key')!;
    expect(again.metadata).toMatchObject({ characters: ['mira'], themes: ['secrets'], locations: [], importance: 0.5 });
    expect(again.signals.exact).toBe(false);
  });

  const docs: Doc[] = [
    { id: 'key', text: 'Mira hid the silver key beneath the loose floorboard of the archive.' },
    { id: 'storm', text: 'A storm wrecked three fishing boats in the harbour at dawn.' },
    { id: 'market', text: 'Tomas sold apples and pears at the crowded winter market.' },
    { id: 'dragon', text: 'The old dragon slept coiled around the lighthouse.' },
  ];

  it('fuses both rankings with rrf: a candidate ranked by both sources scores the sum of its reciprocal ranks', async () => {
    const retriever = await setup(docs, { fusion: { method: 'rrf', rrfK: 60, denseWeight: 1, lexicalWeight: 1 } });
    const { candidates } = await retriever.retrieve(STORY, { query: 'silver key archive', k: 2 });
    const top = candidates[0]!;
    expect(top.id).toBe('key');
    expect(top.signals.dense?.rank).toBe(1);
    expect(top.signals.lexical?.rank).toBe(1);
    expect(top.signals.fused).toBeCloseTo(2 / 61);
    expect(top.signals.relevance).toBe(1);
  });

  it('fuses with combsum: min-max normalised scores, weighted', async () => {
    const retriever = await setup(docs, {
      fusion: { method: 'combsum', denseWeight: 0.5, lexicalWeight: 1 },
      mmr: { lambda: 1 },
    });
    const { candidates } = await retriever.retrieve(STORY, { query: 'silver key archive', k: 4 });
    // The best of both rankings gets the full weight of each.
    expect(candidates[0]!.signals.fused).toBeCloseTo(1.5);
    for (const candidate of candidates) {
      expect(candidate.signals.fused).toBeGreaterThanOrEqual(0);
      expect(candidate.signals.fused).toBeLessThanOrEqual(1.5 + 1e-9);
    }
  });

  it('lets importance and recency reorder otherwise equal candidates', async () => {
    const twins: Doc[] = [
      { id: 'old', text: 'The lantern went out in the tower.', metadata: { sceneIndex: 1, importance: 0.5 } },
      { id: 'new', text: 'The lantern went out in the tower.', metadata: { sceneIndex: 40, importance: 0.5 } },
      { id: 'vital', text: 'The lantern went out in the tower.', metadata: { sceneIndex: 1, importance: 1 } },
    ];
    const options: HybridRetrieverOptions = { mmr: { lambda: 1 }, scoring: { recency: 1, importance: 0 } };
    const byRecency = await (await setup(twins, options)).retrieve(STORY, {
      query: 'lantern tower',
      k: 3,
      now: { sceneIndex: 41 },
    });
    expect(byRecency.candidates[0]!.id).toBe('new');
    expect(byRecency.candidates[0]!.signals.recency).toBeGreaterThan(byRecency.candidates[1]!.signals.recency);

    const byImportance = await (
      await setup(twins, { mmr: { lambda: 1 }, scoring: { recency: 0, importance: 1 } })
    ).retrieve(STORY, { query: 'lantern tower', k: 3 });
    expect(byImportance.candidates[0]!.id).toBe('vital');
    // Without "now", recency is neutral.
    expect(byImportance.candidates.every((c) => c.signals.recency === 1)).toBe(true);
  });

  it('halves recency every halfLifeMs of timestamp age when scene indexes are unknown', async () => {
    const day = 24 * 3_600_000;
    // Same text, no scene index: only the timestamp tells them apart. By id alone 'older' would come first.
    const twins: Doc[] = [
      { id: 'older', text: 'The lantern went out in the tower.', metadata: { timestamp: 0 } },
      { id: 'recent', text: 'The lantern went out in the tower.', metadata: { timestamp: 7 * day } },
    ];
    const { candidates } = await (await setup(twins, { mmr: { lambda: 1 } })).retrieve(STORY, {
      query: 'lantern tower',
      k: 2,
      now: { timestamp: 14 * day },
    });
    expect(candidates.map((c) => c.id)).toEqual(['recent', 'older']);
    // The default half-life is 7 days: one half-life old counts 0.5, two count 0.25.
    expect(candidates[0]!.signals.recency).toBeCloseTo(0.5);
    expect(candidates[1]!.signals.recency).toBeCloseTo(0.25);
    // With the default recency weight β = 0.15, the gap in final score is β times the gap in recency.
    expect(candidates[0]!.signals.final - candidates[1]!.signals.final).toBeCloseTo(0.15 * (0.5 - 0.25));
  });

  it('drops a near-duplicate with MMR and says why', async () => {
    const withCopy: Doc[] = [
      { id: 'a', text: 'Mira hid the silver key beneath the loose floorboard of the archive.' },
      { id: 'a-copy', text: 'Mira hid the silver key beneath the loose floorboard of the archive!' },
      { id: 'b', text: 'Tomas lost a silver coin somewhere in the archive.' },
      ...docs.slice(1),
    ];
    const query = { query: 'where is the silver key of the archive', k: 2 };
    const plain = await (await setup(withCopy, { mmr: { lambda: 1 } })).retrieve(STORY, query);
    expect(plain.candidates.map((c) => c.id).sort()).toEqual(['a', 'a-copy']);
    const diverse = await (await setup(withCopy, { mmr: { lambda: 0.5 } })).retrieve(STORY, query);
    const chosen = diverse.candidates.map((c) => c.id);
    expect(chosen[0]).toBe(plain.candidates[0]!.id);
    expect(chosen).not.toContain(plain.candidates[1]!.id);
    expect(diverse.dropped).toHaveLength(1);
    expect(diverse.dropped[0]).toMatchObject({
      id: plain.candidates[1]!.id,
      reason: 'near-duplicate',
      similarTo: plain.candidates[0]!.id,
    });
    expect(diverse.dropped[0]!.similarity).toBeGreaterThan(0.9);
  });

  it('boosts exact matches, fetching them when neither search found them', async () => {
    const tagged: Doc[] = [
      ...docs,
      { id: 'tomas-scene', text: 'He counted coins by candlelight.', metadata: { characters: ['tomas'] } },
    ];
    const retriever = await setup(tagged, { mmr: { lambda: 1 } });
    const byCharacter = await retriever.retrieve(STORY, {
      query: 'silver key',
      k: 2,
      exact: { characters: ['tomas'] },
    });
    expect(byCharacter.candidates.map((c) => c.id)).toContain('tomas-scene');
    expect(byCharacter.candidates.find((c) => c.id === 'tomas-scene')!.signals.exact).toBe(true);
    const byId = await retriever.retrieve(STORY, { query: 'silver key', k: 2, exact: { ids: ['dragon'] } });
    expect(byId.candidates.map((c) => c.id)).toEqual(['key', 'dragon']);
  });

  it('marks every candidate that satisfies the exact match as exact, whichever search found it', async () => {
    // Vectors chosen by hand: the four "near" scenes are the closest to the query, "lexical" is orthogonal to it and
    // only the keyword search finds it. All five are Tomas's, so all five are exact matches.
    const vectorOf = (text: string): number[] => {
      if (text === 'silver key') return [1, 0, 0, 0];
      if (text.startsWith('silver key')) return [0, 1, 0, 0];
      const near = /near (\d)/.exec(text);
      return near ? [1, Number(near[1]) / 10, 0, 0] : [0, 0, 1, 0];
    };
    const embedder: Embedder = {
      specificationVersion: 'v1',
      provider: 'test',
      modelId: 'by-hand',
      dimensions: 4,
      maxBatchSize: 100,
      embed: async (texts) => texts.map((text) => Float32Array.from(vectorOf(text))),
    };
    const cast: Doc[] = [
      { id: 'lexical', text: 'silver key, silver key', metadata: { characters: ['tomas'] } },
      ...[1, 2, 3, 4].map((n) => ({ id: `near-${n}`, text: `near ${n} gate`, metadata: { characters: ['tomas'] } })),
      { id: 'other', text: 'a silver key of Mira', metadata: { characters: ['mira'] } },
    ];
    // Pool of four: the exact search returns the four near scenes, and "lexical" comes only from the keyword search.
    const retriever = await setup(cast, { candidates: 4, grouping: { weight: 0 }, mmr: { lambda: 1 } }, embedder);
    const result = await retriever.retrieve(STORY, { query: 'silver key', k: 6, exact: { characters: ['tomas'] } });
    const ids = result.candidates.map((candidate) => candidate.id);
    expect(ids).toContain('lexical');
    expect(ids).toContain('other');
    for (const candidate of result.candidates) {
      expect(candidate.signals.exact, candidate.id).toBe(candidate.metadata.characters.includes('tomas'));
    }
  });

  it('skips the extra exact search when the vector search already returned enough exact matches', async () => {
    const embedder = createHashingEmbedder({ dimensions: 256 });
    const cast: Doc[] = Array.from({ length: 12 }, (_, at) => ({
      id: `scene-${at}`,
      text: `${at % 2 === 0 ? 'Tomas' : 'Mira'} walked to the harbour with the silver key, day ${at}`,
      metadata: { characters: [at % 2 === 0 ? 'tomas' : 'mira', ...(at === 11 ? ['iris'] : [])] },
    }));
    const vectors = createMemoryVectorIndex({ dimensions: 256 });
    const keywords = createMemoryKeywordIndex();
    const values = await embedder.embed(cast.map((doc) => doc.text));
    const metadata = (doc: Doc, at: number) => ({
      storyId: STORY,
      type: 'scene' as const,
      timestamp: 0,
      sourceId: doc.id,
      sceneIndex: at,
      ...doc.metadata,
    });
    await vectors.upsert(
      STORY,
      cast.map((doc, at) => ({ id: doc.id, values: values[at]!, metadata: metadata(doc, at) })),
    );
    await keywords.upsert(
      STORY,
      cast.map((doc, at) => ({ id: doc.id, text: doc.text, metadata: metadata(doc, at) })),
    );
    const queries: unknown[] = [];
    const counted = {
      ...vectors,
      query: (storyId: string, query: Parameters<typeof vectors.query>[1]) => {
        queries.push(query.filter);
        return vectors.query(storyId, query);
      },
    };
    const retriever = createHybridRetriever({
      vectors: counted,
      keywords,
      embedder,
      options: { candidates: 4, grouping: { weight: 0 }, mmr: { lambda: 1 } },
    });
    const everyone = await retriever.retrieve(STORY, {
      query: 'silver key harbour',
      k: 3,
      exact: { characters: ['tomas', 'mira'] },
    });
    // Every scene is Tomas's or Mira's: the vector search's four are all exact matches, so no second search runs.
    expect(queries).toHaveLength(1);
    expect(everyone.candidates.every((candidate) => candidate.signals.exact)).toBe(true);
    queries.length = 0;
    const rare = await retriever.retrieve(STORY, {
      query: 'silver key harbour',
      k: 3,
      exact: { characters: ['iris'] },
    });
    // Only one scene has Iris: the extra search runs, and brings her scene in.
    expect(queries).toHaveLength(2);
    expect(rare.candidates.map((candidate) => candidate.id)).toContain('scene-11');
  });

  it('asks each source for a grouping pool of 20 per requested result (at least the plain pool), or as configured', async () => {
    const embedder = createHashingEmbedder({ dimensions: 64 });
    const vectors = createMemoryVectorIndex({ dimensions: 64 });
    const keywords = createMemoryKeywordIndex();
    const asked: Array<[string, number]> = [];
    const spied = (options?: HybridRetrieverOptions) =>
      createHybridRetriever({
        vectors: {
          ...vectors,
          query: (storyId, query) => {
            asked.push(['vector', query.topK]);
            return vectors.query(storyId, query);
          },
        },
        keywords: {
          ...keywords,
          query: (storyId, query) => {
            asked.push(['lexical', query.topK]);
            return keywords.query(storyId, query);
          },
        },
        embedder,
        options,
      });
    const poolsFor = async (k: number, options?: HybridRetrieverOptions) => {
      asked.length = 0;
      await spied(options).retrieve(STORY, { query: 'the lamp', k });
      return asked.sort();
    };
    expect(await poolsFor(10)).toEqual([
      ['lexical', 200],
      ['vector', 200],
    ]);
    expect(await poolsFor(5)).toEqual([
      ['lexical', 100],
      ['vector', 100],
    ]);
    // Never below the plain pool, max(4k, 40).
    expect(await poolsFor(1)).toEqual([
      ['lexical', 40],
      ['vector', 40],
    ]);
    expect(await poolsFor(5, { grouping: { candidates: 200 } })).toEqual([
      ['lexical', 200],
      ['vector', 200],
    ]);
    // Without grouping, the plain pool.
    expect(await poolsFor(5, { grouping: { weight: 0 } })).toEqual([
      ['lexical', 40],
      ['vector', 40],
    ]);
  });

  it('holds exact ids to the request filter, like every other source', async () => {
    const dated: Doc[] = docs.map((doc, index) => ({ ...doc, metadata: { sceneIndex: index } }));
    const retriever = await setup(dated, { mmr: { lambda: 1 } });
    // 'dragon' is scene 3: outside the horizon, so naming its id must not bring it back.
    const result = await retriever.retrieve(STORY, {
      query: 'silver key',
      k: 3,
      filter: { sceneIndex: { $lt: 3 } },
      exact: { ids: ['dragon', 'market'] },
    });
    const ids = result.candidates.map((c) => c.id);
    expect(ids).not.toContain('dragon');
    expect(ids).toContain('market');
    expect(result.candidates.find((c) => c.id === 'market')!.signals.exact).toBe(true);
  });

  it('holds the exact search by character to a filter on characters too (a point of view)', async () => {
    // The point of view is Mira's: the filter keeps her scenes only. Naming Tobin boosts her scenes he is in, and
    // must not bring in one she never witnessed.
    const cast: Doc[] = [
      { id: 'both', text: 'Tobin handed Mira the sealed letter.', metadata: { characters: ['mira', 'tobin'] } },
      { id: 'tobin-alone', text: 'Tobin read the letter alone.', metadata: { characters: ['tobin'] } },
      ...Array.from({ length: 50 }, (_, i) => ({
        id: `mira-${String(i).padStart(2, '0')}`,
        text: `Mira walked the shore on day ${i}.`,
        metadata: { characters: ['mira'] },
      })),
    ];
    const retriever = await setup(cast, { mmr: { lambda: 1 } });
    const result = await retriever.retrieve(STORY, {
      query: 'Tobin letter',
      k: 5,
      filter: { characters: { $in: ['mira'] } },
      exact: { characters: ['tobin'] },
    });
    const seen = [...result.candidates, ...result.runnersUp];
    expect(seen.map((c) => c.id)).not.toContain('tobin-alone');
    for (const candidate of seen) expect(candidate.metadata.characters, candidate.id).toContain('mira');
    expect(result.candidates.find((c) => c.id === 'both')?.signals.exact).toBe(true);
  });

  it("keeps one candidate per source with distinct: 'sourceId', so k counts sources", async () => {
    const chunked: Doc[] = [
      { id: 'key:0', text: 'Mira hid the silver key in the archive.', metadata: { sourceId: 'key', chunk: 0 } },
      { id: 'key:1', text: 'The silver key glinted; Mira kept the key.', metadata: { sourceId: 'key', chunk: 1 } },
      { id: 'vault', text: 'Tomas forged a silver key for the vault.', metadata: { sourceId: 'vault' } },
      ...docs.slice(1),
    ];
    const retriever = await setup(chunked, { mmr: { lambda: 1 } });
    const every = await retriever.retrieve(STORY, { query: 'silver key', k: 2 });
    expect(every.candidates.map((c) => c.metadata.sourceId)).toEqual(['key', 'key']);
    const distinct = await retriever.retrieve(STORY, { query: 'silver key', k: 2, distinct: 'sourceId' });
    expect(distinct.candidates.map((c) => c.metadata.sourceId)).toEqual(['key', 'vault']);
    expect(distinct.candidates[0]!.id).toBe(every.candidates[0]!.id);
    await expect(
      retriever.retrieve(STORY, { query: 'silver key', k: 2, distinct: 'chapterId' as 'sourceId' }),
    ).rejects.toMatchObject({ name: 'ValidationError' });
  });

  it("widens the pool until k sources are in when long sources' chunks fill it", async () => {
    // Two long scenes of 60 matching chunks each fill the default pool (100 at k = 5) before four short ones.
    const chunks: Doc[] = ['long-a', 'long-b'].flatMap((source) =>
      Array.from({ length: 60 }, (_, i) => ({
        id: `${source}:${String(i).padStart(2, '0')}`,
        text: `the dragon dragon circled the harbour, part ${i}`,
        metadata: { sourceId: source, chunk: i },
      })),
    );
    const short: Doc[] = Array.from({ length: 4 }, (_, i) => ({
      id: `short-${i}`,
      text: `a dragon flew over tower ${i} in the evening rain`,
    }));
    // The query is embedded once, however often the pool widens (a remote embedder is a paid call).
    const hashing = createHashingEmbedder({ dimensions: 256 });
    const queries: string[] = [];
    const embedder: Embedder = {
      ...hashing,
      embed: (texts, options) => {
        if (options?.inputType === 'query') queries.push(...texts);
        return hashing.embed(texts, options);
      },
    };
    const parts = await indexesOf([...chunks, ...short], embedder);
    // The vector searches asked, by pool size and filter.
    const searches: Array<{ topK: number; filter: unknown }> = [];
    const retriever = createHybridRetriever({
      ...parts,
      vectors: {
        ...parts.vectors,
        query: (storyId, query) => {
          searches.push({ topK: query.topK, filter: query.filter });
          return parts.vectors.query(storyId, query);
        },
      },
    });
    const { candidates } = await retriever.retrieve(STORY, { query: 'dragon', k: 5, distinct: 'sourceId' });
    expect(queries).toEqual(['dragon']);
    expect(candidates).toHaveLength(5);
    expect(new Set(candidates.map((c) => c.metadata.sourceId)).size).toBe(5);
    // Widened, not paged: the first pool is the grouping default (100 at k = 5), each later one larger, all under
    // the request's own (absent) filter, and every candidate found on the first page of its search.
    expect(searches.length).toBeGreaterThanOrEqual(2);
    expect(searches[0]!.topK).toBe(100);
    for (let at = 1; at < searches.length; at++) {
      expect(searches[at]!.topK).toBeGreaterThan(searches[at - 1]!.topK);
    }
    expect(searches.map((search) => search.filter)).toEqual(searches.map(() => undefined));
    expect(candidates.every((c) => c.signals.page === undefined)).toBe(true);
    // Fewer sources than k in the whole story: all of them, and no endless widening.
    const few = await retriever.retrieve(STORY, { query: 'dragon', k: 10, distinct: 'sourceId' });
    expect(new Set(few.candidates.map((c) => c.metadata.sourceId)).size).toBe(6);
  });

  /**
   * `vectors` declaring that one response holds about 16 records (as Pinecone's 4 MB caps it), or as many as
   * `resultBytes` allows at 1 KB of metadata a record, its filters noted.
   */
  const cappedVectors = (vectors: VectorIndex, filters: unknown[] = [], resultBytes = 20 * 1024): VectorIndex =>
    new Proxy(vectors, {
      get(target, property, receiver) {
        if (property === 'capabilities') {
          return { ...target.capabilities, maxQueryResultBytes: resultBytes, maxMetadataBytes: 1024 };
        }
        if (property === 'query') {
          return (storyId: string, query: Parameters<typeof target.query>[1]) => {
            filters.push(query.filter);
            return target.query(storyId, query);
          };
        }
        const value = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  /** Two long sources whose chunks fill every pool one response allows, and `shorts` short ones. */
  const longAndShort = (shorts: number, chunksEach = 60): Doc[] => [
    ...['long-a', 'long-b'].flatMap((source) =>
      Array.from({ length: chunksEach }, (_, i) => ({
        id: `${source}:${String(i).padStart(2, '0')}`,
        text: `the dragon dragon circled the harbour, part ${i}`,
        metadata: { sourceId: source, chunk: i },
      })),
    ),
    ...Array.from({ length: shorts }, (_, i) => ({
      id: `short-${i}`,
      text: `a dragon flew over tower ${i} in the evening rain`,
    })),
  ];

  it('pages past what one response holds: the next search asks for the sources not found, after them', async () => {
    const parts = await indexesOf(longAndShort(4));
    const filters: unknown[] = [];
    const retriever = createHybridRetriever({ ...parts, vectors: cappedVectors(parts.vectors, filters) });
    const { candidates } = await retriever.retrieve(STORY, {
      query: 'dragon',
      k: 5,
      distinct: 'sourceId',
      filter: { type: 'scene' },
    });
    const sources = candidates.map((candidate) => candidate.metadata.sourceId);
    expect(new Set(sources).size).toBe(5);
    expect(sources).toEqual(expect.arrayContaining(['long-a', 'long-b']));
    // The later page asked for what the first had not found, within the request's own filter.
    expect(filters).toContainEqual({ type: 'scene', sourceId: { $nin: ['long-a', 'long-b'] } });
    // What it found comes after what the first page found, and says which page found it.
    const signalsOf = (source: string) => candidates.find((c) => c.metadata.sourceId === source)!.signals;
    const lowestLong = Math.min(signalsOf('long-a').final, signalsOf('long-b').final);
    expect(signalsOf('long-a').page).toBeUndefined();
    for (const source of sources.filter((source) => source.startsWith('short-'))) {
      expect(signalsOf(source).final).toBeLessThanOrEqual(lowestLong);
      expect(signalsOf(source).page).toBe(2);
    }
  });

  it('pages a request whose filter nests as deep as a filter may, exact matches and all', async () => {
    const parts = await indexesOf(longAndShort(4));
    const retriever = createHybridRetriever({ ...parts, vectors: cappedVectors(parts.vectors) });
    // Eight levels of $and, the most validateFilter allows: the page's condition must not add a ninth.
    let filter: MetadataFilter = { type: 'scene' };
    for (let level = 0; level < 8; level++) filter = { $and: [filter] };
    const { candidates } = await retriever.retrieve(STORY, { query: 'dragon', k: 5, distinct: 'sourceId', filter });
    expect(new Set(candidates.map((candidate) => candidate.metadata.sourceId)).size).toBe(5);
    // And with the exact search beside it, which joins its own condition to the filter.
    const named = await createHybridRetriever({
      ...(await indexesOf(
        longAndShort(4).map((doc) => ({ ...doc, metadata: { ...doc.metadata, characters: ['mira'] } })),
      )),
    });
    const exact = await named.retrieve(STORY, {
      query: 'dragon',
      k: 5,
      distinct: 'sourceId',
      filter,
      exact: { characters: ['mira'] },
    });
    expect(exact.candidates.length).toBeGreaterThan(0);
  });

  it('pages a filter that already names the sources it allows, and finds none outside them', async () => {
    // The request's filter holds `sourceId: { $in }` (a point of view's scenes); the page's `$nin` must narrow it,
    // never replace it. The sources outside it match the query best.
    const allowed = ['long-a', 'long-b', 'short-0', 'short-1', 'short-2'];
    const outside: Doc[] = Array.from({ length: 4 }, (_, i) => ({
      id: `outside-${i}`,
      text: `dragon dragon dragon ${i}`,
    }));
    const parts = await indexesOf([...longAndShort(3), ...outside]);
    const filters: unknown[] = [];
    const retriever = createHybridRetriever({ ...parts, vectors: cappedVectors(parts.vectors, filters) });
    const { candidates, runnersUp } = await retriever.retrieve(STORY, {
      query: 'dragon',
      k: 5,
      distinct: 'sourceId',
      filter: { sourceId: { $in: allowed } },
    });
    // It did page: a later search excluded what the first had found.
    expect(JSON.stringify(filters)).toContain('$nin');
    for (const candidate of [...candidates, ...runnersUp]) expect(allowed).toContain(candidate.metadata.sourceId);
    expect(candidates.map((candidate) => candidate.metadata.sourceId).sort()).toEqual(allowed);
  });

  it('pages on when exactly as many sources were found as one filter can name', async () => {
    // One response holds 1,000 records (1,536,000 bytes at 1 KB of metadata and 512 bytes of overhead each), each
    // source is one record, and no unit holds the query's word: the first search finds exactly 1,000 sources, and a
    // page's `$nin` may name all 1,000.
    const docs: Doc[] = Array.from({ length: 1_003 }, (_, source) => ({
      id: `s${String(source).padStart(4, '0')}`,
      text: `the tower ${source} stood by the sea`,
    }));
    const parts = await indexesOf(docs);
    const filters: unknown[] = [];
    const retriever = createHybridRetriever({
      ...parts,
      vectors: cappedVectors(parts.vectors, filters, 1_536_000),
      options: { mmr: { lambda: 1 } },
    });
    const { candidates } = await retriever.retrieve(STORY, { query: 'dragon', k: 1_002, distinct: 'sourceId' });
    expect(candidates).toHaveLength(1_002);
    expect(candidates.filter((candidate) => candidate.signals.page === 2).length).toBeGreaterThan(0);
  });

  it('stops paging, with fewer than k, once the sources found are more than one filter can name', async () => {
    // 1,100 sources of two chunks each; about 16 records a response: past 1,000 sources found, a further page's
    // $nin would hold more values than a filter may.
    const docs: Doc[] = Array.from({ length: 1_100 }, (_, source) =>
      [0, 1].map((chunk) => ({
        id: `s${source}:${chunk}`,
        text: `the dragon circled tower ${source}, part ${chunk}`,
        metadata: { sourceId: `s${source}`, chunk },
      })),
    ).flat();
    const parts = await indexesOf(docs);
    const retriever = createHybridRetriever({
      ...parts,
      vectors: cappedVectors(parts.vectors),
      options: { mmr: { lambda: 1 } },
    });
    const { candidates } = await retriever.retrieve(STORY, { query: 'dragon', k: 1_050, distinct: 'sourceId' });
    expect(candidates.length).toBeGreaterThan(1_000);
    expect(candidates.length).toBeLessThan(1_050);
    expect(new Set(candidates.map((candidate) => candidate.metadata.sourceId)).size).toBe(candidates.length);
  });

  it('lifts a unit whose chapter is about the query above an equally matching stray one', async () => {
    // 'harbour-3' and 'stray' match the query equally; only 'harbour-3' sits in a chapter full of harbour scenes.
    const chaptered: Doc[] = [
      { id: 'harbour-1', text: 'The harbour master counted the fishing boats.', metadata: { chapterId: 'ch-1' } },
      { id: 'harbour-2', text: 'Nets dried on the harbour wall near the boats.', metadata: { chapterId: 'ch-1' } },
      { id: 'harbour-3', text: 'A lantern swung above the quay.', metadata: { chapterId: 'ch-1' } },
      { id: 'stray', text: 'A lantern swung above the door.', metadata: { chapterId: 'ch-2' } },
      { id: 'forest', text: 'Wolves howled in the pine forest.', metadata: { chapterId: 'ch-2' } },
    ];
    const query = { query: 'lantern by the harbour boats', k: 5 };
    const plain = await (await setup(chaptered, { mmr: { lambda: 1 }, grouping: { weight: 0 } })).retrieve(
      STORY,
      query,
    );
    const plainOrder = plain.candidates.map((c) => c.id);
    expect(plain.candidates.every((c) => c.signals.group === undefined)).toBe(true);
    const retriever = await setup(chaptered, { mmr: { lambda: 1 }, grouping: { weight: 1, members: 2 } });
    const grouped = await retriever.retrieve(STORY, query);
    const order = grouped.candidates.map((c) => c.id);
    expect(order.indexOf('harbour-3')).toBeLessThan(order.indexOf('stray'));
    expect(order.indexOf('harbour-3')).toBeLessThanOrEqual(plainOrder.indexOf('harbour-3'));
    const byId = new Map(grouped.candidates.map((c) => [c.id, c]));
    expect(byId.get('harbour-3')!.signals.group).toBe(1);
    expect(byId.get('stray')!.signals.group).toBeLessThan(1);
    expect(byId.get('harbour-3')!.signals.final).toBeCloseTo(
      byId.get('harbour-3')!.signals.relevance + 0.15 + 0.075 + 1,
    );

    const { groups } = await retriever.retrieveGroups(STORY, query);
    expect(groups.map((group) => group.key)).toEqual(['ch-1', 'ch-2']);
    expect(groups[0]!.members.map((member) => member.id)).toHaveLength(2);
    // A group's score is the sum of its best members' relevances.
    const relevances = groups[0]!.members.map((member) => member.signals.relevance);
    expect(groups[0]!.score).toBeCloseTo(relevances[0]! + relevances[1]!);
    expect(relevances[0]).toBeGreaterThanOrEqual(relevances[1]!);
    expect((await retriever.retrieveGroups(STORY, { ...query, k: 1 })).groups).toHaveLength(1);
  });

  it('expands the lexical query with the terms of its best hits when lexical feedback is on', async () => {
    // Only 'cellar' says "wine" and "barrel"; "key" alone ranks it below nothing, but the best "key" hits talk of
    // the cellar, so feedback brings in the cellar's words.
    const withText = (id: string, text: string): Doc => ({ id, text, metadata: { text } });
    const corpus: Doc[] = [
      withText('k1', 'The brass key opened the cellar door below the inn.'),
      withText('k2', 'She turned the key of the cellar and smelled the damp.'),
      withText('cellar', 'In the cellar, barrels of wine lined the cold walls.'),
      withText('sea', 'Gulls circled over the grey sea all morning.'),
      withText('hill', 'Sheep grazed on the green hill beyond the mill.'),
    ];
    const options = (documents: number): HybridRetrieverOptions => ({
      mmr: { lambda: 1 },
      fusion: { denseWeight: 0 },
      lexicalFeedback: { documents, terms: 3, queryWeight: 1 },
    });
    const plain = await (await setup(corpus, options(0))).retrieve(STORY, { query: 'key', k: 5 });
    expect(plain.candidates.find((c) => c.id === 'cellar')?.signals.lexical).toBeUndefined();
    const expanded = await (await setup(corpus, options(2))).retrieve(STORY, { query: 'key', k: 5 });
    const cellar = expanded.candidates.find((c) => c.id === 'cellar');
    expect(cellar?.signals.lexical?.rank).toBeLessThanOrEqual(3);
    expect(expanded.candidates.find((c) => c.id === 'sea')?.signals.lexical).toBeUndefined();
  });

  it('searches a query too long to repeat for lexical feedback once, as it is, instead of refusing it', async () => {
    const words = 'lamp key stone harbour bell gull storm net compass peach whale choir'.split(' ');
    const corpus: Doc[] = Array.from({ length: 40 }, (_, i) => {
      const text = `${words[i % 12]} ${words[(i * 5) % 12]} ${words[(i * 7) % 12]} scene ${i}`;
      return { id: `d${String(i).padStart(2, '0')}`, text, metadata: { text } };
    });
    const long = (length: number) =>
      Array.from({ length: Math.ceil(length / 4) }, (_, i) => words[i % 12])
        .join(' ')
        .slice(0, length);
    // Both within the keyword index's 200,000 characters, which the first search accepts; the expansion repeats
    // the query `queryWeight` times (2: 300,000 characters; 10: 200,010) before its new terms.
    for (const [length, queryWeight] of [
      [150_000, 2],
      [20_001, 10],
    ] as const) {
      const feedback = await setup(corpus, { lexicalFeedback: { documents: 3, queryWeight } });
      const query = { query: long(length), k: 5 };
      const result = await feedback.retrieve(STORY, query);
      const plain = await (await setup(corpus)).retrieve(STORY, query);
      expect(result.candidates.map((c) => [c.id, c.score])).toEqual(plain.candidates.map((c) => [c.id, c.score]));
    }
  });

  it('ranks the unit that holds the query terms close together above one that holds them far apart', async () => {
    // Same words, same length, so BM25 cannot tell 'far' from 'near'; only 'near' says "red stone".
    const withText = (id: string, text: string): Doc => ({ id, text, metadata: { text } });
    const corpus: Doc[] = [
      withText(
        'far',
        'The red kite circled high over the valley, the river, the mill, the old wooden bridge and the stone.',
      ),
      withText(
        'near',
        'The kite circled high over the valley, the river, the mill, the old wooden bridge and the red stone.',
      ),
      withText('sea', 'Gulls circled over the grey sea all morning.'),
    ];
    // Dense weight 0: the hashing embedder's word-pair features would favour 'near' on their own.
    const options = (weight: number): HybridRetrieverOptions => ({
      mmr: { lambda: 1 },
      fusion: { denseWeight: 0 },
      proximity: { weight },
    });
    const query = { query: 'the red stone', k: 3 };
    const plain = await (await setup(corpus, options(0))).retrieve(STORY, query);
    expect(plain.candidates[0]!.signals.lexical!.score).toBeCloseTo(plain.candidates[1]!.signals.lexical!.score);
    expect(plain.candidates.map((c) => c.id).slice(0, 2)).toEqual(['far', 'near']); // tie broken by id
    expect(plain.candidates.every((c) => c.signals.proximity === undefined)).toBe(true);
    expect(plain.timings.proximity).toBe(0);

    const near = await (await setup(corpus, options(0.2))).retrieve(STORY, query);
    expect(near.candidates.map((c) => c.id).slice(0, 2)).toEqual(['near', 'far']);
    const byId = new Map(near.candidates.map((c) => [c.id, c]));
    expect(byId.get('near')!.signals.proximity).toBe(1);
    expect(byId.get('far')!.signals.proximity).toBe(0);
    // The boost is weight × the best fused score, added to the fused score.
    expect(byId.get('near')!.signals.fused).toBeCloseTo(byId.get('far')!.signals.fused * 1.2);

    // One query term: no pair to be near, nothing changes.
    const single = await (await setup(corpus, options(0.2))).retrieve(STORY, { query: 'stone', k: 3 });
    expect(single.candidates.every((c) => c.signals.proximity === undefined)).toBe(true);
  });

  it('is on by default', async () => {
    const withText = (id: string, text: string): Doc => ({ id, text, metadata: { text } });
    const corpus: Doc[] = [
      withText(
        'far',
        'The red kite circled high over the valley, the river, the mill, the old wooden bridge and the stone.',
      ),
      withText(
        'near',
        'The kite circled high over the valley, the river, the mill, the old wooden bridge and the red stone.',
      ),
    ];
    const { candidates } = await (await setup(corpus)).retrieve(STORY, { query: 'the red stone', k: 2 });
    expect(candidates.find((c) => c.id === 'near')!.signals.proximity).toBe(1);
  });

  it('proximity re-scores the best fused candidates, ties by id, however many are asked for', async () => {
    // Twelve units of the same text tie on every score: the `candidates` re-scored are those first by id.
    const corpus: Doc[] = Array.from({ length: 12 }, (_, i) => {
      const text = 'The red stone lay by the well.';
      return { id: `u${String(11 - i).padStart(2, '0')}`, text, metadata: { text } };
    });
    for (const candidates of [1, 5, 11, 12, 40]) {
      const retriever = await setup(corpus, { mmr: { lambda: 1 }, proximity: { weight: 0.2, candidates } });
      const result = await retriever.retrieve(STORY, { query: 'red stone', k: 12 });
      const rescored = result.candidates.filter((c) => c.signals.proximity !== undefined).map((c) => c.id);
      expect(rescored).toEqual(
        Array.from({ length: Math.min(candidates, 12) }, (_, i) => `u${String(i).padStart(2, '0')}`),
      );
    }
  });

  it('reports per-stage timings', async () => {
    const { timings } = await (await setup(docs)).retrieve(STORY, { query: 'dragon', k: 2 });
    for (const stage of ['embed', 'vector', 'lexical', 'fuse', 'proximity', 'score', 'mmr', 'total'] as const) {
      expect(timings[stage]).toBeGreaterThanOrEqual(0);
    }
    expect(timings.total).toBeGreaterThanOrEqual(timings.embed);
  });

  it('charges each concurrent lookup with its own work, in-process or remote', async () => {
    const embedder = createHashingEmbedder({ dimensions: 64 });
    const vectors = createMemoryVectorIndex({ dimensions: 64 });
    const keywords = createMemoryKeywordIndex();
    await vectors.upsert(STORY, [
      {
        id: 'a',
        values: (await embedder.embed(['a dragon']))[0]!,
        metadata: { storyId: STORY, type: 'scene', timestamp: 0, sourceId: 'a' },
      },
    ]);
    await keywords.upsert(STORY, [
      { id: 'a', text: 'a dragon', metadata: { storyId: STORY, type: 'scene', timestamp: 0, sourceId: 'a' } },
    ]);
    // Synchronous work inside the call, as an in-process index does it; or a wait after it returns, as a remote one.
    const busy = (ms: number) => {
      const until = performance.now() + ms;
      while (performance.now() < until) {
        // spin
      }
    };
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const timingsWith = async (slow: 'vector' | 'lexical', how: 'busy' | 'remote') => {
      // Wide enough that the other lookup (one document) stays far below it on a loaded machine.
      const delay = async () => (how === 'busy' ? busy(200) : await sleep(200));
      const retriever = createHybridRetriever({
        vectors: {
          ...vectors,
          query: async (storyId, query) => {
            if (slow === 'vector') await delay();
            return vectors.query(storyId, query);
          },
        },
        keywords: {
          ...keywords,
          query: async (storyId, query) => {
            if (slow === 'lexical') await delay();
            return keywords.query(storyId, query);
          },
        },
        embedder,
      });
      return (await retriever.retrieve(STORY, { query: 'dragon', k: 1 })).timings;
    };
    for (const how of ['busy', 'remote'] as const) {
      const slowVector = await timingsWith('vector', how);
      expect(slowVector.vector).toBeGreaterThanOrEqual(195);
      expect(slowVector.lexical).toBeLessThan(slowVector.vector);
      const slowLexical = await timingsWith('lexical', how);
      expect(slowLexical.lexical).toBeGreaterThanOrEqual(195);
      expect(slowLexical.vector).toBeLessThan(slowLexical.lexical);
    }
  });

  it('charges every search to its stage: the exact-match search, and the narrower rounds of a widened pool', async () => {
    // A clock that moves only while an index is searched (100 a vector search, 10 a keyword search): every other
    // step takes no time, so the stages must add up to the total exactly.
    let clock = 0;
    const now = vi.spyOn(performance, 'now').mockImplementation(() => clock);
    const stages = (t: RetrievalTimings) => t.embed + t.vector + t.lexical + t.fuse + t.proximity + t.score + t.mmr;
    const counted = async (corpus: Doc[]) => {
      const parts = await indexesOf(corpus);
      const calls = { vector: 0, lexical: 0 };
      const retriever = createHybridRetriever({
        ...parts,
        vectors: {
          ...parts.vectors,
          query: (storyId, query) => {
            calls.vector++;
            clock += 100;
            return parts.vectors.query(storyId, query);
          },
        },
        keywords: {
          ...parts.keywords,
          query: (storyId, query) => {
            calls.lexical++;
            clock += 10;
            return parts.keywords.query(storyId, query);
          },
        },
      });
      return { retriever, calls };
    };
    try {
      // Few units name Tomas, so the exact-match search runs after the two first ones.
      const tagged = await counted([
        ...docs,
        { id: 'tomas-scene', text: 'He counted coins by candlelight.', metadata: { characters: ['tomas'] } },
      ]);
      const exact = await tagged.retriever.retrieve(STORY, {
        query: 'silver key',
        k: 2,
        exact: { characters: ['tomas'] },
      });
      expect(tagged.calls).toEqual({ vector: 2, lexical: 1 });
      expect(exact.timings).toMatchObject({ vector: 200, lexical: 10, total: 210 });
      expect(stages(exact.timings)).toBe(exact.timings.total);

      // Two long scenes' chunks fill the first pool, so it widens: every round searches both indexes.
      const chunks: Doc[] = ['long-a', 'long-b'].flatMap((source) =>
        Array.from({ length: 60 }, (_, i) => ({
          id: `${source}:${String(i).padStart(2, '0')}`,
          text: `the dragon dragon circled the harbour, part ${i}`,
          metadata: { sourceId: source, chunk: i },
        })),
      );
      const short: Doc[] = Array.from({ length: 4 }, (_, i) => ({
        id: `short-${i}`,
        text: `a dragon over tower ${i}`,
      }));
      const widened = await counted([...chunks, ...short]);
      const { timings } = await widened.retriever.retrieve(STORY, { query: 'dragon', k: 5, distinct: 'sourceId' });
      expect(widened.calls.vector).toBeGreaterThanOrEqual(2);
      expect(timings.vector).toBe(100 * widened.calls.vector);
      expect(timings.lexical).toBe(10 * widened.calls.lexical);
      expect(stages(timings)).toBe(timings.total);
    } finally {
      now.mockRestore();
    }
  });

  it('retrieves nothing for a query with nothing to search for, unless it names exact matches', async () => {
    const tagged: Doc[] = [
      ...docs,
      { id: 'tomas-scene', text: 'He counted coins by candlelight.', metadata: { characters: ['tomas'] } },
    ];
    const parts = await indexesOf(tagged);
    let searches = 0;
    const retriever = createHybridRetriever({
      ...parts,
      embedder: {
        ...parts.embedder,
        embed: (texts, options) => {
          if (options?.inputType === 'query') searches++;
          return parts.embedder.embed(texts, options);
        },
      },
    });
    // Without a term every score is noise, and min-max scaling made the best of it "relevance 1".
    for (const query of ['', '   ', 'the of and', '!!!', '🦊🦊']) {
      expect(isSearchableQuery(query)).toBe(false);
      const result = await retriever.retrieve(STORY, { query, k: 3 });
      expect(result, JSON.stringify(query)).toMatchObject({ candidates: [], dropped: [], runnersUp: [] });
      expect((await retriever.retrieveGroups(STORY, { query, k: 3 })).groups).toEqual([]);
      // Still a request: checked as any other.
      await expect(retriever.retrieve(STORY, { query, k: 0 })).rejects.toBeInstanceOf(ValidationError);
    }
    expect(searches).toBe(0);
    // A name the exact stage knows is something to search for; an empty list of them is not.
    expect(isSearchableQuery('the of and', { characters: ['tomas'] })).toBe(true);
    const named = await retriever.retrieve(STORY, { query: 'the of and', k: 2, exact: { characters: ['tomas'] } });
    expect(named.candidates[0]).toMatchObject({ id: 'tomas-scene', signals: { exact: true } });
    const none = await retriever.retrieve(STORY, { query: 'the of and', k: 2, exact: { characters: [], ids: [] } });
    expect(none.candidates).toEqual([]);
    expect(isSearchableQuery('the dragon')).toBe(true);
  });

  it('refuses exact matches that are not lists of names, instead of matching their letters or ignoring them', async () => {
    const retriever = await setup(docs);
    const refused = async (exact: unknown) => {
      const error = await retriever.retrieve(STORY, { query: 'dragon', k: 2, exact: exact as never }).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error, JSON.stringify(exact)).toBeInstanceOf(ValidationError);
      return (error as ValidationError).problems?.[0]?.path;
    };
    // A string where a list belongs was spread into its letters.
    expect(await refused({ characters: 'mira' })).toBe('query.exact.characters');
    expect(await refused('mira')).toBe('query.exact');
    expect(await refused(null)).toBe('query.exact');
    expect(await refused(['mira'])).toBe('query.exact');
    expect(await refused({ characters: [''] })).toBe('query.exact.characters.0');
    expect(await refused({ locations: ['harbour', 7] })).toBe('query.exact.locations.1');
    expect(await refused({ ids: 'dragon' })).toBe('query.exact.ids');
    expect(await refused({ themes: { $in: ['x'] } })).toBe('query.exact.themes');
    // A misspelt or unsupported field would be ignored.
    expect(await refused({ character: ['mira'] })).toBe('query.exact.character');
    expect(await refused({ threads: ['t1'] })).toBe('query.exact.threads');
    // Lists that become `$in` filters hold at most 1,000 names, as a filter does.
    const many = Array.from({ length: 1_001 }, (_, i) => `name-${i}`);
    expect(await refused({ characters: many })).toBe('query.exact.characters');
    // Well-formed: an absent field, an empty list, and more than 1,000 ids (fetched, not filtered).
    const fine = await retriever.retrieve(STORY, {
      query: 'dragon',
      k: 2,
      exact: { characters: undefined, locations: [], ids: [...many, 'dragon'] },
    });
    expect(fine.candidates.find((c) => c.id === 'dragon')?.signals.exact).toBe(true);
  });

  it('honours an aborted signal and validates the request', async () => {
    const retriever = await setup(docs);
    const controller = new AbortController();
    controller.abort();
    await expect(retriever.retrieve(STORY, { query: 'dragon', k: 2, signal: controller.signal })).rejects.toMatchObject(
      {
        name: 'AbortedError',
      },
    );
    await expect(retriever.retrieve(STORY, { query: 'dragon', k: 0 })).rejects.toMatchObject({
      name: 'ValidationError',
    });
    // A request that is not one, and a "now" that would make every recency (and so every score) NaN.
    await expect(retriever.retrieve(STORY, undefined as never)).rejects.toMatchObject({ name: 'ValidationError' });
    for (const now of [{ sceneIndex: Number.NaN }, { timestamp: Number.POSITIVE_INFINITY }, { sceneIndex: -1 }]) {
      await expect(retriever.retrieve(STORY, { query: 'dragon', k: 2, now })).rejects.toMatchObject({
        name: 'ValidationError',
      });
    }
  });

  it('refuses a misspelt option instead of leaving it at its default', () => {
    const parts = {
      vectors: createMemoryVectorIndex({ dimensions: 16 }),
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions: 16 }),
    };
    for (const options of [{ fusion: { methd: 'rrf' } }, { mmr: { lamda: 0.5 } }, { candidate: 50 }]) {
      expect(() => createHybridRetriever({ ...parts, options: options as never })).toThrow(
        expect.objectContaining({ name: 'ValidationError' }),
      );
    }
    expect(() =>
      createHybridRetriever({ ...parts, options: { fusion: { method: 'rrf' }, mmr: { lambda: 0.5 } } }),
    ).not.toThrow();
  });

  it('refuses an embedder whose dimensions differ from the index', () => {
    expect(() =>
      createHybridRetriever({
        vectors: createMemoryVectorIndex({ dimensions: 8 }),
        keywords: createMemoryKeywordIndex(),
        embedder: createHashingEmbedder({ dimensions: 16 }),
      }),
    ).toThrow(/dimensions|vector index/);
  });
});

describe('composeIndexText', () => {
  it('lets a short unit borrow its nearest neighbours, and a long one none', () => {
    const unit = {
      text: 'Yes, last week!',
      labels: ['Mira'],
      before: ['far before', 'Did you go?'],
      after: ['Great.'],
    };
    expect(composeIndexText(unit, { minCharacters: 40, maxNeighbours: 2 })).toBe(
      'Did you go?\nMira: Yes, last week!\nGreat.',
    );
    expect(composeIndexText(unit, { minCharacters: 0 })).toBe('Mira: Yes, last week!');
    expect(composeIndexText(unit, { minCharacters: 1_000, maxNeighbours: 1 })).toBe(
      'Did you go?\nMira: Yes, last week!\nGreat.',
    );
    expect(composeIndexText(unit, { labels: false, minCharacters: 0 })).toBe('Yes, last week!');
  });
});

describe('composeEmbeddingText', () => {
  it('keeps the labels and the unit own text, never its neighbours, however short the unit', () => {
    const unit = { text: 'Yes, last week!', labels: ['Mira'], before: ['Did you go?'], after: ['Great.'] };
    expect(composeIndexText(unit)).toBe('Did you go?\nMira: Yes, last week!\nGreat.');
    expect(composeEmbeddingText(unit)).toBe('Mira: Yes, last week!');
    expect(composeEmbeddingText(unit, { minCharacters: 1_000, labels: false })).toBe('Yes, last week!');
  });
});

describe('findNamedEntities', () => {
  it('matches whole names and aliases, folded, never inside other words', () => {
    const entities = [
      { id: 'mira', names: ['Mira', 'the Archivist'] },
      { id: 'tom', names: ['Tom'] },
      { id: 'harbour', names: ['Old Harbour'] },
    ];
    expect(findNamedEntities("What did the archivist see at the old harbour? Mira's key?", entities)).toEqual([
      'mira',
      'harbour',
    ]);
    expect(findNamedEntities('Tomas and the tomato', entities)).toEqual([]);
  });
});
