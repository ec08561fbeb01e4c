/**
 * The filesystem site of a long story in bounded memory: a batch (an imported story) and a repair write a page per
 * scene, and render them `scenePagesPerWrite` at a time as they write them, never all at once. Watched through
 * `node:fs/promises`: a scene page is rendered from its scene's JSON, read just before, and is held until it is
 * written (renamed into place) or found unchanged (read back to compare), so the scenes read and not yet settled are
 * the pages held.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createFilesystemPublisher } from '../src/publishing/filesystem.js';
import type { Episode } from '../src/publishing/publisher.js';
import { makeSiteEpisodes, siteSnapshot } from './fixtures/site.js';

/**
 * `watch` sees each file read and each file renamed into place. From change number `dieAt` on (a file opened for
 * writing, renamed or removed), every call fails, as it would for a killed process.
 */
const disk = vi.hoisted(() => ({
  watch: undefined as ((event: 'read' | 'renamed', file: string) => void) | undefined,
  changes: 0,
  dieAt: Number.POSITIVE_INFINITY,
  dead: false,
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const mortal = <F extends (...args: never[]) => Promise<unknown>>(
    call: F,
    changes: (...args: Parameters<F>) => boolean,
  ) =>
    (async (...args: Parameters<F>) => {
      if (!disk.dead && changes(...args)) {
        disk.changes += 1;
        if (disk.changes >= disk.dieAt) disk.dead = true;
      }
      if (disk.dead) throw new Error('the process is dead');
      return call(...args);
    }) as unknown as F;
  const always = () => true;
  const never = () => false;
  const overrides = {
    open: mortal(actual.open, (_file, flags) => typeof flags === 'string' && flags.includes('w')),
    rename: mortal(async (from: Parameters<typeof actual.rename>[0], to: Parameters<typeof actual.rename>[1]) => {
      await actual.rename(from, to);
      disk.watch?.('renamed', String(to));
    }, always),
    rm: mortal(actual.rm, always),
    mkdir: mortal(actual.mkdir, never),
    readFile: mortal(
      (async (...args: Parameters<typeof actual.readFile>) => {
        disk.watch?.('read', String(args[0]));
        return actual.readFile(...args);
      }) as typeof actual.readFile,
      never,
    ),
    readdir: mortal(actual.readdir, never),
    stat: mortal(actual.stat, never),
  };
  return { ...actual, ...overrides, default: { ...actual, ...overrides } };
});

function revive(dieAt = Number.POSITIVE_INFINITY): void {
  Object.assign(disk, { changes: 0, dieAt, dead: false });
}

const folders: string[] = [];
afterEach(async () => {
  disk.watch = undefined;
  revive();
  for (const folder of folders.splice(0)) await rm(folder, { recursive: true, force: true });
});
async function tempFolder(): Promise<string> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'storyloom-site-memory-'));
  folders.push(folder);
  return folder;
}

/** `count` episodes in chapters of four; every third carries a picture. */
const makeEpisodes = (count: number): Episode[] =>
  makeSiteEpisodes(count, { chapterSize: 4, picture: (index) => index % 3 === 0 });
const snapshot = siteSnapshot;

/** The site `publish` leaves scene by scene, with the default options. */
async function publishedOneByOne(episodes: readonly Episode[]): Promise<Map<string, string>> {
  const directory = await tempFolder();
  const publisher = createFilesystemPublisher({ directory });
  for (const episode of episodes) await publisher.publish(episode);
  return snapshot(directory);
}

/** The scene pages a task rendered, those it wrote, and the most it held at once rendered and not yet settled. */
async function watchScenePages(task: () => Promise<unknown>): Promise<{
  rendered: Set<string>;
  written: Set<string>;
  peak: number;
}> {
  const rendered = new Set<string>();
  const written = new Set<string>();
  const held = new Set<string>();
  let peak = 0;
  disk.watch = (event, file) => {
    const page = /[/\\]scenes[/\\](\d{6}-.+)\.(json|html)$/.exec(file);
    if (!page) return;
    const [, slug, extension] = page as unknown as [string, string, string];
    if (event === 'read' && extension === 'json') {
      rendered.add(slug);
      held.add(slug);
      peak = Math.max(peak, held.size);
    } else if (extension === 'html') {
      // Read back (the page is compared with what it would be) or renamed into place: it is no longer held.
      held.delete(slug);
      if (event === 'renamed') written.add(slug);
    }
  };
  try {
    await task();
  } finally {
    disk.watch = undefined;
  }
  return { rendered, written, peak };
}

/**
 * The scenes the chapter files list whose page is missing, or does not link to the next scene they list: the site
 * lists a scene only once its page and its neighbours' pages are written, whatever point a publish died at.
 */
