import { test } from 'node:test';
import assert from 'node:assert/strict';
import { registeredScorer, rewardRegistry, scoreRollout } from './rewards.ts';
import { defaultRewardWeights } from '../testing/config-defaults.ts';

const DEFAULT_REWARD_WEIGHTS = defaultRewardWeights();
import { UnknownNameError } from '../core/errors.ts';
import { testRollout } from '../testing/rollouts.ts';

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);
const exact = (pred: string | null, golds: readonly string[]) => (pred !== null && golds.includes(pred) ? 1 : 0);

test('matpo reward: 0.9·acc + 0.5·(0.1·fmt(p) + 0.1·mean_j fmt(w_j))', () => {
  const r = rewardRegistry.get('matpo')({ accuracy: 1, formatPlanner: 0.5, formatWorkers: [1, 0.5] }, DEFAULT_REWARD_WEIGHTS);
  // mean_j fmt = 0.75; 0.9·1 + 0.5·(0.1·0.5 + 0.1·0.75) = 0.9 + 0.5·0.125 = 0.9625
  close(r.reward.total, 0.9625);
  close(r.reward.formatWorkers, 0.75);
  close(r.metrics.reward, 0.9625);
});

test('matpo reward without workers uses noWorkerFormat', () => {
  const f = rewardRegistry.get('matpo');
  // acc 0, fmt(p)=1, no workers → mean_j fmt := 1: 0.5·(0.1 + 0.1) = 0.1
  close(f({ accuracy: 0, formatPlanner: 1, formatWorkers: [] }, DEFAULT_REWARD_WEIGHTS).reward.total, 0.1);
  // with noWorkerFormat = 0: 0.5·0.1 = 0.05
  close(f({ accuracy: 0, formatPlanner: 1, formatWorkers: [] }, { ...DEFAULT_REWARD_WEIGHTS, noWorkerFormat: 0 }).reward.total, 0.05);
});

test('single-agent reward: 0.9·acc + 0.1·fmt', () => {
  // 0.9·1 + 0.1·0.5 = 0.95
  close(rewardRegistry.get('single')({ accuracy: 1, formatPlanner: 0.5, formatWorkers: [] }, DEFAULT_REWARD_WEIGHTS).reward.total, 0.95);
});

test('weights come from the caller', () => {
  const w = { ...DEFAULT_REWARD_WEIGHTS, accuracy: 1, formatScale: 1, formatPlanner: 0.2, formatWorkers: 0.3 };
  // 1·1 + 1·(0.2·0 + 0.3·(1+0)/2) = 1.15
  close(rewardRegistry.get('matpo')({ accuracy: 1, formatPlanner: 0, formatWorkers: [1, 0] }, w).reward.total, 1.15);
});

test("scoreRollout uses the scorer and the sequences' format scores, and fills rollout.reward", async () => {
  const r = testRollout({
    id: 'r',
    questionId: 'q',
    rootMask: [0, 1],
    workerMasks: [[0, 1]],
    answer: 'Paris',
    gold: ['Paris'],
    formatPlanner: 1,
    formatWorkers: [0],
  });
  const out = await scoreRollout(r, exact, DEFAULT_REWARD_WEIGHTS);
  // 0.9 + 0.5·(0.1·1 + 0.1·0) = 0.95
  close(out.reward.total, 0.95);
  assert.equal(r.reward?.total, out.reward.total);
  const s = testRollout({
    id: 's',
    questionId: 'q',
    mode: 'single',
    rootMask: [0, 1],
    answer: 'Rome',
    gold: ['Paris'],
    formatPlanner: 0.5,
  });
  close((await scoreRollout(s, exact, DEFAULT_REWARD_WEIGHTS)).reward.total, 0.05); // 0.9·0 + 0.1·0.5
});

test('scoreRollout rejects out-of-range scores; unknown reward names list the valid ones', async () => {
  const r = testRollout({ id: 'r', questionId: 'q', rootMask: [0, 1], answer: 'x' });
  await assert.rejects(
    scoreRollout(r, () => 2, DEFAULT_REWARD_WEIGHTS),
    /accuracy must be in \[0, 1\]/,
  );
  await assert.rejects(
    scoreRollout(r, exact, DEFAULT_REWARD_WEIGHTS, 'nope'),
    (e: unknown) => e instanceof UnknownNameError && /available: matpo, single/.test(e.message),
  );
  assert.throws(() => rewardRegistry.register('matpo', () => ({}) as never), /already registered/);
});

test('registered scorers from rl/scoring.ts plug in as answer scorers', async () => {
  const r = testRollout({ id: 'r', questionId: 'q', rootMask: [0, 1], answer: 'The  Paris!', gold: ['paris'], formatPlanner: 1 });
  // normalised exact match: "the paris!" → "paris" = gold → acc 1 → 0.9 + 0.5·(0.1 + 0.1·1) = 1.0
  close((await scoreRollout(r, registeredScorer('exact_match'), DEFAULT_REWARD_WEIGHTS)).reward.total, 1.0);
  assert.throws(() => registeredScorer('em'), /unknown scorer "em"; available: .*exact_match/);
});
