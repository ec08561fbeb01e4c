/**
 * Scriptable generators for tests, in the manner of the AI SDK's `MockLanguageModel`: they record every call and
 * answer what the test tells them to.
 *
 * @module
 */
import { throwIfAborted, toProblems, ValidationError } from '../core/errors.js';
import type { GeneratedImage, ImageGenerator, ImageRequest } from '../generation/image-generator.js';
import {
  emptyUsage,
  type SceneGenerationResult,
  type SceneGenerator,
  type SceneOutput,
  SceneOutputSchema,
  type SceneRequest,
} from '../generation/scene-generator.js';

/** A `SceneGenerator` that answers with a scripted output and records its requests. */
export interface MockSceneGenerator extends SceneGenerator {
  readonly calls: SceneRequest[];
}

/**
 * A scene generator whose answer comes from `respond`. The answer is validated like a real model's output, so a
 * test can feed it garbage and see the typed error.
 *
 * @example
 * ```ts
 * import { createMockSceneGenerator } from 'storyloom/testing';
 * const generator = createMockSceneGenerator({
 *   respond: (request) => ({ scene: { title: 'Dawn', text: 'The sun rose.' }, delta: {} }),
 * });
 * ```
 */
export function createMockSceneGenerator(options: {
  respond: (request: SceneRequest, call: number) => unknown | Promise<unknown>;
  modelId?: string;
}): MockSceneGenerator {
  const calls: SceneRequest[] = [];
  const modelId = options.modelId ?? 'mock-scene-model';
  return {
    specificationVersion: 'v1',
    provider: 'mock',
    modelId,
    calls,
    async generate(request, generateOptions = {}): Promise<SceneGenerationResult> {
      throwIfAborted(generateOptions.signal);
      calls.push(structuredClone(request));
      const raw = await options.respond(request, calls.length - 1);
      throwIfAborted(generateOptions.signal);
      const parsed = SceneOutputSchema.safeParse(raw);
      if (!parsed.success) {
        const problems = toProblems(parsed.error.issues);
        throw new ValidationError(`Mock generator output is invalid: ${problems[0]?.path} ${problems[0]?.message}`, {
          problems,
        });
      }
      const output: SceneOutput = parsed.data;
      return { scene: output.scene, delta: output.delta, usage: emptyUsage(), modelId, attempts: 1 };
    },
  };
}

/** An `ImageGenerator` that returns fixed bytes and records its requests. */
export interface MockImageGenerator extends ImageGenerator {
  readonly calls: ImageRequest[];
}

/**
 * An image generator that returns `respond(request)` or, by default, a 1×1 PNG.
 *
 * @example
 * ```ts
 * import { createMockImageGenerator } from 'storyloom/testing';
 * const images = createMockImageGenerator();
 * ```
 */
export function createMockImageGenerator(
  options: { respond?: (request: ImageRequest, call: number) => GeneratedImage | Promise<GeneratedImage> } = {},
): MockImageGenerator {
  const calls: ImageRequest[] = [];
  return {
    specificationVersion: 'v1',
    provider: 'mock',
    modelId: 'mock-image-model',
    calls,
    async generate(request, generateOptions = {}) {
      throwIfAborted(generateOptions.signal);
      calls.push(structuredClone(request));
      if (options.respond) return options.respond(request, calls.length - 1);
      return {
        data: Uint8Array.from(
          Buffer.from(
            'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
            'base64',
          ),
        ),
        mediaType: 'image/png',
        seed: request.seed,
        modelId: 'mock-image-model',
        width: 1,
        height: 1,
      };
    },
  };
}
