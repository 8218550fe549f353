import { test } from 'node:test';
import assert from 'node:assert/strict';
import { creditRegistry } from './credit.ts';
import { buildDatums } from './datums.ts';
import { testRollout } from '../testing/rollouts.ts';

const close = (a: number | undefined, b: number, tol = 1e-12) => assert.ok(a !== undefined && Math.abs(a - b) <= tol, `${a} vs ${b}`);

// One question, two rollouts: r0 (reward 1) spawned workers w0, w1; r1 (reward 0) spawned w0.
function group() {
  return [
    testRollout({
      id: 'r0',
      questionId: 'q',
      index: 0,
      rootMask: [0, 0, 1, 1, 0, 1],
      workerMasks: [
        [0, 1, 1, 1, 1, 0, 0, 1],
        [0, 0, 1],
      ],
      reward: 1,
    }),
    testRollout({ id: 'r1', questionId: 'q', index: 1, rootMask: [0, 1, 1], workerMasks: [[0, 1]], reward: 0 }),
  ];
}

test('registry names', () => {
  assert.deepEqual(creditRegistry.names(), ['agent-wise', 'matpo', 'per-role-groups']);
  assert.throws(() => creditRegistry.get('x'), /available: agent-wise, matpo, per-role-groups/);
});

test("matpo: every worker gets exactly its parent planner rollout's advantage", () => {
  const c = creditRegistry.get('matpo')(group(), { estimator: 'grpo' });
  // rewards [1, 0]: mean 0.5, std = sqrt(0.5/1) = 0.70710678; A = ±0.5/(0.70710678 + 1e-6)
  const a = 0.5 / (Math.SQRT1_2 + 1e-6);
  close(c.rolloutAdvantages.get('r0'), a);
  close(c.rolloutAdvantages.get('r1'), -a);
  assert.equal(c.sequenceAdvantages.get('r0/w0'), c.rolloutAdvantages.get('r0'));
  assert.equal(c.sequenceAdvantages.get('r0/w1'), c.rolloutAdvantages.get('r0'));
  assert.equal(c.sequenceAdvantages.get('r1/w0'), c.rolloutAdvantages.get('r1'));
});

test('worker tokens carry the parent advantage on their OWN mask (no planner row copy)', () => {
  const rollouts = group();
  const c = creditRegistry.get('matpo')(rollouts, { estimator: 'dr-grpo' });
  // dr-grpo: A(r0) = 1 − 0.5 = 0.5, A(r1) = −0.5
  const { datums } = buildDatums(rollouts, c);
  const byId = new Map(datums.map((d) => [d.sequenceId, d]));
  assert.deepEqual(byId.get('r0/p')!.advantages, [0, 0, 0.5, 0.5, 0, 0.5]);
  const w = byId.get('r0/w0')!;
  assert.deepEqual(w.advantages, [0, 0.5, 0.5, 0.5, 0.5, 0, 0, 0.5]);
  // The reference defect would give A·(planner mask) padded: [0,0,0.5,0.5,0,0.5,0,0]
  assert.notDeepEqual(w.advantages, [0, 0, 0.5, 0.5, 0, 0.5, 0, 0]);
  assert.deepEqual(byId.get('r0/w1')!.advantages, [0, 0, 0.5]);
  assert.deepEqual(byId.get('r1/w0')!.advantages, [0, -0.5]);
  // every trainable worker token has exactly the parent's scalar; untrainable tokens 0
  for (const d of datums) d.advantages.forEach((x, t) => assert.equal(x, d.mask[t] ? c.rolloutAdvantages.get(d.rolloutId) : 0));
  // old logprobs are the sampler's, on the sequence's own mask
  assert.deepEqual(w.oldLogprobs, [0, -0.5, -0.5, -0.5, -0.5, 0, 0, -0.5]);
  assert.deepEqual(
    datums.map((d) => `${d.role}:${d.sequenceId}:${d.rolloutId}`),
    ['planner:r0/p:r0', 'worker:r0/w0:r0', 'worker:r0/w1:r0', 'planner:r1/p:r1', 'worker:r1/w0:r1'],
  );
});

test("agent-wise (Dr. MAS): workers normalised with the worker role's own statistics", () => {
  const c = creditRegistry.get('agent-wise')(group(), { estimator: 'grpo' });
  const a = 0.5 / (Math.SQRT1_2 + 1e-6);
  close(c.sequenceAdvantages.get('r0/p'), a);
  // worker rewards (parents'): [1, 1, 0]: mean 2/3, dev [1/3, 1/3, −2/3], Σ = 6/9, var = 1/3, std = 0.57735027
  const s = Math.sqrt(1 / 3);
  close(c.sequenceAdvantages.get('r0/w0'), 1 / 3 / (s + 1e-6));
  close(c.sequenceAdvantages.get('r0/w1'), 1 / 3 / (s + 1e-6));
  close(c.sequenceAdvantages.get('r1/w0'), -2 / 3 / (s + 1e-6));
});

test('per-role-groups: the j-th workers of the group form a group', () => {
  const c = creditRegistry.get('per-role-groups')(group(), { estimator: 'dr-grpo' });
  // slot 0: [r0/w0 (1), r1/w0 (0)] → ±0.5; slot 1: [r0/w1 (1)] alone → dr-grpo group of one: A = R = 1
  close(c.sequenceAdvantages.get('r0/w0'), 0.5);
  close(c.sequenceAdvantages.get('r1/w0'), -0.5);
  close(c.sequenceAdvantages.get('r0/w1'), 1);
  close(c.sequenceAdvantages.get('r1/p'), -0.5);
});

test('single-agent rollouts and groups per question', () => {
  const rollouts = [
    testRollout({ id: 'a0', questionId: 'qa', mode: 'single', rootMask: [0, 1], reward: 0.95 }),
    testRollout({ id: 'b0', questionId: 'qb', mode: 'single', rootMask: [0, 1], reward: 0.1 }),
    testRollout({ id: 'a1', questionId: 'qa', mode: 'single', rootMask: [0, 1], reward: 0.05 }),
    testRollout({ id: 'b1', questionId: 'qb', mode: 'single', rootMask: [0, 1], reward: 0.1 }),
  ];
  const c = creditRegistry.get('matpo')(rollouts, { estimator: 'dr-grpo' });
  // qa: mean 0.5 → ±0.45; qb: equal → 0
  close(c.sequenceAdvantages.get('a0/p'), 0.45);
  close(c.sequenceAdvantages.get('a1/p'), -0.45);
  close(c.sequenceAdvantages.get('b0/p'), 0);
  // DAPO filter drops qb entirely; its rollouts produce no datums
  const f = creditRegistry.get('matpo')(rollouts, { estimator: 'dr-grpo', dropZeroVarianceGroups: true });
  assert.deepEqual([...f.keptRolloutIds].sort(), ['a0', 'a1']);
  assert.deepEqual(
    buildDatums(rollouts, f).datums.map((d) => d.sequenceId),
    ['a0/p', 'a1/p'],
  );
});

test('unscored rollouts and bad sequences are rejected with a clear message', () => {
  const r = testRollout({ id: 'r', questionId: 'q', rootMask: [0, 1] });
  assert.throws(() => creditRegistry.get('matpo')([r], { estimator: 'grpo' }), /rollout r has no reward/);
  const bad = testRollout({ id: 'b', questionId: 'q', rootMask: [1, 1], reward: 1 });
  const c = creditRegistry.get('matpo')([bad], { estimator: 'grpo' });
  assert.throws(() => buildDatums([bad], c), /first token cannot be trainable/);
});
