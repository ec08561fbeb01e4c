import { describe, expect, it } from 'vitest';
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
});
