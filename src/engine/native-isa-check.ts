/**
 * Child-process check used by native.test.ts: loads the addon with whatever MATPO_ISA the parent set
 * (the ISA is chosen when the addon loads), runs SGEMM (all transposes, odd shapes, accumulate),
 * packed products, attention and log-softmax against the float64 reference, and prints
 * {"isa", "maxErr"} where maxErr is the worst |native − ref| / allowed ratio. Exits 1 when above 1.
 */
import { loadNativeKernels } from './native.ts';
import { reference as R } from './reference.ts';

const K = loadNativeKernels();
let seed = 7;
const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296) * 2 - 1;
const rand = (n: number): Float32Array => Float32Array.from({ length: n }, rnd);
const f64 = (a: Float32Array): Float64Array => Float64Array.from(a);
let maxErr = 0;
function cmp(got: Float32Array, want: Float64Array, allowed: (i: number) => number): void {
  for (let i = 0; i < got.length; i++) {
    const e = Math.abs(got[i] - want[i]) / allowed(i);
    if (!(e <= maxErr)) maxErr = Number.isNaN(e) ? Infinity : Math.max(maxErr, e);
  }
}

for (const threads of [1, 2]) {
  K.setThreads(threads);
  for (const [M, N, Kd] of [
    [1, 1, 1],
    [13, 17, 19],
    [31, 37, 300],
    [150, 70, 3],
    [7, 131, 513],
  ]) {
    for (const tA of [false, true])
      for (const tB of [false, true])
        for (const acc of [false, true]) {
          const A = rand(M * Kd),
            B = rand(Kd * N),
            C0 = rand(M * N),
            C = C0.slice();
          K.sgemm(tA, tB, M, N, Kd, A, B, C, acc);
          const want = f64(C0);
          R.sgemm(tA, tB, M, N, Kd, f64(A), f64(B), want, acc);
          cmp(C, want, () => 2e-6 * Math.sqrt(Kd + 1) * (Kd + 1) + 1e-6);
        }
    const W = rand(N * Kd),
      A = rand(M * Kd),
      C = new Float32Array(M * N);
    K.sgemmPacked(M, A, K.packWeightNT(W, N, Kd), C, false);
    const want = new Float64Array(M * N);
    R.sgemm(false, true, M, N, Kd, f64(A), f64(W), want, false);
    cmp(C, want, () => 2e-6 * Math.sqrt(Kd + 1) * (Kd + 1) + 1e-6);
  }
  const cu = new Int32Array([0, 70, 75]),
    H = 4,
    KV = 2,
    D = 16,
    T = 75;
  const q = rand(T * H * D),
    k = rand(T * KV * D),
    v = rand(T * KV * D);
  const out = new Float32Array(T * H * D),
    lse = new Float32Array(T * H);
  K.attentionForward(out, lse, q, k, v, cu, 2, H, KV, D, 0.25);
  const out64 = new Float64Array(T * H * D),
    lse64 = new Float64Array(T * H);
  R.attentionForward(out64, lse64, f64(q), f64(k), f64(v), cu, 2, H, KV, D, 0.25);
  cmp(out, out64, () => 1e-4);
  cmp(lse, lse64, (i) => 1e-5 * (1 + Math.abs(lse64[i])));
  const V = 1001,
    Tl = 3,
    logits = rand(Tl * V).map((x) => x * 8),
    tg = new Int32Array([0, 500, 1000]);
  const lp = new Float32Array(Tl),
    l2 = new Float32Array(Tl),
    ent = new Float32Array(Tl);
  K.logprobsForward(lp, l2, ent, logits, tg, Tl, V);
  const lp64 = new Float64Array(Tl),
    l64 = new Float64Array(Tl),
    e64 = new Float64Array(Tl);
  R.logprobsForward(lp64, l64, e64, f64(logits), tg, Tl, V);
  cmp(lp, lp64, (i) => 1e-5 * (1 + Math.abs(lp64[i])));
  cmp(ent, e64, (i) => 1e-5 * (1 + Math.abs(e64[i])));
}
console.log(JSON.stringify({ isa: K.isa, maxErr }));
process.exit(maxErr <= 1 ? 0 : 1);
