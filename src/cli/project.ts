/**
 * A storyloom project on disk, and the system the command assembles from it: one SQLite file for state, vectors
 * and keywords, a static site folder, and a small JSON file naming the story.
 *
 * The command reaches optional packages (`storyloom/sqlite`, `storyloom/anthropic`, `storyloom/bedrock`) through
 * the package's own public subpaths, exactly as a user's code would, so they load only when a command needs them.
 *
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { ContextCache } from '../context/context-cache.js';
import { ContextManager } from '../context/context-manager.js';
import { createHashingEmbedder } from '../context/hashing-embedder.js';
import type { KeywordIndex } from '../context/keyword-index.js';
import { createMemoryCacheDriver } from '../context/memory-cache.js';
import { eachScene } from '../context/scene-listing.js';
import { type Clock, systemClock } from '../core/clock.js';
import { MissingDependencyError, StoryloomError, ValidationError } from '../core/errors.js';
import { caseDistinctFileId } from '../core/file-names.js';
import { isProcessAlive } from '../core/process.js';
import { createStoryEngine, type StoryEngine } from '../engine/engine.js';
import type { EngineEvent } from '../engine/events.js';
import type { ImageGenerator } from '../generation/image-generator.js';
import { sceneIllustrationRequest } from '../generation/image-prompt.js';
import { createProceduralIllustrator } from '../generation/procedural-illustrator.js';
import { createProceduralNarrator } from '../generation/procedural-narrator.js';
import type { SceneGenerator } from '../generation/scene-generator.js';
import { createFilesystemPublisher, LANGUAGE_TAG } from '../publishing/filesystem.js';
import { type Episode, sceneAltText } from '../publishing/publisher.js';
import type { Scene, StoryState } from '../state/schema.js';
import type { StoryStateStore } from '../state/store.js';

/**
 * How a user runs this command again, for the hints it prints: `npx storyloom` where it is installed, and the
 * repository's npm script where it runs from source (as `npm run demo` does), where there is no `storyloom` bin.
 */
export const SELF = import.meta.url.endsWith('.ts') ? 'npm run storyloom --' : 'npx storyloom';

/** The file that marks a folder as a storyloom project. */
export const PROJECT_FILE = 'storyloom.json';
const DATABASE_FILE = 'story.db';
const SITE_FOLDER = 'site';
const PENDING_FOLDER = 'pending';

/** The version of `storyloom.json` this storyloom writes and reads; a file of a higher one is a newer storyloom's. */
const FORMAT_VERSION = 1;

const ProjectFileSchema = z
  .object({
    formatVersion: z.literal(FORMAT_VERSION),
    storyId: z.string().min(1),
    dimensions: z.number().int().min(1).max(8192),
    /** Prune old, unimportant scene memories each time a chapter closes (`ContextManagerOptions.autoPrune`). */
    autoPrune: z
      .object({
        minAgeScenes: z.number().int().min(0).optional(),
        maxImportance: z.number().min(0).max(1).optional(),
      })
      .strict()
      .optional(),
    /**
     * The reader sites: `baseUrl`, the public URL the project's `site/` folder is served from (each story's site is
     * its folder under it, so its feed's links are absolute), `language`, the pages' `lang` (default `en`), and
     * `title`, the title their headers and feeds show (default: each story bible's title).
     */
    site: z
      .object({
        baseUrl: z
          .string()
          .refine((value) => {
            try {
              const url = new URL(value);
              return ['http:', 'https:'].includes(url.protocol) && url.search === '' && url.hash === '';
            } catch {
              return false;
            }
          }, 'must be an absolute http(s) URL without query or fragment')
          .optional(),
        language: z.string().regex(LANGUAGE_TAG, 'must be a language tag such as "en" or "pt-BR"').optional(),
        // One line of at most the 200 characters the publisher takes: a header and a feed title hold no line break.
        title: z
          .string()
          .max(200, 'must be at most 200 characters')
          .refine((value) => value.trim() !== '', 'must not be empty')
          .refine((value) => !/[\p{Cc}\u2028\u2029]/u.test(value), 'must be one line, without control characters')
          .optional(),
      })
      .strict()
      .optional(),
  })
  // A misspelled key ("autoprune") would otherwise be dropped without a word, and its setting silently not apply.
  .strict();
