/**
 * The `storyloom` command's context and memory commands at their edges, run as a user runs them: a pipe that closes,
 * another command writing the same file, Ctrl-C on a terminal, a damaged row, a missing subcommand.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { synthesizeExport } from '../bench/story-synthesis.js';
import { folderFailureReason, openProject, projectPaths } from '../src/cli/project.js';
import { ValidationError } from '../src/core/errors.js';
import { childProcesses, storyloom, temporaryFolders } from './fixtures/cli.js';

const repositoryRoot = fileURLToPath(new URL('../', import.meta.url));
const cliEntry = path.join(repositoryRoot, 'src/cli/index.ts');

const workspace = temporaryFolders('storyloom-cli-edges-');
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

/** The command as a real process (`npm run storyloom -- ...` is `tsx src/cli/index.ts ...`), run from the repository. */
const processes = childProcesses();
const startCli = (args: string[]) => processes.storyloom(args);

/** A project with a small story, written offline. */
async function storyWith(episodes: number): Promise<{ cwd: string; data: string }> {
  const cwd = workspace();
  expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
  const run = await storyloom(cwd, ['run', '--data', 'proj', '--episodes', String(episodes), '--no-images']);
  expect(run.code).toBe(0);
  return { cwd, data: path.join(cwd, 'proj') };
}

describe('storyloom fork and import as a user runs them', () => {
  it('a fresh fork and a fresh import are complete: status shows no unfinished steps and run writes a new scene', async () => {
    const { cwd, data } = await storyWith(3);
    expect((await storyloom(cwd, ['fork', '--data', data, '--at', '2', '--as', 'branch'])).code).toBe(0);
    const exported = await storyloom(cwd, ['export', '--data', data]);
    expect(exported.code).toBe(0);
    const file = path.join(cwd, 'story.jsonl');
    writeFileSync(file, exported.stdout);
    const copy = path.join(cwd, 'copy');
    expect((await storyloom(cwd, ['import', file, '--data', copy])).code).toBe(0);

    for (const [folder, story] of [
      [data, 'branch'],
      [copy, undefined],
    ] as const) {
      const storyArgs = story ? ['--story', story] : [];
      const status = await storyloom(cwd, ['status', '--data', folder, ...storyArgs, '--json']);
      expect(JSON.parse(status.stdout).unfinishedSteps, `status of ${story ?? 'the import'}`).toEqual([]);
      const run = await storyloom(cwd, ['run', '--data', folder, ...storyArgs, '--episodes', '1']);
      expect(run.code).toBe(0);
      // Nothing was left to finish: the run wrote its scene at once.
      expect(run.stdout).not.toMatch(/\(resumed\)/);
    }
  });
});

describe('storyloom project folders that cannot be made', () => {
  it('a --data that is a file, lies under a file or is a dangling link is refused in one line, exit 1', async () => {
    const cwd = workspace();
    writeFileSync(path.join(cwd, 'a-file'), 'not a folder');
    symlinkSync(path.join(cwd, 'nowhere', 'at-all'), path.join(cwd, 'dangling'));
    for (const [data, reason] of [
      ['a-file', 'a file is in the way: name a folder'],
      ['a-file/sub', 'a file is in the way: name a folder'],
      ['dangling', 'a link in its path points to a place that does not exist'],
    ] as const) {
      const init = await storyloom(cwd, ['init', '--data', data]);
      expect(init.stderr, data).toBe(`storyloom: cannot make the project folder ${path.join(cwd, data)}: ${reason}\n`);
      expect(init.code, data).toBe(1);
    }
  });

  it('says what a failure to make a folder means: read-only, full, over quota, no permission', () => {
    expect(folderFailureReason('EROFS')).toBe('read-only file system');
    expect(folderFailureReason('ENOSPC')).toBe('no space left on the device');
    expect(folderFailureReason('EDQUOT')).toBe('the disk quota is used up');
    expect(folderFailureReason('EACCES')).toBe('permission denied');
    expect(folderFailureReason('ENOENT')).toBe('a link in its path points to a place that does not exist');
  });

  // Mounting a read-only file system needs root (and a system that allows it); elsewhere the case cannot be made.
  const canMountReadOnly = isRoot && spawnSync('mount', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!canMountReadOnly)(
    'a --data on a read-only file system is refused as such (needs root and mount)',
    async (context) => {
      const cwd = workspace();
      const readOnly = path.join(cwd, 'read-only');
      mkdirSync(readOnly);
      if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', readOnly]).status !== 0) {
        context.skip('this system does not let even root mount a file system');
      }
      try {
        for (const data of ['proj', 'nested/proj']) {
          const init = await storyloom(cwd, ['init', '--data', path.join(readOnly, data)]);
          expect(init.stderr, data).toBe(
            `storyloom: cannot make the project folder ${path.join(readOnly, data)}: read-only file system\n`,
          );
          expect(init.code, data).toBe(1);
        }
      } finally {
        spawnSync('umount', [readOnly]);
      }
    },
  );
});

