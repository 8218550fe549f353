/**
 * `EmbeddedPolicy`: the project's own engine behind the `TrainablePolicy` contract. The engine (weights,
 * gradients, optimizer, KV-cache sampler) lives in a worker thread so the main thread keeps serving
 * tool I/O and HTTP while it computes. Many concurrent `sample()` calls are batched together by the
 * worker's continuous-batching loop.
 *
 * `forwardBackward` splits the datums into micro-batches by token budget; for each it asks the worker
 * for logprobs/entropies, runs the loss closure here on the main thread, and sends the per-token
 * gradients back for backward. Gradients accumulate in the worker until `optimStep`.
 *
 * LoRA: `load(dir, { lora })` freezes the model and trains a fresh adapter, `load(dir, { adapter })`
 * continues (or serves) a PEFT adapter directory; sampling then runs base + adapter. `save` on such a
 * policy writes the adapter (PEFT layout), `saveMerged` a full model directory with it merged in.
 *
 * For serving it also offers `sampleStreaming` (tokens reported as drawn) and `topLogprobs` (top-k
 * alternatives per position from one forward pass), the capabilities `servePolicy` looks for.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { EndpointError, FileFormatError, InvalidArgumentError, MatpoError } from '../core/errors.ts';
import { DEFAULT_MICRO_BATCH_TOKENS, splitByTokens } from '../model/engine.ts';
import type { LoraConfig } from '../model/lora.ts';
import type { ChatTokenizer } from '../core/chat.ts';
import type { Datum } from '../core/records.ts';
import type {
  ForwardBackwardResult,
  ForwardOutput,
  LossFn,
  OptimParams,
  OptimResult,
  TrainablePolicy,
  SampleParams,
  SampleResult,
} from '../core/policy.ts';
import {
  packTokens,
  unpack,
  type InitOptions,
  type InitResult,
  type PackedForward,
  type PackedTop,
  type Reply,
  type ReplyPayload,
  type Request,
} from './embedded-protocol.ts';
import type { OnToken, PositionScore } from './server-scoring.ts';

export interface EmbeddedLoadOptions {
  /** Kernel threads in the worker (default: the kernels' own default, all cores). */
  threads?: number;
  /** Base seed of sample() calls that give no seed. */
  seed?: number;
  /** Force the native addon or the TypeScript reference (default: native when it loads). */
  kernels?: 'native' | 'reference';
  /** Freeze the model and train a fresh LoRA adapter with this config. */
  lora?: LoraConfig;
  /** Freeze the model and load this PEFT adapter directory (adapter_config.json + adapter_model.safetensors). */
  adapter?: string;
}

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
type RequestBody = DistributiveOmit<Request, 'id'>;

const BOOT = fileURLToPath(new URL('./embedded-worker-boot.mjs', import.meta.url));

