/**
 * Builds a demo reader site with the filesystem publisher from twelve synthetic scenes (pictures by the procedural
 * illustrator), serves it on 127.0.0.1 and takes PNG screenshots of its pages with headless Chromium.
 *
 * Usage: `npx tsx scripts/screenshot-site.ts [output folder] [--keep]` (default output `docs/images`). Needs
 * `playwright-core` (a devDependency) and a Chromium at `CHROMIUM_PATH` (default `/usr/bin/chromium`, Debian's
 * package); it never downloads a browser. `--keep` leaves the built site in place and prints where it is.
 *
 * @module
 */
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { sceneIllustrationRequest } from '../src/generation/image-prompt.js';
import { createProceduralIllustrator } from '../src/generation/procedural-illustrator.js';
import { createFilesystemPublisher } from '../src/publishing/filesystem.js';
import { chapterIdFor, type StoryState } from '../src/state/schema.js';
import { makeNextScene, makeNextState, makeStoryState } from '../src/testing/fixtures.js';

interface DemoScene {
  title: string;
  summary: string;
  text: string;
  characters: string[];
  locations: string[];
  themes: string[];
  mood: string;
}

const SCENES: DemoScene[] = [
  {
    title: 'The Island Moves North',
    summary: 'Mira logs the first night the island drifts, and Tobin refuses to believe the compass.',
    text: `The compass needle swung a full point to the east before it settled, and Mira Vale wrote the number down the way her mother had taught her: neatly, without comment, as if the sea were a clerk who might one day audit her.

"It's the iron in the rocks," Tobin said from the stairwell. He had a mug of tea in each hand and the look of a man who had already decided what was true.

"The rocks haven't moved in four hundred years." She tapped the chart. "We have."

Outside, the lamp turned its slow white arm across the water, and somewhere beyond its reach the dark coastline slid past like a ship that had forgotten to light its own lanterns.`,
    characters: ['mira', 'tobin'],
    locations: ['the lamp room'],
    themes: ['the sea', 'duty'],
    mood: 'wistful',
  },
  {
    title: 'A Letter Without a Stamp',
    summary: 'A letter addressed to Tobin arrives on a tide that should not reach the island.',
    text: `It came folded into a green bottle, which was insulting, because Tobin had always said that only poets and drowned men used bottles.

The envelope was dry. His name was written on it in a hand he knew and had spent eleven years trying not to know.

Mira watched him read it twice and put it in his coat pocket, over his heart, which told her more than the letter could have.`,
    characters: ['tobin', 'mira'],
    locations: ['the landing stage'],
    themes: ['the past', 'the sea'],
    mood: 'tender',
  },
  {
    title: 'Old Gull Keeps Count',
    summary: 'The gull who lives on the gallery rail turns out to have been counting the nights too.',
    text: `Old Gull had lived on the gallery rail longer than either keeper, and had opinions about herring, weather and the correct way to close a door.

Tonight he had an opinion about the stars. "Forty-one nights," he said, and pecked the rail forty-one times to make the point. "Forty-one nights north. You two are slow."

Tobin dropped the oil can. Mira, who had suspected for some time that the bird could talk and had simply been too polite to ask, offered him a sardine.`,
    characters: ['gull', 'mira', 'tobin'],
    locations: ['the gallery'],
    themes: ['duty', 'wonder'],
    mood: 'playful',
  },
  {
    title: 'The Ghost Light',
    summary: 'A second lighthouse appears on the horizon, burning where no lighthouse has ever stood.',
    text: `At the change of the watch a second light opened on the horizon: the same white, the same slow turn, exactly opposite their own, as if the night had decided to hold up a mirror.

"That's not on any chart," Tobin whispered.

"Then somebody is keeping it," Mira said, and began to count its turns against the clock.`,
    characters: ['mira', 'tobin'],
    locations: ['the lamp room', 'the horizon'],
    themes: ['mystery', 'the sea'],
    mood: 'ominous',
  },
  {
    title: 'Fog Signals',
    summary: 'Fog rolls in; the keepers answer the ghost light with the old horn code.',
    text: `The fog came in thick enough to lean on. They sounded the horn in the old code, two long and one short, the greeting keepers had used before the radio made them lonely in a different way.

For a long while nothing answered. Then, faint and perfectly timed, two long and one short came back across the water.`,
    characters: ['mira', 'tobin', 'gull'],
    locations: ['the fog deck'],
    themes: ['mystery', 'duty'],
    mood: 'tense',
  },
  {
    title: 'What the Letter Said',
    summary: 'Tobin finally tells Mira who wrote the letter, and why he left the mainland.',
    text: `"My sister," he said, as though the word were heavier than the oil drums. "She keeps a light too. Kept. I thought she was dead."

Mira did not say anything clever. She put the kettle on, which in her experience was the only reply that never made things worse.`,
    characters: ['tobin', 'mira'],
    locations: ['the kitchen'],
    themes: ['the past', 'family'],
    mood: 'tender',
  },
  {
    title: 'The Cartographer Arrives',
    summary: 'Ines Quarry rows out from nowhere with a map of the island that shows where it is going.',
    text: `The rowing boat arrived at dawn with a woman in it who was mostly oilskin and elbows. She climbed the landing ladder without asking and unrolled a map across the breakfast table.

"Your island," said Ines Quarry, "is on a schedule. I would like to know who wrote it."

The map was beautiful and wrong in all the right places: every night of their drift was drawn on it in red ink, and the line did not stop at tonight.`,
    characters: ['ines', 'mira', 'tobin'],
    locations: ['the landing stage', 'the kitchen'],
    themes: ['maps', 'mystery'],
    mood: 'curious',
  },
  {
    title: 'Red Ink',
    summary: 'Ines and Mira trace the route on the map; it ends at the ghost light.',
    text: `They worked by lamplight with a ruler and a thread. The red line bent, hesitated, and went on, and where it finally ended somebody had drawn a tiny lighthouse and, beside it, a question mark in a different hand.

"That's Tobin's writing," Mira said slowly.`,
    characters: ['ines', 'mira'],
    locations: ['the chart room'],
    themes: ['maps', 'trust'],
    mood: 'uneasy',
  },
  {
    title: 'Tobin Writes Back',
    summary: 'Tobin answers his sister by horn, lamp and bottle, and hears back at last.',
    text: `He wrote the reply three times and threw two away. The third he read aloud to Old Gull, who said it was sentimental and correct.

At midnight the ghost light flickered: once, twice, and then a long steady beam aimed straight at them, the kind of beam a keeper sends only to say I see you.`,
    characters: ['tobin', 'gull'],
    locations: ['the gallery'],
    themes: ['family', 'the past'],
    mood: 'hopeful',
  },
  {
    title: 'Storm at the Edge of the Map',
    summary: 'A storm hits as the island reaches the last mapped night; the lamp nearly goes dark.',
    text: `The storm did not arrive so much as happen all at once, the way a door slams. Rain came sideways through the vents, and the lamp, which must never go dark, coughed.

Mira held the wick steady with both hands while Ines read the barometer aloud and Tobin fought the shutters, and for eleven terrible seconds the sea was black all the way to the end of the world.

Then the flame caught, and across the water, exactly on time, the ghost light answered.`,
    characters: ['mira', 'tobin', 'ines'],
    locations: ['the lamp room'],
    themes: ['duty', 'the sea'],
    mood: 'ominous',
  },
  {
    title: 'Two Lights, One Sea',
    summary: 'The two islands meet at dawn; Tobin sees his sister for the first time in eleven years.',
    text: `At dawn the islands stopped a stone's throw apart, as politely as two ships in a narrow harbour.

A woman stood on the other gallery with her hand raised against the sun. Tobin did not wave. He simply climbed down the ladder, walked into the shallows up to his knees, and stood there until she did the same.`,
    characters: ['tobin', 'mira', 'ines', 'gull'],
    locations: ['the shallows'],
    themes: ['family', 'wonder'],
    mood: 'joyful',
  },
  {
    title: 'The Map Goes On',
    summary: 'Ines finds that the red line continues past the meeting; the island is not done moving.',
    text: `That evening Ines unrolled the map again and swore softly in three languages. The red line had grown overnight, past the meeting point and off the edge of the paper.

"It's not a schedule," she said. "It's an invitation."

Mira looked at the lamp, turning patiently above them, and then at Tobin, laughing with his sister on the landing stage, and began a new page in the log.`,
    characters: ['ines', 'mira', 'tobin'],
    locations: ['the chart room'],
    themes: ['maps', 'wonder'],
    mood: 'wistful',
  },
];

