#!/usr/bin/env node
// Starts and stops DynamoDB Local (AWS's own jar) for the tests of `storyloom/dynamodb`.
//
// The jar ships inside the npm package amplify-dynamodb-simulator, so nothing is downloaded from outside the npm
// registry: `npm pack` fetches it once into .cache/dynamodb-local/ (git-ignored), and it is extracted there.
//
//   node scripts/dynamodb-local.mjs start [--port 8000]   starts it in the background, waits until ListTables
//                                                          answers, prints DYNAMODB_ENDPOINT=http://127.0.0.1:PORT
//   node scripts/dynamodb-local.mjs stop [--port 8000]    stops the one this script started on that port (pidfile)
//
// Needs `java` (17+) on the PATH. Exits non-zero, with the reason on stderr, when it cannot start.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SIMULATOR = 'amplify-dynamodb-simulator@2.9.30';
const TARBALL = 'amplify-dynamodb-simulator-2.9.30.tgz';
const START_TIMEOUT_MS = 60_000;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cacheDir = path.join(root, '.cache', 'dynamodb-local');
const emulatorDir = path.join(cacheDir, 'package', 'emulator');
const jar = path.join(emulatorDir, 'DynamoDBLocal.jar');

const [command = 'start', ...rest] = process.argv.slice(2);
const portFlag = rest.indexOf('--port');
const port = Number(portFlag >= 0 ? rest[portFlag + 1] : (process.env.DYNAMODB_LOCAL_PORT ?? 8000));
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`invalid port ${String(port)}`);
const pidFile = path.join(cacheDir, `dynamodb-local-${port}.pid`);
const logFile = path.join(cacheDir, `dynamodb-local-${port}.log`);
const endpoint = `http://127.0.0.1:${port}`;

function fail(message) {
  console.error(`dynamodb-local: ${message}`);
  process.exit(1);
}

function run(program, args, cwd) {
  const result = spawnSync(program, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (result.status !== 0) fail(`${program} ${args.join(' ')} failed: ${result.error ?? result.stderr}`);
}

/** Fetches and unpacks the jar once; later runs reuse the cache. */
function ensureJar() {
  if (existsSync(jar) && existsSync(path.join(emulatorDir, 'DynamoDBLocal_lib'))) return;
  mkdirSync(cacheDir, { recursive: true });
  if (!existsSync(path.join(cacheDir, TARBALL))) {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    run(npm, ['pack', SIMULATOR, '--silent', '--pack-destination', cacheDir], cacheDir);
  }
  run('tar', ['xzf', TARBALL, 'package/emulator'], cacheDir);
  if (!existsSync(jar)) fail(`${TARBALL} holds no emulator/DynamoDBLocal.jar`);
}

/** True once DynamoDB Local answers a ListTables call (it accepts any credentials and does not check signatures). */
async function answers() {
  try {
    const response = await fetch(endpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': 'DynamoDB_20120810.ListTables',
        authorization:
          'AWS4-HMAC-SHA256 Credential=local/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0',
      },
      body: '{}',
      signal: AbortSignal.timeout(2_000),
    });
    return response.ok && Array.isArray((await response.json()).TableNames);
  } catch {
    return false;
  }
}

function readPid() {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function start() {
  if (await answers()) fail(`port ${port} already answers; stop that server or choose another --port`);
  const java = spawnSync('java', ['-version'], { stdio: 'ignore' });
  if (java.error || java.status !== 0) fail('java is not installed (DynamoDB Local needs Java 17+)');
  ensureJar();
  const log = openSync(logFile, 'w');
  const child = spawn(
    'java',
    [
      `-Djava.library.path=${path.join(emulatorDir, 'DynamoDBLocal_lib')}`,
      '-jar',
      jar,
      '-inMemory',
      '-port',
      String(port),
    ],
    { cwd: emulatorDir, detached: true, stdio: ['ignore', log, log] },
  );
  writeFileSync(pidFile, `${child.pid}\n`);
  child.unref();
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || !alive(child.pid)) break;
    if (await answers()) {
      console.log(`DYNAMODB_ENDPOINT=${endpoint}`);
      console.error(`dynamodb-local: started on ${endpoint} (pid ${child.pid})`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  stop(true);
  const logText = existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-2_000) : '';
  fail(`DynamoDB Local did not answer on ${endpoint} within ${START_TIMEOUT_MS / 1000} s\n${logText}`);
}

function stop(quiet = false) {
  const pid = readPid();
  if (pid === undefined) {
    if (!quiet) console.error(`dynamodb-local: nothing started by this script on port ${port}`);
    return;
  }
  if (alive(pid)) {
    process.kill(pid, 'SIGTERM');
    if (!quiet) console.error(`dynamodb-local: stopped pid ${pid}`);
  }
  rmSync(pidFile, { force: true });
}

if (command === 'start') await start();
else if (command === 'stop') stop();
else fail(`unknown command "${command}" (use start or stop)`);
