import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../core/errors.js';
import { createHashingEmbedder, hashFeature } from './hashing-embedder.js';
import { createMemoryVectorIndex } from './memory-vector-index.js';

const norm = (vector: Float32Array) => Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0));
const dot = (a: Float32Array, b: Float32Array) => a.reduce((sum, value, i) => sum + value * b[i]!, 0);

describe('createHashingEmbedder', () => {
  it('gives the same vectors on every call', async () => {
    const embedder = createHashingEmbedder({ dimensions: 256 });
    const [first] = await embedder.embed(['Mira followed the dragon into the flooded archive.']);
    const [second] = await embedder.embed(['Mira followed the dragon into the flooded archive.']);
    expect(Array.from(first!)).toEqual(Array.from(second!));
  });

  it('gives the same vectors in another process', async () => {
    const embedder = createHashingEmbedder({ dimensions: 64 });
    const [local] = await embedder.embed(['The lantern guttered out.']);
    const script =
      "import { createHashingEmbedder } from './src/context/hashing-embedder.ts';" +
      "const [v] = await createHashingEmbedder({ dimensions: 64 }).embed(['The lantern guttered out.']);" +
      'console.log(JSON.stringify(Array.from(v)));';
    const output = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: new URL('../..', import.meta.url),
      encoding: 'utf8',
    });
    expect(JSON.parse(output)).toEqual(Array.from(local!));
  });

  it('returns unit-length vectors of the configured dimensions', async () => {
    const embedder = createHashingEmbedder({ dimensions: 300 });
    const vectors = await embedder.embed(['a short line', 'Another, longer line about the dragon and the archive.']);
    for (const vector of vectors) {
      expect(vector).toHaveLength(300);
      expect(norm(vector)).toBeCloseTo(1, 5);
    }
  });

  it('places similar texts closer than unrelated ones, and tolerates misspellings', async () => {
    const embedder = createHashingEmbedder();
    const [query, similar, misspelt, unrelated] = await embedder.embed([
      'Where did Mira hide the silver key?',
      'Mira hid the silver key under the loose floorboard.',
      'Mira hidd the silvr keys under the floor.',
      'The storm wrecked three fishing boats at dawn.',
    ]);
    expect(dot(query!, similar!)).toBeGreaterThan(dot(query!, unrelated!));
    expect(dot(query!, misspelt!)).toBeGreaterThan(dot(query!, unrelated!));
  });

  it('embeds empty or stop-word-only text as a fixed unit vector the vector index accepts', async () => {
    const embedder = createHashingEmbedder({ dimensions: 32 });
    const [empty, stopWords, text] = await embedder.embed(['', 'the and of', 'dragon']);
    expect(norm(empty!)).toBeCloseTo(1, 6);
    expect(Array.from(stopWords!)).toEqual(Array.from(empty!));
    expect(empty!.every(Number.isFinite)).toBe(true);
    expect(dot(empty!, text!)).toBeLessThan(1);
    const index = createMemoryVectorIndex({ dimensions: 32 });
    await index.upsert('story-1', [
      { id: 'empty', values: empty!, metadata: { storyId: 'story-1', type: 'scene', timestamp: 0, sourceId: 'empty' } },
    ]);
    expect(await index.query('story-1', { vector: empty!, topK: 1 })).toHaveLength(1);
  });

  it('encodes its configuration in modelId', () => {
    const base = createHashingEmbedder();
    expect(base.dimensions).toBe(1536);
    expect(createHashingEmbedder({ dimensions: 512 }).modelId).not.toBe(base.modelId);
    expect(createHashingEmbedder({ bigramWeight: 0 }).modelId).not.toBe(base.modelId);
    expect(createHashingEmbedder({ characterNgrams: { min: 2 } }).modelId).not.toBe(base.modelId);
    expect(createHashingEmbedder({ seed: 7 }).modelId).not.toBe(base.modelId);
    expect(createHashingEmbedder().modelId).toBe(base.modelId);
  });

  it('validates its options', () => {
    expect(() => createHashingEmbedder({ dimensions: 0 })).toThrow(ValidationError);
    expect(() => createHashingEmbedder({ dimensions: 1.5 })).toThrow(ValidationError);
    expect(() => createHashingEmbedder({ dimensions: 10_000 })).toThrow(ValidationError);
    expect(() => createHashingEmbedder({ characterNgrams: { min: 5, max: 3 } })).toThrow(ValidationError);
    expect(() => createHashingEmbedder({ wordWeight: 0, bigramWeight: 0, characterNgrams: { weight: 0 } })).toThrow(
      ValidationError,
    );
  });

  it('declares and enforces its batch limit', async () => {
    const embedder = createHashingEmbedder({ dimensions: 16, maxBatchSize: 2 });
    expect(embedder.maxBatchSize).toBe(2);
    await expect(embedder.embed(['a', 'b', 'c'])).rejects.toThrow(ValidationError);
    await expect(embedder.embed(['a', 'b'])).resolves.toHaveLength(2);
  });

  it('honours an aborted signal', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(createHashingEmbedder().embed(['x'], { signal: controller.signal })).rejects.toMatchObject({
      name: 'AbortedError',
    });
  });
});

describe('hashFeature', () => {
  it('is a fixed function of text and seed', () => {
    // Pinned: a change here changes every stored vector, and must come with a new modelId.
    expect(hashFeature('w:dragon', 0)).toBe(3913928255);
    expect(hashFeature('w:dragon', 0)).not.toBe(hashFeature('w:dragon', 1));
    expect(hashFeature('w:dragon', 0)).not.toBe(hashFeature('w:dragoN', 0));
    expect(hashFeature('w:dragon')).toBeGreaterThanOrEqual(0);
    expect(hashFeature('w:dragon')).toBeLessThan(2 ** 32);
  });
});
