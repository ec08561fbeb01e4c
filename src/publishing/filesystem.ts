/**
 * The filesystem `Publisher`, the embedded default of publishing: it writes a static reader site (an index of
 * episodes, a page per scene with its picture, a character roster, a plot-thread timeline, scene JSON and an Atom
 * feed) that any web server, bucket or `file://` browser can show, with no script and no external resource.
 *
 * How it stays correct:
 *
 * - **Idempotent per scene.** Every path is derived from the scene's index and id; every byte is derived from the
 *   scene, the story state, the options and the catalog (dates come from `scene.createdAt`; the one time taken from
 *   the clock, a feed entry's revision, is taken when a publish changes the scene's title, excerpt or link, and kept
 *   in the catalog from then on), so publishing the same scene twice leaves byte-identical files. A file whose
 *   content is unchanged is not rewritten.
 * - **The same work at every length.** The catalog is split: `episodes.json` names the chapters (one line each)
 *   and the scenes the roster and the timeline link to, `episodes/<chapter id>.json` lists one chapter's episodes,
 *   and `story.json` holds the story state the roster and the timeline show. A publish reads the catalog and the few
 *   chapters it shows (the scene's, its neighbours', the index's and the feed's), and writes the scene's files, its
 *   chapter, the pages of the scene and its neighbours, its chapter page and the site-wide pages; never the whole
 *   story. The site-wide files are known by their hashes in the catalog, so they are never read back. What still
 *   grows is one line per chapter (in the catalog, as on the index), a chapter's own file and page while it stays
 *   open (the index shows its newest `indexEpisodes` only), and the roster and the timeline, which show the
 *   story's whole cast and every thread (with the resolved threads the story archived at its thread cap, which
 *   `story.json` keeps: a story at the cap has it read at each publish). No folder is listed but the site's top
 *   level; the pages of the newest ten chapters are looked up (a `stat` each), and one lost from them is written
 *   again, with the lost scene pages of its chapter (a repair checks every page). `publishMany` writes the site-wide pages once for a whole batch (an imported or forked story).
 *   A batch and a repair, which write a page per scene, render the scene pages `scenePagesPerWrite` at a time as they
 *   write them: the memory they take does not grow with the story either.
 * - **A scene in one place.** A scene published again into another chapter leaves the chapter that listed it (a
 *   chapter left empty goes, with its file and its page); one published again at another index of its chapter, or
 *   of a chapter whose span holds it, leaves its old files, and its old neighbours link to it no more. (The store
 *   fixes a scene's index and chapter when it is committed: only an edited import or a direct publish moves one.)
 * - **Self-healing catalog.** The catalog is derived data. A publish first leaves a marker file
 *   (`.publishing.<writer>.<random>`) and removes it once everything is written; it lists a scene in its chapter's
 *   file only once the scene's page and its neighbours' pages are written. A marker left behind (a crash), a catalog
 *   that is missing, damaged or disagrees with a chapter file, or a publish that overlapped another process's (it
 *   leaves a `.needs-repair.<random>` file) turns the next publish into a repair: it reads every chapter file, folds
 *   back (with their pages) the scene JSON files no chapter lists, keeps a scene two chapter files list (or that the
 *   dead publish was moving) where its JSON puts it, renders every page again (writing those that differ: a publish
 *   that overlapped another may have written a scene page from a stale view), and removes pages and files no chapter
 *   has, so re-publishing after a crash or an overlap fixes everything. A repair that
 *   has lost `story.json` and holds only an older state than the site showed leaves the roster, the timeline and
 *   `story.json` as they are until a state as new comes.
 * - **Crash-safe writes.** Each file is written to a temporary file beside it and renamed into place, so a reader or a
 *   crash never sees half a file. A temporary file and a marker name their writer (its pid, a hash of its host name and
 *   a random token of its thread); those left by a dead writer are removed on the next publish (the whole site's
 *   during the repair its marker asks for), those of another live thread or another host only once
 *   `staleTempFileMs` old.
 * - **Serialized per directory.** Publishes into one directory run one at a time within a thread (a lock keyed by
 *   the directory's real path, so a symlink to it is the same directory, and shared by every copy of storyloom
 *   loaded in the thread). Publishes from two processes or two worker threads may overlap: the markers show it, and
 *   the next publish repairs what one may have overwritten of the other.
 * - **No injection.** Model and audience text only ever reaches a page through `escapeMarkup` (HTML and XML text and
 *   attributes), URLs are built only from validated ids, no script is emitted, and every page carries a
 *   Content-Security-Policy that forbids scripts anyway. SVG pictures with scripts or external references are refused.
 *
 * Navigation: each scene page holds static previous/next links and its chapter's number. When a scene is published,
 * the pages of its neighbours are regenerated too, so the previous scene's "next" link appears as soon as the next
 * scene exists; a chapter that arrives late has the pages of the chapters it renumbers regenerated. Static
 * links work without JavaScript, in feed readers and from `file://`, where fetching `episodes.json` would be blocked.
 *
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { type Clock, systemClock } from '../core/clock.js';
import {
  ConflictError,
  StorageError,
  type StorageFailure,
  StoryloomError,
  throwIfAborted,
  ValidationError,
  type ValidationProblem,
} from '../core/errors.js';
import { caseDistinctFileId, colonFreeFileId } from '../core/file-names.js';
import { isProcessAlive } from '../core/process.js';
import { clipText } from '../core/text.js';
import {
  CharacterStateSchema,
  IdSchema,
  LIMITS,
  PlotThreadSchema,
  type Scene,
  SceneSchema,
  type StoryState,
} from '../state/schema.js';
import {
  EPISODE_IMAGE_TYPES,
  type Episode,
  type EpisodeImageExtension,
  type Publisher,
  type PublisherCapabilities,
  type PublishResult,
  sceneAltText,
  type ValidEpisode,
  validateEpisode,
} from './publisher.js';

/**
 * A language tag as the pages' `lang` takes it (`en`, `pt-BR`), as `language` is checked against.
 *
 * @internal
 */
export const LANGUAGE_TAG = /^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/;

/**
 * Options of `createFilesystemPublisher`.
 *
 * @example
 * ```ts
 * import { createFilesystemPublisher, type FilesystemPublisherOptions } from 'storyloom';
 * const options: FilesystemPublisherOptions = { directory: 'site', siteTitle: 'The Lighthouse Keepers', feedEntries: 20 };
 * const publisher = createFilesystemPublisher(options);
 * ```
 */
export interface FilesystemPublisherOptions {
  /** The folder the site is written to; created when missing. One folder holds the site of one story. */
  directory: string;
  /**
   * The public URL the folder is served from (`https://example.com/my-story/`). Used for the returned `url` and as
   * the base of the Atom feed. Default: the folder's `file://` URL, and relative links in the feed.
   */
  baseUrl?: string;
  /** The title shown in the header and the feed. Default: the story bible's title. */
  siteTitle?: string;
  /** The target name in the publication log. Default `site`. */
  target?: string;
  /** The `lang` of the pages. Default `en`. */
  language?: string;
  /** How many of the newest scenes the Atom feed lists. Default 50. */
  feedEntries?: number;
  /**
   * How many of the newest chapters `index.html` shows episode by episode; earlier chapters are listed there with a
   * link to their own page (`chapters/<number>.html`), so the index stays small however long the story runs.
   * Default 3.
   */
  indexChapters?: number;
  /**
   * How many of its newest episodes `index.html` shows of each of those chapters; the earlier ones are behind a link
   * to the chapter's page, so the index stays small even while a chapter stays open. Default 20.
   */
  indexEpisodes?: number;
  /**
   * A temporary file or a publish marker older than this is stale even when its writer may still run (a writer in
   * another worker thread or on another host, whose death this process cannot see). Default 10 minutes.
   */
  staleTempFileMs?: number;
  /**
   * How many scene pages a publish renders before it writes them. A repair renders every scene page again, and a
   * batch (an imported story) renders one per scene: they are rendered and written this many at a time, so a story of
   * any length is published in bounded memory. Default 256.
   */
  scenePagesPerWrite?: number;
  /**
   * Compared with file times to find stale temporary files, and the time a scene's feed entry is revised at when it
   * is published again with another title, excerpt or link (its Atom `updated`). Default: the system clock.
   */
  clock?: Clock;
}

/** A character as the roster shows it: what a character knows and looks like is on no page. */
const RosterCharacterSchema = CharacterStateSchema.omit({ knowledge: true, appearance: true });

/** The story-level data kept in `episodes.json`: what the roster and the timeline are built from. */
const StorySnapshotSchema = z.object({
  version: z.number().int().min(0),
  title: z.string(),
  premise: z.string(),
  genre: z.string(),
  tone: z.string(),
  characters: z.record(IdSchema, RosterCharacterSchema),
  plotThreads: z.array(PlotThreadSchema),
});
type StorySnapshot = z.infer<typeof StorySnapshotSchema>;

type ImageExtension = EpisodeImageExtension;
const IMAGE_EXTENSIONS: readonly ImageExtension[] = Object.values(EPISODE_IMAGE_TYPES);

/** The largest width or height a page gives a picture: a size beyond it is no picture's. */
const MAX_PIXELS = 1_000_000;
/** A picture's width or height, as a page's `<img>` takes it. */
const PixelsSchema = z.number().int().min(1).max(MAX_PIXELS);

/**
 * One published scene as the manifest lists it: everything the story pages need without reading the scene.
 *
 * - `image.alt` is the alt text the picture came with (the scene page shows `pictureAlt` of it); `image.width` and
 *   `image.height` are its size in pixels, read from its bytes when it was written (`pictureSize`), so a page rendered
 *   later without them gives its `<img>` a size. Absent when it could not be read, and in earlier versions' listings.
 * - `revisedAt` is when a publish last changed what the feed shows of the scene (its title, its excerpt or its link),
 *   at the publisher's clock: the entry's Atom `updated`. Absent until the scene is published again with such a
 *   change, and in earlier versions' listings; a publish that changes none of them keeps it, so the feed stays the same.
 *
 * (Written here rather than beside each field: the bundle keeps comments inside an expression.)
 */
const ManifestEpisodeSchema = z.object({
  sceneId: IdSchema,
  index: z.number().int().min(0),
  chapterId: IdSchema,
  title: z.string(),
  excerpt: z.string(),
  createdAt: z.string(),
  /** The names of the characters present, as the story knew them when the scene was published. */
  cast: z.array(z.object({ id: IdSchema, name: z.string() })),
  image: z
    .object({
      extension: z.enum(IMAGE_EXTENSIONS as [ImageExtension, ...ImageExtension[]]),
      alt: z.string(),
      width: PixelsSchema.optional(),
      height: PixelsSchema.optional(),
    })
    .nullable(),
  revisedAt: z.iso.datetime().optional(),
});
type ManifestEpisode = z.infer<typeof ManifestEpisodeSchema>;

/** A scene as the catalog names it: enough to link to it. */
const EpisodeLinkSchema = ManifestEpisodeSchema.pick({ sceneId: true, index: true, title: true });
type EpisodeLink = z.infer<typeof EpisodeLinkSchema>;
/** A chapter's first episode: linked to, and dated on the index. */
const EpisodeRefSchema = ManifestEpisodeSchema.pick({ sceneId: true, index: true, title: true, createdAt: true });
type EpisodeRef = z.infer<typeof EpisodeRefSchema>;

/** One chapter as the catalog names it; its episodes are in its own file. */
const ChapterSummarySchema = z.object({
  chapterId: IdSchema,
  count: z.number().int().min(1),
  opening: EpisodeRefSchema,
  closing: EpisodeLinkSchema,
});
type ChapterSummary = z.infer<typeof ChapterSummarySchema>;

/** Where a scene the roster or the timeline names is published (`position` in story order), or null while it is not. */
const SceneLinkSchema = z.object({ index: z.number().int().min(0), position: z.number().int().min(0) }).nullable();
type SceneLink = z.infer<typeof SceneLinkSchema>;

/**
 * The format of a site first published before feed keys: its feed and entry ids name the story by its id alone
 * (`urn:storyloom:story:<story id>`, `urn:storyloom:scene:<story id>:<scene id>`). Such a site keeps this format,
 * and these ids, for good: changing a feed's ids makes a feed reader show every entry again as new.
 */
const SITE_FORMAT_STORY_IDS = 'storyloom-site/2';
/** The format of the sites this version starts: their feed ids carry the site's `feedKey` (`feedKeyOf`). */
const CATALOG_FORMAT = 'storyloom-site/3';
const SiteFormatSchema = z.enum([SITE_FORMAT_STORY_IDS, CATALOG_FORMAT]);
type SiteFormat = z.infer<typeof SiteFormatSchema>;
/**
 * `episodes.json`: the chapters in reading order, and the scenes the roster and the timeline link to. The story
 * state they show is in `story.json`, at `storyVersion`. Its `format` says which feed ids the site gives: a site of
 * the current format records its `feedKey`, one of the earlier format has none.
 */
const CatalogSchema = z
  .object({
    format: SiteFormatSchema,
    feedKey: z
      .string()
      .regex(/^[0-9a-f]{16}$/)
      .optional(),
    storyId: IdSchema,
    storyVersion: z.number().int().min(0),
    episodeCount: z.number().int().min(0),
    /**
     * The SHA-256 of each site-wide file as last written (`index.html`, `story.json`, ...): these change with almost
     * every publish, so they are written without being read back first, and one that has not changed is left alone.
     */
    fileHashes: z.record(z.string(), z.string()),
    chapters: z.array(ChapterSummarySchema),
    links: z.record(IdSchema, SceneLinkSchema),
  })
  .refine((catalog) => (catalog.format === CATALOG_FORMAT) === (catalog.feedKey !== undefined));
type Catalog = z.infer<typeof CatalogSchema>;

/**
 * `story.json`: the newest story state the site has seen, as the roster and the timeline show it. Read only when an
 * older state is published again (it must not roll the roster back): a publish of the newest state has it in hand.
 */
const StoryFileSchema = z.object({
  format: SiteFormatSchema,
  storyId: IdSchema,
  story: StorySnapshotSchema,
});

/** `episodes/<chapter id>.json`: one chapter's episodes in story order. */
const ChapterFileSchema = z.object({
  format: SiteFormatSchema,
  storyId: IdSchema,
  chapterId: IdSchema,
  episodes: z.array(ManifestEpisodeSchema).min(1),
});

/** The single manifest of earlier versions, read once to carry its entries over. */
const LegacyManifestSchema = z.object({
  format: z.literal('storyloom-site/1'),
  storyId: IdSchema,
  story: StorySnapshotSchema.extend({ characters: z.record(IdSchema, CharacterStateSchema) }),
  episodes: z.array(ManifestEpisodeSchema),
});

const MANIFEST_FILE = 'episodes.json';
const STORY_FILE = 'story.json';
const EPISODES = 'episodes';
const SCENES = 'scenes';
const CHAPTERS = 'chapters';
const IMAGES = 'images';
const TEMP_SUFFIX = '.tmp';
/**
 * `.<file name>.<writer>.<random hex>.tmp`: the writer (see `WRITER`) tells whether the file is abandoned. Earlier
 * versions named the writer by its pid alone.
 */
const TEMP_PATTERN = /^\..+\.(\d+(?:-[0-9a-f]{8}-[0-9a-f]{8})?)\.[0-9a-f]+\.tmp$/;
/** `.publishing.<writer>.<random hex>`: a publish in progress, or one that died before it finished. */
const MARKER_PATTERN = /^\.publishing\.(\d+(?:-[0-9a-f]{8}-[0-9a-f]{8})?)\.[0-9a-f]+$/;
/** `.needs-repair.<random hex>`: left by a publish that may have overlapped another process's, or failed half-way. */
const REPAIR_REQUEST_PATTERN = /^\.needs-repair\.[0-9a-f]+$/;
/** How many of the newest chapters' pages a publish checks are still there (a repair checks them all). */
const CHAPTER_PAGES_CHECKED = 10;
/**
 * How many scene pages a publish renders before it writes them, by default: enough for the staging to overlap its
 * writes, few enough that the pages held at once stay a few megabytes however long the story is.
 */
const SCENE_PAGES_PER_WRITE = 256;
const SCENE_FILE_PATTERN = /^(\d+)-(.+)\.(json|html|png|svg|jpg|webp)$/;

/**
 * State shared by every copy of storyloom in this JavaScript realm (the main thread, or one worker thread), so two
 * copies never write one folder at once.
 */
interface SharedState {
  /** Keyed by the real path of the folder, so a folder reached through a symlink is still one folder. */
  locks: Map<string, Promise<void>>;
  /** Temporary files being written and markers of publishes in progress in this realm. */
  inFlightTempFiles: Set<string>;
  /**
   * Random, one per realm: worker threads share the pid but neither the locks nor the set above, so a file of this
   * pid is known abandoned only when it also carries this token. (Absent in the state of an earlier version.)
   */
  token?: string;
}
const SHARED_KEY = Symbol.for('storyloom.filesystemPublisher');
const globalRecord = globalThis as Record<symbol, unknown>;
const shared: SharedState = (globalRecord[SHARED_KEY] as SharedState | undefined) ?? {
  locks: new Map<string, Promise<void>>(),
  inFlightTempFiles: new Set<string>(),
};
shared.token ??= randomBytes(4).toString('hex');
globalRecord[SHARED_KEY] = shared;

