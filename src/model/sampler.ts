/**
 * The sampler: serves many concurrent `generate(promptTokens, params)` calls on one model with
 * continuous batching. A scheduler loop runs one batched forward (decode.ts) per step; new requests
 * join the running batch at the next step (their prompt prefill is folded into that step, in chunks
 * bounded by a per-step token budget) and finished requests leave it. The loop yields to the event
 * loop (setImmediate) between steps so new requests can join.
 *
 * Sampling: temperature (0 = greedy), top-k, top-p, stop token ids, stop strings (needs a
 * `decode(ids) → text` function), max new tokens, abort signals. Each request has its own seeded RNG
 * and draws exactly one uniform per sampled token, so its tokens depend only on its seed, prompt and
 * the weights — not on what else is in the batch.
 *
 * Logprobs: every sampled token comes with log softmax(raw logits)[token], i.e. the log-probability
 * under the model's temperature-1 distribution over the full vocabulary, whatever temperature /
 * top-k / top-p were used to pick it. That is the π_old(token) that PPO-style training needs (and it
 * equals the sampling distribution exactly when sampling at temperature 1 without truncation).
 *
 * Prefix cache: the KV of computed token blocks (`blockSize` tokens) is indexed by a hash of the
 * whole prefix up to each block. A new request whose prompt starts with an indexed prefix copies
 * that KV from the slot that holds it (or takes over a finished request's slot) and prefills only the
 * rest. Finished requests keep their slot as cache until the space is needed (LRU). Requests that
 * arrive together with a shared prompt (the G rollouts of one question) wait one step for the first
 * one's prefill instead of all computing it.
 */
import type { Kernels } from '../engine/kernels.ts';
import { InvalidArgumentError, MatpoError } from '../core/errors.ts';
import type { FinishReason, SampleParams, SampleResult } from '../core/policy.ts';
import { Rng } from '../util/rng.ts';
import type { ModelConfig } from './config.ts';
import type { LoraAdapter } from './lora.ts';
import { Decoder, type DecodeItem, type DecoderOptions } from './decode.ts';

export interface SamplerOptions {
  /** Token ids → text; required for stop strings. */
  decode?: (ids: readonly number[]) => string;
  /** Prefill tokens per scheduler step across all requests (default 512). Decode tokens are not counted. */
  maxStepTokens?: number;
  /** Concurrent sequences in the running batch (default 64); more requests wait in a queue. */
  maxRunning?: number;
  /** Reuse KV of shared prompt prefixes (default true). */
  prefixCache?: boolean;
  /** Tokens per prefix-cache block (default 16). */
  blockSize?: number;
  decoder?: DecoderOptions;
}

export interface GenerateOptions {
  /** Called synchronously as each token is sampled (for streaming). */
  onToken?: (token: number, logprob: number) => void;
}

export interface SamplerStats {
  steps: number;
  promptTokens: number;
  /** Prompt tokens whose KV came from the prefix cache instead of being computed. */
  cachedPromptTokens: number;
  generatedTokens: number;
}

interface Request {
  prompt: number[];
  /** Prompt + generated tokens; KV is valid for seq[0 .. kvLen). */
  seq: number[];
  kvLen: number;
  params: SampleParams;
  temperature: number;
  rng: Rng;
  onToken?: (token: number, logprob: number) => void;
  tokens: number[];
  logprobs: number[];
  slot: number;
  textLen: number;
  resolve: (r: SampleResult) => void;
  reject: (e: unknown) => void;
}

/** Per-slot record for the prefix cache: the tokens whose KV the slot holds and the index keys registered for it. */
interface SlotInfo {
  tokens: number[];
  kvLen: number;
  keys: string[];
  /** null while a request runs in it; a tick of last use once it is only cache. */
  cachedAt: number | null;
  /** Computed with weights older than the last invalidate(): never indexed again. */
  stale: boolean;
}

export class Sampler {
  readonly cfg: ModelConfig;
  readonly decoder: Decoder;
  private readonly decodeText?: (ids: readonly number[]) => string;
  private readonly maxStepTokens: number;
  private readonly maxRunning: number;
  private readonly usePrefix: boolean;
  private readonly B: number;
  private pending: Request[] = [];
  private running: Request[] = [];
  private slots = new Map<number, SlotInfo>();
  private index = new Map<string, Set<number>>();
  private tick = 0;
  private loopActive = false;
  private closed = false;
  readonly stats: SamplerStats = { steps: 0, promptTokens: 0, cachedPromptTokens: 0, generatedTokens: 0 };

