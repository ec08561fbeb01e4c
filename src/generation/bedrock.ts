/**
 * Amazon Bedrock adapters: text embeddings (Titan Text Embeddings G1 and V2, Cohere Embed v4) implementing the
 * `Embedder` port, and Stability image models (SD3.5 Large, Stable Image Core, Stable Image Ultra) implementing the
 * `ImageGenerator` port; and Claude on Bedrock as a `SceneGenerator`.
 *
 * `@aws-sdk/client-bedrock-runtime` (embeddings, images) and `@anthropic-ai/bedrock-sdk` (Claude) are optional peer
 * dependencies, loaded on the first call; when one is missing that call fails with a `MissingDependencyError` that
 * names the package to install.
 *
 * Every `InvokeModel` call goes through storyloom's one retry policy (`withRetry`): throttling
 * (`ThrottlingException`, `ModelNotReadyException`, 429), timeouts and server errors (`ServiceUnavailableException`,
 * `InternalServerException`, `ModelTimeoutException`, `ModelErrorException` (424, "Try your request again"), 5xx)
 * are retried with backoff; a refused request (`ValidationException`, `AccessDeniedException`,
 * `ResourceNotFoundException`, `ServiceQuotaExceededException`) is not. Errors carry the service's request id
 * (`x-amzn-RequestId`) in their message. The SDK client this module
 * builds makes one attempt per call (`maxAttempts: 1`), so retries are not multiplied. Each attempt is bounded by
 * `timeoutMs` (default 60 s): an attempt with no answer by then is cancelled and is a retryable `ProviderError` with
 * code `TIMEOUT`. Aborts are honoured: the signal is passed to the SDK and to the retry loop, and the caller's abort
 * is an `AbortedError`, never a timeout.
 *
 * @module
 */
import type {
  BedrockRuntimeClient,
  BedrockRuntimeClientConfig,
  InvokeModelCommandOutput,
} from '@aws-sdk/client-bedrock-runtime';
import type { Embedder, EmbeddingInputType } from '../context/embedder.js';
import { attemptWithin, timeoutProblems } from '../core/abort.js';
import { systemClock } from '../core/clock.js';
import { mapWithConcurrency } from '../core/concurrency.js';
import {
  AbortedError,
  ContentFilteredError,
  MissingDependencyError,
  ProviderError,
  StoryloomError,
  throwIfAborted,
  ValidationError,
  type ValidationProblem,
} from '../core/errors.js';
import { parseRetryAfter, type RetryOptions, withRetry } from '../core/retry.js';
import { clipText, ellipsize } from '../core/text.js';
import {
  type ClaudeClient,
  type ClaudeSceneGeneratorOptions,
  createClaudeSceneGenerator,
} from './claude-scene-generator.js';
import type { GeneratedImage, ImageGenerator, ImageRequest } from './image-generator.js';
import { composeImagePrompt, MAX_IMAGE_PROMPT_LENGTH, MAX_IMAGE_SEED } from './image-prompt.js';
import { lazyClaudeClient } from './lazy-claude-client.js';
import type { SceneGenerator } from './scene-generator.js';

const SDK_PACKAGE = '@aws-sdk/client-bedrock-runtime';
const PROVIDER = 'amazon-bedrock';

type BedrockSdk = typeof import('@aws-sdk/client-bedrock-runtime');

let sdkPromise: Promise<BedrockSdk> | undefined;

/** Loads the optional SDK once; a missing package becomes a `MissingDependencyError` naming it. */
function loadBedrockSdk(feature: string): Promise<BedrockSdk> {
  sdkPromise ??= import('@aws-sdk/client-bedrock-runtime').catch((error: unknown) => {
    sdkPromise = undefined;
    const code = (error as { code?: unknown } | null)?.code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new MissingDependencyError(SDK_PACKAGE, feature, { cause: error });
    }
    throw error;
  });
  return sdkPromise;
}

/** How to reach Bedrock: an injected client, or the settings to build one. Shared by every factory here. */
export interface BedrockConnectionOptions {
  /**
   * A ready client. Build it with `maxAttempts: 1` so storyloom's retry policy is the only one. When absent, a
   * client is built from `region` and `clientConfig`.
   */
  client?: BedrockRuntimeClient;
  /** AWS region, e.g. `us-east-1`. Default: the SDK's own resolution (`AWS_REGION`, profile, ...). */
  region?: string;
  /**
   * Extra settings for the client this module builds (`endpoint`, `credentials`, `requestHandler`, ...).
   * `maxAttempts` is always 1.
   */
  clientConfig?: BedrockRuntimeClientConfig;
  /** Retry policy knobs (`maxRetries`, delays, `clock`, ...). The signal comes from each call. */
  retry?: Omit<RetryOptions, 'signal'>;
  /**
   * Longest wait for one `InvokeModel` call (one attempt: the retry policy may make more), in ms, from 1 to
   * 2,147,483,647. Default 60,000. The call is then cancelled and retried as a retryable `ProviderError` with code
   * `TIMEOUT`. Measured in real time, not on `retry.clock`.
   *
   * @example
   * ```ts
   * import { createBedrockEmbedder } from 'storyloom/bedrock';
   * const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', region: 'us-east-1', timeoutMs: 10_000 });
   * ```
   */
  timeoutMs?: number;
}

/** Default of `timeoutMs`: ample for a Stability picture (tens of seconds), short enough that a hung call ends. */
const DEFAULT_TIMEOUT_MS = 60_000;

