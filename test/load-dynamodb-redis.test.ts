/**
 * Load and concurrency on the reference backends: twenty engine processes run episodes of one story against
 * DynamoDB Local and Redis while 1,000 influences are enqueued concurrently (some ids sent twice). Afterwards the
 * store must hold exactly one scene per version, scene indexes 0..N-1 without gaps or repeats, exactly N `created`
 * outcomes across the processes, and every influence exactly once: applied or rejected by exactly one committed
 * scene, or still pending. The figures go to the console, and to `bench/results/load-dynamodb-redis.json` with
 * `npm run bench:load` (`RECORD_LOAD_RESULTS=1`), so a plain test run leaves the committed figures alone.
 *
 * Each child (`test/fixtures/load-engine-child.ts`) uses a `ContextManager` over in-memory indexes of its own, a
 * `ContextCache` on Redis under this run's key prefix, the procedural narrator and a recording publisher.
 *
 * Needs DynamoDB Local (`test/support/dynamodb-local.ts`) and Redis on 127.0.0.1:6379: outside CI a missing one
 * skips with the printed reason, in CI it fails.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DeleteTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisCacheDriver } from '../src/context/redis.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createDynamoStateStore, createStoryTable, type DynamoStateStore } from '../src/state/dynamodb.js';
import type { Scene, UserInfluenceInput } from '../src/state/schema.js';
import type { LoadChildConfig, LoadChildReport } from './fixtures/load-engine-child.js';
import { startDynamoLocal } from './support/dynamodb-local.js';

const CHILD = fileURLToPath(new URL('./fixtures/load-engine-child.ts', import.meta.url));
const RESULTS = fileURLToPath(new URL('../bench/results/load-dynamodb-redis.json', import.meta.url));

const PROCESSES = 20;
const TARGET_SCENES = 40;
/**
 * The fewest scenes that still make the run meaningful when the time bound, not the target, stops it (a very slow
 * machine): every check below holds for any N, and the figures say which bound stopped each process.
 */
const MIN_SCENES = 10;
const INFLUENCES = 1_000;
/**
 * The first influences are sent in one concurrent burst while the children start, so that the first episode finds
 * more pending than one DynamoDB commit may resolve (90): it must take 90 and leave the rest for later scenes.
 */
const EARLY_INFLUENCES = 150;
/** The rest arrive in concurrent batches while the episodes run. */
const BATCHES = 17;
/** Each batch after the first resends this many ids of earlier batches; each batch also sends two of its own twice. */
const RESENDS_PER_BATCH = 5;
const BATCH_GAP_MS = 150;
/** A child's pause after a run that wrote nothing, before its next run (see `LoadChildConfig.idleMs`). */
const IDLE_MS = 50;
/** No child starts a run after this long; every wait below is bounded too. */
const RUN_BOUND_MS = 100_000;
const READY_BOUND_MS = 60_000;
const EXIT_BOUND_MS = 40_000;
const REDIS_URL = 'redis://127.0.0.1:6379';

async function redisReason(): Promise<string | undefined> {
  const driver = createRedisCacheDriver({ url: REDIS_URL, commandTimeoutMs: 1_000 });
  try {
    await driver.get('storyloom-load-probe');
    return undefined;
  } catch (error) {
    return `Redis is not reachable on 127.0.0.1:6379 (${(error as Error).message})`;
  } finally {
    await driver.close().catch(() => undefined);
  }
}

const local = await startDynamoLocal();
afterAll(() => local.stop());
let skipReason = local.skipReason;
if (skipReason === undefined) {
  const reason = await redisReason();
  if (reason && process.env.CI === 'true') throw new Error(`${reason} (CI must run the load test)`);
  if (reason) {
    console.warn(`[load-dynamodb-redis skipped] ${reason}`);
    skipReason = reason;
  }
}

