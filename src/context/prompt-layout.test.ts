import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { makeStoryState } from '../testing/fixtures.js';
import { createEstimatingTokenizer } from './estimating-tokenizer.js';
import { type PromptItem, packItems, requiredTokens, stablePrefixItems } from './prompt-layout.js';
import type { Tokenizer } from './tokenizer.js';

const SECTIONS = ['instructions', '# Task', '# Memories that may matter', '# Recent scenes', '# Audience input'];

/** Items of a few sections, in any order, with one to three variants of any length, some of them required. */
const itemsArbitrary = fc
  .array(
    fc.record({
      section: fc.constantFrom(...SECTIONS),
      priority: fc.integer({ min: 0, max: 100 }),
      words: fc.array(fc.integer({ min: 0, max: 400 }), { minLength: 1, maxLength: 3 }),
      required: fc.boolean(),
    }),
    { minLength: 1, maxLength: 14 },
  )
  .map((specs) =>
    specs.map(
      (spec, index): PromptItem => ({
        id: `item:${index}`,
        section: spec.section,
        priority: spec.priority,
        // Each variant shorter than the one before it, as the layout's are.
        variants: [...spec.words]
          .sort((a, b) => b - a)
          .map((count, level) => `${'word '.repeat(count)}item ${index} level ${level}`.trim()),
        reason: 'test',
        required: spec.required && index % 3 === 0,
      }),
    ),
  );

describe('packItems', () => {
  it('never renders more tokens than the budget, or refuses with a typed error', () => {
    // Sections add a heading line and a blank line to the render; the packer must count them, and when the
    // required items alone do not fit it must say so rather than return more than it was given.
    for (const charsPerToken of [1, 3.5, 8]) {
      const tokenizer = createEstimatingTokenizer({ charsPerToken });
      fc.assert(
        fc.property(itemsArbitrary, fc.integer({ min: 1, max: 3_000 }), (items, budget) => {
          try {
            const packed = packItems(items, budget, tokenizer);
            expect(packed.tokens).toBe(tokenizer.count(packed.text));
            expect(packed.tokens).toBeLessThanOrEqual(budget);
            // Every item is either in or reported out, once.
            const ids = [...packed.included.map((item) => item.id), ...packed.omitted.map((item) => item.id)];
            expect(ids.sort()).toEqual(items.map((item) => item.id).sort());
            for (const item of items.filter((candidate) => candidate.required)) {
              expect(packed.included.map((included) => included.id)).toContain(item.id);
            }
          } catch (error) {
            expect((error as { code?: string }).code).toBe('VALIDATION');
            expect(String(error)).toMatch(/token budget of \d+ is too small/);
          }
        }),
        { numRuns: 400, seed: 11 },
      );
    }
  });

  it('keeps the sections in first-seen order and lowers detail before dropping', () => {
    const tokenizer = createEstimatingTokenizer();
    const items: PromptItem[] = [
      {
        id: 'task',
        section: '# Task',
        priority: 100,
        variants: ['Write the next scene.'],
        reason: 'r',
        required: true,
      },
      {
        id: 'memory',
        section: '# Memories',
        priority: 50,
        variants: [`${'long '.repeat(200)}memory`, 'short memory'],
        reason: 'r',
      },
    ];
    const roomy = packItems(items, 1_000, tokenizer);
    expect(roomy.text.indexOf('# Task')).toBeLessThan(roomy.text.indexOf('# Memories'));
    expect(roomy.included.map((item) => item.detail)).toEqual(['full', 'full']);
    // The smallest budget that keeps the memory at all keeps its summary; one token less drops it.
    const keepsMemory = (budget: number) => {
      try {
        return packItems(items, budget, tokenizer).included.some((item) => item.id === 'memory');
      } catch {
        return false; // too small for the required task
      }
    };
    let tightBudget = 1;
    while (!keepsMemory(tightBudget)) tightBudget++;
    expect(tightBudget).toBeLessThan(100);
    const tight = packItems(items, tightBudget, tokenizer);
    expect(tight.included.map((item) => [item.id, item.detail])).toEqual([
      ['task', 'full'],
      ['memory', 'summary'],
    ]);
    const tighter = packItems(items, tightBudget - 1, tokenizer);
    expect(tighter.included.map((item) => item.id)).toEqual(['task']);
    expect(tighter.omitted).toEqual([{ id: 'memory', section: '# Memories', reason: 'token budget' }]);
  });
});

