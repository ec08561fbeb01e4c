import { describe, expect, it } from 'vitest';
import { ClosedError, StoryloomError, ValidationError } from '../core/errors.js';
import { LIMITS } from '../state/schema.js';
import { makeInfluence } from '../testing/fixtures.js';
import { createMemoryInfluenceSource } from './memory.js';

describe('createMemoryInfluenceSource', () => {
  it('delivers pushed influences until they are acknowledged, per story', async () => {
    const source = createMemoryInfluenceSource();
    expect(source.push(makeInfluence('a', 'v1'))).toBe(true);
    expect(source.push(makeInfluence('a', 'v1', { text: 'again' }))).toBe(false);
    source.push(makeInfluence('b', 'v2'));
    expect((await source.pull('a')).map((i) => i.id)).toEqual(['v1']);
    expect((await source.pull('a')).map((i) => i.id)).toEqual(['v1']);
    await source.acknowledge('a', ['v1']);
    expect(await source.pull('a')).toEqual([]);
    expect(source.size('b')).toBe(1);
  });

  it('returns copies, so a caller cannot change what is queued', async () => {
    const source = createMemoryInfluenceSource();
    source.push(makeInfluence('a', 'v1', { text: 'north' }));
    const [pulled] = await source.pull('a');
    pulled!.text = 'changed';
    expect((await source.pull('a'))[0]!.text).toBe('north');
  });

  it('honours an aborted signal', async () => {
    const source = createMemoryInfluenceSource();
    const controller = new AbortController();
    controller.abort();
    await expect(source.pull('a', { signal: controller.signal })).rejects.toMatchObject({ code: 'ABORTED' });
  });

  it('refuses a malformed or oversized influence with a ValidationError, queueing nothing', () => {
    const source = createMemoryInfluenceSource();
    for (const bad of [
      null,
      'vote',
      { ...makeInfluence('a', 'v1'), kind: 'bribe' },
      makeInfluence('a', 'v1', { text: 'x'.repeat(5_000_000) }),
    ]) {
      let thrown: unknown;
      try {
        source.push(bad as never);
      } catch (error) {
        thrown = error;
      }
      expect(ValidationError.isInstance(thrown), String(thrown)).toBe(true);
      expect((thrown as ValidationError).message.length).toBeLessThan(1_000);
    }
    expect(source.size('a')).toBe(0);
  });

  it('queues a copy: changing the pushed object afterwards changes nothing queued', async () => {
    const source = createMemoryInfluenceSource();
    const influence = makeInfluence('a', 'v1', { text: 'north' });
    source.push(influence);
    influence.text = 'changed';
    expect((await source.pull('a'))[0]!.text).toBe('north');
  });

  it('bounds each story queue at maxQueuedPerStory; a full queue refuses with QUEUE_FULL until acknowledged', async () => {
    const source = createMemoryInfluenceSource({ maxQueuedPerStory: 2 });
    expect(source.push(makeInfluence('a', 'v1'))).toBe(true);
    expect(source.push(makeInfluence('a', 'v2'))).toBe(true);
    expect(() => source.push(makeInfluence('a', 'v3'))).toThrow(
      expect.objectContaining({ code: 'QUEUE_FULL', isRetryable: true }),
    );
    // A duplicate of a queued id is still a plain false, and other stories have their own room.
    expect(source.push(makeInfluence('a', 'v1'))).toBe(false);
    expect(source.push(makeInfluence('b', 'v1'))).toBe(true);
    expect(source.size('a')).toBe(2);
    await source.acknowledge('a', ['v1']);
    expect(source.push(makeInfluence('a', 'v3'))).toBe(true);
    expect((await source.pull('a')).map((i) => i.id)).toEqual(['v2', 'v3']);
  });

  it('holds LIMITS.influenceQueue influences per story by default, and checks its options', () => {
    const source = createMemoryInfluenceSource();
    for (let index = 0; index < LIMITS.influenceQueue; index++) source.push(makeInfluence('a', `v${index}`));
    let thrown: unknown;
    try {
      source.push(makeInfluence('a', 'one-more'));
    } catch (error) {
      thrown = error;
    }
    expect(StoryloomError.isInstance(thrown) && thrown.code).toBe('QUEUE_FULL');
    expect(source.size('a')).toBe(LIMITS.influenceQueue);
    for (const maxQueuedPerStory of [0, 1.5, -1, Number.NaN]) {
      expect(() => createMemoryInfluenceSource({ maxQueuedPerStory })).toThrow(ValidationError);
    }
  });

  it('refuses push after close() with a ClosedError', async () => {
    const source = createMemoryInfluenceSource();
    source.push(makeInfluence('a', 'v1'));
    await source.close();
    expect(() => source.push(makeInfluence('a', 'v2'))).toThrow(ClosedError);
    expect(source.size('a')).toBe(0);
    expect(await source.pull('a')).toEqual([]);
  });
});