/** A short hash of the host name: a pid says whether its process runs only on the host it was taken on. */
const HOST = createHash('sha256').update(os.hostname()).digest('hex').slice(0, 8);
/**
 * `<pid>-<host>-<token>`: who writes a temporary file or a marker, in its name. The file is abandoned when this realm
 * wrote it and no longer writes it, or its process on this host is gone; otherwise only once it is stale.
 */
const WRITER = `${process.pid}-${HOST}-${shared.token}`;

/** Runs `task` once every earlier task for `key` has settled. */
async function withDirectoryLock<T>(key: string, task: () => Promise<T>): Promise<T> {
  const previous = shared.locks.get(key) ?? Promise.resolve();
  let release!: () => void;
  const current = new Promise<void>((resolve) => {
    release = resolve;
  });
  const tail = previous.then(() => current);
  shared.locks.set(key, tail);
  await previous;
  try {
    return await task();
  } finally {
    release();
    if (shared.locks.get(key) === tail) shared.locks.delete(key);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Escaping. Hand-written on purpose: the root entry may import only zod and lru-cache (see docs/architecture.md),
// and XML 1.0 also needs the control characters removed, which the small escaping packages do not do.

/**
 * Characters HTML and XML 1.0 refuse or warn about in text: C0/C1 controls except tab, LF and CR, and the
 * noncharacters (U+FDD0 to U+FDEF, and the last two code points of every plane, U+FFFE/U+FFFF to U+10FFFE/U+10FFFF).
 */
const FORBIDDEN_CHARACTERS =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters HTML and XML 1.0 cannot hold
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\p{Noncharacter_Code_Point}]/gu;
const MARKUP_ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Text made safe for HTML and XML, in element content and in quoted attributes alike. */
function escapeMarkup(text: string): string {
  return text.replace(FORBIDDEN_CHARACTERS, '').replace(/[&<>"']/g, (character) => MARKUP_ESCAPES[character]!);
}
const esc = escapeMarkup;

const FIRST_STRONG_ISOLATE = '\u2068';
const POP_DIRECTIONAL_ISOLATE = '\u2069';
/** Left-to-right, right-to-left and first-strong isolate: each opens an isolate that a POP DIRECTIONAL ISOLATE closes. */
const ISOLATE_INITIATORS = /[\u2066-\u2068]/;

/**
 * Story text for a place that holds no markup (a page's `<title>`), isolated from the text around it as `<bdi>`
 * isolates it in the body: between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE, the plain-text form of `<bdi>`
 * that Unicode's bidi algorithm (UAX #9) and the W3C's advice on bidi text give for text without markup. The closing
 * isolate ends every embedding and override opened after its opening one (UAX #9, X6a), so an RLO in a scene's title
 * cannot reverse the site's title after it, and the direction of the value is its own (the first strong letter), as
 * `dir="auto"` gives in the body. A PDI of the value that would close the isolate early is dropped, and each isolate
 * the value leaves open is closed before the final PDI. Stripping the controls instead would lose what a title means
 * by them; a closing PDF alone would not keep an RTL title's neutrals from joining the text after it.
 */
function isolatedText(text: string): string {
  let open = 0;
  let balanced = '';
  for (const character of text) {
    if (ISOLATE_INITIATORS.test(character)) open++;
    else if (character === POP_DIRECTIONAL_ISOLATE) {
      if (open === 0) continue;
      open--;
    }
    balanced += character;
  }
  return `${FIRST_STRONG_ISOLATE}${balanced}${POP_DIRECTIONAL_ISOLATE.repeat(open + 1)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Paths. Ids match IdSchema (letters, digits and `._:-`); `:` is not allowed in Windows file names, so it becomes `~`
// (`colonFreeFileId`), and a chapter's file is named so that ids differing by case stay apart (`caseDistinctFileId`).

const fileIdOf = colonFreeFileId;

function slugOf(index: number, sceneId: string): string {
  return `${String(index).padStart(6, '0')}-${fileIdOf(sceneId)}`;
}

const slugOfEpisode = (episode: { index: number; sceneId: string }) => slugOf(episode.index, episode.sceneId);

/**
 * The file name (without `.json`) of a chapter's file, as `caseDistinctFileId` writes it: an id of lowercase letters,
 * digits and `._:-` that is no device name and does not end in a dot keeps the name earlier versions gave it (the
 * engine's `chapter-0001`).
 */
const chapterFileIdOf = caseDistinctFileId;

// ---------------------------------------------------------------------------------------------------------------
// Files.

/** True for a Node.js system error (`ENOENT`, `EACCES`, ...), which becomes a `StorageError`. */
function isSystemError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code);
}

function storageError(error: unknown, file: string): StoryloomError {
  if (StoryloomError.isInstance(error)) return error;
  const code = (error as { code?: string } | null)?.code;
  const reason: StorageFailure =
    code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
      ? 'readOnly'
      : code === 'ENOTDIR' || code === 'EISDIR' || code === 'ENOENT'
        ? 'cannotOpen'
        : 'io';
  return new StorageError(`Cannot write the site file ${path.basename(file)}: ${(error as Error)?.message}`, {
    reason,
    path: file,
    cause: error,
    isRetryable: reason === 'io',
  });
}

/**
 * A failed rename of a staged file. Its temporary file gone (`ENOENT`) means another writer took it for abandoned
 * (one on another host, past `staleTempFileMs`) or removed the folder: a retry writes it again.
 */
function renameError(error: unknown, file: string): StoryloomError {
  if ((error as { code?: unknown } | null)?.code !== 'ENOENT') return storageError(error, file);
  return new StorageError(`Cannot write the site file ${path.basename(file)}: its temporary file was removed`, {
    reason: 'io',
    path: file,
    cause: error,
    isRetryable: true,
  });
}

/** A file to write: its content, and whether the caller knows it differs from what is on disk. */
interface FileWrite {
  file: string;
  data: string | Uint8Array;
  knownToDiffer?: boolean;
}

/**
 * Writes a file's content to a temporary file beside it and syncs it to disk, unless the file already holds exactly
 * that content. Returns the temporary file to rename into place, or undefined when there is nothing to write.
 */
async function stageFile({ file, data, knownToDiffer = false }: FileWrite): Promise<string | undefined> {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
  // A file of another size cannot hold the same bytes: only one of the same size is read back to compare.
  const size = knownToDiffer
    ? undefined
    : await stat(file).then(
        (info) => info.size,
        () => undefined,
      );
  if (size === bytes.byteLength) {
    const existing = await readFile(file).catch(() => undefined);
    if (existing?.equals(bytes)) return undefined;
  }
  const temp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${WRITER}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`,
  );
  shared.inFlightTempFiles.add(temp);
  try {
    const handle = await open(temp, 'wx');
    try {
      await handle.writeFile(bytes);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    return temp;
  } catch (error) {
    await rm(temp, { force: true }).catch(() => undefined);
    shared.inFlightTempFiles.delete(temp);
    throw storageError(error, file);
  }
}

/** How many files are staged at once: their writes and syncs overlap, which is most of a publish's time. */
const STAGING_CONCURRENCY = 16;

/**
 * Writes files through temporary files and renames, so each file is always either old or new, never half-written,
 * and leaves a file that already holds exactly its content alone. The contents are written and synced together;
 * the renames then happen one by one in the given order, so a crash leaves a prefix of the files in place (and of
 * the files of successive calls, each of which returns only once its renames are done). Returns how many files were
 * written.
 */
async function writeFilesAtomic(files: readonly FileWrite[]): Promise<number> {
  const temps: Array<string | undefined> = new Array(files.length).fill(undefined);
  let failure: { error: unknown } | undefined;
  let next = 0;
  const stager = async () => {
    while (next < files.length && !failure) {
      const position = next++;
      try {
        temps[position] = await stageFile(files[position]!);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(STAGING_CONCURRENCY, files.length) }, stager));
  let written = 0;
  try {
    if (failure) throw failure.error;
    for (const [position, temp] of temps.entries()) {
      if (temp === undefined) continue;
      const { file } = files[position]!;
      try {
        await rename(temp, file);
      } catch (error) {
        throw renameError(error, file);
      }
      shared.inFlightTempFiles.delete(temp);
      temps[position] = undefined;
      written++;
    }
    return written;
  } finally {
    // The staged files not renamed (a failure) are removed; those of a process that dies here, by the next publish.
    for (const temp of temps) {
      if (temp === undefined) continue;
      await rm(temp, { force: true }).catch(() => undefined);
      shared.inFlightTempFiles.delete(temp);
    }
  }
}

/**
 * Writes `data` to `file` through a temporary file and a rename, so the file is always either old or new, never
 * half-written. Leaves a file that already holds exactly `data` alone. Returns whether it wrote.
 */
async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<boolean> {
  return (await writeFilesAtomic([{ file, data }])) > 0;
}

/**
 * Whether the temporary file or publish marker `name` in `folder`, written by `writer` (`<pid>-<host>-<token>`, or a
 * bare pid from an earlier version), is abandoned: this realm wrote it and is not writing it now, or its process on
 * this host is gone, or it is older than `staleMs` (a writer in another worker thread or on another host that died,
 * or one that hangs).
 */
async function isAbandoned(
  folder: string,
  name: string,
  writer: string,
  clock: Clock,
  staleMs: number,
): Promise<boolean> {
  const file = path.join(folder, name);
  if (shared.inFlightTempFiles.has(file)) return false;
  if (writer === WRITER) return true;
  const [pid, host] = writer.split('-');
  const sameHost = host === undefined || host === HOST;
  // A bare pid (an earlier version's name) equal to this process's is abandoned, as that version judged it.
  if (sameHost && (writer === String(process.pid) || (Number(pid) !== process.pid && !isProcessAlive(Number(pid))))) {
    return true;
  }
  const info = await stat(file).catch(() => undefined);
  return info !== undefined && clock.now() - info.mtimeMs > staleMs;
}

/** Removes, among the entries `names` of `folder`, the temporary files of writers that died before renaming them. */
async function removeStaleTempFiles(
  folder: string,
  names: readonly string[],
  clock: Clock,
  staleMs: number,
): Promise<void> {
  for (const name of names) {
    const match = TEMP_PATTERN.exec(name);
    if (match && (await isAbandoned(folder, name, match[1]!, clock, staleMs))) {
      await rm(path.join(folder, name), { force: true }).catch(() => undefined);
    }
  }
}

/** The entries of `folder` (none when it is missing), its abandoned temporary files removed. */
async function listFolder(folder: string, clock: Clock, staleMs: number): Promise<string[]> {
  const names = await readdir(folder).catch(() => [] as string[]);
  await removeStaleTempFiles(folder, names, clock, staleMs);
  return names.filter((name) => !TEMP_PATTERN.test(name));
}

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, 'utf8'));
  } catch {
    return undefined;
  }
}

const JSON_UNSAFE: Readonly<Record<string, string>> = {
  '<': '\\u003c',
  '>': '\\u003e',
  '&': '\\u0026',
  '\u2028': '\\u2028',
  '\u2029': '\\u2029',
};

/**
 * `JSON.stringify`, with `<`, `>`, `&` and the JavaScript line separators written as escapes: the same data to
 * `JSON.parse`, but safe to embed in HTML and never mistaken for markup by a browser sniffing a mislabelled file.
 */
function toJson(value: unknown, layout: 'indented' | 'compact' = 'indented'): string {
  const json = layout === 'compact' ? JSON.stringify(value) : JSON.stringify(value, null, 2);
  return `${json.replace(/[<>&\u2028\u2029]/g, (character) => JSON_UNSAFE[character]!)}\n`;
}

// ---------------------------------------------------------------------------------------------------------------
// Formatting.

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** `2026-01-01T00:00:00.000Z`: a normalized RFC 3339 time, independent of how the scene spelled it. */
function isoTime(value: string): string {
  return new Date(value).toISOString();
}

/** `1 Jan 2026`, in UTC, the same on every machine and locale. */
function displayDate(value: string): string {
  const date = new Date(value);
  return `${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()}`;
}

/**
 * `text` with its whitespace collapsed, cut to at most `limit` UTF-16 code units and an ellipsis: at the last word
 * that fits when one ends in the last 40 % of that room, else between two grapheme clusters as `clipText` cuts (an
 * accent, a conjunct or an emoji sequence is never split).
 */
function excerptOf(text: string, limit: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat.length <= limit) return flat;
  const cut = clipText(flat, limit);
  const lastSpace = cut.lastIndexOf(' ');
  return `${(lastSpace > limit * 0.6 ? cut.slice(0, lastSpace) : cut).trimEnd()}…`;
}

/** A fraction as a CSS class step of 2 % (`w-36`), so bars need no inline style under the page's CSP. */
function percentStep(fraction: number): number {
  const clamped = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  return Math.round(clamped * 50) * 2;
}

function twoDecimals(value: number): string {
  return value.toFixed(2);
}

// ---------------------------------------------------------------------------------------------------------------
// Site model: what the pages need of the whole site, read from the catalog and a few chapter files.

/** Story order: by index, then by id. */
function compareEpisodes(a: { index: number; sceneId: string }, b: { index: number; sceneId: string }): number {
  return a.index - b.index || (a.sceneId < b.sceneId ? -1 : a.sceneId > b.sceneId ? 1 : 0);
}

function summaryOf(chapterId: string, episodes: readonly ManifestEpisode[]): ChapterSummary {
  const [first, last] = [episodes[0]!, episodes.at(-1)!];
  return {
    chapterId,
    count: episodes.length,
    opening: { sceneId: first.sceneId, index: first.index, title: first.title, createdAt: first.createdAt },
    closing: { sceneId: last.sceneId, index: last.index, title: last.title },
  };
}

/**
 * `next`, with the resolved threads `previous` shows and `next` no longer has in front of its own: the reducer
 * archives resolved threads at the thread cap, and the timeline stays the record of every thread the story had. A
 * thread whose id a later thread took shows as the later one.
 */
function withArchivedThreads(previous: StorySnapshot | undefined, next: StorySnapshot): StorySnapshot {
  if (!previous) return next;
  const live = new Set(next.plotThreads.map((thread) => thread.id));
  const archived = previous.plotThreads.filter((thread) => thread.status === 'resolved' && !live.has(thread.id));
  return archived.length === 0 ? next : { ...next, plotThreads: [...archived, ...next.plotThreads] };
}

/** The scenes the roster and the timeline link to. */
function linkedScenes(story: StorySnapshot): string[] {
  const ids = new Set<string>();
  for (const character of Object.values(story.characters)) {
    for (const id of [character.introducedIn, character.lastAppearance]) if (id !== null) ids.add(id);
  }
  for (const thread of story.plotThreads) {
    for (const id of [thread.openedIn, thread.lastAdvancedIn, thread.resolvedIn]) if (id !== null) ids.add(id);
  }
  return [...ids].sort();
}

/** Where the scenes `sceneIds` are published on a site whose every chapter is known. */
function linksOf(sceneIds: readonly string[], chapters: ReadonlyMap<string, ManifestEpisode[]>): Catalog['links'] {
  const all = [...chapters.values()].flat().sort(compareEpisodes);
  const positions = new Map(all.map((episode, position) => [episode.sceneId, { index: episode.index, position }]));
  return Object.fromEntries(sceneIds.map((id) => [id, positions.get(id) ?? null]));
}

/** Which feed ids a site gives: its format, and the key its feed ids carry when the format has one. */
type FeedIds = Pick<Catalog, 'format' | 'feedKey'>;

/**
 * The key a new site's feed ids carry (`urn:storyloom:site:<key>`): 16 hex digits of the SHA-256 of the story's id and
 * the time its state says it was created (`StoryState.createdAt`). Feed ids must be unique across sites, and the
 * story id alone is not: every project started from one template has the same one, and an aggregator that merges
 * feeds would take their entries for one another. The creation time tells such stories apart, and a fork gets a key
 * of its own from its new id. It is taken from the story rather than drawn at random because the key must survive
 * what rebuilds a site: every later state of the story carries the same creation time (the store keeps it through
 * every commit, and an export and its import carry it over), so a site repaired after its catalog was lost, or
 * built again from the store (the command's import and fork, a deleted folder published again), gives its entries
 * the ids they had. The site records the key in its catalog when it is first written and keeps it from then on.
 */
function feedKeyOf(story: Pick<StoryState, 'storyId' | 'createdAt'>): string {
  // The instant, however the state spells it (an offset, or `Z`): another spelling of the same time is the same story.
  const time = Date.parse(story.createdAt);
  const created = Number.isNaN(time) ? story.createdAt : new Date(time).toISOString();
  return createHash('sha256').update(`${story.storyId}\n${created}`).digest('hex').slice(0, 16);
}

/** The catalog of a site whose every chapter is known. */
function catalogOf(
  storyId: string,
  story: StorySnapshot,
  chapters: ReadonlyMap<string, ManifestEpisode[]>,
  ids: FeedIds,
): Catalog {
  return {
    format: ids.format,
    ...(ids.feedKey === undefined ? {} : { feedKey: ids.feedKey }),
    storyId,
    storyVersion: story.version,
    episodeCount: [...chapters.values()].reduce((sum, episodes) => sum + episodes.length, 0),
    fileHashes: {},
    chapters: [...chapters]
      .map(([chapterId, episodes]) => summaryOf(chapterId, episodes))
      .sort((a, b) => compareEpisodes(a.opening, b.opening)),
    links: linksOf(linkedScenes(story), chapters),
  };
}

