/**
 * Enforces the import rules of DESIGN.md by reading the imports of every source file (tests excluded):
 *
 * - layers import downwards only: `cli` → `engine` → `generation` → `context` → `state`; `publishing` and `chain`
 *   import `state` alone; `src/core` (errors, clock, retry) is the shared kernel every layer may import and itself
 *   imports no other folder; `testing` may import every layer;
 * - a vendor adapter file (`dynamodb.ts`, `redis.ts`, ...) is reached only through its own subpath entry, so no other
 *   entry, in particular the root `src/index.ts`, pulls it in, even transitively;
 * - a package that is not a runtime dependency is imported only by vendor files (cloud SDKs, native modules) or by
 *   `testing` (its declared optional peers, such as fast-check); nothing inside the package imports an entry file.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { entries } from '../../tsup.config.js';

const repositoryRoot = fileURLToPath(new URL('../../', import.meta.url));

/** Each folder of `src/` and the folders it may import. `core` is the shared kernel: every folder may import it. */
const LAYERS: Readonly<Record<string, readonly string[]>> = {
  core: [],
  state: ['core'],
  context: ['state', 'core'],
  generation: ['context', 'state', 'core'],
  publishing: ['state', 'core'],
  chain: ['state', 'core'],
  engine: ['generation', 'context', 'state', 'publishing', 'chain', 'core'],
  cli: ['engine', 'generation', 'context', 'state', 'publishing', 'chain', 'core'],
  testing: ['cli', 'engine', 'generation', 'context', 'state', 'publishing', 'chain', 'core'],
};

/** Files directly in `src/` are entry files; they assemble the layers for their subpath, but never the test kit. */
const ENTRY_FOLDER = '(entry)';
const ENTRY_MAY_IMPORT = Object.keys(LAYERS).filter((layer) => layer !== 'testing');

/** Vendor adapter files by base name; each is a leaf reached only through the subpath entry of the same name. */
const VENDORS = ['dynamodb', 'pinecone', 'redis', 'anthropic', 'bedrock', 's3', 'twitter', 'solana', 'sqlite'];

interface Rules {
  /** tsup entry name → source file relative to the repository, e.g. `testing/index` → `src/testing/index.ts`. */
  entries: Readonly<Record<string, string>>;
  /** Packages any file may import: the runtime `dependencies`. */
  dependencies: readonly string[];
  /** Packages `testing` may import as well: the declared `peerDependencies`. */
  peerDependencies: readonly string[];
  /** Packages a vendor file may import: `dependencies`, `peerDependencies` and `optionalDependencies`. */
  installable: readonly string[];
  /** Packages only the repository has; a consumer of the package never installs them. */
  devDependencies: readonly string[];
}

/** Why importing package `name` is wrong where only `allowed` may be imported, or undefined when it is fine. */
function packageProblem(name: string, allowed: readonly string[], rules: Rules): string | undefined {
  if (allowed.includes(name)) return undefined;
  if (rules.installable.includes(name)) {
    return 'only vendor adapter files (and testing, for its optional peers) may import packages that are not runtime dependencies';
  }
  if (rules.devDependencies.includes(name)) return `"${name}" is only a devDependency: consumers never install it`;
  return `"${name}" is not declared in package.json`;
}

/**
 * Every module specifier in `source`: static and type imports, re-exports, `import()`, `require()`, `import('x').T`.
 * `lazy` holds the specifiers that only an `import()` call or a type names: they load nothing when the file loads.
 */
