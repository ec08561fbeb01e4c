/**
 * The conformance suite of the `KeywordIndex` port. Every keyword index, built in or third-party, runs it. The
 * ranking cases check the properties of BM25 that a reader of the results would notice (rare terms weigh more,
 * repeated terms saturate, long documents are discounted) rather than exact scores, so any faithful BM25 passes.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { MetadataFilter } from '../context/filter.js';
import type { KeywordDocument, KeywordIndex, KeywordMatch } from '../context/keyword-index.js';
import { AbortedError, ValidationError } from '../core/errors.js';
import type { VectorMetadataInput } from '../state/schema.js';
import { registerSuite, type SuiteCase, type SuiteOptions, type SuiteTestApi } from './suite.js';

/** A story id no other case, run or process uses, so cases sharing a real backend never see each other's data. */
function uniqueStoryId(label: string): string {
  return `${label}-${randomUUID().slice(0, 8)}`;
}

function makeDocument(
  storyId: string,
  id: string,
  text: string,
  metadata: Partial<VectorMetadataInput> = {},
): KeywordDocument {
  return { id, text, metadata: { storyId, type: 'scene', timestamp: 1_000, sourceId: id, ...metadata } };
}

/**
 * Documents that share no word with the ranking cases' queries. They keep every query term in less than half of a
 * story's documents, where BM25's idf is clearly positive in every variant (FTS5 floors a negative idf at 1e-6).
 */
function fillers(storyId: string): KeywordDocument[] {
  return [
    'Snow covered the mountain pass before winter ended.',
    'Merchants argued over copper prices in the market square.',
    'A violin played somewhere beyond the orchard wall.',
    'The old clock tower chimed thirteen times at midnight.',
    'Children chased geese along the muddy riverbank.',
    'Bakers lit their ovens long before sunrise.',
  ].map((text, i) => makeDocument(storyId, `filler-${i}`, text));
}

function ids(matches: readonly KeywordMatch[]): string[] {
  return matches.map((match) => match.id);
}

function sorted(values: readonly string[]): string[] {
  return [...values].sort();
}

function scoreOf(matches: readonly KeywordMatch[], id: string): number {
  const match = matches.find((candidate) => candidate.id === id);
  assert.ok(match, `${id} should be among the matches (${ids(matches).join(', ')})`);
  return match.score;
}

async function rejectsWith<E>(
  promise: Promise<unknown>,
  isInstance: (error: unknown) => error is E,
  label: string,
): Promise<E> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isInstance(error), `expected ${label}, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected ${label}, but the call succeeded`);
}

function assertBestFirst(matches: readonly KeywordMatch[]): void {
  for (let i = 1; i < matches.length; i++) {
    const before = matches[i - 1]!;
    const after = matches[i]!;
    assert.ok(
      before.score > after.score || (before.score === after.score && before.id < after.id),
      `${before.id} (${before.score}) should rank above ${after.id} (${after.score})`,
    );
  }
}

/** Documents whose metadata the filter cases select from; every one contains the word "lantern". */
function filterFixture(storyId: string): KeywordDocument[] {
  return [
    makeDocument(storyId, 'k1', 'Mira lit the lantern on the harbor wall.', {
      type: 'scene',
      characters: ['mira'],
      locations: ['harbor'],
      importance: 0.9,
      timestamp: 1_000,
    }),
    makeDocument(storyId, 'k2', 'Oren carried a lantern into the archive.', {
      type: 'scene',
      characters: ['oren'],
      locations: ['archive'],
      importance: 0.3,
      timestamp: 2_000,
    }),
    makeDocument(storyId, 'k3', 'Mira never trusts a lantern that burns blue.', {
      type: 'character',
      characters: ['mira'],
      locations: ['ship'],
      importance: 0.6,
      timestamp: 3_000,
    }),
    makeDocument(storyId, 'k4', 'Who stole the lantern from the tower?', {
      type: 'plotThread',
      characters: ['kell'],
      locations: ['tower'],
      importance: 0.5,
      timestamp: 4_000,
    }),
  ];
}

/**
 * The cases of the `KeywordIndex` suite, exported so tools can list them and adapters can name skips.
 *
 * @example
 * ```ts
 * import { keywordIndexCases } from 'storyloom/testing';
 * console.log(keywordIndexCases.map((testCase) => testCase.name));
 * ```
 */
