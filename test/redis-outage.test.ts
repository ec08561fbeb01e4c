/**
 * A Redis outage in the middle of a run: the frequent-context cache is bypassed (errors counted, answers still right,
 * within a bounded time), real episodes still complete, and once Redis is back the driver reconnects by itself and
 * caches again. Runs a private redis-server on a spare port, so killing it touches nothing else.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
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

  // The case timeout bounds each wait of the outage; the errors' messages show the driver's bounds ended each call.
  it('bypasses the cache while Redis is down, and reconnects and caches again once it is back', async () => {
    const port = await sparePort();
    server = await startRedis(port);
    const driver = createRedisCacheDriver({ url: `redis://127.0.0.1:${port}`, commandTimeoutMs: 300 });
    const store = createMemoryStateStore();
    await store.create(makeStoryState('tide'));
    const cacheErrors: string[] = [];
    const errorWaiters: Array<() => void> = [];
    /** Resolves once `count` cache failures have been reported. */
    const reported = async (count: number) => {
      while (cacheErrors.length < count) await new Promise<void>((resolve) => errorWaiters.push(resolve));
    };
    const cache = new ContextCache({
      driver,
      store,
      onError: (error, operation) => {
        cacheErrors.push(`${operation}: ${String(error)}`);
        for (const wake of errorWaiters.splice(0)) wake();
      },
    });
    // A call ended by the driver's commandTimeoutMs or by the one retry it gives its client; not by ContextCache's
    // own, longer timeoutMs, nor by ioredis's defaults.
    const endedByTheDriver =
      /^\w+: ProviderError: Redis \w+ (timed out after 300 ms|failed: Reached the max retries per request limit \(which is 1\))/;
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

      // Down: SIGKILL, no goodbye. Reads come from the store, each ended by the driver's bounds, failures counted.
      await killed(server);
      const duringOutage = await cache.getFrequentContext('tide');
      expect(duringOutage).toEqual(expectedUp);
      expect(cacheErrors).toEqual([expect.stringMatching(/^get: /)]);
      // The read, then the write-back, which the retrieval no longer waits for: it fails within its own timeout.
      await reported(2);
      expect(cache.stats().errors).toBeGreaterThanOrEqual(2);
      const downResults = [await engine.runEpisode('tide'), await engine.runEpisode('tide')];
      for (const result of downResults) {
        expect(result.outcome).toBe('created');
        expect(result.complete).toBe(true);
      }
      for (const failure of cacheErrors) expect(failure).toMatch(endedByTheDriver);
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
