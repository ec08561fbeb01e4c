/**
 * The offline `SceneGenerator`: a procedural narrator that writes a readable, varied episode from the story state
 * alone, with no model, no network and no credentials. The demo, the tests and a story without an API key run on it.
 *
 * It plays the part a model would: it picks the characters of the scene, chooses a beat that fits where the chapter
 * stands, moves plot threads through their life cycle (open → advanced → resolved), introduces new characters over
 * time, changes traits, relationships and arc progress within their bounds, gives the characters present what they
 * learned, advances time and weather, closes chapters, and takes the audience's winning influence into the story as
 * the characters' own decision. Every output passes `SceneOutputSchema` and `applyDelta`.
 *
 * Output depends only on the request and the narrator's seed: a retried episode writes the same scene byte for byte.
 *
 * @module
 */
import { hashFeature } from '../context/hashing-embedder.js';
import { throwIfAborted, ValidationError } from '../core/errors.js';
import { callListener } from '../core/listener.js';
import { ellipsize } from '../core/text.js';
import {
  type CharacterState,
  LIMITS,
  type PlotThread,
  type StateDelta,
  StateDeltaSchema,
  type StoryState,
} from '../state/schema.js';
import {
  emptyUsage,
  type ResolvedInfluence,
  type SceneDraft,
  SceneDraftSchema,
  type SceneGenerationResult,
  type SceneGenerator,
  type SceneRequest,
} from './scene-generator.js';

/**
 * Options of `createProceduralNarrator`.
 *
 * @example
 * ```ts
 * import { createProceduralNarrator, type ProceduralNarratorOptions } from 'storyloom';
 * const options: ProceduralNarratorOptions = { seed: 7, chapterLength: 6 };
 * const narrator = createProceduralNarrator(options);
 * ```
 */
export interface ProceduralNarratorOptions {
  /** Mixed with each request's seed: two narrators with different seeds tell the same story differently. Default 0. */
  seed?: number;
  /** Scenes per chapter; overrides the bible's `chapterLength`. */
  chapterLength?: number;
  /** Above this many active characters no one new is introduced, unless the audience asks for it. Default 24. */
  maxActiveCharacters?: number;
}

/**
 * The narrator's model id. The version changes whenever the same request would produce a different scene.
 *
 * @example
 * ```ts
 * import { PROCEDURAL_NARRATOR_MODEL_ID } from 'storyloom';
 * console.log(PROCEDURAL_NARRATOR_MODEL_ID); // 'procedural-narrator-v2'
 * ```
 */
export const PROCEDURAL_NARRATOR_MODEL_ID = 'procedural-narrator-v2';

/**
 * Creates the procedural narrator (`provider: 'procedural'`).
 *
 * @example
 * ```ts
 * import { applyDelta, createProceduralNarrator } from 'storyloom';
 * const narrator = createProceduralNarrator({ seed: 1 });
 * const { scene, delta } = await narrator.generate(request);
 * const result = applyDelta(request.state, delta, { ...scene, id: request.sceneId, storyId: request.storyId,
 *   chapterId: request.chapterId, index: request.sceneIndex, createdAt: new Date().toISOString(),
 *   stateVersion: request.state.version + 1, influencesApplied: delta.influencesApplied });
 * ```
 */
