import { describe, expect, it } from 'vitest';
import { makeStoryState } from './fixtures.js';
import { createMockImageGenerator, createMockSceneGenerator } from './mock-generators.js';

const request = () => {
  const state = makeStoryState('tale');
  return {
    storyId: 'tale',
    sceneId: 'tale-s0',
    sceneIndex: 0,
    chapterId: state.chapterId,
    state,
    prompt: { stable: 'stable', dynamic: 'dynamic' },
    influences: [],
    seed: 1,
  };
};

describe('createMockSceneGenerator', () => {
  it('returns the scripted scene with defaults filled and records the request', async () => {
    const generator = createMockSceneGenerator({
      respond: () => ({ scene: { title: 'Dawn', text: 'The sun rose.' }, delta: {} }),
    });
    const result = await generator.generate(request());
    expect(result.scene.title).toBe('Dawn');
    expect(result.delta.charactersIntroduced).toEqual([]);
    expect(generator.calls).toHaveLength(1);
  });

  it('rejects an invalid scripted answer with a ValidationError naming the path', async () => {
    const generator = createMockSceneGenerator({ respond: () => ({ scene: { title: 42 }, delta: {} }) });
    await expect(generator.generate(request())).rejects.toMatchObject({ code: 'VALIDATION' });
    await expect(generator.generate(request())).rejects.toThrow(/scene\.title/);
  });
});

describe('createMockImageGenerator', () => {
  it('returns a PNG carrying the requested seed', async () => {
    const images = createMockImageGenerator();
    const image = await images.generate({ storyId: 'tale', sceneId: 's0', prompt: 'a lighthouse', seed: 7 });
    expect(image.mediaType).toBe('image/png');
    expect(image.seed).toBe(7);
    expect([...image.data.slice(1, 4)]).toEqual([0x50, 0x4e, 0x47]);
  });
});
