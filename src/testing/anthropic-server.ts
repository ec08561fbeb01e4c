/**
 * A local stand-in for the Anthropic Messages API, so tests run the real `@anthropic-ai/sdk` client over the real
 * protocol: `POST /v1/messages` as JSON or as server-sent events, `POST /v1/messages/count_tokens`, usage with
 * prompt-cache fields that behave like the real cache, and failures on demand. Built on `node:http` alone.
 *
 * Tokens are estimated as ⌈characters / 4⌉ of each block's text (or canonical JSON for non-text blocks), so the
 * figures are deterministic. The same estimate sets the limits: a prompt over `contextWindowTokens` is refused with
 * 400 `prompt is too long: N tokens > M maximum`, and a reply longer than `max_tokens` is cut after
 * `max_tokens × 4` characters with `stop_reason: "max_tokens"` (streamed or not, the same cut).
 *
 * Cache: the prompt is read as blocks in the order tools → system → messages. For every block carrying
 * `cache_control` (at most 4, as on the real API), the prefix up to and including it is a cache candidate keyed by
 * the model and the hash of the prefix's canonical JSON (without the `cache_control` markers). The longest candidate
 * still alive is a read (and its lifetime is refreshed); later candidates whose prefix reaches `minPrefixTokens` are
 * written. An entry lives one hour when its block asked `ttl: "1h"`, otherwise `ttlMs`; `usage.cache_creation`
 * splits the written tokens by lifetime as the API bills them (1-hour up to the last 1-hour breakpoint, 5-minute
 * after it). Everything else is plain input. Below the minimum nothing is cached and no error is raised, as on the
 * real API.
 *
 * Like the real API, a body holding a lone UTF-16 surrogate (which `JSON.stringify` writes as a bare `\ud83d`
 * escape) is refused with 400 `The request body is not valid JSON: no low surrogate in string`.
 *
 * @module
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Clock, systemClock } from '../core/clock.js';
import { estimateTokens, messageAndEvents, surrogateProblem } from './messages-reply.js';

/** A failure the stand-in produces for the next request instead of a normal reply. */
export type AnthropicStandInFailure =
  /** 429 `rate_limit_error` with `retry-after` (seconds, default 0). */
  | { kind: 'rate-limit'; retryAfterSeconds?: number }
  /** 529 `overloaded_error`. */
  | { kind: 'overloaded' }
  /** 500 `api_error`. */
  | { kind: 'server-error' }
  /** 200 whose body is not JSON (for a streamed request: an event whose data is not JSON). */
  | { kind: 'malformed-body' }
  /** 200 with an empty body, no event for a streamed request (a proxy that cut the reply before its first byte). */
  | { kind: 'empty-body' }
  /** A streamed request answered with the whole reply as JSON, as a gateway that does not stream answers it. */
  | { kind: 'not-streamed' }
  /** A normal reply with `stop_reason: "refusal"`. */
  | { kind: 'refusal' };

/** A request as the stand-in received it. */
export interface AnthropicStandInRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  // biome-ignore lint/suspicious/noExplicitAny: a decoded JSON body, read freely by tests
  body: any;
  receivedAt: number;
}

/** What `respond` returns: an object (sent as its JSON text) or raw text (sent as is, e.g. malformed output). */
export type AnthropicStandInReply = string | Record<string, unknown> | unknown[];

/** Options of `startAnthropicStandIn`. */
export interface AnthropicStandInOptions {
  /** Writes the model's reply for a `/v1/messages` request. Default: a valid scene built from the request. */
  respond?: (request: AnthropicStandInRequest) => AnthropicStandInReply | Promise<AnthropicStandInReply>;
  cache?: {
    /**
     * Lifetime of a 5-minute cache entry (a block marked without `ttl`, or `ttl: "5m"`), refreshed on every read.
     * Default 5 minutes. Entries marked `ttl: "1h"` live one hour.
     */
    ttlMs?: number;
    /**
     * Shortest prefix that is cached, in tokens, for every model. Default: each model's own minimum, as Anthropic
     * documents it (`minCacheablePrefixTokens`): 4,096 for Claude Haiku 4.5 and Opus 4.5 / 4.6, 2,048 for Haiku 3
     * and 3.5, 1,024 for the others.
     */
    minPrefixTokens?: number;
  };
  /** Time source of the cache. Default the system clock. */
  clock?: Clock;
  /** Longest prompt accepted, in estimated tokens; a longer one gets 400 "prompt is too long". Default 200,000. */
  contextWindowTokens?: number;
  /** Characters per streamed text delta. Default 200. */
  streamChunkChars?: number;
  /** Pause between streamed deltas, in real milliseconds. Default 0. */
  streamDelayMs?: number;
}

