/**
 * Runs work with the process's `unhandledRejection` listeners set aside, and returns what was left unhandled during
 * it and a short settling wait after. The test runner's own listener is put back afterwards, so a rejection the work
 * leaves unhandled is seen by the test instead of failing the run somewhere else (or being swallowed).
 *
 * A plain Node.js process ends on an unhandled rejection: a test that promises "nothing is left unhandled" asserts
 * that the returned list is empty.
 */
export async function captureUnhandledRejections<T>(
  work: () => Promise<T>,
  { settleMs = 20 }: { settleMs?: number } = {},
): Promise<{ result: T; unhandled: unknown[] }> {
  const saved = process.listeners('unhandledRejection');
  process.removeAllListeners('unhandledRejection');
  const unhandled: unknown[] = [];
  const record = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', record);
  try {
    const result = await work();
    // A rejection is reported after the microtask queue drains: give it a turn of the event loop to show.
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    return { result, unhandled };
  } finally {
    process.off('unhandledRejection', record);
    for (const listener of saved) process.on('unhandledRejection', listener);
  }
}