/** The story state the roster and the timeline show: four characters, their bonds and four plot threads. */
function storyAfter(base: StoryState, sceneIds: string[]): Pick<StoryState, 'characters' | 'plotThreads'> {
  const id = (index: number) => sceneIds[index] ?? null;
  return {
    characters: {
      mira: {
        ...base.characters.mira!,
        description:
          'Head keeper of the drifting light. Methodical, dryly funny, keeps the log as if the sea might audit it.',
        traits: { courage: 0.75, patience: 0.85, curiosity: 0.6, doubt: 0.25 },
        relationships: {
          tobin: { kind: 'friend', affinity: 0.7, trust: 0.8, note: 'eleven winters on one rock', since: id(0) },
          ines: { kind: 'ally', affinity: 0.35, trust: 0.55, since: id(6) },
          gull: { kind: 'neighbour', affinity: 0.5, trust: 0.6, since: id(2) },
        },
        arcProgress: 0.7,
        introducedIn: id(0),
        lastAppearance: id(11),
      },
      tobin: {
        ...base.characters.tobin!,
        description: 'Second keeper. Left the mainland eleven years ago and never said why. Believes in compasses.',
        traits: { curiosity: 0.8, stubbornness: 0.7, warmth: 0.65 },
        relationships: {
          mira: { kind: 'friend', affinity: 0.75, trust: 0.85, since: id(0) },
          gull: { kind: 'sparring partner', affinity: -0.2, trust: 0.4, note: 'the oil can incident', since: id(2) },
        },
        arcProgress: 0.9,
        introducedIn: id(0),
        lastAppearance: id(11),
      },
      ines: {
        id: 'ines',
        name: 'Ines Quarry',
        aliases: ['the cartographer'],
        description: 'A cartographer who rows out of nowhere with a map of where the island is going.',
        role: 'supporting',
        status: 'active',
        traits: { curiosity: 0.95, precision: 0.9, tact: 0.3 },
        relationships: { mira: { kind: 'colleague', affinity: 0.4, trust: 0.5, since: id(6) } },
        arcProgress: 0.4,
        introducedIn: id(6),
        lastAppearance: id(11),
        knowledge: [],
        appearance: 'oilskin coat, ink-stained fingers',
      },
      gull: {
        ...base.characters.gull!,
        description: 'Lives on the gallery rail. Talks, counts, and has views on herring.',
        traits: { wit: 0.9, patience: 0.2 },
        arcProgress: 0.3,
        introducedIn: id(2),
        lastAppearance: id(10),
      },
    },
    plotThreads: [
      {
        ...base.plotThreads[0]!,
        summary: 'Every night the island drifts one mile north. Nobody knows who or what is steering it.',
        status: 'advancing',
        openedIn: id(0),
        lastAdvancedIn: id(11),
        setups: ['The red line continues off the map.'],
      },
      {
        id: 'ghost-light',
        title: 'The ghost light',
        summary: 'A second lighthouse burns where none should stand, answering their signals exactly.',
        status: 'resolved',
        importance: 0.7,
        characters: ['mira', 'tobin'],
        openedIn: id(3),
        lastAdvancedIn: id(10),
        resolvedIn: id(10),
        setups: [],
      },
      {
        id: 'letters',
        title: "Tobin's letters",
        summary: 'Letters from the sister Tobin believed was dead.',
        status: 'resolved',
        importance: 0.6,
        characters: ['tobin'],
        openedIn: id(1),
        lastAdvancedIn: id(8),
        resolvedIn: id(8),
        setups: [],
      },
      {
        id: 'cartographer',
        title: "The cartographer's commission",
        summary: 'Who hired Ines to chart a moving island, and who drew the question mark?',
        status: 'dormant',
        importance: 0.5,
        characters: ['ines'],
        openedIn: id(6),
        lastAdvancedIn: id(7),
        resolvedIn: null,
        setups: ['The question mark in Tobin’s hand.'],
      },
    ],
  };
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.atom': 'application/atom+xml; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.jpg': 'image/jpeg',
  '.webp': 'image/webp',
};

