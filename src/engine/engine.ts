/**
 * `StoryEngine`: the episode pipeline of storyloom.
 *
 * pull influences → load → (resume the last scene's unfinished steps) → resolve influences → context → generate →
 * continuity → **commit** → index → cache → image → publish to every publisher.
 *
 * Everything before the commit is free to run twice. The commit happens at most once per story version, because
 * the scene id is a function of the story and the version (and of the idempotency key, when there is one): two runs
 * at the same version write the same scene id and the store keeps the first. Every step after the commit is
 * recorded in the store's publication log, so a run that crashed there is finished by the next run, which resumes
 * exactly the steps that have no `done` or `skipped` entry.
 *
 * @module
 */
import { createHash, randomUUID } from 'node:crypto';
import type { InfluenceSource } from '../chain/influence-source.js';
import { ContextManager, RETRIEVAL_BOUNDS } from '../context/context-manager.js';
import { quoteAudienceText, threadKnownTo } from '../context/prompt-layout.js';
import { timeoutProblems, untilAborted, waitUnlessAborted } from '../core/abort.js';
import { type Clock, isoNow, systemClock } from '../core/clock.js';
import {
  AbortedError,
  ConflictError,
  ContentFilteredError,
  ContinuityError,
  NotFoundError,
  ProviderError,
  RetryError,
  StoryloomError,
  throwIfAborted,
  ValidationError,
  type ValidationProblem,
} from '../core/errors.js';
import { callListener } from '../core/listener.js';
import { describeValue, unknownKeyProblems } from '../core/option-keys.js';
import { RETRY_DEFAULTS, type RetryOptions, retryOptionsProblems, withRetry } from '../core/retry.js';
import { ellipsize } from '../core/text.js';
import { IMAGE_ASPECT_RATIOS, type ImageGenerator, type ImageRequest } from '../generation/image-generator.js';
import { sceneIllustrationRequest } from '../generation/image-prompt.js';
import type { SceneDraft, SceneGenerator, SceneRequest, Usage } from '../generation/scene-generator.js';
import { type EpisodeImage, type Publisher, type PublishResult, sceneAltText } from '../publishing/publisher.js';
import { applyDelta, assertContinuity, type ContinuityIssue, unknownDeltaFields } from '../state/reducer.js';
import {
  characterOf,
  LIMITS,
  type Scene,
  SceneSchema,
  type StateDelta,
  StateDeltaSchema,
  type StoryState,
  type UserInfluence,
  type UserInfluenceInput,
  UserInfluenceSchema,
} from '../state/schema.js';
import type { PublicationEntry, StoryStateStore } from '../state/store.js';
import { createStateOnlyContext, type EpisodeContext, type PointOfViewKnown } from './episode-context.js';
import {
  EpisodeIncompleteError,
  isRetryableStepFailure,
  type StepFailure,
  type StoreOperation,
  StoreTimeoutError,
} from './episode-errors.js';
import { type EngineEvent, type EngineLogger, type EngineStep, type StepStatus, silentLogger } from './events.js';
import {
  type InfluenceOutcome,
  type InfluencePolicy,
  type InfluenceResolution,
  influencePolicyProblems,
  resolveInfluences,
  settleInfluences,
} from './influence-resolution.js';

/**
 * Options of `createStoryEngine`. Only `store` and `generator` are required. A key that is not one of these is refused
 * (`ValidationError`), so that a misspelt option (`publisher` for `publishers`) is not left at its default unseen.
 */
export interface StoryEngineOptions {
  store: StoryStateStore;
  generator: SceneGenerator;
  /** The context layer (a `ContextManager`, or anything that fits `EpisodeContext`). Default: `createStateOnlyContext({ store })`. */
  context?: EpisodeContext;
  /** Draws a picture per scene. Without it there is no `image` step (unless `imageSkipReason` is given). */
  images?: ImageGenerator;
  /**
   * Without `images`: the `image` step of each scene is logged as skipped with this reason before the scene is
   * published (what `storyloom run --no-images` does), so an engine with pictures that finishes the scene's steps
   * later publishes it without one instead of drawing it, and its `status` does not call that picture owed.
   * Ignored with `images`.
   */
  imageSkipReason?: string;
  /** Where scenes go; each is a `publish:<target>` step. Targets must be unique. */
  publishers?: readonly Publisher[];
  /** Where audience influence comes from; pulled at the start of every run. */
  influenceSources?: readonly InfluenceSource[];
  /** Time for scene timestamps, event timings and retry waits. Default: the system clock. */
  clock?: Clock;
  logger?: EngineLogger;
  /**
   * Called before and after every step, and not awaited. An exception thrown here, or a promise it returns that
   * rejects (an async listener), is logged, never allowed to break an episode.
   */
  onEvent?: (event: EngineEvent) => void;
  /** How votes are weighed. */
  influencePolicy?: InfluencePolicy;
  /** Retries of each step's calls (`withRetry`): only retryable errors are retried. */
  retry?: Omit<RetryOptions, 'signal' | 'clock' | 'onRetry'>;
  /**
   * Passed to `getRelevantContext`: how many memories, the token budget, and a point of view (`povCharacterId`: every
   * scene is written from what that character witnessed or knows; a context layer without points of view ignores it).
   * Checked when the engine is built, so that a value every episode would fail on is refused up front: with a
   * `ContextManager` as `context`, against the bounds its `getRelevantContext` sets (`RETRIEVAL_BOUNDS`: `k` an
   * integer from 1 to 100, `tokenBudget` one from 256 to 2,000,000), with another context layer as whole numbers
   * from 1; `povCharacterId` a string. Other keys are refused too.
   */
  retrieval?: { k?: number; tokenBudget?: number; povCharacterId?: string };
  /** How often a run that lost the commit to another reloads and tries again. Default 3. */
  maxConflictRetries?: number;
  /**
   * The most pending influences one scene takes, oldest first; the rest stay pending for later scenes. Every influence
   * a scene takes is quoted in its prompt, and a story's queue may hold 1,000 of up to about 1,200 characters each:
   * all of them would overflow a model's context window (the call fails, nothing commits, and every later episode
   * fails the same way) and cost far more than the scene is worth. A store's own `maxInfluencesPerCommit`, when
   * lower, wins. An integer from 1 to 1,000. Default 100.
   */
  maxInfluencesPerScene?: number;
  /**
   * The longest one attempt of a step may take, in ms: pulling influences, retrieving context, generating, and each
   * step after the commit (index, cache, image, each publisher). An attempt that takes longer is told to stop
   * through its signal, and fails with a retryable `TIMEOUT` error, so a call that never answers cannot hold a
   * long-running process's episodes forever. Default 900000 (15 minutes, Lambda's own ceiling); `Infinity` turns it
   * off. A context step that must first rebuild a large story's indexes (after an embedder change) can take long:
   * run `reindex` ahead of such a deploy, or raise this. Timed on the system's timers, not `clock`: a finite limit is
   * at most 2147483647 (about 24.8 days), the longest a timer waits.
   *
   * One limit serves every step, and the default equals Lambda's ceiling, so in a Lambda it never fires before the
   * function is killed: pass `runEpisode` a signal that fires ahead of the end instead
   * (`AbortSignal.timeout(Math.max(1, left - Math.min(10_000, Math.floor(left / 10))))`, `left` the function's
   * `getRemainingTimeInMillis()`; a bare `left - 10_000` throws when 10 s or less are left), which stops the run
   * cleanly.
   */
  stepTimeoutMs?: number;
  /**
   * The longest the engine waits for one call of the state store, in ms (loading the story, reading a scene or the
   * publication log, storing an influence, recording a step, the commit). A call that takes longer fails the run
   * with a retryable `StoreTimeoutError` (code `TIMEOUT`), so a store whose connection stalled cannot hold a run,
   * nor its caller, forever. The store port takes no signal: the call is left behind, still going, and may land
   * later, which the engine's design makes safe (see `RunEpisodeOptions.signal`). A commit that times out is in doubt
   * and is never made again in the same run: the next run finds it landed, or commits at the same version under the
   * same scene id. Default 60000, above what a store's own bounds and retries take first (the DynamoDB store: three
   * attempts of 10 s each and the waits between them); `Infinity` turns it off; a finite limit is at most
   * 2147483647. Timed on the system's timers, not `clock`.
   */
  storeTimeoutMs?: number;
  /**
   * How far apart the clocks of the processes that run a story's episodes may be, in ms. The claim a run takes on the
   * publish step of a publisher that is not idempotent carries a lease written on that run's clock; every other run,
   * and `resolvePublication`, counts the claim as held until its lease plus this allowance on its own clock. Without
   * it, a process whose clock runs ahead would take a claim whose holder is still calling for lapsed: report the step
   * in doubt, and let `resolvePublication` settle it as not published without `force`, so that the next run posts a
   * second time. Settling without `force` is safe only as far as the clocks agree within this allowance.
   *
   * Default 300000 (5 minutes): hosts kept by NTP or a cloud time service agree within milliseconds, and 5 minutes is
   * the tolerance Kerberos and AWS request signing allow by default, so a host further off than that already fails
   * its cloud calls. It costs only that a step left by a crashed run is reported in progress (retryable) rather than
   * in doubt for 5 more minutes. A number of ms from 0 to 86400000 (a day).
   */
  maxClockSkewMs?: number;
  /** Aspect ratio of scene pictures (`sceneIllustrationRequest` builds each picture's request). Default `16:9`. */
  imageAspectRatio?: ImageRequest['aspectRatio'];
}

/** Options of one `runEpisode`. */
export interface RunEpisodeOptions {
  /**
   * Stops the run between steps, and ends a wait for the state store at once: a run parked in a store call that does
   * not answer settles with `AbortedError` when the signal fires. The write of a publish step's claim (a publisher that
   * is not idempotent) is given half a second more, never past `storeTimeoutMs`: answered by then, a claim of the
   * run's is released before the run settles, which a process frozen once its handler returns (a Lambda) could not do
   * later. It never splits the commit, which is one atomic write that lands whole or not at all. A call that joined a
   * run already in flight in this process (same story and key) rejects with `AbortedError` as soon as its signal
   * fires, and the run goes on for the other callers; it is stopped only when every caller has aborted, and the last
   * caller's promise settles when it has.
   *
   * Once that promise has settled, what may still be in flight:
   * - the one store call the run was waiting for when the signal fired (or that timed out: `storeTimeoutMs`), which
   *   the engine cannot stop (the port takes no signal). It may still land, and that is safe. A late commit lands at
   *   most once per version (its scene id is fixed by story, version and key, and it is version-conditional) and
   *   resolves the influences it took in the same atomic write: the next run either finds the scene and finishes
   *   its steps, or commits at that version itself, the first of the two to land winning and the other writing
   *   nothing. A late entry of the publication log says what the run did or meant to do (a step that finished; a
   *   key's claim of the scene it commits, believed only once that scene exists); a late claim of a publish step,
   *   with no call made under it, is released once it lands (should the process end first, it reads as in progress
   *   for its lease and then in doubt until `resolvePublication`, as after a crash), never published twice. A late
   *   influence is stored once, by its id.
   * - a step's call left behind by its attempt's time limit (`stepTimeoutMs`): it was told through its signal. A call
   *   that ignores the signal holds the run until that limit, since the step's outcome is not known before.
   *
   * What the run records on its way out (the release of a publish claim before any call, the end of a call cut
   * short) is waited for within `storeTimeoutMs`, so the promise may settle up to that long after the signal.
   */
  signal?: AbortSignal;
  /**
   * Makes the run idempotent: a second run with the same key returns the scene the first produced (finishing its
   * unfinished steps) instead of writing another. For a scheduler that delivers at least once, use the story and
   * the scheduled time (EventBridge's execution id changes per attempt). Every run first finishes the steps the last
   * committed scene left unfinished: without a key that is the whole run (`resumed`); with a new key the run then
   * writes its own scene, once those steps are done.
   */
  idempotencyKey?: string;
}

