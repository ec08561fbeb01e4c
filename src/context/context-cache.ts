/**
 * `ContextCache`: the frequent context of a story (main characters, active plots, world rules, recent scenes), kept
 * in any `CacheDriver` under keys that carry the state version, so a stale entry can never be served.
 *
 * @module
 */
import { MAX_TIMER_MS, waitUnlessAborted } from '../core/abort.js';
import { AbortedError, ProviderError, throwIfAborted, ValidationError } from '../core/errors.js';
import { callListener } from '../core/listener.js';
import type { Scene, StoryState } from '../state/schema.js';
import type { StoryStateStore } from '../state/store.js';
import { hasLoneSurrogate, MAX_CACHE_TTL_MS } from './cache-arguments.js';
import type { CacheDriver } from './cache-driver.js';
import { newestScenesBefore } from './scene-listing.js';

/** The shape of `FrequentContext` entries, in their keys: bump it when the shape changes. 2: `updatedAt`. */
const FORMAT = 2;

const isString = (value: unknown): value is string => typeof value === 'string';
const isStrings = (value: unknown): value is string[] => Array.isArray(value) && value.every(isString);
const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;
const isNumber = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);
const isNumbers = (value: unknown): value is Record<string, number> =>
  isObject(value) && !Array.isArray(value) && Object.values(value).every(isNumber);

/**
 * Whether an entry is shaped as this format writes it, down to the fields the prompt reads: a shared cache may hold
 * anything, and one item of another shape would fail the retrieval that reads it instead of being a miss.
 */
function wellFormed(entry: FrequentContext): boolean {
  return (
    Array.isArray(entry.main_characters) &&
    entry.main_characters.every(
      (character) =>
        isObject(character) &&
        isString(character.id) &&
        isString(character.name) &&
        isStrings(character.aliases) &&
        isString(character.role) &&
        isString(character.status) &&
        isString(character.description) &&
        isNumbers(character.traits) &&
        isNumber(character.arcProgress) &&
        (character.lastAppearance === null || isString(character.lastAppearance)),
    ) &&
    Array.isArray(entry.active_plots) &&
    entry.active_plots.every(
      (plot) =>
        isObject(plot) &&
        isString(plot.id) &&
        isString(plot.title) &&
        isString(plot.summary) &&
        isString(plot.status) &&
        isNumber(plot.importance) &&
        isStrings(plot.characters) &&
        isStrings(plot.setups),
    ) &&
    isStrings(entry.world_rules) &&
    Array.isArray(entry.recent_scenes) &&
    entry.recent_scenes.every(
      (scene) =>
        isObject(scene) &&
        isString(scene.id) &&
        Number.isInteger(scene.index) &&
        isString(scene.chapterId) &&
        isString(scene.title) &&
        isString(scene.summary) &&
        isStrings(scene.characters) &&
        isStrings(scene.locations),
    )
  );
}

/** A character as the frequent context shows it. */
export interface CachedCharacter {
  id: string;
  name: string;
  aliases: string[];
  role: string;
  status: string;
  description: string;
  traits: Record<string, number>;
  arcProgress: number;
  lastAppearance: string | null;
}

/** A plot thread that is not resolved. */
export interface CachedPlot {
  id: string;
  title: string;
  summary: string;
  status: string;
  importance: number;
  characters: string[];
  setups: string[];
}

/** A recent scene, at summary detail. */
export interface CachedScene {
  id: string;
  index: number;
  chapterId: string;
  title: string;
  summary: string;
  characters: string[];
  locations: string[];
}

/** What the cache holds for one story version. Field names follow the reference system. */
export interface FrequentContext {
  storyId: string;
  version: number;
  /**
   * When the state it was made from was committed (`StoryState.updatedAt`). With the version it tells one timeline
   * from another: a story restored from a backup, or imported again, reaches the same versions with other states.
   */
  updatedAt: string;
  main_characters: CachedCharacter[];
  active_plots: CachedPlot[];
  world_rules: string[];
  recent_scenes: CachedScene[];
}

