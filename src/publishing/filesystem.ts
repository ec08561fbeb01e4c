/**
 * The filesystem `Publisher`, the embedded default of publishing: it writes a static reader site (an index of
 * episodes, a page per scene with its picture, a character roster, a plot-thread timeline, scene JSON and an Atom
 * feed) that any web server, bucket or `file://` browser can show, with no script and no external resource.
 *
 * How it stays correct:
 *
 * - **Idempotent per scene.** Every path is derived from the scene's index and id; every byte is derived from the
 *   scene, the story state and the options (dates come from `scene.createdAt`, never the wall clock), so publishing
 *   the same scene twice leaves byte-identical files. A file whose content is unchanged is not rewritten.
 * - **Derived, self-healing manifest.** `episodes.json` lists the published scenes; the story pages are regenerated
 *   from it on every publish. A scene JSON file the manifest does not know (a crash between the two writes, another
 *   process) is folded back in on the next publish, so re-publishing after a crash fixes everything.
 * - **Crash-safe writes.** Each file is written to a temporary file beside it and renamed into place, so a reader or a
 *   crash never sees half a file. Temporary files left by a dead writer are removed on the next publish.
 * - **Serialized per directory.** Publishes into one directory run one at a time within a process (a lock keyed by
 *   the resolved directory, shared by every copy of storyloom loaded in the process).
 * - **No injection.** Model and audience text only ever reaches a page through `escapeMarkup` (HTML and XML text and
 *   attributes), URLs are built only from validated ids, no script is emitted, and every page carries a
 *   Content-Security-Policy that forbids scripts anyway. SVG pictures with scripts or external references are refused.
 *
 * Navigation: each scene page holds static previous/next links. When a scene is published, the pages of its
 * neighbours are regenerated too, so the previous scene's "next" link appears as soon as the next scene exists. Static
 * links work without JavaScript, in feed readers and from `file://`, where fetching `episodes.json` would be blocked.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
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
  toProblems,
  ValidationError,
  type ValidationProblem,
} from '../core/errors.js';
import {
  CharacterStateSchema,
  IdSchema,
  PlotThreadSchema,
  type Scene,
  SceneSchema,
  type StoryState,
  StoryStateSchema,
} from '../state/schema.js';
import type { Episode, EpisodeImage, Publisher, PublisherCapabilities, PublishResult } from './publisher.js';

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
  /** A temporary file older than this is stale even when its writer may still run (a writer on another host). */
  staleTempFileMs?: number;
  /** Compared with file times to find stale temporary files. Default: the system clock. */
  clock?: Clock;
}

/** The story-level data kept in `episodes.json`: what the roster and the timeline are built from. */
const StorySnapshotSchema = z.object({
  version: z.number().int().min(0),
  title: z.string(),
  premise: z.string(),
  genre: z.string(),
  tone: z.string(),
  characters: z.record(IdSchema, CharacterStateSchema),
  plotThreads: z.array(PlotThreadSchema),
});
type StorySnapshot = z.infer<typeof StorySnapshotSchema>;

const IMAGE_TYPES = {
  'image/png': 'png',
  'image/svg+xml': 'svg',
  'image/jpeg': 'jpg',
  'image/webp': 'webp',
} as const;
type ImageExtension = (typeof IMAGE_TYPES)[keyof typeof IMAGE_TYPES];
const IMAGE_EXTENSIONS: readonly ImageExtension[] = Object.values(IMAGE_TYPES);

/** One published scene as the manifest lists it: everything the story pages need without reading the scene. */
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
    .object({ extension: z.enum(IMAGE_EXTENSIONS as [ImageExtension, ...ImageExtension[]]), alt: z.string() })
    .nullable(),
});
type ManifestEpisode = z.infer<typeof ManifestEpisodeSchema>;

