/**
 * The checks every options object of the package shares: keys it does not know are refused (a misspelt option would
 * otherwise be left at its default without a word), and a value is quoted as it was given.
 *
 * @module
 */
import type { ValidationProblem } from './errors.js';

/**
 * A problem for each key of `value` that `known` does not hold (`problem`: what each one is not), each saying which
 * known key it is likely a slip for (`publisher` → `publishers`) when one is near, or else what `elsewhere` says of it.
 */
export function unknownKeyProblems(
  value: object,
  known: object,
  problem: string,
  pathPrefix = '',
  elsewhere: (key: string) => string | undefined = () => undefined,
): ValidationProblem[] {
  const knownKeys = Object.keys(known);
  return Object.keys(value)
    .filter((key) => !Object.hasOwn(known, key))
    .map((key) => {
      const nearest = nearestKey(key, knownKeys);
      const hint = nearest !== undefined ? ` (did you mean "${nearest}"?)` : (elsewhere(key) ?? '');
      return { path: `${pathPrefix}${key}`, message: `${problem}${hint}` };
    });
}

/**
 * The known key `key` most likely stands for, by the slips made most: the same in another case (`Clock`), a plural
 * or singular (`publisher`), a unit left off (`stepTimeout` for `stepTimeoutMs`).
 */
function nearestKey(key: string, knownKeys: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  if (lower.length < 3) return undefined;
  return knownKeys.find((candidate) => {
    const known = candidate.toLowerCase();
    return (
      known === lower ||
      known === `${lower}s` ||
      `${known}s` === lower ||
      (known.startsWith(lower) && known.length - lower.length <= 2)
    );
  });
}

/** A value as an error message quotes it: JSON where that says what it is (`"5"`, `null`), else its `String`. */
export function describeValue(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'bigint' || value === undefined) return String(value);
  try {
    return JSON.stringify(value)?.slice(0, 80) ?? String(value);
  } catch {
    return typeof value;
  }
}
