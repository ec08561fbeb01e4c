/**
 * The DynamoDB state store, the S3 content store and the S3 publisher against a peer that accepts the connection and
 * never answers (a half-open connection), and one that sends response headers and a byte of body, then stalls (a
 * stalled load balancer). Each call must end on its own, with typed, retryable `TIMEOUT` attempts, whether the SDK
 * client is built by the adapter or given to it without any timeout of its own.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortedError, ProviderError, RetryError, ValidationError } from '../src/core/errors.js';
import { createS3ContentStore, createS3Publisher } from '../src/publishing/s3.js';
import { createDynamoStateStore } from '../src/state/dynamodb.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';

// The clients the adapters build read credentials from the environment: fixed ones keep the SDK from looking further.
process.env.AWS_ACCESS_KEY_ID = 'test';
process.env.AWS_SECRET_ACCESS_KEY = 'test';

const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };
const TIMEOUT_MS = 300;
/** Two attempts, no wait between them. */
const RETRY = { maxRetries: 1, initialDelayMs: 0, maxDelayMs: 0 };
/** Far above what two attempts of `TIMEOUT_MS` take; only a hang reaches it. */
const CASE_TIMEOUT_MS = 15_000;

type Behaviour = 'silent' | 'stalled';

/** A TCP peer that misbehaves in one way, counting the connections it accepted. */
interface Peer {
  url: string;
  connections: number;
  close(): Promise<void>;
}

function startPeer(behaviour: Behaviour): Promise<Peer> {
  const sockets = new Set<Socket>();
  let server: Server;
  const peer: Peer = {
    url: '',
    connections: 0,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  server = createServer((socket) => {
    peer.connections++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    if (behaviour === 'stalled') {
      // Headers and the first byte of a 100 KB body, once the request starts to arrive; then nothing.
      socket.once('data', () =>
        socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 100000\r\n\r\n{'),
      );
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      peer.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      resolve(peer);
    });
  });
}

const peers = {} as Record<Behaviour, Peer>;
beforeAll(async () => {
  peers.silent = await startPeer('silent');
  peers.stalled = await startPeer('stalled');
});
afterAll(async () => {
  await Promise.all(Object.values(peers).map((peer) => peer.close()));
});

/** What `promise` rejected with; fails the test if it resolved. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to fail');
}

/** The retry policy's final error after two attempts, each a typed, retryable `TIMEOUT` of `provider`. */
function expectTimedOutTwice(error: unknown, provider: string): void {
  expect(RetryError.isInstance(error), String(error)).toBe(true);
  const attempts = (error as RetryError).errors;
  expect(attempts).toHaveLength(2);
  for (const attempt of attempts) {
    expect(ProviderError.isInstance(attempt), String(attempt)).toBe(true);
    expect(attempt).toMatchObject({ provider, code: 'TIMEOUT', isRetryable: true });
  }
}

/** Counts the connections `peer` accepts while `work` runs. */
async function connectionsDuring(peer: Peer, work: () => Promise<void>): Promise<number> {
  const before = peer.connections;
  await work();
  return peer.connections - before;
}

const clients = ['built by the store', 'given without timeouts'] as const;

describe('DynamoDB state store against a peer that never finishes answering', () => {
  const open = (peer: Peer, client: (typeof clients)[number]) => {
    const given =
      client === 'given without timeouts'
        ? new DynamoDBClient({ endpoint: peer.url, region: 'us-east-1', credentials: CREDENTIALS, maxAttempts: 1 })
        : undefined;
    const store = createDynamoStateStore({
      tableName: 'stories',
      ...(given ? { client: given } : { endpoint: peer.url, region: 'us-east-1' }),
      timeoutMs: TIMEOUT_MS,
      retry: RETRY,
    });
    return {
      store,
      close: async () => {
        await store.close();
        given?.destroy();
      },
    };
  };

  for (const behaviour of ['silent', 'stalled'] as const) {
    for (const client of clients) {
      it(
        `load() ends with timed-out attempts (${behaviour} peer, client ${client})`,
        async () => {
          const { store, close } = open(peers[behaviour], client);
          const opened = await connectionsDuring(peers[behaviour], async () => {
            expectTimedOutTwice(await rejection(store.load('tale')), 'dynamodb');
          });
          await close();
          // Each attempt reached the peer, and each on a connection of its own: the hung one was closed.
          expect(opened).toBe(2);
        },
        CASE_TIMEOUT_MS,
      );

      it(
        `commitScene() ends with timed-out attempts (${behaviour} peer, client ${client})`,
        async () => {
          const { store, close } = open(peers[behaviour], client);
          const state = makeStoryState('tale');
          const scene = makeNextScene(state);
          const commit = store.commitScene('tale', {
            expectedVersion: 0,
            scene,
            nextState: makeNextState(state, scene),
            consumedInfluenceIds: [],
          });
          expectTimedOutTwice(await rejection(commit), 'dynamodb');
          await close();
        },
        CASE_TIMEOUT_MS,
      );
    }
  }

  it(
    'allows a write the time to upload it besides timeoutMs (a large commit is not cut off while it is still being sent)',
    async () => {
      // A client of the caller's, without timeouts of its own: the store's bound is the one that ends the attempt.
      const { store, close } = open(peers.silent, 'given without timeouts');
      const state = makeStoryState('tale');
      // About 190 KB of scene that compression cannot shrink much (the store keeps scenes gzip-compressed): 100 ms
      // more at least at the slowest upload the bound allows for (1 MB/s).
      let seed = 7;
      const letter = () => {
        seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
        return String.fromCharCode(97 + (seed % 26));
      };
      const text = Array.from({ length: 190_000 }, (_, i) => (i % 7 === 6 ? ' ' : letter())).join('');
      const scene = makeNextScene(state, { text });
      const error = await rejection(
        store.commitScene('tale', {
          expectedVersion: 0,
          scene,
          nextState: makeNextState(state, scene),
          consumedInfluenceIds: [],
        }),
      );
      expectTimedOutTwice(error, 'dynamodb');
      const bounds = (error as RetryError).errors.map((attempt) =>
        Number(/within (\d+) ms/.exec((attempt as Error).message)?.[1]),
      );
      for (const bound of bounds) expect(bound).toBeGreaterThanOrEqual(TIMEOUT_MS + 100);
      await close();
    },
    CASE_TIMEOUT_MS,
  );

  it('refuses a timeoutMs that is not a number of milliseconds from 1', () => {
    for (const timeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => createDynamoStateStore({ tableName: 'stories', timeoutMs })).toThrow(ValidationError);
    }
  });
});

