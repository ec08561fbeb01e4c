/**
 * A local stand-in for one Pinecone index's data plane, on `node:http`: the calls `@pinecone-database/pinecone`
 * makes for upsert, query, fetch, delete, index stats and describing and deleting a namespace, with Pinecone's
 * semantics (exact search, namespaces, metadata filters) and limits (1,000 records and 2 MB per upsert, 40 KB of
 * metadata per record, metadata values only strings, numbers, booleans and lists of strings, `$in` / `$nin` lists of
 * strings and numbers only, `topK` ≤ 10,000, from 1 to 1,000 sparse values per sparse vector, no all-zero dense
 * vector on a cosine index), answering invalid requests with HTTP 400 and a Pinecone-shaped error body. As on
 * Pinecone, a filter's `$ne` and `$nin` match only records that have the field (`$exists: false` finds the others), a
 * namespace exists from its first upsert until it is deleted (`DELETE /namespaces/{namespace}`: deleting its records,
 * all of them included, leaves it), and a delete or describe of a namespace that does not exist is a 404 with gRPC
 * code 5, "Namespace not found". Errors such as 429 can be scheduled to test retries. Imports no SDK.
 *
 * @module
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** The limits the stand-in enforces; Pinecone's by default. */
export interface PineconeStandInLimits {
  /** Records per upsert. Default 1,000. */
  maxUpsertRecords: number;
  /** Bytes of one request body. Default 2 MB. */
  maxRequestBytes: number;
  /** Bytes of one record's metadata, as JSON. Default 40 KB. */
  maxMetadataBytes: number;
  /** Largest `topK`. Default 10,000. */
  maxTopK: number;
  /** Entries of one sparse vector. Default 1,000. */
  maxSparseValues: number;
  /** Ids per fetch or delete. Default 1,000. */
  maxIdsPerRequest: number;
  /** Bytes of one query's response, values and metadata included. Default 4 MB. */
  maxQueryResponseBytes: number;
}

/** Options of `startPineconeStandIn`. */
export interface PineconeStandInOptions {
  /** Dimension of the index: every dense vector must have it. */
  dimension: number;
  /** `dotproduct` also accepts sparse values (hybrid search). Default `cosine`. */
  metric?: 'cosine' | 'dotproduct';
  limits?: Partial<PineconeStandInLimits>;
  /** Port to listen on. Default an ephemeral one. */
  port?: number;
  /**
   * How many further requests a write (upsert, delete) waits before reads (query, fetch, stats) see it, in order.
   * Pinecone is eventually consistent: "there can be a slight delay before new or changed records are visible to
   * queries". Default 0: at once.
   */
  visibilityLag?: number;
}

/** A request as the stand-in received it. */
export interface PineconeStandInRequest {
  method: string;
  /** Path without the query string, e.g. `/vectors/upsert`. */
  path: string;
  query: Record<string, string[]>;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON body, when there was one. */
  body: unknown;
  /** Size of the raw body in bytes. */
  bodyBytes: number;
  /** The status the stand-in answered with. */
  status: number;
}

/** An error to answer instead of serving, for the next request (to `path`, when given). */
export interface PineconeScheduledError {
  /** 403: the key may not do this (a key scoped to other indexes); 429 a rate limit; 500 and 503 the service. */
  status: 403 | 429 | 500 | 503;
  path?: string;
  /** Sent as `retry-after`, in seconds. */
  retryAfterSeconds?: number;
  /** Sent as `retry-after` as it is (an HTTP date, say); wins over `retryAfterSeconds`. */
  retryAfter?: string;
}

/** A running stand-in. */
export interface PineconeStandIn {
  /** `http://127.0.0.1:PORT`: pass it as the index host. */
  url: string;
  /** Every request received, oldest first. */
  readonly requests: PineconeStandInRequest[];
  /** Answers the next matching requests with these errors, in order. */
  scheduleErrors(errors: PineconeScheduledError[]): void;
  /** Records per namespace, read directly (not through the API): an empty namespace that was not deleted is 0. */
  namespaces(): Record<string, number>;
  /** Makes every write received so far visible (with `visibilityLag`). */
  catchUp(): void;
  close(): Promise<void>;
}

