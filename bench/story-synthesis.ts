/**
 * A deterministic synthetic serial for the context benchmarks: a cast, places, threads and scene texts of realistic
 * length and vocabulary, so a 100,000-scene story can be built in seconds and is the same on every run. Scene `i`
 * depends only on `i` (and the seed), so a 1,000-scene story is the first 1,000 scenes of the 100,000-scene one.
 */

import { seededRandom } from '../src/core/seeded-random.js';
import { chapterIdFor, type Scene, SceneSchema, type StoryState, StoryStateSchema } from '../src/state/schema.js';

export const SCENES_PER_CHAPTER = 24;

export const CAST = [
  { id: 'mira', name: 'Mira Vale', aliases: ['the keeper'], role: 'main' as const },
  { id: 'tobin', name: 'Tobin Marsh', aliases: [], role: 'main' as const },
  { id: 'sela', name: 'Sela Quint', aliases: ['the cartographer'], role: 'main' as const },
  { id: 'oren', name: 'Oren Halloway', aliases: ['the warden'], role: 'supporting' as const },
  { id: 'gull', name: 'Old Gull', aliases: [], role: 'supporting' as const },
  { id: 'kestrel', name: 'Kestrel Ash', aliases: ['the smuggler'], role: 'supporting' as const },
  { id: 'brannock', name: 'Brannock Fell', aliases: [], role: 'supporting' as const },
  { id: 'ysolde', name: 'Ysolde Reyne', aliases: ['the archivist'], role: 'supporting' as const },
  { id: 'pell', name: 'Pell Cotter', aliases: [], role: 'minor' as const },
  { id: 'wren', name: 'Wren Abernathy', aliases: [], role: 'minor' as const },
  { id: 'dunmore', name: 'Captain Dunmore', aliases: [], role: 'minor' as const },
  { id: 'ilse', name: 'Ilse Varga', aliases: [], role: 'minor' as const },
];

export const PLACES = [
  'lighthouse',
  'drowned archive',
  'harbor market',
  'salt marsh',
  'bell tower',
  'glass orchard',
  'north cliffs',
  'smugglers cave',
  'old chapel',
  'tide mill',
  'ferry landing',
  'lamp room',
  'customs house',
  'kelp fields',
  'widow walk',
  'signal station',
];

export const THEMES = ['duty', 'loss', 'trust', 'memory', 'storms', 'betrayal', 'home', 'secrets', 'hope', 'debt'];

export const THREADS = [
  { id: 'drift', title: 'Why the island drifts', characters: ['mira', 'sela'] },
  { id: 'lamp', title: 'The failing lamp', characters: ['mira', 'tobin'] },
  { id: 'ledger', title: 'The missing customs ledger', characters: ['oren', 'kestrel'] },
  { id: 'archive', title: 'What the archive drowned', characters: ['ysolde', 'sela'] },
  { id: 'debt', title: "Tobin's debt to the smugglers", characters: ['tobin', 'kestrel'] },
  { id: 'bells', title: 'The bells that ring at low tide', characters: ['gull', 'brannock'] },
];

const OBJECTS = [
  'brass key',
  'salt-stained map',
  'cracked lens',
  'tide table',
  'sealed letter',
  'copper lantern',
  'whale-bone compass',
  'ledger',
  'rope ladder',
  'signal flag',
  'glass float',
  'iron bell',
  'oilskin coat',
  'ship in a bottle',
  'drowned book',
];
const VERBS = [
  'searched',
  'argued over',
  'hid',
  'repaired',
  'studied',
  'traded',
  'buried',
  'polished',
  'stole',
  'returned',
  'counted',
  'mended',
  'unlocked',
  'sketched',
  'weighed',
];
const ADJECTIVES = [
  'grey',
  'restless',
  'quiet',
  'bitter',
  'bright',
  'salt-heavy',
  'windless',
  'amber',
  'weary',
  'strange',
  'cold',
  'patient',
  'stormy',
  'faded',
  'sharp',
];
const WEATHER = [
  'The fog came in low over the water',
  'Rain drummed on the slate roofs',
  'A hard wind pulled at the shutters',
  'The sea lay flat and silver',
  'Gulls circled above the breakers',
  'Thunder rolled somewhere to the south',
  'The tide went out farther than anyone remembered',
  'Frost whitened the rails of the gallery',
];
const FEELINGS = [
  'doubt',
  'relief',
  'anger',
  'tenderness',
  'fear',
  'resolve',
  'guilt',
  'wonder',
  'suspicion',
  'longing',
];
const TITLES = [
  'The Long Watch',
  'Low Tide',
  'A Ledger of Salt',
  'The Fog Bell',
  'What the Lamp Saw',
  'Crossing at Dusk',
  'The Drowned Shelf',
  'Market Day',
  'A Key Without a Door',
  'North of the Cliffs',
  'The Smugglers Bargain',
  'Glass and Thorn',
];

