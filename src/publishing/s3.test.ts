import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ProviderError, ValidationError } from '../core/errors.js';
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

/**
 * A client that hands every command to the real one, except that the first `PutObject` of `heldKey` waits until
 * `release()`; `reached` resolves once that put is being held.
 */
function clientHoldingFirstPutOf(heldKey: string) {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let reachedResolve!: () => void;
  const reached = new Promise<void>((resolve) => {
    reachedResolve = resolve;
  });
  let held = false;
  const wrapped = {
    async send(command: { constructor: { name: string }; input: { Key?: string } }, options?: unknown) {
      if (!held && command.constructor.name === 'PutObjectCommand' && command.input.Key === heldKey) {
        held = true;
        reachedResolve();
        await gate;
      }
      return client.send(command as never, options as never);
    },
  } as unknown as S3Client;
  return { client: wrapped, reached, release };
}

/** An error as the AWS SDK raises it for an S3 error response. */
function s3Error(name: string, status: number, message = name) {
  return Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
}

/** A connection reset, as Node raises it when a response or its body is cut off. */
function connectionReset() {
  return Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
}

type Command = { constructor: { name: string }; input: Record<string, unknown> };

/**
 * A client with what S3 does and the local server does not: a conditional put is refused with 412 when
 * `IfNoneMatch: '*'` finds an object or `IfMatch` another ETag, and with 404 NoSuchKey when `IfMatch` finds none; a
 * key over 1,024 UTF-8 bytes is refused with KeyTooLongError. `intercept` sees every command first and may answer it
 * (returning a promise) or leave it to S3 (returning undefined); `sent` lists every command.
 */
function withS3Semantics(
  intercept?: (command: Command, forward: () => Promise<unknown>) => Promise<unknown> | undefined,
) {
  const sent: Command[] = [];
  const forward = async (command: Command, options?: unknown) => {
    const { input } = command;
    const key = input.Key as string | undefined;
    if (key !== undefined && Buffer.byteLength(key) > 1024) throw s3Error('KeyTooLongError', 400);
    if (command.constructor.name === 'PutObjectCommand' && (input.IfNoneMatch || input.IfMatch)) {
      let etag: string | undefined;
      try {
        etag = (await client.send(new HeadObjectCommand({ Bucket: input.Bucket as string, Key: key }))).ETag;
      } catch (error) {
        if (!hasStatus(error, 404)) throw error;
      }
      if (input.IfMatch && etag === undefined) throw s3Error('NoSuchKey', 404);
      if (input.IfNoneMatch === '*' ? etag !== undefined : etag !== input.IfMatch) {
        throw s3Error('PreconditionFailed', 412);
      }
    }
    return client.send(command as never, options as never);
  };
  const wrapped = {
    send(command: Command, options?: unknown) {
      sent.push(command);
      return intercept?.(command, () => forward(command, options)) ?? forward(command, options);
    },
  } as unknown as S3Client;
  return { client: wrapped, sent };
}

/** Whether an AWS SDK error carries HTTP `status`. */
function hasStatus(error: unknown, status: number): boolean {
  return (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === status;
}

/** Whether `command` is a `PutObject` of `key`. */
function isPutOf(command: Command, key: string): boolean {
  return command.constructor.name === 'PutObjectCommand' && command.input.Key === key;
}

/** The retry policy without its waits: a retry happens at once. */
const retryAtOnce = { clock: { now: () => 0, sleep: async () => {} } };

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
        const published = async (storyId: string, sceneId: string) =>
          (await keysUnder(bucket, `site/${storyId}/`)).filter((key) => key.includes(`-${sceneId}.`));
        return {
          publisher,
          published,
          read: async (storyId: string, sceneId: string) => {
            const sceneKey = (await published(storyId, sceneId)).find((key) => key.endsWith('.json'));
            return sceneKey ? readText(bucket, sceneKey) : null;
          },
        };
      },
    },
  );

  it('runs every case of the suite', () => {
    expect(counted).toBe(10);
  });
});