/** Whether the numbers of a catalog agree with each other; one that does not is repaired. */
function isCoherent(catalog: Catalog): boolean {
  const ids = new Set(catalog.chapters.map((chapter) => chapter.chapterId));
  const total = catalog.chapters.reduce((sum, chapter) => sum + chapter.count, 0);
  const ordered = catalog.chapters.every(
    (chapter, position) =>
      compareEpisodes(chapter.opening, chapter.closing) <= 0 &&
      (position === 0 || compareEpisodes(catalog.chapters[position - 1]!.opening, chapter.opening) < 0),
  );
  const linksFit = Object.values(catalog.links).every((link) => link === null || link.position < total);
  return ids.size === catalog.chapters.length && total === catalog.episodeCount && ordered && linksFit;
}

/** Raised while a publish is planned when a chapter file disagrees with the catalog: the publish becomes a repair. */
class SiteOutOfStep extends Error {
  constructor(what: string) {
    super(`${what} disagrees with the catalog`);
    this.name = 'SiteOutOfStep';
  }
}

/** What the pages need to know about the whole site. */
interface SiteView {
  storyId: string;
  /** The key of the feed's ids; undefined on a site of the earlier format, whose ids name the story by its id alone. */
  feedKey: string | undefined;
  story: StorySnapshot;
  siteTitle: string;
  language: string;
  episodeCount: number;
  chapterCount: number;
  /** The first and the newest episode in story order. */
  first: EpisodeLink | undefined;
  latest: EpisodeLink | undefined;
  /** Where the scenes the roster and the timeline name are published. */
  links: Readonly<Record<string, SceneLink>>;
}

/**
 * The catalog and the chapter files read so far. Everything a page needs of the rest of the story comes from the
 * catalog (chapter counts, first and last episodes, linked scenes), so a publish reads the few chapters it shows.
 * Chapters whose scenes interleave in story order (an unusual story) are read as needed, which stays correct.
 */
class SiteModel {
  /** The chapters whose file must be written. */
  readonly changedChapters = new Set<string>();
  /** Whether `story` is newer than `story.json`. */
  storyChanged = false;
  /**
   * Whether `story` is older than the state the roster and the timeline show (`story.json` was lost, and an older
   * scene is published again): those pages and `story.json` are left as they are until a newer state comes.
   */
  storyBehind = false;
  /**
   * The old places of scenes published again at another index (found by `add`, or by a repair): their files go and
   * the pages of their neighbours there are redone.
   */
  readonly movedFrom: Array<{ sceneId: string; index: number }> = [];
  private readonly episodes = new Map<string, ManifestEpisode[]>();

  constructor(
    readonly catalog: Catalog,
    /** The story as `story.json` holds it, read only when an older state is published. */
    private story: StorySnapshot | (() => Promise<StorySnapshot | undefined>),
    private readonly readChapter: (chapterId: string) => Promise<ManifestEpisode[] | undefined>,
    /** Every chapter, when the whole site was read (a repair). */
    readonly complete?: ReadonlyMap<string, ManifestEpisode[]>,
  ) {
    for (const [chapterId, episodes] of complete ?? []) this.episodes.set(chapterId, episodes);
  }

  /** The 1-based number of a chapter, by its first episode; 0 for a chapter the site does not hold. */
  numberOf(chapterId: string): number {
    return this.catalog.chapters.findIndex((chapter) => chapter.chapterId === chapterId) + 1;
  }

  /** A chapter's episodes in story order, read from its file once. */
  async episodesOf(chapterId: string): Promise<readonly ManifestEpisode[]> {
    const cached = this.episodes.get(chapterId);
    if (cached) return cached;
    const summary = this.catalog.chapters.find((chapter) => chapter.chapterId === chapterId);
    if (!summary) return [];
    const episodes = await this.readChapter(chapterId);
    if (
      !episodes ||
      episodes.length !== summary.count ||
      compareEpisodes(episodes[0]!, summary.opening) !== 0 ||
      compareEpisodes(episodes.at(-1)!, summary.closing) !== 0
    ) {
      throw new SiteOutOfStep(chapterId);
    }
    this.episodes.set(chapterId, episodes);
    return episodes;
  }

  async episodeOf(chapterId: string, sceneId: string): Promise<ManifestEpisode | undefined> {
    return (await this.episodesOf(chapterId)).find((episode) => episode.sceneId === sceneId);
  }

  /** How many episodes come before `key` in story order. */
  async positionOf(key: { index: number; sceneId: string }): Promise<number> {
    let position = 0;
    for (const chapter of this.catalog.chapters) {
      if (compareEpisodes(chapter.closing, key) < 0) position += chapter.count;
      else if (compareEpisodes(chapter.opening, key) < 0) {
        position += (await this.episodesOf(chapter.chapterId)).filter(
          (episode) => compareEpisodes(episode, key) < 0,
        ).length;
      }
    }
    return position;
  }

  /** The episode just before or just after `key` in story order, and its chapter. */
  async neighbour(
    key: { index: number; sceneId: string },
    side: 'previous' | 'next',
  ): Promise<{ chapterId: string; episode: EpisodeLink } | undefined> {
    const sign = side === 'previous' ? 1 : -1;
    let best: { chapterId: string; episode: EpisodeLink } | undefined;
    for (const chapter of this.catalog.chapters) {
      const [near, far] = side === 'previous' ? [chapter.closing, chapter.opening] : [chapter.opening, chapter.closing];
      // A chapter wholly on the other side of `key` holds no candidate.
      if (sign * compareEpisodes(far, key) >= 0) continue;
      const candidate =
        sign * compareEpisodes(near, key) < 0
          ? near
          : (await this.episodesOf(chapter.chapterId))
              .filter((episode) => sign * compareEpisodes(episode, key) < 0)
              .sort((a, b) => sign * compareEpisodes(b, a))[0];
      if (candidate && (!best || sign * compareEpisodes(candidate, best.episode) > 0)) {
        best = { chapterId: chapter.chapterId, episode: candidate };
      }
    }
    return best;
  }

  /** The newest `count` episodes, newest first, read from the newest chapters only. */
  async newest(count: number): Promise<ManifestEpisode[]> {
    const newestFirst = (a: ManifestEpisode, b: ManifestEpisode) => compareEpisodes(b, a);
    let collected: ManifestEpisode[] = [];
    for (const chapter of [...this.catalog.chapters].sort((a, b) => compareEpisodes(b.closing, a.closing))) {
      if (collected.length >= count) {
        collected = collected.sort(newestFirst).slice(0, count);
        if (compareEpisodes(chapter.closing, collected.at(-1)!) < 0) break;
      }
      collected.push(...(await this.episodesOf(chapter.chapterId)));
    }
    return collected.sort(newestFirst).slice(0, count);
  }

  /**
   * Takes the story's characters and threads from `story` unless the site already shows a newer state (a retried
   * publish of an earlier scene never rolls the roster back), and finds where the scenes they name are published.
   * `locate` gives the index of scenes this site published that the previous state did not name (rare: a state
   * names the scene it comes with, or scenes the previous one did); `currentSceneId` is left to `add`.
   */
  async updateStory(
    story: StorySnapshot,
    currentSceneId: string,
    locate: (sceneIds: string[]) => Promise<Map<string, number>>,
  ): Promise<void> {
    if (story.version < this.catalog.storyVersion) {
      if (typeof this.story === 'function') this.story = (await this.story()) ?? this.story;
      if (typeof this.story === 'function') throw new SiteOutOfStep(STORY_FILE);
      return;
    }
    if (story.plotThreads.length >= LIMITS.plotThreads) {
      // At the thread cap the reducer archives resolved threads: the timeline keeps them.
      story = withArchivedThreads(typeof this.story === 'function' ? await this.story() : this.story, story);
    }
    const previous = this.catalog.links;
    const links: Record<string, SceneLink> = {};
    const missing: string[] = [];
    for (const id of linkedScenes(story)) {
      if (Object.hasOwn(previous, id)) links[id] = previous[id]!;
      else if (id === currentSceneId || this.catalog.episodeCount === 0) links[id] = null;
      else missing.push(id);
    }
    if (missing.length > 0) {
      const found = this.complete ? this.locateRead(missing) : await locate(missing);
      for (const id of missing) {
        const index = found.get(id);
        links[id] = index === undefined ? null : { index, position: await this.positionOf({ index, sceneId: id }) };
      }
    }
    this.story = story;
    this.storyChanged = true;
    this.storyBehind = false;
    this.catalog.storyVersion = story.version;
    this.catalog.links = links;
  }

  private locateRead(sceneIds: readonly string[]): Map<string, number> {
    const wanted = new Set(sceneIds);
    const found = new Map<string, number>();
    for (const episodes of this.episodes.values()) {
      for (const episode of episodes) if (wanted.has(episode.sceneId)) found.set(episode.sceneId, episode.index);
    }
    return found;
  }

  /**
   * Where the site lists a scene published again as `key`: looked for in `key`'s chapter, then in the chapters whose
   * span holds `key`'s place in story order (a scene moved to another chapter at the same index), so no more than the
   * chapters the publish shows are read; in every chapter when the whole site is in hand (a repair). A scene moved to
   * another index and another chapter at once is found only by a repair (the store never moves a scene: its index
   * and chapter are fixed when it is committed).
   */
  async placeOf(key: {
    sceneId: string;
    index: number;
    chapterId: string;
  }): Promise<{ chapterId: string; episode: ManifestEpisode } | undefined> {
    const own = await this.episodeOf(key.chapterId, key.sceneId);
    if (own) return { chapterId: key.chapterId, episode: own };
    for (const chapter of this.catalog.chapters) {
      if (chapter.chapterId === key.chapterId) continue;
      const spans = compareEpisodes(chapter.opening, key) <= 0 && compareEpisodes(key, chapter.closing) <= 0;
      if (!spans && !this.complete) continue;
      const episode = await this.episodeOf(chapter.chapterId, key.sceneId);
      if (episode) return { chapterId: chapter.chapterId, episode };
    }
    return undefined;
  }

  /** Takes a scene out of a chapter; a chapter left empty goes from the catalog. */
  private async remove(chapterId: string, sceneId: string): Promise<void> {
    const episodes = (await this.episodesOf(chapterId)).filter((episode) => episode.sceneId !== sceneId);
    this.changedChapters.add(chapterId);
    if (episodes.length > 0) this.episodes.set(chapterId, episodes);
    else this.episodes.delete(chapterId);
    this.catalog.chapters = [
      ...this.catalog.chapters.filter((chapter) => chapter.chapterId !== chapterId),
      ...(episodes.length > 0 ? [summaryOf(chapterId, episodes)] : []),
    ].sort((a, b) => compareEpisodes(a.opening, b.opening));
  }

  /**
   * Adds or replaces the episode of a scene. A scene the site lists in another chapter leaves it; one listed at
   * another index is kept in `movedFrom`, whose files and neighbours' pages the publish redoes. Returns whether the
   * site did not hold the scene before.
   */
  async add(entry: ManifestEpisode): Promise<boolean> {
    const { chapterId } = entry;
    const previous = await this.placeOf(entry);
    if (previous && previous.chapterId !== chapterId) await this.remove(previous.chapterId, entry.sceneId);
    const episodes = (await this.episodesOf(chapterId)).filter((episode) => episode.sceneId !== entry.sceneId);
    episodes.push(entry);
    episodes.sort(compareEpisodes);
    this.episodes.set(chapterId, episodes);
    this.changedChapters.add(chapterId);
    const { catalog } = this;
    catalog.chapters = [
      ...catalog.chapters.filter((chapter) => chapter.chapterId !== chapterId),
      summaryOf(chapterId, episodes),
    ].sort((a, b) => compareEpisodes(a.opening, b.opening));
    if (!previous) {
      catalog.episodeCount += 1;
      // Every linked scene after the new one moves one place on.
      for (const [id, link] of Object.entries(catalog.links)) {
        if (link && compareEpisodes({ index: link.index, sceneId: id }, entry) > 0) link.position += 1;
      }
    } else if (previous.episode.index !== entry.index) {
      this.movedFrom.push(previous.episode);
      // The scenes between its old and its new place move one place: every linked scene is placed again.
      for (const [id, link] of Object.entries(catalog.links)) {
        if (link) link.position = await this.positionOf({ index: link.index, sceneId: id });
      }
    }
    if (Object.hasOwn(catalog.links, entry.sceneId)) {
      catalog.links[entry.sceneId] = { index: entry.index, position: await this.positionOf(entry) };
    }
    return !previous;
  }

  /** The story the pages show: after `updateStory`, the newest the site has seen. */
  storySnapshot(): StorySnapshot {
    if (typeof this.story === 'function') throw new SiteOutOfStep(STORY_FILE);
    return this.story;
  }

  view(siteTitle: string | undefined, language: string): SiteView {
    const { catalog } = this;
    const story = this.storySnapshot();
    const latest = catalog.chapters
      .map((chapter) => chapter.closing)
      .reduce<EpisodeLink | undefined>((max, ref) => (!max || compareEpisodes(ref, max) > 0 ? ref : max), undefined);
    return {
      storyId: catalog.storyId,
      feedKey: catalog.feedKey,
      story,
      siteTitle: siteTitle ?? story.title,
      language,
      episodeCount: catalog.episodeCount,
      chapterCount: catalog.chapters.length,
      first: catalog.chapters[0]?.opening,
      latest,
      links: catalog.links,
    };
  }
}

