/**
 * LoRA adapters (Hu et al. 2021) on the linear layers of the decoder, with the modules grouped as
 * Tinker's `lora_config` groups them: attention (q_proj, k_proj, v_proj, o_proj), MLP (gate_proj,
 * up_proj, down_proj) and unembedding (lm_head).
 *
 * A linear layer y = x·Wᵀ (W stored [out × in]) becomes
 *     y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ,   s = alpha / r,   A [r × in], B [out × r]
 * and only A and B train. Init as PEFT does it: A ~ kaiming-uniform(a = √5), i.e. U(−1/√in, 1/√in),
 * drawn from an Rng seeded by `seed`; B = 0, so the adapted model starts equal to the base.
 * Backward, with u = s·x·Aᵀ saved from forward and dy the gradient of y:
 *     dB += dyᵀ·u,   g = s·dy·B,   dA += gᵀ·x,   dx += g·A.
 * A merged model has W' = W + s·B·A (PEFT's `merge_and_unload`).
 *
 * `alpha` defaults to 32 (Tinker trains with a fixed alpha of 32; PEFT's own default is 8). The
 * scale is alpha / r (no rsLoRA). With tied embeddings the unembedding adapter applies to the output
 * projection only (PEFT wraps `lm_head` alone); the input embedding is untouched, and a merged export
 * of such a model writes a separate `lm_head.weight` with `tie_word_embeddings: false`.
 *
 * All adapter tensors live in ONE contiguous buffer (A's and B's in module order), like the model's
 * parameters, so AdamW and gradient-norm clipping are one kernel call each over the adapter alone.
 * Tensor names are PEFT's: `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in],
 * `….lora_B.weight` [out, r], `base_model.model.lm_head.lora_A.weight`. See `peft.ts` for the files.
 */
import { z } from 'zod';
import { ConfigError, InvalidArgumentError } from '../core/errors.ts';
import { Rng } from '../util/rng.ts';
import type { ModelConfig } from './config.ts';
import type { FloatBuffer } from './params.ts';

export interface LoraConfig {
  /** r: the adapter rank. */
  rank: number;
  /** Scale numerator: the update is (alpha / rank)·B·A. */
  alpha: number;
  /** Adapt q_proj, k_proj, v_proj, o_proj. */
  trainAttn: boolean;
  /** Adapt gate_proj, up_proj, down_proj. */
  trainMlp: boolean;
  /** Adapt lm_head. */
  trainUnembed: boolean;
  /** Seed of A's random init. */
  seed: number;
}

export const DEFAULT_LORA_ALPHA = 32;

export const ATTN_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export const MLP_MODULES = ['gate_proj', 'up_proj', 'down_proj'] as const;
export const LORA_MODULES = [...ATTN_MODULES, ...MLP_MODULES, 'lm_head'] as const;
export type LoraModuleName = (typeof LORA_MODULES)[number];

/** Fields other than rank are optional and take Tinker's defaults (all module groups on, seed 0, alpha 32). */
export const LoraConfigSchema = z
  .object({
    rank: z.number().int().min(1).max(4096),
    alpha: z.number().positive().finite().default(DEFAULT_LORA_ALPHA),
    trainAttn: z.boolean().default(true),
    trainMlp: z.boolean().default(true),
    trainUnembed: z.boolean().default(true),
    seed: z.number().int().min(0).default(0),
  })
  .strict()
  .refine((c) => c.trainAttn || c.trainMlp || c.trainUnembed, {
    message: 'at least one of trainAttn, trainMlp, trainUnembed must be true',
    path: ['trainAttn'],
  });

/** Validate a LoRA config; a bad field is a one-line ConfigError naming it (`lora.rank: …`). */
export function parseLoraConfig(raw: unknown, path = 'lora', file?: string): LoraConfig {
  const r = LoraConfigSchema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = [path, ...issue.path.map(String)].filter((s) => s !== '').join('.');
  throw new ConfigError({ path: field, message: issue.message, file });
}

