/**
 * The kernel contract of the embedded engine. Two implementations exist: the native addon
 * (`native.ts`, the only file that loads it) and the naive TypeScript reference (`reference.ts`),
 * which is the living definition every native kernel is tested against and the fallback when the
 * addon cannot load.
 *
 * Conventions (llm.c style): flat row-major Float32Array buffers, dimensions last in the argument
 * list; every *Backward accumulates (+=) into its gradient outputs, never overwrites, so callers
 * zero gradients once per step. Forward outputs are overwritten.
 *
 * Dimension legend:
 *   T  = tokens in a packed batch (sequences laid end to end, no padding)
 *   B  = sequences in a packed batch; cuSeqlens[B+1] holds their start offsets (cuSeqlens[0] = 0)
 *   C  = model width (hidden_size)
 *   H  = query heads, KV = key/value heads (GQA: H % KV == 0, query head h uses kv head h / (H/KV))
 *   D  = head dim
 *   F  = MLP intermediate size
 *   V  = vocabulary size
 *   M, N, K = SGEMM dimensions
 */
export interface Kernels {
  readonly name: 'native' | 'reference';
  /** Which SIMD path the native code selected at run time ('avx512' | 'avx2' | 'portable'), 'ts' for the reference. */
  readonly isa: string;
  /** Threads used by the kernels (the native pool size; 1 for the reference). */
  threads(): number;
  setThreads(n: number): void;

  /**
   * C[M×N] = (accumulate ? C : 0) + op(A)·op(B), row-major.
   * A is M×K (transA=false) or K×M (transA=true); B is K×N (transB=false) or N×K (transB=true).
   * Variants that matter: NN (x·W), NT (x·Wᵀ, HF Linear with W stored [out×in]), TN (gradient of W).
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    B: Float32Array,
    C: Float32Array,
    accumulate: boolean,
  ): void;

  /**
   * Pre-pack a weight W (stored [N×K], used as op(B)=Wᵀ in NT products) for repeated small-M products
   * (decoding). Returns an opaque handle usable with sgemmPacked. The reference returns W itself.
   */
  packWeightNT(W: Float32Array, N: number, K: number): PackedWeight;
  /** C[M×N] = (accumulate ? C : 0) + A[M×K]·Wᵀ with a packed W. */
  sgemmPacked(M: number, A: Float32Array, W: PackedWeight, C: Float32Array, accumulate: boolean): void;

  /** out[T×C] = x / rms(x) * weight; rstd[T] saved for backward. rms = sqrt(mean(x²) + eps). */
  rmsnormForward(out: Float32Array, rstd: Float32Array, x: Float32Array, weight: Float32Array, T: number, C: number, eps: number): void;
  /** dx[T×C] += …, dweight[C] += … */
  rmsnormBackward(
    dx: Float32Array,
    dweight: Float32Array,
    dout: Float32Array,
    x: Float32Array,
    weight: Float32Array,
    rstd: Float32Array,
    T: number,
    C: number,
  ): void;

  /**
   * In-place rotary embedding, Hugging Face "rotate half" convention (Llama/Qwen): for each head,
   * pairs (i, i + D/2) rotate by angle pos * theta^(-2i/D). x is [T×H×D]; positions[T].
   */
  ropeForward(x: Float32Array, positions: Int32Array, T: number, H: number, D: number, theta: number): void;
  /** In-place inverse rotation of the gradient (dx = Rᵀ·dout), same layout. */
  ropeBackward(dx: Float32Array, positions: Int32Array, T: number, H: number, D: number, theta: number): void;

  /**
   * Causal self-attention over packed variable-length sequences with GQA.
   * q[T×H×D], k[T×KV×D], v[T×KV×D] → out[T×H×D]; lse[T×H] (log-sum-exp of scaled scores) saved for backward.
   * A token attends to positions ≤ itself within its own sequence only.
   */
  attentionForward(
    out: Float32Array,
    lse: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    cuSeqlens: Int32Array,
    B: number,
    H: number,
    KV: number,
    D: number,
    scale: number,
  ): void;
  /** dq, dk, dv += … (same layouts as q, k, v). */
  attentionBackward(
    dq: Float32Array,
    dk: Float32Array,
    dv: Float32Array,
    dout: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    out: Float32Array,
    lse: Float32Array,
    cuSeqlens: Int32Array,
    B: number,
    H: number,
    KV: number,
    D: number,
    scale: number,
  ): void;

  /**
   * Attention of n new query tokens against per-sequence KV caches (decoding / prefill with a cache).
   * q[n×H×D]; kCache/vCache are one buffer each, laid out as slots of [S×KV×D] (S = slot capacity).
   * Query i belongs to cache slot slot[i] and sits at absolute position pos[i]; it attends to cache
   * positions 0..pos[i] of that slot (the caller has already written k/v for position pos[i]).
   * out[n×H×D].
   */
  attentionDecode(
    out: Float32Array,
    q: Float32Array,
    kCache: Float32Array,
    vCache: Float32Array,
    slot: Int32Array,
    pos: Int32Array,
    n: number,
    S: number,
    H: number,
    KV: number,
    D: number,
    scale: number,
  ): void;

  /** out[n] = silu(gate) * up, elementwise over n = T×F. */
  swigluForward(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;
  /** dgate[n] += …, dup[n] += … */
  swigluBackward(dgate: Float32Array, dup: Float32Array, dout: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;

  /** out[T×C] = table[ids[t]] (table is [V×C]). Ids are validated by the caller. */
  embeddingForward(out: Float32Array, table: Float32Array, ids: Int32Array, T: number, C: number): void;
  /** dtable[ids[t]] += dout[t] (scatter-add). */
  embeddingBackward(dtable: Float32Array, dout: Float32Array, ids: Int32Array, T: number, C: number): void;

  /**
   * Fused log-softmax + gather over logits[T×V]: logprob[t] = logits[t, targets[t]] − lse[t];
   * lse[T] saved for backward; entropy[T] (of the full distribution) written when given.
   * Intended for chunks of tokens so a full [T×V] buffer never exists for a long batch.
   */
  logprobsForward(
    logprob: Float32Array,
    lse: Float32Array,
    entropy: Float32Array | null,
    logits: Float32Array,
    targets: Int32Array,
    T: number,
    V: number,
  ): void;
  /**
   * dlogits[T×V] = dlogprob[t] · (onehot(target) − softmax(logits[t])) (+ dentropy[t] · dH/dlogits when
   * dentropy is given). Overwrites dlogits (it is a chunk-local scratch buffer, not a parameter gradient).
   */
  logprobsBackward(
    dlogits: Float32Array,
    dlogprob: Float32Array,
    dentropy: Float32Array | null,
    logits: Float32Array,
    lse: Float32Array,
    targets: Int32Array,
    T: number,
    V: number,
  ): void;

  /**
   * AdamW with decoupled weight decay, in place over n parameters:
   * m = b1 m + (1−b1) g; v = b2 v + (1−b2) g²; p −= lr·wd·p; p −= lr · (m/(1−b1^step)) / (sqrt(v/(1−b2^step)) + eps).
   * `step` is 1-based. `gradScale` multiplies g first (used for global-norm clipping and loss scaling).
   */
  adamw(
    params: Float32Array,
    grads: Float32Array,
    m: Float32Array,
    v: Float32Array,
    n: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
    gradScale: number,
  ): void;

  /** Σ x² over n elements, accumulated in float64. */
  sumSquares(x: Float32Array, n: number): number;
}

/** Opaque handle of a pre-packed weight (see Kernels.packWeightNT). */
export interface PackedWeight {
  readonly N: number;
  readonly K: number;
}