describe('storyloom project files, bible files and flag values', () => {
  it('a misspelled key in storyloom.json is refused by name, not silently ignored', async () => {
    const { cwd, data } = await storyWith(1);
    const file = path.join(data, 'storyloom.json');
    const project = JSON.parse(readFileSync(file, 'utf8'));
    // "autoprune" for "autoPrune": the user believes pruning is on.
    writeFileSync(file, JSON.stringify({ ...project, autoprune: { minAgeScenes: 0 } }));
    const status = await storyloom(cwd, ['status', '--data', 'proj']);
    expect(status.stderr).toBe(
      `storyloom: ${file} is not a storyloom project file (unknown key "autoprune": check the spelling)\n`,
    );
    expect(status.code).toBe(1);
  });

  it('a storyloom.json of a newer format says to upgrade storyloom, in one line, exit 1', async () => {
    const { cwd, data } = await storyWith(1);
    const file = path.join(data, 'storyloom.json');
    const project = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...project, formatVersion: 2, aSettingOfFormat2: true }));
    const status = await storyloom(cwd, ['status', '--data', 'proj']);
    expect(status.stderr).toBe(
      `storyloom: ${file} was written by a newer storyloom (format 2; this version reads 1): upgrade storyloom to open the project\n`,
    );
    expect(status.code).toBe(1);
    // A format that no storyloom writes is still no project file of its.
    for (const formatVersion of [0, 1.5, '2']) {
      writeFileSync(file, JSON.stringify({ ...project, formatVersion }));
      const refused = await storyloom(cwd, ['status', '--data', 'proj']);
      expect(refused.stderr, String(formatVersion)).toContain('is not a storyloom project file (formatVersion');
      expect(refused.code).toBe(1);
    }
  });

  it('init --bible with a whole initial state keeps the story id it names; --story still wins', async () => {
    const cwd = workspace();
    const now = '2025-01-01T00:00:00.000Z';
    const state = {
      storyId: 'moon-market',
      version: 0,
      chapterId: 'chapter-0001',
      chapterIndex: 0,
      sceneId: null,
      sceneCount: 0,
      bible: { title: 'Moon Market', premise: 'A night market on the moon.', genre: 'fantasy', tone: 'gentle' },
      characters: {},
      worldState: {},
      plotThreads: [],
      userInfluenceQueue: [],
      createdAt: now,
      updatedAt: now,
    };
    writeFileSync(path.join(cwd, 'initial-state.json'), JSON.stringify(state));
    const storyOf = (data: string) => JSON.parse(readFileSync(path.join(cwd, data, 'storyloom.json'), 'utf8')).storyId;
    expect((await storyloom(cwd, ['init', '--data', 'a', '--bible', 'initial-state.json'])).code).toBe(0);
    expect(storyOf('a')).toBe('moon-market');
    const named = ['init', '--data', 'b', '--bible', 'initial-state.json', '--story', 'market'];
    expect((await storyloom(cwd, named)).code).toBe(0);
    expect(storyOf('b')).toBe('market');
    // A bible without an id (or with one that is not usable) takes the file's name.
    writeFileSync(path.join(cwd, 'harbour.json'), JSON.stringify({ ...state, storyId: 'not an id!' }));
    expect((await storyloom(cwd, ['init', '--data', 'c', '--bible', 'harbour.json'])).code).toBe(0);
    expect(storyOf('c')).toBe('harbour');

    const help = await storyloom(cwd, ['init', '--help']);
    expect(help.stdout).not.toContain('the project’s story');
    expect(help.stdout.replace(/\s+/g, ' ')).toContain('default: the storyId of a --bible state');
  });

  it('influence add --weight that is empty, blank or not a decimal number is a usage error, exit 2', async () => {
    const { cwd } = await storyWith(1);
    for (const weight of ['', ' ', '0x10', '1e', 'Infinity', '-1']) {
      const add = await storyloom(cwd, ['influence', 'add', '--data', 'proj', '--choice', 'x', '--weight', weight]);
      expect(add.stderr, JSON.stringify(weight)).toContain('--weight must be a number of 0 or more');
      expect(add.code, JSON.stringify(weight)).toBe(2);
    }
    for (const weight of ['0', '2.5', '.5', '3e2']) {
      const add = await storyloom(cwd, ['influence', 'add', '--data', 'proj', '--choice', 'x', '--weight', weight]);
      expect(add.code, weight).toBe(0);
    }
  });
});

