/**
 * The Redis cache driver against a live Redis Cluster and over TLS, the shapes of ElastiCache cluster mode and
 * ElastiCache Serverless (TLS and the cluster protocol together). The servers are started for this file from the
 * machine's `redis-server` (see `test/support/redis-local.ts`).
 */
import { randomUUID } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { startLocalRedis } from '../../test/support/redis-local.js';
import { ProviderError } from '../core/errors.js';
import { createMemoryStateStore } from '../state/memory.js';
import { runCacheDriverSuite } from '../testing/cache-driver-suite.js';
import { makeStoryState } from '../testing/fixtures.js';
import type { CacheDriver } from './cache-driver.js';
import { ContextCache } from './context-cache.js';
import { clusterSlot, createRedisCacheDriver } from './redis.js';

const wait = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const prefixOf = () => `sl-test-${randomUUID().slice(0, 8)}:`;

/**
 * Writes 60 keys `spread:0`... with no hash tag through `driver` and checks that they landed on all three masters
 * (read through `raw`); returns them.
 */
async function spreadOverMasters(driver: CacheDriver, raw: Cluster, keyPrefix: string): Promise<string[]> {
  const keys = Array.from({ length: 60 }, (_, i) => `spread:${i}`);
  for (const key of keys) await driver.set(key, key);
  const shards = (await raw.cluster('SLOTS')) as unknown as Array<[number, number, [string, number]]>;
  const owners = new Set(
    keys.map((key) => {
      const slot = clusterSlot(keyPrefix + key);
      return shards.find(([low, high]) => slot >= low && slot <= high)![2][1];
    }),
  );
  expect(owners.size).toBe(3);
  return keys;
}

const cluster = await startLocalRedis({ cluster: true });
const tls = await startLocalRedis({ tls: true });
const tlsCluster = await startLocalRedis({ cluster: true, tls: true });
const oneNode = await startLocalRedis({ cluster: true, masters: 1 });
const byHostname = await startLocalRedis({ cluster: true, masters: 1, tls: true, hostnames: true });
afterAll(() => Promise.all([cluster.stop(), tls.stop(), tlsCluster.stop(), oneNode.stop(), byHostname.stop()]));

/** A describe's title, with the reason it is skipped when its servers could not be started. */
const titled = (title: string, skipReason: string | undefined) =>
  skipReason === undefined ? title : `${title} [skipped: ${skipReason}]`;

const clusterTitle = titled('createRedisCacheDriver against a 3-master Redis Cluster', cluster.skipReason);
describe.skipIf(cluster.skipReason !== undefined)(clusterTitle, () => {
  const nodes = cluster.nodes!;
  const counted = runCacheDriverSuite(
    { describe, it },
    {
      name: 'redis-cluster',
      create: () => createRedisCacheDriver({ cluster: { nodes }, keyPrefix: prefixOf() }),
      destroy: (driver) => driver.close(),
      advanceTime: wait,
    },
  );

  it('runs every case of the suite', () => {
    expect(counted).toBe(16);
  });

  it('getMany groups keys by the slot of the key it sends, prefix included', async () => {
    const keyPrefix = 'app:';
    // Two keys in one slot without the prefix but in two slots with it: grouping by the bare key would send one
    // MGET across two slots, which a cluster refuses (CROSSSLOT).
    const first = 'k0';
    let second = '';
    for (let n = 1; n < 1_000_000 && !second; n++) {
      const candidate = `k${n}`;
      if (
        clusterSlot(candidate) === clusterSlot(first) &&
        clusterSlot(keyPrefix + candidate) !== clusterSlot(keyPrefix + first)
      ) {
        second = candidate;
      }
    }
    expect(second).not.toBe('');
    const driver = createRedisCacheDriver({ cluster: { nodes }, keyPrefix });
    try {
      await driver.set(first, 'one', { ttlMs: 60_000 });
      await driver.set(second, 'two', { ttlMs: 60_000 });
      expect(await driver.getMany([first, 'absent', second])).toEqual(['one', null, 'two']);
      expect(await driver.delete([first, second])).toBe(2);
    } finally {
      await driver.close();
    }
  });

  it('deletePrefix walks every master: keys without a hash tag spread over the whole cluster', async () => {
    const keyPrefix = prefixOf();
    const driver = createRedisCacheDriver({ cluster: { nodes }, keyPrefix });
    const raw = new Cluster(nodes);
    try {
      const keys = await spreadOverMasters(driver, raw, keyPrefix);
      await driver.set('other:1', 'kept');
      expect(await driver.deletePrefix('spread:')).toBe(60);
      expect((await driver.getMany(keys)).every((value) => value === null)).toBe(true);
      expect(await driver.get('other:1')).toBe('kept');
    } finally {
      await driver.close();
      raw.disconnect();
    }
  });

  it('ContextCache keeps one story in one slot and serves, invalidates and rebuilds it on the cluster', async () => {
    const store = createMemoryStateStore();
    await store.create(makeStoryState('harbour'));
    const driver = createRedisCacheDriver({ cluster: { nodes }, keyPrefix: prefixOf() });
    const cache = new ContextCache({ driver, store });
    try {
      const built = await cache.cacheFrequentContext('harbour');
      expect(await cache.getFrequentContext('harbour')).toEqual(built);
      expect(cache.stats()).toMatchObject({ hits: 1 });
      await cache.invalidate('harbour');
      expect(await cache.getFrequentContext('harbour')).toEqual(built);
      expect(cache.stats()).toMatchObject({ errors: 0, computed: 2 });
    } finally {
      await driver.close();
    }
  });

  it('reaches every master of a cluster from a fresh driver given one seed node', async () => {
    const keyPrefix = prefixOf();
    const writer = createRedisCacheDriver({ cluster: { nodes }, keyPrefix });
    const raw = new Cluster(nodes);
    try {
      const keys = await spreadOverMasters(writer, raw, keyPrefix);

      // A new process (a cold Lambda) configured the ElastiCache way: one seed, the configuration endpoint.
      const fresh = createRedisCacheDriver({ cluster: { nodes: [nodes[0]!] }, keyPrefix });
      try {
        expect(await fresh.deletePrefix('spread:')).toBe(60);
      } finally {
        await fresh.close();
      }
      expect((await writer.getMany(keys)).filter((value) => value !== null)).toEqual([]);
    } finally {
      await writer.deletePrefix('spread:').catch(() => 0);
      await writer.close();
      raw.disconnect();
    }
  });
});

