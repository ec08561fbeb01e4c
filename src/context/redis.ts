/**
 * The Redis `CacheDriver` (ElastiCache, ElastiCache Serverless, any Redis 6+), on `ioredis`.
 *
 * Standalone and Cluster. Keys are written as given (after `keyPrefix`): callers put a `{storyId}` hash tag in them
 * (`ContextCache` does: `storyloom:story:{<story id>}:frequent:...`, see `ContextCache.keyFor`), so every key of one story sits in one cluster slot and
 * multi-key commands work; `getMany` and `delete` across slots are split into one command per slot.
 *
 * The SDK is imported on first use, so a missing `ioredis` surfaces as a `MissingDependencyError` that says what to
 * install instead of a module-resolution crash at import time.
 *
 * @module
 */
import type { ConnectionOptions } from 'node:tls';
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from 'ioredis';
import { MAX_TIMER_MS } from '../core/abort.js';
import { ClosedError, MissingDependencyError, ProviderError, StoryloomError, ValidationError } from '../core/errors.js';
import { checkCacheKey, checkCacheKeys, checkCacheWrite, hasLoneSurrogate } from './cache-arguments.js';
import type { CacheDriver, CacheDriverCapabilities } from './cache-driver.js';

/** A connected `ioredis` client: a standalone `Redis` or a `Cluster`. */
export type RedisClient = Redis | Cluster;

/**
 * Options of `createRedisCacheDriver`. Give exactly one of `client`, `url` or `cluster`.
 *
 * @example
 * ```ts
 * import { createRedisCacheDriver, type RedisCacheDriverOptions } from 'storyloom/redis';
 * // ElastiCache Serverless: always TLS, always the cluster protocol.
 * const options: RedisCacheDriverOptions = {
 *   cluster: { nodes: [{ host: 'my-cache-abc123.serverless.use1.cache.amazonaws.com', port: 6379 }] },
 *   tls: true,
 * };
 * const cache = createRedisCacheDriver(options);
 * ```
 */
export interface RedisCacheDriverOptions {
  /**
   * An `ioredis` client you created and own. The driver does not change its options and `close()` leaves it open.
   * Give it a `commandTimeout` and a bounded `maxRetriesPerRequest` so calls fail fast during an outage; the driver
   * still bounds each call by `commandTimeoutMs`.
   */
  client?: RedisClient;
  /**
   * `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. A server in cluster mode reached this way
   * (ElastiCache Serverless shows every slot on one node) works too: once it refuses a command across slots, the
   * driver sends one slot a command.
   */
  url?: string;
  /**
   * Redis Cluster (ElastiCache cluster mode, ElastiCache Serverless): the seed nodes and any `ioredis` cluster
   * options. With `tls`, the driver sets `dnsLookup` to pass host names through unresolved (the TLS certificate names
   * the host, not its addresses) and `redisOptions.tls`.
   */
  cluster?: { nodes: ClusterNode[]; options?: ClusterOptions };
  /** Connect with TLS: `true`, or Node `tls` options (a private CA, `servername`, ...). Implied by `rediss://`. */
  tls?: boolean | ConnectionOptions;
  /** Prepended to every key; `deletePrefix` searches under it too. Default none. */
  keyPrefix?: string;
  /**
   * Longest wait for one command before it fails with a retryable `ProviderError`. Default 1000 ms; at most
   * 2,147,483,647 (what a Node timer can wait: a longer one fires at once, and every command would time out).
   */
  commandTimeoutMs?: number;
  /** Extra `ioredis` options for the standalone client created from `url` (ignored with `client`/`cluster`). */
  redisOptions?: RedisOptions;
}

const CAPABILITIES: CacheDriverCapabilities = Object.freeze({ shared: true, atomicSetIfAbsent: true });

/** Keys deleted per UNLINK and asked per SCAN step: big enough to be quick, small enough not to block Redis. */
const BATCH = 500;

type IoRedisModule = typeof import('ioredis');
let sdkLoading: Promise<IoRedisModule> | undefined;

function loadIoRedis(): Promise<IoRedisModule> {
  sdkLoading ??= import('ioredis').catch((error: unknown) => {
    sdkLoading = undefined;
    throw new MissingDependencyError('ioredis', 'storyloom/redis', { cause: error });
  });
  return sdkLoading;
}

