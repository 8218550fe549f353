/**
 * Rule-based answer scoring as used in multi-hop QA work (the answer itself is extracted from the
 * model's text by agents/answer.ts): normalise it (lowercase, strip punctuation and the articles
 * a/an/the, collapse whitespace — the SQuAD rule), and compare with one or more gold answers: exact match, token F1, cover-EM (the
 * normalised gold appears as a whole-word span inside the normalised prediction). With several
 * golds the score is the maximum over golds. A missing prediction scores 0.
 *
 * Scorers are registered by name (`exact_match`, `f1`, `cover_em`; the LLM judge in judge.ts is
 * built around a policy with `createJudgeScorer`). `formatScore` is the tool-call format score.
 */
import { Registry } from '../core/registry.ts';

/** Lowercase, drop punctuation, drop articles, collapse whitespace. */
export function normalizeAnswer(s: string): string {
  return s
    .toLowerCase()
    .replace(/\\text\{([^{}]*)\}/g, '$1')
    .replace(/[\p{P}\p{S}]/gu, ' ')
    .replace(/\b(a|an|the)\b/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

function maxOver(golds: readonly string[], f: (gold: string) => number): number {
  let best = 0;
  for (const g of golds) best = Math.max(best, f(g));
  return best;
}

export function exactMatch(prediction: string | null, golds: readonly string[]): number {
  if (prediction === null) return 0;
  const p = normalizeAnswer(prediction);
  return maxOver(golds, (g) => (normalizeAnswer(g) === p ? 1 : 0));
}

/** Token-level F1 between normalised prediction and gold (bag of tokens, SQuAD style). */
export function tokenF1(prediction: string | null, golds: readonly string[]): number {
  if (prediction === null) return 0;
  const pTokens = normalizeAnswer(prediction).split(' ').filter(Boolean);
  return maxOver(golds, (gold) => {
    const gTokens = normalizeAnswer(gold).split(' ').filter(Boolean);
    if (pTokens.length === 0 || gTokens.length === 0) return pTokens.length === gTokens.length ? 1 : 0;
    const counts = new Map<string, number>();
    for (const t of gTokens) counts.set(t, (counts.get(t) ?? 0) + 1);
    let common = 0;
    for (const t of pTokens) {
      const c = counts.get(t) ?? 0;
      if (c > 0) {
        common++;
        counts.set(t, c - 1);
      }
    }
    if (common === 0) return 0;
    const precision = common / pTokens.length;
    const recall = common / gTokens.length;
    return (2 * precision * recall) / (precision + recall);
  });
}

/** 1 when a normalised gold appears as whole words inside the normalised prediction. */
export function coverExactMatch(prediction: string | null, golds: readonly string[]): number {
  if (prediction === null) return 0;
  const p = ` ${normalizeAnswer(prediction)} `;
  return maxOver(golds, (g) => {
    const n = normalizeAnswer(g);
    return n !== '' && p.includes(` ${n} `) ? 1 : 0;
  });
}

/** Fraction of tool-call blocks that parsed and matched their schema; 1 when there were none. */
export function formatScore(validCount: number, totalCount: number): number {
  if (totalCount <= 0) return 1;
  return Math.max(0, Math.min(1, validCount / totalCount));
}

export interface ScoreInput {
  /** The extracted answer (null when the model gave none). */
  prediction: string | null;
  answers: readonly string[];
  question?: string;
}

export interface ScoreResult {
  score: number;
  /** Extra details (e.g. the judge's grade and raw reply). */
  details?: Record<string, unknown>;
}

export type Scorer = (input: ScoreInput) => ScoreResult | Promise<ScoreResult>;

export const scorers = new Registry<Scorer>('scorer');
scorers.register('exact_match', ({ prediction, answers }) => ({ score: exactMatch(prediction, answers) }));
scorers.register('f1', ({ prediction, answers }) => ({ score: tokenF1(prediction, answers) }));
scorers.register('cover_em', ({ prediction, answers }) => ({ score: coverExactMatch(prediction, answers) }));