describe('storyloom export and import files', () => {
  it('exports gzip-compressed to a .gz name, and imports it as it imports plain JSON lines', async () => {
    const { cwd, data } = await storyWith(6);
    expect((await storyloom(cwd, ['export', '--data', data, '--out', 'story.jsonl'])).code).toBe(0);
    const exported = await storyloom(cwd, ['export', '--data', data, '--out', 'story.jsonl.gz']);
    expect(exported.code).toBe(0);
    const plain = readFileSync(path.join(cwd, 'story.jsonl'));
    const compressed = readFileSync(path.join(cwd, 'story.jsonl.gz'));
    expect([...compressed.subarray(0, 2)]).toEqual([0x1f, 0x8b]);
    expect(gunzipSync(compressed).equals(plain)).toBe(true);
    expect(compressed.length).toBeLessThan(plain.length / 3);

    const imported = await storyloom(cwd, ['import', 'story.jsonl.gz', '--data', 'copy']);
    expect(imported.stderr).toBe('');
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain('6 scenes');
    // What came in is what went out: the copy exports the same story, scene for scene and state for state.
    const again = await storyloom(cwd, ['export', '--data', 'copy']);
    const records = (text: string) =>
      text
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line))
        .filter((record) => record.kind === 'scene' || record.kind === 'snapshot');
    expect(records(again.stdout)).toEqual(records(plain.toString('utf8')));
  });

  it('an import whose site build fails says the story is in; the same import again finishes it', async () => {
    const { cwd, data } = await storyWith(4);
    expect((await storyloom(cwd, ['export', '--data', data, '--out', 'story.jsonl.gz'])).code).toBe(0);
    // A file where the sites folder goes: the story goes in, its site cannot be built.
    const copy = path.join(cwd, 'copy');
    mkdirSync(copy);
    writeFileSync(path.join(copy, 'site'), 'not a folder');
    const failed = await storyloom(cwd, ['import', 'story.jsonl.gz', '--data', 'copy']);
    expect(failed.stderr).toMatch(
      /^storyloom: lighthouse-keepers is imported \(4 scenes\), but building its memory and site failed: .+\. Run the same import again to finish it\n$/,
    );
    expect(failed.code).not.toBe(0);
    expect(existsSync(path.join(copy, 'story.db'))).toBe(true);

    rmSync(path.join(copy, 'site'));
    for (let attempt = 0; attempt < 2; attempt++) {
      const again = await storyloom(cwd, ['import', 'story.jsonl.gz', '--data', 'copy']);
      expect(again.stderr).toBe('');
      expect(again.stdout).toContain(
        'lighthouse-keepers was imported before (4 scenes); its memory and site are built again',
      );
      expect(again.code).toBe(0);
    }
    const status = await storyloom(cwd, ['status', '--data', 'copy', '--json']);
    expect(JSON.parse(status.stdout).unfinishedSteps).toEqual([]);
    const site = path.join(copy, 'site', 'lighthouse-keepers');
    expect(readdirSync(path.join(site, 'scenes')).filter((name) => name.endsWith('.html'))).toHaveLength(4);

    // Once the copy has moved on, the file is an older state of it: refused as before.
    expect((await storyloom(cwd, ['run', '--data', 'copy', '--episodes', '1', '--no-images'])).code).toBe(0);
    const refused = await storyloom(cwd, ['import', 'story.jsonl.gz', '--data', 'copy']);
    expect(refused.stderr).toContain('already exists');
    expect(refused.code).toBe(1);
  });

  it('a truncated or damaged .gz export is refused with a one-line reason, exit 1', async () => {
    const { cwd, data } = await storyWith(2);
    expect((await storyloom(cwd, ['export', '--data', data, '--out', 'story.jsonl.gz'])).code).toBe(0);
    const whole = readFileSync(path.join(cwd, 'story.jsonl.gz'));
    writeFileSync(path.join(cwd, 'cut.gz'), whole.subarray(0, Math.floor(whole.length / 2)));
    // Every line inflates, but the checksum at the end does not match them.
    const damaged = Buffer.from(whole);
    damaged.writeUInt32LE(~damaged.readUInt32LE(damaged.length - 8) >>> 0, damaged.length - 8);
    writeFileSync(path.join(cwd, 'damaged.gz'), damaged);
    for (const file of ['cut.gz', 'damaged.gz']) {
      const imported = await storyloom(cwd, ['import', file, '--data', `into-${file}`]);
      expect(imported.stderr, file).toMatch(/damaged or truncated gzip/);
      expect(imported.stderr, file).not.toContain('unexpected failure');
      expect(imported.code, file).toBe(1);
      // Nothing of it was imported, and the project the command began is gone.
      expect(existsSync(path.join(cwd, `into-${file}`)), file).toBe(false);
    }
    // A sound gzip whose export has no end (refused once the project is open) leaves no project either; a folder
    // that was there before stays as it was.
    const lines = gunzipSync(whole).toString('utf8').trim().split('\n');
    writeFileSync(path.join(cwd, 'half.jsonl.gz'), gzipSync(`${lines.slice(0, -1).join('\n')}\n`));
    mkdirSync(path.join(cwd, 'kept'));
    writeFileSync(path.join(cwd, 'kept', 'notes.txt'), 'mine\n');
    for (const folder of ['new-folder', 'kept']) {
      const imported = await storyloom(cwd, ['import', 'half.jsonl.gz', '--data', folder]);
      expect(imported.stderr, folder).toContain('truncated');
      expect(imported.code, folder).toBe(1);
    }
    expect(existsSync(path.join(cwd, 'new-folder'))).toBe(false);
    expect(readdirSync(path.join(cwd, 'kept'))).toEqual(['notes.txt']);
    // A database left without its project file (stories in it) is never removed.
    const orphan = path.join(cwd, 'orphan');
    mkdirSync(orphan);
    writeFileSync(path.join(orphan, 'story.db'), readFileSync(path.join(data, 'story.db')));
    expect((await storyloom(cwd, ['import', 'half.jsonl.gz', '--data', 'orphan'])).code).toBe(1);
    expect(readFileSync(path.join(orphan, 'story.db')).length).toBeGreaterThan(0);
    expect(readdirSync(orphan).filter((name) => name !== 'story.db-wal' && name !== 'story.db-shm')).toEqual([
      'story.db',
    ]);
    expect((await storyloom(cwd, ['import', 'story.jsonl.gz', '--data', 'kept'])).code).toBe(0);
    expect((await storyloom(cwd, ['import', 'story.jsonl.gz', '--data', 'into-cut.gz'])).code).toBe(0);
    const folder = await storyloom(cwd, ['import', 'into-cut.gz', '--data', 'elsewhere']);
    expect(folder.stderr).toBe('storyloom: into-cut.gz is a folder: name an export file\n');
    expect(folder.code).toBe(1);
    // A file that is not an export at all, compressed or not, is told so.
    writeFileSync(path.join(cwd, 'notes.txt'), 'hello world\n');
    writeFileSync(path.join(cwd, 'notes.txt.gz'), gzipSync('hello world\n'));
    for (const file of ['notes.txt', 'notes.txt.gz']) {
      const imported = await storyloom(cwd, ['import', file, '--data', 'elsewhere']);
      expect(imported.stderr, file).toContain(`${file} is not a storyloom export`);
      expect(imported.code, file).toBe(1);
    }
  });

  it('an import the schema refuses leaves nothing in a new folder, and an existing folder as it was', async () => {
    const { cwd, data } = await storyWith(2);
    expect((await storyloom(cwd, ['export', '--data', data, '--out', 'story.jsonl'])).code).toBe(0);
    const lines = readFileSync(path.join(cwd, 'story.jsonl'), 'utf8').trim().split('\n');
    // Valid JSON, end marker and counts intact, one scene the schema refuses.
    // (Its index stays: a scene out of order is refused by the first read, before a project is made.)
    const at = lines.findIndex((line) => line.startsWith('{"kind":"scene"'));
    lines[at] = lines[at]!.replace(/"title":"[^"]*"/, '"title":42');
    writeFileSync(path.join(cwd, 'bad.jsonl'), `${lines.join('\n')}\n`);
    mkdirSync(path.join(cwd, 'kept'));
    writeFileSync(path.join(cwd, 'kept', 'notes.txt'), 'mine\n');
    // A database without its project file (another story in it) was there before: it stays.
    expect((await storyloom(cwd, ['init', '--data', 'other', '--story', 'another'])).code).toBe(0);
    mkdirSync(path.join(cwd, 'orphan'));
    writeFileSync(path.join(cwd, 'orphan', 'story.db'), readFileSync(path.join(cwd, 'other', 'story.db')));
    for (const folder of ['copy', 'kept', 'orphan']) {
      const imported = await storyloom(cwd, ['import', 'bad.jsonl', '--data', folder]);
      expect(imported.code, folder).toBe(1);
      expect(imported.stderr, folder).toMatch(/title/);
    }
    expect(existsSync(path.join(cwd, 'copy'))).toBe(false);
    expect(readdirSync(path.join(cwd, 'kept'))).toEqual(['notes.txt']);
    expect(readdirSync(path.join(cwd, 'orphan')).filter((name) => !/-(wal|shm)$/.test(name))).toEqual(['story.db']);
    // Nothing stands in the way of the sound file (no story under its id made by a hinted "init").
    const again = await storyloom(cwd, ['import', 'story.jsonl', '--data', 'copy']);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
  });

  it('an import without the snapshots of some scenes publishes every scene, each with the nearest state after it', async () => {
    const { cwd, data } = await storyWith(6);
    expect((await storyloom(cwd, ['export', '--data', data, '--out', 'story.jsonl'])).code).toBe(0);
    // The store takes an export that keeps only some snapshots (bench/story-synthesis.ts writes such files). Here:
    // those after scenes 3 and 6, and the one after scene 3 names Mira otherwise, so a page tells which state it used.
    const renamed = 'Mira of the Third Night';
    const lines = readFileSync(path.join(cwd, 'story.jsonl'), 'utf8').trim().split('\n');
    let snapshots = 0;
    const sparse = lines.flatMap((line) => {
      const record = JSON.parse(line);
      if (record.kind === 'snapshot') {
        if (![0, 3, 6].includes(record.state.version)) return [];
        snapshots++;
        if (record.state.version === 3) record.state.characters.mira.name = renamed;
      }
      if (record.kind === 'end') record.counts.snapshots = snapshots;
      return [JSON.stringify(record)];
    });
    writeFileSync(path.join(cwd, 'sparse.jsonl'), `${sparse.join('\n')}\n`);
    const imported = await storyloom(cwd, ['import', 'sparse.jsonl', '--data', 'copy']);
    expect(imported.stderr).toBe('');
    expect(imported.stdout).toContain('Imported lighthouse-keepers: 6 scenes');
    const status = JSON.parse((await storyloom(cwd, ['status', '--data', 'copy', '--json'])).stdout);
    expect(status).toMatchObject({ unfinishedSteps: [], unfinishedBuild: null });
    const scenes = path.join(cwd, 'copy', 'site', 'lighthouse-keepers', 'scenes');
    const pages = readdirSync(scenes)
      .filter((name) => name.endsWith('.html'))
      .sort();
    expect(pages).toHaveLength(6);
    // Mira's name on each page where she is on stage: the state after scene 3 for scenes 1-3, after 6 for 4-6.
    const shown = pages.flatMap((page, index) => {
      const chip = readFileSync(path.join(scenes, page), 'utf8').match(/#character-mira" dir="auto">([^<]+)</);
      return chip ? [[index + 1, chip[1]] as const] : [];
    });
    expect(shown.some(([scene]) => scene < 3)).toBe(true);
    expect(shown.some(([scene]) => scene > 3 && scene < 6)).toBe(true);
    for (const [scene, name] of shown) expect(name, `scene ${scene}`).toBe(scene <= 3 ? renamed : 'Mira Vale');
    // A fork needs the state after its scene: where the import lacks it, a refusal in the command's numbering.
    const fork = await storyloom(cwd, ['fork', '--data', 'copy', '--at', '2', '--as', 'branch']);
    expect(fork.stderr).toBe(
      'storyloom: lighthouse-keepers keeps no state after scene 2 (it was imported without it): fork at another scene\n',
    );
    expect(fork.code).toBe(1);
    expect((await storyloom(cwd, ['fork', '--data', 'copy', '--at', '3', '--as', 'branch'])).code).toBe(0);
  });

  it('a .gz damaged anywhere is refused in one line before anything is read from it, never a crash', async () => {
    const { cwd, data } = await storyWith(6);
    expect((await storyloom(cwd, ['export', '--data', data, '--out', 'story.jsonl.gz'])).code).toBe(0);
    const whole = readFileSync(path.join(cwd, 'story.jsonl.gz'));
    // A flipped byte in the middle inflates to garbage (or fails to inflate) long before the checksum at the end.
    for (const tenth of [2, 5, 8]) {
      const damaged = Buffer.from(whole);
      const at = Math.floor((damaged.length * tenth) / 10);
      damaged[at] = damaged[at]! ^ 0x55;
      writeFileSync(path.join(cwd, `damaged-${tenth}.gz`), damaged);
      const { done } = startCli([
        'import',
        path.join(cwd, `damaged-${tenth}.gz`),
        '--data',
        path.join(cwd, `into-${tenth}`),
      ]);
      const result = await done;
      expect(result.stderr, `byte ${at}`).toMatch(/^storyloom: \S+damaged-\d+\.gz is a damaged or truncated gzip file/);
      expect(result.stderr.trim().split('\n'), `byte ${at}`).toHaveLength(1);
      expect(result.code, `byte ${at}`).toBe(1);
    }
  });

  it('export --out writes through a link and keeps the permissions of the file it replaces', async () => {
    const { cwd, data } = await storyWith(1);
    mkdirSync(path.join(cwd, 'exports'));
    const real = path.join(cwd, 'exports', 'story.jsonl.gz');
    writeFileSync(real, 'an older export');
    chmodSync(real, 0o640);
    symlinkSync(real, path.join(cwd, 'latest.jsonl.gz'));
    const exported = await storyloom(cwd, ['export', '--data', data, '--out', 'latest.jsonl.gz']);
    expect(exported.code).toBe(0);
    expect(lstatSync(path.join(cwd, 'latest.jsonl.gz')).isSymbolicLink()).toBe(true);
    expect(gunzipSync(readFileSync(real)).toString('utf8')).toContain('"kind":"storyloom-export"');
    expect(statSync(real).mode & 0o777).toBe(0o640);
    expect(readdirSync(path.join(cwd, 'exports'))).toEqual(['story.jsonl.gz']);

    // A link to a file not written yet gets it where it points; a link into a missing folder is refused.
    symlinkSync(path.join(cwd, 'exports', 'next.jsonl'), path.join(cwd, 'next.jsonl'));
    expect((await storyloom(cwd, ['export', '--data', data, '--out', 'next.jsonl'])).code).toBe(0);
    expect(readFileSync(path.join(cwd, 'exports', 'next.jsonl'), 'utf8')).toContain('"kind":"storyloom-export"');
    expect(lstatSync(path.join(cwd, 'next.jsonl')).isSymbolicLink()).toBe(true);
    symlinkSync(path.join(cwd, 'missing', 'x.jsonl'), path.join(cwd, 'nowhere.jsonl'));
    const refused = await storyloom(cwd, ['export', '--data', data, '--out', 'nowhere.jsonl']);
    expect(refused.stderr).toBe('storyloom: cannot write nowhere.jsonl: it is a link to a place that does not exist\n');
    expect(refused.code).toBe(1);
  });

  it('export --out into a missing folder or onto a folder is refused in one line naming it, exit 1', async () => {
    const { cwd, data } = await storyWith(1);
    mkdirSync(path.join(cwd, 'a-folder'));
    for (const out of ['missing/story.jsonl.gz', 'a-folder']) {
      const exported = await storyloom(cwd, ['export', '--data', data, '--out', out]);
      expect(exported.stderr, out).toBe(
        `storyloom: cannot write ${out}: ${out === 'a-folder' ? 'it is a folder; name a file' : 'its folder does not exist'}\n`,
      );
      expect(exported.code, out).toBe(1);
    }
  });

  it('Ctrl-C during export --out leaves no partial file behind', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    const project = await openProject(path.join(cwd, 'proj'));
    try {
      await project.store.importStory(synthesizeExport('big', 6000));
    } finally {
      project.close();
    }
    const { child, done } = startCli([
      'export',
      '--data',
      path.join(cwd, 'proj'),
      '--story',
      'big',
      '--out',
      path.join(cwd, 'big.jsonl.gz'),
    ]);
    const partials = () => readdirSync(cwd).filter((name) => name.includes('.partial-'));
    const deadline = Date.now() + 60_000;
    while (partials().length === 0 && child.exitCode === null && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(partials(), 'the export was seen writing its partial file').toHaveLength(1);
    child.kill('SIGINT');
    const result = await done;
    expect(result.signal).toBe('SIGINT');
    expect(readdirSync(cwd).sort()).toEqual(['proj']);
  }, 120_000);

  it('an export that fails part-way leaves no file, and an earlier export under the name untouched', async () => {
    const { cwd, data } = await storyWith(3);
    const target = path.join(cwd, 'story.jsonl');
    writeFileSync(target, 'an earlier export\n');
    const database = new Database(path.join(data, 'story.db'));
    database.exec("UPDATE scenes SET scene = '{' WHERE scene_index = 2");
    database.close();
    for (const out of ['story.jsonl', 'fresh.jsonl.gz']) {
      const exported = await storyloom(cwd, ['export', '--data', data, '--out', out]);
      expect(exported.code, out).toBe(1);
      expect(exported.stderr, out).toMatch(/damaged/);
    }
    expect(readFileSync(target, 'utf8')).toBe('an earlier export\n');
    expect(readdirSync(cwd).sort(), 'no export and no partial file').toEqual(['proj', 'story.jsonl']);
  });
});

