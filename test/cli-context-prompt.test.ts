/**
 * `storyloom context` shows the prompt the next episode's narrator gets: the narrator's requests are recorded (the
 * offline narrator, wrapped), and compared with what the command printed just before the run.
 */
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { markBuildPending, projectPaths } from '../src/cli/project.js';
import type { SceneGenerator } from '../src/generation/scene-generator.js';
import { storyloom, temporaryFolders } from './fixtures/cli.js';

/** The prompts the offline narrator was asked to write from, in order. */
const prompts: Array<{ stable: string; dynamic: string }> = [];
vi.mock('../src/generation/procedural-narrator.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../src/generation/procedural-narrator.js')>();
  return {
    ...original,
    createProceduralNarrator: (...args: Parameters<typeof original.createProceduralNarrator>): SceneGenerator => {
      const narrator = original.createProceduralNarrator(...args);
      return {
        ...narrator,
        generate: async (request, options) => {
          prompts.push({ stable: request.prompt.stable, dynamic: request.prompt.dynamic });
          return narrator.generate(request, options);
        },
      } as SceneGenerator;
    },
  };
});

const STORY = 'lighthouse-keepers';
const workspace = temporaryFolders('storyloom-context-prompt-');

describe('storyloom context', () => {
  it('without --query prints the prompt the next run gives the narrator, audience input resolved as the engine does', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '3', '--no-images'])).code).toBe(0);
    for (const [choice, weight] of [
      ['open the door', '3'],
      ['light the lamp', '1'],
    ] as const) {
      const vote = ['influence', 'add', '--data', 'proj', '--kind', 'vote', '--choice', choice, '--weight', weight];
      expect((await storyloom(cwd, vote)).code).toBe(0);
    }
    const shown = await storyloom(cwd, ['context', '--data', 'proj', '--json']);
    expect(shown.code).toBe(0);
    const bundle = JSON.parse(shown.stdout) as { prompt: { stable: string; dynamic: string } };
    prompts.length = 0;
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '1', '--no-images'])).code).toBe(0);
    expect(prompts).toHaveLength(1);
    expect(bundle.prompt.stable).toBe(prompts[0]!.stable);
    expect(bundle.prompt.dynamic).toBe(prompts[0]!.dynamic);
  });
});

describe('storyloom context --pov', () => {
  it("shows the point of view's prompt, its focus naming only threads it knows, and refuses a stranger", async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '4', '--no-images'])).code).toBe(0);
    const shown = await storyloom(cwd, ['context', '--data', 'proj', '--pov', 'tobin', '--json']);
    expect(shown.stderr).toBe('');
    expect(shown.code).toBe(0);
    const bundle = JSON.parse(shown.stdout) as { prompt: { stable: string; dynamic: string } };
    expect(bundle.prompt.dynamic).toContain('from the point of view of');
    // Every thread the focus names is one the prompt shows the point of view, by the title it shows: in the thread
    // section, or in a journal line of a scene it was in.
    const focus = /^Focus: .*?Threads: (.*?)(?:\. Audience choice|$)/m.exec(bundle.prompt.dynamic)?.[1];
    const titles = focus?.split('; ') ?? [];
    expect(titles.length).toBeGreaterThan(0);
    const text = bundle.prompt.stable + bundle.prompt.dynamic;
    for (const title of titles) {
      const quoted = title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      expect(text).toMatch(new RegExp(`\\] ${quoted} \\(id: |Thread "${quoted}"`));
    }
    const stranger = await storyloom(cwd, ['context', '--data', 'proj', '--pov', 'nobody']);
    expect(stranger.code).not.toBe(0);
    expect(stranger.stderr).toContain('povCharacterId "nobody" is not a character');
  });
});

describe('a fork cut short before its story went in', () => {
  it('recorded by an earlier version (no --at): the command status gives names where --at goes', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '2', '--no-images'])).code).toBe(0);
    // What an earlier version wrote before the store's fork: { kind: 'fork', from } (no at).
    markBuildPending(projectPaths(path.join(cwd, 'proj')), 'branch', { kind: 'fork', from: STORY });
    const refused = await storyloom(cwd, ['status', '--data', 'proj', '--story', 'branch']);
    expect(refused.code).toBe(1);
    const suggested = /run the same fork again \("npm run storyloom -- (.*)"\)/.exec(refused.stderr)?.[1];
    expect(suggested).toContain('--at <the scene it forked at>');
    // With the scene filled in, the command runs.
    const filled = suggested!.replace('<the scene it forked at>', '2').replace('<this folder>', 'proj');
    const again = await storyloom(cwd, filled.split(' '));
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
  });
});
