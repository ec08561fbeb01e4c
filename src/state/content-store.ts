/**
 * The `ContentStore` port: a place for bytes too large to live inside a database item (long scene text, large state
 * snapshots), addressed by key. The DynamoDB state store writes there what exceeds DynamoDB's 400 KB item limit; an
 * S3 bucket is the natural backend. This file imports no SDK.
 *
 * @module
 */

/**
 * Bytes by key. Keys written by storyloom are content-addressed (they end in the SHA-256 of the bytes), so writing a
 * key twice always writes the same bytes and `put` need not be conditional.
 *
 * @example
 * ```ts
 * import { createMemoryContentStore, createDynamoStateStore } from 'storyloom/dynamodb';
 * const store = createDynamoStateStore({ tableName: 'stories', contentStore: createMemoryContentStore() });
 * ```
 */
export interface ContentStore {
  /** Stores `bytes` under `key`, replacing what was there. */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /** The bytes under `key`, or null when there are none. */
  get(key: string): Promise<Uint8Array | null>;
}

/** A `ContentStore` in process memory, with `size` for tests. */
export interface MemoryContentStore extends ContentStore {
  /** How many keys are stored. */
  readonly size: number;
}

/**
 * A `ContentStore` held in process memory: for tests and single-process tools. Bytes are copied in and out.
 *
 * @example
 * ```ts
 * import { createMemoryContentStore } from 'storyloom/dynamodb';
 * const content = createMemoryContentStore();
 * await content.put('a', new TextEncoder().encode('hello'));
 * ```
 */
export function createMemoryContentStore(): MemoryContentStore {
  const entries = new Map<string, Uint8Array>();
  return {
    get size() {
      return entries.size;
    },
    async put(key, bytes) {
      entries.set(key, new Uint8Array(bytes));
    },
    async get(key) {
      const bytes = entries.get(key);
      return bytes ? new Uint8Array(bytes) : null;
    },
  };
}
