/**
 * The `storyloom` command: init, run, context, memory (stats, prune, reindex), influence add, status, export,
 * import, fork and demo.
 *
 * Every failure a user can cause (a bad argument, a missing file, a missing credential) ends in one line on stderr
 * that says what to do, and a non-zero exit code.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  createReadStream,
  createWriteStream,
  existsSync,
  lstatSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  type Stats,
  statSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { createGunzip, createGzip } from 'node:zlib';
import { SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { isoNow, systemClock } from '../core/clock.js';
import { ConflictError, NotFoundError, StoryloomError, ValidationError } from '../core/errors.js';
import { buildEpisodeQuery, takenInfluences } from '../engine/engine.js';
import type { EngineEvent, EngineStep } from '../engine/events.js';
import { resolveInfluences } from '../engine/influence-resolution.js';
import { createStoryFromTemplate, defaultStoryTemplate, storyTemplates } from '../generation/story-templates.js';
import { EXPORT_FORMAT } from '../state/base-store.js';
import {
  IdSchema,
  StoryBibleSchema,
  type StoryState,
  StoryStateSchema,
  type UserInfluenceInput,
} from '../state/schema.js';
import {
  CommandError,
  clearBuildPending,
  DEFAULT_ANTHROPIC_MODEL,
  DEFAULT_BEDROCK_MODEL,
  type GeneratorChoice,
  makeProjectFolder,
  markBuildPending,
  type OpenProject,
  openProject,
  type PendingBuild,
  type ProjectPaths,
  partialFileFor,
  projectPaths,
  readBuildPending,
  removeStalePartials,
  SELF,
} from './project.js';

/** Where the command writes, and what it reads from its environment; injectable for tests. */
export interface CommandIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  cwd: string;
  /**
   * Aborted once the reader of `stdout` has gone away (`storyloom run | head`): from then on nothing more is written
   * to it, `run` finishes the episode it is in and stops with status 141 (as a tool killed by SIGPIPE would), and
   * the other commands finish what they write to the project and exit as they would have.
   */
  stdoutClosed?: AbortSignal;
}

/** The exit status of `run` stopped early because the reader of its output went away: 128 + SIGPIPE. */
const CLOSED_OUTPUT_STATUS = 141;

const DEFAULT_DATA = 'storyloom-data';

