/**
 * Reference kernels: naive, obviously-correct TypeScript implementations of every kernel in the
 * contract (`kernels.ts`). They are the definition the native addon is tested against, the fallback
 * when the addon cannot load, and — because every function also accepts Float64Array buffers — the
 * engine for float64 finite-difference gradient checks of the whole model.
 *
 * All sums are accumulated in JS numbers (float64). No blocking, no threads, no cleverness.
 */
import type { Kernels, PackedWeight } from './kernels.ts';

/** Float buffers accepted by the reference kernels (Float64Array for gradient checks). */
export type FloatArray = Float32Array | Float64Array;

/** The reference "packed" weight: just W [N×K] with its shape. */
export class ReferencePackedWeight implements PackedWeight {
  constructor(
    readonly W: FloatArray,
    readonly N: number,
    readonly K: number,
  ) {}
}

function sgemm(
  transA: boolean,
  transB: boolean,
  M: number,
  N: number,
  K: number,
  A: FloatArray,
  B: FloatArray,
  C: FloatArray,
  accumulate: boolean,
): void {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const a = transA ? A[k * M + i] : A[i * K + k];
        const b = transB ? B[j * K + k] : B[k * N + j];
        s += a * b;
      }
      C[i * N + j] = (accumulate ? C[i * N + j] : 0) + s;
    }
  }
}

function packWeightNT(W: FloatArray, N: number, K: number): PackedWeight {
  if (W.length < N * K) throw new RangeError(`packWeightNT: W has ${W.length} elements, need N*K = ${N * K}`);
  return new ReferencePackedWeight(W, N, K);
}

function sgemmPacked(M: number, A: FloatArray, W: PackedWeight, C: FloatArray, accumulate: boolean): void {
  if (!(W instanceof ReferencePackedWeight)) throw new TypeError('sgemmPacked: handle was not made by the reference packWeightNT');
  sgemm(false, true, M, W.N, W.K, A, W.W, C, accumulate);
}

function rmsnormForward(out: FloatArray, rstd: FloatArray, x: FloatArray, weight: FloatArray, T: number, C: number, eps: number): void {
  for (let t = 0; t < T; t++) {
    const o = t * C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[o + c] * x[o + c];
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[t] = r;
    for (let c = 0; c < C; c++) out[o + c] = x[o + c] * r * weight[c];
  }
}

function rmsnormBackward(
  dx: FloatArray,
  dweight: FloatArray,
  dout: FloatArray,
  x: FloatArray,
  weight: FloatArray,
  rstd: FloatArray,
  T: number,
  C: number,
): void {
  // out_c = x_c r w_c with r = (Σx²/C + eps)^(-1/2), dr/dx_j = -r³ x_j / C
  for (let t = 0; t < T; t++) {
    const o = t * C;
    const r = rstd[t];
    let dot = 0; // Σ_c dout_c w_c x_c
    for (let c = 0; c < C; c++) dot += dout[o + c] * weight[c] * x[o + c];
    for (let c = 0; c < C; c++) {
      dx[o + c] += r * dout[o + c] * weight[c] - ((r * r * r) / C) * dot * x[o + c];
      dweight[c] += dout[o + c] * x[o + c] * r;
    }
  }
}

function rope(x: FloatArray, positions: Int32Array, T: number, H: number, D: number, theta: number, sign: 1 | -1): void {
  const half = D >> 1;
  for (let t = 0; t < T; t++) {
    const p = positions[t];
    for (let h = 0; h < H; h++) {
      const o = (t * H + h) * D;
      for (let i = 0; i < half; i++) {
        const freq = Math.pow(theta, (-2 * i) / D);
        const ang = p * freq;
        const c = Math.cos(ang);
        const s = sign * Math.sin(ang);
        const x1 = x[o + i];
        const x2 = x[o + i + half];
        x[o + i] = x1 * c - x2 * s;
        x[o + i + half] = x2 * c + x1 * s;
      }
    }
  }
}

function ropeForward(x: FloatArray, positions: Int32Array, T: number, H: number, D: number, theta: number): void {
  rope(x, positions, T, H, D, theta, 1);
}

function ropeBackward(dx: FloatArray, positions: Int32Array, T: number, H: number, D: number, theta: number): void {
  rope(dx, positions, T, H, D, theta, -1);
}