function importsOf(fileName: string, source: string, lazy = new Set<string>()): string[] {
  const sourceFile = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const found: string[] = [];
  const eager = new Set<string>();
  const add = (specifier: string, loads: boolean) => {
    found.push(specifier);
    if (loads) eager.add(specifier);
  };
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) {
      const typeOnly = ts.isImportDeclaration(node) ? node.importClause?.isTypeOnly === true : node.isTypeOnly;
      if (ts.isStringLiteral(node.moduleSpecifier)) add(node.moduleSpecifier.text, !typeOnly);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const expression = node.moduleReference.expression;
      if (ts.isStringLiteral(expression)) add(expression.text, true);
    } else if (ts.isCallExpression(node)) {
      const [argument] = node.arguments;
      const isImportCall = node.expression.kind === ts.SyntaxKind.ImportKeyword;
      const isRequireCall = ts.isIdentifier(node.expression) && node.expression.text === 'require';
      if ((isImportCall || isRequireCall) && argument && ts.isStringLiteralLike(argument)) {
        add(argument.text, isRequireCall);
      }
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      const literal = node.argument.literal;
      if (ts.isStringLiteral(literal)) add(literal.text, false);
    }
    ts.forEachChild(node, visit);
  };
  visit(sourceFile);
  for (const specifier of found) if (!eager.has(specifier)) lazy.add(specifier);
  return found;
}

/** The file a relative specifier names (`./errors.js` → `src/core/errors.ts`), or undefined. */
function resolveRelative(from: string, specifier: string, files: ReadonlySet<string>): string | undefined {
  const base = path.posix.join(path.posix.dirname(from), specifier);
  const stem = base.replace(/\.(m|c)?js$/, '');
  const candidates = [base, `${stem}.ts`, `${stem}.mts`, `${stem}.cts`, `${stem}.tsx`, `${base}/index.ts`];
  return candidates.find((candidate) => files.has(candidate));
}

function packageNameOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

function isBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || builtinModules.includes(specifier.split('/')[0]!);
}

/** `src/context/redis.ts` → `context`; `src/index.ts` → the entry pseudo-folder. */
function folderOf(file: string): string {
  const parts = file.split('/');
  return parts.length === 2 ? ENTRY_FOLDER : parts[1]!;
}

/** `sqlite.ts` and the files of the same backend named `sqlite-*.ts` (`sqlite-vector-index.ts`) are vendor files. */
function vendorOf(file: string): string | undefined {
  // Stand-in servers in src/testing are named after the service they imitate, but they speak its protocol over
  // node:http and import no SDK; the package rule below (testing imports runtime dependencies only) keeps them so.
  if (file.startsWith('src/testing/')) return undefined;
  const name = path.posix.basename(file).replace(/\.(m|c)?tsx?$/, '');
  return VENDORS.find((vendor) => name === vendor || name.startsWith(`${vendor}-`));
}

/** `index` → `.`, `testing/index` → `testing`, `sqlite` → `sqlite`. */
function subpathOf(entryName: string): string {
  return entryName === 'index' ? '.' : entryName.replace(/\/index$/, '');
}

/**
 * Checks `files` (path relative to the repository → source text) against the rules and returns one readable line
 * per violation, sorted.
 */
