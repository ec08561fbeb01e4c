/**
 * A year of daily episodes: a soak of the whole embedded stack, with its promises checked at the end.
 *
 * One story of the "lighthouse-keepers" template runs an episode a day (a `ManualClock` advanced 24 hours per
 * episode) through the engine with the Claude scene generator and the Claude summarizer on the local Messages API
 * stand-in, the SQLite store, vector and keyword indexes in one file, the filesystem site, and `autoPrune` at its
 * defaults. Every day but each sixth a few readers send suggestions and votes; the stand-in's model opens and
 * resolves plot threads, introduces a newcomer every 20 days, closes a chapter every 10 days, applies the even
 * influences and rejects the odd ones, and now and then slips on its first try (malformed JSON, a thread that does
 * not exist), which the generator must repair. Half-way through, the process "restarts": every handle is closed and
 * the same file reopened.
 *
 * At the end it checks, and exits non-zero with what broke when one fails:
 * - every episode completes (`assertEpisodeComplete`) as a new scene, and every post-commit step of every scene is
 *   `done` or `skipped` in the publication log;
 * - every influence ended once: applied or rejected as the model said, an applied one in exactly one scene;
 * - every slip was repaired with exactly one more call, and each closed chapter cost one summary and one synopsis
 *   call (none made twice, not even after the restart);
 * - a stored summary for every closed chapter, and a synopsis that reaches the last one;
 * - `autoPrune` dropped exactly the covered scenes (chapters with a summary, at least 200 scenes old, importance
 *   below 0.4) and nothing else;
 * - the context stays within its token budget, and within a chapter each episode's stable prefix begins with the
 *   whole of the previous one's (the chapter journal only appends), so a prompt cache keeps serving it;
 * - the site stays small: the feed lists the newest 50 episodes, `index.html` shows the newest 3 chapters' newest
 *   20 episodes and one line for each earlier chapter;
 * - SQLite grows linearly: bytes per episode over the last third at most 1.5 × those over the middle third (the
 *   square growth whole-state snapshots would bring shows as a steadily rising increment);
 * - an episode costs about the same late as early: median time of the last 60 at most 3 × that of the first 60;
 * - export → import → export is line for line identical, into the memory store and into a new SQLite file.
 *
 * Run: `npm run bench:year` (`BENCH_EPISODES=365`, `BENCH_RESTART_AT` = half of them; a restart point at or past
 * the last episode means no restart). Writes `bench/results/year.json` and `bench/results/year.md` for the default
 * run only. Offline; its temporary folder is removed at the end. Not part of `npm test`.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Anthropic from '@anthropic-ai/sdk';
import { ContextManager } from '../src/context/context-manager.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { assertEpisodeComplete, createStoryEngine } from '../src/engine/engine.js';
import { createClaudeSceneGenerator } from '../src/generation/claude-scene-generator.js';
import { createClaudeSummarizer } from '../src/generation/claude-summarizer.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { createFilesystemPublisher } from '../src/publishing/filesystem.js';
import {
  createSqliteKeywordIndex,
  createSqliteStateStore,
  createSqliteVectorIndex,
  openSqliteDatabase,
} from '../src/sqlite.js';
import { createMemoryStateStore } from '../src/state/memory.js';
import type { Scene } from '../src/state/schema.js';
import { nativeOf } from '../src/state/sqlite-database.js';
import {
  type AnthropicStandInReply,
  type AnthropicStandInRequest,
  defaultStandInReply,
  startAnthropicStandIn,
} from '../src/testing/anthropic-server.js';
import { ManualClock } from '../src/testing/manual-clock.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.join(here, 'results');
const EPISODES = Number(process.env.BENCH_EPISODES ?? 365);
const RESTART_AT = Number(process.env.BENCH_RESTART_AT ?? Math.floor(EPISODES / 2));
if (!Number.isInteger(EPISODES) || EPISODES < 1) throw new Error(`BENCH_EPISODES must be a positive integer`);
if (!Number.isInteger(RESTART_AT) || RESTART_AT < 1) throw new Error(`BENCH_RESTART_AT must be a positive integer`);
/** Only the default run is the published result. */
const DEFAULT_RUN = EPISODES === 365 && RESTART_AT === 182;
const STORY = 'year';
const DAY = 86_400_000;
const SCENE_CHARS = 1_500;
/** The share of a summary's word allowance the stand-in's summarizer fills. */
const SUMMARY_FILL = 0.2;
const PROGRESS_EVERY = 50;
/** `PrunePolicy` defaults, which `autoPrune: {}` takes. */
const PRUNE_MIN_AGE_SCENES = 200;
const PRUNE_MAX_IMPORTANCE = 0.4;
/** `FilesystemPublisherOptions` defaults: `feedEntries`, `indexChapters`, `indexEpisodes`. */
const FEED_ENTRIES = 50;
const INDEX_CHAPTERS = 3;
const INDEX_EPISODES = 20;
/** Linear growth: the last third's bytes per episode at most this times the middle third's. */
const GROWTH_RATIO_BAR = 1.5;
/**
 * A flat cost per episode: the last 60 episodes' median time at most this times the first 60's. Loose on purpose:
 * on a shared machine the two windows run in different minutes (1.7× was seen with tests running beside it), while a
 * cost that grows with the story shows as a ratio that keeps rising with the episodes.
 */
