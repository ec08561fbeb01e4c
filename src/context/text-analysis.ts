/**
 * Text analysis for lexical search: the one place that decides what a "term" is, so the keyword index, the query
 * side and (later) the hashing embedder agree on it.
 *
 * The pipeline is: Unicode compatibility decomposition (NFKD) with the combining diacritical marks dropped (accent
 * folding), lowercasing, a few letters NFKD leaves alone folded by hand (`ß` → `ss`, `ø` → `o`, ...), recomposition
 * (NFC), word tokenisation on letters, digits and the marks inside words, then for `analyze` English stop words removed
 * and the Porter stemmer applied.
 *
 * Every function here is pure and allocation-light: scene texts run up to 200,000 characters.
 *
 * @module
 */

/**
 * Tokens longer than this are dropped: they are identifiers, hashes or base64, not words anyone searches for.
 *
 * @example
 * ```ts
 * import { MAX_TERM_LENGTH, tokenizeWords } from './text-analysis.js';
 * tokenizeWords('x'.repeat(MAX_TERM_LENGTH + 1)); // []
 * ```
 */
export const MAX_TERM_LENGTH = 64;

// Letters and digits, with the marks that belong to them (Devanagari vowel signs, Japanese voicing marks) and
// apostrophes allowed between them ("don't", "o'brien", "dragon's").
const WORD = /[\p{L}\p{N}][\p{L}\p{N}\p{M}]*(?:['\u2019\u02BC][\p{L}\p{N}][\p{L}\p{N}\p{M}]*)*/gu;
const APOSTROPHES = /['\u2019\u02BC]/g;
const HAS_APOSTROPHE = /['\u2019\u02BC]/;
const POSSESSIVE = /['\u2019\u02BC]s$/;
// The combining diacritics of Latin, Greek and Cyrillic (acute, grave, ring, cedilla, dot above, ...). Only these
// go: marks of other scripts carry meaning (が is not か, and a Devanagari vowel sign is part of its word).
const DIACRITICS = /[\u0300-\u036F\u1AB0-\u1AFF\u1DC0-\u1DFF\u20D0-\u20FF\uFE20-\uFE2F]+/g;
const NON_ASCII = /[^\p{ASCII}]/u;

// Letters that carry no combining mark, so NFKD does not fold them; mapped to what an English keyboard types.
const UNFOLDED_LETTERS: Readonly<Record<string, string>> = {
  ß: 'ss',
  æ: 'ae',
  œ: 'oe',
  ø: 'o',
  ł: 'l',
  đ: 'd',
  ð: 'd',
  þ: 'th',
  ı: 'i',
  // toLowerCase writes a word-final Σ as ς; a query typed in lowercase has σ.
  ς: 'σ',
};
const UNFOLDED = /[ßæœøłđðþıς]/g;

/**
 * Lowercases `text` and folds accents and compatibility forms: `Café` → `cafe`, `ﬁre` → `fire`, `Straße` →
 * `strasse`, full-width digits → ASCII digits.
 *
 * @example
 * ```ts
 * import { foldText } from './text-analysis.js';
 * foldText('Ångström Café'); // 'angstrom cafe'
 * ```
 */
export function foldText(text: string): string {
  if (!NON_ASCII.test(text)) return text.toLowerCase();
  // Marks are dropped before lowercasing so "İ" (I + combining dot) ends as a plain "i". NFC at the end puts back
  // together what decomposition split but folding kept (Hangul syllables, voiced kana).
  const folded = text.normalize('NFKD').replace(DIACRITICS, '').toLowerCase();
  return folded.replace(UNFOLDED, (letter) => UNFOLDED_LETTERS[letter] ?? letter).normalize('NFC');
}

/**
 * Splits text into folded words (see `foldText`): runs of letters and digits. A possessive `'s` is dropped
 * (`dragon's` → `dragon`) and other inner apostrophes are removed (`don't` → `dont`), so curly and straight
 * apostrophes give the same word. Stop words are kept and nothing is stemmed.
 *
 * @example
 * ```ts
 * import { tokenizeWords } from './text-analysis.js';
 * tokenizeWords("Mira's café, don’t!"); // ['mira', 'cafe', 'dont']
 * ```
 */
export function tokenizeWords(text: string): string[] {
  const words: string[] = [];
  const folded = foldText(text);
  // One test per text: words are looked at one by one only in text that holds such a script.
  const spaceless = SPACELESS_SCRIPT.test(folded);
  for (const match of folded.matchAll(WORD)) {
    let word = match[0];
    if (spaceless && SPACELESS_SCRIPT.test(word)) {
      pushSpacelessWords(word, words);
      continue;
    }
    if (HAS_APOSTROPHE.test(word)) word = word.replace(POSSESSIVE, '').replace(APOSTROPHES, '');
    if (word.length > 0 && word.length <= MAX_TERM_LENGTH) words.push(word);
  }
  return words;
}

/**
 * Characters of the scripts written without spaces between words: Han, Hiragana, Katakana, Thai, Lao, Khmer,
 * Myanmar. A run of them has no word boundaries to split at, so it is read as overlapping pairs of characters (the
 * way Lucene's CJK analyzer reads it): `李明去了` → `李明 明去 去了`, and a name of two characters or more is a
 * phrase of those pairs. A run of one character is that character.
 */
export const SPACELESS_SCRIPT =
  /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Thai}\p{Script=Lao}\p{Script=Khmer}\p{Script=Myanmar}]/u;
/** A run of spaceless-script characters (with their marks), or a run of anything else. */
const SPACELESS_RUNS = new RegExp(
  `(?:${SPACELESS_SCRIPT.source}\\p{M}*)+|(?:(?!${SPACELESS_SCRIPT.source})[\\s\\S])+`,
  'gu',
);
/** One character of such a run with the marks that follow it (a Thai vowel sign belongs to its consonant). */
const SPACELESS_CHARACTER = /[\s\S]\p{M}*/gu;

/** The words of a `WORD` match that holds spaceless-script characters: pairs of those, other runs as words. */
function pushSpacelessWords(word: string, words: string[]): void {
  for (const [run] of word.matchAll(SPACELESS_RUNS)) {
    if (!SPACELESS_SCRIPT.test(run)) {
      const plain = run.replace(APOSTROPHES, '');
      if (plain.length > 0 && plain.length <= MAX_TERM_LENGTH) words.push(plain);
      continue;
    }
    const characters = run.match(SPACELESS_CHARACTER) ?? [];
    if (characters.length === 1) words.push(characters[0]!);
    for (let i = 1; i < characters.length; i++) words.push(`${characters[i - 1]}${characters[i]}`);
  }
}

/**
 * The terms of `text` for indexing or querying: `tokenizeWords`, without English stop words, each word stemmed with
 * the Porter stemmer. The same function serves documents and queries, so `Dragons` finds `dragon`.
 *
 * @example
 * ```ts
 * import { analyze } from './text-analysis.js';
 * analyze('The Dragons were sleeping in the Château'); // ['dragon', 'sleep', 'chateau']
 * ```
 */
export function analyze(text: string): string[] {
  const short = text.length <= RECENT_MAX_LENGTH;
  if (short) {
    const known = RECENT_ANALYSES.get(text);
    if (known !== undefined) return known.slice();
  }
  const terms: string[] = [];
  for (const word of tokenizeWords(text)) {
    if (STOP_WORDS.has(word)) continue;
    terms.push(stem(word));
  }
  if (short) {
    if (RECENT_ANALYSES.size >= RECENT_LIMIT) RECENT_ANALYSES.clear();
    RECENT_ANALYSES.set(text, terms.slice());
  }
  return terms;
}

/**
 * The terms of short texts analysed lately (queries, names), each returned as a copy so every caller owns its list.
 * One retrieval analyses its query several times, in stages and behind ports that cannot share a result (the
 * searchable-query check of the context manager and of the retriever, the keyword index, the proximity stage), and
 * tokenizing and stemming a query cost more than finding it here (speed, bench:context). Documents, longer, are
 * analysed once each and are not remembered.
 */
const RECENT_ANALYSES = new Map<string, string[]>();
const RECENT_LIMIT = 64;
const RECENT_MAX_LENGTH = 400;

/**
 * English stop words, folded the way `tokenizeWords` folds text (contractions lose their apostrophe). Close to the
 * lists of NLTK and Snowball; words that carry story meaning on their own ("against", "never", "no", "not") are
 * kept out of the list, so "not guilty" and "no way back" still search for something.
 *
 * @example
 * ```ts
 * import { STOP_WORDS, tokenizeWords } from './text-analysis.js';
 * tokenizeWords("Don't go there").filter((word) => !STOP_WORDS.has(word)); // ['go']
 * ```
 */
export const STOP_WORDS: ReadonlySet<string> = new Set(
  (
    'a about above after again all am an and any are arent as at be because been before being below between both but ' +
    'by can cant could couldnt did didnt do does doesnt doing dont down during each few for from further had hadnt ' +
    'has hasnt have havent having he hed hell hes her here heres hers herself him himself his how hows i id ill im ' +
    'ive if in into is isnt it its itself lets me more most mustnt my myself nor of off on once only or other ought ' +
    'our ours ourselves out over own same shant she shed shell shes should shouldnt so some such than that thats ' +
    'the their theirs them themselves then there theres these they theyd theyll theyre theyve this those through to ' +
    'too under until up very was wasnt we wed well were weve werent what whats when whens where wheres which while ' +
    'who whos whom why whys will with wont would wouldnt you youd youll youre youve your yours yourself yourselves'
  ).split(' '),
);

/**
 * The Porter stemmer (M. F. Porter, 1980, with the two departures of his reference C implementation: `bli` →
 * `ble` and `logi` → `log`), the stemmer SQLite's FTS5 `porter` tokenizer uses, so the memory and SQLite keyword
 * indexes agree on terms. Words of two letters or less, and words holding anything but `a`-`z`, are returned as they
 * are: the algorithm is defined for English letters only.
 *
 * @example
 * ```ts
 * import { stem } from './text-analysis.js';
 * stem('generalizations'); // 'gener'
 * ```
 */
export function stem(word: string): string {
  if (word.length <= 2 || !LOWER_ASCII_WORD.test(word)) return word;
  return new PorterStemmer(word).run();
}

const LOWER_ASCII_WORD = /^[a-z]+$/;

/**
 * A direct transcription of Porter's reference algorithm: `b` holds the word, `k` the index of its last letter
 * and `j` the end of the stem once a suffix has matched.
 */
class PorterStemmer {
  private b: string;
  private k: number;
  private j = 0;

  constructor(word: string) {
    this.b = word;
    this.k = word.length - 1;
  }

  run(): string {
    this.step1ab();
    if (this.k > 0) {
      this.step1c();
      this.step2();
      this.step3();
      this.step4();
      this.step5();
    }
    return this.b.slice(0, this.k + 1);
  }

  /** Whether the letter at `i` is a consonant: not a vowel, and `y` only when it follows a vowel. */
  private isConsonant(i: number): boolean {
    switch (this.b[i]) {
      case 'a':
      case 'e':
      case 'i':
      case 'o':
      case 'u':
        return false;
      case 'y':
        return i === 0 ? true : !this.isConsonant(i - 1);
      default:
        return true;
    }
  }

  /** The measure m of the stem `b[0..j]`: the number of vowel-consonant sequences in it. */
  private measure(): number {
    let n = 0;
    let i = 0;
    const j = this.j;
    for (;;) {
      if (i > j) return n;
      if (!this.isConsonant(i)) break;
      i++;
    }
    i++;
    for (;;) {
      for (;;) {
        if (i > j) return n;
        if (this.isConsonant(i)) break;
        i++;
      }
      i++;
      n++;
      for (;;) {
        if (i > j) return n;
        if (!this.isConsonant(i)) break;
        i++;
      }
      i++;
    }
  }

  private vowelInStem(): boolean {
    for (let i = 0; i <= this.j; i++) if (!this.isConsonant(i)) return true;
    return false;
  }

  private doubleConsonant(i: number): boolean {
    return i >= 1 && this.b[i] === this.b[i - 1] && this.isConsonant(i);
  }

  /** consonant-vowel-consonant ending at `i`, the last consonant not w, x or y (`hop`, not `snow`). */
  private cvc(i: number): boolean {
    if (i < 2 || !this.isConsonant(i) || this.isConsonant(i - 1) || !this.isConsonant(i - 2)) return false;
    const ch = this.b[i];
    return ch !== 'w' && ch !== 'x' && ch !== 'y';
  }

  /** Whether `b[0..k]` ends with `suffix`; sets `j` to the end of the stem when it does. */
  private ends(suffix: string): boolean {
    const length = suffix.length;
    if (length > this.k + 1) return false;
    if (!this.b.startsWith(suffix, this.k - length + 1)) return false;
    this.j = this.k - length;
    return true;
  }

  /** Replaces `b[j+1..k]` with `replacement`. */
  private setTo(replacement: string): void {
    this.b = this.b.slice(0, this.j + 1) + replacement + this.b.slice(this.k + 1);
    this.k = this.j + replacement.length;
  }

  private replaceIfMeasured(replacement: string): void {
    if (this.measure() > 0) this.setTo(replacement);
  }

  /** Plurals and -ed / -ing: caresses → caress, ponies → poni, hopping → hop, filing → file. */
  private step1ab(): void {
    if (this.b[this.k] === 's') {
      if (this.ends('sses')) this.k -= 2;
      else if (this.ends('ies')) this.setTo('i');
      else if (this.b[this.k - 1] !== 's') this.k--;
    }
    if (this.ends('eed')) {
      if (this.measure() > 0) this.k--;
    } else if ((this.ends('ed') || this.ends('ing')) && this.vowelInStem()) {
      this.k = this.j;
      if (this.ends('at')) this.setTo('ate');
      else if (this.ends('bl')) this.setTo('ble');
      else if (this.ends('iz')) this.setTo('ize');
      else if (this.doubleConsonant(this.k)) {
        this.k--;
        const ch = this.b[this.k];
        if (ch === 'l' || ch === 's' || ch === 'z') this.k++;
      } else if (this.measure() === 1 && this.cvc(this.k)) {
        // j still marks the end of the stem (== k) here, so measure() looks at the stem left by -ed / -ing.
        this.setTo('e');
      }
    }
  }

  /** A final y becomes i when the stem holds a vowel: happy → happi, sky stays. */
  private step1c(): void {
    if (this.ends('y') && this.vowelInStem()) {
      this.b = this.b.slice(0, this.k) + 'i' + this.b.slice(this.k + 1);
    }
  }

  /** Double suffixes to single ones: relational → relate, hopefulness → hopeful. */
  private step2(): void {
    const rules = STEP2_RULES[this.b[this.k - 1] ?? ''];
    if (!rules) return;
    for (const [suffix, replacement] of rules) {
      if (this.ends(suffix)) {
        this.replaceIfMeasured(replacement);
        return;
      }
    }
  }

  /** -ic-, -full, -ness and the like: electrical → electric, goodness → good. */
  private step3(): void {
    const rules = STEP3_RULES[this.b[this.k] ?? ''];
    if (!rules) return;
    for (const [suffix, replacement] of rules) {
      if (this.ends(suffix)) {
        this.replaceIfMeasured(replacement);
        return;
      }
    }
  }

  /** Removes -ant, -ence, -ment, ... when the stem stays long enough (m > 1): adjustment → adjust. */
  private step4(): void {
    const suffixes = STEP4_SUFFIXES[this.b[this.k - 1] ?? ''];
    if (!suffixes) return;
    let matched = false;
    for (const suffix of suffixes) {
      if (this.ends(suffix)) {
        matched = suffix !== 'ion' || (this.j >= 0 && (this.b[this.j] === 's' || this.b[this.j] === 't'));
        break;
      }
    }
    if (matched && this.measure() > 1) this.k = this.j;
  }

  /** A final -e goes when the stem is long enough, and -ll becomes -l: probate → probat, controll → control. */
  private step5(): void {
    this.j = this.k;
    if (this.b[this.k] === 'e') {
      const m = this.measure();
      if (m > 1 || (m === 1 && !this.cvc(this.k - 1))) this.k--;
    }
    if (this.b[this.k] === 'l' && this.doubleConsonant(this.k) && this.measure() > 1) this.k--;
  }
}

type Rules = Readonly<Record<string, ReadonlyArray<readonly [string, string]>>>;

// Keyed by the penultimate letter, as in Porter's C implementation: only the first matching suffix is tried.
const STEP2_RULES: Rules = {
  a: [
    ['ational', 'ate'],
    ['tional', 'tion'],
  ],
  c: [
    ['enci', 'ence'],
    ['anci', 'ance'],
  ],
  e: [['izer', 'ize']],
  l: [
    ['bli', 'ble'],
    ['alli', 'al'],
    ['entli', 'ent'],
    ['eli', 'e'],
    ['ousli', 'ous'],
  ],
  o: [
    ['ization', 'ize'],
    ['ation', 'ate'],
    ['ator', 'ate'],
  ],
  s: [
    ['alism', 'al'],
    ['iveness', 'ive'],
    ['fulness', 'ful'],
    ['ousness', 'ous'],
  ],
  t: [
    ['aliti', 'al'],
    ['iviti', 'ive'],
    ['biliti', 'ble'],
  ],
  g: [['logi', 'log']],
};

// Keyed by the last letter.
const STEP3_RULES: Rules = {
  e: [
    ['icate', 'ic'],
    ['ative', ''],
    ['alize', 'al'],
  ],
  i: [['iciti', 'ic']],
  l: [
    ['ical', 'ic'],
    ['ful', ''],
  ],
  s: [['ness', '']],
};

// Keyed by the penultimate letter.
const STEP4_SUFFIXES: Readonly<Record<string, readonly string[]>> = {
  a: ['al'],
  c: ['ance', 'ence'],
  e: ['er'],
  i: ['ic'],
  l: ['able', 'ible'],
  n: ['ant', 'ement', 'ment', 'ent'],
  o: ['ion', 'ou'],
  s: ['ism'],
  t: ['ate', 'iti'],
  u: ['ous'],
  v: ['ive'],
  z: ['ize'],
};

/**
 * The first `words` whitespace-separated words of `text`, joined by single spaces, with " …" when there were more.
 * In a script written without spaces, two characters count as a word. Reads only as far as it keeps (speed,
 * bench:context: excerpts run to 2,000 characters).
 */
export function clipWords(text: string, words: number): string {
  const parts: string[] = [];
  let count = 0;
  const length = text.length;
  let at = 0;
  for (;;) {
    while (at < length && isSpace(text.charCodeAt(at))) at++;
    if (at === length) return parts.join(' ');
    if (count >= words) return `${parts.join(' ')} …`;
    const start = at;
    while (at < length && !isSpace(text.charCodeAt(at))) at++;
    const word = text.slice(start, at);
    const weight = spacelessWeight(word);
    if (weight > 1 && count + weight > words) {
      // Cut inside the word: as many characters as the words left allow.
      const characters = Array.from(word);
      parts.push(characters.slice(0, (words - count) * 2).join(''));
      return `${parts.join(' ')} …`;
    }
    parts.push(word);
    count += Math.max(1, weight);
  }
}

/** The last `words` (at least 1) whitespace-separated words of `text`, joined by single spaces. Reads from the end. In
 * a script written without spaces, two characters count as a word. */
export function lastWords(text: string, words: number): string {
  const parts: string[] = [];
  let count = 0;
  let end = text.length;
  while (count < words) {
    while (end > 0 && isSpace(text.charCodeAt(end - 1))) end--;
    if (end === 0) break;
    let start = end;
    while (start > 0 && !isSpace(text.charCodeAt(start - 1))) start--;
    const word = text.slice(start, end);
    const weight = spacelessWeight(word);
    if (weight > 1 && count + weight > Math.max(words, 1)) {
      const characters = Array.from(word);
      parts.push(characters.slice(characters.length - (Math.max(words, 1) - count) * 2).join(''));
      break;
    }
    parts.push(word);
    count += Math.max(1, weight);
    end = start;
  }
  return parts.reverse().join(' ');
}

/**
 * Words of `text` as `clipWords` and `lastWords` count them: whitespace-separated, and in a script written without
 * spaces two characters to a word.
 */
export function countWords(text: string): number {
  let words = 0;
  const length = text.length;
  let at = 0;
  for (;;) {
    while (at < length && isSpace(text.charCodeAt(at))) at++;
    if (at === length) return words;
    const start = at;
    while (at < length && !isSpace(text.charCodeAt(at))) at++;
    words += spacelessWeight(text.slice(start, at));
  }
}

/**
 * How many words a whitespace-free `word` counts as: 1, or half its characters (rounded up) when it holds a script
 * written without spaces. Plain text is told by its first code units, without a regular expression.
 */
function spacelessWeight(word: string): number {
  let wide = false;
  for (let i = 0; i < word.length; i++) {
    if (word.charCodeAt(i) >= 0x0e00) {
      wide = true;
      break;
    }
  }
  if (!wide || !SPACELESS_SCRIPT.test(word)) return 1;
  return Math.ceil(Array.from(word).length / 2);
}

/** Whether a UTF-16 code unit is whitespace as `\s` reads it (a test holds the two to agree on every code unit). */
export function isSpace(code: number): boolean {
  if (code <= 32) return code === 32 || (code >= 9 && code <= 13);
  if (code < 160) return false;
  return (
    code === 160 ||
    code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 ||
    code === 0x2029 ||
    code === 0x202f ||
    code === 0x205f ||
    code === 0x3000 ||
    code === 0xfeff
  );
}
