import { describe, expect, it } from 'vitest';
import { MissingDependencyError } from './errors.js';
import { importPackages } from './optional-import.js';

/** What Node's loader throws for a package that is not installed. */
function notInstalled(name: string): Promise<never> {
  return Promise.reject(Object.assign(new Error(`Cannot find package '${name}'`), { code: 'ERR_MODULE_NOT_FOUND' }));
}

describe('importPackages', () => {
  it('names every missing package in one error, so that one install command is enough', async () => {
    const error = await importPackages('storyloom/dynamodb', {
      client: ['@aws-sdk/client-dynamodb', () => notInstalled('@aws-sdk/client-dynamodb')],
      document: ['@aws-sdk/lib-dynamodb', () => notInstalled('@aws-sdk/lib-dynamodb')],
    }).catch((caught: unknown) => caught);
    expect(MissingDependencyError.isInstance(error)).toBe(true);
    const missing = error as MissingDependencyError;
    expect(missing.packageNames).toEqual(['@aws-sdk/client-dynamodb', '@aws-sdk/lib-dynamodb']);
    expect(missing.message).toBe(
      'storyloom/dynamodb needs the optional packages "@aws-sdk/client-dynamodb" and "@aws-sdk/lib-dynamodb". ' +
        'Install them with: npm install @aws-sdk/client-dynamodb @aws-sdk/lib-dynamodb',
    );
  });

  it('names only what is missing, and hands over what loaded', async () => {
    const error = await importPackages('storyloom/dynamodb', {
      client: ['a', () => Promise.resolve({ a: 1 })],
      document: ['b', () => notInstalled('b')],
    }).catch((caught: unknown) => caught);
    expect((error as MissingDependencyError).packageNames).toEqual(['b']);
    expect((error as MissingDependencyError).message).toContain(
      'the optional package "b". Install it with: npm install b',
    );
    await expect(
      importPackages('x', { one: ['a', () => Promise.resolve(1)], two: ['b', () => Promise.resolve('2')] }),
    ).resolves.toEqual({ one: 1, two: '2' });
  });

  it('throws any other failure of an import as it is', async () => {
    const broken = new SyntaxError('Unexpected token');
    await expect(
      importPackages('x', { one: ['a', () => Promise.reject(broken)], two: ['b', () => notInstalled('b')] }),
    ).rejects.toBe(broken);
  });
});