  constructor(cfg: ModelConfig, weights: Float32Array, kernels: Kernels, options: SamplerOptions = {}) {
    this.cfg = cfg;
    this.decoder = new Decoder(cfg, weights, kernels, options.decoder);
    this.decodeText = options.decode;
    this.maxStepTokens = Math.max(1, options.maxStepTokens ?? 512);
    this.maxRunning = Math.max(1, options.maxRunning ?? 64);
    this.usePrefix = options.prefixCache ?? true;
    this.B = Math.max(1, options.blockSize ?? 16);
  }

  /** Sample a continuation of `promptTokens`. Resolves with finishReason 'abort' when the signal fires. */
  generate(promptTokens: readonly number[], params: SampleParams, options: GenerateOptions = {}): Promise<SampleResult> {
    return new Promise<SampleResult>((resolve, reject) => {
      try {
        if (this.closed) throw new MatpoError('closed', 'the sampler is closed');
        const V = this.cfg.vocabSize;
        if (promptTokens.length === 0) throw new InvalidArgumentError('promptTokens', 'is empty');
        promptTokens.forEach((id, i) => {
          if (!(Number.isInteger(id) && id >= 0 && id < V))
            throw new InvalidArgumentError(`promptTokens[${i}]`, `token id ${id} is out of range [0, ${V})`);
        });
        if (!(Number.isInteger(params.maxNewTokens) && params.maxNewTokens >= 0))
          throw new InvalidArgumentError('maxNewTokens', `expected a non-negative integer, got ${params.maxNewTokens}`);
        const temperature = params.temperature ?? 1;
        if (!(temperature >= 0 && Number.isFinite(temperature)))
          throw new InvalidArgumentError('temperature', `expected a number ≥ 0, got ${temperature}`);
        if (params.topP !== undefined && !(params.topP > 0 && params.topP <= 1))
          throw new InvalidArgumentError('topP', `expected a number in (0, 1], got ${params.topP}`);
        if (params.topK !== undefined && !(Number.isInteger(params.topK) && params.topK >= 0))
          throw new InvalidArgumentError('topK', `expected a non-negative integer, got ${params.topK}`);
        if (params.stopStrings?.length && !this.decodeText)
          throw new InvalidArgumentError('stopStrings', 'this sampler has no decode function');
        const limit = this.decoder.maxPositions();
        if (promptTokens.length >= limit)
          throw new InvalidArgumentError(
            'promptTokens',
            `${promptTokens.length} tokens leave no room to generate (context limit ${limit})`,
          );
        const req: Request = {
          prompt: [...promptTokens],
          seq: [...promptTokens],
          kvLen: 0,
          params,
          temperature,
          rng: new Rng(params.seed ?? Math.floor(Math.random() * 2 ** 32)),
          onToken: options.onToken,
          tokens: [],
          logprobs: [],
          slot: -1,
          textLen: 0,
          resolve,
          reject,
        };
        if (params.maxNewTokens === 0) return resolve({ tokens: [], logprobs: [], finishReason: 'length' });
        if (params.signal?.aborted) return resolve({ tokens: [], logprobs: [], finishReason: 'abort' });
        params.signal?.addEventListener('abort', () => this.kick(), { once: true });
        this.pending.push(req);
        this.kick();
      } catch (err) {
        reject(err);
      }
    });
  }

  /**
   * Drop every cached prefix and repack the weights: call after the weights change (optimizer step,
   * load). `repack: false` keeps the packed base weights (only a LoRA adapter changed).
   * Requests already running keep the KV they computed so far (their earlier tokens were
   * computed with the old weights) but it is never shared again.
   */
  invalidate(options: { repack?: boolean } = {}): void {
    if (options.repack ?? true) this.decoder.repack();
    this.index.clear();
    for (const [slot, info] of this.slots) {
      info.keys = [];
      info.stale = true;
      if (info.cachedAt !== null) {
        this.slots.delete(slot);
        this.decoder.freeSlot(slot);
      }
    }
  }

  /** Apply a LoRA adapter (or remove it with null) and drop cached prefixes computed without it. */
  setLora(adapter: LoraAdapter | null): void {
    this.decoder.setLora(adapter);
    this.invalidate({ repack: false });
  }