function findViolations(files: ReadonlyMap<string, string>, rules: Rules): string[] {
  const violations: string[] = [];
  const paths = new Set(files.keys());
  const entryFiles = new Map(Object.entries(rules.entries).map(([name, file]) => [file, subpathOf(name)]));
  // `lazyPeers`: optional peers a testing file loads only through `import()` (or names only as types).
  const graph = new Map<string, { local: string[]; packages: string[]; lazyPeers: string[] }>();

  for (const [file, source] of files) {
    const folder = folderOf(file);
    const vendor = vendorOf(file);
    const local: string[] = [];
    const packages: string[] = [];
    const lazyPeers: string[] = [];
    const lazy = new Set<string>();
    if (folder !== ENTRY_FOLDER && !(folder in LAYERS)) {
      violations.push(`${file}: folder "src/${folder}" has no place in the layering of DESIGN.md`);
    }
    for (const specifier of importsOf(file, source, lazy)) {
      if (specifier.startsWith('.')) {
        const target = resolveRelative(file, specifier, paths);
        if (target === undefined) {
          if (!specifier.endsWith('.json')) violations.push(`${file}: cannot resolve "${specifier}"`);
          continue;
        }
        if (!target.startsWith('src/')) continue;
        local.push(target);
        const targetFolder = folderOf(target);
        const allowed = folder === ENTRY_FOLDER ? ENTRY_MAY_IMPORT : (LAYERS[folder] ?? []);
        if (targetFolder !== folder && targetFolder !== ENTRY_FOLDER && !allowed.includes(targetFolder)) {
          violations.push(
            `${file} imports ${target}: "${folder}" may import only ${allowed.length ? allowed.join(', ') : 'its own folder'}`,
          );
        }
        if (entryFiles.has(target)) {
          violations.push(`${file} imports the entry file ${target}: import the module it re-exports instead`);
        }
        const targetVendor = vendorOf(target);
        if (targetVendor !== undefined && targetVendor !== vendor && entryFiles.get(file) !== targetVendor) {
          violations.push(
            `${file} imports the vendor adapter ${target}: only the "storyloom/${targetVendor}" entry may import it`,
          );
        }
      } else if (folder === 'cli' && /^storyloom(\/|$)/.test(specifier)) {
        // The command loads optional subpaths (`storyloom/sqlite`, ...) through the package's own public exports,
        // as a user's code would, so a missing optional peer fails only the command that needs it.
        const entryName = specifier === 'storyloom' ? 'index' : specifier.slice('storyloom/'.length);
        if (!(entryName in rules.entries) && !(`${entryName}/index` in rules.entries)) {
          violations.push(`${file} imports "${specifier}": no such subpath in the exports map`);
        }
      } else if (!isBuiltin(specifier)) {
        const name = packageNameOf(specifier);
        if (folder === 'testing' && lazy.has(specifier) && rules.peerDependencies.includes(name)) lazyPeers.push(name);
        else packages.push(name);
        const allowed =
          vendor !== undefined
            ? rules.installable
            : folder === 'testing'
              ? [...rules.dependencies, ...rules.peerDependencies]
              : rules.dependencies;
        const problem = packageProblem(name, allowed, rules);
        if (problem !== undefined) violations.push(`${file} imports "${specifier}": ${problem}`);
      }
    }
    graph.set(file, { local, packages, lazyPeers });
  }

  // What each entry that is not a vendor subpath pulls in, transitively, with the chain of files that leads there.
  for (const [entryName, entryFile] of Object.entries(rules.entries)) {
    const subpath = subpathOf(entryName);
    if (VENDORS.includes(subpath)) continue;
    if (!graph.has(entryFile)) {
      violations.push(`entry "${entryName}": ${entryFile} does not exist`);
      continue;
    }
    // `storyloom/testing` must load with runtime dependencies alone; only `storyloom/testing/arbitraries` may pull
    // in an optional peer (fast-check). A testing file may still `import()` an optional peer where it is used (the
    // Bedrock stand-in's event-stream codec): loading the entry does not load it (`lazyPeers`, never counted here).
    const allowedPackages =
      subpath === 'testing/arbitraries' ? [...rules.dependencies, ...rules.peerDependencies] : rules.dependencies;
    const via = new Map<string, string | undefined>([[entryFile, undefined]]);
    const queue = [entryFile];
    const chainTo = (file: string): string => {
      const chain = [file];
      for (let parent = via.get(file); parent !== undefined; parent = via.get(parent)) chain.unshift(parent);
      return chain.join(' → ');
    };
    while (queue.length > 0) {
      const file = queue.shift()!;
      const node = graph.get(file);
      if (!node) continue;
      if (vendorOf(file) !== undefined) {
        violations.push(`the "${subpath}" entry reaches the vendor adapter ${file}: ${chainTo(file)}`);
      }
      for (const name of node.packages) {
        if (!allowedPackages.includes(name)) {
          violations.push(`the "${subpath}" entry reaches the package "${name}": ${chainTo(file)} → ${name}`);
        }
      }
      for (const target of node.local) {
        if (!via.has(target)) {
          via.set(target, file);
          queue.push(target);
        }
      }
    }
  }
  return [...new Set(violations)].sort();
}

