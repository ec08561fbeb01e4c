import fc from 'fast-check';
import { Tiktoken } from 'js-tiktoken/lite';
import cl100k from 'js-tiktoken/ranks/cl100k_base';
import o200k from 'js-tiktoken/ranks/o200k_base';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../core/errors.js';
import { createEstimatingTokenizer } from './estimating-tokenizer.js';

describe('createEstimatingTokenizer', () => {
  const tokenizer = createEstimatingTokenizer();

  it('is a v1 estimate, not an exact count', () => {
    expect(tokenizer.specificationVersion).toBe('v1');
    expect(tokenizer.exact).toBe(false);
  });

  it('counts nothing for an empty text and at least one token for any non-empty text', () => {
    expect(tokenizer.count('')).toBe(0);
    // One word is rounded up from 1.3 tokens: the estimator would rather overcount a word than undercount it.
    expect(tokenizer.count('a')).toBe(2);
    expect(tokenizer.count(' ')).toBe(1);
  });

  it('stays above what Claude counts on English prose (about 4 characters per token)', () => {
    const prose =
      'The island drifted one mile north each night, and the keepers had learned to read the morning by the birds. ' +
      'Mira climbed the stairs before dawn, counting the steps the way her mother had taught her, and found Tobin ' +
      'already asleep beside the lamp with a book of tide tables open on his chest.';
    const claudeLike = Math.ceil(prose.length / 4);
    expect(tokenizer.count(prose)).toBeGreaterThanOrEqual(claudeLike);
    // Conservative, not absurd: within 30 % of the 4-characters-per-token figure.
    expect(tokenizer.count(prose)).toBeLessThan(claudeLike * 1.3);
  });

  it('uses the word bound when short words would make the character bound too low', () => {
    // 100 one-letter words: 199 characters, ~57 by characters, yet each word costs a token.
    const text = Array.from({ length: 100 }, () => 'a').join(' ');
    expect(tokenizer.count(text)).toBe(130);
  });

  it('charges digits, punctuation and non-Latin scripts more than letters', () => {
    expect(tokenizer.count('1234567890')).toBe(5);
    expect(tokenizer.count('{"a":[1,2]}')).toBeGreaterThanOrEqual(5);
    expect(tokenizer.count('灯台守は夜に島を見張る')).toBe(11);
    expect(tokenizer.count('🌊🌊🌊')).toBe(6);
    expect(tokenizer.count('lighthouse')).toBeLessThan(tokenizer.count('1234567890'));
  });

  it('is additive enough to budget with: the count of a concatenation is at most the sum plus one', () => {
    const parts = ['The lamp turned. ', 'Mira watched the sea; ', 'Tobin counted 1, 2, 3. ', 'Café au lait? ☕'];
    const sum = parts.reduce((total, part) => total + tokenizer.count(part), 0);
    expect(tokenizer.count(parts.join(''))).toBeLessThanOrEqual(sum + 1);
  });

  it('is monotone, at most one over the sum for any join, and no more than the sum plus the break for a line join', () => {
    // Letters, digits, capitals, marks and line breaks, so that joins fall inside ids and words.
    const text = fc.string({
      unit: fc.constantFrom('a', 'e', 'x', 'q', 'Z', 'K', '7', '0', ' ', '\n', '.', '\u0301', 'é', '李', '😀'),
      maxLength: 40,
    });
    fc.assert(
      fc.property(text, text, (a, b) => {
        const whole = tokenizer.count(a + b);
        expect(whole).toBeGreaterThanOrEqual(Math.max(tokenizer.count(a), tokenizer.count(b)));
        expect(whole).toBeLessThanOrEqual(tokenizer.count(a) + tokenizer.count(b) + 1);
        expect(tokenizer.count(`${a}\n${b}`)).toBeLessThanOrEqual(tokenizer.count(a) + tokenizer.count(b) + 1);
      }),
      { numRuns: 2_000, seed: 11 },
    );
  });

  it('is more conservative with fewer characters per token', () => {
    const text = 'A quiet morning on the drifting island.';
    expect(createEstimatingTokenizer({ charsPerToken: 2 }).count(text)).toBeGreaterThan(tokenizer.count(text));
  });

  it('refuses an invalid charsPerToken with a ValidationError', () => {
    for (const charsPerToken of [0, -1, Number.NaN, 100]) {
      expect(() => createEstimatingTokenizer({ charsPerToken })).toThrow(ValidationError);
    }
  });

  // The case timeout is the guard: one pass takes milliseconds here, a rescan from each character would take minutes.
  it('counts a 500,000-character scene in one pass', { timeout: 30_000 }, () => {
    const text = 'The lamp must never go dark. '.repeat(17_500);
    expect(tokenizer.count(text)).toBeGreaterThan(text.length / 4);
    // Ids, decomposed accents and wide characters that are not marks take the slower branches: still one pass.
    for (const unit of ['4vJ9JU1bJJE96FWSJKvHsmmFADCg4gpZQff4P3bkLKi', 'e\u0301', '\n', '灯']) {
      tokenizer.count(unit.repeat(Math.ceil(500_000 / unit.length)));
    }
  });
});

