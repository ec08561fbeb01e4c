/**
 * `storyloom/testing`: the conformance suites every adapter runs, fixtures, scriptable generators and a manual
 * clock. Suites register with the `describe`/`it` you pass, so this entry imports no test runner.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest';
 * import { runStoryStateStoreSuite } from 'storyloom/testing';
 * ```
 *
 * @module storyloom/testing
 */

export * from './anthropic-server.js';
export * from './bedrock-server.js';
export * from './cache-driver-suite.js';
export * from './fixtures.js';
export * from './keyword-index-suite.js';
export * from './manual-clock.js';
export * from './mock-generators.js';
export * from './pinecone-server.js';
export * from './publisher-suite.js';
export * from './state-store-suite.js';
export * from './suite.js';
export * from './vector-index-suite.js';
