/**
 * Model-based property test of the "own keyword side" of ContextManager (docs/architecture.md, "What one process
 * keeps of another's writes"). Several processes share one store and one durable vector index (a memory vector index
 * reporting `durable: true`, standing in for Pinecone); each keeps an in-process keyword index. fast-check draws a
 * sequence of operations (episodes by two writer processes, an episode whose index step runs after a server call, an
 * episode whose index step crashes and is resumed by the next run, prunes by a writer or by the server, autoPrune on
 * one writer, reindex, a new manager per invocation over the server's keyword index, server calls). Whenever the
 * server answers getRelevantContext, its keyword side must hold exactly what a brand-new process's holds after its
 * first call (same documents, same BM25 scores), and both must return the same similar scenes.
 * The last describe pins the shrunk counterexamples the property found when it was written (a reindex before the
 * first scene; a location never saved to the meta-locations record when a new process resumed another's index step),
 * both fixed since.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ContextManager, ContextManagerOptions } from '../src/context/context-manager.js';
import type { KeywordIndex } from '../src/context/keyword-index.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createStoryEngine, type StoryEngine } from '../src/engine/engine.js';
import type { EpisodeContext } from '../src/engine/episode-context.js';
import {
  NIGHT_WATCH_DIMENSIONS,
  nightWatchEmbedder,
  nightWatchGenerator,
  nightWatchStory,
  processOver,
} from './fixtures/night-watch.js';

const _DIM = NIGHT_WATCH_DIMENSIONS;

const _embedder = nightWatchEmbedder;

/**
 * Every word the generator, the fixture story (characters, thread) and the chapter summaries use, plus the scene
 * numbers, so that the lexical listing reaches every keyword document a story can hold.
 */
const words = [
  'Night Mira Tobin went Salt Market Drowned Archive Gull Rock lamp room north pier found brass key sea calm',
  'Word alpha beta gamma delta duty Chapter ending chapter Vale Marsh Old keeper island drifts courage curiosity',
  'lighthouse keepers summary synopsis',
  Array.from({ length: 60 }, (_, i) => String(i + 1)).join(' '),
].join(' ');

const QUERIES = ['brass key', 'Mira at Salt Market', 'sea calm gamma the north pier'];

/** The keyword side as the lexical listing of every word: [id, score] pairs, by id. */
const lexical = async (keywords: KeywordIndex, storyId: string) =>
  (await keywords.query(storyId, { text: words, topK: 1_000 }))
    .map((m) => [m.id, m.score.toFixed(6)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

// ---------------------------------------------------------------------------------------------------------------
// The operations.

type WriterId = 0 | 1;
type Policy = { minAgeScenes: number; maxImportance: number };

type Op =
  | { kind: 'episode'; writer: WriterId }
  /** Commit, then the server answers a reader, then the index step runs. */
  | { kind: 'delayedEpisode'; writer: WriterId }
  /** Commit, then the index step fails (the process is killed); the next run of any writer resumes it. */
  | { kind: 'crashedEpisode'; writer: WriterId }
  | ({ kind: 'prune'; by: WriterId | 'server' } & Policy)
  | { kind: 'reindex'; writer: WriterId }
  /** A new ContextManager over the server's existing keyword index (a manager per invocation). */
  | { kind: 'newServerManager' }
  | { kind: 'serverCall'; query: number };

const writerArb = fc.constantFrom<WriterId>(0, 1);
const policyArb = fc.record({
  minAgeScenes: fc.integer({ min: 0, max: 6 }),
  maxImportance: fc.constantFrom(0.3, 0.5),
});

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('episode' as const), writer: writerArb }), weight: 8 },
  { arbitrary: fc.record({ kind: fc.constant('delayedEpisode' as const), writer: writerArb }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant('crashedEpisode' as const), writer: writerArb }), weight: 2 },
  {
    arbitrary: fc
      .tuple(fc.constantFrom<WriterId | 'server'>(0, 1, 'server'), policyArb)
      .map(([by, policy]): Op => ({ kind: 'prune', by, ...policy })),
    weight: 2,
  },
  { arbitrary: fc.record({ kind: fc.constant('reindex' as const), writer: writerArb }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('newServerManager' as const) }), weight: 1 },
  {
    arbitrary: fc.record({
      kind: fc.constant('serverCall' as const),
      query: fc.integer({ min: 0, max: QUERIES.length - 1 }),
    }),
    weight: 4,
  },
);

/** Drawn once per run. */
interface Setup {
  /** autoPrune of writer 0 (fixed at construction), or none. */
  autoPrune: Policy | null;
  /** Whether the server is a second manager of writer 1's process, over the same keyword index. */
  serverSharesWriter1: boolean;
}

const setupArb: fc.Arbitrary<Setup> = fc.record({
  autoPrune: fc.option(policyArb, { nil: null }),
  serverSharesWriter1: fc.boolean(),
});

// ---------------------------------------------------------------------------------------------------------------
// The world of one run.

interface Writer {
  context: ContextManager;
  keywords: KeywordIndex;
  engine: StoryEngine;
  /** How the next index step of this writer runs. */
  next: 'normal' | 'delay' | 'crash';
}

let runs = 0;

