/**
 * The DynamoDB `StoryStateStore`: every story in one table (single-table design), each commit one
 * `TransactWriteItems` conditioned on the story's version.
 *
 * Item layout (partition `pk = STORY#<storyId>`, sort key `sk`):
 *
 * | sk | holds |
 * |---|---|
 * | `STATE` | the current `version` (the state itself is the snapshot of that version); `importing` while an import runs, `importedBy` after a batched one |
 * | `SNAP#<version, 16 digits>` | a state snapshot, gzip-compressed JSON |
 * | `SCENE#<index, 16 digits>` | a scene, gzip-compressed JSON; `lsi1sk = CHAPTER#<chapterId>#<index>` |
 * | `SCENEID#<sceneId>` | pointer to the scene's index: makes a scene id unique per story and `getScene` by id cheap |
 * | `INF#<influenceId>` | an influence (JSON); while pending, `lsi1sk = PENDING#<receivedAt>#<id>` |
 * | `PUB#<sceneId>#<target>` | a publication-log entry (JSON) |
 * | `PART#<sk>#<sha256>-<size>#<n>` | a slice of a compressed body too large for one item (when no content store is configured) |
 *
 * One sparse local secondary index, `lsi1` (`pk`, `lsi1sk`), serves two queries with strongly consistent reads: the
 * pending-influence queue in order, and a chapter's scenes in order with full pages.
 *
 * A body's `PART#` items are written before the commit's transaction, under keys named for the body's SHA-256 (as the
 * content store's keys are), so they cost the transaction no action: a racer writing the same key writes the same
 * bytes, and a commit that fails or is cut short leaves only parts that no item refers to.
 *
 * An influence or a publication-log entry is written in a two-action `TransactWriteItems`: a `ConditionCheck` that
 * the `STATE` item exists without `importing`, and the conditional put. A story that is missing or still importing
 * gets no orphan items, and the check fetches no state (the snapshot may be hundreds of kilobytes).
 *
 * A story too large for one transaction is imported in batches behind the `importing` marker. Until the marker is
 * cleared the story does not exist to any read: `load` and `exists` say so, and the history reads (`listScenes`,
 * `getScene`, `getStateAt`, `pendingInfluences`, `getInfluence`, `listPublications`) read the marker beside their own
 * query and return nothing, also for an import a crash cut short.
 *
 * @module
 */
import { createHash, randomUUID } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { attemptWithin, timeoutProblems } from '../core/abort.js';
import {
  ConflictError,
  NotFoundError,
  ProviderError,
  RetryError,
  StoryloomError,
  throwIfAborted,
  ValidationError,
} from '../core/errors.js';
import { importPackages } from '../core/optional-import.js';
import { RETRY_DEFAULTS, type RetryOptions, withRetry } from '../core/retry.js';
import {
  BaseStateStore,
  type BaseStateStoreOptions,
  checkId,
  misplacedScene,
  type PreparedCommit,
  type SceneQuery,
  type StoryBundle,
  staleVersion,
} from './base-store.js';
import type { ContentStore } from './content-store.js';
import { compareInfluences } from './memory.js';
import type { Scene, StoryState, UserInfluence } from './schema.js';
import type {
  CommitResult,
  EnqueueResult,
  ListScenesOptions,
  Page,
  PublicationEntry,
  RecordPublicationResult,
  StoryStateStoreCapabilities,
} from './store.js';

const PROVIDER = 'dynamodb';
const CLIENT_PACKAGE = '@aws-sdk/client-dynamodb';
const DOCUMENT_PACKAGE = '@aws-sdk/lib-dynamodb';

/**
 * The limits of the DynamoDB store, fixed by DynamoDB's own: 100 actions and 4 MB per transaction, 400 KB per item.
 *
 * `maxInfluencesPerCommit`: a commit resolving more influences than this is refused with `ValidationError` (the
 * transaction cannot be split without losing atomicity); resolve the rest in the next scene. It holds whatever the
 * size of the scene and the state: a commit's other actions are at most five (state, scene, scene-id pointer,
 * snapshot, a check of the previous scene), and the `PART#` items of a body split for its size are written before
 * the transaction, not in it.
 */
export const DYNAMODB_STORE_LIMITS = {
  /** Influences one commit may apply or reject. */
  maxInfluencesPerCommit: 90,
  /** Actions in one `TransactWriteItems`. */
  maxTransactionActions: 100,
  /** Bytes one transaction may carry, kept under DynamoDB's 4 MB with room for keys and names. */
  maxTransactionBytes: 4_000_000,
  /** Default largest compressed body kept inside its item; larger ones go to the content store or are split. */
  itemBodyBytes: 350 * 1024,
} as const;

const STATE_SK = 'STATE';
const INDEX_NAME = 'lsi1';
const PAD = 16;
const MAX_PADDED = '9'.repeat(PAD);
const BATCH_WRITE_SIZE = 25;
/**
 * Retries of one batch of writes while DynamoDB throttles it (refused whole, or items left unprocessed), unless
 * `retry.maxRetries` says otherwise: an import of thousands of items meets a busy partition more often than a single
 * call does, and giving up means removing what the import wrote and starting it again.
 */
const BATCH_MAX_RETRIES = 8;
const DEFAULT_IMPORT_LEASE_MS = 15 * 60_000;
/**
 * Default of `timeoutMs`: DynamoDB answers in milliseconds, so 10 s without an answer means a connection that will
 * never answer (a half-open socket, a stalled load balancer), not a slow one. A write is allowed the time to upload it
 * besides (`UPLOAD_BYTES_PER_MS`). Three attempts of a read or a commit of a few hundred KB then end in about half a
 * minute, not at a Lambda's 15-minute limit.
 */
const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * The slowest upload a write's bound allows for, in bytes per ms (1 MB/s, a slow home uplink): a batch of an import
 * (25 items of up to 400 KB) or a large transaction is not cut off while it is still being sent.
 */
const UPLOAD_BYTES_PER_MS = 1_000;
/** The calls that carry items to DynamoDB, whose bound grows with their size. */
const WRITES = new Set(['BatchWrite', 'TransactWrite', 'Put', 'Update']);
/**
 * The calls that change the table: one still throttled after its retries ends as a retryable `THROTTLED`
 * (`throttledAfterRetries`). Not the reads: the engine runs its context and post-commit steps, which read the store,
 * under a retry policy of its own, and would take a retryable error as a reason to run the whole step again, each
 * throttled read sent three times per run of the step.
 */
const TABLE_WRITES = new Set([...WRITES, 'Delete']);
/** How long the client built here waits for a TCP connection: a healthy endpoint accepts in milliseconds. */
const CONNECTION_TIMEOUT_MS = 3_000;

const pad = (value: number) => String(value).padStart(PAD, '0');
const storyKey = (storyId: string) => `STORY#${storyId}`;
const snapshotKey = (version: number) => `SNAP#${pad(version)}`;
const sceneKey = (index: number) => `SCENE#${pad(index)}`;
const sceneIdKey = (sceneId: string) => `SCENEID#${sceneId}`;
const chapterKey = (chapterId: string, index: string) => `CHAPTER#${chapterId}#${index}`;
const influenceKey = (influenceId: string) => `INF#${influenceId}`;
const pendingKey = (influence: UserInfluence) => `PENDING#${influence.receivedAt}#${influence.id}`;
const publicationKey = (sceneId: string, target: string) => `PUB#${sceneId}#${target}`;
/**
 * Where the parts of one body begin: named for the body's bytes and the size it is cut into, so two different
 * bodies, or one body cut by stores with another `itemBodyBytes` (a rolling deploy), never share a part key.
 */
const partsPrefix = (sk: string, sha256: string, partBytes: number) => `PART#${sk}#${sha256}-${partBytes}#`;
const partKey = (prefix: string, part: number) => `${prefix}${String(part).padStart(4, '0')}`;
/** A body as the table keeps it: gzip-compressed JSON (a `BundledSnapshot`'s bytes already are). */
const compress = (value: unknown): Uint8Array => gzipSync(JSON.stringify(value));

/**
 * The table `createDynamoStateStore` expects, as the input of `CreateTableCommand`: key `pk`/`sk` (strings), one
 * local secondary index `lsi1` on `lsi1sk` (keys only: a query fetches the rest from the table), on-demand billing.
 * Local, not global, so that the pending-influence queue is read with strong consistency; the price is DynamoDB's
 * 10 GB limit per story (item collection), far above a story's size when long bodies go to a content store. A write
 * past it fails with a `ProviderError` of code `ITEM_COLLECTION_FULL`, not retryable.
 *
 * @example
 * ```ts
 * import { storyTableDefinition } from 'storyloom/dynamodb';
 * // In a CDK stack (aws-cdk-lib/aws-dynamodb):
 * // const table = new Table(this, 'Stories', { partitionKey: { name: 'pk', type: AttributeType.STRING },
 * //   sortKey: { name: 'sk', type: AttributeType.STRING }, billingMode: BillingMode.PAY_PER_REQUEST });
 * // table.addLocalSecondaryIndex({ indexName: 'lsi1', sortKey: { name: 'lsi1sk', type: AttributeType.STRING },
 * //   projectionType: ProjectionType.KEYS_ONLY });
 * const input = storyTableDefinition('stories'); // or: new CreateTableCommand(input)
 * ```
 */
export function storyTableDefinition(tableName: string) {
  return {
    TableName: tableName,
    AttributeDefinitions: [
      { AttributeName: 'pk', AttributeType: 'S' as const },
      { AttributeName: 'sk', AttributeType: 'S' as const },
      { AttributeName: 'lsi1sk', AttributeType: 'S' as const },
    ],
    KeySchema: [
      { AttributeName: 'pk', KeyType: 'HASH' as const },
      { AttributeName: 'sk', KeyType: 'RANGE' as const },
    ],
    LocalSecondaryIndexes: [
      {
        IndexName: INDEX_NAME,
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' as const },
          { AttributeName: 'lsi1sk', KeyType: 'RANGE' as const },
        ],
        Projection: { ProjectionType: 'KEYS_ONLY' as const },
      },
    ],
    BillingMode: 'PAY_PER_REQUEST' as const,
  };
}

