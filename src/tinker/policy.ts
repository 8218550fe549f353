/**
 * `TinkerPolicy`: a TrainablePolicy whose compute runs on a Tinker-compatible service (hosted
 * Tinker, SkyRL's Tinker server, `matpo serve --tinker`), over `TinkerClient`.
 *
 * Datums. Ours hold the whole sequence `tokens` (T) with per-token arrays aligned to it, and
 * logprobs[t] = log π(tokens[t] | tokens[<t]) for t ≥ 1. Tinker's hold model_input = tokens[:-1] and
 * target_tokens = tokens[1:], with every per-token tensor aligned to the targets (N = T − 1):
 * ours[t] ↔ tinker[t − 1]. A datum of fewer than 2 tokens predicts nothing and is not sent.
 *
 * Training with MATPO's own loss (lossMode 'custom', any LossFn), the linear surrogate:
 *   1. `forward` with cross_entropy and zero weights → ℓ (the current logprobs);
 *   2. our LossFn(datums, ℓ) → loss C and g = dC/dℓ;
 *   3. `forward_backward` with cross_entropy and weights = −g: the service's loss −Σ w·ℓ has the
 *      parameter gradient Σ g·∇ℓ = ∇C, exactly, at the current weights. seq_id ordering puts no
 *      optim_step between 1 and 3. Cost: one extra forward per update.
 *
 * One pass with the service's `ppo` (lossMode 'ppo'), when our loss is PPO without dual clip, KL or
 * entropy terms (checked at config time): our per-token loss w_s·max(−Aρ, −A·clip(ρ, 1−ε_lo, 1+ε_hi))
 * with a positive per-sequence aggregation weight w_s (every aggregation mode) equals Tinker's
 * −min(ρA′, clip(ρ)A′) with A′ = w_s·A and thresholds 1−ε_lo, 1+ε_hi; the service sums, so the
 * pre-scaled A′ gives our aggregation. A′ is read off the LossFn itself: at ρ = 1 (logprobs = old
 * logprobs) dC/dℓ_t = −w_s·A_t, inside the clip range whenever ε_lo, ε_hi > 0. Masked positions get
 * A′ = 0 and old logprob 0. The loss value and metrics are then our LossFn's on the logprobs the
 * service returns. (Ours clamps log-ratios to ±20; the service does not: they differ only there.)
 * The service's `importance_sampling` (−Σ ρA, never clipped) matches none of our losses, so it is
 * not offered; `cispo` and `dro` neither.
 *
 * Sampling: after every optim_step (and load) the next sample first takes ephemeral sampler weights
 * (save_weights_for_sampler with a sampling_session_seq_id), so rollouts are always on-policy. The
 * tokenizer is local (the service serves none). Entropies are not available: `forward` returns an
 * empty `entropies` list, and an entropy bonus is refused at config time.
 *
 * Checkpoints: `save(dir)` asks for save_weights (weights + optimizer state, `tinker://…/weights/…`)
 * and writes dir/tinker.json (plus the local tokenizer's files); `saveOptimizerState` records that the same path holds the optimizer;
 * `TinkerPolicy.open({restoreDir})` creates a model with the saved LoRA settings and load_weights
 * (with optimizer) — how `--resume` continues.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ConfigError, EndpointError, FileFormatError, MatpoError } from '../core/errors.ts';
import type { ChatTokenizer } from '../core/chat.ts';
import type {
  FinishReason,
  ForwardBackwardResult,
  ForwardOutput,
  LossFn,
  OptimParams,
  OptimResult,
  SampleParams,
  SampleResult,
  TrainablePolicy,
} from '../core/policy.ts';
import type { Datum } from '../core/records.ts';
import { copyTokenizerFiles } from '../model/checkpoint.ts';
import {
  TinkerClient,
  chunkDatums,
  type LoraSpec,
  type TinkerClientOptions,
  type TinkerModel,
  type WireDatum,
  type WireTensor,
} from './client.ts';
import { LocalTokenizer } from '../policy/local-tokenizer.ts';

export const CHECKPOINT_FILE = 'tinker.json';
export const OPTIMIZER_FILE = 'tinker-optimizer.json';

export interface TinkerPolicyOptions extends TinkerClientOptions {
  /** The service's name of the base model. */
  baseModel: string;
  /** LoRA settings, or null for full fine-tuning. */
  lora: LoraSpec | null;
  /** Local tokenizer directory (Hugging Face layout), or a tokenizer object. */
  tokenizerDir?: string;
  tokenizer?: ChatTokenizer;
  /** 'custom' (default): forward + LossFn + cross_entropy surrogate; 'ppo': one pass with the built-in ppo. */
  lossMode?: 'custom' | 'ppo';
  /** ε_low, ε_high of the configured PPO loss (lossMode 'ppo'). */
  ppoClip?: { low: number; high: number };
  /** A checkpoint directory written by save(): continue from its training state. */
  restoreDir?: string;
}

