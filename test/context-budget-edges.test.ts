/**
 * The token budget and prompt layout of `ContextManager.getRelevantContext` at their edges: a chapter longer than the
 * journal's share, text without spaces, a tokenizer whose counts change, the smallest budgets.
 */
import { describe, expect, it } from 'vitest';
import { ContextManager, type ContextManagerOptions } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { ValidationError } from '../src/core/errors.js';
import type { ClaudeClient } from '../src/generation/claude-scene-generator.js';
import { createClaudeTokenCounter } from '../src/generation/claude-summarizer.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor, type Scene, type StoryState } from '../src/state/schema.js';
import { makeStoryState } from '../src/testing/fixtures.js';
import { commitNextScene, KEEPER_EVENTS, newKeepersStory } from './fixtures/keepers.js';

/** The fixture story `tale` (one long chapter unless said otherwise), over the memory adapters. */
async function story(extra: Partial<ContextManagerOptions> = {}, overrides: Partial<StoryState> = {}) {
  const store = createMemoryStateStore();
  const options: ContextManagerOptions = {
    store,
    vectors: createMemoryVectorIndex({ dimensions: 64 }),
    keywords: createMemoryKeywordIndex(),
    embedder: createHashingEmbedder({ dimensions: 64 }),
    ...extra,
  };
  const base = makeStoryState('tale');
  const state = await store.create(
    makeStoryState('tale', { ...overrides, bible: { ...base.bible, chapterLength: 100, ...overrides.bible } }),
  );
  return { store, options, manager: new ContextManager(options), state };
}

/** The keepers' story with `count` scenes in chapters of `chapterLength`, every scene indexed. */
async function keepersChapters(count: number, chapterLength: number, overrides: Partial<ContextManagerOptions> = {}) {
  const { store, options, state: created } = await newKeepersStory(chapterLength, overrides);
  const manager = new ContextManager(options);
  let state = created;
  for (let i = 0; i < count; i++) {
    const closes = (i + 1) % chapterLength === 0;
    ({ state } = await commitNextScene(
      store,
      state,
      {
        title: `Night ${i + 1}`,
        text: KEEPER_EVENTS[i % KEEPER_EVENTS.length]!,
        summary: KEEPER_EVENTS[i % KEEPER_EVENTS.length]!,
      },
      closes ? { chapterIndex: state.chapterIndex + 1, chapterId: chapterIdFor(state.chapterIndex + 1) } : {},
      manager,
    ));
  }
  return { manager, state };
}

