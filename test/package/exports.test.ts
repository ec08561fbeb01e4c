/**
 * The published shape of the package: the `exports` map of package.json, the tsup entries and the typedoc entry
 * points describe the same entry points; every file the map names is built; each entry point stays within its size
 * budget. Reads `dist/`, which the test command (`npm test`) builds before vitest runs.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import ts from 'typescript';
import { beforeAll, describe, expect, it } from 'vitest';
import { entries } from '../../tsup.config.js';

const repositoryRoot = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Budget per entry point, in gzip bytes of its ESM file plus every chunk it imports. A consumer's bundle grows by at
 * most this much (before tree-shaking) when it imports the entry. Raise a budget only on purpose, in the same change
 * that needs it.
 */
const SIZE_BUDGETS_GZIP_BYTES: Readonly<Record<string, number>> = {
  // The root holds the engine, the context layer and the offline narrator and illustrator (their prose and palette
  // tables are most of it); `sideEffects: false` lets a bundle drop what it does not import. Raised from 128 KB for
  // the context manager's point-of-view sheets and its upkeep of a process's own keyword side; from 136 KB for the
  // filesystem site's per-chapter catalog with its crash repair (about 6 KB), the engine's per-attempt step timeout
  // and the context manager's abandonable shared work (about 3 KB together); from 146 KB for the engine's claims of
  // publishers that are not idempotent (at most once per scene, about 1.5 KB) and the world state and thread archive
  // of the context layer and the site; from 149 KB for the publishers' shared episode check with its strict SVG
  // reader (about 1.9 KB: the SVG check had been a text scan that four tricks got past) and the store's checks of
  // scene numbering and import keys; from 153 KB for the site's one place per scene, its writer-named temporary files
  // and its restored lost pages (about 2.5 KB: two publishers of one folder in one process removed each other's
  // files), and the context cache's bounds, the rebuild record and grapheme-safe clipping (about 1.5 KB); from 157 KB
  // for the engine's exactly-once repairs (a publish cut short stays in doubt, results of any size recorded, callers'
  // own aborts on a shared run, the influence intake's checks), the context manager's point-of-view focus and the
  // shared filter's no-operator rule (about 2.6 KB together); from 161 KB for the context cache's bounded shared
  // computations and invalidation tickets (about 1.6 KB), the retry options' checks and strict HTTP dates (about
  // 0.9 KB), the tokenizer that no longer under-counts ids and names (about 0.5 KB), the memory upkeep's shared
  // queue and checks (about 0.6 KB), the site's picture ordering, owner recovery and chapter file names, and the
  // summarizer's CJK sentences (about 0.3 KB); from 168 KB for the store's consistent export cut and its import
  // checks of snapshots, log entries and influence outcomes (about 1.3 KB), the retriever's lazy MMR heap, request
  // checks and searchable-query rule (about 1 KB), and the site's scene pages written in rounds (about 0.3 KB); from
  // 171 KB for the engine's clock-skew allowance, claim retries and bounded store calls, the memory upkeep's prune
  // records of their own, rebuild checks and reused summaries, and the indexes' sampled one-pass ranking (about
  // 3.3 KB together); from 177 KB for a point of view's plot threads as it last saw them (the walk back through the
  // stored states) and the changes a long chapter makes past its journal, with the deaths in the task (about 4 KB);
  // from 181 KB for what a point of view knows (`knownTo`, the walk cut short at the chapter start, the engine's check
  // of a context layer's answer) and the summarizers' input check (about 1.7 KB together); from 184 KB for the context
  // manager's history reads and known locations as classes of their own (`ChapterHistory`, `KnownLocations`), taken
  // out of a class of 4,000 lines to be read (about 0.9 KB); from 185 KB for the site's feed revisions, feed keys and
  // picture sizes read from PNG, JPEG, WebP and SVG bytes (about 2.1 KB), and the checks of the engine's and the
  // context manager's options and ports with the sanitizing of shown audience text (about 1 KB); from 189 KB for the
  // record of finished prunes that spares a new process's prune the old chapters, and the journal's and the index
  // step's reads of what the call already holds (about 0.7 KB).
  '.': 190 * 1024,
  './testing': 60 * 1024,
  './testing/arbitraries': 40 * 1024,
  // State store, vector and keyword indexes, migrations; better-sqlite3 and sqlite-vec stay external. Raised from
  // 40 KB for the keyword analysis of scripts written without spaces (text-analysis.ts), which the indexes share;
  // from 42 KB for schema version 5 (gzip-compressed snapshots and their migration, about 0.2 KB); from 43 KB for
  // the store's checks of scene numbering, import keys and influence times (shared with every backend); from 44 KB
  // for the online backup that a busy writer cannot restart forever, the checks of paths and foreign files, the
  // float64 re-scoring of float32 near-ties and the import's version rules (about 0.6 KB); from 46 KB for the shared
  // state core's consistent export cut and import checks of snapshots, log entries and influence outcomes (about
  // 1.3 KB); from 48 KB for the in-memory indexes' sampled one-pass ranking, which the SQLite mirrors share, and the
  // remembered analyses of short texts (about 0.3 KB).
  './sqlite': 50 * 1024,
  // The Claude scene generator, summarizer and token counter; the SDK stays external. Raised from 30 KB for the
  // summarizer's batches of long input, the counter's offline floor and the well-formed text of every request; from
  // 32 KB for the shared estimating tokenizer's charges for ids and names and the retry options' checks; from 34 KB
  // for the current generations' prices, the summarizers' input check and the stream's error events told by type
  // (about 0.5 KB, 33.6 KB used).
  './anthropic': 35 * 1024,
  // Embedders, Stability images and the Claude-on-Bedrock wrapper (with the Claude core); the SDKs stay external.
  './bedrock': 40 * 1024,
  // ioredis stays external.
  './redis': 15 * 1024,
  // The Pinecone SDK stays external.
  './pinecone': 20 * 1024,
  // The AWS SDK stays external. Raised from 15 KB for the conditional answers a retry meets, bodies read inside the
  // retry and the key limits (about 0.3 KB); from 16 KB for the retry options' checks, strict HTTP dates and the
  // publishers' check of picture signatures (about 1.3 KB); from 18 KB for the per-attempt bound on progress, a
  // stalled peer's (about 0.7 KB).
  './s3': 19 * 1024,
  // The DynamoDB state store and the memory content store (with the shared state core); the AWS SDK stays external.
  // Raised from 25 KB for the shared core's grapheme-safe clipping (about 0.2 KB); from 26 KB for imports that never
  // delete a story they no longer own and the cancellation reasons no retry mends (about 0.2 KB); from 27 KB for the
  // retry options' checks and strict HTTP dates of the shared retry policy (about 1.3 KB); from 29 KB for the shared
  // state core's consistent export cut and import checks of snapshots, log entries and influence outcomes (about
  // 1.3 KB); from 31 KB for the per-attempt bound with its upload allowance and typed attempt errors (about 1 KB);
  // from 32 KB for what the service does and DynamoDB Local does not (throttled transactions and batches, clock skew,
  // a new token after a cancellation, reads that overlap a commit: about 0.7 KB); from 33 KB for writes still
  // throttled told apart as retryable, one send per attempt of a batch, and the missing packages named together
  // (about 0.9 KB).
  './dynamodb': 34 * 1024,
};

