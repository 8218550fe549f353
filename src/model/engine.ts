/**
 * The engine host object: one model's config, parameter layout and buffers (weights, gradients,
 * AdamW moments m and v, step counter), the kernels, and the training API on top of the transformer:
 * per-token logprobs/entropies of given sequences, forward/backward of micro-batches bounded by a
 * token budget with gradients accumulating until `optimStep`, AdamW with global-norm clipping, and
 * save/load of the optimizer state. Everything here is synchronous; `EmbeddedPolicy` runs it on a
 * worker thread.
 *
 * `weightsVersion` increases whenever the weights change, so a sampler holding packed weights or
 * KV caches knows to refresh them.
 *
 * LoRA (`enableLora` / `loadAdapter`, see lora.ts and peft.ts): the base weights freeze, training and
 * the optimizer (m, v, gradient norm, clipping) cover the adapter alone, and the transformer and the
 * sampler run base + adapter. `save` then writes the adapter in the PEFT layout; `saveMerged` writes a
 * full model directory with the adapter merged in.
 */
import { mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Kernels } from '../engine/kernels.ts';
import { FileFormatError, InvalidArgumentError } from '../core/errors.ts';
import type { Datum } from '../core/records.ts';
import type { ForwardBackwardResult, ForwardOutput, LossFn, OptimParams, OptimResult } from '../core/policy.ts';
import type { ModelConfig } from './config.ts';
import { buildLayout, type ParamLayout } from './params.ts';
import { loadModelDir, readTokenizerFiles, saveModelDir } from './checkpoint.ts';
import { Sampler, type SamplerOptions } from './sampler.ts';
import { Transformer, packSequences, type ForwardContext } from './transformer.ts';
import { LoraAdapter, type LoraConfig } from './lora.ts';
import { loadPeftAdapter, mergeLora, savePeftAdapter } from './peft.ts';

export const DEFAULT_MICRO_BATCH_TOKENS = 4096;

/** Split sequence indices into consecutive groups of at most `budget` tokens (a longer sequence is alone). */
export function splitByTokens(lengths: readonly number[], budget: number): number[][] {
  if (!(budget > 0)) throw new InvalidArgumentError('microBatchTokens', `must be positive, got ${budget}`);
  const groups: number[][] = [];
  let cur: number[] = [];
  let n = 0;
  lengths.forEach((len, i) => {
    if (cur.length > 0 && n + len > budget) {
      groups.push(cur);
      cur = [];
      n = 0;
    }
    cur.push(i);
    n += len;
  });
  if (cur.length > 0) groups.push(cur);
  return groups;
}

export interface MicroForward {
  /** Per-sequence logprobs / entropies (fresh arrays, safe to transfer). */
  logprobs: Float32Array[];
  entropies: Float32Array[];
  tokens: number;
}

export class Engine {
  readonly cfg: ModelConfig;
  readonly layout: ParamLayout;
  readonly weights: Float32Array;
  readonly grads: Float32Array;
  /** AdamW moments of the trainable parameters: the whole model, or the LoRA adapter alone. */
  m: Float32Array;
  v: Float32Array;
  step = 0;
  readonly kernels: Kernels;
  readonly model: Transformer<Float32Array>;
  /** Increases on every weight change (optimizer step, load). */
  weightsVersion = 0;
  /** Tokens whose gradients are accumulated since the last optimStep. */
  private pendingTokens = 0;
  private samplerInstance: Sampler | null = null;
  private pending: { ctx: ForwardContext; lengths: number[] } | null = null;
  private adapter: LoraAdapter | null = null;

  /** Directory the model was loaded from. */
  sourceDir: string | null = null;
  /**
   * The tokenizer files (tokenizer.json, tokenizer_config.json with the chat template, …) read at
   * load, written by every `save`: a saved directory is complete whatever happened to the source.
   */
  tokenizerFiles: ReadonlyMap<string, Uint8Array> = new Map();

  /** Load a Hugging Face model directory (config.json + safetensors, and its tokenizer files into memory). */
  static load(dir: string, kernels: Kernels): Engine {
    const loaded = loadModelDir(dir);
    const tokenizerFiles = readTokenizerFiles(loaded.dir);
    const e = new Engine(loaded.config, loaded.weights, kernels);
    e.sourceDir = loaded.dir;
    e.tokenizerFiles = tokenizerFiles;
    return e;
  }

  /**
   * Write a Hugging Face model directory with the current weights and the tokenizer files held since
   * load; with LoRA on, the adapter in the PEFT layout instead (`saveAdapter`).
   */
  save(dir: string): void {
    if (this.adapter) this.saveAdapter(dir);
    else saveModelDir(dir, { config: this.cfg, layout: this.layout, weights: this.weights, tokenizerFiles: this.tokenizerFiles });
  }