/** One connection per adapter: the client is built lazily, on the first call, from the loaded SDK. */
function connect(options: BedrockConnectionOptions, feature: string) {
  let resolved: Promise<{ sdk: BedrockSdk; client: BedrockRuntimeClient }> | undefined;
  const resolve = () => {
    resolved ??= loadBedrockSdk(feature).then((sdk) => ({
      sdk,
      client:
        options.client ??
        new sdk.BedrockRuntimeClient({
          ...options.clientConfig,
          ...(options.region === undefined ? {} : { region: options.region }),
          maxAttempts: 1,
        }),
    }));
    resolved.catch(() => {
      resolved = undefined;
    });
    return resolved;
  };

  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  /**
   * Invokes `modelId` with a JSON body once (no retries), within `timeoutMs`, and returns the parsed JSON answer. The
   * SDK gets a signal that fires on the caller's abort and on the timeout; the wait ends then even if an injected
   * client ignores it.
   */
  return async function invokeJson(modelId: string, body: unknown, signal: AbortSignal | undefined): Promise<unknown> {
    const { sdk, client } = await resolve();
    throwIfAborted(signal);
    const output: InvokeModelCommandOutput = await attemptWithin(
      (attemptSignal) => {
        const command = new sdk.InvokeModelCommand({
          modelId,
          contentType: 'application/json',
          accept: 'application/json',
          body: JSON.stringify(body),
        });
        return client.send(command, { abortSignal: attemptSignal });
      },
      {
        timeoutMs,
        signal,
        provider: PROVIDER,
        timeoutMessage: `Bedrock ${modelId} did not answer within ${timeoutMs} ms`,
        failed: (error) => toStoryloomError(error, modelId, signal, (options.retry?.clock ?? systemClock).now()),
      },
    );
    const text = new TextDecoder().decode(output.body);
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw new ProviderError(`Bedrock ${modelId} answered with a body that is not JSON: ${preview(text)}`, {
        provider: PROVIDER,
        status: 200,
        cause: error,
        isRetryable: false,
      });
    }
  };
}

/** Error names of the Bedrock runtime that a later attempt can cure. */
const RETRYABLE_ERROR_NAMES = new Set([
  'ThrottlingException',
  'ModelNotReadyException',
  'ServiceUnavailableException',
  'InternalServerException',
  'ModelTimeoutException',
  // 424: the model failed on this input this time; the service's own message says to try again.
  'ModelErrorException',
  'TimeoutError',
]);
/** Socket errors worth another attempt: the request may never have reached the service. */
const RETRYABLE_NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN']);

/**
 * Maps an SDK failure to a typed storyloom error: `AbortedError` on abort, else a `ProviderError`. `now` is the retry
 * policy's clock, which reads a `retry-after` given as a date.
 */
function toStoryloomError(
  error: unknown,
  modelId: string,
  signal: AbortSignal | undefined,
  now: number,
): StoryloomError {
  if (StoryloomError.isInstance(error)) return error;
  const record = (typeof error === 'object' && error !== null ? error : {}) as {
    name?: string;
    message?: string;
    code?: string;
    $metadata?: { httpStatusCode?: number; requestId?: string };
    $response?: { headers?: Record<string, string | undefined> };
  };
  if (signal?.aborted || record.name === 'AbortError') return new AbortedError(undefined, { cause: error });
  const status = record.$metadata?.httpStatusCode;
  const name = record.name ?? 'Error';
  const headers = record.$response?.headers ?? {};
  const retryAfterMs = parseRetryAfter(headers['retry-after-ms'], headers['retry-after'], now);
  const isRetryable =
    RETRYABLE_ERROR_NAMES.has(name) ||
    (record.code !== undefined && RETRYABLE_NETWORK_CODES.has(record.code)) ||
    status === 429 ||
    (status !== undefined && status >= 500);
  const requestId = record.$metadata?.requestId;
  const id = requestId ? ` (request-id ${requestId})` : '';
  return new ProviderError(`Bedrock ${modelId} failed${id}: ${name}: ${record.message ?? String(error)}`, {
    provider: PROVIDER,
    status,
    retryAfterMs,
    isRetryable,
    cause: error,
  });
}

function preview(text: string): string {
  return JSON.stringify(ellipsize(text, 81));
}

function invalidResponse(modelId: string, message: string): ProviderError {
  return new ProviderError(`Bedrock ${modelId} returned an invalid response: ${message}`, {
    provider: PROVIDER,
    status: 200,
    isRetryable: false,
  });
}