export const keywordIndexCases: ReadonlyArray<SuiteCase<KeywordIndex>> = [
  {
    name: 'a document holding the rare query term ranks first, scores positive and best first',
    async run(index) {
      const storyId = uniqueStoryId('rare-term');
      await index.upsert(storyId, [
        makeDocument(storyId, 'ship-1', 'The ship left the harbor at dawn.'),
        makeDocument(storyId, 'ship-2', 'A ship and another ship crossed the bay.'),
        makeDocument(storyId, 'keeper', 'The lighthouse keeper slept through the storm.'),
        makeDocument(storyId, 'ship-3', 'Rain fell on the ship all night.'),
        ...fillers(storyId),
      ]);
      const matches = await index.query(storyId, { text: 'ship lighthouse', topK: 10 });
      assert.equal(matches[0]?.id, 'keeper');
      assert.deepEqual(sorted(ids(matches)), ['keeper', 'ship-1', 'ship-2', 'ship-3']);
      for (const match of matches) assert.ok(match.score > 0, `${match.id} has a positive score`);
      assertBestFirst(matches);
    },
  },
  {
    name: 'a repeated term raises the score, with diminishing returns',
    async run(index) {
      const storyId = uniqueStoryId('term-frequency');
      // Same length in terms, so only the frequency of "storm" differs.
      await index.upsert(storyId, [
        makeDocument(storyId, 'thrice', 'storm storm storm wind rain fog'),
        makeDocument(storyId, 'once', 'storm wind rain fog sun moon'),
        ...fillers(storyId),
      ]);
      const matches = await index.query(storyId, { text: 'storm', topK: 10 });
      assert.deepEqual(ids(matches), ['thrice', 'once']);
      const thrice = scoreOf(matches, 'thrice');
      const once = scoreOf(matches, 'once');
      assert.ok(thrice < 3 * once, `term frequency saturates: ${thrice} should be less than 3 × ${once}`);
    },
  },
  {
    name: 'a shorter document outranks a longer one with the same term frequency',
    async run(index) {
      const storyId = uniqueStoryId('length');
      await index.upsert(storyId, [
        makeDocument(storyId, 'long', 'dragon walked slowly across frozen northern plains toward distant hills'),
        makeDocument(storyId, 'short', 'dragon fire'),
        ...fillers(storyId),
      ]);
      const matches = await index.query(storyId, { text: 'dragon', topK: 10 });
      assert.deepEqual(ids(matches), ['short', 'long']);
      assert.ok(scoreOf(matches, 'short') > scoreOf(matches, 'long'));
    },
  },
  {
    name: 'a document matching every query term outranks those matching one',
    async run(index) {
      const storyId = uniqueStoryId('multi-term');
      await index.upsert(storyId, [
        makeDocument(storyId, 'crown-only', 'The crown lay forgotten under dust.'),
        makeDocument(storyId, 'both', 'The queen hid the crown beneath her cloak.'),
        makeDocument(storyId, 'queen-only', 'The queen rode north with her guard.'),
        ...fillers(storyId),
      ]);
      const matches = await index.query(storyId, { text: 'queen crown', topK: 10 });
      assert.equal(matches[0]?.id, 'both');
      assert.deepEqual(sorted(ids(matches)), ['both', 'crown-only', 'queen-only']);
    },
  },
  {
    name: 'matching ignores case and word endings: "Dragons" finds "dragon"',
    async run(index) {
      const storyId = uniqueStoryId('stemming');
      await index.upsert(storyId, [
        makeDocument(storyId, 'dragon', 'A dragon slept under the hill.'),
        makeDocument(storyId, 'walking', 'They were walking home together.'),
        makeDocument(storyId, 'possessive', "Mira's lantern flickered."),
        ...fillers(storyId),
      ]);
      assert.deepEqual(ids(await index.query(storyId, { text: 'DRAGONS', topK: 10 })), ['dragon']);
      assert.deepEqual(ids(await index.query(storyId, { text: 'walked', topK: 10 })), ['walking']);
      assert.deepEqual(ids(await index.query(storyId, { text: 'mira', topK: 10 })), ['possessive']);
    },
  },
  {
    name: 'accents are folded: "cafe" finds "Café" and "CAFÉ" finds "cafe"',
    async run(index) {
      const storyId = uniqueStoryId('accents');
      await index.upsert(storyId, [
        makeDocument(storyId, 'accented', 'They met at the Café du Port.'),
        makeDocument(storyId, 'plain', 'A naive cafe owner listened.'),
        ...fillers(storyId),
      ]);
      assert.deepEqual(sorted(ids(await index.query(storyId, { text: 'cafe', topK: 10 }))), ['accented', 'plain']);
      assert.deepEqual(sorted(ids(await index.query(storyId, { text: 'CAFÉ', topK: 10 }))), ['accented', 'plain']);
      assert.deepEqual(ids(await index.query(storyId, { text: 'naïve', topK: 10 })), ['plain']);
    },
  },
  {
    name: 'an empty or stop-word-only query returns no matches',
    async run(index) {
      const storyId = uniqueStoryId('stop-words');
      await index.upsert(storyId, [
        makeDocument(storyId, 'a', 'The tower and the sea, and all of it was theirs.'),
        ...fillers(storyId),
      ]);
      for (const text of ['the and of', 'The', '', '   ', '!!! ... ???']) {
        assert.deepEqual(await index.query(storyId, { text, topK: 10 }), [], `query ${JSON.stringify(text)}`);
      }
      assert.deepEqual(ids(await index.query(storyId, { text: 'the sea', topK: 10 })), ['a']);
    },
  },
  {
    name: 'equal scores are ordered by id and topK bounds the results',
    async run(index) {
      const storyId = uniqueStoryId('ties');
      const text = 'The comet returned after a hundred years.';
      await index.upsert(storyId, [
        makeDocument(storyId, 'tie-c', text),
        makeDocument(storyId, 'tie-a', text),
        makeDocument(storyId, 'tie-b', text),
        ...fillers(storyId),
      ]);
      const all = await index.query(storyId, { text: 'comet', topK: 10 });
      assert.deepEqual(ids(all), ['tie-a', 'tie-b', 'tie-c']);
      assert.equal(all[0]!.score, all[2]!.score);
      assert.deepEqual(ids(await index.query(storyId, { text: 'comet', topK: 2 })), ['tie-a', 'tie-b']);
    },
  },
  {
    name: 'filters restrict the candidates',
    async run(index) {
      const storyId = uniqueStoryId('filters');
      await index.upsert(storyId, [...filterFixture(storyId), ...fillers(storyId)]);
      const expectations: Array<[MetadataFilter, string[]]> = [
        [{ type: 'scene' }, ['k1', 'k2']],
        [{ characters: 'mira' }, ['k1', 'k3']],
        [{ importance: { $gte: 0.5 }, type: { $ne: 'scene' } }, ['k3', 'k4']],
        [{ $or: [{ locations: { $in: ['tower', 'archive'] } }, { timestamp: { $lt: 1_500 } }] }, ['k1', 'k2', 'k4']],
        [{ characters: { $nin: ['mira'] } }, ['k2', 'k4']],
        [{ type: 'summary' }, []],
      ];
      for (const [filter, expected] of expectations) {
        const matches = await index.query(storyId, { text: 'lantern', topK: 10, filter });
        assert.deepEqual(sorted(ids(matches)), expected, `filter ${JSON.stringify(filter)}`);
      }
      // The filter is applied before topK: the best unfiltered match does not crowd out the asked-for one.
      const [only] = await index.query(storyId, { text: 'lantern', topK: 1, filter: { type: 'plotThread' } });
      assert.equal(only?.id, 'k4');
    },
  },
  {
    name: 'upsert replaces a document: its old words no longer match, its new ones do',
    async run(index) {
      const storyId = uniqueStoryId('replace');
      await index.upsert(storyId, [
        makeDocument(storyId, 'a', 'The kraken rose from the deep.', { importance: 0.2 }),
        ...fillers(storyId),
      ]);
      await index.upsert(storyId, [makeDocument(storyId, 'a', 'A leviathan circled the reef.', { importance: 0.8 })]);
      assert.deepEqual(await index.query(storyId, { text: 'kraken', topK: 10 }), []);
      const [match] = await index.query(storyId, { text: 'leviathan', topK: 10 });
      assert.equal(match?.id, 'a');
      assert.equal(match?.metadata.importance, 0.8);
      assert.equal(await index.count(storyId), 7);
    },
  },
  {
    name: 'metadata comes back with its defaults filled in, as a copy',
    async run(index) {
      const storyId = uniqueStoryId('metadata');
      await index.upsert(storyId, [makeDocument(storyId, 'a', 'The orchard burned.', { characters: ['mira'] })]);
      const [first] = await index.query(storyId, { text: 'orchard', topK: 1 });
      assert.deepEqual(first?.metadata, {
        storyId,
        type: 'scene',
        timestamp: 1_000,
        themes: [],
        characters: ['mira'],
        locations: [],
        importance: 0.5,
        sourceId: 'a',
        chunk: 0,
        text: '',
      });
      first!.metadata.characters.push('ghost');
      const [again] = await index.query(storyId, { text: 'orchard', topK: 1 });
      assert.deepEqual(again?.metadata.characters, ['mira']);
    },
  },
  {
    name: 'sharedMetadata changes nothing a caller can see but mutation: the same matches, filter included',
    async run(index) {
      const storyId = uniqueStoryId('shared-metadata');
      await index.upsert(storyId, filterFixture(storyId));
      for (const filter of [undefined, { characters: { $in: ['mira'] } }]) {
        const query = { text: 'lantern', topK: 10, ...(filter ? { filter } : {}) };
        const copied = await index.query(storyId, query);
        const shared = await index.query(storyId, { ...query, sharedMetadata: true });
        assert.equal(copied.length, filter ? 2 : 4);
        assert.deepEqual(shared, copied);
      }
    },
  },
  {
    name: 'delete by ids removes those documents and says how many',
    async run(index) {
      const storyId = uniqueStoryId('delete-ids');
      await index.upsert(storyId, filterFixture(storyId));
      assert.equal(await index.delete(storyId, { ids: ['k2', 'k4', 'missing'] }), 2);
      assert.deepEqual(sorted(ids(await index.query(storyId, { text: 'lantern', topK: 10 }))), ['k1', 'k3']);
      assert.equal(await index.count(storyId), 2);
      assert.equal(await index.delete(storyId, { ids: [] }), 0);
    },
  },
  {
    name: 'delete by filter removes the matching documents only',
    skipUnless: (index) => (index.capabilities.deleteByFilter ? undefined : 'capabilities.deleteByFilter is false'),
    async run(index) {
      const storyId = uniqueStoryId('delete-filter');
      // Another story holds documents the filter matches too: they stay.
      const otherStory = uniqueStoryId('delete-filter-other');
      await index.upsert(otherStory, filterFixture(otherStory));
      await index.upsert(storyId, filterFixture(storyId));
      assert.equal(await index.delete(storyId, { filter: { characters: 'mira' } }), 2);
      assert.deepEqual(sorted(ids(await index.query(storyId, { text: 'lantern', topK: 10 }))), ['k2', 'k4']);
      assert.equal(await index.count(storyId), 2);
      assert.equal(await index.count(otherStory), 4, 'the other story keeps every document');
      assert.deepEqual(
        sorted(ids(await index.query(otherStory, { text: 'lantern', topK: 10, filter: { characters: 'mira' } }))),
        ['k1', 'k3'],
      );
    },
  },
  {
    name: 'stories are isolated from each other',
    async run(index) {
      const storyA = uniqueStoryId('story-a');
      const storyB = uniqueStoryId('story-b');
      await index.upsert(storyA, [makeDocument(storyA, 'same-id', 'The glacier cracked.')]);
      await index.upsert(storyB, [
        makeDocument(storyB, 'same-id', 'The volcano woke.'),
        makeDocument(storyB, 'other', 'A glacier in another world.'),
      ]);
      assert.deepEqual(ids(await index.query(storyA, { text: 'glacier', topK: 10 })), ['same-id']);
      assert.deepEqual(await index.query(storyA, { text: 'volcano', topK: 10 }), []);
      // A filter that B's documents match too (every document is a scene) still reads story A only.
      for (const filter of [{ type: 'scene' }, { importance: { $gte: 0 } }] as MetadataFilter[]) {
        const filtered = await index.query(storyA, { text: 'glacier volcano', topK: 10, filter });
        assert.deepEqual(ids(filtered), ['same-id'], `filter ${JSON.stringify(filter)}`);
        assert.equal(filtered[0]!.metadata.storyId, storyA);
      }
      assert.equal(await index.count(storyA), 1);
      assert.equal(await index.count(storyB), 2);
      await index.delete(storyA, { ids: ['same-id'] });
      assert.deepEqual(ids(await index.query(storyB, { text: 'volcano', topK: 10 })), ['same-id']);
    },
  },
  {
    name: 'deleteStory drops one story and leaves the others',
    async run(index) {
      const doomed = uniqueStoryId('doomed');
      const kept = uniqueStoryId('kept');
      await index.upsert(doomed, [makeDocument(doomed, 'a', 'The bridge fell.')]);
      await index.upsert(kept, [makeDocument(kept, 'a', 'The bridge held.')]);
      await index.deleteStory(doomed);
      assert.equal(await index.count(doomed), 0);
      assert.deepEqual(await index.query(doomed, { text: 'bridge', topK: 10 }), []);
      assert.deepEqual(ids(await index.query(kept, { text: 'bridge', topK: 10 })), ['a']);
      await index.upsert(doomed, [makeDocument(doomed, 'b', 'A new bridge.')]);
      assert.deepEqual(ids(await index.query(doomed, { text: 'bridge', topK: 10 })), ['b']);
    },
  },
  {
    name: 'count follows upserts, replacements and deletes',
    async run(index) {
      const storyId = uniqueStoryId('count');
      assert.equal(await index.count(storyId), 0);
      await index.upsert(storyId, [makeDocument(storyId, 'a', 'one'), makeDocument(storyId, 'b', 'two')]);
      await index.upsert(storyId, [makeDocument(storyId, 'a', 'one again'), makeDocument(storyId, 'c', 'three')]);
      assert.equal(await index.count(storyId), 3);
      await index.delete(storyId, { ids: ['b'] });
      assert.equal(await index.count(storyId), 2);
    },
  },
  {
    name: 'documents and queries are validated, and a bad batch stores nothing',
    async run(index) {
      const storyId = uniqueStoryId('validation');
      const good = makeDocument(storyId, 'good', 'The falcon returned.');
      const bad: Array<[string, KeywordDocument]> = [
        ['other-story', makeDocument(storyId, 'other-story', 'text', { storyId: 'another-story' })],
        ['bad-type', makeDocument(storyId, 'bad-type', 'text', { type: 'poem' as 'scene' })],
        ['bad-importance', makeDocument(storyId, 'bad-importance', 'text', { importance: -1 })],
        ['bad-text', { ...makeDocument(storyId, 'bad-text', ''), text: 42 as unknown as string }],
      ];
      for (const [id, document] of bad) {
        const error = await rejectsWith(
          index.upsert(storyId, [good, document]),
          ValidationError.isInstance,
          `ValidationError for ${id}`,
        );
        assert.match(error.message, new RegExp(id), 'the message names the document at fault');
      }
      await rejectsWith(
        index.upsert(storyId, [makeDocument(storyId, 'bad id!', 'text')]),
        ValidationError.isInstance,
        'ValidationError for an invalid id',
      );
      assert.equal(await index.count(storyId), 0);
      await index.upsert(storyId, [good]);
      const badQueries: Array<[string, { text: string; topK: number; filter?: MetadataFilter }]> = [
        ['topK 0', { text: 'falcon', topK: 0 }],
        ['a fractional topK', { text: 'falcon', topK: 2.5 }],
        ['an unknown filter field', { text: 'falcon', topK: 1, filter: { mood: 'grim' } as MetadataFilter }],
        [
          'an unknown operator',
          { text: 'falcon', topK: 1, filter: { importance: { $near: 1 } } as unknown as MetadataFilter },
        ],
      ];
      for (const [label, query] of badQueries) {
        await rejectsWith(index.query(storyId, query), ValidationError.isInstance, `ValidationError for ${label}`);
      }
    },
  },
  {
    name: 'an aborted signal rejects with AbortedError and writes nothing',
    async run(index) {
      const storyId = uniqueStoryId('aborted');
      const signal = AbortSignal.abort(new Error('stop'));
      await rejectsWith(
        index.upsert(storyId, [makeDocument(storyId, 'a', 'The moth circled.')], { signal }),
        AbortedError.isInstance,
        'AbortedError from upsert',
      );
      await rejectsWith(
        index.query(storyId, { text: 'moth', topK: 1, signal }),
        AbortedError.isInstance,
        'AbortedError from query',
      );
      assert.equal(await index.count(storyId), 0);
      await index.upsert(storyId, [makeDocument(storyId, 'kept', 'The moth stayed.')]);
      await rejectsWith(
        index.deleteStory(storyId, { signal }),
        AbortedError.isInstance,
        'AbortedError from deleteStory',
      );
      assert.equal(await index.count(storyId), 1, 'an aborted deleteStory drops nothing');
    },
  },
];

/**
 * Registers the `KeywordIndex` conformance suite with a test runner and returns the number of cases.
 *
 * `create` must return an index with no documents in the stories the suite writes; every case uses its own random
 * story ids, so one shared backend serves every case.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest';
 * import { createMemoryKeywordIndex } from 'storyloom';
 * import { runKeywordIndexSuite } from 'storyloom/testing';
 *
 * runKeywordIndexSuite({ describe, it }, { name: 'memory', create: () => createMemoryKeywordIndex() });
 * ```
 */
export function runKeywordIndexSuite(api: SuiteTestApi, options: SuiteOptions<KeywordIndex>): number {
  return registerSuite(api, 'KeywordIndex conformance', keywordIndexCases, options);
}