/** A static file server for `root` on 127.0.0.1. */
async function serve(root: string): Promise<{ server: Server; origin: string }> {
  const server = createServer(async (request, response) => {
    const pathname = decodeURIComponent(new URL(request.url ?? '/', 'http://localhost').pathname);
    const file = path.join(root, pathname.endsWith('/') ? `${pathname}index.html` : pathname);
    if (!file.startsWith(root + path.sep)) {
      response.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, { 'content-type': CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream' });
      response.end(body);
    } catch {
      response.writeHead(404).end('not found');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function buildSite(directory: string): Promise<string[]> {
  const publisher = createFilesystemPublisher({ directory, siteTitle: 'The Lighthouse Keepers' });
  const illustrator = createProceduralIllustrator({ format: 'png', width: 1024, height: 576 });
  const base = makeStoryState('lighthouse', {
    bible: {
      ...makeStoryState().bible,
      premise:
        'Two keepers guard a lighthouse on an island that drifts one mile north every night. This season, something answers their light.',
    },
  });
  const sceneIds = SCENES.map((_, index) => `lighthouse-s${index}`);
  const pages: string[] = [];
  let state: StoryState = { ...base, ...storyAfter(base, []) };
  for (const [index, demo] of SCENES.entries()) {
    const chapterIndex = Math.floor(index / 6);
    state = { ...state, chapterIndex, chapterId: chapterIdFor(chapterIndex) };
    const scene = makeNextScene(state, {
      ...demo,
      importance: 0.6,
      imagePrompt: `${demo.title}: ${demo.summary}`,
      createdAt: new Date(Date.UTC(2026, 0, 5 + index * 2, 21)).toISOString(),
    });
    state = makeNextState(state, scene, storyAfter(base, sceneIds.slice(0, index + 1)));
    const image = await illustrator.generate(sceneIllustrationRequest(scene, state));
    const result = await publisher.publish({
      story: state,
      scene,
      image: { data: image.data, mediaType: image.mediaType, alt: scene.summary },
    });
    pages.push(result.ids.find((id) => id.endsWith('.html'))!);
  }
  return pages;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const keep = args.includes('--keep');
  const output = path.resolve(args.find((arg) => !arg.startsWith('--')) ?? 'docs/images');
  const directory = await mkdtemp(path.join(os.tmpdir(), 'storyloom-demo-site-'));
  const pages = await buildSite(directory);
  const { server, origin } = await serve(directory);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const problems: string[] = [];
  try {
    await mkdir(output, { recursive: true });
    const shots: Array<{
      page: string;
      file: string;
      colorScheme: 'light' | 'dark';
      height: number;
      fullPage?: boolean;
    }> = [
      { page: 'index.html', file: 'site-index.png', colorScheme: 'light', height: 1300 },
      { page: pages[6]!, file: 'site-scene.png', colorScheme: 'light', height: 900, fullPage: true },
      { page: 'characters.html', file: 'site-characters.png', colorScheme: 'dark', height: 1100 },
      { page: 'threads.html', file: 'site-threads.png', colorScheme: 'dark', height: 900 },
    ];
    for (const shot of shots) {
      const context = await browser.newContext({
        viewport: { width: 1280, height: shot.height },
        colorScheme: shot.colorScheme,
        deviceScaleFactor: 1,
      });
      const page = await context.newPage();
      page.on('console', (message) => {
        if (message.type() === 'error') problems.push(`${shot.page}: ${message.text()}`);
      });
      page.on('requestfailed', (request) => problems.push(`${shot.page}: failed ${request.url()}`));
      page.on('response', (response) => {
        if (response.status() >= 400) problems.push(`${shot.page}: ${response.status()} ${response.url()}`);
      });
      await page.goto(`${origin}/${shot.page}`, { waitUntil: 'networkidle' });
      await page.screenshot({ path: path.join(output, shot.file), fullPage: shot.fullPage ?? false });
      await context.close();
      console.log(`wrote ${path.relative(process.cwd(), path.join(output, shot.file))}`);
    }
  } finally {
    await browser.close();
    server.close();
    if (keep) console.log(`site kept in ${directory}`);
    else await rm(directory, { recursive: true, force: true });
  }
  if (problems.length > 0) {
    console.error(`The browser reported problems:\n${problems.join('\n')}`);
    process.exitCode = 1;
  }
}

await main();
