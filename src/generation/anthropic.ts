/**
 * Claude through the Anthropic API (`@anthropic-ai/sdk`, an optional peer dependency): the scene generator, the
 * chapter summarizer and the exact token counter, each built on a client this file creates, or on one you pass.
 *
 * The SDK is imported on first use, so a missing package surfaces as a `MissingDependencyError` that says what to
 * install instead of a module-resolution crash at import time.
 *
 * @module
 */

import type { Summarizer } from '../context/summarizer.js';
import type { Clock } from '../core/clock.js';
import { MissingDependencyError, ValidationError } from '../core/errors.js';
import {
  type ClaudeClient,
  type ClaudeSceneGeneratorOptions,
  createClaudeSceneGenerator,
} from './claude-scene-generator.js';
import {
  type ClaudeSummarizerOptions,
  type ClaudeTokenCounter,
  type ClaudeTokenCounterOptions,
  createClaudeSummarizer,
  createClaudeTokenCounter,
} from './claude-summarizer.js';
import { lazyClaudeClient } from './lazy-claude-client.js';
import type { SceneGenerator } from './scene-generator.js';

/** How to reach the Anthropic API. Give `client` to reuse a configured `Anthropic` instance instead. */
export interface AnthropicConnectionOptions {
  /** Default: the SDK reads `ANTHROPIC_API_KEY`. */
  apiKey?: string;
  /** Default: the SDK's (`ANTHROPIC_BASE_URL` or the public API). A local stand-in in tests. */
  baseURL?: string;
  /**
   * The SDK's per-request `timeout`, in ms: how long one request may wait for the response's headers, and no longer.
   * It does not cover the body after them, streamed or not: a server may send its headers at once and the reply
   * later, or never. What bounds the rest: the scene generator's `idleTimeoutMs` (a streamed reply) or
   * `replyTimeoutMs` (`stream: false`), and the `timeoutMs` of the summarizer and of the token counter. Default: the
   * SDK's (10 minutes).
   */
  timeout?: number;
  defaultHeaders?: Record<string, string>;
  /** An `Anthropic` client (or anything with its `messages` shape); the options above are then ignored. */
  client?: ClaudeClient;
}

type SdkModule = { default: new (options: Record<string, unknown>) => unknown };

let sdkLoading: Promise<SdkModule> | undefined;

function loadSdk(): Promise<SdkModule> {
  sdkLoading ??= import('@anthropic-ai/sdk').then(
    (module) => module as unknown as SdkModule,
    (error: unknown) => {
      sdkLoading = undefined;
      throw new MissingDependencyError('@anthropic-ai/sdk', 'storyloom/anthropic', { cause: error });
    },
  );
  return sdkLoading;
}

/** Creates the `Anthropic` client once, on first use. SDK retries are off: storyloom's retry policy is the one. */
function lazyClient(options: AnthropicConnectionOptions): ClaudeClient {
  if (options.client) return options.client;
  return lazyClaudeClient(
    async () => {
      const sdk = await loadSdk();
      const settings: Record<string, unknown> = { maxRetries: 0 };
      if (options.apiKey !== undefined) settings.apiKey = options.apiKey;
      if (options.baseURL !== undefined) settings.baseURL = options.baseURL;
      if (options.timeout !== undefined) settings.timeout = options.timeout;
      if (options.defaultHeaders !== undefined) settings.defaultHeaders = options.defaultHeaders;
      return new sdk.default(settings) as ClaudeClient;
    },
    { countTokens: true },
  );
}

/** Options of `createAnthropicSceneGenerator`: the connection, plus every option of the Claude scene generator. */
export type AnthropicSceneGeneratorOptions = AnthropicConnectionOptions &
  Omit<ClaudeSceneGeneratorOptions, 'client' | 'provider'>;

/**
 * A `SceneGenerator` on Claude through the Anthropic API.
 *
 * @example
 * ```ts
 * import { createAnthropicSceneGenerator } from 'storyloom/anthropic';
 * const generator = createAnthropicSceneGenerator({ model: 'claude-sonnet-4-6', maxTokens: 12_000 });
 * const { scene, delta, usage } = await generator.generate(request, { onProgress: console.log });
 * ```
 */
export function createAnthropicSceneGenerator(options: AnthropicSceneGeneratorOptions): SceneGenerator {
  if (!options || typeof options !== 'object') {
    throw new ValidationError('createAnthropicSceneGenerator needs an options object', {
      problems: [{ path: '(root)', message: 'must be an object' }],
    });
  }
  const {
    apiKey: _apiKey,
    baseURL: _baseURL,
    timeout: _timeout,
    defaultHeaders: _headers,
    client: _client,
    ...rest
  } = options;
  return createClaudeSceneGenerator({ ...rest, client: lazyClient(options), provider: 'anthropic' });
}

/** Options of `createAnthropicSummarizer`. */
export type AnthropicSummarizerOptions = AnthropicConnectionOptions &
  Omit<ClaudeSummarizerOptions, 'client' | 'provider'>;

/**
 * A `Summarizer` on Claude through the Anthropic API; give it a cheaper model than the narrator's.
 *
 * @example
 * ```ts
 * import { createAnthropicSummarizer } from 'storyloom/anthropic';
 * const summarizer = createAnthropicSummarizer({ model: 'claude-haiku-4-5' });
 * const summary = await summarizer.summarize(scenes.map((scene) => scene.text), { maxWords: 250 });
 * ```
 */
export function createAnthropicSummarizer(options: AnthropicSummarizerOptions): Summarizer {
  const { model, maxTokens, maxInputTokens, timeoutMs, retry, clock, onUsage, prices } = options;
  return createClaudeSummarizer({
    client: lazyClient(options),
    model,
    provider: 'anthropic',
    ...(onUsage !== undefined ? { onUsage } : {}),
    ...(prices !== undefined ? { prices } : {}),
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(maxInputTokens !== undefined ? { maxInputTokens } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(retry !== undefined ? { retry } : {}),
    ...(clock !== undefined ? { clock: clock as Clock } : {}),
  });
}

/** Options of `createAnthropicTokenizer`. */
export type AnthropicTokenizerOptions = AnthropicConnectionOptions &
  Omit<ClaudeTokenCounterOptions, 'client' | 'provider'>;

/**
 * A token counter with exact counts from the Anthropic API's `count_tokens`; see `createClaudeTokenCounter` for how
 * the synchronous `count` relates to `countTokensExact`.
 *
 * @example
 * ```ts
 * import { createAnthropicTokenizer } from 'storyloom/anthropic';
 * const tokenizer = createAnthropicTokenizer({ model: 'claude-sonnet-4-6' });
 * const exact = await tokenizer.countTokensExact(stablePrefix);
 * ```
 */
export function createAnthropicTokenizer(options: AnthropicTokenizerOptions): ClaudeTokenCounter {
  const {
    apiKey: _apiKey,
    baseURL: _baseURL,
    timeout: _timeout,
    defaultHeaders: _headers,
    client: _client,
    ...rest
  } = options;
  return createClaudeTokenCounter({ ...rest, client: lazyClient(options), provider: 'anthropic' });
}
