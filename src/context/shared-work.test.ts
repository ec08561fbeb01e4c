import { describe, expect, it } from 'vitest';
import { AbortedError } from '../core/errors.js';
import { SharedWork } from './shared-work.js';

/** Work that settles when told to, and records the signal it ran under. */
function heldWork() {
  let finish: (value: string) => void = () => {};
  let workSignal: AbortSignal | undefined;
  let abandonedCount = 0;
  const work = new SharedWork(
    (signal) => {
      workSignal = signal;
      return new Promise<string>((resolve) => {
        finish = resolve;
      });
    },
    () => abandonedCount++,
  );
  return { work, finish: (value: string) => finish(value), signal: () => workSignal, abandoned: () => abandonedCount };
}

describe('SharedWork', () => {
  it('is abandoned only when the last waiting caller gives up', async () => {
    const held = heldWork();
    const a = new AbortController();
    const b = new AbortController();
    const waitA = held.work.wait(a.signal);
    const waitB = held.work.wait(b.signal);
    a.abort();
    await expect(waitA).rejects.toSatisfy(AbortedError.isInstance);
    expect(held.signal()?.aborted).toBe(false);
    expect(held.abandoned()).toBe(0);
    b.abort();
    await expect(waitB).rejects.toSatisfy(AbortedError.isInstance);
    expect(held.signal()?.aborted).toBe(true);
    expect(held.work.abandoned).toBe(true);
    expect(held.abandoned()).toBe(1);
  });

  it('is never abandoned while a caller without a signal waits', async () => {
    const held = heldWork();
    const a = new AbortController();
    const waitA = held.work.wait(a.signal);
    const waitForever = held.work.wait(undefined);
    a.abort();
    await expect(waitA).rejects.toSatisfy(AbortedError.isInstance);
    held.finish('done');
    await expect(waitForever).resolves.toBe('done');
    expect(held.abandoned()).toBe(0);
  });

  it('counts a caller once: an abort after the work settled does not abandon work another caller joins', async () => {
    const held = heldWork();
    const a = new AbortController();
    const waitA = held.work.wait(a.signal);
    held.finish('done');
    await expect(waitA).resolves.toBe('done');
    a.abort();
    const b = new AbortController();
    const waitB = held.work.wait(b.signal);
    await expect(waitB).resolves.toBe('done');
    expect(held.signal()?.aborted).toBe(false);
    expect(held.abandoned()).toBe(0);
  });

  it('refuses a caller whose signal has already fired, without counting it', async () => {
    const held = heldWork();
    const a = new AbortController();
    a.abort();
    await expect(held.work.wait(a.signal)).rejects.toSatisfy(AbortedError.isInstance);
    expect(held.abandoned()).toBe(0);
    expect(held.signal()?.aborted).toBe(false);
  });
});
