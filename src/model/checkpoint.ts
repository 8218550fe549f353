/**
 * Hugging Face model directories: `config.json`, `model.safetensors` (or shards named
 * `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`), `generation_config.json`,
 * and the tokenizer files copied alongside. Tensor names and shapes are those of `params.ts`, which are
 * exactly what transformers and vLLM load.
 *
 * Loading fills one contiguous Float32Array in the parameter layout, tensor by tensor, straight from
 * disk (f32/bf16/f16 are widened to f32). Saving writes f32 by default (a reload is bit-exact) or
 * bf16/f16 on request; every file is written to a temporary name and renamed.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FileFormatError } from '../core/errors.ts';
import { parseModelConfig, toHFConfig, type ModelConfig } from './config.ts';
import { buildLayout, type ParamLayout } from './params.ts';
import { readSafetensors, readShardIndex, writeSafetensors, type SafetensorsDtype, type TensorToWrite } from './safetensors.ts';

export interface LoadedModel {
  config: ModelConfig;
  layout: ParamLayout;
  weights: Float32Array;
  dir: string;
}

/** Tokenizer files copied into a saved model directory when present (the first two are required). */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'] as const;

const DTYPE_NAMES: Record<SafetensorsDtype, ModelConfig['torchDtype']> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' };

/** Read and validate `<dir>/config.json`. */
export function loadModelConfig(dir: string): ModelConfig {
  const file = join(dir, 'config.json');
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new FileFormatError({ file: dir, message: 'model directory not found' });
  if (!existsSync(file)) throw new FileFormatError({ file, message: 'file not found' });
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FileFormatError({ file, message: `not valid JSON (${(err as Error).message.split('\n')[0]})`, cause: err });
  }
  return parseModelConfig(json, file);
}

/** Load a model directory's config and weights (f32 in memory whatever the dtype on disk). */
export function loadModelDir(dir: string): LoadedModel {
  const config = loadModelConfig(dir);
  const layout = buildLayout(config);
  const weights = new Float32Array(layout.total);
  const single = join(dir, 'model.safetensors');
  const indexFile = join(dir, 'model.safetensors.index.json');

  // Which file holds which tensor.
  let shards: Map<string, string[]>; // file → names expected there (from the index), or all in one file
  let weightMap: Map<string, string> | null = null;
  if (existsSync(single)) {
    shards = new Map([[single, []]]);
  } else if (existsSync(indexFile)) {
    weightMap = readShardIndex(indexFile);
    shards = new Map();
    for (const [name, shard] of weightMap) {
      const f = join(dir, shard);
      if (!shards.has(f)) shards.set(f, []);
      shards.get(f)!.push(name);
    }
  } else {
    throw new FileFormatError({ file: single, message: 'file not found (and no model.safetensors.index.json either)' });
  }

  for (const file of shards.keys()) if (!existsSync(file)) throw new FileFormatError({ file, message: 'file not found' });
  const seen = new Set<string>();
  for (const [file, namesFromIndex] of shards) {
    const header = readSafetensors(file, (entry) => {
      if (weightMap && weightMap.get(entry.name) !== undefined && join(dir, weightMap.get(entry.name)!) !== file) {
        throw new FileFormatError({
          file,
          field: entry.name,
          message: `tensor also present here but the index maps it to ${weightMap.get(entry.name)}`,
        });
      }
      const spec = layout.byName.get(entry.name);
      if (!spec) {
        if (isIgnorable(entry.name, config)) return null;
        throw new FileFormatError({ file, field: entry.name, message: `unexpected tensor for a ${config.family} model with this config` });
      }
      if (seen.has(entry.name)) throw new FileFormatError({ file, field: entry.name, message: 'tensor appears in more than one shard' });
      if (entry.shape.length !== spec.shape.length || entry.shape.some((d, i) => d !== spec.shape[i])) {
        throw new FileFormatError({
          file,
          field: entry.name,
          message: `shape ${JSON.stringify(entry.shape)} does not match the config's ${JSON.stringify(spec.shape)}`,
        });
      }
      seen.add(entry.name);
      return weights.subarray(spec.offset, spec.offset + spec.size);
    });
    for (const name of namesFromIndex) {
      if (!header.tensors.has(name))
        throw new FileFormatError({
          file,
          field: name,
          message: `tensor listed in model.safetensors.index.json is missing from the shard`,
        });
    }
  }
  for (const spec of layout.tensors) {
    if (!seen.has(spec.name)) {
      const where = weightMap ? indexFile : single;
      throw new FileFormatError({ file: where, field: spec.name, message: 'missing tensor' });
    }
  }
  return { config, layout, weights, dir };
}

/** Tensors a checkpoint may carry that this layout does not use. */
function isIgnorable(name: string, cfg: ModelConfig): boolean {
  if (name === 'lm_head.weight' && cfg.tieWordEmbeddings) return true; // some exporters write the tied head anyway
  return /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/.test(name); // old Llama exports
}