function readSourceFiles(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (directory: string): void => {
    for (const entry of readdirSync(path.join(repositoryRoot, directory), { withFileTypes: true })) {
      const relative = `${directory}/${entry.name}`;
      if (entry.isDirectory()) walk(relative);
      else if (/\.(m|c)?tsx?$/.test(entry.name) && !/\.(test|spec|test-d)\.(m|c)?tsx?$/.test(entry.name)) {
        if (!entry.name.endsWith('.d.ts'))
          files.set(relative, readFileSync(path.join(repositoryRoot, relative), 'utf8'));
      }
    }
  };
  walk('src');
  return files;
}

function readRules(): Rules {
  const manifest = JSON.parse(readFileSync(path.join(repositoryRoot, 'package.json'), 'utf8')) as Record<
    string,
    Record<string, string> | undefined
  >;
  const names = (field: string) => Object.keys(manifest[field] ?? {});
  return {
    entries,
    dependencies: names('dependencies'),
    peerDependencies: names('peerDependencies'),
    installable: [...names('dependencies'), ...names('peerDependencies'), ...names('optionalDependencies')],
    devDependencies: names('devDependencies'),
  };
}

const report = (violations: string[]) =>
  violations.length === 0 ? 'no violations' : `${violations.length} violation(s):\n  - ${violations.join('\n  - ')}`;

