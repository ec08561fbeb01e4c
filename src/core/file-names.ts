/**
 * File and folder names made from ids, safe on every file system a project or a site may be copied to. Internal: not
 * exported from the package.
 *
 * Ids match `IdSchema` (letters, digits and `._:-`). Two things stand between an id and a name: `:` is not allowed in
 * a Windows file name, and a case-insensitive file system (the default on macOS and Windows) takes `Chapter-1` and
 * `chapter-1` for the same name, and `CON` or `nul.json` for a device.
 */

/** A name Windows reserves for a device, whatever its case and extension (`CON`, `nul.json`, `COM1`, ...). */
const RESERVED_NAME = /^(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\..*)?$/i;

/**
 * `id` with `:` written `~`, which no id contains: reversible, and a name that needs no URL encoding. Keeps the case,
 * so it is a distinct name only where something else (an index before it) tells two ids apart.
 */
export function colonFreeFileId(id: string): string {
  return id.replaceAll(':', '~');
}

/**
 * The name (without an extension) of a file or folder that stands for `id`, distinct from every other id's on any
 * file system. An id of lowercase letters, digits and `._-` that is no device name is its own name (the engine's
 * `chapter-0001`, a story's `lighthouse-keepers`), and `:` becomes `~` (`colonFreeFileId`). Any other id (one with an
 * uppercase letter, which a case-insensitive file system would confuse with its lowercase twin, a device name, or one
 * ending in a dot, which Windows drops) is
 * written `=<id in lowercase>=<which letters were uppercase, a bit mask in base 36>`: `=` is in no id, so the name is
 * never another id's, never a device name, unique whatever the file system's case rules, and reversible.
 *
 * @example
 * caseDistinctFileId('lighthouse-keepers'); // 'lighthouse-keepers'
 * caseDistinctFileId('Lighthouse-keepers'); // '=lighthouse-keepers=1'
 * caseDistinctFileId('tx:42'); // 'tx~42'
 */
export function caseDistinctFileId(id: string): string {
  const fileId = colonFreeFileId(id);
  // Windows also drops a name's trailing dot ("tale." is "tale" there): such an id takes the long form, which ends
  // in its mask.
  if (!/[A-Z]/.test(fileId) && !RESERVED_NAME.test(fileId) && !fileId.endsWith('.')) return fileId;
  let mask = 0n;
  for (let position = fileId.length - 1; position >= 0; position--) {
    mask = (mask << 1n) | (/[A-Z]/.test(fileId[position]!) ? 1n : 0n);
  }
  return `=${fileId.toLowerCase()}=${mask.toString(36)}`;
}