function episodeLabel(episode: { index: number }): string {
  return `Episode ${episode.index + 1}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Pages.

const CONTENT_SECURITY_POLICY =
  "default-src 'none'; img-src 'self' data:; style-src 'self'; base-uri 'none'; form-action 'none'";

type Section = 'episodes' | 'characters' | 'threads' | 'scene' | 'chapter';

function layout(
  site: SiteView,
  options: { title: string; description: string; root: '' | '../'; section: Section; body: string; head?: string },
): string {
  const { root } = options;
  const current = (section: Section) =>
    options.section === section || (section === 'episodes' && options.section === 'chapter')
      ? ' aria-current="page"'
      : '';
  // A scene or chapter page holds nothing about the whole site (a count, say): it is only rewritten when its own
  // episodes or neighbours change, not on every publish.
  const footer =
    options.section === 'scene' || options.section === 'chapter'
      ? `<bdi>${esc(site.siteTitle)}</bdi>`
      : episodeCount(site.episodeCount);
  return `<!doctype html>
<html lang="${esc(site.language)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${CONTENT_SECURITY_POLICY}">
<meta name="color-scheme" content="light dark">
<meta name="generator" content="storyloom">
<title>${esc(options.title)}</title>
<meta name="description" content="${esc(options.description)}">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${root}style.css">
<link rel="alternate" type="application/atom+xml" title="${esc(site.siteTitle)}" href="${root}feed.atom">
${options.head ?? ''}</head>
<body>
<a class="skip-link" href="#content">Skip to the story</a>
<header class="site-header">
<div class="wrap header-row">
<a class="brand" href="${root}index.html" dir="auto">${esc(site.siteTitle)}</a>
<nav class="site-nav" aria-label="Site">
<a href="${root}index.html"${current('episodes')}>Episodes</a>
<a href="${root}characters.html"${current('characters')}>Characters</a>
<a href="${root}threads.html"${current('threads')}>Threads</a>
<a href="${root}feed.atom">Feed</a>
</nav>
</div>
</header>
<main id="content" class="wrap">
${options.body}
</main>
<footer class="site-footer">
<div class="wrap">${footer} · written and published with storyloom</div>
</footer>
</body>
</html>
`;
}

function imagePath(episode: ManifestEpisode, root: '' | '../'): string | undefined {
  return episode.image ? `${root}${IMAGES}/${slugOfEpisode(episode)}.${episode.image.extension}` : undefined;
}

function sceneHref(episode: { index: number; sceneId: string }, root: '' | '../'): string {
  return `${root}${SCENES}/${slugOfEpisode(episode)}.html`;
}

function chapterHref(chapter: number, root: '' | '../'): string {
  return `${root}${CHAPTERS}/${chapter}.html`;
}

function episodeCount(count: number): string {
  return `${count} ${count === 1 ? 'episode' : 'episodes'}`;
}

/** An episode as a card of the index and the chapter pages. */
function episodeCard(episode: ManifestEpisode, root: '' | '../'): string {
  const thumb = imagePath(episode, root);
  const visual = thumb
    ? `<img src="${esc(thumb)}" alt="" loading="lazy">`
    : `<span class="thumb-placeholder">${episode.index + 1}</span>`;
  return `<li class="card">
<a class="thumb" href="${sceneHref(episode, root)}" tabindex="-1" aria-hidden="true">${visual}</a>
<div class="card-body">
<p class="eyebrow">${episodeLabel(episode)} · <time datetime="${esc(isoTime(episode.createdAt))}">${displayDate(episode.createdAt)}</time></p>
<h3><a href="${sceneHref(episode, root)}" dir="auto">${esc(episode.title)}</a></h3>
<p class="excerpt" dir="auto">${esc(episode.excerpt)}</p>
</div>
</li>`;
}

/** `chapters/<number>.html`: one chapter's episodes in reading order, with the chapters before and after it. */
function renderChapterPage(site: SiteView, chapter: { number: number; episodes: readonly ManifestEpisode[] }): string {
  const total = site.chapterCount;
  const { number, episodes } = chapter;
  const link = (target: number, rel: 'prev' | 'next') => {
    const label = rel === 'prev' ? '← Previous chapter' : 'Next chapter →';
    if (target < 1 || target > total) {
      return `<span class="episode-link ${rel} disabled" aria-hidden="true">${label}</span>`;
    }
    return `<a class="episode-link ${rel}" rel="${rel}" href="${target}.html"><span class="hint">${label}</span><span class="link-title">Chapter ${target}</span></a>`;
  };
  const first = episodes[0];
  const body = `<section class="chapter-page" aria-labelledby="chapter-title">
<p class="eyebrow">Chapter ${number} · ${episodeCount(episodes.length)}${first ? ` · from <time datetime="${esc(isoTime(first.createdAt))}">${displayDate(first.createdAt)}</time>` : ''}</p>
<h1 id="chapter-title">Chapter ${number}</h1>
<ol class="cards">
${episodes.map((episode) => episodeCard(episode, '../')).join('\n')}
</ol>
</section>
<nav class="episode-nav" aria-label="Chapters">
${link(number - 1, 'prev')}
<a class="episode-link all" href="../index.html">All chapters</a>
${link(number + 1, 'next')}
</nav>`;
  return layout(site, {
    title: `Chapter ${number} · ${isolatedText(site.siteTitle)}`,
    description: first ? `Chapter ${number}: ${first.excerpt}` : `Chapter ${number}`,
    root: '../',
    section: 'chapter',
    body,
  });
}

function chips(label: string, values: readonly string[]): string {
  if (values.length === 0) return '';
  return `<div class="fact"><h3>${label}</h3><ul class="chips">${values
    .map((value) => `<li dir="auto">${esc(value)}</li>`)
    .join('')}</ul></div>`;
}

/** The parts of a sentence that are there, the first one starting with a capital letter. */
function sentence(parts: readonly string[]): string[] {
  const [first, ...rest] = parts.filter(Boolean);
  return first === undefined ? [] : [first.charAt(0).toUpperCase() + first.slice(1), ...rest];
}

function paragraphsOf(text: string): string {
  return text
    .split(/\r?\n\s*\r?\n/)
    .map((paragraph) => paragraph.trim())
    .filter((paragraph) => paragraph.length > 0)
    .map((paragraph) => `<p>${paragraph.split(/\r?\n/).map(esc).join('<br>\n')}</p>`)
    .join('\n');
}

/**
 * The alt text of a scene's picture on its page. What publishers are handed by default (`sceneAltText`, as the engine
 * and the command give it) is the scene's image prompt: words for the image model, which the narrators open with the
 * story's style guide ("ink and watercolour, muted blues. ...") and fill with moods and how each character looks, and
 * which a screen reader would read out on every scene. Neither the picture request nor the generated image holds a
 * caption of its own, so a picture described by that default (or by nothing) is named by its scene instead, as a
 * reader wants it: `Illustration: <title>`. An alt text the caller wrote otherwise is a real description: it is kept.
 */
function pictureAlt(scene: Scene, given: string): string {
  const byDefault =
    given === '' || given === sceneAltText(scene) || given === sceneAltText({ ...scene, imagePrompt: '' });
  return byDefault ? `Illustration: ${feedText(scene.title)}` : given;
}

/** ` width="…" height="…"` for a picture whose size is known, so the text does not move when it loads; else nothing. */
function pictureDimensions(image: ManifestEpisode['image']): string {
  return image?.width && image.height ? ` width="${image.width}" height="${image.height}"` : '';
}

/** `scenes/<slug>.html`, with links to the episodes before and after it in story order. */
function renderScenePage(
  site: SiteView,
  scene: Scene,
  episode: ManifestEpisode,
  neighbours: { chapter: number; previous: EpisodeLink | undefined; next: EpisodeLink | undefined },
): string {
  const { chapter, previous, next } = neighbours;
  const picture = imagePath(episode, '../');
  const cast = episode.cast.length
    ? `<div class="fact"><h3>Characters</h3><ul class="chips">${episode.cast
        .map(
          (member) =>
            `<li><a href="../characters.html#character-${esc(member.id)}" dir="auto">${esc(member.name)}</a></li>`,
        )
        .join('')}</ul></div>`
    : '';
  const mood = scene.mood.trim() ? `<div class="fact"><h3>Mood</h3><p dir="auto">${esc(scene.mood)}</p></div>` : '';
  const navLink = (target: EpisodeLink | undefined, rel: 'prev' | 'next') => {
    const label = rel === 'prev' ? '← Previous' : 'Next →';
    if (!target) return `<span class="episode-link ${rel} disabled" aria-hidden="true">${label}</span>`;
    return `<a class="episode-link ${rel}" rel="${rel}" href="${esc(slugOfEpisode(target))}.html"><span class="hint">${label}</span><span class="link-title" dir="auto">${esc(target.title)}</span></a>`;
  };
  const body = `<article class="scene">
<header class="scene-header">
<p class="eyebrow"><a href="${chapterHref(chapter, '../')}">Chapter ${chapter}</a> · ${episodeLabel(episode)} · <time datetime="${esc(isoTime(scene.createdAt))}">${displayDate(scene.createdAt)}</time></p>
<h1 dir="auto">${esc(scene.title)}</h1>
${scene.summary.trim() ? `<p class="lede" dir="auto">${esc(scene.summary)}</p>` : ''}
</header>
${picture ? `<figure class="scene-picture"><img src="${esc(picture)}" alt="${esc(pictureAlt(scene, episode.image?.alt ?? ''))}"${pictureDimensions(episode.image)}></figure>` : ''}
<div class="prose" dir="auto">
${paragraphsOf(scene.text)}
</div>
<aside class="scene-facts" aria-label="About this scene">
${cast}${chips('Places', scene.locations)}${chips('Themes', scene.themes)}${mood}
</aside>
</article>
<nav class="episode-nav" aria-label="Episodes">
${navLink(previous, 'prev')}
<a class="episode-link all" href="../index.html">All episodes</a>
${navLink(next, 'next')}
</nav>`;
  return layout(site, {
    title: `${isolatedText(scene.title)} · ${isolatedText(site.siteTitle)}`,
    description: episode.excerpt,
    root: '../',
    section: 'scene',
    body,
    head: `<link rel="alternate" type="application/json" href="${esc(slugOfEpisode(episode))}.json">\n`,
  });
}

/**
 * `index.html`: the newest chapters (`shown`, newest first, with their episodes) episode by episode, at most
 * `perChapter` newest episodes each (a link to the chapter's page stands for the rest), and the `earlier` ones
 * (newest first) one line each.
 */
function renderIndex(
  site: SiteView,
  shown: ReadonlyArray<{ number: number; episodes: readonly ManifestEpisode[] }>,
  earlier: ReadonlyArray<{ number: number; count: number; opening: EpisodeRef }>,
  perChapter: number,
): string {
  const { story, first, latest } = site;
  const sections = shown
    .map(({ number, episodes }) => {
      const newestFirst = episodes.slice(-perChapter).reverse();
      const rest = episodes.length - newestFirst.length;
      const more =
        rest === 0
          ? ''
          : `\n<p class="more"><a href="${chapterHref(number, '')}">${rest} earlier ${rest === 1 ? 'episode' : 'episodes'} of Chapter ${number}</a></p>`;
      return `<section class="chapter" id="chapter-${number}" aria-labelledby="chapter-${number}-title">
<h2 id="chapter-${number}-title"><a href="${chapterHref(number, '')}">Chapter ${number}</a> <span class="count">${episodeCount(episodes.length)}</span></h2>
<ol class="cards">
${newestFirst.map((episode) => episodeCard(episode, '')).join('\n')}
</ol>${more}
</section>`;
    })
    .join('\n');
  // Earlier chapters as one line each; each keeps its `#chapter-<n>` anchor, which older scene pages link to.
  const archive =
    earlier.length === 0
      ? ''
      : `<section class="chapter-archive" aria-labelledby="earlier-chapters">
<h2 id="earlier-chapters">Earlier chapters</h2>
<ol class="chapter-list">
${earlier
  .map(({ number, count, opening }) => {
    const from = ` · from <time datetime="${esc(isoTime(opening.createdAt))}">${displayDate(opening.createdAt)}</time> · <span dir="auto">${esc(opening.title)}</span>`;
    return `<li id="chapter-${number}"><a href="${chapterHref(number, '')}">Chapter ${number}</a> <span class="count">${episodeCount(count)}${from}</span></li>`;
  })
  .join('\n')}
</ol>
</section>`;
  const actions =
    first && latest
      ? `<p class="actions"><a class="button primary" href="${sceneHref(latest, '')}">Read the latest episode</a> <a class="button" href="${sceneHref(first, '')}">Start from the beginning</a></p>`
      : '';
  const body = `<section class="hero">
<p class="eyebrow"><bdi>${esc(story.genre)}</bdi> · <bdi>${esc(story.tone)}</bdi></p>
<h1 dir="auto">${esc(site.siteTitle)}</h1>
<p class="lede" dir="auto">${esc(story.premise)}</p>
${actions}
</section>
${sections}${archive ? `\n${archive}` : ''}`;
  return layout(site, {
    title: isolatedText(site.siteTitle),
    description: excerptOf(story.premise, 200),
    root: '',
    section: 'episodes',
    body,
  });
}

function sceneLink(site: SiteView, sceneId: string | null, root: '' | '../'): string | undefined {
  if (sceneId === null) return undefined;
  const link = Object.hasOwn(site.links, sceneId) ? site.links[sceneId] : null;
  if (!link) return `<span class="muted">${esc(sceneId)}</span>`;
  return `<a href="${sceneHref({ index: link.index, sceneId }, root)}">${episodeLabel(link)}</a>`;
}

function bar(fraction: number, label: string): string {
  return `<span class="bar" role="img" aria-label="${esc(label)}"><span class="fill w-${percentStep(fraction)}"></span></span>`;
}

function affinityBar(affinity: number): string {
  const negative = affinity < 0 ? percentStep(-affinity) : 0;
  const positive = affinity > 0 ? percentStep(affinity) : 0;
  return `<span class="affinity" role="img" aria-label="affinity ${twoDecimals(affinity)}"><span class="half neg"><span class="fill w-${negative}"></span></span><span class="half pos"><span class="fill w-${positive}"></span></span></span>`;
}

const ROLE_ORDER = { main: 0, supporting: 1, minor: 2 } as const;

function renderCharacters(site: SiteView): string {
  const { characters } = site.story;
  const list = Object.values(characters).sort(
    (a, b) => ROLE_ORDER[a.role] - ROLE_ORDER[b.role] || a.name.localeCompare(b.name, 'en') || (a.id < b.id ? -1 : 1),
  );
  const nameOf = (id: string) => (Object.hasOwn(characters, id) ? characters[id]!.name : undefined);
  const cards = list
    .map((character) => {
      const traits = Object.entries(character.traits).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const relationships = Object.entries(character.relationships).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const traitList = traits.length
        ? `<h3>Traits</h3><ul class="traits">${traits
            .map(
              ([trait, value]) =>
                `<li><span class="trait-name" dir="auto">${esc(trait)}</span>${bar(value, `${trait} ${twoDecimals(value)}`)}<span class="value">${twoDecimals(value)}</span></li>`,
            )
            .join('')}</ul>`
        : '';
      const relationshipTable = relationships.length
        ? `<h3>Relationships</h3><table class="relationships"><thead><tr><th scope="col">With</th><th scope="col">Bond</th><th scope="col">Affinity</th><th scope="col">Trust</th></tr></thead><tbody>${relationships
            .map(([targetId, relation]) => {
              const targetName = nameOf(targetId);
              const who = targetName
                ? `<a href="#character-${esc(targetId)}" dir="auto">${esc(targetName)}</a>`
                : `<span dir="auto">${esc(targetId)}</span>`;
              const note = relation.note ? `<br><span class="note" dir="auto">${esc(relation.note)}</span>` : '';
              return `<tr><td>${who}${note}</td><td dir="auto">${esc(relation.kind)}</td><td>${affinityBar(relation.affinity)}<span class="value">${twoDecimals(relation.affinity)}</span></td><td>${bar(relation.trust, `trust ${twoDecimals(relation.trust)}`)}<span class="value">${twoDecimals(relation.trust)}</span></td></tr>`;
            })
            .join('')}</tbody></table>`
        : '';
      const aliases = character.aliases.length
        ? `<p class="aliases">Also known as ${character.aliases.map((alias) => `<bdi>${esc(alias)}</bdi>`).join(', ')}</p>`
        : '';
      const seen = sentence([
        character.introducedIn ? `first seen in ${sceneLink(site, character.introducedIn, '')}` : '',
        character.lastAppearance ? `last seen in ${sceneLink(site, character.lastAppearance, '')}` : '',
      ]);
      return `<section class="character status-${character.status}" id="character-${esc(character.id)}">
<header class="character-head"><h2 dir="auto">${esc(character.name)}</h2><span class="badge role">${character.role}</span><span class="badge status status-${character.status}">${character.status}</span></header>
${aliases}
${character.description ? `<div class="description" dir="auto">${paragraphsOf(character.description)}</div>` : ''}
<p class="arc"><span class="trait-name">Arc</span>${bar(character.arcProgress, `arc progress ${twoDecimals(character.arcProgress)}`)}<span class="value">${Math.round(character.arcProgress * 100)}%</span></p>
${traitList}
${relationshipTable}
${seen.length ? `<p class="muted small">${seen.join('; ')}.</p>` : ''}
</section>`;
    })
    .join('\n');
  const body = `<section class="page-intro">
<h1>Characters</h1>
<p class="lede">Who is who in <cite dir="auto">${esc(site.story.title)}</cite>, as of ${site.latest ? episodeLabel(site.latest).toLowerCase() : 'the start'}.</p>
</section>
<div class="roster">
${cards || '<p class="muted">No characters yet.</p>'}
</div>`;
  return layout(site, {
    title: `Characters · ${isolatedText(site.siteTitle)}`,
    description: `The characters of ${site.story.title}.`,
    root: '',
    section: 'characters',
    body,
  });
}

const STATUS_ORDER = { advancing: 0, open: 1, dormant: 2, resolved: 3 } as const;

function renderThreads(site: SiteView): string {
  const count = Math.max(1, site.episodeCount);
  const positionOf = (sceneId: string | null) =>
    sceneId !== null && Object.hasOwn(site.links, sceneId) ? site.links[sceneId]?.position : undefined;
  const threads = [...site.story.plotThreads].sort(
    (a, b) =>
      STATUS_ORDER[a.status] - STATUS_ORDER[b.status] ||
      b.importance - a.importance ||
      a.title.localeCompare(b.title, 'en'),
  );
  const rows = threads
    .map((thread) => {
      const start = positionOf(thread.openedIn) ?? 0;
      const end = Math.max(
        start,
        positionOf(thread.resolvedIn) ??
          // A resolved or dormant thread stops where it was last advanced; a live one runs to the latest episode.
          (thread.status === 'resolved' || thread.status === 'dormant'
            ? positionOf(thread.lastAdvancedIn)
            : undefined) ??
          count - 1,
      );
      const left = percentStep(start / count);
      const width = Math.max(2, Math.min(100 - left, percentStep((end - start + 1) / count)));
      const links = sentence([
        thread.openedIn ? `opened in ${sceneLink(site, thread.openedIn, '')}` : '',
        thread.lastAdvancedIn ? `advanced in ${sceneLink(site, thread.lastAdvancedIn, '')}` : '',
        thread.resolvedIn ? `resolved in ${sceneLink(site, thread.resolvedIn, '')}` : '',
      ]);
      const setups = thread.setups.length
        ? `<details><summary>${thread.setups.length} ${thread.setups.length === 1 ? 'promise' : 'promises'} still to keep</summary><ul>${thread.setups
            .map((setup) => `<li dir="auto">${esc(setup)}</li>`)
            .join('')}</ul></details>`
        : '';
      return `<li class="thread status-${thread.status}" id="thread-${esc(thread.id)}">
<div class="thread-head"><span class="badge status status-${thread.status}">${thread.status}</span><h2 dir="auto">${esc(thread.title)}</h2><span class="importance"><span class="importance-label">importance</span>${bar(thread.importance, `importance ${twoDecimals(thread.importance)}`)}</span></div>
${thread.summary ? `<div class="summary" dir="auto">${paragraphsOf(thread.summary)}</div>` : ''}
<div class="track" role="img" aria-label="from episode ${start + 1} to episode ${end + 1}"><span class="span l-${left} w-${width}"></span></div>
${links.length ? `<p class="muted small">${links.join(' · ')}.</p>` : ''}
${setups}
</li>`;
    })
    .join('\n');
  const { first, latest: last } = site;
  const axis =
    first && last
      ? `<div class="axis" aria-hidden="true"><span>${episodeLabel(first)}</span><span>${episodeLabel(last)}</span></div>`
      : '';
  const body = `<section class="page-intro">
<h1>Plot threads</h1>
<p class="lede">The lines of the story, when they opened, advanced and resolved.</p>
</section>
${axis}
<ol class="timeline">
${rows || '<li class="muted">No plot threads yet.</li>'}
</ol>`;
  return layout(site, {
    title: `Plot threads · ${isolatedText(site.siteTitle)}`,
    description: `The plot threads of ${site.story.title}.`,
    root: '',
    section: 'threads',
    body,
  });
}

/**
 * A feed's text value: as it is, or, when it holds a bidi embedding, override or isolate, isolated (`isolatedText`), so
 * that one left open cannot run into what a feed reader shows after it. Plain text stays plain: a reader that shows
 * the isolates' invisible marks as boxes sees none in an ordinary title.
 */
function feedText(text: string): string {
  return /[\u202a-\u202e\u2066-\u2069]/.test(text) ? isolatedText(text) : text;
}

/**
 * An entry's Atom `updated`: the last time a publish changed what the feed shows of it (`revisedAt`), else its
 * scene's time; never before its `published`.
 */
