import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DOMParser, type Element as XmlElement } from '@xmldom/xmldom';
import { parse } from 'parse5';
import { afterEach, describe, expect, it } from 'vitest';
import { ConflictError, StorageError, ValidationError } from '../core/errors.js';
import { chapterIdFor, type Scene, type StoryState } from '../state/schema.js';
import { makeNextScene, makeNextState, makeStoryState } from '../testing/fixtures.js';
import { ManualClock } from '../testing/manual-clock.js';
import { runPublisherSuite } from '../testing/publisher-suite.js';
import { createFilesystemPublisher, readSitePublication } from './filesystem.js';
import { type Episode, sceneAltText } from './publisher.js';

const folders: string[] = [];
async function tempFolder(): Promise<string> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'storyloom-site-'));
  folders.push(folder);
  return folder;
}
afterEach(async () => {
  for (const folder of folders.splice(0)) await rm(folder, { recursive: true, force: true });
});

runPublisherSuite(
  { describe, it },
  {
    name: 'filesystem',
    create: async () => {
      const directory = await tempFolder();
      return {
        publisher: createFilesystemPublisher({ directory }),
        published: (storyId, sceneId) => readSitePublication(directory, storyId, sceneId),
        // The scene's JSON: its page also shows the neighbours' links, which a later scene changes.
        read: async (storyId, sceneId) => {
          const sceneJson = (await readSitePublication(directory, storyId, sceneId)).find((file) =>
            file.endsWith('.json'),
          );
          return sceneJson ? readFile(path.join(directory, sceneJson), 'utf8') : null;
        },
      };
    },
  },
);

const PNG = Uint8Array.from(
  Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
    'base64',
  ),
);
const SVG = new TextEncoder().encode(
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="9"><rect width="16" height="9" fill="#246"/></svg>',
);

/** `count` consecutive episodes of one story; a new chapter every `chapterLength` scenes. */
function makeEpisodes(
  count: number,
  options: {
    storyId?: string;
    chapterLength?: number;
    story?: Partial<StoryState>;
    scene?: (index: number) => Partial<Scene>;
  } = {},
): Episode[] {
  const chapterLength = options.chapterLength ?? 1_000;
  let state = makeStoryState(options.storyId ?? 'tale', options.story ?? {});
  const episodes: Episode[] = [];
  for (let index = 0; index < count; index++) {
    const chapterIndex = Math.floor(index / chapterLength);
    state = { ...state, chapterIndex, chapterId: chapterIdFor(chapterIndex) };
    const scene = makeNextScene(state, { title: `Night ${index + 1}`, ...options.scene?.(index) });
    const next = makeNextState(state, scene);
    episodes.push({ story: next, scene });
    state = next;
  }
  return episodes;
}

/** `episode` with its story's cast member Gull renamed Captain Gull: a newer roster than the one it was made with. */
function withGullRenamed(episode: Episode): Episode {
  const { characters } = episode.story;
  return {
    ...episode,
    story: { ...episode.story, characters: { ...characters, gull: { ...characters.gull!, name: 'Captain Gull' } } },
  };
}

/** Every file under `folder` (temporary files included), by relative path. */
async function snapshot(folder: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const walk = async (relative: string) => {
    for (const entry of await readdir(path.join(folder, relative), { withFileTypes: true })) {
      const child = relative ? `${relative}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(child);
      else files.set(child, await readFile(path.join(folder, child)));
    }
  };
  await walk('');
  return files;
}

/** The files an uninterrupted run of `episodes`, one publish each, writes. */
async function siteOf(episodes: readonly Episode[]): Promise<Map<string, Buffer>> {
  const directory = await tempFolder();
  const publisher = createFilesystemPublisher({ directory });
  for (const episode of episodes) await publisher.publish(episode);
  return snapshot(directory);
}

const slug = (scene: Scene) => `${String(scene.index).padStart(6, '0')}-${scene.id.replaceAll(':', '~')}`;
const read = (folder: string, relative: string) => readFile(path.join(folder, relative), 'utf8');

/** The episodes the site's catalog lists, chapter by chapter: `episodes.json` names them, each has its own file. */
async function listedEpisodes(folder: string): Promise<Array<{ sceneId: string; index: number; chapterId: string }>> {
  const catalog = JSON.parse(await read(folder, 'episodes.json'));
  const listed = [];
  for (const chapter of catalog.chapters as Array<{ chapterId: string; count: number }>) {
    const file = JSON.parse(await read(folder, `episodes/${chapter.chapterId.replaceAll(':', '~')}.json`));
    expect(file.episodes).toHaveLength(chapter.count);
    listed.push(...file.episodes);
  }
  expect(listed).toHaveLength(catalog.episodeCount);
  return listed;
}

/**
 * Rewrites the catalog of the site in `directory` as storyloom wrote it before feed keys, picture sizes and revision
 * times: `storyloom-site/2` in `episodes.json`, `story.json` and every chapter file, no `feedKey`, and episodes
 * without `revisedAt` or a picture's `width` and `height`. The rest (the layout, the compact JSON) is that format's.
 */
async function asEarlierFormat(directory: string): Promise<void> {
  const rewrite = async (relative: string, change: (value: Record<string, unknown>) => void) => {
    const value = JSON.parse(await read(directory, relative));
    value.format = 'storyloom-site/2';
    change(value);
    await writeFile(path.join(directory, relative), `${JSON.stringify(value)}\n`);
  };
  await rewrite('episodes.json', (catalog) => {
    delete catalog.feedKey;
  });
  await rewrite('story.json', () => undefined);
  for (const name of await readdir(path.join(directory, 'episodes'))) {
    await rewrite(`episodes/${name}`, (chapter) => {
      for (const episode of chapter.episodes as Array<Record<string, { width?: number; height?: number } | null>>) {
        delete episode.revisedAt;
        delete episode.image?.width;
        delete episode.image?.height;
      }
    });
  }
}

/** The `<id>` of a feed and those of its entries, in the feed's order. */
function feedIds(feedXml: string): { feed: string; entries: string[] } {
  const feed = parseXml(feedXml).document.documentElement!;
  return {
    feed: atomChildren(feed, 'id')[0]!.textContent!,
    entries: atomChildren(feed, 'entry').map((entry) => atomChildren(entry, 'id')[0]!.textContent!),
  };
}

// A small parse5 tree walker: enough to read elements, attributes and text.
interface HtmlNode {
  nodeName: string;
  attrs?: Array<{ name: string; value: string }>;
  childNodes?: HtmlNode[];
  value?: string;
}
function parseHtml(html: string): { root: HtmlNode; errors: string[] } {
  const errors: string[] = [];
  const root = parse(html, { onParseError: (error) => errors.push(error.code) }) as unknown as HtmlNode;
  return { root, errors };
}
function elements(node: HtmlNode, name?: string): HtmlNode[] {
  const found: HtmlNode[] = [];
  const visit = (current: HtmlNode) => {
    if (current.attrs && (name === undefined || current.nodeName === name)) found.push(current);
    for (const child of current.childNodes ?? []) visit(child);
  };
  visit(node);
  return found;
}
function textOf(node: HtmlNode): string {
  if (node.nodeName === '#text') return node.value ?? '';
  return (node.childNodes ?? []).map(textOf).join('');
}
function attribute(node: HtmlNode, name: string): string | undefined {
  return node.attrs?.find((attr) => attr.name === name)?.value;
}
function byClass(node: HtmlNode, className: string): HtmlNode[] {
  return elements(node).filter((element) => (attribute(element, 'class') ?? '').split(' ').includes(className));
}

function parseXml(xml: string) {
  const problems: string[] = [];
  const document = new DOMParser({
    onError: (level, message) => {
      if (level !== 'warning') problems.push(message);
    },
  }).parseFromString(xml, 'application/xml');
  return { document, problems };
}
const ATOM = 'http://www.w3.org/2005/Atom';
function atomChildren(parent: XmlElement, name: string): XmlElement[] {
  return Array.from(parent.childNodes).filter(
    (node): node is XmlElement =>
      node.nodeType === 1 && (node as XmlElement).localName === name && (node as XmlElement).namespaceURI === ATOM,
  );
}

describe('createFilesystemPublisher: options', () => {
  it('rejects invalid options with a ValidationError naming every problem', () => {
    let caught: unknown;
    try {
      createFilesystemPublisher({
        directory: ' ',
        baseUrl: 'not a url',
        target: 'bad target',
        feedEntries: 0,
        indexChapters: 1.5,
        indexEpisodes: 0,
        scenePagesPerWrite: 0,
      });
    } catch (error) {
      caught = error;
    }
    expect(ValidationError.isInstance(caught)).toBe(true);
    expect((caught as ValidationError).problems.map((problem) => problem.path).sort()).toEqual([
      'baseUrl',
      'directory',
      'feedEntries',
      'indexChapters',
      'indexEpisodes',
      'scenePagesPerWrite',
      'target',
    ]);
  });

  it('declares its provider, target and idempotency', async () => {
    const publisher = createFilesystemPublisher({ directory: await tempFolder(), target: 'website' });
    expect(publisher.provider).toBe('filesystem');
    expect(publisher.target).toBe('website');
    expect(publisher.capabilities.idempotent).toBe(true);
  });

  it('rejects an invalid episode and an unknown image type with a ValidationError', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const [episode] = makeEpisodes(1);
    await expect(publisher.publish({ ...episode!, scene: { ...episode!.scene, id: '../escape' } })).rejects.toSatisfy(
      (error) => ValidationError.isInstance(error),
    );
    await expect(
      publisher.publish({ ...episode!, image: { data: PNG, mediaType: 'image/tiff', alt: '' } }),
    ).rejects.toSatisfy((error) => ValidationError.isInstance(error));
    expect(await readdir(directory)).toEqual([]);
  });
});

describe('createFilesystemPublisher: results', () => {
  it('returns the relative paths it wrote and the public URL of the page', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, baseUrl: 'https://stories.example.com/tale' });
    const [episode] = makeEpisodes(1);
    const result = await publisher.publish({ ...episode!, image: { data: PNG, mediaType: 'image/png', alt: 'sea' } });
    const name = slug(episode!.scene);
    expect(result).toEqual({
      target: 'site',
      url: `https://stories.example.com/tale/scenes/${name}.html`,
      ids: [`images/${name}.png`, `scenes/${name}.html`, `scenes/${name}.json`],
    });
    expect(await readSitePublication(directory, 'tale', episode!.scene.id)).toEqual(result.ids);
    expect(await readSitePublication(directory, 'other-story', episode!.scene.id)).toEqual([]);
    const json = JSON.parse(await read(directory, `scenes/${name}.json`));
    expect(json).toEqual(episode!.scene);
  });

  it('returns a file URL without a base URL, and maps ":" in ids to a portable file name', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const [episode] = makeEpisodes(1, { scene: () => ({ id: 'tale:s0' }) });
    const result = await publisher.publish(episode!);
    expect(result.url).toMatch(/^file:\/\/.*\/scenes\/000000-tale(~|%7E)s0\.html$/);
    expect(await readSitePublication(directory, 'tale', 'tale:s0')).toEqual([
      'scenes/000000-tale~s0.html',
      'scenes/000000-tale~s0.json',
    ]);
  });

  it('reports a folder it cannot write as a StorageError', async () => {
    const file = path.join(await tempFolder(), 'not-a-folder');
    await writeFile(file, 'plain file');
    const publisher = createFilesystemPublisher({ directory: file });
    await expect(publisher.publish(makeEpisodes(1)[0]!)).rejects.toSatisfy((error) => StorageError.isInstance(error));
  });

  it('refuses to mix two stories in one folder', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    await publisher.publish(makeEpisodes(1, { storyId: 'first' })[0]!);
    await expect(publisher.publish(makeEpisodes(1, { storyId: 'second' })[0]!)).rejects.toSatisfy(
      (error) => ConflictError.isInstance(error) && !(error as ConflictError).isRetryable,
    );
  });
});