export type ProjectFile = z.infer<typeof ProjectFileSchema>;

/** A user-facing failure of the command: one line that says what is wrong and what to do. */
export class CommandError extends StoryloomError {
  declare private readonly commandErrorBrand: never;
  readonly exitCode: number;
  constructor(message: string, options: { exitCode?: number; cause?: unknown } = {}) {
    super('COMMAND', message, { cause: options.cause });
    this.name = 'CommandError';
    this.exitCode = options.exitCode ?? 1;
  }
}

/** Where a project lives. */
export interface ProjectPaths {
  root: string;
  config: string;
  database: string;
  /** The folder of all sites: one sub-folder per story (a fork gets its own). */
  sites: string;
  /**
   * The site folder of one story: `site/<the id as caseDistinctFileId names it>`, the id itself for a lowercase id
   * without `:` (`site/lighthouse-keepers`). A folder an earlier storyloom named by the id as it is keeps serving the
   * story while no folder has the new name.
   */
  siteOf(storyId: string): string;
  /** The folder of the records of unfinished builds. */
  pending: string;
  /** The record of a story's unfinished build (`markBuildPending`). */
  pendingOf(storyId: string): string;
}

/** The paths of the project in `directory`. */
export function projectPaths(directory: string): ProjectPaths {
  const root = path.resolve(directory);
  return {
    root,
    config: path.join(root, PROJECT_FILE),
    database: path.join(root, DATABASE_FILE),
    sites: path.join(root, SITE_FOLDER),
    siteOf: (storyId) => ownEntry(path.join(root, SITE_FOLDER), caseDistinctFileId(storyId), storyId),
    pending: path.join(root, PENDING_FOLDER),
    // Ids may hold ':', which some file systems refuse in a name, and differ by case alone, which some ignore.
    pendingOf: (storyId) =>
      ownEntry(
        path.join(root, PENDING_FOLDER),
        `${caseDistinctFileId(storyId)}.json`,
        `${encodeURIComponent(storyId)}.json`,
      ),
  };
}

/**
 * `folder/name`, or `folder/legacyName` where an earlier storyloom named the entry so and nothing has the new name
 * yet: a project made before keeps its site and its records. An entry counts as a name's own only when the folder
 * lists it by exactly that name and it is not another entry under a second name: on a case-insensitive file system
 * `Tale` finds the folder of `tale` (the listing shows `tale`, as does a link from one name to the other). When the
 * new name itself is another entry's so (an earlier storyloom made `Tale` for the story `Tale`, and this is the story
 * `tale`), the story cannot have an entry of its own there: a `ValidationError` says which entry to move.
 */
function ownEntry(folder: string, name: string, legacyName: string): string {
  const current = path.join(folder, name);
  let names: string[];
  try {
    names = readdirSync(folder);
  } catch {
    return current;
  }
  /** The other entries of the folder that are `entry` under another name. */
  const aliasesOf = (entry: string): string[] => {
    const stats = statSync(path.join(folder, entry), { throwIfNoEntry: false });
    if (!stats) return [];
    return names.filter((other) => {
      if (other === entry) return false;
      const otherStats = statSync(path.join(folder, other), { throwIfNoEntry: false });
      return otherStats !== undefined && otherStats.dev === stats.dev && otherStats.ino === stats.ino;
    });
  };
  if (existsSync(current)) {
    const others = names.includes(name) ? aliasesOf(name) : names.filter((other) => other.toLowerCase() === name);
    if (others.length === 0) return current;
    throw new ValidationError(
      `${current} is also ${path.join(folder, others[0]!)}, which an earlier storyloom made for another story whose id differs in case only: move that one away (this version names it differently) and run the command again`,
      { problems: [{ path: current, message: 'is the entry of another story on this file system' }] },
    );
  }
  if (legacyName === name || !names.includes(legacyName)) return current;
  return aliasesOf(legacyName).length > 0 ? current : path.join(folder, legacyName);
}