function entryUpdated(episode: ManifestEpisode): string {
  // RFC 3339 times in UTC with four-digit years: in order as text.
  return [episode.createdAt, episode.revisedAt ?? episode.createdAt].map(isoTime).sort()[1]!;
}

/** `feed.atom`, of the `newest` episodes (newest first). */
function renderFeed(site: SiteView, newest: readonly ManifestEpisode[], baseUrl: string | undefined): string {
  // The newest change among the entries, from stored times, not the wall clock: regenerating the feed keeps it.
  const updated = newest.map(entryUpdated).sort().at(-1) ?? '1970-01-01T00:00:00.000Z';
  const base = baseUrl ? ` xml:base="${esc(baseUrl)}"` : '';
  // A site of the earlier format keeps the ids it gave (see `SITE_FORMAT_STORY_IDS`); a new one's carry its key.
  const feedId =
    site.feedKey === undefined ? `urn:storyloom:story:${esc(site.storyId)}` : `urn:storyloom:site:${site.feedKey}`;
  const entryId = (sceneId: string) =>
    site.feedKey === undefined
      ? `urn:storyloom:scene:${esc(site.storyId)}:${esc(sceneId)}`
      : `${feedId}:scene:${esc(sceneId)}`;
  const entryXml = newest
    .map(
      (episode) => `  <entry>
    <id>${entryId(episode.sceneId)}</id>
    <title type="text">${esc(feedText(episode.title))}</title>
    <updated>${entryUpdated(episode)}</updated>
    <published>${isoTime(episode.createdAt)}</published>
    <link rel="alternate" type="text/html" href="${sceneHref(episode, '')}"/>
    <summary type="text">${esc(episode.excerpt)}</summary>
  </entry>`,
    )
    .join('\n');
  return `<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"${base}>
  <id>${feedId}</id>
  <title type="text">${esc(feedText(site.siteTitle))}</title>
  <subtitle type="text">${esc(feedText(site.story.premise))}</subtitle>
  <updated>${updated}</updated>
  <author><name>${esc(feedText(site.siteTitle))}</name></author>
  <link rel="self" type="application/atom+xml" href="feed.atom"/>
  <link rel="alternate" type="text/html" href="index.html"/>
  <generator>storyloom</generator>
${entryXml}
</feed>
`;
}

// ---------------------------------------------------------------------------------------------------------------
// Style.

function renderStyle(): string {
  const steps = Array.from({ length: 51 }, (_, step) => step * 2);
  const widths = steps.map((value) => `.w-${value}{width:${value}%}`).join('');
  const offsets = steps.map((value) => `.l-${value}{margin-left:${value}%}`).join('');
  return `${SITE_CSS}\n/* bar widths and offsets in 2 % steps: no inline styles, so the CSP can forbid them */\n${widths}\n${offsets}\n`;
}

const SITE_CSS = `:root {
  color-scheme: light dark;
  --bg: #f7f4ee;
  --surface: #fffdf9;
  --text: #26231f;
  --muted: #6b645a;
  --line: #e4ddd0;
  --accent: #9a4b2f;
  --accent-soft: #f1e2d8;
  --good: #3f7d5a;
  --bad: #a8433a;
  --shadow: 0 1px 2px rgb(60 40 20 / 8%), 0 4px 16px rgb(60 40 20 / 6%);
  --serif: "Iowan Old Style", "Palatino Linotype", Palatino, "Book Antiqua", Georgia, "Times New Roman", serif;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #16181d;
    --surface: #1f2228;
    --text: #e8e4dc;
    --muted: #a29b90;
    --line: #343841;
    --accent: #e59a72;
    --accent-soft: #3a2c26;
    --good: #7cc49a;
    --bad: #ee8f85;
    --shadow: 0 1px 2px rgb(0 0 0 / 30%), 0 4px 16px rgb(0 0 0 / 25%);
  }
}
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--text); font: 1rem/1.6 var(--sans); overflow-wrap: anywhere; }
a { color: var(--accent); text-decoration-thickness: 1px; text-underline-offset: 0.18em; }
a:hover { text-decoration-thickness: 2px; }
a:focus-visible, .button:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; border-radius: 4px; }
img { max-width: 100%; height: auto; display: block; }
.wrap { width: min(72rem, 100% - 2.5rem); margin-inline: auto; }
.skip-link { position: absolute; left: -999px; }
.skip-link:focus { left: 1rem; top: 1rem; background: var(--surface); padding: 0.5rem 1rem; z-index: 10; }
.site-header { border-bottom: 1px solid var(--line); background: var(--surface); }
.header-row { display: flex; flex-wrap: wrap; align-items: center; justify-content: space-between; gap: 0.5rem 1.5rem; padding-block: 0.9rem; }
.brand { font: 600 1.2rem/1.3 var(--serif); color: var(--text); text-decoration: none; letter-spacing: 0.01em; }
.site-nav { display: flex; flex-wrap: wrap; gap: 0.25rem 1.25rem; font-size: 0.95rem; }
.site-nav a { color: var(--muted); text-decoration: none; padding-block: 0.2rem; border-bottom: 2px solid transparent; }
.site-nav a:hover, .site-nav a[aria-current="page"] { color: var(--text); border-bottom-color: var(--accent); }
main { padding-block: 2.5rem 3rem; }
.site-footer { border-top: 1px solid var(--line); color: var(--muted); font-size: 0.85rem; padding-block: 1.5rem; }
h1, h2, h3 { font-family: var(--serif); line-height: 1.2; font-weight: 600; }
h1 { font-size: clamp(2rem, 1.4rem + 2.6vw, 3.1rem); margin: 0.2rem 0 0.8rem; letter-spacing: -0.01em; }
.eyebrow { margin: 0; color: var(--muted); font-size: 0.8rem; letter-spacing: 0.08em; text-transform: uppercase; }
.eyebrow a { color: inherit; }
.lede { font: 1.2rem/1.55 var(--serif); color: var(--muted); max-width: 44rem; margin: 0 0 1.2rem; }
.muted { color: var(--muted); }
.small { font-size: 0.88rem; }
.hero { padding: 1rem 0 2rem; border-bottom: 1px solid var(--line); margin-bottom: 2rem; }
.actions { display: flex; flex-wrap: wrap; gap: 0.75rem; margin: 1.5rem 0 0; }
.button { display: inline-block; padding: 0.6rem 1.1rem; border-radius: 999px; border: 1px solid var(--line); background: var(--surface); color: var(--text); text-decoration: none; font-weight: 600; font-size: 0.95rem; }
.button.primary { background: var(--accent); border-color: var(--accent); color: var(--surface); }
.chapter { margin-bottom: 2.75rem; }
.chapter h2 { font-size: 1.6rem; margin: 0 0 1rem; display: flex; align-items: baseline; gap: 0.75rem; }
.chapter h2 a { color: inherit; text-decoration: none; }
.chapter h2 a:hover { color: var(--accent); }
.count { font: 0.85rem var(--sans); color: var(--muted); }
.chapter-archive { margin-bottom: 2.75rem; }
.chapter-archive h2 { font-size: 1.6rem; margin: 0 0 1rem; }
.chapter-list { list-style: none; margin: 0; padding: 0; border-top: 1px solid var(--line); }
.chapter-list li { padding: 0.7rem 0; border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; align-items: baseline; gap: 0.75rem; }
.chapter-list a { font: 600 1.1rem var(--serif); color: var(--text); text-decoration: none; }
.chapter-list a:hover { color: var(--accent); }
.chapter-page h1 { margin-bottom: 1.5rem; }
.cards { list-style: none; margin: 0; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: 1.25rem; }
.card { background: var(--surface); border: 1px solid var(--line); border-radius: 14px; overflow: hidden; box-shadow: var(--shadow); display: flex; flex-direction: column; }
.thumb { display: block; aspect-ratio: 16 / 9; background: var(--accent-soft); overflow: hidden; }
.thumb img { width: 100%; height: 100%; object-fit: cover; transition: transform 0.3s ease; }
.card:hover .thumb img { transform: scale(1.03); }
.thumb-placeholder { display: grid; place-items: center; height: 100%; font: 600 2.5rem var(--serif); color: var(--accent); }
.card-body { padding: 1rem 1.1rem 1.2rem; }
.card h3 { font-size: 1.25rem; margin: 0.35rem 0 0.45rem; }
.card h3 a { color: var(--text); text-decoration: none; }
.card h3 a:hover { color: var(--accent); }
.excerpt { margin: 0; color: var(--muted); font-size: 0.95rem; display: -webkit-box; -webkit-line-clamp: 4; -webkit-box-orient: vertical; overflow: hidden; }
.scene { max-width: 44rem; margin-inline: auto; }
.scene-header { margin-bottom: 1.5rem; }
.scene-picture { margin: 0 0 2rem; }
.scene-picture img { width: 100%; border-radius: 14px; box-shadow: var(--shadow); }
@media (min-width: 60rem) { .scene-picture { margin-inline: -6rem; } }
.prose { font: 1.2rem/1.75 var(--serif); hyphens: auto; }
.prose p { margin: 0 0 1.15em; }
.prose > p:first-child::first-letter { float: left; font-size: 3.4em; line-height: 0.85; padding: 0.08em 0.1em 0 0; color: var(--accent); }
.scene-facts { margin: 2.5rem 0 0; padding: 1.25rem 1.4rem; border: 1px solid var(--line); border-radius: 14px; background: var(--surface); display: grid; grid-template-columns: repeat(auto-fit, minmax(12rem, 1fr)); gap: 1rem 1.5rem; }
.fact h3 { font: 600 0.75rem var(--sans); text-transform: uppercase; letter-spacing: 0.08em; color: var(--muted); margin: 0 0 0.45rem; }
.fact p { margin: 0; }
.chips { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4rem; }
.chips li { background: var(--accent-soft); border-radius: 999px; padding: 0.15rem 0.7rem; font-size: 0.9rem; }
.chips a { text-decoration: none; }
.episode-nav { max-width: 44rem; margin: 2.5rem auto 0; display: grid; grid-template-columns: 1fr auto 1fr; gap: 1rem; align-items: center; }
.episode-link { text-decoration: none; display: flex; flex-direction: column; gap: 0.1rem; }
.episode-link.next { text-align: right; align-items: flex-end; }
.episode-link.all { font-size: 0.9rem; color: var(--muted); }
.episode-link.disabled { color: var(--muted); opacity: 0.45; }
.hint { font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.08em; color: var(--muted); }
.link-title { font: 600 1.1rem var(--serif); }
@media (max-width: 36rem) {
  .episode-nav { grid-template-columns: 1fr 1fr; }
  .episode-link.all { grid-column: 1 / -1; grid-row: 2; text-align: center; }
}
.page-intro { margin-bottom: 2rem; }
.roster { display: grid; grid-template-columns: repeat(auto-fill, minmax(26rem, 1fr)); gap: 1.25rem; align-items: start; }
@media (max-width: 30rem) { .roster { grid-template-columns: 1fr; } }
.character { background: var(--surface); border: 1px solid var(--line); border-radius: 14px; padding: 1.2rem 1.3rem; box-shadow: var(--shadow); scroll-margin-top: 1rem; }
.character:target { outline: 2px solid var(--accent); }
.character-head { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem; }
.character-head h2 { margin: 0 auto 0 0; font-size: 1.45rem; }
.character h3 { font: 600 0.75rem var(--sans); text-transform: uppercase; letter-spacing: 0.08em; color: var(--muted); margin: 1.1rem 0 0.5rem; }
.aliases { color: var(--muted); font-style: italic; margin: 0.3rem 0 0; }
.badge { font-size: 0.72rem; text-transform: uppercase; letter-spacing: 0.06em; border-radius: 999px; padding: 0.1rem 0.55rem; border: 1px solid var(--line); color: var(--muted); }
.status-active .badge.status, .badge.status-advancing { color: var(--good); border-color: currentColor; }
.badge.status-dead { color: var(--bad); border-color: currentColor; }
.badge.status-open { color: var(--accent); border-color: currentColor; }
.badge.status-resolved { background: var(--line); color: var(--text); }
.character.status-dead { opacity: 0.75; }
.traits { list-style: none; margin: 0; padding: 0; display: grid; gap: 0.35rem; }
.traits li, .arc { display: grid; grid-template-columns: 7.5rem 1fr 2.8rem; align-items: center; gap: 0.6rem; font-size: 0.92rem; margin: 0; }
.arc { margin-top: 0.9rem; }
.value { font-variant-numeric: tabular-nums; color: var(--muted); font-size: 0.85rem; text-align: right; }
.bar { display: block; height: 0.5rem; border-radius: 999px; background: var(--line); overflow: hidden; min-width: 3rem; }
.bar .fill { display: block; height: 100%; background: var(--accent); border-radius: inherit; }
.relationships { width: 100%; border-collapse: collapse; font-size: 0.9rem; }
.relationships th { text-align: left; font-weight: 600; color: var(--muted); font-size: 0.78rem; border-bottom: 1px solid var(--line); padding: 0.3rem 0.4rem 0.3rem 0; }
.relationships td { padding: 0.45rem 0.6rem 0.45rem 0; border-bottom: 1px solid var(--line); vertical-align: middle; overflow-wrap: normal; }
.relationships td:nth-child(n + 3) { white-space: nowrap; width: 1%; }
.relationships td .bar, .relationships td .affinity { display: inline-flex; width: 4rem; min-width: 0; vertical-align: middle; margin-right: 0.4rem; }
.relationships td .value { display: inline; }
.note { color: var(--muted); font-size: 0.82rem; font-style: italic; }
.affinity { display: inline-flex; height: 0.5rem; border-radius: 999px; background: var(--line); overflow: hidden; }
.affinity .half { display: flex; width: 50%; height: 100%; }
.affinity .neg { justify-content: flex-end; border-right: 1px solid var(--muted); }
.affinity .neg .fill { background: var(--bad); height: 100%; }
.affinity .pos .fill { background: var(--good); height: 100%; }
.axis { display: flex; justify-content: space-between; color: var(--muted); font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.06em; border-bottom: 1px dashed var(--line); padding-bottom: 0.4rem; margin-bottom: 1rem; }
.timeline { list-style: none; margin: 0; padding: 0; display: grid; gap: 1rem; }
.thread { background: var(--surface); border: 1px solid var(--line); border-left: 4px solid var(--line); border-radius: 12px; padding: 1rem 1.2rem; box-shadow: var(--shadow); }
.thread.status-advancing { border-left-color: var(--good); }
.thread.status-open { border-left-color: var(--accent); }
.thread.status-resolved { opacity: 0.85; }
.thread-head { display: flex; flex-wrap: wrap; align-items: center; gap: 0.6rem; }
.thread-head h2 { margin: 0 auto 0 0; font-size: 1.3rem; }
.importance { display: inline-flex; align-items: center; gap: 0.5rem; }
.importance-label { font-size: 0.72rem; text-transform: uppercase; letter-spacing: 0.06em; color: var(--muted); }
.importance .bar { width: 4rem; }
.thread p { margin: 0.5rem 0; }
.track { height: 0.6rem; background: var(--line); border-radius: 999px; margin: 0.75rem 0 0.25rem; overflow: hidden; }
.track .span { display: block; height: 100%; border-radius: 999px; background: var(--accent); }
.status-advancing .track .span { background: var(--good); }
.status-dormant .track .span { background: var(--muted); }
.status-resolved .track .span { background: var(--text); opacity: 0.55; }
details summary { cursor: pointer; color: var(--muted); font-size: 0.9rem; }
@media print { .site-header, .site-footer, .episode-nav { display: none; } body { background: #fff; color: #000; } }
@media (prefers-reduced-motion: reduce) { * { transition: none !important; } }`;

// ---------------------------------------------------------------------------------------------------------------
// The publisher.

/**
 * A `Publisher` that writes a static reader site into a folder.
 *
 * @example
 * ```ts
 * import { createFilesystemPublisher, type FilesystemPublisher } from 'storyloom';
 * const publisher: FilesystemPublisher = createFilesystemPublisher({ directory: 'site' });
 * console.log(`serve ${publisher.directory} with any static web server`);
 * ```
 */
export interface FilesystemPublisher extends Publisher {
  /** The resolved folder the site is written to. */
  readonly directory: string;
  /**
   * Publishes many scenes of one story, leaving the site exactly as `publish` would one after the other, but writes
   * each scene's files as it comes and the pages of the whole site (index, chapters, roster, timeline, feed) once at
   * the end: building the site of an imported or forked story costs the same per scene however long it is. Episodes
   * are taken one at a time, so an async iterable need not hold every picture in memory, and the scene pages are
   * rendered and written a few hundred at a time (`scenePagesPerWrite`). Returns what `publish` would have returned
   * for each. Should it fail half-way, the next publish repairs the site.
   *
   * @example
   * ```ts
   * import { createFilesystemPublisher } from 'storyloom';
   * const publisher = createFilesystemPublisher({ directory: 'site' });
   * const results = await publisher.publishMany(episodes);
   * console.log(`${results.length} scenes published`);
   * ```
   */
  publishMany(
    episodes: Iterable<Episode> | AsyncIterable<Episode>,
    options?: { signal?: AbortSignal },
  ): Promise<PublishResult[]>;
}

