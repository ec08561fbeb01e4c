/**
 * One picture per scene, wherever it is drawn: the engine running an episode and a site rebuilt from the stored
 * scenes (the command's import and fork) ask for the same picture, so a rebuilt site shows what readers first saw.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openProject } from '../src/cli/project.js';
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
  if (!existsSync(folder)) return new Map();
  return new Map(readdirSync(folder).map((name) => [name, readFileSync(path.join(folder, name))]));
}

/** The alt text of the picture on each scene page of a story's site, by page name (`null`: the page has none). */
function sceneAlts(site: string): Map<string, string | null> {
  const folder = path.join(site, 'scenes');
  const pages = readdirSync(folder).filter((name) => name.endsWith('.html'));
  return new Map(
    pages.map((name) => {
      const page = readFileSync(path.join(folder, name), 'utf8');
      const alt = /<figure class="scene-picture"><img src="[^"]*" alt="([^"]*)"/.exec(page)?.[1];
      return [name, alt ?? null];
    }),
  );
}

/** What `status --json` says of a story's last scene's steps. */
async function lastSceneSteps(cwd: string, data: string, storyId: string) {
  const status = await storyloom(cwd, ['status', '--data', data, '--story', storyId, '--json']);
  expect(status.code, status.stderr).toBe(0);
  const { unfinishedSteps, skippedSteps } = JSON.parse(status.stdout);
  return { unfinishedSteps, skippedSteps };
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

  it('of an imported or forked story is left out where the original episode went out without one', async () => {
    const cwd = workspace();
    const skipped = [{ step: 'image', reason: 'run with --no-images' }];
    expect((await storyloom(cwd, ['init', '--data', 'a'])).code).toBe(0);
    // Scene 1 with a picture, scenes 2 and 3 without, scene 4 with one again.
    expect((await storyloom(cwd, ['run', '--data', 'a', '--episodes', '1'])).code).toBe(0);
    expect((await storyloom(cwd, ['run', '--data', 'a', '--episodes', '2', '--no-images'])).code).toBe(0);
    expect((await storyloom(cwd, ['export', '--data', 'a', '--out', 'three.jsonl'])).code).toBe(0);
    expect((await storyloom(cwd, ['run', '--data', 'a', '--episodes', '1'])).code).toBe(0);
    const original = pictures(path.join(cwd, 'a', 'site', 'lighthouse-keepers'));
    expect([...original.keys()].map((name) => name.slice(0, 6)).sort()).toEqual(['000000', '000003']);
    const first = [...original.keys()].find((name) => name.startsWith('000000-'))!;

    // The import's own log came with it: scenes 2 and 3 stay without pictures, and the last one is owed none.
    expect((await storyloom(cwd, ['import', 'three.jsonl', '--data', 'b'])).code).toBe(0);
    const imported = pictures(path.join(cwd, 'b', 'site', 'lighthouse-keepers'));
    expect([...imported.keys()]).toEqual([first]);
    expect(imported.get(first)!.equals(original.get(first)!)).toBe(true);
    expect(await lastSceneSteps(cwd, 'b', 'lighthouse-keepers')).toEqual({
      unfinishedSteps: [],
      skippedSteps: skipped,
    });

    // A fork reads the original's log; its own log then says the same, so a fork of the fork leaves them out too.
    expect((await storyloom(cwd, ['fork', '--data', 'a', '--at', '4', '--as', 'branch'])).code).toBe(0);
    const forked = pictures(path.join(cwd, 'a', 'site', 'branch'));
    expect([...forked.keys()].sort()).toEqual([...original.keys()].sort());
    for (const [name, data] of forked) expect(original.get(name)!.equals(data), `forked ${name}`).toBe(true);
    expect(await lastSceneSteps(cwd, 'a', 'branch')).toEqual({ unfinishedSteps: [], skippedSteps: [] });
    expect((await storyloom(cwd, ['fork', '--data', 'a', '--story', 'branch', '--at', '3', '--as', 'twig'])).code).toBe(
      0,
    );
    expect([...pictures(path.join(cwd, 'a', 'site', 'twig')).keys()]).toEqual([first]);
    expect(await lastSceneSteps(cwd, 'a', 'twig')).toEqual({ unfinishedSteps: [], skippedSteps: skipped });
    const pages = sceneAlts(path.join(cwd, 'a', 'site', 'twig'));
    expect([...pages.values()].filter((alt) => alt === null)).toHaveLength(2);

    // Pictures again: the twig's next run writes scene 4 with a picture, and draws no picture for scene 3.
    const run = await storyloom(cwd, ['run', '--data', 'a', '--story', 'twig', '--episodes', '1']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).not.toMatch(/\(resumed\)/);
    expect([...pictures(path.join(cwd, 'a', 'site', 'twig')).keys()].map((name) => name.slice(0, 6)).sort()).toEqual([
      '000000',
      '000003',
    ]);
  });

  it('of an imported or forked story has the alt text the original episode gave it', async () => {
    const cwd = workspace();
    // A long style guide makes each scene's image prompt long: the page's alt text is the title, not the prompt.
    const style = `muted watercolour, ${'ink outlines, salt-stained paper, grey sea light, '.repeat(9)}`.trim();
    writeFileSync(
      path.join(cwd, 'harbour.json'),
      JSON.stringify({
        bible: {
          title: 'Harbour Lights',
          premise: 'A harbour town keeps its lamps lit.',
          genre: 'drama',
          tone: 'quiet',
          style,
        },
        characters: { ada: { id: 'ada', name: 'Ada', role: 'main', appearance: 'a tall harbourmaster in oilskins' } },
      }),
    );
    expect((await storyloom(cwd, ['init', '--data', 'a', '--bible', 'harbour.json'])).code).toBe(0);
    expect((await storyloom(cwd, ['run', '--data', 'a', '--episodes', '2'])).code).toBe(0);
    expect((await storyloom(cwd, ['export', '--data', 'a', '--out', 'story.jsonl'])).code).toBe(0);
    expect((await storyloom(cwd, ['import', 'story.jsonl', '--data', 'b'])).code).toBe(0);
    expect((await storyloom(cwd, ['fork', '--data', 'a', '--at', '2', '--as', 'branch'])).code).toBe(0);

    const original = sceneAlts(path.join(cwd, 'a', 'site', 'harbour'));
    expect(original.size).toBe(2);
    for (const alt of original.values()) {
      expect(alt).toMatch(/^Illustration: /);
      expect(alt).not.toContain('watercolour');
    }
    expect(sceneAlts(path.join(cwd, 'b', 'site', 'harbour'))).toEqual(original);
    expect(sceneAlts(path.join(cwd, 'a', 'site', 'branch'))).toEqual(original);
  });

  it('a run --no-images stopped after its commit leaves that scene without a picture when the next run draws pictures', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    const data = path.join(cwd, 'proj');

    // What `storyloom run --no-images` builds, stopped once its scene is committed (as a kill or Ctrl-C there would).
    const project = await openProject(data);
    try {
      const controller = new AbortController();
      const engine = await project.createEngine('lighthouse-keepers', {
        images: false,
        onEvent: (event) => {
          if (event.type === 'step.start' && event.step.startsWith('publish:')) controller.abort();
        },
      });
      await expect(engine.runEpisode('lighthouse-keepers', { signal: controller.signal })).rejects.toThrow();
      expect((await project.store.load('lighthouse-keepers')).sceneCount).toBe(1);
    } finally {
      project.close();
    }

    const status = await storyloom(cwd, ['status', '--data', 'proj', '--json']);
    expect(JSON.parse(status.stdout).unfinishedSteps).not.toContain('image');
    expect(JSON.parse(status.stdout).skippedSteps).toEqual([{ step: 'image', reason: 'run with --no-images' }]);

    const run = await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '1']);
    expect(run.code, run.stderr).toBe(0);
    // Only the scene this run wrote (the second, 000001-...) has a picture; the --no-images scene has none.
    expect(
      [
        ...(existsSync(path.join(data, 'site', 'lighthouse-keepers', 'images'))
          ? pictures(path.join(data, 'site', 'lighthouse-keepers')).keys()
          : []),
      ]
        .sort()
        .map((name) => name.slice(0, 6)),
    ).toEqual(['000001']);
  });
});