async function world(setup: Setup) {
  const storyId = `keyword-side-${++runs}`;
  const { clock, store, vectors } = await nightWatchStory(storyId);
  const checks = { count: 0 };
  let midStepFailure: unknown;

  const writers: Writer[] = [];
  const server = {
    keywords: createMemoryKeywordIndex() as KeywordIndex,
    context: undefined as unknown as ContextManager,
  };

  /** The server answers a reader; the property is checked against a brand-new process. */
  async function serverAnswers(query: string, when: string): Promise<void> {
    checks.count++;
    await server.context.getRelevantContext(storyId, query);
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, query);
    const state = await store.load(storyId);
    const where = `${when} (scenes ${state.sceneCount}, chapter ${state.chapterIndex})`;
    expect(await lexical(server.keywords, storyId), `keyword side ${where}`).toEqual(
      await lexical(cold.keywords, storyId),
    );
    for (const q of QUERIES) {
      const a = await cold.context.getRelevantContext(storyId, q, { k: 5 });
      const b = await server.context.getRelevantContext(storyId, q, { k: 5 });
      expect(
        b.similarScenes.map((s) => s.sceneId),
        `similarScenes for "${q}" ${where}`,
      ).toEqual(a.similarScenes.map((s) => s.sceneId));
    }
  }

  for (const id of [0, 1] as const) {
    const extra: Partial<ContextManagerOptions> = id === 0 && setup.autoPrune ? { autoPrune: setup.autoPrune } : {};
    const { context, keywords } = processOver(store, vectors, extra);
    const writer: Writer = { context, keywords, engine: undefined as unknown as StoryEngine, next: 'normal' };
    const wrapped: EpisodeContext = {
      getRelevantContext: context.getRelevantContext.bind(context),
      refreshCache: context.refreshCache.bind(context),
      indexScene: async (...args: Parameters<ContextManager['indexScene']>) => {
        const mode = writer.next;
        writer.next = 'normal';
        if (mode === 'crash') throw new Error('the writer was killed between its commit and its index step');
        if (mode === 'delay') {
          try {
            await serverAnswers('the lamp', `between the commit of scene ${args[0].index} and its index step`);
          } catch (error) {
            // The engine would record a throw here as a failed step: keep it for the property instead.
            midStepFailure ??= error;
          }
        }
        return context.indexScene(...args);
      },
    };
    writer.engine = createStoryEngine({ store, context: wrapped, generator: nightWatchGenerator(), clock });
    writers.push(writer);
  }
  if (setup.serverSharesWriter1) server.keywords = writers[1]!.keywords;
  server.context = processOver(store, vectors, {}, server.keywords).context;

  async function apply(op: Op): Promise<void> {
    switch (op.kind) {
      case 'episode':
        await writers[op.writer]!.engine.runEpisode(storyId);
        break;
      case 'delayedEpisode': {
        writers[op.writer]!.next = 'delay';
        await writers[op.writer]!.engine.runEpisode(storyId);
        writers[op.writer]!.next = 'normal';
        if (midStepFailure !== undefined) throw midStepFailure;
        break;
      }
      case 'crashedEpisode': {
        writers[op.writer]!.next = 'crash';
        await writers[op.writer]!.engine.runEpisode(storyId);
        writers[op.writer]!.next = 'normal';
        break;
      }
      case 'prune': {
        const context = op.by === 'server' ? server.context : writers[op.by]!.context;
        await context.prune(storyId, { minAgeScenes: op.minAgeScenes, maxImportance: op.maxImportance });
        break;
      }
      case 'reindex':
        await writers[op.writer]!.context.reindex(storyId);
        break;
      case 'newServerManager':
        server.context = processOver(store, vectors, {}, server.keywords).context;
        break;
      case 'serverCall':
        await serverAnswers(QUERIES[op.query]!, 'at a server call');
        break;
    }
  }

  return { storyId, apply, serverAnswers, checks };
}

describe('ContextManager property: the own keyword side of a process whose vectors outlive it', () => {
  it('after any sequence of episodes, delayed or crashed index steps, prunes, reindexes and new managers, the server keyword side is what a new process fills', async () => {
    let checked = 0;
    await fc.assert(
      fc.asyncProperty(setupArb, fc.array(opArb, { minLength: 1, maxLength: 40, size: 'max' }), async (setup, ops) => {
        const w = await world(setup);
        for (const op of ops) await w.apply(op);
        // Every run ends with a server call, so every run is checked at least once.
        await w.serverAnswers('the lamp', 'at the end');
        checked += w.checks.count;
      }),
      // A fixed seed, as every property test here: a failure replays; change it to explore other sequences.
      { numRuns: 60, seed: 20_261_126 },
    );
    expect(checked).toBeGreaterThan(60);
  }, 120_000);
});

/** Replays one op sequence, then lets the server answer once more (as every property run ends). */
async function replay(setup: Setup, ops: Op[]): Promise<void> {
  const w = await world(setup);
  for (const op of ops) await w.apply(op);
  await w.serverAnswers('the lamp', 'at the end');
}

describe('ContextManager property: shrunk counterexamples, pinned', () => {
  const episode = (writer: WriterId): Op => ({ kind: 'episode', writer });

  it("a reindex before the first scene by the server's own process (a shared keyword index) leaves the side as a new process's", async () => {
    // The reindexing manager writes the characters and the thread to the shared keyword index; a new process, which
    // finds no scene, fills nothing.
    await replay({ autoPrune: null, serverSharesWriter1: true }, [{ kind: 'reindex', writer: 1 }]);
  });

  it('a location named by a scene whose index step another process resumed is known to the server as to a new process', async () => {
    // Writer 1 commits scene 4 (the north pier) and dies before its index step; writer 0, new, resumes it: the fill
    // at its first check reads scene 4 from the store, so indexScene finds the location already known and never
    // saves it to the meta-locations record. The server (filled before scene 4) never learns it; a new process does
    // (its fill reads every scene), so the exact stage and similarScenes differ.
    await replay({ autoPrune: null, serverSharesWriter1: false }, [
      episode(1),
      { kind: 'delayedEpisode', writer: 1 },
      episode(1),
      episode(1),
      { kind: 'crashedEpisode', writer: 1 },
      episode(0),
      episode(0),
      episode(0),
      { kind: 'crashedEpisode', writer: 0 },
    ]);
  });
});
