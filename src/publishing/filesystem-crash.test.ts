/**
 * A publish that dies at any point is repaired by the next one. The process's death is played in-process: from the
 * chosen change to the folder on (a file opened for writing, renamed or removed), every file-system call fails, so
 * the dying publish cannot clean up after itself, exactly as a killed process could not.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { makeSiteEpisodes, siteSnapshot } from '../../test/fixtures/site.js';
import { StorageError } from '../core/errors.js';
import { chapterIdFor, type Scene } from '../state/schema.js';
import { ManualClock } from '../testing/manual-clock.js';
import { createFilesystemPublisher } from './filesystem.js';
import type { Episode } from './publisher.js';

/** One time for every publish: a scene moved to another index is revised, at the same time in every site. */
const clock = new ManualClock(Date.UTC(2026, 5, 1));

/**
 * Counts the changes publishes make to the disk; dies at change number `dieAt`. A temporary file whose path matches
 * `vanish` is removed just before it is renamed into place, as another writer that took it for abandoned would; one
 * whose path matches `fail` cannot be opened for writing (a disk error), while every other call goes on.
 */
const death = vi.hoisted(() => ({
  changes: 0,
  dieAt: Number.POSITIVE_INFINITY,
  dead: false,
  vanish: undefined as RegExp | undefined,
  fail: undefined as RegExp | undefined,
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const deadly = <F extends (...args: never[]) => Promise<unknown>>(
    call: F,
    changes: (...args: Parameters<F>) => boolean,
  ) =>
    (async (...args: Parameters<F>) => {
      if (!death.dead && changes(...args)) {
        death.changes += 1;
        if (death.changes >= death.dieAt) death.dead = true;
      }
      if (death.dead) throw new Error('the process is dead');
      return call(...args);
    }) as unknown as F;
  const always = () => true;
  const never = () => false;
  const overrides = {
    open: deadly(
      async (...args: Parameters<typeof actual.open>) => {
        if (death.fail?.test(String(args[0]))) {
          throw Object.assign(new Error(`EIO: i/o error, open '${String(args[0])}'`), { code: 'EIO' });
        }
        return actual.open(...args);
      },
      (_file, flags) => typeof flags === 'string' && flags.includes('w'),
    ),
    rename: deadly(async (from: Parameters<typeof actual.rename>[0], to: Parameters<typeof actual.rename>[1]) => {
      if (death.vanish?.test(String(from))) await actual.rm(from, { force: true });
      return actual.rename(from, to);
    }, always),
    rm: deadly(actual.rm, always),
    mkdir: deadly(actual.mkdir, never),
    readFile: deadly(actual.readFile, never),
    readdir: deadly(actual.readdir, never),
    stat: deadly(actual.stat, never),
  };
  return { ...actual, ...overrides, default: { ...actual, ...overrides } };
});

function revive(dieAt = Number.POSITIVE_INFINITY): void {
  Object.assign(death, { changes: 0, dieAt, dead: false, vanish: undefined, fail: undefined });
}

const folders: string[] = [];
afterEach(async () => {
  revive();
  for (const folder of folders.splice(0)) await rm(folder, { recursive: true, force: true });
});
async function tempFolder(): Promise<string> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'storyloom-site-crash-'));
  folders.push(folder);
  return folder;
}

/** `count` episodes in chapters of two, each with a picture described by its title. */
const makeEpisodes = (count: number): Episode[] => makeSiteEpisodes(count, { chapterSize: 2, picture: () => true });
const snapshot = siteSnapshot;

const sites = new Map<string, Map<string, string>>();

/** The site of publishing `episodes` one by one, uninterrupted. */
async function siteOf(episodes: readonly Episode[]): Promise<Map<string, string>> {
  const key = episodes
    .map(({ scene, image }) => `${scene.id}@${scene.chapterId}/${scene.index}${image ? '+' : ''}`)
    .join(',');
  const known = sites.get(key);
  if (known) return known;
  const site = await publishedSite(episodes);
  sites.set(key, site);
  return site;
}

async function publishedSite(episodes: readonly Episode[]): Promise<Map<string, string>> {
  const directory = await tempFolder();
  const publisher = createFilesystemPublisher({ directory, clock });
  for (const episode of episodes) await publisher.publish(episode);
  return snapshot(directory);
}

