import { randomUUID } from 'node:crypto';
import {
  DeleteTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { afterAll, describe, expect, it } from 'vitest';
import { startDynamoLocal } from '../../test/support/dynamodb-local.js';
import { ConflictError, NotFoundError, ValidationError } from '../core/errors.js';
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

    /** A story whose compressed state (about 20 KB of random text) is split into parts at `itemBodyBytes: 1024`. */
    function splitState(storyId: string): StoryState {
      const base = makeStoryState(storyId);
      const characters = { ...base.characters };
      for (let i = 0; i < 20; i++) {
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
      // A client whose process "dies" after the first batch: every later call fails, clean-up included.
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
      const clock = new ManualClock();
      const dying = createDynamoStateStore({ client: crashing, tableName, clock });
      await expect(dying.importStory(lines)).rejects.toThrow(/crash/);
      expect(batches).toBeGreaterThan(1);
      crashing.destroy();

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
      expect(await collect(store.exportStory('crash'))).toEqual(smallerLines);
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
    });
  });
}