const PendingBuildSchema = z.object({
  kind: z.enum(['import', 'fork']),
  /** The story whose log says which pictures were skipped: the story itself (an import), the original (a fork). */
  from: z.string().min(1),
  /**
   * A fork's `--at` (its last shared scene, 1-based), so that running it again with another `--at` is refused rather
   * than taken for the same fork. Absent in records written before it was kept, and in an import's.
   */
  at: z.number().int().min(1).optional(),
  startedAt: z.string(),
});
/**
 * A story that went into the store but whose memory and site a command had not built yet when it stopped: an import
 * or a fork is one store write followed by a rebuild of every scene's memory and pages, which a kill can cut short.
 */
export type PendingBuild = z.infer<typeof PendingBuildSchema>;

/**
 * Records, before a command writes a story into the store, that its build is pending; `clearBuildPending` removes the
 * record once the build is done. A kill between the two leaves it, and `status` and `run` find it. Written to a
 * temporary file and renamed, so a kill never leaves half a record.
 */
export function markBuildPending(paths: ProjectPaths, storyId: string, build: Omit<PendingBuild, 'startedAt'>): void {
  const file = paths.pendingOf(storyId);
  mkdirSync(path.dirname(file), { recursive: true });
  const partial = partialFileFor(file);
  removeStalePartials(file);
  writeFileSync(partial, `${JSON.stringify({ ...build, startedAt: new Date().toISOString() })}\n`);
  renameSync(partial, file);
}

/** How long a partial file whose writer cannot be judged here must lie untouched before it counts as abandoned. */
const ABANDONED_PARTIAL_AGE_MS = 24 * 60 * 60 * 1000;

/**
 * Where a pid names the same process as it does for this one, as a short hash: this machine since it started (Linux's
 * boot id, which a container shares with its host) and this pid namespace (each container counts its own pids, even
 * under its host's name). Where neither can be read, the host name alone stands for both.
 */
