/**
 * A process with durable vectors and an in-process keyword index keeps a keyword side of its own: filled at its
 * first call, kept up with other processes' scenes and prunes. Here one memory vector index, reporting itself
 * durable, stands in for Pinecone and is shared by every "process"; test/context-pinecone.test.ts runs the same over
 * the Pinecone stand-in.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createStoryEngine } from '../src/engine/engine.js';
import type { EpisodeContext } from '../src/engine/episode-context.js';
import {
  countingFills,
  NIGHT_WATCH_DIMENSIONS,
  nightWatchEmbedder,
  nightWatchGenerator,
  nightWatchStory,
  processOver,
  withMembers,
} from './fixtures/night-watch.js';

const _DIM = NIGHT_WATCH_DIMENSIONS;

const embedder = nightWatchEmbedder;
const words =
  'Night Mira Tobin Salt Market Drowned Archive Gull Rock lamp room north pier brass key sea calm alpha beta gamma delta';

async function setup(storyId: string) {
  const { clock, store, vectors } = await nightWatchStory(storyId);
  const lambda = processOver(store, vectors);
  const engine = createStoryEngine({ store, context: lambda.context, generator: nightWatchGenerator(), clock });
  return { clock, store, vectors, lambda, engine };
}

const QUERIES = ['brass key', 'Mira at Salt Market', 'the north pier', 'sea calm gamma', 'Night 2 the Drowned Archive'];

/** The server's similar scenes for each query are a new process's. */
async function expectSameMemories(
  server: ContextManager,
  fresh: ContextManager,
  storyId: string,
  queries: readonly string[],
): Promise<void> {
  for (const query of queries) {
    const a = await fresh.getRelevantContext(storyId, query, { k: 5 });
    const b = await server.getRelevantContext(storyId, query, { k: 5 });
    expect(
      b.similarScenes.map((scene) => scene.sceneId),
      query,
    ).toEqual(a.similarScenes.map((scene) => scene.sceneId));
  }
}

const lexical = async (keywords: ReturnType<typeof createMemoryKeywordIndex>, storyId: string) =>
  (await keywords.query(storyId, { text: words, topK: 1_000 })).map((m) => [m.id, m.score.toFixed(6)]);

