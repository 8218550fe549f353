/**
 * Inference forward with a KV cache, for a batch of requests at different positions: one call runs
 * prompt prefills (many tokens per request) and decode steps (one token per request) together and
 * returns the logits of each request's last position (or of all its positions when asked).
 *
 * KV cache: per layer one K and one V buffer laid out as slots of [S × KV × D] (the layout of the
 * `attentionDecode` kernel); a request owns a slot while it runs. The cache grows — more slots,
 * longer slots (S doubles up to max_position_embeddings) — until `maxCacheBytes`, beyond which
 * `allocSlot` returns -1 and `forward` refuses positions past the capacity it can reach.
 *
 * Linear layers use pre-packed weights (`packWeightNT`/`sgemmPacked`) when the batch has few rows
 * (decoding) and plain `sgemm` for prefill-sized batches. `repack()` must be called after the
 * weights change. The computation per token is the same as the training forward (`transformer.ts`):
 * RMSNorm → q/k/v (+bias) → per-head q/k RMSNorm (Qwen3) → RoPE → attention → o_proj residual →
 * RMSNorm → SwiGLU MLP residual → final RMSNorm → LM head.
 *
 * With a LoRA adapter (`setLora`, see lora.ts) each adapted linear adds s·(x·Aᵀ)·Bᵀ after its base
 * product, as in training; the adapter is read in place, so an optimizer step on it needs no repack.
 */
import type { Kernels, PackedWeight } from '../engine/kernels.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { ModelConfig } from './config.ts';
import type { LoraAdapter, LoraLinear } from './lora.ts';
import { buildLayout, viewsOf, type ModelViews } from './params.ts';

/** One request's share of a forward call. */
export interface DecodeItem {
  /** KV-cache slot of the request (from allocSlot). */
  slot: number;
  /** Tokens to run, at positions startPos, startPos+1, … (KV for positions < startPos must already be in the slot). */
  tokens: ArrayLike<number>;
  startPos: number;
  /** Return logits for every position of `tokens` instead of only the last. */
  allLogits?: boolean;
}

export interface DecoderOptions {
  /** Initial slot count (default 8). */
  slots?: number;
  /** Initial positions per slot (default min(256, max_position_embeddings)). */
  capacity?: number;
  /** Upper bound on the KV cache size in bytes (default 4 GiB). */
  maxCacheBytes?: number;
  /** Batches with at most this many rows use the packed-weight path (default 64). */
  packedMaxRows?: number;
}

interface PackedLayer {
  q: PackedWeight;
  k: PackedWeight;
  v: PackedWeight;
  o: PackedWeight;
  gate: PackedWeight;
  up: PackedWeight;
  down: PackedWeight;
}

export class Decoder {
  readonly cfg: ModelConfig;
  readonly weights: Float32Array;
  private readonly k: Kernels;
  private readonly W: ModelViews<Float32Array>;
  private packed: PackedLayer[] = [];
  private packedHead!: PackedWeight;
  private readonly packedMaxRows: number;
  private readonly maxCacheBytes: number;

  /** Positions per slot (S) and slot count (N). */
  S: number;
  N: number;
  /** Per layer: [N × S × KV × D]. */
  kCache: Float32Array[] = [];
  vCache: Float32Array[] = [];
  private free: number[] = [];
  private used: Uint8Array;

  // scratch (grown on demand)
  private cap = 0;
  private x!: Float32Array;
  private xn!: Float32Array;
  private rstd!: Float32Array;
  private q!: Float32Array;
  private qPre!: Float32Array;
  private kk!: Float32Array;
  private kPre!: Float32Array;
  private v!: Float32Array;
  private att!: Float32Array;
  private hRstd!: Float32Array;
  private gate!: Float32Array;
  private up!: Float32Array;
  private h!: Float32Array;
  private logits = new Float32Array(0);
  private lora: LoraAdapter | null = null;
  private loraU = new Float32Array(0);

  constructor(cfg: ModelConfig, weights: Float32Array, kernels: Kernels, options: DecoderOptions = {}) {
    const layout = buildLayout(cfg);
    if (weights.length !== layout.total)
      throw new InvalidArgumentError('weights', `expected ${layout.total} floats for this config, got ${weights.length}`);
    this.cfg = cfg;
    this.weights = weights;
    this.k = kernels;
    this.W = viewsOf(weights, layout, cfg);
    this.packedMaxRows = options.packedMaxRows ?? 64;
    this.maxCacheBytes = options.maxCacheBytes ?? 4 * 1024 ** 3;
    this.S = Math.min(options.capacity ?? 256, cfg.maxPositionEmbeddings);
    this.N = Math.max(1, options.slots ?? 8);
    if (this.cacheBytes(this.N, this.S) > this.maxCacheBytes) {
      throw new InvalidArgumentError('maxCacheBytes', `${this.maxCacheBytes} bytes cannot hold ${this.N} slots of ${this.S} positions`);
    }
    this.used = new Uint8Array(this.N);
    this.allocCache(this.N, this.S);
    for (let s = this.N - 1; s >= 0; s--) this.free.push(s);
    this.repack();
  }