function positiveInteger(name: string, max: number, min = 1) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}`);
    }
    return parsed;
  };
}

function nonNegativeInteger(name: string) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(parsed)) {
      throw new InvalidArgumentError(`${name} must be a whole number (0 or more)`);
    }
    return parsed;
  };
}

function unitInterval(value: string): number {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed) || parsed < 0 || parsed > 1) {
    throw new InvalidArgumentError('must be a number from 0 to 1');
  }
  return parsed;
}

function storyIdArgument(value: string): string {
  if (!IdSchema.safeParse(value).success) {
    throw new InvalidArgumentError(
      'must be 1-128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit',
    );
  }
  return value;
}

/**
 * A weight written as a plain decimal number of 0 or more: an empty or blank value (an unset variable in a script)
 * or another notation `Number` would take (`0x10`, `Infinity`) is refused rather than read as something else.
 */
function weightArgument(value: string): number {
  const parsed = Number(value);
  if (!/^(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value) || !Number.isFinite(parsed)) {
    throw new InvalidArgumentError('--weight must be a number of 0 or more, written in decimal');
  }
  return parsed;
}

/**
 * A word of a command the user is told to run, quoted for a POSIX shell when it holds anything the shell would
 * split or expand (a folder name with a space, a `$`, a quote), so that the printed command works when pasted.
 */
function shellWord(value: string): string {
  if (/^[\w@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Every control character (C0, DEL, C1) and every bidi embedding, override and isolate control. */
const TERMINAL_CONTROLS = /[\p{Cc}\u202A-\u202E\u2066-\u2069]/gu;
/** The same but newline and tab. */
const TERMINAL_CONTROLS_BUT_LINES = /(?![\n\t])[\p{Cc}\u202A-\u202E\u2066-\u2069]/gu;

/**
 * Story text (a title, a name, a prompt: written by a model, or brought in by an import) as it may be shown on a
 * terminal: each control character written as its escape (`\u001b`). ESC starts the sequences that set a window's
 * title, clear the screen or rewrite what is shown, and a bidi override or isolate reorders the rest of the line.
 * Newlines and tabs stay where the text is `multiline` (a prompt). Output of `--json` is written as stored: JSON
 * escapes the C0 controls (ESC among them), not C1 controls or bidi overrides, which a reader of it must treat as data.
 */
function terminalText(text: string, options: { multiline?: boolean } = {}): string {
  return text.replace(
    options.multiline ? TERMINAL_CONTROLS_BUT_LINES : TERMINAL_CONTROLS,
    (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Builds the command. `run` parses argv and returns the exit code instead of exiting. */
export function createProgram(io: CommandIo): { run(argv: readonly string[]): Promise<number> } {
  /** Writes to stdout unless its reader has gone away (then every write is dropped, as `head` expects). */
  const write = (text: string) => {
    if (!io.stdoutClosed?.aborted) io.stdout.write(text);
  };
  const print = (line = '') => write(`${line}\n`);
  /** Prints a line that holds story text: see `terminalText`. */
  const printText = (line: string) => print(terminalText(line));
  /** The status the command ends with when it did not fail: set by `run` when it stopped for a closed output. */
  let exitStatus = 0;
  const dataOption = () =>
    new Option('-d, --data <folder>', 'the project folder').default(io.env.STORYLOOM_DATA ?? DEFAULT_DATA);
  const storyOption = () =>
    new Option('-s, --story <id>', 'the story (default: the project’s story)').argParser(storyIdArgument);

  const withProject = async <T>(data: string, work: (project: OpenProject) => Promise<T>): Promise<T> => {
    const project = await openProject(path.resolve(io.cwd, data));
    try {
      return await work(project);
    } finally {
      project.close();
    }
  };

  /** Opens the project and checks that the story (`--story`, or the project's own) is in it. */
  const withStory = <T>(
    options: { data: string; story?: string },
    work: (project: OpenProject, storyId: string) => Promise<T>,
  ): Promise<T> =>
    withProject(options.data, async (project) => {
      const storyId = options.story ?? project.project.storyId;
      await requireStory(project, storyId);
      return work(project, storyId);
    });

  const program = new Command('storyloom')
    .description('Autonomous, serialized stories: write, remember, steer and publish, one scene at a time.')
    .configureOutput({
      writeOut: (text) => write(text),
      writeErr: (text) => io.stderr.write(text),
    })
    .exitOverride()
    .version(packageVersion(), '-V, --version', 'print the version')
    .showSuggestionAfterError(true)
    .addHelpText(
      'after',
      '\nExit status: 0 done; 1 the data or the story refused it (one line on stderr says why); 2 a usage error;\n' +
        '70 an unexpected failure (STORYLOOM_DEBUG=1 prints its stack); 141 "run" stopped after an episode because\n' +
        'the reader of its output went away ("| head"): the episodes it wrote are whole.',
    );

  program
    .command('init')
    .description('create a project with a new story from a built-in template or a bible file')
    .addOption(dataOption())
    .addOption(
      new Option('-t, --template <name>', 'a built-in template')
        .choices(Object.keys(storyTemplates))
        .default(defaultStoryTemplate.name),
    )
    .option('-b, --bible <file>', 'a JSON file with a story bible, or a whole initial story state')
    .addOption(
      new Option(
        '-s, --story <id>',
        'the id of the new story (default: the storyId of a --bible state, else the --bible file’s name, else the template’s name)',
      ).argParser(storyIdArgument),
    )
    .action(async (options: { data: string; template: string; bible?: string; story?: string }) => {
      const bibleFile = options.bible ? path.resolve(io.cwd, options.bible) : undefined;
      const bible = bibleFile ? readBibleFile(bibleFile) : undefined;
      const storyId = options.story ?? (options.bible && bible ? bibleStoryId(options.bible, bible) : options.template);
      if (!IdSchema.safeParse(storyId).success) {
        throw new CommandError(`"${storyId}" is not a usable story id: pass --story <id>`);
      }
      const state =
        bibleFile && bible
          ? stateFromBible(bibleFile, bible, storyId)
          : createStoryFromTemplate(options.template, storyId, systemClock);
      const root = path.resolve(io.cwd, options.data);
      // A project whose init was cut short between its project file and its story: finish it (same story id only).
      const unfinished = existsSync(projectPaths(root).config) ? await openProject(root) : undefined;
      if (unfinished && (unfinished.project.storyId !== storyId || (await unfinished.store.exists(storyId)))) {
        unfinished.close();
        throw new CommandError(`${unfinished.paths.root} already holds a storyloom project: use another --data folder`);
      }
      const project = unfinished ?? (await openProject(root, { formatVersion: 1, storyId, dimensions: 1536 }));
      try {
        await project.store.create(state);
        // A pending-build record of an import killed before its story went in speaks of another story: drop it.
        clearBuildPending(project.paths, storyId);
        printText(`Created "${state.bible.title}" (${storyId}) in ${project.paths.root}`);
        print(`Next: ${SELF} run --episodes 3 --data ${shellWord(options.data)}`);
      } finally {
        project.close();
      }
    });

  program
    .command('run')
    .description('write the next episodes (offline by default)')
    .addOption(dataOption())
    .addOption(storyOption())
    .option('-n, --episodes <count>', 'how many episodes', positiveInteger('--episodes', 10_000), 1)
    .addOption(
      new Option('-g, --generator <name>', 'who writes the scenes')
        .choices(['procedural', 'anthropic', 'bedrock'])
        .default('procedural'),
    )
    .option(
      '-m, --model <id>',
      `the model id for --generator anthropic|bedrock (default: $STORYLOOM_MODEL, else ${DEFAULT_ANTHROPIC_MODEL} | ${DEFAULT_BEDROCK_MODEL})`,
    )
    .option(
      '--no-images',
      'publish without a picture the scenes this run writes or finishes (later runs do not draw one)',
    )
    .option('--seed <number>', 'seed of the offline narrator', nonNegativeInteger('--seed'), 1)
    .action(
      async (options: {
        data: string;
        story?: string;
        episodes: number;
        generator: GeneratorChoice;
        model?: string;
        images: boolean;
        seed: number;
      }) => {
        await withStory(options, async (project, storyId) => {
          const pending = readBuildPending(project.paths, storyId);
          if (pending) {
            print(`Finishing the ${pending.kind} of ${storyId} first: its memory and site`);
            await finishBuild(project, storyId, pending);
          }
          const bar = io.stderr.isTTY
            ? new SingleBar({
                format: 'episodes [{bar}] {value}/{total} {step}',
                stream: io.stderr,
                hideCursor: false,
                linewrap: true,
              })
            : undefined;
          let step = '';
          const engine = await project.createEngine(storyId, {
            generator: options.generator,
            ...(options.model ? { model: options.model } : {}),
            images: options.images,
            seed: options.seed,
            env: io.env,
            onEvent: (event: EngineEvent) => {
              if (event.type === 'step.start') {
                step = event.step;
                bar?.update({ step });
              }
            },
          });
          bar?.start(options.episodes, 0, { step });
          try {
            // A run may first finish the unfinished steps of the last scene (after a crash or a fork), or find that
            // another run wrote the scene first ('existing': that run finishes its steps): neither is a new episode,
            // so the loop counts only runs that wrote a scene.
            for (let written = 0; written < options.episodes; ) {
              // Checked only between episodes: the one under way is finished, steps and all, before it stops.
              if (io.stdoutClosed?.aborted) break;
              const result = await engine.runEpisode(storyId);
              if (result.failures.length > 0) {
                const failed = result.failures.map((failure) => failure.step).join(', ');
                throw new CommandError(
                  `scene ${result.scene.index + 1} was written but ${failed} failed: run again to finish`,
                );
              }
              // A line per episode unless the bar shows them on the same terminal: a pipe (`| head`) gets its lines,
              // and a write to it is how the run learns that its reader has gone.
              if (!bar || !io.stdout.isTTY) {
                const by = result.outcome === 'existing' ? 'written by another run' : result.outcome;
                printText(`[${result.scene.index + 1}] ${result.scene.title} (${by})`);
                // A write to a reader that has gone fails after the call returns: its error is given a turn to
                // arrive, so that the check above stops the loop before another episode, not one later.
                await new Promise((resolve) => setImmediate(resolve));
              }
              if (result.outcome !== 'created') continue;
              written++;
              bar?.increment({ step: 'done' });
            }
          } finally {
            bar?.stop();
          }
          if (io.stdoutClosed?.aborted) {
            exitStatus = CLOSED_OUTPUT_STATUS;
            return;
          }
          const state = await project.store.load(storyId);
          print(
            `${state.sceneCount} scenes, ${state.chapterId}. Site: ${path.join(project.paths.siteOf(storyId), 'index.html')}`,
          );
        });
      },
    );

  program
    .command('context')
    .description('show the prompt the next scene would get, with its trace and token counts')
    .addOption(dataOption())
    .addOption(storyOption())
    .option(
      '-q, --query <text>',
      "what the next scene is about (default: the next episode's own query, from its main characters, open threads and the audience's leading choice)",
    )
    .option('-k, --k <count>', 'similar scenes to retrieve', positiveInteger('--k', 100), 5)
    .option('--budget <tokens>', 'token budget of the prompt', positiveInteger('--budget', 2_000_000, 256), 8_000)
    .option('--pov <characterId>', 'only what this character witnessed or knows')
    .option('--json', 'print the whole bundle as JSON')
    .action(
      async (options: {
        data: string;
        story?: string;
        query?: string;
        k: number;
        budget: number;
        pov?: string;
        json?: boolean;
      }) => {
        await withStory(options, async (project, storyId) => {
          // As the engine asks for the next episode's context: with the influences it will take (the oldest, as
          // many as one scene takes), resolved, and without --query its own episode query, so the prompt shown is
          // the one the narrator gets.
          const state = await project.store.load(storyId);
          const resolution = resolveInfluences(takenInfluences(state, project.store));
          const pov = options.pov;
          const query =
            options.query ??
            buildEpisodeQuery(
              state,
              resolution,
              pov ? { povCharacterId: pov, known: await project.context.knownTo(storyId, pov, { state }) } : {},
            );
          const bundle = await project.context.getRelevantContext(storyId, query, {
            k: options.k,
            tokenBudget: options.budget,
            state,
            influences: resolution.influences,
            ...(options.pov ? { povCharacterId: options.pov } : {}),
          });
          if (options.json) {
            print(JSON.stringify(bundle, null, 2));
            return;
          }
          print('──── stable prefix (cached across the chapter) ────');
          write(terminalText(bundle.prompt.stable, { multiline: true }));
          print('──── dynamic part ────');
          write(terminalText(bundle.prompt.dynamic, { multiline: true }));
          print('──── trace ────');
          for (const item of bundle.trace.included) {
            printText(`+ ${item.part.padEnd(7)} ${item.id} [${item.detail}, ${item.tokens} tokens] ${item.reason}`);
          }
          for (const item of bundle.trace.omitted) printText(`- ${item.part.padEnd(7)} ${item.id}: ${item.reason}`);
          const t = bundle.tokens;
          print(`tokens: ${t.total} of ${t.budget} (stable ${t.stable}, dynamic ${t.dynamic})`);
          print(
            `time: ${bundle.trace.timings.total.toFixed(1)} ms (retrieval ${bundle.trace.timings.retrieval.total.toFixed(1)} ms)`,
          );
        });
      },
    );

  const memory = program.command('memory').description("the story's memory: vector space, pruning, rebuilding");
  memory
    .command('stats')
    .description('counts by type, vector norms and the near-duplicate rate of the story’s memory')
    .addOption(dataOption())
    .addOption(storyOption())
    .option('--json', 'print JSON')
    .action(async (options: { data: string; story?: string; json?: boolean }) => {
      await withStory(options, async (project, storyId) => {
        const stats = await project.context.stats(storyId);
        const keywords = await project.keywords.count(storyId);
        if (options.json) {
          print(JSON.stringify({ storyId, ...stats, keywordDocuments: keywords }, null, 2));
          return;
        }
        const types = Object.entries(stats.byType)
          .filter(([, count]) => count > 0)
          .map(([type, count]) => `${count} ${type}`)
          .join(', ');
        print(`${storyId}: ${stats.total} vectors of ${stats.dimensions} dimensions (${types || 'none'})`);
        print(`Keyword documents: ${keywords}`);
        if (!stats.countsExact) print('Counts by type are lower bounds: a type has more records than one query lists.');
        const n = stats.norms;
        print(`Norms: min ${n.min.toFixed(3)}, mean ${n.mean.toFixed(3)}, max ${n.max.toFixed(3)}`);
        print(
          `Near-duplicate scenes (cosine ≥ 0.95): ${(stats.nearDuplicateRate * 100).toFixed(1)} % of ${stats.sampled} sampled`,
        );
        print(`Index built with: ${stats.fingerprint ?? 'unknown (no fingerprint yet)'}`);
      });
    });
  memory
    .command('prune')
    .description('drop old, unimportant scene memories that a chapter summary already covers')
    .addOption(dataOption())
    .addOption(storyOption())
    .option('--min-age <scenes>', 'only scenes at least this many scenes old', nonNegativeInteger('--min-age'), 200)
    .option('--max-importance <value>', 'only scenes less important than this (0 to 1)', unitInterval, 0.4)
    .action(async (options: { data: string; story?: string; minAge: number; maxImportance: number }) => {
      await withStory(options, async (project, storyId) => {
        const result = await project.context.prune(storyId, {
          minAgeScenes: options.minAge,
          maxImportance: options.maxImportance,
        });
        print(
          result.deleted === 0
            ? 'Nothing to prune: no summarized chapter that old holds scenes that unimportant.'
            : `Pruned ${result.deleted} scene vectors from ${result.chapters.length} summarized chapters (${result.chapters.join(', ')})`,
        );
      });
    });
  memory
    .command('reindex')
    .description('rebuild the story’s memory from its scenes (what prune dropped stays out)')
    .addOption(dataOption())
    .addOption(storyOption())
    .action(async (options: { data: string; story?: string }) => {
      await withStory(options, async (project, storyId) => {
        const bar = io.stderr.isTTY
          ? new SingleBar({
              format: 'reindex [{bar}] {value}/{total} {phase}',
              stream: io.stderr,
              hideCursor: false,
              linewrap: true,
            })
          : undefined;
        let started = false;
        try {
          const result = await project.context.reindex(storyId, {
            onProgress: ({ phase, done, total }) => {
              if (!bar) return;
              if (!started) bar.start(total, done, { phase });
              started = true;
              bar.setTotal(total);
              bar.update(done, { phase });
            },
          });
          bar?.stop();
          print(
            `Reindexed ${storyId}: ${result.scenes} scenes into ${result.records} records` +
              (result.pruned > 0 ? ` (${result.pruned} pruned scene memories left out)` : ''),
          );
        } finally {
          bar?.stop();
        }
      });
    });

  const influence = program.command('influence').description('audience influence');
  influence
    .command('add')
    .description('queue an audience influence for the next episode')
    .addOption(dataOption())
    .addOption(storyOption())
    .addOption(
      new Option('--kind <kind>', 'vote, suggestion or tip').choices(['vote', 'suggestion', 'tip']).default('vote'),
    )
    .option('-c, --choice <text>', 'the choice voted for')
    .option('-t, --text <text>', 'free text', '')
    .option('-a, --author <name>', 'who asks', 'cli')
    .option('-w, --weight <number>', 'weight (a tip’s amount)', weightArgument, 1)
    .option('--id <id>', 'idempotency key (default: derived from the content and time)')
    .action(
      async (options: {
        data: string;
        story?: string;
        kind: 'vote' | 'suggestion' | 'tip';
        choice?: string;
        text: string;
        author: string;
        weight: number;
        id?: string;
      }) => {
        if (options.kind === 'vote' && !options.choice) throw new CommandError('a vote needs --choice <text>');
        if (options.kind === 'suggestion' && !options.text) throw new CommandError('a suggestion needs --text <text>');
        await withStory(options, async (project, storyId) => {
          const receivedAt = isoNow(systemClock);
          const id =
            options.id ??
            `cli-${createHash('sha256')
              .update(`${receivedAt}|${options.author}|${options.choice ?? ''}|${options.text}`)
              .digest('hex')
              .slice(0, 24)}`;
          const input: UserInfluenceInput = {
            id,
            storyId,
            source: 'cli',
            author: options.author,
            kind: options.kind,
            choice: options.choice ?? null,
            text: options.text,
            weight: options.weight,
            receivedAt,
          };
          const result = await project.store.enqueueInfluence(input);
          print(result.inserted ? `Queued ${options.kind} ${id}` : `Already queued: ${id} (nothing changed)`);
        });
      },
    );

  program
    .command('status')
    .description('where the story stands')
    .addOption(dataOption())
    .addOption(storyOption())
    .option('--json', 'print JSON')
    .action(async (options: { data: string; story?: string; json?: boolean }) => {
      await withStory(options, async (project, storyId) => {
        const state = await project.store.load(storyId);
        const last = state.sceneId ? await project.store.getScene(storyId, state.sceneId) : null;
        const engine = await project.createEngine(storyId, { images: true });
        // An import or fork cut short brought the original's log, which says the steps are done: they are not.
        const pending = readBuildPending(project.paths, storyId);
        const unfinished = !last
          ? []
          : pending
            ? [...engine.steps]
            : await project.store.unfinishedPublications(storyId, last.id, engine.steps);
        // Skipped by choice (a run with --no-images) or by necessity (a filtered picture, a cache outage): finished,
        // but the episode went out without it.
        const skipped = (last ? await project.store.listPublications(storyId, last.id) : [])
          .filter((entry) => entry.status === 'skipped' && engine.steps.includes(entry.target as EngineStep))
          .map((entry) => ({
            step: entry.target,
            reason: typeof entry.result.reason === 'string' ? entry.result.reason : '',
          }));
        const pendingInfluences = await countPendingInfluences(project, state);
        const summary = {
          storyId,
          title: state.bible.title,
          version: state.version,
          scenes: state.sceneCount,
          chapter: state.chapterId,
          characters: Object.values(state.characters).map((c) => `${c.name} (${c.status})`),
          openThreads: state.plotThreads.filter((t) => t.status !== 'resolved').map((t) => t.title),
          pendingInfluences: pendingInfluences.count,
          pendingInfluencesExact: pendingInfluences.exact,
          lastScene: last ? { index: last.index, title: last.title, summary: last.summary } : null,
          unfinishedSteps: unfinished,
          unfinishedBuild: pending?.kind ?? null,
          skippedSteps: skipped,
          site: path.join(project.paths.siteOf(storyId), 'index.html'),
        };
        if (options.json) {
          print(JSON.stringify(summary, null, 2));
          return;
        }
        printText(
          `${summary.title} (${storyId}): ${summary.scenes} scenes, ${summary.chapter}, version ${summary.version}`,
        );
        printText(`Characters: ${summary.characters.join(', ')}`);
        printText(`Open threads: ${summary.openThreads.join('; ') || 'none'}`);
        print(`Pending influences: ${summary.pendingInfluences}${summary.pendingInfluencesExact ? '' : '+'}`);
        if (summary.lastScene) printText(`Last scene: [${summary.lastScene.index + 1}] ${summary.lastScene.title}`);
        if (pending) {
          print(
            `Unfinished ${pending.kind}: the memory and site of its scenes were not all built (run the same ${pending.kind} again, or "run", to finish)`,
          );
        }
        if (unfinished.length > 0 && !pending)
          print(`Unfinished steps of the last scene: ${unfinished.join(', ')} (run again to finish)`);
        if (skipped.length > 0) {
          const steps = skipped.map(({ step, reason }) => (reason ? `${step} (${reason})` : step));
          printText(`Skipped steps of the last scene: ${steps.join(', ')}`);
        }
        print(`Site: ${summary.site}`);
      });
    });

  program
    .command('export')
    .description('write the story as JSON lines (to stdout, or --out; gzip-compressed when the file ends in .gz)')
    .addOption(dataOption())
    .addOption(storyOption())
    .option('-o, --out <file>', 'the file to write (a name ending in .gz is written gzip-compressed)')
    .action(async (options: { data: string; story?: string; out?: string }) => {
      await withStory(options, async (project, storyId) => {
        const lines = Readable.from(
          (async function* () {
            for await (const line of project.store.exportStory(storyId)) yield `${line}\n`;
          })(),
        );
        if (options.out) {
          const target = exportTarget(path.resolve(io.cwd, options.out), options.out, project.paths);
          const gzip = /\.gz$/i.test(target.file);
          try {
            // A pipe, a terminal, /dev/null or /dev/stdout is written into as it is: a rename would put a regular file
            // in its place (a reader of the pipe would wait for ever), and /dev/stdout has no folder to write beside.
            if (target.inPlace) await writeExport(lines, createWriteStream(target.file), gzip);
            else await replaceWithExport(lines, target.file, gzip);
          } catch (error) {
            const code = (error as { code?: unknown } | null)?.code;
            if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
              throw new CommandError(`cannot write ${options.out}: ${code}`, { cause: error });
            }
            throw error;
          }
          io.stderr.write(`Exported ${storyId} to ${options.out}\n`);
        } else {
          for await (const chunk of lines) {
            // Nobody reads the rest: stop reading the story (the export writes nothing to the project).
            if (io.stdoutClosed?.aborted) break;
            write(chunk as string);
          }
        }
      });
    });

  program
    .command('import')
    .description('load a story exported with "storyloom export"')
    .argument('<file>', 'the JSON lines file, or the same gzip-compressed')
    .addOption(dataOption())
    .action(async (file: string, options: { data: string }) => {
      const named = path.resolve(io.cwd, file);
      if (!existsSync(named)) throw new CommandError(`${file} does not exist`);
      const stats = statSync(named);
      if (stats.isDirectory()) throw new CommandError(`${file} is a folder: name an export file`);
      const paths = projectPaths(path.resolve(io.cwd, options.data));
      // What a new project would make, told before the copy of a pipe makes the folder.
      const made = newProjectFiles(paths);
      // Removed on Ctrl-C or a kill when it holds nothing else than the copy, as a refusal would remove it.
      const madeFolder = made.includes(paths.root) ? paths.root : undefined;
      // A pipe (`/dev/stdin`, `<(gunzip -c ...)`, a named pipe) is read once, from its start: it is copied into the
      // project folder first, as the import reads its file several times over.
      const copy = stats.isFile() ? undefined : await copyIntoProject(named, file, paths.root, madeFolder);
      const source = copy ?? named;
      try {
        await withFileRemovedOnInterrupt(copy, madeFolder, async () => {
          // Opened where it is read: a stream created before another await may flow and end unread.
          const maxLineLength = exportLineCap(io.env);
          const lines = () => exportFileLines(source, file, maxLineLength);
          await checkGzipFile(source, file);
          if (!existsSync(paths.config)) {
            // Read whole before a project is made for it: a truncated or foreign file leaves nothing behind.
            const storyId = await checkExportShape(lines(), file);
            const project = await openProject(paths.root, { formatVersion: 1, storyId, dimensions: 1536 });
            let abandoned = false;
            try {
              const result = await importAndFinish(project, lines);
              print(`Imported ${result.storyId}: ${result.scenes} scenes into a new project in ${paths.root}`);
            } catch (error) {
              // Refused before the story went in (a record the schema refuses): a project left without a story would
              // send the user to "init", whose story would take the export's id and then block its import for good.
              abandoned = !(await project.store.exists(storyId).catch(() => true));
              throw error;
            } finally {
              project.close();
              // What this command made goes, as if it had never run; the folder only once nothing else is in it (an
              // import into the same new folder may be copying its pipe there meanwhile).
              if (abandoned) {
                for (const leftover of made) {
                  if (leftover !== paths.root) rmSync(leftover, { recursive: true, force: true });
                }
                if (made.includes(paths.root)) removeIfEmpty(paths.root);
              }
            }
            return;
          }
          await withProject(options.data, async (project) => {
            const result = await importAndFinish(project, lines);
            print(
              result.again
                ? `${result.storyId} was imported before (${result.scenes} scenes); its memory and site are built again`
                : `Imported ${result.storyId}: ${result.scenes} scenes`,
            );
          });
        });
      } catch (error) {
        if (copy !== undefined && !existsSync(copy) && hasErrorCode(error, 'ENOENT')) {
          // Removed by another command on the same folder (an older storyloom elsewhere on a shared volume could).
          throw new CommandError(
            `the copy of ${file} this import made in ${paths.root} was removed by another command before it was read: run the import again`,
            { cause: error },
          );
        }
        throw error;
      } finally {
        if (copy) {
          rmSync(copy, { force: true });
          // A folder made only to hold the copy of a file refused before a project was made in it goes too, once
          // nothing else is in it.
          if (made.includes(paths.root) && !existsSync(paths.config)) removeIfEmpty(paths.root);
        }
      }
    });

  program
    .command('fork')
    .description('branch the story at a scene into a new story')
    .addOption(dataOption())
    .addOption(storyOption())
    .requiredOption(
      '--at <scene>',
      'the last shared scene (1-based, as "status" shows it)',
      positiveInteger('--at', Number.MAX_SAFE_INTEGER),
    )
    .requiredOption('--as <newId>', 'the id of the new story', storyIdArgument)
    .action(async (options: { data: string; story?: string; at: number; as: string }) => {
      await withStory(options, async (project, storyId) => {
        const pending = readBuildPending(project.paths, options.as);
        if (pending?.kind === 'fork' && pending.from === storyId && (await project.store.exists(options.as))) {
          // A fork cut short after the new story went in, which shares its scenes up to its --at (a record written
          // before --at was kept in it leaves the fork's own scene count to tell).
          const at = pending.at ?? (await project.store.load(options.as)).sceneCount;
          if (at !== options.at) {
            throw new CommandError(
              `the fork of ${storyId} into ${options.as} that was cut short was at --at ${at}, not ${options.at}: run it again with --at ${at} to finish it, or fork into another --as`,
            );
          }
          // The same fork: finish its memory and site.
          await finishBuild(project, options.as, pending);
          const state = await project.store.load(options.as);
          print(`Finished the fork of ${storyId} into ${options.as} (${state.sceneCount} scenes)`);
          print(`Continue it with: ${SELF} run --story ${shellWord(options.as)} --data ${shellWord(options.data)}`);
          return;
        }
        const { sceneCount } = await project.store.load(storyId);
        if (options.at > sceneCount) {
          // Said in the command's 1-based numbering (the store speaks of 0-based indexes).
          throw new CommandError(`${storyId} has ${sceneCount} scenes: --at must be 1 to ${sceneCount}`);
        }
        const existed = await project.store.exists(options.as);
        if (!existed) markBuildPending(project.paths, options.as, { kind: 'fork', from: storyId, at: options.at });
        let forked: StoryState;
        try {
          forked = await project.store.fork(storyId, options.at - 1, options.as);
        } catch (error) {
          if (!existed && !(await project.store.exists(options.as))) clearBuildPending(project.paths, options.as);
          if (NotFoundError.isInstance(error) && (await project.store.getStateAt(storyId, options.at)) === null) {
            // Said in the command's 1-based numbering, as --at is (the store's message speaks of 0-based indexes).
            throw new CommandError(
              `${storyId} keeps no state after scene ${options.at} (it was imported without it): fork at another scene`,
              { cause: error },
            );
          }
          throw error;
        }
        try {
          await finishBuild(project, options.as, { kind: 'fork', from: storyId });
        } catch (error) {
          // The story is in: the same fork, run again, finds it and finishes the build (as an import says).
          const reason = error instanceof Error ? error.message : String(error);
          throw new CommandError(
            `${options.as} is forked from ${storyId} (${forked.sceneCount} scenes), but building its memory and site failed: ${reason}. Run the same fork again to finish it`,
            { cause: error, exitCode: StoryloomError.isInstance(error) ? 1 : 70 },
          );
        }
        print(`Forked ${storyId} after scene ${options.at} into ${options.as} (${forked.sceneCount} scenes)`);
        print(`Continue it with: ${SELF} run --story ${shellWord(options.as)} --data ${shellWord(options.data)}`);
      });
    });

  program
    .command('demo')
    .description('create a story on the embedded default, write 12 episodes offline and build the site')
    .addOption(new Option('-d, --data <folder>', 'the project folder').default('storyloom-demo'))
    .option('-n, --episodes <count>', 'how many episodes', positiveInteger('--episodes', 1_000), 12)
    .action(async (options: { data: string; episodes: number }) => {
      const started = Date.now();
      const root = path.resolve(io.cwd, options.data);
      if (!existsSync(path.join(root, 'storyloom.json'))) {
        await program.parseAsync(['init', '--data', options.data], { from: 'user' });
      } else {
        print(`Using the existing demo project in ${root}`);
      }
      await program.parseAsync(['run', '--data', options.data, '--episodes', String(options.episodes)], {
        from: 'user',
      });
      if (exitStatus !== 0) return;
      const storyId = JSON.parse(readFileSync(path.join(root, 'storyloom.json'), 'utf8')).storyId as string;
      const site = path.join(projectPaths(root).siteOf(storyId), 'index.html');
      print('');
      print(`Done in ${((Date.now() - started) / 1000).toFixed(1)} s. Open the site: ${pathToFileURL(site).href}`);
      print(`See the prompt of the next scene: ${SELF} context --data ${shellWord(options.data)}`);
    });

  return {
    async run(argv) {
      exitStatus = 0;
      try {
        await program.parseAsync([...argv], { from: 'user' });
        return exitStatus;
      } catch (error) {
        return reportError(error, io);
      }
    },
  };
}

/** Writes an export's lines to `output`, gzip-compressed when asked. */
async function writeExport(lines: Readable, output: Writable, gzip: boolean): Promise<void> {
  if (gzip) await pipeline(lines, createGzip(), output);
  else await pipeline(lines, output);
}

/**
 * Writes an export beside the regular file `target` and renames it into place once whole: an export cut short (a
 * full disk, Ctrl-C) never leaves a truncated file under the name, nor replaces an earlier export with one. An export
 * written again keeps the permissions of the file it replaces.
 */
async function replaceWithExport(lines: Readable, target: string, gzip: boolean): Promise<void> {
  const mode = existsSync(target) ? statSync(target).mode & 0o7777 : undefined;
  const partial = partialFileFor(target);
  removeStalePartials(target);
  try {
    await withFileRemovedOnInterrupt(partial, undefined, async () => {
      // Opened here, not by the stream: a stream opens its file later, and after a failure could create it again
      // once it had been removed.
      const output = createWriteStream(partial, { fd: openSync(partial, 'w') });
      if (mode !== undefined) chmodSync(partial, mode);
      await writeExport(lines, output, gzip);
      renameSync(partial, target);
    });
  } catch (error) {
    rmSync(partial, { force: true });
    throw error;
  }
}

/**
 * Runs `work`; Ctrl-C or a kill meanwhile removes `file` (when given), then `folder` (when given) if nothing else is
 * left in it, then the signal does what it would have done.
 */
async function withFileRemovedOnInterrupt<T>(
  file: string | undefined,
  folder: string | undefined,
  work: () => Promise<T>,
): Promise<T> {
  if (file === undefined) return work();
  const interrupted = (signal: NodeJS.Signals) => {
    rmSync(file, { force: true });
    if (folder !== undefined) removeIfEmpty(folder);
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', interrupted).once('SIGTERM', interrupted);
  try {
    return await work();
  } finally {
    process.off('SIGINT', interrupted).off('SIGTERM', interrupted);
  }
}

/** Removes `folder` when it is empty; one that holds anything (a project file, what the user put there) is kept. */
function removeIfEmpty(folder: string): void {
  try {
    rmdirSync(folder);
  } catch {
    // Not empty, or already gone.
  }
}

/** The start of the name of the copy an import makes of a pipe in the project folder; see `copyIntoProject`. */
const IMPORT_COPY = '.import-copy';
/**
 * The descriptor `file` names when it is one of this process's own (`/dev/stdin`, `/dev/fd/N`, `/proc/self/fd/N`).
 * Such a descriptor is read as it is: opened again by its name, a socket (the pipe a Node.js parent gives) refuses.
 */
function ownDescriptor(file: string): number | undefined {
  const standard = ['/dev/stdin', '/dev/stdout', '/dev/stderr'].indexOf(file);
  if (standard >= 0) return standard;
  const numbered = /^\/(?:dev\/fd|proc\/self\/fd)\/(\d+)$/.exec(file);
  return numbered ? Number(numbered[1]) : undefined;
}

/**
 * Copies what `source` (a pipe, a device) gives, streamed to its end, into a new file in the project folder `root`
 * (made when missing), and returns that file; the caller removes it. Copies that imports killed half-way left there are
 * removed first. A failure to read or write is a one-line refusal, and leaves no copy; `madeFolder`, the folder this
 * command made for the project, goes too (on such a refusal, Ctrl-C or a kill) when nothing else is in it.
 */
async function copyIntoProject(
  source: string,
  name: string,
  root: string,
  madeFolder: string | undefined,
): Promise<string> {
  makeProjectFolder(root);
  const target = path.join(root, IMPORT_COPY);
  removeStalePartials(target);
  const copy = partialFileFor(target);
  const descriptor = ownDescriptor(source);
  try {
    await withFileRemovedOnInterrupt(copy, madeFolder, () =>
      pipeline(
        // Not closed here: the descriptor is the process's own.
        descriptor === undefined
          ? createReadStream(source)
          : createReadStream(source, { fd: descriptor, autoClose: false }),
        // Opened here, not by the stream, for the reason `replaceWithExport` gives.
        createWriteStream(copy, { fd: openSync(copy, 'w') }),
      ),
    );
  } catch (error) {
    rmSync(copy, { force: true });
    if (madeFolder !== undefined) removeIfEmpty(madeFolder);
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
      throw new CommandError(`cannot copy ${name} into ${root} to import it: ${code}`, { cause: error });
    }
    throw error;
  }
  return copy;
}

/** Whether `error`, or an error it was caused by, carries the system error code `code`. */
function hasErrorCode(error: unknown, code: string): boolean {
  let cause = error;
  for (let depth = 0; depth < 10 && typeof cause === 'object' && cause !== null; depth++) {
    if ((cause as { code?: unknown }).code === code) return true;
    cause = (cause as { cause?: unknown }).cause;
  }
  return false;
}

/** What `file` is once its links are followed, or undefined when it cannot be told (missing, a link to nowhere). */
function statFollowingLinks(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}

/**
 * Where an export goes. A file that exists and is neither a regular file nor a folder (a named pipe, a terminal, a
 * device such as /dev/null, /dev/stdout) is written `inPlace`, through `target` as named. Otherwise the file is
 * `target`, or where it links to (the link stays a link, and the file it names gets the export), and it is replaced
 * whole. A missing folder, a folder, a link to nowhere, or a file of the project itself (its database and the
 * database's journal files, its project file) is a one-line refusal.
 */
function exportTarget(target: string, name: string, project: ProjectPaths): { file: string; inPlace: boolean } {
  const existing = statFollowingLinks(target);
  if (existing && !existing.isFile() && !existing.isDirectory()) return { file: target, inPlace: true };
  let resolved = target;
  if (lstatSync(target, { throwIfNoEntry: false })?.isSymbolicLink()) {
    try {
      resolved = realpathSync(target);
    } catch {
      // A link to a file not written yet: the file is made where the link points, if that folder exists.
      resolved = path.resolve(path.dirname(target), readlinkSync(target));
      if (!existsSync(path.dirname(resolved))) {
        throw new CommandError(`cannot write ${name}: it is a link to a place that does not exist`);
      }
    }
  }
  if (!existsSync(path.dirname(resolved))) throw new CommandError(`cannot write ${name}: its folder does not exist`);
  if (existsSync(resolved) && statSync(resolved).isDirectory()) {
    throw new CommandError(`cannot write ${name}: it is a folder; name a file`);
  }
  // Compared as the file system names them, so another spelling of the same path (a link to the project) is caught.
  const real = path.join(realpathSync(path.dirname(resolved)), path.basename(resolved));
  const root = realpathSync(project.root);
  const own = [project.config, project.database, `${project.database}-wal`, `${project.database}-shm`].map((file) =>
    path.join(root, path.basename(file)),
  );
  if (own.includes(real)) {
    throw new CommandError(`cannot write ${name}: it is a file of the project itself; export somewhere else`);
  }
  return { file: resolved, inPlace: false };
}

/**
 * What opening a new project in `paths` will make, told before it is opened: its project file, its database (with
 * the database's journal files), its pending-build folder and its folder, each only when it is not there yet. A
 * command that gives up on the new project removes these, and leaves alone what was there before (a database may
 * hold stories, a folder other files).
 */
function newProjectFiles(paths: ProjectPaths): string[] {
  const database = [paths.database, `${paths.database}-wal`, `${paths.database}-shm`, `${paths.database}-journal`];
  return [
    ...(existsSync(paths.config) ? [] : [paths.config]),
    ...(existsSync(paths.database) ? [] : database),
    ...(existsSync(paths.pending) ? [] : [paths.pending]),
    ...(existsSync(paths.root) ? [] : [paths.root]),
  ];
}

/**
 * Imports a story, then builds its memory and its site. The story is in once `importStory` returns; when a later step
 * fails, the error says so, and running the same import again finds the same story (its newest state is the file's)
 * and does those steps again instead of refusing it as a story that already exists.
 */
async function importAndFinish(
  project: OpenProject,
  lines: () => AsyncIterable<string> & { close(): void },
): Promise<{ storyId: string; scenes: number; again: boolean }> {
  let storyId: string;
  let scenes: number;
  let again = false;
  // Recorded before the story goes in, so that a kill after it leaves the build pending for `status` and `run`.
  const exported = await exportedStoryId(lines());
  const fresh = exported !== undefined && !(await project.store.exists(exported));
  if (fresh) markBuildPending(project.paths, exported, { kind: 'import', from: exported });
  try {
    ({ storyId, scenes } = await project.store.importStory(lines()));
  } catch (error) {
    const same = ConflictError.isInstance(error) ? await importedBefore(project, lines()) : undefined;
    if (!same) {
      if (fresh && !(await project.store.exists(exported))) clearBuildPending(project.paths, exported);
      throw error;
    }
    ({ storyId, scenes } = same);
    again = true;
  }
  try {
    await finishBuild(project, storyId, { kind: 'import', from: storyId });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new CommandError(
      `${storyId} is imported (${scenes} scenes), but building its memory and site failed: ${reason}. Run the same import again to finish it`,
      { cause: error, exitCode: StoryloomError.isInstance(error) ? 1 : 70 },
    );
  }
  return { storyId, scenes, again };
}

/** The story id an export's first line names, or undefined when it is not a storyloom export (refused later). */
async function exportedStoryId(reader: AsyncIterable<string> & { close(): void }): Promise<string | undefined> {
  try {
    for await (const raw of reader) {
      if (raw.trim() === '') continue;
      const record = JSON.parse(raw) as { kind?: unknown; storyId?: unknown };
      return record.kind === EXPORT_FORMAT && typeof record.storyId === 'string' ? record.storyId : undefined;
    }
  } catch {
    // Not JSON or not readable: importStory says why.
  } finally {
    reader.close();
  }
  return undefined;
}

/**
 * Builds the memory and the site of a story that an import or a fork wrote into the store, then records the last
 * scene's steps as done and clears the pending-build record: every step is idempotent, so a build cut short is
 * finished by doing it again.
 */
async function finishBuild(project: OpenProject, storyId: string, build: Omit<PendingBuild, 'startedAt'>) {
  await project.context.reindex(storyId);
  await project.publishAll(storyId, { from: build.from });
  await recordStepsDone(project, storyId, build.kind);
  clearBuildPending(project.paths, storyId);
}

/** The story of an export when the project already holds it at the very state the file ends with. */
async function importedBefore(
  project: OpenProject,
  reader: AsyncIterable<string> & { close(): void },
): Promise<{ storyId: string; scenes: number } | undefined> {
  let exported: StoryState | undefined;
  try {
    for await (const raw of reader) {
      const record = JSON.parse(raw) as { kind?: unknown; state?: unknown };
      if (record.kind === 'state') {
        const parsed = StoryStateSchema.safeParse(record.state);
        exported = parsed.success ? parsed.data : undefined;
        break;
      }
      if (record.kind !== EXPORT_FORMAT) break;
    }
  } catch {
    return undefined;
  } finally {
    reader.close();
  }
  if (!exported || !(await project.store.exists(exported.storyId))) return undefined;
  const stored = await project.store.load(exported.storyId);
  // The stored state's queue is read from the pending influences; the exported state's is written empty (each
  // influence is its own record), so the queue is left out of the comparison.
  return isDeepStrictEqual({ ...stored, userInfluenceQueue: [] }, { ...exported, userInfluenceQueue: [] })
    ? { storyId: stored.storyId, scenes: stored.sceneCount }
    : undefined;
}

/**
 * Records the last scene's steps as done once a command has done their work itself (`reindex` indexed every scene,
 * `publishAll` drew and published each one; the cache is the process's own). Otherwise `status` shows a fresh fork
 * unfinished, and its first `run` does that work again before it writes a new scene. (An import brings the
 * original's log, which already says done: the pending-build record is what marks it unfinished until
 * `finishBuild` ends.) A picture the scene went out without stays skipped: `publishAll` logged it so, and the log
 * keeps a step's first `done` or `skipped`.
 */
async function recordStepsDone(project: OpenProject, storyId: string, by: 'fork' | 'import'): Promise<void> {
  const state = await project.store.load(storyId);
  if (state.sceneId === null) return;
  const engine = await project.createEngine(storyId, { images: true });
  for (const target of engine.steps) {
    await project.store.recordPublication({ storyId, sceneId: state.sceneId, target, status: 'done', result: { by } });
  }
}

/** What `load` puts in a state's queue at most; a queue that long may have more behind it. */
const LOADED_QUEUE = 1_000;
/** The most pending influences `pendingInfluences` gives in one call (it has no cursor to read on from). */
const COUNTED_QUEUE = 10_000;

/**
 * How many influences of a story are pending: the loaded state's queue when it is shorter than `load` makes it, else
 * as many as the store gives in one call, `exact: false` when that is full (there may be more).
 */
async function countPendingInfluences(
  project: OpenProject,
  state: StoryState,
): Promise<{ count: number; exact: boolean }> {
  const loaded = state.userInfluenceQueue.length;
  if (loaded < LOADED_QUEUE) return { count: loaded, exact: true };
  const count = (await project.store.pendingInfluences(state.storyId, { limit: COUNTED_QUEUE })).length;
  return { count, exact: count < COUNTED_QUEUE };
}

async function requireStory(project: OpenProject, storyId: string): Promise<void> {
  if (!(await project.store.exists(storyId))) {
    const cutShort = readBuildPending(project.paths, storyId);
    if (cutShort?.kind === 'import') {
      throw new CommandError(
        `the import of "${storyId}" into ${project.paths.root} was cut short before its story went in: run the same import again ("${SELF} import <file> --data <this folder>")`,
      );
    }
    if (cutShort?.kind === 'fork') {
      // A record of an earlier version keeps no --at: the command names where it goes.
      const at = cutShort.at === undefined ? '<the scene it forked at>' : shellWord(String(cutShort.at));
      throw new CommandError(
        `the fork of "${cutShort.from}" into "${storyId}" in ${project.paths.root} was cut short before its story went in: run the same fork again ("${SELF} fork --story ${shellWord(cutShort.from)} --at ${at} --as ${shellWord(storyId)} --data <this folder>")`,
      );
    }
    const own = project.project.storyId;
    throw new CommandError(
      storyId === own
        ? `the project in ${project.paths.root} has no story "${storyId}" (its init was cut short?): run "${SELF} init --data <this folder>" again to create it`
        : `there is no story "${storyId}" in ${project.paths.root}: check --story (this project's story is "${own}")`,
    );
  }
}

