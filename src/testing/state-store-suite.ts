/**
 * The conformance suite of the `StoryStateStore` port. Every state store, built in or third-party, runs it.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { ConflictError, NotFoundError, StoryloomError, ValidationError } from '../core/errors.js';
import type { StoryState } from '../state/schema.js';
import type { CommitSceneInput, StoryStateStore } from '../state/store.js';
import { fixtureTime, makeInfluence, makeNextScene, makeNextState, makeStoryState } from './fixtures.js';
import { registerSuite, type SuiteCase, type SuiteOptions, type SuiteTestApi } from './suite.js';

async function rejectsWith(promise: Promise<unknown>, check: (error: unknown) => boolean, label: string) {
  try {
    await promise;
  } catch (error) {
    assert.ok(check(error), `expected ${label}, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected ${label}, but the call succeeded`);
}

/** Commits `count` plain scenes in a row and returns the final state. */
async function commitScenes(
  store: StoryStateStore,
  state: StoryState,
  count: number,
  chapterEvery = 0,
): Promise<StoryState> {
  let current = state;
  for (let i = 0; i < count; i++) {
    const scene = makeNextScene(current);
    const closesChapter = chapterEvery > 0 && (current.sceneCount + 1) % chapterEvery === 0;
    const next = makeNextState(
      current,
      scene,
      closesChapter
        ? {
            chapterIndex: current.chapterIndex + 1,
            chapterId: `chapter-${String(current.chapterIndex + 2).padStart(4, '0')}`,
          }
        : {},
    );
    const result = await store.commitScene(current.storyId, {
      expectedVersion: current.version,
      scene,
      nextState: next,
      consumedInfluenceIds: [],
    });
    current = result.state;
  }
  return current;
}

async function collect(lines: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const line of lines) out.push(line);
  return out;
}

/** The export `lines` with `records` of one kind added before the end marker, which counts them. */
function withRecords(
  lines: readonly string[],
  kind: 'influence' | 'publication',
  values: readonly unknown[],
): string[] {
  const records = lines.map((line) => JSON.parse(line));
  const added = values.map((value) => (kind === 'influence' ? { kind, influence: value } : { kind, entry: value }));
  const end = records.pop();
  end.counts[kind === 'influence' ? 'influences' : 'publications'] += values.length;
  return [...records, ...added, end].map((record) => JSON.stringify(record));
}

/** The export `lines` with each record of `kind` passed through `edit`. */
function editRecords<T>(lines: readonly string[], kind: string, edit: (record: T) => void): string[] {
  return lines.map((line) => {
    const record = JSON.parse(line);
    if (record.kind === kind) edit(record);
    return JSON.stringify(record);
  });
}

/** An influence record as an export writes it, pending unless `overrides` says otherwise. */
function exportedInfluence(storyId: string, id: string, overrides: Record<string, unknown> = {}) {
  return {
    ...makeInfluence(storyId, id),
    proof: { type: 'none' },
    status: 'pending',
    reason: null,
    resolvedIn: null,
    ...overrides,
  };
}

