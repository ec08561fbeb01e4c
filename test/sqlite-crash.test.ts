/**
 * Crash safety of the SQLite state store: a child commits in a tight loop and is SIGKILLed at random moments, many
 * times over; after each kill the file must open, pass SQLite's integrity check, and hold only whole commits.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { seededRandom } from '../src/core/seeded-random.js';
import type { Scene, StoryState, UserInfluence } from '../src/state/schema.js';
import { createSqliteStateStore } from '../src/state/sqlite.js';
import { openSqliteDatabase } from '../src/state/sqlite-database.js';
import { makeStoryState } from '../src/testing/fixtures.js';

const repositoryRoot = fileURLToPath(new URL('../', import.meta.url));
const worker = path.join(repositoryRoot, 'test/fixtures/sqlite-commit-worker.ts');
const folder = mkdtempSync(path.join(tmpdir(), 'storyloom-sqlite-crash-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

const KILLS = 25;
/** The loop stops early past this, so a slow CI machine still finishes; at least MIN_KILLS must happen. */
const TIME_BUDGET_MS = 90_000;
const MIN_KILLS = 10;

/** Runs the committing child and kills it `delayMs` after it reports it has opened the file. */
function runAndKill(file: string, delayMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', worker, 'crash', file, 'crashy', 'k'], {
      cwd: repositoryRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout.once('data', () => {
      setTimeout(() => child.kill('SIGKILL'), delayMs);
    });
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`the child ended on its own (code ${code}) before it was killed: ${stderr}`));
    });
  });
}

/** Every check that a set of commits is whole; returns how many scenes are committed. */
async function checkWholeCommits(file: string): Promise<number> {
  const database = openSqliteDatabase({ path: file });
  expect(database.integrityCheck()).toEqual(['ok']);
  const store = createSqliteStateStore({ database });
  const lines: string[] = [];
  for await (const line of store.exportStory('crashy')) lines.push(line);
  database.close();
  const records = lines.map((line) => JSON.parse(line));
  const state: StoryState = records.find((record) => record.kind === 'state').state;
  const snapshots: StoryState[] = records.filter((r) => r.kind === 'snapshot').map((r) => r.state);
  const scenes: Scene[] = records.filter((r) => r.kind === 'scene').map((r) => r.scene);
  const influences: UserInfluence[] = records.filter((r) => r.kind === 'influence').map((r) => r.influence);

  expect(state.version).toBe(scenes.length);
  expect(state.sceneCount).toBe(scenes.length);
  expect(scenes.map((scene) => scene.index)).toEqual(scenes.map((_, i) => i));
  expect(snapshots.map((snapshot) => snapshot.version)).toEqual([0, ...scenes.map((scene) => scene.stateVersion)]);
  if (scenes.length > 0) expect(state.sceneId).toBe(scenes.at(-1)!.id);
  const committed = new Set(scenes.map((scene) => scene.id));
  for (const scene of scenes) {
    expect(scene.text.length).toBe(199_000);
    // Every influence the scene consumed is applied by it, and the one it turned down is rejected by it.
    for (const id of scene.influencesApplied) {
      const influence = influences.find((candidate) => candidate.id === id);
      expect(influence?.status, id).toBe('applied');
      expect(influence?.resolvedIn).toBe(scene.id);
    }
    const rejected = influences.find((candidate) => candidate.id === `i${scene.index}-r`);
    expect(rejected?.status).toBe('rejected');
  }
  // No influence is resolved by a scene that was not committed.
  for (const influence of influences) {
    if (influence.status === 'pending') expect(influence.resolvedIn ?? null).toBeNull();
    else expect(committed.has(influence.resolvedIn!), `${influence.id} resolved in ${influence.resolvedIn}`).toBe(true);
  }
  return scenes.length;
}

describe('SQLite state store under SIGKILL', () => {
  it(`the file stays sound and every commit is whole or absent, over ${KILLS} kills`, async () => {
    const file = path.join(folder, 'crash.db');
    const store = createSqliteStateStore({ path: file });
    await store.create(makeStoryState('crashy'));
    await store.close();
    const random = seededRandom(20_240_611);
    const started = Date.now();
    let kills = 0;
    let scenes = 0;
    while (kills < KILLS && Date.now() - started < TIME_BUDGET_MS) {
      await runAndKill(file, 20 + Math.floor(random() * 250));
      kills++;
      const after = await checkWholeCommits(file);
      expect(after).toBeGreaterThanOrEqual(scenes);
      scenes = after;
    }
    expect(kills).toBeGreaterThanOrEqual(MIN_KILLS);
    // The children made progress between kills, so kills landed among commits, not before the first one.
    expect(scenes).toBeGreaterThan(kills);
    console.info(`sqlite crash test: ${kills} kills, ${scenes} scenes committed, ${Date.now() - started} ms`);
  }, 180_000);
});
