/**
 * The known locations as their `meta` record stores them: each name with the last scene that named it, so a process
 * that did not index those scenes still knows the places, and the record's size limit drops the least recently named
 * first. Its own module because the record outlives any one process: every process of a story reads and writes it,
 * in the formats of earlier versions too, so its rules are best read whole. Internal: not exported from the package.
 *
 * @module
 */
import { LIMITS, type VectorRecord } from '../state/schema.js';

/** The record's text: `[name, scene index]` pairs, least recently named first. */
export function locationsText(known: ReadonlyMap<string, number>): string {
  return JSON.stringify(orderedLocations(known));
}

function orderedLocations(known: ReadonlyMap<string, number>): Array<[string, number]> {
  return [...known].sort(([a, i], [b, j]) => i - j || (a < b ? -1 : a > b ? 1 : 0));
}

/** The most recently named locations that the record's text holds; ties keep names in order. */
export function capLocations(known: ReadonlyMap<string, number>): Map<string, number> {
  const ordered = orderedLocations(known);
  let size = JSON.stringify(ordered).length;
  let first = 0;
  while (size > LIMITS.metadataText && first < ordered.length) size -= JSON.stringify(ordered[first++]).length + 1;
  return new Map(ordered.slice(first));
}

/**
 * The locations a `meta-locations` record holds, with the last scene that named each; none when it is missing or does
 * not parse. A record of plain names (written before the scene indexes were kept) counts them as named before any scene.
 */
export function parseLocations(record: VectorRecord | undefined): Map<string, number> {
  const locations = new Map<string, number>();
  if (!record?.metadata.text) return locations;
  try {
    const parsed: unknown = JSON.parse(record.metadata.text);
    if (!Array.isArray(parsed)) return locations;
    // Plain names are in the old record's order, least recently named first: numbered below any scene, in that order.
    for (const [position, entry] of parsed.entries()) {
      if (typeof entry === 'string') locations.set(entry, position - parsed.length);
      else if (
        Array.isArray(entry) &&
        typeof entry[0] === 'string' &&
        typeof entry[1] === 'number' &&
        Number.isFinite(entry[1])
      ) {
        locations.set(entry[0], Math.max(entry[1], locations.get(entry[0]) ?? Number.NEGATIVE_INFINITY));
      }
    }
    return locations;
  } catch {
    return locations;
  }
}
