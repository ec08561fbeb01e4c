/**
 * The offline `ImageGenerator`: a deterministic picture composed from a scene's metadata, as SVG or PNG, with no
 * model, no network and no native module.
 *
 * The picture is a layered landscape: a sky gradient and a sun or moon in the palette of the scene's mood, a far and
 * a near silhouette chosen from the themes and prompt (sea, forest, city, hills), a figure with the initial of each
 * character, and a title band. Both formats draw the same description: SVG renders it as vector shapes with the
 * title as (escaped) text; PNG rasterises it in pure TypeScript into an RGBA buffer (anti-aliased circles and
 * polygons, gradients) and encodes it with `node:zlib` and its own CRC-32. The PNG carries no text.
 *
 * @module
 */
import { deflateSync } from 'node:zlib';
import { throwIfAborted, ValidationError } from '../core/errors.js';
import { seededRandom } from '../core/seeded-random.js';
import type { GeneratedImage, ImageGenerator, ImageRequest } from './image-generator.js';

/**
 * Options of `createProceduralIllustrator`.
 *
 * @example
 * ```ts
 * import { createProceduralIllustrator, type ProceduralIllustratorOptions } from 'storyloom';
 * const options: ProceduralIllustratorOptions = { format: 'png', width: 1200, height: 675 };
 * const illustrator = createProceduralIllustrator(options);
 * ```
 */
export interface ProceduralIllustratorOptions {
  /** Output format. Default `svg`: small, sharp at any size, and carries the title. */
  format?: 'svg' | 'png';
  /** Width in pixels, 16..4096. Default 1024. */
  width?: number;
  /** Height in pixels, 16..4096. Default 576 (16:9); a request's `aspectRatio` derives it from the width instead. */
  height?: number;
}

/**
 * The illustrator's model id; the version changes whenever the same request would draw a different picture.
 *
 * @example
 * ```ts
 * import { PROCEDURAL_ILLUSTRATOR_MODEL_ID } from 'storyloom';
 * console.log(PROCEDURAL_ILLUSTRATOR_MODEL_ID); // 'procedural-illustrator-v1'
 * ```
 */
export const PROCEDURAL_ILLUSTRATOR_MODEL_ID = 'procedural-illustrator-v1';

/**
 * Creates the procedural illustrator (`provider: 'procedural'`).
 *
 * @example
 * ```ts
 * import { writeFile } from 'node:fs/promises';
 * import { createProceduralIllustrator } from 'storyloom';
 * const illustrator = createProceduralIllustrator({ format: 'png' });
 * const image = await illustrator.generate({ storyId: 'lighthouse', sceneId: 's1', prompt: '', seed: 1,
 *   title: 'The Lamp Goes Dark', mood: 'ominous', themes: ['the sea'], characters: [{ id: 'mira', name: 'Mira Vale' }] });
 * await writeFile('scene.png', image.data);
 * ```
 */
export function createProceduralIllustrator(options: ProceduralIllustratorOptions = {}): ImageGenerator {
  const format = options.format ?? 'svg';
  const width = options.width ?? 1024;
  const height = options.height ?? 576;
  const problems: Array<{ path: string; message: string }> = [];
  if (format !== 'svg' && format !== 'png') problems.push({ path: 'format', message: 'must be "svg" or "png"' });
  for (const [path, value] of [
    ['width', width],
    ['height', height],
  ] as const) {
    if (!Number.isInteger(value) || value < 16 || value > 4096) {
      problems.push({ path, message: 'must be an integer within 16..4096' });
    }
  }
  if (problems.length > 0) {
    throw new ValidationError(`Invalid procedural illustrator options: ${problems[0]?.path} ${problems[0]?.message}`, {
      problems,
    });
  }
  return {
    specificationVersion: 'v1',
    provider: 'procedural',
    modelId: PROCEDURAL_ILLUSTRATOR_MODEL_ID,
    async generate(request, generateOptions = {}): Promise<GeneratedImage> {
      throwIfAborted(generateOptions.signal);
      const size = sizeFor(request, width, height);
      const picture = compose(request, size.width, size.height);
      const data = format === 'svg' ? new TextEncoder().encode(renderSvg(picture)) : renderPng(picture);
      return {
        data,
        mediaType: format === 'svg' ? 'image/svg+xml' : 'image/png',
        seed: request.seed,
        modelId: PROCEDURAL_ILLUSTRATOR_MODEL_ID,
        width: size.width,
        height: size.height,
      };
    },
  };
}