  /** Stop the loop; pending and running requests resolve with finishReason 'abort'. */
  close(): void {
    this.closed = true;
    for (const r of [...this.pending, ...this.running]) this.finish(r, 'abort');
    this.pending = [];
    this.running = [];
    this.kick();
  }

  /** Start the scheduler loop if it is not running (it stops itself when there is no work). */
  private kick(): void {
    if (!this.loopActive) {
      this.loopActive = true;
      setImmediate(() => void this.loop());
    }
  }

  private async loop(): Promise<void> {
    try {
      while (this.pending.length > 0 || this.running.length > 0) {
        try {
          this.step();
        } catch (err) {
          // A bug or an unexpected failure: fail the requests involved rather than the process.
          for (const r of [...this.pending, ...this.running]) this.fail(r, err);
        }
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.loopActive = false;
    }
  }

  /** One scheduler step: retire aborted requests, admit new ones, run one forward, sample. */
  private step(): void {
    for (const r of [...this.pending, ...this.running]) if (r.params.signal?.aborted) this.finish(r, 'abort');
    this.admit();
    if (this.running.length === 0) return;

    const items: DecodeItem[] = [];
    const owners: { req: Request; n: number; sample: boolean }[] = [];
    let budget = this.maxStepTokens;
    for (const r of this.running) {
      const remaining = r.seq.length - r.kvLen;
      let n = remaining;
      if (remaining > 1) {
        // Prefill: chunk it to the step budget (the first prefill always gets at least one token).
        if (budget <= 0) continue;
        n = Math.min(remaining, budget);
        budget -= n;
      }
      items.push({ slot: r.slot, tokens: r.seq.slice(r.kvLen, r.kvLen + n), startPos: r.kvLen });
      owners.push({ req: r, n, sample: n === remaining });
    }
    if (items.length === 0) return;
    let logits: Float32Array[];
    try {
      logits = this.decoder.forward(items);
    } catch (err) {
      for (const o of owners) this.fail(o.req, err);
      return;
    }
    this.stats.steps++;
    owners.forEach((o, i) => {
      const r = o.req;
      r.kvLen += o.n;
      this.registerBlocks(r);
      if (!o.sample) return;
      const { token, logprob } = sampleToken(logits[i], r.temperature, r.params.topK ?? 0, r.params.topP ?? 1, r.rng);
      r.seq.push(token);
      r.tokens.push(token);
      r.logprobs.push(logprob);
      this.stats.generatedTokens++;
      let reason: FinishReason | null;
      try {
        r.onToken?.(token, logprob);
        reason = this.stopReason(r, token); // calls the caller's decode function
      } catch (err) {
        this.fail(r, err);
        return;
      }
      if (reason) this.finish(r, reason);
    });
  }

  private stopReason(r: Request, token: number): FinishReason | null {
    if (r.params.stopTokenIds?.includes(token)) return 'stop_token';
    const stops = r.params.stopStrings;
    if (stops && stops.length > 0 && this.decodeText) {
      const text = this.decodeText(r.tokens);
      const longest = Math.max(...stops.map((s) => s.length));
      const from = Math.max(0, Math.min(r.textLen, text.length) - longest - 4);
      r.textLen = text.length;
      if (stops.some((s) => s.length > 0 && text.indexOf(s, from) >= 0)) return 'stop_string';
    }
    if (r.tokens.length >= r.params.maxNewTokens) return 'length';
    if (r.seq.length >= this.decoder.maxPositions()) return 'length';
    return null;
  }

  private finish(r: Request, reason: FinishReason): void {
    this.release(r);
    r.resolve({ tokens: r.tokens, logprobs: r.logprobs, finishReason: reason });
  }

  private fail(r: Request, err: unknown): void {
    this.release(r);
    r.reject(err);
  }

  /** Take a request out of the queues; its slot stays as prefix cache. */
  private release(r: Request): void {
    const pi = this.pending.indexOf(r);
    if (pi >= 0) this.pending.splice(pi, 1);
    const ri = this.running.indexOf(r);
    if (ri >= 0) this.running.splice(ri, 1);
    if (r.slot >= 0) {
      const info = this.slots.get(r.slot);
      if (info && this.usePrefix && info.keys.length > 0) {
        info.cachedAt = ++this.tick;
      } else {
        this.dropSlot(r.slot);
      }
      r.slot = -1;
    }
  }

  private dropSlot(slot: number): void {
    const info = this.slots.get(slot);
    if (info) for (const key of info.keys) this.index.get(key)?.delete(slot);
    this.slots.delete(slot);
    this.decoder.freeSlot(slot);
  }

  /** Move pending requests into the running batch while there is room. */
  private admit(): void {
    const stillPending: Request[] = [];
    for (const r of this.pending) {
      if (this.running.length >= this.maxRunning) {
        stillPending.push(r);
        continue;
      }
      const match = this.usePrefix ? this.findPrefix(r.prompt) : null;
      const have = match?.len ?? 0;
      if (this.usePrefix && this.worthWaiting(r.prompt, have)) {
        stillPending.push(r);
        continue;
      }
      let slot: number;
      if (match && this.slots.get(match.slot)!.cachedAt !== null) {
        // Take over a finished request's slot: its KV for the shared prefix stays where it is.
        slot = match.slot;
        this.unindex(slot);
      } else {
        slot = this.allocSlot(match?.slot);
        if (slot < 0) {
          stillPending.push(r);
          continue;
        }
        if (match) this.decoder.copyPrefix(match.slot, slot, match.len);
      }
      r.slot = slot;
      r.kvLen = have;
      this.slots.set(slot, { tokens: r.seq, kvLen: have, keys: [], cachedAt: null, stale: false });
      this.stats.promptTokens += r.prompt.length;
      this.stats.cachedPromptTokens += have;
      this.registerBlocks(r);
      this.running.push(r);
    }
    this.pending = stillPending;
  }

  /**
   * A free slot. Once the cache has room for the whole running batch, the least recently used cached
   * slot (never `keep`) is evicted rather than growing the cache; when the cache cannot grow, too.
   */
  private allocSlot(keep?: number): number {
    if (this.decoder.freeSlots === 0 && this.decoder.N >= this.maxRunning) this.evictLru(keep);
    let slot = this.decoder.allocSlot();
    if (slot < 0 && this.evictLru(keep)) slot = this.decoder.allocSlot();
    return slot;
  }

  private evictLru(keep?: number): boolean {
    let lru = -1;
    let best = Infinity;
    for (const [slot, info] of this.slots) {
      if (info.cachedAt !== null && slot !== keep && info.cachedAt < best) {
        best = info.cachedAt;
        lru = slot;
      }
    }
    if (lru >= 0) this.dropSlot(lru);
    return lru >= 0;
  }

  private unindex(slot: number): void {
    const info = this.slots.get(slot);
    if (!info) return;
    for (const key of info.keys) this.index.get(key)?.delete(slot);
    info.keys = [];
  }

  /** Index every complete block of r's sequence whose KV is now valid. */
  private registerBlocks(r: Request): void {
    if (!this.usePrefix || r.slot < 0) return;
    const info = this.slots.get(r.slot)!;
    info.kvLen = r.kvLen;
    if (info.stale) return;
    const B = this.B;
    const blocks = Math.floor(r.kvLen / B);
    for (let b = info.keys.length; b < blocks; b++) {
      const key = blockKey(r.seq, b, B, info.keys[b - 1]);
      info.keys.push(key);
      let set = this.index.get(key);
      if (!set) this.index.set(key, (set = new Set()));
      set.add(r.slot);
    }
  }

  /** Longest indexed prefix of `prompt` (whole blocks, leaving at least one token to run). */
  private findPrefix(prompt: number[]): { slot: number; len: number } | null {
    const B = this.B;
    let best: { slot: number; len: number } | null = null;
    let key: string | undefined;
    for (let b = 0; (b + 1) * B <= prompt.length - 1; b++) {
      key = blockKey(prompt, b, B, key);
      const set = this.index.get(key);
      if (!set || set.size === 0) break;
      let found = -1;
      for (const slot of set) {
        const info = this.slots.get(slot);
        if (info && info.kvLen >= (b + 1) * B && sameTokens(info.tokens, prompt, (b + 1) * B)) {
          found = slot;
          break;
        }
      }
      if (found < 0) break;
      best = { slot: found, len: (b + 1) * B };
    }
    return best;
  }

  /** True when a running request is still prefilling a prompt that shares at least one more block with `prompt`. */
  private worthWaiting(prompt: number[], have: number): boolean {
    for (const r of this.running) {
      if (r.kvLen >= r.prompt.length) continue;
      let lcp = 0;
      const max = Math.min(r.prompt.length, prompt.length - 1);
      while (lcp < max && r.prompt[lcp] === prompt[lcp]) lcp++;
      if (Math.floor(lcp / this.B) * this.B >= have + this.B && lcp > r.kvLen) return true;
    }
    return false;
  }
}

function sameTokens(a: readonly number[], b: readonly number[], n: number): boolean {
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Key of block b of `tokens` chained on the key of block b−1 (two 32-bit FNV-1a style hashes). */
function blockKey(tokens: readonly number[], b: number, B: number, prev: string | undefined): string {
  let h1 = 0x811c9dc5 ^ (prev ? parseInt(prev.slice(0, 8), 16) : 0);
  let h2 = 0x01000193 ^ (prev ? parseInt(prev.slice(8, 16), 16) : 0x9e3779b9);
  for (let i = b * B; i < (b + 1) * B; i++) {
    const t = tokens[i];
    h1 = Math.imul(h1 ^ t, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ (t + 0x7f4a7c15), 0x85ebca6b) >>> 0;
    h2 = (h2 ^ (h2 >>> 13)) >>> 0;
  }
  return h1.toString(16).padStart(8, '0') + h2.toString(16).padStart(8, '0');
}

// Scratch for sampling (the sampler is single-threaded).
let probs = new Float64Array(0);
let order = new Int32Array(0);

/**
 * Pick a token from raw logits[V]. logprob is log softmax(logits)[token] at temperature 1 over the full
 * vocabulary. temperature 0 → argmax (lowest index on ties), no random draw. Otherwise exactly one
 * uniform draw: tokens are kept by top-k (ties at the k-th value kept) and top-p (smallest
 * highest-probability set with mass ≥ p), and the draw walks the kept tokens in index order.
 */
export function sampleToken(
  logits: Float32Array,
  temperature: number,
  topK: number,
  topP: number,
  rng: Rng,
): { token: number; logprob: number } {
  const V = logits.length;
  let mx = -Infinity;
  let arg = 0;
  for (let i = 0; i < V; i++)
    if (logits[i] > mx) {
      mx = logits[i];
      arg = i;
    }
  if (probs.length < V) {
    probs = new Float64Array(V);
    order = new Int32Array(V);
  }
  // Unnormalised temperature-1 probabilities; at temperature 1 they are also the sampling weights.
  let sum = 0;
  for (let i = 0; i < V; i++) sum += probs[i] = Math.exp(logits[i] - mx);
  const lse = mx + Math.log(sum);
  if (temperature === 0) return { token: arg, logprob: logits[arg] - lse };

  let total = sum;
  if (temperature !== 1) {
    const inv = 1 / temperature;
    total = 0;
    for (let i = 0; i < V; i++) total += probs[i] = Math.exp((logits[i] - mx) * inv);
  }
  if (topK > 0 && topK < V) {
    const sorted = Float32Array.from(logits).sort();
    const thr = sorted[V - topK];
    total = 0;
    for (let i = 0; i < V; i++) {
      if (logits[i] < thr) probs[i] = 0;
      total += probs[i];
    }
  }
  if (topP < 1) {
    // A token outside the nucleus has p ≤ (1−topP)/(V+1) of the mass; only larger ones need sorting.
    const cut = (total * (1 - topP)) / (V + 1);
    let m = 0;
    for (let i = 0; i < V; i++) if (probs[i] > cut) order[m++] = i;
    const cand = Array.from(order.subarray(0, m)).sort((a, b) => probs[b] - probs[a] || a - b);
    let acc = 0;
    let keep = cand.length;
    for (let j = 0; j < cand.length; j++) {
      acc += probs[cand[j]];
      if (acc >= topP * total) {
        keep = j + 1;
        break;
      }
    }
    const kept = new Uint8Array(V);
    for (let j = 0; j < keep; j++) kept[cand[j]] = 1;
    total = 0;
    for (let i = 0; i < V; i++) {
      if (!kept[i]) probs[i] = 0;
      total += probs[i];
    }
  }
  let u = rng.next() * total;
  let token = -1;
  for (let i = 0; i < V; i++) {
    if (probs[i] <= 0) continue;
    token = i;
    u -= probs[i];
    if (u < 0) break;
  }
  if (token < 0) token = arg;
  return { token, logprob: logits[token] - lse };
}
