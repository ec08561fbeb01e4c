/**
 * The Messages API stand-in itself: cache semantics (minimum prefix, TTL, longest prefix, 1-hour entries, at most 4
 * breakpoints), the error shapes the SDK reads, token counting, the context window, `max_tokens`, ill-formed Unicode
 * and the structured-output schema check, all through the real `@anthropic-ai/sdk` client.
 */
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sceneOutputFormat } from '../src/generation/claude-output-schema.js';
import {
  type AnthropicStandIn,
  defaultStandInReply,
  minCacheablePrefixTokens,
  startAnthropicStandIn,
  strictSchemaProblems,
} from '../src/testing/anthropic-server.js';
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

  it('refuses an empty text block, with or without a breakpoint on it, as the real API does', async () => {
    const refused = async (system: Anthropic.TextBlockParam[]) =>
      client.messages
        .create({ model: 'claude-haiku-4-5', max_tokens: 10, system, messages: [{ role: 'user', content: 'x' }] })
        .then(
          () => 'accepted',
          (error: unknown) => (error instanceof Anthropic.BadRequestError ? error.message : String(error)),
        );
    expect(await refused([{ type: 'text', text: '', cache_control: { type: 'ephemeral' } }])).toMatch(
      /cache_control cannot be set for empty text blocks/,
    );
    expect(
      await refused([
        { type: 'text', text: 'You narrate.' },
        { type: 'text', text: '' },
      ]),
    ).toMatch(/text content blocks must be non-empty/);
    expect(
      await refused([
        { type: 'text', text: 'You narrate.' },
        { type: 'text', text: '\n ' },
      ]),
    ).toMatch(/text content blocks must contain non-whitespace text/);
    expect(await refused([{ type: 'text', text: 'You narrate.', cache_control: { type: 'ephemeral' } }])).toBe(
      'accepted',
    );
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

/** The message of the API error the SDK raised, or a note that it raised none. */
const refusal = (outcome: unknown) =>
  outcome instanceof Anthropic.BadRequestError
    ? { type: outcome.type, message: outcome.apiMessage }
    : { type: 'no BadRequestError', message: String(outcome) };

describe('the Anthropic stand-in follows the Messages API limits', () => {
  it('keeps a 1-hour write for an hour, reports it as 1-hour, and splits mixed lifetimes as the API bills them', async () => {
    standIn.clearCache();
    const hourly = {
      model: 'claude-haiku-4-5',
      max_tokens: 100,
      system: [
        {
          type: 'text' as const,
          text: 'h'.repeat(8_000),
          cache_control: { type: 'ephemeral' as const, ttl: '1h' as const },
        },
      ],
      messages: [{ role: 'user' as const, content: 'one' }],
    };
    const first = await client.messages.create(hourly);
    expect(first.usage).toMatchObject({
      cache_creation_input_tokens: 2_000,
      cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 2_000 },
    });
    // Long past a 5-minute entry's lifetime, the 1-hour entry is still read, and the read renews its hour.
    await clock.advance(30 * 60_000);
    expect((await client.messages.create(hourly)).usage.cache_read_input_tokens).toBe(2_000);
    await clock.advance(59 * 60_000);
    expect((await client.messages.create(hourly)).usage.cache_read_input_tokens).toBe(2_000);
    await clock.advance(60 * 60_000 + 1);
    expect((await client.messages.create(hourly)).usage.cache_creation?.ephemeral_1h_input_tokens).toBe(2_000);

    // A 1-hour breakpoint then a default (5-minute) one: 1-hour up to the first, 5-minute from there to the second.
    const mixed = await client.messages.create({
      model: 'claude-haiku-4-5',
      max_tokens: 100,
      system: [
        { type: 'text', text: 'm'.repeat(4_000), cache_control: { type: 'ephemeral', ttl: '1h' } },
        { type: 'text', text: 'n'.repeat(4_000), cache_control: { type: 'ephemeral' } },
      ],
      messages: [{ role: 'user', content: 'two' }],
    });
    expect(mixed.usage).toMatchObject({
      cache_creation_input_tokens: 2_000,
      cache_creation: { ephemeral_5m_input_tokens: 1_000, ephemeral_1h_input_tokens: 1_000 },
    });
  });

  it("refuses more than 4 cache_control breakpoints with the API's message, and does not count a null one", async () => {
    const marked = (n: number) => ({
      type: 'text' as const,
      text: `block ${n}`,
      cache_control: { type: 'ephemeral' as const },
    });
    const five = await client.messages
      .create({
        model: 'claude-haiku-4-5',
        max_tokens: 100,
        system: [1, 2, 3, 4, 5].map(marked),
        messages: [{ role: 'user', content: 'x' }],
      })
      .catch((caught: unknown) => caught);
    expect(refusal(five)).toEqual({
      type: 'invalid_request_error',
      message: 'A maximum of 4 blocks with cache_control may be provided. Found 5.',
    });
    const fourAndNull = await client.messages.create({
      model: 'claude-haiku-4-5',
      max_tokens: 100,
      system: [...[1, 2, 3, 4].map(marked), { type: 'text', text: 'block 5', cache_control: null }],
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(fourAndNull.stop_reason).toBe('end_turn');
  });

  it('refuses a prompt longer than the context window ("prompt is too long"), 200,000 tokens by default', async () => {
    const prompt = (chars: number) =>
      client.messages.create({
        model: 'claude-haiku-4-5',
        max_tokens: 100,
        messages: [{ role: 'user', content: 'z'.repeat(chars) }],
      });
    expect((await prompt(800_000)).stop_reason).toBe('end_turn'); // exactly 200,000 tokens
    expect(refusal(await prompt(800_001).catch((caught: unknown) => caught))).toEqual({
      type: 'invalid_request_error',
      message: 'prompt is too long: 200001 tokens > 200000 maximum',
    });
    const small = await startAnthropicStandIn({ contextWindowTokens: 10, respond: () => 'ok' });
    try {
      const smallClient = new Anthropic({ apiKey: 'test', baseURL: small.url, maxRetries: 0 });
      const tooLong = await smallClient.messages
        .create({ model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'y'.repeat(41) }] })
        .catch((caught: unknown) => caught);
      expect(refusal(tooLong).message).toBe('prompt is too long: 11 tokens > 10 maximum');
    } finally {
      await small.close();
    }
  });

  it('stops at max_tokens with stop_reason "max_tokens", streamed or not, cut at the same place', async () => {
    const long = await startAnthropicStandIn({ respond: () => `abc😀${'wxyz'.repeat(100)}`, streamChunkChars: 7 });
    try {
      const longClient = new Anthropic({ apiKey: 'test', baseURL: long.url, maxRetries: 0 });
      const params = {
        model: 'claude-haiku-4-5',
        max_tokens: 10,
        messages: [{ role: 'user' as const, content: 'go' }],
      };
      const whole = await longClient.messages.create(params);
      expect(whole.stop_reason).toBe('max_tokens');
      expect(whole.usage.output_tokens).toBe(10);
      // 10 tokens are 40 characters: 'abc', the emoji's two code units, then 35 of the rest.
      expect(whole.content).toEqual([{ type: 'text', text: `abc😀${'wxyz'.repeat(8)}wxy` }]);
      const streamed = await longClient.messages.stream(params).finalMessage();
      expect(streamed.stop_reason).toBe('max_tokens');
      expect(streamed.usage.output_tokens).toBe(10);
      expect(streamed.content).toEqual(whole.content);
      // The cut never splits a surrogate pair: 4 characters end inside the emoji, so only 'abc' is kept.
      const tiny = await longClient.messages.create({ ...params, max_tokens: 1 });
      expect(tiny.content).toEqual([{ type: 'text', text: 'abc' }]);
    } finally {
      await long.close();
    }
    // The default scene reply is about 500 tokens: a smaller max_tokens cuts it, a larger one does not.
    const scenes = await startAnthropicStandIn({ respond: (request) => defaultStandInReply(request, 2_000) });
    try {
      const scenesClient = new Anthropic({ apiKey: 'test', baseURL: scenes.url, maxRetries: 0 });
      const ask = (maxTokens: number) =>
        scenesClient.messages.create({
          model: 'claude-haiku-4-5',
          max_tokens: maxTokens,
          messages: [{ role: 'user', content: 'write' }],
        });
      const cut = await ask(50);
      expect({ stop: cut.stop_reason, output: cut.usage.output_tokens }).toEqual({ stop: 'max_tokens', output: 50 });
      const whole = await ask(4_000);
      expect(whole.stop_reason).toBe('end_turn');
      expect(whole.usage.output_tokens).toBeLessThan(4_000);
    } finally {
      await scenes.close();
    }
  });

  it("refuses a body holding a lone surrogate, as the API's strict JSON parser does", async () => {
    const send = (content: string) =>
      client.messages.create({ model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content }] });
    expect(refusal(await send('The Lamp \ud83d').catch((caught: unknown) => caught))).toEqual({
      type: 'invalid_request_error',
      message: 'The request body is not valid JSON: no low surrogate in string',
    });
    expect((await send('The Lamp 😀')).stop_reason).toBe('end_turn');
  });
});