const MANIFEST_FORMAT = 'storyloom-site/1';
const ManifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  storyId: IdSchema,
  story: StorySnapshotSchema,
  episodes: z.array(ManifestEpisodeSchema),
});
type Manifest = z.infer<typeof ManifestSchema>;

const MANIFEST_FILE = 'episodes.json';
const SCENES = 'scenes';
const CHAPTERS = 'chapters';
const IMAGES = 'images';
const TEMP_SUFFIX = '.tmp';
/** `.<file name>.<pid>.<random hex>.tmp`: the writer's pid tells whether the file is abandoned. */
const TEMP_PATTERN = /^\..+\.(\d+)\.[0-9a-f]+\.tmp$/;
const SCENE_FILE_PATTERN = /^(\d+)-(.+)\.(json|html|png|svg|jpg|webp)$/;

/** State shared by every copy of storyloom in the process, so two copies never write one folder at once. */
interface SharedState {
  locks: Map<string, Promise<void>>;
  inFlightTempFiles: Set<string>;
}
const SHARED_KEY = Symbol.for('storyloom.filesystemPublisher');
const globalRecord = globalThis as Record<symbol, unknown>;
const shared: SharedState = (globalRecord[SHARED_KEY] as SharedState | undefined) ?? {
  locks: new Map<string, Promise<void>>(),
  inFlightTempFiles: new Set<string>(),
};
globalRecord[SHARED_KEY] = shared;

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