interface StoredRecord {
  id: string;
  values: number[];
  sparseValues?: { indices: number[]; values: number[] };
  metadata?: Record<string, unknown>;
}

const DEFAULT_LIMITS: PineconeStandInLimits = {
  maxUpsertRecords: 1_000,
  maxRequestBytes: 2 * 1024 * 1024,
  maxMetadataBytes: 40 * 1024,
  maxTopK: 10_000,
  maxSparseValues: 1_000,
  maxIdsPerRequest: 1_000,
  maxQueryResponseBytes: 4 * 1024 * 1024,
};

/** gRPC-style status codes Pinecone's data plane puts in its error bodies. */
const GRPC = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

class RequestError extends Error {
  constructor(
    readonly status: number,
    readonly grpcCode: number,
    message: string,
  ) {
    super(message);
  }
}

const bad = (message: string) => new RequestError(400, GRPC.INVALID_ARGUMENT, message);

/** Pinecone's answer to a delete or describe of a namespace that does not exist. */
const namespaceNotFound = () => new RequestError(404, GRPC.NOT_FOUND, 'Namespace not found');

/**
 * Starts a Pinecone data-plane stand-in on 127.0.0.1.
 *
 * @example
 * ```ts
 * import { Pinecone } from '@pinecone-database/pinecone';
 * import { startPineconeStandIn } from 'storyloom/testing';
 *
 * const standIn = await startPineconeStandIn({ dimension: 8 });
 * const index = new Pinecone({ apiKey: 'local', maxRetries: 0 }).index({ name: 'local', host: standIn.url });
 * await index.upsert({ records: [{ id: 'a', values: [1, 0, 0, 0, 0, 0, 0, 0] }], namespace: 'story-1' });
 * await standIn.close();
 * ```
 */
