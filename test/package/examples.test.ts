/**
 * The `@example` blocks of the source are what typedoc shows users, who copy them: every name an example imports
 * from a package subpath (`storyloom`, `storyloom/sqlite`, ...) must be exported there. Examples of internal helpers
 * import from their module's relative path instead.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { entries } from '../../tsup.config.js';

const repositoryRoot = fileURLToPath(new URL('../../', import.meta.url));
const manifest = JSON.parse(readFileSync(path.join(repositoryRoot, 'package.json'), 'utf8')) as { name: string };

describe('@example imports', () => {
  it('every named import of an @example exists in the subpath it names', () => {
    const sourceOfSpecifier = (specifier: string): string | undefined => {
      const subpath = specifier === manifest.name ? 'index' : specifier.slice(manifest.name.length + 1);
      const table = entries as Record<string, string>;
      return table[subpath] ?? table[`${subpath}/index`];
    };
    const entryFiles = Object.values(entries).map((file) => path.join(repositoryRoot, file));
    const program = ts.createProgram(entryFiles, {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
      noEmit: true,
      skipLibCheck: true,
    });
    const checker = program.getTypeChecker();
    const exportsOf = new Map<string, Set<string>>();
    for (const file of entryFiles) {
      const symbol = checker.getSymbolAtLocation(program.getSourceFile(file)!)!;
      exportsOf.set(file, new Set(checker.getExportsOfModule(symbol).map((exported) => exported.name)));
    }

    const offenders: string[] = [];
    const sourceFiles = (readdirSync(path.join(repositoryRoot, 'src'), { recursive: true }) as string[])
      .filter((file) => file.endsWith('.ts') && !file.endsWith('.test.ts'))
      .map((file) => path.join('src', file));
    for (const file of sourceFiles) {
      const text = readFileSync(path.join(repositoryRoot, file), 'utf8');
      for (const block of text.matchAll(/```(?:ts|typescript)\n([\s\S]*?)```/g)) {
        const code = block[1]!.replace(/^\s*\* ?/gm, '');
        const line = text.slice(0, block.index).split('\n').length;
        for (const statement of code.matchAll(/import\s+(?:type\s+)?\{([^}]*)\}\s+from\s+'(storyloom(?:\/[^']*)?)'/g)) {
          const specifier = statement[2]!;
          const source = sourceOfSpecifier(specifier);
          const names = statement[1]!
            .split(',')
            .map(
              (part) =>
                part
                  .trim()
                  .replace(/^type\s+/, '')
                  .split(/\s+as\s+/)[0]!,
            )
            .filter(Boolean);
          if (source === undefined) {
            offenders.push(`${file}:${line}: '${specifier}' is not a subpath of the exports map`);
            continue;
          }
          const exported = exportsOf.get(path.join(repositoryRoot, source))!;
          for (const name of names) {
            if (!exported.has(name)) offenders.push(`${file}:${line}: '${specifier}' exports no "${name}"`);
          }
        }
      }
    }
    expect(offenders).toEqual([]);
  });
});
