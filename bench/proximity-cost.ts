/**
 * Cost of the term-proximity stage (`HybridRetrieverOptions.proximity`) per query over a 200-candidate pool, with
 * texts the size of the context manager's scene chunks (about 300 words, `metadata.text` up to 2,000 characters):
 * what the retriever does, from analysing the query to the scores of the re-scored candidates (defaults: the best
 * `max(3k, 10)`, so 15 at getRelevantContext's k = 5 and 30 at k = 10, their first 1,200 characters). Nothing is cached
 * between queries but the stems of words already met, so there is no cold or warm text.
 *
 *   npx tsx bench/proximity-cost.ts [path to a FairytaleQA split]
 *
 * @module
 */
import { proximityScores } from '../src/context/term-proximity.js';
import { analyze } from '../src/context/text-analysis.js';
import { loadFairytaleQa } from './datasets/fairytaleqa.js';

const path = process.argv[2] ?? '../shared/bench-data/fairytaleqa/data-by-train-split/section-stories/train';
const dataset = loadFairytaleQa(path);
// Scene-chunk-sized texts: consecutive sections joined up to 2,000 characters.
const texts: string[] = [];
for (const corpus of dataset.corpora) {
  let text = '';
  for (const unit of corpus.units) {
    text = text ? `${text}\n${unit.text}` : unit.text;
    if (text.length >= 1_700) {
      texts.push(text.slice(0, 2_000));
      text = '';
    }
  }
}
const questions = dataset.questions.map((question) => question.question);
const POOL = 200;
const ROUNDS = 1_000;
const percentile = (values: number[], p: number) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))]!;
const stems = new Map<string, string>();

function run(rescored: number, characters = 2_000): number[] {
  const times: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const start = (round * 37) % Math.max(1, texts.length - POOL);
    const pool = texts.slice(start, start + POOL).map((text, index) => ({ text, fused: ((index * 7919) % 200) / 200 }));
    const query = questions[round % questions.length]!;
    const begin = performance.now();
    // As the retriever does: analyse the query, pick the best `rescored` of the pool, score them.
    const terms = analyze(query);
    const best = pool
      .slice()
      .sort((a, b) => b.fused - a.fused)
      .slice(0, rescored);
    proximityScores(
      terms,
      best.map((candidate) => candidate.text.slice(0, characters)),
      8,
      stems,
    );
    times.push(performance.now() - begin);
  }
  return times;
}

const lengths = texts.map((text) => text.length);
console.log(`${texts.length} texts, median ${percentile(lengths, 0.5)} characters; pool ${POOL}; ${ROUNDS} queries`);
run(30); // JIT warm-up
for (const [rescored, characters] of [
  [10, 1_200],
  [15, 1_200],
  [30, 1_200],
  [20, 2_000],
  [30, 2_000],
  [200, 1_200],
  [200, 2_000],
] as const) {
  const times = run(rescored, characters);
  console.log(
    `re-scored ${rescored} of ${POOL}, first ${characters} characters: p50 ${percentile(times, 0.5).toFixed(3)} ms, ` +
      `p99 ${percentile(times, 0.99).toFixed(3)} ms`,
  );
}