function pidScope(): string {
  const readOrEmpty = (read: () => string) => {
    try {
      return read().trim();
    } catch {
      return '';
    }
  };
  const machine = readOrEmpty(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8'));
  const namespace = readOrEmpty(() => readlinkSync('/proc/self/ns/pid'));
  return createHash('sha256').update([hostname(), machine, namespace].join('\n')).digest('hex').slice(0, 12);
}

/**
 * A new name beside `target` for a writer's work before it is renamed into place:
 * `<target>.partial-<scope>-<pid>-<random>`. Unique beyond the pid, which a process in another container writing to
 * the same shared folder may have too; `removeStalePartials` reads the scope and pid back.
 */
export function partialFileFor(target: string): string {
  return `${target}.partial-${pidScope()}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/**
 * Removes what writers of `target` killed before they could rename their work into place left beside it (see
 * `partialFileFor`): an export, a pending-build record, an import's copy of a pipe. A pid says whether its writer
 * still runs only within its scope (`pidScope`): a partial file of this scope goes once its process no longer runs.
 * One of another scope (another machine or container writing into a shared folder), or one an older storyloom named
 * by its pid alone, goes only once nothing has written it for a day: a writer writes its partial file until it
 * renames it, so a day untouched is no running writer's.
 */
export function removeStalePartials(target: string): void {
  const prefix = `${path.basename(target)}.partial-`;
  const folder = path.dirname(target);
  const scope = pidScope();
  for (const name of readdirSync(folder)) {
    if (!name.startsWith(prefix)) continue;
    const file = path.join(folder, name);
    const [partialScope, pidText] = name.slice(prefix.length).split('-');
    let abandoned: boolean;
    if (partialScope === scope) {
      const pid = Number(pidText);
      abandoned = Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && !isProcessAlive(pid);
    } else {
      const written = lstatSync(file, { throwIfNoEntry: false })?.mtimeMs;
      abandoned = written !== undefined && Date.now() - written > ABANDONED_PARTIAL_AGE_MS;
    }
    if (abandoned) rmSync(file, { force: true });
  }
}

/** The pending build of a story, if a command left one. A record that cannot be read counts as a pending import. */
export function readBuildPending(paths: ProjectPaths, storyId: string): PendingBuild | undefined {
  const file = paths.pendingOf(storyId);
  if (!existsSync(file)) return undefined;
  try {
    return PendingBuildSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
  } catch {
    return { kind: 'import', from: storyId, startedAt: '' };
  }
}

/** Removes a story's pending-build record (its build is done, or the story never went in). */
export function clearBuildPending(paths: ProjectPaths, storyId: string): void {
  rmSync(paths.pendingOf(storyId), { force: true });
}

/** Reads the project file, or says how to create one. */
export function readProjectFile(paths: ProjectPaths): ProjectFile {
  if (!existsSync(paths.config)) {
    throw new CommandError(
      `no storyloom project in ${paths.root}: run "${SELF} init" there first, or pass --data <folder>`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(paths.config, 'utf8'));
  } catch (cause) {
    throw new CommandError(`${paths.config} is not valid JSON: fix or delete it`, { cause });
  }
  const formatVersion = (raw as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof formatVersion === 'number' && Number.isSafeInteger(formatVersion) && formatVersion > FORMAT_VERSION) {
    throw new CommandError(
      `${paths.config} was written by a newer storyloom (format ${formatVersion}; this version reads ${FORMAT_VERSION}): upgrade storyloom to open the project`,
    );
  }
  const parsed = ProjectFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new CommandError(
      `${paths.config} is not a storyloom project file (${describeIssue(parsed.error.issues[0])})`,
    );
  }
  return parsed.data;
}

/** One problem of a project file in words, naming the key it is about (an unknown key: which one, and where). */
function describeIssue(issue: z.core.$ZodIssue | undefined): string {
  if (!issue) return 'it is invalid';
  const where = issue.path.length > 0 ? issue.path.join('.') : '';
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map((key) => `"${key}"`).join(', ');
    return `unknown key${issue.keys.length > 1 ? 's' : ''} ${keys}${where ? ` in ${where}` : ''}: check the spelling`;
  }
  return where ? `${where}: ${issue.message}` : issue.message;
}

/** Creates the project folder (and its parents); a path that cannot be one is a one-line refusal. */
export function makeProjectFolder(root: string): void {
  try {
    mkdirSync(root, { recursive: true });
  } catch (cause) {
    let code = (cause as { code?: string } | null)?.code;
    // A recursive mkdir reports ENOENT for more than a missing place: a read-only or full file system too.
    if (code === 'ENOENT') code = folderFailureCode(root) ?? code;
    const reason = folderFailureReason(code) ?? (cause as Error).message;
    throw new CommandError(`cannot make the project folder ${root}: ${reason}`, { cause });
  }
}

/**
 * Why `root` cannot be made, after a recursive mkdir said ENOENT: 'ENOENT' when a link in its path points to a
 * place that does not exist, else the code a plain mkdir of the first missing folder under the nearest existing one
 * gives (EROFS, ENOSPC, EDQUOT, EACCES, ...). Undefined when that mkdir works after all (the path changed meanwhile).
 */
function folderFailureCode(root: string): string | undefined {
  let missing = path.resolve(root);
  while (!existsSync(path.dirname(missing)) && path.dirname(missing) !== missing) missing = path.dirname(missing);
  // There, but not followed to anything: a link to nowhere.
  if (lstatSync(missing, { throwIfNoEntry: false })) return 'ENOENT';
  try {
    mkdirSync(missing);
  } catch (error) {
    return (error as { code?: string } | null)?.code;
  }
  rmdirSync(missing);
  return undefined;
}

/** What a failure to make a folder means to a user, by its error code; undefined for a code without words here. */
export function folderFailureReason(code: string | undefined): string | undefined {
  switch (code) {
    case 'EEXIST':
    case 'ENOTDIR':
      return 'a file is in the way: name a folder';
    case 'ENOENT':
      return 'a link in its path points to a place that does not exist';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOSPC':
      return 'no space left on the device';
    case 'EDQUOT':
      return 'the disk quota is used up';
    default:
      return undefined;
  }
}

/** Writes the project file, creating the folder. */
export function writeProjectFile(paths: ProjectPaths, project: ProjectFile): void {
  makeProjectFolder(paths.root);
  writeFileSync(paths.config, `${JSON.stringify(project, null, 2)}\n`);
}

type SqliteModule = typeof import('storyloom/sqlite');

/** Loads `storyloom/sqlite`, turning a missing native package into a one-line instruction. */
export async function loadSqlite(): Promise<SqliteModule> {
  try {
    return await import('storyloom/sqlite');
  } catch (error) {
    throw explainMissing(error, 'better-sqlite3 sqlite-vec', 'the embedded SQLite store');
  }
}

function explainMissing(error: unknown, packages: string, what: string): unknown {
  if (MissingDependencyError.isInstance(error)) {
    return new CommandError(`${what} needs optional packages: run "npm install ${packages}"`, { cause: error });
  }
  const code = (error as { code?: string } | null)?.code;
  if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
    return new CommandError(`${what} needs optional packages: run "npm install ${packages}"`, { cause: error });
  }
  return error;
}

/** Which scene generator `run` uses. */
export type GeneratorChoice = 'procedural' | 'anthropic' | 'bedrock';

/** Options that shape the assembled system. */
export interface AssembleOptions {
  generator?: GeneratorChoice;
  model?: string;
  /**
   * `false`: no picture per scene. Each scene the engine writes or finishes is then logged with its `image` step
   * skipped, so that `status` does not call that picture owed and a later run with pictures does not go back to draw
   * it (its episode went out without one).
   */
  images?: boolean;
  seed?: number;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  onEvent?: (event: EngineEvent) => void;
}

/** An opened project: the store, the context layer, and (on demand) the engine. */
export interface OpenProject {
  paths: ProjectPaths;
  project: ProjectFile;
  store: StoryStateStore;
  context: ContextManager;
  /** The keyword index the context manager searches (for counts). */
  keywords: KeywordIndex;
  /** The engine of one story: its publisher writes that story's own site folder. */
  createEngine(storyId: string, options?: AssembleOptions): Promise<StoryEngine>;
  /**
   * Publishes every scene of a story to its site (after a fork or an import): idempotent per scene. Returns how many
   * scenes it published. A scene whose `image` step the log of `from` records as skipped (a run with `--no-images`, a
   * filtered prompt) goes out without a picture, as it first did, and the story's own log records that skip with
   * the same reason. `from` is the story the scenes came from: the story itself by default (an import brings its
   * log), the original for a fork (whose scenes keep their ids). A scene with no `image` entry gets its picture.
   * Every scene is published: one whose snapshot the store lacks (an import may) is shown with the nearest state after
   * it.
   */
  publishAll(storyId: string, options?: { from?: string }): Promise<number>;
  close(): void;
}

/**
 * The Claude model of `--generator anthropic` without `--model` or `STORYLOOM_MODEL`: a current one, which the
 * Anthropic SDK does not list as deprecated (a test checks it against the installed SDK's list).
 */
export const DEFAULT_ANTHROPIC_MODEL = 'claude-sonnet-4-6';
/**
 * The same model on `--generator bedrock`: through the global cross-region inference profile, as Bedrock serves
 * current Claude models on demand only through a profile.
 */
export const DEFAULT_BEDROCK_MODEL = 'global.anthropic.claude-sonnet-4-6';

/** Opens the project in `directory` (which must exist unless `create` is given the initial project file). */
export async function openProject(directory: string, create?: ProjectFile): Promise<OpenProject> {
  const paths = projectPaths(directory);
  if (create) {
    if (existsSync(paths.config)) {
      throw new CommandError(`${paths.root} already holds a storyloom project: use another --data folder`);
    }
  }
  const project = create ?? readProjectFile(paths);
  const sqlite = await loadSqlite();
  makeProjectFolder(paths.root);
  let database: ReturnType<SqliteModule['openSqliteDatabase']>;
  try {
    database = sqlite.openSqliteDatabase({ path: paths.database });
  } catch (cause) {
    throw new CommandError(`cannot open ${paths.database}: ${(cause as Error).message}`, { cause });
  }
  const store = sqlite.createSqliteStateStore({ database });
  const vectors = sqlite.createSqliteVectorIndex({ database, dimensions: project.dimensions });
  const keywords = sqlite.createSqliteKeywordIndex({ database });
  const embedder = createHashingEmbedder({ dimensions: project.dimensions });
  const cache = new ContextCache({ driver: createMemoryCacheDriver(), store });
  const context = new ContextManager({
    store,
    vectors,
    keywords,
    embedder,
    cache,
    ...(project.autoPrune ? { autoPrune: project.autoPrune } : {}),
  });
  if (create) writeProjectFile(paths, project);
  /** The publisher's options the project file sets for the site of `storyId`: its public URL, language and title. */
  const siteOptions = (storyId: string): { baseUrl?: string; language?: string; siteTitle?: string } => {
    const { baseUrl, language, title } = project.site ?? {};
    const folder = path.basename(paths.siteOf(storyId));
    return {
      ...(baseUrl
        ? { baseUrl: new URL(`${encodeURIComponent(folder)}/`, baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`).href }
        : {}),
      ...(language ? { language } : {}),
      ...(title === undefined ? {} : { siteTitle: title }),
    };
  };
  return {
    paths,
    project,
    store,
    context,
    keywords,
    async publishAll(storyId, options = {}) {
      const from = options.from ?? storyId;
      const publisher = createFilesystemPublisher({ directory: paths.siteOf(storyId), ...siteOptions(storyId) });
      const illustrator = createProceduralIllustrator({ format: 'png' });
      const stateAfter = stateAfterEachScene(store, storyId);
      async function* episodes(): AsyncGenerator<Episode> {
        for await (const scene of eachScene(store, storyId, { limit: 100 })) {
          const story = await stateAfter(scene);
          const skipped = (await store.listPublications(from, scene.id)).find(
            (entry) => entry.target === 'image' && entry.status === 'skipped',
          );
          if (skipped) {
            // Logged here, not only for the last scene: a fork of this story finds it as this fork found it.
            await store.recordPublication({
              storyId,
              sceneId: scene.id,
              target: 'image',
              status: 'skipped',
              result: skipped.result,
            });
            yield { story, scene };
            continue;
          }
          const image = await illustrator.generate(sceneIllustrationRequest(scene, story));
          yield { story, scene, image: { data: image.data, mediaType: image.mediaType, alt: sceneAltText(scene) } };
        }
      }
      // One batch: the pages of the whole site are written once, not once per scene.
      return (await publisher.publishMany(episodes())).length;
    },
    async createEngine(storyId, options = {}) {
      const generator = await chooseGenerator(options);
      const images: ImageGenerator | undefined =
        options.images === false ? undefined : createProceduralIllustrator({ format: 'png' });
      const publisher = createFilesystemPublisher({
        directory: paths.siteOf(storyId),
        clock: options.clock ?? systemClock,
        ...siteOptions(storyId),
      });
      return createStoryEngine({
        store,
        context,
        generator,
        // A run without pictures logs each scene's picture as skipped: a later run with pictures does not draw it.
        ...(images ? { images } : { imageSkipReason: 'run with --no-images' }),
        publishers: [publisher],
        clock: options.clock ?? systemClock,
        ...(options.onEvent ? { onEvent: options.onEvent } : {}),
      });
    },
    close() {
      database.close();
    },
  };
}

