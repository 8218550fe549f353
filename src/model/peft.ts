/**
 * LoRA adapters on disk in the PEFT layout, which transformers/PEFT, vLLM (`--lora-modules`,
 * `/v1/load_lora_adapter`) and SGLang (`--lora-paths`) load:
 *   <dir>/adapter_config.json        {peft_type: "LORA", task_type: "CAUSAL_LM", r, lora_alpha,
 *                                     target_modules, base_model_name_or_path, lora_dropout: 0,
 *                                     bias: "none", fan_in_fan_out: false, use_rslora: false, …}
 *   <dir>/adapter_model.safetensors  base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, in]
 *                                    base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight [out, r]
 *                                    … mlp.{gate,up,down}_proj …, base_model.model.lm_head.lora_{A,B}.weight
 * The scale is lora_alpha / r. Loading accepts any subset of the modules of lora.ts with one rank for
 * all (PEFT's rank_pattern / alpha_pattern, rsLoRA, DoRA and biases are refused with a one-line error
 * naming the field), so adapters trained elsewhere on the same base load too.
 *
 * `mergeLora` computes the merged weights W' = W + (alpha/r)·B·A for a full Hugging Face export; with
 * tied embeddings and an adapted lm_head the merged model is untied (its own lm_head.weight), since
 * the input embedding carries no adapter.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Kernels } from '../engine/kernels.ts';
import { FileFormatError } from '../core/errors.ts';
import type { ModelConfig } from './config.ts';
import { LORA_MODULES, LoraAdapter, type LoraModuleName } from './lora.ts';
import { buildLayout, viewsOf, type ParamLayout } from './params.ts';
import { readSafetensors, writeSafetensors } from './safetensors.ts';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

/** The adapter_config.json matpo writes (PEFT LoraConfig fields; others take PEFT's defaults). */
export function peftAdapterConfig(adapter: LoraAdapter, baseModel: string): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    r: adapter.rank,
    lora_alpha: adapter.alpha,
    lora_dropout: 0,
    target_modules: [...adapter.targets],
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    revision: null,
  };
}

/** Write an adapter directory (each file written to a temporary name and renamed). */
export function savePeftAdapter(dir: string, adapter: LoraAdapter, options: { baseModel: string }): void {
  mkdirSync(dir, { recursive: true });
  const tensors = adapter.tensors.map((t) => ({
    name: t.name,
    shape: t.shape,
    data: adapter.params.subarray(t.offset, t.offset + t.size),
  }));
  const metadata = { format: 'pt', matpo_lora_seed: String(adapter.seed) };
  writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), tensors, { dtype: 'F32', metadata });
  const file = join(dir, ADAPTER_CONFIG_FILE);
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(peftAdapterConfig(adapter, options.baseModel), null, 2) + '\n');
  renameSync(tmp, file);
}