function rejectOptions(what: string, problems: ValidationProblem[]): void {
  if (problems.length === 0) return;
  throw new ValidationError(`${what}: ${problems.map((problem) => `${problem.path} ${problem.message}`).join('; ')}`, {
    problems,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Embeddings

/** The geographic prefixes of Bedrock's cross-Region (system-defined) inference profiles. */
export type BedrockInferenceProfilePrefix = 'us' | 'eu' | 'apac' | 'global';

/**
 * Embedding models on Bedrock this adapter speaks to: by model id, and Cohere Embed v4 also through its cross-Region
 * inference profiles (`us.cohere.embed-v4:0`, `eu.`, `apac.`, `global.`). Titan's embedding models have none.
 */
export type BedrockEmbeddingModel =
  | 'amazon.titan-embed-text-v1'
  | 'amazon.titan-embed-text-v2:0'
  | 'cohere.embed-v4:0'
  | `${BedrockInferenceProfilePrefix}.cohere.embed-v4:0`;

type EmbeddingBaseModel = 'amazon.titan-embed-text-v1' | 'amazon.titan-embed-text-v2:0' | 'cohere.embed-v4:0';

interface EmbeddingModelSpec {
  /** Output sizes the model can produce; the first is its default. */
  dimensions: readonly number[];
  /** Texts one `embed()` call accepts (Titan: fanned out one text per `InvokeModel` call). */
  maxBatchSize: number;
}

const EMBEDDING_MODELS: Readonly<Record<EmbeddingBaseModel, EmbeddingModelSpec>> = {
  'amazon.titan-embed-text-v1': { dimensions: [1536], maxBatchSize: 128 },
  'amazon.titan-embed-text-v2:0': { dimensions: [1024, 512, 256], maxBatchSize: 128 },
  'cohere.embed-v4:0': { dimensions: [1536, 1024, 512, 256], maxBatchSize: 96 },
};

/** Models served through an inference profile as well as by their own id. */
const PROFILED_EMBEDDING_MODELS: readonly string[] = ['cohere.embed-v4:0'];
const INFERENCE_PROFILE_PREFIX = /^(?:us|eu|apac|global)\./;

/** The model an embedding model id stands for: the id itself, or an inference profile's id without its prefix. */
function embeddingBaseModel(model: string): string {
  const base = String(model).replace(INFERENCE_PROFILE_PREFIX, '');
  return base !== model && PROFILED_EMBEDDING_MODELS.includes(base) ? base : model;
}

/** The largest `InvokeModel` body Bedrock takes, in bytes. */
const MAX_INVOKE_BODY_BYTES = 25_000_000;

/** Options of `createBedrockEmbedder`. */
export interface BedrockEmbedderOptions extends BedrockConnectionOptions {
  model: BedrockEmbeddingModel;
  /**
   * Vector size. Titan G1: 1536 only; Titan V2: 256, 512 or 1024 (default 1024); Cohere Embed v4: 256, 512, 1024
   * or 1536 (default 1536).
   */
  dimensions?: number;
  /**
   * The dimension of the vector index these embeddings go to. A model that cannot produce it is rejected at
   * construction, before anything is written to the index.
   */
  expectedDimensions?: number;
  /** Titan only: `InvokeModel` calls in flight at once during one `embed()`, 1..64. Default 4. */
  concurrency?: number;
  /** Titan V2 only: ask for unit-length vectors. Default true. */
  normalize?: boolean;
  /**
   * Cohere only: what the service does with a text longer than the model takes: `RIGHT` (the default) drops its end,
   * `LEFT` its start, `NONE` makes the call fail with a `ValidationException`. Cohere Embed v3's `START` and `END`
   * are refused at construction: v4 does not take them.
   */
  truncate?: 'NONE' | 'LEFT' | 'RIGHT';
}

/** The values of `truncate` Cohere Embed v4 takes. */
const COHERE_TRUNCATE_VALUES: readonly string[] = ['NONE', 'LEFT', 'RIGHT'];

/** What Titan G1 and V2 take as `inputText`: 8,192 tokens and 50,000 characters. */
const TITAN_MAX_CHARACTERS = 50_000;
const TITAN_MAX_TOKENS = 8_192;
/** Tokens the estimate may spend: the limit less 512, room for the tokenizer's own marks and the estimate's error. */
const TITAN_TOKEN_BUDGET = TITAN_MAX_TOKENS - 512;

/**
 * `text` cut to what Titan takes, keeping its start, as Cohere's `truncate: 'RIGHT'` does (Titan has no such
 * parameter and fails on a longer text): at most 50,000 characters and an estimated 7,680 tokens. The estimate
 * over-counts on purpose, since the tokenizer is not published: an ASCII letter or space is half a token (English
 * runs about 4.7 characters a token on Titan), any other ASCII character (digit, punctuation, line break) a whole
 * one, any other code point one, and one outside the Basic Multilingual Plane (most emoji) two. The cut falls
 * between grapheme clusters (`clipText`), so no surrogate pair or emoji sequence is split.
 */
function clipForTitan(text: string): string {
  // Costs are counted in half tokens. No code unit costs more than two, so a text this short fits whatever it holds.
  const budget = TITAN_TOKEN_BUDGET * 2;
  if (text.length * 2 <= budget) return text;
  const limit = Math.min(text.length, TITAN_MAX_CHARACTERS);
  let spent = 0;
  let end = 0;
  while (end < limit) {
    const code = text.codePointAt(end)!;
    const width = code > 0xffff ? 2 : 1;
    const cost = code > 0xffff ? 4 : code >= 0x80 || !isAsciiLetterOrSpace(code) ? 2 : 1;
    if (spent + cost > budget || end + width > limit) break;
    spent += cost;
    end += width;
  }
  return end >= text.length ? text : clipText(text, end);
}

function isAsciiLetterOrSpace(code: number): boolean {
  return code === 0x20 || (code >= 0x41 && code <= 0x5a) || (code >= 0x61 && code <= 0x7a);
}

/** The `Embedder` `createBedrockEmbedder` returns, with the settings it resolved. */
export interface BedrockEmbedder extends Embedder {
  /** The model that makes the vectors: `model` as given, or, for an inference profile, the model it routes to. */
  readonly modelId: BedrockEmbeddingModel;
  /** Titan: `InvokeModel` calls in flight at once; Cohere: 1 (one call per `embed()`). */
  readonly concurrency: number;
}

/**
 * Creates an `Embedder` backed by an embedding model on Amazon Bedrock.
 *
 * - **Titan G1** (`amazon.titan-embed-text-v1`, 1536 dimensions) and **Titan V2** (`amazon.titan-embed-text-v2:0`,
 *   256/512/1024) embed one text per `InvokeModel` call. `maxBatchSize` reports what one `embed()` accepts (128), not
 *   the API's one-text limit: `embed()` fans the texts out with at most `concurrency` calls in flight and stops
 *   launching new ones after the first failure. The input type has no effect on Titan.
 * - **Cohere Embed v4** (`cohere.embed-v4:0`, or an inference profile such as `global.cohere.embed-v4:0`;
 *   256/512/1024/1536) embeds up to 96 texts per call, fewer when 96 would pass Bedrock's 25,000,000-byte body (the
 *   batch is then split by size, in order); `inputType` `document` becomes `search_document` and `query` becomes
 *   `search_query`.
 *
 * A text longer than the model takes is embedded from its start, never a failure: Titan has no truncate parameter,
 * so each text is clipped before it is sent to at most 50,000 characters and a conservatively estimated 8,192 tokens
 * less a margin, cut between grapheme clusters, like Cohere's `truncate: 'RIGHT'`; Cohere is sent `truncate: 'RIGHT'`
 * unless `truncate` says otherwise. The vector then stands for the text's start only.
 *
 * Options are checked at construction (`ValidationError` listing every problem), including a `dimensions` the
 * model cannot produce, a mismatch with `expectedDimensions` (the dimension of the index), a `truncate` Cohere Embed
 * v4 does not take and a `timeoutMs` out of range. Answers are checked too: a vector of the wrong length or with a
 * value that is not a finite 32-bit float is a `ProviderError`. Empty texts are rejected (`ValidationError`) before
 * any call, as the service would reject them.
 *
 * @example
 * ```ts
 * import { embedInBatches } from 'storyloom';
 * import { createBedrockEmbedder } from 'storyloom/bedrock';
 *
 * const embedder = createBedrockEmbedder({
 *   model: 'cohere.embed-v4:0',
 *   dimensions: 1536,
 *   expectedDimensions: 1536, // the Pinecone index's dimension
 *   region: 'us-east-1',
 * });
 * const vectors = await embedInBatches(embedder, sceneTexts, { inputType: 'document' });
 * ```
 */
export function createBedrockEmbedder(options: BedrockEmbedderOptions): BedrockEmbedder {
  const problems: ValidationProblem[] = [];
  const baseModel = embeddingBaseModel(options.model);
  const spec = Object.hasOwn(EMBEDDING_MODELS, baseModel)
    ? EMBEDDING_MODELS[baseModel as EmbeddingBaseModel]
    : undefined;
  if (!spec) {
    problems.push({
      path: 'model',
      message: `must be one of ${Object.keys(EMBEDDING_MODELS).join(', ')}, or cohere.embed-v4:0 behind an inference profile (us., eu., apac., global.)`,
    });
    rejectOptions('Invalid Bedrock embedder options', problems);
  }
  const model = spec as EmbeddingModelSpec;
  const dimensions = options.dimensions ?? model.dimensions[0]!;
  if (!model.dimensions.includes(dimensions)) {
    problems.push({
      path: 'dimensions',
      message: `${options.model} produces ${model.dimensions.join(', ')} dimensions, not ${dimensions}`,
    });
  }
  if (options.expectedDimensions !== undefined && options.expectedDimensions !== dimensions) {
    problems.push({
      path: 'expectedDimensions',
      message: `the index expects ${options.expectedDimensions} dimensions but the embedder produces ${dimensions}${
        model.dimensions.includes(options.expectedDimensions)
          ? ` (set dimensions: ${options.expectedDimensions})`
          : ` and ${options.model} cannot produce ${options.expectedDimensions}`
      }`,
    });
  }
  const isCohere = baseModel === 'cohere.embed-v4:0';
  const concurrency = isCohere ? 1 : (options.concurrency ?? 4);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    problems.push({ path: 'concurrency', message: `must be an integer in 1..64, got ${options.concurrency}` });
  }
  if (options.normalize !== undefined && options.model !== 'amazon.titan-embed-text-v2:0') {
    problems.push({ path: 'normalize', message: 'is a Titan V2 setting' });
  }
  if (options.truncate !== undefined && !isCohere) {
    problems.push({ path: 'truncate', message: 'is a Cohere setting' });
  } else if (options.truncate !== undefined && !COHERE_TRUNCATE_VALUES.includes(options.truncate)) {
    problems.push({
      path: 'truncate',
      message: `must be one of ${COHERE_TRUNCATE_VALUES.join(', ')} (Cohere Embed v4), got ${String(options.truncate)}`,
    });
  }
  problems.push(...timeoutProblems(options.timeoutMs, 'timeoutMs'));
  rejectOptions('Invalid Bedrock embedder options', problems);

  // What is invoked (a model id, or an inference profile that routes to it) and the model that makes the vectors:
  // `modelId`, part of the index's fingerprint, names the model, so that moving to a profile of the same model
  // rebuilds no index.
  const invokedId = options.model;
  const modelId = baseModel as BedrockEmbeddingModel;
  const invokeJson = connect(options, `The Bedrock embedder (${invokedId})`);
  const retry = (signal: AbortSignal | undefined) => ({ ...options.retry, signal });

  const readVector = (values: unknown, where: string): Float32Array => {
    if (!Array.isArray(values)) throw invalidResponse(modelId, `${where} is not an array`);
    if (values.length !== dimensions) {
      throw invalidResponse(modelId, `${where} has ${values.length} values, expected ${dimensions}`);
    }
    const vector = new Float32Array(dimensions);
    for (let index = 0; index < dimensions; index++) {
      const value = values[index];
      if (typeof value === 'number') vector[index] = value;
      // Checked once stored: a finite double beyond float32's range (1e39) becomes Infinity in the Float32Array.
      if (typeof value !== 'number' || !Number.isFinite(vector[index])) {
        throw invalidResponse(modelId, `${where}[${index}] is ${String(value)}, not a finite 32-bit float`);
      }
    }
    return vector;
  };

  const embedTitan = async (text: string, signal: AbortSignal | undefined): Promise<Float32Array> => {
    const inputText = clipForTitan(text);
    const body =
      modelId === 'amazon.titan-embed-text-v2:0'
        ? { inputText, dimensions, normalize: options.normalize ?? true }
        : { inputText };
    const answer = await withRetry(async (_attempt, attemptSignal) => {
      const json = (await invokeJson(invokedId, body, attemptSignal)) as { embedding?: unknown } | null;
      return readVector(json?.embedding, 'embedding');
    }, retry(signal));
    return answer;
  };

  const truncate = options.truncate ?? 'RIGHT';

  /** One Cohere call: `texts` in one body, which `embedCohere` keeps within the service's body limit. */
  const embedCohereBatch = async (
    texts: readonly string[],
    inputType: EmbeddingInputType,
    signal: AbortSignal | undefined,
  ): Promise<Float32Array[]> => {
    const body = cohereBody(texts, inputType);
    return withRetry(async (_attempt, attemptSignal) => {
      const json = (await invokeJson(invokedId, body, attemptSignal)) as { embeddings?: unknown } | null;
      // `embedding_types` asks for `{ float: [[...]] }`; a bare list is the older `embeddings_floats` shape.
      const embeddings = json?.embeddings;
      const list = Array.isArray(embeddings) ? embeddings : (embeddings as { float?: unknown } | undefined)?.float;
      if (!Array.isArray(list)) throw invalidResponse(modelId, 'embeddings.float is missing');
      if (list.length !== texts.length) {
        throw invalidResponse(modelId, `${list.length} embeddings for ${texts.length} texts`);
      }
      return list.map((values, index) => readVector(values, `embeddings.float[${index}]`));
    }, retry(signal));
  };

  const cohereBody = (texts: readonly string[], inputType: EmbeddingInputType) => ({
    texts,
    input_type: inputType === 'query' ? 'search_query' : 'search_document',
    embedding_types: ['float'],
    output_dimension: dimensions,
    // Sent even when it is the default: the service's own default is not documented for v4, and an over-long text
    // should be embedded from its start, as Titan's is, not fail.
    truncate,
  });

  /**
   * Embeds up to 96 texts in as few calls as fit Bedrock's 25,000,000-byte body: texts are sent whole (the service
   * truncates them by tokens), so 96 long ones can pass that size, and the batch is then split by encoded size, in
   * order. A text too large for a body of its own is cut to fit at the end `truncate` drops (its start is kept for
   * `RIGHT`, its end for `LEFT`), which the service would drop anyway; with `NONE` it is sent whole and fails as the
   * service says.
   */
  const embedCohere = async (
    texts: readonly string[],
    inputType: EmbeddingInputType,
    signal: AbortSignal | undefined,
  ): Promise<Float32Array[]> => {
    const encoder = new TextEncoder();
    const bytesOf = (text: string) => encoder.encode(JSON.stringify(text)).length;
    // What the texts may take of the body: each is counted with a comma, and n texts are parted by n − 1 of them.
    const room = MAX_INVOKE_BODY_BYTES - encoder.encode(JSON.stringify(cohereBody([], inputType))).length + 1;
    const batches: string[][] = [];
    let batch: string[] = [];
    let used = 0;
    for (const original of texts) {
      let text = original;
      let size = bytesOf(text) + 1;
      if (size > room && truncate !== 'NONE') {
        text = fitCohereText(text, room - 1, truncate, bytesOf);
        size = bytesOf(text) + 1;
      }
      if (batch.length > 0 && used + size > room) {
        batches.push(batch);
        batch = [];
        used = 0;
      }
      batch.push(text);
      used += size;
    }
    if (batch.length > 0) batches.push(batch);
    const vectors: Float32Array[] = [];
    for (const part of batches) vectors.push(...(await embedCohereBatch(part, inputType, signal)));
    return vectors;
  };

  return {
    specificationVersion: 'v1',
    provider: PROVIDER,
    modelId,
    dimensions,
    maxBatchSize: model.maxBatchSize,
    concurrency,
    async embed(texts, callOptions = {}) {
      const signal = callOptions.signal;
      throwIfAborted(signal);
      const inputProblems: ValidationProblem[] = [];
      if (texts.length > model.maxBatchSize) {
        inputProblems.push({
          path: 'texts',
          message: `has ${texts.length} texts; at most ${model.maxBatchSize} per call (use embedInBatches)`,
        });
      }
      texts.forEach((text, index) => {
        if (typeof text !== 'string' || text.trim().length === 0) {
          inputProblems.push({ path: `texts.${index}`, message: 'must be a non-empty string' });
        }
      });
      rejectOptions(`Cannot embed with ${modelId}`, inputProblems);
      if (texts.length === 0) return [];
      if (isCohere) return embedCohere(texts, callOptions.inputType ?? 'document', signal);
      return mapWithConcurrency(texts, concurrency, signal, (text, itemSignal) => embedTitan(text, itemSignal));
    },
  };
}

/**
 * `text` cut until its JSON encoding takes at most `maxBytes`: its start kept for `RIGHT` (between grapheme clusters),
 * its end for `LEFT` (never half a surrogate pair).
 */
function fitCohereText(
  text: string,
  maxBytes: number,
  truncate: 'LEFT' | 'RIGHT',
  bytesOf: (text: string) => number,
): string {
  let fitted = text;
  for (let size = bytesOf(fitted); size > maxBytes; size = bytesOf(fitted)) {
    // Proportional, a little under: a few rounds at most, whatever the mix of one- to six-byte characters.
    const keep = Math.max(0, Math.floor(fitted.length * (maxBytes / size) * 0.99) - 1);
    if (truncate === 'RIGHT') fitted = clipText(fitted, keep);
    else {
      let start = fitted.length - keep;
      const first = fitted.charCodeAt(start);
      if (first >= 0xdc00 && first <= 0xdfff) start++;
      fitted = fitted.slice(start);
    }
  }
  return fitted;
}

// ---------------------------------------------------------------------------------------------------------------
// Images

/** Stability image models on Bedrock this adapter speaks to. */
export type BedrockImageModel =
  | 'stability.sd3-5-large-v1:0'
  | 'stability.stable-image-core-v1:1'
  | 'stability.stable-image-ultra-v1:1';

const IMAGE_MODELS: readonly BedrockImageModel[] = [
  'stability.sd3-5-large-v1:0',
  'stability.stable-image-core-v1:1',
  'stability.stable-image-ultra-v1:1',
];

/** Aspect ratios the Stability models on Bedrock accept. */
export type StabilityAspectRatio = '16:9' | '1:1' | '21:9' | '2:3' | '3:2' | '4:5' | '5:4' | '9:16' | '9:21';

const ASPECT_RATIOS: readonly StabilityAspectRatio[] = [
  '16:9',
  '1:1',
  '21:9',
  '2:3',
  '3:2',
  '4:5',
  '5:4',
  '9:16',
  '9:21',
];

/** Options of `createBedrockImageGenerator`. */
export interface BedrockImageGeneratorOptions extends BedrockConnectionOptions {
  model: BedrockImageModel;
  /** Encoding asked of the model. Default `png`. */
  outputFormat?: 'png' | 'jpeg';
  /** What to keep out of every picture; a request's own `negativePrompt` wins. At most 10,000 characters. */
  negativePrompt?: string;
  /** Frame of every picture; a request's own `aspectRatio` wins. Default `16:9`. */
  aspectRatio?: StabilityAspectRatio;
  /** The story's style guide, used when a request carries no `style`. */
  style?: string;
}

/**
 * Creates an `ImageGenerator` backed by a Stability model on Amazon Bedrock: SD3.5 Large
 * (`stability.sd3-5-large-v1:0`), Stable Image Core (`stability.stable-image-core-v1:1`) or Stable Image Ultra
 * (`stability.stable-image-ultra-v1:1`).
 *
 * Pictures stay consistent across episodes: the prompt is composed by `composeImagePrompt` (the story's style guide
 * first, then the scene, then the appearance of each character in it), and the request's `seed` (derive it with
 * `seedFromSceneId`) is sent as is, so a retried episode draws the same picture. Seed 0 is refused
 * (`ValidationError`): Stability reads it as "pick a random seed", which would break that promise. A finish reason
 * starting `Filter reason:` (a safety filter on the prompt or the picture) is a `ContentFilteredError`, thrown at
 * once and never retried with the same prompt; any other finish reason (`Inference error`) is a retryable
 * `ProviderError`, retried like a 5xx. The returned bytes are checked to be a PNG or JPEG (`ProviderError`
 * otherwise); `mediaType` says which one arrived.
 *
 * @example
 * ```ts
 * import { seedFromSceneId } from 'storyloom';
 * import { createBedrockImageGenerator } from 'storyloom/bedrock';
 *
 * const illustrator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', region: 'us-west-2' });
 * const image = await illustrator.generate({
 *   storyId: 'lighthouse',
 *   sceneId: 'scene-0042',
 *   prompt: 'Mara opens the lighthouse door to a storm',
 *   style: 'muted watercolour, ink outlines',
 *   characters: [{ id: 'mara', name: 'Mara', appearance: 'tall, red scarf, salt-white hair' }],
 *   seed: seedFromSceneId('scene-0042'),
 * });
 * ```
 */
export function createBedrockImageGenerator(options: BedrockImageGeneratorOptions): ImageGenerator {
  const problems: ValidationProblem[] = [];
  if (!IMAGE_MODELS.includes(options.model)) {
    problems.push({ path: 'model', message: `must be one of ${IMAGE_MODELS.join(', ')}` });
  }
  const outputFormat = options.outputFormat ?? 'png';
  if (outputFormat !== 'png' && outputFormat !== 'jpeg') {
    problems.push({ path: 'outputFormat', message: 'must be "png" or "jpeg"' });
  }
  if (options.aspectRatio !== undefined && !ASPECT_RATIOS.includes(options.aspectRatio)) {
    problems.push({ path: 'aspectRatio', message: `must be one of ${ASPECT_RATIOS.join(', ')}` });
  }
  if (options.negativePrompt !== undefined && options.negativePrompt.length > MAX_IMAGE_PROMPT_LENGTH) {
    problems.push({ path: 'negativePrompt', message: `must be at most ${MAX_IMAGE_PROMPT_LENGTH} characters` });
  }
  problems.push(...timeoutProblems(options.timeoutMs, 'timeoutMs'));
  rejectOptions('Invalid Bedrock image generator options', problems);

  const modelId = options.model;
  const invokeJson = connect(options, `The Bedrock image generator (${modelId})`);

  return {
    specificationVersion: 'v1',
    provider: PROVIDER,
    modelId,
    async generate(request: ImageRequest, callOptions = {}): Promise<GeneratedImage> {
      const signal = callOptions.signal;
      throwIfAborted(signal);
      const requestProblems: ValidationProblem[] = [];
      if (!Number.isInteger(request.seed) || request.seed < 1 || request.seed > MAX_IMAGE_SEED) {
        requestProblems.push({
          path: 'seed',
          message: `must be an integer in 1..${MAX_IMAGE_SEED} (Stability draws a random picture for 0)`,
        });
      }
      const prompt = composeImagePrompt({
        request,
        ...(options.style === undefined ? {} : { bible: { style: options.style } }),
      });
      if (prompt.length === 0) requestProblems.push({ path: 'prompt', message: 'must not be empty' });
      const negativePrompt = request.negativePrompt ?? options.negativePrompt;
      if (negativePrompt !== undefined && negativePrompt.length > MAX_IMAGE_PROMPT_LENGTH) {
        requestProblems.push({
          path: 'negativePrompt',
          message: `must be at most ${MAX_IMAGE_PROMPT_LENGTH} characters`,
        });
      }
      rejectOptions(`Cannot draw scene ${request.sceneId}`, requestProblems);

      const body = {
        prompt,
        ...(negativePrompt ? { negative_prompt: negativePrompt } : {}),
        aspect_ratio: request.aspectRatio ?? options.aspectRatio ?? '16:9',
        seed: request.seed,
        output_format: outputFormat,
      };
      // A filtered answer is a result, not a failure, inside the retry loop: thrown from there after a throttled
      // first attempt it would come out wrapped in a RetryError instead of as itself.
      const outcome = await withRetry(
        async (_attempt, attemptSignal) => {
          const json = (await invokeJson(modelId, body, attemptSignal)) as StabilityResponse | null;
          return readStabilityResponse(modelId, json);
        },
        { ...options.retry, signal },
      );
      if (outcome.kind === 'filtered') {
        throw new ContentFilteredError(
          `Bedrock ${modelId} filtered the picture of scene ${request.sceneId}: ${outcome.reason}`,
          { provider: PROVIDER },
        );
      }
      return {
        data: outcome.data,
        mediaType: outcome.mediaType,
        seed: outcome.seed ?? request.seed,
        modelId,
        ...(outcome.width === undefined ? {} : { width: outcome.width, height: outcome.height }),
      };
    },
  };
}

interface StabilityResponse {
  images?: unknown;
  seeds?: unknown;
  finish_reasons?: unknown;
}

type StabilityOutcome =
  | { kind: 'filtered'; reason: string }
  | {
      kind: 'image';
      data: Uint8Array;
      mediaType: 'image/png' | 'image/jpeg';
      seed: number | undefined;
      width?: number;
      height?: number;
    };

/**
 * Finish reasons that mean a safety filter matched (`Filter reason: prompt`, `... output image`, `... input image`).
 * Any other non-null reason (`Inference error`) is a failure of that attempt.
 */
const FILTER_REASON = /^Filter reason\b/i;

function readStabilityResponse(modelId: string, json: StabilityResponse | null): StabilityOutcome {
  if (json === null || typeof json !== 'object') throw invalidResponse(modelId, 'the body is not an object');
  const reasons = Array.isArray(json.finish_reasons) ? json.finish_reasons : [];
  const reason = reasons.find((entry) => entry !== null && entry !== undefined);
  if (reason !== undefined && FILTER_REASON.test(String(reason))) return { kind: 'filtered', reason: String(reason) };
  if (reason !== undefined) {
    throw new ProviderError(`Bedrock ${modelId} finished without a picture: ${preview(String(reason))}`, {
      provider: PROVIDER,
      status: 200,
      isRetryable: true,
    });
  }
  const images = Array.isArray(json.images) ? json.images : [];
  const encoded = images[0];
  if (typeof encoded !== 'string' || encoded.length === 0) throw invalidResponse(modelId, 'images[0] is missing');
  const bytes = Buffer.from(encoded, 'base64');
  const data = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const seeds = Array.isArray(json.seeds) ? json.seeds : [];
  const seed = typeof seeds[0] === 'number' && Number.isInteger(seeds[0]) ? seeds[0] : undefined;
  const png = pngSize(data);
  if (png) return { kind: 'image', data, mediaType: 'image/png', seed, ...png };
  if (isJpeg(data)) return { kind: 'image', data, mediaType: 'image/jpeg', seed, ...jpegSize(data) };
  throw invalidResponse(modelId, `images[0] is neither a PNG nor a JPEG (${data.length} bytes)`);
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Width and height of a PNG (from its IHDR chunk), or undefined when `data` is not a PNG. */
function pngSize(data: Uint8Array): { width: number; height: number } | undefined {
  if (data.length < 24 || PNG_SIGNATURE.some((byte, index) => data[index] !== byte)) return undefined;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (String.fromCharCode(data[12]!, data[13]!, data[14]!, data[15]!) !== 'IHDR') return undefined;
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  return width > 0 && height > 0 ? { width, height } : undefined;
}

function isJpeg(data: Uint8Array): boolean {
  return data.length > 4 && data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff;
}

/** Width and height from a JPEG's start-of-frame marker, when one is found. */
function jpegSize(data: Uint8Array): { width?: number; height?: number } {
  let offset = 2;
  while (offset + 9 < data.length) {
    if (data[offset] !== 0xff) return {};
    const marker = data[offset + 1]!;
    const length = (data[offset + 2]! << 8) | data[offset + 3]!;
    const isStartOfFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isStartOfFrame) {
      return {
        height: (data[offset + 5]! << 8) | data[offset + 6]!,
        width: (data[offset + 7]! << 8) | data[offset + 8]!,
      };
    }
    offset += 2 + length;
  }
  return {};
}

// ---------------------------------------------------------------------------------------------------------------
// Claude on Bedrock

const CLAUDE_SDK_PACKAGE = '@anthropic-ai/bedrock-sdk';

type ClaudeBedrockSdk = { default: new (options: Record<string, unknown>) => unknown };

let claudeSdkPromise: Promise<ClaudeBedrockSdk> | undefined;

function loadClaudeBedrockSdk(): Promise<ClaudeBedrockSdk> {
  claudeSdkPromise ??= import('@anthropic-ai/bedrock-sdk').then(
    (module) => module as unknown as ClaudeBedrockSdk,
    (error: unknown) => {
      claudeSdkPromise = undefined;
      throw new MissingDependencyError(CLAUDE_SDK_PACKAGE, 'createBedrockSceneGenerator', { cause: error });
    },
  );
  return claudeSdkPromise;
}

/** Options of `createBedrockSceneGenerator`: where Bedrock is, plus every option of the Claude scene generator. */
export interface BedrockSceneGeneratorOptions extends Omit<ClaudeSceneGeneratorOptions, 'client' | 'provider'> {
  /**
   * A Bedrock model or inference-profile id, e.g. `global.anthropic.claude-sonnet-4-6`. ARNs are
   * rejected: `@anthropic-ai/bedrock-sdk` 1.x does not accept ARN-form model ids.
   */
  model: string;
  /** AWS region. Default: the SDK's (`AWS_REGION`). */
  region?: string;
  /** Static AWS credentials. Default: the AWS credential provider chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Another endpoint than the regional one (a VPC endpoint, a local stand-in). */
  baseURL?: string;
  /**
   * Longest wait for the response headers of one request (one attempt: the retry policy may make more), in ms, from
   * 1 to 2,147,483,647. Default: the SDK's (10 minutes). A request with no answer by then is retried as a retryable
   * `ProviderError`. A streamed reply that stalls after its headers is ended by the generator's `idleTimeoutMs`, one
   * not streamed (`stream: false`) by its `replyTimeoutMs`.
   */
  timeoutMs?: number;
  /** An `AnthropicBedrock` client (or anything with its `messages` shape); the connection options are then ignored. */
  client?: ClaudeClient;
}

/**
 * A `SceneGenerator` on Claude through Amazon Bedrock: the same core as `storyloom/anthropic` (structured output,
 * repair turns, prompt caching, priced usage, storyloom's retry policy) over an `AnthropicBedrock` client created
 * on first use with its own retries off. Every request, through `client` too, carries Bedrock's `anthropic_version`
 * (`bedrock-2023-05-31`); a 424 `ModelErrorException` is retried, and errors name the request's
 * `x-amzn-RequestId`. Bedrock has no token-counting endpoint, so the client offers no `countTokens`.
 *
 * @example
 * ```ts
 * import { createBedrockSceneGenerator } from 'storyloom/bedrock';
 *
 * const generator = createBedrockSceneGenerator({
 *   region: 'us-east-1',
 *   model: 'global.anthropic.claude-sonnet-4-6',
 * });
 * const { scene, delta, usage } = await generator.generate(request);
 * ```
 */
export function createBedrockSceneGenerator(options: BedrockSceneGeneratorOptions): SceneGenerator {
  const problems: ValidationProblem[] = [];
  if (typeof options?.model === 'string' && options.model.startsWith('arn:')) {
    problems.push({
      path: 'model',
      message:
        'is an ARN; @anthropic-ai/bedrock-sdk 1.x needs a model or inference-profile id such as global.anthropic.claude-sonnet-4-6',
    });
  }
  if (options?.credentials && (!options.credentials.accessKeyId || !options.credentials.secretAccessKey)) {
    problems.push({ path: 'credentials', message: 'needs both accessKeyId and secretAccessKey' });
  }
  problems.push(...timeoutProblems(options?.timeoutMs, 'timeoutMs'));
  rejectOptions('Invalid Bedrock scene generator options', problems);
  const { region, credentials, baseURL, timeoutMs, client, ...rest } = options;
  return createClaudeSceneGenerator({
    ...rest,
    client: client ?? lazyClaudeBedrockClient({ region, credentials, baseURL, timeoutMs }),
    provider: PROVIDER,
  });
}

/**
 * Creates the `AnthropicBedrock` client once, on first use, with the SDK's retries off. No `countTokens`. (Bedrock's
 * `anthropic_version` goes with each request, for a client given in `client` too: see `claudeRequestOptions`.)
 */
function lazyClaudeBedrockClient(
  options: Pick<BedrockSceneGeneratorOptions, 'region' | 'credentials' | 'baseURL' | 'timeoutMs'>,
): ClaudeClient {
  return lazyClaudeClient(
    async () => {
      const sdk = await loadClaudeBedrockSdk();
      const settings: Record<string, unknown> = { maxRetries: 0 };
      if (options.region !== undefined) settings.awsRegion = options.region;
      if (options.baseURL !== undefined) settings.baseURL = options.baseURL;
      if (options.timeoutMs !== undefined) settings.timeout = options.timeoutMs;
      if (options.credentials) {
        settings.awsAccessKey = options.credentials.accessKeyId;
        settings.awsSecretKey = options.credentials.secretAccessKey;
        if (options.credentials.sessionToken !== undefined) settings.awsSessionToken = options.credentials.sessionToken;
        // Sign with the keys given, not with a bearer token that happens to sit in the environment.
        settings.apiKey = null;
      }
      return new sdk.default(settings) as ClaudeClient;
    },
    { countTokens: false },
  );
}
