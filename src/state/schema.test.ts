import { describe, expect, it } from 'vitest';
import { ValidationError } from '../core/errors.js';
import { validateEpisode } from '../publishing/publisher.js';
import { makeNextScene, makeNextState, makeStoryState } from '../testing/fixtures.js';
import { bundleSnapshot, type StoryBundle } from './base-store.js';
import { createMemoryStateStore } from './memory.js';
import {
  domainJsonSchemas,
  IsoTimeSchema,
  SceneSchema,
  StoryStateSchema,
  UserInfluenceSchema,
  WorldValueSchema,
} from './schema.js';

describe('domain schemas', () => {
  it('rejects a deeply nested world value without overflowing the stack', () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const result = WorldValueSchema.safeParse(deep);
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toMatch(/nests deeper/);
  });

  it('rejects world values that are not JSON or too large', () => {
    expect(WorldValueSchema.safeParse(new Date()).success).toBe(false);
    expect(WorldValueSchema.safeParse(Number.NaN).success).toBe(false);
    expect(WorldValueSchema.safeParse('x'.repeat(5_000)).success).toBe(false);
    expect(WorldValueSchema.safeParse({ door: ['open', 3, null, { lock: true }] }).success).toBe(true);
  });

  it('refuses a state whose character key differs from its id, or with duplicate thread ids', () => {
    const state = makeStoryState('tale');
    const renamed = { ...state, characters: { ...state.characters, other: { ...state.characters.mira!, id: 'mira' } } };
    expect(StoryStateSchema.safeParse(renamed).success).toBe(false);
    const twice = { ...state, plotThreads: [state.plotThreads[0]!, state.plotThreads[0]!] };
    expect(StoryStateSchema.safeParse(twice).success).toBe(false);
    expect(StoryStateSchema.safeParse(state).success).toBe(true);
  });

  it('bounds an influence text and refuses an id that could be a path', () => {
    const base = {
      id: 'sig-1',
      storyId: 'tale',
      source: 'web',
      author: 'ana',
      kind: 'suggestion',
      receivedAt: '2026-01-01T00:00:00.000Z',
    };
    expect(UserInfluenceSchema.safeParse(base).success).toBe(true);
    expect(UserInfluenceSchema.safeParse({ ...base, text: 'x'.repeat(1_001) }).success).toBe(false);
    expect(UserInfluenceSchema.safeParse({ ...base, id: '../../etc' }).success).toBe(false);
  });

  it('exports a JSON Schema for every domain type', () => {
    const schemas = domainJsonSchemas();
    expect(Object.keys(schemas).sort()).toEqual(
      [
        'CharacterState',
        'PlotThread',
        'Relationship',
        'Scene',
        'StateDelta',
        'StoryState',
        'UserInfluence',
        'VectorRecord',
      ].sort(),
    );
    const scene = schemas.Scene as { type: string; required: string[] };
    expect(scene.type).toBe('object');
    expect(scene.required).toContain('text');
  });
});