/** Hit and miss counters, for monitoring. */
export interface ContextCacheStats {
  hits: number;
  misses: number;
  /** Cache reads or writes that failed and were bypassed. */
  errors: number;
  /** Times the frequent context was computed from the store. */
  computed: number;
}

/** Options of `ContextCache`. */
export interface ContextCacheOptions {
  driver: CacheDriver;
  store: StoryStateStore;
  /**
   * How long an entry lives, in whole milliseconds up to `Number.MAX_SAFE_INTEGER`. Default 1 hour: keys carry the
   * version, so the TTL only bounds memory.
   */
  ttlMs?: number;
  /** Recent scenes kept. Default 5. */
  recentScenes?: number;
  /** Key prefix. Default `storyloom`. */
  prefix?: string;
  /**
   * Most milliseconds one driver call may take before it counts as failed and is bypassed. Default 1,000, at most
   * 2,147,483,647 (what a Node timer can wait): a driver whose call never returns must not hang a retrieval (the Redis
   * driver bounds its own calls as well).
   */
  timeoutMs?: number;
  /**
   * Most milliseconds concurrent misses of one state share one computation of its frequent context. A computation
   * that has run this long without an answer (a store read on a dead socket) is no longer joined: a caller that
   * arrives later computes afresh, and one that joined it stops waiting for it and computes on its own. The caller
   * that started it waits for its own store read, as it would without a cache. Default 5,000, at most 2,147,483,647.
   */
  buildTimeoutMs?: number;
  /**
   * Called when the cache fails and is bypassed: a read (`get`), a write (`set`, the write-back after a miss
   * included) or `invalidate` (`delete`, a write-back that landed after `invalidate` removed again included). A
   * listener that throws, or returns a promise that rejects, is ignored.
   */
  onError?: (error: unknown, operation: 'get' | 'set' | 'delete') => void;
}

/** Options of one `getFrequentContext` call. */
export interface GetFrequentContextOptions {
  /** The state to read the context of, when already loaded (one of another story is a `ValidationError`). */
  state?: StoryState;
  /**
   * Stops this caller's wait with an `AbortedError` as soon as it fires. A computation other callers share goes on
   * for them; one that every caller gave up on is no longer joined.
   */
  signal?: AbortSignal;
}

/** What `onError` names: the driver call that failed. */
type CacheOperation = Parameters<NonNullable<ContextCacheOptions['onError']>>[1];

/** Work of one story under way (a computation and its write): `invalidate` marks it stale so none of it lands after. */
interface Ticket {
  readonly storyId: string;
  stale: boolean;
}

/** One computation of a state's frequent context, shared by the misses that arrive while it runs. */
interface Build {
  readonly storyId: string;
  /** Its key in the table of computations under way. */
  readonly flight: string;
  /** Settles with the entry serialized (each caller parses its own copy). */
  readonly promise: Promise<string>;
  /** Fires once the computation has run `buildTimeoutMs` without settling: its joiners stop waiting for it. */
  readonly expired: AbortSignal;
  /** Callers waiting for it. */
  waiters: number;
}

/**
 * Caches the context every episode needs. Reads never fail because of the cache: a failing driver is bypassed and the
 * context is computed from the store. Concurrent misses of one state compute once (single flight, for up to
 * `buildTimeoutMs`: a computation that hangs is not joined past it), and a miss returns as soon as the context is
 * computed: its write-back goes on in the background, bounded like every driver call. Every caller gets its own copy,
 * which shares nothing with another caller's or with the state.
 *
 * @example
 * ```ts
 * import { ContextCache, createMemoryCacheDriver, createMemoryStateStore, createStoryFromTemplate } from 'storyloom';
 * const store = createMemoryStateStore();
 * await store.create(createStoryFromTemplate('lighthouse-keepers', 'lighthouse'));
 * const cache = new ContextCache({ driver: createMemoryCacheDriver(), store });
 * const frequent = await cache.getFrequentContext('lighthouse');
 * ```
 */
