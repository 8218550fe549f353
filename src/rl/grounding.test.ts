import { test } from 'node:test';
import assert from 'node:assert/strict';
import { groundingStats, isGrounded, reportClaims, toolOutputText } from './grounding.ts';
import { testRollout } from '../testing/rollouts.ts';
import type { Sequence, ToolCallRecord } from '../core/records.ts';
import { generateWorld } from '../envs/world/world.ts';
import { createChatTokenizer } from '../envs/tokenizer-train.ts';
import { trainTokenizerForWorld } from '../envs/world-tokenizer.ts';
import { runExpert } from '../envs/expert-runs.ts';
import { testRolloutOptions } from '../testing/config-defaults.ts';

const SEARCH = 'Results for "Eli Cenka":\n[d12] Eli Cenka: Eli Cenka works as a banker.\n[d120] Eli Cenkar: Eli Cenkar works as a baker.';

test('claims: cited ids (Document X and [X]) and the Conclusion value', () => {
  const report =
    'Conclusion: The occupation of Eli Cenka is banker.\nSupporting information: Document d12 (Eli Cenka) says: "..." see also [d120]';
  assert.deepEqual(reportClaims(report), { docIds: ['d12', 'd120'], value: 'banker' });
  assert.deepEqual(reportClaims('I think \\boxed{Port Orkel}.'), { docIds: [], value: 'Port Orkel' });
  assert.deepEqual(reportClaims('Conclusion: I could not find the founder of X.'), { docIds: [], value: null });
  // the last " is " of the Conclusion line: the noun phrase may not contain it, the value follows it
  assert.equal(reportClaims('Conclusion: What it is is 1878.').value, '1878');
});

test('grounded: every claim appears in the tool output; ids as whole words', () => {
  assert.equal(isGrounded('Conclusion: The occupation of Eli Cenka is Banker.\nDocument d12 says so.', SEARCH), true);
  // a document the worker never saw (the failure mode of a model that memorised another world)
  assert.equal(isGrounded('Conclusion: The occupation of Eli Wendar is banker.\nDocument d242 says so.', SEARCH), false);
  // d1 is not d12 or d120
  assert.equal(isGrounded('Conclusion: X is banker. Document d1.', SEARCH), false);
  // value not in the output
  assert.equal(isGrounded('Conclusion: The occupation of Eli Cenka is painter. Document d12.', SEARCH), false);
  // white space and case do not matter for values
  assert.equal(isGrounded('Conclusion: X is  ELI   cenka', SEARCH), true);
  assert.equal(isGrounded('Conclusion: I could not find it.', SEARCH), null);
});

function worker(id: string, report: string | null, calls: Partial<ToolCallRecord>[], outcome: Sequence['outcome'] = 'answered'): Sequence {
  return {
    id,
    parentId: 'p',
    role: 'worker',
    tokens: [],
    mask: [],
    logprobs: [],
    formatScore: 1,
    outcome,
    turns: [
      {
        promptStart: 0,
        sampleStart: 0,
        end: 0,
        text: '',
        finishReason: 'stop',
        ms: 0,
        toolCalls: calls.map((c) => ({ name: 'search', arguments: {}, raw: '', valid: true, ...c })),
      },
    ],
    messages: [{ role: 'user', content: 'task' }, ...(report === null ? [] : [{ role: 'assistant' as const, content: report }])],
  };
}

test('grounding over rollouts: pooled over reports, claimless and unanswered reports apart (hand-computed 2/3)', () => {
  const r1 = testRollout({ id: 'a', questionId: 'q1', rootMask: [1] });
  r1.workers = [
    worker('a/w0', 'Conclusion: The occupation of Eli Cenka is banker.\nDocument d12.', [{ result: SEARCH }]), // grounded
    worker('a/w1', 'Conclusion: The occupation of Eli Wendar is banker.\nDocument d242.', [{ result: SEARCH }]), // cites an unseen id
  ];
  const r2 = testRollout({ id: 'b', questionId: 'q2', rootMask: [1] });
  r2.workers = [
    worker('b/w0', 'Conclusion: X is Eli Cenkar.', [{ result: SEARCH }]), // grounded (value only)
    worker('b/w1', 'Conclusion: I could not find it.', [{ result: SEARCH }]), // no claim
    // the error text quotes d99, which is not tool output
    worker(
      'b/w2',
      'Conclusion: X is d99.',
      [{ error: 'no document with id "d99"', result: 'Error: no document with id "d99".' }],
      'turn_limit',
    ),
  ];
  const s = groundingStats([r1, r2]);
  assert.deepEqual({ ...s, rate: Number(s.rate.toFixed(6)) }, { reports: 4, claiming: 3, grounded: 2, rate: Number((2 / 3).toFixed(6)) });
  assert.equal(toolOutputText(r2.workers[2]), '');
  assert.ok(Number.isNaN(groundingStats([]).rate));
});

test('the scripted expert, which copies from its tools, is grounded on every report, in both modes', async () => {
  const world = generateWorld({ seed: 5, entities: 40, questions: 30, minHops: 1, maxHops: 2 });
  const { trained } = trainTokenizerForWorld(world, 400);
  const tokenizer = createChatTokenizer(trained.tokenizerJson, trained.tokenizerConfig);
  const questions = world.questions.slice(0, 12);
  const clean = groundingStats((await runExpert({ world, tokenizer, mode: 'matpo', questions, rollout: testRolloutOptions() })).rollouts);
  assert.ok(clean.claiming > 0);
  assert.equal(clean.grounded, clean.claiming);
  const single = groundingStats((await runExpert({ world, tokenizer, mode: 'single', questions, rollout: testRolloutOptions() })).rollouts);
  assert.equal(single.grounded, single.claiming);
});