type ClientSdk = typeof import('@aws-sdk/client-dynamodb');
type DocumentSdk = typeof import('@aws-sdk/lib-dynamodb');
interface Sdk {
  client: ClientSdk;
  document: DocumentSdk;
}

let sdkPromise: Promise<Sdk> | undefined;

/**
 * Loads the optional SDK packages once. Those missing become one `MissingDependencyError` naming them all, so that one
 * install command is enough (the two are installed together, or neither is).
 */
function loadSdk(feature: string): Promise<Sdk> {
  sdkPromise ??= importPackages(feature, {
    client: [CLIENT_PACKAGE, () => import('@aws-sdk/client-dynamodb')],
    document: [DOCUMENT_PACKAGE, () => import('@aws-sdk/lib-dynamodb')],
  }).catch((error: unknown) => {
    sdkPromise = undefined;
    throw error;
  });
  return sdkPromise;
}

/** Options of `createStoryTable`. */
export interface CreateStoryTableOptions {
  /** The longest to wait for the table to become ACTIVE, in seconds (2 to 86,400). Default 300. */
  maxWaitSeconds?: number;
  /**
   * The longest the `CreateTable` call and each `DescribeTable` poll may go unanswered, in ms (default 10 s, as the
   * store's `timeoutMs`): the AWS SDK's handler sets no timeout of its own, and its waiter checks `maxWaitSeconds` only
   * between polls, so one hung call would otherwise hang the setup for good.
   */
  timeoutMs?: number;
  /** Stops the call and the wait; the promise then rejects with an `AbortedError`. */
  signal?: AbortSignal;
}

/**
 * Creates the story table if it does not exist (an existing table is left as it is) and waits until it is ACTIVE.
 * Every call to DynamoDB is bounded by `timeoutMs`, and the whole wait by `maxWaitSeconds`: a peer that stops
 * answering is a retryable `ProviderError` (`TIMEOUT`), never a hang.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
 * import { createStoryTable } from 'storyloom/dynamodb';
 * await createStoryTable(new DynamoDBClient({}), 'stories');
 * ```
 */
export async function createStoryTable(
  client: DynamoDBClient | DynamoDBDocumentClient,
  tableName: string,
  options: CreateStoryTableOptions = {},
): Promise<void> {
  const problems = timeoutProblems(options.timeoutMs, 'timeoutMs');
  const maxWaitSeconds = options.maxWaitSeconds ?? 300;
  // At least the waiter's first delay (1 s) and more; at most a day, far within what one timer holds.
  if (typeof maxWaitSeconds !== 'number' || !(maxWaitSeconds >= 2 && maxWaitSeconds <= 86_400)) {
    problems.push({ path: 'maxWaitSeconds', message: 'must be a number of seconds from 2 to 86400' });
  }
  if (problems.length > 0) {
    throw new ValidationError(
      `Invalid createStoryTable options: ${problems.map((p) => `${p.path} ${p.message}`).join('; ')}`,
      {
        problems,
      },
    );
  }
  const { signal } = options;
  throwIfAborted(signal);
  const sdk = await loadSdk('createStoryTable');
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  // The waiter polls through this client and reads every failure as "not yet": a failure no retry can mend (missing
  // permission, a bad table name) ends the wait at once instead of after `maxWaitSeconds`.
  const stop = new AbortController();
  let fatal: unknown;
  const send = async (command: object): Promise<unknown> => {
    const operation = commandName(command);
    try {
      // The waiter and the create below read these two by name.
      return await sendWithin(client as DynamoDBClient, command, timeoutMs, signal, (error) =>
        TABLE_STATES.has(errorName(error) ?? '') ? error : toProviderError(error, operation),
      );
    } catch (error) {
      if (!TABLE_STATES.has(errorName(error) ?? '') && !(ProviderError.isInstance(error) && error.isRetryable)) {
        fatal ??= error;
        stop.abort();
      }
      throw error;
    }
  };
  try {
    await send(new sdk.client.CreateTableCommand(storyTableDefinition(tableName)));
  } catch (error) {
    if (errorName(error) !== 'ResourceInUseException') throw error;
  }
  const deadline = AbortSignal.timeout(maxWaitSeconds * 1_000);
  try {
    await sdk.client.waitUntilTableExists(
      {
        client: { send } as unknown as DynamoDBClient,
        maxWaitTime: maxWaitSeconds,
        minDelay: 1,
        maxDelay: 5,
        // The waiter checks `maxWaitTime` only between polls; the deadline also ends a poll under way.
        abortSignal: AbortSignal.any([stop.signal, deadline, ...(signal ? [signal] : [])]),
      },
      { TableName: tableName },
    );
  } catch (error) {
    throwIfAborted(signal);
    if (fatal !== undefined) throw fatal;
    throw new ProviderError(`Table "${tableName}" did not become ACTIVE within ${maxWaitSeconds} s`, {
      provider: PROVIDER,
      code: 'TIMEOUT',
      isRetryable: true,
      cause: error,
    });
  }
}

/**
 * One call of `command` through `client`, bounded by `timeoutMs` and `signal` (`attemptWithin`): a timeout is a
 * retryable `ProviderError` (`TIMEOUT`), any other failure what `failed` makes of it.
 */
function sendWithin(
  client: { send(command: never, options: { abortSignal: AbortSignal }): Promise<unknown> },
  command: unknown,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  failed: (error: unknown) => unknown,
): Promise<unknown> {
  return attemptWithin((abortSignal) => client.send(command as never, { abortSignal }), {
    timeoutMs,
    signal,
    provider: PROVIDER,
    timeoutMessage: `DynamoDB ${commandName(command)} did not answer within ${timeoutMs} ms`,
    failed,
  });
}

/** What the table calls answer while the table is being made: states, not faults. */
const TABLE_STATES = new Set(['ResourceInUseException', 'ResourceNotFoundException']);

/**
 * Options of `createDynamoStateStore`.
 *
 * @example
 * ```ts
 * import type { DynamoStateStoreOptions } from 'storyloom/dynamodb';
 * const options: DynamoStateStoreOptions = { tableName: 'stories', region: 'eu-west-1' };
 * ```
 */
export interface DynamoStateStoreOptions extends BaseStateStoreOptions {
  /** The table, shaped as `storyTableDefinition` describes. */
  tableName: string;
  /**
   * A ready client (plain or document). Build it with `maxAttempts: 1` so storyloom's retry policy is the only one.
   * The store bounds every call by `timeoutMs` whatever the client: it passes an abort signal to `send` and stops
   * waiting when it fires, even if the client's handler ignores it. The AWS SDK's own handler sets no timeout by
   * default, so give yours `requestHandler: { connectionTimeout: 3_000, socketTimeout: <timeoutMs> }` as well (a
   * `requestTimeout` alone only logs a warning unless `throwOnRequestTimeout: true`, and does not cover the body):
   * a custom handler that ignores the signal would otherwise keep the hung socket open after the store gave up.
   * When absent, one is built from `region` and `endpoint`, with those timeouts (and closed by `close()`).
   */
  client?: DynamoDBClient | DynamoDBDocumentClient;
  /** Region of the client built when `client` is absent. */
  region?: string;
  /** Endpoint of the client built when `client` is absent, e.g. `http://127.0.0.1:8000` for DynamoDB Local. */
  endpoint?: string;
  /**
   * Where bodies (scenes, state snapshots) larger than `itemBodyBytes` after compression go. Without one they are
   * split into `PART#` items of the table, written before the commit's transaction.
   */
  contentStore?: ContentStore;
  /** Prefix of content-store keys. Default `storyloom/`. */
  contentKeyPrefix?: string;
  /** Largest compressed body kept inside its item, 1 KB..350 KB. Default 350 KB. */
  itemBodyBytes?: number;
  /** How long an unfinished import blocks its story id before another import or create may take over. Default 15 min. */
  importLeaseMs?: number;
  /**
   * The retry policy for throttling and server errors (storyloom's `withRetry`; the client's own is off). A batch of
   * writes still throttled by DynamoDB is retried 8 times unless `maxRetries` is set (see `createDynamoStateStore`).
   */
  retry?: Omit<RetryOptions, 'clock' | 'shouldRetry' | 'signal'>;
  /**
   * The longest one attempt of one DynamoDB call may take, in ms, answer included; measured in real time, not on
   * `clock`. Default 10,000: DynamoDB answers in milliseconds, so an attempt that takes longer is talking to a peer that
   * will never answer. A write (a commit, a batch of an import) is allowed besides the time to upload it at 1 MB/s,
   * reckoned from its size. The attempt is then cancelled and fails with a retryable `ProviderError` of code `TIMEOUT`,
   * which `retry` tries again; every write is safe to send again (see `createDynamoStateStore`).
   *
   * @example
   * ```ts
   * import { createDynamoStateStore } from 'storyloom/dynamodb';
   * const store = createDynamoStateStore({ tableName: 'stories', timeoutMs: 5_000, retry: { maxRetries: 3 } });
   * ```
   */
  timeoutMs?: number;
}

/** A `StoryStateStore` on DynamoDB. */
export interface DynamoStateStore extends BaseStateStore {
  readonly tableName: string;
  /** What one commit may carry; see `DYNAMODB_STORE_LIMITS`. */
  readonly limits: typeof DYNAMODB_STORE_LIMITS;
}

type Item = Record<string, unknown>;
type Key = { pk: string; sk: string };

/** How a compressed body is kept: inline, in `PART#` items, or in the content store. */
interface EncodedBody {
  attributes: Item;
  parts: Item[];
  /** Bytes the body adds to its own item. */
  bytes: number;
  /** Bytes of its `parts`. */
  partBytes: number;
}

