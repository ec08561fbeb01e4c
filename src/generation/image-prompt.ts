/**
 * Vendor-neutral helpers that keep a story's pictures consistent from episode to episode: one prompt layout (the
 * story's style guide first, then the scene, then how each character on stage looks), one seed per scene, and the one
 * picture request of a scene that the engine and a site rebuilt from stored scenes both use (its alt text is
 * `sceneAltText`, beside `EpisodeImage`).
 *
 * @module
 */
import { singleLine } from '../core/single-line.js';
import { type CharacterState, characterOf, type Scene, type StoryBible, type StoryState } from '../state/schema.js';
import type { ImageRequest } from './image-generator.js';

/**
 * The longest prompt Stability models on Bedrock accept (SD3.5 Large, Stable Image Core and Ultra all document
 * 10,000 characters); the default bound of `composeImagePrompt`.
 */
export const MAX_IMAGE_PROMPT_LENGTH = 10_000;

/**
 * The largest seed Stability models accept: seeds range over 0..4,294,967,294, where 0 (or no seed) means "pick a
 * random one", so a repeatable picture needs a seed in 1..4,294,967,294.
 */
export const MAX_IMAGE_SEED = 4_294_967_294;

/** Longest style guide kept at the head of a prompt, so a verbose guide cannot crowd out the scene itself. */
const MAX_STYLE_LENGTH = 1_500;
/** Longest description kept per character. */
const MAX_APPEARANCE_LENGTH = 500;

/** What `composeImagePrompt` needs: the request, and optionally the story state to fill in what it leaves out. */
export interface ComposeImagePromptInput {
  /** The scene to draw. Its `style` and per-character `appearance`, when given, win over the bible and state. */
  request: Pick<ImageRequest, 'prompt' | 'style' | 'characters'>;
  /** The story bible; its `style` is the guide used when the request carries none. */
  bible?: Pick<StoryBible, 'style'>;
  /**
   * The story's characters (as in `StoryState.characters`, or a list). Used to look up the appearance of each
   * character the request names; characters not named by the request are not drawn and not described.
   */
  characters?:
    | Readonly<Record<string, Pick<CharacterState, 'id' | 'name' | 'appearance'>>>
    | ReadonlyArray<Pick<CharacterState, 'id' | 'name' | 'appearance'>>;
  /** Upper bound of the result, in characters. Default `MAX_IMAGE_PROMPT_LENGTH`. */
  maxLength?: number;
}

/**
 * Builds the text prompt of a scene picture: `Style: <guide>.` first, byte-identical from episode to episode, then
 * the scene's prompt, then `Characters: <name>: <appearance>; ...` for each character in the scene that has a
 * description. The result never exceeds `maxLength`: the style guide is capped, the scene prompt is cut at a word
 * boundary when needed, and character descriptions that do not fit are left out whole, never cut mid-sentence.
 *
 * @example
 * ```ts
 * import { composeImagePrompt } from 'storyloom';
 *
 * const prompt = composeImagePrompt({
 *   request: { prompt: 'Mara opens the lighthouse door', characters: [{ id: 'mara', name: 'Mara' }] },
 *   bible: { style: 'muted watercolour, ink outlines' },
 *   characters: { mara: { id: 'mara', name: 'Mara', appearance: 'tall, red scarf, salt-white hair' } },
 * });
 * // "Style: muted watercolour, ink outlines. Mara opens the lighthouse door. Characters: Mara: tall, red scarf, ..."
 * ```
 */
export function composeImagePrompt(input: ComposeImagePromptInput): string {
  const maxLength = Math.max(1, Math.floor(input.maxLength ?? MAX_IMAGE_PROMPT_LENGTH));
  const style = clip(collapse(input.request.style || input.bible?.style || ''), MAX_STYLE_LENGTH);
  const scene = collapse(input.request.prompt);

  const known = new Map<string, { name: string; appearance: string }>();
  const list = Array.isArray(input.characters)
    ? input.characters
    : Object.values((input.characters ?? {}) as Record<string, Pick<CharacterState, 'id' | 'name' | 'appearance'>>);
  for (const character of list) known.set(character.id, character);

  const descriptions: string[] = [];
  const seen = new Set<string>();
  for (const character of input.request.characters ?? []) {
    if (seen.has(character.id)) continue;
    seen.add(character.id);
    const appearance = collapse(character.appearance || known.get(character.id)?.appearance || '');
    if (!appearance) continue;
    const name = collapse(character.name || known.get(character.id)?.name || character.id);
    descriptions.push(`${name}: ${clip(appearance, MAX_APPEARANCE_LENGTH)}`);
  }

  const head = style ? `Style: ${withPeriod(style)} ` : '';
  let text = head;
  // The scene is the point of the picture: it gets what is left after the style guide, cut at a word if need be.
  text += clip(withPeriod(scene), Math.max(0, maxLength - head.length));
  let characters = '';
  for (const description of descriptions) {
    const next = characters ? `${characters}; ${description}` : ` Characters: ${description}`;
    if (text.length + next.length + 1 > maxLength) break;
    characters = next;
  }
  if (characters) text += `${characters}.`;
  return clip(text.trim(), maxLength);
}

