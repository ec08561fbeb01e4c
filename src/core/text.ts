/**
 * Text cut to a limit counted in UTF-16 code units: what `string.length` and the schemas' `.max()` count, so a cut
 * value always passes the limit it was cut for. Internal: not exported from the package.
 */

/**
 * `text` cut to at most `max` UTF-16 code units, never between the two halves of a surrogate pair (an emoji at the
 * cut would otherwise leave half a character in stored text and prompts).
 */
export function clipText(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max <= 0) return '';
  const last = text.charCodeAt(max - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

/**
 * `text` when it fits in `max` code units; otherwise its first `max - 1` (cut as `clipText` cuts), without the
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
