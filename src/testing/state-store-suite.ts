/**
 * The conformance suite of the `StoryStateStore` port. Every state store, built in or third-party, runs it.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { ConflictError, NotFoundError, StoryloomError, ValidationError } from '../core/errors.js';
import type { StoryState } from '../state/schema.js';
import type { StoryStateStore } from '../state/store.js';
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
      assert.equal((await store.load('s1')).version, 0);
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
    name: 'an export whose versions no store could have written is refused and writes nothing: a version past the scene count, a snapshot past the state or differing from it, a scene that made another version',
    async run(store, { create }) {
      const state = await store.create(makeStoryState('s1'));
      await commitScenes(store, state, 2);
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
        [
          'a state whose version is past its scene count',
          edited((all) => all.map((r) => (r.kind === 'state' ? { ...r, state: { ...r.state, version: 5 } } : r))),
        ],
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
            const past = { ...all[last]!, state: { ...all[last]!.state, version: 3 } };
            return [...all.slice(0, last + 1), past, ...all.slice(last + 1)];
          }),
        ],
        [
          // getStateAt, a replayed commit and a fork read the snapshot; load reads the state.
          "the snapshot of the state's version telling another story than the state",
          edited((all) =>
            all.map((r) =>
              r.kind === 'snapshot' && r.state.version === 2
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
