/**
 * Processes on this host. Internal: not exported from the package.
 */

/**
 * Whether process `pid` runs on this host: signal 0 reaches it, or it runs under another user (`EPERM`). Only a
 * process the system says does not exist (`ESRCH`) is gone, so a file it left may be taken for abandoned.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: unknown }).code !== 'ESRCH';
  }
}
