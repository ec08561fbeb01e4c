/**
 * Where the `storyloom` command writes, run as a user runs it: an export onto a named pipe, a device or /dev/stdout,
 * a run whose reader closes early, and the commands it prints for the user to paste into a shell.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createProgram } from '../src/cli/program.js';
import { childProcesses, storyloom, temporaryFolders } from './fixtures/cli.js';

const repositoryRoot = fileURLToPath(new URL('../', import.meta.url));
const cliEntry = path.join(repositoryRoot, 'src/cli/index.ts');
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const hasMkfifo = spawnSync('mkfifo', ['--version'], { stdio: 'ignore' }).status === 0;

const workspace = temporaryFolders('storyloom-cli-output-');
const processes = childProcesses();
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

/** A word quoted for sh. */
const quoted = (value: string) => `'${value.replace(/'/g, `'\\''`)}'`;
/** The command as a shell runs it (`npm run storyloom -- ...` is `tsx src/cli/index.ts ...`). */
const cli = `${quoted(process.execPath)} --import tsx ${quoted(cliEntry)}`;

/** A project with a small story, written offline. */
async function storyWith(episodes: number): Promise<{ cwd: string; data: string }> {
  const cwd = workspace();
  expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
  if (episodes > 0) {
    const run = await storyloom(cwd, ['run', '--data', 'proj', '--episodes', String(episodes), '--no-images']);
    expect(run.code).toBe(0);
  }
  return { cwd, data: path.join(cwd, 'proj') };
}

/** How a shell splits a printed command into words. */
function shellWords(command: string): string[] {
  return spawnSync('sh', ['-c', `printf '%s\\n' ${command}`], { encoding: 'utf8' })
    .stdout.trim()
    .split('\n');
}

describe('storyloom export --out onto what is not a regular file', () => {
  // Skipped where there is no mkfifo to make a named pipe with.
  it.skipIf(!hasMkfifo)('writes into a named pipe and leaves it a pipe (needs mkfifo)', async () => {
    const { cwd, data } = await storyWith(2);
    const fifo = path.join(cwd, 'story.fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    // A reader waits on the pipe, as `storyloom export --out p & gzip < p` would.
    const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(reader);
    let received = '';
    reader.stdout!.on('data', (chunk: Buffer) => {
      received += chunk.toString();
    });
    const readerDone = new Promise<void>((resolve) => reader.on('close', () => resolve()));
    const exported = await storyloom(cwd, ['export', '--data', data, '--out', fifo]);
    expect(exported.stderr).toBe(`Exported lighthouse-keepers to ${fifo}\n`);
    expect(exported.code).toBe(0);
    await readerDone;
    expect(statSync(fifo).isFIFO(), 'still a named pipe').toBe(true);
    const lines = received.trim().split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({ kind: 'storyloom-export', storyId: 'lighthouse-keepers' });
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ kind: 'end' });
  });

  it('writes the export to standard output when --out is /dev/stdout', async () => {
    const { data } = await storyWith(1);
    const shell = spawnSync('sh', ['-c', `${cli} export --data ${quoted(data)} --out /dev/stdout | cat`], {
      cwd: repositoryRoot,
      encoding: 'utf8',
    });
    expect(shell.stderr).toBe('Exported lighthouse-keepers to /dev/stdout\n');
    expect(shell.status).toBe(0);
    const lines = shell.stdout.trim().split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({ kind: 'storyloom-export' });
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ kind: 'end' });
  });

  // Only root can make a device node (and only as root would a rename replace the real /dev/null).
  it.skipIf(!isRoot)('leaves a character device (as /dev/null) in place (needs root)', async () => {
    const { cwd, data } = await storyWith(1);
    // The same device as /dev/null (1, 3), made in the temporary folder so that the real one is never at risk.
    const device = path.join(cwd, 'null-device');
    expect(spawnSync('mknod', [device, 'c', '1', '3']).status).toBe(0);
    const exported = await storyloom(cwd, ['export', '--data', data, '--out', device]);
    expect(exported.code).toBe(0);
    expect(statSync(device).isCharacterDevice(), 'still a character device, not a regular file').toBe(true);
  });
});

/** What an import left in a project folder of the copy it makes of a pipe. */
const importCopies = (folder: string) => readdirSync(folder).filter((name) => name.startsWith('.import-copy'));

describe('storyloom import from what is not a regular file', () => {
  it('"storyloom export | storyloom import /dev/stdin" copies the story through a pipe, and leaves no copy behind', async () => {
    const { cwd, data } = await storyWith(2);
    const copy = path.join(cwd, 'copy');
    const piped = spawnSync(
      'sh',
      ['-c', `${cli} export --data ${quoted(data)} | ${cli} import /dev/stdin --data ${quoted(copy)}`],
      { cwd: repositoryRoot, encoding: 'utf8' },
    );
    expect(piped.stderr).toBe('');
    expect(piped.stdout).toBe(`Imported lighthouse-keepers: 2 scenes into a new project in ${copy}\n`);
    expect(piped.status).toBe(0);
    expect(importCopies(copy)).toEqual([]);
    const status = JSON.parse((await storyloom(cwd, ['status', '--data', copy, '--json'])).stdout);
    expect(status).toMatchObject({ scenes: 2, unfinishedSteps: [], unfinishedBuild: null });
    const pages = readdirSync(path.join(copy, 'site', 'lighthouse-keepers', 'scenes'));
    expect(pages.filter((name) => name.endsWith('.html'))).toHaveLength(2);
    // Piped text that is no export: one line, and the folder made to hold its copy is gone.
    const other = path.join(cwd, 'other');
    const foreign = spawnSync('sh', ['-c', `echo hello | ${cli} import /dev/stdin --data ${quoted(other)}`], {
      cwd: repositoryRoot,
      encoding: 'utf8',
    });
    expect(foreign.stderr).toBe('storyloom: /dev/stdin is not a storyloom export\n');
    expect(foreign.status).toBe(1);
    expect(existsSync(other)).toBe(false);
  }, 60_000);

  it('reads /dev/stdin, /dev/fd/0 and /proc/self/fd/0 when they are the pipe a Node.js parent gives (a socket pair)', async () => {
    const { cwd } = await storyWith(1);
    expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl'])).code).toBe(0);
    const text = readFileSync(path.join(cwd, 'story.jsonl'));
    // Linux names the process's own descriptors under /proc/self/fd too.
    for (const name of ['/dev/stdin', '/dev/fd/0', ...(existsSync('/proc/self/fd') ? ['/proc/self/fd/0'] : [])]) {
      const copy = path.join(cwd, `copy${name.replaceAll('/', '-')}`);
      const importing = processes.storyloom(['import', name, '--data', copy], 'pipe');
      importing.child.stdin!.end(text);
      const ended = await importing.done;
      expect(ended.stderr, name).toBe('');
      expect(ended.stdout, name).toBe(`Imported lighthouse-keepers: 1 scenes into a new project in ${copy}\n`);
      expect(ended.code, name).toBe(0);
      expect(importCopies(copy), name).toEqual([]);
    }
  }, 60_000);

  it.skipIf(!hasMkfifo)(
    'imports a gzip-compressed export from a named pipe, and removes its copy (needs mkfifo)',
    async () => {
      const { cwd } = await storyWith(2);
      expect((await storyloom(cwd, ['export', '--data', 'proj', '--out', 'story.jsonl.gz'])).code).toBe(0);
      const fifo = path.join(cwd, 'story.fifo');
      expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
      /** Imports into `copy` what a writer of the pipe gives it, as `cat <what> > story.fifo & import story.fifo`. */
      const importThroughPipe = (what: string) => {
        children.push(spawn('sh', ['-c', `${what} > story.fifo`], { cwd, stdio: 'ignore' }));
        return storyloom(cwd, ['import', fifo, '--data', 'copy']);
      };
      const imported = await importThroughPipe('cat story.jsonl.gz');
      expect(imported.stderr).toBe('');
      expect(imported.stdout).toContain('Imported lighthouse-keepers: 2 scenes into a new project');
      const copy = path.join(cwd, 'copy');
      expect(importCopies(copy)).toEqual([]);
      // A stream cut short is refused in one line, and its copy goes with it.
      const cut = await importThroughPipe('head -c 100 story.jsonl.gz');
      expect(cut.stderr).toMatch(/^storyloom: .*story\.fifo is a damaged or truncated gzip file .*\n$/);
      expect(cut.code).toBe(1);
      expect(importCopies(copy)).toEqual([]);
      // What an import killed while it copied left, untouched for two days, is removed by the next one.
      const abandoned = path.join(copy, '.import-copy.partial-4194999');
      writeFileSync(abandoned, '{"kind":"storyloom-export"');
      const twoDaysAgo = new Date(Date.now() - 2 * 24 * 60 * 60 * 1000);
      utimesSync(abandoned, twoDaysAgo, twoDaysAgo);
      const again = await importThroughPipe('cat story.jsonl.gz');
      expect(again.stdout).toContain('lighthouse-keepers was imported before (2 scenes)');
      expect(again.code).toBe(0);
      expect(importCopies(copy)).toEqual([]);
    },
  );
});

describe('storyloom run whose reader closes early', () => {
  it('"run | head -n 1" finishes the episode under way, then stops with status 141', async () => {
    const { data } = await storyWith(0);
    const shell = spawnSync(
      'bash',
      ['-c', `${cli} run --data ${quoted(data)} --episodes 50 --no-images | head -n 1; exit \${PIPESTATUS[0]}`],
      { cwd: repositoryRoot, encoding: 'utf8' },
    );
    expect(shell.stdout).toMatch(/^\[1\] .+ \(created\)\n$/);
    expect(shell.stderr).toBe('');
    expect(shell.status, 'stopped as a tool killed by SIGPIPE would').toBe(141);
    const status = JSON.parse((await storyloom(repositoryRoot, ['status', '--data', data, '--json'])).stdout);
    // It stopped between two episodes: the last one it wrote is whole, steps and all.
    expect(status.unfinishedSteps).toEqual([]);
    expect(status.scenes).toBeGreaterThanOrEqual(1);
    expect(status.scenes).toBeLessThan(50);
  }, 60_000);
});

describe('storyloom run whose reader closes right after the first line', () => {
  it.each([
    ['stderr a pipe too', false],
    ['a progress bar on a terminal stderr', true],
  ])(
    'stops after the episode whose line found the reader gone, not one later (%s)',
    async (_, terminal) => {
      const { cwd, data } = await storyWith(0);
      // A pipe whose reader read one line and left: every later write fails with EPIPE, reported as a stream reports
      // it (after the write call has returned), and the bin's handler turns that into the closed-output signal.
      const stdoutClosed = new AbortController();
      const lines: string[] = [];
      const stdout = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          if (lines.length >= 1) {
            callback(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
            return;
          }
          lines.push(chunk.toString());
          callback();
        },
      });
      stdout.on('error', (error: NodeJS.ErrnoException) => {
        if (error.code === 'EPIPE') stdoutClosed.abort();
      });
      // On a terminal, stderr draws the bar; the pipe still gets a line per episode, which is how the run learns.
      const stderr = Object.assign(new Writable({ write: (_chunk, _encoding, callback) => callback() }), {
        isTTY: terminal,
        columns: 80,
      });
      const program = createProgram({ stdout, stderr, env: {}, cwd, stdoutClosed: stdoutClosed.signal });
      expect(await program.run(['run', '--data', data, '--episodes', '6', '--no-images'])).toBe(141);
      expect(lines).toEqual([expect.stringMatching(/^\[1\] .+ \(created\)\n$/)]);
      const status = JSON.parse((await storyloom(cwd, ['status', '--data', data, '--json'])).stdout);
      // Episode 2's line was the first the reader did not take: episode 2 is whole, and no third was begun.
      expect(status.scenes).toBe(2);
      expect(status.unfinishedSteps).toEqual([]);
    },
    60_000,
  );
});

describe('commands the storyloom command prints for the user to run', () => {
  it('quotes a --data folder that holds a space or a quote in the hints of init and fork', async () => {
    const cwd = workspace();
    const data = path.join(cwd, "Mira's stories");
    const init = await storyloom(cwd, ['init', '--data', data]);
    expect(init.code).toBe(0);
    const next = /^Next: npm run storyloom -- (.*)$/m.exec(init.stdout)?.[1];
    expect(shellWords(next!)).toEqual(['run', '--episodes', '3', '--data', data]);

    expect((await storyloom(cwd, ['run', '--data', data, '--episodes', '2', '--no-images'])).code).toBe(0);
    const fork = await storyloom(cwd, ['fork', '--data', data, '--at', '1', '--as', 'branch']);
    expect(fork.code).toBe(0);
    const resume = /^Continue it with: npm run storyloom -- (.*)$/m.exec(fork.stdout)?.[1];
    expect(shellWords(resume!)).toEqual(['run', '--story', 'branch', '--data', data]);
  });

  it('demo prints a file URL of its site and a context command, for a folder whose name holds "#" and a space', async () => {
    const cwd = workspace();
    const data = path.join(cwd, 'demo #1');
    const demo = await storyloom(cwd, ['demo', '--data', data, '--episodes', '1']);
    expect(demo.code).toBe(0);
    const url = /Open the site: (\S+)$/m.exec(demo.stdout)?.[1];
    expect(fileURLToPath(url!)).toBe(path.join(data, 'site', 'lighthouse-keepers', 'index.html'));
    expect(readFileSync(fileURLToPath(url!), 'utf8')).toContain('<html');
    const context = /^See the prompt of the next scene: npm run storyloom -- (.*)$/m.exec(demo.stdout)?.[1];
    expect(shellWords(context!)).toEqual(['context', '--data', data]);
  }, 60_000);
});