type ConditionalTarget = { types: string; default: string };
type ExportTarget = string | { import?: ConditionalTarget; require?: ConditionalTarget };

interface Manifest {
  main?: string;
  module?: string;
  types?: string;
  files?: string[];
  sideEffects?: boolean;
  exports: Record<string, ExportTarget>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

const manifest = JSON.parse(readFileSync(path.join(repositoryRoot, 'package.json'), 'utf8')) as Manifest;

/** `index` → `.`, `testing/index` → `./testing`. */
function subpathOf(entryName: string): string {
  return entryName === 'index' ? '.' : `./${entryName.replace(/\/index$/, '')}`;
}

/** What the exports map must say for a tsup entry: ESM with `.d.ts`, CJS with `.d.cts`, types first. */
function expectedTarget(entryName: string) {
  return {
    import: { types: `./dist/${entryName}.d.ts`, default: `./dist/${entryName}.js` },
    require: { types: `./dist/${entryName}.d.cts`, default: `./dist/${entryName}.cjs` },
  };
}

const entryPointSubpaths = Object.keys(manifest.exports).filter((subpath) => subpath !== './package.json');

/** Every relative file `file` imports, transitively, including itself (paths relative to the repository). */
function localImportClosure(file: string): string[] {
  const seen = new Set<string>();
  const visit = (current: string): void => {
    if (seen.has(current)) return;
    seen.add(current);
    const source = readFileSync(path.join(repositoryRoot, current), 'utf8');
    for (const { fileName } of ts.preProcessFile(source, true, true).importedFiles) {
      if (fileName.startsWith('.')) visit(path.posix.join(path.posix.dirname(current), fileName));
    }
  };
  visit(file);
  return [...seen];
}

describe('the exports map', () => {
  it('has one entry point per tsup entry, and no other', () => {
    const fromTsup = Object.keys(entries).map(subpathOf).sort();
    expect(entryPointSubpaths.slice().sort()).toEqual(fromTsup);
    expect(manifest.exports['./package.json']).toBe('./package.json');
  });

  it.each(Object.keys(entries))('maps tsup entry "%s" to its ESM, CJS, .d.ts and .d.cts files', (entryName) => {
    const target = manifest.exports[subpathOf(entryName)];
    expect(target).toEqual(expectedTarget(entryName));
    // Resolution takes the first matching condition: `types` must come before `default` in each branch.
    for (const condition of ['import', 'require'] as const) {
      const branch = (target as Record<string, ConditionalTarget>)[condition]!;
      expect(Object.keys(branch)).toEqual(['types', 'default']);
    }
  });

  it('points the legacy main, module and types fields at the root entry', () => {
    const root = expectedTarget('index');
    expect(manifest.main).toBe(root.require.default);
    expect(manifest.module).toBe(root.import.default);
    expect([root.import.types, root.require.types]).toContain(manifest.types);
  });

  it('publishes dist and declares itself free of side effects', () => {
    expect(manifest.files).toContain('dist');
    expect(manifest.sideEffects).toBe(false);
  });

  it('documents exactly the tsup entries with typedoc', () => {
    const typedoc = JSON.parse(readFileSync(path.join(repositoryRoot, 'typedoc.json'), 'utf8')) as {
      entryPoints: string[];
    };
    const normalise = (file: string) => path.posix.normalize(file);
    expect(typedoc.entryPoints.map(normalise).sort()).toEqual(Object.values(entries).map(normalise).sort());
  });

  it('keeps every optional peer dependency installed for the repository at a version inside its peer range', () => {
    for (const [name, meta] of Object.entries(manifest.peerDependenciesMeta ?? {})) {
      expect(
        manifest.peerDependencies?.[name],
        `${name} is in peerDependenciesMeta but not peerDependencies`,
      ).toBeDefined();
      expect(meta.optional, `${name} should be an optional peer`).toBe(true);
    }
    for (const name of Object.keys(manifest.peerDependencies ?? {})) {
      expect(manifest.peerDependenciesMeta?.[name]?.optional, `peer ${name} must be marked optional`).toBe(true);
      expect(manifest.devDependencies?.[name], `peer ${name} must also be a devDependency`).toBeDefined();
      expect(manifest.dependencies?.[name], `${name} cannot be both a dependency and a peer`).toBeUndefined();
      const installed = JSON.parse(
        readFileSync(path.join(repositoryRoot, 'node_modules', name, 'package.json'), 'utf8'),
      ) as { version: string };
      expect(
        satisfiesCaretOrExact(installed.version, manifest.peerDependencies![name]!),
        `${name}@${installed.version}`,
      ).toBe(true);
    }
  });
});

/** Enough of semver for the ranges this package uses: an exact version, or `^x.y.z`. */
function satisfiesCaretOrExact(version: string, range: string): boolean {
  const parse = (text: string) => text.split('.').map((part) => Number.parseInt(part, 10));
  if (!range.startsWith('^')) return version === range;
  const [major, minor, patch] = parse(version) as [number, number, number];
  const [floorMajor, floorMinor, floorPatch] = parse(range.slice(1)) as [number, number, number];
  if (major !== floorMajor) return false;
  return minor > floorMinor || (minor === floorMinor && patch >= floorPatch);
}

describe('the built package (dist/)', () => {
  beforeAll(() => {
    if (!existsSync(path.join(repositoryRoot, 'dist'))) {
      throw new Error('dist/ is missing: run `npm run build` first (`npm test` builds before running vitest)');
    }
  });

  it('contains every file the exports map names', () => {
    const named = [manifest.main, manifest.module, manifest.types];
    for (const subpath of entryPointSubpaths) {
      const target = manifest.exports[subpath]!;
      if (typeof target === 'string') named.push(target);
      else for (const branch of [target.import, target.require]) named.push(branch?.types, branch?.default);
    }
    const missing = named.filter((file) => file === undefined || !existsSync(path.join(repositoryRoot, file)));
    expect(missing).toEqual([]);
  });

  it('keeps each entry point within its gzip size budget', () => {
    expect(Object.keys(SIZE_BUDGETS_GZIP_BYTES).sort(), 'every entry point needs a budget').toEqual(
      entryPointSubpaths.slice().sort(),
    );
    const rows: string[] = [];
    const overBudget: string[] = [];
    for (const subpath of entryPointSubpaths) {
      const target = manifest.exports[subpath] as { import: ConditionalTarget };
      const files = localImportClosure(path.posix.normalize(target.import.default));
      const raw = files.reduce((total, file) => total + readFileSync(path.join(repositoryRoot, file)).length, 0);
      const gzip = files.reduce(
        (total, file) => total + gzipSync(readFileSync(path.join(repositoryRoot, file))).length,
        0,
      );
      const budget = SIZE_BUDGETS_GZIP_BYTES[subpath]!;
      rows.push(
        `${subpath.padEnd(12)} ${kilobytes(gzip).padStart(9)} gzip  ${kilobytes(raw).padStart(9)} raw  budget ${kilobytes(budget)}  (${files.length} file(s): ${files.join(', ')})`,
      );
      if (gzip > budget) overBudget.push(`${subpath}: ${kilobytes(gzip)} gzip > budget ${kilobytes(budget)}`);
    }
    console.info(`entry point sizes (ESM + imported chunks):\n${rows.join('\n')}`);
    expect(overBudget).toEqual([]);
  });
});

function kilobytes(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KB`;
}
