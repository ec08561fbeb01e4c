/**
 * S3 publishing and content storage, on `@aws-sdk/client-s3`: an idempotent `Publisher` that writes each scene's
 * JSON and picture once under deterministic keys plus a story index, and a `ContentStore` for large scene text.
 *
 * The SDK is imported on first use, so a missing package surfaces as a `MissingDependencyError` that says what to
 * install instead of a module-resolution crash at import time.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { attemptWithin, timeoutProblems } from '../core/abort.js';
import {
  ConflictError,
  MissingDependencyError,
  ProviderError,
  RetryError,
  StoryloomError,
  throwIfAborted,
  ValidationError,
} from '../core/errors.js';
import { type RetryOptions, withRetry } from '../core/retry.js';
import type { ContentStore } from '../state/content-store.js';
import type { StoryState } from '../state/schema.js';
import { EPISODE_IMAGE_TYPES, type Publisher, type PublishResult, validateEpisode } from './publisher.js';

type S3Module = typeof import('@aws-sdk/client-s3');
let sdkLoading: Promise<S3Module> | undefined;

function loadS3(): Promise<S3Module> {
  sdkLoading ??= import('@aws-sdk/client-s3').catch((error: unknown) => {
    sdkLoading = undefined;
    throw new MissingDependencyError('@aws-sdk/client-s3', 'storyloom/s3', { cause: error });
  });
  return sdkLoading;
}

/**
 * The `Content-MD5` every put carries: S3 refuses a put without it or an `x-amz-checksum-*` header in a bucket with
 * Object Lock, a default retention included, and the client here asks for checksums only where named
 * (`requestChecksumCalculation: 'WHEN_REQUIRED'`). MD5 rather than the SDK's CRC32, because S3 look-alikes take it
 * where several refuse the newer header (Backblaze B2, OVH); it is always a header, never an aws-chunked trailer.
 */
function contentMd5(body: Uint8Array | string): string {
  return createHash('md5').update(body).digest('base64');
}

/** Where the S3 client comes from: one you built, or settings to build one. */
export interface S3ConnectionOptions {
  /** A client you built. Set `requestChecksumCalculation: 'WHEN_REQUIRED'` on it when talking to an S3 look-alike. */
  client?: S3Client;
  /** Region of the bucket. Default the SDK's (`AWS_REGION`). */
  region?: string;
  /** Another endpoint (MinIO, s3rver, LocalStack). */
  endpoint?: string;
  /** Path-style URLs (`endpoint/bucket/key`), which most look-alikes need. */
  forcePathStyle?: boolean;
  /** The retry policy of every call (throttling, 5xx and timeouts are retried). */
  retry?: Omit<RetryOptions, 'signal'>;
  /**
   * How long one attempt of one S3 call may go without progress, in ms; measured in real time, not on `retry.clock`.
   * It bounds the wait for the response headers (an upload included), then each pause in the download of a body,
   * so a body of many megabytes that keeps arriving is never cut off, while a peer that accepts the connection and
   * never answers, or stalls half-way through a body, is. The attempt is then cancelled and fails with a retryable
   * `ProviderError` of code `TIMEOUT`, which `retry` tries again. Default 30,000: S3 answers in well under a second,
   * and the margin covers uploading a body of several megabytes. It holds whether or not the caller passes a signal,
   * and for a `client` you built too (its handler is given the signal; the wait ends even if it ignores it). A client
   * built here also gets `requestHandler: { connectionTimeout: 3_000, socketTimeout: timeoutMs }`; give one you build
   * the same, since the AWS SDK's handler sets no timeout by default.
   *
   * @example
   * ```ts
   * import { createS3ContentStore } from 'storyloom/s3';
   * const content = createS3ContentStore({ bucket: 'my-stories', timeoutMs: 10_000 });
   * ```
   */
  timeoutMs?: number;
}

