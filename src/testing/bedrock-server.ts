/**
 * A local stand-in for the Amazon Bedrock runtime's `InvokeModel` and `InvokeModelWithResponseStream` calls, so tests
 * run the real `@aws-sdk/client-bedrock-runtime` and `@anthropic-ai/bedrock-sdk` clients over the real protocol,
 * offline and without credentials. It serves the embedding models Titan G1, Titan V2 and Cohere Embed v4 (and Cohere's
 * `us.` / `eu.` / `apac.` / `global.` inference profiles), the Stability models SD3.5 Large, Stable Image Core and
 * Ultra, and Claude (`anthropic.claude-…` and its inference profiles, e.g. `global.anthropic.claude-sonnet-4-6`); it
 * validates request bodies as the service does and answers with AWS-style errors on demand. Every answer carries an
 * `x-amzn-RequestId` header (a UUID), as the service's do.
 *
 * Claude's replies are Messages API replies, scripted like those of the Anthropic API stand-in (`respond`, default
 * `defaultStandInReply`) and built as it builds its own (the same cut at `max_tokens`, the same events); a Claude body
 * is refused over 20,000,000 bytes (Claude's payload limit on Bedrock) or with a lone surrogate, as the Messages API
 * refuses it. Streamed, each Messages event is one `chunk` event of an `application/vnd.amazon.eventstream`
 * body (`{"bytes": base64(JSON of the event)}`), and a stream fault ends the body with an `exception` message after a
 * given number of chunks. Streamed answers are encoded with `@smithy/eventstream-codec` (the codec the AWS SDK and
 * `@anthropic-ai/bedrock-sdk` decode them with), an optional peer dependency loaded only when a stream is answered.
 *
 * Like Bedrock, it refuses a request without credentials (403 `MissingAuthenticationTokenException`): it needs an
 * `Authorization` header, SigV4 (`AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`, what the SDK
 * clients send) or a Bedrock API key (`Bearer ...`). It checks the header's form, not the signature.
 *
 * Built on `node:http`: this module imports no SDK.
 *
 * @module
 */
import { randomInt, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { deflateSync } from 'node:zlib';
import { MissingDependencyError } from '../core/errors.js';
import {
  type AnthropicStandInReply,
  type AnthropicStandInRequest,
  defaultStandInReply,
  strictSchemaProblems,
} from './anthropic-server.js';
import { messageAndEvents, surrogateProblem } from './messages-reply.js';

/** Embedding and image model ids the stand-in serves; Claude ids are recognised by their form (`isClaudeModelId`). */
export const BEDROCK_STAND_IN_MODELS = [
  'amazon.titan-embed-text-v1',
  'amazon.titan-embed-text-v2:0',
  'cohere.embed-v4:0',
  'stability.sd3-5-large-v1:0',
  'stability.stable-image-core-v1:1',
  'stability.stable-image-ultra-v1:1',
] as const;

/** Geographic prefixes of Bedrock's cross-Region (system-defined) inference profiles. */
const INFERENCE_PROFILE_PREFIX = /^(?:us|eu|apac|global)\./;

/** Models served under an inference profile as well as by their own id. */
const PROFILED_MODELS: readonly string[] = ['cohere.embed-v4:0'];

/**
 * A Claude model id or inference-profile id, e.g. `anthropic.claude-3-haiku-20240307-v1:0`,
 * `global.anthropic.claude-sonnet-4-6`, `jp.anthropic.claude-sonnet-4-5-20250929-v1:0`: Claude has profiles in more
 * geographies than Cohere Embed v4 (US GovCloud, Japan, Australia).
 */
const CLAUDE_MODEL_ID = /^(?:(?:us|eu|apac|global|us-gov|jp|au)\.)?anthropic\.claude-[a-z0-9][a-z0-9.:-]*$/;
const CLAUDE_PROFILE_PREFIX = /^(?:us|eu|apac|global|us-gov|jp|au)\./;

/**
 * A failure the stand-in answers with instead of serving a request:
 *
 * - `throttling`: 429 `ThrottlingException`; `model-not-ready`: 429 `ModelNotReadyException`;
 * - `validation`: 400 `ValidationException`; `model-timeout`: 408 `ModelTimeoutException`;
 * - `model-error`: 424 `ModelErrorException`; `service-quota`: 400 `ServiceQuotaExceededException`;
 * - `internal`: 500 `InternalServerException`; `unavailable`: 503 `ServiceUnavailableException`;
 * - `malformed-json`: 200 with a body that is not JSON;
 * - `filtered`: (image models) 200 with `{ "finish_reasons": ["Filter reason: prompt"] }` alone, as documented;
 * - `inference-error`: (image models) 200 with `finish_reasons: ["Inference error"]` and no image;
 * - `garbage-image`: (image models) 200 with base64 bytes that are no image;
 * - `hang`: no answer at all, until the client gives up (closes the connection) or the stand-in is closed;
 * - (streamed Claude requests only; a request not streamed passes them by) `stream-throttling`,
 *   `stream-model-stream-error`, `stream-validation`, `stream-internal`: a 200 stream that ends, after `afterChunks`
 *   chunks (default 1, the `message_start`), with an exception message `throttlingException`,
 *   `modelStreamErrorException`, `validationException` ("Input is too long for requested model.") or
 *   `internalServerException`.
 */
export type BedrockStandInFault =
  | 'throttling'
  | 'model-not-ready'
  | 'validation'
  | 'model-timeout'
  | 'model-error'
  | 'service-quota'
  | 'internal'
  | 'unavailable'
  | 'malformed-json'
  | 'filtered'
  | 'inference-error'
  | 'garbage-image'
  | 'hang'
  | BedrockStandInStreamFault;

/** The faults a streamed Claude request meets in the middle of its stream. */
export type BedrockStandInStreamFault =
  | 'stream-throttling'
  | 'stream-model-stream-error'
  | 'stream-validation'
  | 'stream-internal';

/**
 * A scheduled fault, optionally for one model only, optionally with a `retry-after` header: in seconds
 * (`retryAfterSeconds`), or as given (`retryAfter`, e.g. an HTTP date). `afterChunks` places a stream fault: the
 * number of `chunk` events sent before the exception (default 1).
 */
export type BedrockStandInFaultSpec =
  | BedrockStandInFault
  | {
      fault: BedrockStandInFault;
      modelId?: string;
      retryAfterSeconds?: number;
      retryAfter?: string;
      afterChunks?: number;
    };

/** One request the stand-in received, in arrival order, unknown routes included. */
export interface BedrockStandInRequest {
  /** The model id of the path, or `''` for a path that names no operation. */
  modelId: string;
  /** The operation the path names, or undefined for an unknown route. */
  operation?: 'InvokeModel' | 'InvokeModelWithResponseStream';
  /** The request's method and path, e.g. `POST /model/cohere.embed-v4:0/invoke`. */
  route: string;
  /** The parsed JSON body, or undefined when it did not parse. */
  body: unknown;
  headers: Record<string, string | string[] | undefined>;
  /** The `x-amzn-RequestId` sent back. */
  requestId: string;
  /** The fault answered, when one was scheduled for this request. */
  fault?: BedrockStandInFault;
  /** The HTTP status sent back. */
  status?: number;
}

/** Token usage of a Claude reply, as the Messages API reports it. */
export interface BedrockStandInClaudeUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
}

