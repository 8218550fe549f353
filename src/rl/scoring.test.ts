import { test } from 'node:test';
import assert from 'node:assert/strict';
import { coverExactMatch, exactMatch, formatScore, normalizeAnswer, scorers, tokenF1 } from './scoring.ts';
import { extractAnswer } from '../agents/answer.ts';
import { buildJudgePrompt, createJudgeScorer, parseJudgeGrade } from './judge.ts';
import { UnknownNameError } from '../core/errors.ts';
import type { ChatTokenizer } from '../core/chat.ts';
import type { SamplingPolicy, SampleParams } from '../core/policy.ts';

test('extractAnswer: nested braces, answer tags, last one wins', () => {
  assert.equal(extractAnswer('so \\boxed{\\frac{1}{2}} done'), '\\frac{1}{2}');
  assert.equal(extractAnswer('\\boxed{Paris} then \\boxed{ Lyon }'), 'Lyon');
  assert.equal(extractAnswer('<answer>x</answer> and \\boxed{y}'), 'y');
  assert.equal(extractAnswer('\\boxed{y} and <answer> x </answer>'), 'x');
  assert.equal(extractAnswer('\\boxed{ok} \\boxed{unclosed'), 'ok');
  assert.equal(extractAnswer('no answer here'), null);
  assert.equal(extractAnswer('\\boxed{}'), '');
});

test('normalisation follows the SQuAD rule', () => {
  assert.equal(normalizeAnswer('  The  Eiffel-Tower!  '), 'eiffel tower');
  assert.equal(normalizeAnswer('An apple, a day'), 'apple day');
  assert.equal(normalizeAnswer('theater'), 'theater');
  assert.equal(normalizeAnswer('\\text{Port Kelda}'), 'port kelda');
});

test('exact match, F1 and cover-EM, hand computed, max over golds', () => {
  assert.equal(exactMatch('the Port Kelda.', ['port kelda']), 1);
  assert.equal(exactMatch('Kelda', ['Port Kelda']), 0);
  assert.equal(exactMatch(null, ['x']), 0);
  assert.equal(exactMatch('Lyon', ['Paris', 'Lyon']), 1);
  // pred tokens [new, port, kelda], gold [port, kelda]: common 2, P = 2/3, R = 1, F1 = 0.8
  assert.ok(Math.abs(tokenF1('New Port Kelda', ['Port Kelda']) - 0.8) < 1e-12);
  // pred [kelda, kelda], gold [kelda]: common 1 (counts clipped), P = 1/2, R = 1, F1 = 2/3
  assert.ok(Math.abs(tokenF1('Kelda Kelda', ['Kelda']) - 2 / 3) < 1e-12);
  assert.equal(tokenF1('Velmia', ['Port Kelda', 'Velmia']), 1);
  assert.equal(tokenF1('x', ['y']), 0);
  assert.equal(coverExactMatch('It was born in Port Kelda in 1854', ['port kelda']), 1);
  assert.equal(coverExactMatch('Kelda', ['Port Kelda']), 0);
  assert.equal(coverExactMatch('Keldan', ['Kelda']), 0, 'whole words only');
  assert.equal(coverExactMatch('anything', ['the']), 0, 'an empty gold covers nothing');
});

test('format score and the registry', async () => {
  assert.equal(formatScore(0, 0), 1);
  assert.equal(formatScore(3, 4), 0.75);
  assert.deepEqual(scorers.names(), ['cover_em', 'exact_match', 'f1']);
  assert.deepEqual(await scorers.get('f1')({ prediction: 'New Port Kelda', answers: ['Port Kelda'] }), { score: 0.8 });
  assert.throws(() => scorers.get('bleu'), UnknownNameError);
});

test('judge grade parsing tolerates malformed replies', () => {
  assert.equal(parseJudgeGrade('A'), 'A');
  assert.equal(parseJudgeGrade(' (B) the answer names another city'), 'B');
  assert.equal(parseJudgeGrade('<think>hmm A or B</think>C'), 'C');
  assert.equal(parseJudgeGrade('Grade: A'), 'A');
  assert.equal(parseJudgeGrade('NOT_ATTEMPTED'), 'C');
  assert.equal(parseJudgeGrade('This is INCORRECT.'), 'B');
  assert.equal(parseJudgeGrade('correct'), 'A');
  assert.equal(parseJudgeGrade('the answer is a person'), 'unparsed');
  assert.equal(parseJudgeGrade(''), 'unparsed');
  assert.equal(parseJudgeGrade('zzz'), 'unparsed');
});

/** A character-level tokenizer and a policy that replies with a scripted string. */
function scriptedJudge(reply: string, seen: string[]): SamplingPolicy {
  const tokenizer: ChatTokenizer = {
    vocabSize: 0x10000,
    stopTokenIds: [0],
    bosTokenId: null,
    eosTokenId: 0,
    encode: (t) => [...t].map((c) => c.charCodeAt(0)),
    decode: (ids) => String.fromCharCode(...ids.filter((i) => i !== 0)),
    tokenToId: () => undefined,
    idToToken: () => undefined,
    applyChatTemplate: (messages, o) =>
      messages.map((m) => `${m.role}: ${m.content}\n`).join('') + (o?.addGenerationPrompt ? 'assistant: ' : ''),
  };
  return {
    name: 'scripted',
    tokenExact: true,
    tokenizer: async () => tokenizer,
    async sample(prompt: readonly number[], params: SampleParams) {
      seen.push(tokenizer.decode(prompt));
      assert.equal(params.temperature, 0);
      const tokens = [...tokenizer.encode(reply), 0];
      return { tokens, logprobs: tokens.map(() => 0), finishReason: 'stop_token' as const };
    },
    close: async () => {},
  };
}

test('judge scorer: only A scores; the prompt carries question, golds and prediction', async () => {
  const seen: string[] = [];
  const ok = await createJudgeScorer(scriptedJudge('A', seen))({
    prediction: 'Kelda',
    answers: ['Port Kelda', 'Kelda'],
    question: 'Where?',
  });
  assert.deepEqual(ok, { score: 1, details: { grade: 'A', reply: 'A' } });
  assert.ok(seen[0].includes('Question: Where?') && seen[0].includes('- Port Kelda') && seen[0].includes('Predicted answer: Kelda'));
  for (const [reply, grade] of [
    ['B', 'B'],
    ['C', 'C'],
    ['???', 'unparsed'],
  ] as const) {
    const r = await createJudgeScorer(scriptedJudge(reply, []))({ prediction: 'x', answers: ['y'] });
    assert.equal(r.score, 0);
    assert.equal(r.details?.grade, grade);
  }
  assert.match(buildJudgePrompt('q', ['g'], null), /Predicted answer: \(no answer\)/);
});