describe('packItems with a tokenizer that is not additive', () => {
  // One token a character, and 20 more for every blank line: the blank lines between sections cost more than the
  // packer's per-item accounting (which charges a heading and its blank line at plain cost) expects.
  const joinCosts: Tokenizer = {
    specificationVersion: 'v1',
    provider: 'test',
    exact: true,
    count: (text) => text.length + 20 * (text.split('\n\n').length - 1),
  };
  const item = (id: string, section: string, priority: number, text: string, required = false): PromptItem => ({
    id,
    section,
    priority,
    variants: [text],
    reason: 'r',
    required,
  });

  it('trims the whole text into the budget from the lowest priority, keeping the required items', () => {
    const items = [item('task', '# T', 100, 'task', true), item('a', '# A', 50, 'aa'), item('b', '# B', 10, 'bb')];
    // Each fits by the per-item count (9 + 7 + 7 tokens), but the three sections render at 25 characters and two
    // blank lines: 65 tokens. Without 'b' they render at 17 characters and one blank line: 37.
    const packed = packItems(items, 45, joinCosts);
    expect(packed.tokens).toBe(joinCosts.count(packed.text));
    expect(packed.tokens).toBeLessThanOrEqual(45);
    expect(packed.included.map((included) => included.id)).toEqual(['task', 'a']);
    expect(packed.omitted.map((omitted) => omitted.id)).toEqual(['b']);
  });

  it('refuses, rather than drop a required item, when the required items alone render over the budget', () => {
    const items = [item('r1', '# R1', 100, 'r1', true), item('r2', '# R2', 90, 'r2', true), item('o', '# O', 50, 'o')];
    // 9 + 9 + 7 tokens by the per-item count, all fitting 30; the two required ones alone render at 37.
    expect(() => packItems(items, 30, joinCosts)).toThrow(/required items alone take 37 tokens/);
  });
});

describe('packItems: the order of the output', () => {
  it('renders sections in first-seen order and items in their given order, whatever their priorities', () => {
    const items: PromptItem[] = [
      { id: 'low', section: '# First', priority: 10, variants: ['low text'], reason: 'r' },
      { id: 'high', section: '# Second', priority: 90, variants: ['high text'], reason: 'r' },
      { id: 'mid', section: '# First', priority: 50, variants: ['mid text'], reason: 'r' },
    ];
    const { text, included } = packItems(items, 1_000, createEstimatingTokenizer());
    expect(included.map((packed) => packed.id)).toEqual(['low', 'high', 'mid']);
    expect(text.indexOf('# First')).toBeLessThan(text.indexOf('# Second'));
    expect(text.indexOf('low text')).toBeLessThan(text.indexOf('mid text'));
    expect(text.indexOf('mid text')).toBeLessThan(text.indexOf('# Second'));
  });
});

describe('requiredTokens', () => {
  it('is the budget packItems needs for the required items at their least detail', () => {
    const tokenizer = createEstimatingTokenizer();
    const items: PromptItem[] = [
      {
        id: 'memory',
        section: '# T',
        priority: 50,
        variants: [`${'long '.repeat(200)}memory`, 'short'],
        reason: 'r',
        required: true,
      },
      { id: 'extra', section: '# T', priority: 10, variants: ['an optional line'], reason: 'r' },
    ];
    const needed = requiredTokens(items, tokenizer);
    const packed = packItems(items, needed, tokenizer);
    expect(packed.included.map((included) => [included.id, included.detail])).toEqual([['memory', 'summary']]);
    expect(() => packItems(items, needed - 1, tokenizer)).toThrow(/token budget of \d+ is too small/);
  });
});

