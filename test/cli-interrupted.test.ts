/**
 * The command when it is cut short or meets another run: an import or a fork killed after its story went into the
 * store (the state such a kill leaves is built here by the command's own first steps, stopped there), two runs on
 * one project, an import from a pipe stopped while it copies or meeting another import's copy, and the small refusals
 * that keep a slip from costing the project.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { markBuildPending, openProject, partialFileFor, projectPaths } from '../src/cli/project.js';
import type { SceneGenerator } from '../src/generation/scene-generator.js';
import { makeNextScene, makeNextState } from '../src/testing/fixtures.js';
import { childProcesses, storyloom, temporaryFolders } from './fixtures/cli.js';

/**
 * A hook the offline narrator calls once before it writes a scene: lets a test make "another `storyloom run`" commit
 * between this run's load and its commit, where two real concurrent runs collide. Unset, the narrator is untouched.
 */
const beforeGenerate: { hook?: () => Promise<void> } = {};
vi.mock('../src/generation/procedural-narrator.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../src/generation/procedural-narrator.js')>();
  return {
    ...original,
    createProceduralNarrator: (...args: Parameters<typeof original.createProceduralNarrator>): SceneGenerator => {
      const narrator = original.createProceduralNarrator(...args);
      return {
        ...narrator,
        generate: async (request, options) => {
          const hook = beforeGenerate.hook;
          beforeGenerate.hook = undefined;
          if (hook) await hook();
          return narrator.generate(request, options);
        },
      } as SceneGenerator;
    },
  };
});

const STORY = 'lighthouse-keepers';
const workspace = temporaryFolders('storyloom-cli-interrupted-');
const processes = childProcesses();
const hasMkfifo = spawnSync('mkfifo', ['--version'], { stdio: 'ignore' }).status === 0;

/** A project `proj` in a fresh folder with `episodes` scenes written offline, without pictures (faster). */
async function storyWith(episodes: number): Promise<{ cwd: string; data: string }> {
  const cwd = workspace();
  expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
  const run = await storyloom(cwd, ['run', '--data', 'proj', '--episodes', String(episodes), '--no-images']);
  expect(run.stderr).toBe('');
  return { cwd, data: path.join(cwd, 'proj') };
}

/** The scene pages of a story's site. */
function scenePages(data: string, storyId: string): string[] {
  return readdirSync(path.join(data, 'site', storyId, 'scenes')).filter((name) => name.endsWith('.html'));
}

async function statusOf(cwd: string, data: string, storyId = STORY) {
  const status = await storyloom(cwd, ['status', '--data', data, '--story', storyId, '--json']);
  expect(status.stderr).toBe('');
  return JSON.parse(status.stdout) as { scenes: number; unfinishedSteps: string[]; unfinishedBuild: string | null };
}

/** What `import story.jsonl --data copy` has done when a kill lands right after the story went into the store. */
async function importCutShort(cwd: string): Promise<string> {
  const data = path.join(cwd, 'copy');
  const copy = await openProject(data, { formatVersion: 1, storyId: STORY, dimensions: 1536 });
  try {
    markBuildPending(copy.paths, STORY, { kind: 'import', from: STORY });
    const lines = readFileSync(path.join(cwd, 'story.jsonl'), 'utf8').split('\n').filter(Boolean);
    await copy.store.importStory(lines);
  } finally {
    copy.close();
  }
  return data;
}

