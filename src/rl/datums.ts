/**
 * Datum building: Rollout[] → Datum[], one datum per sequence (the planner or single agent, and
 * each worker). A sequence's scalar advantage is broadcast onto that sequence's OWN trainable mask:
 * advantages[t] = A·mask[t]. (The reference implementation copied the planner's per-token
 * advantage row onto worker sequences, so worker tokens got A only where the planner happened to
 * have a sampled token; that defect is absent here by construction and tested.)
 *
 * oldLogprobs[t] are the sampler's logprobs on sampled tokens (0 elsewhere). Rollouts whose id is
 * not in `keptRolloutIds` (DAPO filter) produce no datums.
 */
import { InvalidArgumentError } from '../core/errors.ts';
import type { Rollout, Sequence } from '../core/records.ts';
import type { Datum } from '../core/records.ts';
import type { CreditResult } from './credit.ts';

function checkSequence(s: Sequence): void {
  const n = s.tokens.length;
  if (s.mask.length !== n || s.logprobs.length !== n)
    throw new InvalidArgumentError(
      `sequence ${s.id}`,
      `tokens (${n}), mask (${s.mask.length}) and logprobs (${s.logprobs.length}) differ in length`,
    );
  if (n > 0 && s.mask[0] !== 0)
    throw new InvalidArgumentError(`sequence ${s.id}`, 'the first token cannot be trainable (nothing predicts it)');
}

export function sequenceDatum(s: Sequence, questionId: string, rolloutId: string, advantage: number): Datum {
  checkSequence(s);
  if (!Number.isFinite(advantage)) throw new InvalidArgumentError(`sequence ${s.id}`, `advantage ${advantage} is not finite`);
  const mask = s.mask.map((m) => (m ? 1 : 0));
  return {
    tokens: s.tokens.slice(),
    mask,
    advantages: mask.map((m) => (m ? advantage : 0)),
    oldLogprobs: s.logprobs.map((lp, t) => (mask[t] ? lp : 0)),
    questionId,
    rolloutId,
    sequenceId: s.id,
    role: s.role,
  };
}

/** One datum per sequence of every kept rollout, planner first, then its workers in order. */
export function buildDatums(rollouts: readonly Rollout[], credit: CreditResult): { datums: Datum[]; metrics: Record<string, number> } {
  const datums: Datum[] = [];
  let trainable = 0;
  for (const r of rollouts) {
    if (!credit.keptRolloutIds.has(r.id)) continue;
    for (const s of [r.root, ...r.workers]) {
      const a = credit.sequenceAdvantages.get(s.id);
      if (a === undefined) throw new InvalidArgumentError('credit', `no advantage for sequence ${s.id} of rollout ${r.id}`);
      const d = sequenceDatum(s, r.questionId, r.id, a);
      for (const m of d.mask) trainable += m;
      datums.push(d);
    }
  }
  return { datums, metrics: { datums: datums.length, trainable_tokens: trainable } };
}