describe('storyloom run whose step fails', () => {
  it('exits 1 naming the scene and the step, and the next run finishes that step', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    // A file where the story's site folder goes: publishing the site fails.
    const site = path.join(cwd, 'proj', 'site', 'lighthouse-keepers');
    rmSync(site, { recursive: true, force: true });
    mkdirSync(path.dirname(site), { recursive: true });
    writeFileSync(site, 'in the way\n');
    const failed = await storyloom(cwd, ['run', '--data', 'proj', '--no-images']);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/^storyloom: scene 1 was written but publish:site failed: run again to finish\n$/);

    rmSync(site);
    const again = await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '1', '--no-images']);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect(existsSync(path.join(site, 'index.html'))).toBe(true);
  });
});

describe('storyloom status', () => {
  it('counts the pending influences past the 1,000 a loaded state holds, and says "10000+" past what it counts', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    expect((await storyloom(cwd, ['influence', 'add', '--data', 'proj', '--choice', 'open the door'])).code).toBe(0);
    const lines = (await storyloom(cwd, ['export', '--data', 'proj'])).stdout.trim().split('\n');
    const influence = JSON.parse(lines.find((line) => line.startsWith('{"kind":"influence"'))!);
    /** The story with `count` pending votes, imported into a new project `folder`. */
    const importWith = async (folder: string, count: number) => {
      const votes = Array.from({ length: count }, (_, i) =>
        JSON.stringify({ ...influence, influence: { ...influence.influence, id: `vote-${i}` } }),
      );
      const rest = lines.filter((line) => !line.startsWith('{"kind":"influence"'));
      const end = JSON.parse(rest.pop()!);
      end.counts.influences = count;
      writeFileSync(path.join(cwd, `${folder}.jsonl`), `${[...rest, ...votes, JSON.stringify(end)].join('\n')}\n`);
      expect((await storyloom(cwd, ['import', `${folder}.jsonl`, '--data', folder])).code).toBe(0);
    };
    await importWith('some', 1_001);
    const some = await storyloom(cwd, ['status', '--data', 'some', '--json']);
    expect(JSON.parse(some.stdout)).toMatchObject({ pendingInfluences: 1_001, pendingInfluencesExact: true });
    expect((await storyloom(cwd, ['status', '--data', 'some'])).stdout).toContain('Pending influences: 1001\n');
    await importWith('many', 10_001);
    const many = await storyloom(cwd, ['status', '--data', 'many', '--json']);
    expect(JSON.parse(many.stdout)).toMatchObject({ pendingInfluences: 10_000, pendingInfluencesExact: false });
    expect((await storyloom(cwd, ['status', '--data', 'many'])).stdout).toContain('Pending influences: 10000+\n');
  });
});