/** Tinker's wire `lora_config` ({rank, seed?, train_attn, train_mlp, train_unembed}, alpha optional) → LoraConfig. */
export function loraConfigFromTinker(raw: unknown, path = 'lora_config'): LoraConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError({ path, message: 'expected an object' });
  const o = raw as Record<string, unknown>;
  const known = new Set(['rank', 'seed', 'alpha', 'train_attn', 'train_mlp', 'train_unembed']);
  for (const k of Object.keys(o)) if (!known.has(k)) throw new ConfigError({ path: `${path}.${k}`, message: 'unknown field' });
  const names: Record<string, string> = { trainAttn: 'train_attn', trainMlp: 'train_mlp', trainUnembed: 'train_unembed' };
  const r = LoraConfigSchema.safeParse({
    rank: o.rank,
    alpha: o.alpha ?? undefined,
    seed: o.seed ?? undefined,
    trainAttn: o.train_attn,
    trainMlp: o.train_mlp,
    trainUnembed: o.train_unembed,
  });
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const key = String(issue.path[0] ?? '');
  throw new ConfigError({ path: key ? `${path}.${names[key] ?? key}` : path, message: issue.message });
}

/** The module names a config adapts, in LORA_MODULES order. */
export function targetModulesOf(c: Pick<LoraConfig, 'trainAttn' | 'trainMlp' | 'trainUnembed'>): LoraModuleName[] {
  return [...(c.trainAttn ? ATTN_MODULES : []), ...(c.trainMlp ? MLP_MODULES : []), ...(c.trainUnembed ? ['lm_head' as const] : [])];
}

/** One adapted linear layer: views of A, B and their gradients in the adapter's buffers. */
export interface LoraLinear<A extends FloatBuffer = Float32Array> {
  module: LoraModuleName;
  /** Decoder layer, or -1 for lm_head. */
  layer: number;
  inF: number;
  outF: number;
  A: A; // [r × in]
  B: A; // [out × r]
  gA: A;
  gB: A;
}

export interface LoraLayerViews<A extends FloatBuffer = Float32Array> {
  q: LoraLinear<A> | null;
  k: LoraLinear<A> | null;
  v: LoraLinear<A> | null;
  o: LoraLinear<A> | null;
  gate: LoraLinear<A> | null;
  up: LoraLinear<A> | null;
  down: LoraLinear<A> | null;
}

export interface LoraTensorSpec {
  /** PEFT name, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight. */
  name: string;
  shape: [number, number];
  offset: number;
  size: number;
}

const LAYER_KEYS: Record<Exclude<LoraModuleName, 'lm_head'>, keyof LoraLayerViews> = {
  q_proj: 'q',
  k_proj: 'k',
  v_proj: 'v',
  o_proj: 'o',
  gate_proj: 'gate',
  up_proj: 'up',
  down_proj: 'down',
};

/** PEFT prefix of a module's tensors (without `.lora_A.weight`). */
export function peftModulePrefix(module: LoraModuleName, layer: number): string {
  if (module === 'lm_head') return 'base_model.model.lm_head';
  const group = (ATTN_MODULES as readonly string[]).includes(module) ? 'self_attn' : 'mlp';
  return `base_model.model.model.layers.${layer}.${group}.${module}`;
}

/** [out, in] of a module's base weight. */
export function moduleShape(cfg: ModelConfig, module: LoraModuleName): [number, number] {
  const { hiddenSize: C, numHeads: H, numKvHeads: KV, headDim: D, intermediateSize: F, vocabSize: V } = cfg;
  switch (module) {
    case 'q_proj':
      return [H * D, C];
    case 'k_proj':
    case 'v_proj':
      return [KV * D, C];
    case 'o_proj':
      return [C, H * D];
    case 'gate_proj':
    case 'up_proj':
      return [F, C];
    case 'down_proj':
      return [C, F];
    case 'lm_head':
      return [V, C];
  }
}

/**
 * The adapter of one model: which modules, rank, scale, the parameter buffer and its gradient buffer
 * (same layout). Float64 buffers work with the reference kernels (gradient checks).
 */
export class LoraAdapter<A extends FloatBuffer = Float32Array> {
  readonly cfg: ModelConfig;
  readonly rank: number;
  readonly alpha: number;
  readonly seed: number;
  /** alpha / rank. */
  readonly scale: number;
  readonly targets: readonly LoraModuleName[];
  readonly tensors: LoraTensorSpec[] = [];
  readonly total: number;
  readonly params: A;
  readonly grads: A;
  readonly layers: LoraLayerViews<A>[] = [];
  readonly head: LoraLinear<A> | null = null;
  /** Every adapted linear, in tensor order. */
  readonly linears: LoraLinear<A>[] = [];