/**
 * A deterministic seed for a scene's picture: a 32-bit FNV-1a hash of the scene id, in 1..4,294,967,294 (never 0,
 * which Stability reads as "use a random seed"). The same scene always gets the same seed, so a retried or resumed
 * episode, a fork (whose scenes keep their ids) and an imported copy draw the same picture.
 * `sceneIllustrationRequest` uses it.
 *
 * @example
 * ```ts
 * import { seedFromSceneId } from 'storyloom';
 * seedFromSceneId('scene-0042') === seedFromSceneId('scene-0042'); // true
 * ```
 */
export function seedFromSceneId(sceneId: string): number {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(sceneId)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  // 0 (a random picture on Stability) and 2^32 - 1 (past the range) are the two hashes that cannot be used as they
  // are; both become 1. Every other hash is its own seed, so the seeds of existing scenes do not change.
  return hash === 0 || hash > MAX_IMAGE_SEED ? 1 : hash;
}

/** `text` on one line with single spaces: control characters (NEL U+0085 among them) count as spaces too. */
function collapse(text: string): string {
  return singleLine(text).replace(/\s+/g, ' ').trim();
}

function withPeriod(text: string): string {
  return text === '' || /[.!?]$/.test(text) ? text : `${text}.`;
}

/** Cuts `text` to at most `max` characters, at the last space when one is near enough, without splitting a pair. */
function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  let cut = text.slice(0, max);
  const space = cut.lastIndexOf(' ');
  if (space > max * 0.6) cut = cut.slice(0, space);
  // Never leave half of a surrogate pair at the end.
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  return cut.trimEnd();
}

/** Options of `sceneIllustrationRequest`. */
export interface SceneIllustrationOptions {
  /** Frame of the picture. Default `16:9` (the engine's `imageAspectRatio`). */
  aspectRatio?: ImageRequest['aspectRatio'];
}

/**
 * The one picture request of a scene: what the engine asks its `ImageGenerator` for when it runs an episode, and
 * what a site rebuilt from stored scenes (the command's import and fork) asks for, so both draw the same picture.
 * `story` is the state the scene left (`getStateAt(scene.storyId, scene.stateVersion)`): its bible's `style` and
 * the names and appearance of the scene's cast. The prompt is the scene's `imagePrompt`, or its summary, or its
 * title; the seed is `seedFromSceneId(scene.id)`, so a retried or resumed episode and a fork (whose scenes keep
 * their ids) get the same picture as the original.
 *
 * @example
 * ```ts
 * import { createProceduralIllustrator, sceneIllustrationRequest } from 'storyloom';
 * const story = (await store.getStateAt(scene.storyId, scene.stateVersion))!;
 * const image = await createProceduralIllustrator().generate(sceneIllustrationRequest(scene, story));
 * ```
 */
export function sceneIllustrationRequest(
  scene: Scene,
  story: StoryState,
  options: SceneIllustrationOptions = {},
): ImageRequest {
  return {
    storyId: scene.storyId,
    sceneId: scene.id,
    prompt: scene.imagePrompt || scene.summary || scene.title,
    ...(story.bible.style ? { style: story.bible.style } : {}),
    seed: seedFromSceneId(scene.id),
    aspectRatio: options.aspectRatio ?? '16:9',
    title: scene.title,
    mood: scene.mood,
    themes: scene.themes,
    characters: scene.characters.map((id) => {
      const character = characterOf(story, id);
      return {
        id,
        name: character?.name ?? id,
        ...(character?.appearance ? { appearance: character.appearance } : {}),
      };
    }),
  };
}
