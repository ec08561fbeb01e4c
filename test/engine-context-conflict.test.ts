/**
 * The episode engine over a ContextManager with `autoReindex: false`, beside a deployment whose indexes it does not
 * match: the run stops with the manager's ConflictError instead of taking it for a lost commit race.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { ConflictError } from '../src/core/errors.js';
import { createStoryEngine } from '../src/engine/engine.js';
import type { EpisodeContext } from '../src/engine/episode-context.js';
import type { EngineEvent } from '../src/engine/events.js';
import { createScriptedGenerator, newWorldStore, STORY_ID } from './fixtures/engine-world.js';

const DIM = 64;

const newStore = newWorldStore;

describe('engine: a context that refuses the story', () => {
  it('stops at a conflict a retry cannot cure (indexes built for another embedder, autoReindex off): no commit race is reported and the context step runs once', async () => {
    const { store, clock } = await newStore();
    const vectors = createMemoryVectorIndex({ dimensions: DIM });
    const keywords = createMemoryKeywordIndex();
    // The story's indexes are built by a deployment with another chunk size (another fingerprint).
    const built = new ContextManager({
      store,
      vectors,
      keywords,
      embedder: createHashingEmbedder({ dimensions: DIM }),
      chunkWords: 200,
    });
    const firstEngine = createStoryEngine({ store, context: built, generator: createScriptedGenerator(), clock });
    expect((await firstEngine.runEpisode(STORY_ID)).complete).toBe(true);

    // An old container, side by side with it, as the docs recommend: autoReindex off.
    const old = new ContextManager({
      store,
      vectors,
      keywords,
      embedder: createHashingEmbedder({ dimensions: DIM }),
      autoReindex: false,
    });
    let contextCalls = 0;
    const counted: EpisodeContext = {
      getRelevantContext: (...args) => {
        contextCalls++;
        return old.getRelevantContext(...args);
      },
      indexScene: (...args) => old.indexScene(...args),
      refreshCache: (...args) => old.refreshCache(...args),
    };
    const events: EngineEvent[] = [];
    const engine = createStoryEngine({
      store,
      context: counted,
      generator: createScriptedGenerator(),
      clock,
      onEvent: (event) => events.push(event),
    });
    await expect(engine.runEpisode(STORY_ID)).rejects.toSatisfy(
      (error) => ConflictError.isInstance(error) && !error.isRetryable,
    );
    // Nothing moved: the story's version is what it was. The error says "run reindex"; it is no commit race.
    expect({
      conflictEvents: events.filter((event) => event.type === 'conflict').length,
      contextCalls,
    }).toEqual({ conflictEvents: 0, contextCalls: 1 });
  });
});
