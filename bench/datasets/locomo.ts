/**
 * LoCoMo loader: a JSON list of conversations, each with `conversation.session_<n>` turn lists (`dia_id` like
 * `D3:12`), `session_<n>_date_time` and `qa` entries whose `evidence` names turn ids.
 *
 * @module
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_COMPOSE_OPTIONS } from '../../src/context/retrieval.js';
import type { BenchCorpus, BenchDataset, BenchQuestion, BenchUnit } from './types.js';

interface LocomoTurn {
  speaker?: string;
  dia_id?: unknown;
  text?: string;
  blip_caption?: string;
}

interface LocomoConversation {
  sample_id?: unknown;
  conversation: Record<string, unknown>;
  qa?: Array<{ question?: string; evidence?: unknown; category?: unknown }>;
}

/** A turn id as written in LoCoMo data, dirty forms included: `D30:05`, `D:11:26`, `d1:1`, `D1 : 3`. */
const TURN_ID = /D\s*:?\s*(\d+)\s*:\s*(\d+)/gi;
const WHOLE_TURN_ID = new RegExp(`^\\s*${TURN_ID.source}\\s*$`, 'i');

/** A number as written, without leading zeros (`05` → `5`), exact however many digits it has. */
const withoutLeadingZeros = (digits: string) => digits.replace(/^0+(?=\d)/, '');

/**
 * The one spelling of a turn id that turn ids and evidence are both read into, so that a file spelling its ids one
 * way throughout still matches: `D30:05` → `D30:5`, `d1:1` → `D1:1`, `D:11:26` → `D11:26`. Anything else is returned
 * trimmed but otherwise as it is.
 */
export function normaliseTurnId(raw: string): string {
  const match = WHOLE_TURN_ID.exec(raw);
  return match ? `D${withoutLeadingZeros(match[1]!)}:${withoutLeadingZeros(match[2]!)}` : raw.trim();
}

/**
 * Cleans one raw evidence entry into turn ids: every turn id in it, however it is separated (`"D8:6; D9:17"`,
 * `"D1:3 D1:4"`) or spelt (`"D:11:26"`, `"D30:05"`), through `normaliseTurnId`; a nested list is flattened. An entry
 * with no turn id in it is kept as it is (it will not match a turn, so it counts as a miss, never silently dropped).
 */
export function cleanEvidence(raw: unknown): string[] {
  if (Array.isArray(raw)) return raw.flatMap(cleanEvidence);
  if (typeof raw !== 'string') return [String(raw)];
  const ids = raw.match(TURN_ID);
  return ids ? ids.map(normaliseTurnId) : [raw.trim() || raw];
}

/** The session number of a turn id (`D3:12` → 3), or undefined. */
export function sessionOf(turnId: string): number | undefined {
  const match = /^D(\d+):\d+$/.exec(turnId);
  return match ? Number(match[1]) : undefined;
}

function sessionsOf(
  conversation: Record<string, unknown>,
): Array<{ number: number; date: string; turns: LocomoTurn[] }> {
  const sessions: Array<{ number: number; date: string; turns: LocomoTurn[] }> = [];
  for (const [key, value] of Object.entries(conversation)) {
    const match = /^session_(\d+)$/.exec(key);
    if (!match || !Array.isArray(value)) continue;
    const number = Number(match[1]);
    const date = conversation[`session_${number}_date_time`];
    sessions.push({ number, date: typeof date === 'string' ? date : '', turns: value as LocomoTurn[] });
  }
  return sessions.sort((a, b) => a.number - b.number);
}

/** A turn's text with its shared image described, as the dialogue participants saw it. */
function turnText(turn: LocomoTurn): string {
  const text = turn.text ?? '';
  return turn.blip_caption ? `${text} [shares ${turn.blip_caption}]` : text;
}

const neighbour = (turn: LocomoTurn) => `${turn.speaker ?? ''}: ${turnText(turn)}`;

/** An object with a `conversation` object: what a LoCoMo entry must be (anything else is not LoCoMo). */
function isConversation(value: unknown): value is LocomoConversation {
  if (typeof value !== 'object' || value === null) return false;
  const { conversation } = value as { conversation?: unknown };
  return typeof conversation === 'object' && conversation !== null && !Array.isArray(conversation);
}

function jsonFilesUnder(folder: string, out: string[] = []): string[] {
  for (const name of readdirSync(folder).sort()) {
    const path = join(folder, name);
    if (statSync(path).isDirectory()) jsonFilesUnder(path, out);
    else if (name.toLowerCase().endsWith('.json')) out.push(path);
  }
  return out;
}

/**
 * Reads LoCoMo conversations from one JSON file (a list of conversations, or one) or from every `.json` file under a
 * folder, in path order; `select` keeps only the conversations at those positions (0-based, counted across files).
 * In a folder, JSON files that hold no conversation are passed over; a file that does not parse, or a path that holds
 * no conversation at all, is an error naming it, and so is a `select` position past the last conversation.
 */