export class ContextCache {
  private readonly driver: CacheDriver;
  private readonly store: StoryStateStore;
  private readonly ttlMs: number;
  /** How many recent scenes an entry holds (`recentScenes`, default 5). */
  readonly recentScenes: number;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly buildTimeoutMs: number;
  private readonly onError: ContextCacheOptions['onError'];
  /**
   * The computations under way, by key and commit time: states of one version from two timelines (a story restored
   * from a backup) are computed apart, each caller getting its own state's context.
   */
  private readonly inFlight = new Map<string, Build>();
  /** The computations and writes under way, per story (bounded by the work under way, not by the stories seen). */
  private readonly underWay = new Map<string, Set<Ticket>>();
  private readonly counters: ContextCacheStats = { hits: 0, misses: 0, errors: 0, computed: 0 };

  constructor(options: ContextCacheOptions) {
    this.driver = options.driver;
    this.store = options.store;
    this.ttlMs = options.ttlMs ?? 60 * 60 * 1000;
    this.recentScenes = options.recentScenes ?? 5;
    this.prefix = options.prefix ?? 'storyloom';
    this.timeoutMs = options.timeoutMs ?? 1_000;
    this.buildTimeoutMs = options.buildTimeoutMs ?? 5_000;
    this.onError = options.onError;
    // Checked here: a ttlMs of 0 made every write fail in the driver, and the cache was bypassed without a word.
    const problems = [
      // Up to what every driver can hold: Redis refuses a longer PX, and the write-back failed on every miss.
      ...(Number.isInteger(this.ttlMs) && this.ttlMs > 0 && this.ttlMs <= MAX_CACHE_TTL_MS
        ? []
        : [{ path: 'ttlMs', message: `must be a positive integer up to ${MAX_CACHE_TTL_MS}` }]),
      ...(Number.isInteger(this.recentScenes) && this.recentScenes >= 0 && this.recentScenes <= 100
        ? []
        : [{ path: 'recentScenes', message: 'must be an integer from 0 to 100' }]),
      // Every key would hold a lone surrogate, which the drivers refuse: the cache would fail on every call.
      ...(typeof this.prefix === 'string' &&
      this.prefix.length > 0 &&
      !/[{}]/.test(this.prefix) &&
      !hasLoneSurrogate(this.prefix)
        ? []
        : [{ path: 'prefix', message: 'must be a non-empty string of well-formed UTF-16 without braces' }]),
      // A longer timer fires after 1 ms: every call would time out.
      ...(typeof this.timeoutMs === 'number' && this.timeoutMs > 0 && this.timeoutMs <= MAX_TIMER_MS
        ? []
        : [{ path: 'timeoutMs', message: `must be a positive number up to ${MAX_TIMER_MS}` }]),
      ...(typeof this.buildTimeoutMs === 'number' && this.buildTimeoutMs > 0 && this.buildTimeoutMs <= MAX_TIMER_MS
        ? []
        : [{ path: 'buildTimeoutMs', message: `must be a positive number up to ${MAX_TIMER_MS}` }]),
    ];
    if (problems.length > 0) {
      throw new ValidationError(`Invalid ContextCache options: ${problems[0]!.path} ${problems[0]!.message}`, {
        problems,
      });
    }
  }

  /**
   * The cache key of a story version. The `{id}` hash tag keeps a story's keys in one Redis Cluster slot; the format
   * tag keeps a release that shapes `FrequentContext` differently from reading another's entries in a shared cache.
   */
  keyFor(storyId: string, version: number): string {
    // The recent-scene count is in the key: caches of another count share a driver without serving each other.
    return `${this.prefix}:story:{${storyId}}:frequent:f${FORMAT}:r${this.recentScenes}:v${version}`;
  }

  /** Counters since construction. */
  stats(): ContextCacheStats {
    return { ...this.counters };
  }

