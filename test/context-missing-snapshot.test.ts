/**
 * A story imported without some of its state snapshots (an export may lack them). The state a chapter began with
 * may then not be stored; the stable part must still be the same bytes in every process and every episode of the
 * chapter, or prompt caching never hits and each process shows a different "start of the chapter".
 */
import { describe, expect, it } from 'vitest';
import { ContextManager, type ContextManagerOptions } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor } from '../src/state/schema.js';
import { commitNextScene, KEEPER_DIMENSIONS, newKeepersStory } from './fixtures/keepers.js';

/** Chapters of 4 scenes, 5 scenes committed, imported into a new store without the snapshot of version 4. */
async function importedWithoutChapterStart() {
  const { store, options, state: created } = await newKeepersStory(4);
  const builder = new ContextManager(options);
  let state = created;
  for (let i = 0; i < 5; i++) {
    const closes = i === 3;
    ({ state } = await commitNextScene(
      store,
      state,
      {},
      closes ? { chapterIndex: 1, chapterId: chapterIdFor(1) } : {},
      builder,
    ));
  }
  // chapter-0002 began at version 4: its first scene (index 4) left version 5.
  const lines: string[] = [];
  for await (const line of store.exportStory('tale')) lines.push(line);
  const kept = lines.filter((line) => {
    const record = JSON.parse(line) as { kind: string; state?: { version: number } };
    return !(record.kind === 'snapshot' && record.state?.version === 4);
  });
  const end = JSON.parse(kept.pop()!) as { counts: { snapshots: number } };
  end.counts.snapshots -= 1;
  kept.push(JSON.stringify(end));
  const imported = createMemoryStateStore();
  await imported.importStory(kept);
  const managerOptions: ContextManagerOptions = {
    store: imported,
    vectors: createMemoryVectorIndex({ dimensions: KEEPER_DIMENSIONS }),
    keywords: createMemoryKeywordIndex(),
    embedder: createHashingEmbedder({ dimensions: KEEPER_DIMENSIONS }),
  };
  return { imported, managerOptions };
}

describe('a chapter whose starting state is not stored', () => {
  it('lays out the same stable part in a warm and in a new process, episode after episode', async () => {
    const { imported, managerOptions } = await importedWithoutChapterStart();
    expect(await imported.getStateAt('tale', 4)).toBeNull();
    const warm = new ContextManager(managerOptions);
    let state = await imported.load('tale');
    const warmPrefixes: string[] = [];
    const coldPrefixes: string[] = [];
    for (let episode = 0; episode < 3; episode++) {
      const fromWarm = await warm.getRelevantContext('tale', 'the lamp', { state });
      const fromCold = await new ContextManager(managerOptions).getRelevantContext('tale', 'the lamp', { state });
      expect(fromCold.prompt.stable).toBe(fromWarm.prompt.stable);
      warmPrefixes.push(fromWarm.prompt.stableBlocks[0]!);
      coldPrefixes.push(fromCold.prompt.stableBlocks[0]!);
      // Each episode changes a trait and the world: facts of the chapter, not of its start.
      ({ state } = await commitNextScene(
        imported,
        state,
        {},
        {
          characters: {
            ...state.characters,
            tobin: { ...state.characters.tobin!, traits: { curiosity: 0.5 + episode * 0.1 } },
          },
          worldState: { ...state.worldState, tide: `high ${episode}` },
        },
        warm,
      ));
    }
    // The chapter-constant block is the same in every episode, and holds none of the chapter's later facts.
    expect(new Set(coldPrefixes).size).toBe(1);
    expect(new Set(warmPrefixes).size).toBe(1);
    expect(coldPrefixes[0]).not.toMatch(/tide|curiosity 0\.[567]/);
  });
});