function attentionForward(
  out: FloatArray,
  lse: FloatArray,
  q: FloatArray,
  k: FloatArray,
  v: FloatArray,
  cuSeqlens: Int32Array,
  B: number,
  H: number,
  KV: number,
  D: number,
  scale: number,
): void {
  const group = H / KV;
  for (let b = 0; b < B; b++) {
    const s0 = cuSeqlens[b];
    const s1 = cuSeqlens[b + 1];
    for (let t = s0; t < s1; t++) {
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / group);
        const qo = (t * H + h) * D;
        const n = t - s0 + 1;
        const scores = new Float64Array(n);
        let mx = -Infinity;
        for (let j = s0; j <= t; j++) {
          const ko = (j * KV + kvh) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += q[qo + d] * k[ko + d];
          s *= scale;
          scores[j - s0] = s;
          if (s > mx) mx = s;
        }
        let sum = 0;
        for (let j = 0; j < n; j++) sum += Math.exp(scores[j] - mx);
        const l = mx + Math.log(sum);
        lse[t * H + h] = l;
        const acc = new Float64Array(D);
        for (let j = s0; j <= t; j++) {
          const p = Math.exp(scores[j - s0] - l);
          const vo = (j * KV + kvh) * D;
          for (let d = 0; d < D; d++) acc[d] += p * v[vo + d];
        }
        for (let d = 0; d < D; d++) out[qo + d] = acc[d];
      }
    }
  }
}

function attentionBackward(
  dq: FloatArray,
  dk: FloatArray,
  dv: FloatArray,
  dout: FloatArray,
  q: FloatArray,
  k: FloatArray,
  v: FloatArray,
  out: FloatArray,
  lse: FloatArray,
  cuSeqlens: Int32Array,
  B: number,
  H: number,
  KV: number,
  D: number,
  scale: number,
): void {
  // P_j = exp(scale q·k_j − lse); dP_j = dout·v_j; dS_j = P_j (dP_j − dout·out)
  const group = H / KV;
  for (let b = 0; b < B; b++) {
    const s0 = cuSeqlens[b];
    const s1 = cuSeqlens[b + 1];
    for (let t = s0; t < s1; t++) {
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / group);
        const qo = (t * H + h) * D;
        const l = lse[t * H + h];
        let delta = 0;
        for (let d = 0; d < D; d++) delta += dout[qo + d] * out[qo + d];
        for (let j = s0; j <= t; j++) {
          const ko = (j * KV + kvh) * D;
          let s = 0;
          let dp = 0;
          for (let d = 0; d < D; d++) {
            s += q[qo + d] * k[ko + d];
            dp += dout[qo + d] * v[ko + d];
          }
          const p = Math.exp(s * scale - l);
          const ds = p * (dp - delta) * scale;
          for (let d = 0; d < D; d++) {
            dq[qo + d] += ds * k[ko + d];
            dk[ko + d] += ds * q[qo + d];
            dv[ko + d] += p * dout[qo + d];
          }
        }
      }
    }
  }
}

function attentionDecode(
  out: FloatArray,
  q: FloatArray,
  kCache: FloatArray,
  vCache: FloatArray,
  slot: Int32Array,
  pos: Int32Array,
  n: number,
  S: number,
  H: number,
  KV: number,
  D: number,
  scale: number,
): void {
  const group = H / KV;
  for (let i = 0; i < n; i++) {
    const base = slot[i] * S * KV * D;
    const p = pos[i];
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / group);
      const qo = (i * H + h) * D;
      const scores = new Float64Array(p + 1);
      let mx = -Infinity;
      for (let j = 0; j <= p; j++) {
        const ko = base + (j * KV + kvh) * D;
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qo + d] * kCache[ko + d];
        s *= scale;
        scores[j] = s;
        if (s > mx) mx = s;
      }
      let sum = 0;
      for (let j = 0; j <= p; j++) sum += Math.exp(scores[j] - mx);
      const acc = new Float64Array(D);
      for (let j = 0; j <= p; j++) {
        const w = Math.exp(scores[j] - mx) / sum;
        const vo = base + (j * KV + kvh) * D;
        for (let d = 0; d < D; d++) acc[d] += w * vCache[vo + d];
      }
      for (let d = 0; d < D; d++) out[qo + d] = acc[d];
    }
  }
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