/** The cases of the `StoryStateStore` suite, exported so tools can list them. */
export const storyStateStoreCases: ReadonlyArray<SuiteCase<StoryStateStore>> = [
  {
    name: 'create then load returns the initial state with an empty queue',
    async run(store) {
      const state = makeStoryState('s1');
      await store.create(state);
      const loaded = await store.load('s1');
      assert.deepEqual(loaded, state);
      assert.equal(await store.exists('s1'), true);
      assert.equal(await store.exists('nope'), false);
    },
  },
  {
    name: 'creating an existing story is a ConflictError and keeps the original',
    async run(store) {
      await store.create(makeStoryState('s1'));
      await rejectsWith(
        store.create(makeStoryState('s1', { worldState: { season: 'winter' } })),
        ConflictError.isInstance,
        'ConflictError',
      );
      assert.deepEqual((await store.load('s1')).worldState, { season: 'autumn' });
    },
  },
  {
    name: 'loading a missing story is a NotFoundError',
    async run(store) {
      await rejectsWith(store.load('missing'), NotFoundError.isInstance, 'NotFoundError');
    },
  },
  {
    name: 'invalid input is a ValidationError: bad state, bad ids',
    async run(store) {
      await rejectsWith(
        store.create({ ...makeStoryState('s1'), version: -1 }),
        ValidationError.isInstance,
        'ValidationError for a negative version',
      );
      // A new story has no scene yet: one that claims some would number its first scene past a gap.
      for (const started of [{ version: 3 }, { sceneCount: 2 }, { sceneId: 's1-s0' }]) {
        await rejectsWith(
          store.create({ ...makeStoryState('s1'), ...started }),
          ValidationError.isInstance,
          `ValidationError for a story created at ${JSON.stringify(started)}`,
        );
      }
      await rejectsWith(store.load('../etc/passwd'), ValidationError.isInstance, 'ValidationError for a path-like id');
      await rejectsWith(store.getScene('s1', ''), ValidationError.isInstance, 'ValidationError for an empty id');
      assert.equal(await store.exists('s1'), false);
    },
  },
  {
    name: 'commitScene writes scene and state and bumps the version',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const scene = makeNextScene(state);
      const result = await store.commitScene('s1', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: [],
      });
      assert.equal(result.created, true);
      assert.deepEqual(result.scene, scene);
      assert.equal(result.state.version, 1);
      const loaded = await store.load('s1');
      assert.equal(loaded.version, 1);
      assert.equal(loaded.sceneId, scene.id);
      assert.deepEqual(await store.getScene('s1', scene.id), scene);
      assert.equal(await store.getScene('s1', 'nope'), null);
    },
  },
  {
    name: 'a stale expectedVersion is a ConflictError and writes nothing',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const after = await commitScenes(store, state, 1);
      const stale = makeNextScene(state, { id: 'stale-scene' });
      const error = await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 0,
          scene: stale,
          nextState: makeNextState(state, stale),
          consumedInfluenceIds: [],
        }),
        ConflictError.isInstance,
        'ConflictError',
      );
      assert.equal((error as ConflictError).actualVersion, 1);
      assert.equal(await store.getScene('s1', 'stale-scene'), null);
      assert.deepEqual(await store.load('s1'), after);
    },
  },
  {
    name: 'committing the same scene id again returns the original commit and writes nothing',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const scene = makeNextScene(state);
      const first = await store.commitScene('s1', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: [],
      });
      const altered = { ...scene, text: 'A different text for the same scene id.' };
      const again = await store.commitScene('s1', {
        expectedVersion: 0,
        scene: altered,
        nextState: makeNextState(state, altered),
        consumedInfluenceIds: [],
      });
      assert.equal(again.created, false);
      assert.deepEqual(again.scene, first.scene);
      assert.deepEqual(again.state, first.state);
      // Once the story has moved on, a replay still answers with the state that scene made, not the current one.
      const moved = await commitScenes(store, first.state, 1);
      const later = await store.commitScene('s1', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: [],
      });
      assert.equal(later.created, false);
      assert.deepEqual(later.scene, first.scene);
      assert.deepEqual(later.state, first.state);
      const page = await store.listScenes('s1');
      assert.equal(page.items.length, 2);
      assert.equal(page.items[0]!.text, scene.text);
      assert.deepEqual(await store.load('s1'), moved);
    },
  },
  {
    name: 'twenty concurrent commits on one version: exactly one wins, the rest get ConflictError',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const attempts = Array.from({ length: 20 }, (_, i) => {
        const scene = makeNextScene(state, { id: `racer-${i}`, text: `Racer ${i} wrote this.` });
        return store.commitScene('s1', {
          expectedVersion: 0,
          scene,
          nextState: makeNextState(state, scene),
          consumedInfluenceIds: [],
        });
      });
      const results = await Promise.allSettled(attempts);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r) => r.status === 'rejected');
      assert.equal(won.length, 1, 'exactly one commit wins');
      for (const loss of lost) assert.ok(ConflictError.isInstance((loss as PromiseRejectedResult).reason));
      const loaded = await store.load('s1');
      assert.equal(loaded.version, 1);
      assert.equal((await store.listScenes('s1')).items.length, 1);
    },
  },
  {
    name: 'twenty concurrent commits of one scene id: one is created, all return it',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const scene = makeNextScene(state);
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, () =>
          store.commitScene('s1', {
            expectedVersion: 0,
            scene,
            nextState: makeNextState(state, scene),
            consumedInfluenceIds: [],
          }),
        ),
      );
      const fulfilled = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      // A backend may answer a loser with ConflictError when it cannot tell the race apart; none may create twice.
      for (const r of results) if (r.status === 'rejected') assert.ok(ConflictError.isInstance(r.reason));
      assert.equal(fulfilled.filter((r) => r.created).length, 1);
      for (const r of fulfilled) assert.equal(r.scene.id, scene.id);
      assert.equal((await store.listScenes('s1')).items.length, 1);
    },
  },
  {
    name: 'a commit resolves influences: applied and rejected leave the pending queue',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-b'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-c'));
      const loaded = await store.load('s1');
      assert.deepEqual(
        loaded.userInfluenceQueue.map((i) => i.id),
        ['inf-a', 'inf-b', 'inf-c'],
      );
      const scene = makeNextScene(state, { influencesApplied: ['inf-a'] });
      await store.commitScene('s1', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: ['inf-a'],
        rejectedInfluences: [{ id: 'inf-b', reason: 'off-topic' }],
      });
      const a = await store.getInfluence('s1', 'inf-a');
      const b = await store.getInfluence('s1', 'inf-b');
      assert.equal(a?.status, 'applied');
      assert.equal(a?.resolvedIn, scene.id);
      assert.equal(b?.status, 'rejected');
      assert.equal(b?.reason, 'off-topic');
      assert.deepEqual(
        (await store.pendingInfluences('s1')).map((i) => i.id),
        ['inf-c'],
      );
      assert.deepEqual(
        (await store.load('s1')).userInfluenceQueue.map((i) => i.id),
        ['inf-c'],
      );
    },
  },
  {
    name: 'a commit that consumes a non-pending influence fails whole and writes nothing',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-b'));
      const first = makeNextScene(state);
      const afterFirst = (
        await store.commitScene('s1', {
          expectedVersion: 0,
          scene: first,
          nextState: makeNextState(state, first),
          consumedInfluenceIds: ['inf-a'],
        })
      ).state;
      const second = makeNextScene(afterFirst);
      await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 1,
          scene: second,
          nextState: makeNextState(afterFirst, second),
          consumedInfluenceIds: ['inf-b', 'inf-a'],
        }),
        (e) => ConflictError.isInstance(e) || ValidationError.isInstance(e),
        'ConflictError or ValidationError',
      );
      assert.equal((await store.load('s1')).version, 1);
      assert.equal(await store.getScene('s1', second.id), null);
      assert.equal((await store.getInfluence('s1', 'inf-b'))?.status, 'pending');
      // Rejecting an influence an earlier scene applied would resolve it twice: refused whole, like consuming it.
      await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 1,
          scene: second,
          nextState: makeNextState(afterFirst, second),
          consumedInfluenceIds: ['inf-b'],
          rejectedInfluences: [{ id: 'inf-a', reason: 'too late' }],
        }),
        (e) => ConflictError.isInstance(e) || ValidationError.isInstance(e),
        'ConflictError or ValidationError for rejecting an applied influence',
      );
      assert.equal((await store.load('s1')).version, 1);
      assert.equal(await store.getScene('s1', second.id), null);
      const applied = await store.getInfluence('s1', 'inf-a');
      assert.equal(applied?.status, 'applied', 'the influence stays applied');
      assert.equal(applied?.resolvedIn, first.id);
      assert.equal((await store.getInfluence('s1', 'inf-b'))?.status, 'pending');
      await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 1,
          scene: second,
          nextState: makeNextState(afterFirst, second),
          consumedInfluenceIds: ['never-enqueued'],
        }),
        ValidationError.isInstance,
        'ValidationError for an unknown influence',
      );
      assert.equal((await store.load('s1')).version, 1);
    },
  },
  {
    name: 'an influence an earlier scene rejected is resolved once: applying or rejecting it again fails whole and writes nothing',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      const first = makeNextScene(state);
      const afterFirst = (
        await store.commitScene('s1', {
          expectedVersion: 0,
          scene: first,
          nextState: makeNextState(state, first),
          consumedInfluenceIds: [],
          rejectedInfluences: [{ id: 'inf-a', reason: 'off-topic' }],
        })
      ).state;
      const second = makeNextScene(afterFirst, { influencesApplied: ['inf-a'] });
      const again: Array<[string, Pick<CommitSceneInput, 'consumedInfluenceIds' | 'rejectedInfluences'>]> = [
        ['applying', { consumedInfluenceIds: ['inf-a'] }],
        ['rejecting again', { consumedInfluenceIds: [], rejectedInfluences: [{ id: 'inf-a', reason: 'still no' }] }],
      ];
      for (const [label, outcomes] of again) {
        await rejectsWith(
          store.commitScene('s1', {
            expectedVersion: 1,
            scene: second,
            nextState: makeNextState(afterFirst, second),
            ...outcomes,
          }),
          (e) => ConflictError.isInstance(e) || ValidationError.isInstance(e),
          `ConflictError or ValidationError for ${label} a rejected influence`,
        );
      }
      assert.equal((await store.load('s1')).version, 1);
      assert.equal(await store.getScene('s1', second.id), null);
      const rejected = await store.getInfluence('s1', 'inf-a');
      assert.deepEqual(
        [rejected?.status, rejected?.reason, rejected?.resolvedIn],
        ['rejected', 'off-topic', first.id],
        'the influence keeps its first outcome',
      );
    },
  },
  {
    name: 'a commit that resolves one influence twice, or rejects one that does not exist, is a ValidationError and writes nothing',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      const scene = makeNextScene(state);
      const commit = { expectedVersion: 0, scene, nextState: makeNextState(state, scene), consumedInfluenceIds: [] };
      const twice: Array<[string, Partial<CommitSceneInput>]> = [
        [
          'applied and rejected at once',
          { consumedInfluenceIds: ['inf-a'], rejectedInfluences: [{ id: 'inf-a', reason: 'no' }] },
        ],
        ['applied twice', { consumedInfluenceIds: ['inf-a', 'inf-a'] }],
        ['rejected that does not exist', { rejectedInfluences: [{ id: 'never-enqueued', reason: 'no' }] }],
      ];
      for (const [label, outcomes] of twice) {
        await rejectsWith(
          store.commitScene('s1', { ...commit, ...outcomes }),
          ValidationError.isInstance,
          `ValidationError for an influence ${label}`,
        );
      }
      assert.equal((await store.load('s1')).version, 0);
      assert.equal(await store.getScene('s1', scene.id), null);
      assert.equal((await store.getInfluence('s1', 'inf-a'))?.status, 'pending');
    },
  },
  {
    name: 'influence outcomes of the wrong shape are a ValidationError and write nothing; a long reason is cut between characters',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-b'));
      const scene = makeNextScene(state);
      const commit = { expectedVersion: 0, scene, nextState: makeNextState(state, scene), consumedInfluenceIds: [] };
      // What the types allow a JavaScript caller (or an `as`) to send.
      const wrong: Array<[string, Record<string, unknown>]> = [
        ['a rejection without a reason', { rejectedInfluences: [{ id: 'inf-a' }] }],
        ['a rejection whose reason is a number', { rejectedInfluences: [{ id: 'inf-a', reason: 7 }] }],
        ['a rejection whose id is an object', { rejectedInfluences: [{ id: {}, reason: 'no' }] }],
        ['a rejection that is null', { rejectedInfluences: [null] }],
        ['an empty influence id', { consumedInfluenceIds: [''] }],
        ['a number as influence id', { consumedInfluenceIds: [7] }],
        ['an object as influence id', { consumedInfluenceIds: [{}] }],
        ['undefined as influence id', { consumedInfluenceIds: [undefined] }],
        ['one id instead of a list', { consumedInfluenceIds: 'inf-a' }],
      ];
      for (const [label, outcomes] of wrong) {
        await rejectsWith(
          store.commitScene('s1', { ...commit, ...outcomes } as typeof commit),
          ValidationError.isInstance,
          `ValidationError for ${label}`,
        );
      }
      assert.equal((await store.load('s1')).version, 0);
      assert.equal(await store.getScene('s1', scene.id), null);
      assert.equal((await store.getInfluence('s1', 'inf-a'))?.status, 'pending');
      // 499 letters and an emoji (two code units) do not fit 500: the emoji goes whole, not half of it.
      await store.commitScene('s1', {
        ...commit,
        rejectedInfluences: [
          { id: 'inf-a', reason: `${'x'.repeat(499)}\u{1F600} and more` },
          { id: 'inf-b', reason: 'y'.repeat(600) },
        ],
      });
      assert.equal((await store.getInfluence('s1', 'inf-a'))?.reason, 'x'.repeat(499));
      assert.equal((await store.getInfluence('s1', 'inf-b'))?.reason, 'y'.repeat(500));
    },
  },
  {
    name: 'an inconsistent commit is a ValidationError',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const scene = makeNextScene(state);
      await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 0,
          scene,
          nextState: { ...makeNextState(state, scene), version: 5 },
          consumedInfluenceIds: [],
        }),
        ValidationError.isInstance,
        'ValidationError for a version jump',
      );
      await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 0,
          scene: { ...scene, storyId: 'other' },
          nextState: makeNextState(state, scene),
          consumedInfluenceIds: [],
        }),
        ValidationError.isInstance,
        'ValidationError for a scene of another story',
      );
      await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 0,
          scene,
          nextState: makeNextState(state, scene, { sceneCount: 0 }),
          consumedInfluenceIds: [],
        }),
        ValidationError.isInstance,
        'ValidationError for a next state that does not count the scene',
      );
      // A state naming another scene, or a scene claiming another version, would make a replay answer with the wrong
      // state and the story's export no longer import.
      await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 0,
          scene,
          nextState: makeNextState(state, scene, { sceneId: 'another-scene' }),
          consumedInfluenceIds: [],
        }),
        ValidationError.isInstance,
        'ValidationError for a next state that names another scene',
      );
      await rejectsWith(
        store.commitScene('s1', {
          expectedVersion: 0,
          scene: { ...scene, stateVersion: 2 },
          nextState: makeNextState(state, scene),
          consumedInfluenceIds: [],
        }),
        ValidationError.isInstance,
        'ValidationError for a scene that made another version',
      );
      assert.equal((await store.load('s1')).version, 0);
      assert.equal(await store.getScene('s1', scene.id), null);
    },
  },
  {
    name: 'a scene that is not the next one is a ValidationError and writes nothing: an index taken, or a gap',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const after = await commitScenes(store, state, 1);
      const original = await store.getScene('s1', 's1-s0');
      for (const index of [0, 5]) {
        const misplaced = makeNextScene(after, { id: `misplaced-${index}`, index });
        await rejectsWith(
          store.commitScene('s1', {
            expectedVersion: after.version,
            scene: misplaced,
            nextState: makeNextState(after, misplaced, { sceneCount: index + 1 }),
            consumedInfluenceIds: [],
          }),
          ValidationError.isInstance,
          `ValidationError for a scene at index ${index} where the next is 1`,
        );
        assert.equal(await store.getScene('s1', misplaced.id), null);
      }
      assert.deepEqual(await store.getScene('s1', 's1-s0'), original);
      assert.deepEqual(await store.load('s1'), after);
      // A first scene past a gap, on a story with none.
      const other = await store.create(makeStoryState('s2'));
      const gap = makeNextScene(other, { index: 3 });
      await rejectsWith(
        store.commitScene('s2', {
          expectedVersion: 0,
          scene: gap,
          nextState: makeNextState(other, gap, { sceneCount: 4 }),
          consumedInfluenceIds: [],
        }),
        ValidationError.isInstance,
        'ValidationError for a first scene at index 3',
      );
      assert.equal((await store.load('s2')).version, 0);
      assert.deepEqual((await store.listScenes('s2')).items, []);
    },
  },
  {
    name: 'listScenes pages in both orders and by chapter',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      await commitScenes(store, state, 7, 3);
      const all = await store.listScenes('s1', { limit: 1000 });
      assert.deepEqual(
        all.items.map((s) => s.index),
        [0, 1, 2, 3, 4, 5, 6],
      );
      assert.equal(all.nextCursor, undefined);
      const collected: number[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.listScenes('s1', cursor ? { limit: 3, cursor } : { limit: 3 });
        assert.ok(page.items.length <= 3);
        collected.push(...page.items.map((s) => s.index));
        cursor = page.nextCursor;
      } while (cursor);
      assert.deepEqual(collected, [0, 1, 2, 3, 4, 5, 6]);
      const desc: number[] = [];
      cursor = undefined;
      do {
        const page = await store.listScenes(
          's1',
          cursor ? { limit: 2, order: 'desc', cursor } : { limit: 2, order: 'desc' },
        );
        desc.push(...page.items.map((s) => s.index));
        cursor = page.nextCursor;
      } while (cursor);
      assert.deepEqual(desc, [6, 5, 4, 3, 2, 1, 0]);
      const second = await store.listScenes('s1', { chapterId: 'chapter-0002' });
      assert.deepEqual(
        second.items.map((s) => s.index),
        [3, 4, 5],
      );
      const secondDesc = await store.listScenes('s1', { chapterId: 'chapter-0002', order: 'desc', limit: 2 });
      assert.deepEqual(
        secondDesc.items.map((s) => s.index),
        [5, 4],
      );
      assert.ok(secondDesc.nextCursor);
      const secondDescRest = await store.listScenes('s1', {
        chapterId: 'chapter-0002',
        order: 'desc',
        limit: 2,
        cursor: secondDesc.nextCursor,
      });
      assert.deepEqual(
        secondDescRest.items.map((s) => s.index),
        [3],
      );
      assert.equal(secondDescRest.nextCursor, undefined);
      const secondAsc = await store.listScenes('s1', { chapterId: 'chapter-0002', limit: 2 });
      assert.deepEqual(
        secondAsc.items.map((s) => s.index),
        [3, 4],
      );
      const secondAscRest = await store.listScenes('s1', {
        chapterId: 'chapter-0002',
        limit: 2,
        cursor: secondAsc.nextCursor!,
      });
      assert.deepEqual(
        secondAscRest.items.map((s) => s.index),
        [5],
      );
      assert.equal(secondAscRest.nextCursor, undefined);
      assert.deepEqual((await store.listScenes('missing')).items, []);
      await rejectsWith(
        store.listScenes('s1', { limit: 0 }),
        ValidationError.isInstance,
        'ValidationError for limit 0',
      );
      await rejectsWith(
        store.listScenes('s1', { cursor: 'garbage' }),
        ValidationError.isInstance,
        'ValidationError for a forged cursor',
      );
    },
  },
  {
    name: 'a page that ends with the last scene has no nextCursor, even when it is exactly full',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      await commitScenes(store, state, 4);
      for (const order of ['asc', 'desc'] as const) {
        const whole = await store.listScenes('s1', { limit: 4, order });
        assert.equal(whole.items.length, 4);
        assert.equal(whole.nextCursor, undefined, `no cursor past a full last page (${order})`);
        const first = await store.listScenes('s1', { limit: 2, order });
        assert.ok(first.nextCursor, `a cursor after the first of two pages (${order})`);
        const last = await store.listScenes('s1', { limit: 2, order, cursor: first.nextCursor });
        assert.equal(last.items.length, 2);
        assert.equal(last.nextCursor, undefined, `no cursor after the second of two pages (${order})`);
      }
    },
  },
  {
    name: 'getStateAt returns the state as it stood after each version',
    async run(store) {
      const initial = await store.create(makeStoryState('s1'));
      const final = await commitScenes(store, initial, 3);
      assert.deepEqual(await store.getStateAt('s1', 0), initial);
      assert.equal((await store.getStateAt('s1', 2))?.version, 2);
      assert.deepEqual(await store.getStateAt('s1', 3), final);
      assert.equal(await store.getStateAt('s1', 4), null);
    },
  },
  {
    name: 'enqueueInfluence is idempotent by id and starts every influence pending',
    async run(store) {
      await store.create(makeStoryState('s1'));
      const first = await store.enqueueInfluence(makeInfluence('s1', 'tx-1', { text: 'first' }));
      const second = await store.enqueueInfluence(makeInfluence('s1', 'tx-1', { text: 'second' }));
      assert.equal(first.inserted, true);
      assert.equal(second.inserted, false);
      assert.equal(second.influence.text, 'first');
      const forged = await store.enqueueInfluence(makeInfluence('s1', 'tx-2', { status: 'applied' }));
      assert.equal(forged.influence.status, 'pending');
      assert.equal((await store.pendingInfluences('s1')).length, 2);
      await rejectsWith(
        store.enqueueInfluence(makeInfluence('missing', 'tx-3')),
        NotFoundError.isInstance,
        'NotFoundError for an unknown story',
      );
      await rejectsWith(
        store.enqueueInfluence({ ...makeInfluence('s1', 'tx-4'), text: 'x'.repeat(5_000) }),
        ValidationError.isInstance,
        'ValidationError for an oversized text',
      );
    },
  },
  {
    name: 'pending influences come oldest first, then by id',
    async run(store) {
      await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'b', { receivedAt: fixtureTime(5) }));
      await store.enqueueInfluence(makeInfluence('s1', 'c', { receivedAt: fixtureTime(1) }));
      await store.enqueueInfluence(makeInfluence('s1', 'a', { receivedAt: fixtureTime(5) }));
      assert.deepEqual(
        (await store.pendingInfluences('s1')).map((i) => i.id),
        ['c', 'a', 'b'],
      );
      assert.deepEqual(
        (await store.pendingInfluences('s1', { limit: 1 })).map((i) => i.id),
        ['c'],
      );
    },
  },
  {
    name: 'an influence time outside years 0000-9999 once in UTC is a ValidationError, so the queue keeps its order',
    async run(store) {
      await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'early', { receivedAt: fixtureTime(0) }));
      for (const receivedAt of ['9999-12-31T23:30:00-02:00', '0000-01-01T00:30:00+01:00']) {
        await rejectsWith(
          store.enqueueInfluence(makeInfluence('s1', 'out-of-range', { receivedAt })),
          ValidationError.isInstance,
          `ValidationError for receivedAt ${receivedAt}`,
        );
      }
      // The last instant that stays in range is kept, in UTC, and last in the queue.
      await store.enqueueInfluence(makeInfluence('s1', 'latest', { receivedAt: '9999-12-31T23:59:59-00:00' }));
      assert.deepEqual(
        (await store.pendingInfluences('s1')).map((i) => [i.id, i.receivedAt]),
        [
          ['early', fixtureTime(0)],
          ['latest', '9999-12-31T23:59:59.000Z'],
        ],
      );
    },
  },
  {
    name: 'fifty concurrent enqueues of one id insert exactly once',
    async run(store) {
      await store.create(makeStoryState('s1'));
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          store.enqueueInfluence(makeInfluence('s1', 'same-tx', { text: `copy ${i}` })),
        ),
      );
      assert.equal(results.filter((r) => r.inserted).length, 1);
      assert.equal((await store.pendingInfluences('s1')).length, 1);
    },
  },
  {
    name: 'influences enqueued while scenes commit are neither lost nor applied twice',
    async run(store) {
      let state = await store.create(makeStoryState('s1'));
      const ids = Array.from({ length: 120 }, (_, i) => `inf-${String(i).padStart(3, '0')}`);
      const applied = new Set<string>();
      const enqueueing = Promise.all(
        ids.map((id, i) => store.enqueueInfluence(makeInfluence('s1', id, { receivedAt: fixtureTime(i) }))),
      );
      for (let round = 0; round < 6; round++) {
        const pending = await store.pendingInfluences('s1', { limit: 10 });
        const scene = makeNextScene(state, { influencesApplied: pending.map((p) => p.id) });
        state = (
          await store.commitScene('s1', {
            expectedVersion: state.version,
            scene,
            nextState: makeNextState(state, scene),
            consumedInfluenceIds: pending.map((p) => p.id),
          })
        ).state;
        for (const p of pending) {
          assert.equal(applied.has(p.id), false, `${p.id} applied twice`);
          applied.add(p.id);
        }
      }
      await enqueueing;
      const pending = new Set((await store.pendingInfluences('s1')).map((i) => i.id));
      for (const id of ids) {
        const stored = await store.getInfluence('s1', id);
        assert.ok(stored, `${id} was lost`);
        assert.equal(stored.status === 'applied', applied.has(id), `${id} status disagrees with the commits`);
        assert.equal(stored.status === 'pending', pending.has(id));
      }
    },
  },
  {
    name: 'the publication log keeps the first finished write per scene and target',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const final = await commitScenes(store, state, 1);
      const sceneId = final.sceneId!;
      const failed = await store.recordPublication({
        storyId: 's1',
        sceneId,
        target: 'publish:site',
        status: 'failed',
        result: { error: 'disk full' },
      });
      assert.equal(failed.recorded, true);
      assert.deepEqual(await store.unfinishedPublications('s1', sceneId, ['index', 'publish:site']), [
        'index',
        'publish:site',
      ]);
      const done = await store.recordPublication({
        storyId: 's1',
        sceneId,
        target: 'publish:site',
        status: 'done',
        result: { url: 'https://example.org/1' },
      });
      assert.equal(done.recorded, true);
      const late = await store.recordPublication({
        storyId: 's1',
        sceneId,
        target: 'publish:site',
        status: 'done',
        result: { url: 'https://example.org/duplicate' },
      });
      assert.equal(late.recorded, false);
      assert.deepEqual(late.entry.result, { url: 'https://example.org/1' });
      const afterFail = await store.recordPublication({
        storyId: 's1',
        sceneId,
        target: 'publish:site',
        status: 'failed',
        result: {},
      });
      assert.equal(afterFail.recorded, false);
      await store.recordPublication({ storyId: 's1', sceneId, target: 'index', status: 'skipped', result: {} });
      assert.deepEqual(await store.unfinishedPublications('s1', sceneId, ['index', 'publish:site', 'broadcast']), [
        'broadcast',
      ]);
      const entries = await store.listPublications('s1', sceneId);
      assert.deepEqual(entries.map((e) => e.target).sort(), ['index', 'publish:site']);
      await rejectsWith(
        store.recordPublication({ storyId: 's1', sceneId, target: 'bad target!', status: 'done', result: {} }),
        ValidationError.isInstance,
        'ValidationError for a bad target',
      );
      // A publication of a story that does not exist is refused, not written as an orphan entry.
      await rejectsWith(
        store.recordPublication({ storyId: 'missing', sceneId, target: 'publish:site', status: 'done', result: {} }),
        NotFoundError.isInstance,
        'NotFoundError for an unknown story',
      );
      assert.deepEqual(await store.listPublications('missing', sceneId), []);
    },
  },
  {
    name: 'a skipped step is finished like a done one: a later write for its scene and target is not recorded',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const sceneId = (await commitScenes(store, state, 1)).sceneId!;
      const skipped = await store.recordPublication({
        storyId: 's1',
        sceneId,
        target: 'image',
        status: 'skipped',
        result: { why: 'no picture' },
      });
      assert.equal(skipped.recorded, true);
      for (const status of ['done', 'failed'] as const) {
        const later = await store.recordPublication({ storyId: 's1', sceneId, target: 'image', status, result: {} });
        assert.equal(later.recorded, false, `a ${status} write after skipped is not recorded`);
        assert.deepEqual(later.entry, skipped.entry);
      }
      assert.deepEqual(await store.listPublications('s1', sceneId), [skipped.entry]);
      assert.deepEqual(await store.unfinishedPublications('s1', sceneId, ['image']), []);
    },
  },
  {
    name: 'recordPublication refuses a result that is no JSON object once serialized and a recordedAt that is no ISO time',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      const sceneId = (await commitScenes(store, state, 1)).sceneId!;
      type Entry = Parameters<StoryStateStore['recordPublication']>[0];
      const refused: Array<[string, Record<string, unknown>]> = [
        ['a string result', { result: 'posted' }],
        ['a number result', { result: 42 }],
        ['an array result', { result: ['posted'] }],
        ['a result whose toJSON gives a string', { result: { toJSON: () => 'posted' } }],
        ['a function as result', { result: () => 'posted' }],
        ['a number as recordedAt', { recordedAt: 1_767_225_600_000 }],
        ['recordedAt that is no time', { recordedAt: 'yesterday' }],
      ];
      for (const [label, fields] of refused) {
        await rejectsWith(
          store.recordPublication({
            storyId: 's1',
            sceneId,
            target: 'site',
            status: 'done',
            result: {},
            ...fields,
          } as Entry),
          ValidationError.isInstance,
          `ValidationError for ${label}`,
        );
      }
      assert.deepEqual(await store.listPublications('s1', sceneId), []);
      // What it takes, it keeps as its JSON round trip gives it, and the story's export imports.
      const { entry } = await store.recordPublication({
        storyId: 's1',
        sceneId,
        target: 'site',
        status: 'done',
        result: { toJSON: () => ({ url: 'https://example.org/1' }) },
        recordedAt: fixtureTime(1),
      });
      assert.deepEqual(entry.result, { url: 'https://example.org/1' });
      const lines = await collect(store.exportStory('s1'));
      const target = await create();
      await target.importStory(lines);
      assert.deepEqual(await target.listPublications('s1', sceneId), [entry]);
    },
  },
  {
    name: 'concurrent finished writes of one publication: exactly one is recorded',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const sceneId = (await commitScenes(store, state, 1)).sceneId!;
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.recordPublication({
            storyId: 's1',
            sceneId,
            target: 'twitter',
            status: 'done',
            result: { postId: `p${i}` },
          }),
        ),
      );
      assert.equal(results.filter((r) => r.recorded).length, 1);
      const winner = results.find((r) => r.recorded)!.entry.result;
      for (const r of results) assert.deepEqual(r.entry.result, winner);
    },
  },
  {
    name: 'fork shares history up to a scene and then diverges',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      const final = await commitScenes(store, state, 5);
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      const forked = await store.fork('s1', 2, 'branch');
      assert.equal(forked.storyId, 'branch');
      assert.equal(forked.version, 3);
      assert.equal(forked.sceneCount, 3);
      const original = await store.getStateAt('s1', 3);
      assert.deepEqual({ ...forked, storyId: 's1' }, original);
      const scenes = (await store.listScenes('branch')).items;
      assert.deepEqual(
        scenes.map((s) => [s.index, s.storyId]),
        [
          [0, 'branch'],
          [1, 'branch'],
          [2, 'branch'],
        ],
      );
      assert.deepEqual(await store.pendingInfluences('branch'), []);
      const diverged = await commitScenes(store, forked, 1);
      assert.equal(diverged.version, 4);
      const originalNow = await store.load('s1');
      assert.deepEqual({ ...originalNow, userInfluenceQueue: [] }, final);
      assert.deepEqual(
        originalNow.userInfluenceQueue.map((i) => i.id),
        ['inf-a'],
      );
      await rejectsWith(
        store.fork('s1', 1, 'branch'),
        ConflictError.isInstance,
        'ConflictError for an existing target',
      );
      await rejectsWith(store.fork('s1', 9, 'other'), ValidationError.isInstance, 'ValidationError past the end');
      await rejectsWith(store.fork('missing', 0, 'other'), NotFoundError.isInstance, 'NotFoundError');
    },
  },
  {
    name: 'export then import into an empty store reproduces the story exactly',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-b'));
      let current = await commitScenes(store, state, 2, 2);
      const scene = makeNextScene(current, { influencesApplied: ['inf-a'] });
      current = (
        await store.commitScene('s1', {
          expectedVersion: current.version,
          scene,
          nextState: makeNextState(current, scene),
          consumedInfluenceIds: ['inf-a'],
        })
      ).state;
      await store.recordPublication({
        storyId: 's1',
        sceneId: scene.id,
        target: 'site',
        status: 'done',
        result: { n: 1 },
      });
      const lines = await collect(store.exportStory('s1'));
      const target = await create();
      const summary = await target.importStory(lines);
      assert.deepEqual(summary, { storyId: 's1', scenes: 3, influences: 2, publications: 1 });
      assert.deepEqual(await target.load('s1'), await store.load('s1'));
      assert.deepEqual(await target.listScenes('s1'), await store.listScenes('s1'));
      assert.deepEqual(await target.getStateAt('s1', 1), await store.getStateAt('s1', 1));
      assert.deepEqual(await target.getInfluence('s1', 'inf-a'), await store.getInfluence('s1', 'inf-a'));
      assert.deepEqual(await target.listPublications('s1', scene.id), await store.listPublications('s1', scene.id));
      assert.deepEqual(await collect(target.exportStory('s1')), lines);
      await rejectsWith(target.importStory(lines), ConflictError.isInstance, 'ConflictError for an existing story');
    },
  },
  {
    name: 'an export taken while a scene commits holds the story as it stood when it began, and imports',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-b'));
      const current = await commitScenes(store, state, 2);
      await store.recordPublication({
        storyId: 's1',
        sceneId: current.sceneId!,
        target: 'site',
        status: 'done',
        result: {},
      });
      const before = await store.load('s1');
      const lines: string[] = [];
      const reading = store.exportStory('s1')[Symbol.asyncIterator]();
      for (let i = 0; i < 2; i++) lines.push((await reading.next()).value as string); // the header and the state
      // The engine commits meanwhile: a scene that resolves both influences, and logs a step of it.
      const late = makeNextScene(current, { influencesApplied: ['inf-a'] });
      await store.commitScene('s1', {
        expectedVersion: current.version,
        scene: late,
        nextState: makeNextState(current, late),
        consumedInfluenceIds: ['inf-a'],
        rejectedInfluences: [{ id: 'inf-b', reason: 'off-topic' }],
      });
      await store.recordPublication({ storyId: 's1', sceneId: late.id, target: 'site', status: 'done', result: {} });
      for (let next = await reading.next(); !next.done; next = await reading.next()) lines.push(next.value);
      const target = await create();
      const summary = await target.importStory(lines);
      assert.deepEqual(summary, { storyId: 's1', scenes: 2, influences: 2, publications: 1 });
      assert.deepEqual(await target.load('s1'), before, 'the story as it stood, both influences still pending');
      assert.equal(await target.getStateAt('s1', 3), null);
      assert.equal(await target.getScene('s1', late.id), null);
      assert.deepEqual(await target.listPublications('s1', late.id), []);
      assert.deepEqual(await collect(target.exportStory('s1')), lines);
      // The store itself moved on.
      assert.equal((await store.getInfluence('s1', 'inf-a'))?.resolvedIn, late.id);
      assert.equal((await store.load('s1')).version, 3);
    },
  },
  {
    name: 'the export lists the publication log by scene id, then target, whatever order it was written in',
    async run(store) {
      await store.create(makeStoryState('s1'));
      const written = [
        ['s1-s2', 'publish:x'],
        ['s1-s10', 'index'],
        ['s1-s2', 'index'],
        ['s1-s10', 'broadcast'],
      ];
      for (const [sceneId, target] of written) {
        await store.recordPublication({
          storyId: 's1',
          sceneId: sceneId!,
          target: target!,
          status: 'done',
          result: {},
        });
      }
      const entries = (await collect(store.exportStory('s1')))
        .map((line) => JSON.parse(line))
        .filter((record) => record.kind === 'publication')
        .map((record) => [record.entry.sceneId, record.entry.target]);
      assert.deepEqual(entries, [
        ['s1-s10', 'broadcast'],
        ['s1-s10', 'index'],
        ['s1-s2', 'index'],
        ['s1-s2', 'publish:x'],
      ]);
    },
  },
  {
    name: 'an export that repeats a key (scene id or index, influence, log entry, snapshot) is refused with its line and writes nothing',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      const after = await commitScenes(store, state, 2);
      await store.recordPublication({
        storyId: 's1',
        sceneId: after.sceneId!,
        target: 'site',
        status: 'done',
        result: {},
      });
      const lines = await collect(store.exportStory('s1'));
      /** A line of the export, with the fields the edits below touch (each only on its own kind of line). */
      type ExportRecord = {
        kind: string;
        scene: { id: string; index: number };
        entry: { status: string };
        counts: Record<string, number>;
      };
      const records: ExportRecord[] = lines.map((line) => JSON.parse(line));
      /** The export with the first record of `kind` written twice, `edit`ed (the end marker counts it). */
      const repeated = (kind: string, edit: (record: ExportRecord) => void = () => {}) => {
        const copy = structuredClone(records);
        const at = records.findIndex((record) => record.kind === kind);
        const again = structuredClone(copy[at]!);
        edit(again);
        copy.splice(at + 1, 0, again);
        const counted = {
          snapshot: 'snapshots',
          scene: 'scenes',
          influence: 'influences',
          publication: 'publications',
        };
        const key = counted[kind as keyof typeof counted];
        if (key) copy.at(-1)!.counts[key]! += 1;
        return copy.map((record) => JSON.stringify(record));
      };
      const target = await create();
      for (const [label, edited] of [
        ['scene id', repeated('scene', (record) => (record.scene.index = 2))],
        ['scene index', repeated('scene', (record) => (record.scene.id = 'other'))],
        ['influence id', repeated('influence')],
        ['log entry (scene and target)', repeated('publication', (record) => (record.entry.status = 'failed'))],
        ['snapshot version', repeated('snapshot')],
        ['state record', repeated('state')],
      ] as const) {
        const error = await rejectsWith(
          target.importStory(edited),
          ValidationError.isInstance,
          `ValidationError for a repeated ${label}`,
        );
        assert.match((error as Error).message, /line \d+/, `the error names the line of the repeated ${label}`);
        assert.equal(await target.exists('s1'), false);
      }
    },
  },
  {
    name: 'an export whose versions no store could have written is refused and writes nothing: a version past the scene count, a snapshot past the state or differing from it, a scene that made another version, a state naming another scene than the one that made it',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      await commitScenes(store, state, 3);
      const lines = await collect(store.exportStory('s1'));
      /** A line of the export, with the fields the edits below touch (each only on its own kind of line). */
      type ExportRecord = {
        kind: string;
        state: StoryState;
        scene: { index: number; stateVersion: number };
        counts: Record<string, number>;
      };
      const records: ExportRecord[] = lines.map((line) => JSON.parse(line));
      /** The export with its records `edit`ed, the end marker counting the snapshots left. */
      const edited = (edit: (records: ExportRecord[]) => ExportRecord[]) => {
        const copy = edit(structuredClone(records));
        copy.at(-1)!.counts.snapshots = copy.filter((record) => record.kind === 'snapshot').length;
        return copy.map((record) => JSON.stringify(record));
      };
      /** The export with the states of `versions` (the current one is `'state'`) changed by `change`. */
      const states = (versions: ReadonlyArray<number | 'state'>, change: Partial<StoryState>) =>
        edited((all) =>
          all.map((r) =>
            (r.kind === 'state' && versions.includes('state')) ||
            (r.kind === 'snapshot' && versions.includes(r.state.version))
              ? { ...r, state: { ...r.state, ...change } }
              : r,
          ),
        );
      /** A story with no scene and no snapshot, its state at `version`: export and fork read every version below. */
      const bare = (version: number) => [
        JSON.stringify({ kind: 'storyloom-export', formatVersion: 1, storyId: 's1' }),
        JSON.stringify({ kind: 'state', state: { ...makeStoryState('s1'), version } }),
        JSON.stringify({ kind: 'end', counts: { snapshots: 0, scenes: 0, influences: 0, publications: 0 } }),
      ];
      const target = await create();
      for (const [label, refused] of [
        ['a state at version 3,000,000 with no scene and no snapshot', bare(3_000_000)],
        ['a state at version 2^53 - 1 with no scene and no snapshot', bare(Number.MAX_SAFE_INTEGER)],
        ['a state whose version is past its scene count', states(['state'], { version: 5 })],
        // A fork taken at a snapshot starts from it: its next commit would land past a gap, or never be accepted.
        ['a snapshot counting more scenes than its version', states([1], { sceneCount: 7 })],
        ['a snapshot counting fewer scenes than its version', states([2], { sceneCount: 1 })],
        ['a snapshot naming another scene than the one that made it', states([1], { sceneId: 'elsewhere' })],
        ['a snapshot naming an earlier scene', states([2], { sceneId: 's1-s0' })],
        ['the snapshot of version 0 naming a scene', states([0], { sceneId: 's1-s0' })],
        ['a state (and its snapshot) naming another scene than its last', states(['state', 3], { sceneId: 's1-s1' })],
        [
          'a scene that made another version',
          edited((all) =>
            all.map((r) =>
              r.kind === 'scene' && r.scene.index === 1
                ? { ...r, scene: { ...r.scene, stateVersion: Number.MAX_SAFE_INTEGER } }
                : r,
            ),
          ),
        ],
        [
          "a snapshot past the state's version",
          edited((all) => {
            const last = all.findLastIndex((r) => r.kind === 'snapshot');
            const past = { ...all[last]!, state: { ...all[last]!.state, version: 4, sceneCount: 4 } };
            return [...all.slice(0, last + 1), past, ...all.slice(last + 1)];
          }),
        ],
        [
          // getStateAt, a replayed commit and a fork read the snapshot; load reads the state.
          "the snapshot of the state's version telling another story than the state",
          edited((all) =>
            all.map((r) =>
              r.kind === 'snapshot' && r.state.version === 3
                ? { ...r, state: { ...r.state, bible: { ...r.state.bible, title: 'Another tale' } } }
                : r,
            ),
          ),
        ],
      ] as const) {
        await rejectsWith(target.importStory(refused), ValidationError.isInstance, `ValidationError for ${label}`);
        assert.equal(await target.exists('s1'), false, `nothing written for ${label}`);
      }
      // The export as written still imports: each refusal above is its edit's.
      await target.importStory(lines);
      assert.deepEqual(await collect(target.exportStory('s1')), lines);
    },
  },
  {
    name: 'an imported influence is kept as the store keeps its own: its time in UTC, an outcome the scenes agree with',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      const scene = makeNextScene(state, { influencesApplied: ['inf-a'] });
      await store.commitScene('s1', {
        expectedVersion: 0,
        scene,
        nextState: makeNextState(state, scene),
        consumedInfluenceIds: ['inf-a'],
      });
      const lines = await collect(store.exportStory('s1'));
      // 05:00 at +05:00 is midnight UTC: before an influence received at 01:00 UTC, as the queue must say.
      const target = await create();
      await target.importStory(
        withRecords(lines, 'influence', [
          exportedInfluence('s1', 'z-imported', { receivedAt: '2026-01-01T05:00:00+05:00' }),
        ]),
      );
      await target.enqueueInfluence(makeInfluence('s1', 'a-later', { receivedAt: '2026-01-01T01:00:00Z' }));
      assert.deepEqual(
        (await target.pendingInfluences('s1')).map((i) => [i.id, i.receivedAt]),
        [
          ['z-imported', '2026-01-01T00:00:00.000Z'],
          ['a-later', '2026-01-01T01:00:00.000Z'],
        ],
      );
      type InfluenceRecord = { influence: Record<string, unknown> };
      const refused: Array<[string, string[]]> = [
        [
          'a time that leaves years 0000-9999 once in UTC',
          withRecords(lines, 'influence', [
            exportedInfluence('s1', 'far', { receivedAt: '9999-12-31T23:30:00-02:00' }),
          ]),
        ],
        [
          'a rejected influence without a reason',
          editRecords<InfluenceRecord>(lines, 'influence', (r) => Object.assign(r.influence, { status: 'rejected' })),
        ],
        [
          'an influence applied in no scene',
          editRecords<InfluenceRecord>(lines, 'influence', (r) => Object.assign(r.influence, { resolvedIn: null })),
        ],
        [
          'a pending influence resolved in a scene',
          editRecords<InfluenceRecord>(lines, 'influence', (r) => Object.assign(r.influence, { status: 'pending' })),
        ],
      ];
      for (const [label, edited] of refused) {
        const other = await create();
        await rejectsWith(other.importStory(edited), ValidationError.isInstance, `ValidationError for ${label}`);
        assert.equal(await other.exists('s1'), false, `nothing written for ${label}`);
      }
      // Rejected in a scene of the story, with a reason, it imports: each refusal above is its edit's.
      const rejected = editRecords<InfluenceRecord>(lines, 'influence', (r) =>
        Object.assign(r.influence, { status: 'rejected', reason: 'off-topic' }),
      );
      await (await create()).importStory(rejected);
      // Resolved in a scene the file does not hold (committed past an earlier version's export cut), it is pending
      // again, as the export cut leaves one: the scene that took it is not in the story.
      const pastCut = await create();
      await pastCut.importStory(
        editRecords<InfluenceRecord>(lines, 'influence', (r) =>
          Object.assign(r.influence, { status: 'rejected', reason: 'off-topic', resolvedIn: 'no-such' }),
        ),
      );
      const [pending] = await pastCut.pendingInfluences('s1');
      assert.deepEqual(
        [pending?.id, pending?.status, pending?.resolvedIn, pending?.reason],
        ['inf-a', 'pending', null, null],
      );
    },
  },
  {
    name: 'an imported log entry is held to what recordPublication accepts, and keeps only its known fields',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      const sceneId = (await commitScenes(store, state, 1)).sceneId!;
      const lines = await collect(store.exportStory('s1'));
      const entry = { storyId: 's1', sceneId, target: 'site', status: 'done', result: {}, recordedAt: fixtureTime(1) };
      const refused: Array<[string, Record<string, unknown>]> = [
        ['an empty target', { target: '' }],
        ['a target with a space', { target: 'bad target!' }],
        ['a target of 100,000 characters', { target: 'x'.repeat(100_000) }],
        // Backends order text apart past ASCII (code units in memory, UTF-8 bytes in SQLite and DynamoDB).
        ['a target outside ASCII', { target: 'caf\u00e9' }],
        ['a result of 200 KB', { result: { blob: 'x'.repeat(200_000) } }],
        ['recordedAt that is no time', { recordedAt: 'yesterday' }],
        ['a status no step ends with', { status: 'pending' }],
        ['an entry that is no object', { entry: 'site' }],
      ];
      for (const [label, change] of refused) {
        const other = await create();
        const value = 'entry' in change ? change.entry : { ...entry, ...change };
        const error = await rejectsWith(
          other.importStory(withRecords(lines, 'publication', [value])),
          ValidationError.isInstance,
          `ValidationError for ${label}`,
        );
        assert.match((error as Error).message, /line \d+/, `the error names the line of ${label}`);
        assert.equal(await other.exists('s1'), false, `nothing written for ${label}`);
      }
      const target = await create();
      await target.importStory(withRecords(lines, 'publication', [{ ...entry, secret: 'kept nowhere' }]));
      const [stored] = await target.listPublications('s1', sceneId);
      assert.deepEqual(stored, entry);
      const again = await collect(target.exportStory('s1'));
      assert.deepEqual(again, withRecords(lines, 'publication', [entry]));
      // What earlier storyloom versions stored and exported still imports, in today's form: a time without an offset
      // (taken in UTC) and a result that is JSON but no object (kept as { value }).
      const legacy = await create();
      await legacy.importStory(
        withRecords(lines, 'publication', [{ ...entry, result: ['posted'], recordedAt: '2026-11-27T10:00:00' }]),
      );
      await legacy.importStory(
        withRecords(
          lines.map((line) => line.replaceAll('"s1"', '"s2"')),
          'publication',
          [{ ...entry, storyId: 's2', result: 'posted', recordedAt: '2026-11-27 10:00:00Z' }],
        ),
      );
      assert.deepEqual(
        (await legacy.listPublications('s1', sceneId)).map((e) => [e.result, e.recordedAt]),
        [[{ value: ['posted'] }, '2026-11-27T10:00:00.000Z']],
      );
      assert.deepEqual(
        (await legacy.listPublications('s2', sceneId)).map((e) => [e.result, e.recordedAt]),
        [[{ value: 'posted' }, '2026-11-27T10:00:00.000Z']],
      );
      // Another form is taken when it names its zone; without one it would be read in the machine's, and is refused.
      await legacy.importStory(
        withRecords(
          lines.map((line) => line.replaceAll('"s1"', '"s3"')),
          'publication',
          [{ ...entry, storyId: 's3', recordedAt: 'Fri, 27 Nov 2026 10:00:00 GMT' }],
        ),
      );
      assert.deepEqual(
        (await legacy.listPublications('s3', sceneId)).map((e) => e.recordedAt),
        ['2026-11-27T10:00:00.000Z'],
      );
      await rejectsWith(
        legacy.importStory(
          withRecords(
            lines.map((line) => line.replaceAll('"s1"', '"s4"')),
            'publication',
            [{ ...entry, storyId: 's4', recordedAt: '11/27/2026, 10:00:00 AM' }],
          ),
        ),
        ValidationError.isInstance,
        'ValidationError for a time in no zone that is not ISO 8601',
      );
    },
  },
  {
    name: 'a story imported without the snapshots of its scenes: replaying a commit is a typed error and writes nothing',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      const scene = makeNextScene(state);
      const commit = { expectedVersion: 0, scene, nextState: makeNextState(state, scene), consumedInfluenceIds: [] };
      await store.commitScene('s1', commit);
      await commitScenes(store, await store.load('s1'), 1);
      // An export skips the snapshots a story lacks, and an import accepts one that lacks some.
      const records = (await collect(store.exportStory('s1'))).map((line) => JSON.parse(line));
      const kept = records.filter((record) => record.kind !== 'snapshot' || record.state.version === 0);
      kept.at(-1).counts.snapshots = 1;
      const target = await create();
      await target.importStory(kept.map((record) => JSON.stringify(record)));
      assert.equal(await target.getStateAt('s1', 1), null);
      const before = await collect(target.exportStory('s1'));
      // The scene is stored, so the commit is a replay, whose answer would be the state the scene made.
      const error = await rejectsWith(target.commitScene('s1', commit), StoryloomError.isInstance, 'a storyloom error');
      assert.ok(!(error instanceof TypeError), String(error));
      assert.deepEqual(await collect(target.exportStory('s1')), before);
      // A fork there would start from an older state than its scenes: refused, as the replay is, and nothing written.
      await rejectsWith(
        target.fork('s1', 0, 'branch'),
        NotFoundError.isInstance,
        'NotFoundError for a fork at a scene whose state is missing',
      );
      assert.equal(await target.exists('branch'), false);
    },
  },
  {
    name: 'a truncated or tampered export is rejected with its line and writes nothing',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      await commitScenes(store, state, 3);
      const lines = await collect(store.exportStory('s1'));
      const target = await create();
      await rejectsWith(
        target.importStory(lines.slice(0, -1)),
        ValidationError.isInstance,
        'ValidationError (truncated)',
      );
      const tampered = lines.map((line) => {
        const record = JSON.parse(line);
        if (record.kind === 'scene' && record.scene.index === 1) record.scene.importance = 7;
        return JSON.stringify(record);
      });
      const error = await rejectsWith(
        target.importStory(tampered),
        ValidationError.isInstance,
        'ValidationError (tampered)',
      );
      assert.match((error as Error).message, /line \d+/);
      await rejectsWith(target.importStory(['not json']), ValidationError.isInstance, 'ValidationError (not JSON)');
      await rejectsWith(
        target.importStory(lines.filter((line) => !line.includes('"index":1,'))),
        ValidationError.isInstance,
        'ValidationError (a scene missing)',
      );
      assert.equal(await target.exists('s1'), false);
    },
  },
  {
    name: 'an export that lost a line its end marker counts, or has a record after the end marker, is refused and writes nothing',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-a'));
      await store.enqueueInfluence(makeInfluence('s1', 'inf-b'));
      const sceneId = (await commitScenes(store, state, 2)).sceneId!;
      await store.recordPublication({ storyId: 's1', sceneId, target: 'site', status: 'done', result: {} });
      const lines = await collect(store.exportStory('s1'));
      /** The export without its first line of `kind`: nothing but the end marker's count tells it is gone. */
      const without = (kind: string) => {
        const at = lines.findIndex((line) => JSON.parse(line).kind === kind);
        return lines.filter((_, index) => index !== at);
      };
      const influence = lines.find((line) => JSON.parse(line).kind === 'influence')!;
      const target = await create();
      for (const [label, refused] of [
        ['an influence line lost', without('influence')],
        ['a log entry lost', without('publication')],
        ['an older snapshot lost', without('snapshot')],
        ['an influence after the end marker', [...lines, influence.replaceAll('"inf-a"', '"inf-late"')]],
      ] as const) {
        const error = await rejectsWith(
          target.importStory(refused),
          ValidationError.isInstance,
          `ValidationError for ${label}`,
        );
        assert.match((error as Error).message, /line \d+/, `the error names the line of ${label}`);
        assert.equal(await target.exists('s1'), false, `nothing written for ${label}`);
      }
      await target.importStory(lines);
      assert.deepEqual(await collect(target.exportStory('s1')), lines);
    },
  },
  {
    name: 'returned values are copies: mutating them does not change the store',
    async run(store) {
      const state = await store.create(makeStoryState('s1'));
      state.worldState.season = 'mutated';
      const loaded = await store.load('s1');
      loaded.characters.mira!.name = 'Mutated';
      loaded.plotThreads.push({ ...loaded.plotThreads[0]!, id: 'extra' });
      const again = await store.load('s1');
      assert.equal(again.worldState.season, 'autumn');
      assert.equal(again.characters.mira!.name, 'Mira Vale');
      assert.equal(again.plotThreads.length, 1);
    },
  },
  {
    name: 'stories are isolated from each other',
    async run(store) {
      const a = await store.create(makeStoryState('a'));
      await store.create(makeStoryState('b'));
      await commitScenes(store, a, 2);
      await store.enqueueInfluence(makeInfluence('a', 'tx'));
      assert.equal((await store.load('b')).version, 0);
      assert.deepEqual((await store.listScenes('b')).items, []);
      assert.deepEqual(await store.pendingInfluences('b'), []);
      assert.equal(await store.getInfluence('b', 'tx'), null, "getInfluence does not find another story's influence");
      assert.equal((await store.enqueueInfluence(makeInfluence('b', 'tx'))).inserted, true);
      assert.equal((await store.getInfluence('a', 'tx'))?.storyId, 'a');
      assert.equal((await store.getInfluence('b', 'tx'))?.storyId, 'b');
    },
  },
];

/**
 * Runs the `StoryStateStore` conformance suite against an adapter. Returns the number of cases.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest';
 * import { createMemoryStateStore } from 'storyloom';
 * import { runStoryStateStoreSuite } from 'storyloom/testing';
 * runStoryStateStoreSuite({ describe, it }, { name: 'memory', create: () => createMemoryStateStore() });
 * ```
 */
export function runStoryStateStoreSuite(api: SuiteTestApi, options: SuiteOptions<StoryStateStore>): number {
  return registerSuite(api, 'StoryStateStore conformance', storyStateStoreCases, {
    destroy: (store) => store.close(),
    ...options,
  });
}
