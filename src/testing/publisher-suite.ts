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
  /**
   * What the target holds for a scene, as text (the scene's file or object, the post's body), or null when it holds
   * nothing for it. Optional: with it, the suite also checks that a publication holds the scene's text.
   */
  read?(storyId: string, sceneId: string): Promise<string | null>;
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
    name: 'publish returns its target and at least one id, and the publication holds the scene',
    async run({ publisher, published, read }) {
      const text = 'The lamp burned low over the ledger of the drowned ships, and Ada counted them twice.';
      const episode = episodeAt(0, { text });
      const result = await publisher.publish(episode);
      assert.equal(result.target, publisher.target);
      assert.ok(result.ids.length > 0);
      assert.ok((await published('pub-story', episode.scene.id)).length > 0);
      if (read) {
        const held = await read('pub-story', episode.scene.id);
        assert.ok(held?.includes(text), 'the publication holds the scene text');
      }
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
    name: 'publishing a scene again with changed text leaves one publication under the same ids',
    skipUnless: ({ publisher }) => (publisher.capabilities.idempotent ? undefined : 'publisher is not idempotent'),
    async run({ publisher, published }) {
      // Whether the target keeps the first text (create-only writes) or shows the new one (a site rendered again) is
      // the publisher's to say; either way the scene has one publication, found under the ids of the first.
      const episode = episodeAt(0, { text: 'The first text, as it was published.' });
      const first = await publisher.publish(episode);
      const heldBefore = await published('pub-story', episode.scene.id);
      const second = await publisher.publish(
        episodeAt(0, { text: 'The same scene, published again with other words.' }),
      );
      assert.deepEqual(second.ids, first.ids);
      assert.deepEqual(await published('pub-story', episode.scene.id), heldBefore);
    },
  },
  {
    name: 'ten concurrent publishes of one scene leave one publication',
    skipUnless: ({ publisher }) => (publisher.capabilities.idempotent ? undefined : 'publisher is not idempotent'),
    async run({ publisher, published }, { create }) {
      const episode = episodeAt(0);
      const results = await Promise.all(Array.from({ length: 10 }, () => publisher.publish(episode)));
      for (const result of results) assert.deepEqual(result.ids, results[0]!.ids);
      const held = await published('pub-story', episode.scene.id);
      assert.equal(new Set(held).size, held.length);
      // As many publications as one publish of the scene leaves on a fresh target.
      const alone = await create();
      await alone.publisher.publish(episode);
      const once = await alone.published('pub-story', episode.scene.id);
      assert.ok(once.length > 0, 'one publish leaves a publication');
      assert.equal(
        held.length,
        once.length,
        `one publish leaves ${once.length}, ten concurrent ones left ${held.length}`,
      );
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
 *     const of = (sceneId: string) => [...publisher.publications.values()].filter((p) => p.scene.id === sceneId);
 *     return {
 *       publisher,
 *       published: async (_story, sceneId) => of(sceneId).map((p) => p.key),
 *       read: async (_story, sceneId) => of(sceneId).map((p) => JSON.stringify(p.scene)).join('\n') || null,
 *     };
 *   },
 * });
 * ```
 */
export function runPublisherSuite(api: SuiteTestApi, options: SuiteOptions<PublisherHarness>): number {
  return registerSuite(api, 'Publisher conformance', publisherCases, options);
}
