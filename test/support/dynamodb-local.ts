/**
 * DynamoDB Local for tests. `.ci/run` starts one and exports `DYNAMODB_ENDPOINT`; without it (a developer's
 * `npx vitest run`) this starts one on a free port through `scripts/dynamodb-local.mjs` and stops it afterwards.
 * When it truly cannot start (no Java, no jar), tests skip with the printed reason, except in CI, where they fail.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('../../scripts/dynamodb-local.mjs', import.meta.url));
const START_TIMEOUT_MS = 60_000;

/** A running DynamoDB Local, or the reason there is none. */
export type DynamoLocal =
  | { endpoint: string; skipReason?: undefined; stop: () => Promise<void> }
  | { endpoint?: undefined; skipReason: string; stop: () => Promise<void> };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

function runScript(args: string[], timeout: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [script, ...args], { timeout }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

/** The endpoint of a DynamoDB Local for this test file. */
export async function startDynamoLocal(): Promise<DynamoLocal> {
  const given = process.env.DYNAMODB_ENDPOINT;
  if (given) return { endpoint: given, stop: async () => {} };
  const port = await freePort();
  try {
    const stdout = await runScript(['start', '--port', String(port)], START_TIMEOUT_MS + 5_000);
    const endpoint = /DYNAMODB_ENDPOINT=(\S+)/.exec(stdout)?.[1];
    if (!endpoint) throw new Error(`the start script printed no endpoint: ${stdout}`);
    return { endpoint, stop: () => runScript(['stop', '--port', String(port)], 10_000).then(() => undefined) };
  } catch (error) {
    const reason = `DynamoDB Local could not start: ${(error as Error).message}`;
    if (process.env.CI === 'true') throw new Error(`${reason} (CI must run the DynamoDB tests)`);
    console.warn(`[dynamodb tests skipped] ${reason}`);
    return { skipReason: reason, stop: async () => {} };
  }
}