interface CheckpointRecord {
  format: 'matpo-tinker-checkpoint';
  version: 1;
  baseUrl: string;
  baseModel: string;
  lora: LoraSpec | null;
  modelId: string;
  /** tinker://…/weights/<name>: weights and optimizer state. */
  weights: string;
}

/** Round to the shortest decimal that reads back as the same float32 (keeps JSON short and exact). */
function f32(x: number): number {
  return Number(Math.fround(x).toPrecision(9));
}

function floatTensor(values: ArrayLike<number>, from: number, to: number): WireTensor {
  const data = new Array<number>(to - from);
  for (let t = from; t < to; t++) data[t - from] = f32(values[t]);
  return { data, dtype: 'float32', shape: [to - from] };
}

/** Our datum (whole sequence) → Tinker's (input = tokens[:-1], targets = tokens[1:]) with per-target tensors. */
export function toWireDatum(tokens: readonly number[], inputs: Record<string, ArrayLike<number>> = {}): WireDatum {
  const T = tokens.length;
  const loss_fn_inputs: Record<string, WireTensor> = { target_tokens: { data: tokens.slice(1), dtype: 'int64', shape: [T - 1] } };
  for (const [k, v] of Object.entries(inputs)) {
    if (v.length !== T) throw new MatpoError('invalid-argument', `datum input ${k}: expected ${T} values (one per token), got ${v.length}`);
    loss_fn_inputs[k] = floatTensor(v, 1, T);
  }
  return { model_input: { chunks: [{ type: 'encoded_text', tokens: tokens.slice(0, -1) }] }, loss_fn_inputs };
}

/** Tinker's per-target logprobs (N) → ours (T = N + 1, 0 at t = 0). */
function fromWireLogprobs(out: Record<string, WireTensor> | undefined, T: number, where: string): Float32Array {
  const lp = new Float32Array(T);
  const t = out?.logprobs;
  if (!t || !Array.isArray(t.data) || t.data.length !== T - 1)
    throw new EndpointError({
      url: where,
      message: `expected loss_fn_outputs[].logprobs with ${T - 1} values, got ${t && Array.isArray(t.data) ? t.data.length : 'none'}`,
    });
  for (let i = 0; i < T - 1; i++) lp[i + 1] = t.data[i];
  return lp;
}

function sanitizeName(dir: string): string {
  return (
    basename(dir)
      .replace(/[^A-Za-z0-9_-]/g, '_')
      .replace(/^_+/, '') || 'checkpoint'
  );
}

export function readCheckpointRecord(dir: string): CheckpointRecord {
  const file = join(dir, CHECKPOINT_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FileFormatError({ file, message: `cannot read the Tinker checkpoint record: ${(err as Error).message}` });
  }
  const r = raw as Partial<CheckpointRecord>;
  if (r.format !== 'matpo-tinker-checkpoint')
    throw new FileFormatError({ file, field: 'format', message: 'expected "matpo-tinker-checkpoint"' });
  if (typeof r.weights !== 'string' || !r.weights.startsWith('tinker://'))
    throw new FileFormatError({ file, field: 'weights', message: 'expected a tinker:// path' });
  if (typeof r.baseModel !== 'string') throw new FileFormatError({ file, field: 'baseModel', message: 'expected a string' });
  return r as CheckpointRecord;
}

export class TinkerPolicy implements TrainablePolicy {
  readonly name: string;
  readonly tokenExact = true;
  readonly client: TinkerClient;
  readonly model: TinkerModel;
  private readonly options: TinkerPolicyOptions;
  private readonly localTokenizer: LocalTokenizer;
  private sampler: Promise<string> | null = null;
  private samplerSeq = 0;
  private steps = 0;
  /** forward_backward calls sent since the last optim_step (gradients the service holds). */
  private pendingGradients = 0;
  /** A non-finite loss was met since the last optim_step: skip the step. */
  private poisoned = false;
  private lastSaved: string | null = null;
  private restoredFrom: string | null = null;