describe('createFilesystemPublisher: idempotency and crash safety', () => {
  it('publishing the same scenes again leaves every file byte-identical', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(3);
    for (const episode of episodes) await publisher.publish(episode);
    const before = await snapshot(directory);
    expect([...before.keys()].sort()).toEqual(
      [
        'chapters/1.html',
        'characters.html',
        'episodes.json',
        'episodes/chapter-0001.json',
        'feed.atom',
        'index.html',
        'story.json',
        'style.css',
        'threads.html',
        ...episodes.flatMap((episode) => [`scenes/${slug(episode.scene)}.html`, `scenes/${slug(episode.scene)}.json`]),
      ].sort(),
    );
    // The second scene again, then the first with its older story state: nothing changes, nothing rolls back.
    await publisher.publish(episodes[1]!);
    await publisher.publish(episodes[0]!);
    // A second publisher instance (another run of the process) writes the same bytes.
    await createFilesystemPublisher({ directory }).publish(episodes[2]!);
    expect(await snapshot(directory)).toEqual(before);
  });

  it('keeps the roster of the newest state when an older scene is published again', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(2);
    const renamed = withGullRenamed(episodes[1]!);
    await publisher.publish(renamed);
    await publisher.publish(episodes[0]!);
    expect(await read(directory, 'characters.html')).toContain('Captain Gull');
  });

  it('never lets a concurrent publish of an older state overwrite a newer roster', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(3);
    const newest = episodes[2]!;
    const renamed = withGullRenamed(newest);
    // Without serialization both read the empty manifest and the older publish, finishing last, would win.
    await Promise.all([publisher.publish(renamed), publisher.publish(episodes[0]!), publisher.publish(episodes[1]!)]);
    expect(await read(directory, 'characters.html')).toContain('Captain Gull');
    expect(JSON.parse(await read(directory, 'story.json')).story.version).toBe(newest.story.version);
  });

  it('serializes concurrent publishes of the same and different scenes', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const other = createFilesystemPublisher({ directory: `${directory}${path.sep}.` });
    const episodes = makeEpisodes(12);
    await Promise.all([
      ...episodes.map((episode, index) => (index % 2 ? publisher : other).publish(episode)),
      ...episodes.slice(0, 4).map((episode) => publisher.publish(episode)),
    ]);
    expect((await listedEpisodes(directory)).map((entry) => entry.index)).toEqual([...Array(12).keys()]);
    for (const [index, episode] of episodes.entries()) {
      const { root } = parseHtml(await read(directory, `scenes/${slug(episode.scene)}.html`));
      const rels = elements(root, 'a').map((a) => [attribute(a, 'rel'), attribute(a, 'href')]);
      if (index > 0) expect(rels).toContainEqual(['prev', `${slug(episodes[index - 1]!.scene)}.html`]);
      if (index < 11) expect(rels).toContainEqual(['next', `${slug(episodes[index + 1]!.scene)}.html`]);
    }
    expect((await snapshot(directory)).keys()).not.toContain(expect.stringMatching(/\.tmp$/));
  });

  it('runs a publish that arrives while another waits its turn after that one, not beside it', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(3);
    const first = publisher.publish(episodes[0]!);
    const second = publisher.publish(episodes[1]!);
    await first;
    // The second publish has the folder now; the third comes after it was queued, and must wait for it all the same.
    await Promise.all([second, publisher.publish(episodes[2]!)]);
    // Overlapping publishes would have left a request for a repair.
    expect((await readdir(directory)).filter((name) => name.startsWith('.'))).toEqual([]);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });

  it('removes temporary files left by a dead writer and keeps those of a live one until they are stale', async () => {
    const directory = await tempFolder();
    const clock = new ManualClock(Date.now());
    const publisher = createFilesystemPublisher({ directory, clock, staleTempFileMs: 60_000 });
    const [first, second] = makeEpisodes(2);
    await publisher.publish(first!);
    const dead = '.index.html.999999999.0a1b2c.tmp';
    const deadScene = `scenes/.${slug(second!.scene)}.json.999999999.0a1b2d.tmp`;
    const live = `.feed.atom.${process.ppid}.0a1b2e.tmp`;
    for (const file of [dead, deadScene, live]) await writeFile(path.join(directory, file), '<html><bo');
    // A writer that dies mid-publish also leaves the marker of its publish, which makes the next one look everywhere.
    const deadMarker = '.publishing.999999999.0a1b2f';
    await writeFile(path.join(directory, deadMarker), JSON.stringify({ sceneId: second!.scene.id, index: 1 }));
    await publisher.publish(second!);
    let names = [...(await snapshot(directory)).keys()];
    expect(names).not.toContain(dead);
    expect(names).not.toContain(deadScene);
    expect(names).not.toContain(deadMarker);
    expect(names).toContain(live);
    // A stray temporary file is never listed as a publication.
    expect(await readSitePublication(directory, 'tale', second!.scene.id)).toEqual([
      `scenes/${slug(second!.scene)}.html`,
      `scenes/${slug(second!.scene)}.json`,
    ]);
    const { mtimeMs } = await stat(path.join(directory, live));
    clock.advance(mtimeMs - clock.now() + 60_001);
    await publisher.publish(second!);
    names = [...(await snapshot(directory)).keys()];
    expect(names).not.toContain(live);
  });

  it('folds back a scene a crash left out of the manifest, and rebuilds a damaged manifest', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(3);
    await publisher.publish(episodes[0]!);
    // A crash after the scene JSON was renamed into place, before the catalog was: the JSON exists, and so does the
    // marker the dead publish left (a crash at every write is tried in filesystem-crash.test.ts).
    await writeFile(
      path.join(directory, `scenes/${slug(episodes[1]!.scene)}.json`),
      `${JSON.stringify(episodes[1]!.scene)}\n`,
    );
    await writeFile(
      path.join(directory, '.publishing.999999999.0a1b2c'),
      JSON.stringify({ sceneId: episodes[1]!.scene.id, index: 1 }),
    );
    await publisher.publish(episodes[2]!);
    expect((await listedEpisodes(directory)).map((entry) => entry.sceneId)).toEqual(
      episodes.map((episode) => episode.scene.id),
    );
    expect(await read(directory, 'index.html')).toContain(`scenes/${slug(episodes[1]!.scene)}.html`);
    // The repair also wrote the page the dead publish never got to, and took its marker away.
    const { root } = parseHtml(await read(directory, `scenes/${slug(episodes[1]!.scene)}.html`));
    expect(
      elements(root, 'a')
        .map((link) => attribute(link, 'rel'))
        .filter(Boolean),
    ).toEqual(['prev', 'next']);
    expect((await readdir(directory)).filter((name) => name.startsWith('.'))).toEqual([]);

    const complete = await snapshot(directory);
    await writeFile(path.join(directory, 'episodes.json'), '{"format": "storyloom-site/1", "episo');
    await rm(path.join(directory, 'index.html'));
    await publisher.publish(episodes[1]!);
    await publisher.publish(episodes[2]!);
    const repaired = await snapshot(directory);
    for (const file of ['index.html', 'feed.atom', 'threads.html']) {
      expect(repaired.get(file)?.toString()).toBe(complete.get(file)?.toString());
    }
    expect(await listedEpisodes(directory)).toHaveLength(3);
  });
});

describe('createFilesystemPublisher: the catalog', () => {
  /** The order of a seeded shuffle: deterministic, and different for each seed. */
  function shuffled<T>(items: readonly T[], seed: number): T[] {
    const result = [...items];
    let state = seed;
    for (let index = result.length - 1; index > 0; index--) {
      state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
      const other = state % (index + 1);
      [result[index], result[other]] = [result[other]!, result[index]!];
    }
    return result;
  }

  it('leaves the same bytes whatever order the scenes arrive in, retried or in one batch', async () => {
    const episodes = makeEpisodes(14, { chapterLength: 3 }).map((episode, index) =>
      index % 4 === 1 ? { ...episode, image: { data: PNG, mediaType: 'image/png', alt: `Picture ${index}` } } : episode,
    );
    const inOrder = await tempFolder();
    const publisher = createFilesystemPublisher({ directory: inOrder });
    for (const episode of episodes) await publisher.publish(episode);
    const expected = await snapshot(inOrder);
    for (const seed of [1, 2, 3]) {
      // Out of order, chapters arriving late, and some scenes published twice (a retry, a second process).
      const arrivals = shuffled([...episodes, ...episodes.filter((_, index) => index % 5 === seed)], seed);
      const directory = await tempFolder();
      const shuffledPublisher = createFilesystemPublisher({ directory });
      for (const episode of arrivals) await shuffledPublisher.publish(episode);
      expect(await snapshot(directory), `order ${arrivals.map((episode) => episode.scene.index)}`).toEqual(expected);
    }
    const batched = await tempFolder();
    const results = await createFilesystemPublisher({ directory: batched }).publishMany(
      (async function* () {
        yield* episodes.slice(0, 9);
      })(),
    );
    await createFilesystemPublisher({ directory: batched }).publishMany(shuffled(episodes.slice(7), 4));
    expect(await snapshot(batched)).toEqual(expected);
    // A batch returns for each scene what publishing it alone returns.
    const alone = await createFilesystemPublisher({ directory: batched }).publish(episodes[1]!);
    expect(results[1]).toEqual(alone);
  });

  it('redoes the chapter link of every scene page when a chapter arrives late and renumbers those after it', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(6, { chapterLength: 2 });
    for (const index of [0, 1, 4, 5]) await publisher.publish(episodes[index]!);
    const chapterLinkOf = async (episode: Episode) => {
      const { root } = parseHtml(await read(directory, `scenes/${slug(episode.scene)}.html`));
      return attribute(elements(byClass(root, 'eyebrow')[0]!, 'a')[0]!, 'href');
    };
    expect(await chapterLinkOf(episodes[5]!)).toBe('../chapters/2.html');
    await publisher.publish(episodes[2]!);
    expect(await chapterLinkOf(episodes[4]!)).toBe('../chapters/3.html');
    expect(await chapterLinkOf(episodes[5]!)).toBe('../chapters/3.html');
  });

  it('repairs the site after a publish from another process overlapped this one', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(4);
    await publisher.publish(episodes[0]!);
    const catalogFiles = ['episodes.json', 'episodes/chapter-0001.json', 'story.json'];
    const asAnotherProcessSawThem = new Map(
      await Promise.all(catalogFiles.map(async (file) => [file, await read(directory, file)] as const)),
    );
    // Another process (alive: this one's parent) is publishing scene 3: its marker is there, and its scene JSON.
    const otherMarker = `.publishing.${process.ppid}.0a1b2c`;
    await writeFile(path.join(directory, otherMarker), JSON.stringify({ sceneId: episodes[2]!.scene.id, index: 2 }));
    await writeFile(
      path.join(directory, `scenes/${slug(episodes[2]!.scene)}.json`),
      `${JSON.stringify(episodes[2]!.scene, null, 2)}\n`,
    );
    await publisher.publish(episodes[1]!);
    // Still in progress, the other publish may yet write what it read before this one: the next publish must repair.
    const left = (await readdir(directory)).filter((name) => name.startsWith('.'));
    expect(left).toContain(otherMarker);
    expect(left.some((name) => /^\.needs-repair\.[0-9a-f]+$/.test(name))).toBe(true);
    // It does: it writes the catalog as it saw it (without scene 2), and ends.
    for (const [file, text] of asAnotherProcessSawThem) await writeFile(path.join(directory, file), text);
    await rm(path.join(directory, otherMarker));
    await publisher.publish(episodes[3]!);
    expect((await listedEpisodes(directory)).map((entry) => entry.index)).toEqual([0, 1, 2, 3]);
    expect((await readdir(directory)).filter((name) => name.startsWith('.'))).toEqual([]);
    const reference = await tempFolder();
    const uninterrupted = createFilesystemPublisher({ directory: reference });
    for (const episode of episodes) await uninterrupted.publish(episode);
    expect(await snapshot(directory)).toEqual(await snapshot(reference));
  });

  it('repairs a chapter file that disagrees with the catalog', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(5, { chapterLength: 2 });
    for (const episode of episodes.slice(0, 4)) await publisher.publish(episode);
    await writeFile(path.join(directory, 'episodes/chapter-0002.json'), '{"format": "storyloom-site/2", "epis');
    await writeFile(path.join(directory, 'episodes/chapter-0009.json'), '{}');
    await publisher.publish(episodes[4]!);
    expect((await listedEpisodes(directory)).map((entry) => entry.index)).toEqual([0, 1, 2, 3, 4]);
    const reference = await tempFolder();
    const uninterrupted = createFilesystemPublisher({ directory: reference });
    for (const episode of episodes) await uninterrupted.publish(episode);
    expect(await snapshot(directory)).toEqual(await snapshot(reference));
  });

  it('repairs a catalog whose numbers disagree with each other', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(3);
    for (const episode of episodes.slice(0, 2)) await publisher.publish(episode);
    const catalog = JSON.parse(await read(directory, 'episodes.json'));
    await writeFile(
      path.join(directory, 'episodes.json'),
      JSON.stringify({ ...catalog, episodeCount: catalog.episodeCount + 5 }),
    );
    await publisher.publish(episodes[2]!);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });

  it('renumbers the pages of the chapter that was first when an earlier chapter arrives', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(6, { chapterLength: 2 });
    // Chapters 2 and 3 come first, numbered 1 and 2; chapter 1 then makes them 2 and 3.
    for (const index of [2, 3, 4, 5, 0, 1]) await publisher.publish(episodes[index]!);
    const titlesOf = (html: string) =>
      byClass(parseHtml(html).root, 'card').map((card) => textOf(elements(card, 'h3')[0]!));
    expect(titlesOf(await read(directory, 'chapters/2.html'))).toEqual(['Night 3', 'Night 4']);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });

  it('carries a site of the earlier single-manifest format over', async () => {
    const episodes = makeEpisodes(4, { chapterLength: 2 });
    // A site published before feed keys keeps its feed ids, as one of the catalog format before them does.
    const reference = await tempFolder();
    const publisher = createFilesystemPublisher({ directory: reference });
    for (const episode of episodes.slice(0, 3)) await publisher.publish(episode);
    await asEarlierFormat(reference);
    await publisher.publish(episodes[3]!);
    const expected = await snapshot(reference);
    expect(feedIds(expected.get('feed.atom')!.toString()).feed).toBe('urn:storyloom:story:tale');

    const directory = await tempFolder();
    const migrating = createFilesystemPublisher({ directory });
    for (const episode of episodes.slice(0, 3)) await migrating.publish(episode);
    // What storyloom wrote before: one episodes.json with the story and every episode, and no catalog files.
    const story = episodes[2]!.story;
    const manifest = {
      format: 'storyloom-site/1',
      storyId: 'tale',
      story: {
        version: story.version,
        title: story.bible.title,
        premise: story.bible.premise,
        genre: story.bible.genre,
        tone: story.bible.tone,
        characters: story.characters,
        plotThreads: story.plotThreads,
      },
      episodes: await listedEpisodes(directory),
    };
    await rm(path.join(directory, 'episodes'), { recursive: true });
    await rm(path.join(directory, 'story.json'));
    await writeFile(path.join(directory, 'episodes.json'), JSON.stringify(manifest, null, 2));
    await migrating.publish(episodes[3]!);
    expect(await snapshot(directory)).toEqual(expected);
  });

  it('links the roster and the timeline to an earlier scene a new state names for the first time', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(4);
    for (const episode of episodes.slice(0, 3)) await publisher.publish(episode);
    const last = episodes[3]!;
    const story = {
      ...last.story,
      plotThreads: [{ ...last.story.plotThreads[0]!, openedIn: episodes[1]!.scene.id, lastAdvancedIn: null }],
    };
    await publisher.publish({ ...last, story });
    const { root } = parseHtml(await read(directory, 'threads.html'));
    expect(elements(byClass(root, 'thread')[0]!, 'a').map((link) => attribute(link, 'href'))).toEqual([
      `scenes/${slug(episodes[1]!.scene)}.html`,
    ]);
    expect(attribute(byClass(root, 'span')[0]!, 'class')).toBe('span l-26 w-74');
  });
});