export function readLocomo(path: string, select?: readonly number[]): LocomoConversation[] {
  const folder = statSync(path).isDirectory();
  const files = folder ? jsonFilesUnder(path) : [path];
  const list: LocomoConversation[] = [];
  for (const file of files) {
    let parsed: unknown;
    try {
      // A byte-order mark is not JSON, but editors on Windows write one; it says nothing about the data.
      parsed = JSON.parse(readFileSync(file, 'utf8').replace(/^\uFEFF/, ''));
    } catch (error) {
      throw new Error(`${file} is not valid JSON: ${error instanceof Error ? error.message : String(error)}`);
    }
    const entries = Array.isArray(parsed) ? parsed : [parsed];
    const conversations = entries.filter(isConversation);
    if (!folder && conversations.length < entries.length) {
      const bad = entries.findIndex((entry) => !isConversation(entry));
      throw new Error(`${file}: entry ${bad} is not a LoCoMo conversation (an object with a "conversation" object)`);
    }
    list.push(...conversations);
  }
  if (list.length === 0) throw new Error(`No LoCoMo conversations found in ${path}`);
  if (!select) return list;
  // A position past the end would quietly measure fewer conversations than asked for (or none at all).
  const missing = select.filter((index) => index >= list.length);
  if (missing.length > 0) {
    const holds = list.length === 1 ? '1 conversation' : `${list.length} conversations`;
    throw new Error(
      `--select ${missing.join(',')} names no conversation: ${path} holds ${holds} (positions 0-${list.length - 1})`,
    );
  }
  return list.filter((_, index) => select.includes(index));
}

/** How `loadLocomo` builds its units. */
export interface LoadLocomoOptions {
  /**
   * How many neighbouring turns on each side a turn carries (`before` / `after`): as many as `composeIndexText` reads
   * (its `maxNeighbours`), default that of `DEFAULT_COMPOSE_OPTIONS`. Carrying every turn of a long session would
   * cost memory growing with the square of its length.
   */
  neighbours?: number;
}

/**
 * The conversations as turn-level and session-level datasets. A conversation without sessions keeps its questions
 * (an empty corpus: they are misses, as any evidence naming a missing turn is). No question with evidence at all is
 * an error: there would be nothing to measure. Turn ids and evidence are both read through `normaliseTurnId`.
 */
export function loadLocomo(
  conversations: readonly LocomoConversation[],
  options: LoadLocomoOptions = {},
): {
  turns: BenchDataset;
  sessions: BenchDataset;
} {
  const window = options.neighbours ?? DEFAULT_COMPOSE_OPTIONS.maxNeighbours;
  const turnCorpora: BenchCorpus[] = [];
  const sessionCorpora: BenchCorpus[] = [];
  const turnQuestions: BenchQuestion[] = [];
  const sessionQuestions: BenchQuestion[] = [];
  let skipped = 0;
  const usedIds = new Set<string>();
  conversations.forEach((conversation, position) => {
    // Two files may reuse a sample id; each conversation is its own corpus, so a repeat gets its position appended.
    // A sample id may be written as a number (26) as well as a string ("conv-26").
    let corpusId = safeId(String(conversation.sample_id ?? `conversation-${position}`));
    if (usedIds.has(corpusId)) corpusId = safeId(`${corpusId}-${position}`);
    usedIds.add(corpusId);
    const sessions = sessionsOf(conversation.conversation);
    const turnUnits: BenchUnit[] = [];
    const sessionUnits: BenchUnit[] = [];
    for (const session of sessions) {
      const texts = session.turns.map(turnText);
      const neighbours = session.turns.map(neighbour);
      session.turns.forEach((turn, index) => {
        if (turn.dia_id === undefined || turn.dia_id === null || turn.dia_id === '') return;
        turnUnits.push({
          id: normaliseTurnId(String(turn.dia_id)),
          group: `S${session.number}`,
          text: texts[index]!,
          labels: [turn.speaker ?? '', session.date],
          before: neighbours.slice(Math.max(0, index - window), index),
          after: neighbours.slice(index + 1, index + 1 + window),
        });
      });
      sessionUnits.push({ id: `S${session.number}`, text: neighbours.join('\n'), labels: [session.date] });
    }
    turnCorpora.push({ id: corpusId, units: turnUnits });
    sessionCorpora.push({ id: corpusId, units: sessionUnits });
    const turnIds = new Set(turnUnits.map((unit) => unit.id));
    for (const qa of conversation.qa ?? []) {
      // Evidence may be a list or one string ("D1:1; D2:3"): cleanEvidence reads both.
      const evidence =
        qa.evidence === undefined || qa.evidence === null ? [] : [...new Set(cleanEvidence(qa.evidence))];
      if (evidence.length === 0 || typeof qa.question !== 'string') {
        skipped++;
        continue;
      }
      const category = String(qa.category ?? 'none');
      turnQuestions.push({ corpusId, question: qa.question, gold: evidence, category });
      // A turn that does not exist stays in the gold list under its own (unmatchable) name: a miss, not dropped.
      const sessionGold = new Set<string>();
      for (const id of evidence) {
        const session = sessionOf(id);
        sessionGold.add(turnIds.has(id) && session !== undefined ? `S${session}` : `missing:${id}`);
      }
      sessionQuestions.push({ corpusId, question: qa.question, gold: [...sessionGold], category });
    }
  });
  if (turnQuestions.length === 0) {
    throw new Error(`No usable LoCoMo question (${skipped} without a question or evidence naming turns like "D1:3")`);
  }
  return {
    turns: {
      dataset: 'locomo',
      unit: 'turn',
      corpora: turnCorpora,
      questions: turnQuestions,
      skipped,
      neighbours: window,
    },
    sessions: {
      dataset: 'locomo',
      unit: 'session',
      corpora: sessionCorpora,
      members: turnCorpora,
      questions: sessionQuestions,
      skipped,
      neighbours: window,
    },
  };
}

/** A storage-safe id: letters, digits and `._:-`, at most 128 characters. */
export function safeId(raw: string): string {
  const cleaned = raw.replace(/[^A-Za-z0-9._:-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return (cleaned || 'corpus').slice(0, 128);
}
