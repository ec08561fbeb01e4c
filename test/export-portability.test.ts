/** A story exported from one backend and imported into another comes back out line for line the same. */
import { describe, expect, it } from 'vitest';
import { createMemoryStateStore } from '../src/state/memory.js';
import { createSqliteStateStore } from '../src/state/sqlite.js';
import type { StoryStateStore } from '../src/state/store.js';
import { makeInfluence, makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';

async function populate(store: StoryStateStore): Promise<void> {
  let state = await store.create(makeStoryState('saga'));
  for (const id of ['vote-b', 'vote-a', 'tip-1', 'late']) await store.enqueueInfluence(makeInfluence('saga', id));
  for (let i = 0; i < 4; i++) {
    const scene = makeNextScene(state, { chapterId: i < 2 ? 'chapter-1' : 'chapter-2' });
    ({ state } = await store.commitScene('saga', {
      expectedVersion: state.version,
      scene,
      nextState: makeNextState(state, scene, { chapterId: scene.chapterId }),
      consumedInfluenceIds: i === 0 ? ['vote-a', 'vote-b'] : [],
      rejectedInfluences: i === 1 ? [{ id: 'tip-1', reason: 'off topic' }] : [],
    }));
    // A failed step replaced later is one entry of the log, exported in its key's place (scene id, then target).
    await store.recordPublication({
      storyId: 'saga',
      sceneId: scene.id,
      target: 'publish:x',
      status: 'failed',
      result: {},
    });
    await store.recordPublication({
      storyId: 'saga',
      sceneId: scene.id,
      target: 'index',
      status: 'done',
      result: { n: i },
    });
    await store.recordPublication({
      storyId: 'saga',
      sceneId: scene.id,
      target: 'publish:x',
      status: 'done',
      result: {},
    });
  }
}

async function exportLines(store: StoryStateStore, storyId: string): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of store.exportStory(storyId)) lines.push(line);
  return lines;
}

describe('export portability between the memory and SQLite stores', () => {
  it('memory → SQLite → export gives identical lines', async () => {
    const memory = createMemoryStateStore();
    await populate(memory);
    const lines = await exportLines(memory, 'saga');
    const sqlite = createSqliteStateStore({ path: ':memory:' });
    await sqlite.importStory(lines);
    expect(await exportLines(sqlite, 'saga')).toEqual(lines);
    await sqlite.close();
  });

  it('SQLite → memory → export gives identical lines, and both stores were built alike', async () => {
    const sqlite = createSqliteStateStore({ path: ':memory:' });
    await populate(sqlite);
    const lines = await exportLines(sqlite, 'saga');
    const memory = createMemoryStateStore();
    await memory.importStory(lines);
    expect(await exportLines(memory, 'saga')).toEqual(lines);
    // The same operations on both backends export the same story (recordedAt comes from the clock, so it is masked).
    const direct = createMemoryStateStore();
    await populate(direct);
    const mask = (all: string[]) => all.map((line) => line.replace(/"recordedAt":"[^"]*"/, '"recordedAt":"*"'));
    expect(mask(await exportLines(direct, 'saga'))).toEqual(mask(lines));
    await sqlite.close();
  });
});
