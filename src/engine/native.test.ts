/**
 * Native kernels against the reference kernels (computed in float64) on random inputs and awkward
 * shapes (1, primes, sizes that cross the register and cache blocks), all transpose variants,
 * accumulate on/off, on 1 and 2 threads; the portable ISA path is checked in a child process.
 * Max abs/rel errors are printed as test diagnostics.
 *
 * Tolerances: SGEMM and attention: |native − ref| ≤ 2e-6·√K·(Σ|a·b|) + 1e-6 per element, i.e. float32
 * rounding of the sum of products; elementwise kernels: 1e-5 relative + 1e-6 absolute.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadNativeKernels, type NativeKernels } from './native.ts';
import { reference as R } from './reference.ts';
import { Rng } from '../util/rng.ts';

const K: NativeKernels = loadNativeKernels();

function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}
const r = rng(12345);
function rand(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}
const f64 = (a: Float32Array): Float64Array => Float64Array.from(a);
const abs64 = (a: Float32Array): Float64Array => Float64Array.from(a, Math.abs);

/** Compares got vs want elementwise with |d| ≤ rel·scale_i + absTol; returns max abs/rel errors. */
function compare(
  name: string,
  got: Float32Array,
  want: Float64Array,
  rel: number,
  absTol: number,
  scale?: Float64Array,
): { abs: number; rel: number } {
  assert.equal(got.length, want.length, `${name}: length`);
  let maxAbs = 0,
    maxRel = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const s = scale ? scale[i] : Math.abs(want[i]);
    if (!(d <= rel * s + absTol))
      assert.fail(
        `${name}: element ${i}: native ${got[i]} vs reference ${want[i]} ` +
          `(|d| = ${d.toExponential(2)}, allowed ${(rel * s + absTol).toExponential(2)})`,
      );
    maxAbs = Math.max(maxAbs, d);
    maxRel = Math.max(maxRel, d / Math.max(Math.abs(want[i]), 1e-3));
  }
  return { abs: maxAbs, rel: maxRel };
}

const worst = new Map<string, { abs: number; rel: number }>();
function note(kernel: string, e: { abs: number; rel: number }): void {
  const w = worst.get(kernel) ?? { abs: 0, rel: 0 };
  worst.set(kernel, { abs: Math.max(w.abs, e.abs), rel: Math.max(w.rel, e.rel) });
}

function checkSgemm(tA: boolean, tB: boolean, M: number, N: number, Kd: number, acc: boolean): void {
  const A = rand(M * Kd),
    B = rand(Kd * N),
    C0 = rand(M * N);
  const C = C0.slice();
  K.sgemm(tA, tB, M, N, Kd, A, B, C, acc);
  const want = f64(C0);
  R.sgemm(tA, tB, M, N, Kd, f64(A), f64(B), want, acc);
  const mag = new Float64Array(M * N);
  R.sgemm(tA, tB, M, N, Kd, abs64(A), abs64(B), mag, false);
  if (acc) for (let i = 0; i < mag.length; i++) mag[i] += Math.abs(C0[i]);
  note(
    'sgemm',
    compare(`sgemm ${tA ? 'T' : 'N'}${tB ? 'T' : 'N'} ${M}x${N}x${Kd} acc=${acc}`, C, want, 2e-6 * Math.sqrt(Kd + 1), 1e-6, mag),
  );
}

const shapes: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 3],
  [5, 1, 9],
  [3, 5, 1],
  [2, 3, 0],
  [13, 17, 19],
  [6, 16, 8],
  [14, 32, 31],
  [31, 37, 41],
  [97, 61, 300],
  [150, 33, 257],
  [7, 131, 513],
  [211, 67, 29],
  [64, 4103, 3],
];

test('sgemm matches reference: all transposes, accumulate, odd shapes, 1 and 2 threads', () => {
  for (const threads of [1, 2]) {
    K.setThreads(threads);
    for (const [M, N, Kd] of shapes) {
      for (const tA of [false, true]) for (const tB of [false, true]) for (const acc of [false, true]) checkSgemm(tA, tB, M, N, Kd, acc);
    }
  }
  // K = 0 with accumulate=false zeroes C
  const C = new Float32Array([1, 2, 3]);
  K.sgemm(false, false, 1, 3, 0, new Float32Array(0), new Float32Array(0), C, false);
  assert.deepEqual([...C], [0, 0, 0]);
  K.setThreads(2);
});

