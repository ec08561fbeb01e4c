/**
 * `storyloom import` of a file no export writes, built small to cost much: one line longer than any export holds, a
 * compressed run of newlines, a short line repeated. Each is refused with one line and exit status 1, and leaves no
 * project behind; a sound export with blank lines and CRLF line ends still goes in.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createGzip } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { storyloom, temporaryFolders } from './fixtures/cli.js';

const repositoryRoot = fileURLToPath(new URL('../', import.meta.url));
const cliEntry = path.join(repositoryRoot, 'src/cli/index.ts');
const workspace = temporaryFolders('storyloom-cli-import-bounds-');

const HEADER = `${JSON.stringify({ kind: 'storyloom-export', formatVersion: 1, storyId: 'tale' })}\n`;
/** A line cap the command takes from an internal variable, so that a test reaches it with a small file. */
const LOWERED_CAP = { STORYLOOM_INTERNAL_MAX_IMPORT_LINE: '4096' };

/** Writes `file` gzip-compressed: the export header, then what `body` yields. */
async function gzipExport(file: string, body: () => Iterable<string>): Promise<void> {
  function* all() {
    yield HEADER;
    yield* body();
  }
  await pipeline(Readable.from(all()), createGzip({ level: 9 }), createWriteStream(file));
}

describe('storyloom import: bounds on what it reads', () => {
  it('refuses a line longer than the cap with one line and exit 1, as its own process, leaving no project', async () => {
    const cwd = workspace();
    const file = path.join(cwd, 'long.jsonl.gz');
    // 64 KB of one line, 16 times the lowered cap, inflated from a few hundred bytes.
    await gzipExport(file, function* () {
      yield '{"kind":"scene","scene":{"text":"';
      for (let piece = 0; piece < 64; piece++) yield 'a'.repeat(1024);
    });
    const project = path.join(cwd, 'copy');
    const run = spawnSync(process.execPath, ['--import', 'tsx', cliEntry, 'import', file, '--data', project], {
      cwd: repositoryRoot,
      encoding: 'utf8',
      env: { ...process.env, ...LOWERED_CAP },
    });
    expect(run.stderr).toBe(
      `storyloom: ${file} is damaged: a line is longer than 4,096 characters, which no export writes\n`,
    );
    expect(run.status).toBe(1);
    expect(existsSync(project)).toBe(false);
  });

  it('refuses a long line into an existing project too, and leaves its story and records as they were', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    const file = path.join(cwd, 'long.jsonl.gz');
    await gzipExport(file, function* () {
      yield `{"kind":"state","state":{"title":"${'b'.repeat(10_000)}"}}\n`;
    });
    const imported = await storyloom(cwd, ['import', file, '--data', 'proj'], LOWERED_CAP);
    expect(imported.stderr).toBe(
      `storyloom: ${file} is damaged: a line is longer than 4,096 characters, which no export writes\n`,
    );
    expect(imported.code).toBe(1);
    const status = await storyloom(cwd, ['status', '--data', 'proj', '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ scenes: 0, unfinishedBuild: null });
  });

  it('refuses a compressed run of blank lines once it passes 1,000 of them', async () => {
    const cwd = workspace();
    const file = path.join(cwd, 'blank.jsonl.gz');
    // A million newlines: about a kilobyte compressed.
    await gzipExport(file, function* () {
      yield '\n'.repeat(1_000_000);
    });
    expect(readFileSync(file).length).toBeLessThan(10_000);
    for (const data of ['new-project', 'proj']) {
      if (data === 'proj') expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
      const imported = await storyloom(cwd, ['import', file, '--data', data]);
      expect(imported.stderr, data).toBe(
        `storyloom: ${file} is damaged: it holds more than 1,000 blank lines, and an export writes none\n`,
      );
      expect(imported.code, data).toBe(1);
    }
    expect(existsSync(path.join(cwd, 'new-project'))).toBe(false);
  });

  it('refuses a line that is no record of an export at once, not after reading a million of them', async () => {
    const cwd = workspace();
    const file = path.join(cwd, 'junk.jsonl.gz');
    await gzipExport(file, function* () {
      yield '0\n'.repeat(1_000_000);
    });
    const imported = await storyloom(cwd, ['import', file, '--data', 'copy']);
    expect(imported.stderr).toBe(`storyloom: ${file} is damaged: a line is not a record of an export\n`);
    expect(imported.code).toBe(1);
    expect(existsSync(path.join(cwd, 'copy'))).toBe(false);
  });

  it('refuses a record of a known kind without its payload, or a scene repeated, at once', async () => {
    const cwd = workspace();
    const bare = path.join(cwd, 'bare.jsonl.gz');
    await gzipExport(bare, function* () {
      yield '{"kind":"state","state":{}}\n';
      yield '{"kind":"scene"}\n'.repeat(1_000_000);
    });
    const refusedBare = await storyloom(cwd, ['import', bare, '--data', 'copy']);
    expect(refusedBare.stderr).toBe(`storyloom: ${bare} is damaged: a scene record without its scene\n`);
    expect(refusedBare.code).toBe(1);
    const repeated = path.join(cwd, 'repeated.jsonl.gz');
    await gzipExport(repeated, function* () {
      yield '{"kind":"state","state":{}}\n';
      yield '{"kind":"scene","scene":{"index":0}}\n'.repeat(1_000_000);
    });
    const refusedRepeated = await storyloom(cwd, ['import', repeated, '--data', 'copy']);
    expect(refusedRepeated.stderr).toBe(
      `storyloom: ${repeated} is damaged: its scene 2 is not the scene of index 1, as an export writes it\n`,
    );
    expect(refusedRepeated.code).toBe(1);
    expect(existsSync(path.join(cwd, 'copy'))).toBe(false);
  });

  it('refuses an influence, a publication or a snapshot repeated at its second line, not after reading them all', async () => {
    const cwd = workspace();
    const records = [
      ['{"kind":"influence","influence":{"id":"sig-1"}}', 'influence "sig-1"'],
      [
        '{"kind":"publication","entry":{"sceneId":"s1","target":"site:html"}}',
        'the publication of scene "s1" to "site:html"',
      ],
      ['{"kind":"snapshot","state":{"version":3}}', 'the snapshot of version 3'],
    ];
    for (const [line, named] of records) {
      const file = path.join(cwd, 'repeated.jsonl.gz');
      await gzipExport(file, function* () {
        yield '{"kind":"state","state":{}}\n';
        // Valid records of another id before the repeats: only the same one twice is refused.
        yield `${line!.replace('sig-1', 'sig-0').replace('"s1"', '"s0"').replace(':3}', ':2}')}\n`;
        yield `${line}\n`.repeat(1_000_000);
      });
      const refused = await storyloom(cwd, ['import', file, '--data', 'copy']);
      expect(refused.stderr).toBe(`storyloom: ${file} is damaged: it holds ${named} twice\n`);
      expect(refused.code).toBe(1);
      expect(existsSync(path.join(cwd, 'copy'))).toBe(false);
    }
  });

  it('still imports an export with CRLF line ends, a few blank lines and no newline after its last line', async () => {
    const cwd = workspace();
    expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '2', '--no-images'])).code).toBe(0);
    const exported = await storyloom(cwd, ['export', '--data', 'proj']);
    expect(exported.code).toBe(0);
    const lines = exported.stdout.trimEnd().split('\n');
    // Two blank lines after the header; the end marker last, without a newline.
    writeFileSync(path.join(cwd, 'edited.jsonl'), `${lines[0]}\r\n\r\n\n${lines.slice(1).join('\r\n')}`);
    const imported = await storyloom(cwd, ['import', 'edited.jsonl', '--data', 'copy']);
    expect(imported.stderr).toBe('');
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain('2 scenes');
  });
});