/** How the stand-in answers Claude. */
export interface BedrockStandInClaudeOptions {
  /**
   * Writes the model's reply, as `respond` of the Anthropic API stand-in does: an object (sent as its JSON text) or
   * raw text. Default `defaultStandInReply`: a valid scene shaped by the request's `output_config.format` schema.
   */
  respond?: (request: AnthropicStandInRequest) => AnthropicStandInReply | Promise<AnthropicStandInReply>;
  /**
   * The usage reported, over the stand-in's estimate (⌈characters / 4⌉ of the prompt's text for input, of the reply
   * for output, no cache).
   */
  usage?: (request: AnthropicStandInRequest) => Partial<BedrockStandInClaudeUsage>;
  /** Characters per streamed text delta. Default 200. */
  streamChunkChars?: number;
}

/** Options of `startBedrockStandIn`. */
export interface BedrockStandInOptions {
  /** Port to listen on; 0 (the default) picks a free one. Always bound to 127.0.0.1. */
  port?: number;
  /**
   * Milliseconds each answer is held back, so concurrent calls overlap and `maxInFlight` means something. Default 0.
   * This is server latency, not a test sleeping.
   */
  latencyMs?: number;
  /** How Claude replies. */
  claude?: BedrockStandInClaudeOptions;
}

/** A running stand-in. */
export interface BedrockStandIn {
  /** Base URL to pass as the client's `endpoint`, e.g. `http://127.0.0.1:53211`. */
  readonly url: string;
  /** Every request received, oldest first. */
  readonly requests: BedrockStandInRequest[];
  /** Requests being served right now. */
  readonly inFlight: number;
  /** The most requests ever served at once. */
  readonly maxInFlight: number;
  /** Queues faults; each one answers the next matching request, in order. */
  scheduleErrors(faults: readonly BedrockStandInFaultSpec[]): void;
  /** Forgets recorded requests, the in-flight high-water mark and pending faults. */
  reset(): void;
  /** Stops listening and closes open connections. */
  close(): Promise<void>;
}

const ERRORS: Record<
  Exclude<
    BedrockStandInFault,
    'malformed-json' | 'filtered' | 'inference-error' | 'garbage-image' | 'hang' | BedrockStandInStreamFault
  >,
  { status: number; type: string; message: string }
> = {
  throttling: {
    status: 429,
    type: 'ThrottlingException',
    message: 'Too many requests, please wait before trying again.',
  },
  'model-not-ready': { status: 429, type: 'ModelNotReadyException', message: 'Model is not ready to serve requests.' },
  validation: {
    status: 400,
    type: 'ValidationException',
    message: 'Malformed input request, please reformat your input and try again.',
  },
  'model-timeout': {
    status: 408,
    type: 'ModelTimeoutException',
    message: 'Model has timed out in processing the request.',
  },
  'model-error': {
    status: 424,
    type: 'ModelErrorException',
    message: 'The system encountered an unexpected error during processing. Try your request again.',
  },
  'service-quota': {
    status: 400,
    type: 'ServiceQuotaExceededException',
    message: 'Your request exceeds the service quota for your account.',
  },
  internal: { status: 500, type: 'InternalServerException', message: 'The server encountered an internal error.' },
  unavailable: {
    status: 503,
    type: 'ServiceUnavailableException',
    message: 'The service is unavailable. Please try again.',
  },
};