  /** The LoRA adapter being trained, or null (full fine-tuning). */
  get lora(): LoraAdapter | null {
    return this.adapter;
  }

  /**
   * Freeze the base and train a fresh adapter (A seeded from config.seed, B = 0, so outputs are
   * unchanged until the first step). Optimizer state restarts (step 0) and covers the adapter only.
   */
  enableLora(config: LoraConfig): LoraAdapter {
    this.useAdapter(new LoraAdapter(this.cfg, config));
    return this.adapter!;
  }

  /** Freeze the base and continue training (or just serve) the PEFT adapter in `dir`. */
  loadAdapter(dir: string): LoraAdapter {
    this.useAdapter(loadPeftAdapter(dir, this.cfg).adapter);
    return this.adapter!;
  }

  private useAdapter(adapter: LoraAdapter): void {
    this.pending = null;
    this.adapter = adapter;
    this.model.setLora(adapter, { trainBase: false });
    this.grads.fill(0);
    this.pendingTokens = 0;
    this.m = new Float32Array(adapter.total);
    this.v = new Float32Array(adapter.total);
    this.step = 0;
    this.weightsVersion++;
    this.samplerInstance?.setLora(adapter);
  }

  /** Write the adapter in the PEFT layout (adapter_config.json + adapter_model.safetensors). */
  saveAdapter(dir: string, options: { baseModel?: string } = {}): void {
    if (!this.adapter) throw new InvalidArgumentError('lora', 'this engine has no LoRA adapter (enableLora or loadAdapter first)');
    const baseModel = options.baseModel ?? (this.sourceDir !== null ? resolve(this.sourceDir) : 'matpo-model');
    savePeftAdapter(dir, this.adapter, { baseModel });
  }

  /** Write a full Hugging Face model directory with W + (alpha/r)·B·A merged (the base weights when LoRA is off). */
  saveMerged(dir: string, options: { dtype?: 'F32' | 'BF16' | 'F16' } = {}): void {
    const merged = this.adapter
      ? mergeLora(this.cfg, this.weights, this.adapter, this.kernels)
      : { config: this.cfg, layout: this.layout, weights: this.weights };
    saveModelDir(dir, { ...merged, tokenizerFiles: this.tokenizerFiles, dtype: options.dtype });
  }

  constructor(cfg: ModelConfig, weights: Float32Array, kernels: Kernels) {
    this.cfg = cfg;
    this.layout = buildLayout(cfg);
    this.weights = weights;
    this.grads = new Float32Array(this.layout.total);
    this.m = new Float32Array(this.layout.total);
    this.v = new Float32Array(this.layout.total);
    this.kernels = kernels;
    this.model = new Transformer(cfg, kernels, weights, this.grads);
  }

  /**
   * The continuous-batching sampler over these weights (created on first use; `options` apply then).
   * Optimizer steps and `setWeights` invalidate its packed weights and prefix cache.
   */
  sampler(options?: SamplerOptions): Sampler {
    if (!this.samplerInstance) {
      this.samplerInstance = new Sampler(this.cfg, this.weights, this.kernels, options);
      if (this.adapter) this.samplerInstance.setLora(this.adapter);
    }
    return this.samplerInstance;
  }

  /** Forward only, split by token budget: logprobs and entropies per sequence. */
  forward(seqs: readonly ArrayLike<number>[], microBatchTokens = DEFAULT_MICRO_BATCH_TOKENS): ForwardOutput {
    const out: ForwardOutput = { logprobs: new Array(seqs.length), entropies: new Array(seqs.length) };
    this.pending = null;
    for (const group of splitByTokens(
      seqs.map((s) => s.length),
      microBatchTokens,
    )) {
      const r = this.runForward(
        group.map((i) => seqs[i]),
        false,
        group[0],
      );
      group.forEach((i, j) => {
        out.logprobs[i] = r.logprobs[j];
        out.entropies[i] = r.entropies[j];
      });
    }
    return out;
  }

  /** Forward of one micro-batch keeping what backward needs; follow with `backwardMicro`. */
  forwardMicro(seqs: readonly ArrayLike<number>[], firstIndex = 0): MicroForward {
    return this.runForward(seqs, true, firstIndex);
  }

