import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/core/errors.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import type { SceneGenerator } from '../src/generation/scene-generator.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { StoryStateStore } from '../src/state/store.js';
import { fixtureTime, makeInfluence, makeStoryState } from '../src/testing/fixtures.js';

/** The procedural narrator, recording the influence ids each scene request offered. */
function recordingNarrator(): SceneGenerator & { offered: string[][] } {
  const narrator = createProceduralNarrator({ seed: 3 });
  const offered: string[][] = [];
  return {
    ...narrator,
    offered,
    generate(request, options) {
      offered.push(request.influences.map((influence) => influence.id));
      return narrator.generate(request, options);
    },
  };
}

async function enqueueVotes(store: StoryStateStore, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = `vote-${String(i).padStart(4, '0')}`;
    ids.push(id);
    await store.enqueueInfluence(makeInfluence('tale', id, { receivedAt: fixtureTime(i), author: `reader-${i}` }));
  }
  return ids;
}

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

  it('takes the smaller of the store limit and the engine cap', async () => {
    const memory = createMemoryStateStore();
    const store = new Proxy(memory, {
      get(target, property, receiver) {
        if (property === 'capabilities') return { ...target.capabilities, maxInfluencesPerCommit: 4 };
        const value = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as StoryStateStore;
    await store.create(makeStoryState('tale'));
    await enqueueVotes(store, 6);
    const generator = recordingNarrator();
    const engine = createStoryEngine({ store, generator, maxInfluencesPerScene: 2 });
    await engine.runEpisode('tale');
    expect(generator.offered).toEqual([['vote-0000', 'vote-0001']]);
  });
});

describe('the per-scene influence cap', () => {
  it('takes a queue longer than the cap over several scenes, oldest first, none dropped or applied twice', async () => {
    const store = createMemoryStateStore();
    await store.create(makeStoryState('tale'));
    const ids = await enqueueVotes(store, 7);
    const generator = recordingNarrator();
    const engine = createStoryEngine({ store, generator, maxInfluencesPerScene: 3 });
    for (let episode = 0; episode < 3; episode++) await engine.runEpisode('tale');

    expect(generator.offered.map((offered) => offered.length)).toEqual([3, 3, 1]);
    expect(generator.offered.flat()).toEqual(ids);
    expect(await store.pendingInfluences('tale')).toEqual([]);
    const settled = await Promise.all(ids.map((id) => store.getInfluence('tale', id)));
    expect(settled.every((influence) => influence?.status === 'applied' || influence?.status === 'rejected')).toBe(
      true,
    );
  });

  it('takes at most 100 influences a scene by default, even from a store that declares no limit', async () => {
    const store = createMemoryStateStore();
    expect(store.capabilities.maxInfluencesPerCommit).toBeUndefined();
    await store.create(makeStoryState('tale'));
    const ids = await enqueueVotes(store, 130);
    const generator = recordingNarrator();
    const engine = createStoryEngine({ store, generator });
    await engine.runEpisode('tale');
    await engine.runEpisode('tale');

    expect(generator.offered.map((offered) => offered.length)).toEqual([100, 30]);
    expect(generator.offered.flat()).toEqual(ids);
    expect(await store.pendingInfluences('tale')).toEqual([]);
  });

  it('refuses a cap that is not an integer from 1 to 1000', () => {
    const store = createMemoryStateStore();
    const generator = createProceduralNarrator({ seed: 3 });
    for (const maxInfluencesPerScene of [0, -1, 1.5, 1_001, Number.NaN]) {
      expect(() => createStoryEngine({ store, generator, maxInfluencesPerScene })).toThrow(ValidationError);
    }
    expect(() => createStoryEngine({ store, generator, maxInfluencesPerScene: 1_000 })).not.toThrow();
  });
});
