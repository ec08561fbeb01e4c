import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { callListener } from './listener.js';

describe('callListener', () => {
  // The runner's own handler is set aside, so a rejection left unhandled is seen by the test.
  let saved: NodeJS.UnhandledRejectionListener[] = [];
  const unhandled: unknown[] = [];
  const record = (reason: unknown) => unhandled.push(reason);
  beforeEach(() => {
    saved = process.listeners('unhandledRejection');
    process.removeAllListeners('unhandledRejection');
    unhandled.length = 0;
    process.on('unhandledRejection', record);
  });
  afterEach(() => {
    process.off('unhandledRejection', record);
    for (const listener of saved) process.on('unhandledRejection', listener);
  });
  const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

  it('passes the value, and hands a throw to onError', () => {
    const seen: number[] = [];
    const errors: unknown[] = [];
    callListener(
      (value: number) => seen.push(value),
      7,
      (error) => errors.push(error),
    );
    callListener(
      () => {
        throw new Error('broken bar');
      },
      8,
      (error) => errors.push(error),
    );
    expect(seen).toEqual([7]);
    expect(errors.map((error) => (error as Error).message)).toEqual(['broken bar']);
  });

  it('hands the rejection of an async listener to onError and leaves nothing unhandled', async () => {
    const errors: unknown[] = [];
    callListener(
      async () => {
        throw new Error('sink down');
      },
      1,
      (error) => errors.push(error),
    );
    callListener(async () => Promise.reject(new Error('ignored')), 2);
    await settle();
    expect(errors.map((error) => (error as Error).message)).toEqual(['sink down']);
    expect(unhandled).toEqual([]);
  });

  it('survives an onError that throws, for a throw and for a rejection', async () => {
    const failing = () => {
      throw new Error('logger down');
    };
    expect(() =>
      callListener(
        () => {
          throw new Error('a');
        },
        1,
        failing,
      ),
    ).not.toThrow();
    callListener(async () => Promise.reject(new Error('b')), 1, failing);
    await settle();
    expect(unhandled).toEqual([]);
  });
});
