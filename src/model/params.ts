/**
 * Parameters of a decoder-only transformer in ONE contiguous buffer with named views (llm.c style).
 * The same layout serves weights, gradients and the AdamW moments, so an optimizer step is one
 * kernel call over the whole buffer and gradient-norm clipping is one reduction.
 *
 * Tensor names and shapes are exactly those of Hugging Face `transformers` (and vLLM), so checkpoint
 * I/O is a copy per tensor. Linear weights are stored [out × in] (used as x·Wᵀ, an NT product).
 */
import type { ModelConfig } from './config.ts';
import { Rng } from '../util/rng.ts';

export type FloatBuffer = Float32Array | Float64Array;

export interface TensorSpec {
  /** Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight". */
  name: string;
  shape: number[];
  offset: number;
  size: number;
  /** How random init fills it. */
  init: 'normal' | 'ones' | 'zeros';
}

export interface ParamLayout {
  tensors: TensorSpec[];
  byName: Map<string, TensorSpec>;
  /** Total number of floats. */
  total: number;
}

/** Views of one layer (shapes in comments; C = hidden, H/KV heads, D head dim, F intermediate). */
export interface LayerViews<A extends FloatBuffer> {
  inputNorm: A; // [C]
  qProj: A; // [H*D × C]
  kProj: A; // [KV*D × C]
  vProj: A; // [KV*D × C]
  oProj: A; // [C × H*D]
  qBias: A | null; // [H*D]
  kBias: A | null; // [KV*D]
  vBias: A | null; // [KV*D]
  qNorm: A | null; // [D]
  kNorm: A | null; // [D]
  postNorm: A; // [C]
  gateProj: A; // [F × C]
  upProj: A; // [F × C]
  downProj: A; // [C × F]
}

export interface ModelViews<A extends FloatBuffer> {
  embed: A; // [V × C]
  layers: LayerViews<A>[];
  finalNorm: A; // [C]
  /** [V × C]; the same memory as `embed` when embeddings are tied. */
  lmHead: A;
}

export function buildLayout(cfg: ModelConfig): ParamLayout {
  const { vocabSize: V, hiddenSize: C, intermediateSize: F, numHeads: H, numKvHeads: KV, headDim: D } = cfg;
  const tensors: TensorSpec[] = [];
  let offset = 0;
  const add = (name: string, shape: number[], init: TensorSpec['init']) => {
    const size = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, shape, offset, size, init });
    offset += size;
  };
  add('model.embed_tokens.weight', [V, C], 'normal');
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [C], 'ones');
    add(`${p}.self_attn.q_proj.weight`, [H * D, C], 'normal');
    add(`${p}.self_attn.k_proj.weight`, [KV * D, C], 'normal');
    add(`${p}.self_attn.v_proj.weight`, [KV * D, C], 'normal');
    if (cfg.qkvBias) {
      add(`${p}.self_attn.q_proj.bias`, [H * D], 'zeros');
      add(`${p}.self_attn.k_proj.bias`, [KV * D], 'zeros');
      add(`${p}.self_attn.v_proj.bias`, [KV * D], 'zeros');
    }
    if (cfg.qkNorm) {
      add(`${p}.self_attn.q_norm.weight`, [D], 'ones');
      add(`${p}.self_attn.k_norm.weight`, [D], 'ones');
    }
    add(`${p}.self_attn.o_proj.weight`, [C, H * D], 'normal');
    add(`${p}.post_attention_layernorm.weight`, [C], 'ones');
    add(`${p}.mlp.gate_proj.weight`, [F, C], 'normal');
    add(`${p}.mlp.up_proj.weight`, [F, C], 'normal');
    add(`${p}.mlp.down_proj.weight`, [C, F], 'normal');
  }
  add('model.norm.weight', [C], 'ones');
  if (!cfg.tieWordEmbeddings) add('lm_head.weight', [V, C], 'normal');
  return { tensors, byName: new Map(tensors.map((t) => [t.name, t])), total: offset };
}

/** Named views into `buffer` (weights, gradients or optimizer moments — all share the layout). */
export function viewsOf<A extends FloatBuffer>(buffer: A, layout: ParamLayout, cfg: ModelConfig): ModelViews<A> {
  const v = (name: string): A => {
    const t = layout.byName.get(name);
    if (!t) throw new Error(`no tensor ${name} in layout`);
    return buffer.subarray(t.offset, t.offset + t.size) as A;
  };
  const opt = (name: string): A | null => (layout.byName.has(name) ? v(name) : null);
  const layers: LayerViews<A>[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    layers.push({
      inputNorm: v(`${p}.input_layernorm.weight`),
      qProj: v(`${p}.self_attn.q_proj.weight`),
      kProj: v(`${p}.self_attn.k_proj.weight`),
      vProj: v(`${p}.self_attn.v_proj.weight`),
      oProj: v(`${p}.self_attn.o_proj.weight`),
      qBias: opt(`${p}.self_attn.q_proj.bias`),
      kBias: opt(`${p}.self_attn.k_proj.bias`),
      vBias: opt(`${p}.self_attn.v_proj.bias`),
      qNorm: opt(`${p}.self_attn.q_norm.weight`),
      kNorm: opt(`${p}.self_attn.k_norm.weight`),
      postNorm: v(`${p}.post_attention_layernorm.weight`),
      gateProj: v(`${p}.mlp.gate_proj.weight`),
      upProj: v(`${p}.mlp.up_proj.weight`),
      downProj: v(`${p}.mlp.down_proj.weight`),
    });
  }
  const embed = v('model.embed_tokens.weight');
  return { embed, layers, finalNorm: v('model.norm.weight'), lmHead: cfg.tieWordEmbeddings ? embed : v('lm_head.weight') };
}

/** Random init as transformers does it: normal(0, initializer_range) for matrices, ones for norms, zeros for biases. */
export function initParams(buffer: FloatBuffer, layout: ParamLayout, cfg: ModelConfig, seed: number): void {
  const rng = new Rng(seed);
  for (const t of layout.tensors) {
    const view = buffer.subarray(t.offset, t.offset + t.size);
    if (t.init === 'ones') view.fill(1);
    else if (t.init === 'zeros') view.fill(0);
    else for (let i = 0; i < view.length; i++) view[i] = rng.normal() * cfg.initializerRange;
  }
}

export function countParams(cfg: ModelConfig): number {
  return buildLayout(cfg).total;
}
