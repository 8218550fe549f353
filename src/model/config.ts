/**
 * Model configuration: a Hugging Face `config.json` for the Llama, Qwen2 and Qwen3 decoder-only
 * families, validated into one typed record. Anything the engine does not implement (another
 * architecture, rope scaling, an activation other than SiLU, MLP biases, sliding windows) is refused
 * with a one-line error naming the file and field rather than silently computing something else.
 */
import { FileFormatError, UnknownNameError } from '../core/errors.ts';

export type ModelFamily = 'llama' | 'qwen2' | 'qwen3';

export interface ModelConfig {
  family: ModelFamily;
  vocabSize: number; // V
  hiddenSize: number; // C
  intermediateSize: number; // F
  numLayers: number; // L
  numHeads: number; // H
  numKvHeads: number; // KV
  headDim: number; // D
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (Qwen2 always; Llama when attention_bias). */
  qkvBias: boolean;
  /** RMSNorm on each head of q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  initializerRange: number;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  /** dtype the weights are stored in on disk ('float32' | 'bfloat16' | 'float16'); compute is f32. */
  torchDtype: 'float32' | 'bfloat16' | 'float16';
}

const ARCHITECTURES: Record<string, ModelFamily> = {
  LlamaForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
};

/** Validate a parsed config.json. `file` is used in error messages. */
export function parseModelConfig(json: unknown, file = 'config.json'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new FileFormatError({ file, message: 'expected a JSON object' });
  }
  const c = json as Record<string, unknown>;
  const fail = (field: string, message: string): never => {
    throw new FileFormatError({ file, field, message });
  };
  const int = (field: string, fallback?: number): number => {
    const v = c[field] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
      fail(field, `expected a positive integer, got ${JSON.stringify(c[field])}`);
    return v as number;
  };
  const num = (field: string, fallback: number): number => {
    const v = c[field] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(field, `expected a positive number, got ${JSON.stringify(c[field])}`);
    return v as number;
  };
  const bool = (field: string, fallback: boolean): boolean => {
    const v = c[field] ?? fallback;
    if (typeof v !== 'boolean') fail(field, `expected true or false, got ${JSON.stringify(c[field])}`);
    return v as boolean;
  };

  const archs = c.architectures;
  let family: ModelFamily | undefined;
  if (Array.isArray(archs) && archs.length > 0) {
    family = ARCHITECTURES[String(archs[0])];
    if (!family)
      fail('architectures', `unsupported architecture "${String(archs[0])}"; supported: ${Object.keys(ARCHITECTURES).join(', ')}`);
  } else if (typeof c.model_type === 'string') {
    family = (['llama', 'qwen2', 'qwen3'] as const).find((f) => f === c.model_type);
    if (!family) fail('model_type', `unsupported model_type "${c.model_type}"; supported: llama, qwen2, qwen3`);
  } else {
    fail('architectures', 'missing (and no model_type either)');
  }

  const hiddenAct = c.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') fail('hidden_act', `unsupported activation "${String(hiddenAct)}"; only "silu" (SwiGLU) is implemented`);
  const ropeScaling = c.rope_scaling as { rope_type?: string; type?: string } | null | undefined;
  if (ropeScaling != null) {
    const kind = ropeScaling.rope_type ?? ropeScaling.type;
    if (kind !== 'default') fail('rope_scaling', `rope scaling "${String(kind)}" is not implemented`);
  }
  if (c.mlp_bias === true) fail('mlp_bias', 'MLP biases are not implemented');
  if (c.use_sliding_window === true) fail('use_sliding_window', 'sliding-window attention is not implemented');

  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) fail('num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  const headDim = c.head_dim == null ? hiddenSize / numHeads : int('head_dim');
  if (!Number.isInteger(headDim)) fail('hidden_size', `${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
  if (headDim % 2 !== 0) fail('head_dim', `${headDim} must be even for rotary embeddings`);

  const dtype = c.torch_dtype ?? c.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'bfloat16' && dtype !== 'float16')
    fail('torch_dtype', `unsupported dtype "${String(dtype)}"; supported: float32, bfloat16, float16`);

  const eos = c.eos_token_id;
  if (eos != null && typeof eos !== 'number' && !(Array.isArray(eos) && eos.every((x) => typeof x === 'number'))) {
    fail('eos_token_id', 'expected an integer or a list of integers');
  }

  return {
    family: family!,
    vocabSize: int('vocab_size'),
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    maxPositionEmbeddings: int('max_position_embeddings', 4096),
    tieWordEmbeddings: bool('tie_word_embeddings', false),
    qkvBias: family === 'qwen2' ? true : family === 'llama' ? bool('attention_bias', false) : bool('attention_bias', false),
    qkNorm: family === 'qwen3',
    initializerRange: num('initializer_range', 0.02),
    bosTokenId: typeof c.bos_token_id === 'number' ? c.bos_token_id : null,
    eosTokenId: (eos as number | number[] | null | undefined) ?? null,
    torchDtype: dtype as ModelConfig['torchDtype'],
  };
}

/** The config.json that transformers and vLLM read for this model. */
export function toHFConfig(cfg: ModelConfig): Record<string, unknown> {
  const arch = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' }[cfg.family];
  const out: Record<string, unknown> = {
    architectures: [arch],
    model_type: cfg.family,
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    head_dim: cfg.headDim,
    hidden_act: 'silu',
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: null,
    max_position_embeddings: cfg.maxPositionEmbeddings,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    attention_dropout: 0,
    initializer_range: cfg.initializerRange,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    torch_dtype: cfg.torchDtype,
    use_cache: true,
  };
  if (cfg.family === 'llama') {
    out.attention_bias = cfg.qkvBias;
    out.mlp_bias = false;
  }
  if (cfg.family === 'qwen3') out.attention_bias = false;
  if (cfg.family === 'qwen2') out.use_sliding_window = false;
  return out;
}

/** Named architectures for `matpo init-model --config <preset>`. The vocabulary comes from the tokenizer when one is given. */
export const MODEL_PRESETS: Record<string, Omit<ModelConfig, 'bosTokenId' | 'eosTokenId'>> = {
  /** Benchmark shape from the engine issue: ~28M parameters, Qwen3-style. */
  'bench-28m': {
    family: 'qwen3',
    vocabSize: 8192,
    hiddenSize: 512,
    intermediateSize: 1408,
    numLayers: 8,
    numHeads: 8,
    numKvHeads: 4,
    headDim: 64,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    maxPositionEmbeddings: 4096,
    tieWordEmbeddings: true,
    qkvBias: false,
    qkNorm: true,
    initializerRange: 0.02,
    torchDtype: 'float32',
  },
  /** The demo's model: small enough to warm-start and RL-train on two cores in minutes. */
  tiny: {
    family: 'qwen3',
    vocabSize: 4096,
    hiddenSize: 256,
    intermediateSize: 704,
    numLayers: 4,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 64,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    maxPositionEmbeddings: 4096,
    tieWordEmbeddings: true,
    qkvBias: false,
    qkNorm: true,
    initializerRange: 0.02,
    torchDtype: 'float32',
  },
  /** Smoke runs of the whole pipeline (`--quick`): tiny, but with room for a single agent's long context. */
  mini: {
    family: 'qwen3',
    vocabSize: 1024,
    hiddenSize: 64,
    intermediateSize: 176,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    maxPositionEmbeddings: 4096,
    tieWordEmbeddings: true,
    qkvBias: false,
    qkNorm: true,
    initializerRange: 0.02,
    torchDtype: 'float32',
  },
  /** For tests: a few thousand parameters. */
  micro: {
    family: 'qwen3',
    vocabSize: 512,
    hiddenSize: 32,
    intermediateSize: 64,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    maxPositionEmbeddings: 1024,
    tieWordEmbeddings: false,
    qkvBias: false,
    qkNorm: true,
    initializerRange: 0.02,
    torchDtype: 'float32',
  },
};

export function presetConfig(name: string, overrides: Partial<ModelConfig> = {}): ModelConfig {
  const preset = MODEL_PRESETS[name];
  if (!preset) throw new UnknownNameError({ kind: 'model preset', name, available: Object.keys(MODEL_PRESETS) });
  return { bosTokenId: null, eosTokenId: null, ...preset, ...overrides };
}
