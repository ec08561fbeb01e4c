/**
 * A bounded map for a process's caches of story reads: the oldest entry goes when a new one would pass the limit.
 * Internal: not exported from the package.
 *
 * @module
 */

/** Sets `key` in `map`, first deleting the oldest entry when the map already holds `limit`. */
export function remember<V>(map: Map<string, V>, key: string, value: V, limit: number): void {
  if (map.size >= limit) map.delete(map.keys().next().value as string);
  map.set(key, value);
}
