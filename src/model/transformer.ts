/**
 * Training path of the decoder-only transformer (Llama / Qwen2 with qkv bias / Qwen3 with q/k norm):
 * a forward pass over a packed batch of variable-length sequences that returns, for every token,
 * log p(tokens[t] | tokens[<t]) and the entropy of the distribution that predicted it (0 for the
 * first token of each sequence), and the matching backward pass that accumulates parameter gradients
 * into one contiguous buffer (same layout as the weights, see params.ts).
 *
 * - Works in float32 on any `Kernels` and in float64 on the reference kernels (gradient checks):
 *   the float type only decides which typed array the scratch buffers are.
 * - The LM head and its log-softmax run in chunks of tokens; a [T×V] logits buffer never exists.
 *   Backward recomputes each chunk's logits.
 * - The SwiGLU output is not kept: backward recomputes it from gate and up (saves T×F floats per layer).
 * - Per-layer activations that backward needs are kept in scratch buffers sized for the largest
 *   batch seen so far and reused across steps (no allocation in the steady state). One forward's
 *   context is valid until the next forward: forward → backward must not interleave with another
 *   forward on the same Transformer.
 * - LoRA (`setLora`, see lora.ts): every adapted linear adds s·(x·Aᵀ)·Bᵀ right after its base product,
 *   keeping u = s·x·Aᵀ [T×r] per layer and module for backward, which accumulates dA and dB into the
 *   adapter's gradient buffer. With `trainBase` false (the LoRA default) backward skips every base
 *   weight gradient (the TN products, bias sums, embedding scatter): only dx flows through the base.
 */
import type { Kernels } from '../engine/kernels.ts';
import type { ReferenceKernels } from '../engine/reference.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { ModelConfig } from './config.ts';
import type { LoraAdapter, LoraLinear } from './lora.ts';
import { buildLayout, viewsOf, type FloatBuffer, type ModelViews, type ParamLayout } from './params.ts';

/** A packed batch: sequences laid end to end. cuSeqlens[B+1] are start offsets (cuSeqlens[0] = 0, last = T). */
export interface PackedBatch {
  tokens: Int32Array; // [T]
  cuSeqlens: Int32Array; // [B+1]
}

export interface ForwardResult<A extends FloatBuffer> {
  /** [T] log p(tokens[t] | tokens[<t]); 0 at the first token of each sequence. A view into scratch, valid until the next forward. */
  logprobs: A;
  /** [T] entropy of the predicting distribution; 0 at the first token of each sequence. Same lifetime. */
  entropies: A;
  ctx: ForwardContext;
}

/** Opaque token that backward checks against the latest forward. */
export interface ForwardContext {
  readonly id: number;
  readonly T: number;
  readonly B: number;
}

type Ctor<A extends FloatBuffer> = { new (n: number): A };

/** Saved activations of one layer (all sized for capacity tokens). */
interface LayerActs {
  rstd1: Float32Array; // [T]
  xn1: Float32Array; // [T×C]
  qPre: Float32Array | null; // [T×H×D] before q-norm (Qwen3)
  kPre: Float32Array | null; // [T×KV×D]
  qRstd: Float32Array | null; // [T×H]
  kRstd: Float32Array | null; // [T×KV]
  q: Float32Array; // [T×H×D] after norm + RoPE
  k: Float32Array; // [T×KV×D]
  v: Float32Array; // [T×KV×D]
  att: Float32Array; // [T×H×D]
  lse: Float32Array; // [T×H]
  mid: Float32Array; // [T×C] residual after attention
  rstd2: Float32Array; // [T]
  xn2: Float32Array; // [T×C]
  gate: Float32Array; // [T×F]
  up: Float32Array; // [T×F]
  /** LoRA u = s·x·Aᵀ [T×r] per adapted module of this layer (empty without LoRA). */
  lu: Partial<Record<LoraKey, Float32Array>>;
}