interface Child {
  process: ChildProcess;
  stdout: string;
  stderr: string;
  ready: Promise<void>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnChild(config: LoadChildConfig): Child {
  const child = spawn(process.execPath, ['--no-warnings', '--import', 'tsx', CHILD, JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const record: Child = {
    process: child,
    stdout: '',
    stderr: '',
    ready: Promise.resolve(),
    exit: Promise.resolve({ code: null, signal: null }),
  };
  record.exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', () => resolve({ code: -1, signal: null }));
  });
  record.ready = new Promise((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      record.stdout += chunk.toString('utf8');
      if (record.stdout.includes('"ready":true')) resolve();
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      record.stderr += chunk.toString('utf8');
    });
    void record.exit.then(({ code, signal }) =>
      reject(new Error(`child ${config.worker} exited before it was ready (${code ?? signal}): ${record.stderr}`)),
    );
  });
  // Promise.all reports the first failure; a later one must not surface as an unhandled rejection.
  record.ready.catch(() => undefined);
  return record;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The i-th influence: votes over three choices, suggestions, tips, and a few whose text is empty once sanitized. */
function influence(storyId: string, i: number): UserInfluenceInput {
  const id = `load-inf-${String(i).padStart(4, '0')}`;
  const author = `reader-${i % 37}`;
  const base = {
    id,
    storyId,
    source: 'api' as const,
    author,
    weight: 1 + (i % 3),
    receivedAt: new Date().toISOString(),
  };
  switch (i % 5) {
    case 0:
    case 1:
      return { ...base, kind: 'vote', choice: ['follow the light', 'stay ashore', 'ring the bell'][i % 3]!, text: '' };
    case 2:
      return { ...base, kind: 'suggestion', choice: null, text: `Let the keeper remember promise number ${i}.` };
    case 3:
      return { ...base, kind: 'tip', choice: i % 2 ? 'ring the bell' : null, text: `A tip, ${i}` };
    default:
      // Markup only: rejected before the narrator sees it.
      return i % 10 === 4
        ? { ...base, kind: 'suggestion', choice: null, text: '<b></b>' }
        : { ...base, kind: 'suggestion', choice: null, text: `Someone should open the old log book (${i}).` };
  }
}

interface EnqueueFigures {
  sent: number;
  inserted: number;
  refused: number;
  insertedById: Map<string, number>;
  ms: number;
}

/**
 * Sends influences `from` .. `to - 1` in `batches` concurrent batches, some ids twice (within a batch, racing their
 * first send, and ids of earlier batches, by then often resolved), and adds the outcomes to `figures`.
 */
async function enqueueRange(
  store: DynamoStateStore,
  storyId: string,
  from: number,
  to: number,
  batches: number,
  figures: EnqueueFigures,
): Promise<void> {
  const started = Date.now();
  const perBatch = Math.ceil((to - from) / batches);
  for (let batch = 0; batch < batches; batch++) {
    const first = from + batch * perBatch;
    const last = Math.min(to, first + perBatch);
    if (first >= last) break;
    const ids: number[] = [];
    for (let i = first; i < last; i++) ids.push(i);
    ids.push(first, Math.min(first + 1, last - 1));
    for (let k = 0; first > 0 && k < RESENDS_PER_BATCH; k++) ids.push((first * 97 + k * 31) % first);
    const results = await Promise.all(
      ids.map(async (i) => {
        const outcome = await store.enqueueInfluence(influence(storyId, i));
        return { id: outcome.influence.id, inserted: outcome.inserted };
      }),
    );
    for (const { id, inserted } of results) {
      figures.sent++;
      if (inserted) {
        figures.inserted++;
        figures.insertedById.set(id, (figures.insertedById.get(id) ?? 0) + 1);
      } else figures.refused++;
    }
    if (batch < batches - 1) await sleep(BATCH_GAP_MS);
  }
  figures.ms += Date.now() - started;
}

async function allScenes(store: DynamoStateStore, storyId: string): Promise<Scene[]> {
  const scenes: Scene[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 1_000; page++) {
    const result = await store.listScenes(storyId, { limit: 7, ...(cursor ? { cursor } : {}) });
    scenes.push(...result.items);
    cursor = result.nextCursor;
    if (!cursor) return scenes;
  }
  throw new Error('listScenes never ended');
}