/**
 * The state a scene's page and picture are made from, for the scenes of a story taken oldest first: the state the
 * scene left (its snapshot). An import may lack some snapshots (an export written without them is accepted), and
 * then the nearest state after the scene stands in: it holds every character the scene brought on stage, under the
 * names and looks the story gave them next, where an earlier state would lack the newcomers. The current state is the
 * last resort. The state found ahead is kept for the scenes up to it, so each snapshot is read about once, and no
 * more than that state and the current one are held.
 */
function stateAfterEachScene(store: StoryStateStore, storyId: string): (scene: Scene) => Promise<StoryState> {
  let current: StoryState | undefined;
  /** The nearest state found after a scene without a snapshot: no version from that scene's up to it has one. */
  let ahead: StoryState | undefined;
  return async (scene) => {
    if (ahead && scene.stateVersion <= ahead.version) return ahead;
    ahead = undefined;
    const own = await store.getStateAt(storyId, scene.stateVersion);
    if (own) return own;
    // Its pending influences play no part in a page.
    current ??= { ...(await store.load(storyId)), userInfluenceQueue: [] };
    for (let version = scene.stateVersion + 1; version < current.version && !ahead; version++) {
      ahead = (await store.getStateAt(storyId, version)) ?? undefined;
    }
    ahead ??= current;
    return ahead;
  };
}