  private constructor(options: TinkerPolicyOptions, client: TinkerClient, model: TinkerModel) {
    this.options = options;
    this.client = client;
    this.model = model;
    this.name = `tinker:${options.baseModel}@${client.root}${options.lora ? ` (LoRA rank ${options.lora.rank})` : ''}`;
    this.localTokenizer = new LocalTokenizer(
      options.tokenizerDir,
      {
        path: 'model.tokenizerDir',
        message: 'a Tinker policy needs a local tokenizer directory (model.tokenizerDir or model.path): the service serves none',
      },
      options.tokenizer,
    );
  }

  /** Connect, create the training model (LoRA or full), and restore a checkpoint when asked. */
  static async open(options: TinkerPolicyOptions): Promise<TinkerPolicy> {
    if (!options.baseModel)
      throw new ConfigError({ path: 'model.baseModel', message: "is required (the service's name of the base model)" });
    const record = options.restoreDir ? readCheckpointRecord(options.restoreDir) : null;
    if (record) {
      if (record.baseModel !== options.baseModel)
        throw new ConfigError({
          path: 'model.baseModel',
          message:
            `"${options.baseModel}" differs from the checkpoint's "${record.baseModel}" ` +
            `(${join(options.restoreDir!, CHECKPOINT_FILE)})`,
        });
      if ((record.lora?.rank ?? 0) !== (options.lora?.rank ?? 0))
        throw new ConfigError({
          path: 'model.loraRank',
          message: `${options.lora?.rank ?? 0} differs from the checkpoint's ${record.lora?.rank ?? 0}`,
        });
    }
    const client = await TinkerClient.connect(options);
    try {
      const model = await client.createModel(options.baseModel, record ? record.lora : options.lora);
      const policy = new TinkerPolicy(options, client, model);
      if (record) {
        await model.loadWeights(record.weights, true);
        policy.restoredFrom = record.weights;
      }
      return policy;
    } catch (err) {
      await client.close();
      throw err;
    }
  }

  tokenizer(): Promise<ChatTokenizer> {
    return this.localTokenizer.get();
  }

  /** The sampling session of the current weights (ephemeral sampler weights, taken after each change). */
  private samplingSession(): Promise<string> {
    if (!this.sampler) {
      const s = this.model.samplerSession();
      this.sampler = s;
      this.samplerSeq = 0;
      s.catch(() => {
        if (this.sampler === s) this.sampler = null;
      });
    }
    return this.sampler;
  }

  async sample(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    if (!Number.isInteger(params.maxNewTokens) || params.maxNewTokens < 1)
      throw new MatpoError('invalid-argument', `maxNewTokens: must be a positive integer, got ${params.maxNewTokens}`);
    if (params.signal?.aborted) return { tokens: [], logprobs: [], finishReason: 'abort' };
    const stopStrings = params.stopStrings ?? [];
    // the tokenizer is needed only for default stop ids and for cutting at stop strings
    const tokenizer = params.stopTokenIds === undefined || stopStrings.length ? await this.tokenizer() : null;
    const stopIds = params.stopTokenIds ?? (stopStrings.length ? [] : tokenizer!.stopTokenIds);
    // the protocol cannot mix stop strings and stop ids: send the ids and cut at stop strings here
    const stop = stopIds.length ? [...stopIds] : stopStrings.length ? [...stopStrings] : undefined;
    const session = await this.samplingSession();
    const s = await this.client.sample(session, this.samplerSeq++, promptTokens, {
      max_tokens: params.maxNewTokens,
      ...(params.seed !== undefined ? { seed: params.seed } : {}),
      ...(stop ? { stop } : {}),
      temperature: params.temperature ?? 1,
      top_k: params.topK && params.topK > 0 ? params.topK : -1,
      top_p: params.topP ?? 1,
    });
    if (!s.logprobs || s.logprobs.length !== s.tokens.length)
      throw new EndpointError({
        url: `${this.client.root}/asample`,
        message: `Sample: expected ${s.tokens.length} per-token logprobs, got ${s.logprobs ? s.logprobs.length : 'none'}`,
      });
    let tokens = s.tokens;
    let logprobs = s.logprobs;
    const last = tokens[tokens.length - 1];
    let finishReason: FinishReason =
      s.stop_reason === 'length' ? 'length' : last !== undefined && stopIds.includes(last) ? 'stop_token' : 'stop_string';
    if (stopIds.length && stopStrings.length && finishReason !== 'stop_token') {
      for (let k = 1; k <= tokens.length; k++) {
        const text = tokenizer!.decode(tokens.slice(0, k));
        if (stopStrings.some((x) => text.includes(x))) {
          tokens = tokens.slice(0, k);
          logprobs = logprobs.slice(0, k);
          finishReason = 'stop_string';
          break;
        }
      }
    }
    return { tokens, logprobs, finishReason };
  }

