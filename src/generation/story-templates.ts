/**
 * Built-in story templates: complete starting states (bible, cast, threads, world) that the procedural narrator can
 * run on at once, for `storyloom init` and the offline demo.
 *
 * @module
 */
import { type Clock, isoNow, systemClock } from '../core/clock.js';
import { ValidationError } from '../core/errors.js';
import {
  chapterIdFor,
  type StoryBible,
  type StoryState,
  type StoryStateInput,
  StoryStateSchema,
} from '../state/schema.js';

/**
 * A starting point for a story: everything of a `StoryState` but its id and timestamps.
 *
 * @example
 * ```ts
 * import { storyTemplates, type StoryTemplate } from 'storyloom';
 * const template: StoryTemplate = storyTemplates['lighthouse-keepers']!;
 * console.log(template.bible.title);
 * ```
 */
export interface StoryTemplate {
  /** The key of the template in `storyTemplates`. */
  name: string;
  /** One line for a chooser (`storyloom init --template`). */
  description: string;
  bible: StoryBible;
  characters: StoryStateInput['characters'];
  plotThreads: StoryStateInput['plotThreads'];
  /**
   * The starting world. `locations` (a list of place names) is read by the procedural narrator, which moves the
   * story between them; `season`, `weather` and `timeOfDay` are advanced by it.
   */
  worldState: StoryStateInput['worldState'];
}

const lighthouseKeepers: StoryTemplate = {
  name: 'lighthouse-keepers',
  description: 'Two keepers guard a lamp on an island that drifts north every night.',
  bible: {
    title: 'The Lighthouse Keepers',
    premise:
      'Mira and Tobin keep the lamp of a lighthouse on an island that drifts one mile north each night. Nobody knows ' +
      'where it is going, and the lamp must never go dark.',
    genre: 'fantasy',
    tone: 'wistful, quietly funny',
    worldRules: [
      'The island drifts one mile north each night.',
      'The lamp must never go dark.',
      'Ships that see the lamp remember the island; ships that do not, forget it.',
    ],
    style: 'ink and watercolour, muted blues and warm lamplight',
    chapterLength: 8,
  },
  characters: {
    mira: {
      id: 'mira',
      name: 'Mira Vale',
      aliases: ['the keeper'],
      description: 'The elder keeper, practical and stubborn, who talks to the lamp when she thinks no one listens.',
      role: 'main',
      traits: { courage: 0.7, patience: 0.4, humour: 0.5 },
      relationships: { tobin: { kind: 'colleague', affinity: 0.4, trust: 0.6 } },
      appearance: 'weathered oilskin coat, grey braid, brass spyglass',
    },
    tobin: {
      id: 'tobin',
      name: 'Tobin Marsh',
      description: 'The apprentice keeper, a collector of tide tables and unanswerable questions.',
      role: 'main',
      traits: { curiosity: 0.8, courage: 0.4, humour: 0.6 },
      relationships: { mira: { kind: 'mentor', affinity: 0.5, trust: 0.7 } },
      appearance: 'too-large wool jumper, ink-stained fingers, round spectacles',
    },
    gull: {
      id: 'gull',
      name: 'Old Gull',
      description: 'A very old herring gull who seems to understand every word and answers none.',
      role: 'supporting',
      traits: { cunning: 0.7 },
      appearance: 'a grey-backed gull with one bent feather',
    },
  },
  plotThreads: [
    {
      id: 'drift',
      title: 'Why the island drifts',
      summary: 'Every night the island moves a mile north. The keepers have never asked why, until now.',
      importance: 0.8,
      characters: ['mira', 'tobin'],
      setups: ['the compass in the lamp room points south', 'the logbook has a page torn out'],
    },
  ],
  worldState: {
    season: 'autumn',
    weather: 'fog',
    timeOfDay: 'dusk',
    locations: ['the lamp room', 'the rocky shore', 'the keepers’ cottage', 'the tide pools', 'the old boathouse'],
  },
};