const SLOWDOWN_BAR = 3;
const TIMED_WINDOW = 60;

// The stand-in model's schedule, by scene index.
const malformedFirstTry = (index: number) => index % 17 === 5;
const continuitySlipFirstTry = (index: number) => index % 29 === 11;
const opensThread = (index: number) => index % 7 === 1;
const resolvesThread = (index: number) => index % 7 === 5;
const introducesNewcomer = (index: number) => index % 20 === 3;
const closesChapter = (index: number) => index % 10 === 9;
const IMPORTANCE = [0.2, 0.3, 0.5, 0.8, 0.35];
/** Readers' influences on a day: none every sixth day, else one to four; the fourth of a day is a vote. */
const influencesOn = (day: number) => (day % 6 === 0 ? 0 : (day % 4) + 1);
/** The model applies the even-numbered influences of a day and rejects the odd ones. */
const appliedByModel = (id: string) => Number(id.split('-').at(-1)) % 2 === 0;

const WORDS =
  'harbour lantern storm gull archive tide ledger compass rope beacon fog island keeper letter map bell cliff wreck salt drum'.split(
    ' ',
  );
const word = (index: number) => WORDS[index % WORDS.length];

function prose(index: number, chars: number): string {
  let out = '';
  for (let sentence = 0; out.length < chars; sentence++) {
    out += `On day ${index} the ${word(index * 7 + sentence)} and the ${word(index * 3 + sentence * 5)} were spoken of again, sentence ${sentence}. `;
  }
  return out.trim();
}

interface MessageBlock {
  text?: string;
}
interface Message {
  content: string | MessageBlock[];
}

function userText(messages: readonly Message[]): string {
  return messages
    .flatMap((message) =>
      typeof message.content === 'string' ? [message.content] : message.content.map((block) => block.text ?? ''),
    )
    .join('\n');
}

/** What the stand-in's default reply holds for a scene request (the generator's output schema). */
interface SceneReply {
  scene: Record<string, unknown>;
  delta: Record<string, unknown>;
}

const calls = { scene: 0, repairs: 0, summaries: 0 };