/** Width over height of each aspect ratio an `ImageRequest` may ask for. */
const ASPECT_RATIOS: Readonly<Record<NonNullable<ImageRequest['aspectRatio']>, number>> = {
  '1:1': 1,
  '16:9': 16 / 9,
  '3:2': 3 / 2,
  '4:5': 4 / 5,
  '9:16': 9 / 16,
};

function sizeFor(request: ImageRequest, width: number, height: number): { width: number; height: number } {
  const name = request.aspectRatio;
  if (name === undefined) return { width, height };
  // Own keys only: "constructor" would find Object's and draw a picture of height NaN.
  if (!Object.hasOwn(ASPECT_RATIOS, name)) {
    const message = `must be one of ${Object.keys(ASPECT_RATIOS).join(', ')}`;
    throw new ValidationError(`aspectRatio ${message}, got ${String(name)}`, {
      problems: [{ path: 'aspectRatio', message }],
    });
  }
  return { width, height: Math.max(16, Math.min(4096, Math.round(width / ASPECT_RATIOS[name]))) };
}

// ---------------------------------------------------------------------------------------------------------------
// The picture as data: both renderers draw exactly this.

type Rgb = readonly [number, number, number];

type Shape =
  | { kind: 'gradient'; top: Rgb; bottom: Rgb; y: number; height: number }
  | { kind: 'circle'; cx: number; cy: number; r: number; color: Rgb; alpha: number }
  | { kind: 'polygon'; points: ReadonlyArray<readonly [number, number]>; color: Rgb; alpha: number }
  | { kind: 'text'; x: number; y: number; size: number; color: Rgb; text: string; anchor: 'start' | 'middle' };

interface Picture {
  width: number;
  height: number;
  shapes: Shape[];
}

interface Palette {
  skyTop: string;
  skyBottom: string;
  light: string;
  far: string;
  near: string;
  figures: string[];
  night: boolean;
}

// Each palette is a sky, a light, two land tones and figure colours that sit together; moods map onto them.
const PALETTES: Record<string, Palette> = {
  dawn: {
    skyTop: '#f6c8a8',
    skyBottom: '#fde9cf',
    light: '#fff4d6',
    far: '#c98f8a',
    near: '#7a5560',
    figures: ['#f2a65a', '#e86f68', '#7fb7be', '#f7d488'],
    night: false,
  },
  day: {
    skyTop: '#6fb1d9',
    skyBottom: '#d7eef5',
    light: '#fff7c2',
    far: '#7fa88a',
    near: '#3f6b55',
    figures: ['#e76f51', '#f4a261', '#2a9d8f', '#e9c46a'],
    night: false,
  },
  dusk: {
    skyTop: '#3d3b6e',
    skyBottom: '#e8a27c',
    light: '#ffd39a',
    far: '#6b4f72',
    near: '#2e2540',
    figures: ['#f4b183', '#d98ab0', '#9fc5e8', '#ffe599'],
    night: false,
  },
  night: {
    skyTop: '#0b1330',
    skyBottom: '#2b3a67',
    light: '#eef3ff',
    far: '#1d2a4d',
    near: '#0a0f22',
    figures: ['#9ad1d4', '#f2e8cf', '#c7b8ea', '#ffcf70'],
    night: true,
  },
  storm: {
    skyTop: '#2f3b45',
    skyBottom: '#7d8b91',
    light: '#d9e4e8',
    far: '#4a5a60',
    near: '#1f2a30',
    figures: ['#e0a458', '#c94c4c', '#a8dadc', '#f1faee'],
    night: false,
  },
  mist: {
    skyTop: '#a9b7c6',
    skyBottom: '#e6ecef',
    light: '#ffffff',
    far: '#9aa9b5',
    near: '#5e6f7d',
    figures: ['#d88c9a', '#8fb9a8', '#f1c27d', '#6c8ead'],
    night: false,
  },
  violet: {
    skyTop: '#2a1b4a',
    skyBottom: '#b48ead',
    light: '#fbe7c6',
    far: '#5e3c79',
    near: '#24143d',
    figures: ['#ffd6a5', '#caffbf', '#9bf6ff', '#ffc6ff'],
    night: true,
  },
};

