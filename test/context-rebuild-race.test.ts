/**
 * Two rebuilds of one story from two processes on one SQLite file, as after an upgrade that changed the embedder of
 * both a scheduled run and a command run: the second rebuild clears what the first wrote, so only the second may say
 * the index is whole, and if it is cut short, the next call must rebuild rather than trust the fingerprint.
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
import { ConflictError } from '../src/core/errors.js';
import { chapterIdFor, type StoryState } from '../src/state/schema.js';
import { createSqliteStateStore } from '../src/state/sqlite.js';
import { openSqliteDatabase } from '../src/state/sqlite-database.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';

const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-rebuild-race-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));
let files = 0;

const DIMENSIONS = 64;
const EVENTS = [
  'Mira polished the great lens while gulls wheeled over the rocks.',
  'Tobin found a brass key hidden inside the lantern room wall.',
  'A storm tore the fishing nets; Old Gull mended them by candlelight.',
  'Mira read the logbook of the first keeper and learned the island once sank.',
  'Tobin and Mira argued about the drifting compass needle at dawn.',
  'The supply boat failed to come; they rationed the last tin of peaches.',
];

/** One process: its own connection to the file, with a store, both indexes and a manager. */
function processOn(file: string, embedder: Embedder) {
  const database = openSqliteDatabase({ path: file });
  const store = createSqliteStateStore({ database });
  const vectors = createSqliteVectorIndex({ database, dimensions: DIMENSIONS });
  const keywords = createSqliteKeywordIndex({ database });
  const manager = new ContextManager({ store, vectors, keywords, embedder });
  return { database, store, vectors, keywords, manager };
}

async function writeStory(proc: ReturnType<typeof processOn>, count: number, chapterLength = 3): Promise<StoryState> {
  let state = await proc.store.create(
    makeStoryState('tale', { bible: { ...makeStoryState('tale').bible, chapterLength } }),
  );
  for (let i = 0; i < count; i++) {
    const scene = makeNextScene(state, { title: `Night ${i + 1}`, text: EVENTS[i % EVENTS.length]!, importance: 0.2 });
    const closes = (i + 1) % chapterLength === 0;
    const next = makeNextState(state, scene, {
      ...(closes ? { chapterIndex: state.chapterIndex + 1, chapterId: chapterIdFor(state.chapterIndex + 1) } : {}),
    });
    const committed = await proc.store.commitScene('tale', {
      expectedVersion: state.version,
      scene,
      nextState: next,
      consumedInfluenceIds: [],
    });
    state = committed.state;
    await proc.manager.indexScene(scene, { state });
  }
  return state;
}

/** `base`, but its `embed` call number `at` (1-based) waits for `release`, which may make it fail. */
function gatedEmbedder(base: Embedder, at: number) {
  let calls = 0;
  let release!: (failure?: Error) => void;
  let reached!: () => void;
  const gate = new Promise<Error | undefined>((resolve) => {
    release = resolve;
  });
  const arrived = new Promise<void>((resolve) => {
    reached = resolve;
  });
  const embedder: Embedder = {
    ...base,
    embed: async (texts, options) => {
      calls++;
      if (calls === at) {
        reached();
        const failure = await gate;
        if (failure) throw failure;
      }
      return base.embed(texts, options);
    },
  };
  return { embedder, release, arrived };
}

async function sceneRecords(vectors: ReturnType<typeof processOn>['vectors']): Promise<number> {
  const probe = new Float32Array(DIMENSIONS);
  probe[0] = 1;
  return (await vectors.query('tale', { vector: probe, topK: 1000, filter: { type: 'scene' } })).length;
}

describe('ContextManager: two rebuilds of one story from two processes', () => {
  it('the one that started first does not claim a whole index the later one cleared; if the later one is cut short, the next call rebuilds', async () => {
    const file = path.join(folder, `race-${++files}.db`);
    const writer = processOn(file, createHashingEmbedder({ dimensions: DIMENSIONS, seed: 1 }));
    await writeStory(writer, 6);
    expect(await sceneRecords(writer.vectors)).toBe(6);
    writer.database.close();

    const upgraded = createHashingEmbedder({ dimensions: DIMENSIONS, seed: 2 });
    // A: call 1 embeds the fingerprint, call 2 the scenes, call 3 the characters: A waits there, its scenes written.
    const gateA = gatedEmbedder(upgraded, 3);
    // B: waits at its scenes (call 2), having cleared the story, A's scenes with it.
    const gateB = gatedEmbedder(upgraded, 2);
    const a = processOn(file, gateA.embedder);
    const b = processOn(file, gateB.embedder);
    const rebuildA = a.manager.reindex('tale');
    await gateA.arrived;
    const rebuildB = b.manager.reindex('tale');
    await gateB.arrived;
    gateA.release();
    await expect(rebuildA).rejects.toSatisfy(
      (error: unknown) => ConflictError.isInstance(error) && error.isRetryable === true,
    );
    expect((await a.manager.stats('tale')).fingerprint, 'A wrote no fingerprint').toBeNull();
    // B is killed before it writes its scenes.
    gateB.release(new Error('killed'));
    await expect(rebuildB).rejects.toThrow('killed');

    // A new process with the new embedder finds the index incomplete and rebuilds it.
    const c = processOn(file, upgraded);
    await c.manager.getRelevantContext('tale', 'Mira and the lens');
    expect((await c.manager.stats('tale')).fingerprint).not.toBeNull();
    expect(await sceneRecords(c.vectors)).toBe(6);
    for (const proc of [a, b, c]) proc.database.close();
  });

  it('a rebuild alone finishes, and a second one after it finishes too', async () => {
    const file = path.join(folder, `alone-${++files}.db`);
    const writer = processOn(file, createHashingEmbedder({ dimensions: DIMENSIONS, seed: 1 }));
    await writeStory(writer, 4);
    writer.database.close();
    const a = processOn(file, createHashingEmbedder({ dimensions: DIMENSIONS, seed: 2 }));
    expect((await a.manager.reindex('tale')).scenes).toBe(4);
    expect((await a.manager.reindex('tale')).scenes).toBe(4);
    expect((await a.manager.stats('tale')).fingerprint).not.toBeNull();
    expect(await sceneRecords(a.vectors)).toBe(4);
    a.database.close();
  });
});