interface Context {
  sdk: Sdk;
  /** A call under the store's retry policy. */
  send: <T>(command: unknown) => Promise<T>;
  /**
   * One attempt of a call, unretried, for a caller that runs its own retry loop (`batchWrite`): through `send`, each of
   * the loop's attempts would be several, and the two bounds would multiply.
   */
  sendOnce: <T>(command: unknown) => Promise<T>;
}

class DynamoStateStoreImpl extends BaseStateStore implements DynamoStateStore {
  readonly provider = PROVIDER;
  readonly capabilities: StoryStateStoreCapabilities = {
    multiProcess: true,
    durable: true,
    maxInfluencesPerCommit: DYNAMODB_STORE_LIMITS.maxInfluencesPerCommit,
  };
  readonly limits = DYNAMODB_STORE_LIMITS;
  readonly tableName: string;
  private readonly options: DynamoStateStoreOptions;
  private readonly bodyLimit: number;
  private readonly importLeaseMs: number;
  private context: Promise<Context> | undefined;
  private ownedClient: { destroy(): void } | undefined;

  constructor(options: DynamoStateStoreOptions) {
    super(options);
    this.options = options;
    this.tableName = options.tableName;
    this.bodyLimit = options.itemBodyBytes ?? DYNAMODB_STORE_LIMITS.itemBodyBytes;
    this.importLeaseMs = options.importLeaseMs ?? DEFAULT_IMPORT_LEASE_MS;
  }

  // ---- reads of a story that does not exist yet ------------------------------------------------------------------

  /**
   * `read`'s answer when the story exists and no import of it is unfinished, else `hidden`. The history reads below
   * ask for the `STATE` item beside their own read, so a batched import (running, or cut short by a crash and not
   * yet taken over) shows nothing, as it shows nothing to `load` and `exists`. The two reads run together, so they
   * cost no extra wait; only an import that finishes within those milliseconds can slip through, and then the
   * answer lacks at most what it wrote last. The read may fail on what an unfinished import left half written (a body
   * with only some of its parts); that failure is hidden with the rest and surfaces only for a live story. A
   * `ValidationError` surfaces always: it says the call's arguments or the store's options are wrong, whatever the
   * story's state.
   */
  private async ifVisible<T>(storyId: string, read: Promise<T>, hidden: T): Promise<T> {
    const [header, value] = await Promise.allSettled([this.liveHeader(storyId), read]);
    if (value.status === 'rejected' && ValidationError.isInstance(value.reason)) throw value.reason;
    if (header.status === 'rejected') throw header.reason;
    if (!header.value) return hidden;
    if (value.status === 'rejected') throw value.reason;
    return value.value;
  }

  /** The story's `STATE` item, or null when there is no story or its import has not finished (no story yet). */
  private async liveHeader(storyId: string): Promise<Item | null> {
    const header = await this.get(storyKey(storyId), STATE_SK);
    return header && header.importing !== true ? header : null;
  }

  /**
   * Whether the story is there: its `STATE` item alone, not the snapshot `load` decodes (the whole state, which grows
   * with the story: a read unit per 4 KB of it, on every call).
   */
  override async exists(storyId: string): Promise<boolean> {
    checkId(storyId, 'storyId');
    return (await this.liveHeader(storyId)) !== null;
  }

  override listScenes(storyId: string, options?: ListScenesOptions): Promise<Page<Scene>> {
    return this.ifVisible(storyId, super.listScenes(storyId, options), { items: [] });
  }

  override getScene(storyId: string, sceneId: string): Promise<Scene | null> {
    return this.ifVisible(storyId, super.getScene(storyId, sceneId), null);
  }

  override getStateAt(storyId: string, version: number): Promise<StoryState | null> {
    return this.ifVisible(storyId, super.getStateAt(storyId, version), null);
  }

  override pendingInfluences(storyId: string, options?: { limit?: number }): Promise<UserInfluence[]> {
    return this.ifVisible(storyId, super.pendingInfluences(storyId, options), []);
  }

  override getInfluence(storyId: string, influenceId: string): Promise<UserInfluence | null> {
    return this.ifVisible(storyId, super.getInfluence(storyId, influenceId), null);
  }

  override listPublications(storyId: string, sceneId: string): Promise<PublicationEntry[]> {
    return this.ifVisible(storyId, super.listPublications(storyId, sceneId), []);
  }

  // ---- state ------------------------------------------------------------------------------------------------------

  protected async readState(storyId: string): Promise<StoryState | null> {
    const header = await this.liveHeader(storyId);
    if (!header) return null;
    // Written in the transaction that moved STATE to this version: a strongly consistent GetItem is serializable with
    // a transaction, so once STATE shows the version, its snapshot is there to read.
    const snapshot = await this.get(storyKey(storyId), snapshotKey(Number(header.version)));
    if (!snapshot) {
      throw new ProviderError(`Story "${storyId}" is at version ${header.version} but its snapshot is missing`, {
        provider: PROVIDER,
        code: 'CORRUPT',
      });
    }
    return this.decodeBody<StoryState>(snapshot);
  }

  protected async readSnapshot(storyId: string, version: number): Promise<StoryState | null> {
    const item = await this.get(storyKey(storyId), snapshotKey(version));
    return item ? this.decodeBody<StoryState>(item) : null;
  }

  // ---- commit -----------------------------------------------------------------------------------------------------

  protected async writeCommit(storyId: string, commit: PreparedCommit): Promise<CommitResult> {
    const { scene, nextState, expectedVersion, resolvedInfluences } = commit;
    if (resolvedInfluences.length > DYNAMODB_STORE_LIMITS.maxInfluencesPerCommit) {
      throw new ValidationError(
        `A DynamoDB commit resolves at most ${DYNAMODB_STORE_LIMITS.maxInfluencesPerCommit} influences (got ${resolvedInfluences.length}); resolve the rest in the next scene`,
        { problems: [{ path: 'consumedInfluenceIds', message: 'too many influences for one transaction' }] },
      );
    }
    const { send, sdk } = await this.ready();
    const pk = storyKey(storyId);
    const sceneItem = await this.sceneItems(scene);
    const snapshot = await this.encodeBody(storyId, snapshotKey(nextState.version), compress(nextState));
    const parts = [...sceneItem.parts, ...snapshot.parts];
    if (parts.length > 0) {
      // Parts go first, outside the transaction (their keys are named for their bytes, so this harms no racer);
      // a commit already known to fail writes none, so a stale writer does not leave them behind.
      const header = await this.liveHeader(storyId);
      if (Number(header?.version) !== expectedVersion) {
        const replayed = await this.replayOrStale(storyId, scene.id, expectedVersion);
        if (replayed) return replayed;
      }
      await this.batchWrite(parts.map((Item) => ({ PutRequest: { Item } })));
    }
    const table = this.tableName;
    const actions: Item[] = [
      {
        Update: {
          TableName: table,
          Key: { pk, sk: STATE_SK },
          UpdateExpression: 'SET #version = :next',
          ConditionExpression: '#version = :expected AND attribute_not_exists(#importing)',
          ExpressionAttributeNames: { '#version': 'version', '#importing': 'importing' },
          ExpressionAttributeValues: { ':next': nextState.version, ':expected': expectedVersion },
        },
      },
      { Put: { TableName: table, Item: sceneItem.pointer, ConditionExpression: 'attribute_not_exists(sk)' } },
      { Put: { TableName: table, Item: sceneItem.scene, ConditionExpression: 'attribute_not_exists(sk)' } },
      {
        Put: {
          TableName: table,
          Item: { pk, sk: snapshotKey(nextState.version), version: nextState.version, ...snapshot.attributes },
          ConditionExpression: 'attribute_not_exists(sk)',
        },
      },
    ];
    // The scene's index must be the story's scene count: its own item must be new (action 2) and, past the first
    // scene, the one before it must exist. Every commit keeps scenes numbered without a gap, so the two together
    // say the index is the count, without reading the state.
    const previousScene = actions.length;
    if (scene.index > 0) {
      actions.push({
        ConditionCheck: {
          TableName: table,
          Key: { pk, sk: sceneKey(scene.index - 1) },
          ConditionExpression: 'attribute_exists(sk)',
        },
      });
    }
    const firstInfluence = actions.length;
    for (const influence of resolvedInfluences) {
      actions.push({
        Update: {
          TableName: table,
          Key: { pk, sk: influenceKey(influence.id) },
          UpdateExpression: 'SET #status = :status, #doc = :doc REMOVE #lsi1sk',
          ConditionExpression: '#status = :pending',
          ExpressionAttributeNames: { '#status': 'status', '#doc': 'doc', '#lsi1sk': 'lsi1sk' },
          ExpressionAttributeValues: {
            ':status': influence.status,
            ':doc': JSON.stringify(influence),
            ':pending': 'pending',
          },
        },
      });
    }
    const bytes = sceneItem.bytes + snapshot.bytes + estimateBytes(actions.slice(firstInfluence));
    if (
      actions.length > DYNAMODB_STORE_LIMITS.maxTransactionActions ||
      bytes > DYNAMODB_STORE_LIMITS.maxTransactionBytes
    ) {
      throw new ValidationError(
        `The commit of scene "${scene.id}" needs ${actions.length} actions and about ${bytes} bytes, beyond one DynamoDB transaction (${DYNAMODB_STORE_LIMITS.maxTransactionActions} actions, 4 MB)`,
        { problems: [{ path: 'scene', message: 'too large for one DynamoDB transaction' }] },
      );
    }
    try {
      // One token, kept by `send` for the resend after an attempt whose answer was lost: if that attempt committed,
      // the resend succeeds as a no-op. Only a cancelled attempt, which applied nothing, is sent again under a new one.
      await send(
        new sdk.document.TransactWriteCommand({
          TransactItems: actions as never,
          ClientRequestToken: randomUUID(),
        }),
      );
      return { scene: structuredClone(scene), state: structuredClone(nextState), created: true };
    } catch (error) {
      if (errorName(error) !== 'TransactionCanceledException') throw error;
      const reasons = cancellationCodes(error);
      const failed = (index: number) => reasons[index] === 'ConditionalCheckFailed';
      // Only transaction conflicts with a concurrent writer: the race is lost, the caller reloads and retries.
      const interfered = () =>
        new ConflictError(`A concurrent write to story "${storyId}" interfered with the commit`, { cause: error });
      const fault = cancellationFault(error, `The commit of scene "${scene.id}" to story "${storyId}"`);
      if (!reasons.includes('ConditionalCheckFailed')) throw fault ?? interfered();
      // The version is read whatever action 0's code says: DynamoDB reports each action alone, so a STATE item
      // held by a concurrent transaction answers TransactionConflict while the scene and snapshot actions of the same
      // lost race answer ConditionalCheckFailed. Only at the expected version is a taken index this scene's fault.
      const replayed = await this.replayOrStale(storyId, scene.id, expectedVersion, error);
      if (replayed) return replayed;
      if (fault) throw fault;
      if (reasons.includes('TransactionConflict')) throw interfered();
      if (failed(2) || (scene.index > 0 && failed(previousScene))) {
        // At the expected version, so the state it follows is the snapshot of that version.
        throw misplacedScene(storyId, scene.index, (await this.readSnapshot(storyId, expectedVersion))?.sceneCount);
      }
      const stale = resolvedInfluences.find((_, k) => failed(firstInfluence + k));
      if (stale) throw new ConflictError(`Influence "${stale.id}" is no longer pending`, { cause: error });
      throw new ConflictError(`The commit of scene "${scene.id}" lost a race`, { cause: error });
    }
  }

