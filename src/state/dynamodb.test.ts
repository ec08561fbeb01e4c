import { randomUUID } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import {
  DeleteTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
} from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { afterAll, describe, expect, it } from 'vitest';
import { startDynamoLocal } from '../../test/support/dynamodb-local.js';
import {
  AbortedError,
  ConflictError,
  NotFoundError,
  ProviderError,
  RetryError,
  ValidationError,
} from '../core/errors.js';
import { backoffDelay, RETRY_DEFAULTS } from '../core/retry.js';
import { fixtureTime, makeInfluence, makeNextScene, makeNextState, makeStoryState } from '../testing/fixtures.js';
import { ManualClock } from '../testing/manual-clock.js';
import { runStoryStateStoreSuite } from '../testing/state-store-suite.js';
import type { BaseStateStore } from './base-store.js';
import { createMemoryContentStore } from './content-store.js';
import { createDynamoStateStore, createStoryTable, type DynamoStateStoreOptions } from './dynamodb.js';
import { createMemoryStateStore } from './memory.js';
import type { StoryState } from './schema.js';

const local = await startDynamoLocal();
afterAll(() => local.stop());

function makeClient(): DynamoDBClient {
  return new DynamoDBClient({
    endpoint: local.endpoint!,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 1,
  });
}

const client = local.endpoint ? makeClient() : undefined;
const tables: string[] = [];
afterAll(async () => {
  if (!client) return;
  for (const TableName of tables) await client.send(new DeleteTableCommand({ TableName })).catch(() => undefined);
  client.destroy();
});

async function freshTable(): Promise<string> {
  const tableName = `stories-${randomUUID()}`;
  await createStoryTable(client!, tableName);
  tables.push(tableName);
  return tableName;
}

async function freshStore(options: Partial<DynamoStateStoreOptions> = {}) {
  return createDynamoStateStore({ client: client!, tableName: await freshTable(), ...options });
}

/** Commits `count` plain scenes, with a new chapter every 3 scenes. */
async function commitScenes(store: BaseStateStore, state: StoryState, count: number): Promise<StoryState> {
  let current = state;
  for (let i = 0; i < count; i++) {
    const scene = makeNextScene(current);
    const next = makeNextState(current, scene);
    current = (
      await store.commitScene(current.storyId, {
        expectedVersion: current.version,
        scene,
        nextState: next,
        consumedInfluenceIds: [],
      })
    ).state;
  }
  return current;
}

async function collect(lines: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const line of lines) out.push(line);
  return out;
}

/** The export of a story of 60 scenes and 61 snapshots: too many items for one transaction, so it imports in batches. */
async function batchedStoryLines(storyId: string): Promise<string[]> {
  const source = createMemoryStateStore();
  await commitScenes(source, await source.create(makeStoryState(storyId)), 60);
  return collect(source.exportStory(storyId));
}

/** A manual clock and retries without delay: a resend goes out at once, and no test waits for real time. */
function instantRetries(): { clock: ManualClock; retry: DynamoStateStoreOptions['retry'] } {
  return { clock: new ManualClock(), retry: { initialDelayMs: 0, maxDelayMs: 0 } };
}

/**
 * What `work` ends with (its value, or the error it rejects with), run to its end on `clock`: each backoff wait it
 * starts is passed at once, so a test sees the waits a retry policy asked for (`clock.sleeps`) without waiting them.
 */
