/**
 * Validates the reference kernels themselves: backward kernels against central finite differences
 * in float64, forward kernels against hand-computed cases and independent formulations.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reference as R, type FloatArray } from './reference.ts';
import { Rng } from '../util/rng.ts';

function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}
function rand64(n: number, r: () => number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}
function dot(a: FloatArray, b: FloatArray): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Checks analytic gradient `grad` of scalar f at `x` (mutated and restored) by central differences. */
function checkGrad(name: string, x: Float64Array, grad: Float64Array, f: () => number, tol = 1e-6): void {
  const h = 1e-6;
  let worst = 0;
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i];
    x[i] = x0 + h;
    const fp = f();
    x[i] = x0 - h;
    const fm = f();
    x[i] = x0;
    const fd = (fp - fm) / (2 * h);
    const err = Math.abs(fd - grad[i]) / Math.max(1, Math.abs(fd));
    if (err > worst) worst = err;
  }
  assert.ok(worst < tol, `${name}: finite-difference mismatch ${worst.toExponential(2)} ≥ ${tol}`);
}

test('sgemm: hand-computed 2×3·3×2 in all transpose variants, accumulate', () => {
  const A = new Float64Array([1, 2, 3, 4, 5, 6]); // 2×3
  const B = new Float64Array([7, 8, 9, 10, 11, 12]); // 3×2
  const want = [58, 64, 139, 154];
  const C = new Float64Array(4);
  R.sgemm(false, false, 2, 2, 3, A, B, C, false);
  assert.deepEqual([...C], want);
  const At = new Float64Array([1, 4, 2, 5, 3, 6]); // 3×2
  const Bt = new Float64Array([7, 9, 11, 8, 10, 12]); // 2×3
  R.sgemm(true, false, 2, 2, 3, At, B, C, false);
  assert.deepEqual([...C], want);
  R.sgemm(false, true, 2, 2, 3, A, Bt, C, false);
  assert.deepEqual([...C], want);
  R.sgemm(true, true, 2, 2, 3, At, Bt, C, true);
  assert.deepEqual(
    [...C],
    want.map((x) => 2 * x),
  );
  const P = R.packWeightNT(Bt, 2, 3);
  R.sgemmPacked(2, A, P, C, false);
  assert.deepEqual([...C], want);
});

test('rmsnorm forward by hand, backward vs finite differences', () => {
  const x = new Float64Array([3, 4]);
  const w = new Float64Array([1, 2]);
  const out = new Float64Array(2);
  const rstd = new Float64Array(1);
  R.rmsnormForward(out, rstd, x, w, 1, 2, 0);
  // rms = sqrt((9+16)/2) = sqrt(12.5)
  assert.ok(Math.abs(rstd[0] - 1 / Math.sqrt(12.5)) < 1e-15);
  assert.ok(Math.abs(out[1] - 8 / Math.sqrt(12.5)) < 1e-14);

  const r = rng(1);
  const T = 3,
    C = 7,
    eps = 1e-5;
  const X = rand64(T * C, r),
    W = rand64(C, r),
    G = rand64(T * C, r);
  const f = (): number => {
    const o = new Float64Array(T * C);
    const s = new Float64Array(T);
    R.rmsnormForward(o, s, X, W, T, C, eps);
    return dot(o, G);
  };
  const o = new Float64Array(T * C);
  const s = new Float64Array(T);
  R.rmsnormForward(o, s, X, W, T, C, eps);
  const dx = new Float64Array(T * C).fill(0),
    dw = new Float64Array(C);
  R.rmsnormBackward(dx, dw, G, X, W, s, T, C);
  checkGrad('rmsnorm dx', X, dx, f);
  checkGrad('rmsnorm dw', W, dw, f);
  // accumulates
  R.rmsnormBackward(dx, dw, G, X, W, s, T, C);
  const dx1 = new Float64Array(T * C),
    dw1 = new Float64Array(C);
  R.rmsnormBackward(dx1, dw1, G, X, W, s, T, C);
  assert.ok(Math.abs(dx[5] - 2 * dx1[5]) < 1e-12);
});