describe('an import cut short after its story went in', () => {
  it('shows as unfinished, and the next run builds its memory and site before it writes', async () => {
    const { cwd } = await storyWith(4);
    expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl'])).code).toBe(0);
    const copy = await importCutShort(cwd);
    // The imported log says the last scene's steps were done (by the original): status must not believe it.
    const before = await statusOf(cwd, copy);
    expect(before.unfinishedBuild).toBe('import');
    expect(before.unfinishedSteps).not.toEqual([]);
    const text = await storyloom(cwd, ['status', '--data', copy]);
    expect(text.stdout).toContain('Unfinished import');

    const run = await storyloom(cwd, ['run', '--data', copy, '--episodes', '1', '--no-images']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`Finishing the import of ${STORY} first`);
    expect(scenePages(copy, STORY)).toHaveLength(5);
    expect(await statusOf(cwd, copy)).toMatchObject({ scenes: 5, unfinishedSteps: [], unfinishedBuild: null });
    const memory = JSON.parse((await storyloom(cwd, ['memory', 'stats', '--data', copy, '--json'])).stdout);
    expect(memory.byType.scene).toBeGreaterThanOrEqual(5);
  });

  it('is finished by the same import again, also when the story has a pending influence', async () => {
    const { cwd } = await storyWith(2);
    const vote = await storyloom(cwd, [
      'influence',
      'add',
      '--data',
      'proj',
      '--choice',
      'open the door',
      '--id',
      'v1',
    ]);
    expect(vote.code).toBe(0);
    expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl'])).code).toBe(0);
    const copy = await importCutShort(cwd);
    const again = await storyloom(cwd, ['import', 'story.jsonl', '--data', 'copy']);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`${STORY} was imported before (2 scenes); its memory and site are built again`);
    expect(scenePages(copy, STORY)).toHaveLength(2);
    expect(await statusOf(cwd, copy)).toMatchObject({ unfinishedSteps: [], unfinishedBuild: null });
  });

  it('still shows as unfinished when its record cannot be read, and the next run finishes it', async () => {
    const { cwd } = await storyWith(2);
    expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl'])).code).toBe(0);
    const copy = await importCutShort(cwd);
    // A record this version cannot read (a newer storyloom's, say) still marks the build unfinished.
    writeFileSync(projectPaths(copy).pendingOf(STORY), '{"kind":"merge","from":"elsewhere"}\n');
    expect((await statusOf(cwd, copy)).unfinishedBuild).toBe('import');
    const run = await storyloom(cwd, ['run', '--data', copy, '--episodes', '1', '--no-images']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`Finishing the import of ${STORY} first`);
    expect(scenePages(copy, STORY)).toHaveLength(3);
    expect(await statusOf(cwd, copy)).toMatchObject({ scenes: 3, unfinishedBuild: null });
  });

  it('leaves no pending build when the file is refused before anything went in', async () => {
    const { cwd } = await storyWith(1);
    expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl'])).code).toBe(0);
    const lines = readFileSync(path.join(cwd, 'story.jsonl'), 'utf8').split('\n').filter(Boolean);
    // A scene line the schema refuses, past the header: the store refuses the whole file.
    const broken = [...lines];
    const sceneAt = broken.findIndex((line) => line.includes('"kind":"scene"'));
    broken[sceneAt] = broken[sceneAt]!.replace(/"index":\d+/, '"index":-1');
    writeFileSync(path.join(cwd, 'broken.jsonl'), `${broken.join('\n')}\n`);
    // Into an existing project (a new one would check the whole file before it is made).
    const other = await storyloom(cwd, ['init', '--data', 'other', '--story', 'another']);
    expect(other.code).toBe(0);
    const refused = await storyloom(cwd, ['import', 'broken.jsonl', '--data', 'other']);
    expect(refused.code).toBe(1);
    const pending = projectPaths(path.join(cwd, 'other')).pendingOf(STORY);
    expect(() => readFileSync(pending)).toThrow();
  });
});