  private runForward(seqs: readonly ArrayLike<number>[], needGrad: boolean, firstIndex: number): MicroForward {
    if (seqs.length === 0) return { logprobs: [], entropies: [], tokens: 0 };
    seqs.forEach((s, i) => {
      if (s.length === 0) throw new InvalidArgumentError(`sequences[${firstIndex + i}]`, 'is empty');
    });
    const batch = packSequences(seqs);
    let f;
    try {
      f = this.model.forward(batch, { needGrad });
    } catch (err) {
      // name the sequence rather than the packed index
      if (err instanceof InvalidArgumentError) {
        const m = /^tokens\[(\d+)\]$/.exec(err.argument);
        if (m) {
          const t = Number(m[1]);
          let b = 0;
          while (batch.cuSeqlens[b + 1] <= t) b++;
          throw new InvalidArgumentError(
            `sequences[${firstIndex + b}].tokens[${t - batch.cuSeqlens[b]}]`,
            err.message.slice(err.argument.length + 2),
          );
        }
      }
      throw err;
    }
    const logprobs: Float32Array[] = [];
    const entropies: Float32Array[] = [];
    for (let b = 0; b < seqs.length; b++) {
      const s0 = batch.cuSeqlens[b];
      const s1 = batch.cuSeqlens[b + 1];
      logprobs.push(Float32Array.from(f.logprobs.subarray(s0, s1)));
      entropies.push(Float32Array.from(f.entropies.subarray(s0, s1)));
    }
    this.pending = needGrad ? { ctx: f.ctx, lengths: seqs.map((s) => s.length) } : null;
    return { logprobs, entropies, tokens: batch.tokens.length };
  }

  /** Backward of the latest `forwardMicro`, given per-sequence d(loss)/d(logprob) (and entropy). */
  backwardMicro(dLogprobs: readonly Float32Array[], dEntropies?: readonly Float32Array[] | null): void {
    const p = this.pending;
    if (!p) throw new InvalidArgumentError('backward', 'no pending forwardMicro to run backward for');
    this.pending = null;
    if (dLogprobs.length !== p.lengths.length)
      throw new InvalidArgumentError('dLogprobs', `expected ${p.lengths.length} arrays, got ${dLogprobs.length}`);
    const T = p.ctx.T;
    const dl = new Float32Array(T);
    const de = dEntropies ? new Float32Array(T) : null;
    let o = 0;
    p.lengths.forEach((len, i) => {
      if (dLogprobs[i].length !== len)
        throw new InvalidArgumentError(`dLogprobs[${i}]`, `expected ${len} values, got ${dLogprobs[i].length}`);
      dl.set(dLogprobs[i], o);
      if (de && dEntropies) {
        if (dEntropies[i].length !== len)
          throw new InvalidArgumentError(`dEntropies[${i}]`, `expected ${len} values, got ${dEntropies[i].length}`);
        de.set(dEntropies[i], o);
      }
      o += len;
    });
    this.model.backward(p.ctx, dl, de);
    this.pendingTokens += T;
  }

  /** Backward of the latest `forwardMicro` from gradients packed end to end ([T], sequences in order). */
  backwardPacked(dLogprobs: Float32Array, dEntropies?: Float32Array | null): void {
    const p = this.pending;
    if (!p) throw new InvalidArgumentError('backward', 'no pending forwardMicro to run backward for');
    this.pending = null;
    const T = p.ctx.T;
    if (dLogprobs.length !== T) throw new InvalidArgumentError('dLogprobs', `expected ${T} values, got ${dLogprobs.length}`);
    if (dEntropies && dEntropies.length !== T)
      throw new InvalidArgumentError('dEntropies', `expected ${T} values, got ${dEntropies.length}`);
    this.model.backward(p.ctx, dLogprobs, dEntropies ?? null);
    this.pendingTokens += T;
  }

  /** In-thread forward → loss → backward over micro-batches (the worker-thread policy does the same across threads). */
  forwardBackward(datums: readonly Datum[], loss: LossFn, options: { microBatchTokens?: number } = {}): ForwardBackwardResult {
    const groups = splitByTokens(
      datums.map((d) => d.tokens.length),
      options.microBatchTokens ?? DEFAULT_MICRO_BATCH_TOKENS,
    );
    let total = 0;
    let tokens = 0;
    const metrics: Record<string, number> = {};
    for (const group of groups) {
      const ds = group.map((i) => datums[i]);
      const f = this.forwardMicro(
        ds.map((d) => d.tokens),
        group[0],
      );
      const out = loss(ds, { logprobs: f.logprobs, entropies: f.entropies });
      this.backwardMicro(out.dLogprobs, out.dEntropies ?? null);
      total += out.loss;
      tokens += f.tokens;
      for (const [k, v] of Object.entries(out.metrics)) metrics[k] = (metrics[k] ?? 0) + v;
    }
    return { loss: total, metrics, tokens, microBatches: groups.length };
  }