  async forward(datums: readonly Pick<Datum, 'tokens'>[]): Promise<ForwardOutput> {
    const live = datums.map((d, i) => ({ d, i })).filter(({ d }) => d.tokens.length >= 2);
    const logprobs: Float32Array[] = datums.map((d) => new Float32Array(d.tokens.length));
    if (live.length === 0) return { logprobs, entropies: [] };
    const wire = live.map(({ d }) => toWireDatum(d.tokens, { weights: new Float32Array(d.tokens.length) }));
    const out = await this.model.forward(wire, 'cross_entropy');
    live.forEach(({ d, i }, k) => (logprobs[i] = fromWireLogprobs(out.loss_fn_outputs[k], d.tokens.length, `${this.client.root}/forward`)));
    return { logprobs, entropies: [] };
  }

  async forwardBackward(datums: readonly Datum[], loss: LossFn): Promise<ForwardBackwardResult> {
    const live = datums.filter((d) => d.tokens.length >= 2);
    const tokens = live.reduce((n, d) => n + d.tokens.length, 0);
    if (live.length === 0) {
      const lo = loss(datums, { logprobs: datums.map((d) => new Float32Array(d.tokens.length)), entropies: [] });
      return { loss: lo.loss, metrics: lo.metrics, tokens: 0, microBatches: 0 };
    }
    return this.options.lossMode === 'ppo' ? this.onePassPpo(live, loss, tokens) : this.surrogate(live, loss, tokens);
  }

  private poison(): void {
    this.poisoned = true;
  }

  private async surrogate(datums: readonly Datum[], loss: LossFn, tokens: number): Promise<ForwardBackwardResult> {
    const fwd = await this.forward(datums);
    const lo = loss(datums, fwd);
    const finite = Number.isFinite(lo.loss) && lo.dLogprobs.every((g) => g.every(Number.isFinite));
    if (!finite) {
      this.poison();
      return { loss: lo.loss, metrics: lo.metrics, tokens, microBatches: 0 };
    }
    const wire = datums.map((d, i) => toWireDatum(d.tokens, { weights: lo.dLogprobs[i].map((g) => -g) }));
    const chunks = chunkDatums(wire, this.client.chunkLimits.datums, this.client.chunkLimits.bytes).length;
    this.pendingGradients++;
    await this.model.forwardBackward(wire, 'cross_entropy');
    return { loss: lo.loss, metrics: lo.metrics, tokens, microBatches: chunks };
  }

  private async onePassPpo(datums: readonly Datum[], loss: LossFn, tokens: number): Promise<ForwardBackwardResult> {
    const clip = this.options.ppoClip;
    if (!clip || !(clip.low > 0) || !(clip.high > 0))
      throw new ConfigError({ path: 'model.tinkerLoss', message: 'ppo needs rl.loss.clipLow and rl.loss.clipHigh > 0' });
    // the per-token scale w_s·A_t, from the loss's gradient at ratio 1
    const atOld = datums.map((d) => Float32Array.from(d.oldLogprobs));
    const probe = loss(datums, { logprobs: atOld, entropies: [] });
    const wire = datums.map((d, i) => {
      const adv = new Float64Array(d.tokens.length);
      const old = new Float64Array(d.tokens.length);
      for (let t = 0; t < d.tokens.length; t++) {
        if (!d.mask[t]) continue;
        adv[t] = -probe.dLogprobs[i][t] / Math.exp(atOld[i][t] - d.oldLogprobs[t]);
        old[t] = d.oldLogprobs[t];
      }
      return toWireDatum(d.tokens, { logprobs: old, advantages: adv });
    });
    if (!wire.every((w) => w.loss_fn_inputs.advantages.data.every(Number.isFinite))) {
      this.poison();
      return { loss: NaN, metrics: probe.metrics, tokens, microBatches: 0 };
    }
    const chunks = chunkDatums(wire, this.client.chunkLimits.datums, this.client.chunkLimits.bytes).length;
    this.pendingGradients++;
    const out = await this.model.forwardBackward(wire, 'ppo', { clip_low_threshold: 1 - clip.low, clip_high_threshold: 1 + clip.high });
    const logprobs = datums.map((d, i) =>
      fromWireLogprobs(out.loss_fn_outputs[i], d.tokens.length, `${this.client.root}/forward_backward`),
    );
    const lo = loss(datums, { logprobs, entropies: [] });
    return { loss: lo.loss, metrics: lo.metrics, tokens, microBatches: chunks };
  }