/** What happened to one step in this run. `already` means the log had it finished before this run. */
export interface StepReport {
  step: EngineStep;
  sceneId: string;
  status: StepStatus | 'already';
  durationMs: number;
  /** What was recorded in the publication log. */
  result?: Record<string, unknown>;
  error?: unknown;
}

/**
 * The outcome of `runEpisode`.
 *
 * - `created`: this run committed `scene`.
 * - `resumed`: this run wrote nothing new; it finished the unfinished steps of `scene`, the last committed scene.
 * - `existing`: another run (concurrent, or earlier with the same idempotency key) committed `scene`; this run
 *   returns it, finishing its steps only when it was found through the idempotency key.
 */
export interface EpisodeResult {
  storyId: string;
  outcome: 'created' | 'resumed' | 'existing';
  scene: Scene;
  /** Post-commit steps handled by this run (including those of an earlier scene it resumed first). */
  steps: StepReport[];
  /** True when every post-commit step of `scene` is `done` or `skipped` in the publication log. */
  complete: boolean;
  /** Steps that failed or were blocked in this run. */
  failures: StepFailure[];
  /** How the influences this scene took ended (for `created`). */
  influences?: { applied: string[]; rejected: Array<{ id: string; reason: string }>; ignored: string[] };
  /** Continuity warnings of the committed delta (for `created`). */
  warnings: ContinuityIssue[];
  usage?: Usage;
  idempotencyKey?: string;
}

/**
 * The episode pipeline. See `createStoryEngine`.
 *
 * @example
 * ```ts
 * import { createStoryEngine, type StoryEngine } from 'storyloom';
 * const engine: StoryEngine = createStoryEngine({ store, generator });
 * const result = await engine.runEpisode('lighthouse');
 * ```
 */
export interface StoryEngine {
  /** The post-commit steps, in order: the publication log targets a scene must have to be complete. */
  readonly steps: readonly EngineStep[];
  /**
   * Runs (or finishes) one episode of `storyId`. `options` left out or `null` is no options; anything else that is
   * not an object is refused with a `ValidationError`.
   */
  runEpisode(storyId: string, options?: RunEpisodeOptions | null): Promise<EpisodeResult>;
  /**
   * Settles a publish step left in doubt (`PUBLISH_IN_DOUBT`): a publisher that is not idempotent was called for the
   * scene and no outcome was recorded (a crash, a timeout, an error that does not say nothing went out), so the engine
   * will not call it again on its own. After checking the target: `published` records the step as done (with the
   * `url` and `ids` found there, if given, as many as the log keeps); `not-published` lets the next run call the
   * publisher once more. `ValidationError` for an unknown target, a step not in doubt, or one whose claim still holds
   * while its run may still be publishing (a call that ended with an error, or in the abort of its run, is over at
   * once; `force: true` settles it all the same, for a run known to have stopped). A claim holds for its lease, on
   * its holder's clock, and `maxClockSkewMs` more on this engine's: settling without `force` assumes the clocks agree
   * within that allowance. `options` left out or `null` is no options.
   */
  resolvePublication(
    storyId: string,
    sceneId: string,
    target: string,
    outcome: 'published' | 'not-published',
    options?: { url?: string; ids?: string[]; force?: boolean } | null,
  ): Promise<void>;
}

/**
 * Throws `EpisodeIncompleteError` when a result has unfinished steps, so a scheduled handler fails and is retried.
 *
 * @example
 * ```ts
 * import { assertEpisodeComplete } from 'storyloom';
 * assertEpisodeComplete(await engine.runEpisode('lighthouse', { idempotencyKey: `lighthouse@${event.time}` }));
 * ```
 */