describe('an import cut short before its story went in', () => {
  it('leaves a record that an init of the same story id drops', async () => {
    const cwd = workspace();
    // The import's project and record exist, but the kill came before the story did.
    const data = path.join(cwd, 'copy');
    const copy = await openProject(data, { formatVersion: 1, storyId: STORY, dimensions: 1536 });
    markBuildPending(copy.paths, STORY, { kind: 'import', from: STORY });
    copy.close();
    const init = await storyloom(cwd, ['init', '--data', 'copy']);
    expect(init.stderr).toBe('');
    expect(init.code).toBe(0);
    expect(await statusOf(cwd, data)).toMatchObject({ scenes: 0, unfinishedBuild: null });
    const run = await storyloom(cwd, ['run', '--data', 'copy', '--episodes', '1', '--no-images']);
    expect(run.stdout).not.toContain('Finishing the import');
  });

  it("of another story than the project's: status and run say to run the same import again, which then works", async () => {
    const { cwd } = await storyWith(2);
    expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl'])).code).toBe(0);
    // Renamed in the file, so the story is not the one "init" would make (as for any story but the demo's).
    const text = readFileSync(path.join(cwd, 'story.jsonl'), 'utf8').replaceAll(`"${STORY}"`, '"saga"');
    writeFileSync(path.join(cwd, 'saga.jsonl'), text);
    const copy = await openProject(path.join(cwd, 'copy'), { formatVersion: 1, storyId: 'saga', dimensions: 1536 });
    markBuildPending(copy.paths, 'saga', { kind: 'import', from: 'saga' });
    copy.close();
    for (const command of [['status'], ['run', '--episodes', '1']]) {
      const refused = await storyloom(cwd, [...command, '--data', 'copy']);
      expect(refused.stderr, command[0]).toBe(
        `storyloom: the import of "saga" into ${path.join(cwd, 'copy')} was cut short before its story went in: run the same import again ("npm run storyloom -- import <file> --data <this folder>")\n`,
      );
      expect(refused.code, command[0]).toBe(1);
    }
    const again = await storyloom(cwd, ['import', 'saga.jsonl', '--data', 'copy']);
    expect(again.stderr).toBe('');
    expect(again.stdout).toContain('Imported saga: 2 scenes');
    expect(await statusOf(cwd, 'copy', 'saga')).toMatchObject({ scenes: 2, unfinishedBuild: null });
  });
});

/**
 * Partial files beside `target` as writers leave them: `stale`, of a process of this machine that no longer runs
 * (`dead`); `live`, of one that runs (this test's parent); `elsewhere`, written just now by an older storyloom (named by
 * its pid alone) and by a process on another machine or in another container, whose pids say nothing here; `old`, of
 * another machine and untouched for two days.
 */
function partialsBeside(target: string, dead: number) {
  // The name this process would give, with another pid: the scope is this machine's.
  const ours = partialFileFor(target);
  const withPid = (pid: number) => ours.replace(`-${process.pid}-`, `-${pid}-`);
  const stale = withPid(dead);
  const live = withPid(process.ppid);
  const elsewhere = [`${target}.partial-${dead}`, `${target}.partial-0123456789ab-${dead}-00c0ffee`];
  const old = `${target}.partial-0123456789ab-${dead + 1}-00c0ffee`;
  for (const file of [stale, live, ...elsewhere, old]) writeFileSync(file, '{"kind":');
  const twoDaysAgo = new Date(Date.now() - 2 * 24 * 60 * 60 * 1000);
  utimesSync(old, twoDaysAgo, twoDaysAgo);
  return { stale, live, elsewhere, old };
}

/** The copies of a pipe an import is making, or left, in a project folder. */
const importCopies = (folder: string) =>
  existsSync(folder)
    ? readdirSync(folder)
        .filter((name) => name.startsWith('.import-copy'))
        .sort()
    : [];

/** A project with a story of one scene, exported: its folder, and the export's text. */
async function exportedStory(): Promise<{ cwd: string; text: Buffer }> {
  const { cwd } = await storyWith(1);
  expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl'])).code).toBe(0);
  return { cwd, text: readFileSync(path.join(cwd, 'story.jsonl')) };
}

/** How much of the export a slow producer writes before it waits. */
const FIRST_PART = 200;

/**
 * A named pipe `name` in `cwd` whose producer has written the first part of `text` and waits, as a slow network
 * copy does: an import of it is copying once its copy holds that part. `finish` writes the rest and ends the pipe.
 */