describe('S3 publisher specifics', () => {
  it('writes deterministic keys with Content-Type and Cache-Control, and a story index', async () => {
    const bucket = await freshBucket();
    const publisher = createS3Publisher({ bucket, client, publicBaseUrl: 'https://cdn.example.com/' });
    const first = episode(0);
    const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
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

  it('refuses an episode of another story before any request, leaving that story alone', async () => {
    const bucket = await freshBucket();
    const publisher = createS3Publisher({ bucket, client });
    const other = episode(0);
    const otherStory = {
      ...other,
      story: { ...other.story, storyId: 'other' },
      scene: { ...other.scene, storyId: 'other' },
    };
    await publisher.publish(otherStory);
    const before = await readText(bucket, 'other/index.json');
    const mine = episode(2);
    const mixed = { story: mine.story, scene: { ...mine.scene, storyId: 'other' } };
    await expect(publisher.publish(mixed)).rejects.toSatisfy((error) => ValidationError.isInstance(error));
    const escaping = { ...mine, scene: { ...mine.scene, id: 'x/../../other/index' } };
    await expect(publisher.publish(escaping)).rejects.toSatisfy((error) => ValidationError.isInstance(error));
    expect(await readText(bucket, 'other/index.json')).toBe(before);
    expect(await keysUnder(bucket, '')).toEqual(['other/index.json', 'other/scenes/000000-tale-s0.json']);
  });

  it('keeps every scene in the index when two publishes overlap', async () => {
    const bucket = await freshBucket();
    const held = clientHoldingFirstPutOf('tale/index.json');
    const publisher = createS3Publisher({ bucket, client: held.client });
    const slow = publisher.publish(episode(0));
    await held.reached; // scene 0's index, listing scene 0 alone, is about to be written
    await publisher.publish(episode(1));
    held.release();
    await slow;
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index.scenes.map((scene: { id: string }) => scene.id)).toEqual(['tale-s0', 'tale-s1']);
  });

  it('writes the index only if it is still the one read, and reads, lists and writes again when it is not', async () => {
    const bucket = await freshBucket();
    const conditions: Array<{ IfMatch?: string; IfNoneMatch?: string }> = [];
    let competitor: Promise<unknown> | undefined;
    // What S3 does: the first index write of scene 0 finds that scene 1's publish wrote the index since it was read.
    const racing = {
      async send(command: { constructor: { name: string }; input: Record<string, unknown> }, options?: unknown) {
        const { input } = command;
        if (command.constructor.name === 'PutObjectCommand' && input.Key === 'tale/index.json') {
          conditions.push({ IfMatch: input.IfMatch as string, IfNoneMatch: input.IfNoneMatch as string });
          if (!competitor && (input.IfMatch || input.IfNoneMatch)) {
            competitor = createS3Publisher({ bucket, client }).publish(episode(1));
            await competitor;
            throw Object.assign(new Error('At least one of the pre-conditions you specified did not hold'), {
              name: 'PreconditionFailed',
              $metadata: { httpStatusCode: 412 },
            });
          }
        }
        return client.send(command as never, options as never);
      },
    } as unknown as S3Client;
    await createS3Publisher({ bucket, client: racing }).publish(episode(0));
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index.scenes.map((scene: { id: string }) => scene.id)).toEqual(['tale-s0', 'tale-s1']);
    expect(index.version).toBe(episode(1).story.version);
    // The first write was create-only; after the 412 the index read back already listed both, so nothing more.
    expect(conditions).toEqual([{ IfMatch: undefined, IfNoneMatch: '*' }]);
  });

  it('does not roll the index back to an older story when an earlier scene is published again', async () => {
    const bucket = await freshBucket();
    const publisher = createS3Publisher({ bucket, client });
    const newer = {
      ...episode(1),
      story: { ...episode(1).story, bible: { ...episode(1).story.bible, title: 'Renamed' } },
    };
    await publisher.publish(episode(0));
    await publisher.publish(newer);
    await publisher.publish(episode(0)); // a retry of the earlier scene
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index).toMatchObject({ version: newer.story.version, title: 'Renamed', sceneCount: 2 });
  });

  it('does not rewrite an index that a repeated publish would leave the same', async () => {
    const bucket = await freshBucket();
    const publisher = createS3Publisher({ bucket, client });
    await publisher.publish(episode(0));
    const before = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'tale/index.json' }));
    const puts: string[] = [];
    const counting = {
      send(command: { constructor: { name: string }; input: { Key?: string } }, options?: unknown) {
        if (command.constructor.name === 'PutObjectCommand') puts.push(command.input.Key!);
        return client.send(command as never, options as never);
      },
    } as unknown as S3Client;
    await createS3Publisher({ bucket, client: counting }).publish(episode(0));
    expect(puts).toEqual([]);
    const after = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'tale/index.json' }));
    expect(after.ETag).toBe(before.ETag);
  });

  it('validates the bucket name', () => {
    expect(() => createS3Publisher({ bucket: 'Not A Bucket' })).toThrow(/bucket/);
  });

  it('lists a scene whose index has more than six digits in the story index', async () => {
    const bucket = await freshBucket();
    const publisher = createS3Publisher({ bucket, client });
    const first = episode(0);
    await publisher.publish(first);
    const late = await publisher.publish({ ...first, scene: { ...first.scene, id: 'tale-late', index: 1_000_000 } });
    expect(late.ids).toEqual(['tale/scenes/1000000-tale-late.json']);
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index.scenes.map((scene: { id: string; index: number }) => [scene.index, scene.id])).toEqual([
      [0, 'tale-s0'],
      [1_000_000, 'tale-late'],
    ]);
    expect(index.sceneCount).toBe(2);
  });

  it('percent-encodes each segment of a key in public URLs', async () => {
    const bucket = await freshBucket();
    const prefix = 'issue #1 100%/';
    const publisher = createS3Publisher({ bucket, client, prefix, publicBaseUrl: 'https://cdn.example.com' });
    const result = await publisher.publish(episode(0));
    const key = `${prefix}tale/scenes/000000-tale-s0.json`;
    expect(result.ids).toEqual([key]);
    expect(result.url).toBe('https://cdn.example.com/issue%20%231%20100%25/tale/scenes/000000-tale-s0.json');
    expect(decodeURIComponent(new URL(result.url!).pathname)).toBe(`/${key}`);
    const index = JSON.parse(await readText(bucket, `${prefix}tale/index.json`));
    expect(index.scenes[0].url).toBe(result.url);
  });
});

