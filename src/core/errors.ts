/**
 * Typed errors shared by every module of storyloom.
 *
 * Every error carries a stable `code`, says whether retrying can help (`isRetryable`) and keeps its `cause`.
 * `isInstance()` checks a `Symbol.for` marker instead of `instanceof`, so it still works when two copies of
 * storyloom are installed side by side (a Lambda layer and a bundled copy, say). Each class declares a private brand
 * (type only, nothing at run time), which makes it a type of its own: without it, a class that adds no field
 * (`NotFoundError`) would be the same type as `StoryloomError`, and the branch after
 * `if (NotFoundError.isInstance(error)) return` would be `never`. A brand rather than a literal `name`, so that a
 * subclass of yours may still name itself.
 *
 * @module
 */

const MARKER = Symbol.for('storyloom.error');

/** A problem found while checking a proposed state change; see `applyDelta`. */
export interface IssueLike {
  code: string;
  severity: 'error' | 'warning';
  path: string;
  message: string;
}

/** Options shared by every storyloom error. */
export interface StoryloomErrorOptions {
  cause?: unknown;
  isRetryable?: boolean;
}

/**
 * Base class of every error storyloom throws on purpose.
 *
 * @example
 * ```ts
 * import { StoryloomError } from 'storyloom';
 * try { await store.load('missing') } catch (error) {
 *   if (StoryloomError.isInstance(error)) console.log(error.code);
 * }
 * ```
 */
export class StoryloomError extends Error {
  // biome-ignore lint/correctness/noUnusedPrivateClassMembers: read by isInstance() through the Symbol.for key, which also matches other installed copies
  private readonly [MARKER] = true;
  /** A stable machine-readable code such as `CONFLICT` or `NOT_FOUND`. */
  readonly code: string;
  /** True when the same call may succeed if made again later. */
  readonly isRetryable: boolean;

  constructor(code: string, message: string, options: StoryloomErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StoryloomError';
    this.code = code;
    this.isRetryable = options.isRetryable ?? false;
  }

  /** True for any storyloom error, from this or any other installed copy of the package. */
  static isInstance(error: unknown): error is StoryloomError {
    return typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[MARKER] === true;
  }
}

function hasName(error: unknown, name: string): boolean {
  return StoryloomError.isInstance(error) && error.name === name;
}

/** A write lost a race: the stored version is not the one the caller expected, or the record already exists. */
export class ConflictError extends StoryloomError {
  declare private readonly conflictErrorBrand: never;
  readonly expectedVersion: number | undefined;
  readonly actualVersion: number | undefined;
  constructor(
    message: string,
    options: StoryloomErrorOptions & { expectedVersion?: number; actualVersion?: number } = {},
  ) {
    super('CONFLICT', message, { cause: options.cause, isRetryable: options.isRetryable ?? true });
    this.name = 'ConflictError';
    this.expectedVersion = options.expectedVersion;
    this.actualVersion = options.actualVersion;
  }
  static override isInstance(error: unknown): error is ConflictError {
    return hasName(error, 'ConflictError');
  }
}

/** The story, scene or record asked for does not exist. */
export class NotFoundError extends StoryloomError {
  declare private readonly notFoundErrorBrand: never;
  constructor(message: string, options: StoryloomErrorOptions = {}) {
    super('NOT_FOUND', message, options);
    this.name = 'NotFoundError';
  }
  static override isInstance(error: unknown): error is NotFoundError {
    return hasName(error, 'NotFoundError');
  }
}

/** One reason an input was rejected: where, and what was wrong. */
export interface ValidationProblem {
  path: string;
  message: string;
}

/** An input does not match its schema or an option is invalid. `problems` lists every reason. */
export class ValidationError extends StoryloomError {
  declare private readonly validationErrorBrand: never;
  readonly problems: ValidationProblem[];
  constructor(message: string, options: StoryloomErrorOptions & { problems?: ValidationProblem[] } = {}) {
    super('VALIDATION', message, options);
    this.name = 'ValidationError';
    this.problems = options.problems ?? [];
  }
  static override isInstance(error: unknown): error is ValidationError {
    return hasName(error, 'ValidationError');
  }
}