const glasshouseShip: StoryTemplate = {
  name: 'glasshouse-ship',
  description: 'A gardener on a generation ship finds that the orchard is older than the ship.',
  bible: {
    title: 'The Glasshouse Ship',
    premise:
      'On the generation ship Perennial, the orchard decks feed eleven thousand sleepers. Its gardener, Ines Okafor, ' +
      'finds tree rings that say the orchard was planted long before the ship was built.',
    genre: 'science fiction',
    tone: 'hopeful, curious, a little eerie',
    worldRules: [
      'Nobody may wake a sleeper before landfall.',
      'The ship’s mind, Verdigris, cannot lie but can decline to answer.',
      'Fruit grown on board may not leave the orchard decks.',
    ],
    style: 'soft-focus retro science fiction, greens and copper, glowing glass',
    chapterLength: 6,
  },
  characters: {
    ines: {
      id: 'ines',
      name: 'Ines Okafor',
      description: 'Head gardener of the orchard decks, patient with plants and impatient with people.',
      role: 'main',
      traits: { curiosity: 0.7, patience: 0.8, courage: 0.5 },
      relationships: { verdigris: { kind: 'colleague', affinity: 0.3, trust: 0.5 } },
      appearance: 'green overalls, pruning knife on a lanyard, close-cropped hair',
    },
    verdigris: {
      id: 'verdigris',
      name: 'Verdigris',
      aliases: ['the ship'],
      description: 'The ship’s mind: courteous, ancient, and careful with the truth.',
      role: 'main',
      traits: { cunning: 0.6, loyalty: 0.7 },
      relationships: { ines: { kind: 'ward', affinity: 0.5, trust: 0.6 } },
      appearance: 'a copper-green glow in every lamp at once',
    },
    pell: {
      id: 'pell',
      name: 'Pell Harrow',
      description: 'A maintenance engineer who is supposed to be asleep.',
      role: 'supporting',
      traits: { humour: 0.7, courage: 0.6 },
      appearance: 'a frost-burned cryo suit worn as a jacket',
    },
  },
  plotThreads: [
    {
      id: 'tree-rings',
      title: 'The rings of the oldest tree',
      summary: 'The orchard’s oldest apple tree has more rings than the ship has years.',
      importance: 0.8,
      characters: ['ines'],
      setups: ['a ring of ash in the core sample', 'Verdigris changed the subject'],
    },
  ],
  worldState: {
    season: 'spring',
    weather: 'mist',
    timeOfDay: 'morning',
    locations: ['the orchard deck', 'the seed vault', 'the cryo gallery', 'the observation blister', 'the pump room'],
  },
};

const cartographersDebt: StoryTemplate = {
  name: 'cartographers-debt',
  description: 'In a city of canals, a mapmaker owes a debt to a street that does not exist.',
  bible: {
    title: 'The Cartographer’s Debt',
    premise:
      'In the canal city of Lirrow, streets appear on maps before they are built. Cartographer Saskia Brandt drew a ' +
      'street by mistake, and now it exists, and someone who lives on it has come to collect.',
    genre: 'mystery',
    tone: 'atmospheric, wry, slowly tightening',
    worldRules: [
      'What is drawn on an official map of Lirrow becomes true within a week.',
      'Erasing a street from a map is a crime punishable by exile.',
      'The canals freeze only when someone in the city tells a true lie.',
    ],
    style: 'etched city maps come alive, sepia and teal, lantern light on water',
    chapterLength: 7,
  },
  characters: {
    saskia: {
      id: 'saskia',
      name: 'Saskia Brandt',
      description: 'A meticulous cartographer with one unforgivable mistake to her name.',
      role: 'main',
      traits: { patience: 0.7, honesty: 0.6, courage: 0.4 },
      relationships: { emil: { kind: 'rival', affinity: -0.2, trust: 0.3 } },
      appearance: 'ink-blue coat, brass compasses in the breast pocket',
    },
    emil: {
      id: 'emil',
      name: 'Emil Castellane',
      description: 'Inspector of the Bureau of Maps, charming and never entirely on duty.',
      role: 'main',
      traits: { cunning: 0.7, humour: 0.6 },
      relationships: { saskia: { kind: 'rival', affinity: 0.2, trust: 0.3 } },
      appearance: 'grey greatcoat, silver badge shaped like a compass rose',
    },
    widow: {
      id: 'widow',
      name: 'The Widow of Ninth Lane',
      description: 'The first resident of the street Saskia drew by mistake.',
      role: 'supporting',
      traits: { cunning: 0.8, patience: 0.9 },
      appearance: 'black lace veil, a ledger bound in canal-green leather',
    },
  },
  plotThreads: [
    {
      id: 'ninth-lane',
      title: 'The street that should not exist',
      summary: 'Ninth Lane appeared a week after Saskia drew it. Its residents say they have always lived there.',
      importance: 0.8,
      characters: ['saskia', 'widow'],
      setups: ['the debt is to be paid at the spring thaw', 'the Widow knows Saskia’s mother’s name'],
    },
  ],
  worldState: {
    season: 'winter',
    weather: 'snow',
    timeOfDay: 'night',
    locations: ['Ninth Lane', 'the Bureau of Maps', 'the Grand Canal', 'Saskia’s workshop', 'the frozen lock gates'],
  },
};

