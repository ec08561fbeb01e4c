/**
 * The reader site of a story at the thread cap: the reducer archives resolved threads from the live state to make
 * room for new ones, and the timeline keeps them, through an ordinary publish, a repair and a rebuild from scratch.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createFilesystemPublisher } from '../src/publishing/filesystem.js';
import { applyDelta, assertContinuity } from '../src/state/reducer.js';
import type { Scene, StateDeltaInput, StoryState } from '../src/state/schema.js';
import { makeNextScene, makeStoryState } from '../src/testing/fixtures.js';

const folders: string[] = [];
afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});
const newFolder = () => {
  const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-site-archive-'));
  folders.push(folder);
  return folder;
};

const open = (ids: string[]) => ids.map((id) => ({ id, title: `Thread ${id}`, importance: 0.5 }));
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `t${from + i}`);

/** A story filled to 500 threads, the first ones resolved, then scenes that open new ones (archiving old ones). */
function archivingStory(): Array<{ scene: Scene; story: StoryState }> {
  let state = makeStoryState('arc', { bible: { ...makeStoryState('arc').bible, chapterLength: 50 } });
  const episodes: Array<{ scene: Scene; story: StoryState }> = [];
  const deltas: StateDeltaInput[] = [
    ...[0, 100, 200, 300, 400].map((from) => ({ threadsOpened: open(range(from, Math.min(from + 100, 499))) })),
    { threadsResolved: ['drift', ...range(0, 9)].map((id) => ({ id })) },
    { threadsOpened: open(['fresh-a']) }, // archives "drift"
    { threadsOpened: open(['fresh-b', 'fresh-c']) }, // archives t0 and t1
    { threadsOpened: open(['t0']) }, // archives t2; "t0" is now another thread
  ];
  for (const delta of deltas) {
    const scene = {
      ...makeNextScene(state),
      id: `scene-${state.sceneCount}`,
      createdAt: new Date(Date.UTC(2026, 0, 1 + state.sceneCount)).toISOString(),
    };
    state = assertContinuity(applyDelta(state, delta, scene)).state;
    episodes.push({ scene, story: state });
  }
  expect(state.plotThreads.map((thread) => thread.id)).not.toContain('drift');
  return episodes;
}

function timeline(folder: string) {
  const html = readFileSync(path.join(folder, 'threads.html'), 'utf8');
  return { html, rows: (id: string) => html.split(`id="thread-${id}"`).length - 1 };
}

describe('the reader site at the thread cap', () => {
  const episodes = archivingStory();

  it('keeps archived threads on the timeline, resolved, and shows a reused id as the new thread', async () => {
    const folder = newFolder();
    const publisher = createFilesystemPublisher({ directory: folder });
    for (const episode of episodes) await publisher.publish(episode);
    const { html, rows } = timeline(folder);
    for (const id of ['drift', 't1', 't2', 'fresh-a', 'fresh-c']) expect(rows(id), id).toBe(1);
    expect(html).toContain('Why the island drifts');
    // "t0" was archived, then opened again as another thread: one row, the new one (open).
    expect(rows('t0')).toBe(1);
    const story = JSON.parse(readFileSync(path.join(folder, 'story.json'), 'utf8')).story;
    const t0 = story.plotThreads.filter((thread: { id: string }) => thread.id === 't0');
    expect(t0).toEqual([expect.objectContaining({ status: 'open', openedIn: 'scene-8' })]);
    expect(story.plotThreads).toHaveLength(500 + 3);
  });

  it('keeps them through a repair and in a site rebuilt from scratch', async () => {
    const folder = newFolder();
    const publisher = createFilesystemPublisher({ directory: folder });
    for (const episode of episodes.slice(0, -1)) await publisher.publish(episode);
    // A lost catalog turns the next publish into a repair of the whole site.
    rmSync(path.join(folder, 'episodes.json'));
    await publisher.publish(episodes.at(-1)!);
    const repaired = timeline(folder);
    for (const id of ['drift', 't1', 't2']) expect(repaired.rows(id), id).toBe(1);

    const rebuilt = newFolder();
    await createFilesystemPublisher({ directory: rebuilt }).publishMany(episodes);
    expect(timeline(rebuilt).html).toBe(repaired.html);
  });
});