const MOOD_PALETTES: Record<string, string> = {
  hopeful: 'dawn',
  peaceful: 'dawn',
  tender: 'dawn',
  determined: 'day',
  purposeful: 'day',
  triumphant: 'day',
  joyful: 'day',
  wistful: 'dusk',
  bittersweet: 'dusk',
  melancholy: 'mist',
  mysterious: 'night',
  ominous: 'night',
  wary: 'night',
  anxious: 'storm',
  tense: 'storm',
  restless: 'storm',
  startled: 'storm',
  awed: 'violet',
  curious: 'violet',
  intrigued: 'dusk',
};

function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 15;
  hash = Math.imul(hash, 0x2c1b3c6d);
  hash ^= hash >>> 12;
  return hash >>> 0;
}

function rgb(hex: string): Rgb {
  const value = Number.parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

function mix(a: Rgb, b: Rgb, t: number): Rgb {
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

type Terrain = 'sea' | 'forest' | 'city' | 'hills';

function terrainFor(request: ImageRequest): Terrain {
  const text = `${(request.themes ?? []).join(' ')} ${request.prompt} ${request.title ?? ''}`.toLowerCase();
  if (/\b(sea|ocean|shore|coast|tide|lighthouse|island|harbou?r|wave)/.test(text)) return 'sea';
  if (/\b(city|canal|street|lane|bureau|town|market|tower)/.test(text)) return 'city';
  if (/\b(forest|wood|tree|orchard|journey|garden|grove)/.test(text)) return 'forest';
  return 'hills';
}

function compose(request: ImageRequest, width: number, height: number): Picture {
  const characters = request.characters ?? [];
  const key = [
    request.seed,
    request.title ?? '',
    request.mood ?? '',
    (request.themes ?? []).join('|'),
    characters.map((character) => `${character.id}:${character.name}`).join('|'),
    request.prompt,
  ].join('\u0000');
  const next = seededRandom(hashString(key));
  const mood = (request.mood ?? '').trim().toLowerCase();
  const paletteNames = Object.keys(PALETTES);
  const palette =
    PALETTES[MOOD_PALETTES[mood] ?? paletteNames[hashString(mood) % paletteNames.length]!] ?? PALETTES.dusk!;
  const shapes: Shape[] = [];
  const horizon = height * (0.58 + next() * 0.08);

  shapes.push({ kind: 'gradient', top: rgb(palette.skyTop), bottom: rgb(palette.skyBottom), y: 0, height });
  if (palette.night) {
    for (let index = 0; index < 60; index++) {
      shapes.push({
        kind: 'circle',
        cx: next() * width,
        cy: next() * horizon * 0.8,
        r: Math.max(0.6, (0.5 + next()) * width * 0.0014),
        color: rgb('#ffffff'),
        alpha: 0.35 + next() * 0.5,
      });
    }
  }
  const lightX = width * (0.15 + next() * 0.7);
  const lightY = horizon * (0.25 + next() * 0.35);
  const lightR = Math.min(width, height) * (0.07 + next() * 0.04);
  const light = rgb(palette.light);
  shapes.push({ kind: 'circle', cx: lightX, cy: lightY, r: lightR * 2.6, color: light, alpha: 0.12 });
  shapes.push({ kind: 'circle', cx: lightX, cy: lightY, r: lightR * 1.6, color: light, alpha: 0.18 });
  shapes.push({ kind: 'circle', cx: lightX, cy: lightY, r: lightR, color: light, alpha: 0.95 });

  const far = rgb(palette.far);
  const near = rgb(palette.near);
  const terrain = terrainFor(request);
  shapes.push({
    kind: 'polygon',
    points: ridge(width, height, horizon - height * 0.1, height * 0.07, next),
    color: far,
    alpha: 1,
  });
  if (terrain === 'sea') {
    const sea = mix(far, rgb(palette.skyBottom), 0.35);
    shapes.push({ kind: 'polygon', points: band(width, height, horizon, 0, next), color: sea, alpha: 1 });
    for (let index = 0; index < 14; index++) {
      const y = horizon + (height - horizon) * (0.1 + next() * 0.75);
      const x = next() * width;
      const length = width * (0.03 + next() * 0.08);
      shapes.push({
        kind: 'polygon',
        points: [
          [x, y],
          [x + length, y],
          [x + length * 0.9, y + 2],
          [x + length * 0.1, y + 2],
        ],
        color: light,
        alpha: 0.25,
      });
    }
    // A lighthouse or a headland on one side, so the sea has somewhere to be seen from.
    const side = next() < 0.5 ? 0 : 1;
    const baseX = side === 0 ? width * 0.1 : width * 0.82;
    shapes.push({
      kind: 'polygon',
      points: [
        [baseX - width * 0.12, height],
        [baseX - width * 0.05, horizon + height * 0.05],
        [baseX + width * 0.12, horizon + height * 0.08],
        [baseX + width * 0.2, height],
      ],
      color: near,
      alpha: 1,
    });
    const towerX = baseX + width * 0.03;
    const towerTop = horizon - height * 0.22;
    shapes.push({
      kind: 'polygon',
      points: [
        [towerX - width * 0.018, horizon + height * 0.07],
        [towerX - width * 0.011, towerTop],
        [towerX + width * 0.011, towerTop],
        [towerX + width * 0.018, horizon + height * 0.07],
      ],
      color: mix(near, light, 0.55),
      alpha: 1,
    });
    shapes.push({
      kind: 'circle',
      cx: towerX,
      cy: towerTop - height * 0.012,
      r: height * 0.05,
      color: rgb('#ffe9a8'),
      alpha: 0.35,
    });
    shapes.push({
      kind: 'circle',
      cx: towerX,
      cy: towerTop - height * 0.012,
      r: height * 0.016,
      color: rgb('#fff6d0'),
      alpha: 1,
    });
  } else if (terrain === 'forest') {
    shapes.push({
      kind: 'polygon',
      points: band(width, height, horizon, height * 0.02, next),
      color: mix(far, near, 0.5),
      alpha: 1,
    });
    for (let index = 0; index < 26; index++) {
      const x = next() * width;
      const base = horizon + (height - horizon) * (0.05 + next() * 0.5);
      const treeHeight = height * (0.12 + next() * 0.14);
      const half = treeHeight * 0.28;
      shapes.push({
        kind: 'polygon',
        points: [
          [x - half, base],
          [x, base - treeHeight],
          [x + half, base],
        ],
        color: mix(near, far, next() * 0.3),
        alpha: 1,
      });
    }
  } else if (terrain === 'city') {
    let x = -next() * 20;
    while (x < width) {
      const w = width * (0.04 + next() * 0.05);
      const top = horizon - height * (0.05 + next() * 0.25);
      shapes.push({
        kind: 'polygon',
        points: [
          [x, horizon + 2],
          [x, top],
          [x + w, top],
          [x + w, horizon + 2],
        ],
        color: mix(far, near, 0.4),
        alpha: 1,
      });
      for (let window = 0; window < 3; window++) {
        if (next() < 0.5) continue;
        const wx = x + w * (0.2 + next() * 0.5);
        const wy = top + (horizon - top) * (0.15 + next() * 0.6);
        shapes.push({
          kind: 'polygon',
          points: [
            [wx, wy],
            [wx + 5, wy],
            [wx + 5, wy + 7],
            [wx, wy + 7],
          ],
          color: rgb('#ffd98a'),
          alpha: 0.85,
        });
      }
      x += w + 2;
    }
    shapes.push({
      kind: 'polygon',
      points: band(width, height, horizon, 0, next),
      color: mix(near, rgb(palette.skyBottom), 0.25),
      alpha: 1,
    });
  } else {
    shapes.push({
      kind: 'polygon',
      points: ridge(width, height, horizon, height * 0.05, next),
      color: mix(far, near, 0.5),
      alpha: 1,
    });
  }
  shapes.push({
    kind: 'polygon',
    points: ridge(width, height, height * 0.86, height * 0.03, next),
    color: near,
    alpha: 1,
  });

  // A figure per character (at most six), on the near ground, with the initial on its body.
  const shown = characters.slice(0, 6);
  const spacing = width / (shown.length + 1);
  shown.forEach((character, index) => {
    const color = rgb(palette.figures[hashString(character.id) % palette.figures.length]!);
    const cx = spacing * (index + 1) + (next() - 0.5) * spacing * 0.3;
    const scale = height * (0.1 + next() * 0.03);
    const feet = height * 0.86;
    shapes.push({
      kind: 'polygon',
      points: [
        [cx - scale * 0.32, feet],
        [cx - scale * 0.22, feet - scale],
        [cx + scale * 0.22, feet - scale],
        [cx + scale * 0.32, feet],
      ],
      color,
      alpha: 1,
    });
    shapes.push({
      kind: 'circle',
      cx,
      cy: feet - scale * 1.22,
      r: scale * 0.22,
      color: mix(color, light, 0.35),
      alpha: 1,
    });
    const initial = Array.from(character.name.trim())[0]?.toUpperCase() ?? '?';
    shapes.push({
      kind: 'text',
      x: cx,
      y: feet - scale * 0.35,
      size: scale * 0.42,
      color: rgb('#1b1b2a'),
      text: initial,
      anchor: 'middle',
    });
  });

  if (request.title) {
    const bandHeight = height * 0.11;
    shapes.push({
      kind: 'polygon',
      points: [
        [0, height - bandHeight],
        [width, height - bandHeight],
        [width, height],
        [0, height],
      ],
      color: rgb('#10131f'),
      alpha: 0.55,
    });
    shapes.push({
      kind: 'text',
      x: width * 0.04,
      y: height - bandHeight * 0.35,
      size: bandHeight * 0.45,
      color: rgb('#f7f3e8'),
      text: request.title.slice(0, 120),
      anchor: 'start',
    });
  }
  return { width, height, shapes };
}

/** A smooth silhouette across the picture: a sum of a few seeded sines around `base`, closed along the bottom. */
function ridge(
  width: number,
  height: number,
  base: number,
  amplitude: number,
  next: () => number,
): Array<[number, number]> {
  const waves = [0, 1, 2].map((index) => ({
    frequency: ((index + 1) * (1 + next()) * Math.PI) / width,
    phase: next() * Math.PI * 2,
    weight: 1 / (index + 1),
  }));
  const points: Array<[number, number]> = [[0, height]];
  for (let x = 0; x <= width; x += Math.max(4, width / 96)) {
    const y =
      base - amplitude * waves.reduce((sum, wave) => sum + wave.weight * Math.sin(x * wave.frequency + wave.phase), 0);
    points.push([x, y]);
  }
  points.push([width, base], [width, height]);
  return points;
}

function band(width: number, height: number, top: number, amplitude: number, next: () => number) {
  return amplitude === 0
    ? ([
        [0, top],
        [width, top],
        [width, height],
        [0, height],
      ] as Array<[number, number]>)
    : ridge(width, height, top, amplitude, next);
}

// ---------------------------------------------------------------------------------------------------------------
// SVG.

function hex(color: Rgb): string {
  return `#${color.map((channel) => Math.round(channel).toString(16).padStart(2, '0')).join('')}`;
}

/** Escapes text for XML content and attributes, dropping what XML 1.0 cannot hold at all (most control characters). */
export function escapeXml(text: string): string {
  return text
    .replace(
      // biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters XML 1.0 cannot hold
      /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
      '',
    )
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

const n1 = (value: number) => (Math.round(value * 10) / 10).toString();

function renderSvg(picture: Picture): string {
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${picture.width}" height="${picture.height}" viewBox="0 0 ${picture.width} ${picture.height}">`,
  ];
  let gradients = 0;
  for (const shape of picture.shapes) {
    if (shape.kind === 'gradient') {
      const id = `sky${gradients++}`;
      parts.push(
        `<defs><linearGradient id="${id}" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="${hex(shape.top)}"/><stop offset="1" stop-color="${hex(shape.bottom)}"/></linearGradient></defs>`,
        `<rect x="0" y="${n1(shape.y)}" width="${picture.width}" height="${n1(shape.height)}" fill="url(#${id})"/>`,
      );
    } else if (shape.kind === 'circle') {
      parts.push(
        `<circle cx="${n1(shape.cx)}" cy="${n1(shape.cy)}" r="${n1(shape.r)}" fill="${hex(shape.color)}" fill-opacity="${shape.alpha.toFixed(2)}"/>`,
      );
    } else if (shape.kind === 'polygon') {
      const points = shape.points.map(([x, y]) => `${n1(x)},${n1(y)}`).join(' ');
      parts.push(`<polygon points="${points}" fill="${hex(shape.color)}" fill-opacity="${shape.alpha.toFixed(2)}"/>`);
    } else {
      parts.push(
        `<text x="${n1(shape.x)}" y="${n1(shape.y)}" font-family="Georgia, 'Times New Roman', serif" font-size="${n1(shape.size)}" fill="${hex(shape.color)}" text-anchor="${shape.anchor}">${escapeXml(shape.text)}</text>`,
      );
    }
  }
  parts.push('</svg>');
  return parts.join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// PNG: a tiny rasteriser and encoder.

function renderPng(picture: Picture): Uint8Array {
  const { width, height } = picture;
  const pixels = new Float32Array(width * height * 3);
  const blend = (index: number, color: Rgb, alpha: number) => {
    const offset = index * 3;
    pixels[offset] = pixels[offset]! + (color[0] - pixels[offset]!) * alpha;
    pixels[offset + 1] = pixels[offset + 1]! + (color[1] - pixels[offset + 1]!) * alpha;
    pixels[offset + 2] = pixels[offset + 2]! + (color[2] - pixels[offset + 2]!) * alpha;
  };
  for (const shape of picture.shapes) {
    if (shape.kind === 'gradient') {
      for (let y = Math.max(0, Math.floor(shape.y)); y < Math.min(height, shape.y + shape.height); y++) {
        const color = mix(shape.top, shape.bottom, (y - shape.y) / Math.max(1, shape.height - 1));
        for (let x = 0; x < width; x++) blend(y * width + x, color, 1);
      }
    } else if (shape.kind === 'circle') {
      const x0 = Math.max(0, Math.floor(shape.cx - shape.r - 1));
      const x1 = Math.min(width - 1, Math.ceil(shape.cx + shape.r + 1));
      const y0 = Math.max(0, Math.floor(shape.cy - shape.r - 1));
      const y1 = Math.min(height - 1, Math.ceil(shape.cy + shape.r + 1));
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          const distance = Math.hypot(x + 0.5 - shape.cx, y + 0.5 - shape.cy);
          // Coverage falls from 1 to 0 across the pixel on the edge: cheap anti-aliasing.
          const coverage = Math.min(1, Math.max(0, shape.r - distance + 0.5));
          if (coverage > 0) blend(y * width + x, shape.color, coverage * shape.alpha);
        }
      }
    } else if (shape.kind === 'polygon') {
      fillPolygon(shape.points, width, height, (index, coverage) => blend(index, shape.color, coverage * shape.alpha));
    }
    // Text is left to the SVG: a PNG without a font would only draw it badly.
  }
  const raw = new Uint8Array((width * 4 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 4 + 1);
    raw[row] = 0; // filter type None
    for (let x = 0; x < width; x++) {
      const source = (y * width + x) * 3;
      const target = row + 1 + x * 4;
      raw[target] = Math.round(pixels[source]!);
      raw[target + 1] = Math.round(pixels[source + 1]!);
      raw[target + 2] = Math.round(pixels[source + 2]!);
      raw[target + 3] = 255;
    }
  }
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 6, 0, 0, 0], 8); // 8 bits per channel, RGBA, deflate, adaptive filtering, no interlace
  return concat([
    Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a),
    chunk('IHDR', header),
    chunk('IDAT', new Uint8Array(deflateSync(raw, { level: 9 }))),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

/** Scanline fill with four sub-scanlines per row and fractional span ends, for smooth polygon edges. */
function fillPolygon(
  points: ReadonlyArray<readonly [number, number]>,
  width: number,
  height: number,
  plot: (index: number, coverage: number) => void,
): void {
  const SUBSAMPLES = 4;
  let minY = Number.POSITIVE_INFINITY;
  let maxY = Number.NEGATIVE_INFINITY;
  for (const [, y] of points) {
    minY = Math.min(minY, y);
    maxY = Math.max(maxY, y);
  }
  const coverage = new Float32Array(width);
  for (let y = Math.max(0, Math.floor(minY)); y <= Math.min(height - 1, Math.ceil(maxY)); y++) {
    coverage.fill(0);
    let touched = false;
    for (let sub = 0; sub < SUBSAMPLES; sub++) {
      const sampleY = y + (sub + 0.5) / SUBSAMPLES;
      const crossings: number[] = [];
      for (let index = 0; index < points.length; index++) {
        const [ax, ay] = points[index]!;
        const [bx, by] = points[(index + 1) % points.length]!;
        if ((ay <= sampleY && by > sampleY) || (by <= sampleY && ay > sampleY)) {
          crossings.push(ax + ((sampleY - ay) / (by - ay)) * (bx - ax));
        }
      }
      crossings.sort((a, b) => a - b);
      for (let index = 0; index + 1 < crossings.length; index += 2) {
        const start = Math.max(0, crossings[index]!);
        const end = Math.min(width, crossings[index + 1]!);
        if (end <= start) continue;
        touched = true;
        const first = Math.floor(start);
        const last = Math.min(width - 1, Math.floor(end - 1e-9));
        for (let x = first; x <= last; x++) {
          const covered = Math.min(end, x + 1) - Math.max(start, x);
          coverage[x] = coverage[x]! + covered / SUBSAMPLES;
        }
      }
    }
    if (!touched) continue;
    for (let x = 0; x < width; x++) if (coverage[x]! > 0) plot(y * width + x, Math.min(1, coverage[x]!));
  }
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC-32 (ISO 3309, the polynomial PNG uses) of `bytes`.
 *
 * @example
 * ```ts
 * import { crc32 } from './procedural-illustrator.js';
 * crc32(new TextEncoder().encode('IEND')).toString(16); // 'ae426082'
 * ```
 */
export function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const typed = concat([new TextEncoder().encode(type), data]);
  const result = new Uint8Array(12 + data.length);
  const view = new DataView(result.buffer);
  view.setUint32(0, data.length);
  result.set(typed, 4);
  view.setUint32(8 + data.length, crc32(typed));
  return result;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const result = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    result.set(part, offset);
    offset += part.length;
  }
  return result;
}