/**
 * Options of `createS3Publisher`.
 *
 * @example
 * ```ts
 * import { createS3Publisher, type S3PublisherOptions } from 'storyloom/s3';
 * const options: S3PublisherOptions = { bucket: 'my-stories', prefix: 'site/', publicBaseUrl: 'https://cdn.example.com' };
 * const publisher = createS3Publisher(options);
 * ```
 */
export interface S3PublisherOptions extends S3ConnectionOptions {
  bucket: string;
  /** Prepended to every key, e.g. `site/`. Default none. */
  prefix?: string;
  /** Base of public URLs (a CloudFront domain); without it results carry `s3://bucket/key`. */
  publicBaseUrl?: string;
  /** `Cache-Control` of scenes and images (never rewritten) and of the story index (rewritten on every publish). */
  cacheControl?: { immutable?: string; index?: string };
  /** The publication log's name for this publisher. Default `s3`. */
  target?: string;
}

const DEFAULT_CACHE_CONTROL = {
  immutable: 'public, max-age=31536000, immutable',
  index: 'public, max-age=60, must-revalidate',
};

const JSON_TYPE = 'application/json; charset=utf-8';

/** The longest key S3 takes, in UTF-8 bytes, prefix included. */
const MAX_KEY_BYTES = 1024;

/** Statuses that answer a conditional request rather than fail it: never hidden in a `RetryError`. */
const CONDITIONAL_ANSWERS: readonly number[] = [304, 412];

/**
 * Default of `timeoutMs`: S3 answers in milliseconds, so 30 s without progress means a peer that will never answer,
 * while leaving room to upload a body of several megabytes.
 */
const DEFAULT_TIMEOUT_MS = 30_000;

/** How long the client built here waits for a TCP connection: a healthy endpoint accepts in milliseconds. */
const CONNECTION_TIMEOUT_MS = 3_000;

/** How many times a publish reads, lists and writes the story index before it gives up to a retry of the whole step. */
const INDEX_ATTEMPTS = 10;

/** The part of a stored story index that a publish of an older story state keeps. */
const StoredIndexSchema = z.object({
  storyId: z.string(),
  title: z.string(),
  premise: z.string(),
  version: z.number(),
  updatedAt: z.string(),
});

/** The keys a scene is published under, without the prefix (a picture of a type publishers do not accept: `.bin`). */
export function s3SceneKeys(storyId: string, sceneIndex: number, sceneId: string, imageMediaType?: string) {
  const slug = `${String(sceneIndex).padStart(6, '0')}-${sceneId}`;
  const extension =
    imageMediaType === undefined
      ? undefined
      : Object.hasOwn(EPISODE_IMAGE_TYPES, imageMediaType)
        ? EPISODE_IMAGE_TYPES[imageMediaType as keyof typeof EPISODE_IMAGE_TYPES]
        : 'bin';
  return {
    scene: `${storyId}/scenes/${slug}.json`,
    image: extension === undefined ? undefined : `${storyId}/images/${slug}.${extension}`,
    index: `${storyId}/index.json`,
  };
}

/** What one call of `send` adds to the request itself. */
interface CallOptions<Output, Result> {
  /**
   * Reads the response (its body stream) inside the retried attempt, so a connection lost or stalled mid-body is
   * retried too.
   */
  read?: (output: Output) => Promise<Result>;
  /** More statuses that answer this call (besides 304 and 412): never retried, thrown as the bare `ProviderError`. */
  answers?: readonly number[];
}