describe('createFilesystemPublisher: navigation and ordering', () => {
  it('links each page to its neighbours, whatever order the scenes arrive in', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const [a, b, c] = makeEpisodes(3);
    const navOf = async (episode: Episode) => {
      const { root } = parseHtml(await read(directory, `scenes/${slug(episode.scene)}.html`));
      return Object.fromEntries(
        elements(root, 'a')
          .filter((link) => attribute(link, 'rel'))
          .map((link) => [attribute(link, 'rel'), attribute(link, 'href')]),
      );
    };
    await publisher.publish(a!);
    expect(await navOf(a!)).toEqual({});
    await publisher.publish(c!);
    expect(await navOf(a!)).toEqual({ next: `${slug(c!.scene)}.html` });
    await publisher.publish(b!);
    expect(await navOf(a!)).toEqual({ next: `${slug(b!.scene)}.html` });
    expect(await navOf(b!)).toEqual({ prev: `${slug(a!.scene)}.html`, next: `${slug(c!.scene)}.html` });
    expect(await navOf(c!)).toEqual({ prev: `${slug(b!.scene)}.html` });
  });

  it('keeps the manifest in story order and lists the index newest first, grouped by chapter', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(5, { chapterLength: 3 });
    for (const index of [3, 0, 4, 1, 2]) await publisher.publish(episodes[index]!);
    expect((await listedEpisodes(directory)).map((entry) => entry.index)).toEqual([0, 1, 2, 3, 4]);
    const { root, errors } = parseHtml(await read(directory, 'index.html'));
    expect(errors).toEqual([]);
    const chapters = elements(root, 'section').filter((section) => attribute(section, 'class') === 'chapter');
    expect(chapters.map((section) => attribute(section, 'id'))).toEqual(['chapter-2', 'chapter-1']);
    const titles = chapters.map((section) => elements(section, 'h3').map((h3) => textOf(h3)));
    expect(titles).toEqual([
      ['Night 5', 'Night 4'],
      ['Night 3', 'Night 2', 'Night 1'],
    ]);
    const sceneTwo = parseHtml(await read(directory, `scenes/${slug(episodes[3]!.scene)}.html`)).root;
    expect(textOf(byClass(sceneTwo, 'eyebrow')[0]!)).toContain('Chapter 2 · Episode 4');
  });
});

describe('createFilesystemPublisher: names', () => {
  it('names a cast member or a relationship target the story does not know by its id, even "constructor"', async () => {
    const directory = await tempFolder();
    const base = makeStoryState('tale');
    const mira = base.characters.mira!;
    const relationship = { kind: 'rival', affinity: -0.2, trust: 0.1, note: '', since: null };
    const [episode] = makeEpisodes(1, {
      story: { characters: { ...base.characters, mira: { ...mira, relationships: { constructor: relationship } } } },
      scene: () => ({ characters: ['mira', 'constructor'] }),
    });
    await createFilesystemPublisher({ directory }).publish(episode!);
    const chapter = JSON.parse(await read(directory, 'episodes/chapter-0001.json'));
    expect(chapter.episodes[0].cast).toEqual([
      { id: 'mira', name: mira.name },
      { id: 'constructor', name: 'constructor' },
    ]);
    const roster = await read(directory, 'characters.html');
    expect(roster).toContain('<td><span dir="auto">constructor</span></td>');
    expect(roster).not.toContain('Object');
  });
});

