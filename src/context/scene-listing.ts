/**
 * Reading a story's scenes through `StoryStateStore.listScenes` page after page: the context layer's one loop over
 * the cursor. A page may come back short, even empty, with more behind it (a DynamoDB query's does), so a reader that
 * stops at the first page can miss scenes that exist. Internal: not exported from the package.
 *
 * @module
 */
import type { Scene } from '../state/schema.js';
import type { ListScenesOptions, StoryStateStore } from '../state/store.js';

/** Every scene `listScenes` gives for `options`, in its order, following the cursor; stop early by leaving the loop. */
export async function* eachScene(
  store: StoryStateStore,
  storyId: string,
  options: Omit<ListScenesOptions, 'cursor'>,
): AsyncGenerator<Scene> {
  let cursor: string | undefined;
  do {
    const page = await store.listScenes(storyId, cursor ? { ...options, cursor } : options);
    yield* page.items;
    cursor = page.nextCursor;
  } while (cursor);
}

/**
 * The `count` newest scenes with an index below `end`, newest first. `newer` is how many scenes are expected at or
 * above `end` (those of the current chapter, say): the pages are sized to read past them and the wanted ones at once.
 */
export async function newestScenesBefore(
  store: StoryStateStore,
  storyId: string,
  end: number,
  count: number,
  newer = 0,
): Promise<Scene[]> {
  const scenes: Scene[] = [];
  if (count <= 0) return scenes;
  const limit = Math.min(1_000, count + Math.max(0, newer));
  for await (const scene of eachScene(store, storyId, { order: 'desc', limit })) {
    if (scene.index < end) scenes.push(scene);
    if (scenes.length >= count) break;
  }
  return scenes;
}
