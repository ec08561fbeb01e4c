/**
 * What publishing one episode to the filesystem site costs, counted in file work rather than time: bytes read and
 * written and directory entries listed through `node:fs/promises`. A daily story publishes for years, so the cost of
 * one more episode must not grow with the story.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { openProject } from '../src/cli/project.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { sceneIllustrationRequest } from '../src/generation/image-prompt.js';
import { createProceduralIllustrator } from '../src/generation/procedural-illustrator.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createFilesystemPublisher } from '../src/publishing/filesystem.js';
import type { Episode } from '../src/publishing/publisher.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { chapterIdFor } from '../src/state/schema.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';

/** File work done through node:fs/promises while `counting.on` is set; written bytes also by file name. */
const counting = vi.hoisted(() => ({
  on: false,
  readBytes: 0,
  writeBytes: 0,
  listed: 0,
  writtenTo: new Map<string, number>(),
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const sizeOf = (data: unknown) =>
    typeof data === 'string' ? Buffer.byteLength(data) : (data as Uint8Array).byteLength;
  const readFile = (async (...args: Parameters<typeof actual.readFile>) => {
    const data = await actual.readFile(...args);
    if (counting.on) counting.readBytes += sizeOf(data);
    return data;
  }) as typeof actual.readFile;
  const readdir = (async (...args: Parameters<typeof actual.readdir>) => {
    const names = await actual.readdir(...args);
    if (counting.on) counting.listed += names.length;
    return names;
  }) as typeof actual.readdir;
  const open = (async (...args: Parameters<typeof actual.open>) => {
    const handle = await actual.open(...args);
    const writeFile = handle.writeFile.bind(handle);
    handle.writeFile = (async (data: string | Uint8Array, ...rest: unknown[]) => {
      if (counting.on) {
        counting.writeBytes += sizeOf(data);
        // `.<name>.<writer>.<random>.tmp` (the writer: `<pid>-<host hash>-<token>`), renamed to `<name>`.
        const name = path
          .basename(String(args[0]))
          .replace(/^\.(.+)\.\d+(?:-[0-9a-f]{8}-[0-9a-f]{8})?\.[0-9a-f]+\.tmp$/, '$1');
        counting.writtenTo.set(name, (counting.writtenTo.get(name) ?? 0) + sizeOf(data));
      }
      return (writeFile as (...a: unknown[]) => Promise<void>)(data, ...rest);
    }) as typeof handle.writeFile;
    const readHandle = handle.readFile.bind(handle);
    handle.readFile = (async (...rest: unknown[]) => {
      const data = await (readHandle as (...a: unknown[]) => Promise<string | Buffer>)(...rest);
      if (counting.on) counting.readBytes += sizeOf(data);
      return data;
    }) as typeof handle.readFile;
    return handle;
  }) as typeof actual.open;
  const writeFile = (async (...args: Parameters<typeof actual.writeFile>) => {
    if (counting.on) counting.writeBytes += sizeOf(args[1]);
    return actual.writeFile(...args);
  }) as typeof actual.writeFile;
  const overrides = { readFile, readdir, open, writeFile };
  return { ...actual, ...overrides, default: { ...actual, ...overrides } };
});

interface Cost {
  readBytes: number;
  writeBytes: number;
  listed: number;
  /** Bytes written to the files whose content is the story's current state: its roster, timeline and snapshot. */
  stateBytes: number;
}

/** The files that show the story's state (its cast and threads), which grows as the story does, not its history. */
const STATE_FILES = ['story.json', 'characters.html', 'threads.html'];

async function counted(task: () => Promise<unknown>): Promise<Cost> {
  Object.assign(counting, { readBytes: 0, writeBytes: 0, listed: 0, writtenTo: new Map(), on: true });
  try {
    await task();
  } finally {
    counting.on = false;
  }
  const stateBytes = STATE_FILES.reduce((sum, name) => sum + (counting.writtenTo.get(name) ?? 0), 0);
  return { readBytes: counting.readBytes, writeBytes: counting.writeBytes, listed: counting.listed, stateBytes };
}

const folders: string[] = [];
afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});
function temporaryFolder(): string {
  const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-site-cost-'));
  folders.push(folder);
  return folder;
}

/** `count` episodes of the offline narrator with pictures, as the engine hands them to a publisher. */
async function offlineEpisodes(count: number): Promise<{ episodes: Episode[]; exported: string[] }> {
  const storyId = 'keepers';
  const store = createMemoryStateStore();
  await store.create(createStoryFromTemplate('lighthouse-keepers', storyId));
  const engine = createStoryEngine({ store, generator: createProceduralNarrator({ seed: 1 }) });
  for (let episode = 0; episode < count; episode++) await engine.runEpisode(storyId);
  // SVG pictures: drawn faster than PNG ones, and the picture's format does not change what the site does.
  const illustrator = createProceduralIllustrator({ format: 'svg' });
  const episodes: Episode[] = [];
  for (const scene of (await store.listScenes(storyId, { limit: count })).items) {
    const story = (await store.getStateAt(storyId, scene.stateVersion))!;
    const image = await illustrator.generate(sceneIllustrationRequest(scene, story));
    episodes.push({ story, scene, image: { data: image.data, mediaType: image.mediaType, alt: scene.title } });
  }
  const exported: string[] = [];
  for await (const line of store.exportStory(storyId)) exported.push(line);
  return { episodes, exported };
}

