/**
 * The filesystem site when two writers overlap: a second copy of the publisher module (its own lock and writer
 * token, as another worker thread has) interleaved with this one at fixed points, so every run is the same.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createFilesystemPublisher } from '../src/publishing/filesystem.js';
import type { Episode } from '../src/publishing/publisher.js';
import { chapterIdFor } from '../src/state/schema.js';
import { makeSiteEpisodes, siteSnapshot } from './fixtures/site.js';

/** Awaited before each open for writing and each rename, so a test can hold one writer at a chosen point. */
const fault = vi.hoisted(() => ({
  hook: undefined as ((kind: 'open' | 'rename', file: string) => Promise<void> | void) | undefined,
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const overrides = {
    open: (async (...args: Parameters<typeof actual.open>) => {
      if (typeof args[1] === 'string' && args[1].includes('w')) await fault.hook?.('open', String(args[0]));
      return actual.open(...args);
    }) as typeof actual.open,
    rename: (async (...args: Parameters<typeof actual.rename>) => {
      await fault.hook?.('rename', String(args[0]));
      return actual.rename(...args);
    }) as typeof actual.rename,
  };
  return { ...actual, ...overrides, default: { ...actual, ...overrides } };
});

const folders: string[] = [];
afterEach(async () => {
  fault.hook = undefined;
  for (const folder of folders.splice(0)) await rm(folder, { recursive: true, force: true });
});
async function tempFolder(): Promise<string> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'storyloom-site-integrity-'));
  folders.push(folder);
  return folder;
}

/** `count` episodes in chapters of three; those `picture` picks carry an SVG described by their title. */
const makeEpisodes = (count: number, picture: (index: number) => boolean): Episode[] =>
  makeSiteEpisodes(count, { chapterSize: 3, picture });
const snapshot = siteSnapshot;

async function siteOf(episodes: readonly Episode[]): Promise<Map<string, string>> {
  const directory = await tempFolder();
  const publisher = createFilesystemPublisher({ directory });
  for (const episode of episodes) await publisher.publish(episode);
  return snapshot(directory);
}

function differences(site: Map<string, string>, expected: Map<string, string>): string[] {
  return [...new Set([...site.keys(), ...expected.keys()])].filter((name) => site.get(name) !== expected.get(name));
}

/** A second copy of the publisher module with its own lock and writer token: another worker thread, in-process. */
async function otherThreadCopy(): Promise<{
  create: typeof createFilesystemPublisher;
  token: string;
  ownToken: string;
}> {
  const key = Symbol.for('storyloom.filesystemPublisher');
  const global = globalThis as Record<symbol, { token: string } | undefined>;
  const saved = global[key];
  const ownToken = saved!.token;
  delete global[key];
  vi.resetModules();
  const copy = await import('../src/publishing/filesystem.js');
  const token = global[key]!.token;
  global[key] = saved;
  return { create: copy.createFilesystemPublisher, token, ownToken };
}

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

describe('the filesystem site with two writers', () => {
  it('writes a scene’s picture before its JSON: a scene another writer can see has its picture', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    const [episode] = makeEpisodes(1, () => true);
    const seen: string[] = [];
    fault.hook = (kind, file) => {
      const staged = /^\.000000-tale-s0\.(json|svg)\./.exec(path.basename(file));
      if (kind === 'rename' && staged) seen.push(staged[1]!);
    };
    await publisher.publish(episode!);
    expect(seen).toEqual(['svg', 'json']);
  });

  it("a repair that overlaps another writer's picture keeps the picture once the next publish repairs", async () => {
    const episodes = makeEpisodes(9, (index) => index === 6);
    const complete = await siteOf(episodes);
    const directory = await tempFolder();
    const here = createFilesystemPublisher({ directory });
    for (const episode of episodes.slice(0, 6)) await here.publish(episode);
    const other = await otherThreadCopy();
    const there = other.create({ directory });

    const hereBeforePicture = gate();
    const hereHeld = gate();
    const thereBeforeWrites = gate();
    const thereHeld = gate();
    fault.hook = async (kind, file) => {
      const name = path.basename(file);
      // This writer is about to write scene 6's picture.
      if (kind === 'open' && name.startsWith('.000006-tale-s6.svg.') && name.includes(other.ownToken)) {
        hereHeld.open();
        await hereBeforePicture.wait;
      }
      // The other writer has read the whole site (a repair: it saw this writer's marker) and stages its pages.
      if (kind === 'open' && name.startsWith('.index.html.') && name.includes(other.token)) {
        thereHeld.open();
        await thereBeforeWrites.wait;
      }
    };
    const publishingHere = here.publish(episodes[6]!);
    await hereHeld.wait;
    const publishingThere = there.publish(episodes[7]!);
    await thereHeld.wait;
    hereBeforePicture.open();
    await publishingHere;
    thereBeforeWrites.open();
    await publishingThere;
    fault.hook = undefined;
    expect((await readdir(directory)).some((name) => name.startsWith('.needs-repair.'))).toBe(true);

    // The next publish repairs what either overwrote of the other.
    await here.publish(episodes[8]!);
    const site = await snapshot(directory);
    expect(site.get('scenes/000006-tale-s6.html')).toContain('<img src="../images/000006-tale-s6.svg"');
    expect(differences(site, complete)).toEqual([]);
  });

  it('a repair shows the picture images/ holds for a scene whose chapter file says it has none', async () => {
    const episodes = makeEpisodes(4, (index) => index === 1);
    const complete = await siteOf(episodes);
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory });
    for (const episode of episodes.slice(0, 3)) await publisher.publish(episode);
    // The chapter file as a writer that overlapped the picture's left it: the scene listed without its picture.
    const chapterFile = path.join(directory, 'episodes', `${chapterIdFor(0)}.json`);
    const chapter = JSON.parse(await readFile(chapterFile, 'utf8'));
    chapter.episodes[1].image = null;
    await writeFile(chapterFile, `${JSON.stringify(chapter)}\n`);
    await writeFile(path.join(directory, '.needs-repair.0a'), '');
    await publisher.publish(episodes[3]!);
    expect(differences(await snapshot(directory), complete)).toEqual([]);
  });
});