export async function startPineconeStandIn(options: PineconeStandInOptions): Promise<PineconeStandIn> {
  const dimension = options.dimension;
  if (!Number.isInteger(dimension) || dimension < 1 || dimension > 20_000) {
    throw new RangeError(`dimension must be an integer from 1 to 20000, got ${String(dimension)}`);
  }
  const metric = options.metric ?? 'cosine';
  const limits: PineconeStandInLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const data = new Map<string, Map<string, StoredRecord>>();
  /**
   * The namespaces that exist as of the writes received, visible or not: a delete is checked against them, as it is
   * applied after the writes before it (a delete of a namespace just written to deletes, never answers 404).
   */
  const existing = new Set<string>();
  const requests: PineconeStandInRequest[] = [];
  const scheduled: PineconeScheduledError[] = [];
  const lag = options.visibilityLag ?? 0;
  if (!Number.isInteger(lag) || lag < 0) throw new RangeError(`visibilityLag must be a whole number, got ${lag}`);
  /** Writes received and not yet visible, with the request count they arrived at. */
  const invisible: Array<{ at: number; apply: () => void }> = [];
  let served = 0;
  const write = (apply: () => void) => {
    if (lag === 0) apply();
    else invisible.push({ at: served, apply });
  };
  const showDue = (all = false) => {
    while (invisible.length > 0 && (all || served - invisible[0]!.at >= lag)) invisible.shift()!.apply();
  };

  const namespace = (name: unknown): string => {
    if (name === undefined || name === null) return '';
    if (typeof name !== 'string') throw bad('namespace must be a string');
    return name;
  };

  const handlers: Record<
    string,
    (body: Record<string, unknown>, query: Record<string, string[]>, pathNamespace: string) => unknown
  > = {
    'POST /vectors/upsert': (body) => {
      const vectors = body.vectors;
      if (!Array.isArray(vectors) || vectors.length === 0) throw bad('vectors must be a non-empty list');
      if (vectors.length > limits.maxUpsertRecords) {
        throw bad(`Exceeded max batch size: ${vectors.length} vectors, the limit is ${limits.maxUpsertRecords}`);
      }
      // Pinecone checks the whole request before it writes any of it.
      const checked = vectors.map((vector: unknown) => checkRecord(vector));
      const name = namespace(body.namespace);
      existing.add(name);
      write(() => {
        let records = data.get(name);
        if (!records) {
          records = new Map();
          data.set(name, records);
        }
        for (const record of checked) records.set(record.id, record);
      });
      return { upsertedCount: checked.length };
    },

    'POST /query': (body) => {
      const topK = body.topK;
      if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1 || topK > limits.maxTopK) {
        throw bad(`topK must be an integer from 1 to ${limits.maxTopK}, got ${JSON.stringify(topK)}`);
      }
      if (body.id !== undefined) throw bad('query by id is not implemented by the stand-in');
      const vector = checkDense(body.vector, 'vector');
      const sparse = body.sparseVector === undefined ? undefined : checkSparse(body.sparseVector, 'sparseVector');
      const filter = body.filter === undefined ? undefined : checkFilter(body.filter, 'filter');
      const records = data.get(namespace(body.namespace));
      const scored: Array<{ record: StoredRecord; score: number }> = [];
      for (const record of records?.values() ?? []) {
        if (filter && !matches(record.metadata ?? {}, filter)) continue;
        scored.push({ record, score: score(vector, sparse, record) });
      }
      scored.sort((a, b) => b.score - a.score || (a.record.id < b.record.id ? -1 : 1));
      const result = {
        matches: scored.slice(0, topK).map(({ record, score: value }) => ({
          id: record.id,
          score: Math.fround(value),
          ...(body.includeValues === true ? { values: [...record.values] } : {}),
          ...(body.includeValues === true && record.sparseValues ? { sparseValues: record.sparseValues } : {}),
          ...(body.includeMetadata === true && record.metadata ? { metadata: record.metadata } : {}),
        })),
        namespace: namespace(body.namespace),
        usage: { readUnits: Math.max(1, Math.ceil((records?.size ?? 0) / 1_000)) },
      };
      // Pinecone refuses a query whose result passes its size limit, rather than cutting it short.
      const size = Buffer.byteLength(JSON.stringify(result));
      if (size > limits.maxQueryResponseBytes) {
        throw bad(
          `Query result size ${size} bytes exceeds the limit of ${limits.maxQueryResponseBytes} bytes: lower top_k, or leave out values or metadata`,
        );
      }
      return result;
    },

    'GET /vectors/fetch': (_body, query) => {
      const ids = query.ids ?? [];
      if (ids.length === 0) throw bad('ids must name at least one id');
      if (ids.length > limits.maxIdsPerRequest) throw bad(`at most ${limits.maxIdsPerRequest} ids per fetch`);
      const name = namespace(query.namespace?.[0]);
      const records = data.get(name);
      const vectors: Record<string, StoredRecord> = {};
      for (const id of ids) {
        const record = records?.get(id);
        if (record) vectors[id] = record;
      }
      return { vectors, namespace: name, usage: { readUnits: 1 } };
    },

    'POST /vectors/delete': (body) => {
      const name = namespace(body.namespace);
      const modes = [body.ids !== undefined, body.deleteAll === true, body.filter !== undefined].filter(Boolean);
      if (modes.length !== 1) throw bad('give exactly one of ids, deleteAll or filter');
      if (!existing.has(name)) throw namespaceNotFound();
      let remove: (records: Map<string, StoredRecord>) => void;
      if (body.deleteAll === true) {
        remove = (records) => records.clear();
      } else if (body.ids !== undefined) {
        const ids = body.ids;
        if (!Array.isArray(ids) || !ids.every((id) => typeof id === 'string')) throw bad('ids must be a list of ids');
        if (ids.length > limits.maxIdsPerRequest) throw bad(`at most ${limits.maxIdsPerRequest} ids per delete`);
        remove = (records) => {
          for (const id of ids) records.delete(id);
        };
      } else {
        const filter = checkFilter(body.filter, 'filter');
        if (Object.keys(filter).length === 0) throw bad('filter must not be empty');
        remove = (records) => {
          for (const [id, record] of records) if (matches(record.metadata ?? {}, filter)) records.delete(id);
        };
      }
      // The namespace stays, empty or not: only deleting it removes it.
      write(() => {
        const now = data.get(name);
        if (now) remove(now);
      });
      return {};
    },

    'GET /namespaces/{namespace}': (_body, _query, name) => {
      const records = data.get(name);
      if (!records) throw namespaceNotFound();
      return { name, record_count: records.size };
    },

    'DELETE /namespaces/{namespace}': (_body, _query, name) => {
      if (!existing.delete(name)) throw namespaceNotFound();
      write(() => data.delete(name));
      return {};
    },

    'POST /describe_index_stats': (body) => {
      const filter = body.filter === undefined ? undefined : checkFilter(body.filter, 'filter');
      const namespaces: Record<string, { vectorCount: number }> = {};
      let total = 0;
      for (const [name, records] of data) {
        let count = 0;
        for (const record of records.values()) if (!filter || matches(record.metadata ?? {}, filter)) count++;
        if (count === 0) continue;
        namespaces[name] = { vectorCount: count };
        total += count;
      }
      return { namespaces, dimension, indexFullness: 0, totalVectorCount: total, metric, vectorType: 'dense' };
    },
  };

  function checkDense(values: unknown, path: string): number[] {
    if (!Array.isArray(values)) throw bad(`${path} must be a list of numbers`);
    if (values.length !== dimension) {
      throw bad(`Vector dimension ${values.length} does not match the dimension of the index ${dimension}`);
    }
    if (!values.every((value) => typeof value === 'number' && Number.isFinite(value))) {
      throw bad(`${path} must hold finite numbers only`);
    }
    // Pinecone stores float32.
    return values.map((value: number) => Math.fround(value));
  }

  function checkSparse(sparse: unknown, path: string): { indices: number[]; values: number[] } {
    if (metric !== 'dotproduct') throw bad('Sparse vectors are only supported for indexes with the dotproduct metric');
    const { indices, values } = (sparse ?? {}) as { indices?: unknown; values?: unknown };
    if (!Array.isArray(indices) || !Array.isArray(values) || indices.length !== values.length) {
      throw bad(`${path} must have indices and values of the same length`);
    }
    // The API's SparseValues holds at least one entry: an empty one is refused, and an upsert with it fails whole.
    if (indices.length === 0) throw bad(`${path} must have at least one index and value`);
    if (!indices.every((index) => Number.isInteger(index) && index >= 0 && index < 2 ** 32)) {
      throw bad(`${path}.indices must be unsigned 32-bit integers`);
    }
    if (new Set(indices).size !== indices.length) throw bad(`${path}.indices must not repeat`);
    if (indices.length > limits.maxSparseValues) {
      throw bad(`Sparse vector size ${indices.length} exceeds the maximum size of ${limits.maxSparseValues}`);
    }
    if (!values.every((value) => typeof value === 'number' && Number.isFinite(value))) {
      throw bad(`${path}.values must hold finite numbers only`);
    }
    return { indices: [...indices], values: values.map((value: number) => Math.fround(value)) };
  }

  function checkRecord(input: unknown): StoredRecord {
    const { id, values, sparseValues, metadata } = (input ?? {}) as Record<string, unknown>;
    if (typeof id !== 'string' || id.length === 0 || id.length > 512) {
      throw bad('Every vector needs an id of 1 to 512 characters');
    }
    const record: StoredRecord = { id, values: checkDense(values, `vector ${id} values`) };
    // A cosine index cannot compare a vector without direction; Pinecone refuses it on write.
    if (metric === 'cosine' && record.values.every((value) => value === 0)) {
      throw bad('Dense vectors must contain at least one non-zero value');
    }
    if (sparseValues !== undefined) record.sparseValues = checkSparse(sparseValues, `vector ${id} sparseValues`);
    if (metadata !== undefined) record.metadata = checkMetadata(id, metadata);
    return record;
  }

  function checkMetadata(id: string, metadata: unknown): Record<string, unknown> {
    if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
      throw bad(`Metadata of vector ${id} must be an object`);
    }
    const bytes = Buffer.byteLength(JSON.stringify(metadata), 'utf8');
    if (bytes > limits.maxMetadataBytes) {
      throw bad(
        `Metadata size is ${bytes} bytes, which exceeds the limit of ${limits.maxMetadataBytes} bytes per vector`,
      );
    }
    for (const [key, value] of Object.entries(metadata)) {
      const fits =
        typeof value === 'string' ||
        typeof value === 'boolean' ||
        (typeof value === 'number' && Number.isFinite(value)) ||
        (Array.isArray(value) && value.every((item) => typeof item === 'string'));
      if (!fits) {
        throw bad(
          `Metadata value for field ${JSON.stringify(key)} of vector ${id} must be a string, number, boolean or list of strings`,
        );
      }
    }
    return structuredClone(metadata as Record<string, unknown>);
  }

  function score(
    vector: number[],
    sparse: { indices: number[]; values: number[] } | undefined,
    record: StoredRecord,
  ): number {
    let dot = 0;
    let normQuery = 0;
    let normRecord = 0;
    for (let i = 0; i < dimension; i++) {
      dot += vector[i]! * record.values[i]!;
      normQuery += vector[i]! * vector[i]!;
      normRecord += record.values[i]! * record.values[i]!;
    }
    if (metric === 'cosine') return normQuery === 0 || normRecord === 0 ? 0 : dot / Math.sqrt(normQuery * normRecord);
    if (sparse && record.sparseValues) {
      const weights = new Map(record.sparseValues.indices.map((index, i) => [index, record.sparseValues!.values[i]!]));
      sparse.indices.forEach((index, i) => {
        dot += sparse.values[i]! * (weights.get(index) ?? 0);
      });
    }
    return dot;
  }

  const server = createServer((request, response) => {
    void serve(request, response);
  });

  async function serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://stand-in');
    const query: Record<string, string[]> = {};
    for (const [key, value] of url.searchParams) {
      const list = query[key] ?? [];
      list.push(value);
      query[key] = list;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks);
    const entry: PineconeStandInRequest = {
      method: request.method ?? 'GET',
      path: url.pathname,
      query,
      headers: request.headers,
      body: undefined,
      bodyBytes: raw.length,
      status: 200,
    };
    requests.push(entry);
    served++;
    showDue();
    const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      entry.status = status;
      response.writeHead(status, { 'content-type': 'application/json', ...headers });
      response.end(JSON.stringify(payload));
    };
    const sendError = (status: number, code: number, message: string, headers: Record<string, string> = {}) =>
      send(status, { code, message, details: [] }, headers);

    const due = scheduled.findIndex((error) => error.path === undefined || error.path === url.pathname);
    if (due !== -1) {
      const [error] = scheduled.splice(due, 1);
      const retryAfter =
        error!.retryAfter ?? (error!.retryAfterSeconds === undefined ? undefined : String(error!.retryAfterSeconds));
      const headers: Record<string, string> = retryAfter === undefined ? {} : { 'retry-after': retryAfter };
      if (error!.status === 429) {
        return sendError(
          429,
          GRPC.RESOURCE_EXHAUSTED,
          'RESOURCE_EXHAUSTED: Request rate limit exceeded for this namespace. Retry after a short wait.',
          headers,
        );
      }
      if (error!.status === 403) {
        return sendError(403, GRPC.PERMISSION_DENIED, 'The API key is not permitted to perform this action', headers);
      }
      return sendError(
        error!.status,
        error!.status === 503 ? GRPC.UNAVAILABLE : GRPC.INTERNAL,
        'Internal error',
        headers,
      );
    }
    if (!request.headers['api-key']) return sendError(401, 16, 'Api-Key header is missing');
    // The one route with a parameter: the namespace, percent-encoded as one path segment.
    const namespaceRoute = /^\/namespaces\/([^/]+)$/.exec(url.pathname);
    const handler = handlers[`${entry.method} ${namespaceRoute ? '/namespaces/{namespace}' : url.pathname}`];
    if (!handler) return sendError(404, GRPC.NOT_FOUND, `No route for ${entry.method} ${url.pathname}`);
    if (raw.length > limits.maxRequestBytes) {
      return sendError(
        400,
        GRPC.INVALID_ARGUMENT,
        `Request size ${raw.length} bytes exceeds the maximum supported size of ${limits.maxRequestBytes} bytes`,
      );
    }
    let body: Record<string, unknown> = {};
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
      } catch {
        return sendError(400, GRPC.INVALID_ARGUMENT, 'The request body is not valid JSON');
      }
    }
    entry.body = body;
    try {
      send(200, handler(body, query, namespaceRoute ? decodeURIComponent(namespaceRoute[1]!) : ''));
    } catch (error) {
      if (error instanceof RequestError) return sendError(error.status, error.grpcCode, error.message);
      sendError(500, GRPC.INTERNAL, error instanceof Error ? error.message : String(error));
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    catchUp() {
      showDue(true);
    },
    scheduleErrors(errors) {
      scheduled.push(...errors);
    },
    namespaces() {
      return Object.fromEntries([...data].map(([name, records]) => [name, records.size]));
    },
    close() {
      return new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

type Filter = Record<string, unknown>;

const OPERATORS = new Set(['$eq', '$ne', '$gt', '$gte', '$lt', '$lte', '$in', '$nin', '$exists']);

/** Checks a Pinecone metadata filter: known operators, operands of the right kind. */
function checkFilter(filter: unknown, path: string): Filter {
  if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) throw bad(`${path} must be an object`);
  for (const [key, value] of Object.entries(filter)) {
    if (key === '$and' || key === '$or') {
      if (!Array.isArray(value) || value.length === 0) throw bad(`${path}.${key} must be a non-empty list`);
      value.forEach((part, index) => {
        checkFilter(part, `${path}.${key}[${index}]`);
      });
      continue;
    }
    if (key.startsWith('$')) throw bad(`Invalid filter operator ${key} at ${path}`);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      // Pinecone reads a bare value as $eq.
      if (!isScalar(value)) throw bad(`${path}.${key} must be a string, number, boolean or operator object`);
      continue;
    }
    for (const [operator, operand] of Object.entries(value)) {
      if (!OPERATORS.has(operator)) throw bad(`Invalid filter operator ${operator} at ${path}.${key}`);
      if (operator === '$in' || operator === '$nin') {
        // Booleans are for $eq and $ne only.
        if (!Array.isArray(operand) || !operand.every((item) => isScalar(item) && typeof item !== 'boolean')) {
          throw bad(`${operator} needs a list of strings or numbers`);
        }
      } else if (operator === '$exists') {
        if (typeof operand !== 'boolean') throw bad('$exists needs a boolean');
      } else if (operator === '$eq' || operator === '$ne') {
        if (!isScalar(operand)) throw bad(`${operator} needs a string, number or boolean`);
      } else if (typeof operand !== 'number' || !Number.isFinite(operand)) {
        throw bad(`${operator} needs a number`);
      }
    }
  }
  return filter as Filter;
}

