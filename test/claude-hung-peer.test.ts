/**
 * Claude calls that are not streamed, against a peer that sends `200` headers at once and then stalls the body, or
 * trickles it a byte at a time (which no inactivity timer catches). The SDK's own `timeout` stops at the headers, so
 * only storyloom's per-attempt bound ends these calls: the summarizer's and the token counter's `timeoutMs`, the
 * scene generator's `replyTimeoutMs` with `stream: false`. Each ends with a typed, retryable `TIMEOUT` within its retry
 * policy, and the stalled request is cancelled, not left open.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AbortedError, ProviderError, RetryError } from '../src/core/errors.js';
import {
  createAnthropicSceneGenerator,
  createAnthropicSummarizer,
  createAnthropicTokenizer,
} from '../src/generation/anthropic.js';
import type { SceneRequest } from '../src/generation/scene-generator.js';
import { makeStoryState } from '../src/testing/fixtures.js';

type Body = 'stall' | 'trickle';

/** A Messages API peer whose every reply is `200 application/json` headers and then a body that never completes. */
interface HungPeer {
  url: string;
  body: Body;
  /** Paths of the requests received, in order. */
  paths: string[];
  /** One per request: settles when that response's connection has closed. */
  closed: Array<Promise<void>>;
  /** Called as each request arrives (after its body was read). */
  onRequest?: () => void;
  close(): Promise<void>;
}

async function startHungPeer(): Promise<HungPeer> {
  const timers = new Set<NodeJS.Timeout>();
  const peer: Partial<HungPeer> & { server?: Server } = { body: 'stall', paths: [], closed: [] };
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    request.resume();
    request.on('end', () => {
      peer.paths!.push(new URL(request.url ?? '/', 'http://peer').pathname);
      response.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_hung' });
      // The headers and the first bytes of a JSON body go out at once: the client's fetch resolves here.
      response.write('{"id":');
      if (peer.body === 'trickle') {
        // A byte of white space at a time, for ever: the connection is never idle, the reply never complete.
        const timer = setInterval(() => response.write(' '), 50);
        timers.add(timer);
        response.on('close', () => {
          clearInterval(timer);
          timers.delete(timer);
        });
      }
      peer.onRequest?.();
    });
    peer.closed!.push(new Promise<void>((resolve) => response.on('close', () => resolve())));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  peer.url = `http://127.0.0.1:${port}`;
  peer.close = () =>
    new Promise<void>((resolve) => {
      for (const timer of timers) clearInterval(timer);
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return peer as HungPeer;
}

let peer: HungPeer;
beforeAll(async () => {
  // Loaded once here: the factories import the SDK on first use, and that first load must not eat an attempt's time.
  await import('@anthropic-ai/sdk');
  peer = await startHungPeer();
});
afterAll(() => peer.close());
afterEach(() => {
  peer.body = 'stall';
  peer.paths.length = 0;
  peer.closed.length = 0;
  delete peer.onRequest;
});

/** Retries after the first attempt, with next to no wait between them. */
const retries = (maxRetries: number) => ({ maxRetries, initialDelayMs: 1, maxDelayMs: 1 });

/** The attempts of a call that failed after its retries, as [code, retryable]. */
function attemptsOf(error: unknown): Array<[string, boolean]> {
  expect(RetryError.isInstance(error)).toBe(true);
  return (error as RetryError).errors.map((attempt) => {
    expect(ProviderError.isInstance(attempt)).toBe(true);
    return [(attempt as ProviderError).code, (attempt as ProviderError).isRetryable];
  });
}

function sceneRequest(): SceneRequest {
  const state = makeStoryState('fog');
  return {
    storyId: 'fog',
    sceneId: 'scene-1',
    sceneIndex: 0,
    chapterId: state.chapterId,
    state,
    prompt: { stable: 'Bible.', dynamic: 'Write.' },
    influences: [],
    seed: 1,
  };
}

const connection = () => ({ apiKey: 'test-key', baseURL: peer.url });

describe('Claude calls that are not streamed, against a body that stalls after the headers', () => {
  for (const body of ['stall', 'trickle'] as const) {
    it(`the summarizer ends each attempt at timeoutMs as a retryable TIMEOUT (${body})`, async () => {
      peer.body = body;
      const summarizer = createAnthropicSummarizer({
        ...connection(),
        model: 'claude-haiku-4-5',
        timeoutMs: 1_000,
        retry: retries(1),
      });
      const error = await summarizer
        .summarize(['Mira lit the lamp.'], { maxWords: 20 })
        .catch((caught: unknown) => caught);
      expect(attemptsOf(error)).toEqual([
        ['TIMEOUT', true],
        ['TIMEOUT', true],
      ]);
      expect(peer.paths).toEqual(['/v1/messages', '/v1/messages']);
      // Each attempt's request was cancelled, not left hanging on the peer.
      await Promise.all(peer.closed);
    }, 30_000);
  }

  it('the token counter ends each attempt at timeoutMs as a retryable TIMEOUT and keeps its estimate', async () => {
    const tokenizer = createAnthropicTokenizer({
      ...connection(),
      model: 'claude-sonnet-4-6',
      timeoutMs: 1_000,
      retry: retries(1),
    });
    const text = 'The lamp must never go dark. '.repeat(10);
    const estimate = tokenizer.count(text);
    const error = await tokenizer.countTokensExact(text).catch((caught: unknown) => caught);
    expect(attemptsOf(error)).toEqual([
      ['TIMEOUT', true],
      ['TIMEOUT', true],
    ]);
    expect(peer.paths).toEqual(['/v1/messages/count_tokens', '/v1/messages/count_tokens']);
    expect(tokenizer.count(text)).toBe(estimate);
    await Promise.all(peer.closed);
  }, 30_000);

  it('the scene generator with stream: false ends each attempt at replyTimeoutMs as a retryable TIMEOUT', async () => {
    peer.body = 'trickle';
    const generator = createAnthropicSceneGenerator({
      ...connection(),
      model: 'claude-sonnet-4-6',
      stream: false,
      replyTimeoutMs: 1_000,
      retry: retries(1),
    });
    const error = await generator.generate(sceneRequest()).catch((caught: unknown) => caught);
    expect(attemptsOf(error)).toEqual([
      ['TIMEOUT', true],
      ['TIMEOUT', true],
    ]);
    expect(peer.paths).toEqual(['/v1/messages', '/v1/messages']);
    await Promise.all(peer.closed);
  }, 30_000);

  it("the caller's abort during a stalled body is an AbortedError, never a TIMEOUT", async () => {
    const summarizer = createAnthropicSummarizer({ ...connection(), model: 'claude-haiku-4-5', retry: retries(2) });
    const tokenizer = createAnthropicTokenizer({ ...connection(), model: 'claude-sonnet-4-6', retry: retries(2) });
    for (const call of [
      (signal: AbortSignal) => summarizer.summarize(['Mira lit the lamp.'], { maxWords: 20, signal }),
      (signal: AbortSignal) => tokenizer.countTokensExact('Mira lit the lamp.', { signal }),
    ]) {
      const controller = new AbortController();
      peer.onRequest = () => controller.abort();
      const error = await call(controller.signal).catch((caught: unknown) => caught);
      expect(AbortedError.isInstance(error)).toBe(true);
    }
    // One request each: an abort is not retried.
    expect(peer.paths).toHaveLength(2);
    await Promise.all(peer.closed);
  }, 30_000);
});