describe('createFilesystemPublisher: pictures', () => {
  it('stores each picture under the extension of its media type and shows it on the pages', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(4);
    const images = [
      { data: PNG, mediaType: 'image/png', extension: 'png' },
      { data: SVG, mediaType: 'image/svg+xml', extension: 'svg' },
      { data: Uint8Array.of(0xff, 0xd8, 0xff, 0xd9), mediaType: 'image/jpeg', extension: 'jpg' },
      {
        data: new TextEncoder().encode('RIFF\u0004\u0000\u0000\u0000WEBP'),
        mediaType: 'image/webp',
        extension: 'webp',
      },
    ];
    for (const [index, image] of images.entries()) {
      await publisher.publish({ ...episodes[index]!, image: { ...image, alt: `Picture ${index}` } });
    }
    for (const [index, image] of images.entries()) {
      const name = `images/${slug(episodes[index]!.scene)}.${image.extension}`;
      expect(new Uint8Array(await readFile(path.join(directory, name)))).toEqual(image.data);
      const { root } = parseHtml(await read(directory, `scenes/${slug(episodes[index]!.scene)}.html`));
      const [img] = elements(root, 'img');
      expect(attribute(img!, 'src')).toBe(`../${name}`);
      expect(attribute(img!, 'alt')).toBe(`Picture ${index}`);
    }
    const index = await read(directory, 'index.html');
    for (const [position, image] of images.entries()) {
      expect(index).toContain(`src="images/${slug(episodes[position]!.scene)}.${image.extension}"`);
    }
  });

  it('keeps one picture per scene, and keeps it when a retry comes without it', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const [episode] = makeEpisodes(1);
    await publisher.publish({ ...episode!, image: { data: PNG, mediaType: 'image/png', alt: 'first' } });
    await publisher.publish({ ...episode!, image: { data: SVG, mediaType: 'image/svg+xml', alt: 'second' } });
    const name = slug(episode!.scene);
    expect(await readdir(path.join(directory, 'images'))).toEqual([`${name}.svg`]);
    const retry = await publisher.publish(episode!);
    expect(retry.ids).toContain(`images/${name}.svg`);
    expect(await read(directory, `scenes/${name}.html`)).toContain('alt="second"');
  });

  /** A PNG's signature and IHDR chunk: all a browser needs to know the picture's size. */
  function pngOf(width: number, height: number): Uint8Array {
    const bytes = Buffer.alloc(33);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(bytes, 0);
    bytes.writeUInt32BE(13, 8);
    bytes.write('IHDR', 12, 'latin1');
    bytes.writeUInt32BE(width, 16);
    bytes.writeUInt32BE(height, 20);
    bytes.set([8, 6, 0, 0, 0], 24);
    return new Uint8Array(bytes);
  }

  /**
   * A JPEG's segments up to its frame header, with an Exif orientation when given (in the TIFF byte order `byteOrder`,
   * little-endian by default; cameras and phones write either), and a Huffman table segment before a progressive
   * frame header (SOF2) when `progressive`, as progressive encoders lay it out.
   */
  function jpegOf(
    width: number,
    height: number,
    orientation?: number,
    { byteOrder = 'II', progressive = false }: { byteOrder?: 'II' | 'MM'; progressive?: boolean } = {},
  ): Uint8Array {
    const segment = (marker: number, body: Buffer) => {
      const head = Buffer.from([0xff, marker, 0, 0]);
      head.writeUInt16BE(body.length + 2, 2);
      return Buffer.concat([head, body]);
    };
    const parts = [Buffer.from([0xff, 0xd8]), segment(0xe0, Buffer.from('JFIF\0\x01\x01\0\0\x01\0\x01\0\0', 'latin1'))];
    if (orientation !== undefined) {
      // TIFF: header, one IFD of one entry (tag 0x0112, SHORT, count 1), no next IFD.
      const tiff = Buffer.alloc(26);
      const [u16, u32] =
        byteOrder === 'II'
          ? [tiff.writeUInt16LE.bind(tiff), tiff.writeUInt32LE.bind(tiff)]
          : [tiff.writeUInt16BE.bind(tiff), tiff.writeUInt32BE.bind(tiff)];
      tiff.write(byteOrder, 0, 'latin1');
      u16(42, 2);
      u32(8, 4);
      u16(1, 8);
      u16(0x0112, 10);
      u16(3, 12);
      u32(1, 14);
      u16(orientation, 18);
      parts.push(segment(0xe1, Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff])));
    }
    parts.push(segment(0xdb, Buffer.alloc(65)));
    // A DHT (0xc4) sits among the frame markers' codes but is no frame header: its bytes are no size.
    if (progressive)
      parts.push(segment(0xc4, Buffer.from([0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01])));
    const frame = Buffer.from([8, 0, 0, 0, 0, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    frame.writeUInt16BE(height, 1);
    frame.writeUInt16BE(width, 3);
    parts.push(segment(progressive ? 0xc2 : 0xc0, frame), Buffer.from([0xff, 0xd9]));
    return new Uint8Array(Buffer.concat(parts));
  }

  /** A WebP of one chunk (`VP8 `, `VP8L` or `VP8X`), as far as its header. */
  function webpOf(chunk: 'VP8 ' | 'VP8L' | 'VP8X', width: number, height: number): Uint8Array {
    const body = Buffer.alloc(10);
    if (chunk === 'VP8 ') {
      body.set([0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
      body.writeUInt16LE(width, 6);
      body.writeUInt16LE(height, 8);
    } else if (chunk === 'VP8L') {
      body[0] = 0x2f;
      body.writeUInt32LE(((width - 1) | ((height - 1) << 14)) >>> 0, 1);
    } else {
      body.writeUIntLE(width - 1, 4, 3);
      body.writeUIntLE(height - 1, 7, 3);
    }
    const header = Buffer.alloc(20);
    header.write('RIFF', 0, 'latin1');
    header.writeUInt32LE(12 + body.length, 4);
    header.write(`WEBP${chunk}`, 8, 'latin1');
    header.writeUInt32LE(body.length, 16);
    return new Uint8Array(Buffer.concat([header, body]));
  }

  const svgOf = (rootAttributes: string) =>
    new TextEncoder().encode(
      `<?xml version="1.0"?>\n<!-- <svg width="1" height="1"> --><svg xmlns="http://www.w3.org/2000/svg" ${rootAttributes}><rect width="5" height="5"/></svg>`,
    );

  it('gives each picture the width and height its bytes say, and none when they say none', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const pictures: Array<{ data: Uint8Array; mediaType: string; size: [number, number] | null }> = [
      { data: pngOf(1024, 576), mediaType: 'image/png', size: [1024, 576] },
      { data: jpegOf(800, 600), mediaType: 'image/jpeg', size: [800, 600] },
      // Orientation 6: shown turned a quarter, as browsers show it.
      { data: jpegOf(800, 600, 6), mediaType: 'image/jpeg', size: [600, 800] },
      { data: jpegOf(800, 600, 3), mediaType: 'image/jpeg', size: [800, 600] },
      // Every orientation that turns a quarter (5 to 8, mirrored or not), and Exif in big-endian order (as phones write).
      ...[5, 7, 8].map((orientation) => ({
        data: jpegOf(800, 600, orientation),
        mediaType: 'image/jpeg',
        size: [600, 800] as [number, number],
      })),
      { data: jpegOf(800, 600, 6, { byteOrder: 'MM' }), mediaType: 'image/jpeg', size: [600, 800] },
      { data: jpegOf(800, 600, 1, { byteOrder: 'MM' }), mediaType: 'image/jpeg', size: [800, 600] },
      // A progressive JPEG, its Huffman tables before its frame header.
      { data: jpegOf(1024, 768, undefined, { progressive: true }), mediaType: 'image/jpeg', size: [1024, 768] },
      { data: webpOf('VP8 ', 640, 360), mediaType: 'image/webp', size: [640, 360] },
      { data: webpOf('VP8L', 300, 200), mediaType: 'image/webp', size: [300, 200] },
      { data: webpOf('VP8X', 1920, 1080), mediaType: 'image/webp', size: [1920, 1080] },
      { data: svgOf('width="320" height="180px"'), mediaType: 'image/svg+xml', size: [320, 180] },
      { data: svgOf('viewBox="0 0 400 300"'), mediaType: 'image/svg+xml', size: [400, 300] },
      { data: svgOf("width='640' viewBox='0,0,16,9'"), mediaType: 'image/svg+xml', size: [640, 360] },
      { data: svgOf('width="100%" height="100%"'), mediaType: 'image/svg+xml', size: null },
      // A JPEG cut before its frame header.
      { data: jpegOf(800, 600).subarray(0, 40), mediaType: 'image/jpeg', size: null },
    ];
    const episodes = makeEpisodes(pictures.length);
    for (const [index, { data, mediaType }] of pictures.entries()) {
      await publisher.publish({ ...episodes[index]!, image: { data, mediaType, alt: `Picture ${index}` } });
    }
    const sizesOnPages = async () => {
      const sizes = [];
      for (const { scene } of episodes) {
        const [img] = elements(parseHtml(await read(directory, `scenes/${slug(scene)}.html`)).root, 'img');
        const [width, height] = [attribute(img!, 'width'), attribute(img!, 'height')];
        sizes.push(width === undefined && height === undefined ? null : [Number(width), Number(height)]);
      }
      return sizes;
    };
    expect(await sizesOnPages()).toEqual(pictures.map((picture) => picture.size));
    // Pages rendered again without the pictures' bytes (a repair renders every one) keep them.
    await rm(path.join(directory, 'episodes.json'));
    await publisher.publish(episodes[0]!);
    expect(await sizesOnPages()).toEqual(pictures.map((picture) => picture.size));
    // As does the page of a scene whose retry comes without its picture, whose neighbour's page is redone.
    await publisher.publish(episodes[1]!);
    expect(await sizesOnPages()).toEqual(pictures.map((picture) => picture.size));
  });

  it('describes a picture by its scene, not by the image prompt it came with, and keeps an alt text of its own', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const style = 'ink and watercolour, muted blues';
    const episodes = makeEpisodes(3, {
      scene: (index) => ({ imagePrompt: `${style}. The lamp room at dusk, scene ${index + 1}.` }),
    });
    const alts = [sceneAltText(episodes[0]!.scene), '', 'Mira lights the lamp in the rain'];
    for (const [index, alt] of alts.entries()) {
      await publisher.publish({ ...episodes[index]!, image: { data: PNG, mediaType: 'image/png', alt } });
    }
    const altOf = async (index: number) => {
      const page = await read(directory, `scenes/${slug(episodes[index]!.scene)}.html`);
      return attribute(
        byClass(parseHtml(page).root, 'scene-picture').flatMap((figure) => elements(figure, 'img'))[0]!,
        'alt',
      );
    };
    expect(await altOf(0)).toBe(`Illustration: ${episodes[0]!.scene.title}`);
    expect(await altOf(0)).not.toContain(style);
    expect(await altOf(1)).toBe(`Illustration: ${episodes[1]!.scene.title}`);
    expect(await altOf(2)).toBe('Mira lights the lamp in the rain');
  });

  it('refuses an SVG that could run a script or load a resource', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const [episode] = makeEpisodes(1);
    const ns = 'xmlns="http://www.w3.org/2000/svg"';
    for (const svg of [
      `<svg ${ns}><script>alert(1)</script></svg>`,
      `<svg ${ns} onload="alert(1)"/>`,
      `<svg ${ns}><image href="https://tracker.example/x.png"/></svg>`,
      // What a scan of the text for "<script", "javascript:" or an external href does not see:
      `<svg ${ns} xmlns:s="http://www.w3.org/2000/svg"><s:script>alert(1)</s:script></svg>`,
      `<svg ${ns}><a href="&#106;avascript:alert(1)"><rect width="16" height="9"/></a></svg>`,
      `<svg ${ns}><style>@import url(https://tracker.example/x.css);</style></svg>`,
      Buffer.from(`\uFEFF<svg ${ns}><script>alert(1)</script></svg>`, 'utf16le'),
    ]) {
      const data = typeof svg === 'string' ? new TextEncoder().encode(svg) : new Uint8Array(svg);
      const image = { data, mediaType: 'image/svg+xml', alt: '' };
      await expect(publisher.publish({ ...episode!, image })).rejects.toSatisfy((error) =>
        ValidationError.isInstance(error),
      );
    }
    expect(await readSitePublication(directory, 'tale', episode!.scene.id)).toEqual([]);
  });
});

describe('createFilesystemPublisher: escaping', () => {
  const LONG_WORD = 'a'.repeat(5_000);
  const hostile = {
    title: '</title><script>alert(1)</script>',
    text: `He said "onmouseover=alert(1)" and ]]></text><evil/> & left.\u0000\u0007\n\n\u202eesrever ${LONG_WORD}\n<img src=x onerror=alert(2)>`,
    summary: "'><script src=//evil.example/x.js></script>",
    name: '<img src=x onerror=alert(3)>',
    theme: '"><script>alert(4)</script>',
  };

  async function hostileSite() {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, baseUrl: 'https://example.com/s' });
    const base = makeStoryState('tale');
    const episodes = makeEpisodes(2, {
      story: {
        bible: { ...base.bible, title: '<script>document.title</script>', premise: hostile.summary },
        characters: {
          ...base.characters,
          mira: {
            ...base.characters.mira!,
            name: hostile.name,
            aliases: ['</bdi><script>x</script>'],
            description: hostile.summary,
            traits: { '<script>': 0.5 },
            relationships: {
              tobin: { kind: '"><svg onload=alert(5)>', affinity: -0.4, trust: 0.9, note: hostile.title, since: null },
            },
          },
        },
        plotThreads: [
          { ...base.plotThreads[0]!, title: hostile.title, summary: hostile.summary, setups: [hostile.theme] },
        ],
      },
      scene: () => ({
        title: hostile.title,
        text: hostile.text,
        summary: hostile.summary,
        themes: [hostile.theme],
        locations: ['<iframe src="javascript:alert(6)">'],
        mood: '</p><script>',
      }),
    });
    await publisher.publish({
      ...episodes[0]!,
      image: { data: PNG, mediaType: 'image/png', alt: '" onload="alert(7)' },
    });
    await publisher.publish(episodes[1]!);
    return { directory, episodes };
  }

  it('writes no script, no event handler and no foreign URL into any file', async () => {
    const { directory } = await hostileSite();
    const files = await snapshot(directory);
    for (const [name, bytes] of files) {
      if (name.endsWith('.png')) continue;
      const text = bytes.toString('utf8');
      expect(text, name).not.toMatch(/<script/i);
      expect(text, name).not.toMatch(/<(svg|iframe|evil)[\s/>]/i);
      if (!name.endsWith('.html')) {
        expect(text, name).not.toMatch(/<img[\s/>]/i);
        continue;
      }
      const { root, errors } = parseHtml(text);
      expect(errors, name).toEqual([]);
      const injected = elements(root).filter((element) =>
        ['script', 'iframe', 'svg', 'evil'].includes(element.nodeName),
      );
      expect(injected, name).toEqual([]);
      for (const element of elements(root)) {
        for (const attr of element.attrs ?? []) {
          expect(attr.name, `${name} <${element.nodeName}>`).not.toMatch(/^on/);
          // The one absolute URL is the empty icon, so browsers do not ask the server for /favicon.ico.
          const isEmptyIcon = element.nodeName === 'link' && attr.value === 'data:,';
          if ((attr.name === 'href' || attr.name === 'src') && !isEmptyIcon) {
            expect(attr.value, name).toMatch(/^(#|\.\.\/|[a-z0-9]|[A-Za-z0-9~._-]+\.(html|atom|css|json))/);
            expect(attr.value, name).not.toMatch(/^[a-z]+:|^\/\//i);
          }
        }
      }
    }
  });

  it('keeps hostile text readable: it round-trips through an HTML parser, minus control characters', async () => {
    const { directory, episodes } = await hostileSite();
    const scene = episodes[0]!.scene;
    const { root } = parseHtml(await read(directory, `scenes/${slug(scene)}.html`));
    expect(textOf(elements(root, 'h1')[0]!)).toBe(hostile.title);
    // Each value isolated (FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE), as no markup can be in a title.
    expect(textOf(elements(root, 'title')[0]!)).toBe(
      `\u2068${hostile.title}\u2069 · \u2068<script>document.title</script>\u2069`,
    );
    const prose = textOf(byClass(root, 'prose')[0]!);
    expect(prose).toContain('He said "onmouseover=alert(1)" and ]]></text><evil/> & left.');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the test checks that control characters are gone
    expect(prose).not.toMatch(/[\u0000\u0007]/);
    expect(prose).toContain(`\u202eesrever ${LONG_WORD}`);
    expect(prose).toContain('<img src=x onerror=alert(2)>');
    expect(attribute(elements(root, 'img')[0]!, 'alt')).toBe('" onload="alert(7)');
    const facts = textOf(byClass(root, 'scene-facts')[0]!);
    expect(facts).toContain(hostile.name);
    expect(facts).toContain(hostile.theme);
    expect(facts).toContain('</p><script>');

    const roster = parseHtml(await read(directory, 'characters.html')).root;
    expect(elements(roster, 'h2').map(textOf)).toContain(hostile.name);
    expect(textOf(roster)).toContain('"><svg onload=alert(5)>');
    const threads = parseHtml(await read(directory, 'threads.html')).root;
    expect(elements(threads, 'h2').map(textOf)).toContain(hostile.title);

    // The JSON is the scene itself, as JSON.stringify wrote it.
    expect(JSON.parse(await read(directory, `scenes/${slug(scene)}.json`))).toEqual(scene);
    expect(await read(directory, `scenes/${slug(scene)}.json`)).toContain('\\u0000');
  });

  it('writes a well-formed Atom feed whose text round-trips', async () => {
    const { directory } = await hostileSite();
    const { document, problems } = parseXml(await read(directory, 'feed.atom'));
    expect(problems).toEqual([]);
    const feed = document.documentElement!;
    expect(atomChildren(feed, 'title')[0]!.textContent).toBe('<script>document.title</script>');
    const entryTitles = atomChildren(feed, 'entry').map((entry) => atomChildren(entry, 'title')[0]!.textContent);
    expect(entryTitles).toEqual([hostile.title, hostile.title]);
  });
});

describe('createFilesystemPublisher: bidi isolation', () => {
  const RLO = '\u202e';
  const LRI = '\u2066';
  const FSI = '\u2068';
  const PDI = '\u2069';

  it('isolates genre and tone from each other on the index, so an override in one cannot reverse the other', async () => {
    const directory = await tempFolder();
    const base = makeStoryState('tale');
    const [episode] = makeEpisodes(1, { story: { bible: { ...base.bible, genre: `fantasy${RLO}`, tone: 'wistful' } } });
    await createFilesystemPublisher({ directory }).publish(episode!);
    const { root, errors } = parseHtml(await read(directory, 'index.html'));
    expect(errors).toEqual([]);
    const eyebrow = byClass(root, 'eyebrow')[0]!;
    expect(elements(eyebrow, 'bdi').map(textOf)).toEqual([`fantasy${RLO}`, 'wistful']);
    expect(textOf(eyebrow)).toBe(`fantasy${RLO} · wistful`);
  });

  it('closes every override and isolate a title opens before the site title that follows it in <title>', async () => {
    const directory = await tempFolder();
    const base = makeStoryState('tale');
    // A PDI with nothing to close (it would end the isolate early), an override, and an isolate left open.
    const title = `${PDI}${RLO}Night${LRI}one`;
    const [episode] = makeEpisodes(1, {
      story: { bible: { ...base.bible, title: 'Keepers' } },
      scene: () => ({ title }),
    });
    await createFilesystemPublisher({ directory }).publish(episode!);
    const page = parseHtml(await read(directory, `scenes/${slug(episode!.scene)}.html`)).root;
    const shown = textOf(elements(page, 'title')[0]!);
    expect(shown).toBe(`${FSI}${RLO}Night${LRI}one${PDI}${PDI} · ${FSI}Keepers${PDI}`);
    // Every isolate the scene's title opens, ours included, is closed before " · ": the closing PDI ends the override.
    const [sceneTitle] = shown.split(' · ');
    let open = 0;
    for (const character of sceneTitle!) {
      if (character === FSI || character === LRI) open++;
      if (character === PDI) {
        expect(open).toBeGreaterThan(0);
        open--;
      }
    }
    expect(open).toBe(0);
    const index = parseHtml(await read(directory, 'index.html')).root;
    expect(textOf(elements(index, 'title')[0]!)).toBe(`${FSI}Keepers${PDI}`);
  });
});

describe('createFilesystemPublisher: Atom feed', () => {
  it('isolates a title that holds a bidi override, so it cannot run on into what a reader shows next; plain ones stay plain', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(2, { scene: (index) => (index === 0 ? { title: 'Lamp \u202eon' } : {}) });
    for (const episode of episodes) await publisher.publish(episode);
    const { document, problems } = parseXml(await read(directory, 'feed.atom'));
    expect(problems).toEqual([]);
    const titles = atomChildren(document.documentElement!, 'entry').map(
      (entry) => atomChildren(entry, 'title')[0]!.textContent,
    );
    expect(titles).toEqual(['Night 2', '\u2068Lamp \u202eon\u2069']);
  });

  it('has the required Atom 1.0 elements, stable ids and updated times from the scenes', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, baseUrl: 'https://example.com/tale/', feedEntries: 3 });
    const episodes = makeEpisodes(5);
    for (const episode of episodes) await publisher.publish(episode);
    const { document, problems } = parseXml(await read(directory, 'feed.atom'));
    expect(problems).toEqual([]);
    const feed = document.documentElement!;
    expect(feed.localName).toBe('feed');
    expect(feed.namespaceURI).toBe(ATOM);
    expect(feed.getAttribute('xml:base')).toBe('https://example.com/tale/');
    // A new site's ids carry its key (see the feed id tests): unique across sites, stable across publishes.
    const feedId = atomChildren(feed, 'id')[0]!.textContent!;
    expect(feedId).toMatch(/^urn:storyloom:site:[0-9a-f]{16}$/);
    expect(atomChildren(feed, 'title')[0]!.textContent).toBe('The Lighthouse Keepers');
    expect(atomChildren(atomChildren(feed, 'author')[0]!, 'name')[0]!.textContent).toBeTruthy();
    expect(atomChildren(feed, 'updated')[0]!.textContent).toBe(new Date(episodes[4]!.scene.createdAt).toISOString());
    const self = atomChildren(feed, 'link').find((link) => link.getAttribute('rel') === 'self');
    expect(self?.getAttribute('href')).toBe('feed.atom');
    const entries = atomChildren(feed, 'entry');
    expect(entries).toHaveLength(3);
    for (const [position, entry] of entries.entries()) {
      const scene = episodes[4 - position]!.scene;
      expect(atomChildren(entry, 'id')[0]!.textContent).toBe(`${feedId}:scene:${scene.id}`);
      expect(atomChildren(entry, 'title')[0]!.textContent).toBe(scene.title);
      expect(atomChildren(entry, 'updated')[0]!.textContent).toBe(new Date(scene.createdAt).toISOString());
      const link = atomChildren(entry, 'link')[0]!;
      expect(link.getAttribute('rel')).toBe('alternate');
      expect(new URL(link.getAttribute('href')!, 'https://example.com/tale/').href).toBe(
        `https://example.com/tale/scenes/${slug(scene)}.html`,
      );
      expect(atomChildren(entry, 'summary')[0]!.textContent).toBe(scene.summary);
    }
  });
});