describe('S3 content store and publisher against a peer that never finishes answering', () => {
  const openClient = (peer: Peer) =>
    new S3Client({
      endpoint: peer.url,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: CREDENTIALS,
      maxAttempts: 1,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  const connectionOptions = (peer: Peer, client: (typeof clients)[number]) =>
    client === 'given without timeouts'
      ? { client: openClient(peer) }
      : { endpoint: peer.url, region: 'us-east-1', forcePathStyle: true };

  for (const behaviour of ['silent', 'stalled'] as const) {
    for (const client of clients) {
      it(
        `content store get() and put() end with timed-out attempts (${behaviour} peer, client ${client})`,
        async () => {
          const connection = connectionOptions(peers[behaviour], client);
          const content = createS3ContentStore({
            bucket: 'stories',
            ...connection,
            timeoutMs: TIMEOUT_MS,
            retry: RETRY,
          });
          // A stalled GetObject has its headers: the body read is what hangs.
          const opened = await connectionsDuring(peers[behaviour], async () => {
            expectTimedOutTwice(await rejection(content.get('tale/scene-1.json.gz')), 's3');
          });
          expect(opened).toBe(2);
          expectTimedOutTwice(await rejection(content.put('tale/scene-1.json.gz', new Uint8Array([1, 2, 3]))), 's3');
          connection.client?.destroy();
        },
        CASE_TIMEOUT_MS,
      );
    }
  }

  it(
    'publish() without a signal ends with timed-out attempts (silent peer, client given without timeouts)',
    async () => {
      const client = openClient(peers.silent);
      const publisher = createS3Publisher({ bucket: 'stories', client, timeoutMs: TIMEOUT_MS, retry: RETRY });
      const story = makeStoryState('tale');
      expectTimedOutTwice(await rejection(publisher.publish({ story, scene: makeNextScene(story) })), 's3');
      client.destroy();
    },
    CASE_TIMEOUT_MS,
  );

  it(
    "publish() with a caller's signal that fires first ends with AbortedError, not a timeout",
    async () => {
      const client = openClient(peers.silent);
      const publisher = createS3Publisher({ bucket: 'stories', client, timeoutMs: 60_000, retry: RETRY });
      const story = makeStoryState('tale');
      const controller = new AbortController();
      const publishing = publisher.publish({ story, scene: makeNextScene(story) }, { signal: controller.signal });
      // Once the request is on the wire, the caller gives up.
      const before = peers.silent.connections;
      while (peers.silent.connections === before) await new Promise((resolve) => setImmediate(resolve));
      controller.abort(new Error('caller gave up'));
      const error = await rejection(publishing);
      expect(AbortedError.isInstance(error), String(error)).toBe(true);
      client.destroy();
    },
    CASE_TIMEOUT_MS,
  );

  it('refuses a timeoutMs that is not a number of milliseconds from 1', () => {
    expect(() => createS3ContentStore({ bucket: 'stories', timeoutMs: 0 })).toThrow(ValidationError);
    expect(() => createS3Publisher({ bucket: 'stories', timeoutMs: Number.NaN })).toThrow(ValidationError);
  });
});

describe('S3 content store against a slow body that keeps arriving', () => {
  const CHUNKS = 6;
  let server: HttpServer;
  let url: string;
  beforeAll(async () => {
    // Each chunk comes half a timeout after the last: the whole body takes three timeouts, no pause takes one.
    server = createHttpServer((_request, response) => {
      response.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(CHUNKS) });
      let sent = 0;
      const next = () => {
        response.write(Buffer.from([sent]));
        if (++sent === CHUNKS) response.end();
        else setTimeout(next, TIMEOUT_MS / 2);
      };
      next();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  it(
    'get() reads the whole body: timeoutMs bounds each pause of the download, not the download',
    async () => {
      const client = new S3Client({
        endpoint: url,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: CREDENTIALS,
        maxAttempts: 1,
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      const content = createS3ContentStore({
        bucket: 'stories',
        client,
        timeoutMs: TIMEOUT_MS,
        retry: { maxRetries: 0 },
      });
      expect(await content.get('slow')).toEqual(new Uint8Array([0, 1, 2, 3, 4, 5]));
      client.destroy();
    },
    CASE_TIMEOUT_MS,
  );
});