  /** AdamW step with optional global-norm clipping; a non-finite gradient norm skips the step. Gradients are zeroed either way. */
  optimStep(p: OptimParams): OptimResult {
    const lr = p.learningRate;
    if (!(lr >= 0) || !Number.isFinite(lr)) throw new InvalidArgumentError('learningRate', `expected a non-negative number, got ${lr}`);
    const beta1 = p.beta1 ?? 0.9;
    const beta2 = p.beta2 ?? 0.999;
    const eps = p.eps ?? 1e-8;
    const wd = p.weightDecay ?? 0;
    const a = this.adapter;
    const params = a ? a.params : this.weights;
    const grads = a ? a.grads : this.grads;
    const n = params.length;
    const gradNorm = Math.sqrt(this.kernels.sumSquares(grads, n));
    if (!Number.isFinite(gradNorm)) {
      this.zeroGrads();
      return { gradNorm, applied: false, step: this.step };
    }
    const clip = p.maxGradNorm ?? 0;
    const scale = clip > 0 && gradNorm > clip ? clip / (gradNorm + 1e-6) : 1;
    this.step++;
    this.kernels.adamw(params, grads, this.m, this.v, n, lr, beta1, beta2, eps, wd, this.step, scale);
    this.zeroGrads();
    this.weightsChanged();
    return { gradNorm, applied: true, step: this.step };
  }

  /** Zero the trainable gradients (with LoRA the adapter's; the frozen base's buffer is never read then). */
  zeroGrads(): void {
    if (this.adapter) this.adapter.zeroGrads();
    else this.grads.fill(0);
    this.pendingTokens = 0;
  }

  /** Tokens whose gradients are accumulated since the last step. */
  accumulatedTokens(): number {
    return this.pendingTokens;
  }

  /** Replace the weights (e.g. after loading a checkpoint into the same architecture). */
  setWeights(w: Float32Array): void {
    if (w.length !== this.weights.length)
      throw new InvalidArgumentError('weights', `expected ${this.weights.length} floats, got ${w.length}`);
    this.weights.set(w);
    this.weightsChanged(true);
  }

  /** `base` false: only the adapter changed, the packed base weights stay valid (cached prefixes do not). */
  private weightsChanged(base = this.adapter === null): void {
    this.weightsVersion++;
    this.samplerInstance?.invalidate({ repack: base });
  }

  /** optimizer.json (step, sizes) + optimizer.bin (m then v, little-endian f32). Written atomically. */
  saveOptimizerState(dir: string): void {
    mkdirSync(dir, { recursive: true });
    const n = this.m.length;
    const bin = Buffer.alloc(8 * n);
    Buffer.from(this.m.buffer, this.m.byteOffset, 4 * n).copy(bin, 0);
    Buffer.from(this.v.buffer, this.v.byteOffset, 4 * n).copy(bin, 4 * n);
    writeFileSync(join(dir, 'optimizer.bin.tmp'), bin);
    renameSync(join(dir, 'optimizer.bin.tmp'), join(dir, 'optimizer.bin'));
    const meta = { format: 'matpo-adamw-v1', step: this.step, params: n, scope: this.adapter ? 'lora' : 'model' };
    writeFileSync(join(dir, 'optimizer.json.tmp'), JSON.stringify(meta, null, 2) + '\n');
    renameSync(join(dir, 'optimizer.json.tmp'), join(dir, 'optimizer.json'));
  }

  loadOptimizerState(dir: string): void {
    const metaFile = join(dir, 'optimizer.json');
    const binFile = join(dir, 'optimizer.bin');
    let meta: { format?: unknown; step?: unknown; params?: unknown };
    try {
      meta = JSON.parse(readFileSync(metaFile, 'utf8'));
    } catch (err) {
      throw new FileFormatError({ file: metaFile, message: `cannot read: ${(err as Error).message}` });
    }
    if (meta.format !== 'matpo-adamw-v1')
      throw new FileFormatError({ file: metaFile, field: 'format', message: `expected "matpo-adamw-v1"` });
    const n = this.m.length;
    if (meta.params !== n) {
      const what = this.adapter ? 'the LoRA adapter has' : 'model has';
      throw new FileFormatError({ file: metaFile, field: 'params', message: `state has ${String(meta.params)} parameters, ${what} ${n}` });
    }
    if (typeof meta.step !== 'number' || !Number.isInteger(meta.step) || meta.step < 0)
      throw new FileFormatError({ file: metaFile, field: 'step', message: 'expected a non-negative integer' });
    let bin: Buffer;
    try {
      bin = readFileSync(binFile);
    } catch (err) {
      throw new FileFormatError({ file: binFile, message: `cannot read: ${(err as Error).message}` });
    }
    if (bin.length !== 8 * n) throw new FileFormatError({ file: binFile, message: `expected ${8 * n} bytes, got ${bin.length}` });
    const f = new Float32Array(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.length));
    this.m.set(f.subarray(0, n));
    this.v.set(f.subarray(n, 2 * n));
    this.step = meta.step;
  }
}