describe('createFilesystemPublisher: feed updated times', () => {
  /** The `updated` and `published` of each entry of the feed in `directory`, by entry title, and the feed's. */
  async function feedTimes(directory: string) {
    const feed = parseXml(await read(directory, 'feed.atom')).document.documentElement!;
    const text = (parent: XmlElement, name: string) => atomChildren(parent, name)[0]!.textContent!;
    return {
      updated: text(feed, 'updated'),
      entries: Object.fromEntries(
        atomChildren(feed, 'entry').map((entry) => [
          text(entry, 'title'),
          { updated: text(entry, 'updated'), published: text(entry, 'published') },
        ]),
      ),
    };
  }

  it('moves an entry and the feed to the time a publish changed its title, and keeps them through anything else', async () => {
    const directory = await tempFolder();
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const publisher = createFilesystemPublisher({ directory, clock });
    const episodes = makeEpisodes(3);
    for (const episode of episodes) await publisher.publish(episode);
    const created = (index: number) => new Date(episodes[index]!.scene.createdAt).toISOString();
    expect((await feedTimes(directory)).updated).toBe(created(2));

    await clock.advance(60_000);
    const revisedAt = new Date(clock.now()).toISOString();
    const renamed = { ...episodes[1]!, scene: { ...episodes[1]!.scene, title: 'The Lamp Relit' } };
    await publisher.publish(renamed);
    const revised = await feedTimes(directory);
    expect(revised.entries['The Lamp Relit']).toEqual({ updated: revisedAt, published: created(1) });
    expect(revised.entries['Night 3']).toEqual({ updated: created(2), published: created(2) });
    expect(revised.updated).toBe(revisedAt);
    const feed = await read(directory, 'feed.atom');

    // Later publishes that change nothing the feed shows (a retry, a picture, another process, the scene's
    // neighbour) and a repair keep every time: nothing here reads the wall clock.
    await clock.advance(60_000);
    await publisher.publish(renamed);
    await publisher.publish({ ...renamed, image: { data: PNG, mediaType: 'image/png', alt: 'The lamp' } });
    await createFilesystemPublisher({ directory, clock }).publish(renamed);
    await rm(path.join(directory, 'episodes.json'));
    await publisher.publish(episodes[2]!);
    expect(await read(directory, 'feed.atom')).toBe(feed);

    // A new summary is a change too.
    await clock.advance(60_000);
    await publisher.publish({ ...renamed, scene: { ...renamed.scene, summary: 'Mira relights the lamp.' } });
    expect((await feedTimes(directory)).entries['The Lamp Relit']!.updated).toBe(new Date(clock.now()).toISOString());
  });

  it('moves an entry when its scene is published again at another index, which changes its link', async () => {
    const directory = await tempFolder();
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const publisher = createFilesystemPublisher({ directory, clock });
    const episodes = makeEpisodes(2);
    for (const episode of episodes) await publisher.publish(episode);
    await publisher.publish({ ...episodes[0]!, scene: { ...episodes[0]!.scene, index: 5 } });
    const times = await feedTimes(directory);
    expect(times.entries['Night 1']!.updated).toBe(new Date(clock.now()).toISOString());
    expect(times.entries['Night 2']!.updated).toBe(times.entries['Night 2']!.published);
  });

  it('reads the listings of an earlier version, which have no revision times, and revises them', async () => {
    const directory = await tempFolder();
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const publisher = createFilesystemPublisher({ directory, clock });
    const episodes = makeEpisodes(2);
    for (const episode of episodes) await publisher.publish(episode);
    await asEarlierFormat(directory);
    await publisher.publish({ ...episodes[0]!, scene: { ...episodes[0]!.scene, title: 'Dawn' } });
    expect((await feedTimes(directory)).entries.Dawn!.updated).toBe(new Date(clock.now()).toISOString());
    expect((await listedEpisodes(directory)).map((episode) => episode.sceneId)).toEqual(['tale-s0', 'tale-s1']);
  });

  it("never puts an entry's updated before its published, when the publisher's clock is behind the scene's time", async () => {
    // The scene's time comes from the engine's clock, the revision from the publisher's: they need not agree.
    const directory = await tempFolder();
    const episodes = makeEpisodes(2);
    const sceneTime = Date.parse(episodes[1]!.scene.createdAt);
    const clock = new ManualClock(sceneTime - 86_400_000);
    const publisher = createFilesystemPublisher({ directory, clock });
    for (const episode of episodes) await publisher.publish(episode);
    await publisher.publish({ ...episodes[1]!, scene: { ...episodes[1]!.scene, title: 'Retitled' } });
    const times = await feedTimes(directory);
    const published = new Date(sceneTime).toISOString();
    expect(times.entries.Retitled).toEqual({ updated: published, published });
    expect(times.updated >= published).toBe(true);
  });
});