/**
 * The records an export holds several of, by kind: the end marker's name for their count, their payload's field, and
 * for the kinds an export writes each of once, what names one (undefined where the payload lacks it: the import's full
 * check refuses that). Scenes are told apart by their order instead.
 */
const COUNTED_RECORDS: Readonly<
  Record<string, { count: string; payload: string; name?: (payload: Record<string, unknown>) => string | undefined }>
> = {
  snapshot: {
    count: 'snapshots',
    payload: 'state',
    name: ({ version }) => (typeof version === 'number' ? `the snapshot of version ${version}` : undefined),
  },
  scene: { count: 'scenes', payload: 'scene' },
  influence: {
    count: 'influences',
    payload: 'influence',
    name: ({ id }) => (typeof id === 'string' ? `influence ${JSON.stringify(id)}` : undefined),
  },
  publication: {
    count: 'publications',
    payload: 'entry',
    name: ({ sceneId, target }) =>
      typeof sceneId === 'string' && typeof target === 'string'
        ? `the publication of scene ${JSON.stringify(sceneId)} to ${JSON.stringify(target)}`
        : undefined,
  },
};

/**
 * Reads a whole export before a new project is made for it, so a truncated or foreign file leaves nothing behind:
 * its header first, its end marker last, and the counts the marker gives. Returns the story id. The import then
 * checks every record in full; a file that passes this and fails that (a record the schema refuses) makes the command
 * remove the new project it began, so the same command can be run again there with a sound file.
 */