function slowPipe(cwd: string, name: string, text: Buffer): { fifo: string; finish(): void } {
  const fifo = path.join(cwd, name);
  expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
  const producer = processes.producerOf(fifo);
  producer.write(text.subarray(0, FIRST_PART));
  return { fifo, finish: () => producer.end(text.subarray(FIRST_PART)) };
}

/** The one copy an import into `folder` is making, once it holds the first part of its pipe. */
function copyUnderWay(folder: string): Promise<string> {
  return vi.waitFor(
    () => {
      const copies = importCopies(folder);
      expect(copies).toHaveLength(1);
      expect(statSync(path.join(folder, copies[0]!)).size).toBe(FIRST_PART);
      return copies[0]!;
    },
    { timeout: 20_000, interval: 20 },
  );
}

// Skipped where there is no mkfifo to make a named pipe with.
describe.skipIf(!hasMkfifo)('an import from a pipe cut short while it copies (needs mkfifo)', () => {
  it('Ctrl-C or a kill removes the folder it made to hold the copy, and keeps a folder it did not make', async () => {
    const { cwd, text } = await exportedStory();
    const made = path.join(cwd, 'copy');
    const mine = path.join(cwd, 'mine');
    mkdirSync(mine);
    for (const [folder, signal] of [
      [made, 'SIGINT'],
      [mine, 'SIGTERM'],
    ] as const) {
      const { fifo } = slowPipe(cwd, `${signal}.fifo`, text);
      const importing = processes.storyloom(['import', fifo, '--data', folder]);
      await copyUnderWay(folder);
      importing.child.kill(signal);
      const ended = await importing.done;
      expect(ended.signal, 'stopped by the signal, as the signal would').toBe(signal);
      expect(existsSync(folder) ? readdirSync(folder) : 'no folder', signal).toEqual(
        folder === made ? 'no folder' : [],
      );
    }
  }, 60_000);

  it('the next import removes the copy of one killed while it copied, and leaves a copy made on another machine or in another container alone', async () => {
    const { cwd, text } = await exportedStory();
    const data = path.join(cwd, 'copy');
    // An import killed outright while it copies (no handler runs) leaves its copy.
    const killed = slowPipe(cwd, 'killed.fifo', text);
    const importing = processes.storyloom(['import', killed.fifo, '--data', data]);
    const left = await copyUnderWay(data);
    importing.child.kill('SIGKILL');
    expect((await importing.done).signal).toBe('SIGKILL');
    expect(importCopies(data)).toEqual([left]);
    // Copies of imports elsewhere on a shared folder, whose pids (no process has them here) say nothing here: one
    // named by an older storyloom (by its pid alone), one by another machine or container, being written now...
    const elsewhere = ['.import-copy.partial-4194999', '.import-copy.partial-0123456789ab-4194999-00c0ffee'];
    for (const name of elsewhere) writeFileSync(path.join(data, name), '{"kind":"storyloom-export"');
    // ...and one that nothing has written for two days: its import is gone, wherever it ran.
    const abandoned = path.join(data, '.import-copy.partial-0123456789ab-4194998-00c0ffee');
    writeFileSync(abandoned, '{"kind":"storyloom-export"');
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 60 * 60 * 1000);
    utimesSync(abandoned, twoDaysAgo, twoDaysAgo);

    const whole = slowPipe(cwd, 'whole.fifo', text);
    whole.finish();
    const imported = await storyloom(cwd, ['import', whole.fifo, '--data', data]);
    expect(imported.stderr).toBe('');
    expect(imported.stdout).toContain(`Imported ${STORY}: 1 scenes into a new project`);
    expect(importCopies(data)).toEqual(elsewhere.sort());
  }, 60_000);

  it('is refused in one line when another command removes its copy before it is read', async () => {
    const { cwd, text } = await exportedStory();
    const data = path.join(cwd, 'copy');
    const pipe = slowPipe(cwd, 'story.fifo', text);
    const importing = storyloom(cwd, ['import', pipe.fifo, '--data', data]);
    rmSync(path.join(data, await copyUnderWay(data)));
    pipe.finish();
    const refused = await importing;
    expect(refused.stderr).toBe(
      `storyloom: the copy of ${pipe.fifo} this import made in ${data} was removed by another command before it was read: run the import again\n`,
    );
    expect(refused.code).toBe(1);
    expect(existsSync(data), 'the folder made for the copy is gone').toBe(false);
  }, 60_000);
});

