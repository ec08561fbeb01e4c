import { describe, expect, it } from 'vitest';
import { makeStoryState } from '../testing/fixtures.js';
import { domainJsonSchemas, StoryStateSchema, UserInfluenceSchema, WorldValueSchema } from './schema.js';

describe('domain schemas', () => {
  it('rejects a deeply nested world value without overflowing the stack', () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const result = WorldValueSchema.safeParse(deep);
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toMatch(/nests deeper/);
  });

  it('rejects world values that are not JSON or too large', () => {
    expect(WorldValueSchema.safeParse(new Date()).success).toBe(false);
    expect(WorldValueSchema.safeParse(Number.NaN).success).toBe(false);
    expect(WorldValueSchema.safeParse('x'.repeat(5_000)).success).toBe(false);
    expect(WorldValueSchema.safeParse({ door: ['open', 3, null, { lock: true }] }).success).toBe(true);
  });

  it('refuses a state whose character key differs from its id, or with duplicate thread ids', () => {
    const state = makeStoryState('tale');
    const renamed = { ...state, characters: { ...state.characters, other: { ...state.characters.mira!, id: 'mira' } } };
    expect(StoryStateSchema.safeParse(renamed).success).toBe(false);
    const twice = { ...state, plotThreads: [state.plotThreads[0]!, state.plotThreads[0]!] };
    expect(StoryStateSchema.safeParse(twice).success).toBe(false);
    expect(StoryStateSchema.safeParse(state).success).toBe(true);
  });

  it('bounds an influence text and refuses an id that could be a path', () => {
    const base = {
      id: 'sig-1',
      storyId: 'tale',
      source: 'web',
      author: 'ana',
      kind: 'suggestion',
      receivedAt: '2026-01-01T00:00:00.000Z',
    };
    expect(UserInfluenceSchema.safeParse(base).success).toBe(true);
    expect(UserInfluenceSchema.safeParse({ ...base, text: 'x'.repeat(1_001) }).success).toBe(false);
    expect(UserInfluenceSchema.safeParse({ ...base, id: '../../etc' }).success).toBe(false);
  });

  it('exports a JSON Schema for every domain type', () => {
    const schemas = domainJsonSchemas();
    expect(Object.keys(schemas).sort()).toEqual(
      [
        'CharacterState',
        'PlotThread',
        'Relationship',
        'Scene',
        'StateDelta',
        'StoryState',
        'UserInfluence',
        'VectorRecord',
      ].sort(),
    );
    const scene = schemas.Scene as { type: string; required: string[] };
    expect(scene.type).toBe('object');
    expect(scene.required).toContain('text');
  });
});
