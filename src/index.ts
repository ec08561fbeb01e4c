/**
 * storyloom: narrative primitives for autonomous, serialized AI stories.
 *
 * The root entry holds the domain model, the ports, the pure reducer, the memory adapters and the shared kernel
 * (errors, clock, retry). It imports no cloud SDK and no native module: those live behind their own subpaths.
 *
 * @example
 * ```ts
 * import { createMemoryStateStore, StoryStateSchema } from 'storyloom';
 * ```
 *
 * @module storyloom
 */

export * from './chain/influence-source.js';
export * from './chain/memory.js';
export * from './context/cache-driver.js';
export * from './context/context-cache.js';
export * from './context/context-manager.js';
export * from './context/embedder.js';
export { createEstimatingTokenizer, type EstimatingTokenizerOptions } from './context/estimating-tokenizer.js';
export { createExtractiveSummarizer } from './context/extractive-summarizer.js';
export * from './context/filter.js';
export {
  createHashingEmbedder,
  type HashingEmbedderOptions,
  hashFeature,
} from './context/hashing-embedder.js';
export * from './context/keyword-index.js';
export { createMemoryCacheDriver, type MemoryCacheDriverOptions } from './context/memory-cache.js';
export { createMemoryKeywordIndex, type MemoryKeywordIndexOptions } from './context/memory-keyword-index.js';
export { createMemoryVectorIndex, type MemoryVectorIndexOptions } from './context/memory-vector-index.js';
export {
  type DetailLevel,
  NARRATOR_INSTRUCTIONS,
  type OmittedItem,
  type PackedItem,
  type PackResult,
  type PromptItem,
  packItems,
} from './context/prompt-layout.js';
export * from './context/retrieval.js';
export * from './context/summarizer.js';
export * from './context/tokenizer.js';
export * from './context/vector-index.js';
export * from './core/clock.js';
export * from './core/errors.js';
export * from './core/retry.js';
export * from './core/sanitize.js';
export * from './engine/engine.js';
export * from './engine/episode-context.js';
export * from './engine/episode-errors.js';
export * from './engine/events.js';
export * from './engine/influence-resolution.js';
export * from './generation/image-generator.js';
export * from './generation/image-prompt.js';
export {
  createProceduralIllustrator,
  PROCEDURAL_ILLUSTRATOR_MODEL_ID,
  type ProceduralIllustratorOptions,
} from './generation/procedural-illustrator.js';
export {
  createProceduralNarrator,
  PROCEDURAL_NARRATOR_MODEL_ID,
  type ProceduralNarratorOptions,
} from './generation/procedural-narrator.js';
export * from './generation/scene-generator.js';
export {
  createStoryFromTemplate,
  defaultStoryTemplate,
  type StoryTemplate,
  storyTemplates,
} from './generation/story-templates.js';
export {
  createFilesystemPublisher,
  type FilesystemPublisher,
  type FilesystemPublisherOptions,
  readSitePublication,
} from './publishing/filesystem.js';
export * from './publishing/memory.js';
export * from './publishing/publisher.js';
export {
  BaseStateStore,
  type BaseStateStoreOptions,
  type BundledSnapshot,
  bundleSnapshot,
  EXPORT_FORMAT,
  EXPORT_FORMAT_VERSION,
  type PreparedCommit,
  type SceneQuery,
  type StoryBundle,
  unbundleSnapshot,
} from './state/base-store.js';
export { createMemoryStateStore, type MemoryStateStoreOptions } from './state/memory.js';
export * from './state/reducer.js';
export * from './state/schema.js';
export * from './state/store.js';