/** Characters HTML and XML 1.0 both refuse in text: C0/C1 controls except tab, LF and CR, and U+FFFE/U+FFFF. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters HTML and XML 1.0 cannot hold
const FORBIDDEN_CHARACTERS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\uFFFE\uFFFF]/g;
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

/** An SVG that a browser opening it directly could run code from, or that loads other resources. */
function unsafeSvgReason(svg: string): string | undefined {
  const lower = svg.toLowerCase();
  if (lower.includes('<script')) return 'contains a <script> element';
  if (lower.includes('<foreignobject')) return 'contains a <foreignObject> element';
  if (/\son[a-z]+\s*=/.test(lower)) return 'contains an event-handler attribute';
  if (/javascript:|data:text\/html/.test(lower)) return 'contains a script URL';
  if (/(?:href|src)\s*=\s*["']\s*(?:https?:)?\/\//.test(lower)) return 'references an external resource';
  if (lower.includes('<!entity')) return 'declares entities';
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Paths. Ids match IdSchema (letters, digits and `._:-`); `:` is not allowed in Windows file names, so it becomes `~`,
// which no id contains: the mapping is reversible and the slug needs no URL encoding.

function fileIdOf(sceneId: string): string {
  return sceneId.replaceAll(':', '~');
}

function slugOf(index: number, sceneId: string): string {
  return `${String(index).padStart(6, '0')}-${fileIdOf(sceneId)}`;
}

const slugOfEpisode = (episode: { index: number; sceneId: string }) => slugOf(episode.index, episode.sceneId);

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
 * Writes `data` to `file` through a temporary file and a rename, so the file is always either old or new, never
 * half-written. Leaves a file that already holds exactly `data` alone. Returns whether it wrote.
 */
async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<boolean> {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
  const existing = await readFile(file).catch(() => undefined);
  if (existing?.equals(bytes)) return false;
  const temp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`,
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
    await rename(temp, file);
    return true;
  } catch (error) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw storageError(error, file);
  } finally {
    shared.inFlightTempFiles.delete(temp);
  }
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM';
  }
}

/** Removes the temporary files of writers that died before renaming them. */
async function removeStaleTempFiles(folder: string, clock: Clock, staleMs: number): Promise<void> {
  const names = await readdir(folder).catch(() => [] as string[]);
  for (const name of names) {
    const match = TEMP_PATTERN.exec(name);
    if (!match) continue;
    const file = path.join(folder, name);
    if (shared.inFlightTempFiles.has(file)) continue;
    const pid = Number(match[1]);
    let stale = pid === process.pid || !isProcessAlive(pid);
    if (!stale) {
      const info = await stat(file).catch(() => undefined);
      stale = info !== undefined && clock.now() - info.mtimeMs > staleMs;
    }
    if (stale) await rm(file, { force: true }).catch(() => undefined);
  }
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
function toJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2).replace(/[<>&\u2028\u2029]/g, (character) => JSON_UNSAFE[character]!)}\n`;
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

/** The first `limit` characters of `text`, cut at a word where possible, never inside a surrogate pair. */
function excerptOf(text: string, limit: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  const characters = Array.from(flat);
  if (characters.length <= limit) return flat;
  const cut = characters.slice(0, limit).join('');
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
// Site model: the manifest in the order readers see it.

interface SiteContext {
  manifest: Manifest;
  siteTitle: string;
  language: string;
  /** Episodes in story order, oldest first. */
  episodes: ManifestEpisode[];
  /** sceneId → position in `episodes`. */
  positions: Map<string, number>;
  /** chapterId → 1-based chapter number, by first appearance. */
  chapterNumbers: Map<string, number>;
}

function siteContext(manifest: Manifest, siteTitle: string | undefined, language: string): SiteContext {
  const episodes = [...manifest.episodes].sort(
    (a, b) => a.index - b.index || (a.sceneId < b.sceneId ? -1 : a.sceneId > b.sceneId ? 1 : 0),
  );
  const positions = new Map(episodes.map((episode, position) => [episode.sceneId, position]));
  const chapterNumbers = new Map<string, number>();
  for (const episode of episodes) {
    if (!chapterNumbers.has(episode.chapterId)) chapterNumbers.set(episode.chapterId, chapterNumbers.size + 1);
  }
  return {
    manifest,
    siteTitle: siteTitle ?? manifest.story.title,
    language,
    episodes,
    positions,
    chapterNumbers,
  };
}

function episodeLabel(episode: ManifestEpisode): string {
  return `Episode ${episode.index + 1}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Pages.

const CONTENT_SECURITY_POLICY =
  "default-src 'none'; img-src 'self' data:; style-src 'self'; base-uri 'none'; form-action 'none'";

type Section = 'episodes' | 'characters' | 'threads' | 'scene' | 'chapter';

function layout(
  site: SiteContext,
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
      : episodeCount(site.episodes.length);
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

function sceneHref(episode: ManifestEpisode, root: '' | '../'): string {
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

/** The chapters with their episodes (oldest first), newest chapter first. */
function chaptersOf(site: SiteContext): Array<{ chapterId: string; number: number; episodes: ManifestEpisode[] }> {
  const byChapter = new Map<string, ManifestEpisode[]>();
  for (const episode of site.episodes) {
    const list = byChapter.get(episode.chapterId) ?? [];
    list.push(episode);
    byChapter.set(episode.chapterId, list);
  }
  return [...site.chapterNumbers.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([chapterId, number]) => ({ chapterId, number, episodes: byChapter.get(chapterId) ?? [] }));
}

/** `chapters/<number>.html`: one chapter's episodes in reading order, with the chapters before and after it. */
function renderChapterPage(site: SiteContext, chapter: { number: number; episodes: ManifestEpisode[] }): string {
  const total = site.chapterNumbers.size;
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
    title: `Chapter ${number} · ${site.siteTitle}`,
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

function paragraphsOf(text: string): string {
  return text
    .split(/\r?\n\s*\r?\n/)
    .map((paragraph) => paragraph.trim())
    .filter((paragraph) => paragraph.length > 0)
    .map((paragraph) => `<p>${paragraph.split(/\r?\n/).map(esc).join('<br>\n')}</p>`)
    .join('\n');
}

function renderScenePage(site: SiteContext, scene: Scene, episode: ManifestEpisode): string {
  const position = site.positions.get(scene.id) ?? 0;
  const previous = site.episodes[position - 1];
  const next = site.episodes[position + 1];
  const chapter = site.chapterNumbers.get(episode.chapterId) ?? 1;
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
  const navLink = (target: ManifestEpisode | undefined, rel: 'prev' | 'next') => {
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
${picture ? `<figure class="scene-picture"><img src="${esc(picture)}" alt="${esc(episode.image?.alt ?? '')}"></figure>` : ''}
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
    title: `${scene.title} · ${site.siteTitle}`,
    description: episode.excerpt,
    root: '../',
    section: 'scene',
    body,
    head: `<link rel="alternate" type="application/json" href="${esc(slugOfEpisode(episode))}.json">\n`,
  });
}

function renderIndex(site: SiteContext, indexChapters: number): string {
  const { story } = site.manifest;
  const first = site.episodes[0];
  const latest = site.episodes.at(-1);
  const chapters = chaptersOf(site);
  const shown = chapters.slice(0, indexChapters);
  const earlier = chapters.slice(indexChapters);
  const sections = shown
    .map(({ number, episodes }) => {
      const newestFirst = [...episodes].reverse();
      return `<section class="chapter" id="chapter-${number}" aria-labelledby="chapter-${number}-title">
<h2 id="chapter-${number}-title"><a href="${chapterHref(number, '')}">Chapter ${number}</a> <span class="count">${episodeCount(episodes.length)}</span></h2>
<ol class="cards">
${newestFirst.map((episode) => episodeCard(episode, '')).join('\n')}
</ol>
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
  .map(({ number, episodes }) => {
    const opening = episodes[0];
    const from = opening
      ? ` · from <time datetime="${esc(isoTime(opening.createdAt))}">${displayDate(opening.createdAt)}</time> · <span dir="auto">${esc(opening.title)}</span>`
      : '';
    return `<li id="chapter-${number}"><a href="${chapterHref(number, '')}">Chapter ${number}</a> <span class="count">${episodeCount(episodes.length)}${from}</span></li>`;
  })
  .join('\n')}
</ol>
</section>`;
  const actions =
    first && latest
      ? `<p class="actions"><a class="button primary" href="${sceneHref(latest, '')}">Read the latest episode</a> <a class="button" href="${sceneHref(first, '')}">Start from the beginning</a></p>`
      : '';
  const body = `<section class="hero">
<p class="eyebrow">${esc(story.genre)} · ${esc(story.tone)}</p>
<h1 dir="auto">${esc(site.siteTitle)}</h1>
<p class="lede" dir="auto">${esc(story.premise)}</p>
${actions}
</section>
${sections}${archive ? `\n${archive}` : ''}`;
  return layout(site, {
    title: site.siteTitle,
    description: excerptOf(story.premise, 200),
    root: '',
    section: 'episodes',
    body,
  });
}

function sceneLink(site: SiteContext, sceneId: string | null, root: '' | '../'): string | undefined {
  if (sceneId === null) return undefined;
  const position = site.positions.get(sceneId);
  const episode = position === undefined ? undefined : site.episodes[position];
  if (!episode) return `<span class="muted">${esc(sceneId)}</span>`;
  return `<a href="${sceneHref(episode, root)}">${episodeLabel(episode)}</a>`;
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

function renderCharacters(site: SiteContext): string {
  const { characters } = site.manifest.story;
  const list = Object.values(characters).sort(
    (a, b) => ROLE_ORDER[a.role] - ROLE_ORDER[b.role] || a.name.localeCompare(b.name, 'en') || (a.id < b.id ? -1 : 1),
  );
  const nameOf = (id: string) => characters[id]?.name;
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
      const seen = [
        character.introducedIn ? `First seen in ${sceneLink(site, character.introducedIn, '')}` : '',
        character.lastAppearance ? `last seen in ${sceneLink(site, character.lastAppearance, '')}` : '',
      ].filter(Boolean);
      return `<section class="character status-${character.status}" id="character-${esc(character.id)}">
<header class="character-head"><h2 dir="auto">${esc(character.name)}</h2><span class="badge role">${character.role}</span><span class="badge status status-${character.status}">${character.status}</span></header>
${aliases}
${character.description ? `<p dir="auto">${esc(character.description)}</p>` : ''}
<p class="arc"><span class="trait-name">Arc</span>${bar(character.arcProgress, `arc progress ${twoDecimals(character.arcProgress)}`)}<span class="value">${Math.round(character.arcProgress * 100)}%</span></p>
${traitList}
${relationshipTable}
${seen.length ? `<p class="muted small">${seen.join('; ')}.</p>` : ''}
</section>`;
    })
    .join('\n');
  const body = `<section class="page-intro">
<h1>Characters</h1>
<p class="lede">Who is who in <cite dir="auto">${esc(site.manifest.story.title)}</cite>, as of ${site.episodes.length ? episodeLabel(site.episodes.at(-1)!).toLowerCase() : 'the start'}.</p>
</section>
<div class="roster">
${cards || '<p class="muted">No characters yet.</p>'}
</div>`;
  return layout(site, {
    title: `Characters · ${site.siteTitle}`,
    description: `The characters of ${site.manifest.story.title}.`,
    root: '',
    section: 'characters',
    body,
  });
}

const STATUS_ORDER = { advancing: 0, open: 1, dormant: 2, resolved: 3 } as const;

function renderThreads(site: SiteContext): string {
  const count = Math.max(1, site.episodes.length);
  const positionOf = (sceneId: string | null) =>
    sceneId === null ? undefined : (site.positions.get(sceneId) as number | undefined);
  const threads = [...site.manifest.story.plotThreads].sort(
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
      const links = [
        thread.openedIn ? `Opened in ${sceneLink(site, thread.openedIn, '')}` : '',
        thread.lastAdvancedIn ? `advanced in ${sceneLink(site, thread.lastAdvancedIn, '')}` : '',
        thread.resolvedIn ? `resolved in ${sceneLink(site, thread.resolvedIn, '')}` : '',
      ].filter(Boolean);
      const setups = thread.setups.length
        ? `<details><summary>${thread.setups.length} ${thread.setups.length === 1 ? 'promise' : 'promises'} still to keep</summary><ul>${thread.setups
            .map((setup) => `<li dir="auto">${esc(setup)}</li>`)
            .join('')}</ul></details>`
        : '';
      return `<li class="thread status-${thread.status}" id="thread-${esc(thread.id)}">
<div class="thread-head"><span class="badge status status-${thread.status}">${thread.status}</span><h2 dir="auto">${esc(thread.title)}</h2><span class="importance"><span class="importance-label">importance</span>${bar(thread.importance, `importance ${twoDecimals(thread.importance)}`)}</span></div>
${thread.summary ? `<p dir="auto">${esc(thread.summary)}</p>` : ''}
<div class="track" role="img" aria-label="from episode ${start + 1} to episode ${end + 1}"><span class="span l-${left} w-${width}"></span></div>
${links.length ? `<p class="muted small">${links.join(' · ')}.</p>` : ''}
${setups}
</li>`;
    })
    .join('\n');
  const first = site.episodes[0];
  const last = site.episodes.at(-1);
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
    title: `Plot threads · ${site.siteTitle}`,
    description: `The plot threads of ${site.manifest.story.title}.`,
    root: '',
    section: 'threads',
    body,
  });
}

function renderFeed(site: SiteContext, baseUrl: string | undefined, entries: number): string {
  const { manifest } = site;
  const newest = [...site.episodes].reverse().slice(0, entries);
  // The newest scene's time, not the wall clock: regenerating the feed does not change it.
  const updated =
    newest
      .map((episode) => isoTime(episode.createdAt))
      .sort()
      .at(-1) ?? '1970-01-01T00:00:00.000Z';
  const base = baseUrl ? ` xml:base="${esc(baseUrl)}"` : '';
  const entryXml = newest
    .map((episode) => {
      const time = isoTime(episode.createdAt);
      return `  <entry>
    <id>urn:storyloom:scene:${esc(manifest.storyId)}:${esc(episode.sceneId)}</id>
    <title type="text">${esc(episode.title)}</title>
    <updated>${time}</updated>
    <published>${time}</published>
    <link rel="alternate" type="text/html" href="${sceneHref(episode, '')}"/>
    <summary type="text">${esc(episode.excerpt)}</summary>
  </entry>`;
    })
    .join('\n');
  return `<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"${base}>
  <id>urn:storyloom:story:${esc(manifest.storyId)}</id>
  <title type="text">${esc(site.siteTitle)}</title>
  <subtitle type="text">${esc(manifest.story.premise)}</subtitle>
  <updated>${updated}</updated>
  <author><name>${esc(site.siteTitle)}</name></author>
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
  if (options.language !== undefined && !/^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(options.language)) {
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
    options.staleTempFileMs !== undefined &&
    !(Number.isFinite(options.staleTempFileMs) && options.staleTempFileMs >= 0)
  ) {
    problems.push({ path: 'staleTempFileMs', message: 'must be a non-negative number of milliseconds' });
  }
  return problems;
}

interface ValidEpisode {
  story: StoryState;
  scene: Scene;
  image: (EpisodeImage & { extension: ImageExtension }) | undefined;
}

function validateEpisode(episode: Episode): ValidEpisode {
  const problems: ValidationProblem[] = [];
  const scene = SceneSchema.safeParse(episode?.scene);
  if (!scene.success) problems.push(...toProblems(scene.error.issues, 'scene'));
  const story = StoryStateSchema.safeParse(episode?.story);
  if (!story.success) problems.push(...toProblems(story.error.issues, 'story'));
  if (scene.success && story.success && scene.data.storyId !== story.data.storyId) {
    problems.push({ path: 'scene.storyId', message: `must equal story.storyId "${story.data.storyId}"` });
  }
  let image: ValidEpisode['image'];
  if (episode?.image !== undefined) {
    const { data, mediaType, alt } = episode.image;
    const extension = IMAGE_TYPES[mediaType as keyof typeof IMAGE_TYPES] as ImageExtension | undefined;
    if (!(data instanceof Uint8Array) || data.byteLength === 0) {
      problems.push({ path: 'image.data', message: 'must be non-empty bytes' });
    }
    if (!extension) {
      problems.push({ path: 'image.mediaType', message: `must be one of ${Object.keys(IMAGE_TYPES).join(', ')}` });
    } else if (extension === 'svg' && data instanceof Uint8Array) {
      const reason = unsafeSvgReason(Buffer.from(data).toString('utf8'));
      if (reason) problems.push({ path: 'image.data', message: `the SVG ${reason}` });
    }
    if (typeof alt !== 'string') problems.push({ path: 'image.alt', message: 'must be a string' });
    if (extension) image = { ...episode.image, extension };
  }
  if (problems.length > 0 || !scene.success || !story.success) {
    throw new ValidationError(
      `Cannot publish the episode: ${problems.map((p) => `${p.path} ${p.message}`).join('; ')}`,
      {
        problems,
      },
    );
  }
  return { story: story.data, scene: scene.data, image };
}

function snapshotOf(story: StoryState): StorySnapshot {
  return {
    version: story.version,
    title: story.bible.title,
    premise: story.bible.premise,
    genre: story.bible.genre,
    tone: story.bible.tone,
    characters: story.characters,
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
    cast: scene.characters.map((id) => ({ id, name: characters[id]?.name ?? id })),
    image,
  };
}

/** The picture already on disk for `slug`, if any. */
function existingImage(imageNames: readonly string[], slug: string): ImageExtension | undefined {
  return IMAGE_EXTENSIONS.find((extension) => imageNames.includes(`${slug}.${extension}`));
}

/**
 * A publisher that writes a static reader site into `directory`: `index.html` (the newest chapters episode by
 * episode, newest first, and a list of the earlier ones), `chapters/<number>.html` per chapter,
 * `scenes/<index>-<scene id>.html` and `.json` per scene, `images/` for pictures, `characters.html`,
 * `threads.html`, `feed.atom`, `style.css` and the `episodes.json` manifest. Publishing is idempotent per scene,
 * crash-safe and escapes all model and audience text. One folder holds one story.
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
  const clock = options.clock ?? systemClock;
  const staleMs = options.staleTempFileMs ?? 10 * 60_000;
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

  async function loadManifest(storyId: string): Promise<Manifest | undefined> {
    const parsed = ManifestSchema.safeParse(await readJson(path.join(directory, MANIFEST_FILE)));
    // An unreadable manifest is rebuilt from the scene files below; it is derived data.
    if (!parsed.success) return undefined;
    if (parsed.data.storyId !== storyId) {
      throw new ConflictError(
        `The folder already holds the site of story "${parsed.data.storyId}"; publish story "${storyId}" into another folder`,
        { isRetryable: false },
      );
    }
    return parsed.data;
  }

  /** Adds the scene files the manifest does not list: left by a crash between writes, or by another process. */
  async function reconcile(manifest: Manifest, imageNames: readonly string[]): Promise<void> {
    const known = new Set(manifest.episodes.map(slugOfEpisode));
    const names = await readdir(scenesFolder).catch(() => [] as string[]);
    for (const name of names.sort()) {
      const match = SCENE_FILE_PATTERN.exec(name);
      if (match?.[3] !== 'json' || known.has(`${match[1]}-${match[2]}`)) continue;
      const scene = SceneSchema.safeParse(await readJson(path.join(scenesFolder, name)));
      if (!scene.success || scene.data.storyId !== manifest.storyId) continue;
      const slug = slugOf(scene.data.index, scene.data.id);
      if (`${slug}.json` !== name) continue;
      const extension = existingImage(imageNames, slug);
      const image = extension ? { extension, alt: scene.data.imagePrompt || scene.data.title } : null;
      manifest.episodes.push(entryOf(scene.data, manifest.story.characters, image));
      known.add(slug);
    }
  }

  async function readScene(episode: ManifestEpisode): Promise<Scene | undefined> {
    const parsed = SceneSchema.safeParse(await readJson(path.join(scenesFolder, `${slugOfEpisode(episode)}.json`)));
    return parsed.success && parsed.data.id === episode.sceneId ? parsed.data : undefined;
  }

  async function publishLocked(episode: ValidEpisode): Promise<PublishResult> {
    const { scene, story, image } = episode;
    const slug = slugOf(scene.index, scene.id);
    await mkdir(scenesFolder, { recursive: true });
    await mkdir(imagesFolder, { recursive: true });
    await mkdir(chaptersFolder, { recursive: true });
    for (const folder of [directory, scenesFolder, imagesFolder, chaptersFolder]) {
      await removeStaleTempFiles(folder, clock, staleMs);
    }

    const previousManifest = await loadManifest(scene.storyId);
    const manifest: Manifest = previousManifest ?? {
      format: MANIFEST_FORMAT,
      storyId: scene.storyId,
      story: snapshotOf(story),
      episodes: [],
    };
    // An older state (a retried publish of an earlier scene) never rolls the roster back.
    if (story.version >= manifest.story.version) manifest.story = snapshotOf(story);

    const written: string[] = [];
    const sceneJson = `${SCENES}/${slug}.json`;
    await writeFileAtomic(path.join(directory, sceneJson), toJson(scene));
    written.push(sceneJson);

    let imageNames = await readdir(imagesFolder).catch(() => [] as string[]);
    let imageEntry: ManifestEpisode['image'] = null;
    const previousEntry = manifest.episodes.find((entry) => entry.sceneId === scene.id);
    if (image) {
      const imageFile = `${IMAGES}/${slug}.${image.extension}`;
      await writeFileAtomic(path.join(directory, imageFile), image.data);
      // One picture per scene: a picture of another type from an earlier publish goes.
      for (const extension of IMAGE_EXTENSIONS) {
        if (extension !== image.extension && imageNames.includes(`${slug}.${extension}`)) {
          await rm(path.join(imagesFolder, `${slug}.${extension}`), { force: true });
        }
      }
      imageNames = await readdir(imagesFolder).catch(() => [] as string[]);
      imageEntry = { extension: image.extension, alt: image.alt };
    } else {
      // A retry without the picture keeps the one an earlier publish wrote.
      const extension = existingImage(imageNames, slug);
      if (extension) imageEntry = { extension, alt: previousEntry?.image?.alt ?? (scene.imagePrompt || scene.title) };
    }
    if (imageEntry) written.push(`${IMAGES}/${slug}.${imageEntry.extension}`);

    const entry = entryOf(scene, story.characters, imageEntry);
    manifest.episodes = manifest.episodes.filter((existing) => existing.sceneId !== scene.id);
    manifest.episodes.push(entry);
    await reconcile(manifest, imageNames);
    manifest.episodes.sort((a, b) => a.index - b.index || (a.sceneId < b.sceneId ? -1 : 1));

    const site = siteContext(manifest, options.siteTitle, language);
    const scenePage = `${SCENES}/${slug}.html`;
    await writeFileAtomic(path.join(directory, scenePage), renderScenePage(site, scene, entry));
    written.push(scenePage);

    // The neighbours' previous/next links change when a scene appears between or beside them.
    const position = site.positions.get(scene.id)!;
    for (const neighbour of [site.episodes[position - 1], site.episodes[position + 1]]) {
      if (!neighbour) continue;
      const neighbourScene = await readScene(neighbour);
      if (!neighbourScene) continue;
      await writeFileAtomic(
        path.join(scenesFolder, `${slugOfEpisode(neighbour)}.html`),
        renderScenePage(site, neighbourScene, neighbour),
      );
    }

    await writeFileAtomic(path.join(directory, 'style.css'), renderStyle());
    await writeFileAtomic(path.join(directory, MANIFEST_FILE), toJson(manifest));
    await writeFileAtomic(path.join(directory, 'index.html'), renderIndex(site, indexChapters));
    // Every chapter page is rendered, but only the changed ones are written: a scene published out of order can
    // renumber the chapters after it.
    for (const chapter of chaptersOf(site)) {
      await writeFileAtomic(path.join(chaptersFolder, `${chapter.number}.html`), renderChapterPage(site, chapter));
    }
    // A chapter page past the last chapter (the manifest lost a scene it no longer has a file for) would mislead.
    for (const name of await readdir(chaptersFolder)) {
      const match = /^(\d+)\.html$/.exec(name);
      if (match && Number(match[1]) > site.chapterNumbers.size)
        await rm(path.join(chaptersFolder, name), { force: true });
    }
    await writeFileAtomic(path.join(directory, 'characters.html'), renderCharacters(site));
    await writeFileAtomic(path.join(directory, 'threads.html'), renderThreads(site));
    await writeFileAtomic(path.join(directory, 'feed.atom'), renderFeed(site, baseUrl, feedEntries));

    return { target, url: publicUrl(scenePage), ids: written.sort() };
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
      return withDirectoryLock(directory, async () => {
        throwIfAborted(publishOptions.signal);
        try {
          return await publishLocked(valid);
        } catch (error) {
          throw isSystemError(error) ? storageError(error, directory) : error;
        }
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
