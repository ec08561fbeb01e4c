/**
 * How the audience's pending influences become one scene's input, and how each of them ends: applied, or rejected
 * with a reason a reader can be shown.
 *
 * Votes (and tips that name a choice) are tallied per normalised choice: an author's total weight is capped, then
 * optionally square-rooted (quadratic voting: ten times the money buys about three times the say), and the heaviest
 * choice wins, ties broken deterministically. Weights that agree to one part in a billion are a tie: three votes of a
 * third of a capped author's say weigh what one vote of all of it does, though floating point would say otherwise.
 * Suggestions (and tips without a choice) are offered to the narrator, who takes them up or not. Every text is
 * sanitized before any model sees it.
 *
 * @module
 */
import { ValidationError, type ValidationProblem } from '../core/errors.js';
import { normalizeChoice, sanitizeAudienceText } from '../core/sanitize.js';
import { ellipsize } from '../core/text.js';
import type { ResolvedInfluence } from '../generation/scene-generator.js';
import type { StateDelta, UserInfluence } from '../state/schema.js';

/** The voting policy of `resolveInfluences`. */
export interface InfluencePolicy {
  /** The most weight one author's influences carry together in one scene; beyond it they are scaled down. Default: no cap. */
  maxWeightPerAuthor?: number;
  /** Count the square root of each author's (capped) weight: quadratic voting. Default false. */
  quadratic?: boolean;
  /** Longest audience text shown to the narrator, in code points. Default 500. */
  maxTextLength?: number;
}

/**
 * What is wrong with an influence policy, path by path (empty when nothing is): a cap that is NaN, zero or negative
 * would turn every weight into NaN or flip the vote, and a text length that is not a positive integer would erase
 * every suggestion.
 */
export function influencePolicyProblems(policy: unknown, path = 'influencePolicy'): ValidationProblem[] {
  if (policy === undefined) return [];
  if (typeof policy !== 'object' || policy === null) return [{ path, message: 'must be an object' }];
  const { maxWeightPerAuthor, quadratic, maxTextLength } = policy as Record<string, unknown>;
  const problems: ValidationProblem[] = [];
  if (maxWeightPerAuthor !== undefined && !(typeof maxWeightPerAuthor === 'number' && maxWeightPerAuthor > 0)) {
    problems.push({ path: `${path}.maxWeightPerAuthor`, message: 'must be a positive number (or Infinity)' });
  }
  if (quadratic !== undefined && typeof quadratic !== 'boolean') {
    problems.push({ path: `${path}.quadratic`, message: 'must be true or false' });
  }
  if (maxTextLength !== undefined && !(Number.isInteger(maxTextLength) && (maxTextLength as number) >= 1)) {
    problems.push({ path: `${path}.maxTextLength`, message: 'must be a whole number of at least 1' });
  }
  return problems;
}

/** One choice of the vote, with what it gathered. */
export interface ChoiceTally {
  /** The normalised choice (the key votes are grouped by). */
  choice: string;
  /** The sanitized wording of the first vote for it, for display. */
  label: string;
  /** Effective weight after the per-author cap and the quadratic weighting, rounded to 1e-9 for display. */
  weight: number;
  votes: number;
  authors: number;
}

/** The outcome of `resolveInfluences`. */
export interface InfluenceResolution {
  /** What the narrator is shown: votes (the winning choice's marked `winning`) and suggestions, sanitized. */
  influences: ResolvedInfluence[];
  /** The winning choice, or null when no valid vote was cast. */
  winner: ChoiceTally | null;
  /** Every choice, heaviest first (the order the tie-break gives). */
  tally: ChoiceTally[];
  /** Influences turned down before the narrator sees them (a vote with no choice, text empty once sanitized). */
  rejected: Array<{ id: string; reason: string }>;
}

interface Ballot {
  influence: UserInfluence;
  choice: string;
  raw: number;
  /** Never rounded: rounding each share and summing the rounded shares is how a split vote gained weight. */
  effective: number;
}

/** A choice's tally while it is counted: `sum` is exact as floating point allows, `weight` is only for display. */
interface Tally extends ChoiceTally {
  sum: number;
  first: Ballot;
  authorSet: Set<string>;
}

/**
 * Resolves pending influences into the narrator's input. Pure and deterministic: the same influences and policy give
 * the same result whatever their order.
 *
 * @example
 * ```ts
 * import { resolveInfluences } from 'storyloom';
 * const resolution = resolveInfluences(state.userInfluenceQueue, { maxWeightPerAuthor: 10, quadratic: true });
 * console.log(resolution.winner?.label, resolution.tally);
 * ```
 */