/** The exception message each stream fault ends its stream with (`:exception-type` is camel-cased on the wire). */
const STREAM_EXCEPTIONS: Record<BedrockStandInStreamFault, { type: string; message: string }> = {
  'stream-throttling': {
    type: 'throttlingException',
    message: 'Too many requests, please wait before trying again.',
  },
  'stream-model-stream-error': {
    type: 'modelStreamErrorException',
    message: 'An error occurred while streaming the response. Retry your request.',
  },
  'stream-validation': { type: 'validationException', message: 'Input is too long for requested model.' },
  'stream-internal': { type: 'internalServerException', message: 'The server encountered an internal error.' },
};

function isStreamFault(fault: BedrockStandInFault): fault is BedrockStandInStreamFault {
  return fault in STREAM_EXCEPTIONS;
}

/** The largest `InvokeModel` body the service takes, in bytes. */
const MAX_BODY_BYTES = 25_000_000;
/**
 * The largest Claude body: "The maximum size of the payload you can send in a request is 20MB" (Bedrock's Claude
 * request and response page), in the decimal megabytes of the service's own 25,000,000-byte constraint.
 */
const MAX_CLAUDE_BODY_BYTES = 20_000_000;
const STABILITY_ASPECT_RATIOS = ['16:9', '1:1', '21:9', '2:3', '3:2', '4:5', '5:4', '9:16', '9:21'];
const MAX_SEED = 4_294_967_294;
const MAX_PROMPT = 10_000;
/** Titan G1 and V2 take 8,192 tokens and 50,000 characters of `inputText`. */
const TITAN_MAX_TOKENS = 8_192;
const TITAN_MAX_CHARACTERS = 50_000;
const TITAN_EMBEDDING_TYPES = ['float', 'binary'];
/** Cohere Embed v4's context: a longer text fails unless `truncate` is `LEFT` or `RIGHT`. */
const COHERE_MAX_TOKENS = 128_000;
const COHERE_TRUNCATE = ['NONE', 'LEFT', 'RIGHT'];
const COHERE_KEYS = [
  'texts',
  'images',
  'inputs',
  'input_type',
  'truncate',
  'embedding_types',
  'output_dimension',
  'max_tokens',
];
const STABILITY_KEYS = ['prompt', 'negative_prompt', 'aspect_ratio', 'seed', 'output_format'];
/** SD3.5 Large also takes image-to-image settings, which the stand-in refuses through `mode`. */
const SD35_KEYS = [...STABILITY_KEYS, 'mode', 'image', 'strength'];
/** The one `anthropic_version` Bedrock takes for Claude. */
const BEDROCK_ANTHROPIC_VERSION = 'bedrock-2023-05-31';

class RequestProblem extends Error {}

/** The base model a served id stands for (an inference profile without its prefix), or undefined when not served. */
function servedModel(modelId: string): string | undefined {
  if ((BEDROCK_STAND_IN_MODELS as readonly string[]).includes(modelId)) return modelId;
  const base = modelId.replace(INFERENCE_PROFILE_PREFIX, '');
  if (base !== modelId && PROFILED_MODELS.includes(base)) return base;
  return CLAUDE_MODEL_ID.test(modelId) ? 'claude' : undefined;
}

/**
 * Starts a Bedrock runtime stand-in on 127.0.0.1. Point the real client at it with `endpoint: standIn.url`, fake
 * credentials, and an HTTP/1.1 handler (the client defaults to HTTP/2); point `AnthropicBedrock` at it with
 * `baseURL: standIn.url`.
 *
 * @example
 * ```ts
 * import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
 * import { NodeHttpHandler } from '@smithy/node-http-handler';
 * import { startBedrockStandIn } from 'storyloom/testing';
 *
 * const standIn = await startBedrockStandIn();
 * const client = new BedrockRuntimeClient({
 *   region: 'us-east-1',
 *   endpoint: standIn.url,
 *   credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
 *   requestHandler: new NodeHttpHandler(),
 *   maxAttempts: 1,
 * });
 * standIn.scheduleErrors(['throttling']); // the next call gets a 429 ThrottlingException
 * standIn.scheduleErrors([{ fault: 'stream-throttling', afterChunks: 2 }]); // a Claude stream cut by an exception
 * // ... run the code under test ...
 * await standIn.close();
 * ```
 */
