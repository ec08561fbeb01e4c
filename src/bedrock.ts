/**
 * `storyloom/bedrock`: Amazon Bedrock adapters. Embeddings with Titan Text Embeddings G1/V2 or Cohere Embed v4
 * (`Embedder`), pictures with Stability SD3.5 Large, Stable Image Core or Ultra (`ImageGenerator`), and Claude on
 * Bedrock (`SceneGenerator`). Needs the optional peers `@aws-sdk/client-bedrock-runtime` (embeddings, images) and
 * `@anthropic-ai/bedrock-sdk` (Claude).
 *
 * @example
 * ```ts
 * import { createBedrockEmbedder, createBedrockImageGenerator } from 'storyloom/bedrock';
 *
 * const embedder = createBedrockEmbedder({ model: 'cohere.embed-v4:0', dimensions: 1536, expectedDimensions: 1536 });
 * const illustrator = createBedrockImageGenerator({ model: 'stability.stable-image-core-v1:1', outputFormat: 'png' });
 * ```
 *
 * @module storyloom/bedrock
 */

export * from './generation/bedrock.js';