const slug = (scene: Scene) => `${String(scene.index).padStart(6, '0')}-${scene.id}`;

/**
 * `site` without the pictures of scenes whose JSON never landed: a publish that dies between a scene's picture and
 * its JSON leaves the picture, which no page shows, until the scene is published again (the engine retries it).
 */
function withoutUnlistedPictures(site: Map<string, string>): Map<string, string> {
  return new Map(
    [...site].filter(([name]) => {
      const picture = /^images[/\\](.+)\.(?:png|svg|jpg|webp)$/.exec(name);
      return !picture || site.has(path.join('scenes', `${picture[1]}.json`));
    }),
  );
}

/**
 * The episodes as far as a dead publish got to write them: a scene whose JSON never landed is not on the site, and
 * one whose JSON landed has its picture (the picture is written first, then the JSON).
 */
async function asLanded(directory: string, dying: readonly Episode[]): Promise<Episode[]> {
  const scenes = new Set(await readdir(path.join(directory, 'scenes')));
  const images = new Set(await readdir(path.join(directory, 'images')));
  return dying
    .filter((episode) => scenes.has(`${slug(episode.scene)}.json`))
    .map((episode) => (images.has(`${slug(episode.scene)}.svg`) ? episode : { ...episode, image: undefined }));
}

/**
 * The tests that kill a publish at each of its disk changes, one run per change: about 11 s alone, 16-18 s in a full
 * run, and past 30 s on two cores shared with the rest of the suite. Their bound is their own, so that a slow machine fails
 * none of them by the clock (each assertion stays as it is).
 */
const EXHAUSTIVE_TIMEOUT_MS = 180_000;

