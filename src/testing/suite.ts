/**
 * The harness shared by every conformance suite. Suites are plain lists of cases using `node:assert`, registered
 * with whatever `describe`/`it` the caller passes (vitest, `node:test`, ...), so this entry imports no test runner.
 *
 * @module
 */

/** The part of a test runner a suite needs. Vitest's and `node:test`'s `describe`/`it` both fit. */
export interface SuiteTestApi {
  describe: (name: string, body: () => void) => void;
  it: ((name: string, body: (context: RunnerContext) => Promise<void>, timeout?: number) => void) & {
    skip: (name: string, body: () => void) => void;
  };
}

/** The per-test context of the runner; vitest's and `node:test`'s both offer `skip(reason)`. */
export interface RunnerContext {
  skip?: (note?: string) => void;
}

/** How an adapter runs a suite against itself. */
export interface SuiteOptions<T> {
  /** Shown in the test names, e.g. `sqlite` or `dynamodb-local`. */
  name: string;
  /** A fresh, empty subject for one case. */
  create: () => Promise<T> | T;
  /** Releases a subject after its case. */
  destroy?: (subject: T) => Promise<void> | void;
  /** Cases to skip, by name, each with the reason printed beside it. */
  skip?: Readonly<Record<string, string>>;
  /** Per-case timeout in ms. Default 30000. */
  timeoutMs?: number;
}

/** One case of a suite. `skipUnless` returns a reason to skip when the subject lacks a capability. */
export interface SuiteCase<T> {
  name: string;
  run: (subject: T, context: { create: () => Promise<T> }) => Promise<void>;
  skipUnless?: (subject: T) => string | undefined;
}

/** Registers `cases` under `title` with the test API, honouring skips and capabilities. Returns the case count. */
export function registerSuite<T>(
  api: SuiteTestApi,
  title: string,
  cases: ReadonlyArray<SuiteCase<T>>,
  options: SuiteOptions<T>,
): number {
  const unknown = Object.keys(options.skip ?? {}).filter((name) => !cases.some((c) => c.name === name));
  if (unknown.length > 0) throw new Error(`${title}: skip names no case: ${unknown.join(', ')}`);
  api.describe(`${title} (${options.name})`, () => {
    for (const testCase of cases) {
      const reason = options.skip?.[testCase.name];
      if (reason !== undefined) {
        if (reason.trim() === '') throw new Error(`${title}: skipping "${testCase.name}" needs a reason`);
        api.it.skip(`${testCase.name} [skipped: ${reason}]`, () => {});
        continue;
      }
      api.it(
        testCase.name,
        async (context: RunnerContext) => {
          const created: T[] = [];
          const create = async () => {
            const subject = await options.create();
            created.push(subject);
            return subject;
          };
          try {
            const subject = await create();
            const missing = testCase.skipUnless?.(subject);
            // A capability gap is only known once the subject exists: the case is skipped at run time, with its reason.
            if (missing !== undefined) {
              if (typeof context?.skip === 'function') context.skip(`not supported by ${options.name}: ${missing}`);
              else console.info(`[${title} / ${options.name}] ${testCase.name}: skipped: ${missing}`);
              return;
            }
            await testCase.run(subject, { create });
          } finally {
            for (const subject of created.reverse()) await options.destroy?.(subject);
          }
        },
        options.timeoutMs ?? 30_000,
      );
    }
  });
  return cases.length;
}
