/**
 * Installs the package the way a user does and loads every entry point in a fresh Node.js process: `npm pack` on the
 * built `dist/` (the test command builds before vitest runs), `npm install <tarball>` into an empty folder, then
 * `require()` and `import()` of each subpath of the `exports` map. Both must expose exactly the names of the source
 * entry. The root entry must also load with nothing but its runtime dependencies, and its built import graph may name
 * no package other than `zod`, `lru-cache` and Node.js built-ins.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { entries } from '../../tsup.config.js';

const run = promisify(execFile);
const repositoryRoot = fileURLToPath(new URL('../../', import.meta.url));
const TIMEOUT_MS = 120_000;
/**
 * An `npm pack` or `npm install` into the empty project: one of them, the optional peers (the AWS SDK clients,
 * Pinecone, ioredis, ...), took over 120 s on a slow shared host although the packages come from npm's local cache.
 * The bound only keeps a hung install from hanging the suite.
 */
const INSTALL_TIMEOUT_MS = 600_000;

/** The only packages the root entry may import: its runtime dependencies. Anything else needs its own subpath. */
const ROOT_ALLOWED_PACKAGES = ['zod', 'lru-cache'];

interface Manifest {
  name: string;
  exports: Record<string, string | { import: { default: string }; require: { default: string } }>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

const manifest = JSON.parse(readFileSync(path.join(repositoryRoot, 'package.json'), 'utf8')) as Manifest;

interface EntryPoint {
  /** `.` or `./testing`. */
  subpath: string;
  /** What a user writes: `storyloom` or `storyloom/testing`. */
  specifier: string;
  /** The source entry, e.g. `src/testing/index.ts`. */
  source: string;
}

/** Every entry point of the exports map, with the source file tsup builds it from. */
const entryPoints: EntryPoint[] = Object.entries(manifest.exports)
  .filter(([subpath]) => subpath !== './package.json')
  .map(([subpath, target]) => {
    if (typeof target === 'string') throw new Error(`exports["${subpath}"] should map import and require`);
    const entryName = target.import.default.replace(/^\.\/dist\//, '').replace(/\.js$/, '');
    const source = (entries as Record<string, string>)[entryName];
    if (source === undefined) throw new Error(`exports["${subpath}"] names no tsup entry (${entryName})`);
    return { subpath, specifier: subpath === '.' ? manifest.name : `${manifest.name}/${subpath.slice(2)}`, source };
  });

/** The environment of child processes: none of the npm settings of the `npm test` that runs us, no vitest hooks. */
function childEnvironment(): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig', 'npm_config_globalconfig']);
  const environment: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    const lower = key.toLowerCase();
    if (lower.startsWith('npm_') && !keep.has(lower)) continue;
    if (key === 'NODE_OPTIONS' || key === 'INIT_CWD' || key.startsWith('VITEST')) continue;
    environment[key] = value;
  }
  return environment;
}

async function npm(args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await run('npm', args, { cwd, env: childEnvironment(), maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`npm ${args.join(' ')} failed in ${cwd}:\n${stderr ?? ''}\n${stdout ?? ''}`);
  }
}

/** Loads `specifier` in a fresh `node` from `cwd`, with `require()` or `import()`; returns each export's `typeof`. */
async function loadInChild(specifier: string, how: 'require' | 'import', cwd: string): Promise<Record<string, string>> {
  const describeExports = `const out = {}; for (const key of Object.keys(m)) out[key] = typeof m[key]; process.stdout.write(JSON.stringify(out));`;
  const script =
    how === 'require'
      ? `const m = require(${JSON.stringify(specifier)}); ${describeExports}`
      : `const m = await import(${JSON.stringify(specifier)}); ${describeExports}`;
  const args = how === 'require' ? ['--input-type=commonjs', '-e', script] : ['--input-type=module', '-e', script];
  try {
    const { stdout } = await run(process.execPath, args, { cwd, env: childEnvironment() });
    return JSON.parse(stdout) as Record<string, string>;
  } catch (error) {
    const { stderr } = error as { stderr?: string };
    throw new Error(`${how}('${specifier}') failed:\n${stderr ?? String(error)}`);
  }
}

