/**
 * `ContextCache`: the frequent context of a story (main characters, active plots, world rules, recent scenes), kept
 * in any `CacheDriver` under keys that carry the state version, so a stale entry can never be served.
 *
 * @module
 */
import type { Scene, StoryState } from '../state/schema.js';
import type { StoryStateStore } from '../state/store.js';
import type { CacheDriver } from './cache-driver.js';
import { newestScenesBefore } from './scene-listing.js';

/** The shape of `FrequentContext` entries, in their keys: bump it when the shape changes. */
const FORMAT = 1;

/** Whether an entry's lists are lists (items are what this format writes; only a foreign writer could break them). */
function hasLists(entry: FrequentContext): boolean {
  return (
    Array.isArray(entry.main_characters) &&
    Array.isArray(entry.active_plots) &&
    Array.isArray(entry.world_rules) &&
    Array.isArray(entry.recent_scenes)
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
  /** How long an entry lives. Default 1 hour: keys carry the version, so the TTL only bounds memory. */
  ttlMs?: number;
  /** Recent scenes kept. Default 5. */
  recentScenes?: number;
  /** Key prefix. Default `storyloom`. */
  prefix?: string;
  /** Called when the cache fails and is bypassed. */
  onError?: (error: unknown, operation: 'get' | 'set') => void;
}

/**
 * Caches the context every episode needs. Reads never fail because of the cache: a failing driver is bypassed and the
 * context is computed from the store. Concurrent misses on one key compute once (single flight).
 *
 * @example
 * ```ts
 * import { ContextCache, createMemoryCacheDriver, createMemoryStateStore } from 'storyloom';
 * const cache = new ContextCache({ driver: createMemoryCacheDriver(), store: createMemoryStateStore() });
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
  private readonly onError: ((error: unknown, operation: 'get' | 'set') => void) | undefined;
  private readonly inFlight = new Map<string, Promise<FrequentContext>>();
  private readonly counters: ContextCacheStats = { hits: 0, misses: 0, errors: 0, computed: 0 };

  constructor(options: ContextCacheOptions) {
    this.driver = options.driver;
    this.store = options.store;
    this.ttlMs = options.ttlMs ?? 60 * 60 * 1000;
    this.recentScenes = options.recentScenes ?? 5;
    this.prefix = options.prefix ?? 'storyloom';
    this.onError = options.onError;
  }

  /**
   * The cache key of a story version. The `{id}` hash tag keeps a story's keys in one Redis Cluster slot; the format
   * tag keeps a release that shapes `FrequentContext` differently from reading another's entries in a shared cache.
   */
  keyFor(storyId: string, version: number): string {
    return `${this.prefix}:story:{${storyId}}:frequent:f${FORMAT}:v${version}`;
  }

  /** Counters since construction. */
  stats(): ContextCacheStats {
    return { ...this.counters };
  }

  /**
   * Computes the frequent context of the story's current version and writes it to the cache.
   * Pass `state` when it is already loaded, to save a read.
   */
  async cacheFrequentContext(storyId: string, options: { state?: StoryState } = {}): Promise<FrequentContext> {
    const state = options.state ?? (await this.store.load(storyId));
    const context = await this.compute(state);
    await this.write(this.keyFor(storyId, state.version), context);
    return context;
  }

  /**
   * The frequent context of the story's current version (or of `state`, when given): from the cache when present,
   * else computed once, however many callers miss at the same time, and cached.
   */
  async getFrequentContext(storyId: string, options: { state?: StoryState } = {}): Promise<FrequentContext> {
    const state = options.state ?? (await this.store.load(storyId));
    const key = this.keyFor(storyId, state.version);
    const cached = await this.read(key, state);
    if (cached) {
      this.counters.hits++;
      return cached;
    }
    this.counters.misses++;
    const pending = this.inFlight.get(key);
    if (pending) return pending;
    const computing = (async () => {
      try {
        const context = await this.compute(state);
        await this.write(key, context);
        return context;
      } finally {
        this.inFlight.delete(key);
      }
    })();
    this.inFlight.set(key, computing);
    return computing;
  }

  /** Drops every cached version of a story (after an import or a manual edit). */
  async invalidate(storyId: string): Promise<void> {
    try {
      await this.driver.deletePrefix(`${this.prefix}:story:{${storyId}}:`);
    } catch (error) {
      this.failed(error, 'set');
    }
  }

  private async read(key: string, state: StoryState): Promise<FrequentContext | null> {
    let raw: string | null;
    try {
      raw = await this.driver.get(key);
    } catch (error) {
      this.failed(error, 'get');
      return null;
    }
    if (raw === null) return null;
    try {
      const parsed = JSON.parse(raw) as FrequentContext;
      // The key names the version, but a shared cache may hold anything: trust only a matching, well-formed entry.
      if (parsed?.storyId === state.storyId && parsed.version === state.version && hasLists(parsed)) return parsed;
    } catch {
      // A corrupt entry is a miss; the next write replaces it.
    }
    return null;
  }

  private async write(key: string, context: FrequentContext): Promise<void> {
    try {
      await this.driver.set(key, JSON.stringify(context), { ttlMs: this.ttlMs });
    } catch (error) {
      this.failed(error, 'set');
    }
  }

  private failed(error: unknown, operation: 'get' | 'set'): void {
    this.counters.errors++;
    this.onError?.(error, operation);
  }

  private async compute(state: StoryState): Promise<FrequentContext> {
    this.counters.computed++;
    // The state's own recent scenes, never ones committed after it (a state loaded just before another writer's commit).
    const recent = await newestScenesBefore(this.store, state.storyId, state.sceneCount, this.recentScenes);
    return frequentContextOf(state, recent);
  }
}

/** The frequent context of a state and its most recent scenes (newest first), as `ContextCache` stores it. */
export function frequentContextOf(state: StoryState, recentScenesNewestFirst: readonly Scene[]): FrequentContext {
  const characters = Object.values(state.characters);
  const main = characters.filter((character) => character.role === 'main');
  // A story whose bible names no main character still needs someone in the spotlight.
  const chosen = main.length > 0 ? main : characters.filter((character) => character.status !== 'dead').slice(0, 3);
  return {
    storyId: state.storyId,
    version: state.version,
    main_characters: chosen
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .map((character) => ({
        id: character.id,
        name: character.name,
        aliases: character.aliases,
        role: character.role,
        status: character.status,
        description: character.description,
        traits: character.traits,
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
        characters: thread.characters,
        setups: thread.setups,
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
        characters: scene.characters,
        locations: scene.locations,
      })),
  };
}
