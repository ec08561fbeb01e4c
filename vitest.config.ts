import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const source = (file: string) => fileURLToPath(new URL(`./src/${file}`, import.meta.url));

export default defineConfig({
  // The command imports the package's own subpaths (`storyloom/sqlite`, ...); tests run them from source.
  resolve: {
    alias: [
      { find: /^storyloom\/testing\/arbitraries$/, replacement: source('testing/arbitraries.ts') },
      { find: /^storyloom\/testing$/, replacement: source('testing/index.ts') },
      { find: /^storyloom\/([a-z0-9-]+)$/, replacement: source('$1.ts') },
      { find: /^storyloom$/, replacement: source('index.ts') },
    ],
  },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
