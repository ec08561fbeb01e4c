/**
 * How a scene's text is cut into the chunks that are embedded and indexed one by one. Its own module because these
 * rules decide what a stored index holds (changing them calls for a new index layout version in `ContextManager`),
 * and `chunkWords` is public: a caller can see the chunks a scene will be remembered as.
 *
 * @module
 */
import { clipText } from '../core/text.js';
import { countWords, SPACELESS_SCRIPT } from './text-analysis.js';

/**
 * Splits text into chunks of about `size` words, at paragraph or sentence ends where possible. A sentence too long
 * for one chunk (verse without full stops, a scene with no break at all) is split at line ends, then between words,
 * then between characters. Text in scripts written without spaces (Chinese, Japanese, Thai, ...) counts a word per two
 * characters, ends its sentences at 。！？ without a space after them, and is joined without one; no chunk holds
 * more than `12 × size` characters.
 *
 * @example
 * ```ts
 * import { chunkWords } from 'storyloom';
 * chunkWords('The lamp went dark. Mira climbed the stair. The sea was loud tonight.', 8);
 * // ['The lamp went dark. Mira climbed the stair.', 'The sea was loud tonight.']
 * ```
 */
export function chunkWords(text: string, size: number): string[] {
  const maxCharacters = size * 12;
  const sentences = text
    .split(/(?<=[.!?…]["”’)]?)\s+|(?<=[。！？][」』”’）]?)|\n{2,}/)
    .filter((part) => part.trim().length > 0)
    .flatMap((sentence) => splitSentence(sentence.trim(), size, maxCharacters));
  const chunks: string[] = [];
  let current = '';
  let count = 0;
  for (const sentence of sentences) {
    const words = countWords(sentence);
    if (count > 0 && (count + words > size || current.length + 1 + sentence.length > maxCharacters)) {
      chunks.push(current);
      current = '';
      count = 0;
    }
    current = current === '' ? sentence : `${current}${CLOSED_WITHOUT_SPACE.test(current) ? '' : ' '}${sentence}`;
    count += words;
  }
  if (current !== '') chunks.push(current);
  return chunks.length > 0 ? chunks : [text];
}

/** A sentence that ends in a script written without spaces (or its punctuation) is followed by the next without one. */
const CLOSED_WITHOUT_SPACE = new RegExp(`(?:${SPACELESS_SCRIPT.source}|[。！？」』）])$`, 'u');

/** `sentence` as it is when it fits one chunk, else in pieces that do: split at line ends, then words, then characters. */
function splitSentence(sentence: string, size: number, maxCharacters: number): string[] {
  if (sentence.length <= maxCharacters && countWords(sentence) <= size) return [sentence];
  // Atoms with the separator that goes before each: lines, a line too long in words, a word too long in characters.
  const atoms: Array<{ text: string; before: string }> = [];
  for (const line of sentence.split(/\s*\n\s*/)) {
    if (line === '') continue;
    if (line.length <= maxCharacters && countWords(line) <= size) {
      atoms.push({ text: line, before: '\n' });
      continue;
    }
    let first = true;
    for (const word of line.split(/\s+/)) {
      if (word === '') continue;
      const pieces = splitCharacters(word, SPACELESS_SCRIPT.test(word) ? size * 2 : maxCharacters);
      pieces.forEach((piece, index) => {
        atoms.push({ text: piece, before: index > 0 ? '' : first ? '\n' : ' ' });
      });
      first = false;
    }
  }
  const pieces: string[] = [];
  let current = '';
  let count = 0;
  for (const atom of atoms) {
    const words = countWords(atom.text);
    if (
      current !== '' &&
      (count + words > size || current.length + atom.before.length + atom.text.length > maxCharacters)
    ) {
      pieces.push(current);
      current = '';
      count = 0;
    }
    current = current === '' ? atom.text : `${current}${atom.before}${atom.text}`;
    count += words;
  }
  if (current !== '') pieces.push(current);
  return pieces;
}

/** `word` in pieces of at most `length` UTF-16 code units, never between the halves of a surrogate pair. */
function splitCharacters(word: string, length: number): string[] {
  const pieces: string[] = [];
  let at = 0;
  while (at < word.length) {
    const piece = clipText(word.slice(at), length);
    pieces.push(piece);
    at += piece.length;
  }
  return pieces;
}