/**
 * Creates a `CacheDriver` on Redis.
 *
 * Every call is bounded by `commandTimeoutMs`, and clients created here use `ioredis`'s `commandTimeout`, one retry
 * per request and a capped reconnect backoff: while Redis is down, calls fail within the timeout (callers such as
 * `ContextCache` then bypass the cache) and the client reconnects by itself once Redis is back. A reply that refuses
 * the command as sent (`WRONGTYPE`, an argument out of range) is a `ProviderError` that is not retryable.
 *
 * `set` is `SET [PX]`, `setIfAbsent` is `SET NX [PX]` (atomic across processes), `getMany` is `MGET` per cluster
 * slot, `delete` is `UNLINK` per slot, and `deletePrefix` walks `SCAN MATCH` (glob characters in the prefix escaped)
 * on every master and `UNLINK`s what it finds.
 *
 * @example
 * ```ts
 * import { ContextCache, createMemoryStateStore } from 'storyloom';
 * import { createRedisCacheDriver } from 'storyloom/redis';
 *
 * const driver = createRedisCacheDriver({ url: process.env.REDIS_URL, keyPrefix: 'prod:' });
 * const cache = new ContextCache({ driver, store: createMemoryStateStore() });
 * ```
 */
export function createRedisCacheDriver(options: RedisCacheDriverOptions): CacheDriver {
  const settings = checkOptions(options);
  const { keyPrefix, commandTimeoutMs } = settings;
  const ownsClient = options.client === undefined;
  let clientLoading: Promise<RedisClient> | undefined = options.client ? Promise.resolve(options.client) : undefined;
  let closed = false;
  /** Whether this driver's multi-key commands go one slot each (`inGroups`): always to a cluster client. */
  const slots: SlotMode = { bySlot: false };
  // Why the connection is down, while it is: a command that fails for want of a connection says why (a certificate
  // the CA does not vouch for, a refused port) instead of only "max retries reached" or "timed out".
  let connectionError: Error | undefined;

  const client = (): Promise<RedisClient> => {
    clientLoading ??= loadIoRedis().then((sdk) => {
      const created = createClient(sdk, options, commandTimeoutMs);
      if (ownsClient) {
        created.on('error', (error: unknown) => {
          connectionError = error instanceof Error ? error : new Error(String(error));
        });
        created.on('ready', () => {
          connectionError = undefined;
        });
      }
      return created;
    });
    return clientLoading;
  };
  const why = () => (connectionError ? ` (connection: ${connectionError.message})` : '');

  const open = (operation: string): void => {
    if (closed) throw new ClosedError(`Cannot ${operation}: the Redis cache driver is closed`);
  };

  /**
   * Runs one Redis call within the timeout, mapping failures to `ProviderError`s: retryable, but for a reply that
   * refuses the command as sent. A timeout has code `TIMEOUT` whichever timer noticed it: the driver's, or the
   * client's own `commandTimeout` (set to the same figure on a client created here, any figure on one injected), which
   * may fire first, and also fails commands queued behind a connection handshake that timed out.
   */
  const run = async <T>(operation: string, call: (redis: RedisClient) => Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new ProviderError(`Redis ${operation} timed out after ${commandTimeoutMs} ms${why()}`, {
              provider: 'redis',
              code: 'TIMEOUT',
              isRetryable: true,
            }),
          ),
        commandTimeoutMs,
      );
      timer.unref?.();
    });
    try {
      return await Promise.race([client().then(call), timeout]);
    } catch (error) {
      if (StoryloomError.isInstance(error)) throw error;
      const message = error instanceof Error ? error.message : String(error);
      if (isCommandTimeout(error)) {
        throw new ProviderError(`Redis ${operation} timed out: ${message}${why()}`, {
          provider: 'redis',
          code: 'TIMEOUT',
          isRetryable: true,
          cause: error,
        });
      }
      throw new ProviderError(`Redis ${operation} failed: ${message}${why()}`, {
        provider: 'redis',
        isRetryable: !refusedAsSent(error),
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
  };

  const full = (key: string) => keyPrefix + key;

  return {
    specificationVersion: 'v1',
    provider: 'redis',
    capabilities: CAPABILITIES,

    async get(key) {
      open('get');
      checkCacheKey(key, 'key');
      return run('GET', (redis) => redis.get(full(key)));
    },

    async getMany(keys) {
      open('getMany');
      checkCacheKeys(keys);
      if (keys.length === 0) return [];
      return run('MGET', async (redis) => {
        // The slot is the sent key's, prefix included: a prefix can move a key without a hash tag to another slot.
        const sent = keys.map(full);
        const values: Array<string | null> = new Array(keys.length).fill(null);
        for (const [positions, found] of await inGroups(redis, slots, sent, (group) => redis.mget(group))) {
          positions.forEach((position, i) => {
            values[position] = found[i] ?? null;
          });
        }
        return values;
      });
    },

    async set(key, value, setOptions) {
      open('set');
      const ttl = checkCacheWrite(key, value, setOptions);
      await run('SET', (redis) => (ttl === 0 ? redis.set(full(key), value) : redis.set(full(key), value, 'PX', ttl)));
    },

    async setIfAbsent(key, value, setOptions) {
      open('setIfAbsent');
      const ttl = checkCacheWrite(key, value, setOptions);
      const reply = await run('SET NX', (redis) =>
        ttl === 0 ? redis.set(full(key), value, 'NX') : redis.set(full(key), value, 'PX', ttl, 'NX'),
      );
      return reply === 'OK';
    },

    async delete(keys) {
      open('delete');
      checkCacheKeys(keys);
      const unique = [...new Set(keys)];
      if (unique.length === 0) return 0;
      return run('UNLINK', (redis) => unlink(redis, slots, unique.map(full)));
    },

    async deletePrefix(prefix) {
      open('deletePrefix');
      checkCacheKey(prefix, 'prefix');
      // A walk of a large keyspace takes longer than one command: each SCAN and UNLINK gets its own timeout.
      const redis = await run('connect', async (connected) => connected);
      // ioredis adds a client's own `keyPrefix` to keys but not to SCAN patterns, and SCAN returns keys with it: the
      // pattern gets it added, the keys found get it taken off (in bytes) before UNLINK adds it again. Keys are walked
      // as bytes: one another client wrote that is not UTF-8 would come back altered as a string, and survive.
      const clientPrefix = clientKeyPrefix(redis);
      const clientPrefixBytes = Buffer.byteLength(clientPrefix, 'utf8');
      const pattern = `${escapeGlob(clientPrefix + full(prefix))}*`;
      // Until a cluster client has learned the cluster's layout it knows only its seed nodes: a command first.
      if (isCluster(redis) && redis.status !== 'ready') await run('PING', (cluster) => cluster.ping());
      const nodes = isCluster(redis) ? redis.nodes('master') : [redis];
      let deleted = 0;
      for (const node of nodes) {
        let cursor = '0';
        do {
          const [next, found] = await run('SCAN', () => node.scanBuffer(cursor, 'MATCH', pattern, 'COUNT', BATCH));
          cursor = next.toString();
          for (let start = 0; start < found.length; start += BATCH) {
            const batch = found.slice(start, start + BATCH).map((key) => key.subarray(clientPrefixBytes));
            deleted += await run('UNLINK', () => unlink(redis, slots, batch));
          }
        } while (cursor !== '0');
      }
      return deleted;
    },

    async close() {
      if (closed) return;
      closed = true;
      if (!ownsClient || clientLoading === undefined) return;
      const redis = await clientLoading.catch(() => undefined);
      if (!redis) return;
      try {
        await Promise.race([redis.quit(), new Promise((resolve) => setTimeout(resolve, commandTimeoutMs).unref())]);
      } catch {
        // Quitting a client whose server is gone fails; the socket is dropped below either way.
      }
      redis.disconnect();
    },
  };
}

function createClient(sdk: IoRedisModule, options: RedisCacheDriverOptions, commandTimeoutMs: number): RedisClient {
  const tls = options.tls === true ? {} : options.tls || undefined;
  // Fail fast while Redis is away, reconnect by itself when it is back: a cache outage must not stall episodes.
  const resilience = {
    commandTimeout: commandTimeoutMs,
    maxRetriesPerRequest: 1,
    connectTimeout: Math.max(commandTimeoutMs, 2_000),
  } satisfies RedisOptions;
  const retryStrategy = (times: number) => Math.min(50 * 2 ** times, 2_000);
  let client: RedisClient;
  if (options.cluster) {
    const clusterOptions: ClusterOptions = {
      clusterRetryStrategy: retryStrategy,
      ...options.cluster.options,
      redisOptions: { ...resilience, ...(tls ? { tls } : {}), ...options.cluster.options?.redisOptions },
    };
    // ElastiCache's TLS certificates name the configuration endpoint: resolving it to an IP would fail verification.
    if (tls && clusterOptions.dnsLookup === undefined) {
      clusterOptions.dnsLookup = (address, callback) => callback(null, address);
    }
    client = new sdk.Cluster(options.cluster.nodes, clusterOptions);
  } else {
    const redisOptions: RedisOptions = {
      ...resilience,
      retryStrategy,
      ...(tls ? { tls } : {}),
      ...options.redisOptions,
    };
    client = options.url === undefined ? new sdk.Redis(redisOptions) : new sdk.Redis(options.url, redisOptions);
  }
  // Without a listener ioredis prints every failed reconnect; failures reach callers through their commands.
  client.on('error', () => {});
  return client;
}

/**
 * Replies in which Redis refuses a command as it was sent (an argument out of range or malformed, a key holding
 * another type): sending it again gets the same answer. Other errors (a lost connection, `LOADING`, `BUSY`,
 * `TRYAGAIN`, `CLUSTERDOWN`, `OOM`, `ERR max number of clients reached`) can pass.
 */
const REFUSED_AS_SENT =
  /^(ERR (value is not an integer or out of range|value is out of range|invalid expire time|syntax error|wrong number of arguments)|WRONGTYPE |CROSSSLOT )/;

/** Whether `error` is a server reply (an ioredis `ReplyError`) that refuses the command as sent. */
function refusedAsSent(error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError' && REFUSED_AS_SENT.test(error.message);
}

/**
 * Whether `error` is ioredis's own `commandTimeout` firing: a plain `Error` whose message is exactly this, the only
 * mark it carries.
 */
function isCommandTimeout(error: unknown): boolean {
  return error instanceof Error && error.message === 'Command timed out';
}

/** The `keyPrefix` an injected ioredis client adds to every key itself ('' for none). */
function clientKeyPrefix(client: RedisClient): string {
  const options = client.options as { keyPrefix?: unknown; redisOptions?: { keyPrefix?: unknown } };
  const prefix = isCluster(client) ? (options.keyPrefix ?? options.redisOptions?.keyPrefix) : options.keyPrefix;
  return typeof prefix === 'string' ? prefix : '';
}

function isCluster(client: RedisClient): client is Cluster {
  return (client as Cluster).isCluster === true;
}

/** Whether multi-key commands of a driver's standalone client go one per slot (see `inGroups`). */
interface SlotMode {
  bySlot: boolean;
}

/** A server's refusal of a command whose keys are in more than one slot. */
function isCrossSlot(error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError' && /^CROSSSLOT /.test(error.message);
}

/**
 * Sends a multi-key command for `keys` in groups, with the positions of each group's keys: at most `BATCH` keys a
 * command (ElastiCache Serverless refuses a request of 4,000 arguments or more), and, to a cluster, one slot per
 * command. A standalone client learns that its server runs in cluster mode (ElastiCache Serverless shows every slot
 * on one node, so a client given its `url` is standalone) from a CROSSSLOT refusal: the batches refused are sent again
 * one slot a command (only those: the others were carried out, a delete counted), and so is every later call of the
 * driver. Each call decides by what its own batches were sent as, so two calls that both meet the refusal both mend it.
 */
async function inGroups<T>(
  redis: RedisClient,
  mode: SlotMode,
  keys: ReadonlyArray<string | Buffer>,
  send: (group: Array<string | Buffer>) => Promise<T>,
): Promise<Array<readonly [number[], T]>> {
  // A key's slot is that of the key as it goes out: ioredis adds a client's own `keyPrefix` as it sends.
  const clientPrefix = Buffer.from(clientKeyPrefix(redis), 'utf8');
  const bySlot = (positions: readonly number[]) =>
    groupBySlot(positions.map((position) => Buffer.concat([clientPrefix, Buffer.from(keys[position]!)]))).map((group) =>
      group.map((at) => positions[at]!),
    );
  const batchesOf = (groups: readonly number[][]) =>
    groups.flatMap((group) =>
      Array.from({ length: Math.ceil(group.length / BATCH) }, (_, at) => group.slice(at * BATCH, (at + 1) * BATCH)),
    );
  const sendBatch = async (positions: number[]) =>
    [positions, await send(positions.map((position) => keys[position]!))] as const;
  const all = keys.map((_, position) => position);
  if (isCluster(redis) || mode.bySlot) return Promise.all(batchesOf(bySlot(all)).map(sendBatch));
  const batches = batchesOf([all]);
  const settled = await Promise.allSettled(batches.map(sendBatch));
  const done: Array<readonly [number[], T]> = [];
  const refused: number[] = [];
  settled.forEach((outcome, at) => {
    if (outcome.status === 'fulfilled') done.push(outcome.value);
    else if (isCrossSlot(outcome.reason)) refused.push(...batches[at]!);
  });
  const failed = settled.find(
    (outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected' && !isCrossSlot(outcome.reason),
  );
  if (failed) throw failed.reason;
  if (refused.length === 0) return done;
  mode.bySlot = true;
  return [...done, ...(await Promise.all(batchesOf(bySlot(refused)).map(sendBatch)))];
}

/** UNLINK in one command per group of `inGroups`; returns how many keys existed. */
async function unlink(redis: RedisClient, mode: SlotMode, keys: ReadonlyArray<string | Buffer>): Promise<number> {
  if (keys.length === 0) return 0;
  const counts = await inGroups(redis, mode, keys, (group) => redis.unlink(...group));
  return counts.reduce((total, [, count]) => total + count, 0);
}

/** Positions of `keys` grouped by cluster slot, in first-seen order. */
function groupBySlot(keys: ReadonlyArray<string | Buffer>): number[][] {
  const groups = new Map<number, number[]>();
  keys.forEach((key, position) => {
    const slot = clusterSlot(key);
    const group = groups.get(slot);
    if (group) group.push(position);
    else groups.set(slot, [position]);
  });
  return [...groups.values()];
}

/**
 * The Redis Cluster slot of a key (a string, taken as UTF-8, or its bytes): CRC16 (XMODEM) of its hash tag, or of the
 * whole key when it has none.
 */
export function clusterSlot(key: string | Uint8Array): number {
  const bytes = typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
  let start = 0;
  let end = bytes.length;
  const open = bytes.indexOf(0x7b); // {
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1); // }
    // An empty tag (`{}`) does not count: the whole key is hashed, as Redis does.
    if (close !== -1 && close > open + 1) {
      start = open + 1;
      end = close;
    }
  }
  let crc = 0;
  for (let i = start; i < end; i++) {
    crc ^= bytes[i]! << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/** Escapes the characters SCAN MATCH reads as a pattern, so a prefix matches only itself. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\^]/g, (character) => `\\${character}`);
}

interface CheckedOptions {
  keyPrefix: string;
  commandTimeoutMs: number;
}

function checkOptions(options: RedisCacheDriverOptions): CheckedOptions {
  const problems: Array<{ path: string; message: string }> = [];
  if (typeof options !== 'object' || options === null) {
    throw new ValidationError('Invalid Redis cache options: must be an object', {
      problems: [{ path: 'options', message: 'must be an object' }],
    });
  }
  const given = (['client', 'url', 'cluster'] as const).filter((name) => options[name] !== undefined);
  if (given.length !== 1) {
    problems.push({
      path: 'options',
      message: `give exactly one of client, url or cluster${given.length > 1 ? ` (got ${given.join(', ')})` : ''}`,
    });
  }
  if (options.url !== undefined && (typeof options.url !== 'string' || !/^rediss?:\/\//.test(options.url))) {
    problems.push({ path: 'options.url', message: 'must start with redis:// or rediss://' });
  }
  if (options.cluster !== undefined && (!Array.isArray(options.cluster.nodes) || options.cluster.nodes.length === 0)) {
    problems.push({ path: 'options.cluster.nodes', message: 'must list at least one seed node' });
  }
  const keyPrefix = options.keyPrefix ?? '';
  if (typeof keyPrefix !== 'string') problems.push({ path: 'options.keyPrefix', message: 'must be a string' });
  else if (hasLoneSurrogate(keyPrefix)) {
    // Sent as UTF-8, two prefixes that differ only there would share their keys.
    problems.push({ path: 'options.keyPrefix', message: 'must be well-formed UTF-16 (it holds a lone surrogate)' });
  }
  const commandTimeoutMs = options.commandTimeoutMs ?? 1_000;
  if (typeof commandTimeoutMs !== 'number' || !(commandTimeoutMs > 0 && commandTimeoutMs <= MAX_TIMER_MS)) {
    problems.push({
      path: 'options.commandTimeoutMs',
      message: `must be a positive number of milliseconds up to ${MAX_TIMER_MS}`,
    });
  }
  if (problems.length > 0) {
    const first = problems[0]!;
    throw new ValidationError(`Invalid Redis cache options: ${first.path}: ${first.message}`, { problems });
  }
  return { keyPrefix, commandTimeoutMs };
}
