import { inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../core/errors.js';
import type { ImageRequest } from './image-generator.js';
import { crc32, createProceduralIllustrator, escapeXml } from './procedural-illustrator.js';

const request: ImageRequest = {
  storyId: 'lighthouse',
  sceneId: 'lighthouse-s1',
  prompt: 'the lamp room at dusk',
  seed: 42,
  title: 'The Lamp Goes Dark',
  mood: 'wistful',
  themes: ['the sea', 'duty'],
  characters: [
    { id: 'mira', name: 'Mira Vale' },
    { id: 'tobin', name: 'Tobin Marsh' },
  ],
};

function chunks(png: Uint8Array) {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const result: Array<{ type: string; data: Uint8Array; crcOk: boolean }> = [];
  let offset = 8;
  while (offset < png.length) {
    const length = view.getUint32(offset);
    const typeAndData = png.subarray(offset + 4, offset + 8 + length);
    const type = new TextDecoder().decode(typeAndData.subarray(0, 4));
    result.push({
      type,
      data: typeAndData.subarray(4),
      crcOk: crc32(typeAndData) === view.getUint32(offset + 8 + length),
    });
    offset += 12 + length;
  }
  return result;
}

/** A small well-formedness check: balanced tags, quoted attributes, no raw `<` or stray `&` in text. */
function assertWellFormedXml(xml: string): void {
  const stack: string[] = [];
  const token = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/gy;
  let consumed = 0;
  for (const match of xml.matchAll(token)) {
    consumed += match[0].length;
    const [, closing, name, , selfClosing, text] = match;
    if (text !== undefined) {
      expect(text).not.toMatch(/&(?!(amp|lt|gt|quot|apos);)/);
      continue;
    }
    if (closing) expect(stack.pop()).toBe(name);
    else if (!selfClosing) stack.push(name!);
  }
  expect(consumed).toBe(xml.length);
  expect(stack).toEqual([]);
}

describe('createProceduralIllustrator', () => {
  it('draws a deterministic SVG: same request, same bytes; another seed, another picture', async () => {
    const illustrator = createProceduralIllustrator();
    const first = await illustrator.generate(request);
    const again = await createProceduralIllustrator().generate(request);
    expect(first.mediaType).toBe('image/svg+xml');
    expect(Buffer.from(again.data).equals(Buffer.from(first.data))).toBe(true);
    const other = await illustrator.generate({ ...request, seed: 43 });
    expect(Buffer.from(other.data).equals(Buffer.from(first.data))).toBe(false);
    const svg = new TextDecoder().decode(first.data);
    assertWellFormedXml(svg);
    expect(svg).toContain('The Lamp Goes Dark');
    expect(svg).toContain('>M</text>');
    expect(svg).toContain('>T</text>');
  });

  it('chooses the palette from the mood', async () => {
    const illustrator = createProceduralIllustrator();
    const night = new TextDecoder().decode((await illustrator.generate({ ...request, mood: 'ominous' })).data);
    const day = new TextDecoder().decode((await illustrator.generate({ ...request, mood: 'triumphant' })).data);
    expect(night).toContain('#0b1330');
    expect(day).toContain('#6fb1d9');
  });

  it('escapes hostile titles and names so the SVG stays well formed', async () => {
    const hostile = '</text><script>alert("x")</script> & \u0000\u0008 \'quotes\' ]]> <!--';
    const image = await createProceduralIllustrator().generate({
      ...request,
      title: hostile,
      characters: [{ id: 'x', name: '<evil>' }],
    });
    const svg = new TextDecoder().decode(image.data);
    assertWellFormedXml(svg);
    expect(svg).not.toContain('<script');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the test checks that control characters are gone
    expect(svg).not.toMatch(/[\u0000-\u0008]/);
    expect(svg).toContain('&lt;/text&gt;&lt;script&gt;');
    expect(escapeXml('a & b < c > "d" \'e\'')).toBe('a &amp; b &lt; c &gt; &quot;d&quot; &apos;e&apos;');
  });

  it('encodes a valid PNG: signature, IHDR, IDAT that inflates to the pixels, IEND, every CRC right', async () => {
    const image = await createProceduralIllustrator({ format: 'png', width: 320, height: 180 }).generate(request);
    expect(image.mediaType).toBe('image/png');
    expect([...image.data.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const parts = chunks(image.data);
    expect(parts.map((part) => part.type)).toEqual(['IHDR', 'IDAT', 'IEND']);
    expect(parts.every((part) => part.crcOk)).toBe(true);
    const ihdr = new DataView(parts[0]!.data.buffer, parts[0]!.data.byteOffset);
    expect([ihdr.getUint32(0), ihdr.getUint32(4), parts[0]!.data[8], parts[0]!.data[9]]).toEqual([320, 180, 8, 6]);
    const raw = inflateSync(parts[1]!.data);
    expect(raw.length).toBe((320 * 4 + 1) * 180);
    // Not a blank canvas: the sky at the top differs from the ground at the bottom.
    const pixel = (x: number, y: number) => [...raw.subarray(y * 1281 + 1 + x * 4, y * 1281 + 5 + x * 4)];
    expect(pixel(5, 2)).not.toEqual(pixel(5, 170));
    expect(crc32(new TextEncoder().encode('IEND'))).toBe(0xae426082);
  });

  it('draws a deterministic PNG and honours the aspect ratio of the request', async () => {
    const illustrator = createProceduralIllustrator({ format: 'png', width: 200, height: 120 });
    const first = await illustrator.generate(request);
    const again = await illustrator.generate(request);
    expect(Buffer.from(again.data).equals(Buffer.from(first.data))).toBe(true);
    const square = await illustrator.generate({ ...request, aspectRatio: '1:1' });
    expect([square.width, square.height]).toEqual([200, 200]);
  });

  it('refuses invalid options with a ValidationError', () => {
    expect(() => createProceduralIllustrator({ width: 0 })).toThrow(ValidationError);
    expect(() => createProceduralIllustrator({ format: 'gif' as 'png' })).toThrow(ValidationError);
  });

  it('refuses an aspect ratio it does not know, Object.prototype keys included, rather than guess a size', async () => {
    const illustrator = createProceduralIllustrator();
    for (const aspectRatio of ['constructor', 'toString', '__proto__', '2:1', '']) {
      await expect(
        illustrator.generate({ ...request, aspectRatio: aspectRatio as '1:1' }),
        aspectRatio,
      ).rejects.toThrow(ValidationError);
    }
    const tall = await illustrator.generate({ ...request, aspectRatio: '9:16' });
    expect([tall.width, tall.height]).toEqual([1024, 1820]);
  });
});