/**
 * Freezes `value` and everything it holds: every story made from a template shares it, so an edit to a nested part
 * (a caller tuning "its" `bible.chapterLength`) would change every later story.
 */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const inner of Object.values(Object.freeze(value))) deepFreeze(inner);
  }
  return value;
}

/**
 * The built-in templates, by name, frozen all the way down. `lighthouse-keepers` is the default.
 *
 * @example
 * ```ts
 * import { storyTemplates } from 'storyloom';
 * for (const template of Object.values(storyTemplates)) console.log(template.name, '-', template.description);
 * ```
 */
export const storyTemplates: Readonly<Record<string, StoryTemplate>> = deepFreeze({
  [lighthouseKeepers.name]: lighthouseKeepers,
  [glasshouseShip.name]: glasshouseShip,
  [cartographersDebt.name]: cartographersDebt,
});

/**
 * The template `storyloom init` uses when none is named.
 *
 * @example
 * ```ts
 * import { defaultStoryTemplate } from 'storyloom';
 * defaultStoryTemplate.bible.title; // 'The Lighthouse Keepers'
 * ```
 */
export const defaultStoryTemplate: StoryTemplate = lighthouseKeepers;

/**
 * A valid initial `StoryState` (version 0, no scene yet) from a built-in template. Throws a `ValidationError` naming
 * the known templates when `templateName` is not one of them, or when `storyId` is not a valid id.
 *
 * @example
 * ```ts
 * import { createMemoryStateStore, createStoryFromTemplate } from 'storyloom';
 * const state = createStoryFromTemplate('lighthouse-keepers', 'lighthouse');
 * await createMemoryStateStore().create(state);
 * ```
 */
export function createStoryFromTemplate(templateName: string, storyId: string, clock: Clock = systemClock): StoryState {
  const template = Object.hasOwn(storyTemplates, templateName) ? storyTemplates[templateName] : undefined;
  if (template === undefined) {
    const known = Object.keys(storyTemplates).join(', ');
    throw new ValidationError(`Unknown story template "${templateName}"; choose one of: ${known}`, {
      problems: [{ path: 'templateName', message: `must be one of: ${known}` }],
    });
  }
  const now = isoNow(clock);
  const parsed = StoryStateSchema.safeParse({
    storyId,
    version: 0,
    chapterId: chapterIdFor(0),
    chapterIndex: 0,
    sceneId: null,
    sceneCount: 0,
    // A deep copy, so a caller editing its state can never change the shared template.
    bible: structuredClone(template.bible),
    characters: structuredClone(template.characters),
    worldState: structuredClone(template.worldState),
    plotThreads: structuredClone(template.plotThreads),
    userInfluenceQueue: [],
    createdAt: now,
    updatedAt: now,
  });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message }));
    throw new ValidationError(`Cannot create story "${storyId}": ${problems[0]?.path} ${problems[0]?.message}`, {
      problems,
    });
  }
  return parsed.data;
}
