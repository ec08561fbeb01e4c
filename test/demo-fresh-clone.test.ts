/**
 * Runs the README's main-job command the way a new user would: a fresh clone of the committed tree, `npm ci`, then
 * `npm run demo`. It tests what is committed (HEAD), not the working tree.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const repository = path.resolve(import.meta.dirname, '..');
const isGitCheckout = existsSync(path.join(repository, '.git'));
const hasCommit =
  isGitCheckout && spawnSync('git', ['rev-parse', '--verify', 'HEAD'], { cwd: repository }).status === 0;
const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-fresh-'));

afterAll(() => rmSync(folder, { recursive: true, force: true }));

describe('a new user on a fresh machine', () => {
  const run = hasCommit ? it : it.skip;
  run(
    hasCommit
      ? 'clones, installs with npm ci, and runs npm run demo to a finished site'
      : 'clones and runs the demo [skipped: not a git checkout with a commit to clone]',
    () => {
      const clone = path.join(folder, 'storyloom');
      execFileSync('git', ['clone', '--quiet', repository, clone]);
      const env = { ...process.env, CI: 'true', npm_config_audit: 'false', npm_config_fund: 'false' };
      execFileSync('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: clone, env, stdio: 'pipe' });
      const started = Date.now();
      const output = execFileSync('npm', ['run', '--silent', 'demo'], { cwd: clone, env, encoding: 'utf8' });
      const seconds = (Date.now() - started) / 1000;
      console.info(`npm run demo took ${seconds.toFixed(1)} s after install`);
      expect(output).toMatch(/\[12\] /);
      expect(output).toMatch(/Open the site: file:\/\/.+index\.html/);
      const site = path.join(clone, 'storyloom-demo', 'site', 'lighthouse-keepers');
      expect(existsSync(path.join(site, 'index.html'))).toBe(true);
      expect(existsSync(path.join(site, 'feed.atom'))).toBe(true);
      const pages = readdirSync(path.join(site, 'scenes')).filter((file) => file.endsWith('.html'));
      expect(pages).toHaveLength(12);
    },
    15 * 60_000,
  );
});
