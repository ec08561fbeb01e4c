import { defineConfig } from 'tsup';

/**
 * One entry per subpath export. `test/package/exports.test.ts` checks that this list and the `exports` map of
 * package.json stay in sync.
 */
export const entries = {
  index: 'src/index.ts',
  'testing/index': 'src/testing/index.ts',
  'testing/arbitraries': 'src/testing/arbitraries.ts',
  sqlite: 'src/sqlite.ts',
  anthropic: 'src/anthropic.ts',
  bedrock: 'src/bedrock.ts',
  redis: 'src/redis.ts',
  pinecone: 'src/pinecone.ts',
  s3: 'src/s3.ts',
  dynamodb: 'src/dynamodb.ts',
} as const;

/** The `storyloom` bin: ESM only, no declarations; it reaches the package's subpaths through its own exports. */
export const cliEntry = { 'cli/index': 'src/cli/index.ts' } as const;

export default defineConfig([
  {
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
  },
  {
    entry: cliEntry,
    format: ['esm'],
    dts: false,
    sourcemap: true,
    clean: false,
    splitting: false,
    target: 'node20',
    platform: 'node',
    outDir: 'dist',
    external: [/^storyloom(\/.*)?$/],
  },
]);