const oneNodeTitle = titled(
  'createRedisCacheDriver by url to a one-node server in cluster mode (ElastiCache Serverless shows itself so)',
  oneNode.skipReason,
);
describe.skipIf(oneNode.skipReason !== undefined)(oneNodeTitle, () => {
  const url = () => `redis://127.0.0.1:${oneNode.nodes![0]!.port}`;
  const counted = runCacheDriverSuite(
    { describe, it },
    {
      name: 'redis-one-node-cluster-by-url',
      create: () => createRedisCacheDriver({ url: url(), keyPrefix: prefixOf() }),
      destroy: (driver) => driver.close(),
      advanceTime: wait,
    },
  );

  it('runs every case of the suite', () => {
    expect(counted).toBe(16);
  });

  it('mends the refusal in every call that meets it: two at once on a new driver both answer', async () => {
    const driver = createRedisCacheDriver({ url: url(), keyPrefix: prefixOf() });
    try {
      const first = Array.from({ length: 8 }, (_, i) => `a:${i}`);
      const second = Array.from({ length: 8 }, (_, i) => `b:${i}`);
      for (const key of [...first, ...second]) await driver.set(key, key, { ttlMs: 60_000 });
      expect(await Promise.all([driver.getMany(first), driver.getMany(second)])).toEqual([first, second]);
    } finally {
      await driver.close();
    }
  });

  it('counts every key a delete removed, those of the batches the server took before it refused one included', async () => {
    const driver = createRedisCacheDriver({ url: url(), keyPrefix: prefixOf() });
    try {
      // 500 keys of one slot (a batch the server takes whole), then 20 of many slots (a batch it refuses).
      const keys = [
        ...Array.from({ length: 500 }, (_, i) => `story:{t}:k${i}`),
        ...Array.from({ length: 20 }, (_, i) => `spread:${i}`),
      ];
      for (const key of keys) await driver.set(key, key, { ttlMs: 60_000 });
      expect(await driver.delete(keys)).toBe(keys.length);
      expect((await driver.getMany(keys)).filter((value) => value !== null)).toEqual([]);
    } finally {
      await driver.close();
    }
  });

  it('groups keys by the slot they go out to, a keyPrefix of the client’s own included', async () => {
    const clientPrefix = `${prefixOf()}app:`;
    const keyPrefix = 'drv:';
    // Two keys in one slot as the driver names them, in two once the client adds its own prefix: grouped by the
    // driver's names, they would go out in one MGET across two slots.
    const first = 'k0';
    let second = '';
    for (let n = 1; n < 1_000_000 && !second; n++) {
      const candidate = `k${n}`;
      if (
        clusterSlot(keyPrefix + candidate) === clusterSlot(keyPrefix + first) &&
        clusterSlot(clientPrefix + keyPrefix + candidate) !== clusterSlot(clientPrefix + keyPrefix + first)
      ) {
        second = candidate;
      }
    }
    expect(second).not.toBe('');
    const client = new Redis(url(), { keyPrefix: clientPrefix });
    const driver = createRedisCacheDriver({ client, keyPrefix });
    try {
      await driver.set(first, 'one', { ttlMs: 60_000 });
      await driver.set(second, 'two', { ttlMs: 60_000 });
      // A third key of another slot makes the first MGET cross slots, whatever the pair does.
      await driver.set('other', 'three', { ttlMs: 60_000 });
      expect(await driver.getMany([first, second, 'other'])).toEqual(['one', 'two', 'three']);
      expect(await driver.delete([first, second, 'other'])).toBe(3);
    } finally {
      await driver.close();
      client.disconnect();
    }
  });

  it('reads, deletes and deletes by prefix keys of many slots, one slot a command once the server refuses more', async () => {
    const driver = createRedisCacheDriver({ url: url(), keyPrefix: prefixOf() });
    try {
      const keys = Array.from({ length: 40 }, (_, i) => `spread:${i}`);
      expect(new Set(keys.map((key) => clusterSlot(key))).size).toBeGreaterThan(1);
      for (const key of keys) await driver.set(key, key, { ttlMs: 60_000 });
      expect(await driver.getMany(keys)).toEqual(keys);
      expect(await driver.delete(keys.slice(0, 10))).toBe(10);
      expect(await driver.deletePrefix('spread:')).toBe(30);
      expect((await driver.getMany(keys)).filter((value) => value !== null)).toEqual([]);
    } finally {
      await driver.close();
    }
  });
});