export async function startBedrockStandIn(options: BedrockStandInOptions = {}): Promise<BedrockStandIn> {
  const requests: BedrockStandInRequest[] = [];
  let faults: Array<Exclude<BedrockStandInFaultSpec, BedrockStandInFault>> = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const latencyMs = options.latencyMs ?? 0;

  /** The first fault for this model; a stream fault waits for a streamed request. */
  const takeFault = (modelId: string, streamed: boolean) => {
    const index = faults.findIndex(
      (entry) =>
        (entry.modelId === undefined || entry.modelId === modelId) && (streamed || !isStreamFault(entry.fault)),
    );
    return index < 0 ? undefined : faults.splice(index, 1)[0];
  };

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const raw = await readBody(request);
    const url = new URL(request.url ?? '/', 'http://localhost');
    const match = /^\/model\/([^/]+)\/(invoke|invoke-with-response-stream)$/.exec(url.pathname);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      body = undefined;
    }
    const streamed = match?.[2] === 'invoke-with-response-stream';
    const record: BedrockStandInRequest = {
      modelId: match ? decodeURIComponent(match[1]!) : '',
      ...(match ? { operation: streamed ? 'InvokeModelWithResponseStream' : 'InvokeModel' } : {}),
      route: `${request.method} ${url.pathname}`,
      body,
      headers: { ...request.headers },
      requestId: randomUUID(),
    };
    requests.push(record);
    const send = (answer: Answer) => {
      record.status = answer.status;
      response.writeHead(answer.status, { ...answer.headers, 'x-amzn-RequestId': record.requestId });
      response.end(answer.body);
    };
    if (request.method !== 'POST' || !match) {
      send(errorAnswer(404, 'UnknownOperationException', `No route for ${request.method} ${url.pathname}`));
      return;
    }
    const modelId = record.modelId;
    // Bedrock authenticates before it looks at anything else, and an unsigned request takes no scheduled fault.
    if (!isAuthorized(request.headers.authorization)) {
      send(errorAnswer(403, 'MissingAuthenticationTokenException', 'Missing Authentication Token'));
      return;
    }
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      if (latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, latencyMs));
      const fault = takeFault(modelId, streamed);
      if (fault?.fault === 'hang') {
        record.fault = 'hang';
        await new Promise((resolve) => response.once('close', resolve));
        return;
      }
      const answer = await serve(modelId, raw.length, body, fault, record, streamed, options.claude ?? {});
      if ('events' in answer) await sendStream(response, record, answer);
      else send(answer);
    } finally {
      inFlight--;
    }
  };

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      if (!response.headersSent) {
        const answer = errorAnswer(500, 'InternalServerException', String(error));
        response.writeHead(answer.status, { ...answer.headers, 'x-amzn-RequestId': randomUUID() });
        response.end(answer.body);
      } else response.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    scheduleErrors(specs) {
      for (const spec of specs) faults.push(typeof spec === 'string' ? { fault: spec } : { ...spec });
    },
    reset() {
      requests.length = 0;
      faults = [];
      maxInFlight = inFlight;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A streamed Claude reply: its Messages events, and the exception that cuts it, if one was scheduled. */
interface StreamAnswer {
  events: unknown[];
  exception?: { type: string; message: string; afterChunks: number };
}

async function serve(
  modelId: string,
  bodyBytes: number,
  body: unknown,
  fault: Exclude<BedrockStandInFaultSpec, BedrockStandInFault> | undefined,
  record: BedrockStandInRequest,
  streamed: boolean,
  claude: BedrockStandInClaudeOptions,
): Promise<Answer | StreamAnswer> {
  if (fault) record.fault = fault.fault;
  if (fault && fault.fault in ERRORS) {
    const spec = ERRORS[fault.fault as keyof typeof ERRORS];
    return errorAnswer(spec.status, spec.type, spec.message, fault.retryAfter ?? fault.retryAfterSeconds);
  }
  if (fault?.fault === 'malformed-json') {
    return { status: 200, headers: { 'content-type': 'application/json' }, body: '{"embedding": [0.1, 0.2,' };
  }
  const served = servedModel(modelId);
  const maxBodyBytes = served === 'claude' ? MAX_CLAUDE_BODY_BYTES : MAX_BODY_BYTES;
  if (bodyBytes > maxBodyBytes) {
    return errorAnswer(
      400,
      'ValidationException',
      `1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have length less than or equal to ${maxBodyBytes}`,
    );
  }
  if (served === undefined) return errorAnswer(400, 'ValidationException', 'The provided model identifier is invalid.');
  if (streamed && served !== 'claude') {
    return errorAnswer(400, 'ValidationException', `The model ${modelId} does not support response streaming.`);
  }
  if (body === undefined || typeof body !== 'object' || body === null || Array.isArray(body)) {
    return errorAnswer(400, 'ValidationException', 'Malformed input request: the body must be a JSON object.');
  }
  const object = body as Record<string, unknown>;
  try {
    if (served === 'claude') {
      const streamFault = fault && isStreamFault(fault.fault) ? fault : undefined;
      return await claudeResponse(record, object, streamed, claude, streamFault);
    }
    const payload = served.startsWith('stability.')
      ? stabilityResponse(served, object, fault?.fault)
      : served.startsWith('cohere.')
        ? cohereResponse(served, object)
        : titanResponse(served, object);
    return { status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) };
  } catch (error) {
    if (error instanceof RequestProblem) return errorAnswer(400, 'ValidationException', error.message);
    throw error;
  }
}

/** Refuses, as Bedrock does, a key the model's schema does not list. */
function refuseExtraKeys(body: Record<string, unknown>, allowed: readonly string[]): void {
  const extra = Object.keys(body).filter((key) => !allowed.includes(key));
  if (extra.length > 0) {
    throw new RequestProblem(
      `Malformed input request: ${extra.map((key) => `#: extraneous key [${key}] is not permitted`).join('')}, please reformat your input and try again.`,
    );
  }
}

