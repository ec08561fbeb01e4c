/**
 * `storyloom/redis`: the `CacheDriver` on Redis through `ioredis`, for ElastiCache (cluster mode on or off),
 * ElastiCache Serverless and any Redis 6+. Needs the optional peer `ioredis`.
 *
 * ElastiCache Serverless always speaks TLS and the cluster protocol: pass `cluster` with the endpoint as the one
 * seed node and `tls: true`; the driver then sets `dnsLookup` to pass the host name through unresolved, as the TLS
 * certificate requires.
 *
 * @example
 * ```ts
 * import { createRedisCacheDriver } from 'storyloom/redis';
 *
 * const driver = createRedisCacheDriver({
 *   cluster: { nodes: [{ host: process.env.CACHE_ENDPOINT ?? 'localhost', port: 6379 }] },
 *   tls: true,
 * });
 * ```
 *
 * @module storyloom/redis
 */

export * from './context/redis.js';