/** The names a source entry exports, each with its `typeof`: what both builds must expose. */
async function sourceExports(source: string): Promise<Record<string, string>> {
  const module = (await import(/* @vite-ignore */ path.join(repositoryRoot, source))) as Record<string, unknown>;
  return Object.fromEntries(Object.keys(module).map((key) => [key, typeof module[key]]));
}

/** The built file a relative import names; a declaration file's `./chunk.js` means `./chunk.d.ts`. */
function resolveBuilt(importer: string, specifier: string): string {
  const target = path.resolve(path.dirname(importer), specifier);
  if (!/\.d\.(c|m)?ts$/.test(importer) || existsSync(target)) return target;
  return target
    .replace(/\.js$/, '.d.ts')
    .replace(/\.cjs$/, '.d.cts')
    .replace(/\.mjs$/, '.d.mts');
}

/** Bare specifiers (packages and built-ins) that `file` and the local files it imports name, transitively. */
function bareImportsOf(file: string): Map<string, string> {
  const found = new Map<string, string>();
  const seen = new Set<string>();
  const visit = (current: string): void => {
    if (seen.has(current)) return;
    seen.add(current);
    const text = readFileSync(current, 'utf8');
    for (const { fileName } of ts.preProcessFile(text, true, true).importedFiles) {
      if (fileName.startsWith('.')) visit(resolveBuilt(current, fileName));
      else if (!found.has(fileName)) found.set(fileName, path.relative(repositoryRoot, current));
    }
  };
  visit(file);
  return found;
}

function isBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || builtinModules.includes(specifier);
}

function packageNameOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

const sortedKeys = (record: Record<string, string>) => Object.keys(record).sort();

let workspace = '';
let consumer = '';
let packedFiles: string[] = [];