  /** Pack the weights for the small-batch path; call after the weights change. */
  repack(): void {
    const { hiddenSize: C, numHeads: H, numKvHeads: KV, headDim: D, intermediateSize: F, vocabSize: V } = this.cfg;
    const k = this.k;
    this.packed = this.W.layers.map((w) => ({
      q: k.packWeightNT(w.qProj, H * D, C),
      k: k.packWeightNT(w.kProj, KV * D, C),
      v: k.packWeightNT(w.vProj, KV * D, C),
      o: k.packWeightNT(w.oProj, C, H * D),
      gate: k.packWeightNT(w.gateProj, F, C),
      up: k.packWeightNT(w.upProj, F, C),
      down: k.packWeightNT(w.downProj, C, F),
    }));
    this.packedHead = k.packWeightNT(this.W.lmHead, V, C);
  }

  /** Apply a LoRA adapter on top of the weights from the next forward on (null removes it). */
  setLora(adapter: LoraAdapter | null): void {
    if (adapter && adapter.cfg.hiddenSize !== this.cfg.hiddenSize) {
      throw new InvalidArgumentError('lora', 'the adapter was built for another model shape');
    }
    this.lora = adapter;
  }

  /** y[n×out] += s·(x·Aᵀ)·Bᵀ. */
  private loraAdd(lin: LoraLinear | null, n: number, x: Float32Array, y: Float32Array): void {
    if (!lin) return;
    const r = this.lora!.rank;
    const s = this.lora!.scale;
    if (this.loraU.length < n * r) this.loraU = new Float32Array(Math.max(n * r, this.loraU.length * 2));
    const u = this.loraU;
    this.k.sgemm(false, true, n, r, lin.inF, x, lin.A, u, false);
    for (let i = 0; i < n * r; i++) u[i] *= s;
    this.k.sgemm(false, true, n, lin.outF, r, u, lin.B, y, true);
  }

  private cacheBytes(N: number, S: number): number {
    return 2 * this.cfg.numLayers * N * S * this.cfg.numKvHeads * this.cfg.headDim * 4;
  }

  private allocCache(N: number, S: number): void {
    const KD = this.cfg.numKvHeads * this.cfg.headDim;
    const oldK = this.kCache,
      oldV = this.vCache;
    const oldN = this.N,
      oldS = this.S;
    this.kCache = [];
    this.vCache = [];
    for (let l = 0; l < this.cfg.numLayers; l++) {
      const kc = new Float32Array(N * S * KD);
      const vc = new Float32Array(N * S * KD);
      if (oldK.length > 0) {
        const rows = Math.min(oldS, S) * KD;
        for (let s = 0; s < Math.min(oldN, N); s++) {
          kc.set(oldK[l].subarray(s * oldS * KD, s * oldS * KD + rows), s * S * KD);
          vc.set(oldV[l].subarray(s * oldS * KD, s * oldS * KD + rows), s * S * KD);
        }
      }
      this.kCache.push(kc);
      this.vCache.push(vc);
    }
    this.N = N;
    this.S = S;
  }

  /** Take a free slot, growing the cache if allowed; -1 when the cache is full and cannot grow. */
  allocSlot(): number {
    if (this.free.length === 0) {
      const N2 = this.N * 2;
      if (this.cacheBytes(N2, this.S) > this.maxCacheBytes) return -1;
      const oldN = this.N;
      this.allocCache(N2, this.S);
      const used = new Uint8Array(N2);
      used.set(this.used);
      this.used = used;
      for (let s = N2 - 1; s >= oldN; s--) this.free.push(s);
    }
    const s = this.free.pop()!;
    this.used[s] = 1;
    return s;
  }

  freeSlot(slot: number): void {
    if (!(slot >= 0 && slot < this.N) || !this.used[slot]) throw new InvalidArgumentError('slot', `${slot} is not an allocated slot`);
    this.used[slot] = 0;
    this.free.push(slot);
  }

  get freeSlots(): number {
    return this.free.length;
  }

  /** Longest position count a slot can reach (the model's limit, or less when the memory cap binds). */
  maxPositions(): number {
    let S = this.S;
    while (
      S < this.cfg.maxPositionEmbeddings &&
      this.cacheBytes(this.N, Math.min(S * 2, this.cfg.maxPositionEmbeddings)) <= this.maxCacheBytes
    ) {
      S = Math.min(S * 2, this.cfg.maxPositionEmbeddings);
    }
    return S;
  }