const byHostnameTitle = titled(
  'createRedisCacheDriver over TLS to a cluster whose certificate names its hostname alone, as ElastiCache’s does',
  byHostname.skipReason,
);
describe.skipIf(byHostname.skipReason !== undefined)(byHostnameTitle, () => {
  it('connects by the hostname it was given, not an address it resolves to, which the certificate does not name', async () => {
    const nodes = byHostname.nodes!;
    expect(nodes[0]!.host).toBe('localhost');
    const driver = createRedisCacheDriver({
      cluster: { nodes },
      tls: { ca: byHostname.ca! },
      keyPrefix: prefixOf(),
      commandTimeoutMs: 2_000,
    });
    try {
      await driver.set('story:{s1}:k', 'v', { ttlMs: 60_000 });
      expect(await driver.get('story:{s1}:k')).toBe('v');
    } finally {
      await driver.close();
    }
  });
});

const tlsTitle = titled('createRedisCacheDriver over TLS', tls.skipReason);
describe.skipIf(tls.skipReason !== undefined)(tlsTitle, () => {
  const port = () => tls.nodes![0]!.port;
  const counted = runCacheDriverSuite(
    { describe, it },
    {
      name: 'redis-tls',
      create: () =>
        createRedisCacheDriver({ url: `rediss://localhost:${port()}`, tls: { ca: tls.ca! }, keyPrefix: prefixOf() }),
      destroy: (driver) => driver.close(),
      advanceTime: wait,
    },
  );

  it('runs every case of the suite', () => {
    expect(counted).toBe(16);
  });

  it('refuses a server its CA does not vouch for, and says why', async () => {
    const driver = createRedisCacheDriver({ url: `rediss://localhost:${port()}`, commandTimeoutMs: 500 });
    try {
      const error = await driver.get('a').catch((caught: unknown) => caught);
      expect(ProviderError.isInstance(error)).toBe(true);
      expect((error as ProviderError).message).toMatch(/certificate/i);
    } finally {
      await driver.close();
    }
  });

  it('refuses a plain connection to the TLS port rather than hanging', async () => {
    const driver = createRedisCacheDriver({ url: `redis://localhost:${port()}`, commandTimeoutMs: 500 });
    try {
      const error = await driver.get('a').catch((caught: unknown) => caught);
      expect(ProviderError.isInstance(error)).toBe(true);
    } finally {
      await driver.close();
    }
  });
});

const tlsClusterTitle = titled('createRedisCacheDriver over TLS to a cluster', tlsCluster.skipReason);
describe.skipIf(tlsCluster.skipReason !== undefined)(tlsClusterTitle, () => {
  const counted = runCacheDriverSuite(
    { describe, it },
    {
      name: 'redis-tls-cluster',
      create: () =>
        createRedisCacheDriver({
          cluster: { nodes: tlsCluster.nodes! },
          tls: { ca: tlsCluster.ca! },
          keyPrefix: prefixOf(),
        }),
      destroy: (driver) => driver.close(),
      advanceTime: wait,
    },
  );

  it('runs every case of the suite', () => {
    expect(counted).toBe(16);
  });
});
