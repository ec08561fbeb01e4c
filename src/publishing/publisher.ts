/**
 * The `Publisher` port: puts a committed scene where its readers are. The publication log that makes publishing
 * exactly-once lives in the `StoryStateStore` (`recordPublication`).
 *
 * @module
 */
import { toProblems, ValidationError, type ValidationProblem } from '../core/errors.js';
import { ellipsize } from '../core/text.js';
import { type Scene, SceneSchema, type StoryState, StoryStateSchema } from '../state/schema.js';
import { timeProblems } from '../state/times.js';

/** An image that goes with a scene. */
export interface EpisodeImage {
  data: Uint8Array;
  mediaType: string;
  /** Alt text for readers who cannot see the picture. */
  alt: string;
}

/** Longest alt text of a scene picture: an image prompt may run to 2,000 characters, too long for a reader to hear. */
const MAX_ALT_TEXT = 300;

/**
 * The alt text of a scene's picture: the scene's `imagePrompt`, or its title, cut to 300 characters (ending in `…`).
 * The engine gives it to its publishers with each picture, and a site rebuilt from stored scenes (the command's
 * import and fork) gives the same, so a rebuilt page describes its picture as the original did.
 *
 * @example
 * ```ts
 * import { sceneAltText, sceneIllustrationRequest } from 'storyloom';
 * const drawn = await images.generate(sceneIllustrationRequest(scene, story));
 * const image = { data: drawn.data, mediaType: drawn.mediaType, alt: sceneAltText(scene) };
 * ```
 */
export function sceneAltText(scene: Pick<Scene, 'imagePrompt' | 'title'>): string {
  const text = scene.imagePrompt || scene.title;
  return ellipsize(text, MAX_ALT_TEXT);
}

/** Everything a publisher needs to publish one scene. */
export interface Episode {
  story: StoryState;
  scene: Scene;
  image?: EpisodeImage;
}

/** Where a scene ended up. */
export interface PublishResult {
  target: string;
  /** Public URL or path of the published scene, when there is one. */
  url?: string;
  /** Remote ids (post ids, object keys) that a later run must know to not publish again. */
  ids: string[];
}

/** What a publisher can do. */
export interface PublisherCapabilities {
  /**
   * Publishing the same scene twice leaves one publication (deterministic keys, create-only writes). When false (a
   * post on a social network, say), the engine calls `publish` at most once per scene: see `Publisher`.
   */
  idempotent: boolean;
}

/**
 * Publishes scenes to one target.
 *
 * An idempotent publisher's `publish` must be safe to repeat for the same scene: the engine calls it again after a
 * crash or a failure, until the publication log has a `done` entry.
 *
 * A publisher that is not idempotent is called at most once per scene. The engine claims the step in the log first,
 * so of all the runs that reach it (a retried Lambda beside the first, say) one calls it; another run that finds the
 * claim while its holder may still be calling (the holder's time limits and retry waits, a day at most, and the clock
 * skew the engine allows, `maxClockSkewMs`) reports
 * `PUBLISH_IN_PROGRESS` (retryable) and leaves it. A failure with a retryable error, from a call that ended before
 * the step's time limit or the run's abort cut it short, means nothing went out: the engine retries it (never any other error, whatever its retry policy says), and once retries run out, or the run is
 * stopped before a call, it releases the claim for a later run. Any other outcome without `done` (a crash, a step
 * timeout, a non-retryable or unknown error) leaves the step in doubt: the publisher is not called again, runs report
 * `PUBLISH_IN_DOUBT` (not retryable), and the story waits until `StoryEngine.resolvePublication` settles it as
 * published or not.
 */
export interface Publisher {
  readonly specificationVersion: 'v1';
  readonly provider: string;
  /** A name unique among the engine's publishers; the publication log is keyed on it. */
  readonly target: string;
  readonly capabilities: PublisherCapabilities;
  publish(episode: Episode, options?: { signal?: AbortSignal }): Promise<PublishResult>;
}

/** The media types of the pictures publishers accept, with the file extension each is stored under. */
export const EPISODE_IMAGE_TYPES = {
  'image/png': 'png',
  'image/svg+xml': 'svg',
  'image/jpeg': 'jpg',
  'image/webp': 'webp',
} as const;