  /** Copy KV of positions [0, len) from one slot to another (prefix sharing). */
  copyPrefix(src: number, dst: number, len: number): void {
    if (len > this.S) throw new InvalidArgumentError('len', `${len} exceeds the slot capacity ${this.S}`);
    const KD = this.cfg.numKvHeads * this.cfg.headDim;
    const n = len * KD;
    for (let l = 0; l < this.cfg.numLayers; l++) {
      this.kCache[l].copyWithin(dst * this.S * KD, src * this.S * KD, src * this.S * KD + n);
      this.vCache[l].copyWithin(dst * this.S * KD, src * this.S * KD, src * this.S * KD + n);
    }
  }

  private ensureScratch(n: number): void {
    if (n <= this.cap) return;
    const cap = Math.max(n, this.cap * 2, 16);
    const { hiddenSize: C, numHeads: H, numKvHeads: KV, headDim: D, intermediateSize: F } = this.cfg;
    this.x = new Float32Array(cap * C);
    this.xn = new Float32Array(cap * C);
    this.rstd = new Float32Array(cap);
    this.q = new Float32Array(cap * H * D);
    this.qPre = new Float32Array(cap * H * D);
    this.kk = new Float32Array(cap * KV * D);
    this.kPre = new Float32Array(cap * KV * D);
    this.v = new Float32Array(cap * KV * D);
    this.att = new Float32Array(cap * H * D);
    this.hRstd = new Float32Array(cap * H);
    this.gate = new Float32Array(cap * F);
    this.up = new Float32Array(cap * F);
    this.h = new Float32Array(cap * F);
    this.cap = cap;
  }

  /** out[n×N] = (acc ? out : 0) + A[n×K]·Wᵀ, packed path for small n. */
  private linear(n: number, A: Float32Array, W: Float32Array, P: PackedWeight, out: Float32Array, acc: boolean): void {
    if (n <= this.packedMaxRows) this.k.sgemmPacked(n, A, P, out, acc);
    else this.k.sgemm(false, true, n, P.N, P.K, A, W, out, acc);
  }

