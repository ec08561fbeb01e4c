/**
 * Memory upkeep when two processes share one story's durable indexes (two Lambdas, a command beside a server): each
 * process here is its own connection to one SQLite file, with its own store, indexes and manager. Prunes at once,
 * a prune during a rebuild, a rebuild that fails half-way, a rebuild that loses to another embedder's, and one
 * manager asked to rebuild twice at once.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import type { Embedder } from '../src/context/embedder.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createSqliteKeywordIndex } from '../src/context/sqlite-keyword-index.js';
import { createSqliteVectorIndex } from '../src/context/sqlite-vector-index.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { ConflictError } from '../src/core/errors.js';
import { chapterIdFor, type StoryState } from '../src/state/schema.js';
import { createSqliteStateStore } from '../src/state/sqlite.js';
import { openSqliteDatabase } from '../src/state/sqlite-database.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';
import { KEEPER_EVENTS } from './fixtures/keepers.js';
import { withMembers } from './fixtures/night-watch.js';

const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-upkeep-processes-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));
let files = 0;
const newFile = () => path.join(folder, `story-${++files}.db`);

const DIMENSIONS = 64;
const CHAPTER = 4;
const oldModel = () => createHashingEmbedder({ dimensions: DIMENSIONS, seed: 1 });
const newModel = () => createHashingEmbedder({ dimensions: DIMENSIONS, seed: 2 });

/** A gate a test opens: `arrived` once something waits at it, `release` lets it go on (or fail with `failure`). */
function gate() {
  let release!: (failure?: Error) => void;
  let reached!: () => void;
  const opened = new Promise<Error | undefined>((resolve) => {
    release = resolve;
  });
  const arrived = new Promise<void>((resolve) => {
    reached = resolve;
  });
  return {
    release,
    arrived,
    wait: async () => {
      reached();
      const failure = await opened;
      if (failure) throw failure;
    },
  };
}

/** `base`, counting the texts it embeds; the call `holdAt` picks (1-based) waits at `held`. */
function countingEmbedder(base: Embedder, holdAt: (call: number, texts: readonly string[]) => boolean = () => false) {
  const held = gate();
  const texts: string[] = [];
  let calls = 0;
  const embedder: Embedder = {
    ...base,
    embed: async (batch, options) => {
      calls++;
      texts.push(...batch);
      if (holdAt(calls, batch)) await held.wait();
      return base.embed(batch, options);
    },
  };
  return { embedder, texts, held };
}

type Process = ReturnType<typeof processOn>;

function processOn(file: string, embedder: Embedder, wrap: (vectors: VectorIndex) => VectorIndex = (v) => v) {
  const database = openSqliteDatabase({ path: file });
  const store = createSqliteStateStore({ database });
  const vectors = wrap(createSqliteVectorIndex({ database, dimensions: DIMENSIONS }));
  const keywords = createSqliteKeywordIndex({ database });
  const manager = new ContextManager({ store, vectors, keywords, embedder });
  return { database, store, vectors, keywords, manager };
}

/** Commits and indexes `count` scenes in chapters of four: importance 0.2, every fourth from the second 0.35. */
async function writeStory(file: string, count: number): Promise<void> {
  const writer = processOn(file, oldModel());
  let state: StoryState = await writer.store.create(
    makeStoryState('tale', { bible: { ...makeStoryState('tale').bible, chapterLength: CHAPTER } }),
  );
  for (let i = 0; i < count; i++) {
    const scene = makeNextScene(state, {
      title: `Night ${i + 1}`,
      text: `${KEEPER_EVENTS[i % KEEPER_EVENTS.length]} The sea kept its own counsel on night ${i + 1}.`,
      summary: KEEPER_EVENTS[i % KEEPER_EVENTS.length],
      importance: i % 4 === 1 ? 0.35 : 0.2,
    });
    const closes = (i + 1) % CHAPTER === 0;
    const next = makeNextState(
      state,
      scene,
      closes ? { chapterIndex: state.chapterIndex + 1, chapterId: chapterIdFor(state.chapterIndex + 1) } : {},
    );
    state = (
      await writer.store.commitScene('tale', {
        expectedVersion: state.version,
        scene,
        nextState: next,
        consumedInfluenceIds: [],
      })
    ).state;
    await writer.manager.indexScene(scene, { state });
  }
  writer.database.close();
}