  /**
   * `targets` defaults to the modules of `config`'s three groups. Buffers are allocated of the type
   * of `like` (Float32Array unless given) and A is initialised from `config.seed`, B = 0.
   */
  constructor(cfg: ModelConfig, config: LoraConfig, options: { targets?: readonly LoraModuleName[]; like?: A } = {}) {
    if (!(Number.isInteger(config.rank) && config.rank >= 1)) {
      throw new InvalidArgumentError('lora.rank', `expected a positive integer, got ${config.rank}`);
    }
    if (!(config.alpha > 0 && Number.isFinite(config.alpha))) {
      throw new InvalidArgumentError('lora.alpha', `expected a positive number, got ${config.alpha}`);
    }
    this.cfg = cfg;
    this.rank = config.rank;
    this.alpha = config.alpha;
    this.seed = config.seed;
    this.scale = config.alpha / config.rank;
    const targets = options.targets ?? targetModulesOf(config);
    if (targets.length === 0) {
      throw new InvalidArgumentError('lora', 'no module to adapt (trainAttn, trainMlp and trainUnembed are all false)');
    }
    this.targets = LORA_MODULES.filter((m) => targets.includes(m));
    const r = this.rank;
    const plan: { module: LoraModuleName; layer: number }[] = [];
    for (let l = 0; l < cfg.numLayers; l++) for (const m of this.targets) if (m !== 'lm_head') plan.push({ module: m, layer: l });
    if (this.targets.includes('lm_head')) plan.push({ module: 'lm_head', layer: -1 });
    let offset = 0;
    for (const p of plan) {
      const [out, inF] = moduleShape(cfg, p.module);
      const prefix = peftModulePrefix(p.module, p.layer);
      this.tensors.push({ name: `${prefix}.lora_A.weight`, shape: [r, inF], offset, size: r * inF });
      offset += r * inF;
      this.tensors.push({ name: `${prefix}.lora_B.weight`, shape: [out, r], offset, size: out * r });
      offset += out * r;
    }
    this.total = offset;
    const Ctor = (options.like?.constructor ?? Float32Array) as { new (n: number): A };
    this.params = new Ctor(offset);
    this.grads = new Ctor(offset);
    for (let l = 0; l < cfg.numLayers; l++) this.layers.push({ q: null, k: null, v: null, o: null, gate: null, up: null, down: null });
    plan.forEach((p, i) => {
      const a = this.tensors[2 * i];
      const b = this.tensors[2 * i + 1];
      const lin: LoraLinear<A> = {
        module: p.module,
        layer: p.layer,
        inF: a.shape[1],
        outF: b.shape[0],
        A: this.params.subarray(a.offset, a.offset + a.size) as A,
        B: this.params.subarray(b.offset, b.offset + b.size) as A,
        gA: this.grads.subarray(a.offset, a.offset + a.size) as A,
        gB: this.grads.subarray(b.offset, b.offset + b.size) as A,
      };
      this.linears.push(lin);
      if (p.module === 'lm_head') (this as { head: LoraLinear<A> | null }).head = lin;
      else (this.layers[p.layer] as unknown as Record<string, LoraLinear<A>>)[LAYER_KEYS[p.module]] = lin;
    });
    this.initWeights();
  }

  /** PEFT's init: A ~ U(−1/√in, 1/√in) (kaiming-uniform with a = √5) from Rng(seed), B = 0. */
  initWeights(): void {
    const rng = new Rng(this.seed);
    for (const lin of this.linears) {
      const bound = 1 / Math.sqrt(lin.inF);
      for (let i = 0; i < lin.A.length; i++) lin.A[i] = (2 * rng.next() - 1) * bound;
      lin.B.fill(0);
    }
    this.grads.fill(0);
  }

  /** The LoraConfig this adapter corresponds to (groups on when any of their modules is adapted). */
  config(): LoraConfig {
    const has = (ms: readonly string[]) => ms.some((m) => this.targets.includes(m as LoraModuleName));
    return {
      rank: this.rank,
      alpha: this.alpha,
      seed: this.seed,
      trainAttn: has(ATTN_MODULES),
      trainMlp: has(MLP_MODULES),
      trainUnembed: has(['lm_head']),
    };
  }

  zeroGrads(): void {
    this.grads.fill(0);
  }
}