/** A lazily created client with retried, typed calls. */
function connection(options: S3ConnectionOptions) {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let clientLoading: Promise<{ sdk: S3Module; client: S3Client }> | undefined;
  const connect = () => {
    clientLoading ??= loadS3().then((sdk) => {
      const config: S3ClientConfig = {
        ...(options.region ? { region: options.region } : {}),
        ...(options.endpoint ? { endpoint: options.endpoint } : {}),
        ...(options.forcePathStyle ? { forcePathStyle: true } : {}),
        // Checksums only where asked for: look-alikes store streamed (aws-chunked), checksummed bodies corrupted.
        // Every put carries its Content-MD5 (`contentMd5`).
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        // One retry policy: storyloom's.
        maxAttempts: 1,
        // The SDK's handler has no timeout by default: these close a socket that never connects or goes quiet.
        requestHandler: { connectionTimeout: Math.min(CONNECTION_TIMEOUT_MS, timeoutMs), socketTimeout: timeoutMs },
      };
      return { sdk, client: options.client ?? new sdk.S3Client(config) };
    });
    return clientLoading;
  };
  const shouldRetry = options.retry?.shouldRetry ?? isRetryable;
  const send = async <Output, Result = Output>(
    operation: string,
    signal: AbortSignal | undefined,
    build: (sdk: S3Module) => unknown,
    call: CallOptions<Output, Result> = {},
  ): Promise<Result> => {
    const answers = [...CONDITIONAL_ANSWERS, ...(call.answers ?? [])];
    const isAnswer = (error: unknown): error is ProviderError =>
      ProviderError.isInstance(error) && error.status !== undefined && answers.includes(error.status);
    /**
     * One attempt, bounded by `timeoutMs` without progress (`attemptWithin`): the wait for the answer, then for the
     * body, ends then even if the handler ignores the attempt's signal.
     */
    const attempt = async (): Promise<Result> => {
      const { sdk, client } = await connect();
      throwIfAborted(signal);
      return attemptWithin(
        async (attemptSignal, progress) => {
          const output = (await client.send(build(sdk) as never, { abortSignal: attemptSignal })) as Output;
          const stream = (output as { Body?: unknown } | undefined)?.Body as
            | {
                on?: (event: 'data', listener: () => void) => void;
                destroy?: (error?: Error) => void;
                readableFlowing?: boolean | null;
              }
            | undefined;
          // An answer that comes after the attempt ended (from a handler that ignores its signal) has no reader: the
          // attempt has already failed, and a retry of it downloads the body again, so this one is closed unread.
          // Closed without an error: a stream destroyed with one emits it, and nothing listens to an unread body.
          if (attemptSignal.aborted) {
            stream?.destroy?.();
            throw attemptSignal.reason;
          }
          if (!call.read) return output as unknown as Result;
          const reading = call.read(output);
          // Each chunk of the body is progress: a large download that keeps arriving is not cut off. Only a Node
          // stream that `read` already set flowing is watched, so the watcher takes no chunk from it.
          if (typeof stream?.on === 'function' && stream.readableFlowing === true) {
            stream.on('data', progress);
            // A body already handed over is no longer the handler's to close: the time limit closes it.
            attemptSignal.addEventListener(
              'abort',
              () => {
                if (!signal?.aborted) stream.destroy?.(attemptSignal.reason);
              },
              { once: true },
            );
          }
          return reading;
        },
        {
          timeoutMs,
          signal,
          provider: 's3',
          timeoutMessage: `S3 ${operation} made no progress for ${timeoutMs} ms`,
          failed: (error) => toProviderError(operation, error),
        },
      );
    };
    try {
      return await withRetry(attempt, {
        ...options.retry,
        signal,
        shouldRetry: (error, attempt) => !isAnswer(error) && shouldRetry(error, attempt),
      });
    } catch (error) {
      // A conditional put retried (after a lost response, or a 409) may meet a 412 from the very write it made or
      // raced: that is the answer the caller waits for, not a fault to hide in a RetryError.
      const last = RetryError.isInstance(error) ? error.errors.at(-1) : error;
      if (isAnswer(last)) throw last;
      throw error;
    }
  };
  return { send };
}

/** `withRetry`'s own rule, for when the options name none. */
function isRetryable(error: unknown): boolean {
  return StoryloomError.isInstance(error) && error.isRetryable;
}

/** Whether `error` is a 404 about the key, not the bucket (`NoSuchKey`, or `NotFound` from a bodiless HEAD). */
function isMissingKey(error: unknown): boolean {
  return (
    ProviderError.isInstance(error) &&
    error.status === 404 &&
    (error.cause as { name?: unknown } | undefined)?.name !== 'NoSuchBucket'
  );
}