export interface SaveOptions {
  config: ModelConfig;
  layout: ParamLayout;
  weights: Float32Array;
  /** Directory with tokenizer.json and tokenizer_config.json to copy alongside. */
  tokenizerDir?: string;
  /** Tokenizer files held in memory (name → bytes, see `readTokenizerFiles`), written alongside. */
  tokenizerFiles?: ReadonlyMap<string, Uint8Array>;
  /** On-disk dtype; default F32 (bit-exact reload). */
  dtype?: SafetensorsDtype;
  /** Split into shards when the weights exceed this many bytes (default 4 GiB). */
  maxShardBytes?: number;
  /** Extra string metadata for the safetensors header. */
  metadata?: Record<string, string>;
}

/** Write a Hugging Face model directory. Each file is written atomically (temporary name + rename). */
export function saveModelDir(dir: string, options: SaveOptions): void {
  const { layout, weights } = options;
  const dtype = options.dtype ?? 'F32';
  const config: ModelConfig = { ...options.config, torchDtype: DTYPE_NAMES[dtype] };
  if (weights.length !== layout.total)
    throw new FileFormatError({ file: dir, message: `weights have ${weights.length} floats, the layout needs ${layout.total}` });
  mkdirSync(dir, { recursive: true });

  const tensors: TensorToWrite[] = layout.tensors.map((t) => ({
    name: t.name,
    shape: t.shape,
    data: weights.subarray(t.offset, t.offset + t.size),
  }));
  const bytesPer = dtype === 'F32' ? 4 : 2;
  const maxShard = options.maxShardBytes ?? 4 * 1024 ** 3;
  const groups: TensorToWrite[][] = [[]];
  let groupBytes = 0;
  for (const t of tensors) {
    const b = t.data.length * bytesPer;
    if (groupBytes > 0 && groupBytes + b > maxShard) {
      groups.push([]);
      groupBytes = 0;
    }
    groups[groups.length - 1].push(t);
    groupBytes += b;
  }
  const metadata = { format: 'pt', ...options.metadata };
  const single = join(dir, 'model.safetensors');
  const indexFile = join(dir, 'model.safetensors.index.json');
  if (groups.length === 1) {
    writeSafetensors(single, tensors, { dtype, metadata });
    removeIfExists(indexFile);
  } else {
    const n = groups.length;
    const weightMap: Record<string, string> = {};
    groups.forEach((g, i) => {
      const name = `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
      writeSafetensors(join(dir, name), g, { dtype, metadata });
      for (const t of g) weightMap[t.name] = name;
    });
    writeJsonAtomic(indexFile, { metadata: { total_size: weights.length * bytesPer }, weight_map: weightMap });
    removeIfExists(single);
  }
  // Shards of an earlier save with a different shard count would confuse readers that glob for them.
  const current = new Set(
    groups.length === 1
      ? []
      : groups.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(groups.length).padStart(5, '0')}.safetensors`),
  );
  for (const f of readdirSync(dir)) if (/^model-\d{5}-of-\d{5}\.safetensors$/.test(f) && !current.has(f)) removeIfExists(join(dir, f));

  writeJsonAtomic(join(dir, 'config.json'), toHFConfig(config));
  const generation: Record<string, unknown> = { do_sample: true, temperature: 1.0, top_p: 1.0, top_k: 0 };
  if (config.bosTokenId !== null) generation.bos_token_id = config.bosTokenId;
  if (config.eosTokenId !== null) generation.eos_token_id = config.eosTokenId;
  writeJsonAtomic(join(dir, 'generation_config.json'), generation);

  if (options.tokenizerDir !== undefined) copyTokenizerFiles(options.tokenizerDir, dir);
  for (const [name, bytes] of options.tokenizerFiles ?? []) {
    const file = join(dir, name);
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, bytes);
    renameSync(tmp, file);
  }
}

/**
 * The tokenizer files of a model directory that are present, read into memory (name → bytes), so
 * that a model loaded from a directory can write a complete directory later even if that one is gone
 * (a pruned checkpoint). Empty for a bare weights directory.
 */
export function readTokenizerFiles(dir: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  for (const name of TOKENIZER_FILES) {
    const file = join(dir, name);
    if (!existsSync(file)) continue;
    try {
      files.set(name, readFileSync(file));
    } catch (err) {
      throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}` });
    }
  }
  return files;
}

/** Copy tokenizer files from `from` to `to` (tokenizer.json and tokenizer_config.json are required). */
export function copyTokenizerFiles(from: string, to: string): void {
  if (resolve(from) === resolve(to)) return;
  for (const [i, name] of TOKENIZER_FILES.entries()) {
    const src = join(from, name);
    if (!existsSync(src)) {
      if (i < 2) throw new FileFormatError({ file: src, message: 'file not found (needed to save a model with its tokenizer)' });
      continue;
    }
    const dst = join(to, name);
    const tmp = `${dst}.tmp-${process.pid}`;
    copyFileSync(src, tmp);
    renameSync(tmp, dst);
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  renameSync(tmp, file);
}

function removeIfExists(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    /* not there */
  }
}
