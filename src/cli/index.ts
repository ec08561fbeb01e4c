#!/usr/bin/env node
/**
 * The `storyloom` bin.
 *
 * @module
 */
import { createProgram } from './program.js';

// A reader that closes early (`storyloom context | head`) is not a failure: stop writing and exit quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});
const program = createProgram({ stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() });
process.exitCode = await program.run(process.argv.slice(2));
