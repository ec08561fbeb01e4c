/**
 * The shape every benchmark dataset is loaded into: corpora of units (turns, sessions, sections) and questions whose
 * gold answers name unit ids. Dataset parsing lives in `bench/`, never in `src/`.
 *
 * @module
 */
import type { IndexableUnit } from '../../src/context/retrieval.js';

/** One retrievable unit with the pieces `composeIndexText` puts together. */
export interface BenchUnit extends IndexableUnit {
  id: string;
  /** The id of the larger unit this one belongs to (a turn's session), indexed as `metadata.chapterId`. */
  group?: string;
}

/** One conversation or story: the units retrieved from for its questions. */
export interface BenchCorpus {
  id: string;
  units: BenchUnit[];
}

/** One question. `gold` may name ids that do not exist in the corpus: they count as misses. */
export interface BenchQuestion {
  corpusId: string;
  question: string;
  gold: string[];
  category: string;
}

/** A dataset at one unit granularity. */
export interface BenchDataset {
  dataset: string;
  unit: 'turn' | 'session' | 'section';
  corpora: BenchCorpus[];
  questions: BenchQuestion[];
  /**
   * The same corpora at a finer grain, whose units name one of this dataset's unit ids as `group` (LoCoMo's turns
   * for its sessions): lets the benchmark rank these units as groups of the finer ones (`retrieveGroups`).
   */
  members?: BenchCorpus[];
  /** Questions left out because they name no evidence at all (nothing to recall). */
  skipped: number;
  /**
   * The most neighbours on each side its units (and members) carry in `before` / `after`, when they carry only a
   * window of them: indexing with a larger `maxNeighbours` would quietly index less than asked for.
   */
  neighbours?: number;
  /** What the loader left out of the files it was given, each said in one line (the command prints them on stderr). */
  notes?: string[];
}
