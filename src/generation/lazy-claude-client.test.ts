import { describe, expect, it } from 'vitest';
import type { ClaudeClient, ClaudeMessage } from './claude-scene-generator.js';
import { lazyClaudeClient } from './lazy-claude-client.js';

const reply = { content: [{ type: 'text', text: 'ok' }] } as unknown as ClaudeMessage;

function fakeClient(): ClaudeClient {
  return {
    messages: {
      create: async () => reply,
      stream: () => {
        const listeners: Array<(delta: string, snapshot: string) => void> = [];
        return {
          on(_event, listener) {
            listeners.push(listener);
            return this;
          },
          finalMessage: async () => {
            for (const listener of listeners) listener('ok', 'ok');
            return reply;
          },
        };
      },
      countTokens: async () => ({ input_tokens: 7 }),
    },
  };
}

describe('lazyClaudeClient', () => {
  it('makes the client once, on first use', async () => {
    let made = 0;
    const client = lazyClaudeClient(
      async () => {
        made++;
        return fakeClient();
      },
      { countTokens: true },
    );
    expect(made).toBe(0);
    await Promise.all([client.messages.create({}), client.messages.create({})]);
    expect(await client.messages.countTokens?.({})).toEqual({ input_tokens: 7 });
    expect(made).toBe(1);
  });

  it('makes it again after a failed attempt instead of failing every later call', async () => {
    let made = 0;
    const client = lazyClaudeClient(
      async () => {
        made++;
        if (made === 1) throw new Error('ANTHROPIC_API_KEY is missing');
        return fakeClient();
      },
      { countTokens: false },
    );
    await expect(client.messages.create({})).rejects.toThrow('ANTHROPIC_API_KEY is missing');
    await expect(client.messages.create({})).resolves.toBe(reply);
    expect(made).toBe(2);
  });

  it('streams through a client still loading, listeners included', async () => {
    const client = lazyClaudeClient(async () => fakeClient(), { countTokens: false });
    const deltas: string[] = [];
    const stream = client.messages.stream({});
    stream.on('text', (delta) => deltas.push(delta));
    await expect(stream.finalMessage()).resolves.toBe(reply);
    expect(deltas).toEqual(['ok']);
    expect(client.messages.countTokens).toBeUndefined();
  });
});