async function idsOf(vectors: VectorIndex, type: string): Promise<string[]> {
  const probe = new Float32Array(DIMENSIONS);
  probe[0] = 1;
  return (await vectors.query('tale', { vector: probe, topK: 10_000, filter: { type } }))
    .map((match) => match.id)
    .sort();
}

const sceneIds = (proc: Process) => idsOf(proc.vectors, 'scene');

async function keywordSceneIds(proc: Process): Promise<string[]> {
  const hits = await proc.keywords.query('tale', {
    text: 'sea kept counsel night',
    topK: 1_000,
    filter: { type: 'scene' },
  });
  return hits.map((hit) => hit.id).sort();
}

/** A vector index whose first write of a prune record waits at a gate. */
function holdingPruneRecord(inner: VectorIndex) {
  const held = gate();
  let first = true;
  const vectors = withMembers(inner, {
    upsert: async (...args: Parameters<VectorIndex['upsert']>) => {
      if (first && args[1].some((record) => record.id.startsWith('meta-pruned'))) {
        first = false;
        await held.wait();
      }
      return inner.upsert(...args);
    },
  });
  return { vectors, held };
}

function closeAll(...processes: Process[]) {
  for (const proc of processes) proc.database.close();
}

describe('prunes in two processes at once', () => {
  it('keep both bounds, so a reindex brings back none of what either dropped', async () => {
    const file = newFile();
    await writeStory(file, 16); // four chapters closed and summarised
    let holding!: ReturnType<typeof holdingPruneRecord>;
    const a = processOn(file, oldModel(), (vectors) => {
      holding = holdingPruneRecord(vectors);
      return holding.vectors;
    });
    const b = processOn(file, oldModel());
    // A (an operator): every closed chapter, importance below 0.3. Its record write is in flight...
    const pruneA = a.manager.prune('tale', { minAgeScenes: 0, maxImportance: 0.3 });
    await holding.held.arrived;
    // ...while B (another Lambda's autoPrune) drops the two oldest chapters below 0.5.
    const pruneB = await b.manager.prune('tale', { minAgeScenes: 8, maxImportance: 0.5 });
    holding.held.release();
    const fromA = await pruneA;
    expect(fromA.deleted).toBeGreaterThan(0);
    expect(pruneB.deleted).toBeGreaterThan(0);
    const afterPrunes = await sceneIds(b);
    // Both kinds of scene of the two oldest chapters are gone (0.35 by B), only the 0.35 ones remain after that.
    expect(afterPrunes.length).toBe(2);

    const rebuilt = await b.manager.reindex('tale');
    expect(rebuilt.scenes).toBe(16);
    expect(await sceneIds(b), 'memories a prune dropped came back with the reindex').toEqual(afterPrunes);
    expect(await keywordSceneIds(b)).toEqual(afterPrunes);
    closeAll(a, b);
  });
});