describe('the packed package, installed into an empty project', { timeout: TIMEOUT_MS }, () => {
  beforeAll(async () => {
    if (!existsSync(path.join(repositoryRoot, 'dist'))) {
      throw new Error('dist/ is missing: run `npm run build` first (`npm test` builds before running vitest)');
    }
    workspace = mkdtempSync(path.join(tmpdir(), 'storyloom-smoke-'));
    consumer = path.join(workspace, 'consumer');
    // --ignore-scripts: pack the dist/ that was built and is being tested, without rebuilding it.
    const packed = JSON.parse(
      await npm(['pack', '--json', '--ignore-scripts', '--pack-destination', workspace], repositoryRoot),
    ) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const tarball = path.join(workspace, packed[0]!.filename);
    packedFiles = packed[0]!.files.map((file) => file.path);
    mkdirSync(consumer);
    writeFileSync(
      path.join(consumer, 'package.json'),
      JSON.stringify({ name: 'storyloom-smoke-consumer', version: '0.0.0', private: true }),
    );
    await npm(['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], consumer);
  }, INSTALL_TIMEOUT_MS);

  afterAll(() => {
    if (workspace) rmSync(workspace, { recursive: true, force: true });
  });

  it('packs dist/, docs/, the README and package.json, and nothing else', () => {
    const unexpected = packedFiles.filter(
      (file) =>
        !file.startsWith('dist/') &&
        !file.startsWith('docs/') &&
        !['package.json', 'README.md', 'LICENSE'].includes(file),
    );
    expect(unexpected).toEqual([]);
    for (const { subpath } of entryPoints) {
      const target = manifest.exports[subpath] as { import: { default: string }; require: { default: string } };
      expect(packedFiles).toContain(target.import.default.replace(/^\.\//, ''));
      expect(packedFiles).toContain(target.require.default.replace(/^\.\//, ''));
    }
  });

  it('ships every file that the README and docs link to, so their links work in the installed package', () => {
    const linkers = packedFiles.filter((file) => file.endsWith('.md'));
    expect(linkers).toContain('README.md');
    const broken: string[] = [];
    for (const linker of linkers) {
      const text = readFileSync(path.join(repositoryRoot, linker), 'utf8');
      // Inline links and images, [text](target) and ![alt](target), whose target is a path in this package.
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z][a-z0-9+.-]*:|^#|^\//i.test(target!)) continue;
        const file = path.posix.normalize(path.posix.join(path.posix.dirname(linker), target!.replace(/#.*$/, '')));
        if (!packedFiles.includes(file)) broken.push(`${linker} -> ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('installs no optional peer dependency', () => {
    for (const peer of Object.keys(manifest.peerDependencies ?? {})) {
      expect(existsSync(path.join(consumer, 'node_modules', peer)), `${peer} was installed`).toBe(false);
    }
  });

  it('loads the root entry with require() and import() using only its runtime dependencies', async () => {
    const root = entryPoints.find((entry) => entry.subpath === '.')!;
    const expected = await sourceExports(root.source);
    expect(sortedKeys(expected).length).toBeGreaterThan(0);
    expect(await loadInChild(root.specifier, 'require', consumer)).toEqual(expected);
    expect(await loadInChild(root.specifier, 'import', consumer)).toEqual(expected);
  });

  it('recognises errors across the CommonJS and ESM copies loaded in one process', async () => {
    const script = `
      import { createRequire } from 'node:module';
      const esm = await import('${manifest.name}');
      const cjs = createRequire(process.cwd() + '/')('${manifest.name}');
      process.stdout.write(JSON.stringify({
        twoCopies: esm.NotFoundError !== cjs.NotFoundError,
        cjsKnowsEsm: cjs.NotFoundError.isInstance(new esm.NotFoundError('gone')),
        esmKnowsCjs: esm.StoryloomError.isInstance(new cjs.ConflictError('raced')),
        keepsClassApart: esm.ConflictError.isInstance(new cjs.NotFoundError('gone')),
      }));`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
      cwd: consumer,
      env: childEnvironment(),
    });
    expect(JSON.parse(stdout)).toEqual({
      twoCopies: true,
      cjsKnowsEsm: true,
      esmKnowsCjs: true,
      keepsClassApart: false,
    });
  });

  describe('with the optional peer dependencies installed', () => {
    beforeAll(async () => {
      // A user of storyloom/testing installs its optional peers; take the versions the repository tests with.
      const peers = Object.keys(manifest.peerDependencies ?? {}).map(
        (name) => `${name}@${manifest.devDependencies?.[name] ?? manifest.peerDependencies![name]}`,
      );
      if (peers.length > 0) await npm(['install', '--no-audit', '--no-fund', '--prefer-offline', ...peers], consumer);
    }, INSTALL_TIMEOUT_MS);

    it.each(entryPoints.map((entry) => [entry.specifier, entry]))(
      '%s exposes the same names with require() and import() as its source',
      async (_specifier, entry) => {
        const expected = await sourceExports(entry.source);
        expect(sortedKeys(expected).length, `${entry.source} exports nothing`).toBeGreaterThan(0);
        const [required, imported] = await Promise.all([
          loadInChild(entry.specifier, 'require', consumer),
          loadInChild(entry.specifier, 'import', consumer),
        ]);
        expect(sortedKeys(required)).toEqual(sortedKeys(imported));
        expect(required).toEqual(expected);
        expect(imported).toEqual(expected);
      },
    );
  });
});

describe('the built root entry', () => {
  it.each(['dist/index.js', 'dist/index.cjs', 'dist/index.d.ts', 'dist/index.d.cts'])(
    '%s imports no package but zod, lru-cache and Node.js built-ins',
    (file) => {
      const absolute = path.join(repositoryRoot, file);
      expect(existsSync(absolute), `${file} is missing: run \`npm run build\` first`).toBe(true);
      const imports = bareImportsOf(absolute);
      const offending = [...imports]
        .filter(([specifier]) => !isBuiltin(specifier) && !ROOT_ALLOWED_PACKAGES.includes(packageNameOf(specifier)))
        .map(([specifier, importer]) => `"${specifier}" (imported by ${importer})`);
      expect(offending).toEqual([]);
      // The scan sees the imports it must see: the schemas are built on zod.
      expect([...imports.keys()].some((specifier) => packageNameOf(specifier) === 'zod')).toBe(true);
    },
  );
});