test('subarray views (non-zero byteOffset) are read and written in place', () => {
  const M = 5,
    N = 7,
    Kd = 9;
  const big = rand(1000);
  const A = big.subarray(13, 13 + M * Kd),
    B = big.subarray(101, 101 + Kd * N);
  const out = new Float32Array(200);
  const C = out.subarray(50, 50 + M * N);
  K.sgemm(false, false, M, N, Kd, A, B, C, false);
  const want = new Float32Array(M * N);
  K.sgemm(false, false, M, N, Kd, A.slice(), B.slice(), want, false);
  assert.deepEqual(C, want);
  assert.ok(out.subarray(0, 50).every((x) => x === 0) && out.subarray(50 + M * N).every((x) => x === 0));
  const ids = new Int32Array([9, 9, 1, 2]).subarray(2);
  const table = rand(12),
    e = new Float32Array(6);
  K.embeddingForward(e, table.subarray(3), ids, 2, 3); // rows 1 and 2 of the 3-wide table starting at 3
  assert.deepEqual([...e], [...table.subarray(6, 12)]);
});

test('packed weight products match reference for small and larger M', () => {
  for (const threads of [1, 2]) {
    K.setThreads(threads);
    for (const [M, N, Kd] of [
      [1, 1, 1],
      [1, 257, 300],
      [3, 97, 31],
      [17, 130, 513],
      [64, 33, 64],
    ] as const) {
      const W = rand(N * Kd),
        A = rand(M * Kd),
        C0 = rand(M * N);
      const P = K.packWeightNT(W, N, Kd);
      for (const acc of [false, true]) {
        const C = C0.slice();
        K.sgemmPacked(M, A, P, C, acc);
        const want = f64(C0);
        R.sgemm(false, true, M, N, Kd, f64(A), f64(W), want, acc);
        const mag = new Float64Array(M * N);
        R.sgemm(false, true, M, N, Kd, abs64(A), abs64(W), mag, false);
        if (acc) for (let i = 0; i < mag.length; i++) mag[i] += Math.abs(C0[i]);
        note('sgemmPacked', compare(`sgemmPacked ${M}x${N}x${Kd}`, C, want, 2e-6 * Math.sqrt(Kd + 1), 1e-6, mag));
      }
    }
  }
  assert.throws(
    () => K.sgemmPacked(1, new Float32Array(3), R.packWeightNT(new Float32Array(3), 1, 3), new Float32Array(1), false),
    /native packWeightNT/,
  );
});

