#!/usr/bin/env node
/**
 * The `storyloom` bin.
 *
 * @module
 */
import { createProgram } from './program.js';

// A reader that closes early (`storyloom run | head`) is not a failure, and exiting at once could cut an episode or a
// state write in half: the command is told, writes nothing more to stdout, and stops where it safely can.
const stdoutClosed = new AbortController();
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') {
    stdoutClosed.abort();
    return;
  }
  throw error;
});
const program = createProgram({
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
  stdoutClosed: stdoutClosed.signal,
});
process.exitCode = await program.run(process.argv.slice(2));
