/**
 * Rebuilds the estimating tokenizer's table of rare letter pairs (`RARE_LETTER_PAIRS` in
 * src/context/estimating-tokenizer.ts) from two published vocabularies: a pair is rare when fewer than 300 of the
 * all-letter tokens of cl100k_base and o200k_base together hold it (case aside). Prints the count and the table as
 * the base64 the source holds.
 *
 *   npx tsx bench/letter-pairs.ts
 *
 * @module
 */
import { getEncoding } from 'js-tiktoken';

const THRESHOLD = 300;
const holders = new Float64Array(26 * 26);
let tokens = 0;
for (const name of ['cl100k_base', 'o200k_base'] as const) {
  const encoding = getEncoding(name);
  for (let id = 0; id < 200_000; id++) {
    let text: string;
    try {
      text = encoding.decode([id]);
    } catch {
      continue; // not a token id of this vocabulary
    }
    const word = text.trim().toLowerCase();
    if (!/^[a-z]{2,}$/.test(word)) continue;
    tokens++;
    for (let index = 1; index < word.length; index++) {
      holders[(word.charCodeAt(index - 1) - 97) * 26 + word.charCodeAt(index) - 97]!++;
    }
  }
}
const bits = new Uint8Array(Math.ceil(holders.length / 8));
let rare = 0;
holders.forEach((count, pair) => {
  if (count >= THRESHOLD) return;
  bits[pair >> 3]! |= 1 << (pair & 7);
  rare++;
});
console.log(`${rare} of 676 pairs held by fewer than ${THRESHOLD} of ${tokens} all-letter tokens`);
console.log(Buffer.from(bits).toString('base64'));