describe('a prune in one process while another rebuilds', () => {
  for (const earlier of [false, true]) {
    it(`stays dropped through the rebuild (${earlier ? 'an earlier prune on record' : 'no earlier prune'})`, async () => {
      const file = newFile();
      await writeStory(file, 12);
      if (earlier) {
        const operator = processOn(file, oldModel());
        await operator.manager.prune('tale', { minAgeScenes: 8, maxImportance: 0.3 }); // chapter 1, below 0.3
        closeAll(operator);
      }
      const a = processOn(file, oldModel());
      // B waits at its embedder trial: it has read the prune records, and cleared nothing yet.
      const counted = countingEmbedder(oldModel(), (call) => call === 1);
      const b = processOn(file, counted.embedder);
      const rebuild = b.manager.reindex('tale');
      await counted.held.arrived;
      const pruned = await a.manager.prune('tale', { minAgeScenes: 0, maxImportance: 0.5 });
      expect(pruned.deleted).toBeGreaterThan(0);
      const afterPrune = await sceneIds(a);
      counted.held.release();
      await rebuild;
      expect(await sceneIds(a), 'memories the prune dropped are back').toEqual(afterPrune);
      expect(await keywordSceneIds(a)).toEqual(afterPrune);
      closeAll(a, b);
    });
  }

  it('is made again over every chapter once a rebuild elsewhere has brought memories back', async () => {
    const file = newFile();
    await writeStory(file, 14); // three chapters closed, two scenes into the fourth
    const a = processOn(file, oldModel());
    const policy = { minAgeScenes: 0, maxImportance: 0.5 };
    const first = await a.manager.prune('tale', policy);
    expect(first.deleted).toBe(12);
    // The prune records are lost (a store restored from an older backup, a rebuild of an earlier version), and a
    // rebuild in B writes every scene back.
    const b = processOn(file, oldModel());
    const records = (await idsOf(b.vectors, 'meta')).filter((id) => id.startsWith('meta-pruned'));
    expect(records.length).toBeGreaterThan(0);
    await b.vectors.delete('tale', { ids: records });
    await b.manager.reindex('tale');
    expect((await sceneIds(a)).length).toBe(14);
    // A's autoPrune runs again: it must not pass over the chapters it pruned before that rebuild.
    const again = await a.manager.prune('tale', policy);
    expect(again.deleted).toBe(12);
    expect((await sceneIds(a)).length).toBe(2);
    closeAll(a, b);
  });
});

describe('a rebuild that fails half-way in another process', () => {
  it('is finished by the next call of a process that checked the story before, not served half-built', async () => {
    const file = newFile();
    await writeStory(file, 12);
    const a = processOn(file, oldModel());
    await a.manager.getRelevantContext('tale', 'the brass key in the lantern room');
    const before = await a.manager.stats('tale');
    // B (a `memory reindex` command): its trial and characters calls go through; the threads call fails.
    const counted = countingEmbedder(oldModel(), (call) => call === 3);
    const b = processOn(file, counted.embedder);
    const rebuild = b.manager.reindex('tale');
    await counted.held.arrived;
    counted.held.release(new Error('throttled'));
    await expect(rebuild).rejects.toThrow('throttled');
    closeAll(b);
    const bundle = await a.manager.getRelevantContext('tale', 'the brass key in the lantern room');
    const after = await a.manager.stats('tale');
    expect(after.fingerprint).toBe(before.fingerprint);
    expect(after.byType).toEqual(before.byType);
    expect(bundle.similarScenes.length).toBeGreaterThan(0);
    closeAll(a);
  });
});

