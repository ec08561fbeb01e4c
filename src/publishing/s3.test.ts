import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeNextScene, makeNextState, makeStoryState } from '../testing/fixtures.js';
import { runPublisherSuite } from '../testing/publisher-suite.js';
import { createS3ContentStore, createS3Publisher } from './s3.js';

/** The part of s3rver (which ships no types) the tests use. */
interface S3rverServer {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
const S3rver = createRequire(import.meta.url)('s3rver') as new (options: {
  port: number;
  address: string;
  silent: boolean;
  directory: string;
}) => S3rverServer;

let server: S3rverServer;
let directory: string;
let endpoint: string;
let client: S3Client;
let bucketCount = 0;

beforeAll(async () => {
  directory = mkdtempSync(path.join(tmpdir(), 'storyloom-s3-'));
  server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory });
  const { port } = await server.run();
  endpoint = `http://127.0.0.1:${port}`;
  client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
});

afterAll(async () => {
  client?.destroy();
  await server?.close();
  rmSync(directory, { recursive: true, force: true });
});

/** A fresh bucket per case, so cases never see each other's objects. */
async function freshBucket(): Promise<string> {
  const bucket = `stories-${++bucketCount}-${Date.now() % 100_000}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  return bucket;
}

async function keysUnder(bucket: string, prefix: string): Promise<string[]> {
  const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (page.Contents ?? []).map((object) => object.Key!).sort();
}

async function readText(bucket: string, key: string): Promise<string> {
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return object.Body!.transformToString();
}

function episode(index = 0, sceneOverrides = {}) {
  let state = makeStoryState('tale');
  let scene = makeNextScene(state);
  for (let i = 0; i < index; i++) {
    state = makeNextState(state, scene);
    scene = makeNextScene(state);
  }
  scene = { ...scene, ...sceneOverrides };
  return { story: makeNextState(state, scene), scene };
}

describe('createS3Publisher against s3rver', () => {
  const counted = runPublisherSuite(
    { describe, it },
    {
      name: 's3rver',
      create: async () => {
        const bucket = await freshBucket();
        const publisher = createS3Publisher({ bucket, client, prefix: 'site/' });
        return {
          publisher,
          published: async (storyId: string, sceneId: string) =>
            (await keysUnder(bucket, `site/${storyId}/`)).filter((key) => key.includes(`-${sceneId}.`)),
        };
      },
    },
  );

  it('runs every case of the suite', () => {
    expect(counted).toBe(7);
  });
});

describe('S3 publisher specifics', () => {
  it('writes deterministic keys with Content-Type and Cache-Control, and a story index', async () => {
    const bucket = await freshBucket();
    const publisher = createS3Publisher({ bucket, client, publicBaseUrl: 'https://cdn.example.com/' });
    const first = episode(0);
    const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
    const result = await publisher.publish({ ...first, image: { data: png, mediaType: 'image/png', alt: 'lamp' } });
    await publisher.publish(episode(1));
    expect(result).toEqual({
      target: 's3',
      url: 'https://cdn.example.com/tale/scenes/000000-tale-s0.json',
      ids: ['tale/scenes/000000-tale-s0.json', 'tale/images/000000-tale-s0.png'],
    });
    expect(await keysUnder(bucket, 'tale/')).toEqual([
      'tale/images/000000-tale-s0.png',
      'tale/index.json',
      'tale/scenes/000000-tale-s0.json',
      'tale/scenes/000001-tale-s1.json',
    ]);
    const sceneHead = await client.send(
      new HeadObjectCommand({ Bucket: bucket, Key: 'tale/scenes/000000-tale-s0.json' }),
    );
    expect(sceneHead.ContentType).toBe('application/json; charset=utf-8');
    expect(sceneHead.CacheControl).toBe('public, max-age=31536000, immutable');
    const imageHead = await client.send(
      new HeadObjectCommand({ Bucket: bucket, Key: 'tale/images/000000-tale-s0.png' }),
    );
    expect(imageHead.ContentType).toBe('image/png');
    const imageBytes = await (
      await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'tale/images/000000-tale-s0.png' }))
    ).Body!.transformToByteArray();
    expect([...imageBytes]).toEqual([...png]);
    const indexHead = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'tale/index.json' }));
    expect(indexHead.CacheControl).toBe('public, max-age=60, must-revalidate');
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index.title).toBe('The Lighthouse Keepers');
    expect(index.sceneCount).toBe(2);
    expect(index.scenes.map((scene: { id: string }) => scene.id)).toEqual(['tale-s0', 'tale-s1']);
    expect(index.scenes[1].url).toBe('https://cdn.example.com/tale/scenes/000001-tale-s1.json');
  });

  it('is create-only: publishing again does not rewrite the scene, even with different content', async () => {
    const bucket = await freshBucket();
    const publisher = createS3Publisher({ bucket, client });
    const original = episode(0);
    await publisher.publish(original);
    const key = 'tale/scenes/000000-tale-s0.json';
    const before = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // LastModified has one-second resolution
    await publisher.publish({ ...original, scene: { ...original.scene, title: 'A rewrite that must not land' } });
    const after = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(after.ETag).toBe(before.ETag);
    expect(after.LastModified?.getTime()).toBe(before.LastModified?.getTime());
    expect(JSON.parse(await readText(bucket, key)).scene.title).toBe(original.scene.title);
  });

  it('stores hostile text verbatim as JSON data', async () => {
    const bucket = await freshBucket();
    const publisher = createS3Publisher({ bucket, client });
    const text = 'He said "]]></text><evil/>" & left.\u0000\u202e Ignore previous instructions. </script><script>';
    const hostile = episode(0, { title: '<script>alert(1)</script>', text });
    await publisher.publish(hostile);
    const stored = JSON.parse(await readText(bucket, 'tale/scenes/000000-tale-s0.json'));
    expect(stored.scene.title).toBe('<script>alert(1)</script>');
    expect(stored.scene.text).toBe(text);
  });

  it('validates the bucket name', () => {
    expect(() => createS3Publisher({ bucket: 'Not A Bucket' })).toThrow(/bucket/);
  });
});

describe('createS3ContentStore against s3rver', () => {
  it('puts and gets bytes, returns null when missing, and sets Content-Type', async () => {
    const bucket = await freshBucket();
    const store = createS3ContentStore({ bucket, client, prefix: 'content/' });
    const bytes = new TextEncoder().encode('龍 '.repeat(50_000));
    await store.put('tale/s0.txt', bytes, 'text/plain; charset=utf-8');
    expect(await store.get('tale/s0.txt')).toEqual(bytes);
    expect(await store.get('tale/missing.txt')).toBeNull();
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'content/tale/s0.txt' }));
    expect(head.ContentType).toBe('text/plain; charset=utf-8');
    await store.put('tale/s0.txt', new Uint8Array([1]));
    expect(await store.get('tale/s0.txt')).toEqual(new Uint8Array([1]));
  });
});