describe('ContextManager: the keyword side of a process whose vectors outlive it', () => {
  it('a server whose first call comes after the fingerprint was written but before the first scene keeps up', async () => {
    const storyId = 'audit-first-empty';
    const { store, vectors, lambda, engine } = await setup(storyId);
    // The episode Lambda starts the story's first episode: its getRelevantContext writes the fingerprint.
    await lambda.context.getRelevantContext(storyId, 'the beginning');
    // A reader-facing server looks at the story before its first scene is committed.
    const server = processOver(store, vectors);
    await server.context.getRelevantContext(storyId, 'the beginning');
    for (let e = 0; e < 6; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    const cold = processOver(store, vectors);
    await expectSameMemories(server.context, cold.context, storyId, [
      'brass key',
      'Mira at Salt Market',
      'the north pier',
    ]);
    expect(await server.keywords.count(storyId)).toBe(await cold.keywords.count(storyId));
    expect(await lexical(server.keywords, storyId)).toEqual(await lexical(cold.keywords, storyId));
  });

  it("a prune made elsewhere with no scene after it leaves this process's keyword side too", async () => {
    const storyId = 'audit-prune-idle';
    const { store, vectors, lambda, engine } = await setup(storyId);
    for (let e = 0; e < 12; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    const server = processOver(store, vectors);
    await server.context.getRelevantContext(storyId, 'the lamp');
    // The CLI (or an operator) prunes; no episode runs after it (a finished story, or between two scheduled episodes).
    expect((await lambda.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 })).deleted).toBeGreaterThan(0);
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the lamp');
    await server.context.getRelevantContext(storyId, 'the lamp');
    await expectSameMemories(server.context, cold.context, storyId, QUERIES);
    expect(await server.keywords.count(storyId)).toBe(await cold.keywords.count(storyId));
    expect(await lexical(server.keywords, storyId)).toEqual(await lexical(cold.keywords, storyId));
  });

  it('a call lists the prune records (a filtered query) only when a prune was made since it last did', async () => {
    const storyId = 'prune-listing';
    const { store, vectors, lambda, engine } = await setup(storyId);
    for (let e = 0; e < 12; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    let listings = 0;
    const counted = new Proxy(vectors, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (key !== 'query') return value;
        return (id: string, query: Parameters<typeof vectors.query>[1]) => {
          if (query.filter?.sourceId === 'pruned') listings++;
          return vectors.query(id, query);
        };
      },
    });
    const server = processOver(store, counted);
    // The first call fills the side; the second lists the records for its check.
    await server.context.getRelevantContext(storyId, 'the lamp');
    await server.context.getRelevantContext(storyId, 'the lamp');
    listings = 0;
    for (const query of QUERIES) await server.context.getRelevantContext(storyId, query);
    expect(listings, 'calls with no prune since').toBe(0);
    expect((await lambda.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 })).deleted).toBeGreaterThan(0);
    await server.context.getRelevantContext(storyId, 'the lamp');
    expect(listings, 'the call after a prune made elsewhere').toBeGreaterThan(0);
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the lamp');
    expect(await lexical(server.keywords, storyId)).toEqual(await lexical(cold.keywords, storyId));
    // The call after the refill still catches the side up once (a catch-up lists the records of its own).
    await server.context.getRelevantContext(storyId, 'the lamp');
    listings = 0;
    for (const query of QUERIES) await server.context.getRelevantContext(storyId, query);
    expect(listings, 'calls after that').toBe(0);
  });

  it('a prune made elsewhere that the listing does not show yet (queries lagging writes, as on Pinecone) still leaves this side', async () => {
    const storyId = 'prune-listing-lag';
    const { store, vectors, lambda, engine } = await setup(storyId);
    for (let e = 0; e < 12; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    // This process's view of the shared index: while `lagging`, its filtered query does not list the prune records,
    // though a fetch by id already sees the merged record the prune rewrote.
    let lagging = false;
    const lagged = new Proxy(vectors, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (key !== 'query') return value;
        return async (id: string, query: Parameters<typeof vectors.query>[1]) => {
          const matches = await vectors.query(id, query);
          return lagging && query.filter?.sourceId === 'pruned' ? [] : matches;
        };
      },
    });
    const server = processOver(store, lagged);
    await server.context.getRelevantContext(storyId, 'the lamp');
    await server.context.getRelevantContext(storyId, 'the lamp');
    expect((await lambda.context.prune(storyId, { minAgeScenes: 4, maxImportance: 0.5 })).deleted).toBeGreaterThan(0);
    lagging = true;
    await server.context.getRelevantContext(storyId, 'the lamp');
    lagging = false;
    for (const query of QUERIES) await server.context.getRelevantContext(storyId, query);
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the lamp');
    expect(await lexical(server.keywords, storyId)).toEqual(await lexical(cold.keywords, storyId));
  });

  it('an autoPrune in the index step of a scene the server already caught up with leaves its keyword side too', async () => {
    const storyId = 'audit-autoprune';
    const { clock, store, vectors } = await nightWatchStory(storyId);
    const lambda = processOver(store, vectors, { autoPrune: { minAgeScenes: 4, maxImportance: 0.5 } }).context;
    const engine = createStoryEngine({ store, context: lambda, generator: nightWatchGenerator(), clock });
    for (let e = 0; e < 7; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    const server = processOver(store, vectors);
    await server.context.getRelevantContext(storyId, 'the lamp');
    // The next episode closes chapter 1 (scene index 7); the server answers a reader between its commit and its index
    // step, the index step then writes the summary and prunes (autoPrune).
    const before = await store.load(storyId);
    expect((before.sceneCount + 1) % 4).toBe(0);
    const stepsSeen: string[] = [];
    const pausing = withMembers(lambda, {
      indexScene: async (...args: Parameters<typeof lambda.indexScene>) => {
        stepsSeen.push('index');
        await server.context.getRelevantContext(storyId, 'the lamp');
        return lambda.indexScene(...args);
      },
    });
    const engine2 = createStoryEngine({ store, context: pausing, generator: nightWatchGenerator(), clock });
    expect((await engine2.runEpisode(storyId)).complete).toBe(true);
    expect(stepsSeen).toEqual(['index']);
    expect((await vectors.fetch(storyId, ['meta-pruned'])).length).toBe(1);
    // The server's next calls, before the next episode.
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the lamp');
    await server.context.getRelevantContext(storyId, 'the lamp');
    await server.context.getRelevantContext(storyId, 'the lamp');
    await expectSameMemories(server.context, cold.context, storyId, QUERIES);
    expect(await server.keywords.count(storyId)).toBe(await cold.keywords.count(storyId));
  });

  it('a process does not refill its whole keyword side after its own prune', async () => {
    // Two warm episode Lambda instances take turns (a schedule's invocations land on either), both with autoPrune.
    const storyId = 'audit-own-prune';
    const { clock, store, vectors } = await nightWatchStory(storyId);
    const policy = { minAgeScenes: 4, maxImportance: 0.5 };
    const instance = () => {
      const counting = countingFills(store);
      const context = new ContextManager({
        store: counting.store,
        vectors,
        keywords: createMemoryKeywordIndex(),
        embedder,
        recentScenes: 2,
        summaryChapters: 1,
        autoPrune: policy,
      });
      return {
        fills: counting.fills,
        engine: createStoryEngine({ store, context, generator: nightWatchGenerator(), clock }),
      };
    };
    const a = instance();
    const b = instance();
    // A writes the first 7 scenes (B fills at its first call later), then A closes chapter 1 (scene 7) and prunes.
    for (let e = 0; e < 8; e++) expect((await a.engine.runEpisode(storyId)).complete).toBe(true);
    expect((await vectors.fetch(storyId, ['meta-pruned'])).length).toBe(1);
    // B runs the next episode: it fills once (a prune made elsewhere) ...
    expect((await b.engine.runEpisode(storyId)).complete).toBe(true);
    // ... and A the one after: its side already left out what its own prune dropped.
    const before = a.fills();
    expect((await a.engine.runEpisode(storyId)).complete).toBe(true);
    expect(a.fills() - before).toBe(0);
  });
});