async function checkExportShape(lines: AsyncIterable<string>, name: string): Promise<string> {
  const counts: Record<string, number> = Object.fromEntries(
    Object.values(COUNTED_RECORDS).map(({ count }) => [count, 0]),
  );
  // What names each snapshot, influence and publication read so far (their names differ from kind to kind).
  const names = new Set<string>();
  let storyId: string | undefined;
  let end: Record<string, unknown> | undefined;
  for await (const raw of lines) {
    const text = raw.trim();
    if (text === '') continue;
    let record: { kind?: unknown; storyId?: unknown; counts?: unknown } | null = null;
    try {
      record = JSON.parse(text);
    } catch {
      // Refused below.
    }
    if (storyId === undefined) {
      if (record?.kind !== EXPORT_FORMAT || typeof record.storyId !== 'string' || record.storyId === '') {
        throw new CommandError(`${name} is not a storyloom export`);
      }
      storyId = record.storyId;
    } else if (end !== undefined || record === null) {
      throw new CommandError(`${name} is damaged: ${record === null ? 'a line is not JSON' : 'data after its end'}`);
    } else if (record.kind === 'end') {
      end = (typeof record.counts === 'object' && record.counts !== null ? record.counts : {}) as Record<
        string,
        unknown
      >;
    } else if (
      typeof record === 'object' &&
      typeof record.kind === 'string' &&
      Object.hasOwn(COUNTED_RECORDS, record.kind)
    ) {
      // Each record carries its payload, an export writes its scenes in order from the first and every other record
      // once: a record repeated (a small compressed file can hold millions) is refused at its first line or its second.
      const { count, payload: field, name: nameOf } = COUNTED_RECORDS[record.kind]!;
      const payload = (record as Record<string, unknown>)[field];
      if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
        throw new CommandError(`${name} is damaged: a ${record.kind} record without its ${field}`);
      }
      const named = nameOf?.(payload as Record<string, unknown>);
      if (named !== undefined) {
        if (names.has(named)) throw new CommandError(`${name} is damaged: it holds ${named} twice`);
        names.add(named);
      }
      const seen = counts[count]!;
      if (record.kind === 'scene' && (payload as { index?: unknown }).index !== seen) {
        throw new CommandError(
          `${name} is damaged: its scene ${seen + 1} is not the scene of index ${seen}, as an export writes it`,
        );
      }
      counts[count] = seen + 1;
    } else if (typeof record !== 'object' || record.kind !== 'state') {
      // Refused here rather than after the whole file is read: a small compressed file of a short line repeated
      // holds millions of them.
      throw new CommandError(`${name} is damaged: a line is not a record of an export`);
    }
  }
  if (storyId === undefined) throw new CommandError(`${name} is empty`);
  if (end === undefined) throw new CommandError(`${name} is truncated: its end marker is missing`);
  for (const [kind, count] of Object.entries(counts)) {
    if (end[kind] !== count) {
      throw new CommandError(
        `${name} is damaged: its end marker counts ${String(end[kind])} ${kind}, it holds ${count}`,
      );
    }
  }
  return storyId;
}