async function listedWithoutTheirPages(directory: string): Promise<string[]> {
  const listed: Array<{ index: number; sceneId: string }> = [];
  for (const name of await readdir(path.join(directory, 'episodes'))) {
    if (!name.endsWith('.json')) continue;
    listed.push(...JSON.parse(await readFile(path.join(directory, 'episodes', name), 'utf8')).episodes);
  }
  listed.sort((a, b) => a.index - b.index);
  const slugOf = (episode: { index: number; sceneId: string }) =>
    `${String(episode.index).padStart(6, '0')}-${episode.sceneId}`;
  const wrong: string[] = [];
  for (const [position, episode] of listed.entries()) {
    const page = await readFile(path.join(directory, 'scenes', `${slugOf(episode)}.html`), 'utf8').catch(() => '');
    const next = listed[position + 1];
    if (!page || (next && !page.includes(`rel="next" href="${slugOf(next)}.html"`))) wrong.push(slugOf(episode));
  }
  return wrong;
}

const PAGES_PER_WRITE = 8;

describe('the filesystem site of a long story, in bounded memory', () => {
  const episodes = makeEpisodes(60);
  const pageOf = (episode: Episode) => `${String(episode.scene.index).padStart(6, '0')}-${episode.scene.id}`;

  it('publishMany renders and writes the scene pages a few at a time, and leaves the site publish leaves', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, scenePagesPerWrite: PAGES_PER_WRITE });
    // The first batch builds the site (there is no catalog yet), the second adds to it.
    const building = await watchScenePages(() => publisher.publishMany(episodes.slice(0, 30)));
    const adding = await watchScenePages(() => publisher.publishMany(episodes.slice(30)));

    expect(building.written).toEqual(new Set(episodes.slice(0, 30).map(pageOf)));
    // The second batch also redoes the page of the scene before it, whose "next" link appears.
    expect(adding.written).toEqual(new Set(episodes.slice(29).map(pageOf)));
    expect(building.peak).toBeGreaterThan(0);
    expect(building.peak).toBeLessThanOrEqual(PAGES_PER_WRITE);
    expect(adding.peak).toBeLessThanOrEqual(PAGES_PER_WRITE);
    expect(await snapshot(directory)).toEqual(await publishedOneByOne(episodes));
  });

  it('a repair renders every scene page a few at a time, writes only those that differ, and leaves the same site', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, scenePagesPerWrite: PAGES_PER_WRITE });
    await publisher.publishMany(episodes);
    const lost = episodes.filter((_, position) => position % 7 === 2).map(pageOf);
    for (const page of lost) await rm(path.join(directory, 'scenes', `${page}.html`));
    const stale = pageOf(episodes[40]!);
    await writeFile(path.join(directory, 'scenes', `${stale}.html`), '<!doctype html>\n');
    await writeFile(path.join(directory, '.needs-repair.0a'), '');

    const repair = await watchScenePages(() => publisher.publish(episodes.at(-1)!));

    expect(repair.rendered).toEqual(new Set(episodes.map(pageOf)));
    expect(repair.written).toEqual(new Set([...lost, stale]));
    expect(repair.peak).toBeLessThanOrEqual(PAGES_PER_WRITE);
    expect(await snapshot(directory)).toEqual(await publishedOneByOne(episodes));
  });

  it('a batch killed at any change while it writes its pages in rounds lists no scene before its page, and is finished by the next publish', async () => {
    const story = makeEpisodes(7).map((episode) => ({ ...episode, image: undefined }));
    const [before, batch, next] = [story.slice(0, 2), story.slice(2, 6), story[6]!];
    const complete = await publishedOneByOne(story);
    const probe = createFilesystemPublisher({ directory: await tempFolder(), scenePagesPerWrite: 2 });
    await probe.publishMany(before);
    revive();
    await probe.publishMany(batch);
    const changes = disk.changes;
    expect(changes).toBeGreaterThan(20);

    const sites = new Map<string, Map<string, string>>();
    for (let dieAt = 1; dieAt <= changes; dieAt++) {
      const directory = await tempFolder();
      const publisher = createFilesystemPublisher({ directory, scenePagesPerWrite: 2 });
      await publisher.publishMany(before);
      revive(dieAt);
      await publisher.publishMany(batch).catch(() => undefined);
      expect(disk.dead, `died at change ${dieAt}`).toBe(true);
      revive();
      expect(await listedWithoutTheirPages(directory), `died at change ${dieAt}`).toEqual([]);
      // Every scene of the batch whose JSON landed is on the site, with its page and its neighbours' links.
      const scenes = new Set(await readdir(path.join(directory, 'scenes')));
      const landed = batch.filter((episode) => scenes.has(`${pageOf(episode)}.json`));
      await publisher.publish(next);
      const key = landed.map(pageOf).join(',');
      if (!sites.has(key)) sites.set(key, await publishedOneByOne([...before, ...landed, next]));
      expect(await snapshot(directory), `died at change ${dieAt}`).toEqual(sites.get(key));
      await publisher.publishMany(batch);
      expect(await snapshot(directory), `died at change ${dieAt}, then the batch again`).toEqual(complete);
    }
    // Every crash point of the batch is tried, each with a site of its own: far more disk work than one publish, and
    // on a machine whose disk is shared with the rest of the suite it has taken over 30 s (3 s when quiet).
  }, 240_000);
});
