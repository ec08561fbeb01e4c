/**
 * Fault injection, in process: the pipeline is crashed by a thrown error before and after every port call it makes
 * (store, context, generator, images, publishers, publication log), at several episodes, and then run again. The
 * final store export (state, snapshots, scenes, influences, publication log), the published site and the index
 * must be identical to an uninterrupted run: no duplicate scene or publication, no influence lost or applied twice.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createMemoryPublisher, type MemoryPublisher } from '../src/publishing/memory.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { StoryStateStore } from '../src/state/store.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { driveEpisodes } from './fixtures/engine-drive.js';
import {
  allFaults,
  buildWorld,
  type Fault,
  InjectedCrash,
  influencesFor,
  initialState,
  STORY_ID,
} from './fixtures/engine-world.js';

const EPISODES = 6;
/** Episodes at which the fault is armed: the first scene, a chapter end (index 3) and a middle one. */
const FAULT_EPISODES = [0, 3, 4];
const TARGETS = ['site', 'feed'];

/**
 * Thrown errors that the engine handles by design rather than as crashes, so their outcome legitimately differs
 * from an uninterrupted run; each has its own test below. (A SIGKILL at these points is in engine-sigkill.test.ts.)
 */
const HANDLED_BY_DESIGN: Record<string, string> = {
  'source.pull': 'a failing influence source is an outage: the episode goes on and its influences count later',
  'context.refreshCache': 'a cache failure is recorded as skipped and never blocks the episode',
};

interface Snapshot {
  exported: string[];
  site: Array<{ target: string; key: string; sceneId: string; imageBytes: number }>;
  requests: number[];
  indexed: string[];
}

async function exportLines(store: StoryStateStore): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of store.exportStory(STORY_ID)) lines.push(line);
  return lines;
}

async function runWorld(faultAt: Fault | undefined, keyed: boolean): Promise<Snapshot & { crashes: number }> {
  const clock = new ManualClock();
  const store = createMemoryStateStore({ clock });
  await store.create(initialState());
  const publishers = TARGETS.map((target) => createMemoryPublisher({ target }));
  const world = buildWorld({
    store,
    publishers,
    clock,
    fire: (fault) => {
      throw new InjectedCrash(fault);
    },
  });
  const faults = new Map(faultAt ? FAULT_EPISODES.map((episode) => [episode, faultAt] as const) : []);
  await driveEpisodes(world, EPISODES, { keyed, faults });
  return {
    crashes: world.faults.fired,
    exported: await exportLines(store),
    site: publishers.flatMap((publisher: MemoryPublisher) =>
      [...publisher.publications.values()].map((publication) => ({
        target: publisher.target,
        key: publication.key,
        sceneId: publication.scene.id,
        imageBytes: publication.imageBytes,
      })),
    ),
    requests: publishers.flatMap((publisher) => [...publisher.publications.values()].map((p) => p.requests)),
    indexed: [...new Set(world.indexed)],
  };
}

function influenceRecords(exported: string[]) {
  return exported
    .map((line) => JSON.parse(line))
    .filter((record) => record.kind === 'influence')
    .map(
      (record) => record.influence as { id: string; status: string; reason: string | null; resolvedIn: string | null },
    );
}

for (const keyed of [false, true]) {
  describe(`engine fault injection: thrown errors (${keyed ? 'with' : 'without'} idempotency keys)`, () => {
    let reference: Snapshot;
    beforeAll(async () => {
      reference = await runWorld(undefined, keyed);
    });

    it('the uninterrupted reference run is itself sound', () => {
      const records = reference.exported.map((line) => JSON.parse(line));
      const scenes = records.filter((record) => record.kind === 'scene').map((record) => record.scene);
      expect(scenes.map((scene) => scene.index)).toEqual([...Array(EPISODES).keys()]);
      expect(reference.site).toHaveLength(EPISODES * TARGETS.length);
      expect(reference.requests.every((count) => count === 1)).toBe(true);
      const influences = influenceRecords(reference.exported);
      const expectedIds = [...Array(EPISODES).keys()].flatMap((episode) => influencesFor(episode).map((i) => i.id));
      expect(influences.map((influence) => influence.id).sort()).toEqual(expectedIds.sort());
      for (const influence of influences) {
        expect(['applied', 'rejected']).toContain(influence.status);
        if (influence.status === 'rejected') expect(influence.reason).toBeTruthy();
      }
      const applied = scenes.flatMap((scene) => scene.influencesApplied);
      expect(new Set(applied).size).toBe(applied.length);
    });

    for (const fault of allFaults(TARGETS)) {
      const label = `${fault.when} ${fault.point}`;
      const reason =
        HANDLED_BY_DESIGN[fault.point] ??
        (!keyed && (fault.point === 'record:claim' || fault.point === 'record:scene')
          ? 'only a run with an idempotency key records a claim and a scene: without one this fault never fires'
          : undefined);
      const title = `crash ${label}, run again: identical to the uninterrupted run`;
      it.skipIf(reason !== undefined)(reason === undefined ? title : `${title} [skipped: ${reason}]`, async () => {
        const faulty = await runWorld(fault, keyed);
        // The fault must actually have fired, or this test proves nothing.
        expect(faulty.crashes).toBeGreaterThanOrEqual(1);
        expect(faulty.exported).toEqual(reference.exported);
        expect(faulty.site).toEqual(reference.site);
        expect(faulty.indexed).toEqual(reference.indexed);
        // A crash between a publish and its log entry repeats the request, never the publication.
        expect(Math.max(...faulty.requests)).toBeLessThanOrEqual(2);
      });
    }
  });
}

describe('engine faults handled by design', () => {
  it('an influence source outage does not stop the episode, and its influences count in a later one', async () => {
    const clock = new ManualClock();
    const store = createMemoryStateStore({ clock });
    await store.create(initialState());
    const world = buildWorld({
      store,
      publishers: [],
      clock,
      fire: (fault) => {
        throw new InjectedCrash(fault);
      },
    });
    for (const influence of influencesFor(0)) world.source.push(influence);
    world.faults.arm({ point: 'source.pull', when: 'before' });
    const first = await world.engine.runEpisode(STORY_ID);
    expect(first.outcome).toBe('created');
    expect(first.scene.influencesApplied).toEqual([]);
    const second = await world.engine.runEpisode(STORY_ID);
    expect(second.scene.index).toBe(1);
    const ids = influencesFor(0).map((influence) => influence.id);
    for (const id of ids) {
      const stored = await store.getInfluence(STORY_ID, id);
      expect(stored?.status).not.toBe('pending');
      expect(stored?.resolvedIn).toBe(second.scene.id);
    }
  });

  it('a cache refresh failure is recorded as skipped with its reason and blocks nothing', async () => {
    const clock = new ManualClock();
    const store = createMemoryStateStore({ clock });
    await store.create(initialState());
    const publisher = createMemoryPublisher({ target: 'site' });
    const world = buildWorld({
      store,
      publishers: [publisher],
      clock,
      fire: (fault) => {
        throw new InjectedCrash(fault);
      },
    });
    world.faults.arm({ point: 'context.refreshCache', when: 'before' });
    const result = await world.engine.runEpisode(STORY_ID);
    expect(result.complete).toBe(true);
    const cache = (await store.listPublications(STORY_ID, result.scene.id)).find((entry) => entry.target === 'cache');
    expect(cache?.status).toBe('skipped');
    expect(String(cache?.result.reason)).toContain('injected crash');
    expect(publisher.publications.size).toBe(1);
  });
});