describe('S3 publisher under the answers of S3 itself', () => {
  const sceneKey = 'tale/scenes/000000-tale-s0.json';

  it('publishes a scene whose create-only put S3 answered 409 while a racing run stored it', async () => {
    const bucket = await freshBucket();
    let raced = false;
    const { client: racing } = withS3Semantics((command, forward) => {
      if (raced || !isPutOf(command, sceneKey)) return undefined;
      raced = true;
      // Another run's put of the same scene lands while ours is in flight: S3 answers ours 409, to be retried.
      return forward().then(() => {
        throw s3Error('ConditionalRequestConflict', 409);
      });
    });
    const result = await createS3Publisher({ bucket, client: racing, retry: retryAtOnce }).publish(episode(0));
    expect(result.ids).toEqual([sceneKey]);
    expect(JSON.parse(await readText(bucket, sceneKey)).scene.id).toBe('tale-s0');
  });

  it('leaves a scene another run stored between its check and its put as that run stored it', async () => {
    const bucket = await freshBucket();
    const theirs = `${JSON.stringify({ storyId: 'tale', scene: { id: 'tale-s0', title: 'As the other run wrote it' } })}\n`;
    let raced = false;
    const { client: racing } = withS3Semantics((command, forward) => {
      if (raced || !isPutOf(command, sceneKey)) return undefined;
      raced = true;
      // Our HeadObject found nothing; another run's put of the same scene lands before ours.
      return client.send(new PutObjectCommand({ Bucket: bucket, Key: sceneKey, Body: theirs })).then(forward);
    });
    const result = await createS3Publisher({ bucket, client: racing }).publish(episode(0));
    expect(result.ids).toEqual([sceneKey]);
    // Create-only: the object readers and caches already have is never replaced.
    expect(await readText(bucket, sceneKey)).toBe(theirs);
  });

  it('writes no scene JSON, which would link to a missing picture, when its picture cannot be stored', async () => {
    const bucket = await freshBucket();
    const imageKey = 'tale/images/000000-tale-s0.png';
    const { client: refusing } = withS3Semantics((command) =>
      isPutOf(command, imageKey) ? Promise.reject(s3Error('AccessDenied', 403)) : undefined,
    );
    const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
    const publishing = createS3Publisher({ bucket, client: refusing }).publish({
      ...episode(0),
      image: { data: png, mediaType: 'image/png', alt: 'lamp' },
    });
    await expect(publishing).rejects.toSatisfy((error) => ProviderError.isInstance(error) && error.status === 403);
    expect(await keysUnder(bucket, 'tale/')).toEqual([]);
  });

  it('lists every scene in the story index when S3 answers the listing a page at a time', async () => {
    const bucket = await freshBucket();
    // One key per page, as S3 pages a listing of more than 1,000 keys (the local server pages none).
    const { client: paging } = withS3Semantics((command) => {
      if (command.constructor.name !== 'ListObjectsV2Command') return undefined;
      const { Bucket, Prefix, ContinuationToken } = command.input as {
        Bucket: string;
        Prefix: string;
        ContinuationToken?: string;
      };
      return client.send(new ListObjectsV2Command({ Bucket, Prefix })).then(({ Contents = [] }) => {
        const at = Number(ContinuationToken ?? 0);
        return {
          Contents: Contents.slice(at, at + 1),
          IsTruncated: at + 1 < Contents.length,
          NextContinuationToken: at + 1 < Contents.length ? String(at + 1) : undefined,
        };
      });
    });
    const publisher = createS3Publisher({ bucket, client: paging });
    for (const index of [0, 1, 2]) await publisher.publish(episode(index));
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index.scenes.map((scene: { id: string }) => scene.id)).toEqual(['tale-s0', 'tale-s1', 'tale-s2']);
    expect(index.sceneCount).toBe(3);
  });

  it('publishes a scene whose put was stored but whose answer was lost', async () => {
    const bucket = await freshBucket();
    let dropped = false;
    const { client: flaky } = withS3Semantics((command, forward) => {
      if (dropped || !isPutOf(command, sceneKey)) return undefined;
      dropped = true;
      return forward().then(() => {
        throw connectionReset();
      });
    });
    const result = await createS3Publisher({ bucket, client: flaky, retry: retryAtOnce }).publish(episode(0));
    expect(result.ids).toEqual([sceneKey]);
    expect(JSON.parse(await readText(bucket, 'tale/index.json')).sceneCount).toBe(1);
  });

  it('reads and lists again, instead of repeating the write, when S3 answers an index write 409', async () => {
    const bucket = await freshBucket();
    const conditions: Array<{ IfMatch?: unknown; IfNoneMatch?: unknown }> = [];
    const { client: racing } = withS3Semantics((command) => {
      if (!isPutOf(command, 'tale/index.json')) return undefined;
      conditions.push({ IfMatch: command.input.IfMatch, IfNoneMatch: command.input.IfNoneMatch });
      if (conditions.length > 1) return undefined;
      // Scene 1's publish writes the index while ours is in flight: S3 answers ours 409 ConditionalRequestConflict.
      return createS3Publisher({ bucket, client: withS3Semantics().client })
        .publish(episode(1))
        .then(() => {
          throw s3Error('ConditionalRequestConflict', 409);
        });
    });
    await createS3Publisher({ bucket, client: racing, retry: retryAtOnce }).publish(episode(0));
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index.scenes.map((scene: { id: string }) => scene.id)).toEqual(['tale-s0', 'tale-s1']);
    // Read back after the 409, the index already listed both scenes: nothing more to write.
    expect(conditions).toEqual([{ IfMatch: undefined, IfNoneMatch: '*' }]);
  });

  it('writes the index create-only when S3 answers 404 to a write of an index deleted since it was read', async () => {
    const bucket = await freshBucket();
    await createS3Publisher({ bucket, client }).publish(episode(0));
    const { ETag } = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'tale/index.json' }));
    const conditions: Array<{ IfMatch?: unknown; IfNoneMatch?: unknown }> = [];
    const { client: deleting } = withS3Semantics((command, forward) => {
      if (!isPutOf(command, 'tale/index.json')) return undefined;
      conditions.push({ IfMatch: command.input.IfMatch, IfNoneMatch: command.input.IfNoneMatch });
      if (conditions.length > 1) return undefined;
      return client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'tale/index.json' })).then(forward);
    });
    await createS3Publisher({ bucket, client: deleting }).publish(episode(1));
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index.scenes.map((scene: { id: string }) => scene.id)).toEqual(['tale-s0', 'tale-s1']);
    expect(conditions).toEqual([
      { IfMatch: ETag, IfNoneMatch: undefined },
      { IfMatch: undefined, IfNoneMatch: '*' },
    ]);
  });

  it('reads the story index again when its download breaks half-way', async () => {
    const bucket = await freshBucket();
    await createS3Publisher({ bucket, client }).publish(episode(0));
    let broke = false;
    const { client: breaking } = withS3Semantics((command, forward) => {
      if (broke || command.constructor.name !== 'GetObjectCommand') return undefined;
      broke = true;
      return forward().then((output) => ({
        ...(output as object),
        Body: { transformToString: () => Promise.reject(connectionReset()) },
      }));
    });
    await createS3Publisher({ bucket, client: breaking, retry: retryAtOnce }).publish(episode(1));
    expect(broke).toBe(true);
    const index = JSON.parse(await readText(bucket, 'tale/index.json'));
    expect(index.scenes.map((scene: { id: string }) => scene.id)).toEqual(['tale-s0', 'tale-s1']);
  });
});