export class EmbeddedPolicy implements TrainablePolicy {
  readonly name: string;
  readonly tokenExact = true;
  readonly info: InitResult;
  private readonly worker: Worker;
  private readonly dir: string;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (r: ReplyPayload) => void; reject: (e: unknown) => void }>();
  private closed = false;
  private dead: Error | null = null;
  private tok: Promise<ChatTokenizer> | null = null;
  private loraConfig: LoraConfig | null;
  /** Token listeners of streamed samples, by request id. */
  private readonly streams = new Map<number, OnToken>();

  private constructor(worker: Worker, dir: string, info: InitResult) {
    this.worker = worker;
    this.dir = dir;
    this.info = info;
    this.loraConfig = info.lora;
    this.name = `embedded:${dir}`;
  }

  static async load(dir: string, options: EmbeddedLoadOptions = {}): Promise<EmbeddedPolicy> {
    const worker = new Worker(BOOT);
    const waiting = new Map<number, { resolve: (r: ReplyPayload) => void; reject: (e: unknown) => void }>();
    // until the policy object exists, route replies through a temporary table
    let policy: EmbeddedPolicy | null = null;
    const table = () => (policy ? policy.waiting : waiting);
    worker.on('message', (msg: Reply) => {
      if (!('ok' in msg)) {
        policy?.streams.get(msg.id)?.(msg.token, msg.logprob);
        return;
      }
      const w = table().get(msg.id);
      if (!w) return;
      table().delete(msg.id);
      if (msg.ok) w.resolve(msg.result);
      else w.reject(toError(msg.error));
    });
    const fail = (err: Error) => {
      if (policy) policy.dead = err;
      for (const w of table().values()) w.reject(err);
      table().clear();
    };
    worker.on('error', (err) => fail(new MatpoError('engine', `embedded engine worker failed: ${err.message}`, { cause: err })));
    worker.on('exit', (code) => {
      if (policy?.closed) return;
      fail(new MatpoError('engine', `embedded engine worker exited (code ${code})`));
    });
    if (options.lora && options.adapter !== undefined) {
      await worker.terminate();
      throw new InvalidArgumentError('adapter', 'give either lora (a fresh adapter) or adapter (a PEFT directory to load), not both');
    }
    const initOptions: InitOptions = {
      dir,
      kernels: options.kernels,
      threads: options.threads,
      seed: options.seed,
      lora: options.lora,
      adapter: options.adapter,
    };
    let info: InitResult;
    try {
      info = (await new Promise<ReplyPayload>((resolve, reject) => {
        waiting.set(0, { resolve, reject });
        worker.postMessage({ id: 0, op: 'init', options: initOptions } satisfies Request);
      })) as InitResult;
    } catch (err) {
      await worker.terminate();
      throw err;
    }
    policy = new EmbeddedPolicy(worker, dir, info);
    return policy;
  }

  private call(body: RequestBody, transfer: ArrayBufferLike[] = []): Promise<ReplyPayload> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.closed) return Promise.reject(new MatpoError('closed', 'the embedded policy is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...body, id } as Request, transfer as ArrayBuffer[]);
    });
  }

  /** Validate token ids here so a bad id is named by datum and position, never wrapped by Int32Array. */
  private checkTokens(seqs: readonly (readonly number[])[], what: string): void {
    const V = this.info.vocabSize;
    seqs.forEach((s, i) => {
      if (s.length === 0) throw new InvalidArgumentError(`${what}[${i}].tokens`, 'is empty');
      for (let t = 0; t < s.length; t++) {
        const id = s[t];
        if (!(Number.isInteger(id) && id >= 0 && id < V))
          throw new InvalidArgumentError(`${what}[${i}].tokens[${t}]`, `token id ${id} is out of range [0, ${V})`);
      }
    });
  }

  tokenizer(): Promise<ChatTokenizer> {
    if (!this.tok) this.tok = import('../model/tokenizer.ts').then((m) => m.loadTokenizer(this.dir));
    return this.tok;
  }

  sample(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    return this.sampleWith(promptTokens, params);
  }

  /** `sample` that reports each token (and its logprob) as the engine draws it. */
  sampleStreaming(promptTokens: readonly number[], params: SampleParams, onToken: OnToken): Promise<SampleResult> {
    return this.sampleWith(promptTokens, params, onToken);
  }

  /**
   * Positions 1 … n−1 of `tokens`: log π(tokens[t] | tokens[<t]) and the k likeliest tokens of that
   * distribution (temperature 1, full vocabulary), from one forward pass of the sampler's decoder.
   */
  async topLogprobs(tokens: readonly number[], k: number): Promise<PositionScore[]> {
    this.checkTokens([tokens], 'sequences');
    if (!(Number.isInteger(k) && k >= 0)) throw new InvalidArgumentError('k', `expected a non-negative integer, got ${k}`);
    const packed = Int32Array.from(tokens);
    const r = (await this.call({ op: 'topLogprobs', tokens: packed, k }, [packed.buffer])) as PackedTop;
    return Array.from(r.logprobs, (logprob, t) => ({
      logprob,
      top: Array.from(r.topIds.subarray(t * r.k, (t + 1) * r.k), (id, j) => ({ id, logprob: r.topLogprobs[t * r.k + j] })),
    }));
  }

  private async sampleWith(promptTokens: readonly number[], params: SampleParams, onToken?: OnToken): Promise<SampleResult> {
    const V = this.info.vocabSize;
    for (let i = 0; i < promptTokens.length; i++) {
      const id = promptTokens[i];
      if (!(Number.isInteger(id) && id >= 0 && id < V))
        throw new InvalidArgumentError(`promptTokens[${i}]`, `token id ${id} is out of range [0, ${V})`);
    }
    if (params.signal?.aborted) return { tokens: [], logprobs: [], finishReason: 'abort' };
    const prompt = Int32Array.from(promptTokens);
    const id = this.nextId; // the id call() will use
    const onAbort = () => {
      this.call({ op: 'abort', target: id }).catch(() => {});
    };
    params.signal?.addEventListener('abort', onAbort, { once: true });
    if (onToken) this.streams.set(id, onToken);
    try {
      return (await this.call(
        {
          op: 'sample',
          prompt,
          stream: onToken !== undefined,
          params: {
            maxNewTokens: params.maxNewTokens,
            temperature: params.temperature,
            topP: params.topP,
            topK: params.topK,
            stopTokenIds: params.stopTokenIds ? [...params.stopTokenIds] : undefined,
            stopStrings: params.stopStrings ? [...params.stopStrings] : undefined,
            seed: params.seed,
          },
        },
        [prompt.buffer],
      )) as SampleResult;
    } finally {
      this.streams.delete(id);
      params.signal?.removeEventListener('abort', onAbort);
    }
  }

  async forward(datums: readonly Pick<Datum, 'tokens'>[], options: { microBatchTokens?: number } = {}): Promise<ForwardOutput> {
    const seqs = datums.map((d) => d.tokens);
    this.checkTokens(seqs, 'datums');
    const { tokens, lengths } = packTokens(seqs);
    const r = (await this.call(
      { op: 'forward', tokens, lengths, microBatchTokens: options.microBatchTokens ?? DEFAULT_MICRO_BATCH_TOKENS },
      [tokens.buffer],
    )) as PackedForward;
    return { logprobs: unpack(r.logprobs, lengths), entropies: unpack(r.entropies, lengths) };
  }

  async forwardBackward(
    datums: readonly Datum[],
    loss: LossFn,
    options: { microBatchTokens?: number } = {},
  ): Promise<ForwardBackwardResult> {
    this.checkTokens(
      datums.map((d) => d.tokens),
      'datums',
    );
    const groups = splitByTokens(
      datums.map((d) => d.tokens.length),
      options.microBatchTokens ?? DEFAULT_MICRO_BATCH_TOKENS,
    );
    let total = 0;
    let tokens = 0;
    const metrics: Record<string, number> = {};
    for (const group of groups) {
      const ds = group.map((i) => datums[i]);
      const packed = packTokens(ds.map((d) => d.tokens));
      const lengths = packed.lengths;
      const f = (await this.call({ op: 'forwardMicro', tokens: packed.tokens, lengths, firstIndex: group[0] }, [
        packed.tokens.buffer,
      ])) as PackedForward;
      const out = loss(ds, { logprobs: unpack(f.logprobs, lengths), entropies: unpack(f.entropies, lengths) });
      const T = f.tokens;
      const dl = new Float32Array(T);
      let de: Float32Array | null = null;
      let o = 0;
      if (out.dLogprobs.length !== ds.length)
        throw new InvalidArgumentError('loss.dLogprobs', `expected ${ds.length} arrays, got ${out.dLogprobs.length}`);
      ds.forEach((d, i) => {
        const g = out.dLogprobs[i];
        if (g.length !== d.tokens.length)
          throw new InvalidArgumentError(`loss.dLogprobs[${i}]`, `expected ${d.tokens.length} values, got ${g.length}`);
        dl.set(g, o);
        if (out.dEntropies) {
          const e = out.dEntropies[i];
          if (!e || e.length !== d.tokens.length)
            throw new InvalidArgumentError(`loss.dEntropies[${i}]`, `expected ${d.tokens.length} values`);
          de ??= new Float32Array(T);
          de.set(e, o);
        }
        o += d.tokens.length;
      });
      const transfer: ArrayBufferLike[] = [dl.buffer];
      if (de) transfer.push((de as Float32Array).buffer);
      await this.call({ op: 'backwardMicro', dLogprobs: dl, dEntropies: de }, transfer);
      total += out.loss;
      tokens += T;
      for (const [k, v] of Object.entries(out.metrics)) metrics[k] = (metrics[k] ?? 0) + v;
    }
    return { loss: total, metrics, tokens, microBatches: groups.length };
  }

  async optimStep(params: OptimParams): Promise<OptimResult> {
    return (await this.call({ op: 'optimStep', params })) as OptimResult;
  }

  /** Drop accumulated gradients without stepping. */
  async zeroGrads(): Promise<void> {
    await this.call({ op: 'zeroGrads' });
  }

  /**
   * Write the model as a Hugging Face directory; with LoRA on, the adapter alone in the PEFT layout
   * (adapter_config.json + adapter_model.safetensors), as `saveAdapter` does.
   */
  async save(dir: string): Promise<void> {
    await this.call({ op: 'save', dir });
  }

  /** The LoRA config of the adapter in use, or null (full fine-tuning). */
  get lora(): LoraConfig | null {
    return this.loraConfig;
  }

  /** Write the LoRA adapter in the PEFT layout (refused without LoRA). */
  async saveAdapter(dir: string): Promise<void> {
    await this.call({ op: 'saveAdapter', dir });
  }

  /** Write a full Hugging Face model directory with the adapter merged (W + (alpha/r)·B·A); the model itself without LoRA. */
  async saveMerged(dir: string): Promise<void> {
    await this.call({ op: 'saveMerged', dir });
  }

  /**
   * Replace the adapter by the PEFT adapter in `dir` (the base freezes if it was trained in full);
   * optimizer state restarts. Sampling uses it from the next decode step on.
   */
  async loadAdapter(dir: string): Promise<LoraConfig> {
    this.loraConfig = (await this.call({ op: 'loadAdapter', dir })) as LoraConfig;
    return this.loraConfig;
  }

  async saveOptimizerState(dir: string): Promise<void> {
    await this.call({ op: 'saveOptimizerState', dir });
  }

  async loadOptimizerState(dir: string): Promise<void> {
    await this.call({ op: 'loadOptimizerState', dir });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.dead) {
      try {
        await this.call({ op: 'close' });
      } catch {
        // closing anyway
      }
    }
    this.closed = true;
    await this.worker.terminate();
  }
}

/** Rebuild a worker error as the project's error class so messages stay one line. */
function toError(e: { name: string; code?: string; message: string; argument?: string; file?: string }): Error {
  if (e.name === 'InvalidArgumentError' && e.argument !== undefined) {
    return new InvalidArgumentError(e.argument, e.message.slice(e.argument.length + 2));
  }
  if (e.name === 'FileFormatError' && e.file !== undefined) {
    const err = new FileFormatError({ file: e.file, message: '' });
    err.message = e.message;
    return err;
  }
  if (e.code !== undefined) return new MatpoError(e.code, e.message);
  return new EndpointError({ url: 'embedded-worker', message: e.message });
}
