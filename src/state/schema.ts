/**
 * The domain model of storyloom as zod schemas, with their inferred types and JSON Schema forms.
 *
 * Every number has bounds and every text and collection a maximum size (see `LIMITS`), so no input, however
 * hostile, can grow a stored item without limit.
 *
 * @module
 */
import { z } from 'zod';

/** Size limits of the domain model. Stores, generators and the reducer all enforce these. */
export const LIMITS = {
  idLength: 128,
  nameLength: 120,
  shortText: 500,
  description: 2_000,
  summary: 4_000,
  sceneText: 200_000,
  influenceText: 1_000,
  choiceLength: 200,
  aliases: 16,
  traits: 32,
  relationships: 200,
  knowledge: 200,
  characters: 500,
  plotThreads: 500,
  threadSetups: 50,
  worldStateKeys: 500,
  worldStateValueChars: 4_000,
  worldRules: 50,
  sceneTags: 64,
  influenceQueue: 1_000,
  influencesPerScene: 1_000,
  deltaEntries: 100,
  vectorDimensions: 8_192,
  metadataText: 2_000,
} as const;

/** An identifier: letters, digits and `._:-`, starting with a letter or digit (a tx signature fits). */
export const IdSchema = z
  .string()
  .min(1)
  .max(LIMITS.idLength)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'must contain only letters, digits, ".", "_", ":" and "-"');

const name = z.string().trim().min(1).max(LIMITS.nameLength);
const shortText = z.string().max(LIMITS.shortText);
/** An ISO 8601 time with its offset (or `Z`), as every time of the domain model is written. */
export const IsoTimeSchema = z.iso.datetime({ offset: true });
const unit = z.number().min(0).max(1);
const tag = z.string().trim().min(1).max(LIMITS.nameLength);

/** A JSON value small enough to keep in the world state. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** How deep a world-state value may nest. Checked without recursion, so hostile input cannot overflow the stack. */
const MAX_JSON_DEPTH = 16;