  /**
   * Run the items; returns per item its logits: [V] for the last position, or [n×V] with allLogits.
   * The returned arrays are views into a scratch buffer, valid until the next call.
   */
  forward(items: readonly DecodeItem[]): Float32Array[] {
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
    const HD = H * D,
      KD = KV * D;
    let n = 0;
    let m = 0; // rows of logits
    let maxPos = 0;
    const seen = new Set<number>();
    items.forEach((it, i) => {
      if (!(it.slot >= 0 && it.slot < this.N) || !this.used[it.slot])
        throw new InvalidArgumentError(`items[${i}].slot`, `${it.slot} is not an allocated slot`);
      if (seen.has(it.slot)) throw new InvalidArgumentError(`items[${i}].slot`, `slot ${it.slot} appears twice in one call`);
      seen.add(it.slot);
      if (it.tokens.length === 0) throw new InvalidArgumentError(`items[${i}].tokens`, 'is empty');
      if (!(Number.isInteger(it.startPos) && it.startPos >= 0))
        throw new InvalidArgumentError(`items[${i}].startPos`, `expected a non-negative integer, got ${it.startPos}`);
      for (let j = 0; j < it.tokens.length; j++) {
        const id = it.tokens[j];
        if (!(Number.isInteger(id) && id >= 0 && id < V))
          throw new InvalidArgumentError(`items[${i}].tokens[${j}]`, `token id ${id} is out of range [0, ${V})`);
      }
      n += it.tokens.length;
      m += it.allLogits ? it.tokens.length : 1;
      maxPos = Math.max(maxPos, it.startPos + it.tokens.length);
    });
    if (n === 0) return [];
    if (maxPos > this.S) {
      if (maxPos > cfg.maxPositionEmbeddings)
        throw new InvalidArgumentError(
          'positions',
          `a request reaches position ${maxPos}, beyond max_position_embeddings ${cfg.maxPositionEmbeddings}`,
        );
      let S2 = this.S;
      while (S2 < maxPos) S2 = Math.min(S2 * 2, cfg.maxPositionEmbeddings);
      if (this.cacheBytes(this.N, S2) > this.maxCacheBytes)
        throw new InvalidArgumentError(
          'positions',
          `a request reaches position ${maxPos}; the KV cache cannot grow past ${this.maxCacheBytes} bytes`,
        );
      this.allocCache(this.N, S2);
    }
    this.ensureScratch(n);
    const ids = new Int32Array(n),
      pos = new Int32Array(n),
      slot = new Int32Array(n);
    let t = 0;
    for (const it of items) {
      for (let j = 0; j < it.tokens.length; j++, t++) {
        ids[t] = it.tokens[j];
        pos[t] = it.startPos + j;
        slot[t] = it.slot;
      }
    }
    const k = this.k;
    const S = this.S;
    const scale = 1 / Math.sqrt(D);
    const { x, xn, rstd, q, qPre, kk, kPre, v, att, hRstd, gate, up, h } = this;
    k.embeddingForward(x, this.W.embed, ids, n, C);
    for (let l = 0; l < L; l++) {
      const w = this.W.layers[l];
      const p = this.packed[l];
      const lv = this.lora?.layers[l];
      k.rmsnormForward(xn, rstd, x, w.inputNorm, n, C, eps);
      const qDst = w.qNorm ? qPre : q;
      const kDst = w.kNorm ? kPre : kk;
      this.linear(n, xn, w.qProj, p.q, qDst, false);
      this.linear(n, xn, w.kProj, p.k, kDst, false);
      this.linear(n, xn, w.vProj, p.v, v, false);
      if (lv) {
        this.loraAdd(lv.q, n, xn, qDst);
        this.loraAdd(lv.k, n, xn, kDst);
        this.loraAdd(lv.v, n, xn, v);
      }
      if (w.qBias) addBias(qDst, w.qBias, n, HD);
      if (w.kBias) addBias(kDst, w.kBias, n, KD);
      if (w.vBias) addBias(v, w.vBias, n, KD);
      if (w.qNorm && w.kNorm) {
        k.rmsnormForward(q, hRstd, qPre, w.qNorm, n * H, D, eps);
        k.rmsnormForward(kk, hRstd, kPre, w.kNorm, n * KV, D, eps);
      }
      k.ropeForward(q, pos, n, H, D, cfg.ropeTheta);
      k.ropeForward(kk, pos, n, KV, D, cfg.ropeTheta);
      const kc = this.kCache[l],
        vc = this.vCache[l];
      for (let i = 0; i < n; i++) {
        const dst = (slot[i] * S + pos[i]) * KD;
        kc.set(kk.subarray(i * KD, (i + 1) * KD), dst);
        vc.set(v.subarray(i * KD, (i + 1) * KD), dst);
      }
      k.attentionDecode(att, q, kc, vc, slot, pos, n, S, H, KV, D, scale);
      this.linear(n, att, w.oProj, p.o, x, true);
      if (lv) this.loraAdd(lv.o, n, att, x);
      k.rmsnormForward(xn, rstd, x, w.postNorm, n, C, eps);
      this.linear(n, xn, w.gateProj, p.gate, gate, false);
      this.linear(n, xn, w.upProj, p.up, up, false);
      if (lv) {
        this.loraAdd(lv.gate, n, xn, gate);
        this.loraAdd(lv.up, n, xn, up);
      }
      k.swigluForward(h, gate, up, n * F);
      this.linear(n, h, w.downProj, p.down, x, true);
      if (lv) this.loraAdd(lv.down, n, h, x);
    }
    // Gather the rows that need logits, final norm, LM head.
    const sel = m === n ? x : this.xnGather(items, m, C);
    k.rmsnormForward(xn, rstd, sel, this.W.finalNorm, m, C, eps);
    if (this.logits.length < m * V) this.logits = new Float32Array(Math.max(m * V, Math.min(this.logits.length * 2, 1 << 26)));
    this.linear(m, xn, this.W.lmHead, this.packedHead, this.logits, false);
    if (this.lora) this.loraAdd(this.lora.head, m, xn, this.logits);
    const out: Float32Array[] = [];
    let r = 0;
    for (const it of items) {
      const rows = it.allLogits ? it.tokens.length : 1;
      out.push(this.logits.subarray(r * V, (r + rows) * V));
      r += rows;
    }
    return out;
  }

  /** Rows of x that need logits (the last of each item, or all of an allLogits item), packed in order. */
  private xnGather(items: readonly DecodeItem[], m: number, C: number): Float32Array {
    const out = new Float32Array(m * C);
    let t = 0,
      r = 0;
    for (const it of items) {
      const len = it.tokens.length;
      if (it.allLogits) {
        out.set(this.x.subarray(t * C, (t + len) * C), r * C);
        r += len;
      } else {
        out.set(this.x.subarray((t + len - 1) * C, (t + len) * C), r * C);
        r += 1;
      }
      t += len;
    }
    return out;
  }
}

function addBias(x: Float32Array, b: Float32Array, T: number, N: number): void {
  for (let t = 0; t < T; t++) {
    const o = t * N;
    for (let j = 0; j < N; j++) x[o + j] += b[j];
  }
}