async function chooseGenerator(options: AssembleOptions): Promise<SceneGenerator> {
  const env = options.env ?? process.env;
  const choice = options.generator ?? 'procedural';
  if (choice === 'procedural') return createProceduralNarrator({ seed: options.seed ?? 1 });
  if (choice === 'anthropic') {
    const apiKey = env.ANTHROPIC_API_KEY;
    if (!apiKey) {
      throw new CommandError(
        '--generator anthropic needs an API key: set ANTHROPIC_API_KEY (or run without --generator)',
      );
    }
    let module: typeof import('storyloom/anthropic');
    try {
      module = await import('storyloom/anthropic');
    } catch (error) {
      throw explainMissing(error, '@anthropic-ai/sdk', 'the Anthropic generator');
    }
    return module.createAnthropicSceneGenerator({
      apiKey,
      model: options.model ?? env.STORYLOOM_MODEL ?? DEFAULT_ANTHROPIC_MODEL,
      ...(env.ANTHROPIC_BASE_URL ? { baseURL: env.ANTHROPIC_BASE_URL } : {}),
    });
  }
  if (choice === 'bedrock') {
    const region = env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
    if (!region) throw new CommandError('--generator bedrock needs a region: set AWS_REGION');
    // Credentials are the AWS SDK's to find (its default chain: variables, profiles, SSO, container and instance
    // roles, a Bedrock API key): any check here would refuse some of them.
    let module: typeof import('storyloom/bedrock');
    try {
      module = await import('storyloom/bedrock');
    } catch (error) {
      throw explainMissing(error, '@anthropic-ai/bedrock-sdk @aws-sdk/client-bedrock-runtime', 'the Bedrock generator');
    }
    return module.createBedrockSceneGenerator({
      region,
      model: options.model ?? env.STORYLOOM_MODEL ?? DEFAULT_BEDROCK_MODEL,
    });
  }
  throw new ValidationError(`unknown generator "${String(choice)}"`);
}
