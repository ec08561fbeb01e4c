/**
 * The Messages API stand-in itself: cache semantics (minimum prefix, TTL, longest prefix), the error shapes the SDK
 * reads, token counting and the structured-output schema check, all through the real `@anthropic-ai/sdk` client.
 */
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sceneOutputFormat } from '../src/generation/claude-output-schema.js';
import { type AnthropicStandIn, startAnthropicStandIn, strictSchemaProblems } from '../src/testing/anthropic-server.js';
import { ManualClock } from '../src/testing/manual-clock.js';

const clock = new ManualClock();
let standIn: AnthropicStandIn;
let client: Anthropic;

beforeAll(async () => {
  standIn = await startAnthropicStandIn({
    clock,
    cache: { ttlMs: 300_000, minPrefixTokens: 1_000 },
    respond: () => 'ok',
  });
  client = new Anthropic({ apiKey: 'test-key', baseURL: standIn.url, maxRetries: 0 });
});
afterAll(() => standIn.close());

const ask = (stable: string, question: string) =>
  client.messages.create({
    model: 'claude-haiku-4-5',
    max_tokens: 100,
    system: [{ type: 'text', text: stable, cache_control: { type: 'ephemeral' } }],
    messages: [{ role: 'user', content: question }],
  });

describe('the Anthropic stand-in', () => {
  it('writes a long enough prefix to the cache, reads it within the TTL and forgets it after', async () => {
    const stable = 'w'.repeat(8_000); // 2,000 tokens
    const first = await ask(stable, 'one');
    expect(first.usage).toMatchObject({
      cache_creation_input_tokens: 2_000,
      cache_read_input_tokens: 0,
      input_tokens: 1,
    });
    await clock.advance(299_000);
    const second = await ask(stable, 'two, longer');
    expect(second.usage).toMatchObject({
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 2_000,
      input_tokens: 3,
    });
    // The read refreshed the entry's lifetime; past it the prefix is written again.
    await clock.advance(299_000);
    expect((await ask(stable, 'three')).usage.cache_read_input_tokens).toBe(2_000);
    await clock.advance(300_001);
    expect((await ask(stable, 'four')).usage.cache_creation_input_tokens).toBe(2_000);
  });

  it('caches nothing below the minimum prefix, without an error', async () => {
    const short = 's'.repeat(400);
    await ask(short, 'one');
    const again = await ask(short, 'two');
    expect(again.usage).toMatchObject({
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      input_tokens: 101,
    });
  });

  it('answers failures in the shape the SDK reads, with request-id and retry-after', async () => {
    standIn.scheduleErrors([{ kind: 'rate-limit', retryAfterSeconds: 7 }, 'overloaded']);
    const limited = await ask('x', 'y').catch((error: unknown) => error);
    expect(limited).toBeInstanceOf(Anthropic.RateLimitError);
    expect((limited as InstanceType<typeof Anthropic.RateLimitError>).headers.get('retry-after')).toBe('7');
    expect((limited as InstanceType<typeof Anthropic.RateLimitError>).requestID).toMatch(/^req_/);
    const overloaded = await ask('x', 'y').catch((error: unknown) => error);
    expect(overloaded).toBeInstanceOf(Anthropic.APIError);
    expect((overloaded as InstanceType<typeof Anthropic.APIError>).status).toBe(529);
    expect((overloaded as InstanceType<typeof Anthropic.APIError>).type).toBe('overloaded_error');
  });

  it('counts tokens like it bills them', async () => {
    const counted = await client.messages.countTokens({
      model: 'claude-haiku-4-5',
      messages: [{ role: 'user', content: 'abcdefgh' }],
    });
    expect(counted.input_tokens).toBe(2);
  });

  it('refuses a structured-output schema the real API would refuse, and accepts the scene wire schema', async () => {
    expect(strictSchemaProblems(sceneOutputFormat().schema)).toEqual([]);
    const open = { type: 'object', properties: { a: { type: 'string', maxLength: 3 } } };
    expect(strictSchemaProblems(open)).toEqual([
      '$: objects must set additionalProperties to false',
      '$.a: keyword "maxLength" is not supported',
    ]);
    const error = await client.messages
      .create({
        model: 'claude-haiku-4-5',
        max_tokens: 10,
        messages: [{ role: 'user', content: 'x' }],
        output_config: { format: { type: 'json_schema', schema: open } },
      })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(Anthropic.BadRequestError);
  });
});

describe('the Anthropic stand-in prompt cache', () => {
  it('reads an earlier cached prefix at a block boundary before the breakpoint, as the API does', async () => {
    const clock = new ManualClock();
    const cacheStandIn = await startAnthropicStandIn({
      clock,
      cache: { ttlMs: 300_000, minPrefixTokens: 100 },
      respond: () => 'ok',
    });
    try {
      const client = new Anthropic({ apiKey: 'test', baseURL: cacheStandIn.url, maxRetries: 0 });
      const block = (text: string, marked = false) => ({
        type: 'text' as const,
        text,
        ...(marked ? { cache_control: { type: 'ephemeral' as const } } : {}),
      });
      const base = 'chapter constant part. '.repeat(60);
      const first = await client.messages.create({
        model: 'claude-sonnet-4-6',
        max_tokens: 100,
        system: [block(base, true), block('entry one. '.repeat(20), true)],
        messages: [{ role: 'user', content: 'episode 2' }],
      });
      expect(first.usage.cache_read_input_tokens).toBe(0);
      const second = await client.messages.create({
        model: 'claude-sonnet-4-6',
        max_tokens: 100,
        system: [block(base, true), block('entry one. '.repeat(20)), block('entry two. '.repeat(20), true)],
        messages: [{ role: 'user', content: 'episode 3' }],
      });
      // The whole previous prefix (base + entry one) is read, though its end carries no breakpoint this time.
      const written = first.usage.cache_creation_input_tokens ?? 0;
      expect(second.usage.cache_read_input_tokens).toBe(written);
      expect(second.usage.cache_creation_input_tokens).toBeGreaterThan(0);
    } finally {
      await cacheStandIn.close();
    }
  });
});