async function outcomeOn(clock: ManualClock, work: Promise<unknown>): Promise<unknown> {
  let settled = false;
  const outcome = work
    .catch((error: unknown) => error)
    .finally(() => {
      settled = true;
    });
  while (!settled) {
    await clock.runAll();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return outcome;
}

/** A client whose process "dies" after the first batch of an import: every later call fails, clean-up included. */
function crashAfterFirstBatch(): { client: DynamoDBClient; batches: () => number } {
  const crashing = makeClient();
  let batches = 0;
  crashing.middlewareStack.add(
    (next) => async (args) => {
      const input = (args as { input?: Record<string, unknown> }).input ?? {};
      if ('RequestItems' in input && ++batches > 1) throw Object.assign(new Error('crash'), { name: 'Crash' });
      if (batches > 1) throw Object.assign(new Error('crash'), { name: 'Crash' });
      return next(args);
    },
    { step: 'initialize', name: 'crashAfterFirstBatch' },
  );
  return { client: crashing, batches: () => batches };
}

/**
 * A client on which the first call that `matches` goes through in DynamoDB but its answer is lost (a timeout after
 * the request was sent), so the store's retry policy sends it again. `whileLost` runs in between, as another process
 * might.
 */
function losingOneAnswer(
  matches: (input: Record<string, unknown>) => boolean,
  whileLost: () => Promise<void> = async () => {},
): { client: DynamoDBClient; lost: () => number } {
  const lossy = makeClient();
  let lost = 0;
  lossy.middlewareStack.add(
    (next) => async (args) => {
      const input = (args as { input?: Record<string, unknown> }).input ?? {};
      const result = await next(args);
      if (lost === 0 && matches(input)) {
        lost++;
        await whileLost();
        throw Object.assign(new Error('socket timed out after the request was sent'), { name: 'TimeoutError' });
      }
      return result;
    },
    { step: 'initialize', name: 'loseOneAnswer' },
  );
  return { client: lossy, lost: () => lost };
}

/**
 * A TCP proxy to DynamoDB Local that passes everything through, except that once `loseNext(operation)` is called the
 * answer to the next request of that operation (`TransactWriteItems`, say) is swallowed: DynamoDB applies the
 * request, and the client hears nothing, as behind a connection that goes half-open. `lostAnswers()` are what
 * DynamoDB answered to the requests whose answers the client never heard.
 */
async function proxyLosingOneAnswer(target: string) {
  const upstream = new URL(target);
  const sockets = new Set<Socket>();
  let armed: string | undefined;
  const lostAnswers: string[] = [];
  const server = createServer((downstream) => {
    const backend = connect(Number(upstream.port), upstream.hostname);
    let lost: number | undefined;
    for (const socket of [downstream, backend]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        sockets.delete(socket);
        downstream.destroy();
        backend.destroy();
      });
    }
    downstream.on('data', (chunk: Buffer) => {
      // The operation is named in the request's headers, which come in the request's first chunk.
      const header = new RegExp(`^x-amz-target: *DynamoDB_20120810\\.${armed}\r$`, 'im');
      if (armed !== undefined && lost === undefined && header.test(chunk.toString('latin1'))) {
        armed = undefined;
        lost = lostAnswers.push('') - 1;
      }
      backend.write(chunk);
    });
    backend.on('data', (chunk: Buffer) => {
      if (lost === undefined) downstream.write(chunk);
      else lostAnswers[lost] += chunk.toString('latin1');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    loseNext: (operation: string) => {
      armed = operation;
    },
    lostAnswers: () => lostAnswers,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A client on which `answer` sees each call (its operation, `BatchWriteItem` say, and input) before DynamoDB does: it
 * throws what the service would answer where DynamoDB Local never does, or returns to let the call through.
 */
function answeringFirst(answer: (operation: string, input: Record<string, unknown>) => void): DynamoDBClient {
  const answering = makeClient();
  answering.middlewareStack.add(
    (next, context) => async (args) => {
      answer(
        String(context.commandName).replace(/Command$/, ''),
        (args as { input?: Record<string, unknown> }).input ?? {},
      );
      return next(args);
    },
    { step: 'initialize', name: 'answerFirst' },
  );
  return answering;
}

/** An error as the AWS SDK raises it for a service's answer of `status`. */
function serviceError(name: string, status: number, fields: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(`${name} from the service`), {
    name,
    $fault: status >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode: status },
    ...fields,
  });
}

/** A `TransactionCanceledException` for `input`'s actions: action i failed for `codes[i]`, the rest answer None. */
function cancelled(input: Record<string, unknown>, codes: string[]): Error {
  const actions = input.TransactItems as unknown[];
  return serviceError('TransactionCanceledException', 400, {
    CancellationReasons: actions.map((_, index) => ({ Code: codes[index] ?? 'None' })),
  });
}

/** Text that gzip cannot shrink much: random CJK characters, 3 bytes each in UTF-8. */
function incompressibleText(characters: number): string {
  const codes = new Uint16Array(characters);
  for (let i = 0; i < characters; i++) codes[i] = 0x4e00 + Math.floor(Math.random() * 0x5000);
  let text = '';
  for (let i = 0; i < characters; i += 8192) text += String.fromCharCode(...codes.subarray(i, i + 8192));
  return text;
}

if (local.skipReason !== undefined) {
  describe('DynamoDB state store', () => {
    it.skip(`[skipped: ${local.skipReason}]`, () => {});
  });
} else {
  runStoryStateStoreSuite(
    { describe, it },
    {
      name: 'dynamodb-local',
      create: () => freshStore(),
      timeoutMs: 60_000,
    },
  );

  describe('DynamoDB state store (adapter behaviour)', () => {
    it('stores a 300 KB scene text and one at the schema limit (about 600 KB) without refusing either', async () => {
      const store = await freshStore();
      const state = await store.create(makeStoryState('long'));
      const text300 = incompressibleText(100_000);
      expect(Buffer.byteLength(text300)).toBe(300_000);
      const scene = makeNextScene(state, { text: text300 });
      const after = (
        await store.commitScene('long', {
          expectedVersion: 0,
          scene,
          nextState: makeNextState(state, scene),
          consumedInfluenceIds: [],
        })
      ).state;
      const atLimit = makeNextScene(after, { text: incompressibleText(200_000) });
      await store.commitScene('long', {
        expectedVersion: 1,
        scene: atLimit,
        nextState: makeNextState(after, atLimit),
        consumedInfluenceIds: [],
      });
      // The first fits its item once compressed; the second is split into parts in the same transaction.
      const stored = async (index: number) =>
        (
          await client!.send(
            new GetItemCommand({
              TableName: store.tableName,
              Key: { pk: { S: 'STORY#long' }, sk: { S: `SCENE#${String(index).padStart(16, '0')}` } },
            }),
          )
        ).Item;
      expect((await stored(0))?.body?.B).toBeDefined();
      expect(Number((await stored(1))?.bodyParts?.N)).toBeGreaterThan(1);
      expect((await store.getScene('long', scene.id))?.text).toBe(text300);
      expect((await store.getScene('long', atLimit.id))?.text).toBe(atLimit.text);
      const page = await store.listScenes('long', { order: 'desc' });
      expect(page.items.map((s) => s.text.length)).toEqual([200_000, 100_000]);
      const copy = await freshStore();
      await copy.importStory(await collect(store.exportStory('long')));
      expect((await copy.getScene('long', atLimit.id))?.text).toBe(atLimit.text);
    }, 60_000);

    it('puts large bodies in the content store when one is given', async () => {
      const contentStore = createMemoryContentStore();
      const store = await freshStore({ contentStore, itemBodyBytes: 64 * 1024 });
      const state = await store.create(makeStoryState('stored'));
      const scene = makeNextScene(state, { text: incompressibleText(100_000) });
      await store.commitScene('stored', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: [],
      });
      expect(contentStore.size).toBe(1);
      expect((await store.getScene('stored', scene.id))?.text).toBe(scene.text);
      const withoutContent = createDynamoStateStore({ client: client!, tableName: store.tableName });
      await expect(withoutContent.getScene('stored', scene.id)).rejects.toSatisfy(ValidationError.isInstance);
    }, 60_000);

    it('splits a body too large for its item into parts written outside the transaction: nothing is refused for its length', async () => {
      const store = await freshStore({ itemBodyBytes: 1024 });
      const state = await store.create(makeStoryState('big'));
      const scene = makeNextScene(state, { text: incompressibleText(100_000) });
      const commit = { expectedVersion: 0, scene, nextState: makeNextState(state, scene), consumedInfluenceIds: [] };
      // About 300 parts: far more than one transaction's 100 actions.
      expect((await store.commitScene('big', commit)).created).toBe(true);
      expect((await store.getScene('big', scene.id))?.text).toBe(scene.text);
      expect((await store.load('big')).version).toBe(1);
      // Replayed, it returns the original and rewrites nothing.
      expect((await store.commitScene('big', commit)).created).toBe(false);
    }, 60_000);

    it('a stale commit of a body split into parts writes no parts: it is refused before they go in', async () => {
      const store = await freshStore({ itemBodyBytes: 1024 });
      const state = await store.create(makeStoryState('stale-parts'));
      const partCount = async () =>
        (
          await client!.send(
            new QueryCommand({
              TableName: store.tableName,
              KeyConditionExpression: 'pk = :pk AND begins_with(sk, :part)',
              ExpressionAttributeValues: { ':pk': { S: 'STORY#stale-parts' }, ':part': { S: 'PART#' } },
              Select: 'COUNT',
            }),
          )
        ).Count;
      const winner = makeNextScene(state, { text: incompressibleText(4_000) });
      await store.commitScene('stale-parts', {
        expectedVersion: 0,
        scene: winner,
        nextState: makeNextState(state, winner),
        consumedInfluenceIds: [],
      });
      const stored = await partCount();
      expect(stored).toBeGreaterThan(1);
      const stale = makeNextScene(state, { id: 'stale', text: incompressibleText(4_000) });
      const error = await store
        .commitScene('stale-parts', {
          expectedVersion: 0,
          scene: stale,
          nextState: makeNextState(state, stale),
          consumedInfluenceIds: [],
        })
        .catch((e: unknown) => e);
      expect(ConflictError.isInstance(error), String(error)).toBe(true);
      expect((error as ConflictError).actualVersion).toBe(1);
      expect(await partCount()).toBe(stored);
    }, 60_000);

    /**
     * A story whose compressed state (about 1 KB of random text per character, 20 KB by default) is split into parts
     * at `itemBodyBytes: 1024`.
     */
    function splitState(storyId: string, characterCount = 20): StoryState {
      const base = makeStoryState(storyId);
      const characters = { ...base.characters };
      for (let i = 0; i < characterCount; i++) {
        characters[`c${i}`] = {
          ...base.characters.gull!,
          id: `c${i}`,
          name: `Character ${i}`,
          description: incompressibleText(300),
        };
      }
      return { ...base, characters };
    }

    it('resolves maxInfluencesPerCommit influences in one commit when the state is split into parts', async () => {
      const store = await freshStore({ itemBodyBytes: 1024 });
      const state = await store.create(splitState('busy'));
      const ids = Array.from({ length: store.capabilities.maxInfluencesPerCommit! }, (_, i) => `inf-${i}`);
      for (const id of ids) await store.enqueueInfluence(makeInfluence('busy', id));
      const scene = makeNextScene(state, { influencesApplied: ids });
      const result = await store.commitScene('busy', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: ids,
      });
      expect(result.created).toBe(true);
      expect(await store.pendingInfluences('busy')).toEqual([]);
      expect(await store.load('busy')).toEqual({ ...result.state, userInfluenceQueue: [] });
    }, 60_000);

    it('racers committing different split states on one version: one wins, and its state reads back whole', async () => {
      const store = await freshStore({ itemBodyBytes: 1024 });
      const state = await store.create(makeStoryState('race'));
      const attempts = Array.from({ length: 4 }, (_, i) => {
        const scene = makeNextScene(state, { id: `racer-${i}` });
        const nextState = makeNextState(splitState('race'), scene);
        return store.commitScene('race', { expectedVersion: 0, scene, nextState, consumedInfluenceIds: [] });
      });
      const results = await Promise.allSettled(attempts);
      const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(ConflictError.isInstance(r.reason)).toBe(true);
      expect(await store.load('race')).toEqual(won[0]!.state);
      expect(await store.getStateAt('race', 1)).toEqual(won[0]!.state);
    }, 60_000);

    it('reads a body split into parts by an earlier version (PART#<sk>#<n>, no parts prefix)', async () => {
      const store = await freshStore({ itemBodyBytes: 1024 });
      const state = await store.create(splitState('legacy'));
      const pk = { S: 'STORY#legacy' };
      const snapshotSk = `SNAP#${'0'.repeat(16)}`;
      const item = (
        await client!.send(new GetItemCommand({ TableName: store.tableName, Key: { pk, sk: { S: snapshotSk } } }))
      ).Item!;
      const prefix = item.bodyPartsPrefix!.S!;
      // Rewrite the snapshot as an earlier version laid it out; the parts under the new prefix stay, as a failed
      // commit's parts would, and must not be mistaken for the old ones.
      for (let part = 0; part < Number(item.bodyParts!.N); part++) {
        const number = String(part).padStart(4, '0');
        const stored = (
          await client!.send(
            new GetItemCommand({ TableName: store.tableName, Key: { pk, sk: { S: `${prefix}${number}` } } }),
          )
        ).Item!;
        await client!.send(
          new PutItemCommand({
            TableName: store.tableName,
            Item: { ...stored, sk: { S: `PART#${snapshotSk}#${number}` } },
          }),
        );
      }
      const { bodyPartsPrefix: _, ...legacy } = item;
      await client!.send(new PutItemCommand({ TableName: store.tableName, Item: legacy }));
      expect(await store.load('legacy')).toEqual(state);
    }, 60_000);

    it('refuses a commit resolving more influences than one transaction holds (the 100-action limit)', async () => {
      const store = await freshStore();
      const state = await store.create(makeStoryState('many'));
      const ids = Array.from({ length: 91 }, (_, i) => `inf-${String(i).padStart(3, '0')}`);
      for (const id of ids) await store.enqueueInfluence(makeInfluence('many', id));
      const scene = makeNextScene(state);
      const commit = (consumed: string[]) =>
        store.commitScene('many', {
          expectedVersion: 0,
          scene,
          nextState: makeNextState(state, scene),
          consumedInfluenceIds: consumed,
        });
      await expect(commit(ids)).rejects.toSatisfy(ValidationError.isInstance);
      expect((await store.pendingInfluences('many')).length).toBe(91);
      const result = await commit(ids.slice(0, store.limits.maxInfluencesPerCommit));
      expect(result.created).toBe(true);
      expect((await store.pendingInfluences('many')).map((i) => i.id)).toEqual(['inf-090']);
    }, 60_000);

    it('maps cancellation reasons: a replayed scene, a stale version, an influence no longer pending', async () => {
      const store = await freshStore();
      const state = await store.create(makeStoryState('reasons'));
      await store.enqueueInfluence(makeInfluence('reasons', 'inf-a'));
      const first = makeNextScene(state);
      const committed = await store.commitScene('reasons', {
        expectedVersion: 0,
        scene: first,
        nextState: makeNextState(state, first),
        consumedInfluenceIds: ['inf-a'],
      });
      // Replayed after the story moved on: the original, not a conflict.
      const after = await commitScenes(store, committed.state, 1);
      const replay = await store.commitScene('reasons', {
        expectedVersion: 0,
        scene: first,
        nextState: makeNextState(state, first),
        consumedInfluenceIds: ['inf-a'],
      });
      expect(replay).toEqual({ ...committed, created: false });
      const stale = makeNextScene(committed.state, { id: 'stale' });
      const staleError = await store
        .commitScene('reasons', {
          expectedVersion: 1,
          scene: stale,
          nextState: makeNextState(committed.state, stale),
          consumedInfluenceIds: [],
        })
        .catch((e: unknown) => e);
      expect(ConflictError.isInstance(staleError)).toBe(true);
      expect((staleError as ConflictError).actualVersion).toBe(2);
      const again = makeNextScene(after);
      const influenceError = await store
        .commitScene('reasons', {
          expectedVersion: 2,
          scene: again,
          nextState: makeNextState(after, again),
          consumedInfluenceIds: ['inf-a'],
        })
        .catch((e: unknown) => e);
      expect(ConflictError.isInstance(influenceError)).toBe(true);
      expect((influenceError as Error).message).toMatch(/inf-a.*no longer pending/);
      expect((await store.load('reasons')).version).toBe(2);
    }, 60_000);

    it('a lost race is a ConflictError even when the STATE action met another transaction (TransactionConflict)', async () => {
      // DynamoDB codes each action alone: while the winner records a publication (a check on STATE), the loser's
      // STATE action answers TransactionConflict and its scene and snapshot actions ConditionalCheckFailed. The real
      // stale commit runs against DynamoDB Local; only the STATE action's code of its answer is set to that.
      const tableName = await freshTable();
      const document = DynamoDBDocumentClient.from(client!, { marshallOptions: { removeUndefinedValues: true } });
      const send = document.send.bind(document) as (command: unknown) => Promise<unknown>;
      Object.assign(document, {
        send: async (command: { constructor: { name: string } }) => {
          try {
            return await send(command);
          } catch (error) {
            const reasons = (error as { CancellationReasons?: Array<{ Code?: string }> }).CancellationReasons;
            if (
              command.constructor.name === 'TransactWriteCommand' &&
              reasons?.[0]?.Code === 'ConditionalCheckFailed'
            ) {
              reasons[0] = { Code: 'TransactionConflict' };
            }
            throw error;
          }
        },
      });
      const winner = createDynamoStateStore({ client: client!, tableName });
      const loser = createDynamoStateStore({ client: document as never, tableName });
      const seen = await commitScenes(winner, await winner.create(makeStoryState('race')), 1);
      const won = makeNextScene(seen, { id: 'by-winner' });
      await winner.commitScene('race', {
        expectedVersion: seen.version,
        scene: won,
        nextState: makeNextState(seen, won),
        consumedInfluenceIds: [],
      });
      const lost = makeNextScene(seen, { id: 'by-loser' });
      const error = await loser
        .commitScene('race', {
          expectedVersion: seen.version,
          scene: lost,
          nextState: makeNextState(seen, lost),
          consumedInfluenceIds: [],
        })
        .catch((e: unknown) => e);
      expect(ConflictError.isInstance(error), String(error)).toBe(true);
      expect((error as ConflictError).isRetryable).toBe(true);
      expect((await winner.load('race')).sceneId).toBe('by-winner');
    }, 60_000);

    it('reads a split body back whole when a failed attempt left parts of another cut under the same body', async () => {
      const tableName = await freshTable();
      const small = createDynamoStateStore({ client: client!, tableName, itemBodyBytes: 1024 });
      const initial = await small.create(makeStoryState('parts'));
      await small.enqueueInfluence(makeInfluence('parts', 'vote'));
      const first = makeNextScene(initial, { influencesApplied: ['vote'] });
      const { state } = await small.commitScene('parts', {
        expectedVersion: 0,
        scene: first,
        nextState: makeNextState(initial, first),
        consumedInfluenceIds: ['vote'],
      });
      const scene = makeNextScene(state, { text: incompressibleText(12_000) });
      const nextState = makeNextState(state, scene);
      // The first attempt names an influence no longer pending: its 1 KB parts go in, then its transaction is refused.
      const refused = await small
        .commitScene('parts', { expectedVersion: 1, scene, nextState, consumedInfluenceIds: ['vote'] })
        .catch((e: unknown) => e);
      expect(ConflictError.isInstance(refused), String(refused)).toBe(true);
      // The same commit by a store that cuts at 4 KB (a restart with another setting, a rolling deploy).
      const larger = createDynamoStateStore({ client: client!, tableName, itemBodyBytes: 4096 });
      expect(
        (await larger.commitScene('parts', { expectedVersion: 1, scene, nextState, consumedInfluenceIds: [] })).created,
      ).toBe(true);
      expect(await larger.getScene('parts', scene.id)).toEqual(scene);
      expect(await small.getScene('parts', scene.id)).toEqual(scene);
    }, 60_000);

    it('lists pending influences by receivedAt, then id, as the memory store does, and drops resolved ones', async () => {
      const store = await freshStore();
      const memory = createMemoryStateStore();
      const state = makeStoryState('queue');
      await store.create(state);
      await memory.create(state);
      const influences = [
        makeInfluence('queue', 'b', { receivedAt: fixtureTime(5) }),
        makeInfluence('queue', 'z', { receivedAt: fixtureTime(1) }),
        makeInfluence('queue', 'a', { receivedAt: fixtureTime(5) }),
        makeInfluence('queue', 'm', { receivedAt: fixtureTime(3) }),
        makeInfluence('queue', 'c', { receivedAt: fixtureTime(0) }),
      ];
      for (const influence of influences) {
        await store.enqueueInfluence(influence);
        await memory.enqueueInfluence(influence);
      }
      const order = (await store.pendingInfluences('queue')).map((i) => i.id);
      expect(order).toEqual(['c', 'z', 'm', 'a', 'b']);
      expect(order).toEqual((await memory.pendingInfluences('queue')).map((i) => i.id));
      expect((await store.pendingInfluences('queue', { limit: 2 })).map((i) => i.id)).toEqual(['c', 'z']);
      const scene = makeNextScene(state);
      await store.commitScene('queue', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: ['m'],
        rejectedInfluences: [{ id: 'c', reason: 'spam' }],
      });
      expect((await store.pendingInfluences('queue')).map((i) => i.id)).toEqual(['z', 'a', 'b']);
    }, 60_000);

    it('an influence or a publication is one transaction that checks the story, without reading its state', async () => {
      const counting = makeClient();
      const commands: string[] = [];
      counting.middlewareStack.add(
        (next, context) => async (args) => {
          commands.push(String(context.commandName));
          return next(args);
        },
        { step: 'initialize', name: 'countCommands' },
      );
      const store = createDynamoStateStore({ client: counting, tableName: await freshTable() });
      const state = await commitScenes(store, await store.create(makeStoryState('cheap')), 1);
      commands.length = 0;
      expect((await store.enqueueInfluence(makeInfluence('cheap', 'tx-1'))).inserted).toBe(true);
      expect(commands).toEqual(['TransactWriteItemsCommand']);
      commands.length = 0;
      const entry = { storyId: 'cheap', sceneId: state.sceneId!, target: 'site', status: 'done' as const, result: {} };
      expect((await store.recordPublication(entry)).recorded).toBe(true);
      expect(commands).toEqual(['TransactWriteItemsCommand']);
      // A repeat reads back the stored item; still no read of the state.
      commands.length = 0;
      expect((await store.enqueueInfluence(makeInfluence('cheap', 'tx-1', { text: 'again' }))).inserted).toBe(false);
      expect(commands).toEqual(['TransactWriteItemsCommand', 'GetItemCommand']);
      await expect(store.enqueueInfluence(makeInfluence('nobody', 'tx-2'))).rejects.toSatisfy(NotFoundError.isInstance);
      await expect(store.recordPublication({ ...entry, storyId: 'nobody' })).rejects.toSatisfy(
        NotFoundError.isInstance,
      );
      counting.destroy();
    }, 60_000);

    it('an import cut short leaves no visible story, and a later import takes over once the lease has passed', async () => {
      const source = createMemoryStateStore();
      const initial = await source.create(makeStoryState('crash'));
      // 60 scenes and 61 snapshots: too many items for one transaction, so the import goes in batches.
      await commitScenes(source, initial, 60);
      const lines = await collect(source.exportStory('crash'));
      const tableName = await freshTable();
      const crashing = crashAfterFirstBatch();
      const clock = new ManualClock();
      const dying = createDynamoStateStore({ client: crashing.client, tableName, clock });
      await expect(dying.importStory(lines)).rejects.toThrow(/crash/);
      expect(crashing.batches()).toBeGreaterThan(1);
      crashing.client.destroy();

      const store = createDynamoStateStore({ client: client!, tableName, clock, importLeaseMs: 60_000 });
      // The first batch is in the table: snapshots 0.. of the story, and its first scenes.
      const leftover = await client!.send(
        new GetItemCommand({
          TableName: tableName,
          Key: { pk: { S: 'STORY#crash' }, sk: { S: 'SNAP#0000000000000000' } },
        }),
      );
      expect(leftover.Item).toBeDefined();
      expect(await store.exists('crash')).toBe(false);
      // Every read sees no story, not the half-written one.
      expect(await store.getStateAt('crash', 0)).toBeNull();
      expect((await store.listScenes('crash', { limit: 1000 })).items).toEqual([]);
      const firstScene = JSON.parse(lines.find((line) => line.includes('"kind":"scene"'))!).scene as { id: string };
      expect(await store.getScene('crash', firstScene.id)).toBeNull();
      expect(await store.pendingInfluences('crash')).toEqual([]);
      await expect(store.load('crash')).rejects.toSatisfy(NotFoundError.isInstance);
      await expect(store.enqueueInfluence(makeInfluence('crash', 'x'))).rejects.toSatisfy(NotFoundError.isInstance);
      await expect(
        store.recordPublication({ storyId: 'crash', sceneId: 'scene-x', target: 'site', status: 'done', result: {} }),
      ).rejects.toSatisfy(NotFoundError.isInstance);
      // Within the lease the unfinished import still holds the id.
      await expect(store.importStory(lines)).rejects.toSatisfy(ConflictError.isInstance);
      await clock.advance(60_000);
      // A smaller story under the same id: the leftovers of the crashed import must not show through.
      const smaller = createMemoryStateStore();
      await commitScenes(smaller, await smaller.create(makeStoryState('crash')), 2);
      const smallerLines = await collect(smaller.exportStory('crash'));
      expect(await store.importStory(smallerLines)).toMatchObject({ storyId: 'crash', scenes: 2 });
      expect((await store.listScenes('crash', { limit: 1000 })).items.map((s) => s.index)).toEqual([0, 1]);
      expect(await store.getStateAt('crash', 30)).toBeNull();
      // The crashed import's first batch held the snapshots of versions 0 to 24: those past the new story are gone.
      expect(await store.getStateAt('crash', 20)).toBeNull();
      expect(await collect(store.exportStory('crash'))).toEqual(smallerLines);
    }, 60_000);

    it('a commit to a story whose import was cut short is refused and writes nothing: the story does not exist yet', async () => {
      // No scene yet and 120 pending influences: too many items for one transaction, so the import goes in batches.
      const source = createMemoryStateStore();
      await source.create(makeStoryState('unfinished'));
      for (let i = 0; i < 120; i++) {
        await source.enqueueInfluence(makeInfluence('unfinished', `inf-${String(i).padStart(3, '0')}`));
      }
      const lines = await collect(source.exportStory('unfinished'));
      const tableName = await freshTable();
      const crashing = crashAfterFirstBatch();
      const dying = createDynamoStateStore({ client: crashing.client, tableName, clock: new ManualClock() });
      await expect(dying.importStory(lines)).rejects.toThrow(/crash/);
      crashing.client.destroy();
      const store = createDynamoStateStore({ client: client!, tableName });
      const initial = await source.load('unfinished');
      const scene = makeNextScene(initial);
      const error = await store
        .commitScene('unfinished', {
          expectedVersion: 0,
          scene,
          nextState: makeNextState({ ...initial, userInfluenceQueue: [] }, scene),
          consumedInfluenceIds: [],
        })
        .catch((e: unknown) => e);
      expect(ConflictError.isInstance(error), String(error)).toBe(true);
      const written = await client!.send(
        new GetItemCommand({
          TableName: tableName,
          Key: { pk: { S: 'STORY#unfinished' }, sk: { S: `SCENE#${'0'.repeat(16)}` } },
        }),
      );
      expect(written.Item).toBeUndefined();
    }, 60_000);

    it('a failed import removes what it wrote, so the id is free at once', async () => {
      const source = createMemoryStateStore();
      await commitScenes(source, await source.create(makeStoryState('retry')), 60);
      const lines = await collect(source.exportStory('retry'));
      const tableName = await freshTable();
      const flaky = makeClient();
      let failures = 0;
      flaky.middlewareStack.add(
        (next) => async (args) => {
          const input = (args as { input?: Record<string, unknown> }).input ?? {};
          if ('RequestItems' in input && failures === 0) {
            failures++;
            throw Object.assign(new Error('access denied'), { name: 'AccessDeniedException' });
          }
          return next(args);
        },
        { step: 'initialize', name: 'failOneBatch' },
      );
      const store = createDynamoStateStore({ client: flaky, tableName });
      await expect(store.importStory(lines)).rejects.toThrow(/access denied/);
      expect(await store.exists('retry')).toBe(false);
      await store.importStory(lines);
      expect(await collect(store.exportStory('retry'))).toEqual(lines);
      flaky.destroy();
    }, 60_000);

    it('history reads of a story whose crashed import left a split body half written return nothing, not an error', async () => {
      // About 40 KB of compressed state: at itemBodyBytes 1024 snapshot 0 has about 40 parts, and the first batch of
      // 25 holds its item and only some of them.
      const source = createMemoryStateStore();
      await commitScenes(source, await source.create(splitState('half', 40)), 3);
      const lines = await collect(source.exportStory('half'));
      const tableName = await freshTable();
      const crashing = crashAfterFirstBatch();
      const dying = createDynamoStateStore({
        client: crashing.client,
        tableName,
        itemBodyBytes: 1024,
        clock: new ManualClock(),
      });
      await expect(dying.importStory(lines)).rejects.toThrow(/crash/);
      crashing.client.destroy();
      const store = createDynamoStateStore({ client: client!, tableName, itemBodyBytes: 1024 });
      expect(await store.exists('half')).toBe(false);
      expect(await store.getStateAt('half', 0)).toBeNull();
    }, 60_000);

    it('a document client that wraps numbers (unmarshallOptions.wrapNumbers) reads bodies split into parts', async () => {
      const document = DynamoDBDocumentClient.from(client!, {
        marshallOptions: { removeUndefinedValues: true },
        unmarshallOptions: { wrapNumbers: true },
      });
      const store = createDynamoStateStore({ client: document, tableName: await freshTable(), itemBodyBytes: 1024 });
      const state = await store.create(splitState('wrapped'));
      const scene = makeNextScene(state, { text: incompressibleText(5_000) });
      const { state: next } = await store.commitScene('wrapped', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: [],
      });
      expect((await store.getScene('wrapped', scene.id))?.text).toBe(scene.text);
      expect(await store.getStateAt('wrapped', 0)).toEqual(state);
      expect(await store.load('wrapped')).toEqual(next);
    }, 60_000);

    it.each([
      { code: 'ItemCollectionSizeLimitExceeded', errorCode: 'ITEM_COLLECTION_FULL' },
      { code: 'ValidationError', errorCode: 'PROVIDER' },
    ])(
      'a transaction cancelled for $code is a ProviderError no retry mends, not a lost race',
      async ({ code, errorCode }) => {
        // DynamoDB's answer when an action fails for `code` while another meets a concurrent transaction (and, when
        // `failedCondition` is set, that action fails its condition).
        const faulty = makeClient();
        let armed = false;
        let transactions = 0;
        let failedCondition: number | undefined;
        faulty.middlewareStack.add(
          (next) => async (args) => {
            const input = (args as { input?: { TransactItems?: unknown[] } }).input ?? {};
            if (!armed || !Array.isArray(input.TransactItems)) return next(args);
            transactions++;
            throw Object.assign(new Error(`Transaction cancelled [TransactionConflict, ${code}]`), {
              name: 'TransactionCanceledException',
              $fault: 'client',
              $metadata: { httpStatusCode: 400 },
              CancellationReasons: input.TransactItems.map((_, index) => ({
                Code:
                  index === 0
                    ? 'TransactionConflict'
                    : index === 1
                      ? code
                      : index === failedCondition
                        ? 'ConditionalCheckFailed'
                        : 'None',
              })),
            });
          },
          { step: 'initialize', name: 'cancelTransactions' },
        );
        const store = createDynamoStateStore({ client: faulty, tableName: await freshTable(), ...instantRetries() });
        const state = await store.create(makeStoryState('full'));
        armed = true;
        const scene = makeNextScene(state);
        const calls = {
          create: () => store.create(makeStoryState('another')),
          enqueueInfluence: () => store.enqueueInfluence(makeInfluence('full', 'tx-1')),
          recordPublication: () =>
            store.recordPublication({
              storyId: 'full',
              sceneId: 'scene-x',
              target: 'site',
              status: 'done',
              result: {},
            }),
          commitScene: () =>
            store.commitScene('full', {
              expectedVersion: 0,
              scene,
              nextState: makeNextState(state, scene),
              consumedInfluenceIds: [],
            }),
        };
        for (const [name, call] of Object.entries(calls)) {
          transactions = 0;
          const error = await call().catch((e: unknown) => e);
          expect(ProviderError.isInstance(error), `${name}: ${String(error)}`).toBe(true);
          expect((error as ProviderError).code, name).toBe(errorCode);
          expect((error as ProviderError).isRetryable, name).toBe(false);
          // Sent once: the store's own retry policy does not take it for a race either.
          expect(transactions, name).toBe(1);
        }
        // A commit whose scene action also fails its condition: once it is known to be no replay, still the fault.
        failedCondition = 2;
        const error = await calls.commitScene().catch((e: unknown) => e);
        expect(ProviderError.isInstance(error), String(error)).toBe(true);
        expect((error as ProviderError).code).toBe(errorCode);
        faulty.destroy();
      },
      60_000,
    );

    it.each([
      { reasons: ['ThrottlingError', 'ProvisionedThroughputExceeded'], outcome: 'a retryable THROTTLED ProviderError' },
      { reasons: ['TransactionConflict', 'ThrottlingError'], outcome: 'a ConflictError' },
    ])(
      'a transaction cancelled for $reasons after every retry is $outcome and writes nothing',
      async ({ reasons }) => {
        // DynamoDB's answer when a partition is past its capacity (1,000 write units a second, on-demand too):
        // nothing is written and no racer won, so the engine must not generate the scene again as after a lost race.
        let armed = false;
        let transactions = 0;
        const throttled = answeringFirst((operation, input) => {
          if (!armed || operation !== 'TransactWriteItems') return;
          transactions++;
          throw cancelled(input, reasons);
        });
        const store = createDynamoStateStore({ client: throttled, tableName: await freshTable(), ...instantRetries() });
        const state = await store.create(makeStoryState('busy'));
        armed = true;
        const scene = makeNextScene(state);
        const calls = {
          commitScene: () =>
            store.commitScene('busy', {
              expectedVersion: 0,
              scene,
              nextState: makeNextState(state, scene),
              consumedInfluenceIds: [],
            }),
          enqueueInfluence: () => store.enqueueInfluence(makeInfluence('busy', 'tx-1')),
          create: () => store.create(makeStoryState('another')),
        };
        const throttledOnly = !reasons.includes('TransactionConflict');
        for (const [name, call] of Object.entries(calls)) {
          transactions = 0;
          const error = await call().catch((e: unknown) => e);
          if (throttledOnly) {
            expect(ProviderError.isInstance(error), `${name}: ${String(error)}`).toBe(true);
            expect(error, name).toMatchObject({ code: 'THROTTLED', isRetryable: true });
          } else {
            expect(ConflictError.isInstance(error), `${name}: ${String(error)}`).toBe(true);
          }
          // The store's own retry policy sent it three times first.
          expect(transactions, name).toBe(3);
        }
        armed = false;
        expect(await store.load('busy')).toEqual(state);
        expect((await store.listScenes('busy')).items).toEqual([]);
        expect(await store.pendingInfluences('busy')).toEqual([]);
        expect(await store.exists('another')).toBe(false);
        throttled.destroy();
      },
      60_000,
    );

    it('an import whose first batches DynamoDB refuses whole for throttling waits and finishes', async () => {
      const lines = await batchedStoryLines('throttled');
      let refused = 0;
      // DynamoDB refuses a BatchWriteItem whole when it can process none of its items: three times, one more than the
      // store's retry policy sends one call.
      const throttled = answeringFirst((operation) => {
        if (operation !== 'BatchWriteItem' || refused >= 3) return;
        refused++;
        throw serviceError('ProvisionedThroughputExceededException', 400);
      });
      const store = createDynamoStateStore({ client: throttled, tableName: await freshTable(), ...instantRetries() });
      await store.importStory(lines);
      expect(refused).toBe(3);
      expect(await collect(store.exportStory('throttled'))).toEqual(lines);
      throttled.destroy();
    }, 60_000);

    it.each([
      { answer: 'refuses whole for throttling', throttled: true },
      { answer: 'leaves items unprocessed in', throttled: false },
    ])(
      'a batch DynamoDB $answer every time is sent 9 times, each after one wait of one backoff, then fails retryable THROTTLED',
      async ({ throttled }) => {
        const lines = await batchedStoryLines('busy');
        let sends = 0;
        const client = makeClient();
        client.middlewareStack.add(
          (next, context) => async (args) => {
            if (context.commandName !== 'BatchWriteItemCommand') return next(args);
            const [table, requests] = Object.entries(
              (args as { input: { RequestItems: Record<string, Array<{ PutRequest?: unknown }>> } }).input.RequestItems,
            )[0]!;
            // The import's batches; the deletes of its clean-up go through.
            if (requests[0]?.PutRequest === undefined) return next(args);
            sends++;
            if (throttled) throw serviceError('ProvisionedThroughputExceededException', 400);
            // Everything is written but DynamoDB says the first request was not: the store sends it again.
            const result = await next(args);
            (result.output as { UnprocessedItems?: unknown }).UnprocessedItems = { [table]: requests.slice(0, 1) };
            return result;
          },
          { step: 'initialize', name: 'throttleBatches' },
        );
        const clock = new ManualClock();
        const retry = { initialDelayMs: 100, maxDelayMs: 800, jitter: 0 };
        const store = createDynamoStateStore({ client, tableName: await freshTable(), clock, retry });
        const error = await outcomeOn(clock, store.importStory(lines));
        // The batch loop's 8 retries, each attempt one send: not the store's 3 attempts of a call inside each of them.
        expect(sends).toBe(9);
        // One backoff from the first resend to the last, whatever DynamoDB's answer; none inside an attempt.
        expect(clock.sleeps).toEqual(Array.from({ length: 8 }, (_, i) => backoffDelay(i + 1, retry)));
        expect(ProviderError.isInstance(error), String(error)).toBe(true);
        expect(error).toMatchObject({ code: 'THROTTLED', isRetryable: true, provider: 'dynamodb' });
        const { cause } = error as ProviderError;
        expect(RetryError.isInstance(cause) && cause.attempts).toBe(9);
        // The failed import removed what it wrote: the id is free.
        expect(await store.exists('busy')).toBe(false);
        client.destroy();
      },
      60_000,
    );

    it('a batch refused whole for throttling every time is sent retry.maxRetries + 1 times when that is set', async () => {
      const lines = await batchedStoryLines('busy');
      let sends = 0;
      const throttled = answeringFirst((operation) => {
        if (operation !== 'BatchWriteItem') return;
        sends++;
        throw serviceError('ThrottlingException', 400);
      });
      const { clock } = instantRetries();
      const retry = { initialDelayMs: 0, maxDelayMs: 0, maxRetries: 3 };
      const store = createDynamoStateStore({ client: throttled, tableName: await freshTable(), clock, retry });
      const error = await store.importStory(lines).catch((caught: unknown) => caught);
      expect(error).toMatchObject({ code: 'THROTTLED', isRetryable: true });
      expect(sends).toBe(retry.maxRetries + 1);
      throttled.destroy();
    }, 60_000);

    it('a batch that meets other faults is retried by the same loop, as often as the store retries one call', async () => {
      const lines = await batchedStoryLines('faulty');
      // Per send of a BatchWriteItem, what DynamoDB answers: a throttled batch, a server error, or (past the list) the
      // batch written.
      let script: string[] = [];
      let sends = 0;
      const faulty = answeringFirst((operation) => {
        if (operation !== 'BatchWriteItem') return;
        const answer = script[sends++];
        if (answer === 'throttled') throw serviceError('ProvisionedThroughputExceededException', 400);
        if (answer === 'fault') throw serviceError('InternalServerError', 500);
      });
      const store = createDynamoStateStore({ client: faulty, tableName: await freshTable(), ...instantRetries() });

      // Throttling and faults in one batch share its loop: the batch is written, and the import finishes.
      script = ['throttled', 'throttled', 'throttled', 'throttled', 'fault', 'fault'];
      await store.importStory(lines);
      expect(sends).toBeGreaterThan(script.length);
      expect(await collect(store.exportStory('faulty'))).toEqual(lines);

      // A fault that lasts ends the batch after the store's attempts of one call, as retries that ran out.
      const second = await batchedStoryLines('faulty-2');
      script = Array.from({ length: 20 }, () => 'fault');
      sends = 0;
      const error = await store.importStory(second).catch((caught: unknown) => caught);
      expect(sends).toBe(RETRY_DEFAULTS.maxRetries + 1);
      expect(RetryError.isInstance(error), String(error)).toBe(true);
      expect(error).toMatchObject({ reason: 'maxRetriesExceeded', attempts: sends });
      expect(
        (error as RetryError).errors.every((attempt) => ProviderError.isInstance(attempt) && attempt.status === 500),
      ).toBe(true);
      expect(await store.exists('faulty-2')).toBe(false);
      faulty.destroy();
    }, 60_000);

    it('each batch of an import has its own budget for faults: a blip in every batch does not end the import', async () => {
      const lines = await batchedStoryLines('blips');
      // Every batch fails twice with a server error, then goes through: within the store's retries of one call
      // (RETRY_DEFAULTS.maxRetries, 2) for each batch, however many batches the import has.
      let sends = 0;
      const blipping = answeringFirst((operation) => {
        if (operation !== 'BatchWriteItem') return;
        sends++;
        if (sends % 3 !== 0) throw serviceError('InternalServerError', 500);
      });
      const store = createDynamoStateStore({ client: blipping, tableName: await freshTable(), ...instantRetries() });
      await store.importStory(lines);
      // More than one batch met its two faults.
      expect(sends / 3).toBeGreaterThan(1);
      expect(sends % 3).toBe(0);
      expect(await collect(store.exportStory('blips'))).toEqual(lines);
      blipping.destroy();
    }, 60_000);

    it.each(['ThrottlingException', 'ProvisionedThroughputExceededException', 'RequestLimitExceeded'])(
      'a write DynamoDB refuses whole with %s after every retry is a retryable THROTTLED ProviderError, not a RetryError',
      async (name) => {
        // Refused whole, not cancelled: nothing was written and no racer won, as for a transaction cancelled for
        // throttling, and the caller (the engine's run, a scheduler) must read it the same way: try again later.
        let refusing: string | undefined;
        let sends = 0;
        const throttled = answeringFirst((operation) => {
          if (operation !== refusing) return;
          sends++;
          throw serviceError(name, 400);
        });
        const store = createDynamoStateStore({ client: throttled, tableName: await freshTable(), ...instantRetries() });
        const state = await store.create(makeStoryState('busy'));
        const scene = makeNextScene(state);
        const lines = await batchedStoryLines('imported');
        const calls: Array<[operation: string, call: string, () => Promise<unknown>]> = [
          [
            'TransactWriteItems',
            'commitScene',
            () =>
              store.commitScene('busy', {
                expectedVersion: 0,
                scene,
                nextState: makeNextState(state, scene),
                consumedInfluenceIds: [],
              }),
          ],
          ['TransactWriteItems', 'enqueueInfluence', () => store.enqueueInfluence(makeInfluence('busy', 'tx-1'))],
          ['TransactWriteItems', 'create', () => store.create(makeStoryState('another'))],
          ['PutItem', 'importStory (its importing marker)', () => store.importStory(lines)],
        ];
        for (const [operation, call, run] of calls) {
          refusing = operation;
          sends = 0;
          const error = await run().catch((caught: unknown) => caught);
          expect(ProviderError.isInstance(error), `${call}: ${String(error)}`).toBe(true);
          expect(error, call).toMatchObject({
            code: 'THROTTLED',
            isRetryable: true,
            provider: 'dynamodb',
            status: 400,
          });
          // The store's own attempts, each one throttled, are kept as the cause.
          const { cause } = error as ProviderError;
          expect(RetryError.isInstance(cause), call).toBe(true);
          expect((cause as RetryError).attempts, call).toBe(RETRY_DEFAULTS.maxRetries + 1);
          expect(sends, call).toBe(RETRY_DEFAULTS.maxRetries + 1);
        }
        // A read keeps the RetryError of every retry that ran out: the engine retries the steps that read the store,
        // and would read each throttled item three times more.
        refusing = 'GetItem';
        const read = await store.load('busy').catch((caught: unknown) => caught);
        expect(RetryError.isInstance(read), String(read)).toBe(true);
        expect(read).toMatchObject({ reason: 'maxRetriesExceeded', cause: { code: 'THROTTLED' } });
        refusing = undefined;
        expect(await store.load('busy')).toEqual(state);
        expect((await store.listScenes('busy')).items).toEqual([]);
        expect(await store.pendingInfluences('busy')).toEqual([]);
        expect(await store.exists('another')).toBe(false);
        expect(await store.exists('imported')).toBe(false);
        throttled.destroy();
      },
      60_000,
    );

    it('a write that met another fault before its throttling stays a RetryError: that attempt may have been applied', async () => {
      // A server error's write may have landed with its answer lost, so "nothing was written" does not hold, and the
      // retryable THROTTLED (which says so) is kept for writes throttled on every attempt.
      let sends = 0;
      const client = answeringFirst((operation) => {
        if (operation !== 'TransactWriteItems') return;
        sends++;
        throw sends === 1 ? serviceError('InternalServerError', 500) : serviceError('ThrottlingException', 400);
      });
      const store = createDynamoStateStore({ client, tableName: await freshTable(), ...instantRetries() });
      const error = await store.enqueueInfluence(makeInfluence('busy', 'tx-1')).catch((caught: unknown) => caught);
      expect(RetryError.isInstance(error), String(error)).toBe(true);
      expect(error).toMatchObject({ reason: 'maxRetriesExceeded', cause: { code: 'THROTTLED' } });
      expect(sends).toBe(RETRY_DEFAULTS.maxRetries + 1);
      client.destroy();
    });

    it('a call refused for a clock the SDK has just corrected is sent again, and the first call of a store succeeds', async () => {
      let refused = 0;
      // The SDK corrects its clock offset from the refusal's Date header and marks the error; its own retry would
      // send it again, but the store's clients make one attempt each.
      const skewed = answeringFirst(() => {
        if (refused > 0) return;
        refused++;
        throw serviceError('InvalidSignatureException', 400, {
          $metadata: { httpStatusCode: 400, clockSkewCorrected: true },
        });
      });
      const store = createDynamoStateStore({ client: skewed, tableName: await freshTable(), ...instantRetries() });
      const state = await store.create(makeStoryState('skewed'));
      expect(refused).toBe(1);
      expect(await store.load('skewed')).toEqual(state);
      skewed.destroy();
    }, 60_000);

    it('exists reads the STATE item alone, not the snapshot of the whole state', async () => {
      const keys: string[] = [];
      let recording = false;
      const client = answeringFirst((operation, input) => {
        if (recording && operation === 'GetItem') keys.push(String((input.Key as { sk?: unknown } | undefined)?.sk));
      });
      const store = createDynamoStateStore({ client, tableName: await freshTable(), ...instantRetries() });
      const state = await store.create(makeStoryState('present'));
      const scene = makeNextScene(state);
      await store.commitScene('present', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: [],
      });
      recording = true;
      expect(await store.exists('present')).toBe(true);
      expect(await store.exists('absent')).toBe(false);
      expect(keys).toEqual(['STATE', 'STATE']);
      client.destroy();
    });

    it('a cancelled transaction goes again under a new ClientRequestToken, one whose answer was lost under the same', async () => {
      let armed = false;
      const tokens: unknown[] = [];
      let failure: ((input: Record<string, unknown>) => Error) | undefined;
      const client = answeringFirst((operation, input) => {
        if (!armed || operation !== 'TransactWriteItems') return;
        tokens.push(input.ClientRequestToken);
        const fail = failure;
        failure = undefined;
        if (fail) throw fail(input);
      });
      const store = createDynamoStateStore({ client, tableName: await freshTable(), ...instantRetries() });
      const state = await store.create(makeStoryState('tokens'));
      armed = true;
      // Cancelled: nothing was applied, so the resend is a new request.
      failure = (input) => cancelled(input, ['TransactionConflict']);
      const scene = makeNextScene(state);
      const nextState = makeNextState(state, scene);
      const result = await store.commitScene('tokens', {
        expectedVersion: 0,
        scene,
        nextState,
        consumedInfluenceIds: [],
      });
      expect(result).toEqual({ scene, state: nextState, created: true });
      expect(tokens).toHaveLength(2);
      expect(typeof tokens[1]).toBe('string');
      expect(tokens[1]).not.toBe(tokens[0]);
      // No answer: the first attempt may have been applied, so the resend keeps its token.
      tokens.length = 0;
      failure = () => serviceError('TimeoutError', 500);
      expect((await store.enqueueInfluence(makeInfluence('tokens', 'vote'))).inserted).toBe(true);
      expect(tokens).toHaveLength(2);
      expect(tokens[1]).toBe(tokens[0]);
      expect(await store.getStateAt('tokens', 1)).toEqual(nextState);
      expect((await store.pendingInfluences('tokens')).map((i) => i.id)).toEqual(['vote']);
      client.destroy();
    }, 60_000);

    it.each(['a commit of a body split into parts', 'an import'])(
      'a BatchWriteItem refused for a full item collection fails %s with ITEM_COLLECTION_FULL, not retryable',
      async (what) => {
        let refused = 0;
        const full = answeringFirst((operation, input) => {
          if (operation !== 'BatchWriteItem' || !JSON.stringify(input.RequestItems).includes('PutRequest')) return;
          refused++;
          throw serviceError('ItemCollectionSizeLimitExceededException', 400);
        });
        const store = createDynamoStateStore({
          client: full,
          tableName: await freshTable(),
          itemBodyBytes: 1024,
          ...instantRetries(),
        });
        let call: () => Promise<unknown>;
        if (what === 'an import') {
          const lines = await batchedStoryLines('full');
          call = () => store.importStory(lines);
        } else {
          const state = await store.create(makeStoryState('full'));
          const scene = makeNextScene(state, { text: incompressibleText(4_000) });
          call = () =>
            store.commitScene('full', {
              expectedVersion: 0,
              scene,
              nextState: makeNextState(state, scene),
              consumedInfluenceIds: [],
            });
        }
        const error = await call().catch((e: unknown) => e);
        expect(ProviderError.isInstance(error), String(error)).toBe(true);
        expect(error).toMatchObject({ code: 'ITEM_COLLECTION_FULL', isRetryable: false });
        expect((error as Error).message).toMatch(/10 GB limit per story/);
        expect(refused).toBe(1);
        full.destroy();
      },
      60_000,
    );

    it('a batched import whose importing marker is written but its answer lost still imports', async () => {
      const lines = await batchedStoryLines('lost-marker');
      const lossy = losingOneAnswer((input) => (input.Item as { importing?: unknown } | undefined)?.importing === true);
      const store = createDynamoStateStore({
        client: lossy.client,
        tableName: await freshTable(),
        ...instantRetries(),
      });
      await store.importStory(lines);
      expect(lossy.lost()).toBe(1);
      expect(await collect(store.exportStory('lost-marker'))).toEqual(lines);
      lossy.client.destroy();
    }, 60_000);

    it('taking over a crashed import still imports when the takeover is applied but its answer lost', async () => {
      const lines = await batchedStoryLines('lost-takeover');
      const tableName = await freshTable();
      const crashing = crashAfterFirstBatch();
      const { clock, retry } = instantRetries();
      await expect(
        createDynamoStateStore({ client: crashing.client, tableName, clock }).importStory(lines),
      ).rejects.toThrow(/crash/);
      crashing.client.destroy();
      await clock.advance(60_000);
      const lossy = losingOneAnswer((input) => String(input.ConditionExpression ?? '').includes(':stale'));
      const store = createDynamoStateStore({ client: lossy.client, tableName, clock, retry, importLeaseMs: 60_000 });
      await store.importStory(lines);
      expect(lossy.lost()).toBe(1);
      expect(await collect(store.exportStory('lost-takeover'))).toEqual(lines);
      lossy.client.destroy();
    }, 60_000);

    /** The import's last update: it clears the `importing` marker. */
    const clearsMarker = (input: Record<string, unknown>) =>
      String(input.UpdateExpression ?? '').includes('REMOVE #importing');

    it('a batched import whose last update is applied but its answer lost keeps the story it wrote, and takes commits after', async () => {
      const source = createMemoryStateStore();
      await commitScenes(source, await source.create(makeStoryState('lost-last')), 60);
      const lines = await collect(source.exportStory('lost-last'));
      const lossy = losingOneAnswer(clearsMarker);
      const store = createDynamoStateStore({
        client: lossy.client,
        tableName: await freshTable(),
        ...instantRetries(),
      });
      await store.importStory(lines);
      expect(lossy.lost()).toBe(1);
      expect(await collect(store.exportStory('lost-last'))).toEqual(lines);
      // What the import leaves on the STATE item shows nowhere: the next commit and the export match the memory store.
      const state = await store.load('lost-last');
      expect(state).toEqual(await source.load('lost-last'));
      await commitScenes(store, state, 1);
      await commitScenes(source, state, 1);
      expect(await collect(store.exportStory('lost-last'))).toEqual(await collect(source.exportStory('lost-last')));
      lossy.client.destroy();
    }, 60_000);

    it('a resend of the last import update, late after a commit, does not wind the story back', async () => {
      const lines = await batchedStoryLines('late');
      const tableName = await freshTable();
      const other = createDynamoStateStore({ client: client!, tableName });
      let committed: StoryState | undefined;
      // The import is done but does not know it; meanwhile another process commits the next scene.
      const lossy = losingOneAnswer(clearsMarker, async () => {
        committed = await commitScenes(other, await other.load('late'), 1);
      });
      const store = createDynamoStateStore({ client: lossy.client, tableName, ...instantRetries() });
      await store.importStory(lines);
      expect(committed?.version).toBe(61);
      expect(await store.load('late')).toEqual(committed);
      lossy.client.destroy();
    }, 60_000);

    it.each([
      { outcome: 'finishes its batches', fails: false },
      { outcome: 'fails a batch', fails: true },
    ])(
      'an import overtaken after its lease that then $outcome deletes nothing of the story that took over',
      async ({ fails }) => {
        const lines = await batchedStoryLines('overtaken');
        const tableName = await freshTable();
        const clock = new ManualClock();
        let release!: () => void;
        const gate = new Promise<void>((resolve) => {
          release = resolve;
        });
        let blocked!: () => void;
        const started = new Promise<void>((resolve) => {
          blocked = resolve;
        });
        // The first import stalls in its first batch (a long pause, a frozen process) beyond its lease; then that
        // batch goes through, or fails alone.
        const slow = makeClient();
        let stalled = false;
        slow.middlewareStack.add(
          (next) => async (args) => {
            const input = (args as { input?: Record<string, unknown> }).input ?? {};
            if ('RequestItems' in input && !stalled) {
              stalled = true;
              blocked();
              await gate;
              if (fails) throw Object.assign(new Error('access denied'), { name: 'AccessDeniedException' });
            }
            return next(args);
          },
          { step: 'initialize', name: 'stallBatches' },
        );
        const first = createDynamoStateStore({ client: slow, tableName, clock, importLeaseMs: 60_000 });
        const firstImport = first.importStory(lines).catch((error: unknown) => error);
        await started;
        await clock.advance(60_000);
        // Someone runs the import that seemed stuck again: it takes over and finishes.
        const second = createDynamoStateStore({ client: client!, tableName, clock, importLeaseMs: 60_000 });
        await second.importStory(lines);
        release();
        const error = await firstImport;
        if (fails) expect(String(error)).toMatch(/access denied/);
        else expect(ConflictError.isInstance(error), String(error)).toBe(true);
        expect(await collect(second.exportStory('overtaken'))).toEqual(lines);
        slow.destroy();
      },
      60_000,
    );

    it('the same calls export the same lines as the memory store, the publication log included', async () => {
      /** A story whose publication log is written neither in key order nor grouped by scene. */
      const populate = async (store: BaseStateStore) => {
        let state = await store.create(makeStoryState('saga'));
        for (const id of ['vote-b', 'vote-a', 'tip-1']) await store.enqueueInfluence(makeInfluence('saga', id));
        const sceneIds: string[] = [];
        for (let i = 0; i < 3; i++) {
          const scene = makeNextScene(state);
          ({ state } = await store.commitScene('saga', {
            expectedVersion: state.version,
            scene,
            nextState: makeNextState(state, scene),
            consumedInfluenceIds: i === 0 ? ['vote-a', 'vote-b'] : [],
            rejectedInfluences: i === 1 ? [{ id: 'tip-1', reason: 'off topic' }] : [],
          }));
          sceneIds.push(scene.id);
        }
        for (const [sceneId, target] of [
          [sceneIds[2]!, 'publish:x'],
          [sceneIds[0]!, 'publish:x'],
          [sceneIds[2]!, 'index'],
          [sceneIds[0]!, 'index'],
        ]) {
          await store.recordPublication({
            storyId: 'saga',
            sceneId: sceneId!,
            target: target!,
            status: 'done',
            result: {},
            recordedAt: fixtureTime(1),
          });
        }
      };
      const memory = createMemoryStateStore();
      await populate(memory);
      const dynamo = await freshStore();
      await populate(dynamo);
      const lines = await collect(memory.exportStory('saga'));
      expect(await collect(dynamo.exportStory('saga'))).toEqual(lines);
      // And a memory export goes through DynamoDB unchanged, line for line.
      const copy = await freshStore();
      await copy.importStory(lines);
      expect(await collect(copy.exportStory('saga'))).toEqual(lines);
    }, 60_000);

    it('the table definition creates a working table, and creating it again is a no-op', async () => {
      const tableName = await freshTable();
      await createStoryTable(client!, tableName);
      const { Table } = await client!.send(new DescribeTableCommand({ TableName: tableName }));
      expect(Table?.TableStatus).toBe('ACTIVE');
      expect(Table?.BillingModeSummary?.BillingMode).toBe('PAY_PER_REQUEST');
      expect(Table?.LocalSecondaryIndexes?.map((index) => index.IndexName)).toEqual(['lsi1']);
      const store = createDynamoStateStore({ client: client!, tableName });
      await store.create(makeStoryState('t'));
      expect((await store.load('t')).version).toBe(0);
    });

    it('validates its options', () => {
      expect(() => createDynamoStateStore({ tableName: 'x' })).toThrow(ValidationError);
      expect(() => createDynamoStateStore({ tableName: 'stories', itemBodyBytes: 10 })).toThrow(/itemBodyBytes/);
      expect(() => createDynamoStateStore({ tableName: 'stories', timeoutMs: 0 })).toThrow(/timeoutMs/);
    });

    it('a commit applied by DynamoDB whose answer never comes times out, is sent again, and is reported committed', async () => {
      const proxy = await proxyLosingOneAnswer(local.endpoint!);
      // A client with no timeout of its own: only the store's `timeoutMs` ends the wait for the lost answer.
      const behindProxy = new DynamoDBClient({
        endpoint: proxy.endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
        maxAttempts: 1,
      });
      const store = createDynamoStateStore({
        client: behindProxy,
        tableName: await freshTable(),
        timeoutMs: 1_000,
        ...instantRetries(),
      });
      const state = await store.create(makeStoryState('half-open'));
      const scene = makeNextScene(state);
      const nextState = makeNextState(state, scene);
      proxy.loseNext('TransactWriteItems');
      const result = await store.commitScene('half-open', {
        expectedVersion: 0,
        scene,
        nextState,
        consumedInfluenceIds: [],
      });
      // DynamoDB did apply the first attempt: the resend carries the same ClientRequestToken and is answered as done.
      expect(proxy.lostAnswers()).toHaveLength(1);
      expect(proxy.lostAnswers()[0]).toMatch(/^HTTP\/1\.1 200/);
      expect(result).toEqual({ scene, state: nextState, created: true });
      expect(await store.load('half-open')).toEqual(nextState);
      expect((await store.listScenes('half-open')).items.map((s) => s.id)).toEqual([scene.id]);

      // The same for an influence: a resend of the write that landed is no duplicate and no conflict.
      proxy.loseNext('TransactWriteItems');
      const enqueued = await store.enqueueInfluence(makeInfluence('half-open', 'vote-1'));
      expect(proxy.lostAnswers()).toHaveLength(2);
      expect(proxy.lostAnswers()[1]).toMatch(/^HTTP\/1\.1 200/);
      expect(enqueued.inserted).toBe(true);
      expect((await store.pendingInfluences('half-open')).map((i) => i.id)).toEqual(['vote-1']);
      await proxy.close();
      behindProxy.destroy();
    }, 60_000);
  });
}