/**
 * The longest line, in UTF-16 code units (what a string's length counts), that an import reads: 2^28, half of the
 * longest string V8 can hold (2^29 - 24), so a line is refused with a message well before a string of it cannot be
 * made. The longest line an export writes is a story state (a `state` or `snapshot` record): at every maximum of the
 * schema's `LIMITS` (500 characters with 200 relationships and 200 facts each, 500 plot threads, 500 world-state
 * values, a full bible) it is 165,990,744 code units, so the cap leaves a margin of 1.6 times that largest possible
 * state, which no story comes near.
 */
const MAX_EXPORT_LINE_LENGTH = 2 ** 28;

/**
 * How many blank lines an import lets through. An export writes none (one record a line, each ended by a newline, the
 * last one too); a few, added by an editor or by joining files, are skipped as before. Past that, a small compressed
 * file of nothing but newlines (30 KB inflates to 30 million of them) would keep the command busy for minutes.
 */
const MAX_BLANK_LINES = 1_000;

/**
 * The line cap of this run: `MAX_EXPORT_LINE_LENGTH`, or a lower one a test sets through an undocumented variable, so
 * that it can reach the cap with a small file.
 */
function exportLineCap(env: NodeJS.ProcessEnv): number {
  const lowered = Number(env.STORYLOOM_INTERNAL_MAX_IMPORT_LINE ?? Number.NaN);
  return Number.isSafeInteger(lowered) && lowered > 0
    ? Math.min(lowered, MAX_EXPORT_LINE_LENGTH)
    : MAX_EXPORT_LINE_LENGTH;
}

