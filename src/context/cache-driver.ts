/**
 * The `CacheDriver` port: a small key-value cache with expiry (in-process LRU, Redis, ...).
 *
 * @module
 */

/** What a cache driver can do. */
export interface CacheDriverCapabilities {
  /** Values are shared between processes. */
  shared: boolean;
  /** `setIfAbsent` is atomic across processes. */
  atomicSetIfAbsent: boolean;
}

/** Options of a write. */
export interface CacheSetOptions {
  /** Time to live in milliseconds; the entry disappears after it. */
  ttlMs?: number;
}

/**
 * String values under string keys with optional expiry. Callers serialize; drivers never interpret values.
 * A driver may fail (network); callers such as `ContextCache` treat a failing cache as a miss. Keys and prefixes are
 * non-empty, well-formed UTF-16: the bundled drivers refuse others with a `ValidationError` (a store that encodes
 * keys as UTF-8, as Redis does, would turn each lone surrogate into U+FFFD and merge distinct keys).
 */
export interface CacheDriver {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  readonly capabilities: CacheDriverCapabilities;
  get(key: string): Promise<string | null>;
  /** Values of several keys, null where absent, in the order asked. */
  getMany(keys: readonly string[]): Promise<Array<string | null>>;
  set(key: string, value: string, options?: CacheSetOptions): Promise<void>;
  /** Writes only if the key is absent; true when written. */
  setIfAbsent(key: string, value: string, options?: CacheSetOptions): Promise<boolean>;
  /** Removes keys; returns how many existed. */
  delete(keys: readonly string[]): Promise<number>;
  /** Removes every key starting with `prefix`; returns how many. */
  deletePrefix(prefix: string): Promise<number>;
  close(): Promise<void>;
}