/** A running stand-in. */
export interface AnthropicStandIn {
  /** Base URL to pass as the SDK's `baseURL`. */
  url: string;
  /** Every request received, oldest first. */
  requests: AnthropicStandInRequest[];
  /** Queues failures, one per coming `/v1/messages` request, in order. */
  scheduleErrors(failures: ReadonlyArray<AnthropicStandInFailure | AnthropicStandInFailure['kind']>): void;
  /** Forgets every cache entry. */
  clearCache(): void;
  close(): Promise<void>;
}

type Block = Record<string, unknown>;

/** How many block boundaries before a breakpoint the cache looks at for an earlier hit (about 20 on the real API). */
const LOOKBACK_BLOCKS = 20;

/** Most `cache_control` breakpoints one request may carry on the real API. */
const MAX_CACHE_BREAKPOINTS = 4;

/**
 * The shortest prefix `model` caches, in tokens, as Anthropic's prompt-caching documentation gives it: below it a
 * breakpoint caches nothing, without an error.
 *
 * @example
 * ```ts
 * import { minCacheablePrefixTokens } from 'storyloom/testing';
 * minCacheablePrefixTokens('claude-haiku-4-5'); // 4096
 * ```
 */
export function minCacheablePrefixTokens(model: string): number {
  const id = model.slice(Math.max(0, model.indexOf('claude-')));
  if (/^claude-(haiku-4-5|opus-4-5|opus-4-6)/.test(id)) return 4_096;
  if (/^claude-(3-haiku|3-5-haiku|haiku-3)/.test(id)) return 2_048;
  return 1_024;
}

/** Lifetime of an entry written by a block marked `ttl: "1h"`. */
const ONE_HOUR_MS = 3_600_000;

function withoutCacheControl(block: unknown): unknown {
  if (typeof block !== 'object' || block === null || Array.isArray(block)) return block;
  const { cache_control: _ignored, ...rest } = block as Block;
  return rest;
}

function blockTokens(block: unknown): number {
  if (typeof block === 'string') return estimateTokens(block);
  const record = block as Block;
  if (record && typeof record.text === 'string') return estimateTokens(record.text);
  return estimateTokens(JSON.stringify(withoutCacheControl(block)));
}

interface PromptBlock {
  key: unknown;
  tokens: number;
  /** Carries a `cache_control` breakpoint (`null` counts as none, as on the real API). */
  marked: boolean;
  /** The breakpoint asked for a one-hour entry. */
  oneHour: boolean;
}

/** The prompt as blocks in cache order: tools → system → messages, each with its role for the hash. */
function promptBlocks(body: Block): PromptBlock[] {
  const blocks: PromptBlock[] = [];
  const push = (scope: string, block: unknown) => {
    const cacheControl =
      typeof block === 'object' && block !== null ? ((block as Block).cache_control as Block | null | undefined) : null;
    const marked = cacheControl !== undefined && cacheControl !== null;
    const oneHour = marked && cacheControl.ttl === '1h';
    blocks.push({ key: [scope, withoutCacheControl(block)], tokens: blockTokens(block), marked, oneHour });
  };
  for (const tool of Array.isArray(body.tools) ? body.tools : []) push('tool', tool);
  if (typeof body.system === 'string') push('system', body.system);
  else for (const block of Array.isArray(body.system) ? body.system : []) push('system', block);
  for (const message of Array.isArray(body.messages) ? (body.messages as Block[]) : []) {
    const role = String(message?.role);
    if (typeof message?.content === 'string') push(role, message.content);
    else for (const block of Array.isArray(message?.content) ? message.content : []) push(role, block);
  }
  return blocks;
}

/** Walks a JSON Schema and returns a minimal valid instance; strings that look like prose get `text`. */
function instanceOf(schema: unknown, name: string, text: string): unknown {
  if (typeof schema !== 'object' || schema === null) return null;
  const node = schema as Block;
  if (Array.isArray(node.enum)) return node.enum[0];
  if ('const' in node) return node.const;
  if (Array.isArray(node.anyOf)) {
    const nullable = (node.anyOf as Block[]).find((variant) => variant.type === 'null');
    return nullable ? null : instanceOf(node.anyOf[0], name, text);
  }
  switch (node.type) {
    case 'object': {
      const properties = (node.properties ?? {}) as Record<string, unknown>;
      const required = new Set(Array.isArray(node.required) ? (node.required as string[]) : Object.keys(properties));
      return Object.fromEntries(
        Object.entries(properties)
          .filter(([key]) => required.has(key))
          .map(([key, child]) => [key, instanceOf(child, key, text)]),
      );
    }
    case 'array':
      return [];
    case 'number':
    case 'integer':
      return name === 'importance' ? 0.5 : 0;
    case 'boolean':
      return false;
    case 'null':
      return null;
    default:
      if (name === 'text') return text;
      if (name === 'title') return 'The Next Scene';
      if (name === 'summary') return 'The story moves on.';
      return '';
  }
}

