/**
 * The embedders the retrieval benchmark can run with, named on the command line, and a disk cache of their vectors.
 *
 * - `hashing` (the default): the offline hashing embedder the project's recall bars are defined on.
 * - `bedrock:<model>`: an embedding model on Amazon Bedrock (`amazon.titan-embed-text-v1`,
 *   `amazon.titan-embed-text-v2:0`, `cohere.embed-v4:0`) through `storyloom/bedrock`, with the AWS SDK's own
 *   credentials, region and endpoint resolution (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, ...).
 *
 * A model-backed run embeds every unit and question of the data; with `--embedding-cache FILE` each text is embedded
 * once per model, size and input type, ever, so re-running with other retriever settings costs nothing.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import type { Embedder, EmbeddingInputType } from '../src/context/embedder.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import {
  type BedrockEmbedderOptions,
  type BedrockEmbeddingModel,
  createBedrockEmbedder,
} from '../src/generation/bedrock.js';

/** Builds the embedder `spec` names (`hashing`, `bedrock:<model>`), at `dimensions` when given. */
export function embedderFromSpec(
  spec: string,
  options: { dimensions?: number; bedrock?: Omit<BedrockEmbedderOptions, 'model' | 'dimensions'> } = {},
): Embedder {
  if (spec === 'hashing') {
    return createHashingEmbedder(options.dimensions === undefined ? {} : { dimensions: options.dimensions });
  }
  if (spec.startsWith('bedrock:')) {
    return createBedrockEmbedder({
      ...options.bedrock,
      model: spec.slice('bedrock:'.length) as BedrockEmbeddingModel,
      ...(options.dimensions === undefined ? {} : { dimensions: options.dimensions }),
    });
  }
  throw new Error(`--embedder must be "hashing" or "bedrock:<model id>", got ${JSON.stringify(spec)}`);
}

/** An embedder whose vectors are kept in a SQLite file, plus how many texts it had to embed. */
export interface CachedEmbedder extends Embedder {
  /** Texts sent to the wrapped embedder (cache misses) since creation. */
  readonly embedded: number;
  close(): void;
}

/**
 * Wraps `embedder` so that each (model, dimensions, input type, text) is embedded once: vectors are stored in the
 * SQLite file `path` (created when missing) and read back on later calls and runs.
 */
export function withEmbeddingCache(embedder: Embedder, path: string): CachedEmbedder {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID');
  const read = db.prepare<[string], { vector: Buffer }>('SELECT vector FROM embeddings WHERE key = ?');
  const write = db.prepare<[string, Buffer]>('INSERT OR REPLACE INTO embeddings (key, vector) VALUES (?, ?)');
  const keyOf = (text: string, inputType: EmbeddingInputType | undefined) =>
    createHash('sha256')
      .update(`${embedder.modelId}\u0000${embedder.dimensions}\u0000${inputType ?? ''}\u0000${text}`)
      .digest('hex');
  let embedded = 0;
  return {
    specificationVersion: 'v1',
    provider: embedder.provider,
    modelId: embedder.modelId,
    dimensions: embedder.dimensions,
    maxBatchSize: embedder.maxBatchSize,
    get embedded() {
      return embedded;
    },
    async embed(texts, options = {}) {
      const keys = texts.map((text) => keyOf(text, options.inputType));
      const out: Array<Float32Array | undefined> = keys.map((key) => {
        const row = read.get(key);
        if (!row) return undefined;
        const copy = new Uint8Array(row.vector);
        return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
      });
      const missing = out.flatMap((vector, position) => (vector ? [] : [position]));
      if (missing.length > 0) {
        const fresh = await embedder.embed(
          missing.map((position) => texts[position]!),
          options,
        );
        embedded += missing.length;
        db.transaction(() => {
          missing.forEach((position, i) => {
            const vector = fresh[i]!;
            out[position] = vector;
            write.run(keys[position]!, Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength));
          });
        })();
      }
      return out as Float32Array[];
    },
    close() {
      db.close();
    },
  };
}
