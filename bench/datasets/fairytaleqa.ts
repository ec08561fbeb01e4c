/**
 * FairytaleQA loader: `<story>-story.csv` (columns `section,text`; a section may span several rows, which are
 * joined) and `<story>-questions.csv` (`cor_section` like `3` or `5, 6`, `attribute1` as the category). Accepts a
 * single file of either kind (its partner is looked up beside it or in the sibling `section-stories` / `questions`
 * folder) or a folder searched recursively: a split or origin folder, `data-by-train-split/` or `data-by-origin/` of
 * the published layout (`questions/`, `section-stories/` and `sentence-stories/`, each with one folder per split or
 * origin), or the whole repository. The sentence-level story files share the section files' names but have no
 * `section` column; they are never read as a story's sections.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { safeId } from './locomo.js';
import type { BenchCorpus, BenchDataset, BenchQuestion } from './types.js';

const STORY_SUFFIX = '-story.csv';
const QUESTIONS_SUFFIX = '-questions.csv';

/**
 * Parses RFC 4180 CSV: quoted fields may hold commas, doubled quotes and newlines. A quote left open to the end of
 * the text is an error naming `source` and the line it opened on: read as it stands, it would swallow every row after
 * it into one field, and those rows' questions would never be asked.
 */
export function parseCsv(text: string, source = 'CSV'): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let line = 1;
  let quoteLine = 0;
  const input = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  for (let i = 0; i < input.length; i++) {
    const ch = input[i]!;
    if (ch === '\n' || (ch === '\r' && input[i + 1] !== '\n')) line++;
    if (quoted) {
      if (ch === '"') {
        if (input[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += ch;
    } else if (ch === '"') {
      quoted = true;
      quoteLine = line;
    } else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && input[i + 1] === '\n') {
        i++;
        line++;
      }
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += ch;
  }
  if (quoted) throw new Error(`${source}: unterminated quoted field starting at line ${quoteLine}`);
  if (field.length > 0 || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((cells) => cells.some((cell) => cell.trim().length > 0));
}

function table(file: string): { columns: string[]; rows: Array<Record<string, string>> } {
  const [header, ...rows] = parseCsv(readFileSync(file, 'utf8'), file);
  const columns = (header ?? []).map((name) => name.trim());
  return {
    columns,
    rows: rows.map((cells) => Object.fromEntries(columns.map((name, index) => [name, cells[index] ?? '']))),
  };
}

/** The columns a story file must have to be read as sections (the sentence-level files have `document_id,text`). */
const SECTION_COLUMNS = ['section', 'text'];

function hasSectionColumns(file: string): boolean {
  const { columns } = table(file);
  return SECTION_COLUMNS.every((column) => columns.includes(column));
}

/**
 * Section numbers from `cor_section`: `"5, 6"` → `['S5', 'S6']`; `"3.0"` (a number that went through a float) →
 * `['S3']`; unparsable text is kept (a miss).
 */
export function parseSections(raw: string): string[] {
  const parts = raw
    .split(/[,;\s]+/)
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
  return [...new Set(parts.map((part) => (/^\d+(\.0+)?$/.test(part) ? `S${Number(part)}` : `missing:${part}`)))];
}

function walk(folder: string, out: string[]): void {
  for (const name of readdirSync(folder).sort()) {
    const path = join(folder, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (name.endsWith('.csv')) out.push(path);
  }
}

/** Whether a file lies under a `section-stories` folder of the published layout. */
const inSectionStories = (file: string) => file.split(/[\\/]/).slice(0, -1).includes('section-stories');

/**
 * Finds the story/questions pairs under a path (file or folder). When several story files bear one story's name
 * (the published layout's `section-stories/` and `sentence-stories/`, or `section-stories/all/` beside a split), the
 * one in the questions file's own layout is taken, then one under `section-stories/`, and only ever one with
 * `section` and `text` columns. A questions file whose story exists only without those columns is an error naming
 * both: read as it stands, every one of its questions would be a miss.
 */
export function findFairytalePairs(
  path: string,
  unpaired: string[] = [],
): Array<{ story: string; storyFile: string; questionsFile: string }> {
  const files: string[] = [];
  if (statSync(path).isDirectory()) walk(path, files);
  else files.push(path);
  const stories = new Map<string, string[]>();
  const questions = new Map<string, string>();
  for (const file of files) {
    const name = basename(file);
    if (name.endsWith(STORY_SUFFIX)) {
      const story = name.slice(0, -STORY_SUFFIX.length);
      stories.set(story, [...(stories.get(story) ?? []), file]);
    } else if (name.endsWith(QUESTIONS_SUFFIX)) questions.set(name.slice(0, -QUESTIONS_SUFFIX.length), file);
  }
  // A lone story file: look for its questions beside it, or in the sibling folder of the published layout.
  for (const [story, storyFiles] of stories) {
    if (questions.has(story)) continue;
    for (const file of storyFiles) {
      const partner = partnerOf(
        file,
        `${story}${QUESTIONS_SUFFIX}`,
        ['section-stories', 'sentence-stories'],
        'questions',
      );
      if (partner) {
        questions.set(story, partner);
        break;
      }
    }
  }
  const pairs: Array<{ story: string; storyFile: string; questionsFile: string }> = [];
  for (const [story, questionsFile] of [...questions].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const found = stories.get(story) ?? [];
    const candidates = [
      ...new Set([
        ...partnersOf(questionsFile, `${story}${STORY_SUFFIX}`, ['questions'], 'section-stories'),
        ...found.filter(inSectionStories),
        ...found,
      ]),
    ];
    if (candidates.length === 0) {
      // Told, not scored: its questions have no sections to find.
      unpaired.push(questionsFile);
      continue;
    }
    const storyFile = candidates.find(hasSectionColumns);
    if (!storyFile) {
      const have = candidates.length === 1 ? 'has' : 'have';
      throw new Error(
        `FairytaleQA story ${story}: ${candidates.join(', ')} ${have} no "section" and "text" columns (sentence-level?), so the questions of ${questionsFile}, which name sections, could only miss`,
      );
    }
    pairs.push({ story, storyFile, questionsFile });
  }
  return pairs;
}

/**
 * Where a file's partner `name` would be: beside it; in the sibling `to` folder of the published layout
 * (`<root>/<from>/<split>/` → `<root>/<to>/<split>/`); or, for a file directly in a `from` folder, in the `to` folder
 * beside that one. Only those that exist, in that order.
 */
function partnersOf(file: string, name: string, from: readonly string[], to: string): string[] {
  const folder = dirname(file);
  const candidates = [join(folder, name), join(dirname(dirname(folder)), to, basename(folder), name)];
  if (from.includes(basename(folder))) candidates.push(join(dirname(folder), to, name));
  return candidates.filter((candidate) => existsSync(candidate));
}

function partnerOf(file: string, name: string, from: readonly string[], to: string): string | undefined {
  return partnersOf(file, name, from, to)[0];
}

/**
 * Loads FairytaleQA stories (sections as units) and their questions. A path with no story/questions pair, or whose
 * pairs hold no question with a section to find, is an error naming it: there would be nothing to measure.
 */
export function loadFairytaleQa(path: string): BenchDataset {
  const corpora: BenchCorpus[] = [];
  const questions: BenchQuestion[] = [];
  let skipped = 0;
  const unpaired: string[] = [];
  const pairs = findFairytalePairs(path, unpaired);
  if (pairs.length === 0) throw new Error(`No FairytaleQA story/questions pairs found in ${path}`);
  for (const pair of pairs) {
    const corpusId = safeId(pair.story);
    const sections = new Map<number, string[]>();
    let current: number | undefined;
    for (const row of table(pair.storyFile).rows) {
      const number = Number.parseInt(row.section ?? '', 10);
      if (Number.isFinite(number)) current = number;
      if (current === undefined) continue;
      const texts = sections.get(current) ?? [];
      texts.push((row.text ?? '').trim());
      sections.set(current, texts);
    }
    if (sections.size === 0) {
      throw new Error(
        `${pair.storyFile}: no numbered section in its "section" column, so the questions of ${pair.questionsFile} could only miss`,
      );
    }
    const ordered = [...sections.entries()].sort(([a], [b]) => a - b);
    const texts = ordered.map(([, parts]) => parts.join('\n'));
    corpora.push({
      id: corpusId,
      units: ordered.map(([number], index) => ({
        id: `S${number}`,
        text: texts[index]!,
        before: texts.slice(0, index),
        after: texts.slice(index + 1),
      })),
    });
    for (const row of table(pair.questionsFile).rows) {
      const gold = parseSections(row.cor_section ?? '');
      const question = (row.question ?? '').trim();
      if (gold.length === 0 || question.length === 0) {
        skipped++;
        continue;
      }
      questions.push({ corpusId, question, gold, category: (row.attribute1 ?? '').trim() || 'none' });
    }
  }
  if (questions.length === 0) {
    throw new Error(`No usable FairytaleQA question in ${path} (${skipped} without a question or a cor_section)`);
  }
  const notes =
    unpaired.length === 0
      ? []
      : [
          `${unpaired.length} FairytaleQA questions file(s) have no story file beside them or in the sibling folder and were left out: ${unpaired.slice(0, 5).join(', ')}${unpaired.length > 5 ? ', ...' : ''}`,
        ];
  return { dataset: 'fairytaleqa', unit: 'section', corpora, questions, skipped, notes };
}
