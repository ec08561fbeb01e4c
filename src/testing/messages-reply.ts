/**
 * What the Messages API stand-in and the Bedrock stand-in both answer Claude with: the stand-ins' token estimate, a
 * reply cut where `max_tokens` would cut it, the message and the events that stream it, and the check of a body's
 * Unicode. Internal to the testing folder: `storyloom/testing` does not re-export this module.
 *
 * @module
 */

/** The stand-ins' whole tokenizer: every figure the Messages API stand-in reports is derived from it. */
export const CHARS_PER_TOKEN = 4;

export const estimateTokens = (text: string): number => Math.ceil(text.length / CHARS_PER_TOKEN);

/**
 * Cuts a reply where a model stopped by `max_tokens` would, by the stand-in's own estimate, without splitting a
 * surrogate pair (the real API never returns half a character).
 */
function cutAtMaxTokens(text: string, maxTokens: number): { text: string; cut: boolean } {
  if (estimateTokens(text) <= maxTokens) return { text, cut: false };
  const end = Math.max(0, maxTokens) * CHARS_PER_TOKEN;
  const last = text.charCodeAt(end - 1);
  const pairStart = last >= 0xd800 && last <= 0xdbff;
  return { text: text.slice(0, pairStart ? end - 1 : end), cut: true };
}

/** Token usage of a reply, as the stand-ins report it (the Anthropic API's adds cache lifetimes and a tier). */
export interface StandInUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
}

/**
 * `reply` as the Messages API answers it, cut where a model stopped by `maxTokens` would (`cutAtMaxTokens`): the
 * whole message, and the events that stream it, its text in deltas of `chunkChars` characters. `usage` gives the
 * usage of a reply of so many output tokens; `refusal` answers with `stop_reason: "refusal"`.
 */
export function messageAndEvents<Usage extends StandInUsage>(
  reply: string,
  maxTokens: number,
  chunkChars: number,
  envelope: { id: string; model: unknown; usage: (outputTokens: number) => Usage; refusal?: boolean },
) {
  const { text, cut } = cutAtMaxTokens(reply, maxTokens);
  const usage = envelope.usage(cut ? maxTokens : Math.max(1, estimateTokens(text)));
  const stopReason = envelope.refusal ? 'refusal' : cut ? 'max_tokens' : 'end_turn';
  const message = {
    id: envelope.id,
    type: 'message',
    role: 'assistant',
    model: envelope.model,
    content: text === '' ? [] : [{ type: 'text', text }],
    stop_reason: stopReason,
    stop_sequence: null,
    usage,
  };
  const events: Array<Record<string, unknown> & { type: string }> = [
    {
      type: 'message_start',
      message: { ...message, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } },
    },
  ];
  if (text !== '') {
    events.push({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }, { type: 'ping' });
    for (let at = 0; at < text.length; at += chunkChars) {
      events.push({
        type: 'content_block_delta',
        index: 0,
        delta: { type: 'text_delta', text: text.slice(at, at + chunkChars) },
      });
    }
    events.push({ type: 'content_block_stop', index: 0 });
  }
  events.push(
    {
      type: 'message_delta',
      delta: { stop_reason: stopReason, stop_sequence: null },
      usage: {
        output_tokens: usage.output_tokens,
        input_tokens: usage.input_tokens,
        cache_creation_input_tokens: usage.cache_creation_input_tokens,
        cache_read_input_tokens: usage.cache_read_input_tokens,
      },
    },
    { type: 'message_stop' },
  );
  return { message, events };
}

/** A lone high or low surrogate anywhere in a decoded body: the real API's strict JSON parser refuses it. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Why the real API would refuse the body's Unicode, in its own words, or `undefined` when it is well formed. */
export function surrogateProblem(value: unknown): string | undefined {
  if (typeof value === 'string') {
    const lone = LONE_SURROGATE.exec(value)?.[0];
    if (lone === undefined) return undefined;
    return lone.charCodeAt(0) <= 0xdbff ? 'no low surrogate in string' : 'invalid high surrogate in string';
  }
  if (typeof value !== 'object' || value === null) return undefined;
  for (const [key, child] of Object.entries(value)) {
    const problem = surrogateProblem(key) ?? surrogateProblem(child);
    if (problem) return problem;
  }
  return undefined;
}
