#!/usr/bin/env node
/**
 * The `storyloom` bin.
 *
 * @module
 */
import { createProgram } from './program.js';

const program = createProgram({ stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() });
process.exitCode = await program.run(process.argv.slice(2));