function swigluForward(out: FloatArray, gate: FloatArray, up: FloatArray, n: number): void {
  for (let i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

function swigluBackward(dgate: FloatArray, dup: FloatArray, dout: FloatArray, gate: FloatArray, up: FloatArray, n: number): void {
  // d silu(g)/dg = σ(g) (1 + g (1 − σ(g)))
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    const sg = sigmoid(g);
    dgate[i] += dout[i] * up[i] * sg * (1 + g * (1 - sg));
    dup[i] += dout[i] * g * sg;
  }
}

function embeddingForward(out: FloatArray, table: FloatArray, ids: Int32Array, T: number, C: number): void {
  for (let t = 0; t < T; t++) {
    const o = ids[t] * C;
    for (let c = 0; c < C; c++) out[t * C + c] = table[o + c];
  }
}

function embeddingBackward(dtable: FloatArray, dout: FloatArray, ids: Int32Array, T: number, C: number): void {
  for (let t = 0; t < T; t++) {
    const o = ids[t] * C;
    for (let c = 0; c < C; c++) dtable[o + c] += dout[t * C + c];
  }
}

function rowLse(logits: FloatArray, o: number, V: number): number {
  let mx = -Infinity;
  for (let j = 0; j < V; j++) if (logits[o + j] > mx) mx = logits[o + j];
  let s = 0;
  for (let j = 0; j < V; j++) s += Math.exp(logits[o + j] - mx);
  return mx + Math.log(s);
}

function logprobsForward(
  logprob: FloatArray,
  lse: FloatArray,
  entropy: FloatArray | null,
  logits: FloatArray,
  targets: Int32Array,
  T: number,
  V: number,
): void {
  for (let t = 0; t < T; t++) {
    const o = t * V;
    const l = rowLse(logits, o, V);
    lse[t] = l;
    logprob[t] = logits[o + targets[t]] - l;
    if (entropy) {
      // H = lse − Σ p z
      let ez = 0;
      for (let j = 0; j < V; j++) ez += Math.exp(logits[o + j] - l) * logits[o + j];
      entropy[t] = l - ez;
    }
  }
}

function logprobsBackward(
  dlogits: FloatArray,
  dlogprob: FloatArray,
  dentropy: FloatArray | null,
  logits: FloatArray,
  lse: FloatArray,
  targets: Int32Array,
  T: number,
  V: number,
): void {
  // dH/dz_j = −p_j (z_j − E[z])
  for (let t = 0; t < T; t++) {
    const o = t * V;
    const l = lse[t];
    const g = dlogprob[t];
    const ge = dentropy ? dentropy[t] : 0;
    let ez = 0;
    if (ge !== 0) for (let j = 0; j < V; j++) ez += Math.exp(logits[o + j] - l) * logits[o + j];
    for (let j = 0; j < V; j++) {
      const p = Math.exp(logits[o + j] - l);
      let d = -g * p;
      if (ge !== 0) d -= ge * p * (logits[o + j] - ez);
      dlogits[o + j] = d;
    }
    dlogits[o + targets[t]] += g;
  }
}

function adamw(
  params: FloatArray,
  grads: FloatArray,
  m: FloatArray,
  v: FloatArray,
  n: number,
  lr: number,
  beta1: number,
  beta2: number,
  eps: number,
  weightDecay: number,
  step: number,
  gradScale: number,
): void {
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2 = 1 - Math.pow(beta2, step);
  for (let i = 0; i < n; i++) {
    const g = grads[i] * gradScale;
    const mi = beta1 * m[i] + (1 - beta1) * g;
    const vi = beta2 * v[i] + (1 - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let p = params[i];
    p -= lr * weightDecay * p;
    p -= (lr * (mi / bc1)) / (Math.sqrt(vi / bc2) + eps);
    params[i] = p;
  }
}

function sumSquares(x: FloatArray, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i] * x[i];
  return s;
}

/**
 * The reference kernels with float-generic signatures (Float32Array or Float64Array everywhere).
 * Use this object directly to run in float64; `referenceKernels` is the same object seen as `Kernels`.
 */
export const reference = {
  name: 'reference' as const,
  isa: 'ts',
  threads: (): number => 1,
  setThreads: (_n: number): void => {},
  sgemm,
  packWeightNT,
  sgemmPacked,
  rmsnormForward,
  rmsnormBackward,
  ropeForward,
  ropeBackward,
  attentionForward,
  attentionBackward,
  attentionDecode,
  swigluForward,
  swigluBackward,
  embeddingForward,
  embeddingBackward,
  logprobsForward,
  logprobsBackward,
  adamw,
  sumSquares,
};

export type ReferenceKernels = typeof reference;

export const referenceKernels: Kernels = reference;
