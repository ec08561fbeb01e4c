import { describe, expect, expectTypeOf, it, vi } from 'vitest';
import {
  AbortedError,
  ClosedError,
  ConflictError,
  ContentFilteredError,
  ContinuityError,
  isRetryableStatus,
  MissingDependencyError,
  NotFoundError,
  ProviderError,
  RetryError,
  StorageError,
  StoryloomError,
  throwIfAborted,
  toProblems,
  ValidationError,
} from './errors.js';

const issue = {
  code: 'DEAD_CHARACTER_ACTS',
  severity: 'error' as const,
  path: 'characters.ana',
  message: 'Ana is dead',
};

/** One instance of every error class, with the code and retryability a caller can rely on. */
const catalogue = [
  { error: new ConflictError('version moved'), type: ConflictError, code: 'CONFLICT', isRetryable: true },
  { error: new NotFoundError('no such story'), type: NotFoundError, code: 'NOT_FOUND', isRetryable: false },
  { error: new ValidationError('bad input'), type: ValidationError, code: 'VALIDATION', isRetryable: false },
  {
    error: new ContinuityError('breaks continuity', { issues: [issue] }),
    type: ContinuityError,
    code: 'CONTINUITY',
    isRetryable: false,
  },
  {
    error: new ProviderError('upstream failed', { provider: 'anthropic', status: 529 }),
    type: ProviderError,
    code: 'PROVIDER',
    isRetryable: true,
  },
  {
    error: new ContentFilteredError('filtered', { provider: 'bedrock' }),
    type: ContentFilteredError,
    code: 'CONTENT_FILTERED',
    isRetryable: false,
  },
  {
    error: new RetryError('gave up', { errors: [new Error('a')], reason: 'maxRetriesExceeded' }),
    type: RetryError,
    code: 'RETRY_EXHAUSTED',
    isRetryable: false,
  },
  {
    error: new MissingDependencyError('ioredis', 'The Redis cache'),
    type: MissingDependencyError,
    code: 'MISSING_DEPENDENCY',
    isRetryable: false,
  },
  { error: new AbortedError(), type: AbortedError, code: 'ABORTED', isRetryable: false },
] as const;

