import { randomUUID } from 'node:crypto';
import { createConnection, createServer, type Socket } from 'node:net';
import { Redis, ReplyError } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { ProviderError, ValidationError } from '../core/errors.js';
import { createMemoryStateStore } from '../state/memory.js';
import { runCacheDriverSuite } from '../testing/cache-driver-suite.js';
import { makeStoryState } from '../testing/fixtures.js';
import { ContextCache } from './context-cache.js';
import { clusterSlot, createRedisCacheDriver, escapeGlob } from './redis.js';

const REDIS_URL = 'redis://127.0.0.1:6379';

/** Whether something answers on the Redis port; CI starts Redis, so there a miss is a failure, not a skip. */
async function redisReachable(): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port: 6379 });
    socket.setTimeout(500);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

const reachable = await redisReachable();
if (!reachable && process.env.CI) throw new Error('Redis is not reachable on 127.0.0.1:6379; .ci/run should start it');
if (!reachable) console.info('[redis] skipped: nothing answers on 127.0.0.1:6379 (start redis-server to run)');
const describeRedis = reachable ? describe : describe.skip;

describeRedis('createRedisCacheDriver against a real Redis', () => {
  const counted = runCacheDriverSuite(
    { describe, it },
    {
      name: 'redis',
      create: () => createRedisCacheDriver({ url: REDIS_URL, keyPrefix: `sl-test-${randomUUID().slice(0, 8)}:` }),
      destroy: (driver) => driver.close(),
      // Redis's clock cannot be moved: wait for real, with the suite's short TTLs.
      advanceTime: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    },
  );

  it('runs every case of the suite', () => {
    expect(counted).toBe(16);
  });

  describe('adapter specifics', () => {
    const raw = new Redis(REDIS_URL, { lazyConnect: true });
    afterAll(() => raw.quit());

    it('writes keys under keyPrefix, with a PX ttl and NX semantics visible to other clients', async () => {
      const prefix = `sl-test-${randomUUID().slice(0, 8)}:`;
      const driver = createRedisCacheDriver({ url: REDIS_URL, keyPrefix: prefix });
      try {
        await driver.set('story:{s1}:frequent:v1', 'value', { ttlMs: 60_000 });
        expect(await raw.get(`${prefix}story:{s1}:frequent:v1`)).toBe('value');
        const pttl = await raw.pttl(`${prefix}story:{s1}:frequent:v1`);
        expect(pttl).toBeGreaterThan(50_000);
        expect(pttl).toBeLessThanOrEqual(60_000);
        await raw.set(`${prefix}lock`, 'other process');
        expect(await driver.setIfAbsent('lock', 'mine')).toBe(false);
        expect(await driver.get('lock')).toBe('other process');
      } finally {
        await driver.close();
      }
    });

    it('deletePrefix stays inside its keyPrefix', async () => {
      const mine = `sl-test-${randomUUID().slice(0, 8)}:`;
      const theirs = `sl-test-${randomUUID().slice(0, 8)}:`;
      const driver = createRedisCacheDriver({ url: REDIS_URL, keyPrefix: mine });
      try {
        await raw.set(`${theirs}story:{s1}:a`, 'kept');
        await driver.set('story:{s1}:a', 'gone');
        expect(await driver.deletePrefix('story:')).toBe(1);
        expect(await raw.get(`${theirs}story:{s1}:a`)).toBe('kept');
      } finally {
        await raw.del(`${theirs}story:{s1}:a`);
        await driver.close();
      }
    });

    it('sends at most 500 keys a command, however many one call names (ElastiCache Serverless takes under 4,000 arguments)', async () => {
      const raw = new Redis(REDIS_URL);
      const sizes: Record<string, number[]> = { mget: [], unlink: [] };
      // The real client, with the number of keys of each MGET and UNLINK noted.
      const noting = new Proxy(raw, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver);
          if (property !== 'mget' && property !== 'unlink') return value;
          return (...keys: unknown[]) => {
            sizes[property]!.push(keys.flat().length);
            return (value as (...args: unknown[]) => unknown).apply(target, keys);
          };
        },
      });
      const driver = createRedisCacheDriver({ client: noting, keyPrefix: `sl-test-${randomUUID().slice(0, 8)}:` });
      try {
        // One story's keys: one hash tag, one slot.
        const keys = Array.from({ length: 1_200 }, (_, at) => `story:{s1}:k${at}`);
        await Promise.all(keys.map((key) => driver.set(key, key, { ttlMs: 60_000 })));
        expect(await driver.getMany(keys)).toEqual(keys);
        expect(await driver.delete(keys)).toBe(keys.length);
        expect(sizes).toEqual({ mget: [500, 500, 200], unlink: [500, 500, 200] });
      } finally {
        await driver.close();
        raw.disconnect();
      }
    });

    it('deletePrefix removes every key under the prefix when they take more than one SCAN step', async () => {
      const driver = createRedisCacheDriver({ url: REDIS_URL, keyPrefix: `sl-test-${randomUUID().slice(0, 8)}:` });
      try {
        // 1,500 keys: a SCAN step (COUNT 500) covers about 500 buckets of a table of at least 2,048.
        const keys = Array.from({ length: 1_500 }, (_, at) => `story:{s1}:frequent:v${at}`);
        // With a ttl, so a failing run leaves nothing behind for long.
        await Promise.all(keys.map((key) => driver.set(key, 'stale', { ttlMs: 60_000 })));
        expect(await driver.deletePrefix('story:{s1}:')).toBe(keys.length);
        expect((await driver.getMany(keys)).filter((value) => value !== null)).toEqual([]);
      } finally {
        await driver.close();
      }
    });

    // The case timeout bounds the call: far above commandTimeoutMs, far below ioredis's default 20 retries a request.
    it('a call fails fast with a retryable ProviderError when nothing listens', { timeout: 3_000 }, async () => {
      const driver = createRedisCacheDriver({ url: 'redis://127.0.0.1:1', commandTimeoutMs: 300 });
      const error = await driver.get('a').catch((caught: unknown) => caught);
      expect(ProviderError.isInstance(error)).toBe(true);
      expect((error as ProviderError).isRetryable).toBe(true);
      // One of the driver's own bounds ended it: its timer, or the single retry it gives the client.
      expect((error as ProviderError).message).toMatch(
        /timed out after 300 ms|max retries per request limit \(which is 1\)/,
      );
      await driver.close();
    });

    it('a reply that refuses the command as sent (WRONGTYPE) is a ProviderError that is not retryable', async () => {
      const prefix = `sl-test-${randomUUID().slice(0, 8)}:`;
      const driver = createRedisCacheDriver({ url: REDIS_URL, keyPrefix: prefix });
      try {
        await raw.hset(`${prefix}a-hash`, 'field', 'value');
        const error = await driver.get('a-hash').catch((caught: unknown) => caught);
        expect(ProviderError.isInstance(error) && error.message).toMatch(/WRONGTYPE/);
        expect((error as ProviderError).isRetryable).toBe(false);
      } finally {
        await raw.del(`${prefix}a-hash`);
        await driver.close();
      }
    });

    it('deletePrefix removes keys under the prefix whose bytes are not UTF-8, past a multi-byte client keyPrefix', async () => {
      // Another client wrote a key of raw bytes; read as a string it would come back altered and survive the UNLINK.
      const appPrefix = `sl-test-${randomUUID().slice(0, 8)}-ü:`;
      const client = new Redis(REDIS_URL, { keyPrefix: appPrefix, maxRetriesPerRequest: 1 });
      const driver = createRedisCacheDriver({ client, keyPrefix: 'cache-✓:' });
      const binary = Buffer.concat([Buffer.from(`${appPrefix}cache-✓:story:{s}:`), Buffer.from([0xff, 0xfe])]);
      const neighbour = `${appPrefix}cache-✓:story:{t}:kept`;
      try {
        await raw.set(binary, 'foreign');
        await raw.set(neighbour, 'kept');
        await driver.set('story:{s}:plain', 'mine');
        expect(await driver.deletePrefix('story:{s}:')).toBe(2);
        expect(await raw.exists(binary)).toBe(0);
        expect(await raw.get(`${appPrefix}cache-✓:story:{s}:plain`)).toBeNull();
        expect(await raw.get(neighbour)).toBe('kept');
      } finally {
        await raw.del(binary, neighbour, `${appPrefix}cache-✓:story:{s}:plain`);
        await driver.close();
        client.disconnect();
      }
    });

    it('deletes through an injected client that has its own ioredis keyPrefix', async () => {
      const appPrefix = `sl-test-${randomUUID().slice(0, 8)}:`;
      // A client the application owns and shares, namespaced the usual ioredis way.
      const client = new Redis(REDIS_URL, { keyPrefix: appPrefix, maxRetriesPerRequest: 1 });
      const raw = new Redis(REDIS_URL);
      const driver = createRedisCacheDriver({ client });
      const store = createMemoryStateStore();
      await store.create(makeStoryState('tale'));
      const cache = new ContextCache({ driver, store });
      try {
        await cache.cacheFrequentContext('tale');
        expect(await raw.exists(appPrefix + cache.keyFor('tale', 0))).toBe(1);
        await cache.invalidate('tale');
        expect(cache.stats().errors).toBe(0);
        expect(await raw.exists(appPrefix + cache.keyFor('tale', 0))).toBe(0);
      } finally {
        await raw.del(appPrefix + cache.keyFor('tale', 0));
        await driver.close();
        client.disconnect();
        raw.disconnect();
      }
    });
  });
});

