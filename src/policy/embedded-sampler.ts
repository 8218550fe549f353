/**
 * Continuous-batching sampling loop of the embedded engine's worker, on top of the KV-cache
 * `Decoder`: requests join the running batch at the next step (their prompt prefill runs in the same
 * forward call as the other requests' decode steps) and leave when they finish. Each step yields to
 * the event loop (setImmediate), so new requests and training messages are handled between steps.
 *
 * Per request: temperature / top-k / top-p / greedy (temperature 0), stop token ids, stop strings
 * (checked on the decoded text when a decoder function is given), max new tokens, abort, its own
 * seeded RNG (same seed + prompt + weights → same tokens), and the temperature-1 logprob of every
 * sampled token.
 */
import type { Engine } from '../model/engine.ts';
import { Decoder, type DecodeItem } from '../model/decode.ts';
import { InvalidArgumentError } from '../errors.ts';
import { Rng } from '../util/rng.ts';
import type { FinishReason, SampleResult } from './types.ts';
import type { WireSampleParams } from './embedded-protocol.ts';

interface Req {
  id: number;
  prompt: Int32Array;
  params: WireSampleParams;
  rng: Rng;
  slot: number;
  pos: number; // tokens already in the KV cache
  tokens: number[];
  logprobs: number[];
  aborted: boolean;
  resolve: (r: SampleResult) => void;
  reject: (e: unknown) => void;
}

export class EngineSampler {
  readonly decoder: Decoder;
  private readonly queue: Req[] = [];
  private readonly active: Req[] = [];
  private running = false;
  private counter = 0;
  private probs: Float64Array;
  private order: Int32Array;
  /** Token decoder for stop strings (null when the model directory has no usable tokenizer; `detokenizeError` says why). */
  detokenize: ((ids: number[]) => string) | null = null;
  detokenizeError = 'no tokenizer';

  constructor(private readonly engine: Engine, private readonly seed: number) {
    this.decoder = new Decoder(engine.cfg, engine.weights, engine.kernels, { slots: 8 });
    this.probs = new Float64Array(engine.cfg.vocabSize);
    this.order = new Int32Array(engine.cfg.vocabSize);
  }

  /** The weights changed in place: repack them for the decoder. */
  weightsChanged(): void {
    this.decoder.repack();
  }

  /** Requests queued or running. */
  get load(): number {
    return this.queue.length + this.active.length;
  }

  submit(id: number, prompt: Int32Array, params: WireSampleParams, resolve: (r: SampleResult) => void, reject: (e: unknown) => void): void {
    const V = this.engine.cfg.vocabSize;
    if (prompt.length === 0) return reject(new InvalidArgumentError('promptTokens', 'is empty'));
    for (let i = 0; i < prompt.length; i++) {
      if (!(prompt[i] >= 0 && prompt[i] < V)) return reject(new InvalidArgumentError(`promptTokens[${i}]`, `token id ${prompt[i]} is out of range [0, ${V})`));
    }
    if (!(Number.isInteger(params.maxNewTokens) && params.maxNewTokens >= 0)) {
      return reject(new InvalidArgumentError('maxNewTokens', `expected a non-negative integer, got ${params.maxNewTokens}`));
    }
    if (prompt.length >= this.decoder.maxPositions()) {
      return reject(new InvalidArgumentError('promptTokens', `${prompt.length} tokens leave no room below the model's ${this.decoder.maxPositions()} positions`));
    }
    if (params.stopStrings && params.stopStrings.some((x) => x !== '') && !this.detokenize) {
      return reject(new InvalidArgumentError('stopStrings', `need the model's tokenizer, which could not be loaded (${this.detokenizeError})`));
    }
    const seed = params.seed ?? this.seed * 1000003 + this.counter++;
    const req: Req = { id, prompt, params, rng: new Rng(seed), slot: -1, pos: 0, tokens: [], logprobs: [], aborted: false, resolve, reject };
    if (params.maxNewTokens === 0) return resolve({ tokens: [], logprobs: [], finishReason: 'length' });
    this.queue.push(req);
    this.schedule();
  }

  abort(id: number): void {
    for (const r of [...this.queue, ...this.active]) if (r.id === id) r.aborted = true;
    this.schedule();
  }

  abortAll(): void {
    for (const r of [...this.queue, ...this.active]) r.aborted = true;
    this.schedule();
  }