const SCENE_PROSE =
  'The lamp turned above the sleeping island while the sea breathed against the rocks. Nobody spoke; the night kept its own counsel. ';

/**
 * The default reply: a minimal scene that any state accepts (no characters, an empty delta), shaped by the
 * request's `output_config.format` schema when there is one.
 */
export function defaultStandInReply(request: AnthropicStandInRequest, sceneChars = 2_000): Record<string, unknown> {
  const text = SCENE_PROSE.repeat(Math.ceil(sceneChars / SCENE_PROSE.length))
    .slice(0, sceneChars)
    .trim();
  const schema = request.body?.output_config?.format?.schema;
  if (schema) return instanceOf(schema, '', text) as Record<string, unknown>;
  return { scene: { title: 'The Next Scene', text, summary: 'The story moves on.' }, delta: {} };
}

const ALLOWED_SCHEMA_KEYWORDS = new Set([
  'type',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'enum',
  'const',
  'anyOf',
  'allOf',
  '$ref',
  '$defs',
  'description',
  'title',
  'format',
  'minItems',
]);

/** Problems the real API's structured output would refuse: open objects and unsupported keywords. */
export function strictSchemaProblems(schema: unknown, path = '$'): string[] {
  if (typeof schema !== 'object' || schema === null) return [`${path}: must be an object`];
  const node = schema as Block;
  const problems: string[] = [];
  for (const keyword of Object.keys(node)) {
    if (!ALLOWED_SCHEMA_KEYWORDS.has(keyword)) problems.push(`${path}: keyword "${keyword}" is not supported`);
  }
  if (node.type === undefined && !node.anyOf && !node.enum && !('const' in node) && !node.$ref && !node.allOf) {
    problems.push(`${path}: has no type`);
  }
  if (node.type === 'object' && node.additionalProperties !== false) {
    problems.push(`${path}: objects must set additionalProperties to false`);
  }
  if (node.minItems !== undefined && node.minItems !== 0 && node.minItems !== 1) {
    problems.push(`${path}: minItems other than 0 or 1 is not supported`);
  }
  for (const [key, child] of Object.entries((node.properties ?? {}) as Record<string, unknown>)) {
    problems.push(...strictSchemaProblems(child, `${path}.${key}`));
  }
  if (node.items !== undefined) problems.push(...strictSchemaProblems(node.items, `${path}[]`));
  for (const [index, variant] of (Array.isArray(node.anyOf) ? node.anyOf : []).entries()) {
    problems.push(...strictSchemaProblems(variant, `${path}.anyOf[${index}]`));
  }
  return problems;
}

function hashOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${randomUUID()}`, ...headers });
  response.end(JSON.stringify(body));
}

function sendError(response: ServerResponse, status: number, type: string, message: string, headers = {}): void {
  sendJson(response, status, { type: 'error', error: { type, message }, request_id: `req_${randomUUID()}` }, headers);
}

/**
 * Starts the stand-in on an ephemeral port of 127.0.0.1.
 *
 * @example
 * ```ts
 * import Anthropic from '@anthropic-ai/sdk';
 * import { startAnthropicStandIn } from 'storyloom/testing';
 * const standIn = await startAnthropicStandIn({ cache: { ttlMs: 300_000, minPrefixTokens: 1024 } });
 * const client = new Anthropic({ apiKey: 'test', baseURL: standIn.url });
 * standIn.scheduleErrors([{ kind: 'rate-limit', retryAfterSeconds: 0 }]);
 * await standIn.close();
 * ```
 */
export async function startAnthropicStandIn(options: AnthropicStandInOptions = {}): Promise<AnthropicStandIn> {
  const clock = options.clock ?? systemClock;
  const ttlMs = options.cache?.ttlMs ?? 300_000;
  const minPrefixOf = (model: string) => options.cache?.minPrefixTokens ?? minCacheablePrefixTokens(model);
  const contextWindowTokens = options.contextWindowTokens ?? 200_000;
  const chunkChars = Math.max(1, options.streamChunkChars ?? 200);
  const streamDelayMs = options.streamDelayMs ?? 0;
  const requests: AnthropicStandInRequest[] = [];
  const failures: AnthropicStandInFailure[] = [];
  /** Cache entries by prefix hash: when each expires, and the lifetime a read renews (that of the block that wrote it). */
  const cache = new Map<string, { expiresAt: number; lifetimeMs: number }>();

  function cacheUsage(body: Block) {
    const blocks = promptBlocks(body);
    const total = blocks.reduce((sum, block) => sum + block.tokens, 0);
    const model = String(body.model);
    const now = clock.now();
    const through: number[] = [];
    let running = 0;
    for (const block of blocks) {
      running += block.tokens;
      through.push(running);
    }
    const hashThrough = (index: number) => hashOf([model, blocks.slice(0, index + 1).map((b) => b.key)]);
    const minPrefixTokens = minPrefixOf(model);
    const marked = blocks.flatMap((block, index) => (block.marked ? [index] : []));
    // Like the real API: from each breakpoint, the longest earlier prefix still cached is read, checking every block
    // boundary up to 20 blocks back; writes happen only at breakpoints.
    let read = 0;
    let readBoundary = -1;
    search: for (let position = marked.length - 1; position >= 0; position--) {
      const breakpoint = marked[position]!;
      for (let index = breakpoint; index >= Math.max(0, breakpoint - LOOKBACK_BLOCKS + 1); index--) {
        const entry = cache.get(hashThrough(index));
        if (entry !== undefined && entry.expiresAt > now && through[index]! >= minPrefixTokens) {
          read = through[index]!;
          readBoundary = index;
          entry.expiresAt = now + entry.lifetimeMs;
          break search;
        }
      }
    }
    // Billed as the API documents for mixed lifetimes: 1-hour writes up to the last 1-hour breakpoint written,
    // 5-minute writes from there to the last breakpoint written.
    let written = read;
    let writtenOneHour = read;
    for (const breakpoint of marked) {
      if (breakpoint <= readBoundary || through[breakpoint]! < minPrefixTokens) continue;
      const oneHour = blocks[breakpoint]!.oneHour;
      const lifetimeMs = oneHour ? ONE_HOUR_MS : ttlMs;
      cache.set(hashThrough(breakpoint), { expiresAt: now + lifetimeMs, lifetimeMs });
      written = through[breakpoint]!;
      if (oneHour) writtenOneHour = written;
    }
    const write = written - read;
    return {
      input_tokens: total - read - write,
      cache_read_input_tokens: read,
      cache_creation_input_tokens: write,
      cache_creation: {
        ephemeral_5m_input_tokens: written - writtenOneHour,
        ephemeral_1h_input_tokens: writtenOneHour - read,
      },
    };
  }

  /** The 400 the real API answers before it runs the model, or `undefined` when the request is acceptable. */
  function requestProblem(body: Block): string | undefined {
    if (typeof body?.model !== 'string' || typeof body.max_tokens !== 'number' || !Array.isArray(body.messages)) {
      return 'model, max_tokens and messages are required';
    }
    // As the real API: no text block may be empty, and a breakpoint on one is named as such.
    const textBlocks = [
      ...(Array.isArray(body.system) ? body.system : []),
      ...body.messages.flatMap((message: Block) => (Array.isArray(message?.content) ? message.content : [])),
    ].filter((block: Block) => block?.type === 'text');
    const empty = textBlocks.find((block: Block) => block.text === '');
    if (empty) {
      return empty.cache_control
        ? 'cache_control cannot be set for empty text blocks'
        : 'text content blocks must be non-empty';
    }
    if (textBlocks.some((block: Block) => typeof block.text === 'string' && !/\S/.test(block.text))) {
      return 'text content blocks must contain non-whitespace text';
    }
    const blocks = promptBlocks(body);
    const breakpoints = blocks.filter((block) => block.marked).length;
    if (breakpoints > MAX_CACHE_BREAKPOINTS) {
      return `A maximum of ${MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found ${breakpoints}.`;
    }
    const promptTokens = blocks.reduce((sum, block) => sum + block.tokens, 0);
    if (promptTokens > contextWindowTokens) {
      return `prompt is too long: ${promptTokens} tokens > ${contextWindowTokens} maximum`;
    }
    const format = (body.output_config as Block | undefined)?.format as Block | undefined;
    if (format) {
      const problems =
        format.type === 'json_schema' ? strictSchemaProblems(format.schema) : ['format.type must be json_schema'];
      if (problems.length > 0) return `output_config.format.schema: ${problems.slice(0, 5).join('; ')}`;
    }
    return undefined;
  }

  async function handleMessages(request: AnthropicStandInRequest, response: ServerResponse): Promise<void> {
    const body = request.body as Block;
    const problem = requestProblem(body);
    if (problem) return sendError(response, 400, 'invalid_request_error', problem);
    const failure = failures.shift();
    if (failure?.kind === 'rate-limit') {
      sendError(response, 429, 'rate_limit_error', 'Number of request tokens has exceeded your rate limit.', {
        'retry-after': String(failure.retryAfterSeconds ?? 0),
      });
      return;
    }
    if (failure?.kind === 'overloaded') return sendError(response, 529, 'overloaded_error', 'Overloaded');
    if (failure?.kind === 'server-error') return sendError(response, 500, 'api_error', 'Internal server error');
    const reply = failure?.kind === 'refusal' ? '' : await (options.respond ?? defaultStandInReply)(request);
    const id = `msg_${randomUUID().replaceAll('-', '')}`;
    const { message, events } = messageAndEvents(
      typeof reply === 'string' ? reply : JSON.stringify(reply),
      body.max_tokens as number,
      chunkChars,
      {
        id,
        model: body.model,
        usage: (outputTokens) => ({ ...cacheUsage(body), output_tokens: outputTokens, service_tier: 'standard' }),
        refusal: failure?.kind === 'refusal',
      },
    );
    if (body.stream !== true || failure?.kind === 'not-streamed') {
      if (failure?.kind === 'empty-body') {
        response.writeHead(200, { 'content-type': 'application/json', 'request-id': `req_${randomUUID()}` });
        response.end();
        return;
      }
      if (failure?.kind === 'malformed-body') {
        response.writeHead(200, { 'content-type': 'application/json', 'request-id': `req_${randomUUID()}` });
        response.end(`{"id":"${id}","type":"message","content":[{"type":"text","text":"trunc`);
        return;
      }
      sendJson(response, 200, message);
      return;
    }
    response.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'request-id': `req_${randomUUID()}`,
    });
    let closed = false;
    response.on('close', () => {
      closed = true;
    });
    const send = async (event: string, data: unknown) => {
      if (closed) return;
      response.write(`event: ${event}\ndata: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
      await new Promise((resolve) => (streamDelayMs > 0 ? setTimeout(resolve, streamDelayMs) : setImmediate(resolve)));
    };
    if (failure?.kind === 'empty-body') {
      response.end();
      return;
    }
    const [start, ...rest] = events;
    await send('message_start', start);
    if (failure?.kind === 'malformed-body') {
      await send('content_block_start', '{"type":"content_block_start","index":0,"content_block":{"type":"te');
      response.end();
      return;
    }
    for (const event of rest) {
      if (closed) break;
      await send(event.type, event);
    }
    response.end();
  }

  const server = createServer((incoming, response) => {
    void (async () => {
      const raw = await readBody(incoming);
      const path = (incoming.url ?? '/').split('?')[0]!;
      let body: unknown;
      try {
        body = raw === '' ? undefined : JSON.parse(raw);
      } catch {
        sendError(response, 400, 'invalid_request_error', 'The request body is not valid JSON');
        return;
      }
      const request: AnthropicStandInRequest = {
        method: incoming.method ?? 'GET',
        path,
        headers: incoming.headers,
        body,
        receivedAt: clock.now(),
      };
      requests.push(request);
      const illFormed = surrogateProblem(body);
      if (illFormed)
        return sendError(response, 400, 'invalid_request_error', `The request body is not valid JSON: ${illFormed}`);
      const authorized =
        Boolean(incoming.headers['x-api-key']) || /^Bearer\s+\S/.test(incoming.headers.authorization ?? '');
      if (!authorized)
        return sendError(response, 401, 'authentication_error', 'x-api-key or a bearer token is required');
      if (request.method !== 'POST') return sendError(response, 405, 'invalid_request_error', 'Only POST is supported');
      if (path === '/v1/messages') return handleMessages(request, response);
      if (path === '/v1/messages/count_tokens') {
        const blocks = promptBlocks(body as Block);
        return sendJson(response, 200, { input_tokens: blocks.reduce((sum, block) => sum + block.tokens, 0) });
      }
      sendError(response, 404, 'not_found_error', `No route for ${path}`);
    })().catch((error: unknown) => {
      if (!response.headersSent) sendError(response, 500, 'api_error', String(error));
      else response.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    scheduleErrors(list) {
      for (const item of list)
        failures.push(typeof item === 'string' ? ({ kind: item } as AnthropicStandInFailure) : item);
    },
    clearCache() {
      cache.clear();
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