describe('times outside years 0000-9999 in UTC', () => {
  // Both are years 0000-9999 as written, and leave them once moved to UTC (+010000-01-01T11:59:59Z, -000001-12-31T23:00Z).
  const PAST_9999 = '9999-12-31T23:59:59-12:00';
  const BEFORE_0000 = '0000-01-01T00:00:00+01:00';

  /** The ValidationError `action` fails with, or a failure when it resolves or fails otherwise. */
  async function refusal(action: () => Promise<unknown>): Promise<ValidationError> {
    const error = await action().then(
      () => undefined,
      (failure: unknown) => failure,
    );
    if (!ValidationError.isInstance(error)) throw new Error(`expected a ValidationError, got ${String(error)}`);
    return error;
  }

  it('are read by the schemas, so a story stored with one stays readable', () => {
    const state = makeStoryState('tale', { updatedAt: PAST_9999 });
    expect(IsoTimeSchema.safeParse(PAST_9999).success).toBe(true);
    expect(StoryStateSchema.safeParse(state).success).toBe(true);
    expect(SceneSchema.safeParse(makeNextScene(state, { createdAt: BEFORE_0000 })).success).toBe(true);
  });

  it('are refused for a new story, naming the field', async () => {
    const store = createMemoryStateStore();
    const error = await refusal(() => store.create(makeStoryState('tale', { createdAt: BEFORE_0000 })));
    expect(error.problems).toEqual([
      { path: 'state.createdAt', message: `${BEFORE_0000} is outside years 0000-9999 in UTC` },
    ]);
    expect(await store.exists('tale')).toBe(false);
    // The last instant of year 9999 and the first of year 0000, in UTC, are in.
    const edge = await store.create(
      makeStoryState('tale', { createdAt: '0000-01-01T00:00:00Z', updatedAt: '9999-12-31T23:59:59+00:00' }),
    );
    expect(edge.updatedAt).toBe('9999-12-31T23:59:59+00:00');
  });

  it("are refused in a new story's updatedAt too, naming the field", async () => {
    const store = createMemoryStateStore();
    const error = await refusal(() => store.create(makeStoryState('tale', { updatedAt: PAST_9999 })));
    expect(error.problems).toEqual([
      { path: 'state.updatedAt', message: `${PAST_9999} is outside years 0000-9999 in UTC` },
    ]);
    expect(await store.exists('tale')).toBe(false);
  });

  it('are refused for a committed scene and the state it leaves, naming each field, and nothing is written', async () => {
    const store = createMemoryStateStore();
    const state = await store.create(makeStoryState('tale'));
    const scene = makeNextScene(state, { createdAt: PAST_9999 });
    const error = await refusal(() =>
      store.commitScene('tale', {
        expectedVersion: state.version,
        scene,
        nextState: makeNextState(state, scene, { updatedAt: BEFORE_0000 }),
        consumedInfluenceIds: [],
      }),
    );
    expect(error.problems).toEqual([
      { path: 'scene.createdAt', message: `${PAST_9999} is outside years 0000-9999 in UTC` },
      { path: 'nextState.updatedAt', message: `${BEFORE_0000} is outside years 0000-9999 in UTC` },
    ]);
    expect(error.message).toContain('scene.createdAt');
    expect((await store.load('tale')).version).toBe(0);
    expect(await store.getScene('tale', scene.id)).toBeNull();
  });

  it('leave a story stored with one before they were refused able to take scenes and publish them', async () => {
    const store = createMemoryStateStore();
    const stored = makeStoryState('tale', { createdAt: PAST_9999 });
    // What an earlier storyloom stored: create had no time check then.
    await (store as unknown as { insertStory(bundle: StoryBundle): Promise<void> }).insertStory({
      state: stored,
      snapshots: [bundleSnapshot(stored)],
      scenes: [],
      influences: [],
      publications: [],
    });
    const state = await store.load('tale');
    expect(state.createdAt).toBe(PAST_9999);
    const scene = makeNextScene(state);
    const committed = await store.commitScene('tale', {
      expectedVersion: state.version,
      scene,
      nextState: makeNextState(state, scene),
      consumedInfluenceIds: [],
    });
    expect(committed.state.version).toBe(1);
    // Publishers write the scene's time and the story's last update, never its creation.
    expect(validateEpisode({ story: committed.state, scene }).scene.id).toBe(scene.id);
  });

  it('are refused in an imported story, naming the scene or state, and nothing is written', async () => {
    const source = createMemoryStateStore();
    const state = await source.create(makeStoryState('tale'));
    const scene = makeNextScene(state);
    await source.commitScene('tale', {
      expectedVersion: state.version,
      scene,
      nextState: makeNextState(state, scene),
      consumedInfluenceIds: [],
    });
    const lines: string[] = [];
    for await (const line of source.exportStory('tale')) lines.push(line);
    const edited = (
      edit: (record: {
        kind: string;
        scene?: { createdAt: string };
        state?: { createdAt: string; version: number };
      }) => void,
    ) =>
      lines.map((line) => {
        const record = JSON.parse(line);
        edit(record);
        return JSON.stringify(record);
      });

    const target = createMemoryStateStore();
    const late = await refusal(() =>
      target.importStory(
        edited((record) => {
          if (record.kind === 'scene') record.scene!.createdAt = PAST_9999;
        }),
      ),
    );
    expect(late.problems).toEqual([
      { path: 'scene 0.createdAt', message: `${PAST_9999} is outside years 0000-9999 in UTC` },
    ]);
    // The story's creation time, in the state and in every snapshot alike (the newest snapshot must be the state):
    // refused at the first snapshot that holds it.
    const early = await refusal(() =>
      target.importStory(
        edited((record) => {
          if (record.kind === 'state' || record.kind === 'snapshot') record.state!.createdAt = BEFORE_0000;
        }),
      ),
    );
    expect(early.problems).toHaveLength(1);
    expect(early.problems[0]!.message).toBe(`snapshot.createdAt: ${BEFORE_0000} is outside years 0000-9999 in UTC`);
    // An older snapshot alone, which the state does not repeat, is refused too.
    const older = await refusal(() =>
      target.importStory(
        edited((record) => {
          if (record.kind === 'snapshot' && record.state!.version === 0) record.state!.createdAt = PAST_9999;
        }),
      ),
    );
    expect(older.problems[0]!.message).toBe(`snapshot.createdAt: ${PAST_9999} is outside years 0000-9999 in UTC`);
    expect(await target.exists('tale')).toBe(false);
    // The export as it was imports.
    await target.importStory(lines);
    expect((await target.load('tale')).sceneCount).toBe(1);
  });
});