const sortedIds = async (keywords: ReturnType<typeof createMemoryKeywordIndex>, storyId: string) =>
  (await keywords.query(storyId, { text: words, topK: 1_000 })).map((m) => m.id).sort();

describe('ContextManager: a prune made while the keyword side lags', () => {
  it('an explicit prune by a process that has not caught up leaves its keyword side as a new process has it', async () => {
    const storyId = 'lag-prune';
    const { store, vectors, engine } = await setup(storyId);
    for (let e = 0; e < 2; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    const server = processOver(store, vectors);
    await server.context.getRelevantContext(storyId, 'the brass key');
    for (let e = 0; e < 8; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    // A maintenance call on the server, before its next read of the story.
    const pruned = await server.context.prune(storyId, { minAgeScenes: 0, maxImportance: 0.5 });
    expect(pruned.deleted).toBeGreaterThan(0);
    await server.context.getRelevantContext(storyId, 'the brass key');
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the brass key');
    // What a reader sees: a pruned scene comes back in this process's memories, not in a new process's.
    const ids = async (c: ContextManager) =>
      (await c.getRelevantContext(storyId, 'Night 3 at Gull Rock, the sea was calm', { k: 8 })).similarScenes.map(
        (scene) => scene.sceneId,
      );
    expect(await ids(server.context)).toEqual(await ids(cold.context));
    expect(await sortedIds(server.keywords, storyId)).toEqual(await sortedIds(cold.keywords, storyId));
  });

  it("an autoPrune in a resumed index step (another process crashed after its commit) leaves this side as a new process's", async () => {
    const storyId = 'lag-autoprune';
    const { clock, store, vectors } = await setup(storyId);
    const autoPrune = { minAgeScenes: 0, maxImportance: 0.5 };
    const a = processOver(store, vectors, { autoPrune });
    let crash = false;
    const crashing: EpisodeContext = {
      getRelevantContext: a.context.getRelevantContext.bind(a.context),
      indexScene: async (
        scene: Parameters<EpisodeContext['indexScene']>[0],
        options: Parameters<EpisodeContext['indexScene']>[1],
      ) => {
        if (crash && scene.index === 3) throw new Error('the Lambda was killed');
        return a.context.indexScene(scene, options);
      },
    };
    const engineA = createStoryEngine({ store, context: crashing, generator: nightWatchGenerator(), clock });
    const s = processOver(store, vectors, { autoPrune });
    const engineS = createStoryEngine({ store, context: s.context, generator: nightWatchGenerator(), clock });
    for (let e = 0; e < 2; e++) expect((await engineS.runEpisode(storyId)).complete).toBe(true);
    crash = true;
    for (let e = 0; e < 2; e++) await engineA.runEpisode(storyId); // scene 3 (closes chapter 0) is not indexed
    // S's next run first finishes scene 3's steps (index: summary, then autoPrune), then writes scene 8.
    const resumed = await engineS.runEpisode(storyId);
    expect(resumed.outcome).toBe('resumed');
    expect(resumed.complete).toBe(true);
    const result = await engineS.runEpisode(storyId);
    expect(result.outcome).toBe('created');
    const cold = processOver(store, vectors, { autoPrune });
    await cold.context.getRelevantContext(storyId, 'the brass key');
    await s.context.getRelevantContext(storyId, 'the brass key');
    expect(await sortedIds(s.keywords, storyId)).toEqual(await sortedIds(cold.keywords, storyId));
  });
});

describe('ContextManager: a keyword index shared by several managers of one process', () => {
  it('a catch-up that fails in one manager is redone by another manager over the same keyword index', async () => {
    const storyId = 'shared-failure';
    const { store, vectors, engine } = await setup(storyId);
    for (let e = 0; e < 2; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    const keywords = createMemoryKeywordIndex();
    let failing = false;
    const flaky = withMembers(keywords, {
      upsert: (...args: Parameters<typeof keywords.upsert>) =>
        failing ? Promise.reject(new Error('keyword outage')) : keywords.upsert(...args),
    });
    // Two managers of one process over the same (module-level) keyword index, both past their first check.
    const first = new ContextManager({ store, vectors, keywords: flaky, embedder, recentScenes: 2 });
    const second = new ContextManager({ store, vectors, keywords: flaky, embedder, recentScenes: 2 });
    await first.getRelevantContext(storyId, 'the brass key');
    await second.getRelevantContext(storyId, 'the brass key');
    for (let e = 0; e < 6; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    failing = true;
    await expect(first.getRelevantContext(storyId, 'the brass key')).rejects.toThrow('keyword outage');
    failing = false;
    // The failure undid the shared side: the other manager fills it again.
    await second.getRelevantContext(storyId, 'the brass key');
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the brass key');
    expect(await sortedIds(keywords, storyId)).toEqual(await sortedIds(cold.keywords, storyId));
  });

  it('a manager made per invocation over a module-level in-process keyword index keeps up with other processes', async () => {
    const storyId = 'per-invocation';
    const { store, vectors, engine } = await setup(storyId);
    for (let e = 0; e < 2; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    // A reader-facing handler: indexes at module scope, a ContextManager per request.
    const keywords = createMemoryKeywordIndex();
    const handle = (query: string) =>
      new ContextManager({ store, vectors, keywords, embedder, recentScenes: 2 }).getRelevantContext(storyId, query);
    await handle('the brass key');
    for (let e = 0; e < 6; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    await handle('the brass key');
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the brass key');
    expect(await sortedIds(keywords, storyId)).toEqual(await sortedIds(cold.keywords, storyId));
  });

  it("a new process reads the cast once when the newest scene's index step had run before its fill", async () => {
    const storyId = 'cast-once';
    const { store, vectors, engine } = await setup(storyId);
    for (let e = 0; e < 5; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    const state = await store.load(storyId);
    const castIds = new Set(Object.keys(state.characters).map((id) => `character-${id}`));
    expect(castIds.size).toBeGreaterThan(0);
    let castReads = 0;
    const counted = withMembers(vectors, {
      fetch: (...args: Parameters<typeof vectors.fetch>) => {
        if (args[1].some((id) => castIds.has(id))) castReads++;
        return vectors.fetch(...args);
      },
    });
    const cold = processOver(store, counted);
    await cold.context.getRelevantContext(storyId, 'the brass key');
    await cold.context.getRelevantContext(storyId, 'Mira at Salt Market');
    expect(castReads, 'the fill read the cast with what the newest index step wrote').toBe(1);
    // Nothing is missing for it: the side is a fill's, as another new process makes it.
    const other = processOver(store, vectors);
    await other.context.getRelevantContext(storyId, 'the brass key');
    expect(await sortedIds(cold.keywords, storyId)).toEqual(await sortedIds(other.keywords, storyId));
  });

  it("a new process whose fill comes between the newest scene's commit and its index step takes in what that step writes", async () => {
    const storyId = 'fill-before-step';
    const { clock, store, vectors, lambda, engine } = await setup(storyId);
    for (let e = 0; e < 2; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    // The episode Lambda commits a scene and is killed before its index step, which a later run resumes.
    let resume: (() => Promise<void>) | undefined;
    const crashing: EpisodeContext = {
      getRelevantContext: lambda.context.getRelevantContext.bind(lambda.context),
      indexScene: async (...args: Parameters<EpisodeContext['indexScene']>) => {
        resume = () => lambda.context.indexScene(...args);
        throw new Error('the Lambda was killed');
      },
    };
    const killed = createStoryEngine({ store, context: crashing, generator: nightWatchGenerator(), clock });
    expect((await killed.runEpisode(storyId)).complete).toBe(false);
    const server = processOver(store, vectors);
    await server.context.getRelevantContext(storyId, 'the brass key');
    await resume!();
    await server.context.getRelevantContext(storyId, 'the brass key');
    // The cast as the index step left it (which scene last touched each character), as a new process reads it.
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the brass key');
    const documents = async (keywords: ReturnType<typeof createMemoryKeywordIndex>) =>
      (await keywords.query(storyId, { text: words, topK: 1_000 })).map((m) => [m.id, m.metadata]);
    expect(await documents(server.keywords)).toEqual(await documents(cold.keywords));
  });

  it('a prune that finds a prune done elsewhere still drops the chapter from its own side, whose listing lagged', async () => {
    const storyId = 'done-elsewhere';
    const { store, vectors, engine } = await setup(storyId);
    for (let e = 0; e < 12; e++) expect((await engine.runEpisode(storyId)).complete).toBe(true);
    // The server's queries do not show prune records yet (an index whose queries lag its writes); its fetches do.
    let lagging = false;
    const seen = withMembers(vectors, {
      query: async (...args: Parameters<typeof vectors.query>) => {
        const matches = await vectors.query(...args);
        return lagging ? matches.filter((match) => !match.id.startsWith('meta-pruned')) : matches;
      },
    });
    const server = processOver(store, seen);
    await server.context.getRelevantContext(storyId, 'the brass key');
    const policy = { minAgeScenes: 4, maxImportance: 0.5 };
    const elsewhere = processOver(store, vectors);
    expect((await elsewhere.context.prune(storyId, policy)).deleted).toBeGreaterThan(0);
    lagging = true;
    await server.context.prune(storyId, policy);
    lagging = false;
    await server.context.getRelevantContext(storyId, 'the brass key');
    const cold = processOver(store, vectors);
    await cold.context.getRelevantContext(storyId, 'the brass key');
    expect(await sortedIds(server.keywords, storyId)).toEqual(await sortedIds(cold.keywords, storyId));
  });
});