export function resolveInfluences(
  pending: readonly UserInfluence[],
  policy: InfluencePolicy = {},
): InfluenceResolution {
  const problems = influencePolicyProblems(policy);
  if (problems.length > 0) {
    throw new ValidationError(`Invalid influence policy: ${problems[0]!.path} ${problems[0]!.message}`, { problems });
  }
  const cap = policy.maxWeightPerAuthor ?? Number.POSITIVE_INFINITY;
  const maxTextLength = policy.maxTextLength;
  const textOptions = maxTextLength === undefined ? {} : { maxLength: maxTextLength };
  const ordered = [...pending].sort(byArrival);
  const seen = new Set<string>();
  const rejected: Array<{ id: string; reason: string }> = [];
  const ballots: Ballot[] = [];
  const suggestions: Ballot[] = [];
  for (const influence of ordered) {
    if (seen.has(influence.id)) continue;
    seen.add(influence.id);
    const raw = Number.isFinite(influence.weight) && influence.weight > 0 ? influence.weight : 0;
    const choice = normalizeChoice(influence.choice ?? '');
    const counts = influence.kind === 'vote' || (influence.kind === 'tip' && choice !== '');
    if (counts) {
      if (choice === '') {
        rejected.push({
          id: influence.id,
          reason: 'The vote names no choice once markup and control characters are removed.',
        });
        continue;
      }
      ballots.push({ influence, choice, raw, effective: raw });
      continue;
    }
    if (sanitizeAudienceText(influence.text, textOptions) === '' && choice === '') {
      rejected.push({ id: influence.id, reason: 'The text is empty once markup and control characters are removed.' });
      continue;
    }
    suggestions.push({ influence, choice, raw, effective: raw });
  }
  // The cap and the square root apply to an author's whole say in this scene, votes and suggestions together, so
  // splitting one tip into many small ones buys nothing.
  const byAuthor = new Map<string, Ballot[]>();
  for (const ballot of [...ballots, ...suggestions]) {
    const list = byAuthor.get(ballot.influence.author) ?? [];
    list.push(ballot);
    byAuthor.set(ballot.influence.author, list);
  }
  for (const list of byAuthor.values()) {
    const total = list.reduce((sum, ballot) => sum + ballot.raw, 0);
    if (total <= 0) continue;
    let allowed = Math.min(total, cap);
    if (policy.quadratic) allowed = Math.sqrt(allowed);
    const scale = allowed / total;
    for (const ballot of list) ballot.effective = ballot.raw * scale;
  }
  // Ballots are in arrival order, so each sum is added up in one order whatever order the queue came in.
  const tallies = new Map<string, Tally>();
  for (const ballot of ballots) {
    let tally = tallies.get(ballot.choice);
    if (!tally) {
      tally = {
        choice: ballot.choice,
        label: sanitizeAudienceText(ballot.influence.choice, { maxLength: 200 }),
        weight: 0,
        sum: 0,
        votes: 0,
        authors: 0,
        first: ballot,
        authorSet: new Set(),
      };
      tallies.set(ballot.choice, tally);
    }
    tally.sum += ballot.effective;
    tally.weight = roundWeight(tally.sum);
    tally.votes++;
    tally.authorSet.add(ballot.influence.author);
    tally.authors = tally.authorSet.size;
  }
  // Heaviest first; then the choice more people backed; then the one voted for first; then by name, so a tie never
  // depends on the order a store happened to return the queue in.
  const ranked = [...tallies.values()].sort(
    (a, b) =>
      heavierFirst(a.sum, b.sum) ||
      b.authors - a.authors ||
      byArrival(a.first.influence, b.first.influence) ||
      (a.choice < b.choice ? -1 : a.choice > b.choice ? 1 : 0),
  );
  const winner = ranked[0];
  const resolve = (ballot: Ballot, winning: boolean): ResolvedInfluence => ({
    id: ballot.influence.id,
    kind: ballot.influence.kind,
    author: sanitizeAudienceText(ballot.influence.author, { maxLength: 128 }),
    choice: ballot.influence.choice === null ? null : sanitizeAudienceText(ballot.influence.choice, { maxLength: 200 }),
    text: sanitizeAudienceText(ballot.influence.text, textOptions),
    weight: roundWeight(ballot.effective),
    winning,
  });
  const influences = [
    ...ballots.map((ballot) => resolve(ballot, ballot.choice === winner?.choice)),
    ...suggestions.map((ballot) => resolve(ballot, false)),
  ];
  return {
    influences,
    winner: winner ? publicTally(winner) : null,
    tally: ranked.map(publicTally),
    rejected,
  };
}

/** The final outcome of every influence a scene took. */
export interface InfluenceOutcome {
  applied: string[];
  rejected: Array<{ id: string; reason: string }>;
  /** Ids the narrator named that were not this scene's to decide; they were left out of the delta. */
  ignored: string[];
}

