/**
 * Fault injection across processes: a child process runs episodes on a SQLite file and a file site and SIGKILLs
 * itself before or after a port call; a new child carries on. The final store export (publication log included),
 * the site files and the index must equal those of an uninterrupted child, for every kill point.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allFaults, type Fault, readSite, STORY_ID } from './fixtures/engine-world.js';

const CHILD = fileURLToPath(new URL('./fixtures/engine-child.ts', import.meta.url));
const EPISODES = 3;
const FAULT_EPISODE = 1;

async function sqliteAvailable(): Promise<string | undefined> {
  if (!existsSync(fileURLToPath(new URL('../src/state/sqlite.ts', import.meta.url)))) {
    return 'src/state/sqlite.ts (createSqliteStateStore) does not exist yet';
  }
  try {
    await import('better-sqlite3');
    return undefined;
  } catch {
    return 'better-sqlite3 is not installed';
  }
}
const missing = await sqliteAvailable();

interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

function runChild(config: Record<string, unknown>): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    child.stdout.resume();
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stderr }));
  });
}

interface Outcome {
  exported: string[];
  site: Record<string, string>;
  requests: string[];
  kills: number;
}

const root = missing ? '' : mkdtempSync(join(tmpdir(), 'storyloom-engine-kill-'));
let counter = 0;

async function runToCompletion(fault: Fault | undefined, keyed: boolean): Promise<Outcome> {
  const dir = join(root, `run-${counter++}`);
  const config = {
    db: `${dir}.db`,
    site: dir,
    episodes: EPISODES,
    keyed,
    faultEpisode: FAULT_EPISODE,
    marker: `${dir}.fired`,
    ...(fault ? { fault } : {}),
  };
  let kills = 0;
  for (let spawnCount = 0; ; spawnCount++) {
    if (spawnCount > 4) throw new Error('the child never finished');
    const run = await runChild(config);
    if (run.signal === 'SIGKILL') {
      kills++;
      continue;
    }
    if (run.code !== 0) throw new Error(`child failed (${run.code}): ${run.stderr}`);
    break;
  }
  const { createSqliteStateStore } = await import('../src/state/sqlite.js');
  const store = createSqliteStateStore({ path: config.db });
  const exported: string[] = [];
  for await (const line of store.exportStory(STORY_ID)) exported.push(line);
  await store.close();
  const requestLog = join(dir, 'requests.log');
  const requests = existsSync(requestLog) ? readFileSync(requestLog, 'utf8').trim().split('\n') : [];
  return { exported, site: readSite(dir), requests, kills };
}

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

for (const keyed of [false, true]) {
  // Every kill point without keys; with keys, the points where the key's record is written or consulted.
  const faults = allFaults(['site']).filter((fault) =>
    keyed
      ? ['store.commitScene', 'record:claim', 'record:scene', 'context.indexScene', 'generator.generate'].includes(
          fault.point,
        )
      : fault.point !== 'record:claim' && fault.point !== 'record:scene',
  );
  describe.skipIf(missing !== undefined)(
    `engine fault injection: SIGKILL (${keyed ? 'with' : 'without'} idempotency keys)${missing ? ` — skipped: ${missing}` : ''}`,
    () => {
      let reference: Outcome;
      beforeAll(async () => {
        reference = await runToCompletion(undefined, keyed);
      }, 60_000);

      it('the reference run publishes every episode once', () => {
        expect(Object.keys(reference.site)).toHaveLength(EPISODES);
        expect(reference.requests).toHaveLength(EPISODES);
        expect(reference.exported.filter((line) => line.includes('"kind":"scene"'))).toHaveLength(EPISODES);
      });

      for (const fault of faults) {
        it(`SIGKILL ${fault.when} ${fault.point}, run again: identical to the uninterrupted run`, {
          timeout: 60_000,
        }, async () => {
          const outcome = await runToCompletion(fault, keyed);
          expect(outcome.kills).toBe(1);
          expect(outcome.exported).toEqual(reference.exported);
          expect(outcome.site).toEqual(reference.site);
          // A kill between a publish and its log entry repeats the request once; the publication exists once.
          expect(outcome.requests.length - reference.requests.length).toBeLessThanOrEqual(1);
          expect(new Set(outcome.requests).size).toBe(EPISODES);
        });
      }
    },
  );
}