describe('storyloom errors', () => {
  it.each(catalogue)(
    '$type.name has the stable code $code and a matching name',
    ({ error, type, code, isRetryable }) => {
      expect(error).toBeInstanceOf(Error);
      expect(error).toBeInstanceOf(StoryloomError);
      expect(error.code).toBe(code);
      expect(error.name).toBe(type.name);
      expect(error.isRetryable).toBe(isRetryable);
      expect(String(error)).toContain(type.name);
    },
  );

  it('isInstance() of each class accepts its own errors and rejects every other class', () => {
    for (const { type } of catalogue) {
      for (const { error } of catalogue) {
        expect(type.isInstance(error), `${type.name}.isInstance(${error.name})`).toBe(error instanceof type);
      }
    }
    for (const { error } of catalogue) expect(StoryloomError.isInstance(error)).toBe(true);
  });

  it('isInstance() rejects values that are not storyloom errors, even with a matching name', () => {
    const impostor = Object.assign(new Error('not ours'), { name: 'ConflictError', code: 'CONFLICT' });
    for (const value of [impostor, new Error('plain'), null, undefined, 'ConflictError', 42, {}]) {
      expect(StoryloomError.isInstance(value)).toBe(false);
      expect(ConflictError.isInstance(value)).toBe(false);
    }
  });

  it('isInstance() recognises errors thrown by a second copy of the module', async () => {
    vi.resetModules();
    const second = (await import('./errors.js')) as typeof import('./errors.js');
    expect(second.ConflictError).not.toBe(ConflictError);

    const foreign = new second.ConflictError('raced', { expectedVersion: 3, actualVersion: 4 });
    expect(foreign).not.toBeInstanceOf(ConflictError);
    expect(ConflictError.isInstance(foreign)).toBe(true);
    expect(StoryloomError.isInstance(foreign)).toBe(true);
    expect(NotFoundError.isInstance(foreign)).toBe(false);
    if (ConflictError.isInstance(foreign)) expect(foreign.actualVersion).toBe(4);

    // And the other way round: the second copy knows the first copy's errors.
    expect(second.NotFoundError.isInstance(new NotFoundError('gone'))).toBe(true);
    expect(second.ConflictError.isInstance(new NotFoundError('gone'))).toBe(false);
  });

  it('isInstance() relies only on the shared Symbol.for marker and the name', () => {
    const marked = { [Symbol.for('storyloom.error')]: true, name: 'NotFoundError', code: 'NOT_FOUND' };
    expect(StoryloomError.isInstance(marked)).toBe(true);
    expect(NotFoundError.isInstance(marked)).toBe(true);
    expect(ConflictError.isInstance(marked)).toBe(false);
    expect(StoryloomError.isInstance({ [Symbol('storyloom.error')]: true, name: 'NotFoundError' })).toBe(false);
  });

  it('keeps the cause, and sets none when none was given', () => {
    const cause = new Error('socket hang up');
    expect(new NotFoundError('missing', { cause }).cause).toBe(cause);
    expect(new ConflictError('raced', { cause }).cause).toBe(cause);
    expect(new ProviderError('failed', { provider: 'pinecone', cause }).cause).toBe(cause);
    expect(new ContentFilteredError('filtered', { provider: 'bedrock', cause }).cause).toBe(cause);
    expect('cause' in new NotFoundError('missing')).toBe(false);
  });

  it('ConflictError is retryable unless told otherwise, and carries both versions', () => {
    const conflict = new ConflictError('raced', { expectedVersion: 3, actualVersion: 5 });
    expect(conflict.isRetryable).toBe(true);
    expect([conflict.expectedVersion, conflict.actualVersion]).toEqual([3, 5]);
    expect(new ConflictError('exists', { isRetryable: false }).isRetryable).toBe(false);
    // Options forwarded field by field may hold an explicit undefined: that must not turn retrying off.
    expect(new ConflictError('raced', { isRetryable: undefined }).isRetryable).toBe(true);
  });

  it('ProviderError derives retryability from the HTTP status unless told otherwise', () => {
    expect(new ProviderError('rate limited', { provider: 'anthropic', status: 429 }).isRetryable).toBe(true);
    expect(new ProviderError('bad request', { provider: 'anthropic', status: 400 }).isRetryable).toBe(false);
    expect(new ProviderError('network', { provider: 'anthropic' }).isRetryable).toBe(false);
    expect(new ProviderError('network', { provider: 'anthropic', isRetryable: true }).isRetryable).toBe(true);
    expect(new ProviderError('overloaded', { provider: 'x', status: 529, isRetryable: false }).isRetryable).toBe(false);
    const throttled = new ProviderError('slow down', {
      provider: 'dynamodb',
      status: 400,
      code: 'THROTTLED',
      retryAfterMs: 750,
    });
    expect([throttled.code, throttled.provider, throttled.status, throttled.retryAfterMs]).toEqual([
      'THROTTLED',
      'dynamodb',
      400,
      750,
    ]);
  });

  it.each([
    [undefined, false],
    [200, false],
    [400, false],
    [401, false],
    [403, false],
    [404, false],
    [408, true],
    [409, true],
    [413, false],
    [422, false],
    [429, true],
    [500, true],
    [502, true],
    [503, true],
    [504, true],
    [529, true],
  ])('isRetryableStatus(%s) is %s', (status, expected) => {
    expect(isRetryableStatus(status)).toBe(expected);
  });

  it('RetryError holds every attempt, oldest first, the last one as cause, and why it gave up', () => {
    const errors = [new Error('first'), new Error('second'), new Error('third')];
    const error = new RetryError('gave up', { errors, reason: 'errorNotRetryable' });
    expect(error.errors).toEqual(errors);
    expect(error.attempts).toBe(3);
    expect(error.cause).toBe(errors[2]);
    expect(error.reason).toBe('errorNotRetryable');
  });

  it('StorageError is retryable only for a busy write lock, unless told otherwise', () => {
    const retryable = (reason: StorageError['reason']) => new StorageError('failed', { reason }).isRetryable;
    expect(retryable('busy')).toBe(true);
    for (const reason of ['cannotOpen', 'notADatabase', 'corrupt', 'readOnly', 'io'] as const) {
      expect(retryable(reason), reason).toBe(false);
    }
    expect(new StorageError('vanished', { reason: 'io', isRetryable: true }).isRetryable).toBe(true);
  });

  it('MissingDependencyError says what to install', () => {
    const error = new MissingDependencyError('@pinecone-database/pinecone', 'storyloom/pinecone');
    expect(error.packageName).toBe('@pinecone-database/pinecone');
    expect(error.message).toContain('npm install @pinecone-database/pinecone');
    expect(error.message).toContain('storyloom/pinecone');
  });

  it('ValidationError and ContinuityError carry their details', () => {
    expect(new ValidationError('bad').problems).toEqual([]);
    const problems = [{ path: 'bible.title', message: 'Required' }];
    expect(new ValidationError('bad', { problems }).problems).toEqual(problems);
    expect(new ContinuityError('broken', { issues: [issue] }).issues).toEqual([issue]);
  });

  it('throwIfAborted throws an AbortedError carrying the reason only once the signal fired', () => {
    const controller = new AbortController();
    expect(() => throwIfAborted(controller.signal)).not.toThrow();
    expect(() => throwIfAborted(undefined)).not.toThrow();
    const reason = new Error('shutting down');
    controller.abort(reason);
    let thrown: unknown;
    try {
      throwIfAborted(controller.signal);
    } catch (error) {
      thrown = error;
    }
    expect(AbortedError.isInstance(thrown)).toBe(true);
    expect((thrown as AbortedError).cause).toBe(reason);
  });

  it('narrowing with one class keeps the others in the else branch (a type check: the project typecheck fails if not)', () => {
    // A class that adds no field of its own was the same type as StoryloomError, so the branch after its guard was
    // `never` and `error.code` there did not compile; ContentFilteredError was a supertype of ProviderError likewise.
    const kind = (error: StoryloomError): string => {
      if (NotFoundError.isInstance(error)) return 'missing';
      if (ClosedError.isInstance(error)) return 'closed';
      if (AbortedError.isInstance(error)) return 'aborted';
      return error.code;
    };
    const status = (error: ProviderError): number | string | undefined =>
      ContentFilteredError.isInstance(error) ? 'filtered' : error.status;
    expect(kind(new NotFoundError('gone'))).toBe('missing');
    expect(kind(new ClosedError('closed'))).toBe('closed');
    expect(kind(new AbortedError())).toBe('aborted');
    expect(kind(new ConflictError('moved'))).toBe('CONFLICT');
    expect(status(new ProviderError('down', { provider: 'p', status: 503 }))).toBe(503);
    // A subclass of a user's may still name itself, and a name may still be set.
    class HttpNotFound extends NotFoundError {
      constructor() {
        super('no such page');
        this.name = 'HttpNotFound';
      }
    }
    const renamed: StoryloomError = new HttpNotFound();
    expect(kind(renamed)).toBe('NOT_FOUND');
    expect(renamed.name).toBe('HttpNotFound');
    expectTypeOf<NotFoundError>().not.toEqualTypeOf<StoryloomError>();
    expectTypeOf<ClosedError>().not.toEqualTypeOf<AbortedError>();
    expectTypeOf<ProviderError>().not.toMatchTypeOf<ContentFilteredError>();
  });

  it('toProblems turns zod-style issue paths into dotted paths', () => {
    const problems = toProblems([
      { path: ['characters', 'ana', 'traits', 0], message: 'Too big' },
      { path: [], message: 'Invalid object' },
    ]);
    expect(problems).toEqual([
      { path: 'characters.ana.traits.0', message: 'Too big' },
      { path: '(root)', message: 'Invalid object' },
    ]);
    expect(toProblems([{ path: ['title'], message: 'Required' }], 'bible')).toEqual([
      { path: 'bible.title', message: 'Required' },
    ]);
    expect(toProblems([{ path: [], message: 'Required' }], 'bible')).toEqual([{ path: 'bible', message: 'Required' }]);
  });
});