describe.skipIf(!hasMkfifo)('an import from a pipe refused in a folder it made (needs mkfifo)', () => {
  it('leaves the copy another import is making in the same folder, and the folder with it', async () => {
    const { cwd, text } = await exportedStory();
    const lines = text.toString('utf8').split('\n');
    const sceneLine = lines.findIndex((line) => line.includes('"kind":"scene"'));
    expect(sceneLine).toBeGreaterThan(0);
    // A scene the schema refuses: the import is refused after the project is made, before the story goes in.
    const damaged = lines.map((line, index) =>
      index === sceneLine ? line.replace(/"text":"[^"]*"/, '"text":7') : line,
    );
    expect(damaged[sceneLine]).not.toBe(lines[sceneLine]);
    const cases = {
      'not an export': Buffer.from(`${'x'.repeat(FIRST_PART)}\n`),
      'a scene the schema refuses': Buffer.from(damaged.join('\n')),
    };
    for (const [label, content] of Object.entries(cases)) {
      const data = path.join(cwd, label.replaceAll(' ', '-'));
      const pipe = slowPipe(cwd, `${label.replaceAll(' ', '-')}.fifo`, content);
      const importing = storyloom(cwd, ['import', pipe.fifo, '--data', data]);
      await copyUnderWay(data);
      // Another import into the same new folder, on another machine, copying its pipe meanwhile.
      const other = '.import-copy.partial-0123456789ab-4194999-00c0ffee';
      writeFileSync(path.join(data, other), '{"kind":"storyloom-export"');
      pipe.finish();
      const refused = await importing;
      expect(refused.code, label).toBe(1);
      expect(refused.stderr, label).not.toBe('');
      expect(readdirSync(data), label).toEqual([other]);
    }
  }, 60_000);
});

describe('a fork cut short before its story went in', () => {
  it('status of the fork says to run the same fork again, and that command works', async () => {
    const { cwd, data } = await storyWith(3);
    markBuildPending(projectPaths(data), 'branch', { kind: 'fork', from: STORY, at: 2 });
    const refused = await storyloom(cwd, ['status', '--data', 'proj', '--story', 'branch']);
    const again = `fork --story ${STORY} --at 2 --as branch --data <this folder>`;
    expect(refused.stderr).toBe(
      `storyloom: the fork of "${STORY}" into "branch" in ${data} was cut short before its story went in: run the same fork again ("npm run storyloom -- ${again}")\n`,
    );
    expect(refused.code).toBe(1);
    const forked = await storyloom(cwd, again.replace('<this folder>', 'proj').split(' '));
    expect(forked.stderr).toBe('');
    expect(forked.stdout).toContain(`Forked ${STORY} after scene 2 into branch (2 scenes)`);
  });
});