  async optimStep(params: OptimParams): Promise<OptimResult> {
    if (this.poisoned) {
      this.poisoned = false;
      if (this.pendingGradients > 0)
        throw new MatpoError(
          'tinker-poisoned',
          'a loss was not finite after gradients were already sent to the service, which cannot discard them; ' +
            'stopping the run (resume from the last checkpoint)',
        );
      return { gradNorm: NaN, applied: false, step: this.steps };
    }
    const metrics = await this.model.optimStep({
      learning_rate: params.learningRate,
      beta1: params.beta1 ?? 0.9,
      beta2: params.beta2 ?? 0.999,
      eps: params.eps ?? 1e-8,
      weight_decay: params.weightDecay ?? 0,
      grad_clip_norm: params.maxGradNorm ?? 0,
    });
    this.pendingGradients = 0;
    this.sampler = null;
    this.steps++;
    const key = Object.keys(metrics).find((k) => k.includes('grad_norm'));
    return { gradNorm: key ? metrics[key] : NaN, applied: true, step: this.steps };
  }

  /** save_weights (weights + optimizer state) and dir/tinker.json naming it. */
  async save(dir: string): Promise<void> {
    const path = await this.model.saveWeights(sanitizeName(dir));
    this.lastSaved = path;
    const record: CheckpointRecord = {
      format: 'matpo-tinker-checkpoint',
      version: 1,
      baseUrl: this.options.baseUrl,
      baseModel: this.options.baseModel,
      lora: this.options.lora,
      modelId: this.model.modelId,
      weights: path,
    };
    writeFileSync(join(dir, CHECKPOINT_FILE), JSON.stringify(record, null, 2) + '\n');
    // the tokenizer beside the record, so the directory alone is enough to evaluate or resume
    const tok = this.options.tokenizerDir;
    if (tok && existsSync(join(tok, 'tokenizer.json'))) copyTokenizerFiles(tok, dir);
  }

  /** The optimizer state is part of the last save_weights: record that path. */
  async saveOptimizerState(dir: string): Promise<void> {
    if (!this.lastSaved)
      throw new MatpoError('tinker-optimizer', 'saveOptimizerState needs a save() first: the service saves the optimizer with the weights');
    writeFileSync(join(dir, OPTIMIZER_FILE), JSON.stringify({ weights: this.lastSaved, optimizer: true }, null, 2) + '\n');
  }

  async loadOptimizerState(dir: string): Promise<void> {
    const file = join(dir, OPTIMIZER_FILE);
    if (!existsSync(file)) throw new FileFormatError({ file, message: 'missing: this optimizer state was not written by a Tinker policy' });
    let weights: unknown;
    try {
      weights = (JSON.parse(readFileSync(file, 'utf8')) as { weights?: unknown }).weights;
    } catch (err) {
      throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}` });
    }
    if (typeof weights !== 'string') throw new FileFormatError({ file, field: 'weights', message: 'expected a tinker:// path' });
    if (weights === this.restoredFrom) return; // loaded with the weights
    await this.model.loadWeights(weights, true);
    this.restoredFrom = weights;
    this.sampler = null;
  }

  /** Frees the model on the service (best effort: a service that is gone has freed it already) and ends the session. */
  async close(): Promise<void> {
    await this.model.unload().catch(() => undefined);
    await this.client.close();
  }
}
