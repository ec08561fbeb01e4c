/**
 * Optional packages, imported on first use, so that a subpath entry whose SDK is not installed fails with a
 * `MissingDependencyError` that says what to install rather than a module-resolution crash at import time.
 *
 * @module
 */
import { MissingDependencyError } from './errors.js';

/**
 * Imports optional packages together: those that are not installed are reported in one `MissingDependencyError`;
 * any other failure of an import is thrown as it is.
 */
export async function importPackages<T extends Record<string, unknown>>(
  feature: string,
  importers: { [K in keyof T]: readonly [name: string, importer: () => Promise<T[K]>] },
): Promise<T> {
  const keys = Object.keys(importers) as Array<keyof T>;
  const settled = await Promise.allSettled(keys.map((key) => importers[key][1]()));
  const missing: string[] = [];
  let cause: unknown;
  settled.forEach((result, index) => {
    if (result.status === 'fulfilled') return;
    const code = (result.reason as { code?: unknown } | null)?.code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw result.reason;
    missing.push(importers[keys[index]!][0]);
    cause ??= result.reason;
  });
  if (missing.length > 0) throw new MissingDependencyError(missing, feature, { cause });
  return Object.fromEntries(
    keys.map((key, index) => [key, (settled[index] as PromiseFulfilledResult<unknown>).value]),
  ) as T;
}