describe('a fork cut short after its story went in', () => {
  it('is finished by the same fork again: every scene in its memory and site', async () => {
    const { cwd, data } = await storyWith(3);
    const project = await openProject(data);
    try {
      // What `fork --at 3 --as branch` has done when a kill lands right after the new story went in.
      markBuildPending(project.paths, 'branch', { kind: 'fork', from: STORY });
      await project.store.fork(STORY, 2, 'branch');
    } finally {
      project.close();
    }
    expect((await statusOf(cwd, data, 'branch')).unfinishedBuild).toBe('fork');
    // Another --at is another fork: refused, not taken for this one (a record without its --at has the fork's scenes).
    const other = await storyloom(cwd, ['fork', '--data', 'proj', '--at', '1', '--as', 'branch']);
    expect(other.stderr).toBe(
      `storyloom: the fork of ${STORY} into branch that was cut short was at --at 3, not 1: run it again with --at 3 to finish it, or fork into another --as\n`,
    );
    expect(other.code).toBe(1);
    expect((await statusOf(cwd, data, 'branch')).unfinishedBuild).toBe('fork');
    const again = await storyloom(cwd, ['fork', '--data', 'proj', '--at', '3', '--as', 'branch']);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`Finished the fork of ${STORY} into branch (3 scenes)`);
    expect(scenePages(data, 'branch')).toHaveLength(3);
    expect(await statusOf(cwd, data, 'branch')).toMatchObject({ unfinishedSteps: [], unfinishedBuild: null });
    // A finished fork is not finished again: the id is taken.
    const taken = await storyloom(cwd, ['fork', '--data', 'proj', '--at', '3', '--as', 'branch']);
    expect(taken.code).toBe(1);
  });

  it('keeps its --at: a fork whose build failed is not finished by a fork at another scene', async () => {
    const { cwd, data } = await storyWith(3);
    // A file where the fork's site goes: the new story goes in, its site cannot be built.
    writeFileSync(path.join(data, 'site', 'branch'), 'not a folder');
    const failed = await storyloom(cwd, ['fork', '--data', 'proj', '--at', '2', '--as', 'branch']);
    expect(failed.code).toBe(1);
    // One line that says the story is in, and how to finish it.
    expect(failed.stderr.trim().split('\n')).toHaveLength(1);
    expect(failed.stderr).toContain('branch is forked from');
    expect(failed.stderr).toContain('Run the same fork again to finish it');
    rmSync(path.join(data, 'site', 'branch'));
    const other = await storyloom(cwd, ['fork', '--data', 'proj', '--at', '3', '--as', 'branch']);
    expect(other.stderr).toContain('was at --at 2, not 3');
    expect(other.code).toBe(1);
    const again = await storyloom(cwd, ['fork', '--data', 'proj', '--at', '2', '--as', 'branch']);
    expect(again.stderr).toBe('');
    expect(again.stdout).toContain(`Finished the fork of ${STORY} into branch (2 scenes)`);
    expect(scenePages(data, 'branch')).toHaveLength(2);
  });
});

describe('an init cut short after its project file', () => {
  it('is finished by the same init again, and a whole project is still refused', async () => {
    const cwd = workspace();
    // What `init --data proj` has done when a kill lands between the project file and the story.
    (await openProject(path.join(cwd, 'proj'), { formatVersion: 1, storyId: STORY, dimensions: 1536 })).close();
    const project = await openProject(path.join(cwd, 'proj'));
    expect(await project.store.exists(STORY)).toBe(false);
    project.close();
    const again = await storyloom(cwd, ['init', '--data', 'proj']);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect((await statusOf(cwd, 'proj')).scenes).toBe(0);
    const twice = await storyloom(cwd, ['init', '--data', 'proj']);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toContain('already holds a storyloom project');
    // Another story id is not this project's unfinished init.
    const other = await storyloom(cwd, ['init', '--data', 'proj', '--story', 'another']);
    expect(other.code).toBe(1);
  });
});

describe('two runs on one project', () => {
  it('a run that finds the next scene written by another run goes on, and counts only its own', async () => {
    const { cwd, data } = await storyWith(1);
    // Another `storyloom run` commits the next scene while this one writes its own, and is still on its steps.
    beforeGenerate.hook = async () => {
      const other = await openProject(data);
      try {
        const state = await other.store.load(STORY);
        const scene = makeNextScene(state, { id: 'scene-by-the-other-run' });
        await other.store.commitScene(STORY, {
          expectedVersion: state.version,
          scene,
          nextState: makeNextState(state, scene),
          consumedInfluenceIds: [],
        });
      } finally {
        other.close();
      }
    };
    const run = await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '1', '--no-images']);
    expect(beforeGenerate.hook, 'the other run committed during this one').toBeUndefined();
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // Scene 1 and the other run's scene 2, then this run's own scene 3.
    expect((await statusOf(cwd, data)).scenes).toBe(3);
  });
});