/** Tokens the stand-in counts for a prompt's content: a string, or blocks (text counted as text, others as JSON). */
function contentTokens(content: unknown): number {
  if (typeof content === 'string') return Math.ceil(content.length / 4);
  if (!Array.isArray(content)) return 0;
  return content.reduce<number>((sum, block) => {
    const text = (block as { text?: unknown } | null)?.text;
    return sum + Math.ceil((typeof text === 'string' ? text : JSON.stringify(block)).length / 4);
  }, 0);
}

async function claudeResponse(
  record: BedrockStandInRequest,
  body: Record<string, unknown>,
  streamed: boolean,
  options: BedrockStandInClaudeOptions,
  streamFault: Exclude<BedrockStandInFaultSpec, BedrockStandInFault> | undefined,
): Promise<Answer | StreamAnswer> {
  // As Bedrock: the model and streaming are chosen by the path, so the Messages API's own keys are refused.
  const extra = ['model', 'stream'].filter((key) => key in body);
  if (extra.length > 0) {
    throw new RequestProblem(
      `Malformed input request: ${extra.map((key) => `#: extraneous key [${key}] is not permitted`).join('')}, please reformat your input and try again.`,
    );
  }
  const missing = ['anthropic_version', 'max_tokens', 'messages'].filter((key) => !(key in body));
  if (missing.length > 0) {
    throw new RequestProblem(
      `Malformed input request: ${missing.map((key) => `#: required key [${key}] not found`).join('')}, please reformat your input and try again.`,
    );
  }
  const illFormed = surrogateProblem(body);
  if (illFormed) throw new RequestProblem(`Malformed input request: the body is not valid JSON: ${illFormed}`);
  if (body.anthropic_version !== BEDROCK_ANTHROPIC_VERSION) {
    throw new RequestProblem(`Invalid API version: ${String(body.anthropic_version)}`);
  }
  const maxTokens = body.max_tokens;
  if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1) {
    throw new RequestProblem('Malformed input request: #/max_tokens: expected type: Integer, minimum 1');
  }
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    throw new RequestProblem('Malformed input request: #/messages: expected minimum item count: 1');
  }
  const format = (body.output_config as { format?: { type?: unknown; schema?: unknown } } | undefined)?.format;
  if (format) {
    const problems =
      format.type === 'json_schema' ? strictSchemaProblems(format.schema) : ['format.type must be json_schema'];
    if (problems.length > 0)
      throw new RequestProblem(`output_config.format.schema: ${problems.slice(0, 5).join('; ')}`);
  }
  const request: AnthropicStandInRequest = {
    method: 'POST',
    path: record.route.slice(record.route.indexOf(' ') + 1),
    headers: record.headers,
    body,
    receivedAt: Date.now(),
  };
  const reply = await (options.respond ?? defaultStandInReply)(request);
  const messages = body.messages as Array<{ content?: unknown }>;
  const { message, events } = messageAndEvents(
    typeof reply === 'string' ? reply : JSON.stringify(reply),
    maxTokens,
    Math.max(1, options.streamChunkChars ?? 200),
    {
      id: `msg_bdrk_${randomUUID().replaceAll('-', '')}`,
      model: record.modelId.replace(CLAUDE_PROFILE_PREFIX, '').replace(/^anthropic\./, ''),
      usage: (outputTokens): BedrockStandInClaudeUsage => ({
        input_tokens:
          contentTokens(body.system) + messages.reduce((sum, turn) => sum + contentTokens(turn?.content), 0),
        output_tokens: outputTokens,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        ...options.usage?.(request),
      }),
    },
  );
  if (!streamed) {
    return { status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify(message) };
  }
  const { usage } = message;
  // Bedrock adds its own metrics to the last event.
  events.push({
    ...events.pop()!,
    'amazon-bedrock-invocationMetrics': {
      inputTokenCount: usage.input_tokens,
      outputTokenCount: usage.output_tokens,
      invocationLatency: 0,
      firstByteLatency: 0,
      cacheReadInputTokenCount: usage.cache_read_input_tokens,
      cacheWriteInputTokenCount: usage.cache_creation_input_tokens,
    },
  });
  if (!streamFault) return { events };
  return {
    events,
    exception: {
      ...STREAM_EXCEPTIONS[streamFault.fault as BedrockStandInStreamFault],
      afterChunks: Math.max(0, streamFault.afterChunks ?? 1),
    },
  };
}

type EventStreamCodec = InstanceType<typeof import('@smithy/eventstream-codec').EventStreamCodec>;

const EVENT_STREAM_CODEC_PACKAGE = '@smithy/eventstream-codec';
let codecPromise: Promise<EventStreamCodec> | undefined;

/** Loads the event-stream codec once, on the first streamed answer; a missing package names itself. */
function loadEventStreamCodec(): Promise<EventStreamCodec> {
  codecPromise ??= import('@smithy/eventstream-codec').then(
    (module) =>
      new module.EventStreamCodec(
        (bytes: Uint8Array) => Buffer.from(bytes).toString('utf8'),
        (text: string) => new Uint8Array(Buffer.from(text, 'utf8')),
      ),
    (error: unknown) => {
      codecPromise = undefined;
      throw new MissingDependencyError(
        EVENT_STREAM_CODEC_PACKAGE,
        'The Bedrock stand-in’s streamed answers (InvokeModelWithResponseStream)',
        { cause: error },
      );
    },
  );
  return codecPromise;
}