describe.skipIf(skipReason !== undefined)(
  `load: ${PROCESSES} engine processes on DynamoDB Local + Redis, ${INFLUENCES} concurrent influences${skipReason ? ` — skipped: ${skipReason}` : ''}`,
  () => {
    const storyId = 'load-story';
    const tableName = `load-${randomUUID()}`;
    const redisPrefix = `storyloom-load-${randomUUID()}:`;
    let client: DynamoDBClient;
    let store: DynamoStateStore;
    const children: Child[] = [];

    beforeAll(async () => {
      client = new DynamoDBClient({
        endpoint: local.endpoint!,
        region: 'us-east-1',
        credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
        maxAttempts: 1,
      });
      await createStoryTable(client, tableName);
      store = createDynamoStateStore({
        client,
        tableName,
        retry: { maxRetries: 8, initialDelayMs: 20, maxDelayMs: 500 },
      });
      await store.create(createStoryFromTemplate('lighthouse-keepers', storyId));
    });

    afterAll(async () => {
      for (const child of children) {
        if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
      }
      const driver = createRedisCacheDriver({ url: REDIS_URL, commandTimeoutMs: 2_000 });
      await driver.deletePrefix(redisPrefix).catch(() => undefined);
      await driver.close().catch(() => undefined);
      await store?.close();
      await client?.send(new DeleteTableCommand({ TableName: tableName })).catch(() => undefined);
      client?.destroy();
    });

    it('one scene per version, N created outcomes, every influence exactly once', { timeout: 240_000 }, async () => {
      const spawnStarted = Date.now();
      const deadline = spawnStarted + READY_BOUND_MS + RUN_BOUND_MS;
      for (let worker = 0; worker < PROCESSES; worker++) {
        children.push(
          spawnChild({
            worker,
            endpoint: local.endpoint!,
            tableName,
            storyId,
            redisUrl: REDIS_URL,
            redisPrefix,
            targetVersion: TARGET_SCENES,
            deadline,
            maxRuns: TARGET_SCENES * 3,
            maxErrors: 10,
            idleMs: IDLE_MS,
          }),
        );
      }
      const enqueued: EnqueueFigures = { sent: 0, inserted: 0, refused: 0, insertedById: new Map(), ms: 0 };
      await withTimeout(
        Promise.all([
          ...children.map((child) => child.ready),
          enqueueRange(store, storyId, 0, EARLY_INFLUENCES, 1, enqueued),
        ]),
        READY_BOUND_MS,
        'starting the children',
      );
      const readyMs = Date.now() - spawnStarted;

      // Go: every process starts its episodes at once, while the other influences pour in.
      const started = Date.now();
      for (const child of children) child.process.stdin!.end('go\n');
      await enqueueRange(store, storyId, EARLY_INFLUENCES, INFLUENCES, BATCHES, enqueued);
      const exits = await withTimeout(
        Promise.all(children.map((child) => child.exit)),
        deadline - Date.now() + EXIT_BOUND_MS,
        'the children finishing',
      );
      const wallMs = Date.now() - started;

      // No child crashed, each printed its report.
      exits.forEach((exit, worker) => {
        expect(exit, `child ${worker}: ${children[worker]!.stderr}`).toEqual({ code: 0, signal: null });
      });
      const reports = children.map((child) => {
        const line = child.stdout.trim().split('\n').at(-1)!;
        return JSON.parse(line) as LoadChildReport;
      });
      const errors = reports.flatMap((report) => report.errors.map((error) => ({ worker: report.worker, ...error })));

      // ---- the story: exactly one scene per version, indexes 0..N-1 ------------------------------------------------
      const state = await store.load(storyId);
      const scenes = await allScenes(store, storyId);
      const n = scenes.length;
      expect(n).toBeGreaterThanOrEqual(MIN_SCENES);
      if (n < TARGET_SCENES) console.warn(`[load-dynamodb-redis] the time bound stopped the run at ${n} scenes`);
      expect(state.sceneCount).toBe(n);
      expect(state.version).toBe(n);
      expect(scenes.map((scene) => scene.index)).toEqual([...Array(n).keys()]);
      expect(scenes.map((scene) => scene.stateVersion)).toEqual([...Array(n).keys()].map((i) => i + 1));
      expect(new Set(scenes.map((scene) => scene.id)).size).toBe(n);
      expect(state.sceneId).toBe(scenes.at(-1)!.id);
      expect((await store.getStateAt(storyId, 0))?.sceneId).toBeNull();
      for (const scene of scenes) {
        const snapshot = await store.getStateAt(storyId, scene.stateVersion);
        expect(snapshot?.sceneId, `snapshot of version ${scene.stateVersion}`).toBe(scene.id);
        expect(snapshot?.sceneCount).toBe(scene.index + 1);
        expect((await store.getScene(storyId, scene.id))?.index).toBe(scene.index);
      }
      expect(await store.getStateAt(storyId, n + 1)).toBeNull();

      // ---- outcomes: N created in all, each version created by exactly one process ----------------------------------
      const created = reports.flatMap((report) => report.created.map((entry) => ({ worker: report.worker, ...entry })));
      const totals = { created: 0, existing: 0, resumed: 0 };
      for (const report of reports) {
        totals.created += report.outcomes.created;
        totals.existing += report.outcomes.existing;
        totals.resumed += report.outcomes.resumed;
      }
      expect(totals.created).toBe(n);
      expect(created.map((entry) => entry.version).sort((a, b) => a - b)).toEqual(scenes.map((s) => s.stateVersion));
      const sceneByVersion = new Map(scenes.map((scene) => [scene.stateVersion, scene]));
      for (const entry of created) expect(entry.sceneId).toBe(sceneByVersion.get(entry.version)!.id);

      // ---- influences: each id exactly once; applied/rejected by exactly one scene, or pending ----------------------
      expect(enqueued.inserted).toBe(INFLUENCES);
      expect(enqueued.insertedById.size).toBe(INFLUENCES);
      expect([...enqueued.insertedById.values()].every((count) => count === 1)).toBe(true);
      expect(enqueued.refused).toBe(enqueued.sent - INFLUENCES);

      const sceneById = new Map(scenes.map((scene) => [scene.id, scene]));
      const appliedIn = new Map<string, string[]>();
      for (const scene of scenes) {
        for (const id of scene.influencesApplied) appliedIn.set(id, [...(appliedIn.get(id) ?? []), scene.id]);
      }
      const exported: UserInfluenceInput[] = [];
      for await (const line of store.exportStory(storyId)) {
        const record = JSON.parse(line) as { kind: string; influence?: UserInfluenceInput };
        if (record.kind === 'influence') exported.push(record.influence!);
      }
      expect(exported).toHaveLength(INFLUENCES);
      const pendingIds = new Set((await store.pendingInfluences(storyId, { limit: 10_000 })).map((i) => i.id));
      const counts = { applied: 0, rejected: 0, pending: 0 };
      const resolvedBy = new Map<string, string>();
      for (let i = 0; i < INFLUENCES; i++) {
        const id = `load-inf-${String(i).padStart(4, '0')}`;
        const stored = await store.getInfluence(storyId, id);
        expect(stored, id).not.toBeNull();
        expect(
          exported.filter((entry) => entry.id === id),
          id,
        ).toHaveLength(1);
        const status = stored!.status;
        expect(['applied', 'rejected', 'pending'], `${id} status`).toContain(status);
        counts[status as keyof typeof counts]++;
        if (status === 'pending') {
          expect(stored!.resolvedIn, id).toBeNull();
          expect(pendingIds.has(id), id).toBe(true);
          expect(appliedIn.get(id), id).toBeUndefined();
          continue;
        }
        expect(pendingIds.has(id), id).toBe(false);
        const scene = sceneById.get(stored!.resolvedIn ?? '');
        expect(scene, `${id} resolved in ${stored!.resolvedIn}`).toBeDefined();
        // The scene that resolved it was written after it arrived.
        expect(stored!.receivedAt <= scene!.createdAt, id).toBe(true);
        resolvedBy.set(id, scene!.id);
        if (status === 'applied') expect(appliedIn.get(id), id).toEqual([scene!.id]);
        else expect(appliedIn.get(id), id).toBeUndefined();
      }
      expect(pendingIds.size).toBe(counts.pending);
      // What the creating runs reported agrees with the store, influence by influence.
      const reportedResolution = new Map<string, string>();
      for (const entry of created) {
        for (const id of [...entry.applied, ...entry.rejected]) {
          expect(reportedResolution.has(id), `${id} resolved by two runs`).toBe(false);
          reportedResolution.set(id, entry.sceneId);
        }
      }
      expect(reportedResolution).toEqual(resolvedBy);

      // ---- figures --------------------------------------------------------------------------------------------------
      const publishCalls = reports.flatMap((report) => report.published);
      const publishedOnce = new Set(publishCalls);
      for (const scene of scenes) expect(publishedOnce.has(scene.id), `scene ${scene.index} published`).toBe(true);
      const retries: Record<string, number> = {};
      const stepMs: Record<string, number> = {};
      for (const report of reports) {
        for (const [step, count] of Object.entries(report.retries)) retries[step] = (retries[step] ?? 0) + count;
        for (const [step, ms] of Object.entries(report.stepMs)) stepMs[step] = (stepMs[step] ?? 0) + ms;
      }
      const resolvedPerScene = created.map((entry) => entry.applied.length + entry.rejected.length);
      // The first scene found at least EARLY_INFLUENCES pending and took exactly what one commit may resolve.
      const firstScene = created.find((entry) => entry.version === 1)!;
      expect(firstScene.applied.length + firstScene.rejected.length).toBe(store.limits.maxInfluencesPerCommit);
      const episodesMs = Math.max(...reports.map((report) => report.runMs));
      const figures = {
        processes: PROCESSES,
        targetScenes: TARGET_SCENES,
        episodes: n,
        runs: reports.reduce((sum, report) => sum + report.runs, 0),
        outcomes: totals,
        conflictsResolved: totals.existing,
        conflictEvents: reports.reduce((sum, report) => sum + report.conflictEvents, 0),
        dynamodb: reports.reduce(
          (sum, report) => ({
            calls: sum.calls + report.dynamo.calls,
            transactionConflicts: sum.transactionConflicts + report.dynamo.transactionConflicts,
            conditionalCancellations: sum.conditionalCancellations + report.dynamo.conditionalCancellations,
            conditionalPuts: sum.conditionalPuts + report.dynamo.conditionalPuts,
          }),
          { calls: 0, transactionConflicts: 0, conditionalCancellations: 0, conditionalPuts: 0 },
        ),
        stepRetries: retries,
        stepMsSummedOverProcesses: stepMs,
        idleMsAfterNonCreatingRun: IDLE_MS,
        incompleteResults: reports.reduce((sum, report) => sum + report.incomplete, 0),
        runErrors: errors.length,
        influences: {
          enqueued: INFLUENCES,
          sent: enqueued.sent,
          duplicatesRefused: enqueued.refused,
          applied: counts.applied,
          rejected: counts.rejected,
          pending: counts.pending,
          enqueueMs: enqueued.ms,
          mostResolvedByOneScene: Math.max(0, ...resolvedPerScene),
          scenesAtStoreLimit: resolvedPerScene.filter((count) => count >= store.limits.maxInfluencesPerCommit).length,
        },
        publisherCalls: publishCalls.length,
        scenesPublishedMoreThanOnce: publishCalls.length - publishedOnce.size,
        cache: reports.reduce(
          (sum, report) => ({
            hits: sum.hits + report.cache.hits,
            misses: sum.misses + report.cache.misses,
            errors: sum.errors + report.cache.errors,
            computed: sum.computed + report.cache.computed,
          }),
          { hits: 0, misses: 0, errors: 0, computed: 0 },
        ),
        stopReasons: reports.reduce<Record<string, number>>((sum, report) => {
          sum[report.stopReason] = (sum[report.stopReason] ?? 0) + 1;
          return sum;
        }, {}),
        childStartupMs: readyMs,
        episodesMs,
        wallMs,
        episodesPerSecond: Math.round((n / (episodesMs / 1_000)) * 100) / 100,
        context: 'ContextManager over per-process memory indexes + ContextCache on Redis',
        node: process.version,
        recordedAt: new Date().toISOString(),
      };
      console.info(`[load-dynamodb-redis] ${JSON.stringify(figures, null, 2)}`);
      if (errors.length > 0) console.info(`[load-dynamodb-redis] run errors: ${JSON.stringify(errors, null, 2)}`);
      if (process.env.RECORD_LOAD_RESULTS === '1') {
        mkdirSync(fileURLToPath(new URL('../bench/results/', import.meta.url)), { recursive: true });
        writeFileSync(RESULTS, `${JSON.stringify(figures, null, 2)}\n`);
      }

      // Runs may fail (and be retried by the next run) without breaking anything above, but none should here.
      expect(errors).toEqual([]);
    });
  },
);
