import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AbortedError, ValidationError } from '../core/errors.js';
import { createExtractiveSummarizer, splitSentences } from './extractive-summarizer.js';
import { countWords } from './text-analysis.js';

const chapter = [
  'The lamp failed at midnight. Mira climbed the tower with a lantern and found the wick burned to nothing. ' +
    'Outside, the gulls circled the island as it drifted north.',
  'Tobin searched the cellar for spare wicks. He found a crate of letters addressed to the first keeper instead. ' +
    'The letters spoke of the island drifting north every night.',
  'By dawn the lamp burned again. Mira read the letters by its light and learned that the first keeper had steered ' +
    'the island on purpose. Old Gull said nothing, which was his way.',
];

const wordCount = (text: string) => text.split(/\s+/).filter(Boolean).length;

describe('createExtractiveSummarizer', () => {
  it('refuses texts that are not strings (scenes passed whole) with a ValidationError naming the entry', async () => {
    const summarizer = createExtractiveSummarizer();
    const scenes = [{ text: 'Mira lit the lamp.' }] as unknown as string[];
    await expect(summarizer.summarize(scenes, { maxWords: 20 })).rejects.toSatisfy(
      (error: unknown) =>
        ValidationError.isInstance(error) &&
        error.problems[0]?.path === 'texts.0' &&
        error.message.includes("pass each scene's text"),
    );
    await expect(summarizer.summarize('Mira.' as unknown as string[], { maxWords: 20 })).rejects.toSatisfy(
      (error: unknown) => ValidationError.isInstance(error) && error.problems[0]?.path === 'texts',
    );
  });

  const summarizer = createExtractiveSummarizer();

  it('keeps whole sentences of the input, in their original order, within maxWords', async () => {
    const summary = await summarizer.summarize(chapter, { maxWords: 40 });
    expect(wordCount(summary)).toBeLessThanOrEqual(40);
    expect(wordCount(summary)).toBeGreaterThan(10);
    const all = chapter.join(' ');
    const sentences = summary.split(/(?<=[.!?])\s+/);
    let cursor = -1;
    for (const sentence of sentences) {
      const position = all.indexOf(sentence);
      expect(position, sentence).toBeGreaterThan(cursor);
      cursor = position;
    }
  });

  it('prefers sentences central to the texts over incidental ones', async () => {
    const summary = await summarizer.summarize(chapter, { maxWords: 25 });
    expect(summary).toMatch(/lamp|letters|island/i);
    expect(summary).not.toContain('which was his way');
  });

  it('boosts sentences that share the focus terms', async () => {
    const withFocus = await summarizer.summarize(chapter, { maxWords: 20, focus: 'Old Gull' });
    expect(withFocus).toContain('Old Gull');
    const without = await summarizer.summarize(chapter, { maxWords: 20 });
    expect(without).not.toContain('Old Gull');
  });

  it('skips sentences that repeat one already chosen', async () => {
    const repeated = ['The lamp must never go dark.', 'The lamp must never go dark!', 'Mira trimmed the wick at dusk.'];
    const summary = await summarizer.summarize(repeated, { maxWords: 50 });
    expect(summary.match(/never go dark/g)).toHaveLength(1);
    expect(summary).toContain('Mira trimmed the wick');
  });

  it('fills the word budget with whole sentences that fit, past a better one too long for it, up to exactly maxWords', async () => {
    const texts = [
      'Mira lit the lamp.',
      'Tobin mended the nets.',
      'Mira lit the lamp and Tobin mended the nets by the long sea wall.',
    ];
    expect(await summarizer.summarize(texts, { maxWords: 8 })).toBe('Mira lit the lamp. Tobin mended the nets.');
  });

  it('cuts the best sentence when not even one fits', async () => {
    const summary = await summarizer.summarize(chapter, { maxWords: 3 });
    expect(summary.endsWith('…')).toBe(true);
    expect(wordCount(summary)).toBeLessThanOrEqual(3);
  });

  it('summarizes Japanese and Chinese, whose sentences end at 。！？ with no space, within maxWords', async () => {
    const japanese = [
      '灯台守のミラは夜ごとに島が北へ流れるのを見張っていた。',
      'トビンは地下室で古い手紙の箱を見つけた！',
      '手紙には最初の灯台守が島を北へ導いたと書かれていた。',
      'カモメたちは何も言わなかった。',
    ];
    const chinese = [
      '岛屿每晚向北漂移一英里。',
      '守护者们学会了通过鸟儿来判断早晨！',
      '米拉在黎明前爬上了灯塔？',
      '托宾在灯旁睡着了。',
    ];
    for (const sentences of [japanese, chinese]) {
      const text = sentences.join('').repeat(10);
      const summary = await summarizer.summarize([text], { maxWords: 30 });
      expect(countWords(summary)).toBeLessThanOrEqual(30);
      expect(summary.length).toBeLessThan(text.length / 4);
      // Whole sentences of the source, never a cut.
      for (const piece of summary.split(' ')) expect(sentences).toContain(piece);
    }
  });

  it('cuts a sentence of a script without spaces to maxWords when not even one fits', async () => {
    const sentence = `${'灯台守のミラは夜ごとに島が北へ流れるのを見張っていた'.repeat(5)}。`;
    for (const maxWords of [1, 2, 7, 30]) {
      const summary = await summarizer.summarize([sentence], { maxWords });
      expect(summary.endsWith('…')).toBe(true);
      expect(countWords(summary)).toBeLessThanOrEqual(maxWords);
      expect(sentence.startsWith(summary.slice(0, -1))).toBe(true);
    }
  });

  // The case timeout is the guard: this takes a second or two; comparing each pick with all before it, minutes.
  it('stays linear with a large maxWords over many short sentences, and still skips repeats among them', {
    timeout: 60_000,
  }, async () => {
    // Each chosen sentence used to be compared with every one chosen before: 25,000 sentences took over 10 s.
    const many = Array.from({ length: 100_000 }, (_, i) => `Mira saw w${i}.`).join(' ');
    const summary = await summarizer.summarize([many, 'Mira saw w7!'], { maxWords: 400_000 });
    expect(summary.match(/Mira saw w7[.!]/g)).toHaveLength(1);
    expect(wordCount(summary)).toBe(300_000);
  });

  it('is deterministic', async () => {
    const first = await summarizer.summarize(chapter, { maxWords: 30, focus: 'Tobin' });
    const second = await createExtractiveSummarizer().summarize(chapter, { maxWords: 30, focus: 'Tobin' });
    expect(second).toBe(first);
  });

  it('returns an empty summary for empty input', async () => {
    expect(await summarizer.summarize([], { maxWords: 10 })).toBe('');
    expect(await summarizer.summarize(['   ', ''], { maxWords: 10 })).toBe('');
  });

  it('refuses a maxWords that is not a positive integer and honours aborts', async () => {
    await expect(summarizer.summarize(chapter, { maxWords: 0 })).rejects.toThrow(ValidationError);
    await expect(summarizer.summarize(chapter, { maxWords: 1.5 })).rejects.toThrow(ValidationError);
    const controller = new AbortController();
    controller.abort();
    await expect(summarizer.summarize(chapter, { maxWords: 10, signal: controller.signal })).rejects.toThrow(
      AbortedError,
    );
  });
});

describe('splitSentences', () => {
  /** The reading it replaced: a split at white space after an end mark, found by a lookbehind of any length. */
  const byLookbehind = (text: string) => text.split(/(?<=[.!?…]["'”’)\]]*)\s+|\n\s*\n/u);

  it('cuts where the lookbehind reading cut, on texts of end marks, closers, white space and words', () => {
    const piece = fc.constantFrom('.', '!', '?', '…', '"', "'", '”', '’', ')', ']', ' ', '\n', '\t', 'a', 'Mira', 'é');
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 40 }), (pieces) => {
        const text = pieces.join('');
        expect(splitSentences(text)).toEqual(byLookbehind(text));
      }),
      { numRuns: 2_000, seed: 20261127 },
    );
  });

  // The lookbehind was tried at each character of a run of closers and rescanned the run each time: 35 s at 100,000
  // quotes and growing with the square, so a scene text of 200,000 would outlast the test's timeout by far.
  it('reads a scene text that is one long run of closing quotes in one pass', async () => {
    const summary = await createExtractiveSummarizer().summarize([`She said. ${'"'.repeat(200_000)} Then the lamp.`], {
      maxWords: 20,
    });
    expect(summary.length).toBeGreaterThan(0);
  });
});
