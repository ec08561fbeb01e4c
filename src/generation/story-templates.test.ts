import { describe, expect, it } from 'vitest';
import { ValidationError } from '../core/errors.js';
import { StoryStateSchema } from '../state/schema.js';
import { createStoryFromTemplate, defaultStoryTemplate, storyTemplates } from './story-templates.js';

const clock = { now: () => Date.UTC(2026, 0, 1), sleep: async () => {} };

describe('story templates', () => {
  it('each builds a valid initial state with characters and an open thread', () => {
    expect(Object.keys(storyTemplates).length).toBeGreaterThanOrEqual(3);
    for (const name of Object.keys(storyTemplates)) {
      const state = createStoryFromTemplate(name, `story-${name}`, clock);
      expect(StoryStateSchema.safeParse(state).success).toBe(true);
      expect(state.version).toBe(0);
      expect(state.createdAt).toBe('2026-01-01T00:00:00.000Z');
      expect(Object.keys(state.characters).length).toBeGreaterThanOrEqual(3);
      expect(state.plotThreads.some((thread) => thread.status === 'open')).toBe(true);
    }
    expect(defaultStoryTemplate.bible.title).toBe('The Lighthouse Keepers');
  });

  it('never shares objects with the template', () => {
    const state = createStoryFromTemplate('lighthouse-keepers', 'copy', clock);
    state.characters.mira!.traits.courage = 0;
    expect(storyTemplates['lighthouse-keepers']!.characters.mira!.traits!.courage).toBe(0.7);
  });

  it('is frozen all the way down: editing a template throws and never changes a later story', () => {
    const template = storyTemplates['lighthouse-keepers']!;
    expect(() => {
      template.bible.chapterLength = 3;
    }).toThrow(TypeError);
    expect(() => template.bible.worldRules.push('The lamp may go dark.')).toThrow(TypeError);
    expect(() => {
      template.characters.mira!.traits!.courage = 0;
    }).toThrow(TypeError);
    expect(() => {
      (template.worldState.locations as string[])[0] = 'elsewhere';
    }).toThrow(TypeError);
    const later = createStoryFromTemplate('lighthouse-keepers', 'later', clock);
    expect(later.bible.chapterLength).toBe(8);
    expect(later.bible.worldRules).not.toContain('The lamp may go dark.');
    expect(later.characters.mira!.traits.courage).toBe(0.7);
    // The default template is the same frozen object.
    expect(Object.isFrozen(defaultStoryTemplate.plotThreads[0])).toBe(true);
  });

  it('refuses an unknown template or an invalid id with a ValidationError naming the choices', () => {
    expect(() => createStoryFromTemplate('nope', 'x', clock)).toThrow(/lighthouse-keepers/);
    expect(() => createStoryFromTemplate('toString', 'x', clock)).toThrow(ValidationError);
    expect(() => createStoryFromTemplate('lighthouse-keepers', 'bad id!', clock)).toThrow(ValidationError);
  });
});
