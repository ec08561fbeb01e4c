/**
 * Text cut to a limit counted in UTF-16 code units: what `string.length` and the schemas' `.max()` count, so a cut
 * value always passes the limit it was cut for. Cuts fall between grapheme clusters (what a reader sees as one
 * letter), so no accent, conjunct or emoji sequence is split. Internal: not exported from the package.
 */

let graphemes: Intl.Segmenter | undefined;

/**
 * `text` cut to at most `max` UTF-16 code units, between two grapheme clusters: a decomposed accent stays on its
 * letter, a consonant keeps its vowel sign, a family emoji stays whole, and neither half of a surrogate pair is ever
 * left alone. A first cluster longer than `max` (hundreds of stacked marks) is cut between code points instead, so
 * the result is empty only when `max` is 0, or 1 with an astral character first.
 */
export function clipText(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max <= 0) return '';
  // Whether a cluster breaks before code unit `max` depends on the text before it and the code point at it only, so
  // the text past that is not segmented.
  graphemes ??= new Intl.Segmenter('en', { granularity: 'grapheme' });
  const cluster = graphemes.segment(text.slice(0, max + 2)).containing(max);
  if (cluster && cluster.index > 0) return text.slice(0, cluster.index);
  const last = text.charCodeAt(max - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

/**
 * `text` when it fits in `max` code units; otherwise at most its first `max - 1` (cut as `clipText` cuts), without the
 * whitespace the cut left at its end, and an ellipsis. The result never exceeds `max`.
 */
export function ellipsize(text: string, max: number): string {
  if (text.length <= max) return text;
  return `${clipText(text, max - 1).trimEnd()}…`;
}

/**
 * `text` cut to at most `max` code units at the end of the last whole sentence that fits, so what is kept reads as
 * finished; where no sentence ends in the second half of that room, at the last word that fits, with an ellipsis.
 */
export function clipSentences(text: string, max: number): string {
  if (text.length <= max) return text;
  // One unit past the room, so a sentence end found at the very edge is known to be followed by a space.
  const window = clipText(text, max + 1);
  let end = -1;
  for (const match of window.matchAll(/[.!?…]["'”’)\]]*(?=\s|$)/g)) {
    const after = match.index + match[0].length;
    if (after <= max && (after < window.length || window.length === text.length)) end = after;
  }
  if (end >= max / 2) return window.slice(0, end);
  const head = clipText(text, max - 1);
  const lastSpace = head.search(/\s\S*$/);
  return `${(lastSpace > 0 ? head.slice(0, lastSpace) : head).trimEnd()}…`;
}