/** Whether `data` starts as a picture of each raster type does (its magic bytes). */
const RASTER_SIGNATURES: Readonly<Record<Exclude<EpisodeImageExtension, 'svg'>, (data: Uint8Array) => boolean>> = {
  // `\x89PNG\r\n\x1a\n`.
  png: (data) => startsWith(data, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  jpg: (data) => startsWith(data, [0xff, 0xd8, 0xff]),
  // `RIFF`, the file's size (any four bytes), `WEBP`.
  webp: (data) => startsWith(data, [0x52, 0x49, 0x46, 0x46]) && startsWith(data.subarray(8), [0x57, 0x45, 0x42, 0x50]),
};

function startsWith(data: Uint8Array, prefix: readonly number[]): boolean {
  return data.byteLength >= prefix.length && prefix.every((byte, position) => data[position] === byte);
}

/** The file extension a picture of an accepted media type is stored under. */
export type EpisodeImageExtension = (typeof EPISODE_IMAGE_TYPES)[keyof typeof EPISODE_IMAGE_TYPES];

/** An episode that `validateEpisode` accepted. */
export interface ValidEpisode {
  story: StoryState;
  scene: Scene;
  image: (EpisodeImage & { extension: EpisodeImageExtension }) | undefined;
}

/**
 * Checks an episode before a publisher writes anything, so that no key or path is ever built from an unchecked id:
 * the scene and the story must match their schemas (ids hold only letters, digits and `._:-`), the scene must belong
 * to the story, and a picture must be non-empty bytes of one of `EPISODE_IMAGE_TYPES` whose first bytes are those of
 * its type (a PNG, JPEG or WebP signature: `\x89PNG\r\n\x1a\n`, `FF D8 FF`, `RIFF....WEBP`; anything else, an SVG
 * or HTML among them, is refused under those labels, since a browser would sniff it and could run it as markup). An
 * SVG picture must be UTF-8 and free of anything that runs code or loads another resource when a reader opens it on its own (scripts,
 * `foreignObject`, event handlers, links other than `#fragments` and raster `data:` images, CSS `url()` other than
 * `#fragments`, `@import`, DTD declarations): the check refuses what it cannot read for sure, such as CSS escapes and
 * markup that is not well-formed XML. Returns the parsed episode; throws a `ValidationError` that lists every problem.
 *
 * @example
 * ```ts
 * import { validateEpisode } from 'storyloom';
 * const { scene, story, image } = validateEpisode(episode); // throws ValidationError on a bad episode
 * const key = `${story.storyId}/scenes/${scene.id}.json`;
 * ```
 */
export function validateEpisode(episode: Episode): ValidEpisode {
  const problems: ValidationProblem[] = [];
  const scene = SceneSchema.safeParse(episode?.scene);
  if (!scene.success) problems.push(...toProblems(scene.error.issues, 'scene'));
  const story = StoryStateSchema.safeParse(episode?.story);
  if (!story.success) problems.push(...toProblems(story.error.issues, 'story'));
  if (scene.success && story.success && scene.data.storyId !== story.data.storyId) {
    problems.push({ path: 'scene.storyId', message: `must equal story.storyId "${story.data.storyId}"` });
  }
  // Pages and feeds write the times they show in UTC with a four-digit year (a scene's creation, the story's last
  // update): one outside years 0000-9999 has none (the stores refuse such times; a publisher called directly may still
  // be handed one).
  if (scene.success) problems.push(...timeProblems(scene.data, 'scene'));
  if (story.success) problems.push(...timeProblems(story.data, 'story', ['updatedAt']));
  let image: ValidEpisode['image'];
  // `null` reads as no picture, as JSON often writes it.
  if (episode?.image != null) {
    const { data, mediaType, alt } = episode.image;
    const extension = Object.hasOwn(EPISODE_IMAGE_TYPES, mediaType)
      ? EPISODE_IMAGE_TYPES[mediaType as keyof typeof EPISODE_IMAGE_TYPES]
      : undefined;
    const isBytes = data instanceof Uint8Array && data.byteLength > 0;
    if (!isBytes) problems.push({ path: 'image.data', message: 'must be non-empty bytes' });
    if (!extension) {
      const types = Object.keys(EPISODE_IMAGE_TYPES).join(', ');
      problems.push({ path: 'image.mediaType', message: `must be one of ${types}` });
    } else if (extension === 'svg' && isBytes) {
      const reason = unsafeSvgReason(data);
      if (reason) problems.push({ path: 'image.data', message: `the SVG ${reason}` });
    } else if (isBytes && extension !== 'svg' && !RASTER_SIGNATURES[extension](data)) {
      // A browser sniffs a file whose bytes are not of its declared type: markup labelled a PNG could run as HTML or
      // SVG when a reader opens the picture on its own, and no check of ours would have read it as markup.
      problems.push({ path: 'image.data', message: `must be the bytes of a ${mediaType} picture` });
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

// ---------------------------------------------------------------------------------------------------------------
// SVG safety. A browser that opens an SVG on its own runs its scripts on the site's origin, and the page's CSP does
// not cover it. The SVG is read as a strict subset of XML (no DTD, no processing instruction but the declaration,
// references decoded as the XML parser decodes them), so what is checked is what the browser reads; anything else is
// refused. Hand-written: the XML parsers in package.json are development dependencies, and the root entry stays small.

/** XML whitespace, and a name as far as the check needs one (a prefix and its `:` included). */
const XML_SPACE = '[ \\t\\r\\n]';
const XML_NAME = '[^\\s<>/=!?"\'&]+';
const START_TAG = new RegExp(`<(${XML_NAME})`, 'y');
const ATTRIBUTE = new RegExp(`${XML_SPACE}+(${XML_NAME})${XML_SPACE}*=${XML_SPACE}*(?:"([^"<]*)"|'([^'<]*)')`, 'y');
const TAG_CLOSE = new RegExp(`${XML_SPACE}*(/?)>`, 'y');
const END_TAG = new RegExp(`</(${XML_NAME})${XML_SPACE}*>`, 'y');
/** A document type declaration without an internal subset (which could declare entities or default attributes). */
const DOCTYPE = /<!DOCTYPE(?:[^>["']|"[^"]*"|'[^']*')*>/iy;
const XML_ENTITIES: Readonly<Record<string, string>> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
const XHTML_NAMESPACE = 'http://www.w3.org/1999/xhtml';
const NOT_WELL_FORMED = 'is not well-formed XML';
const UNKNOWN_REFERENCE = 'has a character or entity reference XML does not define';

/** A qualified name without its namespace prefix. */
function localName(name: string): string {
  return name.slice(name.lastIndexOf(':') + 1);
}

/** `text` with its references decoded as XML decodes them, or undefined when one is not an XML reference. */
function decodeReferences(text: string): string | undefined {
  let valid = true;
  const decoded = text.replace(/&([^&;]*)(;?)/g, (_reference, body: string, semicolon: string) => {
    const hex = /^#x([0-9a-fA-F]{1,6})$/.exec(body);
    const code = hex ? Number.parseInt(hex[1]!, 16) : /^#\d{1,7}$/.test(body) ? Number(body.slice(1)) : undefined;
    // XML 1.0 allows no C0 control but tab, LF and CR, not even as a reference.
    if (semicolon && code !== undefined && code <= 0x10ffff && (code >= 0x20 || [9, 10, 13].includes(code))) {
      return String.fromCodePoint(code);
    }
    if (semicolon && Object.hasOwn(XML_ENTITIES, body)) return XML_ENTITIES[body]!;
    valid = false;
    return '';
  });
  return valid ? decoded : undefined;
}

/** What in CSS (a `<style>` element, or an attribute value, which may be a presentation attribute) loads a resource. */
function unsafeCssReason(css: string): string | undefined {
  const lower = css.toLowerCase();
  // An escape could spell `url(` or `@import` in a way the checks below do not see.
  if (lower.includes('\\')) return 'has a CSS escape';
  if (lower.includes('@import')) return 'imports a stylesheet';
  for (const [, first] of lower.matchAll(/url\(\s*['"]?\s*(.?)/g)) {
    if (first !== '#') return 'loads a resource through CSS url()';
  }
  if (/(?:^|[^a-z0-9_-])(?:-[a-z]+-)?(?:image-set|image|src)\(/.test(lower)) return 'loads a resource through CSS';
  return undefined;
}

/**
 * `text` without the C0 controls and spaces at its ends, as the URL parser strips them. By index: a pattern such as
 * `/ +$/` is tried at every space of a run that does not reach the end, quadratic in an attribute of spaces.
 */
function trimControlsAndSpaces(text: string): string {
  let start = 0;
  let end = text.length;
  while (end > start && text.charCodeAt(end - 1) <= 0x20) end--;
  while (start < end && text.charCodeAt(start) <= 0x20) start++;
  return text.slice(start, end);
}

/** What in one attribute (its value decoded) could run code or load a resource. */
function unsafeAttributeReason(name: string, rawValue: string): string | undefined {
  const value = decodeReferences(rawValue);
  if (value === undefined) return UNKNOWN_REFERENCE;
  const lowerName = name.toLowerCase();
  const local = localName(lowerName);
  // As a URL parser reads it: tabs and newlines dropped, controls and spaces at the ends trimmed.
  const url = trimControlsAndSpaces(value.replace(/[\t\n\r]/g, '')).toLowerCase();
  if (local.startsWith('on')) return 'contains an event-handler attribute';
  // A link's `ping` sends a request to each URL it lists when the link is followed.
  if (local === 'ping') return 'pings a URL from a link';
  if (local === 'base') return 'sets a base URL';
  if ((lowerName === 'xmlns' || lowerName.startsWith('xmlns:')) && url === XHTML_NAMESPACE) {
    return 'uses the XHTML namespace';
  }
  if ((local === 'href' || local === 'src') && !/^(?:$|#|data:image\/(?:png|jpeg|gif|webp)[;,])/.test(url)) {
    return 'links to something other than a #fragment or a raster data: image';
  }
  if (local === 'attributename' && /(?:^|:)(?:href|src)$/.test(url)) return 'animates a link';
  if (/(?:java|vb)script:|data:text\/html/.test(url.replace(/\s/g, ''))) return 'contains a script URL';
  // CSS is read from `style` and from presentation attributes, which have no prefix: a prefixed attribute is another
  // vocabulary's (an editor's metadata, a Windows path in it), and its links were checked above.
  if (name.includes(':')) return undefined;
  return unsafeCssReason(value);
}

/** Why an SVG is refused, or undefined when it is safe to open on its own. */
function unsafeSvgReason(data: Uint8Array): string | undefined {
  // UTF-16 and UTF-32 (with a BOM, or without one: NUL bytes) would be read differently by a browser than below.
  if ((data[0] === 0xfe && data[1] === 0xff) || (data[0] === 0xff && data[1] === 0xfe) || data.includes(0)) {
    return 'is not UTF-8';
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch {
    return 'is not UTF-8';
  }
  /** The names of the open elements, lowercase. */
  const open: string[] = [];
  const inStyle = () => localName(open.at(-1) ?? '') === 'style';
  /** The text of the `<style>` element being read, checked as a whole once it closes. */
  let css = '';
  let at = 0;
  while (at < text.length) {
    const next = text.indexOf('<', at);
    const content = decodeReferences(text.slice(at, next < 0 ? text.length : next));
    if (content === undefined) return UNKNOWN_REFERENCE;
    if (inStyle()) css += content;
    if (next < 0) break;
    if (text.startsWith('<!--', next)) {
      const end = text.indexOf('-->', next + 4);
      if (end < 0) return NOT_WELL_FORMED;
      at = end + 3;
    } else if (text.startsWith('<![CDATA[', next)) {
      const end = text.indexOf(']]>', next + 9);
      if (end < 0) return NOT_WELL_FORMED;
      if (inStyle()) css += text.slice(next + 9, end);
      at = end + 3;
    } else if (text.startsWith('<?', next)) {
      const end = text.indexOf('?>', next + 2);
      if (end < 0) return NOT_WELL_FORMED;
      const instruction = text.slice(next + 2, end);
      // Only the XML declaration, first, in UTF-8: an `xml-stylesheet` could apply XSLT, which can emit scripts.
      if (next !== 0 || !/^xml[ \t\r\n]/.test(instruction)) return 'contains a processing instruction';
      const encoding = /encoding[ \t\r\n]*=[ \t\r\n]*["']([^"']*)["']/.exec(instruction)?.[1]?.toLowerCase();
      if (encoding !== undefined && encoding !== 'utf-8' && encoding !== 'utf8') return 'is not UTF-8';
      at = end + 2;
    } else if (text.startsWith('<!', next)) {
      DOCTYPE.lastIndex = next;
      if (!DOCTYPE.test(text)) return 'declares entities or attributes';
      at = DOCTYPE.lastIndex;
    } else if (text.startsWith('</', next)) {
      END_TAG.lastIndex = next;
      const end = END_TAG.exec(text);
      if (!end || open.length === 0) return NOT_WELL_FORMED;
      const closesStyle = inStyle();
      if (open.pop() !== end[1]!.toLowerCase()) return NOT_WELL_FORMED;
      if (closesStyle) {
        const reason = unsafeCssReason(css);
        if (reason) return reason;
        css = '';
      }
      at = END_TAG.lastIndex;
    } else {
      START_TAG.lastIndex = next;
      const start = START_TAG.exec(text);
      if (!start) return NOT_WELL_FORMED;
      const name = start[1]!.toLowerCase();
      const local = localName(name);
      if (local === 'script') return 'contains a <script> element';
      if (local === 'foreignobject') return 'contains a <foreignObject> element';
      if (inStyle()) return 'has markup inside a <style> element';
      let position = START_TAG.lastIndex;
      for (;;) {
        TAG_CLOSE.lastIndex = position;
        const close = TAG_CLOSE.exec(text);
        if (close) {
          if (close[1] !== '/') open.push(name);
          at = TAG_CLOSE.lastIndex;
          break;
        }
        ATTRIBUTE.lastIndex = position;
        const attribute = ATTRIBUTE.exec(text);
        if (!attribute) return NOT_WELL_FORMED;
        const reason = unsafeAttributeReason(attribute[1]!, attribute[2] ?? attribute[3]!);
        if (reason) return reason;
        position = ATTRIBUTE.lastIndex;
      }
    }
  }
  return open.length > 0 ? NOT_WELL_FORMED : undefined;
}
