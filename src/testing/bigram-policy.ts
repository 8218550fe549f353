/**
 * A tiny, exactly trainable policy in plain TypeScript for the training-loop tests: a bigram model
 * π(next | prev) = softmax(W[prev, :]) over a small vocabulary, float64 weights, AdamW. It implements
 * the whole TrainablePolicy contract (sample with seeds, forward, forwardBackward with token-budget
 * micro-batches, optimStep with clipping and non-finite skip, save/load, optimizer state), so loops,
 * checkpoints and resume are tested against real learning and exact bytes without the engine.
 *
 * Files written by save(dir): `bigram.json` (vocab size) and `weights.f64` (W, row-major V×V).
 * Optimizer state: `adam.f64` (m then v) and `adam.json` (step).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileFormatError, InvalidArgumentError } from '../core/errors.ts';
import { Rng } from '../util/rng.ts';
import type { ChatMessage, ChatTokenizer } from '../core/chat.ts';
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

/** Token i is written "t<i>"; text is space-separated tokens. */
class BigramTokenizer implements ChatTokenizer {
  readonly stopTokenIds: readonly number[] = [];
  readonly bosTokenId = 0;
  readonly eosTokenId = null;
  constructor(readonly vocabSize: number) {}
  encode(text: string): number[] {
    return text
      .split(/\s+/)
      .filter(Boolean)
      .map((w) => {
        const id = this.tokenToId(w);
        if (id === undefined) throw new InvalidArgumentError('text', `"${w}" is not a bigram-vocabulary token`);
        return id;
      });
  }
  decode(ids: readonly number[]): string {
    return ids.map((i) => `t${i}`).join(' ');
  }
  tokenToId(token: string): number | undefined {
    const m = /^t(\d+)$/.exec(token);
    const id = m ? Number(m[1]) : NaN;
    return id >= 0 && id < this.vocabSize ? id : undefined;
  }
  idToToken(id: number): string | undefined {
    return id >= 0 && id < this.vocabSize ? `t${id}` : undefined;
  }
  applyChatTemplate(messages: readonly ChatMessage[]): string {
    return messages.map((m) => m.content).join(' ');
  }
}

function logSoftmaxRow(W: Float64Array, V: number, row: number, out: Float64Array): void {
  let max = -Infinity;
  for (let j = 0; j < V; j++) max = Math.max(max, W[row * V + j]);
  let z = 0;
  for (let j = 0; j < V; j++) z += Math.exp(W[row * V + j] - max);
  const lz = max + Math.log(z);
  for (let j = 0; j < V; j++) out[j] = W[row * V + j] - lz;
}

export class BigramPolicy implements TrainablePolicy {
  readonly name = 'bigram';
  readonly tokenExact = true;
  readonly W: Float64Array; // [V*V]
  private grad: Float64Array; // [V*V]
  private m: Float64Array;
  private v: Float64Array;
  private step = 0;

  constructor(
    readonly V: number,
    init: { seed?: number; scale?: number; weights?: Float64Array } = {},
  ) {
    this.W = init.weights ?? new Float64Array(V * V);
    if (!init.weights && init.scale) {
      const rng = new Rng(init.seed ?? 0);
      for (let i = 0; i < this.W.length; i++) this.W[i] = init.scale * rng.normal();
    }
    this.grad = new Float64Array(V * V);
    this.m = new Float64Array(V * V);
    this.v = new Float64Array(V * V);
  }

