/**
 * The `InfluenceSource` port: where audience influence comes from (an in-process queue, signed messages, Solana).
 *
 * @module
 */
import type { UserInfluenceInput } from '../state/schema.js';

/** Delivers audience influences. The engine stores them with `enqueueInfluence`, which is idempotent by id. */
export interface InfluenceSource {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  /**
   * Influences received since the last call that are ready to count (verified, and finalized on chain).
   * Delivering one twice is harmless: storage deduplicates by id and keeps the first copy; the engine reports (a
   * `warning` event) a second delivery whose content differs. A text or choice longer than the store keeps is
   * clipped to fit, with a warning; anything else the schema refuses is acknowledged and reported, never stored.
   */
  pull(storyId: string, options?: { signal?: AbortSignal }): Promise<UserInfluenceInput[]>;
  /** Marks influences as stored, so `pull` does not return them again. */
  acknowledge(storyId: string, ids: readonly string[]): Promise<void>;
  close(): Promise<void>;
}