  /**
   * What a commit at `expectedVersion` meets when it cannot be written: the original commit of its scene id (made by
   * an earlier attempt of this call or by a racer, returned with `created: false`), or the `ConflictError` of a story
   * that is gone or has moved past `expectedVersion`. Undefined when the story still stands at `expectedVersion`.
   */
  private async replayOrStale(
    storyId: string,
    sceneId: string,
    expectedVersion: number,
    cause?: unknown,
  ): Promise<CommitResult | undefined> {
    const original = await this.committedScene(storyId, sceneId);
    if (original) return { ...original, created: false };
    const header = await this.liveHeader(storyId);
    if (!header) throw new ConflictError(`Story "${storyId}" does not exist (deleted while in use?)`, { cause });
    if (Number(header.version) !== expectedVersion)
      throw staleVersion(storyId, expectedVersion, Number(header.version));
    return undefined;
  }

  /** The commit that wrote `sceneId`, read back: its scene and the state right after it. */
  private async committedScene(storyId: string, sceneId: string): Promise<Omit<CommitResult, 'created'> | null> {
    const scene = await this.readScene(storyId, sceneId);
    if (!scene) return null;
    const state = await this.readSnapshot(storyId, scene.stateVersion);
    return state ? { scene, state } : null;
  }

  // ---- scenes -----------------------------------------------------------------------------------------------------

  private async sceneItems(scene: Scene) {
    const pk = storyKey(scene.storyId);
    const sk = sceneKey(scene.index);
    const body = await this.encodeBody(scene.storyId, sk, compress(scene));
    return {
      pointer: { pk, sk: sceneIdKey(scene.id), sceneIndex: scene.index, stateVersion: scene.stateVersion },
      scene: {
        pk,
        sk,
        sceneId: scene.id,
        sceneIndex: scene.index,
        chapterId: scene.chapterId,
        lsi1sk: chapterKey(scene.chapterId, pad(scene.index)),
        ...body.attributes,
      },
      parts: body.parts,
      bytes: body.bytes + 600,
      partBytes: body.partBytes,
    };
  }

  protected async readScenes(storyId: string, query: SceneQuery): Promise<Scene[]> {
    const ascending = query.order === 'asc';
    const low = ascending && query.afterIndex !== undefined ? query.afterIndex + 1 : 0;
    const high = !ascending && query.afterIndex !== undefined ? query.afterIndex - 1 : Number.MAX_SAFE_INTEGER;
    if (high < low) return [];
    const lowKey = pad(low);
    const highKey = high === Number.MAX_SAFE_INTEGER ? MAX_PADDED : pad(high);
    const byChapter = query.chapterId !== undefined;
    const items = await this.query(
      {
        ...(byChapter ? { IndexName: INDEX_NAME, Select: 'ALL_ATTRIBUTES' } : {}),
        KeyConditionExpression: `pk = :pk AND ${byChapter ? 'lsi1sk' : 'sk'} BETWEEN :low AND :high`,
        ExpressionAttributeValues: {
          ':pk': storyKey(storyId),
          ':low': byChapter ? chapterKey(query.chapterId!, lowKey) : `SCENE#${lowKey}`,
          ':high': byChapter ? chapterKey(query.chapterId!, highKey) : `SCENE#${highKey}`,
        },
        ScanIndexForward: ascending,
      },
      query.limit,
    );
    return Promise.all(items.map((item) => this.decodeBody<Scene>(item)));
  }

  protected async readScene(storyId: string, sceneId: string): Promise<Scene | null> {
    const pointer = await this.get(storyKey(storyId), sceneIdKey(sceneId));
    if (!pointer) return null;
    const item = await this.get(storyKey(storyId), sceneKey(Number(pointer.sceneIndex)));
    return item ? this.decodeBody<Scene>(item) : null;
  }

  // ---- influences -------------------------------------------------------------------------------------------------

  private influenceItem(influence: UserInfluence): Item {
    return {
      pk: storyKey(influence.storyId),
      sk: influenceKey(influence.id),
      status: influence.status,
      doc: JSON.stringify(influence),
      ...(influence.status === 'pending' ? { lsi1sk: pendingKey(influence) } : {}),
    };
  }

  protected async insertInfluence(influence: UserInfluence): Promise<EnqueueResult> {
    const existing = await this.putUnderStory(
      influence.storyId,
      {
        TableName: this.tableName,
        Item: this.influenceItem(influence),
        ConditionExpression: 'attribute_not_exists(sk)',
      },
      () => this.readInfluence(influence.storyId, influence.id),
      `influence "${influence.id}"`,
    );
    return existing
      ? { inserted: false, influence: existing }
      : { inserted: true, influence: structuredClone(influence) };
  }

