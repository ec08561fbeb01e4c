import { describe, expect, it } from 'vitest';
import { createStoryEngine } from '../src/engine/engine.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { StoryStateStore } from '../src/state/store.js';
import { fixtureTime, makeInfluence, makeStoryState } from '../src/testing/fixtures.js';

describe('a store that limits influences per commit', () => {
  it('takes the oldest pending influences up to the limit and leaves the rest for later scenes', async () => {
    const memory = createMemoryStateStore();
    const store = new Proxy(memory, {
      get(target, property, receiver) {
        if (property === 'capabilities') return { ...target.capabilities, maxInfluencesPerCommit: 3 };
        const value = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as StoryStateStore;
    await store.create(makeStoryState('tale'));
    for (let i = 0; i < 5; i++) {
      await store.enqueueInfluence(
        makeInfluence('tale', `vote-${i}`, { receivedAt: fixtureTime(i), author: `reader-${i}` }),
      );
    }
    const engine = createStoryEngine({ store, generator: createProceduralNarrator({ seed: 3 }) });
    await engine.runEpisode('tale');
    const settled = await Promise.all([0, 1, 2, 3, 4].map((i) => store.getInfluence('tale', `vote-${i}`)));
    expect(settled.map((influence) => influence?.status !== 'pending')).toEqual([true, true, true, false, false]);
    await engine.runEpisode('tale');
    expect(await store.pendingInfluences('tale')).toEqual([]);
  });
});