describe('token budget and prompt layout', () => {
  it("lists (or traces as cut) every scene of the chapter past the journal's share", async () => {
    // `journalShare` is documented as "Entries past this share go to the dynamic part"; the trace promises to say
    // what was left out and why. A chapter of 30 scenes at a 2,000-token budget: the journal holds the first few,
    // the recent-scenes section the last few, and the ones between are neither shown nor reported.
    let { store, manager, state } = await story();
    const scenes: Scene[] = [];
    for (let i = 0; i < 30; i++) {
      const committed = await commitNextScene(
        store,
        state,
        {
          summary: `Marker${i}: the keepers found a strange shell on the beach and argued about it.`,
        },
        {},
        manager,
      );
      state = committed.state;
      scenes.push(committed.scene);
    }
    const bundle = await manager.getRelevantContext('tale', 'the strange shell', { tokenBudget: 2_000 });
    const prompt = `${bundle.prompt.stable}${bundle.prompt.dynamic}`;
    const traced = new Set([...bundle.trace.included, ...bundle.trace.omitted].map((item) => item.id.split(':')[1]));
    const vanished = scenes
      .filter((scene) => !prompt.includes(`Marker${scene.index}:`) && !traced.has(scene.id))
      .map((scene) => scene.id);
    expect(vanished).toEqual([]);
  });

  it('keeps the "where we left off" tail of a Chinese or Japanese scene short, so the full variant fits', async () => {
    // `lastWords(previous.text, 60)` splits on whitespace: Japanese or Chinese prose has none, so the "last 60 words"
    // are the whole scene and the full variant never fits; the narrator gets the one-line summary instead of the
    // scene's ending, where an English scene twice as long keeps it.
    const detailOf = async (text: string) => {
      let { store, manager, state } = await story();
      ({ state } = await commitNextScene(store, state, {}, {}, manager));
      ({ state } = await commitNextScene(store, state, { text, summary: 'The island drifts.' }, {}, manager));
      const bundle = await manager.getRelevantContext('tale', 'the lamp');
      return bundle.trace.included.find((item) => item.id.startsWith('previous:'))?.detail;
    };
    const english = `${'Mira watched the night sea and felt the island drift north again. '.repeat(60)}At last the lamp went dark.`;
    const japanese = `${'灯台守のミラは夜の海を見つめ、島がまた北へ流れていくのを感じた。'.repeat(60)}最後に灯が消えた。`;
    expect(english.length).toBeGreaterThan(japanese.length);
    expect(await detailOf(english)).toBe('full');
    expect(await detailOf(japanese)).toBe('full');
  });

  it("counts the stable prefix again once the tokenizer's count of it changes (a warmed Claude counter)", async () => {
    // createClaudeTokenCounter's documented use: warm `countTokensExact` with the stable prefix so that `count`
    // returns the exact figure. ContextManager memoizes the prefix's count per story (countStable) and keeps the old
    // estimate, so `tokens.stable` no longer matches what the tokenizer counts for `prompt.stable`. Here the exact
    // count (one token per character, as for CJK text) is above a ⌈chars / 3⌉ fallback (given here: the default one
    // no longer counts CJK so low), and the bundle claims to fit the budget while the tokenizer it was given counts
    // the prompt over it.
    const client = {
      messages: {
        create: () => Promise.reject(new Error('not used')),
        stream: () => {
          throw new Error('not used');
        },
        countTokens: async (params: { messages: Array<{ content: unknown }> }) => ({
          input_tokens: String(params.messages[0]!.content).length,
        }),
      },
    } as unknown as ClaudeClient;
    const tokenizer = createClaudeTokenCounter({
      client,
      model: 'claude-sonnet-4-6',
      fallback: {
        specificationVersion: 'v1',
        provider: 'estimate',
        exact: false,
        count: (text) => Math.ceil(text.length / 3),
      },
    });
    const description = '灯台の光は決して消えてはならない。島は毎晩北へ一マイル流れる。'.repeat(60);
    const base = makeStoryState('tale');
    const characters = Object.fromEntries(
      ['mira', 'tobin', 'wren', 'ash', 'lark'].map((id) => [
        id,
        { ...base.characters.mira!, id, name: `Keeper ${id}`, role: 'main' as const, description },
      ]),
    );
    const { manager } = await story({ tokenizer }, { characters });
    const budget = 8_000;
    const first = await manager.getRelevantContext('tale', 'the lamp', { tokenBudget: budget });
    await tokenizer.countTokensExact(first.prompt.stable);
    expect(tokenizer.count(first.prompt.stable)).toBeGreaterThan(budget); // what the warmed counter now says
    let second: Awaited<ReturnType<ContextManager['getRelevantContext']>>;
    try {
      second = await manager.getRelevantContext('tale', 'the lamp', { tokenBudget: budget });
    } catch (error) {
      // Refusing a prompt its tokenizer counts over the budget is fine.
      expect((error as { code?: string }).code).toBe('VALIDATION');
      return;
    }
    expect(second.tokens.stable).toBe(tokenizer.count(second.prompt.stable));
    expect(tokenizer.count(second.prompt.stable) + tokenizer.count(second.prompt.dynamic)).toBeLessThanOrEqual(budget);
  });

  it('refuses too small a tokenBudget in terms of the budget the caller gave', async () => {
    // checkInteger accepts 256..2,000,000, but the stable prefix gets only floor(budget * stableShare) and its required
    // narrator instructions alone take 377 tokens: every budget below ~630 fails on the smallest story, with a message
    // about "the token budget of 153" (or 300, 360, ...) that the caller never passed.
    // So the smallest accepted budget can never hold them: it must be refused, in terms of the budget the caller gave.
    const { manager } = await story();
    const refusal = await manager.getRelevantContext('tale', 'the lamp', { tokenBudget: 256 }).then(
      (bundle) => `resolved with a prompt of ${bundle.tokens.total} tokens`,
      (error: unknown) => error,
    );
    expect(ValidationError.isInstance(refusal), String(refusal)).toBe(true);
    expect((refusal as ValidationError).problems[0]?.path).toBe('tokenBudget');
    expect(String(refusal)).toMatch(/\btokenBudget 256\b/);
  });

  it("gives a long focus room in a chapter's first episode as in its second, within the budget", async () => {
    // About 870 tokens of focus, above minDynamicTokens (600) and well within 8,000 beside a prefix of about 1,500.
    const query = 'Mira and the lens. '.repeat(150);
    const second = await keepersChapters(13, 4);
    const later = await second.manager.getRelevantContext('tale', query);
    expect(later.prompt.dynamic).toContain('Focus: Mira and the lens.');
    expect(later.tokens.total).toBeLessThanOrEqual(8_000);
    // Scene 12 opens chapter 3: the same focus and budget.
    const first = await keepersChapters(12, 4);
    const bundle = await first.manager.getRelevantContext('tale', query);
    expect(bundle.coreState).toMatchObject({ sceneCount: 12, chapterIndex: 3 });
    expect(bundle.prompt.dynamic).toContain('Focus: Mira and the lens.');
    expect(bundle.tokens.total).toBeLessThanOrEqual(8_000);
    // A budget that truly has no room for it is still refused, in the caller's terms.
    await expect(first.manager.getRelevantContext('tale', query, { tokenBudget: 1_500 })).rejects.toThrow(
      /tokenBudget 1500 is too small/,
    );
  });

  it('shows or traces each of the newest recentScenes scenes at a chapter start, whatever earlierScenes is', async () => {
    // recentScenes 5 at the start of chapter 3 (scene 12): scenes 7..10 are recent, 11 is where we left off. With
    // fewer earlier scenes than recent ones, those before the chapter start that the prefix does not show are
    // recent scenes (retrieval leaves them out).
    // earlierScenes → how many of 7..10 the prefix does not show (scene 11, the earliest shown, is where we left off).
    for (const [earlierScenes, recentShown] of [
      [0, 4],
      [2, 3],
      [24, 0],
    ] as const) {
      const { manager } = await keepersChapters(12, 4, { earlierScenes, recentScenes: 5 });
      const bundle = await manager.getRelevantContext('tale', 'the lamp');
      const included = bundle.trace.included.map((item) => item.id);
      expect(included).toContain('previous:tale-s11');
      for (let index = 7; index <= 10; index++) {
        // Once: as an earlier scene of the prefix or as a recent one, in the prompt.
        const shownAs = included.filter((item) => /^(earlier|recent):/.test(item) && item.endsWith(`:tale-s${index}`));
        expect(shownAs, `earlierScenes ${earlierScenes}, scene ${index}`).toHaveLength(1);
        const prompt = shownAs[0]!.startsWith('earlier:') ? bundle.prompt.stable : bundle.prompt.dynamic;
        expect(prompt, `earlierScenes ${earlierScenes}, scene ${index}`).toContain(`[${index}] Night ${index + 1}`);
      }
      const recent = included.filter((item) => item.startsWith('recent:'));
      expect(recent.length, `earlierScenes ${earlierScenes}`).toBe(recentShown);
    }
  });
});
