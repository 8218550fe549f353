/**
 * A toy planner–worker task over a 16-token vocabulary, for testing the training loops with the
 * bigram policy. Token ids: 0 = start, 1..5 = answer tokens, 6 = DELEGATE, 7 = STOP, 8..15 = the
 * eight questions. Question k is token 8+k and its gold answer is token 1 + (k mod 5).
 *
 * A matpo rollout: the planner sees [0, q] and samples up to 3 tokens (stop at STOP). If it sampled
 * DELEGATE, a worker runs on [0, q, DELEGATE] (up to 3 tokens) and its sampled tokens are appended
 * to the planner's context as mask-0 tokens, then the planner samples a final turn. The answer is
 * the last answer token the planner sampled in its last turn. Format scores: the planner's is 1;
 * a worker's is 1 when it ended with STOP, else 0.5. Single mode never delegates (DELEGATE is then
 * just a token). Planner and worker masks differ in length and position by construction.
 */
import type { Rollout, Sequence, TurnRecord } from '../core/records.ts';
import type { SamplingPolicy } from '../core/policy.ts';
import { Rng } from '../util/rng.ts';
import type { Question, RolloutRunner } from '../core/question.ts';

export const TOY_VOCAB = 16;
export const TOY_DELEGATE = 6;
export const TOY_STOP = 7;

export function toyQuestions(ids: readonly number[]): Question[] {
  return ids.map((k) => ({ id: `toy-${k}`, question: `t${8 + k}`, answers: [String(1 + (k % 5))] }));
}

function questionToken(q: Question): number {
  const k = Number(q.id.replace('toy-', ''));
  return 8 + k;
}

function sequence(id: string, parentId: string | null, role: Sequence['role'], prompt: number[]): Sequence {
  return {
    id,
    parentId,
    role,
    tokens: prompt.slice(),
    mask: prompt.map(() => 0),
    logprobs: prompt.map(() => 0),
    turns: [],
    messages: [],
    outcome: 'answered',
    formatScore: 1,
  };
}

async function turn(policy: SamplingPolicy, s: Sequence, seed: number, temperature: number): Promise<number[]> {
  const t0 = Date.now();
  const r = await policy.sample(s.tokens, { maxNewTokens: 3, temperature, seed, stopTokenIds: [TOY_STOP] });
  const start = s.tokens.length;
  s.tokens.push(...r.tokens);
  s.mask.push(...r.tokens.map(() => 1));
  s.logprobs.push(...r.logprobs);
  const rec: TurnRecord = {
    promptStart: start,
    sampleStart: start,
    end: s.tokens.length,
    text: r.tokens.map((t) => `t${t}`).join(' '),
    finishReason: r.finishReason,
    toolCalls: [],
    ms: Date.now() - t0,
  };
  s.turns.push(rec);
  return r.tokens;
}

/** A RolloutRunner for the toy task; `delayMs` slows each rollout down (for kill-and-resume tests). */
export function toyRunner(policy: SamplingPolicy, delayMs = 0): RolloutRunner {
  return async ({ question, index, rolloutId, mode, seed, temperature = 1 }) => {
    const t0 = Date.now();
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    const rng = new Rng(seed);
    const q = questionToken(question);
    const root = sequence(`${rolloutId}/p`, null, mode === 'single' ? 'single' : 'planner', [0, q]);
    const workers: Sequence[] = [];
    let last = await turn(policy, root, rng.nextU32(), temperature);
    if (mode === 'matpo' && last.includes(TOY_DELEGATE)) {
      const w = sequence(`${rolloutId}/w0`, root.id, 'worker', [0, q, TOY_DELEGATE]);
      const out = await turn(policy, w, rng.nextU32(), temperature);
      w.formatScore = out[out.length - 1] === TOY_STOP ? 1 : 0.5;
      root.turns[0].toolCalls.push({
        name: 'delegate',
        arguments: { subtask: question.question },
        raw: 't6',
        valid: true,
        workerId: w.id,
        result: w.turns[0].text,
      });
      workers.push(w);
      // the worker's report enters the planner's context as tokens with mask 0
      root.tokens.push(...out);
      root.mask.push(...out.map(() => 0));
      root.logprobs.push(...out.map(() => 0));
      last = await turn(policy, root, rng.nextU32(), temperature);
    }
    const answers = last.filter((t) => t >= 1 && t <= 5);
    const answer = answers.length ? String(answers[answers.length - 1]) : null;
    const rollout: Rollout = {
      id: rolloutId,
      questionId: question.id,
      index,
      mode,
      question: question.question,
      goldAnswers: question.answers,
      root,
      workers,
      answer,
      outcome: answer === null ? 'no_answer' : 'answered',
      timings: { totalMs: Date.now() - t0, sampleMs: 0, toolMs: 0 },
    };
    if (answer === null) root.outcome = 'no_answer';
    return rollout;
  };
}

/** Exact match of the toy answer. */
export const toyScorer = (prediction: string | null, golds: readonly string[]): number =>
  prediction !== null && golds.includes(prediction) ? 1 : 0;
