import { describe, expect, it } from 'vitest';
import { makeNextScene, makeNextState, makeStoryState } from '../testing/fixtures.js';
import { runPublisherSuite } from '../testing/publisher-suite.js';
import { createMemoryPublisher } from './memory.js';

runPublisherSuite(
  { describe, it },
  {
    name: 'memory',
    create: () => {
      const publisher = createMemoryPublisher();
      const of = (storyId: string, sceneId: string) =>
        [...publisher.publications.values()].filter((p) => p.scene.storyId === storyId && p.scene.id === sceneId);
      return {
        publisher,
        published: async (storyId, sceneId) => of(storyId, sceneId).map((p) => p.key),
        read: async (storyId, sceneId) =>
          of(storyId, sceneId)
            .map((p) => JSON.stringify(p.scene))
            .join('\n') || null,
      };
    },
  },
);

describe('createMemoryPublisher', () => {
  it('counts repeated requests for one scene without storing it twice', async () => {
    const publisher = createMemoryPublisher({ target: 'preview' });
    const state = makeStoryState('tale');
    const scene = makeNextScene(state);
    const episode = { story: makeNextState(state, scene), scene };
    await publisher.publish(episode);
    await publisher.publish(episode);
    expect(publisher.publications.size).toBe(1);
    expect([...publisher.publications.values()][0]!.requests).toBe(2);
    expect(publisher.target).toBe('preview');
  });

  it('keeps a scene published again at another index once, as it was first published', async () => {
    const publisher = createMemoryPublisher();
    const state = makeStoryState('tale');
    const scene = makeNextScene(state);
    const first = await publisher.publish({ story: makeNextState(state, scene), scene });
    const moved = { ...scene, index: 3 };
    const again = await publisher.publish({ story: makeNextState(state, moved), scene: moved });
    expect(again.ids).toEqual(first.ids);
    expect(publisher.publications.size).toBe(1);
    const [held] = publisher.publications.values();
    expect(held).toMatchObject({ scene: { index: scene.index }, requests: 2 });
  });
});