/** A key as a URL path: each segment percent-encoded, so `#`, `?`, `%` and spaces in a prefix stay part of the path. */
function urlPath(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

/** Maps an AWS SDK error to a `ProviderError` with its HTTP status (throttling and 5xx retryable). */
function toProviderError(operation: string, error: unknown): StoryloomError {
  if (StoryloomError.isInstance(error)) return error;
  const failure = error as {
    name?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
    $retryable?: unknown;
  };
  const status = failure.$metadata?.httpStatusCode;
  const throttled = failure.$retryable !== undefined || /Throttl|SlowDown|RequestTimeout/.test(failure.name ?? '');
  return new ProviderError(`S3 ${operation} failed: ${failure.name ?? 'Error'}: ${failure.message ?? String(error)}`, {
    provider: 's3',
    status,
    cause: error,
    // The SDK handler's own connection and socket timeouts, when a client sets them.
    ...(failure.name === 'TimeoutError' ? { code: 'TIMEOUT' } : {}),
    ...(throttled ? { isRetryable: true } : status === undefined ? { isRetryable: true } : {}),
  });
}

/**
 * Creates an idempotent S3 `Publisher`.
 *
 * Each scene is written once, under keys that depend only on the story, the scene index and the scene id:
 * `<prefix><storyId>/scenes/<index, at least 6 digits>-<sceneId>.json` and, with a picture, `…/images/<same>.<ext>`.
 * Those writes are create-only: a `HeadObject` first (some S3 look-alikes ignore conditional puts) and then `PutObject`
 * with `IfNoneMatch: '*'`, where a 412 means another run got there first, which is success, even when it comes to a
 * retry of the put. The story index `<prefix><storyId>/index.json` is rewritten by every publish that changes it, from
 * the scenes present in the bucket, and never rolls back to an older story state than the one it shows (a retried
 * publish of an earlier scene keeps the newer title and version). Its write is conditional on the index read before the
 * listing (`IfMatch` on its ETag, `IfNoneMatch: '*'` for the first), and a refused write (412, 409 for a write of it in
 * flight, or 404 when it was deleted since) is read, listed and tried again, so publishes that overlap never drop each
 * other's scenes; after a write the scenes are listed once more and the index rewritten while the listing moved on,
 * which keeps every scene listed even on a look-alike that ignores conditional writes (s3rver); there, overlapping
 * publishes may still leave the older of two story versions. Needs `s3:ListBucket` (S3 answers a missing key with 403
 * without it). The episode is checked first (`validateEpisode`: ids, the scene's story, the picture's type and SVG
 * safety), so no key is built from an unchecked id. Scene JSON is data: hostile text is stored verbatim, for the site
 * to escape where it renders it. Public URLs are `publicBaseUrl` and the key with each path segment percent-encoded.
 *
 * @example
 * ```ts
 * import { createS3Publisher } from 'storyloom/s3';
 *
 * const publisher = createS3Publisher({ bucket: 'my-stories', region: 'us-east-1', publicBaseUrl: 'https://cdn.example.com' });
 * const result = await publisher.publish(episode); // { target: 's3', url: 'https://cdn.example.com/…', ids: [...] }
 * ```
 */
export function createS3Publisher(options: S3PublisherOptions): Publisher {
  checkOptions(options);
  const prefix = options.prefix ?? '';
  const cacheControl = { ...DEFAULT_CACHE_CONTROL, ...options.cacheControl };
  const target = options.target ?? 's3';
  const publicBaseUrl = options.publicBaseUrl?.replace(/\/+$/, '');
  const { send } = connection(options);
  const urlOf = (key: string) => (publicBaseUrl ? `${publicBaseUrl}/${urlPath(key)}` : `s3://${options.bucket}/${key}`);

  /** One `PutObject` of `body` under `key`, with its type, its caching and a write condition; returns its ETag. */
  const put = async (
    key: string,
    body: Uint8Array | string,
    contentType: string,
    caching: string,
    condition: { IfMatch?: string; IfNoneMatch?: string },
    signal: AbortSignal | undefined,
    answers: readonly number[] = [],
  ): Promise<string | undefined> => {
    // Once, not in `build`, which each attempt calls again.
    const md5 = contentMd5(body);
    const written = await send<{ ETag?: string }>(
      'PutObject',
      signal,
      (sdk) =>
        new sdk.PutObjectCommand({
          Bucket: options.bucket,
          Key: key,
          Body: body,
          ContentType: contentType,
          CacheControl: caching,
          ContentMD5: md5,
          ...condition,
        }),
      { answers },
    );
    return written.ETag;
  };

  /** Writes `body` under `key` unless something is there already. */
  const putOnce = async (
    key: string,
    body: Uint8Array | string,
    contentType: string,
    signal: AbortSignal | undefined,
  ): Promise<void> => {
    try {
      await send('HeadObject', signal, (sdk) => new sdk.HeadObjectCommand({ Bucket: options.bucket, Key: key }), {
        answers: [404],
      });
      return;
    } catch (error) {
      if (!isMissingKey(error)) throw error;
    }
    try {
      await put(key, body, contentType, cacheControl.immutable, { IfNoneMatch: '*' }, signal);
    } catch (error) {
      // 412: created by another run between our check and our put, or by this put when its answer was lost or a 409
      // (a concurrent conditional put in flight) had it retried.
      if (ProviderError.isInstance(error) && error.status === 412) return;
      throw error;
    }
  };

  /** The scenes of a story present in the bucket, in story order. */
  const listScenes = async (storyId: string, signal: AbortSignal | undefined) => {
    const scenesPrefix = `${prefix}${storyId}/scenes/`;
    const scenes: Array<{ index: number; id: string; key: string; url: string }> = [];
    let continuationToken: string | undefined;
    do {
      const page = await send<{ Contents?: Array<{ Key?: string }>; NextContinuationToken?: string }>(
        'ListObjectsV2',
        signal,
        (sdk) =>
          new sdk.ListObjectsV2Command({
            Bucket: options.bucket,
            Prefix: scenesPrefix,
            ContinuationToken: continuationToken,
          }),
      );
      for (const { Key } of page.Contents ?? []) {
        // Six digits at least: a scene index from 1,000,000 on simply has more.
        const match = Key ? /^(\d{6,})-(.+)\.json$/.exec(Key.slice(scenesPrefix.length)) : null;
        if (match && Key) scenes.push({ index: Number(match[1]), id: match[2]!, key: Key, url: urlOf(Key) });
      }
      continuationToken = page.NextContinuationToken;
    } while (continuationToken);
    return scenes.sort((a, b) => a.index - b.index || (a.id < b.id ? -1 : 1));
  };

  /** The story index as stored (its ETag, its text and what a publish keeps of it), or undefined when there is none. */
  const readIndex = async (key: string, storyId: string, signal: AbortSignal | undefined) => {
    try {
      const { etag, text } = await send(
        'GetObject',
        signal,
        (sdk) => new sdk.GetObjectCommand({ Bucket: options.bucket, Key: key }),
        {
          read: async (object: { ETag?: string; Body?: { transformToString(): Promise<string> } }) => ({
            etag: object.ETag,
            text: (await object.Body?.transformToString()) ?? '',
          }),
          answers: [404],
        },
      );
      let stored: z.infer<typeof StoredIndexSchema> | undefined;
      try {
        const parsed = StoredIndexSchema.safeParse(JSON.parse(text));
        if (parsed.success && parsed.data.storyId === storyId) stored = parsed.data;
      } catch {
        // Not JSON: rewritten from this publish's story.
      }
      return { etag, text, stored };
    } catch (error) {
      if (isMissingKey(error)) return undefined;
      throw error;
    }
  };

  const writeIndex = async (story: StoryState, signal: AbortSignal | undefined): Promise<void> => {
    const { storyId } = story;
    const key = `${prefix}${s3SceneKeys(storyId, 0, 'x').index}`;
    let seen = await readIndex(key, storyId, signal);
    for (let attempt = 1; ; attempt++) {
      throwIfAborted(signal);
      const scenes = await listScenes(storyId, signal);
      // A retried publish of an earlier scene keeps the newer story the index already shows.
      const newer = seen?.stored && seen.stored.version > story.version ? seen.stored : undefined;
      const index = {
        storyId,
        title: newer ? newer.title : story.bible.title,
        premise: newer ? newer.premise : story.bible.premise,
        version: newer ? newer.version : story.version,
        updatedAt: newer ? newer.updatedAt : story.updatedAt,
        sceneCount: scenes.length,
        scenes,
      };
      const body = `${JSON.stringify(index, null, 2)}\n`;
      // Unchanged since it was read or written (after a write: no scene arrived since the listing), so it is done.
      if (body === seen?.text) return;
      if (attempt > INDEX_ATTEMPTS) {
        throw new ConflictError(`S3 story index ${key} kept changing under ${INDEX_ATTEMPTS} writes; publish again`);
      }
      const condition = seen === undefined ? { IfNoneMatch: '*' } : seen.etag ? { IfMatch: seen.etag } : {};
      try {
        // A 409 comes straight back to this loop: retried with the same condition, it could only meet a 412.
        const etag = await put(key, body, JSON_TYPE, cacheControl.index, condition, signal, [404, 409]);
        seen = { etag, text: body, stored: index };
      } catch (error) {
        // 412: written by another publish since it was read; 409: a conditional write of it is in flight; 404 (to
        // `IfMatch`): deleted since it was read, so the next write is create-only.
        const refused =
          ProviderError.isInstance(error) && (error.status === 412 || error.status === 409 || isMissingKey(error));
        if (!refused) throw error;
        seen = await readIndex(key, storyId, signal);
      }
    }
  };

  return {
    specificationVersion: 'v1',
    provider: 's3',
    target,
    capabilities: { idempotent: true },

    async publish(episode, publishOptions): Promise<PublishResult> {
      const signal = publishOptions?.signal;
      throwIfAborted(signal);
      const { scene, story, image } = validateEpisode(episode);
      const keys = s3SceneKeys(scene.storyId, scene.index, scene.id, image?.mediaType);
      const sceneKey = prefix + keys.scene;
      const imageKey = keys.image === undefined ? undefined : prefix + keys.image;
      // The picture first: once the scene JSON exists, readers may follow its link to the picture.
      if (image && imageKey) await putOnce(imageKey, image.data, image.mediaType, signal);
      throwIfAborted(signal);
      const document = {
        storyId: scene.storyId,
        scene,
        image:
          image && imageKey
            ? { key: imageKey, url: urlOf(imageKey), alt: image.alt, mediaType: image.mediaType }
            : null,
      };
      await putOnce(sceneKey, `${JSON.stringify(document, null, 2)}\n`, JSON_TYPE, signal);
      throwIfAborted(signal);
      await writeIndex(story, signal);
      return { target, url: urlOf(sceneKey), ids: imageKey ? [sceneKey, imageKey] : [sceneKey] };
    },
  };
}

/** Options of `createS3ContentStore`. */
export interface S3ContentStoreOptions extends S3ConnectionOptions {
  bucket: string;
  /** Prepended to every key, e.g. `content/`; counts towards S3's 1,024-byte key limit. Default none. */
  prefix?: string;
}

/** A `ContentStore` on S3; `put` also takes the object's Content-Type. */
export interface S3ContentStore extends ContentStore {
  put(key: string, bytes: Uint8Array, contentType?: string): Promise<void>;
}

/**
 * Creates a `ContentStore` on S3: large scene text and other blobs kept outside the state store's item limits.
 * `put` replaces what was under the key; `get` returns null for a missing key and throws for a missing bucket. A key
 * is refused with a `ValidationError`, before any request, when it is empty or when the prefix and the key together
 * exceed S3's 1,024 UTF-8 bytes. `get` reads the whole body inside the retry policy, so a download broken half-way
 * is retried. Needs `s3:GetObject`, `s3:PutObject` and `s3:ListBucket`: without the last, S3 answers a missing key
 * with 403, not 404, and `get` throws that `ProviderError` instead of returning null.
 *
 * @example
 * ```ts
 * import { createS3ContentStore } from 'storyloom/s3';
 *
 * const content = createS3ContentStore({ bucket: 'my-stories', prefix: 'content/' });
 * await content.put('lighthouse/scene-12.txt', new TextEncoder().encode('The lamp turned.'), 'text/plain; charset=utf-8');
 * const bytes = await content.get('lighthouse/scene-12.txt');
 * ```
 */
export function createS3ContentStore(options: S3ContentStoreOptions): S3ContentStore {
  checkOptions(options);
  const prefix = options.prefix ?? '';
  const { send } = connection(options);
  const maxKeyBytes = MAX_KEY_BYTES - Buffer.byteLength(prefix);
  const checkKey = (key: unknown): string => {
    if (typeof key !== 'string' || key.length === 0 || Buffer.byteLength(key) > maxKeyBytes) {
      const message = `must be a non-empty string of at most ${maxKeyBytes} UTF-8 bytes (S3's 1,024 less the prefix)`;
      throw new ValidationError(`key ${message}`, { problems: [{ path: 'key', message }] });
    }
    return prefix + key;
  };
  return {
    async put(key, bytes, contentType = 'application/octet-stream') {
      const fullKey = checkKey(key);
      if (!(bytes instanceof Uint8Array)) {
        throw new ValidationError('bytes must be a Uint8Array', {
          problems: [{ path: 'bytes', message: 'must be a Uint8Array' }],
        });
      }
      const md5 = contentMd5(bytes);
      await send(
        'PutObject',
        undefined,
        (sdk) =>
          new sdk.PutObjectCommand({
            Bucket: options.bucket,
            Key: fullKey,
            Body: bytes,
            ContentType: contentType,
            ContentMD5: md5,
          }),
      );
    },
    async get(key) {
      const fullKey = checkKey(key);
      try {
        return await send(
          'GetObject',
          undefined,
          (sdk) => new sdk.GetObjectCommand({ Bucket: options.bucket, Key: fullKey }),
          {
            read: async (object: { Body?: { transformToByteArray(): Promise<Uint8Array> } }) =>
              object.Body ? await object.Body.transformToByteArray() : new Uint8Array(0),
            answers: [404],
          },
        );
      } catch (error) {
        // Only the key may be missing: a 404 for the bucket (NoSuchBucket) is a fault, not an empty store.
        if (isMissingKey(error)) return null;
        throw error;
      }
    },
  };
}

function checkOptions(options: { bucket?: unknown; prefix?: unknown; timeoutMs?: unknown }): void {
  const problems: Array<{ path: string; message: string }> = [];
  if (typeof options?.bucket !== 'string' || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(options.bucket)) {
    problems.push({
      path: 'options.bucket',
      message: 'must be an S3 bucket name (3-63 lowercase letters, digits, . and -)',
    });
  }
  if (options?.prefix !== undefined && typeof options.prefix !== 'string') {
    problems.push({ path: 'options.prefix', message: 'must be a string' });
  } else if (typeof options?.prefix === 'string' && Buffer.byteLength(options.prefix) >= MAX_KEY_BYTES) {
    problems.push({ path: 'options.prefix', message: `must be under S3's ${MAX_KEY_BYTES}-byte key limit in UTF-8` });
  }
  problems.push(...timeoutProblems(options?.timeoutMs, 'options.timeoutMs'));
  if (problems.length > 0) {
    throw new ValidationError(`Invalid S3 options: ${problems[0]!.path}: ${problems[0]!.message}`, { problems });
  }
}
