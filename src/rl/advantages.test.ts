import { test } from 'node:test';
import assert from 'node:assert/strict';
import { estimatorRegistry, filterZeroVarianceGroups } from './advantages.ts';

const closeAll = (a: number[], b: number[], tol = 1e-12) => {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) <= tol, `[${i}] ${x} vs ${b[i]}`));
};

test('registry names', () => {
  assert.deepEqual(estimatorRegistry.names(), ['dr-grpo', 'grpo', 'rloo']);
  assert.throws(() => estimatorRegistry.get('ppo'), /unknown advantage estimator "ppo"; available: dr-grpo, grpo, rloo/);
});

test('grpo: mean, unbiased std, +1e-6', () => {
  // R = [1,0,0,1]: mean 0.5, Σ(R−m)² = 4·0.25 = 1, var = 1/3, std = 0.5773502692
  // A = ±0.5 / (0.5773502692 + 1e-6) = ±0.8660239...
  const s = 0.5773502691896258;
  closeAll(estimatorRegistry.get('grpo')([1, 0, 0, 1]).advantagesG, [
    0.5 / (s + 1e-6),
    -0.5 / (s + 1e-6),
    -0.5 / (s + 1e-6),
    0.5 / (s + 1e-6),
  ]);
  closeAll(estimatorRegistry.get('grpo')([1, 0, 0, 1]).advantagesG, [0.866024, -0.866024, -0.866024, 0.866024], 1e-6);
  // R = [2, 4, 9]: mean 5, dev [-3,-1,4], Σ = 9+1+16 = 26, var = 13, std = 3.605551275
  const s2 = Math.sqrt(13);
  closeAll(estimatorRegistry.get('grpo')([2, 4, 9]).advantagesG, [-3 / (s2 + 1e-6), -1 / (s2 + 1e-6), 4 / (s2 + 1e-6)]);
});

test('grpo: group of one uses mean 0, std 1 (A = R/(1+1e-6)); equal rewards give 0', () => {
  closeAll(estimatorRegistry.get('grpo')([3]).advantagesG, [3 / (1 + 1e-6)]);
  closeAll(estimatorRegistry.get('grpo')([2, 2]).advantagesG, [0, 0]);
});

test('dr-grpo: R − mean, no std', () => {
  closeAll(estimatorRegistry.get('dr-grpo')([1, 0, 0, 1]).advantagesG, [0.5, -0.5, -0.5, 0.5]);
  closeAll(estimatorRegistry.get('dr-grpo')([2, 4, 9]).advantagesG, [-3, -1, 4]);
  closeAll(estimatorRegistry.get('dr-grpo')([3]).advantagesG, [3]);
});

test('rloo: leave-one-out baseline', () => {
  // [1,2,6]: A0 = 1 − (2+6)/2 = −3; A1 = 2 − (1+6)/2 = −1.5; A2 = 6 − (1+2)/2 = 4.5
  closeAll(estimatorRegistry.get('rloo')([1, 2, 6]).advantagesG, [-3, -1.5, 4.5]);
  // [1,0,0,1]: A0 = 1 − 1/3 = 2/3, A1 = 0 − 2/3
  closeAll(estimatorRegistry.get('rloo')([1, 0, 0, 1]).advantagesG, [2 / 3, -2 / 3, -2 / 3, 2 / 3]);
  closeAll(estimatorRegistry.get('rloo')([5]).advantagesG, [5]);
});

test('estimators reject empty groups and non-finite rewards', () => {
  for (const name of estimatorRegistry.names()) {
    assert.throws(() => estimatorRegistry.get(name)([]), /empty group/);
    assert.throws(() => estimatorRegistry.get(name)([1, NaN]), /not finite/);
  }
});

test('DAPO filter drops groups with all-equal rewards (and groups of one)', () => {
  const { kept, metrics } = filterZeroVarianceGroups([[1, 1], [0, 1], [0.5], [2, 2, 2], [0, 0, 0.9]]);
  assert.deepEqual(kept, [1, 4]);
  assert.equal(metrics.groups_dropped, 3);
});