  /**
   * Computes the frequent context of the story's current version and writes it to the cache, waiting for the write
   * (a failed one is reported, not thrown). Pass `state` when it is already loaded, to save a read; a `state` of
   * another story is a `ValidationError`. A `signal` that fires ends the call at once with an `AbortedError`; what it
   * was computing is then not written (a write already sent is left to its driver's timeout).
   */
  async cacheFrequentContext(storyId: string, options: GetFrequentContextOptions = {}): Promise<FrequentContext> {
    const { signal } = options;
    throwIfAborted(signal);
    const ticket = this.begin(storyId);
    let state: StoryState;
    let context: FrequentContext;
    try {
      state = await waitUnlessAborted(this.stateOf(storyId, options), signal);
      context = await waitUnlessAborted(this.compute(state), signal);
    } catch (error) {
      this.end(ticket);
      throw error;
    }
    await waitUnlessAborted(this.write(this.keyFor(storyId, state.version), JSON.stringify(context), ticket), signal);
    return context;
  }

  /**
   * The frequent context of the story's current version (or of `state`, when given; one of another story is a
   * `ValidationError`): from the cache when present, else computed once, however many callers miss the same state at
   * the same time (for up to `buildTimeoutMs`), and returned without waiting for its write to the cache. A `signal`
   * that fires ends this caller's wait at once with an `AbortedError`.
   */
  async getFrequentContext(storyId: string, options: GetFrequentContextOptions = {}): Promise<FrequentContext> {
    const { signal } = options;
    throwIfAborted(signal);
    const state = await waitUnlessAborted(this.stateOf(storyId, options), signal);
    const key = this.keyFor(storyId, state.version);
    const cached = await waitUnlessAborted(this.read(key, state), signal);
    if (cached) {
      this.counters.hits++;
      return cached;
    }
    this.counters.misses++;
    const flight = `${key}\u0000${state.updatedAt}`;
    for (;;) {
      const joined = this.inFlight.get(flight);
      const build = joined ?? this.startBuild(flight, key, state);
      const serialized = await this.wait(build, joined !== undefined, signal);
      // Each caller its own copy, as on a hit: one that reorders or extends its result changes no other's.
      if (serialized !== undefined) return JSON.parse(serialized) as FrequentContext;
      // The build joined ran past buildTimeoutMs: no longer shared, and this caller computes on its own.
    }
  }

  /**
   * Drops every cached version of a story (after an import or a manual edit). A computation of the story under way
   * is no longer joined and is not written (its callers still get it), and a write issued before this call that
   * lands after it is removed again. Bounded by `timeoutMs` like every driver call: a driver that takes longer (a
   * long key walk, a stuck server) is reported to `onError` as a failed `delete` and left to finish on its own.
   */
  async invalidate(storyId: string): Promise<void> {
    for (const ticket of this.underWay.get(storyId) ?? []) ticket.stale = true;
    for (const [flight, build] of this.inFlight) {
      if (build.storyId === storyId) this.inFlight.delete(flight);
    }
    try {
      await this.bounded(this.driver.deletePrefix(`${this.prefix}:story:{${storyId}}:`), 'delete');
    } catch (error) {
      this.failed(error, 'delete');
    }
  }

  /** `options.state` once it is known to be of `storyId`, else the story's stored state. */
  private async stateOf(storyId: string, options: { state?: StoryState }): Promise<StoryState> {
    const given = options.state;
    if (given === undefined) return this.store.load(storyId);
    // Computed, it would be cached under this story's key and served as this story.
    if (given.storyId !== storyId) {
      const message = `belongs to "${given.storyId}", not "${storyId}"`;
      throw new ValidationError(`options.state ${message}`, { problems: [{ path: 'options.state', message }] });
    }
    return given;
  }

  /** A ticket for work of `storyId` that `invalidate` must be able to mark stale; `end` it once the work is over. */
  private begin(storyId: string): Ticket {
    const ticket: Ticket = { storyId, stale: false };
    const tickets = this.underWay.get(storyId);
    if (tickets) tickets.add(ticket);
    else this.underWay.set(storyId, new Set([ticket]));
    return ticket;
  }

