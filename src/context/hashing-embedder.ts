/**
 * The hashing embedder: an offline, deterministic `Embedder` built from feature hashing. No model, no network, the
 * same vector for the same text on every machine and in every process.
 *
 * @module
 */
import { z } from 'zod';
import { throwIfAborted, toProblems, ValidationError } from '../core/errors.js';
import { LIMITS } from '../state/schema.js';
import type { Embedder } from './embedder.js';
import { analyze, STOP_WORDS, tokenizeWords } from './text-analysis.js';

/**
 * Options of `createHashingEmbedder`. Every option that changes the vectors is encoded in `modelId`, so changing one
 * changes the index fingerprint and forces a rebuild instead of mixing incompatible vectors.
 *
 * @example
 * ```ts
 * import { createHashingEmbedder, type HashingEmbedderOptions } from 'storyloom';
 * const options: HashingEmbedderOptions = { dimensions: 768, characterNgrams: { min: 3, max: 4, weight: 0.5 } };
 * const embedder = createHashingEmbedder(options);
 * ```
 */
export interface HashingEmbedderOptions {
  /** Length of every vector, 1..8192; must match the vector index. Default 1536. */
  dimensions?: number;
  /** Weight of the stemmed word (unigram) features. Default 1. */
  wordWeight?: number;
  /** Weight of the features for two consecutive stemmed words ("red shoe"). Default 0.5; 0 turns them off. */
  bigramWeight?: number;
  /**
   * Character n-grams of each non-stop word, with `<` and `>` marking its edges (fastText-style sub-words), so
   * misspellings, inflections the stemmer misses and compound words still overlap. Default `{ min: 3, max: 5,
   * weight: 0.5 }`; a weight of 0 turns them off.
   */
  characterNgrams?: { min?: number; max?: number; weight?: number };
  /** Seed mixed into every hash: two seeds give unrelated vector spaces. Default 0. */
  seed?: number;
  /** Most texts per `embed` call. Default 512. */
  maxBatchSize?: number;
}

const OptionsSchema = z
  .object({
    dimensions: z.number().int().min(1).max(LIMITS.vectorDimensions).default(1536),
    wordWeight: z.number().min(0).max(100).default(1),
    bigramWeight: z.number().min(0).max(100).default(0.5),
    characterNgrams: z
      .object({
        min: z.number().int().min(1).max(16).default(3),
        max: z.number().int().min(1).max(16).default(5),
        weight: z.number().min(0).max(100).default(0.5),
      })
      .default({ min: 3, max: 5, weight: 0.5 })
      .refine((grams) => grams.min <= grams.max, 'min must not exceed max'),
    seed: z
      .number()
      .int()
      .min(0)
      .max(2 ** 32 - 1)
      .default(0),
    maxBatchSize: z.number().int().min(1).max(100_000).default(512),
  })
  .refine((options) => options.wordWeight + options.bigramWeight + options.characterNgrams.weight > 0, {
    message: 'at least one of wordWeight, bigramWeight and characterNgrams.weight must be positive',
  });

/**
 * Creates the hashing embedder.
 *
 * Each text becomes three bags of features: its stemmed words (the same terms as the keyword index, from
 * `analyze`), pairs of consecutive stemmed words, and character n-grams of its non-stop words. Counts are damped
 * (`1 + ln(count)`, so a word said ten times does not drown the others), each bag is L2-normalised and weighted, and
 * every feature is hashed (FNV-1a, then a murmur3 finaliser) to a position and a sign (the sign halves the bias that
 * collisions add to dot products). The sum is L2-normalised, so cosine similarity is a dot product.
 *
 * Empty text (or text with no words) gets one fixed "empty" feature instead of the zero vector: vector indexes
 * reject the zero vector, and an empty query should still be a valid query, close only to other empty texts.
 *
 * `inputType` is ignored: documents and queries are embedded the same way.
 *
 * @example
 * ```ts
 * import { createHashingEmbedder } from 'storyloom';
 *
 * const embedder = createHashingEmbedder({ dimensions: 1536 });
 * const [scene, query] = await embedder.embed(['Mira followed the dragon.', 'where did the dragons go?']);
 * ```
 */