/** A proposed scene breaks the story's continuity (a dead character speaks, a resolved thread advances, ...). */
export class ContinuityError extends StoryloomError {
  declare private readonly continuityErrorBrand: never;
  readonly issues: IssueLike[];
  constructor(message: string, options: StoryloomErrorOptions & { issues: IssueLike[] }) {
    super('CONTINUITY', message, options);
    this.name = 'ContinuityError';
    this.issues = options.issues;
  }
  static override isInstance(error: unknown): error is ContinuityError {
    return hasName(error, 'ContinuityError');
  }
}

/** A remote provider (Anthropic, AWS, Pinecone, ...) failed. `status` is the HTTP status when there was one. */
export class ProviderError extends StoryloomError {
  declare private readonly providerErrorBrand: never;
  readonly provider: string;
  readonly status: number | undefined;
  /** Milliseconds the provider asked us to wait before retrying, when it said. */
  readonly retryAfterMs: number | undefined;
  constructor(
    message: string,
    options: StoryloomErrorOptions & { provider: string; status?: number; retryAfterMs?: number; code?: string },
  ) {
    super(options.code ?? 'PROVIDER', message, {
      cause: options.cause,
      isRetryable: options.isRetryable ?? isRetryableStatus(options.status),
    });
    this.name = 'ProviderError';
    this.provider = options.provider;
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }
  static override isInstance(error: unknown): error is ProviderError {
    return hasName(error, 'ProviderError');
  }
}

/** HTTP statuses that a retry can cure: timeouts, lock conflicts, rate limits and server errors (529 included). */
export function isRetryableStatus(status: number | undefined): boolean {
  if (status === undefined) return false;
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

/** A provider refused to produce content because a safety filter matched. Retrying the same input will not help. */
export class ContentFilteredError extends StoryloomError {
  declare private readonly contentFilteredErrorBrand: never;
  readonly provider: string;
  constructor(message: string, options: StoryloomErrorOptions & { provider: string }) {
    super('CONTENT_FILTERED', message, { cause: options.cause, isRetryable: false });
    this.name = 'ContentFilteredError';
    this.provider = options.provider;
  }
  static override isInstance(error: unknown): error is ContentFilteredError {
    return hasName(error, 'ContentFilteredError');
  }
}

/**
 * Why a retried call gave up: every allowed attempt failed, a later attempt failed in a way retrying cannot cure, or
 * the provider asked to wait longer than `maxRetryAfterMs`.
 */
export type RetryGiveUpReason = 'maxRetriesExceeded' | 'errorNotRetryable' | 'retryAfterTooLong';

/** Every attempt of a retried call failed. `errors` holds each attempt's error, oldest first. */
export class RetryError extends StoryloomError {
  declare private readonly retryErrorBrand: never;
  readonly errors: unknown[];
  readonly attempts: number;
  readonly reason: RetryGiveUpReason;
  constructor(message: string, options: { errors: unknown[]; reason: RetryGiveUpReason }) {
    super('RETRY_EXHAUSTED', message, { cause: options.errors.at(-1), isRetryable: false });
    this.name = 'RetryError';
    this.errors = options.errors;
    this.attempts = options.errors.length;
    this.reason = options.reason;
  }
  static override isInstance(error: unknown): error is RetryError {
    return hasName(error, 'RetryError');
  }
}

/**
 * Optional packages that a subpath entry needs are not installed. The message says what to install: every missing
 * package at once, so that installing what it names is enough.
 */
export class MissingDependencyError extends StoryloomError {
  declare private readonly missingDependencyErrorBrand: never;
  /** What to install: the missing package, or the missing packages separated by spaces (`npm install <packageName>`). */
  readonly packageName: string;
  /** Each missing package. */
  readonly packageNames: readonly string[];
  constructor(packageName: string | readonly string[], feature: string, options: StoryloomErrorOptions = {}) {
    const names = typeof packageName === 'string' ? [packageName] : [...packageName];
    const install = names.join(' ');
    super(
      'MISSING_DEPENDENCY',
      names.length === 1
        ? `${feature} needs the optional package "${install}". Install it with: npm install ${install}`
        : `${feature} needs the optional packages ${names.map((name) => `"${name}"`).join(' and ')}. Install them with: npm install ${install}`,
      options,
    );
    this.name = 'MissingDependencyError';
    this.packageName = install;
    this.packageNames = names;
  }
  static override isInstance(error: unknown): error is MissingDependencyError {
    return hasName(error, 'MissingDependencyError');
  }
}

/** The adapter was closed with `close()`; it accepts no further calls. */
export class ClosedError extends StoryloomError {
  declare private readonly closedErrorBrand: never;
  constructor(message: string, options: StoryloomErrorOptions = {}) {
    super('CLOSED', message, options);
    this.name = 'ClosedError';
  }
  static override isInstance(error: unknown): error is ClosedError {
    return hasName(error, 'ClosedError');
  }
}

/** The operation was cancelled through its `AbortSignal`. */
export class AbortedError extends StoryloomError {
  declare private readonly abortedErrorBrand: never;
  constructor(message = 'The operation was aborted', options: StoryloomErrorOptions = {}) {
    super('ABORTED', message, options);
    this.name = 'AbortedError';
  }
  static override isInstance(error: unknown): error is AbortedError {
    return hasName(error, 'AbortedError');
  }
}

/** Throws an `AbortedError` (carrying the signal's reason) when the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError(undefined, { cause: signal.reason });
}

/** Turns zod-style issues into validation problems with dotted paths. */
export function toProblems(
  issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }>,
  prefix = '',
): ValidationProblem[] {
  return issues.map((issue) => ({
    path: [prefix, ...issue.path.map((part) => String(part))].filter(Boolean).join('.') || '(root)',
    message: issue.message,
  }));
}

