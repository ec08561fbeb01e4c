/**
 * A Redis outage in the middle of a run: the frequent-context cache is bypassed (errors counted, answers still right,
 * within a bounded time), real episodes still complete, and once Redis is back the driver reconnects by itself and
 * caches again. Runs a private redis-server on a spare port, so killing it touches nothing else.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { ContextCache } from '../src/context/context-cache.js';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createMemoryVectorIndex } from '../src/context/memory-vector-index.js';
import { createRedisCacheDriver } from '../src/context/redis.js';
import { createStoryEngine } from '../src/engine/engine.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import { makeStoryState } from '../src/testing/fixtures.js';

function redisServerAvailable(): boolean {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const available = redisServerAvailable();
if (!available && process.env.CI) throw new Error('redis-server is not on the PATH; .ci/run installs Redis');
if (!available) console.info('[redis-outage] skipped: redis-server is not on the PATH');

async function sparePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  const probe = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
  });
  probe.on('error', () => {});
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
    try {
      await probe.connect();
      await probe.ping();
      probe.disconnect();
      return child;
    } catch {
      probe.disconnect();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server did not start on port ${port}`);
}

async function killed(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

describe.skipIf(!available)('a Redis outage during a run', () => {
  let server: ChildProcess | undefined;
  afterAll(async () => {
    if (server) await killed(server);
  });

  it('bypasses the cache while Redis is down, and reconnects and caches again once it is back', async () => {
    const port = await sparePort();
    server = await startRedis(port);
    const driver = createRedisCacheDriver({ url: `redis://127.0.0.1:${port}`, commandTimeoutMs: 300 });
    const store = createMemoryStateStore();
    await store.create(makeStoryState('tide'));
    const cacheErrors: string[] = [];
    const cache = new ContextCache({
      driver,
      store,
      onError: (error, operation) => cacheErrors.push(`${operation}: ${String(error)}`),
    });
    const dimensions = 256;
    const context = new ContextManager({
      store,
      vectors: createMemoryVectorIndex({ dimensions }),
      keywords: createMemoryKeywordIndex(),
      embedder: createHashingEmbedder({ dimensions }),
      cache,
    });
    const engine = createStoryEngine({ store, generator: createProceduralNarrator(), context });
    const raw = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
    raw.on('error', () => {});

    try {
      // Up: episodes complete and the frequent context lands in Redis.
      for (let i = 0; i < 2; i++) expect((await engine.runEpisode('tide')).complete).toBe(true);
      const upState = await store.load('tide');
      const expectedUp = await cache.getFrequentContext('tide');
      expect(expectedUp.version).toBe(upState.version);
      expect(await raw.exists(cache.keyFor('tide', upState.version))).toBe(1);
      expect(cache.stats().errors).toBe(0);
      const hitsBefore = cache.stats().hits;
      await cache.getFrequentContext('tide');
      expect(cache.stats().hits).toBe(hitsBefore + 1);

      // Down: SIGKILL, no goodbye. Reads come from the store, within a bounded time, with the failures counted.
      await killed(server);
      const started = Date.now();
      const duringOutage = await cache.getFrequentContext('tide');
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(duringOutage).toEqual(expectedUp);
      // The read, then the write-back, which the retrieval no longer waits for: it fails within its own timeout.
      await vi.waitFor(() => expect(cache.stats().errors).toBeGreaterThanOrEqual(2), { timeout: 2_000 });
      const episodesStarted = Date.now();
      const downResults = [await engine.runEpisode('tide'), await engine.runEpisode('tide')];
      for (const result of downResults) {
        expect(result.outcome).toBe('created');
        expect(result.complete).toBe(true);
      }
      expect(Date.now() - episodesStarted).toBeLessThan(10_000);
      const downState = await store.load('tide');
      expect(downState.sceneCount).toBe(4);
      const fresh = await cache.getFrequentContext('tide');
      expect(fresh.version).toBe(downState.version);
      expect(fresh.recent_scenes.map((scene) => scene.id)).toContain(downState.sceneId);

      // Back on the same port: the driver reconnects by itself and the cache is used again.
      server = await startRedis(port);
      for (const deadline = Date.now() + 10_000; ; ) {
        try {
          await driver.get('probe');
          break;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      expect((await engine.runEpisode('tide')).complete).toBe(true);
      const backState = await store.load('tide');
      await cache.getFrequentContext('tide');
      expect(await raw.exists(cache.keyFor('tide', backState.version))).toBe(1);
      const errorsAfterRecovery = cache.stats().errors;
      const hits = cache.stats().hits;
      expect(await cache.getFrequentContext('tide')).toEqual(await cache.getFrequentContext('tide'));
      expect(cache.stats().hits).toBe(hits + 2);
      expect(cache.stats().errors).toBe(errorsAfterRecovery);
      expect(cacheErrors.length).toBe(errorsAfterRecovery);
    } finally {
      raw.disconnect();
      await driver.close();
    }
  }, 60_000);
});