  private end(ticket: Ticket): void {
    const tickets = this.underWay.get(ticket.storyId);
    if (!tickets?.delete(ticket)) return;
    if (tickets.size === 0) this.underWay.delete(ticket.storyId);
  }

  /**
   * Starts computing the entry of `key` for `state`, shared under `flight` until it settles, runs `buildTimeoutMs`,
   * or is given up by every caller; its one timer is cleared when it settles.
   */
  private startBuild(flight: string, key: string, state: StoryState): Build {
    const expiry = new AbortController();
    const promise = this.computeAndWriteBack(key, state);
    const build: Build = { storyId: state.storyId, flight, promise, expired: expiry.signal, waiters: 0 };
    const timer = setTimeout(() => {
      this.forget(build);
      expiry.abort();
    }, this.buildTimeoutMs);
    timer.unref?.();
    this.inFlight.set(flight, build);
    const settle = () => {
      clearTimeout(timer);
      this.forget(build);
    };
    // Every caller may have stopped waiting (aborted): the failure is theirs, not an unhandled rejection.
    promise.then(settle, settle);
    return build;
  }

  /** Drops `build` from the computations callers join, unless another has taken its place. */
  private forget(build: Build): void {
    if (this.inFlight.get(build.flight) === build) this.inFlight.delete(build.flight);
  }

  /**
   * The entry `build` computes, or `undefined` once it has run `buildTimeoutMs` (for a caller that `joined` it; the
   * caller that started it waits for its own store read). A `signal` that fires rejects with an `AbortedError`, and
   * a computation every caller gave up on is no longer joined.
   */
  private wait(build: Build, joined: boolean, signal: AbortSignal | undefined): Promise<string | undefined> {
    throwIfAborted(signal);
    build.waiters++;
    return new Promise<string | undefined>((resolve, reject) => {
      let waiting = true;
      const leave = (): boolean => {
        if (!waiting) return false;
        waiting = false;
        build.waiters--;
        signal?.removeEventListener('abort', onAbort);
        build.expired.removeEventListener('abort', onExpired);
        return true;
      };
      const onAbort = () => {
        if (!leave()) return;
        reject(new AbortedError(undefined, { cause: signal?.reason }));
        if (build.waiters === 0) this.forget(build);
      };
      const onExpired = () => {
        if (leave()) resolve(undefined);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (joined) build.expired.addEventListener('abort', onExpired, { once: true });
      build.promise.then(
        (serialized) => {
          if (leave()) resolve(serialized);
        },
        (error: unknown) => {
          if (leave()) reject(error);
        },
      );
    });
  }

  /**
   * Computes the entry of `key` and starts writing it to the cache; resolves to the entry serialized, without
   * waiting for the write: a slow or stuck cache must not delay the retrieval that missed it.
   */
  private async computeAndWriteBack(key: string, state: StoryState): Promise<string> {
    const ticket = this.begin(state.storyId);
    let serialized: string;
    try {
      serialized = JSON.stringify(await this.compute(state));
    } catch (error) {
      this.end(ticket);
      throw error;
    }
    // write() bounds the call and counts and reports its failure itself; it never rejects.
    void this.write(key, serialized, ticket);
    return serialized;
  }

  private async read(key: string, state: StoryState): Promise<FrequentContext | null> {
    let raw: string | null;
    try {
      raw = await this.bounded(this.driver.get(key), 'get');
    } catch (error) {
      this.failed(error, 'get');
      return null;
    }
    if (raw === null) return null;
    try {
      const parsed = JSON.parse(raw) as FrequentContext;
      // The key names the version, but a shared cache may hold anything: trust only a matching, well-formed entry of
      // this very state (the version alone repeats in a story restored from a backup).
      if (
        parsed?.storyId === state.storyId &&
        parsed.version === state.version &&
        parsed.updatedAt === state.updatedAt &&
        wellFormed(parsed)
      ) {
        return parsed;
      }
    } catch {
      // A corrupt entry is a miss; the next write replaces it.
    }
    return null;
  }

  /**
   * Writes `serialized` under `key`, unless `invalidate` marked the work stale meanwhile, and ends `ticket` once the
   * driver's call has settled. A write that lands after `invalidate` (issued just before it) is deleted again,
   * whenever it lands, past `timeoutMs` included: it may hold a state the invalidation was meant to drop.
   */
  private async write(key: string, serialized: string, ticket: Ticket): Promise<void> {
    if (ticket.stale) {
      this.end(ticket);
      return;
    }
    let call: Promise<void>;
    try {
      call = this.driver.set(key, serialized, { ttlMs: this.ttlMs });
    } catch (error) {
      this.end(ticket);
      this.failed(error, 'set');
      return;
    }
    call
      .then(
        () => {
          if (ticket.stale) void this.retract(key);
        },
        () => {},
      )
      .finally(() => this.end(ticket));
    try {
      await this.bounded(call, 'set');
    } catch (error) {
      this.failed(error, 'set');
    }
  }

  /** Deletes an entry written after `invalidate`; a failure is counted and reported as a `delete`. */
  private async retract(key: string): Promise<void> {
    try {
      await this.bounded(this.driver.delete([key]), 'delete');
    } catch (error) {
      this.failed(error, 'delete');
    }
  }

  /** `call`, or a `ProviderError` once it has taken `timeoutMs` (the call is left to settle on its own). */
  private bounded<T>(call: Promise<T>, operation: CacheOperation): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new ProviderError(`The cache's ${operation} took more than ${this.timeoutMs} ms`, {
              provider: 'cache',
              isRetryable: true,
            }),
          ),
        this.timeoutMs,
      );
      timer.unref?.();
    });
    call.catch(() => {});
    return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
  }

  private failed(error: unknown, operation: CacheOperation): void {
    this.counters.errors++;
    // A listener that throws must not fail the read it watches: reads never fail because of the cache.
    const onError = this.onError;
    callListener(onError && ((failure: unknown) => onError(failure, operation)), error);
  }

  private async compute(state: StoryState): Promise<FrequentContext> {
    this.counters.computed++;
    // The state's own recent scenes, never ones committed after it (a state loaded just before another writer's commit).
    const recent = await newestScenesBefore(this.store, state.storyId, state.sceneCount, this.recentScenes);
    return frequentContextOf(state, recent);
  }
}

