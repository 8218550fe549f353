// The five built-in Tinker losses against hand-computed values (three tokens, worked out on paper
// below), their derivatives against central finite differences in float64, and their config checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MatpoError } from '../core/errors.ts';
import { LOSS_NAMES, datumLoss, resolveLossConfig, type LossInputs } from './losses.ts';
import type { DenseTensor } from './tensor-data.ts';

const t = (values: number[], dtype: 'int64' | 'float32' = 'float32'): DenseTensor => ({
  dtype,
  shape: [values.length],
  data: Float64Array.from(values),
});

// ℓ = [-1, -2, -1], q = [-1.5, -1.5, -1]  →  r = [e^0.5, e^-0.5, 1] = [1.6487212707, 0.6065306597, 1];  A = [2, -1, 3]
const ell = [-1, -2, -1];
const rl: LossInputs = { target_tokens: t([5, 6, 7], 'int64'), logprobs: t([-1.5, -1.5, -1]), advantages: t([2, -1, 3]) };
const close = (a: ArrayLike<number>, b: number[], tol = 1e-9) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < b.length; i++) assert.ok(Math.abs(a[i] - b[i]) < tol, `[${i}] ${a[i]} vs ${b[i]}`);
};

test('cross_entropy: L = -Σ w·ℓ, ∂L/∂ℓ = -w (weights [1, 0.5, 0] → 1 + 1 + 0 = 2); no weights counts every token', () => {
  const r = datumLoss('cross_entropy', {}, { target_tokens: rl.target_tokens, weights: t([1, 0.5, 0]) }, ell);
  assert.ok(Math.abs(r.loss - 2) < 1e-12);
  close(r.dLogprobs, [-1, -0.5, 0]);
  close(r.elementwise, [1, 1, 0]);
  assert.ok(Math.abs(datumLoss('cross_entropy', {}, { target_tokens: rl.target_tokens }, ell).loss - 4) < 1e-12);
});

test('importance_sampling: L = -Σ r·A = -(3.2974425414 - 0.6065306597 + 3); optional weights scale each token', () => {
  const r = datumLoss('importance_sampling', {}, rl, ell);
  assert.ok(Math.abs(r.loss - -5.6909118817) < 1e-9);
  close(r.dLogprobs, [-3.2974425414, 0.6065306597, -3]);
  const w = datumLoss('importance_sampling', {}, { ...rl, weights: t([1, 1, 0.5]) }, ell);
  assert.ok(Math.abs(w.loss - -4.1909118817) < 1e-9);
});

// token 0 is clipped at 1.2·2, token 1 at 0.8·(-1), token 2 is not: L = -2.4 + 0.8 - 3 = -4.6; clipped tokens have no gradient
test('ppo (0.8, 1.2): L = -4.6 on the worked example, gradient only where unclipped', () => {
  const r = datumLoss('ppo', resolveLossConfig('ppo', {}), rl, ell);
  assert.ok(Math.abs(r.loss - -4.6) < 1e-12);
  close(r.dLogprobs, [0, 0, -3]);
  // a wide clip range leaves every token unclipped: the same as importance_sampling
  const wide = datumLoss('ppo', resolveLossConfig('ppo', { clip_low_threshold: 0.1, clip_high_threshold: 10 }), rl, ell);
  assert.ok(Math.abs(wide.loss - -5.6909118817) < 1e-9);
});

test('cispo: L = -Σ sg(clip(r))·ℓ·A; default (0, 4) leaves r as is → 5.084381222; high 1.2 clips token 0 → 4.1869386806', () => {
  const r = datumLoss('cispo', resolveLossConfig('cispo', {}), rl, ell);
  assert.ok(Math.abs(r.loss - 5.084381222) < 1e-9);
  close(r.dLogprobs, [-3.2974425414, 0.6065306597, -3]);
  const c = datumLoss('cispo', resolveLossConfig('cispo', { clip_high_threshold: 1.2 }), rl, ell);
  assert.ok(Math.abs(c.loss - 4.1869386806) < 1e-9);
  close(c.dLogprobs, [-2.4, 0.6065306597, -3]);
});

test('dro (β = 0.1 default): L = -Σ (ℓ·A - ½β(ℓ-q)²) = 2.0125 - 1.9875 + 3 = 3.025; ∂L/∂ℓ = -A + β(ℓ-q)', () => {
  const r = datumLoss('dro', resolveLossConfig('dro', {}), rl, ell);
  assert.ok(Math.abs(r.loss - 3.025) < 1e-12);
  close(r.dLogprobs, [-1.95, 0.95, -3]);
  const b = datumLoss('dro', resolveLossConfig('dro', { beta: 1 }), rl, ell);
  assert.ok(Math.abs(b.loss - (2.125 - 1.875 + 3)) < 1e-12);
});

// away from the clip kinks; cispo's gradient holds its (stop-gradient) ratio fixed
test('every loss: ∂L/∂ℓ equals a central finite difference of L (float64)', () => {
  const inputs: LossInputs = {
    target_tokens: t([1, 2, 3, 4], 'int64'),
    logprobs: t([-0.7, -2.1, -0.2, -1.3]),
    advantages: t([0.5, -1.5, 2, -0.25]),
    weights: t([1, 0.3, 2, 0.7]),
  };
  const at = [-0.9, -1.6, -0.45, -1.2];
  for (const name of LOSS_NAMES) {
    const cfg = resolveLossConfig(name, {});
    const g = datumLoss(name, cfg, inputs, at).dLogprobs;
    if (name === 'cispo') {
      // sg(clip(r)): the gradient is that of -Σ w·c·ℓ·A with c fixed at the current ℓ
      at.forEach((l, i) => {
        const c = Math.min(4, Math.max(0, Math.exp(l - inputs.logprobs!.data[i])));
        assert.ok(Math.abs(g[i] - -inputs.weights!.data[i] * c * inputs.advantages!.data[i]) < 1e-12);
      });
      continue;
    }
    for (let i = 0; i < at.length; i++) {
      const h = 1e-6;
      const up = [...at];
      const dn = [...at];
      up[i] += h;
      dn[i] -= h;
      const fd = (datumLoss(name, cfg, inputs, up).loss - datumLoss(name, cfg, inputs, dn).loss) / (2 * h);
      assert.ok(Math.abs(fd - g[i]) < 1e-6, `${name}[${i}]: analytic ${g[i]} vs finite difference ${fd}`);
    }
  }
});

test('loss names and configs are checked by name', () => {
  const fails = (fn: () => unknown, message: string) => assert.throws(fn, (e: unknown) => e instanceof MatpoError && e.message === message);
  fails(
    () => resolveLossConfig('ppo2', {}),
    'loss_fn: unknown loss "ppo2"; available: cross_entropy, importance_sampling, ppo, cispo, dro',
  );
  fails(
    () => resolveLossConfig('ppo', { eps: 0.2 }),
    'loss_fn_config.eps: not a setting of ppo (known: clip_low_threshold, clip_high_threshold)',
  );
  fails(() => resolveLossConfig('cross_entropy', { beta: 1 }), 'loss_fn_config.beta: not a setting of cross_entropy (it takes none)');
  fails(
    () => resolveLossConfig('ppo', { clip_low_threshold: 1.5 }),
    'loss_fn_config.clip_low_threshold: must not exceed clip_high_threshold (1.5 > 1.2)',
  );
  assert.deepEqual(resolveLossConfig('cispo', null), { clip_low_threshold: 0, clip_high_threshold: 4 });
});