function respond(request: AnthropicStandInRequest): AnthropicStandInReply {
  const body = request.body as { output_config?: unknown; messages: Message[] };
  if (!body.output_config) {
    // The summarizer: a summary of a fifth of the words it may take.
    calls.summaries++;
    const text = userText(body.messages);
    const allowance = Number(/at most (\d+) words/.exec(text)?.[1]);
    const parts = (text.match(/<text index=/g) ?? []).length;
    const target = Math.round(allowance * SUMMARY_FILL);
    const sentences: string[] = [];
    for (let part = 0, words = 0; words < target; part++) {
      const sentence = `In part ${part + 1} of ${parts} the keepers faced the ${word(part)} and the ${word(part * 3)} together.`;
      sentences.push(sentence);
      words += sentence.split(' ').length;
    }
    return sentences.join(' ');
  }
  calls.scene++;
  const first = userText(body.messages.slice(0, 1));
  const index = Number(/sceneIndex: (\d+)/.exec(first)?.[1]);
  const isRepair = body.messages.length > 1;
  if (isRepair) calls.repairs++;
  if (!isRepair && malformedFirstTry(index)) return 'Here is the scene you asked for: { "scene": broken';
  const reply = defaultStandInReply(request, SCENE_CHARS) as unknown as SceneReply;
  Object.assign(reply.scene, {
    title: `Day ${index + 1}: the ${word(index)}`,
    text: prose(index, SCENE_CHARS),
    summary: `On day ${index + 1} the keepers dealt with the ${word(index)}.`,
    importance: IMPORTANCE[index % IMPORTANCE.length],
    locations: [word(index * 11)],
    themes: ['duty'],
  });
  const delta = reply.delta;
  if (!isRepair && continuitySlipFirstTry(index)) {
    // Advancing a thread that does not exist: the generator must have the model repair it.
    delta.threadsAdvanced = [
      {
        id: 'ghost-thread',
        summary: 'x',
        status: 'open',
        importance: 0.5,
        charactersAdded: [],
        setupsAdded: [],
        setupsPaidOff: [],
      },
    ];
  }
  const week = Math.floor(index / 7);
  if (opensThread(index)) {
    delta.threadsOpened = [
      {
        id: `thread-${week}`,
        title: `Mystery ${week}`,
        summary: `The ${word(week)} mystery.`,
        importance: 0.6,
        characters: [],
        setups: [`the ${word(week)} clue`],
      },
    ];
  }
  if (resolvesThread(index)) delta.threadsResolved = [{ id: `thread-${week}`, resolution: 'Solved at last.' }];
  if (introducesNewcomer(index)) {
    const newcomer = Math.floor(index / 20);
    delta.charactersIntroduced = [
      {
        id: `newcomer-${newcomer}`,
        name: `Newcomer ${newcomer}`,
        aliases: [],
        description: `A visitor who arrived on day ${index + 1}.`,
        role: 'supporting',
        status: 'active',
        traits: [{ key: 'courage', value: 0.5 }],
        relationships: [],
        knowledge: [],
        appearance: '',
      },
    ];
    reply.scene.characters = [`newcomer-${newcomer}`];
  }
  if (closesChapter(index)) delta.chapterClosed = { summary: `Chapter ending on day ${index + 1}.` };
  const offered = [...new Set(first.match(/inf-d\d+-\d+/g) ?? [])];
  delta.influencesApplied = offered.filter(appliedByModel);
  delta.influencesRejected = offered
    .filter((id) => !appliedByModel(id))
    .map((id) => ({ id, reason: 'Not this time.' }));
  return reply as unknown as AnthropicStandInReply;
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
};
const mean = (values: readonly number[]) => values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length);
const count = (predicate: (index: number) => boolean) =>
  Array.from({ length: EPISODES }, (_, index) => index).filter(predicate).length;
const fileBytes = (file: string) => (existsSync(file) ? statSync(file).size : 0);

