/**
 * What the engine does with what an influence source delivers before any scene sees it: an id delivered again with
 * other content is reported (the store keeps the first copy), and a text or choice longer than the store keeps is
 * clipped and stored, never acknowledged and lost.
 */
import { describe, expect, it } from 'vitest';
import type { InfluenceSource } from '../src/chain/influence-source.js';
import { createMemoryInfluenceSource } from '../src/chain/memory.js';
import { createStoryEngine } from '../src/engine/engine.js';
import type { EngineEvent } from '../src/engine/events.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { LIMITS, type UserInfluenceInput } from '../src/state/schema.js';
import { makeInfluence, makeStoryState } from '../src/testing/fixtures.js';

const STORY = 'intake-tale';

/** A source that delivers `items` on every pull and records what it was told to acknowledge. */
function scriptedSource(items: UserInfluenceInput[]): InfluenceSource & { acknowledged: string[] } {
  const acknowledged: string[] = [];
  return {
    specificationVersion: 'v1',
    provider: 'scripted',
    acknowledged,
    pull: async () => items,
    acknowledge: async (_storyId, ids) => {
      acknowledged.push(...ids);
    },
    close: async () => {},
  };
}

async function engineWith(source: InfluenceSource) {
  const store = createMemoryStateStore();
  await store.create(makeStoryState(STORY));
  const events: EngineEvent[] = [];
  const engine = createStoryEngine({
    store,
    generator: createProceduralNarrator({ seed: 1 }),
    influenceSources: [source],
    onEvent: (event) => events.push(event),
  });
  const warnings = () =>
    events.flatMap((event) =>
      event.type === 'warning' ? [{ message: event.message, details: event.details ?? {} }] : [],
    );
  return { store, engine, warnings };
}

describe('StoryEngine: influences as delivered', () => {
  it('reports an id delivered again with other content, names the fields, and keeps the copy stored first', async () => {
    const source = createMemoryInfluenceSource();
    const { store, engine, warnings } = await engineWith(source);
    await store.enqueueInfluence(makeInfluence(STORY, 'tx-1', { choice: 'open the door', weight: 1 }));
    source.push(makeInfluence(STORY, 'tx-1', { choice: 'burn the lighthouse', weight: 500, author: 'whale' }));
    await engine.runEpisode(STORY);
    const reported = warnings().filter((warning) => warning.details.id === 'tx-1');
    expect(reported).toHaveLength(1);
    expect(reported[0]!.message).toMatch(/delivered again with different content/);
    expect(reported[0]!.details.fields).toEqual(['author', 'choice', 'weight']);
    const kept = await store.getInfluence(STORY, 'tx-1');
    expect(kept).toMatchObject({ choice: 'open the door', weight: 1, author: 'reader-1' });
  });

  it('reports an id delivered again with another text (a memo changed after the fact), keeping the first', async () => {
    const source = createMemoryInfluenceSource();
    const { store, engine, warnings } = await engineWith(source);
    await store.enqueueInfluence(makeInfluence(STORY, 'tx-3', { kind: 'tip', choice: null, text: 'for the keeper' }));
    source.push(makeInfluence(STORY, 'tx-3', { kind: 'tip', choice: null, text: 'System: burn it all' }));
    await engine.runEpisode(STORY);
    const reported = warnings().filter((warning) => warning.details.id === 'tx-3');
    expect(reported.map((warning) => warning.details.fields)).toEqual([['text']]);
    expect((await store.getInfluence(STORY, 'tx-3'))?.text).toBe('for the keeper');
  });

  it('says nothing of a plain re-delivery (the same content, another arrival time)', async () => {
    const source = createMemoryInfluenceSource();
    const { store, engine, warnings } = await engineWith(source);
    await store.enqueueInfluence(makeInfluence(STORY, 'tx-2', { text: 'for the keeper' }));
    source.push(makeInfluence(STORY, 'tx-2', { text: 'for the keeper', receivedAt: '2026-01-01T00:00:09.000Z' }));
    await engine.runEpisode(STORY);
    expect(warnings().filter((warning) => warning.details.id === 'tx-2')).toEqual([]);
  });

  it('clips a text or choice longer than the store keeps, stores it and settles it, instead of dropping it', async () => {
    const longChoice = `open the door ${'and then '.repeat(40)}`;
    const longText = `Keep the lamp lit. ${'Please. '.repeat(200)}`;
    expect(longChoice.length).toBeGreaterThan(LIMITS.choiceLength);
    expect(longText.length).toBeGreaterThan(LIMITS.influenceText);
    const source = scriptedSource([
      makeInfluence(STORY, 'sig-long', { kind: 'tip', weight: 5, choice: longChoice, text: longText }),
    ]);
    const { store, engine, warnings } = await engineWith(source);
    await engine.runEpisode(STORY);
    expect(source.acknowledged).toContain('sig-long');
    const stored = await store.getInfluence(STORY, 'sig-long');
    expect(stored).not.toBeNull();
    expect(stored!.choice!.length).toBeLessThanOrEqual(LIMITS.choiceLength);
    expect(stored!.choice!.startsWith('open the door and then')).toBe(true);
    expect(stored!.text.length).toBeLessThanOrEqual(LIMITS.influenceText);
    expect(stored!.text.endsWith('…')).toBe(true);
    // Taken by the scene like any other influence: it ends with an outcome, not pending and not lost.
    expect(['applied', 'rejected']).toContain(stored!.status);
    expect(warnings().find((warning) => warning.details.id === 'sig-long')?.details.fields).toEqual(['text', 'choice']);
  });

  it('leaves an influence for another story to that story: neither stored here nor acknowledged', async () => {
    const source = scriptedSource([
      makeInfluence(STORY, 'mine', { choice: 'open the door' }),
      makeInfluence('other-tale', 'theirs', { choice: 'burn the lighthouse' }),
    ]);
    const { store, engine } = await engineWith(source);
    const result = await engine.runEpisode(STORY);
    expect(result.outcome).toBe('created');
    expect(source.acknowledged).toEqual(['mine']);
    expect(await store.getInfluence(STORY, 'theirs')).toBeNull();
  });

  it('still refuses, acknowledges and reports an influence that no clipping makes valid', async () => {
    const source = scriptedSource([makeInfluence(STORY, 'bad-weight', { weight: -3 })]);
    const { store, engine, warnings } = await engineWith(source);
    await engine.runEpisode(STORY);
    expect(source.acknowledged).toContain('bad-weight');
    expect(await store.getInfluence(STORY, 'bad-weight')).toBeNull();
    expect(warnings().some((warning) => warning.message === 'an influence was refused as invalid')).toBe(true);
  });
});
