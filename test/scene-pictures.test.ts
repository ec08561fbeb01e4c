/**
 * One picture per scene, wherever it is drawn: the engine running an episode and a site rebuilt from the stored
 * scenes (the command's import and fork) ask for the same picture, so a rebuilt site shows what readers first saw.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createStoryEngine } from '../src/engine/engine.js';
import { sceneIllustrationRequest } from '../src/generation/image-prompt.js';
import { createProceduralIllustrator } from '../src/generation/procedural-illustrator.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createFilesystemPublisher } from '../src/publishing/filesystem.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { createMockImageGenerator } from '../src/testing/mock-generators.js';
import { storyloom, temporaryFolders } from './fixtures/cli.js';

const workspace = temporaryFolders('storyloom-scene-pictures-');

/** The picture files of a story's site, by file name. */
function pictures(site: string): Map<string, Buffer> {
  const folder = path.join(site, 'images');
  return new Map(readdirSync(folder).map((name) => [name, readFileSync(path.join(folder, name))]));
}

describe('the picture of a scene', () => {
  it('is requested by the engine exactly as sceneIllustrationRequest builds it from the stored scene', async () => {
    const storyId = 'keepers';
    const store = createMemoryStateStore();
    await store.create(createStoryFromTemplate('lighthouse-keepers', storyId));
    const illustrator = createProceduralIllustrator({ format: 'png', width: 160, height: 90 });
    const images = createMockImageGenerator({ respond: (request) => illustrator.generate(request) });
    const site = workspace();
    const engine = createStoryEngine({
      store,
      generator: createProceduralNarrator({ seed: 1 }),
      images,
      publishers: [createFilesystemPublisher({ directory: site })],
      imageAspectRatio: '4:5',
    });
    for (let episode = 0; episode < 4; episode++) expect((await engine.runEpisode(storyId)).complete).toBe(true);

    const scenes = (await store.listScenes(storyId, { limit: 10 })).items;
    expect(images.calls).toHaveLength(4);
    const drawn = pictures(site);
    let cast = 0;
    for (const [index, scene] of scenes.entries()) {
      const story = (await store.getStateAt(storyId, scene.stateVersion))!;
      const rebuilt = sceneIllustrationRequest(scene, story, { aspectRatio: '4:5' });
      expect(images.calls[index]).toEqual(rebuilt);
      // What keeps a story's pictures consistent reaches the generator: the style guide and how the cast looks.
      expect(rebuilt.style).toBe(story.bible.style);
      expect(rebuilt.characters?.every((character) => character.appearance)).toBe(true);
      cast += rebuilt.characters?.length ?? 0;
      const file = [...drawn.keys()].find((name) => name.includes(scene.id));
      expect(file, `the site's picture of ${scene.id}`).toBeDefined();
      expect(Buffer.from((await illustrator.generate(rebuilt)).data).equals(drawn.get(file!)!)).toBe(true);
    }
    expect(cast).toBeGreaterThan(0);
  });

  it('of an imported or forked story is the picture the original episode got, byte for byte', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'a'])).code).toBe(0);
    expect((await storyloom(cwd, ['run', '--data', 'a', '--episodes', '3'])).code).toBe(0);
    const exported = await storyloom(cwd, ['export', '--data', 'a']);
    expect(exported.code).toBe(0);
    writeFileSync(path.join(cwd, 'story.jsonl'), exported.stdout);
    expect((await storyloom(cwd, ['import', 'story.jsonl', '--data', 'b'])).code).toBe(0);
    expect((await storyloom(cwd, ['fork', '--data', 'a', '--at', '2', '--as', 'branch'])).code).toBe(0);

    const original = pictures(path.join(cwd, 'a', 'site', 'lighthouse-keepers'));
    expect(original.size).toBe(3);
    const imported = pictures(path.join(cwd, 'b', 'site', 'lighthouse-keepers'));
    expect([...imported.keys()].sort()).toEqual([...original.keys()].sort());
    for (const [name, data] of original) expect(imported.get(name)!.equals(data), `imported ${name}`).toBe(true);
    // The fork shares the first two scenes, ids and all: their pictures are the original's.
    const forked = pictures(path.join(cwd, 'a', 'site', 'branch'));
    expect(forked.size).toBe(2);
    for (const [name, data] of forked) expect(original.get(name)?.equals(data), `forked ${name}`).toBe(true);
  });
});