type LoraKey = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';
const LORA_KEYS: readonly LoraKey[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** Tokens per LM-head chunk so that a chunk's logits stay around 2M floats. */
function lmChunkTokens(V: number): number {
  return Math.max(16, Math.min(1024, Math.floor((1 << 21) / V)));
}

export class Transformer<A extends FloatBuffer = Float32Array> {
  readonly cfg: ModelConfig;
  readonly layout: ParamLayout;
  readonly weights: A;
  readonly grads: A;
  /** Views of weights/grads. Internally typed as Float32Array; at run time they are whatever A is. */
  private readonly W: ModelViews<Float32Array>;
  private readonly G: ModelViews<Float32Array>;
  private readonly k: Kernels;
  private readonly ctor: Ctor<A>;
  private readonly chunk: number;

  private cap = 0; // token capacity of scratch
  private capSaved = 0; // number of layers with their own saved activations (L with grad, 1 without)
  private res: Float32Array[] = []; // residual stream inputs, [L+1] of [T×C]
  private acts: LayerActs[] = [];
  private rstdF!: Float32Array;
  private xnF!: Float32Array;
  private rowLp!: Float32Array; // [T] per-row (predicting) logprob
  private rowEnt!: Float32Array;
  private rowLse!: Float32Array;
  private targets!: Int32Array; // [T] row t predicts targets[t]
  private rowValid!: Uint8Array;
  private positions!: Int32Array;
  private outLp!: Float32Array;
  private outEnt!: Float32Array;
  private logits!: Float32Array; // [chunk×V]
  private dlogits!: Float32Array;
  private dRow!: Float32Array;
  private dRowEnt!: Float32Array;
  // backward scratch
  private dres!: Float32Array;
  private dxn!: Float32Array;
  private dF1!: Float32Array;
  private dF2!: Float32Array;
  private dF3!: Float32Array;
  private dq!: Float32Array;
  private dk!: Float32Array;
  private dv!: Float32Array;
  private dqPre!: Float32Array;
  private dkPre!: Float32Array;
  private datt!: Float32Array;
  /** [T×F] SwiGLU output, shared by all layers: backward recomputes it from gate and up. */
  private hBuf!: Float32Array;

  /** LoRA adapter applied on top of the weights, or null. */
  private lora: LoraAdapter<Float32Array> | null = null;
  /** Whether backward computes base parameter gradients (false only with a LoRA adapter). */
  private trainBase = true;
  private loraG!: Float32Array; // [T×r] backward scratch
  private loraHeadU!: Float32Array; // [chunk×r]

  private lastCtx: ForwardContext | null = null;
  private lastSaved = false;
  private lastBatch: PackedBatch | null = null;
  private nextId = 1;

  /**
   * `weights` (and optional `grads`) have the layout of `buildLayout(cfg)`; they are used in place.
   * For Float64Array buffers pass the reference kernels.
   */
  constructor(cfg: ModelConfig, kernels: Kernels | ReferenceKernels, weights: A, grads?: A) {
    this.cfg = cfg;
    this.layout = buildLayout(cfg);
    if (weights.length !== this.layout.total) {
      throw new InvalidArgumentError('weights', `expected ${this.layout.total} floats for this config, got ${weights.length}`);
    }
    this.ctor = weights.constructor as Ctor<A>;
    this.weights = weights;
    this.grads = grads ?? new this.ctor(this.layout.total);
    if (this.grads.length !== this.layout.total) throw new InvalidArgumentError('grads', `expected ${this.layout.total} floats`);
    this.k = kernels as Kernels;
    this.W = viewsOf(weights as unknown as Float32Array, this.layout, cfg);
    this.G = viewsOf(this.grads as unknown as Float32Array, this.layout, cfg);
    this.chunk = lmChunkTokens(cfg.vocabSize);
  }

  zeroGrads(): void {
    this.grads.fill(0);
  }

  /**
   * Apply a LoRA adapter (buffers of the same float type as the weights) or remove it (null). With
   * `trainBase` false (default when an adapter is set) backward leaves the base gradients alone.
   */
  setLora(adapter: LoraAdapter<FloatBuffer> | null, options: { trainBase?: boolean } = {}): void {
    if (adapter && adapter.params.constructor !== this.weights.constructor) {
      throw new InvalidArgumentError('lora', 'the adapter buffers must have the float type of the weights');
    }
    this.lora = adapter as unknown as LoraAdapter<Float32Array> | null;
    this.trainBase = options.trainBase ?? adapter === null;
    // reallocate scratch so the per-layer u buffers match the adapter
    this.cap = 0;
    this.capSaved = 0;
    this.acts = [];
    this.res = [];
    this.lastCtx = null;
  }

  /** y[T×out] += s·(x·Aᵀ)·Bᵀ, saving u = s·x·Aᵀ into `u`. */
  private loraForward(lin: LoraLinear<Float32Array>, x: Float32Array, y: Float32Array, u: Float32Array, T: number): void {
    const r = this.lora!.rank;
    const s = this.lora!.scale;
    this.k.sgemm(false, true, T, r, lin.inF, x, lin.A, u, false);
    for (let i = 0; i < T * r; i++) u[i] *= s;
    this.k.sgemm(false, true, T, lin.outF, r, u, lin.B, y, true);
  }

  /** dB += dyᵀ·u; g = s·dy·B; dA += gᵀ·x; dx += g·A (dx may be null when nothing flows further). */
  private loraBackward(
    lin: LoraLinear<Float32Array>,
    x: Float32Array,
    dy: Float32Array,
    u: Float32Array,
    dx: Float32Array | null,
    T: number,
  ): void {
    const r = this.lora!.rank;
    const s = this.lora!.scale;
    const k = this.k;
    const g = this.loraG;
    k.sgemm(true, false, lin.outF, r, T, dy, u, lin.gB, true);
    k.sgemm(false, false, T, r, lin.outF, dy, lin.B, g, false);
    for (let i = 0; i < T * r; i++) g[i] *= s;
    k.sgemm(true, false, r, lin.inF, T, g, x, lin.gA, true);
    if (dx) k.sgemm(false, false, T, lin.inF, r, g, lin.A, dx, true);
  }

  private alloc(n: number): Float32Array {
    return new this.ctor(n) as unknown as Float32Array;
  }

  /** Grow scratch to hold T tokens with `layers` layers of saved activations. */
  private ensure(T: number, saved: number): void {
    const { hiddenSize: C, numHeads: H, numKvHeads: KV, headDim: D, intermediateSize: F, vocabSize: V, numLayers: L, qkNorm } = this.cfg;
    if (T <= this.cap && saved <= this.capSaved) return;
    const cap = Math.max(T, this.cap, 1);
    const chunk = Math.min(this.chunk, cap);
    const a = (n: number) => this.alloc(n);
    const grownT = cap !== this.cap;
    if (grownT) {
      this.acts = [];
      this.res = [];
    }
    const nSaved = Math.max(saved, grownT ? saved : this.capSaved);
    while (this.acts.length < nSaved) {
      this.acts.push({
        rstd1: a(cap),
        xn1: a(cap * C),
        qPre: qkNorm ? a(cap * H * D) : null,
        kPre: qkNorm ? a(cap * KV * D) : null,
        qRstd: qkNorm ? a(cap * H) : null,
        kRstd: qkNorm ? a(cap * KV) : null,
        q: a(cap * H * D),
        k: a(cap * KV * D),
        v: a(cap * KV * D),
        att: a(cap * H * D),
        lse: a(cap * H),
        mid: a(cap * C),
        rstd2: a(cap),
        xn2: a(cap * C),
        gate: a(cap * F),
        up: a(cap * F),
        lu: this.loraBuffers(cap),
      });
    }
    const nRes = nSaved === 1 ? 2 : L + 1;
    while (this.res.length < nRes) this.res.push(a(cap * C));
    if (grownT) {
      this.rstdF = a(cap);
      this.xnF = a(cap * C);
      this.rowLp = a(cap);
      this.rowEnt = a(cap);
      this.rowLse = a(cap);
      this.targets = new Int32Array(cap);
      this.rowValid = new Uint8Array(cap);
      this.positions = new Int32Array(cap);
      this.outLp = a(cap);
      this.outEnt = a(cap);
      this.logits = a(chunk * V);
      this.dlogits = a(chunk * V);
      this.dRow = a(cap);
      this.dRowEnt = a(cap);
      this.dres = a(cap * C);
      this.dxn = a(cap * C);
      this.dF1 = a(cap * F);
      this.dF2 = a(cap * F);
      this.dF3 = a(cap * F);
      this.dq = a(cap * H * D);
      this.dk = a(cap * KV * D);
      this.dv = a(cap * KV * D);
      this.dqPre = a(cap * H * D);
      this.dkPre = a(cap * KV * D);
      this.datt = a(cap * H * D);
      this.hBuf = a(cap * F);
      const r = this.lora?.rank ?? 0;
      this.loraG = a(cap * r);
      this.loraHeadU = a(chunk * r);
    }
    this.cap = cap;
    this.capSaved = nSaved;
  }

  /** u buffers for the modules adapted in any layer (a slot may serve every layer when no grad is kept). */
  private loraBuffers(cap: number): Partial<Record<LoraKey, Float32Array>> {
    const out: Partial<Record<LoraKey, Float32Array>> = {};
    if (!this.lora) return out;
    for (const key of LORA_KEYS) if (this.lora.layers.some((lv) => lv[key] !== null)) out[key] = this.alloc(cap * this.lora.rank);
    return out;
  }

  /** Validate a packed batch; token ids out of range → InvalidArgumentError naming the index. */
  validate(batch: PackedBatch): void {
    const { tokens, cuSeqlens } = batch;
    const V = this.cfg.vocabSize;
    const B = cuSeqlens.length - 1;
    if (B < 1 || cuSeqlens[0] !== 0 || cuSeqlens[B] !== tokens.length) {
      throw new InvalidArgumentError('cuSeqlens', `must start at 0 and end at T = ${tokens.length}`);
    }
    for (let b = 0; b < B; b++) {
      if (cuSeqlens[b + 1] <= cuSeqlens[b])
        throw new InvalidArgumentError(`cuSeqlens[${b + 1}]`, 'sequences must be non-empty and increasing');
      if (cuSeqlens[b + 1] - cuSeqlens[b] > this.cfg.maxPositionEmbeddings) {
        throw new InvalidArgumentError(
          `sequence ${b}`,
          `length ${cuSeqlens[b + 1] - cuSeqlens[b]} exceeds max_position_embeddings ${this.cfg.maxPositionEmbeddings}`,
        );
      }
    }
    for (let t = 0; t < tokens.length; t++) {
      const id = tokens[t];
      if (!(id >= 0 && id < V)) throw new InvalidArgumentError(`tokens[${t}]`, `token id ${id} is out of range [0, ${V})`);
    }
  }

  /**
   * Forward over a packed batch. With `needGrad` false only one layer of activations is kept (no
   * backward possible). `entropies` false skips the entropy computation (zeros are returned).
   */
  forward(batch: PackedBatch, options: { needGrad?: boolean; entropies?: boolean } = {}): ForwardResult<A> {
    const needGrad = options.needGrad ?? true;
    const wantEnt = options.entropies ?? true;
    this.validate(batch);
    const { tokens, cuSeqlens } = batch;
    const T = tokens.length;
    const B = cuSeqlens.length - 1;
    const cfg = this.cfg;
    const {
      hiddenSize: C,
      numHeads: H,
      numKvHeads: KV,
      headDim: D,
      intermediateSize: F,
      vocabSize: V,
      numLayers: L,
      rmsNormEps: eps,
    } = cfg;
    const k = this.k;
    this.ensure(T, needGrad ? L : 1);
    const pos = this.positions;
    for (let b = 0; b < B; b++) {
      const s0 = cuSeqlens[b];
      const s1 = cuSeqlens[b + 1];
      for (let t = s0; t < s1; t++) {
        pos[t] = t - s0;
        const last = t === s1 - 1;
        this.targets[t] = last ? 0 : tokens[t + 1];
        this.rowValid[t] = last ? 0 : 1;
      }
    }
    const HD = H * D;
    const KD = KV * D;
    const scale = 1 / Math.sqrt(D);

    k.embeddingForward(this.res[0], this.W.embed, tokens, T, C);
    for (let l = 0; l < L; l++) {
      const a = this.acts[needGrad ? l : 0];
      const w = this.W.layers[l];
      const xin = this.res[needGrad ? l : l & 1];
      const xout = this.res[needGrad ? l + 1 : (l + 1) & 1];
      const lv = this.lora?.layers[l];
      k.rmsnormForward(a.xn1, a.rstd1, xin, w.inputNorm, T, C, eps);
      const qDst = a.qPre ?? a.q;
      const kDst = a.kPre ?? a.k;
      k.sgemm(false, true, T, HD, C, a.xn1, w.qProj, qDst, false);
      k.sgemm(false, true, T, KD, C, a.xn1, w.kProj, kDst, false);
      k.sgemm(false, true, T, KD, C, a.xn1, w.vProj, a.v, false);
      if (lv?.q) this.loraForward(lv.q, a.xn1, qDst, a.lu.q!, T);
      if (lv?.k) this.loraForward(lv.k, a.xn1, kDst, a.lu.k!, T);
      if (lv?.v) this.loraForward(lv.v, a.xn1, a.v, a.lu.v!, T);
      if (w.qBias) addBias(qDst, w.qBias, T, HD);
      if (w.kBias) addBias(kDst, w.kBias, T, KD);
      if (w.vBias) addBias(a.v, w.vBias, T, KD);
      if (a.qPre && w.qNorm && w.kNorm) {
        k.rmsnormForward(a.q, a.qRstd!, a.qPre, w.qNorm, T * H, D, eps);
        k.rmsnormForward(a.k, a.kRstd!, a.kPre!, w.kNorm, T * KV, D, eps);
      }
      k.ropeForward(a.q, pos, T, H, D, cfg.ropeTheta);
      k.ropeForward(a.k, pos, T, KV, D, cfg.ropeTheta);
      k.attentionForward(a.att, a.lse, a.q, a.k, a.v, cuSeqlens, B, H, KV, D, scale);
      a.mid.set(xin.subarray(0, T * C));
      k.sgemm(false, true, T, C, HD, a.att, w.oProj, a.mid, true);
      if (lv?.o) this.loraForward(lv.o, a.att, a.mid, a.lu.o!, T);
      k.rmsnormForward(a.xn2, a.rstd2, a.mid, w.postNorm, T, C, eps);
      k.sgemm(false, true, T, F, C, a.xn2, w.gateProj, a.gate, false);
      k.sgemm(false, true, T, F, C, a.xn2, w.upProj, a.up, false);
      if (lv?.gate) this.loraForward(lv.gate, a.xn2, a.gate, a.lu.gate!, T);
      if (lv?.up) this.loraForward(lv.up, a.xn2, a.up, a.lu.up!, T);
      k.swigluForward(this.hBuf, a.gate, a.up, T * F);
      xout.set(a.mid.subarray(0, T * C));
      k.sgemm(false, true, T, C, F, this.hBuf, w.downProj, xout, true);
      if (lv?.down) this.loraForward(lv.down, this.hBuf, xout, a.lu.down!, T);
    }
    const xL = this.res[needGrad ? L : L & 1];
    k.rmsnormForward(this.xnF, this.rstdF, xL, this.W.finalNorm, T, C, eps);

    // LM head + fused log-softmax, chunk by chunk
    const ch = Math.min(this.chunk, T);
    const head = this.lora?.head ?? null;
    for (let t0 = 0; t0 < T; t0 += ch) {
      const n = Math.min(ch, T - t0);
      k.sgemm(false, true, n, V, C, this.xnF.subarray(t0 * C, (t0 + n) * C), this.W.lmHead, this.logits, false);
      if (head) this.loraForward(head, this.xnF.subarray(t0 * C, (t0 + n) * C), this.logits, this.loraHeadU, n);
      k.logprobsForward(
        this.rowLp.subarray(t0, t0 + n),
        this.rowLse.subarray(t0, t0 + n),
        wantEnt ? this.rowEnt.subarray(t0, t0 + n) : null,
        this.logits,
        this.targets.subarray(t0, t0 + n),
        n,
        V,
      );
    }
    const lp = this.outLp;
    const ent = this.outEnt;
    for (let b = 0; b < B; b++) {
      const s0 = cuSeqlens[b];
      const s1 = cuSeqlens[b + 1];
      lp[s0] = 0;
      ent[s0] = 0;
      for (let t = s0 + 1; t < s1; t++) {
        lp[t] = this.rowLp[t - 1];
        ent[t] = wantEnt ? this.rowEnt[t - 1] : 0;
      }
    }
    const ctx: ForwardContext = { id: this.nextId++, T, B };
    this.lastCtx = ctx;
    this.lastSaved = needGrad;
    this.lastBatch = batch;
    return { logprobs: lp.subarray(0, T) as unknown as A, entropies: ent.subarray(0, T) as unknown as A, ctx };
  }

  /**
   * Backward of the latest forward: accumulates d(loss)/d(params) into `grads` given
   * dLogprobs[T] (and optionally dEntropies[T]); entries at the first token of a sequence are ignored.
   */
  backward(ctx: ForwardContext, dLogprobs: ArrayLike<number>, dEntropies?: ArrayLike<number> | null): void {
    if (ctx !== this.lastCtx || !this.lastSaved || !this.lastBatch) {
      throw new InvalidArgumentError('ctx', 'backward needs the context of the latest forward run with needGrad');
    }
    const { T, B } = ctx;
    if (dLogprobs.length !== T) throw new InvalidArgumentError('dLogprobs', `expected ${T} values, got ${dLogprobs.length}`);
    if (dEntropies && dEntropies.length !== T)
      throw new InvalidArgumentError('dEntropies', `expected ${T} values, got ${dEntropies.length}`);
    const { tokens, cuSeqlens } = this.lastBatch;
    const cfg = this.cfg;
    const { hiddenSize: C, numHeads: H, numKvHeads: KV, headDim: D, intermediateSize: F, vocabSize: V, numLayers: L } = cfg;
    const k = this.k;
    const HD = H * D;
    const KD = KV * D;
    const scale = 1 / Math.sqrt(D);
    const pos = this.positions;
    const trainBase = this.trainBase;
    const head = this.lora?.head ?? null;

    // per-row upstream gradients (row t predicts token t+1)
    const dRow = this.dRow;
    const dRowEnt = this.dRowEnt;
    let anyEnt = false;
    for (let b = 0; b < B; b++) {
      const s0 = cuSeqlens[b];
      const s1 = cuSeqlens[b + 1];
      for (let t = s0; t < s1 - 1; t++) {
        dRow[t] = dLogprobs[t + 1];
        const de = dEntropies ? dEntropies[t + 1] : 0;
        dRowEnt[t] = de;
        if (de !== 0) anyEnt = true;
      }
      dRow[s1 - 1] = 0;
      dRowEnt[s1 - 1] = 0;
    }

    // LM head backward, chunk by chunk (recomputing logits)
    const dxnF = this.dxn;
    const ch = Math.min(this.chunk, T);
    for (let t0 = 0; t0 < T; t0 += ch) {
      const n = Math.min(ch, T - t0);
      const xc = this.xnF.subarray(t0 * C, (t0 + n) * C);
      k.sgemm(false, true, n, V, C, xc, this.W.lmHead, this.logits, false);
      if (head) this.loraForward(head, xc, this.logits, this.loraHeadU, n);
      k.logprobsBackward(
        this.dlogits,
        dRow.subarray(t0, t0 + n),
        anyEnt ? dRowEnt.subarray(t0, t0 + n) : null,
        this.logits,
        this.rowLse.subarray(t0, t0 + n),
        this.targets.subarray(t0, t0 + n),
        n,
        V,
      );
      k.sgemm(false, false, n, C, V, this.dlogits, this.W.lmHead, dxnF.subarray(t0 * C, (t0 + n) * C), false);
      if (head) this.loraBackward(head, xc, this.dlogits, this.loraHeadU, dxnF.subarray(t0 * C, (t0 + n) * C), n);
      if (trainBase) k.sgemm(true, false, V, C, n, this.dlogits, xc, this.G.lmHead, true);
    }
    const dres = this.dres;
    dres.fill(0, 0, T * C);
    k.rmsnormBackward(dres, this.G.finalNorm, dxnF, this.res[L], this.W.finalNorm, this.rstdF, T, C);

    for (let l = L - 1; l >= 0; l--) {
      const a = this.acts[l];
      const w = this.W.layers[l];
      const g = this.G.layers[l];
      const lv = this.lora?.layers[l];
      // MLP: xout = mid + h·Wdᵀ
      const dh = this.dF1;
      k.sgemm(false, false, T, F, C, dres, w.downProj, dh, false);
      const h = this.dF2; // recompute silu(gate)·up into what becomes dgate below
      k.swigluForward(h, a.gate, a.up, T * F);
      if (lv?.down) this.loraBackward(lv.down, h, dres, a.lu.down!, dh, T);
      if (trainBase) k.sgemm(true, false, C, F, T, dres, h, g.downProj, true);
      const dgate = this.dF2;
      const dup = this.dF3;
      dgate.fill(0, 0, T * F);
      dup.fill(0, 0, T * F);
      k.swigluBackward(dgate, dup, dh, a.gate, a.up, T * F);
      const dxn2 = this.dxn;
      k.sgemm(false, false, T, C, F, dgate, w.gateProj, dxn2, false);
      k.sgemm(false, false, T, C, F, dup, w.upProj, dxn2, true);
      if (lv?.gate) this.loraBackward(lv.gate, a.xn2, dgate, a.lu.gate!, dxn2, T);
      if (lv?.up) this.loraBackward(lv.up, a.xn2, dup, a.lu.up!, dxn2, T);
      if (trainBase) {
        k.sgemm(true, false, F, C, T, dgate, a.xn2, g.gateProj, true);
        k.sgemm(true, false, F, C, T, dup, a.xn2, g.upProj, true);
      }
      k.rmsnormBackward(dres, g.postNorm, dxn2, a.mid, w.postNorm, a.rstd2, T, C);
      // attention: mid = xin + att·Woᵀ
      const datt = this.datt;
      k.sgemm(false, false, T, HD, C, dres, w.oProj, datt, false);
      if (lv?.o) this.loraBackward(lv.o, a.att, dres, a.lu.o!, datt, T);
      if (trainBase) k.sgemm(true, false, C, HD, T, dres, a.att, g.oProj, true);
      const dq = this.dq;
      const dk = this.dk;
      const dv = this.dv;
      dq.fill(0, 0, T * HD);
      dk.fill(0, 0, T * KD);
      dv.fill(0, 0, T * KD);
      k.attentionBackward(dq, dk, dv, datt, a.q, a.k, a.v, a.att, a.lse, cuSeqlens, B, H, KV, D, scale);
      k.ropeBackward(dq, pos, T, H, D, cfg.ropeTheta);
      k.ropeBackward(dk, pos, T, KV, D, cfg.ropeTheta);
      let dqIn = dq;
      let dkIn = dk;
      if (a.qPre && w.qNorm && w.kNorm && g.qNorm && g.kNorm) {
        this.dqPre.fill(0, 0, T * HD);
        this.dkPre.fill(0, 0, T * KD);
        k.rmsnormBackward(this.dqPre, g.qNorm, dq, a.qPre, w.qNorm, a.qRstd!, T * H, D);
        k.rmsnormBackward(this.dkPre, g.kNorm, dk, a.kPre!, w.kNorm, a.kRstd!, T * KV, D);
        dqIn = this.dqPre;
        dkIn = this.dkPre;
      }
      if (trainBase) {
        if (g.qBias) colSum(g.qBias, dqIn, T, HD);
        if (g.kBias) colSum(g.kBias, dkIn, T, KD);
        if (g.vBias) colSum(g.vBias, dv, T, KD);
      }
      const dxn1 = this.dxn;
      k.sgemm(false, false, T, C, HD, dqIn, w.qProj, dxn1, false);
      k.sgemm(false, false, T, C, KD, dkIn, w.kProj, dxn1, true);
      k.sgemm(false, false, T, C, KD, dv, w.vProj, dxn1, true);
      if (lv?.q) this.loraBackward(lv.q, a.xn1, dqIn, a.lu.q!, dxn1, T);
      if (lv?.k) this.loraBackward(lv.k, a.xn1, dkIn, a.lu.k!, dxn1, T);
      if (lv?.v) this.loraBackward(lv.v, a.xn1, dv, a.lu.v!, dxn1, T);
      if (trainBase) {
        k.sgemm(true, false, HD, C, T, dqIn, a.xn1, g.qProj, true);
        k.sgemm(true, false, KD, C, T, dkIn, a.xn1, g.kProj, true);
        k.sgemm(true, false, KD, C, T, dv, a.xn1, g.vProj, true);
      }
      k.rmsnormBackward(dres, g.inputNorm, dxn1, this.res[l], w.inputNorm, a.rstd1, T, C);
    }
    if (trainBase) k.embeddingBackward(this.G.embed, dres, tokens, T, C);
    this.lastCtx = null; // activations are consumed
  }
}

function addBias(y: Float32Array, b: Float32Array, T: number, N: number): void {
  for (let t = 0; t < T; t++) {
    const o = t * N;
    for (let j = 0; j < N; j++) y[o + j] += b[j];
  }
}

function colSum(db: Float32Array, dy: Float32Array, T: number, N: number): void {
  for (let t = 0; t < T; t++) {
    const o = t * N;
    for (let j = 0; j < N; j++) db[j] += dy[o + j];
  }
}

/** Pack sequences of token ids into one batch. */
export function packSequences(seqs: readonly ArrayLike<number>[]): PackedBatch {
  let T = 0;
  for (const s of seqs) T += s.length;
  const tokens = new Int32Array(T);
  const cuSeqlens = new Int32Array(seqs.length + 1);
  let o = 0;
  seqs.forEach((s, i) => {
    for (let j = 0; j < s.length; j++) {
      const id = s[j];
      if (!Number.isInteger(id)) throw new InvalidArgumentError(`sequences[${i}][${j}]`, `token id ${String(id)} is not an integer`);
      tokens[o + j] = id;
    }
    o += s.length;
    cuSeqlens[i + 1] = o;
  });
  return { tokens, cuSeqlens };
}