test('rmsnorm, rope, swiglu, embedding, adamw, sumSquares match reference', () => {
  for (const threads of [1, 2]) {
    K.setThreads(threads);
    for (const [T, C] of [
      [1, 1],
      [3, 7],
      [37, 769],
      [130, 64],
    ]) {
      const x = rand(T * C, 3),
        w = rand(C),
        dout = rand(T * C);
      const out = new Float32Array(T * C),
        rstd = new Float32Array(T);
      K.rmsnormForward(out, rstd, x, w, T, C, 1e-5);
      const out64 = new Float64Array(T * C),
        rstd64 = new Float64Array(T);
      R.rmsnormForward(out64, rstd64, f64(x), f64(w), T, C, 1e-5);
      note('rmsnormForward', compare('rmsnorm out', out, out64, 1e-5, 1e-6));
      note('rmsnormForward', compare('rmsnorm rstd', rstd, rstd64, 1e-5, 1e-6));
      const dx0 = rand(T * C),
        dw0 = rand(C);
      const dx = dx0.slice(),
        dw = dw0.slice();
      K.rmsnormBackward(dx, dw, dout, x, w, rstd, T, C);
      const dx64 = f64(dx0),
        dw64 = f64(dw0);
      R.rmsnormBackward(dx64, dw64, f64(dout), f64(x), f64(w), f64(rstd), T, C);
      note('rmsnormBackward', compare('rmsnorm dx', dx, dx64, 1e-5, 1e-5));
      note('rmsnormBackward', compare('rmsnorm dweight', dw, dw64, 1e-5, 1e-5 * Math.sqrt(T)));
    }
    for (const [T, H, D] of [
      [1, 1, 2],
      [5, 3, 64],
      [41, 2, 18],
    ]) {
      const x = rand(T * H * D);
      const pos = Int32Array.from({ length: T }, () => Math.floor(r() * 4000));
      const y = x.slice(),
        y64 = f64(x);
      K.ropeForward(y, pos, T, H, D, 10000);
      R.ropeForward(y64, pos, T, H, D, 10000);
      note('ropeForward', compare('rope forward', y, y64, 1e-5, 2e-6));
      K.ropeBackward(y, pos, T, H, D, 10000);
      R.ropeBackward(y64, pos, T, H, D, 10000);
      note('ropeBackward', compare('rope backward', y, y64, 1e-5, 4e-6));
    }
    for (const n of [1, 31, 70001]) {
      const g = rand(n, 6),
        u = rand(n),
        d = rand(n);
      const o = new Float32Array(n),
        o64 = new Float64Array(n);
      K.swigluForward(o, g, u, n);
      R.swigluForward(o64, f64(g), f64(u), n);
      note('swigluForward', compare('swiglu out', o, o64, 1e-5, 1e-6));
      const dg0 = rand(n),
        du0 = rand(n);
      const dg = dg0.slice(),
        du = du0.slice(),
        dg64 = f64(dg0),
        du64 = f64(du0);
      K.swigluBackward(dg, du, d, g, u, n);
      R.swigluBackward(dg64, du64, f64(d), f64(g), f64(u), n);
      note('swigluBackward', compare('swiglu dgate', dg, dg64, 1e-5, 1e-6));
      note('swigluBackward', compare('swiglu dup', du, du64, 1e-5, 1e-6));
    }
    {
      const V = 11,
        C = 67,
        T = 53;
      const table = rand(V * C),
        ids = Int32Array.from({ length: T }, () => Math.floor(r() * V));
      const o = new Float32Array(T * C),
        o64 = new Float64Array(T * C);
      K.embeddingForward(o, table, ids, T, C);
      R.embeddingForward(o64, f64(table), ids, T, C);
      note('embeddingForward', compare('embedding forward', o, o64, 0, 0));
      const dt0 = rand(V * C),
        dout = rand(T * C);
      const dt = dt0.slice(),
        dt64 = f64(dt0);
      K.embeddingBackward(dt, dout, ids, T, C);
      R.embeddingBackward(dt64, f64(dout), ids, T, C);
      note('embeddingBackward', compare('embedding backward', dt, dt64, 1e-6, 1e-6));
    }
    for (const n of [1, 9, 100003]) {
      const p = rand(n),
        g = rand(n, 2),
        m = rand(n, 0.1),
        v = Float32Array.from(rand(n, 0.1), Math.abs);
      const p64 = f64(p),
        m64 = f64(m),
        v64 = f64(v);
      K.adamw(p, g, m, v, n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7, 0.5);
      R.adamw(p64, f64(g), m64, v64, n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7, 0.5);
      note('adamw', compare('adamw params', p, p64, 1e-6, 1e-7));
      note('adamw', compare('adamw m', m, m64, 1e-6, 1e-8));
      note('adamw', compare('adamw v', v, v64, 1e-6, 1e-9));
      const x = rand(n, 10);
      const s = K.sumSquares(x, n),
        s64 = R.sumSquares(x, n);
      assert.ok(Math.abs(s - s64) <= 1e-12 * s64, `sumSquares ${s} vs ${s64}`);
    }
  }
});