test('rope forward by hand (rotate-half), backward vs finite differences', () => {
  // D=4: pairs (0,2) with freq 1 and (1,3) with freq theta^(-1/2)
  const x = new Float64Array([1, 0, 0, 1]);
  R.ropeForward(x, new Int32Array([2]), 1, 1, 4, 100);
  const a0 = 2,
    a1 = 2 / 10;
  assert.ok(Math.abs(x[0] - Math.cos(a0)) < 1e-15);
  assert.ok(Math.abs(x[2] - Math.sin(a0)) < 1e-15);
  assert.ok(Math.abs(x[1] - -Math.sin(a1)) < 1e-15);
  assert.ok(Math.abs(x[3] - Math.cos(a1)) < 1e-15);

  const r = rng(2);
  const T = 3,
    H = 2,
    D = 8;
  const pos = new Int32Array([0, 5, 17]);
  const X = rand64(T * H * D, r),
    G = rand64(T * H * D, r);
  const f = (): number => {
    const y = X.slice();
    R.ropeForward(y, pos, T, H, D, 10000);
    return dot(y, G);
  };
  const dx = G.slice();
  R.ropeBackward(dx, pos, T, H, D, 10000);
  checkGrad('rope dx', X, dx, f);
});

function seqAttention(cu: Int32Array, B: number, H: number, KV: number, D: number, r: () => number) {
  const T = cu[B];
  return {
    q: rand64(T * H * D, r),
    k: rand64(T * KV * D, r),
    v: rand64(T * KV * D, r),
    out: new Float64Array(T * H * D),
    lse: new Float64Array(T * H),
    T,
  };
}

test('attention: backward vs finite differences, sequences isolated, decode matches forward', () => {
  const r = rng(3);
  const B = 2,
    H = 4,
    KV = 2,
    D = 4,
    scale = 0.5;
  const cu = new Int32Array([0, 3, 7]);
  const a = seqAttention(cu, B, H, KV, D, r);
  const G = rand64(a.T * H * D, r);
  const f = (): number => {
    const o = new Float64Array(a.T * H * D),
      l = new Float64Array(a.T * H);
    R.attentionForward(o, l, a.q, a.k, a.v, cu, B, H, KV, D, scale);
    return dot(o, G);
  };
  R.attentionForward(a.out, a.lse, a.q, a.k, a.v, cu, B, H, KV, D, scale);
  // first token of a sequence sees only itself: out = v of its own kv head
  for (let d = 0; d < D; d++) assert.ok(Math.abs(a.out[(3 * H + 3) * D + d] - a.v[(3 * KV + 1) * D + d]) < 1e-15);
  const dq = new Float64Array(a.q.length),
    dk = new Float64Array(a.k.length),
    dv = new Float64Array(a.v.length);
  R.attentionBackward(dq, dk, dv, G, a.q, a.k, a.v, a.out, a.lse, cu, B, H, KV, D, scale);
  checkGrad('attention dq', a.q, dq, f);
  checkGrad('attention dk', a.k, dk, f);
  checkGrad('attention dv', a.v, dv, f);

  // decode: put each sequence in its own cache slot and query every position
  const S = 5;
  const kc = new Float64Array(2 * S * KV * D),
    vc = new Float64Array(2 * S * KV * D);
  const slot = new Int32Array(a.T),
    pos = new Int32Array(a.T);
  for (let b = 0; b < B; b++) {
    for (let t = cu[b]; t < cu[b + 1]; t++) {
      const p = t - cu[b];
      slot[t] = 1 - b;
      pos[t] = p;
      for (let i = 0; i < KV * D; i++) {
        kc[((1 - b) * S + p) * KV * D + i] = a.k[t * KV * D + i];
        vc[((1 - b) * S + p) * KV * D + i] = a.v[t * KV * D + i];
      }
    }
  }
  const od = new Float64Array(a.T * H * D);
  R.attentionDecode(od, a.q, kc, vc, slot, pos, a.T, S, H, KV, D, scale);
  for (let i = 0; i < od.length; i++) assert.ok(Math.abs(od[i] - a.out[i]) < 1e-13);
});