export function createProceduralNarrator(options: ProceduralNarratorOptions = {}): SceneGenerator {
  const problems: Array<{ path: string; message: string }> = [];
  const seed = options.seed ?? 0;
  if (!Number.isFinite(seed)) problems.push({ path: 'seed', message: 'must be a finite number' });
  const chapterLength = options.chapterLength;
  if (chapterLength !== undefined && (!Number.isInteger(chapterLength) || chapterLength < 1 || chapterLength > 1000)) {
    problems.push({ path: 'chapterLength', message: 'must be an integer within 1..1000' });
  }
  const maxActiveCharacters = options.maxActiveCharacters ?? 24;
  if (!Number.isInteger(maxActiveCharacters) || maxActiveCharacters < 1) {
    problems.push({ path: 'maxActiveCharacters', message: 'must be a positive integer' });
  }
  if (problems.length > 0) {
    throw new ValidationError(`Invalid procedural narrator options: ${problems[0]?.path} ${problems[0]?.message}`, {
      problems,
    });
  }
  return {
    specificationVersion: 'v1',
    provider: 'procedural',
    modelId: PROCEDURAL_NARRATOR_MODEL_ID,
    async generate(request, generateOptions = {}): Promise<SceneGenerationResult> {
      throwIfAborted(generateOptions.signal);
      // A listener that throws or rejects is ignored, as the Claude generator does: progress never fails a scene.
      callListener(generateOptions.onProgress, { type: 'attempt', attempt: 1 });
      const { scene, delta } = narrate(request, { seed, chapterLength, maxActiveCharacters });
      callListener(generateOptions.onProgress, { type: 'text', characters: scene.text.length });
      return { scene, delta, usage: emptyUsage(), modelId: PROCEDURAL_NARRATOR_MODEL_ID, attempts: 1 };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Randomness: a seeded PRNG, so the same request always tells the same scene.

/** mulberry32: tiny, fast and good enough for choosing words; not for anything secret. */
class Dice {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(exclusiveMax: number): number {
    return Math.floor(this.next() * exclusiveMax);
  }
  chance(probability: number): boolean {
    return this.next() < probability;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  weighted<T>(items: ReadonlyArray<readonly [T, number]>): T {
    const total = items.reduce((sum, [, weight]) => sum + Math.max(0, weight), 0);
    let roll = this.next() * total;
    for (const [item, weight] of items) {
      roll -= Math.max(0, weight);
      if (roll < 0) return item;
    }
    return items[items.length - 1]![0];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Templates: `{a|b|c}` picks one alternative, `$slot` inserts a value. Alternatives are expanded before slots are
// filled, in one pass each, so a character name or an audience decision holding `{`, `|` or `$` is inserted as is
// and never read as template syntax.

/** A slot holds one value, or several of which each use picks one (weather is described differently each time). */
type Slots = Readonly<Record<string, string | readonly string[]>>;

function fill(template: string, slots: Slots, dice: Dice, capitalize = true): string {
  const expanded = template.replace(/\{([^{}]*)\}/g, (_, body: string) => dice.pick(body.split('|')));
  const filled = expanded.replace(/\$([A-Za-z]+)/g, (match, key: string) => {
    const value = slots[key];
    return value === undefined ? match : typeof value === 'string' ? value : dice.pick(value);
  });
  return capitalize ? filled.charAt(0).toUpperCase() + filled.slice(1) : filled;
}

/**
 * Templates already used in the scene being written, so a scene never uses one template twice. Module state is safe
 * here: `narrate` resets it and runs to the end synchronously, so two generations can never interleave.
 */
let usedTemplates = new Set<string>();

function sentences(templates: readonly string[], count: number, slots: Slots, dice: Dice): string[] {
  const pool = templates.filter((template) => !usedTemplates.has(template));
  const result: string[] = [];
  for (let index = 0; index < count && pool.length > 0; index++) {
    const position = dice.int(pool.length);
    usedTemplates.add(pool[position]!);
    result.push(fill(pool[position]!, slots, dice));
    pool.splice(position, 1);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// The world: settings, time, weather.

interface Setting {
  places: string[];
  features: string[];
  sounds: string[];
  objects: string[];
  creatures: string[];
  themes: string[];
}

const SETTINGS: Record<'coast' | 'ship' | 'city' | 'wild', Setting> = {
  coast: {
    places: ['the lamp room', 'the rocky shore', 'the cottage kitchen', 'the tide pools', 'the old boathouse'],
    features: ['the lamp', 'the tide', 'the salt wind', 'the breakwater', 'the spiral stair'],
    sounds: ['the surf dragging at the shingle', 'a bell buoy far out', 'gulls quarrelling', 'the lamp’s slow tick'],
    objects: ['a brass compass', 'a bottle with a letter inside', 'a drowned logbook', 'a ship’s bell', 'a blue key'],
    creatures: ['the gulls', 'the seals', 'the crabs in the rocks', 'the herons'],
    themes: ['the sea', 'duty', 'solitude'],
  },
  ship: {
    places: ['the orchard deck', 'the seed vault', 'the cryo gallery', 'the observation blister', 'the pump room'],
    features: ['the grow lamps', 'the hull', 'the recyclers', 'the long corridor', 'the star field'],
    sounds: ['the hum of the recyclers', 'a ventilation fan ticking', 'water moving in the pipes', 'a distant chime'],
    objects: ['a core sample', 'a sealed seed packet', 'an old access badge', 'a cracked data slate', 'a copper leaf'],
    creatures: ['the pollinator drones', 'the orchard bees', 'the maintenance crabs'],
    themes: ['memory', 'growth', 'isolation'],
  },
  city: {
    places: ['the Grand Canal', 'the Bureau of Maps', 'a narrow lane', 'the workshop', 'the lock gates'],
    features: ['the canals', 'the lamplighters', 'the bridges', 'the clock tower', 'the market stalls'],
    sounds: ['boat hulls knocking together', 'a clock striking somewhere', 'footsteps on wet stone', 'a street organ'],
    objects: ['a folded map', 'a ledger in green leather', 'a silver compass rose', 'an unsigned letter', 'a key'],
    creatures: ['the canal cats', 'the pigeons', 'the herons on the lock gates'],
    themes: ['secrets', 'debt', 'the city'],
  },
  wild: {
    places: ['the forest edge', 'the ruined chapel', 'the river ford', 'the hilltop camp', 'the old mill'],
    features: ['the trees', 'the river', 'the road', 'the ruins', 'the hills'],
    sounds: ['wind in the pines', 'the river over stones', 'an owl', 'a dog barking far away'],
    objects: ['a carved token', 'a torn banner', 'a sealed letter', 'an old map', 'a silver ring'],
    creatures: ['the crows', 'the foxes', 'the deer', 'the owls'],
    themes: ['journey', 'loyalty', 'the unknown'],
  },
};

function chooseSetting(state: StoryState): Setting {
  const text = `${state.bible.title} ${state.bible.premise} ${state.bible.genre}`.toLowerCase();
  let base = SETTINGS.wild;
  if (/lighthouse|island|sea|coast|harbou?r|ship(?!s? mind)|tide/.test(text)) base = SETTINGS.coast;
  if (/space|starship|generation ship|orbit|station|planet|science fiction|sci-fi/.test(text)) base = SETTINGS.ship;
  if (/city|canal|street|town|map|detective|mystery/.test(text)) base = SETTINGS.city;
  // A story can name its own places in `worldState.locations`; the narrator moves the story between them.
  const locations = state.worldState.locations;
  if (Array.isArray(locations)) {
    const places = locations.filter(
      (place): place is string =>
        typeof place === 'string' && place.trim().length > 0 && place.length <= LIMITS.nameLength,
    );
    if (places.length > 0) return { ...base, places: places.map((place) => place.trim()) };
  }
  return base;
}

const TIMES = ['dawn', 'morning', 'noon', 'afternoon', 'dusk', 'evening', 'night', 'midnight'] as const;
const SEASONS = ['spring', 'summer', 'autumn', 'winter'] as const;
const WEATHER: Record<string, string[]> = {
  clear: ['the sky was clear and hard as glass', 'there was not a cloud anywhere', 'the air was clean and still'],
  fog: [
    'fog had come in thick enough to lean on',
    'the fog took the edges off everything',
    'a white fog pressed close',
  ],
  rain: ['rain came down in long grey ropes', 'a steady rain drummed on every surface', 'the rain would not let up'],
  wind: ['the wind had a voice tonight', 'a wind worried at every loose thing', 'gusts shoved at doors and shutters'],
  storm: ['a storm was building to the west', 'thunder walked closer with every hour', 'the storm had arrived at last'],
  mist: ['a fine mist beaded on every surface', 'the mist turned lamps into halos', 'a thin mist hung at knee height'],
  snow: ['snow fell without hurry', 'the snow had softened every sound', 'fresh snow squeaked underfoot'],
  drizzle: ['a drizzle too fine to see could still be felt', 'a half-hearted drizzle came and went'],
};
const WEATHER_KINDS = Object.keys(WEATHER);
const WEATHER_NOUNS: Record<string, string> = { clear: 'clear sky', wind: 'wind', storm: 'storm', drizzle: 'drizzle' };

function titleCase(text: string): string {
  return text
    .split(' ')
    .map((word, index) =>
      index > 0 && /^(the|a|an|of|at|in|on|and|to)$/i.test(word) ? word : word.charAt(0).toUpperCase() + word.slice(1),
    )
    .join(' ');
}

/** A line of speech ready for a trailing speech tag: its final full stop becomes a comma. */
function spoken(line: string): string {
  return line.endsWith('.') ? `${line.slice(0, -1)},` : line;
}

function textOf(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 && value.length <= LIMITS.nameLength ? value : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Beats and their words.

type Beat = 'open' | 'advance' | 'complication' | 'revelation' | 'resolve' | 'quiet' | 'introduce';

const BEAT_MOODS: Record<Beat, string[]> = {
  open: ['curious', 'mysterious', 'restless'],
  advance: ['determined', 'purposeful', 'hopeful'],
  complication: ['tense', 'ominous', 'anxious'],
  revelation: ['awed', 'startled', 'mysterious'],
  resolve: ['bittersweet', 'triumphant', 'peaceful'],
  quiet: ['tender', 'wistful', 'melancholy'],
  introduce: ['intrigued', 'curious', 'wary'],
};
const BEAT_THEMES: Record<Beat, string[]> = {
  open: ['mystery', 'beginnings'],
  advance: ['perseverance', 'discovery'],
  complication: ['danger', 'conflict'],
  revelation: ['truth', 'secrets'],
  resolve: ['endings', 'change'],
  quiet: ['friendship', 'home'],
  introduce: ['strangers', 'community'],
};
const BEAT_IMPORTANCE: Record<Beat, number> = {
  open: 0.55,
  advance: 0.5,
  complication: 0.6,
  revelation: 0.7,
  resolve: 0.85,
  quiet: 0.35,
  introduce: 0.5,
};

const SETTING_OPENERS = [
  'It was $time at $place, and $weather.',
  '{Come|By} $time, $weather.',
  '{Nobody at|No one on} $place {could remember|had seen} a $time like it {this|all} $season: $weather.',
  '{By|Come} $time $weather, and $place {felt smaller than usual|seemed to hold its breath|looked like a drawing of itself}.',
];

const SETTING_SENTENCES = [
  '$weather; {that was the first thing anyone noticed|nobody remarked on it|it suited the mood} {at|around} $place.',
  'The $season $time came {slowly|all at once|without ceremony} to $place, {carrying|bringing} $sound.',
  'From $place {one could hear|there was only|the only sound was} $sound, {as on every $season $time|and nothing else|faint under the $weatherWord}.',
  '{Somewhere beyond|Past|Below} $feature, $sound {went on and on|rose and fell|kept its own time} {all $time|through the $weatherWord|as if nothing had changed}.',
  '$Creature {watched from a distance|kept to themselves|had gone quiet} {that $time|in the $weatherWord|around $place}, {as if they knew something|which was never a good sign|the way they did before a change}.',
  'The $season had {settled into|taken hold of|worn its way into} $place {like an old coat|the way it always did|earlier than expected}.',
];

const PRESENCE_SENTENCES = [
  '$A {was already there|had got there first|arrived before anyone else}, {$trait as ever|looking $trait|in a $trait mood}.',
  '$A and $B {met|found each other|crossed paths} {by|near|beside} $feature {without having planned it|as if by agreement|a little after $time}.',
  '$A {came in|walked up|appeared} {shaking off the weather|with cold hands|quietly}, and $B {made room|looked up|said nothing for a while}.',
  '$B {noticed|saw at once|could tell} that $A had {not slept|been thinking|been somewhere else entirely}.',
];

const SOLO_PRESENCE = [
  '$A {was alone|kept watch alone|had no company} {at|on} $place, {and did not mind it|for once|as on so many nights}.',
  '$A {talked to|muttered at|reasoned with} $creature, who {did not answer|were poor company|listened politely}.',
];

const CHARACTER_SENTENCES = [
  '$A had always been $trait, {though lately it had begun to cost something|and it showed now|and today it was an advantage}{ at $place| this $season| with $B watching}.',
  'There was a {habit|way|stubbornness} in $A that $B {had learned to read|still found baffling|had once mistaken for rudeness}.',
  '$A {thought about|turned over|kept coming back to} $thread, {the way a tongue finds a loose tooth|and could not leave it alone|without reaching an answer}.',
  '{It was not|This was not} the first time $A had {felt|wondered|been afraid} like this, {but it was the first time it mattered|and it would not be the last|and $A said so}.',
  '$A {counted|listed|went over} what was {known|certain|left} {in a low voice|twice|out loud}, {and the list was short|and did not like the total|and started again}.',
  '$A {remembered|thought of|could still see} the {first|last} time $B had {laughed like that|been truly frightened|asked for help}, {years ago now|and how little it had cost|and looked away}.',
  '{Lately|These days|Since the $season began}, $A {slept badly|woke early|kept the lamp on longer}, and $B {pretended not to notice|noticed everything|had opinions about it}.',
];

const BEAT_SENTENCES: Record<Beat, string[]> = {
  open: [
    '{The|This} $objectWord {was cold|was warm|was heavier than it looked}, {and it hummed faintly|and smelled of $season|and wore a mark neither of them knew}.',
    '$A {wanted to leave it be|said to put it back|was the one who insisted on keeping it}, {but|and} $B {had other ideas|was already asking questions|agreed, for once}.',
    '{That was when|It was then that|Just after $time} $A {found|noticed|came upon} $object {lying|half-buried|waiting} {near|beneath|beside} $feature.',
    'Nobody {had put it there|could say where it came from|admitted to owning it}, {and that was the trouble|which made it worse|and yet there it was}.',
    '$B {picked it up|turned it over|held it to the light} and {frowned|went very still|laughed, then stopped laughing}.',
    'It {was the beginning of|marked the start of|would later be called} $thread, {though no one knew that yet|and both of them felt it|whatever that turned out to mean}.',
    '{Questions|Small questions|Old questions} {piled up|came one after another|would not be put off}: {who|why|since when}, and {what now|what for|why here}.',
  ],
  advance: [
    '{A|One more} {piece|clue|page} {turned up|came to light|fell into place} {at|near} $place, {where they had looked a dozen times|just as they were giving up|by accident}.',
    '$B {knew someone who knew someone|remembered an old story|had kept a note} {about it|that helped|that fitted}.',
    '{Step by step|Slowly|With some argument}, $A and $B {worked at|pulled on|followed} $thread.',
    '{The|One} answer to $setup {turned out to be|was} {simpler|stranger|sadder} than {either had guessed|they had feared|anyone had hoped}.',
    '$A {wrote it down|marked it on the wall|said it aloud} {so it could not be unlearned|so neither of them could forget|before it slipped away}.',
    '{It was progress|It felt like progress|It was something}, {of a kind|at least|even if it raised more questions}, {and $A said so|for the first time this $season|and $B knew it}.',
    '{They|Between them they} {checked|went over|retraced} {every step|the old notes|what they knew} {twice|until $time|by lamplight}.',
  ],
  complication: [
    '{By the time|When} they {got back|looked again|understood}, {it was too late to pretend|the damage was done|$place was not the same}.',
    '$B {said it was nobody’s fault|blamed the $weatherWord|blamed $A}, {which helped no one|and meant it|and regretted it at once}.',
    '{Then|And then|Without warning} {things went wrong|the plan came apart|the floor seemed to tilt}: $setup.',
    '$A {swore|went pale|stood up too fast}, and $B {reached for $feature|caught $A’s arm|said the worst possible thing}.',
    '{Whatever|What} they had believed about $thread {was no longer true|had been a comfortable story|would have to be unlearned}.',
    '{It would get worse before it got better|There was no time to think it through|Nobody slept much after that}, {not with $thread unanswered|not at $place|not this $season}.',
    '{Even|Suddenly even} $creature {scattered|went silent|fled}, {which was a bad sign|and that said enough|and the silence afterwards was worse}.',
  ],
  revelation: [
    '{The truth|What was hidden|The secret} {came out|surfaced|arrived} {sideways|all at once|in a small, ordinary way}: $setup.',
    '$A {understood|saw|realised} {it first|before $B did|in the middle of a sentence}, and {stopped talking|sat down|laughed out loud}.',
    '{Everything about|All of} $thread {looked different now|rearranged itself|made a terrible kind of sense}.',
    '$B {asked|wanted to know|demanded} {how long $A had suspected|whether it changed anything|what they should do with it}.',
    '{No one|Neither of them} {would forget|could unknow|would ever again look at} {what they had learned|this $time|$place} {the same way|after that|lightly}.',
    '{Some things|Certain things|A few things} {could not be put back|stayed said|changed for good} {once they were known|after that|in that hour}.',
    '$A {went over it twice|checked it against the old notes|asked $creature, half joking}, {but it held|and it was still true|and nothing changed}.',
  ],
  resolve: [
    '{The last piece|The final answer|The end of it} {was|came from} $setup, {which nobody had expected|of all things|as it always had been}.',
    '{They|Both of them} {stood|waited|lingered} {at|by} $place {a long time|until $time turned|without speaking}, {not quite ready to leave|letting it settle|grateful}.',
    '{And so|At last|In the end}, $thread {came to its end|was settled|found its answer}.',
    '{It did not end|It ended not} {the way anyone expected|with a bang|cleanly}, {but it ended|and that was a mercy|and that was enough}.',
    '$A {let out a long breath|put $object away for good|sat down on the step}, and $B {sat beside $A|did the same|smiled for the first time in days}.',
    '{Something|A weight|An old ache} {lifted|eased|let go} {from $place|between them|in both of them}, {and $creature seemed to know it|and $A felt it first|like fog burning off}.',
    '{They would tell it differently|It would be told many ways|The story of it would grow} {in years to come|later|by $season}, {but tonight it was simply over|but this was how it was|and neither minded}.',
  ],
  quiet: [
    '{Outside|Beyond the window}, $sound {kept time|went on|filled the silence}, and {neither of them minded|it was almost music|nobody got up}.',
    '$A {told a story|read aloud|hummed a song} {from before|about $place|nobody else remembered}, and $B {listened|corrected the ending|pretended to sleep}.',
    '{For once|For an hour|Just this once} nothing {needed doing|was on fire|demanded an answer} {at $place|anywhere near $feature}, and $A {noticed|almost missed it|said so}.',
    '$A {made tea|mended $object|cooked something that smelled of home}, and $B {kept $A company|talked about nothing|fell half asleep}.',
    '{They spoke|The talk turned} {of|to} {old times|people they had lost|what they would do when this was over}.',
    '{It was easy|It was strange|It was good} to {laugh again|sit still|be ordinary}, even {for a little while|with $thread unfinished|here}.',
    '$B {admitted|confessed|let slip} {a small fear|a foolish hope|an old grudge}, and $A {did not laugh|laughed kindly|said, “Me too.”}',
  ],
  introduce: [
    '$Newcomer {brought|carried|had with them} $object, {and set it down carefully|which they would not explain|and would not let it out of sight}.',
    '{By the end of the evening|Within the hour|Before long} $newcomerShort {knew everyone’s name|had mended a chair|had asked about $thread}.',
    '{That|It was the} $time {someone new|a stranger} {came to|arrived at|turned up on} $place: $newcomer.',
    '$Newcomer had {the look of|the manner of|the hands of} $role, and {said so|did not say so|did not need to}.',
    '$A {did not trust $newcomerShort at first|offered $newcomerShort a seat|asked too many questions}, {and $newcomerShort seemed to expect it|which $newcomerShort bore patiently|and got few answers}.',
    '{Whatever else|Whoever else} $newcomerShort {was|might be}, $newcomerShort knew {something about $thread|more than $newcomerShort let on|the way to $place}.',
    '$B {watched|studied|kept an eye on} $newcomerShort {from across the room|over the rim of a cup|without seeming to}.',
  ],
};

const DIALOGUE: Record<Beat, string[]> = {
  open: [
    'We should never have {touched it|opened it|brought it inside}.',
    'Tell me you’ve seen one of these before.',
    'Something has {changed|started|woken up}. I can feel it.',
    'If this is a joke, {it is a very good one|nobody is laughing}.',
  ],
  advance: [
    'One more {piece|clue|step}, and we’ll {know|see it whole}.',
    'It fits. {I hate that it fits|Look, it actually fits}.',
    'We’re closer than we were {yesterday|this morning|an hour ago}.',
    'Write that down before I {forget it|talk myself out of it}.',
  ],
  complication: [
    'This is {worse|much worse|not what we planned}.',
    'Don’t {move|say anything|look at it}.',
    'We are running out of {time|good ideas|places to hide}.',
    'I told you it was {a trap|too easy|wrong}.',
  ],
  revelation: [
    'It was {here|in front of us|true} the whole time.',
    'So that’s what {it meant|they were hiding|the silence was for}.',
    'Say it again. {Slowly|I need to hear it twice}.',
    'Nobody {must|can} know {this|about this yet}.',
  ],
  resolve: [
    'It’s over. {I think it’s really over|I can hardly believe it}.',
    'We did it. {Mostly|Somehow|Together}.',
    'I’d do it all again. {Well, most of it|Don’t tell anyone}.',
    'Let’s {go home|get some sleep|never speak of this again}.',
  ],
  quiet: [
    'Do you ever think about {leaving|what comes after|the first day}?',
    'I’m glad it’s you {here|with me|and not anyone else}.',
    'Stay a while. {The work can wait|Nothing needs us for an hour}.',
    'You snore, you know. {Terribly|Like a foghorn}.',
  ],
  introduce: [
    'You’re not from {around here|this place|any map I know}.',
    'Who sent you? {And don’t lie|Tell the truth}.',
    'Sit. {You look half frozen|Eat something first}.',
    'Strange time to {arrive|come calling|turn up}.',
  ],
};

const ANSWERS = [
  '“{I know|I noticed|Maybe},” $B {answered|said|replied}, {and that was all|not looking up|after a pause}.',
  '$B {shrugged|snorted|half smiled}. “{Give it time|Ask me tomorrow|We’ll see}.”',
  '“{Then we’d better hurry|Then we wait|Then we find out},” said $B.',
  '$B {considered this|let it hang in the air|did not answer at once}. “{Perhaps you’re right|I was afraid you’d say that|Go on}.”',
];

const DECISION_SENTENCES = [
  'It was $A who finally said it aloud: “$decision.” {Nobody argued|No one could think of a better plan|$B let out a breath and nodded}.',
  'They argued until the $time light changed, and then $A settled it: “$decision.”',
  '“$decision,” $A said, {and that was that|and the matter was decided|and $B, after a long moment, agreed}.',
  'In the end the choice was made the old way, by voices around the table, and the voices said: “$decision.”',
];

const DECISION_FOLLOWUPS: Record<Beat, string[]> = {
  open: ['{And so|So} a new question {was let in|came into their lives}, whether they were ready or not.'],
  advance: ['It {set them moving|got them moving} again, {and|which was} more than they had managed alone.'],
  complication: [
    '{It was a choice with teeth|It was not the safe choice}, and {they both knew it|the night answered it}.',
  ],
  revelation: ['{It opened a door|It turned a key} that {could not be closed again|had been locked for years}.'],
  resolve: ['{It was the last decision|It was the decision} {the matter needed|that ended it}.'],
  quiet: ['{It was a gentler choice than expected|It was kind, and that counted for something}.'],
  introduce: ['{It left the door open|It made room} for {someone new|a stranger}.'],
};

const CLOSING_SENTENCES = [
  '{Later|Much later|Long after}, $A would remember {this $time|the $weatherWord|the quiet} {more than anything that was said|better than the rest|for no good reason}.',
  '{Outside|Beyond the walls|Out past $feature}, $sound {went on|continued|did not stop}, {as if nothing had happened|indifferent to all of it|patient as ever}.',
  '{The|That} $time {ended|wore on|gave way} {the way they all did|slowly|without a word}, {and nobody slept well|and $A slept badly|and the story went on}.',
  '{Tomorrow|By morning|Before long} there would be {more questions|a price to pay|someone to answer to} at $place, {but not yet|though not tonight|and that could wait until the $weatherWord cleared}.',
  'And {somewhere|far off|close by}, $creature {kept watch|stirred|settled for the night}.',
];

const CHAPTER_END = [
  '{So ended|That was the end of} the {chapter|season|stretch of days} {they would later call|remembered as} “$chapterTitle.”',
  '{Something had closed|A chapter had closed} for $A, {and another was already waiting|and there was no looking back}.',
];

const RULE_SENTENCES = [
  '{Everyone|Everyone here} knew the {old rule|first rule|rule}: $rule',
  '$A {thought of|repeated|could not forget} the {rule|saying} {they all lived by|nobody questioned}: $rule',
];

const TITLE_PATTERNS: Record<Beat, string[]> = {
  open: ['$Object', 'What $A Found', 'The First Question', 'Something at $Place'],
  advance: ['$Thread, Continued', 'A Step Closer', 'The Long Way Round', '$A Keeps Count'],
  complication: ['When It Went Wrong', 'The Trouble with $Thread', '$Weather and Worse', 'No Safe Answer'],
  revelation: ['What Was Hidden', 'The Truth about $Thread', '$A Understands', 'A Key Turns'],
  resolve: ['The End of $Thread', 'Settled', 'After Everything', 'The Last Knot'],
  quiet: ['A Quiet $Time', 'Tea at $Place', '$A and $B', 'Nothing Needed Doing'],
  introduce: ['The Newcomer', 'A Stranger at $Place', '$Newcomer Arrives', 'Someone New'],
};

// New characters: names from two pools (the combination keeps them distinct for a long story) and a calling.
const FIRST_NAMES = [
  'Ada',
  'Bram',
  'Cato',
  'Della',
  'Edda',
  'Fenn',
  'Greta',
  'Hollis',
  'Isak',
  'Juno',
  'Kestrel',
  'Linnea',
  'Mateo',
  'Nell',
  'Orrin',
  'Petra',
  'Quill',
  'Rosalind',
  'Silas',
  'Tamsin',
  'Ulla',
  'Vesna',
  'Wren',
  'Yusuf',
];
const SURNAMES = [
  'Ashby',
  'Brightwater',
  'Coll',
  'Dunmore',
  'Everly',
  'Fairweather',
  'Gray',
  'Holloway',
  'Ivers',
  'Kettle',
  'Lowe',
  'Moreau',
  'Nightingale',
  'Orme',
  'Pike',
  'Quarrie',
  'Rook',
  'Sable',
  'Thorne',
  'Underhill',
];
const ROLES = [
  { role: 'a ferry pilot', trait: 'courage', look: 'salt-stiff coat and a captain’s cap' },
  { role: 'a travelling tinker', trait: 'cunning', look: 'a pack hung with clinking tools' },
  { role: 'a retired smuggler', trait: 'cunning', look: 'a scarred hand and a very clean waistcoat' },
  { role: 'a botanist', trait: 'curiosity', look: 'pressed flowers tucked in every pocket' },
  { role: 'a letter carrier', trait: 'loyalty', look: 'a satchel older than its owner' },
  { role: 'a lamp-maker', trait: 'patience', look: 'soot on the cuffs and bright, tired eyes' },
  { role: 'a runaway apprentice', trait: 'courage', look: 'borrowed boots two sizes too big' },
  { role: 'a customs officer', trait: 'honesty', look: 'a buttoned-up uniform and a notebook' },
  { role: 'a storyteller', trait: 'humour', look: 'a patchwork cloak and a wooden flute' },
  { role: 'a physician', trait: 'patience', look: 'a leather bag and spectacles on a chain' },
];

const THREAD_PATTERNS = [
  {
    title: 'The secret of $object',
    summary: '$A found $object near $feature, where nothing should have been, and $B wants to know who left it.',
    setups: ['who left $object near $feature', 'why $object was hidden at all'],
  },
  {
    title: 'What $A is hiding',
    summary: '$A has started keeping something from $B, and $B has noticed.',
    setups: ['$A’s unexplained absences', 'a letter $A burned unread'],
  },
  {
    title: 'The silence of $creature',
    summary: '$creature have changed their habits, and the old people say that means something is coming.',
    setups: ['$creature have left $place', 'an old warning about this very thing'],
  },
  {
    title: 'The promise at $place',
    summary: 'Long ago someone made a promise at $place. $A has just learned it was never kept.',
    setups: ['who made the promise', 'what the promise was for'],
  },
  {
    title: 'The missing $objectWord',
    summary: 'Something has gone missing from $place, and $A and $B suspect each other.',
    setups: ['the last person to see it', 'a second, emptier hiding place'],
  },
  {
    title: 'A debt to be paid',
    summary: 'An old debt has come due, and nobody is sure who owes it or to whom.',
    setups: ['the name in the ledger', 'the date the debt falls due'],
  },
];

// ---------------------------------------------------------------------------------------------------------------
// Influence text: data, never instructions. It is reduced to plain words and punctuation, so it can only ever be
// the quoted words of a character: no markup, no control characters, no quotes to break out of the speech.

const MAX_DECISION_LENGTH = 140;

/** Plain, quotable text from audience input: printable words and simple punctuation, at most 140 characters. */
export function sanitizeInfluenceText(text: string): string {
  // Past the schema's limit on influence text nothing is the audience's to say; the cut bounds the work on any input.
  const plain = text
    .slice(0, LIMITS.influenceText)
    .normalize('NFKC')
    // A tag holds no "<": from an unclosed "<" the match never rescans to the end of the text.
    .replace(/<[^<>]*>/g, ' ')
    .replace(/[^\p{L}\p{N}\p{Zs} .,;:!?'’-]/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/[\s.,;:!?-]+$/u, '')
    .replace(/^[\s.,;:!?'’-]+/u, '');
  if (plain.length <= MAX_DECISION_LENGTH) return plain;
  const cut = plain.slice(0, MAX_DECISION_LENGTH);
  const space = cut.lastIndexOf(' ');
  return (space > 40 ? cut.slice(0, space) : cut).replace(/[\s.,;:!?-]+$/u, '');
}

const INFLUENCE_BEATS: ReadonlyArray<readonly [RegExp, Beat]> = [
  [/\b(end|finish|solve|resolve|settle|close|conclude)\w*/i, 'resolve'],
  [/\b(stranger|newcomer|visitor|meet|arriv|someone new|welcome)\w*/i, 'introduce'],
  [/\b(fight|attack|kill|betray|burn|steal|destroy|flee|chase|storm|danger|war|sabotage)\w*/i, 'complication'],
  [/\b(open|search|find|reveal|secret|read|investigat|truth|ask|explore|look|door|map)\w*/i, 'revelation'],
  [/\b(trust|love|forgive|rest|talk|help|befriend|apologi[sz]e|share|hug|sleep|tea)\w*/i, 'quiet'],
  [/\b(start|begin|new|mystery|question)\w*/i, 'open'],
];

interface InfluencePlan {
  winner: { influence: ResolvedInfluence; decision: string } | undefined;
  applied: string[];
  rejected: Array<{ id: string; reason: string }>;
}

function planInfluences(state: StoryState, influences: readonly ResolvedInfluence[]): InfluencePlan {
  // Only influences pending in the state's queue may be applied or rejected (the reducer checks it); others are not
  // this scene's to decide, so they are left alone rather than failing the delta.
  const pending = new Set(state.userInfluenceQueue.filter((item) => item.status === 'pending').map((item) => item.id));
  const seen = new Set<string>();
  const candidates = influences.filter((influence) => {
    if (!pending.has(influence.id) || seen.has(influence.id)) return false;
    seen.add(influence.id);
    return true;
  });
  // The engine's winner first; should it carry no usable text, the next heaviest takes its place.
  candidates.sort(
    (a, b) => Number(b.winning) - Number(a.winning) || b.weight - a.weight || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  const plan: InfluencePlan = { winner: undefined, applied: [], rejected: [] };
  for (const influence of candidates) {
    const decision =
      sanitizeInfluenceText(influence.choice ?? influence.text ?? '') || sanitizeInfluenceText(influence.text ?? '');
    if (plan.winner === undefined && decision !== '') {
      plan.winner = { influence, decision };
      plan.applied.push(influence.id);
    }
  }
  for (const influence of candidates) {
    if (plan.winner?.influence.id === influence.id) continue;
    const decision = sanitizeInfluenceText(influence.choice ?? '') || sanitizeInfluenceText(influence.text ?? '');
    const reason =
      decision === ''
        ? 'Nothing could be taken into the story: the text is empty once markup and control characters are removed.'
        : influence.kind === 'vote'
          ? `Outvoted: this scene follows influence "${plan.winner?.influence.id}".`
          : `Not taken up: this scene follows influence "${plan.winner?.influence.id}".`;
    plan.rejected.push({ id: influence.id, reason });
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------------------------
// The narrator.

interface NarrateOptions {
  seed: number;
  chapterLength: number | undefined;
  maxActiveCharacters: number;
}

interface Cast {
  id: string;
  name: string;
  short: string;
  character: CharacterState | undefined;
  appearance: string;
}

const TITLE_WORDS = new Set(['Old', 'Young', 'The', 'Captain', 'Doctor', 'Sister', 'Brother', 'Mother', 'Father']);

function shortName(name: string): string {
  const words = name.trim().split(/\s+/);
  const first = words[0] ?? name;
  return words.length >= 2 && /^\p{Lu}\p{Ll}+$/u.test(first) && !TITLE_WORDS.has(first) ? first : name.trim();
}

function slug(text: string, maxLength = 40): string {
  const value = text
    .normalize('NFKD')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, maxLength)
    .replace(/-+$/g, '');
  return value === '' ? 'x' : value;
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

function clampUnit(value: number, min = 0, max = 1): number {
  return Math.min(max, Math.max(min, value));
}

function truncate(text: string, max: number): string {
  return ellipsize(text, max);
}

/** `It fits.` → `It fits, Mira.`: a line addressed to someone by name. */
function addressed(line: string, name: string): string {
  const end = line.search(/[.!?](?=\s|$)/);
  return end < 0 ? `${line}, ${name}` : `${line.slice(0, end)}, ${name}${line.slice(end)}`;
}

/** `meet a stranger` → `meets a stranger`: the summary's verb for a single subject. */
function singular(phrase: string): string {
  return phrase.replace(/^(\w+?)(s|sh|ch|x)?\b/, (_, stem: string, ending: string | undefined) =>
    ending ? `${stem}${ending}es` : `${stem}s`,
  );
}

function words(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}

function narrate(request: SceneRequest, options: NarrateOptions): { scene: SceneDraft; delta: StateDelta } {
  const { state } = request;
  usedTemplates = new Set<string>();
  const dice = new Dice(
    // hashFeature: FNV-1a with a murmur finalizer, so that close inputs give unrelated seeds.
    hashFeature(`${request.storyId}\u0000${request.sceneId}\u0000${request.seed}\u0000${options.seed}`),
  );
  const setting = chooseSetting(state);
  const chapterLength = options.chapterLength ?? state.bible.chapterLength;

  // Where the chapter stands. The narrator notes the scene count at which the current chapter opened in the world
  // state; a story it did not start falls back to chapters of equal length.
  const openedAt = state.worldState.chapterOpenedAtScene;
  const chapterStart =
    typeof openedAt === 'number' && Number.isInteger(openedAt) && openedAt <= state.sceneCount
      ? openedAt
      : Math.min(state.sceneCount, state.chapterIndex * chapterLength);
  const position = state.sceneCount - chapterStart;
  const closesChapter = position >= chapterLength - 1;

  // Time and weather move on from what the world state says.
  const previousTime = TIMES.indexOf(state.worldState.timeOfDay as (typeof TIMES)[number]);
  const time = TIMES[(previousTime < 0 ? dice.int(TIMES.length) : previousTime + 1 + dice.int(2)) % TIMES.length]!;
  const previousSeason = SEASONS.indexOf(state.worldState.season as (typeof SEASONS)[number]);
  const season = SEASONS[previousSeason < 0 ? 2 : previousSeason]!;
  const previousWeather = textOf(state.worldState.weather);
  const weatherKinds = WEATHER_KINDS.filter((kind) => kind !== 'snow' || season === 'winter');
  const weather =
    previousWeather !== undefined && WEATHER[previousWeather] && dice.chance(0.4)
      ? previousWeather
      : dice.pick(weatherKinds);
  const previousPlace = textOf(state.worldState.location);
  const placeChoices = setting.places.filter((place) => place !== previousPlace);
  const place = dice.pick(placeChoices.length > 0 ? placeChoices : setting.places);

  const influence = planInfluences(state, request.influences);

  // The cast: active characters, weighted by role and by how long they have been off stage.
  // By id: a store may hand the same state back with its keys in another order, and the scene must not change.
  const active = Object.values(state.characters)
    .filter((character) => character.status === 'active')
    .sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  const weightOf = (character: CharacterState) =>
    (character.role === 'main' ? 3 : character.role === 'supporting' ? 2 : 1) *
    (character.lastAppearance === null ? 2 : character.lastAppearance === state.sceneId ? 0.5 : 1.3);
  const focus: CharacterState[] = [];
  const wanted = dice.weighted([
    [1, 1],
    [2, 6],
    [3, 2],
  ] as const);
  const remaining = [...active];
  while (focus.length < wanted && remaining.length > 0) {
    const chosen = dice.weighted(remaining.map((character) => [character, weightOf(character)] as const));
    focus.push(chosen);
    remaining.splice(remaining.indexOf(chosen), 1);
  }

  // The beat, by the pacing of the chapter, unless the audience's decision steers it.
  const liveThreads = state.plotThreads.filter((thread) => thread.status !== 'resolved');
  const ready = liveThreads.filter((thread) => thread.status === 'advancing' && thread.setups.length <= 1);
  // A full thread list is no bar: the reducer archives resolved threads to make room for a new one.
  const canOpen = liveThreads.length < 4;
  const roomForCharacters = Object.keys(state.characters).length < LIMITS.characters - 1;
  const canIntroduce = roomForCharacters && active.length < options.maxActiveCharacters;
  let beat: Beat;
  if (active.length === 0 && roomForCharacters) beat = 'introduce';
  else if (closesChapter) beat = ready.length > 0 ? 'resolve' : liveThreads.length > 0 ? 'revelation' : 'quiet';
  else if (position === 0 && canOpen) beat = 'open';
  else if (position === Math.floor(chapterLength / 2) && canIntroduce) beat = 'introduce';
  else {
    beat = dice.weighted<Beat>([
      ['advance', liveThreads.length > 0 ? 3 : 0],
      ['complication', liveThreads.length > 0 ? 2 : 0],
      ['revelation', liveThreads.length > 0 ? 1.5 : 0],
      ['quiet', 2],
      ['resolve', ready.some((thread) => thread.setups.length === 0) ? 2 : 0],
      ['open', canOpen && liveThreads.length < 2 ? 2 : 0],
    ]);
  }
  if (influence.winner !== undefined) {
    const text = influence.winner.decision;
    const steered = INFLUENCE_BEATS.find(([pattern]) => pattern.test(text))?.[1] ?? 'advance';
    const feasible: Record<Beat, boolean> = {
      open: canOpen,
      advance: liveThreads.length > 0,
      complication: liveThreads.length > 0,
      revelation: liveThreads.length > 0,
      resolve: ready.length > 0,
      quiet: true,
      introduce: roomForCharacters,
    };
    // The chapter's last scene keeps its resolution; the decision still shapes how it happens.
    if (!(closesChapter && beat === 'resolve') && feasible[steered]) beat = steered;
  }
  if (focus.length === 0 && beat !== 'introduce') beat = roomForCharacters ? 'introduce' : 'quiet';

  const delta: StateDelta = StateDeltaSchema.parse({});
  const sceneCharacters = focus.map((character) => character.id);

  // A newcomer, with a unique deterministic id.
  let newcomer: Cast | undefined;
  if (beat === 'introduce') {
    const first = dice.pick(FIRST_NAMES);
    const last = dice.pick(SURNAMES);
    const calling = dice.pick(ROLES);
    const name = `${first} ${last}`;
    let id = slug(first);
    for (let suffix = 2; Object.hasOwn(state.characters, id); suffix++)
      id = `${slug(name)}${suffix === 2 ? '' : `-${suffix}`}`;
    const relationships = focus.slice(0, 2).map((character) => ({
      targetId: character.id,
      kind: 'acquaintance',
      affinity: round2(dice.next() * 0.4 - 0.1),
      trust: round2(0.3 + dice.next() * 0.3),
    }));
    delta.charactersIntroduced.push({
      id,
      name,
      aliases: [],
      description: `${calling.role.charAt(0).toUpperCase()}${calling.role.slice(1)} who arrived at ${place} one ${season} ${time}.`,
      role: dice.chance(0.3) ? 'supporting' : 'minor',
      status: 'active',
      traits: { [calling.trait]: round2(0.5 + dice.next() * 0.4) },
      relationships,
      knowledge: [`The way to ${place}.`],
      appearance: calling.look,
    });
    newcomer = { id, name, short: shortName(name), character: undefined, appearance: calling.look };
    sceneCharacters.push(id);
  }

  const cast: Cast[] = focus.map((character) => ({
    id: character.id,
    name: character.name,
    short: shortName(character.name),
    character,
    appearance: character.appearance,
  }));
  if (newcomer && cast.length === 0) cast.push(newcomer);
  const a = cast[0];
  const b = cast[1];

  // The thread this beat works on.
  let thread: { id: string; title: string; setup: string } | undefined;
  const pickThread = (candidates: PlotThread[]): PlotThread | undefined => {
    if (candidates.length === 0) return undefined;
    const present = new Set(sceneCharacters);
    return dice.weighted(
      candidates.map(
        (candidate) =>
          [
            candidate,
            candidate.importance + 0.2 + (candidate.characters.some((id) => present.has(id)) ? 0.5 : 0),
          ] as const,
      ),
    );
  };
  const objectPhrase = dice.pick(setting.objects);
  const slotsBase = {
    A: a?.short ?? 'No one',
    B: b?.short ?? dice.pick(setting.creatures),
    place,
    Place: titleCase(place),
    time,
    Time: time.charAt(0).toUpperCase() + time.slice(1),
    season,
    weather: WEATHER[weather] ?? WEATHER.clear!,
    weatherWord: WEATHER_NOUNS[weather] ?? weather,
    Weather: weather.charAt(0).toUpperCase() + weather.slice(1),
    feature: dice.pick(setting.features),
    sound: dice.pick(setting.sounds),
    creature: dice.pick(setting.creatures),
    object: objectPhrase,
    objectWord: objectPhrase.split(' ').slice(-1)[0] ?? 'thing',
  };

  if (beat === 'open') {
    const pattern = dice.pick(THREAD_PATTERNS);
    const local = { ...slotsBase, A: a?.short ?? 'someone', B: b?.short ?? 'the others', creature: slotsBase.creature };
    let title = truncate(fill(pattern.title, local, dice), LIMITS.nameLength);
    if (state.plotThreads.some((existing) => existing.title === title)) {
      title = truncate(`${title}, again`, LIMITS.nameLength);
    }
    const id = `t${request.sceneIndex}-${slug(title)}`;
    const setups = pattern.setups.map((setup) => truncate(fill(setup, local, dice, false), LIMITS.shortText));
    delta.threadsOpened.push({
      id,
      title,
      summary: truncate(fill(pattern.summary, local, dice), LIMITS.summary),
      importance: round2(0.5 + dice.next() * 0.4),
      characters: sceneCharacters.slice(0, LIMITS.sceneTags),
      setups,
    });
    thread = { id, title, setup: setups[0] ?? title };
  } else if (beat === 'resolve') {
    const target = pickThread(ready);
    if (target) {
      if (target.setups.length > 0) {
        delta.threadsAdvanced.push({
          id: target.id,
          charactersAdded: [],
          setupsAdded: [],
          setupsPaidOff: [...target.setups],
        });
      }
      delta.threadsResolved.push({
        id: target.id,
        resolution: truncate(
          `Resolved at ${place} when ${cast.map((member) => member.name).join(' and ') || 'those who were left'} saw it through.`,
          LIMITS.summary,
        ),
      });
      thread = { id: target.id, title: target.title, setup: target.setups[0] ?? target.title.toLowerCase() };
    } else beat = 'quiet';
  } else if (beat === 'advance' || beat === 'complication' || beat === 'revelation' || beat === 'introduce') {
    const target = pickThread(liveThreads);
    if (target) {
      const joining = sceneCharacters.filter((id) => !target.characters.includes(id));
      const room = LIMITS.sceneTags - target.characters.length;
      const charactersAdded = joining.slice(0, Math.max(0, room));
      let setup = target.setups[0] ?? '';
      const setupsAdded: string[] = [];
      const setupsPaidOff: string[] = [];
      if (beat === 'complication' || (beat !== 'introduce' && target.setups.length === 0 && target.status === 'open')) {
        // A complication makes a new promise to the reader; a thread nobody has worked on yet gets its first.
        if (target.setups.length < 4) {
          setup = truncate(
            fill(
              dice.pick([
                '$object is not where it was left',
                'someone has been at $place before them',
                'the $weatherWord hides more than it shows',
                '$creature know something they do not',
                'a name that should not be there',
              ]),
              slotsBase,
              dice,
            ),
            LIMITS.shortText,
          ).toLowerCase();
          if (!target.setups.includes(setup)) setupsAdded.push(setup);
        }
      } else if (beat !== 'introduce' && target.setups.length > 0) {
        setupsPaidOff.push(target.setups[0]!);
      }
      delta.threadsAdvanced.push({
        id: target.id,
        status: 'advancing',
        charactersAdded,
        setupsAdded,
        setupsPaidOff,
      });
      thread = { id: target.id, title: target.title, setup: setup || target.title.toLowerCase() };
    } else if (beat !== 'introduce') beat = 'quiet';
  }
  if (thread === undefined && beat !== 'quiet' && beat !== 'introduce') beat = 'quiet';

  // Characters change a little in every scene they are in, always within bounds.
  const traitFor: Record<Beat, string> = {
    open: 'curiosity',
    advance: 'patience',
    complication: 'courage',
    revelation: 'curiosity',
    resolve: 'courage',
    quiet: 'humour',
    introduce: 'curiosity',
  };
  const arcStep = beat === 'resolve' ? 0.06 : beat === 'revelation' || beat === 'complication' ? 0.03 : 0.015;
  const knowledgeFact = thread
    ? truncate(
        beat === 'resolve'
          ? `${thread.title}: it is over, settled at ${place}.`
          : beat === 'revelation'
            ? `${thread.title}: the truth about ${thread.setup}.`
            : `${thread.title}: ${thread.setup}.`,
        LIMITS.shortText,
      )
    : undefined;
  focus.forEach((character, index) => {
    const trait = traitFor[beat];
    const current = character.traits[trait];
    const traitCount = Object.keys(character.traits).length;
    const traits: Record<string, number> = {};
    if (current !== undefined || traitCount < LIMITS.traits) {
      const shift = beat === 'complication' ? 0.04 : 0.02 + dice.next() * 0.03;
      traits[trait] = round2(clampUnit((current ?? 0.5) + shift));
    }
    const relationships = focus
      .filter((other) => other.id !== character.id)
      .slice(0, 2)
      .map((other) => {
        const previous = character.relationships[other.id];
        const change = beat === 'quiet' ? 0.08 : beat === 'complication' ? (dice.chance(0.5) ? -0.06 : 0.05) : 0.03;
        return {
          targetId: other.id,
          affinity: round2(clampUnit((previous?.affinity ?? 0) + change, -1, 1)),
          trust: round2(clampUnit((previous?.trust ?? 0.5) + (beat === 'complication' ? -0.02 : 0.02))),
        };
      });
    const knowledgeAdded =
      knowledgeFact !== undefined &&
      character.knowledge.length < LIMITS.knowledge - 1 &&
      !character.knowledge.includes(knowledgeFact)
        ? [knowledgeFact]
        : [];
    delta.characterUpdates.push({
      id: character.id,
      aliasesAdded: [],
      traits,
      traitChanges: {},
      relationships: index < 3 ? relationships : [],
      arcProgress: round2(Math.max(character.arcProgress, clampUnit(character.arcProgress + arcStep))),
      knowledgeAdded,
    });
  });

  // ----- Prose -----
  const trait = (member: Cast | undefined): string => {
    const traits = Object.entries(member?.character?.traits ?? {}).sort(
      (x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0),
    );
    const top = traits[0]?.[0];
    const adjectives: Record<string, string> = {
      courage: 'brave',
      curiosity: 'curious',
      patience: 'patient',
      humour: 'wry',
      cunning: 'sharp',
      loyalty: 'steadfast',
      honesty: 'plain-spoken',
    };
    return (top && adjectives[top]) ?? dice.pick(['watchful', 'tired', 'thoughtful', 'restless']);
  };
  const slots = {
    ...slotsBase,
    trait: trait(a),
    thread: thread?.title ?? dice.pick(['the old question', 'what the season would bring', 'home']),
    Thread: thread?.title ?? 'Home',
    setup: thread?.setup ?? 'nothing anyone could name',
    Object: objectPhrase.replace(/^(a|an|the) /i, '').replace(/^./, (letter) => letter.toUpperCase()),
    newcomer: newcomer
      ? `${newcomer.name}, ${ROLES.find((r) => r.look === newcomer?.appearance)?.role ?? 'a stranger'}`
      : '',
    Newcomer: newcomer?.name ?? '',
    newcomerShort: newcomer?.short ?? '',
    role: ROLES.find((r) => r.look === newcomer?.appearance)?.role ?? 'a traveller',
    Creature: slotsBase.creature,
    chapterTitle: '',
    rule: '',
  };
  const paragraphs: Record<string, string[]> = {};
  paragraphs.setting = [
    ...sentences(SETTING_OPENERS, 1, slots, dice),
    ...sentences(SETTING_SENTENCES, 2 + dice.int(2), slots, dice),
  ];
  paragraphs.setting.push(...sentences(b ? PRESENCE_SENTENCES : SOLO_PRESENCE, 1, slots, dice));
  paragraphs.character = sentences(CHARACTER_SENTENCES, 2 + dice.int(2), slots, dice);
  paragraphs.beat = sentences(BEAT_SENTENCES[beat], 4 + dice.int(3), slots, dice);
  const speaker = dice.chance(0.5) || !b ? a : b;
  const listener = speaker === a ? b : a;
  const lines = sentences(DIALOGUE[beat], 3, slots, dice);
  const dialogue: string[] = [];
  // The lines are filled already (names in them), so they go into the speech templates as slots, never as template
  // text: a name holding `{a|b}` or `$x` would be read as template syntax a second time.
  const said = (line: string) => ({ line, spokenLine: spoken(line) });
  if (b && speaker && listener) {
    const swapped = { ...slots, A: speaker.short, B: listener.short };
    // Now and then the speaker names the listener, as people do; it also keeps short lines from recurring verbatim.
    if (dice.chance(0.4) && lines[0]) lines[0] = addressed(lines[0], listener.short);
    dialogue.push(
      fill(
        dice.pick([
          '“$spokenLine” $A {said|murmured|announced}.',
          '$A {looked at|turned to|glanced at} $B. “$line”',
          '“$line” {It was|That was} $A, {of course|quietly|too loudly}.',
          '$A {put down $object|stood at the window|looked up}. “$line”',
        ]),
        { ...swapped, ...said(lines[0]!) },
        dice,
      ),
    );
    dialogue.push(fill(dice.pick(ANSWERS), swapped, dice));
    if (lines[1]) {
      dialogue.push(
        fill(
          '“$spokenLine” {$A added|$A said after a moment|$A went on, more quietly}.',
          { ...swapped, ...said(lines[1]) },
          dice,
        ),
      );
    }
  } else if (a) {
    dialogue.push(
      fill('“$spokenLine” $A {said to no one|told $creature|said aloud}.', { ...slots, ...said(lines[0]!) }, dice),
    );
  }
  paragraphs.dialogue = dialogue;
  if (influence.winner && a) {
    const decision = influence.winner.decision;
    paragraphs.decision = [
      fill(dice.pick(DECISION_SENTENCES), { ...slots, decision }, dice),
      fill(dice.pick(DECISION_FOLLOWUPS[beat]), slots, dice),
    ];
  } else if (influence.winner) {
    paragraphs.decision = [
      fill(
        '{Someone|A voice} {said it plainly|decided it}: “$decision.”',
        { ...slots, decision: influence.winner.decision },
        dice,
      ),
    ];
  }
  const rules = state.bible.worldRules.filter((rule) => rule.length <= 300);
  if (rules.length > 0 && dice.chance(0.35)) {
    const rule = dice.pick(rules).trim();
    paragraphs.character.push(
      fill(dice.pick(RULE_SENTENCES), { ...slots, rule: /[.!?]$/.test(rule) ? rule : `${rule}.` }, dice),
    );
  }
  paragraphs.closing = sentences(CLOSING_SENTENCES, 2 + dice.int(2), slots, dice);

  // Several arrangements, so the episodes do not all open on the weather.
  const arrangements = [
    ['setting', 'character', 'decision', 'beat', 'dialogue', 'closing'],
    ['dialogue', 'setting', 'decision', 'beat', 'character', 'closing'],
    ['character', 'setting', 'beat', 'decision', 'dialogue', 'closing'],
    ['setting', 'decision', 'dialogue', 'beat', 'closing'],
    ['beat', 'setting', 'decision', 'dialogue', 'character', 'closing'],
  ];
  const order = dice.pick(arrangements);
  const textParagraphs = order.map((key) => (paragraphs[key] ?? []).join(' ')).filter((paragraph) => paragraph !== '');

  // Chapter ending.
  const titlePattern = dice.pick(TITLE_PATTERNS[beat]);
  const title = truncate(
    fill(titlePattern, { ...slots, A: a?.short ?? 'Someone', B: b?.short ?? 'the Sea' }, dice).trim(),
    LIMITS.nameLength,
  );
  if (closesChapter) {
    const chapterTitle = truncate(thread?.title ?? title, LIMITS.nameLength);
    textParagraphs.push(sentences(CHAPTER_END, 1, { ...slots, chapterTitle }, dice).join(' '));
    const stillOpen = liveThreads
      .filter((open) => !delta.threadsResolved.some((resolved) => resolved.id === open.id))
      .map((open) => open.title);
    const resolvedTitle = delta.threadsResolved.length > 0 ? thread?.title : undefined;
    const summary = [
      `Chapter ${state.chapterIndex + 1} of ${state.bible.title} ends at ${place} in ${season}.`,
      resolvedTitle ? `${resolvedTitle} is settled.` : '',
      stillOpen.length > 0 ? `Still open: ${stillOpen.slice(0, 5).join('; ')}.` : 'No thread is left open.',
      cast.length > 0 ? `With ${cast.map((member) => member.name).join(', ')}.` : '',
    ]
      .filter(Boolean)
      .join(' ');
    delta.chapterClosed = { summary: truncate(summary, LIMITS.summary) };
  }

  // Keep the length in the readable range: add texture when short, drop the optional paragraph when long.
  let text = textParagraphs.join('\n\n');
  // Texture for short scenes: the other character's side, then more of the beat and the place, each once.
  const texture: Array<() => string[]> = [
    () => sentences(CHARACTER_SENTENCES, 3, { ...slots, A: b?.short ?? slots.A, B: a?.short ?? slots.B }, dice),
    () => sentences(BEAT_SENTENCES[beat], 3, slots, dice),
    () => sentences(SETTING_SENTENCES, 3, slots, dice),
    () => sentences(CLOSING_SENTENCES, 2, slots, dice),
    () => sentences(PRESENCE_SENTENCES, 2, slots, dice),
  ];
  for (const extra of texture) {
    if (words(text) >= 260) break;
    textParagraphs.splice(Math.max(1, textParagraphs.length - 1), 0, extra().join(' '));
    text = textParagraphs.join('\n\n');
  }
  if (words(text) > 500 && paragraphs.character) {
    const characterParagraph = paragraphs.character.join(' ');
    text = textParagraphs.filter((paragraph) => paragraph !== characterParagraph).join('\n\n');
  }

  const castNames = cast.map((member) => member.name);
  const doing: Record<Beat, string> = {
    open: `come upon ${objectPhrase} and the start of ${thread?.title ?? 'a new question'}`,
    advance: `move ${thread?.title ?? 'their work'} forward`,
    complication: `run into trouble over ${thread?.title ?? 'an old question'}`,
    revelation: `learn the truth behind ${thread?.title ?? 'a secret'}`,
    resolve: `see ${thread?.title ?? 'a long matter'} to its end`,
    quiet: 'take a quiet hour together',
    introduce: `meet ${newcomer?.name ?? 'a stranger'}`,
  };
  const who = castNames.length > 1 ? `${castNames.slice(0, -1).join(', ')} and ${castNames.at(-1)}` : castNames[0];
  const summary = truncate(
    `At ${place}, ${time}, ${who ?? 'no one'} ${castNames.length > 1 ? doing[beat] : singular(doing[beat])}.` +
      (influence.winner ? ' The audience’s choice decides the way.' : '') +
      (closesChapter ? ' The chapter closes.' : ''),
    LIMITS.summary,
  );
  const mood = dice.pick(BEAT_MOODS[beat]);
  const themes = [...new Set([dice.pick(BEAT_THEMES[beat]), dice.pick(setting.themes)])];
  const importance = round2(clampUnit(BEAT_IMPORTANCE[beat] + (closesChapter ? 0.1 : 0)));
  const people = cast
    .map((member) => (member.appearance ? `${member.name} (${member.appearance})` : member.name))
    .join(', ');
  const imagePrompt = truncate(
    [
      state.bible.style,
      `${place}, ${time}, ${season}, ${weather}`,
      people ? `Characters: ${people}` : '',
      `Mood: ${mood}`,
      `Scene: ${title}`,
    ]
      .filter(Boolean)
      .join('. '),
    LIMITS.description,
  );

  delta.worldStateSet = {
    timeOfDay: time,
    weather,
    location: place,
    season: closesChapter ? SEASONS[(SEASONS.indexOf(season) + 1) % SEASONS.length]! : season,
  };
  if (closesChapter) delta.worldStateSet.chapterOpenedAtScene = state.sceneCount + 1;
  else if (typeof openedAt !== 'number') delta.worldStateSet.chapterOpenedAtScene = chapterStart;
  delta.influencesApplied = influence.applied;
  delta.influencesRejected = influence.rejected;

  const scene = SceneDraftSchema.parse({
    title,
    text,
    summary,
    characters: [...new Set(sceneCharacters)].slice(0, LIMITS.sceneTags),
    locations: [place],
    themes,
    mood,
    importance,
    imagePrompt,
  });
  return { scene, delta: StateDeltaSchema.parse(delta) };
}
