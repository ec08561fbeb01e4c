/**
 * Throw-away Redis servers for the tests that need more than `.ci/run`'s plain Redis on 6379: a three-master Redis
 * Cluster, and TLS (standalone or cluster) with a certificate authority made for the run. They are started from the
 * machine's `redis-server` (and `redis-cli` to form the cluster, `openssl` for the certificates) on free ports in a
 * temporary folder, and stopped afterwards. When a tool is missing the tests skip with the printed reason.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';

const START_TIMEOUT_MS = 20_000;

/** Started servers, or the reason there are none. */
export type LocalRedis =
  | {
      skipReason?: undefined;
      /** `host:port` of every master. */
      nodes: Array<{ host: string; port: number }>;
      /** The PEM of the CA that signed the servers' certificate (TLS only). */
      ca?: string;
      stop: () => Promise<void>;
    }
  | { skipReason: string; nodes?: undefined; ca?: undefined; stop: () => Promise<void> };

function run(command: string, args: string[], timeout = START_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A port that is free, with `port + 10000` (the cluster bus) free as well. */
async function freePort(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    if (taken.has(port) || taken.has(port + 10_000)) continue;
    if ((await portIsFree(port)) && (await portIsFree(port + 10_000))) {
      taken.add(port);
      taken.add(port + 10_000);
      return port;
    }
  }
  throw new Error('no free port pair found');
}

async function waitForPort(port: number, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`nothing listens on port ${port} after ${START_TIMEOUT_MS} ms`);
}

async function missingTool(tools: string[]): Promise<string | undefined> {
  for (const tool of tools) {
    try {
      await run(tool, [tool === 'openssl' ? 'version' : '--version'], 5_000);
    } catch {
      return tool;
    }
  }
  return undefined;
}

/** A CA and a server certificate for `localhost` and `127.0.0.1`, both P-256, valid for a day. */
async function makeCertificates(
  folder: string,
  hostnameOnly: boolean,
): Promise<{ ca: string; cert: string; key: string; caFile: string }> {
  const file = (name: string) => path.join(folder, name);
  const curve = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req',
    '-x509',
    ...curve,
    '-keyout',
    file('ca.key'),
    '-out',
    file('ca.crt'),
    '-days',
    '1',
    '-subj',
    '/CN=storyloom test CA',
  ]);
  await run('openssl', [
    'req',
    ...curve,
    '-keyout',
    file('server.key'),
    '-out',
    file('server.csr'),
    '-subj',
    '/CN=localhost',
  ]);
  await writeFile(file('san.ext'), `subjectAltName=DNS:localhost${hostnameOnly ? '' : ',IP:127.0.0.1'}\n`);
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.crt'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-out',
    file('server.crt'),
    '-days',
    '1',
    '-extfile',
    file('san.ext'),
  ]);
  return {
    ca: await readFile(file('ca.crt'), 'utf8'),
    cert: file('server.crt'),
    key: file('server.key'),
    caFile: file('ca.crt'),
  };
}

/**
 * Starts `masters` Redis servers; with `cluster`, joins them into one cluster (slots spread evenly, no replicas; one
 * master owns them all) and waits for `cluster_state:ok`; with `tls`, they listen only on TLS (the cluster bus too) with a fresh CA.
 */
export async function startLocalRedis(options: {
  cluster?: boolean;
  tls?: boolean;
  masters?: number;
  /**
   * Named only as `localhost`, as ElastiCache names its nodes by hostname: the certificate names no IP, a cluster's
   * nodes announce the hostname, and `nodes` give it.
   */
  hostnames?: boolean;
}): Promise<LocalRedis> {
  const host = options.hostnames ? 'localhost' : '127.0.0.1';
  const masters = options.cluster ? (options.masters ?? 3) : 1;
  const tools = ['redis-server', ...(options.cluster ? ['redis-cli'] : []), ...(options.tls ? ['openssl'] : [])];
  const missing = await missingTool(tools);
  if (missing) {
    const reason = `${missing} is not installed`;
    console.warn(`[redis ${options.cluster ? 'cluster' : ''}${options.tls ? ' tls' : ''} tests skipped] ${reason}`);
    return { skipReason: reason, stop: async () => {} };
  }
  const folder = await mkdtemp(path.join(os.tmpdir(), 'storyloom-redis-'));
  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      ),
    );
    await rm(folder, { recursive: true, force: true });
  };
  try {
    const certificates = options.tls ? await makeCertificates(folder, options.hostnames === true) : undefined;
    const taken = new Set<number>();
    const ports: number[] = [];
    for (let i = 0; i < masters; i++) ports.push(await freePort(taken));
    for (const port of ports) {
      const args = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', folder];
      args.push('--dbfilename', `dump-${port}.rdb`);
      if (certificates) {
        args.push('--port', '0', '--tls-port', String(port));
        args.push('--tls-cert-file', certificates.cert, '--tls-key-file', certificates.key);
        args.push('--tls-ca-cert-file', certificates.caFile, '--tls-auth-clients', 'no');
        if (options.cluster) args.push('--tls-cluster', 'yes');
      } else {
        args.push('--port', String(port));
      }
      if (options.cluster) {
        args.push('--cluster-enabled', 'yes', '--cluster-config-file', path.join(folder, `nodes-${port}.conf`));
        if (options.hostnames) {
          args.push('--cluster-announce-hostname', host, '--cluster-preferred-endpoint-type', 'hostname');
        }
      }
      const child = spawn('redis-server', args, { stdio: 'ignore' });
      children.push(child);
    }
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (const port of ports) await waitForPort(port, deadline);
    if (options.cluster) {
      const tlsArgs = certificates ? ['--tls', '--cacert', certificates.caFile] : [];
      if (masters === 1) {
        // One node owning every slot, as ElastiCache Serverless shows itself (`--cluster create` needs three).
        await run('redis-cli', [
          ...tlsArgs,
          '-h',
          host,
          '-p',
          String(ports[0]),
          'cluster',
          'addslotsrange',
          '0',
          '16383',
        ]);
      } else {
        await run('redis-cli', [
          ...tlsArgs,
          '--cluster',
          'create',
          ...ports.map((port) => `127.0.0.1:${port}`),
          '--cluster-replicas',
          '0',
          '--cluster-yes',
        ]);
      }
      for (const port of ports) {
        while (true) {
          const info = await run('redis-cli', [...tlsArgs, '-h', host, '-p', String(port), 'cluster', 'info']);
          if (info.includes('cluster_state:ok')) break;
          if (Date.now() > deadline) throw new Error(`the cluster did not become ready: ${info}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }
    return {
      nodes: ports.map((port) => ({ host, port })),
      ...(certificates ? { ca: certificates.ca } : {}),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