describe('S3 puts through the client the adapter builds', () => {
  /** A proxy in front of the local server that notes each request's method, path and headers as they went out. */
  async function notingProxy() {
    const seen: Array<{ method: string; path: string; headers: IncomingHttpHeaders }> = [];
    const { port } = new URL(endpoint);
    const proxy = createServer((incoming, outgoing) => {
      seen.push({ method: incoming.method!, path: incoming.url!, headers: incoming.headers });
      const forwarded = httpRequest(
        { host: '127.0.0.1', port, method: incoming.method, path: incoming.url, headers: incoming.headers },
        (answer) => {
          outgoing.writeHead(answer.statusCode!, answer.headers);
          answer.pipe(outgoing);
        },
      );
      incoming.pipe(forwarded);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    return { url, seen, close: () => new Promise((resolve) => proxy.close(resolve)) };
  }

  it('sends the Content-MD5 of every put, as S3 requires in a bucket with Object Lock, and stores each whole', async () => {
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'S3RVER');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'S3RVER');
    const proxy = await notingProxy();
    try {
      const bucket = await freshBucket();
      const connection = { bucket, endpoint: proxy.url, region: 'us-east-1', forcePathStyle: true };
      const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...Array(70_000).fill(7)]);
      await createS3Publisher(connection).publish({
        ...episode(0),
        image: { data: png, mediaType: 'image/png', alt: 'lamp' },
      });
      const bytes = new TextEncoder().encode('龍 '.repeat(30_000));
      const content = createS3ContentStore({ ...connection, prefix: 'content/' });
      await content.put('tale/s0.txt', bytes);
      const puts = proxy.seen.filter((request) => request.method === 'PUT');
      expect(puts.map((request) => request.path.split('?')[0])).toEqual([
        `/${bucket}/tale/images/000000-tale-s0.png`,
        `/${bucket}/tale/scenes/000000-tale-s0.json`,
        `/${bucket}/tale/index.json`,
        `/${bucket}/content/tale/s0.txt`,
      ]);
      for (const put of puts) {
        expect(put.headers['content-md5'], put.path).toMatch(/^[A-Za-z0-9+/]{22}==$/);
        // Not the newer checksum headers, which several look-alikes refuse, nor an aws-chunked body.
        expect(
          Object.keys(put.headers).filter((name) => name.startsWith('x-amz-checksum')),
          put.path,
        ).toEqual([]);
        expect(put.headers['content-encoding'], put.path).toBeUndefined();
      }
      expect(puts.at(-1)!.headers['content-md5']).toBe(createHash('md5').update(bytes).digest('base64'));
      expect(await content.get('tale/s0.txt')).toEqual(bytes);
      const picture = await client.send(
        new GetObjectCommand({ Bucket: bucket, Key: 'tale/images/000000-tale-s0.png' }),
      );
      expect(await picture.Body!.transformToByteArray()).toEqual(png);
    } finally {
      vi.unstubAllEnvs();
      await proxy.close();
    }
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

  it('refuses, before any request, a key over 1,024 UTF-8 bytes with its prefix, and takes one of exactly that', async () => {
    const bucket = await freshBucket();
    const stored: string[] = [];
    const { client: strict, sent } = withS3Semantics((command) => {
      if (command.constructor.name !== 'PutObjectCommand') return undefined;
      // Answered here: the local server keeps keys as file names, which cannot be this long.
      stored.push(command.input.Key as string);
      return Promise.resolve({});
    });
    const store = createS3ContentStore({ bucket, client: strict, prefix: 'content/' });
    const isValidationError = (error: unknown) => ValidationError.isInstance(error);
    const cjk = '龍'.repeat(400); // 400 characters, 1,200 bytes
    await expect(store.put(cjk, new Uint8Array([1]))).rejects.toSatisfy(isValidationError);
    await expect(store.get(cjk)).rejects.toSatisfy(isValidationError);
    await expect(store.put('k'.repeat(1017), new Uint8Array([1]))).rejects.toThrow(/at most 1016 UTF-8 bytes/);
    const longPrefix = createS3ContentStore({ bucket, client: strict, prefix: `${'p'.repeat(200)}/` });
    await expect(longPrefix.put('k'.repeat(900), new Uint8Array([1]))).rejects.toSatisfy(isValidationError);
    expect(sent).toEqual([]);
    await store.put('k'.repeat(1016), new Uint8Array([1]));
    expect(stored).toEqual([`content/${'k'.repeat(1016)}`]);
  });

  it('refuses a prefix that leaves no room for a key', () => {
    expect(() => createS3ContentStore({ bucket: 'stories', prefix: '龍'.repeat(342) })).toThrow(/options\.prefix/);
    expect(() => createS3ContentStore({ bucket: 'stories', prefix: 'p'.repeat(1023) })).not.toThrow();
  });

  it('gets again a body whose download breaks half-way', async () => {
    const bucket = await freshBucket();
    const text = 'The lamp turned. '.repeat(30_000);
    await createS3ContentStore({ bucket, client }).put('tale/big.txt', new TextEncoder().encode(text));
    let broke = false;
    const { client: breaking } = withS3Semantics((command, forward) => {
      if (broke || command.constructor.name !== 'GetObjectCommand') return undefined;
      broke = true;
      return forward().then((output) => ({
        ...(output as object),
        Body: { transformToByteArray: () => Promise.reject(connectionReset()) },
      }));
    });
    const store = createS3ContentStore({ bucket, client: breaking, retry: retryAtOnce });
    // Compared as text: a deep equality of half a megabyte of bytes takes seconds.
    expect(new TextDecoder().decode((await store.get('tale/big.txt')) ?? undefined)).toBe(text);
    expect(broke).toBe(true);
  });

  it('returns null for a key found missing on a retry', async () => {
    const bucket = await freshBucket();
    let failed = false;
    const { client: flaky } = withS3Semantics((command) => {
      if (failed || command.constructor.name !== 'GetObjectCommand') return undefined;
      failed = true;
      return Promise.reject(s3Error('InternalError', 500));
    });
    const store = createS3ContentStore({ bucket, client: flaky, retry: retryAtOnce });
    expect(await store.get('tale/missing.txt')).toBeNull();
    expect(failed).toBe(true);
  });

  it('throws, instead of reporting the key missing, when the bucket does not exist', async () => {
    const store = createS3ContentStore({ bucket: 'no-such-bucket-anywhere', client });
    await expect(store.get('tale/s0.txt')).rejects.toSatisfy(
      (error) => ProviderError.isInstance(error) && error.status === 404,
    );
  });
});