  /**
   * One `TransactWriteItems`: a `ConditionCheck` that the story exists and is not being imported, and a conditional
   * `Put`. Returns null when the item was written, or what `readExisting` finds when the put's own condition failed.
   * The story check fetches no state (the snapshot may be large), and a story that is missing or still importing is
   * a `NotFoundError` rather than an orphan item.
   */
  private async putUnderStory<T>(
    storyId: string,
    put: Item,
    readExisting: () => Promise<T | null>,
    what: string,
  ): Promise<T | null> {
    const { send, sdk } = await this.ready();
    try {
      // One token, kept by `send` for the resend after an attempt whose answer was lost: if that attempt went through,
      // the resend is a no-op. Only a cancelled attempt, which applied nothing, is sent again under a new one.
      await send(
        new sdk.document.TransactWriteCommand({
          TransactItems: [
            {
              ConditionCheck: {
                TableName: this.tableName,
                Key: { pk: storyKey(storyId), sk: STATE_SK },
                ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(#importing)',
                ExpressionAttributeNames: { '#importing': 'importing' },
              },
            },
            { Put: put },
          ] as never,
          ClientRequestToken: randomUUID(),
        }),
      );
      return null;
    } catch (error) {
      if (errorName(error) !== 'TransactionCanceledException') throw error;
      const [story, item] = cancellationCodes(error);
      if (story === 'ConditionalCheckFailed') {
        throw new NotFoundError(`Story "${storyId}" does not exist`, { cause: error });
      }
      const fault = cancellationFault(error, `Writing ${what} to story "${storyId}"`);
      if (fault) throw fault;
      if (item !== 'ConditionalCheckFailed') {
        throw new ConflictError(`A concurrent write to story "${storyId}" interfered with writing ${what}`, {
          cause: error,
        });
      }
      const existing = await readExisting();
      if (!existing) throw new ConflictError(`The stored ${what} changed while being written`, { cause: error });
      return existing;
    }
  }

  protected async readPendingInfluences(storyId: string, limit: number): Promise<UserInfluence[]> {
    const items = await this.query(
      {
        IndexName: INDEX_NAME,
        Select: 'ALL_ATTRIBUTES',
        KeyConditionExpression: 'pk = :pk AND begins_with(lsi1sk, :prefix)',
        ExpressionAttributeValues: { ':pk': storyKey(storyId), ':prefix': 'PENDING#' },
      },
      limit,
    );
    return items.map((item) => JSON.parse(String(item.doc)) as UserInfluence);
  }

  protected async readInfluence(storyId: string, influenceId: string): Promise<UserInfluence | null> {
    const item = await this.get(storyKey(storyId), influenceKey(influenceId));
    return item ? (JSON.parse(String(item.doc)) as UserInfluence) : null;
  }

  protected async readAllInfluences(storyId: string): Promise<UserInfluence[]> {
    const items = await this.queryPrefix(storyId, 'INF#');
    return items.map((item) => JSON.parse(String(item.doc)) as UserInfluence).sort(compareInfluences);
  }

  // ---- publication log --------------------------------------------------------------------------------------------

  private publicationItem(entry: PublicationEntry): Item {
    return {
      pk: storyKey(entry.storyId),
      sk: publicationKey(entry.sceneId, entry.target),
      status: entry.status,
      doc: JSON.stringify(entry),
    };
  }

  protected async writePublication(entry: PublicationEntry): Promise<RecordPublicationResult> {
    const existing = await this.putUnderStory(
      entry.storyId,
      {
        TableName: this.tableName,
        Item: this.publicationItem(entry),
        ConditionExpression: 'attribute_not_exists(sk) OR #status = :failed',
        ExpressionAttributeNames: { '#status': 'status' },
        ExpressionAttributeValues: { ':failed': 'failed' },
      },
      async () => {
        const item = await this.get(storyKey(entry.storyId), publicationKey(entry.sceneId, entry.target));
        return item ? (JSON.parse(String(item.doc)) as PublicationEntry) : null;
      },
      `publication "${entry.sceneId}/${entry.target}"`,
    );
    return existing ? { recorded: false, entry: existing } : { recorded: true, entry: structuredClone(entry) };
  }

  protected async readPublications(storyId: string, sceneId: string): Promise<PublicationEntry[]> {
    const items = await this.queryPrefix(storyId, `PUB#${sceneId}#`);
    return items.map((item) => JSON.parse(String(item.doc)) as PublicationEntry);
  }

  protected async readAllPublications(storyId: string): Promise<PublicationEntry[]> {
    // Sort-key order is scene id, then target: the "#" between them sorts before every character ids and targets
    // may hold, so a scene id that is a prefix of another still comes first.
    const items = await this.queryPrefix(storyId, 'PUB#');
    return items.map((item) => JSON.parse(String(item.doc)) as PublicationEntry);
  }

  // ---- create, fork, import ---------------------------------------------------------------------------------------

  /**
   * Writes a whole story. When it fits one transaction (a `create`, a small fork or import) it is one
   * `TransactWriteItems` and atomic. A larger story cannot be: the `STATE` item is first written with
   * `importing: true` (so the story stays invisible and a second writer gets `ConflictError`), the rest goes in
   * batches, and the marker is cleared last. A failed import removes what it wrote while the marker is still its own
   * (one overtaken after its lease gets `ConflictError` and deletes nothing); one cut short by a crash is taken over,
   * and its leftovers deleted, by the next create or import of that id once `importLeaseMs` has passed.
   */
  protected async insertStory(bundle: StoryBundle): Promise<void> {
    const storyId = bundle.state.storyId;
    const pk = storyKey(storyId);
    const { items, bytes } = await this.storyItems(bundle);
    const finalState = { pk, sk: STATE_SK, version: bundle.state.version };
    const existing = await this.get(pk, STATE_SK);
    if (existing) {
      const startedAt = Number(existing.importStartedAt);
      if (existing.importing !== true) throw new ConflictError(`Story "${storyId}" already exists`);
      if (this.clock.now() - startedAt < this.importLeaseMs) {
        throw new ConflictError(
          `Story "${storyId}" is being imported (started ${new Date(startedAt).toISOString()}); an unfinished import is taken over after ${this.importLeaseMs} ms`,
        );
      }
      const token = await this.takeOverImport(storyId, String(existing.importToken));
      return this.importInBatches(storyId, items, finalState, token);
    }
    const { send, sdk } = await this.ready();
    if (
      items.length + 1 <= DYNAMODB_STORE_LIMITS.maxTransactionActions &&
      bytes <= DYNAMODB_STORE_LIMITS.maxTransactionBytes
    ) {
      try {
        await send(
          new sdk.document.TransactWriteCommand({
            TransactItems: [
              {
                Put: { TableName: this.tableName, Item: finalState, ConditionExpression: 'attribute_not_exists(pk)' },
              },
              ...items.map((Item) => ({ Put: { TableName: this.tableName, Item } })),
            ] as never,
            ClientRequestToken: randomUUID(),
          }),
        );
        return;
      } catch (error) {
        if (
          errorName(error) === 'TransactionCanceledException' &&
          cancellationCodes(error)[0] === 'ConditionalCheckFailed'
        ) {
          throw new ConflictError(`Story "${storyId}" already exists`, { cause: error });
        }
        if (errorName(error) === 'TransactionCanceledException') {
          throw (
            cancellationFault(error, `The creation of story "${storyId}"`) ??
            new ConflictError(`A concurrent write to story "${storyId}" interfered with its creation`, {
              cause: error,
            })
          );
        }
        throw error;
      }
    }
    const token = randomUUID();
    try {
      await send(
        new sdk.document.PutCommand({
          TableName: this.tableName,
          Item: { ...finalState, importing: true, importToken: token, importStartedAt: this.clock.now() },
          // Its own token passes, so a resend after a lost answer finds its own marker rather than "already exists".
          ConditionExpression: 'attribute_not_exists(pk) OR #token = :token',
          ExpressionAttributeNames: { '#token': 'importToken' },
          ExpressionAttributeValues: { ':token': token },
        }),
      );
    } catch (error) {
      if (errorName(error) === 'ConditionalCheckFailedException') {
        throw new ConflictError(`Story "${storyId}" already exists`, { cause: error });
      }
      throw error;
    }
    return this.importInBatches(storyId, items, finalState, token);
  }

  /**
   * Writes the items, then clears the marker, leaving its token in `importedBy`. A failed import removes what it wrote
   * (best effort: if that fails too, the lease lets a later import take over), but only while the marker is still its
   * own: an import overtaken after its lease, or one whose last update went through unanswered, deletes nothing.
   */
  private async importInBatches(storyId: string, items: Item[], finalState: Item, token: string): Promise<void> {
    const { send, sdk } = await this.ready();
    try {
      await this.batchWrite(items.map((Item) => ({ PutRequest: { Item } })));
      await send(
        new sdk.document.UpdateCommand({
          TableName: this.tableName,
          Key: { pk: finalState.pk, sk: STATE_SK },
          UpdateExpression: 'SET #version = :version, #importedBy = :token REMOVE #importing, #token, #startedAt',
          ConditionExpression: '#token = :token',
          ExpressionAttributeNames: {
            '#version': 'version',
            '#importing': 'importing',
            '#token': 'importToken',
            '#startedAt': 'importStartedAt',
            '#importedBy': 'importedBy',
          },
          ExpressionAttributeValues: { ':version': finalState.version, ':token': token },
        }),
      );
    } catch (error) {
      if (errorName(error) === 'ConditionalCheckFailedException') {
        // The marker is not ours any more, so neither are the items: delete nothing. If `importedBy` holds our token,
        // this update went through and a resend after its lost answer met its own work; a commit may have followed
        // it, so the resend must not apply again (the version would go back), only see that the import is done.
        if ((await this.liveHeader(storyId))?.importedBy === token) return;
        throw new ConflictError(`The import of story "${storyId}" was taken over by another writer`, {
          cause: error,
        });
      }
      await this.removeStoryItems(storyId, token).catch(() => undefined);
      throw error;
    }
  }

  /** Claims a stale import's marker for a new import, then deletes everything the stale one wrote. */
  private async takeOverImport(storyId: string, staleToken: string): Promise<string> {
    const token = randomUUID();
    try {
      await this.holdImportMarker(storyId, token, staleToken);
    } catch (error) {
      if (errorName(error) === 'ConditionalCheckFailedException') {
        throw new ConflictError(`Another writer took over the unfinished import of story "${storyId}"`, {
          cause: error,
        });
      }
      throw error;
    }
    await this.deleteAllButState(storyId);
    return token;
  }

  /**
   * Deletes every item of an importing story, the marker last, only while `token` holds the marker: its lease is
   * renewed first on that condition (a `ConditionalCheckFailedException` when it is not ours), so no other import
   * takes the id over while the items go. An error leaves the rest for the next import to take over.
   */
  private async removeStoryItems(storyId: string, token: string): Promise<void> {
    const { send, sdk } = await this.ready();
    await this.holdImportMarker(storyId, token);
    await this.deleteAllButState(storyId);
    await send(
      new sdk.document.DeleteCommand({
        TableName: this.tableName,
        Key: { pk: storyKey(storyId), sk: STATE_SK },
        ConditionExpression: '#token = :token',
        ExpressionAttributeNames: { '#token': 'importToken' },
        ExpressionAttributeValues: { ':token': token },
      }),
    );
  }

  /**
   * Makes `token` the holder of a story's importing marker with a fresh lease, on condition that the marker is still
   * importing and held by `token` or, to take it over, by `staleToken`. A resend after a lost answer finds its own
   * token and passes. `ConditionalCheckFailedException` when another writer holds it.
   */
  private async holdImportMarker(storyId: string, token: string, staleToken?: string): Promise<void> {
    const { send, sdk } = await this.ready();
    await send(
      new sdk.document.UpdateCommand({
        TableName: this.tableName,
        Key: { pk: storyKey(storyId), sk: STATE_SK },
        UpdateExpression: 'SET #token = :token, #startedAt = :now',
        ConditionExpression: `${staleToken === undefined ? '#token = :token' : '(#token = :stale OR #token = :token)'} AND #importing = :true`,
        ExpressionAttributeNames: {
          '#token': 'importToken',
          '#startedAt': 'importStartedAt',
          '#importing': 'importing',
        },
        ExpressionAttributeValues: {
          ':token': token,
          ':now': this.clock.now(),
          ':true': true,
          ...(staleToken === undefined ? {} : { ':stale': staleToken }),
        },
      }),
    );
  }

  /** Deletes every item of a story but its `STATE` item. */
  private async deleteAllButState(storyId: string): Promise<void> {
    const keys = await this.queryPrefix(storyId, '', 'pk, sk');
    await this.batchWrite(
      keys.filter((key) => key.sk !== STATE_SK).map((key) => ({ DeleteRequest: { Key: { pk: key.pk, sk: key.sk } } })),
    );
  }

  /** Every item of a story but its `STATE` item, and their estimated size. */
  private async storyItems(bundle: StoryBundle): Promise<{ items: Item[]; bytes: number }> {
    const storyId = bundle.state.storyId;
    const pk = storyKey(storyId);
    const items: Item[] = [];
    let bytes = 0;
    // The current state is the snapshot of its version: the state record wins over a snapshot of that version.
    const snapshots = new Map(bundle.snapshots.map((snapshot) => [snapshot.version, snapshot.gzip]));
    snapshots.set(bundle.state.version, compress(bundle.state));
    for (const [version, compressed] of snapshots) {
      const body = await this.encodeBody(storyId, snapshotKey(version), compressed);
      items.push({ pk, sk: snapshotKey(version), version, ...body.attributes }, ...body.parts);
      bytes += body.bytes + body.partBytes + 200;
    }
    for (const scene of bundle.scenes) {
      const scenes = await this.sceneItems(scene);
      items.push(scenes.pointer, scenes.scene, ...scenes.parts);
      bytes += scenes.bytes + scenes.partBytes;
    }
    const small = [
      ...bundle.influences.map((i) => this.influenceItem(i)),
      ...bundle.publications.map((e) => this.publicationItem(e)),
    ];
    items.push(...small);
    bytes += estimateBytes(small);
    return { items, bytes };
  }

  // ---- bodies -----------------------------------------------------------------------------------------------------

  /** Keeps a compressed body (`compress`) inline when small, else in the content store, else split into `PART#` items. */
  private async encodeBody(storyId: string, sk: string, bytes: Uint8Array): Promise<EncodedBody> {
    if (bytes.length <= this.bodyLimit) {
      return { attributes: { body: bytes }, parts: [], bytes: bytes.length, partBytes: 0 };
    }
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const { contentStore } = this.options;
    if (contentStore) {
      // Content-addressed: two writers of one key always write the same bytes, so a losing racer harms nothing.
      const key = `${this.options.contentKeyPrefix ?? 'storyloom/'}${storyId}/${sk}/${sha256}.json.gz`;
      try {
        await contentStore.put(key, bytes);
      } catch (error) {
        throw toProviderError(error, `content store put ${key}`);
      }
      return { attributes: { bodyKey: key, bodySha256: sha256 }, parts: [], bytes: key.length + 200, partBytes: 0 };
    }
    const pk = storyKey(storyId);
    const prefix = partsPrefix(sk, sha256, this.bodyLimit);
    const parts: Item[] = [];
    for (let offset = 0, part = 0; offset < bytes.length; offset += this.bodyLimit, part++) {
      parts.push({ pk, sk: partKey(prefix, part), chunk: bytes.subarray(offset, offset + this.bodyLimit) });
    }
    return {
      attributes: { bodyParts: parts.length, bodyPartsPrefix: prefix, bodySha256: sha256 },
      parts,
      bytes: prefix.length + 200,
      partBytes: bytes.length + parts.length * 200,
    };
  }

  private async decodeBody<T>(item: Item): Promise<T> {
    const partCount = integerAttribute(item.bodyParts);
    let bytes: Uint8Array;
    if (item.body instanceof Uint8Array) {
      bytes = item.body;
    } else if (typeof item.bodyKey === 'string') {
      const { contentStore } = this.options;
      if (!contentStore) {
        throw new ValidationError(
          `Item ${String(item.sk)} keeps its body in a content store ("${item.bodyKey}"), but none is configured`,
        );
      }
      let stored: Uint8Array | null;
      try {
        stored = await contentStore.get(item.bodyKey);
      } catch (error) {
        throw toProviderError(error, `content store get ${item.bodyKey}`);
      }
      if (!stored) {
        throw new ProviderError(`Content "${item.bodyKey}" of item ${String(item.sk)} is missing`, {
          provider: PROVIDER,
          code: 'CORRUPT',
        });
      }
      bytes = stored;
    } else if (partCount !== undefined) {
      // Items written before parts were named for their body keep them at `PART#<sk>#<n>`; that prefix also finds
      // the parts of other bodies a failed commit left for the same key, which end in more than a number.
      const prefix = typeof item.bodyPartsPrefix === 'string' ? item.bodyPartsPrefix : `PART#${String(item.sk)}#`;
      const numberOf = (part: Item) => String(part.sk).slice(prefix.length);
      // Only the parts this item counts: 0 to bodyParts - 1.
      const parts = (await this.queryPrefix(String(item.pk).slice('STORY#'.length), prefix))
        .filter((part) => /^\d+$/.test(numberOf(part)) && Number(numberOf(part)) < partCount)
        .sort((a, b) => Number(numberOf(a)) - Number(numberOf(b)));
      if (parts.length !== partCount) {
        throw new ProviderError(`Item ${String(item.sk)} has ${parts.length} of ${partCount} parts`, {
          provider: PROVIDER,
          code: 'CORRUPT',
        });
      }
      bytes = Buffer.concat(parts.map((part) => part.chunk as Uint8Array));
    } else {
      throw new ProviderError(`Item ${String(item.sk)} has no body`, { provider: PROVIDER, code: 'CORRUPT' });
    }
    if (typeof item.bodySha256 === 'string' && createHash('sha256').update(bytes).digest('hex') !== item.bodySha256) {
      throw new ProviderError(`The body of item ${String(item.sk)} does not match its checksum`, {
        provider: PROVIDER,
        code: 'CORRUPT',
      });
    }
    return JSON.parse(gunzipSync(bytes).toString('utf8')) as T;
  }

  // ---- DynamoDB calls ---------------------------------------------------------------------------------------------

  private ready(): Promise<Context> {
    this.context ??= this.connect().catch((error: unknown) => {
      this.context = undefined;
      throw error;
    });
    return this.context;
  }

  private async connect(): Promise<Context> {
    const sdk = await loadSdk('createDynamoStateStore');
    const timeoutMs = this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    let client = this.options.client;
    if (!client) {
      const created = new sdk.client.DynamoDBClient({
        maxAttempts: 1,
        // The SDK's handler has no timeout by default: these close a socket that never connects or goes quiet.
        requestHandler: { connectionTimeout: Math.min(CONNECTION_TIMEOUT_MS, timeoutMs), socketTimeout: timeoutMs },
        ...(this.options.region ? { region: this.options.region } : {}),
        ...(this.options.endpoint ? { endpoint: this.options.endpoint } : {}),
      });
      this.ownedClient = created;
      client = created;
    }
    const isDocument = (client as { config?: { translateConfig?: unknown } }).config?.translateConfig !== undefined;
    const document = isDocument
      ? (client as DynamoDBDocumentClient)
      : sdk.document.DynamoDBDocumentClient.from(client as DynamoDBClient, {
          marshallOptions: { removeUndefinedValues: true },
        });
    const retry = this.options.retry ?? {};
    /**
     * One attempt, bounded by `timeoutMs` and a write's upload time (`attemptWithin`). Faults come out typed;
     * conditional failures come out as the SDK raised them, for the callers to read their reasons.
     */
    const attempt = <T>(command: unknown): Promise<T> => {
      const operation = commandName(command);
      const bound = timeoutMs + (WRITES.has(operation) ? uploadAllowance(command) : 0);
      return sendWithin(document, command, bound, undefined, (error) =>
        isConditionalAnswer(error) ? error : toProviderError(error, operation),
      ) as Promise<T>;
    };
    const send = async <T>(command: unknown): Promise<T> => {
      let current = command;
      const once = async (): Promise<T> => {
        try {
          return await attempt<T>(current);
        } catch (error) {
          // A cancelled transaction applied nothing, so it goes again as a new request, under a new token: DynamoDB
          // documents what a resend of a token answers after a call that succeeded, not after one it cancelled.
          // After any other failure the attempt may have been applied with its answer lost, and the same token is
          // what makes its resend a no-op.
          if (errorName(error) === 'TransactionCanceledException') current = withNewToken(current);
          throw error;
        }
      };
      try {
        return await withRetry(once, { ...retry, clock: this.clock, shouldRetry: isRetryableAwsError });
      } catch (error) {
        // Conditional failures are answers, not faults: hand them to the caller as they came.
        const last = RetryError.isInstance(error) ? error.errors.at(-1) : error;
        if (isConditionalAnswer(last)) throw last;
        const operation = commandName(command);
        const throttled =
          TABLE_WRITES.has(operation) && throttledAfterRetries(error, `DynamoDB ${operation}`, { everyAttempt: true });
        if (throttled) throw throttled;
        if (StoryloomError.isInstance(error)) throw error;
        throw toProviderError(error, operation);
      }
    };
    return { sdk, send, sendOnce: attempt };
  }

  private async get(pk: string, sk: string): Promise<Item | null> {
    const { send, sdk } = await this.ready();
    const output = await send<{ Item?: Item }>(
      new sdk.document.GetCommand({ TableName: this.tableName, Key: { pk, sk } satisfies Key, ConsistentRead: true }),
    );
    return output.Item ?? null;
  }

  /** Pages through a query until `limit` items or the end. */
  private async query(input: Item, limit = Number.POSITIVE_INFINITY): Promise<Item[]> {
    const { send, sdk } = await this.ready();
    const items: Item[] = [];
    let start: Item | undefined;
    do {
      const remaining = limit - items.length;
      const output = await send<{ Items?: Item[]; LastEvaluatedKey?: Item }>(
        new sdk.document.QueryCommand({
          TableName: this.tableName,
          ConsistentRead: true,
          ...input,
          ...(Number.isFinite(remaining) ? { Limit: Math.min(remaining, 1_000) } : {}),
          ...(start ? { ExclusiveStartKey: start } : {}),
        } as never),
      );
      items.push(...(output.Items ?? []));
      start = output.LastEvaluatedKey;
    } while (start && items.length < limit);
    return items;
  }

  /** Every item of a story whose sort key starts with `prefix`, in sort-key order. */
  private queryPrefix(storyId: string, prefix: string, projection?: string): Promise<Item[]> {
    return this.query({
      KeyConditionExpression: prefix === '' ? 'pk = :pk' : 'pk = :pk AND begins_with(sk, :prefix)',
      ExpressionAttributeValues: { ':pk': storyKey(storyId), ...(prefix === '' ? {} : { ':prefix': prefix }) },
      ...(projection ? { ProjectionExpression: projection } : {}),
    });
  }

  /**
   * Writes requests 25 at a time, each batch under one loop of the store's retry policy whose every attempt is one send
   * (`sendOnce`). DynamoDB refuses a batch whole for throttling when it can process none of its items, and leaves
   * items unprocessed when it can process only some: the same answer, past its capacity for now, so both are sent
   * again after the same backoff, up to `BATCH_MAX_RETRIES` + 1 sends (9; `retry.maxRetries` + 1 when set). Through
   * `send`, whose own attempts would run inside each of the loop's, a batch refused whole would go out 3 × 9 times.
   * Any other retryable fault (a dropped connection, a server error, a timeout) is retried by the same loop, but only
   * as often as the store retries any one call (`retry.maxRetries`, default 2): against a peer that has stopped
   * answering, 9 attempts of `timeoutMs` plus the upload allowance each would hold an import, or a commit's parts, for
   * minutes. Sending a batch again is safe: its puts write whole items, its deletes remove keys. Still throttled at the
   * end, the batch fails with a retryable `ProviderError` of code `THROTTLED`, as a single call does
   * (`throttledAfterRetries`).
   */
  private async batchWrite(requests: Item[]): Promise<void> {
    const { sendOnce, sdk } = await this.ready();
    const retry = this.options.retry ?? {};
    const faultRetries = retry.maxRetries ?? RETRY_DEFAULTS.maxRetries;
    for (let offset = 0; offset < requests.length; offset += BATCH_WRITE_SIZE) {
      let pending = requests.slice(offset, offset + BATCH_WRITE_SIZE);
      let faults = 0;
      try {
        await withRetry(
          async () => {
            const output = await sendOnce<{ UnprocessedItems?: Record<string, Item[]> }>(
              new sdk.document.BatchWriteCommand({ RequestItems: { [this.tableName]: pending } } as never),
            );
            const unprocessed = output.UnprocessedItems?.[this.tableName] ?? [];
            if (unprocessed.length > 0) {
              pending = unprocessed;
              throw new ProviderError(`${unprocessed.length} batch writes were left unprocessed`, {
                provider: PROVIDER,
                code: 'THROTTLED',
                isRetryable: true,
              });
            }
          },
          {
            maxRetries: BATCH_MAX_RETRIES,
            ...retry,
            clock: this.clock,
            shouldRetry: (error) => isRetryableAwsError(error) && (isThrottled(error) || ++faults <= faultRetries),
          },
        );
      } catch (error) {
        throw (
          throttledAfterRetries(error, `A batch of ${pending.length} writes`, { everyAttempt: false }) ??
          faultRetriesSpent(error) ??
          error
        );
      }
    }
  }

  async close(): Promise<void> {
    this.ownedClient?.destroy();
    this.ownedClient = undefined;
    this.context = undefined;
  }
}

/**
 * A numeric attribute as a number, or undefined when it holds no safe integer. A document client built with
 * `unmarshallOptions.wrapNumbers` reads numbers as `NumberValue` objects (or what its function makes of them), not as
 * `number`s, so a numeric attribute is read through `Number`, never tested with `typeof`.
 */
function integerAttribute(value: unknown): number | undefined {
  if (value === undefined || value === null || typeof value === 'boolean' || value === '') return undefined;
  const number = Number(value);
  return Number.isSafeInteger(number) ? number : undefined;
}

// ---- errors ---------------------------------------------------------------------------------------------------------

function errorName(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { name } = error as { name?: unknown };
  return typeof name === 'string' ? name : undefined;
}

/** The time a write may take to upload at `UPLOAD_BYTES_PER_MS`, in ms, from the size of its input. */
function uploadAllowance(command: unknown): number {
  return Math.ceil(roughSize((command as { input?: unknown }).input, 0) / UPLOAD_BYTES_PER_MS);
}

/**
 * About how many bytes `value` takes on the wire: its strings' lengths, its binary values' sizes (sent in base64, a
 * third more), a few bytes for anything else. Deep structures past a few levels more than DynamoDB allows count as
 * nothing more.
 */
function roughSize(value: unknown, depth: number): number {
  if (typeof value === 'string') return value.length + 2;
  if (value instanceof Uint8Array) return Math.ceil((value.byteLength * 4) / 3) + 2;
  if (typeof value !== 'object' || value === null || depth > 40) return 8;
  let size = 2;
  if (Array.isArray(value)) {
    for (const item of value) size += roughSize(item, depth + 1) + 1;
    return size;
  }
  if (value instanceof Set) {
    for (const item of value) size += roughSize(item, depth + 1) + 1;
    return size;
  }
  for (const [key, item] of Object.entries(value)) size += key.length + 3 + roughSize(item, depth + 1);
  return size;
}

/** A condition that failed (or a cancelled transaction): an answer for the caller to read, not a fault. */
function isConditionalAnswer(error: unknown): boolean {
  const name = errorName(error);
  return name === 'ConditionalCheckFailedException' || name === 'TransactionCanceledException';
}

function cancellationCodes(error: unknown): Array<string | undefined> {
  const reasons = (error as { CancellationReasons?: Array<{ Code?: string }> }).CancellationReasons ?? [];
  return reasons.map((reason) => reason?.Code);
}

/** The names of DynamoDB's throttling errors: the table or its partition is past its capacity for now. */
const THROTTLING_ERRORS = new Set([
  'ProvisionedThroughputExceededException',
  'ThrottlingException',
  'RequestLimitExceeded',
]);
const RETRYABLE_ERRORS = new Set([
  ...THROTTLING_ERRORS,
  'InternalServerError',
  'ServiceUnavailable',
  'TransactionInProgressException',
  'TransactionConflictException',
  'TimeoutError',
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  // What the AWS SDK counts as network errors: a name that did not resolve this time, a route that is down.
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);
/** The cancellation reasons of a transaction throttled for capacity. */
const THROTTLED_CANCELLATIONS = new Set(['ThrottlingError', 'ProvisionedThroughputExceeded']);
const RETRYABLE_CANCELLATIONS = new Set([...THROTTLED_CANCELLATIONS, 'TransactionConflict']);

/** The codes of the actions that failed a cancelled transaction (the others answer `None`). */
function failedActionCodes(error: unknown): string[] {
  return cancellationCodes(error).filter((code): code is string => code !== undefined && code !== 'None');
}

/** The error of a write refused because the story's items reached DynamoDB's 10 GB per partition key. */
function itemCollectionFull(operation: string, cause: unknown): ProviderError {
  return new ProviderError(
    `${operation} failed: the story's items reached DynamoDB's 10 GB limit per story (item collection); move long bodies to a content store`,
    { provider: PROVIDER, code: 'ITEM_COLLECTION_FULL', isRetryable: false, cause },
  );
}

/**
 * The fault a cancelled transaction's reasons name beside failed conditions and races, or undefined when there is
 * none. A full item collection (`ItemCollectionSizeLimitExceeded`: the story's items passed DynamoDB's 10 GB per
 * partition key, the price of the local index) or a `ValidationError` does not pass with a retry, and must not pass
 * for a lost race: the engine answers a `ConflictError` by generating the scene again, a paid call, for ever. Nor must
 * a transaction cancelled only for throttling (DynamoDB's answer under too little capacity, on-demand tables included:
 * one partition, which a story with a local index is, serves at most 1,000 write units a second): nothing was written
 * and no one won, so it is a retryable `ProviderError` of code `THROTTLED`: the run fails, retryable, and the next
 * one writes the scene (a `ConflictError` made the engine write it again at once, up to its conflict retries, into
 * the same hot partition).
 */
function cancellationFault(error: unknown, operation: string): ProviderError | undefined {
  const failed = failedActionCodes(error);
  const faults = [
    ...new Set(failed.filter((code) => code !== 'ConditionalCheckFailed' && !RETRYABLE_CANCELLATIONS.has(code))),
  ];
  if (faults.length === 0) {
    if (failed.length === 0 || !failed.every((code) => THROTTLED_CANCELLATIONS.has(code))) return undefined;
    return new ProviderError(`${operation} was throttled by DynamoDB (${[...new Set(failed)].join(', ')})`, {
      provider: PROVIDER,
      code: 'THROTTLED',
      isRetryable: true,
      cause: error,
    });
  }
  if (faults.includes('ItemCollectionSizeLimitExceeded')) return itemCollectionFull(operation, error);
  return new ProviderError(`${operation} was refused by DynamoDB: ${faults.join(', ')}`, {
    provider: PROVIDER,
    isRetryable: false,
    cause: error,
  });
}

/**
 * Throttling, server errors, dropped connections, transaction conflicts and a request refused for a clock the SDK has
 * since corrected are worth another attempt.
 */
function isRetryableAwsError(error: unknown): boolean {
  if (StoryloomError.isInstance(error)) return error.isRetryable;
  const name = errorName(error);
  if (name === 'TransactionCanceledException') {
    // Worth another attempt only when every action that failed met a race or throttling, nothing that lasts.
    const codes = failedActionCodes(error);
    return codes.length > 0 && codes.every((code) => RETRYABLE_CANCELLATIONS.has(code));
  }
  if (name === 'ConditionalCheckFailedException') return false;
  // Refused for the host's clock, which the SDK has just corrected: the next attempt is signed with the right time.
  // The SDK's own retry would send it again, but the store's clients make one attempt (`maxAttempts: 1`).
  if ((error as { $metadata?: { clockSkewCorrected?: unknown } } | null)?.$metadata?.clockSkewCorrected === true) {
    return true;
  }
  const code = (error as { code?: unknown } | null)?.code;
  if ((name && RETRYABLE_ERRORS.has(name)) || (typeof code === 'string' && RETRYABLE_ERRORS.has(code))) return true;
  const status = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  return typeof status === 'number' && status >= 500;
}

/** Whether `error` is DynamoDB's answer that the table or its partition is past its capacity for now. */
function isThrottled(error: unknown): boolean {
  return ProviderError.isInstance(error) && error.code === 'THROTTLED';
}

/**
 * What a write still throttled after every attempt its retry policy allows fails with: a retryable `ProviderError` of
 * code `THROTTLED`, the `RetryError` of its attempts as `cause`; undefined when the retries ended any other way. As a
 * transaction cancelled for throttling (`cancellationFault`): nothing was written and nothing is broken, so the caller
 * may try again later (the engine's run fails retryable, a scheduler runs it again). Left as the `RetryError`, whose
 * `isRetryable` is false, the same throttling of the same commit read as a fault no retry mends when DynamoDB refused
 * the request whole (`ThrottlingException`, `ProvisionedThroughputExceededException`, `RequestLimitExceeded`) rather
 * than cancelled it.
 */
function throttledAfterRetries(
  error: unknown,
  what: string,
  { everyAttempt }: { everyAttempt: boolean },
): ProviderError | undefined {
  if (!RetryError.isInstance(error) || error.reason !== 'maxRetriesExceeded') return undefined;
  const last = error.errors.at(-1);
  if (!ProviderError.isInstance(last) || !isThrottled(last)) return undefined;
  // A single write that met another fault first (a timeout, a dropped connection) may have been applied then, its
  // answer lost: that is not "nothing was written", and it stays the RetryError it is. A batch's writes are whole
  // items put or keys deleted, the same again however often they land, so its last answer is what counts.
  if (everyAttempt && !error.errors.every(isThrottled)) return undefined;
  return new ProviderError(`${what} was still throttled after ${error.attempts} attempts: ${last.message}`, {
    provider: PROVIDER,
    code: 'THROTTLED',
    isRetryable: true,
    cause: error,
    ...(last.status === undefined ? {} : { status: last.status }),
  });
}

/**
 * A batch's retries stopped by its budget for faults other than throttling (`batchWrite`) as the `RetryError` they
 * are: retries that ran out (`maxRetriesExceeded`), as `send` reports them, not an error no retry mends (which is how
 * `withRetry` reports a `shouldRetry` that said no). Undefined when the loop stopped for any other reason.
 */
function faultRetriesSpent(error: unknown): RetryError | undefined {
  if (RetryError.isInstance(error) && error.reason !== 'errorNotRetryable') return undefined;
  const errors = RetryError.isInstance(error) ? error.errors : [error];
  const last = errors.at(-1);
  if (!isRetryableAwsError(last)) return undefined;
  const message = last instanceof Error ? last.message : String(last);
  return new RetryError(`Failed after ${errors.length} attempts: ${message}`, { errors, reason: 'maxRetriesExceeded' });
}

function toProviderError(error: unknown, operation: string): ProviderError {
  if (ProviderError.isInstance(error)) return error;
  const status = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  const name = errorName(error) ?? 'Error';
  // A single write (a batch of parts or of an import, an import's marker) refused for a full item collection.
  if (name === 'ItemCollectionSizeLimitExceededException') return itemCollectionFull(`DynamoDB ${operation}`, error);
  const message = error instanceof Error ? error.message : String(error);
  return new ProviderError(`DynamoDB ${operation} failed: ${name}: ${message}`, {
    provider: PROVIDER,
    cause: error,
    isRetryable: isRetryableAwsError(error),
    // The SDK handler's own connection and socket timeouts, when a client sets them.
    ...(name === 'TimeoutError' ? { code: 'TIMEOUT' } : {}),
    ...(THROTTLING_ERRORS.has(name) ? { code: 'THROTTLED' } : {}),
    ...(status === undefined ? {} : { status }),
  });
}

/** The same command with a new `ClientRequestToken`, or `command` itself when it carries none. */
function withNewToken(command: unknown): unknown {
  const { input } = command as { input?: Item };
  if (typeof input?.ClientRequestToken !== 'string') return command;
  const Command = (command as { constructor: new (input: Item) => unknown }).constructor;
  return new Command({ ...input, ClientRequestToken: randomUUID() });
}

function commandName(command: unknown): string {
  return (command as { constructor?: { name?: string } })?.constructor?.name?.replace(/Command$/, '') ?? 'call';
}

/** A generous estimate of what items add to a request: JSON size plus binary lengths. */
function estimateBytes(items: unknown[]): number {
  let bytes = 0;
  for (const item of items) {
    bytes += JSON.stringify(item, (_key, value) => (value instanceof Uint8Array ? value.length : value)).length + 100;
  }
  return bytes;
}

function checkOptions(options: DynamoStateStoreOptions): void {
  const problems: Array<{ path: string; message: string }> = [];
  if (typeof options !== 'object' || options === null) {
    throw new ValidationError('createDynamoStateStore needs { tableName }', {
      problems: [{ path: 'options', message: 'must be an object with tableName' }],
    });
  }
  if (typeof options.tableName !== 'string' || !/^[A-Za-z0-9_.-]{3,255}$/.test(options.tableName)) {
    problems.push({ path: 'tableName', message: 'must be 3-255 characters of letters, digits and "_.-"' });
  }
  if (options.client !== undefined && typeof (options.client as { send?: unknown }).send !== 'function') {
    problems.push({ path: 'client', message: 'must be a DynamoDBClient or DynamoDBDocumentClient' });
  }
  const limit = options.itemBodyBytes;
  if (
    limit !== undefined &&
    (!Number.isInteger(limit) || limit < 1024 || limit > DYNAMODB_STORE_LIMITS.itemBodyBytes)
  ) {
    problems.push({
      path: 'itemBodyBytes',
      message: `must be an integer from 1024 to ${DYNAMODB_STORE_LIMITS.itemBodyBytes}`,
    });
  }
  const lease = options.importLeaseMs;
  if (lease !== undefined && (!Number.isFinite(lease) || lease < 0)) {
    problems.push({ path: 'importLeaseMs', message: 'must be a non-negative number of milliseconds' });
  }
  problems.push(...timeoutProblems(options.timeoutMs, 'timeoutMs'));
  const content = options.contentStore;
  if (content !== undefined && (typeof content?.put !== 'function' || typeof content?.get !== 'function')) {
    problems.push({ path: 'contentStore', message: 'must have put(key, bytes) and get(key)' });
  }
  if (problems.length > 0) {
    throw new ValidationError(
      `Invalid DynamoDB store options: ${problems.map((p) => `${p.path} ${p.message}`).join('; ')}`,
      {
        problems,
      },
    );
  }
}

/**
 * Creates a `StoryStateStore` on a DynamoDB table (create it with `createStoryTable`, or from
 * `storyTableDefinition` in your infrastructure code).
 *
 * - A commit is one `TransactWriteItems`: the `STATE` update conditioned on the expected version, the scene, its
 *   id pointer and the snapshot (each create-only), a check that the previous scene exists, and one update per
 *   resolved influence conditioned on `pending`. The cancellation reasons tell a replayed scene (returned with
 *   `created: false`) from a stale version or a no-longer-pending influence (`ConflictError`) and from a scene index
 *   that is not the story's next (`ValidationError`); a story whose items reached DynamoDB's 10 GB per story gets
 *   a `ProviderError` of code `ITEM_COLLECTION_FULL`, which no retry mends. A commit resolves at most 90 influences
 *   (`ValidationError` above).
 * - Bodies are gzip-compressed JSON. One above `itemBodyBytes` goes to `contentStore` when given, else is split into
 *   `PART#` items written just before the transaction, under keys named for the body's bytes: no scene or state is
 *   refused for its length, and the parts cost the transaction no action. A commit that then fails (a racer won)
 *   leaves its parts behind, unreferenced.
 * - `create`, and `fork`/`importStory` of a story that fits one transaction, are atomic; a larger import is written
 *   in batches behind an `importing` marker that keeps the story invisible until it is complete.
 * - Retries: storyloom's `withRetry` handles throttling, server errors, transaction conflicts, timeouts and a request
 *   refused for a clock the SDK has just corrected; a client built here has `maxAttempts: 1` so the SDK does not retry
 *   as well. A write still throttled after its retries (refused with `ThrottlingException`,
 *   `ProvisionedThroughputExceededException` or `RequestLimitExceeded`, or a transaction cancelled for throttling) is a
 *   retryable `ProviderError` of code `THROTTLED`, the `RetryError` of its attempts as `cause` when there is one: not
 *   a `ConflictError` (no racer won), nor a `RetryError`, which is not retryable; the table is only past its capacity
 *   for now. A batch of an import or of a body's parts is one loop whose every attempt is one send: refused whole for
 *   throttling or with items left unprocessed, it is sent up to 9 times (`retry.maxRetries` + 1 when set), after the
 *   same backoff either way; any other fault in a batch is retried as often as in one call. Other retries that run
 *   out, a read's throttling included, end in a `RetryError` holding every attempt's error. Reads are strongly
 *   consistent.
 * - Timeouts: each attempt of each call is bounded by `timeoutMs` (default 10 s), so a peer that accepts the
 *   connection and never answers costs a few attempts, not a Lambda's whole run; the last failure is typed, code
 *   `TIMEOUT`. Sending a write again after an attempt whose answer never came is safe: a transaction is sent again
 *   with the same `ClientRequestToken` (DynamoDB applies it once and answers the resend as done, for 10 minutes; only
 *   a cancelled attempt, which applied nothing, goes again under a new token), and the single-item writes of an
 *   import are conditioned on the import's own token, so a resend of one that landed passes or is recognised as done.
 *
 * The AWS SDK packages are optional peers, loaded on first use: without them the first call fails with
 * `MissingDependencyError` (`npm install @aws-sdk/client-dynamodb @aws-sdk/lib-dynamodb`).
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
 * import { createDynamoStateStore, createStoryTable } from 'storyloom/dynamodb';
 *
 * const client = new DynamoDBClient({ region: 'eu-west-1', maxAttempts: 1 });
 * await createStoryTable(client, 'stories');
 * const store = createDynamoStateStore({ tableName: 'stories', client });
 * const state = await store.load('my-story');
 * ```
 */
export function createDynamoStateStore(options: DynamoStateStoreOptions): DynamoStateStore {
  checkOptions(options);
  return new DynamoStateStoreImpl(options);
}
