import { describe, expect, it } from 'vitest';
import { sceneAltText } from './publisher.js';

describe('sceneAltText', () => {
  it('is the image prompt, or the title, cut to 300 characters with an ellipsis', () => {
    expect(sceneAltText({ imagePrompt: 'Mara at the lamp', title: 'Dawn' })).toBe('Mara at the lamp');
    expect(sceneAltText({ imagePrompt: '', title: 'Dawn' })).toBe('Dawn');
    const long = sceneAltText({ imagePrompt: 'fog '.repeat(200), title: 'Dawn' });
    expect(long).toHaveLength(300);
    expect(long.endsWith('…')).toBe(true);
  });

  it('never ends in half of a surrogate pair', () => {
    const alt = sceneAltText({ imagePrompt: `${'a'.repeat(298)}🌊🌊`, title: 'Dawn' });
    expect(alt).toBe(`${'a'.repeat(298)}…`);
  });
});