/** Read an adapter directory for a base model of config `cfg` (f32 in memory whatever the dtype on disk). */
export function loadPeftAdapter(dir: string, cfg: ModelConfig): { adapter: LoraAdapter; baseModel: string | null } {
  const cfgFile = join(dir, ADAPTER_CONFIG_FILE);
  const weightsFile = join(dir, ADAPTER_WEIGHTS_FILE);
  if (!existsSync(dir)) throw new FileFormatError({ file: dir, message: 'adapter directory not found' });
  if (!existsSync(cfgFile)) throw new FileFormatError({ file: cfgFile, message: 'file not found (not a PEFT adapter directory)' });
  if (!existsSync(weightsFile)) {
    const bin = existsSync(join(dir, 'adapter_model.bin')) ? ' (adapter_model.bin is not read: convert it to safetensors)' : '';
    throw new FileFormatError({ file: weightsFile, message: `file not found${bin}` });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(cfgFile, 'utf8'));
  } catch (err) {
    throw new FileFormatError({ file: cfgFile, message: `not valid JSON (${(err as Error).message.split('\n')[0]})` });
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new FileFormatError({ file: cfgFile, message: 'expected a JSON object' });
  }
  const c = raw as Record<string, unknown>;
  const bad = (field: string, message: string) => new FileFormatError({ file: cfgFile, field, message });
  if (c.peft_type !== 'LORA') throw bad('peft_type', `expected "LORA", got ${JSON.stringify(c.peft_type)}`);
  const r = c.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw bad('r', `expected a positive integer, got ${JSON.stringify(r)}`);
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !(alpha > 0)) throw bad('lora_alpha', `expected a positive number, got ${JSON.stringify(alpha)}`);
  if (!Array.isArray(c.target_modules)) throw bad('target_modules', 'expected a list of module names (a regex string is not supported)');
  const targets: LoraModuleName[] = [];
  for (const m of c.target_modules) {
    if (!(LORA_MODULES as readonly unknown[]).includes(m)) {
      throw bad('target_modules', `unsupported module ${JSON.stringify(m)} (supported: ${LORA_MODULES.join(', ')})`);
    }
    targets.push(m as LoraModuleName);
  }
  if (targets.length === 0) throw bad('target_modules', 'is empty');
  if (c.use_rslora === true) throw bad('use_rslora', 'rsLoRA scaling is not supported');
  if (c.use_dora === true) throw bad('use_dora', 'DoRA is not supported');
  if (c.fan_in_fan_out === true) throw bad('fan_in_fan_out', 'must be false for Llama/Qwen linear layers');
  if (c.bias !== undefined && c.bias !== 'none') throw bad('bias', `only "none" is supported, got ${JSON.stringify(c.bias)}`);
  for (const f of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = c[f];
    if (v !== undefined && v !== null && (typeof v !== 'object' || Object.keys(v).length > 0)) {
      throw bad(f, 'per-module ranks or alphas are not supported');
    }
  }
  if (c.layers_to_transform !== undefined && c.layers_to_transform !== null) {
    throw bad('layers_to_transform', 'adapters on a subset of layers are not supported');
  }
  if (Array.isArray(c.modules_to_save) && c.modules_to_save.length > 0) {
    throw bad('modules_to_save', 'fully trained extra modules are not supported');
  }

  const adapter = new LoraAdapter(cfg, { rank: r, alpha, seed: 0, trainAttn: false, trainMlp: false, trainUnembed: false }, { targets });
  const byName = new Map(adapter.tensors.map((t) => [t.name, t]));
  const seen = new Set<string>();
  const header = readSafetensors(weightsFile, (entry) => {
    const spec = byName.get(entry.name);
    if (!spec) {
      const message = `unexpected tensor for target_modules ${JSON.stringify(targets)} on this base model`;
      throw new FileFormatError({ file: weightsFile, field: entry.name, message });
    }
    if (entry.shape.length !== 2 || entry.shape[0] !== spec.shape[0] || entry.shape[1] !== spec.shape[1]) {
      const message = `shape ${JSON.stringify(entry.shape)} does not match the base model's ${JSON.stringify(spec.shape)} at r = ${r}`;
      throw new FileFormatError({ file: weightsFile, field: entry.name, message });
    }
    seen.add(entry.name);
    return adapter.params.subarray(spec.offset, spec.offset + spec.size);
  });
  for (const t of adapter.tensors)
    if (!seen.has(t.name)) {
      throw new FileFormatError({ file: weightsFile, field: t.name, message: 'missing tensor' });
    }
  const seed = Number(header.metadata.matpo_lora_seed);
  if (Number.isInteger(seed) && seed >= 0) (adapter as { seed: number }).seed = seed;
  const base = typeof c.base_model_name_or_path === 'string' ? c.base_model_name_or_path : null;
  return { adapter, baseModel: base };
}

/**
 * Full weights with the adapter merged: W' = W + (alpha/r)·B·A per adapted module. Returns the config
 * and layout of the merged model (untied when the base ties embeddings and lm_head is adapted).
 */
export function mergeLora(
  cfg: ModelConfig,
  weights: Float32Array,
  adapter: LoraAdapter,
  kernels: Kernels,
): { config: ModelConfig; layout: ParamLayout; weights: Float32Array } {
  const untie = cfg.tieWordEmbeddings && adapter.head !== null;
  const config: ModelConfig = untie ? { ...cfg, tieWordEmbeddings: false } : cfg;
  const layout = buildLayout(config);
  const baseLayout = buildLayout(cfg);
  const out = new Float32Array(layout.total);
  for (const t of baseLayout.tensors) out.set(weights.subarray(t.offset, t.offset + t.size), layout.byName.get(t.name)!.offset);
  const W = viewsOf(out, layout, config);
  if (untie) W.lmHead.set(W.embed);
  const keyOf: Record<Exclude<LoraModuleName, 'lm_head'>, 'qProj' | 'kProj' | 'vProj' | 'oProj' | 'gateProj' | 'upProj' | 'downProj'> = {
    q_proj: 'qProj',
    k_proj: 'kProj',
    v_proj: 'vProj',
    o_proj: 'oProj',
    gate_proj: 'gateProj',
    up_proj: 'upProj',
    down_proj: 'downProj',
  };
  const r = adapter.rank;
  for (const lin of adapter.linears) {
    const target = lin.module === 'lm_head' ? W.lmHead : W.layers[lin.layer][keyOf[lin.module]];
    const sB = Float32Array.from(lin.B, (b) => b * adapter.scale);
    kernels.sgemm(false, false, lin.outF, lin.inF, r, sB, lin.A, target, true);
  }
  return { config, layout, weights: out };
}