function isPlainRecord(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** Why `value` is not a bounded JSON value, or undefined when it is. Iterative on purpose. */
function jsonValueProblem(value: unknown): string | undefined {
  const stack: Array<{ value: unknown; depth: number }> = [{ value, depth: 0 }];
  let nodes = 0;
  while (stack.length > 0) {
    const { value: item, depth } = stack.pop()!;
    if (++nodes > 10_000) return 'has too many elements';
    if (depth > MAX_JSON_DEPTH) return `nests deeper than ${MAX_JSON_DEPTH} levels`;
    if (item === null || typeof item === 'boolean' || typeof item === 'string') continue;
    if (typeof item === 'number') {
      if (!Number.isFinite(item)) return 'holds a number that is not finite';
      continue;
    }
    if (Array.isArray(item)) {
      if (item.length > 100) return 'holds an array of more than 100 items';
      for (const child of item) stack.push({ value: child, depth: depth + 1 });
      continue;
    }
    if (typeof item === 'object' && isPlainRecord(item)) {
      for (const [key, child] of Object.entries(item)) {
        // `__proto__` as an own key is inert data here; the reducer refuses it (UNSAFE_KEY) before it reaches a state.
        if (key.length > LIMITS.nameLength) return `has a key longer than ${LIMITS.nameLength} characters`;
        stack.push({ value: child, depth: depth + 1 });
      }
      continue;
    }
    return 'holds a value that is not JSON';
  }
  const size = JSON.stringify(value).length;
  if (size > LIMITS.worldStateValueChars) return `must serialize to at most ${LIMITS.worldStateValueChars} characters`;
  return undefined;
}

/** A world-state value: JSON at most 16 levels deep whose serialized form stays under `LIMITS.worldStateValueChars`. */
export const WorldValueSchema = z.custom<JsonValue>().superRefine((value, context) => {
  const problem = jsonValueProblem(value);
  if (problem) context.addIssue({ code: 'custom', message: `must be a bounded JSON value: it ${problem}` });
});

/** How one character regards another. `affinity` runs from -1 (hatred) to 1 (devotion). */
export const RelationshipSchema = z.object({
  kind: z.string().trim().min(1).max(60).default('acquaintance'),
  affinity: z.number().min(-1).max(1).default(0),
  trust: unit.default(0.5),
  note: shortText.optional(),
  since: IdSchema.nullable().default(null),
});
export type Relationship = z.infer<typeof RelationshipSchema>;

/** Where a character stands in the story. */
export const CharacterStatusSchema = z.enum(['active', 'absent', 'missing', 'dead']);
export type CharacterStatus = z.infer<typeof CharacterStatusSchema>;

/** How central a character is; `main` characters are always in the frequent context. */
export const CharacterRoleSchema = z.enum(['main', 'supporting', 'minor']);
export type CharacterRole = z.infer<typeof CharacterRoleSchema>;

/** A trait name mapped to a strength from 0 to 1 (courage: 0.8). */
const traitName = z
  .string()
  .min(1)
  .max(40)
  .regex(/^\S(.*\S)?$/, 'must not start or end with white space');
const traitNumbers = z
  .record(traitName, z.number())
  .refine((traits) => Object.keys(traits).length <= LIMITS.traits, `at most ${LIMITS.traits} traits`);

export const TraitsSchema = z
  .record(traitName, unit)
  .refine((traits) => Object.keys(traits).length <= LIMITS.traits, `at most ${LIMITS.traits} traits`);

/** One character of the story, keyed by its id in `StoryState.characters`. */
export const CharacterStateSchema = z.object({
  id: IdSchema,
  name,
  aliases: z.array(name).max(LIMITS.aliases).default([]),
  description: z.string().max(LIMITS.description).default(''),
  role: CharacterRoleSchema.default('supporting'),
  status: CharacterStatusSchema.default('active'),
  traits: TraitsSchema.default({}),
  relationships: z
    .record(IdSchema, RelationshipSchema)
    .refine(
      (value) => Object.keys(value).length <= LIMITS.relationships,
      `at most ${LIMITS.relationships} relationships`,
    )
    .default({}),
  arcProgress: unit.default(0),
  introducedIn: IdSchema.nullable().default(null),
  lastAppearance: IdSchema.nullable().default(null),
  /** Facts this character knows: the limit of what a point-of-view scene may reveal through them. */
  knowledge: z.array(shortText).max(LIMITS.knowledge).default([]),
  /** A short visual description, so pictures of this character stay consistent. */
  appearance: z.string().max(LIMITS.shortText).default(''),
});
export type CharacterState = z.infer<typeof CharacterStateSchema>;

/** The life cycle of a plot thread. */
export const PlotThreadStatusSchema = z.enum(['open', 'advancing', 'dormant', 'resolved']);
export type PlotThreadStatus = z.infer<typeof PlotThreadStatusSchema>;

/** A line of story that is opened, advanced and eventually resolved. */
export const PlotThreadSchema = z.object({
  id: IdSchema,
  title: name,
  summary: z.string().max(LIMITS.summary).default(''),
  status: PlotThreadStatusSchema.default('open'),
  importance: unit.default(0.5),
  characters: z.array(IdSchema).max(LIMITS.sceneTags).default([]),
  openedIn: IdSchema.nullable().default(null),
  lastAdvancedIn: IdSchema.nullable().default(null),
  resolvedIn: IdSchema.nullable().default(null),
  /** Promises made to the reader that are not yet paid off. */
  setups: z.array(shortText).max(LIMITS.threadSetups).default([]),
});
export type PlotThread = z.infer<typeof PlotThreadSchema>;

/** Where an audience influence came from. */
export const InfluenceSourceKindSchema = z.enum(['solana', 'web', 'api', 'cli']);
/** What an audience influence asks for. */
export const InfluenceKindSchema = z.enum(['vote', 'suggestion', 'tip']);
/** An influence waits (`pending`) until a scene applies it or rejects it with a reason. */
export const InfluenceStatusSchema = z.enum(['pending', 'applied', 'rejected']);

/** Evidence that an influence is genuine: a transaction signature, a signed message, ... */
export const InfluenceProofSchema = z.object({
  type: z.enum(['solana-transaction', 'signed-message', 'api-key', 'none']),
  signature: z.string().max(200).optional(),
  publicKey: z.string().max(200).optional(),
  message: z.string().max(2_000).optional(),
  slot: z.number().int().nonnegative().optional(),
  amount: z.number().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
});

/** One reader's attempt to steer the story. `id` is the idempotency key. */
export const UserInfluenceSchema = z.object({
  id: IdSchema,
  storyId: IdSchema,
  source: InfluenceSourceKindSchema,
  author: z.string().trim().min(1).max(LIMITS.idLength),
  kind: InfluenceKindSchema,
  choice: z.string().max(LIMITS.choiceLength).nullable().default(null),
  text: z.string().max(LIMITS.influenceText).default(''),
  weight: z.number().min(0).max(1e12).default(1),
  receivedAt: IsoTimeSchema,
  proof: InfluenceProofSchema.default({ type: 'none' }),
  status: InfluenceStatusSchema.default('pending'),
  /** Why it was rejected, or how it was applied. */
  reason: z.string().max(LIMITS.shortText).nullable().default(null),
  /** The scene that applied or rejected it. */
  resolvedIn: IdSchema.nullable().default(null),
});
export type UserInfluence = z.infer<typeof UserInfluenceSchema>;
/** The input form of an influence: defaults may be left out. */
export type UserInfluenceInput = z.input<typeof UserInfluenceSchema>;

/** The fixed frame of the story: what the narrator must always know. */
export const StoryBibleSchema = z.object({
  title: name,
  premise: z.string().min(1).max(LIMITS.description),
  genre: z.string().trim().min(1).max(60),
  tone: z.string().trim().min(1).max(120),
  worldRules: z.array(shortText).max(LIMITS.worldRules).default([]),
  /** A visual style guide for illustrations. */
  style: z.string().max(LIMITS.shortText).default(''),
  /** Scenes per chapter the narrator aims for. */
  chapterLength: z.number().int().min(1).max(1_000).default(8),
});
export type StoryBible = z.infer<typeof StoryBibleSchema>;

/** The whole state of a story at one version. */
export const StoryStateSchema = z
  .object({
    storyId: IdSchema,
    /** Monotonic version, one more after every committed scene; the basis of optimistic concurrency. */
    version: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    chapterId: IdSchema,
    chapterIndex: z.number().int().min(0).max(1_000_000),
    /** The id of the last committed scene, or null before the first. */
    sceneId: IdSchema.nullable(),
    sceneCount: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    bible: StoryBibleSchema,
    characters: z
      .record(IdSchema, CharacterStateSchema)
      .refine((value) => Object.keys(value).length <= LIMITS.characters, `at most ${LIMITS.characters} characters`),
    worldState: z
      .record(z.string().min(1).max(LIMITS.nameLength), WorldValueSchema)
      .refine((value) => Object.keys(value).length <= LIMITS.worldStateKeys, `at most ${LIMITS.worldStateKeys} keys`),
    plotThreads: z.array(PlotThreadSchema).max(LIMITS.plotThreads),
    /** The pending influences: a read view filled by `StoryStateStore.load`; influences are stored on their own. */
    userInfluenceQueue: z.array(UserInfluenceSchema).max(LIMITS.influenceQueue).default([]),
    createdAt: IsoTimeSchema,
    updatedAt: IsoTimeSchema,
  })
  .superRefine((state, context) => {
    for (const [key, character] of Object.entries(state.characters)) {
      if (character.id !== key) {
        context.addIssue({ code: 'custom', path: ['characters', key, 'id'], message: `must equal its key "${key}"` });
      }
    }
    const threadIds = new Set<string>();
    state.plotThreads.forEach((thread, index) => {
      if (threadIds.has(thread.id)) {
        context.addIssue({
          code: 'custom',
          path: ['plotThreads', index, 'id'],
          message: `duplicate thread id "${thread.id}"`,
        });
      }
      threadIds.add(thread.id);
    });
  });
export type StoryState = z.infer<typeof StoryStateSchema>;
/** The input form of a story state: defaults may be left out. */
export type StoryStateInput = z.input<typeof StoryStateSchema>;

/** One episode of the story, as committed. */
export const SceneSchema = z.object({
  id: IdSchema,
  storyId: IdSchema,
  chapterId: IdSchema,
  /** 0-based position in the story; equal to the story's `sceneCount` when it was written. */
  index: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  title: name,
  text: z
    .string()
    .min(1)
    .max(LIMITS.sceneText)
    .refine((text) => /\S/.test(text), 'must hold words, not only white space'),
  summary: z.string().max(LIMITS.summary).default(''),
  /** Characters present in the scene: they act, speak or witness it. */
  characters: z.array(IdSchema).max(LIMITS.sceneTags).default([]),
  locations: z.array(tag).max(LIMITS.sceneTags).default([]),
  themes: z.array(tag).max(LIMITS.sceneTags).default([]),
  mood: z.string().max(60).default(''),
  importance: unit.default(0.5),
  imagePrompt: z.string().max(LIMITS.description).default(''),
  createdAt: IsoTimeSchema,
  /** The state version this scene produced. */
  stateVersion: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  influencesApplied: z.array(IdSchema).max(LIMITS.influencesPerScene).default([]),
});
export type Scene = z.infer<typeof SceneSchema>;
export type SceneInput = z.input<typeof SceneSchema>;

const entries = <T extends z.ZodType>(item: T) => z.array(item).max(LIMITS.deltaEntries).default([]);

/** A relationship change inside a character update. Absolute values replace, `affinityChange` adds and clamps. */
export const RelationshipChangeSchema = z.object({
  targetId: IdSchema,
  kind: z.string().trim().min(1).max(60).optional(),
  affinity: z.number().optional(),
  affinityChange: z.number().optional(),
  trust: z.number().optional(),
  note: shortText.optional(),
  remove: z.boolean().optional(),
});
export type RelationshipChange = z.infer<typeof RelationshipChangeSchema>;

/**
 * A character introduced by a scene. Numbers are accepted as any finite number here so that the reducer can report
 * an out-of-range value as a continuity issue with its path instead of a bare schema failure.
 */
export const CharacterIntroductionSchema = z.object({
  id: IdSchema,
  name,
  aliases: z.array(name).max(LIMITS.aliases).default([]),
  description: z.string().max(LIMITS.description).default(''),
  role: CharacterRoleSchema.default('supporting'),
  status: CharacterStatusSchema.default('active'),
  traits: traitNumbers.default({}),
  relationships: entries(RelationshipChangeSchema),
  knowledge: z.array(shortText).max(LIMITS.knowledge).default([]),
  appearance: z.string().max(LIMITS.shortText).default(''),
});

/** Changes to an existing character. */
export const CharacterUpdateSchema = z.object({
  id: IdSchema,
  status: CharacterStatusSchema.optional(),
  description: z.string().max(LIMITS.description).optional(),
  aliasesAdded: z.array(name).max(LIMITS.aliases).default([]),
  /** Absolute trait values, 0..1. */
  traits: traitNumbers.default({}),
  /** Relative trait changes; results are clamped to 0..1 with a warning. */
  traitChanges: traitNumbers.default({}),
  relationships: entries(RelationshipChangeSchema),
  arcProgress: z.number().optional(),
  knowledgeAdded: z.array(shortText).max(LIMITS.knowledge).default([]),
  role: CharacterRoleSchema.optional(),
  /** How the character now looks (a scar, grey hair, new clothes), replacing the sheet's: pictures draw it from here. */
  appearance: z.string().max(LIMITS.shortText).optional(),
});

/** A thread opened by a scene. */
export const ThreadOpeningSchema = z.object({
  id: IdSchema,
  title: name,
  summary: z.string().max(LIMITS.summary).default(''),
  importance: z.number().default(0.5),
  characters: z.array(IdSchema).max(LIMITS.sceneTags).default([]),
  setups: z.array(shortText).max(LIMITS.threadSetups).default([]),
});

/** A thread moved forward by a scene. */
export const ThreadAdvanceSchema = z.object({
  id: IdSchema,
  summary: z.string().max(LIMITS.summary).optional(),
  status: z.enum(['open', 'advancing', 'dormant']).optional(),
  importance: z.number().optional(),
  charactersAdded: z.array(IdSchema).max(LIMITS.sceneTags).default([]),
  setupsAdded: z.array(shortText).max(LIMITS.threadSetups).default([]),
  setupsPaidOff: z.array(shortText).max(LIMITS.threadSetups).default([]),
});

/** A thread brought to its end by a scene. */
export const ThreadResolutionSchema = z.object({
  id: IdSchema,
  resolution: z.string().max(LIMITS.summary).default(''),
});

/** What a generator proposes beside its scene. Generators never edit state: `applyDelta` does. */
export const StateDeltaSchema = z.object({
  charactersIntroduced: entries(CharacterIntroductionSchema),
  characterUpdates: entries(CharacterUpdateSchema),
  worldStateSet: z
    .record(z.string().min(1).max(LIMITS.nameLength), WorldValueSchema)
    .refine((value) => Object.keys(value).length <= LIMITS.deltaEntries, `at most ${LIMITS.deltaEntries} keys`)
    .default({}),
  worldStateUnset: z.array(z.string().min(1).max(LIMITS.nameLength)).max(LIMITS.deltaEntries).default([]),
  threadsOpened: entries(ThreadOpeningSchema),
  threadsAdvanced: entries(ThreadAdvanceSchema),
  threadsResolved: entries(ThreadResolutionSchema),
  /** Set when this scene ends its chapter. */
  chapterClosed: z
    .object({ summary: z.string().max(LIMITS.summary).default('') })
    .nullable()
    .default(null),
  influencesApplied: z.array(IdSchema).max(LIMITS.influencesPerScene).default([]),
  influencesRejected: z
    .array(z.object({ id: IdSchema, reason: z.string().min(1).max(LIMITS.shortText) }))
    .max(LIMITS.influencesPerScene)
    .default([]),
});
export type StateDelta = z.infer<typeof StateDeltaSchema>;
export type StateDeltaInput = z.input<typeof StateDeltaSchema>;

/**
 * What an indexed vector stands for. `summary` is a chapter summary or the story synopsis; `meta` is bookkeeping
 * (the index fingerprint) that retrieval never returns.
 */
export const VectorRecordTypeSchema = z.enum(['scene', 'character', 'plotThread', 'summary', 'meta']);
export type VectorRecordType = z.infer<typeof VectorRecordTypeSchema>;

/** Metadata of an indexed vector: the reference schema plus `storyId` and where it came from. */
export const VectorMetadataSchema = z.object({
  storyId: IdSchema,
  type: VectorRecordTypeSchema,
  /** Milliseconds since the epoch. */
  timestamp: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  themes: z.array(tag).max(LIMITS.sceneTags).default([]),
  characters: z.array(IdSchema).max(LIMITS.sceneTags).default([]),
  locations: z.array(tag).max(LIMITS.sceneTags).default([]),
  importance: unit.default(0.5),
  /** The scene, character, thread or chapter this vector stands for. */
  sourceId: IdSchema,
  /** Position of the source scene in the story, when it is a scene or chapter summary. */
  sceneIndex: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  chapterId: IdSchema.optional(),
  /** Chunk number for long scenes split in parts. */
  chunk: z.number().int().min(0).max(10_000).default(0),
  /**
   * A short excerpt of the text, for display and for lexical re-ranking. An index whose records have a size limit
   * may keep a shorter prefix of it (Pinecone: the whole metadata within 40 KB as JSON); every other field is kept.
   */
  text: z.string().max(LIMITS.metadataText).default(''),
});
export type VectorMetadata = z.infer<typeof VectorMetadataSchema>;
export type VectorMetadataInput = z.input<typeof VectorMetadataSchema>;

/** An embedding with its metadata. `values` length must equal the index's dimensions; no NaN or infinities. */
export const VectorRecordSchema = z.object({
  id: IdSchema,
  values: z
    .custom<Float32Array>((value) => value instanceof Float32Array, 'must be a Float32Array')
    .refine(
      (values) => values.length > 0 && values.length <= LIMITS.vectorDimensions && values.every(Number.isFinite),
      `must hold 1..${LIMITS.vectorDimensions} finite numbers`,
    ),
  metadata: VectorMetadataSchema,
});
export type VectorRecord = z.infer<typeof VectorRecordSchema>;
export type VectorRecordInput = z.input<typeof VectorRecordSchema>;

/**
 * The JSON Schema form of each domain schema (draft 2020-12), for tools, model structured output and docs.
 * `VectorRecord` is described with `values` as an array of numbers.
 */
export function domainJsonSchemas(): Record<string, unknown> {
  const vectorRecordJson = z.object({
    id: IdSchema,
    values: z.array(z.number()).min(1).max(LIMITS.vectorDimensions),
    metadata: VectorMetadataSchema,
  });
  const convert = (schema: z.ZodType) => z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' });
  return {
    StoryState: convert(StoryStateSchema),
    CharacterState: convert(CharacterStateSchema),
    Relationship: convert(RelationshipSchema),
    PlotThread: convert(PlotThreadSchema),
    UserInfluence: convert(UserInfluenceSchema),
    Scene: convert(SceneSchema),
    StateDelta: convert(StateDeltaSchema),
    VectorRecord: convert(vectorRecordJson),
  };
}

/**
 * The character `id` of `state`, or undefined when it has none: an own key only, so that an id such as
 * "constructor" (a valid id, and a relationship may name someone not yet in the cast) never finds `Object`'s.
 */
export function characterOf(state: Pick<StoryState, 'characters'>, id: string): CharacterState | undefined {
  return Object.hasOwn(state.characters, id) ? state.characters[id] : undefined;
}

/** The id of chapter number `index` (0-based): `chapter-0001` for the first. Stable and sortable. */
export function chapterIdFor(index: number): string {
  return `chapter-${String(index + 1).padStart(4, '0')}`;
}