const SVG = new TextEncoder().encode(
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="9"><rect width="16" height="9" fill="#246"/></svg>',
);

/**
 * `count` episodes of one story whose cast and threads stay as they are: only its history grows. Each scene is a
 * few kilobytes of prose with a summary, as a generated one is.
 */
function steadyEpisodes(count: number, chapterLength: number): Episode[] {
  let state = makeStoryState('steady');
  const episodes: Episode[] = [];
  const paragraph = 'The lamp turned over the grey water, and Mira counted the beats between the flashes. ';
  for (let index = 0; index < count; index++) {
    const chapterIndex = Math.floor(index / chapterLength);
    state = { ...state, chapterIndex, chapterId: chapterIdFor(chapterIndex) };
    const scene = makeNextScene(state, {
      title: `Night ${index + 1}`,
      text: Array.from({ length: 6 }, () => paragraph.repeat(5)).join('\n\n'),
      summary: `Night ${index + 1}: ${paragraph.repeat(3)}`,
    });
    state = makeNextState(state, scene);
    episodes.push({
      story: state,
      scene,
      ...(index % 3 === 0 ? { image: { data: SVG, mediaType: 'image/svg+xml', alt: 'the lamp' } } : {}),
    });
  }
  return episodes;
}

describe('the filesystem site: the cost of one more episode', () => {
  it('publishing scene 80 reads, writes and lists what publishing scene 20 did', async () => {
    // Chapters of 8 (the default), a feed of 10 and an index showing 2 chapters: by scene 20 the feed and the
    // index's chapters are as long as they get. What is left to grow is one line per chapter (the index lists each).
    const episodes = steadyEpisodes(80, 8);
    const publisher = createFilesystemPublisher({ directory: temporaryFolder(), feedEntries: 10, indexChapters: 2 });
    const costs: Cost[] = [];
    for (const episode of episodes) costs.push(await counted(() => publisher.publish(episode)));
    const early = costs[19]!;
    const late = costs[79]!;
    const told = `scene 20: ${JSON.stringify(early)}; scene 80: ${JSON.stringify(late)}`;
    // Four times the story: a cost independent of its length stays well within 1.5 times.
    expect(late.readBytes / early.readBytes, told).toBeLessThan(1.5);
    expect(late.writeBytes / early.writeBytes, told).toBeLessThan(1.5);
    expect(late.listed / Math.max(1, early.listed), told).toBeLessThan(1.5);
    // Publishing the same scene again (a retry) rewrites nothing: it writes only the marker of its publish.
    const again = await counted(() => publisher.publish(episodes[79]!));
    expect(again.writeBytes, JSON.stringify(again)).toBeLessThan(100);
  });

  it('with the offline narrator, scene 240 costs what scene 60 did, apart from the pages of its larger cast', {
    timeout: 120_000,
  }, async () => {
    const { episodes } = await offlineEpisodes(240);
    const publisher = createFilesystemPublisher({ directory: temporaryFolder() });
    const costs: Cost[] = [];
    for (const episode of episodes) costs.push(await counted(() => publisher.publish(episode)));
    const early = costs[59]!;
    const late = costs[239]!;
    const told = `scene 60: ${JSON.stringify(early)}; scene 240: ${JSON.stringify(late)}`;
    expect(late.readBytes / early.readBytes, told).toBeLessThan(1.5);
    expect(late.listed / Math.max(1, early.listed), told).toBeLessThan(1.5);
    // The roster, the timeline and story.json show the story's state: a larger cast makes them larger (as it makes
    // the state the store writes each episode larger). Everything else a publish writes is the same at any length.
    expect((late.writeBytes - late.stateBytes) / (early.writeBytes - early.stateBytes), told).toBeLessThan(1.5);
  });

  it('publishAll (import, fork) does linear work: twice the scenes cost about twice as much', {
    timeout: 120_000,
  }, async () => {
    const { exported } = await offlineEpisodes(60);
    const project = await openProject(temporaryFolder(), { formatVersion: 1, storyId: 'keepers', dimensions: 64 });
    let half: Cost;
    let full: Cost;
    try {
      await project.store.importStory(exported);
      // A fork that shares the first 30 scenes: the same story at half the length.
      await project.store.fork('keepers', 29, 'half');
      half = await counted(() => project.publishAll('half'));
      full = await counted(() => project.publishAll('keepers'));
    } finally {
      project.close();
    }
    const told = `30 scenes: ${JSON.stringify(half)}; 60 scenes: ${JSON.stringify(full)}`;
    // Quadratic work would be four times as much.
    expect(full.readBytes / half.readBytes, told).toBeLessThan(2.5);
    expect(full.writeBytes / half.writeBytes, told).toBeLessThan(2.5);
    expect(full.listed / Math.max(1, half.listed), told).toBeLessThan(2.5);
  });
});