describe('createFilesystemPublisher: a publish that dies part-way', () => {
  const episodes = makeEpisodes(6);
  // Scene 5 opens chapter 3 (its publish also changes chapter 2's page); scene 6 is the next publish.
  const [before, dying, next] = [episodes.slice(0, 4), episodes[4]!, episodes[5]!];

  it(
    'is repaired by the next publish, whatever change it died at',
    async () => {
      const complete = await siteOf(episodes);
      revive();
      const probe = createFilesystemPublisher({ directory: await tempFolder(), clock });
      for (const episode of before) await probe.publish(episode);
      death.changes = 0;
      await probe.publish(dying);
      const changes = death.changes;
      expect(changes).toBeGreaterThan(10);

      for (let dieAt = 1; dieAt <= changes; dieAt++) {
        const directory = await tempFolder();
        const publisher = createFilesystemPublisher({ directory, clock });
        for (const episode of before) await publisher.publish(episode);
        revive(dieAt);
        // Dying at the very last change (the marker's removal), the publish had done its work and may report it.
        await publisher.publish(dying).catch(() => undefined);
        expect(death.dead, `died at change ${dieAt}`).toBe(true);
        revive();
        // The next scene's publish repairs the site: the dying scene is on it as if published, once its JSON landed.
        const landed = await asLanded(directory, [dying]);
        await publisher.publish(next);
        expect(
          withoutUnlistedPictures(await snapshot(directory)),
          `dying at change ${dieAt}, then publishing the next scene`,
        ).toEqual(await siteOf([...before, ...landed, next]));
        // The engine publishes the dying scene again: the site is the one an uninterrupted run writes.
        await publisher.publish(dying);
        expect(await snapshot(directory), `dying at change ${dieAt}, then publishing it again`).toEqual(complete);
      }
    },
    EXHAUSTIVE_TIMEOUT_MS,
  );

  it(
    'is repaired when it moved a scene to another chapter or index, whatever change it died at',
    async () => {
      const base = episodes.slice(0, 5);
      const moves: Episode[] = [
        // The fifth scene, alone in the third chapter, into the second: the third chapter goes.
        { ...episodes[4]!, scene: { ...episodes[4]!.scene, chapterId: chapterIdFor(1) } },
        // The second scene into the second chapter.
        { ...episodes[1]!, scene: { ...episodes[1]!.scene, chapterId: chapterIdFor(1) } },
        // The second scene to index 9 of its chapter: its old files go.
        { ...episodes[1]!, scene: { ...episodes[1]!.scene, index: 9 } },
      ];
      for (const moved of moves) {
        const where = `scene ${moved.scene.id} to ${moved.scene.chapterId} at ${moved.scene.index}`;
        revive();
        const probe = createFilesystemPublisher({ directory: await tempFolder(), clock });
        for (const episode of base) await probe.publish(episode);
        death.changes = 0;
        await probe.publish(moved);
        const changes = death.changes;

        for (let dieAt = 1; dieAt <= changes; dieAt++) {
          const directory = await tempFolder();
          const publisher = createFilesystemPublisher({ directory, clock });
          for (const episode of base) await publisher.publish(episode);
          revive(dieAt);
          await publisher.publish(moved).catch(() => undefined);
          expect(death.dead, `${where}: died at change ${dieAt}`).toBe(true);
          revive();
          // The move is on the site once the scene's JSON landed (its picture, once that did), as if published.
          const json = await readFile(path.join(directory, `scenes/${slug(moved.scene)}.json`), 'utf8').catch(
            () => '{}',
          );
          const landed = JSON.parse(json).chapterId === moved.scene.chapterId;
          const [movedAsLanded] = await asLanded(directory, [moved]);
          await publisher.publish(next);
          expect(
            withoutUnlistedPictures(await snapshot(directory)),
            `${where}: died at change ${dieAt}, then publishing the next scene`,
          ).toEqual(await siteOf(landed ? [...base, movedAsLanded!, next] : [...base, next]));
          await publisher.publish(moved);
          expect(await snapshot(directory), `${where}: died at change ${dieAt}, then moving it again`).toEqual(
            await siteOf([...base, moved, next]),
          );
        }
      }
    },
    EXHAUSTIVE_TIMEOUT_MS,
  );

  it('reports a temporary file removed under it as a retryable StorageError, and the retry publishes', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, clock });
    for (const episode of before) await publisher.publish(episode);
    death.vanish = /[/\\]\.index\.html\.[^/\\]+\.tmp$/;
    const failure = await publisher.publish(dying).catch((error: unknown) => error);
    expect(StorageError.isInstance(failure) && failure.isRetryable && failure.reason === 'io').toBe(true);
    revive();
    await publisher.publish(dying);
    await publisher.publish(next);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });

  it('reports a file it could not write as a StorageError, and the next publish writes it', async () => {
    const directory = await tempFolder();
    const publisher = createFilesystemPublisher({ directory, clock });
    for (const episode of before) await publisher.publish(episode);
    death.fail = /[/\\]\.index\.html\.[^/\\]+\.tmp$/;
    // The other files of the publish were written: only a failure the engine sees makes it publish the scene again.
    const failure = await publisher.publish(dying).catch((error: unknown) => error);
    expect(StorageError.isInstance(failure) && failure.reason === 'io').toBe(true);
    revive();
    await publisher.publish(dying);
    await publisher.publish(next);
    expect(await snapshot(directory)).toEqual(await siteOf(episodes));
  });

  it(
    'is repaired when it was a batch, whatever change it died at',
    async () => {
      const complete = await siteOf(episodes);
      revive();
      const probe = createFilesystemPublisher({ directory: await tempFolder(), clock });
      await probe.publishMany(episodes.slice(0, 2));
      death.changes = 0;
      await probe.publishMany(episodes.slice(2, 5));
      const changes = death.changes;

      for (let dieAt = 1; dieAt <= changes; dieAt++) {
        const directory = await tempFolder();
        const publisher = createFilesystemPublisher({ directory, clock });
        await publisher.publishMany(episodes.slice(0, 2));
        revive(dieAt);
        await publisher.publishMany(episodes.slice(2, 5)).catch(() => undefined);
        expect(death.dead, `died at change ${dieAt}`).toBe(true);
        revive();
        const landed = await asLanded(directory, episodes.slice(2, 5));
        await publisher.publish(next);
        // Every scene whose JSON landed is on the site, with its page and its neighbours' links.
        expect(withoutUnlistedPictures(await snapshot(directory)), `dying at change ${dieAt}`).toEqual(
          await siteOf([...episodes.slice(0, 2), ...landed, next]),
        );
        await publisher.publishMany(episodes.slice(2, 5));
        expect(await snapshot(directory), `dying at change ${dieAt}, then the batch again`).toEqual(complete);
      }
    },
    EXHAUSTIVE_TIMEOUT_MS,
  );
});