function attentionCase(lens: number[], H: number, KV: number, D: number, threads: number): void {
  K.setThreads(threads);
  const B = lens.length;
  const cu = new Int32Array(B + 1);
  for (let b = 0; b < B; b++) cu[b + 1] = cu[b] + lens[b];
  const T = cu[B];
  const scale = 1 / Math.sqrt(D);
  const q = rand(T * H * D, 2),
    k = rand(T * KV * D, 2),
    v = rand(T * KV * D);
  const out = new Float32Array(T * H * D),
    lse = new Float32Array(T * H);
  K.attentionForward(out, lse, q, k, v, cu, B, H, KV, D, scale);
  const out64 = new Float64Array(T * H * D),
    lse64 = new Float64Array(T * H);
  R.attentionForward(out64, lse64, f64(q), f64(k), f64(v), cu, B, H, KV, D, scale);
  const tag = `attention lens=[${lens}] H=${H} KV=${KV} D=${D} threads=${threads}`;
  note('attentionForward', compare(`${tag} out`, out, out64, 1e-4, 2e-5));
  note('attentionForward', compare(`${tag} lse`, lse, lse64, 1e-5, 1e-5));

  const dout = rand(T * H * D);
  const dq0 = rand(T * H * D),
    dk0 = rand(T * KV * D),
    dv0 = rand(T * KV * D);
  const dq = dq0.slice(),
    dk = dk0.slice(),
    dv = dv0.slice();
  K.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, cu, B, H, KV, D, scale);
  const dq64 = f64(dq0),
    dk64 = f64(dk0),
    dv64 = f64(dv0);
  R.attentionBackward(dq64, dk64, dv64, f64(dout), f64(q), f64(k), f64(v), out64, lse64, cu, B, H, KV, D, scale);
  note('attentionBackward', compare(`${tag} dq`, dq, dq64, 1e-4, 1e-4));
  note('attentionBackward', compare(`${tag} dk`, dk, dk64, 1e-4, 1e-4));
  note('attentionBackward', compare(`${tag} dv`, dv, dv64, 1e-4, 1e-4));

  // decode against a cache holding the same keys: sequence b lives in slot B-1-b of capacity S
  const S = Math.max(...lens) + 3;
  const kc = rand(B * S * KV * D),
    vc = rand(B * S * KV * D); // garbage beyond each position
  const slot = new Int32Array(T),
    pos = new Int32Array(T);
  for (let b = 0; b < B; b++) {
    for (let t = cu[b]; t < cu[b + 1]; t++) {
      slot[t] = B - 1 - b;
      pos[t] = t - cu[b];
      kc.set(k.subarray(t * KV * D, (t + 1) * KV * D), ((B - 1 - b) * S + pos[t]) * KV * D);
      vc.set(v.subarray(t * KV * D, (t + 1) * KV * D), ((B - 1 - b) * S + pos[t]) * KV * D);
    }
  }
  const od = new Float32Array(T * H * D),
    od64 = new Float64Array(T * H * D);
  K.attentionDecode(od, q, kc, vc, slot, pos, T, S, H, KV, D, scale);
  R.attentionDecode(od64, f64(q), f64(kc), f64(vc), slot, pos, T, S, H, KV, D, scale);
  note('attentionDecode', compare(`${tag} decode`, od, od64, 1e-4, 2e-5));
}

test('attention forward/backward/decode match reference (packed sequences, GQA, blocks crossed)', () => {
  for (const threads of [1, 2]) {
    attentionCase([1, 70, 130, 0, 5], 4, 2, 16, threads);
    attentionCase([64, 3], 3, 3, 7, threads);
    attentionCase([129], 8, 4, 64, threads);
    attentionCase([2, 9], 4, 1, 1, threads);
  }
});

test('logprobs forward/backward (with and without entropy) match reference', () => {
  for (const threads of [1, 2]) {
    K.setThreads(threads);
    for (const [T, V] of [
      [1, 1],
      [3, 2],
      [17, 1001],
      [5, 32771],
    ]) {
      const logits = rand(T * V, 8);
      const tg = Int32Array.from({ length: T }, () => Math.floor(r() * V));
      const lp = new Float32Array(T),
        lse = new Float32Array(T),
        ent = new Float32Array(T);
      K.logprobsForward(lp, lse, ent, logits, tg, T, V);
      const lp64 = new Float64Array(T),
        lse64 = new Float64Array(T),
        ent64 = new Float64Array(T);
      R.logprobsForward(lp64, lse64, ent64, f64(logits), tg, T, V);
      note('logprobsForward', compare('logprob', lp, lp64, 1e-5, 1e-5));
      note('logprobsForward', compare('lse', lse, lse64, 1e-6, 1e-5));
      note('logprobsForward', compare('entropy', ent, ent64, 1e-5, 1e-5));
      const lp2 = new Float32Array(T),
        lse2 = new Float32Array(T);
      K.logprobsForward(lp2, lse2, null, logits, tg, T, V);
      assert.deepEqual(lp2, lp);
      const gl = rand(T),
        ge = rand(T);
      for (const withEntropy of [true, false]) {
        const d = rand(T * V); // overwritten
        K.logprobsBackward(d, gl, withEntropy ? ge : null, logits, lse, tg, T, V);
        const d64 = new Float64Array(T * V);
        R.logprobsBackward(d64, f64(gl), withEntropy ? f64(ge) : null, f64(logits), lse64, tg, T, V);
        note('logprobsBackward', compare(`dlogits entropy=${withEntropy}`, d, d64, 1e-4, 1e-6));
      }
    }
  }
  K.setThreads(2);
});