describe('createFilesystemPublisher: feed ids', () => {
  const feedOf = async (directory: string) => feedIds(await read(directory, 'feed.atom'));

  it('gives two separately created stories of one id different ids, each stable however its site is rebuilt', async () => {
    const first = makeEpisodes(3);
    // The same story id and scenes, in a story created at another time (another project from the same template).
    const second = makeEpisodes(3, { story: { createdAt: '2026-03-04T05:06:07.000Z' } });
    const [one, two] = [await tempFolder(), await tempFolder()];
    for (const episode of first) await createFilesystemPublisher({ directory: one }).publish(episode);
    await createFilesystemPublisher({ directory: two }).publishMany(second);
    const ids = await feedOf(one);
    expect(ids.feed).toMatch(/^urn:storyloom:site:[0-9a-f]{16}$/);
    expect(ids.entries).toEqual(first.map((episode) => `${ids.feed}:scene:${episode.scene.id}`).reverse());
    const other = await feedOf(two);
    expect(other.feed).not.toBe(ids.feed);
    expect(other.entries.filter((id) => ids.entries.includes(id))).toEqual([]);
    expect(JSON.parse(await read(one, 'episodes.json'))).toMatchObject({ format: 'storyloom-site/3' });

    // Published again, by another publisher, and repaired with its catalog and story file lost: the same ids.
    const publisher = createFilesystemPublisher({ directory: one });
    await publisher.publish(first[1]!);
    await rm(path.join(one, 'episodes.json'));
    await rm(path.join(one, 'story.json'));
    await publisher.publish(first[2]!);
    expect(await feedOf(one)).toEqual(ids);
    // Built again from the store into a new folder (an import, a deleted site), in one batch: the same ids.
    const rebuilt = await tempFolder();
    await createFilesystemPublisher({ directory: rebuilt }).publishMany(first);
    expect(await feedOf(rebuilt)).toEqual(ids);
    // Every later state of the story carries its creation time however it spells it: the key is the same.
    const respelled = await tempFolder();
    const offset = makeEpisodes(3, { story: { createdAt: '2026-01-01T01:00:00+01:00' } });
    await createFilesystemPublisher({ directory: respelled }).publishMany(offset);
    expect(await feedOf(respelled)).toEqual(ids);
  });

  it('gives a fork, a story of another id from the same state, ids of its own', async () => {
    const original = makeEpisodes(2);
    const forked = makeEpisodes(2, { storyId: 'branch' });
    const [one, two] = [await tempFolder(), await tempFolder()];
    await createFilesystemPublisher({ directory: one }).publishMany(original);
    await createFilesystemPublisher({ directory: two }).publishMany(forked);
    expect((await feedOf(two)).feed).not.toBe((await feedOf(one)).feed);
  });

  it('keeps the ids of a site published before feed keys, through new scenes and repairs', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(5, { chapterLength: 2 });
    for (const episode of episodes.slice(0, 2)) await publisher.publish(episode);
    await asEarlierFormat(directory);
    // A page past the last chapter: a repair removes it, a publish that reads the catalog as it is leaves it.
    await writeFile(path.join(directory, 'chapters/9.html'), '');
    const earlierIds = (count: number) => ({
      feed: 'urn:storyloom:story:tale',
      entries: episodes
        .slice(0, count)
        .map((episode) => `urn:storyloom:scene:tale:${episode.scene.id}`)
        .reverse(),
    });
    await publisher.publish(episodes[2]!);
    expect(await feedOf(directory)).toEqual(earlierIds(3));
    expect(await readdir(path.join(directory, 'chapters'))).toContain('9.html');
    const catalog = JSON.parse(await read(directory, 'episodes.json'));
    expect(catalog.format).toBe('storyloom-site/2');
    expect(catalog).not.toHaveProperty('feedKey');
    // The catalog lost: the story file says the format. Both lost: the chapter files do.
    await rm(path.join(directory, 'episodes.json'));
    await publisher.publish(episodes[3]!);
    expect(await feedOf(directory)).toEqual(earlierIds(4));
    await rm(path.join(directory, 'episodes.json'));
    await rm(path.join(directory, 'story.json'));
    await publisher.publish(episodes[4]!);
    expect(await feedOf(directory)).toEqual(earlierIds(5));
    for (const file of ['episodes.json', 'story.json', 'episodes/chapter-0003.json']) {
      expect(JSON.parse(await read(directory, file)).format, file).toBe('storyloom-site/2');
    }
  });
});

describe('createFilesystemPublisher: story pages', () => {
  it('shows the roster with roles, statuses, traits and relationships', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const base = makeStoryState('tale');
    const [episode] = makeEpisodes(1, {
      story: {
        characters: {
          ...base.characters,
          mira: {
            ...base.characters.mira!,
            description: 'Keeper of the lamp.',
            traits: { courage: 0.7, doubt: 0.2 },
            relationships: {
              tobin: { kind: 'friend', affinity: 0.6, trust: 0.8, note: 'since childhood', since: null },
              gull: { kind: 'rival', affinity: -0.5, trust: 0.1, since: null },
            },
          },
          gull: { ...base.characters.gull!, status: 'dead' },
        },
      },
    });
    await publisher.publish(episode!);
    const { root, errors } = parseHtml(await read(directory, 'characters.html'));
    expect(errors).toEqual([]);
    const cards = byClass(root, 'character');
    expect(cards.map((card) => attribute(card, 'id'))).toEqual(['character-mira', 'character-tobin', 'character-gull']);
    const mira = cards[0]!;
    expect(textOf(mira)).toContain('Keeper of the lamp.');
    expect(textOf(byClass(mira, 'traits')[0]!).replace(/\s+/g, ' ')).toBe('courage0.70doubt0.20');
    const fills = byClass(byClass(mira, 'traits')[0]!, 'fill').map((fill) => attribute(fill, 'class'));
    expect(fills).toEqual(['fill w-70', 'fill w-20']);
    const rows = elements(byClass(mira, 'relationships')[0]!, 'tr').slice(1);
    expect(rows.map((row) => elements(row, 'td').map((cell) => textOf(cell)))).toEqual([
      ['Old Gull', 'rival', '-0.50', '0.10'],
      ['Tobin Marshsince childhood', 'friend', '0.60', '0.80'],
    ]);
    expect(attribute(elements(rows[1]!, 'a')[0]!, 'href')).toBe('#character-tobin');
    expect(textOf(cards[2]!)).toContain('dead');
    // The scene page links each present character to the roster.
    const page = parseHtml(await read(directory, `scenes/${slug(episode!.scene)}.html`)).root;
    const castLinks = elements(page, 'a').filter((a) => attribute(a, 'href')?.startsWith('../characters.html#'));
    expect(castLinks.map((a) => [attribute(a, 'href'), textOf(a)])).toEqual([
      ['../characters.html#character-mira', 'Mira Vale'],
      ['../characters.html#character-tobin', 'Tobin Marsh'],
    ]);
  });

  it('shows plot threads by status with links to the scenes that opened, advanced and resolved them', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(4);
    const [s0, s1, s2, s3] = episodes.map((episode) => episode.scene);
    const last = episodes[3]!;
    const story = {
      ...last.story,
      plotThreads: [
        {
          ...last.story.plotThreads[0]!,
          status: 'resolved' as const,
          openedIn: s0!.id,
          lastAdvancedIn: s2!.id,
          resolvedIn: s2!.id,
        },
        {
          id: 'ghost',
          title: 'The ghost light',
          summary: '',
          status: 'advancing' as const,
          importance: 0.6,
          characters: [],
          openedIn: s1!.id,
          lastAdvancedIn: s3!.id,
          resolvedIn: null,
          setups: ['Who lit it?'],
        },
      ],
    };
    for (const episode of episodes.slice(0, 3)) await publisher.publish(episode);
    await publisher.publish({ ...last, story });
    const { root, errors } = parseHtml(await read(directory, 'threads.html'));
    expect(errors).toEqual([]);
    const threads = byClass(root, 'thread');
    expect(threads.map((thread) => attribute(thread, 'id'))).toEqual(['thread-ghost', 'thread-drift']);
    const linksOf = (thread: HtmlNode) => elements(thread, 'a').map((a) => attribute(a, 'href'));
    expect(linksOf(threads[0]!)).toEqual([`scenes/${slug(s1!)}.html`, `scenes/${slug(s3!)}.html`]);
    expect(linksOf(threads[1]!)).toEqual([
      `scenes/${slug(s0!)}.html`,
      `scenes/${slug(s2!)}.html`,
      `scenes/${slug(s2!)}.html`,
    ]);
    // The resolved thread spans episodes 1 to 3 of 4; the advancing one runs from episode 2 to the latest.
    expect(attribute(byClass(threads[1]!, 'span')[0]!, 'class')).toBe('span l-0 w-76');
    expect(attribute(byClass(threads[0]!, 'span')[0]!, 'class')).toBe('span l-26 w-74');
    expect(textOf(threads[0]!)).toContain('Who lit it?');
  });
});

describe('createFilesystemPublisher: roster and thread prose', () => {
  it('starts each "seen in" and "opened in" line with a capital, whichever part it starts with, and keeps paragraphs', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(2);
    const [s0, s1] = episodes.map((episode) => episode.scene);
    const last = episodes[1]!;
    const story = {
      ...last.story,
      characters: {
        ...last.story.characters,
        // Met before the story began: never introduced in a scene.
        gull: {
          ...last.story.characters.gull!,
          introducedIn: null,
          lastAppearance: s1!.id,
          description: 'Keeper of the light.\n\nOnce a sailor.',
        },
      },
      plotThreads: [
        {
          ...last.story.plotThreads[0]!,
          id: 'drift',
          summary: 'The lamp drifts.\n\nResolution: it was the tide.',
          openedIn: null,
          lastAdvancedIn: s0!.id,
          resolvedIn: null,
        },
      ],
    };
    await publisher.publish(episodes[0]!);
    await publisher.publish({ ...last, story });
    const roster = parseHtml(await read(directory, 'characters.html')).root;
    const gull = byClass(roster, 'character').find((section) => attribute(section, 'id') === 'character-gull')!;
    expect(textOf(gull)).toMatch(/Last seen in Episode 2\./);
    expect(elements(byClass(gull, 'description')[0]!, 'p').map(textOf)).toEqual([
      'Keeper of the light.',
      'Once a sailor.',
    ]);
    const threads = parseHtml(await read(directory, 'threads.html')).root;
    const drift = byClass(threads, 'thread')[0]!;
    expect(textOf(drift)).toMatch(/Advanced in Episode 1\./);
    expect(elements(byClass(drift, 'summary')[0]!, 'p').map(textOf)).toEqual([
      'The lamp drifts.',
      'Resolution: it was the tide.',
    ]);
  });
});

describe('createFilesystemPublisher: a long story', () => {
  it('renders a 50-scene site whose pages all parse and link up', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(50, { chapterLength: 8 });
    for (const [index, episode] of episodes.entries()) {
      await publisher.publish(
        index % 3 ? episode : { ...episode, image: { data: PNG, mediaType: 'image/png', alt: '' } },
      );
    }
    const files = await snapshot(directory);
    const pages = [...files.keys()].filter((name) => name.endsWith('.html'));
    // 50 scene pages, 7 chapter pages (8 scenes each, the last 2), the index, characters and threads.
    expect(pages).toHaveLength(60);
    for (const page of pages) expect(parseHtml(files.get(page)!.toString()).errors, page).toEqual([]);
    // The index shows the newest 3 chapters episode by episode (scenes 32 to 49) and lists chapters 4 to 1.
    const index = parseHtml(files.get('index.html')!.toString()).root;
    expect(byClass(index, 'card')).toHaveLength(18);
    expect(byClass(index, 'chapter').map((section) => attribute(section, 'id'))).toEqual([
      'chapter-7',
      'chapter-6',
      'chapter-5',
    ]);
    expect(elements(index, 'img')).toHaveLength([33, 36, 39, 42, 45, 48].length);
    const archive = byClass(index, 'chapter-list')[0]!;
    expect(elements(archive, 'li').map((item) => attribute(item, 'id'))).toEqual([
      'chapter-4',
      'chapter-3',
      'chapter-2',
      'chapter-1',
    ]);
    expect(elements(archive, 'a').map((link) => attribute(link, 'href'))).toEqual([
      'chapters/4.html',
      'chapters/3.html',
      'chapters/2.html',
      'chapters/1.html',
    ]);
    // Each chapter page lists its own episodes in reading order; together they list every episode once.
    const listed: string[] = [];
    for (let chapter = 1; chapter <= 7; chapter++) {
      const page = parseHtml(files.get(`chapters/${chapter}.html`)!.toString()).root;
      const titles = byClass(page, 'card').map((card) => textOf(elements(card, 'h3')[0]!));
      const first = (chapter - 1) * 8;
      expect(titles).toEqual(
        Array.from({ length: Math.min(8, 50 - first) }, (_, offset) => `Night ${first + offset + 1}`),
      );
      listed.push(...titles);
    }
    expect(new Set(listed).size).toBe(50);
    // A scene page's chapter link goes to its chapter page.
    const scene = parseHtml(files.get(`scenes/${slug(episodes[10]!.scene)}.html`)!.toString()).root;
    expect(attribute(elements(byClass(scene, 'eyebrow')[0]!, 'a')[0]!, 'href')).toBe('../chapters/2.html');
    // Every relative link of every page points at a file that exists.
    for (const page of pages) {
      for (const link of elements(parseHtml(files.get(page)!.toString()).root)) {
        const target = attribute(link, 'href') ?? attribute(link, 'src');
        if (!target || target.startsWith('#') || target === 'data:,') continue;
        const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(page), target.split('#')[0]!));
        expect(files.has(resolved), `${page} → ${target}`).toBe(true);
      }
    }
    const feed = parseXml(files.get('feed.atom')!.toString());
    expect(feed.problems).toEqual([]);
    expect(atomChildren(feed.document.documentElement!, 'entry')).toHaveLength(50);
  });
});