describe('slips that cost nothing', () => {
  it('an import or a fork onto a story the project holds is refused, and leaves that story as it was', async () => {
    const { cwd, data } = await storyWith(2);
    const before = await statusOf(cwd, data);
    // Another story under the same id, at the same version: another project's, written with another seed.
    expect((await storyloom(cwd, ['init', '--data', 'other'])).code).toBe(0);
    const other = await storyloom(cwd, ['run', '--data', 'other', '--episodes', '2', '--no-images', '--seed', '7']);
    expect(other.code).toBe(0);
    expect((await storyloom(cwd, ['export', '--data', 'other', '--out', 'other.jsonl'])).code).toBe(0);
    const imported = await storyloom(cwd, ['import', 'other.jsonl', '--data', data]);
    expect(imported.code).toBe(1);
    expect(imported.stderr).toMatch(/already exists/);
    expect(await statusOf(cwd, data)).toEqual(before);

    expect((await storyloom(cwd, ['fork', '--data', data, '--at', '1', '--as', 'branch'])).code).toBe(0);
    const branch = await statusOf(cwd, data, 'branch');
    const again = await storyloom(cwd, ['fork', '--data', data, '--at', '2', '--as', 'branch']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already exists/);
    expect(await statusOf(cwd, data, 'branch')).toEqual(branch);
  });

  it('an export onto the project’s own files is refused, and the project is untouched', async () => {
    const { cwd } = await storyWith(1);
    for (const own of ['story.db', 'story.db-wal', 'storyloom.json']) {
      const refused = await storyloom(cwd, ['export', '--data', 'proj', '--out', path.join('proj', own)]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('a file of the project itself');
    }
    expect((await statusOf(cwd, 'proj')).scenes).toBe(1);
  });

  it('an export removes what an export of the same file killed half-way left beside it, and leaves what a running export writes', async () => {
    const { cwd } = await storyWith(1);
    const target = path.join(cwd, 'story.jsonl');
    // A pid no process can have: above the largest Linux allows (2^22 = 4194304) and macOS (99998).
    const dead = 4_194_999;
    const { stale, live, elsewhere, old } = partialsBeside(target, dead);
    expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl'])).code).toBe(0);
    expect(existsSync(stale), 'the partial file of a process of this machine that no longer runs').toBe(false);
    expect(existsSync(old), 'a partial file nothing has written for two days').toBe(false);
    expect(
      readdirSync(cwd)
        .filter((name) => name.startsWith('story.jsonl'))
        .sort(),
    ).toEqual(['story.jsonl', ...[live, ...elsewhere].map((file) => path.basename(file))].sort());
  });

  it('a pending-build record removes what a record killed before its rename left beside it, and leaves what a running command writes', async () => {
    const { data } = await storyWith(1);
    const paths = projectPaths(data);
    const record = paths.pendingOf('branch');
    mkdirSync(path.dirname(record), { recursive: true });
    const { live, elsewhere } = partialsBeside(record, 4_194_999);
    markBuildPending(paths, 'branch', { kind: 'fork', from: STORY });
    expect(readdirSync(path.dirname(record)).sort()).toEqual(
      [record, live, ...elsewhere].map((file) => path.basename(file)).sort(),
    );
  });

  it('a bible file that holds no JSON object is refused in one line', async () => {
    const cwd = workspace();
    for (const content of ['null', '42', '"a bible"']) {
      writeFileSync(path.join(cwd, 'bible.json'), `${content}\n`);
      const init = await storyloom(cwd, ['init', '--data', 'proj', '--bible', 'bible.json']);
      expect(init.code).toBe(1);
      expect(init.stderr.trim().split('\n')).toHaveLength(1);
      expect(init.stderr).toContain('must be a JSON object');
    }
  });

  it('--version prints the package version', async () => {
    const manifest = JSON.parse(readFileSync(path.join(import.meta.dirname, '..', 'package.json'), 'utf8'));
    const version = await storyloom(workspace(), ['--version']);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe(manifest.version);
  });
});