function lineTooLong(name: string, maxLineLength: number, cause?: unknown): CommandError {
  return new CommandError(
    `${name} is damaged: a line is longer than ${maxLineLength.toLocaleString('en-US')} characters, which no export writes`,
    { cause },
  );
}

/**
 * The lines of an export file, inflated when it is gzip-compressed (told by its first two bytes, whatever its name).
 * A damaged or truncated compressed file fails the reading with a `CommandError` naming it, and so do a line longer
 * than `maxLineLength` and more blank lines than `MAX_BLANK_LINES`.
 */
function exportFileLines(file: string, name: string, maxLineLength: number): AsyncIterable<string> & { close(): void } {
  const source = createReadStream(file);
  let input: Readable = source;
  if (isGzipFile(file)) {
    // pipeline hands a failure of the file or of the inflation to `input`, which the reader sees, and destroys
    // every stream once the reader stops early: no error is left without a listener.
    const inflated = new PassThrough();
    pipeline(source, createGunzip(), inflated).catch(() => {});
    input = inflated;
  }
  // Decoded as a whole: a character whose bytes two chunks share is not split.
  input.setEncoding('utf8');
  const close = () => {
    input.destroy();
    source.destroy();
  };
  return {
    close,
    async *[Symbol.asyncIterator]() {
      try {
        yield* boundedLines(input, name, maxLineLength);
      } catch (error) {
        // A string past V8's limit, were the cap ever above it.
        if (error instanceof RangeError) throw lineTooLong(name, maxLineLength, error);
        throw gzipFailure(error, name) ?? error;
      } finally {
        close();
      }
    },
  };
}