describe('createFilesystemPublisher: chapters', () => {
  it('shows the newest episodes of an open chapter on the index and links to the chapter page for the rest', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, indexEpisodes: 3 });
    const episodes = makeEpisodes(8);
    await publisher.publishMany(episodes.slice(0, 3));
    const titlesOf = (html: string) =>
      byClass(parseHtml(html).root, 'card').map((card) => textOf(elements(card, 'h3')[0]!));
    let index = await read(directory, 'index.html');
    expect(titlesOf(index)).toEqual(['Night 3', 'Night 2', 'Night 1']);
    expect(byClass(parseHtml(index).root, 'more')).toEqual([]);
    for (const episode of episodes.slice(3)) await publisher.publish(episode);
    index = await read(directory, 'index.html');
    expect(titlesOf(index)).toEqual(['Night 8', 'Night 7', 'Night 6']);
    const [more] = byClass(parseHtml(index).root, 'more');
    expect(textOf(more!)).toBe('5 earlier episodes of Chapter 1');
    expect(attribute(elements(more!, 'a')[0]!, 'href')).toBe('chapters/1.html');
    // The chapter page still lists every episode of the chapter.
    expect(titlesOf(await read(directory, 'chapters/1.html'))).toHaveLength(8);
  });

  it('keeps index.html the same size while a chapter that never closes grows', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(60);
    await publisher.publishMany(episodes.slice(0, 30));
    const at30 = (await stat(path.join(directory, 'index.html'))).size;
    await publisher.publishMany(episodes.slice(30));
    const at60 = (await stat(path.join(directory, 'index.html'))).size;
    expect(Math.abs(at60 - at30)).toBeLessThan(200);
  });

  it('shows as many chapters on the index as asked, and renumbers the chapter pages when a chapter arrives late', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, indexChapters: 1 });
    const episodes = makeEpisodes(8, { chapterLength: 2 });
    // Chapter 2 (scenes 2 and 3) arrives last: until then the third chapter is numbered 2, then it becomes 3.
    for (const index of [0, 1, 4, 5]) await publisher.publish(episodes[index]!);
    let files = await snapshot(directory);
    expect([...files.keys()].filter((name) => name.startsWith('chapters/')).sort()).toEqual([
      'chapters/1.html',
      'chapters/2.html',
    ]);
    const titlesOf = (html: string) =>
      byClass(parseHtml(html).root, 'card').map((card) => textOf(elements(card, 'h3')[0]!));
    expect(titlesOf(files.get('chapters/2.html')!.toString())).toEqual(['Night 5', 'Night 6']);
    for (const index of [2, 3]) await publisher.publish(episodes[index]!);
    files = await snapshot(directory);
    expect(titlesOf(files.get('chapters/2.html')!.toString())).toEqual(['Night 3', 'Night 4']);
    expect(titlesOf(files.get('chapters/3.html')!.toString())).toEqual(['Night 5', 'Night 6']);
    const index = parseHtml(files.get('index.html')!.toString()).root;
    expect(byClass(index, 'chapter').map((section) => attribute(section, 'id'))).toEqual(['chapter-3']);
    expect(titlesOf(files.get('index.html')!.toString())).toEqual(['Night 6', 'Night 5']);
    expect(elements(byClass(index, 'chapter-list')[0]!, 'li').map((item) => attribute(item, 'id'))).toEqual([
      'chapter-2',
      'chapter-1',
    ]);
    // The chapter pages link to each other in order.
    const middle = parseHtml(files.get('chapters/2.html')!.toString()).root;
    expect(
      elements(middle, 'a')
        .filter((link) => attribute(link, 'rel') !== undefined)
        .map((link) => [attribute(link, 'rel'), attribute(link, 'href')]),
    ).toEqual([
      ['prev', '1.html'],
      ['next', '3.html'],
    ]);
    // A new chapter touches only the chapter before it (its "next" link); a scene in the newest chapter only that
    // chapter's page. Nothing site-wide is on a chapter page, so a long story does not rewrite them all each time.
    const chapterPages = (all: Map<string, Buffer>) =>
      new Map(
        [...all].filter(([name]) => name.startsWith('chapters/')).map(([name, bytes]) => [name, bytes.toString()]),
      );
    const before = chapterPages(files);
    await publisher.publish(episodes[6]!);
    const afterNewChapter = chapterPages(await snapshot(directory));
    expect([...afterNewChapter.keys()].filter((name) => afterNewChapter.get(name) !== before.get(name))).toEqual([
      'chapters/3.html',
      'chapters/4.html',
    ]);
    await publisher.publish(episodes[7]!);
    const afterSameChapter = chapterPages(await snapshot(directory));
    expect(
      [...afterSameChapter.keys()].filter((name) => afterSameChapter.get(name) !== afterNewChapter.get(name)),
    ).toEqual(['chapters/4.html']);
  });
});

describe('createFilesystemPublisher: a scene published again at another place', () => {
  const inChapter = (episode: Episode, chapter: number): Episode => ({
    ...episode,
    scene: { ...episode.scene, chapterId: chapterIdFor(chapter) },
  });
  const places = async (directory: string) =>
    (await listedEpisodes(directory)).map((entry) => `${entry.chapterId}/${entry.sceneId}`);

  it('lists a scene published again into another chapter once, where it now is, and a repair agrees', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(5, { chapterLength: 2 });
    for (const episode of episodes) await publisher.publish(episode);
    // The second scene edited into the second chapter, then the fifth (alone in the third) too.
    const moved = [episodes[0]!, inChapter(episodes[1]!, 1), episodes[2]!, episodes[3]!, inChapter(episodes[4]!, 1)];
    await publisher.publish(moved[1]!);
    expect(await places(directory)).toEqual([
      'chapter-0001/tale-s0',
      'chapter-0002/tale-s1',
      'chapter-0002/tale-s2',
      'chapter-0002/tale-s3',
      'chapter-0003/tale-s4',
    ]);
    const titlesOf = (html: string) =>
      byClass(parseHtml(html).root, 'card').map((card) => textOf(elements(card, 'h3')[0]!));
    expect(titlesOf(await read(directory, 'chapters/1.html'))).toEqual(['Night 1']);
    expect(titlesOf(await read(directory, 'index.html'))).toEqual([
      'Night 5',
      'Night 4',
      'Night 3',
      'Night 2',
      'Night 1',
    ]);
    // The third chapter, left empty, goes: its file and its page.
    await publisher.publish(moved[4]!);
    const expected = await siteOf(moved);
    expect([...expected.keys()].filter((name) => /^(chapters|episodes)\//.test(name)).sort()).toEqual([
      'chapters/1.html',
      'chapters/2.html',
      'episodes/chapter-0001.json',
      'episodes/chapter-0002.json',
    ]);
    expect(await snapshot(directory)).toEqual(expected);
    // A repair reads every chapter file and finds each scene where the publishes put it.
    await rm(path.join(directory, 'episodes.json'));
    await publisher.publish(moved[2]!);
    expect(await snapshot(directory)).toEqual(expected);
  });

  it('keeps a scene where its JSON puts it when a repair finds two chapter files listing it', async () => {
    const episodes = makeEpisodes(4, { chapterLength: 2 });
    const moved = [episodes[0]!, inChapter(episodes[1]!, 1), episodes[2]!, episodes[3]!];
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    for (const episode of episodes) await publisher.publish(episode);
    const firstChapter = await read(directory, 'episodes/chapter-0001.json');
    await publisher.publish(moved[1]!);
    // What a publish of another process that overlapped the move can leave: the first chapter's file (the first by
    // name) as that process read it, still listing the scene, and a request for the next publish to repair.
    await writeFile(path.join(directory, 'episodes/chapter-0001.json'), firstChapter);
    await writeFile(path.join(directory, '.needs-repair.0a1b2c'), '');
    await publisher.publish(moved[3]!);
    expect(await places(directory)).toEqual([
      'chapter-0001/tale-s0',
      'chapter-0002/tale-s1',
      'chapter-0002/tale-s2',
      'chapter-0002/tale-s3',
    ]);
    expect(await snapshot(directory)).toEqual(await siteOf(moved));
  });

  it("moves a scene published again at another index: its old files and neighbours' links go", async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const withPicture = (episode: Episode): Episode => ({
      ...episode,
      image: { data: PNG, mediaType: 'image/png', alt: 'The lamp' },
    });
    const episodes = makeEpisodes(4);
    for (const episode of episodes) await publisher.publish(episode.scene.index === 1 ? withPicture(episode) : episode);
    const moved = withPicture({ ...episodes[1]!, scene: { ...episodes[1]!.scene, index: 7 } });
    await publisher.publish(moved);
    expect(await readSitePublication(directory, 'tale', 'tale-s1')).toEqual([
      'images/000007-tale-s1.png',
      'scenes/000007-tale-s1.html',
      'scenes/000007-tale-s1.json',
    ]);
    // The site is that of the scene published there first, but for its feed entry (and the catalog that lists it):
    // its link changed, so it is revised (see the feed's updated times).
    const catalogAndFeed = /^(feed\.atom|episodes\.json|episodes\/)/;
    const pages = (files: Map<string, Buffer>) => new Map([...files].filter(([name]) => !catalogAndFeed.test(name)));
    const expected = await siteOf([episodes[0]!, episodes[2]!, episodes[3]!, moved]);
    expect(pages(await snapshot(directory))).toEqual(pages(expected));
    const listed = await listedEpisodes(directory);
    expect(listed.find((episode) => episode.sceneId === 'tale-s1')).toHaveProperty('revisedAt');
    expect(listed.filter((episode) => Object.hasOwn(episode, 'revisedAt'))).toHaveLength(1);
  });

  it('keeps the files of a scene that one batch moves to another index and back', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(3);
    for (const episode of episodes) await publisher.publish(episode);
    const away = { ...episodes[1]!, scene: { ...episodes[1]!.scene, index: 7 } };
    await publisher.publishMany([away, episodes[1]!]);
    expect(await readSitePublication(directory, 'tale', 'tale-s1')).toEqual([
      'scenes/000001-tale-s1.html',
      'scenes/000001-tale-s1.json',
    ]);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });
});

describe('createFilesystemPublisher: two publishers of one folder', () => {
  it('runs the publishes of a folder reached through a symlink one at a time with the direct ones', async () => {
    const real = await tempFolder();
    const link = path.join(await tempFolder(), 'site');
    await symlink(real, link);
    const direct = createFilesystemPublisher({ directory: real });
    const throughLink = createFilesystemPublisher({ directory: link });
    const episodes = makeEpisodes(20, { chapterLength: 5 });
    const outcomes = await Promise.allSettled(
      episodes.map((episode, index) => (index % 2 ? direct : throughLink).publish(episode)),
    );
    expect(outcomes.filter((outcome) => outcome.status === 'rejected')).toEqual([]);
    expect(await snapshot(real)).toEqual(await siteOf(episodes));
  });

  it('leaves the files of another worker thread alone: every publish of two threads succeeds', async () => {
    const { Worker } = await import('node:worker_threads');
    const work = await tempFolder();
    const directory = path.join(work, 'site');
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const script = path.join(work, 'thread.mts');
    await writeFile(
      script,
      `import { parentPort, workerData } from 'node:worker_threads';
import { createFilesystemPublisher } from ${JSON.stringify(path.join(root, 'src/publishing/filesystem.ts'))};
const publisher = createFilesystemPublisher({ directory: workerData.directory });
const failures = [];
for (const episode of workerData.episodes) {
  try { await publisher.publish(episode); } catch (error) { failures.push(String(error)); }
}
parentPort.postMessage(failures);
`,
    );
    const tsx = path.join(root, 'node_modules/tsx/dist/esm/api/index.mjs');
    const run = (episodes: Episode[]) =>
      new Promise<string[]>((resolve, reject) => {
        const worker = new Worker(
          `import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(script)});`,
          { eval: true, workerData: { directory, episodes } },
        );
        worker.once('message', resolve);
        worker.once('error', reject);
      });
    const episodes = makeEpisodes(30, { chapterLength: 5 });
    const failures = await Promise.all([
      run(episodes.filter((_, index) => index % 2 === 0)),
      run(episodes.filter((_, index) => index % 2 === 1)),
    ]);
    expect(failures.flat()).toEqual([]);
    // Their publishes overlapped: the next one repairs what either overwrote of the other's.
    await createFilesystemPublisher({ directory }).publish(episodes[29]!);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  }, 60_000);

  it('keeps the files another thread of this process or another host writes until they are stale', async () => {
    const directory = await tempFolder();
    const clock = new ManualClock(Date.now());
    const publisher = createFilesystemPublisher({ directory, clock, staleTempFileMs: 60_000 });
    const [first, second] = makeEpisodes(2);
    await publisher.publish(first!);
    const host = createHash('sha256').update(os.hostname()).digest('hex').slice(0, 8);
    const otherThread = `.index.html.${process.pid}-${host}-0badf00d.0a1b2c.tmp`;
    const otherHost = `.feed.atom.999999999-0badf00d-0badf00d.0a1b2d.tmp`;
    const deadHere = `.style.css.999999999-${host}-0badf00d.0a1b2e.tmp`;
    const otherThreadMarker = `.publishing.${process.pid}-${host}-0badf00d.0a1b2f`;
    for (const file of [otherThread, otherHost, deadHere]) await writeFile(path.join(directory, file), '<html><bo');
    await writeFile(path.join(directory, otherThreadMarker), JSON.stringify({ sceneId: second!.scene.id, index: 1 }));
    // The marker makes this publish a repair, which removes the markers it finds abandoned.
    await publisher.publish(second!);
    let names = (await readdir(directory)).filter((name) => name.startsWith('.'));
    expect(names).toContain(otherThread);
    expect(names).toContain(otherHost);
    expect(names).toContain(otherThreadMarker);
    expect(names).not.toContain(deadHere);
    // Past the staleness of the newest of them (they were written a few milliseconds apart, more on a busy host).
    const written = await Promise.all(
      [otherThread, otherHost, otherThreadMarker].map(async (file) => (await stat(path.join(directory, file))).mtimeMs),
    );
    clock.advance(Math.max(...written) - clock.now() + 60_001);
    await publisher.publish(second!);
    names = (await readdir(directory)).filter((name) => name.startsWith('.'));
    expect(names).not.toContain(otherThread);
    expect(names).not.toContain(otherHost);
    expect(names).not.toContain(otherThreadMarker);
  });
});