function validateOptions(options: FilesystemPublisherOptions): ValidationProblem[] {
  const problems: ValidationProblem[] = [];
  if (typeof options !== 'object' || options === null) return [{ path: '(root)', message: 'must be an object' }];
  if (typeof options.directory !== 'string' || options.directory.trim() === '') {
    problems.push({ path: 'directory', message: 'must be a non-empty path' });
  }
  if (options.baseUrl !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(options.baseUrl);
    } catch {
      url = undefined;
    }
    if (!url || !['http:', 'https:', 'file:'].includes(url.protocol) || url.search || url.hash) {
      problems.push({ path: 'baseUrl', message: 'must be an absolute http(s) or file URL without query or fragment' });
    }
  }
  if (options.siteTitle !== undefined && (typeof options.siteTitle !== 'string' || !options.siteTitle.trim())) {
    problems.push({ path: 'siteTitle', message: 'must be a non-empty string' });
  } else if (options.siteTitle !== undefined && options.siteTitle.length > 200) {
    problems.push({ path: 'siteTitle', message: 'must be at most 200 characters' });
  }
  if (options.target !== undefined && !IdSchema.safeParse(options.target).success) {
    problems.push({ path: 'target', message: 'must be an id: letters, digits, ".", "_", ":" and "-"' });
  }
  if (options.language !== undefined && !LANGUAGE_TAG.test(options.language)) {
    problems.push({ path: 'language', message: 'must be a language tag such as "en" or "pt-BR"' });
  }
  if (
    options.feedEntries !== undefined &&
    !(Number.isInteger(options.feedEntries) && options.feedEntries >= 1 && options.feedEntries <= 10_000)
  ) {
    problems.push({ path: 'feedEntries', message: 'must be an integer from 1 to 10000' });
  }
  if (
    options.indexChapters !== undefined &&
    !(Number.isInteger(options.indexChapters) && options.indexChapters >= 1 && options.indexChapters <= 10_000)
  ) {
    problems.push({ path: 'indexChapters', message: 'must be an integer from 1 to 10000' });
  }
  if (
    options.indexEpisodes !== undefined &&
    !(Number.isInteger(options.indexEpisodes) && options.indexEpisodes >= 1 && options.indexEpisodes <= 10_000)
  ) {
    problems.push({ path: 'indexEpisodes', message: 'must be an integer from 1 to 10000' });
  }
  if (
    options.staleTempFileMs !== undefined &&
    !(Number.isFinite(options.staleTempFileMs) && options.staleTempFileMs >= 0)
  ) {
    problems.push({ path: 'staleTempFileMs', message: 'must be a non-negative number of milliseconds' });
  }
  if (
    options.scenePagesPerWrite !== undefined &&
    !(
      Number.isInteger(options.scenePagesPerWrite) &&
      options.scenePagesPerWrite >= 1 &&
      options.scenePagesPerWrite <= 10_000
    )
  ) {
    problems.push({ path: 'scenePagesPerWrite', message: 'must be an integer from 1 to 10000' });
  }
  return problems;
}

/** The characters as the roster shows them. */
function rosterOf(characters: StoryState['characters']): StorySnapshot['characters'] {
  return Object.fromEntries(
    Object.entries(characters).map(([id, { knowledge: _knowledge, appearance: _appearance, ...shown }]) => [id, shown]),
  );
}

function snapshotOf(story: StoryState): StorySnapshot {
  return {
    version: story.version,
    title: story.bible.title,
    premise: story.bible.premise,
    genre: story.bible.genre,
    tone: story.bible.tone,
    characters: rosterOf(story.characters),
    plotThreads: story.plotThreads,
  };
}

function entryOf(
  scene: Scene,
  characters: StorySnapshot['characters'],
  image: ManifestEpisode['image'],
): ManifestEpisode {
  return {
    sceneId: scene.id,
    index: scene.index,
    chapterId: scene.chapterId,
    title: scene.title,
    excerpt: excerptOf(scene.summary.trim() || scene.text, 280),
    createdAt: scene.createdAt,
    cast: scene.characters.map((id) => ({ id, name: Object.hasOwn(characters, id) ? characters[id]!.name : id })),
    image,
  };
}

/** A picture's size in pixels. */
type PictureSize = { width: number; height: number };

/**
 * The size a browser shows a picture at, read from its bytes: for a PNG, its IHDR chunk (which the format puts
 * first); for a JPEG, its frame header, turned when its Exif orientation turns the picture a quarter (as browsers
 * show it); for a WebP, the header of its first chunk (`VP8 `, `VP8L` or `VP8X`); for an SVG, its root element's
 * `width` and `height` in pixels, or its `viewBox` for what they leave out. The image generators return PNG, JPEG,
 * WebP and SVG, and a publisher is handed only the bytes. Undefined when the bytes do not say (an SVG sized in `%` or
 * `em`, a truncated file): a page then gives no size rather than a wrong one.
 */