async function main(): Promise<number> {
  const dir = mkdtempSync(path.join(tmpdir(), 'storyloom-year-'));
  const dbPath = path.join(dir, 'story.db');
  const siteDir = path.join(dir, 'site');
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 6));
  const failures: string[] = [];
  const fail = (message: string) => {
    failures.push(message);
    console.log(`FAILED: ${message}`);
  };
  const standIn = await startAnthropicStandIn({ clock, respond });
  const client = new Anthropic({ apiKey: 'bench', baseURL: standIn.url, maxRetries: 0 });

  const open = () => {
    const database = openSqliteDatabase({ path: dbPath });
    const store = createSqliteStateStore({ database, clock });
    const context = new ContextManager({
      store,
      vectors: createSqliteVectorIndex({ database, dimensions: 256 }),
      keywords: createSqliteKeywordIndex({ database }),
      embedder: createHashingEmbedder({ dimensions: 256 }),
      summarizer: createClaudeSummarizer({ client, model: 'claude-haiku-4-5', clock }),
      autoPrune: {},
    });
    const engine = createStoryEngine({
      store,
      context,
      generator: createClaudeSceneGenerator({ client, model: 'claude-sonnet-4-6', maxTokens: 4_000, clock }),
      publishers: [createFilesystemPublisher({ directory: siteDir })],
      clock,
    });
    return { database, store, context, engine };
  };
  /** The database's logical size (pages, the write-ahead log's committed ones included), whatever is checkpointed. */
  const logicalBytes = (database: ReturnType<typeof openSqliteDatabase>) => {
    const native = nativeOf(database);
    return (
      (native.pragma('page_count', { simple: true }) as number) *
      (native.pragma('page_size', { simple: true }) as number)
    );
  };

  let world = open();
  let copy: ReturnType<typeof openSqliteDatabase> | undefined;
  try {
    await world.store.create(createStoryFromTemplate('lighthouse-keepers', STORY, clock));
    const enqueued: string[] = [];
    const times: number[] = [];
    const sizes: number[] = [];
    const tokens: Array<{ total: number; stable: number; budget: number; positionInChapter: number }> = [];
    let previous: { chapterId: string; stable: string; positionInChapter: number } | undefined;
    const started = performance.now();
    for (let day = 0; day < EPISODES; day++) {
      if (day === RESTART_AT) {
        await world.store.close();
        world.database.close();
        world = open();
        console.log(`day ${day}: restarted (every handle closed, the file reopened)`);
      }
      for (let reader = 0; reader < influencesOn(day); reader++) {
        const id = `inf-d${day}-${reader}`;
        const vote = reader === 3;
        await world.store.enqueueInfluence({
          id,
          storyId: STORY,
          source: 'web',
          kind: vote ? 'vote' : 'suggestion',
          author: `reader-${reader}`,
          choice: vote ? 'the lamp' : null,
          text: `Reader ${reader} on day ${day}: let the ${word(day + reader)} matter.`,
          weight: 1,
          receivedAt: new Date(clock.now()).toISOString(),
        });
        enqueued.push(id);
      }
      const episodeStarted = performance.now();
      try {
        const result = await world.engine.runEpisode(STORY, {
          idempotencyKey: `${STORY}@${new Date(clock.now()).toISOString().slice(0, 10)}`,
        });
        assertEpisodeComplete(result);
        if (result.outcome !== 'created' || result.scene.index !== day) {
          fail(`day ${day}: outcome ${result.outcome} with scene ${result.scene.index}, expected a new scene ${day}`);
        }
      } catch (error) {
        fail(`day ${day}: ${(error as Error).name}: ${(error as Error).message.slice(0, 300)}`);
        if (failures.length > 5) break;
      }
      times.push(performance.now() - episodeStarted);

      const bundle = await world.context.getRelevantContext(STORY, 'the lamp and the newcomers');
      if (bundle.tokens.total > bundle.tokens.budget) {
        fail(`day ${day}: context of ${bundle.tokens.total} tokens over its budget of ${bundle.tokens.budget}`);
      }
      const state = await world.store.load(STORY);
      const stable = bundle.prompt.stable;
      if (previous && previous.chapterId === state.chapterId && !stable.startsWith(previous.stable)) {
        let at = 0;
        while (at < previous.stable.length && previous.stable[at] === stable[at]) at++;
        fail(
          `day ${day}: stable prefix no longer begins with the previous one within ${state.chapterId} at character ${at}: ${JSON.stringify(previous.stable.slice(Math.max(0, at - 80), at + 80))} -> ${JSON.stringify(stable.slice(Math.max(0, at - 80), at + 80))}`,
        );
      }
      const positionInChapter = previous?.chapterId === state.chapterId ? previous.positionInChapter + 1 : 1;
      previous = { chapterId: state.chapterId, stable, positionInChapter };
      tokens.push({ ...bundle.tokens, positionInChapter });
      sizes.push(logicalBytes(world.database));
      if ((day + 1) % PROGRESS_EVERY === 0 || day + 1 === EPISODES) {
        console.log(
          `day ${day + 1}/${EPISODES}: ${((performance.now() - started) / 1000).toFixed(1)} s, median episode of the last ${PROGRESS_EVERY} ${median(times.slice(-PROGRESS_EVERY)).toFixed(0)} ms, SQLite ${(sizes.at(-1)! / 1e6).toFixed(1)} MB, context ${bundle.tokens.total}/${bundle.tokens.budget} tokens (${bundle.tokens.stable} stable)`,
        );
      }
      await clock.advance(DAY);
    }
    const wallSeconds = (performance.now() - started) / 1000;
    const { store, database, engine } = world;
    const state = await store.load(STORY);

    // Episodes and the stand-in's calls.
    if (state.sceneCount !== EPISODES) fail(`${state.sceneCount} scenes after ${EPISODES} episodes`);
    const closedChapters = count(closesChapter);
    if (state.chapterIndex !== closedChapters) {
      fail(`${state.chapterIndex} chapters closed, expected ${closedChapters}`);
    }
    const slips = count((index) => malformedFirstTry(index) || continuitySlipFirstTry(index));
    if (calls.repairs !== slips || calls.scene !== EPISODES + slips) {
      fail(
        `${calls.scene} scene calls with ${calls.repairs} repairs, expected ${EPISODES + slips} with ${slips} (one per slip)`,
      );
    }
    if (calls.summaries !== 2 * closedChapters) {
      fail(
        `${calls.summaries} summarizer calls, expected ${2 * closedChapters} (a summary and a synopsis per chapter)`,
      );
    }

    // Scenes and their publication log.
    const scenes: Scene[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.listScenes(STORY, cursor ? { limit: 200, cursor } : { limit: 200 });
      scenes.push(...page.items);
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    if (scenes.length !== EPISODES) fail(`${scenes.length} scenes listed, expected ${EPISODES}`);
    for (const scene of scenes) {
      const log = await store.listPublications(STORY, scene.id);
      const unfinished = engine.steps.filter(
        (step) =>
          !log.some((entry) => entry.target === step && (entry.status === 'done' || entry.status === 'skipped')),
      );
      const other = log.filter((entry) => entry.status !== 'done' && entry.status !== 'skipped');
      if (unfinished.length > 0 || other.length > 0) {
        fail(
          `scene ${scene.index}: unfinished steps ${JSON.stringify(unfinished)}, log ${JSON.stringify(log.map((entry) => `${entry.target}:${entry.status}`))}`,
        );
      }
    }

    // Influences: each ended once, as the model said.
    const appliedIn = new Map<string, number>();
    for (const scene of scenes) {
      for (const id of scene.influencesApplied) appliedIn.set(id, (appliedIn.get(id) ?? 0) + 1);
    }
    let applied = 0;
    let rejected = 0;
    for (const id of enqueued) {
      const influence = await store.getInfluence(STORY, id);
      const status = influence?.status;
      const expected = appliedByModel(id) ? 'applied' : 'rejected';
      if (status === 'applied') applied++;
      if (status === 'rejected') rejected++;
      const scenesApplying = appliedIn.get(id) ?? 0;
      if (status !== expected || scenesApplying !== (expected === 'applied' ? 1 : 0)) {
        fail(`influence ${id}: ${status}, applied by ${scenesApplying} scenes; expected ${expected}`);
      }
    }
    for (const id of appliedIn.keys()) if (!enqueued.includes(id)) fail(`scenes applied an unknown influence ${id}`);

    // Summaries of the closed chapters, and the synopsis.
    const vectors = createSqliteVectorIndex({ database, dimensions: 256 });
    const chapterOf = new Map<string, Scene[]>();
    for (const scene of scenes) chapterOf.set(scene.chapterId, [...(chapterOf.get(scene.chapterId) ?? []), scene]);
    const chapters = [...chapterOf].map(([chapterId, members]) => ({
      chapterId,
      last: Math.max(...members.map((scene) => scene.index)),
      members,
    }));
    const closed = chapters.filter((chapter) => closesChapter(chapter.last));
    const summaries = await vectors.fetch(STORY, [
      ...closed.map((chapter) => `summary-${chapter.chapterId}`),
      'summary-synopsis',
    ]);
    const stored = new Map(summaries.map((record) => [record.id, record]));
    for (const chapter of closed) {
      const summary = stored.get(`summary-${chapter.chapterId}`);
      if (!summary?.metadata.text) fail(`no summary of the closed ${chapter.chapterId}`);
      else if (summary.metadata.sceneIndex !== chapter.last) {
        fail(`the summary of ${chapter.chapterId} ends at scene ${summary.metadata.sceneIndex}, not ${chapter.last}`);
      }
    }
    const lastClosing = closed.at(-1)?.last ?? -1;
    const synopsis = stored.get('summary-synopsis');
    if (closed.length > 0 && (!synopsis?.metadata.text || synopsis.metadata.sceneIndex !== lastClosing)) {
      fail(`the synopsis reaches scene ${synopsis?.metadata.sceneIndex}, not the last closed chapter's ${lastClosing}`);
    }

    // autoPrune: at the last chapter close it dropped the covered, old, unimportant scenes; nothing else, ever.
    // Chapter by chapter: a query returns at most 10,000 matches, a chapter's scenes have far fewer chunks.
    const sceneMatches = [];
    for (const chapter of chapters) {
      sceneMatches.push(
        ...(await vectors.query(STORY, {
          vector: new Float32Array(256).fill(0.1),
          topK: 10_000,
          filter: { type: 'scene', chapterId: chapter.chapterId },
        })),
      );
    }
    const kept = new Set(sceneMatches.map((match) => match.metadata.sceneIndex));
    const dropped = scenes.filter((scene) => !kept.has(scene.index));
    const horizon = lastClosing + 1 - PRUNE_MIN_AGE_SCENES;
    const covered = new Set(
      closed.filter((chapter) => stored.has(`summary-${chapter.chapterId}`) && chapter.last < horizon),
    );
    const shouldDrop = new Set(
      [...covered].flatMap((chapter) =>
        chapter.members.filter((scene) => scene.importance < PRUNE_MAX_IMPORTANCE).map((scene) => scene.index),
      ),
    );
    for (const scene of dropped) {
      if (!shouldDrop.has(scene.index)) {
        fail(`scene ${scene.index} (importance ${scene.importance}, ${scene.chapterId}) pruned but not covered`);
      }
    }
    const droppedIndexes = new Set(dropped.map((scene) => scene.index));
    const missed = [...shouldDrop].filter((index) => !droppedIndexes.has(index));
    if (missed.length > 0) fail(`${missed.length} covered scenes not pruned, from scene ${missed[0]}`);

    // The site stays small.
    const indexHtml = readFileSync(path.join(siteDir, 'index.html'), 'utf8');
    const feed = readFileSync(path.join(siteDir, 'feed.atom'), 'utf8');
    const feedEntries = (feed.match(/<entry>/g) ?? []).length;
    if (feedEntries !== Math.min(FEED_ENTRIES, EPISODES)) {
      fail(`feed.atom lists ${feedEntries} episodes, expected ${Math.min(FEED_ENTRIES, EPISODES)}`);
    }
    const shown = chapters.slice(-INDEX_CHAPTERS);
    const expectedCards = shown.reduce((sum, chapter) => sum + Math.min(INDEX_EPISODES, chapter.members.length), 0);
    const cards = (indexHtml.match(/<li class="card">/g) ?? []).length;
    const archiveLines = (indexHtml.match(/<li id="chapter-\d+">/g) ?? []).length;
    const expectedArchive = chapters.length - shown.length;
    if (cards !== expectedCards || archiveLines !== expectedArchive) {
      fail(
        `index.html shows ${cards} episode cards and ${archiveLines} earlier chapters, expected ${expectedCards} and ${expectedArchive}`,
      );
    }

    // SQLite grows linearly with the episodes.
    const third = Math.floor(EPISODES / 3);
    const growth = (from: number, to: number) => (sizes[to - 1]! - sizes[from - 1]!) / (to - from);
    const middleThird = third >= 2 ? growth(third, 2 * third) : Number.NaN;
    const lastThird = third >= 2 ? growth(2 * third, EPISODES) : Number.NaN;
    if (lastThird > GROWTH_RATIO_BAR * middleThird) {
      fail(
        `SQLite grew ${lastThird.toFixed(0)} B per episode over the last third, over ${GROWTH_RATIO_BAR} × the middle third's ${middleThird.toFixed(0)}`,
      );
    }

    // An episode costs the same late as early.
    const window = Math.min(TIMED_WINDOW, Math.floor(times.length / 2));
    const firstMedian = median(times.slice(0, window));
    const lastMedian = median(times.slice(-window));
    if (lastMedian > SLOWDOWN_BAR * firstMedian) {
      fail(
        `median episode ${lastMedian.toFixed(1)} ms over the last ${window}, over ${SLOWDOWN_BAR} × the first ${window}'s ${firstMedian.toFixed(1)} ms`,
      );
    }

    // Export → import → export, into the memory store and into a new SQLite file.
    const lines: string[] = [];
    for await (const line of store.exportStory(STORY)) lines.push(line);
    const roundTrip = async (target: ReturnType<typeof createMemoryStateStore>, name: string) => {
      await target.importStory(lines);
      let at = 0;
      for await (const line of target.exportStory(STORY)) {
        if (line !== lines[at]) {
          fail(`${name} round trip differs at line ${at} of ${lines.length}: ${line.slice(0, 200)}`);
          return;
        }
        at++;
      }
      if (at !== lines.length) fail(`${name} round trip gave ${at} lines of ${lines.length}`);
    };
    await roundTrip(createMemoryStateStore(), 'memory');
    copy = openSqliteDatabase({ path: path.join(dir, 'copy.db') });
    await roundTrip(createSqliteStateStore({ database: copy }), 'SQLite');
    const exportBytes = lines.reduce((sum, line) => sum + Buffer.byteLength(line) + 1, 0);

    const later = tokens.filter((episode) => episode.positionInChapter >= 2);
    const shareOf = (episode: { total: number; stable: number }) =>
      episode.total > 0 ? episode.stable / episode.total : 0;
    const sqliteFileBytes = fileBytes(dbPath);
    const walBytes = fileBytes(`${dbPath}-wal`);
    const sqliteBytes = sizes.at(-1) ?? 0;
    const summary = {
      node: process.version,
      episodes: EPISODES,
      restartAt: RESTART_AT < EPISODES ? RESTART_AT : null,
      wallSeconds: Number(wallSeconds.toFixed(1)),
      chapters: { total: chapters.length, closed: closed.length },
      calls: { scene: calls.scene, repairs: calls.repairs, summarizer: calls.summaries },
      influences: { enqueued: enqueued.length, applied, rejected },
      summaries: {
        chapters: closed.filter((chapter) => stored.has(`summary-${chapter.chapterId}`)).length,
        synopsis: !!synopsis,
      },
      prunedScenes: dropped.length,
      sceneVectorsKept: sceneMatches.length,
      promptTokens: {
        budget: tokens.at(-1)?.budget ?? 0,
        mean: Math.round(mean(tokens.map((episode) => episode.total))),
        last: tokens.at(-1)?.total ?? 0,
        stableShareMean: Number(mean(tokens.map(shareOf)).toFixed(3)),
        stableShareMinFromSecondOfChapter: later.length ? Number(Math.min(...later.map(shareOf)).toFixed(3)) : null,
      },
      site: {
        indexHtmlBytes: Buffer.byteLength(indexHtml),
        feedAtomBytes: Buffer.byteLength(feed),
        feedEntries,
        cards,
      },
      sqlite: {
        /** The database's pages, those still in the write-ahead log included. */
        bytes: sqliteBytes,
        bytesPerEpisode: Math.round(sqliteBytes / EPISODES),
        /** On disk at the end: the main file and the write-ahead log (reused, not truncated, by checkpoints). */
        fileBytes: sqliteFileBytes,
        walBytes,
        middleThirdBytesPerEpisode: Math.round(middleThird),
        lastThirdBytesPerEpisode: Math.round(lastThird),
      },
      episodeMs: {
        window,
        medianFirst: Number(firstMedian.toFixed(1)),
        medianLast: Number(lastMedian.toFixed(1)),
      },
      export: { lines: lines.length, bytes: exportBytes },
      failures,
    };

    const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
    const kb = (bytes: number) => `${(bytes / 1e3).toFixed(1)} KB`;
    const table = [
      '# A year of daily episodes',
      '',
      `${EPISODES} daily episodes of one story through the engine, the Claude scene generator and summarizer on the Messages API stand-in (malformed or inconsistent first tries to repair), the SQLite store and indexes, the filesystem site and \`autoPrune\`, with readers' suggestions and votes most days and a process restart at episode ${RESTART_AT}; ${failures.length === 0 ? 'every promise checked held' : `**${failures.length} checks failed**`}. Node ${process.version}, ${summary.wallSeconds} s.`,
      '',
      '| measure | value |',
      '|---|---:|',
      `| episodes / chapters (closed) | ${EPISODES} / ${chapters.length} (${closed.length}) |`,
      `| repairs (scene calls) | ${calls.repairs} (${calls.scene}) |`,
      `| influences applied / rejected (of enqueued) | ${applied} / ${rejected} (${enqueued.length}) |`,
      `| chapter summaries / synopsis (summarizer calls) | ${summary.summaries.chapters} / ${synopsis ? 'yes' : 'no'} (${calls.summaries}) |`,
      `| scenes pruned (scene vectors kept) | ${dropped.length} (${sceneMatches.length}) |`,
      `| context tokens per episode, mean / last (budget) | ${summary.promptTokens.mean} / ${summary.promptTokens.last} (${summary.promptTokens.budget}) |`,
      `| stable share, mean / min from the 2nd episode of a chapter | ${(summary.promptTokens.stableShareMean * 100).toFixed(1)} % / ${summary.promptTokens.stableShareMinFromSecondOfChapter === null ? '–' : `${(summary.promptTokens.stableShareMinFromSecondOfChapter * 100).toFixed(1)} %`} |`,
      `| index.html / feed.atom | ${kb(summary.site.indexHtmlBytes)} / ${kb(summary.site.feedAtomBytes)} |`,
      `| SQLite database, per episode (on disk: file + write-ahead log) | ${mb(sqliteBytes)}, ${kb(summary.sqlite.bytesPerEpisode)} (${mb(sqliteFileBytes)} + ${mb(walBytes)}) |`,
      `| SQLite growth per episode, middle / last third | ${kb(middleThird)} / ${kb(lastThird)} |`,
      `| median episode, first / last ${window} | ${firstMedian.toFixed(1)} / ${lastMedian.toFixed(1)} ms |`,
      `| export (lines, bytes) | ${lines.length.toLocaleString('en-US')} lines, ${mb(exportBytes)} |`,
      `| wall time | ${summary.wallSeconds} s |`,
    ];
    if (DEFAULT_RUN && failures.length === 0) {
      mkdirSync(RESULTS, { recursive: true });
      writeFileSync(path.join(RESULTS, 'year.json'), `${JSON.stringify(summary, null, 2)}\n`);
      writeFileSync(path.join(RESULTS, 'year.md'), `${table.join('\n')}\n`);
    }
    process.stdout.write(`\n${table.join('\n')}\n`);
  } finally {
    await world.store.close().catch(() => {});
    world.database.close();
    copy?.close();
    await standIn.close();
    rmSync(dir, { recursive: true, force: true });
  }
  if (failures.length > 0) {
    console.log(`\n${failures.length} checks failed:\n${failures.slice(0, 40).join('\n')}`);
    return 1;
  }
  return 0;
}

process.exitCode = await main();