/**
 * Reconciles what the narrator said about the influences with the vote, so that every influence the scene took ends
 * applied or rejected, with a reason, exactly once:
 *
 * - a vote that lost is rejected ("lost the vote to …"), whatever the narrator said;
 * - the winning choice is applied as a whole when the narrator applied any vote for it (all its votes count), and
 *   rejected as a whole with the narrator's reason when it applied none;
 * - a suggestion is applied when the narrator applied it, else rejected with its reason or "not taken up by the
 *   narrator";
 * - ids the narrator named that the scene did not take are dropped (`ignored`), so a hallucinated id cannot fail
 *   the commit.
 *
 * @example
 * ```ts
 * import { resolveInfluences, settleInfluences } from 'storyloom';
 * const resolution = resolveInfluences(state.userInfluenceQueue);
 * const { applied, rejected } = settleInfluences(resolution, generated.delta);
 * ```
 */
export function settleInfluences(
  resolution: InfluenceResolution,
  delta: Pick<StateDelta, 'influencesApplied' | 'influencesRejected'>,
): InfluenceOutcome {
  const taken = new Map(resolution.influences.map((influence) => [influence.id, influence]));
  const preRejected = new Set(resolution.rejected.map((entry) => entry.id));
  const appliedByNarrator = new Set(delta.influencesApplied);
  const reasonByNarrator = new Map<string, string>();
  for (const entry of delta.influencesRejected) {
    if (!reasonByNarrator.has(entry.id)) reasonByNarrator.set(entry.id, entry.reason);
  }
  const ignored = [...new Set([...delta.influencesApplied, ...delta.influencesRejected.map((entry) => entry.id)])]
    .filter((id) => !taken.has(id) && !preRejected.has(id))
    .sort();
  const winner = resolution.winner;
  const winningVotes = resolution.influences.filter((influence) => influence.winning);
  const winnerTaken = winningVotes.some((influence) => appliedByNarrator.has(influence.id));
  const winnerReason =
    winningVotes.map((influence) => reasonByNarrator.get(influence.id)).find((reason) => reason !== undefined) ??
    'The winning choice was not taken up by the narrator.';
  const applied: string[] = [];
  const rejected: Array<{ id: string; reason: string }> = [...resolution.rejected];
  for (const influence of resolution.influences) {
    const isVote = influence.kind === 'vote' || (influence.kind === 'tip' && normalizeChoice(influence.choice) !== '');
    if (isVote && winner) {
      if (!influence.winning) {
        rejected.push({
          id: influence.id,
          reason: clip(
            `Lost the vote to ${JSON.stringify(winner.label)} (${formatWeight(winner.weight)} against ${formatWeight(tallyOf(resolution, influence))}).`,
          ),
        });
      } else if (winnerTaken) applied.push(influence.id);
      else rejected.push({ id: influence.id, reason: clip(winnerReason) });
      continue;
    }
    if (appliedByNarrator.has(influence.id)) applied.push(influence.id);
    else {
      rejected.push({
        id: influence.id,
        reason: clip(reasonByNarrator.get(influence.id) ?? 'Not taken up by the narrator in this scene.'),
      });
    }
  }
  return { applied, rejected, ignored };
}

function tallyOf(resolution: InfluenceResolution, influence: ResolvedInfluence): number {
  const choice = normalizeChoice(influence.choice);
  return resolution.tally.find((tally) => tally.choice === choice)?.weight ?? 0;
}

function publicTally(tally: ChoiceTally): ChoiceTally {
  return { choice: tally.choice, label: tally.label, weight: tally.weight, votes: tally.votes, authors: tally.authors };
}

function byArrival(a: UserInfluence, b: UserInfluence): number {
  // As instants: a time written with an offset orders by the moment it names (stores keep UTC; callers may not).
  const at = Date.parse(a.receivedAt) - Date.parse(b.receivedAt);
  if (at !== 0 && !Number.isNaN(at)) return at < 0 ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  // One id given twice (a caller that did not deduplicate): which one is kept must not depend on the input's order.
  const first = JSON.stringify(a);
  const second = JSON.stringify(b);
  return first < second ? -1 : first > second ? 1 : 0;
}

/**
 * Orders two weights heaviest first, with those that agree to one part in a billion tied: an exact tie summed in
 * floating point (3 × 2/3 against 2, 2·√2 against √8) differs in the last bits, and must go to the tie-break rather
 * than to rounding noise. The error of a sum of positive weights is a few parts in 10^16 per term, far inside this.
 * A tolerance is not transitive, but the tallies reach the sort in the order of their first votes, so even a chain of
 * near-ties is ranked the same whatever order the queue came in.
 */
function heavierFirst(a: number, b: number): number {
  const difference = b - a;
  return Math.abs(difference) <= TIE_TOLERANCE * Math.max(Math.abs(a), Math.abs(b)) ? 0 : difference;
}

const TIE_TOLERANCE = 1e-9;

/** What is shown of a weight: 1e-9 hides floating-point noise (2.0000000000000004) without hiding a real difference. */
function roundWeight(value: number): number {
  return Math.round(value * 1e9) / 1e9;
}

function formatWeight(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

/** Reasons are stored with the influence, which allows 500 characters. */
function clip(reason: string): string {
  return ellipsize(reason, 500);
}