describe('S3 content store with a client that ignores the attempt signal', () => {
  it('closes, unread, a body that arrives after its attempt timed out, and gets the object again', async () => {
    let lateReads = 0;
    const late = Object.assign(new Readable({ read() {} }), {
      transformToByteArray: async () => {
        lateReads++;
        return new Uint8Array([0]);
      },
    });
    const fresh = new Uint8Array([1, 2, 3]);
    let answerLate!: (output: unknown) => void;
    let calls = 0;
    const ignoring = {
      send() {
        calls++;
        if (calls === 1) {
          return new Promise((resolve) => {
            answerLate = resolve;
          });
        }
        // Only a timed-out first attempt is retried: its answer arrives now, after the attempt ended.
        answerLate({ Body: late });
        return Promise.resolve({ Body: { transformToByteArray: async () => fresh } });
      },
    } as unknown as S3Client;
    const store = createS3ContentStore({ bucket: 'stories', client: ignoring, timeoutMs: 1, retry: retryAtOnce });
    expect(await store.get('tale/s0.txt')).toEqual(fresh);
    // The abandoned attempt's continuation has run by now.
    await new Promise((resolve) => setImmediate(resolve));
    expect(calls).toBe(2);
    expect(lateReads).toBe(0);
    expect(late.destroyed).toBe(true);
  });
});