describe('createRedisCacheDriver without a server', () => {
  it('refuses keys, prefixes and a keyPrefix that are not well-formed UTF-16, which UTF-8 would merge', async () => {
    // Sent as UTF-8, 'k\uD800' and 'k\uD801' both become 'k\uFFFD': one entry for two keys.
    const driver = createRedisCacheDriver({ url: 'redis://127.0.0.1:1', commandTimeoutMs: 300 });
    try {
      for (const call of [
        () => driver.set('k\uD800', 'v'),
        () => driver.setIfAbsent('k\uDC00', 'v'),
        () => driver.get('k\uD800'),
        () => driver.getMany(['fine', 'k\uD800']),
        () => driver.delete(['k\uD800']),
        () => driver.deletePrefix('story:{\uD83D}:'),
      ]) {
        await expect(call()).rejects.toSatisfy(ValidationError.isInstance);
      }
    } finally {
      await driver.close();
    }
    expect(() => createRedisCacheDriver({ url: REDIS_URL, keyPrefix: 'app\uD800:' })).toThrow(/well-formed/);
  });

  it("a command a server never answers fails with code TIMEOUT, whichever timer (the driver's or ioredis's) fires first", async () => {
    // A server that accepts connections and never says a word: every command, the connection's handshake too, waits.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    const driver = createRedisCacheDriver({ url: `redis://127.0.0.1:${port}`, commandTimeoutMs: 200 });
    try {
      const calls = [
        () => driver.get('a'),
        () => driver.set('a', 'v'),
        () => driver.getMany(['a', 'b']),
        () => driver.setIfAbsent('a', 'v', { ttlMs: 1_000 }),
        () => driver.delete(['a']),
        () => driver.get('b'),
        () => driver.set('b', 'v', { ttlMs: 1_000 }),
        () => driver.get('c'),
      ];
      const codes: string[] = [];
      for (const call of calls) {
        const error = await call().catch((caught: unknown) => caught);
        expect(ProviderError.isInstance(error)).toBe(true);
        expect((error as ProviderError).isRetryable).toBe(true);
        codes.push((error as ProviderError).code);
      }
      expect(codes).toEqual(calls.map(() => 'TIMEOUT'));
    } finally {
      await driver.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  }, 30_000);

  it('validates its options', () => {
    expect(() => createRedisCacheDriver({})).toThrow(ValidationError);
    expect(() => createRedisCacheDriver({ url: 'http://x' })).toThrow(/redis:\/\//);
    expect(() => createRedisCacheDriver({ url: REDIS_URL, cluster: { nodes: [] } })).toThrow(/exactly one/);
    expect(() => createRedisCacheDriver({ url: REDIS_URL, commandTimeoutMs: 0 })).toThrow(/commandTimeoutMs/);
  });

  it('refuses a commandTimeoutMs a Node timer cannot wait, which made every command time out at once', async () => {
    // setTimeout fires a delay above 2^31-1 ms after 1 ms.
    for (const commandTimeoutMs of [2 ** 31, 1e12, Number.POSITIVE_INFINITY]) {
      expect(() => createRedisCacheDriver({ url: REDIS_URL, commandTimeoutMs })).toThrow(/commandTimeoutMs/);
    }
    const longest = createRedisCacheDriver({ url: REDIS_URL, commandTimeoutMs: 2_147_483_647 });
    await longest.close();
  });

  it('maps an argument Redis refuses to a ProviderError that is not retryable, and keeps others retryable', async () => {
    // A client whose SET gets the given reply, as ioredis reports one.
    const replying = (reply: string) =>
      createRedisCacheDriver({
        client: { set: async () => Promise.reject(new ReplyError(reply)) } as unknown as Redis,
      });
    const outcome = async (reply: string) => {
      const error = await replying(reply)
        .set('k', 'v', { ttlMs: 1_000 })
        .catch((caught: unknown) => caught);
      expect(ProviderError.isInstance(error)).toBe(true);
      return (error as ProviderError).isRetryable;
    };
    // The same command gets the same answer: retrying it only delays the caller.
    expect(await outcome('ERR value is not an integer or out of range')).toBe(false);
    expect(await outcome("ERR invalid expire time in 'set' command")).toBe(false);
    expect(await outcome('ERR syntax error')).toBe(false);
    // These pass by themselves.
    expect(await outcome('LOADING Redis is loading the dataset in memory')).toBe(true);
    expect(await outcome('TRYAGAIN Multiple keys request during rehashing of slot')).toBe(true);
    expect(await outcome('ERR max number of clients reached')).toBe(true);
  });

  it("maps an injected client's own commandTimeout to code TIMEOUT, retryable", async () => {
    // ioredis rejects with this plain Error when its commandTimeout fires, whatever figure the application chose.
    const driver = createRedisCacheDriver({
      client: { get: async () => Promise.reject(new Error('Command timed out')) } as unknown as Redis,
    });
    const error = await driver.get('k').catch((caught: unknown) => caught);
    expect(ProviderError.isInstance(error) && error.code).toBe('TIMEOUT');
    expect((error as ProviderError).isRetryable).toBe(true);
  });

  it('computes the cluster slot of the hash tag only, as Redis does', () => {
    // Reference values from CLUSTER KEYSLOT.
    expect(clusterSlot('foo')).toBe(12182);
    expect(clusterSlot('123456789')).toBe(12739);
    expect(clusterSlot('storyloom:story:{s1}:frequent:v1')).toBe(clusterSlot('s1'));
    expect(clusterSlot('x:{s1}:a')).toBe(clusterSlot('y:{s1}:b'));
    expect(clusterSlot('a{}b')).not.toBe(clusterSlot(''));
  });

  it('escapes every glob character of SCAN MATCH', () => {
    expect(escapeGlob('p[1]*?\\:^')).toBe('p\\[1\\]\\*\\?\\\\:\\^');
  });
});