test('swiglu backward vs finite differences', () => {
  const r = rng(4);
  const n = 11;
  const g = rand64(n, r, 4),
    u = rand64(n, r),
    G = rand64(n, r);
  const f = (): number => {
    const o = new Float64Array(n);
    R.swigluForward(o, g, u, n);
    return dot(o, G);
  };
  const dg = new Float64Array(n),
    du = new Float64Array(n);
  R.swigluBackward(dg, du, G, g, u, n);
  checkGrad('swiglu dgate', g, dg, f);
  checkGrad('swiglu dup', u, du, f);
});

test('embedding gather and scatter-add (repeated ids)', () => {
  const table = new Float64Array([1, 2, 3, 4, 5, 6]); // V=3, C=2
  const ids = new Int32Array([2, 0, 2]);
  const out = new Float64Array(6);
  R.embeddingForward(out, table, ids, 3, 2);
  assert.deepEqual([...out], [5, 6, 1, 2, 5, 6]);
  const dt = new Float64Array(6).fill(1);
  R.embeddingBackward(dt, new Float64Array([1, 1, 2, 2, 3, 3]), ids, 3, 2);
  assert.deepEqual([...dt], [3, 3, 1, 1, 5, 5]);
});

test('logprobs: forward by hand, backward (with entropy) vs finite differences', () => {
  const logits = new Float64Array([0, Math.log(3)]); // p = [1/4, 3/4]
  const lp = new Float64Array(1),
    lse = new Float64Array(1),
    ent = new Float64Array(1);
  R.logprobsForward(lp, lse, ent, logits, new Int32Array([1]), 1, 2);
  assert.ok(Math.abs(lp[0] - Math.log(0.75)) < 1e-15);
  assert.ok(Math.abs(ent[0] - -(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75))) < 1e-15);

  const r = rng(5);
  const T = 3,
    V = 9;
  const Z = rand64(T * V, r, 3);
  const tg = new Int32Array([0, 8, 4]);
  const gl = rand64(T, r),
    ge = rand64(T, r);
  const f = (): number => {
    const a = new Float64Array(T),
      l = new Float64Array(T),
      e = new Float64Array(T);
    R.logprobsForward(a, l, e, Z, tg, T, V);
    return dot(a, gl) + dot(e, ge);
  };
  const a = new Float64Array(T),
    l = new Float64Array(T),
    e = new Float64Array(T);
  R.logprobsForward(a, l, e, Z, tg, T, V);
  const dz = new Float64Array(T * V).fill(123); // overwritten, not accumulated
  R.logprobsBackward(dz, gl, ge, Z, l, tg, T, V);
  checkGrad('logprobs dlogits', Z, dz, f);
  const f2 = (): number => {
    const b = new Float64Array(T),
      m = new Float64Array(T);
    R.logprobsForward(b, m, null, Z, tg, T, V);
    return dot(b, gl);
  };
  R.logprobsBackward(dz, gl, null, Z, l, tg, T, V);
  checkGrad('logprobs dlogits (no entropy)', Z, dz, f2);
});

test('adamw one step by hand; sumSquares', () => {
  const p = new Float64Array([1]),
    g = new Float64Array([0.5]),
    m = new Float64Array([0]),
    v = new Float64Array([0]);
  R.adamw(p, g, m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.01, 1, 2);
  // g' = 1; m = 0.1, v = 0.001; mhat = 1, vhat = 1; p = 1 − 0.001 − 0.1/(1+1e-8)
  assert.ok(Math.abs(m[0] - 0.1) < 1e-15 && Math.abs(v[0] - 0.001) < 1e-15);
  assert.ok(Math.abs(p[0] - (1 - 0.001 - 0.1 / (1 + 1e-8))) < 1e-14);
  assert.equal(R.sumSquares(new Float32Array([1, 2, 3]), 3), 14);
});