describe('a process that checked the story before, while another process rebuilds it', () => {
  it('takes a rebuild finishing (its record removed, its fingerprint not yet written) for one under way, and rebuilds nothing', async () => {
    const file = newFile();
    await writeStory(file, 12);
    const embeddedByA = countingEmbedder(oldModel());
    const a = processOn(file, embeddedByA.embedder);
    await a.manager.getRelevantContext('tale', 'the brass key in the lantern room');
    // B (a `memory reindex`): its fingerprint write waits at a gate, after its rebuild record was removed.
    const atFingerprint = gate();
    const b = processOn(file, oldModel(), (vectors) =>
      withMembers(vectors, {
        upsert: async (...args: Parameters<VectorIndex['upsert']>) => {
          if (args[1].some((record) => record.id === 'meta-fingerprint')) await atFingerprint.wait();
          return vectors.upsert(...args);
        },
      }),
    );
    const rebuild = b.manager.reindex('tale');
    await atFingerprint.arrived;
    const before = embeddedByA.texts.length;
    const bundle = await a.manager.getRelevantContext('tale', 'the brass key in the lantern room');
    atFingerprint.release();
    await expect(rebuild).resolves.toMatchObject({ scenes: 12 });
    expect(embeddedByA.texts.slice(before), 'texts A embedded besides its query').toHaveLength(1);
    expect(bundle.similarScenes.length).toBeGreaterThan(0);
    closeAll(a, b);
  });

  it('reads the fingerprint again at most every few seconds, not at every call', async () => {
    const file = newFile();
    await writeStory(file, 8);
    let fingerprintReads = 0;
    const a = processOn(file, oldModel(), (vectors) =>
      withMembers(vectors, {
        fetch: async (...args: Parameters<VectorIndex['fetch']>) => {
          if (args[1].includes('meta-fingerprint')) fingerprintReads++;
          return vectors.fetch(...args);
        },
      }),
    );
    await a.manager.getRelevantContext('tale', 'the brass key in the lantern room');
    fingerprintReads = 0;
    for (let call = 0; call < 20; call++) await a.manager.getRelevantContext('tale', 'the lantern room');
    expect(fingerprintReads).toBeLessThanOrEqual(1);
    closeAll(a);
  });
});

describe('a rebuild for the old embedder that loses to the new embedder’s rebuild', () => {
  it('stops at its next write with a retryable conflict, writing no old-model vector under the new fingerprint', async () => {
    const file = newFile();
    await writeStory(file, 8);
    // B (an old container's `memory reindex`): trial, clear, scenes written; it waits in its characters call.
    const counted = countingEmbedder(oldModel(), (_call, texts) => texts.some((text) => text.includes('(main,')));
    const b = processOn(file, counted.embedder);
    const manual = b.manager.reindex('tale');
    await counted.held.arrived;
    // A (the new deployment) finds the story mid-rebuild for another embedder, rebuilds it for its own, finishes.
    const a = processOn(file, newModel());
    await a.manager.getRelevantContext('tale', 'the brass key');
    const fingerprint = (await a.manager.stats('tale')).fingerprint;
    expect(fingerprint).toContain(newModel().modelId);
    const characters = await idsOf(a.vectors, 'character');
    expect(characters.length).toBeGreaterThan(0);
    const written = await a.vectors.fetch('tale', [...characters, ...(await idsOf(a.vectors, 'summary'))]);
    counted.held.release();
    await expect(manual).rejects.toSatisfy(
      (error: unknown) => ConflictError.isInstance(error) && error.isRetryable === true,
    );
    expect((await a.manager.stats('tale')).fingerprint).toBe(fingerprint);
    // What A wrote is as A wrote it: B's vectors for the same records did not land over them.
    const now = await a.vectors.fetch(
      'tale',
      written.map((record) => record.id),
    );
    for (const [index, record] of now.entries()) {
      expect(Array.from(record.values), record.id).toEqual(Array.from(written[index]!.values));
    }
    closeAll(a, b);
  });
});

describe('one manager asked to rebuild twice at once', () => {
  it('a reindex and the automatic rebuild of a call made meanwhile rebuild the story once', async () => {
    const file = newFile();
    await writeStory(file, 12);
    const counted = countingEmbedder(newModel());
    const b = processOn(file, counted.embedder);
    // The call finds the story built for the old embedder and queues its rebuild behind the reindex.
    const manual = b.manager.reindex('tale');
    const reading = b.manager.getRelevantContext('tale', 'the brass key');
    await Promise.all([manual, reading]);
    // Each scene's text embedded once: one rebuild.
    expect(counted.texts.filter((text) => text.includes('kept its own counsel')).length).toBe(12);
    expect((await b.manager.stats('tale')).fingerprint).toContain(newModel().modelId);
    closeAll(b);
  });
});
