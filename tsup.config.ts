import { defineConfig } from 'tsup';

/**
 * One entry per subpath export. `test/package/exports.test.ts` checks that this list and the `exports` map of
 * package.json stay in sync.
 */
export const entries = {
  index: 'src/index.ts',
  'testing/index': 'src/testing/index.ts',
  'testing/arbitraries': 'src/testing/arbitraries.ts',
} as const;

export default defineConfig({
  entry: entries,
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  splitting: true,
  treeshake: true,
  target: 'node20',
  platform: 'node',
  outDir: 'dist',
});