export function assertEpisodeComplete(result: EpisodeResult): EpisodeResult {
  if (!result.complete) {
    throw new EpisodeIncompleteError(result.storyId, result.scene.id, result.failures);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Deterministic ids and seeds.

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * The id of the scene that makes `version` of a story. Runs at the same version (and with the same idempotency key)
 * agree on it, which is what collapses concurrent and retried runs onto one scene. A keyed run's id carries the
 * key's hash, so finding that scene proves that this key wrote it.
 *
 * @example
 * ```ts
 * import { episodeSceneId } from 'storyloom';
 * episodeSceneId('lighthouse', 1); // "scene-000001-…"
 * ```
 */
export function episodeSceneId(storyId: string, version: number, idempotencyKey?: string): string {
  const keyPart = idempotencyKey === undefined ? 'unkeyed' : `key:${idempotencyKey}`;
  return `scene-${String(version).padStart(6, '0')}-${sha256(`${storyId}\n${version}\n${keyPart}`).slice(0, 12)}`;
}

/**
 * Where the publication log keeps what an idempotency key did: a pseudo scene id that no real scene can have
 * (real ones start with `scene-`).
 */
export function idempotencyRecordId(storyId: string, idempotencyKey: string): string {
  return `run-${sha256(`${storyId}\n${idempotencyKey}`).slice(0, 32)}`;
}

/** A 32-bit seed from text, so a retried scene generation comes out the same (a picture's is `seedFromSceneId`). */
export function seedFrom(...parts: string[]): number {
  return Number.parseInt(sha256(parts.join('\n')).slice(0, 8), 16) >>> 0;
}

const MAX_IDEMPOTENCY_KEY = 1_000;
const MAX_ERROR_TEXT = 1_000;
const DEFAULT_STEP_TIMEOUT_MS = 900_000;
const DEFAULT_STORE_TIMEOUT_MS = 60_000;
const DEFAULT_MAX_INFLUENCES_PER_SCENE = 100;
const DEFAULT_MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;

/** Every option `createStoryEngine` takes: the compiler keeps it in step with `StoryEngineOptions`. */
const ENGINE_OPTION_KEYS: Record<keyof StoryEngineOptions, true> = {
  store: true,
  generator: true,
  context: true,
  images: true,
  imageSkipReason: true,
  publishers: true,
  influenceSources: true,
  clock: true,
  logger: true,
  onEvent: true,
  influencePolicy: true,
  retry: true,
  retrieval: true,
  maxConflictRetries: true,
  maxInfluencesPerScene: true,
  stepTimeoutMs: true,
  storeTimeoutMs: true,
  maxClockSkewMs: true,
  imageAspectRatio: true,
};

/** Every option of `runEpisode`: the compiler keeps it in step with `RunEpisodeOptions`. */
const RUN_OPTION_KEYS: Record<keyof RunEpisodeOptions, true> = { signal: true, idempotencyKey: true };

type RetrievalOptions = NonNullable<StoryEngineOptions['retrieval']>;

/** Every key of `retrieval`: the compiler keeps it in step with `StoryEngineOptions['retrieval']`. */
const RETRIEVAL_OPTION_KEYS: Record<keyof RetrievalOptions, true> = {
  k: true,
  tokenBudget: true,
  povCharacterId: true,
};

/**
 * What is wrong with the engine's `retrieval` options: keys it does not pass on, and values `getRelevantContext`
 * would refuse at every episode. `null` is no options, as it is for `getRelevantContext`.
 */
function retrievalProblems(retrieval: unknown, context: unknown): ValidationProblem[] {
  if (retrieval === undefined || retrieval === null) return [];
  if (typeof retrieval !== 'object' || Array.isArray(retrieval)) {
    return [{ path: 'retrieval', message: 'must be an object' }];
  }
  const problems = unknownKeyProblems(
    retrieval,
    RETRIEVAL_OPTION_KEYS,
    `is not a retrieval option (${Object.keys(RETRIEVAL_OPTION_KEYS).join(', ')})`,
    'retrieval.',
  );
  const given = retrieval as Record<string, unknown>;
  // The bounds of `ContextManager.getRelevantContext` hold for a ContextManager; another context layer (one of yours,
  // or the state-only default, which ignores both) is only held to whole numbers from 1.
  const bounded = context instanceof ContextManager;
  for (const name of ['k', 'tokenBudget'] as const) {
    const value = given[name];
    const { min, max } = bounded ? RETRIEVAL_BOUNDS[name] : { min: 1, max: Number.MAX_SAFE_INTEGER };
    if (value !== undefined && !(Number.isInteger(value) && (value as number) >= min && (value as number) <= max)) {
      problems.push({
        path: `retrieval.${name}`,
        message: `must be an integer from ${min} to ${max}, got ${describeValue(value)}`,
      });
    }
  }
  // `null` must not pass for a point of view: getRelevantContext refuses it, and the episode query would name it.
  if (given.povCharacterId !== undefined && typeof given.povCharacterId !== 'string') {
    problems.push({ path: 'retrieval.povCharacterId', message: 'must be a string, the id of a character' });
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------

/**
 * Creates the episode pipeline over a store, a generator and whatever else is given.
 *
 * Guarantees, with any `StoryStateStore` whose `commitScene` is atomic:
 * - at most one scene per story version; concurrent and retried runs collapse onto it;
 * - each post-commit step runs until the log records it `done` or `skipped`; a crashed run's steps are finished by
 *   the next run (publishers must tolerate a repeat of an unlogged publish, as the `Publisher` port requires);
 * - every influence a scene took ends `applied` or `rejected` with a reason, in the commit itself.
 *
 * @example
 * ```ts
 * import {
 *   createMemoryPublisher,
 *   createMemoryStateStore,
 *   createProceduralNarrator,
 *   createStoryEngine,
 *   createStoryFromTemplate,
 * } from 'storyloom';
 *
 * const store = createMemoryStateStore();
 * await store.create(createStoryFromTemplate('lighthouse-keepers', 'lighthouse'));
 * const engine = createStoryEngine({
 *   store,
 *   generator: createProceduralNarrator({ seed: 1 }),
 *   publishers: [createMemoryPublisher({ target: 'site' })],
 *   influencePolicy: { maxWeightPerAuthor: 10, quadratic: true },
 *   onEvent: (event) => console.log(event.type, 'step' in event ? event.step : ''),
 * });
 * const result = await engine.runEpisode('lighthouse', { idempotencyKey: 'lighthouse@2026-01-01T00:00Z' });
 * console.log(result.outcome, result.scene.title, result.complete);
 * ```
 */
export function createStoryEngine(options: StoryEngineOptions): StoryEngine {
  return new Engine(options);
}

/** A run in flight in this process, and the callers that share it. */
interface Flight {
  result: Promise<EpisodeResult>;
  /** Stops the run: aborted only when every caller has aborted. */
  controller: AbortController;
  callers: number;
  /** How many of the callers have aborted. */
  abandoned: number;
}

interface RunContext {
  storyId: string;
  signal: AbortSignal;
  key: string | undefined;
  steps: StepReport[];
  failures: StepFailure[];
}

class Engine implements StoryEngine {
  readonly steps: readonly EngineStep[];
  private readonly store: StoryStateStore;
  private readonly generator: SceneGenerator;
  private readonly context: EpisodeContext;
  private readonly images: ImageGenerator | undefined;
  private readonly publishers: readonly Publisher[];
  private readonly sources: readonly InfluenceSource[];
  private readonly clock: Clock;
  private readonly logger: EngineLogger;
  private readonly onEvent: ((event: EngineEvent) => void) | undefined;
  private readonly options: StoryEngineOptions;
  /** Runs in flight in this process, by story and key: a second caller joins the first instead of racing it. */
  private readonly inFlight = new Map<string, Flight>();
  /** The last scene per story whose every step this engine saw logged `done` or `skipped`. */
  private readonly completed = new Map<string, string>();

  constructor(options: StoryEngineOptions) {
    const problems: Array<{ path: string; message: string }> = [];
    if (!options || typeof options !== 'object') throw new ValidationError('createStoryEngine needs an options object');
    // First, so that a misspelt key leads the message rather than the "missing" option it was meant to be.
    problems.push(
      ...unknownKeyProblems(options, ENGINE_OPTION_KEYS, 'is not an option of createStoryEngine', '', (key) =>
        Object.hasOwn(RETRIEVAL_OPTION_KEYS, key) ? ` (it belongs in retrieval: { ${key} })` : undefined,
      ),
    );
    if (!options.store || typeof options.store.commitScene !== 'function') {
      problems.push({ path: 'store', message: 'must be a StoryStateStore' });
    }
    if (!options.generator || typeof options.generator.generate !== 'function') {
      problems.push({ path: 'generator', message: 'must be a SceneGenerator' });
    }
    const targets = new Set<string>();
    for (const [index, publisher] of (options.publishers ?? []).entries()) {
      if (!publisher || typeof publisher.publish !== 'function') {
        problems.push({ path: `publishers.${index}`, message: 'must be a Publisher' });
      } else if (targets.has(publisher.target)) {
        problems.push({ path: `publishers.${index}.target`, message: `duplicate target "${publisher.target}"` });
      } else if (!/^[A-Za-z0-9][A-Za-z0-9._:/-]{0,118}$/.test(publisher.target)) {
        problems.push({ path: `publishers.${index}.target`, message: 'must be 1-119 letters, digits or "._:/-"' });
      } else if (publisher.capabilities?.idempotent === false && publisher.target.length > 100) {
        // Its claims in the publication log carry the step name with a prefix and a number.
        problems.push({
          path: `publishers.${index}.target`,
          message: 'of a publisher that is not idempotent must be at most 100 characters',
        });
      } else targets.add(publisher.target);
    }
    const conflicts = options.maxConflictRetries ?? 3;
    if (!Number.isInteger(conflicts) || conflicts < 0 || conflicts > 100) {
      problems.push({ path: 'maxConflictRetries', message: 'must be an integer from 0 to 100' });
    }
    const perScene = options.maxInfluencesPerScene ?? DEFAULT_MAX_INFLUENCES_PER_SCENE;
    if (!Number.isInteger(perScene) || perScene < 1 || perScene > LIMITS.influenceQueue) {
      problems.push({
        path: 'maxInfluencesPerScene',
        message: `must be an integer from 1 to ${LIMITS.influenceQueue}`,
      });
    }
    // A finite limit must fit a timer: Node fires a longer one after 1 ms, which would time every step out at once.
    for (const path of ['stepTimeoutMs', 'storeTimeoutMs'] as const) {
      if (options[path] === Number.POSITIVE_INFINITY) continue;
      for (const problem of timeoutProblems(options[path], path)) {
        problems.push({ ...problem, message: `${problem.message} (or Infinity)` });
      }
    }
    const skew = options.maxClockSkewMs;
    if (skew !== undefined && !(typeof skew === 'number' && skew >= 0 && skew <= MAX_CLAIM_LEASE_MS)) {
      problems.push({ path: 'maxClockSkewMs', message: `must be a number of ms from 0 to ${MAX_CLAIM_LEASE_MS}` });
    }
    problems.push(...influencePolicyProblems(options.influencePolicy));
    const skipReason = options.imageSkipReason;
    if (
      skipReason !== undefined &&
      (typeof skipReason !== 'string' || skipReason.trim() === '' || skipReason.length > MAX_ERROR_TEXT)
    ) {
      problems.push({ path: 'imageSkipReason', message: `must be a text of 1 to ${MAX_ERROR_TEXT} characters` });
    }
    // A NaN maxRetries (a number read from an unset environment variable) would make every claim's lease NaN.
    problems.push(...retryOptionsProblems(options.retry));
    problems.push(...retrievalProblems(options.retrieval, options.context));
    const ratio = options.imageAspectRatio;
    if (ratio !== undefined && !(IMAGE_ASPECT_RATIOS as readonly unknown[]).includes(ratio)) {
      problems.push({ path: 'imageAspectRatio', message: `must be one of ${IMAGE_ASPECT_RATIOS.join(', ')}` });
    }
    if (problems.length > 0) {
      throw new ValidationError(`Invalid story engine options: ${problems[0]!.path} ${problems[0]!.message}`, {
        problems,
      });
    }
    this.options = options;
    this.store = options.store;
    this.generator = options.generator;
    this.context = options.context ?? createStateOnlyContext({ store: options.store });
    this.images = options.images;
    this.publishers = options.publishers ?? [];
    this.sources = options.influenceSources ?? [];
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
    this.onEvent = options.onEvent;
    const steps: EngineStep[] = ['index'];
    if (this.context.refreshCache) steps.push('cache');
    if (this.images || options.imageSkipReason !== undefined) steps.push('image');
    for (const publisher of this.publishers) steps.push(`publish:${publisher.target}`);
    this.steps = steps;
  }

  runEpisode(storyId: string, given: RunEpisodeOptions | null = {}): Promise<EpisodeResult> {
    // `null` is "no options", as JavaScript callers often write it (and as `getRelevantContext` reads it).
    const runOptions: RunEpisodeOptions = given ?? {};
    if (typeof runOptions !== 'object' || Array.isArray(runOptions)) {
      return Promise.reject(
        new ValidationError('runEpisode options must be an object', {
          problems: [{ path: 'options', message: 'must be an object' }],
        }),
      );
    }
    // A misspelt key (`idempotencykey`) would make the run unkeyed: under a scheduler that delivers twice, two scenes.
    const unknown = unknownKeyProblems(runOptions, RUN_OPTION_KEYS, 'is not an option of runEpisode', 'options.');
    if (unknown.length > 0) {
      return Promise.reject(
        new ValidationError(`runEpisode: ${unknown.map((p) => `${p.path} ${p.message}`).join('; ')}`, {
          problems: unknown,
        }),
      );
    }
    const key = runOptions.idempotencyKey;
    if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY)) {
      return Promise.reject(
        new ValidationError(`idempotencyKey must be a string of 1 to ${MAX_IDEMPOTENCY_KEY} characters`, {
          problems: [{ path: 'idempotencyKey', message: 'invalid' }],
        }),
      );
    }
    // In one process, concurrent calls for the same story and key share one run: the store would collapse them
    // onto one scene anyway, and sharing spares the generator the duplicate calls.
    const flightKey = `${storyId}\u0000${key ?? ''}`;
    const running = this.inFlight.get(flightKey);
    // A run that every caller gave up on is stopping: a new caller starts its own rather than inherit that abort.
    if (running && !running.controller.signal.aborted) return this.join(running, runOptions.signal);
    const controller = new AbortController();
    // Started once its first caller has joined, so that a signal already aborted stops it before its first step.
    const result = Promise.resolve()
      .then(() => this.run({ storyId, signal: controller.signal, key, steps: [], failures: [] }))
      .finally(() => {
        if (this.inFlight.get(flightKey) === flight) this.inFlight.delete(flightKey);
      });
    const flight: Flight = { controller, result, callers: 0, abandoned: 0 };
    this.inFlight.set(flightKey, flight);
    return this.join(flight, runOptions.signal);
  }

  /**
   * One caller's view of a run in flight. The run stops only when every caller has aborted: a caller whose abort
   * leaves others rejects at once with `AbortedError`, and the last one to abort stops the run and waits for it to
   * stop: between steps, or at once in a wait for the store (which the abort ends). Once every caller's promise has
   * settled the run takes no further step; only a call it stopped waiting for may still be going (a store call, or a
   * step's call past its time limit), as `RunEpisodeOptions.signal` says, and why that is safe.
   */
  private join(flight: Flight, signal: AbortSignal | undefined): Promise<EpisodeResult> {
    flight.callers++;
    if (!signal) return flight.result;
    const left = new AbortController();
    const leave = () => {
      flight.abandoned++;
      if (flight.abandoned < flight.callers) left.abort(new AbortedError(undefined, { cause: signal.reason }));
      else flight.controller.abort(signal.reason);
    };
    if (signal.aborted) leave();
    else signal.addEventListener('abort', leave, { once: true });
    const forget = () => signal.removeEventListener('abort', leave);
    flight.result.then(forget, forget);
    return untilAborted(left.signal, flight.result);
  }

  private async run(run: RunContext): Promise<EpisodeResult> {
    const started = this.clock.now();
    const { storyId } = run;
    this.emit({
      type: 'episode.start',
      storyId,
      at: started,
      ...(run.key === undefined ? {} : { idempotencyKey: run.key }),
    });
    try {
      throwIfAborted(run.signal);
      await this.pullInfluences(run);
      const maxConflicts = this.options.maxConflictRetries ?? 3;
      for (let attempt = 0; ; attempt++) {
        throwIfAborted(run.signal);
        const state = await this.timed(run, 'load', undefined, () =>
          this.stored(run.signal, 'load', () => this.store.load(storyId)),
        );
        if (run.key !== undefined) {
          const found = await this.findKeyedScene(run, run.key);
          if (found) return await this.finishFound(run, found, state, started);
        }
        // Resume first: the last committed scene's unfinished steps come before any new scene, so that readers
        // see episodes published in order and a crashed run is completed rather than followed by a new one.
        // A scene whose steps this engine saw finish needs no log read: a `done` entry is never undone. This keeps
        // the steady-state cost of an episode independent of how long the publication log has grown.
        if (state.sceneId !== null && this.completed.get(storyId) !== state.sceneId) {
          const lastId = state.sceneId;
          const last = await this.stored(run.signal, 'getScene', () => this.store.getScene(storyId, lastId));
          if (!last) throw new NotFoundError(`Scene "${state.sceneId}" of story "${storyId}" is missing`);
          const log = await this.stored(run.signal, 'listPublications', () =>
            this.store.listPublications(storyId, last.id),
          );
          const unfinished = unfinishedSteps(this.steps, log);
          if (unfinished.length > 0) {
            await this.runPostSteps(run, last, state, unfinished, log, true);
            const complete = run.failures.length === 0;
            // Without a key this run's episode *is* the unfinished one. With a key, the keyed scene is written only
            // once the one before it is finished, so that episodes go out in order.
            if (run.key === undefined || !complete) return this.finish(run, 'resumed', last, complete, started);
          }
        }
        try {
          return await this.writeScene(run, state, started);
        } catch (error) {
          // A conflict a retry cannot cure (the story's indexes built for another embedder, with autoReindex off) is
          // not a lost commit race: reloading and writing again would only report races that never happened.
          if (!ConflictError.isInstance(error) || !error.isRetryable || attempt >= maxConflicts) throw error;
          this.emit({ type: 'conflict', storyId, at: this.clock.now(), expectedVersion: state.version, attempt });
          this.logger.info('story moved during the episode; reloading', { storyId, expectedVersion: state.version });
          if (run.key === undefined) {
            // Another run committed first. An unkeyed run wanted "the next episode", and that is it; its writer
            // is finishing its steps (or the next run will), so this run only reports it.
            const latest = await this.stored(run.signal, 'load', () => this.store.load(storyId));
            const latestId = latest.sceneId;
            if (latest.version > state.version && latestId !== null) {
              const scene = await this.stored(run.signal, 'getScene', () => this.store.getScene(storyId, latestId));
              if (scene) return this.finish(run, 'existing', scene, await this.isComplete(run, scene), started);
            }
          }
          // A keyed run still owes its own scene: go round again at the new version.
        }
      }
    } catch (error) {
      this.emit({
        type: 'episode.error',
        storyId,
        at: this.clock.now(),
        error,
        durationMs: this.clock.now() - started,
      });
      this.logger.error('episode failed', { storyId, error: describeError(error) });
      throw error;
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Before the commit.

  private async pullInfluences(run: RunContext): Promise<void> {
    if (this.sources.length === 0) return;
    await this.timed(run, 'influences', undefined, async () => {
      let stored = 0;
      for (const source of this.sources) {
        let items: Awaited<ReturnType<InfluenceSource['pull']>>;
        try {
          items = await this.attempts(run, 'influences', (signal) => source.pull(run.storyId, { signal }));
        } catch (error) {
          if (AbortedError.isInstance(error)) throw error;
          // A source outage must not stop the story: its influences count in a later episode.
          this.warn(run.storyId, `influence source "${source.provider}" failed; continuing without it`, {
            error: describeError(error),
          });
          continue;
        }
        if (!Array.isArray(items)) {
          this.warn(
            run.storyId,
            `influence source "${source.provider}" answered without a list; continuing without it`,
            {
              answer: typeof items,
            },
          );
          continue;
        }
        const handled: string[] = [];
        for (const item of items) {
          if (item?.storyId !== run.storyId) continue;
          try {
            const { influence, clipped } = clipOverlong(item);
            if (clipped.length > 0) {
              this.warn(run.storyId, 'an influence longer than the store keeps was clipped to fit', {
                id: item.id,
                fields: clipped,
              });
            }
            const result = await this.stored(run.signal, 'enqueueInfluence', () =>
              this.store.enqueueInfluence(influence),
            );
            if (!result.inserted) {
              const fields = redeliveredDifferences(influence, result.influence);
              if (fields.length > 0) {
                this.warn(
                  run.storyId,
                  'an influence id was delivered again with different content; the copy stored first is kept',
                  { id: item.id, fields },
                );
              }
            }
            handled.push(item.id);
            stored++;
          } catch (error) {
            if (!ValidationError.isInstance(error)) throw error;
            // A malformed influence will never become valid; acknowledging it stops it coming back forever.
            this.warn(run.storyId, 'an influence was refused as invalid', { id: item.id, error: describeError(error) });
            handled.push(item.id);
          }
        }
        // Only after storing: a crash before this line re-delivers, and storage deduplicates by id.
        if (handled.length > 0) {
          try {
            // Bounded as the pull is (stepTimeoutMs, the run's signal): a source that never answers re-delivers.
            await this.attempts(run, 'influences', () => source.acknowledge(run.storyId, handled));
          } catch (error) {
            if (AbortedError.isInstance(error)) throw error;
            this.warn(run.storyId, `influence source "${source.provider}" failed to acknowledge`, {
              error: describeError(error),
            });
          }
        }
      }
      return { stored };
    });
  }

  private async writeScene(run: RunContext, state: StoryState, started: number): Promise<EpisodeResult> {
    const { storyId, signal } = run;
    const version = state.version + 1;
    const sceneId = episodeSceneId(storyId, version, run.key);
    if (run.key !== undefined) {
      // The claim is written *before* the commit and names the scene this key will commit at this version. After
      // a crash anywhere later, the lookup finds the claim and checks whether that scene exists; because a keyed
      // scene id carries the key's hash, its existence proves this key wrote it. One claim per version, never
      // overwritten, so a stale concurrent run cannot erase the claim of one that committed.
      const recordId = idempotencyRecordId(storyId, run.key);
      await this.stored(signal, 'recordPublication', () =>
        this.store.recordPublication({
          storyId,
          sceneId: recordId,
          target: `claim:${version}`,
          status: 'done',
          result: { sceneId, version },
        }),
      );
    }
    const resolution = await this.timed(run, 'resolve', sceneId, async () =>
      resolveInfluences(
        takenInfluences(state, this.store, this.options.maxInfluencesPerScene ?? DEFAULT_MAX_INFLUENCES_PER_SCENE),
        this.options.influencePolicy,
      ),
    );
    throwIfAborted(signal);
    const pov = this.options.retrieval?.povCharacterId;
    const context = await this.timed(run, 'context', sceneId, () =>
      this.attempts(run, 'context', async (attemptSignal) => {
        // Under a point of view the focus names only what it knows, which a context layer that reads the story's
        // history can tell; the state alone cannot (a thread it was added to unseen is in its cast).
        const known =
          pov !== undefined && this.context.knownTo
            ? checkedKnowledge(await this.context.knownTo(storyId, pov, { state, signal: attemptSignal }))
            : undefined;
        const query = buildEpisodeQuery(state, resolution, { povCharacterId: pov, ...(known ? { known } : {}) });
        return this.context.getRelevantContext(storyId, query, {
          ...this.options.retrieval,
          state,
          influences: resolution.influences,
          signal: attemptSignal,
        });
      }),
    );
    throwIfAborted(signal);
    const request: SceneRequest = {
      storyId,
      sceneId,
      sceneIndex: state.sceneCount,
      chapterId: state.chapterId,
      state,
      prompt: context.prompt,
      influences: resolution.influences,
      seed: seedFrom('scene', storyId, sceneId),
    };
    const generated = await this.timed(run, 'generate', sceneId, () =>
      this.attempts(run, 'generate', (attemptSignal) =>
        this.generator.generate(request, {
          signal: attemptSignal,
          // Every call's cost is reported as it is answered: a generation that fails still spent it.
          onProgress: (progress) => {
            if (progress.type !== 'usage') return;
            const { attempt, usage } = progress;
            this.emit({ type: 'generation.usage', storyId, at: this.clock.now(), sceneId, attempt, usage });
          },
        }),
      ),
    );
    throwIfAborted(signal);
    const { scene, nextState, outcome, warnings } = await this.timed(run, 'continuity', sceneId, async () =>
      this.check(run, state, sceneId, resolution, generated.scene, generated.delta),
    );
    // The last chance to stop: from here the commit either happens entirely or not at all.
    throwIfAborted(signal);
    // Never made twice in one run: a commit whose answer did not come in time may still land, so it is in doubt, and
    // the run fails (retryable). The next run loads and finds the scene committed (and finishes its steps) or not
    // (and commits at the same version, under the same scene id: should the late commit land first, that commit
    // answers `created: false` or a conflict, and one scene is kept). Either way the influences are resolved once,
    // in the one commit that lands.
    const commit = await this.timed(run, 'commit', sceneId, () =>
      this.stored(signal, 'commitScene', () =>
        this.store.commitScene(storyId, {
          expectedVersion: state.version,
          scene,
          nextState,
          consumedInfluenceIds: outcome.applied,
          rejectedInfluences: outcome.rejected,
        }),
      ),
    );
    if (!commit.created) {
      // A concurrent run with the same scene id (same version, same key) committed first; it runs the steps.
      return this.finish(run, 'existing', commit.scene, await this.isComplete(run, commit.scene), started);
    }
    if (run.key !== undefined) await this.confirmKey(run, run.key, commit.scene.id);
    await this.runPostSteps(run, commit.scene, commit.state, this.steps, [], false);
    const result = this.finish(run, 'created', commit.scene, run.failures.length === 0, started);
    result.influences = outcome;
    result.warnings = warnings;
    result.usage = generated.usage;
    return result;
  }

  /** Reconciles influences, builds the scene and applies the delta. Throws `ContinuityError`; commits nothing. */
  private check(
    run: RunContext,
    state: StoryState,
    sceneId: string,
    resolution: InfluenceResolution,
    draft: SceneDraft,
    proposed: StateDelta,
  ): { scene: Scene; nextState: StoryState; outcome: InfluenceOutcome; warnings: ContinuityIssue[] } {
    const header = {
      id: sceneId,
      storyId: run.storyId,
      chapterId: state.chapterId,
      index: state.sceneCount,
      createdAt: isoNow(this.clock),
      stateVersion: state.version + 1,
    };
    // A generator may return its delta in input form (lists left out): read with its defaults. A malformed one is
    // refused as the reducer words it (INVALID_DELTA), before anything reads its influence lists.
    const parsed = StateDeltaSchema.safeParse(proposed);
    if (!parsed.success) {
      assertContinuity(applyDelta(state, proposed, { ...draft, ...header, influencesApplied: [] }));
      throw new ContinuityError('The generator returned a malformed delta', { issues: [] });
    }
    const outcome = settleInfluences(resolution, parsed.data);
    if (outcome.ignored.length > 0) {
      this.warn(run.storyId, 'the narrator named influences this scene did not take; they were left out', {
        sceneId,
        ids: outcome.ignored,
      });
    }
    const delta: StateDelta = {
      ...parsed.data,
      influencesApplied: outcome.applied,
      influencesRejected: outcome.rejected,
    };
    const sceneInput = { ...draft, ...header, influencesApplied: outcome.applied };
    const checked = assertContinuity(applyDelta(state, delta, sceneInput));
    const { state: nextState } = checked;
    // Fields the parse above dropped (a generator's typo, a change the delta cannot express) are warned of too.
    const warnings = [...unknownDeltaFields(proposed), ...checked.warnings];
    if (warnings.length > 0) {
      this.emit({ type: 'continuity.warning', storyId: run.storyId, at: this.clock.now(), sceneId, issues: warnings });
      this.logger.warn('continuity warnings', { storyId: run.storyId, sceneId, codes: warnings.map((w) => w.code) });
    }
    return { scene: SceneSchema.parse(sceneInput), nextState, outcome, warnings };
  }

  // -------------------------------------------------------------------------------------------------------------
  // Idempotency keys: the record lives in the publication log under `run-<hash>` (see `idempotencyRecordId`).

  private async findKeyedScene(run: RunContext, key: string): Promise<Scene | null> {
    const { storyId, signal } = run;
    const recordId = idempotencyRecordId(storyId, key);
    const entries = await this.stored(signal, 'listPublications', () => this.store.listPublications(storyId, recordId));
    const confirmed = entries.find((entry) => entry.target === 'scene' && entry.status === 'done');
    const candidates = confirmed
      ? [confirmed]
      : entries
          .filter((entry) => entry.target.startsWith('claim:'))
          .sort((a, b) => Number(a.target.slice(6)) - Number(b.target.slice(6)));
    for (const entry of candidates) {
      const sceneId = entry.result.sceneId;
      if (typeof sceneId !== 'string') continue;
      const scene = await this.stored(signal, 'getScene', () => this.store.getScene(storyId, sceneId));
      if (scene) {
        // The crash window between the commit and the confirmation closes here.
        if (!confirmed) await this.confirmKey(run, key, scene.id);
        return scene;
      }
    }
    return null;
  }

  private async confirmKey(run: RunContext, key: string, sceneId: string): Promise<void> {
    const { storyId } = run;
    await this.stored(run.signal, 'recordPublication', () =>
      this.store.recordPublication({
        storyId,
        sceneId: idempotencyRecordId(storyId, key),
        target: 'scene',
        status: 'done',
        result: { sceneId },
      }),
    );
  }

  private async finishFound(
    run: RunContext,
    scene: Scene,
    current: StoryState,
    started: number,
  ): Promise<EpisodeResult> {
    const log = await this.stored(run.signal, 'listPublications', () =>
      this.store.listPublications(run.storyId, scene.id),
    );
    const unfinished = unfinishedSteps(this.steps, log);
    if (unfinished.length > 0) {
      const state =
        scene.id === current.sceneId
          ? current
          : ((await this.stored(run.signal, 'getStateAt', () =>
              this.store.getStateAt(run.storyId, scene.stateVersion),
            )) ?? current);
      await this.runPostSteps(run, scene, state, unfinished, log, true);
    }
    return this.finish(run, 'existing', scene, run.failures.length === 0, started);
  }

  // -------------------------------------------------------------------------------------------------------------
  // After the commit: every step is recorded in the publication log.

  private async runPostSteps(
    run: RunContext,
    scene: Scene,
    state: StoryState,
    steps: readonly EngineStep[],
    log: readonly PublicationEntry[],
    resumed: boolean,
  ): Promise<void> {
    // Publishers see the state the scene produced, never the pending queue of whatever run finishes the steps.
    const story: StoryState = { ...state, userInfluenceQueue: [] };
    let image: EpisodeImage | undefined;
    let imageStatus: 'pending' | 'ready' | 'none' | 'failed' = 'pending';
    const imageEntry = log.find((entry) => entry.target === 'image');
    if (imageEntry?.status === 'skipped') imageStatus = 'none';
    for (const step of steps) {
      throwIfAborted(run.signal);
      if (step === 'index') {
        await this.postStep(run, step, scene, resumed, async (signal) => {
          await this.context.indexScene(scene, { state: story, ...(signal ? { signal } : {}) });
          return { status: 'done', result: {} };
        });
      } else if (step === 'cache') {
        // The cache only saves time: an outage, or a refresh that never answers, is recorded and never holds the
        // episode back.
        const skip = (error: unknown): StepOutcome => {
          this.warn(run.storyId, 'the context cache could not be refreshed', {
            sceneId: scene.id,
            error: describeError(error),
          });
          return { status: 'skipped', result: { reason: `cache refresh failed: ${describeError(error)}` } };
        };
        await this.postStep(
          run,
          step,
          scene,
          resumed,
          async (signal) => {
            try {
              // One that never answers is told through the signal, and left behind, when the attempt times out.
              await this.context.refreshCache?.(run.storyId, story, { signal });
              return { status: 'done', result: {} };
            } catch (error) {
              // The run's abort leaves the step unrecorded (as every step), so the next run refreshes, whatever the
              // refresh threw on its way out (a platform `AbortError`, the caller's reason, a client's own error).
              // Any other abort (the attempt's time limit, a bound of the refresh's own) is a failed refresh, skipped.
              if (run.signal.aborted) {
                throw AbortedError.isInstance(error) ? error : new AbortedError(undefined, { cause: error });
              }
              return skip(error);
            }
          },
          // A refresh that timed out is skipped too, and not waited for again.
          { policy: 'once', onFailure: skip },
        );
      } else if (step === 'image') {
        const outcome = await this.postStep(run, step, scene, resumed, async (signal) => {
          if (!this.images) return { status: 'skipped', result: { reason: this.options.imageSkipReason } };
          try {
            const drawn = await this.drawImage(scene, story, signal);
            image = drawn.image;
            return { status: 'done', result: drawn.meta };
          } catch (error) {
            if (!ContentFilteredError.isInstance(error) && !isFilteredRetryError(error)) throw error;
            // A filtered prompt fails the same way every time: publish without a picture rather than never.
            return { status: 'skipped', result: { reason: 'content filtered', error: describeError(error) } };
          }
        });
        imageStatus = outcome === 'done' ? (image ? 'ready' : 'pending') : outcome === 'skipped' ? 'none' : 'failed';
      } else {
        const target = step.slice('publish:'.length);
        const publisher = this.publishers.find((candidate) => candidate.target === target);
        if (!publisher) continue;
        if (this.images && imageStatus === 'failed') {
          // The picture is part of the episode: publishing waits for it rather than going out without it.
          this.block(run, step, scene, 'image');
          continue;
        }
        if (this.images && imageStatus === 'pending' && imageEntry?.status === 'done') {
          try {
            image = await this.restoreImage(run, scene, story, imageEntry);
            imageStatus = 'ready';
          } catch (error) {
            if (AbortedError.isInstance(error)) throw error;
            imageStatus = 'failed';
            this.warn(run.storyId, 'the scene picture could not be drawn again for publishing', {
              sceneId: scene.id,
              error: describeError(error),
            });
            this.block(run, step, scene, 'image');
            continue;
          }
        }
        const call = (signal: AbortSignal | undefined) =>
          publisher.publish({ story, scene, ...(image ? { image } : {}) }, signal ? { signal } : {});
        if (publisher.capabilities?.idempotent === false) {
          await this.publishAtMostOnce(run, step, scene, resumed, publisher, call);
          continue;
        }
        await this.postStep(run, step, scene, resumed, async (signal) => ({
          status: 'done',
          result: publishedRecord(publisher.provider, await call(signal)),
        }));
      }
    }
  }

  /**
   * The publish step of a publisher that is not idempotent: claimed in the log first, so that of all the runs that
   * reach it one calls the publisher, and called again by a later run only when every call so far failed saying
   * nothing went out (a retryable error the call ended with on its own) or was never made. Otherwise the step stays in
   * doubt until `resolvePublication` settles it. A run that does not hold the claim reports why in its result and
   * writes nothing: the step's entry in the log is the holder's to write.
   */
  private async publishAtMostOnce(
    run: RunContext,
    step: EngineStep,
    scene: Scene,
    resumed: boolean,
    publisher: Publisher,
    call: (signal: AbortSignal | undefined) => Promise<PublishResult>,
  ): Promise<void> {
    throwIfAborted(run.signal);
    const started = this.clock.now();
    const claim = await this.claim(run, scene.id, step);
    if (claim.finished) return;
    if (!claim.claimed) {
      const error = claim.contended
        ? publishContended(step, scene.id)
        : claim.inProgress
          ? publishInProgress(step, scene.id, claim)
          : publishInDoubt(step, run.storyId, scene.id, claim.since);
      this.reportUnrecorded(run, step, scene, resumed, started, error);
      return;
    }
    // Set when the publisher is called, cleared when that call fails saying nothing went out (a retryable error that
    // is not an abort): a call cut short by a timeout or an abort may have published.
    let mayHavePublished = false;
    // Whether the last call ended on its own (not cut short): then nobody is publishing under this claim any more.
    let callEnded = false;
    // Whether the publisher's call is under way: from the call until its promise settles, whatever the step's time
    // limit did meanwhile (a call that ignores its signal is left behind, still going, when the attempt times out).
    let calling = false;
    const release = async () => {
      if (mayHavePublished) return;
      await this.stored(run.signal, 'recordPublication', () =>
        this.store.recordPublication({
          storyId: run.storyId,
          sceneId: scene.id,
          target: releaseTarget(step, claim.generation),
          status: 'done',
          result: { reason: 'nothing went out' },
        }),
      );
    };
    try {
      await this.postStep(
        run,
        step,
        scene,
        resumed,
        async (signal) => {
          mayHavePublished = true;
          callEnded = false;
          calling = true;
          let published: PublishResult;
          try {
            published = await call(signal);
          } catch (error) {
            // Only a call that ended before its signal fired says what happened. One that the step's time limit or
            // the run's abort cut short may have published, whatever it reports: many HTTP clients report the
            // connection they were told to drop as a retryable error ("socket hang up").
            if (!signal.aborted) {
              callEnded = true;
              if (StoryloomError.isInstance(error) && error.isRetryable && !AbortedError.isInstance(error)) {
                mayHavePublished = false;
              }
            }
            throw error;
          } finally {
            calling = false;
          }
          return { status: 'done', result: publishedRecord(publisher.provider, published) };
        },
        {
          policy: 'at-most-once',
          // Released before the failure is recorded: a crash between the two leaves the step in doubt, never lost.
          beforeRecord: async (status) => {
            if (status !== 'failed') return undefined;
            await release();
            // Lets other runs and `resolvePublication` see at once that this claim's call is over (in doubt, not in
            // progress). Entries written before this field existed are read as calls that may still be going.
            return callEnded ? { callEndedUnderClaim: claim.generation } : undefined;
          },
        },
      );
    } catch (error) {
      // An abort leaves the step unrecorded (`postStep`). Before any call, or after calls that all said nothing went
      // out, the claim is released for the next run. After a call that may have published and has settled since (it
      // answered the abort, or threw an abort of its own), nobody is calling under the claim any more: that is
      // recorded as a definite error's end is, so the step is in doubt at once, not "in progress" until the lease
      // lapses, and `resolvePublication` settles it without `force`. A call still under way (left behind by the
      // step's time limit) records nothing: the claim's lease covers it.
      if (AbortedError.isInstance(error)) {
        if (!mayHavePublished) await release().catch(() => {});
        else if (!calling) await this.recordCallEndedByAbort(run, step, scene, claim.generation, error);
      }
      throw error;
    }
  }

  /**
   * Records that the claim's call of a publish step ended under a run that was aborted: a `failed` entry saying the
   * call is over, as one that ended with a definite error writes. The publisher may have published, so the claim is
   * not released: the step is in doubt. A write that fails leaves the step as before, held until the lease lapses.
   */
  private async recordCallEndedByAbort(
    run: RunContext,
    step: EngineStep,
    scene: Scene,
    generation: number,
    error: AbortedError,
  ): Promise<void> {
    try {
      await this.stored(run.signal, 'recordPublication', () =>
        this.store.recordPublication({
          storyId: run.storyId,
          sceneId: scene.id,
          target: step,
          status: 'failed',
          result: { ...failureRecord(error), callEndedUnderClaim: generation },
        }),
      );
      this.warn(
        run.storyId,
        `a call of ${step} that may have published ended in an abort; it is in doubt until resolvePublication settles it`,
        { sceneId: scene.id, step },
      );
    } catch (recordError) {
      this.logger.warn('could not record the end of an aborted publish call', {
        storyId: run.storyId,
        sceneId: scene.id,
        step,
        error: describeError(recordError),
      });
    }
  }

  /**
   * Reports a failed step that this run did not record in the log (it is another run's to record), as `postStep`
   * reports one it recorded.
   */
  private reportUnrecorded(
    run: RunContext,
    step: EngineStep,
    scene: Scene,
    resumed: boolean,
    started: number,
    error: StoryloomError,
  ): void {
    this.emit({ type: 'step.start', storyId: run.storyId, at: started, step, sceneId: scene.id, resumed });
    this.endStep(run, step, scene, started, 'failed', undefined, error);
  }

  /**
   * Reports the end of a post-commit step: its report in the run, and for a failure the run's failures and an error
   * in the log, then the `step.end` event. `result` is what the publication log recorded, if this run recorded it.
   */
  private endStep(
    run: RunContext,
    step: EngineStep,
    scene: Scene,
    started: number,
    status: StepStatus,
    result: Record<string, unknown> | undefined,
    failure: unknown,
  ): void {
    const durationMs = this.clock.now() - started;
    const report: StepReport = { step, sceneId: scene.id, status, durationMs, ...(result ? { result } : {}) };
    if (failure !== undefined) {
      report.error = failure;
      run.failures.push({ step, sceneId: scene.id, status: 'failed', error: failure });
      this.logger.error('episode step failed', {
        storyId: run.storyId,
        sceneId: scene.id,
        step,
        ...(result ?? failureRecord(failure)),
      });
    }
    run.steps.push(report);
    this.emit({
      type: 'step.end',
      storyId: run.storyId,
      at: this.clock.now(),
      step,
      sceneId: scene.id,
      status,
      durationMs,
      ...(result ? { result } : {}),
      ...(failure === undefined ? {} : { error: failure }),
    });
  }

  /** Runs one post-commit step with retries and records its outcome. Returns the recorded status. */
  private async postStep(
    run: RunContext,
    step: EngineStep,
    scene: Scene,
    resumed: boolean,
    execute: (signal: AbortSignal) => Promise<StepOutcome>,
    how: {
      policy?: AttemptPolicy;
      /** What a failure of the step (a timeout included, never an abort) is recorded as instead of `failed`. */
      onFailure?: (error: unknown) => StepOutcome;
      /** Runs before the outcome is recorded; what it returns is recorded with a failure. */
      beforeRecord?: (status: StepStatus) => Promise<Record<string, unknown> | undefined>;
    } = {},
  ): Promise<StepStatus> {
    const started = this.clock.now();
    this.emit({ type: 'step.start', storyId: run.storyId, at: started, step, sceneId: scene.id, resumed });
    let status: StepStatus;
    let result: Record<string, unknown>;
    let failure: unknown;
    try {
      ({ status, result } = await this.attempts(run, step, execute, how.policy));
    } catch (error) {
      // An abort leaves the step unrecorded, so that the next run does it; it is not a failure of the step.
      if (AbortedError.isInstance(error)) throw error;
      if (how.onFailure) {
        ({ status, result } = how.onFailure(error));
      } else {
        status = 'failed';
        // Whatever was thrown, `undefined` included, is a failure of the step: the report needs a value to hold.
        failure = error === undefined || error === null ? new StoryloomError('STEP_FAILED', `${step} failed`) : error;
        result = failureRecord(error);
      }
    }
    const details = await how.beforeRecord?.(status);
    if (status === 'failed' && details) result = { ...result, ...details };
    await this.stored(run.signal, 'recordPublication', () =>
      this.store.recordPublication({ storyId: run.storyId, sceneId: scene.id, target: step, status, result }),
    );
    this.endStep(run, step, scene, started, status, result, failure);
    return status;
  }

  /**
   * Claims a publish step of a publisher that is not idempotent before it is called: the first claim of the current
   * generation wins (the log keeps the first `done` of a target), so of all the runs that reach the step, one calls
   * the publisher. The claim holds for as long as its run may still be calling (`claimLeaseMs`, on the holder's
   * clock) and `maxClockSkewMs` more; found taken after that without the step's outcome, or once its holder recorded
   * that its call ended, the step is in doubt. A claim lost to one that was released since (its call said nothing
   * went out) is tried again at the next generation, a few times: the step is not in doubt for a released claim.
   */
  private async claim(run: RunContext, sceneId: string, step: EngineStep): Promise<Claim> {
    const { storyId, signal } = run;
    const readLog = () => this.stored(signal, 'listPublications', () => this.store.listPublications(storyId, sceneId));
    let log = await readLog();
    for (let attempt = 1; ; attempt++) {
      const generation = releasesOf(step, log);
      const target = claimTarget(step, generation);
      // An abort that has fired stops the run before its claim is written, so that there is none to release.
      throwIfAborted(signal);
      const now = this.clock.now();
      const nonce = randomUUID();
      let entry: PublicationEntry;
      let recorded: boolean;
      const writing = Promise.resolve().then(() =>
        this.store.recordPublication({
          storyId,
          sceneId,
          target,
          status: 'done',
          result: {
            claimedAt: new Date(now).toISOString(),
            leaseUntil: new Date(now + this.claimLeaseMs()).toISOString(),
            nonce,
          },
        }),
      );
      // Timed from the start of the write, whether or not the run's abort ends the wait for it first.
      const bounded = this.stored(undefined, 'recordPublication', () => writing);
      try {
        ({ recorded, entry } = await waitUnlessAborted(bounded, signal));
      } catch (error) {
        if (signal?.aborted) {
          // A store that answers soon lets the run release a claim of its own before it settles (the abort's check in
          // `attempts`), which a process frozen once its handler returns (a Lambda) would never do. One that does not
          // answer must not hold the run past its caller's deadline: should the claim land later as this run's, it
          // is released then, and the log is not read, which would be one more wait.
          const answer = await answeredWithin(bounded, ABORTED_CLAIM_WRITE_GRACE_MS);
          if (!answer) this.releaseLateClaim(run, sceneId, step, generation, nonce, writing);
          if (!answer?.recorded) {
            throw AbortedError.isInstance(error) ? error : new AbortedError(undefined, { cause: signal.reason });
          }
          ({ recorded, entry } = answer);
        } else {
          // A write that failed wrote nothing to release; one that timed out may land later.
          const releaseIfLate = () => {
            if (error instanceof StoreTimeoutError) {
              this.releaseLateClaim(run, sceneId, step, generation, nonce, writing);
            }
          };
          // The answer may be what was lost, not the write (or the write timed out): the log says whose claim it is.
          // An unreadable log says nothing of it; the run's abort, firing meanwhile, ends the run as it ends any wait.
          let found: PublicationEntry | undefined;
          try {
            found = (await readLog()).find((candidate) => candidate.target === target);
          } catch (readError) {
            if (AbortedError.isInstance(readError)) {
              releaseIfLate();
              throw readError;
            }
          }
          if (!found) {
            releaseIfLate();
            throw error;
          }
          entry = found;
          recorded = found.result.nonce === nonce;
        }
      }
      const leaseUntil = leaseUntilOf(entry);
      const holdsUntil = this.claimHoldsUntil(leaseUntil);
      const claim = { generation, since: entry.recordedAt, leaseUntil, holdsUntil, contended: false };
      if (recorded) return { ...claim, claimed: true, finished: false, inProgress: false };
      // Another run may have claimed it and finished since, recorded that its call ended, or released it.
      log = await readLog();
      const finished = unfinishedSteps([step], log).length === 0;
      if (!finished && releasesOf(step, log) > generation) {
        // The claim this one lost to was released since it read the log: its call said nothing went out, or someone
        // settled it so. Its call ending is no doubt of this run's; the step is free at the next generation.
        if (attempt < MAX_CLAIM_ATTEMPTS) continue;
        return { ...claim, contended: true, claimed: false, finished: false, inProgress: true };
      }
      const inProgress = Date.parse(holdsUntil) > now && !claimCallEnded(step, generation, log);
      return { ...claim, claimed: false, finished, inProgress };
    }
  }

  /**
   * A claim write this run stopped waiting for (`storeTimeoutMs`, or its abort) may still land, after the run has
   * gone: claimed by nobody, it would hold the step for its lease and then leave it in doubt, with nothing sent. Should
   * it land as this run's claim, it is released (no call was made under it), so the next run publishes. A write that
   * fails is no release that failed, and is not warned of: it wrote nothing, or (its answer lost on the way back) a
   * claim that reads as one left by a crash.
   */
  private releaseLateClaim(
    run: RunContext,
    sceneId: string,
    step: EngineStep,
    generation: number,
    nonce: string,
    writing: Promise<{ recorded: boolean; entry: PublicationEntry }>,
  ): void {
    // Nobody awaits what follows: a logger that throws must not end the process with an unhandled rejection.
    const log = (level: 'warn' | 'debug', message: string, error: unknown) => {
      try {
        this.logger[level]?.(message, { storyId: run.storyId, sceneId, step, error: describeError(error) });
      } catch {
        // The log is lost; the run's outcome is not.
      }
    };
    writing.then(
      (landed) =>
        Promise.resolve()
          .then(() =>
            landed.recorded && landed.entry.result.nonce === nonce
              ? this.store.recordPublication({
                  storyId: run.storyId,
                  sceneId,
                  target: releaseTarget(step, generation),
                  status: 'done',
                  result: { reason: 'nothing went out' },
                })
              : undefined,
          )
          .catch((error: unknown) =>
            log('warn', 'could not release a publish claim that landed after its run gave up on it', error),
          ),
      (error: unknown) => log('debug', 'a publish claim write that its run gave up on failed', error),
    );
  }

  /**
   * Until when a claim whose lease (on its holder's clock) ends at `leaseUntil` holds on this engine's clock: the
   * lease and `maxClockSkewMs` more. An unreadable lease is returned as it is (it holds no longer than it did).
   */
  private claimHoldsUntil(leaseUntil: string): string {
    const lease = Date.parse(leaseUntil);
    if (Number.isNaN(lease)) return leaseUntil;
    const held = lease + (this.options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS);
    // Past the last time a Date holds, the claim holds for good: no clock reaches it.
    return new Date(Math.min(held, MAX_DATE_MS)).toISOString();
  }

  /**
   * How long a claim holds: as long as its run may still be calling the publisher (every attempt's time limit and the
   * waits between them), at most a day.
   */
  private claimLeaseMs(): number {
    const timeout = this.options.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS;
    const retry = this.options.retry ?? {};
    const retries = retry.maxRetries ?? RETRY_DEFAULTS.maxRetries;
    const wait = Math.max(
      retry.maxDelayMs ?? RETRY_DEFAULTS.maxDelayMs,
      retry.maxRetryAfterMs ?? RETRY_DEFAULTS.maxRetryAfterMs,
    );
    return Math.min(timeout * (retries + 1) + wait * retries, MAX_CLAIM_LEASE_MS);
  }

  async resolvePublication(
    storyId: string,
    sceneId: string,
    target: string,
    outcome: 'published' | 'not-published',
    given: { url?: string; ids?: string[]; force?: boolean } | null = {},
  ): Promise<void> {
    const invalid = (path: string, message: string) =>
      new ValidationError(`Cannot settle the publication: ${path} ${message}`, { problems: [{ path, message }] });
    // `null` is "no options", as it is for `runEpisode`.
    const options = given ?? {};
    const publisher = this.publishers.find((candidate) => candidate.target === target);
    if (!publisher) throw invalid('target', `names no publisher of this engine ("${String(target)}")`);
    if (outcome !== 'published' && outcome !== 'not-published') {
      throw invalid('outcome', 'must be "published" or "not-published"');
    }
    if (typeof options !== 'object' || Array.isArray(options)) throw invalid('options', 'must be an object');
    if (options.url !== undefined && typeof options.url !== 'string') throw invalid('options.url', 'must be a string');
    if (
      options.ids !== undefined &&
      (!Array.isArray(options.ids) || !options.ids.every((id) => typeof id === 'string'))
    ) {
      throw invalid('options.ids', 'must be an array of strings');
    }
    const step: EngineStep = `publish:${target}`;
    const log = await this.stored(undefined, 'listPublications', () => this.store.listPublications(storyId, sceneId));
    if (unfinishedSteps([step], log).length === 0) {
      throw invalid('target', `"${target}": ${step} of scene "${sceneId}" is already finished`);
    }
    const generation = releasesOf(step, log);
    const claim = log.find((entry) => entry.target === claimTarget(step, generation));
    if (!claim) {
      throw invalid(
        'target',
        `"${target}": ${step} of scene "${sceneId}" is not in doubt: the publisher has not been called for it${generation > 0 ? ' since it last said nothing went out' : ''}, and the next run calls it`,
      );
    }
    // Held until its lease plus the clock skew allowed: a lease written on a clock behind this one has not lapsed
    // yet for its holder, who may still be calling. Settling without force assumes the clocks agree within that.
    const holdsUntil = this.claimHoldsUntil(leaseUntilOf(claim));
    if (Date.parse(holdsUntil) > this.clock.now() && !claimCallEnded(step, generation, log) && options.force !== true) {
      throw invalid(
        'target',
        `"${target}": ${step} of scene "${sceneId}" may still be being published by the run that claimed it at ${claim.recordedAt}; settle it after ${holdsUntil} (its lease and the clock skew allowed), or with force: true if that run is known to have stopped`,
      );
    }
    const settled =
      outcome === 'published'
        ? {
            storyId,
            sceneId,
            target: step,
            status: 'done' as const,
            result: publishedRecord(publisher.provider, { url: options.url, ids: options.ids ?? [] }, 'published'),
          }
        : {
            storyId,
            sceneId,
            target: releaseTarget(step, generation),
            status: 'done' as const,
            result: { reason: 'settled: not published' },
          };
    await this.stored(undefined, 'recordPublication', () => this.store.recordPublication(settled));
  }

  private block(run: RunContext, step: EngineStep, scene: Scene, blockedBy: EngineStep): void {
    const error = new StoryloomError('STEP_BLOCKED', `Step "${step}" waits for step "${blockedBy}"`, {
      isRetryable: true,
    });
    run.failures.push({ step, sceneId: scene.id, status: 'blocked', error });
    run.steps.push({ step, sceneId: scene.id, status: 'blocked', durationMs: 0, error });
    this.emit({
      type: 'step.end',
      storyId: run.storyId,
      at: this.clock.now(),
      step,
      sceneId: scene.id,
      status: 'blocked',
      durationMs: 0,
      error,
    });
  }

  private async drawImage(
    scene: Scene,
    story: StoryState,
    signal: AbortSignal | undefined,
  ): Promise<{ image: EpisodeImage; meta: Record<string, unknown> }> {
    const request = sceneIllustrationRequest(scene, story, { aspectRatio: this.options.imageAspectRatio });
    const drawn = await this.images!.generate(request, signal ? { signal } : {});
    const image: EpisodeImage = { data: drawn.data, mediaType: drawn.mediaType, alt: sceneAltText(scene) };
    return {
      image,
      meta: {
        mediaType: drawn.mediaType,
        bytes: drawn.data.byteLength,
        sha256: createHash('sha256').update(drawn.data).digest('hex'),
        seed: request.seed,
        modelId: drawn.modelId,
        ...(drawn.width === undefined ? {} : { width: drawn.width }),
        ...(drawn.height === undefined ? {} : { height: drawn.height }),
      },
    };
  }

  /**
   * The picture of a scene whose `image` step finished in an earlier run. The log keeps its hash, not its bytes
   * (the log is for small records); generators are deterministic by seed, so it is drawn again with the same
   * request and checked against the hash. A mismatch (a generator that ignores seeds) is reported and the new
   * picture used: publishing a different picture beats never publishing.
   */
  private async restoreImage(
    run: RunContext,
    scene: Scene,
    story: StoryState,
    entry: PublicationEntry,
  ): Promise<EpisodeImage> {
    const { image, meta } = await this.attempts(run, 'image', (signal) => this.drawImage(scene, story, signal));
    if (meta.sha256 !== entry.result.sha256) {
      // A picture logged with another seed was drawn from another request (an older storyloom seeded differently).
      const why =
        entry.result.seed === meta.seed
          ? 'the image generator ignores seeds'
          : 'it was first drawn with another seed (by an older storyloom)';
      this.warn(run.storyId, `the picture drawn again differs from the one logged: ${why}`, {
        sceneId: scene.id,
        logged: entry.result.sha256,
        drawn: meta.sha256,
      });
    }
    return image;
  }

  // -------------------------------------------------------------------------------------------------------------

  private async isComplete(run: RunContext, scene: Scene): Promise<boolean> {
    const log = await this.stored(run.signal, 'listPublications', () =>
      this.store.listPublications(scene.storyId, scene.id),
    );
    return unfinishedSteps(this.steps, log).length === 0;
  }

  private finish(
    run: RunContext,
    outcome: EpisodeResult['outcome'],
    scene: Scene,
    complete: boolean,
    started: number,
  ): EpisodeResult {
    if (complete) this.completed.set(run.storyId, scene.id);
    const durationMs = this.clock.now() - started;
    this.emit({
      type: 'episode.end',
      storyId: run.storyId,
      at: this.clock.now(),
      sceneId: scene.id,
      outcome,
      complete,
      durationMs,
    });
    this.logger.info('episode finished', { storyId: run.storyId, sceneId: scene.id, outcome, complete, durationMs });
    return {
      storyId: run.storyId,
      outcome,
      scene,
      steps: run.steps,
      complete,
      failures: run.failures,
      warnings: [],
      ...(run.key === undefined ? {} : { idempotencyKey: run.key }),
    };
  }

  /** Times a step before the commit (nothing is recorded in the log for those). */
  private async timed<T>(
    run: RunContext,
    step: EngineStep,
    sceneId: string | undefined,
    operation: () => Promise<T>,
  ): Promise<T> {
    const started = this.clock.now();
    const where = sceneId === undefined ? {} : { sceneId };
    this.emit({ type: 'step.start', storyId: run.storyId, at: started, step, ...where });
    try {
      const value = await operation();
      this.emit({
        type: 'step.end',
        storyId: run.storyId,
        at: this.clock.now(),
        step,
        ...where,
        status: 'done',
        durationMs: this.clock.now() - started,
      });
      return value;
    } catch (error) {
      this.emit({
        type: 'step.end',
        storyId: run.storyId,
        at: this.clock.now(),
        step,
        ...where,
        status: 'failed',
        durationMs: this.clock.now() - started,
        error,
      });
      throw error;
    }
  }

  /**
   * Runs a step's call with the retry policy, each attempt within `stepTimeoutMs`. The attempt's signal fires when the
   * run is aborted or the attempt has run out of time; a call that ignores it is left behind, and the attempt fails
   * with a `TIMEOUT` error all the same: retryable, unless `at-most-once` (a publisher that is not idempotent, whose
   * call may have published), which also never retries an error that is not retryable, whatever the policy says.
   * `once` makes a single attempt.
   */
  private attempts<T>(
    run: RunContext,
    step: EngineStep,
    call: (signal: AbortSignal) => Promise<T>,
    policy: AttemptPolicy = 'retry',
  ): Promise<T> {
    const atMostOnce = policy === 'at-most-once';
    const limit = this.options.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS;
    return withRetry(
      async (_attempt, runSignal) => {
        const timer = new AbortController();
        const signal = runSignal ? AbortSignal.any([runSignal, timer.signal]) : timer.signal;
        const timedOut = new StoryloomError(
          'TIMEOUT',
          `Step "${step}" took longer than ${limit} ms${atMostOnce ? '; it may have published, so it is not tried again' : ''}`,
          { isRetryable: !atMostOnce },
        );
        let handle: ReturnType<typeof setTimeout> | undefined;
        const expiry = new Promise<never>((_, reject) => {
          if (!Number.isFinite(limit)) return;
          handle = setTimeout(() => {
            timer.abort(timedOut);
            reject(timedOut);
          }, limit);
          // A pending timeout must not keep a finished process alive.
          handle.unref?.();
        });
        try {
          return await Promise.race([call(signal), expiry]);
        } catch (error) {
          // The call stopped because its time ran out (as an abort, say): that is a timeout, not the run's abort.
          if (timer.signal.aborted && !runSignal?.aborted) throw timedOut;
          throw error;
        } finally {
          clearTimeout(handle);
        }
      },
      this.retryOptions(run, step, policy),
    );
  }

  /**
   * Waits for a call of the store for at most `storeTimeoutMs`, failing with a retryable `StoreTimeoutError` after
   * that, and, given the run's signal, no longer than until it fires (`AbortedError`). The port takes no signal, so
   * the call itself cannot be stopped: it is left behind, still going, and may land later (see
   * `RunEpisodeOptions.signal` for why that is safe). A call made once the signal has already fired (the record of a
   * step that finished, the release of a claim on the way out) is waited for within the time limit alone: that is
   * what keeps what an abort records.
   */
  private stored<T>(signal: AbortSignal | undefined, operation: StoreOperation, call: () => Promise<T>): Promise<T> {
    const limit = this.options.storeTimeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
    const pending = new Promise<T>((resolve) => resolve(call()));
    const waited = waitUnlessAborted(pending, signal?.aborted ? undefined : signal);
    if (!Number.isFinite(limit)) return waited;
    const timer = new AbortController();
    const handle = setTimeout(() => timer.abort(new StoreTimeoutError(operation, limit)), limit);
    // A pending time limit must not keep a finished process alive.
    handle.unref?.();
    return untilAborted(timer.signal, waited).finally(() => clearTimeout(handle));
  }

  private retryOptions(run: RunContext, step: EngineStep, policy: AttemptPolicy = 'retry'): RetryOptions {
    const shouldRetry = this.options.retry?.shouldRetry;
    return {
      ...this.options.retry,
      // A call that may have done its work is never made again, whatever the policy says of its error.
      ...(policy === 'at-most-once'
        ? {
            shouldRetry: (error: unknown, attempt: number) =>
              StoryloomError.isInstance(error) && error.isRetryable && (shouldRetry?.(error, attempt) ?? true),
          }
        : policy === 'once'
          ? { shouldRetry: () => false }
          : {}),
      clock: this.clock,
      signal: run.signal,
      onRetry: ({ attempt, delayMs, error }) => {
        this.emit({ type: 'step.retry', storyId: run.storyId, at: this.clock.now(), step, attempt, delayMs, error });
        this.logger.warn('retrying episode step', {
          storyId: run.storyId,
          step,
          attempt,
          delayMs,
          error: describeError(error),
        });
      },
    };
  }

  private warn(storyId: string, message: string, details: Record<string, unknown>): void {
    this.emit({ type: 'warning', storyId, at: this.clock.now(), message, details });
    this.logger.warn(message, { storyId, ...details });
  }

  private emit(event: EngineEvent): void {
    // A broken progress bar or metrics sink must not lose an episode, nor a logger that fails on top of it. An async
    // listener's rejection is caught too: left unhandled, it would end a Node.js process between two steps.
    callListener(this.onEvent, event, (error) =>
      this.logger.warn('onEvent listener threw', { type: event.type, error: describeError(error) }),
    );
  }
}

/**
 * The pending influences one scene takes: the oldest first, at most `perScene` (the engine's `maxInfluencesPerScene`,
 * which keeps the prompt within the model's context window) and at most as many as the store can resolve in one
 * commit (a store may declare `capabilities.maxInfluencesPerCommit`, as DynamoDB's does: 90). The rest stay pending
 * for the next scene; taking them all would make every call or commit fail once the queue outgrows either limit,
 * stalling the story.
 */
export function takenInfluences(
  state: StoryState,
  store: Pick<StoryStateStore, 'capabilities'>,
  perScene: number = DEFAULT_MAX_INFLUENCES_PER_SCENE,
): StoryState['userInfluenceQueue'] {
  const declared = store.capabilities.maxInfluencesPerCommit;
  const cap =
    declared === undefined || !Number.isInteger(declared) || declared < 1 ? perScene : Math.min(declared, perScene);
  const queue = state.userInfluenceQueue;
  if (queue.length <= cap) return queue;
  const byArrival = [...queue].sort((a, b) =>
    a.receivedAt !== b.receivedAt ? (a.receivedAt < b.receivedAt ? -1 : 1) : a.id < b.id ? -1 : a.id > b.id ? 1 : 0,
  );
  return byArrival.slice(0, cap);
}

/**
 * A delivered influence with a text or choice longer than the store keeps cut to fit (grapheme-safe, with an
 * ellipsis), and the names of the fields cut. Refused whole, such an influence (a paid tip with a long memo) would be
 * acknowledged at its source and lost without an outcome; cut, it is stored and settled like any other.
 */
function clipOverlong(item: UserInfluenceInput): { influence: UserInfluenceInput; clipped: string[] } {
  const clipped: string[] = [];
  const influence = { ...item };
  if (typeof item.text === 'string' && item.text.length > LIMITS.influenceText) {
    influence.text = ellipsize(item.text, LIMITS.influenceText);
    clipped.push('text');
  }
  if (typeof item.choice === 'string' && item.choice.length > LIMITS.choiceLength) {
    influence.choice = ellipsize(item.choice, LIMITS.choiceLength);
    clipped.push('choice');
  }
  return { influence, clipped };
}

/** What a store compares of two deliveries of one influence id: everything its sender says, not when it arrived. */
const DELIVERED_FIELDS = ['source', 'author', 'kind', 'choice', 'text', 'weight', 'proof'] as const;

/**
 * The fields in which a delivery of an influence differs from the copy the store already holds under its id (a
 * forged id, a chain re-organisation, a listener bug): the store keeps the first, and the difference is reported
 * rather than dropped unseen. Empty when the delivery says the same, as a plain re-delivery does.
 */
function redeliveredDifferences(delivered: UserInfluenceInput, stored: UserInfluence): string[] {
  const parsed = UserInfluenceSchema.safeParse(delivered);
  if (!parsed.success) return [];
  return DELIVERED_FIELDS.filter((field) => JSON.stringify(parsed.data[field]) !== JSON.stringify(stored[field]));
}

/** What a post-commit step recorded as done or skipped, with its result. */
interface StepOutcome {
  status: 'done' | 'skipped';
  result: Record<string, unknown>;
}

/** How a step's calls are tried: by the retry policy, never again once they may have done their work, or once. */
type AttemptPolicy = 'retry' | 'at-most-once' | 'once';

/** A publish step's claim, for a publisher that is not idempotent. */
interface Claim {
  /** This run holds the claim and may call the publisher. */
  claimed: boolean;
  /** Another run claimed the step and has finished it since. */
  finished: boolean;
  /** Another run holds the claim and may still be calling the publisher. */
  inProgress: boolean;
  /** How many times the step was released (its publisher said nothing went out, or someone settled it so). */
  generation: number;
  /** When the claim was made, and until when its lease runs, on the clock of the run that made it. */
  since: string;
  leaseUntil: string;
  /** Until when the claim holds on this engine's clock: its lease and the clock skew allowed (`maxClockSkewMs`). */
  holdsUntil: string;
  /** Claims of the step kept being taken and released by other runs while this one tried: the next run looks again. */
  contended: boolean;
}

/** Longest a claim holds: past it, a claim without an outcome is in doubt however long its run's policy allows. */
const MAX_CLAIM_LEASE_MS = 24 * 60 * 60 * 1000;
/** How many generations of a step's claim one run tries when those it loses to are released under it. */
const MAX_CLAIM_ATTEMPTS = 3;
/**
 * How much longer a claim write under way when the run's abort fires is waited for (never past `storeTimeoutMs`), in
 * ms: long enough for a store that is answering (a single write takes milliseconds), short enough to leave a caller
 * whose deadline is near the time to settle.
 */
const ABORTED_CLAIM_WRITE_GRACE_MS = 500;
/** The farthest time from the epoch a `Date` holds, in ms. */
const MAX_DATE_MS = 8.64e15;

/**
 * What `pending` resolves to if it does within `ms`; `undefined` if it rejects or takes longer (it goes on, and its
 * rejection is handled). Timed on the system's timers, as the store's time limit is.
 */
function answeredWithin<T>(pending: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise<T | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    // A pending wait must not keep a finished process alive.
    timer.unref?.();
    pending.then(resolve, () => resolve(undefined)).finally(() => clearTimeout(timer));
  });
}

const claimTarget = (step: EngineStep, generation: number) => `claim:${step}:${generation}`;
const releaseTarget = (step: EngineStep, generation: number) => `release:${step}:${generation}`;

/** Until when a claim entry holds (a claim written without a lease held only as it was made). */
function leaseUntilOf(claim: PublicationEntry): string {
  return typeof claim.result.leaseUntil === 'string' ? claim.result.leaseUntil : claim.recordedAt;
}

/** How many times a step was released: its release entries, counted by exact name from 0 (a target may hold `:`). */
function releasesOf(step: EngineStep, log: readonly PublicationEntry[]): number {
  const targets = new Set(log.map((entry) => entry.target));
  let generation = 0;
  while (targets.has(releaseTarget(step, generation))) generation++;
  return generation;
}

/**
 * Whether the holder of a step's claim of `generation` recorded that its call ended (it failed without being cut
 * short): nobody is publishing under that claim any more, whatever its lease says.
 */
function claimCallEnded(step: EngineStep, generation: number, log: readonly PublicationEntry[]): boolean {
  return log.some(
    (entry) => entry.target === step && entry.status === 'failed' && entry.result.callEndedUnderClaim === generation,
  );
}

/**
 * The most a publish record takes in the log, as JSON: well within what a store accepts (16,000 characters), so that
 * a publish that went out is always recorded, whatever its publisher answered.
 */
const MAX_PUBLISHED_RECORD_JSON = 12_000;
const MAX_PUBLISHED_URL_JSON = 2_000;
const MAX_PROVIDER_JSON = 200;
const MAX_PUBLISHED_IDS = 100;

/**
 * What the log keeps of a publish: the provider, the url and the remote ids (`settled` when `resolvePublication`
 * recorded it). Refused for its size, a publish that went out would never be recorded: an idempotent publisher would
 * be called again by every later run, and one that is not would be left in doubt. So the url is clipped, ids are kept
 * in order while the record fits (at most 100), and `idsLeftOut` counts the rest; what is not a string is left out.
 */
function publishedRecord(
  provider: unknown,
  published: { url?: unknown; ids?: unknown } | undefined,
  settled?: 'published',
): Record<string, unknown> {
  const record: Record<string, unknown> = { provider: clipToJson(String(provider), MAX_PROVIDER_JSON) };
  if (settled !== undefined) record.settled = settled;
  if (typeof published?.url === 'string') record.url = clipToJson(published.url, MAX_PUBLISHED_URL_JSON);
  const offered: unknown[] = Array.isArray(published?.ids) ? published.ids : [];
  const ids: string[] = [];
  // Measured with room for the count of ids left out, as the store measures: the JSON text.
  let size = JSON.stringify({ ...record, ids, idsLeftOut: offered.length }).length;
  for (const id of offered) {
    if (ids.length === MAX_PUBLISHED_IDS) break;
    if (typeof id !== 'string') continue;
    const cost = JSON.stringify(id).length + 1;
    if (size + cost > MAX_PUBLISHED_RECORD_JSON) break;
    ids.push(id);
    size += cost;
  }
  record.ids = ids;
  if (ids.length < offered.length) record.idsLeftOut = offered.length - ids.length;
  return record;
}

/** `text`, clipped (with an ellipsis) until its JSON form takes at most `maxJsonChars` (at least 3). */
function clipToJson(text: string, maxJsonChars: number): string {
  let clipped = text;
  let room = text.length;
  for (;;) {
    const size = JSON.stringify(clipped).length;
    if (size <= maxJsonChars) return clipped;
    // Escapes make JSON longer than the text: shrink in proportion, and by at least one each time.
    room = Math.max(1, Math.min(room - 1, Math.floor((room * maxJsonChars) / size)));
    clipped = ellipsize(text, room);
  }
}

/** The failure of a publish step that an earlier run started and never finished: it may or may not have gone out. */
function publishInDoubt(step: EngineStep, storyId: string, sceneId: string, since: string): StoryloomError {
  const target = step.slice('publish:'.length);
  return new StoryloomError(
    'PUBLISH_IN_DOUBT',
    `${step} of scene "${sceneId}" was started at ${since} and never finished: it may or may not have gone out, and the publisher is not idempotent, so it is not called again. Check "${target}", then call resolvePublication("${storyId}", "${sceneId}", "${target}", "published" or "not-published")`,
    { isRetryable: false },
  );
}

/** The failure of a run that found another run publishing the step: the next run looks again. */
function publishInProgress(step: EngineStep, sceneId: string, claim: Claim): StoryloomError {
  return new StoryloomError(
    'PUBLISH_IN_PROGRESS',
    `${step} of scene "${sceneId}" is being published by the run that claimed it at ${claim.since} (its claim holds until ${claim.holdsUntil}: its lease and the clock skew allowed); this run leaves it to that one`,
    { isRetryable: true },
  );
}

/** The failure of a run whose claims of a step other runs kept taking and releasing: the next run looks again. */
function publishContended(step: EngineStep, sceneId: string): StoryloomError {
  return new StoryloomError(
    'PUBLISH_IN_PROGRESS',
    `${step} of scene "${sceneId}" was claimed by other runs ${MAX_CLAIM_ATTEMPTS} times while this run tried, each released since; this run leaves it to the next run`,
    { isRetryable: true },
  );
}

/** The steps among `steps` that the log has not finished (`done` or `skipped`), in order. */
function unfinishedSteps(steps: readonly EngineStep[], log: readonly PublicationEntry[]): EngineStep[] {
  const finished = new Set(
    log.filter((entry) => entry.status === 'done' || entry.status === 'skipped').map((entry) => entry.target),
  );
  return steps.filter((step) => !finished.has(step));
}

/** Options of `buildEpisodeQuery`. */
export interface EpisodeQueryOptions {
  /** Name only what this character knows. */
  povCharacterId?: string;
  /**
   * Under a point of view, what it knows (`ContextManager.knownTo`): a character is named only when among its
   * `characterIds`, a thread of its cast only when among its `threads`, by the title it knows. Without it, what the
   * state alone suggests: itself, the characters it has a relationship with or was last in a scene with, and every
   * thread of its cast (one introduced, or a relationship given, where it was not can then be named).
   */
  known?: PointOfViewKnown;
}

/**
 * What a context layer's `knownTo` returned, checked: a layer written by hand that returns something else fails the
 * episode with a `ValidationError` that names it (not a `TypeError` from deep inside the query).
 */
function checkedKnowledge(known: unknown): PointOfViewKnown {
  const value = known as Partial<PointOfViewKnown> | null;
  const fine =
    typeof value === 'object' &&
    value !== null &&
    Array.isArray(value.characterIds) &&
    value.characterIds.every((id) => typeof id === 'string') &&
    Array.isArray(value.threads) &&
    value.threads.every(
      (thread) =>
        typeof thread === 'object' &&
        thread !== null &&
        typeof thread.id === 'string' &&
        typeof thread.title === 'string',
    );
  if (fine) return value as PointOfViewKnown;
  throw new ValidationError(
    'context.knownTo must return { characterIds: string[], threads: Array<{ id: string, title: string }> }',
    { problems: [{ path: 'context.knownTo', message: 'returned something else' }] },
  );
}

/**
 * The retrieval query of an episode: the main characters on stage, the most important open threads and what the
 * audience voted for. Built from the state alone, so it costs the same at scene 10 and at scene 10,000.
 *
 * The context layer writes the query into the task as its focus, so under a point of view (`povCharacterId`) it
 * names only what that character knows: itself, the characters it has a relationship with or was last in a scene
 * with (the state keeps no record of every meeting, so one met longer ago is left out rather than guessed), and the
 * threads it is in; with `known` (the engine passes it when its context layer can tell it), only what that says.
 *
 * @example
 * ```ts
 * import { buildEpisodeQuery, resolveInfluences } from 'storyloom';
 * const query = buildEpisodeQuery(state, resolveInfluences(state.userInfluenceQueue), { povCharacterId: 'mira' });
 * ```
 */
export function buildEpisodeQuery(
  state: StoryState,
  resolution: Pick<InfluenceResolution, 'winner'>,
  given: EpisodeQueryOptions | null = {},
): string {
  // `null` is "no options", as for the engine's own calls.
  const options = given ?? {};
  const pov = options.povCharacterId;
  const knownIds = pov !== undefined && options.known ? new Set(options.known.characterIds) : undefined;
  const knows =
    pov === undefined ? () => true : knownIds ? (id: string) => knownIds.has(id) : knownToPointOfView(state, pov);
  const characters = Object.values(state.characters)
    .filter((character) => character.status === 'active' && character.role === 'main' && knows(character.id))
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .slice(0, 4)
    .map((character) => character.name);
  // Under a point of view, each thread by the title it knows it by.
  const seen =
    pov !== undefined && options.known
      ? new Map(options.known.threads.map((thread) => [thread.id, thread]))
      : undefined;
  const threads = state.plotThreads
    .filter((thread) => thread.status !== 'resolved' && threadKnownTo(thread, pov) && (!seen || seen.has(thread.id)))
    .sort((a, b) => b.importance - a.importance || (a.id < b.id ? -1 : 1))
    .slice(0, 3)
    .map((thread) => seen?.get(thread.id)?.title ?? thread.title);
  const parts = [
    characters.length > 0 ? `Characters: ${characters.join(', ')}` : '',
    threads.length > 0 ? `Threads: ${threads.join('; ')}` : '',
    // Quoted as the prompt quotes audience text: the query reaches the task line, where it must read as a reader's
    // words, not as part of the instruction.
    resolution.winner ? `Audience choice: ${quoteAudienceText(resolution.winner.label)}` : '',
  ].filter(Boolean);
  return parts.length > 0 ? parts.join('. ') : state.bible.premise;
}

/**
 * Whether the point of view `pov` knows a character, as far as the state tells: itself, a character it has a
 * relationship with, or one present in the last scene it was in (both have that scene as their last appearance).
 */
function knownToPointOfView(state: StoryState, pov: string): (characterId: string) => boolean {
  const self = Object.hasOwn(state.characters, pov) ? state.characters[pov] : undefined;
  const lastScene = self?.lastAppearance ?? null;
  return (characterId) => {
    if (characterId === pov) return true;
    if (!self) return false;
    if (Object.hasOwn(self.relationships, characterId)) return true;
    return lastScene !== null && characterOf(state, characterId)?.lastAppearance === lastScene;
  };
}

function isFilteredRetryError(error: unknown): boolean {
  return (
    StoryloomError.isInstance(error) && error.code === 'RETRY_EXHAUSTED' && ContentFilteredError.isInstance(error.cause)
  );
}

/**
 * What the publication log and the logs keep of a failed step: the error's text, and the code (with the provider
 * and HTTP status) of what failed, which for retries that ran out is the last attempt's error, not `RETRY_EXHAUSTED`.
 */
function failureRecord(error: unknown): Record<string, unknown> {
  const cause = RetryError.isInstance(error) ? error.cause : error;
  return {
    error: describeError(error),
    ...(StoryloomError.isInstance(cause) ? { code: cause.code } : {}),
    ...(ProviderError.isInstance(cause)
      ? { provider: cause.provider, ...(cause.status === undefined ? {} : { status: cause.status }) }
      : {}),
    ...(RetryError.isInstance(error) ? { attempts: error.attempts } : {}),
    retryable: isRetryableStepFailure(error),
  };
}

function describeError(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return ellipsize(text, MAX_ERROR_TEXT);
}
