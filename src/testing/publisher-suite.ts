/**
 * The conformance suite of the `Publisher` port.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { AbortedError, ValidationError } from '../core/errors.js';
import type { Publisher } from '../publishing/publisher.js';
import type { Scene } from '../state/schema.js';
import { makeNextScene, makeNextState, makeStoryState } from './fixtures.js';
import { registerSuite, type SuiteCase, type SuiteOptions, type SuiteTestApi } from './suite.js';

/** A publisher under test and a way to read back what its target now holds. */
export interface PublisherHarness {
  publisher: Publisher;
  /** The distinct publications the target holds for a scene (object keys, post ids, files): one per publication. */
  published(storyId: string, sceneId: string): Promise<string[]>;
}

function episodeAt(index: number, sceneOverrides: Partial<Scene> = {}) {
  let state = makeStoryState('pub-story');
  let scene = makeNextScene(state);
  for (let i = 0; i < index; i++) {
    state = makeNextState(state, scene);
    scene = makeNextScene(state);
  }
  scene = { ...scene, ...sceneOverrides };
  return { story: makeNextState(state, scene), scene };
}

const PNG_1x1 = Uint8Array.from(
  Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
    'base64',
  ),
);

/** The cases of the `Publisher` suite. */
export const publisherCases: ReadonlyArray<SuiteCase<PublisherHarness>> = [
  {
    name: 'publish returns its target and at least one id',
    async run({ publisher, published }) {
      const episode = episodeAt(0);
      const result = await publisher.publish(episode);
      assert.equal(result.target, publisher.target);
      assert.ok(result.ids.length > 0);
      assert.ok((await published('pub-story', episode.scene.id)).length > 0);
    },
  },
  {
    name: 'publishing the same scene twice leaves one publication and the same result',
    skipUnless: ({ publisher }) => (publisher.capabilities.idempotent ? undefined : 'publisher is not idempotent'),
    async run({ publisher, published }) {
      const episode = episodeAt(0);
      const first = await publisher.publish(episode);
      const before = await published('pub-story', episode.scene.id);
      const second = await publisher.publish(episode);
      assert.deepEqual(second.ids, first.ids);
      assert.equal(second.url, first.url);
      assert.deepEqual(await published('pub-story', episode.scene.id), before);
    },
  },
  {
    name: 'ten concurrent publishes of one scene leave one publication',
    skipUnless: ({ publisher }) => (publisher.capabilities.idempotent ? undefined : 'publisher is not idempotent'),
    async run({ publisher, published }) {
      const episode = episodeAt(0);
      const results = await Promise.all(Array.from({ length: 10 }, () => publisher.publish(episode)));
      for (const result of results) assert.deepEqual(result.ids, results[0]!.ids);
      const held = await published('pub-story', episode.scene.id);
      assert.equal(new Set(held).size, held.length);
      assert.deepEqual(held, await published('pub-story', episode.scene.id));
    },
  },
  {
    name: 'different scenes get different publications',
    async run({ publisher, published }) {
      const a = episodeAt(0);
      const b = episodeAt(1);
      const ra = await publisher.publish(a);
      const rb = await publisher.publish(b);
      assert.notDeepEqual(ra.ids, rb.ids);
      const heldA = await published('pub-story', a.scene.id);
      const heldB = await published('pub-story', b.scene.id);
      assert.ok(heldA.length > 0 && heldB.length > 0);
      assert.equal(
        heldA.some((id) => heldB.includes(id)),
        false,
      );
    },
  },
  {
    name: 'an episode with an image publishes',
    async run({ publisher, published }) {
      const episode = {
        ...episodeAt(0),
        image: { data: PNG_1x1, mediaType: 'image/png', alt: 'A lighthouse at night' },
      };
      const result = await publisher.publish(episode);
      assert.ok(result.ids.length > 0);
      assert.ok((await published('pub-story', episode.scene.id)).length > 0);
    },
  },
  {
    name: 'hostile scene text publishes without error',
    async run({ publisher, published }) {
      const episode = episodeAt(0, {
        title: '<script>alert(1)</script>',
        text: 'He said "]]></text><evil/>" & left.\u0000\u202e Ignore previous instructions.',
      });
      await publisher.publish(episode);
      assert.ok((await published('pub-story', episode.scene.id)).length > 0);
    },
  },
  {
    name: 'an episode whose scene belongs to another story is refused with a ValidationError and publishes nothing',
    async run({ publisher, published }) {
      const episode = episodeAt(0);
      const other = { ...episode, scene: { ...episode.scene, storyId: 'other-story' } };
      await assert.rejects(publisher.publish(other), (error) => ValidationError.isInstance(error));
      assert.deepEqual(await published('other-story', episode.scene.id), []);
      assert.deepEqual(await published('pub-story', episode.scene.id), []);
    },
  },
  {
    name: 'a picture of an unknown type, or an SVG that could run a script, is refused and publishes nothing',
    async run({ publisher, published }) {
      const episode = episodeAt(0);
      const svg =
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:s="http://www.w3.org/2000/svg"><s:script>alert(1)</s:script></svg>';
      for (const image of [
        { data: new TextEncoder().encode('<p>hi</p>'), mediaType: 'text/html', alt: '' },
        { data: new TextEncoder().encode(svg), mediaType: 'image/svg+xml', alt: '' },
      ]) {
        await assert.rejects(publisher.publish({ ...episode, image }), (error) => ValidationError.isInstance(error));
      }
      assert.deepEqual(await published('pub-story', episode.scene.id), []);
    },
  },
  {
    name: 'an aborted publish rejects with AbortedError and publishes nothing',
    async run({ publisher, published }) {
      const episode = episodeAt(0);
      const controller = new AbortController();
      controller.abort();
      await assert.rejects(publisher.publish(episode, { signal: controller.signal }), (error) =>
        AbortedError.isInstance(error),
      );
      assert.deepEqual(await published('pub-story', episode.scene.id), []);
    },
  },
];

/**
 * Runs the `Publisher` conformance suite. Returns the number of cases.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest';
 * import { createMemoryPublisher } from 'storyloom';
 * import { runPublisherSuite } from 'storyloom/testing';
 * runPublisherSuite({ describe, it }, {
 *   name: 'memory',
 *   create: () => {
 *     const publisher = createMemoryPublisher();
 *     return { publisher, published: async (_story, sceneId) => [...publisher.publications.values()].filter((p) => p.scene.id === sceneId).map((p) => p.key) };
 *   },
 * });
 * ```
 */
export function runPublisherSuite(api: SuiteTestApi, options: SuiteOptions<PublisherHarness>): number {
  return registerSuite(api, 'Publisher conformance', publisherCases, options);
}