describe('layering (DESIGN.md import rules)', () => {
  it('every source file follows the import rules', () => {
    const files = readSourceFiles();
    expect(files.size, 'no source files found under src/').toBeGreaterThan(10);
    expect(files.has('src/index.ts')).toBe(true);
    const violations = findViolations(files, readRules());
    expect(violations, report(violations)).toEqual([]);
  });

  it('the layering table covers every folder that exists under src/', () => {
    const folders = readdirSync(path.join(repositoryRoot, 'src'), { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name);
    expect(folders.filter((folder) => !(folder in LAYERS))).toEqual([]);
  });

  it('detects each kind of violation (the checker itself can fail)', () => {
    const files = new Map<string, string>([
      ['src/index.ts', "export * from './state/memory.js';\nexport * from './context/cache.js';"],
      ['src/sqlite.ts', "export * from './state/sqlite.js';"],
      ['src/redis.ts', "export * from './context/redis.js';"],
      ['src/testing/index.ts', "export * from './suite.js';\nexport * from './stand-in.js';"],
      ['src/testing/suite.ts', "import fc from 'fast-check';\nimport { x } from '../state/memory.js';"],
      // Lazy: a peer loaded by import() or named as a type only loads nothing with the entry.
      [
        'src/testing/stand-in.ts',
        "type C = import('ioredis').Redis;\nconst load = () => import('ioredis');\nimport type { R } from 'ioredis';",
      ],
      ['src/core/errors.ts', "import type { StoryState } from '../state/schema.js';"],
      ['src/state/schema.ts', "import { z } from 'zod';\nimport { it } from 'vitest';"],
      ['src/state/memory.ts', "import { z } from 'zod';\nimport { ContextCache } from '../context/cache.js';"],
      ['src/state/sqlite.ts', "import Database from 'better-sqlite3';\nimport { s } from './schema.js';"],
      ['src/context/cache.ts', "import { r } from './redis.js';\nimport type { T } from '../index.js';"],
      ['src/context/redis.ts', "import Redis from 'ioredis';\nimport { s } from '../state/sqlite.js';"],
      [
        'src/context/sqlite-index.ts',
        "import Database from 'better-sqlite3';\nimport { s } from '../state/sqlite.js';",
      ],
      ['src/context/search.ts', "import { i } from './sqlite-index.js';"],
      ['src/publishing/publisher.ts', "import type { Q } from '../chain/queue.js';\nimport 'left-pad';"],
      ['src/chain/queue.ts', "type Ctx = import('../context/cache.js').Cache;\nimport fc from 'fast-check';"],
      ['src/extras/helper.ts', "export const help = require('./missing.js');"],
    ]);
    const violations = findViolations(files, {
      entries: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts', sqlite: 'src/sqlite.ts' },
      dependencies: ['zod'],
      peerDependencies: ['fast-check', 'better-sqlite3', 'ioredis'],
      installable: ['zod', 'fast-check', 'better-sqlite3', 'ioredis'],
      devDependencies: ['vitest', 'fast-check'],
    });
    expect(violations).toEqual(
      [
        'src/chain/queue.ts imports "fast-check": only vendor adapter files (and testing, for its optional peers) may import packages that are not runtime dependencies',
        'src/chain/queue.ts imports src/context/cache.ts: "chain" may import only state, core',
        'src/context/cache.ts imports the entry file src/index.ts: import the module it re-exports instead',
        'src/context/cache.ts imports the vendor adapter src/context/redis.ts: only the "storyloom/redis" entry may import it',
        'src/context/redis.ts imports the vendor adapter src/state/sqlite.ts: only the "storyloom/sqlite" entry may import it',
        'src/context/search.ts imports the vendor adapter src/context/sqlite-index.ts: only the "storyloom/sqlite" entry may import it',
        'src/core/errors.ts imports src/state/schema.ts: "core" may import only its own folder',
        'src/extras/helper.ts: cannot resolve "./missing.js"',
        'src/extras/helper.ts: folder "src/extras" has no place in the layering of DESIGN.md',
        'src/publishing/publisher.ts imports "left-pad": "left-pad" is not declared in package.json',
        'src/publishing/publisher.ts imports src/chain/queue.ts: "publishing" may import only state, core',
        'src/state/memory.ts imports src/context/cache.ts: "state" may import only core',
        'src/state/schema.ts imports "vitest": "vitest" is only a devDependency: consumers never install it',
        'the "." entry reaches the package "better-sqlite3": src/index.ts → src/context/cache.ts → src/context/redis.ts → src/state/sqlite.ts → better-sqlite3',
        'the "." entry reaches the package "ioredis": src/index.ts → src/context/cache.ts → src/context/redis.ts → ioredis',
        'the "." entry reaches the package "vitest": src/index.ts → src/context/cache.ts → src/context/redis.ts → src/state/sqlite.ts → src/state/schema.ts → vitest',
        'the "." entry reaches the vendor adapter src/context/redis.ts: src/index.ts → src/context/cache.ts → src/context/redis.ts',
        'the "." entry reaches the vendor adapter src/state/sqlite.ts: src/index.ts → src/context/cache.ts → src/context/redis.ts → src/state/sqlite.ts',
        // storyloom/testing loads with runtime dependencies alone: no optional peer, no vendor adapter file.
        'the "testing" entry reaches the package "better-sqlite3": src/testing/index.ts → src/testing/suite.ts → src/state/memory.ts → src/context/cache.ts → src/context/redis.ts → src/state/sqlite.ts → better-sqlite3',
        'the "testing" entry reaches the package "fast-check": src/testing/index.ts → src/testing/suite.ts → fast-check',
        'the "testing" entry reaches the package "ioredis": src/testing/index.ts → src/testing/suite.ts → src/state/memory.ts → src/context/cache.ts → src/context/redis.ts → ioredis',
        'the "testing" entry reaches the package "vitest": src/testing/index.ts → src/testing/suite.ts → src/state/memory.ts → src/context/cache.ts → src/context/redis.ts → src/state/sqlite.ts → src/state/schema.ts → vitest',
        'the "testing" entry reaches the vendor adapter src/context/redis.ts: src/testing/index.ts → src/testing/suite.ts → src/state/memory.ts → src/context/cache.ts → src/context/redis.ts',
        'the "testing" entry reaches the vendor adapter src/state/sqlite.ts: src/testing/index.ts → src/testing/suite.ts → src/state/memory.ts → src/context/cache.ts → src/context/redis.ts → src/state/sqlite.ts',
      ].sort(),
    );
  });
});