  static load(dir: string): BigramPolicy {
    const file = join(dir, 'bigram.json');
    let V: number;
    try {
      V = JSON.parse(readFileSync(file, 'utf8')).vocabSize;
    } catch (err) {
      throw new FileFormatError({ file, message: `cannot read bigram model: ${(err as Error).message}` });
    }
    const buf = readFileSync(join(dir, 'weights.f64'));
    if (buf.byteLength !== V * V * 8)
      throw new FileFormatError({ file: join(dir, 'weights.f64'), message: `expected ${V * V * 8} bytes, got ${buf.byteLength}` });
    return new BigramPolicy(V, { weights: new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)) });
  }

  async tokenizer(): Promise<ChatTokenizer> {
    return new BigramTokenizer(this.V);
  }

  async sample(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    if (promptTokens.length === 0) throw new InvalidArgumentError('promptTokens', 'must not be empty');
    const rng = new Rng(params.seed ?? 0);
    const temperature = params.temperature ?? 1;
    const lp = new Float64Array(this.V);
    const tokens: number[] = [];
    const logprobs: number[] = [];
    let prev = promptTokens[promptTokens.length - 1];
    for (let i = 0; i < params.maxNewTokens; i++) {
      logSoftmaxRow(this.W, this.V, prev, lp);
      let next = 0;
      if (temperature === 0) {
        for (let j = 1; j < this.V; j++) if (lp[j] > lp[next]) next = j;
      } else {
        // sample from softmax(logits / T)
        let z = 0;
        const w = Array.from(lp, (x) => Math.exp(x / temperature));
        for (const x of w) z += x;
        let u = rng.next() * z;
        next = this.V - 1;
        for (let j = 0; j < this.V; j++) {
          u -= w[j];
          if (u < 0) {
            next = j;
            break;
          }
        }
      }
      tokens.push(next);
      logprobs.push(lp[next]);
      if (params.stopTokenIds?.includes(next)) return { tokens, logprobs, finishReason: 'stop_token' };
      prev = next;
    }
    return { tokens, logprobs, finishReason: 'length' };
  }

  async forward(datums: readonly Pick<Datum, 'tokens'>[]): Promise<ForwardOutput> {
    const lp = new Float64Array(this.V);
    const logprobs: Float32Array[] = [];
    const entropies: Float32Array[] = [];
    for (const d of datums) {
      const L = new Float32Array(d.tokens.length);
      const H = new Float32Array(d.tokens.length);
      for (let t = 1; t < d.tokens.length; t++) {
        logSoftmaxRow(this.W, this.V, d.tokens[t - 1], lp);
        L[t] = lp[d.tokens[t]];
        let h = 0;
        for (let j = 0; j < this.V; j++) h -= Math.exp(lp[j]) * lp[j];
        H[t] = h;
      }
      logprobs.push(L);
      entropies.push(H);
    }
    return { logprobs, entropies };
  }

  async forwardBackward(
    datums: readonly Datum[],
    loss: LossFn,
    options: { microBatchTokens?: number } = {},
  ): Promise<ForwardBackwardResult> {
    const budget = options.microBatchTokens ?? Infinity;
    const result: ForwardBackwardResult = { loss: 0, metrics: {}, tokens: 0, microBatches: 0 };
    const lp = new Float64Array(this.V);
    let i = 0;
    while (i < datums.length) {
      // a micro-batch: as many datums as fit in the token budget (at least one)
      let j = i;
      let tokens = 0;
      while (j < datums.length && (j === i || tokens + datums[j].tokens.length <= budget)) tokens += datums[j++].tokens.length;
      const micro = datums.slice(i, j);
      const fwd = await this.forward(micro);
      const out = loss(micro, fwd);
      result.loss += out.loss;
      result.tokens += tokens;
      result.microBatches++;
      for (const [k, v] of Object.entries(out.metrics)) result.metrics[k] = (result.metrics[k] ?? 0) + v;
      micro.forEach((d, b) => {
        for (let t = 1; t < d.tokens.length; t++) {
          const gL = out.dLogprobs[b][t];
          const gH = out.dEntropies?.[b][t] ?? 0;
          if (gL === 0 && gH === 0) continue;
          const row = d.tokens[t - 1];
          logSoftmaxRow(this.W, this.V, row, lp);
          let h = 0;
          for (let k = 0; k < this.V; k++) h -= Math.exp(lp[k]) * lp[k];
          for (let k = 0; k < this.V; k++) {
            const p = Math.exp(lp[k]);
            // d logp(tok)/dz_k = [k = tok] − p_k ;  dH/dz_k = −p_k (log p_k + H)
            this.grad[row * this.V + k] += gL * ((k === d.tokens[t] ? 1 : 0) - p) - gH * p * (lp[k] + h);
          }
        }
      });
      i = j;
    }
    return result;
  }

  async optimStep(params: OptimParams): Promise<OptimResult> {
    let sq = 0;
    for (const g of this.grad) sq += g * g;
    const gradNorm = Math.sqrt(sq);
    if (!Number.isFinite(gradNorm)) {
      this.grad.fill(0);
      return { gradNorm, applied: false, step: this.step };
    }
    const scale = params.maxGradNorm && gradNorm > params.maxGradNorm ? params.maxGradNorm / gradNorm : 1;
    const b1 = params.beta1 ?? 0.9;
    const b2 = params.beta2 ?? 0.999;
    const eps = params.eps ?? 1e-8;
    const wd = params.weightDecay ?? 0;
    this.step++;
    const c1 = 1 - b1 ** this.step;
    const c2 = 1 - b2 ** this.step;
    for (let i = 0; i < this.W.length; i++) {
      const g = this.grad[i] * scale;
      this.m[i] = b1 * this.m[i] + (1 - b1) * g;
      this.v[i] = b2 * this.v[i] + (1 - b2) * g * g;
      this.W[i] -= params.learningRate * (this.m[i] / c1 / (Math.sqrt(this.v[i] / c2) + eps) + wd * this.W[i]);
    }
    this.grad.fill(0);
    return { gradNorm, applied: true, step: this.step };
  }

  async save(dir: string): Promise<void> {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'bigram.json'), JSON.stringify({ vocabSize: this.V }) + '\n');
    writeFileSync(join(dir, 'weights.f64'), new Uint8Array(this.W.buffer, this.W.byteOffset, this.W.byteLength));
  }

  async saveOptimizerState(dir: string): Promise<void> {
    mkdirSync(dir, { recursive: true });
    const mv = new Float64Array(2 * this.m.length);
    mv.set(this.m, 0);
    mv.set(this.v, this.m.length);
    writeFileSync(join(dir, 'adam.f64'), new Uint8Array(mv.buffer));
    writeFileSync(join(dir, 'adam.json'), JSON.stringify({ step: this.step }) + '\n');
  }

  async loadOptimizerState(dir: string): Promise<void> {
    const buf = readFileSync(join(dir, 'adam.f64'));
    const mv = new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    if (mv.length !== 2 * this.m.length)
      throw new FileFormatError({ file: join(dir, 'adam.f64'), message: `expected ${2 * this.m.length} values, got ${mv.length}` });
    this.m.set(mv.subarray(0, this.m.length));
    this.v.set(mv.subarray(this.m.length));
    this.step = JSON.parse(readFileSync(join(dir, 'adam.json'), 'utf8')).step;
  }

  async close(): Promise<void> {}
}