describe("the Anthropic stand-in's minimum cacheable prefix", () => {
  it("is each model's own by default: a 2,000-token prefix caches on Sonnet 4.6, not on Haiku 4.5", async () => {
    const own = await startAnthropicStandIn({ respond: () => 'ok' });
    try {
      const ownClient = new Anthropic({ apiKey: 'test-key', baseURL: own.url, maxRetries: 0 });
      const stable = 'The lighthouse keepers keep their watch through the long winter night. '.repeat(115);
      const twice = async (model: string) => {
        const ask = () =>
          ownClient.messages.create({
            model,
            max_tokens: 10,
            system: [{ type: 'text', text: stable, cache_control: { type: 'ephemeral' } }],
            messages: [{ role: 'user', content: 'next' }],
          });
        await ask();
        return (await ask()).usage.cache_read_input_tokens ?? 0;
      };
      expect(await twice('claude-sonnet-4-6')).toBeGreaterThan(1_900);
      expect(await twice('claude-haiku-4-5')).toBe(0);
    } finally {
      await own.close();
    }
    expect(minCacheablePrefixTokens('claude-haiku-4-5-20251001')).toBe(4_096);
    expect(minCacheablePrefixTokens('us.anthropic.claude-opus-4-6-v1')).toBe(4_096);
    expect(minCacheablePrefixTokens('claude-3-5-haiku-latest')).toBe(2_048);
    expect(minCacheablePrefixTokens('claude-sonnet-5-5')).toBe(1_024);
  });
});