/** What went wrong with a storage file; see `StorageError.reason`. */
export type StorageFailure =
  /** The path cannot be opened: a missing folder, a directory, no permission. */
  | 'cannotOpen'
  /** The file exists but is not a database of this kind (random bytes, a text file, another application's file). */
  | 'notADatabase'
  /** The file is a database but damaged: truncated, or failing its integrity check. */
  | 'corrupt'
  /** A write was attempted on a store opened read-only, or on a file the process may not write. */
  | 'readOnly'
  /** Another process held the write lock for longer than the configured wait. Retrying may help. */
  | 'busy'
  /** Any other failure of the storage engine (disk full, I/O error). */
  | 'io';

/**
 * A durable store (a SQLite file, say) could not be opened, read or written. `reason` says which; `path` names the
 * file. Nothing stored is damaged by the failed call: the store refuses instead of repairing or overwriting.
 *
 * @example
 * ```ts
 * import { StorageError } from 'storyloom';
 * import { createSqliteStateStore } from 'storyloom/sqlite';
 * try {
 *   createSqliteStateStore({ path: 'notes.txt' });
 * } catch (error) {
 *   if (StorageError.isInstance(error) && error.reason === 'notADatabase') console.error(error.message);
 * }
 * ```
 */
export class StorageError extends StoryloomError {
  declare private readonly storageErrorBrand: never;
  readonly reason: StorageFailure;
  readonly path: string | undefined;
  constructor(message: string, options: StoryloomErrorOptions & { reason: StorageFailure; path?: string }) {
    super('STORAGE', message, { cause: options.cause, isRetryable: options.isRetryable ?? options.reason === 'busy' });
    this.name = 'StorageError';
    this.reason = options.reason;
    this.path = options.path;
  }
  static override isInstance(error: unknown): error is StorageError {
    return hasName(error, 'StorageError');
  }
}

/**
 * A storage file was written by a newer version of storyloom (its schema version is above the one this version
 * knows). The file is left untouched: upgrade storyloom to open it.
 *
 * @example
 * ```ts
 * import { SchemaVersionError } from 'storyloom';
 * try { openStore() } catch (error) {
 *   if (SchemaVersionError.isInstance(error)) console.error(`file schema ${error.fileVersion} > ${error.supportedVersion}`);
 * }
 * ```
 */
export class SchemaVersionError extends StoryloomError {
  declare private readonly schemaVersionErrorBrand: never;
  readonly fileVersion: number;
  readonly supportedVersion: number;
  readonly path: string | undefined;
  constructor(
    message: string,
    options: StoryloomErrorOptions & { fileVersion: number; supportedVersion: number; path?: string },
  ) {
    super('SCHEMA_VERSION', message, { cause: options.cause, isRetryable: false });
    this.name = 'SchemaVersionError';
    this.fileVersion = options.fileVersion;
    this.supportedVersion = options.supportedVersion;
    this.path = options.path;
  }
  static override isInstance(error: unknown): error is SchemaVersionError {
    return hasName(error, 'SchemaVersionError');
  }
}
