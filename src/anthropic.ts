/**
 * `storyloom/anthropic`: Claude through the Anthropic API. A scene generator with structured output, repair turns,
 * prompt caching and priced usage; a chapter summarizer; an exact token counter. Needs the optional peer
 * `@anthropic-ai/sdk`.
 *
 * The vendor-neutral core (`createClaudeSceneGenerator`, `buildClaudeRequest`, ...) is exported here too, for
 * clients of other gateways with the same Messages API shape.
 *
 * @example
 * ```ts
 * import { createAnthropicSceneGenerator } from 'storyloom/anthropic';
 * const generator = createAnthropicSceneGenerator({ model: 'claude-sonnet-4-6' });
 * ```
 *
 * @module storyloom/anthropic
 */

export * from './generation/anthropic.js';
export * from './generation/claude-output-schema.js';
export * from './generation/claude-scene-generator.js';
export * from './generation/claude-summarizer.js';
