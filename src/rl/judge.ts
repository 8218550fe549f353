/**
 * LLM-judge scoring with the SimpleQA rubric: a grader model reads the question, the gold answer(s)
 * and the predicted answer and replies with one letter — A (correct), B (incorrect) or C (not
 * attempted). Only A scores 1. The grader is any `SamplingPolicy`; the prompt below is our own wording of
 * the rubric. A reply with no recognisable grade is recorded as `unparsed` and scores 0.
 */
import type { SamplingPolicy } from '../core/policy.ts';
import type { Scorer } from './scoring.ts';

export type JudgeGrade = 'A' | 'B' | 'C' | 'unparsed';

export function buildJudgePrompt(question: string, golds: readonly string[], predicted: string | null): string {
  const gold = golds.length === 1 ? golds[0] : golds.map((g) => `- ${g}`).join('\n');
  return [
    'You are grading an answer to a factual question. Compare the predicted answer with the gold answer and pick one grade.',
    '',
    'A = CORRECT: the predicted answer states the same fact as the gold answer. ' +
      'Differences in wording, spelling variants, extra context that does not contradict the gold, ' +
      'or a more precise value that agrees with it are fine.',
    'B = INCORRECT: the predicted answer states something that contradicts the gold answer, ' +
      'names a different entity or value, or hedges between several candidates one of which is wrong.',
    'C = NOT ATTEMPTED: the predicted answer does not commit to an answer ' +
      '(for example "I don\'t know", a refusal, or an empty answer) and says nothing that contradicts the gold.',
    '',
    `Question: ${question}`,
    `Gold answer${golds.length === 1 ? '' : 's (any one is correct)'}: ${gold}`,
    `Predicted answer: ${predicted === null || predicted.trim() === '' ? '(no answer)' : predicted}`,
    '',
    'Reply with a single letter: A, B or C.',
  ].join('\n');
}

/** Read the grade from a judge reply: a lone letter, "Grade: X", "(X)", or the words CORRECT / INCORRECT / NOT ATTEMPTED. */
export function parseJudgeGrade(reply: string): JudgeGrade {
  const text = reply.replace(/<think>[\s\S]*?<\/think>/g, '').trim();
  const explicit = /(?:[Gg]rade|GRADE|[Vv]erdict|VERDICT)\s*(?:is)?\s*[:=]?\s*\(?\b([ABC])\b\)?/.exec(text);
  if (explicit) return explicit[1] as JudgeGrade;
  const lone = /^\W*([ABC])\b/.exec(text);
  if (lone) return lone[1] as JudgeGrade;
  const upper = text.toUpperCase();
  if (/NOT[ _]ATTEMPTED/.test(upper)) return 'C';
  if (/\bINCORRECT\b/.test(upper)) return 'B';
  if (/\bCORRECT\b/.test(upper)) return 'A';
  const anywhere = /\(([ABC])\)|\b([ABC])\b\s*$/.exec(text);
  if (anywhere) return (anywhere[1] ?? anywhere[2]) as JudgeGrade;
  return 'unparsed';
}

export interface JudgeOptions {
  maxNewTokens?: number;
  temperature?: number;
  seed?: number;
}

/** A scorer that asks `policy` to grade. Never throws for a bad reply; sampler failures do propagate. */
export function createJudgeScorer(policy: SamplingPolicy, options: JudgeOptions = {}): Scorer {
  return async ({ prediction, answers, question }) => {
    const tokenizer = await policy.tokenizer();
    const prompt = buildJudgePrompt(question ?? '', answers, prediction);
    const text = tokenizer.applyChatTemplate([{ role: 'user', content: prompt }], { addGenerationPrompt: true });
    const result = await policy.sample(tokenizer.encode(text), {
      maxNewTokens: options.maxNewTokens ?? 16,
      temperature: options.temperature ?? 0,
      seed: options.seed,
      stopTokenIds: tokenizer.stopTokenIds,
    });
    const reply = tokenizer.decode(result.tokens, { skipSpecialTokens: true });
    const grade = parseJudgeGrade(reply);
    return { score: grade === 'A' ? 1 : 0, details: { grade, reply } };
  };
}