function pictureSize(data: Uint8Array, extension: ImageExtension): PictureSize | undefined {
  const bytes = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const at = (offset: number, size: 1 | 2 | 3 | 4, littleEndian = false) => {
    // Out of the bytes (or at no offset, NaN): no number, so every check on it fails.
    if (!(offset >= 0 && offset + size <= data.byteLength)) return Number.NaN;
    if (size === 1) return bytes.getUint8(offset);
    if (size === 2) return bytes.getUint16(offset, littleEndian);
    if (size === 4) return bytes.getUint32(offset, littleEndian);
    return bytes.getUint16(offset, true) + bytes.getUint8(offset + 2) * 0x10000;
  };
  const ascii = (offset: number) => String.fromCharCode(...data.subarray(offset, offset + 4));
  const sized = (width: number, height: number, turned = false): PictureSize | undefined => {
    const [w, h] = [Math.round(width), Math.round(height)];
    if (!(w >= 1 && h >= 1 && w <= MAX_PIXELS && h <= MAX_PIXELS)) return undefined;
    return turned ? { width: h, height: w } : { width: w, height: h };
  };
  if (extension === 'png') return ascii(12) === 'IHDR' ? sized(at(16, 4), at(20, 4)) : undefined;
  if (extension === 'webp') {
    const chunk = ascii(12);
    if (chunk === 'VP8 ' && at(23, 2) === 0x9d01 && at(25, 1) === 0x2a) {
      return sized(at(26, 2, true) & 0x3fff, at(28, 2, true) & 0x3fff);
    }
    if (chunk === 'VP8L' && at(20, 1) === 0x2f) {
      const bits = at(21, 4, true);
      return sized((bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1);
    }
    return chunk === 'VP8X' ? sized(at(24, 3) + 1, at(27, 3) + 1) : undefined;
  }
  if (extension === 'jpg') {
    let turned = false;
    // Segment by segment from the start of image (FF D8) to the first frame header (SOF0-SOF15 but DHT, JPG, DAC).
    for (let offset = 2; at(offset, 1) === 0xff; ) {
      const marker = at(offset + 1, 1);
      if (marker === 0xff) offset += 1;
      else if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) offset += 2;
      else if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return sized(at(offset + 7, 2), at(offset + 5, 2), turned);
      } else if (marker === 0xd9 || marker === 0xda || Number.isNaN(marker)) return undefined;
      else {
        if (marker === 0xe1 && ascii(offset + 4) === 'Exif') turned = exifTurnsQuarter(at, offset + 10);
        offset += 2 + at(offset + 2, 2);
      }
    }
    return undefined;
  }
  // An SVG: the root is the first `svg` element once comments are out of the way.
  const text = new TextDecoder().decode(data).replace(/<!--[\s\S]*?-->/g, '');
  const root = /<(?:[\w.-]+:)?svg[\s/>](?:[^>"']|"[^"]*"|'[^']*')*>/.exec(text)?.[0] ?? '';
  const pixels = (name: string) =>
    Number(new RegExp(`\\s${name}\\s*=\\s*(["'])\\s*([\\d.]+)(?:px)?\\s*\\1`).exec(root)?.[2] ?? Number.NaN);
  const box =
    /\sviewBox\s*=\s*(["'])([^"']*)\1/
      .exec(root)?.[2]
      ?.trim()
      .split(/[\s,]+/)
      .map(Number) ?? [];
  const ratio = box.length === 4 ? box[2]! / box[3]! : Number.NaN;
  let [width, height] = [pixels('width'), pixels('height')];
  if (Number.isNaN(width)) width = Number.isNaN(height) ? (box[2] ?? Number.NaN) : height * ratio;
  if (Number.isNaN(height)) height = width / ratio;
  return sized(width, height);
}

/**
 * Whether the Exif block of a JPEG, its TIFF header at `tiff`, holds an orientation (tag 0x0112 of its first IFD) of 5
 * to 8: the picture is shown turned a quarter, its width and height swapped.
 */
function exifTurnsQuarter(at: (offset: number, size: 2 | 4, littleEndian?: boolean) => number, tiff: number): boolean {
  const little = at(tiff, 2) === 0x4949;
  const directory = tiff + at(tiff + 4, 4, little);
  const count = at(directory, 2, little);
  for (let entry = 0; entry < count; entry++) {
    const field = directory + 2 + entry * 12;
    if (at(field, 2, little) === 0x0112) return at(field + 8, 2, little) >= 5;
  }
  return false;
}

/** The picture already on disk for `slug`, if any. */
function existingImage(imageNames: readonly string[], slug: string): ImageExtension | undefined {
  return IMAGE_EXTENSIONS.find((extension) => imageNames.includes(`${slug}.${extension}`));
}

/**
 * The marker of a publish in progress: the scene it writes, so a repair after a crash can redo its pages. A batch
 * writes `null`: its scenes are new to the catalog until its end, so a repair folds them back and redoes their pages.
 */
const MarkerSchema = z.object({ sceneId: IdSchema, index: z.number().int().min(0) });

/** What a repair found: every chapter read, the scene files folded back, the chapter pages and files on disk. */
interface WholeSite {
  model: SiteModel;
  folded: ManifestEpisode[];
  chapterPageNames: string[];
  chapterFileNames: string[];
}

/** A scene page a publish writes: its episode and its navigation, known before anything is written. */
interface ScenePagePlan {
  episode: ManifestEpisode;
  chapter: number;
  previous: EpisodeLink | undefined;
  next: EpisodeLink | undefined;
}

/**
 * What one publish writes, in order, and the files it removes, as paths relative to the site folder. The scene pages
 * come first; they are rendered (from `view`) only as they are written, a few at a time, so a publish that writes
 * every scene page of a long story (a repair, a batch) never holds them all. Then `files`, in their order.
 */
interface PublishPlan {
  view: SiteView;
  scenePages: ScenePagePlan[];
  files: Map<string, string | Uint8Array>;
  remove: string[];
  /** Files known to differ from what is on disk: written without being read back. */
  knownChanged: ReadonlySet<string>;
}

/**
 * A publisher that writes a static reader site into `directory`: `index.html` (the newest chapters episode by
 * episode, newest first, and a list of the earlier ones), `chapters/<number>.html` per chapter,
 * `scenes/<index>-<scene id>.html` and `.json` per scene, `images/` for pictures, `characters.html`,
 * `threads.html`, `feed.atom`, `style.css`, and the catalog (`episodes.json` with `episodes/<chapter id>.json`).
 * Publishing is idempotent per scene, crash-safe, escapes all model and audience text, and costs the same however
 * long the story is. One folder holds one story.
 *
 * @example
 * ```ts
 * import { createFilesystemPublisher } from 'storyloom';
 * const publisher = createFilesystemPublisher({ directory: 'site', baseUrl: 'https://stories.example.com/lighthouse/' });
 * const { url } = await publisher.publish({ story, scene, image });
 * ```
 */
export function createFilesystemPublisher(options: FilesystemPublisherOptions): FilesystemPublisher {
  const problems = validateOptions(options);
  if (problems.length > 0) {
    throw new ValidationError(
      `Invalid filesystem publisher options: ${problems.map((p) => `${p.path} ${p.message}`).join('; ')}`,
      { problems },
    );
  }
  const directory = path.resolve(options.directory);
  const target = options.target ?? 'site';
  const language = options.language ?? 'en';
  const feedEntries = options.feedEntries ?? 50;
  const indexChapters = options.indexChapters ?? 3;
  const indexEpisodes = options.indexEpisodes ?? 20;
  const clock = options.clock ?? systemClock;
  const staleMs = options.staleTempFileMs ?? 10 * 60_000;
  const scenePagesPerWrite = options.scenePagesPerWrite ?? SCENE_PAGES_PER_WRITE;
  const baseUrl = options.baseUrl
    ? options.baseUrl.endsWith('/')
      ? options.baseUrl
      : `${options.baseUrl}/`
    : undefined;
  const publicUrl = (relative: string) =>
    baseUrl ? new URL(relative, baseUrl).href : pathToFileURL(path.join(directory, relative)).href;
  const capabilities: PublisherCapabilities = { idempotent: true };
  const scenesFolder = path.join(directory, SCENES);
  const imagesFolder = path.join(directory, IMAGES);
  const chaptersFolder = path.join(directory, CHAPTERS);
  const episodesFolder = path.join(directory, EPISODES);
  const chapterFileOf = (chapterId: string) => `${EPISODES}/${chapterFileIdOf(chapterId)}.json`;

  /** The catalog when it is readable, or the manifest of an earlier version to carry over. */
  async function loadCatalog(
    storyId: string,
  ): Promise<{ catalog?: Catalog; text?: string; legacy?: z.infer<typeof LegacyManifestSchema> }> {
    const text = await readFile(path.join(directory, MANIFEST_FILE), 'utf8').catch(() => undefined);
    let raw: unknown;
    try {
      raw = text === undefined ? undefined : JSON.parse(text);
    } catch {
      raw = undefined;
    }
    const catalog = CatalogSchema.safeParse(raw);
    const legacy = catalog.success ? undefined : LegacyManifestSchema.safeParse(raw);
    const owner = catalog.success
      ? catalog.data.storyId
      : legacy?.success
        ? legacy.data.storyId
        : ((await ownerOfFiles()) ?? storyId);
    if (owner !== storyId) {
      throw new ConflictError(
        `The folder already holds the site of story "${owner}"; publish story "${storyId}" into another folder`,
        { isRetryable: false },
      );
    }
    // An unreadable catalog is rebuilt from the chapter and scene files; it is derived data.
    return {
      ...(catalog.success ? { catalog: catalog.data, text } : {}),
      ...(legacy?.success ? { legacy: legacy.data } : {}),
    };
  }

  /**
   * The story the site's other files belong to, for a folder whose catalog is lost or damaged: `story.json`, else the
   * first chapter file, else the first scene JSON that reads. Read only then, so the repair that rebuilds the catalog
   * never takes over another story's site.
   */
  async function ownerOfFiles(): Promise<string | undefined> {
    const story = StoryFileSchema.safeParse(await readJson(path.join(directory, STORY_FILE)));
    if (story.success) return story.data.storyId;
    const candidates: Array<[string, z.ZodType<{ storyId: string }>]> = [
      [episodesFolder, ChapterFileSchema],
      [scenesFolder, SceneSchema],
    ];
    for (const [folder, schema] of candidates) {
      const names = await readdir(folder).catch(() => [] as string[]);
      for (const name of names.sort()) {
        if (!name.endsWith('.json') || TEMP_PATTERN.test(name)) continue;
        const parsed = schema.safeParse(await readJson(path.join(folder, name)));
        if (parsed.success) return parsed.data.storyId;
      }
    }
    return undefined;
  }

  async function readChapter(storyId: string, chapterId: string): Promise<ManifestEpisode[] | undefined> {
    const parsed = ChapterFileSchema.safeParse(await readJson(path.join(directory, chapterFileOf(chapterId))));
    if (!parsed.success || parsed.data.storyId !== storyId || parsed.data.chapterId !== chapterId) return undefined;
    const { episodes } = parsed.data;
    const ordered = episodes.every(
      (episode, position) =>
        episode.chapterId === chapterId && (position === 0 || compareEpisodes(episodes[position - 1]!, episode) < 0),
    );
    return ordered ? episodes : undefined;
  }

  /** What `story.json` holds, if it is readable and of `storyId` (and of `version`, when given). */
  async function readStoryFile(
    storyId: string,
    version?: number,
  ): Promise<z.infer<typeof StoryFileSchema> | undefined> {
    const parsed = StoryFileSchema.safeParse(await readJson(path.join(directory, STORY_FILE)));
    if (!parsed.success || parsed.data.storyId !== storyId) return undefined;
    return version === undefined || parsed.data.story.version === version ? parsed.data : undefined;
  }

  async function readScene(episode: ManifestEpisode): Promise<Scene | undefined> {
    const parsed = SceneSchema.safeParse(await readJson(path.join(scenesFolder, `${slugOfEpisode(episode)}.json`)));
    return parsed.success && parsed.data.id === episode.sceneId ? parsed.data : undefined;
  }

  /** The indexes of published scenes, found by their file names: only for scenes a new state names first. */
  async function locatePublished(sceneIds: string[]): Promise<Map<string, number>> {
    const wanted = new Map(sceneIds.map((id) => [fileIdOf(id), id]));
    const found = new Map<string, number>();
    for (const name of await readdir(scenesFolder).catch(() => [] as string[])) {
      const match = SCENE_FILE_PATTERN.exec(name);
      const id = match?.[3] === 'json' ? wanted.get(match[2]!) : undefined;
      if (id !== undefined) found.set(id, Number(match![1]));
    }
    return found;
  }

  /** The picture already on disk for `slug`, if any. */
  async function pictureOnDisk(slug: string): Promise<ImageExtension | undefined> {
    for (const extension of IMAGE_EXTENSIONS) {
      const found = await stat(path.join(imagesFolder, `${slug}.${extension}`)).then(
        () => true,
        () => false,
      );
      if (found) return extension;
    }
    return undefined;
  }

  /**
   * Reads the whole site for a repair: every chapter file, the entries of an earlier version's manifest, and every
   * scene JSON file none of them lists (left by a crash between writes, or by another process), folded back in. A
   * scene listed in two places (a publish that moved it died between two chapter files) is kept where its JSON puts
   * it, and one a crashed publish (`crashed`) was moving, where the JSON it wrote puts it: the next publish finishes
   * the move. Removes the abandoned temporary files of every folder on the way. The site's feed ids are `ids`: of
   * `ids.format` when it is known, else of the earlier format when a chapter file of it is there (a site of that
   * format that lost its catalog and its story file), else of the current one, with `ids.feedKey`.
   */
  async function readWholeSite(
    storyId: string,
    story: StorySnapshot,
    legacy: z.infer<typeof LegacyManifestSchema> | undefined,
    crashed: ReadonlyArray<{ sceneId: string; index: number }>,
    ids: { format: SiteFormat | undefined; feedKey: string },
  ): Promise<WholeSite> {
    const sceneNames = await listFolder(scenesFolder, clock, staleMs);
    const imageNames = await listFolder(imagesFolder, clock, staleMs);
    const chapterPageNames = await listFolder(chaptersFolder, clock, staleMs);
    const chapterFileNames = await listFolder(episodesFolder, clock, staleMs);
    const sceneFiles = new Set(sceneNames);
    /** The episode of the scene JSON `scenes/<slug>.json`, if it is there and of this story. */
    const sceneEntry = async (slug: string): Promise<ManifestEpisode | undefined> => {
      if (!sceneFiles.has(`${slug}.json`)) return undefined;
      const scene = SceneSchema.safeParse(await readJson(path.join(scenesFolder, `${slug}.json`)));
      if (!scene.success || scene.data.storyId !== storyId || slugOf(scene.data.index, scene.data.id) !== slug) {
        return undefined;
      }
      const extension = existingImage(imageNames, slug);
      const picture = extension && {
        extension,
        alt: sceneAltText(scene.data),
        ...(await pictureSizeOnDisk(slug, extension)),
      };
      return entryOf(scene.data, story.characters, picture || null);
    };
    const chapters = new Map<string, ManifestEpisode[]>();
    /** The slug each scene is kept at. */
    const knownScenes = new Map<string, string>();
    const knownSlugs = new Set<string>();
    const keep = (episode: ManifestEpisode): boolean => {
      if (knownScenes.has(episode.sceneId)) return false;
      knownScenes.set(episode.sceneId, slugOfEpisode(episode));
      knownSlugs.add(slugOfEpisode(episode));
      chapters.set(episode.chapterId, [...(chapters.get(episode.chapterId) ?? []), episode]);
      return true;
    };
    /**
     * `episode` with the picture `images/` holds for it: a chapter file written by a writer that overlapped another
     * may say a scene has no picture when the other had written it by then. The alt text a listing gives is kept;
     * a picture it did not know is described as its scene is, and its size read from it.
     */
    const withPictureOnDisk = async (episode: ManifestEpisode): Promise<ManifestEpisode> => {
      const slug = slugOfEpisode(episode);
      const extension = existingImage(imageNames, slug);
      if (!extension) return episode.image ? { ...episode, image: null } : episode;
      if (episode.image?.extension === extension) return episode;
      const alt =
        episode.image?.alt ??
        (await sceneEntry(slug))?.image?.alt ??
        sceneAltText({ imagePrompt: '', title: episode.title });
      return { ...episode, image: { extension, alt, ...(await pictureSizeOnDisk(slug, extension)) } };
    };
    // Every place a chapter file (or an earlier version's manifest) lists each scene.
    const listings = new Map<string, ManifestEpisode[]>();
    const list = async (listed: ManifestEpisode) => {
      const episode = await withPictureOnDisk(listed);
      listings.set(episode.sceneId, [...(listings.get(episode.sceneId) ?? []), episode]);
    };
    const chapterFileSet = new Set(chapterFileNames);
    let format = ids.format;
    for (const name of [...chapterFileNames].sort()) {
      if (!name.endsWith('.json')) continue;
      const parsed = ChapterFileSchema.safeParse(await readJson(path.join(episodesFolder, name)));
      if (!parsed.success || parsed.data.storyId !== storyId) continue;
      if (parsed.data.format === SITE_FORMAT_STORY_IDS) format ??= SITE_FORMAT_STORY_IDS;
      // A chapter file is read under its own name, or under the one an earlier version gave it (the repair moves it).
      const own = chapterFileOf(parsed.data.chapterId);
      const earlier = `${EPISODES}/${fileIdOf(parsed.data.chapterId)}.json`;
      const hasOwn = chapterFileSet.has(own.slice(EPISODES.length + 1));
      if (`${EPISODES}/${name}` !== own && (hasOwn || `${EPISODES}/${name}` !== earlier)) continue;
      for (const episode of parsed.data.episodes) if (episode.chapterId === parsed.data.chapterId) await list(episode);
    }
    for (const episode of legacy?.episodes ?? []) await list(episode);
    const crashedAt = new Map(crashed.map((marked) => [marked.sceneId, marked.index]));
    for (const [sceneId, places] of listings) {
      const index = crashedAt.get(sceneId);
      const written = index === undefined ? undefined : await sceneEntry(slugOf(index, sceneId));
      const same = (place: ManifestEpisode) =>
        written !== undefined && place.chapterId === written.chapterId && place.index === written.index;
      // The crashed publish moved the scene: it is where its JSON puts it, revised as that publish would have.
      if (written && !places.some(same)) keep(revisionOf(places[0], written));
      else if (places.length === 1) keep(places[0]!);
      else keep(places.find(same) ?? (await placeOfJson(places, sceneEntry)));
    }
    const folded: ManifestEpisode[] = [];
    for (const name of [...sceneNames].sort()) {
      const match = SCENE_FILE_PATTERN.exec(name);
      if (match?.[3] !== 'json' || knownSlugs.has(`${match[1]}-${match[2]}`)) continue;
      const entry = await sceneEntry(`${match[1]}-${match[2]}`);
      if (entry && keep(entry)) folded.push(entry);
    }
    for (const episodes of chapters.values()) episodes.sort(compareEpisodes);
    const catalog = catalogOf(
      storyId,
      story,
      chapters,
      format === SITE_FORMAT_STORY_IDS ? { format } : { format: CATALOG_FORMAT, feedKey: ids.feedKey },
    );
    const model = new SiteModel(catalog, story, (chapterId) => readChapter(storyId, chapterId), chapters);
    // A crashed publish that moved its scene to another index, kept there: the scene's files at any other index go.
    for (const { sceneId, index } of crashed) {
      if (knownScenes.get(sceneId) !== slugOf(index, sceneId)) continue;
      const oldIndexes = new Set<number>();
      for (const name of [...sceneNames, ...imageNames]) {
        const match = SCENE_FILE_PATTERN.exec(name);
        if (match?.[2] === fileIdOf(sceneId) && Number(match[1]) !== index) oldIndexes.add(Number(match[1]));
      }
      for (const oldIndex of oldIndexes) model.movedFrom.push({ sceneId, index: oldIndex });
    }
    return { model, folded, chapterPageNames, chapterFileNames };
  }

  /**
   * Of the places chapter files list one scene at (a publish that moved it to another chapter died between two of
   * them), the one its scene JSON names, which a publish writes first; the first listed when the JSON names none.
   */
  async function placeOfJson(
    places: readonly ManifestEpisode[],
    sceneEntry: (slug: string) => Promise<ManifestEpisode | undefined>,
  ): Promise<ManifestEpisode> {
    for (const place of places) {
      if ((await sceneEntry(slugOfEpisode(place)))?.chapterId === place.chapterId) return place;
    }
    return places[0]!;
  }

  /** The site as one publish (or batch) sees it: the model, and what a repair found. */
  interface OpenSite {
    model: SiteModel;
    /** The catalog file as this publish read it, if it was valid: the new one is compared with it, not read again. */
    catalogText: string | undefined;
    /** The chapters in reading order before this publish: a chapter whose number changes has its pages redone. */
    previousOrder: readonly string[];
    repair?: { whole: WholeSite; crashed: ReadonlyArray<{ sceneId: string }> };
  }

  /**
   * The site read cheaply from its catalog, or as a whole when it needs a repair (`leftBehind` given). `feedKey` is
   * the key of the story published (`feedKeyOf`): a site that has no catalog yet takes it.
   */
  async function openSite(
    storyId: string,
    loaded: Awaited<ReturnType<typeof loadCatalog>>,
    story: StorySnapshot,
    feedKey: string,
    leftBehind: readonly string[] | undefined,
  ): Promise<OpenSite> {
    const { catalog } = loaded;
    const previousOrder = (catalog?.chapters ?? []).map((chapter) => chapter.chapterId);
    if (catalog && leftBehind === undefined) {
      // A copy: should a file disagree, the repair starts again from the catalog as it was read.
      const model = new SiteModel(
        structuredClone(catalog),
        async () => (await readStoryFile(storyId, catalog.storyVersion))?.story,
        (chapterId) => readChapter(storyId, chapterId),
      );
      return { model, catalogText: loaded.text, previousOrder };
    }
    const legacy = loaded.legacy?.story;
    const storyFile = await readStoryFile(storyId);
    const stored = storyFile?.story ?? (legacy && { ...legacy, characters: rosterOf(legacy.characters) });
    const shown = stored && stored.version > story.version ? stored : withArchivedThreads(stored, story);
    const crashed = await scenesOfMarkers(leftBehind ?? []);
    // The site keeps the feed ids it gave: those its catalog says, or, with the catalog lost, those of the format its
    // story file, an earlier version's manifest or (in `readWholeSite`) its chapter files were written in.
    const format = catalog?.format ?? storyFile?.format ?? (loaded.legacy ? SITE_FORMAT_STORY_IDS : undefined);
    const ids = { format, feedKey: catalog?.feedKey ?? feedKey };
    const whole = await readWholeSite(storyId, shown, loaded.legacy, crashed, ids);
    if (catalog && catalog.storyVersion > shown.version) {
      // `story.json` is lost and an older state is published again: the site keeps what it showed of the newer one.
      whole.model.storyBehind = true;
      whole.model.catalog.storyVersion = catalog.storyVersion;
      // The pages left alone keep their hashes, and the hashes keep their order in the catalog.
      whole.model.catalog.fileHashes = { ...catalog.fileHashes };
      whole.model.catalog.links = linksOf(Object.keys(catalog.links), whole.model.complete!);
    }
    return { model: whole.model, catalogText: loaded.text, previousOrder, repair: { whole, crashed } };
  }

  /**
   * Writes a scene's picture and JSON: the first files of its publish, from which a repair can rebuild the rest. The
   * picture comes first, so a scene JSON another writer sees (and a repair folds back) has its picture in place.
   */
  async function writeSceneFiles(episode: ValidEpisode): Promise<void> {
    const { scene, image } = episode;
    const slug = slugOf(scene.index, scene.id);
    if (image) {
      await writeFileAtomic(path.join(imagesFolder, `${slug}.${image.extension}`), image.data);
      // One picture per scene: a picture of another type from an earlier publish goes.
      for (const extension of IMAGE_EXTENSIONS) {
        if (extension !== image.extension) await rm(path.join(imagesFolder, `${slug}.${extension}`), { force: true });
      }
    }
    await writeFileAtomic(path.join(scenesFolder, `${slug}.json`), toJson(scene));
  }

  /** The size of the picture `images/<slug>.<extension>` on disk, when it can be read. */
  async function pictureSizeOnDisk(slug: string, extension: ImageExtension): Promise<PictureSize | undefined> {
    const data = await readFile(path.join(imagesFolder, `${slug}.${extension}`)).catch(() => undefined);
    return data && pictureSize(data, extension);
  }

  /**
   * Takes a published scene into the model: its story state, then its episode. Returns the episode. `before` keeps,
   * for each scene this publish (or batch) takes in, the episode the site listed for it before: the entry is revised
   * (`revisedAt`, at the publisher's clock) when what the feed shows of it differs from that, and keeps the time it
   * had otherwise, so a retry, or a batch that moves a scene and back, revises nothing.
   */
  async function absorb(
    model: SiteModel,
    episode: ValidEpisode,
    before: Map<string, ManifestEpisode | undefined>,
  ): Promise<ManifestEpisode> {
    const { scene, story, image } = episode;
    await model.updateStory(snapshotOf(story), scene.id, locatePublished);
    const slug = slugOf(scene.index, scene.id);
    const previous = (await model.placeOf({ sceneId: scene.id, index: scene.index, chapterId: scene.chapterId }))
      ?.episode;
    if (!before.has(scene.id)) before.set(scene.id, previous);
    let picture: ManifestEpisode['image'] = null;
    if (image) picture = { extension: image.extension, alt: image.alt, ...pictureSize(image.data, image.extension) };
    else {
      // A retry without the picture keeps the one an earlier publish wrote, and the size it recorded of it.
      const extension = await pictureOnDisk(slug);
      const known = previous?.image?.extension === extension ? previous?.image : undefined;
      if (extension) {
        const size = known?.width && known.height ? { width: known.width, height: known.height } : undefined;
        picture = {
          extension,
          alt: previous?.image?.alt ?? sceneAltText(scene),
          ...(size ?? (await pictureSizeOnDisk(slug, extension))),
        };
      }
    }
    const entry = revisionOf(before.get(scene.id), entryOf(scene, story.characters, picture));
    await model.add(entry);
    return entry;
  }

  /**
   * `entry`, revised now (at the publisher's clock, so a test can fix it) when what the feed shows of it (its title,
   * its excerpt, its link) differs from `listed`, what the site listed before; else with the revision `listed` had.
   */
  function revisionOf(listed: ManifestEpisode | undefined, entry: ManifestEpisode): ManifestEpisode {
    const { revisedAt: _, ...unrevised } = entry;
    const changed =
      listed && (listed.title !== entry.title || listed.excerpt !== entry.excerpt || listed.index !== entry.index);
    const revisedAt = changed ? new Date(clock.now()).toISOString() : listed?.revisedAt;
    return revisedAt === undefined ? unrevised : { ...unrevised, revisedAt };
  }

  /**
   * The chapters among the newest `CHAPTER_PAGES_CHECKED` of `order` (by id) whose page `chapters/<number>.html` is
   * missing: one `stat` each, so a publish costs the same however many chapters the story has.
   */
  async function chapterPagesMissing(order: readonly string[]): Promise<string[]> {
    const first = Math.max(0, order.length - CHAPTER_PAGES_CHECKED);
    const checked = order.slice(first);
    const found = await Promise.all(
      checked.map((_, offset) =>
        stat(path.join(chaptersFolder, `${first + offset + 1}.html`)).then(
          () => true,
          () => false,
        ),
      ),
    );
    return checked.filter((_, offset) => !found[offset]);
  }

  /** The episodes among `episodes` whose page is missing on the disk. */
  async function missingScenePages(episodes: readonly ManifestEpisode[]): Promise<ManifestEpisode[]> {
    const page = (episode: ManifestEpisode) => `${slugOfEpisode(episode)}.html`;
    const found = await Promise.all(
      episodes.map((episode) =>
        stat(path.join(scenesFolder, page(episode))).then(
          () => true,
          () => false,
        ),
      ),
    );
    return episodes.filter((_, position) => !found[position]);
  }

  /**
   * Everything a publish writes once its scenes are in the model, decided before anything is written: the changed
   * chapter files, `story.json` and the catalog, the pages of the `published` scenes and their neighbours, the
   * chapter pages whose content or number changed, and the pages of the whole site. A repair also renders every
   * chapter page and every scene page again (only those that differ are written), and removes pages and files no
   * chapter has. The scene pages are planned (their navigation found) but rendered only as `writePlan` writes them.
   */
  async function planPages(site: OpenSite, published: readonly ManifestEpisode[]): Promise<PublishPlan> {
    const { model, previousOrder, repair } = site;
    const storyId = model.catalog.storyId;
    const order = model.catalog.chapters.map((chapter) => chapter.chapterId);
    const view = model.view(options.siteTitle, language);
    const files = new Map<string, string | Uint8Array>();

    // Scene pages: the published scenes' and their neighbours' (their previous/next links change when a scene
    // appears between or beside them), and every page of a chapter whose number changed (a chapter arrived late),
    // since each shows it.
    const renumbered = order.filter((chapterId, position) => {
      const before = previousOrder.indexOf(chapterId);
      return before >= 0 && before !== position;
    });
    const scenePages = new Map<string, ManifestEpisode>();
    const withNeighbours = async (around: ManifestEpisode) => {
      scenePages.set(around.sceneId, around);
      for (const side of ['previous', 'next'] as const) {
        const neighbour = await model.neighbour(around, side);
        const found = neighbour && (await model.episodeOf(neighbour.chapterId, neighbour.episode.sceneId));
        if (found) scenePages.set(found.sceneId, found);
      }
    };
    for (const entry of published) await withNeighbours(entry);
    for (const chapterId of renumbered) {
      for (const renumberedEpisode of await model.episodesOf(chapterId)) {
        scenePages.set(renumberedEpisode.sceneId, renumberedEpisode);
      }
    }
    const remove: string[] = [];
    // A scene published again at another index: its old files go, and the pages around its old place are redone.
    const publishedSlugs = new Map(published.map((entry) => [entry.sceneId, slugOfEpisode(entry)]));
    for (const from of model.movedFrom) {
      for (const side of ['previous', 'next'] as const) {
        const neighbour = await model.neighbour(from, side);
        const found = neighbour && (await model.episodeOf(neighbour.chapterId, neighbour.episode.sceneId));
        if (found) scenePages.set(found.sceneId, found);
      }
      const oldSlug = slugOfEpisode(from);
      if (publishedSlugs.get(from.sceneId) === oldSlug) continue;
      remove.push(`${SCENES}/${oldSlug}.json`, `${SCENES}/${oldSlug}.html`);
      remove.push(...IMAGE_EXTENSIONS.map((extension) => `${IMAGES}/${oldSlug}.${extension}`));
    }
    if (repair) {
      // Every scene page is rendered again (those that come out the same are not written): a publish that overlapped
      // another may have written a page from a stale view (a "next" link to a scene two places on), and a crash may
      // have left one half done.
      for (const chapterId of order) {
        for (const held of await model.episodesOf(chapterId)) scenePages.set(held.sceneId, held);
      }
    }
    // Pages lost from the site (removed by hand, say): the index links to every chapter page, so a missing one of the
    // newest chapters is written again, with the missing scene pages of its chapter.
    const missingChapterPages = repair ? [] : await chapterPagesMissing(order);
    for (const chapterId of missingChapterPages) {
      for (const held of await missingScenePages(await model.episodesOf(chapterId))) {
        scenePages.set(held.sceneId, held);
      }
    }
    // Their navigation is found now, while a chapter file that disagrees with the catalog can still turn the publish
    // into a repair: nothing is written yet.
    const scenePagePlans: ScenePagePlan[] = [];
    for (const pageEpisode of scenePages.values()) {
      const previous = await model.neighbour(pageEpisode, 'previous');
      const next = await model.neighbour(pageEpisode, 'next');
      scenePagePlans.push({
        episode: pageEpisode,
        chapter: model.numberOf(pageEpisode.chapterId),
        previous: previous?.episode,
        next: next?.episode,
      });
    }

    // Chapter files after the scene pages: a scene a chapter file lists has its page, and its neighbours theirs, so a
    // publish that dies before the end leaves either that, or scene JSON files the repair folds back.
    for (const chapterId of repair ? order : model.changedChapters) {
      // A chapter its last scene left (published again into another chapter) goes.
      if (model.numberOf(chapterId) === 0) {
        remove.push(chapterFileOf(chapterId));
        continue;
      }
      const episodes = await model.episodesOf(chapterId);
      const { format } = model.catalog;
      files.set(chapterFileOf(chapterId), toJson({ format, storyId, chapterId, episodes }, 'compact'));
    }

    // Chapter pages: the changed, renumbered and missing ones, and the one that was last when a chapter is added (its
    // "next" link appears) or is last when one goes (its "next" link goes). Nothing site-wide is on a chapter page,
    // so the others are left alone.
    const lastBefore = previousOrder.at(-1);
    const chapterPages = repair
      ? order
      : new Set([
          ...model.changedChapters,
          ...renumbered,
          ...missingChapterPages,
          ...(lastBefore !== undefined && order.length !== previousOrder.length ? [lastBefore] : []),
          ...(order.length < previousOrder.length && order.length > 0 ? [order.at(-1)!] : []),
        ]);
    if (!repair) {
      for (let number = order.length + 1; number <= previousOrder.length; number++) {
        remove.push(`${CHAPTERS}/${number}.html`);
      }
    }
    for (const chapterId of chapterPages) {
      const number = model.numberOf(chapterId);
      if (number === 0) continue;
      files.set(
        `${CHAPTERS}/${number}.html`,
        renderChapterPage(view, { number, episodes: await model.episodesOf(chapterId) }),
      );
    }

    const numbered = model.catalog.chapters.map((chapter, position) => ({ ...chapter, number: position + 1 }));
    const split = Math.max(0, numbered.length - indexChapters);
    const shown: Array<{ number: number; episodes: readonly ManifestEpisode[] }> = [];
    for (const chapter of numbered.slice(split).reverse()) {
      shown.push({ number: chapter.number, episodes: await model.episodesOf(chapter.chapterId) });
    }
    const siteWide = new Map<string, string>([
      ['style.css', renderStyle()],
      ['index.html', renderIndex(view, shown, numbered.slice(0, split).reverse(), indexEpisodes)],
      ...(model.storyBehind
        ? []
        : ([
            ['characters.html', renderCharacters(view)],
            ['threads.html', renderThreads(view)],
          ] as const)),
      ['feed.atom', renderFeed(view, await model.newest(feedEntries), baseUrl)],
    ]);
    if ((repair || model.storyChanged) && !model.storyBehind) {
      const storyFile = { format: model.catalog.format, storyId, story: model.storySnapshot() };
      siteWide.set(STORY_FILE, toJson(storyFile, 'compact'));
    }
    // Known by their hashes: a changed file is written without being read back, an unchanged one left alone (if it
    // is still there). A repair trusts no hash and compares.
    const hashes = model.catalog.fileHashes;
    const written = new Set<string>();
    for (const [relative, content] of siteWide) {
      const bytes = Buffer.from(content, 'utf8');
      const hash = createHash('sha256').update(bytes).digest('hex');
      const unchanged =
        !repair &&
        hashes[relative] === hash &&
        (await stat(path.join(directory, relative)).then(
          (info) => info.size === bytes.byteLength,
          () => false,
        ));
      if (!unchanged) {
        files.set(relative, bytes);
        if (!repair && Object.hasOwn(hashes, relative)) written.add(relative);
      }
      hashes[relative] = hash;
    }
    // Last: the catalog names the files above as written.
    const catalogText = toJson(model.catalog, 'compact');
    if (catalogText !== site.catalogText) {
      files.set(MANIFEST_FILE, catalogText);
      if (site.catalogText !== undefined) written.add(MANIFEST_FILE);
    }

    if (repair) {
      // A chapter page past the last chapter, or the file of a chapter the site no longer has, would mislead.
      for (const name of repair.whole.chapterPageNames) {
        const match = /^(\d+)\.html$/.exec(name);
        if (match && Number(match[1]) > order.length) remove.push(`${CHAPTERS}/${name}`);
      }
      const chapterFiles = new Set(order.map(chapterFileOf));
      for (const name of repair.whole.chapterFileNames) {
        if (!chapterFiles.has(`${EPISODES}/${name}`)) remove.push(`${EPISODES}/${name}`);
      }
    }
    return { view, scenePages: scenePagePlans, files, remove, knownChanged: written };
  }

  /**
   * Writes what `plan` names, in its order: the scene pages first, rendered and written `scenePagesPerWrite` at a
   * time (each round's renames done before the next round renders), then the other files, then the removals. A
   * scene whose JSON cannot be read keeps the page it has. `inHand` holds scenes not to read back.
   */
  async function writePlan(plan: PublishPlan, inHand: ReadonlyMap<string, Scene>): Promise<void> {
    for (let start = 0; start < plan.scenePages.length; start += scenePagesPerWrite) {
      const round: FileWrite[] = [];
      for (const page of plan.scenePages.slice(start, start + scenePagesPerWrite)) {
        const scene = inHand.get(page.episode.sceneId) ?? (await readScene(page.episode));
        if (!scene) continue;
        round.push({
          file: path.join(scenesFolder, `${slugOfEpisode(page.episode)}.html`),
          data: renderScenePage(plan.view, scene, page.episode, page),
        });
      }
      await writeFilesAtomic(round);
    }
    await writeFilesAtomic(
      [...plan.files].map(([relative, data]) => ({
        file: path.join(directory, relative),
        data,
        knownToDiffer: plan.knownChanged.has(relative),
      })),
    );
    for (const relative of plan.remove) await rm(path.join(directory, relative), { force: true });
  }

  /** The scenes that the publishes which left `markers` behind were writing (a batch names none). */
  async function scenesOfMarkers(markers: readonly string[]): Promise<Array<{ sceneId: string; index: number }>> {
    const scenes: Array<{ sceneId: string; index: number }> = [];
    for (const name of markers) {
      const parsed = MarkerSchema.safeParse(await readJson(path.join(directory, name)));
      if (parsed.success) scenes.push(parsed.data);
    }
    return scenes;
  }

  /**
   * Publishes `episodes` with the marker in place: each scene's files as it comes, then the pages once. Should a
   * chapter file turn out to disagree with the catalog, the site is read as a whole and the scenes taken in again.
   */
  async function publishMarked(
    storyId: string,
    episodes: AsyncIterable<ValidEpisode>,
    loaded: Awaited<ReturnType<typeof loadCatalog>>,
    leftBehind: readonly string[] | undefined,
  ): Promise<{ results: PublishResult[]; repaired: boolean }> {
    const results: PublishResult[] = [];
    const published: ManifestEpisode[] = [];
    const inHand = new Map<string, Scene>();
    const before = new Map<string, ManifestEpisode | undefined>();
    let newest: StorySnapshot | undefined;
    let feedKey: string | undefined;
    let site: OpenSite | undefined;
    const repairInstead = async () => {
      site = await openSite(storyId, loaded, newest!, feedKey!, leftBehind ?? []);
      await site.model.updateStory(newest!, '', locatePublished);
      for (const entry of published) await site.model.add(entry);
    };
    for await (const episode of episodes) {
      const { scene } = episode;
      if (scene.storyId !== storyId) {
        throw new ValidationError(
          `Cannot publish scenes of two stories together: "${storyId}" and "${scene.storyId}"`,
          {
            problems: [{ path: 'scene.storyId', message: `must be "${storyId}"` }],
          },
        );
      }
      await writeSceneFiles(episode);
      const snapshot = snapshotOf(episode.story);
      if (!newest || snapshot.version >= newest.version) newest = snapshot;
      feedKey ??= feedKeyOf(episode.story);
      site ??= await openSite(storyId, loaded, snapshot, feedKey, leftBehind);
      let entry: ManifestEpisode;
      try {
        entry = await absorb(site.model, episode, before);
      } catch (error) {
        if (!(error instanceof SiteOutOfStep) || site.repair) throw error;
        await repairInstead();
        entry = await absorb(site!.model, episode, before);
      }
      published.push(entry);
      // A single scene is kept to render its page; a batch's scenes are read back, so it holds none in memory.
      if (results.length === 0) inHand.set(scene.id, scene);
      else inHand.clear();
      const slug = slugOf(scene.index, scene.id);
      const ids = [`${SCENES}/${slug}.json`, `${SCENES}/${slug}.html`];
      if (entry.image) ids.push(`${IMAGES}/${slug}.${entry.image.extension}`);
      results.push({ target, url: publicUrl(`${SCENES}/${slug}.html`), ids: ids.sort() });
    }
    if (!site) return { results, repaired: false };
    let plan: PublishPlan;
    try {
      plan = await planPages(site, published);
    } catch (error) {
      if (!(error instanceof SiteOutOfStep) || site.repair) throw error;
      await repairInstead();
      plan = await planPages(site!, published);
    }
    await writePlan(plan, inHand);
    return { results, repaired: site.repair !== undefined };
  }

  /** Leaves a request for the next publish to repair the site. */
  async function requestRepair(): Promise<void> {
    const handle = await open(path.join(directory, `.needs-repair.${randomBytes(6).toString('hex')}`), 'wx');
    await handle.close();
  }

  /** Publishes `episodes` (of story `storyId`) under the directory lock, between a marker's creation and removal. */
  async function publishLocked(
    storyId: string,
    episodes: AsyncIterable<ValidEpisode>,
    markerContent: z.infer<typeof MarkerSchema> | null,
  ): Promise<PublishResult[]> {
    for (const folder of [scenesFolder, imagesFolder, chaptersFolder, episodesFolder]) {
      await mkdir(folder, { recursive: true });
    }
    // The top level is small whatever the story's length: the only folder a publish lists, unless it repairs.
    const topLevel = await listFolder(directory, clock, staleMs);
    const leftBehind = topLevel.filter((name) => MARKER_PATTERN.test(name));
    const requests = topLevel.filter((name) => REPAIR_REQUEST_PATTERN.test(name));
    // Written before anything is read, so a publish that overlaps this one in another process sees it.
    const marker = path.join(directory, `.publishing.${WRITER}.${randomBytes(6).toString('hex')}`);
    shared.inFlightTempFiles.add(marker);
    let started = false;
    let keepMarker = false;
    try {
      const handle = await open(marker, 'wx');
      try {
        await handle.writeFile(toJson(markerContent));
        await handle.datasync();
      } finally {
        await handle.close();
      }
      const loaded = await loadCatalog(storyId);
      started = true;
      const repair = leftBehind.length > 0 || requests.length > 0 || !loaded.catalog || !isCoherent(loaded.catalog);
      const { results, repaired } = await publishMarked(storyId, episodes, loaded, repair ? leftBehind : undefined);
      if (repaired) {
        for (const name of requests) await rm(path.join(directory, name), { force: true });
        for (const name of leftBehind) {
          if (await isAbandoned(directory, name, MARKER_PATTERN.exec(name)![1]!, clock, staleMs)) {
            await rm(path.join(directory, name), { force: true });
          }
        }
      }
      // Another publish in progress now overlapped this one: either may have overwritten what the other wrote of
      // the catalog, so the next publish repairs.
      const others = (await readdir(directory)).filter(
        (name) => MARKER_PATTERN.test(name) && path.join(directory, name) !== marker,
      );
      if (others.length > 0) await requestRepair();
      return results;
    } catch (error) {
      if (started) {
        // Half a publish is repaired by the next one; the marker itself asks for that if no request can be left.
        await requestRepair().catch(() => {
          keepMarker = true;
        });
      }
      throw error;
    } finally {
      if (!keepMarker) await rm(marker, { force: true }).catch(() => undefined);
      shared.inFlightTempFiles.delete(marker);
    }
  }

  /**
   * Runs `task` under the lock of the folder's real path (one folder reached through a symlink or two spellings is
   * still one folder), reporting file-system failures as `StorageError`.
   */
  async function locked<T>(task: () => Promise<T>): Promise<T> {
    const systemErrors = (error: unknown) => (isSystemError(error) ? storageError(error, directory) : error);
    let key: string;
    try {
      await mkdir(directory, { recursive: true });
      key = await realpath(directory);
    } catch (error) {
      throw systemErrors(error);
    }
    return withDirectoryLock(key, async () => {
      try {
        return await task();
      } catch (error) {
        throw systemErrors(error);
      }
    });
  }

  return {
    specificationVersion: 'v1',
    provider: 'filesystem',
    target,
    capabilities,
    directory,
    async publish(episode: Episode, publishOptions = {}): Promise<PublishResult> {
      throwIfAborted(publishOptions.signal);
      const valid = validateEpisode(episode);
      return locked(async () => {
        throwIfAborted(publishOptions.signal);
        const single = (async function* () {
          yield valid;
        })();
        const [result] = await publishLocked(valid.scene.storyId, single, {
          sceneId: valid.scene.id,
          index: valid.scene.index,
        });
        return result!;
      });
    },
    async publishMany(episodes, publishOptions = {}): Promise<PublishResult[]> {
      throwIfAborted(publishOptions.signal);
      const iterator = (
        Symbol.asyncIterator in episodes ? episodes[Symbol.asyncIterator]() : episodes[Symbol.iterator]()
      ) as AsyncIterator<Episode> | Iterator<Episode>;
      const first = await iterator.next();
      if (first.done) return [];
      const firstValid = validateEpisode(first.value);
      return locked(async () => {
        throwIfAborted(publishOptions.signal);
        const all = (async function* () {
          yield firstValid;
          for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
            throwIfAborted(publishOptions.signal);
            yield validateEpisode(next.value);
          }
        })();
        return publishLocked(firstValid.scene.storyId, all, null);
      });
    },
  };
}

/**
 * The files a filesystem site holds for one scene (its JSON, its page and its picture), as paths relative to the
 * site folder, sorted. Empty when the scene was never published there, or belongs to another story.
 *
 * @example
 * ```ts
 * import { readSitePublication } from 'storyloom';
 * const files = await readSitePublication('site', 'lighthouse', 'lighthouse-s0');
 * // ['images/000000-lighthouse-s0.png', 'scenes/000000-lighthouse-s0.html', 'scenes/000000-lighthouse-s0.json']
 * ```
 */
export async function readSitePublication(directory: string, storyId: string, sceneId: string): Promise<string[]> {
  if (!IdSchema.safeParse(sceneId).success || !IdSchema.safeParse(storyId).success) return [];
  const fileId = fileIdOf(sceneId);
  const root = path.resolve(directory);
  const found: string[] = [];
  let sceneJson: string | undefined;
  for (const folder of [SCENES, IMAGES]) {
    const names = await readdir(path.join(root, folder)).catch(() => [] as string[]);
    for (const name of names) {
      const match = SCENE_FILE_PATTERN.exec(name);
      if (!match || match[2] !== fileId) continue;
      const isSceneFile = folder === SCENES && (match[3] === 'json' || match[3] === 'html');
      const isImage = folder === IMAGES && IMAGE_EXTENSIONS.includes(match[3] as ImageExtension);
      if (!isSceneFile && !isImage) continue;
      found.push(`${folder}/${name}`);
      if (folder === SCENES && match[3] === 'json') sceneJson = path.join(root, folder, name);
    }
  }
  if (!sceneJson) return [];
  const scene = SceneSchema.safeParse(await readJson(sceneJson));
  if (!scene.success || scene.data.storyId !== storyId || scene.data.id !== sceneId) return [];
  return found.sort();
}
