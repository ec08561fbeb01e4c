import { describe, expect, it } from 'vitest';
import { composeImagePrompt, MAX_IMAGE_PROMPT_LENGTH, MAX_IMAGE_SEED, seedFromSceneId } from './image-prompt.js';

const characters = {
  mara: { id: 'mara', name: 'Mara', appearance: 'tall, red scarf, salt-white hair' },
  tomas: { id: 'tomas', name: 'Tomas', appearance: 'stooped old keeper, oilskin coat' },
  ghost: { id: 'ghost', name: 'The Ghost', appearance: 'a pale shape in the fog' },
};

describe('composeImagePrompt', () => {
  it('puts the style guide first, then the scene, then the appearance of each character in the scene', () => {
    const prompt = composeImagePrompt({
      request: {
        prompt: 'Mara and Tomas argue at the lamp',
        characters: [
          { id: 'mara', name: 'Mara' },
          { id: 'tomas', name: 'Tomas' },
        ],
      },
      bible: { style: 'muted watercolour, ink outlines' },
      characters,
    });
    expect(prompt).toBe(
      'Style: muted watercolour, ink outlines. Mara and Tomas argue at the lamp. ' +
        'Characters: Mara: tall, red scarf, salt-white hair; Tomas: stooped old keeper, oilskin coat.',
    );
    expect(prompt).not.toContain('Ghost');
  });

  it('keeps the style prefix byte-identical across scenes', () => {
    const bible = { style: 'woodcut print,\n two colours' };
    const first = composeImagePrompt({ request: { prompt: 'A storm' }, bible });
    const second = composeImagePrompt({ request: { prompt: 'Dawn over calm water' }, bible });
    const prefix = 'Style: woodcut print, two colours. ';
    expect(first.startsWith(prefix)).toBe(true);
    expect(second.startsWith(prefix)).toBe(true);
  });

  it('lets the request’s own style and appearance win over the bible and the state', () => {
    const prompt = composeImagePrompt({
      request: {
        prompt: 'Mara in disguise',
        style: 'charcoal sketch',
        characters: [{ id: 'mara', name: 'Mara', appearance: 'hooded, face hidden' }],
      },
      bible: { style: 'watercolour' },
      characters,
    });
    expect(prompt).toBe('Style: charcoal sketch. Mara in disguise. Characters: Mara: hooded, face hidden.');
  });

  it('accepts the characters as a list and skips characters without a description', () => {
    const prompt = composeImagePrompt({
      request: {
        prompt: 'Two figures',
        characters: [
          { id: 'mara', name: 'Mara' },
          { id: 'nobody', name: 'Nobody' },
        ],
      },
      characters: Object.values(characters),
    });
    expect(prompt).toBe('Two figures. Characters: Mara: tall, red scarf, salt-white hair.');
  });

  it('never exceeds the bound: the scene is cut at a word and descriptions that do not fit are left out', () => {
    const long = 'waves '.repeat(3_000);
    const prompt = composeImagePrompt({
      request: { prompt: long, characters: [{ id: 'mara', name: 'Mara' }] },
      bible: { style: 'ink' },
      characters,
    });
    expect(prompt.length).toBeLessThanOrEqual(MAX_IMAGE_PROMPT_LENGTH);
    expect(prompt.startsWith('Style: ink. waves waves')).toBe(true);
    expect(prompt.endsWith('waves')).toBe(true);

    const small = composeImagePrompt({
      request: { prompt: 'A short scene', characters: [{ id: 'mara', name: 'Mara' }] },
      characters,
      maxLength: 30,
    });
    expect(small).toBe('A short scene.');

    // A description is taken whole or not at all, even a character short of fitting.
    const whole = 'A short scene. Characters: Mara: tall, red scarf, salt-white hair.';
    for (const maxLength of [whole.length - 2, whole.length - 1, whole.length]) {
      const near = composeImagePrompt({
        request: { prompt: 'A short scene', characters: [{ id: 'mara', name: 'Mara' }] },
        characters,
        maxLength,
      });
      expect(near, String(maxLength)).toBe(maxLength >= whole.length ? whole : 'A short scene.');
    }
  });

  it('never leaves half of a surrogate pair where it cuts', () => {
    for (const maxLength of [101, 102]) {
      const prompt = composeImagePrompt({ request: { prompt: '🐉'.repeat(200) }, maxLength });
      expect(prompt.length).toBeLessThanOrEqual(maxLength);
      expect(/\p{Surrogate}/u.test(prompt)).toBe(false);
    }
  });

  it('caps a very long style guide so it cannot crowd out the scene', () => {
    const prompt = composeImagePrompt({
      request: { prompt: 'The scene itself' },
      bible: { style: 'ornate '.repeat(1_000) },
    });
    expect(prompt).toContain('The scene itself.');
    expect(prompt.length).toBeLessThan(1_600);
  });
});

describe('seedFromSceneId', () => {
  it('is deterministic and differs between scenes', () => {
    expect(seedFromSceneId('scene-0042')).toBe(seedFromSceneId('scene-0042'));
    expect(seedFromSceneId('scene-0042')).not.toBe(seedFromSceneId('scene-0043'));
  });

  it('stays within Stability’s seed range for many ids', () => {
    const seeds = new Set<number>();
    for (let index = 0; index < 5_000; index++) {
      const seed = seedFromSceneId(`story-${index % 7}:scene-${index}`);
      expect(Number.isInteger(seed)).toBe(true);
      expect(seed).toBeGreaterThanOrEqual(1);
      expect(seed).toBeLessThanOrEqual(MAX_IMAGE_SEED);
      seeds.add(seed);
    }
    expect(seeds.size).toBeGreaterThan(4_990);
  });

  it('never derives 0 (a random picture on Stability) nor a seed past the range, even for the ids that hash there', () => {
    // FNV-1a 32-bit of these ids is 0 and 2^32 - 1, the two hashes that are not usable seeds as they are.
    expect(seedFromSceneId('scene-acdjmpel')).toBe(1);
    expect(seedFromSceneId('scene-e4f7ka')).toBe(1);
    expect(seedFromSceneId('scene-aaqoajjz')).toBe(1);
  });

  it('is a stable value, so pictures survive an upgrade of storyloom', () => {
    // FNV-1a 32-bit of "" is its offset basis; of "a" is 0xe40c292c.
    expect(seedFromSceneId('')).toBe(0x811c9dc5);
    expect(seedFromSceneId('a')).toBe(0xe40c292c);
  });
});