/**
 * Sends a streamed Claude reply as Bedrock frames it: one `chunk` event per Messages event, its payload
 * `{"bytes": base64(JSON)}`; a scheduled exception replaces the rest after `afterChunks` chunks.
 */
async function sendStream(
  response: ServerResponse,
  record: BedrockStandInRequest,
  answer: StreamAnswer,
): Promise<void> {
  const codec = await loadEventStreamCodec();
  const stringHeader = (value: string) => ({ type: 'string' as const, value });
  record.status = 200;
  response.writeHead(200, {
    'content-type': 'application/vnd.amazon.eventstream',
    'x-amzn-RequestId': record.requestId,
    'x-amzn-bedrock-content-type': 'application/json',
  });
  let closed = false;
  response.on('close', () => {
    closed = true;
  });
  const limit = answer.exception ? Math.min(answer.exception.afterChunks, answer.events.length) : answer.events.length;
  for (let index = 0; index < limit && !closed; index++) {
    const bytes = Buffer.from(JSON.stringify(answer.events[index]), 'utf8').toString('base64');
    response.write(
      codec.encode({
        headers: {
          ':message-type': stringHeader('event'),
          ':event-type': stringHeader('chunk'),
          ':content-type': stringHeader('application/json'),
        },
        body: new Uint8Array(Buffer.from(JSON.stringify({ bytes }), 'utf8')),
      }),
    );
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (answer.exception && !closed) {
    response.write(
      codec.encode({
        headers: {
          ':message-type': stringHeader('exception'),
          ':exception-type': stringHeader(answer.exception.type),
          ':content-type': stringHeader('application/json'),
        },
        body: new Uint8Array(Buffer.from(JSON.stringify({ message: answer.exception.message }), 'utf8')),
      }),
    );
  }
  response.end();
}

function titanResponse(modelId: string, body: Record<string, unknown>): unknown {
  const isV2 = modelId === 'amazon.titan-embed-text-v2:0';
  refuseExtraKeys(body, isV2 ? ['inputText', 'dimensions', 'normalize', 'embeddingTypes'] : ['inputText']);
  const text = body.inputText;
  if (typeof text !== 'string' || text.length === 0) {
    throw new RequestProblem('Malformed input request: expected minLength: 1, actual: 0, please reformat your input');
  }
  if (text.length > TITAN_MAX_CHARACTERS) {
    throw new RequestProblem(`Malformed input request: inputText is longer than ${TITAN_MAX_CHARACTERS} characters`);
  }
  const tokens = estimateTokens(text);
  if (tokens > TITAN_MAX_TOKENS) {
    throw new RequestProblem(
      `400 Bad Request: Too many input tokens. Max input tokens: ${TITAN_MAX_TOKENS}, request input token count: ${tokens}`,
    );
  }
  let dimensions = 1536;
  if (isV2) {
    dimensions = body.dimensions === undefined ? 1024 : (body.dimensions as number);
    if (![256, 512, 1024].includes(dimensions)) {
      throw new RequestProblem(
        `Malformed input request: dimensions must be one of 256, 512, 1024, got ${String(body.dimensions)}`,
      );
    }
    if (body.normalize !== undefined && typeof body.normalize !== 'boolean') {
      throw new RequestProblem('Malformed input request: normalize must be a boolean');
    }
    const types = body.embeddingTypes;
    if (
      types !== undefined &&
      (!Array.isArray(types) ||
        types.length === 0 ||
        types.some((type) => !TITAN_EMBEDDING_TYPES.includes(type as string)))
    ) {
      throw new RequestProblem(
        `Malformed input request: embeddingTypes must be a non-empty subset of ${TITAN_EMBEDDING_TYPES.join(', ')}`,
      );
    }
  }
  const embedding = Array.from(pseudoEmbedding(text, dimensions, 'titan'));
  if (!isV2) return { embedding, inputTextTokenCount: tokens };
  const types = (body.embeddingTypes as string[] | undefined) ?? ['float'];
  const embeddingsByType: Record<string, number[]> = {};
  if (types.includes('float')) embeddingsByType.float = embedding;
  // Binary: one 0 or 1 per dimension, by the sign of the value.
  if (types.includes('binary')) embeddingsByType.binary = embedding.map((value) => (value > 0 ? 1 : 0));
  return { embedding, inputTextTokenCount: tokens, embeddingsByType };
}

function cohereResponse(_modelId: string, body: Record<string, unknown>): unknown {
  refuseExtraKeys(body, COHERE_KEYS);
  const inputTypes = ['search_document', 'search_query', 'classification', 'clustering'];
  if (typeof body.input_type !== 'string' || !inputTypes.includes(body.input_type)) {
    throw new RequestProblem(`Malformed input request: input_type must be one of ${inputTypes.join(', ')}`);
  }
  const texts = body.texts;
  if (!Array.isArray(texts) || texts.length === 0)
    throw new RequestProblem('Malformed input request: texts must be a non-empty array');
  if (texts.length > 96)
    throw new RequestProblem(`Malformed input request: texts has ${texts.length} items, at most 96 are allowed`);
  if (texts.some((text) => typeof text !== 'string' || text.length === 0)) {
    throw new RequestProblem('Malformed input request: every text must be a non-empty string');
  }
  if (body.truncate !== undefined && !COHERE_TRUNCATE.includes(body.truncate as string)) {
    throw new RequestProblem(
      `Malformed input request: truncate must be one of ${COHERE_TRUNCATE.join(', ')}, got ${JSON.stringify(body.truncate)}`,
    );
  }
  // v4's default is not documented; the stand-in takes the strict reading (NONE, an error), as v3 documents.
  const truncates = body.truncate === 'LEFT' || body.truncate === 'RIGHT';
  const tooLong = (texts as string[]).findIndex((text) => estimateTokens(text) > COHERE_MAX_TOKENS);
  if (!truncates && tooLong >= 0) {
    throw new RequestProblem(
      `Malformed input request: texts[${tooLong}] has more than ${COHERE_MAX_TOKENS} tokens; set truncate to LEFT or RIGHT`,
    );
  }
  const dimensions = body.output_dimension === undefined ? 1536 : (body.output_dimension as number);
  if (![256, 512, 1024, 1536].includes(dimensions)) {
    throw new RequestProblem(`Malformed input request: output_dimension must be one of 256, 512, 1024, 1536`);
  }
  const types = body.embedding_types === undefined ? ['float'] : body.embedding_types;
  if (!Array.isArray(types) || !types.includes('float')) {
    throw new RequestProblem('This stand-in serves only embedding_types ["float"]');
  }
  const vectors = (texts as string[]).map((text) =>
    Array.from(pseudoEmbedding(text, dimensions, `cohere:${body.input_type as string}`)),
  );
  return {
    id: `stand-in-${requestCounter++}`,
    embeddings: { float: vectors },
    response_type: 'embeddings_by_type',
    texts,
  };
}

let requestCounter = 0;

function stabilityResponse(
  modelId: string,
  body: Record<string, unknown>,
  fault: BedrockStandInFault | undefined,
): unknown {
  refuseExtraKeys(body, modelId === 'stability.sd3-5-large-v1:0' ? SD35_KEYS : STABILITY_KEYS);
  if (typeof body.prompt !== 'string' || body.prompt.trim().length === 0) {
    throw new RequestProblem('Malformed input request: prompt must be a non-empty string');
  }
  if (body.prompt.length > MAX_PROMPT)
    throw new RequestProblem(`Malformed input request: prompt is longer than ${MAX_PROMPT} characters`);
  if (
    body.negative_prompt !== undefined &&
    (typeof body.negative_prompt !== 'string' || body.negative_prompt.length > MAX_PROMPT)
  ) {
    throw new RequestProblem(
      `Malformed input request: negative_prompt must be a string of at most ${MAX_PROMPT} characters`,
    );
  }
  if (body.aspect_ratio !== undefined && !STABILITY_ASPECT_RATIOS.includes(body.aspect_ratio as string)) {
    throw new RequestProblem(
      `Malformed input request: aspect_ratio must be one of ${STABILITY_ASPECT_RATIOS.join(', ')}`,
    );
  }
  const asked = body.seed === undefined ? 0 : body.seed;
  if (typeof asked !== 'number' || !Number.isInteger(asked) || asked < 0 || asked > MAX_SEED) {
    throw new RequestProblem(`Malformed input request: seed must be an integer in 0..${MAX_SEED}`);
  }
  // As on Stability, 0 or no seed means a random one, reported in `seeds`.
  const seed = asked === 0 ? randomInt(1, MAX_SEED + 1) : asked;
  if (body.output_format !== undefined && !['png', 'jpeg'].includes(body.output_format as string)) {
    throw new RequestProblem('Malformed input request: output_format must be one of png, jpeg');
  }
  if (modelId === 'stability.sd3-5-large-v1:0' && body.mode !== undefined && body.mode !== 'text-to-image') {
    throw new RequestProblem('This stand-in serves only mode "text-to-image"');
  }
  // The filtered answer as Bedrock documents it: the reason alone, no seeds and no images.
  if (fault === 'filtered') return { finish_reasons: ['Filter reason: prompt'] };
  if (fault === 'inference-error') return { seeds: [seed], finish_reasons: ['Inference error'], images: [] };
  const image =
    fault === 'garbage-image'
      ? Buffer.from('this is not an image at all', 'utf8')
      : body.output_format === 'jpeg'
        ? tinyJpeg(seed, body.prompt)
        : tinyPng(seed, body.prompt);
  return { seeds: [seed], finish_reasons: [null], images: [image.toString('base64')] };
}

/** Tokens of `text` as the stand-in counts them: about 4 characters a token, as Bedrock's documentation says. */
function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/** Whether `authorization` has the form of a SigV4 signature or of a Bedrock API key. The signature is not checked. */
function isAuthorized(authorization: string | undefined): boolean {
  if (authorization === undefined) return false;
  if (/^Bearer \S+$/.test(authorization)) return true;
  return /^AWS4-HMAC-SHA256 Credential=\S+, ?SignedHeaders=\S+, ?Signature=[0-9a-f]+$/.test(authorization);
}

/**
 * A deterministic unit vector for `text`: each word adds a signed unit to a hashed dimension (so texts sharing words
 * point the same way), and `salt` (the model and input type) perturbs it, so a query and a document of the same
 * text differ slightly, as they do with Cohere's input types.
 */
function pseudoEmbedding(text: string, dimensions: number, salt: string): Float32Array {
  const vector = new Float32Array(dimensions);
  const words = text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [text];
  for (const word of words) {
    const hash = fnv1a(word);
    vector[hash % dimensions]! += hash & 0x80000000 ? -1 : 1;
  }
  let state = fnv1a(`${salt}|${text}`) || 1;
  for (let index = 0; index < dimensions; index++) {
    // xorshift32: a small deterministic noise so no two different texts share a vector.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    vector[index]! += ((state >>> 0) / 0xffffffff - 0.5) * 0.1;
  }
  let norm = 0;
  for (const value of vector) norm += value * value;
  norm = Math.sqrt(norm) || 1;
  for (let index = 0; index < dimensions; index++) vector[index]! /= norm;
  return vector;
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** An 8×8 RGB PNG whose colours follow the seed (and the prompt), so equal seeds give equal bytes. */
function tinyPng(seed: number, prompt: string): Buffer {
  const size = 8;
  const tint = fnv1a(prompt);
  const raw = Buffer.alloc(size * (1 + size * 3));
  for (let y = 0; y < size; y++) {
    const row = y * (1 + size * 3);
    raw[row] = 0; // filter type: none
    for (let x = 0; x < size; x++) {
      const offset = row + 1 + x * 3;
      raw[offset] = (seed + x * 31) & 0xff;
      raw[offset + 1] = ((seed >>> 8) + y * 29) & 0xff;
      raw[offset + 2] = ((seed >>> 16) ^ tint ^ (x * y)) & 0xff;
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // colour type: truecolour
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', header),
    pngChunk('IDAT', deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * An 8×8 baseline JPEG of one flat colour that follows the seed (and the prompt), so equal seeds give equal bytes:
 * one block per component (Y, Cb, Cr) holding only its DC coefficient, a quantisation table of ones, and the two
 * smallest Huffman tables that code it (12 DC sizes in 4 bits each; end-of-block as the one AC symbol, in 1 bit).
 */
function tinyJpeg(seed: number, prompt: string): Buffer {
  const tint = fnv1a(prompt);
  const levels = [seed & 0xff, (seed >>> 8) & 0xff, ((seed >>> 16) ^ tint) & 0xff];
  const segment = (marker: number, data: number[]) =>
    Buffer.from([0xff, marker, (data.length + 2) >> 8, (data.length + 2) & 0xff, ...data]);
  const bits = new JpegBitWriter();
  for (const level of levels) {
    // A flat 8×8 block's DC coefficient is 8 × (sample − 128); the predictor of each component starts at 0.
    const dc = 8 * (level - 128);
    const size = dc === 0 ? 0 : Math.floor(Math.log2(Math.abs(dc))) + 1;
    bits.write(size, 4);
    if (size > 0) bits.write(dc > 0 ? dc : dc + (1 << size) - 1, size);
    bits.write(0, 1); // end of block: every AC coefficient is 0
  }
  const sizes = new Array<number>(16).fill(0);
  sizes[3] = 12;
  const endOfBlockOnly = new Array<number>(16).fill(0);
  endOfBlockOnly[0] = 1;
  return Buffer.concat([
    Buffer.from([0xff, 0xd8]),
    segment(0xe0, [0x4a, 0x46, 0x49, 0x46, 0x00, 1, 1, 0, 0, 1, 0, 1, 0, 0]), // JFIF 1.01, no thumbnail
    segment(0xdb, [0x00, ...new Array<number>(64).fill(1)]),
    segment(0xc0, [8, 0, 8, 0, 8, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]),
    segment(0xc4, [0x00, ...sizes, ...Array.from({ length: 12 }, (_, index) => index)]),
    segment(0xc4, [0x10, ...endOfBlockOnly, 0x00]),
    segment(0xda, [3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0]),
    bits.finish(),
    Buffer.from([0xff, 0xd9]),
  ]);
}

/** Entropy-coded JPEG data: bits most significant first, padded with ones, a 0x00 stuffed after each 0xff. */
class JpegBitWriter {
  private readonly bytes: number[] = [];
  private current = 0;
  private count = 0;

  write(value: number, length: number): void {
    for (let bit = length - 1; bit >= 0; bit--) {
      this.current = (this.current << 1) | ((value >> bit) & 1);
      if (++this.count === 8) this.flush();
    }
  }

  finish(): Buffer {
    while (this.count !== 0) this.write(1, 1);
    return Buffer.from(this.bytes);
  }

  private flush(): void {
    this.bytes.push(this.current);
    if (this.current === 0xff) this.bytes.push(0x00);
    this.current = 0;
    this.count = 0;
  }
}

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length, 0);
  const typed = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(typed), 0);
  return Buffer.concat([length, typed, crc]);
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = CRC_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function errorAnswer(status: number, type: string, message: string, retryAfter?: number | string): Answer {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'x-amzn-errortype': `${type}:http://internal.amazon.com/coral/com.amazon.bedrock/`,
  };
  if (retryAfter !== undefined) headers['retry-after'] = String(retryAfter);
  return { status, headers, body: JSON.stringify({ message }) };
}

function readBody(request: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });
}
