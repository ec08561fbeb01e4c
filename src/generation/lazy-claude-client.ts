/**
 * A Claude client made on first use, shared by the Anthropic and Bedrock entry points: their SDKs are optional peer
 * dependencies, imported only when a request is made.
 *
 * @module
 */
import type { ClaudeClient, ClaudeMessageStream } from './claude-scene-generator.js';

/**
 * A client whose calls wait for `create()`, made once on first use and made again after it failed (a missing
 * credential set later, a module that failed to load). `countTokens` is passed through where the real client has it.
 */
export function lazyClaudeClient(create: () => Promise<ClaudeClient>, options: { countTokens: boolean }): ClaudeClient {
  let created: Promise<ClaudeClient> | undefined;
  const get = (): Promise<ClaudeClient> => {
    if (!created) {
      const attempt = create();
      created = attempt;
      attempt.catch(() => {
        if (created === attempt) created = undefined;
      });
    }
    return created;
  };
  const messages: ClaudeClient['messages'] = {
    create: async (params, requestOptions) => (await get()).messages.create(params, requestOptions),
    stream: (params, requestOptions) =>
      deferredStream(get().then((client) => client.messages.stream(params, requestOptions))),
  };
  if (options.countTokens) {
    messages.countTokens = async (params, requestOptions) => {
      const client = await get();
      if (!client.messages.countTokens) throw new TypeError('This Claude client cannot count tokens');
      return client.messages.countTokens(params, requestOptions);
    };
  }
  return { messages };
}

/** A stream whose client is still loading: listeners attach once it exists, before any event can arrive. */
function deferredStream(pending: Promise<ClaudeMessageStream>): ClaudeMessageStream {
  // Settled here so a failed load never becomes an unhandled rejection; finalMessage() reports it.
  pending.catch(() => undefined);
  const stream: ClaudeMessageStream = {
    on(event, listener) {
      void pending.then(
        (inner) => inner.on(event, listener),
        () => undefined,
      );
      return stream;
    },
    finalMessage: () => pending.then((inner) => inner.finalMessage()),
  };
  return stream;
}
