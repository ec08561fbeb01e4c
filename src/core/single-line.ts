/**
 * Story fields shown on one line of a prompt. Internal: not exported from the package.
 */

/**
 * Every character that ends a line for some reader (CR, LF, VT, FF, NEL U+0085, LINE SEPARATOR U+2028, PARAGRAPH
 * SEPARATOR U+2029) and every other control character (C0, DEL, C1), in runs.
 */
const LINE_BREAKS_AND_CONTROLS = /[\p{Cc}\u2028\u2029]+/gu;

/**
 * `text` with each run of line breaks and control characters written as one space, so that a single-line field (a
 * name, an alias, a title, a tag, a rule) cannot start a line of its own, such as a heading that poses as part of the
 * prompt's instructions. The schemas accept these characters, and states already stored may hold them, so prompts
 * render them this way instead of refusing them. Deterministic, and the identity on text without them: a prompt's
 * stable prefix keeps its bytes.
 */
export function singleLine(text: string): string {
  return text.replace(LINE_BREAKS_AND_CONTROLS, ' ');
}

/** The characters `JSON.stringify` leaves as they are that end a line for some reader, or control one: DEL and C1. */
const RAW_IN_JSON = /[\u007f-\u009f\u2028\u2029]/g;

/**
 * `JSON.stringify(value)` on one line: it escapes C0 controls and line feeds, but leaves NEL (U+0085), the line and
 * paragraph separators and the other C1 controls as they are, which some readers break a line at. Those are escaped
 * too (`\u2028`), which JSON reads back as the same value. `undefined` for a value JSON has no text for.
 */
export function oneLineJson(value: unknown): string | undefined {
  const json = JSON.stringify(value);
  return json?.replace(RAW_IN_JSON, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