/**
 * The lines of `chunks` (each without its `\n`, nor the `\r` of a CRLF), refused past `maxLineLength` code units
 * before a string that long is made, and past `MAX_BLANK_LINES` blank ones. A last line without a newline is a line;
 * the newline that ends the last line does not start another.
 */
async function* boundedLines(
  chunks: AsyncIterable<string>,
  name: string,
  maxLineLength: number,
): AsyncGenerator<string> {
  /** The pieces of the line being read, and their length. */
  let pieces: string[] = [];
  let length = 0;
  let blankLines = 0;
  const add = (piece: string) => {
    if (length + piece.length > maxLineLength) throw lineTooLong(name, maxLineLength);
    pieces.push(piece);
    length += piece.length;
  };
  const take = (): string => {
    const joined = pieces.length === 1 ? pieces[0]! : pieces.join('');
    pieces = [];
    length = 0;
    const line = joined.endsWith('\r') ? joined.slice(0, -1) : joined;
    if (line.trim() === '' && ++blankLines > MAX_BLANK_LINES) {
      throw new CommandError(
        `${name} is damaged: it holds more than ${MAX_BLANK_LINES.toLocaleString('en-US')} blank lines, and an export writes none`,
      );
    }
    return line;
  };
  for await (const chunk of chunks) {
    let start = 0;
    for (let end = chunk.indexOf('\n'); end !== -1; end = chunk.indexOf('\n', start)) {
      add(chunk.slice(start, end));
      yield take();
      start = end + 1;
    }
    if (start < chunk.length) add(chunk.slice(start));
  }
  if (length > 0) yield take();
}