describe('storyloom context and memory commands as a user runs them', () => {
  it("memory prune with its default importance drops the offline narrator's quiet scenes once they are summarized", async () => {
    // Chapters of the default story are 8 scenes: 40 episodes close four, each with quiet scenes (importance 0.35).
    const { cwd, data } = await storyWith(40);
    const pruned = await storyloom(cwd, ['memory', 'prune', '--data', data, '--min-age', '0']);
    expect(pruned.code).toBe(0);
    expect(pruned.stdout).toMatch(/^Pruned [1-9]\d* scene vectors from [1-9]\d* summarized chapters/);
  });

  it('a missing subcommand ("storyloom memory", or no command at all) is a usage error, exit 2', async () => {
    const { cwd } = await storyWith(1);
    // A script that builds the subcommand from a variable and gets it empty must not be told "success".
    const memory = await storyloom(cwd, ['memory']);
    expect(memory.stdout).toBe('');
    expect(memory.stderr).toContain('Usage: storyloom memory');
    expect(memory.code).not.toBe(0);
    const bare = await storyloom(cwd, []);
    expect(bare.code).not.toBe(0);
  });

  it('"storyloom context | head" exits quietly when the reader closes early', async () => {
    const { data } = await storyWith(2);
    // The reader goes away before the prompt is printed, as `| head -1` does after its first line.
    const shell = spawnSync(
      'sh',
      [
        '-c',
        `"${process.execPath}" --import tsx "${cliEntry}" context --data "${data}" --query "the lamp" | head -c 0`,
      ],
      { cwd: repositoryRoot, encoding: 'utf8' },
    );
    expect(shell.stderr).not.toMatch(/EPIPE|Unhandled 'error' event|\n\s+at /);
    expect(shell.stderr).toBe('');
  });

  it('"memory reindex" and "context" wait for the write lock while another command writes', async () => {
    const { cwd, data } = await storyWith(3);
    // Another process writes to the same file, as `storyloom run` does between its scenes: short write transactions.
    const writerScript = `
      const Database = require('better-sqlite3');
      const db = new Database(process.argv[1], { timeout: 10000 });
      const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      const touch = db.prepare('UPDATE stories SET version = version');
      process.stdout.write('ready\\n');
      for (;;) { db.transaction(() => { touch.run(); sleep(3); }).immediate(); sleep(2); }
    `;
    const writer = spawn(process.execPath, ['-e', writerScript, path.join(data, 'story.db')], {
      cwd: repositoryRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(writer);
    await new Promise<void>((resolve) => writer.stdout!.once('data', () => resolve()));
    const failures: string[] = [];
    for (let attempt = 0; attempt < 6; attempt++) {
      const reindex = await storyloom(cwd, ['memory', 'reindex', '--data', 'proj']);
      if (reindex.code !== 0) failures.push(`reindex: ${reindex.stderr.trim()}`);
      const context = await storyloom(cwd, ['context', '--data', 'proj', '--query', 'the lamp', '--json']);
      if (context.code !== 0) failures.push(`context: ${context.stderr.trim()}`);
    }
    writer.kill('SIGKILL');
    // The file's busy timeout is 10 s: a write lock held for 3 ms at a time must be waited for, not reported.
    expect(failures).toEqual([]);
  }, 120_000);

  it('"memory reindex" runs alongside "storyloom run" on the same folder', async () => {
    const { data } = await storyWith(20);
    const run = startCli(['run', '--data', data, '--episodes', '10000', '--no-images']);
    // Wait until the run is writing scenes.
    await new Promise<void>((resolve) => run.child.stdout!.once('data', () => resolve()));
    const failures: string[] = [];
    for (let attempt = 0; attempt < 25 && failures.length === 0; attempt++) {
      const reindex = await storyloom(data, ['memory', 'reindex', '--data', '.']);
      if (reindex.code !== 0) failures.push(reindex.stderr.trim());
    }
    run.child.kill('SIGTERM');
    await run.done;
    expect(failures).toEqual([]);
  }, 120_000);

  // `script` (util-linux) gives the command a terminal; without it the case cannot run.
  const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!hasScript)(
    'Ctrl-C during "memory reindex" on a terminal leaves the cursor shown and line wrapping on',
    async () => {
      const { data } = await storyWith(30);
      // `script` gives the command a terminal, so it draws its progress bar; "\x03" on that terminal is Ctrl-C.
      const command = `"${process.execPath}" --import tsx "${cliEntry}" memory reindex --data "${data}"`;
      const child = spawn('script', ['-qfec', command, '/dev/null'], {
        cwd: repositoryRoot,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      children.push(child);
      let screen = '';
      let interrupted = false;
      child.stdout!.on('data', (chunk: Buffer) => {
        screen += chunk.toString('latin1');
        if (!interrupted && screen.includes('reindex [')) {
          interrupted = true;
          child.stdin!.write('\x03');
        }
      });
      const code = await new Promise<number | null>((resolve) => child.on('close', (exitCode) => resolve(exitCode)));
      expect(interrupted).toBe(true);
      expect(code).toBe(130); // Ctrl-C stopped it (128 + SIGINT), as a user expects
      const count = (sequence: string) => screen.split(sequence).length - 1;
      // Whatever the bar turned off, it turned on again: the cursor (?25l / ?25h) and line wrapping (?7l / ?7h).
      expect(count('\x1b[?25h')).toBeGreaterThanOrEqual(count('\x1b[?25l'));
      expect(count('\x1b[?7h')).toBeGreaterThanOrEqual(count('\x1b[?7l'));
    },
    120_000,
  );

  it.each([
    ['memory reindex', "UPDATE scenes SET scene = '{' WHERE scene_index = 1"],
    ['memory reindex', "UPDATE scenes SET scene = '{}' WHERE scene_index = 1"],
    ['context', "UPDATE stories SET state = '{'"],
    ['memory prune', "UPDATE stories SET state = '{'"],
  ])('a damaged row in story.db makes "%s" say the file is damaged, exit 1 (%s)', async (command, damage) => {
    const { cwd, data } = await storyWith(3);
    const database = new Database(path.join(data, 'story.db'));
    database.exec(damage);
    database.close();
    const result = await storyloom(cwd, [...command.split(' '), '--data', 'proj']);
    expect(result.stderr).not.toContain('unexpected failure');
    // Like a damaged vector record: says the file is damaged and what to do.
    expect(result.stderr).toMatch(/damaged|corrupt/i);
    expect(result.code).toBe(1);
  });

  it('--help documents the exit status (0, 1, 2, 70, 141)', async () => {
    const cwd = workspace();
    const help = await storyloom(cwd, ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/exit (status|code)/i);
    expect(help.stdout).toContain('141 "run" stopped after an episode because');
  });
});

describe('storyloom run --generator bedrock', () => {
  it('leaves credentials to the AWS SDK: a default profile in ~/.aws/credentials is enough', async () => {
    const cwd = workspace();
    const home = workspace();
    mkdirSync(path.join(home, '.aws'));
    writeFileSync(
      path.join(home, '.aws', 'credentials'),
      '[default]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = secret\n',
    );
    // Bedrock's front door, as far as this needs it: it records how each request was signed, and serves no model.
    const authorizations: string[] = [];
    const server = createServer((request, response) => {
      authorizations.push(String(request.headers.authorization));
      response.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"no such model"}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const saved = { ...process.env };
    // The command runs in this process, and the SDK's credential chain and base URL read the process environment.
    for (const key of Object.keys(process.env)) if (key.startsWith('AWS_')) delete process.env[key];
    const env = { HOME: home, AWS_REGION: 'us-east-1', ANTHROPIC_BEDROCK_BASE_URL: url };
    Object.assign(process.env, env);
    try {
      expect((await storyloom(cwd, ['init', '--data', 'p'])).code).toBe(0);
      const run = await storyloom(cwd, ['run', '--data', 'p', '--generator', 'bedrock', '--no-images'], env);
      expect(run.stderr).not.toMatch(/needs AWS credentials/);
      expect(run.code).toBe(1);
      // Bedrock was called, signed with the profile's key.
      expect(authorizations.length).toBeGreaterThan(0);
      expect(authorizations[0]).toContain('Credential=AKIDFROMPROFILE/');
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
      await new Promise((resolve) => server.close(resolve));
    }
  }, 60_000);
});

describe('storyloom site folders of ids a file system may confuse', () => {
  it('forks into an id that differs from the original by case alone, where case is ignored (a link stands in for it)', async () => {
    const { cwd, data } = await storyWith(2);
    const sites = path.join(data, 'site');
    const original = path.join(sites, 'lighthouse-keepers');
    const originalPages = readdirSync(path.join(original, 'scenes')).sort();
    // What macOS (APFS, by default) and Windows do: "Lighthouse-keepers" finds the folder "lighthouse-keepers".
    symlinkSync(original, path.join(sites, 'Lighthouse-keepers'));
    const fork = await storyloom(cwd, ['fork', '--data', data, '--at', '1', '--as', 'Lighthouse-keepers']);
    expect(fork.stderr).toBe('');
    expect(fork.code).toBe(0);
    const status = await storyloom(cwd, ['status', '--data', data, '--story', 'Lighthouse-keepers', '--json']);
    const site = path.join(sites, '=lighthouse-keepers=1');
    expect(JSON.parse(status.stdout)).toMatchObject({ site: path.join(site, 'index.html'), unfinishedSteps: [] });
    expect(readdirSync(path.join(site, 'scenes')).filter((name) => name.endsWith('.html'))).toHaveLength(1);
    // The original's site is its own still.
    expect(readdirSync(path.join(original, 'scenes')).sort()).toEqual(originalPages);
    expect(JSON.parse(readFileSync(path.join(original, 'story.json'), 'utf8')).storyId).toBe('lighthouse-keepers');
  });

  it('keeps serving a site folder or a pending record an earlier version named by the id as it is', () => {
    const root = workspace();
    const paths = projectPaths(root);
    mkdirSync(path.join(root, 'site', 'tale'), { recursive: true });
    // Nothing under either name: the new one.
    expect(paths.siteOf('Tale')).toBe(path.join(root, 'site', '=tale=1'));
    expect(paths.siteOf('tale')).toBe(path.join(root, 'site', 'tale'));
    // A folder of the same name in another case only (a case-insensitive file system), or a link to another
    // story's folder, is not this story's.
    symlinkSync(path.join(root, 'site', 'tale'), path.join(root, 'site', 'Tale'));
    expect(paths.siteOf('Tale')).toBe(path.join(root, 'site', '=tale=1'));
    rmSync(path.join(root, 'site', 'Tale'));
    // A folder an earlier version made for "Tale" itself.
    mkdirSync(path.join(root, 'site', 'Tale'));
    expect(paths.siteOf('Tale')).toBe(path.join(root, 'site', 'Tale'));
    // Once the new name is there, it is used.
    mkdirSync(path.join(root, 'site', '=tale=1'));
    expect(paths.siteOf('Tale')).toBe(path.join(root, 'site', '=tale=1'));

    mkdirSync(path.join(root, 'pending'));
    expect(paths.pendingOf('Tale:1')).toBe(path.join(root, 'pending', '=tale~1=1.json'));
    writeFileSync(path.join(root, 'pending', 'Tale%3A1.json'), '{}\n');
    expect(paths.pendingOf('Tale:1')).toBe(path.join(root, 'pending', 'Tale%3A1.json'));
  });

  it('refuses a name that is, on this file system, the folder an earlier version made for another story', () => {
    const root = workspace();
    const paths = projectPaths(root);
    // An earlier version made site/Tale for the story "Tale"; on a case-insensitive file system site/tale is that
    // folder too (emulated by a link): the story "tale" must not publish into it.
    mkdirSync(path.join(root, 'site', 'Tale'), { recursive: true });
    symlinkSync(path.join(root, 'site', 'Tale'), path.join(root, 'site', 'tale'));
    expect(() => paths.siteOf('tale')).toThrow(ValidationError);
    expect(() => paths.siteOf('tale')).toThrow(/site\/Tale, which an earlier storyloom made for another story/);
    // Once that folder is moved away, "tale" has its own.
    rmSync(path.join(root, 'site', 'tale'));
    expect(paths.siteOf('tale')).toBe(path.join(root, 'site', 'tale'));
  });
});

describe('storyloom story text on the terminal', () => {
  it('shows control sequences and bidi overrides of an imported story as escapes; --json keeps them', async () => {
    const { cwd, data } = await storyWith(1);
    const exported = await storyloom(cwd, ['export', '--data', data]);
    expect(exported.code).toBe(0);
    const records = exported.stdout
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line));
    // OSC 0 sets the window's title, CSI 2J clears the screen, and RLO reverses the rest of the line.
    const hostile = 'Keepers\u001b]0;owned\u0007\u001b[2J\u202e';
    const state = records.find((record) => record.kind === 'state').state;
    const edited = exported.stdout.replaceAll(JSON.stringify(state.bible.title), JSON.stringify(hostile));
    expect(edited).not.toBe(exported.stdout);
    writeFileSync(path.join(cwd, 'edited.jsonl'), edited);
    expect((await storyloom(cwd, ['import', 'edited.jsonl', '--data', 'other'])).code).toBe(0);

    const status = await storyloom(cwd, ['status', '--data', 'other']);
    expect(status.code).toBe(0);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the test checks that no control character is printed
    expect(status.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
    expect(status.stdout).toContain('Keepers\\u001b]0;owned\\u0007\\u001b[2J\\u202e (lighthouse-keepers)');
    const json = await storyloom(cwd, ['status', '--data', 'other', '--json']);
    expect(JSON.parse(json.stdout).title).toBe(hostile);

    const context = await storyloom(cwd, ['context', '--data', 'other']);
    expect(context.code).toBe(0);
    expect(context.stdout).toContain('\n');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the test checks that no control character is printed
    expect(context.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
  });

  it("shows control sequences in the text of an imported scene, in the prompt's dynamic part, as escapes", async () => {
    const { cwd, data } = await storyWith(1);
    const exported = await storyloom(cwd, ['export', '--data', data]);
    const scene = exported.stdout
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line))
      .find((record) => record.kind === 'scene').scene;
    // The end of the last scene's text is where the next one picks up: the dynamic part quotes it.
    const hostile = `${scene.text} \u001b[2J\u009b2J\u202e`;
    const edited = exported.stdout.replace(JSON.stringify(scene.text), JSON.stringify(hostile));
    expect(edited).not.toBe(exported.stdout);
    writeFileSync(path.join(cwd, 'edited.jsonl'), edited);
    expect((await storyloom(cwd, ['import', 'edited.jsonl', '--data', 'other'])).code).toBe(0);

    const context = await storyloom(cwd, ['context', '--data', 'other']);
    expect(context.code).toBe(0);
    const dynamic = context.stdout.split('──── dynamic part ────')[1]!;
    expect(dynamic).toContain('\\u001b[2J\\u009b2J\\u202e');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the test checks that no control character is printed
    expect(context.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
  });

  it('shows story text an error quotes from an export file as escapes on stderr', async () => {
    const cwd = workspace();
    // JSON escapes ESC, not C1 controls (CSI is U+009B) nor bidi overrides: the id reaches the message as it is.
    const repeated = `${JSON.stringify({ kind: 'influence', influence: { id: 'v\u009b2J\u202e' } })}\n`;
    const header = `${JSON.stringify({ kind: 'storyloom-export', formatVersion: 1, storyId: 'tale' })}\n`;
    writeFileSync(path.join(cwd, 'hostile.jsonl'), `${header}${repeated}${repeated}`);
    const refused = await storyloom(cwd, ['import', 'hostile.jsonl', '--data', 'copy']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe('storyloom: hostile.jsonl is damaged: it holds influence "v\\u009b2J\\u202e" twice\n');
  });
});