describe('createFilesystemPublisher: files lost from the site', () => {
  it('renders again in a repair a scene page an overlapping publish wrote from a stale view', async () => {
    // Two publishers overlapping: one writes a neighbour's page from a view that lacks the other's new scene (its
    // "next" link skips it). Their markers ask the next publish for a repair, which must put that page right.
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(6, { chapterLength: 3 });
    for (const episode of episodes) await publisher.publish(episode);
    const page = `scenes/${slug(episodes[3]!.scene)}.html`;
    const good = await read(directory, page);
    const stale = good.replace(`${slug(episodes[4]!.scene)}.html`, `${slug(episodes[5]!.scene)}.html`);
    expect(stale).not.toBe(good);
    await writeFile(path.join(directory, page), stale);
    await writeFile(path.join(directory, '.needs-repair.0a1b2c3d4e5f'), '');
    await publisher.publish(episodes[5]!);
    expect(await read(directory, page)).toBe(good);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });

  it('writes a chapter page removed by hand again, with the removed scene pages of its chapter', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(12, { chapterLength: 3 });
    for (const episode of episodes.slice(0, 9)) await publisher.publish(episode);
    await rm(path.join(directory, 'chapters/1.html'));
    await rm(path.join(directory, `scenes/${slug(episodes[1]!.scene)}.html`));
    await publisher.publish(episodes[9]!);
    expect((await snapshot(directory)).keys()).toContain('chapters/1.html');
    for (const episode of episodes.slice(10)) await publisher.publish(episode);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });

  it('writes again the removed pages of chapters among the ten newest of a story of more than ten', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(12, { chapterLength: 1 });
    await publisher.publishMany(episodes);
    for (const page of ['chapters/10.html', 'chapters/11.html', `scenes/${slug(episodes[9]!.scene)}.html`]) {
      await rm(path.join(directory, page));
    }
    // The newest scene again (a retry): it writes its own chapter's page, and finds the others missing.
    await publisher.publish(episodes[11]!);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });

  it('keeps the roster when story.json is lost and an older scene is published again', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(3);
    const newest = episodes[2]!;
    const renamed = withGullRenamed(newest);
    const site = [episodes[0]!, episodes[1]!, renamed];
    for (const episode of site) await publisher.publish(episode);
    const roster = await read(directory, 'characters.html');
    expect(roster).toContain('Captain Gull');
    await rm(path.join(directory, 'story.json'));
    // The engine retries the first scene (its log entry was never marked done).
    await publisher.publish(episodes[0]!);
    expect(await read(directory, 'characters.html')).toBe(roster);
    expect(JSON.parse(await read(directory, 'episodes.json')).storyVersion).toBe(renamed.story.version);
    // The newest state, published again, brings story.json back.
    await publisher.publish(renamed);
    expect(await snapshot(directory)).toEqual(await siteOf(site));
  });
});

describe('createFilesystemPublisher: excerpts', () => {
  it('cuts excerpts between grapheme clusters: no accent, conjunct or emoji sequence is split', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const summaries = [
      // Hindi: a consonant and its vowel sign are one letter.
      'नमस्ते'.repeat(60),
      // A decomposed "é": the accent is a combining mark after the "e".
      `a${'e\u0301'.repeat(200)}`,
      // A family emoji is seven code points joined by zero-width joiners.
      `${'x'.repeat(270)}${'👨‍👩‍👧‍👦'.repeat(10)}`,
      // Plain words are cut between words.
      'abc '.repeat(100).trim(),
    ];
    const episodes = makeEpisodes(4, { scene: (index) => ({ summary: summaries[index]! }) });
    for (const episode of episodes) await publisher.publish(episode);
    const boundaries = (text: string) =>
      new Set(
        [...new Intl.Segmenter('en', { granularity: 'grapheme' }).segment(text)].map(
          ({ index, segment }) => index + segment.length,
        ),
      );
    const chapter = JSON.parse(await read(directory, 'episodes/chapter-0001.json'));
    const excerpts: string[] = chapter.episodes.map((entry: { excerpt: string }) => entry.excerpt);
    for (const [index, excerpt] of excerpts.entries()) {
      const kept = excerpt.slice(0, -1);
      expect(excerpt.endsWith('…'), `summary ${index}`).toBe(true);
      expect(summaries[index]!.startsWith(kept), `summary ${index}`).toBe(true);
      expect(boundaries(summaries[index]!).has(kept.length), `summary ${index}`).toBe(true);
      expect(kept.length, `summary ${index}`).toBeLessThanOrEqual(280);
    }
    expect(excerpts[2]).toBe(`${'x'.repeat(270)}…`);
    expect(excerpts[3]).toBe(`${'abc '.repeat(70).trim()}…`);
    // The feed's summaries and the pages' descriptions are the same excerpts.
    const feed = await read(directory, 'feed.atom');
    for (const excerpt of excerpts) expect(feed).toContain(`<summary type="text">${excerpt}</summary>`);
    const page = parseHtml(await read(directory, `scenes/${slug(episodes[1]!.scene)}.html`)).root;
    const description = elements(page, 'meta').find((meta) => attribute(meta, 'name') === 'description');
    expect(attribute(description!, 'content')).toBe(excerpts[1]);
  });
});

describe('readSitePublication', () => {
  it('lists nothing for a folder that does not exist or an id that is not an id', async () => {
    const directory = path.join(await tempFolder(), 'missing');
    expect(await readSitePublication(directory, 'tale', 'tale-s0')).toEqual([]);
    await mkdir(path.join(directory, 'scenes'), { recursive: true });
    await writeFile(path.join(directory, 'scenes', '000000-..json'), '{}');
    expect(await readSitePublication(directory, 'tale', '..')).toEqual([]);
  });
});

describe('createFilesystemPublisher: a folder whose catalog is lost', () => {
  it("refuses another story, taking the owner from story.json, a chapter file or a scene's JSON", async () => {
    for (const lose of [
      ['episodes.json'],
      ['episodes.json', 'story.json'],
      ['episodes.json', 'story.json', 'episodes'],
    ]) {
      const directory = await tempFolder();
      const publisher = createFilesystemPublisher({ directory });
      for (const episode of makeEpisodes(3, { storyId: 'first' })) await publisher.publish(episode);
      for (const relative of lose) await rm(path.join(directory, relative), { recursive: true, force: true });
      const before = await snapshot(directory);
      const outcome = await publisher.publish(makeEpisodes(1, { storyId: 'second' })[0]!).then(
        () => 'published',
        (error: unknown) => (ConflictError.isInstance(error) ? error.message : String(error)),
      );
      expect(outcome, lose.join(' + ')).toBe(
        'The folder already holds the site of story "first"; publish story "second" into another folder',
      );
      expect(await snapshot(directory), lose.join(' + ')).toEqual(before);
    }
  });
});

describe('createFilesystemPublisher: noncharacters', () => {
  it('leaves out the noncharacters of every plane, so every page parses without error', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const odd = 'a\uFDD0b\uFDEFc\u{1FFFE}d\u{10FFFF}e\u{5FFFF}f\uFFFEg';
    const [episode] = makeEpisodes(1, { scene: () => ({ title: `T ${odd}`, text: odd, summary: odd }) });
    await publisher.publish({ ...episode!, image: { data: PNG, mediaType: 'image/png', alt: odd } });
    const page = await read(directory, `scenes/${slug(episode!.scene)}.html`);
    expect(parseHtml(page).errors).toEqual([]);
    expect(textOf(elements(parseHtml(page).root, 'h1')[0]!)).toBe('T abcdefg');
    // Only the noncharacters go: the characters beside them in their planes stay.
    const near = '\uFDCF\uFDF0\u{1FFFD}\u{10FFFD}';
    const [other] = makeEpisodes(1, { scene: () => ({ title: near }) });
    await publisher.publish(other!);
    expect(textOf(elements(parseHtml(await read(directory, `scenes/${slug(other!.scene)}.html`)).root, 'h1')[0]!)).toBe(
      near,
    );
  });
});

describe('createFilesystemPublisher: chapter file names on every file system', () => {
  const reserved = /^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$/i;

  it('gives chapters whose ids differ only by case, or are device names, distinct and portable file names', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const ids = ['Part-A', 'part-a', 'PART-A', 'CON', 'nul', 'Aux.json', 'com1', 'LPT9', 'chapter-0001'];
    const episodes = makeEpisodes(ids.length);
    for (const [position, chapterId] of ids.entries()) {
      await publisher.publish({ ...episodes[position]!, scene: { ...episodes[position]!.scene, chapterId } });
    }
    const names = await readdir(path.join(directory, 'episodes'));
    expect(names).toHaveLength(ids.length);
    expect(new Set(names.map((name) => name.toLowerCase())).size).toBe(names.length);
    expect(names.filter((name) => reserved.test(name))).toEqual([]);
    // An id that was already a safe name keeps it: the sites of earlier versions are found as they are.
    expect(names).toContain('chapter-0001.json');
    // Every scene is listed once, in its own chapter, and a repair reads the same.
    const chapters = async () =>
      Object.fromEntries(
        (
          JSON.parse(await read(directory, 'episodes.json')).chapters as Array<{ chapterId: string; count: number }>
        ).map((chapter) => [chapter.chapterId, chapter.count]),
      );
    expect(await chapters()).toEqual(Object.fromEntries(ids.map((id) => [id, 1])));
    const before = await snapshot(directory);
    await writeFile(path.join(directory, '.needs-repair.0a'), '');
    await publisher.publish(episodes.at(-1)!.scene.chapterId === 'chapter-0001' ? episodes.at(-1)! : episodes.at(-1)!);
    expect(await chapters()).toEqual(Object.fromEntries(ids.map((id) => [id, 1])));
    expect([...(await snapshot(directory)).keys()].sort()).toEqual([...before.keys()].sort());
  });

  it('finds the chapter file an earlier version wrote under the id itself, and moves it to its new name', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const episodes = makeEpisodes(3).map((episode) => ({
      ...episode,
      scene: { ...episode.scene, chapterId: 'Part-A' },
    }));
    for (const episode of episodes.slice(0, 2))
      await publisher.publish({ ...episode, image: { data: PNG, mediaType: 'image/png', alt: 'custom' } });
    const [current] = (await readdir(path.join(directory, 'episodes'))).filter((name) => name !== 'chapter-0001.json');
    // The site as an earlier version left it: the chapter file named by the id.
    await rename(path.join(directory, 'episodes', current!), path.join(directory, 'episodes', 'Part-A.json'));
    await publisher.publish(episodes[2]!);
    expect(await readdir(path.join(directory, 'episodes'))).toEqual([current]);
    const listed = JSON.parse(await read(directory, `episodes/${current}`)).episodes;
    expect(listed.map((episode: { sceneId: string }) => episode.sceneId)).toEqual(episodes.map((e) => e.scene.id));
    // What only the chapter file knew (a picture's own alt text) is kept.
    expect(listed[0].image).toEqual({ extension: 'png', alt: 'custom', width: 1, height: 1 });
  });
});