/** Whether a file is gzip-compressed, by its first two bytes (whatever its name). */
function isGzipFile(file: string): boolean {
  const head = Buffer.alloc(2);
  const descriptor = openSync(file, 'r');
  try {
    // Read from where a freshly opened file starts, without a position: a file that cannot seek refuses one.
    readSync(descriptor, head, 0, 2, null);
  } finally {
    closeSync(descriptor);
  }
  return head[0] === 0x1f && head[1] === 0x8b;
}

/**
 * Inflates a whole gzip-compressed export once, so a damaged or truncated file is refused before a line of it is
 * read: damage in the middle inflates to text that would otherwise fail as a bad line, and the checksum at the end
 * is checked last.
 */
async function checkGzipFile(file: string, name: string): Promise<void> {
  if (!isGzipFile(file)) return;
  const discard = new Writable({ write: (_chunk, _encoding, done) => done() });
  try {
    await pipeline(createReadStream(file), createGunzip(), discard);
  } catch (error) {
    throw gzipFailure(error, name) ?? error;
  }
}

function gzipFailure(error: unknown, name: string): CommandError | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !code.startsWith('Z_')) return undefined;
  return new CommandError(`${name} is a damaged or truncated gzip file (${(error as Error).message})`, {
    cause: error,
  });
}

/** The installed package's version, read through the package's own exports (`storyloom/package.json`). */
function packageVersion(): string {
  const manifest = createRequire(import.meta.url)('storyloom/package.json') as { version: string };
  return manifest.version;
}

/** A bible file holds a bible (plus optional characters and threads), or a whole initial state: a JSON object. */
function readBibleFile(file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new CommandError(`${file} does not exist: pass a JSON file with a story bible`);
  if (statSync(file).isDirectory()) throw new CommandError(`${file} is a folder: pass a JSON file with a story bible`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (cause) {
    throw new CommandError(`${file} is not valid JSON`, { cause });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new CommandError(`${file} holds no story bible: it must be a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

/** The id of a story made from a bible file without `--story`: the id a whole state names, else the file's name. */
function bibleStoryId(name: string, raw: Record<string, unknown>): string {
  if (typeof raw.storyId === 'string' && IdSchema.safeParse(raw.storyId).success) return raw.storyId;
  return path.basename(name, path.extname(name));
}

/** The initial state of a story made from a bible file's content (`readBibleFile`), under `storyId`. */
function stateFromBible(file: string, raw: Record<string, unknown>, storyId: string) {
  const now = isoNow(systemClock);
  const bibleInput = (raw.bible ?? raw) as unknown;
  const bible = StoryBibleSchema.safeParse(bibleInput);
  if (!bible.success) {
    const issue = bible.error.issues[0];
    throw new CommandError(
      `${file}: the bible's ${issue?.path.join('.') || 'content'} ${issue?.message ?? 'is invalid'}`,
    );
  }
  const state = StoryStateSchema.safeParse({
    storyId,
    version: 0,
    chapterId: 'chapter-0001',
    chapterIndex: 0,
    sceneId: null,
    sceneCount: 0,
    bible: bible.data,
    characters: raw.characters ?? {},
    worldState: raw.worldState ?? {},
    plotThreads: raw.plotThreads ?? [],
    userInfluenceQueue: [],
    createdAt: now,
    updatedAt: now,
  });
  if (!state.success) {
    const issue = state.error.issues[0];
    throw new CommandError(`${file}: ${issue?.path.join('.') || 'the story'} ${issue?.message ?? 'is invalid'}`);
  }
  return state.data;
}

function reportError(error: unknown, io: CommandIo): number {
  if (error instanceof CommanderError) {
    // Commander has already printed its message (usage errors, --help, --version). Help shown because a subcommand
    // is missing ("storyloom memory") is a usage error: commander gives it exit code 1, and it becomes 2 here.
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') {
      return 0;
    }
    return error.exitCode === 0 ? 0 : 2;
  }
  // A message may quote story text (a name, a title) or a file's content.
  const line = (text: string) => io.stderr.write(`storyloom: ${terminalText(text.replace(/\s*\n\s*/g, ' '))}\n`);
  if (CommandError.isInstance(error) && error instanceof CommandError) {
    line(error.message);
    return error.exitCode;
  }
  if (ValidationError.isInstance(error)) {
    line(error.message);
    return 1;
  }
  if (StoryloomError.isInstance(error)) {
    line(`${error.message} [${error.code}]`);
    return 1;
  }
  line(`unexpected failure: ${error instanceof Error ? error.message : String(error)}`);
  if (io.env.STORYLOOM_DEBUG) io.stderr.write(`${error instanceof Error ? error.stack : ''}\n`);
  return 70;
}
