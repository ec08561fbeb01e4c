/**
 * The known locations as their `meta` record stores them: each name with the last scene that named it, so a process
 * that did not index those scenes still knows the places, and the record's size limit drops the least recently named
 * first. Its own module because the record outlives any one process: every process of a story reads and writes it,
 * in the formats of earlier versions too, so its rules are best read whole; `KnownLocations` keeps a process's view
 * of it. Internal: not exported from the package.
 *
 * @module
 */
import { LIMITS, type VectorRecord } from '../state/schema.js';
import { remember } from './bounded-map.js';

/** The record's text: `[name, scene index]` pairs, least recently named first. */
function locationsText(known: ReadonlyMap<string, number>): string {
  return JSON.stringify(orderedLocations(known));
}

function orderedLocations(known: ReadonlyMap<string, number>): Array<[string, number]> {
  return [...known].sort(([a, i], [b, j]) => i - j || (a < b ? -1 : a > b ? 1 : 0));
}

/** The most recently named locations that the record's text holds; ties keep names in order. */
function capLocations(known: ReadonlyMap<string, number>): Map<string, number> {
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
function parseLocations(record: VectorRecord | undefined): Map<string, number> {
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

/** Where the `meta-locations` record of a story is read from and written to. */
export interface LocationsRecord {
  read(storyId: string, signal: AbortSignal | undefined): Promise<VectorRecord | undefined>;
  write(storyId: string, text: string, signal: AbortSignal | undefined): Promise<void>;
}

/**
 * A process's knowledge of the locations each story's scenes have named, each with the index of the last scene that
 * named it (the most recently named, as many as the record holds), kept in step with the `meta-locations` record that
 * every process of the story reads and writes.
 */
export class KnownLocations {
  /** Per story, the locations known, each with the last scene that named it. */
  private readonly known = new Map<string, Map<string, number>>();
  /** The state version at which each story's known locations were last read from their record. */
  private readonly readAt = new Map<string, number>();
  /** Per story, the record as this process last read or wrote it. */
  private readonly stored = new Map<string, ReadonlyMap<string, number>>();
  /** Stories whose learned locations this process has not yet saved. */
  private readonly unsaved = new Set<string>();

  constructor(private readonly record: LocationsRecord) {}

  /** The locations known for `storyId`. */
  names(storyId: string): string[] {
    return [...(this.known.get(storyId)?.keys() ?? [])];
  }

  /**
   * Adds locations as named by scene `index` (a later naming wins over an earlier one), and drops the least recently
   * named beyond what the record holds.
   */
  learn(storyId: string, locations: Iterable<string>, index: number): void {
    this.merge(
      storyId,
      Array.from(locations, (location) => [location, index] as const),
    );
  }

  /**
   * Learns a newly indexed scene's locations, and saves them when the record, as this process last read or wrote it,
   * lacks one of them or names it as last seen earlier (it keeps the most recently named), and again while an earlier
   * save of this process has not gone through (a failed index step is retried).
   */
  async learnFromScene(
    storyId: string,
    locations: readonly string[],
    index: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    this.learn(storyId, locations, index);
    const known = this.known.get(storyId);
    const stored = this.stored.get(storyId);
    const unsaved = locations.some(
      (location) => known?.has(location) && (stored?.get(location) ?? -1) < known.get(location)!,
    );
    if (unsaved || this.unsaved.has(storyId)) {
      this.unsaved.add(storyId);
      await this.save(storyId, signal);
    }
  }

  /**
   * Reads the known locations again when the story has moved on since this process last read them: another process
   * may have indexed scenes that named new ones. Once per state version, so a call at the same version reads nothing.
   */
  async refresh(storyId: string, version: number, signal: AbortSignal | undefined): Promise<void> {
    if ((this.readAt.get(storyId) ?? -1) >= version) return;
    const stored = parseLocations(await this.record.read(storyId, signal));
    this.merge(storyId, stored);
    remember(this.stored, storyId, stored, 4_096);
    remember(this.readAt, storyId, version, 4_096);
  }

  /**
   * Writes the known locations to their record, merged first with the record as stored: another process may have
   * added some since this one read it.
   */
  async save(storyId: string, signal: AbortSignal | undefined): Promise<void> {
    this.merge(storyId, parseLocations(await this.record.read(storyId, signal)));
    const known = this.known.get(storyId)!;
    if (known.size > 0) await this.record.write(storyId, locationsText(known), signal);
    remember(this.stored, storyId, new Map(known), 4_096);
    this.unsaved.delete(storyId);
  }

  private merge(storyId: string, entries: Iterable<readonly [string, number]>): void {
    const known = new Map(this.known.get(storyId));
    for (const [location, index] of entries) {
      if ((known.get(location) ?? Number.NEGATIVE_INFINITY) < index) known.set(location, index);
    }
    this.known.set(storyId, capLocations(known));
  }
}