describe('stablePrefixItems: priorities', () => {
  it('ranks the summary of a more recent chapter above an older one', () => {
    const chapterSummaries = [1, 2, 3, 4, 5].map((n) => ({
      chapterId: `chapter-000${n}`,
      summary: `What happened in chapter ${n}.`,
    }));
    const items = stablePrefixItems({ chapterStart: makeStoryState('prio'), chapterSummaries });
    const priorities = chapterSummaries.map(
      ({ chapterId }) => items.find((item) => item.id === `summary:${chapterId}`)!.priority,
    );
    for (let at = 1; at < priorities.length; at++) expect(priorities[at]).toBeGreaterThan(priorities[at - 1]!);
  });

  it('ranks a dead main character below a living one', () => {
    const base = makeStoryState('prio');
    const state = makeStoryState('prio', {
      characters: { ...base.characters, tobin: { ...base.characters.tobin!, status: 'dead' } },
    });
    const items = stablePrefixItems({ chapterStart: state, chapterSummaries: [] });
    const priorityOf = (id: string) => items.find((item) => item.id === `character:${id}`)!.priority;
    expect(state.characters.mira!.role).toBe('main');
    expect(state.characters.tobin!.role).toBe('main');
    expect(priorityOf('tobin')).toBeLessThan(priorityOf('mira'));
  });
});

describe('stablePrefixItems: the world state', () => {
  const state = makeStoryState('world', {
    worldState: {
      weather: 'fog',
      location: 'the lamp room',
      'odd\nkey': 1,
      ledger: 'x'.repeat(3_000),
    },
  });

  it('tells the world state at the chapter start, keys sorted, long values cut, odd keys quoted', () => {
    const items = stablePrefixItems({ chapterStart: state, chapterSummaries: [] });
    const world = items.filter((item) => item.id.startsWith('world-state:'));
    expect(world.map((item) => item.id)).toEqual([
      'world-state:ledger',
      'world-state:location',
      'world-state:odd\nkey',
      'world-state:weather',
    ]);
    expect(new Set(world.map((item) => item.section))).toEqual(
      new Set([`# World state at the start of ${state.chapterId}`]),
    );
    expect(world[1]!.variants[0]).toBe('- location = "the lamp room"');
    expect(world[2]!.variants[0]).toBe('- "odd\\nkey" = 1');
    // Every variant is one line, and the long value is cut with an ellipsis, then told by its key alone.
    for (const item of world) for (const variant of item.variants) expect(variant).not.toContain('\n');
    expect(world[0]!.variants.map((variant) => variant.length)).toEqual([
      '- ledger = '.length + 600,
      '- ledger = '.length + 80,
      '- ledger'.length,
    ]);
    expect(world[0]!.variants[0]!.endsWith('…')).toBe(true);
    // In a tight budget detail is lowered before anything is dropped, and every item is accounted for.
    const packed = packItems(world, 40, createEstimatingTokenizer());
    expect(packed.tokens).toBeLessThanOrEqual(40);
    expect(packed.included.some((item) => item.detail !== 'full')).toBe(true);
    expect(packed.included.length + packed.omitted.length).toBe(world.length);
  });

  it('leaves the world state out for a point of view', () => {
    const items = stablePrefixItems({ chapterStart: state, chapterSummaries: [], povCharacterId: 'mira' });
    expect(items.some((item) => item.id.startsWith('world-state:'))).toBe(false);
  });
});

describe('stablePrefixItems: names of characters not in the story', () => {
  it('shows the id of a character not (yet) in the story, whatever the id, never what Object.prototype holds', () => {
    const base = makeStoryState('ids');
    const state = makeStoryState('ids', {
      characters: {
        ...base.characters,
        mira: {
          ...base.characters.mira!,
          relationships: {
            constructor: { kind: 'rival', affinity: -0.2, trust: 0.1, since: null },
            tobin: { kind: 'friend', affinity: 0.5, trust: 0.7, since: null },
          },
        },
      },
      plotThreads: [{ ...base.plotThreads[0]!, characters: ['toString', 'mira'] }],
    });
    const items = stablePrefixItems({ chapterStart: state, chapterSummaries: [] });
    const text = items.map((item) => item.variants[0]).join('\n');
    expect(text).toContain('Relationships: constructor: rival (affinity -0.20, trust 0.10); Tobin Marsh: friend');
    expect(text).toContain('Involves: toString, Mira Vale');
    expect(text).not.toMatch(/Object|function|native code/);
  });
});