const pick = <T>(random: () => number, items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

function shuffle<T>(random: () => number, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const EPOCH = Date.UTC(2026, 0, 1);

/** Scene `index` of the synthetic serial (about 170–230 words: one indexed chunk). */
export function synthesizeScene(storyId: string, index: number): Scene {
  const random = seededRandom(0x5eed + index * 7919);
  const cast = shuffle(random, CAST).slice(0, 2 + Math.floor(random() * 3));
  const [lead, other] = [cast[0]!, cast[1]!];
  const place = pick(random, PLACES);
  const second = pick(random, PLACES);
  const object = pick(random, OBJECTS);
  const thread = THREADS[index % THREADS.length]!;
  const sentences: string[] = [`${pick(random, WEATHER)} as ${lead.name} reached the ${place}.`];
  const count = 9 + Math.floor(random() * 4);
  for (let s = 0; s < count; s++) {
    const who = pick(random, cast);
    const whom = pick(random, cast);
    switch (Math.floor(random() * 6)) {
      case 0:
        sentences.push(
          `${who.name} ${pick(random, VERBS)} the ${pick(random, ADJECTIVES)} ${pick(random, OBJECTS)} while ${whom.name} watched the ${pick(random, PLACES)} with ${pick(random, FEELINGS)}.`,
        );
        break;
      case 1:
        sentences.push(
          `"We cannot leave the ${object} at the ${second}," ${who.name} said, and ${whom.name} answered with a ${pick(random, ADJECTIVES)} laugh.`,
        );
        break;
      case 2:
        sentences.push(
          `Nobody spoke of ${thread.title.toLowerCase()}, though ${who.name} felt the ${pick(random, FEELINGS)} of it in every ${pick(random, ADJECTIVES)} hour.`,
        );
        break;
      case 3:
        sentences.push(
          `Down by the ${pick(random, PLACES)} the ${pick(random, ADJECTIVES)} light caught on a ${pick(random, OBJECTS)}, and ${who.name} remembered an old promise.`,
        );
        break;
      case 4:
        sentences.push(
          `${who.name} ${pick(random, VERBS)} a ${pick(random, OBJECTS)} for ${whom.name}, counting the steps back to the ${pick(random, PLACES)} twice.`,
        );
        break;
      default:
        sentences.push(
          `By nightfall the ${pick(random, ADJECTIVES)} ${pick(random, OBJECTS)} was gone, and ${who.name} suspected ${whom.name} of more than ${pick(random, FEELINGS)}.`,
        );
    }
  }
  const chapterIndex = Math.floor(index / SCENES_PER_CHAPTER);
  return SceneSchema.parse({
    id: `s${index}`,
    storyId,
    chapterId: chapterIdFor(chapterIndex),
    index,
    title: `${pick(random, TITLES)} ${index + 1}`,
    text: sentences.join(' '),
    summary: `${lead.name} and ${other.name} deal with the ${object} at the ${place}; ${thread.title.toLowerCase()} weighs on them.`,
    characters: cast.map((member) => member.id),
    locations: [place, second].filter((value, at, all) => all.indexOf(value) === at),
    themes: [pick(random, THEMES), pick(random, THEMES)].filter((value, at, all) => all.indexOf(value) === at),
    importance: Math.round(random() * 100) / 100,
    createdAt: new Date(EPOCH + index * 3_600_000).toISOString(),
    stateVersion: index + 1,
  });
}

/** The story state right after `sceneCount` synthetic scenes. */
export function synthesizeState(storyId: string, sceneCount: number): StoryState {
  const chapterIndex = Math.floor(sceneCount / SCENES_PER_CHAPTER);
  const lastScene = sceneCount > 0 ? `s${sceneCount - 1}` : null;
  return StoryStateSchema.parse({
    storyId,
    version: sceneCount,
    chapterId: chapterIdFor(chapterIndex),
    chapterIndex,
    sceneId: lastScene,
    sceneCount,
    bible: {
      title: 'The Lighthouse Keepers',
      premise:
        'Keepers guard a lighthouse on an island that drifts north each night, and the town below owes everyone.',
      genre: 'fantasy',
      tone: 'wistful, quietly funny',
      worldRules: [
        'The island drifts one mile north each night.',
        'The lamp must never go dark.',
        'Whatever the archive drowns, the sea returns within a year.',
      ],
      style: 'ink and watercolour, muted blues',
    },
    characters: Object.fromEntries(
      CAST.map((member, at) => [
        member.id,
        {
          ...member,
          description: `${member.name} has lived on the island for ${10 + at} years and knows the ${PLACES[at % PLACES.length]} best.`,
          traits: { courage: (at % 5) / 5, curiosity: ((at + 2) % 5) / 5 },
          lastAppearance: lastScene,
          knowledge: [`The ${PLACES[(at + 3) % PLACES.length]} floods at the spring tide.`],
        },
      ]),
    ),
    worldState: { season: 'autumn', lampOil: 'low' },
    plotThreads: THREADS.map((thread, at) => ({
      ...thread,
      summary: `${thread.title}: the keepers have found ${at + 2} clues so far.`,
      status: 'advancing',
      importance: 0.5 + at / 20,
      openedIn: sceneCount > at ? `s${at}` : null,
      lastAdvancedIn: lastScene,
    })),
    userInfluenceQueue: [],
    createdAt: new Date(EPOCH).toISOString(),
    updatedAt: new Date(EPOCH + Math.max(0, sceneCount - 1) * 3_600_000).toISOString(),
  });
}

/** The export lines of a synthetic story (for `importStory`): the state, the chapter-start snapshot, every scene. */
export function* synthesizeExport(storyId: string, sceneCount: number): Generator<string> {
  const state = synthesizeState(storyId, sceneCount);
  const chapterStart = state.chapterIndex * SCENES_PER_CHAPTER;
  const snapshots = chapterStart < sceneCount ? [synthesizeState(storyId, chapterStart)] : [];
  yield JSON.stringify({ kind: 'storyloom-export', formatVersion: 1, storyId });
  yield JSON.stringify({ kind: 'state', state });
  for (const snapshot of snapshots) yield JSON.stringify({ kind: 'snapshot', state: snapshot });
  for (let index = 0; index < sceneCount; index++) {
    yield JSON.stringify({ kind: 'scene', scene: synthesizeScene(storyId, index) });
  }
  yield JSON.stringify({
    kind: 'end',
    counts: { snapshots: snapshots.length, scenes: sceneCount, influences: 0, publications: 0 },
  });
}

/** `count` varied retrieval queries of the kinds an episode asks: names, places, threads, objects, free text. */
export function synthesizeQueries(count: number, seed = 42): string[] {
  const random = seededRandom(seed);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    const who = pick(random, CAST);
    const whom = pick(random, CAST);
    const place = pick(random, PLACES);
    const object = pick(random, OBJECTS);
    const thread = pick(random, THREADS);
    switch (i % 6) {
      case 0:
        queries.push(`${who.name} returns to the ${place}`);
        break;
      case 1:
        queries.push(`${who.name.split(' ')[0]} confronts ${whom.name.split(' ')[0]} about the ${object}`);
        break;
      case 2:
        queries.push(`${thread.title}: what do the keepers know so far?`);
        break;
      case 3:
        queries.push(`where was the ${pick(random, ADJECTIVES)} ${object} last seen`);
        break;
      case 4:
        queries.push(`a ${pick(random, FEELINGS)} reunion at the ${place} after the storm`);
        break;
      default:
        queries.push(
          `readers voted: ${who.name.split(' ')[0]} must ${pick(random, VERBS).split(' ')[0]} the ${object}`,
        );
    }
  }
  return queries;
}