test('bad arguments give one-line errors naming the kernel and argument', () => {
  assert.throws(
    () => K.sgemm(false, false, 4, 4, 4, new Float32Array(15), new Float32Array(16), new Float32Array(16), false),
    /sgemm: A has 15 elements, needs 16/,
  );
  assert.throws(
    () => K.embeddingForward(new Float32Array(4), new Float32Array(8), new Int32Array([0, 4]), 2, 2),
    /embeddingForward: ids\[1\] = 4 is outside \[0, 4\)/,
  );
  assert.throws(
    () =>
      K.attentionForward(
        new Float32Array(8),
        new Float32Array(2),
        new Float32Array(8),
        new Float32Array(8),
        new Float32Array(8),
        new Int32Array([0, 2]),
        1,
        3,
        2,
        4,
        1,
      ),
    /H \(3\) must be a multiple of KV \(2\)/,
  );
  assert.throws(
    () => K.logprobsForward(new Float32Array(1), new Float32Array(1), null, new Float32Array(3), new Int32Array([3]), 1, 3),
    /targets\[0\] = 3/,
  );
  assert.throws(
    () =>
      K.rmsnormForward(
        new Float32Array(4),
        new Float32Array(2),
        new Float64Array(4) as unknown as Float32Array,
        new Float32Array(2),
        2,
        2,
        1e-5,
      ),
    /x must be a Float32Array/,
  );
});

test('portable and AVX2 code paths (forced with MATPO_ISA in a child process) match reference', () => {
  const child = fileURLToPath(new URL('./native-isa-check.ts', import.meta.url));
  for (const isa of ['portable', 'avx2']) {
    const res = spawnSync(process.execPath, ['--import', 'tsx', child], { env: { ...process.env, MATPO_ISA: isa }, encoding: 'utf8' });
    assert.equal(res.status, 0, `child for ${isa} failed:\n${res.stderr}`);
    const line = res.stdout.trim().split('\n').pop() ?? '';
    const got = JSON.parse(line) as { isa: string; maxErr: number };
    if (isa === 'portable') assert.equal(got.isa, 'portable');
    console.log(`# isa ${got.isa}: max scaled error ${got.maxErr.toExponential(2)}`);
  }
});

test('thread pool: resizing between calls and concurrent use from a worker thread stay correct', async () => {
  const M = 67,
    N = 45,
    Kd = 33;
  const A = rand(M * Kd),
    B = rand(Kd * N);
  const want = new Float32Array(M * N);
  K.setThreads(1);
  K.sgemm(false, false, M, N, Kd, A, B, want, false);
  for (let i = 0; i < 40; i++) {
    K.setThreads(1 + (i % 2));
    const C = new Float32Array(M * N);
    K.sgemm(false, false, M, N, Kd, A, B, C, false);
    assert.deepEqual(C, want, `after resize ${i}`); // same blocking on any thread count: bitwise equal
  }
  K.setThreads(2);
  const { Worker } = await import('node:worker_threads');
  const flags = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(new URL('./native-worker-boot.mjs', import.meta.url), {
    workerData: { A, B, M, N, K: Kd, want, rounds: 300, flags },
  });
  const done = new Promise<boolean>((resolve, reject) => {
    worker.on('message', resolve);
    worker.on('error', reject);
  });
  const t0 = Date.now();
  while (Atomics.load(flags, 0) === 0 && Date.now() - t0 < 20000) Atomics.wait(flags, 0, 0, 5);
  let mainOk = true,
    overlapped = 0;
  while (Atomics.load(flags, 1) === 0 && Date.now() - t0 < 30000) {
    const C = new Float32Array(M * N);
    K.sgemm(false, false, M, N, Kd, A, B, C, false);
    if (C.some((x, j) => x !== want[j])) mainOk = false;
    overlapped++;
  }
  assert.equal(mainOk, true);
  assert.ok(overlapped > 0, 'the main thread ran no product while the worker was running');
  assert.equal(await done, true);
  await worker.terminate();
});

test('report', () => {
  console.log(`# native isa=${K.isa} tile=${K.gemmTile} threads=${K.threads()} self-check=${K.isaSelfCheck.toExponential(2)}`);
  assert.ok(K.isaSelfCheck <= 1, 'load-time self-check of the SIMD path');
  for (const [k, e] of worst) console.log(`# ${k.padEnd(18)} max abs err ${e.abs.toExponential(2)}  max rel err ${e.rel.toExponential(2)}`);
  assert.ok(worst.size >= 15);
});