  private schedule(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => this.step());
  }

  private finish(r: Req, reason: FinishReason): void {
    if (r.slot >= 0) this.decoder.freeSlot(r.slot);
    r.slot = -1;
    r.resolve({ tokens: r.tokens, logprobs: r.logprobs, finishReason: reason });
  }

  /** One forward over all running requests (prefills of newcomers + one decode token for the rest). */
  step(): void {
    try {
      // aborted requests leave first
      for (let i = this.queue.length - 1; i >= 0; i--) if (this.queue[i].aborted) this.finish(this.queue.splice(i, 1)[0], 'abort');
      for (let i = this.active.length - 1; i >= 0; i--) if (this.active[i].aborted) this.finish(this.active.splice(i, 1)[0], 'abort');
      const items: DecodeItem[] = [];
      const reqs: Req[] = [];
      for (const r of this.active) {
        items.push({ slot: r.slot, tokens: [r.tokens[r.tokens.length - 1]], startPos: r.pos });
        reqs.push(r);
      }
      while (this.queue.length > 0) {
        const slot = this.decoder.allocSlot();
        if (slot < 0) break;
        const r = this.queue.shift()!;
        r.slot = slot;
        this.active.push(r);
        items.push({ slot, tokens: r.prompt, startPos: 0 });
        reqs.push(r);
      }
      if (items.length > 0) {
        const logits = this.decoder.forward(items);
        reqs.forEach((r, i) => {
          r.pos += items[i].tokens.length;
          this.pick(r, logits[i]);
        });
        for (let i = this.active.length - 1; i >= 0; i--) {
          const r = this.active[i];
          const reason = this.doneReason(r);
          if (reason) {
            this.active.splice(i, 1);
            this.finish(r, reason);
          }
        }
      }
    } catch (err) {
      // a failed forward fails every request of the batch; the loop stays usable
      for (const r of this.active.splice(0)) {
        if (r.slot >= 0) this.decoder.freeSlot(r.slot);
        r.reject(err);
      }
    }
    if (this.queue.length + this.active.length > 0) setImmediate(() => this.step());
    else this.running = false;
  }

  private doneReason(r: Req): FinishReason | null {
    const last = r.tokens[r.tokens.length - 1];
    const p = r.params;
    if (p.stopTokenIds && p.stopTokenIds.includes(last)) return 'stop_token';
    if (p.stopStrings && p.stopStrings.length > 0 && this.detokenize) {
      // only the tail can contain a stop string that was not there one token ago
      const longest = Math.max(...p.stopStrings.map((s) => s.length));
      const text = this.detokenize(r.tokens.slice(-Math.max(16, 4 * longest)));
      if (p.stopStrings.some((s) => s !== '' && text.includes(s))) return 'stop_string';
    }
    if (r.tokens.length >= p.maxNewTokens) return 'length';
    if (r.pos + 1 >= this.decoder.maxPositions()) return 'length';
    return null;
  }

  /** Sample the next token of r from logits[V]; record its temperature-1 logprob. */
  private pick(r: Req, logits: Float32Array): void {
    const V = logits.length;
    let mx = -Infinity;
    for (let j = 0; j < V; j++) if (logits[j] > mx) mx = logits[j];
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[j] - mx);
    const lse = mx + Math.log(sum);
    const temp = r.params.temperature ?? 1;
    let tok = 0;
    if (temp <= 0) {
      for (let j = 1; j < V; j++) if (logits[j] > logits[tok]) tok = j;
    } else {
      const p = this.probs;
      const topK = r.params.topK ?? 0;
      const topP = r.params.topP ?? 1;
      let total = 0;
      for (let j = 0; j < V; j++) {
        p[j] = Math.exp((logits[j] - mx) / temp);
        total += p[j];
      }
      if ((topK > 0 && topK < V) || topP < 1) {
        const order = this.order;
        for (let j = 0; j < V; j++) order[j] = j;
        order.sort((a, b) => p[b] - p[a] || a - b);
        const k = topK > 0 ? Math.min(topK, V) : V;
        let kept = 0;
        let n = 0;
        while (n < k) {
          kept += p[order[n]];
          n++;
          if (kept >= topP * total) break;
        }
        let u = r.rng.next() * kept;
        tok = order[n - 1];
        for (let i = 0; i < n; i++) {
          u -= p[order[i]];
          if (u < 0) {
            tok = order[i];
            break;
          }
        }
      } else {
        let u = r.rng.next() * total;
        tok = V - 1;
        for (let j = 0; j < V; j++) {
          u -= p[j];
          if (u < 0) {
            tok = j;
            break;
          }
        }
      }
    }
    r.tokens.push(tok);
    r.logprobs.push(logits[tok] - lse);
  }
}