/**
 * The frequent context of a state and its most recent scenes (newest first), as `ContextCache` stores it. It shares
 * no array or object with `state` or the scenes: a caller may change it freely.
 */
export function frequentContextOf(state: StoryState, recentScenesNewestFirst: readonly Scene[]): FrequentContext {
  const characters = Object.values(state.characters);
  const main = characters.filter((character) => character.role === 'main');
  // A story whose bible names no main character still needs someone in the spotlight.
  const chosen = main.length > 0 ? main : characters.filter((character) => character.status !== 'dead').slice(0, 3);
  return {
    storyId: state.storyId,
    version: state.version,
    updatedAt: state.updatedAt,
    main_characters: chosen
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .map((character) => ({
        id: character.id,
        name: character.name,
        aliases: [...character.aliases],
        role: character.role,
        status: character.status,
        description: character.description,
        traits: { ...character.traits },
        arcProgress: character.arcProgress,
        lastAppearance: character.lastAppearance,
      })),
    active_plots: state.plotThreads
      .filter((thread) => thread.status !== 'resolved')
      .sort((a, b) => b.importance - a.importance || (a.id < b.id ? -1 : 1))
      .map((thread) => ({
        id: thread.id,
        title: thread.title,
        summary: thread.summary,
        status: thread.status,
        importance: thread.importance,
        characters: [...thread.characters],
        setups: [...thread.setups],
      })),
    world_rules: [...state.bible.worldRules],
    recent_scenes: [...recentScenesNewestFirst]
      .sort((a, b) => a.index - b.index)
      .map((scene) => ({
        id: scene.id,
        index: scene.index,
        chapterId: scene.chapterId,
        title: scene.title,
        summary: scene.summary,
        characters: [...scene.characters],
        locations: [...scene.locations],
      })),
  };
}