export function createHashingEmbedder(options: HashingEmbedderOptions = {}): Embedder {
  const parsed = OptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    const problems = toProblems(parsed.error.issues, 'options');
    const first = problems[0];
    throw new ValidationError(
      `Invalid hashing embedder options: ${first ? `${first.path}: ${first.message}` : 'invalid input'}`,
      { problems },
    );
  }
  const config = parsed.data;
  const { dimensions, wordWeight, bigramWeight, characterNgrams, seed, maxBatchSize } = config;
  // v2: text in scripts written without spaces is read as pairs of characters (`tokenizeWords`).
  const modelId =
    `hashing-v2:fnv1a-fmix32:d${dimensions}:s${seed}:w${wordWeight}:b${bigramWeight}` +
    `:c${characterNgrams.min}-${characterNgrams.max}x${characterNgrams.weight}`;

  const embedOne = (text: string): Float32Array => {
    const vector = new Float32Array(dimensions);
    const words = tokenizeWords(text);
    const content = words.filter((word) => !STOP_WORDS.has(word));
    if (content.length === 0) {
      // Fixed position and sign: every empty text gets the same unit vector.
      addFeature(vector, 'empty:\u2205', 1, seed);
      return vector;
    }
    if (wordWeight > 0 || bigramWeight > 0) {
      const terms = analyze(text);
      if (wordWeight > 0) addBag(vector, countFeatures(terms, 'w:'), wordWeight, seed);
      if (bigramWeight > 0 && terms.length > 1) {
        const bigrams: string[] = [];
        for (let i = 1; i < terms.length; i++) bigrams.push(`${terms[i - 1]} ${terms[i]}`);
        addBag(vector, countFeatures(bigrams, 'b:'), bigramWeight, seed);
      }
    }
    if (characterNgrams.weight > 0) {
      const grams: string[] = [];
      for (const word of content) pushCharacterNgrams(`<${word}>`, characterNgrams.min, characterNgrams.max, grams);
      addBag(vector, countFeatures(grams, 'c:'), characterNgrams.weight, seed);
    }
    normalise(vector);
    return vector;
  };

  return {
    specificationVersion: 'v1',
    provider: 'hashing',
    modelId,
    dimensions,
    maxBatchSize,
    async embed(texts, embedOptions) {
      throwIfAborted(embedOptions?.signal);
      if (!Array.isArray(texts)) {
        throw new ValidationError('texts must be an array of strings', {
          problems: [{ path: 'texts', message: 'must be an array of strings' }],
        });
      }
      if (texts.length > maxBatchSize) {
        throw new ValidationError(`At most ${maxBatchSize} texts per embed call, got ${texts.length}`, {
          problems: [{ path: 'texts', message: `must hold at most ${maxBatchSize} texts` }],
        });
      }
      const vectors: Float32Array[] = [];
      for (let index = 0; index < texts.length; index++) {
        const text = texts[index];
        if (typeof text !== 'string') {
          throw new ValidationError(`texts.${index} must be a string`, {
            problems: [{ path: `texts.${index}`, message: 'must be a string' }],
          });
        }
        vectors.push(embedOne(text));
      }
      return vectors;
    },
  };
}

function countFeatures(items: readonly string[], prefix: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) {
    const key = prefix + item;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Adds one bag, with sublinear counts, L2-normalised on its own and then scaled by `weight`. */
function addBag(vector: Float32Array, counts: Map<string, number>, weight: number, seed: number): void {
  if (counts.size === 0) return;
  let squared = 0;
  const weights = new Map<string, number>();
  for (const [feature, count] of counts) {
    const value = 1 + Math.log(count);
    weights.set(feature, value);
    squared += value * value;
  }
  const scale = weight / Math.sqrt(squared);
  for (const [feature, value] of weights) addFeature(vector, feature, value * scale, seed);
}

function addFeature(vector: Float32Array, feature: string, value: number, seed: number): void {
  const hash = hashFeature(feature, seed);
  // The low bits choose the slot, the top bit the sign; fmix32 makes both well mixed.
  const slot = (hash & 0x7fffffff) % vector.length;
  vector[slot]! += hash & 0x80000000 ? -value : value;
}

function pushCharacterNgrams(word: string, min: number, max: number, out: string[]): void {
  // Code points, not UTF-16 units, so an astral character is never split into halves.
  const characters = Array.from(word);
  for (let size = min; size <= max; size++) {
    for (let start = 0; start + size <= characters.length; start++) {
      out.push(characters.slice(start, start + size).join(''));
    }
  }
}

function normalise(vector: Float32Array): void {
  let squared = 0;
  for (let i = 0; i < vector.length; i++) squared += vector[i]! * vector[i]!;
  // Features can cancel exactly only in theory (opposite signs in one slot); guard anyway, never divide by zero.
  if (squared === 0) {
    vector[0] = 1;
    return;
  }
  const inverse = 1 / Math.sqrt(squared);
  for (let i = 0; i < vector.length; i++) vector[i]! *= inverse;
}

/**
 * 32-bit FNV-1a over the UTF-16 code units of `text`, seeded, then the murmur3 finaliser (fmix32) for avalanche.
 * Written out here so the vectors never depend on the platform, the Node version or `Math.random`.
 *
 * @example
 * ```ts
 * import { hashFeature } from 'storyloom';
 * hashFeature('w:dragon', 0) === hashFeature('w:dragon', 0); // true, in every process
 * ```
 */
export function hashFeature(text: string, seed = 0): number {
  let hash = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}