describe('createStoryTable against a peer that misbehaves', () => {
  /** A client double: `answer` says what each command gets, by its name; `calls` counts them. */
  function scriptedClient(answer: (operation: string) => unknown) {
    const calls: string[] = [];
    const client = {
      send: async (command: { constructor: { name: string } }) => {
        const operation = command.constructor.name.replace(/Command$/, '');
        calls.push(operation);
        const answered = answer(operation);
        if (answered instanceof Error) throw answered;
        return answered;
      },
    } as unknown as DynamoDBClient;
    return { client, calls };
  }

  function awsError(name: string, status: number): Error {
    return Object.assign(new Error(`${name} from the service`), { name, $metadata: { httpStatusCode: status } });
  }

  it('ends with a retryable TIMEOUT when the peer accepts the connection and never answers', async () => {
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    // No timeout of the client's own: only createStoryTable's `timeoutMs` can end the wait.
    const silent = new DynamoDBClient({
      endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
      region: 'us-east-1',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      maxAttempts: 1,
    });
    try {
      const error = await createStoryTable(silent, 'stories', { timeoutMs: 200 }).catch((caught: unknown) => caught);
      expect(ProviderError.isInstance(error)).toBe(true);
      expect(error).toMatchObject({ code: 'TIMEOUT', isRetryable: true });
      expect((error as Error).message).toMatch(/CreateTable did not answer within 200 ms/);
    } finally {
      silent.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  }, 15_000);

  it('a table that never becomes ACTIVE is a typed, retryable TIMEOUT after maxWaitSeconds', async () => {
    const { client: creating, calls } = scriptedClient((operation) =>
      operation === 'DescribeTable' ? { Table: { TableStatus: 'CREATING' } } : {},
    );
    const error = await createStoryTable(creating, 'stories', { maxWaitSeconds: 2 }).catch((caught: unknown) => caught);
    expect(ProviderError.isInstance(error)).toBe(true);
    expect(error).toMatchObject({ code: 'TIMEOUT', isRetryable: true });
    expect((error as Error).message).toMatch(/did not become ACTIVE within 2 s/);
    expect(calls[0]).toBe('CreateTable');
    expect(calls.filter((operation) => operation === 'DescribeTable').length).toBeGreaterThanOrEqual(1);
  }, 15_000);

  it('a failure no retry can mend ends the wait at once, as the typed error it is', async () => {
    const { client: denied, calls } = scriptedClient((operation) =>
      operation === 'DescribeTable' ? awsError('AccessDeniedException', 400) : awsError('ResourceInUseException', 400),
    );
    // The waiter reads every failure as "not yet": without the stop it would poll for the whole 300 s, past the case's
    // own time limit.
    const error = await createStoryTable(denied, 'stories', { maxWaitSeconds: 300 }).catch((caught: unknown) => caught);
    expect(ProviderError.isInstance(error)).toBe(true);
    expect(error).toMatchObject({ isRetryable: false, status: 400 });
    expect((error as Error).message).toMatch(/DescribeTable failed: AccessDeniedException/);
    expect(calls).toEqual(['CreateTable', 'DescribeTable']);
  }, 15_000);

  it('an existing table, and one that appears after a poll that found none, are waited for without a failure', async () => {
    let describes = 0;
    const { client: appearing, calls } = scriptedClient((operation) => {
      if (operation === 'CreateTable') return awsError('ResourceInUseException', 400);
      describes++;
      return describes === 1 ? awsError('ResourceNotFoundException', 400) : { Table: { TableStatus: 'ACTIVE' } };
    });
    await createStoryTable(appearing, 'stories', { maxWaitSeconds: 10 });
    expect(calls).toEqual(['CreateTable', 'DescribeTable', 'DescribeTable']);
  }, 15_000);

  it('an abort ends the wait with an AbortedError', async () => {
    const { client: creating } = scriptedClient((operation) =>
      operation === 'DescribeTable' ? { Table: { TableStatus: 'CREATING' } } : {},
    );
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('shutting down')), 50);
    const error = await createStoryTable(creating, 'stories', { signal: controller.signal }).catch(
      (caught: unknown) => caught,
    );
    expect(AbortedError.isInstance(error)).toBe(true);
  }, 15_000);

  it('validates its options', async () => {
    const { client: unused, calls } = scriptedClient(() => ({}));
    await expect(createStoryTable(unused, 'stories', { timeoutMs: 0 })).rejects.toThrow(ValidationError);
    await expect(createStoryTable(unused, 'stories', { maxWaitSeconds: 1 })).rejects.toThrow(/maxWaitSeconds/);
    await expect(createStoryTable(unused, 'stories', { maxWaitSeconds: 3e6 })).rejects.toThrow(/maxWaitSeconds/);
    expect(calls).toEqual([]);
  });
});