function isScalar(value: unknown): boolean {
  return (
    typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))
  );
}

function matches(metadata: Record<string, unknown>, filter: Filter): boolean {
  for (const [key, value] of Object.entries(filter)) {
    if (key === '$and') {
      if (!(value as Filter[]).every((part) => matches(metadata, part))) return false;
    } else if (key === '$or') {
      if (!(value as Filter[]).some((part) => matches(metadata, part))) return false;
    } else {
      const condition = isScalar(value) ? { $eq: value } : (value as Record<string, unknown>);
      for (const [operator, operand] of Object.entries(condition)) {
        if (!holds(metadata[key], operator, operand)) return false;
      }
    }
  }
  return true;
}

/**
 * One operator on one field. On a list field, positive operators need some element, negative ones none. A record
 * without the field matches no operator but `$exists: false`, `$ne` and `$nin` included, as on Pinecone: "not equal"
 * needs a value to compare.
 */
function holds(actual: unknown, operator: string, operand: unknown): boolean {
  if (operator === '$exists') return (actual !== undefined) === operand;
  if (actual === undefined) return false;
  const items = Array.isArray(actual) ? actual : [actual];
  switch (operator) {
    case '$eq':
      return items.some((item) => item === operand);
    case '$ne':
      return !items.some((item) => item === operand);
    case '$in':
      return items.some((item) => (operand as unknown[]).includes(item));
    case '$nin':
      return !items.some((item) => (operand as unknown[]).includes(item));
    case '$gt':
      return items.some((item) => typeof item === 'number' && item > (operand as number));
    case '$gte':
      return items.some((item) => typeof item === 'number' && item >= (operand as number));
    case '$lt':
      return items.some((item) => typeof item === 'number' && item < (operand as number));
    case '$lte':
      return items.some((item) => typeof item === 'number' && item <= (operand as number));
    default:
      return false;
  }
}