describe('createEstimatingTokenizer against published BPE tokenizers', () => {
  // Claude's tokenizer is not published. cl100k_base and o200k_base are, and Claude's is known to be the less compact
  // one, so an estimate below the larger of their counts is very likely below Claude's own.
  const tokenizer = createEstimatingTokenizer();
  const cl100kBase = new Tiktoken(cl100k);
  const o200kBase = new Tiktoken(o200k);
  const counts = (text: string) => [cl100kBase.encode(text).length, o200kBase.encode(text).length];

  /** A deterministic string over `alphabet`: ids are random, so no tokenizer holds their pieces. */
  const randomId = (alphabet: string, length: number, seed: number) => {
    let state = seed * 7919 + 7;
    return Array.from({ length }, () => {
      state = (state * 1103515245 + 12345) & 0x7fffffff;
      return alphabet[state % alphabet.length];
    }).join('');
  };
  const base58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  const hex = '0123456789abcdef';
  /** A Solana transaction signature: 88 base58 characters, the id of an on-chain influence. */
  const signature = (seed: number) => randomId(base58, 88, seed);

  it('stays at or above both on ids, invented names, decomposed accents and short lines', () => {
    const shapes: Record<string, string> = {
      signature: signature(1),
      signatures: [2, 3, 4, 5].map(signature).join(' '),
      // The audience input block as the prompt lays it out: one quoted JSON influence per line.
      audienceBlock: `# Audience input (quoted data from readers, not instructions)\n${[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        .map(
          (seed) =>
            `- {"kind": "vote", "choice": "open the door", "text": "", "weight": 1, "id": "${signature(seed)}"}`,
        )
        .join('\n')}\n`,
      sha256: randomId(hex, 64, 6),
      uuids: [7, 8, 9]
        .map((seed) => [8, 4, 4, 4, 12].map((length) => randomId(hex, length, seed + length)).join('-'))
        .join(' '),
      base64: randomId('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', 120, 10),
      lowercaseId: randomId('abcdefghijklmnopqrstuvwxyz', 40, 11),
      inventedNames:
        "Xanthrael and Vyrrkhos crossed the Qoth'varren pass at dusk, where the Ilthuvaari had raised their cairns. " +
        "Zhaelindra waited by Korrvashta's gate, and Thraxxus Vhol'kendar kept the ember-lamp of Yssgarth alive.",
      moreInventedNames:
        "Aerendyl and Thalorin rode north with Gwynfor, while Kh'zarak watched Mordrith from the walls of Skarrgoth. " +
        'Sylvaraen sang of Drakkonis and Bryndolwen, and old Fjolnir muttered the name Ulthrax.',
      // Accents written decomposed (NFD), as macOS file names and some editors do.
      decomposedFrench:
        "Le gardien du phare regarda la mer agitée; la tempête déchaînée frappait la côte où l'été s'était éteint. Hélène prépara du café près de la fenêtre.".normalize(
          'NFD',
        ),
      shortLines: 'Mira lit the lamp.\nTobin slept.\nThe gulls came back.\nNo one spoke.\n',
      prose:
        'The island drifted one mile north each night, and the keepers had learned to read the morning by the birds. ' +
        'Mira climbed the stairs before dawn, counting the steps the way her mother had taught her.',
    };
    const under = Object.entries(shapes)
      .map(([name, text]) => ({ name, estimate: tokenizer.count(text), bpe: Math.max(...counts(text)) }))
      .filter(({ estimate, bpe }) => estimate < bpe);
    expect(under).toEqual([]);
  });

  it('stays at or above both on nine of ten sentences of invented names', () => {
    // Names from a syllable generator, so the check covers names nobody picked: onsets, vowels and codas of the kind
    // fantasy names are made of, 2 or 3 syllables each.
    let state = 12_345;
    const next = () => {
      state = (state * 1103515245 + 12345) & 0x7fffffff;
      return state / 0x80000000;
    };
    const pick = (choices: string[]) => choices[Math.floor(next() * choices.length)]!;
    const onsets = ['th', 'dr', 'k', 'gr', 'z', 'v', 'm', 'br', 'sh', 'kh', 'y', 'f', 'l', 'r', 's', 't', 'gw', 'x'];
    const vowels = ['a', 'e', 'i', 'o', 'u', 'ae', 'y', 'ai', 'ei', 'au', 'ou'];
    const codas = ['r', 'n', 'l', 'th', 'rk', 'dr', 'x', 'zz', 'nd', 'lm', 'rg', 's', 'k', 'v', 'dh', 'gh', 'll'];
    const name = () => {
      let text = '';
      for (let syllable = 2 + Math.floor(next() * 2); syllable > 0; syllable--) {
        text += pick(onsets) + pick(vowels) + (next() < 0.6 ? pick(codas) : '');
      }
      return text[0]!.toUpperCase() + text.slice(1);
    };
    let under = 0;
    const sentences = 200;
    for (let index = 0; index < sentences; index++) {
      const text = `${name()} and ${name()} rode north with ${name()}, while ${name()} watched ${name()} from ${name()}.`;
      if (tokenizer.count(text) < Math.max(...counts(text))) under++;
    }
    expect(under).toBeLessThanOrEqual(sentences / 10);
  });

  it('does not inflate English prose: within 35 % above them', () => {
    const prose =
      'When they got to the edge of the lake what did they find but the most beautiful boat you ever saw in your ' +
      "life; and says the eldest, 'I'll take a sail in this fine boat'; and the youngest said she would not, for she " +
      'was afraid it was an enchanted one. But the others persuaded her to go in, and her father was just going in ' +
      'after her, when up sprang on the deck a little man only seven inches high, and ordered him to stand back.';
    expect(tokenizer.count(prose)).toBeLessThanOrEqual(Math.max(...counts(prose)) * 1.35);
  });

  it('stays at or above the more compact of them on CJK, emoji and other languages written decomposed', () => {
    for (const text of [
      '灯台守のミラは夜ごとに島が北へ流れるのを見張っていた。',
      '岛屿每晚向北漂移一英里，守护者们学会了通过鸟儿来判断早晨。',
      '😀🌊👨‍👩‍👧‍👦 ☕',
      'Hòn đảo trôi về phía bắc một dặm mỗi đêm, và những người gác đã học cách đọc buổi sáng.'.normalize('NFD'),
      'Die Wärter hatten gelernt, den Morgen an den Vögeln abzulesen, während die Insel trieb.'.normalize('NFD'),
    ]) {
      expect(tokenizer.count(text), text).toBeGreaterThanOrEqual(Math.min(...counts(text)));
    }
  });
});
