/**
 * Where the retriever's lost recall comes from: for every gold unit the shipped retriever misses at the bar's k, does
 * the unit's indexed text share at least one distinctive term with the question (a stemmed, non-stop query term that
 * fewer than half of the corpus's units hold)? A miss that shares none is a vocabulary gap: no term-matching method
 * can rank it by the question's words ("What martial arts has John done?" against "I'm off to do some taekwondo!"),
 * and the hashing embedder, which hashes the same words, barely can. A miss that shares some is, in principle,
 * reachable by better lexical ranking. Development-only; the numbers are quoted in docs/retrieval.md.
 *
 *   npx tsx bench/retrieval-gaps.ts [--file ../shared/bench-data/locomo/locomo-dev.json] [--select 0-2]
 *
 * Prints one JSON object: per unit (turn@10, session@5) the recall, the recall lost (1 − recall, summed over the
 * questions, so a question with two gold sessions that misses one loses 0.5), the part of it lost on gold units
 * that share no distinctive term, and both by category.
 *
 * @module
 */
import { parseArgs } from 'node:util';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { composeIndexText, createHybridRetriever } from '../src/context/retrieval.js';
import { analyze } from '../src/context/text-analysis.js';
import { loadLocomo, readLocomo } from './datasets/locomo.js';
import type { BenchDataset } from './datasets/types.js';
import { COMPOSE_BY_UNIT, indexCorpus, recallOf } from './retrieval.js';

/** A term held by at least this share of a corpus's units says nothing about which unit answers. */
const DISTINCTIVE_BELOW = 0.5;

interface GapReport {
  unit: BenchDataset['unit'];
  k: number;
  questions: number;
  recall: number;
  /** Recall lost, in questions (the sum over questions of 1 − recall). */
  lost: number;
  /** The part of `lost` on gold units that share no distinctive term with their question. */
  lostWithoutSharedTerm: number;
  byCategory: Record<string, { questions: number; lost: number; lostWithoutSharedTerm: number }>;
}

async function gaps(dataset: BenchDataset, k: number): Promise<GapReport> {
  const embedder = createHashingEmbedder();
  const report: GapReport = {
    unit: dataset.unit,
    k,
    questions: 0,
    recall: 0,
    lost: 0,
    lostWithoutSharedTerm: 0,
    byCategory: {},
  };
  for (const corpus of dataset.corpora) {
    const questions = dataset.questions.filter((question) => question.corpusId === corpus.id);
    if (questions.length === 0) continue;
    const { vectors, keywords } = await indexCorpus(corpus, dataset.unit, embedder, { ks: [k] });
    const retriever = createHybridRetriever({ vectors, keywords, embedder });
    const termsOf = new Map(
      corpus.units.map((unit) => [unit.id, new Set(analyze(composeIndexText(unit, COMPOSE_BY_UNIT[dataset.unit])))]),
    );
    const unitsHolding = new Map<string, number>();
    for (const terms of termsOf.values())
      for (const term of terms) unitsHolding.set(term, (unitsHolding.get(term) ?? 0) + 1);
    const limit = corpus.units.length * DISTINCTIVE_BELOW;
    for (const question of questions) {
      const { candidates } = await retriever.retrieve(corpus.id, { query: question.question, k });
      const found = candidates.map((candidate) => candidate.id);
      const distinctive = [...new Set(analyze(question.question))].filter(
        (term) => (unitsHolding.get(term) ?? 0) < limit,
      );
      const category = report.byCategory[question.category] ?? { questions: 0, lost: 0, lostWithoutSharedTerm: 0 };
      report.byCategory[question.category] = category;
      const recall = recallOf(question.gold, found);
      report.questions++;
      category.questions++;
      report.recall += recall;
      report.lost += 1 - recall;
      category.lost += 1 - recall;
      for (const gold of question.gold) {
        if (found.includes(gold)) continue;
        const terms = termsOf.get(gold);
        // A gold id that names no unit (LoCoMo has two) shares nothing: it counts as a gap, as it counts as a miss.
        if (terms && distinctive.some((term) => terms.has(term))) continue;
        report.lostWithoutSharedTerm += 1 / question.gold.length;
        category.lostWithoutSharedTerm += 1 / question.gold.length;
      }
    }
    await vectors.close();
    await keywords.close();
  }
  const round = (value: number) => Math.round(value * 10) / 10;
  report.recall = Math.round((report.recall / Math.max(1, report.questions)) * 10_000) / 10_000;
  report.lost = round(report.lost);
  report.lostWithoutSharedTerm = round(report.lostWithoutSharedTerm);
  for (const category of Object.values(report.byCategory)) {
    category.lost = round(category.lost);
    category.lostWithoutSharedTerm = round(category.lostWithoutSharedTerm);
  }
  return report;
}

const { values } = parseArgs({
  options: {
    file: { type: 'string', default: '../shared/bench-data/locomo/locomo-dev.json' },
    select: { type: 'string' },
  },
});
const range = values.select ? /^(\d+)-(\d+)$/.exec(values.select) : null;
if (values.select && !range) throw new Error(`--select must be a range like 0-2, got ${JSON.stringify(values.select)}`);
const select = range
  ? Array.from({ length: Number(range[2]) - Number(range[1]) + 1 }, (_, index) => Number(range[1]) + index)
  : undefined;
const { turns, sessions } = loadLocomo(readLocomo(values.file, select));
console.log(JSON.stringify({ dataset: 'locomo', results: [await gaps(turns, 10), await gaps(sessions, 5)] }, null, 2));
